"""Rule dft: one calculation on one model, under custodian (CP2K here, VASP on HPC)."""

import json
from pathlib import Path

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.core.fsutil import atomic_write  # noqa: E402
from latticegenome.dft.calculations import run_model  # noqa: E402

sm = snakemake  # noqa: F821
result = run_model(sm.input.model, sm.params.workdir, sm.params.dft,
                   launcher=sm.params.launcher, ntasks=int(sm.params.ntasks))
with atomic_write(sm.output.result, "w") as fh:
    json.dump(result, fh, indent=1, default=float)
log.info("%s: %s %s", Path(sm.input.model).stem, result["status"], result.get("reason", ""))
