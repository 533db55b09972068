"""Rule find_columns: one batch of images -> one HDF5 file of columns per image.

Any failure on an image is recorded in its output as 'rejected' with its
reason, so one broken image never stops the batch or the experiment.
"""

from _setup import setup

log = setup(snakemake, take_over=True)  # noqa: F821  (analyse_batch reuses a killed run's images)

from latticegenome.columns.batch import analyse_batch  # noqa: E402
from latticegenome.core.settings import AnalysisSettings  # noqa: E402

sm = snakemake  # noqa: F821
settings = AnalysisSettings.of(dict(sm.params.settings))  # the experiment's merged settings
results = analyse_batch(
    list(sm.input.images), sm.output.columns, settings, workers=sm.threads,
    provenance={"rule": sm.rule, "params": settings.for_columns(),
                "workdir": str(sm.scriptdir)},  # the workflow checkout, for its git commit
    log_file=sm.log[0],
    expected_sha256=dict(sm.params.expected_sha256),
    exclusive=True,  # Snakemake holds this output: any temporary folder of it is a killed run's
)
rejected = sum(r["status"] not in ("ok", "paired") for r in results)
paired = sum(r["status"] == "paired" for r in results)
log.info("batch %s: %d images, %d rejected%s", sm.wildcards.batch, len(results), rejected,
         f", {paired} analysed with their scan-pair partner" if paired else "")
