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


# --------------------------------------------------------------------------- offset fields


def _grid_cells(field, seed, n=20, spacing=20.0, err=1.5):
    """An n x n grid of cells (centres 10 ... 390 px) whose B displacement is ``field(x, y)``
    (pm) plus Gaussian noise of the reported errors (which vary by +-30 %)."""
    rng = np.random.default_rng(seed)
    g = np.arange(n) * spacing + 10.0
    x, y = (a.ravel() for a in np.meshgrid(g, g))
    e = err * rng.uniform(0.7, 1.3, x.size)
    fx, fy = field(x, y)
    return {"x": x, "y": y, "dx_pm": fx + rng.normal(0, e), "dy_pm": fy + rng.normal(0, e),
            "dx_err_pm": e, "dy_err_pm": e.copy(), "B_detected": np.ones(x.size, bool)}


def _plane(x, y):  # pm: 7.6 pm across the image along x, 5.7 pm along y
    return 2.0 + 0.02 * (x - 200), -1.0 + 0.015 * (y - 200)


def _quadratic(x, y):
    u, v = (x - 200) / 190, (y - 200) / 190  # the grid's own normalised coordinates
    return 1.0 + 2.0 * u - 1.0 * v + 3.0 * u * u + 1.5 * u * v, -0.5 + 2.5 * v * v - 2.0 * u * v


def _constant(x, y):
    return 3.0 + 0 * x, -2.0 + 0 * y


def _true_coefficients(field, kind):
    """The coefficients of ``field`` in the grid's normalised coordinates, by exact
    least squares on the noise-free field (centre 200 px, half width 190 px)."""
    from latticegenome.statistics.reference import _design

    g = np.linspace(-1, 1, 7)
    u, v = (a.ravel() for a in np.meshgrid(g, g))
    a = _design(u, v, kind)
    fx, fy = field(200 + 190 * u, 200 + 190 * v)
    return {k: np.linalg.lstsq(a, f, rcond=None)[0] for k, f in (("dx", fx), ("dy", fy))}


def _side_difference(cells, axis="x"):
    """Mean corrected displacement along ``axis`` of the last third of the image minus
    the first third (pm): what a gradient left behind looks like."""
    pos, d = np.asarray(cells[axis]), np.asarray(cells[f"d{axis}_pm"])
    return float(d[pos > 270].mean() - d[pos < 130].mean())


@pytest.mark.parametrize("kind,field", [("plane", _plane), ("quadratic", _quadratic)])
def test_a_smooth_offset_field_is_recovered_within_its_errors(kind, field):
    from latticegenome.statistics.reference import apply_reference, displacement_reference

    cells = _grid_cells(field, seed=11)
    every = np.ones(len(cells["x"]), bool)
    ref = displacement_reference(cells, every, field=kind)
    assert ref["field"] == kind and ref["cells"] == 400
    assert ref["centre_px"] == [200.0, 200.0] and ref["half_width_px"] == [190.0, 190.0]
    truth = _true_coefficients(field, kind)
    for axis in ("dx", "dy"):
        coef = np.array(ref["coefficients_pm"][axis])
        err = np.array(ref["coefficient_err_pm"][axis])
        assert np.all(np.abs(coef - truth[axis]) / err < 3.5), (axis, coef, truth[axis], err)
        assert np.all(err < 0.25)  # 400 cells of 1.5 pm: tight
    # dx_pm is the field's mean over the reference cells
    fx, fy = field(cells["x"], cells["y"])
    assert ref["dx_pm"] == pytest.approx(fx.mean(), abs=3.5 * ref["dx_err_pm"])
    assert ref["dy_pm"] == pytest.approx(fy.mean(), abs=3.5 * ref["dy_err_pm"])
    assert 0.85 < ref["error_scale"] < 1.15  # the residual scatter is the reported errors
    out = apply_reference(cells, ref)
    assert abs(_side_difference(out, "x")) < 0.5 and abs(_side_difference(out, "y")) < 0.5
    pull = out["dx_pm"] / out["dx_err_pm"]
    assert abs(pull.mean()) < 0.15 and 0.85 < pull.std() < 1.15
    # the field's own uncertainty is in the errors, and larger at the corners than inside
    excess = out["dx_err_pm"] ** 2 - (out["dx_err_fisher_pm"] * ref["error_scale"]) ** 2
    corner = (cells["x"] == 10) & (cells["y"] == 10)
    centre = (cells["x"] == 190) & (cells["y"] == 190)
    assert np.all(excess > 0) and excess[corner][0] > 3 * excess[centre][0]
    assert not out["offset_extrapolated"].any() and not out["offset_clamped"].any()


