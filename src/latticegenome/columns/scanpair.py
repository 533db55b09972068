"""Scan-distortion correction from two frames with orthogonal fast-scan directions.

A STEM frame is recorded line by line: within a line (the fast scan) the probe
moves in microseconds, between lines (the slow scan) specimen drift and scan
noise move the whole line. Each scan line is therefore modelled as a rigid copy
of its part of the specimen, displaced by its own origin offset (x, y) in
pixels. One frame alone cannot tell this displacement from the specimen's own
geometry; two frames of the same field whose fast scans are orthogonal can
(Ophus, Ciston & Nelson, *Ultramicroscopy* 162 (2016) 1-9): a distortion along
the slow axis of one frame lies along the fast axis of the other.

Conventions (all lengths in pixels, x = column index, y = row index, origin at
the centre of pixel [0, 0]):

- ``image_0``: fast scan along x. Row ``r`` is scan line ``r`` (lines recorded
  top to bottom); its pixel ``[r, c]`` was recorded at true position
  ``(c + ox0[r], r + oy0[r])``.
- ``image_90``: fast scan along y, **stored in the orientation of image_0**
  (both arrays show the same field of view the same way up). Column ``c`` is
  scan line ``c``; pixel ``[r, c]`` was recorded at ``(c + ox90[c], r + oy90[c])``.
  Its lines were recorded left to right (``reverse_90=False``) or right to
  left (``True``); by default both are tried and the better kept (the sign of
  "scan rotation 90 degrees" differs between instruments). A frame as the
  microscope wrote it (its own rows are its scan lines) is brought into this
  orientation by ``np.rot90(raw, k)`` (:func:`to_common_orientation`, or the
  ``rotation`` argument of :func:`correct_orthogonal_pair`); ``k = 1`` keeps
  the lines in time order left to right, ``k = 3`` reverses it.

The offsets are found in two steps, as Ophus does: a linear drift (the same
drift velocity in both frames, px per line) by a grid search maximising the
cross-correlation of the two resampled frames, the shift between the frames
by a masked normalised cross-correlation (:func:`masked_shift`); then each
frame's own linear drift and per-line offsets, refined by Gauss-Newton
against the other corrected frame (alternately) with a smoothness penalty
along the slow axis (second differences: a linear drift costs nothing; Ophus
smooths with a Gaussian kernel instead). Both frames are resampled onto a
common corrected grid, the input's shape, with
:func:`scipy.ndimage.map_coordinates` (the exact inverse of the line model)
and averaged. The offsets are determined up to one common translation; they
are reported with zero mean over both frames.

Limits: lines outside the other frame's field of view carry no information
(their offsets are extrapolated: ``ScanPairResult.measured_0/90``); jitter
faster than about 2 pi ``smoothing`` lines is damped, and within-line
(fast-scan) distortion is not modelled; on a perfectly periodic crystal the
shift between the frames is unique only up to a lattice vector (defects,
edges or contrast variation decide it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.linalg import spsolve

#: Smallest frame side (px) the correction accepts.
MIN_SIDE = 32


@dataclass
class ScanPairResult:
    """The corrected pair and the scan distortion found.

    Attributes
    ----------
    image_0, image_90 : ndarray of float64, shape (rows, cols)
        Each frame resampled onto the common corrected grid (input units).
    average : ndarray of float64, shape (rows, cols)
        Mean of the two where both cover the grid, else the one that does.
    coverage : ndarray of bool, shape (rows, cols)
        Grid pixels inside both frames (outside, values are edge-extended).
    offsets_0 : ndarray, shape (rows, 2)
        (x, y) origin offset in px of each scan line (row) of image_0.
    offsets_90 : ndarray, shape (cols, 2)
        (x, y) origin offset in px of each scan line (column) of image_90.
    drift_0, drift_90 : ndarray, shape (2,)
        Linear drift (vx, vy) in px per line of each frame, in recording order
        (slope of a straight line fitted to its offsets).
    residual_raw, residual_linear, residual : float
        Normalised RMS difference ``sqrt(1 - rho)`` (rho: Pearson correlation
        over the common coverage) of the two frames: as recorded, after the
        linear drift, after the per-line correction. 0 for identical frames,
        1 for unrelated ones; noise sets the floor.
    iterations : int
        Gauss-Newton sweeps run.
    reverse_90 : bool
        Whether image_90's lines were taken as recorded right to left (given,
        or found by the linear-drift search); ``drift_90`` is in that order.
    measured_0, measured_90 : ndarray of bool, shapes (rows,), (cols,)
        Lines at least half inside the other frame's coverage on the grid: their
        offsets are measured; the others' (outside the common field of view)
        are extrapolated by the smoothness model.
    """

    image_0: np.ndarray
    image_90: np.ndarray
    average: np.ndarray
    coverage: np.ndarray
    offsets_0: np.ndarray
    offsets_90: np.ndarray
    drift_0: np.ndarray
    drift_90: np.ndarray
    residual_raw: float
    residual_linear: float
    residual: float
    iterations: int
    reverse_90: bool = False
    measured_0: np.ndarray | None = None
    measured_90: np.ndarray | None = None

    def summary(self) -> dict:
        """A JSON-ready summary: drifts (px/line), offset statistics (px), residuals.

        Examples
        --------
        >>> res.summary()["drift_0_px_per_line"]  # doctest: +SKIP
        [0.0121, 0.0179]
        """
        def stats(o):
            return {"rms_px": np.sqrt(np.mean(o**2, axis=0)).tolist(),
                    "peak_to_peak_px": np.ptp(o, axis=0).tolist()}

        return {
            "drift_0_px_per_line": self.drift_0.tolist(),
            "drift_90_px_per_line": self.drift_90.tolist(),
            "offsets_0_px": stats(self.offsets_0), "offsets_90_px": stats(self.offsets_90),
            "offsets_0_xy_px": self.offsets_0.tolist(),
            "offsets_90_xy_px": self.offsets_90.tolist(),
            "residual_raw": self.residual_raw, "residual_linear": self.residual_linear,
            "residual": self.residual, "coverage_fraction": float(self.coverage.mean()),
            "iterations": self.iterations, "reverse_90": self.reverse_90,
            "lines_measured": [int(np.sum(self.measured_0)), int(np.sum(self.measured_90))],
        }


def to_common_orientation(raw_90: np.ndarray, rotation: int) -> tuple[np.ndarray, bool]:
    """A 90-degree frame as recorded (its rows are scan lines) in image_0's orientation.

    Parameters
    ----------
    raw_90 : ndarray, shape (rows, cols)
    rotation : int
        ``k`` of ``np.rot90(raw_90, k)`` (counter-clockwise quarter turns) that
        shows the field the way image_0 does: 1 or 3 (-1).

    Returns
    -------
    image_90 : ndarray
        Its columns are the scan lines.
    reverse : bool
        Whether those lines were recorded right to left (``k = 3``).

    Examples
    --------
    >>> raw = np.arange(6.0).reshape(2, 3)
    >>> img, reverse = to_common_orientation(raw, 1)
    >>> img[:, 0].tolist(), reverse  # the first column is the first recorded line
    ([2.0, 1.0, 0.0], False)
    """
    k = int(rotation) % 4
    if k not in (1, 3):
        raise ValueError(f"rotation must be 1 or 3 (-1) quarter turns, not {rotation}: "
                         "a frame turned by 0 or 180 degrees keeps its scan lines as rows")
    return np.rot90(np.asarray(raw_90), k), k == 3


def _check_frame(name: str, image) -> np.ndarray:
    arr = np.asarray(image, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D image, got shape {arr.shape}")
    if min(arr.shape) < MIN_SIDE:
        raise ValueError(f"{name} is too small ({arr.shape}): at least {MIN_SIDE} px a side")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds {int((~np.isfinite(arr)).sum())} non-finite pixels")
    if np.ptp(arr) == 0:
        raise ValueError(f"{name} is constant: nothing to register")
    return arr


def check_pair(image_0, image_90) -> tuple[np.ndarray, np.ndarray]:
    """Both frames as float arrays: 2-D, the same shape, finite, not constant.

    Raises
    ------
    ValueError
        Naming the frame (and both shapes when they differ).

    Examples
    --------
    >>> check_pair(np.ones((64, 64)), np.ones((64, 32)))  # doctest: +SKIP
    ValueError: image_0 and image_90 must have the same shape, got (64, 64) and (64, 32)
    """
    a = np.asarray(image_0)
    b = np.asarray(image_90)
    if a.ndim == 2 and b.ndim == 2 and a.shape != b.shape:
        raise ValueError(f"image_0 and image_90 must have the same shape, got {a.shape} "
                         f"and {b.shape} (image_90 in image_0's orientation)")
    return _check_frame("image_0", a), _check_frame("image_90", b)


# --- the line model: rows of a frame are its scan lines ---------------------------
# image_90 is handled as image_90.T with its offsets' x and y swapped.


def _inverse_coordinates(shape, offsets):
    """Where each corrected-grid pixel lies in a frame whose rows are scan lines.

    Returns the (line, fast) coordinates for map_coordinates and the mask of
    grid pixels the frame covers.
    """
    n, m = shape
    lines = np.arange(n, dtype=float)
    yline = lines + offsets[:, 1]
    grid_y = np.arange(n, dtype=float)
    u = np.interp(grid_y, yline, lines)  # fractional scan line at each grid row
    ox = np.interp(u, lines, offsets[:, 0])
    fast = np.arange(m, dtype=float)[None, :] - ox[:, None]
    inside_y = (grid_y >= yline[0]) & (grid_y <= yline[-1])
    valid = inside_y[:, None] & (fast >= 0) & (fast <= m - 1)
    return np.stack([np.broadcast_to(u[:, None], (n, m)), fast]), valid


def _resample(frame, offsets, order=3):
    """A frame (rows = scan lines) on the corrected grid, and its coverage."""
    coords, valid = _inverse_coordinates(frame.shape, offsets)
    return ndimage.map_coordinates(frame, coords, order=order, mode="nearest"), valid


def _resample_90(frame, offsets, order=3):
    img, valid = _resample(frame.T, offsets[:, ::-1], order)
    return img.T, valid.T


def _line_coords(shape, offsets):
    """(y, x) on the corrected grid of every pixel of a frame whose rows are scan lines."""
    n, m = shape
    ys = np.broadcast_to((np.arange(n) + offsets[:, 1])[:, None], (n, m))
    xs = np.arange(m)[None, :] + offsets[:, 0][:, None]
    return np.stack([ys, xs])


def _line_coverage(shape, offsets, valid):
    """Fraction of each scan line's pixels that land where ``valid`` (grid) is."""
    coords = _line_coords(shape, offsets)
    return ndimage.map_coordinates(valid.astype(float), coords, order=1, cval=0.0).mean(1)


