"""Per-frame time and dose of an image series from its files' metadata, a configured CSV
winning for the fields it has; where each field came from is in the provenance."""

import logging

import numpy as np
import pytest

from latticegenome.columns.readers import Image
from latticegenome.dynamics.framemeta import (
    ELEMENTARY_CHARGE_C,
    combine_frame_meta,
    frame_meta_from_images,
    series_frame_meta,
)


def _images(times=None, *, currents=None, dwells=None, px=20.0, paths=None):
    """Frames (8 x 8 px) with the given metadata; None leaves a key out."""
    n = len(times if times is not None else currents)
    out = []
    for k in range(n):
        meta = {}
        for key, values in (("acquisition_time", times), ("beam_current_nA", currents),
                            ("dwell_time_us", dwells)):
            if values is not None and values[k] is not None:
                meta[key] = values[k]
        path = paths[k] if paths else f"frame_{k}.hspy"
        out.append(Image(np.ones((8, 8)), px, "file", path, None if not paths else k, meta))
    return out


def test_strictly_increasing_times_give_seconds_since_the_first_frame():
    times = ["2024-05-01T23:59:58.500000+00:00", "2024-05-02T00:00:01+00:00",
             "2024-05-02T00:00:03.750000+00:00", "2024-05-02T00:01:00+00:00"]
    meta, why = frame_meta_from_images(_images(times))
    np.testing.assert_array_equal(meta["time_s"], [0.0, 2.5, 5.25, 61.5])
    assert why["time_s"] == "the acquisition times of 4 frames"
    assert "temperature_K" not in meta and "dose_e_per_A2" not in meta
    assert "no temperature" in why["temperature_K"]
    assert why["dose_e_per_A2"] == "frame 0 has no beam current or dwell time"


@pytest.mark.parametrize(("times", "reason"), [
    (["2024-05-01T10:00:00", "2024-05-01T10:00:01", "2024-05-01T10:00:02", None],
     "frame 3 has no acquisition time"),
    (["2024-05-01T10:00:00", "", "2024-05-01T10:00:02"], "frame 1 has no acquisition time"),
    (["2024-05-01T10:00:00", "2024-05-01T10:00:01", "2024-05-01T10:00:01"],
     ("frames 1 and 2 share an acquisition time (2024-05-01T10:00:01) (the metadata's "
      "resolution is 1 s)")),
    (["2024-05-01T10:00:00", "2024-05-01T10:00:05", "2024-05-01T10:00:03"],
     ("times not in frame order: frame 2 (2024-05-01T10:00:03) was acquired before frame 1 "
      "(2024-05-01T10:00:05)")),
    (["2024-05-01", "2024-05-01"], "frame 0 has an acquisition date only (2024-05-01)"),
    (["2024-05-01T10:00:00", "yesterday at 10:00"],
     "frame 1 has an acquisition time that is not ISO 8601 (yesterday at 10:00)"),
    (["2024-05-01T10:00:00+00:00", "2024-05-01T10:00:01"],
     "some acquisition times have a time zone and some not"),
])
def test_times_that_cannot_be_trusted_give_no_time_and_the_reason(times, reason):
    meta, why = frame_meta_from_images(_images(times))
    assert "time_s" not in meta
    assert why["time_s"] == reason


def test_one_stack_file_does_not_repeat_its_time_for_every_frame():
    frames = _images(["2024-05-01T10:00:00"] * 3, currents=[0.05] * 3, dwells=[2.0] * 3,
                     paths=["stack.dm4"] * 3)
    meta, why = frame_meta_from_images(frames)
    assert "time_s" not in meta
    assert why["time_s"] == "one stack file: no per-frame times in its metadata"
    per = np.diff(meta["dose_e_per_A2"], prepend=0.0)
    np.testing.assert_allclose(per, per[0])  # the stack's scan: the same dose every frame
    assert "the same for every frame" in why["dose_e_per_A2"]


def test_dose_accumulates_beam_current_times_dwell_over_the_pixel_area():
    # by hand: 0.05 nA x 2 us = 1e-16 C = 624.15 electrons per pixel of 0.2 A x 0.2 A
    per_frame = 0.05e-9 * 2e-6 / 1.602176634e-19 / 0.04
    assert per_frame == pytest.approx(15603.8, abs=0.1)
    frames = _images(currents=[0.05, 0.1, 0.05], dwells=[2.0, 2.0, 4.0])
    meta, why = frame_meta_from_images(frames)
    np.testing.assert_allclose(meta["dose_e_per_A2"],
                               [per_frame, 3 * per_frame, 5 * per_frame], rtol=1e-12)
    assert ELEMENTARY_CHARGE_C == 1.602176634e-19
    assert why["dose_e_per_A2"].startswith("beam current x dwell time")
    assert "time_s" not in meta and why["time_s"] == "frame 0 has no acquisition time"


