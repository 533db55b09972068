"""Rule publish: send an experiment's package to the publication facility."""

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.core.errors import TransferError  # noqa: E402
from latticegenome.ingest.backends import backend_for  # noqa: E402
from latticegenome.provenance.package import record_publication  # noqa: E402

sm = snakemake  # noqa: F821
try:
    backend = backend_for(sm.params.facility_name, sm.params.facility, config=sm.config)
    record = backend.publish(sm.input.package, sm.params.path,
                             label=f"latticegenome publish {sm.wildcards.experiment}")
except TransferError as exc:
    log.error("%s", exc)
    raise SystemExit(f"publish {sm.wildcards.experiment}: {exc}") from None
# The record of the publication and its provenance: which package, where, which task.
record_publication(sm.output.record, record, sm.input.package)
log.info("published to %s/%s (task %s)", record["collection"], record["path"], record["task_id"])
