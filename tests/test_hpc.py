"""Machine profiles and per-rule environments (what can be checked without a cluster)."""

import ast
import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# importable module -> conda-forge package
CONDA_NAME = {"numpy": "numpy", "scipy": "scipy", "skimage": "scikit-image", "sklearn": "scikit-learn",
              "h5py": "h5py", "tifffile": "tifffile", "rsciio": "rosettasciio",
              "matplotlib": "matplotlib-base", "yaml": "pyyaml", "numba": "numba", "rocrate": "rocrate",
              "jsonschema": "jsonschema", "globus_sdk": "globus-sdk", "pymatgen": "pymatgen",
              "custodian": "custodian", "mp_api": "mp-api", "requests": "requests",
              "pydantic": "pydantic", "networkx": "networkx"}


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


def test_profiles_are_complete_and_take_user_settings_from_the_environment():
    profiles = {p.name: yaml.safe_load((p / "config.yaml").read_text())
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
