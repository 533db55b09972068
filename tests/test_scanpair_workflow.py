"""Configured scan pairs in the column finding (``analysis.scan_pair``).

A frame pair of one field recorded with orthogonal fast scans (``field_0.tif``,
``field_90.tif``) is simulated with the forward model of
:mod:`latticegenome.columns.scanpair` (the lattice, drift and jitter of
tests/test_scanpair.py). With the pairing configured the 0-degree file is
analysed with its partner, the scan distortion corrected first, and the
90-degree file gets the status ``paired`` (neither used nor rejected by the
statistics); analysed alone, the 0-degree frame's lattice is off by the drift.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from latticegenome.columns.analysis import scan_pair_role
from latticegenome.columns.batch import analyse_batch, analyse_one
from latticegenome.columns.simulate import simulate_superlattice
from latticegenome.columns.store import read_columns
from latticegenome.core.fsutil import sha256_file
from latticegenome.core.settings import AnalysisSettings, ScanPair
from latticegenome.core.tables import read_table
from latticegenome.statistics.aggregate import _Rejections, _usable_image, measure_image_cells

sys.path.insert(0, str(Path(__file__).parent))
from test_scanpair import SPACING, scanned_pair  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PIXEL_PM = 20.0
TRUTH_PM = SPACING * PIXEL_PM  # 320 pm
SETTINGS = {"pixel_size_pm": PIXEL_PM, "spacing_pm": TRUTH_PM}


def lattice_error(h5) -> float:
    """Largest relative error of the median cell lengths a and b (fraction)."""
    cols, attrs = read_columns(h5)
    cells = measure_image_cells(cols, float(attrs["pixel_size_pm"]), TRUTH_PM,
                                projection=attrs["info"]["projection"])
    return max(abs(np.nanmedian(cells[k]) / TRUTH_PM - 1) for k in ("a_pm", "b_pm"))


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A raw folder with the pair, a lone 0-degree frame, and a pair of two shapes."""
    f0, f90, _, _ = scanned_pair(seed=7)
    folder = tmp_path_factory.mktemp("raw")
    tifffile.imwrite(folder / "field_0.tif", f0.astype(np.uint16))
    tifffile.imwrite(folder / "field_90.tif", f90.astype(np.uint16))
    tifffile.imwrite(folder / "lone_0.tif", f0.astype(np.uint16))
    tifffile.imwrite(folder / "cut_0.tif", f0.astype(np.uint16))
    tifffile.imwrite(folder / "cut_90.tif", f90[:, :200].astype(np.uint16))
    return folder


