"""The workflow on a real SLURM: a single-node cluster started on this machine.

The profile is rendered from profiles/slurm-template.yaml, the template of the
real SLURM machines' profiles, with a localhost entry (partition, no conda,
squeue for job states). Skipped, with the reason, when this machine cannot
run SLURM (not root, no apt-get); CI runs as root.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from slurm_localhost import LocalSlurm, SlurmUnavailable

from latticegenome.columns.simulate import simulate_superlattice
from latticegenome.core.tables import read_table
from latticegenome.profiles import render_profile

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
pytestmark = [pytest.mark.workflow, pytest.mark.slow, pytest.mark.slurm]

LOCALHOST = {
    "title": "localhost: single-node SLURM of the test suite",
    "settings": {
        "software-deployment-method": None,       # conda cannot run here
        "slurm-status-command": "squeue",         # no accounting daemon; MinJobAge keeps records
        "slurm-init-seconds-before-status-checks": 5,
        "jobs": 4,
        "latency-wait": 5,
        "default-resources": ["runtime=10", "mem_mb=1000", 'slurm_partition="debug"'],
        "set-threads": {"find_columns": 2},
        "set-resources": {"statistics": {"mem_mb": 2000, "runtime": 10},
                          "dft": {"nodes": 1, "tasks": 2, "runtime": 20, "mem_mb": 2000}},
        "config": {"batch_size": 2, "dft": {"engine": "cp2k"}},  # srun launches CP2K, as on HPC
    },
}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("not root: a SLURM on localhost needs root (CI runs as root)")
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        pytest.skip("no apt-get to install slurm-wlm and munge")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        cluster.stop()
        pytest.fail(f"SLURM on localhost did not start: {exc}")
    yield cluster
    cluster.stop()


def test_the_cluster_runs_a_batch_job(slurm):
    job = slurm.sbatch_wait("echo hello")
    details = slurm.job_details(job)
    assert details["JobState"] == "COMPLETED" and details["ExitCode"] == "0:0"


@pytest.fixture(scope="module")
def run(slurm, tmp_path_factory):
    """The workflow on three images (one broken), through sbatch, with CP2K as batch jobs."""
    work = tmp_path_factory.mktemp("slurmwf")
    fac = work / "facility" / "exp"
    fac.mkdir(parents=True)
    for k in range(2):
        img, _, _ = simulate_superlattice((200, 200), rng=np.random.default_rng(10 + k))
        tifffile.imwrite(fac / f"img_{k}.tif", img.astype(np.uint16))
    (fac / "broken.tif").write_bytes(b"II*\x00" + os.urandom(200))
    config = {
        "scratch": "data", "results": "results",
        "facilities": {"scope": {"backend": "local", "path": str(work / "facility")},
                       "pub": {"backend": "local", "path": str(work / "publication")}},
        "publication": {"facility": "pub", "path": "lg"},
        "experiments": {"exp": {
            "facility": "scope", "path": "exp", "pattern": "*.tif", "pixel_size_pm": 20.0,
            "materials": [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5,
                           "structure_file": str(ROOT / "resources/structures/SrTiO3.cif")}],
        }},
        "dft": {"min_fraction": 0.5, "mp_cache": str(work / "mp_cache.json")},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    profile = work / "profile"
    profile.mkdir()
    template = yaml.safe_load((ROOT / "profiles" / "slurm-template.yaml").read_text())
    (profile / "config.yaml").write_text(render_profile(template, LOCALHOST))
    cmd = ["timeout", "-k", "15", "900", SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(work), "--configfile", str(work / "config.yaml"),
           "--profile", str(profile), "--local-cores", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=slurm.env, timeout=960)
    return work, out


def test_jobs_went_through_sbatch_and_the_outputs_are_right(slurm, run):
    work, out = run
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    # SLURM's own records: the workflow's jobs ran as batch jobs, and all completed
    jobs = slurm.jobs()
    by_rule = {}
    for j in jobs:
        details = slurm.job_details(j["id"])
        comment = details.get("Comment", "")
        rule = comment[len("rule_"):].split("_wildcards_")[0] if comment.startswith("rule_") else "?"
        by_rule.setdefault(rule, []).append((j, details))
    names = " ".join(sorted(by_rule))
    assert {"find_columns", "statistics", "models", "dft"} <= set(by_rule), names
    for rule, entries in by_rule.items():
        for j, details in entries:
            assert j["state"] == "COMPLETED" and details["ExitCode"] == "0:0", (rule, details)
    # three images in batches of two: two find_columns batch jobs, each with 2 CPUs
    finds = by_rule["find_columns"]
    assert len(finds) == 2 and all(j["cpus"] == "2" for j, _ in finds)
    # the DFT jobs had two MPI tasks, as the profile says
    dfts = by_rule["dft"]
    assert dfts and all(d["NumTasks"] == "2" for _, d in dfts), dfts
    res = work / "results" / "exp"
    images = {r["image"] for r in read_table(res / "images.tsv")}
    assert images == {"img_0.tif", "img_1.tif"}
    assert {r["file"] for r in read_table(res / "rejected.tsv")} == {"broken.tif"}
    table = read_table(res / "dft.csv")
    ran = [r for r in table if not r["status"].startswith("not run")]
    assert ran and all(r["status"] == "ok" and r["engine"] == "cp2k" for r in ran), table
    assert all(-3800 < float(r["energy_per_fu_eV"]) < -3700 for r in ran), table
