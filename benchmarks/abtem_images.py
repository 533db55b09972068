"""Multislice STEM test images of perovskites with exact column truth (abTEM).

Run in the separate abTEM environment made by ``benchmarks/abtem_setup.sh``::

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        .venv-abtem/bin/python benchmarks/abtem_images.py --out tests/data/abtem

For every structure one periodic tile (the projected repeat cell) is scanned by a
22 mrad, 200 kV probe in a periodic supercell potential (lobato, infinite projection,
~0.039 A sampling, half-cell slices), averaged over frozen-phonon configurations that
come in antithetic pairs (+u, -u: the mean displacement of every atom is exactly zero),
averaged over the tile's projected point-group symmetry (the ensemble mean has it; this
averages frozen-phonon noise), and resampled onto a larger scan grid, rotated by a few
degrees, by exact band-limited Fourier interpolation (any STEM signal is band-limited
to 2 alpha / lambda in the probe position; the tile is sampled finer than that Nyquist).

Each ``NAME.npz`` holds the noise-free ``haadf`` (70-200 mrad) and ``abf`` (11-22 mrad)
signals as fractions of the incident beam (float32, rows = y, columns = x), the truth
(``x_px``, ``y_px``, ``site``, ``species``: every projected column within the image or
up to 1 A outside it; origin at the centre of pixel [0, 0]) and ``meta_json``.
``tests/abtem_data.py`` reads them without abTEM. PNG checks go to ``--png``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import time
from pathlib import Path

import numpy as np

ENERGY_EV = 200e3
SEMIANGLE_MRAD = 22.0
HAADF_MRAD = (70.0, 200.0)
ABF_MRAD = (11.0, 22.0)
POTENTIAL_SAMPLING = 0.0395  # A; 2/3 antialias cutoff then reaches ~211 mrad > 200
SIGMAS = {"Sr": 0.080, "Ba": 0.080, "Pb": 0.080, "Ti": 0.070, "O": 0.080}  # A, per axis
A_SITE = {"Sr", "Ba", "Pb"}
B_SITE = {"Ti"}
MERGE_A = 0.8  # atoms closer than this in projection form one column (pto: Ti + O3)


def wavelength_a(energy_ev: float = ENERGY_EV) -> float:
    """Relativistic electron wavelength in Angstrom."""
    m0c2 = 510998.95
    return 12.2642598 / np.sqrt(energy_ev * (1 + energy_ev / (2 * m0c2)))


# --------------------------------------------------------------------------- structures
def _perovskite_001(a_site: str, a: float) -> list[tuple[str, float, float, float]]:
    """Cubic ABO3 cell, A at the origin, beam along z ([001])."""
    f = [(a_site, 0, 0, 0), ("Ti", .5, .5, .5), ("O", .5, .5, 0), ("O", .5, 0, .5),
         ("O", 0, .5, .5)]
    return [(s, x * a, y * a, z * a) for s, x, y, z in f]


def sto_001() -> dict:
    a = 3.905
    return dict(
        name="sto_001", structure="SrTiO3 cubic, a = 3.905 A", zone_axis="[001]",
        cell=(a, a, a), atoms=_perovskite_001("Sr", a), reps=(4, 4), nz=16,
        slices_per_repeat=2, z_offset=a / 4, scan=(16, 16), symmetry=("mx", "my", "t"),
        shape=(256, 256), pixel_a=0.20, rotation_deg=4.0, centre_frac=(0.37, 0.61),
        seed=1001)


def _fold(v: float, period: float) -> float:
    v = float(v) % period
    return 0.0 if min(v, period - v) < 1e-9 else v


def sto_110() -> dict:
    """SrTiO3 along [110]: x along [1-10] (a*sqrt2), y along [001] (a), z along [110]."""
    a = 3.905
    r2 = np.sqrt(2.0)
    cub = [("Sr", 0, 0, 0), ("Ti", .5, .5, .5), ("O", .5, .5, 0), ("O", .5, 0, .5),
           ("O", 0, .5, .5)]
    lx, ly, lz = a * r2, a, a * r2
    atoms = []
    # the orthogonal cell [1-10] x [001] x [110] holds two cubic cells: enumerate and fold
    for i in range(-2, 3):
        for j in range(-2, 3):
            for s, x, y, z in cub:
                cx, cy, cz = (x + i) * a, (y + j) * a, z * a
                u = _fold((cx - cy) / r2, lx)
                w = _fold((cx + cy) / r2, lz)
                v = _fold(cz, ly)
                if not any(s == t and np.allclose((u, v, w), (p, q, r), atol=1e-6)
                           for t, p, q, r in atoms):
                    atoms.append((s, u, v, w))
    assert len(atoms) == 10, atoms
    return dict(
        name="sto_110", structure="SrTiO3 cubic, a = 3.905 A", zone_axis="[110]",
        cell=(lx, ly, lz), atoms=atoms, reps=(3, 4), nz=11, slices_per_repeat=2,
        z_offset=lz / 8, scan=(22, 16), symmetry=("mx", "my"), shape=(256, 256),
        pixel_a=0.16, rotation_deg=-3.0, centre_frac=(0.29, 0.43), seed=1102)


def pto_001() -> dict:
    """Tetragonal PbTiO3-like polar cell viewed along a: x = b (3.90 A), y = c (4.15 A)."""
    a, c = 3.90, 4.15
    d_ti, d_o = 0.30, -0.20  # A along +c, relative to Pb
    # crystal (a, b, c) -> (z, x, y)
    atoms = [("Pb", 0, 0, 0), ("Ti", .5 * a, .5 * c + d_ti, .5 * a),
             ("O", .5 * a, 0 + d_o, .5 * a), ("O", 0, .5 * c + d_o, .5 * a),
             ("O", .5 * a, .5 * c + d_o, 0)]
    return dict(
        name="pto_001", structure="PbTiO3-like tetragonal, a = 3.90, c = 4.15 A, "
        "Ti +0.30 A and all O -0.20 A along c relative to Pb",
        zone_axis="[100] (c in the image plane, along +y of the tile)",
        cell=(a, c, a), atoms=atoms, reps=(4, 4), nz=16, slices_per_repeat=2,
        z_offset=a / 4, scan=(16, 16), symmetry=("mx",), shape=(240, 240),
        pixel_a=0.24, rotation_deg=6.0, centre_frac=(0.33, 0.58), seed=1003,
        polar=dict(b_displacement_pm=100 * d_ti, o_displacement_pm=100 * d_o,
                   axis="c = +y of the tile"))


def sto_bto_001() -> dict:
    """(SrTiO3)2/(BaTiO3)2 superlattice along x, [001]; BTO cells 4.05 A along x,
    coherent with SrTiO3 (3.905 A) along y and z. Origin on the TiO2 plane in the
    middle of the SrTiO3 block (mirror plane)."""
    a, ab = 3.905, 4.05
    names = ["Sr", "Sr", "Ba", "Ba"]
    gaps = [a, (a + ab) / 2, ab, (ab + a) / 2]  # A-A plane spacings along x
    lx = float(sum(gaps))
    atoms = []
    xa = 0.0
    for s, g in zip(names, gaps):
        xb = xa + g / 2  # TiO2 plane midway between A planes
        for sp, x, y, z in [(s, xa, 0, 0), ("O", xa, .5 * a, .5 * a),
                            ("Ti", xb, .5 * a, .5 * a), ("O", xb, .5 * a, 0),
                            ("O", xb, 0, .5 * a)]:
            atoms.append((sp, x, y, z))
        xa += g
    # the TiO2 plane between the two Sr planes is a mirror plane: put it at x = 0
    x0 = gaps[0] / 2
    atoms = [(s, (x - x0) % lx, y, z) for s, x, y, z in atoms]
    return dict(
        name="sto_bto_001", structure="(SrTiO3)2/(BaTiO3)2 superlattice along x: "
        "SrTiO3 3.905 A, BaTiO3 4.05 A along x (coherent 3.905 A along y, z), paraelectric",
        zone_axis="[001]", cell=(lx, a, a), atoms=atoms, reps=(1, 4), nz=16,
        slices_per_repeat=2, z_offset=a / 4, scan=(64, 16), symmetry=("mx", "my"),
        shape=(256, 256), pixel_a=0.28, rotation_deg=2.5, centre_frac=(0.21, 0.66),
        seed=1004)


STRUCTURES = {f.__name__: f for f in (sto_001, sto_110, pto_001, sto_bto_001)}


# --------------------------------------------------------------------------- truth
def columns(spec: dict) -> list[dict]:
    """Projected columns of the repeat cell: position (of its heaviest atom), content."""
    from ase.data import atomic_numbers

    lx, ly, _ = spec["cell"]
    pts = [(s, x % lx, y % ly) for s, x, y, _ in spec["atoms"]]
    groups: list[list[tuple[str, float, float]]] = []
    for p in pts:
        for g in groups:
            dx = (p[1] - g[0][1] + lx / 2) % lx - lx / 2
            dy = (p[2] - g[0][2] + ly / 2) % ly - ly / 2
            if np.hypot(dx, dy) < MERGE_A:
                g.append(p)
                break
        else:
            groups.append([p])
    out = []
    for g in groups:
        heavy = max(g, key=lambda p: atomic_numbers[p[0]])
        same = [p for p in g if p[0] == heavy[0]]
        x = same[0][1] + np.mean([(p[1] - same[0][1] + lx / 2) % lx - lx / 2 for p in same])
        y = same[0][2] + np.mean([(p[2] - same[0][2] + ly / 2) % ly - ly / 2 for p in same])
        syms = [p[0] for p in g]
        order = sorted(set(syms), key=lambda s: -atomic_numbers[s])
        species = "".join(s + (str(syms.count(s)) if syms.count(s) > 1 else "") for s in order)
        site = "A" if set(syms) & A_SITE else "B" if set(syms) & B_SITE else "O"
        offsets = [(p[0], (p[1] - x + lx / 2) % lx - lx / 2, (p[2] - y + ly / 2) % ly - ly / 2)
                   for p in g]
        out.append(dict(x=x % lx, y=y % ly, site=site, species=species, atoms=offsets))
    return out


def image_frame(spec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p0 (tile coordinates of pixel [0,0]), e1 (one column step), e2 (one row step), in A."""
    th = np.deg2rad(spec["rotation_deg"])
    s = spec["pixel_a"]
    e1 = s * np.array([np.cos(th), np.sin(th)])
    e2 = s * np.array([-np.sin(th), np.cos(th)])
    h, w = spec["shape"]
    lx, ly, _ = spec["cell"]
    centre = np.array(spec["centre_frac"]) * (lx, ly)
    p0 = centre - (w - 1) / 2 * e1 - (h - 1) / 2 * e2
    return p0, e1, e2


