import os
import stat

import pytest

from latticegenome.core.errors import TransferError
from latticegenome.core.fsutil import sha256_file
from latticegenome.ingest.local import LocalBackend
from latticegenome.ingest.manifest import check_name, read_manifest


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


# --- symbolic links and folders outside the facility --------------------------

SECRET = b"root:x:0:0:SECRET-hunter2:/root:/bin/bash\n"


def _all_bytes_under(folder):
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture
def secret_file(tmp_path):
    p = tmp_path / "elsewhere" / "shadow.tif"
    p.parent.mkdir()
    p.write_bytes(SECRET)
    return p


def test_symlinks_are_refused_never_read(tmp_path, facility, secret_file):
    backend, src = facility
    (src / "link_out.tif").symlink_to(secret_file)
    (src / "link_in.tif").symlink_to(src / "img_0.tif")  # a link, even inside the root
    (src / "link_rel.tif").symlink_to("../../elsewhere/shadow.tif")
    (src / "dangling.tif").symlink_to(tmp_path / "nothing.tif")
    entries, refused = backend.ingest("exp1", "*.tif", tmp_path / "raw", tmp_path / "m.tsv")
    assert [e.file for e in entries] == ["img_0.tif", "img_1.tif", "img_2.tif"]
    assert sorted(n for n, _ in refused) == ["dangling.tif", "link_in.tif", "link_out.tif",
                                             "link_rel.tif"]
    assert all("symbolic link" in r for _, r in refused)
    assert b"SECRET" not in _all_bytes_under(tmp_path / "raw")
    assert b"SECRET" not in (tmp_path / "m.tsv").read_bytes()
    assert not any("SECRET" in r or "shadow" in r for _, r in refused)
    assert [n for n, _ in backend.list("exp1", "*.tif")] == ["img_0.tif", "img_1.tif", "img_2.tif"]


def test_a_file_swapped_for_a_link_during_ingest_is_not_followed(tmp_path, facility, secret_file,
                                                                 monkeypatch):
    """O_NOFOLLOW at open: no race between the check and the read."""
    from latticegenome.ingest import local

    backend, src = facility
    real_copy = local._copy_verified

    def copy_then_swap(name, dest, **kw):  # after the first copy, img_1 becomes a link
        out = real_copy(name, dest, **kw)
        if name == "img_0.tif":
            (src / "img_1.tif").unlink()
            (src / "img_1.tif").symlink_to(secret_file)
        return out

    monkeypatch.setattr(local, "_copy_verified", copy_then_swap)
    entries, refused = backend.ingest("exp1", "*.tif", tmp_path / "raw", tmp_path / "m.tsv")
    assert [e.file for e in entries] == ["img_0.tif", "img_2.tif"]
    assert [n for n, _ in refused] == ["img_1.tif"] and "symbolic link" in refused[0][1]
    assert not (tmp_path / "raw" / "img_1.tif").exists()
    assert b"SECRET" not in _all_bytes_under(tmp_path / "raw")


@pytest.mark.parametrize("where", ["dotdot", "absolute", "folder_link"])
def test_experiment_folder_must_lie_inside_the_facility(tmp_path, facility, secret_file, where):
    backend, _ = facility
    path = {"dotdot": "../elsewhere", "absolute": str(secret_file.parent),
            "folder_link": "linked"}[where]
    if where == "folder_link":
        (tmp_path / "facility" / "linked").symlink_to(secret_file.parent)
    with pytest.raises(TransferError, match="outside facility 'scope'") as err:
        backend.ingest(path, "*.tif", tmp_path / "raw", tmp_path / "m.tsv")
    assert path in str(err.value) and "SECRET" not in str(err.value)
    assert not (tmp_path / "raw").exists()  # checked before anything is written
    with pytest.raises(TransferError, match="outside facility"):
        backend.ingest("../../etc" if where == "dotdot" else "/etc", "*", tmp_path / "raw",
                       tmp_path / "m.tsv")


def test_a_folder_link_inside_the_facility_is_fine(tmp_path, facility):
    backend, _ = facility
    (tmp_path / "facility" / "alias").symlink_to(tmp_path / "facility" / "exp1")
    entries, refused = backend.ingest("alias", "*.tif", tmp_path / "raw", tmp_path / "m.tsv")
    assert len(entries) == 3 and refused == []


# --- refused names: listed, escaped -------------------------------------------

HOSTILE = ["new\nline.tif", "tab\tname.tif", "ctl\x01.tif", ".hidden.tif", "back\\slash.tif"]


