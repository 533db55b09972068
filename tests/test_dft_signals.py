"""Stopping a DFT job (SIGTERM from the batch system or ``timeout``, Ctrl-C) stops
its MPI launcher and every rank: nothing of the job is left running with parent
PID 1, and the stopped run is never written as a result.

The DFT runs in a child Python process, as in the rule's script; the test
signals that child and then scans ``/proc`` for anything of the job."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
needs_cp2k = pytest.mark.skipif(not (shutil.which("cp2k.psmp") and shutil.which("mpirun")),
                                reason="cp2k/mpirun not installed (make test installs them as root)")
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

CHILD = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from pymatgen.core import Lattice, Structure
    import latticegenome.dft.calculations as dft
    import latticegenome.dft.stopping as stopping

    work, command = Path(sys.argv[1]), sys.argv[2:]
    if "STOP_GRACE_S" in os.environ:
        stopping.STOP_GRACE_S = float(os.environ["STOP_GRACE_S"])
    if command[0] == "cp2k":
        sto = Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                        [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])
        dft.cp2k_input(sto).write_file("cp2k.inp", str(work))
        command = dft.cp2k_command("mpirun", int(command[1]))
    else:
        (work / "cp2k.inp").write_text("")
    result = dft.run_cp2k(work, command, max_errors=1)
    (work / "result.json").write_text(json.dumps({"status": result["status"]}))
""")


def _procs():
    """Live processes: ``pid, comm, state, pgid, sid, cwd`` from ``/proc``."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cwd = os.readlink(f"/proc/{d}/cwd")
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if rest[0] in "ZX":  # dead, waiting to be reaped
            continue
        yield {"pid": int(d), "comm": comm, "pgid": int(rest[2]), "sid": int(rest[3]), "cwd": cwd}


def _of_job(work: Path, sids) -> list[dict]:
    """Processes of the job: in one of its sessions, or running in its directory."""
    return [p for p in _procs() if p["pid"] != os.getpid()
            and (p["sid"] in sids or Path(p["cwd"]).is_relative_to(work))]


def _kill(procs):
    for p in procs:
        try:
            os.kill(p["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


def _as_in_a_terminal():
    """Popen's preexec_fn: SIGINT at its default in the child, as for a job started in a
    terminal. A test run started in the background (``make test &``, ``nohup``) has SIGINT
    ignored, every child inherits that, and the stop handler rightly leaves an ignored
    signal alone: Ctrl-C then stops nothing, and the SIGINT tests would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(tmp_path, *command, env=None):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    work = tmp_path / "calc"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    child = subprocess.Popen([sys.executable, str(script), str(work), *command], cwd=tmp_path,
                             env=env, start_new_session=True, preexec_fn=_as_in_a_terminal)
    return child, work


def _wait_for(work: Path, comm: str, count: int, child, timeout=180.0) -> int:
    """The session of ``count`` processes named ``comm`` running in ``work``."""
    end = time.time() + timeout
    while time.time() < end:
        found = [p for p in _procs() if p["comm"] == comm and Path(p["cwd"]) == work]
        if len(found) >= count:
            return found[0]["sid"]
        assert child.poll() is None, f"the DFT child ended before {comm} started"
        time.sleep(0.2)
    raise AssertionError(f"{comm} did not start in {timeout} s")


def _stop_and_check(child, work, sid, signum, expect_rc):
    try:
        child.send_signal(signum)
        rc = child.wait(timeout=60)
        left = _of_job(work, {sid, child.pid})
        assert rc in expect_rc, f"exit status {rc}: not a stopped job"
        assert not left, f"left running after the job was stopped: {left}"
        assert not (work / "result.json").exists(), "a stopped run was written as a result"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        _kill(_of_job(work, {sid, child.pid}))


@needs_cp2k
@needs_proc
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_stops_mpirun_and_every_cp2k_rank(tmp_path):
    child, work = _start(tmp_path, "cp2k", "2")
    sid = child.pid
    try:
        sid = _wait_for(work, "cp2k.psmp", 2, child)
        assert sid != child.pid  # the DFT runs in a session of its own
    finally:
        _stop_and_check(child, work, sid, signal.SIGTERM, {128 + signal.SIGTERM, -signal.SIGTERM})


