"""Rule publish: send an experiment's package to the publication facility."""

import json
from pathlib import Path

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.core.errors import TransferError  # noqa: E402
from latticegenome.core.fsutil import atomic_write  # noqa: E402
from latticegenome.core.records import make_record, write_sidecar  # noqa: E402
from latticegenome.ingest.backends import backend_for  # noqa: E402

sm = snakemake  # noqa: F821
try:
    backend = backend_for(sm.params.facility_name, sm.params.facility, config=sm.config)
    record = backend.publish(sm.input.package, sm.params.path, log=log.info,
                             label=f"latticegenome publish {sm.wildcards.experiment}")
except TransferError as exc:
    log.error("%s", exc)
    raise SystemExit(f"publish {sm.wildcards.experiment}: {exc}") from None
with atomic_write(sm.output.record, "w") as fh:
    json.dump(record, fh, indent=1)
# The provenance record of the publication: which package, where, which task.
prov = make_record(sm.output.record, rule="publish",
                   params={"facility": record["facility"], "path": record["path"]},
                   inputs=[p for p in sorted(Path(sm.input.package).rglob("*")) if p.is_file()
                           and p.name != ".snakemake_timestamp"])
prov["transfer"] = {k: record[k] for k in ("facility", "collection", "path", "task_id",
                                           "published_at")}
write_sidecar(sm.output.record, prov)
log.info("published to %s/%s (task %s)", record["collection"], record["path"], record["task_id"])
