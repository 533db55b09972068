"""DFT on the structure models, under custodian: CP2K here, VASP on HPC.

CP2K (Debian's ``cp2k``): inputs from :mod:`pymatgen.io.cp2k` with settings
that converge for small perovskite cells (closed shell, 400 Ry, Monkhorst-Pack
k-points with diagonalisation and added MOs, DZVP-MOLOPT-SR / GTH-PBE from
CP2K's own data files), run by :class:`OwnCp2kJob` under custodian with its
SCF, frozen-job, abort, precision and stderr handlers, our
:class:`MaxScfHandler`, and the output validator.

The band gap is computed here from CP2K's DOS histogram (occupied vs empty
states over all k-points): pymatgen's CP2K DOS parse is wrong with k-points.

VASP: :func:`write_vasp_inputs` (``MPStaticSet``/``MPRelaxSet``, POTCAR spec
when POTCARs are absent) and :func:`vasp_custodian` (``VaspJob`` with the
standard handlers) with the launch command from the machine profile.

Stopping: the DFT runs in a session of its own (``start_new_session``), where
SIGTERM from the batch system and Ctrl-C do not reach it. While a run is under
custodian, SIGTERM, SIGINT and SIGHUP are forwarded to every process of that
session (Open MPI puts each rank in a process group of its own), which gets
:data:`STOP_GRACE_S` to end before SIGKILL; once none is left the previous
handlers are back and the signal is acted on (``KeyboardInterrupt`` for
Ctrl-C, else ``SystemExit(128 + signal)``), so nothing is returned as a result.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
import warnings
from pathlib import Path

import numpy as np

HARTREE_EV = 27.211386245988
BASIS = "DZVP-MOLOPT-SR-GTH"
POTENTIAL = "GTH-PBE"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_GRACE_S = 10.0  # SIGTERM to SIGKILL when a run is stopped
STOP_KILL_WAIT_S = 5.0

log = logging.getLogger(__name__)


def kpoint_grid(structure, density_A: float = 16.0) -> tuple[int, int, int]:
    """Monkhorst-Pack grid with about ``density_A`` / lattice length (Å) points per axis."""
    return tuple(max(1, int(round(density_A / float(x)))) for x in structure.lattice.abc)


def cp2k_input(structure, *, cutoff_ry: float = 400, rel_cutoff_ry: float = 50,
               max_scf: int = 100, eps_scf: float = 1e-6, kpoints=None, added_mos: int = 8,
               project: str = "latticegenome"):
    """A :class:`pymatgen.io.cp2k.inputs.Cp2kInput` for a closed-shell static run with forces.

    Monkhorst-Pack grids (never pymatgen's symmetry-reduced Gamma lists, which
    CP2K runs with SYMMETRY off and get wrong energies), diagonalisation with
    ``added_mos`` empty bands per k-point for the gap, DOS and forces printed.
    """
    from pymatgen.io.cp2k.inputs import Keyword
    from pymatgen.io.cp2k.sets import StaticSet
    from pymatgen.io.vasp.inputs import Kpoints

    grid = kpoints or kpoint_grid(structure)
    bp = {el: {"basis": BASIS, "potential": POTENTIAL, "basis_filename": "BASIS_MOLOPT",
               "potential_filename": "GTH_POTENTIALS"} for el in structure.symbol_set}
    prev = os.environ.get("PMG_CP2K_DATA_DIR")
    os.environ["PMG_CP2K_DATA_DIR"] = "/nonexistent"  # explicit names: no pymatgen matching
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inp = StaticSet(structure=structure, project_name=project, spin_polarized=False,
                            cutoff=cutoff_ry, rel_cutoff=rel_cutoff_ry, eps_default=1e-10,
                            eps_scf=eps_scf, max_scf=max_scf, xc_functionals=["PBE"],
                            kpoints=Kpoints.monkhorst_automatic(grid),
                            basis_and_potential=bp)
    finally:
        if prev is None:
            os.environ.pop("PMG_CP2K_DATA_DIR", None)
        else:
            os.environ["PMG_CP2K_DATA_DIR"] = prev
    inp.print_forces()
    # No stress tensor: with k-points and a displaced B site, CP2K 2023.1 spent
    # more than 10 min on the analytical stress of a 5-atom cell (30 s without).
    fe = inp["FORCE_EVAL"]
    fe.keywords.pop("STRESS_TENSOR", None)
    if "PRINT" in fe.subsections:
        fe["PRINT"].subsections.pop("STRESS_TENSOR", None)
    dft = fe["DFT"]
    if "PRINT" in dft.subsections:  # cube files: large, not used here
        for cube in ("E_DENSITY_CUBE", "V_HARTREE_CUBE", "MO_CUBES"):
            dft["PRINT"].subsections.pop(cube, None)
    dft.keywords["POTENTIAL_FILE_NAME"] = Keyword("POTENTIAL_FILE_NAME", "GTH_POTENTIALS")
    dft["SCF"].keywords["ADDED_MOS"] = Keyword("ADDED_MOS", added_mos)
    dft["SCF"].keywords["MAX_SCF"] = Keyword("MAX_SCF", max_scf)
    return inp


# --------------------------------------------------------------------------- stopping a run


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
        Seconds from SIGTERM to SIGKILL (default :data:`STOP_GRACE_S`).
    kill_wait_s : float
        Seconds to wait for the processes to be gone after SIGKILL.

    Returns
    -------
    bool
        ``True`` once no process of the session is left (``proc`` reaped).
    """
    grace_s = STOP_GRACE_S if grace_s is None else grace_s
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
        _signal_session(proc, sig)
        end = time.monotonic() + wait
        while _leader_alive(proc) or _session_members(proc.pid):
            if time.monotonic() >= end:
                break
            time.sleep(0.05)
        else:
            return True
    return False


