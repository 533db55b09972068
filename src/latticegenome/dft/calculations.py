"""DFT on the structure models, under custodian: CP2K here, VASP on HPC.

:func:`run_model` is one calculation on one model (the ``dft`` rule): the
engine of the settings, its k-point grid, the result with the model's record
and the energy per formula unit; :func:`dft_table` joins the results with the
class table (the ``dft_table`` rule).

CP2K (Debian's ``cp2k``): inputs from :mod:`pymatgen.io.cp2k` with settings
that converge for small perovskite cells (closed shell, 400 Ry, Monkhorst-Pack
k-points with diagonalisation and added MOs, DZVP-MOLOPT-SR / GTH-PBE from
CP2K's own data files), run by :class:`~latticegenome.dft.jobs.OwnCp2kJob`
under custodian with its SCF, frozen-job, abort, precision and stderr
handlers, our :class:`~latticegenome.dft.jobs.MaxScfHandler`, and the output
validator.

The band gap is computed here from CP2K's DOS histogram (occupied vs empty
states over all k-points): pymatgen's CP2K DOS parse is wrong with k-points.

VASP: :func:`write_vasp_inputs` (``MPStaticSet``/``MPRelaxSet``, POTCAR spec
when POTCARs are absent) and :func:`vasp_custodian`
(:class:`~latticegenome.dft.jobs.OwnVaspJob` with the standard handlers) with
the launch command from the machine profile.

Stopping: the DFT runs in a session of its own; while it runs under custodian,
SIGTERM, SIGINT and SIGHUP stop every process of it and nothing is returned as
a result (:mod:`latticegenome.dft.stopping`).

No global state: the DFT processes get their directory (``cwd=``) and their
environment (one OpenMP thread per MPI rank, ``env=``) from ``Popen``; this
process's working directory and environment stay as they are.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path

import numpy as np

from latticegenome.core.errors import ConfigError
from latticegenome.dft.stopping import DftStopped, StopGuard, stop_session
from latticegenome.dft.structures import read_model

HARTREE_EV = 27.211386245988
BASIS = "DZVP-MOLOPT-SR-GTH"
POTENTIAL = "GTH-PBE"
# Open MPI refuses to start as root (containers, CI) unless these are set: set
# for the CP2K processes where the environment does not say otherwise.
MPI_AS_ROOT = ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")


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
    Every atom kind gets :data:`BASIS` and :data:`POTENTIAL` from CP2K's own
    data files (``BASIS_MOLOPT``, ``GTH_POTENTIALS``), whatever pymatgen's
    CP2K data directory holds (see :func:`_explicit_kinds`).

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> sto = Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
    ...                 [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])
    >>> "SCHEME MONKHORST-PACK 4 4 4" in cp2k_input(sto).get_str()
    True
    """
    from pymatgen.io.cp2k.inputs import Keyword
    from pymatgen.io.cp2k.sets import StaticSet
    from pymatgen.io.vasp.inputs import Kpoints

    grid = kpoints or kpoint_grid(structure)
    bp = {el: {"basis": BASIS, "potential": POTENTIAL, "basis_filename": "BASIS_MOLOPT",
               "potential_filename": "GTH_POTENTIALS"} for el in structure.symbol_set}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "unable to validate basis": no data file, as meant
        inp = StaticSet(structure=structure, project_name=project, spin_polarized=False,
                        cutoff=cutoff_ry, rel_cutoff=rel_cutoff_ry, eps_default=1e-10,
                        eps_scf=eps_scf, max_scf=max_scf, xc_functionals=["PBE"],
                        kpoints=Kpoints.monkhorst_automatic(grid), basis_and_potential=bp)
    _explicit_kinds(inp)
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


def _explicit_kinds(inp) -> None:
    """Name :data:`BASIS` and :data:`POTENTIAL` in every ``KIND`` of ``inp`` (in place).

    Given names, pymatgen puts them in the input as they are, unless its CP2K
    data directory (``CP2K_DATA_DIR``, else the ``PMG_CP2K_DATA_DIR``
    setting, else the working directory) holds an element file of its own
    format to match them against. Setting them here keeps CP2K's names
    whatever that directory holds, without changing pymatgen's settings or
    the environment.
    """
    from pymatgen.io.cp2k.inputs import Keyword

    for kind in inp["FORCE_EVAL"]["SUBSYS"].subsections.values():
        if kind.name.upper() == "KIND":
            kind.keywords["BASIS_SET"] = Keyword("BASIS_SET", BASIS)
            kind.keywords["POTENTIAL"] = Keyword("POTENTIAL", POTENTIAL)


def cp2k_command(launcher: str = "mpirun", ntasks: int = 1, binary: str = "cp2k.psmp") -> list[str]:
    """The command that runs CP2K: ``[binary]`` or ``[launcher, -n, N, binary]``."""
    if ntasks <= 1 or not launcher:
        return [binary]
    if launcher == "mpirun":
        return ["mpirun", "-np", str(ntasks), "--bind-to", "none", binary]
    return [launcher, "-n", str(ntasks), binary]


