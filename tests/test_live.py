"""The watch mode's live page (latticegenome.figures.live): whole, escaped,
self-refreshing HTML with embedded PNG figures, written atomically."""

import base64
import doctest
import io
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from latticegenome.figures import live
from latticegenome.figures.live import write_live_page

HOSTILE = "<script>x</script>é.tif"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _experiment(name="STO/PTO 12:3 <run&1>", size=256, seed=0, spacing=16.0, newest=True):
    rng = np.random.default_rng(seed)
    g = np.arange(spacing / 2, size, spacing)
    ax, ay = (v.ravel() for v in np.meshgrid(g, g))
    bx, by = ax + spacing / 2, ay + spacing / 2
    dx, dy = rng.normal(0, 2, ax.size), rng.normal(6, 2, ax.size)
    yy, xx = np.mgrid[0:size, 0:size]
    data = np.cos(2 * np.pi * xx / spacing) * np.cos(2 * np.pi * yy / spacing) + rng.normal(0, .2, (size, size))
    edges = np.linspace(380, 400, 41)
    hist = {k: (edges, rng.poisson(20, 40)) for k in ("a_pm", "b_pm")}
    hist |= {k: (np.linspace(-20, 20, 41), rng.poisson(20, 40)) for k in ("dx_pm", "dy_pm")}
    quality = {"image": ["img_0.tif", "img_1.tif", "img_2.tif"], "n_cells": [100, 98, 0],
               "a_pm": [390.1, 390.3, float("nan")], "b_pm": [391.0, 391.2, float("nan")],
               "dx_pm": [0.1, -0.2, float("nan")], "dy_pm": [6.1, 5.9, float("nan")],
               "dispersion": [0.02, 0.03, float("nan")], "b_over_a": [1.002, 1.002, float("nan")],
               "check_drift": [True, np.bool_(True), False]}
    return {
        "name": name, "images_analysed": 37, "images_rejected": 4, "cells": 9123,
        "rejected": [(f"old_{i}.tif", "blank") for i in range(12)]
        + [(HOSTILE, "reason <b>&\"quoted\"</b>")],
        "histograms": hist,
        "classes": {"class": [0, 1], "count": [700, 55], "a_pm": [390.2, 392.0], "dy_pm": [6.0, -5.5]},
        "quality": quality, "warnings": ["drift > 2 px in <img_1.tif>"],
        "newest": None if not newest else {
            "image": "newest_ünïcode_<1>.dm4", "data": data, "pixel_size_pm": 24.0,
            "columns": {"x": np.concatenate([ax, bx, bx, ax]), "y": np.concatenate([ay, by, ay, by]),
                        "site": np.array(["A"] * ax.size + ["B"] * ax.size + ["O"] * (2 * ax.size))},
            "cells": {"x": bx, "y": by, "dx_pm": dx, "dy_pm": dy}},
    }


def _empty(name="empty run"):
    zeros = (np.linspace(0, 1, 11), np.zeros(10, dtype=int))
    return {"name": name, "images_analysed": 0, "images_rejected": 0, "cells": 0, "rejected": [],
            "histograms": dict.fromkeys(("a_pm", "b_pm", "dx_pm", "dy_pm"), zeros),
            "classes": {"class": [], "count": [], "a_pm": [], "dy_pm": []},
            "quality": {"image": [], "n_cells": [], "a_pm": []}, "warnings": [], "newest": None}


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b, validate=True)
            for b in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _read_png(png: bytes) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        import matplotlib.image as mpimg

        return mpimg.imread(io.BytesIO(png), format="png")
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float) / 255


def test_page_has_refresh_names_counts_and_figures(tmp_path):
    out = tmp_path / "live.html"
    write_live_page(out, [_experiment(), _experiment("second", seed=1)], refresh_s=3,
                    updated="2025-01-02 03:04:05", status="watching; next poll in 3 s")
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert '<meta http-equiv="refresh" content="3">' in page
    assert "2025-01-02 03:04:05" in page and "watching; next poll in 3 s" in page
    assert "STO/PTO 12:3 &lt;run&amp;1&gt;" in page and "<run&1>" not in page
    assert page.count('<section id="exp-') == 2 and 'href="#exp-1"' in page
    for count in ("<b>37</b>", "<b>4</b>", "<b>9123</b>"):
        assert count in page
    assert "newest_ünïcode_&lt;1&gt;.dm4" in page
    assert "drift &gt; 2 px in &lt;img_1.tif&gt;" in page
    pngs = _pngs(page)
    assert len(pngs) == 4 == page.count("<img ")  # newest image + histograms, per experiment
    for png in pngs:
        assert png.startswith(PNG_MAGIC)
        pixels = _read_png(png)
        assert pixels.shape[0] >= 100 and 300 <= pixels.shape[1] <= 1200, pixels.shape
        assert float(np.std(pixels)) > 0.02  # not blank


