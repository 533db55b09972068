#!/usr/bin/env python
"""Memory and time of the experiment statistics (measure, classify, layers) for
10 and 1,000 demo-sized images.

Per-image column files are made from the simulated truth of a 512 x 512 demo
superlattice image (about 1,300 columns) with Gaussian position noise of the
size the fit reports (no column finding: this measures the aggregation only).
Each experiment size is aggregated in a fresh process; its peak resident set
(VmHWM, reset at exec) is reported.

Usage: python benchmarks/bench_aggregate.py [--counts 10 1000]
Writes benchmarks/results/aggregate.json and aggregate.md.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

CHILD = r"""
import json, sys, time
from pathlib import Path
from latticegenome.columns.simulate import DEMO_MATERIALS
from latticegenome.statistics.aggregate import aggregate
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
files = sorted(Path(sys.argv[1]).glob("*.h5"))[: int(sys.argv[2])]
out = Path(sys.argv[3])
t = time.perf_counter()
s = aggregate(files, out / "s.h5", out / "i.tsv", out / "r.tsv", classes_csv=out / "c.csv",
              layers_csv=out / "l.csv", nominal_pm=390.5, materials=DEMO_MATERIALS)
print(json.dumps({"images": len(files), "cells": s["cells"], "classes": s["classes"],
                  "seconds": time.perf_counter() - t, "peak_rss_mb": hwm()}))
"""


def make_files(folder: Path, n: int):
    from latticegenome.columns.finder import Columns
    from latticegenome.columns.simulate import simulate_superlattice
    from latticegenome.columns.store import write_columns_h5

    _, truth, meta = simulate_superlattice((512, 512), rng=np.random.default_rng(0))
    keep = truth.present & (truth.x > -0.5) & (truth.x < 511.5) & (truth.y > -0.5) & (truth.y < 511.5)
    m = int(keep.sum())
    rng = np.random.default_rng(1)
    err = np.where(truth.site[keep] == "A", 0.05, 0.1)
    for k in range(n):
        cols = Columns(
            x=truth.x[keep] + rng.normal(0, err), y=truth.y[keep] + rng.normal(0, err),
            site=truth.site[keep], x_err=err, y_err=err, amplitude=truth.amplitude[keep],
            amplitude_err=np.full(m, 1.0), background=np.full(m, 20.0), sigma=np.full(m, truth.sigma),
            i=truth.i[keep], j=truth.j[keep], converged=np.ones(m, bool),
            basis=np.eye(2) * 19.5, origin=np.zeros(2), dispersion=1.0)
        write_columns_h5(folder / f"img_{k:05d}.h5", cols, source=f"img_{k:05d}.tif",
                         pixel_size_pm=meta["pixel_size_pm"], shape=(512, 512))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[10, 1000])
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"), OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        t = time.perf_counter()
        make_files(tmp / "in", max(args.counts))
        print(f"made {max(args.counts)} per-image files in {time.perf_counter() - t:.0f} s", flush=True)
        for n in args.counts:
            out = tmp / f"out{n}"
            out.mkdir()
            r = subprocess.run([sys.executable, "-c", CHILD, str(tmp / "in"), str(n), str(out)],
                               capture_output=True, text=True, env=env, check=True)
            row = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{row['images']:>5} images, {row['cells']:>8} cells: {row['seconds']:.1f} s, "
                  f"peak RSS {row['peak_rss_mb']:.0f} MB, {row['classes']} classes", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "aggregate.json").write_text(json.dumps(rows, indent=1))
    md = ["| images | cells | seconds | peak RSS (MB) | classes |", "|---|---|---|---|---|"]
    md += [f"| {r['images']} | {r['cells']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['classes']} |"
           for r in rows]
    (args.out / "aggregate.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