class DftStopped(BaseException):
    """A stop signal arrived during a guarded run (internal: see :class:`_StopGuard`).

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


class _StopGuard:
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
    """

    def __init__(self):
        self.procs, self.signum, self._previous = [], None, {}
        self._launching, self._defer, self._jobs = 0, False, []

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            log.warning("DFT run outside the main thread: stop signals are not forwarded")
            return self
        self._defer = True  # a signal now is acted on once every handler is set
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
        self._defer = False
        if self.signum is not None:
            self.__exit__(None, None, None)
        return self

    def track(self, job):
        """Wrap ``job.run`` so each process it starts is known before a signal is acted on."""
        run = job.run

        def tracked_run(directory="./"):
            self.procs = [q for q in self.procs if _leader_alive(q) or _session_members(q.pid)]
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

    def __exit__(self, kind, exc, tb):
        self._defer = True
        try:
            self._stop_all()  # nothing of the run outlives it, whatever ended it
        finally:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
            for job in self._jobs:
                vars(job).pop("run", None)
        if self.signum is not None:
            _act_on_stop(self.signum, self._previous.get(self.signum, signal.SIG_DFL))
        return False


# --------------------------------------------------------------------------- custodian


def _custodian_classes():
    from custodian.cp2k.jobs import Cp2kJob
    from custodian.custodian import ErrorHandler

    class OwnCp2kJob(Cp2kJob):
        """custodian's Cp2kJob that only ever stops its own process group.

        Upstream ``terminate()`` runs ``killall cp2k...``, which kills every
        CP2K on the node, other jobs' included; this one ends the session of
        the run (:func:`stop_session`).
        """

        _proc = None

        def run(self, directory="./"):
            cmd = [*self.cp2k_cmd, "-i", self.input_file]
            with open(os.path.join(directory, self.output_file), "w") as out, \
                    open(os.path.join(directory, self.stderr_file), "w", buffering=1) as err:
                self._proc = subprocess.Popen(cmd, cwd=directory, stdout=out, stderr=err,
                                              start_new_session=True)
            return self._proc

        def terminate(self, directory="./"):
            if self._proc is not None:
                stop_session(self._proc)  # MPI ranks too: not in mpirun's process group

    class MaxScfHandler(ErrorHandler):
        """SCF not converged within MAX_SCF: allow more iterations (check, then correct).

        custodian's own SCF handler changes the mixing but never raises
        MAX_SCF; this one multiplies it by ``factor`` up to ``limit``.
        """

        is_monitor = False

        def __init__(self, input_file="cp2k.inp", output_file="cp2k.out", factor=4, limit=400):
            self.input_file, self.output_file = input_file, output_file
            self.factor, self.limit = factor, limit

        def _max_scf(self, directory):
            from pymatgen.io.cp2k.inputs import Cp2kInput

            inp = Cp2kInput.from_file(os.path.join(directory, self.input_file))
            return inp, int(inp["FORCE_EVAL"]["DFT"]["SCF"]["MAX_SCF"].values[0])

        def check(self, directory="./"):
            out = Path(directory) / self.output_file
            text = out.read_text(errors="replace") if out.exists() else ""
            if "SCF run NOT converged" not in text:
                return False
            return self._max_scf(directory)[1] < self.limit

        def correct(self, directory="./"):
            from pymatgen.io.cp2k.inputs import Keyword

            inp, n = self._max_scf(directory)
            new = min(self.limit, n * self.factor)
            inp["FORCE_EVAL"]["DFT"]["SCF"].keywords["MAX_SCF"] = Keyword("MAX_SCF", new)
            inp.write_file(self.input_file, directory)
            return {"errors": ["SCF not converged"], "actions": [{"MAX_SCF": [n, new]}]}

    return OwnCp2kJob, MaxScfHandler


