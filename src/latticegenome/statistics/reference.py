"""Instrument offsets, scale calibration and honest error bars, from a reference region.

Real STEM images carry artefacts that look like science: a specimen mistilt or
probe tail shifts every B column by the same few picometres (a "polarisation"
of centrosymmetric SrTiO3), the file's pixel size is off by several per cent,
slow-scan drift makes the cell anisotropic, and the cell-to-cell scatter
exceeds the Poisson (Fisher) errors by about two. Microscopists correct them
against a reference they trust: a region of the image (the substrate), or the
whole image of a centrosymmetric material. This module does that on the cells
of one image:

- :func:`calibration`: the linear map (scale along both lattice vectors,
  shear) that makes the reference region's A lattice the nominal one of
  lattice parameter ``a_pm``; :func:`calibrate_columns` applies it to the
  columns before the cells are measured again (in pm, pixel size 1);
- :func:`displacement_reference`: the B displacement of the reference cells
  (the instrument offset: their mean, or a smooth field across the image, a
  plane or a quadratic in the cell centres, chosen or picked by BIC) and the
  ratio of their (residual) scatter to their reported errors (the error scale);
- :func:`apply_reference`: the offset field at each cell subtracted, the errors
  scaled and the field's own uncertainty there added (the Fisher-only ones kept
  in ``dx_err_fisher_pm``, ``dy_err_fisher_pm``); cells outside the reference
  cells' box are flagged, and the field is not evaluated more than
  :data:`EXTRAPOLATION_MARGIN` beyond it (clamped).

Positions in px, lengths in pm.
"""

from __future__ import annotations

import numpy as np

from latticegenome.statistics.cells import usable_b_cells

#: Fewest reference cells for an offset, an error scale or a calibration.
MIN_REFERENCE_CELLS = 8

#: The error scale is kept within these bounds (a reference region with real
#: structure in it must not make every error vanish or explode).
ERROR_SCALE_BOUNDS = (0.5, 10.0)

#: Terms of each offset field of the B displacement, one coefficient each per axis, in
#: the normalised coordinates u, v (the reference cells' box mapped onto [-1, 1]).
FIELD_TERMS = {"constant": ("1",), "plane": ("1", "u", "v"),
               "quadratic": ("1", "u", "v", "u2", "uv", "v2")}

#: The offset field is evaluated at most this fraction of the reference cells' box
#: beyond it (its half widths times 1.25): farther cells get the value at its edge.
EXTRAPOLATION_MARGIN = 0.25


def material_mask(cells: dict, material: str, materials: list[dict],
                  stacking_axis: str = "y") -> np.ndarray:
    """The cells of the layers of ``material`` (a name or formula) in one image.

    The planes along the stacking axis are split into the two kinds of layer
    (:func:`~latticegenome.statistics.layers.segment_layers`: A-site
    brightness, b, intensity ratio) and named by their A species
    (:func:`~latticegenome.statistics.layers.name_layers`). With one material,
    every cell.

    Raises
    ------
    ValueError
        The material is not one of ``materials``, or the image shows no layers.
    """
    from latticegenome.statistics.layers import name_layers, plane_profile, segment_layers

    names = [m.get("name") or m["formula"] for m in materials]
    if material not in names + [m["formula"] for m in materials]:
        raise ValueError(f"reference material {material!r} is not one of {names}")
    if len(materials) < 2:
        return np.ones(len(cells["x"]), dtype=bool)
    prof = plane_profile(cells, stacking_axis=stacking_axis)
    seg = segment_layers(prof)
    if not len(seg["interfaces_px"]):
        raise ValueError(f"no layers found in the image: the cells of {material} cannot be told")
    layer_names = name_layers(materials)
    formula_of = {m.get("name") or m["formula"]: m["formula"] for m in materials}
    want = [k for k, n in enumerate(layer_names) if material in (n, formula_of.get(n))]
    planes = prof["plane"][np.isin(seg["label"], want)]
    idx = np.asarray(cells["v"] if stacking_axis == "y" else cells["u"])
    return np.isin(idx, planes)


