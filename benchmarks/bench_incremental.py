#!/usr/bin/env python
"""Near-real-time figures: watch latency, incremental cost, map-reduce scale.

1. An experiment of N simulated 512² images (the demo's kind) runs through the
   real workflow (local profile, DFT off). From Snakemake's benchmark files:
   the wall time of every column-finding job against that of everything after
   it (per-batch statistics, the merge); per batch job the peak RSS.
2. ``latticegenome watch --interval 1`` runs on that experiment; D images are
   dropped into the facility folder one at a time, each after the previous one
   showed up. Latency: from the drop to the image on ``results/live.html`` (its
   name as the newest image, its cells in the histograms).
3. Incremental cost: the wall time of the jobs of one such increment (ingest,
   find_columns, batch_statistics, statistics, from their benchmark files) and
   the whole Snakemake invocation, against the analysis of that one image in a
   fresh process (``latticegenome columns``, start-up included) and warm
   (the column-finding job's own per-image time).
4. Scale: the partials of 10,000 images (100 batches of 100, copies of a real
   batch's partials) merged; cells measured and assigned per CPU second.

Usage: python benchmarks/bench_incremental.py [--images 1000] [--drops 20]
Writes benchmarks/results/incremental.json and incremental.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import statistics as st
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
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "src"))

from latticegenome.columns.simulate import simulate_superlattice  # noqa: E402

ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def write_image(folder: Path, k: int) -> Path:
    img, _, _ = simulate_superlattice((512, 512), rng=np.random.default_rng(k))
    tmp = folder / f".img_{k:05d}.tif.part"
    tifffile.imwrite(tmp, img.astype(np.uint16))
    final = folder / f"img_{k:05d}.tif"
    os.replace(tmp, final)  # appears whole, as a microscope's export should
    return final


def make_experiment(folder: Path, n: int) -> Path:
    fac = folder / "facility" / "exp"
    fac.mkdir(parents=True)
    for k in range(n):
        write_image(fac, k)
    config = {"scratch": "data", "results": "results", "batch_size": 100,
              "facilities": {"scope": {"backend": "local", "path": str(folder / "facility")}},
              "experiments": {"exp": {"facility": "scope", "path": "exp", "pattern": "*.tif",
                                      "pixel_size_pm": 20.0,
                                      "materials": [
                                          {"formula": "SrTiO3", "A": "Sr", "B": "Ti",
                                           "a_pm": 390.5, "centrosymmetric": True},
                                          {"formula": "BaTiO3", "A": "Ba", "B": "Ti",
                                           "a_pm": 399.2}]}},
              "dft": {"enabled": False}}
    cfg = folder / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return cfg


def snakemake_cmd(folder: Path, cfg: Path, *targets) -> list[str]:
    return [str(BIN / "snakemake"), *targets, "--snakefile", str(ROOT / "Snakefile"),
            f"--directory={folder}", f"--configfile={cfg}", "--profile",
            str(ROOT / "profiles" / "local"), "--cores", "2"]


def bench_rows(folder: Path, pattern: str) -> list[dict]:
    out = []
    for p in sorted((folder / "results" / "exp" / "benchmarks").glob(pattern)):
        with open(p) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows:
            out.append({"file": p.name, "s": float(rows[-1]["s"]),
                        "cpu": float(rows[-1].get("cpu_time") or 0),
                        "max_rss": float(rows[-1]["max_rss"] or 0), "mtime": p.stat().st_mtime})
    return out


def run_statistics(folder: Path, cfg: Path) -> float:
    """One Snakemake invocation for the experiment's statistics; its wall time (s)."""
    t = time.perf_counter()
    run = subprocess.run(snakemake_cmd(folder, cfg, "results/exp/statistics.h5"), cwd=folder,
                         capture_output=True, text=True, env=ENV)
    if run.returncode:
        raise SystemExit(run.stderr[-3000:])
    return time.perf_counter() - t


def full_run(folder: Path, cfg: Path) -> dict:
    wall = run_statistics(folder, cfg)
    cols = bench_rows(folder, "columns/batch-*.tsv")
    stats = bench_rows(folder, "statistics/batch-*.tsv")
    merge = bench_rows(folder, "statistics.tsv")
    after = sum(r["cpu"] for r in stats) + sum(r["cpu"] for r in merge)
    columns_cpu = sum(r["cpu"] for r in cols)
    return {"wall_s": round(wall, 1), "find_columns_cpu_s": round(columns_cpu, 1),
            "statistics_cpu_s": round(after, 1),
            "after_over_columns": round(after / columns_cpu, 4),
            "find_columns_job_wall_s": round(sum(r["s"] for r in cols), 1),
            "batch_statistics_peak_rss_mb": max(r["max_rss"] for r in stats),
            "merge_peak_rss_mb": merge[0]["max_rss"] if merge else None,
            "batches": len(cols)}


