#!/usr/bin/env python
"""Instrument corrections on simulated artefacts: do the displacement reference and the
calibration give back the truth when the images carry a mistilt-like offset, a probe
tail and a slow-scan drift?

Images: ``latticegenome.columns.simulate.simulate_superlattice``, SrTiO3/BaTiO3 (the
demo's :data:`DEMO_MATERIALS`: SrTiO3 centrosymmetric, a = c = 390.5 pm; BaTiO3 coherent,
c = 412 pm, B displaced +12 pm along the stacking axis y), 448 px at 20 pm/px, 5 + 5 cell
layers, a random rotation within +-3 deg, Poisson noise (6000 counts on a Sr column),
``--seeds`` seeds (default 10). Artefact settings:

- ``none``: no artefact (the method's own floor);
- ``offset``: every B column moved +10 pm along y (mistilt-like; added to each material's
  polar displacement, as the demo's ``offset_pm``);
- ``tail``: a coma-like probe tail (``probe_tail=(0.2, 3 px, (0, 4 px))``: a fifth of the
  intensity in a Gaussian of 3 px = 60 pm convolved with the 60 pm column, shifted 80 pm
  along y);
- ``weak tail``: the same tail with 5 % of the intensity;
- ``scan``: slow-scan drift of (0.002, 0.004) px per row (0.4 % stretch of the slow
  axis, 0.2 % shear) and the file's pixel size 2 % too large;
- ``all``: the three together.

Columns: ``latticegenome.columns.finder.find_columns``. Cells: the statistics' own path,
``latticegenome.statistics.aggregate.measure_image_cells``, before (no corrections, the
file's pixel size) and after the corrections an experiment's settings make
(``Experiment.corrections()``), two ways:

- ``layers``: SrTiO3 flagged ``centrosymmetric: true`` (its layers, told by
  ``material_mask``, are the displacement reference), ``calibrate_to: SrTiO3``
  (the calibration then runs in the SrTiO3 layers, one origin per layer: the settings'
  default without a region);
- ``box``: ``displacement_reference_region_px`` a box over one SrTiO3 layer (from the
  truth, as a user would draw it), which is then also the calibration region.

Per setting x way, medians over the cells of each image, then mean and worst over seeds:
dy of SrTiO3 cells (truth 0), dy of BaTiO3 cells minus the truth 12 pm (without the
injected offset), in-plane a over all cells vs 390.5 pm (%), out-of-plane b of the
SrTiO3 cells vs 390.5 pm and of the BaTiO3 cells vs 412 pm (%), and scatter / reported
error of the SrTiO3 cells' displacements (x and y pooled; before: the Fisher errors,
after: the scaled ones). Floors (from the issue): SrTiO3 |dy| < 1 pm, BaTiO3 within
1.5 pm, lattice parameter within 0.3 %, scatter / error within 0.8-1.25, on every seed.

Usage:
    python benchmarks/bench_corrections.py [--seeds N] [--quick]

Writes benchmarks/results/corrections.json and corrections.md.
"""

from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_k] = "1"

import argparse
import json
import time
from pathlib import Path

import numpy as np

from latticegenome.columns.finder import find_columns
from latticegenome.columns.simulate import DEMO_MATERIALS, simulate_superlattice
from latticegenome.core.settings import Experiment
from latticegenome.statistics.aggregate import measure_image_cells
from latticegenome.statistics.reference import material_mask

HERE = Path(__file__).resolve().parent
SIZE, PIXEL_PM = 448, 20.0
STO, BTO = DEMO_MATERIALS
POLAR_TRUTH = BTO["polar_pm"]  # 12 pm, BaTiO3; SrTiO3 0
A_TRUTH = STO["a_pm"]  # coherent: every cell's in-plane a
B_TRUTH = {"SrTiO3": STO["c_pm"], "BaTiO3": BTO["c_pm"]}

OFFSET = {"offset_pm": 10.0}
TAIL = {"probe_tail": (0.2, 3.0, (0.0, 4.0))}
WEAK_TAIL = {"probe_tail": (0.05, 3.0, (0.0, 4.0))}
SCAN = {"drift_px_per_row": (0.002, 0.004), "pixel_error": 0.02}
SETTINGS = {
    "none": {},
    "offset": OFFSET,
    "tail": TAIL,
    "weak tail": WEAK_TAIL,
    "scan": SCAN,
    "all": {**OFFSET, **TAIL, **SCAN},
}
DESCRIBE = {
    "none": "no artefact",
    "offset": "+10 pm on every B along y (mistilt-like)",
    "tail": "probe tail, 20 % of the intensity blurred by 3 px (60 pm) and shifted (0, +4) px",
    "weak tail": "the same tail with 5 % of the intensity",
    "scan": "slow-scan drift (0.002, 0.004) px per row (0.4 % slow-axis stretch, 0.2 % shear) "
            "and the file's pixel size 2 % too large",
    "all": "the three together",
}
FLOORS = {"sto_dy_pm": 1.0, "bto_dy_pm": 1.5, "lattice_pct": 0.3, "scale": (0.8, 1.25)}
MATERIALS = [
    {"name": "SrTiO3", "formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": STO["a_pm"],
     "centrosymmetric": True},
    {"name": "BaTiO3", "formula": "BaTiO3", "A": "Ba", "B": "Ti", "a_pm": BTO["a_pm"]},
]


