import numpy as np
import pytest

from latticegenome.columns.geometry import PIXEL_AREA, in_frame
from latticegenome.columns.model import amplitude_for_counts, render_columns
from latticegenome.columns.refine import (
    _ridge,
    crlb_position,
    damped_step,
    gauss_newton,
    hold_fixed,
    refine_columns,
    start_amplitude,
    start_background,
    trial_parameters,
    update_damping,
    window_coverage,
)


def lattice(n=10, a=20.0, offset=(12.3, 14.7), b_ratio=0.4, b_shift=(0.0, 0.0)):
    ii, jj = np.meshgrid(np.arange(n), np.arange(n))
    xa = (ii * a + offset[0]).ravel()
    ya = (jj * a + offset[1]).ravel()
    xb = xa + a / 2 + b_shift[0]
    yb = ya + a / 2 + b_shift[1]
    x, y = np.r_[xa, xb], np.r_[ya, yb]
    site = np.r_[np.zeros(xa.size, int), np.ones(xb.size, int)]
    return x, y, site


@pytest.mark.parametrize("b_ratio", [1.0, 0.2])
def test_noise_free_bias_below_two_millipixels(rng, b_ratio):
    x, y, site = lattice(b_ratio=b_ratio, b_shift=(1.3, -0.7))
    s = 3.0
    h = amplitude_for_counts(5655.0, s) * np.where(site == 0, 1.0, b_ratio)
    img = render_columns((220, 220), x, y, h, s, 20.0)
    x0 = x + rng.uniform(-0.4, 0.4, x.size)
    y0 = y + rng.uniform(-0.4, 0.4, x.size)
    r = refine_columns(img, x0, y0, sigma=3.3, groups=site)
    assert r.converged.all()
    assert np.max(np.hypot(r.x - x, r.y - y)) < 2e-3
    assert np.allclose(r.sigma, s, rtol=1e-3)
    assert np.allclose(r.amplitude, h, rtol=3e-3)


def test_poisson_precision_at_cramer_rao_bound(rng):
    x, y, site = lattice(n=12)
    s, b = 3.0, 20.0
    h = amplitude_for_counts(5655.0, s) * np.where(site == 0, 1.0, 0.4)
    lam = render_columns((260, 260), x, y, h, s, b)
    crlb = crlb_position((260, 260), x, y, h, s, b, radius=8)
    errs, bars = [], []
    for _ in range(4):
        img = rng.poisson(lam).astype(float)
        r = refine_columns(img, x + rng.uniform(-0.3, 0.3, x.size), y, sigma=3.0, groups=site)
        errs.append((r.x - x) / crlb)
        bars.append(r.x_err / crlb)
    ratio = np.sqrt(np.mean(np.concatenate(errs) ** 2))
    # 1,152 estimates: the RMS ratio is known to about +-3 %
    assert 0.9 < ratio < 1.1
    assert 0.95 < np.median(np.concatenate(bars)) < 1.05
    assert abs(r.dispersion - 1.0) < 0.02


def test_dispersion_rescales_errors_of_scaled_images(rng):
    x, y, site = lattice(n=8)
    h = amplitude_for_counts(5655.0, 3.0) * np.where(site == 0, 1.0, 0.4)
    img = rng.poisson(render_columns((180, 180), x, y, h, 3.0, 20.0)).astype(float)
    r1 = refine_columns(img, x, y, sigma=3.0, groups=site)
    r4 = refine_columns(4.0 * img, x, y, sigma=3.0, groups=site)  # detector gain 4
    assert np.allclose(r1.x, r4.x, atol=1e-4)
    assert abs(r4.dispersion / r1.dispersion - 4.0) < 1e-3
    # same positions, same uncertainty in pixels whatever the gain
    assert np.allclose(r1.x_err, r4.x_err, rtol=1e-3)


def test_column_starting_at_a_half_pixel_converges(rng):
    # windows must not hop between pixel sets when a column sits at x.5
    x = np.array([30.5, 50.5])
    y = np.array([30.5, 30.49])
    h = amplitude_for_counts(5655.0, 3.0) * np.ones(2)
    img = rng.poisson(render_columns((60, 80), x, y, h, 3.0, 20.0)).astype(float)
    r = refine_columns(img, x, y, sigma=3.0)
    assert r.converged.all()
    assert r.iterations < 40


def test_columns_outside_the_image_are_fitted_on_their_tails():
    # A lattice cut by the image border: columns centred up to 12 px outside
    # the image shine into it. Started 0.7 px off, with their height held,
    # they are fitted on the image pixels nearest to them, and the columns
    # inside (scored from one column width in) end free of bias.
    rng = np.random.default_rng(7)
    x, y, site = lattice(n=12, offset=(-12.0, -9.5), b_shift=(0.8, -0.6))
    s = 3.0
    h = amplitude_for_counts(5655.0, s) * np.where(site == 0, 1.0, 0.4)
    shape = (200, 190)
    keep = in_frame(x, y, shape, 12.5, strict=True)
    x, y, site, h = x[keep], y[keep], site[keep], h[keep]
    img = render_columns(shape, x, y, h, s, 20.0)
    out = ~in_frame(x, y, shape, PIXEL_AREA)
    assert out.sum() > 20
    x0 = x + np.where(out, rng.uniform(-0.7, 0.7, x.size), rng.uniform(-0.3, 0.3, x.size))
    y0 = y + np.where(out, rng.uniform(-0.7, 0.7, x.size), rng.uniform(-0.3, 0.3, x.size))
    h0 = np.where(out, h * 0.8, h)  # held: taken from the neighbours, not from here
    r = refine_columns(img, x0, y0, sigma=s, amplitude=h0, background=20.0, groups=site,
                       hold_amplitude=out, max_shift=np.where(out, 2.0, 8.0))
    assert np.allclose(r.amplitude[out], h[out], rtol=2e-3)  # the neighbours' height
    inner = in_frame(x, y, shape, -7.1)  # one column width (7.1 px) inside
    assert np.max(np.hypot(r.x - x, r.y - y)[inner]) < 2e-3
    # those whose tail carries real light into the image (centre within 2
    # sigma of it) are found; those farther out hardly shine in and may drift
    gap = np.hypot(np.maximum(np.maximum(-x, x - (shape[1] - 1)), 0),
                   np.maximum(np.maximum(-y, y - (shape[0] - 1)), 0))
    near = out & (gap < 2 * s)
    assert near.sum() > 10
    assert np.max(np.hypot(r.x - x, r.y - y)[near]) < 0.05


