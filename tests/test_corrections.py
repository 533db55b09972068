"""Instrument corrections on simulated artefacts: a mistilt-like offset, a coma-like probe
tail and a slow-scan drift (the figures of ``benchmarks/bench_corrections.py``)."""

from pathlib import Path

import numpy as np
import pytest

from latticegenome.columns.finder import find_columns
from latticegenome.columns.simulate import (DEMO_MATERIALS, add_probe_tail, simulate_superlattice,
                                            write_demo_experiment)
from latticegenome.core.settings import Experiment
from latticegenome.statistics.aggregate import measure_image_cells
from latticegenome.statistics.reference import material_mask

PX = 20.0
POLAR = DEMO_MATERIALS[1]["polar_pm"]  # BaTiO3, 12 pm; SrTiO3 0
TAIL = (0.2, 3.0, (0.0, 4.0))  # a fifth of the intensity, 60 pm blur, shifted 80 pm along y
MATERIALS = [{"name": "SrTiO3", "formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5,
              "centrosymmetric": True},
             {"name": "BaTiO3", "formula": "BaTiO3", "A": "Ba", "B": "Ti", "a_pm": 399.2}]


def _image(seed, *, offset_pm=0.0, size=384, angle=None, **kw):
    rng = np.random.default_rng([20261202, seed])
    angle = float(rng.uniform(-3, 3)) if angle is None else angle
    mats = [dict(m, polar_pm=m["polar_pm"] + offset_pm) for m in DEMO_MATERIALS]
    img, truth, meta = simulate_superlattice((size, size), materials=mats, angle_deg=angle,
                                             rng=rng, **kw)
    return img, truth, meta


def _medians(cells, materials):
    bto = material_mask(cells, "BaTiO3", materials)
    assert 0.3 < bto.mean() < 0.7
    return float(np.nanmedian(cells["dy_pm"][~bto])), float(np.nanmedian(cells["dy_pm"][bto]))


def test_probe_tail_off_leaves_the_image_as_it_was():
    plain, truth, meta = simulate_superlattice((160, 160), rng=np.random.default_rng(7))
    same, _, meta_none = simulate_superlattice((160, 160), rng=np.random.default_rng(7),
                                               probe_tail=None)
    zero, _, _ = simulate_superlattice((160, 160), rng=np.random.default_rng(7),
                                       probe_tail=(0.0, 3.0, (0.0, 4.0)))
    assert np.array_equal(plain, same) and np.array_equal(plain, zero)
    assert "probe_tail" not in meta and "probe_tail" not in meta_none  # the records as before
    tailed, _, meta_on = simulate_superlattice((160, 160), rng=np.random.default_rng(7),
                                               probe_tail=TAIL)
    assert not np.array_equal(plain, tailed)
    assert meta_on["probe_tail"] == {"fraction": 0.2, "sigma_px": 3.0, "shift_px": [0.0, 4.0]}

def test_the_demo_carries_the_probe_tail_and_its_config_takes_it_out(tmp_path):
    import json

    import yaml

    from latticegenome.core.config import experiment_settings

    (path,) = write_demo_experiment(tmp_path / "on", n_images=1, size=128)
    record = json.loads(path.with_suffix(".truth.json").read_text())
    assert record["probe_tail"] == {"fraction": 0.15, "sigma_px": 3.0, "shift_px": [0.0, 4.0]}
    (off,) = write_demo_experiment(tmp_path / "off", n_images=1, size=128, probe_tail_fraction=0)
    assert "probe_tail" not in json.loads(off.with_suffix(".truth.json").read_text())
    with pytest.raises(ValueError, match="probe tail fraction"):
        write_demo_experiment(tmp_path / "bad", n_images=1, size=128, probe_tail_fraction=0.5)
    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    assert experiment_settings(config, "demo_superlattice").probe_tail == "correct"


