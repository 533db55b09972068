import numpy as np
import pytest

from conftest import recall_precision
from latticegenome.columns import find_columns
from latticegenome.errors import NoLatticeError
from latticegenome.simulate import simulate_lattice, simulate_superlattice


@pytest.mark.parametrize(
    "angle,b_ratio,b_disp",
    [(0.0, 0.4, (0, 0)), (17.0, 0.2, (0, 0)), (33.0, 0.2, (5.0, 0.0)), (5.0, 0.85, (0, 0))],
    ids=["square", "B20pct-rotated", "B-displaced-25pct", "B-bright-centred"],
)
def test_recall_and_precision_of_A_and_B(rng, angle, b_ratio, b_disp):
    img, truth = simulate_lattice((320, 320), angle_deg=angle, b_ratio=b_ratio,
                                  b_displacement_px=b_disp, rng=rng)
    cols = find_columns(img)
    width = 2.355 * truth.sigma  # one column width (FWHM) inside the image
    for site in "AB":
        recall, precision, d = recall_precision(truth, cols, site, img.shape, width)
        assert recall >= 0.995, (site, recall)
        assert precision >= 0.995, (site, precision)
    # B columns are found where they are (5 px from the cell centre when
    # displaced): their errors are those of the fit, ~0.1-0.3 px at this dose
    _, _, d = recall_precision(truth, cols, "B", img.shape, width)
    matched = d[d <= 4.0]
    assert np.median(matched) < 0.4
    assert np.mean(matched < 1.0) >= 0.98


def test_superlattice_with_drift_rotation_and_vacancies(rng):
    img, truth, meta = simulate_superlattice((384, 384), angle_deg=2.5,
                                             drift_px_per_row=(0.008, 0.003), rng=rng)
    cols = find_columns(img, spacing_px=19.5)
    for site in "AB":
        recall, precision, _ = recall_precision(truth, cols, site, img.shape, 2.355 * truth.sigma)
        assert recall >= 0.995 and precision >= 0.995, (site, recall, precision)
    # vacancies are not reported as columns
    from conftest import match

    vac = ~truth.present
    j, _ = match(truth.x[vac], truth.y[vac], cols.x, cols.y, max_dist=2.0)
    assert (j < 0).all()


def test_uncertainties_are_positive_and_sites_labelled(rng):
    img, truth = simulate_lattice((200, 200), rng=rng)
    cols = find_columns(img)
    assert set(np.unique(cols.site)) == {"A", "B"}
    assert np.all(cols.x_err > 0) and np.all(cols.y_err > 0)
    assert np.all(cols.x_err[cols.site == "A"] < cols.x_err[cols.site == "B"].mean())


def test_noise_has_no_lattice(rng):
    with pytest.raises(NoLatticeError):
        find_columns(rng.poisson(30.0, (128, 128)).astype(float))


def test_image_too_small_for_two_cells(rng):
    img, _ = simulate_lattice((60, 60), spacing_px=40.0, sigma_px=5.0, rng=rng)
    with pytest.raises(NoLatticeError):
        find_columns(img, spacing_px=40.0, min_cells=2)