def region_mask(cells: dict, region_px) -> np.ndarray:
    """Cells whose centre lies in ``region_px`` = (x0, y0, x1, y1), px; ``"all"``: every
    cell; a callable: its mask of the cells (e.g. :func:`material_mask`)."""
    if callable(region_px):
        return np.asarray(region_px(cells), bool)
    if isinstance(region_px, str):
        if region_px != "all":
            raise ValueError(f"displacement reference {region_px!r}: 'all' or x0,y0,x1,y1")
        return np.ones(len(cells["x"]), dtype=bool)
    x0, y0, x1, y1 = (float(v) for v in region_px)
    x, y = np.asarray(cells["x"]), np.asarray(cells["y"])
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def _usable(cells: dict, mask: np.ndarray) -> np.ndarray:
    ok = np.asarray(mask, bool) & np.isfinite(cells["dx_pm"]) & np.isfinite(cells["dx_err_pm"])
    return ok & usable_b_cells(cells)


def calibration(columns: dict, region, a_pm: float, pixel_size_pm: float,
                pseudocubic=(1.0, 1.0)) -> dict:
    """The linear map from pixels to picometres that makes the reference region's
    A lattice the nominal one (lattice parameter ``a_pm``, right angles).

    Parameters
    ----------
    columns : dict
        Columns of one image (x, y, site, i, j, detected; px).
    region : "all" or (x0, y0, x1, y1)
        Where the reference material is, px.
    a_pm : float
        Its known (pseudo-cubic) lattice parameter.
    pixel_size_pm : float
        The file's pixel size.
    pseudocubic : (float, float)
        The projection's factors along the lattice indices i, j (``[110]``: sqrt 2, 1).

    Returns
    -------
    dict
        ``matrix_pm_per_px`` (2x2, maps image (x, y) px to pm), ``scale_i``,
        ``scale_j`` (calibrated over file lengths along the lattice vectors),
        ``shear_deg`` (the measured angle minus 90), ``pixel_size_pm`` (file),
        ``calibrated_pixel_size_pm`` (the geometric mean of the scales times it),
        ``reference_a_pm``, ``columns``.

    Raises
    ------
    ValueError
        Fewer than :data:`MIN_REFERENCE_CELLS` A columns in the region.
    """
    from latticegenome.columns.lattice import fit_lattice

    a = (np.asarray(columns["site"]) == "A") & np.asarray(columns.get(
        "detected", np.ones(len(columns["x"]), bool)), bool)
    groups = None
    if isinstance(region, np.ndarray):  # the layer of each column (-1: none): one origin each
        groups = np.asarray(region, np.int64)
        a &= groups >= 0
    else:
        a &= region_mask({"x": columns["x"], "y": columns["y"]}, region)
    if a.sum() < MIN_REFERENCE_CELLS:
        raise ValueError(f"{int(a.sum())} A columns in the calibration region: at least "
                         f"{MIN_REFERENCE_CELLS} are needed")
    ij = np.column_stack([columns["i"][a], columns["j"][a]])
    xy = np.column_stack([columns["x"][a], columns["y"][a]])
    if groups is None:
        basis, _ = fit_lattice(xy, ij)  # rows, px
    else:  # layers apart: their own origins, so the layers between them do not count
        g = np.unique(groups[a], return_inverse=True)[1]
        design = np.column_stack([ij, np.eye(g.max() + 1)[g]])
        basis = np.linalg.lstsq(design, xy, rcond=None)[0][:2]
    m = basis.T  # vectors as columns
    lengths = np.array([a_pm / pseudocubic[0], a_pm / pseudocubic[1]])  # nominal, pm
    u = m[:, 0] / np.hypot(*m[:, 0])
    w = np.array([-u[1], u[0]]) * np.sign(m[0, 0] * m[1, 1] - m[1, 0] * m[0, 1])
    nominal = np.column_stack([u * lengths[0], w * lengths[1]])
    t = nominal @ np.linalg.inv(m)
    scale = np.hypot(*(t @ m).T) / (np.hypot(*m.T) * pixel_size_pm)
    cos = m[:, 0] @ m[:, 1] / (np.hypot(*m[:, 0]) * np.hypot(*m[:, 1]))
    return {"matrix_pm_per_px": t.tolist(), "scale_i": float(scale[0]), "scale_j": float(scale[1]),
            "shear_deg": float(np.degrees(np.arccos(np.clip(cos, -1, 1))) - 90.0),
            "pixel_size_pm": float(pixel_size_pm),
            "calibrated_pixel_size_pm": float(pixel_size_pm * np.sqrt(scale.prod())),
            "reference_a_pm": float(a_pm), "columns": int(a.sum())}


