import numpy as np
import pytest
from scipy.spatial import cKDTree

from latticegenome.columns.lattice import (
    _subpixel_peak,
    acf_peaks,
    autocorrelation,
    central_crop,
    choose_seed,
    estimate_lattice,
    fit_lattice,
    grow_lattice,
    index_lattice,
    on_indexed_lattice,
    predict_sites,
    reduce_basis,
    shortest_pair,
)
from latticegenome.columns.simulate import simulate_lattice


@pytest.mark.parametrize("angle", [0.0, 12.0, 37.0, 45.0, 71.0])
def test_lattice_vectors_at_any_rotation(rng, angle):
    img, truth = simulate_lattice((256, 256), angle_deg=angle, b_ratio=0.3, rng=rng)
    basis = estimate_lattice(img)
    lengths = np.hypot(basis[:, 0], basis[:, 1])
    assert np.allclose(lengths, 20.0, rtol=0.02)
    th = np.deg2rad(angle)
    # a1 is parallel to one of the true lattice directions
    cosines = [abs(basis[0] @ [np.cos(t), np.sin(t)]) / lengths[0] for t in (th, th + np.pi / 2)]
    assert max(cosines) > 0.999


def test_reduce_basis_gives_shortest_right_handed_pair():
    b = reduce_basis(np.array([[20.0, 0.0], [60.0, 20.0]]))
    assert np.allclose(sorted(np.hypot(*b.T)), [20.0, 20.0])
    assert b[0, 0] * b[1, 1] - b[0, 1] * b[1, 0] > 0


def test_index_follows_slow_distortion_and_skips_points_between_sites(rng):
    # a lattice whose spacing grows by 30 % across the field, plus centred points
    ii, jj = np.meshgrid(np.arange(30), np.arange(30), indexing="ij")
    scale = 1 + 0.3 * ii / 30
    x = np.cumsum(20 * scale, axis=0) + rng.normal(0, 0.5, ii.shape)
    y = 20 * jj + rng.normal(0, 0.5, ii.shape)
    pts = np.column_stack([x.ravel(), y.ravel()])
    centred = pts + [10, 10]
    allpts = np.vstack([pts, centred])
    ij, found, local = index_lattice(allpts, np.array([[20.0, 0.0], [0.0, 20.0]]),
                                     weights=np.r_[np.ones(len(pts)), 0.3 * np.ones(len(pts))])
    assert found[: len(pts)].all()
    assert not found[len(pts):].any()
    got = ij[: len(pts)] - ij[0]
    assert np.array_equal(got, np.column_stack([ii.ravel(), jj.ravel()]))
    basis, origin = fit_lattice(pts[:, :], got)
    assert basis.shape == (2, 2)


def test_no_lattice_in_noise(rng):
    with pytest.raises(ValueError):
        estimate_lattice(rng.poisson(20, (128, 128)).astype(float) * 0 + 5.0)


def test_predict_sites_extrapolates_a_distorted_lattice_beyond_the_points():

    # A lattice with slow distortion (a gentle bend) and linear drift: the
    # sites two cells beyond the measured patch come from a local affine fit.
    ii, jj = np.meshgrid(np.arange(0, 12), np.arange(0, 12), indexing="ij")
    ij = np.column_stack([ii.ravel(), jj.ravel()])

    def site(ij):
        i, j = ij[:, 0].astype(float), ij[:, 1].astype(float)
        x = 5.0 + 20.0 * i + 1.5 * j + 0.01 * j**2
        y = 7.0 + 0.4 * i + 20.3 * j + 0.008 * i**2
        return np.column_stack([x, y])

    inside = (ij[:, 0] < 10) & (ij[:, 1] < 10)
    targets = ij[~inside]
    pred = predict_sites(site(ij[inside]), ij[inside], targets)
    err = np.hypot(*(pred - site(targets)).T)
    # the nearest measured site plus the mean lattice vectors (what a global
    # lattice gives) misses the bent lattice by far more
    basis, _ = fit_lattice(site(ij[inside]), ij[inside])
    near = np.minimum(targets, 9)
    naive = site(near) + (targets - near) @ basis
    naive_err = np.hypot(*(naive - site(targets)).T)
    assert np.all(np.isfinite(pred))
    assert err.max() < 0.1, err.max()
    assert err.max() < 0.5 * naive_err.max(), (err.max(), naive_err.max())
    # An exactly affine patch is extrapolated exactly.
    affine = np.column_stack([3.0 + 19.0 * ij[:, 0] - 2.0 * ij[:, 1], 1.0 + 2.0 * ij[:, 0] + 21.0 * ij[:, 1]])
    pred = predict_sites(affine[inside], ij[inside], targets)
    assert np.allclose(pred, affine[~inside], atol=1e-9)
    # Too few points nearby, or all on one line: no prediction.
    far = predict_sites(site(ij[inside]), ij[inside], np.array([[20, 20]]))
    assert np.isnan(far).all()
    line = ij[:, 1] == 0
    assert np.isnan(predict_sites(site(ij[line]), ij[line], np.array([[3, 1]]))).all()


