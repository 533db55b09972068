"""An experiment's statistics from the column batches of the workflow.

:func:`reduce_experiment` is the ``statistics`` rule: it merges the batches'
partials written by :func:`~latticegenome.statistics.mapreduce.measure_batch`,
so each new image costs only its own batch (one serial pass over column files
without the workflow: :func:`~latticegenome.statistics.aggregate.aggregate`, the
same results). :func:`experiment_columns` finds the column file of every raw
image (the figures rule).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from latticegenome.columns.batch import batch_is_whole, output_name
from latticegenome.core.errors import LatticeGenomeError
from latticegenome.ingest.manifest import read_refused
from latticegenome.statistics.aggregate import (
    IMAGE_FIELDS,
    LayerRows,
    MeasuredImages,
    _Rejections,
    centrosymmetric_warnings,
    plausibility_warnings,
    write_tables,
)
from latticegenome.statistics.layers import LAYER_FIELDS, layer_means, name_layers

logger = logging.getLogger(__name__)


def experiment_columns(batch_folders, raw_images, *, experiment: str = "") -> list[str]:
    """The column file of every raw image, in the order of ``raw_images``.

    Parameters
    ----------
    batch_folders : list of path
        The experiment's batch folders (each whole: its marker written).
    raw_images : list of path
        The raw images, in manifest order.
    experiment : str
        Its name, for the message.

    Raises
    ------
    LatticeGenomeError
        If a batch folder is not whole, or an image has no column file.
    """
    for folder in batch_folders:
        if (why := batch_is_whole(folder, ())) is not None:
            raise LatticeGenomeError(f"{why}; remove that folder and run the workflow again")
    found = {p.name: str(p) for folder in batch_folders for p in Path(folder).glob("*.h5")}
    missing = [r for r in raw_images if output_name(r) not in found]
    if missing:
        raise LatticeGenomeError(f"no columns file for {len(missing)} image(s), e.g. {missing[0]}; "
                                 f"rerun find_columns for {experiment}")
    return [found[output_name(r)] for r in raw_images]


#: The class settings of :func:`reduce_experiment` (``classes:`` of the configuration).
CLASS_DEFAULTS = {"max_classes": 8, "seed": 0, "refit_growth": 2.0}


def _measured(merged) -> MeasuredImages:
    """The merged partials as the rows and histograms the table writers take."""
    from latticegenome.statistics.aggregate import Histogram

    hist = {}
    for name, (edges, counts) in merged.histograms.items():
        hist[name] = Histogram(np.asarray(edges))
        hist[name].counts = np.asarray(counts, np.int64)
    m = MeasuredImages(hist, None, names=[n for n, _ in merged.images])
    m.rows = {k: list(merged.rows.get(k, [])) for k in IMAGE_FIELDS}
    return m


def _merge_layers(summaries):
    rows = {k: [] for k in LAYER_FIELDS}
    interfaces = {"image": [], "position_px": [], "plane": []}
    periods = []
    for s in summaries:
        for target, part in ((rows, s["rows"]), (interfaces, s["interfaces"])):
            for name, values in part.items():
                target[name].extend(values)
        periods.extend(s["periods"])
    return rows, interfaces, periods


def reduce_experiment(batches: list[dict], refused_tsv, out_h5, images_tsv, rejected_tsv, *,
                      classes_csv, layers_csv, experiment: str, materials: list[dict],
                      stacking_axis: str = "y", corrections: dict | None = None,
                      classes: dict | None = None, provenance: dict | None = None,
                      workers: int = 1) -> dict:
    """The experiment's statistics from its batches' partials (the reduce step).

    Parameters
    ----------
    batches : list of dict
        Per batch, in order: ``name`` (its number, ``00000``), ``partials``
        (``.npz``), ``cells`` (Parquet), and where its classes go:
        ``classes`` (Parquet) and ``summary`` (JSON).
    refused_tsv : path
        Files refused at ingest (listed in ``rejected_tsv``).
    out_h5, images_tsv, rejected_tsv, classes_csv, layers_csv : path
        Outputs (layout of ``out_h5``: :mod:`latticegenome.statistics.results`,
        format 2: no cell table inside, the batches' Parquet files named).
    classes : dict, optional
        ``max_classes``, ``seed``, ``refit_growth`` (:data:`CLASS_DEFAULTS`).
    workers : int
        Processes assigning stale batches side by side.

    Returns
    -------
    dict
        The summary (as :func:`~latticegenome.statistics.aggregate.aggregate`),
        plus ``class_model`` (its id, whether it was refitted now, the
        batches assigned now).
    """
    from latticegenome.statistics.incremental import (
        assign_stale,
        class_table_of,
        merge_batches,
        update_state,
    )
    from latticegenome.statistics.results import write_summary_file

    opts = {**CLASS_DEFAULTS, **(classes or {})}
    merged, image_batch = merge_batches([b["partials"] for b in batches])
    folder = Path(out_h5).parent / "classes"
    state = update_state(folder, merged.sample.rows, merged.classifiable,
                         settings={"max_classes": int(opts["max_classes"]),
                                   "seed": int(opts["seed"]),
                                   "cells": merged.params},  # cells measured otherwise: refit
                         growth=float(opts["refit_growth"]))
    layer_names = name_layers(materials or [])
    summaries = assign_stale(batches, state, workers=workers, stacking_axis=stacking_axis,
                             layer_names=layer_names)
    table = class_table_of(summaries, state.ids) if state.model is not None else {}
    rows, interfaces, periods = _merge_layers(summaries)
    measured = _measured(merged)
    rejected = _Rejections(read_refused(refused_tsv))
    for k in ("file", "source", "reason"):
        rejected.rows[k].extend(merged.rejected.get(k, []))
    warnings = plausibility_warnings(measured.rows, corrections, len(materials or []) or 1)
    warnings += centrosymmetric_warnings(measured.rows, rows, materials)
    for text in warnings:
        logger.warning("%s", text)
    summary = {
        "warnings": warnings, "images_used": len(measured.names), "images_rejected": len(rejected),
        "cells": int(merged.n_cells), "classes": int(len(table.get("class", []))),
        "period_planes_mean": float(np.mean(periods)) if periods else None,
        "period_planes_std": float(np.std(periods)) if periods else None,
        "interfaces": len(interfaces["position_px"]), "layers": layer_means(rows, layer_names),
        "class_model": {"id": state.model_id, "refitted": state.refitted,
                        "fitted_on_cells": state.fitted_on,
                        "batches_assigned_now": sum(1 for s in summaries if s.get("_new"))}}
    write_summary_file(out_h5, merged, image_batch, batches, table=table, layers=rows, interfaces=interfaces,
                       summary=summary, bic=state.model.bic if state.model else None,
                       provenance=None if provenance is None
                       else {**provenance, "output": Path(out_h5).name})
    write_tables(images_tsv, rejected_tsv, measured, rejected, classes_csv=classes_csv,
                 class_table=table, layers_csv=layers_csv,
                 layers=LayerRows(rows, interfaces, periods), provenance=provenance)
    logger.info("summary: %s", summary)
    return summary
