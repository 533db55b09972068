"""Machine profiles and per-rule environments (what can be checked without a cluster)."""

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")

# importable module -> conda-forge package
CONDA_NAME = {"numpy": "numpy", "scipy": "scipy", "skimage": "scikit-image", "sklearn": "scikit-learn",
              "h5py": "h5py", "tifffile": "tifffile", "rsciio": "rosettasciio",
              "matplotlib": "matplotlib-base", "yaml": "pyyaml", "numba": "numba", "rocrate": "rocrate",
              "jsonschema": "jsonschema", "globus_sdk": "globus-sdk", "pymatgen": "pymatgen",
              "custodian": "custodian", "mp_api": "mp-api", "requests": "requests",
              "pydantic": "pydantic", "networkx": "networkx", "pyarrow": "pyarrow"}


def rules_and_envs():
    """(rule, env file, script) from the rule files."""
    out = []
    for smk in (ROOT / "rules").glob("*.smk"):
        text = smk.read_text()
        for block in re.split(r"\n(?=rule |checkpoint )", text):
            m = re.match(r"(?:rule|checkpoint) (\w+):", block)
            env = re.search(r'conda:\s*\n\s*"(.+?)"', block)
            script = re.search(r'script:\s*\n\s*"(.+?)"', block)
            if m and env:
                out.append((m.group(1), (smk.parent / env.group(1)).resolve(),
                            (smk.parent / script.group(1)).resolve() if script else None))
    return out


def third_party_imports(path: Path, seen=None) -> set[str]:
    """Top-level third-party modules a script needs, following latticegenome imports."""
    seen = seen if seen is not None else set()
    if path in seen:
        return set()
    seen.add(path)
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [f"latticegenome.{node.module}" if node.module else "latticegenome"]
        for name in names:
            top = name.split(".")[0]
            if top == "latticegenome":
                sub = ROOT / "src" / Path(*name.split("."))
                for cand in (sub.with_suffix(".py"), sub / "__init__.py"):
                    if cand.exists():
                        mods |= third_party_imports(cand, seen)
            elif top in CONDA_NAME:
                mods.add(top)
    return mods


def test_every_rule_has_a_pinned_env_that_provides_its_imports():
    found = rules_and_envs()
    assert {r for r, _, _ in found} >= {"ingest", "find_columns", "statistics", "package", "publish"}
    for rule, env_file, script in found:
        env = yaml.safe_load(env_file.read_text())
        assert "conda-forge" in env["channels"], env_file
        deps = [d for d in env["dependencies"] if isinstance(d, str)]
        pip = [p for d in env["dependencies"] if isinstance(d, dict) for p in d.get("pip", [])]
        names = {re.split(r"[=<>]", d)[0] for d in deps} | {re.split(r"[=<>]", p)[0] for p in pip}
        for d in deps + pip:
            assert re.search(r"[=<>]=?\d", d), f"{env_file.name}: '{d}' is not pinned"
        if script is None:
            continue
        need = third_party_imports(script)
        missing = {CONDA_NAME[m] for m in need} - names
        assert not missing, f"rule {rule}: {env_file.name} lacks {sorted(missing)} for {script.name}"


def rendered_profile(path: Path, monkeypatch, argv=("snakemake",), conda=False, tmp_path=None) -> dict:
    """A profile as Snakemake reads it: a YTE template rendered in the process of the
    command line ``argv``, with or without a ``conda`` on PATH."""
    import yte

    bindir = Path(tmp_path or path.parent) / "bin-with-conda"
    if conda:
        bindir.mkdir(exist_ok=True)
        (bindir / "conda").write_text("#!/bin/sh\n")
        (bindir / "conda").chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir) if conda else "/nonexistent")
    monkeypatch.setattr(sys, "argv", list(argv))
    with open(path) as f:
        return yte.process_yaml(f, require_use_yte=True)


