"""Lattice geometry: lattice vectors from the image, and lattice indexing.

Vectors are 2-vectors (x, y) in pixels. A lattice is given by the rows of a
2x2 matrix ``basis = [a1, a2]``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.feature import peak_local_max

from latticegenome.columns.geometry import in_frame


def _subpixel_peak(surface: np.ndarray, r: int, c: int) -> tuple[float, float]:
    """Quadratic interpolation of a maximum on a 3x3 neighbourhood (row, col)."""
    if not in_frame(c, r, surface.shape, margin=-1):  # the 3x3 neighbourhood inside
        return float(r), float(c)
    z = surface[r - 1 : r + 2, c - 1 : c + 2]
    dr = 0.5 * (z[0, 1] - z[2, 1]) / (z[0, 1] - 2 * z[1, 1] + z[2, 1] + 1e-300)
    dc = 0.5 * (z[1, 0] - z[1, 2]) / (z[1, 0] - 2 * z[1, 1] + z[1, 2] + 1e-300)
    return r + float(np.clip(dr, -0.5, 0.5)), c + float(np.clip(dc, -0.5, 0.5))


def reduce_basis(basis: np.ndarray) -> np.ndarray:
    """Lagrange-Gauss reduction: the shortest, most orthogonal basis.

    Returns rows ``a1, a2`` with ``|a1| <= |a2|``, ``|a1.a2| <= |a1|^2 / 2``,
    ``a1`` the one closest to the +x axis of the two shortest choices, and a
    right-handed pair in image coordinates (a1 x a2 > 0).
    """
    a, b = np.array(basis[0], float), np.array(basis[1], float)
    for _ in range(100):
        if a @ a > b @ b:
            a, b = b, a
        m = np.rint((a @ b) / (a @ a))
        if m == 0:
            break
        b = b - m * a
    if a @ a > b @ b:
        a, b = b, a
    # Pick signs: a1 pointing to +x (or +y when vertical), a2 right-handed.
    if a[0] < -1e-9 or (abs(a[0]) <= 1e-9 and a[1] < 0):
        a = -a
    if a[0] * b[1] - a[1] * b[0] < 0:
        b = -b
    return np.array([a, b])


def autocorrelation(image: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation of an image, zero lag at the centre.

    The image is mean-subtracted and Hann-windowed; the window's own
    autocorrelation is divided out, so lattice peaks keep their height at
    large lags. The zero-lag value is 1.
    """
    img = np.asarray(image, float)
    rows, cols = img.shape
    win = np.outer(np.hanning(rows), np.hanning(cols))
    f = (img - img.mean()) * win
    shape = (2 * rows, 2 * cols)  # zero padding: linear, not circular
    acf = np.fft.irfft2(np.abs(np.fft.rfft2(f, shape)) ** 2, shape)
    wacf = np.fft.irfft2(np.abs(np.fft.rfft2(win, shape)) ** 2, shape)
    acf = np.fft.fftshift(acf)
    wacf = np.fft.fftshift(wacf)
    wacf = np.maximum(wacf, wacf.max() * 1e-3)
    acf = acf / wacf
    if not acf[rows, cols] > 0:
        raise ValueError("constant image: no structure")
    return acf / acf[rows, cols]