def test_the_probe_tail_conserves_counts_and_lies_towards_its_shift():
    x, y, amp = np.array([50.0]), np.array([50.0]), np.array([100.0])
    lam = add_probe_tail((101, 101), x, y, amp, 3.0, 5.0, 0.3, 6.0, (0.0, 5.0))
    assert (lam - 5.0).sum() == pytest.approx(2 * np.pi * 9 * 100, rel=1e-3)
    assert lam[60, 50] > lam[40, 50] and lam[50, 60] == pytest.approx(lam[50, 40])
    with pytest.raises(ValueError, match="probe tail"):
        add_probe_tail((11, 11), x, y, amp, 3.0, 0.0, 1.5, 6.0)


@pytest.fixture(scope="module")
def tailed():
    """Two seeds of SrTiO3/BaTiO3 with a +10 pm offset and the probe tail, measured raw and
    with SrTiO3's layers as the displacement reference."""
    corr = Experiment(facility="f", path="p", materials=MATERIALS).corrections()
    out = []
    for seed in (0, 1):
        img, _, _ = _image(seed, offset_pm=10.0, probe_tail=TAIL)
        cols = find_columns(img, spacing_px=390.5 / PX).as_dict()
        raw = measure_image_cells(cols, PX, 390.5)
        raw.pop("_applied")
        cells = measure_image_cells(cols, PX, 390.5, corrections=corr)
        applied = cells.pop("_applied")
        out.append({"raw": _medians(raw, corr["materials"]),
                    "corrected": _medians(cells, corr["materials"]),
                    "reference": applied["displacement_reference"]})
    return out


def test_the_probe_tail_biases_the_centrosymmetric_layer_and_the_reference_removes_it(tailed):
    for r in tailed:
        sto_raw, _ = r["raw"]
        assert sto_raw - 10.0 < -1.0  # the tail's own bias, beyond the injected offset
        assert r["reference"]["region"] == "layers of SrTiO3"
        sto, _ = r["corrected"]
        assert abs(sto) < 1.0
        assert 0.8 < r["reference"]["error_scale"] < 1.25


def test_the_tail_biases_baTiO3_about_twice_as_much_as_srTiO3(tailed):
    """Why a constant reference cannot cancel a tail: the bias of a B column comes from the
    tails of its A neighbours, and Ba columns are (56/38)^1.7 = 1.9 x brighter than Sr."""
    for r in tailed:
        sto_raw, bto_raw = r["raw"]
        ratio = (bto_raw - 10.0 - POLAR) / (sto_raw - 10.0)
        assert 1.5 < ratio < 3.0


@pytest.fixture(scope="module")
def tail_taken_out():
    """The same two tailed images with ``probe_tail="correct"``: the tail measured on the
    image and its light taken out before the final fit."""
    corr = Experiment(facility="f", path="p", materials=MATERIALS).corrections()
    out = []
    for seed in (0, 1):
        img, _, _ = _image(seed, offset_pm=10.0, probe_tail=TAIL)
        found = find_columns(img, spacing_px=390.5 / PX, probe_tail="correct")
        cells = measure_image_cells(found.as_dict(), PX, 390.5, corrections=corr)
        cells.pop("_applied")
        out.append({"corrected": _medians(cells, corr["materials"]),
                    "tail": found.info["probe_tail"], "check": found.info["check"]})
    return out


def test_the_probe_tail_is_measured_on_the_image(tail_taken_out):
    for r in tail_taken_out:
        est = r["tail"]["estimate"]
        assert r["tail"]["applied"] and est["asymmetric"]
        assert est["fraction"] == pytest.approx(TAIL[0], abs=0.04)
        assert est["sigma_px"] == pytest.approx(TAIL[1], abs=0.3)
        assert est["shift_px"] == pytest.approx(list(TAIL[2]), abs=0.4)
        # one estimate on the uncorrected fit falls short (its columns absorbed part of the tail)
        assert r["tail"]["first_estimate"]["fraction"] < est["fraction"]
        assert r["check"]["probe_tail_removed"] == pytest.approx(est["fraction"], abs=0.03)


