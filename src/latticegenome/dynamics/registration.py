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

A field fitted to a periodic lattice fits as well moved by any lattice vector: a
drift of over half a cell between frames, or a correlation locked on the wrong
peak, puts every column on its neighbouring site with a perfect residual.
:func:`register_lattice` therefore checks each frame (:func:`lattice_shift_check`)
against its field moved by 0, +-a, +-b, +-a+-b (about its neighbour's correction
too) with what is not periodic: the columns' intensities (the layers of a
superlattice) and presence (vacancies) matched to the reference's, scored as a
capped log-likelihood, and a prior that the step from the neighbouring frame is
short. It corrects the offset where they decide (``lattice_shift_corrected``) and
flags the frame, with a warning, where they do not (``lattice_shift_ambiguous``).
The edges of the field of view are no evidence (on a periodic crystal they only
favour the offset nearest zero), nor are the Hann-windowed correlation's peak
heights (the window favours the lag nearest zero in the same way).

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

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.spatial import cKDTree

logger = logging.getLogger(__name__)

#: Default matching gate, as a fraction of the short A-A spacing.
GATE = 0.3

#: Whole-lattice-vector check (:func:`lattice_shift_check`): an alternative offset is
#: excluded by the columns' intensities and presence when it is worse than the chosen
#: one by this many standard errors (paired test over the columns both offsets place
#: inside the reference field).
SHIFT_Z = 5.0
#: ... or by the drift prior, when the step from the neighbouring frame that it implies
#: is longer, in squared cells (fractional lattice coordinates), by this much: along a
#: direction without non-periodic evidence, a step under a quarter of a cell is trusted
#: ((1 - s)^2 - s^2 >= 0.5 for s <= 0.25), a longer one is ambiguous.
STEP_PRIOR = 0.5
#: Cap of a column's squared standardised intensity residual; a column placed inside
#: the reference field with no reference column to match scores the cap.
SCORE_CAP = 16.0


def _table(columns) -> dict:
    """The arrays of a column table that registration uses (all rows detected if not said)."""
    if hasattr(columns, "as_dict"):
        columns = columns.as_dict()
    if not isinstance(columns, Mapping):
        raise TypeError(f"a column table is a mapping of arrays, not {type(columns).__name__}")
    x = np.asarray(columns["x"], float)
    out = {"x": x, "y": np.asarray(columns["y"], float), "site": np.asarray(columns["site"]).astype(str),
           "detected": np.asarray(columns.get("detected", np.ones(x.size, bool)), bool)}
    for name in ("i", "j", "x_err", "y_err", "amplitude", "amplitude_err"):
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
           "n_rejected": np.zeros(n, int), "ok": np.zeros(n, bool), "start_shift_px": np.zeros((n, 2)),
           "field_error_px": np.full(n, np.nan), "field_error_max_px": np.full(n, np.nan)}
    reg["coef"][reference] = _identity(order, centre, scale)
    reg["residual_rms_px"][reference] = 0.0
    reg["field_error_px"][reference] = reg["field_error_max_px"][reference] = 0.0
    reg["n_matched"][reference] = len(ref_pts)
    reg["ok"][reference] = True
    return reg