def _custodian_run(c) -> tuple[str, str, list]:
    """Run a Custodian: ``(status, reason, corrections)``; never raises for a failed run.

    Stop signals are forwarded to the DFT processes
    (:class:`~latticegenome.dft.stopping.StopGuard`): a stopped run raises
    ``KeyboardInterrupt`` or ``SystemExit(128 + signal)`` once none of its
    processes is left, and returns nothing.
    """
    with StopGuard() as guard:
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


def _dft_env(omp_threads: int, *, mpi_as_root: bool = False) -> dict[str, str]:
    """Environment overrides for the DFT processes (this process's stays as it is).

    One OpenMP thread per MPI rank: Snakemake sets ``OMP_NUM_THREADS`` to the
    job's threads, and ranks x threads > cores made CP2K ~20x slower here.
    With ``mpi_as_root``, :data:`MPI_AS_ROOT` set to ``1`` unless set already.

    Examples
    --------
    >>> _dft_env(1)
    {'OMP_NUM_THREADS': '1'}
    """
    env = {"OMP_NUM_THREADS": str(omp_threads)}
    if mpi_as_root:
        env.update({k: os.environ.get(k, "1") for k in MPI_AS_ROOT})
    return env


def cp2k_custodian(directory: str | Path, command: list[str], *, max_errors: int = 5,
                   omp_threads: int = 1):
    """A :class:`custodian.Custodian` running CP2K (input ``cp2k.inp``) in ``directory``.

    custodian's SCF, frozen-job, abort, precision and stderr handlers with our
    :class:`~latticegenome.dft.jobs.MaxScfHandler` first, and the output
    validator; the job's processes get ``omp_threads`` (:func:`_dft_env`).
    """
    from custodian import Custodian
    from custodian.cp2k.handlers import (
        AbortHandler,
        FrozenJobErrorHandler,
        NumericalPrecisionHandler,
        UnconvergedScfErrorHandler,
    )
    from custodian.cp2k.validators import Cp2kOutputValidator

    from latticegenome.dft.jobs import Cp2kStdErrHandler, MaxScfHandler, OwnCp2kJob

    handlers = [MaxScfHandler(), UnconvergedScfErrorHandler(), FrozenJobErrorHandler(timeout=3600),
                AbortHandler(), NumericalPrecisionHandler(), Cp2kStdErrHandler()]
    job = OwnCp2kJob(command, input_file="cp2k.inp", output_file="cp2k.out",
                     stderr_file="std_err.txt", suffix="", final=True, backup=True)
    job.env = _dft_env(omp_threads, mpi_as_root=True)
    return Custodian(handlers, [job], [Cp2kOutputValidator()], max_errors=max_errors,
                     directory=str(directory), polling_time_step=2, monitor_freq=5)


def run_cp2k(directory: str | Path, command: list[str], *, max_errors: int = 5,
             omp_threads: int = 1) -> dict:
    """Run CP2K in ``directory`` (input ``cp2k.inp``) under custodian; parse the result.

    Never raises for a failed calculation: returns ``status: failed`` with
    the reason (custodian's last error, or the validator's) instead. CP2K runs
    in ``directory`` with ``omp_threads`` OpenMP threads per MPI rank; the
    working directory and the environment of this process are left as they are.
    """
    directory = Path(directory).resolve()
    t0 = time.time()
    c = cp2k_custodian(directory, command, max_errors=max_errors, omp_threads=omp_threads)
    status, reason, corrections = _custodian_run(c)
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


