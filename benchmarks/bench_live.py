#!/usr/bin/env python
"""Render time of the watch mode's live page (:mod:`latticegenome.figures.live`).

Three experiments, each with a newest image of N x N pixels (512 and 2048), its
columns on a 20 px perovskite lattice (A, B, 2 O per cell), its cells with B
displacements, full histograms, classes, a 20-row quality table, rejections.
The first render of a process (*cold*: it loads matplotlib's fonts) is given
apart from the median of the following ones (*warm*: what a watch loop sees
after its first poll). Threads as the machine has them.

Usage: python benchmarks/bench_live.py [--repeat 5]
Writes benchmarks/results/live_render.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from latticegenome.figures.live import write_live_page  # noqa: E402


def synthetic_experiment(name: str, size: int, seed: int = 0, spacing: float = 20.0) -> dict:
    """An experiment dict as the watch loop gives it, with a size x size newest image."""
    rng = np.random.default_rng(seed)
    g = np.arange(spacing / 2, size, spacing)
    ax, ay = (v.ravel() for v in np.meshgrid(g, g))
    bx, by = ax + spacing / 2, ay + spacing / 2
    dx, dy = rng.normal(0, 3, ax.size), rng.normal(8, 3, ax.size)
    x = np.concatenate([ax, bx + dx / 10, bx, ax])  # A corners, B centres, O edge midpoints
    y = np.concatenate([ay, by + dy / 10, ay, by])
    site = np.array(["A"] * ax.size + ["B"] * ax.size + ["O"] * (2 * ax.size))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    w = 2 * np.pi / spacing
    data = (np.cos(w * xx) * np.cos(w * yy) + 1) ** 2 + rng.normal(0, 0.3, (size, size)).astype(np.float32)
    edges = np.linspace(-20, 20, 61)
    hist = {k: (edges + (390 if k in ("a_pm", "b_pm") else 0),
                rng.poisson(50 * np.exp(-np.linspace(-3, 3, 60) ** 2)).astype(int))
            for k in ("a_pm", "b_pm", "dx_pm", "dy_pm")}
    n = 20
    quality = {"image": [f"img_{i:04d}.dm4" for i in range(n)], "n_cells": [ax.size] * n,
               "a_pm": list(rng.normal(390, 1, n)), "b_pm": list(rng.normal(392, 1, n)),
               "dx_pm": list(rng.normal(0, 1, n)), "dy_pm": [float("nan")] + list(rng.normal(8, 1, n - 1)),
               "dispersion": list(rng.random(n)), "b_over_a": list(1 + rng.normal(0, 0.01, n)),
               "check_drift": [bool(v) for v in rng.random(n) > 0.1], "check_spacing": [True] * n}
    return {"name": name, "images_analysed": 120, "images_rejected": 14, "cells": 120 * ax.size,
            "rejected": [(f"bad_{i}.tif", "too few columns found") for i in range(14)],
            "histograms": hist,
            "classes": {"class": [0, 1, 2], "count": [800, 300, 40], "a_pm": [390.1, 391.5, 388.0],
                        "dy_pm": [8.2, -7.9, 0.3]},
            "quality": quality, "warnings": ["drift above 2 px in 3 images"],
            "newest": {"image": "img_0119.dm4", "data": data, "pixel_size_pm": 19.5,
                       "columns": {"x": x, "y": y, "site": site},
                       "cells": {"x": bx, "y": by, "dx_pm": dx, "dy_pm": dy}}}


def measure(size: int, repeat: int, out: Path) -> dict:
    exps = [synthetic_experiment(f"experiment {i}", size, seed=i) for i in range(3)]
    times = []
    for _ in range(repeat + 1):
        t = time.perf_counter()
        write_live_page(out, exps, status="benchmark")
        times.append(time.perf_counter() - t)
    return {"size": size, "cold_s": times[0], "warm_s": statistics.median(times[1:]),
            "warm_max_s": max(times[1:]), "page_kb": out.stat().st_size / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(s, args.repeat, Path(tmp) / f"live_{s}.html") for s in (512, 2048)]
    lines = ["# Live page render time (`bench_live.py`)", "",
             f"3 experiments, newest image N x N each; {os.cpu_count()} CPU cores, "
             f"{platform.processor() or platform.machine()}, Python {platform.python_version()}.",
             "Cold: first render of the process (matplotlib loads its fonts); warm: median of "
             f"{args.repeat} renders that follow (max in brackets).", "",
             "| newest image | cold (s) | warm (s) | page (KiB) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']}² | {r['cold_s']:.2f} | {r['warm_s']:.2f} ({r['warm_max_s']:.2f}) "
                     f"| {r['page_kb']:.0f} |")
        print(f"{r['size']}²: cold {r['cold_s']:.3f} s, warm {r['warm_s']:.3f} s "
              f"(max {r['warm_max_s']:.3f}), page {r['page_kb']:.0f} KiB")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "live_render.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