def test_the_polar_layer_is_recovered_through_a_probe_tail(tailed, tail_taken_out):
    """Was a strict xfail: SrTiO3 as the reference left BaTiO3 3-4 pm low."""
    for before, after in zip(tailed, tail_taken_out):
        sto, bto = after["corrected"]
        assert abs(sto) < 1.0
        assert bto == pytest.approx(POLAR, abs=1.5)
        assert abs(bto - POLAR) < abs(before["corrected"][1] - POLAR) - 1.5


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_no_tail_is_taken_out_of_an_image_without_one(seed):
    img, _, _ = _image(seed, offset_pm=10.0)
    plain = find_columns(img, spacing_px=390.5 / PX)
    found = find_columns(img, spacing_px=390.5 / PX, probe_tail="correct")
    assert not found.info["probe_tail"]["applied"]
    assert found.info["check"]["probe_tail_moment_px"] == 0.0
    np.testing.assert_array_equal(found.x, plain.x)


def test_the_polar_layer_is_recovered_through_an_offset():
    corr = Experiment(facility="f", path="p", materials=MATERIALS).corrections()
    img, _, _ = _image(2, offset_pm=10.0)
    cols = find_columns(img, spacing_px=390.5 / PX).as_dict()
    cells = measure_image_cells(cols, PX, 390.5, corrections=corr)
    ref = cells.pop("_applied")["displacement_reference"]
    sto, bto = _medians(cells, corr["materials"])
    assert ref["dy_pm"] == pytest.approx(10.0, abs=1.0)
    assert abs(sto) < 1.0 and bto == pytest.approx(POLAR, abs=1.5)


def test_calibration_with_a_slow_scan_drift():
    """0.4 % slow-axis stretch, 0.2 % shear and the file's pixel size 2 % too large. A box on
    one SrTiO3 layer (reference and calibration there) gives a and both b within 0.3 %; so
    does calibrate_to without a region: the SrTiO3 layers alone are fitted, one origin per
    layer (a single lattice over every A column would make b the layers' mean: SrTiO3 c =
    390.5, BaTiO3 412 pm, 2.6 % off)."""
    img, truth, _ = _image(3, angle=0.0, drift_px_per_row=(0.002, 0.004))
    cols = find_columns(img, spacing_px=390.5 / PX).as_dict()
    px_file = 1.02 * PX
    # an SrTiO3 layer wholly inside: its B rows +-12 px (its A planes lie 9.8 px
    # beyond them, the next BaTiO3 planes 30 px)
    b = (truth.site == "B") & (truth.layer == 0)
    runs = np.split(np.unique(truth.j[b]), np.where(np.diff(np.unique(truth.j[b])) > 1)[0] + 1)
    runs = [r for r in runs if len(r) == 5 and 20 < truth.y[b & np.isin(truth.j, r)].min()
            and truth.y[b & np.isin(truth.j, r)].max() < 364]
    y = truth.y[b & np.isin(truth.j, runs[0])]
    box = [0.0, float(y.min() - 12), 383.0, float(y.max() + 12)]
    raw = measure_image_cells(cols, px_file, 390.5)
    assert np.median(raw["a_pm"]) > 1.015 * 390.5  # the artefact
    exp = Experiment(facility="f", path="p", materials=MATERIALS, calibrate_to="SrTiO3",
                     displacement_reference_region_px=box)
    corr = exp.corrections()
    cells = measure_image_cells(cols, px_file, 390.5, corrections=corr)
    assert cells.pop("_applied")["calibration"]["region"] == box
    whole = Experiment(facility="f", path="p", materials=MATERIALS,
                       calibrate_to="SrTiO3").corrections()
    bto = material_mask(cells, "BaTiO3", whole["materials"])
    assert np.median(cells["a_pm"]) == pytest.approx(390.5, rel=0.003)
    assert np.median(cells["b_pm"][~bto]) == pytest.approx(390.5, rel=0.003)
    assert np.median(cells["b_pm"][bto]) == pytest.approx(412.0, rel=0.003)
    cells = measure_image_cells(cols, px_file, 390.5, corrections=whole)
    assert cells.pop("_applied")["calibration"]["region"] == "layers of SrTiO3"
    bto = material_mask(cells, "BaTiO3", whole["materials"])
    assert np.median(cells["a_pm"]) == pytest.approx(390.5, rel=0.003)
    assert np.median(cells["b_pm"][~bto]) == pytest.approx(390.5, rel=0.003)
    assert np.median(cells["b_pm"][bto]) == pytest.approx(412.0, rel=0.003)
