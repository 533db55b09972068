import numpy as np
import pytest

from latticegenome.columns.model import amplitude_for_counts, render_columns
from latticegenome.columns.refine import crlb_position, refine_columns


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
    keep = (x > -12.5) & (x < shape[1] + 11.5) & (y > -12.5) & (y < shape[0] + 11.5)
    x, y, site, h = x[keep], y[keep], site[keep], h[keep]
    img = render_columns(shape, x, y, h, s, 20.0)
    out = (x < -0.5) | (x > shape[1] - 0.5) | (y < -0.5) | (y > shape[0] - 0.5)
    assert out.sum() > 20
    x0 = x + np.where(out, rng.uniform(-0.7, 0.7, x.size), rng.uniform(-0.3, 0.3, x.size))
    y0 = y + np.where(out, rng.uniform(-0.7, 0.7, x.size), rng.uniform(-0.3, 0.3, x.size))
    h0 = np.where(out, h * 0.8, h)  # held: taken from the neighbours, not from here
    r = refine_columns(img, x0, y0, sigma=s, amplitude=h0, background=20.0, groups=site,
                       hold_amplitude=out, max_shift=np.where(out, 2.0, 8.0))
    assert np.allclose(r.amplitude[out], h[out], rtol=2e-3)  # the neighbours' height
    inner = (x >= 7.1) & (x <= shape[1] - 8.1) & (y >= 7.1) & (y <= shape[0] - 8.1)
    assert np.max(np.hypot(r.x - x, r.y - y)[inner]) < 2e-3
    # those whose tail carries real light into the image (centre within 2
    # sigma of it) are found; those farther out hardly shine in and may drift
    gap = np.hypot(np.maximum(np.maximum(-x, x - (shape[1] - 1)), 0),
                   np.maximum(np.maximum(-y, y - (shape[0] - 1)), 0))
    near = out & (gap < 2 * s)
    assert near.sum() > 10
    assert np.max(np.hypot(r.x - x, r.y - y)[near]) < 0.05