def register_lattice(columns_per_frame: Sequence, reference: int = 0, *, order: int = 1,
                     sites=("A",), rigid: dict | None = None, gate: float = GATE,
                     spacing_px: float | None = None, clip: float = 3.0, n_iter: int = 8,
                     lattice_check: bool = True, source: str | None = None,
                     frame_ids: Sequence[int] | None = None) -> dict:
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
    lattice_check : bool
        Check each frame's field against the same field moved by a whole lattice
        vector (:func:`lattice_shift_check`), correct it where the columns'
        intensities and presence or the drift prior decide, and warn where nothing
        does (``lattice_shift_*`` entries). False: the fields as fitted (the entries
        are still there: no frame checked, none ambiguous).
    source : str, optional
        The series' name, for the warnings.
    frame_ids : sequence of int, optional
        The frames' numbers in the series, for the warnings (default 0, 1, ...).

    Returns
    -------
    dict
        ``coef`` (n, 2, terms): the field of each frame (:func:`apply_registration`;
        identity for the reference, NaN where the frame failed); ``residual_rms_px``
        (n,): RMS distance of the matched, kept columns from their reference columns
        after registration, px; ``residual_expected_px`` (n,): what the reported
        position errors of both frames explain, px (NaN without ``x_err``);
        ``field_error_px``, ``field_error_max_px`` (n,): the fitted field's own
        uncertainty over the matched columns, RMS and largest, px (:func:`field_error`:
        the registration's noise floor, from both frames' position noise; at low dose
        per frame it may exceed the 0.05 px a series needs, and a warning says so);
        ``n_matched``, ``n_rejected`` (n,): columns kept in the fit, and those left out
        (no reference column within the gate, or outliers);
        ``ok`` (n,) bool; ``shift_px`` (n, 2): displacement (dx, dy) of the frame's
        content from the reference at the reference centre, px; ``linear`` (n, 2, 2):
        the field's Jacobian d(x_ref, y_ref)/d(x, y) there; ``start_shift_px`` (n, 2);
        ``order``, ``sites``, ``reference``, ``centre_px``, ``scale_px`` (px of the
        normalised coordinates), ``spacing_px``, ``gate_px``. The whole-lattice-vector
        check: ``lattice_basis_px`` (2, 2): the reference lattice's vectors a, b (columns),
        px; per frame ``lattice_shift_cells`` (n, 2) int: the lattice vectors (m, n)
        by which the first fit was moved, and ``lattice_shift_correction_px`` (n, 2):
        that move, m a + n b, px in reference coordinates; ``lattice_shift_corrected``
        (n,) bool; ``lattice_shift_margin`` (n,): standard errors by which the chosen
        offset's columns (intensities, presence) beat the best alternative offset
        that the drift prior leaves open (inf: the prior excludes them all; NaN: not
        checked); ``lattice_shift_step_margin`` (n,): squared cells by which the step
        from the neighbouring frame of the best alternative the data leaves open is
        longer (inf: none); ``lattice_shift_ambiguous`` (n,) bool: margin under
        :data:`SHIFT_Z` (and step margin under :data:`STEP_PRIOR`), or a correction
        that could not be refitted: a warning names the frame;
        ``lattice_shift_evidence`` (n,): standard errors by which the chosen offset's
        columns beat every alternative, the prior aside (under :data:`SHIFT_Z`: the
        offset along some lattice direction rests on the drift prior alone, a step
        under a quarter cell, as on a periodic crystal without defects).

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
    _init_shift_check(reg, ref, ref_pts, ref_rows)
    checked = lattice_check and np.isfinite(reg["lattice_basis_px"]).all()
    evidence = _reference_evidence(ref, reg["spacing_px"]) if checked else None
    ids = list(range(len(tables))) if frame_ids is None else list(frame_ids)
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
        if evidence is not None and reg["ok"][k]:
            # a rigid start inherits the neighbour's error: look about its correction too
            base = [(0, 0)] + ([tuple(reg["lattice_shift_cells"][nb])] if rigid is not None else [])
            label = f"{source + ': ' if source else ''}frame {ids[k]}"
            _settle_offset(reg, k, nb, tables[k], ref, (ref_pts, ref_rows, tree), evidence, base,
                           clip=clip, n_iter=n_iter, label=label)
    reg.update(_summary(reg))
    _warn_field_error(reg, ids, source)
    return reg


#: A frame whose fitted field is uncertain by more than this (px, RMS over its columns)
#: gets a warning: its registered positions (and tracks' motion) carry that error.
FIELD_ERROR_WARN_PX = 0.05


def _warn_field_error(reg: dict, ids: list, source: str | None) -> None:
    """One warning naming the frames whose registration is above its noise target."""
    err = np.asarray(reg["field_error_px"], float)
    bad = np.flatnonzero(np.isfinite(err) & (err > FIELD_ERROR_WARN_PX))
    if bad.size:
        logger.warning("%sthe registration of %d frame(s) (%s) is uncertain by %.3f px RMS "
                       "(largest %.3f px at the field's edge; from the columns' position noise: "
                       "too few counts per frame); registered positions carry it",
                       f"{source}: " if source else "", bad.size,
                       " ".join(str(ids[k]) for k in bad[:10]) + (" ..." if bad.size > 10 else ""),
                       float(np.max(err[bad])), float(np.nanmax(reg["field_error_max_px"][bad])))


