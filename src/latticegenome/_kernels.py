"""Compiled inner loops of the refinement (Numba).

Each function does, in one pass over each column's window, what the NumPy
reference functions of :mod:`latticegenome.model` do with whole arrays
(:func:`~latticegenome.model.window_jacobian`,
:func:`~latticegenome.model.fisher_information`,
:func:`~latticegenome.model.render_columns`), without the window-sized
temporaries: the refinement is bound by memory traffic, not arithmetic.
``tests/test_kernels.py`` checks them against the references.

Conventions: ``img`` and ``full`` are flat arrays; ``full`` is the model of
all Gaussians on a canvas padded by ``pad`` pixels (row length ``pcol``,
``prow`` rows); windows are squares of half-size ``radius`` centred at
integer pixels ``(wx, wy)``; only pixels inside the image count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def window_stats(img, rows, cols, full, pad, pcol, prow, wx, wy, x, y, h, s, b, radius):
    """Log-likelihood, gradient, Fisher information and Pearson chi2 per column.

    The expected counts are lambda = b + full (the model already holds the
    column's own Gaussian); parameters (x, y, h, s, b).

    Returns
    -------
    ll : (n,), grad : (n, 5), info : (n, 5, 5), chi2 : (n,), npix : (n,)
    """
    n = x.size
    ll = np.zeros(n)
    grad = np.zeros((n, 5))
    info = np.zeros((n, 5, 5))
    chi2 = np.zeros(n)
    npix = np.zeros(n, dtype=np.int64)
    jac = np.empty(5)
    ex = np.empty(2 * radius + 1)
    for k in range(n):
        s2 = s[k] * s[k]
        inv2s2 = 0.5 / s2
        for i in range(2 * radius + 1):  # separable Gaussian: exp per row and column
            d = wx[k] - radius + i - x[k]
            ex[i] = math.exp(-d * d * inv2s2)
        for py in range(wy[k] - radius, wy[k] + radius + 1):
            if py < 0 or py >= rows:
                continue
            dy = py - y[k]
            ey = math.exp(-dy * dy * inv2s2)
            crow = min(max(py + pad, 0), prow - 1) * pcol
            for px in range(wx[k] - radius, wx[k] + radius + 1):
                if px < 0 or px >= cols:
                    continue
                dx = px - x[k]
                r2 = dx * dx + dy * dy
                e = ey * ex[px - wx[k] + radius]
                g = h[k] * e
                lam = b[k] + full[crow + min(max(px + pad, 0), pcol - 1)]
                if lam < 1e-12:
                    lam = 1e-12
                cnt = img[py * cols + px]
                jac[0] = g * dx / s2
                jac[1] = g * dy / s2
                jac[2] = e
                jac[3] = g * r2 / (s2 * s[k])
                jac[4] = 1.0
                ll[k] += cnt * math.log(lam) - lam
                resid = cnt / lam - 1.0
                w = 1.0 / lam
                for i in range(5):
                    grad[k, i] += resid * jac[i]
                    wi = w * jac[i]
                    for j in range(i, 5):
                        info[k, i, j] += wi * jac[j]
                chi2[k] += (cnt - lam) * (cnt - lam) / lam
                npix[k] += 1
        for i in range(5):
            for j in range(i):
                info[k, i, j] = info[k, j, i]
    return ll, grad, info, chi2, npix


@njit(cache=True, nogil=True)
def trial_loglik(img, rows, cols, full, pad, pcol, prow, wx, wy, x0, y0, h0, s0, x1, y1, h1, s1,
                 b1, radius):
    """Log-likelihood of each column's window with its Gaussian moved from
    (x0, y0, h0, s0) to (x1, y1, h1, s1) and background b1; -inf where an
    expected count would not be positive."""
    n = x0.size
    ll = np.zeros(n)
    ex0 = np.empty(2 * radius + 1)
    ex1 = np.empty(2 * radius + 1)
    for k in range(n):
        i0 = 0.5 / (s0[k] * s0[k])
        i1 = 0.5 / (s1[k] * s1[k])
        for i in range(2 * radius + 1):
            px = wx[k] - radius + i
            ex0[i] = math.exp(-(px - x0[k]) ** 2 * i0)
            ex1[i] = math.exp(-(px - x1[k]) ** 2 * i1)
        bad = False
        for py in range(wy[k] - radius, wy[k] + radius + 1):
            if py < 0 or py >= rows:
                continue
            g0 = h0[k] * math.exp(-(py - y0[k]) ** 2 * i0)
            g1 = h1[k] * math.exp(-(py - y1[k]) ** 2 * i1)
            crow = min(max(py + pad, 0), prow - 1) * pcol
            for px in range(wx[k] - radius, wx[k] + radius + 1):
                if px < 0 or px >= cols:
                    continue
                i = px - wx[k] + radius
                lam = (b1[k] + full[crow + min(max(px + pad, 0), pcol - 1)]
                       - g0 * ex0[i] + g1 * ex1[i])
                if lam <= 0.0:
                    bad = True
                    break
                ll[k] += img[py * cols + px] * math.log(lam) - lam
            if bad:
                break
        if bad:
            ll[k] = -np.inf
    return ll


@njit(cache=True, nogil=True)
def accumulate(canvas, rows, cols, pad, x, y, h, s, radius):
    """Add Gaussians (radius-limited squares) into a flat padded canvas."""
    pcol = cols + 2 * pad
    ex = np.empty(2 * radius + 1)
    for k in range(x.size):
        cx = int(np.rint(x[k]))
        cy = int(np.rint(y[k]))
        if cx < -pad + radius or cx >= cols + pad - radius or cy < -pad + radius or cy >= rows + pad - radius:
            continue
        inv2s2 = 0.5 / (s[k] * s[k])
        for i in range(2 * radius + 1):
            d = cx - radius + i - x[k]
            ex[i] = math.exp(-d * d * inv2s2)
        for j in range(2 * radius + 1):
            d = cy - radius + j - y[k]
            hy = h[k] * math.exp(-d * d * inv2s2)
            base = (cy - radius + j + pad) * pcol + (cx - radius + pad)
            for i in range(2 * radius + 1):
                canvas[base + i] += hy * ex[i]
