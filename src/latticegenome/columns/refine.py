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

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from latticegenome.columns._kernels import accumulate, move, trial_loglik, window_stats
from latticegenome.columns.geometry import in_frame
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
    sigma_err: np.ndarray  # 0 where the width was held
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
    mask = in_frame(px, py, image.shape)
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


def start_background(image: np.ndarray, x, y, radius: int, chunk: int = 1024) -> np.ndarray:
    """Starting background of each column: a low percentile of its window.

    The value at a tenth of the way up the sorted pixels of the window (of
    half-size ``radius``, centred on the nearest pixel, inside the image
    only); 0 for a window with no pixel in the image. Chunks of ``chunk``
    columns bound the memory.

    Examples
    --------
    >>> import numpy as np
    >>> start_background(np.arange(25.0).reshape(5, 5), np.array([2.0]), np.array([2.0]), 2)
    array([2.])
    """
    flat_img = image.ravel()
    ox, oy = _window_offsets(radius)
    n_col = x.size
    est_b = np.zeros(n_col)
    for start in range(0, n_col, chunk):
        k = np.arange(start, min(n_col, start + chunk))
        _, _, mask0, flat0 = _gather(image, np.rint(x[k]).astype(np.int64),
                                     np.rint(y[k]).astype(np.int64), ox, oy)
        vals = np.sort(np.where(mask0, flat_img[flat0], np.inf), axis=1)
        tenth = (0.1 * np.maximum(mask0.sum(axis=1) - 1, 0)).astype(int)
        est_b[k] = vals[np.arange(k.size), tenth]
    est_b[~np.isfinite(est_b)] = 0.0
    return est_b


def start_amplitude(image: np.ndarray, x, y, background) -> np.ndarray:
    """Starting peak height: the pixel nearest each column minus its background."""
    rows, cols = image.shape
    cflat = np.clip(np.rint(y), 0, rows - 1).astype(int) * cols + np.clip(
        np.rint(x), 0, cols - 1
    ).astype(int)
    return image.ravel()[cflat] - np.broadcast_to(np.asarray(background, float), x.shape)


def window_coverage(x, y, shape: tuple[int, int], radius: int) -> np.ndarray:
    """Pixels of each column's own window (centred on it) inside the image.

    Examples
    --------
    >>> import numpy as np
    >>> window_coverage(np.array([5.0, 0.0, -3.0]), np.array([5.0, 0.0, 5.0]), (11, 11), 2)
    array([25.,  9.,  0.])
    """
    rows, cols = shape
    nx = np.clip(np.minimum(np.rint(x) + radius, cols - 1) - np.maximum(np.rint(x) - radius, 0) + 1, 0, None)
    ny = np.clip(np.minimum(np.rint(y) + radius, rows - 1) - np.maximum(np.rint(y) - radius, 0) + 1, 0, None)
    return nx * ny


