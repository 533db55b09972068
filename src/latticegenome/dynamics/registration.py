"""Registration of the frames of a series, and the identity of columns across frames.

Three steps, each a function of plain NumPy arrays:

1. :func:`register_rigid`: the translation of every frame against the reference
   frame, sub-pixel, by the upsampled cross-correlation of Hann-windowed frames (the
   matrix-DFT refinement of :func:`skimage.registration.phase_cross_correlation`, not
   whitened). A crystal correlates with itself at every lattice translation, so the
   peak is looked for within half a spacing of the previous frame's shift plus the
   step between the two frames.
2. :func:`register_lattice`: per frame, a smooth polynomial field (order 1: affine;
   2: quadratic) from frame to reference coordinates, fitted by least squares to
   the columns themselves (A sites by default), matched to the reference frame's
   after the rigid shift, with outlier rejection. Sample drift, rotation, magnification
   and slow-scan distortion between frames are removed; the local motion of the
   columns that are not fitted (B displacements, a moving polar domain) is kept.
   :func:`apply_registration` maps any points with it.
3. :func:`assign_tracks`: every column gets a track id, the same lattice site in
   every frame: registered positions are matched, site by site, to the reference
   frame's columns and to those that appeared since; :func:`align_indices` puts
   every frame's lattice indices (i, j) in the reference frame's index system.

Conventions: positions are pixels, x = column index, y = row index, origin at the
centre of pixel [0, 0]. A shift is the displacement of the frame's content from
the reference, (dx, dy) px: a point at ``p`` in the reference is at ``p + shift``
in the frame. Column tables are mappings of equal-length arrays as
:func:`latticegenome.columns.finder.find_columns` returns (``x``, ``y``, ``site``,
``detected``, ``i``, ``j``, ``x_err``, ``y_err``...; a :class:`Columns` works too).
Undetected rows (vacant or too faint lattice sites) are not columns: they are
never fitted, and their track id is -1.

Uniform strain between frames (thermal expansion, a change of magnification) is
a smooth field too, so registration removes it: measure lattice parameters in each
frame's own coordinates (the fast-scan axis x is the undistorted one), or from
``reg["linear"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.spatial import cKDTree

#: Default matching gate, as a fraction of the short A-A spacing.
GATE = 0.3


def _table(columns) -> dict:
    """The arrays of a column table that registration uses (all rows detected if not said)."""
    if hasattr(columns, "as_dict"):
        columns = columns.as_dict()
    if not isinstance(columns, Mapping):
        raise TypeError(f"a column table is a mapping of arrays, not {type(columns).__name__}")
    x = np.asarray(columns["x"], float)
    out = {"x": x, "y": np.asarray(columns["y"], float), "site": np.asarray(columns["site"]).astype(str),
           "detected": np.asarray(columns.get("detected", np.ones(x.size, bool)), bool)}
    for name in ("i", "j", "x_err", "y_err"):
        if name in columns:
            out[name] = np.asarray(columns[name])
    return out


def _order_from(reference: int, n: int) -> list[int]:
    """Frames outward from the reference: forward to the last, then back to the first."""
    if not 0 <= reference < n:
        raise ValueError(f"reference frame {reference} is not one of the {n} frames")
    return [*range(reference + 1, n), *range(reference - 1, -1, -1)]


def _check_count(n: int, what: str) -> None:
    if n < 2:
        raise ValueError(f"registration needs at least two {what}, not {n}")


def _prepared(frame, k: int, shape, window) -> np.ndarray:
    """The Fourier transform of a mean-subtracted, windowed frame (its shape checked)."""
    img = np.asarray(frame, float)
    if img.ndim != 2:
        raise ValueError(f"frame {k} is not a 2-D image (shape {img.shape})")
    if shape is not None and img.shape != tuple(shape):
        raise ValueError(f"frame {k} has shape {img.shape}, the reference frame {tuple(shape)}")
    return np.fft.fft2((img - img.mean()) * window)


def _upsampled_peak(cross: np.ndarray, start: np.ndarray, upsample: int) -> tuple[np.ndarray, float]:
    """Sub-pixel maximum of the correlation of a cross-power spectrum near ``start`` (dx, dy).

    The correlation is evaluated by a matrix DFT on a grid of 1 / ``upsample`` px
    over +-0.75 px about ``start`` (as :func:`skimage.registration.phase_cross_correlation`
    refines its peak). Returns the lag (dx, dy) and the correlation there.
    """
    rows, cols = cross.shape
    grid = np.arange(-0.75, 0.75 + 0.5 / upsample, 1.0 / upsample)
    fy, fx = np.fft.fftfreq(rows), np.fft.fftfreq(cols)
    ky = np.exp(2j * np.pi * np.outer(start[1] + grid, fy))
    kx = np.exp(2j * np.pi * np.outer(fx, start[0] + grid))
    corr = (ky @ cross @ kx).real / cross.size
    r, c = np.unravel_index(np.argmax(corr), corr.shape)
    return start + np.array([grid[c], grid[r]]), float(corr[r, c])


def _correlate(f_ref: np.ndarray, f_mov: np.ndarray, upsample: int, guess, radius: float):
    """Displacement (dx, dy) px of the moving frame's content from the reference's, within
    ``radius`` of ``guess``, and the error ``sqrt(1 - rho^2)`` (rho the normalised correlation).

    The plain (not whitened) cross-correlation: a lattice image puts its signal in a
    few Fourier peaks, and whitening lets the shot noise of all the other frequencies
    swamp them. A lattice correlates with itself at every lattice translation, with
    nearly equal heights on a large frame, so the peak is looked for near the guess.
    """
    cross = np.conj(f_ref) * f_mov
    corr = np.fft.ifft2(cross).real
    rows, cols = corr.shape
    ly, lx = np.fft.fftfreq(rows, 1.0 / rows), np.fft.fftfreq(cols, 1.0 / cols)
    # lags as the integers nearest the guess modulo the frame (the correlation is circular)
    lx = lx[None, :] + cols * np.rint((guess[0] - lx[None, :]) / cols)
    ly = ly[:, None] + rows * np.rint((guess[1] - ly[:, None]) / rows)
    far = (lx - guess[0]) ** 2 + (ly - guess[1]) ** 2 > radius**2
    r, c = np.unravel_index(np.argmax(np.where(far, -np.inf, corr)), corr.shape)
    shift, peak = _upsampled_peak(cross, np.array([lx[0, c], ly[r, 0]], float), upsample)
    energy = np.sqrt(np.sum(np.abs(f_ref) ** 2) * np.sum(np.abs(f_mov) ** 2)) / cross.size
    rho = min(1.0, abs(peak) / energy) if energy > 0 else 0.0
    return shift, float(np.sqrt(1.0 - rho**2))


def _search_radius(ref: np.ndarray, spacing_px) -> float:
    """Half (0.45) the short lattice spacing of the reference frame, px (from its autocorrelation)."""
    if spacing_px is None:
        from latticegenome.columns.lattice import estimate_lattice

        try:
            basis = estimate_lattice(ref)
        except ValueError as exc:
            raise ValueError(f"no lattice in the reference frame to register on: {exc}") from None
        spacing_px = float(np.hypot(*basis.T).min())
    return 0.45 * float(spacing_px)


def register_rigid(frames: Sequence[np.ndarray], reference: int = 0, upsample: int = 20, *,
                   spacing_px: float | None = None) -> dict:
    """Sub-pixel translation of every frame against the reference frame (cross-correlation).

    Frames are read one at a time (``frames`` may be a lazy sequence), outward
    from the reference. A lattice correlates with itself at every lattice
    translation, so a shift is only determined modulo the lattice: each frame is
    first correlated with its neighbour towards the reference (``step_px``, looked
    for within half a spacing of zero: the drift between neighbouring frames must
    be under half a spacing), then with the reference, looked for within half a
    spacing of the neighbour's shift plus the step (``shift_px``, so errors do not
    add up along the series).

    Parameters
    ----------
    frames : sequence of 2-D arrays, or ndarray (n, rows, cols)
    reference : int
        Index of the reference frame.
    upsample : int
        Sub-pixel precision: 1 / ``upsample`` px.
    spacing_px : float, optional
        Short lattice spacing, px; by default from the reference frame's
        autocorrelation (:func:`latticegenome.columns.lattice.estimate_lattice`).

    Returns
    -------
    dict
        ``shift_px`` (n, 2): displacement (dx, dy) of each frame's content from the
        reference, px (``x_ref = x - dx``); ``error`` (n,): ``sqrt(1 - rho^2)``, rho
        the normalised correlation with the reference (Hann-windowed frames; 0 is a
        perfect match); ``step_px`` (n, 2): shift from the neighbour towards the
        reference; ``search_radius_px``; ``reference``; ``upsample``.

    Raises
    ------
    ValueError
        Fewer than two frames, a frame that is not 2-D, or a frame whose shape is
        not the reference frame's (the message names the frame).
    """
    n = len(frames)
    _check_count(n, "frames")
    order = _order_from(reference, n)
    ref = np.asarray(frames[reference], float)
    if ref.ndim != 2:
        raise ValueError(f"frame {reference} is not a 2-D image (shape {ref.shape})")
    radius = _search_radius(ref, spacing_px)
    window = np.outer(np.hanning(ref.shape[0]), np.hanning(ref.shape[1]))
    f_ref = _prepared(ref, reference, None, window)
    shift, step, error = np.zeros((n, 2)), np.zeros((n, 2)), np.zeros(n)
    f_prev = {}
    for k in order:
        nb = k - 1 if k > reference else k + 1
        f_k = _prepared(frames[k], k, ref.shape, window)
        f_nb = f_ref if nb == reference else f_prev.pop(nb)
        step[k], _ = _correlate(f_nb, f_k, upsample, (0.0, 0.0), radius)
        shift[k], error[k] = _correlate(f_ref, f_k, upsample, shift[nb] + step[k], radius)
        if k in (0, n - 1):
            f_prev.clear()  # the last of a direction: the other direction starts from the reference
        else:
            f_prev[k] = f_k
    return {"shift_px": shift, "error": error, "step_px": step, "search_radius_px": radius,
            "reference": int(reference), "upsample": int(upsample)}


def n_terms(order: int) -> int:
    """Number of terms of a 2-D polynomial of ``order`` (1: 3, 2: 6)."""
    return (order + 1) * (order + 2) // 2


def _design(x, y, order: int, centre, scale: float) -> np.ndarray:
    """Polynomial terms u^a v^b (a + b <= order) of normalised coordinates, shape (n, terms).

    Examples
    --------
    >>> _design(np.array([3.0]), np.array([1.0]), 2, (1.0, 1.0), 2.0).tolist()
    [[1.0, 1.0, 0.0, 1.0, 0.0, 0.0]]
    """
    u = (np.asarray(x, float).ravel() - centre[0]) / scale
    v = (np.asarray(y, float).ravel() - centre[1]) / scale
    return np.column_stack([u ** (d - b) * v**b for d in range(order + 1) for b in range(d + 1)])


def _identity(order: int, centre, scale: float, shift=(0.0, 0.0)) -> np.ndarray:
    """Coefficients (2, terms) of the map x_ref = x - shift (px)."""
    coef = np.zeros((2, n_terms(order)))
    coef[0, 0], coef[0, 1] = centre[0] - shift[0], scale
    coef[1, 0], coef[1, 2] = centre[1] - shift[1], scale
    return coef


def apply_registration(x, y, reg: dict, frame: int):
    """Frame coordinates to reference coordinates by the fitted field of ``frame``.

    Parameters
    ----------
    x, y : array_like
        Points of ``frame``, px.
    reg : dict
        The result of :func:`register_lattice`.
    frame : int

    Returns
    -------
    x_ref, y_ref : ndarray
        The points in reference-frame coordinates, px, with the shape of ``x``
        (NaN where the frame could not be registered).
    """
    shape = np.shape(x)
    d = _design(x, y, reg["order"], reg["centre_px"], reg["scale_px"])
    coef = reg["coef"][frame]
    return (d @ coef[0]).reshape(shape), (d @ coef[1]).reshape(shape)


def _unique_matches(dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Matched (finite distance) points, keeping the closest where two share a target."""
    ok = np.isfinite(dist)
    cand = np.flatnonzero(ok)
    order = cand[np.argsort(dist[cand], kind="stable")]
    _, first = np.unique(idx[order], return_index=True)
    keep = np.zeros(dist.size, bool)
    keep[order[first]] = True
    return keep


