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
- ``dx_pm, dy_pm``: B position minus where the four corners put the B site,
  in image axes (x to the right, y down): their mean in [001] (B at the cell
  centre), the mean of the two A columns it sits between in [110] (B half way
  along a2); in general the bilinear interpolation of the corners at the B
  site's fractions (fi, fj) of the projection. Errors propagate the column
  position errors (independent): var = var_B + sum(w_k^2 var_corner_k), with
  the bilinear weights w_k (1/16 each for [001]).
- Projections: ``a_pm`` and ``b_pm`` are pseudo-cubic lattice parameters:
  the cell's lengths times the projection's factors (1 and 1 for [001];
  sqrt 2 along [1-10] and 1 along [001] for [110], whose A cell is
  a/sqrt2 x a), so that they compare with a material's ``a_pm`` in every
  projection; strain is the physical one (F of the projected cells).
- Intensities are integrated column counts 2 pi s^2 h (image units).
- Every A and B lattice site is a column of the table, detected or not (low
  dose, vacancies): a cell is complete when its four A sites are in the
  table. ``B_detected`` says whether its B column is significant; an
  undetected B still gives its displacement (the fit's, with its larger
  error; NaN where the fit left the site), for statistics that pool cells.
- ``B_usable``: the cell's B enters classes and the displacement reference.
  It is True for a detected B, and for an undetected one the image cannot
  tell from the image's typical B column (its amplitude is not
  :data:`EMPTY_Z` standard errors below :data:`EMPTY_FRACTION` of the median B
  amplitude: a faint column at low dose); False for a site significantly
  emptier than that (a vacancy), and for an undetected one whose fit left the
  site. Selecting
  only the detected B at low dose keeps the cells whose noise happened to
  brighten their B: on a multislice PbTiO3 image at 60 e per position (B
  detected in 11-14 % of cells) their mean B/A intensity ratio is 40 % above
  the noise-free one, where all usable cells give it within 2 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latticegenome.columns.model import column_counts

#: The [001] projection: B at the cell centre, lengths as measured.
_CUBIC_001 = {"columns": [{"site": "B", "frac": [0.5, 0.5]}], "pseudocubic": [1.0, 1.0]}


def _projection_record(projection) -> dict:
    """A projection's record (:meth:`~latticegenome.columns.projection.Projection.as_record`),
    from a Projection, a record, or None ([001])."""
    if projection is None:
        return _CUBIC_001
    if hasattr(projection, "as_record"):
        return projection.as_record()
    return projection


def _b_frac(record: dict) -> tuple[float, float]:
    return next(tuple(c["frac"]) for c in record["columns"] if c["site"] == "B")

CELL_FIELDS = (
    "x", "y", "i", "j", "u", "v", "a_pm", "b_pm", "angle_deg", "area_pm2", "exx", "eyy", "exy",
    "rotation_deg", "dx_pm", "dy_pm", "dx_err_pm", "dy_err_pm", "intensity_A",
    "intensity_B", "intensity_ratio", "has_B", "B_detected", "B_usable",
)

#: The boolean fields of :data:`CELL_FIELDS` (the others are numbers).
BOOL_FIELDS = ("has_B", "B_detected", "B_usable")

#: A B site is empty (not usable) when its amplitude is ``EMPTY_Z`` standard errors
#: below ``EMPTY_FRACTION`` of the image's median B amplitude.
EMPTY_FRACTION = 0.5
EMPTY_Z = 5.0


def _grid(i, j):
    """Lookup table from lattice indices to row numbers (-1 where empty)."""
    i0, j0 = int(i.min()), int(j.min())
    grid = np.full((int(i.max()) - i0 + 3, int(j.max()) - j0 + 3), -1, dtype=np.int64)
    grid[i - i0, j - j0] = np.arange(i.size)
    return grid, i0, j0


@dataclass
class _ACells:
    """The A columns of an image and the corners of its complete cells.

    ``k00, k10, k01, k11`` index the A columns at (i, j), (i+1, j), (i, j+1),
    (i+1, j+1) of each complete cell; ``full`` marks the A columns that are
    the (i, j) corner of one; ``grid[i - i0, j - j0]`` is the A column at
    (i, j) (-1 where none).
    """

    x: np.ndarray
    y: np.ndarray
    i: np.ndarray
    j: np.ndarray
    x_err: np.ndarray
    y_err: np.ndarray
    intensity: np.ndarray
    grid: np.ndarray
    i0: int
    j0: int
    full: np.ndarray
    k00: np.ndarray
    k10: np.ndarray
    k01: np.ndarray
    k11: np.ndarray


