"""Rule batch_statistics: one batch's column files -> its Parquet cell table and
mergeable partials (histograms, moments, images.tsv rows, rejected, sample)."""

from _setup import setup

log = setup(snakemake)  # noqa: F821

from pathlib import Path  # noqa: E402

from latticegenome.columns.batch import batch_is_whole  # noqa: E402
from latticegenome.core.records import make_record  # noqa: E402
from latticegenome.statistics.mapreduce import measure_batch  # noqa: E402

sm, params = snakemake, snakemake.params  # noqa: F821
folder = Path(sm.input.columns)
if (why := batch_is_whole(folder, ())) is not None:
    raise SystemExit(f"{why}; remove that folder and run the workflow again")
files = sorted(str(p) for p in folder.glob("*.h5"))
record = make_record(sm.output.partials, rule=sm.rule, inputs=files, workdir=str(sm.scriptdir),
                     params={"nominal_pm": params.nominal_pm, "materials": params.materials,
                             "reference_region_px": params.reference_region,
                             "corrections": params.corrections, "seed": params.seed})
done = measure_batch(
    files, sm.output.cells, sm.output.partials, nominal_pm=params.nominal_pm,
    reference_region_px=params.reference_region, materials=params.materials,
    lattice_tolerance=params.settings.get("lattice_tolerance"), corrections=params.corrections,
    seed=params.seed,
    meta={"experiment": sm.wildcards.experiment, "batch": sm.wildcards.batch, "rule": sm.rule},
    provenance=record)
log.info("batch %s: %s", sm.wildcards.batch, done)
