"""Time series of tracked frames (latticegenome.dynamics.series) on synthetic series whose
truth is known: a domain wall moving at a set velocity, a lattice parameter that follows
the temperature ramp, classes drawn from a known transition matrix, columns that fade
and vanish with dose."""

import numpy as np
import pytest

from latticegenome.core.errors import LatticeGenomeError
from latticegenome.core.tables import read_table
from latticegenome.dynamics import series as ds

N_FRAMES, NU, NV = 30, 20, 20
DT_S, T0_K, DT_K, DOSE_STEP = 2.0, 300.0, 10.0, 50.0  # s, K, K per frame, e/A^2 per frame
A0_PM, ALPHA_PM_PER_K, B0_PM = 400.0, 0.01, 395.0
PX_PM = 20.0  # pm per px: 20 px per cell in the registered frame
U_WALL0, V_WALL, WIDTH = 4.3, 0.25, 0.8  # lattice units, lattice units per frame, lattice units
DY0_PM, NOISE_PM, A_NOISE_PM = 10.0, 3.0, 1.0
I0, DOSE_DECAY, DOSE_LOSS = 1000.0, 3000.0, 20000.0  # image units, e/A^2, e/A^2
P_TRUE = np.array([[0.90, 0.07, 0.03], [0.05, 0.90, 0.05], [0.02, 0.08, 0.90]])


def _meta():
    t = np.arange(N_FRAMES)
    return {"time_s": t * DT_S, "temperature_K": T0_K + DT_K * t,
            "dose_e_per_A2": DOSE_STEP * t}


def _cells(rng, t, sharp):
    uu, vv = (g.ravel() for g in np.meshgrid(np.arange(NU), np.arange(NV), indexing="ij"))
    n = uu.size
    temp = T0_K + DT_K * t
    wall = U_WALL0 + V_WALL * t
    centre = uu + 0.5
    profile = (DY0_PM * np.sign(wall - centre) if sharp
               else DY0_PM * np.tanh((wall - centre) / WIDTH))
    order = rng.permutation(n)  # the order of the cells in a frame does not matter
    cells = {
        "x": centre * A0_PM / PX_PM, "y": (vv + 0.5) * B0_PM / PX_PM, "i": uu, "j": vv,
        "u": uu, "v": vv,
        "a_pm": A0_PM + ALPHA_PM_PER_K * (temp - T0_K) + rng.normal(0, A_NOISE_PM, n),
        "b_pm": B0_PM + rng.normal(0, A_NOISE_PM, n),
        "dx_pm": rng.normal(0, NOISE_PM, n), "dy_pm": profile + rng.normal(0, NOISE_PM, n),
        "dx_err_pm": np.full(n, NOISE_PM), "dy_err_pm": np.full(n, NOISE_PM),
        "intensity_ratio": np.full(n, 0.5), "B_detected": np.ones(n, bool),
        "class": (centre < wall).astype(int),  # 1 on the +dy side
    }
    return {k: v[order] for k, v in cells.items()}


def _columns(rng, t, life):
    """A columns on the corners, B in the cells; a column is gone once its dose life is spent."""
    ia, ja = (g.ravel() for g in np.meshgrid(np.arange(NU + 1), np.arange(NV + 1), indexing="ij"))
    ib, jb = (g.ravel() for g in np.meshgrid(np.arange(NU), np.arange(NV), indexing="ij"))
    track = np.r_[ia * (NV + 1) + ja, 10000 + ib * NV + jb]
    site = np.r_[np.full(ia.size, "A"), np.full(ib.size, "B")]
    x = np.r_[ia, ib + 0.5] * A0_PM / PX_PM + rng.normal(0, 0.05, track.size)
    y = np.r_[ja, jb + 0.5] * B0_PM / PX_PM + rng.normal(0, 0.05, track.size)
    dose = DOSE_STEP * t
    inten = I0 * np.exp(-dose / DOSE_DECAY) * (1 + rng.normal(0, 0.02, track.size))
    inten[site == "B"] *= 0.5
    gone = dose >= life
    x[gone & (track % 2 == 0)] = np.nan  # half the lost columns stay in the table as NaN
    keep = ~(gone & (track % 2 == 1))
    cols = {"track": track, "site": site, "x": x, "y": y, "x_err": np.full(track.size, 0.05),
            "y_err": np.full(track.size, 0.05), "x_raw": x + 3.0 * t, "y_raw": y - 1.0 * t,
            "intensity": inten}
    return {k: v[keep] for k, v in cols.items()}