def test_a_constant_offset_leaves_the_gradient_the_field_removes():
    from latticegenome.statistics.reference import apply_reference, displacement_reference

    cells = _grid_cells(_plane, seed=4)
    every = np.ones(len(cells["x"]), bool)
    flat = displacement_reference(cells, every)  # the default: constant
    assert flat["field"] == "constant" and len(flat["coefficients_pm"]["dx"]) == 1
    left = apply_reference(cells, flat)
    # a constant removes the mean but leaves the 0.02 pm/px gradient: ~0.02 * 260 px
    assert _side_difference(left, "x") == pytest.approx(5.2, abs=0.6)
    assert _side_difference(left, "y") == pytest.approx(3.9, abs=0.6)
    assert flat["error_scale"] > 1.3  # and the gradient passes for scatter
    plane = apply_reference(cells, displacement_reference(cells, every, field="plane"))
    assert abs(_side_difference(plane, "x")) < 0.5 and abs(_side_difference(plane, "y")) < 0.5
    # the constant is the plain mean and its standard error, as before the fields
    assert flat["dx_pm"] == pytest.approx(cells["dx_pm"].mean())
    assert flat["dx_err_pm"] == pytest.approx(np.std(cells["dx_pm"], ddof=1) / 20)


@pytest.mark.parametrize("seed", range(4))
def test_auto_picks_the_field_by_bic(seed):
    from latticegenome.statistics.reference import displacement_reference

    every = np.ones(400, bool)
    picks = {}
    for name, field in (("constant", _constant), ("plane", _plane), ("quadratic", _quadratic)):
        ref = displacement_reference(_grid_cells(field, seed), every, field="auto")
        assert ref["field_requested"] == "auto" and set(ref["bic"]) == {"constant", "plane",
                                                                         "quadratic"}
        assert ref["field"] == min(ref["bic"], key=ref["bic"].get)
        picks[name] = ref["field"]
    assert picks == {"constant": "constant", "plane": "plane", "quadratic": "quadratic"}
    few = _grid_cells(_plane, seed, n=4)  # 16 cells: enough for a plane, not a quadratic
    ref = displacement_reference(few, np.ones(16, bool), field="auto")
    assert set(ref["bic"]) == {"constant", "plane"}


def test_the_field_is_flagged_and_clamped_beyond_the_reference():
    from latticegenome.statistics.reference import apply_reference, displacement_reference

    cells = _grid_cells(_plane, seed=2)
    left = cells["x"] <= 190  # the reference: the left half (10 ... 190 px)
    ref = displacement_reference(cells, left, field="plane")
    assert ref["box_px"] == [10.0, 10.0, 190.0, 390.0]
    assert ref["clamp_box_px"][2] == pytest.approx(100 + 1.25 * 90)  # 212.5 px
    out = apply_reference(cells, ref)
    assert np.array_equal(out["offset_extrapolated"], cells["x"] > 190)
    assert np.array_equal(out["offset_clamped"], cells["x"] > 212.5)
    field = cells["dx_pm"] - out["dx_pm"]
    c = ref["coefficients_pm"]["dx"]
    v = (cells["y"] - 200) / 190
    beyond = cells["x"] > 212.5  # the value at the clamp box's edge, u = 1.25
    assert np.allclose(field[beyond], c[0] + 1.25 * c[1] + c[2] * v[beyond])
    inside = ~beyond
    assert np.allclose(field[inside], c[0] + c[1] * (cells["x"][inside] - 100) / 90
                       + c[2] * v[inside])
    # within the reference the gradient is gone; the clamp leaves the far side under-corrected
    assert abs(out["dx_pm"][left & (cells["x"] > 130)].mean()
               - out["dx_pm"][cells["x"] < 70].mean()) < 0.6
    assert out["dx_pm"][cells["x"] > 300].mean() > 2.0


def test_too_few_cells_for_a_field_is_an_error():
    from latticegenome.statistics.reference import displacement_reference

    cells = _grid_cells(_plane, seed=0, n=4)  # 16 cells
    every = np.ones(16, bool)
    with pytest.raises(ValueError, match=r"16 reference cells .* at least 18 .* quadratic offset "
                                         r"field \(6 coefficients per axis\)"):
        displacement_reference(cells, every, field="quadratic")
    assert displacement_reference(cells, every, field="plane")["field"] == "plane"
    some = every.copy()
    some[8:] = False
    with pytest.raises(ValueError, match="8 reference cells .* at least 9 .* plane"):
        displacement_reference(cells, some, field="plane")
    assert displacement_reference(cells, some, field="auto")["field"] == "constant"
    line = _grid_cells(_plane, seed=0, n=12)
    one_row = line["y"] == 10.0  # 12 cells, enough, but nothing to tell a gradient along y by
    with pytest.raises(ValueError, match="do not span"):
        displacement_reference(line, one_row, field="plane")
    with pytest.raises(ValueError, match="one of constant, plane, quadratic, auto"):
        displacement_reference(cells, every, field="cubic")