def _line_equations(frame, offsets, ref, ref_valid):
    """Per-line Gauss-Newton normal equations of a frame against a reference.

    Model: ``frame[r, c] = ref(c + ox[r] + dx, r + oy[r] + dy)``, linearised in
    (dx, dy); pixels weighted by the reference's coverage there (0 to 1).
    Returns H, shape (n, 2, 2), and b, shape (n, 2), with ``H @ (dx, dy) = b``
    the least-squares update of line r.
    """
    n = frame.shape[0]
    coords = _line_coords(frame.shape, offsets)
    gy, gx = np.gradient(ref)
    value = ndimage.map_coordinates(ref, coords, order=3, mode="nearest")
    sx = ndimage.map_coordinates(gx, coords, order=1, mode="nearest")
    sy = ndimage.map_coordinates(gy, coords, order=1, mode="nearest")
    w = ndimage.map_coordinates(ref_valid.astype(float), coords, order=1, cval=0.0)
    err = frame - value
    h = np.empty((n, 2, 2))
    h[:, 0, 0] = (w * sx * sx).sum(1)
    h[:, 0, 1] = h[:, 1, 0] = (w * sx * sy).sum(1)
    h[:, 1, 1] = (w * sy * sy).sum(1)
    return h, np.column_stack([(w * sx * err).sum(1), (w * sy * err).sum(1)])