def test_profiles_are_complete_and_take_user_settings_from_the_environment(monkeypatch):
    profiles = {p.name: rendered_profile(p / "config.yaml", monkeypatch)
                for p in (ROOT / "profiles").iterdir() if (p / "config.yaml").exists()}
    assert {"local", "titan", "edison", "perlmutter", "frontier"} <= set(profiles)
    assert "default" not in profiles  # it would override --profile NAME key by key
    launch = {name: p.get("config", {}).get("mpi_launcher") for name, p in profiles.items()}
    assert launch == {"local": "mpirun", "titan": "aprun", "edison": "srun", "perlmutter": "srun",
                      "frontier": "srun"}
    for name in ("edison", "perlmutter", "frontier", "titan"):
        p = profiles[name]
        assert p["software-deployment-method"] == "conda"
        # images in batches of 100 (10,000 images -> 100 jobs); VASP, one CPU per MPI task
        assert p["config"]["batch_size"] == 100 and p["config"]["dft"]["engine"] == "vasp"
        assert p["set-threads"]["dft"] == 1 and p["set-resources"]["dft"]["tasks"] > 1
        assert p["set-resources"]["dft"]["nodes"] == 1 and p["set-resources"]["dft"]["runtime"] >= 60
        assert "groups" not in p  # batches replace Snakemake groups (slow to plan at scale)
    for name in ("edison", "perlmutter", "frontier"):
        p = profiles[name]
        assert p["executor"] == "slurm" and p["slurm-no-account"] is True  # SBATCH_ACCOUNT decides
        assert p["set-resources"]["dft"]["mem_mb"] >= 16000
        text = (ROOT / "profiles" / name / "config.yaml").read_text()
        assert not re.search(r"slurm_account|\b[a-z]\d{3,4}\b", text)  # no account written in
    assert "${LATTICEGENOME_ACCOUNT" in profiles["titan"]["cluster-generic-submit-cmd"]


def test_slurm_profiles_are_rendered_from_the_one_template(tmp_path):
    from latticegenome.profiles import merge_settings, render_profiles

    assert render_profiles(ROOT / "profiles", check=True) == []  # committed == rendered
    template = yaml.safe_load((ROOT / "profiles" / "slurm-template.yaml").read_text())
    machines = yaml.safe_load((ROOT / "profiles" / "machines.yaml").read_text())
    for name, machine in machines.items():
        rendered = yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())
        assert rendered == merge_settings(template, machine.get("settings") or {})
    # a hand edit is caught, and rendering puts it right
    copy = tmp_path / "profiles"
    shutil.copytree(ROOT / "profiles", copy, symlinks=True)
    (copy / "edison" / "config.yaml").write_text("executor: slurm\n")
    assert any("edison" in ln for ln in render_profiles(copy, check=True))
    render_profiles(copy)
    assert render_profiles(copy, check=True) == []


def test_merge_settings_merges_mappings_replaces_lists_and_removes_none():
    from latticegenome.profiles import merge_settings

    base = {"a": {"x": 1, "y": 2}, "l": [1, 2], "gone": True}
    assert merge_settings(base, {"a": {"y": 3}, "l": [9], "gone": None}) == {
        "a": {"x": 1, "y": 3}, "l": [9]}
    assert base == {"a": {"x": 1, "y": 2}, "l": [1, 2], "gone": True}  # not changed in place


