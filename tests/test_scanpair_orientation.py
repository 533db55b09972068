"""A scan pair's partner turned the wrong way (#17): `scan_pair.rot90` wrong by a quarter
or half turn is invisible to the lattice (a [001] projection looks the same turned), and
the scan-distortion correction would then be wrong without a sign. The field's
large-scale content (here the simulated pair's thickness bump) tells: the pair is
refused, naming both files and the rot90 that fits."""

from __future__ import annotations

import numpy as np
import pytest
from test_scan_rotation import _write_dm
from test_scanpair import scanned_pair
from test_scanpair_workflow import TRUTH_PM

from latticegenome.columns.batch import analyse_batch
from latticegenome.columns.scanpair import orientation_check
from latticegenome.columns.store import read_columns


@pytest.fixture(scope="module")
def pair():
    f0, f90, _, _ = scanned_pair(seed=3)
    return f0, f90


def test_the_right_orientation_is_confirmed_and_a_turned_one_found(pair):
    f0, f90 = pair
    ok = orientation_check(f0, f90)
    assert ok["checked"] and ok["turns"] == 0
    assert ok["correlation"][0] > 0.5 and max(ok["correlation"][1:]) < 0.3
    for t in (1, 2, 3):
        found = orientation_check(f0, np.rot90(f90, t))
        assert found["checked"] and found["turns"] == (4 - t) % 4, (t, found)


def test_a_field_without_large_scale_content_is_not_judged(rng):
    flat_0 = rng.poisson(100.0, (128, 128)).astype(float)
    flat_90 = rng.poisson(100.0, (128, 128)).astype(float)
    found = orientation_check(flat_0, flat_90)
    assert not found["checked"] and found["turns"] == 0


def test_a_wrong_rot90_is_refused_naming_both_files_and_the_right_one(pair, tmp_path):
    f0, f90 = pair
    raw = tmp_path / "raw"
    raw.mkdir()
    _write_dm(raw / "field_0.dm3", f0.astype(np.uint16), 0.0, 0.0)
    _write_dm(raw / "field_90.dm3", np.rot90(f90, 3).astype(np.uint16), 90.0, 0.0)  # as scanned
    names = [str(raw / n) for n in ("field_0.dm3", "field_90.dm3")]
    wrong = analyse_batch(names, tmp_path / "wrong", {"spacing_pm": TRUTH_PM,
                                                      "scan_pair": {"rot90": 3}})
    assert wrong[0]["status"] == "rejected", wrong[0]
    reason = wrong[0]["reason"]
    assert "field_0.dm3 and its 90-degree partner field_90.dm3" in reason
    assert "further 180 degrees" in reason and "scan_pair.rot90 is probably 1, not 3" in reason
    right = analyse_batch(names, tmp_path / "right", {"spacing_pm": TRUTH_PM,
                                                      "scan_pair": {"rot90": 1}})
    assert right[0]["status"] == "ok", right[0]
    rec = read_columns(tmp_path / "right" / "field_0.dm3.h5")[1]["info"]["scan_pair"]
    assert rec["corrected"] and rec["orientation_checked"] is True
    assert rec["orientation_correlation"][0] > 0.5
