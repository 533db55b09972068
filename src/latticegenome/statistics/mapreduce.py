"""The per-batch steps of the experiment statistics (map), run in parallel.

:func:`measure_batch` (after column finding, one job per batch): cells of
each image -> the batch's Parquet cell table and partials
(:mod:`latticegenome.statistics.partials`). It never reads another batch.

:func:`assign_batch` (after the class model of the experiment is known):
class of every cell of one batch -> its Parquet class table, the batch's
class-table sums and its layer profiles. Run again only for a batch whose
classes were assigned by another model (:mod:`latticegenome.statistics.incremental`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from latticegenome.core.fsutil import atomic_path, atomic_write
from latticegenome.core.records import write_sidecar
from latticegenome.statistics.aggregate import (
    IMAGE_FIELDS,
    _add_image_row,
    _usable_image,
    experiment_histograms,
)
from latticegenome.statistics.classes import ClassTable, descriptor_matrix
from latticegenome.statistics.layers import image_layers
from latticegenome.statistics.partials import (
    SAMPLE_SIZE,
    Partials,
    add_image,
    read_cell_table,
    write_cell_table,
    write_partials,
)

logger = logging.getLogger(__name__)


def measure_batch(column_files, cells_parquet: str | Path, partials_path: str | Path, *,
                  nominal_pm: float | None = None, reference_region_px=None,
                  materials: list[dict] | None = None, lattice_tolerance: float | None = 0.15,
                  corrections: dict | None = None, seed: int = 0,
                  sample_size: int = SAMPLE_SIZE, meta: dict | None = None,
                  provenance: dict | None = None) -> dict:
    """Measure the cells of one batch's images; write its cell table and partials.

    Parameters
    ----------
    column_files : list of path
        The batch's column files (rejected images included), in order.
    cells_parquet, partials_path : path
        The outputs: cells of the usable images (Parquet; image after
        image), partials (``.npz``: :func:`~latticegenome.statistics.partials.write_partials`).
    nominal_pm, reference_region_px, materials, lattice_tolerance, corrections
        As :func:`latticegenome.statistics.aggregate.aggregate`.
    seed, sample_size : int
        The sample keys' seed and the sample's size.
    meta : dict, optional
        Recorded in the partials (the batch, the parameters).
    provenance : dict, optional
        The provenance record, written beside both outputs (``.prov.json``)
        with each output's own name.

    Returns
    -------
    dict
        ``images`` (used), ``rejected``, ``cells``.
    """
    partials = Partials(histograms={k: (h.edges, h.counts) for k, h in
                                    experiment_histograms(nominal_pm).items()},
                        rows={k: [] for k in IMAGE_FIELDS})
    per_image = []
    for path in column_files:
        source, usable = _usable_image(
            Path(path), nominal_pm=nominal_pm, reference_region_px=reference_region_px,
            materials=materials, lattice_tolerance=lattice_tolerance, corrections=corrections)
        name = Path(source).name
        if usable is None:  # a scan pair's 90-degree frame: counted with its partner
            continue
        if isinstance(usable, str):
            for k, v in (("file", name), ("source", source), ("reason", usable)):
                partials.rejected[k].append(v)
            continue
        cols, attrs, px, cells = usable
        _add_image_row(partials.rows, name, cols, attrs, px, cells)
        add_image(partials, name, cells, seed=seed, sample_size=sample_size)
        per_image.append((name, cells))
    write_cell_table(cells_parquet, per_image)
    fingerprint = hashlib.sha256(json.dumps(
        [nominal_pm, reference_region_px, materials, lattice_tolerance, corrections, seed],
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    write_partials(partials_path, partials, {**(meta or {}), "cells_params": fingerprint})
    if provenance is not None:
        for out in (cells_parquet, partials_path):
            write_sidecar(out, {**provenance, "output": Path(out).name})
    logger.info("%d image(s) used, %d set aside, %d cells", len(per_image),
                len(partials.rejected["file"]), partials.n_cells)
    return {"images": len(per_image), "rejected": len(partials.rejected["file"]),
            "cells": partials.n_cells}


def _images_of(cells: dict):
    """(name, slice) of each image of a cell table, in stored order."""
    names = np.asarray(cells["image"], dtype=object)
    if names.size == 0:
        return []
    cut = np.flatnonzero(names[1:] != names[:-1]) + 1
    starts = np.concatenate([[0], cut])
    stops = np.concatenate([cut, [names.size]])
    return [(str(names[a]), slice(a, b)) for a, b in zip(starts, stops)]


def assign_batch(cells_parquet: str | Path, model, ids: np.ndarray, model_id: str,
                 classes_parquet: str | Path, summary_path: str | Path, *,
                 stacking_axis: str = "y", layer_names=("layer 0", "layer 1")) -> dict:
    """Classes of one batch's cells under ``model``; its class sums and layers.

    Parameters
    ----------
    cells_parquet : path
        The batch's cell table (:func:`measure_batch`).
    model : ClassModel or None
        The experiment's class model (None: every cell -1).
    ids : ndarray of int
        The stable class id of each of the model's classes (its labels
        0 .. n-1 -> ids; :func:`latticegenome.statistics.incremental.match_classes`).
    model_id : str
        Recorded with the result: an assignment by another model is stale.
    classes_parquet, summary_path : path
        Outputs: ``image, cell, class, class_probability`` (Parquet) and the
        batch's class sums, layer rows, interfaces and periods (JSON).

    Returns
    -------
    dict
        The summary written to ``summary_path``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    cells = read_cell_table(cells_parquet)
    n_ids = int(max(ids.max() + 1 if len(ids) else 0, 1))
    table = ClassTable(n_ids)
    labels_all = np.full(len(cells.get("x", [])), -1, dtype=np.int64)
    prob_all = np.full(labels_all.size, np.nan)
    layers = {"rows": {}, "interfaces": {}, "periods": []}
    for name, sl in _images_of(cells):
        one = {k: v[sl] for k, v in cells.items()}
        labels, prob = (model.assign(*descriptor_matrix(one)) if model is not None
                        else (np.full(sl.stop - sl.start, -1), np.full(sl.stop - sl.start, np.nan)))
        labels = np.where(labels >= 0, ids[np.maximum(labels, 0)], -1) if len(ids) else labels
        labels_all[sl], prob_all[sl] = labels, prob
        table.add(one, labels)
        _add_layers(layers, image_layers(name, one, labels, stacking_axis=stacking_axis,
                                         layer_names=layer_names))
    out = pa.table({"image": pa.array(cells.get("image", []), pa.string()),
                    "cell": pa.array(cells.get("cell", []), pa.int32()),
                    "class": pa.array(labels_all, pa.int64()),
                    "class_probability": pa.array(prob_all, pa.float64())})
    with atomic_path(classes_parquet) as tmp:
        pq.write_table(out, tmp, compression="zstd")
    st = Path(cells_parquet).stat()
    summary = {"model_id": model_id, "cells_stamp": f"{st.st_size}:{st.st_mtime_ns}",
               "n": table.n.tolist(), "s1": table.s1.tolist(),
               "s2": table.s2.tolist(), "finite": table.finite.tolist(), **layers}
    with atomic_write(summary_path, "w") as fh:
        json.dump(summary, fh, default=_plain)
    return summary


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value)} is not JSON")


def _add_layers(layers: dict, found: dict | None) -> None:
    if found is None:
        return
    for key in ("rows", "interfaces"):
        for name, values in found[key].items():
            layers[key].setdefault(name, []).extend(values)
    if np.isfinite(found["period_planes"]):
        layers["periods"].append(float(found["period_planes"]))


__all__ = ["assign_batch", "measure_batch"]
