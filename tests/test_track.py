"""An image series through `latticegenome simulate --series` and `latticegenome track`:
registration, tracks, wall velocity and thermal expansion against the simulated truth."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from latticegenome.core.tables import read_table
from latticegenome.dynamics.series import read_dynamics

EXE = str(Path(sys.executable).parent / "latticegenome")
pytestmark = pytest.mark.slow


def _cli(*args, cwd):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    work = tmp_path_factory.mktemp("series")
    sim = _cli("simulate", work, "--series", 10, "--size", 256, cwd=work)
    assert sim.returncode == 0, sim.stderr
    run = _cli("track", work / "series.tif", "--frames-csv", work / "series.frames.csv",
               "--csv", work / "tracks.csv", "--h5", work / "dynamics.h5", cwd=work)
    return work, run


def test_track_writes_one_row_per_column_per_frame(tracked):
    work, run = tracked
    assert run.returncode == 0, run.stderr
    assert "10 of 10 frames tracked" in run.stdout
    rows = read_table(work / "tracks.csv")
    assert list(rows[0])[:9] == ["frame", "track", "site", "x", "y", "x_err", "y_err", "x_raw",
                                 "y_raw"]
    frames = {int(r["frame"]) for r in rows}
    assert frames == set(range(10))
    # registered positions of a column present throughout stay put; its raw ones drift
    by_track = {}
    for r in rows:
        if r["site"] == "A" and int(r["track"]) >= 0:
            by_track.setdefault(int(r["track"]), []).append(r)
    full = [v for v in by_track.values() if len(v) == 10]
    assert len(full) > 50
    spread = np.median([np.ptp([float(r["x"]) for r in v]) for v in full])
    drift = np.median([np.ptp([float(r["x_raw"]) for r in v]) for v in full])
    assert spread < 0.5 and drift > 2.0, (spread, drift)


def test_dynamics_file_recovers_the_simulated_truth(tracked):
    work, _ = tracked
    truth = json.loads((work / "series.truth.json").read_text())
    d = read_dynamics(work / "dynamics.h5")
    assert np.nanmax(d["registration"]["residual_rms_px"]) < 0.1
    dt = np.diff(truth["time_s"]).mean()
    v_true = np.diff(truth["wall_x_px"]).mean() / dt
    wall = d["summaries"]["wall"]
    assert wall["velocity_x_px_per_s"] == pytest.approx(v_true, rel=0.05 + 2 * wall[
        "velocity_x_px_per_s_err"] / abs(v_true))
    fit = d["summaries"]["a_vs_temperature"]
    temps = np.asarray(truth["temperature_K"])
    model = fit["intercept"] + fit["slope"] * temps
    assert np.max(np.abs(model - np.asarray(truth["a_pm"]))) < 0.5  # pm, over the ramp


def test_a_frame_without_a_lattice_is_set_aside(tmp_path):
    sim = _cli("simulate", tmp_path, "--series", 4, "--size", 256, cwd=tmp_path)
    assert sim.returncode == 0, sim.stderr
    with tifffile.TiffFile(tmp_path / "series.tif") as tf:
        stack = tf.asarray()
    stack[2] = 20  # a blank frame (shutter closed)
    tifffile.imwrite(tmp_path / "gap.tif", stack, imagej=True, resolution=(50.0, 50.0),
                     metadata={"unit": "nm", "axes": "TYX"})
    run = _cli("track", tmp_path / "gap.tif", "--csv", tmp_path / "t.csv", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "frame 2 set aside" in run.stderr and "3 of 4 frames tracked" in run.stdout
    assert {int(r["frame"]) for r in read_table(tmp_path / "t.csv")} == {0, 1, 3}


def test_bad_series_are_refused_naming_the_file(tmp_path):
    one = tmp_path / "one.tif"
    sim = _cli("simulate", tmp_path, "--series", 2, "--size", 128, cwd=tmp_path)
    assert sim.returncode == 0, sim.stderr
    with tifffile.TiffFile(tmp_path / "series.tif") as tf:
        frame = tf.asarray()[0]
    tifffile.imwrite(one, frame, imagej=True, resolution=(50.0, 50.0), metadata={"unit": "nm"})
    run = _cli("track", one, "--csv", tmp_path / "t.csv", cwd=tmp_path)
    assert run.returncode == 2 and "one.tif" in run.stderr and "two or more" in run.stderr
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, frame[:100, :100], imagej=True, resolution=(50.0, 50.0),
                     metadata={"unit": "nm"})
    run = _cli("track", one, small, "--csv", tmp_path / "t.csv", cwd=tmp_path)
    assert run.returncode == 2 and "frame 1 has shape (100, 100)" in run.stderr
    assert not (tmp_path / "t.csv").exists()


def _series_workflow(work: Path, name: str, folder: str, series, frames_csv):
    """A real Snakemake run of one series experiment on the facility ``work/facility``."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    config = {"facilities": {"scope": {"backend": "local", "path": str(work / "facility")}},
              "dft": {"enabled": False},
              "experiments": {name: {
                  "facility": "scope", "path": folder, "pattern": "*.tif", "series": series,
                  "pixel_size_pm": 20.0, "series_frames_csv": str(frames_csv),
                  "materials": [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5}]}}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake = str(Path(sys.executable).parent / "snakemake")
    return subprocess.run([snakemake, "--snakefile", str(root / "Snakefile"),
                           f"--directory={work}", f"--configfile={work / 'config.yaml'}",
                           "--profile", str(root / "profiles" / "local"), "--cores", "2"],
                          capture_output=True, text=True, cwd=work, timeout=600)


