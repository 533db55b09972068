"""Real Snakemake runs of this repository's workflow on a tiny experiment."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from latticegenome.columns.simulate import simulate_superlattice
from latticegenome.core.tables import read_table

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def snakemake(workdir, *args, timeout=600):
    cmd = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--profile", str(ROOT / "profiles" / "local"),
           "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A facility with three good images, a corrupted one and a blank one; one run."""
    work = tmp_path_factory.mktemp("wf")
    fac = work / "facility" / "tiny_exp"
    fac.mkdir(parents=True)
    for k in range(3):
        img, _, _ = simulate_superlattice((200, 200), rng=np.random.default_rng(k))
        tifffile.imwrite(fac / f"img_{k}.tif", img.astype(np.uint16), imagej=True,
                         resolution=(50.0, 50.0), metadata={"unit": "nm"})
    (fac / "broken.tif").write_bytes(b"II*\x00" + os.urandom(300))
    tifffile.imwrite(fac / "blank.tif", np.full((200, 200), 20, np.uint16))
    config = {
        "scratch": "data", "results": "results",
        "facilities": {"scope": {"backend": "local", "path": str(work / "facility")},
                       "pub": {"backend": "local", "path": str(work / "publication")}},
        "publication": {"facility": "pub", "path": "latticegenome"},
        "people": [{"name": "Test Person", "affiliation": "Test Lab"}],
        "experiments": {"tiny": {
            "facility": "scope", "path": "tiny_exp", "pattern": "*.tif", "pixel_size_pm": 20.0,
            "instrument": {"microscope": "test STEM", "facility": "test facility"},
            "materials": [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5,
                           "structure_file": str(ROOT / "resources/structures/SrTiO3.cif")},
                          {"formula": "BaTiO3", "A": "Ba", "B": "Ti", "a_pm": 399.2,
                           "structure_file": str(ROOT / "resources/structures/BaTiO3.cif")}],
        }},
        "dft": {"min_fraction": 0.05, "mp_cache": str(work / "mp_cache.json")},
        "batch_size": 2,  # 5 images -> 3 find_columns jobs (blank+broken, img_0+img_1, img_2)
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(work)
    return work, run


def test_run_finishes_and_sets_aside_bad_images(tiny):
    work, run = tiny
    assert run.returncode == 0, run.stderr[-3000:]
    res = work / "results" / "tiny"
    images = read_table(res / "images.tsv")
    assert sorted(r["image"] for r in images) == ["img_0.tif", "img_1.tif", "img_2.tif"]
    for r in images:
        assert int(r["n_A"]) > 50 and int(r["n_B"]) > 50
        assert 380 < float(r["a_pm"]) < 400
    rejected = {r["file"]: r["reason"] for r in read_table(res / "rejected.tsv")}
    assert set(rejected) == {"broken.tif", "blank.tif"}
    assert "not a readable TIFF file" in rejected["broken.tif"]
    assert "constant image" in rejected["blank.tif"]
    for fig in ("histograms.png", "layers.png"):
        assert (res / "figures" / fig).stat().st_size > 10_000
    sampled = sorted(p.name for p in (res / "figures" / "images").glob("*.png"))
    assert sampled == ["img_0.png", "img_1.png", "img_2.png"]
    classes = read_table(res / "classes.csv")
    assert len(classes) >= 1 and sum(int(r["population"]) for r in classes) > 100
    layers = read_table(res / "layers.csv")
    assert {r["image"] for r in layers} == {"img_0.tif", "img_1.tif", "img_2.tif"}
    log = (res / "logs" / "columns" / "batch-00000.log").read_text()
    assert "broken.tif: rejected" in log and "Traceback" not in log
    batches = sorted(p.name for p in (res / "columns").iterdir())
    assert batches == ["batch-00000", "batch-00001", "batch-00002"]
    assert sorted(p.name for p in (res / "columns" / "batch-00001").glob("*.h5")) == [
        "img_0.tif.h5", "img_1.tif.h5"]


def test_raw_copies_are_verified_read_only_and_listed(tiny):
    work, _ = tiny
    manifest = read_table(work / "data" / "tiny" / "manifest.tsv")
    assert len(manifest) == 5
    for row in manifest:
        p = work / "data" / "tiny" / "raw" / row["file"]
        assert not p.stat().st_mode & stat.S_IWUSR
    # the facility's files are untouched
    assert (work / "facility" / "tiny_exp" / "broken.tif").stat().st_mode & stat.S_IWUSR


