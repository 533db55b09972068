"""Rule ingest: copy an experiment's new raw images to scratch as the next increment,
write the manifest (every increment) and the list of files refused (links, unsafe
names, changed at the facility)."""

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.core.errors import TransferError  # noqa: E402
from latticegenome.ingest.backends import backend_for  # noqa: E402
from latticegenome.ingest.increments import ingest_increment  # noqa: E402
from latticegenome.ingest.manifest import display_name, write_refused  # noqa: E402

sm = snakemake  # noqa: F821
try:
    backend = backend_for(sm.params.facility_name, sm.params.facility, config=sm.config)
    new, refused, entries = ingest_increment(
        backend,
        sm.params.path,
        sm.params.pattern,
        sm.params.raw_dir,
        sm.output.manifest,
        label=f"latticegenome ingest {sm.wildcards.experiment}",
    )  # progress: the library's loggers, into this rule's log (see _setup)
except TransferError as exc:
    log.error("%s", exc)
    raise SystemExit(f"ingest {sm.wildcards.experiment}: {exc}") from None
write_refused(sm.output.refused, refused)
for name, reason in refused:
    log.warning("refused %s: %s", display_name(name), reason)
log.info("%d new file(s), %d in the manifest, %d refused or skipped", len(new), len(entries),
         len(refused))
