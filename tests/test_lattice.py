import numpy as np
import pytest

from latticegenome.columns.lattice import (
    estimate_lattice,
    fit_lattice,
    index_lattice,
    predict_sites,
    reduce_basis,
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
