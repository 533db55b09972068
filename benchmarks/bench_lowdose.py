#!/usr/bin/env python
"""Low-dose table (#17): latticegenome and Atomap 0.4.2 side by side on the abTEM
multislice HAADF images, per structure and dose.

Images: ``tests/abtem_data.py`` (HAADF 70-200 mrad, 40 pm source blur, Poisson noise at
30, 60, 300 and 5000 electrons per probe position, 4 noise seeds each; the same noisy
image goes to both methods). Structures: sto_001, pto_001 (Pb/Ti, polar: Ti +30 pm along
c), sto_bto_001 (SrTiO3/BaTiO3 superlattice) for both; sto_110 for latticegenome only
(benchmarks/atomap_runner.py places B at the A-cell centre, a [001] motif).

Per structure x dose, interior columns (more than 20 px from every edge):

- recall A / B: the fraction of true columns with a reported column of that site within
  0.2 x the short A-A spacing; for latticegenome also the *detected* fraction (the finder
  reports every A and B lattice site, detected or not);
- RMS error (pm) per site: matched columns (latticegenome: detected ones only);
- RMS / median reported error (latticegenome's own errors, from the Fisher information
  scaled by the dispersion);
- RMS / CRLB: the Cramér-Rao bound of latticegenome's Gaussian model
  (``latticegenome.columns.refine.crlb_position``) at the parameters of its fit to the
  noise-free image, scaled to the dose (Poisson: CRLB ~ 1/sqrt(dose)); the multislice
  columns are not Gaussians, so this is a model bound, the same for both methods;
- offset: |mean error| (pm) over all matched columns and seeds of a site (systematic part);
- bias: the noise-free image (source-blurred signal x 1e6 electrons; at 1e7 latticegenome
  rejects the image, see README): RMS and median |found - true|;
- LG/Atomap: RMS(latticegenome) / RMS(Atomap) over the columns both matched, on the images
  both ran on.

A latticegenome rejection (LatticeGenomeError) is a valid outcome: counted per dose
(n rejected / n), the image left out of the RMS; the same for an Atomap failure.

Atomap (``--atomap PYTHON``: a Python of a separate venv with atomap==0.4.2) runs through
benchmarks/atomap_runner.py in its own process: this package never imports GPL code.

Usage:
    python benchmarks/bench_lowdose.py [--atomap /tmp/atomap-venv/bin/python] [--quick]
        [--atomap-seeds N]

Writes benchmarks/results/lowdose.json and lowdose.md.
"""

from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_k] = "1"

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

EDGE_PX = 20.0
MATCH = 0.2
DOSES = [30.0, 60.0, 300.0, 5000.0]
SEEDS = [0, 1, 2, 3]
#: The "noise-free" image: source-blurred signal x this many electrons per position.
NOISE_FREE_DOSE = 1e6
SITES = ("A", "B")
#: name: (cations, Atomap comparison)
STRUCTURES = {
    "sto_001": ([["Sr", "Ti"]], True),
    "pto_001": ([["Pb", "Ti"]], True),
    "sto_bto_001": ([["Sr", "Ti"], ["Ba", "Ti"]], True),
    "sto_110": ([["Sr", "Ti"]], False),
}
ATOMAP_TIMEOUT_S = 600


def single_thread_env():
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[k] = "1"
    env.pop("PYTHONPATH", None)  # the Atomap venv sees nothing of this package
    return env