@pytest.mark.parametrize(("frames", "reason"), [
    (_images(currents=[0.05, None, 0.05], dwells=[2.0, 2.0, 2.0]), "frame 1 has no beam current"),
    (_images(currents=[0.05, 0.05], dwells=[2.0, "n/a"]), "frame 1 has no dwell time"),
    (_images(currents=[0.05, 0.05], dwells=[2.0, 0.0]), "frame 1 has no dwell time"),
    (_images(currents=[0.05, 0.05], dwells=[2.0, 2.0], px=float("nan")),
     "frame 0 has no pixel size"),
])
def test_a_frame_without_current_or_dwell_gives_no_dose(frames, reason):
    meta, why = frame_meta_from_images(frames)
    assert "dose_e_per_A2" not in meta and why["dose_e_per_A2"] == reason


def test_an_unreadable_frame_has_no_time_and_stops_the_dose():
    frames = _images(["2024-05-01T10:00:00", None, "2024-05-01T10:00:04"],
                     currents=[0.05] * 3, dwells=[2.0] * 3)
    frames[1] = "frame_1.hspy: not a readable HyperSpy file (OSError)"
    meta, why = frame_meta_from_images(frames)
    np.testing.assert_array_equal(meta["time_s"], [0.0, np.nan, 4.0])  # frame 1 is set aside
    assert "1 unreadable frame(s) have none" in why["time_s"]
    assert "dose_e_per_A2" not in meta
    assert why["dose_e_per_A2"].startswith("frame 1 could not be read")


def test_the_csv_wins_for_its_fields_and_the_metadata_fills_the_rest(tmp_path, caplog):
    csv = tmp_path / "frames.csv"
    csv.write_text("frame,time_s,temperature_K\n0,10,300\n1,12.2,310\n2,14.1,320\n")
    frames = _images(["2024-05-01T10:00:00", "2024-05-01T10:00:02", "2024-05-01T10:00:04"],
                     currents=[0.05] * 3, dwells=[2.0] * 3)
    with caplog.at_level(logging.WARNING, logger="latticegenome.dynamics.track"):
        meta, record = series_frame_meta(frames, csv, source="heat (3 files)")
    assert not caplog.records  # 0.2 s apart: within 1 s + 1 %
    np.testing.assert_array_equal(meta["time_s"], [10.0, 12.2, 14.1])  # the CSV's, as given
    np.testing.assert_array_equal(meta["temperature_K"], [300.0, 310.0, 320.0])
    assert meta["dose_e_per_A2"][2] == pytest.approx(3 * 15603.77, rel=1e-5)
    assert record["frame_meta_source"] == {"time_s": "csv", "temperature_K": "csv",
                                           "dose_e_per_A2": "metadata"}
    assert record["frame_meta_reason"]["time_s"] == ("the configured frames CSV "
                                                     "(the metadata's agree)")


def test_times_that_disagree_are_warned_of_naming_the_series(caplog):
    found, reasons = frame_meta_from_images(
        _images(["2024-05-01T10:00:00", "2024-05-01T10:00:02", "2024-05-01T10:01:40"]))
    csv = {"time_s": [0.0, 2.0, 4.0]}
    with caplog.at_level(logging.WARNING, logger="latticegenome.dynamics.track"):
        meta, record = combine_frame_meta(csv, found, reasons, source="run_7.dm4")
    (warning,) = caplog.records
    assert "run_7.dm4" in warning.getMessage() and "disagree" in warning.getMessage()
    assert "frame 2 is at 4 s in the CSV and 100 s in the metadata" in warning.getMessage()
    np.testing.assert_array_equal(meta["time_s"], [0.0, 2.0, 4.0])  # the CSV still wins
    assert record["frame_meta_source"]["time_s"] == "csv"
    assert "disagree" in record["frame_meta_reason"]["time_s"]
    assert record["frame_meta_source"]["dose_e_per_A2"] == "none"
    assert record["frame_meta_reason"]["dose_e_per_A2"].startswith("not in the frames CSV; frame 0")