def simulate(setting: dict, seed: int):
    """One image of a setting: image, truth, the file's pixel size and the rotation."""
    rng = np.random.default_rng([20261202, seed])
    angle = float(rng.uniform(-3, 3))
    off = setting.get("offset_pm", 0.0)
    mats = [dict(m, polar_pm=m["polar_pm"] + off) for m in DEMO_MATERIALS]
    img, truth, meta = simulate_superlattice(
        (SIZE, SIZE), pixel_size_pm=PIXEL_PM, materials=mats, angle_deg=angle,
        drift_px_per_row=setting.get("drift_px_per_row", (0.0, 0.0)), rng=rng,
        probe_tail=setting.get("probe_tail"))
    return img, truth, PIXEL_PM * (1.0 + setting.get("pixel_error", 0.0)), meta


def sto_layer_box(truth, shape) -> list[float]:
    """A box (px) over the most central SrTiO3 layer that lies wholly in the image: its
    B rows +-12 px along y (the bounding A planes are 9.8 px beyond the outer B rows, the
    next BaTiO3 planes 30 px). The rotation tilts the rows (up to 12 px across half the
    image at 3 deg), so the box is narrowed, about the centre, to where a row moves by
    less than 4 px."""
    b = (truth.site == "B") & (truth.layer == 0) & truth.present
    j = np.unique(truth.j[b])
    runs = np.split(j, np.where(np.diff(j) > 1)[0] + 1)
    rows, cols = shape
    best, score = None, np.inf
    for run in runs:
        sel = b & np.isin(truth.j, run)
        y = truth.y[sel]
        if len(run) < 5 or y.min() < 20 or y.max() > rows - 20:
            continue
        d = abs(np.median(y) - rows / 2)
        if d < score:
            best, score = run, d
    if best is None:
        raise ValueError("no SrTiO3 layer wholly in the image")
    sel = b & np.isin(truth.j, best)
    # the rows' tilt across the image: fit y = y0 + slope x over the layer's B sites
    row = sel & (truth.j == best[0])
    slope = np.polyfit(truth.x[row], truth.y[row], 1)[0]
    half = min((cols - 1) / 2, 4.0 / max(abs(slope), 1e-6))
    x0, x1 = (cols - 1) / 2 - half, (cols - 1) / 2 + half
    inx = sel & (truth.x >= x0) & (truth.x <= x1)
    return [float(x0), float(truth.y[inx].min() - 12), float(x1), float(truth.y[inx].max() + 12)]


def label_agreement(cells, truth, bto) -> float:
    """The fraction of cells whose ``material_mask`` label is the truth's: the material of
    the true B site nearest to the cell centre."""
    from scipy.spatial import cKDTree

    b = truth.site == "B"
    _, k = cKDTree(np.column_stack([truth.x[b], truth.y[b]])).query(
        np.column_stack([cells["x"], cells["y"]]))
    return float(np.mean((truth.layer[b][k] == 1) == bto))


def experiment(way: str, box=None) -> Experiment:
    extra = {"displacement_reference_region_px": box} if way == "box" else {}
    return Experiment(facility="f", path="p", materials=MATERIALS, calibrate_to="SrTiO3", **extra)


def _scatter_over_error(cells, mask) -> float:
    ok = mask & np.asarray(cells["B_detected"], bool) & np.isfinite(cells["dx_err_pm"]) \
        & np.isfinite(cells["dx_pm"])
    var = sum(np.var(np.asarray(cells[f"d{a}_pm"])[ok]) for a in "xy")
    ms = sum(np.mean(np.asarray(cells[f"d{a}_err_pm"])[ok] ** 2) for a in "xy")
    return float(np.sqrt(var / ms))


