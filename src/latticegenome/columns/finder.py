"""Find and refine the A-site (primary) and B-site (secondary) columns.

Pipeline, every step vectorised and linear in the number of columns, one
function each (:func:`find_columns` runs them in order):

1. :func:`lattice_vectors`: lattice vectors from the autocorrelation of the
   image (:func:`latticegenome.columns.lattice.estimate_lattice`);
2. :func:`index_maxima`: local maxima of the lightly smoothed image
   (:func:`candidate_maxima`), indexed on the lattice by growing from a bright
   seed (:func:`latticegenome.columns.lattice.index_lattice`); if the maxima
   alternate in brightness like a checkerboard, the grown lattice was the
   centred A+B pseudo-lattice and the brighter half is A
   (:func:`resolve_centring`); then the column width (:func:`column_width`);
3. :func:`add_missing_sites`: lattice sites next to indexed A columns that
   have no maximum (edge columns, faint columns) are added as candidates, out
   to the reach of a column's tail beyond the image border;
4. :func:`refine_a`: all A columns are refined together by Poisson maximum
   likelihood; sites outside the image are placed by a local affine fit of
   the inside lattice, with their neighbours' height
   (:func:`place_outside_sites`);
5. :func:`b_candidates`: one B candidate per A cell (four corners, or fewer
   at the image edge), moved to the maximum of the residual image within
   ``b_search`` of the cell centre (:func:`residual_maxima`), so displaced B
   columns are found where they are;
6. :func:`refine_together`: A and B refined together (B tails in A windows
   and vice versa); sites outside the image stay in the model (their tails
   shine in) and are fitted on their tails only;
7. :func:`select_columns`: a column is kept when its amplitude is
   ``significance`` standard errors above zero (vacancies and empty sites
   drop out here).

Positions are pixels: x = column index, y = row index, origin at the centre
of pixel [0, 0].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
from scipy import ndimage

from latticegenome.columns.geometry import PIXEL_AREA, in_frame
from latticegenome.columns.lattice import (
    estimate_lattice,
    fit_lattice,
    index_grid,
    index_lattice,
    predict_sites,
)
from latticegenome.columns.model import render_columns
from latticegenome.columns.probe import (
    ProbeTail,
    converged,
    estimate_probe_tail,
    remove_probe_tail,
)
from latticegenome.columns.projection import Projection, perovskite_projection
from latticegenome.columns.refine import Refinement, counts_of, refine_columns
from latticegenome.columns.selfcheck import (
    choose_a_lattice,
    column_contrast,
    contrast_polarity,
    oriented,
    unmodelled_residual,
)
from latticegenome.core.errors import ModelMismatchError, NoLatticeError

#: Tolerances of the preliminary fits (a start for the joint fit, not a result).
_LOOSE = {"tol_px": 1e-2, "tol_decrement": 1e-2, "max_iter": 6, "max_sweeps": 1}

#: How far (px) a column outside the image may move from its lattice site.
OUT_SHIFT = 2.0

#: Columns of the output table, in order.
FIELDS = (
    "x", "y", "site", "species", "x_err", "y_err", "amplitude", "amplitude_err",
    "background", "sigma", "i", "j", "converged", "detected", "significance",
)


@dataclass
class Columns:
    """Refined columns of one image; arrays have one entry per column.

    Attributes
    ----------
    x, y, x_err, y_err, sigma : ndarray
        Position, its standard error and Gaussian width, in pixels.
    site : ndarray of str
        ``"A"``, ``"B"`` or ``"O"`` (oxygen-only columns, when fitted).
    species : ndarray of str
        The column's content per repeat along the beam in the configured
        projection (``"Sr"``, ``"TiO"``, ``"SrO"``, ``"O2"``...).
    amplitude, amplitude_err, background : ndarray
        Peak height, its standard error and local background (image units/px).
    i, j : ndarray of int
        Lattice indices: of the column for A, of the cell's lower corner
        (the A at ``(i, j)``) for B and O.
    converged : ndarray of bool
    detected : ndarray of bool
        The column is there: its amplitude is ``significance`` standard errors
        above zero and the fit stayed at its site. Every A and B lattice site
        inside the image is reported, detected or not (a vacancy, or a column
        too faint at low dose): its position is the fit's, or the lattice
        site's with NaN errors where the fit left it. O columns are reported
        only when detected.
    significance : ndarray
        amplitude / amplitude_err.
    basis : ndarray, shape (2, 2)
        Mean A lattice vectors ``[a1, a2]`` in pixels.
    origin : ndarray, shape (2,)
        Position of the A site ``(0, 0)`` in pixels.
    dispersion : float
        Pearson dispersion of the fit (1 for images in detector counts).
    """

    x: np.ndarray
    y: np.ndarray
    site: np.ndarray
    species: np.ndarray
    x_err: np.ndarray
    y_err: np.ndarray
    amplitude: np.ndarray
    amplitude_err: np.ndarray
    background: np.ndarray
    sigma: np.ndarray
    i: np.ndarray
    j: np.ndarray
    converged: np.ndarray
    detected: np.ndarray
    significance: np.ndarray
    basis: np.ndarray
    origin: np.ndarray
    dispersion: float
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.size)

    def as_dict(self) -> dict[str, np.ndarray]:
        """The per-column arrays, keyed by :data:`FIELDS`."""
        return {name: getattr(self, name) for name in FIELDS}


def _subpixel(surface: np.ndarray, r: np.ndarray, c: np.ndarray):
    """Vectorised 3x3 quadratic peak interpolation; returns (x, y)."""
    rows, cols = surface.shape
    r = np.clip(r, 1, rows - 2)
    c = np.clip(c, 1, cols - 2)
    z0 = surface[r, c].astype(float)
    up, down = surface[r - 1, c].astype(float), surface[r + 1, c].astype(float)
    left, right = surface[r, c - 1].astype(float), surface[r, c + 1].astype(float)
    dr = 0.5 * (up - down) / np.where(up - 2 * z0 + down < 0, up - 2 * z0 + down, -1e300)
    dc = 0.5 * (left - right) / np.where(left - 2 * z0 + right < 0, left - 2 * z0 + right, -1e300)
    return c + np.clip(dc, -0.5, 0.5), r + np.clip(dr, -0.5, 0.5)


def local_maxima(image: np.ndarray, min_distance: int) -> np.ndarray:
    """(row, col) of pixels that are the maximum of their (2 d + 1)^2 square.

    A flat plateau gives one pixel. Cost is linear in the image size; the
    filters run one after the other to bound memory.
    """
    from scipy.spatial import cKDTree

    size = 2 * min_distance + 1
    peak = image == ndimage.maximum_filter(image, size=size, mode="nearest")
    peak &= image > ndimage.minimum_filter(image, size=size, mode="nearest")
    coords = np.argwhere(peak)
    del peak
    if len(coords) > 1:
        # plateaus: neighbouring candidates of equal value keep the first
        pairs = cKDTree(coords).query_pairs(1.5, output_type="ndarray")
        if len(pairs):
            keep = np.ones(len(coords), dtype=bool)
            keep[pairs.max(axis=1)] = False
            coords = coords[keep]
    return coords


def estimate_width(image: np.ndarray, x: np.ndarray, y: np.ndarray, spacing: float) -> float:
    """Gaussian width (px) of the columns at (x, y), from their mean profile.

    Second moment of the background-subtracted mean patch within 0.3 of the
    spacing, corrected for the truncation of a Gaussian at that radius.
    """
    r = max(2, int(0.3 * spacing))
    cx = np.rint(x).astype(int)
    cy = np.rint(y).astype(int)
    ok = in_frame(cx, cy, image.shape, margin=-r)  # the whole patch inside
    if ok.sum() < 3:
        return 0.12 * spacing
    sel = np.flatnonzero(ok)[:2000]
    off = np.arange(-r, r + 1)
    patch = image[cy[sel, None, None] + off[None, :, None], cx[sel, None, None] + off[None, None, :]]
    mean = patch.mean(axis=0)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    rr2 = ox**2 + oy**2
    disk = rr2 <= r * r
    ring = disk & (rr2 > (r - 1.5) ** 2)
    w = np.clip(mean - mean[ring].mean(), 0, None) * disk
    if w.sum() <= 0:
        return 0.12 * spacing
    m2 = (w * rr2).sum() / w.sum()  # E[r^2] of the truncated profile
    # Solve E[r^2 | r < R] = 2 s^2 (1 - (1 + u) e^-u) / (1 - e^-u), u = R^2/2s^2,
    # for s by fixed-point iteration; jitter of integer centring adds 1/6 px^2.
    m2 = max(m2 - 1.0 / 6.0, 0.25)
    s2 = m2 / 2
    for _ in range(50):
        u = r * r / (2 * s2)
        frac = (1 - (1 + u) * np.exp(-u)) / (1 - np.exp(-u))
        s2 = m2 / (2 * frac)
    return float(np.clip(np.sqrt(s2), 0.5, 0.4 * spacing))


def _cell_centres(pos, ij, local, frac=(0.5, 0.5)):
    """B (or O) seeds: the point at ``frac`` of every cell with an indexed corner.

    Each corner predicts the point with its own local lattice vectors; the
    predictions of the corners present are averaged.
    """
    corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    cell_ij = (ij[:, None, :] - corners[None, :, :]).reshape(-1, 2)
    half = np.asarray(frac, float) - corners  # (4, 2): offset from each corner, in cells
    pred = pos[:, None, :] + np.einsum("ck,nkd->ncd", half, local)
    pred = pred.reshape(-1, 2)
    ok = np.isfinite(pred).all(axis=1)
    cell_ij, pred = cell_ij[ok], pred[ok]
    keys, inv = np.unique(cell_ij, axis=0, return_inverse=True)
    inv = inv.ravel()
    count = np.bincount(inv)
    cx = np.bincount(inv, weights=pred[:, 0]) / count
    cy = np.bincount(inv, weights=pred[:, 1]) / count
    return keys, np.column_stack([cx, cy])


def _missing_sites(pos, ij, local, shape, margin):
    """Lattice sites next to indexed columns that have no column yet."""
    steps = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]])
    nb_ij = (ij[:, None, :] + steps[None]).reshape(-1, 2)
    nb_pos = (pos[:, None, :] + np.einsum("sk,nkd->nsd", steps, local)).reshape(-1, 2)
    ok = np.isfinite(nb_pos).all(axis=1)
    nb_ij, nb_pos = nb_ij[ok], nb_pos[ok]
    grid, lo = index_grid(ij, 1)
    new = grid[nb_ij[:, 0] - lo[0], nb_ij[:, 1] - lo[1]] < 0
    nb_ij, nb_pos = nb_ij[new], nb_pos[new]
    if nb_ij.size == 0:
        return np.zeros((0, 2), int), np.zeros((0, 2))
    keys, inv = np.unique(nb_ij, axis=0, return_inverse=True)
    inv = inv.ravel()
    count = np.bincount(inv)
    p = np.column_stack([np.bincount(inv, weights=nb_pos[:, 0]), np.bincount(inv, weights=nb_pos[:, 1])])
    p /= count[:, None]
    inside = in_frame(p[:, 0], p[:, 1], shape, margin)
    return keys[inside], p[inside]


def _local_vectors_from_fit(pos, ij, basis):
    """Local lattice vectors at each indexed column from its indexed neighbours."""
    n = len(pos)
    local = np.repeat(basis[None], n, axis=0).astype(float)
    grid, lo = index_grid(ij, 1)
    for axis, step in ((0, (1, 0)), (1, (0, 1))):
        fwd = grid[ij[:, 0] + step[0] - lo[0], ij[:, 1] + step[1] - lo[1]]
        bwd = grid[ij[:, 0] - step[0] - lo[0], ij[:, 1] - step[1] - lo[1]]
        vf = np.where((fwd >= 0)[:, None], pos[np.maximum(fwd, 0)] - pos, np.nan)
        vb = np.where((bwd >= 0)[:, None], pos - pos[np.maximum(bwd, 0)], np.nan)
        stacked = np.stack([vf, vb])
        count = np.isfinite(stacked).sum(axis=0)
        both = np.where(count > 0, np.nansum(stacked, axis=0) / np.maximum(count, 1), np.nan)
        have = np.isfinite(both).all(axis=1)
        local[have, axis] = both[have]
    return local


@dataclass
class Candidates:
    """Columns going into a fit: start values, one entry per column.

    Attributes
    ----------
    x, y, amplitude, sigma, background : ndarray
        Start of the fit (px, px, image units/px, px, image units/px).
    site : ndarray of int
        0 for A, 1 for B, 2 for O (the fit's groups).
    species : ndarray of str
        The column's content in the projection.
    ij : ndarray of int, shape (n, 2)
        Lattice indices (of the cell's lower corner for B).
    seed_x, seed_y : ndarray
        Where the lattice puts the column (its site for A, its cell centre for
        B), in px: the reference of how far the fit may take it.
    """

    x: np.ndarray
    y: np.ndarray
    amplitude: np.ndarray
    sigma: np.ndarray
    background: np.ndarray
    site: np.ndarray
    ij: np.ndarray
    seed_x: np.ndarray
    seed_y: np.ndarray
    species: np.ndarray

    def __len__(self) -> int:
        return int(self.x.size)

    def join(self, other: Candidates) -> Candidates:
        """These columns followed by ``other``'s."""
        return Candidates(
            **{name: np.r_[getattr(self, name), getattr(other, name)]
               for name in ("x", "y", "amplitude", "sigma", "background", "site", "seed_x", "seed_y",
                            "species")},
            ij=np.vstack([self.ij, other.ij]),
        )


def _spacing(basis: np.ndarray) -> float:
    """Length (px) of the shorter lattice vector."""
    return float(min(np.hypot(*basis[0]), np.hypot(*basis[1])))


def _significant(fit: Refinement, significance: float) -> np.ndarray:
    """Columns whose amplitude is ``significance`` standard errors above zero."""
    return (fit.amplitude >= significance * fit.amplitude_err) & np.isfinite(fit.x_err)


def lattice_vectors(image: np.ndarray, *, spacing_px: float | None = None,
                    min_cells: int = 2) -> tuple[np.ndarray, float]:
    """Step 1: lattice vectors of the image, from its autocorrelation.

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
    spacing_px : float, optional
        Expected A-A spacing in pixels (settles ambiguous cases).
    min_cells : int
        The image must hold at least this many spacings in each direction.

    Returns
    -------
    basis : ndarray, shape (2, 2)
        Reduced basis ``[a1, a2]`` in pixels.
    spacing : float
        Length of the shorter vector, in pixels.

    Raises
    ------
    NoLatticeError
        No lattice, or too small an image for ``min_cells`` cells.
    """
    rows, cols = image.shape
    try:
        basis = estimate_lattice(image, spacing_px=spacing_px)
    except ValueError as exc:
        raise NoLatticeError(str(exc)) from None
    d = _spacing(basis)
    if d * min_cells > min(rows, cols):
        raise NoLatticeError(
            f"image of {cols}x{rows} px is too small for {min_cells} unit cells of {d:.1f} px"
        )
    return basis, d


def candidate_maxima(image: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Step 2a: intensity maxima of the lightly smoothed image, off its border.

    Maxima within 2 px of the border are tails of columns outside or cut by
    the edge, not column positions (edge columns come back from the lattice).

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
    spacing : float
        Lattice spacing in pixels (sets the smoothing and the minimum distance).

    Returns
    -------
    points : ndarray, shape (n, 2)
        Sub-pixel (x, y) of the maxima, in pixels.
    height : ndarray, shape (n,)
        The smoothed image at each maximum.

    Raises
    ------
    NoLatticeError
        Fewer than four maxima.
    """
    # single precision is plenty to locate maxima, and halves the memory
    smooth = ndimage.gaussian_filter(image.astype(np.float32), max(0.5, 0.06 * spacing))
    peaks = local_maxima(smooth, max(1, int(0.25 * spacing)))
    peaks = peaks[in_frame(peaks[:, 1], peaks[:, 0], image.shape, margin=-2)]
    if len(peaks) < 4:
        raise NoLatticeError("fewer than four intensity maxima")
    px, py = _subpixel(smooth, peaks[:, 0], peaks[:, 1])
    return np.column_stack([px, py]), smooth[peaks[:, 0], peaks[:, 1]]


def pooled_brightness(image: np.ndarray, spacing: float):
    """A function giving the image smoothed at about a column's width (0.15 spacing)
    at points (x, y), px.

    Sampled at the lattice sites of the maxima (not the maxima themselves),
    steadier than a maximum's height when counts are few (a low-dose maximum
    is mostly its noise).
    """
    smooth = ndimage.gaussian_filter(image.astype(np.float32), max(1.0, 0.15 * spacing))

    def at(points: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(smooth, [points[:, 1], points[:, 0]], order=1, mode="nearest")

    return at


def index_maxima(points: np.ndarray, height: np.ndarray, basis: np.ndarray,
                 projection: Projection | None = None, *, spacing_px: float | None = None,
                 pixel_size_pm: float | None = None, floor: float = 0.0,
                 brightness=None):
    """Step 2: index the maxima on the lattice, then keep the A lattice of the projection.

    The maxima are indexed by growing from a bright seed
    (:func:`~latticegenome.columns.lattice.index_lattice`); the A lattice is
    all of them, or the bright half of a two-fold sub-lattice (the centred
    A + B pseudo-lattice of [001], the A and B rows of [110]), whichever has
    the projection's cell shape
    (:func:`~latticegenome.columns.selfcheck.choose_a_lattice`).

    Parameters
    ----------
    points : ndarray, shape (n, 2)
        Maxima (x, y) in pixels.
    height : ndarray, shape (n,)
        Their brightness.
    basis : ndarray, shape (2, 2)
        Approximate lattice vectors in pixels.
    projection : Projection, optional
        Default: SrTiO3 [001].
    spacing_px : float, optional
        Expected short A-A spacing in pixels (prefers the candidate at that scale).
    pixel_size_pm : float, optional
        Only for the wording of a rejection.
    floor : float
        Background level of the image (brightness contrasts are above it).
    brightness : callable, optional
        Brightness at points (x, y) for telling A from B (:func:`pooled_brightness`);
        default the maxima's ``height``.

    Returns
    -------
    pos : ndarray, shape (m, 2)
        The indexed maxima (A columns).
    ij : ndarray of int, shape (m, 2)
    local : ndarray, shape (m, 2, 2)
        Local lattice vectors at each.
    basis : ndarray, shape (2, 2)
        The A basis (a1 the shorter vector where the cell is not square).
    info : dict
        The lattice figures of the self-check.

    Raises
    ------
    NoLatticeError
        Fewer than four maxima on a lattice.
    ModelMismatchError
        The lattice does not have the projection's shape.
    """
    projection = projection or perovskite_projection()
    ij, found, local = index_lattice(points, basis, weights=height)
    if found.sum() < 4:
        raise NoLatticeError("the intensity maxima do not form a lattice")
    ij, found, local, basis, info = choose_a_lattice(
        points, height, ij, found, local, basis, projection, spacing_px=spacing_px,
        pixel_size_pm=pixel_size_pm, floor=floor, brightness=brightness)
    if found.sum() < 4:
        raise NoLatticeError("fewer than four maxima on the A lattice")
    a_idx = _one_per_site(np.flatnonzero(found), ij, height)
    return points[a_idx], ij[a_idx], local[a_idx], basis, info


def _one_per_site(idx: np.ndarray, ij: np.ndarray, height: np.ndarray) -> np.ndarray:
    """The brightest of the maxima ``idx`` indexed to each lattice site.

    At low dose a noise maximum near a faint column can be indexed to the same
    site as the column's own maximum; two columns fitted at one site would be
    two columns of one cell (and one cell id twice in a series).

    Examples
    --------
    >>> _one_per_site(np.arange(3), np.array([[0, 0], [0, 0], [1, 0]]), np.array([1.0, 2.0, 1.0]))
    array([1, 2])
    """
    order = idx[np.argsort(-np.asarray(height, float)[idx], kind="stable")]
    _, first = np.unique(ij[order], axis=0, return_index=True)
    return np.sort(order[first])


def column_width(image: np.ndarray, pos: np.ndarray, spacing: float) -> tuple[float, int]:
    """Gaussian width of the columns and the fit window half-size, in pixels.

    A moment estimate (:func:`estimate_width`), then a loose pilot fit of the
    300 brightest columns; the width is the median of the pilot's.

    Returns
    -------
    sigma : float
    radius : int
        ``max(2, ceil(2.5 sigma))``.
    """
    rows, cols = image.shape
    sigma0 = estimate_width(image, pos[:, 0], pos[:, 1], spacing)
    pilot = np.argsort(-image[np.clip(np.rint(pos[:, 1]).astype(int), 0, rows - 1),
                              np.clip(np.rint(pos[:, 0]).astype(int), 0, cols - 1)])[:300]
    fit_p = refine_columns(image, pos[pilot, 0], pos[pilot, 1], sigma=sigma0,
                           radius=max(2, int(np.ceil(2.5 * sigma0))), sigma_bounds=(0.5, 3.0),
                           **_LOOSE)
    sigma0 = float(np.median(fit_p.sigma))
    return sigma0, max(2, int(np.ceil(2.5 * sigma0)))


def add_missing_sites(pos, ij, local, basis, shape, margin):
    """Step 3: lattice sites next to indexed columns that have no maximum.

    Faint columns, columns at the edge, and columns up to ``margin`` px
    outside the image, whose tails reach in (fitted, so that their light is
    not taken for background, but never reported). Rounds of
    :func:`_missing_sites` until none is added (at low dose, where many
    columns have no maximum, the lattice grows over the whole image); the
    sites added carry ``basis`` as local vectors.

    Returns
    -------
    pos : ndarray, shape (m, 2)
    ij : ndarray of int, shape (m, 2)
        The columns given, followed by the sites added.
    """
    for _ in range(2 + int(max(shape) / max(1.0, np.hypot(*basis[0])))):
        miss_ij, miss_pos = _missing_sites(pos, ij, local, shape, margin=margin)
        if len(miss_ij) == 0:
            break
        pos = np.vstack([pos, miss_pos])
        ij = np.vstack([ij, miss_ij])
        local = np.vstack([local, np.repeat(basis[None], len(miss_ij), axis=0)])
    return pos, ij


def place_outside_sites(fit: Refinement, pos: np.ndarray, ij: np.ndarray, keep: np.ndarray,
                        shape: tuple[int, int], sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Step 4b: put the A sites outside the image where the lattice inside says.

    Their light in the image must be modelled, or the columns next to the
    border take it for background and shift. They sit where the significant
    columns inside (``keep``) put them (a local affine fit over a few cells,
    :func:`~latticegenome.columns.lattice.predict_sites`, which follows drift
    and slow distortion), not where a loose fit to a few pixels of tail went,
    with the median height and background of those inside and width ``sigma``.
    ``fit`` is updated in place for them.

    Returns
    -------
    pos : ndarray, shape (n, 2)
        A copy of ``pos`` with the sites outside (predicted) moved.
    outside : ndarray of bool, shape (n,)
        Sites outside the area of the pixels.
    """
    pos = pos.copy()
    outside = ~in_frame(pos[:, 0], pos[:, 1], shape, PIXEL_AREA)
    seen = keep & ~outside  # significant columns inside
    if outside.any() and seen.sum() >= 4:
        pred = predict_sites(np.column_stack([fit.x[seen], fit.y[seen]]), ij[seen], ij[outside])
        pos[outside] = np.where(np.isfinite(pred), pred, pos[outside])
    fit.x[outside], fit.y[outside] = pos[outside, 0], pos[outside, 1]
    fit.amplitude[outside] = float(np.median(fit.amplitude[seen])) if seen.any() else 1.0
    fit.sigma[outside] = sigma
    fit.background[outside] = float(np.median(fit.background[seen])) if seen.any() else 0.0
    return pos, outside


#: A site whose loose fit's significance is below this fraction of the median of the
#: significant columns is empty (a vacancy), not a faint column.
EMPTY_SIGNIFICANCE = 0.2


def place_faint_sites(fit: Refinement, pos, ij, sig, outside, sigma: float) -> np.ndarray:
    """Step 4c: faint sites inside the image where the significant columns put them.

    A site whose loose fit is not significant (a vacancy, or a column with
    few counts) starts the joint fit at the local-affine prediction of the
    significant columns around it
    (:func:`~latticegenome.columns.lattice.predict_sites`), with their median
    height and width ``sigma``. ``fit`` is updated in place.

    Returns
    -------
    pos : ndarray, shape (n, 2)
        A copy of ``pos`` with the faint sites moved.
    """
    pos = pos.copy()
    seen = sig & ~outside
    faint = ~sig & ~outside
    if faint.any():
        pred = predict_sites(np.column_stack([fit.x[seen], fit.y[seen]]), ij[seen], ij[faint])
        pos[faint] = np.where(np.isfinite(pred), pred, pos[faint])
        fit.x[faint], fit.y[faint] = pos[faint, 0], pos[faint, 1]
        fit.amplitude[faint] = float(np.median(fit.amplitude[seen]))
        fit.sigma[faint] = sigma
        fit.background[faint] = float(np.median(fit.background[seen]))
    return pos


def refine_a(image, pos, ij, *, sigma, radius, margin, significance, species="A") -> Candidates:
    """Step 4: all A columns refined together, loosely (a start for the joint fit).

    Kept: every site up to ``margin`` px out of the image. Sites outside
    (:func:`place_outside_sites`) and faint sites inside (not significant: too
    few counts at low dose) are put where the significant columns around them
    place them (:func:`place_faint_sites`), so every cell gets its B
    candidate and the lattice is not thinned by single-column thresholds.
    Empty sites (a vacancy: significance below :data:`EMPTY_SIGNIFICANCE`
    of the median of the significant columns) are not modelled; they are
    returned apart, to be reported as undetected sites.

    Returns
    -------
    Candidates
        The A columns of the model, their lattice sites as seeds.
    Candidates
        The empty sites inside the image (at their predicted positions).

    Raises
    ------
    NoLatticeError
        Fewer than four A columns kept.
    """
    fit = refine_columns(image, pos[:, 0], pos[:, 1], sigma=sigma, radius=radius, **_LOOSE)
    sig = _significant(fit, significance)
    pos, outside = place_outside_sites(fit, pos, ij, sig, image.shape, sigma)
    if (sig & ~outside).sum() < 4:
        raise NoLatticeError("fewer than four significant A columns")
    level = fit.amplitude / fit.amplitude_err
    empty = ~sig & ~outside & ~(level >= EMPTY_SIGNIFICANCE * np.median(level[sig & ~outside]))
    pos = place_faint_sites(fit, pos, ij, sig, outside, sigma)
    keep = in_frame(fit.x, fit.y, image.shape, margin)

    def cands(m):
        return Candidates(
            x=fit.x[m], y=fit.y[m], amplitude=fit.amplitude[m], sigma=fit.sigma[m],
            background=fit.background[m], site=np.zeros(int(m.sum()), dtype=int), ij=ij[m],
            seed_x=pos[m, 0], seed_y=pos[m, 1], species=np.full(int(m.sum()), species))

    return cands(keep & ~empty), cands(empty & in_frame(pos[:, 0], pos[:, 1], image.shape, PIXEL_AREA))


def smoothed_residual(image, x, y, amplitude, sigma) -> np.ndarray:
    """Image minus the model of the given columns, smoothed at the B scale.

    Gaussian filter of width ``max(0.5, median(sigma) / 2)`` px, in single
    precision (only to seed B); the full-size temporaries are reused.
    """
    resid = render_columns(image.shape, x, y, amplitude, sigma)  # a view into its canvas
    np.subtract(image, resid, out=resid)
    return ndimage.gaussian_filter(resid, max(0.5, 0.5 * np.median(sigma)), output=np.float32)


def residual_maxima(surface: np.ndarray, seeds: np.ndarray, radius_px: float):
    """Brightest pixel of ``surface`` within ``radius_px`` of each seed.

    Parameters
    ----------
    surface : ndarray, shape (rows, cols)
    seeds : ndarray, shape (n, 2)
        (x, y) in pixels, rounded to the nearest pixel.
    radius_px : float
        Radius of the disk searched, in pixels.

    Returns
    -------
    col, row : ndarray of int, shape (n,)
        The pixel (may lie outside the image where ``found`` is False).
    found : ndarray of bool, shape (n,)
        Whether any pixel of the disk is inside the image.
    """
    rows, cols = surface.shape
    rad = max(1, int(np.ceil(radius_px)))
    off = np.arange(-rad, rad + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    disk = (ox**2 + oy**2) <= radius_px ** 2
    ox, oy = ox[disk], oy[disk]
    sx = np.rint(seeds[:, 0]).astype(np.int64)
    sy = np.rint(seeds[:, 1]).astype(np.int64)
    bx = np.empty_like(sx)
    by = np.empty_like(sy)
    best_val = np.empty(len(sx))
    for start in range(0, len(sx), 2048):  # chunks bound the memory
        sl = slice(start, start + 2048)
        qx = sx[sl, None] + ox[None]
        qy = sy[sl, None] + oy[None]
        valid = in_frame(qx, qy, surface.shape)
        val = np.where(valid, surface[np.clip(qy, 0, rows - 1), np.clip(qx, 0, cols - 1)], -np.inf)
        best = np.argmax(val, axis=1)
        r = np.arange(best.size)
        bx[sl], by[sl], best_val[sl] = qx[r, best], qy[r, best], val[r, best]
    return bx, by, np.isfinite(best_val)


def b_candidates(image, a: Candidates, basis, *, spacing, margin, b_search,
                 frac=(0.5, 0.5), species="B") -> Candidates:
    """Step 5: one B candidate per A cell, at the residual maximum near its site.

    The B site is at ``frac`` of the A cell (the cell centre in [001]; half
    way along a2 in [110]), from the local lattice vectors of the A columns
    (:func:`_cell_centres`, up to ``margin`` px outside the image); each B
    moves to the maximum of the residual of the A model within
    ``b_search * spacing`` of its site (sub-pixel), so displaced B columns
    are found where they are. Sites outside the image, or with no pixel in
    reach, keep B at the site. Height: the residual there above the median A
    background; width: the median A width.
    """
    rows, cols = image.shape
    a_pos = np.column_stack([a.x, a.y])
    cell_ij, seeds = _cell_centres(a_pos, a.ij, _local_vectors_from_fit(a_pos, a.ij, basis), frac)
    inside = in_frame(seeds[:, 0], seeds[:, 1], image.shape, margin)
    cell_ij, seeds = cell_ij[inside], seeds[inside]
    resid = smoothed_residual(image, a.x, a.y, a.amplitude, a.sigma)
    bx_i, by_i, found_max = residual_maxima(resid, seeds, b_search * spacing)
    r_i, c_i = np.clip(by_i, 0, rows - 1), np.clip(bx_i, 0, cols - 1)
    bx, by = _subpixel(resid, r_i, c_i)
    use_centre = ~in_frame(seeds[:, 0], seeds[:, 1], image.shape) | ~found_max
    bx = np.where(use_centre, seeds[:, 0], bx)
    by = np.where(use_centre, seeds[:, 1], by)
    bg = np.full(bx.size, np.median(a.background))
    hb = np.maximum(resid[r_i, c_i].astype(float) - bg, 1e-3)
    return Candidates(
        x=bx, y=by, amplitude=hb, sigma=np.full(bx.size, np.median(a.sigma)), background=bg,
        site=np.ones(bx.size, dtype=int), ij=cell_ij, seed_x=seeds[:, 0], seed_y=seeds[:, 1],
        species=np.full(bx.size, species),
    )


def o_candidates(image, a: Candidates, basis, projection: Projection, *, margin) -> Candidates:
    """Step 5b: the oxygen-only columns of the projection, at their lattice sites.

    One candidate per A cell and O position of the projection, started at the
    site with a tenth of the median A height (the fit finds the rest; those
    not significant are not reported).
    """
    a_pos = np.column_stack([a.x, a.y])
    local = _local_vectors_from_fit(a_pos, a.ij, basis)
    parts = []
    for col in projection.of_site("O"):
        ij, seeds = _cell_centres(a_pos, a.ij, local, col.frac)
        inside = in_frame(seeds[:, 0], seeds[:, 1], image.shape, margin)
        ij, seeds = ij[inside], seeds[inside]
        n = len(ij)
        parts.append(Candidates(
            x=seeds[:, 0], y=seeds[:, 1], amplitude=np.full(n, 0.1 * np.median(a.amplitude)),
            sigma=np.full(n, np.median(a.sigma)), background=np.full(n, np.median(a.background)),
            site=np.full(n, 2), ij=ij, seed_x=seeds[:, 0], seed_y=seeds[:, 1],
            species=np.full(n, col.species)))
    out = parts[0]
    for part in parts[1:]:
        out = out.join(part)
    return out


def refine_together(image: np.ndarray, cand: Candidates, radius: int, *,
                    shared_width: bool = True):
    """Step 6: A and B refined together (B tails in A windows and vice versa).

    Then, for the sublattices whose widths are one within their errors
    (:func:`shared_widths`), again with their widths held at the shared value
    (unless ``shared_width`` is False), but for columns whose own width is
    :data:`OWN_WIDTH_Z` width errors off it.
    Returns the :class:`Refinement` and the shared-width flag of each group.

    Columns whose seed is outside the image keep their start height (a few
    pixels of tail cannot tell a bright column farther out from a faint one
    nearer) and may move at most :data:`OUT_SHIFT` px: their tails in the
    image then fix their positions.
    """
    out = ~in_frame(cand.seed_x, cand.seed_y, image.shape, PIXEL_AREA)
    fit = refine_columns(image, cand.x, cand.y, sigma=cand.sigma, amplitude=cand.amplitude,
                          background=cand.background, radius=radius, groups=cand.site,
                          max_shift=np.where(out, OUT_SHIFT, float(radius)), hold_amplitude=out)
    shared = shared_widths(fit, cand.site, ~out)
    if not shared_width:
        shared[:] = False
    if shared.any():  # again, those sublattices' widths held at their shared value
        common = _group_median(fit.sigma, cand.site, ~out)[cand.site]
        # a column whose own width is clearly another (a dopant, a vacancy's neighbour)
        # keeps it: the shared width would misstate its intensity
        own = np.abs(fit.sigma - common) > OWN_WIDTH_Z * np.where(fit.sigma_err > 0,
                                                                  fit.sigma_err, np.inf)
        held = shared[cand.site] & ~own
        width = np.where(held, common, cand.sigma)
        fit = refine_columns(image, cand.x, cand.y, sigma=width, amplitude=cand.amplitude,
                             background=cand.background, radius=radius, groups=cand.site,
                             max_shift=np.where(out, OUT_SHIFT, float(radius)),
                             hold_amplitude=out, hold_sigma=held)
    return fit, shared


#: A sublattice's columns share one width when the spread of their fitted widths
#: (1.4826 MAD) is under this many times their median width error: the widths are one
#: within the noise, and a free width only lets a faint column's fit widen and wander.
SHARED_WIDTH_RATIO = 2.0
#: ... except a column whose own fitted width is this many of its width errors away from the
#: shared one: it keeps its own (its intensity would be misstated by the shared width).
OWN_WIDTH_Z = 5.0


def _group_median(values: np.ndarray, groups: np.ndarray, use: np.ndarray) -> np.ndarray:
    """The median of ``values[use]`` per group (index = group number; NaN if none)."""
    out = np.full(int(groups.max()) + 1 if groups.size else 0, np.nan)
    for g in np.unique(groups):
        sel = (groups == g) & use & np.isfinite(values)
        if sel.any():
            out[g] = np.median(values[sel])
    return out


def shared_widths(fit: Refinement, groups: np.ndarray, inside: np.ndarray,
                  ratio: float = SHARED_WIDTH_RATIO, min_columns: int = 10) -> np.ndarray:
    """Which sublattices' widths are one within their errors (a bool per group).

    A group shares one width when the robust spread of its columns' fitted
    widths (1.4826 x the median absolute deviation) is under ``ratio`` times
    their median Fisher width error: the widths differ by noise only. At low
    dose this is so; a free width then lets some columns' fits widen and
    their positions wander by more than their reported errors (on multislice
    ABF at 60 e/position, 1 % of the columns beyond 4 errors and the RMS
    1.3 times the errors; with the shared width none, and 1.02-1.07). At
    high dose, or where the sublattice holds different columns (Sr and Ba
    A sites of a superlattice), the spread exceeds the errors and each
    column keeps its own width.

    Parameters
    ----------
    fit : Refinement
        A fit with free widths (``sigma``, ``sigma_err`` in px).
    groups : ndarray of int
        The sublattice of each column.
    inside : ndarray of bool
        Columns to judge by (those inside the image).
    """
    groups = np.asarray(groups)
    out = np.zeros(int(groups.max()) + 1 if groups.size else 0, dtype=bool)
    for g in np.unique(groups):
        sel = (groups == g) & inside & np.isfinite(fit.sigma_err) & (fit.sigma_err > 0)
        if sel.sum() < min_columns:
            continue
        s = fit.sigma[sel]
        spread = 1.4826 * float(np.median(np.abs(s - np.median(s))))
        out[g] = spread < ratio * float(np.median(fit.sigma_err[sel]))
    return out


def _shared_record(fit: Refinement, cand: Candidates, shared: np.ndarray) -> dict:
    """{site: shared width in px, or None where each column has its own}."""
    names = ("A", "B", "O")
    return {names[g]: (float(np.median(fit.sigma[cand.site == g])) if shared[g] else None)
            for g in range(min(len(shared), 3)) if (cand.site == g).any()}


def select_columns(fit: Refinement, cand: Candidates, shape, *, spacing, significance,
                   b_search) -> tuple[np.ndarray, np.ndarray]:
    """Step 7: the columns to report, and which of them are detected (masks over ``cand``).

    Detected: amplitude ``significance`` standard errors above zero, inside
    the area of the pixels, not within a quarter spacing of a brighter column,
    and ended near where the lattice put it: A within ``0.25 spacing + 1`` px
    of its site, B and O within ``b_search spacing + 1`` px of theirs (else
    the fit slid onto another column, e.g. at the edge onto the tail of one
    outside the image). Reported: every detected column, and every A and B
    lattice site inside the image (a vacancy or a column too faint to be
    detected alone still has a site: cells stay complete, and the statistics
    pool what single columns cannot show).
    """
    sig = _significant(fit, significance)
    moved = np.hypot(fit.x - cand.seed_x, fit.y - cand.seed_y)
    stayed = np.where(cand.site == 0, moved <= 0.25 * spacing + 1.0, moved <= b_search * spacing + 1.0)
    unique = _not_duplicate(fit.x, fit.y, fit.amplitude, 0.25 * spacing)
    detected = sig & stayed & unique & in_frame(fit.x, fit.y, shape, PIXEL_AREA)
    site_inside = in_frame(cand.seed_x, cand.seed_y, shape, PIXEL_AREA)
    report = detected | (site_inside & (cand.site < 2))
    return report, detected


def _undetected_at_their_sites(fit: Refinement, cand: Candidates, report, detected) -> None:
    """Reported but undetected sites whose fit left the site, or went outside:
    back to the site, with unknown (NaN) errors (``fit`` changed in place)."""
    moved = np.hypot(fit.x - cand.seed_x, fit.y - cand.seed_y)
    lost = report & ~detected & ((moved > 0.5 * np.median(cand.sigma) + 1.0) | ~np.isfinite(fit.x_err))
    fit.x[lost], fit.y[lost] = cand.seed_x[lost], cand.seed_y[lost]
    fit.x_err[lost] = fit.y_err[lost] = np.nan


def find_columns(
    image: np.ndarray,
    *,
    projection: Projection | None = None,
    contrast: str = "haadf",
    fit_oxygen: bool | None = None,
    spacing_px: float | None = None,
    pixel_size_pm: float | None = None,
    expected_contrast: tuple[float, float] | None = None,
    significance: float = 5.0,
    b_search: float = 0.3,
    find_b: bool = True,
    min_cells: int = 2,
    probe_tail: str | ProbeTail = "off",
    shared_width: bool = True,
) -> Columns:
    """Find and refine all columns of a perovskite STEM image, and check the result.

    The seven steps of the module docstring, one function each, then the
    self-check (:mod:`latticegenome.columns.selfcheck`): an image that does not
    fit the configured projection or contrast is rejected with a reason,
    never labelled wrongly.

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
        The image, ideally in detector counts (any non-negative scale works;
        uncertainties are rescaled by the fit's dispersion).
    projection : Projection, optional
        The projected motif (:func:`~latticegenome.columns.projection.perovskite_projection`);
        default SrTiO3 [001].
    contrast : {"haadf", "abf"}
        Columns bright, or dark on a bright background (fitted as dips).
    fit_oxygen : bool, optional
        Also fit the oxygen-only columns and report the significant ones;
        default: for ABF, and for HAADF where the projection's O columns are
        expected at :data:`OXYGEN_VISIBLE` of the B brightness or more ([110]).
    spacing_px : float, optional
        Expected short A-A spacing in pixels (the projection's a1 over the
        pixel size). Optional: the lattice is measured from the image; the
        hint only settles ambiguous cases.
    pixel_size_pm : float, optional
        Only for the wording of a rejection (lengths in pm).
    expected_contrast : (float, float), optional
        Range of the A/B HAADF brightness ratio over the sample's materials
        (:func:`~latticegenome.columns.projection.expected_contrast`); default
        the projection's.
    significance : float
        A column is kept when amplitude / amplitude_err >= this.
    b_search : float
        Radius, as a fraction of the short A-A spacing, around each B site
        within which the B column is looked for.
    find_b : bool
        Also find the B (secondary) lattice.
    min_cells : int
        The image must hold at least this many A-A spacings in each direction.
    probe_tail : {"off", "detect", "correct"} or ProbeTail
        The probe's tail (:mod:`latticegenome.columns.probe`): ``detect``
        estimates it from the image and reports it; ``correct`` also takes
        its light out of the image and finds the columns again, iterating the
        estimate (when the tail is significant); a :class:`ProbeTail` (a
        measured probe) is taken out as given.
    shared_width : bool
        Fit a sublattice again with one width where its columns' fitted
        widths agree within their errors (:func:`shared_widths`); False:
        every column keeps its own width.

    Returns
    -------
    Columns
        ``info["check"]`` holds the self-check's figures; ``info["probe_tail"]``
        the tail (estimated, and whether it was taken out) unless ``off``.

    Raises
    ------
    NoLatticeError
        If no lattice can be found in the image.
    ModelMismatchError
        If the image does not fit the projection or the contrast.
    """
    projection = projection or perovskite_projection()
    if not isinstance(probe_tail, ProbeTail) and probe_tail not in PROBE_TAIL_MODES:
        raise ValueError(f"probe_tail {probe_tail!r}: one of {PROBE_TAIL_MODES} or a ProbeTail")
    img = oriented(image, contrast)
    if img.min() < 0:
        img = img - img.min()
    find = partial(_find_once, projection=projection, contrast=contrast, fit_oxygen=fit_oxygen,
                   spacing_px=spacing_px, pixel_size_pm=pixel_size_pm,
                   expected_contrast=expected_contrast, significance=significance,
                   b_search=b_search, find_b=find_b, min_cells=min_cells,
                   shared_width=shared_width)
    with counts_of(*_counts(image, img, contrast)):
        cols = find(img)
        if probe_tail != "off":
            cols = _with_probe_tail(img, cols, find, probe_tail, pixel_size_pm)
    return cols


def _counts(raw: np.ndarray, img: np.ndarray, contrast: str) -> tuple[float, float]:
    """The Poisson counts of the oriented image ``img`` as ``(c0, c1)``: counts = c0 + c1 img.

    HAADF: the image itself. ABF: the raw image (its dark columns have the
    fewest counts), ``M - img``, raised to be non-negative if it is not
    (a detector offset), so the fit weights each pixel by the raw model.
    """
    if contrast != "abf":
        return 0.0, 1.0
    raw = np.asarray(raw, float)
    level = float(np.max(img + raw))  # img = level - raw, up to rounding
    return level - min(float(raw.min()), 0.0), -1.0


#: The modes of ``find_columns(probe_tail=...)`` (or a :class:`ProbeTail`).
PROBE_TAIL_MODES = ("off", "detect", "correct")
#: ``probe_tail="correct"``: at most this many rounds of estimate, correct, find again.
PROBE_TAIL_ROUNDS = 4
#: ``correct`` falls back to the uncorrected fit when the estimate grows to this fraction.
RUNAWAY_FRACTION = 0.45


def _with_probe_tail(img, cols: Columns, find, probe_tail, pixel_size_pm) -> Columns:
    """Estimate the probe tail on ``img`` and, for ``correct`` or a given tail, find the
    columns again on the image less the tail's light until the estimate settles."""
    spacing = _spacing(cols.basis)

    def estimate(c: Columns, start=None) -> ProbeTail:  # on the detected columns: the
        # fits at empty sites and faint columns would only add noise to the core model
        d = c.detected
        return estimate_probe_tail(img, c.x[d], c.y[d], c.amplitude[d], c.sigma[d],
                                   spacing_px=spacing, start=start)

    given = isinstance(probe_tail, ProbeTail)
    tail = probe_tail if given else estimate(cols)
    first, applied, rounds, plain, note = tail, None, 0, cols, None
    if given or (probe_tail == "correct" and tail.asymmetric):
        for rounds in range(1, PROBE_TAIL_ROUNDS + 1):
            d = cols.detected
            cols = find(remove_probe_tail(img, cols.x[d], cols.y[d], cols.amplitude[d],
                                          cols.sigma[d], tail))
            applied = tail
            if given:
                if rounds == 2:  # the light from columns fitted on the corrected image
                    break
                continue
            tail = estimate(cols, start=tail)
            if converged(tail, applied):
                break
        if not given and max(tail.fraction, applied.fraction) >= RUNAWAY_FRACTION:
            note = (f"the tail estimate ran to {max(tail.fraction, applied.fraction):.2f} of the "
                    "intensity as its light was taken out (the columns are not Gaussian cores "
                    "with one tail): not taken out, the columns are the uncorrected fit's")
            cols, applied = plain, None
    record = {"mode": "given" if given else probe_tail, "applied": applied is not None,
              "rounds": rounds, "estimate": tail.record(pixel_size_pm)}
    if note:
        record["note"] = note
    if applied is not None:
        record["removed"] = applied.record(pixel_size_pm)
    if not given and applied is not None:
        record["first_estimate"] = first.record(pixel_size_pm)
    cols.info["probe_tail"] = record
    check = cols.info["check"]
    check["probe_tail_fraction"] = float(tail.fraction) if tail.significant else 0.0
    check["probe_tail_moment_px"] = tail.moment_px if tail.asymmetric else 0.0
    check["probe_tail_removed"] = float(applied.fraction) if applied is not None else 0.0
    return cols


def _find_once(img, *, projection, contrast, fit_oxygen, spacing_px, pixel_size_pm,
               expected_contrast, significance, b_search, find_b, min_cells,
               shared_width=True) -> Columns:
    """:func:`find_columns` on the oriented, non-negative image, without the probe tail."""
    basis, d = lattice_vectors(img, spacing_px=spacing_px, min_cells=min_cells)
    check = contrast_polarity(img, d, contrast)
    points, height = candidate_maxima(img, d)
    pos, ij, local, basis, lattice_info = index_maxima(
        points, height, basis, projection, spacing_px=spacing_px, pixel_size_pm=pixel_size_pm,
        floor=float(np.percentile(img[::4, ::4], 5)), brightness=pooled_brightness(img, d))
    check.update(lattice_info)
    d = _spacing(basis)
    sigma0, radius = column_width(img, pos, d)
    margin = float(max(radius, np.ceil(4.0 * sigma0)))  # as far as the model renders a column
    pos, ij = add_missing_sites(pos, ij, local, basis, img.shape, margin)
    cand, empty = refine_a(img, pos, ij, sigma=sigma0, radius=radius, margin=margin,
                           significance=significance, species=projection.of_site("A")[0].species)
    if find_b:
        basis, _ = fit_lattice(np.column_stack([cand.x, cand.y]), cand.ij)
        b_col = projection.of_site("B")[0]
        extra = b_candidates(img, cand, basis, spacing=d, margin=margin, b_search=b_search,
                             frac=b_col.frac, species=b_col.species)
        if _fit_oxygen(projection, contrast, fit_oxygen):
            extra = extra.join(o_candidates(img, cand, basis, projection, margin=margin))
        cand = cand.join(extra)
    fit, shared = refine_together(img, cand, radius, shared_width=shared_width)
    keep, detected = select_columns(fit, cand, img.shape, spacing=d, significance=significance,
                                    b_search=b_search)
    _undetected_at_their_sites(fit, cand, keep, detected)
    cols = _columns(fit, cand, keep, detected, empty, info={"sigma0_px": sigma0, "window_radius_px": radius,
                                           "iterations": fit.iterations,
                                           "zone_axis": list(projection.zone_axis),
                                           "contrast": contrast,
                                           "shared_width": _shared_record(fit, cand, shared)})
    check.update(_model_checks(img, cols, projection, contrast, expected_contrast))
    cols.info["check"] = check
    return cols


#: An image whose A sites hold a significant column less often than this is rejected.
MIN_DETECTED_A = 0.5

#: Fit the O columns (``fit_oxygen=None``) when their expected HAADF brightness is
#: at least this fraction of the B column's ([110]: O2 at 0.36; [001]: O at 0.15).
OXYGEN_VISIBLE = 0.2


def _fit_oxygen(projection: Projection, contrast: str, fit_oxygen: bool | None) -> bool:
    """Whether the O columns go into the model: as asked, else for ABF (O visible)
    and where HAADF shows them (:data:`OXYGEN_VISIBLE`)."""
    o_cols = projection.of_site("O")
    if not o_cols or fit_oxygen is False:
        return False
    if fit_oxygen or contrast == "abf":
        return True
    b = max(c.brightness for c in projection.of_site("B"))
    return max(c.brightness for c in o_cols) >= OXYGEN_VISIBLE * b


def _model_checks(img, cols: Columns, projection: Projection, contrast: str,
                  expected_contrast) -> dict:
    """The fitted model against the image: A/B contrast, unmodelled peaks, coverage."""
    a, b = (cols.site == "A") & cols.detected, (cols.site == "B") & cols.detected
    sites = int((cols.site == "A").sum())
    if a.sum() < MIN_DETECTED_A * sites:
        raise ModelMismatchError(
            f"only {int(a.sum())} of {sites} A sites hold a significant column: too few counts "
            f"(dose) or too much noise for the lattice to be trusted")
    lengths = np.hypot(cols.basis[:, 0], cols.basis[:, 1])
    cos = abs(cols.basis[0] @ cols.basis[1]) / (lengths[0] * lengths[1])
    out = {"dispersion": round(float(cols.dispersion), 4),  # of the fitted A lattice:
           "lattice_spacings_px": [round(float(v), 4) for v in lengths],
           "lattice_ratio": round(float(lengths.max() / lengths.min()), 4),
           "lattice_angle_deg": round(float(np.degrees(np.arccos(min(1.0, cos)))), 3)}
    if not b.any():
        return out
    expected = expected_contrast or (projection.contrast(),) * 2
    out.update(column_contrast(cols.amplitude[a], cols.amplitude[b], expected, contrast))
    d = cols.detected
    model = render_columns(img.shape, cols.x[d], cols.y[d], cols.amplitude[d], cols.sigma[d])
    resid = ndimage.gaussian_filter(img - model - np.median(cols.background),
                                    max(0.5, 0.5 * float(np.median(cols.sigma))))
    corners = _cell_corners(cols)
    modelled = [c.frac for c in projection.columns if c.site != "O" or (cols.site == "O").any()]
    b_detected = float(b.sum() / max(1, (cols.site == "B").sum()))
    out["b_detected"] = round(b_detected, 3)
    out.update(unmodelled_residual(resid, corners, projection, float(np.median(cols.amplitude[b])),
                                   modelled, b_detected))
    cell_area = abs(np.linalg.det(cols.basis))
    out["lattice_coverage"] = round(min(1.0, float(a.sum() * cell_area / img.size)), 3)
    out.update(scan_distortion(cols, a, float(lengths.min())))
    return out


def scan_distortion(cols: Columns, a: np.ndarray, spacing: float) -> dict:
    """Scan distortion seen in the lattice of one image (figures of the self-check).

    ``scan_jitter_px``: the spread, from one band of image rows to the next,
    of the mean x residual of the A columns from the fitted (affine) lattice,
    less what their errors explain: line-to-line jitter of the fast scan.
    ``scan_drift_px``: the largest x or y deviation of a quadratic trend of
    the residuals along the slow-scan (y) axis: slow-scan drift that is not
    linear (linear drift is a shear and scale of the lattice, in
    ``lattice_angle_deg`` and ``lattice_ratio``).
    """
    ij = np.column_stack([cols.i[a], cols.j[a]])
    pos = np.column_stack([cols.x[a], cols.y[a]])
    if len(pos) < 8:
        return {"scan_jitter_px": None, "scan_drift_px": None}
    resid = pos - (cols.origin + ij @ cols.basis)
    band = np.rint(pos[:, 1] / max(1.0, 0.5 * spacing)).astype(np.int64)
    keys, inv = np.unique(band, return_inverse=True)
    inv = inv.ravel()
    n = np.bincount(inv)
    mean_x = np.bincount(inv, weights=resid[:, 0]) / n
    noise = np.bincount(inv, weights=np.nan_to_num(cols.x_err[a]) ** 2) / n**2
    use = n >= 3
    jitter = float(np.sqrt(max(0.0, np.var(mean_x[use]) - np.mean(noise[use])))) if use.sum() >= 3 else None
    drift = None
    if np.ptp(pos[:, 1]) > 0:
        y = (pos[:, 1] - pos[:, 1].mean()) / np.ptp(pos[:, 1])
        trend = [np.polyval(np.polyfit(y, resid[:, k], 2), y) for k in (0, 1)]
        drift = float(max(np.ptp(t) for t in trend))
    return {"scan_jitter_px": None if jitter is None else round(jitter, 4),
            "scan_drift_px": None if drift is None else round(drift, 4)}


def _cell_corners(cols: Columns) -> np.ndarray:
    """The four A corners (00, 10, 01, 11) of every complete cell, shape (n, 4, 2), px."""
    a = cols.site == "A"
    ij = np.column_stack([cols.i[a], cols.j[a]]).astype(np.int64)
    pos = np.column_stack([cols.x[a], cols.y[a]])
    grid, lo = index_grid(ij, 1)
    steps = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    k = grid[ij[:, None, 0] + steps[None, :, 0] - lo[0], ij[:, None, 1] + steps[None, :, 1] - lo[1]]
    full = (k >= 0).all(axis=1)
    return pos[k[full]]


def _columns(fit: Refinement, cand: Candidates, keep: np.ndarray, detected: np.ndarray,
             empty: Candidates, info: dict) -> Columns:
    """The kept columns of a fit, then the empty A sites (undetected, NaN errors, at
    their sites), with the lattice fitted through the detected A."""
    a_keep = detected & (cand.site == 0)
    basis, origin = fit_lattice(np.column_stack([fit.x[a_keep], fit.y[a_keep]]), cand.ij[a_keep])
    n = len(empty)
    nan = np.full(n, np.nan)
    return Columns(
        x=np.r_[fit.x[keep], empty.x],
        y=np.r_[fit.y[keep], empty.y],
        site=np.r_[np.array(["A", "B", "O"])[cand.site[keep]], np.full(n, "A")],
        species=np.r_[cand.species[keep], empty.species].astype(str),
        x_err=np.r_[fit.x_err[keep], nan],
        y_err=np.r_[fit.y_err[keep], nan],
        amplitude=np.r_[fit.amplitude[keep], empty.amplitude],
        amplitude_err=np.r_[fit.amplitude_err[keep], nan],
        background=np.r_[fit.background[keep], empty.background],
        sigma=np.r_[fit.sigma[keep], empty.sigma],
        i=np.r_[cand.ij[keep, 0], empty.ij[:, 0]],
        j=np.r_[cand.ij[keep, 1], empty.ij[:, 1]],
        converged=np.r_[fit.converged[keep], np.zeros(n, bool)],
        detected=np.r_[detected[keep], np.zeros(n, bool)],
        significance=np.r_[(fit.amplitude / fit.amplitude_err)[keep], nan],
        basis=basis,
        origin=origin,
        dispersion=fit.dispersion,
        info=info,
    )


def _not_duplicate(x, y, amplitude, min_distance):
    """False for a column closer than ``min_distance`` to a brighter one."""
    from scipy.spatial import cKDTree

    if x.size < 2:
        return np.ones(x.size, dtype=bool)
    tree = cKDTree(np.column_stack([x, y]))
    pairs = tree.query_pairs(min_distance, output_type="ndarray")
    keep = np.ones(x.size, dtype=bool)
    if len(pairs):
        weaker = np.where(amplitude[pairs[:, 0]] < amplitude[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
        keep[weaker] = False
    return keep
