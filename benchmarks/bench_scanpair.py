#!/usr/bin/env python
"""Scan-distortion correction of orthogonal frame pairs (latticegenome.columns.scanpair).

Simulated 512 x 512 pairs (the simulator of tests/test_scanpair.py: a square ABO3
lattice of Gaussian columns, A-A 16 px, 3 degrees rotation, sigma 2.5 px, 3 %
vacancies and a smooth 30 % brightness bump; each scan line displaced by a linear
drift plus sinusoidal jitter; Poisson noise). image_0 drifts by ``amp * (0.55, 0.83)``
px/line, image_90 by ``amp * (0.45, 0.89)`` (a slightly different direction), the
jitter is ``jitter`` px in x and y (periods 57 and 71 lines).

Per drift amplitude, jitter and dose (integrated counts of an A column), over seeds:

- lattice error before / after: the largest relative error of the lengths of a1 and a2
  (%), and the error of the angle between them (degrees), of the lattice fitted to the column
  positions (peaks of the image, sub-pixel by a local centre of mass, indexed on the
  lattice and fitted by least squares; the same fit before and after). Before: the
  two raw frames (mean of the two); after: the corrected average, pixels covered by
  both frames (8 px in);
- line-offset RMS error (px): RMS length of the per-line offset error over both
  frames' measured lines (``ScanPairResult.measured_0/90``: at least half inside the
  other frame's coverage; lines outside the common field are extrapolated), one
  common translation removed (the gauge of the problem); "measured": the fraction of
  lines that are;
- residuals: normalised RMS difference sqrt(1 - rho) of the two frames raw, after the
  linear drift, after the per-line refinement;
- time: wall time of one ``correct_orthogonal_pair`` call.

Usage:
    python benchmarks/bench_scanpair.py [--quick] [--seeds N]

Writes benchmarks/results/scanpair.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_scanpair import ANGLE, SPACING, line_offset_error, scanned_pair  # noqa: E402

from latticegenome.columns.scanpair import correct_orthogonal_pair  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "scanpair.md"


def peaks(image, sigma=2.5):
    """Column positions (x, y), px: local maxima of the smoothed image refined by
    a background-subtracted centre of mass in a 7 x 7 window."""
    smooth = ndimage.gaussian_filter(image, 1.0)
    pk = peak_local_max(smooth, min_distance=int(2 * sigma), threshold_rel=0.15, exclude_border=4)
    out = []
    for r, c in pk:
        win = smooth[r - 3:r + 4, c - 3:c + 4]
        w = np.clip(win - win.min(), 0, None)
        yy, xx = np.mgrid[-3:4, -3:4]
        out.append((c + (w * xx).sum() / w.sum(), r + (w * yy).sum() / w.sum()))
    return np.array(out)


def fit_lattice(points, basis):
    """Least-squares lattice of ``points`` (A and B together: the centred lattice of
    vectors (a1 +- a2)/2), indexed with ``basis`` from the centre outwards."""
    centre = points[np.argmin(np.sum((points - np.median(points, 0)) ** 2, 1))]
    cell = np.column_stack([(basis[0] + basis[1]) / 2, (basis[0] - basis[1]) / 2])
    for radius in (60.0, 120.0, 200.0, np.inf):
        near = np.sum((points - centre) ** 2, 1) <= radius**2
        ij = np.round(np.linalg.solve(cell, (points[near] - centre).T).T)
        design = np.column_stack([np.ones(len(ij)), ij])
        coef = np.linalg.lstsq(design, points[near], rcond=None)[0]
        cell = coef[1:].T
        centre = coef[0]
    b1, b2 = cell[:, 0], cell[:, 1]
    return b1 + b2, b1 - b2


def lattice_errors(image, mask=None):
    """(largest |a| error in %, angle error in degrees) against the truth."""
    p = peaks(image)
    if mask is not None:
        keep = mask[np.round(p[:, 1]).astype(int), np.round(p[:, 0]).astype(int)]
        p = p[keep]
    th = np.deg2rad(ANGLE)
    truth = SPACING * np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
    a1, a2 = fit_lattice(p, truth)
    n1, n2 = np.linalg.norm(a1), np.linalg.norm(a2)
    ang = np.degrees(np.arccos(abs(a1 @ a2) / n1 / n2))
    return 100 * max(abs(n1 / SPACING - 1), abs(n2 / SPACING - 1)), abs(ang - 90.0)


def one_run(amp, jitter, counts, seed, n):
    d0, d90 = amp * np.array([0.55, 0.83]), amp * np.array([0.45, 0.89])
    f0, f90, o0, o90 = scanned_pair(n=n, drift_0=d0, drift_90=d90, jitter=jitter,
                                    counts=counts, seed=seed)
    t = time.perf_counter()
    res = correct_orthogonal_pair(f0, f90, max_drift=max(0.05, 1.5 * amp))
    dt = time.perf_counter() - t
    before = np.mean([lattice_errors(f0), lattice_errors(f90)], axis=0)
    after = lattice_errors(res.average, ndimage.binary_erosion(res.coverage, iterations=8))
    measured = np.mean(np.r_[res.measured_0, res.measured_90])
    return {"before": before, "after": np.array(after), "line": line_offset_error(res, o0, o90),
            "measured": measured,
            "res": (res.residual_raw, res.residual_linear, res.residual), "time": dt}


def table(rows):
    head = ("| drift (px/line) | jitter (px) | N_A (counts) | seeds "
            "| lattice-parameter error before → after (%) | angle error before → after (°) "
            "| line-offset RMS error (px) | measured | residual raw → linear → final "
            "| time (s) |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for (amp, jit, counts), runs in rows:
        b = np.mean([r["before"] for r in runs], 0)
        a = np.mean([r["after"] for r in runs], 0)
        amax = np.max([r["after"] for r in runs], 0)
        line = [r["line"] for r in runs]
        res = np.mean([r["res"] for r in runs], 0)
        measured = np.mean([r["measured"] for r in runs])
        lines.append(
            f"| {amp:g} | {jit:g} | {counts:g} | {len(runs)} | {b[0]:.2f} → {a[0]:.3f} (max "
            f"{amax[0]:.3f}) | {b[1]:.2f} → {a[1]:.3f} (max {amax[1]:.3f}) | {np.mean(line):.3f} "
            f"(max {np.max(line):.3f}) | {measured:.2f} | {res[0]:.2f} → {res[1]:.2f} → "
            f"{res[2]:.2f} | "
            f"{np.median([r['time'] for r in runs]):.1f} |")
    return head + "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, fewer cases (no file)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    seeds = 1 if args.quick else args.seeds
    cases = [(amp, 0.5, 5655.0) for amp in (0.005, 0.015, 0.03)]
    cases += [(0.015, jit, 5655.0) for jit in (0.0, 1.0)]
    cases += [(0.015, 0.5, counts) for counts in (1000.0, 20000.0)]
    if args.quick:
        cases = cases[:2]
    t0 = time.time()
    rows = []
    for case in cases:
        runs = [one_run(*case, seed=100 + s, n=args.size) for s in range(seeds)]
        rows.append((case, runs))
        print(table([(case, runs)]).splitlines()[-1], flush=True)
    text = (f"Scan-distortion correction of orthogonal frame pairs, "
            f"`benchmarks/bench_scanpair.py`; "
            f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores; "
            f"{datetime.date.today()}; {(time.time() - t0) / 60:.1f} min.\n\n"
            + (__doc__.split("\n\n", 1)[1].split("Usage:")[0]).strip() + "\n\n"
            + f"{args.size} x {args.size} px pairs. Means over seeds (max: the worst seed).\n\n"
            + table(rows))
    print(text)
    if not args.quick:
        OUT.write_text(text, encoding="utf-8")
        print(f"written {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
