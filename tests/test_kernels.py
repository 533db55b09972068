"""The compiled refinement kernels agree with the NumPy reference functions."""

import numpy as np
import pytest

from latticegenome.columns._kernels import accumulate, move, trial_loglik, window_stats
from latticegenome.columns.geometry import in_frame
from latticegenome.columns.model import (
    fisher_information,
    render_columns,
    window_jacobian,
)


def setup(rng, n=12, shape=(60, 70), radius=6, pad=20):
    rows, cols = shape
    x = rng.uniform(-3, cols + 2, n)
    y = rng.uniform(-3, rows + 2, n)
    h = rng.uniform(20, 100, n)
    s = rng.uniform(2, 3.5, n)
    b = rng.uniform(5, 20, n)
    img = rng.poisson(30, shape).astype(float)
    pcol, prow = cols + 2 * pad, rows + 2 * pad
    full = np.zeros(prow * pcol)
    accumulate(full, rows, cols, pad, x, y, h, s, 12)
    return img, x, y, h, s, b, full, pad, pcol, prow, radius


def test_render_matches_reference(rng):
    img, x, y, h, s, b, full, pad, pcol, prow, _ = setup(rng)
    rows, cols = img.shape
    ref = render_columns(img.shape, x, y, h, s, radius=12)
    assert np.allclose(full.reshape(prow, pcol)[pad:pad + rows, pad:pad + cols], ref, atol=1e-9)


def test_window_stats_match_reference(rng):
    img, x, y, h, s, b, full, pad, pcol, prow, radius = setup(rng)
    rows, cols = img.shape
    wx, wy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    ll, grad, info, chi2, npix = window_stats(img.ravel(), rows, cols, full, pad, pcol, prow, wx, wy,
                                              x, y, h, s, b, radius, True)
    off = np.arange(-radius, radius + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    px = wx[:, None] + ox.ravel()[None]
    py = wy[:, None] + oy.ravel()[None]
    mask = in_frame(px, py, img.shape)
    n = np.where(mask, img[np.clip(py, 0, rows - 1), np.clip(px, 0, cols - 1)], 0)
    g, jac = window_jacobian(px - x[:, None], py - y[:, None], h, s)
    model = full.reshape(prow, pcol)[np.clip(py + pad, 0, prow - 1), np.clip(px + pad, 0, pcol - 1)]
    lam = b[:, None] + model
    assert np.allclose(info, fisher_information(jac, lam, mask), rtol=1e-10)
    assert np.allclose(grad, np.einsum("np,npk->nk", mask * (n / lam - 1), jac), rtol=1e-9, atol=1e-9)
    assert np.allclose(ll, np.sum(mask * (n * np.log(lam) - lam), axis=1), rtol=1e-12)
    assert np.array_equal(npix, mask.sum(axis=1))
    # without the log-likelihood, the rest is the same
    no_ll = window_stats(img.ravel(), rows, cols, full, pad, pcol, prow, wx, wy, x, y, h, s, b, radius,
                         False)
    assert not no_ll[0].any()
    assert np.array_equal(no_ll[2], info) and np.array_equal(no_ll[1], grad)
    # moving nothing leaves the log-likelihood unchanged
    before, same = trial_loglik(img.ravel(), rows, cols, full, pad, pcol, prow, wx, wy, x, y, h, s, b,
                                x, y, h, s, b, radius)
    assert np.allclose(before, ll, rtol=1e-12)
    assert np.allclose(same, ll, rtol=1e-12)
    # a step: the likelihood after it is that of the model with the column moved
    x1, h1, b1 = x + 0.3, h * 1.1, b + 0.5
    _, after = trial_loglik(img.ravel(), rows, cols, full, pad, pcol, prow, wx, wy, x, y, h, s, b,
                            x1, y, h1, s, b1, radius)
    g0, _ = window_jacobian(px - x[:, None], py - y[:, None], h, s)
    g1, _ = window_jacobian(px - x1[:, None], py - y[:, None], h1, s)
    lam1 = b1[:, None] + model - g0 + g1
    assert np.allclose(after, np.sum(mask * (n * np.log(lam1) - lam1), axis=1), rtol=1e-12)


def test_move_is_subtract_old_add_new(rng):
    img, x, y, h, s, b, full, pad, pcol, prow, _ = setup(rng)
    rows, cols = img.shape
    # small moves (same centre pixel), large moves, and moves in and out of the canvas
    x1 = x + np.r_[rng.uniform(-0.3, 0.3, 6), rng.uniform(-4, 4, 5), 60.0]
    y1 = y + np.r_[rng.uniform(-0.3, 0.3, 6), rng.uniform(-4, 4, 5), 0.0]
    h1, s1 = h * 1.2, s * 0.9
    moved = full.copy()
    move(moved, rows, cols, pad, x, y, h, s, x1, y1, h1, s1, 12)
    ref = np.zeros_like(full)
    accumulate(ref, rows, cols, pad, x1, y1, h1, s1, 12)
    assert np.allclose(moved, ref, atol=1e-9)


def test_warm_up_compiles_every_kernel():
    from latticegenome.columns import _kernels

    _kernels.warm_up()
    for kernel in (_kernels.window_stats, _kernels.trial_loglik, _kernels.accumulate, _kernels.move):
        assert kernel.signatures, kernel


def test_mmap_threshold_is_fixed_on_glibc():
    # glibc's mallopt accepts the setting (returns 1); off glibc it is skipped
    import platform

    from latticegenome.core._memory import return_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert return_freed_memory() is True
    assert return_freed_memory() is True  # idempotent


def test_kernel_helpers_gaussian_row_and_symmetric_store():
    from latticegenome.columns._kernels import _gaussian_row, _store_symmetric

    out = np.full(7, np.nan)
    _gaussian_row(out, 3, 7, 5.2, 0.5 / 1.5**2)
    assert np.allclose(out[:5], np.exp(-((np.arange(3, 8) - 5.2) ** 2) / (2 * 1.5**2)), rtol=1e-15)
    assert np.isnan(out[5:]).all()  # only hi - lo + 1 entries written
    mat = np.zeros((5, 5))
    upper = tuple(float(v) for v in range(15))
    _store_symmetric(mat, upper)
    assert np.array_equal(mat, mat.T)
    assert mat[0].tolist() == [0, 1, 2, 3, 4] and mat[1, 1:].tolist() == [5, 6, 7, 8] and mat[4, 4] == 14
