#!/usr/bin/env python
"""Dynamics benchmark: a long, low-dose series through column finding, registration and tracking.

Series: latticegenome.dynamics.simulate (512x512 px frames of SrTiO3 [001] at 20 pm/px,
drift (0.4, -0.25) px/frame, rotation jitter 0.05 deg, slow-scan shear and stretch of
2e-3, a polar wall moving at 0.5 cells/frame, a 300 -> 600 K ramp, columns lost with the
dose) at a low per-frame dose (default 2000 e/A^2: about 1500 counts per Sr column).

Each run processes the series frame by frame, as a stream: a frame is rendered, its columns
are found (latticegenome.columns.finder.find_columns) and only its column table is kept
(what tracking needs); rigid registration (register_rigid) reads the frames one at a time
again through a lazy sequence; then register_lattice (affine, on A) and assign_tracks.

Figures:

- frames per second per core of the analysis (finding + registration + tracking; the
  rendering of the synthetic frames is timed apart and left out), one thread;
- peak memory (VmHWM, each run in its own process) for 25, 50 and 100 frames: flat in the
  number of frames if the series is streamed;
- registration error per frame against the truth (the fitted field applied to the true
  positions of the A columns in the frame, against their true reference positions), and
  the unregistered error; the residual the registration reports; the rigid shift's error;
- track identity on the columns present throughout;
- precision of the per-frame positions (unregistered, against the truth in the frame):
  RMS error over the finder's reported error, and over the Cramer-Rao bound of the
  Gaussian model at the true parameters of the frame
  (latticegenome.columns.refine.crlb_position, every 10th frame).

Usage:
    python benchmarks/bench_dynamics.py [--frames 100] [--size 512] [--dose 2000] [--quick]

Writes benchmarks/results/dynamics.md.
"""

from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
           "NUMBA_NUM_THREADS"):
    os.environ[_k] = "1"

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from latticegenome.core._memory import return_freed_memory  # noqa: E402
from latticegenome.dynamics.registration import (  # noqa: E402
    apply_registration,
    assign_tracks,
    register_lattice,
    register_rigid,
)
from latticegenome.dynamics.simulate import render_frame, series_truth  # noqa: E402

SEED = 20260502