def test_second_run_does_nothing_and_lost_output_is_redone_alone(tiny):
    work, _ = tiny
    again = snakemake(work)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stderr + again.stdout
    # A run interrupted after some batches: only what is missing is planned.
    shutil.rmtree(work / "results" / "tiny" / "columns" / "batch-00001")
    (work / "results" / "tiny" / "statistics.h5").unlink()
    plan = snakemake(work, "-n", "--quiet", "rules")
    counts = {ln.split()[0]: ln.split()[1] for ln in (plan.stdout + plan.stderr).splitlines()
              if len(ln.split()) == 2 and ln.split()[1].isdigit()}
    assert counts.get("find_columns") == "1" and counts.get("statistics") == "1", plan.stdout
    assert "ingest" not in counts
    done = snakemake(work)
    assert done.returncode == 0
    assert (work / "results" / "tiny" / "columns" / "batch-00001" / "img_1.tif.h5").exists()


def test_provenance_reaches_the_raw_images(tiny):
    import json

    work, _ = tiny
    exe = str(Path(sys.executable).parent / "latticegenome")
    manifest = {r["file"]: r for r in read_table(work / "data" / "tiny" / "manifest.tsv")}
    for target in ("results/tiny/classes.csv", "results/tiny/statistics.h5",
                   "results/tiny/columns/batch-00001/img_0.tif.h5"):
        out = subprocess.run([exe, "provenance", target, "--json"], cwd=work, capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        raws = {Path(r["source_path"]).name: r for r in doc["raw_images"]}
        expected = {"img_0.tif"} if target.endswith("img_0.tif.h5") else {
            "img_0.tif", "img_1.tif", "img_2.tif", "broken.tif", "blank.tif"}
        assert set(raws) == expected
        for name, r in raws.items():
            assert r["sha256"] == manifest[name]["sha256"] and r["task_id"] == manifest[name]["task_id"]
        assert raws["img_0.tif"]["instrument"]["pixel_size_pm"] == 20.0
        assert doc["chain"]["record"]["software"]["latticegenome"]
    text = subprocess.run([exe, "provenance", "results/tiny/layers.csv"], cwd=work, capture_output=True,
                          text=True).stdout
    assert "rule statistics" in text and "raw image:" in text
    bad = subprocess.run([exe, "provenance", "nope.csv"], cwd=work, capture_output=True, text=True)
    assert bad.returncode == 2 and "nope.csv" in bad.stderr


def test_report_is_written(tiny):
    work, _ = tiny
    out = snakemake(work, "--report", str(work / "results" / "report.html"))
    assert out.returncode == 0, out.stderr[-2000:]
    html = (work / "results" / "report.html").read_text(errors="replace")
    assert "rejected" in html and "histograms.png" in html and "img_1.png" in html


def test_report_renders_in_headless_chromium(tiny, tmp_path):
    """The report as a reader sees it: loaded by Chromium, scripts run."""
    import re
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (make test installs it when run as root)")
    work, _ = tiny
    report = work / "results" / "report.html"
    if not report.exists():
        snakemake(work, "--report", str(report))
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
         "--enable-logging=stderr", "--v=0", "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    dom, log = out.stdout, out.stderr
    # rendered by the page's scripts (not only present in its embedded data)
    for category in ("2. Column finding", "3. Lattice statistics", "4. Structure models and DFT"):
        assert f">{category}<" in dom, category
    # the figures and tables are in the page
    assert ">1. Software<" in dom
    for name in ("histograms.png", "layers.png", "img_0.png", "classes.csv", "rejected.tsv", "software.tsv"):
        assert name in dom, name
    # no broken links: every src/href is inline data or an in-page anchor
    for attr in re.findall(r'(?:src|href)="([^"]*)"', dom):
        assert attr.startswith(("data:", "#", "https://", "http://")), attr
    console = [ln for ln in log.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not [ln for ln in console if re.search(r"Uncaught|Failed to load|ERR_", ln)], console


def test_package_with_valid_ro_crate_is_published(tiny):
    import json

    import responses
    from rocrate_validator import models, services

    work, _ = tiny
    if not (work / "results" / "report.html").exists():
        snakemake(work, "--report", str(work / "results" / "report.html"))
    out = snakemake(work, "publish_all")
    assert out.returncode == 0, out.stderr[-3000:]
    package = work / "results" / "tiny" / "package"
    crate = json.loads((package / "ro-crate-metadata.json").read_text())
    graph = {e["@id"]: e for e in crate["@graph"]}
    for name in ("statistics.h5", "classes.csv", "layers.csv", "report.html", "images/img_0.png"):
        entity = graph[name]
        from latticegenome.core.fsutil import sha256_file

        assert entity["sha256"] == sha256_file(package / name)
    assert graph["#run"]["@type"] == "CreateAction" and len(graph["#run"]["object"]) == 5
    # validated offline against the RO-Crate 1.3 rules: the JSON-LD context is
    # served from the copy ro-crate-py ships (no network here)
    import rocrate

    ctx = json.loads((Path(rocrate.__file__).parent / "data" / "ro-crate.jsonld").read_text())
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rs:
        rs.add(responses.GET, "https://w3id.org/ro/crate/1.3/context", json=ctx)
        result = services.validate(services.ValidationSettings(
            rocrate_uri=str(package), profile_identifier="ro-crate-1.3",
            requirement_severity=models.Severity.REQUIRED, no_cache=True))
    assert not result.has_issues(), [i.message for i in result.get_issues()]
    record = json.loads((work / "results" / "tiny" / "published.json").read_text())
    published = work / "publication" / "latticegenome" / "tiny"
    assert record["path"] == "latticegenome/tiny"
    for f in record["files"]:
        assert sha256_file(published / f["file"]) == f["sha256"]


def test_lint_is_clean():
    out = subprocess.run([SNAKEMAKE, "--lint"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


CONDA_STANDIN = """#!/bin/sh
# Stand-in for conda's version queries, for dry runs only: conda cannot run on
# this machine, and a dry run builds no environment. Not a conda.
case "$*" in
  "info --json") printf '{"conda_prefix": "%s", "platform": "linux-64", "conda_version": "24.11.0"}\\n' "$HOME" ;;
  "--version") echo "conda 24.11.0" ;;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}, "success": true}' ;;
  *) echo "conda stand-in: '$*' not supported (dry runs only)" >&2; exit 1 ;;
esac
"""


def test_profiles_work_as_typed_from_the_repository_root(tmp_path):
    standin = tmp_path / "bin" / "conda"
    standin.parent.mkdir()
    standin.write_text(CONDA_STANDIN)
    standin.chmod(0o755)
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               PATH=f"{standin.parent}{os.pathsep}{os.environ['PATH']}")
    inst = subprocess.run([str(Path(sys.executable).parent / "latticegenome"), "install-profiles"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr
    assert not (ROOT / "profiles" / "default").exists()
    for name in sorted(p.name for p in (ROOT / "profiles").iterdir() if p.is_dir()):
        out = subprocess.run([SNAKEMAKE, "--profile", name, "-n"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (name, out.stderr[-2000:])
        assert f"Using profile {name}" in out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("cp2k.psmp") is None, reason="cp2k not installed")
def test_dft_table_joins_classes_with_cp2k_results(tiny):
    work, run = tiny
    assert run.returncode == 0, run.stderr[-3000:]
    res = work / "results" / "tiny"
    classes = read_table(res / "classes.csv")
    table = read_table(res / "dft.csv")
    assert [r["class"] for r in table] == [r["class"] for r in classes]
    ran = [r for r in table if float(r["fraction"]) >= 0.05 and not r["status"].startswith("not run")]
    assert ran and all(r["status"] == "ok" for r in ran), table
    # frequent classes that are their material's reference within the artefacts: not run,
    # and the table says why
    same = [r for r in table if float(r["fraction"]) >= 0.05 and r["status"].startswith("not run")]
    assert all("reference structure within the image artefacts" in r["status"] for r in same)
    for r in ran:
        assert 1.0 < float(r["band_gap_eV"]) < 3.5
        assert -4000 < float(r["energy_per_fu_eV"]) < -3000
        assert abs(float(r["dE_meV_per_fu"])) < 2000
    skipped = [r for r in table if float(r["fraction"]) < 0.05]
    assert all(r["status"].startswith("not run") for r in skipped)
    models = sorted(p.name for p in (res / "models").glob("*.cif"))
    assert "reference_SrTiO3.cif" in models and "superlattice.cif" in models
    meta = json.loads((res / "models" / f"class_{ran[0]['class']}.json").read_text())
    assert meta["latticegenome"]["measured"]["inplane_pm"] == pytest.approx(
        float(ran[0]["a_pm_mean"]))
