"""The registration's own noise floor (#19): each frame's fitted field carries the
position noise of both frames' columns; it is reported per frame (``field_error_px``)
and agrees with the field's real error against the truth, at high and low dose; above
0.05 px a warning names the frames."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from latticegenome.columns.finder import find_columns
from latticegenome.dynamics.registration import (
    FIELD_ERROR_WARN_PX,
    apply_registration,
    field_error,
    register_lattice,
    register_rigid,
)
from latticegenome.dynamics.simulate import simulate_series


def _errors(dose, n_frames=6, seed=11):
    frames, truth = simulate_series(n_frames, (192, 192), rng=seed,
                                    dose_per_frame_e_per_A2=dose, loss_per_dose=0.0)
    cols = [find_columns(f, spacing_px=truth["a0_px"]).as_dict() for f in frames]
    reg = register_lattice(cols, rigid=register_rigid(frames), source="series.tif")
    a = truth["site"] == "A"
    real = []
    for k in range(1, n_frames):
        v = a & truth["present"][k] & truth["in_field"][k]
        xr, yr = apply_registration(truth["x"][k, v], truth["y"][k, v], reg, k)
        real.append(np.sqrt(np.mean((xr - truth["x_ref"][k, v]) ** 2
                                    + (yr - truth["y_ref"][k, v]) ** 2)))
    return np.asarray(real), reg


def test_field_error_is_the_least_squares_error_of_a_straight_line(rng):
    """A 1-D check against the textbook formula: a line fitted to n points with noise s
    per coordinate has an error variance s^2 (1/n + (u - ubar)^2 / Suu) at u."""
    n, s = 200, 0.3
    u = np.linspace(-1, 1, n)
    d = np.column_stack([np.ones(n), u])
    resid = np.hypot(*rng.normal(0, s, (2, n)))  # 2-D residual distances
    rms, top = field_error(d, resid)
    lev = 1 / n + u**2 / np.sum(u**2)
    s2 = np.sum(resid**2) / (2 * (n - 2))
    assert rms == pytest.approx(np.sqrt(np.mean(2 * s2 * lev)), rel=1e-9)
    assert top == pytest.approx(np.sqrt(2 * s2 * lev.max()), rel=1e-9)
    assert 0.85 < rms / (s * np.sqrt(2 * 2 / n)) < 1.15  # and s is recovered
    assert np.isnan(field_error(d[:2], resid[:2])[0])


@pytest.mark.parametrize("dose", [2.5e4, 1.5e3])
def test_reported_field_error_matches_the_real_error(dose, caplog):
    """Predicted against true registration error, 5 frames: within a factor 1.6 each and
    1.3 on the mean square; at 1,500 e/A^2 per frame it exceeds 0.05 px and is warned."""
    with caplog.at_level(logging.WARNING, logger="latticegenome.dynamics.registration"):
        real, reg = _errors(dose)
    pred = reg["field_error_px"][1:]
    assert np.all(np.isfinite(pred)) and reg["field_error_px"][0] == 0.0
    assert np.all(reg["field_error_max_px"][1:] >= pred)
    ratio = real / pred
    assert np.all((ratio > 1 / 1.6) & (ratio < 1.6)), (real, pred)
    assert 1 / 1.3 < np.sqrt(np.mean(real**2) / np.mean(pred**2)) < 1.3, (real, pred)
    warned = [r for r in caplog.records if "registration of" in r.getMessage()]
    if dose < 2e3:
        assert np.median(pred) > FIELD_ERROR_WARN_PX
        assert warned and "series.tif" in warned[0].getMessage()
    else:
        assert np.all(pred < FIELD_ERROR_WARN_PX) and not warned