def hold_fixed(info: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Fisher information with the held parameters (``free == 0``) decoupled.

    Rows and columns of held parameters are zeroed and their diagonal set to
    one, so that solving for a step leaves them at zero.
    """
    return info * free[:, :, None] * free[:, None, :] + np.eye(5) * (1.0 - free)[:, :, None]


def _ridge(info: np.ndarray) -> np.ndarray:
    """Levenberg-Marquardt damping matrix: the diagonal of ``info`` (n, 5, 5)."""
    diag = np.einsum("nkk->nk", info)
    return np.eye(5) * (diag[:, :, None] + 1e-12)


def gauss_newton(info: np.ndarray, grad: np.ndarray, ridge: np.ndarray):
    """Undamped (Fisher scoring) step of each column: the convergence test.

    Returns
    -------
    step : ndarray, shape (n,)
        Length of the position part of the step, in pixels (NaN if singular).
    decrement : ndarray, shape (n,)
        Newton decrement ``g^T I^-1 g``: the expected log-likelihood gain.
    """
    gn = _solve(info + 1e-12 * ridge, grad)
    return np.hypot(gn[:, 0], gn[:, 1]), np.einsum("nk,nk->n", gn, grad)


def damped_step(info, grad, ridge, mu, max_step: float):
    """Levenberg-Marquardt step of each column, at most ``max_step`` px in position.

    Returns
    -------
    delta : ndarray, shape (n, 5)
        Change of (x, y, amplitude, sigma, background).
    shift : ndarray, shape (n,)
        Length of the position part before the trust region cut it, in px.
    """
    delta = _solve(info + mu[:, None, None] * ridge, grad)
    shift = np.hypot(delta[:, 0], delta[:, 1])
    scale = np.minimum(1.0, max_step / np.maximum(shift, 1e-300))
    return delta * scale[:, None], shift


def trial_parameters(x, y, h, s, b, delta, s_lo, s_hi):
    """Parameters after a step, kept physical.

    The amplitude stays positive (at least 1e-6 of the current one), the
    width within ``[s_lo, s_hi]`` and the background non-negative (counts).

    Returns
    -------
    x, y, h, s, b : ndarray
    """
    return (
        x + delta[:, 0],
        y + delta[:, 1],
        np.maximum(h + delta[:, 2], 1e-6 * np.maximum(h, 1e-3)),  # held: delta 0
        np.clip(s + delta[:, 3], s_lo, s_hi),
        np.maximum(b + delta[:, 4], 0.0),
    )


def update_damping(mu: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Damping after a step: 4x smaller if it was taken, 8x larger if not (1e-7 to 1e8)."""
    return np.where(ok, np.maximum(mu / 4.0, 1e-7), np.minimum(mu * 8.0, 1e8))


def _window_radius(radius: int | None, sigma: np.ndarray) -> int:
    """Fit window half-size (px): as given, by default ``ceil(2.5 median(sigma))``; at least 2."""
    if radius is None:
        radius = int(np.ceil(2.5 * float(np.median(sigma)))) if sigma.size else 3
    return max(int(radius), 2)


def _start_heights(img, x, y, amplitude, background, radius: int, chunk: int):
    """Starting (amplitude, background) arrays: as given, or from the image."""
    if background is None or amplitude is None:
        est_b = start_background(img, x, y, radius, chunk)
        background = est_b if background is None else background
        amplitude = start_amplitude(img, x, y, background) if amplitude is None else amplitude
    b = np.array(np.broadcast_to(np.asarray(background, float), x.shape), copy=True)
    h = np.maximum(np.array(amplitude, dtype=float, copy=True).ravel(), 1e-3)
    return h, b


@dataclass
class _Problem:
    """What stays fixed during one refinement (arrays per column)."""

    flat_img: np.ndarray
    rows: int
    cols: int
    radius: int
    render_radius: int
    pad: int
    s0: np.ndarray
    x_start: np.ndarray
    y_start: np.ndarray
    max_shift: np.ndarray
    free: np.ndarray  # (n, 5): 1 where fitted, 0 where held
    partial: np.ndarray  # less than half the window in the image: sigma, b held
    held: np.ndarray  # amplitude follows the neighbours
    groups: np.ndarray
    sigma_bounds: tuple[float, float]
    max_step: float
    tol_px: float
    tol_decrement: float
    max_column_iter: int
    chunk: int
    counts: tuple[float, float] = (0.0, 1.0)  # Poisson counts = c0 + c1 * image

    @property
    def pcol(self) -> int:
        return self.cols + 2 * self.pad

    @property
    def prow(self) -> int:
        return self.rows + 2 * self.pad


@dataclass
class _State:
    """The parameters and the bookkeeping of each column, updated in place."""

    x: np.ndarray
    y: np.ndarray
    h: np.ndarray
    s: np.ndarray
    b: np.ndarray
    mu: np.ndarray  # damping
    wx: np.ndarray  # window centres (pixel indices)
    wy: np.ndarray
    age: np.ndarray  # iterations in the current sweep
    converged: np.ndarray
    active: np.ndarray

    @classmethod
    def start(cls, x, y, h, s, b, shape) -> _State:
        rows, cols = shape
        n = x.size
        # Window centres: the nearest pixel of the image to the column, so that a
        # column outside the image is fitted on the pixels its tail reaches.
        return cls(x=x, y=y, h=h, s=s, b=b, mu=np.full(n, 1e-3),
                   wx=np.clip(np.rint(x), 0, cols - 1).astype(np.int64),
                   wy=np.clip(np.rint(y), 0, rows - 1).astype(np.int64),
                   age=np.zeros(n, dtype=int), converged=np.zeros(n, dtype=bool),
                   active=np.ones(n, dtype=bool))


def _problem(img, x, y, s0, radius, *, max_shift, groups, hold_amplitude, settings,
             hold_sigma=None) -> _Problem:
    """The fixed part of a refinement: windows, canvas, held parameters."""
    rows, cols = img.shape
    n_col = x.size
    # Columns with less than half their window in the image cannot pin down
    # their width and background: both held at the medians of the columns
    # of their group that are well inside, and only x, y, h are fitted.
    coverage = window_coverage(x, y, img.shape, radius)
    partial = coverage < 0.5 * (2 * radius + 1) ** 2
    held_h = _held_amplitude(hold_amplitude, n_col)
    free = np.ones((n_col, 5))
    free[partial, 3:] = 0.0
    free[held_h, 2] = 0.0
    if hold_sigma is not None:
        free[np.asarray(hold_sigma, dtype=bool).ravel(), 3] = 0.0
    render_radius = int(np.ceil(4.0 * float(np.max(s0)))) if n_col else 1
    return _Problem(
        flat_img=np.ascontiguousarray(img.ravel(), dtype=float), rows=rows, cols=cols,
        radius=radius, render_radius=render_radius,
        # The model image (Gaussians only) lives on a canvas padded so that every
        # column near the image renders without masks; windows read it there.
        pad=render_radius + radius + 2,
        s0=s0, x_start=x.copy(), y_start=y.copy(),
        max_shift=np.array(np.broadcast_to(np.asarray(
            max_shift if max_shift is not None else radius, float), x.shape), copy=True),
        # Columns with no pixel of their own window in the image keep their
        # height from their neighbours (their position is fitted on their tail).
        free=free, partial=partial, held=(coverage == 0) | held_h,
        groups=np.zeros(n_col, dtype=int) if groups is None else np.asarray(groups).ravel(),
        **settings,
    )


def _held_amplitude(hold_amplitude, n_col: int) -> np.ndarray:
    if hold_amplitude is None:
        return np.zeros(n_col, dtype=bool)
    return np.asarray(hold_amplitude, dtype=bool).ravel()


def _window_stats(p: _Problem, st: _State, full: np.ndarray, k: np.ndarray):
    """:func:`~latticegenome.columns._kernels.window_stats` of columns ``k``."""
    return window_stats(p.flat_img, p.rows, p.cols, full, p.pad, p.pcol, p.prow, st.wx[k], st.wy[k],
                        st.x[k], st.y[k], st.h[k], st.s[k], st.b[k], p.radius, False, *p.counts)


def _recentre_windows(p: _Problem, st: _State, k: np.ndarray) -> None:
    """Move the windows of columns ``k`` that left their central pixel by over 1 px.

    Windows stay put otherwise: re-centring on every rounding flip makes the
    fit jump between pixel sets and cycle.
    """
    cx = np.clip(st.x[k], 0, p.cols - 1)
    cy = np.clip(st.y[k], 0, p.rows - 1)
    far = (np.abs(cx - st.wx[k]) > 1.0) | (np.abs(cy - st.wy[k]) > 1.0)
    st.wx[k[far]] = np.rint(cx[far]).astype(np.int64)
    st.wy[k[far]] = np.rint(cy[far]).astype(np.int64)


def _update_chunk(p: _Problem, st: _State, full: np.ndarray, k: np.ndarray, verify: bool):
    """One damped Fisher-scoring step of columns ``k`` (updates ``st`` in place).

    Returns the columns that moved with their old ``(x, y, h, s)``, for the
    model image, or None when (in a verification sweep) all had converged.
    """
    _recentre_windows(p, st, k)
    _, grad, info, _, _ = _window_stats(p, st, full, k)
    fr = p.free[k]
    info = hold_fixed(info, fr)
    grad = grad * fr
    ridge = _ridge(info)
    gn_step, decrement = gauss_newton(info, grad, ridge)
    small = np.isfinite(gn_step) & (gn_step < p.tol_px) & (decrement < p.tol_decrement)
    st.converged[k] = small
    if verify:
        st.active[k] = ~small
        if not (~small).any():
            return None
    delta, shift = damped_step(info, grad, ridge, st.mu[k], p.max_step)
    # A short step (well under one standard error, by the Newton decrement)
    # of a column whose recent steps all succeeded lies where the quadratic
    # model of the likelihood holds: it is taken as it is. Other steps are
    # taken only if the likelihood of the window grows (Levenberg-Marquardt).
    trusted = (st.mu[k] < _TRUST_MU) & (decrement < 1.0) & (shift < 0.1)
    xt, yt, ht, stt, bt = trial_parameters(st.x[k], st.y[k], st.h[k], st.s[k], st.b[k], delta,
                                           p.sigma_bounds[0] * p.s0[k], p.sigma_bounds[1] * p.s0[k])
    ok = np.isfinite(delta).all(axis=1) & ~small
    ok &= np.hypot(xt - p.x_start[k], yt - p.y_start[k]) <= p.max_shift[k]
    trial = np.flatnonzero(ok & ~trusted)
    if trial.size:
        kt = k[trial]
        ll0, ll1 = trial_loglik(
            p.flat_img, p.rows, p.cols, full, p.pad, p.pcol, p.prow, st.wx[kt], st.wy[kt],
            st.x[kt], st.y[kt], st.h[kt], st.s[kt], st.b[kt],
            xt[trial], yt[trial], ht[trial], stt[trial], bt[trial], p.radius, *p.counts,
        )
        ok[trial] = ll1 >= ll0 - 1e-10 * np.abs(ll0)
    kk = k[ok]
    moved = (kk, st.x[kk], st.y[kk], st.h[kk], st.s[kk])
    for name, new in (("x", xt), ("y", yt), ("h", ht), ("s", stt), ("b", bt)):
        arr = getattr(st, name)
        arr[k] = np.where(ok, new, arr[k])
    st.mu[k] = update_damping(st.mu[k], ok)
    stuck = ~ok & ~small & ((st.mu[k] >= 1e8) | ~np.isfinite(gn_step))
    st.age[k] += 1
    # Partial (mostly outside) columns only carry their tails into the image:
    # a few steps each sweep are enough.
    budget = np.where(p.partial[k], 5, p.max_column_iter)
    st.active[k] = ~(small | stuck) & (st.age[k] < budget)
    return moved


def _update_group(p: _Problem, st: _State, full: np.ndarray, idx: np.ndarray, verify: bool) -> None:
    """One step of the active columns ``idx`` of a group, chunk by chunk.

    The model image is then updated for the columns that moved: the new
    Gaussians added, the old ones subtracted (cost ~ number moved).
    """
    moved = []
    for start in range(0, idx.size, p.chunk):
        m = _update_chunk(p, st, full, idx[start : start + p.chunk], verify)
        if m is not None:
            moved.append(m)
    if moved:
        kk = np.concatenate([m[0] for m in moved])
        if kk.size:
            old = [np.concatenate([m[i] for m in moved]) for i in range(1, 5)]
            move(full, p.rows, p.cols, p.pad, *old, st.x[kk], st.y[kk], st.h[kk], st.s[kk],
                 p.render_radius)


def _render(p: _Problem, st: _State, canvas: np.ndarray) -> np.ndarray:
    """The model image of all columns, drawn afresh on ``canvas`` (in place)."""
    canvas.fill(0.0)
    accumulate(canvas, p.rows, p.cols, p.pad, st.x, st.y, st.h, st.s, p.render_radius)
    return canvas


def _iterate(p: _Problem, st: _State, sync_held, max_iter: int, max_sweeps: int):
    """The outer iterations: groups one after the other, then verification sweeps.

    Returns
    -------
    iterations : int
    canvas : ndarray or None
        The model canvas (reused for the final pass), None if never drawn.
    """
    full = None  # the model, when current; None: draw it afresh
    canvas = None  # one model canvas, re-rendered in place at each sweep
    it = 0
    sweeps = 0
    group_ids = np.unique(p.groups)
    for it in range(1, max_iter + 1):
        verify = not st.active.any()
        if verify:
            # Neighbours may have moved since a column stopped: check all once
            # more with the final model, and go on with those not yet done.
            if sweeps >= max_sweeps:
                break
            sweeps += 1
            st.active[:] = True
            st.age[:] = 0
            full = None  # fresh render: no accumulated rounding
        # Held widths, backgrounds and heights follow their neighbours at
        # every iteration (the neighbours converge, and so do they); a
        # changed Gaussian is redrawn in the model.
        changed, old = sync_held(st.s, st.b, st.h)
        if full is not None and changed.size:
            move(full, p.rows, p.cols, p.pad, st.x[changed], st.y[changed], old[1], old[0],
                 st.x[changed], st.y[changed], st.h[changed], st.s[changed], p.render_radius)
        st.active[changed] = True
        for group in group_ids:
            idx_active = np.flatnonzero(st.active & (p.groups == group))
            if idx_active.size == 0:
                continue
            if full is None:
                canvas = canvas if canvas is not None else np.zeros(p.prow * p.pcol)
                full = _render(p, st, canvas)
            _update_group(p, st, full, idx_active, verify)
    return it, canvas


#: The summed Pearson dispersion is replaced by the median window's when it exceeds it
#: by this factor (a few outlier windows, not the image, are then over-dispersed).
OUTLIER_DISPERSION = 2.0


def _uncertainties(p: _Problem, st: _State, canvas: np.ndarray | None):
    """Standard errors of (x, y, amplitude, sigma) and the Pearson dispersion at the solution.

    From the Fisher information of the final model (drawn afresh), scaled by
    the square root of the dispersion (chi^2 per degree of freedom).
    """
    n_col = st.x.size
    full = _render(p, st, canvas if canvas is not None else np.zeros(p.prow * p.pcol))
    cov_diag = np.full((n_col, 4), np.nan)
    chi2 = 0.0
    dof = 0.0
    per_window = []
    for start in range(0, n_col, p.chunk):
        k = np.arange(start, min(n_col, start + p.chunk))
        _, _, info, c2, npx = _window_stats(p, st, full, k)
        info = hold_fixed(info, p.free[k])
        # Jacobi-scaled before the conditioning test: the parameters have different units,
        # so the raw condition number grows with the counts (a noise-free or very bright
        # image looked singular); the scaled one measures real degeneracy only
        diag = np.einsum("nii->ni", info)
        ok = (diag > 0).all(axis=1)
        d = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
        scaled = info * d[:, :, None] * d[:, None, :]
        good = ok & (np.linalg.cond(scaled) < 1e12)
        if good.any():
            inv = np.linalg.inv(scaled[good]) * d[good][:, :, None] * d[good][:, None, :]
            cov_diag[k[good]] = np.stack([inv[:, 0, 0], inv[:, 1, 1], inv[:, 2, 2],
                                          inv[:, 3, 3]], axis=1)
        chi2 += float(np.sum(c2))
        dof += float(np.sum(np.maximum(npx - 5, 0)))
        per_window.append(c2 / np.maximum(npx - 5, 1))
    dispersion = chi2 / dof if dof > 0 else 1.0
    typical = float(np.median(np.concatenate(per_window))) if per_window else dispersion
    if dispersion > OUTLIER_DISPERSION * typical:
        # a few windows dominate the sum: at very low counts, a window whose fitted
        # background went to ~0 turns a single count into a huge Pearson term; the
        # typical window is the image's dispersion
        dispersion = typical
    return np.sqrt(np.maximum(cov_diag, 0) * dispersion), float(dispersion)


#: The Poisson counts of the images refined in this context: ``c0 + c1 * image``
#: (:func:`counts_of`); (0, 1) is the image itself.
_COUNTS: ContextVar[tuple[float, float]] = ContextVar("counts", default=(0.0, 1.0))


@contextmanager
def counts_of(c0: float, c1: float):
    """Refine the images of this context as if their Poisson counts were ``c0 + c1 * image``.

    An ABF image is mirrored (``M - raw``) so that its dark columns become
    peaks; its counts are still the raw image, ``M - image``, and the
    variance of a pixel is ``M - model``, not ``model``: weighting by the
    mirrored model makes the dark columns' pixels count too little and the
    background's too much. Every :func:`refine_columns` call in the context
    (the finder makes several) uses this count model unless given one.

    Parameters
    ----------
    c0 : float
        Offset (image units).
    c1 : {1.0, -1.0}
        Sign.

    Examples
    --------
    >>> with counts_of(200.0, -1.0):
    ...     _COUNTS.get()
    (200.0, -1.0)
    """
    if c1 not in (1.0, -1.0) or not np.isfinite(c0):
        raise ValueError(f"counts {c0} + {c1} * image: c1 must be +-1 and c0 finite")
    token = _COUNTS.set((float(c0), float(c1)))
    try:
        yield
    finally:
        _COUNTS.reset(token)


def refine_columns(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, *,
    sigma: float | np.ndarray, amplitude: np.ndarray | None = None,
    background: np.ndarray | float | None = None, radius: int | None = None,
    max_iter: int = 60, tol_px: float = 5e-4, sigma_bounds: tuple[float, float] = (0.5, 2.0),
    chunk: int = 1024, max_step: float = 1.0, max_shift: float | np.ndarray | None = None,
    tol_decrement: float = 1e-4, groups: np.ndarray | None = None, max_column_iter: int = 15,
    max_sweeps: int = 2, hold_amplitude: np.ndarray | None = None,
    counts: tuple[float, float] | None = None, hold_sigma: np.ndarray | None = None,
) -> Refinement:
    """Refine column positions by batched Poisson maximum likelihood.

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
        Non-negative image, ideally in detector counts. Backgrounds are kept
        non-negative.
    x, y : ndarray, shape (n,)
        Starting positions in pixels (x = column index, y = row index).
    sigma : float or ndarray
        Starting Gaussian width(s) in pixels.
    amplitude, background : ndarray, optional
        Starting peak heights and local backgrounds; estimated from the image
        when omitted (:func:`start_amplitude`, :func:`start_background`).
    radius : int, optional
        Half-size of each fit window in pixels; default ``ceil(2.5 sigma)``.
    max_iter : int
        Maximum number of outer iterations.
    tol_px, tol_decrement : float
        Convergence: largest position step of a column (px), and its Newton
        decrement g^T I^-1 g (the expected log-likelihood gain of one more step).
    groups : ndarray of int, shape (n,), optional
        Columns of one group are updated together, groups one after the other
        with the model re-rendered in between (Gauss-Seidel). Give
        interpenetrating sublattices (A and B sites) different groups: their
        windows overlap, and updating both at once oscillates.
    max_sweeps, max_column_iter : int
        Verification sweeps (fresh model, every column checked again) after
        all columns have stopped; a column still moving after
        ``max_column_iter`` iterations of a sweep stops there (not converged
        unless a later verification sweep settles it).
    sigma_bounds : (float, float)
        Allowed width range as multiples of the starting width.
    chunk, max_step
        Columns processed at once (memory bound); largest position change of
        a column in one iteration, in pixels.
    max_shift : float or ndarray, optional
        Largest distance a column (each column, for an array) may move from its
        starting position, in pixels; default the window half-size.
    hold_amplitude : ndarray of bool, shape (n,), optional
        Columns whose amplitude stays at its starting value (for columns
        outside the image, whose few pixels of tail cannot tell a brighter
        column farther out from a fainter one nearer).
    counts : (float, float), optional
        The Poisson counts are ``c0 + c1 * image``: default that of the
        context (:func:`counts_of`), else the image itself (0, 1). An ABF
        image mirrored as ``M - raw`` has counts (M, -1).
    hold_sigma : ndarray of bool, shape (n,), optional
        Columns whose width stays at its starting value ``sigma`` (a width
        shared by a sublattice, where single columns have too few counts to
        fit their own).

    Returns
    -------
    Refinement
    """
    img = np.asarray(image, dtype=float)
    x = np.array(x, dtype=float, copy=True).ravel()
    y = np.array(y, dtype=float, copy=True).ravel()
    s = np.array(np.broadcast_to(np.asarray(sigma, float), x.shape), copy=True)
    s0 = s.copy()
    radius = _window_radius(radius, s0)
    h, b = _start_heights(img, x, y, amplitude, background, radius, chunk)
    p = _problem(img, x, y, s0, radius, max_shift=max_shift, groups=groups,
                 hold_amplitude=hold_amplitude, hold_sigma=hold_sigma, settings={
                     "sigma_bounds": sigma_bounds, "max_step": max_step, "tol_px": tol_px,
                     "tol_decrement": tol_decrement, "max_column_iter": max_column_iter,
                     "chunk": chunk, "counts": tuple(counts) if counts is not None
                     else _COUNTS.get()})
    sync_held = _HeldFromNeighbours(x, y, p.groups, p.partial, p.held)
    st = _State.start(x, y, h, s, b, img.shape)
    it, canvas = _iterate(p, st, sync_held, max_iter, max_sweeps)
    err, dispersion = _uncertainties(p, st, canvas)
    return Refinement(
        x=st.x, y=st.y, amplitude=st.h, sigma=st.s, background=st.b,
        x_err=err[:, 0], y_err=err[:, 1], amplitude_err=err[:, 2],
        sigma_err=np.where(p.free[:, 3] > 0, err[:, 3], 0.0), converged=st.converged, iterations=it, dispersion=dispersion,
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
