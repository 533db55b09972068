"""Provenance records: every output can say which inputs, code and parameters made it.

A record is a JSON object:

    {"output": name, "rule": ..., "created_at": ..., "software": {"latticegenome":
     version, "git_commit": ..., "git_dirty": bool}, "params": {...},
     "inputs": [{"path": ..., "sha256": ..., "size": ...}, ...],
     "raw": {size, sha256, facility, collection, source_path, task_id,             # raw images
             transferred_at, source_mtime_ns}
     "instrument": {...}}                                                          # if known

The ``raw`` record is a manifest row without its file name; its layout belongs
to :mod:`latticegenome.ingest.manifest` (``record_copy``, ``read_raw_provenance``).

HDF5 outputs carry it in the file attribute ``provenance``; other files (CSV,
TSV, PNG, CIF) in a sidecar ``<file>.prov.json``. The chain back to the raw
images is :mod:`latticegenome.provenance.chain`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from functools import lru_cache
from pathlib import Path

from latticegenome import __version__
from latticegenome.core.fsutil import atomic_write, sha256_file

SIDECAR = ".prov.json"


@lru_cache(maxsize=8)
def software(workdir: str | None = None) -> dict:
    """Package version and the git commit of the workflow checkout (if any)."""
    out = {"latticegenome": __version__, "git_commit": None, "git_dirty": None}
    where = workdir or str(Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=where, capture_output=True, text=True, timeout=10)
            out["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        if isinstance(value, dict):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_jsonable(v) for v in value]
        return str(value)


def file_entry(path: str | os.PathLike) -> dict:
    """Path, size and SHA-256 of an input file."""
    p = Path(path)
    return {"path": str(p), "size": p.stat().st_size, "sha256": sha256_file(p)}


def make_record(output, *, rule: str, params: dict | None = None, inputs=(), raw: dict | None = None,
                instrument: dict | None = None, workdir: str | None = None) -> dict:
    """A provenance record for ``output`` made by ``rule`` from ``inputs``."""
    rec = {
        "output": Path(output).name,
        "rule": rule,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "software": software(workdir),
        "params": _jsonable(params or {}),
        "inputs": [file_entry(p) for p in inputs],
    }
    if raw:
        rec["raw"] = _jsonable(raw)
    if instrument:
        rec["instrument"] = _jsonable(instrument)
    return rec


def write_sidecar(path: str | os.PathLike, record: dict) -> Path:
    """Write ``<path>.prov.json`` atomically; return its path."""
    side = Path(str(path) + SIDECAR)
    with atomic_write(side, "w") as fh:
        json.dump(record, fh, indent=1)
    return side