@pytest.mark.workflow
def test_a_series_experiment_through_the_workflow(tmp_path):
    """series: true: each file followed frame by frame; a one-frame file is set aside with its
    reason, the other series goes on; table, figures (poster, animation) and provenance."""
    import shutil

    from latticegenome.dynamics.simulate import write_series

    fac = tmp_path / "facility" / "heat"
    fac.mkdir(parents=True)
    made = write_series(tmp_path / "sim", n_frames=6, size=256)
    shutil.copy(made["tif"], fac / "run_1.tif")
    with tifffile.TiffFile(made["tif"]) as tf:
        tifffile.imwrite(fac / "single.tif", tf.asarray()[0], imagej=True,
                         resolution=(50.0, 50.0), metadata={"unit": "nm"})
    run = _series_workflow(tmp_path, "heat", "heat", True, made["frames_csv"])
    assert run.returncode == 0, run.stderr[-3000:]
    res = tmp_path / "results" / "heat"
    rows = {r["series"]: r for r in read_table(res / "dynamics.tsv")}
    assert rows["run_1.tif"]["status"] == "ok" and int(rows["run_1.tif"]["frames_tracked"]) == 6
    assert float(rows["run_1.tif"]["registration_residual_px"]) < 0.1
    assert rows["single.tif"]["status"] == "rejected"
    prov = read_dynamics(res / "dynamics" / "run_1.tif.h5")["provenance"]["params"]
    assert prov["frame_meta_source"]["time_s"] == "csv"
    assert "one stack file" in prov["frame_meta_reason"]["time_s"]  # the metadata has none
    assert "a series needs two or more" in rows["single.tif"]["reason"]
    figs = {p.name for p in (res / "figures" / "series").iterdir()}
    assert {"run_1_frames.gif", "run_1_poster.png", "run_1_summary.png"} <= figs
    assert (res / "figures" / "series" / "run_1_frames.gif").read_bytes()[:6] == b"GIF89a"
    assert not (res / "statistics.h5").exists()  # no per-image statistics for a series
    chain = subprocess.run([EXE, "provenance", str(res / "dynamics.tsv")], capture_output=True,
                           text=True, cwd=tmp_path)
    assert chain.returncode == 0 and "run_1.tif" in chain.stdout, chain.stdout + chain.stderr


def test_polar_transitions_follow_the_wall(tracked):
    """Cells the wall sweeps switch polar state once, in one direction: the transition count
    is the number of cells swept (wall travel x rows of cells), within its counting error."""
    work, _ = tracked
    truth = json.loads((work / "series.truth.json").read_text())
    d = read_dynamics(work / "dynamics.h5")
    counts = np.asarray(d["summaries"]["polar_transitions"]["counts"])
    cells = d["cells"]
    first = np.asarray(cells["frame"]) == 0
    rows = len(np.unique(np.asarray(cells["v"])[first]))
    swept = abs(truth["wall_cells"][-1] - truth["wall_cells"][0]) * rows
    forward, back = max(counts[0, 1], counts[1, 0]), min(counts[0, 1], counts[1, 0])
    assert back <= 2  # the wall only moves one way
    assert abs(forward - swept) <= 3 * np.sqrt(swept) + 0.2 * swept, (forward, swept)


@pytest.mark.workflow
def test_a_series_of_files_through_the_workflow(tmp_path):
    """series: files -- one frame per file, ordered by the numbers in the names (frame_9
    before frame_10); an unreadable frame file is set aside and the series goes on."""
    from latticegenome.dynamics.simulate import write_series

    fac = tmp_path / "facility" / "frames"
    fac.mkdir(parents=True)
    made = write_series(tmp_path / "sim", n_frames=11, size=256)
    with tifffile.TiffFile(made["tif"]) as tf:
        stack = tf.asarray()
    for k in range(11):
        if k == 5:
            (fac / f"frame_{k}.tif").write_bytes(b"II*\x00broken")
            continue
        tifffile.imwrite(fac / f"frame_{k}.tif", stack[k], imagej=True, resolution=(50.0, 50.0),
                         metadata={"unit": "nm"})
    run = _series_workflow(tmp_path, "run", "frames", "files", made["frames_csv"])
    assert run.returncode == 0, run.stderr[-3000:]
    res = tmp_path / "results" / "run"
    (row,) = read_table(res / "dynamics.tsv")
    assert row["series"] == "run" and row["status"] == "ok"
    assert int(row["frames"]) == 11 and int(row["frames_tracked"]) == 10
    assert "frame 5: frame_5.tif" in row["set_aside"]
    d = read_dynamics(res / "dynamics.h5")
    assert d["provenance"]["params"]["frame_files"][9:] == ["frame_9.tif", "frame_10.tif"]
    # the configured CSV gives every field (the TIFFs carry no acquisition times)
    assert d["provenance"]["params"]["frame_meta_source"] == {
        "time_s": "csv", "temperature_K": "csv", "dose_e_per_A2": "csv"}
    truth = json.loads((tmp_path / "sim" / "series.truth.json").read_text())
    fit = d["summaries"]["a_vs_temperature"]
    model = fit["intercept"] + fit["slope"] * np.asarray(truth["temperature_K"])
    assert np.max(np.abs(model - np.asarray(truth["a_pm"]))) < 0.5  # the right order
    assert (res / "figures" / "series" / "run_frames.gif").exists()
