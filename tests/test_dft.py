"""Structure models, Materials Project references, CP2K under custodian, VASP inputs."""

import json
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from latticegenome.core.tables import read_table
import responses
from pymatgen.core import Lattice, Structure

from latticegenome.core.errors import ConfigError
from latticegenome.dft.calculations import (
    band_gap_from_dos,
    cp2k_command,
    cp2k_input,
    dft_table,
    run_cp2k,
    run_model,
    run_vasp,
    vasp_command,
    write_vasp_inputs,
)
from latticegenome.dft.jobs import Cp2kStdErrHandler, OwnCp2kJob
from latticegenome.dft.structures import (
    class_materials,
    class_model,
    image_to_crystal,
    pseudocubic_cell,
    read_model,
    reference_structures,
    superlattice_model,
    write_model,
    write_models,
)

STO = Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])
needs_cp2k = pytest.mark.skipif(shutil.which("cp2k.psmp") is None,
                                reason="cp2k not installed (make test installs it as root)")
ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "statistics"
MATERIALS = [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5,
              "structure_file": str(ROOT / "resources" / "structures" / "SrTiO3.cif")},
             {"formula": "BaTiO3", "A": "Ba", "B": "Ti", "a_pm": 399.2,
              "structure_file": str(ROOT / "resources" / "structures" / "BaTiO3.cif")}]


@pytest.fixture
def unchanged_process_state():
    """The test leaves this process's working directory and environment as they were."""
    cwd, env = os.getcwd(), dict(os.environ)
    yield
    assert os.getcwd() == cwd
    assert dict(os.environ) == env


def test_class_model_strain_and_displacement():
    s = class_model(STO, a_site="Sr", b_site="Ti", inplane_pm=390.5, outofplane_pm=412.0,
                    displacement_pm=(0.0, 12.0))
    assert s.lattice.a == pytest.approx(3.905) and s.lattice.c == pytest.approx(4.12)
    ti = [site for site in s if site.specie.symbol == "Ti"][0]
    # B displaced by 12 pm = 0.12 A along +c from the cell centre
    assert ti.coords == pytest.approx([1.9525, 1.9525, 2.06 + 0.12])
    assert s.composition.reduced_formula == "SrTiO3"


def test_pseudocubic_cell_keeps_volume_per_formula_unit():
    big = STO * (1, 1, 2)
    big.apply_strain([0.01, 0.01, -0.005])
    cell = pseudocubic_cell(big, "Sr", "Ti")
    assert len(cell) == 5 and cell.volume == pytest.approx(big.volume / 2)


def test_superlattice_stacks_cells_in_order():
    sto = class_model(STO, a_site="Sr", b_site="Ti", inplane_pm=390.5, outofplane_pm=390.5,
                      displacement_pm=(0, 0))
    bto = class_model(STO.copy().replace_species({"Sr": "Ba"}), a_site="Ba", b_site="Ti",
                      inplane_pm=390.5, outofplane_pm=412.0, displacement_pm=(0, 12))
    s = superlattice_model([sto, sto, bto], inplane_pm=390.5)
    assert len(s) == 15 and s.lattice.c == pytest.approx(3.905 * 2 + 4.12)
    a_sites = sorted((site.frac_coords[2], site.specie.symbol) for site in s
                     if site.specie.symbol in ("Sr", "Ba"))
    assert [e for _, e in a_sites] == ["Sr", "Sr", "Ba"]