def load_status():
    spec = importlib.util.spec_from_file_location("titan_status", ROOT / "profiles" / "titan" / "status.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def qstat_f(state: str, extra: str = "") -> str:
    """``qstat -f`` of one job as Torque 6 (Titan's Moab/Torque) prints it."""
    return f"""Job Id: 3176853.titan-batch.ccs.ornl.gov
    Job_Name = lg-find_columns
    Job_Owner = user@titan-ext3.ccs.ornl.gov
    resources_used.cput = 00:03:12
    resources_used.mem = 412316kb
    resources_used.vmem = 801232kb
    resources_used.walltime = 00:04:51
    job_state = {state}
    queue = batch
    server = titan-batch.ccs.ornl.gov
    Account_Name = MAT123
    Checkpoint = u
    ctime = Mon Jun 10 09:12:44 2019
    Error_Path = titan-ext3.ccs.ornl.gov:/lustre/atlas/scratch/user/logs/pbs/
    exec_host = aprun1/0-15
    Hold_Types = n
    Join_Path = oe
    Keep_Files = n
    Mail_Points = a
    mtime = Mon Jun 10 09:17:40 2019
    Output_Path = titan-ext3.ccs.ornl.gov:/lustre/atlas/scratch/user/logs/pbs/
    Priority = 0
    qtime = Mon Jun 10 09:12:44 2019
    Rerunable = True
    Resource_List.nodes = 1
    Resource_List.walltime = 00:30:00
    session_id = 22918
    euser = user
    egroup = user
{extra}    queue_type = E
    etime = Mon Jun 10 09:12:44 2019
    submit_args = -V -A MAT123 -q batch -l nodes=1,walltime=00:30:00 -N lg-find_columns
    start_time = Mon Jun 10 09:12:49 2019
    start_count = 1
    fault_tolerant = False
    job_radix = 0
    submit_host = titan-ext3.ccs.ornl.gov
"""


QSTAT = {
    "queued": qstat_f("Q"),
    "running": qstat_f("R"),
    "held": qstat_f("H"),
    "exiting": qstat_f("E"),
    "done": qstat_f("C", "    exit_status = 0\n    comp_time = Mon Jun 10 09:17:40 2019\n"),
    "failed": qstat_f("C", "    exit_status = 271\n    comp_time = Mon Jun 10 09:17:40 2019\n"),
    "killed": qstat_f("C", "    exit_status = -11\n    comp_time = Mon Jun 10 09:17:40 2019\n"),
    # PBS Pro spelling (qstat -fx of a finished job): state F, Exit_status
    "pbspro_done": qstat_f("F", "    Exit_status = 0\n"),
    "pbspro_failed": qstat_f("F", "    Exit_status = 1\n"),
}


@pytest.mark.parametrize("state,expected", [
    ("queued", "running"), ("running", "running"), ("held", "running"), ("exiting", "running"),
    ("done", "success"), ("failed", "failed"), ("killed", "failed"),
    ("pbspro_done", "success"), ("pbspro_failed", "failed"),
])
def test_titan_status_from_qstat(state, expected):
    assert load_status().parse_qstat(QSTAT[state]) == expected


def test_titan_status_unknown_job_is_failed(monkeypatch):
    status = load_status()
    # qstat answers "Unknown Job Id" with a non-zero status: the job is gone
    monkeypatch.setattr(status.subprocess, "run", lambda *a, **k: type(
        "R", (), {"returncode": 153, "stdout": "", "stderr": "qstat: Unknown Job Id 999.titan-batch"})())
    assert status.main("999") == "failed"


# --- conda: every real run uses it; a dry run on a machine without conda plans without it

CLUSTER_PROFILES = ["titan", "perlmutter", "edison", "frontier"]


@pytest.mark.parametrize("name", CLUSTER_PROFILES)
@pytest.mark.parametrize("args,conda,expected", [
    (["--profile", "x"], False, "conda"),            # a real run needs conda, found or not
    (["--profile", "x", "-p", "--notemp"], False, "conda"),
    (["--profile", "x", "-n"], True, "conda"),       # a dry run where conda is: as before
    (["--profile", "x", "-n"], False, None),         # a dry run without conda: none
    (["--profile", "x", "--dry-run"], False, None),
    (["-np", "--profile", "x"], False, None),
    (["--dryrun", "--profile", "x"], False, None),
])
def test_cluster_profiles_deploy_with_conda_except_a_dry_run_without_it(
        name, args, conda, expected, monkeypatch, tmp_path):
    p = rendered_profile(ROOT / "profiles" / name / "config.yaml", monkeypatch,
                         ["snakemake", *args], conda, tmp_path)
    assert p["software-deployment-method"] == expected


def path_without_conda() -> str:
    """This PATH less any folder with a conda in it (or named after one)."""
    keep = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and "conda" not in d.lower() and "mamba" not in d.lower()
            and not any((Path(d) / exe).exists() for exe in ("conda", "mamba", "micromamba"))]
    return os.pathsep.join(keep)


def env_without_conda(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("CONDA", "MAMBA", "SNAKEMAKE_PROFILE", "_CE_"))}
    env["PATH"] = path_without_conda()
    env.update(extra)
    return env


WORKFLOW_PARTS = ["Snakefile", "rules", "scripts", "config", "envs", "profiles", "report",
                  "resources", "src"]


