"""Nothing lost: a real Snakemake run killed with SIGKILL (the whole process
group, as a node failure or an OOM killer would) at two points, then resumed,
gives the same results as an uninterrupted run; nothing half-written is
trusted and no temporary file is left behind."""

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
from latticegenome.statistics.results import image_cells, read_statistics

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
pytestmark = [pytest.mark.workflow, pytest.mark.slow]
N_IMAGES = 8


def _command(work):
    return [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
            "--configfile", str(work / "config.yaml"), "--profile", str(ROOT / "profiles" / "local"),
            "--cores", "2"]


def _experiment(work: Path, facility: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "facilities": {"scope": {"backend": "local", "path": str(facility)}},
        "experiments": {"resume": {
            "facility": "scope", "path": "exp", "pattern": "*.tif", "pixel_size_pm": 20.0,
            "materials": [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5},
                          {"formula": "BaTiO3", "A": "Ba", "B": "Ti", "a_pm": 399.2}],
        }},
        "dft": {"enabled": False},
        "batch_size": 4,  # 8 images -> 2 batch jobs of 4 (2 workers each)
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return work


@pytest.fixture(scope="module")
def facility(tmp_path_factory):
    root = tmp_path_factory.mktemp("facility")
    (root / "exp").mkdir()
    for k in range(N_IMAGES):
        img, _, _ = simulate_superlattice((256, 256), rng=np.random.default_rng(100 + k))
        tifffile.imwrite(root / "exp" / f"img_{k}.tif", img.astype(np.uint16), imagej=True,
                         resolution=(50.0, 50.0), metadata={"unit": "nm"})
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, facility):
    work = _experiment(tmp_path_factory.mktemp("uninterrupted"), facility)
    run = subprocess.run(_command(work), capture_output=True, text=True, timeout=600, cwd=work)
    assert run.returncode == 0, run.stderr[-3000:]
    return work


def _kill_when(work: Path, ready, timeout=300) -> None:
    """Start Snakemake in its own process group; SIGKILL the group when ``ready()``."""
    proc = subprocess.Popen(_command(work), cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before the point of the kill"
            assert time.monotonic() < deadline, "the point of the kill never came"
            time.sleep(0.02)
    finally:
        with _suppress():
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    time.sleep(0.5)  # let the killed processes be reaped by init


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is ProcessLookupError


def _resume(work: Path) -> subprocess.CompletedProcess:
    """What a user does after a kill: remove the stale lock, run again."""
    locked = subprocess.run(_command(work), capture_output=True, text=True, timeout=600, cwd=work)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    unlock = subprocess.run([sys.executable, "-m", "latticegenome.resume"], cwd=work,
                            capture_output=True, text=True, timeout=300)
    assert unlock.returncode == 0 and "removed the lock" in unlock.stdout, unlock.stderr
    return subprocess.run(_command(work), capture_output=True, text=True, timeout=600, cwd=work)


def _partial_batch_with_images(work: Path) -> bool:
    cols = work / "results" / "resume" / "columns"
    return cols.is_dir() and any(
        len(list(p.glob("*.h5"))) >= 1 for p in cols.glob(".batch-*.part"))


def _statistics_being_written(work: Path) -> bool:
    """A batch's statistics job has started (its log exists) and no merge has finished."""
    res = work / "results" / "resume"
    return (any((res / "logs" / "statistics").glob("batch-*.log"))
            and not (res / "statistics.h5").exists())


def _same_results(a: Path, b: Path) -> None:
    sa, sb = (read_statistics(w / "results/resume/statistics.h5") for w in (a, b))
    assert sa.images == sb.images and sa.n_cells == sb.n_cells
    for k in range(len(sa.images)):  # every cell, from the batches' Parquet tables
        ca, cb = (image_cells(w / "results/resume/statistics.h5", k) for w in (a, b))
        assert sorted(ca) == sorted(cb)
        for name in ca:
            assert np.array_equal(ca[name], cb[name], equal_nan=ca[name].dtype.kind == "f"), name
    for table in ("images.tsv", "classes.csv", "layers.csv", "rejected.tsv"):
        assert (a / "results/resume" / table).read_text() == (b / "results/resume" / table).read_text()


def _no_leftovers(work: Path) -> None:
    left = [p for p in work.rglob("*.part") if ".snakemake" not in p.parts]
    assert not left, left


@pytest.mark.parametrize("point", ["find_columns", "statistics"])
def test_kill_9_then_resume_gives_the_uninterrupted_results(tmp_path, facility, reference, point):
    work = _experiment(tmp_path / "killed", facility)
    ready = _partial_batch_with_images if point == "find_columns" else _statistics_being_written
    _kill_when(work, lambda: ready(work))
    results = work / "results" / "resume"
    # nothing half-written carries a final name
    for folder in (results / "columns").glob("batch-*"):
        assert (folder / "batch.json").is_file(), f"{folder} has a final name but is not whole"
    assert not (results / "statistics.h5").exists() or point == "find_columns"
    run = _resume(work)
    assert run.returncode == 0, run.stderr[-3000:]
    _same_results(reference, work)
    _no_leftovers(work)
    if point == "find_columns":  # the finished images of the killed batch were kept, not redone
        logs = "".join(p.read_text() for p in (results / "logs" / "columns").glob("*.log"))
        assert "taken over from an interrupted run" in logs