def calibrate_columns(columns: dict, calib: dict) -> dict:
    """The columns in calibrated picometres (measure their cells with pixel size 1):
    positions mapped by ``matrix_pm_per_px``, errors scaled by the map's gain along x
    and along y."""
    t = np.asarray(calib["matrix_pm_per_px"], float)
    xy = t @ np.vstack([np.asarray(columns["x"], float), np.asarray(columns["y"], float)])
    out = dict(columns)
    out["x"], out["y"] = xy[0], xy[1]
    out["x_err"] = np.asarray(columns["x_err"], float) * np.hypot(*t[:, 0])
    out["y_err"] = np.asarray(columns["y_err"], float) * np.hypot(*t[:, 1])
    return out


def _min_cells(kind: str) -> int:
    """Fewest usable reference cells for an offset field of ``kind``: three per coefficient
    of one axis, and never fewer than :data:`MIN_REFERENCE_CELLS`."""
    return max(MIN_REFERENCE_CELLS, 3 * len(FIELD_TERMS[kind]))


def _design(u: np.ndarray, v: np.ndarray, kind: str) -> np.ndarray:
    """The field's terms at normalised coordinates ``u``, ``v`` (one row per cell)."""
    terms = {"1": np.ones_like(u), "u": u, "v": v, "u2": u * u, "uv": u * v, "v2": v * v}
    return np.column_stack([terms[t] for t in FIELD_TERMS[kind]])


def _frame(x: np.ndarray, y: np.ndarray) -> dict:
    """The reference cells' box (px), the conditioning of the fit (the box's centre and
    half widths, which map it onto [-1, 1]; a half width of zero is taken as 1 px) and
    the box the field is clamped to (expanded by :data:`EXTRAPOLATION_MARGIN`)."""
    lo, hi = np.array([x.min(), y.min()]), np.array([x.max(), y.max()])
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    half = np.where(half > 0, half, 1.0)
    edge = (1.0 + EXTRAPOLATION_MARGIN) * half
    return {"centre_px": centre.tolist(), "half_width_px": half.tolist(),
            "box_px": [*lo.tolist(), *hi.tolist()],
            "clamp_box_px": [*(centre - edge).tolist(), *(centre + edge).tolist()]}


def _normalised(x, y, frame: dict, clamp: bool = True):
    """Normalised coordinates (u, v) of centres in px, clamped to the box expanded by
    :data:`EXTRAPOLATION_MARGIN` when ``clamp``."""
    (cx, cy), (hx, hy) = frame["centre_px"], frame["half_width_px"]
    u, v = (np.asarray(x, float) - cx) / hx, (np.asarray(y, float) - cy) / hy
    if clamp:
        edge = 1.0 + EXTRAPOLATION_MARGIN
        u, v = np.clip(u, -edge, edge), np.clip(v, -edge, edge)
    return u, v


def _error_floor(err: np.ndarray) -> np.ndarray:
    """Reported errors with zeros raised to a thousandth of their median (weights stay finite)."""
    pos = err[err > 0]
    return np.maximum(err, 1e-3 * (np.median(pos) if pos.size else 1.0))