def readme_dry_runs() -> list[str]:
    """The dry-run commands the README offers, as typed (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for m in re.finditer(r"^(snakemake --profile \S+ -n)\b|`(snakemake --profile \S+ -n)`", text, re.M):
        cmd = m.group(1) or m.group(2)
        if cmd not in commands:
            commands.append(cmd)
    return commands


@pytest.mark.workflow
@pytest.mark.slow
def test_readme_dry_runs_work_as_typed_without_conda(tmp_path):
    """`snakemake --profile titan -n` (and perlmutter's) as the README gives them, on a
    fresh copy of the repository with the demo's images, on a PATH with no conda."""
    commands = readme_dry_runs()
    assert {"snakemake --profile titan -n", "snakemake --profile perlmutter -n"} <= set(commands)
    repo = tmp_path / "repo"
    repo.mkdir()
    for part in WORKFLOW_PARTS:
        (shutil.copytree if (ROOT / part).is_dir() else shutil.copy2)(ROOT / part, repo / part)
    bindir = str(Path(sys.executable).parent)   # `source .venv/bin/activate`
    env = env_without_conda(XDG_CONFIG_HOME=str(tmp_path / "config"), HOME=str(tmp_path))
    env["PATH"] = bindir + os.pathsep + env["PATH"]
    assert shutil.which("conda", path=env["PATH"]) is None
    for step in (["latticegenome", "install-profiles"],   # as `make install` does
                 ["latticegenome", "simulate", "demo/facility/STO_BTO_superlattice"],
                 ["latticegenome", "simulate", "demo/facility/heating_series", "--series", "12",
                  "--size", "256"]):
        out = subprocess.run(step, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
    for cmd in commands:
        out = subprocess.run(["bash", "-c", cmd], cwd=repo, env=env, capture_output=True, text=True,
                             timeout=120)
        log = out.stdout + out.stderr
        assert out.returncode == 0, f"{cmd}:\n{log[-3000:]}"
        assert "conda" not in log.lower().replace("conda environments", ""), f"{cmd}:\n{log[-3000:]}"
        stats = log[log.index("Job stats:"):]
        assert re.search(r"^ingest\s+2$", stats, re.M) and re.search(r"^total\s+\d+$", stats, re.M), log
        assert "This was a dry-run" in log


# --- Titan: each job's command on a compute node (aprun), except dft's, which runs aprun itself

FAKE_APRUN = """#!{python}
# aprun on this machine: logs how it was called, then runs the command as aprun would
import json, os, sys
args = sys.argv[1:]
with open(os.environ["LG_TEST_APRUN_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
while args and args[0] in ("-n", "-N", "-d", "-cc", "-j"):
    args = args[2:]
os.execvpe(args[0], args, dict(os.environ, LG_TEST_UNDER_APRUN="1"))
"""

FAKE_SNAKEMAKE_JOB = """# `python -m snakemake` of a submitted job: logs the job it was asked to run, and where
import json, os, sys
with open(os.environ["LG_TEST_JOB_LOG"], "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(),
                        "under_aprun": os.environ.get("LG_TEST_UNDER_APRUN") == "1"}) + "\\n")
"""

FAKE_QSUB = """#!/bin/sh
# qsub on this machine: keeps the job script it is given, prints a job id
n=$(ls "$LG_TEST_SUBMITTED" | wc -l)
cp "$1" "$LG_TEST_SUBMITTED/job$n.sh"
echo "$n.titan-batch"
"""


def tiny_experiment(work: Path) -> Path:
    """Two small images at a local facility; the configuration file of the experiment."""
    import numpy as np
    import tifffile

    from latticegenome.columns.simulate import simulate_superlattice

    fac = work / "facility" / "exp"
    fac.mkdir(parents=True)
    for k in range(2):
        img, _, _ = simulate_superlattice((96, 96), rng=np.random.default_rng(k))
        tifffile.imwrite(fac / f"img_{k}.tif", img.astype(np.uint16))
    config = {
        "scratch": "data", "results": "results",
        "facilities": {"scope": {"backend": "local", "path": str(work / "facility")},
                       "pub": {"backend": "local", "path": str(work / "publication")}},
        "publication": {"facility": "pub", "path": "lg"},
        "experiments": {"exp": {
            "facility": "scope", "path": "exp", "pattern": "*.tif", "pixel_size_pm": 20.0,
            "materials": [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5,
                           "structure_file": str(ROOT / "resources/structures/SrTiO3.cif")}]}},
        "dft": {"mp_cache": str(work / "mp_cache.json")},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return work / "config.yaml"


@pytest.fixture(scope="module")
def titan_submitted(tmp_path_factory):
    """A find_columns job and a dft job submitted through the titan profile, as typed
    (`--profile titan`, linked into the Snakemake configuration folder), to a qsub that
    keeps the job scripts. Returns {rule: job script}, the work folder and the env."""
    from latticegenome.profiles import install_profiles

    tmp = tmp_path_factory.mktemp("titan")
    work = tmp / "work"
    work.mkdir()
    configfile = tiny_experiment(work)
    base = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
            "--configfile", str(configfile)]
    env = env_without_conda(XDG_CONFIG_HOME=str(tmp / "config"))
    # the raw copies and their manifest (this machine, the local profile), then one DFT model
    out = subprocess.run([*base, "--profile", str(ROOT / "profiles" / "local"), "--cores", "1",
                          "data/exp/manifest.tsv"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    (work / "results" / "exp" / "models").mkdir(parents=True)
    (work / "results" / "exp" / "models" / "m.json").write_text("{}\n")
    # the titan profile, as the repository has it, less conda (which cannot run here)
    profiles = tmp / "profiles"
    shutil.copytree(ROOT / "profiles" / "titan", profiles / "titan")
    config = profiles / "titan" / "config.yaml"
    text = config.read_text()
    assert 'software-deployment-method: "?CONDA"' in text
    config.write_text(text.replace('software-deployment-method: "?CONDA"', ""))
    install_profiles(profiles, tmp / "config" / "snakemake")
    fake = tmp / "bin"
    fake.mkdir()
    (fake / "qsub").write_text(FAKE_QSUB)
    (fake / "qstat-says-failed").write_text("#!/bin/sh\necho failed\n")  # never run here
    for exe in fake.iterdir():
        exe.chmod(0o755)
    submitted = tmp / "submitted"
    submitted.mkdir()
    out = subprocess.run(
        ["timeout", "-k", "15", "240", *base, "--profile", "titan",
         "--cluster-generic-submit-cmd", str(fake / "qsub"),
         "--cluster-generic-status-cmd", str(fake / "qstat-says-failed"), "--latency-wait", "1",
         "results/exp/columns/batch-00000", "results/exp/dft/m.json"],
        cwd=work, env=dict(env, LG_TEST_SUBMITTED=str(submitted)), capture_output=True, text=True,
        timeout=300)
    log = out.stdout + out.stderr
    from snakemake.utils import read_job_properties

    scripts = {read_job_properties(str(s))["rule"]: s for s in sorted(submitted.iterdir())}
    assert set(scripts) == {"find_columns", "dft"}, log[-3000:]
    return scripts, work, tmp, log


def run_as_pbs(script: Path, work: Path, tmp: Path, name: str):
    """Run a submitted job script as PBS would on the service node: from $HOME, with
    PBS_O_WORKDIR, aprun on PATH; the job's `python -m snakemake` only logs."""
    d = tmp / f"pbs-{name}"
    (d / "bin").mkdir(parents=True)
    (d / "bin" / "aprun").write_text(FAKE_APRUN.format(python=sys.executable))
    (d / "bin" / "aprun").chmod(0o755)
    (d / "py" / "snakemake").mkdir(parents=True)
    (d / "py" / "snakemake" / "__init__.py").write_text("")
    (d / "py" / "snakemake" / "__main__.py").write_text(FAKE_SNAKEMAKE_JOB)
    (d / "home").mkdir()
    env = env_without_conda(PATH=f"{d / 'bin'}{os.pathsep}{path_without_conda()}",
                            PYTHONPATH=str(d / "py"), HOME=str(d / "home"), PBS_O_WORKDIR=str(work),
                            LG_TEST_APRUN_LOG=str(d / "aprun.log"), LG_TEST_JOB_LOG=str(d / "job.log"))
    out = subprocess.run(["/bin/bash", str(script)], cwd=d / "home", env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    read = lambda p: [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []
    return read(d / "aprun.log"), read(d / "job.log")


@pytest.mark.workflow
@pytest.mark.slow
def test_titan_job_scripts_run_the_job_on_a_compute_node_with_aprun(titan_submitted):
    scripts, work, tmp, _ = titan_submitted
    for rule, script in scripts.items():
        text = script.read_text()
        # profiles/titan/jobscript.sh, filled in: the job's Snakemake command inside
        assert text.startswith("#!/bin/bash\n# properties = {")
        assert re.search(rf"-m snakemake .*--target-jobs '{rule}:", text), text
        assert 'exec aprun -n 1 -N 1 -d "${LG_THREADS:-1}" /bin/bash -c "$LG_JOB"' in text
    # find_columns: its command (and so its Python) runs under aprun, one process, 4 cores
    aprun, jobs = run_as_pbs(scripts["find_columns"], work, tmp, "find_columns")
    assert len(aprun) == 1 and aprun[0][:7] == ["-n", "1", "-N", "1", "-d", "4", "/bin/bash"], aprun
    assert "-m snakemake" in aprun[0][-1] and "find_columns:" in aprun[0][-1]
    assert len(jobs) == 1 and jobs[0]["under_aprun"] and jobs[0]["cwd"] == str(work)
    assert any(a.startswith("find_columns:") for a in jobs[0]["argv"])


@pytest.mark.workflow
@pytest.mark.slow
def test_titan_dft_job_is_not_wrapped_twice(titan_submitted):
    scripts, work, tmp, _ = titan_submitted
    # the dft job's command runs on the service node; its rule calls `aprun -n 16` itself
    props = json.loads(scripts["dft"].read_text().splitlines()[1].split("=", 1)[1])
    assert props["resources"]["mpi"] == "aprun" and props["resources"]["tasks"] == 16
    assert props["params"]["launcher"] == "aprun" and props["params"]["ntasks"] == 16
    aprun, jobs = run_as_pbs(scripts["dft"], work, tmp, "dft")
    assert aprun == []
    assert len(jobs) == 1 and not jobs[0]["under_aprun"] and jobs[0]["cwd"] == str(work)
    assert any(a.startswith("dft:") for a in jobs[0]["argv"])
    # a job the profile marks service_node (ingest, models, publish) runs there too
    text = scripts["find_columns"].read_text()
    assert text.count('"resources": {"tmpdir": ') == 2  # the properties, in the header and the script
    marked = tmp / "service_node.sh"
    marked.write_text(text.replace('"resources": {"tmpdir": ', '"resources": {"service_node": 1, "tmpdir": '))
    aprun, jobs = run_as_pbs(marked, work, tmp, "service_node")
    assert aprun == [] and len(jobs) == 1 and not jobs[0]["under_aprun"]


def test_titan_profile_names_its_own_jobscript_and_status_script(tmp_path):
    """Relative to the profile folder, so `--profile titan` (a link) and `--profile
    profiles/titan` both find them: Snakemake's profile reader makes a value naming a file
    in the profile's folder that file's path."""
    from snakemake.profiles import ProfileConfigFileParser

    link = tmp_path / "snakemake" / "titan"
    link.parent.mkdir()
    link.symlink_to(ROOT / "profiles" / "titan", target_is_directory=True)
    for folder in (link, ROOT / "profiles" / "titan"):
        with open(folder / "config.yaml") as f:
            parsed = ProfileConfigFileParser().parse(f)
        assert parsed["jobscript"] == str(folder / "jobscript.sh")
        assert parsed["cluster-generic-status-cmd"] == str(folder / "status.py")
    assert os.access(ROOT / "profiles" / "titan" / "status.py", os.X_OK)
    # the job script is a str.format template with only these two fields
    text = (ROOT / "profiles" / "titan" / "jobscript.sh").read_text()
    assert text.format(properties="{}", exec_job="true")
    assert set(re.findall(r"(?<!\{)\{(\w+)\}(?!\})", text)) == {"properties", "exec_job"}