def make_frames(seed=0, sharp=False):
    rng = np.random.default_rng(seed)
    life = rng.exponential(DOSE_LOSS, (NU + 1) * (NV + 1) + NU * NV)
    return [{"columns": _columns(rng, t, life), "cells": _cells(rng, t, sharp)}
            for t in range(N_FRAMES)]


def simulate_labels(p, n_frames, n_cells, rng, missing=0.05):
    """A Markov chain per cell with per-frame transition matrix ``p``; ``missing`` of the
    labels hidden (-1). Returns the observed labels and the counts of observed pairs."""
    k = p.shape[0]
    true = np.zeros((n_frames, n_cells), dtype=int)
    true[0] = rng.integers(0, k, n_cells)
    cum = np.cumsum(p, axis=1)
    for t in range(1, n_frames):
        r = rng.random(n_cells)
        true[t] = (r[:, None] > cum[true[t - 1]]).sum(axis=1)
    seen = true.copy()
    seen[rng.random(seen.shape) < missing] = -1
    counts = np.zeros((k, k), dtype=int)
    for t in range(n_frames - 1):
        both = (seen[t] >= 0) & (seen[t + 1] >= 0)
        np.add.at(counts, (seen[t][both], seen[t + 1][both]), 1)
    return seen, counts


@pytest.fixture(scope="module")
def frames():
    return make_frames()


@pytest.fixture(scope="module")
def cells(frames):
    return ds.cell_series(frames, _meta())


# --- tables -------------------------------------------------------------------------


def test_cell_ids_round_trip_and_range():
    i, j = np.array([-5, 0, 7, 2**19]), np.array([3, -2**19, 0, 11])
    ii, jj = ds.cell_indices(ds.cell_ids(i, j))
    np.testing.assert_array_equal(ii, i)
    np.testing.assert_array_equal(jj, j)
    assert np.unique(ds.cell_ids(*np.meshgrid(np.arange(-3, 4), np.arange(-3, 4)))).size == 49
    with pytest.raises(ValueError, match="out of range"):
        ds.cell_ids([2**20], [0])


def test_long_tables(frames, cells):
    cols = ds.column_series(frames)
    assert set(ds.COLUMN_FIELDS) <= set(cols)
    assert np.all(np.diff(cols["frame"]) >= 0)
    assert len(cols["track"]) == sum(len(f["columns"]["track"]) for f in frames)
    assert cells["frame"].size == N_FRAMES * NU * NV
    # sorted by cell id inside a frame: the same cell on the same row of every frame
    ids = cells["cell_id"].reshape(N_FRAMES, -1)
    assert np.all(ids == ids[0])
    np.testing.assert_array_equal(ids[0], ds.cell_ids(cells["i"][: NU * NV], cells["j"][: NU * NV]))
    np.testing.assert_allclose(cells["temperature_K"][ids.shape[1] * 7], T0_K + 7 * DT_K)
    assert np.isnan(cells["angle_deg"]).all() and cells["class"].max() == 1
    ids, a = ds.pivot(cells, "a_pm", key="cell_id")
    assert a.shape == (N_FRAMES, NU * NV) and np.isfinite(a).all()


# --- wall motion ---------------------------------------------------------------------


