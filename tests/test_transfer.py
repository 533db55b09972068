import os
import stat

import pytest

from latticegenome.errors import TransferError
from latticegenome.fsutil import sha256_file
from latticegenome.transfer import LocalBackend, check_name, read_manifest


@pytest.fixture
def facility(tmp_path):
    src = tmp_path / "facility" / "exp1"
    src.mkdir(parents=True)
    for k in range(3):
        (src / f"img_{k}.tif").write_bytes(os.urandom(1000 + k))
    (src / "notes.txt").write_text("not an image")
    return LocalBackend("scope", tmp_path / "facility"), src


def test_ingest_copies_verifies_and_writes_manifest(tmp_path, facility):
    backend, src = facility
    before = {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in src.iterdir()}
    entries, refused = backend.ingest("exp1", "*.tif", tmp_path / "raw", tmp_path / "manifest.tsv")
    assert refused == []
    assert [e.file for e in entries] == ["img_0.tif", "img_1.tif", "img_2.tif"]
    rows = read_manifest(tmp_path / "manifest.tsv")
    assert len({r.task_id for r in rows}) == 1
    for r in rows:
        copy = tmp_path / "raw" / r.file
        assert sha256_file(copy) == r.sha256 == before[r.file][0]
        assert r.size == copy.stat().st_size
        assert r.source_path == f"exp1/{r.file}" and r.facility == "scope"
        assert not copy.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    # the source is untouched
    assert {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in src.iterdir()} == before
    assert not list((tmp_path / "raw").glob("*.part"))


def test_rerun_resumes_same_task_and_copies_only_what_is_missing_or_wrong(tmp_path, facility):
    backend, src = facility
    raw = tmp_path / "raw"
    e1, _ = backend.ingest("exp1", "*.tif", raw, tmp_path / "m.tsv")
    mtimes = {p.name: p.stat().st_mtime_ns for p in raw.glob("*.tif")}
    (raw / "img_1.tif").unlink()  # lost
    os.chmod(raw / "img_2.tif", 0o644)
    (raw / "img_2.tif").write_bytes(b"x" * 1002)  # same size, wrong content
    e2, _ = backend.ingest("exp1", "*.tif", raw, tmp_path / "m.tsv")
    assert e1[0].task_id == e2[0].task_id
    assert (raw / "img_0.tif").stat().st_mtime_ns == mtimes["img_0.tif"]  # not copied again
    assert sha256_file(raw / "img_1.tif") == sha256_file(src / "img_1.tif")
    assert sha256_file(raw / "img_2.tif") == sha256_file(src / "img_2.tif")


@pytest.mark.parametrize("name", ["..", "../etc/passwd", "/abs", "a/b", "bad\nname.tif", "tab\tname", ".hidden"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(TransferError, match="refused"):
        check_name(name)


def test_ingest_refuses_control_characters_and_reports_them(tmp_path, facility):
    backend, src = facility
    (src / "evil\x07.tif").write_bytes(b"123")
    entries, refused = backend.ingest("exp1", "*.tif", tmp_path / "raw", tmp_path / "m.tsv")
    assert [n for n, _ in refused] == ["evil\x07.tif"]
    assert not (tmp_path / "raw" / "evil\x07.tif").exists()
    assert len(entries) == 3


def test_missing_folder_and_no_match_are_clear(tmp_path, facility):
    backend, _ = facility
    with pytest.raises(TransferError, match="no such folder"):
        backend.ingest("nope", "*", tmp_path / "raw", tmp_path / "m.tsv")
    with pytest.raises(TransferError, match=r"no files match '\*.dm4'"):
        backend.ingest("exp1", "*.dm4", tmp_path / "raw", tmp_path / "m.tsv")


def test_publish_copies_a_package_with_checksums(tmp_path, facility):
    backend, _ = facility
    pkg = tmp_path / "package"
    (pkg / "figures").mkdir(parents=True)
    (pkg / "result.h5").write_bytes(b"results")
    (pkg / "figures" / "a.png").write_bytes(b"png")
    rec = backend.publish(pkg, "pub/exp1")
    got = {r["file"]: r["sha256"] for r in rec["files"]}
    assert got == {"result.h5": sha256_file(pkg / "result.h5"), "figures/a.png": sha256_file(pkg / "figures" / "a.png")}
    assert (tmp_path / "facility" / "pub" / "exp1" / "figures" / "a.png").read_bytes() == b"png"
    again = backend.publish(pkg, "pub/exp1")  # republishing replaces our own copies
    assert again["files"] == rec["files"] and again["task_id"] != rec["task_id"]
