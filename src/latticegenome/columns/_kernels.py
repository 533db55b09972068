"""Compiled inner loops of the refinement (Numba).

Each function does, in one pass over each column's window, what the NumPy
reference functions of :mod:`latticegenome.columns.model` do with whole arrays
(:func:`~latticegenome.columns.model.window_jacobian`,
:func:`~latticegenome.columns.model.fisher_information`,
:func:`~latticegenome.columns.model.render_columns`), without the window-sized
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


@njit(cache=True, nogil=True, inline="always")
def _gaussian_row(out, lo, hi, centre, inv2s2):
    """``out[p - lo] = exp(-(p - centre)^2 inv2s2)`` for pixels ``lo <= p <= hi``.

    One factor of a separable Gaussian; inlined into the kernels (no call).
    """
    for p in range(lo, hi + 1):
        d = p - centre
        out[p - lo] = math.exp(-d * d * inv2s2)


@njit(cache=True, nogil=True, inline="always")
def _store_symmetric(mat, upper):
    """Fill a symmetric 5x5 ``mat`` from its 15 upper-triangle values, row by row."""
    m = 0
    for i in range(5):
        for j in range(i, 5):
            mat[i, j] = upper[m]
            mat[j, i] = upper[m]
            m += 1


@njit(cache=True, nogil=True)
def window_stats(img, rows, cols, full, pad, pcol, prow, wx, wy, x, y, h, s, b, radius, with_ll,
                 c0=0.0, c1=1.0):
    """Log-likelihood, gradient, Fisher information and Pearson chi2 per column.

    The expected image is lambda = b + full (the model already holds the
    column's own Gaussian); parameters (x, y, h, s, b). The Poisson counts are
    ``c0 + c1 * image`` (``c1`` = +-1): the image itself (0, 1), or, for an
    image mirrored so that dark columns are peaks, the raw counts
    ``M - image`` (M, -1), whose variance ``M - lambda`` weights the pixels.
    The log-likelihood (one logarithm per pixel, the costliest part) is
    computed only when ``with_ll`` is true, else returned as zeros.

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
    ex = np.empty(2 * radius + 1)
    for k in range(n):
        s2 = s[k] * s[k]
        inv_s2 = 1.0 / s2
        inv_s = 1.0 / s[k]
        inv2s2 = 0.5 * inv_s2
        hk = h[k]
        bk = b[k]
        # only pixels inside the image (the canvas is padded around it)
        x_lo = max(wx[k] - radius, 0)
        x_hi = min(wx[k] + radius, cols - 1)
        y_lo = max(wy[k] - radius, 0)
        y_hi = min(wy[k] + radius, rows - 1)
        _gaussian_row(ex, x_lo, x_hi, x[k], inv2s2)  # separable: exp per row and column
        # accumulators in registers, not in the output arrays
        g0 = g1 = g2 = g3 = g4 = 0.0
        i00 = i01 = i02 = i03 = i04 = 0.0
        i11 = i12 = i13 = i14 = 0.0
        i22 = i23 = i24 = 0.0
        i33 = i34 = 0.0
        i44 = 0.0
        llk = 0.0
        c2 = 0.0
        for py in range(y_lo, y_hi + 1):
            dy = py - y[k]
            ey = math.exp(-dy * dy * inv2s2)
            crow = (py + pad) * pcol + pad
            irow = py * cols
            for px in range(x_lo, x_hi + 1):
                dx = px - x[k]
                e = ey * ex[px - x_lo]
                gs = hk * e * inv_s2
                j0 = gs * dx
                j1 = gs * dy
                j2 = e
                j3 = gs * (dx * dx + dy * dy) * inv_s
                lam = bk + full[crow + px]
                if lam < 1e-12:
                    lam = 1e-12
                cnt = img[irow + px]
                var = c0 + c1 * lam  # the expected counts, their variance
                if var < 1e-12:
                    var = 1e-12
                w = 1.0 / var
                if with_ll:
                    llk += (c0 + c1 * cnt) * math.log(var) - var
                resid = (cnt - lam) * w
                g0 += resid * j0
                g1 += resid * j1
                g2 += resid * j2
                g3 += resid * j3
                g4 += resid
                w0 = w * j0
                w1 = w * j1
                w2 = w * j2
                w3 = w * j3
                i00 += w0 * j0
                i01 += w0 * j1
                i02 += w0 * j2
                i03 += w0 * j3
                i04 += w0
                i11 += w1 * j1
                i12 += w1 * j2
                i13 += w1 * j3
                i14 += w1
                i22 += w2 * j2
                i23 += w2 * j3
                i24 += w2
                i33 += w3 * j3
                i34 += w3
                i44 += w
                c2 += (cnt - lam) * (cnt - lam) * w
        ll[k] = llk
        chi2[k] = c2
        npix[k] = max(x_hi - x_lo + 1, 0) * max(y_hi - y_lo + 1, 0)
        grad[k, 0] = g0
        grad[k, 1] = g1
        grad[k, 2] = g2
        grad[k, 3] = g3
        grad[k, 4] = g4
        _store_symmetric(info[k], (i00, i01, i02, i03, i04, i11, i12, i13, i14, i22, i23, i24,
                                   i33, i34, i44))
    return ll, grad, info, chi2, npix


@njit(cache=True, nogil=True)
def trial_loglik(img, rows, cols, full, pad, pcol, prow, wx, wy, x0, y0, h0, s0, b0, x1, y1, h1,
                 s1, b1, radius, c0=0.0, c1=1.0):
    """Log-likelihood of each column's window before and after a step.

    The counts are ``c0 + c1 * image`` (:func:`window_stats`).

    Before: the model as it is (``full`` holds the column's Gaussian at
    (x0, y0, h0, s0)) with background b0. After: that Gaussian moved to
    (x1, y1, h1, s1) and background b1. Both in one pass over the window.

    Returns
    -------
    ll0, ll1 : (n,)
        ``ll1`` is -inf where an expected count after the step would not be
        positive.
    """
    n = x0.size
    ll0 = np.zeros(n)
    ll1 = np.zeros(n)
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
                model = full[crow + min(max(px + pad, 0), pcol - 1)]
                cnt = c0 + c1 * img[py * cols + px]
                lam0 = b0[k] + model
                if lam0 < 1e-12:
                    lam0 = 1e-12
                lam0 = c0 + c1 * lam0
                if lam0 < 1e-12:
                    lam0 = 1e-12
                ll0[k] += cnt * math.log(lam0) - lam0
                lam1 = b1[k] + model - g0 * ex0[i] + g1 * ex1[i]
                if lam1 <= 0.0:
                    bad = True
                lam1 = c0 + c1 * lam1
                if lam1 <= 0.0:
                    bad = True
                elif not bad:
                    ll1[k] += cnt * math.log(lam1) - lam1
        if bad:
            ll1[k] = -np.inf
    return ll0, ll1


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


@njit(cache=True, nogil=True)
def move(canvas, rows, cols, pad, x0, y0, h0, s0, x1, y1, h1, s1, radius):
    """Move Gaussians on a flat padded canvas: subtract each one at
    (x0, y0, h0, s0), add it at (x1, y1, h1, s1).

    The same as :func:`accumulate` of the new ones plus :func:`accumulate` of
    the old ones with negative heights, in one pass over the canvas where the
    two squares coincide (a column that moved less than half a pixel).
    """
    pcol = cols + 2 * pad
    size = 2 * radius + 1
    ex0 = np.empty(size)
    ex1 = np.empty(size)
    for k in range(x0.size):
        cx0 = int(np.rint(x0[k]))
        cy0 = int(np.rint(y0[k]))
        cx1 = int(np.rint(x1[k]))
        cy1 = int(np.rint(y1[k]))
        in0 = not (cx0 < -pad + radius or cx0 >= cols + pad - radius or cy0 < -pad + radius
                   or cy0 >= rows + pad - radius)
        in1 = not (cx1 < -pad + radius or cx1 >= cols + pad - radius or cy1 < -pad + radius
                   or cy1 >= rows + pad - radius)
        i0 = 0.5 / (s0[k] * s0[k])
        i1 = 0.5 / (s1[k] * s1[k])
        if in0 and in1 and cx0 == cx1 and cy0 == cy1:
            for i in range(size):
                px = cx0 - radius + i
                ex0[i] = math.exp(-(px - x0[k]) ** 2 * i0)
                ex1[i] = math.exp(-(px - x1[k]) ** 2 * i1)
            for j in range(size):
                py = cy0 - radius + j
                hy0 = h0[k] * math.exp(-(py - y0[k]) ** 2 * i0)
                hy1 = h1[k] * math.exp(-(py - y1[k]) ** 2 * i1)
                base = (py + pad) * pcol + (cx0 - radius + pad)
                for i in range(size):
                    canvas[base + i] += hy1 * ex1[i] - hy0 * ex0[i]
            continue
        for sign, cx, cy, xc, yc, hc, inv, inside in (
            (-1.0, cx0, cy0, x0[k], y0[k], h0[k], i0, in0),
            (1.0, cx1, cy1, x1[k], y1[k], h1[k], i1, in1),
        ):
            if not inside:
                continue
            for i in range(size):
                px = cx - radius + i
                ex0[i] = math.exp(-(px - xc) ** 2 * inv)
            for j in range(size):
                py = cy - radius + j
                hy = sign * hc * math.exp(-(py - yc) ** 2 * inv)
                base = (py + pad) * pcol + (cx - radius + pad)
                for i in range(size):
                    canvas[base + i] += hy * ex0[i]


def warm_up() -> None:
    """Compile every kernel (or load it from Numba's cache) on a tiny problem.

    ``make install`` calls this, so that the first image analysed on an
    installation does not pay the compilation (seconds, and ~35 MB of
    memory at its peak).
    """
    rows = cols = 8
    pad, radius = 6, 2
    pcol, prow = cols + 2 * pad, rows + 2 * pad
    img = np.ones(rows * cols)
    full = np.zeros(prow * pcol)
    one = np.array([3.5])
    w = np.array([3], dtype=np.int64)
    accumulate(full, rows, cols, pad, one, one, one, one, radius)
    move(full, rows, cols, pad, one, one, one, one, one + 0.2, one, one, one, radius)
    for with_ll in (True, False):
        window_stats(img, rows, cols, full, pad, pcol, prow, w, w, one, one, one, one, one, radius, with_ll)
    trial_loglik(img, rows, cols, full, pad, pcol, prow, w, w, one, one, one, one, one,
                 one + 0.1, one, one, one, one, radius)
