"""Superlattice layers along the stacking direction.

Cells are grouped by their lattice plane along the stacking axis (``v`` for
layers stacked along image y, ``u`` along x). The per-plane profile of lattice
parameters, A intensity, B/A ratio and displacement is split into two kinds
of layer by Otsu's threshold on its first principal component (when the
profile is bimodal at all); interfaces are where the kind changes, the period
is the mean distance between every second interface. Layers are named after
the configured materials by Z-contrast: the brighter A site is the heavier
A species.
"""

from __future__ import annotations

import numpy as np

PROFILE_FIELDS = ("plane", "position_px", "n_cells", "a_pm", "b_pm", "intensity_A",
                  "intensity_ratio", "dx_pm", "dy_pm")


def plane_profile(cells: dict, *, stacking_axis: str = "y", min_cells: int = 3) -> dict:
    """Mean of each cell measure per lattice plane along the stacking axis.

    Parameters
    ----------
    cells : dict of ndarray
        From :func:`latticegenome.statistics.cells.measure_cells`.
    stacking_axis : {"y", "x"}
    min_cells : int
        Planes with fewer cells are left out.

    Returns
    -------
    dict of ndarray, keys :data:`PROFILE_FIELDS`, one entry per plane, in
    order along the axis. ``position_px`` is the mean cell-centre coordinate
    along the axis.
    """
    idx = np.asarray(cells["v"] if stacking_axis == "y" else cells["u"])
    planes, inv = np.unique(idx, return_inverse=True)
    inv = inv.ravel()
    count = np.bincount(inv, minlength=planes.size)
    out = {"plane": planes, "n_cells": count}
    pos = cells["y"] if stacking_axis == "y" else cells["x"]
    for name, src in (("position_px", pos),) + tuple((f, cells[f]) for f in PROFILE_FIELDS[3:]):
        v = np.asarray(src, float)
        fin = np.isfinite(v)
        s = np.bincount(inv, weights=np.where(fin, v, 0), minlength=planes.size)
        n = np.bincount(inv, weights=fin.astype(float), minlength=planes.size)
        with np.errstate(invalid="ignore"):
            out[name] = s / n
    keep = count >= min_cells
    order = np.argsort(out["position_px"][keep])
    return {k: np.asarray(v)[keep][order] for k, v in out.items()}


def segment_layers(profile: dict, *, min_separation: float = 0.6) -> dict:
    """Split planes into two kinds of layer and find the interfaces.

    Parameters
    ----------
    profile : dict
        From :func:`plane_profile`.
    min_separation : float
        Otsu's effectiveness (between-class over total variance) below which
        the profile is one material (no interfaces).

    Returns
    -------
    dict with ``label`` (0 = dimmer A sites, 1 = brighter; per plane),
    ``interfaces_px`` (positions along the axis, half-way between the planes
    on either side), ``interface_planes`` (index of the first plane after
    each interface), ``period_planes`` and ``period_px`` (NaN if fewer than
    three interfaces), ``separation`` (Otsu's effectiveness).
    """
    from skimage.filters import threshold_otsu

    feats = np.column_stack([profile["b_pm"], profile["intensity_A"], profile["intensity_ratio"]])
    n = len(feats)
    empty = {"label": np.zeros(n, dtype=int), "interfaces_px": np.zeros(0),
             "interface_planes": np.zeros(0, dtype=int), "period_planes": np.nan,
             "period_px": np.nan, "separation": 0.0}
    ok = np.isfinite(feats).all(axis=1)
    if ok.sum() < 4:
        return empty
    f = feats[ok]
    std = f.std(axis=0)
    std[std == 0] = 1
    z = (f - f.mean(axis=0)) / std
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    pc = z @ vt[0]
    # orient: larger A intensity -> larger pc
    if np.corrcoef(pc, f[:, 1])[0, 1] < 0:
        pc = -pc
    thr = threshold_otsu(pc) if np.ptp(pc) > 0 else pc[0]
    hi = pc > thr
    between = hi.mean() * (1 - hi.mean()) * (pc[hi].mean() - pc[~hi].mean()) ** 2 if 0 < hi.mean() < 1 else 0.0
    separation = float(between / pc.var()) if pc.var() > 0 else 0.0
    if separation < min_separation:
        return {**empty, "separation": separation}
    label = np.zeros(n, dtype=int)
    label[np.flatnonzero(ok)[hi]] = 1
    # planes without all measures take the label of the previous plane
    for k in np.flatnonzero(~ok):
        label[k] = label[k - 1] if k > 0 else label[min(k + 1, n - 1)]
    change = np.flatnonzero(np.diff(label) != 0) + 1
    pos = profile["position_px"]
    interfaces = (pos[change - 1] + pos[change]) / 2
    period_planes = period_px = np.nan
    if len(change) >= 3:
        planes = profile["plane"]
        period_planes = float(np.mean(planes[change[2:]] - planes[change[:-2]]))
        period_px = float(np.mean(interfaces[2:] - interfaces[:-2]))
    return {"label": label, "interfaces_px": interfaces, "interface_planes": profile["plane"][change],
            "period_planes": period_planes, "period_px": period_px, "separation": separation}


def name_layers(materials: list[dict]) -> list[str]:
    """Names for labels 0 (dimmer A) and 1 (brighter A) from the materials.

    The A-site brightness follows Z^1.7; with fewer than two materials the
    labels are ``layer 0`` and ``layer 1``.
    """
    from latticegenome.columns.simulate import Z

    if len(materials) < 2:
        return ["layer 0", "layer 1"]
    mats = sorted(materials[:2], key=lambda m: Z.get(m.get("A", ""), 0))
    return [m.get("name") or m["formula"] for m in mats]
