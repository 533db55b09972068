"""Outputs whole or absent, with the permissions the umask allows; temporary
files of killed writers removed; a full disk named in one line."""

import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from latticegenome.core.fsutil import (
    NoSpaceError,
    atomic_dir,
    atomic_path,
    atomic_write,
    remove_stale_parts,
    stale_parts,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_outputs_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    with atomic_write(tmp_path / "t.tsv", "w") as fh:
        fh.write("x\n")
    with atomic_path(tmp_path / "c.h5") as tmp:
        tmp.write_bytes(b"x")
    with atomic_dir(tmp_path / "batch") as d:
        (d / "f").write_text("x")
    assert stat.S_IMODE((tmp_path / "t.tsv").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "c.h5").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "batch").stat().st_mode) == mode | 0o111 & ~mask


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    host = socket.gethostname().split(".")[0]
    target = tmp_path / "statistics.h5"
    dead = tmp_path / f".statistics.h5.{host}.{_dead_pid()}.abc.part"
    live = tmp_path / f".statistics.h5.{host}.{os.getppid()}.abc.part"  # a live process
    other = tmp_path / ".statistics.h5.otherhost.12.abc.part"  # cannot be checked: age tells
    for p in (dead, live, other):
        p.write_bytes(b"half")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert not dead.exists() and live.exists() and other.exists()
    os.utime(other, (0, 0))  # a day old
    assert stale_parts(target) == [other]
    assert set(remove_stale_parts(target, force=True)) == {live, other}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["statistics.h5"]


def test_names_with_glob_characters_and_unicode(tmp_path):
    target = tmp_path / "ünï[1]*µÅ.tsv"
    with atomic_write(target, "w") as fh:
        fh.write("x")
    assert target.read_text() == "x" and len(list(tmp_path.iterdir())) == 1


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MB tmpfs (root only); skipped where mounting is not allowed."""
    where = tmp_path / f"small-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_names_the_path_and_leaves_nothing(full_disk):
    target = full_disk / "table.tsv"
    with pytest.raises(NoSpaceError) as err:
        with atomic_write(target, "w") as fh:
            fh.write("x" * (4 << 20))
    assert str(err.value) == f"{target}: no space left on device"
    assert list(full_disk.iterdir()) == []


def test_a_job_on_a_full_disk_ends_with_one_line(full_disk, tmp_path):
    """Writing statistics-sized HDF5 on a full disk crashed the interpreter at
    exit (SIGSEGV, empty log); a job ends with one line and status 1."""
    log = tmp_path / "job.log"
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'scripts')!r})
        from types import SimpleNamespace
        from _setup import setup
        sm = SimpleNamespace(scriptdir={str(ROOT / 'scripts')!r}, log=[{str(log)!r}],
                             rule="statistics", output=[{str(full_disk / 'statistics.h5')!r}])
        log = setup(sm)
        import h5py, numpy as np
        from latticegenome.core.fsutil import atomic_path
        with atomic_path(sm.output[0]) as tmp, h5py.File(tmp, "w") as f:
            ds = f.create_dataset("a", shape=(0,), maxshape=(None,), chunks=(65536,),
                                  compression="gzip", dtype=float)
            for k in range(100):
                ds.resize((ds.shape[0] + 100000,))
                ds[-100000:] = np.random.default_rng(k).random(100000)
    """))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    line = f"{full_disk / 'statistics.h5'}: no space left on device"
    assert run.returncode == 1, (run.returncode, run.stderr[-2000:])
    assert run.stderr.strip().splitlines()[-1] == f"latticegenome: error: {line}"
    assert line in log.read_text()
    assert list(full_disk.iterdir()) == []