def truth_table(spec: dict, cols: list[dict]) -> dict[str, np.ndarray]:
    p0, e1, e2 = image_frame(spec)
    h, w = spec["shape"]
    lx, ly, _ = spec["cell"]
    m = np.linalg.inv(np.column_stack([e1, e2]))  # tile A -> (col, row)
    margin = 1.0 / spec["pixel_a"]
    diag = np.hypot(h, w) * spec["pixel_a"]
    nmax_x = int(diag / lx) + 3
    nmax_y = int(diag / ly) + 3
    centre = p0 + (w - 1) / 2 * e1 + (h - 1) / 2 * e2
    i0, j0 = round(centre[0] / lx), round(centre[1] / ly)
    rows = []
    for i in range(i0 - nmax_x, i0 + nmax_x + 1):
        for j in range(j0 - nmax_y, j0 + nmax_y + 1):
            for k, c in enumerate(cols):
                p = np.array([c["x"] + i * lx, c["y"] + j * ly])
                cx, cy = m @ (p - p0)
                if (-0.5 - margin <= cx <= w - 0.5 + margin
                        and -0.5 - margin <= cy <= h - 0.5 + margin):
                    rows.append((cx, cy, c["site"], c["species"], k, i, j))
    rows.sort(key=lambda r: (r[5], r[6], r[4]))
    return dict(
        x_px=np.array([r[0] for r in rows]), y_px=np.array([r[1] for r in rows]),
        site=np.array([r[2] for r in rows]), species=np.array([r[3] for r in rows]),
        column=np.array([r[4] for r in rows], dtype=np.int32),
        cell_ij=np.array([(r[5], r[6]) for r in rows], dtype=np.int32).reshape(-1, 2))


