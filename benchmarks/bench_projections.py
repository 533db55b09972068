#!/usr/bin/env python
"""Benchmark of projections ([001], [110]), contrast (HAADF, ABF) and the self-check
on real and simulated images (issue 16), with overlay figures to look at.

Three parts, one core (BLAS/OpenMP threads = 1):

1. real images read as data from PyPI wheels (tests/wheeldata.py; the GPL packages
   are never installed or imported): the atomap 0.4.2 SrTiO3 [110] ADF and ABF crops
   (recorded simultaneously) analysed as [110] HAADF, [110] ABF, [001] HAADF (must be
   rejected), [001] ABF and ADF as ABF (wrong contrast); the temul-toolkit 0.1.9 MoS2
   DM3 and Au EMD with the default settings. Columns per site or the reason of the
   rejection, the self-check's figures, an overlay PNG per accepted image; ADF against
   ABF after the median rigid shift (RMS per axis of the interior A, B, O columns, more
   than 20 px from the edges) and the median reported errors;
2. Gaussian images (latticegenome.columns.simulate.simulate_projected, 256² px, a = 28 px)
   [110] HAADF, [110] ABF, [001] ABF at three doses: interior recall per site, RMS error
   over the exact Poisson Cramér-Rao bound (HAADF: crlb_position of the same model and
   window as the fit), RMS over the median reported error (every case; for ABF the only
   honest-error figure: the image is 2 bg - columns, whose Poisson variance is not the
   one of the fitted inverted model), and the noise-free bias;
3. multislice images (abTEM, tests/abtem_data.py, whatever structures exist): HAADF for
   all, ABF for sto_001 and sto_110, at 30, 60, 300 and 5000 electrons per probe
   position (40 pm source blur, Poisson noise) and noise-free (the blurred signal scaled
   to 1e6 counts): interior recall per site, RMS and bias (pm) against the true column
   positions, RMS over the median reported error; an overlay PNG per structure and
   detector at 300 e.

Usage:
    python benchmarks/bench_projections.py [--quick] [--only real|gaussian|abtem]

Prints the figures and writes benchmarks/results/projections.json, projections.md and
benchmarks/results/overlays/*.png.
"""

from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_k] = "1"

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

#: Interior: columns more than this many px from every image edge.
EDGE_PX = 20.0
#: A found column matches a true one within this fraction of the short A-A spacing.
MATCH = 0.2
SITES = ("A", "B", "O")
COLOURS = {"A": "red", "B": "cyan", "O": "yellow"}

#: Gaussian doses: counts of an A column; HAADF background per px; ABF background per px
#: (the A dip is ~0.36 of the ABF background at every dose).
GAUSS_DOSES = [(1700.0, 6.0, 120.0), (5655.0, 20.0, 400.0), (56549.0, 200.0, 4000.0)]
GAUSS_A_PX = 28.0
GAUSS_CASES = [((1, 1, 0), "haadf"), ((1, 1, 0), "abf"), ((0, 0, 1), "abf")]

ABTEM_DOSES = [30.0, 60.0, 300.0, 5000.0]
#: "Noise-free": the source-blurred signal scaled to this many electrons per position.
NOISE_FREE_DOSE = 1e6
ABTEM_ABF = ("sto_001", "sto_110")


def fmt(v, spec=".3f", missing="—"):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return missing
    return format(v, spec)


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# --------------------------------------------------------------------------- matching


def detected(cols):
    """Columns the finder says are there (it also reports undetected A and B lattice
    sites, at their fitted or predicted place; older finders report detected ones only)."""
    d = getattr(cols, "detected", None)
    return np.ones(len(cols), bool) if d is None else np.asarray(d, bool)


def interior(x, y, shape, edge=EDGE_PX):
    rows, cols = shape
    return (x > edge) & (x < cols - 1 - edge) & (y > edge) & (y < rows - 1 - edge)


def match_sites(truth_x, truth_y, truth_site, cols, shape, radius, edge=EDGE_PX):
    """Per site: the interior true columns, the index of the nearest found column of the
    same site within ``radius`` (-1: missed), and the found columns of that site in the
    interior with no true column of that site within ``radius`` (extras). Found: detected
    (an undetected site reported at its lattice place is not a found column); ``placed``:
    the fraction of the true columns with a reported site, detected or not, within
    ``radius``."""
    from scipy.spatial import cKDTree

    out = {}
    for site in SITES:
        t = (truth_site == site) & interior(truth_x, truth_y, shape, edge)
        if not t.any():
            continue
        tx, ty = truth_x[t], truth_y[t]
        every = np.flatnonzero(cols.site == site)
        placed = 0.0
        if every.size:
            d, _ = cKDTree(np.column_stack([cols.x[every], cols.y[every]])).query(
                np.column_stack([tx, ty]))
            placed = float((d <= radius).mean())
        f = np.flatnonzero((cols.site == site) & detected(cols))
        if f.size == 0:
            out[site] = {"t": np.flatnonzero(t), "j": np.full(t.sum(), -1), "extra": 0,
                         "fitted": False, "placed": placed}
            continue
        fx, fy = cols.x[f], cols.y[f]
        d, j = cKDTree(np.column_stack([fx, fy])).query(np.column_stack([tx, ty]))
        j = np.where(d <= radius, f[np.minimum(j, f.size - 1)], -1)
        all_t = truth_site == site
        d2, _ = cKDTree(np.column_stack([truth_x[all_t], truth_y[all_t]])).query(
            np.column_stack([fx, fy]))
        extra = int(((d2 > radius) & interior(fx, fy, shape, edge)).sum())
        out[site] = {"t": np.flatnonzero(t), "j": j, "extra": extra, "fitted": True,
                     "placed": placed}
    return out