def test_data_text_is_escaped_everywhere(tmp_path):
    out = tmp_path / "live.html"
    write_live_page(out, [_experiment(name=HOSTILE)], status="<b>stopped</b>")
    page = out.read_text(encoding="utf-8")
    assert "<script>" not in page and "<b>stopped</b>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;é.tif" in page
    assert "reason &lt;b&gt;&amp;&quot;quoted&quot;&lt;/b&gt;" in page
    # the newest 10 rejections, newest first; the oldest are left out
    table = page[page.index('<table class="rejected">'):]
    assert table.index("&lt;script&gt;") < table.index("old_11.tif")
    assert "old_3.tif" in table and "old_2.tif" not in table
    assert "(10 of 13)" in page


def test_undecodable_file_name_is_shown_not_fatal(tmp_path):
    exp = _experiment(newest=False)
    exp["rejected"] = [("raw\udcff.tif", "unreadable")]
    write_live_page(tmp_path / "live.html", [exp])
    assert "raw\\udcff.tif" in (tmp_path / "live.html").read_text(encoding="utf-8")


def test_quality_table_nan_as_dash_and_checks_as_marks(tmp_path):
    out = tmp_path / "live.html"
    write_live_page(out, [_experiment(newest=False)])
    page = out.read_text(encoding="utf-8")
    table = page[page.index('<table class="quality">'):page.index("</table>", page.index('<table class="quality">'))]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    assert len(rows) == 4  # header + 3 images, newest first
    assert "img_2.tif" in rows[1] and "img_0.tif" in rows[3]
    assert rows[1].count("&ndash;") == 6 and "nan" not in table.lower()
    assert "&#10007;" in rows[1] and "&#10003;" in rows[3]
    assert "390.1" in rows[3] and "no analysed image yet" in page


def test_empty_experiment_says_no_images_yet(tmp_path):
    out = tmp_path / "live.html"
    write_live_page(out, [_empty(), _experiment()], refresh_s=5.0)
    page = out.read_text(encoding="utf-8")
    first = page[page.index('id="exp-0"'):page.index('id="exp-1"')]
    assert "no images yet" in first and "<img" not in first and "<b>0</b>" in first
    assert '<meta http-equiv="refresh" content="5">' in page
    # no experiments at all, and a final page that no longer reloads
    write_live_page(out, [], refresh_s=0, status="stopped")
    page = out.read_text(encoding="utf-8")
    assert "no experiments yet" in page and "refresh" not in page and "stopped" in page


def test_empty_histograms_and_classes_of_a_started_experiment(tmp_path):
    exp = _empty()
    exp["images_rejected"], exp["rejected"] = 1, [("a.tif", "too dark")]
    write_live_page(tmp_path / "live.html", [exp])
    page = (tmp_path / "live.html").read_text(encoding="utf-8")
    assert "no cells measured yet" in page and "no classes yet" in page and "too dark" in page
    assert "<img" not in page


def test_large_image_is_downsampled_and_arrows_averaged(tmp_path):
    out = tmp_path / "live.html"
    write_live_page(out, [_experiment(size=2048, spacing=20.0)])
    page = out.read_text(encoding="utf-8")
    newest = _read_png(_pngs(page)[0])
    assert newest.shape[:2] == (512, 512)  # block means of 4 x 4 pixels
    assert "each arrow the mean of the cells" in page and "O columns not drawn" in page


def test_arrow_block_means():
    cells = {"x": np.array([1.0, 3.0, 11.0, np.nan]), "y": np.array([1.0, 1.0, 1.0, 2.0]),
             "dx_pm": np.array([2.0, 4.0, 10.0, 1.0]), "dy_pm": np.array([0.0, 2.0, 1.0, 1.0])}
    x, y, dx, dy = live._arrow_field(cells, 10.0)
    np.testing.assert_allclose(np.c_[x, y, dx, dy], [[2, 1, 3, 1], [11, 1, 10, 1]])
    assert live._arrow_field(cells, 0)[0].size == 3


def test_rewrite_replaces_the_page_whole_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "live.html"
    write_live_page(out, [_empty("first version")])
    before = os.stat(out).st_ino
    write_live_page(out, [_experiment("second version")])
    page = out.read_text(encoding="utf-8")
    assert "second version" in page and "first version" not in page
    assert page.rstrip().endswith("</html>")
    assert os.stat(out).st_ino != before  # renamed over, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.html"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def test_no_pyplot_and_a_new_folder_is_made(tmp_path):
    code = ("import sys; from latticegenome.figures.live import write_live_page; "
            f"sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_live as t; "
            f"write_live_page({str(tmp_path / 'sub' / 'live.html')!r}, [t._experiment()]); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "sub" / "live.html").is_file()


def test_docstring_examples():
    assert doctest.testmod(live, verbose=False).failed == 0


def test_page_renders_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (make test installs it when run as root)")
    out = tmp_path / "live.html"
    write_live_page(out, [_experiment(), _empty()], refresh_s=5, status="watching")
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1200,1600", out.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.is_file() and shot.read_bytes().startswith(PNG_MAGIC)
    pixels = _read_png(shot.read_bytes())
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000, pixels.shape
    assert float(np.var(pixels)) > 1e-3  # text and figures, not a blank page