@needs_cp2k
@needs_proc
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigint_stops_mpirun_and_every_cp2k_rank(tmp_path):
    child, work = _start(tmp_path, "cp2k", "2")
    sid = child.pid
    try:
        sid = _wait_for(work, "cp2k.psmp", 2, child)
    finally:
        # Ctrl-C: KeyboardInterrupt, Python then ends with SIGINT's status
        _stop_and_check(child, work, sid, signal.SIGINT, {128 + signal.SIGINT, -signal.SIGINT, 1})


LAUNCHER = textwrap.dedent("""\
    import signal, subprocess, sys, time
    # like mpirun: a rank in a process group of its own (same session) that
    # here also ignores SIGTERM, so only SIGKILL ends it
    subprocess.Popen([sys.executable, "-c",
                      "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      "open('rank.started', 'w').close(); time.sleep(300)"],
                     process_group=0)
    time.sleep(300)
""")


@needs_proc
@pytest.mark.timeout(120)
def test_stop_kills_ranks_in_other_process_groups_that_ignore_sigterm(tmp_path):
    (tmp_path / "launcher.py").write_text(LAUNCHER)
    child, work = _start(tmp_path, sys.executable, str(tmp_path / "launcher.py"),
                         env={"STOP_GRACE_S": "1"})
    sid = child.pid
    try:
        end = time.time() + 60
        while not (work / "rank.started").exists():
            assert child.poll() is None and time.time() < end, "the stand-in rank did not start"
            time.sleep(0.1)
        sid = next(p["sid"] for p in _procs() if Path(p["cwd"]) == work and p["pid"] != child.pid)
        assert len({p["pgid"] for p in _procs() if p["sid"] == sid}) == 2
    finally:
        _stop_and_check(child, work, sid, signal.SIGTERM, {128 + signal.SIGTERM, -signal.SIGTERM})


def test_custodian_terminate_stops_the_whole_session(tmp_path, monkeypatch):
    """custodian's own terminate() (a handler's correction): every process of the run."""
    from latticegenome.dft.jobs import OwnCp2kJob

    (tmp_path / "launcher.py").write_text(LAUNCHER)
    job = OwnCp2kJob([sys.executable, str(tmp_path / "launcher.py"), "#"], input_file="cp2k.inp")
    p = job.run(str(tmp_path))
    try:
        end = time.time() + 30
        while not (tmp_path / "rank.started").exists() and time.time() < end:
            time.sleep(0.1)
        monkeypatch.setattr("latticegenome.dft.stopping.STOP_GRACE_S", 1.0)
        job.terminate(str(tmp_path))
        assert p.poll() is not None
        assert not [q for q in _procs() if q["sid"] == p.pid], "a rank survived terminate()"
    finally:
        _kill([q for q in _procs() if q["sid"] == p.pid])
        p.kill()
        p.wait()


