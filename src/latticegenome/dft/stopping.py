"""Stopping a DFT run: its launcher, every MPI rank, and nothing else.

The DFT runs in a session of its own (``start_new_session``), where SIGTERM
from the batch system and Ctrl-C do not reach it. While a run is under
custodian (:class:`StopGuard`), SIGTERM, SIGINT and SIGHUP are forwarded to
every process of that session (Open MPI puts each rank in a process group of
its own), which gets :data:`STOP_GRACE_S` to end before SIGKILL; once none is
left the previous handlers are back and the signal is acted on
(``KeyboardInterrupt`` for Ctrl-C, else ``SystemExit(128 + signal)``), so
nothing is returned as a result.

The processes of a session are read from ``/proc`` (Linux); elsewhere the
process group of the session leader stands for the session.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_GRACE_S = 10.0  # SIGTERM to SIGKILL when a run is stopped
STOP_KILL_WAIT_S = 5.0

log = logging.getLogger(__name__)


def _proc_stat(pid: int | str) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def _session_members(sid: int) -> list[tuple[int, int]]:
    """``(pid, pgid)`` of the live (not zombie) processes in session ``sid``.

    Read from ``/proc``; without it (not Linux) the process group ``sid``
    stands for the session.
    """
    if not os.path.isdir("/proc"):
        try:
            os.killpg(sid, 0)
            return [(sid, sid)]
        except OSError:
            return []
    members = []
    for d in os.listdir("/proc"):
        f = _proc_stat(d) if d.isdigit() else None
        if f and int(f[3]) == sid and f[0] not in "ZX":
            members.append((int(d), int(f[2])))
    return members


def _leader_alive(proc: subprocess.Popen) -> bool:
    """Whether ``proc`` still runs (a zombie not reaped yet counts as ended)."""
    if proc.poll() is not None:
        return False
    f = _proc_stat(proc.pid) if os.path.isdir("/proc") else ["R"]
    return bool(f) and f[0] not in "ZX"


def _running(proc: subprocess.Popen) -> bool:
    """Whether ``proc`` or any process of the session it leads still runs."""
    return _leader_alive(proc) or bool(_session_members(proc.pid))


def _signal_session(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to every process group of the session ``proc`` leads, and to ``proc``."""
    groups = {g for _, g in _session_members(proc.pid)}
    if _leader_alive(proc):  # not reaped: its pid cannot have been reused
        try:
            leads_group = os.getpgid(proc.pid) == proc.pid
        except ProcessLookupError:
            leads_group = False
        if leads_group:
            groups.add(proc.pid)
        else:  # started without a group of its own: the process alone
            proc.send_signal(sig)
    groups.discard(os.getpgrp())  # never this process's own group
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_session(proc: subprocess.Popen, grace_s: float | None = None,
                 kill_wait_s: float = STOP_KILL_WAIT_S) -> bool:
    """Stop ``proc`` and everything in the session it leads: SIGTERM, then SIGKILL.

    Parameters
    ----------
    proc : subprocess.Popen
        The launcher (``mpirun``, ``srun``, the DFT binary), started with
        ``start_new_session=True``: its session holds all the run's processes,
        MPI ranks in process groups of their own included.
    grace_s : float, optional
        Seconds from SIGTERM to SIGKILL (default :data:`STOP_GRACE_S`, read
        at each call).
    kill_wait_s : float
        Seconds to wait for the processes to be gone after SIGKILL.

    Returns
    -------
    bool
        ``True`` once no process of the session is left (``proc`` reaped).

    Examples
    --------
    >>> import subprocess
    >>> p = subprocess.Popen(["sleep", "60"], start_new_session=True)
    >>> stop_session(p, grace_s=5)
    True
    """
    grace_s = STOP_GRACE_S if grace_s is None else grace_s
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
        _signal_session(proc, sig)
        end = time.monotonic() + wait
        while _running(proc):
            if time.monotonic() >= end:
                break
            time.sleep(0.05)
        else:
            return True
    return False