def _gradient_columns():
    """Columns found in a simulated centrosymmetric image (Poisson counts, 320 px, 20 pm/px)
    whose B columns are moved by a linear offset field: dx = 1 + 6 (x - 160)/160 pm,
    dy = -2 + 4 (y - 160)/160 pm."""
    from latticegenome.columns.model import render_columns
    from latticegenome.columns.simulate import simulate_lattice

    shape, px = (320, 320), 20.0
    _, truth = simulate_lattice(shape, spacing_px=19.5, offset_px=(0.0, 0.0), noise=False, rng=1)
    x, y, b = truth.x.copy(), truth.y.copy(), truth.site == "B"
    x[b] += (1.0 + 6.0 * (truth.x[b] - 160) / 160) / px
    y[b] += (-2.0 + 4.0 * (truth.y[b] - 160) / 160) / px
    lam = render_columns(shape, x, y, truth.amplitude, truth.sigma, truth.background)
    img = np.random.default_rng(2).poisson(lam).astype(float)
    return find_columns(img, spacing_px=19.5).as_dict(), px


def test_the_configured_field_corrects_a_simulated_gradient_end_to_end():
    from latticegenome.core.settings import Experiment
    from latticegenome.statistics.aggregate import measure_image_cells

    cols, px = _gradient_columns()
    mats = [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5, "centrosymmetric": True}]
    assert Experiment(facility="f", path="p", materials=mats).corrections()[
        "displacement_field"] == "constant"
    measured = {}
    for kind in ("constant", "plane", "auto"):
        exp = Experiment(facility="f", path="p", materials=mats, displacement_reference_field=kind)
        corr = exp.corrections()
        assert corr["displacement_field"] == kind and corr["displacement_region"] == "all"
        cells = measure_image_cells(cols, px, 390.0, corrections=corr)
        ref = cells.pop("_applied")["displacement_reference"]
        ok = cells["B_detected"] & np.isfinite(cells["dx_pm"])
        measured[kind] = ref, {k: np.asarray(v)[ok] for k, v in cells.items()
                               if k in ("x", "y", "dx_pm", "dy_pm")}
    ref, cells = measured["plane"]
    assert ref["field"] == "plane" and measured["auto"][0]["field"] == "plane"
    assert ref["extrapolated_fraction"] == 0.0 and ref["clamped_fraction"] == 0.0
    (cx, cy), (hx, hy) = ref["centre_px"], ref["half_width_px"]
    truth = {"dx": [1.0 + 6.0 * (cx - 160) / 160, 6.0 * hx / 160, 0.0],
             "dy": [-2.0 + 4.0 * (cy - 160) / 160, 0.0, 4.0 * hy / 160]}
    for axis in ("dx", "dy"):
        pull = (np.array(ref["coefficients_pm"][axis]) - truth[axis]) / np.array(
            ref["coefficient_err_pm"][axis])
        assert np.all(np.abs(pull) < 3.5), (axis, ref["coefficients_pm"][axis], truth[axis])
    spread = lambda c, a: float(c[f"d{a}_pm"][c[a] > 213].mean() - c[f"d{a}_pm"][c[a] < 107].mean())
    assert abs(spread(cells, "x")) < 1.0 and abs(spread(cells, "y")) < 1.0
    flat_ref, flat = measured["constant"]
    assert spread(flat, "x") > 5.0 and spread(flat, "y") > 3.5  # the gradient, left in
    assert flat_ref["error_scale"] > 1.3 and 0.8 < ref["error_scale"] < 1.25
    # a box on the left: the right of the image is extrapolated, its far part clamped
    box = Experiment(facility="f", path="p", materials=mats, displacement_reference_field="plane",
                     displacement_reference_region_px=[0, 0, 200, 320]).corrections()
    cells = measure_image_cells(cols, px, 390.0, corrections=box)
    ref = cells.pop("_applied")["displacement_reference"]
    assert ref["region"] == [0, 0, 200, 320]  # 10 of 16 cell columns in it, 5 beyond the clamp
    assert ref["extrapolated_fraction"] == pytest.approx(6 / 16, abs=0.02)
    assert ref["clamped_fraction"] == pytest.approx(5 / 16, abs=0.02)
    assert np.array_equal(cells["offset_extrapolated"], cells["x"] > ref["box_px"][2])
    assert np.array_equal(cells["offset_clamped"], cells["x"] > ref["clamp_box_px"][2])
