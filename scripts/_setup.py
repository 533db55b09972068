"""Shared start of every script: the library of this checkout, and logging to
the rule's log file. Imported by the scripts (Snakemake puts their folder on
sys.path)."""

import logging
import sys
from pathlib import Path


def setup(snakemake):
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
    log_file = snakemake.log[0] if snakemake.log else None
    logging.basicConfig(
        filename=log_file,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        force=True,
    )
    return logging.getLogger(snakemake.rule)