class DftStopped(BaseException):
    """A stop signal arrived during a guarded run (internal: see :class:`StopGuard`).

    A ``BaseException``, so that custodian's and our ``except Exception``
    cannot turn a stopped run into a failed (or corrected) calculation.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _act_on_stop(signum: int, previous) -> None:
    """After the run stopped: do what the process would have done with ``signum``.

    The previous Python handler runs (``KeyboardInterrupt`` for Ctrl-C); if
    there is none, or it returns, :class:`SystemExit` ``(128 + signum)``.
    """
    log.warning("DFT run stopped by %s: its processes are ended, its outputs are no result",
                signal.Signals(signum).name)
    if callable(previous):
        try:
            previous(signum, None)
        except BaseException as exc:
            raise exc from None
    raise SystemExit(128 + signum) from None


class StopGuard:
    """Forward SIGTERM, SIGINT and SIGHUP to the DFT processes of a custodian run.

    A context manager around ``Custodian.run()`` with every job passed to
    :meth:`track`. On a signal the sessions of the processes the jobs started
    are stopped (:func:`stop_session`), then :class:`DftStopped` ends the run;
    on leaving, whatever ended the run, no process of it is left, the previous
    handlers are back and the signal is acted on (:func:`_act_on_stop`). A
    signal while a job is starting its process is acted on as soon as the
    process is known; a second signal while stopping sends SIGKILL at once.
    Signals ignored before (``nohup``, background jobs) stay ignored. Outside
    the main thread no handler can be set: the run goes ahead without.

    Examples
    --------
    >>> with StopGuard() as guard:  # doctest: +SKIP
    ...     for job in custodian.jobs:
    ...         guard.track(job)
    ...     custodian.run()
    """

    def __init__(self):
        self.procs, self.signum, self._previous = [], None, {}
        self._launching, self._defer, self._jobs = 0, False, []

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            log.warning("DFT run outside the main thread: stop signals are not forwarded")
            return self
        self._defer = True  # a signal now is acted on once every handler is set
        self._install_handlers()
        self._defer = False
        if self.signum is not None:
            self.__exit__(None, None, None)
        return self

    def _install_handlers(self) -> None:
        """Our handler for each stop signal not ignored; the previous ones kept."""
        for sig in STOP_SIGNALS:
            previous = signal.getsignal(sig)
            if previous in (signal.SIG_IGN, None):  # None: set outside Python
                continue
            try:
                signal.signal(sig, self._on_signal)
            except ValueError:  # not the main interpreter
                log.warning("stop signals cannot be forwarded here: %s not handled", sig.name)
                continue
            self._previous[sig] = previous

    def track(self, job):
        """Wrap ``job.run`` so each process it starts is known before a signal is acted on."""
        run = job.run

        def tracked_run(directory="./"):
            self.procs = [q for q in self.procs if _running(q)]
            self._launching += 1
            try:
                p = run(directory=directory)
                if isinstance(p, subprocess.Popen):
                    self.procs.append(p)
            finally:
                self._launching -= 1
                if self.signum is not None and not self._launching and not self._defer:
                    self._stop_all()
                    raise DftStopped(self.signum)
            return p

        job.run = tracked_run
        self._jobs.append(job)
        return job

    def _on_signal(self, signum, frame):
        if self.signum is not None:  # a second signal: no more grace
            for p in self.procs:
                _signal_session(p, signal.SIGKILL)
            return
        self.signum = signum
        if self._launching or self._defer:
            return
        self._stop_all()
        raise DftStopped(signum)

    def _stop_all(self):
        for p in list(self.procs):
            if stop_session(p):
                self.procs.remove(p)  # gone: never signal its (reusable) ids again
            else:
                log.error("processes of the DFT session %d did not end after SIGKILL", p.pid)

    def _restore(self) -> None:
        """The previous signal handlers back, the jobs' own ``run`` back."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        for job in self._jobs:
            vars(job).pop("run", None)

    def __exit__(self, kind, exc, tb):
        self._defer = True
        try:
            self._stop_all()  # nothing of the run outlives it, whatever ended it
        finally:
            self._restore()
        if self.signum is not None:
            _act_on_stop(self.signum, self._previous.get(self.signum, signal.SIG_DFL))
        return False


__all__ = ["STOP_GRACE_S", "STOP_KILL_WAIT_S", "STOP_SIGNALS", "DftStopped", "StopGuard",
           "stop_session"]