def test_run_outside_the_main_thread_still_runs(tmp_path, caplog):
    """Signal handlers can only be set in the main thread: a run in another thread
    goes ahead without them (and says so in the log) instead of failing."""
    from latticegenome.dft.calculations import run_cp2k

    fake = tmp_path / "fake_cp2k"
    fake.write_text("#!/bin/sh\necho ' PROGRAM ENDED AT'\n")
    fake.chmod(0o755)
    (tmp_path / "cp2k.inp").write_text("")
    out, handlers = {}, {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    t = threading.Thread(target=lambda: out.update(r=run_cp2k(tmp_path, [str(fake)],
                                                               max_errors=1)))
    t.start()
    t.join(60)
    assert out["r"]["status"] == "failed" and out["r"]["energy_eV"] is None
    assert "stop signals are not forwarded" in caplog.text
    assert {s: signal.getsignal(s) for s in handlers} == handlers


RACY = textwrap.dedent("""\
    import signal, subprocess, sys
    from pathlib import Path
    from latticegenome.dft.calculations import _custodian_run

    class RacyJob:  # the signal arrives after Popen, before the job returns the process
        def run(self, directory="./"):
            p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                 start_new_session=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            Path(sys.argv[1]).write_text(str(p.pid))
            signal.raise_signal(signal.SIGTERM)
            return p

    class OneJob:
        jobs = [RacyJob()]

        def run(self):
            self.jobs[0].run().wait()
            return []

    print(_custodian_run(OneJob()))
""")


@needs_proc
@pytest.mark.timeout(60)
def test_signal_while_the_process_is_being_started_still_stops_it(tmp_path):
    (tmp_path / "racy.py").write_text(RACY)
    pid_file = tmp_path / "pid"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, str(tmp_path / "racy.py"), str(pid_file)], env=env,
                       capture_output=True, text=True, timeout=50)
    sid = int(pid_file.read_text())
    try:
        assert r.returncode in (128 + signal.SIGTERM, -signal.SIGTERM), r.stderr
        assert "[]" not in r.stdout  # no result came back
        assert not [p for p in _procs() if p["sid"] == sid], "the started process survived"
    finally:
        _kill([p for p in _procs() if p["sid"] == sid])


@needs_cp2k
@needs_proc
@pytest.mark.slow
@pytest.mark.workflow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_snakemake_stops_the_dft_job(tmp_path, signum):
    """Ctrl-C on a real Snakemake run while CP2K computes (SIGINT to the
    terminal's process group), or `timeout` (SIGTERM to the group it made): the
    DFT job stops mpirun and every rank, nothing is left running, and the
    stopped calculation is not written as a result."""
    import numpy as np
    import tifffile
    import yaml

    from latticegenome.columns.simulate import simulate_superlattice

    fac = tmp_path / "fac" / "exp"
    fac.mkdir(parents=True)
    for k in range(2):
        img, _, _ = simulate_superlattice((200, 200), rng=np.random.default_rng(k))
        tifffile.imwrite(fac / f"img_{k}.tif", img.astype(np.uint16), imagej=True,
                         resolution=(50.0, 50.0), metadata={"unit": "nm"})
    structures = ROOT / "resources" / "structures"
    config = {"facilities": {"scope": {"backend": "local", "path": str(tmp_path / "fac")}},
              "experiments": {"e": {"facility": "scope", "path": "exp", "pattern": "*.tif",
                                    "materials": [
                                        {"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5,
                                         "structure_file": str(structures / "SrTiO3.cif")},
                                        {"formula": "BaTiO3", "A": "Ba", "B": "Ti", "a_pm": 399.2,
                                         "structure_file": str(structures / "BaTiO3.cif")}]}},
              "dft": {"min_fraction": 0.05, "mp_cache": str(tmp_path / "mp.json")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"),
           "--profile", str(ROOT / "profiles" / "local"), "--cores", "2"]
    snake = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True,
                             preexec_fn=_as_in_a_terminal)
    try:
        deadline = time.monotonic() + 300
        while not (running := [p for p in _procs() if p["comm"] == "cp2k.psmp"
                               and p["cwd"].startswith(str(tmp_path))]):
            assert snake.poll() is None and time.monotonic() < deadline, "no CP2K started"
            time.sleep(0.2)
        os.killpg(snake.pid, signum)  # as the terminal or `timeout` do: the whole group
        model = Path(running[0]["cwd"])  # results/e/dft/<model>/
        snake.wait(timeout=120)
        time.sleep(1)
        left = [p for p in _procs() if p["cwd"].startswith(str(tmp_path))]
        assert not left, f"left running after Snakemake was stopped: {left}"
        assert not (model.parent / f"{model.name}.json").exists()  # stopped: no result
    finally:
        _kill([p for p in _procs() if p["cwd"].startswith(str(tmp_path))])
        if snake.poll() is None:
            os.killpg(snake.pid, signal.SIGKILL)
