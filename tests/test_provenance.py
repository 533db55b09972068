import json

import h5py

from latticegenome.provenance import (
    format_chain, make_record, raw_sources, read_record, trace, write_sidecar,
)


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
    from latticegenome.transfer import ManifestEntry, write_manifest

    raw = tmp_path / "exp" / "raw" / "a.tif"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"x")
    write_manifest(tmp_path / "exp" / "manifest.tsv", [ManifestEntry(
        file="a.tif", size=1, sha256="s", facility="f", collection="c", source_path="p/a.tif",
        task_id="t", transferred_at="now")])
    rec = read_record(raw)
    assert rec["raw"]["task_id"] == "t" and rec["raw"]["source_path"] == "p/a.tif"
    assert "manifest.tsv" in format_chain(trace(raw))
