import numpy as np
import pytest
from conftest import match, recall_precision

from latticegenome.columns.finder import (
    Candidates,
    _missing_sites,
    add_missing_sites,
    candidate_maxima,
    find_columns,
    index_maxima,
    lattice_vectors,
    place_outside_sites,
    residual_maxima,
    select_columns,
)
from latticegenome.columns.geometry import PIXEL_AREA, in_frame
from latticegenome.columns.lattice import index_lattice
from latticegenome.columns.model import render_columns
from latticegenome.columns.refine import Refinement
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
    img, truth, _ = simulate_superlattice((384, 384), angle_deg=2.5,
                                             drift_px_per_row=(0.008, 0.003), rng=rng)
    cols = find_columns(img, spacing_px=19.5)
    for site in "AB":
        recall, precision, _ = recall_precision(truth, cols, site, img.shape, 2.355 * truth.sigma)
        assert recall >= 0.995 and precision >= 0.995, (site, recall, precision)
    # vacancies are reported as sites, never as detected columns; every other
    # interior site is detected
    from conftest import match

    vac = ~truth.present
    assert vac.sum() >= 2
    j, _ = match(truth.x[vac], truth.y[vac], cols.x, cols.y, max_dist=2.0)
    assert (j >= 0).all() and not cols.detected[j].any()
    assert np.isnan(cols.x_err[j[truth.site[vac] == "A"]]).all()  # empty A sites: no position
    present = truth.present & (truth.x > 10) & (truth.x < 373) & (truth.y > 10) & (truth.y < 373)
    j, _ = match(truth.x[present], truth.y[present], cols.x, cols.y, max_dist=1.0)
    assert (j >= 0).all() and cols.detected[j].all()


def test_uncertainties_are_positive_and_sites_labelled(rng):
    img, _ = simulate_lattice((200, 200), rng=rng)
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
    inner = in_frame(truth.x, truth.y, clean.shape, -width)
    edge = np.minimum.reduce([truth.x, ncols - 1 - truth.x, truth.y, rows - 1 - truth.y])
    assert (inner & (edge < 15)).sum() >= 20  # border columns are part of the test
    for site in "AB":
        recall, precision, _ = recall_precision(truth, cols, site, clean.shape, width)
        assert recall == 1.0 and precision == 1.0, (site, recall, precision)
        t = inner & (truth.site == site)
        f = cols.site == site
        _, d = match(truth.x[t], truth.y[t], cols.x[f], cols.y[f])
        assert d.max() < 2e-3, (site, d.max())


# --- the steps of find_columns, on small plain arrays ---------------------------------

def _grid(n, a=10.0, origin=(5.0, 5.0)):
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    ij = np.column_stack([ii.ravel(), jj.ravel()])
    return origin + ij * a, ij


def test_in_frame_edges_margins_and_nan():
    shape = (5, 10)  # pixel centres: x 0..9, y 0..4
    x = np.array([0.0, 9.0, -0.5, 9.5, -0.51, 4.0, np.nan])
    y = np.array([0.0, 4.0, 2.0, 2.0, 2.0, 4.5, 1.0])
    assert in_frame(x, y, shape).tolist() == [True, True, False, False, False, False, False]
    assert in_frame(x, y, shape, PIXEL_AREA).tolist() == [True, True, True, True, False, True, False]
    assert in_frame(x, y, shape, PIXEL_AREA, strict=True).tolist() == [
        True, True, False, False, False, False, False]
    # a negative margin: the whole window of half-size 2 inside (integers stay exact)
    cx = np.array([1, 2, 7, 8])
    assert in_frame(cx, np.full(4, 2), shape, margin=-2).tolist() == [False, True, True, False]
    assert in_frame(3, 1, shape, margin=-1)  # scalars give a bool


def test_lattice_vectors_measures_the_spacing_and_refuses_small_images(rng):
    img, _ = simulate_lattice((200, 200), spacing_px=20.0, rng=rng)
    basis, d = lattice_vectors(img)
    assert abs(d - 20.0) < 0.4 and basis.shape == (2, 2)
    with pytest.raises(NoLatticeError, match="too small"):
        lattice_vectors(img, min_cells=11)


def test_candidate_maxima_sub_pixel_and_not_on_the_border():
    x = np.array([10.3, 25.0, 40.6, 25.2, 1.0])
    y = np.array([10.0, 12.4, 30.0, 35.7, 20.0])  # the last sits on the border
    img = render_columns((50, 50), x, y, 100.0, 2.0, 1.0)
    pts, height = candidate_maxima(img, spacing=12.0)
    assert len(pts) == 4 and np.all(height > 50)
    j, _ = match(x[:4], y[:4], pts[:, 0], pts[:, 1], max_dist=0.3)
    assert (j >= 0).all()
    assert not (pts[:, 0] < 2).any()
    with pytest.raises(NoLatticeError):
        candidate_maxima(np.ones((30, 30)), spacing=10.0)