def _a_cells(columns: dict, is_a: np.ndarray) -> _ACells:
    """The complete cells (four A corners) found through the lattice indices."""
    if is_a.sum() < 4:
        raise ValueError("fewer than four A columns: no unit cell")
    ia, ja = columns["i"][is_a].astype(np.int64), columns["j"][is_a].astype(np.int64)
    grid, i0, j0 = _grid(ia, ja)
    k00 = np.arange(ia.size)
    k10 = grid[ia - i0 + 1, ja - j0]
    k01 = grid[ia - i0, ja - j0 + 1]
    k11 = grid[ia - i0 + 1, ja - j0 + 1]
    full = (k10 >= 0) & (k01 >= 0) & (k11 >= 0)
    if not full.any():
        raise ValueError("no complete unit cell (four A corners)")
    return _ACells(
        x=columns["x"][is_a], y=columns["y"][is_a], i=ia, j=ja,
        x_err=columns["x_err"][is_a], y_err=columns["y_err"][is_a],
        intensity=column_counts(columns["amplitude"][is_a], columns["sigma"][is_a]),
        grid=grid, i0=i0, j0=j0, full=full,
        k00=k00[full], k10=k10[full], k01=k01[full], k11=k11[full])


def _cell_vectors(a: _ACells):
    """Centres (px) and the vectors along a and b (px) of each cell; whether index i is a.

    ``a`` is the index direction closest to the image x axis.
    """
    p = np.column_stack([a.x, a.y])
    p00, p10, p01, p11 = p[a.k00], p[a.k10], p[a.k01], p[a.k11]
    centre = (p00 + p10 + p01 + p11) / 4
    v_i = ((p10 - p00) + (p11 - p01)) / 2  # along index i
    v_j = ((p01 - p00) + (p11 - p10)) / 2  # along index j
    mean_i, mean_j = v_i.mean(axis=0), v_j.mean(axis=0)
    i_is_a = abs(mean_i[0]) / np.hypot(*mean_i) >= abs(mean_j[0]) / np.hypot(*mean_j)
    va, vb = (v_i, v_j) if i_is_a else (v_j, v_i)
    return centre, va, vb, i_is_a


def _strain(m: np.ndarray, reference_pm=None, reference_cells=None) -> dict[str, np.ndarray]:
    """Strain and rotation (deg) of the cells ``m`` (n, 2, 2; pm, vectors as columns)
    against the reference cell (see the module's conventions)."""
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
    return {"exx": f[:, 0, 0] - 1, "eyy": f[:, 1, 1] - 1, "exy": (f[:, 0, 1] + f[:, 1, 0]) / 2,
            "rotation_deg": np.degrees(np.arctan2(f[:, 1, 0] - f[:, 0, 1], f[:, 0, 0] + f[:, 1, 1]))}


def _b_displacement(columns: dict, is_b: np.ndarray, a: _ACells, frac: tuple[float, float],
                    pixel_size_pm: float) -> dict[str, np.ndarray]:
    """Displacement of the B column of each cell from its site (the corners'
    bilinear interpolation at ``frac``), its error (pm) and the B intensity;
    NaN for cells without a B column."""
    n = a.k00.size
    out = {k: np.full(n, np.nan) for k in ("dx_pm", "dy_pm", "dx_err_pm", "dy_err_pm", "intensity_B")}
    out["B_detected"] = np.zeros(n, dtype=bool)
    out["B_usable"] = np.zeros(n, dtype=bool)
    if not is_b.any():
        return out
    fi, fj = frac
    w = np.array([(1 - fi) * (1 - fj), fi * (1 - fj), (1 - fi) * fj, fi * fj])  # 00 10 01 11
    ks = (a.k00, a.k10, a.k01, a.k11)
    site_x = sum(wk * a.x[k] for wk, k in zip(w, ks))
    site_y = sum(wk * a.y[k] for wk, k in zip(w, ks))
    grid, i0, j0 = a.grid, a.i0, a.j0
    ib, jb = columns["i"][is_b].astype(np.int64), columns["j"][is_b].astype(np.int64)
    inside = (ib - i0 >= 0) & (ib - i0 < grid.shape[0]) & (jb - j0 >= 0) & (jb - j0 < grid.shape[1])
    cell_of_a = np.full(a.i.size, -1, dtype=np.int64)
    cell_of_a[np.flatnonzero(a.full)] = np.arange(n)
    owner = np.full(ib.size, -1, dtype=np.int64)
    corner = grid[np.clip(ib - i0, 0, grid.shape[0] - 1), np.clip(jb - j0, 0, grid.shape[1] - 1)]
    ok = inside & (corner >= 0)
    owner[ok] = cell_of_a[corner[ok]]
    has = owner >= 0
    c = owner[has]
    xb, yb = columns["x"][is_b][has], columns["y"][is_b][has]
    out["dx_pm"][c] = (xb - site_x[c]) * pixel_size_pm
    out["dy_pm"][c] = (yb - site_y[c]) * pixel_size_pm
    corner_var_x = sum(wk**2 * a.x_err[k] ** 2 for wk, k in zip(w, ks))
    corner_var_y = sum(wk**2 * a.y_err[k] ** 2 for wk, k in zip(w, ks))
    out["dx_err_pm"][c] = np.sqrt(columns["x_err"][is_b][has] ** 2 + corner_var_x[c]) * pixel_size_pm
    out["dy_err_pm"][c] = np.sqrt(columns["y_err"][is_b][has] ** 2 + corner_var_y[c]) * pixel_size_pm
    out["intensity_B"][c] = column_counts(columns["amplitude"][is_b][has], columns["sigma"][is_b][has])
    detected = np.asarray(columns.get("detected", np.ones(is_b.size, bool)), bool)[is_b]
    out["B_detected"][c] = detected[has]
    out["B_usable"][c] = b_usable(columns, is_b, detected)[has]
    return out