def test_display_name_escapes_control_characters_keeps_unicode():
    from latticegenome.ingest.manifest import display_name

    assert display_name("new\nline\t\x01\x7f\\.tif") == "new\\nline\\t\\x01\\x7f\\\\.tif"
    assert display_name("µm_Å_über.tif") == "µm_Å_über.tif"
    assert display_name("ls\u2028sep\x85.tif") == "ls\\u2028sep\\x85.tif"
    assert display_name("bad\udcff.tif") == "bad\\xff.tif"  # a non-UTF-8 byte from the file system
    for name in HOSTILE:
        shown = display_name(name)
        assert shown.isprintable() and "\n" not in shown and "\t" not in shown


@pytest.mark.parametrize("name", HOSTILE[:4] + ["nel\x85.tif", "ls\u2028.tif", "bad\udcff.tif"])
def test_check_name_reasons_use_the_display_form(name):
    from latticegenome.ingest.manifest import display_name

    with pytest.raises(TransferError, match="refused") as err:
        check_name(name)
    reason = err.value.reason
    assert display_name(name) in reason and reason.isprintable()


def test_refused_names_are_written_to_a_tsv_and_read_back(tmp_path, facility):
    from latticegenome.ingest.manifest import display_name, read_refused, write_refused

    backend, src = facility
    for name in HOSTILE + ["µ_Å_ü.tif"]:
        (src / name).write_bytes(b"x")
    entries, refused = backend.ingest("exp1", "*.tif", tmp_path / "raw", tmp_path / "m.tsv")
    assert sorted(n for n, _ in refused) == sorted(HOSTILE)
    taken = [e.file for e in entries]
    assert "µ_Å_ü.tif" in taken and "back\\slash.tif" not in taken
    assert all(n not in r for n, r in refused if n != display_name(n))  # reasons: display form
    out = tmp_path / "rejected.tsv"
    write_refused(out, refused)
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "file\treason" and lines[-1] == "" and len(lines) == 2 + len(refused)
    assert all(line.count("\t") == 1 for line in lines[:-1])
    back = read_refused(out)
    assert [n for n, _ in back] == [display_name(n) for n, _ in refused]
    assert [r for _, r in back] == [r for _, r in refused]
    write_refused(out, [("µ_Å_ü\n.tif", "a reason\nwith a line break")])
    assert read_refused(out) == [("µ_Å_ü\\n.tif", "a reason\\nwith a line break")]
    write_refused(out, [])
    assert out.read_text() == "file\treason\n" and read_refused(out) == []
    assert not list(tmp_path.glob(".rejected.tsv*"))


# --- the manifest records the source's mtime; facility changes -----------------

def test_manifest_records_source_mtime_and_reads_older_manifests(tmp_path, facility):
    from latticegenome.ingest.manifest import MANIFEST_FIELDS, ManifestEntry, manifest_index

    backend, src = facility
    entries, _ = backend.ingest("exp1", "*.tif", tmp_path / "raw", tmp_path / "m.tsv")
    assert "source_mtime_ns" in MANIFEST_FIELDS
    rows = read_manifest(tmp_path / "m.tsv")
    mtimes = [str((src / r.file).stat().st_mtime_ns) for r in rows]
    assert [r.source_mtime_ns for r in rows] == mtimes
    old = tmp_path / "old.tsv"  # a manifest written before the column existed
    old.write_text("file\tsize\tsha256\tfacility\tcollection\tsource_path\ttask_id\t"
                   "transferred_at\n"
                   "a.tif\t3\tabc\tscope\tlocal:/x\texp1/a.tif\tt1\t2026-01-01T00:00:00Z\n")
    (e,) = read_manifest(old)
    assert e.size == 3 and e.source_mtime_ns == ""
    assert manifest_index(old) == {"a.tif": (3, "abc")}
    assert manifest_index(tmp_path / "m.tsv") == {r.file: (r.size, r.sha256) for r in rows}
    assert ManifestEntry("a", 1, "s", "f", "c", "p", "t", "now").source_mtime_ns == ""