def _solve_offsets(h, b, offsets, smoothing):
    """New line offsets: the Gauss-Newton step with a smoothness penalty.

    Minimises ``sum_r d_r' H_r d_r - 2 b_r' d_r + lam |D2 z|^2`` over the new
    offsets ``z = offsets + d`` (D2: second differences along the slow axis,
    ``lam = smoothing**4`` times the mean curvature of the data term, so that
    wiggles shorter than ~2 pi ``smoothing`` lines are damped). ``smoothing``
    None: z is a straight line (a linear drift) per coordinate.
    """
    n = len(offsets)
    scale = float(np.mean(np.trace(h, axis1=1, axis2=2))) / 2 + 1e-12
    k = h + 1e-3 * scale * np.eye(2)  # Levenberg damping for lines without contrast
    kmat = sparse.bsr_matrix((k, np.arange(n), np.arange(n + 1)), shape=(2 * n, 2 * n))
    rhs = np.einsum("rij,rj->ri", k, offsets).ravel() + b.ravel()
    if smoothing is None:
        t = (np.arange(n) - (n - 1) / 2) / n
        basis = np.zeros((2 * n, 4))
        basis[0::2, 0], basis[0::2, 1] = 1.0, t
        basis[1::2, 2], basis[1::2, 3] = 1.0, t
        p = np.linalg.solve(basis.T @ (kmat @ basis), basis.T @ rhs)
        z = basis @ p
    else:
        d2 = sparse.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n))
        penalty = sparse.kron(d2.T @ d2, sparse.eye(2)) * (scale * float(smoothing) ** 4)
        z = spsolve((kmat + penalty).tocsc(), rhs)
    z = z.reshape(n, 2)
    step = np.maximum(np.diff(z[:, 1]), -0.9)  # a line never lands above the one before
    z[1:, 1] = z[0, 1] + np.cumsum(step)
    return z