def test_wall_velocity_within_5_percent(cells):
    w = ds.wall_motion(cells, axis="u", field="dy_pm")
    v_true = V_WALL / DT_S  # lattice units per s
    print("wall velocity", w["velocity_cells_per_s"], "+-", w["velocity_cells_per_s_err"],
          "true", v_true)
    assert abs(w["velocity_cells_per_s"] - v_true) < 0.05 * v_true
    assert abs(w["velocity_cells_per_s"] - v_true) < 4 * w["velocity_cells_per_s_err"] + 1e-3
    truth = U_WALL0 + V_WALL * np.arange(N_FRAMES)
    assert np.max(np.abs(w["position_cells"] - truth)) < 0.25
    assert w["time_unit"] == "s" and np.all(w["left_sign"] == 1)
    np.testing.assert_allclose(w["spacing_px"], A0_PM / PX_PM, rtol=1e-6)
    assert abs(w["velocity_px_per_s"] - v_true * A0_PM / PX_PM) < 0.05 * v_true * A0_PM / PX_PM
    assert abs(w["velocity_pm_per_s"] - v_true * A0_PM) < 0.05 * v_true * A0_PM
    np.testing.assert_allclose(w["x_px"], w["position_cells"] * A0_PM / PX_PM, atol=1e-9)


def test_wall_from_classes_and_a_sharp_wall(frames):
    v_true = V_WALL / DT_S
    w = ds.wall_motion(frames, _meta(), field="class")
    assert abs(w["velocity_cells_per_s"] - v_true) < 0.05 * v_true
    sharp = ds.wall_motion(make_frames(seed=3, sharp=True), _meta(), field="dy_pm")
    print("class wall", w["velocity_cells_per_s"], "sharp wall", sharp["velocity_cells_per_s"])
    assert abs(sharp["velocity_cells_per_s"] - v_true) < 0.05 * v_true
    no_time = ds.wall_motion(frames, None)
    assert no_time["time_unit"] == "frame"
    assert abs(no_time["velocity_cells_per_s"] - V_WALL) < 0.05 * V_WALL
    flat = [{"cells": {**f["cells"], "dy_pm": np.abs(f["cells"]["dy_pm"]) + 50}} for f in frames]
    assert np.isnan(ds.wall_motion(flat, _meta())["velocity_cells_per_s"])
    with pytest.raises(ValueError, match="axis"):
        ds.wall_motion(frames, _meta(), axis="w")


# --- trends ----------------------------------------------------------------------------


def test_lattice_parameter_against_temperature(cells):
    r = ds.versus(cells, by="temperature_K", field="a_pm")
    temps = T0_K + DT_K * np.arange(N_FRAMES)
    truth = A0_PM + ALPHA_PM_PER_K * (temps - T0_K)
    fitted = r["slope"] * temps + r["intercept"]
    print("alpha", r["slope"], "+-", r["slope_err"], "max dev pm", np.max(np.abs(fitted - truth)))
    assert np.max(np.abs(fitted - truth)) < 0.5
    assert abs(r["slope"] - ALPHA_PM_PER_K) < 4 * r["slope_err"]
    assert abs(r["slope"] - ALPHA_PM_PER_K) < 0.1 * ALPHA_PM_PER_K
    np.testing.assert_allclose(r["x"], temps)
    assert np.all(r["n"] == NU * NV)
    np.testing.assert_allclose(r["std"], A_NOISE_PM, rtol=0.15)
    np.testing.assert_allclose(r["sem"], r["std"] / np.sqrt(NU * NV))
    assert np.max(np.abs(r["mean"] - truth)) < 0.5
    per = ds.versus(cells, by="temperature_K", field="a_pm", per="v")
    assert per["layer_fit"]["layer"].size == NV
    z = (per["layer_fit"]["slope"] - ALPHA_PM_PER_K) / per["layer_fit"]["slope_err"]
    assert np.all(np.abs(z) < 4.5)
    assert per["layers"]["mean"].size == NV * N_FRAMES
    flat = ds.versus(cells, by="dose_e_per_A2", field="b_pm")
    assert abs(flat["slope"]) < 4 * flat["slope_err"]
    with pytest.raises(ValueError, match="no field"):
        ds.versus(cells, by="pressure_Pa")


def test_linear_fit_errors_match_the_scatter():
    rng = np.random.default_rng(7)
    x = np.linspace(0, 10, 50)
    slopes = []
    errs = []
    for _ in range(200):
        y = 2 * x + 1 + rng.normal(0, 0.5, x.size)
        f = ds.linear_fit(x, y, np.full(x.size, 0.5))
        slopes.append(f["slope"])
        errs.append(f["slope_err"])
    assert abs(np.mean(slopes) - 2) < 3 * np.std(slopes) / np.sqrt(200)
    np.testing.assert_allclose(np.std(slopes), np.mean(errs), rtol=0.15)
    assert np.isnan(ds.linear_fit([1.0], [2.0])["slope"])