def test_facility_changes_reports_content_changes_and_gone_files(tmp_path, facility, secret_file,
                                                                 monkeypatch):
    from latticegenome.ingest import local as transfer
    from latticegenome.ingest.local import facility_changes

    backend, src = facility
    entries, _ = backend.ingest("exp1", "*.tif", tmp_path / "raw", tmp_path / "m.tsv")
    hashed = []
    real_hash = transfer._hash_source
    monkeypatch.setattr(transfer, "_hash_source", lambda *a: hashed.append(a[-1]) or real_hash(*a))
    assert facility_changes(backend, "exp1", entries) == [] and hashed == []  # cheap: no hashing
    st = (src / "img_0.tif").stat()
    os.utime(src / "img_0.tif", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched only
    new = os.urandom(1001)
    (src / "img_1.tif").write_bytes(new)  # same size, new content
    (src / "img_2.tif").unlink()
    got = dict(facility_changes(backend, "exp1", entries))
    assert sorted(hashed) == ["img_0.tif", "img_1.tif"]
    assert "img_0.tif" not in got
    old = entries[1].sha256
    assert got["img_1.tif"].startswith(f"changed since ingest (sha256 {old[:12]}")
    assert transfer.sha256_file(src / "img_1.tif")[:12] in got["img_1.tif"]
    assert "size 1001 bytes" in got["img_1.tif"]
    assert got["img_2.tif"] == "gone from the facility"
    (src / "img_1.tif").unlink()
    (src / "img_1.tif").symlink_to(secret_file)  # never followed
    got = dict(facility_changes(backend, "exp1", entries))
    assert "symbolic link" in got["img_1.tif"] and "SECRET" not in got["img_1.tif"]


def test_facility_changes_escapes_names(tmp_path, facility):
    from latticegenome.ingest.local import facility_changes
    from latticegenome.ingest.manifest import ManifestEntry

    backend, _ = facility
    e = ManifestEntry("gone\x01.tif", 1, "0" * 64, "scope", "c", "exp1/gone\x01.tif", "t", "now")
    ((name, reason),) = facility_changes(backend, "exp1", [e])
    assert name == "gone\\x01.tif" and reason.isprintable()


def test_ingest_keeps_the_record_when_the_facility_file_changed(tmp_path, facility):
    backend, src = facility
    raw, manifest = tmp_path / "raw", tmp_path / "m.tsv"
    first, _ = backend.ingest("exp1", "*.tif", raw, manifest)
    kept = (raw / "img_1.tif").read_bytes()
    (src / "img_1.tif").write_bytes(os.urandom(1001))  # same size, new content
    (src / "img_2.tif").write_bytes(os.urandom(2000))  # new size and content
    (raw / "img_2.tif").unlink()  # and its raw copy was lost
    entries, refused = backend.ingest("exp1", "*.tif", raw, manifest)
    reasons = dict(refused)
    assert sorted(reasons) == ["img_1.tif", "img_2.tif"]
    assert reasons["img_1.tif"].startswith("changed at the facility since ingest: sha256 "
                                           f"{first[1].sha256[:12]}")
    assert "changed at the facility since ingest" in reasons["img_2.tif"]
    assert (raw / "img_1.tif").read_bytes() == kept  # not replaced
    assert not (raw / "img_2.tif").exists()  # the new version was not taken
    rows = {r.file: r for r in read_manifest(manifest)}
    assert rows["img_1.tif"].sha256 == first[1].sha256 == sha256_file(raw / "img_1.tif")
    assert "img_2.tif" not in rows and [e.file for e in entries] == ["img_0.tif", "img_1.tif"]
    manifest.unlink()  # the record is also in the raw copy's sidecar
    _, refused = backend.ingest("exp1", "*.tif", raw, manifest)
    assert "img_1.tif" in dict(refused) and (raw / "img_1.tif").read_bytes() == kept


def test_interrupted_ingest_resumes(tmp_path, facility):
    backend, src = facility
    raw, manifest = tmp_path / "raw", tmp_path / "m.tsv"
    backend.ingest("exp1", "*.tif", raw, manifest)
    manifest.unlink()  # killed before the manifest was written ...
    (raw / "img_2.tif").unlink()
    (raw / "img_2.tif.prov.json").unlink()
    (raw / ".img_2.tif.otherhost.12345.abcd.part").write_bytes(b"half")  # ... while copying img_2
    entries, refused = backend.ingest("exp1", "*.tif", raw, manifest)
    assert refused == [] and [e.file for e in entries] == ["img_0.tif", "img_1.tif", "img_2.tif"]
    assert sha256_file(raw / "img_2.tif") == sha256_file(src / "img_2.tif")
    assert [r.file for r in read_manifest(manifest)] == ["img_0.tif", "img_1.tif", "img_2.tif"]


def test_progress_goes_to_the_module_logger(tmp_path, facility, caplog):
    backend, src = facility
    (src / "link.tif").symlink_to(src / "img_0.tif")
    caplog.set_level("INFO", logger="latticegenome.ingest.local")
    with pytest.warns(DeprecationWarning, match=r"LocalBackend.ingest\(log=...\)"):
        backend.ingest("exp1", "*.tif", tmp_path / "raw", tmp_path / "m.tsv", log=print)
    backend.ingest("exp1", "*.tif", tmp_path / "raw", tmp_path / "m.tsv")
    said = [r.getMessage() for r in caplog.records if r.name == "latticegenome.ingest.local"]
    assert any(m.startswith("copied img_0.tif (1000 bytes, sha256 ") for m in said)
    assert "refused link.tif: a symbolic link: not followed" in said
    assert any(m.startswith("resuming transfer task local-") for m in said)
    rec = backend.publish(tmp_path / "m.tsv", "pub")
    assert rec["files"][0]["file"] == "m.tsv" and caplog.records[-1].getMessage() == "published m.tsv"
