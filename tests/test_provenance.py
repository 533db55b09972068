import json

import h5py

from latticegenome.core.records import make_record, write_sidecar
from latticegenome.provenance.chain import format_chain, raw_sources, read_record, trace


def test_record_sidecar_and_chain(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "img.tif"
    raw.write_bytes(b"raw image bytes")
    write_sidecar(raw, make_record(raw, rule="ingest", raw={
        "facility": "scope", "collection": "local:/fac", "source_path": "exp/img.tif",
        "sha256": "abc", "task_id": "local-1"}))
    cols = tmp_path / "img.tif.h5"
    with h5py.File(cols, "w") as f:
        f.attrs["provenance"] = json.dumps(make_record(
            cols, rule="find_columns", params={"significance": 5.0}, inputs=[raw],
            instrument={"voltage_kV": 300, "pixel_size_pm": 19.5}))
    table = tmp_path / "classes.csv"
    table.write_text("class,population\n0,10\n")
    write_sidecar(table, make_record(table, rule="statistics", inputs=[cols]))

    rec = read_record(table)
    assert rec["rule"] == "statistics" and rec["software"]["latticegenome"]
    assert rec["inputs"][0]["sha256"] == make_record(table, rule="x", inputs=[cols])["inputs"][0]["sha256"]
    chain = trace(table)
    assert chain["inputs"][0]["checksum_ok"] is True
    raws = raw_sources(chain)
    assert len(raws) == 1 and raws[0]["source_path"] == "exp/img.tif"
    assert raws[0]["instrument"] == {"voltage_kV": 300, "pixel_size_pm": 19.5}
    text = format_chain(chain)
    assert "find_columns" in text and "raw image: local:/fac/exp/img.tif" in text

    # an input changed after the output was made is flagged
    with h5py.File(cols, "a") as f:
        f.attrs["touched"] = 1
    assert trace(table)["inputs"][0]["checksum_ok"] is False
    assert "CHANGED since" in format_chain(trace(table))


def test_no_record(tmp_path):
    p = tmp_path / "plain.csv"
    p.write_text("a\n1\n")
    assert read_record(p) is None
    assert trace(p)["record"] is None


def test_raw_copy_without_sidecar_falls_back_to_the_manifest(tmp_path):
    from latticegenome.ingest.manifest import ManifestEntry, write_manifest

    raw = tmp_path / "exp" / "raw" / "a.tif"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"x")
    write_manifest(tmp_path / "exp" / "manifest.tsv", [ManifestEntry(
        file="a.tif", size=1, sha256="s", facility="f", collection="c", source_path="p/a.tif",
        task_id="t", transferred_at="now")])
    rec = read_record(raw)
    assert rec["raw"]["task_id"] == "t" and rec["raw"]["source_path"] == "p/a.tif"
    assert "manifest.tsv" in format_chain(trace(raw))


def _ingested(tmp_path, content=b"raw image bytes"):
    """An experiment folder as ingest leaves it: raw copy, its sidecar, the manifest."""
    from latticegenome.core.fsutil import sha256_file
    from latticegenome.ingest.manifest import (
        ManifestEntry,
        write_manifest,
        write_raw_provenance,
    )

    raw = tmp_path / "data" / "exp" / "raw" / "a.tif"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(content)
    entry = ManifestEntry(file="a.tif", size=len(content), sha256=sha256_file(raw), facility="f",
                          collection="local:/fac", source_path="exp/a.tif", task_id="t",
                          transferred_at="now")
    write_manifest(raw.parent.parent / "manifest.tsv", [entry])
    write_raw_provenance(raw, entry)
    return raw


def _columns_from(raw, tmp_path):
    """A consumer whose record is (re)made from the raw copy as it is now."""
    cols = tmp_path / "results" / "a.tif.h5"
    cols.parent.mkdir(exist_ok=True)
    with h5py.File(cols, "w") as f:
        f.attrs["provenance"] = json.dumps(make_record(cols, rule="find_columns", inputs=[raw]))
    return cols


def _cli(*args):
    from latticegenome.cli import main

    return main(["provenance", *map(str, args)])


def test_raw_copy_changed_after_ingest_is_flagged_even_with_a_remade_record(tmp_path, capsys):
    raw = _ingested(tmp_path)
    cols = _columns_from(raw, tmp_path)
    chain = trace(cols)
    assert chain["inputs"][0]["checksum_ok"] is True
    assert chain["inputs"][0]["changed_since_ingest"] is False
    assert _cli(cols) == 0
    assert "[checksum ok]" in capsys.readouterr().out

    raw.write_bytes(b"someone edited the raw copy")
    cols = _columns_from(raw, tmp_path)  # the workflow reran the consumer
    chain = trace(cols)
    assert chain["inputs"][0]["checksum_ok"] is True
    assert chain["inputs"][0]["changed_since_ingest"] is True
    assert "[CHANGED since ingest]" in format_chain(chain)
    assert _cli(cols) == 1
    assert "[CHANGED since ingest]" in capsys.readouterr().out
    assert _cli(cols, "--json") == 1
    node = json.loads(capsys.readouterr().out)["chain"]["inputs"][0]
    assert node["changed_since_ingest"] is True and node["checksum_ok"] is True
    # the raw copy itself, asked directly
    assert trace(raw)["changed_since_ingest"] is True
    assert _cli(raw) == 1


def test_provenance_exit_status(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = _ingested(tmp_path)
    cols = _columns_from(raw, tmp_path)
    table = tmp_path / "results" / "classes.csv"
    table.write_text("class\n0\n")
    write_sidecar(table, make_record(table, rule="statistics", inputs=[cols]))
    assert _cli(table) == 0
    with h5py.File(cols, "a") as f:  # an intermediate changed
        f.attrs["touched"] = 1
    assert _cli(table) == 1
    assert "CHANGED since" in capsys.readouterr().out
    write_sidecar(table, make_record(table, rule="statistics", inputs=[cols]))
    assert _cli(table) == 0
    raw.chmod(0o644)
    raw.unlink()  # a raw copy gone
    assert _cli(table) == 1
    assert "[missing]" in capsys.readouterr().out
    plain = tmp_path / "plain.csv"
    plain.write_text("a\n")
    assert _cli(plain) == 2 and "no provenance record" in capsys.readouterr().err
    assert _cli(tmp_path / "nothing.csv") == 2 and "no such file" in capsys.readouterr().err


def test_provenance_help_tells_the_exit_status(capsys):
    import pytest

    from latticegenome.cli import main

    with pytest.raises(SystemExit):
        main(["provenance", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status 1" in text and "0 when" in text and "2" in text
