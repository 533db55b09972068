"""Batches of images analysed in one process (latticegenome.batch)."""

import numpy as np
import pytest
import tifffile

from latticegenome.batch import analyse_batch, batches
from latticegenome.simulate import simulate_superlattice
from latticegenome.store import read_columns


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
def test_a_broken_image_is_set_aside_and_the_batch_finishes(tmp_path, workers):
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(2):
        img, _, _ = simulate_superlattice((160, 160), rng=np.random.default_rng(k))
        tifffile.imwrite(raw / f"img_{k}.tif", img.astype(np.uint16))
    (raw / "broken.tif").write_bytes(b"II*\x00 not a tiff")
    sources = [str(raw / n) for n in ("img_0.tif", "broken.tif", "img_1.tif")]
    lines = []
    res = analyse_batch(sources, tmp_path / "out", {"pixel_size_pm": 20.0, "spacing_pm": 390.5},
                        workers=workers, provenance={"rule": "find_columns", "params": {}},
                        log=lines.append)
    assert [r["status"] for r in res] == ["ok", "rejected", "ok"]
    assert "broken.tif" in res[1]["reason"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "broken.tif.h5", "img_0.tif.h5", "img_1.tif.h5"]
    cols, attrs = read_columns(tmp_path / "out" / "img_1.tif.h5")
    assert attrs["status"] == "ok" and (cols["site"] == "A").sum() == res[2]["n_a"] > 20
    assert any("broken.tif: rejected" in ln for ln in lines)


def test_two_images_with_one_name_are_refused(tmp_path):
    with pytest.raises(ValueError, match="same file name"):
        analyse_batch([str(tmp_path / "a" / "x.tif"), str(tmp_path / "b" / "x.tif")],
                      tmp_path / "out", {})