def figures(cells, bto, shape=(SIZE, SIZE)) -> dict:
    """The medians of one image's cells (``bto``: the BaTiO3 cells); the scatter / error
    also over the interior cells only (centres more than one cell, 20 px, from every edge)."""
    sto = ~bto
    x, y = np.asarray(cells["x"]), np.asarray(cells["y"])
    interior = (x > 20) & (x < shape[1] - 21) & (y > 20) & (y < shape[0] - 21)

    def med(key, m):
        return float(np.nanmedian(np.asarray(cells[key], float)[m]))

    return {
        "sto_dy_pm": med("dy_pm", sto), "sto_dx_pm": med("dx_pm", sto),
        "bto_dy_err_pm": med("dy_pm", bto) - POLAR_TRUTH,
        "a_pct": 100 * (med("a_pm", np.ones_like(bto)) / A_TRUTH - 1),
        "b_sto_pct": 100 * (med("b_pm", sto) / B_TRUTH["SrTiO3"] - 1),
        "b_bto_pct": 100 * (med("b_pm", bto) / B_TRUTH["BaTiO3"] - 1),
        "scatter_over_error": _scatter_over_error(cells, sto),
        "scatter_over_error_interior": _scatter_over_error(cells, sto & interior),
    }


def run_one(setting: dict, seed: int) -> dict:
    img, truth, px_file, _ = simulate(setting, seed)
    cols = find_columns(img, spacing_px=A_TRUTH / PIXEL_PM).as_dict()
    box = sto_layer_box(truth, img.shape)
    out = {"seed": seed, "box_px": box}
    raw = measure_image_cells(cols, px_file, A_TRUTH)
    raw.pop("_applied")
    layers_corr = experiment("layers").corrections()
    bto = material_mask(raw, "BaTiO3", layers_corr["materials"])
    out["bto_fraction"] = float(bto.mean())
    out["label_agreement"] = label_agreement(raw, truth, bto)
    out["before"] = figures(raw, bto)
    for way in ("layers", "box"):
        corr = experiment(way, box).corrections()
        cells = measure_image_cells(cols, px_file, A_TRUTH, corrections=corr)
        applied = cells.pop("_applied")
        mask = material_mask(cells, "BaTiO3", layers_corr["materials"])
        fig = figures(cells, mask)
        ref, cal = applied["displacement_reference"], applied["calibration"]
        fig.update(offset_dy_pm=ref["dy_pm"], offset_dx_pm=ref["dx_pm"],
                   error_scale=ref["error_scale"], reference_cells=ref["cells"],
                   calibrated_pixel_size_pm=cal["calibrated_pixel_size_pm"],
                   scale_i=cal["scale_i"], scale_j=cal["scale_j"])
        out[way] = fig
    # the probe tail measured on the image and taken out (analysis.probe_tail: correct),
    # then the layers' reference and calibration
    found = find_columns(img, spacing_px=A_TRUTH / PIXEL_PM, probe_tail="correct")
    cells = measure_image_cells(found.as_dict(), px_file, A_TRUTH,
                                corrections=experiment("layers").corrections())
    applied = cells.pop("_applied")
    fig = figures(cells, material_mask(cells, "BaTiO3", layers_corr["materials"]))
    ref, tail = applied["displacement_reference"], found.info["probe_tail"]
    fig.update(offset_dy_pm=ref["dy_pm"], offset_dx_pm=ref["dx_pm"],
               error_scale=ref["error_scale"], tail_fraction=tail["estimate"]["fraction"],
               tail_removed=float(tail["applied"]))
    out["tail+layers"] = fig
    return out


PARTS = ("before", "layers", "box", "tail+layers")


def summarise(runs: list[dict], key: str, part: str) -> dict:
    v = np.array([r[part][key] for r in runs], float)
    ideal = 1.0 if key.startswith("scatter_over_error") else 0.0
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "worst": float(v[np.argmax(np.abs(v - ideal))])}


def floors_met(runs, part) -> dict:
    """Each floor on every seed (lattice: in-plane a and the SrTiO3 out-of-plane b; the
    BaTiO3 b is reported beside them)."""
    v = {k: np.array([r[part][k] for r in runs]) for k in runs[0][part]}
    lo, hi = FLOORS["scale"]
    return {
        "sto_dy": bool(np.all(np.abs(v["sto_dy_pm"]) < FLOORS["sto_dy_pm"])),
        "bto_dy": bool(np.all(np.abs(v["bto_dy_err_pm"]) < FLOORS["bto_dy_pm"])),
        "a": bool(np.all(np.abs(v["a_pct"]) < FLOORS["lattice_pct"])),
        "b_sto": bool(np.all(np.abs(v["b_sto_pct"]) < FLOORS["lattice_pct"])),
        "scale": bool(np.all((v["scatter_over_error"] > lo) & (v["scatter_over_error"] < hi))),
    }


COLS = [("sto_dy_pm", "SrTiO3 dy (pm, truth 0)", "{:+.2f}"),
        ("bto_dy_err_pm", "BaTiO3 dy - 12 (pm)", "{:+.2f}"),
        ("a_pct", "a vs 390.5 (%)", "{:+.2f}"),
        ("b_sto_pct", "b SrTiO3 vs 390.5 (%)", "{:+.2f}"),
        ("b_bto_pct", "b BaTiO3 vs 412 (%)", "{:+.2f}"),
        ("scatter_over_error", "SrTiO3 scatter / error", "{:.2f}"),
        ("scatter_over_error_interior", "same, interior cells", "{:.2f}")]


