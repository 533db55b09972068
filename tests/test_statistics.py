"""Classification, layers and aggregation, checked against simulated truth."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from latticegenome.columns.finder import find_columns
from latticegenome.columns.simulate import DEMO_MATERIALS, simulate_superlattice
from latticegenome.columns.store import write_columns_h5
from latticegenome.core.tables import read_table
from latticegenome.statistics.aggregate import aggregate
from latticegenome.statistics.cells import measure_cells
from latticegenome.statistics.classes import Reservoir, fit_classes
from latticegenome.statistics.layers import plane_profile, segment_layers

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
    with pytest.warns(DeprecationWarning, match="log="):  # log= is deprecated and ignored
        summary = aggregate(files, tmp_path / "s.h5", tmp_path / "i.tsv", tmp_path / "r.tsv",
                            classes_csv=tmp_path / "c.csv", layers_csv=tmp_path / "l.csv",
                            nominal_pm=390.5, materials=DEMO_MATERIALS, log=lambda m: None)
    assert summary["images_used"] == 3 and summary["classes"] >= 2
    assert abs(summary["period_planes_mean"] - 10) < 0.6
    assert summary["layers"]["BaTiO3"]["dy_pm"] > 8 and abs(summary["layers"]["SrTiO3"]["dy_pm"]) < 2
    classes = read_table(tmp_path / "c.csv")
    # every cell is classified but those without a usable B (a B vacancy: not detected,
    # and significantly emptier than the image's B columns)
    one = measure_cells(cols.as_dict(), 20.0)
    assert (~one["B_detected"]).sum() >= 1
    assert np.array_equal(one["B_usable"], one["B_detected"])  # high dose: empty = undetected
    assert sum(int(r["population"]) for r in classes) == summary["cells"] - np.sum(
        ~(np.isfinite(one["dx_pm"]) & one["B_usable"])) * 3
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
    from latticegenome.statistics.aggregate import measure_image_cells

    img, truth, meta, cols = superlattice
    whole = measure_image_cells(cols.as_dict(), 20.0, 390.5, [0, 0, 383, 383])
    assert abs(np.mean(whole["eyy"])) < 2e-3 and abs(np.mean(whole["exx"])) < 2e-3
    nominal = measure_image_cells(cols.as_dict(), 20.0, 390.5)
    assert np.mean(nominal["eyy"]) > 0.01  # BaTiO3 layers are longer than SrTiO3's 390.5 pm
    with pytest.raises(ValueError, match="reference region"):
        measure_image_cells(cols.as_dict(), 20.0, 390.5, [1000, 1000, 1100, 1100])


# --- names, physical sanity, ingest refusals ---------------------------------

UNICODE_NAMES = ["ünïcödé_é.tif", "STO_BTO_5µm_2.5Å.dm4", "plain_ascii.tif"]


def _write(path, cols, source, px, shape, **kw):
    write_columns_h5(path, cols, source=source, pixel_size_pm=px, shape=shape, **kw)
    return path


def _read_utf8_table(path, delimiter):
    import csv

    with open(path, newline="", encoding="utf-8") as fh:  # the tables are UTF-8 whatever the locale
        return list(csv.DictReader(fh, delimiter=delimiter))


def test_unicode_names_round_trip_through_statistics(tmp_path, superlattice):
    img, truth, meta, cols = superlattice
    px = meta["pixel_size_pm"]
    files = [_write(tmp_path / f"img{k}.h5", cols, f"/raw/Ω run/{name}", px, img.shape)
             for k, name in enumerate(UNICODE_NAMES)]
    rejected_source = "/raw/Ω run/rejected_Å_µ.tif"
    files.append(_write(tmp_path / "bad.h5", None, rejected_source, px, None, status="rejected",
                        reason="no lattice found"))
    out = tmp_path / "statistics.h5"
    summary = aggregate(files, out, tmp_path / "images.tsv", tmp_path / "rejected.tsv",
                        classes_csv=tmp_path / "classes.csv", layers_csv=tmp_path / "layers.csv",
                        nominal_pm=390.5, materials=DEMO_MATERIALS)
    assert summary["images_used"] == 3 and summary["images_rejected"] == 1
    with h5py.File(out) as f:
        for key in ("images", "layers/image", "interfaces/image", "layers/material"):
            assert h5py.check_string_dtype(f[key].dtype).encoding == "utf-8", key
        assert list(f["images"].asstr()[()]) == UNICODE_NAMES
        assert set(f["layers/image"].asstr()[()]) == set(UNICODE_NAMES)
        assert set(f["interfaces/image"].asstr()[()]) == set(UNICODE_NAMES)
        assert set(f["layers/material"].asstr()[()]) <= {"SrTiO3", "BaTiO3", ""}
    assert [r["image"] for r in _read_utf8_table(tmp_path / "images.tsv", "\t")] == UNICODE_NAMES
    assert {r["image"] for r in _read_utf8_table(tmp_path / "layers.csv", ",")} == set(UNICODE_NAMES)
    rej = _read_utf8_table(tmp_path / "rejected.tsv", "\t")
    assert [(r["file"], r["source"]) for r in rej] == [("rejected_Å_µ.tif", rejected_source)]
    # the layer figure finds the image by its name
    from latticegenome.figures.plots import plot_layers

    plot_layers(out, tmp_path / "layers.png", image=UNICODE_NAMES[0], pixel_size_pm=px)
    assert (tmp_path / "layers.png").stat().st_size > 0


def test_read_h5_strings_reads_old_fixed_length_names(tmp_path):
    from latticegenome.statistics.results import read_h5_strings

    with h5py.File(tmp_path / "old.h5", "w") as f:
        f["old"] = np.array([b"a.tif", "µ_Å.tif".encode()], dtype="S")  # written before UTF-8 strings
        f["new"] = np.array(["a.tif", "µ_Å.tif"], dtype=h5py.string_dtype("utf-8"))
        f["empty"] = np.zeros(0, dtype=h5py.string_dtype("utf-8"))
        for key in ("old", "new"):
            assert list(read_h5_strings(f[key])) == ["a.tif", "µ_Å.tif"]
        assert read_h5_strings(f["empty"]).shape == (0,)


def test_lattice_sanity():
    import doctest

    from latticegenome.statistics import aggregate as stats
    from latticegenome.statistics.aggregate import lattice_sanity

    assert doctest.testmod(stats, verbose=False).failed == 0
    mats = DEMO_MATERIALS  # 390.5 and 399.2 pm
    reason = lattice_sanity(780.2, 781.0, mats, 390.5, 0.15)
    assert reason == ("measured a = 780.2 pm, b = 781.0 pm; configured 390.5-399.2 pm "
                      "(SrTiO3, BaTiO3): check the pixel size (tolerance 15 %)")
    assert lattice_sanity(430.0, 453.0, mats, 390.5, 0.15) is None  # 10 % strained BaTiO3: kept
    assert lattice_sanity(390.0, 460.0, mats, None, 0.15) is not None  # b > 1.15 x 399.2
    assert lattice_sanity(331.0, 390.0, mats, None, 0.15) is not None  # a < 0.85 x 390.5
    assert "390.5 pm (nominal)" in lattice_sanity(700.0, 700.0, None, 390.5, 0.15)
    assert lattice_sanity(700.0, 700.0, None, None, 0.15) is None  # nothing known: no check
    assert lattice_sanity(700.0, 700.0, mats, 390.5, None) is None  # check switched off
    assert lattice_sanity(np.nan, np.nan, mats, 390.5, 0.15) is None  # nothing measured


def test_image_with_a_wrong_pixel_size_is_rejected(tmp_path, superlattice, caplog):
    import dataclasses
    import re

    from latticegenome.statistics.classes import descriptor_matrix

    img, truth, meta, cols = superlattice
    px = meta["pixel_size_pm"]
    # 10 % tensile strain in both directions (same pixel size): still the configured material
    strained = dataclasses.replace(cols, x=cols.x * 1.10, y=cols.y * 1.10)
    files = [_write(tmp_path / "good0.h5", cols, "good0.tif", px, img.shape),
             _write(tmp_path / "double.h5", cols, "double_px.tif", 2 * px, img.shape),
             _write(tmp_path / "good1.h5", cols, "good1.tif", px, img.shape),
             _write(tmp_path / "strained.h5", strained, "strained.tif", px, img.shape)]
    caplog.set_level("INFO", logger="latticegenome.statistics")
    summary = aggregate(files, tmp_path / "s.h5", tmp_path / "i.tsv", tmp_path / "r.tsv",
                        classes_csv=tmp_path / "c.csv", layers_csv=tmp_path / "l.csv",
                        nominal_pm=390.5, materials=DEMO_MATERIALS)
    messages = [r.getMessage() for r in caplog.records if r.name == "latticegenome.statistics.aggregate"]
    kept = ["good0.tif", "good1.tif", "strained.tif"]
    assert summary["images_used"] == 3 and summary["images_rejected"] == 1
    (rej,) = read_table(tmp_path / "r.tsv")
    assert rej["file"] == "double_px.tif" and "pixel size" in rej["reason"]
    assert "configured 390.5-399.2 pm (SrTiO3, BaTiO3)" in rej["reason"]
    a, b = map(float, re.search(r"a = ([\d.]+) pm, b = ([\d.]+) pm", rej["reason"]).groups())
    good = measure_cells(cols.as_dict(), px)
    assert abs(a - 2 * np.median(good["a_pm"])) < 0.1 and abs(b - 2 * np.median(good["b_pm"])) < 0.1
    assert any("double_px.tif" in m and "pixel size" in m for m in messages)
    # none of its cells anywhere: table, class model, layers, per-image summary
    n_cells, n_classified = len(good["x"]), int(descriptor_matrix(good)[1].sum())
    assert summary["cells"] == 3 * n_cells
    population = sum(int(r["population"]) for r in read_table(tmp_path / "c.csv"))
    assert population == 3 * n_classified
    assert [r["image"] for r in read_table(tmp_path / "i.tsv")] == kept
    assert {r["image"] for r in read_table(tmp_path / "l.csv")} == set(kept)
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["cells/a_pm"][()].max() < 1.15 * 1.10 * 412.0
        assert sum(f["histograms/a_pm/counts"][()]) <= 3 * n_cells


def test_names_refused_at_ingest_are_listed_as_rejected(tmp_path, superlattice):
    img, truth, meta, cols = superlattice
    good = _write(tmp_path / "good.h5", cols, "good.tif", meta["pixel_size_pm"], img.shape)
    refused = [("bad\\nname.tif", "control character in the name"),
               ("link_µ.tif", "a symbolic link, not a file")]
    summary = aggregate([good], tmp_path / "s.h5", tmp_path / "i.tsv", tmp_path / "r.tsv",
                        nominal_pm=390.5, materials=DEMO_MATERIALS, extra_rejected=refused)
    assert summary["images_used"] == 1 and summary["images_rejected"] == 2
    rows = _read_utf8_table(tmp_path / "r.tsv", "\t")
    assert [(r["file"], r["reason"], r["source"]) for r in rows] == [
        (name, reason, "refused at ingest") for name, reason in refused]
    with h5py.File(tmp_path / "s.h5") as f:
        import json

        assert json.loads(f.attrs["summary"])["images_rejected"] == 2


# --- layer names, the statistics file, the workflow's inputs and figures ------------------


@pytest.mark.parametrize("first,second,dimmer", [
    (("BiFeO3", "Bi"), ("SrTiO3", "Sr"), "SrTiO3"),  # Bi (83) was Z = 0 in the simulator's table
    (("NdNiO3", "Nd"), ("KTaO3", "K"), "KTaO3"),  # both were 0: the given order won
    (("KTaO3", "K"), ("BiFeO3", "Bi"), "KTaO3"),
    (("BaTiO3", "Ba"), ("SrTiO3", "Sr"), "SrTiO3"),
    (("SmScO3", "Sm"), ("YAlO3", "Y"), "YAlO3"),
    (("LSMO", "La0.7Sr0.3"), ("BaTiO3", "Ba"), "LSMO"),  # mixed A site: mean Z 51.3 < 56
])
def test_layers_are_named_by_the_atomic_number_of_the_a_site(first, second, dimmer):
    from latticegenome.statistics.layers import name_layers

    materials = [{"formula": f, "A": a} for f, a in (first, second)]
    names = name_layers(materials)
    assert names[0] == dimmer and set(names) == {first[0], second[0]}
    assert name_layers(materials[::-1]) == names


def test_layer_names_refuse_an_unknown_a_site():
    from latticegenome.statistics.layers import name_layers

    with pytest.raises(ValueError, match="material XyO3: A-site species 'Xy'"):
        name_layers([{"formula": "SrTiO3", "A": "Sr"}, {"formula": "XyO3", "A": "Xy"}])
    with pytest.raises(ValueError, match="material BaTiO3"):
        name_layers([{"formula": "SrTiO3", "A": "Sr"}, {"formula": "BaTiO3"}])
    assert name_layers([{"formula": "SrTiO3", "A": "Sr"}]) == ["layer 0", "layer 1"]


@pytest.fixture(scope="module")
def statistics_file(tmp_path_factory, superlattice):
    img, truth, meta, cols = superlattice
    tmp = tmp_path_factory.mktemp("stats")
    raw, files = [], []
    for k, name in enumerate(["first_µ.npy", "second.npy", "third.npy"]):
        raw.append(tmp / name)
        np.save(raw[-1], img)
        files.append(_write(tmp / f"{name}.h5", cols, str(raw[-1]), meta["pixel_size_pm"],
                            img.shape))
    out = tmp / "statistics.h5"
    summary = aggregate(files, out, tmp / "i.tsv", tmp / "r.tsv", nominal_pm=390.5,
                        materials=DEMO_MATERIALS, provenance={"rule": "test"}, max_classes=3)
    return out, summary, raw, files


def test_statistics_file_reader(statistics_file):
    from latticegenome.statistics.results import (
        FORMAT_VERSION,
        image_cells,
        read_statistics,
    )

    out, summary, _, _ = statistics_file
    stats = read_statistics(out)
    assert stats.format_version == 1 < FORMAT_VERSION and stats.summary == summary
    assert stats.images == ["first_µ.npy", "second.npy", "third.npy"]
    assert stats.provenance == {"rule": "test", "output": "statistics.h5"}
    assert stats.units["lengths"] == "pm" and set(stats.histograms) >= {"a_pm", "intensity_ratio"}
    assert stats.classes["population"].sum() > 0 and len(stats.bic) >= 2
    assert set(stats.layers["image"]) == set(stats.images) and stats.layers["image"].dtype.kind == "U"
    assert set(stats.layers["material"]) <= {"SrTiO3", "BaTiO3", ""}
    with h5py.File(out) as f:
        assert f.attrs["format_version"] == 1
        image_index = f["cells/image"][()]
        x, classes = f["cells/x"][()], f["cells/class"][()]
    assert stats.n_cells == len(x) == summary["cells"]
    for k in range(3):
        cells = image_cells(out, k)
        assert np.array_equal(cells["x"], x[image_index == k])
        assert np.array_equal(cells["class"], classes[image_index == k])
        assert np.all(cells["image"] == k) and "class_probability" in cells
    assert len(image_cells(out, 3)["x"]) == 0


def test_statistics_file_versions(tmp_path, statistics_file):
    import shutil

    from latticegenome.core.errors import LatticeGenomeError
    from latticegenome.statistics.results import read_statistics

    old = tmp_path / "old.h5"
    shutil.copy(statistics_file[0], old)
    with h5py.File(old, "a") as f:  # written before the attribute: version 1
        del f.attrs["format_version"]
    assert read_statistics(old).format_version == 1
    with h5py.File(old, "a") as f:
        f.attrs["format_version"] = 3
    with pytest.raises(LatticeGenomeError, match="old.h5: statistics format version 3"):
        read_statistics(old)
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(LatticeGenomeError, match="junk.h5: not a statistics file"):
        read_statistics(tmp_path / "junk.h5")


def test_experiment_columns_follow_the_raw_images(tmp_path):
    from latticegenome.columns.batch import MARKER
    from latticegenome.core.errors import LatticeGenomeError
    from latticegenome.statistics.experiment import experiment_columns

    a, b = tmp_path / "batch_a", tmp_path / "batch_b"
    for folder, names in ((a, ["x.tif", "z.tif"]), (b, ["y.tif"])):
        folder.mkdir()
        (folder / MARKER).write_text('{"images": []}')
        for name in names:
            (folder / f"{name}.h5").write_bytes(b"")
    raw = ["/raw/y.tif", "/raw/x.tif", "/raw/z.tif"]
    assert experiment_columns([a, b], raw) == [str(b / "y.tif.h5"), str(a / "x.tif.h5"),
                                                 str(a / "z.tif.h5")]
    with pytest.raises(LatticeGenomeError, match=r"no columns file for 1 image\(s\), e.g. /raw/w.tif; "
                                                 "rerun find_columns for demo"):
        experiment_columns([a, b], [*raw, "/raw/w.tif"], experiment="demo")
    (b / MARKER).unlink()
    with pytest.raises(LatticeGenomeError, match="batch_b: no batch.json .*remove that folder"):
        experiment_columns([a, b], raw)


def test_experiment_figures(tmp_path, statistics_file):
    from latticegenome.figures.experiment import experiment_figures

    out, _, raw, files = statistics_file
    written = experiment_figures(out, raw, files, histograms_png=tmp_path / "h" / "histograms.png",
                                 overview_dir=tmp_path / "images", layers_png=tmp_path / "layers.png",
                                 title="demo", settings={"pixel_size_pm": 20.0})
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "first_µ.png", "second.png", "third.png"] == sorted(p.name for p in written)
    for png in ("h/histograms.png", "layers.png"):
        assert (tmp_path / png).stat().st_size > 0


def test_the_library_never_chooses_a_matplotlib_backend():
    """Only the entry points (the scripts, cli.main) set it."""
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "latticegenome"
    library = [p for p in src.rglob("*.py") if p != src / "cli.py"]
    calls = [f"{p.name}:{node.lineno}" for p in library for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr in ("use", "switch_backend")
             and getattr(node.func.value, "id", "") in ("matplotlib", "plt", "mpl")]
    assert not calls, calls
