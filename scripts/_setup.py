"""Shared start of every script: the library of this checkout, logging to the
rule's log file, and the rules every job follows. Imported by the scripts
(Snakemake puts their folder on sys.path).

- Temporary files or folders of this job's outputs left by a killed run
  (``.<name>.<host>.<pid>.<random>.part``) are removed first: Snakemake runs
  one job per output, so any of them is stale (find_columns takes over the
  finished images in them instead).
- A full disk (or quota) ends the job with one line naming the path and
  "no space left on device", in the log and on stderr; the outputs are left
  absent (every output is written to a temporary name first), so a rerun
  trusts nothing half-written.
- A crash of native code (a segmentation fault) still leaves its Python
  traceback in the log.
"""

import faulthandler
import logging
import os
import sys
from pathlib import Path


def setup(snakemake, *, take_over=False):
    """Path, log, and the job rules above; ``take_over``: the script itself
    reuses or removes the temporary outputs of a killed run (find_columns)."""
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
    log_file = snakemake.log[0] if snakemake.log else None
    logging.basicConfig(
        filename=log_file,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        force=True,
    )
    log = logging.getLogger(snakemake.rule)
    if log_file:
        faulthandler.enable(open(log_file, "a"))  # noqa: SIM115 (kept open for a crash)
    from latticegenome.core.fsutil import remove_stale_parts

    for out in () if take_over else snakemake.output:
        for part in remove_stale_parts(out, force=True):
            log.info("removed %s, left by an interrupted run", part)
    sys.excepthook = _ending(log, sys.excepthook)
    return log


def _ending(log, default):
    """An excepthook: one line for a full disk, then exit at once (HDF5 may crash
    at interpreter exit after a failed write); anything else as usual."""
    from latticegenome.core.fsutil import NoSpaceError, is_no_space

    def hook(kind, exc, tb):
        if isinstance(exc, NoSpaceError) or is_no_space(exc):
            where = getattr(exc, "filename", None) or "an output"
            line = f"{where}: no space left on device"
            log.error("%s", line)
            print(f"latticegenome: error: {line}", file=sys.stderr, flush=True)
            logging.shutdown()
            os._exit(1)
        default(kind, exc, tb)

    return hook