def on_page(page: Path, name: str) -> bool:
    try:
        text = page.read_text(errors="replace")
    except OSError:
        return False
    return f'newest: <b class="newest">{name}</b>' in text


def latency(folder: Path, cfg: Path, n0: int, drops: int) -> dict:
    page = folder / "results" / "live.html"
    log = open(folder / "watch.out", "w")  # noqa: SIM115
    watch = subprocess.Popen([str(BIN / "latticegenome"), "watch", "--interval", "1",
                              "--directory", str(folder), "--configfile", str(cfg),
                              "--snakefile", str(ROOT / "Snakefile"), "--profile",
                              str(ROOT / "profiles" / "local")], cwd=folder, stdout=log,
                             stderr=subprocess.STDOUT, env=ENV)
    times, fac = [], folder / "facility" / "exp"
    try:
        deadline = time.time() + 120
        while not page.exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # the first (catching-up) increment
        for k in range(n0, n0 + drops):
            t0 = time.perf_counter()
            write_image(fac, k)
            while not on_page(page, f"img_{k:05d}.tif"):
                if time.perf_counter() - t0 > 120:
                    raise SystemExit(f"img_{k:05d}.tif not on the page after 120 s")
                time.sleep(0.05)
            times.append(time.perf_counter() - t0)
            print(f"  drop {k}: {times[-1]:.2f} s", flush=True)
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=120)
        log.close()
    return {"drops": drops, "median_s": round(st.median(times), 2), "max_s": round(max(times), 2),
            "min_s": round(min(times), 2), "all_s": [round(t, 2) for t in times],
            "watch_exit": watch.returncode}


def increment_cost(folder: Path, cfg: Path, k: int) -> dict:
    """One image more, through one Snakemake invocation; its jobs' times."""
    write_image(folder / "facility" / "exp", k)
    wall = run_statistics(folder, cfg)
    since = time.time() - wall - 1
    jobs = [r for pat in ("ingest.tsv", "columns/batch-*.tsv", "statistics/batch-*.tsv",
                          "statistics.tsv") for r in bench_rows(folder, pat) if r["mtime"] > since]
    raw = folder / "data" / "exp" / "raw" / f"img_{k:05d}.tif"
    t = time.perf_counter()
    subprocess.run([str(BIN / "latticegenome"), "columns", str(raw), "--pixel-size-pm", "20",
                    "--csv", str(folder / "one.csv")], check=True, capture_output=True, env=ENV)
    cold = time.perf_counter() - t
    return {"snakemake_wall_s": round(wall, 2), "jobs": [j["file"] for j in jobs],
            "jobs_s": round(sum(j["s"] for j in jobs), 2),
            "one_image_fresh_process_s": round(cold, 2),
            "ratio_jobs_to_fresh_analysis": round(sum(j["s"] for j in jobs) / cold, 2),
            "ratio_invocation_to_fresh_analysis": round(wall / cold, 2)}


