"""Machine profiles and per-rule environments (what can be checked without a cluster)."""

import ast
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# importable module -> conda-forge package
CONDA_NAME = {"numpy": "numpy", "scipy": "scipy", "skimage": "scikit-image", "sklearn": "scikit-learn",
              "h5py": "h5py", "tifffile": "tifffile", "rsciio": "rosettasciio",
              "matplotlib": "matplotlib-base", "yaml": "pyyaml", "numba": "numba", "rocrate": "rocrate",
              "jsonschema": "jsonschema", "globus_sdk": "globus-sdk", "pymatgen": "pymatgen",
              "custodian": "custodian", "mp_api": "mp-api", "requests": "requests"}


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
            names = [node.module]
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
    for name in ("edison", "perlmutter", "frontier"):
        p = profiles[name]
        assert p["executor"] == "slurm" and p["slurm-no-account"] is True  # SBATCH_ACCOUNT decides
        assert p["software-deployment-method"] == "conda"
        assert p["group-components"]["images"] == 100 and p["groups"]["find_columns"] == "images"
        text = (ROOT / "profiles" / name / "config.yaml").read_text()
        assert not re.search(r"slurm_account|\b[a-z]\d{3,4}\b", text)  # no account written in
    assert "${LATTICEGENOME_ACCOUNT" in profiles["titan"]["cluster-generic-submit-cmd"]


def load_status():
    spec = importlib.util.spec_from_file_location("titan_status", ROOT / "profiles" / "titan" / "status.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


QSTAT = {
    "queued": "Job Id: 123.titan-batch\n    job_state = Q\n    queue = batch\n",
    "running": "Job Id: 123.titan-batch\n    job_state = R\n    exec_host = nid00012/0\n",
    "held": "Job Id: 123.titan-batch\n    job_state = H\n",
    "exiting": "Job Id: 123.titan-batch\n    job_state = E\n",
    "done": "Job Id: 123.titan-batch\n    job_state = C\n    exit_status = 0\n",
    "failed": "Job Id: 123.titan-batch\n    job_state = C\n    exit_status = 271\n",
    "killed": "Job Id: 123.titan-batch\n    job_state = C\n    exit_status = -11\n",
}


@pytest.mark.parametrize("state,expected", [
    ("queued", "running"), ("running", "running"), ("held", "running"), ("exiting", "running"),
    ("done", "success"), ("failed", "failed"), ("killed", "failed"),
])
def test_titan_status_from_qstat(state, expected):
    assert load_status().parse_qstat(QSTAT[state]) == expected


def test_titan_status_unknown_job_is_failed(monkeypatch):
    status = load_status()
    # qstat answers "Unknown Job Id" with a non-zero status: the job is gone
    monkeypatch.setattr(status.subprocess, "run", lambda *a, **k: type(
        "R", (), {"returncode": 153, "stdout": "", "stderr": "qstat: Unknown Job Id 999.titan-batch"})())
    assert status.main("999") == "failed"