def _fit_axis(design: np.ndarray, d: np.ndarray, err: np.ndarray, weighted: bool) -> dict:
    """Least-squares coefficients of one axis, their covariance scaled to the residual
    scatter (reduced chi-square), the residuals and the weighted chi-square.

    Raises
    ------
    ValueError
        The reference cells do not determine every coefficient.
    """
    w = 1.0 / err**2 if weighted else np.ones_like(d)
    sw = np.sqrt(w)
    coef, _, rank, _ = np.linalg.lstsq(design * sw[:, None], d * sw, rcond=None)
    p = design.shape[1]
    if rank < p:
        raise ValueError(f"the reference cells do not span enough of the image for a field of "
                         f"{p} coefficients per axis (rank {rank})")
    resid = d - design @ coef
    chi2 = float(np.sum(w * resid**2))
    cov = np.linalg.inv(design.T @ (design * w[:, None])) * chi2 / (len(d) - p)
    return {"coef": coef, "cov": cov, "resid": resid, "chi2": chi2}


def _bic(frame: dict, x, y, d: dict, err: dict, kind: str) -> float:
    """Bayesian information criterion of a weighted fit of ``kind`` to both axes (the error
    scale unknown: n ln(chi2 / n) per axis, plus ln n per coefficient)."""
    design = _design(*_normalised(x, y, frame, clamp=False), kind)
    n = len(x)
    chi2 = [_fit_axis(design, d[a], err[a], weighted=True)["chi2"] for a in "xy"]
    return float(sum(n * np.log(max(c, 1e-300) / n) for c in chi2)
                 + 2 * design.shape[1] * np.log(n))


def _choose_field(frame: dict, x, y, d: dict, err: dict) -> tuple[str, dict]:
    """The field of lowest BIC among those the reference cells are enough for."""
    bic = {}
    for kind in FIELD_TERMS:
        if len(x) >= _min_cells(kind):
            try:
                bic[kind] = _bic(frame, x, y, d, err, kind)
            except ValueError:  # e.g. every reference cell in one row: no plane
                continue
    return min(bic, key=bic.get), bic


