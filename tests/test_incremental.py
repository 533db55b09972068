"""Incremental ingest and map-reduce statistics: increments never change what came
before, and the merged statistics equal a one-shot run's."""

import hashlib
import json
import os

import numpy as np
import pytest
import tifffile

from latticegenome.columns.batch import batches, increment_batches
from latticegenome.columns.finder import find_columns
from latticegenome.columns.simulate import DEMO_MATERIALS, simulate_superlattice
from latticegenome.columns.store import write_columns_h5
from latticegenome.core.tables import read_table
from latticegenome.ingest.increments import ingest_increment, read_increments, refresh_listing
from latticegenome.ingest.local import LocalBackend
from latticegenome.ingest.manifest import manifest_increments, read_manifest
from latticegenome.statistics.aggregate import aggregate
from latticegenome.statistics.experiment import reduce_experiment
from latticegenome.statistics.incremental import match_classes, needs_refit
from latticegenome.statistics.mapreduce import measure_batch
from latticegenome.statistics.partials import (
    Partials,
    Sample,
    cell_keys,
    read_cell_table,
    read_partials,
)
from latticegenome.statistics.results import image_cells, read_statistics


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- batches


def test_a_new_increment_never_changes_earlier_batches():
    rows = [(f"img_{k:03d}", 0) for k in range(7)]
    before = increment_batches(rows, 3)
    assert before == batches([r[0] for r in rows], 3)  # one increment: the fixed batches
    after = increment_batches(rows + [("late_0", 1), ("late_1", 1), ("later", 2)], 3)
    assert after[: len(before)] == before
    assert after[len(before):] == [["late_0", "late_1"], ["later"]]
    with pytest.raises(ValueError, match="at least 1"):
        increment_batches(rows, 0)


# --------------------------------------------------------------------------- ingest


@pytest.fixture
def facility(tmp_path):
    src = tmp_path / "facility" / "exp"
    src.mkdir(parents=True)
    return LocalBackend("scope", tmp_path / "facility"), src


def _drop(src, names, size=1000):
    for name in names:
        (src / name).write_bytes(os.urandom(size))


def test_three_increments_are_append_only(tmp_path, facility):
    backend, src = facility
    raw, manifest = tmp_path / "data/exp/raw", tmp_path / "data/exp/manifest.tsv"
    _drop(src, ["a.tif", "b.tif"])
    new, refused, entries = ingest_increment(backend, "exp", "*.tif", raw, manifest)
    assert [e.file for e in new] == ["a.tif", "b.tif"] and not refused
    first = tmp_path / "data/exp/increments/000000.tsv"
    sha0, mtime0 = _sha(first), first.stat().st_mtime_ns
    raw_mtimes = {p.name: p.stat().st_mtime_ns for p in raw.glob("*.tif")}

    _drop(src, ["c.tif", "0_early_name.tif"])  # sorts before the others: still appended
    new, _, _ = ingest_increment(backend, "exp", "*.tif", raw, manifest)
    assert sorted(e.file for e in new) == ["0_early_name.tif", "c.tif"]
    new, _, entries = ingest_increment(backend, "exp", "*.tif", raw, manifest)
    assert new == []  # nothing new: no increment written
    _drop(src, ["d.tif"])
    new, _, entries = ingest_increment(backend, "exp", "*.tif", raw, manifest)
    assert [e.file for e in new] == ["d.tif"]

    assert _sha(first) == sha0 and first.stat().st_mtime_ns == mtime0
    assert {p.name: p.stat().st_mtime_ns for p in raw.glob("*.tif") if p.name in raw_mtimes} == raw_mtimes
    assert manifest_increments(manifest) == [("a.tif", 0), ("b.tif", 0), ("0_early_name.tif", 1),
                                             ("c.tif", 1), ("d.tif", 2)]
    assert [e.file for e in read_manifest(manifest)] == [e.file for e in entries]
    assert len({e.task_id for e in entries}) == 3  # one task per increment
    assert [len(i) for i in read_increments(tmp_path / "data/exp/increments")] == [2, 2, 1]


def test_a_changed_source_file_is_reported_never_taken_again(tmp_path, facility):
    backend, src = facility
    raw, manifest = tmp_path / "raw", tmp_path / "manifest.tsv"
    _drop(src, ["a.tif", "b.tif"])
    ingest_increment(backend, "exp", "*.tif", raw, manifest)
    copy = _sha(raw / "a.tif")
    (src / "a.tif").write_bytes(b"changed" * 100)
    (src / "b.tif").unlink()  # deleted at the facility: no change of ours
    new, refused, entries = ingest_increment(backend, "exp", "*.tif", raw, manifest)
    assert new == [] and [e.file for e in entries] == ["a.tif", "b.tif"]
    assert len(refused) == 1 and refused[0][0] == "a.tif" and "changed since ingest" in refused[0][1]
    assert _sha(raw / "a.tif") == copy  # the copy that arrived is kept


