"""A real single-node SLURM on this machine, for the scheduler tests.

Installs Debian's slurm-wlm and munge when missing (root and apt-get needed),
writes a slurm.conf for this host into a private folder and, as
/etc/slurm/slurm.conf, where the job steps' srun looks (only when no such file
exists, or it is one of ours; removed again on stop), starts munged (unless one
runs), slurmctld and slurmd directly (no systemd here), waits, bounded, until
the node is idle, and stops each daemon it started by the PID it wrote.

No accounting daemon: job states come from ``squeue`` (MinJobAge keeps
finished jobs listed for 10 minutes) and from ``scontrol show job``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

# libpmix-dev: the unversioned libpmix.so that SLURM's mpi/pmix plugin loads, for srun-launched MPI
PACKAGES = ("slurm-wlm", "munge", "libpmix-dev")

MARK = "# single-node SLURM for latticegenome's tests"
SLURM_CONF = MARK + """ (written by tests/slurm_localhost.py)
ClusterName=latticegenome-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
MinJobAge=600
ReturnToService=2
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=60 State=UP
"""


class SlurmUnavailable(RuntimeError):
    """This machine cannot run a SLURM (the reason is the message)."""


def _run(args, timeout=60, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


def install() -> None:
    """apt-get install slurm-wlm and munge when missing (root only)."""
    missing = [p for p in PACKAGES if _run(["dpkg", "-s", p]).returncode != 0]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"not root: cannot install {' '.join(missing)}")
    if not shutil.which("apt-get"):
        raise SlurmUnavailable("no apt-get: cannot install slurm-wlm and munge")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    upd = _run(["apt-get", "update", "-qq"], timeout=600, env=env)
    inst = _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                timeout=900, env=env)
    if upd.returncode or inst.returncode:
        raise SlurmUnavailable(f"apt-get install {' '.join(missing)} failed: "
                               f"{(inst.stderr or upd.stderr).strip()[-300:]}")


def _wait(predicate, seconds: float, what: str, log: Path | None = None):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.5)
    tail = log.read_text()[-1500:] if log and log.exists() else ""
    raise SlurmUnavailable(f"{what} not ready after {seconds:.0f} s\n{tail}")


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 2000


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`env` points clients at it."""

    def __init__(self, state: Path):
        self.state = Path(state)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.state / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self._started: list[tuple[str, Path]] = []  # (name, pid file), in start order
        self._etc_conf: Path | None = None

    def start(self) -> LocalSlurm:
        if os.geteuid() != 0:
            raise SlurmUnavailable("not root: slurmd must run as root")
        install()
        (self.state / "ctld").mkdir(parents=True, exist_ok=True)
        (self.state / "d").mkdir(parents=True, exist_ok=True)
        memory = max(1000, int(_memory_mb() * 0.8))
        text = SLURM_CONF.format(host=self.host, state=self.state, cpus=os.cpu_count() or 1,
                                 memory=memory)
        self.conf.write_text(text)
        # srun inside a batch job ignores SLURM_CONF from the submitting shell: it reads the
        # default location. Never overwrite a configuration that is not ours.
        etc = Path("/etc/slurm/slurm.conf")
        if etc.exists() and not etc.read_text().startswith(MARK):
            raise SlurmUnavailable(f"{etc} exists and is not ours: not starting a test SLURM here")
        etc.parent.mkdir(parents=True, exist_ok=True)
        etc.write_text(text)
        self._etc_conf = etc
        self._start_munge()
        ctld = _run(["slurmctld", "-f", str(self.conf), "-i"], env=self.env)
        if ctld.returncode:
            raise SlurmUnavailable(f"slurmctld did not start: {ctld.stderr.strip()[-500:]}")
        self._started.append(("slurmctld", self.state / "slurmctld.pid"))
        _wait(lambda: _run(["scontrol", "ping"], env=self.env).stdout.count("UP") >= 1, 30,
              "slurmctld", self.state / "slurmctld.log")
        slurmd = _run(["slurmd", "-f", str(self.conf)], env=self.env)
        if slurmd.returncode:
            raise SlurmUnavailable(f"slurmd did not start: {slurmd.stderr.strip()[-500:]}")
        self._started.append(("slurmd", self.state / "slurmd.pid"))
        _wait(self._node_idle, 60, "slurm node", self.state / "slurmd.log")
        return self

    def _start_munge(self):
        if _run(["sh", "-c", "munge -n | unmunge"]).returncode == 0:
            return  # a munged already runs: use it, leave it running
        run = Path("/run/munge")
        run.mkdir(parents=True, exist_ok=True)
        shutil.chown(run, "munge", "munge")
        for d in (Path("/var/log/munge"), Path("/var/lib/munge")):
            d.mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        out = _run(["runuser", "-u", "munge", "--", "munged"])
        if out.returncode:
            raise SlurmUnavailable(f"munged did not start: {out.stderr.strip()[-500:]}")
        self._started.insert(0, ("munged", run / "munged.pid"))
        _wait(lambda: _run(["sh", "-c", "munge -n | unmunge"]).returncode == 0, 20, "munge")

    def _node_idle(self) -> bool:
        out = _run(["sinfo", "-h", "-N", "-o", "%t"], env=self.env).stdout.split()
        return bool(out) and all(s in ("idle", "mix", "alloc") for s in out)

    def sbatch_wait(self, command: str, timeout: float = 120) -> str:
        """Submit ``command`` and wait for it; return the job id."""
        out = _run(["sbatch", "--parsable", "--wait", "--wrap", command], timeout=timeout,
                   env=self.env, cwd=self.state)
        if out.returncode:
            raise SlurmUnavailable(f"sbatch --wait failed: {out.stderr.strip()}")
        return out.stdout.strip().split(";")[0]

    def jobs(self) -> list[dict]:
        """SLURM's own records of the jobs it knows (running and finished within MinJobAge)."""
        out = _run(["squeue", "-h", "-t", "all", "-o", "%i|%j|%T|%C|%m"], env=self.env)
        rows = []
        for line in out.stdout.splitlines():
            job_id, name, state, cpus, mem = line.split("|")
            rows.append({"id": job_id, "name": name, "state": state, "cpus": cpus, "mem": mem})
        return rows

    def job_details(self, job_id: str) -> dict:
        """``scontrol show job`` as a dict (Command, WorkDir, ExitCode, ...)."""
        out = _run(["scontrol", "show", "job", "-o", job_id], env=self.env).stdout
        fields = {}
        for token in out.split():
            if "=" in token:
                k, v = token.split("=", 1)
                fields[k] = v
        return fields

    def stop(self) -> None:
        """Stop what was started here, newest first, each by the PID it wrote (bounded)."""
        for name, pid_file in reversed(self._started):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            end = time.monotonic() + 15
            while time.monotonic() < end:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._started.clear()
        if self._etc_conf is not None:
            self._etc_conf.unlink(missing_ok=True)
            self._etc_conf = None