def merge_scale(folder: Path) -> dict:
    """Merge the partials of 10,000 images: 100 batches, copies of a real batch's partials."""
    from latticegenome.statistics.incremental import merge_batches
    from latticegenome.statistics.partials import read_partials, write_partials

    src = sorted((folder / "results" / "exp" / "partials").glob("batch-*.npz"))[0]
    base, meta = read_partials(src)
    out = folder / "scale"
    out.mkdir()
    reps = -(-100 // max(1, len(base.images)))
    files = []
    for b in range(100):
        p, _ = read_partials(src)
        p.images = [(f"b{b}_{r}_{n}", c) for r in range(reps) for n, c in base.images][:100]
        p.rows = {k: (v * reps)[:100] for k, v in base.rows.items()}
        p.n_cells = sum(c for _, c in p.images)
        p.sample.images = [f"b{b}_{n}" for n in p.sample.images]
        p.sample.keys = np.random.default_rng(b).random(len(p.sample.keys))
        files.append(out / f"batch-{b:05d}.npz")
        write_partials(files[-1], p, meta)
    c = time.process_time()
    t = time.perf_counter()
    merged, _ = merge_batches(files)
    return {"images": len(merged.images), "cells": merged.n_cells, "batches": len(files),
            "merge_wall_s": round(time.perf_counter() - t, 2),
            "merge_cpu_s": round(time.process_time() - c, 2)}


def cells_per_second(folder: Path) -> dict:
    """Measure and assign one batch again in this process (warm), per CPU second."""
    from latticegenome.columns.simulate import DEMO_MATERIALS
    from latticegenome.statistics.incremental import read_state
    from latticegenome.statistics.mapreduce import assign_batch, measure_batch

    batch = sorted((folder / "results" / "exp" / "columns").glob("batch-*"))[0]
    files = sorted(batch.glob("*.h5"))
    scratch = folder / "again"
    scratch.mkdir()
    measure_batch(files[:2], scratch / "w.parquet", scratch / "w.npz", nominal_pm=390.5,
                  materials=DEMO_MATERIALS)  # imports
    c = time.process_time()
    done = measure_batch(files, scratch / "c.parquet", scratch / "p.npz", nominal_pm=390.5,
                         materials=DEMO_MATERIALS[:1],
                         corrections={"displacement_region": "all"})
    measure_s = time.process_time() - c
    state, _ = read_state(folder / "results" / "exp" / "classes" / "model.json")
    c = time.process_time()
    assign_batch(scratch / "c.parquet", state.model, state.ids, state.model_id,
                 scratch / "cl.parquet", scratch / "s.json")
    assign_s = time.process_time() - c
    return {"cells": done["cells"], "measure_cells_per_cpu_s": round(done["cells"] / measure_s),
            "assign_cells_per_cpu_s": round(done["cells"] / assign_s),
            "measure_and_assign_cells_per_cpu_s": round(done["cells"] / (measure_s + assign_s))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--drops", type=int, default=20)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep it")
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="lg-incr-"))
    res = {"images": args.images}
    t = time.perf_counter()
    cfg = make_experiment(folder, args.images)
    print(f"{args.images} images written in {time.perf_counter() - t:.0f} s", flush=True)
    res["full_run"] = full_run(folder, cfg)
    print(json.dumps(res["full_run"]), flush=True)
    res["cells_per_second"] = cells_per_second(folder)
    print(json.dumps(res["cells_per_second"]), flush=True)
    res["merge_10000"] = merge_scale(folder)
    print(json.dumps(res["merge_10000"]), flush=True)
    res["increment"] = increment_cost(folder, cfg, args.images)
    print(json.dumps(res["increment"]), flush=True)
    res["latency"] = latency(folder, cfg, args.images + 1, args.drops)
    print(json.dumps(res["latency"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "incremental.json").write_text(json.dumps(res, indent=1))
    (args.out / "incremental.md").write_text(markdown(res))
    print(markdown(res))
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)


def markdown(r: dict) -> str:
    f, c, m, i, lat = (r["full_run"], r["cells_per_second"], r["merge_10000"], r["increment"],
                       r["latency"])
    return "\n".join([
        f"# Near-real-time ({r['images']} simulated 512² images, local profile, 2 cores)", "",
        "| figure | measured | floor |", "|---|---|---|",
        f"| watch latency, drop -> live page, median / max over {lat['drops']} drops | "
        f"{lat['median_s']} s / {lat['max_s']} s | 10 s / 20 s |",
        f"| one more image: its jobs' wall time / the image analysed in a fresh process | "
        f"{i['jobs_s']} s / {i['one_image_fresh_process_s']} s = "
        f"{i['ratio_jobs_to_fresh_analysis']}x | 3x |",
        f"| one more image: the whole Snakemake invocation | {i['snakemake_wall_s']} s | |",
        f"| merge the partials of {m['images']:,} images ({m['batches']} batches, "
        f"{m['cells']:,} cells) | {m['merge_wall_s']} s | 30 s |",
        f"| measure + assign cells per CPU second (warm) | "
        f"{c['measure_and_assign_cells_per_cpu_s']:,} (measure {c['measure_cells_per_cpu_s']:,}, "
        f"assign {c['assign_cells_per_cpu_s']:,}) | 50,000 |",
        f"| CPU of the jobs after column finding / of the column-finding jobs | "
        f"{f['statistics_cpu_s']} s / {f['find_columns_cpu_s']} s = "
        f"{100 * f['after_over_columns']:.1f} % | 15 % |",
        f"| peak RSS of a batch_statistics job / of the merge | {f['batch_statistics_peak_rss_mb']:.0f} MB"
        f" / {f['merge_peak_rss_mb'] or 0:.0f} MB | flat in images |", ""])


if __name__ == "__main__":
    main()
