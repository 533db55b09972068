"""Rule ingest: copy an experiment's raw images to scratch and write the manifest."""

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.transfer import backend_for  # noqa: E402

backend = backend_for(snakemake.params.facility_name, snakemake.params.facility)  # noqa: F821
entries, refused = backend.ingest(
    snakemake.params.path,  # noqa: F821
    snakemake.params.pattern,  # noqa: F821
    snakemake.params.raw_dir,  # noqa: F821
    snakemake.output.manifest,  # noqa: F821
    log=log.info,
)
for name, reason in refused:
    log.warning("refused %r: %s", name, reason)
log.info("%d files in the manifest, %d refused", len(entries), len(refused))
