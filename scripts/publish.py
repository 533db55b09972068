"""Rule publish: send an experiment's package to the publication facility."""

import json

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.fsutil import atomic_write  # noqa: E402
from latticegenome.transfer import backend_for  # noqa: E402

sm = snakemake  # noqa: F821
backend = backend_for(sm.params.facility_name, sm.params.facility)
record = backend.publish(sm.input.package, sm.params.path, log=log.info)
with atomic_write(sm.output.record, "w") as fh:
    json.dump(record, fh, indent=1)
log.info("published to %s/%s (task %s)", record["collection"], record["path"], record["task_id"])