def vasp_custodian(directory: str | Path, command: list[str], *, max_errors: int = 5,
                   omp_threads: int = 1):
    """A :class:`custodian.Custodian` running VASP in ``directory`` with the standard handlers.

    The job (:class:`~latticegenome.dft.jobs.OwnVaspJob`) starts VASP with
    ``omp_threads`` OpenMP threads per MPI rank (:func:`_dft_env`).
    """
    from custodian import Custodian
    from custodian.vasp.handlers import (
        FrozenJobErrorHandler,
        NonConvergingErrorHandler,
        PotimErrorHandler,
        StdErrHandler,
        UnconvergedErrorHandler,
        VaspErrorHandler,
    )
    from custodian.vasp.validators import VasprunXMLValidator

    from latticegenome.dft.jobs import OwnVaspJob

    handlers = [VaspErrorHandler(), UnconvergedErrorHandler(), NonConvergingErrorHandler(),
                PotimErrorHandler(), FrozenJobErrorHandler(), StdErrHandler()]
    job = OwnVaspJob(command, final=True)
    job.env = _dft_env(omp_threads)
    return Custodian(handlers, [job], [VasprunXMLValidator()],
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
    t0 = time.time()
    c = vasp_custodian(directory, command, max_errors=max_errors, omp_threads=omp_threads)
    result = {"energy_eV": None, "band_gap_eV": None, "max_force_eV_per_A": None,
              "converged": False}
    status, reason, corrections = _custodian_run(c)
    if status == "ok":
        try:
            result.update(parse_vasprun(directory / "vasprun.xml"))
            if not result["converged"]:
                status, reason = "failed", "not converged (electronic or ionic)"
        except Exception as exc:
            status, reason = "failed", f"unreadable vasprun.xml: {type(exc).__name__}: {exc}"[:300]
    result.update(status=status, reason=reason, runtime_s=round(time.time() - t0, 1),
                  corrections=corrections)
    return result


def parse_vasprun(path: str | Path) -> dict:
    """Final energy (eV, whole cell), band gap (eV), largest force (eV/Å), convergence.

    Raises whatever pymatgen raises for an unreadable ``vasprun.xml``.
    """
    from pymatgen.io.vasp.outputs import Vasprun

    vr = Vasprun(str(path), parse_potcar_file=False)
    forces = np.asarray(vr.ionic_steps[-1].get("forces") or [[0, 0, 0]], float)
    return {"energy_eV": float(vr.final_energy),
            "band_gap_eV": float(vr.get_band_structure().get_band_gap()["energy"]),
            "max_force_eV_per_A": float(np.linalg.norm(forces, axis=1).max()),
            "converged": bool(vr.converged)}


# --------------------------------------------------------------------------- one model, the table


def _run_cp2k_on(structure, work: Path, grid, settings: dict, launcher: str, ntasks: int) -> dict:
    cp2k_input(structure, cutoff_ry=settings.get("cutoff_ry", 400),
               max_scf=settings.get("max_scf", 100), kpoints=grid).write_file("cp2k.inp", str(work))
    return run_cp2k(work, cp2k_command(launcher, ntasks))


def _run_vasp_on(structure, work: Path, grid, settings: dict, launcher: str, ntasks: int) -> dict:
    write_vasp_inputs(structure, work, relax=settings.get("relax", False))
    return run_vasp(work, vasp_command(launcher, ntasks, settings.get("vasp_binary", "vasp_std")))


ENGINES = {"cp2k": _run_cp2k_on, "vasp": _run_vasp_on}


def run_model(model_json: str | Path, workdir: str | Path, settings: dict, *,
              launcher: str = "mpirun", ntasks: int = 1) -> dict:
    """One DFT calculation on one model (the ``dft`` rule); never raises for a failed run.

    Parameters
    ----------
    model_json : path
        A model written by :func:`latticegenome.dft.structures.write_model`.
    workdir : path
        The calculation's folder (made if absent): inputs, outputs, custodian's log.
    settings : dict
        The configuration's ``dft`` block: ``engine`` (``cp2k`` or ``vasp``),
        ``kpoint_density_A`` (k-points per axis x lattice length, Å), CP2K's
        ``cutoff_ry`` and ``max_scf``, VASP's ``relax`` and ``vasp_binary``.
    launcher, ntasks : str, int
        The MPI launcher and its number of tasks (one task: no launcher for CP2K).

    Returns
    -------
    dict
        The engine's result (:func:`run_cp2k` or :func:`run_vasp`) with
        ``model`` (the model's record), ``engine``, ``kpoints``, ``n_atoms``,
        ``formula_units`` and ``energy_per_fu_eV`` (``None`` without an energy).
    """
    structure, meta = read_model(model_json)
    engine = settings.get("engine", "cp2k")
    if engine not in ENGINES:
        raise ConfigError(f"dft.engine: {engine!r} is not one of {sorted(ENGINES)}")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    grid = kpoint_grid(structure, settings.get("kpoint_density_A", 16))
    result = ENGINES[engine](structure, work, grid, settings, launcher, int(ntasks))
    nfu = structure.composition.get_reduced_composition_and_factor()[1]
    result.update(model=meta, engine=engine, kpoints=list(grid), n_atoms=len(structure),
                  formula_units=nfu,
                  energy_per_fu_eV=result["energy_eV"] / nfu if result.get("energy_eV") else None)
    return result


def _not_run(models, cls: str) -> str:
    """Why a class has no DFT result: too rare, or its material's reference structure
    within the artefacts (the models folder's record says which)."""
    meta_path = Path(models) / f"class_{cls}.json" if models else None
    if meta_path is not None and meta_path.is_file():
        meta = json.loads(meta_path.read_text()).get("latticegenome", {})
        if meta.get("distinct_from_reference") is False:
            return (f"not run: its material's reference structure within the image "
                    f"artefacts ({meta.get('difference', '')})")
    return "not run (below dft.min_fraction)"


def dft_table(result_paths, classes: list[dict], models=None) -> dict:
    """One row per class: measured numbers, population, and its DFT result.

    ``dE_meV_per_fu`` is the class model's energy per formula unit minus the
    undistorted reference of the same material (meV). Classes without a run
    (too rare, or not a structure apart from its material's reference: see the
    class models in ``models``) or with a failed run keep their row with the
    status and reason.
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
            "status": d["status"] if d else _not_run(models, str(row["class"])),
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


__all__ = ["ENGINES", "DftStopped", "band_gap_from_dos", "cp2k_command", "cp2k_custodian",
           "cp2k_input", "dft_table", "kpoint_grid", "parse_cp2k", "parse_vasprun", "run_cp2k",
           "run_model", "run_vasp", "stop_session", "vasp_command", "vasp_custodian",
           "write_vasp_inputs"]
