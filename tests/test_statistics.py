"""Classification, layers and aggregation, checked against simulated truth."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from latticegenome.cells import measure_cells
from latticegenome.classify import Reservoir, fit_classes
from latticegenome.columns import find_columns
from latticegenome.layers import plane_profile, segment_layers
from latticegenome.simulate import DEMO_MATERIALS, simulate_superlattice
from latticegenome.stats import aggregate
from latticegenome.store import write_columns_h5
from latticegenome.tables import read_table

EXE = str(Path(sys.executable).parent / "latticegenome")


def test_reservoir_is_uniform_and_bounded():
    r = Reservoir(1000, 1, seed=1)
    for k in range(100):
        r.add(np.full((500, 1), k), origin=k)
    assert r.sample.shape == (1000, 1) and r.seen == 50_000
    counts = np.bincount(r.sample[:, 0].astype(int), minlength=100)
    # 10 expected per batch; a uniform sample keeps early batches too
    assert counts[:10].sum() > 50 and counts.max() < 30


def test_bic_finds_two_configurations_and_numbers_them_stably(rng):
    n = 3000
    base = np.array([390.5, 390.5, 90, 0, 0, 0, 0, 0, 0.46])
    polar = np.array([390.5, 412.0, 90, 0, 0.055, 0, 0, 12, 0.24])
    noise = np.array([1.5, 1.5, 0.3, 0.003, 0.003, 0.003, 2, 2, 0.02])
    x = np.vstack([base + rng.normal(0, 1, (n, 9)) * noise, polar + rng.normal(0, 1, (n, 9)) * noise])
    model = fit_classes(x, seed=0)
    assert model.n_classes == 2
    labels, prob = model.assign(x)
    # class 0 has the smaller intensity ratio (the polar layer here)
    assert np.mean(labels[n:] == 0) > 0.99 and np.mean(labels[:n] == 1) > 0.99
    assert np.all(model.assign(np.full((1, 9), np.nan))[0] == -1)


@pytest.fixture(scope="module")
def superlattice():
    rng = np.random.default_rng(7)
    img, truth, meta = simulate_superlattice((384, 384), angle_deg=1.5, drift_px_per_row=(0.004, 0.002),
                                             rng=rng)
    cols = find_columns(img, spacing_px=19.5)
    return img, truth, meta, cols


def truth_cells(truth, pixel_size):
    """Cells measured on the true column positions (drift and rotation included)."""
    present = truth.present | (truth.site == "A")
    cols = {"x": truth.x[present], "y": truth.y[present], "site": truth.site[present],
            "i": truth.i[present], "j": truth.j[present],
            "x_err": np.ones(present.sum()), "y_err": np.ones(present.sum()),
            "amplitude": truth.amplitude[present], "sigma": np.full(present.sum(), truth.sigma)}
    cells = measure_cells(cols, pixel_size)
    b = truth.site == "B"
    layer_of = {(i, j): m for i, j, m in zip(truth.i[b], truth.j[b], truth.layer[b])}
    cells["layer"] = np.array([layer_of.get((i, j), -1) for i, j in zip(cells["i"], cells["j"])])
    return cells


def test_layers_match_the_simulated_truth(superlattice):
    img, truth, meta, cols = superlattice
    px = meta["pixel_size_pm"]
    cells = measure_cells(cols.as_dict(), px)
    prof = plane_profile(cells)
    seg = segment_layers(prof)
    # interfaces within one unit cell of the true ones (positions along y)
    tc = truth_cells(truth, px)
    tprof = plane_profile(tc)
    tlayer = np.array([np.bincount(tc["layer"][(tc["v"] == p) & (tc["layer"] >= 0)]).argmax()
                       for p in tprof["plane"]])
    change = np.flatnonzero(np.diff(tlayer) != 0) + 1
    true_if = (tprof["position_px"][change - 1] + tprof["position_px"][change]) / 2
    assert len(seg["interfaces_px"]) == len(true_if) >= 2
    cell_px = meta["materials"][0]["a_pm"] / px
    assert np.all(np.abs(np.sort(seg["interfaces_px"]) - np.sort(true_if)) < cell_px)
    # per-layer lattice parameter within 2 pm of the truth measured on the true
    # positions (drift included), on planes not next to an interface; the
    # brighter A (label 1) is BaTiO3 (material 1)
    for lab, mat in ((0, 0), (1, 1)):
        lab_planes = prof["plane"][seg["label"] == lab]
        idx = np.flatnonzero(seg["label"] == lab)
        inner_idx = [k for k in idx if 0 < k < len(seg["label"]) - 1
                     and seg["label"][k - 1] == lab and seg["label"][k + 1] == lab]
        assert inner_idx, lab_planes
        b_found = np.mean(prof["b_pm"][inner_idx])
        tb = tc["b_pm"][tc["layer"] == mat]
        assert abs(b_found - np.median(tb)) < 2.0
    # displacement direction right in every polar (BaTiO3, label 1) layer: +y
    polar = seg["label"] == 1
    runs = np.split(np.flatnonzero(polar), np.flatnonzero(np.diff(np.flatnonzero(polar)) > 1) + 1)
    for run in runs:
        if len(run):
            assert np.mean(prof["dy_pm"][run]) > 5.0
    for run in np.split(np.flatnonzero(~polar), np.flatnonzero(np.diff(np.flatnonzero(~polar)) > 1) + 1):
        if len(run) > 2:
            assert abs(np.mean(prof["dy_pm"][run[1:-1]])) < 3.0


def test_aggregate_and_classify_cli(tmp_path, superlattice):
    img, truth, meta, cols = superlattice
    files = []
    for k in range(3):
        p = tmp_path / f"img{k}.h5"
        write_columns_h5(p, cols, source=f"img{k}.tif", pixel_size_pm=meta["pixel_size_pm"], shape=img.shape)
        files.append(p)
    summary = aggregate(files, tmp_path / "s.h5", tmp_path / "i.tsv", tmp_path / "r.tsv",
                        classes_csv=tmp_path / "c.csv", layers_csv=tmp_path / "l.csv",
                        nominal_pm=390.5, materials=DEMO_MATERIALS, log=lambda m: None)
    assert summary["images_used"] == 3 and summary["classes"] >= 2
    assert abs(summary["period_planes_mean"] - 10) < 0.6
    assert summary["layers"]["BaTiO3"]["dy_pm"] > 8 and abs(summary["layers"]["SrTiO3"]["dy_pm"]) < 2
    classes = read_table(tmp_path / "c.csv")
    assert sum(int(r["population"]) for r in classes) == summary["cells"] - np.sum(
        ~np.isfinite(measure_cells(cols.as_dict(), 20.0)["dx_pm"])) * 3
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["cells/class"].shape == f["cells/x"].shape
        assert set(np.unique(f["cells/image"][()])) == {0, 1, 2}
    out = subprocess.run([EXE, "classify", *map(str, files), "--out", str(tmp_path / "cli.h5")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cli.classes.csv").exists() and (tmp_path / "cli.layers.csv").exists()


def test_classify_cli_rejects_a_file_without_b(tmp_path, superlattice):
    img, truth, meta, cols = superlattice
    good = tmp_path / "good.h5"
    write_columns_h5(good, cols, source="good.tif", pixel_size_pm=20.0, shape=img.shape)
    bad = tmp_path / "a_only.csv"
    bad.write_text("x,y,site,i,j\n1,2,A,0,0\n21,2,A,1,0\n")
    out = subprocess.run([EXE, "classify", str(good), str(bad), "--out", str(tmp_path / "o.h5")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "a_only.csv" in out.stderr and "no B columns" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "o.h5").exists()


def test_strain_reference_region(superlattice):
    from latticegenome.stats import measure_image_cells

    img, truth, meta, cols = superlattice
    whole = measure_image_cells(cols.as_dict(), 20.0, 390.5, [0, 0, 383, 383])
    assert abs(np.mean(whole["eyy"])) < 2e-3 and abs(np.mean(whole["exx"])) < 2e-3
    nominal = measure_image_cells(cols.as_dict(), 20.0, 390.5)
    assert np.mean(nominal["eyy"]) > 0.01  # BaTiO3 layers are longer than SrTiO3's 390.5 pm
    with pytest.raises(ValueError, match="reference region"):
        measure_image_cells(cols.as_dict(), 20.0, 390.5, [1000, 1000, 1100, 1100])