def cp2k_command(launcher: str = "mpirun", ntasks: int = 1, binary: str = "cp2k.psmp") -> list[str]:
    """The command that runs CP2K: ``[binary]`` or ``[launcher, -n, N, binary]``."""
    if ntasks <= 1 or not launcher:
        return [binary]
    if launcher == "mpirun":
        return ["mpirun", "-np", str(ntasks), "--bind-to", "none", binary]
    return [launcher, "-n", str(ntasks), binary]


def _custodian_run(c) -> tuple[str, str, list]:
    """Run a Custodian: ``(status, reason, corrections)``; never raises for a failed run.

    Stop signals are forwarded to the DFT processes (:class:`_StopGuard`):
    a stopped run raises ``KeyboardInterrupt`` or ``SystemExit(128 + signal)``
    once none of its processes is left, and returns nothing.
    """
    with _StopGuard() as guard:
        for job in c.jobs:
            guard.track(job)
        try:
            runs = c.run()
            status, reason = "ok", ""
        except Exception as exc:  # custodian: max errors, validator, unrecoverable
            runs = getattr(c, "run_log", [])
            first = (str(exc).splitlines() or [""])[0]
            status, reason = "failed", f"{type(exc).__name__}: {first[:300]}"
    corrections = [a for r in runs for a in r.get("corrections", [])]
    return status, reason, json.loads(json.dumps(corrections, default=str))


def run_cp2k(directory: str | Path, command: list[str], *, max_errors: int = 5,
             omp_threads: int = 1) -> dict:
    """Run CP2K in ``directory`` (input ``cp2k.inp``) under custodian; parse the result.

    Never raises for a failed calculation: returns ``status: failed`` with
    the reason (custodian's last error, or the validator's) instead.
    """
    from custodian import Custodian
    from custodian.cp2k.handlers import (
        AbortHandler,
        FrozenJobErrorHandler,
        NumericalPrecisionHandler,
        StdErrHandler,
        UnconvergedScfErrorHandler,
    )
    from custodian.cp2k.validators import Cp2kOutputValidator

    OwnCp2kJob, MaxScfHandler = _custodian_classes()
    directory = Path(directory).resolve()
    # One OpenMP thread per MPI rank: Snakemake sets OMP_NUM_THREADS to the
    # job's threads, and ranks x threads > cores made CP2K ~20x slower here.
    os.environ["OMP_NUM_THREADS"] = str(omp_threads)
    for k in ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"):
        os.environ.setdefault(k, "1")
    handlers = [MaxScfHandler(), UnconvergedScfErrorHandler(), FrozenJobErrorHandler(timeout=3600),
                AbortHandler(), NumericalPrecisionHandler(), StdErrHandler()]
    job = OwnCp2kJob(command, input_file="cp2k.inp", output_file="cp2k.out",
                     stderr_file="std_err.txt", suffix="", final=True, backup=True)
    t0 = time.time()
    cwd = os.getcwd()
    os.chdir(directory)  # StdErrHandler.check() ignores its directory argument
    try:
        c = Custodian(handlers, [job], [Cp2kOutputValidator()], max_errors=max_errors,
                      directory=str(directory), polling_time_step=2, monitor_freq=5)
        status, reason, corrections = _custodian_run(c)
    finally:
        os.chdir(cwd)
    result = parse_cp2k(directory)
    if status == "ok" and not result["converged"]:
        status, reason = "failed", "SCF not converged"
    result.update(status=status, reason=reason, runtime_s=round(time.time() - t0, 1),
                  corrections=corrections)
    return result