@pytest.fixture(scope="module")
def paired(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("paired")
    settings = {**SETTINGS, "scan_pair": {}}
    names = ("field_0.tif", "field_90.tif")
    results = analyse_batch([str(raw / n) for n in names], out / "batch", settings,
                            provenance={"rule": "find_columns"},
                            expected_sha256={n: sha256_file(raw / n) for n in names})
    return out / "batch", results


def test_scan_pair_settings():
    assert scan_pair_role("r/field_0.tif", ScanPair()) == ("0", Path("r/field_90.tif"))
    assert scan_pair_role("r/field_90.tif", ScanPair()) == ("90", Path("r/field_0.tif"))
    assert scan_pair_role("r/field_0.tif", None) is None and scan_pair_role("_0.tif", ScanPair()) is None
    custom = ScanPair(suffix_0="-fast-x", suffix_90="-fast-y", rot90=-1)
    assert scan_pair_role("a-fast-y.dm4", custom) == ("90", Path("a-fast-x.dm4"))
    for bad in ({"rot90": 2}, {"rot90": True}, {"suffix_0": "_90"}, {"suffix_0": ""}, {"x": 1}):
        with pytest.raises(ValueError):
            ScanPair(**bad)
    # the column finding uses it: changing it finds the columns again
    assert AnalysisSettings(scan_pair={}).for_columns()["scan_pair"] == \
        {"suffix_0": "_0", "suffix_90": "_90", "rot90": 0}


def test_pair_is_corrected_before_fitting(raw, paired, tmp_path):
    folder, results = paired
    assert [r["status"] for r in results] == ["ok", "paired"]
    corrected = lattice_error(folder / "field_0.tif.h5")
    # the same frame analysed alone (no pairing): off by the slow-scan drift (~1.8 %)
    analyse_one(str(raw / "field_0.tif"), str(tmp_path / "alone.h5"), SETTINGS)
    alone = lattice_error(tmp_path / "alone.h5")
    print(f"lattice error: corrected {corrected:.5f}, alone {alone:.5f}")
    assert corrected < 0.003, corrected
    assert alone > 0.01, alone


def test_partner_stored_as_scanned_is_turned_by_rot90(raw, tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    shutil.copy(raw / "field_0.tif", folder / "turned_0.tif")
    f90 = tifffile.imread(raw / "field_90.tif")
    tifffile.imwrite(folder / "turned_90.tif", np.rot90(f90, -1))  # its rows are its scan lines
    r = analyse_one(str(folder / "turned_0.tif"), str(tmp_path / "turned.h5"),
                    {**SETTINGS, "scan_pair": {"rot90": 1}})
    assert r["status"] == "ok", r["reason"]
    assert read_columns(tmp_path / "turned.h5")[1]["info"]["scan_pair"]["rot90"] == 1
    assert lattice_error(tmp_path / "turned.h5") < 0.003


def test_pairing_is_recorded(raw, paired):
    folder, _ = paired
    _, attrs = read_columns(folder / "field_0.tif.h5")
    rec = attrs["info"]["scan_pair"]
    print(json.dumps(rec))
    assert rec["partner"] == "field_90.tif" and rec["corrected"] and "warning" not in rec
    assert rec["partner_sha256"] == sha256_file(raw / "field_90.tif")
    assert rec["partner_sha256_source"] == "manifest"  # both in the batch: checked
    # plain TIFFs record no scan rotation: corrected as configured, the rotation not checked
    assert rec["rotation_checked"] is False
    assert "scan_rotation_0_deg" not in rec and "scan_rotation_90_deg" not in rec
    assert np.allclose(rec["drift_0_px_per_line"], (0.012, 0.018), atol=0.002)
    assert rec["residual"] < rec["residual_linear"] < 0.5 * rec["residual_raw"]
    assert min(rec["lines_measured_fraction"]) > 0.9
    inputs = [Path(i["path"]).name for i in attrs["provenance"]["inputs"]]
    assert inputs == ["field_0.tif", "field_90.tif"]
    cols, attrs = read_columns(folder / "field_90.tif.h5")
    assert attrs["status"] == "paired" and len(cols) == 0
    assert "the 90-degree partner of field_0.tif" in attrs["reason"]
    marker = json.loads((folder / "batch.json").read_text())
    assert [e["status"] for e in marker["images"]] == ["ok", "paired"]


def test_statistics_skip_the_paired_frame_quietly(paired):
    folder, _ = paired
    source, usable = _usable_image(folder / "field_90.tif.h5", nominal_pm=TRUTH_PM,
                                   reference_region_px=None, materials=None,
                                   lattice_tolerance=None)
    assert source.endswith("field_90.tif") and usable is None
    from latticegenome.statistics.aggregate import measure_pass

    class Writer:
        def append_cells(self, cells, k):
            return (0, len(cells["x"]))

    rejected = _Rejections()
    measured = measure_pass([folder / "field_0.tif.h5", folder / "field_90.tif.h5"], Writer(),
                            rejected, nominal_pm=TRUTH_PM, lattice_tolerance=None)
    assert measured.names == ["field_0.tif"] and len(rejected) == 0


def test_lone_frame_is_analysed_alone_with_a_warning(raw, tmp_path):
    r = analyse_one(str(raw / "lone_0.tif"), str(tmp_path / "lone.h5"), {**SETTINGS, "scan_pair": {}})
    assert r["status"] == "ok" and "lone_90.tif" in r["warning"]
    _, attrs = read_columns(tmp_path / "lone.h5")
    rec = attrs["info"]["scan_pair"]
    assert rec["partner"] == "lone_90.tif" and rec["corrected"] is False
    assert "analysed alone" in rec["warning"] and "ingested later is not used" in rec["warning"]
    # a 90-degree frame without its 0-degree frame: analysed alone too, never dropped
    lone90 = tmp_path / "raw90"
    lone90.mkdir()
    shutil.copy(raw / "field_90.tif", lone90 / "only_90.tif")
    r = analyse_one(str(lone90 / "only_90.tif"), str(tmp_path / "only.h5"),
                    {**SETTINGS, "scan_pair": {}})
    assert r["status"] == "ok" and "only_0.tif" in r["warning"] and "counts twice" in r["warning"]


def test_partner_arriving_later_is_paired_but_its_frame_was_analysed_alone(raw, tmp_path):
    """Increment 1 brings late_0.tif, increment 2 late_90.tif (batches never span
    increments): late_0.tif was analysed alone, and says so; late_90.tif is paired."""
    folder = tmp_path / "raw"
    folder.mkdir()
    shutil.copy(raw / "field_0.tif", folder / "late_0.tif")
    settings = {**SETTINGS, "scan_pair": {}}
    first = analyse_batch([str(folder / "late_0.tif")], tmp_path / "batch-0", settings)
    shutil.copy(raw / "field_90.tif", folder / "late_90.tif")
    second = analyse_batch([str(folder / "late_90.tif")], tmp_path / "batch-1", settings)
    assert first[0]["status"] == "ok" and "not analysed again" in first[0]["warning"]
    rec = read_columns(tmp_path / "batch-0" / "late_0.tif.h5")[1]["info"]["scan_pair"]
    assert rec["corrected"] is False and rec["partner"] == "late_90.tif"
    assert second[0]["status"] == "paired" and "earlier ingest increment" in second[0]["reason"]


def test_partner_of_another_shape_or_changed_is_rejected_naming_both(raw, tmp_path):
    settings = {**SETTINGS, "scan_pair": {}}
    r = analyse_one(str(raw / "cut_0.tif"), str(tmp_path / "cut.h5"), settings)
    assert r["status"] == "rejected"
    assert "cut_0.tif" in r["reason"] and "cut_90.tif" in r["reason"] and "shape" in r["reason"]
    _, attrs = read_columns(tmp_path / "cut.h5")
    assert "cut_90.tif (256, 200)" in attrs["reason"]
    r = analyse_one(str(raw / "field_0.tif"), str(tmp_path / "changed.h5"), settings,
                    partner_sha256="0" * 64)
    assert r["status"] == "rejected" and "field_90.tif changed since ingest" in r["reason"]


# --------------------------------------------------------------------------- the workflow


@pytest.mark.workflow
@pytest.mark.slow
def test_workflow_analyses_the_pair_together(tmp_path):
    """One pair and one ordinary image; batches of 2 split the pair (bulk.tif,
    field_0.tif | field_90.tif): the partner is read from the raw folder."""
    fac = tmp_path / "facility" / "exp"
    fac.mkdir(parents=True)
    f0, f90, _, _ = scanned_pair(seed=7)
    tifffile.imwrite(fac / "field_0.tif", f0.astype(np.uint16))
    tifffile.imwrite(fac / "field_90.tif", f90.astype(np.uint16))
    img, _, _ = simulate_superlattice((200, 200), rng=np.random.default_rng(0))
    tifffile.imwrite(fac / "bulk.tif", img.astype(np.uint16), imagej=True,
                     resolution=(50.0, 50.0), metadata={"unit": "nm"})
    config = {
        "scratch": "data", "results": "results", "batch_size": 2,
        "facilities": {"scope": {"backend": "local", "path": str(tmp_path / "facility")}},
        "analysis": {"scan_pair": {"suffix_0": "_0", "suffix_90": "_90"}},
        "experiments": {"exp": {
            # the pair's TIFFs carry no pixel size: 390.5 pm / 16 px; bulk.tif carries 20 pm
            "facility": "scope", "path": "exp", "pattern": "*.tif", "pixel_size_pm": 390.5 / SPACING,
            "materials": [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5},
                          {"formula": "BaTiO3", "A": "Ba", "B": "Ti", "a_pm": 399.2}]}},
        "dft": {"enabled": False},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"),
           "--profile", str(ROOT / "profiles" / "local"), "--cores", "2"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    res = tmp_path / "results" / "exp"
    images = {r["image"]: r for r in read_table(res / "images.tsv")}
    assert sorted(images) == ["bulk.tif", "field_0.tif"]
    assert abs(float(images["field_0.tif"]["a_pm"]) / 390.5 - 1) < 0.003
    assert abs(float(images["field_0.tif"]["b_pm"]) / 390.5 - 1) < 0.003
    assert "field_90.tif" not in {r["file"] for r in read_table(res / "rejected.tsv")}
    h5 = {p.name: p for p in (res / "columns").rglob("*.h5")}
    assert h5["field_0.tif.h5"].parent != h5["field_90.tif.h5"].parent  # split across batches
    _, attrs = read_columns(h5["field_0.tif.h5"])
    assert attrs["info"]["scan_pair"]["partner"] == "field_90.tif"
    assert attrs["info"]["scan_pair"]["corrected"] is True
    assert attrs["info"]["scan_pair"]["partner_sha256_source"] == "read"  # another batch's
    assert read_columns(h5["field_90.tif.h5"])[1]["status"] == "paired"
    logs = "".join(p.read_text() for p in (res / "logs").rglob("*.log"))
    assert "field_90.tif: paired, not analysed on its own" in logs
    assert "field_90.tif: not an image of its own" in logs
