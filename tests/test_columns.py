import numpy as np
import pytest
from conftest import match, recall_precision

from latticegenome.columns.finder import find_columns
from latticegenome.columns.simulate import simulate_lattice, simulate_superlattice
from latticegenome.core.errors import NoLatticeError


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


@pytest.mark.parametrize("counts,background,b_ratio", [(1696, 6, 0.4), (56549, 200, 0.2)])
def test_noise_free_positions_unbiased_up_to_the_border(counts, background, b_ratio):
    # The expected image (no noise) of a rotated lattice with every B column
    # off its cell centre: every column at least one column width inside the
    # image comes out within 2 millipixels of the truth, border ones included
    # (their neighbours outside the image are modelled and fitted on their tails).
    rng = np.random.default_rng(counts)
    clean, truth = simulate_lattice((320, 300), angle_deg=float(rng.uniform(0, 90)), counts_a=counts,
                                    background=background, b_ratio=b_ratio, b_jitter_px=1.0,
                                    rng=rng, noise=False)
    cols = find_columns(clean)
    width = 2.355 * truth.sigma
    rows, ncols = clean.shape
    inner = (truth.x >= width) & (truth.x <= ncols - 1 - width) & (truth.y >= width) & (
        truth.y <= rows - 1 - width)
    edge = np.minimum.reduce([truth.x, ncols - 1 - truth.x, truth.y, rows - 1 - truth.y])
    assert (inner & (edge < 15)).sum() >= 20  # border columns are part of the test
    for site in "AB":
        recall, precision, _ = recall_precision(truth, cols, site, clean.shape, width)
        assert recall == 1.0 and precision == 1.0, (site, recall, precision)
        t = inner & (truth.site == site)
        f = cols.site == site
        _, d = match(truth.x[t], truth.y[t], cols.x[f], cols.y[f])
        assert d.max() < 2e-3, (site, d.max())
