"""Per-frame configuration classes of a series' cells (issue #19) against the simulated
truth: a polar domain whose wall moves at a known speed."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latticegenome.dynamics.frameclasses import (
    class_transitions,
    fit_series_model,
    frame_classes,
    series_descriptors,
)
from latticegenome.dynamics.series import cell_series, class_matrix, read_dynamics
from latticegenome.dynamics.simulate import simulate_series
from latticegenome.dynamics.track import track_series, write_track_outputs

META = ("time_s", "temperature_K", "dose_e_per_A2")


def _tracked(dose, seed=7, n_frames=8):
    frames, truth = simulate_series(n_frames, (256, 256), rng=seed, dose_per_frame_e_per_A2=dose)
    result = track_series(list(frames), truth["pixel_size_pm"], source=f"sim-{dose:g}",
                          meta={k: truth[k] for k in META})
    return result, truth


@pytest.fixture(scope="module")
def high():
    return _tracked(2.5e4)


@pytest.fixture(scope="module")
def low():
    return _tracked(800.0)


def _truth_polarity(result, truth) -> dict:
    """Per analysed frame: cell id -> sign of the true B displacement of its B column
    (nearest within 1.5 px in the frame as recorded)."""
    b = truth["site"] == "B"
    out = []
    for fr in result["frames"]:
        k, c = fr["frame"], fr["cells"]
        d = np.hypot(c["x"][:, None] - truth["x"][k, b][None],
                     c["y"][:, None] - truth["y"][k, b][None])
        near = d.argmin(axis=1)
        found = d[np.arange(len(near)), near] < 1.5
        sign = np.where(found, np.sign(truth["polar_pm"][k, b][near]), 0).astype(int)
        out.append(dict(zip(np.asarray(c["cell_id"]).tolist(), sign.tolist())))
    return out


def _written(result, tmp_path, **kw):
    summaries = write_track_outputs(result, h5=tmp_path / "dynamics.h5", **kw)
    return summaries, read_dynamics(tmp_path / "dynamics.h5")


def test_classes_differ_across_the_wall_and_switch_as_it_sweeps(high, tmp_path):
    result, truth = high
    summ, d = _written(result, tmp_path)
    ct = d["summaries"]["class_transitions"]
    assert ct["class_model_source"] == "series"
    assert float(ct["displacement_resolution_pm"]) < 2 * np.nanmax(np.abs(truth["polar_pm"]))
    cells = d["cells"]
    assert (cells["class"] >= 0).mean() > 0.95 and np.nanmin(cells["class_probability"]) >= 0
    pol = _truth_polarity(result, truth)
    sign = np.array([pol[f].get(c, 0) for f, c in zip(cells["frame"], cells["cell_id"].tolist())])
    known = (sign != 0) & (cells["class"] >= 0)
    up = np.bincount(cells["class"][known & (sign > 0)], minlength=ct["class_means"].shape[0])
    down = np.bincount(cells["class"][known & (sign < 0)], minlength=ct["class_means"].shape[0])
    assert up.argmax() != down.argmax()  # the two sides of the wall are different classes
    agree = (up.max() + down.max()) / known.sum()
    assert agree > 0.97, (up, down)
    # the cells switching class per step are the cells the wall swept
    step = ct["counts_per_step"]
    switched = step.sum(axis=(1, 2)) - np.trace(step, axis1=1, axis2=2)
    swept = np.array([sum(1 for c in set(a) & set(b) if a[c] and b[c] and a[c] != b[c])
                      for a, b in zip(pol[:-1], pol[1:])])
    assert swept.sum() >= 30  # the wall crosses several planes of cells
    assert np.all(np.abs(switched - swept) <= 2 * np.sqrt(swept) + 2), (switched, swept)
    assert abs(switched.sum() - swept.sum()) <= 2 * np.sqrt(swept.sum()), (switched, swept)
    # rates per second and per kelvin, the dwell times and the class means are written
    assert np.isfinite(ct["rates_per_s"]).all() and np.isfinite(ct["rates_per_K"]).any()
    assert ct["dwell"]["n_runs"].sum() > 0
    dy = list(ct["descriptors"]).index("dy_pm")
    assert sorted(np.sign(ct["class_means"][:, dy])) == [-1, 1]
    assert np.all(np.abs(np.abs(ct["class_means"][:, dy]) - truth["polar_amplitude_pm"]) < 2)


def test_classes_keep_their_ids_across_frames(high):
    result, _ = high
    cells = cell_series(result["frames"], result["meta"])
    fc = frame_classes(cells)
    dy = np.asarray(cells["dy_pm"])
    for t in np.unique(cells["frame"]):  # in every frame, class c is the same configuration
        for c in range(fc["n_classes"]):
            mine = (cells["frame"] == t) & (fc["labels"] == c)
            assert mine.sum() > 5
            assert abs(dy[mine].mean() - fc["mean"][c, list(fc["descriptors"]).index("dy_pm")]) < 2
    # the same model classifies one frame alone as it did within the pooled series
    x, ok = series_descriptors(cells)
    model, comp = fit_series_model(x, ok)
    last = cells["frame"] == cells["frame"].max()
    alone = frame_classes({k: np.asarray(v)[last] for k, v in cells.items()},
                          (model, np.arange(model.n_classes)), model_source="pooled")
    pooled = comp[model.order.argsort()][np.maximum(alone["labels"], 0)]
    both = (alone["labels"] >= 0) & (fc["labels"][last] >= 0)
    assert np.mean(pooled[both] == fc["labels"][last][both]) > 0.97


def test_low_dose_cells_are_not_guessed_and_the_resolution_is_said(low, high, tmp_path, caplog):
    """At 800 e/A^2 a B column is rarely significant alone (about half), but every B the
    image cannot tell from a typical one is used: none is selected by its noise. The
    classes cannot then resolve the +-10 pm polar states, and the series says so."""
    result, truth = low
    with caplog.at_level(logging.WARNING):
        summ, d = _written(result, tmp_path)
    ct = summ["class_transitions"]
    cells, cls = d["cells"], d["cells"]["class"]
    assert ct["n_unknown"] == int((cls < 0).sum())
    assert ct["n_unknown"] == ct["n_missing"] + ct["n_uncertain"]
    usable = cells["B_usable"].astype(bool)
    assert np.all(cls[~usable] == -1)  # no B site, or its fit left it: unknown
    assert cells["B_detected"].mean() < 0.7 and usable.mean() > 0.95
    # the +-10 pm states differ by 20 pm: finer than what 800 e/A^2 resolves
    assert ct["displacement_resolution_pm"] > 2 * np.nanmax(np.abs(truth["polar_pm"]))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and "sim-800" in r.getMessage() and "too uncertain to tell" in r.getMessage()]
    n_classes = ct["class_means"].shape[0]
    if n_classes == 1:  # the states are not resolved: a warning, not silence
        assert warned
    else:  # resolved after all: then they are the true states
        pol = _truth_polarity(result, truth)
        sign = np.array([pol[f].get(c, 0) for f, c in zip(cells["frame"], cells["cell_id"].tolist())])
        known = (sign != 0) & (cls >= 0)
        up = np.bincount(cls[known & (sign > 0)], minlength=n_classes)
        down = np.bincount(cls[known & (sign < 0)], minlength=n_classes)
        assert up.argmax() != down.argmax() and (up.max() + down.max()) / known.sum() > 0.9
    # only pairs of known classes are counted
    _, labels = class_matrix(d["cells"])
    known_pairs = ((labels[:-1] >= 0) & (labels[1:] >= 0)).sum()
    assert ct["counts"].sum() == known_pairs
    # the high-dose series' model on the low-dose cells: more are too uncertain to assign
    hcells = cell_series(high[0]["frames"], high[0]["meta"])
    x, ok = series_descriptors(hcells)
    model, _ = fit_series_model(x, ok)
    lcells = cell_series(result["frames"], result["meta"])
    other = frame_classes(lcells, model, model_source="high-dose")
    assert other["n_uncertain"] > 0 and other["unknown_fraction"] > ct["unknown_fraction"] - 0.01


def test_another_experiments_model_keeps_its_ids(high, tmp_path):
    """A statistics stage's classes/model.json (stable ids 3 and 5) classifies the series."""
    from latticegenome.statistics.incremental import model_to_json

    result, _ = high
    cells = cell_series(result["frames"], result["meta"])
    x, ok = series_descriptors(cells)
    model, _ = fit_series_model(x, ok)
    ids = [5, 3, 8, 9, 10, 11, 12, 13][: model.n_classes]
    (tmp_path / "classes").mkdir()
    (tmp_path / "classes" / "model.json").write_text(json.dumps({"model": model_to_json(model),
                                                                 "ids": ids}))
    summ, d = _written(result, tmp_path, class_model=tmp_path / "statistics.h5",
                       class_options={"model_source": "bulk"})
    ct = d["summaries"]["class_transitions"]
    assert ct["class_model_source"] == "bulk"
    found = set(np.unique(d["cells"]["class"]).tolist())
    assert found <= {-1, *ids} and len(found - {-1}) >= 2
    k = max(ids) + 1
    assert ct["counts"].shape == (k, k) and ct["counts"][[0, 1, 2, 4]].sum() == 0
    assert np.isnan(ct["class_means"][[0, 1, 2, 4]]).all()  # ids not used
    # a model that cannot be read: the series' own, with a warning
    summ = write_track_outputs(result, class_model=tmp_path / "nowhere" / "statistics.h5",
                               class_options={"model_source": "missing"})
    assert summ["class_transitions"]["class_model_source"] == "series"


