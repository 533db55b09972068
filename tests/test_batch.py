"""Batches of images analysed in one process (latticegenome.columns.batch)."""

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

from latticegenome.columns.batch import (
    analyse_batch,
    batch_is_whole,
    batches,
    memory_mb,
)
from latticegenome.columns.simulate import simulate_superlattice
from latticegenome.columns.store import read_columns


def test_batches_are_consecutive_and_fixed_by_size():
    names = [f"img_{k:03d}.tif" for k in range(250)]
    b = batches(names, 100)
    assert [len(x) for x in b] == [100, 100, 50]
    assert b[1][0] == "img_100.tif" and sum(b, []) == names
    assert batches(names, 100) == b  # the same on every call
    assert batches([], 10) == []
    with pytest.raises(ValueError):
        batches(names, 0)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_broken_image_is_set_aside_and_the_batch_finishes(tmp_path, workers, caplog):
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(2):
        img, _, _ = simulate_superlattice((160, 160), rng=np.random.default_rng(k))
        tifffile.imwrite(raw / f"img_{k}.tif", img.astype(np.uint16))
    (raw / "broken.tif").write_bytes(b"II*\x00 not a tiff")
    sources = [str(raw / n) for n in ("img_0.tif", "broken.tif", "img_1.tif")]
    caplog.set_level(logging.INFO, logger="latticegenome.columns.batch")
    res = analyse_batch(sources, tmp_path / "out", {"pixel_size_pm": 20.0, "spacing_pm": 390.5},
                        workers=workers, provenance={"rule": "find_columns", "params": {}})
    assert [r["status"] for r in res] == ["ok", "rejected", "ok"]
    assert "broken.tif" in res[1]["reason"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "batch.json", "broken.tif.h5", "img_0.tif.h5", "img_1.tif.h5"]
    assert batch_is_whole(tmp_path / "out", ["img_0.tif", "broken.tif", "img_1.tif"]) is None
    cols, attrs = read_columns(tmp_path / "out" / "img_1.tif.h5")
    assert attrs["status"] == "ok" and (cols["site"] == "A").sum() == res[2]["n_a"] > 20
    assert any("broken.tif: rejected" in ln for ln in caplog.messages)


def test_two_images_with_one_name_are_refused(tmp_path):
    with pytest.raises(ValueError, match="same file name"):
        analyse_batch([str(tmp_path / "a" / "x.tif"), str(tmp_path / "b" / "x.tif")],
                      tmp_path / "out", {})


def _images(raw, n, size=160):
    raw.mkdir(exist_ok=True)
    for k in range(n):
        img, _, _ = simulate_superlattice((size, size), rng=np.random.default_rng(k))
        tifffile.imwrite(raw / f"img_{k}.tif", img.astype(np.uint16))
    return [str(raw / f"img_{k}.tif") for k in range(n)]


SETTINGS = {"pixel_size_pm": 20.0, "spacing_pm": 390.5}
PROV = {"rule": "find_columns", "params": SETTINGS}


def test_a_modified_raw_copy_is_rejected_not_analysed(tmp_path):
    from latticegenome.core.fsutil import sha256_file

    sources = _images(tmp_path / "raw", 2)
    expected = {Path(s).name: sha256_file(s) for s in sources}
    data = tifffile.imread(sources[1])
    data[5, 5] += 7  # one pixel changed after ingest
    tifffile.imwrite(sources[1], data)
    res = analyse_batch(sources, tmp_path / "out", SETTINGS, provenance=PROV,
                        expected_sha256=expected)
    assert [r["status"] for r in res] == ["ok", "rejected"]
    assert "changed since ingest" in res[1]["reason"] and "img_1.tif" in res[1]["reason"]
    cols, attrs = read_columns(tmp_path / "out" / "img_1.tif.h5")
    assert attrs["status"] == "rejected" and "changed since ingest" in attrs["reason"]


def test_a_batch_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    import latticegenome.columns.batch as batch

    sources = _images(tmp_path / "raw", 3)
    calls = []

    def dies_on_the_third(*job):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the job is stopped part-way
        calls.append(job[0])
        return batch.analyse_one(*job)

    monkeypatch.setattr(batch, "analyse_one", dies_on_the_third)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        analyse_batch(sources, out, SETTINGS, provenance=PROV)
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*.part"))  # cleaned up on an exception
    assert batch_is_whole(out, ["img_0.tif"]).endswith("run the workflow again")


def test_a_killed_batch_is_taken_over_by_the_rerun(tmp_path, caplog):
    """The images a SIGKILLed batch finished are kept (same bytes, settings and
    code); a file made with other settings, a half-written one and one of other
    raw bytes are redone; the temporary folder is gone afterwards."""
    sources = _images(tmp_path / "raw", 3)
    first = analyse_batch(sources[:2], tmp_path / "first", SETTINGS, provenance=PROV)
    # what a killed run leaves: a temporary folder of the target (its writer is gone)
    killed = tmp_path / ".out.otherhost.1.x.part"
    killed.mkdir()
    (tmp_path / "first" / "img_0.tif.h5").rename(killed / "img_0.tif.h5")
    (killed / "img_1.tif.h5").write_bytes(b"half an HDF5 file")
    caplog.set_level(logging.INFO, logger="latticegenome.columns.batch")
    res = analyse_batch(sources, tmp_path / "out", SETTINGS, provenance=PROV, exclusive=True)
    assert [r["status"] for r in res] == ["ok", "ok", "ok"]
    assert res[0] == {**first[0], "sha256": res[0]["sha256"]}
    assert any("1 image(s) taken over" in ln for ln in caplog.messages)
    assert not killed.exists()
    # other settings: nothing is taken over
    again = tmp_path / ".out2.otherhost.1.x.part"
    again.mkdir()
    (tmp_path / "out" / "img_0.tif.h5").rename(again / "img_0.tif.h5")
    caplog.clear()
    analyse_batch(sources[:1], tmp_path / "out2", {**SETTINGS, "significance": 6.0},
                  provenance={**PROV, "params": {**SETTINGS, "significance": 6.0}}, exclusive=True)
    assert not any("taken over" in ln for ln in caplog.messages)


def test_memory_request_follows_the_largest_image():
    small = memory_mb([512 * 512 * 2] * 100, 4)
    big = memory_mb([512 * 512 * 2] * 99 + [8192 * 8192 * 2], 4)
    assert small < 1500  # the old fixed 2,100 MB over-asked for small images
    assert big > 4 * 1600  # 8192^2 peaks at 1.6 GB per worker (benchmarks/README.md)
    assert memory_mb([8192 * 8192 * 2], 4) < big  # one image: one worker