def test_class_materials_from_layers_and_nearest_parameter():
    mats = [{"name": "SrTiO3", "formula": "SrTiO3", "a_pm": 390.5},
            {"name": "BaTiO3", "formula": "BaTiO3", "a_pm": 399.2}]
    classes = [{"class": "0", "a_pm_mean": 390, "b_pm_mean": 412, "dx_pm_mean": 0,
                "dy_pm_mean": 12},
               {"class": "1", "a_pm_mean": 390, "b_pm_mean": 390, "dx_pm_mean": 0,
                "dy_pm_mean": 0},
               {"class": "2", "a_pm_mean": 390, "b_pm_mean": 411, "dx_pm_mean": 0,
                "dy_pm_mean": 0}]
    layers = [{"majority_class": "0", "material": "BaTiO3"},
              {"majority_class": "1", "material": "SrTiO3"}]
    owner = class_materials(classes, layers, mats, "y")
    assert {k: v["formula"] for k, v in owner.items()} == {"0": "BaTiO3", "1": "SrTiO3",
                                                          "2": "BaTiO3"}
    # layers named 'layer N' (fewer materials configured than the image has layers):
    # no vote, the nearest nominal parameter decides (was a StopIteration)
    unnamed = [{"majority_class": "0", "material": "layer 0"},
               {"majority_class": "1", "material": "layer 1"}]
    owner = class_materials(classes, unnamed, mats[:1], "y")
    assert {k: v["formula"] for k, v in owner.items()} == {"0": "SrTiO3", "1": "SrTiO3",
                                                          "2": "SrTiO3"}


def test_image_axes_map_onto_crystal_axes():
    row = {"a_pm_mean": 390.5, "b_pm_mean": 412.0, "dx_pm_mean": 0.5, "dy_pm_mean": 12.0}
    assert image_to_crystal(row, "y") == {"inplane_pm": 390.5, "outofplane_pm": 412.0,
                                          "displacement_pm": (0.5, 12.0)}
    assert image_to_crystal(row, "x") == {"inplane_pm": 412.0, "outofplane_pm": 390.5,
                                          "displacement_pm": (12.0, 0.5)}


@pytest.mark.parametrize("axis", ["y", "x"])
def test_write_models_folder_and_index(tmp_path, axis):
    out = tmp_path / "models"
    index = write_models(GOLDEN / "classes.csv", GOLDEN / "layers.csv", out, materials=MATERIALS,
                         stacking_axis=axis, mp_cache=tmp_path / "mp.json", min_fraction=0.1)
    assert json.loads((out / "index.json").read_text()) == {"models": index}
    rows = read_table(GOLDEN / "classes.csv")
    assert [m["name"] for m in index] == ["reference_SrTiO3", "reference_BaTiO3",
                                          *(f"class_{r['class']}" for r in rows), "superlattice"]
    assert index[2] == {"name": "class_0", "kind": "class", "class": "0",
                        "material": "BaTiO3", "run": True}  # the layers' vote
    # a class runs when it is frequent enough and a structure apart from its material's
    # reference; the SrTiO3 class (cubic, no displacement) is the reference itself
    distinct = [read_model(out / f"class_{r['class']}.json")[1]
                ["distinct_from_reference"] for r in rows]
    assert [m["run"] for m in index] == [True, True, *(
        float(r["fraction"]) >= 0.1 and d for r, d in zip(rows, distinct)), False]
    sto = [r for r in rows if abs(float(r["b_pm_mean"]) - 390.5) < 2
           and abs(float(r["dy_pm_mean"])) < 2]
    assert sto and all(not index[2 + rows.index(r)]["run"] for r in sto)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["index.json"] + [f"{m['name']}.{e}" for m in index for e in ("cif", "json")])
    assert not (tmp_path / "models.tmp").exists()
    s, meta = read_model(out / "class_0.json")
    assert meta["measured"]["source"] == str(GOLDEN / "classes.csv")
    # in-plane = crystal a, stacking axis = crystal c
    c_pm = float(rows[0]["b_pm_mean"] if axis == "y" else rows[0]["a_pm_mean"])
    assert s.lattice.c == pytest.approx(c_pm / 100) and meta["population"] == int(rows[0]["population"])
    assert c_pm > 405 if axis == "y" else c_pm < 395  # class 0 is the tetragonal BaTiO3
    stack, meta = read_model(out / "superlattice.json")
    assert meta["kind"] == "superlattice" and len(stack) == 5 * len(meta["layers"])


