"""An experiment's statistics from the column batches of the workflow (the
``statistics`` rule): which column file belongs to which raw image, the
provenance record, :func:`~latticegenome.statistics.aggregate.aggregate`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from latticegenome.columns.batch import batch_is_whole, output_name
from latticegenome.core.errors import LatticeGenomeError
from latticegenome.core.records import make_record
from latticegenome.ingest.manifest import read_refused
from latticegenome.statistics.aggregate import aggregate

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


def experiment_statistics(batch_folders, raw_images, refused_tsv, out_h5, images_tsv,
                          rejected_tsv, *, classes_csv, layers_csv, experiment: str, rule: str,
                          workdir: str, nominal_pm: float, materials: list[dict],
                          stacking_axis: str = "y", reference_region_px=None,
                          lattice_tolerance: float | None = None,
                          corrections: dict | None = None) -> tuple[dict, list[str]]:
    """Aggregate an experiment's column batches, with the provenance of the run.

    The column files of ``raw_images`` (:func:`experiment_columns`) and the
    names refused at ingest (``refused_tsv``) go to :func:`aggregate`, which
    writes ``out_h5`` and the tables; the provenance record names the rule,
    its parameters and the column files.

    Returns
    -------
    summary : dict
        As :func:`aggregate` returns it (also logged).
    columns : list of str
        The column files, in the order of ``raw_images``.

    Raises
    ------
    LatticeGenomeError
        As :func:`experiment_columns`; or when every image was rejected
        (after the outputs were written).
    """
    columns = experiment_columns(batch_folders, raw_images, experiment=experiment)
    params = {"nominal_pm": nominal_pm, "stacking_axis": stacking_axis, "materials": materials,
              "reference_region_px": reference_region_px, "lattice_tolerance": lattice_tolerance,
              "corrections": corrections}
    record = make_record(out_h5, rule=rule, inputs=columns, workdir=workdir, params=params)
    summary = aggregate(
        columns, out_h5, images_tsv, rejected_tsv, classes_csv=classes_csv, layers_csv=layers_csv,
        nominal_pm=nominal_pm, stacking_axis=stacking_axis, materials=materials,
        reference_region_px=reference_region_px, lattice_tolerance=lattice_tolerance,
        extra_rejected=read_refused(refused_tsv),  # links, unsafe names: refused at ingest
        provenance=record, corrections=corrections)
    logger.info("summary: %s", summary)
    if summary["images_used"] == 0:
        raise LatticeGenomeError(f"{experiment}: every image was rejected; see {rejected_tsv}")
    return summary, columns