def _nrms(a, b, mask) -> float:
    """sqrt(1 - Pearson correlation) of two images over a mask."""
    x, y = a[mask], b[mask]
    if x.size < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    rho = float(np.corrcoef(x, y)[0, 1])
    return float(np.sqrt(max(0.0, 1.0 - rho)))


def _standardise(frame, blur):
    f = ndimage.gaussian_filter(frame, blur) if blur > 0 else frame
    return (f - f.mean()) / f.std()


# --- the linear drift: a grid search over one drift velocity, as Ophus ------------


def _line_times(n, reverse):
    t = np.arange(n, dtype=float)
    return (t[::-1] if reverse else t) - (n - 1) / 2


def _linear_offsets(shape, drift, reverse_90):
    """Offsets of both frames for one drift velocity (px/line), centred in time."""
    rows, cols = shape
    return (np.outer(_line_times(rows, False), drift),
            np.outer(_line_times(cols, reverse_90), drift))


def _correlate(a, b, mask):
    """Peak of the normalised cross-correlation of two images (Hann-windowed over
    a mask) and the shift (dy, dx) of ``b`` relative to ``a`` there."""
    w = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1])) * mask
    sw = w.sum()
    if sw <= 0:
        return -np.inf, np.zeros(2)
    a = (a - (a * w).sum() / sw) * w
    b = (b - (b * w).sum() / sw) * w
    cc = np.fft.irfft2(np.fft.rfft2(a) * np.conj(np.fft.rfft2(b)), s=a.shape)
    peak = np.unravel_index(int(np.argmax(cc)), cc.shape)
    norm = np.sqrt((a * a).sum() * (b * b).sum()) + 1e-300
    shift = np.array([-(p if p <= s // 2 else p - s) for p, s in zip(peak, cc.shape)], float)
    return float(cc[peak] / norm), shift


def masked_shift(a, b, valid_a, valid_b, *, max_shift=0.25):
    """Shift (dy, dx) in px of ``b`` relative to ``a`` (``b(p) ~ a(p - shift)``) by
    masked normalised cross-correlation (Padfield 2012), integer px.

    Each shift is scored over its own overlap of the two masks, so no shift is
    favoured for its overlap (a Hann window favours small shifts: on a periodic
    lattice that picks the wrong lattice translation). Shifts up to ``max_shift``
    times the side, with at least half the largest overlap, are searched.

    Examples
    --------
    >>> a = np.random.default_rng(0).normal(size=(64, 64))
    >>> b = np.roll(a, (3, -5), axis=(0, 1))
    >>> m = np.ones(a.shape, bool)
    >>> masked_shift(a, b, m, m).tolist()
    [3.0, -5.0]
    """
    shape = [2 * s - 1 for s in a.shape]
    ma, mb = valid_a.astype(float), valid_b.astype(float)
    a, b = a * ma, b * mb
    fft = {k: np.fft.rfft2(v, s=shape) for k, v in
           (("ma", ma), ("mb", mb), ("a", a), ("b", b), ("aa", a * a), ("bb", b * b))}

    def corr(x, y):  # sum_p x(p + s) y(p)
        return np.fft.irfft2(fft[x] * np.conj(fft[y]), s=shape)

    n = np.maximum(corr("ma", "mb"), 0.0)
    sa, sb = corr("a", "mb"), corr("ma", "b")
    with np.errstate(divide="ignore", invalid="ignore"):
        num = corr("a", "b") - sa * sb / n
        den = (corr("aa", "mb") - sa**2 / n) * (corr("ma", "bb") - sb**2 / n)
        ncc = num / np.sqrt(np.maximum(den, 1e-12))
    lag = [np.where(np.arange(s) <= s // 2, np.arange(s), np.arange(s) - s) for s in shape]
    near = (np.abs(lag[0])[:, None] <= max_shift * a.shape[0]) & \
           (np.abs(lag[1])[None, :] <= max_shift * a.shape[1])
    ncc = np.where(near & (n >= 0.5 * n.max()) & np.isfinite(ncc), ncc, -np.inf)
    peak = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    return -np.array([lag[0][peak[0]], lag[1][peak[1]]], dtype=float)


def _drift_score(f0, f90, drift, reverse_90):
    o0, o90 = _linear_offsets(f0.shape, drift, reverse_90)
    a, va = _resample(f0, o0, order=1)
    b, vb = _resample_90(f90, o90, order=1)
    return _correlate(a, b, va & vb)


def _bin(frame, f):
    if f == 1:
        return frame
    n, m = (frame.shape[0] // f) * f, (frame.shape[1] // f) * f
    return frame[:n, :m].reshape(n // f, f, m // f, f).mean(axis=(1, 3))


def _grid_best(f0, f90, centre, half, step, reverse_90):
    """Best drift velocity on a square grid around ``centre``, and its score."""
    axis = np.arange(-half, half + step / 2, step)
    best, best_v = -np.inf, np.asarray(centre, float)
    for dy in axis:
        for dx in axis:
            v = np.asarray(centre, float) + (dx, dy)
            score, _ = _drift_score(f0, f90, v, reverse_90)
            if score > best:
                best, best_v = score, v
    return best_v, best


def linear_drift_search(f0, f90, *, max_drift=0.05, reverse_90=None):
    """The drift velocity (vx, vy), px per line, best aligning the two frames.

    Grid search (Ophus 2016): for each candidate, both frames are resampled
    with the linear drift and the peak of their normalised cross-correlation is
    scored; a coarse grid (step 2/N px/line, on frames binned to <= 256 lines)
    then a finer one (half that step) at full size. The shift between the two
    frames at the best drift is then found by :func:`masked_shift`.

    Parameters
    ----------
    f0, f90 : ndarray
        Standardised frames (image_90 in image_0's orientation).
    max_drift : float
        Largest drift searched, px per line, each component.
    reverse_90 : bool, optional
        image_90's lines were recorded right to left; None: both orders are
        searched (coarse grid) and the better kept.

    Returns
    -------
    drift : ndarray, shape (2,)
    shift : ndarray, shape (2,)
        (dy, dx) of the resampled image_90 relative to image_0 at that drift, px.
    reverse_90 : bool
        The time order of image_90's lines used.

    Examples
    --------
    >>> v, shift, reverse = linear_drift_search(f0, f90, max_drift=0.03)  # doctest: +SKIP
    """
    f = max(1, int(np.ceil(max(f0.shape) / 256)))
    c0, c90 = _bin(f0, f), _bin(f90, f)
    step = 2.0 / max(c0.shape)
    half = step * np.ceil(max_drift / step)
    orders = (False, True) if reverse_90 is None else (bool(reverse_90),)
    found = [(*_grid_best(c0, c90, (0.0, 0.0), half, step, rev), rev) for rev in orders]
    v, _, rev = max(found, key=lambda f: f[1])
    v, _ = _grid_best(f0, f90, v, step, step / 2, rev)
    o0, o90 = _linear_offsets(f0.shape, v, rev)
    a, va = _resample(f0, o0, order=1)
    b, vb = _resample_90(f90, o90, order=1)
    return v, masked_shift(a, b, va, vb), rev


# --- the per-line refinement ------------------------------------------------------


def _sweep(f0, f90, o0, o90, smoothing):
    """One Gauss-Seidel sweep: image_0's lines against corrected image_90, then
    image_90's against corrected image_0; offsets re-centred."""
    ref, valid = _resample_90(f90, o90)
    h, b = _line_equations(f0, o0, ref, valid)
    o0 = _solve_offsets(h, b, o0, smoothing)
    ref, valid = _resample(f0, o0)
    h, b = _line_equations(f90.T, o90[:, ::-1], ref.T, valid.T)
    o90 = _solve_offsets(h, b, o90[:, ::-1], smoothing)[:, ::-1]
    centre = np.vstack([o0, o90]).mean(axis=0)
    return o0 - centre, o90 - centre


def refine_offsets(f0, f90, o0, o90, *, smoothing=4.0, linear_sweeps=4, max_sweeps=12,
                   tol=0.005):
    """Per-line offsets of both frames, from a starting guess (px).

    Sweeps (:func:`_sweep`) with a straight-line model first (``linear_sweeps``),
    then with the smoothness penalty, its length stepping down from 16 lines to
    ``smoothing``, until the offsets move by less than ``tol`` px RMS.

    Returns
    -------
    o0, o90 : ndarray, shapes (rows, 2), (cols, 2)
    linear : tuple of ndarray
        The offsets after the linear sweeps.
    sweeps : int
    """
    for _ in range(linear_sweeps):
        o0, o90 = _sweep(f0, f90, o0, o90, None)
    linear = (o0.copy(), o90.copy())
    schedule = [s for s in (16.0, 8.0) if s > smoothing]
    sweeps = linear_sweeps
    for k in range(max_sweeps):
        s = schedule[k] if k < len(schedule) else smoothing
        n0, n90 = _sweep(f0, f90, o0, o90, s)
        change = np.sqrt(np.mean(np.vstack([n0 - o0, n90 - o90]) ** 2))
        o0, o90, sweeps = n0, n90, sweeps + 1
        if k >= len(schedule) and change < tol:
            break
    return o0, o90, linear, sweeps


def _drift_of(offsets, reverse):
    t = _line_times(len(offsets), reverse)
    return np.polyfit(t, offsets, 1)[0]


def _assemble(image_0, image_90, o0, o90):
    """Both frames on the grid, their average, the common coverage, and which
    lines of each frame fall (at least half) inside the other's coverage."""
    a, va = _resample(image_0, o0)
    b, vb = _resample_90(image_90, o90)
    both = va & vb
    avg = np.where(both, (a + b) / 2, np.where(va, a, np.where(vb, b, (a + b) / 2)))
    measured_0 = _line_coverage(image_0.shape, o0, vb) >= 0.5
    measured_90 = _line_coverage(image_90.T.shape, o90[:, ::-1], va.T) >= 0.5
    return a, b, avg, both, measured_0, measured_90


def _check_options(*, max_drift, smoothing, blur, max_sweeps):
    if not (np.isfinite(max_drift) and 0 < max_drift <= 0.5):
        raise ValueError(f"max_drift must be > 0 and <= 0.5 px per line, not {max_drift}")
    if not (np.isfinite(smoothing) and smoothing > 0):
        raise ValueError(f"smoothing must be a positive number of lines, not {smoothing}")
    if not (np.isfinite(blur) and blur >= 0):
        raise ValueError(f"blur must be >= 0 px, not {blur}")
    if int(max_sweeps) != max_sweeps or max_sweeps < 0:
        raise ValueError(f"max_sweeps must be a whole number >= 0, not {max_sweeps}")


def correct_orthogonal_pair(image_0, image_90, *, rotation: int | None = None,
                            reverse_90: bool | None = None, max_drift: float = 0.05,
                            smoothing: float = 4.0, blur: float = 1.0,
                            max_sweeps: int = 12) -> ScanPairResult:
    """Remove the scan distortion of a frame pair with orthogonal fast scans.

    Parameters
    ----------
    image_0 : ndarray, shape (rows, cols)
        Fast scan along x: rows are scan lines, recorded top to bottom.
    image_90 : ndarray
        Fast scan along y, in image_0's orientation (columns are scan lines;
        see the module docstring), or as recorded when ``rotation`` is given.
    rotation : {1, 3, -1}, optional
        Quarter turns ``np.rot90(image_90, rotation)`` that bring a raw
        90-degree frame into image_0's orientation (:func:`to_common_orientation`).
    reverse_90 : bool, optional
        image_90's lines (columns) were recorded right to left. Default None:
        both time orders are tried (the linear-drift search) and the better
        kept, whatever ``rotation``.
    max_drift : float
        Largest linear drift searched, px per line (each of x, y).
    smoothing : float
        Smoothing length of the per-line offsets along the slow axis, in lines
        (wiggles shorter than about 2 pi ``smoothing`` lines are damped).
    blur : float
        Gaussian width (px) of the smoothing applied to the frames for the
        registration only (not to the output images).
    max_sweeps : int
        Most Gauss-Newton sweeps of the per-line refinement.

    Returns
    -------
    ScanPairResult

    Raises
    ------
    ValueError
        Frames not 2-D, of different shapes (both named), non-finite, constant
        or smaller than 32 px a side; a bad ``rotation`` or option.

    Examples
    --------
    >>> res = correct_orthogonal_pair(frame_0, np.rot90(raw_90), max_drift=0.03)  # doctest: +SKIP
    >>> res = correct_orthogonal_pair(frame_0, raw_90, rotation=1)  # the same  # doctest: +SKIP
    >>> res.drift_0, res.residual_raw, res.residual  # doctest: +SKIP
    (array([0.012, 0.018]), 0.61, 0.33)
    """
    _check_options(max_drift=max_drift, smoothing=smoothing, blur=blur, max_sweeps=max_sweeps)
    if rotation is not None:
        image_90, _ = to_common_orientation(image_90, rotation)
    image_0, image_90 = check_pair(image_0, image_90)
    f0, f90 = _standardise(image_0, blur), _standardise(image_90, blur)
    drift, shift, reverse_90 = linear_drift_search(f0, f90, max_drift=max_drift,
                                                   reverse_90=reverse_90)
    o0, o90 = _linear_offsets(image_0.shape, drift, reverse_90)
    o90 = o90 - shift[::-1]  # image_90 appeared displaced by shift: move it back
    centre = np.vstack([o0, o90]).mean(axis=0)
    o0, o90, linear, sweeps = refine_offsets(f0, f90, o0 - centre, o90 - centre,
                                             smoothing=smoothing, max_sweeps=max_sweeps)
    a, b, avg, both, m0, m90 = _assemble(image_0, image_90, o0, o90)
    la, _ = _resample(image_0, linear[0])
    lb, _ = _resample_90(image_90, linear[1])
    return ScanPairResult(
        image_0=a, image_90=b, average=avg, coverage=both, offsets_0=o0, offsets_90=o90,
        drift_0=_drift_of(o0, False), drift_90=_drift_of(o90, reverse_90),
        residual_raw=_nrms(image_0, image_90, np.ones(image_0.shape, bool)),
        residual_linear=_nrms(la, lb, both), residual=_nrms(a, b, both), iterations=sweeps,
        reverse_90=reverse_90, measured_0=m0, measured_90=m90)


def scan_columns(shape, x, y, amplitude, sigma, background, offsets, *, lines="rows"):
    """The expected frame of Gaussian columns scanned with per-line offsets (forward model).

    Pixel ``[r, c]`` is the column model (:mod:`latticegenome.columns.model`)
    evaluated at ``(c + ox[r], r + oy[r])`` for ``lines="rows"`` (image_0), at
    ``(c + ox[c], r + oy[c])`` for ``lines="cols"`` (image_90, in image_0's
    orientation). For simulations and tests of :func:`correct_orthogonal_pair`.

    Parameters
    ----------
    shape : (rows, cols)
    x, y, amplitude : array_like, shape (n,)
        True column centres (px) and peak heights (counts per pixel).
    sigma : float
        Gaussian width (px).
    background : float
        Counts per pixel.
    offsets : ndarray, shape (lines, 2)
        (x, y) offset in px of each scan line.
    lines : {"rows", "cols"}

    Returns
    -------
    ndarray of float64, shape ``shape``

    Examples
    --------
    >>> img = scan_columns((64, 64), [32.0], [32.0], [100.0], 3.0, 0.0, np.zeros((64, 2)))
    >>> float(img[32, 32])
    100.0
    """
    if lines not in ("rows", "cols"):
        raise ValueError(f"lines must be 'rows' or 'cols', not {lines!r}")
    x, y = np.asarray(x, float), np.asarray(y, float)
    amplitude = np.broadcast_to(np.asarray(amplitude, float), x.shape)
    if lines == "cols":
        return scan_columns(shape[::-1], y, x, amplitude, sigma, background,
                            np.asarray(offsets)[:, ::-1]).T
    rows, cols = shape
    out = np.full(shape, float(background))
    fast = np.arange(cols, dtype=float)
    reach = 6.0 * sigma
    for r in range(rows):
        py = r + offsets[r, 1]
        near = np.abs(y - py) < reach
        dx = fast[:, None] + offsets[r, 0] - x[near][None, :]
        g = np.exp(-(dx**2 + (py - y[near])[None, :] ** 2) / (2 * sigma**2))
        out[r] += g @ amplitude[near]
    return out


#: Gaussian width of the low-pass that keeps a frame's large-scale content (thickness,
#: layers, contamination) and removes its lattice, as a fraction of the longer side.
ORIENTATION_BLUR = 1.0 / 24.0
#: A further turn of the 90-degree frame is taken to match better when its large-scale
#: correlation with the 0-degree frame beats the configured one's by this much.
ORIENTATION_MARGIN = 0.2
#: ... and large-scale content is there to tell when each frame's low-passed spread is this
#: many times what its pixel noise alone would leave after the low-pass.
ORIENTATION_CONTRAST = 5.0


def _large_scale(image: np.ndarray, sigma: float) -> tuple[np.ndarray, float]:
    """The standardised low-pass of ``image`` and its spread over that of its noise alone
    (pixel noise from neighbour differences, an overestimate where the lattice is sharp)."""
    img = np.asarray(image, float)
    low = ndimage.gaussian_filter(img, sigma, mode="nearest")
    d = np.diff(img, axis=1).ravel()
    noise = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2.0)
    low -= low.mean()
    spread = float(low.std())
    contrast = spread / (noise / (2.0 * np.sqrt(np.pi) * sigma)) if noise > 0 else np.inf
    return low / (spread or 1.0), contrast


def orientation_check(image_0, image_90, *, blur: float = ORIENTATION_BLUR) -> dict:
    """Whether a 90-degree frame, as turned into image_0's orientation, shows the same field.

    The lattice cannot tell: a [001] or [110] projection looks the same turned by 90 or
    180 degrees. The field's large-scale content (thickness, layers, contamination,
    the edge of the specimen) can: both frames are low-passed (Gaussian, ``blur`` of
    the longer side: the lattice goes) and correlated with image_90 turned by a further
    0, 1, 2 and 3 quarter turns (odd ones only for square frames).

    Parameters
    ----------
    image_0, image_90 : ndarray
        The 0-degree frame, and the 90-degree one turned as configured.
    blur : float
        The low-pass width as a fraction of the longer side.

    Returns
    -------
    dict
        ``correlation`` (4,): normalised correlation per further quarter turn (NaN for an
        odd turn of a non-square frame); ``contrast``: each frame's low-passed spread
        over what its noise alone leaves; ``checked``: both over
        :data:`ORIENTATION_CONTRAST` (there is large-scale content to tell); ``turns``:
        the further quarter turns that match best when they beat none (0) by
        :data:`ORIENTATION_MARGIN`, else 0.

    Examples
    --------
    >>> yy, xx = np.mgrid[:64, :64]
    >>> field = np.exp(-((xx - 20) ** 2 + (yy - 40) ** 2) / 200.0)
    >>> orientation_check(field, field)["turns"], orientation_check(field, np.rot90(field))["turns"]
    (0, 3)
    """
    a = np.asarray(image_0, float)
    if np.shape(image_90) != a.shape:  # not one field as turned: the caller says why
        return {"correlation": [float("nan")] * 4, "checked": False, "turns": 0,
                "contrast": [float("nan")] * 2}
    sigma = blur * max(a.shape)
    ref, contrast_0 = _large_scale(a, sigma)
    other, contrast_90 = _large_scale(np.asarray(image_90, float), sigma)
    corr = np.full(4, np.nan)
    for t in range(4):
        turned = np.rot90(other, t)
        if turned.shape == a.shape:
            corr[t] = float(np.mean(ref * turned))
    checked = bool(min(contrast_0, contrast_90) > ORIENTATION_CONTRAST)
    best = int(np.nanargmax(corr))
    turns = best if checked and corr[best] - corr[0] > ORIENTATION_MARGIN else 0
    return {"correlation": corr.tolist(), "checked": checked, "turns": turns,
            "contrast": [contrast_0, contrast_90]}


__all__ = ["ScanPairResult", "check_pair", "correct_orthogonal_pair", "linear_drift_search",
           "masked_shift", "orientation_check", "refine_offsets", "scan_columns", "to_common_orientation"]