def vm_hwm_mib() -> float:
    """Peak resident set of this process, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class LazyFrames:
    """The frames of a series, rendered when asked for (one at a time), render time counted."""

    def __init__(self, truth):
        self.truth, self.render_s = truth, 0.0

    def __len__(self):
        return len(self.truth["time_s"])

    def __getitem__(self, k):
        t = time.perf_counter()
        frame = render_frame(self.truth, int(k))
        self.render_s += time.perf_counter() - t
        return frame


def _truth_of(cols, truth, k, gate):
    """Truth column of every detected column of frame k (nearest present one of its site), or -1."""
    from scipy.spatial import cKDTree

    out = np.full(len(cols["x"]), -1)
    for site in ("A", "B"):
        t = np.flatnonzero(truth["present"][k] & (truth["site"] == site))
        f = np.flatnonzero(cols["detected"] & (cols["site"] == site))
        if not t.size or not f.size:
            continue
        dist, idx = cKDTree(np.column_stack([truth["x"][k, t], truth["y"][k, t]])).query(
            np.column_stack([cols["x"][f], cols["y"][f]]), distance_upper_bound=gate)
        ok = np.isfinite(dist)
        out[f[ok]] = t[idx[ok]]
    return out


def run_series(n_frames: int, size: int, dose: float, crlb_every: int) -> dict:
    """One streamed run: find, register, track; timings, memory and figures against the truth."""
    from latticegenome.columns.finder import find_columns

    return_freed_memory()
    truth = series_truth(n_frames, (size, size), dose_per_frame_e_per_A2=dose, rng=SEED)
    frames = LazyFrames(truth)
    cols, find_s, radius = [], 0.0, []
    for k in range(n_frames):
        frame = frames[k]
        t = time.perf_counter()
        c = find_columns(frame, spacing_px=truth["a0_px"])
        find_s += time.perf_counter() - t
        cols.append(c.as_dict())
        radius.append(c.info["window_radius_px"])
        del frame, c
    render_before = frames.render_s
    t = time.perf_counter()
    rigid = register_rigid(frames)
    reg = register_lattice(cols, rigid=rigid, order=1)
    tracks = assign_tracks(cols, reg)
    rest_s = time.perf_counter() - t - (frames.render_s - render_before)
    out = {"n_frames": n_frames, "size": size, "dose": dose, "counts_sr": truth["counts_sr"],
           "find_s": find_s, "register_track_s": rest_s, "render_s": frames.render_s,
           "fps": n_frames / (find_s + rest_s), "vm_hwm_mib": vm_hwm_mib()}
    out.update(figures(truth, cols, reg, tracks, rigid, radius, crlb_every))
    return out


def registration_figures(truth, reg, rigid) -> dict:
    """Registration error per frame (truth A positions, registered), unregistered error, residual."""
    a = truth["site"] == "A"
    err, raw = [], []
    for k in range(len(truth["time_s"])):
        v = a & truth["present"][k] & truth["in_field"][k]
        xr, yr = apply_registration(truth["x"][k, v], truth["y"][k, v], reg, k)
        err.append(float(np.sqrt(np.mean((xr - truth["x_ref"][k, v]) ** 2 + (yr - truth["y_ref"][k, v]) ** 2))))
        raw.append(float(np.sqrt(np.mean((truth["x"][k, v] - truth["x_ref"][k, v]) ** 2
                                         + (truth["y"][k, v] - truth["y_ref"][k, v]) ** 2))))
    rigid_err = np.hypot(*(rigid["shift_px"] - truth["shift_px"]).T)
    return {"reg_error_px": err, "unregistered_px": raw, "residual_px": reg["residual_rms_px"].tolist(),
            "residual_expected_px": reg["residual_expected_px"].tolist(),
            "field_error_px": reg["field_error_px"].tolist(),
            "n_matched": reg["n_matched"].tolist(), "rigid_error_max_px": float(rigid_err.max()),
            "rigid_search_px": float(rigid["search_radius_px"]), "reg_ok": int(reg["ok"].sum())}


def identity_figures(truth, cols, tracks, match) -> dict:
    """Track identity on the truth columns present (and found) in every frame."""
    from latticegenome.columns.geometry import in_frame

    n = len(tracks)
    inside = in_frame(truth["x"], truth["y"], truth["shape"], -2.0)
    keep = np.flatnonzero((truth["present"] & inside).all(axis=0))
    ids = np.full((n, keep.size), -2)
    for k in range(n):
        row = np.full(len(truth["site"]), -1)
        hit = match[k] >= 0
        row[match[k][hit]] = np.flatnonzero(hit)
        r = row[keep]
        ids[k] = np.where(r >= 0, tracks[k][np.maximum(r, 0)], -2)
    found = (ids >= 0).all(axis=0)
    same = found & (ids == ids[0]).all(axis=0)
    unique = len(np.unique(ids[0][same])) == same.sum()
    return {"throughout": int(keep.size), "found_throughout": int(found.sum()),
            "identity": float(same.sum() / max(1, found.sum())), "ids_unique": bool(unique),
            "n_tracks": int(len(np.unique(np.concatenate([t[t >= 0] for t in tracks]))))}


def precision_figures(truth, cols, match, radius, crlb_every) -> dict:
    """Per-frame positions against the truth: RMS / reported error, RMS / CRLB, per site."""
    from latticegenome.columns.model import amplitude_for_counts
    from latticegenome.columns.refine import crlb_position
    from latticegenome.columns.simulate import column_brightness

    h_a = amplitude_for_counts(truth["counts_sr"], truth["sigma_px"])
    amp = np.where(truth["site"] == "A", h_a, column_brightness("Ti", 1) / column_brightness("Sr") * h_a)
    out = {}
    for site in ("A", "B"):
        d2, e2, c2, detected, sites = [], [], [], 0, 0
        for k in range(0, len(cols), crlb_every):
            c, m = cols[k], match[k]
            inner = _inner(truth, k)
            f = np.flatnonzero((m >= 0) & (c["site"] == site) & np.isin(m, inner))
            t = m[f]
            d2.append(np.r_[c["x"][f] - truth["x"][k, t], c["y"][f] - truth["y"][k, t]])
            e2.append(np.r_[c["x_err"][f], c["y_err"][f]])
            on = np.flatnonzero(truth["present"][k])
            crlb = crlb_position(truth["shape"], truth["x"][k, on], truth["y"][k, on], amp[on],
                                 truth["sigma_px"], truth["background"], radius=int(round(radius[k])))
            pos = {int(v): q for q, v in enumerate(on)}
            c2.append(crlb[[pos[int(v)] for v in t]])
            sites += int(np.isin(inner, np.flatnonzero(truth["site"] == site)).sum())
            detected += f.size
        d, e, cr = np.concatenate(d2), np.concatenate(e2), np.concatenate(c2)
        rms = float(np.sqrt(np.mean(d**2)))
        out[site] = {"n": int(d.size // 2), "detected": detected / max(1, sites), "rms_px": rms,
                     "rms_pm": rms * truth["pixel_size_pm"],
                     "rms_over_reported": rms / float(np.sqrt(np.nanmean(e**2))),
                     "rms_over_crlb": rms / float(np.sqrt(np.nanmean(cr**2))),
                     "crlb_pm": float(np.sqrt(np.nanmean(cr**2))) * truth["pixel_size_pm"]}
    return out


def _inner(truth, k) -> np.ndarray:
    """Present truth columns more than 3 widths inside frame k (no edge effects)."""
    from latticegenome.columns.geometry import in_frame

    inside = in_frame(truth["x"][k], truth["y"][k], truth["shape"], -3 * truth["sigma_px"])
    return np.flatnonzero(truth["present"][k] & inside)


def figures(truth, cols, reg, tracks, rigid, radius, crlb_every) -> dict:
    match = [_truth_of(c, truth, k, 0.25 * truth["a0_px"]) for k, c in enumerate(cols)]
    out = registration_figures(truth, reg, rigid)
    out.update(identity_figures(truth, cols, tracks, match))
    out["precision"] = precision_figures(truth, cols, match, radius, crlb_every)
    lost = truth["present"][0] & ~truth["present"][-1]
    out["lost_columns"] = int(lost.sum())
    return out


def _child(n: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", str(n), "--size", str(args.size), "--dose", str(args.dose),
           "--crlb-every", str(args.crlb_every)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def write_report(runs: list[dict], args) -> str:
    big = runs[-1]
    err = np.array(big["reg_error_px"][1:])
    raw = np.array(big["unregistered_px"][1:])
    res = np.array(big["residual_px"][1:])
    lines = [
        "# Dynamics: a series through column finding, registration and tracking",
        "",
        f"`python benchmarks/bench_dynamics.py{' --quick' if args.quick else ''}` "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, one thread per run; "
        f"numpy {np.__version__}).",
        "",
        f"Series: {big['n_frames']} frames of {big['size']}x{big['size']} px, SrTiO3 [001] at 20 pm/px, "
        f"{big['dose']:.0f} e/A^2 per frame ({big['counts_sr']:.0f} counts per Sr column), drift "
        "(0.4, -0.25) px/frame, rotation jitter 0.05 deg, slow-scan shear/stretch 2e-3, 300 -> 600 K, "
        f"a polar wall at 0.5 cells/frame; {big['lost_columns']} columns lost to the dose by the end. "
        "Streamed: each frame rendered, found and dropped (its column table kept).",
        "",
        "## Speed and memory",
        "",
        "| frames | find (s) | register + track (s) | fps per core | peak memory VmHWM (MiB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(f"| {r['n_frames']} | {r['find_s']:.1f} | {r['register_track_s']:.2f} | {r['fps']:.2f} | "
                     f"{r['vm_hwm_mib']:.0f} |")
    lines += [
        "",
        "(Rendering the synthetic frames is left out of the times.)",
        "",
        "## Registration and identity (largest run)",
        "",
        f"- registration error per frame (fitted affine field on the true A positions vs their true "
        f"reference positions): median {np.median(err):.4f} px, max {err.max():.4f} px "
        f"({int((err <= 0.05).sum())}/{err.size} frames <= 0.05 px); unregistered: "
        f"{raw.min():.2f} to {raw.max():.2f} px; the field's own reported uncertainty "
        f"(`field_error_px`): median {np.nanmedian(big['field_error_px'][1:]):.4f} px, max "
        f"{np.nanmax(big['field_error_px'][1:]):.4f} px",
        f"- reported residual (found columns vs the reference frame's): median {np.median(res):.3f} px, "
        f"max {res.max():.3f} px; what the reported errors of both frames explain: median "
        f"{np.nanmedian(big['residual_expected_px'][1:]):.3f} px; matched A per frame "
        f"{min(big['n_matched'][1:])}-{max(big['n_matched'][1:])}",
        f"- rigid shift (cross-correlation, peak looked for within {big['rigid_search_px']:.1f} px of the "
        f"previous shift plus the step): max error {big['rigid_error_max_px']:.2f} px; lattice fit ok in "
        f"{big['reg_ok']}/{big['n_frames']} frames",
        f"- track identity on the {big['found_throughout']} columns present and found in every frame "
        f"(of {big['throughout']} present throughout): {100 * big['identity']:.2f} %, ids unique: "
        f"{big['ids_unique']}; {big['n_tracks']} tracks in all",
        "",
        f"## Per-frame precision at {big['dose']:.0f} e/A^2 (every {args.crlb_every}th frame, "
        "columns 3 widths inside)",
        "",
        "| site | columns | detected | RMS (pm) | CRLB (pm) | RMS / reported error | RMS / CRLB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for site, p in big["precision"].items():
        lines.append(f"| {site} | {p['n']} | {100 * p['detected']:.1f} % | {p['rms_pm']:.2f} | {p['crlb_pm']:.2f} | "
                     f"{p['rms_over_reported']:.2f} | {p['rms_over_crlb']:.2f} |")
    lines += ["", "RMS per coordinate against the truth in the frame (not registered); CRLB of the "
              "Gaussian model the finder fits, at the true parameters, with the other columns' tails.", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--dose", type=float, default=2000.0)
    ap.add_argument("--crlb-every", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="25 frames of 256 px, memory at 10 / 25")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_series(args.child, args.size, args.dose, args.crlb_every)))
        return
    if args.quick:
        args.frames, args.size, args.crlb_every = 25, 256, 5
    counts = sorted({max(2, args.frames // 4), max(2, args.frames // 2), args.frames})
    runs = []
    for n in counts:
        t = time.perf_counter()
        runs.append(_child(n, args))
        print(f"{n} frames: {time.perf_counter() - t:.0f} s wall, {runs[-1]['fps']:.2f} fps, "
              f"{runs[-1]['vm_hwm_mib']:.0f} MiB", flush=True)
    text = write_report(runs, args)
    print(text)
    if not args.quick:
        out = ROOT / "benchmarks" / "results" / "dynamics.md"
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