def test_dft_table_joins_results_with_classes(tmp_path):
    docs = {"ref": {"model": {"kind": "reference", "material": "SrTiO3"}, "status": "ok",
                    "energy_per_fu_eV": -100.0},
            "c0": {"model": {"kind": "class", "class": "0", "material": "SrTiO3"},
                   "status": "ok", "reason": "", "energy_per_fu_eV": -99.99, "band_gap_eV": 1.5,
                   "max_force_eV_per_A": 0.1, "engine": "cp2k", "kpoints": [4, 4, 4]}}
    for name, d in docs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(d))
    classes = [{"class": "0", "population": "10", "fraction": "0.9"},
               {"class": "1", "population": "1", "fraction": "0.1"}]
    t = dft_table([tmp_path / "ref.json", tmp_path / "c0.json"], classes)
    assert t["dE_meV_per_fu"][0] == pytest.approx(10.0) and t["kpoints"] == ["4x4x4", ""]
    assert t["status"] == ["ok", "not run (below dft.min_fraction)"]


# ---------------------------------------------------------------- Materials Project

MP = "https://api.materialsproject.org/"
KEY = "a" * 32


def _mp_responses(rsps):
    rsps.get(MP + "heartbeat", json={"db_version": "2025.09.25", "version": "0.86.1",
                                     "access_controlled_batch_ids": []})
    doc = lambda mid, ehull, a: {"material_id": mid, "energy_above_hull": ehull,  # noqa: E731
                                 "structure": Structure(Lattice.cubic(a), STO.species,
                                                        STO.frac_coords).as_dict()}
    rsps.get(re.compile(re.escape(MP) + r"materials/summary/\?.*formula=SrTiO3.*"),
             json={"data": [doc("mp-4651", 0.03, 3.95), doc("mp-5229", 0.0, 3.94)],
                   "meta": {"total_doc": 2, "max_limit": 1000}})


@pytest.fixture
def mp_clean():
    from mp_api.client.core.client import BaseRester

    for f in (getattr(BaseRester, "_get_heartbeat_info", None),):
        if hasattr(f, "cache_clear"):
            f.cache_clear()
    yield


@responses.activate
def test_mp_reference_ground_state_cached_then_offline(tmp_path, mp_clean):
    _mp_responses(responses.mock)
    cache = tmp_path / "mp.json"
    mats = [{"formula": "SrTiO3"}]
    refs = reference_structures(mats, cache_path=cache, api_key=KEY)
    assert refs["SrTiO3"]["source"]["material_id"] == "mp-5229"  # on the hull
    assert refs["SrTiO3"]["source"]["database_version"] == "2025.09.25"
    assert refs["SrTiO3"]["structure"].lattice.a == pytest.approx(3.94)
    entry = json.loads(cache.read_text())["SrTiO3"]
    assert entry["material_id"] == "mp-5229" and KEY not in cache.read_text()
    responses.reset()  # the network is gone: the cache answers, no request made
    refs = reference_structures(mats, cache_path=cache, api_key=None)
    assert refs["SrTiO3"]["source"]["material_id"] == "mp-5229"
    assert len(responses.calls) == 0


@responses.activate
def test_dead_network_with_key_falls_back_without_hanging(tmp_path, mp_clean, caplog):
    (tmp_path / "s.cif").write_text(str(__import__("pymatgen.io.cif", fromlist=["x"])
                                        .CifWriter(STO)))
    t = time.time()
    with caplog.at_level(logging.INFO, logger="latticegenome.dft.structures"):
        refs = reference_structures([{"formula": "SrTiO3", "structure_file": "s.cif"}],
                                    cache_path=tmp_path / "mp.json", api_key=KEY, base=tmp_path)
    assert time.time() - t < 10
    assert refs["SrTiO3"]["source"]["source"] == "file"
    assert "not reachable" in caplog.records[0].getMessage()


