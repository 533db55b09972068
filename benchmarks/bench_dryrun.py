#!/usr/bin/env python
"""Dry-run (-n) time of the workflow for large synthetic experiments, and the
number of batch jobs a cluster profile makes of them.

A synthetic experiment of N images: its manifest and N empty raw files exist,
so the ingest checkpoint counts as done and the DAG holds the find_columns
batches (config batch_size, 100 per job) plus the statistics (no images are
needed to plan). Measured with the local profile and with the perlmutter
profile (SLURM, conda; through a stand-in for conda's version queries: dry
runs build no environment, and conda cannot run here). Batch jobs = the jobs
the perlmutter plan would submit (every job in it: none is a local rule).

Usage: python benchmarks/bench_dryrun.py [--counts 10000 50000]
Writes benchmarks/results/dryrun.json and dryrun.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
CONDA_STANDIN = """#!/bin/sh
case "$*" in
  "info --json") printf '{"conda_prefix": "%s", "platform": "linux-64"}\\n' "$HOME" ;;
  "--version") echo "conda 24.11.0" ;;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}}' ;;
  *) exit 1 ;;
esac
"""


def experiment(folder: Path, n: int) -> Path:
    raw = folder / "data" / "big" / "raw"
    raw.mkdir(parents=True)
    rows = ["file\tsize\tsha256\tfacility\tcollection\tsource_path\ttask_id\ttransferred_at"]
    for k in range(n):
        name = f"img_{k:06d}.tif"
        (raw / name).touch()
        rows.append(f"{name}\t0\t-\tscope\tlocal:/x\tbig/{name}\tlocal-0\t-")
    (folder / "data" / "big" / "manifest.tsv").write_text("\n".join(rows) + "\n")
    (folder / "facility" / "big").mkdir(parents=True)
    config = {"facilities": {"scope": {"backend": "local", "path": str(folder / "facility")}},
              "experiments": {"big": {"facility": "scope", "path": "big", "pattern": "*.tif",
                                      "materials": [{"formula": "SrTiO3", "A": "Sr", "B": "Ti",
                                                     "a_pm": 390.5}]}}}
    cfg = folder / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return cfg


def dry_run(folder: Path, cfg: Path, profile: str, env=None):
    t = time.perf_counter()
    out = subprocess.run([SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(folder),
                          "--configfile", str(cfg), "--profile", str(ROOT / "profiles" / profile), "-n",
                          f"{'results'}/big/statistics.h5"],
                         capture_output=True, text=True, env=env, cwd=folder)
    seconds = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return seconds, out.stdout + out.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[10000, 50000])
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    rows = []
    for n in args.counts:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            cfg = experiment(tmp, n)
            seconds, text = dry_run(tmp, cfg, "local")
            jobs = re.search(r"find_columns\s+(\d+)", text)
            row = {"images": n, "dry_run_seconds_local": round(seconds, 1),
                   "find_columns_jobs_local": int(jobs.group(1)) if jobs else None}
            standin = tmp / "bin" / "conda"
            standin.parent.mkdir()
            standin.write_text(CONDA_STANDIN)
            standin.chmod(0o755)
            env = dict(os.environ, PATH=f"{standin.parent}{os.pathsep}{os.environ['PATH']}")
            seconds_c, text_c = dry_run(tmp, cfg, "perlmutter", env)
            row["dry_run_seconds_perlmutter"] = round(seconds_c, 1)
            row["batch_jobs_perlmutter"] = int(re.search(r"total\s+(\d+)", text_c).group(1))
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dryrun.json").write_text(json.dumps(rows, indent=1))
    md = ["| images | find_columns jobs | dry run, local (s) | dry run, perlmutter (s) "
          "| batch jobs (perlmutter) |", "|---|---|---|---|---|"]
    md += [f"| {r['images']:,} | {r['find_columns_jobs_local']} | {r['dry_run_seconds_local']} | "
           f"{r['dry_run_seconds_perlmutter']} | {r['batch_jobs_perlmutter']} |" for r in rows]
    (args.out / "dryrun.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