def parse_cp2k(directory: str | Path) -> dict:
    """Energy (eV), forces (eV/Å), SCF convergence and band gap of a CP2K run."""
    directory = Path(directory)
    out = directory / "cp2k.out"
    text = out.read_text(errors="replace") if out.exists() else ""
    m = re.findall(r"ENERGY\| Total FORCE_EVAL \( QS \) energy \[a\.u\.\]:\s+(-?\d+\.\d+)", text)
    energy = float(m[-1]) * HARTREE_EV if m else None
    forces = None
    try:
        from pymatgen.io.cp2k.outputs import Cp2kOutput

        o = Cp2kOutput(str(out), auto_load=False)
        o.parse_forces()
        f = o.data.get("forces")
        if f:
            forces = np.asarray(f[-1], float)
    except Exception:
        forces = None
    gap = None
    dos = sorted(directory.glob("*.dos"))
    if dos:
        gap = band_gap_from_dos(dos[-1])
    return {"energy_eV": energy, "converged": "SCF run converged" in text
            and "SCF run NOT converged" not in text,
            "max_force_eV_per_A": float(np.linalg.norm(forces, axis=1).max())
            if forces is not None and len(forces) else None,
            "forces_eV_per_A": forces.tolist() if forces is not None else None,
            "band_gap_eV": gap}


def band_gap_from_dos(path: str | Path) -> float | None:
    """Band gap (eV) from CP2K's DOS histogram over all k-points.

    Bins holding states are occupied when their occupation is more than half
    of their capacity (2 electrons per state, closed shell); the gap is the
    lowest empty bin minus the highest occupied bin. ``None`` without empty
    states (no ADDED_MOS) or for a metal (no gap between the two).
    """
    d = np.loadtxt(path, comments="#")
    if d.ndim != 2 or d.shape[1] < 3:
        return None
    e, den, occ = d[:, 0], d[:, 1], d[:, 2]
    has = den > 0
    frac = np.zeros_like(den)
    frac[has] = occ[has] / (2.0 * den[has])
    occupied, empty = e[has & (frac > 0.5)], e[has & (frac <= 0.5)]
    if not len(occupied) or not len(empty):
        return None
    gap = (empty.min() - occupied.max()) * HARTREE_EV
    return float(gap) if gap > 0 else 0.0


# --------------------------------------------------------------------------- VASP (HPC)


def write_vasp_inputs(structure, directory: str | Path, *, relax: bool = False) -> Path:
    """INCAR, KPOINTS, POSCAR and POTCAR (or POTCAR.spec without POTCARs) in ``directory``."""
    from pymatgen.io.vasp.sets import MPRelaxSet, MPStaticSet

    vis = (MPRelaxSet if relax else MPStaticSet)(structure)
    have_potcars = bool(os.environ.get("PMG_VASP_PSP_DIR"))
    vis.write_input(str(directory), potcar_spec=not have_potcars)
    return Path(directory)


def vasp_command(launcher: str = "srun", ntasks: int = 1, binary: str = "vasp_std") -> list[str]:
    """The VASP launch command from the profile's launcher and task count."""
    if launcher == "aprun":
        return ["aprun", "-n", str(ntasks), binary]
    if launcher == "mpirun":
        return ["mpirun", "-np", str(ntasks), binary]
    return [launcher, "-n", str(ntasks), binary]


def vasp_custodian(directory: str | Path, command: list[str], *, max_errors: int = 5):
    """A :class:`custodian.Custodian` running VASP in ``directory`` with the standard handlers."""
    from custodian import Custodian
    from custodian.vasp.handlers import (
        FrozenJobErrorHandler,
        NonConvergingErrorHandler,
        PotimErrorHandler,
        StdErrHandler,
        UnconvergedErrorHandler,
        VaspErrorHandler,
    )
    from custodian.vasp.jobs import VaspJob
    from custodian.vasp.validators import VasprunXMLValidator

    handlers = [VaspErrorHandler(), UnconvergedErrorHandler(), NonConvergingErrorHandler(),
                PotimErrorHandler(), FrozenJobErrorHandler(), StdErrHandler()]
    return Custodian(handlers, [VaspJob(command, final=True)], [VasprunXMLValidator()],
                     max_errors=max_errors, directory=str(directory))


