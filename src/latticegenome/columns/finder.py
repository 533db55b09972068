"""Find and refine the A-site (primary) and B-site (secondary) columns.

Pipeline, every step vectorised and linear in the number of columns:

1. lattice vectors from the autocorrelation of the image
   (:func:`latticegenome.columns.lattice.estimate_lattice`);
2. local maxima of the lightly smoothed image, indexed on the lattice by
   growing from a bright seed (:func:`latticegenome.columns.lattice.index_lattice`);
   if the maxima alternate in brightness like a checkerboard, the grown
   lattice was the centred A+B pseudo-lattice and the brighter half is A;
3. lattice sites next to indexed A columns that have no maximum (edge
   columns, faint columns) are added as candidates, out to the reach of a
   column's tail beyond the image border;
4. all A columns are refined together by Poisson maximum likelihood;
5. one B candidate per A cell (four corners, or fewer at the image edge),
   moved to the maximum of the residual image within ``b_search`` of the
   cell centre, so displaced B columns are found where they are;
6. A and B refined together (B tails in A windows and vice versa); sites
   outside the image stay in the model (their tails shine in), placed by a
   local affine fit of the inside lattice, with their neighbours' height,
   and are fitted on their tails only;
7. a column is kept when its amplitude is ``significance`` standard errors
   above zero (vacancies and empty sites drop out here).

Positions are pixels: x = column index, y = row index, origin at the centre
of pixel [0, 0].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from latticegenome.columns.lattice import (
    estimate_lattice,
    fit_lattice,
    index_grid,
    index_lattice,
    predict_sites,
    reduce_basis,
)
from latticegenome.columns.model import render_columns
from latticegenome.columns.refine import refine_columns
from latticegenome.core.errors import NoLatticeError

#: Tolerances of the preliminary fits (a start for the joint fit, not a result).
_LOOSE = {"tol_px": 1e-2, "tol_decrement": 1e-2, "max_iter": 6, "max_sweeps": 1}

#: How far (px) a column outside the image may move from its lattice site.
OUT_SHIFT = 2.0

#: Columns of the output table, in order.
FIELDS = (
    "x", "y", "site", "x_err", "y_err", "amplitude", "amplitude_err",
    "background", "sigma", "i", "j", "converged",
)


@dataclass
class Columns:
    """Refined columns of one image; arrays have one entry per column.

    Attributes
    ----------
    x, y, x_err, y_err, sigma : ndarray
        Position, its standard error and Gaussian width, in pixels.
    site : ndarray of str
        ``"A"`` or ``"B"``.
    amplitude, amplitude_err, background : ndarray
        Peak height, its standard error and local background (image units/px).
    i, j : ndarray of int
        Lattice indices: of the column for A, of the cell's lower corner
        (the A at ``(i, j)``) for B.
    converged : ndarray of bool
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
    x_err: np.ndarray
    y_err: np.ndarray
    amplitude: np.ndarray
    amplitude_err: np.ndarray
    background: np.ndarray
    sigma: np.ndarray
    i: np.ndarray
    j: np.ndarray
    converged: np.ndarray
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
    rows, cols = image.shape
    cx = np.rint(x).astype(int)
    cy = np.rint(y).astype(int)
    ok = (cx >= r) & (cx < cols - r) & (cy >= r) & (cy < rows - r)
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


def _cell_centres(pos, ij, local):
    """B seeds: centre of every cell with at least one indexed corner.

    Each corner predicts the centre with its own local lattice vectors; the
    predictions of the corners present are averaged.
    """
    corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    cell_ij = (ij[:, None, :] - corners[None, :, :]).reshape(-1, 2)
    half = 0.5 - corners  # (4, 2): offset of the centre from each corner, in cells
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
    rows, cols = shape
    inside = (p[:, 0] >= -margin) & (p[:, 0] <= cols - 1 + margin) & (p[:, 1] >= -margin) & (
        p[:, 1] <= rows - 1 + margin
    )
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


