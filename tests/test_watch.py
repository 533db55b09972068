"""Images that keep arriving: real Snakemake runs on increments, and the watch mode."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from latticegenome.columns.simulate import simulate_superlattice
from latticegenome.core.tables import read_table
from latticegenome.ingest.manifest import manifest_increments
from latticegenome.statistics.results import image_cells, read_statistics

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def _image(folder: Path, k: int) -> None:
    img, _, _ = simulate_superlattice((200, 200), rng=np.random.default_rng(100 + k))
    tmp = folder / f".img_{k}.part"
    tifffile.imwrite(tmp, img.astype(np.uint16), imagej=True, resolution=(50.0, 50.0),
                     metadata={"unit": "nm"})
    os.replace(tmp, folder / f"img_{k}.tif")


def _workdir(root: Path, images=(), *, growth=1.0) -> tuple[Path, Path]:
    fac = root / "facility" / "exp"
    fac.mkdir(parents=True)
    for k in images:
        _image(fac, k)
    config = {
        "scratch": "data", "results": "results", "batch_size": 2,
        "facilities": {"scope": {"backend": "local", "path": str(root / "facility")}},
        "classes": {"refit_growth": growth, "max_classes": 3},
        "experiments": {"exp": {
            "facility": "scope", "path": "exp", "pattern": "*.tif", "pixel_size_pm": 20.0,
            "materials": [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5},
                          {"formula": "BaTiO3", "A": "Ba", "B": "Ti", "a_pm": 399.2}]}},
        "dft": {"enabled": False},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root, fac


def _snakemake(work: Path, *args, timeout=600):
    cmd = [str(BIN / "snakemake"), *args, "--snakefile", str(ROOT / "Snakefile"),
           f"--directory={work}", f"--configfile={work / 'config.yaml'}", "--profile",
           str(ROOT / "profiles" / "local"), "--cores", "2"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work)


def _state(work: Path) -> dict:
    """(sha256, mtime) of every result of an image and raw copy so far."""
    out = {}
    for sub in ("results/exp/columns", "results/cells", "data/exp/raw", "data/exp/increments",
                "results/exp/partials"):
        for p in (work / sub).rglob("*"):
            if p.is_file() and not p.name.startswith("classes-") and p.name != "batch.json":
                out[str(p.relative_to(work))] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                                 p.stat().st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def increments(tmp_path_factory):
    """Three increments (the second with a broken file), then a run with nothing new."""
    work, fac = _workdir(tmp_path_factory.mktemp("incr"), images=(0, 1, 2))
    runs, states = [_snakemake(work)], [_state(work)]
    _image(fac, 3)
    (fac / "broken.tif").write_bytes(b"II*\x00" + os.urandom(300))
    runs.append(_snakemake(work))
    states.append(_state(work))
    _image(fac, 4)
    runs.append(_snakemake(work))
    states.append(_state(work))
    runs.append(_snakemake(work, "-n"))
    return work, runs, states


def test_increments_never_touch_earlier_results(increments):
    work, runs, states = increments
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    for before, after in zip(states, states[1:]):
        assert set(before) < set(after)
        changed = [k for k in before if after[k] != before[k]]
        assert changed == [], changed
    assert "Nothing to be done" in runs[-1].stdout + runs[-1].stderr
    assert manifest_increments(work / "data/exp/manifest.tsv") == [
        ("img_0.tif", 0), ("img_1.tif", 0), ("img_2.tif", 0), ("broken.tif", 1), ("img_3.tif", 1),
        ("img_4.tif", 2)]
    # each increment analysed only its own images: one columns file per image, ever
    logs = sorted((work / "results/exp/logs/columns").glob("batch-*.log"))
    assert len(logs) == 4  # batches {0,1} {2} {broken,3} {4}


def test_a_broken_image_is_set_aside_and_the_rest_go_on(increments):
    work, runs, _ = increments
    images = [r["image"] for r in read_table(work / "results/exp/images.tsv")]
    assert images == [f"img_{k}.tif" for k in range(5)]
    rejected = {r["file"]: r["reason"] for r in read_table(work / "results/exp/rejected.tsv")}
    assert set(rejected) == {"broken.tif"} and "TIFF" in rejected["broken.tif"]


def test_three_increments_equal_a_one_shot_run(increments, tmp_path):
    work, _, _ = increments
    one, fac = _workdir(tmp_path / "one", images=range(5))
    (fac / "broken.tif").write_bytes((work / "facility/exp/broken.tif").read_bytes())
    run = _snakemake(one, "results/exp/statistics.h5")
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = (read_statistics(w / "results/exp/statistics.h5") for w in (work, one))
    assert a.images == b.images and a.n_cells == b.n_cells
    for name in a.histograms:
        assert np.array_equal(a.histograms[name][1], b.histograms[name][1])
    for table in ("images.tsv", "layers.csv"):
        ta, tb = (read_table(w / "results/exp" / table) for w in (work, one))
        drop = {"majority_class"}  # class ids: equal up to relabelling (below)
        assert [{k: v for k, v in r.items() if k not in drop} for r in ta] == \
               [{k: v for k, v in r.items() if k not in drop} for r in tb], table
    la = np.concatenate([image_cells(work / "results/exp/statistics.h5", k)["class"] for k in range(5)])
    lb = np.concatenate([image_cells(one / "results/exp/statistics.h5", k)["class"] for k in range(5)])
    pairs = {(int(x), int(y)) for x, y in zip(la, lb)}  # refit_growth 1: the same partition
    assert len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs})


def _watch(work: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "latticegenome"), "watch", "--interval", "0.5",
                             "--directory", str(work), "--configfile", "config.yaml",
                             "--snakefile", str(ROOT / "Snakefile"), "--profile",
                             str(ROOT / "profiles" / "local"), *args],
                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(test, seconds=180, proc=None):
    end = time.time() + seconds
    while time.time() < end:
        if test():
            return True
        if proc is not None and proc.poll() is not None:
            return test()
        time.sleep(0.2)
    return False


def _newest_on_page(work: Path, name: str) -> bool:
    page = work / "results/live.html"
    return page.exists() and f'newest: <b class="newest">{name}</b>' in page.read_text()


def _no_partial_outputs(work: Path) -> list[str]:
    return [str(p) for p in (work / "results").rglob("*") if p.name.endswith(".part")]


@pytest.mark.parametrize("signals", [1, 2], ids=["finishes-the-increment", "stops-it-now"])
def test_watch_stopped_mid_increment_then_restarted(tmp_path, signals):
    work, fac = _workdir(tmp_path, images=(0, 1))
    watch = _watch(work)
    try:
        assert _wait_for(lambda: _newest_on_page(work, "img_1.tif"), proc=watch), watch.stdout.read()
        done = {p.name: p.stat().st_mtime_ns for p in (work / "results/exp/columns").rglob("*.h5")}
        _image(fac, 2)
        _image(fac, 3)
        # mid-increment: the new images' column finding has started
        assert _wait_for(lambda: (work / "results/exp/logs/columns/batch-00001.log").exists(),
                         proc=watch)
        for _ in range(signals):
            watch.send_signal(signal.SIGTERM)
            time.sleep(0.3)
        out, _ = watch.communicate(timeout=180)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, out
    assert "stopping after this increment" in out
    stats = read_statistics(work / "results/exp/statistics.h5")  # whole, whichever increment
    if signals == 1:  # the increment was finished before stopping: all it ingested is in
        ingested = [n for n, _ in manifest_increments(work / "data/exp/manifest.tsv")]
        assert stats.images == ingested and len(ingested) >= 3
        assert _no_partial_outputs(work) == []
    _image(fac, 4)
    again = _watch(work, "--once")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    stats = read_statistics(work / "results/exp/statistics.h5")
    assert stats.images == [f"img_{k}.tif" for k in range(5)]
    now = {p.name: p.stat().st_mtime_ns for p in (work / "results/exp/columns").rglob("*.h5")}
    assert {k: now[k] for k in done} == done  # nothing analysed twice
    assert _no_partial_outputs(work) == []
    assert _newest_on_page(work, "img_4.tif")
    assert 'http-equiv="refresh"' not in (work / "results/live.html").read_text()  # stopped