def displacement_reference(cells: dict, mask: np.ndarray, *, field: str = "constant") -> dict:
    """Instrument offset field and error scale from the reference cells.

    Parameters
    ----------
    cells : dict
        Cells of one image (``x``, ``y`` centres in px; ``dx_pm``, ``dy_pm``,
        ``dx_err_pm``, ``dy_err_pm``; ``B_usable``).
    mask : bool array
        The reference cells (a centrosymmetric region or material).
    field : "constant", "plane", "quadratic" or "auto"
        The offset across the image, in normalised coordinates ``u``, ``v`` (the
        reference cells' box mapped onto [-1, 1]): ``constant`` (their mean, as
        before), ``plane`` (c0 + c1 u + c2 v), ``quadratic`` (adds u², uv, v²), each
        fitted by least squares weighted by the reported errors (1/err²); ``auto``:
        the one of lowest BIC among those the cells are enough for.

    Returns
    -------
    dict
        ``dx_pm``, ``dy_pm`` (the field's mean over the reference cells: the
        offset), ``dx_err_pm``, ``dy_err_pm`` (its standard errors, from the
        scatter), ``scatter_pm`` (x, y residual standard deviations),
        ``reported_err_pm`` (x, y RMS of the reported errors), ``error_scale``
        (scatter over reported error, pooled over x and y, within
        :data:`ERROR_SCALE_BOUNDS`), ``cells``; and the field: ``field`` (its kind),
        ``field_requested``, ``terms``, ``coefficients_pm``, ``coefficient_err_pm``
        and ``covariance_pm2`` (by axis ``dx``, ``dy``; pm per unit of u, v),
        ``centre_px``, ``half_width_px`` (u = (x - centre) / half width),
        ``box_px`` (the reference cells' box), ``clamp_box_px`` (the field is
        never evaluated beyond it), ``bic`` (by kind; ``auto`` only).

    Raises
    ------
    ValueError
        Fewer usable reference cells than :data:`MIN_REFERENCE_CELLS` and three
        per coefficient of the field, or cells that do not determine it.
    """
    if field not in (*FIELD_TERMS, "auto"):
        raise ValueError(f"displacement reference field {field!r}: one of "
                         f"{', '.join(FIELD_TERMS)}, auto")
    ok = _usable(cells, mask)
    n, need = int(ok.sum()), _min_cells("constant" if field == "auto" else field)
    if n < need:
        which = (f" with a {field} offset field ({len(FIELD_TERMS[field])} coefficients per axis)"
                 if field not in ("constant", "auto") else "")
        raise ValueError(f"{n} reference cells with a usable B: at least {need} are needed for "
                         f"a displacement reference{which}")
    x, y = np.asarray(cells["x"], float)[ok], np.asarray(cells["y"], float)[ok]
    d = {a: np.asarray(cells[f"d{a}_pm"], float)[ok] for a in "xy"}
    reported = {a: np.asarray(cells[f"d{a}_err_pm"], float)[ok] for a in "xy"}
    err = {a: _error_floor(reported[a]) for a in "xy"}
    frame = _frame(x, y)
    kind, bic = (_choose_field(frame, x, y, d, err) if field == "auto" else (field, None))
    design = _design(*_normalised(x, y, frame, clamp=False), kind)
    p, mean_row = design.shape[1], design.mean(axis=0)
    out = {"cells": n, "field": kind, "field_requested": field, "terms": list(FIELD_TERMS[kind]),
           "coefficients_pm": {}, "coefficient_err_pm": {}, "covariance_pm2": {}, **frame}
    scatter = []
    for a in "xy":  # the constant is the plain mean, as before; the fields are weighted
        fit = _fit_axis(design, d[a], err[a], weighted=kind != "constant")
        scatter.append(float(np.sqrt(np.sum(fit["resid"] ** 2) / (n - p))))
        out[f"d{a}_pm"] = float(mean_row @ fit["coef"])
        out[f"d{a}_err_pm"] = float(np.sqrt(mean_row @ fit["cov"] @ mean_row))
        out["coefficients_pm"][f"d{a}"] = fit["coef"].tolist()
        out["coefficient_err_pm"][f"d{a}"] = np.sqrt(np.diag(fit["cov"])).tolist()
        out["covariance_pm2"][f"d{a}"] = fit["cov"].tolist()
    rms = [float(np.sqrt(np.mean(reported[a] ** 2))) for a in "xy"]
    out["scatter_pm"], out["reported_err_pm"] = scatter, rms
    out["error_scale"] = float(np.clip(np.sqrt(sum(s**2 for s in scatter) / sum(r**2 for r in rms)),
                                       *ERROR_SCALE_BOUNDS))
    if bic is not None:
        out["bic"] = bic
    return out


def offset_field(cells: dict, ref: dict) -> dict:
    """The reference's offset field at each cell's centre (clamped to ``clamp_box_px``).

    Returns
    -------
    dict
        ``dx_pm``, ``dy_pm`` (the field), ``dx_err_pm``, ``dy_err_pm`` (its
        evaluation uncertainty, from the coefficients' covariance),
        ``extrapolated`` (the centre lies outside the reference cells' box) and
        ``clamped`` (beyond the box expanded by :data:`EXTRAPOLATION_MARGIN`: the
        field is evaluated at the nearest point of it; a constant never is).
    """
    m = len(cells["dx_pm"])
    if "coefficients_pm" not in ref:  # a plain offset (an older record)
        out = {f"d{a}_{k}": np.full(m, float(ref[f"d{a}_{k}"]))
               for a in "xy" for k in ("pm", "err_pm")}
        return {**out, "extrapolated": np.zeros(m, bool), "clamped": np.zeros(m, bool)}
    x, y = np.asarray(cells["x"], float), np.asarray(cells["y"], float)
    (x0, y0, x1, y1), (c0, d0, c1, d1) = ref["box_px"], ref["clamp_box_px"]
    out = {"extrapolated": (x < x0) | (x > x1) | (y < y0) | (y > y1),
           "clamped": ((x < c0) | (x > c1) | (y < d0) | (y > d1)) & (ref["field"] != "constant")}
    design = _design(*_normalised(x, y, ref), ref["field"])
    for a in "xy":
        cov = np.asarray(ref["covariance_pm2"][f"d{a}"], float)
        out[f"d{a}_pm"] = design @ np.asarray(ref["coefficients_pm"][f"d{a}"], float)
        out[f"d{a}_err_pm"] = np.sqrt(np.einsum("ij,jk,ik->i", design, cov, design))
    return out


