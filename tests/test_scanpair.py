"""Scan-distortion correction of a frame pair with orthogonal fast scans
(latticegenome.columns.scanpair, ``latticegenome descan``).

The frames are simulated by scanning a perovskite-like lattice of Gaussian
columns (A at the corners, B at the cell centres, 3 % vacancies and a smooth
brightness variation so that the field is not perfectly periodic) line by line:
every scan line is displaced by a linear drift plus a sinusoidal jitter, then
Poisson noise is drawn.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

import latticegenome as lg
from latticegenome.columns.model import amplitude_for_counts, render_columns
from latticegenome.columns.scanpair import (
    check_pair,
    correct_orthogonal_pair,
    masked_shift,
    scan_columns,
    to_common_orientation,
)
from latticegenome.columns.simulate import square_lattice_sites

SPACING = 16.0  # A-A distance of the truth, px
ANGLE = 3.0  # lattice rotation, degrees
DRIFT_0 = (0.012, 0.018)  # px per line
DRIFT_90 = (0.010, 0.020)


def _offsets(n, drift, jitter, phase, start=(0.0, 0.0)):
    t = np.arange(n, dtype=float)
    o = np.outer(t, drift) + np.asarray(start)
    o[:, 0] += jitter * np.sin(2 * np.pi * t / 57 + phase[0])
    o[:, 1] += jitter * np.sin(2 * np.pi * t / 71 + phase[1])
    return o


def scanned_pair(n=256, drift_0=DRIFT_0, drift_90=DRIFT_90, jitter=0.5, counts=5655.0,
                 seed=0, sigma=2.5, background=20.0, vacancies=0.03):
    """Two noisy frames of one field (image_90 in image_0's orientation, its lines
    recorded left to right after image_0) and their true line offsets (px)."""
    rng = np.random.default_rng(seed)
    pa, pb, _ = square_lattice_sites((n, n), SPACING, ANGLE, rng.uniform(0, SPACING, 2))
    x, y = np.r_[pa[:, 0], pb[:, 0]], np.r_[pa[:, 1], pb[:, 1]]
    h = amplitude_for_counts(counts, sigma)
    amp = np.r_[np.full(len(pa), h), np.full(len(pb), 0.4 * h)]
    amp = amp * (rng.uniform(size=amp.size) > vacancies)
    bump = np.exp(-((x - 0.3 * n) ** 2 + (y - 0.6 * n) ** 2) / (2 * (0.2 * n) ** 2))
    amp = amp * (1 + 0.3 * bump)
    o0 = _offsets(n, drift_0, jitter, rng.uniform(0, 2 * np.pi, 2))
    o90 = _offsets(n, drift_90, jitter, rng.uniform(0, 2 * np.pi, 2), start=np.multiply(drift_0, n))
    f0 = scan_columns((n, n), x, y, amp, sigma, background, o0, lines="rows")
    f90 = scan_columns((n, n), x, y, amp, sigma, background, o90, lines="cols")
    return rng.poisson(f0).astype(float), rng.poisson(f90).astype(float), o0, o90


def line_offset_error(res, o0, o90) -> float:
    """RMS length (px) of the per-line offset error over both frames' measured
    lines (those inside the common field of view), one common translation (the
    gauge of the problem) removed."""
    e = np.vstack([(res.offsets_0 - o0)[res.measured_0], (res.offsets_90 - o90)[res.measured_90]])
    e -= e.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(e**2, axis=1))))


def lattice_vectors(image, mask=None, pixel_size_pm=20.0):
    """|a1|, |a2| (px) and the angle between them (degrees): a least-squares
    fit of the A columns found by :func:`latticegenome.find_columns` to their
    lattice indices (those inside ``mask`` only)."""
    cols = lg.find_columns(image, pixel_size_pm=pixel_size_pm).columns
    a = np.asarray(cols.site) == "A"
    x, y, i, j = cols.x[a], cols.y[a], cols.i[a], cols.j[a]
    if mask is not None:
        r = np.clip(np.round(y).astype(int), 0, image.shape[0] - 1)
        c = np.clip(np.round(x).astype(int), 0, image.shape[1] - 1)
        keep = mask[r, c]
        x, y, i, j = x[keep], y[keep], i[keep], j[keep]
    design = np.column_stack([np.ones_like(x), i, j])
    px = np.linalg.lstsq(design, x, rcond=None)[0]
    py = np.linalg.lstsq(design, y, rcond=None)[0]
    a1, a2 = np.array([px[1], py[1]]), np.array([px[2], py[2]])
    cosang = abs(a1 @ a2) / np.linalg.norm(a1) / np.linalg.norm(a2)
    return np.linalg.norm(a1), np.linalg.norm(a2), float(np.degrees(np.arccos(cosang)))


def lattice_errors(image, mask=None):
    """Largest relative error of |a1|, |a2| (fraction) and angle error (degrees)."""
    n1, n2, ang = lattice_vectors(image, mask)
    return max(abs(n1 / SPACING - 1), abs(n2 / SPACING - 1)), abs(ang - 90.0)


def inner(coverage, margin=8):
    from scipy import ndimage

    return ndimage.binary_erosion(coverage, iterations=margin)


@pytest.fixture(scope="module")
def pair():
    return scanned_pair(seed=7)


@pytest.fixture(scope="module")
def corrected(pair):
    f0, f90, _, _ = pair
    return correct_orthogonal_pair(f0, f90)


def test_uncorrected_frames_are_distorted(pair):
    f0, f90, _, _ = pair
    for frame in (f0, f90):
        length, angle = lattice_errors(frame)
        assert length > 0.01  # ~1.8 % stretch from the slow-scan drift
        assert angle > 0.4  # ~1 degree shear


def test_corrected_lattice_matches_truth(corrected):
    length, angle = lattice_errors(corrected.average, inner(corrected.coverage))
    assert length < 0.003, length
    assert angle < 0.15, angle


def test_line_offsets_and_drift_recovered(pair, corrected):
    _, _, o0, o90 = pair
    assert corrected.measured_0.mean() > 0.9 and corrected.measured_90.mean() > 0.9
    assert line_offset_error(corrected, o0, o90) <= 0.2
    # the fitted linear drift (the jitter's own trend included) per frame
    t = np.arange(len(o0))
    assert np.allclose(corrected.drift_0, np.polyfit(t, o0, 1)[0], atol=0.0015)
    assert np.allclose(corrected.drift_90, np.polyfit(t, o90, 1)[0], atol=0.0015)
    assert corrected.reverse_90 is False


def test_residual_falls(corrected):
    assert corrected.residual_raw > 0.8  # the raw frames hardly correlate
    assert corrected.residual < corrected.residual_linear < 0.5 * corrected.residual_raw
    assert 0.5 < corrected.coverage.mean() <= 1.0
    s = corrected.summary()
    assert len(s["offsets_0_xy_px"]) == 256 and s["residual"] == corrected.residual
    json.dumps(s)


def test_raw_90_frame_with_rotation_gives_the_same_result(pair, corrected):
    f0, f90, _, _ = pair
    raw = np.rot90(f90, -3)  # as recorded: np.rot90(raw, 3) brings it back
    res = correct_orthogonal_pair(f0, raw, rotation=3)
    assert np.allclose(res.offsets_0, corrected.offsets_0, atol=1e-6)
    assert np.allclose(res.average, corrected.average, atol=1e-6)


def test_to_common_orientation():
    raw = np.arange(12.0).reshape(3, 4)
    img, reverse = to_common_orientation(raw, 1)
    assert img.shape == (4, 3) and not reverse
    assert img[:, 0].tolist() == raw[0, ::-1].tolist()  # first recorded line first
    img, reverse = to_common_orientation(raw, -1)
    assert reverse and img[:, -1].tolist() == raw[0].tolist()
    with pytest.raises(ValueError, match="rotation must be 1 or 3"):
        to_common_orientation(raw, 2)


def test_bad_inputs_are_named():
    good = np.random.default_rng(0).poisson(10, (64, 64)).astype(float)
    with pytest.raises(ValueError, match=r"same shape, got \(64, 64\) and \(64, 48\)"):
        correct_orthogonal_pair(good, good[:, :48])
    with pytest.raises(ValueError, match="image_0 must be a 2-D image"):
        check_pair(np.ones((2, 64, 64)), good)
    bad = good.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="image_90 holds 1 non-finite"):
        correct_orthogonal_pair(good, bad)
    with pytest.raises(ValueError, match="constant"):
        correct_orthogonal_pair(good, np.ones((64, 64)))
    with pytest.raises(ValueError, match="too small"):
        correct_orthogonal_pair(good[:16, :16], good[:16, :16])
    with pytest.raises(ValueError, match="max_drift"):
        correct_orthogonal_pair(good, good, max_drift=float("nan"))


def test_masked_shift_is_not_biased_to_small_shifts():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(96, 96))
    b = np.roll(a, (11, -17), axis=(0, 1))
    mask = np.ones(a.shape, bool)
    assert masked_shift(a, b, mask, mask).tolist() == [11.0, -17.0]


def test_forward_model_matches_the_column_model():
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 64, 20), rng.uniform(0, 48, 20)
    amp = rng.uniform(50, 100, 20)
    want = render_columns((48, 64), x, y, amp, 2.0, 5.0)
    tol = dict(rtol=0, atol=1e-2)  # render_columns stops at 5 widths (4e-6 of a peak)
    shift = np.tile([0.5, -1.25], (48, 1))
    assert np.allclose(scan_columns((48, 64), x, y, amp, 2.0, 5.0, np.zeros((48, 2))), want, **tol)
    moved = render_columns((48, 64), x - 0.5, y + 1.25, amp, 2.0, 5.0)
    assert not np.allclose(moved, want, **tol)
    assert np.allclose(scan_columns((48, 64), x, y, amp, 2.0, 5.0, shift), moved, **tol)
    cols = scan_columns((48, 64), x, y, amp, 2.0, 5.0, np.tile([0.5, -1.25], (64, 1)), lines="cols")
    assert np.allclose(cols, moved, **tol)


def test_cli_descan(tmp_path, pair, capsys):
    from latticegenome.cli import main

    f0, f90, o0, o90 = pair
    p0, p90, out = tmp_path / "f0.tif", tmp_path / "f90.tif", tmp_path / "out.tif"
    tifffile.imwrite(p0, f0.astype(np.float32))
    tifffile.imwrite(p90, np.rot90(f90, -1).astype(np.float32))  # as recorded
    assert main(["descan", str(p0), str(p90), "-o", str(out), "--rot90", "1"]) == 0
    img = tifffile.imread(out)
    assert img.dtype == np.float32 and img.shape == f0.shape
    side = json.loads((tmp_path / "out.tif.json").read_text())
    assert side["rot90"] == 1 and side["residual"] < side["residual_linear"] < side["residual_raw"]
    assert np.allclose(side["drift_0_px_per_line"], np.polyfit(np.arange(256), o0, 1)[0],
                       atol=0.0015)
    assert "px/line" in capsys.readouterr().out
    # mismatched frames: one line naming the file and both shapes, exit status 2
    tifffile.imwrite(p90, f90[:, :200].astype(np.float32))
    assert main(["descan", str(p0), str(p90), "-o", str(tmp_path / "o2.tif")]) == 2
    err = capsys.readouterr().err
    assert "f90.tif" in err and "(256, 256) and (256, 200)" in err
    assert main(["descan", str(p0), str(p0), "-o", str(p0)]) == 2  # would overwrite an input