def find_columns(
    image: np.ndarray,
    *,
    spacing_px: float | None = None,
    significance: float = 5.0,
    b_search: float = 0.3,
    find_b: bool = True,
    min_cells: int = 2,
) -> Columns:
    """Find and refine all A and B columns of a perovskite HAADF image.

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
        The image, ideally in detector counts (any non-negative scale works;
        uncertainties are rescaled by the fit's dispersion).
    spacing_px : float, optional
        Expected A-A spacing in pixels (nominal lattice parameter / pixel
        size). Optional: the lattice is measured from the image; the hint only
        settles ambiguous cases.
    significance : float
        A column is kept when amplitude / amplitude_err >= this.
    b_search : float
        Radius, as a fraction of the A-A spacing, around each cell centre
        within which the B column is looked for.
    find_b : bool
        Also find the B (secondary) lattice.
    min_cells : int
        The image must hold at least this many A-A spacings in each
        direction.

    Returns
    -------
    Columns

    Raises
    ------
    NoLatticeError
        If no lattice can be found in the image.
    """
    img = np.asarray(image, dtype=float)
    if img.min() < 0:
        img = img - img.min()
    rows, cols = img.shape
    try:
        basis0 = estimate_lattice(img, spacing_px=spacing_px)
    except ValueError as exc:
        raise NoLatticeError(str(exc)) from None
    d = float(min(np.hypot(*basis0[0]), np.hypot(*basis0[1])))
    if d * min_cells > min(rows, cols):
        raise NoLatticeError(
            f"image of {cols}x{rows} px is too small for {min_cells} unit cells of {d:.1f} px"
        )

    # Candidate maxima and lattice indexing.
    # single precision is plenty to locate maxima, and halves the memory
    smooth = ndimage.gaussian_filter(img.astype(np.float32), max(0.5, 0.06 * d))
    peaks = local_maxima(smooth, max(1, int(0.25 * d)))
    # Maxima on the border are tails of columns outside or cut by the edge,
    # not column positions; edge columns come back from the lattice below.
    peaks = peaks[(peaks[:, 0] >= 2) & (peaks[:, 0] <= rows - 3) & (peaks[:, 1] >= 2)
                  & (peaks[:, 1] <= cols - 3)]
    if len(peaks) < 4:
        raise NoLatticeError("fewer than four intensity maxima")
    px, py = _subpixel(smooth, peaks[:, 0], peaks[:, 1])
    pts = np.column_stack([px, py])
    height = smooth[peaks[:, 0], peaks[:, 1]]
    del smooth  # full-size temporaries go as soon as they are used (memory)
    ij, found, local = index_lattice(pts, basis0, weights=height)
    if found.sum() < 4:
        raise NoLatticeError("the intensity maxima do not form a lattice")
    # A centred pseudo-lattice (A and B of similar brightness) shows up as a
    # checkerboard of bright and dim maxima: keep the bright half as A.
    parity = (ij[found].sum(axis=1) % 2).astype(bool)
    hf = height[found]
    if 0.25 < parity.mean() < 0.75:
        h0, h1 = hf[~parity], hf[parity]
        se = np.sqrt(h0.var() / h0.size + h1.var() / h1.size) + 1e-12
        contrast = abs(h0.mean() - h1.mean()) / max(h0.mean(), h1.mean())
        if abs(h0.mean() - h1.mean()) > 8.0 * se and contrast > 0.05:
            bright = (h1.mean() > h0.mean())
            keep = np.flatnonzero(found)[parity == bright]
            basis0 = reduce_basis(np.array([local[keep[0], 0] + local[keep[0], 1],
                                            local[keep[0], 0] - local[keep[0], 1]]))
            d = float(min(np.hypot(*basis0[0]), np.hypot(*basis0[1])))
            sub_ij, sub_found, sub_local = index_lattice(pts[keep], basis0, weights=height[keep])
            ij = np.full_like(ij, np.iinfo(np.int64).min)
            found = np.zeros_like(found)
            local = np.full_like(local, np.nan)
            ij[keep], found[keep], local[keep] = sub_ij, sub_found, sub_local
    a_idx = np.flatnonzero(found)
    a_pos, a_ij, a_local = pts[a_idx], ij[a_idx], local[a_idx]

    # Column width: moment estimate, then a pilot fit of a few hundred columns.
    sigma0 = estimate_width(img, a_pos[:, 0], a_pos[:, 1], d)
    pilot = np.argsort(-img[np.clip(np.rint(a_pos[:, 1]).astype(int), 0, rows - 1),
                            np.clip(np.rint(a_pos[:, 0]).astype(int), 0, cols - 1)])[:300]
    fit_p = refine_columns(img, a_pos[pilot, 0], a_pos[pilot, 1], sigma=sigma0,
                           radius=max(2, int(np.ceil(2.5 * sigma0))), sigma_bounds=(0.5, 3.0),
                           **_LOOSE)
    sigma0 = float(np.median(fit_p.sigma))
    radius = max(2, int(np.ceil(2.5 * sigma0)))
    # Lattice sites with no maximum: faint columns, columns at the edge, and
    # columns up to a window radius outside the image, whose tails reach in.
    # Those outside are fitted (so their light is not taken for background)
    # but never reported.
    margin = float(max(radius, np.ceil(4.0 * sigma0)))  # as far as the model renders a column
    for _ in range(2):
        miss_ij, miss_pos = _missing_sites(a_pos, a_ij, a_local, img.shape, margin=margin)
        if len(miss_ij) == 0:
            break
        a_pos = np.vstack([a_pos, miss_pos])
        a_ij = np.vstack([a_ij, miss_ij])
        a_local = np.vstack([a_local, np.repeat(basis0[None], len(miss_ij), axis=0)])
    # A alone, loosely: a start for the joint fit and a model to find B on.
    fit_a = refine_columns(img, a_pos[:, 0], a_pos[:, 1], sigma=sigma0, radius=radius, **_LOOSE)
    keep_a = (fit_a.amplitude >= significance * fit_a.amplitude_err) & np.isfinite(fit_a.x_err)
    # Sites the lattice puts outside the image are kept whatever their fit
    # did: their light in the image must be modelled, or the columns next to
    # the border take it for background and shift. They sit where the
    # significant columns inside put them (a local affine fit over a few
    # cells, which follows drift and slow distortion), not where a loose fit
    # to a few pixels of tail went, with the typical height and width.
    outside_a = (a_pos[:, 0] < -0.5) | (a_pos[:, 0] > cols - 0.5) | (a_pos[:, 1] < -0.5) | (
        a_pos[:, 1] > rows - 0.5)
    seen = keep_a & ~outside_a  # significant columns inside
    if outside_a.any() and seen.sum() >= 4:
        pred = predict_sites(np.column_stack([fit_a.x[seen], fit_a.y[seen]]), a_ij[seen],
                             a_ij[outside_a])
        a_pos[outside_a] = np.where(np.isfinite(pred), pred, a_pos[outside_a])
    fit_a.x[outside_a], fit_a.y[outside_a] = a_pos[outside_a, 0], a_pos[outside_a, 1]
    fit_a.amplitude[outside_a] = float(np.median(fit_a.amplitude[seen])) if seen.any() else 1.0
    fit_a.sigma[outside_a] = sigma0
    fit_a.background[outside_a] = float(np.median(fit_a.background[seen])) if seen.any() else 0.0
    inside_a = (fit_a.x >= -margin) & (fit_a.x <= cols - 1 + margin) & (fit_a.y >= -margin) & (
        fit_a.y <= rows - 1 + margin)
    keep_a = (keep_a | outside_a) & inside_a
    ax, ay = fit_a.x[keep_a], fit_a.y[keep_a]
    lattice_x, lattice_y = a_pos[keep_a, 0], a_pos[keep_a, 1]  # where the lattice put them
    a_ij = a_ij[keep_a]
    a_pos = np.column_stack([ax, ay])
    if len(a_pos) < 4:
        raise NoLatticeError("fewer than four significant A columns")
    basis, origin = fit_lattice(a_pos, a_ij)

    x = ax
    y = ay
    h = fit_a.amplitude[keep_a]
    s = fit_a.sigma[keep_a]
    b = fit_a.background[keep_a]
    site = np.zeros(len(ax), dtype=int)
    col_ij = a_ij
    if find_b:
        local_fit = _local_vectors_from_fit(a_pos, a_ij, basis)
        cell_ij, seeds = _cell_centres(a_pos, a_ij, local_fit)
        inside = (seeds[:, 0] >= -margin) & (seeds[:, 0] <= cols - 1 + margin) & (
            seeds[:, 1] >= -margin) & (seeds[:, 1] <= rows - 1 + margin)
        cell_ij, seeds = cell_ij[inside], seeds[inside]
        # Residual of the A model, smoothed at the B scale (temporaries freed).
        model_a = render_columns(img.shape, ax, ay, h, s)  # a view into its canvas
        np.subtract(img, model_a, out=model_a)
        # smoothed straight into single precision (only to seed B): no copy
        resid_s = ndimage.gaussian_filter(model_a, max(0.5, 0.5 * np.median(s)), output=np.float32)
        del model_a
        rad = max(1, int(np.ceil(b_search * d)))
        off = np.arange(-rad, rad + 1)
        oy, ox = np.meshgrid(off, off, indexing="ij")
        disk = (ox**2 + oy**2) <= (b_search * d) ** 2
        ox, oy = ox[disk], oy[disk]
        sx = np.rint(seeds[:, 0]).astype(np.int64)
        sy = np.rint(seeds[:, 1]).astype(np.int64)
        bx_i = np.empty_like(sx)
        by_i = np.empty_like(sy)
        best_val = np.empty(len(sx))
        for start in range(0, len(sx), 2048):  # chunks bound the memory
            sl = slice(start, start + 2048)
            qx = sx[sl, None] + ox[None]
            qy = sy[sl, None] + oy[None]
            valid = (qx >= 0) & (qx < cols) & (qy >= 0) & (qy < rows)
            val = np.where(valid, resid_s[np.clip(qy, 0, rows - 1), np.clip(qx, 0, cols - 1)], -np.inf)
            best = np.argmax(val, axis=1)
            r = np.arange(best.size)
            bx_i[sl], by_i[sl], best_val[sl] = qx[r, best], qy[r, best], val[r, best]
        found_max = np.isfinite(best_val)
        bx, by = _subpixel(resid_s, np.clip(by_i, 0, rows - 1), np.clip(bx_i, 0, cols - 1))
        # Cells whose centre is outside the image: B stays at the centre.
        out_b = (seeds[:, 0] < 0) | (seeds[:, 0] > cols - 1) | (seeds[:, 1] < 0) | (seeds[:, 1] > rows - 1)
        use_centre = out_b | ~found_max
        bx = np.where(use_centre, seeds[:, 0], bx)
        by = np.where(use_centre, seeds[:, 1], by)
        ok = np.ones(len(seeds), dtype=bool)
        cell_ij = cell_ij[ok]
        bg_b = np.full(bx.size, np.median(b))
        hb = np.maximum(resid_s[np.clip(by_i, 0, rows - 1), np.clip(bx_i, 0, cols - 1)].astype(float) - bg_b,
                        1e-3)
        del resid_s
        x = np.r_[ax, bx]
        y = np.r_[ay, by]
        h = np.r_[h, hb]
        s = np.r_[s, np.full(bx.size, np.median(s))]
        b = np.r_[b, bg_b]
        site = np.r_[site, np.ones(bx.size, dtype=int)]
        col_ij = np.vstack([a_ij, cell_ij])
        seed_x = np.r_[lattice_x, seeds[ok, 0]]
        seed_y = np.r_[lattice_y, seeds[ok, 1]]
    else:
        seed_x, seed_y = lattice_x, lattice_y
    # All columns together. Those outside the image (which start at their
    # lattice site, A, or cell centre, B) keep their neighbours' height (a
    # few pixels of tail cannot tell a bright column farther out from a faint
    # one nearer) and may move at most OUT_SHIFT px: their tails in the image
    # then fix their positions.
    out_xy = (seed_x < -0.5) | (seed_x > cols - 0.5) | (seed_y < -0.5) | (seed_y > rows - 0.5)
    fit = refine_columns(img, x, y, sigma=s, amplitude=h, background=b, radius=radius,
                         groups=site, max_shift=np.where(out_xy, OUT_SHIFT, float(radius)),
                         hold_amplitude=out_xy)
    keep = (fit.amplitude >= significance * fit.amplitude_err) & np.isfinite(fit.x_err)
    keep &= (fit.x >= -0.5) & (fit.x <= cols - 0.5) & (fit.y >= -0.5) & (fit.y <= rows - 0.5)
    keep &= _not_duplicate(fit.x, fit.y, fit.amplitude, 0.25 * d)
    # A B column that ended farther than the search radius from its cell
    # centre is not that cell's B (e.g. the tail of a column outside the image).
    # A column must end near where the lattice put it (A) or within the search
    # radius of its cell centre (B); otherwise the fit slid onto another
    # column (e.g. at the edge, onto the tail of one outside the image).
    moved = np.hypot(fit.x - seed_x, fit.y - seed_y)
    keep &= np.where(site == 0, moved <= 0.25 * d + 1.0, moved <= b_search * d + 1.0)
    a_keep = keep & (site == 0)
    basis, origin = fit_lattice(np.column_stack([fit.x[a_keep], fit.y[a_keep]]), col_ij[a_keep])
    return Columns(
        x=fit.x[keep],
        y=fit.y[keep],
        site=np.where(site[keep] == 0, "A", "B"),
        x_err=fit.x_err[keep],
        y_err=fit.y_err[keep],
        amplitude=fit.amplitude[keep],
        amplitude_err=fit.amplitude_err[keep],
        background=fit.background[keep],
        sigma=fit.sigma[keep],
        i=col_ij[keep, 0],
        j=col_ij[keep, 1],
        converged=fit.converged[keep],
        basis=basis,
        origin=origin,
        dispersion=fit.dispersion,
        info={"sigma0_px": sigma0, "window_radius_px": radius, "iterations": fit.iterations},
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