def apply_reference(cells: dict, ref: dict) -> dict:
    """Cells with the offset field subtracted and the errors calibrated.

    ``dx_pm``, ``dy_pm`` lose the offset field at their centre
    (:func:`offset_field`); ``dx_err_pm``, ``dy_err_pm`` become the reported
    errors times ``error_scale``, with the field's evaluation uncertainty there
    added in quadrature; the Fisher-only errors stay as ``dx_err_fisher_pm``,
    ``dy_err_fisher_pm``; ``offset_extrapolated``, ``offset_clamped`` flag the
    cells outside the reference cells' box, and beyond its clamp box.

    Examples
    --------
    >>> cells = {"dx_pm": np.array([3.0, 5.0]), "dy_pm": np.array([1.0, -1.0]),
    ...          "dx_err_pm": np.array([1.0, 1.0]), "dy_err_pm": np.array([1.0, 1.0])}
    >>> ref = {"dx_pm": 4.0, "dy_pm": 0.0, "dx_err_pm": 0.0, "dy_err_pm": 0.0, "error_scale": 2.0}
    >>> out = apply_reference(cells, ref)
    >>> out["dx_pm"].tolist(), out["dx_err_pm"].tolist(), out["dx_err_fisher_pm"].tolist()
    ([-1.0, 1.0], [2.0, 2.0], [1.0, 1.0])
    """
    out = dict(cells)
    field = offset_field(cells, ref)
    for axis in ("x", "y"):
        fisher = np.asarray(cells[f"d{axis}_err_pm"], float)
        out[f"d{axis}_pm"] = np.asarray(cells[f"d{axis}_pm"], float) - field[f"d{axis}_pm"]
        out[f"d{axis}_err_fisher_pm"] = fisher
        out[f"d{axis}_err_pm"] = np.hypot(fisher * ref["error_scale"], field[f"d{axis}_err_pm"])
    out["offset_extrapolated"], out["offset_clamped"] = field["extrapolated"], field["clamped"]
    return out


def parse_region(text: str | None):
    """``"all"``, ``"x0,y0,x1,y1"`` (px) or None, as the command line gives it.

    Examples
    --------
    >>> parse_region("all"), parse_region("0,0,100,50")
    ('all', (0.0, 0.0, 100.0, 50.0))
    """
    if text is None or text == "all":
        return text
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(np.isfinite(values)) or values[0] >= values[2] \
            or values[1] >= values[3]:
        raise ValueError(f"region {text!r}: 'all' or x0,y0,x1,y1 in pixels with x0 < x1, y0 < y1")
    return values


def _corner_columns(columns: dict, cells: dict, select) -> np.ndarray:
    """The layer (a run of consecutive planes ``v``) of each A column at a corner of
    the cells ``select(cells)`` picks; -1 for the other columns."""
    chosen = np.asarray(select(cells), bool)
    v = np.asarray(cells["v"])[chosen]
    planes = np.unique(v)
    layer = dict(zip(planes.tolist(), np.cumsum(np.r_[0, np.diff(planes) > 1]).tolist()))
    corners = {}
    for i, j, vv in zip(cells["i"][chosen], cells["j"][chosen], v):
        for di in (0, 1):
            for dj in (0, 1):
                corners.setdefault((int(i) + di, int(j) + dj), layer[int(vv)])
    site = np.asarray(columns["site"])
    return np.array([corners.get((int(i), int(j)), -1) if s == "A" else -1
                     for s, i, j in zip(site, columns["i"], columns["j"])], dtype=np.int64)


