"""The whole workflow with Globus facilities, in a real Snakemake run.

Every ingest and publication goes through the real globus-sdk TransferClient
in the rules' own processes, against OUR OWN fake Transfer/Auth service
(``tests/fake_globus.py``) served on localhost: the rules run their scripts in
new Python processes, which a ``responses`` mock in this process cannot reach,
so the SDK is pointed at the fake with ``GLOBUS_SDK_SERVICE_URL_*``.
"""

import json
import os
import subprocess

import numpy as np
import pytest
import tifffile
import yaml
from fake_globus import FakeGlobus
from test_workflow import ROOT, SNAKEMAKE

from latticegenome.columns.simulate import simulate_superlattice
from latticegenome.ingest.manifest import read_manifest

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

MIC = "1c3a5b7e-0000-4000-8000-0000000000a1"
HPC = "1c3a5b7e-0000-4000-8000-0000000000b2"
PUB = "1c3a5b7e-0000-4000-8000-0000000000c3"
CLIENT = "0e5b2c9a-1111-4222-8333-444455556666"
SECRET = "workflow-secret-" + "q" * 20


def _setup(work, *, auth="client"):
    mic, pub = work / "microscope", work / "publication"
    (mic / "stem_2026").mkdir(parents=True)
    pub.mkdir()
    for k in range(2):
        img, _, _ = simulate_superlattice((160, 160), rng=np.random.default_rng(10 + k))
        tifffile.imwrite(mic / "stem_2026" / f"scan_{k}.tif", img.astype(np.uint16), imagej=True,
                         resolution=(50.0, 50.0), metadata={"unit": "nm"})
    hpc = work / "hpc"
    hpc.mkdir()
    config = {
        "scratch": "data", "results": "results",
        "facilities": {
            "cnms": {"backend": "globus", "collection_id": MIC, "path": "/"},
            "olcf": {"backend": "globus", "collection_id": HPC, "path": "/hpc",
                     "local_path": str(hpc)},
            "community": {"backend": "globus", "collection_id": PUB, "path": "/",
                          "data_access": False},
        },
        "globus": {"host": "olcf", "auth": auth, "poll_seconds": 1,
                   "native_client_id": CLIENT},
        "publication": {"facility": "community", "path": "latticegenome"},
        "people": [{"name": "Test Person"}],
        "dft": {"enabled": False},
        "experiments": {"sl": {
            "facility": "cnms", "path": "stem_2026", "pattern": "*.tif",
            "instrument": {"microscope": "test STEM"},
            "materials": [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5}],
        }},
    }
    (hpc / "config.yaml").write_text(yaml.safe_dump(config))
    # The host collection shows the workflow's folder at /hpc.
    fake = FakeGlobus({MIC: mic, HPC: work, PUB: pub}, client_id=CLIENT, client_secret=SECRET)
    return hpc, fake


def _run(workdir, env, *args):
    cmd = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--profile",
           str(ROOT / "profiles" / "local"), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=workdir, env=env)


@pytest.fixture(scope="module")
def globus_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("wfglobus")
    hpc, fake = _setup(work)
    server, sdk_env = fake.serve()
    env = {**os.environ, **sdk_env, "HOME": str(work / "home"),
           "LATTICEGENOME_GLOBUS_CLIENT_ID": CLIENT, "LATTICEGENOME_GLOBUS_CLIENT_SECRET": SECRET}
    runs = [_run(hpc, env)]
    runs.append(_run(hpc, env, "--report", "results/report.html"))
    runs.append(_run(hpc, env, "publish_all"))
    server.shutdown()
    return work, hpc, fake, runs


def test_ingest_and_publish_go_through_globus(globus_run):
    work, hpc, fake, runs = globus_run
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    ingest = [t for t in fake.tasks.values() if t["source_endpoint_id"] == MIC]
    publish = [t for t in fake.tasks.values() if t["destination_endpoint_id"] == PUB]
    assert len(ingest) == 1 and len(publish) == 1 and len(fake.tasks) == 2
    assert ingest[0]["label"] == "latticegenome ingest sl"
    manifest = read_manifest(hpc / "data/sl/manifest.tsv")
    assert [m.file for m in manifest] == ["scan_0.tif", "scan_1.tif"]
    assert {m.task_id for m in manifest} == {ingest[0]["task_id"]}
    assert {m.collection for m in manifest} == {f"globus:{MIC}"}
    images = (hpc / "results/sl/images.tsv").read_text()
    assert "scan_0.tif" in images and "scan_1.tif" in images
    record = json.loads((hpc / "results/sl/published.json").read_text())
    assert record["task_id"] == publish[0]["task_id"]
    prov = json.loads((hpc / "results/sl/published.json.prov.json").read_text())
    assert prov["transfer"]["task_id"] == publish[0]["task_id"]
    out = work / "publication/latticegenome/sl"
    for f in record["files"]:
        assert (out / f["file"]).read_bytes() == (hpc / "results/sl/package" / f["file"]).read_bytes()
    assert (out / "ro-crate-metadata.json").exists()


