#!/usr/bin/env python
"""Workflow overhead per image on the local profile, against the analysis time.

A synthetic experiment of N simulated 512² images (the demo's kind) is
ingested, then the column finding runs through real Snakemake with the local
profile on ONE core (so nothing overlaps). The same images are analysed in one
warm process to get the analysis time alone. Overhead per image =
(Snakemake's wall time for the column finding) / N - analysis time per image:
Snakemake's start-up and scheduling, the job processes' start-up, file checks,
provenance. Measured for the batch size of the configuration (default 100) and
for one image per job (the design before batches), on fewer images.

Usage: python benchmarks/bench_overhead.py [--images 200] [--single 20]
Writes benchmarks/results/overhead.json and overhead.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
sys.path.insert(0, str(ROOT / "src"))

from latticegenome.columns.batch import analyse_one  # noqa: E402
from latticegenome.columns.simulate import simulate_superlattice  # noqa: E402


def make_experiment(folder: Path, n: int, batch_size: int) -> Path:
    fac = folder / "facility" / "exp"
    fac.mkdir(parents=True)
    for k in range(n):
        img, _, _ = simulate_superlattice((512, 512), rng=np.random.default_rng(k))
        tifffile.imwrite(fac / f"img_{k:05d}.tif", img.astype(np.uint16))
    config = {"scratch": "data", "results": "results", "batch_size": batch_size,
              "facilities": {"scope": {"backend": "local", "path": str(folder / "facility")}},
              "experiments": {"exp": {"facility": "scope", "path": "exp", "pattern": "*.tif",
                                      "pixel_size_pm": 20.0,
                                      "materials": [{"formula": "SrTiO3", "A": "Sr", "B": "Ti",
                                                     "a_pm": 390.5}]}},
              "dft": {"enabled": False}}
    cfg = folder / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return cfg


def snakemake(folder: Path, cfg: Path, *args) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    t = time.perf_counter()
    out = subprocess.run([SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(folder),
                          "--configfile", str(cfg), "--profile", str(ROOT / "profiles" / "local"),
                          "--cores", "1", *args], capture_output=True, text=True, cwd=folder, env=env)
    seconds = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return seconds


def analysis_seconds(folder: Path, count: int) -> float:
    """Mean analysis time per image in one warm process (read, find, refine, write the
    HDF5 with its provenance), over ``count`` images after a first (warm-up) one."""
    raw = sorted((folder / "data" / "exp" / "raw").glob("*.tif"))[:count + 1]
    out = folder / "warm"
    out.mkdir()
    settings = {"pixel_size_pm": 20.0, "spacing_pm": 390.5}
    analyse_one(str(raw[0]), str(out / "warmup.h5"), settings)  # loads the kernels
    t = time.perf_counter()
    for p in raw[1:]:
        analyse_one(str(p), str(out / f"{p.name}.h5"), settings,
                    provenance={"rule": "find_columns", "params": settings, "workdir": str(ROOT)})
    return (time.perf_counter() - t) / (len(raw) - 1)


def measure(n: int, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = make_experiment(tmp, n, batch_size)
        snakemake(tmp, cfg, "--until", "ingest")
        targets = [f"results/exp/columns/batch-{k:05d}" for k in range(-(-n // batch_size))]
        wall = snakemake(tmp, cfg, *targets)
        per_image = analysis_seconds(tmp, n - 1)  # the same images, after the workflow
        jobs = len(list((tmp / "results" / "exp" / "columns").iterdir()))
    overhead = wall / n - per_image
    return {"images": n, "batch_size": batch_size, "jobs": jobs, "wall_seconds": round(wall, 2),
            "analysis_seconds_per_image": round(per_image, 4),
            "workflow_seconds_per_image": round(wall / n, 4),
            "overhead_seconds_per_image": round(overhead, 4),
            "overhead_fraction": round(overhead / per_image, 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--single", type=int, default=20, help="images for the one-image-per-job case")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    rows = [measure(args.images, args.batch_size)]
    print(json.dumps(rows[-1]), flush=True)
    if args.single:
        rows.append(measure(args.single, 1))
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(rows, indent=1))
    md = ["| images | batch size | jobs | wall (s) | analysis per image (s) | workflow per image (s) "
          "| overhead per image (s) | overhead / analysis |", "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['images']} | {r['batch_size']} | {r['jobs']} | {r['wall_seconds']} | "
           f"{r['analysis_seconds_per_image']} | {r['workflow_seconds_per_image']} | "
           f"{r['overhead_seconds_per_image']} | {100 * r['overhead_fraction']:.1f} % |" for r in rows]
    (args.out / "overhead.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