def site_errors(m, truth_x, truth_y, cols):
    """(found - true) (n, 2) px and the reported errors (n, 2) of the matched columns."""
    ok = m["j"] >= 0
    t, j = m["t"][ok], m["j"][ok]
    dxy = np.column_stack([cols.x[j] - truth_x[t], cols.y[j] - truth_y[t]])
    err = np.column_stack([cols.x_err[j], cols.y_err[j]])
    return dxy, err, t


def short_spacing_px(projection, pixel_pm):
    return projection.cell_pm[0] / pixel_pm


# --------------------------------------------------------------------------- overlays


def overlay(path, image, cols, title, arrows=None):
    """The image in gray, A red +, B cyan +, O yellow +; ``arrows`` (x, y, dx, dy, scale)
    draws B displacements."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, ncols = image.shape
    big = max(rows, ncols)
    inch = 9.0 if big <= 600 else 14.0
    fig, ax = plt.subplots(figsize=(inch, inch * rows / ncols + 0.5), dpi=110)
    lo, hi = np.percentile(image, [0.5, 99.5])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    ms = float(np.clip(60.0 * 400 / big, 4, 60))
    det = detected(cols)
    for site in SITES:
        s = (cols.site == site) & det
        if s.any():
            ax.scatter(cols.x[s], cols.y[s], marker="+", s=ms, c=COLOURS[site], linewidths=0.9,
                       label=f"{site} ({int(s.sum())}: {', '.join(sorted(set(cols.species[s])))})")
        u = (cols.site == site) & ~det
        if u.any():
            ax.scatter(cols.x[u], cols.y[u], marker="o", s=ms, facecolors="none",
                       edgecolors=COLOURS[site], linewidths=0.7,
                       label=f"{site} site, not detected ({int(u.sum())})")
    if arrows is not None:
        x, y, dx, dy, scale = arrows
        ax.quiver(x, y, dx * scale, dy * scale, angles="xy", scale_units="xy", scale=1,
                  color="orange", width=0.002, label=f"B displacement x{scale:g}")
    ax.set_xlim(-0.5, ncols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, 110)), fontsize=9)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.7)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return str(path.relative_to(ROOT))


# --------------------------------------------------------------------------- 1. real images


CHECK_KEYS = ("lattice_ratio", "lattice_angle_deg", "a_over_b", "unmodelled_peak",
              "polarity_skewness", "lattice_coverage", "dispersion", "lattice_choice",
              "looks_like")


def real_cases():
    from wheeldata import ATOMAP_PIXEL_PM, atomap_image, wheel_file

    base = "temul/example_data/experimental/"
    adf, abf = atomap_image("ADF"), atomap_image("ABF")
    at = {"pixel_size_pm": ATOMAP_PIXEL_PM, "spacing_pm": 390.5}
    return [
        ("atomap_adf_110_haadf", "atomap ADF, [110] HAADF", adf, dict(at, zone_axis="110")),
        ("atomap_abf_110_abf", "atomap ABF, [110] ABF", abf,
         dict(at, zone_axis="110", contrast="abf")),
        ("atomap_adf_001_haadf", "atomap ADF, [001] HAADF (must be rejected)", adf,
         dict(at, zone_axis="001")),
        ("atomap_abf_001_abf", "atomap ABF, [001] ABF", abf,
         dict(at, zone_axis="001", contrast="abf")),
        ("atomap_adf_110_abf", "atomap ADF, [110] as ABF (wrong contrast)", adf,
         dict(at, zone_axis="110", contrast="abf")),
        ("temul_mos2_dm3", "temul MoS2 DM3, defaults",
         wheel_file("temul-toolkit", "0.1.9", base + "example_Se_implanted_MoS2.dm3"), {}),
        ("temul_au_emd", "temul Au EMD, defaults",
         wheel_file("temul-toolkit", "0.1.9", base + "example_Au_nanoparticle.emd"), {}),
    ]


def bench_real(outdir):
    from latticegenome.columns.analysis import analyse_file
    from latticegenome.core.errors import LatticeGenomeError

    rows, kept = [], {}
    for key, label, path, settings in real_cases():
        t0 = time.perf_counter()
        row = {"key": key, "case": label, "file": Path(path).name, "settings": settings}
        try:
            res = analyse_file(path, **settings)
        except LatticeGenomeError as exc:
            row.update(accepted=False, reason=exc.reason, error=type(exc).__name__)
        else:
            cols = res.merged()
            img = res.frames[0][0]
            row.update(accepted=True, pixel_size_pm=res.pixel_size_pm, shape=list(img.data.shape),
                       counts={s: int(((cols.site == s) & detected(cols)).sum()) for s in SITES},
                       undetected={s: int(((cols.site == s) & ~detected(cols)).sum()) for s in SITES},
                       species={s: sorted(set(cols.species[cols.site == s])) for s in SITES},
                       check={k: v for k, v in cols.info.get("check", {}).items()})
            zone = "".join(str(v) for v in cols.info.get("zone_axis", []))
            title = (f"{label}: {Path(path).name}, {res.pixel_size_pm:.3f} pm/px, [{zone}] "
                     f"{cols.info.get('contrast')}; A {row['counts']['A']}, B {row['counts']['B']}, "
                     f"O {row['counts']['O']} detected; {sum(row['undetected'].values())} undetected sites")
            row["overlay"] = overlay(outdir / f"{key}.png", img.data, cols, title)
            kept[key] = (img, cols)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if row["accepted"]:
            c = row["counts"]
            print(f"{label}: accepted, detected A {c['A']} B {c['B']} O {c['O']}, undetected sites "
                  f"{row['undetected']}; check "
                  f"{ {k: row['check'].get(k) for k in CHECK_KEYS if k in row['check']} } "
                  f"({row['seconds']:.1f} s)", flush=True)
        else:
            print(f"{label}: rejected ({row['error']}): {row['reason']} ({row['seconds']:.1f} s)",
                  flush=True)
    pair = None
    if "atomap_adf_110_haadf" in kept and "atomap_abf_110_abf" in kept:
        pair = adf_vs_abf(kept["atomap_adf_110_haadf"], kept["atomap_abf_110_abf"])
        for site, r in pair.items():
            print(f"ADF vs ABF {site}: {r['n']} interior pairs (of {r['n_adf_interior']}), shift "
                  f"({r['shift_pm'][0]:+.1f}, {r['shift_pm'][1]:+.1f}) pm, RMS x {r['rms_pm'][0]:.2f} "
                  f"y {r['rms_pm'][1]:.2f} pm; median reported error ADF {r['adf_err_pm']:.2f}, "
                  f"ABF {r['abf_err_pm']:.2f} pm; expected RMS from them "
                  f"{r['expected_rms_pm']:.2f} pm", flush=True)
    return {"cases": rows, "adf_vs_abf": pair}


def adf_vs_abf(adf, abf, radius_px=3.0):
    """Simultaneous ADF/ABF: the same interior columns after the median rigid shift."""
    from scipy.spatial import cKDTree

    (img, a), (_, b) = adf, abf
    px = img.pixel_size_pm
    out = {}
    for site in SITES:
        sa, sb = (a.site == site) & detected(a), (b.site == site) & detected(b)
        if not sa.any() or not sb.any():
            continue
        p = np.column_stack([a.x[sa], a.y[sa]])
        q = np.column_stack([b.x[sb], b.y[sb]])
        d, j = cKDTree(q).query(p)
        inner = interior(p[:, 0], p[:, 1], img.data.shape)
        ok = inner & (d < radius_px)
        delta = q[j[ok]] - p[ok]
        shift = np.median(delta, axis=0)
        rms = np.sqrt(((delta - shift) ** 2).mean(axis=0)) * px
        ea = np.median(np.r_[a.x_err[sa][ok], a.y_err[sa][ok]]) * px
        eb = np.median(np.r_[b.x_err[sb][j[ok]], b.y_err[sb][j[ok]]]) * px
        out[site] = {"n": int(ok.sum()), "n_adf_interior": int(inner.sum()),
                     "shift_pm": (shift * px).tolist(), "rms_pm": rms.tolist(),
                     "adf_err_pm": float(ea), "abf_err_pm": float(eb),
                     "expected_rms_pm": float(np.hypot(ea, eb))}
    return out


# --------------------------------------------------------------------------- 2. Gaussian


def bench_gaussian(seeds, doses):
    from latticegenome.columns.finder import find_columns
    from latticegenome.columns.projection import perovskite_projection
    from latticegenome.columns.refine import crlb_position
    from latticegenome.columns.simulate import simulate_projected
    from latticegenome.core.errors import LatticeGenomeError

    shape = (256, 256)
    out = []
    for zone, contrast in GAUSS_CASES:
        proj = perovskite_projection(zone)
        d_short = GAUSS_A_PX / proj.pseudocubic[0]
        for counts, bg_haadf, bg_abf in doses:
            bg = bg_haadf if contrast == "haadf" else bg_abf
            acc = {s: {"dxy": [], "err": [], "crlb": [], "recall": [], "placed": [], "extra": 0}
                   for s in SITES}
            bias = {s: [] for s in SITES}
            failures, t0, n_img = [], time.perf_counter(), 0
            for seed in seeds:
                kw = dict(zone_axis=zone, contrast=contrast, a_px=GAUSS_A_PX, background=bg,
                          counts_a=counts)
                noisy, truth = simulate_projected(shape, rng=seed, **kw)
                clean, truth0 = simulate_projected(shape, rng=seed, noise=False, **kw)
                assert np.allclose(truth.x, truth0.x)
                for img, label in ((noisy, "noisy"), (clean, "clean")):
                    n_img += 1
                    try:
                        cols = find_columns(img, projection=proj, contrast=contrast,
                                            spacing_px=d_short)
                    except LatticeGenomeError as exc:
                        failures.append(f"{label}: {exc.reason}")
                        continue
                    ms = match_sites(truth.x, truth.y, truth.site, cols, shape, MATCH * d_short)
                    if label == "clean":
                        for site, m in ms.items():
                            dxy, _, _ = site_errors(m, truth.x, truth.y, cols)
                            bias[site].append(np.abs(dxy).ravel())
                        continue
                    # Exact Poisson CRLB of the simulated image: HAADF bg + columns; ABF
                    # 2 bg - (bg + columns) = bg - columns, the same bound with negative
                    # amplitudes (the Fisher information depends on the sign only via lambda)
                    inside = (truth.x > -0.5) & (truth.x < shape[1] - 0.5) & \
                             (truth.y > -0.5) & (truth.y < shape[0] - 0.5)
                    crlb = np.full(truth.x.size, np.nan)
                    sel = np.flatnonzero(inside)
                    sign = 1.0 if contrast == "haadf" else -1.0
                    crlb[sel] = crlb_position(shape, truth.x[sel], truth.y[sel],
                                              sign * truth.amplitude[sel], truth.sigma,
                                              truth.background,
                                              radius=cols.info["window_radius_px"])
                    for site, m in ms.items():
                        a = acc[site]
                        a["recall"].append(float((m["j"] >= 0).mean()))
                        a["placed"].append(m["placed"])
                        a["extra"] += m["extra"]
                        if not m["fitted"]:
                            continue
                        dxy, err, t = site_errors(m, truth.x, truth.y, cols)
                        a["dxy"].append(dxy)
                        a["err"].append(err)
                        if crlb is not None:
                            a["crlb"].append(np.column_stack([crlb[t], crlb[t]]))
            row = {"zone_axis": "".join(map(str, zone)), "contrast": contrast, "counts_a": counts,
                   "background": bg, "images": len(seeds), "failures": failures,
                   "accepted": len(seeds) - sum(f.startswith("noisy") for f in failures),
                   "seconds_per_image": (time.perf_counter() - t0) / max(n_img, 1)}
            for site in SITES:
                a = acc[site]
                if not a["recall"]:
                    continue
                r = {"recall_min": float(np.min(a["recall"])), "recall_mean": float(np.mean(a["recall"])),
                     "placed_min": float(np.min(a["placed"])), "extra": a["extra"]}
                if a["dxy"]:
                    dxy, err = np.vstack(a["dxy"]), np.vstack(a["err"])
                    r.update(n=len(dxy), rms_px=float(np.sqrt((dxy**2).mean())),
                             mean_px=dxy.mean(axis=0).tolist(),
                             median_err_px=float(np.nanmedian(err)),
                             nan_err=int((~np.isfinite(err).all(axis=1)).sum()),
                             rms_over_median_err=float(np.sqrt((dxy**2).mean()) / np.nanmedian(err)),
                             rms_over_rms_err=float(np.sqrt((dxy**2).mean() / (err**2).mean())))
                    if a["crlb"]:
                        c = np.vstack(a["crlb"])
                        good = np.isfinite(c)
                        r.update(crlb_px=float(np.sqrt(np.mean(c[good] ** 2))),
                                 rms_over_crlb=float(np.sqrt(np.mean((dxy[good] / c[good]) ** 2))))
                if bias[site]:
                    b = np.concatenate(bias[site])
                    r.update(bias_median_px=float(np.median(b)), bias_max_px=float(np.max(b)))
                row[site] = r
            out.append(row)
            parts = []
            for site in SITES:
                if site in row:
                    r = row[site]
                    parts.append(f"{site}: recall {r['recall_min']:.3f}, RMS {fmt(r.get('rms_px'), '.4f')} px, "
                                 f"RMS/CRLB {fmt(r.get('rms_over_crlb'))}, RMS/err "
                                 f"{fmt(r.get('rms_over_median_err'))}, bias "
                                 f"{fmt(r.get('bias_median_px'), '.4f')}/{fmt(r.get('bias_max_px'), '.4f')}")
            print(f"Gaussian [{row['zone_axis']}] {contrast} N={counts:.0f} bg={bg:.0f}: "
                  + "; ".join(parts) + (f"; FAILURES {failures}" if failures else ""), flush=True)
    return out


# --------------------------------------------------------------------------- 3. abTEM


def abtem_config(name, meta):
    """zone axis, cations, spacing_pm of a simulated structure."""
    import re

    zone = re.search(r"\[\s*(-?\d)\s*(-?\d)\s*(-?\d)\s*\]", meta["zone_axis"]).groups()
    zone = "".join(zone)  # "[100] (c in the image plane, ...)" -> "100"
    cations = meta.get("cations")
    if cations is None:
        if name.startswith("pto"):
            cations = [["Pb", "Ti"]]
        elif name.startswith("sto_bto"):
            cations = [["Sr", "Ti"], ["Ba", "Ti"]]
        else:
            cations = [["Sr", "Ti"]]
    spacing = meta.get("a_pm") or meta.get("spacing_pm")
    if spacing is None:
        spacing = 100.0 * min(meta["tile_a"])
    return zone, cations, float(spacing)


def b_arrows(cols, px, proj, scale=5.0):
    """(x, y, dx, dy, scale) of the B displacement of every complete cell, px."""
    from latticegenome.statistics.cells import measure_cells

    try:
        cells = measure_cells(cols.as_dict(), px, projection=proj.as_record())
    except ValueError:
        return None
    ok = np.asarray(cells["has_B"], bool) & np.isfinite(cells["dx_pm"])
    return (cells["x"][ok], cells["y"][ok], cells["dx_pm"][ok] / px, cells["dy_pm"][ok] / px, scale)


def polar_displacement(cols, px, proj, meta):
    """Median B displacement (pm) along the polar axis (``meta["polar"]["c_direction_px"]``)
    over the complete cells: the B column from where its A corners put it."""
    from latticegenome.statistics.cells import measure_cells

    c = np.asarray(meta["polar"]["c_direction_px"], float)
    c /= np.hypot(*c)
    try:
        cells = measure_cells(cols.as_dict(), px, projection=proj.as_record())
    except ValueError:
        return float("nan")
    along = cells["dx_pm"] * c[0] + cells["dy_pm"] * c[1]
    return float(np.nanmedian(along))


def bench_abtem(outdir, seeds, doses):
    import abtem_data

    from latticegenome.columns.analysis import analyse_array
    from latticegenome.columns.projection import projection_for
    from latticegenome.core.errors import LatticeGenomeError

    rows, structures = [], []
    for name in abtem_data.names():
        signals, truth, meta = abtem_data.load(name)
        zone, cations, spacing = abtem_config(name, meta)
        px = float(meta["pixel_pm"])
        proj = projection_for(zone, cations, spacing)
        d_short = short_spacing_px(proj, px)
        tx, ty, ts = truth["x_px"], truth["y_px"], truth["site"].astype(str)
        structures.append({"name": name, "zone_axis": zone, "cations": cations, "spacing_pm": spacing,
                           "pixel_pm": px, "short_spacing_px": d_short,
                           "structure": meta.get("structure"), "thickness_a": meta.get("thickness_a")})
        for det in ("haadf", "abf"):
            if det == "abf" and name not in ABTEM_ABF:
                continue
            signal = signals[det]
            settings = dict(zone_axis=zone, contrast=det, spacing_pm=spacing, cations=cations)
            shape = signal.shape

            def run(image, px=px, settings=settings):
                return analyse_array(image, px, **settings)

            # noise-free: the positions the method gives without noise (bias)
            clean = abtem_data.source_blur(signal, pixel_pm=px) * NOISE_FREE_DOSE
            ref, bias, ref_fail = None, {}, None
            try:
                ref = run(clean)
            except LatticeGenomeError as exc:
                ref_fail = exc.reason
            ref_pos = {}
            if ref is not None:
                for site, m in match_sites(tx, ty, ts, ref, shape, MATCH * d_short).items():
                    if not m["fitted"]:
                        continue
                    dxy, _, t = site_errors(m, tx, ty, ref)
                    ref_pos[site] = dict(zip(t.tolist(), dxy))
                    if len(dxy):
                        mag = np.hypot(dxy[:, 0], dxy[:, 1]) * px
                        bias[site] = {"recall": float((m["j"] >= 0).mean()),
                                      "mean_pm": (dxy.mean(axis=0) * px).tolist(),
                                      "median_pm": float(np.median(mag)),
                                      "max_pm": float(np.max(mag))}
            for dose in doses:
                t0 = time.perf_counter()
                acc = {s: {"dxy": [], "err": [], "scatter": [], "recall": [], "placed": [], "extra": 0,
                           "reported": s in ref_pos} for s in SITES}
                failures, overlay_path, polar = [], None, []
                for seed in seeds:
                    rng = np.random.default_rng([seed, int(dose), len(name), det == "abf"])
                    img = abtem_data.at_dose(signal, dose, rng, pixel_pm=px)
                    try:
                        cols = run(img)
                    except LatticeGenomeError as exc:
                        failures.append(exc.reason)
                        continue
                    if dose == 300.0 and seed == seeds[0]:
                        overlay_path = overlay(
                            outdir / f"abtem_{name}_{det}_300e.png", img, cols, arrows=(
                                b_arrows(cols, px, proj) if "polar" in meta else None), title=
                            f"abTEM {name} ({meta.get('structure', '')}), {det.upper()}, 300 e/position, "
                            f"{px:g} pm/px, [{zone}]; detected A {((cols.site == 'A') & detected(cols)).sum()}, "
                            f"B {((cols.site == 'B') & detected(cols)).sum()}, "
                            f"O {((cols.site == 'O') & detected(cols)).sum()}; "
                            f"undetected sites {(~detected(cols)).sum()}")
                    if "polar" in meta:
                        polar.append(polar_displacement(cols, px, proj, meta))
                    for site, m in match_sites(tx, ty, ts, cols, shape, MATCH * d_short).items():
                        a = acc[site]
                        a["recall"].append(float((m["j"] >= 0).mean()))
                        a["placed"].append(m["placed"])
                        a["extra"] += m["extra"]
                        if not m["fitted"]:
                            continue
                        a["reported"] = True
                        dxy, err, t = site_errors(m, tx, ty, cols)
                        a["dxy"].append(dxy)
                        a["err"].append(err)
                        rp = ref_pos.get(site, {})
                        have = np.array([k in rp for k in t.tolist()], bool)
                        if have.any():
                            a["scatter"].append(dxy[have] - np.array([rp[k] for k in t[have].tolist()]))
                row = {"structure": name, "detector": det, "dose": dose, "images": len(seeds),
                       "accepted": len(seeds) - len(failures), "failures": failures, "overlay": overlay_path,
                       "seconds_per_image": (time.perf_counter() - t0) / len(seeds)}
                if polar:
                    row["polar_pm"] = polar

                for site in SITES:
                    a = acc[site]
                    if not a["recall"]:
                        continue
                    r = {"recall_min": float(np.min(a["recall"])), "recall_mean": float(np.mean(a["recall"])),
                         "placed_min": float(np.min(a["placed"])),
                         "extra": a["extra"], "reported": a["reported"]}
                    if a["dxy"]:
                        dxy, err = np.vstack(a["dxy"]), np.vstack(a["err"])
                        med = float(np.nanmedian(err))
                        finite = np.isfinite(err).all(axis=1)
                        z = np.abs(dxy[finite]) / err[finite]
                        r.update(n=len(dxy), rms_pm=float(np.sqrt((dxy**2).mean()) * px),
                                 median_err_pm=med * px, nan_err=int((~finite).sum()),
                                 beyond_4_err=float(np.mean(z.max(axis=1) > 4)) if z.size else None,
                                 rms_over_median_err=float(np.sqrt((dxy**2).mean()) / med))
                        if a["scatter"]:
                            sc = np.vstack(a["scatter"])
                            r.update(scatter_pm=float(np.sqrt((sc**2).mean()) * px),
                                     scatter_over_median_err=float(np.sqrt((sc**2).mean()) / med))
                    row[site] = r
                rows.append(row)
                parts = [f"{s}: recall {row[s]['recall_min']:.3f}, RMS {fmt(row[s].get('rms_pm'), '.2f')} pm, "
                         f"RMS/err {fmt(row[s].get('rms_over_median_err'), '.2f')}, scatter/err "
                         f"{fmt(row[s].get('scatter_over_median_err'), '.2f')}"
                         if row[s]["reported"] else f"{s}: none reported"
                         for s in SITES if s in row]
                if polar:
                    parts.append(f"B displacement along c {np.nanmean(polar):.1f} pm "
                                 f"(Ti {meta['polar'].get('b_displacement_pm')} pm)")
                print(f"abTEM {name} {det} {dose:g} e, accepted {row['accepted']}/{len(seeds)}: "
                      + "; ".join(parts)
                      + (f"; rejected: {reason_summary(failures)}" if failures else ""), flush=True)
            rows.append({"structure": name, "detector": det, "dose": "noise-free",
                         "failure": ref_fail, "bias": bias,
                         "polar_pm": ([polar_displacement(ref, px, proj, meta)]
                                      if ref is not None and "polar" in meta else None),
                         "polar_truth_pm": (meta["polar"].get("b_displacement_pm")
                                            if "polar" in meta else None)})
            print(f"abTEM {name} {det} noise-free bias: "
                  + ("; ".join(f"{s}: recall {b['recall']:.3f}, median {b['median_pm']:.2f} max "
                               f"{b['max_pm']:.2f} pm, mean ({b['mean_pm'][0]:+.2f}, {b['mean_pm'][1]:+.2f})"
                               for s, b in bias.items()) or f"FAILED {ref_fail}"), flush=True)
    return {"structures": structures, "rows": rows}


# --------------------------------------------------------------------------- Markdown


def reason_summary(reasons):
    """Distinct reasons (numbers aside) with their count, the first wording of each."""
    import re

    groups = {}
    for r in reasons:
        groups.setdefault(re.sub(r"\d+(\.\d+)?", "#", r), []).append(r)
    return "; ".join(f"{len(v)}x {v[0]}" for v in groups.values())


def _triple(r, key, spec, sites=SITES):
    vals = []
    for site in sites:
        v = r.get(site, {})
        vals.append("—" if not v or not v.get("reported", True) else fmt(v.get(key), spec))
    return " / ".join(vals)


def summary(res) -> str:
    """Compact tables (one row per case, A / B / O in each cell) for a note or the README."""
    L = []
    gauss = res.get("gaussian")
    if gauss:
        L += ["| projection | N (A) | recall A / B / O | RMS/CRLB A / B / O | RMS/err A / B / O | "
              "max bias (px) |", "|---|---|---|---|---|---|"]
        for r in gauss:
            bias = max((r[s].get("bias_max_px") or 0.0) for s in SITES if s in r)
            L.append(f"| [{r['zone_axis']}] {r['contrast'].upper()} | {r['counts_a']:.0f} | "
                     f"{_triple(r, 'recall_min', '.2f')} | {_triple(r, 'rms_over_crlb', '.2f')} | "
                     f"{_triple(r, 'rms_over_median_err', '.2f')} | {bias:.4f} |")
        L.append("")
    ab = res.get("abtem")
    if ab:
        bias = {(r["structure"], r["detector"]): r["bias"] for r in ab["rows"] if r["dose"] == "noise-free"}
        L += ["| structure, detector | e/position | accepted | recall detected A / B / O (mean) | "
              "placed A / B (min) | RMS (pm) A / B / O | "
              "RMS/err A / B / O | noise-free bias (pm) A / B / O |", "|---|---|---|---|---|---|---|---|"]
        for r in ab["rows"]:
            if r["dose"] == "noise-free":
                continue
            b = bias.get((r["structure"], r["detector"]), {})
            bt = " / ".join(fmt(b[s]["median_pm"], ".2f") if s in b else "—" for s in SITES)
            L.append(f"| {r['structure']} {r['detector'].upper()} | {r['dose']:g} | "
                     f"{r['accepted']}/{r['images']} | {_triple(r, 'recall_mean', '.2f')} | "
                     f"{_triple(r, 'placed_min', '.2f', sites=('A', 'B'))} | "
                     f"{_triple(r, 'rms_pm', '.1f')} | {_triple(r, 'rms_over_median_err', '.2f')} | {bt} |")
        L.append("")
    return "\n".join(L)


def markdown(res) -> str:
    L = [f"Machine: {res['machine']}; {res['date']}; one core; run {res['mode']}, "
         f"{res['seconds']:.0f} s.", ""]
    real = res.get("real")
    if real:
        L += ["### Real images", "",
              "| image, settings | result | A | B | O | undetected A / B sites | lattice ratio / angle | "
              "A/B contrast | unmodelled peak | polarity skewness | coverage |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in real["cases"]:
            if r["accepted"]:
                c, k = r["counts"], r["check"]
                u = r.get("undetected", {})
                L.append(f"| {r['case']} | accepted | {c['A']} | {c['B']} | {c['O']} | "
                         f"{u.get('A', 0)} / {u.get('B', 0)} | "
                         f"{fmt(k.get('lattice_ratio'))} / {fmt(k.get('lattice_angle_deg'), '.1f')}° | "
                         f"{fmt(k.get('a_over_b'), '.2f')} | {fmt(k.get('unmodelled_peak'), '.3f')} | "
                         f"{fmt(k.get('polarity_skewness'), '.2f')} | {fmt(k.get('lattice_coverage'), '.2f')} |")
            else:
                L.append(f"| {r['case']} | rejected: {r['reason']} | | | | | | | | | |")
        pair = real.get("adf_vs_abf")
        if pair:
            L += ["", "Atomap SrTiO3 [110] ADF against ABF (recorded simultaneously), interior columns "
                  f"(more than {EDGE_PX:g} px from the edges) after the median rigid shift:", "",
                  "| site | pairs | shift x, y (pm) | RMS x (pm) | RMS y (pm) | median reported error "
                  "ADF (pm) | ABF (pm) | expected RMS from them (pm) |",
                  "|---|---|---|---|---|---|---|---|"]
            for site, r in pair.items():
                L.append(f"| {site} | {r['n']} / {r['n_adf_interior']} | {r['shift_pm'][0]:+.1f}, "
                         f"{r['shift_pm'][1]:+.1f} | {r['rms_pm'][0]:.2f} | {r['rms_pm'][1]:.2f} | "
                         f"{r['adf_err_pm']:.2f} | {r['abf_err_pm']:.2f} | {r['expected_rms_pm']:.2f} |")
        L.append("")
    gauss = res.get("gaussian")
    if gauss:
        L += ["### Gaussian images", "",
              f"simulate_projected, 256² px, a = {GAUSS_A_PX:g} px, σ = 2.5 px, {res['gaussian_seeds']} "
              f"seeds per row; interior = more than {EDGE_PX:g} px from the edges; match within "
              f"{MATCH} of the short A-A spacing; RMS per coordinate. CRLB: exact Poisson bound "
              "(crlb_position, the fit's window and model, every column's tails). HAADF: the image "
              "is bg + columns, the model the fit uses, so RMS/CRLB is the efficiency. ABF: the "
              "image is 2 bg - (bg + columns) = bg - columns; its bound is computed with negative "
              "amplitudes, but the finder fits the inverted image 2 L - image (L its 99.5th "
              "percentile) as Poisson peaks, whose variance model is not the image's: RMS/CRLB "
              "(ABF) is only indicative; the honest-error figure is RMS / median reported error. "
              "Bias: |found - true| per coordinate on the noise-free image.", "",
              "| projection | N (A) | bg | site | recall (min) | RMS (px) | CRLB (px) | RMS/CRLB | "
              "RMS / median reported error | noise-free bias median / max (px) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in gauss:
            for site in SITES:
                if site not in r:
                    continue
                s = r[site]
                L.append(f"| [{r['zone_axis']}] {r['contrast'].upper()} | {r['counts_a']:.0f} | "
                         f"{r['background']:.0f} | {site} | {s['recall_min']:.3f} | "
                         f"{fmt(s.get('rms_px'), '.4f')} | {fmt(s.get('crlb_px'), '.4f')} | "
                         f"{fmt(s.get('rms_over_crlb'))} | {fmt(s.get('rms_over_median_err'))} | "
                         f"{fmt(s.get('bias_median_px'), '.4f')} / {fmt(s.get('bias_max_px'), '.4f')} |")
            if r["failures"]:
                L.append(f"| [{r['zone_axis']}] {r['contrast'].upper()} | {r['counts_a']:.0f} | | "
                         f"failures: {'; '.join(r['failures'])} | | | | | | |")
        L.append("")
    ab = res.get("abtem")
    if ab:
        L += ["### Multislice (abTEM) images", "",
              "Structures: " + "; ".join(
                  f"{s['name']} ({s['structure']}, [{s['zone_axis']}], {s['pixel_pm']:g} pm/px, "
                  f"thickness {fmt(s['thickness_a'], '.0f')} Å, cations {s['cations']}, spacing "
                  f"{s['spacing_pm']:g} pm)" for s in ab["structures"]) + ".",
              "",
              f"40 pm source blur, Poisson noise; {res['abtem_seeds']} noise seeds per row; interior "
              f"= more than {EDGE_PX:g} px from the edges; a column is found when one of its site lies "
              f"within {MATCH} of the short A-A spacing. RMS: found - true, both axes; scatter: "
              "found - noise-free found (the noise part alone); err: median reported error; "
              "> 4 err: fraction of the found columns off by more than 4 of their own reported "
              "errors in x or y (outliers; columns with a finite error); NaN err: found columns whose reported error is not finite; extra: found columns of that site with no true one "
              "within the match radius. Recall detected: a detected column of that site within the match "
              "radius; placed: any reported site (the finder also reports the undetected A and B "
              "sites, at their fitted or predicted place). RMS and errors: detected columns only.", "",
              "| structure | detector | e/position | accepted | site | recall detected (min / mean) | "
              "placed (min) | RMS (pm) | median err (pm) | RMS/err | scatter/err | > 4 err | NaN err | extra |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        rejected = []
        for r in ab["rows"]:
            if r["dose"] == "noise-free":
                continue
            head = f"| {r['structure']} | {r['detector'].upper()} | {r['dose']:g} | {r['accepted']}/{r['images']} |"
            if r["failures"]:
                rejected.append((f"{r['structure']} | {r['detector'].upper()} | {r['dose']:g}",
                                 r["images"], r["failures"]))
            if not r["accepted"]:
                L.append(head + " — | all rejected | | | | | | | | |")
            for site in SITES:
                if site not in r:
                    continue
                s = r[site]
                if not s.get("reported", True):
                    L.append(head + f" {site} | none reported (not fitted, or none significant) "
                             "| | | | | | | | |")
                    continue
                L.append(head + f" {site} | {s['recall_min']:.3f} / {s['recall_mean']:.3f} | "
                         f"{fmt(s.get('placed_min'), '.3f')} | {fmt(s.get('rms_pm'), '.2f')} | "
                         f"{fmt(s.get('median_err_pm'), '.2f')} | {fmt(s.get('rms_over_median_err'), '.2f')} | "
                         f"{fmt(s.get('scatter_over_median_err'), '.2f')} | "
                         f"{fmt(s.get('beyond_4_err'), '.1%')} | {s.get('nan_err', 0)} | {s['extra']} |")
        if rejected:
            L += ["", "Rejected images (the self-check's reason; same reason with other numbers "
                  "counted together):", "", "| structure | detector | e/position | rejected | reasons |",
                  "|---|---|---|---|---|"]
            for key, n, fails in rejected:
                L.append(f"| {key} | {len(fails)}/{n} | {reason_summary(fails)} |")
        L += ["", "Noise-free bias (the blurred signal at 1e6 e/position): |found - true| and its mean "
              "vector:", "",
              "| structure | detector | site | recall | median (pm) | max (pm) | mean x, y (pm) |",
              "|---|---|---|---|---|---|---|"]
        for r in ab["rows"]:
            if r["dose"] != "noise-free":
                continue
            if r["failure"]:
                L.append(f"| {r['structure']} | {r['detector'].upper()} | rejected: {r['failure']} "
                         "| | | | |")
            for site, b in r["bias"].items():
                L.append(f"| {r['structure']} | {r['detector'].upper()} | {site} | {b['recall']:.3f} | "
                         f"{b['median_pm']:.2f} | {b['max_pm']:.2f} | {b['mean_pm'][0]:+.2f}, "
                         f"{b['mean_pm'][1]:+.2f} |")
        polar = [r for r in ab["rows"] if r.get("polar_pm")]
        if polar:
            L += ["", "Polar B displacement: median over the complete cells of the B column from "
                  "where its four A corners put it, along c (measure_cells), mean over the noise "
                  "seeds; the simulated Ti is displaced by the value in the last column (its TiO "
                  "column also holds an O displaced the other way):", "",
                  "| structure | detector | e/position | B displacement along c (pm) | Ti displacement (pm) |",
                  "|---|---|---|---|---|"]
            truth = {(r["structure"], r["detector"]): r.get("polar_truth_pm") for r in ab["rows"]
                     if r["dose"] == "noise-free"}
            for r in polar:
                dose = r["dose"] if isinstance(r["dose"], str) else f"{r['dose']:g}"
                L.append(f"| {r['structure']} | {r['detector'].upper()} | {dose} | "
                         f"{fmt(float(np.nanmean(r['polar_pm'])), '.1f')} | "
                         f"{fmt(truth.get((r['structure'], r['detector'])), 'g')} |")
        L.append("")
    overlays = [r["overlay"] for r in (real or {}).get("cases", []) if r.get("overlay")]
    overlays += [r["overlay"] for r in (ab or {}).get("rows", []) if r.get("overlay")]
    if overlays:
        L += ["Overlays (A red +, B cyan +, O yellow +): " + ", ".join(f"`{p}`" for p in overlays), ""]
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="one seed, two Gaussian doses, abTEM at 60 and 300 e only")
    ap.add_argument("--only", choices=("real", "gaussian", "abtem"),
                    help="run one part; the others are kept from the previous results file")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    t0 = time.perf_counter()
    outdir = args.out / "overlays"
    g_seeds = [0] if args.quick else list(range(8))
    g_doses = GAUSS_DOSES[1:] if args.quick else GAUSS_DOSES
    a_seeds = [0] if args.quick else list(range(8))
    a_doses = [60.0, 300.0] if args.quick else ABTEM_DOSES
    previous = {}
    if args.only and (args.out / "projections.json").exists():
        previous = json.loads((args.out / "projections.json").read_text())
    res = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                      f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
           "mode": "--quick" if args.quick else "full", "gaussian_seeds": len(g_seeds),
           "abtem_seeds": len(a_seeds)}
    for part, fn in (("real", lambda: bench_real(outdir)),
                     ("gaussian", lambda: bench_gaussian(g_seeds, g_doses)),
                     ("abtem", lambda: bench_abtem(outdir, a_seeds, a_doses))):
        if args.only in (None, part):
            res[part] = fn()
        else:
            res[part] = previous.get(part)
            for key in ("gaussian_seeds", "abtem_seeds"):
                if key.startswith(part) and key in previous:
                    res[key] = previous[key]
    res["seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    res = jsonable(res)
    (args.out / "projections.json").write_text(json.dumps(res, indent=1))
    md = markdown(res) + "\n### Summary (A / B / O per cell)\n\n" + summary(res)
    (args.out / "projections.md").write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
