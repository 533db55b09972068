"""Per-unit-cell measurements from refined A and B columns.

A cell is four A columns at lattice indices (i, j), (i+1, j), (i, j+1),
(i+1, j+1) and the B column inside it (B columns carry the indices of their
cell's (i, j) corner). Neighbours are found through the integer lattice
indices on a 2-D grid: no distance search.

Conventions
-----------
- Positions in pixels (x = column index, y = row index); lengths in pm.
- ``a`` is the cell's extent along the lattice direction closest to the
  image x axis, ``b`` along the other; ``angle_deg`` the angle between them.
  ``u`` and ``v`` are the cell's lattice indices along a and along b (for
  layers stacked along y, ``v`` counts the planes).
- Strain is the symmetric part of F - I, rotation the antisymmetric part
  (degrees, counter-clockwise in image axes), where F maps the reference cell
  onto the measured one: F = M R^-1 with M, R the 2x2 matrices of cell
  vectors as columns (x, y components).
- ``dx_pm, dy_pm``: B position minus the mean of the four corners, in image
  axes (x to the right, y down). Errors propagate the column position errors
  (independent): var = var_B + sum(var_corner) / 16.
- Intensities are integrated column counts 2 pi s^2 h (image units).
"""

from __future__ import annotations

import numpy as np

from latticegenome.columns.model import column_counts

CELL_FIELDS = (
    "x", "y", "i", "j", "u", "v", "a_pm", "b_pm", "angle_deg", "area_pm2", "exx", "eyy", "exy",
    "rotation_deg", "dx_pm", "dy_pm", "dx_err_pm", "dy_err_pm", "intensity_A",
    "intensity_B", "intensity_ratio", "has_B",
)


def _grid(i, j):
    """Lookup table from lattice indices to row numbers (-1 where empty)."""
    i0, j0 = int(i.min()), int(j.min())
    grid = np.full((int(i.max()) - i0 + 3, int(j.max()) - j0 + 3), -1, dtype=np.int64)
    grid[i - i0, j - j0] = np.arange(i.size)
    return grid, i0, j0