def test_transitions_of_given_classes_count_rates_and_unknowns():
    """class_transitions on hand-made labels: counts, rates per s and the unknowns."""
    cells = {"frame": np.repeat(np.arange(3), 2), "cell_id": np.tile([1, 2], 3)}
    fc = {"labels": np.array([0, 1, 1, 1, -1, 1]), "n_classes": 2, "class_model_source": "x",
          "descriptors": np.array(["dy_pm"]), "population": np.array([1, 4]),
          "mean": np.zeros((2, 1)), "std": np.zeros((2, 1)), "n_cells": 6, "n_unknown": 1,
          "unknown_fraction": 1 / 6, "n_missing": 1, "n_uncertain": 0,
          "unknown_fraction_per_frame": np.array([0, 0, 0.5]), "min_probability": 0.9,
          "detrend": True}
    out = class_transitions(cells, fc, {"time_s": np.array([0.0, 2.0, 4.0])})
    assert out["counts"].tolist() == [[0, 1], [0, 2]]
    assert out["rates_per_s"][0, 1] == pytest.approx(0.5)  # one exit in 2 s spent in 0
    assert out["n_unknown"] == 1 and out["class_model_source"] == "x"


@pytest.mark.slow
@pytest.mark.workflow
def test_series_classes_through_the_workflow(tmp_path):
    """series: true through Snakemake: per-frame classes and their transitions in the
    dynamics file, the model's source in it and in dynamics.tsv."""
    import shutil

    import yaml

    from latticegenome.core.tables import read_table
    from latticegenome.dynamics.simulate import write_series

    fac = tmp_path / "facility" / "heat"
    fac.mkdir(parents=True)
    made = write_series(tmp_path / "sim", n_frames=6, size=256)
    shutil.copy(made["tif"], fac / "run_1.tif")
    root = Path(__file__).resolve().parents[1]
    config = {"facilities": {"scope": {"backend": "local", "path": str(tmp_path / "facility")}},
              "dft": {"enabled": False},
              "experiments": {"heat": {
                  "facility": "scope", "path": "heat", "pattern": "*.tif", "series": True,
                  "pixel_size_pm": 20.0, "series_frames_csv": str(made["frames_csv"]),
                  "materials": [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5}]}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake = str(Path(sys.executable).parent / "snakemake")
    run = subprocess.run([snakemake, "--snakefile", str(root / "Snakefile"),
                          f"--directory={tmp_path}", f"--configfile={tmp_path / 'config.yaml'}",
                          "--profile", str(root / "profiles" / "local"), "--cores", "2"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    res = tmp_path / "results" / "heat"
    d = read_dynamics(res / "dynamics" / "run_1.tif.h5")
    ct = d["summaries"]["class_transitions"]
    assert ct["class_model_source"] == "series" and len(ct["classes"]) >= 2
    assert (d["cells"]["class"] >= 0).mean() > 0.9
    switched = ct["counts"].sum() - np.trace(ct["counts"])
    assert switched > 0  # the wall moved over cells
    assert d["provenance"]["params"]["class_model"] == "series"
    row = read_table(res / "dynamics.tsv")[0]
    assert row["class_model_source"] == "series" and int(row["classes"]) >= 2


def test_series_class_model_must_name_a_non_series_experiment():
    """A config whose series names a missing or a series experiment as its class model is
    refused when read, naming both (the rule would wait for a model never made)."""
    from latticegenome.core.settings import Settings

    mats = [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5}]
    base = {"facilities": {"scope": {"backend": "local", "path": "facility"}},
            "experiments": {"films": {"facility": "scope", "path": "f", "materials": mats},
                            "heat": {"facility": "scope", "path": "h", "series": True,
                                     "materials": mats, "series_class_model": "films"}}}
    ok = Settings.model_validate(base)
    assert ok.experiments["heat"].series_class_model == "films"
    assert ok.experiments["heat"].series_class_min_probability == 0.9
    for other, why in (("nowhere", "not an experiment"), ("heat", "is a series experiment")):
        bad = json.loads(json.dumps(base))
        bad["experiments"]["heat"]["series_class_model"] = other
        with pytest.raises(ValueError, match=why) as exc:
            Settings.model_validate(bad)
        assert "experiment heat" in str(exc.value)