def test_a_failed_increment_leaves_nothing_and_the_rerun_takes_it(tmp_path, facility, monkeypatch):
    import latticegenome.ingest.local as local

    backend, src = facility
    raw, manifest = tmp_path / "raw", tmp_path / "manifest.tsv"
    _drop(src, ["a.tif"])
    ingest_increment(backend, "exp", "*.tif", raw, manifest)
    _drop(src, ["b.tif", "c.tif"])
    real, calls = local._copy_verified, []

    def dies_on_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise OSError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(local, "_copy_verified", dies_on_second)
    with pytest.raises(OSError):
        ingest_increment(backend, "exp", "*.tif", raw, manifest)
    assert not (tmp_path / "increments/000001.tsv").exists()
    monkeypatch.setattr(local, "_copy_verified", real)
    new, _, _ = ingest_increment(backend, "exp", "*.tif", raw, manifest)
    assert sorted(e.file for e in new) == ["b.tif", "c.tif"]
    assert manifest_increments(manifest) == [("a.tif", 0), ("b.tif", 1), ("c.tif", 1)]


def test_listing_marker_is_rewritten_only_when_the_listing_changes(tmp_path, facility):
    backend, src = facility
    marker = tmp_path / "listing.json"
    _drop(src, ["a.tif"])
    assert refresh_listing(backend, "exp", "*.tif", marker)
    mtime = marker.stat().st_mtime_ns
    assert not refresh_listing(backend, "exp", "*.tif", marker)
    assert marker.stat().st_mtime_ns == mtime
    _drop(src, ["b.tif"])
    assert refresh_listing(backend, "exp", "*.tif", marker)
    assert json.loads(marker.read_text())["files"] == 2


# --------------------------------------------------------------------------- map-reduce


@pytest.fixture(scope="module")
def column_files(tmp_path_factory):
    """Six small superlattice images' column files (different seeds)."""
    tmp = tmp_path_factory.mktemp("mapreduce")
    files = []
    for k in range(6):
        img, _, meta = simulate_superlattice((200, 200), rng=np.random.default_rng(40 + k))
        raw = tmp / f"img_{k}é.tif"
        tifffile.imwrite(raw, img.astype(np.float32))
        cols = find_columns(img, spacing_px=19.5)
        files.append(tmp / f"{raw.name}.h5")
        write_columns_h5(files[-1], cols, source=str(raw), pixel_size_pm=meta["pixel_size_pm"],
                         shape=img.shape)
    return tmp, files


def _reduce(tmp, files, split, name, *, growth=1.0):
    """The map step on batches of ``split`` sizes, then the reduce step."""
    out = tmp / name
    (out / "exp").mkdir(parents=True)
    (out / "refused.tsv").write_text("file\treason\n")
    jobs, k0 = [], 0
    for b, size in enumerate(split):
        job = {"name": f"{b:05d}", "partition": f"experiment=exp/batch={b:05d}",
               "partials": out / f"p{b}.npz", "cells": out / f"cells/experiment=exp/batch={b:05d}/cells.parquet",
               "classes": out / f"classes/experiment=exp/batch={b:05d}/classes.parquet",
               "summary": out / f"s{b}.json"}
        measure_batch(files[k0:k0 + size], job["cells"], job["partials"], nominal_pm=390.5,
                      materials=DEMO_MATERIALS)
        jobs.append(job)
        k0 += size
    summary = reduce_experiment(
        jobs, out / "refused.tsv", out / "exp/statistics.h5", out / "exp/images.tsv",
        out / "exp/rejected.tsv", classes_csv=out / "exp/classes.csv",
        layers_csv=out / "exp/layers.csv", experiment="exp", materials=DEMO_MATERIALS,
        classes={"max_classes": 3, "refit_growth": growth})
    return out, jobs, summary