# --- transitions -----------------------------------------------------------------------


def test_transition_counts_equal_the_simulated_ones(frames):
    rng = np.random.default_rng(11)
    labels, counts = simulate_labels(P_TRUE, N_FRAMES, NU * NV, rng)
    # through the frames: the cells of frame t get the labels of row t (in cell-id order)
    ordered = []
    for t, f in enumerate(frames):
        ids = ds.cell_ids(f["cells"]["i"], f["cells"]["j"])
        rank = np.argsort(np.argsort(ids))
        ordered.append({"cells": f["cells"], "classes": labels[t][rank]})
    series = ds.cell_series(ordered, _meta())
    ids, lab = ds.class_matrix(series)
    np.testing.assert_array_equal(lab, labels)
    meta = _meta()
    tr = ds.transitions(lab, meta["time_s"], meta["temperature_K"])
    np.testing.assert_array_equal(tr["counts"], counts)
    assert tr["counts_per_step"].sum(axis=0).tolist() == counts.tolist()
    off = ~np.eye(3, dtype=bool)
    # rates per s and per K within their Poisson counting error of the true ones
    for unit, step in (("s", DT_S), ("K", DT_K)):
        true = P_TRUE / step
        exposure = tr[f"exposure_{unit}"][:, None]
        expected_err = np.sqrt(true * exposure) / exposure
        z = (tr[f"rates_per_{unit}"] - true)[off] / expected_err[off]
        print(f"rates per {unit}: z =", np.round(z, 2))
        assert np.all(np.abs(z) < 3.5)
        np.testing.assert_allclose(tr[f"rates_err_per_{unit}"][off], expected_err[off], rtol=0.25)
        np.testing.assert_allclose(tr[f"rates_per_{unit}"].sum(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(tr["exposure_s"], tr["n_from"] * DT_S)
    zp = (tr["probability"] - P_TRUE) / np.sqrt(P_TRUE * (1 - P_TRUE) / tr["n_from"][:, None])
    assert np.all(np.abs(zp) < 3.5)
    dwell = tr["dwell"]
    mean_true = 1 / (1 - np.diag(P_TRUE))
    z = (dwell["mle_mean_frames"] - mean_true) / dwell["mle_mean_frames_err"]
    print("dwell (frames)", dwell["mle_mean_frames"], "+-", dwell["mle_mean_frames_err"])
    assert np.all(np.abs(z) < 3.5)
    np.testing.assert_allclose(dwell["mle_mean_s"], dwell["mle_mean_frames"] * DT_S)
    assert dwell["length_frames"].sum() == (lab >= 0).sum()


def test_dwell_times_of_complete_runs():
    rng = np.random.default_rng(5)
    p = np.array([[0.8, 0.2], [0.25, 0.75]])
    labels, _ = simulate_labels(p, 400, 120, rng, missing=0.0)
    tr = ds.transitions(labels, times=np.arange(400) * 0.5)
    d = tr["dwell"]
    mean_true = 1 / (1 - np.diag(p))
    for est in ("mean_frames", "mle_mean_frames"):
        z = (d[est] - mean_true) / d[f"{est}_err"]
        print(est, d[est], "+-", d[f"{est}_err"], "true", mean_true)
        assert np.all(np.abs(z) < 3.5)
    np.testing.assert_allclose(d["mean_s"], d["mean_frames"] * 0.5)
    assert np.all(d["n_complete"] < d["n_runs"])
    assert np.all(np.isnan(tr["rates_per_K"]))


def test_runs_by_hand():
    lab = np.array([[0, 0, 1, 1, 1, -1, 2, 2, 0]]).T
    tr = ds.transitions(lab, times=np.arange(9) * 2.0)
    d = tr["dwell"]
    assert d["class"].tolist() == [0, 1, 2, 0]
    assert d["start"].tolist() == [0, 2, 6, 8]
    assert d["length_frames"].tolist() == [2, 3, 2, 1]
    assert d["length_s"].tolist() == [4.0, 6.0, 4.0, 2.0]
    assert d["left_censored"].tolist() == [True, False, True, False]
    assert d["right_censored"].tolist() == [False, True, False, True]
    assert d["censored"].tolist() == [True, True, True, True]
    expect = np.zeros((3, 3), int)
    expect[0, 0] = expect[0, 1] = expect[2, 2] = expect[2, 0] = 1
    expect[1, 1] = 2
    np.testing.assert_array_equal(tr["counts"], expect)
    np.testing.assert_allclose(tr["rates_per_s"][0, 1], 1 / 4.0)
    assert tr["rates_per_s"][1, 0] == 0 and tr["rates_per_s"][1, 1] == 0
    assert np.isnan(d["mle_mean_frames"][1])  # never seen leaving class 1
    # an unknown frame time: only the runs across it lose their duration, only its step its rate
    gap = ds.transitions(np.array([[0, 1], [1, 1], [0, 0]]), times=[0.0, 1.0, np.nan])
    np.testing.assert_equal(gap["dwell"]["length_s"], [1.0, np.nan, 1.0, np.nan, 1.0])
    np.testing.assert_allclose(gap["rates_per_s"], [[-1.0, 1.0], [0.0, 0.0]])
    assert gap["counts"].tolist() == [[0, 1], [2, 1]]


def test_wall_sweep_counts_are_the_cells_swept(cells):
    ids, lab = ds.class_matrix(cells)
    tr = ds.transitions(lab, times=_meta()["time_s"])
    wall = U_WALL0 + V_WALL * np.arange(N_FRAMES)
    centres = np.arange(NU) + 0.5
    swept = sum(((centres >= wall[t]) & (centres < wall[t + 1])).sum()
                for t in range(N_FRAMES - 1)) * NV
    assert tr["counts"][0, 1] == swept and tr["counts"][1, 0] == 0
    assert tr["counts"].sum() == (N_FRAMES - 1) * NU * NV


# --- beam damage ---------------------------------------------------------------------


def test_beam_damage(frames):
    r = ds.beam_damage(frames, _meta())
    n0 = (NU + 1) * (NV + 1) + NU * NV
    assert r["by"] == "dose_e_per_A2" and r["present"][0] == n0 and r["lost"][0] == 0
    assert np.all(np.diff(r["lost"]) >= 0) and np.all(r["present"] + r["lost"] == n0)
    decay = r["intensity_decay"]
    print("1/e dose of the intensity", decay["scale"], "+-", decay["scale_err"],
          "column loss", r["column_loss"]["scale"], "+-", r["column_loss"]["scale_err"],
          "lost", r["lost"][-1])
    assert abs(decay["scale"] - DOSE_DECAY) < 0.02 * DOSE_DECAY
    loss = r["column_loss"]
    assert abs(loss["scale"] - DOSE_LOSS) < max(4 * loss["scale_err"], 0.1 * DOSE_LOSS)
    assert abs(loss["scale"] - DOSE_LOSS) < 0.3 * DOSE_LOSS
    np.testing.assert_allclose(r["mean_intensity"][0], I0, rtol=0.01)
    assert r["loss_per_unit"] > 0
    by_time = ds.beam_damage(frames, {"time_s": _meta()["time_s"]})
    assert by_time["by"] == "time_s"
    np.testing.assert_allclose(by_time["intensity_decay"]["scale"],
                               decay["scale"] * DT_S / DOSE_STEP, rtol=1e-9)


# --- files ---------------------------------------------------------------------------


def test_h5_round_trip_and_csv(tmp_path, frames, cells):
    cols = ds.column_series(frames)
    _, lab = ds.class_matrix(cells)
    tr = ds.transitions(lab, _meta()["time_s"], _meta()["temperature_K"])
    summaries = {"wall": ds.wall_motion(cells), "a_vs_T": ds.versus(cells, per="v"),
                 "damage": ds.beam_damage(frames, _meta())}
    registration = {"frame": np.arange(N_FRAMES), "shift_x_px": 3.0 * np.arange(N_FRAMES),
                    "shift_y_px": -1.0 * np.arange(N_FRAMES), "method": "rigid+field",
                    "reference_frame": 0}
    prov = {"rule": "dynamics", "inputs": ["séries/f0.tif"], "n": 3}
    out = tmp_path / "results" / "exp" / "dynamics.h5"
    ds.write_dynamics_h5(out, columns=cols, cells=cells, registration=registration,
                         transitions=tr, summaries=summaries, provenance=prov)
    assert sorted(p.name for p in out.parent.iterdir()) == ["dynamics.h5"]
    back = ds.read_dynamics(out)
    np.testing.assert_equal(back["columns"], cols)
    np.testing.assert_equal(back["cells"], cells)
    np.testing.assert_equal(back["registration"], registration)
    np.testing.assert_equal(back["transitions"], tr)
    np.testing.assert_equal(back["summaries"], summaries)
    assert back["provenance"] == prov and back["format_version"] == ds.FORMAT_VERSION
    assert back["units"]["a_pm"] == "pm" and back["units"]["time_s"] == "s"
    assert back["columns"]["site"].dtype.kind == "U"

    csv = tmp_path / "cells.csv"
    ds.write_series_csv(csv, cells)
    rows = read_table(csv)
    assert list(rows[0]) == list(cells) and len(rows) == cells["frame"].size
    assert float(rows[5]["a_pm"]) == pytest.approx(cells["a_pm"][5], rel=1e-5)
    assert rows[0]["angle_deg"] == ""  # NaN as an empty cell
    ds.write_series_csv(tmp_path / "transitions.csv", ds.transition_table(tr))
    trows = read_table(tmp_path / "transitions.csv")
    assert len(trows) == 4 and int(trows[1]["count"]) == tr["counts"][0, 1]
    with pytest.raises(ValueError, match="differ in length"):
        ds.write_series_csv(tmp_path / "bad.csv", {"a": [1, 2], "b": [1]})
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(LatticeGenomeError, match="not a dynamics file"):
        ds.read_dynamics(tmp_path / "junk.h5")


# --- bad input -------------------------------------------------------------------------


def test_bad_frames_name_the_frame(frames):
    bad = [dict(f) for f in frames[:5]]
    bad[3] = {**bad[3], "columns": {**bad[3]["columns"], "x": bad[3]["columns"]["x"][:-1]}}
    with pytest.raises(ValueError, match="frame 3: columns arrays differ in length"):
        ds.column_series(bad)
    bad = [dict(f) for f in frames[:6]]
    bad[5] = {**bad[5], "cells": {**bad[5]["cells"], "dy_pm": bad[5]["cells"]["dy_pm"][:7]}}
    with pytest.raises(ValueError, match="frame 5: cells"):
        ds.cell_series(bad)
    bad = [dict(f) for f in frames[:3]]
    bad[2] = {**bad[2], "classes": np.zeros(3, int)}
    with pytest.raises(ValueError, match="frame 2: 3 classes"):
        ds.cell_series(bad)
    bad = [dict(f) for f in frames[:3]]
    dup = dict(bad[1]["columns"])
    dup["track"] = np.zeros_like(dup["track"])
    bad[1] = {**bad[1], "columns": dup}
    with pytest.raises(ValueError, match="frame 1: columns 'track' repeats"):
        ds.column_series(bad)
    no_id = {k: v for k, v in frames[0]["cells"].items() if k not in ("i", "j")}
    with pytest.raises(ValueError, match="frame 0: cells need"):
        ds.cell_series([{"cells": no_id}])
    with pytest.raises(ValueError, match="frame 0: columns lacks"):
        ds.column_series([{"columns": {"x": [1.0]}}])
    with pytest.raises(ValueError, match="time_s"):
        ds.cell_series(frames[:4], {"time_s": np.arange(3)})
    with pytest.raises(ValueError, match="non-empty list"):
        ds.column_series([])
    with pytest.raises(ValueError, match="labels must be"):
        ds.transitions(np.zeros(5, int))
    with pytest.raises(ValueError, match="times has"):
        ds.transitions(np.zeros((5, 2), int), times=np.arange(4))