def measure_cells(
    columns: dict[str, np.ndarray],
    pixel_size_pm: float,
    *,
    reference_pm: tuple[float, float] | None = None,
    reference_cells: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Measure every complete unit cell.

    Parameters
    ----------
    columns : dict of ndarray
        As written by :func:`latticegenome.columns.finder.find_columns` (fields x, y,
        site, i, j, x_err, y_err, amplitude, sigma).
    pixel_size_pm : float
    reference_pm : (a, b), optional
        Reference cell lengths in pm (e.g. the nominal lattice parameter of
        the substrate), taken along the measured mean cell directions.
    reference_cells : ndarray of bool, optional
        Alternatively, the cells (in output order) whose mean defines the
        reference (a region of the image, e.g. the substrate). Default: the
        median cell of the image.

    Returns
    -------
    dict of ndarray
        Keys :data:`CELL_FIELDS`; one entry per cell.

    Raises
    ------
    ValueError
        If there are no A columns or no complete cell.
    """
    site = np.asarray(columns["site"]).astype(str)
    is_a = site == "A"
    if is_a.sum() < 4:
        raise ValueError("fewer than four A columns: no unit cell")
    xa, ya = columns["x"][is_a], columns["y"][is_a]
    ia, ja = columns["i"][is_a].astype(np.int64), columns["j"][is_a].astype(np.int64)
    ex_a, ey_a = columns["x_err"][is_a], columns["y_err"][is_a]
    inten_a = column_counts(columns["amplitude"][is_a], columns["sigma"][is_a])
    grid, i0, j0 = _grid(ia, ja)
    k00 = np.arange(ia.size)
    k10 = grid[ia - i0 + 1, ja - j0]
    k01 = grid[ia - i0, ja - j0 + 1]
    k11 = grid[ia - i0 + 1, ja - j0 + 1]
    full = (k10 >= 0) & (k01 >= 0) & (k11 >= 0)
    if not full.any():
        raise ValueError("no complete unit cell (four A corners)")
    k00, k10, k01, k11 = k00[full], k10[full], k01[full], k11[full]
    p = np.column_stack([xa, ya])
    p00, p10, p01, p11 = p[k00], p[k10], p[k01], p[k11]
    centre = (p00 + p10 + p01 + p11) / 4
    v_i = ((p10 - p00) + (p11 - p01)) / 2  # along index i
    v_j = ((p01 - p00) + (p11 - p10)) / 2  # along index j
    # Which index direction is "a" (closest to the image x axis)?
    mean_i, mean_j = v_i.mean(axis=0), v_j.mean(axis=0)
    i_is_a = abs(mean_i[0]) / np.hypot(*mean_i) >= abs(mean_j[0]) / np.hypot(*mean_j)
    va, vb = (v_i, v_j) if i_is_a else (v_j, v_i)
    a_pm = np.hypot(va[:, 0], va[:, 1]) * pixel_size_pm
    b_pm = np.hypot(vb[:, 0], vb[:, 1]) * pixel_size_pm
    cross = va[:, 0] * vb[:, 1] - va[:, 1] * vb[:, 0]
    angle = np.degrees(np.arctan2(np.abs(cross), np.einsum("nd,nd->n", va, vb)))
    area = np.abs(cross) * pixel_size_pm**2
    # Strain and rotation against the reference cell.
    m = np.stack([va, vb], axis=2) * pixel_size_pm  # (n, 2, 2), vectors as columns
    if reference_cells is not None and np.any(reference_cells):
        ref = m[np.asarray(reference_cells, bool)].mean(axis=0)
    else:
        ref = np.median(m, axis=0)
    if reference_pm is not None:
        # Nominal lengths along the reference directions, at right angles.
        ua = ref[:, 0] / np.hypot(*ref[:, 0])
        ub = np.array([-ua[1], ua[0]])
        if ub @ ref[:, 1] < 0:
            ub = -ub
        ref = np.column_stack([ua * reference_pm[0], ub * reference_pm[1]])
    f = m @ np.linalg.inv(ref)
    exx = f[:, 0, 0] - 1
    eyy = f[:, 1, 1] - 1
    exy = (f[:, 0, 1] + f[:, 1, 0]) / 2
    rotation = np.degrees(np.arctan2(f[:, 1, 0] - f[:, 0, 1], f[:, 0, 0] + f[:, 1, 1]))
    # B columns inside each cell.
    is_b = site == "B"
    n = centre.shape[0]
    dx = np.full(n, np.nan)
    dy = np.full(n, np.nan)
    dx_err = np.full(n, np.nan)
    dy_err = np.full(n, np.nan)
    inten_b = np.full(n, np.nan)
    if is_b.any():
        ib, jb = columns["i"][is_b].astype(np.int64), columns["j"][is_b].astype(np.int64)
        inside = (ib - i0 >= 0) & (ib - i0 < grid.shape[0]) & (jb - j0 >= 0) & (jb - j0 < grid.shape[1])
        cell_of_a = np.full(ia.size, -1, dtype=np.int64)
        cell_of_a[np.flatnonzero(full)] = np.arange(n)
        owner = np.full(ib.size, -1, dtype=np.int64)
        corner = grid[np.clip(ib - i0, 0, grid.shape[0] - 1), np.clip(jb - j0, 0, grid.shape[1] - 1)]
        ok = inside & (corner >= 0)
        owner[ok] = cell_of_a[corner[ok]]
        has = owner >= 0
        c = owner[has]
        xb, yb = columns["x"][is_b][has], columns["y"][is_b][has]
        dx[c] = (xb - centre[c, 0]) * pixel_size_pm
        dy[c] = (yb - centre[c, 1]) * pixel_size_pm
        corner_var_x = (ex_a[k00] ** 2 + ex_a[k10] ** 2 + ex_a[k01] ** 2 + ex_a[k11] ** 2) / 16
        corner_var_y = (ey_a[k00] ** 2 + ey_a[k10] ** 2 + ey_a[k01] ** 2 + ey_a[k11] ** 2) / 16
        dx_err[c] = np.sqrt(columns["x_err"][is_b][has] ** 2 + corner_var_x[c]) * pixel_size_pm
        dy_err[c] = np.sqrt(columns["y_err"][is_b][has] ** 2 + corner_var_y[c]) * pixel_size_pm
        inten_b[c] = column_counts(columns["amplitude"][is_b][has], columns["sigma"][is_b][has])
    intensity_a = (inten_a[k00] + inten_a[k10] + inten_a[k01] + inten_a[k11]) / 4
    return {
        "x": centre[:, 0], "y": centre[:, 1], "i": ia[k00], "j": ja[k00],
        # lattice indices along a (closest to image x) and along b
        "u": ia[k00] if i_is_a else ja[k00], "v": ja[k00] if i_is_a else ia[k00],
        "a_pm": a_pm, "b_pm": b_pm, "angle_deg": angle, "area_pm2": area,
        "exx": exx, "eyy": eyy, "exy": exy, "rotation_deg": rotation,
        "dx_pm": dx, "dy_pm": dy, "dx_err_pm": dx_err, "dy_err_pm": dy_err,
        "intensity_A": intensity_a, "intensity_B": inten_b,
        "intensity_ratio": inten_b / intensity_a, "has_B": np.isfinite(dx),
    }