# --------------------------------------------------------------------------- simulation
def _smooth_size(n: float) -> int:
    m = int(np.ceil(n))
    while True:
        k = m
        for f in (2, 3, 5, 7):
            while k % f == 0:
                k //= f
        if k == 1:
            return m
        m += 1


def supercell(spec: dict) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Symbols and positions of the probe box: reps x reps x nz repeat cells."""
    lx, ly, lz = spec["cell"]
    mx, my = spec["reps"]
    syms, pos = [], []
    for k in range(spec["nz"]):
        for i in range(mx):
            for j in range(my):
                for s, x, y, z in spec["atoms"]:
                    syms.append(s)
                    pos.append((x + i * lx, y + j * ly, z + k * lz + spec["z_offset"]))
    return np.array(syms), np.array(pos), (mx * lx, my * ly, spec["nz"] * lz)


def simulate_tile(spec: dict, n_configs: int, scan=None, log=print) -> dict:
    """Scan one tile; return haadf, abf on the tile grid (x index first), and timings."""
    import abtem
    import dask
    from ase import Atoms

    abtem.config.set({"device": "cpu", "fft": "fftw", "fftw.threads": 1,
                      "diagnostics.progress_bar": False, "dask.lazy": False})
    dask.config.set(scheduler="synchronous")
    syms, pos, box = supercell(spec)
    lx, ly, lz = spec["cell"]
    gpts = (_smooth_size(box[0] / POTENTIAL_SAMPLING), _smooth_size(box[1] / POTENTIAL_SAMPLING))
    nscan = tuple(scan or spec["scan"])
    sig = np.array([SIGMAS[s] for s in syms])
    rng = np.random.default_rng(spec["seed"])
    probe = abtem.Probe(energy=ENERGY_EV, semiangle_cutoff=SEMIANGLE_MRAD)
    detectors = [abtem.AnnularDetector(*HAADF_MRAD), abtem.AnnularDetector(*ABF_MRAD)]
    grid_scan = abtem.GridScan(start=(0.0, 0.0), end=(lx, ly), gpts=nscan, endpoint=False)
    acc = [np.zeros(nscan), np.zeros(nscan)]
    per_config = []
    max_mean_u = 0.0
    u_sum = np.zeros_like(pos)
    u = None
    for n in range(n_configs):
        t0 = time.perf_counter()
        if n % 2 == 0:
            u = rng.normal(size=pos.shape) * sig[:, None]
        du = u if n % 2 == 0 else -u
        u_sum += du
        atoms = Atoms(symbols=list(syms), positions=pos + du, cell=box, pbc=True)
        potential = abtem.Potential(
            atoms, gpts=gpts, slice_thickness=lz / spec["slices_per_repeat"],
            parametrization="lobato", projection="infinite").build(lazy=False)
        probe.grid.match(potential)
        meas = probe.scan(potential, scan=grid_scan, detectors=detectors)
        for k, m in enumerate(meas):
            arr = m.compute() if hasattr(m, "compute") else m
            acc[k] += np.asarray(arr.array, dtype=np.float64)
        per_config.append(time.perf_counter() - t0)
        log(f"  {spec['name']}: config {n + 1}/{n_configs} {per_config[-1]:.1f} s")
    if n_configs % 2 == 0:
        max_mean_u = float(np.abs(u_sum / n_configs).max())
    return dict(haadf=acc[0] / n_configs, abf=acc[1] / n_configs, per_config_s=per_config,
                potential_gpts=gpts, potential_sampling=(box[0] / gpts[0], box[1] / gpts[1]),
                box=box, scan_gpts=nscan, max_mean_displacement_a=max_mean_u,
                n_atoms=len(syms), cutoff_mrad=[float(v) for v in probe.cutoff_angles])


def symmetrize(g: np.ndarray, ops: tuple[str, ...]) -> np.ndarray:
    """Average over mirrors x -> -x, y -> -y (about index 0) and the transpose."""
    for op in ops:
        if op == "mx":
            g = 0.5 * (g + np.roll(g[::-1, :], 1, axis=0))
        elif op == "my":
            g = 0.5 * (g + np.roll(g[:, ::-1], 1, axis=1))
        elif op == "t":
            g = 0.5 * (g + g.T)
    return g


def resample(spec: dict, g: np.ndarray, kcut: float) -> tuple[np.ndarray, float]:
    """Band-limited periodic interpolation of tile samples g[ix, iy] onto the image grid.

    Keeps the Fourier coefficients with |k| <= kcut (1/A); returns the image (rows = y)
    and the fraction of the non-DC power that was outside the disc.
    """
    lx, ly, _ = spec["cell"]
    nx, ny = g.shape
    G = np.fft.fft2(g) / g.size
    kx = np.fft.fftfreq(nx, d=lx / nx)[:, None] * np.ones((1, ny))
    ky = np.fft.fftfreq(ny, d=ly / ny)[None, :] * np.ones((nx, 1))
    kr = np.hypot(kx, ky)
    assert kcut < min(nx / (2 * lx), ny / (2 * ly)), "tile sampled coarser than Nyquist"
    keep = kr <= kcut
    p2 = np.abs(G) ** 2
    p2[0, 0] = 0.0
    outside = float(p2[~keep].sum() / p2.sum())
    kv = np.column_stack([kx[keep], ky[keep]])
    coef = G[keep]
    p0, e1, e2 = image_frame(spec)
    h, w = spec["shape"]
    coef = coef * np.exp(2j * np.pi * kv @ p0)
    u = np.exp(2j * np.pi * np.arange(h)[:, None] * (kv @ e2)[None, :])  # rows
    v = np.exp(2j * np.pi * np.arange(w)[:, None] * (kv @ e1)[None, :])  # columns
    img = ((u * coef[None, :]) @ v.T).real
    return img, outside


def check_png(path: Path, name: str, signals: dict, truth: dict, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"A": "red", "B": "cyan", "O": "lime"}
    fig, axes = plt.subplots(2, 2, figsize=(12, 12))
    h, w = signals["haadf"].shape
    c0, r0 = w // 2 - 40, h // 2 - 40
    for col, key in enumerate(("haadf", "abf")):
        for row, crop in enumerate((False, True)):
            ax = axes[row, col]
            ax.imshow(signals[key], cmap="gray", origin="upper")
            for site, colour in colours.items():
                sel = truth["site"] == site
                ax.plot(truth["x_px"][sel], truth["y_px"][sel], "+", color=colour,
                        ms=6 if crop else 3, mew=1, label=site)
            if crop:
                ax.set_xlim(c0 - 0.5, c0 + 79.5)
                ax.set_ylim(r0 + 79.5, r0 - 0.5)
            else:
                ax.set_xlim(-0.5, w - 0.5)
                ax.set_ylim(h - 0.5, -0.5)
            ax.set_title(f"{name} {key} {'(centre crop)' if crop else ''} "
                         f"{meta['pixel_pm']:.0f} pm/px")
    axes[0, 0].legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def run_structure(spec: dict, out: Path, png: Path | None, n_configs: int, scan=None) -> dict:
    import abtem

    t_start = time.perf_counter()
    print(f"{spec['name']}: {spec['structure']} {spec['zone_axis']}", flush=True)
    res = simulate_tile(spec, n_configs, scan=scan, log=lambda s: print(s, flush=True))
    lam = wavelength_a()
    kcut = 2 * SEMIANGLE_MRAD * 1e-3 / lam * 1.02  # 2 alpha / lambda plus the soft edge
    signals, asym, outside = {}, {}, {}
    for key in ("haadf", "abf"):
        raw = res[key]
        sym = symmetrize(raw, spec["symmetry"])
        asym[key] = dict(rms_over_mean=float(np.sqrt(np.mean((raw - sym) ** 2)) / raw.mean()),
                         max_over_max=float(np.abs(raw - sym).max() / np.abs(raw).max()))
        img, outside[key] = resample(spec, sym, kcut)
        signals[key] = img.astype(np.float32)
    cols = columns(spec)
    truth = truth_table(spec, cols)
    p0, e1, e2 = image_frame(spec)
    m = np.linalg.inv(np.column_stack([e1, e2]))
    lx, ly, lz = spec["cell"]
    meta = dict(
        name=spec["name"], structure=spec["structure"], zone_axis=spec["zone_axis"],
        pixel_pm=100 * spec["pixel_a"], shape=list(spec["shape"]),
        rotation_deg=spec["rotation_deg"],
        tile_a=[lx, ly], repeat_along_beam_a=lz,
        tile_vectors_px=[list(m @ np.array([lx, 0.0])), list(m @ np.array([0.0, ly]))],
        tile_origin_px=list(m @ (-p0)),
        thickness_a=spec["nz"] * lz, thickness_repeats=spec["nz"],
        voltage_kv=ENERGY_EV / 1e3, wavelength_a=lam,
        convergence_semiangle_mrad=SEMIANGLE_MRAD, aberrations="none (defocus 0)",
        haadf_mrad=list(HAADF_MRAD), abf_mrad=list(ABF_MRAD),
        signal_units="fraction of the incident beam, noise-free, no source size",
        parametrization="lobato", projection="infinite",
        potential_gpts=list(res["potential_gpts"]),
        potential_sampling_a=list(res["potential_sampling"]),
        probe_box_a=list(res["box"][:2]), probe_box_repeats=list(spec["reps"]),
        antialias_cutoff_mrad=res["cutoff_mrad"],
        slice_thickness_a=lz / spec["slices_per_repeat"], n_slices=spec["nz"] * spec["slices_per_repeat"],
        tile_scan_gpts=list(res["scan_gpts"]),
        tile_scan_step_a=[lx / res["scan_gpts"][0], ly / res["scan_gpts"][1]],
        frozen_phonons=dict(configurations=n_configs, antithetic_pairs=n_configs // 2,
                            sigma_a_per_axis={s: SIGMAS[s] for s in sorted({a[0] for a in spec["atoms"]})},
                            directions="xyz", seed=spec["seed"],
                            max_abs_mean_displacement_a=res["max_mean_displacement_a"]),
        symmetrized=list(spec["symmetry"]),
        fp_asymmetry=asym,  # tile before symmetrizing vs after
        resampling=dict(method="exact band-limited Fourier interpolation of the periodic tile",
                        kcut_inv_a=kcut, power_outside_fraction=outside),
        column_position="position of the heaviest atom of the column (mean if several)",
        columns=[dict(site=c["site"], species=c["species"], x_tile_a=c["x"], y_tile_a=c["y"],
                      atoms=[[s, dx, dy] for s, dx, dy in c["atoms"]]) for c in cols],
        abtem_version=abtem.__version__,
        tile_time_s=sum(res["per_config_s"]),
        time_s=None,
    )
    if "polar" in spec:
        cdir = m @ np.array([0.0, 1.0])
        meta["polar"] = dict(spec["polar"], c_direction_px=list(cdir / np.linalg.norm(cdir)))
    meta["time_s"] = time.perf_counter() - t_start
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{spec['name']}.npz"
    np.savez_compressed(path, haadf=signals["haadf"], abf=signals["abf"],
                        meta_json=np.array(json.dumps(meta)),
                        **{k: v for k, v in truth.items()})
    if png is not None:
        png.mkdir(parents=True, exist_ok=True)
        check_png(png / f"{spec['name']}.png", spec["name"], signals, truth, meta)
    print(f"{spec['name']}: {meta['time_s']:.0f} s, {len(truth['x_px'])} columns, "
          f"asymmetry {asym}, outside {outside}, "
          f"{path.stat().st_size / 1e6:.2f} MB -> {path}", flush=True)
    return meta


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/data/abtem"))
    ap.add_argument("--png", type=Path, default=Path("/tmp/abtem_check"))
    ap.add_argument("--only", nargs="*", choices=sorted(STRUCTURES), default=None)
    ap.add_argument("--configs", type=int, default=8, help="frozen phonons (even)")
    ap.add_argument("--scan", type=int, nargs=2, default=None,
                    help="tile scan positions (test runs only)")
    args = ap.parse_args(argv)
    if args.configs % 2:
        ap.error("--configs must be even (antithetic pairs)")
    t0 = time.perf_counter()
    for name in args.only or list(STRUCTURES):
        run_structure(STRUCTURES[name](), args.out, args.png, args.configs, scan=args.scan)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