# --- the steps of estimate_lattice and index_lattice, on small plain arrays -------------


def test_central_crop_is_the_middle_and_leaves_small_images_whole():
    img = np.arange(20 * 30).reshape(20, 30)
    crop = central_crop(img, 10)
    assert crop.shape == (10, 10) and crop[0, 0] == img[5, 10]
    assert central_crop(img, 64).shape == (20, 30)


def test_acf_peaks_of_a_periodic_image_are_its_translations():
    yy, xx = np.mgrid[0:96, 0:96]
    img = np.cos(2 * np.pi * xx / 12.0) + np.cos(2 * np.pi * yy / 16.0)
    vec, height = acf_peaks(autocorrelation(img), max_lag=20.0, min_lag=4.0)
    lengths = np.hypot(vec[:, 0], vec[:, 1])
    assert np.all((lengths >= 4.0) & (lengths <= 20.0)) and len(height) == len(vec)
    nearest = np.hypot(*(vec[:, None, :] - np.array([[12.0, 0.0], [0.0, 16.0]])).T).min(axis=1)
    assert np.all(nearest < 0.3)
    with pytest.raises(ValueError):
        acf_peaks(np.zeros((40, 40)), max_lag=10.0, min_lag=4.0)


def test_shortest_pair_prefers_the_expected_spacing_and_refuses_parallel_vectors():
    vec = np.array([[10.0, 0.0], [0.0, 10.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    height = np.array([0.4, 0.4, 1.0, 1.0, 0.9])
    assert np.allclose(shortest_pair(vec, height), [[20.0, 0.0], [0.0, 20.0]])  # the strong ones
    assert np.allclose(shortest_pair(vec, height, spacing_px=10.0), [[10.0, 0.0], [0.0, 10.0]])
    with pytest.raises(ValueError, match="two dimensions"):
        shortest_pair(np.array([[10.0, 0.0], [20.0, 0.5]]), np.ones(2))
    with pytest.raises(ValueError, match="fewer than two"):
        shortest_pair(np.zeros((1, 2)), np.ones(1))


def test_subpixel_peak_interpolates_inside_and_not_on_the_border():
    z = np.zeros((5, 5))
    z[2, 1:4] = [1.0, 3.0, 2.0]
    r, c = _subpixel_peak(z, 2, 2)
    assert r == 2.0 and 2.0 < c < 2.5
    assert _subpixel_peak(z, 0, 2) == (0.0, 2.0) and _subpixel_peak(z, 2, 4) == (2.0, 4.0)


def test_choose_seed_takes_the_brightest_near_the_middle():
    ii, jj = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
    pts = np.column_stack([ii.ravel(), jj.ravel()]) * 10.0
    assert choose_seed(pts) == 12  # the centre
    w = np.ones(25)
    w[0] = 100.0  # bright, but in a corner
    w[7] = 5.0  # (1, 2): next to the centre
    assert choose_seed(pts, w) == 7


def test_on_indexed_lattice_and_grow_lattice_on_a_grid():
    ii, jj = np.meshgrid(np.arange(6), np.arange(6), indexing="ij")
    ij_true = np.column_stack([ii.ravel(), jj.ravel()])
    pts = np.vstack([ij_true * 10.0, [[25.0, 25.0], [30.0, 70.0]]])  # a centred point, a far site
    n = len(pts)
    basis = np.eye(2) * 10.0
    ij = np.full((n, 2), np.iinfo(np.int64).min)
    found = np.zeros(n, bool)
    local = np.full((n, 2, 2), np.nan)
    unreached = np.ones(n, bool)
    ij[0], local[0], found[0], unreached[0] = (0, 0), basis, True, False
    grown = grow_lattice(pts, cKDTree(pts), 0, ij, found, local, unreached, 3.0, 10.0)
    assert grown == 36 and np.array_equal(ij[:36], ij_true) and not found[36:].any()
    assert np.allclose(local[:36], basis)
    on_site, near, frac = on_indexed_lattice(pts, np.array([36, 37]), found, local, 0.3)
    assert on_site.tolist() == [False, True]  # (25, 25) is between sites; (30, 70) on one
    assert np.allclose(frac[1], [0.0, 2.0]) and near[1] == 23  # (30, 50)
