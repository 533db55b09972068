"""Scan rotation from the metadata: read, and checked for a configured scan pair.

DigitalMicrograph files record the scan rotation in degrees
(``ImageTags.DigiScan.Rotation``, and a ``Rotation Offset`` recorded beside
it), Velox EMD files in radians as a string (``Scan.ScanRotation``); both are
given as ``metadata["scan_rotation_deg"]``. A 0/90-degree pair whose two files
both record a rotation is corrected only when the rotations differ by 90 or
270 degrees (within 5); two frames of one scan direction are rejected, naming
both files and both rotations. The files are written in their vendors' layout
(tests/dmfile.py, the Velox writer of tests/test_io.py); the real DM3 and EMD
of the temul-toolkit wheel are read when the registry can be reached.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from test_io import _dm_several, _velox_emd, temul_images  # noqa: F401 (fixture)
from test_scanpair import scanned_pair
from test_scanpair_workflow import TRUTH_PM, lattice_error

from latticegenome.columns.analysis import check_scan_rotation
from latticegenome.columns.batch import analyse_batch
from latticegenome.columns.readers import Image, _dm_instrument, _velox_instrument, read_image
from latticegenome.columns.store import read_columns
from latticegenome.core.errors import ImageReadError

NM = (0.02, "nm")  # 20 pm pixels


def _dm_tags(digiscan: dict) -> dict:
    return {"ImageList": {"TagGroup0": {"ImageTags": {
        "Microscope Info": {"Voltage": 200000.0}, "DigiScan": digiscan}}}}


def _write_dm(path, image, rotation_deg=None, offset_deg=None, version=3):
    """A DM file of one HAADF image, 20 pm pixels, with its DigiScan rotation tags."""
    digiscan = {"Sample Time": 4.0}
    if rotation_deg is not None:
        digiscan["Rotation"] = float(rotation_deg)
    if offset_deg is not None:
        digiscan["Rotation Offset"] = float(offset_deg)
    _dm_several(path, [("HAADF", np.asarray(image), [NM, NM], {"DigiScan": digiscan})],
                version=version)


def _write_velox(path, image, rotation_rad: str | None):
    """A Velox EMD of one HAADF image (20 pm pixels) whose ``Scan.ScanRotation``
    is ``rotation_rad`` (a string, as Velox writes it; None: no such entry)."""
    _velox_emd(path, [("HAADF", np.asarray(image))])
    with h5py.File(path, "r+") as f:
        for group in f["Data/Image"].values():
            meta = json.loads(group["Metadata"][:, 0].tobytes().decode())
            meta["Scan"].pop("ScanRotation", None)
            if rotation_rad is not None:
                meta["Scan"]["ScanRotation"] = rotation_rad
            del group["Metadata"]
            group.create_dataset("Metadata", data=np.frombuffer(json.dumps(meta).encode(),
                                                                np.uint8)[:, None])


# --------------------------------------------------------------------------- reading


def test_dm_rotation_and_offset_are_recorded_apart():
    md = _dm_instrument(_dm_tags({"Rotation": 37.5, "Rotation Offset": -2.25}))
    assert md["scan_rotation_deg"] == 37.5 and md["scan_rotation_offset_deg"] == -2.25
    assert _dm_instrument(_dm_tags({"Rotation": 0.0}))["scan_rotation_deg"] == 0.0  # a value
    assert "scan_rotation_offset_deg" not in _dm_instrument(_dm_tags({"Rotation": 0.0}))
    for bad in (float("nan"), float("inf"), "ninety", True, None, [90.0]):
        md = _dm_instrument(_dm_tags({"Rotation": bad, "Rotation Offset": bad}))
        assert "scan_rotation_deg" not in md and "scan_rotation_offset_deg" not in md, bad
    assert "scan_rotation_deg" not in _dm_instrument(_dm_tags({"Sample Time": 4.0}))


@pytest.mark.parametrize(("text", "degrees"), [
    ("1.5707963267948966", 90.0), ("-0.78539816339744828", -45.0), ("0", 0.0),
    ("3.1415926535897931", 180.0), ("4.71238898038469", 270.0)])
def test_velox_rotation_in_radians_is_given_in_degrees(text, degrees):
    md = _velox_instrument({"Optics": {}, "Scan": {"ScanRotation": text, "DwellTime": "2e-06"}})
    assert md["scan_rotation_deg"] == pytest.approx(degrees, abs=1e-9)
    assert md["dwell_time_us"] == pytest.approx(2.0)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "", "n/a", None])
def test_velox_rotation_that_is_no_number_is_left_out(text):
    assert "scan_rotation_deg" not in _velox_instrument({"Scan": {"ScanRotation": text}})
    assert "scan_rotation_deg" not in _velox_instrument({"Scan": {}})


@pytest.mark.parametrize("version", [3, 4])
def test_dm_file_gives_its_scan_rotation(tmp_path, version, rng):
    p = tmp_path / f"scan.dm{version}"
    _write_dm(p, rng.poisson(50, (40, 48)).astype(np.uint16), 37.5, -2.25, version=version)
    (img,) = read_image(p)
    assert img.metadata["scan_rotation_deg"] == 37.5
    assert img.metadata["scan_rotation_offset_deg"] == -2.25
    assert img.metadata["dwell_time_us"] == pytest.approx(4.0)  # the record as before
    _write_dm(p, rng.poisson(50, (40, 48)).astype(np.uint16), float("nan"), version=version)
    (img,) = read_image(p)
    assert "scan_rotation_deg" not in img.metadata and "scan_rotation_offset_deg" not in img.metadata


def test_velox_file_gives_its_scan_rotation_in_degrees(tmp_path, rng):
    p = tmp_path / "scan.emd"
    _write_velox(p, rng.poisson(50, (64, 64)).astype(np.uint16), "1.5707963267948966")
    (img,) = read_image(p)
    assert img.metadata["scan_rotation_deg"] == pytest.approx(90.0, abs=1e-9)
    assert img.metadata["detector"] == "HAADF" and img.pixel_size_pm == pytest.approx(20.0)
    _write_velox(p, rng.poisson(50, (64, 64)).astype(np.uint16), "NaN")
    (img,) = read_image(p)
    assert "scan_rotation_deg" not in img.metadata


def test_real_files_give_their_scan_rotation(temul_images):
    """The real DM3 records DigiScan Rotation 0.0 and Rotation Offset 0.0; the real
    Velox EMD ScanRotation "0"."""
    (dm,) = read_image(temul_images["dm3"])
    assert dm.metadata["scan_rotation_deg"] == 0.0 and dm.metadata["scan_rotation_offset_deg"] == 0.0
    (emd,) = read_image(temul_images["emd"])
    assert emd.metadata["scan_rotation_deg"] == 0.0 and "scan_rotation_offset_deg" not in emd.metadata


# --------------------------------------------------------------------------- the pair check


def _frame(**metadata) -> Image:
    return Image(np.zeros((2, 2)), 20.0, "file", "x", metadata=metadata)


@pytest.mark.parametrize(("r0", "r90", "diff"), [
    (0.0, 90.0, 90.0), (0.0, 270.0, 270.0), (0.0, -90.0, 270.0), (350.0, 80.0, 90.0),
    (-45.0, 45.0, 90.0), (0.0, 94.9, 94.9), (0.0, 85.1, 85.1), (12.0, -83.0, 265.0), (0, 90, 90.0)])
def test_orthogonal_rotations_pass_and_are_recorded(r0, r90, diff):
    rec = check_scan_rotation("a_0.dm4", _frame(scan_rotation_deg=r0), "a_90.dm4",
                              _frame(scan_rotation_deg=r90))
    assert rec == {"rotation_checked": True, "scan_rotation_0_deg": r0, "scan_rotation_90_deg": r90,
                   "scan_rotation_difference_deg": pytest.approx(diff, abs=1e-6)}


@pytest.mark.parametrize(("r0", "r90", "text"), [
    (0.0, 0.5, "scan rotations 0.0 and 0.5 deg: not an orthogonal pair (they differ by 0.5 deg"),
    (0.0, 0.0, "scan rotations 0.0 and 0.0 deg: not an orthogonal pair (they differ by 0.0 deg"),
    (0.0, 95.1, "scan rotations 0.0 and 95.1 deg: not an orthogonal pair (they differ by 95.1 deg"),
    (30.0, 210.0, "scan rotations 30.0 and 210.0 deg: not an orthogonal pair (they differ by 180.0"),
    (90.0, 89.0, "scan rotations 90.0 and 89.0 deg: not an orthogonal pair (they differ by 359.0")])
def test_rotations_not_orthogonal_are_rejected_naming_both(r0, r90, text):
    with pytest.raises(ImageReadError) as err:
        check_scan_rotation("raw/a_0.dm4", _frame(scan_rotation_deg=r0), "raw/a_90.dm4",
                            _frame(scan_rotation_deg=r90))
    assert err.value.path == "raw/a_0.dm4"
    assert err.value.reason.startswith(f"a_0.dm4 and its 90-degree partner a_90.dm4: {text}")


@pytest.mark.parametrize(("md0", "md90", "known"), [
    ({}, {}, {}),
    ({"scan_rotation_deg": 10.0}, {}, {"scan_rotation_0_deg": 10.0}),
    ({}, {"scan_rotation_deg": 10.0}, {"scan_rotation_90_deg": 10.0}),
    ({"scan_rotation_deg": 0.0}, {"scan_rotation_deg": float("nan")}, {"scan_rotation_0_deg": 0.0}),
    ({"scan_rotation_deg": "0"}, {"scan_rotation_deg": True}, {})])
def test_a_rotation_missing_on_either_side_is_not_checked(md0, md90, known):
    rec = check_scan_rotation("a_0.dm4", _frame(**md0), "a_90.dm4", _frame(**md90))
    assert rec == {"rotation_checked": False, **known}


# --------------------------------------------------------------------------- pairs of real files


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """good_0/90.dm3: rotations 0 and 90 deg; same_0/90.emd (Velox): 0 and 0.5 deg."""
    f0, f90, _, _ = scanned_pair(seed=7)
    folder = tmp_path_factory.mktemp("raw")
    _write_dm(folder / "good_0.dm3", f0.astype(np.uint16), 0.0, 0.0)
    _write_dm(folder / "good_90.dm3", f90.astype(np.uint16), 90.0, 0.0)
    _write_velox(folder / "same_0.emd", f0.astype(np.uint16), "0")
    _write_velox(folder / "same_90.emd", f90.astype(np.uint16), repr(float(np.radians(0.5))))
    return folder


def test_pair_of_one_scan_direction_is_rejected_and_the_batch_goes_on(raw, tmp_path):
    names = ["same_0.emd", "same_90.emd", "good_0.dm3", "good_90.dm3"]
    results = analyse_batch([str(raw / n) for n in names], tmp_path / "batch",
                            {"spacing_pm": TRUTH_PM, "scan_pair": {}})
    assert [r["status"] for r in results] == ["rejected", "paired", "ok", "paired"]
    reason = results[0]["reason"]
    assert "same_0.emd and its 90-degree partner same_90.emd: scan rotations 0.0 and 0.5 deg: " \
           "not an orthogonal pair" in reason, reason
    cols, attrs = read_columns(tmp_path / "batch" / "same_0.emd.h5")
    assert attrs["status"] == "rejected" and len(cols) == 0 and "0.5 deg" in attrs["reason"]
    # the orthogonal pair of the same batch: corrected, its rotations recorded
    _, attrs = read_columns(tmp_path / "batch" / "good_0.dm3.h5")
    rec = attrs["info"]["scan_pair"]
    assert rec["corrected"] is True and rec["partner"] == "good_90.dm3"
    assert rec["rotation_checked"] is True
    assert rec["scan_rotation_0_deg"] == 0.0 and rec["scan_rotation_90_deg"] == 90.0
    assert rec["scan_rotation_difference_deg"] == 90.0
    assert attrs["metadata"]["scan_rotation_deg"] == 0.0
    assert lattice_error(tmp_path / "batch" / "good_0.dm3.h5") < 0.003


def test_descan_refuses_a_pair_of_one_scan_direction_and_records_a_good_one(raw, tmp_path, capsys):
    from latticegenome.cli import main

    out = tmp_path / "same.tif"
    assert main(["descan", str(raw / "same_0.emd"), str(raw / "same_90.emd"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "same_90.emd" in err and "not an orthogonal pair" in err and not out.exists()
    good = tmp_path / "good.tif"
    assert main(["descan", str(raw / "good_0.dm3"), str(raw / "good_90.dm3"), "-o", str(good),
                 "--rot90", "0"]) == 0
    side = json.loads((tmp_path / "good.tif.json").read_text())
    assert side["rotation_checked"] is True and side["scan_rotation_difference_deg"] == 90.0
