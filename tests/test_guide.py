"""Follows docs/adding.md literally: its `# file:` blocks go into a copy of the
workflow, which then runs the new rule on a new experiment."""

import json
import re
import shutil
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
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def guide_blocks():
    text = (ROOT / "docs" / "adding.md").read_text()
    blocks = re.findall(r"```\w*\n(.*?)```", text, flags=re.S)
    files = {}
    for b in blocks:
        first, _, rest = b.partition("\n")
        if first.startswith("# file: "):
            path = first[len("# file: "):].strip()
            # a comment line is fine in Python; in a caption it would show
            files[path] = rest if path.endswith(".rst") else b
    include = next(b for b in blocks if b.startswith("include:")).strip()
    config = yaml.safe_load(next(b for b in blocks if b.startswith("facilities:")))
    return files, include, config


def test_guide_example_runs(tmp_path):
    files, include, guide_config = guide_blocks()
    assert {"rules/intensities.smk", "scripts/intensities.py", "report/intensities.rst"} <= set(files)
    wf = tmp_path / "wf"
    for part in ("Snakefile", "rules", "scripts", "report", "envs", "config/schema.yaml"):
        src = ROOT / part
        dst = wf / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    for path, text in files.items():
        (wf / path).write_text(text)
    with open(wf / "Snakefile", "a") as fh:
        fh.write("\n\n" + include + "\n")
    # the guide's experiment, pointed at a local folder with one good and one broken image
    fac = tmp_path / "facility"
    exp_name, exp = next(iter(guide_config["experiments"].items()))
    folder = fac / exp["path"]
    folder.mkdir(parents=True)
    img, _, _ = simulate_superlattice((200, 200), rng=np.random.default_rng(1))
    tifffile.imwrite(folder / "good.tif", img.astype(np.uint16), imagej=True, resolution=(50.0, 50.0),
                     metadata={"unit": "nm"})
    (folder / "broken.tif").write_bytes(b"II*\x00junk")
    exp["pattern"] = "*.tif"  # the example uses DM4; the test makes TIFFs
    facility = next(iter(guide_config["facilities"]))
    config = {"facilities": {facility: {"backend": "local", "path": str(fac)}},
              "experiments": {exp_name: exp}}
    (wf / "config").mkdir(exist_ok=True)
    (wf / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    target = f"results/{exp_name}/intensities/.done"
    run = subprocess.run([str(BIN / "snakemake"), "--profile", str(ROOT / "profiles" / "local"),
                          "--cores", "2", target], cwd=wf, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    good = read_table(wf / "results" / exp_name / "intensities" / "good.tif.csv")
    assert {r["site"] for r in good} == {"A", "B"} and all(float(r["intensity"]) > 0 for r in good)
    assert read_table(wf / "results" / exp_name / "intensities" / "broken.tif.csv") == []
    prov = subprocess.run([str(BIN / "latticegenome"), "provenance", "--json",
                           f"results/{exp_name}/intensities/good.tif.csv"], cwd=wf, capture_output=True,
                          text=True)
    assert prov.returncode == 0, prov.stderr
    raws = json.loads(prov.stdout)["raw_images"]
    assert [Path(r["source_path"]).name for r in raws] == ["good.tif"]
    lint = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=wf, capture_output=True, text=True,
                          timeout=300)
    assert lint.returncode == 0, lint.stdout[-3000:]
    rep = subprocess.run([str(BIN / "snakemake"), "--report", "report.html", target], cwd=wf,
                         capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert "Extra analyses" in (wf / "report.html").read_text(errors="replace")