def _init_shift_check(reg: dict, ref: dict, ref_pts, ref_rows) -> None:
    """The whole-lattice-vector entries of a new registration dict (nothing checked yet)."""
    n = len(reg["coef"])
    try:
        reg["lattice_basis_px"] = _lattice_basis(ref, ref_pts, ref_rows, reg["spacing_px"])
    except (ValueError, np.linalg.LinAlgError):
        reg["lattice_basis_px"] = np.full((2, 2), np.nan)  # no lattice vectors: nothing checked
    reg.update(lattice_shift_cells=np.zeros((n, 2), np.int64), lattice_shift_correction_px=np.zeros((n, 2)),
               lattice_shift_corrected=np.zeros(n, bool), lattice_shift_margin=np.full(n, np.nan),
               lattice_shift_step_margin=np.full(n, np.nan), lattice_shift_ambiguous=np.zeros(n, bool),
               lattice_shift_evidence=np.full(n, np.nan))
    reg["lattice_shift_margin"][reg["reference"]] = np.inf
    reg["lattice_shift_step_margin"][reg["reference"]] = np.inf


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
    reg["field_error_px"][k], reg["field_error_max_px"][k] = field_error(d, r)
    reg["n_matched"][k], reg["n_rejected"][k] = len(inl), len(pts) - len(inl)


def field_error(design: np.ndarray, residual: np.ndarray) -> tuple[float, float]:
    """How far a fitted field is from the true one, from its own residuals (px).

    The least-squares field's error at a point ``p`` has, per coordinate, the
    variance ``s^2 d_p (D^T D)^-1 d_p^T`` (``s^2``: the residual variance per
    coordinate, which holds the noise of both frames' positions). Over the
    matched columns: the RMS of the 2-D error, and its largest value (at the
    field's edges, where the polynomial is least pinned).

    Parameters
    ----------
    design : ndarray, shape (n, terms)
        The field's design at the matched columns (:func:`_design`).
    residual : ndarray, shape (n,)
        Their 2-D residual distances after the fit, px.

    Returns
    -------
    rms, largest : float
        px; NaN with no more points than terms.

    Examples
    --------
    >>> d = np.column_stack([np.ones(400), np.linspace(-1, 1, 400), np.zeros(400)])[:, :2]
    >>> rms, top = field_error(d, np.full(400, 0.2 * np.sqrt(2)))
    >>> round(rms, 4), top > rms
    (0.0201, True)
    """
    n, terms = design.shape
    if n <= terms:
        return float("nan"), float("nan")
    s2 = float(np.sum(residual**2)) / (2.0 * (n - terms))
    lev = np.einsum("ij,jk,ik->i", design, np.linalg.pinv(design.T @ design), design)
    err = np.sqrt(2.0 * s2 * np.maximum(lev, 0.0))
    return float(np.sqrt(np.mean(err**2))), float(err.max())


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


#: Whole-lattice-vector offsets (m, n) tried about each base offset: 0, +-a, +-b, +-a+-b.
_NEIGHBOURS = np.array([(m, n) for m in (-1, 0, 1) for n in (-1, 0, 1)])


def _quiet_nanmedian(a: np.ndarray, axis=None):
    """``np.nanmedian`` without the warning for an all-NaN slice (NaN there)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=axis)


def _basis_from_neighbours(pts: np.ndarray, spacing: float) -> np.ndarray:
    """Two shortest lattice vectors (2, 2; columns, px) from the points' neighbour vectors."""
    _, idx = cKDTree(pts).query(pts, k=min(5, len(pts)))
    vec = (pts[idx[:, 1:]] - pts[:, None, :]).reshape(-1, 2)
    vec = vec[np.hypot(*vec.T) < 1.5 * spacing]
    ang = np.mod(np.arctan2(vec[:, 1], vec[:, 0]), np.pi)  # direction, sign folded
    out = []
    for _ in range(2):
        hist, edges = np.histogram(ang, bins=36, range=(0.0, np.pi))
        mode = edges[np.argmax(hist)] + np.pi / 72
        near = np.abs(np.angle(np.exp(2j * (ang - mode)))) / 2 < 0.15
        if not near.any():
            break
        v = vec[near]
        v = np.where((v @ [np.cos(mode), np.sin(mode)] < 0)[:, None], -v, v)
        out.append(np.median(v, axis=0))
        ang = np.where(np.abs(np.angle(np.exp(2j * (ang - mode)))) / 2 < 0.5, np.nan, ang)
        vec, ang = vec[np.isfinite(ang)], ang[np.isfinite(ang)]
    if len(out) < 2:
        raise ValueError("no two lattice vectors among the reference frame's columns")
    return np.column_stack(out)


