"""Nothing let in, nothing wrong passed on: a real Snakemake run on a facility
folder as a hostile but fair tester fills it (links to secrets, names with
newlines, Unicode names, an image whose pixel size is wrong by 2x), then a raw
copy and a facility original are tampered with, and a stale report is
offered for publication."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import yaml

from latticegenome.columns.simulate import simulate_superlattice
from latticegenome.statistics.results import image_cells, read_statistics
from latticegenome.core.tables import read_table

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
LATTICEGENOME = str(Path(sys.executable).parent / "latticegenome")
pytestmark = [pytest.mark.workflow, pytest.mark.slow]
SECRET = "SECRET-TOKEN-4f9a"
GOOD = ["img_0.tif", "ünïcödé_é.tif", "µ-Å_2.tif"]


def snakemake(work, *args, timeout=600):
    cmd = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(work / "config.yaml"), "--profile", str(ROOT / "profiles" / "local"),
           "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work,
                          preexec_fn=lambda: os.umask(0o002))


def _tif(path, seed, nm_per_px=0.02):
    img, _, _ = simulate_superlattice((200, 200), rng=np.random.default_rng(seed))
    tifffile.imwrite(path, img.astype(np.uint16), imagej=True,
                     resolution=(1 / nm_per_px, 1 / nm_per_px), metadata={"unit": "nm"})


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    work = tmp_path_factory.mktemp("hostile")
    fac = work / "facility" / "exp"
    fac.mkdir(parents=True)
    for k, name in enumerate(GOOD):
        _tif(fac / name, k)
    _tif(fac / "wrong_scale.tif", 7, nm_per_px=0.04)  # the file claims twice the pixel size
    outside = work / "elsewhere"
    outside.mkdir()
    (outside / "secret.tif").write_text(f"root:x:0:0:{SECRET}\n")
    _tif(outside / "other_image.tif", 9)
    os.symlink(outside / "secret.tif", fac / "link_secret.tif")
    os.symlink(outside / "other_image.tif", fac / "link_image.tif")
    os.symlink(fac / "img_0.tif", fac / "link_inside.tif")
    _tif(fac / "evil\nname.tif", 3)
    _tif(fac / ".hidden.tif", 4)
    config = {
        "facilities": {"scope": {"backend": "local", "path": str(work / "facility")},
                       "pub": {"backend": "local", "path": str(work / "publication")}},
        "publication": {"facility": "pub", "path": "latticegenome"},
        "experiments": {"hostile": {
            "facility": "scope", "path": "exp", "pattern": "*.tif",
            "materials": [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5},
                          {"formula": "BaTiO3", "A": "Ba", "B": "Ti", "a_pm": 399.2}],
        }},
        "dft": {"enabled": False},
        "batch_size": 2,
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    run = snakemake(work)
    return work, run


def _res(work):
    return work / "results" / "hostile"


def test_links_and_unsafe_names_are_refused_and_listed(hostile):
    work, run = hostile
    assert run.returncode == 0, run.stderr[-3000:]
    raw = sorted(p.name for p in (work / "data" / "hostile" / "raw").iterdir()
                 if not p.name.endswith(".prov.json") and not p.name.startswith("."))
    assert raw == sorted([*GOOD, "wrong_scale.tif"])
    rejected = {r["file"]: r["reason"] for r in read_table(_res(work) / "rejected.tsv")}
    for link in ("link_secret.tif", "link_image.tif", "link_inside.tif"):
        assert "symbolic link" in rejected[link], rejected
    assert "control character" in rejected["evil\\nname.tif"]
    assert "hidden" in rejected[".hidden.tif"]


def test_no_secret_reaches_any_output(hostile):
    work, _ = hostile
    for folder in ("data", "results"):
        for p in (work / folder).rglob("*"):
            if p.is_file():
                assert SECRET.encode() not in p.read_bytes(), p


def test_unicode_names_are_analysed_end_to_end(hostile):
    work, _ = hostile
    images = {r["image"]: r for r in read_table(_res(work) / "images.tsv")}
    assert set(images) == set(GOOD)
    with h5py.File(_res(work) / "statistics.h5") as f:
        assert sorted(f["images"].asstr()[()]) == sorted(GOOD)
    assert {r["image"] for r in read_table(_res(work) / "layers.csv")} == set(GOOD)
    assert (_res(work) / "columns" / "batch-00000" / "img_0.tif.h5").exists()


def test_an_image_with_a_wrong_pixel_size_is_rejected_before_the_classes(hostile):
    work, _ = hostile
    rejected = {r["file"]: r["reason"] for r in read_table(_res(work) / "rejected.tsv")}
    reason = rejected["wrong_scale.tif"]
    assert "check the pixel size" in reason and "390.5" in reason
    # the column finding already sees the lattice at twice the scale (else the statistics)
    measured = float(re.search(r"(?:measured a = |a spacing of )([\d.]+)", reason).group(1))
    assert 700 < measured < 860
    stats = read_statistics(_res(work) / "statistics.h5")
    cells = [image_cells(_res(work) / "statistics.h5", k) for k in range(len(stats.images))]
    a_pm = np.concatenate([c["a_pm"] for c in cells])
    labels = np.concatenate([c["class"] for c in cells])
    assert np.nanmax(a_pm) < 500  # no 780 pm cell reached the table or the class model
    population = sum(int(r["population"]) for r in read_table(_res(work) / "classes.csv"))
    assert population == int((labels >= 0).sum()) and population > 100


def test_results_follow_the_umask(hostile):
    work, _ = hostile
    for p in (_res(work) / "statistics.h5", _res(work) / "classes.csv",
              _res(work) / "columns" / "batch-00000" / "img_0.tif.h5"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o664, p
    assert stat.S_IMODE((_res(work) / "columns" / "batch-00000").stat().st_mode) == 0o775


def test_memory_request_comes_from_the_image_sizes(hostile):
    work, _ = hostile
    plan = snakemake(work, "-n", "--forcerun", "find_columns", "--verbose")
    text = plan.stdout + plan.stderr
    mems = {int(w.split("=")[1].rstrip(",")) for line in text.splitlines() if "mem_mb=" in line
            for w in line.split() if w.startswith("mem_mb=")}
    from latticegenome.columns.batch import memory_mb

    sizes = [(work / "data" / "hostile" / "raw" / n).stat().st_size for n in GOOD[:2]]
    assert memory_mb(sizes, 2) in mems, text[-3000:]


def test_tampering_is_caught_and_a_stale_report_is_not_published(hostile):
    work, _ = hostile
    report = work / "results" / "report.html"
    made = snakemake(work, "--report", str(report))
    assert made.returncode == 0, made.stderr[-2000:]
    # a raw copy modified after ingest (made writable first: copies are read-only)
    copy = work / "data" / "hostile" / "raw" / "img_0.tif"
    copy.chmod(0o644)
    data = tifffile.imread(copy)
    data[10, 10] += 5
    tifffile.imwrite(copy, data, imagej=True, resolution=(50.0, 50.0), metadata={"unit": "nm"})
    # and a facility original changed after ingest
    _tif(work / "facility" / "exp" / "µ-Å_2.tif", 11)
    run = snakemake(work)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "µ-Å_2.tif changed since ingest" in run.stderr
    rejected = {r["file"]: r["reason"] for r in read_table(_res(work) / "rejected.tsv")}
    assert "changed since ingest" in rejected["img_0.tif"]
    assert "img_0.tif" not in {r["image"] for r in read_table(_res(work) / "images.tsv")}
    # provenance compares the copy with the manifest, and says so in its status
    prov = subprocess.run([LATTICEGENOME, "provenance", "data/hostile/raw/img_0.tif"], cwd=work,
                          capture_output=True, text=True)
    assert prov.returncode == 1 and "CHANGED" in prov.stdout, prov.stdout + prov.stderr
    # the report was made before this analysis: the package refuses it
    pub = snakemake(work, "publish_all")
    assert pub.returncode != 0
    assert "shows an older" in pub.stdout + pub.stderr and "report.html" in pub.stdout + pub.stderr
    assert not (_res(work) / "package").exists()


def test_an_experiment_path_outside_the_facility_stops_the_workflow(tmp_path):
    for path in ("../../../../etc", "/etc"):
        config = {"facilities": {"scope": {"backend": "local", "path": str(tmp_path / "fac")}},
                  "experiments": {"escape": {
                      "facility": "scope", "path": path, "pattern": "passwd",
                      "materials": [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5}]}},
                  "dft": {"enabled": False}}
        (tmp_path / "fac").mkdir(exist_ok=True)
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        run = snakemake(tmp_path)
        assert run.returncode != 0
        assert "experiments.escape.path" in run.stdout + run.stderr
        assert not (tmp_path / "data" / "escape" / "raw" / "passwd").exists()