def test_the_a_lattice_is_the_bright_half_of_a_checkerboard_for_001(rng):
    from latticegenome.columns.projection import perovskite_projection
    from latticegenome.columns.selfcheck import choose_a_lattice

    p001 = perovskite_projection((0, 0, 1))
    pts, ij = _grid(12)
    bright = ij.sum(axis=1) % 2 == 0
    height = np.where(bright, 100.0, 60.0) + rng.normal(0, 1, len(pts))
    basis = np.array([[10.0, 0.0], [0.0, 10.0]])
    got = index_lattice(pts, basis, weights=height)
    _, found2, _, basis2, info = choose_a_lattice(pts, height, *got, basis, p001)
    assert np.allclose(sorted(np.hypot(*basis2.T)), [10 * np.sqrt(2)] * 2)
    assert found2[bright].mean() > 0.95 and not found2[~bright].any()
    assert info["lattice_from"] == "i+j" and info["lattice_split_sigmas"] > 8
    # equal brightness: no checkerboard, nothing changes
    flat = 100.0 + rng.normal(0, 1, len(pts))
    got = index_lattice(pts, basis, weights=flat)
    same = choose_a_lattice(pts, flat, *got, basis, p001)
    assert same[3] is basis and np.array_equal(same[1], got[1])


def test_the_a_lattice_of_110_is_every_other_row_and_a_square_one_is_refused(rng):
    """[110]: A and B alternate along a2 (195 pm rows of a 276 x 195 maxima lattice):
    the A lattice is every other row, a1 the short vector. A square A lattice
    configured as [110] (or a [110] one as [001]) is a mismatch that says what it
    looks like."""
    from latticegenome.columns.projection import perovskite_projection
    from latticegenome.columns.selfcheck import choose_a_lattice
    from latticegenome.core.errors import ModelMismatchError

    p110, p001 = perovskite_projection((1, 1, 0)), perovskite_projection((0, 0, 1))
    ii, jj = np.meshgrid(np.arange(12), np.arange(16), indexing="ij")
    ij = np.column_stack([ii.ravel(), jj.ravel()])
    pts = ij * np.array([27.6, 19.5]) + 5.0  # x along [1-10] (a/sqrt2), y along [001] (a/2)
    a_row = ij[:, 1] % 2 == 0
    height = np.where(a_row, 100.0, 40.0) + rng.normal(0, 1, len(pts))
    basis = np.array([[27.6, 0.0], [0.0, 19.5]])
    got = index_lattice(pts, basis, weights=height)
    ij2, found2, _, basis2, info = choose_a_lattice(pts, height, *got, basis, p110,
                                                    spacing_px=27.6)
    assert found2[a_row].mean() > 0.95 and not found2[~a_row].any()
    assert np.allclose(np.hypot(*basis2.T), [27.6, 39.0], rtol=1e-6)  # a1 short, a2 long
    assert info["lattice_ratio"] == pytest.approx(np.sqrt(2), rel=1e-3)
    with pytest.raises(ModelMismatchError, match=r"ratio 1.41.*looks like \[110\], configured \[001\]"):
        choose_a_lattice(pts, height, *got, basis, p001, pixel_size_pm=10.0)
    square, sq_ij = _grid(12)
    checker = np.where(sq_ij.sum(axis=1) % 2 == 0, 100.0, 50.0)
    got = index_lattice(square, np.eye(2) * 10.0, weights=checker)
    with pytest.raises(ModelMismatchError, match=r"ratio 1.00.*looks like \[001\], configured \[110\]"):
        choose_a_lattice(square, checker, *got, np.eye(2) * 10.0, p110)


def test_index_maxima_refuses_scattered_points(rng):
    pts = rng.uniform(0, 100, (6, 2))
    with pytest.raises(NoLatticeError):
        index_maxima(pts, np.ones(6), np.array([[10.0, 0.0], [0.0, 10.0]]))
    grid, ij = _grid(5)
    pos, ij_found, local, _, _ = index_maxima(grid, np.ones(len(grid)), np.eye(2) * 10.0)
    assert len(pos) == 25 and local.shape == (25, 2, 2)
    assert np.array_equal(pos, grid) and np.array_equal(ij_found - ij_found[0], ij)


def test_missing_sites_fill_holes_and_stop_at_the_margin():
    pos, ij = _grid(5)  # x, y = 5..45
    hole = 12  # the centre site
    keep = np.arange(len(pos)) != hole
    local = np.repeat(np.eye(2)[None] * 10.0, keep.sum(), axis=0)
    miss_ij, miss_pos = _missing_sites(pos[keep], ij[keep], local, (51, 51), margin=0.0)
    assert [2, 2] in miss_ij.tolist() and np.allclose(miss_pos[miss_ij.tolist().index([2, 2])], [25, 25])
    assert in_frame(miss_pos[:, 0], miss_pos[:, 1], (51, 51)).all()
    assert len(miss_ij) == 1  # only the hole: the ring next out is at -5 and 55 px
    # with a margin of 5 px: the hole and the ring of 20, then (second round,
    # from the ring) its 4 corners
    wide_pos, wide_ij = add_missing_sites(pos[keep], ij[keep], local, np.eye(2) * 10.0, (51, 51),
                                          margin=5.0)
    assert len(wide_ij) == 24 + 1 + 20 + 4 and len(wide_pos) == len(wide_ij)
    assert [-1, -1] in wide_ij.tolist() and [-2, 0] not in wide_ij.tolist()
    assert np.allclose(wide_pos, 5.0 + 10.0 * wide_ij)
    narrow_pos, _ = add_missing_sites(pos[keep], ij[keep], local, np.eye(2) * 10.0, (51, 51),
                                      margin=4.9)
    assert len(narrow_pos) == 25