def _robust_fit(d: np.ndarray, target: np.ndarray, clip: float, min_points: int):
    """Least squares of target (n, 2) on the design d, rejecting outliers until none is left.

    Returns the coefficients (2, terms) and the inlier mask (None if too few points).
    """
    use = np.ones(len(d), bool)
    for _ in range(10):
        if use.sum() < min_points:
            return None, use
        coef = np.linalg.lstsq(d[use], target[use], rcond=None)[0].T
        r = np.hypot(*(d @ coef.T - target).T)
        limit = clip * 1.4826 * np.median(r[use]) + 1e-9
        new = r <= limit
        if np.array_equal(new, use):
            break
        use = new
    return coef, use


def _match(pts, coef, reg, tree, gate):
    """Points mapped by coef, matched to the reference tree within gate: (mask, target index)."""
    d = _design(pts[:, 0], pts[:, 1], reg["order"], reg["centre_px"], reg["scale_px"])
    dist, idx = tree.query(d @ coef.T, distance_upper_bound=gate)
    return _unique_matches(dist, idx), idx, d


def _fit_frame(pts, start, reg, tree, ref_pts, *, clip, n_iter, min_points):
    """The field of one frame: match, fit, repeat from the new field until the matches settle."""
    coef = start.copy()
    gate = reg["gate_px"]
    ok, idx, d = _match(pts, coef, reg, tree, 0.5 * reg["spacing_px"])
    if ok.sum() >= min_points:  # recentre the start on the median offset before the fine gate
        off = np.median(ref_pts[idx[ok]] - d[ok] @ coef.T, axis=0)
        coef[:, 0] += off
    use, matched = None, None
    for _ in range(n_iter):
        ok, idx, d = _match(pts, coef, reg, tree, gate)
        if matched is not None and np.array_equal(ok, matched):
            break
        matched = ok
        new, use = _robust_fit(d[ok], ref_pts[idx[ok]], clip, min_points)
        if new is None:
            return None, None, None
        coef = new
    inl = np.flatnonzero(matched)[use]
    return coef, inl, idx[inl]