def test_rerun_lists_the_microscope_and_a_new_image_is_one_new_task(globus_run):
    """Incremental ingest through Globus: a rerun lists the facility (one ls, nothing
    submitted, nothing to do); an image added there afterwards is one new task holding
    only that image, appended to the manifest, analysed without re-analysing the rest."""
    work, hpc, fake, runs = globus_run
    server, sdk_env = fake.serve()
    env = {**os.environ, **sdk_env, "HOME": str(work / "home"),
           "LATTICEGENOME_GLOBUS_CLIENT_ID": CLIENT, "LATTICEGENOME_GLOBUS_CLIENT_SECRET": SECRET}
    try:
        n, tasks = len(fake.log), dict(fake.tasks)
        run = _run(hpc, env)
        assert run.returncode == 0 and "Nothing to be done" in run.stdout + run.stderr
        assert fake.tasks == tasks  # listed, nothing submitted
        assert [p for m, p, _ in fake.log[n:] if m == "POST" and "token" not in p] == []
        assert any("/ls" in p for _, p, _ in fake.log[n:])
        old = {p.name: p.stat().st_mtime_ns for p in (hpc / "results/sl/columns").rglob("*.h5")}
        img, _, _ = simulate_superlattice((160, 160), rng=np.random.default_rng(12))
        tifffile.imwrite(work / "microscope/stem_2026/scan_2.tif", img.astype(np.uint16),
                         imagej=True, resolution=(50.0, 50.0), metadata={"unit": "nm"})
        run = _run(hpc, env, "results/sl/statistics.h5")
    finally:
        server.shutdown()
    assert run.returncode == 0, run.stderr[-3000:]
    new = [t for tid, t in fake.tasks.items() if tid not in tasks]
    assert len(new) == 1 and new[0]["files"] == 1 and new[0]["source_endpoint_id"] == MIC
    manifest = read_manifest(hpc / "data/sl/manifest.tsv")
    assert [(m.file, m.increment) for m in manifest] == [("scan_0.tif", "0"), ("scan_1.tif", "0"),
                                                         ("scan_2.tif", "1")]
    assert manifest[2].task_id == new[0]["task_id"] != manifest[0].task_id
    assert "scan_2.tif" in (hpc / "results/sl/images.tsv").read_text()
    now = {p.name: p.stat().st_mtime_ns for p in (hpc / "results/sl/columns").rglob("*.h5")}
    assert {k: now[k] for k in old} == old and "scan_2.tif.h5" in now


def test_no_secret_or_token_anywhere(globus_run):
    work, hpc, fake, runs = globus_run
    secrets = {SECRET} | fake.tokens | fake.refresh_tokens
    assert len(secrets) > 1
    texts = [r.stdout + r.stderr for r in runs]
    for p in list(hpc.rglob("*")) + list((work / "publication").rglob("*")):
        if p.is_file() and p.suffix not in (".tif", ".h5", ".png"):
            texts.append(p.read_text(errors="replace"))
    for text in texts:
        for s in secrets:
            assert s not in text


def test_not_logged_in_stops_before_any_job(tmp_path):
    hpc, fake = _setup(tmp_path, auth="user")
    server, sdk_env = fake.serve()
    env = {**os.environ, **sdk_env, "HOME": str(tmp_path / "home")}
    env.pop("LATTICEGENOME_GLOBUS_CLIENT_ID", None)
    run = _run(hpc, env)
    server.shutdown()
    assert run.returncode != 0
    assert (f"latticegenome: not logged in to Globus with access to Globus collection 'cnms' "
            f"({MIC}:/): run `latticegenome login`") in run.stderr
    assert not (hpc / "data").exists() and fake.tasks == {}
    assert "Traceback" not in run.stderr