def _refinement(x, y, amplitude, amplitude_err=None):
    n = len(x)
    return Refinement(x=np.array(x, float), y=np.array(y, float), amplitude=np.array(amplitude, float),
                      sigma=np.full(n, 2.0), background=np.full(n, 5.0), x_err=np.full(n, 0.01),
                      y_err=np.full(n, 0.01),
                      amplitude_err=np.ones(n) if amplitude_err is None else np.array(amplitude_err),
                      sigma_err=np.full(n, 0.05), converged=np.ones(n, bool), iterations=1,
                      dispersion=1.0)


def test_place_outside_sites_follows_the_lattice_inside():
    pos, ij = _grid(6, a=10.0, origin=(-3.0, 5.0))  # x = -3, 7, ...: the first column outside
    fit = _refinement(pos[:, 0] + 0.0, pos[:, 1] + 0.0, np.full(len(pos), 50.0))
    fit.x[ij[:, 0] == 0] += 1.5  # where a loose fit to a few pixels of tail went
    fit.amplitude[ij[:, 0] == 0] = 3.0
    new_pos, outside = place_outside_sites(fit, pos, ij, np.ones(len(pos), bool), (60, 60), sigma=2.5)
    assert outside.tolist() == (ij[:, 0] == 0).tolist()
    assert np.allclose(new_pos, pos, atol=1e-9)  # the affine lattice of those inside
    assert np.allclose(fit.x[outside], -3.0) and np.allclose(fit.amplitude[outside], 50.0)
    assert np.all(fit.sigma[outside] == 2.5)


def test_residual_maxima_searches_a_disk_inside_the_image():
    surface = np.zeros((20, 20), np.float32)
    surface[10, 13] = 5.0  # 3 px from the seed at (10, 10)
    surface[4, 10] = 9.0  # 6 px away: outside a 3.5 px disk
    col, row, found = residual_maxima(surface, np.array([[10.0, 10.0], [-8.0, 10.0]]), 3.5)
    assert (col[0], row[0]) == (13, 10) and found.tolist() == [True, False]


def test_select_columns_drops_faint_outside_duplicate_and_slid_columns():
    x = [10.0, 20.0, 20.5, -0.7, 30.0, 40.0, 50.0]
    y = [10.0, 10.0, 10.0, 10.0, 10.0, 15.0, 10.0]
    amp = [50.0, 50.0, 20.0, 50.0, 2.0, 50.0, 50.0]
    fit = _refinement(x, y, amp)
    seed_x = np.array([10.0, 20.0, 20.0, -0.7, 30.0, 40.0, 50.0])
    seed_y = np.array([10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 13.5])
    site = np.array([0, 0, 1, 0, 0, 0, 1])
    n = len(x)
    cand = Candidates(x=fit.x, y=fit.y, amplitude=fit.amplitude, sigma=fit.sigma,
                      background=fit.background, site=site, ij=np.zeros((n, 2), int),
                      seed_x=seed_x, seed_y=seed_y, species=np.full(n, "X"))
    report, detected = select_columns(fit, cand, (30, 60), spacing=10.0, significance=5.0,
                                      b_search=0.3)
    # detected: 0; 1; not 2 (duplicate of 1); not 3 (outside); not 4 (faint); not 5 (A moved
    # 5 px > 3.5); 6 (B moved 3.5 px <= 0.3 * 10 + 1)
    assert detected.tolist() == [True, True, False, False, False, False, True]
    # reported: every A and B site inside the image (3's site is outside)
    assert report.tolist() == [True, True, True, False, True, True, True]


def test_candidates_join_keeps_the_order():
    a = Candidates(*(np.array([1.0]),) * 5, site=np.array([0]), ij=np.array([[0, 0]]),
                   seed_x=np.array([1.0]), seed_y=np.array([1.0]), species=np.array(["Sr"]))
    b = Candidates(*(np.array([2.0, 3.0]),) * 5, site=np.array([1, 1]), ij=np.array([[0, 0], [1, 0]]),
                   seed_x=np.array([2.0, 3.0]), seed_y=np.array([2.0, 3.0]),
                   species=np.array(["TiO", "TiO"]))
    both = a.join(b)
    assert len(both) == 3 and both.x.tolist() == [1.0, 2.0, 3.0]
    assert both.site.tolist() == [0, 1, 1] and both.ij.shape == (3, 2)
    assert both.species.tolist() == ["Sr", "TiO", "TiO"]