def _points(table: dict, sites) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the detected columns of ``sites``, and their rows."""
    rows = np.flatnonzero(table["detected"] & np.isin(table["site"], list(sites))
                          & np.isfinite(table["x"]) & np.isfinite(table["y"]))
    return np.column_stack([table["x"][rows], table["y"][rows]]), rows


def _spacing_of(pts: np.ndarray) -> float:
    """Median nearest-neighbour distance of points, px."""
    if len(pts) < 2:
        raise ValueError("the reference frame has fewer than two columns to register on")
    return float(np.median(cKDTree(pts).query(pts, k=2)[0][:, 1]))


def _expected_residual(table, rows, ref, ref_rows) -> float:
    """RMS residual (px) that the reported position errors of both frames explain."""
    if "x_err" not in table or "x_err" not in ref:
        return float("nan")
    var = (table["x_err"][rows].astype(float) ** 2 + table["y_err"][rows].astype(float) ** 2
           + ref["x_err"][ref_rows].astype(float) ** 2 + ref["y_err"][ref_rows].astype(float) ** 2)
    return float(np.sqrt(np.nanmean(var))) if np.isfinite(var).any() else float("nan")


def _new_registration(ref: dict, ref_pts, n: int, reference: int, order: int, sites, gate: float,
                      spacing_px) -> dict:
    """The registration dict before any frame is fitted (the reference frame done)."""
    spacing = float(spacing_px) if spacing_px else _spacing_of(ref_pts)
    centre = ref_pts.mean(axis=0)
    scale = float(max(np.ptp(ref_pts, axis=0).max() / 2, 1.0))
    reg = {"order": int(order), "sites": tuple(sites), "reference": int(reference),
           "centre_px": centre, "scale_px": scale, "spacing_px": spacing, "gate_px": gate * spacing,
           "coef": np.full((n, 2, n_terms(order)), np.nan), "residual_rms_px": np.full(n, np.nan),
           "residual_expected_px": np.full(n, np.nan), "n_matched": np.zeros(n, int),
           "n_rejected": np.zeros(n, int), "ok": np.zeros(n, bool), "start_shift_px": np.zeros((n, 2))}
    reg["coef"][reference] = _identity(order, centre, scale)
    reg["residual_rms_px"][reference] = 0.0
    reg["n_matched"][reference] = len(ref_pts)
    reg["ok"][reference] = True
    return reg


def register_lattice(columns_per_frame: Sequence, reference: int = 0, *, order: int = 1,
                     sites=("A",), rigid: dict | None = None, gate: float = GATE,
                     spacing_px: float | None = None, clip: float = 3.0, n_iter: int = 8) -> dict:
    """A smooth field per frame, fitted to its columns, from frame to reference coordinates.

    Frames are fitted outward from the reference. Each frame's detected columns of
    ``sites`` are mapped by a start field (the rigid shift of ``rigid``, else the
    field of the neighbouring frame towards the reference), recentred on their
    median offset from the nearest reference columns, then matched to the reference
    frame's columns of those sites (nearest neighbour within ``gate`` spacings, one
    to one) and the polynomial field fitted by least squares; columns farther than
    ``clip`` robust standard deviations from the fit are rejected and the fit
    repeated, then the matching, until the matches settle.

    Parameters
    ----------
    columns_per_frame : sequence of column tables
        One per frame (see the module docstring).
    reference : int
        The frame whose coordinates are the reference.
    order : int
        1 (affine: drift, rotation, scale, linear scan distortion) or 2 (quadratic:
        also a slow scan that speeds up or slows down).
    sites : tuple of str
        Sites the field is fitted on ("A": the other sites' local motion is kept).
    rigid : dict, optional
        :func:`register_rigid`'s result (its ``shift_px`` starts each frame).
    gate : float
        Matching gate, fraction of the spacing.
    spacing_px : float, optional
        Short A-A spacing, px; by default the median nearest-neighbour distance of
        the reference frame's columns of ``sites``.
    clip : float
        Outlier rejection threshold, robust standard deviations of the residual.
    n_iter : int
        Largest number of match-and-fit rounds per frame.

    Returns
    -------
    dict
        ``coef`` (n, 2, terms): the field of each frame (:func:`apply_registration`;
        identity for the reference, NaN where the frame failed); ``residual_rms_px``
        (n,): RMS distance of the matched, kept columns from their reference columns
        after registration, px; ``residual_expected_px`` (n,): what the reported
        position errors of both frames explain, px (NaN without ``x_err``);
        ``n_matched``, ``n_rejected`` (n,): columns kept in the fit, and those left out
        (no reference column within the gate, or outliers);
        ``ok`` (n,) bool; ``shift_px`` (n, 2): displacement (dx, dy) of the frame's
        content from the reference at the reference centre, px; ``linear`` (n, 2, 2):
        the field's Jacobian d(x_ref, y_ref)/d(x, y) there; ``start_shift_px`` (n, 2);
        ``order``, ``sites``, ``reference``, ``centre_px``, ``scale_px`` (px of the
        normalised coordinates), ``spacing_px``, ``gate_px``.

    Raises
    ------
    ValueError
        Fewer than two frames, an order other than 1 or 2, or a reference frame
        without columns of ``sites``.
    """
    tables = [_table(c) for c in columns_per_frame]
    _check_count(len(tables), "frames")
    if order not in (1, 2):
        raise ValueError(f"order {order}: 1 (affine) or 2 (quadratic)")
    order_k = _order_from(reference, len(tables))
    ref = tables[reference]
    ref_pts, ref_rows = _points(ref, sites)
    reg = _new_registration(ref, ref_pts, len(tables), reference, order, sites, gate, spacing_px)
    tree = cKDTree(ref_pts)
    for k in order_k:
        nb = k - 1 if k > reference else k + 1
        if rigid is not None:
            start = _identity(order, reg["centre_px"], reg["scale_px"], rigid["shift_px"][k])
        elif reg["ok"][nb]:
            start = reg["coef"][nb]
        else:
            start = _identity(order, reg["centre_px"], reg["scale_px"])
        _register_frame(reg, k, tables[k], start, ref, (ref_pts, ref_rows, tree), clip=clip,
                        n_iter=n_iter)
    reg.update(_summary(reg))
    return reg


def _register_frame(reg: dict, k: int, table: dict, start, ref: dict, reference, *, clip, n_iter):
    """Fit frame k's field from the start field and enter it, its residual and counts in reg."""
    ref_pts, ref_rows, tree = reference
    order = reg["order"]
    pts, rows = _points(table, reg["sites"])
    reg["start_shift_px"][k] = reg["centre_px"] - _evaluate(start, reg, reg["centre_px"])
    coef, inl, target = _fit_frame(pts, start, reg, tree, ref_pts, clip=clip, n_iter=n_iter,
                                   min_points=3 * n_terms(order))
    if coef is None:
        return
    d = _design(pts[inl, 0], pts[inl, 1], order, reg["centre_px"], reg["scale_px"])
    r = np.hypot(*(d @ coef.T - ref_pts[target]).T)
    reg["coef"][k], reg["ok"][k] = coef, True
    reg["residual_rms_px"][k] = float(np.sqrt(np.mean(r**2)))
    reg["residual_expected_px"][k] = _expected_residual(table, rows[inl], ref, ref_rows[target])
    reg["n_matched"][k], reg["n_rejected"][k] = len(inl), len(pts) - len(inl)


def _evaluate(coef, reg, point) -> np.ndarray:
    """A field (2, terms) at one point (x, y), px."""
    d = _design(np.array([point[0]]), np.array([point[1]]), reg["order"], reg["centre_px"], reg["scale_px"])
    return (d @ coef.T)[0]


def _jacobian(coef, reg, point) -> np.ndarray:
    """d(x_ref, y_ref) / d(x, y) of a field (2, terms) at one point (exact: polynomial terms)."""
    c, s = reg["centre_px"], reg["scale_px"]
    u, v = (point[0] - c[0]) / s, (point[1] - c[1]) / s
    powers = [(d - b, b) for d in range(reg["order"] + 1) for b in range(d + 1)]
    du = np.array([a * u ** max(a - 1, 0) * v**b for a, b in powers]) / s
    dv = np.array([b * u**a * v ** max(b - 1, 0) for a, b in powers]) / s
    return np.column_stack([coef @ du, coef @ dv])


def _summary(reg: dict) -> dict:
    """Shift and Jacobian of every frame's field at the reference centre."""
    n = len(reg["coef"])
    shift, linear = np.full((n, 2), np.nan), np.full((n, 2, 2), np.nan)
    c = np.asarray(reg["centre_px"], float)
    for k in np.flatnonzero(reg["ok"]):
        coef = reg["coef"][k]
        p = c - (_evaluate(coef, reg, c) - c)  # the frame point that lands on the centre (Newton)
        for _ in range(4):
            p = p - np.linalg.solve(_jacobian(coef, reg, p), _evaluate(coef, reg, p) - c)
        shift[k], linear[k] = p - c, _jacobian(coef, reg, p)
    return {"shift_px": shift, "linear": linear}


def _open_catalogue(ref: dict) -> dict:
    """Track catalogue started from the reference frame: one entry per detected row."""
    rows = np.flatnonzero(ref["detected"] & np.isfinite(ref["x"]) & np.isfinite(ref["y"]))
    return {"pos": np.column_stack([ref["x"][rows], ref["y"][rows]]), "site": ref["site"][rows],
            "id": rows.astype(np.int64), "open": np.ones(rows.size, bool), "last": None}


def _match_frame(cat: dict, pos: np.ndarray, site: np.ndarray, gate: float) -> np.ndarray:
    """Catalogue entry (index) of each column, site by site, or -1 (one to one, within gate)."""
    entry = np.full(len(pos), -1, np.int64)
    for s in np.unique(site):
        cand = np.flatnonzero(cat["open"] & (cat["site"] == s))
        mine = np.flatnonzero(site == s)
        if cand.size == 0 or mine.size == 0:
            continue
        dist, idx = cKDTree(cat["pos"][cand]).query(pos[mine], distance_upper_bound=gate)
        keep = _unique_matches(dist, idx)
        entry[mine[keep]] = cand[idx[keep]]
    return entry


def _track_pass(tables, frames, reg, cat, gate, max_gap, next_id, tracks):
    """Give ids to the columns of ``frames`` (in order), growing the catalogue; the next free id."""
    cat = {**cat, "last": np.full(len(cat["id"]), reg["reference"])}
    for k in frames:
        t = tables[k]
        ids = np.full(len(t["x"]), -1, np.int64)
        rows = np.flatnonzero(t["detected"] & np.isfinite(t["x"]) & np.isfinite(t["y"]))
        if reg["ok"][k] and rows.size:
            xr, yr = apply_registration(t["x"][rows], t["y"][rows], reg, k)
            pos = np.column_stack([xr, yr])
            entry = _match_frame(cat, pos, t["site"][rows], gate)
            hit = entry >= 0
            ids[rows[hit]] = cat["id"][entry[hit]]
            cat["last"][entry[hit]] = k
            new = rows[~hit]
            new_ids = np.arange(next_id, next_id + new.size)
            next_id += new.size
            ids[new] = new_ids
            cat = {"pos": np.vstack([cat["pos"], pos[~hit]]), "site": np.r_[cat["site"], t["site"][new]],
                   "id": np.r_[cat["id"], new_ids], "open": np.r_[cat["open"], np.ones(new.size, bool)],
                   "last": np.r_[cat["last"], np.full(new.size, k)]}
        cat["open"] &= np.abs(k - cat["last"]) <= max_gap  # not seen for longer: the track ends
        tracks[k] = ids
    return next_id


def assign_tracks(columns_per_frame: Sequence, reg: dict, reference: int | None = None, *,
                  gate: float | None = None, max_gap: int = 0) -> list[np.ndarray]:
    """A track id per column per frame: the same lattice site in every frame.

    The reference frame's detected columns take their row index as id. Going
    forward from the reference, then backward from it, each frame's detected
    columns are registered (:func:`apply_registration`) and matched, within their
    site (A, B, O each on its own), to the open tracks (nearest within ``gate``,
    one to one); a column that matches none starts a new track (a column that
    appears: into the field, or after a gap), numbered on from the largest row
    count. A track not matched for more than ``max_gap`` frames in a row ends: a
    column found later at that site starts a new track. Undetected rows get -1.

    Parameters
    ----------
    columns_per_frame : sequence of column tables
    reg : dict
        :func:`register_lattice`'s result (frames it failed on get no tracks: -1).
    reference : int, optional
        Default ``reg["reference"]`` (they must agree).
    gate : float, optional
        Matching gate, px; default ``reg["gate_px"]``.
    max_gap : int
        Frames a track may go unmatched and continue (0: a column that disappears
        ends its track).

    Returns
    -------
    list of ndarray of int64
        One array per frame, one id per row of that frame's table.
    """
    tables = [_table(c) for c in columns_per_frame]
    _check_count(len(tables), "frames")
    reference = reg["reference"] if reference is None else int(reference)
    if reference != reg["reference"] or len(tables) != len(reg["coef"]):
        raise ValueError(f"the registration is of {len(reg['coef'])} frames against frame "
                         f"{reg['reference']}, not {len(tables)} against frame {reference}")
    gate = reg["gate_px"] if gate is None else float(gate)
    ref = tables[reference]
    cat = _open_catalogue(ref)
    tracks: list = [None] * len(tables)
    tracks[reference] = np.where(ref["detected"], np.arange(len(ref["x"])), -1).astype(np.int64)
    next_id = max(len(t["x"]) for t in tables)
    next_id = _track_pass(tables, range(reference + 1, len(tables)), reg, cat, gate, max_gap, next_id,
                          tracks)
    _track_pass(tables, range(reference - 1, -1, -1), reg, cat, gate, max_gap, next_id, tracks)
    return tracks


def _frame_lattice(t: dict):
    """Origin and basis (px) of a frame's A lattice, fitted to its detected A columns."""
    a = t["detected"] & (t["site"] == "A") & np.isfinite(t["x"])
    d = np.column_stack([np.ones(a.sum()), t["i"][a], t["j"][a]]).astype(float)
    sol = np.linalg.lstsq(d, np.column_stack([t["x"][a], t["y"][a]]), rcond=None)[0]
    return sol[0], sol[1:]


def align_indices(columns_per_frame: Sequence, tracks: Sequence[np.ndarray], reference: int = 0
                  ) -> list[np.ndarray]:
    """Every frame's lattice indices (i, j) in the index system of the reference frame.

    Each frame's finder numbers its lattice from its own seed, with its own choice
    of basis vectors; the integer map ``ij_ref = M ij + o`` is fitted to the A
    columns that share a track with a reference A column. A column's fractional
    position in its cell (0 or 1/2 along each vector, from its position in the
    frame's lattice) goes through the map too, so that B and O keep the index of
    their cell's lower corner when the map turns or flips the basis.

    Returns
    -------
    list of ndarray of int64, shape (rows, 2)
        Per frame, (i, j) of every row in the reference index system.

    Raises
    ------
    ValueError
        A frame with fewer than three A columns tracked to the reference's.
    """
    tables = [_table(c) for c in columns_per_frame]
    ref = tables[reference]
    ref_ij = np.column_stack([ref["i"], ref["j"]]).astype(float)
    ref_a = np.flatnonzero((ref["site"] == "A") & ref["detected"])
    out = []
    for k, (t, ids) in enumerate(zip(tables, tracks)):
        a = np.flatnonzero((t["site"] == "A") & np.isin(ids, ref_a))
        if a.size < 3:
            raise ValueError(f"frame {k}: {a.size} A columns tracked to the reference frame's (3 needed)")
        ij = np.column_stack([t["i"], t["j"]]).astype(float)
        d = np.column_stack([ij[a], np.ones(a.size)])
        sol = np.rint(np.linalg.lstsq(d, ref_ij[ids[a]], rcond=None)[0])  # rows: M^T, then o
        origin, basis = _frame_lattice(t)
        pos = np.column_stack([t["x"], t["y"]])
        frac = np.rint(2 * ((pos - origin) @ np.linalg.inv(basis) - ij)) / 2
        frac = np.where(np.isfinite(frac), frac, 0.0)
        centre = (ij + frac) @ sol[:2] + sol[2]
        out.append(np.floor(centre + 1e-6).astype(np.int64))  # B, O: their cell's lower corner
    return out
