"""The hidden Markov model of polar states (dynamics/hmm.py) against simulated chains whose
transitions are known, and against frame-by-frame thresholding at low dose."""

import numpy as np
import pytest

from latticegenome.dynamics.hmm import fit_polar_hmm
from latticegenome.dynamics.series import transitions

P = np.array([[0.9, 0.1], [0.05, 0.95]])  # per-frame transition probabilities
MU = np.array([-10.0, 10.0])  # pm


def _chains(n_frames, n_cells, rng, p=P):
    states = np.empty((n_frames, n_cells), int)
    states[0] = rng.random(n_cells) < 0.5
    for t in range(1, n_frames):
        stay = rng.random(n_cells) < p[states[t - 1], states[t - 1]]
        states[t] = np.where(stay, states[t - 1], 1 - states[t - 1])
    return states


def _true_counts(states):
    a, b = states[:-1].ravel(), states[1:].ravel()
    return np.array([[np.sum((a == i) & (b == j)) for j in (0, 1)] for i in (0, 1)])


def _thresholded(y, err, sigmas=2.0):
    return np.where(y > sigmas * err, 1, np.where(y < -sigmas * err, 0, -1))


@pytest.mark.parametrize("error_pm", [3.0, 8.0])
def test_transitions_are_recovered_where_thresholding_fails(error_pm):
    rng = np.random.default_rng(int(error_pm))
    states = _chains(20, 300, rng)
    err = error_pm * rng.uniform(0.8, 1.2, states.shape)  # each value its own error
    y = MU[states] + rng.normal(0, 1, states.shape) * err
    fit = fit_polar_hmm(y, err)
    truth = _true_counts(states)
    switches = truth[0, 1] + truth[1, 0]
    found = fit["counts"][0, 1] + fit["counts"][1, 0]
    assert abs(found - switches) < 3 * np.sqrt(switches), (found, switches)
    np.testing.assert_allclose(fit["transition"], P, atol=0.03)
    np.testing.assert_allclose(fit["mu_pm"], MU, atol=1.0)
    assert fit["tau_pm"] < 1.5 and fit["beats_mixture"] and fit["converged"]
    assert (fit["labels"] == states).mean() > (0.99 if error_pm < 5 else 0.85)
    raw = transitions(_thresholded(y, err), n_classes=2)["counts"]
    if error_pm > 5:  # the errors are 0.8 of the displacement: most labels undetermined
        assert raw[0, 1] + raw[1, 0] < 0.5 * switches
        assert abs(found - switches) < 0.2 * abs(raw[0, 1] + raw[1, 0] - switches)


def test_missing_frames_carry_no_information_and_spread_is_found():
    rng = np.random.default_rng(5)
    states = _chains(15, 200, rng)
    tau = 4.0
    err = np.full(states.shape, 2.0)
    y = MU[states] + rng.normal(0, 1, states.shape) * np.hypot(err, tau)
    y[rng.random(y.shape) < 0.2] = np.nan  # cells not measured in a fifth of the frames
    y[:, :3] = np.nan  # three cells never measured
    fit = fit_polar_hmm(y, err)
    assert fit["tau_pm"] == pytest.approx(tau, abs=0.6)
    assert (fit["labels"][:, :3] == -1).all() and np.isnan(fit["confidence"][:, :3]).all()
    seen = fit["labels"][:, 3:]
    assert (seen == states[:, 3:]).mean() > 0.97
    np.testing.assert_allclose(fit["transition"], P, atol=0.04)