def test_no_reference_at_all_stops_with_a_clear_message(tmp_path):
    with pytest.raises(ConfigError, match="no reference structure for PbTiO3: set MP_API_KEY"):
        reference_structures([{"formula": "PbTiO3"}], cache_path=tmp_path / "none.json")


# ---------------------------------------------------------------- VASP (inputs only here)


def test_vasp_static_inputs_without_potcars(tmp_path, monkeypatch):
    monkeypatch.delenv("PMG_VASP_PSP_DIR", raising=False)
    write_vasp_inputs(STO, tmp_path)
    incar = dict(line.split(" = ") for line in (tmp_path / "INCAR").read_text().splitlines()
                 if " = " in line)
    assert float(incar["ENCUT"]) == 520 and incar["ISPIN"] == "2" and incar["NSW"] == "0"
    assert incar["ISMEAR"] == "-5" and "LORBIT" in incar
    kp = (tmp_path / "KPOINTS").read_text().splitlines()
    assert kp[2].lower().startswith(("gamma", "monkhorst")) or "pymatgen" in kp[0].lower()
    assert (tmp_path / "POTCAR.spec").read_text().split() == ["Sr_sv", "Ti_pv", "O"]
    assert not (tmp_path / "POTCAR").exists()
    assert vasp_command("srun", 64) == ["srun", "-n", "64", "vasp_std"]
    assert vasp_command("aprun", 16) == ["aprun", "-n", "16", "vasp_std"]


def test_a_vasp_run_that_writes_no_result_is_marked_failed(tmp_path, monkeypatch):
    """The VASP path through custodian with a stand-in executable (no VASP here):
    it is started in the job directory with the inputs, and a run that leaves no
    valid vasprun.xml is recorded as failed with custodian's reason, not raised."""
    monkeypatch.delenv("PMG_VASP_PSP_DIR", raising=False)
    work = tmp_path / "calc"
    write_vasp_inputs(STO, work)
    fake = tmp_path / "vasp_std"
    fake.write_text("#!/bin/sh\nls > ran_here.txt\necho ' running on 1 total cores'\n")
    fake.chmod(0o755)
    res = run_vasp(work, [str(fake)], max_errors=1)
    assert res["status"] == "failed" and "Validat" in res["reason"], res
    assert res["energy_eV"] is None and res["converged"] is False
    ran = (work / "ran_here.txt").read_text().split()
    assert {"INCAR", "KPOINTS", "POSCAR"} <= set(ran)


