"""Sub-pixel refinement of atomic columns by Poisson maximum likelihood.

Every column is fitted in a square window with five free parameters
(x, y, amplitude, sigma, local background); the tails of all other columns
that reach into the window are taken from a rendered model image, so
overlapping neighbours are modelled. The fits of all columns are batched:
one damped Fisher-scoring (Levenberg-Marquardt) step per column and outer
iteration; the per-window sums (log-likelihood, gradient, Fisher information)
and the model rendering are compiled loops (:mod:`latticegenome.columns._kernels`,
checked against the NumPy reference functions of :mod:`latticegenome.columns.model`),
the steps themselves batched NumPy. Interpenetrating sublattices (A and B)
are updated alternately (Gauss-Seidel). Columns outside the image are
fitted too (they shine into it), on the image pixels nearest to them; those
with too little of their window in the image hold width and background (and,
on request, height) at the medians of their nearest well-inside neighbours
of the same sublattice, followed at every iteration. Nothing compares
columns pairwise: cost is linear in the number of columns.

The uncertainty of each parameter is the square root of the diagonal of the
inverse Fisher information at the solution (the Cramér-Rao bound reached by
the maximum-likelihood estimate), multiplied by the square root of the
image's Pearson dispersion, which is 1 for images in detector counts and
rescales the errors of images in arbitrary units (quasi-Poisson).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latticegenome.columns._kernels import accumulate, move, trial_loglik, window_stats
from latticegenome.columns.model import (
    fisher_information,
    render_columns,
    window_jacobian,
)


@dataclass
class Refinement:
    """Result of :func:`refine_columns`; arrays have one entry per column.

    Positions and widths are in pixels; amplitude and background in image
    units per pixel. ``*_err`` are one-standard-deviation uncertainties.
    """

    x: np.ndarray
    y: np.ndarray
    amplitude: np.ndarray
    sigma: np.ndarray
    background: np.ndarray
    x_err: np.ndarray
    y_err: np.ndarray
    amplitude_err: np.ndarray
    converged: np.ndarray
    iterations: int
    dispersion: float


def _window_offsets(radius: int):
    off = np.arange(-radius, radius + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    return ox.ravel(), oy.ravel()


def _gather(image, cx, cy, ox, oy):
    """Pixel coordinates, inside-image mask and flat indices of windows."""
    rows, cols = image.shape
    px = cx[:, None] + ox[None, :]
    py = cy[:, None] + oy[None, :]
    mask = (px >= 0) & (px < cols) & (py >= 0) & (py < rows)
    flat = np.clip(py, 0, rows - 1) * cols + np.clip(px, 0, cols - 1)
    return px, py, mask, flat


def _solve(a, b):
    """Batched solve of a (n, k, k) x = b (n, k); singular systems give NaN."""
    try:
        return np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = np.full(b.shape, np.nan)
        ok = np.linalg.cond(a) < 1e14
        if ok.any():
            out[ok] = np.linalg.solve(a[ok], b[ok][..., None])[..., 0]
        return out


#: Damping below which a column's recent steps all succeeded (it starts at
#: 1e-3, falls 4x with each accepted step and rises 8x with each rejected one).
_TRUST_MU = 1e-4


class _HeldFromNeighbours:
    """Held parameters of border columns, from their nearest neighbours.

    Columns with too little of their window in the image (``partial``) take
    the width and background, columns whose height is held (``held``) the
    height, of the median of the ``k`` nearest well-inside columns of the same
    group (local, not global: the layers of a superlattice differ in height
    and width). The neighbours are found once; calling the object updates the
    arrays in place and returns the columns whose Gaussian changed, with
    their old ``(sigma, amplitude)``.
    """

    def __init__(self, x, y, groups, partial, held, k=8, rtol=1e-5):
        from scipy.spatial import cKDTree

        self.rtol = rtol  # smaller relative changes are not worth a redraw
        self.sb = []  # (targets, donor indices (t, k)) per group
        self.h = []
        for group in np.unique(groups):
            sel = groups == group
            donors = np.flatnonzero(sel & ~partial)
            if donors.size == 0:
                continue
            tree = None
            for store, targets in ((self.sb, sel & partial), (self.h, sel & held)):
                t_idx = np.flatnonzero(targets)
                if t_idx.size == 0:
                    continue
                if tree is None:
                    tree = cKDTree(np.column_stack([x[donors], y[donors]]))
                kk = min(k, donors.size)
                _, nb = tree.query(np.column_stack([x[t_idx], y[t_idx]]), k=kk)
                store.append((t_idx, donors[np.asarray(nb).reshape(t_idx.size, kk)]))

    def __call__(self, s, b, h):
        old_s, old_h = s.copy(), h.copy()
        for t_idx, nb in self.sb:
            s[t_idx] = np.median(s[nb], axis=1)
            b[t_idx] = np.median(b[nb], axis=1)
        for t_idx, nb in self.h:
            h[t_idx] = np.median(h[nb], axis=1)
        changed = (np.abs(s - old_s) > self.rtol * old_s) | (np.abs(h - old_h) > self.rtol * np.abs(old_h))
        s[~changed], h[~changed] = old_s[~changed], old_h[~changed]  # the model keeps them
        idx = np.flatnonzero(changed)
        return idx, (old_s[idx], old_h[idx])


def refine_columns(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sigma: float | np.ndarray,
    amplitude: np.ndarray | None = None,
    background: np.ndarray | float | None = None,
    radius: int | None = None,
    max_iter: int = 60,
    tol_px: float = 5e-4,
    sigma_bounds: tuple[float, float] = (0.5, 2.0),
    chunk: int = 1024,
    max_step: float = 1.0,
    max_shift: float | np.ndarray | None = None,
    tol_decrement: float = 1e-4,
    groups: np.ndarray | None = None,
    max_column_iter: int = 15,
    max_sweeps: int = 2,
    hold_amplitude: np.ndarray | None = None,
) -> Refinement:
    """Refine column positions by batched Poisson maximum likelihood.

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
        Non-negative image, ideally in detector counts. Backgrounds are
        kept non-negative.
    x, y : ndarray, shape (n,)
        Starting positions in pixels (x = column index, y = row index).
    sigma : float or ndarray
        Starting Gaussian width(s) in pixels.
    amplitude, background : ndarray, optional
        Starting peak heights and local backgrounds; estimated from the
        image when omitted.
    radius : int, optional
        Half-size of each fit window in pixels; default ``ceil(2.5 sigma)``.
    max_iter : int
        Maximum number of outer iterations.
    tol_px : float
        Convergence: largest position step of a column, in pixels.
    tol_decrement : float
        Convergence: Newton decrement g^T I^-1 g of a column (the expected
        log-likelihood gain of one more step), dimensionless.
    groups : ndarray of int, shape (n,), optional
        Columns of one group are updated together, groups one after the
        other with the model re-rendered in between (Gauss-Seidel). Give
        interpenetrating sublattices (A and B sites) different groups: their
        windows overlap, and updating both at once oscillates.
    max_sweeps : int
        Verification sweeps (fresh model, every column checked again) after
        all columns have stopped.
    max_column_iter : int
        A column still moving after this many iterations of a sweep stops
        there (not converged unless a later verification sweep settles it).
    sigma_bounds : (float, float)
        Allowed width range as multiples of the starting width.
    chunk : int
        Columns processed at once (memory bound).
    max_step : float
        Largest position change of a column in one iteration, in pixels.
    max_shift : float or ndarray, optional
        Largest distance a column (each column, for an array) may move from
        its starting position, in pixels; default the window half-size.
    hold_amplitude : ndarray of bool, shape (n,), optional
        Columns whose amplitude stays at its starting value (only position,
        and width and background where enough of the window is in the
        image, are fitted). For columns outside the image, whose few pixels
        of tail cannot tell a brighter column farther out from a fainter
        one nearer.

    Returns
    -------
    Refinement
    """
    img = np.asarray(image, dtype=float)
    rows, cols = img.shape
    flat_img = img.ravel()
    x = np.array(x, dtype=float, copy=True).ravel()
    y = np.array(y, dtype=float, copy=True).ravel()
    n_col = x.size
    s = np.array(np.broadcast_to(np.asarray(sigma, float), x.shape), copy=True)
    s0 = s.copy()
    if radius is None:
        radius = int(np.ceil(2.5 * float(np.median(s0)))) if n_col else 3
    radius = max(int(radius), 2)
    ox, oy = _window_offsets(radius)
    if background is None or amplitude is None:
        # Starting values, chunk by chunk (memory): background = a low
        # percentile of the window, amplitude = centre pixel above it.
        est_b = np.zeros(n_col)
        for start in range(0, n_col, chunk):
            k = np.arange(start, min(n_col, start + chunk))
            _, _, mask0, flat0 = _gather(img, np.rint(x[k]).astype(np.int64),
                                         np.rint(y[k]).astype(np.int64), ox, oy)
            vals = np.sort(np.where(mask0, flat_img[flat0], np.inf), axis=1)
            tenth = (0.1 * np.maximum(mask0.sum(axis=1) - 1, 0)).astype(int)
            est_b[k] = vals[np.arange(k.size), tenth]
        est_b[~np.isfinite(est_b)] = 0.0
        if background is None:
            background = est_b
        if amplitude is None:
            cflat = np.clip(np.rint(y), 0, rows - 1).astype(int) * cols + np.clip(
                np.rint(x), 0, cols - 1
            ).astype(int)
            amplitude = flat_img[cflat] - np.broadcast_to(np.asarray(background, float), x.shape)
    b = np.array(np.broadcast_to(np.asarray(background, float), x.shape), copy=True)
    h = np.maximum(np.array(amplitude, dtype=float, copy=True).ravel(), 1e-3)
    mu = np.full(n_col, 1e-3)
    # Pixels of each column's own window (centred on it) inside the image.
    nx = np.clip(np.minimum(np.rint(x) + radius, cols - 1) - np.maximum(np.rint(x) - radius, 0) + 1, 0, None)
    ny = np.clip(np.minimum(np.rint(y) + radius, rows - 1) - np.maximum(np.rint(y) - radius, 0) + 1, 0, None)
    # Columns with no pixel of their own window in the image keep their
    # height from their neighbours (their position is fitted on their tail).
    no_window = nx * ny == 0
    active = np.ones(n_col, dtype=bool)
    # Columns with less than half their window in the image cannot pin down
    # their width and background: both held at the medians of the columns
    # of their group that are well inside, and only x, y, h are fitted.
    partial = nx * ny < 0.5 * (2 * radius + 1) ** 2
    free = np.ones((n_col, 5))
    free[partial, 3:] = 0.0
    held_h = np.zeros(n_col, dtype=bool) if hold_amplitude is None else np.asarray(
        hold_amplitude, dtype=bool).ravel()
    free[held_h, 2] = 0.0
    age = np.zeros(n_col, dtype=int)  # iterations in the current sweep
    converged = np.zeros(n_col, dtype=bool)
    # Window centres: the nearest pixel of the image to the column, so that a
    # column outside the image is fitted on the pixels its tail reaches.
    wx = np.clip(np.rint(x), 0, cols - 1).astype(np.int64)
    wy = np.clip(np.rint(y), 0, rows - 1).astype(np.int64)
    x_start = x.copy()
    y_start = y.copy()
    max_shift = np.array(np.broadcast_to(np.asarray(
        max_shift if max_shift is not None else radius, float), x.shape), copy=True)
    groups = np.zeros(n_col, dtype=int) if groups is None else np.asarray(groups).ravel()
    group_ids = np.unique(groups)
    render_radius = int(np.ceil(4.0 * float(np.max(s0)))) if n_col else 1
    # The model image (Gaussians only) lives on a canvas padded so that every
    # column near the image renders without masks; windows read it there.
    pad = render_radius + radius + 2
    pcol = cols + 2 * pad
    prow = rows + 2 * pad
    canvas_size = prow * pcol
    flat_img = np.ascontiguousarray(flat_img, dtype=float)
    sync_held = _HeldFromNeighbours(x, y, groups, partial, no_window | held_h)
    full = None
    canvas = None  # one model canvas, re-rendered in place at each sweep
    it = 0
    sweeps = 0
    for it in range(1, max_iter + 1):
        if not active.any():
            # Neighbours may have moved since a column stopped: check all once
            # more with the final model, and go on with those not yet done.
            if sweeps >= max_sweeps:
                break
            sweeps += 1
            active[:] = True
            age[:] = 0
            verify = True
            full = None  # fresh render: no accumulated rounding
        else:
            verify = False
        # Held widths, backgrounds and heights follow their neighbours at
        # every iteration (the neighbours converge, and so do they); a
        # changed Gaussian is redrawn in the model.
        changed, old = sync_held(s, b, h)
        if full is not None and changed.size:
            move(full, rows, cols, pad, x[changed], y[changed], old[1], old[0],
                 x[changed], y[changed], h[changed], s[changed], render_radius)
        active[changed] = True
        for group in group_ids:
            idx_active = np.flatnonzero(active & (groups == group))
            if idx_active.size == 0:
                continue
            if full is None:
                full = canvas if canvas is not None else np.zeros(canvas_size)
                canvas = full
                full.fill(0.0)
                accumulate(full, rows, cols, pad, x, y, h, s, render_radius)
            moved = []
            for start in range(0, idx_active.size, chunk):
                k = idx_active[start : start + chunk]
                # Windows stay put unless a column leaves its central pixel by
                # more than 1 px: re-centring on every rounding flip makes the
                # fit jump between pixel sets and cycle.
                cx = np.clip(x[k], 0, cols - 1)
                cy = np.clip(y[k], 0, rows - 1)
                far = (np.abs(cx - wx[k]) > 1.0) | (np.abs(cy - wy[k]) > 1.0)
                wx[k[far]] = np.rint(cx[far]).astype(np.int64)
                wy[k[far]] = np.rint(cy[far]).astype(np.int64)
                _, grad, info, _, _ = window_stats(
                    flat_img, rows, cols, full, pad, pcol, prow, wx[k], wy[k],
                    x[k], y[k], h[k], s[k], b[k], radius, False,
                )
                fr = free[k]
                info = info * fr[:, :, None] * fr[:, None, :] + np.eye(5) * (1.0 - fr)[:, :, None]
                grad = grad * fr
                diag = np.einsum("nkk->nk", info)
                ridge = np.eye(5) * (diag[:, :, None] + 1e-12)
                # Undamped (Gauss-Newton / Fisher scoring) step: the convergence test.
                gn = _solve(info + 1e-12 * ridge, grad)
                gn_step = np.hypot(gn[:, 0], gn[:, 1])
                decrement = np.einsum("nk,nk->n", gn, grad)
                small = np.isfinite(gn_step) & (gn_step < tol_px) & (decrement < tol_decrement)
                converged[k] = small
                if verify:
                    active[k] = ~small
                    if not (~small).any():
                        continue
                delta = _solve(info + mu[k, None, None] * ridge, grad)
                # Trust region on position: at most max_step px per iteration.
                shift = np.hypot(delta[:, 0], delta[:, 1])
                scale = np.minimum(1.0, max_step / np.maximum(shift, 1e-300))
                delta = delta * scale[:, None]
                # A short step (well under one standard error, by the Newton
                # decrement) of a column whose recent steps all succeeded lies
                # where the quadratic model of the likelihood holds: it is
                # taken as it is. Other steps are taken only if the
                # likelihood of the window grows (Levenberg-Marquardt).
                trusted = (mu[k] < _TRUST_MU) & (decrement < 1.0) & (shift < 0.1)
                xt = x[k] + delta[:, 0]
                yt = y[k] + delta[:, 1]
                ht = np.maximum(h[k] + delta[:, 2], 1e-6 * np.maximum(h[k], 1e-3))  # held: delta 0
                st = np.clip(s[k] + delta[:, 3], sigma_bounds[0] * s0[k], sigma_bounds[1] * s0[k])
                bt = np.maximum(b[k] + delta[:, 4], 0.0)  # counts: background >= 0
                ok = np.isfinite(delta).all(axis=1) & ~small
                ok &= np.hypot(xt - x_start[k], yt - y_start[k]) <= max_shift[k]
                trial = np.flatnonzero(ok & ~trusted)
                if trial.size:
                    kt = k[trial]
                    ll0, ll1 = trial_loglik(
                        flat_img, rows, cols, full, pad, pcol, prow, wx[kt], wy[kt],
                        x[kt], y[kt], h[kt], s[kt], b[kt],
                        xt[trial], yt[trial], ht[trial], st[trial], bt[trial], radius,
                    )
                    ok[trial] = ll1 >= ll0 - 1e-10 * np.abs(ll0)
                kk = k[ok]
                moved.append((kk, x[kk], y[kk], h[kk], s[kk]))
                x[k] = np.where(ok, xt, x[k])
                y[k] = np.where(ok, yt, y[k])
                h[k] = np.where(ok, ht, h[k])
                s[k] = np.where(ok, st, s[k])
                b[k] = np.where(ok, bt, b[k])
                mu[k] = np.where(ok, np.maximum(mu[k] / 4.0, 1e-7), np.minimum(mu[k] * 8.0, 1e8))
                stuck = ~ok & ~small & ((mu[k] >= 1e8) | ~np.isfinite(gn_step))
                age[k] += 1
                # Partial (mostly outside) columns only carry their tails into
                # the image: a few steps each sweep are enough.
                budget = np.where(partial[k], 5, max_column_iter)
                active[k] = ~(small | stuck) & (age[k] < budget)
            # Update the model image for the columns that moved: add the new
            # Gaussians, subtract the old ones (cost ~ number moved).
            if moved:
                kk = np.concatenate([m[0] for m in moved])
                if kk.size:
                    old = [np.concatenate([m[i] for m in moved]) for i in range(1, 5)]
                    move(full, rows, cols, pad, *old, x[kk], y[kk], h[kk], s[kk], render_radius)
    # Final pass: uncertainties from the Fisher information at the solution.
    if full is None:
        full = np.zeros(canvas_size)
    full.fill(0.0)  # the canvas is reused (memory)
    accumulate(full, rows, cols, pad, x, y, h, s, render_radius)
    cov_diag = np.full((n_col, 3), np.nan)
    chi2 = 0.0
    dof = 0.0
    for start in range(0, n_col, chunk):
        k = np.arange(start, min(n_col, start + chunk))
        _, _, info, c2, npx = window_stats(
            flat_img, rows, cols, full, pad, pcol, prow, wx[k], wy[k], x[k], y[k], h[k], s[k], b[k],
            radius, False,
        )
        fr = free[k]
        info = info * fr[:, :, None] * fr[:, None, :] + np.eye(5) * (1.0 - fr)[:, :, None]
        good = np.linalg.cond(info) < 1e12
        if good.any():
            inv = np.linalg.inv(info[good])
            cov_diag[k[good]] = np.stack([inv[:, 0, 0], inv[:, 1, 1], inv[:, 2, 2]], axis=1)
        chi2 += float(np.sum(c2))
        dof += float(np.sum(np.maximum(npx - 5, 0)))
    dispersion = chi2 / dof if dof > 0 else 1.0
    err = np.sqrt(np.maximum(cov_diag, 0) * dispersion)
    return Refinement(
        x=x, y=y, amplitude=h, sigma=s, background=b,
        x_err=err[:, 0], y_err=err[:, 1], amplitude_err=err[:, 2],
        converged=converged, iterations=it, dispersion=float(dispersion),
    )


def crlb_position(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    amplitude: np.ndarray,
    sigma: np.ndarray,
    background: float,
    *,
    radius: int,
) -> np.ndarray:
    """Cramér-Rao bound of the x position of each column, in pixels.

    Computed numerically from the Poisson Fisher information of exactly the
    model that :func:`refine_columns` fits (five parameters per column in a
    window of half-size ``radius``, the other columns' tails included in the
    expected counts), evaluated at the true parameters.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    amplitude = np.broadcast_to(np.asarray(amplitude, float), x.shape)
    sigma = np.broadcast_to(np.asarray(sigma, float), x.shape)
    rows, cols = shape
    full = render_columns(shape, x, y, amplitude, sigma).ravel()
    ox, oy = _window_offsets(radius)
    dummy = np.zeros(shape)
    out = np.full(x.size, np.nan)
    for start in range(0, x.size, 4096):
        k = np.arange(start, min(x.size, start + 4096))
        px, py, mask, flat = _gather(dummy, np.rint(x[k]).astype(np.int64), np.rint(y[k]).astype(np.int64), ox, oy)
        _, jac = window_jacobian(px - x[k, None], py - y[k, None], amplitude[k], sigma[k])
        lam = background + full[flat]
        info = fisher_information(jac, lam, mask)
        good = np.linalg.cond(info) < 1e12
        if good.any():
            out[k[good]] = np.sqrt(np.linalg.inv(info[good])[:, 0, 0])
    return out
