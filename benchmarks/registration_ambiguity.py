"""Whole-lattice-vector errors of series registration, before and after the check (issue #19).

Simulated series (latticegenome.dynamics.simulate, no column loss) drift by 0.2 to
1.2 cells per frame along y (0.05 along x), at a high and a low dose, for a
superlattice (A columns of every other three rows of cells 1.9 times brighter:
layers along x, stacked along y) and for one material (periodic). Each series is
found (:func:`find_columns`), registered rigidly, then by the lattice field without
(``before``) and with (``after``) the whole-lattice-vector check. Per setting, over
the frames other than the reference: the fraction registered to the right lattice
site (true A positions within a quarter cell of their reference positions), and the
fraction flagged ambiguous; ``confidently_wrong``: wrong and not flagged;
``prior_only``: frames whose offset along some lattice direction rests on the drift
prior alone (``lattice_shift_evidence`` under 5 standard errors).

Run: ``.venv/bin/python benchmarks/registration_ambiguity.py`` (a few minutes on 2
cores); writes ``benchmarks/results/registration_ambiguity.json`` and ``.md``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from latticegenome.columns.finder import find_columns
from latticegenome.dynamics.registration import apply_registration, register_lattice, register_rigid
from latticegenome.dynamics.simulate import render_frame, series_truth

DRIFTS = (0.2, 0.4, 0.6, 0.8, 1.2)  # cells per frame along y
DOSES = {"high": 2.5e4, "low": 2e3}  # e/A^2 per frame
CONTRASTS = {"superlattice": 1.9, "periodic": 1.0}
SIZE, N_FRAMES, SEEDS = 192, 6, (1, 2)
A_PX = 390.5 / 20.0
OUT = Path(__file__).parent / "results" / "registration_ambiguity"


def frames_of(truth: dict, contrast: float, layers=(3, 3)) -> list[np.ndarray]:
    """Poisson frames; A columns of the second ``layers[1]`` cell rows of each period ``contrast`` x."""
    return [render_frame(truth, k, a_contrast=contrast, layers=layers)
            for k in range(len(truth["time_s"]))]


def right_site(truth: dict, reg: dict) -> np.ndarray:
    """Per frame: the registered true A positions within a quarter cell (RMS) of their reference ones."""
    a = truth["site"] == "A"
    ok = []
    for k in range(len(truth["time_s"])):
        v = a & truth["in_field"][k]
        xr, yr = apply_registration(truth["x"][k, v], truth["y"][k, v], reg, k)
        err = np.sqrt(np.mean((xr - truth["x_ref"][k, v]) ** 2 + (yr - truth["y_ref"][k, v]) ** 2))
        ok.append(bool(err < 0.25 * A_PX))
    return np.array(ok)


def one_setting(drift: float, dose: float, contrast: float) -> dict:
    """The frames (not the reference) of all seeds: right before, right after, ambiguous."""
    before, after, flagged, prior = [], [], [], []
    for seed in SEEDS:
        truth = series_truth(N_FRAMES, (SIZE, SIZE), drift_px_per_frame=(0.05 * A_PX, drift * A_PX),
                             dose_per_frame_e_per_A2=dose, loss_per_dose=0.0, rng=seed)
        frames = frames_of(truth, contrast)
        cols = [find_columns(f, spacing_px=truth["a0_px"]).as_dict() for f in frames]
        rigid = register_rigid(frames)
        before.append(right_site(truth, register_lattice(cols, rigid=rigid, lattice_check=False))[1:])
        reg = register_lattice(cols, rigid=rigid)
        after.append(right_site(truth, reg)[1:])
        flagged.append(reg["lattice_shift_ambiguous"][1:])
        prior.append(reg["lattice_shift_evidence"][1:] < 5)
    before, after, flagged, prior = (np.concatenate(v) for v in (before, after, flagged, prior))
    return {"frames": int(before.size), "right_before": float(before.mean()),
            "right_after": float(after.mean()), "ambiguous": float(flagged.mean()),
            "confidently_wrong": float((~after & ~flagged).mean()), "prior_only": float(prior.mean())}


def main() -> None:
    logging.getLogger("latticegenome.dynamics.registration").setLevel(logging.ERROR)
    t0 = time.time()
    rows = []
    for material, contrast in CONTRASTS.items():
        for dose_name, dose in DOSES.items():
            for drift in DRIFTS:
                r = {"material": material, "dose": dose_name, "dose_e_per_A2": dose,
                     "drift_cells_per_frame": drift, **one_setting(drift, dose, contrast)}
                rows.append(r)
                print(f"{material:12s} {dose_name:4s} drift {drift:.1f}: right {r['right_before']:.2f} -> "
                      f"{r['right_after']:.2f}, ambiguous {r['ambiguous']:.2f}, "
                      f"confidently wrong {r['confidently_wrong']:.2f}, prior only {r['prior_only']:.2f}", flush=True)
    record = {"setup": {"size_px": SIZE, "frames": N_FRAMES, "seeds": list(SEEDS), "a_px": A_PX,
                        "drift_x_cells_per_frame": 0.05, "layers_cells": [3, 3], "contrast": 1.9,
                        "frames_per_setting": rows[0]["frames"]},
              "rows": rows, "seconds": round(time.time() - t0, 1)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(record, indent=1))
    lines = ["| material | dose | drift (cells/frame) | right before | right after | ambiguous | "
             "confidently wrong | prior only |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['material']} | {r['dose']} | {r['drift_cells_per_frame']} | {r['right_before']:.2f} | "
              f"{r['right_after']:.2f} | {r['ambiguous']:.2f} | {r['confidently_wrong']:.2f} | {r['prior_only']:.2f} |" for r in rows]
    OUT.with_suffix(".md").write_text("# Registration: whole-lattice-vector check\n\n" + __doc__.split("\n\n")[1]
                                      + "\n\n" + "\n".join(lines) + "\n")
    print(f"{time.time() - t0:.0f} s; {OUT.with_suffix('.json')}")


if __name__ == "__main__":
    main()
