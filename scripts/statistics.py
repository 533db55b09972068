"""Rule statistics: merge the batches' partials -> the experiment's summary file,
tables, and the classes of every batch (assigned only where stale)."""

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.core.errors import LatticeGenomeError  # noqa: E402
from latticegenome.core.records import make_record  # noqa: E402
from latticegenome.statistics.experiment import reduce_experiment  # noqa: E402

from pathlib import Path  # noqa: E402

sm, out, params = snakemake, snakemake.output, snakemake.params  # noqa: F821
exp = sm.wildcards.experiment
results = Path(out.cells).parent.parent  # <results>/<experiment>/statistics.h5
# each batch's classes: beside its cells (results/classes/experiment=E/batch=K/), and
# its class sums and layers (results/E/partials/classes-K.json)
batches = [{"name": name, "partition": f"experiment={exp}/batch={name}", "partials": partials,
            "cells": cells,
            "classes": results / "classes" / f"experiment={exp}" / f"batch={name}" / "classes.parquet",
            "summary": Path(partials).with_name(f"classes-{name}.json")}
           for name, partials, cells in zip(params.batches, sm.input.partials, sm.input.cells)]
record = make_record(out.cells, rule=sm.rule, inputs=list(sm.input.partials),
                     workdir=str(sm.scriptdir),
                     params={"materials": params.materials, "stacking_axis": params.stacking_axis,
                             "corrections": params.corrections, "classes": params.classes})
try:
    summary = reduce_experiment(
        batches, sm.input.refused, out.cells, out.images, out.rejected, classes_csv=out.classes,
        layers_csv=out.layers, experiment=sm.wildcards.experiment, materials=params.materials,
        stacking_axis=params.stacking_axis, corrections=params.corrections,
        classes=params.classes, provenance=record, workers=sm.threads)
    if summary["images_used"] == 0:
        raise LatticeGenomeError(f"{sm.wildcards.experiment}: every image was rejected; "
                                 f"see {out.rejected}")
except LatticeGenomeError as exc:  # one line, in the log and on stderr: no traceback
    log.error("%s", exc)
    raise SystemExit(str(exc)) from None
