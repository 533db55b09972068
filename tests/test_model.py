import numpy as np

from latticegenome.columns.model import (
    amplitude_for_counts,
    column_counts,
    render_columns,
)
from latticegenome.columns.refine import crlb_position


def test_render_single_column_matches_formula():
    img = render_columns((41, 41), [20.3], [19.6], [100.0], 2.5, background=7.0)
    yy, xx = np.mgrid[0:41, 0:41]
    expected = 7.0 + 100.0 * np.exp(-((xx - 20.3) ** 2 + (yy - 19.6) ** 2) / (2 * 2.5**2))
    inside = (np.abs(xx - 20) <= 12) & (np.abs(yy - 20) <= 12)  # within the render radius
    assert np.allclose(img[inside], expected[inside], atol=1e-12)


def test_render_column_outside_image_adds_its_tail():
    img = render_columns((20, 20), [-2.0], [10.0], [50.0], 2.0)
    assert img[10, 0] > 0 and img[10, 0] == img.max()


def test_counts_round_trip():
    h = amplitude_for_counts(5655.0, 3.0)
    assert np.isclose(column_counts(h, 3.0), 5655.0)


def test_crlb_matches_mortensen_for_isolated_column():
    # Mortensen et al. (2010) with fine pixels: sigma^2 ~ s_a^2/N * (1 + int ln t/(1+t/tau))^-1
    from scipy.integrate import quad

    s, n_counts, b = 3.0, 5655.0, 20.0
    h = amplitude_for_counts(n_counts, s)
    crlb = crlb_position((81, 81), [40.0], [40.0], [h], [s], b, radius=30)[0]
    sa2 = s**2 + 1 / 12
    tau = 2 * np.pi * sa2 * b / n_counts
    integral = quad(lambda t: np.log(t) / (1 + t / tau), 0, 1)[0]
    mortensen = np.sqrt(sa2 / n_counts / (1 + integral))
    # the model also fits width and background: the bound is a little above
    assert mortensen * 0.97 < crlb < mortensen * 1.25


# --- the simulator's steps (it renders this model), on small plain arrays --------------


def test_square_lattice_sites_rotate_and_displace_b():
    from latticegenome.columns.simulate import square_lattice_sites

    pa, pb, ij = square_lattice_sites((41, 61), 10.0, 90.0, (1.0, 2.0), b_displacement_px=(1.0, 0.0))
    origin = np.flatnonzero((ij == 0).all(axis=1))[0]
    assert np.allclose(pa[origin], [31.0, 22.0])  # image centre (30, 20) + offset
    one = np.flatnonzero((ij == [1, 0]).all(axis=1))[0]
    assert np.allclose(pa[one] - pa[origin], [0.0, 10.0])  # a1 rotated by 90 degrees
    # B: the cell centre (rotated half-diagonal (-5, 5)) plus the rotated displacement (0, 1)
    assert np.allclose(pb[origin] - pa[origin], [-5.0, 6.0])
    # enough sites to cover the image at any rotation
    assert pa[:, 0].min() < 0 and pa[:, 0].max() > 60 and pa[:, 1].min() < 0 and pa[:, 1].max() > 40


def test_jitter_stays_in_its_disk(rng):
    from latticegenome.columns.simulate import jitter

    moved = jitter(np.zeros((2000, 2)), 1.5, rng)
    r = np.hypot(moved[:, 0], moved[:, 1])
    assert r.max() <= 1.5 and r.min() > 0
    assert abs(np.mean(r <= 1.5 / np.sqrt(2)) - 0.5) < 0.05  # uniform in area, not in radius


def test_superlattice_sites_put_b_at_cell_centres_with_polar_shift():
    from latticegenome.columns.simulate import layer_stack, superlattice_sites

    j_cells, mat, plane_y = layer_stack(4, (1, 1), 0, np.array([10.0, 12.0]))
    x, y, site, m, _, _ = superlattice_sites(j_cells, mat, plane_y, np.arange(3), 10.0,
                                             np.array([0.5, 0.0]), np.array([0.0, 1.5]))
    assert (site == "A").sum() == 3 * 5 and (site == "B").sum() == 2 * 4
    b = site == "B"
    # B of cell (i, j) at the middle of its corners, +1.5 px along y in material 1
    assert np.allclose(x[b] % 10.0, 5.5)
    centre_y = (plane_y[:-1] + plane_y[1:]) / 2
    assert np.allclose(y[b], np.repeat(centre_y + np.where(mat == 1, 1.5, 0.0), 2))
    assert np.array_equal(m[b], np.repeat(mat, 2))


def test_rotate_and_drift_and_vacancies(rng):
    from latticegenome.columns.simulate import place_vacancies, rotate_and_drift

    x, y = rotate_and_drift(np.array([0.0, 10.0]), np.array([0.0, 0.0]), (21, 41), 0.0, (0.1, 0.0))
    assert np.allclose(x, [20.0 + 1.0, 30.0 + 1.0]) and np.allclose(y, [10.0, 10.0])
    site = np.array(["A"] * 6 + ["B"] * 4)
    interior = np.array([True] * 5 + [False] + [True] * 4)
    present = place_vacancies(interior, site, (2, 1), rng)
    assert (~present[site == "A"]).sum() == 2 and (~present[site == "B"]).sum() == 1
    assert present[5]  # not interior: never a vacancy
