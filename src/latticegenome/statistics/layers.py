"""Superlattice layers along the stacking direction.

Cells are grouped by their lattice plane along the stacking axis (``v`` for
layers stacked along image y, ``u`` along x). The per-plane profile of lattice
parameters, A intensity, B/A ratio and displacement is split into two kinds
of layer by Otsu's threshold on its first principal component (when the
profile is bimodal at all); interfaces are where the kind changes, the period
is the mean distance between every second interface. Layers are named after
the configured materials by Z-contrast: the brighter A site is the heavier
A species (atomic numbers from pymatgen).
"""

from __future__ import annotations

import numpy as np

PROFILE_FIELDS = ("plane", "position_px", "n_cells", "a_pm", "b_pm", "intensity_A",
                  "intensity_ratio", "dx_pm", "dy_pm")

#: Columns of the layer table (``layers`` of the statistics file, layers.csv): the
#: image, its plane profile, the majority class of each plane, its layer label
#: (-1: not layered) and the material of that label.
LAYER_FIELDS = ("image", *PROFILE_FIELDS, "majority_class", "layer", "material")


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


def image_layers(name: str, cells: dict, labels: np.ndarray, *, stacking_axis: str = "y",
                 layer_names=("layer 0", "layer 1")) -> dict | None:
    """The layer rows and interfaces of one image.

    Parameters
    ----------
    name : str
        The image's name, repeated in every row.
    cells : dict of ndarray
        Its cells (:func:`latticegenome.statistics.cells.measure_cells`).
    labels : ndarray of int
        The class of each cell (-1: not classified).
    stacking_axis : {"y", "x"}
    layer_names : (str, str)
        Names of labels 0 and 1 (:func:`name_layers`).

    Returns
    -------
    dict or None
        ``rows`` (lists per :data:`LAYER_FIELDS`, one entry per plane),
        ``interfaces`` (lists ``image``, ``position_px``, ``plane``) and
        ``period_planes`` (NaN without one); None if no plane has enough cells.
        Planes are labelled only when the profile has two kinds of layer
        and an interface.
    """
    prof = plane_profile({**cells, "class": labels}, stacking_axis=stacking_axis)
    if prof["plane"].size == 0:
        return None
    seg = segment_layers(prof)
    idx = np.asarray(cells["v"] if stacking_axis == "y" else cells["u"])
    layered = seg["separation"] > 0 and len(seg["interfaces_px"])
    rows = {k: [] for k in LAYER_FIELDS}
    for j, plane in enumerate(prof["plane"]):
        cl = labels[(idx == plane) & (labels >= 0)]
        rows["majority_class"].append(int(np.bincount(cl).argmax()) if cl.size else -1)
        rows["image"].append(name)
        for fld in PROFILE_FIELDS:
            rows[fld].append(prof[fld][j])
        lab = int(seg["label"][j]) if layered else -1
        rows["layer"].append(lab)
        rows["material"].append(layer_names[lab] if lab >= 0 else "")
    interfaces = {"image": [name] * len(seg["interfaces_px"]),
                  "position_px": [float(p) for p in seg["interfaces_px"]],
                  "plane": [int(p) for p in seg["interface_planes"]]}
    return {"rows": rows, "interfaces": interfaces, "period_planes": seg["period_planes"]}


def layer_means(rows: dict, layer_names) -> dict[str, dict]:
    """Per layer (by name): a, b, d_x, d_y (pm) over its planes, weighted by their
    cells, and the number of planes; from the rows of :func:`image_layers`.

    Examples
    --------
    >>> rows = {"layer": [0, 1, 0, -1], "n_cells": [10, 10, 30, 5], "a_pm": [390.0, 400.0, 394.0, 0.0],
    ...         "b_pm": [390.0, 410.0, 394.0, 0.0], "dx_pm": [0.0, 1.0, 0.0, 0.0],
    ...         "dy_pm": [0.0, 12.0, float("nan"), 0.0]}
    >>> means = layer_means(rows, ["SrTiO3", "BaTiO3"])
    >>> means["SrTiO3"]["a_pm"], means["SrTiO3"]["dy_pm"], means["SrTiO3"]["planes"]
    (393.0, 0.0, 2)
    """
    measures = ("n_cells", "a_pm", "b_pm", "dx_pm", "dy_pm")
    out = {}
    for lab in (0, 1):
        vals = [[rows[m][j] for m in measures] for j, k in enumerate(rows["layer"]) if k == lab]
        if vals:
            v = np.asarray(vals)
            w = v[:, 0]
            out[layer_names[lab]] = {
                name: float(np.nansum(w * v[:, i]) / np.sum(w[np.isfinite(v[:, i])]))
                for i, name in enumerate(measures[1:], start=1)
            } | {"planes": int(len(v))}
    return out


def a_site_z(species: str) -> float:
    """Atomic number of an A-site species (pymatgen), the mean for a mixed site.

    Examples
    --------
    >>> a_site_z("Bi"), a_site_z("K")
    (83.0, 19.0)
    >>> round(a_site_z("La0.7Sr0.3"), 1)
    51.3
    """
    from pymatgen.core import Composition, Element

    try:
        comp = Composition(species)
    except (ValueError, KeyError, TypeError, AttributeError):
        comp = None
    if not comp or not all(isinstance(el, Element) for el in comp):
        raise ValueError(f"A-site species {species!r} is not an element symbol (such as 'Sr') "
                         "or a mixed site (such as 'La0.7Sr0.3')")
    return float(sum(el.Z * amount for el, amount in comp.items()) / comp.num_atoms)


def name_layers(materials: list[dict]) -> list[str]:
    """Names for labels 0 (dimmer A) and 1 (brighter A) from the materials.

    The A-site brightness grows with Z (about Z^1.7): of the first two
    materials, the one with the lighter A species (:func:`a_site_z`) is
    label 0. With fewer than two materials the labels are ``layer 0`` and
    ``layer 1``.

    Raises
    ------
    ValueError
        If the A species of one of the two materials is missing or not an
        element.

    Examples
    --------
    >>> name_layers([{"formula": "BiFeO3", "A": "Bi"}, {"formula": "SrTiO3", "A": "Sr"}])
    ['SrTiO3', 'BiFeO3']
    """
    if len(materials) < 2:
        return ["layer 0", "layer 1"]

    def z(material: dict) -> float:
        try:
            return a_site_z(material.get("A"))
        except ValueError as exc:
            raise ValueError(f"material {material.get('name') or material.get('formula')}: "
                             f"{exc}") from None

    mats = sorted(materials[:2], key=z)
    return [m.get("name") or m["formula"] for m in mats]