def test_run_model_vasp_through_its_launcher(tmp_path, monkeypatch):
    """The dft rule's path for VASP with stand-ins for the launcher and VASP: the
    result carries the model, the engine and the k-points; VASP runs in the work
    directory with one OpenMP thread, and this process keeps its own."""
    monkeypatch.delenv("PMG_VASP_PSP_DIR", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    write_model(STO, tmp_path, "reference_SrTiO3", {"kind": "reference", "material": "SrTiO3"})
    launcher, fake = tmp_path / "launch", tmp_path / "vasp_std"
    launcher.write_text('#!/bin/sh\nshift 2\nexec "$@"\n')  # <launcher> -n N binary
    fake.write_text("#!/bin/sh\npwd > ran_here.txt\necho $OMP_NUM_THREADS > omp.txt\n")
    launcher.chmod(0o755)
    fake.chmod(0o755)
    cwd, env = os.getcwd(), dict(os.environ)
    res = run_model(tmp_path / "reference_SrTiO3.json", tmp_path / "work",
                    {"engine": "vasp", "vasp_binary": str(fake)}, launcher=str(launcher),
                    ntasks=3)
    assert os.getcwd() == cwd and dict(os.environ) == env
    assert list(res) == ["energy_eV", "band_gap_eV", "max_force_eV_per_A", "converged",
                         "status", "reason", "runtime_s", "corrections", "model", "engine",
                         "kpoints", "n_atoms", "formula_units", "energy_per_fu_eV"]
    assert res["status"] == "failed" and res["engine"] == "vasp" and res["kpoints"] == [4, 4, 4]
    assert res["model"] == {"kind": "reference", "material": "SrTiO3"}
    assert res["n_atoms"] == 5 and res["formula_units"] == 1 and res["energy_per_fu_eV"] is None
    work = (tmp_path / "work").resolve()
    assert (work / "ran_here.txt").read_text().strip() == str(work)
    assert (work / "omp.txt").read_text().strip() == "1"
    with pytest.raises(ConfigError, match="dft.engine"):
        run_model(tmp_path / "reference_SrTiO3.json", tmp_path / "w2", {"engine": "abinit"})


def test_vasp_relax_inputs(tmp_path, monkeypatch):
    monkeypatch.delenv("PMG_VASP_PSP_DIR", raising=False)
    write_vasp_inputs(STO, tmp_path, relax=True)
    text = (tmp_path / "INCAR").read_text()
    assert re.search(r"IBRION = 2", text) and re.search(r"NSW = 99", text)


# ---------------------------------------------------------------- CP2K


def test_cp2k_input_settings():
    inp = cp2k_input(STO)
    text = inp.get_str()
    assert "SCHEME MONKHORST-PACK 4 4 4" in text and "UKS False" in text
    assert "ADDED_MOS 8" in text and "POTENTIAL_FILE_NAME GTH_POTENTIALS" in text
    assert "&DIAGONALIZATION" in text and "CUTOFF 400" in text and "&OT" not in text
    assert cp2k_command("mpirun", 2) == ["mpirun", "-np", "2", "--bind-to", "none", "cp2k.psmp"]
    assert cp2k_command("srun", 8) == ["srun", "-n", "8", "cp2k.psmp"]


def test_band_gap_from_dos_histogram(tmp_path):
    e = np.arange(-0.5, 0.5, 0.001)
    den = np.zeros_like(e)
    occ = np.zeros_like(e)
    den[100], occ[100] = 0.5, 1.0   # occupied (2 e per state x 0.5)
    den[400], occ[400] = 0.25, 0.5  # valence band maximum
    den[480], occ[480] = 0.25, 0.0  # conduction band minimum
    np.savetxt(tmp_path / "x.dos", np.c_[e, den, occ], header="Energy Density Occupation")
    assert band_gap_from_dos(tmp_path / "x.dos") == pytest.approx(0.080 * 27.211386, rel=1e-3)


def test_cp2k_runs_in_its_directory_with_its_own_environment(tmp_path, monkeypatch):
    """CP2K (a stand-in here) runs in the calculation's directory with one OpenMP
    thread per rank; this process's working directory and environment stay as
    they were (no chdir, no environment written)."""
    work, elsewhere = tmp_path / "calc", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("OMPI_ALLOW_RUN_AS_ROOT", raising=False)
    fake = tmp_path / "fake_cp2k"
    fake.write_text("#!/bin/sh\npwd > pwd.txt\n"
                    "echo $OMP_NUM_THREADS $OMPI_ALLOW_RUN_AS_ROOT > env.txt\n")
    fake.chmod(0o755)
    (work / "cp2k.inp").write_text("")
    cwd, env = os.getcwd(), dict(os.environ)
    r = run_cp2k(work, [str(fake)], max_errors=1)
    assert os.getcwd() == cwd and dict(os.environ) == env
    assert r["status"] == "failed" and r["energy_eV"] is None
    assert (work / "pwd.txt").read_text().strip() == str(work.resolve())
    assert (work / "env.txt").read_text().split() == ["1", "1"]
    assert not (elsewhere / "std_err.txt").exists() and not list(elsewhere.iterdir())


def test_stderr_handler_reads_the_calculation_directory(tmp_path, monkeypatch):
    (tmp_path / "std_err.txt").write_text("Program received signal SIGSEGV\n")
    monkeypatch.chdir(tmp_path.parent)  # upstream's handler read ./std_err.txt
    h = Cp2kStdErrHandler()
    assert h.check(str(tmp_path)) and h.errors == {"seg_fault"}
    (tmp_path / "std_err.txt").write_text("all fine\n")
    assert not h.check(str(tmp_path))


def test_own_job_terminate_stops_only_its_own_process(tmp_path):
    other = subprocess.Popen(["sleep", "60"])  # another job's process on the same node
    try:
        job = OwnCp2kJob(["sleep", "60", "#"], input_file="cp2k.inp")
        p = job.run(str(tmp_path))
        time.sleep(0.3)
        job.terminate(str(tmp_path))
        assert p.poll() is not None
        assert other.poll() is None
    finally:
        other.kill()


@needs_cp2k
@pytest.mark.slow
def test_cp2k_srtio3_real_calculation(tmp_path, monkeypatch):
    """The dft rule's path (run_model) with real CP2K on 2 MPI ranks; the run
    leaves this process's working directory and environment as they were."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # as Snakemake sets it: the ranks get 1
    write_model(STO, tmp_path, "sto", {"kind": "reference", "material": "SrTiO3"})
    cwd, env = os.getcwd(), dict(os.environ)
    r = run_model(tmp_path / "sto.json", tmp_path / "work", {"engine": "cp2k"},
                  launcher="mpirun", ntasks=2)
    assert os.getcwd() == cwd and dict(os.environ) == env
    assert r["status"] == "ok" and r["converged"], r
    assert -3745 < r["energy_eV"] < -3730  # SrTiO3, GTH-PBE DZVP, 5 atoms
    assert r["energy_per_fu_eV"] == r["energy_eV"] and r["kpoints"] == [4, 4, 4]
    assert 1.0 < r["band_gap_eV"] < 3.5
    assert r["max_force_eV_per_A"] < 0.05  # cubic: forces vanish by symmetry
    out = (tmp_path / "work" / "cp2k.out").read_text()
    assert re.search(r"Total number of message passing processes\s+2\b", out)
    assert re.search(r"Number of threads for this process\s+1\b", out)


@needs_cp2k
@pytest.mark.slow
def test_cp2k_forced_scf_failure_is_corrected_by_custodian(tmp_path):
    cp2k_input(STO, max_scf=4).write_file("cp2k.inp", str(tmp_path))
    r = run_cp2k(tmp_path, cp2k_command("mpirun", 2))
    assert r["status"] == "ok" and r["converged"], r
    actions = [c["actions"] for c in r["corrections"] if "SCF not converged" in c["errors"]]
    assert actions and actions[0] == [{"MAX_SCF": [4, 16]}]
    assert "MAX_SCF 4" not in (tmp_path / "cp2k.inp").read_text()


@needs_cp2k
@pytest.mark.slow
def test_unrecoverable_calculation_is_marked_failed(tmp_path):
    inp = cp2k_input(STO, max_scf=1)
    inp.write_file("cp2k.inp", str(tmp_path))
    r = run_cp2k(tmp_path, cp2k_command("mpirun", 1), max_errors=1)
    assert r["status"] == "failed" and r["reason"]


def test_write_models_never_reuses_a_killed_runs_folder(tmp_path):
    """A killed models job left a half-filled temporary folder (here with a model of a
    class that no longer exists): the rerun writes a fresh folder, nothing of it survives."""
    out = tmp_path / "models"
    for stale in (tmp_path / "models.tmp", tmp_path / ".models.otherhost.1.x.part"):
        stale.mkdir()
        (stale / "class_7.json").write_text("{}")
    index = write_models(GOLDEN / "classes.csv", GOLDEN / "layers.csv", out, materials=MATERIALS,
                         mp_cache=tmp_path / "mp.json", min_fraction=0.1)
    assert not (out / "class_7.json").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["index.json"] + [f"{m['name']}.{e}" for m in index for e in ("cif", "json")])
    assert not (tmp_path / "models.tmp").exists()