def test_without_csv_or_metadata_every_field_is_none_and_the_log_says_per_frame(caplog):
    with caplog.at_level(logging.WARNING, logger="latticegenome.dynamics.track"):
        meta, record = series_frame_meta(_images([None, None]), source="plain")
    assert meta == {}
    assert set(record["frame_meta_source"].values()) == {"none"}
    assert "plain" in caplog.text and "per frame" in caplog.text


# --- end to end: frame files whose format carries the time, as the track rule reads them ---

def _write_hspy(path, frame, *, date, time, current_nA, dwell_s, px_nm=0.02):
    """One frame as a HyperSpy file (RosettaSciIO's writer): General.date/time, the TEM's
    beam current (nA) and the HAADF detector's dwell time (s), axes in nm."""
    from rsciio.hspy import file_writer

    axes = [{"name": n, "size": s, "scale": px_nm, "offset": 0.0, "units": "nm",
             "navigate": False} for n, s in zip("yx", frame.shape, strict=True)]
    file_writer(str(path), {
        "data": frame.astype("float32"), "axes": axes,
        "metadata": {"General": {"title": "HAADF", "date": date, "time": time, "time_zone": "UTC"},
                     "Signal": {"signal_type": ""},
                     "Acquisition_instrument": {"TEM": {
                         "beam_current": current_nA, "beam_energy": 300.0,
                         "Detector": {"HAADF": {"dwell_time": dwell_s}}}}},
        "original_metadata": {}, "attributes": {"_lazy": False}, "tmp_parameters": {},
        "package_info": {"name": "latticegenome-tests", "version": "0"},
        "learning_results": {}, "models": {}})


@pytest.mark.slow
def test_a_series_of_files_gets_its_times_and_dose_from_their_metadata(tmp_path):
    """Frame files named out of time order: ordered by their acquisition times, followed,
    and the cells of dynamics.h5 carry the metadata's times (s, sub-second) and doses."""
    from latticegenome.core.settings import AnalysisSettings
    from latticegenome.dynamics.series import read_dynamics
    from latticegenome.dynamics.simulate import simulate_series
    from latticegenome.dynamics.framemeta import read_series_frames
    from latticegenome.dynamics.track import order_frames, track_series, write_track_outputs

    stack, _ = simulate_series(4, (160, 160), rng=7)
    names = ["c.hspy", "a.hspy", "d.hspy", "b.hspy"]  # frame k is names[k]
    clock = ["23:59:59.500", "00:00:02", "00:00:04.500", "00:00:07.250"]  # across midnight
    days = ["2024-05-01", "2024-05-02", "2024-05-02", "2024-05-02"]
    for k, name in enumerate(names):
        _write_hspy(tmp_path / name, stack[k], date=days[k], time=clock[k],
                    current_nA=0.05, dwell_s=2e-6 * (k + 1))
    settings = AnalysisSettings.of({"pixel_size_pm": 20.0})
    files = order_frames(sorted(tmp_path.glob("*.hspy")), "time", settings=settings)
    assert [p.rsplit("/", 1)[-1] for p in files] == names
    frames = read_series_frames(files, settings, True)
    meta, record = series_frame_meta(frames, None, source="hspy series")
    assert record["frame_meta_source"] == {"time_s": "metadata", "temperature_K": "none",
                                           "dose_e_per_A2": "metadata"}
    result = track_series([f.data for f in frames], frames[0].pixel_size_pm, source="hspy series",
                          meta=meta)
    write_track_outputs(result, h5=tmp_path / "dynamics.h5", provenance={"params": record})
    d = read_dynamics(tmp_path / "dynamics.h5")
    cells = d["cells"]
    want_t = {0: 0.0, 1: 2.5, 2: 5.0, 3: 7.75}
    per = 0.05e-9 * 2e-6 / 1.602176634e-19 / 0.04  # e/A^2 of frame 0 (dwell 2 us)
    want_dose = {k: per * (k + 1) * (k + 2) / 2 for k in range(4)}  # dwell grows by 2 us a frame
    for k in range(4):
        rows = np.asarray(cells["frame"]) == k
        assert rows.any()
        np.testing.assert_allclose(np.asarray(cells["time_s"])[rows], want_t[k], rtol=0, atol=1e-9)
        np.testing.assert_allclose(np.asarray(cells["dose_e_per_A2"])[rows], want_dose[k],
                                   rtol=1e-6)
    assert d["provenance"]["params"]["frame_meta_source"]["time_s"] == "metadata"
    assert "4 frames" in d["provenance"]["params"]["frame_meta_reason"]["time_s"]