def run_atomap(atomap_python, image, path, spacing_px):
    """Atomap on ``image`` in its own process; (columns dict of arrays, seconds) or
    (None, reason)."""
    np.save(path, image)
    try:
        r = subprocess.run([atomap_python, str(HERE / "atomap_runner.py"), str(path), f"{spacing_px:.3f}"],
                           check=False, capture_output=True, text=True, env=single_thread_env(),
                           timeout=ATOMAP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"timeout {ATOMAP_TIMEOUT_S} s"
    if r.returncode != 0:
        last = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        return None, (last[-1][-200:] if last else f"exit {r.returncode}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    cols = {k: np.asarray(v) for k, v in res["columns"].items()}
    return cols, float(res["seconds"])


def interior(x, y, shape, edge=EDGE_PX):
    rows, cols = shape
    return (x > edge) & (x < cols - 1 - edge) & (y > edge) & (y < rows - 1 - edge)


def match(tx, ty, fx, fy, radius):
    """Index of the nearest found column within ``radius`` of each true one (-1: none)."""
    from scipy.spatial import cKDTree

    if fx.size == 0:
        return np.full(tx.size, -1)
    d, j = cKDTree(np.column_stack([fx, fy])).query(np.column_stack([tx, ty]))
    return np.where(d <= radius, j, -1)


def score(truth, found, shape, radius, detected=None, err=None):
    """Per site: interior true indices ``t``, matched found index ``j`` (global, -1
    none), recall, detected fraction, (found - true) of the used columns (``dxy``, px),
    their truth indices ``tu``, reported errors ``err``."""
    tx, ty, ts = truth["x_px"], truth["y_px"], truth["site"].astype(str)
    site = np.asarray(found["site"]).astype(str)
    out = {}
    for s in SITES:
        t = np.flatnonzero((ts == s) & interior(tx, ty, shape))
        f = np.flatnonzero(site == s)
        j = match(tx[t], ty[t], np.asarray(found["x"])[f], np.asarray(found["y"])[f], radius)
        j = np.where(j >= 0, f[np.maximum(j, 0)], -1)
        hit = j >= 0
        use = hit.copy()
        if detected is not None:
            use &= np.asarray(detected, bool)[np.maximum(j, 0)]
        ju, tu = j[use], t[use]
        dxy = np.column_stack([np.asarray(found["x"])[ju] - tx[tu], np.asarray(found["y"])[ju] - ty[tu]])
        ja, ta = j[hit], t[hit]
        dxy_all = np.column_stack([np.asarray(found["x"])[ja] - tx[ta], np.asarray(found["y"])[ja] - ty[ta]])
        r = {"t": t, "j": j, "recall": float(hit.mean()) if t.size else float("nan"),
             "detected": float(use.mean()) if t.size else float("nan"), "dxy": dxy, "tu": tu,
             "dxy_all": dxy_all, "tu_all": ta}
        if err is not None:
            r["err"] = np.column_stack([err[0][ju], err[1][ju]])
        out[s] = r
    return out


def rms(a):
    a = np.asarray(a, float)
    return float(np.sqrt(np.mean(a**2))) if a.size else float("nan")


def crlb_by_truth(ref, truth, shape, radius_match):
    """Gaussian-model CRLB (px, at NOISE_FREE_DOSE) of each true column matched in the
    noise-free fit ``ref``: {truth index: crlb}."""
    from latticegenome.columns.refine import crlb_position

    ok = np.isfinite(ref.x) & np.isfinite(ref.amplitude) & np.isfinite(ref.sigma) & (ref.amplitude > 0)
    k = np.flatnonzero(ok)
    c = crlb_position(shape, ref.x[k], ref.y[k], ref.amplitude[k], ref.sigma[k],
                      float(np.median(ref.background[k])), radius=int(ref.info["window_radius_px"]))
    full = np.full(len(ref.x), np.nan)
    full[k] = c
    out = {}
    sc = score(truth, ref.as_dict(), shape, radius_match)
    for s in SITES:
        for t, j in zip(sc[s]["t"], sc[s]["j"]):
            if j >= 0 and np.isfinite(full[j]):
                out[int(t)] = float(full[j])
    return out


def summarise(acc, px, crlb, dose):
    """Per-site figures from the accumulated per-image scores of one method."""
    out = {}
    for s in SITES:
        per = [a[s] for a in acc]
        if not per:
            continue
        dxy = np.vstack([p["dxy"] for p in per]) if per else np.zeros((0, 2))
        tu = np.concatenate([p["tu"] for p in per])
        r = {"recall_mean": float(np.mean([p["recall"] for p in per])),
             "recall_min": float(np.min([p["recall"] for p in per])),
             "detected_mean": float(np.mean([p["detected"] for p in per])),
             "n": len(dxy), "rms_pm": rms(dxy) * px,
             "rms_all_pm": rms(np.vstack([p["dxy_all"] for p in per])) * px,
             "offset_pm": float(np.hypot(*dxy.mean(axis=0)) * px) if len(dxy) else float("nan"),
             "mean_error_pm": (dxy.mean(axis=0) * px).tolist() if len(dxy) else None}
        if "err" in per[0]:
            err = np.vstack([p["err"] for p in per])
            med = float(np.nanmedian(err)) if np.isfinite(err).any() else float("nan")
            r["median_err_pm"] = med * px
            r["rms_over_err"] = rms(dxy) / med if med > 0 else float("nan")
        if crlb:
            scale = np.sqrt(NOISE_FREE_DOSE / dose)
            c = np.array([crlb.get(int(t), np.nan) for t in tu]) * scale
            k = np.isfinite(c)
            r["crlb_pm"] = rms(c[k]) * px
            r["rms_over_crlb"] = rms(dxy[k] / c[k, None]) if k.any() else float("nan")
        out[s] = r
    return out


def ratio(pairs, px):
    """RMS(LG) / RMS(Atomap) per site over the columns both matched (same images): LG's
    detected columns (``ratio``) and all its reported ones (``ratio_all``)."""
    out = {}
    for s in SITES:
        r = {}
        for key, suffix in (("", ""), ("_all", "_all")):
            lg, am = [], []
            for a_lg, a_am in pairs:
                _, ia, ib = np.intersect1d(a_lg[s]["tu" + key], a_am[s]["tu_all"], return_indices=True)
                lg.append(a_lg[s]["dxy" + key][ia])
                am.append(a_am[s]["dxy_all"][ib])
            if lg and sum(len(v) for v in lg):
                lg, am = np.vstack(lg), np.vstack(am)
                r.update({"n" + suffix: len(lg), "lg_rms_pm" + suffix: rms(lg) * px,
                          "atomap_rms_pm" + suffix: rms(am) * px, "ratio" + suffix: rms(lg) / rms(am)})
        if r:
            out[s] = r
    return out


def zone_of(meta):
    return "".join(re.search(r"\[\s*(-?\d)\s*(-?\d)\s*(-?\d)\s*\]", meta["zone_axis"]).groups())


def bench_structure(name, cations, with_atomap, atomap_python, doses, seeds, atomap_seeds, tmp):
    import abtem_data

    from latticegenome.columns.analysis import analyse_array
    from latticegenome.columns.projection import projection_for
    from latticegenome.core.errors import LatticeGenomeError

    signals, truth, meta = abtem_data.load(name)
    signal = signals["haadf"]
    px = float(meta["pixel_pm"])
    zone = zone_of(meta)
    spacing_pm = 100.0 * min(meta["tile_a"])
    proj = projection_for(zone, cations, spacing_pm)
    short_px = min(proj.cell_pm) / px
    radius = MATCH * short_px
    shape = signal.shape
    use_atomap = bool(with_atomap and atomap_python)

    def lg(image):
        try:
            c = analyse_array(image, px, zone_axis=zone, spacing_pm=spacing_pm, cations=cations)
        except LatticeGenomeError as exc:
            return None, exc.reason
        return c, score(truth, c.as_dict(), shape, radius, detected=c.detected, err=(c.x_err, c.y_err))

    def am(image, tag):
        cols, info = run_atomap(atomap_python, image, Path(tmp) / f"{name}_{tag}.npy", short_px)
        if cols is None or not (np.asarray(cols["site"]) == "B").any():
            return None, (info if cols is None else "no B columns")
        return score(truth, cols, shape, radius), info

    head = {"structure": name, "zone_axis": zone, "cations": cations, "spacing_pm": spacing_pm,
            "pixel_pm": px, "short_spacing_px": short_px, "match_px": radius, "atomap": use_atomap}
    rows = []
    # noise-free: bias, and the parameters of the CRLB
    clean = abtem_data.source_blur(signal, pixel_pm=px) * NOISE_FREE_DOSE
    ref, ref_s = lg(clean)
    row = {"dose": "noise-free", "lg": {"rejected": int(ref is None), "images": 1}}
    crlb = {}
    if ref is None:
        row["lg"]["reasons"] = [ref_s]
    else:
        crlb = crlb_by_truth(ref, truth, shape, radius)
        row["lg"].update(summarise([ref_s], px, None, NOISE_FREE_DOSE))
        for s in SITES:
            row["lg"][s]["median_abs_pm"] = float(np.median(np.hypot(*ref_s[s]["dxy"].T)) * px)
    if use_atomap:
        a_s, info = am(clean, "clean")
        row["atomap"] = {"failed": int(a_s is None), "images": 1}
        if a_s is None:
            row["atomap"]["reasons"] = [info]
        else:
            row["atomap"].update(summarise([a_s], px, None, NOISE_FREE_DOSE))
            for s in SITES:
                row["atomap"][s]["median_abs_pm"] = float(np.median(np.hypot(*a_s[s]["dxy"].T)) * px)
            if ref is not None:
                row["lg_over_atomap"] = ratio([(ref_s, a_s)], px)
    rows.append(row)
    print(f"{name} noise-free: " + json.dumps(jsonable(row))[:400], flush=True)

    for dose in doses:
        t0 = time.perf_counter()
        lg_acc, lg_reasons, am_acc, am_reasons, pairs, am_sec = [], [], [], [], [], []
        n_am = 0
        for seed in seeds:
            rng = np.random.default_rng([seed, int(dose), zlib.crc32(name.encode())])
            img = abtem_data.at_dose(signal, dose, rng, pixel_pm=px)
            c, s_lg = lg(img)
            if c is None:
                lg_reasons.append(s_lg)
            else:
                lg_acc.append(s_lg)
            if use_atomap and seed in atomap_seeds:
                n_am += 1
                a_s, info = am(img, f"{int(dose)}_{seed}")
                if a_s is None:
                    am_reasons.append(info)
                else:
                    am_acc.append(a_s)
                    am_sec.append(info)
                    if c is not None:
                        pairs.append((s_lg, a_s))
        row = {"dose": dose, "lg": {"images": len(seeds), "rejected": len(lg_reasons), "reasons": lg_reasons,
                                    **summarise(lg_acc, px, crlb, dose)}}
        if use_atomap:
            row["atomap"] = {"images": n_am, "failed": len(am_reasons), "reasons": am_reasons,
                             "seconds_per_image": float(np.mean(am_sec)) if am_sec else None,
                             **summarise(am_acc, px, crlb, dose)}
            row["lg_over_atomap"] = ratio(pairs, px)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{name} {dose:g} e ({row['seconds']:.0f} s): " + json.dumps(jsonable(row))[:600], flush=True)
    return {**head, "rows": rows}


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# --------------------------------------------------------------------------- Markdown


def f(v, spec):
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def pair(d, key, spec):
    if not d or "A" not in d:
        return "—"
    return " / ".join(f(d.get(s, {}).get(key), spec) for s in SITES)


def with_all(d, lg, key, key_all):
    """"x / y" per site; "(all z)" after a site where LG detected under 95 % of the columns:
    the figure over every reported column, detected or not."""
    if not d or "A" not in lg:
        return "—"
    out = []
    for s in SITES:
        v = f((d.get(s) or {}).get(key), ".2f")
        if (lg.get(s) or {}).get("detected_mean", 1.0) < 0.95:
            v += f" (all {f((d.get(s) or {}).get(key_all), '.2f')})"
        out.append(v)
    return " / ".join(out)


def table(st) -> list[str]:
    am = st["atomap"]
    hdr = ["e/position", "rejected LG" + (" · Atomap" if am else ""), "recall A / B LG (detected)"]
    if am:
        hdr += ["recall A / B Atomap"]
    hdr += ["RMS A / B LG (pm)"]
    if am:
        hdr += ["RMS A / B Atomap (pm)", "LG/Atomap A / B"]
    hdr += ["RMS/err LG A / B", "RMS/CRLB LG A / B"]
    if am:
        hdr += ["RMS/CRLB Atomap A / B"]
    hdr += ["offset LG A / B (pm)"]
    if am:
        hdr += ["offset Atomap A / B (pm)"]
    L = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in st["rows"]:
        lg, a = r["lg"], r.get("atomap") or {}
        nf = r["dose"] == "noise-free"
        rej = f"{lg['rejected']}/{lg['images']}" + (f" · {a['failed']}/{a['images']}" if am else "")
        rec = pair(lg, "recall_mean", ".2f")
        if "A" in lg:
            rec += f" ({pair(lg, 'detected_mean', '.2f')})"
        cells = [("noise-free (bias)" if nf else f"{r['dose']:g}"), rej, rec]
        if am:
            cells.append(pair(a, "recall_mean", ".2f"))
        cells.append(with_all(lg, lg, "rms_pm", "rms_all_pm"))
        if am:
            rat = r.get("lg_over_atomap") or {}
            # no ratio of two biases of ~0.01 pm
            cells += [pair(a, "rms_pm", ".2f"),
                      with_all(rat, lg, "ratio", "ratio_all") if rat and not nf else "—"]
        cells += [pair(lg, "rms_over_err", ".2f") if not nf else "—",
                  pair(lg, "rms_over_crlb", ".2f") if not nf else "—"]
        if am:
            cells.append(pair(a, "rms_over_crlb", ".2f") if not nf else "—")
        cells.append(pair(lg, "offset_pm", ".2f"))
        if am:
            cells.append(pair(a, "offset_pm", ".2f"))
        L.append("| " + " | ".join(cells) + " |")
    return L


def markdown(res) -> str:
    L = [(f"Low-dose table (#17), `benchmarks/bench_lowdose.py` ({res['mode']}); {res['machine']}; "
          f"{res['date']}; one core; {res['seconds'] / 60:.1f} min."), "",
         (f"abTEM multislice HAADF (tests/abtem_data.py), 40 pm source blur, Poisson noise; "
         f"{res['seeds']} noise seeds per dose for latticegenome (LG), {res['atomap_seeds']} for Atomap "
         f"0.4.2 ({res['atomap_python'] or 'not run'}), the same noisy images. Interior columns "
         f"(> {EDGE_PX:g} px from the edges); a column is found when a reported column of its site lies "
         f"within {MATCH} x the short A-A spacing. Rejected: images LG refused (LatticeGenomeError) or "
         "Atomap failed on, left out of the other figures. Recall: mean over images; (detected): the "
         "LG columns it calls detected. RMS: over both coordinates of the matched columns (LG: detected "
         "only; \"(all x)\" where LG detected < 95 %: over every column it reported). LG/Atomap: RMS ratio over the columns both matched. RMS/err: over LG's median reported "
         "error. RMS/CRLB: CRLB of LG's Gaussian model at its noise-free fit, scaled to the dose "
         "(a model bound: the columns are not Gaussians). Offset: |mean error| over columns and seeds. "
         f"Noise-free row: the source-blurred signal x {NOISE_FREE_DOSE:g} e, no noise; its RMS "
         "columns are the bias."), ""]
    for st in res["structures"]:
        L += [(f"### {st['structure']} [{st['zone_axis']}], cations {st['cations']}, "
               f"{st['pixel_pm']:g} pm/px, A-A {st['short_spacing_px']:.1f} px"), ""]
        L += table(st)
        reasons = {}
        for r in st["rows"]:
            for who in ("lg", "atomap"):
                for why in (r.get(who) or {}).get("reasons") or []:
                    key = (who, re.sub(r"\d+", "N", why))
                    reasons.setdefault(key, []).append(r["dose"])
        if reasons:
            def where(doses):
                n = {d: doses.count(d) for d in dict.fromkeys(doses)}
                return ", ".join(f"{d:g} e: {k}" if isinstance(d, float) else f"{d}: {k}" for d, k in n.items())
            L += [""] + [f"- {'LG rejected' if who == 'lg' else 'Atomap failed'} ({where(doses)}): "
                         f"\"{why}\"" for (who, why), doses in reasons.items()]
        L.append("")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atomap", help="Python of a venv with atomap==0.4.2")
    ap.add_argument("--atomap-seeds", type=int, default=len(SEEDS),
                    help="noise seeds per dose for Atomap (its first N of the seeds)")
    ap.add_argument("--quick", action="store_true", help="one seed, 60 and 5000 e only")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    t0 = time.perf_counter()
    seeds = SEEDS[:1] if args.quick else SEEDS
    doses = [60.0, 5000.0] if args.quick else DOSES
    atomap_seeds = seeds[:max(0, args.atomap_seeds)]
    res = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                      f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
           "mode": "--quick" if args.quick else "full", "seeds": len(seeds),
           "atomap_seeds": len(atomap_seeds) if args.atomap else 0, "atomap_python": args.atomap,
           "doses": doses, "noise_free_dose": NOISE_FREE_DOSE, "edge_px": EDGE_PX, "match": MATCH,
           "structures": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cations, with_atomap) in STRUCTURES.items():
            res["structures"].append(bench_structure(name, cations, with_atomap, args.atomap, doses,
                                                     seeds, atomap_seeds, tmp))
    res["seconds"] = time.perf_counter() - t0
    res = jsonable(res)
    for st in res["structures"]:
        for r in st["rows"]:
            for who in ("lg", "atomap"):
                for s in SITES:
                    ((r.get(who) or {}).get(s) or {}).pop("dxy", None)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lowdose.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (args.out / "lowdose.md").write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