def corrected_cells(columns: dict, pixel_size_pm: float, *, projection=None,
                    displacement_region=None, calibrate_to_pm: float | None = None,
                    calibration_region="all", reference_pm=None,
                    strain_region_px=None,
                    displacement_field: str = "constant") -> tuple[dict, dict]:
    """Cells of one image, calibrated and referenced as asked, and what was applied.

    Parameters
    ----------
    columns : dict
    pixel_size_pm : float
        The file's pixel size.
    projection : dict, optional
        The column file's projection record.
    displacement_region : "all", (x0, y0, x1, y1), callable or None
        The centrosymmetric reference of the B displacement (px), or a function
        giving the reference cells (:func:`material_mask`).
    displacement_field : "constant", "plane", "quadratic" or "auto"
        The offset across the image (:func:`displacement_reference`).
    calibrate_to_pm : float, optional
        Known lattice parameter of the material in ``calibration_region``.
    calibration_region : "all", (x0, y0, x1, y1) or callable
        Where that material is: a box (px), or a function giving its cells
        (:func:`material_mask`; the A columns at their corners are fitted).
    reference_pm : (float, float), optional
        Nominal cell for strain (as :func:`~latticegenome.statistics.cells.measure_cells`).
    strain_region_px : (x0, y0, x1, y1), optional
        Instead, the cells in this box are the strain reference.

    Returns
    -------
    cells : dict
        With ``dx_err_fisher_pm``, ``dy_err_fisher_pm`` when referenced; cell
        centres ``x``, ``y`` in the image's pixels, calibrated or not.
    applied : dict
        ``calibration`` and ``displacement_reference`` (None where not asked): the
        figures, for the results and their provenance; the reference also has
        ``region``, ``extrapolated_fraction`` and ``clamped_fraction`` (of the
        cells: outside the reference cells' box, beyond its clamp box).

    Raises
    ------
    ValueError
        Too few reference cells, or no cell.
    """
    from latticegenome.statistics.cells import measure_cells

    record = projection or {"pseudocubic": [1.0, 1.0]}
    applied = {"calibration": None, "displacement_reference": None}
    px = float(pixel_size_pm)
    if calibrate_to_pm:
        where = calibration_region
        if callable(where):  # the layers of a material: their cells' corner A columns
            where = _corner_columns(columns, measure_cells(columns, px, projection=projection),
                                    where)
        calib = calibration(columns, where, calibrate_to_pm, px,
                            tuple(record.get("pseudocubic", (1.0, 1.0))))
        columns, px = calibrate_columns(columns, calib), 1.0
        applied["calibration"] = {**calib, "region": getattr(calibration_region, "describe",
                                                             calibration_region)}
    cells = measure_cells(columns, px, reference_pm=None if strain_region_px else reference_pm,
                          projection=projection)
    if applied["calibration"] is not None:  # centres back in pixels: regions are in pixels
        xy = np.linalg.solve(np.asarray(applied["calibration"]["matrix_pm_per_px"], float),
                             np.vstack([cells["x"], cells["y"]]))
        cells["x"], cells["y"] = xy[0], xy[1]
    if strain_region_px is not None:
        region = region_mask(cells, strain_region_px)
        if not region.any():
            raise ValueError(f"no complete cell in the strain reference region {list(strain_region_px)}")
        centres = cells["x"], cells["y"]
        cells = measure_cells(columns, px, reference_cells=region, projection=projection)
        cells["x"], cells["y"] = centres
    if displacement_region is not None:
        ref = displacement_reference(cells, region_mask(cells, displacement_region),
                                     field=displacement_field)
        cells = apply_reference(cells, ref)
        where = getattr(displacement_region, "describe", displacement_region)
        applied["displacement_reference"] = {
            **ref, "region": where,
            "extrapolated_fraction": float(np.mean(cells["offset_extrapolated"])),
            "clamped_fraction": float(np.mean(cells["offset_clamped"]))}
    return cells, applied
