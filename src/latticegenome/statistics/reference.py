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
- :func:`displacement_reference`: the mean B displacement of the reference
  cells (the instrument offset) and the ratio of their scatter to their
  reported errors (the error scale);
- :func:`apply_reference`: the offset subtracted from every cell, the errors
  scaled (the Fisher-only ones kept in ``dx_err_fisher_pm``, ``dy_err_fisher_pm``).

The offset is one constant vector per image (a smooth offset field across the
image is not fitted yet). Positions in px, lengths in pm.
"""

from __future__ import annotations

import numpy as np

#: Fewest reference cells for an offset, an error scale or a calibration.
MIN_REFERENCE_CELLS = 8

#: The error scale is kept within these bounds (a reference region with real
#: structure in it must not make every error vanish or explode).
ERROR_SCALE_BOUNDS = (0.5, 10.0)


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
    if "B_detected" in cells:
        ok &= np.asarray(cells["B_detected"], bool)
    return ok


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
    a &= region_mask({"x": columns["x"], "y": columns["y"]}, region)
    if a.sum() < MIN_REFERENCE_CELLS:
        raise ValueError(f"{int(a.sum())} A columns in the calibration region: at least "
                         f"{MIN_REFERENCE_CELLS} are needed")
    ij = np.column_stack([columns["i"][a], columns["j"][a]])
    basis, _ = fit_lattice(np.column_stack([columns["x"][a], columns["y"][a]]), ij)  # rows, px
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


def displacement_reference(cells: dict, mask: np.ndarray) -> dict:
    """Instrument offset and error scale from the reference cells.

    Returns
    -------
    dict
        ``dx_pm``, ``dy_pm`` (the mean B displacement of the reference: the
        offset), ``dx_err_pm``, ``dy_err_pm`` (its standard errors, from the
        scatter), ``scatter_pm`` (x, y standard deviations), ``reported_err_pm``
        (x, y RMS of the reported errors), ``error_scale`` (scatter over
        reported error, pooled over x and y, within :data:`ERROR_SCALE_BOUNDS`),
        ``cells``.

    Raises
    ------
    ValueError
        Fewer than :data:`MIN_REFERENCE_CELLS` usable reference cells.
    """
    ok = _usable(cells, mask)
    n = int(ok.sum())
    if n < MIN_REFERENCE_CELLS:
        raise ValueError(f"{n} reference cells with a detected B: at least "
                         f"{MIN_REFERENCE_CELLS} are needed for a displacement reference")
    dx, dy = np.asarray(cells["dx_pm"])[ok], np.asarray(cells["dy_pm"])[ok]
    ex, ey = np.asarray(cells["dx_err_pm"])[ok], np.asarray(cells["dy_err_pm"])[ok]
    sx, sy = float(np.std(dx, ddof=1)), float(np.std(dy, ddof=1))
    rx, ry = float(np.sqrt(np.mean(ex**2))), float(np.sqrt(np.mean(ey**2)))
    scale = float(np.clip(np.sqrt((sx**2 + sy**2) / (rx**2 + ry**2)), *ERROR_SCALE_BOUNDS))
    return {"dx_pm": float(dx.mean()), "dy_pm": float(dy.mean()),
            "dx_err_pm": sx / np.sqrt(n), "dy_err_pm": sy / np.sqrt(n),
            "scatter_pm": [sx, sy], "reported_err_pm": [rx, ry], "error_scale": scale, "cells": n}


def apply_reference(cells: dict, ref: dict) -> dict:
    """Cells with the offset subtracted and the errors calibrated.

    ``dx_pm``, ``dy_pm`` lose the offset; ``dx_err_pm``, ``dy_err_pm`` become the
    reported errors times ``error_scale``, with the offset's own error added in
    quadrature; the Fisher-only errors stay as ``dx_err_fisher_pm``,
    ``dy_err_fisher_pm``.

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
    for axis in ("x", "y"):
        fisher = np.asarray(cells[f"d{axis}_err_pm"], float)
        out[f"d{axis}_pm"] = np.asarray(cells[f"d{axis}_pm"], float) - ref[f"d{axis}_pm"]
        out[f"d{axis}_err_fisher_pm"] = fisher
        out[f"d{axis}_err_pm"] = np.hypot(fisher * ref["error_scale"], ref[f"d{axis}_err_pm"])
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


def corrected_cells(columns: dict, pixel_size_pm: float, *, projection=None,
                    displacement_region=None, calibrate_to_pm: float | None = None,
                    calibration_region="all", reference_pm=None,
                    strain_region_px=None) -> tuple[dict, dict]:
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
    calibrate_to_pm : float, optional
        Known lattice parameter of the material in ``calibration_region``.
    calibration_region : "all" or (x0, y0, x1, y1)
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
        figures, for the results and their provenance.

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
        calib = calibration(columns, calibration_region, calibrate_to_pm, px,
                            tuple(record.get("pseudocubic", (1.0, 1.0))))
        columns, px = calibrate_columns(columns, calib), 1.0
        applied["calibration"] = {**calib, "region": calibration_region}
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
        ref = displacement_reference(cells, region_mask(cells, displacement_region))
        cells = apply_reference(cells, ref)
        where = getattr(displacement_region, "describe", displacement_region)
        applied["displacement_reference"] = {**ref, "region": where}
    return cells, applied
