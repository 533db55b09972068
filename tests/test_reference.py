"""Instrument offset, calibration and honest error bars against a reference (#17)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latticegenome.columns.finder import find_columns
from latticegenome.columns.simulate import DEMO_MATERIALS, simulate_superlattice
from latticegenome.statistics.cells import measure_cells
from latticegenome.statistics.reference import corrected_cells, parse_region

OFFSET_PM = 10.0  # a mistilt-like B offset of centrosymmetric SrTiO3


@pytest.fixture(scope="module")
def distorted():
    """Centrosymmetric SrTiO3 with a uniform +10 pm B offset, 3 % slow-scan stretch,
    read with a pixel size 8 % too large."""
    mats = [dict(DEMO_MATERIALS[0], polar_pm=OFFSET_PM),
            dict(DEMO_MATERIALS[0], name="SrTiO3b", polar_pm=OFFSET_PM)]
    img, truth, meta = simulate_superlattice((384, 384), materials=mats,
                                             drift_px_per_row=(0.0, 0.03),
                                             rng=np.random.default_rng(3))
    px = meta["pixel_size_pm"]
    cols = find_columns(img, spacing_px=390.5 / px).as_dict()
    return cols, px, 1.08 * px


def test_offset_calibration_and_error_scale_are_recovered(distorted):
    cols, px_true, px_file = distorted
    raw = measure_cells(cols, px_file)
    assert np.median(raw["a_pm"]) > 415 and np.nanmedian(raw["dy_pm"]) > 9  # the artefacts
    cells, applied = corrected_cells(cols, px_file, displacement_region="all",
                                     calibrate_to_pm=390.5)
    # lattice parameter within 0.3 % of the truth along both axes after calibration
    assert np.median(cells["a_pm"]) == pytest.approx(390.5, rel=0.003)
    assert np.median(cells["b_pm"]) == pytest.approx(390.5, rel=0.003)
    calib = applied["calibration"]
    assert calib["pixel_size_pm"] == pytest.approx(px_file)
    assert abs(calib["scale_i"] - calib["scale_j"]) > 0.02  # the scan anisotropy, measured
    ref = applied["displacement_reference"]
    assert ref["dy_pm"] == pytest.approx(OFFSET_PM, abs=1.0) and abs(ref["dx_pm"]) < 1.0
    # the centrosymmetric material's median displacement within 1 pm of zero afterwards
    assert abs(np.nanmedian(cells["dy_pm"])) < 1.0 and abs(np.nanmedian(cells["dx_pm"])) < 1.0
    # Poisson images: the Fisher errors are honest, so the scale is about 1
    assert 0.8 < ref["error_scale"] < 1.25
    ok = cells["B_detected"] & np.isfinite(cells["dx_err_pm"])
    scatter = np.std(cells["dy_pm"][ok]) / np.sqrt(np.mean(cells["dy_err_pm"][ok] ** 2))
    assert 0.8 < scatter < 1.25
    assert np.all(cells["dx_err_fisher_pm"][ok] <= cells["dx_err_pm"][ok] * 1.25)


def test_errors_too_small_are_scaled_to_the_scatter(distorted):
    cols, px, _ = distorted
    small = dict(cols, x_err=np.asarray(cols["x_err"]) / 2, y_err=np.asarray(cols["y_err"]) / 2)
    cells, applied = corrected_cells(small, px, displacement_region="all")
    assert applied["displacement_reference"]["error_scale"] == pytest.approx(2.0, rel=0.2)
    ok = cells["B_detected"] & np.isfinite(cells["dx_err_pm"])
    ratio = np.std(cells["dx_pm"][ok]) / np.sqrt(np.mean(cells["dx_err_pm"][ok] ** 2))
    assert 0.8 < ratio < 1.25


def test_regions_and_bad_regions():
    assert parse_region("10,20,300,200") == (10.0, 20.0, 300.0, 200.0)
    for bad in ("1,2,3", "5,5,1,1", "a,b,c,d", "nan,0,1,1"):
        with pytest.raises(ValueError, match="x0,y0,x1,y1"):
            parse_region(bad)


def test_too_few_reference_cells_is_an_error(distorted):
    cols, px, _ = distorted
    with pytest.raises(ValueError, match="reference cells"):
        corrected_cells(cols, px, displacement_region=(0, 0, 30, 30))


@pytest.mark.slow
def test_cells_command_line_applies_and_records_the_reference(distorted, tmp_path):
    from latticegenome.columns.finder import Columns
    from latticegenome.columns.store import write_columns_h5

    cols, _, px_file = distorted
    path = tmp_path / "cols.h5"
    basis = np.eye(2) * 19.5
    write_columns_h5(path, Columns(**cols, basis=basis, origin=np.zeros(2), dispersion=1.0),
                     source="x.tif", pixel_size_pm=px_file)
    exe = str(Path(sys.executable).parent / "latticegenome")
    out = tmp_path / "cells.csv"
    run = subprocess.run([exe, "cells", str(path), "--displacement-reference", "all",
                          "--calibrate-to-pm", "390.5", "--csv", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "offset (" in run.stdout and "pixel size" in run.stdout
    header = out.read_text().splitlines()[0].split(",")
    assert {"dx_err_pm", "dx_err_fisher_pm", "dy_err_fisher_pm"} <= set(header)
    side = json.loads(Path(f"{out}.json").read_text())
    assert side["displacement_reference"]["dy_pm"] == pytest.approx(OFFSET_PM, abs=1.0)
    assert side["calibration"]["reference_a_pm"] == 390.5
    bad = subprocess.run([exe, "cells", str(path), "--displacement-reference", "1,2",
                          "--csv", str(tmp_path / "bad.csv")], capture_output=True, text=True)
    assert bad.returncode == 2 and "x0,y0,x1,y1" in bad.stderr and "Traceback" not in bad.stderr


def test_the_statistics_apply_the_corrections_and_warn(distorted, tmp_path, caplog):
    from latticegenome.columns.finder import Columns
    from latticegenome.columns.store import write_columns_h5
    from latticegenome.core.tables import read_table
    from latticegenome.statistics.aggregate import aggregate

    cols, _, px_file = distorted
    path = tmp_path / "img.h5"
    write_columns_h5(path, Columns(**cols, basis=np.eye(2) * 19.5, origin=np.zeros(2),
                                   dispersion=1.0), source="img.tif", pixel_size_pm=px_file)
    caplog.set_level("WARNING", logger="latticegenome.statistics")
    plain = aggregate([path], tmp_path / "p.h5", tmp_path / "p.tsv", tmp_path / "pr.tsv",
                      nominal_pm=390.5, materials=DEMO_MATERIALS[:1])
    assert any("no displacement reference" in w for w in plain["warnings"])
    done = aggregate([path], tmp_path / "s.h5", tmp_path / "i.tsv", tmp_path / "r.tsv",
                     nominal_pm=390.5, materials=DEMO_MATERIALS[:1],
                     corrections={"displacement_region": "all", "calibrate_to_pm": 390.5})
    (row,) = read_table(tmp_path / "i.tsv")
    assert float(row["offset_dy_pm"]) == pytest.approx(OFFSET_PM, abs=1.0)
    assert abs(float(row["dy_pm"])) < 1.0 and float(row["a_pm"]) == pytest.approx(390.5, rel=0.003)
    assert float(row["calibrated_pixel_size_pm"]) < 0.95 * px_file
    assert 0.8 < float(row["error_scale"]) < 1.25
    text = " | ".join(done["warnings"])
    assert "instrument offset" in text and "pixel size is off" in text
    assert "no displacement reference" not in text
    assert any("instrument offset" in r.getMessage() for r in caplog.records)


def test_a_centrosymmetric_layer_is_the_reference_of_a_polar_one():
    """SrTiO3/BaTiO3 with a +8 pm offset everywhere and a 12 pm polar BaTiO3: with
    SrTiO3 flagged centrosymmetric its layers give the offset; afterwards SrTiO3 is
    within 1 pm of zero and BaTiO3 within 1.5 pm of its 12 pm."""
    from latticegenome.core.settings import Experiment
    from latticegenome.statistics.aggregate import measure_image_cells
    from latticegenome.statistics.reference import material_mask

    mats = [dict(DEMO_MATERIALS[0], polar_pm=8.0), dict(DEMO_MATERIALS[1], polar_pm=20.0)]
    img, _, meta = simulate_superlattice((384, 384), materials=mats, rng=np.random.default_rng(5))
    px = meta["pixel_size_pm"]
    cols = find_columns(img, spacing_px=390.5 / px).as_dict()
    exp = Experiment(facility="f", path="p", materials=[
        {"name": "SrTiO3", "formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5,
         "centrosymmetric": True},
        {"name": "BaTiO3", "formula": "BaTiO3", "A": "Ba", "B": "Ti", "a_pm": 399.2}])
    corr = exp.corrections()
    assert corr["reference_material"] == "SrTiO3" and corr["displacement_region"] is None
    cells = measure_image_cells(cols, px, 390.5, corrections=corr)
    ref = cells.pop("_applied")["displacement_reference"]
    assert ref["region"] == "layers of SrTiO3" and ref["dy_pm"] == pytest.approx(8.0, abs=1.0)
    bto = material_mask(cells, "BaTiO3", corr["materials"])
    assert 0.3 < bto.mean() < 0.7
    assert abs(np.nanmedian(cells["dy_pm"][~bto])) < 1.0
    assert np.nanmedian(cells["dy_pm"][bto]) == pytest.approx(12.0, abs=1.5)
    with pytest.raises(ValueError, match="is not a material"):
        Experiment(facility="f", path="p", calibrate_to="LaAlO3",
                   materials=[{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5}]).corrections()


def test_scan_line_jitter_is_measured_from_the_lattice():
    from scipy import ndimage

    from latticegenome.columns.simulate import simulate_lattice

    img, _ = simulate_lattice((256, 256), rng=1)
    clean = find_columns(img).info["check"]
    rng = np.random.default_rng(2)
    jittered = np.array([ndimage.shift(row, rng.normal(0, 0.5), order=1, mode="nearest")
                         for row in img])
    seen = find_columns(jittered).info["check"]
    assert clean["scan_jitter_px"] < 0.02 and seen["scan_jitter_px"] > 0.08


def test_regions_stay_in_pixels_after_calibration(distorted):
    """Calibrated cells are measured in pm, but a region is a box of the image: the cell
    centres stay in pixels, so the box selects the same cells with and without it."""
    cols, _, px_file = distorted
    box = (0.0, 0.0, 383.0, 190.0)  # the upper half of the 384 px image
    plain, _ = corrected_cells(cols, px_file, displacement_region=box)
    calib, applied = corrected_cells(cols, px_file, displacement_region=box,
                                     calibrate_to_pm=390.5, strain_region_px=box)
    assert np.allclose(calib["x"], plain["x"]) and np.allclose(calib["y"], plain["y"])
    assert applied["displacement_reference"]["cells"] == \
        corrected_cells(cols, px_file, displacement_region=box)[1]["displacement_reference"]["cells"]
    assert np.median(calib["a_pm"]) == pytest.approx(390.5, rel=0.003)