# --- the steps of refine_columns, on small plain arrays --------------------------------


def test_start_background_is_a_low_percentile_of_the_window_inside():
    img = np.arange(100.0).reshape(10, 10)
    # a full 5x5 window at (5, 5): rows 3-7, columns 3-7; the 3rd smallest
    # (index int(0.1 * 24) = 2) of 33, 34, 35, ..., 77 is 35
    b = start_background(img, np.array([5.0, 0.0, -9.0]), np.array([5.0, 0.0, 5.0]), 2, chunk=2)
    assert b[0] == 35.0
    assert b[1] == 0.0  # 3x3 inside: index int(0.1 * 8) = 0, the corner pixel 0
    assert b[2] == 0.0  # no pixel in the image
    h = start_amplitude(img, np.array([5.2, 12.0]), np.array([4.6, 3.0]), np.array([7.0, 1.0]))
    assert h.tolist() == [55.0 - 7.0, 39.0 - 1.0]  # nearest pixel, clipped to the image


def test_window_coverage_counts_pixels_inside():
    cov = window_coverage(np.array([5.0, 0.4, -2.0, -3.0, 9.0]), np.array([5.0, 5.0, 5.0, 5.0, 9.0]),
                          (10, 10), 2)
    assert cov.tolist() == [25.0, 15.0, 5.0, 0.0, 9.0]


def test_hold_fixed_decouples_held_parameters(rng):
    a = rng.normal(size=(3, 5, 5))
    info = a @ np.swapaxes(a, 1, 2) + np.eye(5)
    free = np.ones((3, 5))
    free[1, 3:] = 0.0
    free[2, 2] = 0.0
    fixed = hold_fixed(info, free)
    assert np.array_equal(fixed[0], info[0])
    assert np.array_equal(fixed[1, 3:, 3:], np.eye(2)) and not fixed[1, :3, 3:].any()
    assert fixed[2, 2, 2] == 1.0 and not fixed[2, 2, [0, 1, 3, 4]].any()
    step = np.linalg.solve(fixed, (np.ones((3, 5)) * free)[..., None])[..., 0]
    assert not step[1, 3:].any() and step[2, 2] == 0.0  # held parameters do not move


def test_gauss_newton_and_damped_steps():
    info = np.array([np.diag([4.0, 4.0, 1.0, 1.0, 1.0])] * 2)
    grad = np.array([[4.0, 0.0, 2.0, 0.0, 0.0], [40.0, 30.0, 0.0, 0.0, 0.0]])
    ridge = _ridge(info)
    step, decrement = gauss_newton(info, grad, ridge)
    assert np.allclose(step, [1.0, 12.5], rtol=1e-9)
    assert np.allclose(decrement, [4.0 + 4.0, (1600 + 900) / 4.0], rtol=1e-9)
    delta, shift = damped_step(info, grad, ridge, np.array([1e-12, 1.0]), max_step=1.0)
    assert np.allclose(shift, [1.0, 12.5 / 2], rtol=1e-6)  # mu = 1 halves the step
    assert np.allclose(np.hypot(delta[:, 0], delta[:, 1]), [1.0, 1.0], rtol=1e-6)  # trust region
    assert np.allclose(delta[1, :2] / np.hypot(*delta[1, :2]), [0.8, 0.6])  # direction kept


def test_trial_parameters_stay_physical_and_damping_moves_4x_and_8x():
    delta = np.array([[0.5, -0.5, -200.0, 5.0, -50.0], [0.1, 0.2, 1.0, -0.1, 1.0]])
    x, y, h, s, b = trial_parameters(np.zeros(2), np.zeros(2), np.array([10.0, 10.0]), np.full(2, 3.0),
                                     np.full(2, 20.0), delta, np.full(2, 1.5), np.full(2, 6.0))
    assert x.tolist() == [0.5, 0.1] and y.tolist() == [-0.5, 0.2]
    assert np.allclose(h, [1e-5, 11.0], rtol=1e-12)  # positive: 1e-6 of the current height
    assert s.tolist() == [6.0, 2.9]  # within the bounds
    assert b.tolist() == [0.0, 21.0]  # non-negative
    mu = update_damping(np.array([1e-3, 1e-3, 1e-7, 1e8]), np.array([True, False, True, False]))
    assert np.allclose(mu, [2.5e-4, 8e-3, 1e-7, 1e8])


def test_gather_mask_marks_pixels_inside():
    from latticegenome.columns.refine import _gather, _window_offsets

    ox, oy = _window_offsets(1)
    px, py, mask, flat = _gather(np.zeros((4, 5)), np.array([0]), np.array([3]), ox, oy)
    assert mask.sum() == 4 and np.array_equal(mask, (px >= 0) & (px <= 4) & (py >= 0) & (py <= 3))
    assert flat.max() <= 19