def test_map_reduce_equals_the_one_shot_aggregate(column_files):
    tmp, files = column_files
    out, jobs, summary = _reduce(tmp, files, [4, 2], "mr")
    one = tmp / "one"
    one.mkdir()
    ref = aggregate(files, one / "statistics.h5", one / "images.tsv", one / "rejected.tsv",
                    layers_csv=one / "layers.csv", nominal_pm=390.5, materials=DEMO_MATERIALS,
                    max_classes=3)
    assert summary["cells"] == ref["cells"] and summary["images_used"] == ref["images_used"] == 6
    a, b = read_statistics(out / "exp/statistics.h5"), read_statistics(one / "statistics.h5")
    assert a.format_version == 2 and b.format_version == 1 and a.images == b.images
    for name in b.histograms:
        assert np.array_equal(a.histograms[name][1], b.histograms[name][1]), name
    assert read_table(out / "exp/images.tsv") == read_table(one / "images.tsv")
    la, lb = read_table(out / "exp/layers.csv"), read_table(one / "layers.csv")
    assert [r["a_pm"] for r in la] == [r["a_pm"] for r in lb]  # same planes, same values
    assert [r["layer"] for r in la] == [r["layer"] for r in lb]
    for k in range(6):  # every cell, read back from the Parquet tables
        ca, cb = image_cells(out / "exp/statistics.h5", k), image_cells(one / "statistics.h5", k)
        for f in ("x", "y", "a_pm", "dx_pm", "dy_err_pm", "B_detected"):
            assert np.array_equal(ca[f], cb[f], equal_nan=ca[f].dtype.kind == "f"), f
        assert ca["class"].shape == ca["x"].shape and (ca["class"] >= -1).all()


def test_increments_equal_one_shot_up_to_the_refit_policy(column_files):
    tmp, files = column_files
    one, _, s_one = _reduce(tmp, files, [6], "inc_one")
    three, _, s_three = _reduce(tmp, files, [2, 3, 1], "inc_three")
    pa, pb = read_partials(one / "p0.npz")[0], None
    merged = Partials(histograms={})
    for b in range(3):
        merged.merge(read_partials(three / f"p{b}.npz")[0])
    pb = merged
    # the keyed sample is the same cells whatever the split
    assert np.array_equal(pa.sample.keys, pb.sample.keys) and pa.sample.images == pb.sample.images
    assert s_one["classes"] == s_three["classes"] and s_one["cells"] == s_three["cells"]
    # with refit_growth 1 the model is fitted on the same sample: the same classes, up to ids
    la = np.concatenate([image_cells(one / "exp/statistics.h5", k)["class"] for k in range(6)])
    lb = np.concatenate([image_cells(three / "exp/statistics.h5", k)["class"] for k in range(6)])
    pairs = {(int(x), int(y)) for x, y in zip(la, lb)}
    assert len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs})


def test_class_ids_stay_stable_as_data_grows(column_files, tmp_path):
    """Batches arrive one by one: the model is kept until the cells double, then refitted
    and matched, and the cells of the first image keep their class ids."""
    _, files = column_files
    out = tmp_path / "grow"
    first_labels, models = None, []
    for n in range(1, 7):
        out_n, _, summary = _grow(out, files[:n])
        labels = image_cells(out_n / "exp/statistics.h5", 0)["class"]
        first_labels = labels if first_labels is None else first_labels
        assert np.mean(labels == first_labels) >= 0.9, n
        models.append(summary["class_model"])
    assert models[0]["refitted"] and models[1]["refitted"]  # none yet; then doubled
    kept = [m for m in models if not m["refitted"]]
    assert kept, "the model is kept while the cells have not doubled"
    for m in kept:  # a kept model: only the new batch was assigned
        assert m["batches_assigned_now"] == 1
    for prev, m in zip(models, models[1:]):
        grew = m["fitted_on_cells"] if m["refitted"] else None
        assert (grew is None) or grew >= 2 * prev["fitted_on_cells"] or prev is models[0]


def _grow(out, files):
    """One more image as its own batch; the earlier batches' outputs reused."""
    (out / "exp").mkdir(parents=True, exist_ok=True)
    (out / "refused.tsv").write_text("file\treason\n")
    jobs = []
    for b, f in enumerate(files):
        job = {"name": f"{b:05d}", "partition": f"experiment=exp/batch={b:05d}",
               "partials": out / f"p{b}.npz", "cells": out / f"cells/b{b}/cells.parquet",
               "classes": out / f"classes/b{b}/classes.parquet", "summary": out / f"s{b}.json"}
        if not job["partials"].exists():
            measure_batch([f], job["cells"], job["partials"], nominal_pm=390.5,
                          materials=DEMO_MATERIALS)
        jobs.append(job)
    summary = reduce_experiment(
        jobs, out / "refused.tsv", out / "exp/statistics.h5", out / "exp/images.tsv",
        out / "exp/rejected.tsv", classes_csv=out / "exp/classes.csv",
        layers_csv=out / "exp/layers.csv", experiment="exp", materials=DEMO_MATERIALS,
        classes={"max_classes": 3, "refit_growth": 2.0})
    return out, jobs, summary