def test_states_without_memory_are_not_taken_for_a_markov_chain():
    rng = np.random.default_rng(9)
    states = (rng.random((20, 300)) < 0.5).astype(int)  # every frame drawn afresh
    err = np.full(states.shape, 4.0)
    y = MU[states] + rng.normal(0, 1, states.shape) * err
    fit = fit_polar_hmm(y, err)
    assert not fit["beats_mixture"]
    np.testing.assert_allclose(fit["transition"], 0.5, atol=0.05)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one shape"):
        fit_polar_hmm(np.zeros((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="two or more"):
        fit_polar_hmm(np.zeros((1, 4)), np.ones((1, 4)))
    with pytest.raises(ValueError, match="four measured"):
        fit_polar_hmm(np.full((3, 4), np.nan), np.ones((3, 4)))
    with pytest.raises(ValueError, match="n_states"):
        fit_polar_hmm(np.zeros((3, 4)), np.ones((3, 4)), n_states=1)
    y = np.r_[np.full(10, -10.0), np.full(10, 10.0)].reshape(4, 5)
    fit = fit_polar_hmm(y, np.where(np.arange(20).reshape(4, 5) == 0, np.nan, 1.0))
    assert fit["labels"][0, 0] in (0, 1)  # a value without an error is left out, not fatal


@pytest.mark.slow
def test_a_low_dose_series_wall_is_counted_by_the_hmm_not_by_thresholds():
    """A simulated series at 2,500 e/A^2 per frame (B displacement errors ~5 pm for a 10 pm
    polarisation): frame-by-frame thresholds leave most cells undetermined and count a
    fraction of the cells the wall sweeps; the HMM counts them. At 1,000 e/A^2 the frames
    still give one cell per site (a noise maximum once doubled a site)."""
    from latticegenome.dynamics.series import cell_series, class_matrix, pivot
    from latticegenome.dynamics.simulate import simulate_series
    from latticegenome.dynamics.track import polar_states, track_series

    for dose in (2500.0, 1000.0):
        frames, truth = simulate_series(12, (256, 256), dose_per_frame_e_per_A2=dose, rng=1,
                                        loss_per_dose=0)
        res = track_series(list(frames), 20.0, {"spacing_pm": 390.5})
        cells = cell_series(res["frames"], res["meta"])  # raised on a repeated cell id
        if dose < 2000:
            continue
        rows = len(np.unique(np.asarray(cells["v"])[np.asarray(cells["frame"]) == 0]))
        swept = abs(truth["wall_cells"][-1] - truth["wall_cells"][0]) * rows
        _, lab = class_matrix({**cells, "class": polar_states(cells)}, n_frames=12)
        raw = transitions(lab, n_classes=2)["counts"]
        _, y = pivot(cells, "dy_pm", key="cell_id", n_frames=12)
        _, s = pivot(cells, "dy_err_pm", key="cell_id", n_frames=12)
        fit = fit_polar_hmm(y, s)
        forward = max(fit["counts"][0, 1], fit["counts"][1, 0])
        assert max(raw[0, 1], raw[1, 0]) < 0.3 * swept
        assert abs(forward - swept) <= 3 * np.sqrt(swept) + 0.1 * swept, (forward, swept)
        assert min(fit["counts"][0, 1], fit["counts"][1, 0]) < 2


@pytest.mark.slow
def test_the_series_outputs_carry_the_hmm_and_flag_undetermined_states(tmp_path, caplog):
    from latticegenome.dynamics.series import read_dynamics
    from latticegenome.dynamics.simulate import simulate_series
    from latticegenome.dynamics.track import track_series, write_track_outputs

    frames, truth = simulate_series(8, (192, 192), dose_per_frame_e_per_A2=2500, rng=2,
                                    loss_per_dose=0)
    res = track_series(list(frames), 20.0, {"spacing_pm": 390.5}, source="low.tif")
    with caplog.at_level("WARNING"):
        write_track_outputs(res, h5=tmp_path / "d.h5")
    assert "undetermined" in caplog.text and "low.tif" in caplog.text
    s = read_dynamics(tmp_path / "d.h5")["summaries"]
    assert s["polar_transitions"]["undetermined_fraction"] > 0.2
    hmm = s["polar_hmm"]
    assert np.asarray(hmm["counts"]).shape == (2, 2)
    assert np.asarray(hmm["mu_pm"])[0] < -5 and np.asarray(hmm["mu_pm"])[1] > 5
