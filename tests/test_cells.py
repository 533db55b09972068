import numpy as np
import pytest

from latticegenome.statistics.cells import measure_cells


def columns_for(a_px=20.0, b_px=21.0, shear=0.0, disp_px=(0.0, 0.0), n=6, err=0.05):
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    xa = 10 + ii * a_px + shear * jj * b_px
    ya = 10 + jj * b_px
    ci, cj = ii[(ii < n - 1) & (jj < n - 1)], jj[(ii < n - 1) & (jj < n - 1)]
    xb = 10 + (ci + 0.5) * a_px + shear * (cj + 0.5) * b_px + disp_px[0]
    yb = 10 + (cj + 0.5) * b_px + disp_px[1]
    na, nb = xa.size, xb.size
    return {
        "x": np.r_[xa, xb], "y": np.r_[ya, yb], "site": np.r_[["A"] * na, ["B"] * nb],
        "i": np.r_[ii, ci], "j": np.r_[jj, cj],
        "x_err": np.full(na + nb, err), "y_err": np.full(na + nb, err),
        "amplitude": np.r_[np.full(na, 100.0), np.full(nb, 30.0)],
        "sigma": np.full(na + nb, 3.0),
    }


def test_lattice_parameters_and_displacement_in_pm():
    cells = measure_cells(columns_for(disp_px=(0.0, 0.6)), 20.0)
    assert len(cells["x"]) == 25
    assert np.allclose(cells["a_pm"], 400.0) and np.allclose(cells["b_pm"], 420.0)
    assert np.allclose(cells["angle_deg"], 90.0)
    assert np.allclose(cells["dx_pm"], 0.0, atol=1e-9) and np.allclose(cells["dy_pm"], 12.0)
    # B error (1 px) plus the mean of four corners (1/4 of the variance of one)
    assert np.allclose(cells["dy_err_pm"], 20.0 * 0.05 * np.sqrt(1 + 4 / 16))
    assert np.allclose(cells["intensity_ratio"], 0.3)


def test_strain_against_a_nominal_reference():
    cells = measure_cells(columns_for(a_px=20.0, b_px=20.8), 20.0, reference_pm=(400.0, 400.0))
    assert np.allclose(cells["exx"], 0.0, atol=1e-12)
    assert np.allclose(cells["eyy"], 0.04)
    assert np.allclose(cells["rotation_deg"], 0.0, atol=1e-9)


def test_shear_shows_as_exy_and_angle():
    cells = measure_cells(columns_for(a_px=20.0, b_px=20.0, shear=0.02), 20.0,
                          reference_pm=(400.0, 400.0))
    assert np.allclose(cells["exy"], 0.01, atol=1e-3)
    assert np.all(cells["angle_deg"] < 90.0)


def test_a_is_the_direction_closest_to_x_whatever_the_indexing():
    cols = columns_for(a_px=20.0, b_px=22.0)
    swapped = dict(cols, i=cols["j"], j=cols["i"])
    cells = measure_cells(swapped, 10.0)
    assert np.allclose(cells["a_pm"], 200.0) and np.allclose(cells["b_pm"], 220.0)


def test_cells_without_b_and_too_few_columns():
    cols = columns_for()
    keep = cols["site"] == "A"
    only_a = {k: v[keep] for k, v in cols.items()}
    cells = measure_cells(only_a, 20.0)
    assert not cells["has_B"].any() and np.isnan(cells["dx_pm"]).all()
    with pytest.raises(ValueError):
        measure_cells({k: v[:3] for k, v in only_a.items()}, 20.0)