def run_vasp(directory: str | Path, command: list[str], *, max_errors: int = 5,
             omp_threads: int = 1) -> dict:
    """Run VASP in ``directory`` (inputs written by :func:`write_vasp_inputs`) under custodian.

    Never raises for a failed calculation: returns ``status: failed`` with the
    reason (custodian's last error, or the vasprun.xml validator's) instead.

    Returns
    -------
    dict
        ``energy_eV`` (final, whole cell), ``band_gap_eV``, ``max_force_eV_per_A``,
        ``converged``, ``status``, ``reason``, ``runtime_s``, ``corrections``.
    """
    directory = Path(directory).resolve()
    os.environ["OMP_NUM_THREADS"] = str(omp_threads)
    t0 = time.time()
    c = vasp_custodian(directory, command, max_errors=max_errors)
    result = {"energy_eV": None, "band_gap_eV": None, "max_force_eV_per_A": None,
              "converged": False}
    status, reason, corrections = _custodian_run(c)
    if status == "ok":
        try:
            from pymatgen.io.vasp.outputs import Vasprun

            vr = Vasprun(str(directory / "vasprun.xml"), parse_potcar_file=False)
            forces = np.asarray(vr.ionic_steps[-1].get("forces") or [[0, 0, 0]], float)
            result.update(energy_eV=float(vr.final_energy),
                          band_gap_eV=float(vr.get_band_structure().get_band_gap()["energy"]),
                          max_force_eV_per_A=float(np.linalg.norm(forces, axis=1).max()),
                          converged=bool(vr.converged))
            if not vr.converged:
                status, reason = "failed", "not converged (electronic or ionic)"
        except Exception as exc:
            status, reason = "failed", f"unreadable vasprun.xml: {type(exc).__name__}: {exc}"[:300]
    result.update(status=status, reason=reason, runtime_s=round(time.time() - t0, 1),
                  corrections=corrections)
    return result


def dft_table(result_paths, classes: list[dict]) -> dict:
    """One row per class: measured numbers, population, and its DFT result.

    ``dE_meV_per_fu`` is the class model's energy per formula unit minus the
    undistorted reference of the same material (meV). Classes without a run
    (too rare) or with a failed run keep their row with the status and reason.
    """
    docs = [json.loads(Path(p).read_text()) for p in result_paths]
    refs = {d["model"]["material"]: d for d in docs if d["model"]["kind"] == "reference"}
    by_class = {str(d["model"]["class"]): d for d in docs if d["model"]["kind"] == "class"}
    cols = ["class", "material", "population", "fraction", "a_pm_mean", "b_pm_mean",
            "dx_pm_mean", "dy_pm_mean", "status", "reason", "energy_per_fu_eV", "dE_meV_per_fu",
            "band_gap_eV", "max_force_eV_per_A", "engine", "kpoints"]
    table = {c: [] for c in cols}
    for row in classes:
        d = by_class.get(str(row["class"]))
        mat = d["model"]["material"] if d else ""
        ref = refs.get(mat)
        e, e0 = (d or {}).get("energy_per_fu_eV"), (ref or {}).get("energy_per_fu_eV")
        vals = {
            "class": row["class"], "material": mat, "population": row["population"],
            "fraction": row["fraction"],
            **{k: row.get(k, "") for k in ("a_pm_mean", "b_pm_mean", "dx_pm_mean",
                                           "dy_pm_mean")},
            "status": d["status"] if d else "not run (below dft.min_fraction)",
            "reason": (d or {}).get("reason", ""),
            "energy_per_fu_eV": e if e is not None else float("nan"),
            "dE_meV_per_fu": (e - e0) * 1000 if e is not None and e0 is not None
            else float("nan"),
            "band_gap_eV": (d or {}).get("band_gap_eV") or float("nan"),
            "max_force_eV_per_A": (d or {}).get("max_force_eV_per_A") or float("nan"),
            "engine": (d or {}).get("engine", ""),
            "kpoints": "x".join(map(str, (d or {}).get("kpoints", []))),
        }
        for c in cols:
            table[c].append(vals[c])
    return table


__all__ = ["DftStopped", "band_gap_from_dos", "cp2k_command", "cp2k_input", "dft_table",
           "kpoint_grid", "parse_cp2k", "run_cp2k", "stop_session", "vasp_command",
           "vasp_custodian", "write_vasp_inputs"]