def central_crop(image: np.ndarray, size: int = 512) -> np.ndarray:
    """The central ``size`` x ``size`` px of an image (all of a smaller one); a view.

    Examples
    --------
    >>> central_crop(np.zeros((600, 100)), 512).shape
    (512, 100)
    """
    r0 = max(0, (image.shape[0] - size) // 2)
    c0 = max(0, (image.shape[1] - size) // 2)
    return image[r0 : r0 + size, c0 : c0 + size]


def acf_peaks(acf: np.ndarray, max_lag: float, min_lag: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice translations: the peaks of an autocorrelation within ``max_lag`` px.

    The autocorrelation (zero lag at ``acf.shape // 2``, as from
    :func:`autocorrelation`) is cut to ``max_lag`` around zero lag and
    lightly smoothed; its local maxima above 0.05 are located to a sub-pixel
    and those whose lag is between ``min_lag`` and ``max_lag`` px are kept.

    Returns
    -------
    vectors : ndarray, shape (m, 2)
        Lags (x, y) in pixels.
    height : ndarray, shape (m,)
        The smoothed autocorrelation at each peak.

    Raises
    ------
    ValueError
        No peak at all.
    """
    cr, cc = acf.shape[0] // 2, acf.shape[1] // 2
    lo_r, hi_r = int(cr - max_lag), int(cr + max_lag) + 1
    lo_c, hi_c = int(cc - max_lag), int(cc + max_lag) + 1
    sub = ndimage.gaussian_filter(acf[lo_r:hi_r, lo_c:hi_c], 0.7)
    peaks = peak_local_max(sub, min_distance=2, threshold_abs=0.05, exclude_border=True)
    if len(peaks) == 0:
        raise ValueError("no periodic structure: the autocorrelation has no peak")
    vec = []
    height = []
    for r, c in peaks:
        pr, pc = _subpixel_peak(sub, r, c)
        v = np.array([pc + lo_c - cc, pr + lo_r - cr])
        d = np.hypot(*v)
        if d < min_lag or d > max_lag:
            continue
        vec.append(v)
        height.append(sub[r, c])
    return np.array(vec).reshape(-1, 2), np.array(height)


def shortest_pair(vectors: np.ndarray, height: np.ndarray, spacing_px: float | None = None) -> np.ndarray:
    """The two shortest independent vectors among the strong lattice peaks.

    Strong: at least half the height of the highest peak (of those between
    0.6 and 1.6 ``spacing_px``, when given and at least two are there). a1 is
    the shortest strong vector, a2 the shortest one at least ~17 degrees from
    parallel to it.

    Returns
    -------
    ndarray, shape (2, 2)
        Reduced basis ``[a1, a2]`` (:func:`reduce_basis`), in pixels.

    Raises
    ------
    ValueError
        Fewer than two vectors, or all of them parallel.

    Examples
    --------
    >>> v = np.array([[20.0, 0.0], [40.0, 0.0], [0.0, 21.0], [20.0, 21.0]])
    >>> shortest_pair(v, np.ones(4))
    array([[20.,  0.],
           [ 0., 21.]])
    """
    if len(vectors) < 2:
        raise ValueError("no periodic structure: fewer than two lattice peaks")
    length = np.hypot(vectors[:, 0], vectors[:, 1])
    strong = height >= 0.5 * height.max()
    if spacing_px:
        near = (length > 0.6 * spacing_px) & (length < 1.6 * spacing_px)
        if near.sum() >= 2:
            strong = near & (height >= 0.5 * height[near].max())
    cand = vectors[strong]
    cand = cand[np.argsort(np.hypot(cand[:, 0], cand[:, 1]))]
    a1 = cand[0]
    for v in cand[1:]:
        cross = abs(a1[0] * v[1] - a1[1] * v[0])
        if cross > 0.3 * np.hypot(*a1) * np.hypot(*v):
            return reduce_basis(np.array([a1, v]))
    raise ValueError("no periodic structure in two dimensions")


def estimate_lattice(
    image: np.ndarray,
    *,
    spacing_px: float | None = None,
    min_spacing_px: float = 4.0,
) -> np.ndarray:
    """Estimate the two shortest lattice vectors of a periodic image.

    The autocorrelation of the image (of a central crop of at most 512 px a
    side, :func:`central_crop`: ~25 cells across are plenty, and the FFT stays
    cheap on large images) peaks at every lattice translation
    (:func:`acf_peaks`). The strongest peaks (at least half the height of the
    highest one) are taken, the shortest of them gives a1 and the shortest one
    not parallel to it a2 (:func:`shortest_pair`). A centred (A + B)
    pseudo-lattice is resolved later by
    :func:`latticegenome.columns.finder.resolve_centring`.

    Parameters
    ----------
    image : ndarray
        The image (any in-plane rotation).
    spacing_px : float, optional
        Expected nearest-neighbour spacing in pixels (e.g. the nominal lattice
        parameter over the pixel size). When given, peaks between 0.6 and 1.6
        times it are preferred, and none beyond 3.5 times it is looked at.
    min_spacing_px : float
        Lags shorter than this are ignored (the zero-lag peak's shoulder).

    Returns
    -------
    ndarray, shape (2, 2)
        Reduced basis ``[a1, a2]`` in pixels.

    Raises
    ------
    ValueError
        If no two independent lattice peaks are found.
    """
    img = central_crop(np.asarray(image, float), 512)
    max_lag = min(img.shape) / 2.0
    if spacing_px:
        max_lag = min(max_lag, 3.5 * spacing_px)
    vectors, height = acf_peaks(autocorrelation(img), max_lag, min_spacing_px)
    return shortest_pair(vectors, height, spacing_px)


#: Steps to the four nearest lattice neighbours, in indices: +-a1, +-a2.
_STEPS = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]])


def choose_seed(points: np.ndarray, weights: np.ndarray | None = None) -> int:
    """Index of the starting point of a lattice: the brightest near the middle.

    Among the quarter of the points nearest their centre of mass, the one of
    largest weight (without weights: the nearest to the centre).

    Examples
    --------
    >>> pts = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [5.0, 5.0]])
    >>> choose_seed(pts)
    4
    """
    centre = points.mean(axis=0)
    dist = np.hypot(*(points - centre).T)
    near_c = dist <= np.percentile(dist, 25)
    w = weights[near_c] if weights is not None else -dist[near_c]
    return int(np.flatnonzero(near_c)[np.argmax(w)])


def on_indexed_lattice(points, cand, found, local, tolerance):
    """Candidates of a further component that sit on the lattice already indexed.

    A point is on the lattice when its offset from its nearest indexed point
    is a whole number of that point's local lattice vectors, within
    ``tolerance`` (a fraction of a step) in each index.

    Parameters
    ----------
    points : ndarray, shape (n, 2)
    cand : ndarray of int
        Rows of ``points`` not reached yet.
    found : ndarray of bool, shape (n,)
    local : ndarray, shape (n, 2, 2)
    tolerance : float

    Returns
    -------
    on_site : ndarray of bool, shape (len(cand),)
    near : ndarray of int
        Nearest indexed point of each candidate.
    frac : ndarray, shape (len(cand), 2)
        The offset in (fractional) lattice steps.
    """
    done = np.flatnonzero(found)
    _, near = cKDTree(points[done]).query(points[cand])
    near = done[near]
    frac = np.linalg.solve(
        np.swapaxes(local[near], 1, 2), (points[cand] - points[near])[..., None]
    )[..., 0]
    on_site = np.all(np.abs(frac - np.rint(frac)) < tolerance, axis=1)
    return on_site, near, frac


def grow_lattice(points, tree, seed, ij, found, local, unreached, tol, spacing) -> int:
    """Index the points reached from ``seed``, breadth-first, a whole front at a time.

    Each front predicts its neighbours with its local lattice vectors (one
    k-d tree query per front; a neighbour within ``tol`` px of its prediction
    is reached). A new point takes its index from the first prediction that
    reached it, and the step measured as its local vector where that agrees
    with the parent's within 15 % of ``spacing`` (a noisy point must not bend
    the lattice for everything grown from it). ``ij``, ``found``, ``local``
    and ``unreached`` are updated in place; the seed must be set already.

    Returns
    -------
    int
        Points in the component, the seed included.
    """
    front = np.array([seed])
    grown = 1
    while front.size:
        # Predicted neighbour positions of the whole front.
        vec = np.einsum("sk,fkd->fsd", _STEPS, local[front])  # (f, 4, 2)
        pred = points[front][:, None, :] + vec
        d, j = tree.query(pred.reshape(-1, 2), distance_upper_bound=tol)
        hit = np.isfinite(d)
        j = j[hit]
        src = np.repeat(front, 4)[hit]
        stp = np.tile(np.arange(4), front.size)[hit]
        new = unreached[j]
        j, src, stp = j[new], src[new], stp[new]
        if j.size == 0:
            break
        # One parent per new point: the first prediction that reached it.
        j, first = np.unique(j, return_index=True)
        src, stp = src[first], stp[first]
        ij[j] = ij[src] + _STEPS[stp]
        loc = local[src].copy()
        measured = points[j] - points[src]
        axis = np.abs(_STEPS[stp]).argmax(axis=1)  # 0 along a1, 1 along a2
        sign = _STEPS[stp].sum(axis=1)
        rows_ = np.arange(j.size)
        agree = np.hypot(*(measured * sign[:, None] - loc[rows_, axis]).T) < 0.15 * spacing
        loc[rows_[agree], axis[agree]] = (measured * sign[:, None])[agree]
        local[j] = loc
        found[j] = True
        unreached[j] = False
        front = j
        grown += j.size
    return grown


def index_lattice(
    points: np.ndarray,
    basis: np.ndarray,
    *,
    tolerance: float = 0.3,
    seed: int | None = None,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give each point integer lattice indices by growing from a seed.

    The lattice is grown breadth-first, a whole front at a time
    (:func:`grow_lattice`). Each point carries its own local lattice vectors,
    taken from the steps that reached it, so slow distortion and linear
    drift are followed across the image. Points not reached start further
    components, which must sit on the lattice already indexed
    (:func:`on_indexed_lattice`): points between lattice sites (B columns,
    noise) are never indexed; nor is a component of fewer than four points.

    Parameters
    ----------
    points : ndarray, shape (n, 2)
        Positions (x, y) in pixels.
    basis : ndarray, shape (2, 2)
        Approximate lattice vectors ``[a1, a2]`` in pixels.
    tolerance : float
        A neighbour is accepted within this fraction of the shorter lattice
        vector's length from its predicted position.
    seed : int, optional
        Index of the starting point; default the point of largest weight
        among those near the centre of mass (:func:`choose_seed`).
    weights : ndarray, shape (n,), optional
        Brightness of the points (used to choose the seed).

    Returns
    -------
    ij : ndarray of int, shape (n, 2)
        Lattice indices; rows of points not reached are ``(INT_MIN, INT_MIN)``.
    found : ndarray of bool, shape (n,)
    local : ndarray, shape (n, 2, 2)
        Local lattice vectors at each point (NaN where not reached).
    """
    pts = np.asarray(points, float)
    n = len(pts)
    ij = np.full((n, 2), np.iinfo(np.int64).min, dtype=np.int64)
    found = np.zeros(n, dtype=bool)
    local = np.full((n, 2, 2), np.nan)
    if n == 0:
        return ij, found, local
    basis = np.asarray(basis, float)
    spacing = min(np.hypot(*basis[0]), np.hypot(*basis[1]))
    tree = cKDTree(pts)
    unreached = np.ones(n, dtype=bool)
    component = 0
    while unreached.any():
        cand = np.flatnonzero(unreached)
        if component > 0:
            if not found.any():
                break
            on_site, near, frac = on_indexed_lattice(pts, cand, found, local, tolerance)
            unreached[cand[~on_site]] = False
            cand, near, frac = cand[on_site], near[on_site], frac[on_site]
            if cand.size == 0:
                break
        if seed is not None and component == 0:
            s = seed
        else:
            pick = choose_seed(pts[cand], weights[cand] if weights is not None else None)
            s = cand[pick]
        ij[s] = (0, 0) if component == 0 else ij[near[pick]] + np.rint(frac[pick]).astype(np.int64)
        local[s] = basis
        found[s] = True
        unreached[s] = False
        grown = grow_lattice(pts, tree, s, ij, found, local, unreached, tolerance * spacing, spacing)
        component += 1
        if grown < 4:
            # A lone point (noise, or a B column): not part of the lattice.
            found[s] = False
            ij[s] = np.iinfo(np.int64).min
            local[s] = np.nan
    return ij, found, local


def fit_lattice(points: np.ndarray, ij: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares lattice ``p = origin + i a1 + j a2`` through indexed points.

    Returns
    -------
    basis : ndarray, shape (2, 2)
    origin : ndarray, shape (2,)
    """
    design = np.column_stack([np.ones(len(ij)), ij[:, 0], ij[:, 1]])
    coef, *_ = np.linalg.lstsq(design, np.asarray(points, float), rcond=None)
    return coef[1:3], coef[0]


def index_grid(ij: np.ndarray, reach: int, also: np.ndarray | None = None):
    """Dense lookup table of lattice indices: (i, j) -> row of ``ij``, -1 where none.

    Covers the indices of ``ij`` (and of ``also``, if given) plus ``reach`` on
    every side, so that neighbours up to ``reach`` steps away can be looked up
    without bounds checks.

    Returns
    -------
    grid : ndarray of int, 2-D
    lo : ndarray of int, shape (2,)
        Subtract from (i, j) before indexing ``grid``.
    """
    span = ij if also is None else np.vstack([ij, also])
    lo = span.min(axis=0) - reach
    hi = span.max(axis=0) + reach
    grid = np.full((hi[0] - lo[0] + 1, hi[1] - lo[1] + 1), -1, dtype=np.int64)
    grid[ij[:, 0] - lo[0], ij[:, 1] - lo[1]] = np.arange(len(ij))
    return grid, lo


def predict_sites(
    points: np.ndarray,
    ij: np.ndarray,
    targets: np.ndarray,
    *,
    reach: int = 3,
    min_points: int = 4,
) -> np.ndarray:
    """Positions of lattice sites from a local affine fit of indexed points.

    For each target site, ``p = c + i a1 + j a2`` is fitted by least squares
    to the indexed points within ``reach`` lattice steps of it (Chebyshev
    distance in indices), weighted by ``1 / (1 + distance^2)``, and evaluated
    at the site. A local fit follows drift and slow lattice distortion, and
    extrapolates beyond the points (e.g. to sites outside the image) far
    better than one neighbour plus one lattice vector.

    Parameters
    ----------
    points : ndarray, shape (n, 2)
        Measured positions (x, y) in pixels.
    ij : ndarray of int, shape (n, 2)
        Their lattice indices.
    targets : ndarray of int, shape (m, 2)
        Indices of the sites to predict.
    reach : int
        Half-size, in lattice steps, of the neighbourhood used.
    min_points : int
        Fewer points than this in the neighbourhood (or a degenerate set,
        e.g. all on one line): the prediction is NaN.

    Returns
    -------
    ndarray, shape (m, 2)
        Predicted (x, y) in pixels; NaN where no fit was possible.
    """
    points = np.asarray(points, float)
    ij = np.asarray(ij, np.int64)
    targets = np.asarray(targets, np.int64).reshape(-1, 2)
    out = np.full((len(targets), 2), np.nan)
    if len(points) == 0 or len(targets) == 0:
        return out
    grid, lo = index_grid(ij, reach, also=targets)
    off = np.arange(-reach, reach + 1)
    di, dj = (a.ravel() for a in np.meshgrid(off, off, indexing="ij"))
    weight = 1.0 / (1.0 + di**2 + dj**2)
    for start in range(0, len(targets), 4096):  # chunks bound the memory
        t = targets[start:start + 4096]
        idx = grid[t[:, 0, None] + di - lo[0], t[:, 1, None] + dj - lo[1]]  # (m, k)
        w = np.where(idx >= 0, weight, 0.0)
        design = np.stack([np.ones_like(w), np.broadcast_to(di, w.shape),
                           np.broadcast_to(dj, w.shape)], axis=-1).astype(float)
        p = points[np.maximum(idx, 0)]
        normal = np.einsum("mk,mka,mkb->mab", w, design, design)
        rhs = np.einsum("mk,mka,mkd->mad", w, design, p)
        ok = ((idx >= 0).sum(axis=1) >= min_points) & (np.linalg.cond(normal) < 1e8)
        if ok.any():
            coef = np.linalg.solve(normal[ok], rhs[ok])  # (m, 3, 2)
            out[start:start + 4096][ok] = coef[:, 0, :]  # the fit at the site itself
    return out
