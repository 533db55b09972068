"""Experiment-level statistics, streamed over per-image results.

:func:`aggregate` reads the per-image column files one at a time, measures
their cells, appends them to an HDF5 table on disk and keeps only fixed-size
running summaries in memory, so memory does not grow with the number of
images. Rejected images (unreadable, no lattice, no complete cell, lattice
parameters far from the configured materials', names refused at ingest) are
listed with their reason and left out of the statistics. Names (image files,
materials) are stored as UTF-8 strings; read them with
:func:`read_h5_strings`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latticegenome.columns.store import read_columns
from latticegenome.core.fsutil import atomic_path
from latticegenome.core.tables import write_table_csv
from latticegenome.statistics.cells import CELL_FIELDS, measure_cells

IMAGE_FIELDS = ("image", "n_A", "n_B", "n_cells", "pixel_size_pm", "a_pm", "b_pm",
                "dx_pm", "dy_pm", "intensity_ratio", "dispersion", "mean_x_err_A_pm",
                "mean_x_err_B_pm")


@dataclass
class Histogram:
    """A fixed-bin histogram that can be filled batch by batch."""

    edges: np.ndarray
    counts: np.ndarray = field(init=False)

    def __post_init__(self):
        self.counts = np.zeros(len(self.edges) - 1, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, float)
        self.counts += np.histogram(v[np.isfinite(v)], self.edges)[0]


class CellTable:
    """An extendible HDF5 table of cells (one dataset per field)."""

    def __init__(self, h5file, fields=CELL_FIELDS):
        self.group = h5file.create_group("cells")
        self.fields = list(fields) + ["image"]
        for name in self.fields:
            dtype = np.int64 if name in ("i", "j", "image") else (bool if name == "has_B" else float)
            self.group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                                      chunks=(65536,), compression="gzip", shuffle=True)
        self.n = 0

    def append(self, cells: dict, image_index: int) -> None:
        m = len(cells["x"])
        for name in self.fields:
            ds = self.group[name]
            ds.resize((self.n + m,))
            ds[self.n :] = np.full(m, image_index) if name == "image" else cells[name]
        self.n += m


def measure_image_cells(cols, pixel_size_pm, nominal_pm=None, reference_region_px=None):
    """Cells of one image, strained against a region of it or the nominal cell."""
    reference = (nominal_pm, nominal_pm) if nominal_pm else None
    if reference_region_px is None:
        return measure_cells(cols, pixel_size_pm, reference_pm=reference)
    cells = measure_cells(cols, pixel_size_pm)
    x0, y0, x1, y1 = reference_region_px
    region = (cells["x"] >= x0) & (cells["x"] <= x1) & (cells["y"] >= y0) & (cells["y"] <= y1)
    if not region.any():
        raise ValueError(f"no complete cell in the strain reference region {list(reference_region_px)}")
    return measure_cells(cols, pixel_size_pm, reference_cells=region)


def lattice_sanity(a_pm: float, b_pm: float, materials: list[dict] | None = None,
                   nominal_pm: float | None = None, tolerance: float | None = 0.15) -> str | None:
    """Why an image's lattice parameters cannot belong to the configured materials.

    A wrong pixel size scales every length of an image: twice the true pixel
    size gives a = 780 pm for SrTiO3, a strain of +100 % and a class of its
    own. Such an image is far outside the lattice parameters of every
    configured material, whereas real strain (a few %) is not.

    Parameters
    ----------
    a_pm, b_pm : float
        The image's median lattice parameters (pm) along ``a`` (closest to
        image x) and ``b``.
    materials : list of dict, optional
        The configured materials: their ``a_pm`` span the expected range
        [min a_pm, max a_pm]; named by ``name`` or ``formula``.
    nominal_pm : float, optional
        The expected lattice parameter (pm) when no material gives one.
    tolerance : float or None
        How far (a fraction of the range's ends) a or b may lie outside the
        range; None: no check.

    Returns
    -------
    str or None
        The reason to reject the image, or None when it is plausible or
        cannot be checked (no tolerance, no materials and no nominal value,
        or no measured value).

    Examples
    --------
    >>> mats = [{"formula": "SrTiO3", "a_pm": 390.5}, {"formula": "BaTiO3", "a_pm": 399.2}]
    >>> print(lattice_sanity(780.2, 781.0, mats))  # doctest: +NORMALIZE_WHITESPACE
    measured a = 780.2 pm, b = 781.0 pm; configured 390.5-399.2 pm (SrTiO3, BaTiO3):
    check the pixel size (tolerance 15 %)
    >>> print(lattice_sanity(429.6, 453.1, mats))  # 10 % strained: plausible
    None
    >>> print(lattice_sanity(195.3, 195.1, None, nominal_pm=390.5))  # doctest: +NORMALIZE_WHITESPACE
    measured a = 195.3 pm, b = 195.1 pm; configured 390.5 pm (nominal):
    check the pixel size (tolerance 15 %)
    >>> print(lattice_sanity(780.2, 781.0, mats, tolerance=None))
    None
    """
    known = [m for m in materials or [] if m.get("a_pm")]
    if known:
        expected = [float(m["a_pm"]) for m in known]
        names = ", ".join(str(m.get("name") or m["formula"]) for m in known)
    elif nominal_pm:
        expected, names = [float(nominal_pm)], "nominal"
    else:
        return None
    measured = np.array([a_pm, b_pm], float)
    if tolerance is None or not np.isfinite(measured).all():
        return None
    lo, hi = min(expected), max(expected)
    if np.all((measured >= lo * (1 - tolerance)) & (measured <= hi * (1 + tolerance))):
        return None
    span = f"{lo:.1f} pm" if lo == hi else f"{lo:.1f}-{hi:.1f} pm"
    return (f"measured a = {a_pm:.1f} pm, b = {b_pm:.1f} pm; configured {span} ({names}): "
            f"check the pixel size (tolerance {tolerance * 100:g} %)")


def _median(values) -> float:
    """Median of the finite values (NaN if none)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else np.nan


def read_h5_strings(dataset) -> np.ndarray:
    """The names in an HDF5 dataset (image files, materials) as an array of str.

    Names are UTF-8: variable-length UTF-8 strings since names may be
    non-ASCII, fixed-length bytes in older files; an empty dataset of any
    type gives an empty array.
    """
    import h5py

    if dataset.dtype.kind == "S" or h5py.check_string_dtype(dataset.dtype) is not None:
        return np.asarray(dataset.asstr("utf-8")[()], dtype=str).reshape(dataset.shape)
    if dataset.size == 0:
        return np.zeros(dataset.shape, dtype=str)
    raise TypeError(f"{dataset.name} holds {dataset.dtype}, not names")


def _write_names(group, name: str, values) -> None:
    """Names (image files, materials) as a dataset of UTF-8 strings."""
    import h5py

    group.create_dataset(name, data=np.array(list(values), dtype=h5py.string_dtype("utf-8")))


def _write_rows(f, group: str, rows: dict, text=("image", "material")) -> None:
    """One dataset per column of ``rows``; the columns in ``text`` as names."""
    g = f.create_group(group)
    for name, values in rows.items():
        if name in text:
            _write_names(g, name, values)
        else:
            g.create_dataset(name, data=np.asarray(values))


class _Rejections:
    """The rows of rejected.tsv: file name, reason, source."""

    def __init__(self, extra=(), log=print):
        self.rows = {"file": [], "source": [], "reason": []}
        for name, reason in extra:
            self.add(name, reason, source="refused at ingest")
            log(f"{name}: refused at ingest: {reason}")

    def add(self, file: str, reason: str, *, source: str) -> None:
        self.rows["file"].append(file)
        self.rows["source"].append(source)
        self.rows["reason"].append(reason)

    def __len__(self) -> int:
        return len(self.rows["file"])


def _usable_image(path, *, nominal_pm, reference_region_px, materials, lattice_tolerance, log):
    """One column file's columns and cells, or why it is set aside.

    Returns
    -------
    source : str
        The image file the columns came from.
    result : (cols, attrs, pixel_size_pm, cells) or str
        The columns, file attributes, pixel size (pm) and measured cells of a
        usable image; or the reason it is left out (rejected when its
        columns were found, no complete cell, lattice parameters far from
        the configured materials: see :func:`lattice_sanity`).
    """
    cols, attrs = read_columns(path)
    source = attrs.get("source", str(path))
    if attrs.get("status") != "ok":
        return source, attrs.get("reason", "rejected")
    px = float(attrs["pixel_size_pm"])
    try:
        cells = measure_image_cells(cols, px, nominal_pm, reference_region_px)
    except ValueError as exc:
        reason = str(exc)
    else:
        reason = lattice_sanity(_median(cells["a_pm"]), _median(cells["b_pm"]), materials,
                                nominal_pm, lattice_tolerance)
    if reason:
        log(f"{source}: set aside: {reason}")
        return source, reason
    return source, (cols, attrs, px, cells)


def _add_image_row(rows: dict, name: str, cols: dict, attrs: dict, px: float, cells: dict) -> None:
    """Append one image's line of images.tsv (medians over its cells; errors in pm)."""
    is_a = cols["site"] == "A"
    rows["image"].append(name)
    rows["n_A"].append(int(is_a.sum()))
    rows["n_B"].append(int((~is_a).sum()))
    rows["n_cells"].append(len(cells["x"]))
    rows["pixel_size_pm"].append(px)
    for field_name in ("a_pm", "b_pm", "dx_pm", "dy_pm", "intensity_ratio"):
        rows[field_name].append(_median(cells[field_name]))
    rows["dispersion"].append(float(attrs.get("dispersion", np.nan)))
    rows["mean_x_err_A_pm"].append(float(np.mean(cols["x_err"][is_a]) * px))
    rows["mean_x_err_B_pm"].append(float(np.mean(cols["x_err"][~is_a]) * px) if (~is_a).any() else np.nan)


def aggregate(
    results: list[str | Path],
    out_h5: str | Path,
    images_tsv: str | Path,
    rejected_tsv: str | Path,
    *,
    classes_csv: str | Path | None = None,
    layers_csv: str | Path | None = None,
    nominal_pm: float | None = None,
    stacking_axis: str = "y",
    materials: list[dict] | None = None,
    reference_region_px: list[float] | None = None,
    sample_size: int = 20000,
    max_classes: int = 8,
    seed: int = 0,
    lattice_tolerance: float | None = 0.15,
    extra_rejected: list[tuple[str, str]] = (),
    provenance: dict | None = None,
    log=print,
) -> dict:
    """Measure, classify and aggregate the cells of every image of an experiment.

    Two streaming passes over the per-image results, holding one image at a
    time: (1) measure cells, append them to the on-disk table, fill fixed-bin
    histograms and a uniform sample of descriptors; fit the class model on
    the sample; (2) assign every cell its class, accumulate the class table,
    and build each image's layer profile along the stacking axis.

    Parameters
    ----------
    results : list of path
        Per-image column files (HDF5), rejected ones included.
    out_h5 : path
        Written: ``cells`` (with ``image``, ``class``, ``class_probability``),
        ``images``, ``histograms``, ``classes`` (the class table; BIC per
        number of classes in its attributes), ``layers`` (per-plane profile of
        every image) and ``interfaces``; summary attributes. Image and
        material names are UTF-8 strings (:func:`read_h5_strings`).
    images_tsv, rejected_tsv : path
        Per-image summary; rejected images with their reason.
    classes_csv, layers_csv : path, optional
        CSV copies of the class table and of the layer profiles.
    nominal_pm : float, optional
        Nominal lattice parameter of the reference (first) material: centres
        the histograms and is the strain reference.
    stacking_axis : {"y", "x"}
    materials : list of dict, optional
        The experiment's materials, to name the layers.
    sample_size : int
        Cells drawn uniformly across all images to fit the class model.
    max_classes : int
        Largest number of classes compared by BIC.
    seed : int
        Seed of the sample and of the mixture fit (reproducible classes).
    lattice_tolerance : float or None
        An image whose median a or b (pm) lies further than this fraction
        outside [min, max] of the materials' ``a_pm`` (or ``nominal_pm``
        without materials) is rejected with the reason (most likely a wrong
        pixel size) and none of its cells is used; None: no check. See
        :func:`lattice_sanity`.
    extra_rejected : list of (str, str)
        Files refused before analysis (e.g. names refused at ingest) as
        (display name, reason): listed in ``rejected_tsv`` with the source
        ``refused at ingest`` and counted in ``images_rejected``.
    provenance : dict, optional
        Provenance record of the run: stored in ``out_h5`` and, with the
        output's own name, beside each CSV/TSV (``.prov.json``).
    log : callable
        Receives progress messages.
    reference_region_px : [x0, y0, x1, y1], optional
        The cells whose centres lie in this box (pixels) of each image are the
        strain reference of that image (e.g. the substrate), instead of the
        nominal lattice parameter.

    Returns
    -------
    dict
        Summary (images used and rejected, cells, classes, period, per-layer
        means).
    """
    import h5py

    from latticegenome.statistics.classes import (
        DESCRIPTORS,
        ClassTable,
        Reservoir,
        descriptor_matrix,
        fit_classes,
    )
    from latticegenome.statistics.layers import (
        PROFILE_FIELDS,
        name_layers,
        plane_profile,
        segment_layers,
    )

    centre = nominal_pm or 400.0
    hist = {
        "a_pm": Histogram(np.linspace(0.85 * centre, 1.15 * centre, 121)),
        "b_pm": Histogram(np.linspace(0.85 * centre, 1.15 * centre, 121)),
        "dx_pm": Histogram(np.linspace(-40, 40, 161)),
        "dy_pm": Histogram(np.linspace(-40, 40, 161)),
        "intensity_ratio": Histogram(np.linspace(0, 1.5, 151)),
    }
    rows = {k: [] for k in IMAGE_FIELDS}
    rejected = _Rejections(extra_rejected, log)
    names, spans = [], []
    reservoir = Reservoir(sample_size, len(DESCRIPTORS), seed=seed)
    layer_names = name_layers(materials or [])
    with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as f:
        table = CellTable(f)
        for path in results:
            source, usable = _usable_image(
                Path(path), nominal_pm=nominal_pm, reference_region_px=reference_region_px,
                materials=materials, lattice_tolerance=lattice_tolerance, log=log)
            if isinstance(usable, str):
                rejected.add(Path(source).name, usable, source=source)
                continue
            cols, attrs, px, cells = usable
            k = len(names)
            names.append(Path(source).name)
            spans.append((table.n, len(cells["x"])))
            table.append(cells, k)
            x, ok = descriptor_matrix(cells)
            reservoir.add(x[ok], k)
            for name, h in hist.items():
                h.add(cells[name])
            _add_image_row(rows, names[k], cols, attrs, px, cells)
        _write_names(f, "images", names)
        g = f.create_group("histograms")
        for name, h in hist.items():
            g.create_dataset(f"{name}/edges", data=h.edges)
            g.create_dataset(f"{name}/counts", data=h.counts)

        # Classes: fitted on a sample across images, assigned to every cell.
        model = None
        try:
            model = fit_classes(reservoir.sample, max_classes=max_classes, seed=seed)
            log(f"{model.n_classes} classes (BIC by number of classes: {model.bic})")
        except ValueError as exc:
            log(f"no classification: {exc}")
        n_classes = model.n_classes if model else 0
        labels_ds = f["cells"].create_dataset("class", shape=(table.n,), dtype=np.int64)
        prob_ds = f["cells"].create_dataset("class_probability", shape=(table.n,), dtype=float)
        class_table = ClassTable(max(n_classes, 1))
        layer_rows = {k: [] for k in ("image", *PROFILE_FIELDS, "majority_class", "layer", "material")}
        iface_rows = {"image": [], "position_px": [], "plane": []}
        periods, layer_stats = [], {0: [], 1: []}
        for k, (start, count) in enumerate(spans):
            cells = {name: f[f"cells/{name}"][start : start + count] for name in table.fields}
            if model is not None:
                labels, prob = model.assign(descriptor_matrix(cells)[0])
            else:
                labels, prob = np.full(count, -1), np.full(count, np.nan)
            labels_ds[start : start + count] = labels
            prob_ds[start : start + count] = prob
            class_table.add(cells, labels)
            prof = plane_profile({**cells, "class": labels}, stacking_axis=stacking_axis)
            if prof["plane"].size == 0:
                continue
            seg = segment_layers(prof)
            idx = np.asarray(cells["v"] if stacking_axis == "y" else cells["u"])
            for j, plane in enumerate(prof["plane"]):
                cl = labels[(idx == plane) & (labels >= 0)]
                layer_rows["majority_class"].append(int(np.bincount(cl).argmax()) if cl.size else -1)
                layer_rows["image"].append(names[k])
                for fld in PROFILE_FIELDS:
                    layer_rows[fld].append(prof[fld][j])
                lab = int(seg["label"][j]) if seg["separation"] > 0 and len(seg["interfaces_px"]) else -1
                layer_rows["layer"].append(lab)
                layer_rows["material"].append(layer_names[lab] if lab >= 0 else "")
                if lab >= 0:
                    layer_stats[lab].append([prof["n_cells"][j], prof["a_pm"][j], prof["b_pm"][j],
                                             prof["dx_pm"][j], prof["dy_pm"][j]])
            for pos, plane in zip(seg["interfaces_px"], seg["interface_planes"]):
                iface_rows["image"].append(names[k])
                iface_rows["position_px"].append(float(pos))
                iface_rows["plane"].append(int(plane))
            if np.isfinite(seg["period_planes"]):
                periods.append(seg["period_planes"])
        ctab = class_table.table() if model is not None else {}
        cg = f.create_group("classes")
        for name, arr in ctab.items():
            cg.create_dataset(name, data=arr)
        if model is not None:
            cg.attrs["bic"] = json.dumps(model.bic)
            cg.attrs["descriptors"] = json.dumps(list(DESCRIPTORS))
        _write_rows(f, "layers", layer_rows)
        _write_rows(f, "interfaces", iface_rows)
        per_layer = {}
        for lab, vals in layer_stats.items():
            if vals:
                v = np.asarray(vals)
                w = v[:, 0]
                per_layer[layer_names[lab]] = {
                    name: float(np.nansum(w * v[:, i]) / np.sum(w[np.isfinite(v[:, i])]))
                    for i, name in enumerate(("a_pm", "b_pm", "dx_pm", "dy_pm"), start=1)
                } | {"planes": int(len(v))}
        summary = {
            "images_used": len(names),
            "images_rejected": len(rejected),
            "cells": int(table.n),
            "classes": n_classes,
            "period_planes_mean": float(np.mean(periods)) if periods else None,
            "period_planes_std": float(np.std(periods)) if periods else None,
            "interfaces": len(iface_rows["position_px"]),
            "layers": per_layer,
        }
        f.attrs["summary"] = json.dumps(summary)
        if provenance is not None:
            f.attrs["provenance"] = json.dumps({**provenance, "output": Path(out_h5).name})
        f.attrs["units"] = json.dumps({"positions": "px", "lengths": "pm", "strain": "1",
                                       "angles": "deg"})
    write_table_csv(images_tsv, rows, IMAGE_FIELDS, delimiter="\t")
    write_table_csv(rejected_tsv, rejected.rows, ("file", "reason", "source"), delimiter="\t")
    if classes_csv is not None:
        write_table_csv(classes_csv, ctab if ctab else {"class": []})
    if layers_csv is not None:
        write_table_csv(layers_csv, layer_rows)
    if provenance is not None:
        from latticegenome.core.records import write_sidecar

        for table in (images_tsv, rejected_tsv, classes_csv, layers_csv):
            if table is not None:
                write_sidecar(table, {**provenance, "output": Path(table).name})
    return summary