def _cell(s, fmt):
    return f"{fmt.format(s['mean'])} ({fmt.format(s['worst'])})"


def markdown(result: dict) -> str:
    lines = [
        "# Instrument corrections on simulated artefacts",
        "",
        f"`benchmarks/bench_corrections.py`, {result['seeds']} seeds per setting, "
        f"{SIZE} px SrTiO3/BaTiO3 images at {PIXEL_PM:g} pm/px, run {result['date']} "
        f"in {result['seconds']:.0f} s. Each figure: the mean over seeds of the per-image "
        "median, and in brackets the worst seed. `before`: no correction, the file's pixel "
        "size; `layers`: SrTiO3 `centrosymmetric: true` + `calibrate_to: SrTiO3` (calibration "
        "in the SrTiO3 layers, one origin per layer); `box`: `displacement_reference_region_px` over one SrTiO3 "
        "layer (reference and calibration there); `tail+layers`: `analysis.probe_tail: "
        "correct` (the tail measured on the image, taken out when off-centre), then `layers`. "
        "Floors: SrTiO3 |dy| < 1 pm, BaTiO3 "
        "within 1.5 pm of 12 pm, a and b of SrTiO3 within 0.3 %, scatter / error 0.8-1.25, "
        "on every seed (a failed floor is marked **bold**).",
        "",
        "| setting | correction | " + " | ".join(c[1] for c in COLS)
        + " | offset found (pm) | tail fraction found (images it was taken out of) |",
        "|---|---|" + "---|" * (len(COLS) + 2),
    ]
    floor_of = {"sto_dy_pm": "sto_dy", "bto_dy_err_pm": "bto_dy", "a_pct": "a",
                "b_sto_pct": "b_sto", "scatter_over_error": "scale"}
    for name, entry in result["settings"].items():
        for part in PARTS:
            s, met = entry["summary"][part], entry["floors"][part]
            cells = []
            for key, _, fmt in COLS:
                text = _cell(s[key], fmt)
                if key in floor_of and not met[floor_of[key]]:
                    text = f"**{text}**"
                cells.append(text)
            off = _cell(s["offset_dy_pm"], "{:+.2f}") if "offset_dy_pm" in s else "-"
            tail = (f"{s['tail_fraction']['mean']:.3f} ({100 * s['tail_removed']['mean']:.0f} %)"
                    if "tail_fraction" in s else "-")
            lines.append(f"| {name} | {part} | " + " | ".join(cells) + f" | {off} | {tail} |")
    agree = [r["label_agreement"] for e in result["settings"].values() for r in e["runs"]]
    lines += ["", "Artefacts: " + "; ".join(f"`{k}`: {v}" for k, v in DESCRIBE.items()) + ".",
              f"Layer labels (`material_mask`) agree with the truth for {100 * min(agree):.1f}-"
              f"{100 * max(agree):.1f} % of the cells.", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="two seeds, no files written")
    args = ap.parse_args(argv)
    seeds = range(2 if args.quick else args.seeds)
    t0 = time.time()
    result = {"date": time.strftime("%Y-%m-%d"), "seeds": len(seeds), "size_px": SIZE,
              "pixel_size_pm": PIXEL_PM, "floors": FLOORS, "settings": {},
              "artefacts": {k: {kk: list(vv) if isinstance(vv, tuple) else vv
                                for kk, vv in v.items()} or "none" for k, v in SETTINGS.items()}}
    for name, setting in SETTINGS.items():
        runs = [run_one(setting, s) for s in seeds]
        entry = {"runs": runs, "summary": {}, "floors": {}}
        for part in PARTS:
            entry["summary"][part] = {k: summarise(runs, k, part) for k in runs[0][part]}
            entry["floors"][part] = floors_met(runs, part)
        result["settings"][name] = entry
        sm = entry["summary"]
        print(f"{name:7s} " + "  ".join(
            f"{part}: sto {sm[part]['sto_dy_pm']['mean']:+.2f} bto {sm[part]['bto_dy_err_pm']['mean']:+.2f} "
            f"a {sm[part]['a_pct']['mean']:+.2f}% bS {sm[part]['b_sto_pct']['mean']:+.2f}% "
            f"s/e {sm[part]['scatter_over_error']['mean']:.2f}" for part in PARTS),
            flush=True)
    result["seconds"] = time.time() - t0
    md = markdown(result)
    print(md)
    if not args.quick:
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        (out / "corrections.json").write_text(json.dumps(result, indent=1, default=float))
        (out / "corrections.md").write_text(md)
    return result


if __name__ == "__main__":
    main()