def test_refit_policy_and_matching():
    from latticegenome.statistics.incremental import ClassState

    settings = {"max_classes": 8, "seed": 0}
    assert needs_refit(None, settings, 10, 2.0) == "no class model yet"
    state = ClassState(model=object(), ids=np.array([0, 1]), model_id="x", fitted_on=100,
                       settings=settings)
    assert needs_refit(state, settings, 199, 2.0) is None
    assert "grew from 100 to 200" in needs_refit(state, settings, 200, 2.0)
    assert needs_refit(state, {**settings, "seed": 1}, 100, 2.0) == "the class settings changed"
    # two old classes; the refit finds them swapped plus a new one far away
    old = np.array([[0.0, 0.0], [10.0, 0.0]])
    new = np.array([[10.2, 0.1], [50.0, 50.0], [0.1, -0.1]])
    assert match_classes(new, old, [3, 5], np.ones(2)).tolist() == [5, 6, 3]


def test_sample_keys_and_cell_table_round_trip(tmp_path):
    assert not np.array_equal(cell_keys("a.tif", 5), cell_keys("b.tif", 5))
    s = Sample()
    s.add(np.ones((5, 9)), [0.5, 0.1, 0.9, 0.3, 0.7], list("abcde"), size=3)
    assert sorted(s.keys.tolist()) == [0.1, 0.3, 0.5] and s.images == ["a", "b", "d"]
    from latticegenome.statistics.cells import CELL_FIELDS
    from latticegenome.statistics.partials import write_cell_table

    cells = {f: np.arange(3, dtype=float) for f in CELL_FIELDS}
    cells["has_B"] = cells["B_detected"] = np.array([True, False, True])
    for f in ("i", "j", "u", "v"):
        cells[f] = np.arange(3)
    write_cell_table(tmp_path / "c.parquet", [("x<é>.tif", cells), ("y.tif", cells)])
    back = read_cell_table(tmp_path / "c.parquet", image="x<é>.tif")
    assert back["cell"].tolist() == [0, 1, 2] and back["B_detected"].tolist() == [True, False, True]
    import pyarrow.dataset as ds

    assert ds.dataset(tmp_path / "c.parquet").count_rows() == 6


def test_a_centrosymmetric_material_left_polar_is_warned():
    from latticegenome.statistics.aggregate import centrosymmetric_warnings

    mats = [{"formula": "SrTiO3", "centrosymmetric": True}, {"formula": "BaTiO3"}]
    rng = np.random.default_rng(3)
    layers = {"material": ["SrTiO3"] * 10 + ["BaTiO3"] * 10,
              "dx_pm": list(rng.normal(0, 0.5, 20)),
              "dy_pm": list(np.r_[rng.normal(4.0, 0.5, 10), rng.normal(12, 0.5, 10)])}
    out = centrosymmetric_warnings({}, layers, mats)
    assert len(out) == 1 and "SrTiO3 is centrosymmetric" in out[0] and "dy" in out[0]
    layers["dy_pm"][:10] = list(rng.normal(0, 0.5, 10))  # corrected: nothing to say
    assert centrosymmetric_warnings({}, layers, mats) == []
    one = [{"formula": "SrTiO3", "centrosymmetric": True}]
    assert centrosymmetric_warnings({"image": ["a", "b", "c"], "dx_pm": [6.0, 6.2, 5.9],
                                     "dy_pm": [0.1, -0.2, 0.0]}, {}, one)[0].startswith("SrTiO3")


def test_a_stored_model_assigns_as_the_fitted_one(rng):
    from latticegenome.statistics.classes import DESCRIPTORS, fit_classes
    from latticegenome.statistics.incremental import model_from_json, model_to_json

    x = np.vstack([rng.normal(0, 1, (300, len(DESCRIPTORS))),
                   rng.normal(4, 1, (300, len(DESCRIPTORS)))])
    fitted = fit_classes(x, max_classes=3)
    stored = model_from_json(json.loads(json.dumps(model_to_json(fitted))))
    la, pa = fitted.assign(x)
    lb, pb = stored.assign(x)
    assert np.array_equal(la, lb) and np.allclose(pa, pb, atol=1e-10)
    assert fitted.n_classes == stored.n_classes >= 2


def test_cells_measured_otherwise_refit_and_reassign(column_files, tmp_path):
    """Changed statistics parameters (the cells of every batch measured again): the class
    model is refitted and every batch reassigned, never kept from the old cells."""
    _, files = column_files
    out, _, first = _grow(tmp_path / "p", files[:3])
    assert first["class_model"]["refitted"]
    again = _grow(tmp_path / "p", files[:3])[2]
    assert not again["class_model"]["refitted"] and again["class_model"]["batches_assigned_now"] == 0
    for b in range(3):  # remeasure every batch with another nominal lattice parameter
        job = {"partials": out / f"p{b}.npz", "cells": out / f"cells/b{b}/cells.parquet"}
        measure_batch([files[b]], job["cells"], job["partials"], nominal_pm=392.0,
                      materials=DEMO_MATERIALS)
    redone = _grow(tmp_path / "p", files[:3])[2]
    assert redone["class_model"]["refitted"] and redone["class_model"]["batches_assigned_now"] == 3