def test_a_stack_file_read_as_the_track_rule_reads_it_has_no_per_frame_time(tmp_path):
    """The simulated TIFF stack (one metadata for the file): frames, no times, the reason."""
    from latticegenome.core.settings import AnalysisSettings
    from latticegenome.dynamics.simulate import write_series
    from latticegenome.dynamics.framemeta import read_series_frames

    made = write_series(tmp_path, n_frames=3, size=64)
    frames = read_series_frames([str(made["tif"])], AnalysisSettings(), False)
    assert len(frames) == 3 and all(f.path == str(made["tif"]) for f in frames)
    _, record = series_frame_meta(frames, made["frames_csv"], source="series.tif")
    assert record["frame_meta_source"]["time_s"] == "csv"
    assert record["frame_meta_reason"]["time_s"] == ("the configured frames CSV (none in the "
                                                     "metadata: one stack file: no per-frame "
                                                     "times in its metadata)")
    _, why = frame_meta_from_images(frames)
    assert why["time_s"] == "one stack file: no per-frame times in its metadata"


def test_dm_probe_current_and_velox_screen_current_are_read_as_beam_current():
    """DM ``Microscope Info.Probe Current (nA)`` (nA) and Velox
    ``Optics.LastMeasuredScreenCurrent`` (A) give ``beam_current_nA``; a zero or a
    word is left out (no dose is better than a wrong one)."""
    from latticegenome.columns.readers import _dm_instrument, _velox_instrument

    def dm(info):
        return _dm_instrument({"ImageList": {"TagGroup0": {"ImageTags": {
            "Microscope Info": info, "DigiScan": {"Sample Time": 4.0}}}}})

    md = dm({"Voltage": 200000.0, "Probe Current (nA)": 0.035})
    assert md["beam_current_nA"] == pytest.approx(0.035) and md["dwell_time_us"] == 4.0
    assert "beam_current_nA" not in dm({"Probe Current (nA)": 0.0})
    assert "beam_current_nA" not in dm({"Probe Current (nA)": "n/a"})
    v = _velox_instrument({"Optics": {"LastMeasuredScreenCurrent": "3.5e-11"},
                           "Scan": {"DwellTime": "2e-06"}})
    assert v["beam_current_nA"] == pytest.approx(0.035) and v["dwell_time_us"] == pytest.approx(2)
    assert "beam_current_nA" not in _velox_instrument({"Optics": {}, "Scan": {}})


@pytest.mark.slow
def test_track_command_takes_times_and_dose_from_hyperspy_frame_files(tmp_path):
    """``latticegenome track f0.hspy f1.hspy ...`` without --frames-csv: the times and
    doses in dynamics.h5 are the files' (and its provenance says so)."""
    from latticegenome.cli import main
    from latticegenome.dynamics.series import read_dynamics
    from latticegenome.dynamics.simulate import simulate_series

    stack, _ = simulate_series(3, (160, 160), rng=3)
    paths = [tmp_path / f"f{k}.hspy" for k in range(3)]
    for k, frame in enumerate(stack):
        _write_hspy(paths[k], frame, date="2024-05-01", time=f"10:00:{10 * k:02d}",
                    current_nA=0.05, dwell_s=2e-6)
    h5 = tmp_path / "d.h5"
    assert main(["track", *map(str, paths), "--csv", str(tmp_path / "t.csv"),
                 "--h5", str(h5)]) == 0
    d = read_dynamics(h5)
    src = d["provenance"]["frame_meta_source"]  # the command's provenance is flat
    assert src["time_s"] == "metadata" and src["dose_e_per_A2"] == "metadata", src
    cells = d["cells"]
    per = 0.05e-9 * 2e-6 / ELEMENTARY_CHARGE_C / 0.04  # e/A^2 per frame, 20 pm pixels
    for k in range(3):
        rows = np.asarray(cells["frame"]) == k
        np.testing.assert_allclose(np.asarray(cells["time_s"])[rows], 10.0 * k)
        np.testing.assert_allclose(np.asarray(cells["dose_e_per_A2"])[rows], per * (k + 1),
                                   rtol=1e-6)