def usable_b_cells(cells: dict) -> np.ndarray:
    """The cells whose B enters classes and references: ``B_usable``, or in a
    table written before it existed ``B_detected`` (all cells if neither)."""
    for key in ("B_usable", "B_detected"):
        if key in cells:
            return np.asarray(cells[key], bool)
    return np.ones(len(cells["x"]), bool)


def b_usable(columns: dict, is_b: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Which B columns are usable: detected, or not significantly emptier than the
    image's typical B column (see the module notes; one entry per B column).

    Examples
    --------
    A vacancy at high dose (amplitude 0 +- 5) is empty; a column at 10 +- 20 is not
    told apart from the typical 100:

    >>> cols = {"amplitude": np.array([100.0, 100.0, 100.0, 10.0, 0.0]),
    ...         "amplitude_err": np.array([5.0, 5.0, 5.0, 20.0, 5.0])}
    >>> b_usable(cols, np.ones(5, bool), np.array([True, True, True, False, False]))
    array([ True,  True,  True,  True, False])
    """
    if "amplitude_err" not in columns:  # an old column file: as before
        return np.asarray(detected, bool).copy()
    amp = np.asarray(columns["amplitude"], float)[is_b]
    err = np.asarray(columns["amplitude_err"], float)[is_b]
    finite = np.isfinite(amp) & np.isfinite(err)
    if "x_err" in columns:  # NaN where the fit left the site: put back, not measured
        finite &= np.isfinite(np.asarray(columns["x_err"], float)[is_b])
    if not finite.any():
        return np.asarray(detected, bool).copy()
    typical = float(np.median(amp[finite]))
    with np.errstate(invalid="ignore"):
        empty = amp + EMPTY_Z * err < EMPTY_FRACTION * typical
    return np.asarray(detected, bool) | (finite & ~empty)


def measure_cells(
    columns: dict[str, np.ndarray],
    pixel_size_pm: float,
    *,
    reference_pm: tuple[float, float] | None = None,
    reference_cells: np.ndarray | None = None,
    projection=None,
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
    projection : Projection or dict, optional
        The projection the columns were found in (the ``projection`` record
        of a column file's ``info``); default [001]. Sets the B site in the
        cell and the pseudo-cubic factors of ``a_pm``, ``b_pm``; a
        ``reference_pm`` is pseudo-cubic too.

    Returns
    -------
    dict of ndarray
        Keys :data:`CELL_FIELDS`; one entry per cell.

    Raises
    ------
    ValueError
        If there are no A columns or no complete cell.
    """
    record = _projection_record(projection)
    site = np.asarray(columns["site"]).astype(str)
    a = _a_cells(columns, site == "A")
    centre, va, vb, i_is_a = _cell_vectors(a)
    cross = va[:, 0] * vb[:, 1] - va[:, 1] * vb[:, 0]
    m = np.stack([va, vb], axis=2) * pixel_size_pm  # (n, 2, 2), vectors as columns
    f_i, f_j = (float(v) for v in record["pseudocubic"])
    f_a, f_b = (f_i, f_j) if i_is_a else (f_j, f_i)
    if reference_pm is not None:  # pseudo-cubic -> lengths of the projected cell
        reference_pm = (reference_pm[0] / f_a, reference_pm[1] / f_b)
    b = _b_displacement(columns, site == "B", a, _b_frac(record), pixel_size_pm)
    intensity_a = (a.intensity[a.k00] + a.intensity[a.k10] + a.intensity[a.k01]
                   + a.intensity[a.k11]) / 4
    i00, j00 = a.i[a.k00], a.j[a.k00]
    return {
        "x": centre[:, 0], "y": centre[:, 1], "i": i00, "j": j00,
        # lattice indices along a (closest to image x) and along b
        "u": i00 if i_is_a else j00, "v": j00 if i_is_a else i00,
        "a_pm": np.hypot(va[:, 0], va[:, 1]) * pixel_size_pm * f_a,
        "b_pm": np.hypot(vb[:, 0], vb[:, 1]) * pixel_size_pm * f_b,
        "angle_deg": np.degrees(np.arctan2(np.abs(cross), np.einsum("nd,nd->n", va, vb))),
        "area_pm2": np.abs(cross) * pixel_size_pm**2,
        **_strain(m, reference_pm, reference_cells),
        "dx_pm": b["dx_pm"], "dy_pm": b["dy_pm"], "dx_err_pm": b["dx_err_pm"],
        "dy_err_pm": b["dy_err_pm"], "intensity_A": intensity_a, "intensity_B": b["intensity_B"],
        "intensity_ratio": b["intensity_B"] / intensity_a, "has_B": np.isfinite(b["dx_pm"]),
        "B_detected": b["B_detected"], "B_usable": b["B_usable"],
    }