def _lattice_basis(ref: dict, ref_pts: np.ndarray, ref_rows: np.ndarray, spacing: float) -> np.ndarray:
    """Basis of the reference lattice, px, shape (2, 2): columns a (along i) and b (along j).

    Fitted to the fitted sites' positions and lattice indices (one intercept per
    site), or, without indices, from the columns' nearest-neighbour vectors.
    """
    if "i" in ref and "j" in ref:
        site = ref["site"][ref_rows]
        names = np.unique(site)
        d = np.column_stack([site[:, None] == names[None, :], ref["i"][ref_rows],
                             ref["j"][ref_rows]]).astype(float)
        if np.isfinite(d).all():
            basis = np.linalg.lstsq(d, ref_pts, rcond=None)[0][-2:].T
            if np.isfinite(basis).all() and abs(np.linalg.det(basis)) > 0.25 * spacing**2:
                return basis
    return _basis_from_neighbours(ref_pts, spacing)


def _log_amplitude(table: dict, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Natural log of the rows' fitted amplitudes and its error (NaN where unknown)."""
    if "amplitude" not in table:
        return np.full(rows.size, np.nan), np.full(rows.size, np.nan)
    amp = np.asarray(table["amplitude"], float)[rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        lum = np.where(amp > 0, np.log(np.where(amp > 0, amp, 1.0)), np.nan)
        err = (np.asarray(table["amplitude_err"], float)[rows] / amp if "amplitude_err" in table
               else np.full(rows.size, np.nan))
    return lum, np.where(err > 0, err, np.nan)


def _detected(table: dict) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of every detected column of every site, and their rows."""
    rows = np.flatnonzero(table["detected"] & np.isfinite(table["x"]) & np.isfinite(table["y"]))
    return np.column_stack([table["x"][rows], table["y"][rows]]), rows


def _reference_evidence(ref: dict, spacing: float) -> dict:
    """What the whole-lattice-vector check compares a frame's columns with: the reference's
    detected columns (all sites, by site), their log amplitudes, and how crowded the
    field is (a point with fewer than 3/4 of the usual columns within 1.5 spacings is
    at or beyond the reference field's edge)."""
    pos, rows = _detected(ref)
    lum, err = _log_amplitude(ref, rows)
    site = ref["site"][rows]
    tree = cKDTree(pos)
    radius = 1.5 * spacing
    crowd = 0.75 * float(np.median(tree.query_ball_point(pos, radius, return_length=True)))
    by_site = {s: (np.flatnonzero(site == s), cKDTree(pos[site == s])) for s in np.unique(site)}
    return {"lum": lum, "err": err, "tree": tree, "radius": radius, "crowd": crowd,
            "by_site": by_site}


def _scores(lum, err, site, mapped, offsets, ev: dict, gate: float) -> np.ndarray:
    """Score of every frame column under every candidate offset, shape (K, n).

    A column moved by the candidate's offset (px, in reference coordinates) is
    matched to the nearest reference column of its site within ``gate`` px: its
    score is its squared log-amplitude difference from it (each site's median
    difference taken out: the frame's dose), over both columns' errors, over the
    robust spread of those ratios (at its smallest over the candidates), capped at
    :data:`SCORE_CAP`; with no partner it scores the cap; NaN where it falls at or
    beyond the edge of the reference field.
    """
    k, n = len(offsets), len(mapped)
    flat = (mapped[None, :, :] + offsets[:, None, :]).reshape(-1, 2)
    inside = ev["tree"].query_ball_point(flat, ev["radius"], return_length=True) >= ev["crowd"]
    site_f, lum_f, var_f = np.tile(site, k), np.tile(lum, k), np.tile(err**2, k)
    resid, var, partner = np.full(k * n, np.nan), np.full(k * n, np.nan), np.zeros(k * n, bool)
    for s, (rows, tree) in ev["by_site"].items():
        mine = np.flatnonzero(site_f == s)
        dist, idx = tree.query(flat[mine], distance_upper_bound=gate)
        hit, target = mine[np.isfinite(dist)], rows[idx[np.isfinite(dist)]]
        partner[hit] = True
        resid[hit] = lum_f[hit] - ev["lum"][target]
        var[hit] = var_f[hit] + ev["err"][target] ** 2
    resid, var = resid.reshape(k, n), np.where(np.isfinite(var), var, 1.0).reshape(k, n)
    for s in np.unique(site):
        resid[:, site == s] -= _quiet_nanmedian(resid[:, site == s], axis=1)[:, None]
    z = resid / np.sqrt(var)
    spread = np.nanmin(np.r_[1.4826 * _quiet_nanmedian(np.abs(z), axis=1), np.inf])
    z = z / spread if np.isfinite(spread) and spread > 0 else z
    score = np.where(np.isfinite(z), np.minimum(z**2, SCORE_CAP), 0.0)
    score = np.where(partner.reshape(k, n), score, SCORE_CAP)
    return np.where(inside.reshape(k, n), score, np.nan)


def _paired_z(a: np.ndarray, b: np.ndarray) -> float:
    """How much higher the scores ``a`` are than ``b``, summed over the columns scored by
    both, in standard errors of that sum when both offsets are equally right (NaN with
    fewer than 10 columns).

    Each score is then a squared standard normal (variance 2), so the difference of
    two has a variance of at most 4: the standard error of the sum over n columns is
    2 sqrt(n). The sum is the log-likelihood ratio of the two offsets, times 2 (capped
    scores: robust to a few bad columns, which cancel between two offsets). The
    empirical spread of the differences is not used: a few decisive columns (a
    layer's worth in a superlattice) would inflate it and hide them.
    """
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 10:
        return float("nan")
    return float(np.sum(a[ok] - b[ok]) / (2.0 * np.sqrt(ok.sum())))


def _choose_offset(scores: np.ndarray, ell2: np.ndarray) -> tuple[int, float, float, float]:
    """The candidate chosen, its data margin (standard errors), its step margin (cells^2)
    and its evidence (standard errors: the data margin over every alternative).

    Candidates that no other beats by :data:`SHIFT_Z` standard errors are compatible
    with the data; of those the one with the shortest step from the neighbouring
    frame (``ell2``, squared cells) is chosen. An alternative is excluded by the data
    (beaten by ``SHIFT_Z``) or by the drift prior (a step longer by
    :data:`STEP_PRIOR`); the data margin is the smallest z of the alternatives the
    prior leaves open (inf: none), the step margin the smallest step excess of those
    the data leaves open (inf: none).
    """
    k = len(scores)
    zm = np.array([[_paired_z(scores[p], scores[q]) if p != q else -np.inf for q in range(k)]
                   for p in range(k)])  # zm[p, q]: how much worse p is than q
    worst = np.nanmax(np.where(np.isnan(zm), -np.inf, zm), axis=1)
    compatible = worst < SHIFT_Z
    if not compatible.any():  # not transitive on different column sets: the least beaten
        compatible = worst == worst.min()
    final = int(np.flatnonzero(compatible)[np.argmin(ell2[compatible])])
    z = np.where(np.isnan(zm[:, final]), 0.0, zm[:, final])  # NaN: too few columns to tell
    alt = np.arange(k) != final
    excess = ell2 - ell2[final]
    prior_open, data_open = alt & (excess < STEP_PRIOR), alt & (z < SHIFT_Z)
    margin = float(z[prior_open].min()) if prior_open.any() else float("inf")
    step_margin = float(excess[data_open].min()) if data_open.any() else float("inf")
    return final, margin, step_margin, float(z[alt].min()) if alt.any() else float("inf")


def lattice_shift_check(reg: dict, k: int, nb: int, table: dict, evidence: dict,
                        base_cells=((0, 0),)) -> tuple[np.ndarray, float, float]:
    """The whole lattice vector that frame ``k``'s fitted field is off by, and how sure.

    A field fitted to a periodic lattice is as good, by its residual, moved by any
    lattice vector. The candidates are the fitted field moved by ``m a + n b``
    (``a``, ``b`` = ``reg["lattice_basis_px"]``; (m, n) within one of each of
    ``base_cells``). Two things decide between them: the evidence that is not
    periodic, the frame's detected columns of every site moved onto the reference's
    (:func:`_scores`: intensity differences, e.g. the layers of a superlattice, and
    columns with no partner inside the reference field), and a prior that the step
    from the neighbouring frame ``nb`` is short. The edges of the field of view are
    not used: on a periodic crystal the columns with no partner there only favour
    the offset nearest zero, whatever the true one.

    Parameters
    ----------
    reg : dict
        :func:`register_lattice`'s dict, frames ``k`` (and ``nb``) fitted, with
        ``lattice_basis_px``.
    k, nb : int
        The frame, and its neighbour towards the reference.
    table : dict
        Frame ``k``'s column table (:func:`_table`).
    evidence : dict
        :func:`_reference_evidence` of the reference frame.
    base_cells : sequence of (int, int)
        Offsets about which to look, in lattice vectors.

    Returns
    -------
    cells : ndarray of int, shape (2,)
        The chosen offset (m, n), lattice vectors (0, 0: the field is right).
    margin : float
        Standard errors by which the chosen offset's columns beat the best
        alternative the drift prior does not exclude (inf: it excludes them all).
    step_margin : float
        Excess squared step, cells^2, of the alternative with the shortest step that
        the data does not exclude (inf: none).
    """
    basis = reg["lattice_basis_px"]
    cells = np.unique(np.vstack([np.asarray(b, int) + _NEIGHBOURS for b in base_cells]), axis=0)
    offsets = cells @ basis.T
    pts, rows = _detected(table)
    mapped = np.column_stack(apply_registration(pts[:, 0], pts[:, 1], reg, k))
    lum, err = _log_amplitude(table, rows)
    scores = _scores(lum, err, table["site"][rows], mapped, offsets, evidence, reg["gate_px"])
    c = np.asarray(reg["centre_px"], float)
    if reg["ok"][nb]:  # x_ref = F(x): the shift at the centre is c - F(c); moved by L, c - F(c) - L
        step = _evaluate(reg["coef"][nb], reg, c) - _evaluate(reg["coef"][k], reg, c)
        frac = np.linalg.solve(basis, step[:, None] - offsets.T).T
        ell2 = np.sum(frac**2, axis=1)
    else:
        ell2 = np.zeros(len(cells))  # no neighbour: no prior
    final, margin, step_margin, reg["lattice_shift_evidence"][k] = _choose_offset(scores, ell2)
    return cells[final], margin, step_margin


def _settle_offset(reg: dict, k: int, nb: int, table: dict, ref: dict, reference, evidence: dict,
                   base_cells, *, clip, n_iter, label: str) -> None:
    """Run :func:`lattice_shift_check` on frame k; refit it moved by the offset chosen;
    record it; warn where the offset is ambiguous."""
    cells, margin, step_margin = lattice_shift_check(reg, k, nb, table, evidence, base_cells)
    reg["lattice_shift_margin"][k], reg["lattice_shift_step_margin"][k] = margin, step_margin
    ambiguous = margin < SHIFT_Z
    if cells.any():
        move = reg["lattice_basis_px"] @ cells
        old = {key: np.copy(reg[key][k]) for key in _FRAME_KEYS}
        start = reg["coef"][k].copy()
        start[:, 0] += move  # the constant term is px in reference coordinates
        reg["ok"][k] = False
        _register_frame(reg, k, table, start, ref, reference, clip=clip, n_iter=n_iter)
        reg["start_shift_px"][k] = old["start_shift_px"]
        if not reg["ok"][k]:  # the refit failed: keep the first fit, and say so
            for key, value in old.items():
                reg[key][k] = value
            ambiguous = True
        else:
            reg["lattice_shift_cells"][k], reg["lattice_shift_correction_px"][k] = cells, move
            reg["lattice_shift_corrected"][k] = True
            logger.info("%s: registered off by %+d a %+d b (%.1f, %.1f px): corrected (margin %.1f "
                        "standard errors)", label, *cells, *move, margin)
    reg["lattice_shift_ambiguous"][k] = ambiguous
    if ambiguous:
        logger.warning("%s: registration ambiguous by a whole lattice vector: another offset fits "
                       "within %.1f standard errors, its step from the neighbouring frame within "
                       "%.2f cells^2; its tracks may be those of the neighbouring sites",
                       label, margin, step_margin)


#: Per-frame entries of the registration dict that a refit may change.
_FRAME_KEYS = ("coef", "residual_rms_px", "residual_expected_px", "field_error_px",
               "field_error_max_px", "n_matched", "n_rejected", "ok",
               "start_shift_px")


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
