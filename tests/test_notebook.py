"""The notebook interface (issue 16): ``latticegenome.find_columns``,
``measure_cells``, ``read_image`` at the top, on arrays, Images and
HyperSpy-like signals (duck-typed, HyperSpy is not installed), giving tables
that become DataFrames; and docs/notebook.md run as written on the real
atomap SrTiO3 [110] crop."""

from __future__ import annotations

import contextlib
import doctest
import io
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import latticegenome
from latticegenome import api
from latticegenome.core.errors import ImageReadError, PixelSizeError

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "notebook.md"
#: The first line of a doc block that is shown but not run.
NOT_RUN = "# needs HyperSpy"
#: Where the doc reads the image (as the unzip recipe leaves it).
DOC_IMAGE = "atomap/tests/datasets/test_ADF_cropped.hdf5"


class FakeSignal:
    """The shape of a HyperSpy Signal2D that latticegenome reads: data and signal axes."""

    def __init__(self, data, scales=(1.0, 1.0), units=("nm", "nm")):
        self.data = data
        axes = [SimpleNamespace(name=n, scale=s, units=u) for n, s, u in zip("xy", scales, units)]
        self.axes_manager = SimpleNamespace(signal_axes=tuple(axes))


@pytest.fixture(scope="module")
def lattice():
    """A synthetic SrTiO3-like [001] image: 20 px spacing, 19.5 pm/px (390 pm)."""
    from latticegenome.columns.simulate import simulate_lattice

    data, _ = simulate_lattice((128, 128), spacing_px=20.0, rng=np.random.default_rng(7))
    return data


# --------------------------------------------------------------------------- import


def test_import_latticegenome_imports_no_numpy():
    code = ("import sys, latticegenome\n"
            "heavy = [m for m in ('numpy', 'scipy', 'pymatgen', 'pandas', 'matplotlib', "
            "'latticegenome.api') if m in sys.modules]\n"
            "print(heavy)\n"
            "assert latticegenome.__version__\n"
            "f = latticegenome.find_columns\n"
            "print('latticegenome.api' in sys.modules, f.__module__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "True latticegenome.api"]


def test_top_level_names():
    assert latticegenome.find_columns is api.find_columns
    assert latticegenome.measure_cells is api.measure_cells
    from latticegenome.columns.readers import read_image

    assert latticegenome.read_image is read_image
    assert {"find_columns", "measure_cells", "read_image", "__version__"} <= set(
        latticegenome.__all__)
    assert "find_columns" in dir(latticegenome)
    with pytest.raises(AttributeError, match="no attribute 'find_colums'"):
        latticegenome.find_colums  # noqa: B018


def test_docstring_examples():
    assert doctest.testmod(api, verbose=False).failed == 0


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize("units, scale, expected", [
    ("nm", 0.0195, 19.5), ("pm", 19.5, 19.5), ("Å", 0.195, 19.5), ("µm", 1.95e-5, 19.5),
])
def test_signal_pixel_size_from_units(units, scale, expected):
    size, source = api.signal_pixel_size(FakeSignal(None, (scale, scale), (units, units)))
    assert size == pytest.approx(expected)
    assert units in source


@pytest.mark.parametrize("units", ["<undefined>", "", None])
def test_signal_scale_without_unit_asks_for_the_pixel_size(lattice, units):
    signal = FakeSignal(lattice, (0.0195, 0.0195), (units, units))
    with pytest.raises(PixelSizeError, match=r"no length unit.*pixel_size_pm"):
        latticegenome.find_columns(signal)


def test_signal_mismatched_scales_are_refused(lattice):
    signal = FakeSignal(lattice, (0.0195, 0.0205), ("nm", "nm"))
    with pytest.raises(PixelSizeError, match=r"different pixel sizes \(19.5 and 20.5 pm\)"):
        latticegenome.find_columns(signal)
    # within 1 %: the mean; in different units: compared in pm
    assert api.signal_pixel_size(FakeSignal(None, (0.0195, 0.01955)))[0] == \
        pytest.approx(19.525)
    assert api.signal_pixel_size(FakeSignal(None, (0.0195, 19.5), ("nm", "pm")))[0] == \
        pytest.approx(19.5)


def test_signal_stack_is_refused(lattice):
    signal = FakeSignal(np.stack([lattice, lattice]), (0.0195, 0.0195))
    with pytest.raises(ImageReadError, match=r"stack of 2 frames.*sum it.*pick a frame"):
        latticegenome.find_columns(signal)


def test_signal_bad_axes():
    with pytest.raises(ImageReadError, match="1 signal axes, not 2"):
        api.signal_pixel_size(SimpleNamespace(axes_manager=SimpleNamespace(
            signal_axes=(SimpleNamespace(scale=1.0, units="nm"),))))
    for scale in (0.0, -0.02, float("nan")):
        with pytest.raises(PixelSizeError, match="scale"):
            api.signal_pixel_size(FakeSignal(None, (scale, scale)))
    with pytest.raises(PixelSizeError, match=r"19500 pm .*outside 0.5-2000 pm"):
        api.signal_pixel_size(FakeSignal(None, (0.0195, 0.0195), ("µm", "µm")))


def test_signal_gives_the_pixel_size_and_an_argument_overrides(lattice):
    table = latticegenome.find_columns(FakeSignal(lattice, (0.0195, 0.0195)))
    assert table.pixel_size_pm == pytest.approx(19.5)
    assert table.pixel_size_source == "signal axes (0.0195 nm)"
    assert (table.columns.site == "A").sum() >= 30
    # an explicit pixel size wins, even over axes that have no unit
    over = latticegenome.find_columns(FakeSignal(lattice, (1.0, 1.0), ("<undefined>",) * 2),
                                      pixel_size_pm=19.0)
    assert over.pixel_size_pm == 19.0 and over.pixel_size_source == "argument"
    assert len(over) == len(table)


# --------------------------------------------------------------------------- arrays, tables


def test_array_needs_a_pixel_size(lattice):
    with pytest.raises(PixelSizeError, match=r"no pixel size.*pixel_size_pm="):
        latticegenome.find_columns(lattice)
    with pytest.raises(PixelSizeError, match="outside"):
        latticegenome.find_columns(lattice, pixel_size_pm=0.0)
    table = latticegenome.find_columns(lattice, settings={"pixel_size_pm": 19.5})
    assert table.pixel_size_source == "settings"


def test_bad_images_are_named():
    with pytest.raises(ImageReadError, match=r"not str: read the file with .*read_image"):
        latticegenome.find_columns("image.dm4", pixel_size_pm=10.0)
    with pytest.raises(ImageReadError, match="a list of 2 images"):
        latticegenome.find_columns([np.ones((32, 32))] * 2, pixel_size_pm=10.0)
    with pytest.raises(ImageReadError, match="constant image"):
        latticegenome.find_columns(np.ones((32, 32)), pixel_size_pm=10.0)


def test_table_to_pandas_has_species_and_pm(lattice):
    table = latticegenome.find_columns(lattice, pixel_size_pm=19.5, spacing_pm=390.0)
    assert re.fullmatch(r"\d+ columns \(\d+ A, \d+ B\), \[001\] haadf, 19.5 pm/px", repr(table))
    assert len(table) == len(table.columns) > 60
    df = table.to_pandas()
    assert len(df) == len(table)
    assert {"site", "species", "x", "y", "x_err", "y_err", "x_pm", "y_pm", "x_err_pm",
            "y_err_pm", "i", "j"} <= set(df.columns)
    assert set(df.species) == {"Sr", "TiO"} and set(df.site) == {"A", "B"}
    np.testing.assert_allclose(df.x_pm, df.x * 19.5)
    np.testing.assert_allclose(df.y_err_pm, df.y_err * 19.5)
    assert table.check["lattice_coverage"] > 0.5
    assert table.projection["family"] == "001"

    cells = latticegenome.measure_cells(table)
    assert re.fullmatch(r"\d+ cells, \[001\], median a 3\d\d\.\d pm, b 3\d\d\.\d pm, "
                        r"19.5 pm/px", repr(cells))
    cdf = cells.to_pandas()
    assert len(cdf) == len(cells) > 10
    assert np.median(cdf.a_pm) == pytest.approx(390.0, rel=0.01)
    # the same from a DataFrame or a dict of columns and the pixel size
    again = latticegenome.measure_cells(df, pixel_size_pm=19.5).to_pandas()
    np.testing.assert_allclose(again.a_pm, cdf.a_pm)
    with pytest.raises(PixelSizeError, match="needs pixel_size_pm"):
        latticegenome.measure_cells(table.as_dict())
    with pytest.raises(PixelSizeError, match="found at 19.5 pm/px; pixel_size_pm=20"):
        latticegenome.measure_cells(table, pixel_size_pm=20.0)
    with pytest.raises(ImageReadError, match="not ndarray"):
        latticegenome.measure_cells(lattice, pixel_size_pm=19.5)


# --------------------------------------------------------------------------- the doc


def doc_blocks() -> list[str]:
    """The ```python blocks of docs/notebook.md, in order."""
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_doc_marks_the_hyperspy_blocks():
    blocks = doc_blocks()
    assert len(blocks) >= 6
    for block in blocks:
        if "hs." in block or "hyperspy" in block:
            assert block.startswith(NOT_RUN), block[:80]
    assert "pip download --no-deps atomap==0.4.2" in DOC.read_text()


@pytest.fixture(scope="module")
def doc_run(tmp_path_factory):
    """Every runnable block of the doc, in one namespace, in a folder holding the image
    where the unzip recipe puts it; returns the namespace and what was printed."""
    import matplotlib
    from wheeldata import RegistryUnavailable, atomap_image

    try:
        source = atomap_image("ADF")
    except RegistryUnavailable as exc:
        pytest.skip(f"the package registry cannot be reached: {exc}")
    matplotlib.use("Agg")
    where = tmp_path_factory.mktemp("notebook")
    (where / DOC_IMAGE).parent.mkdir(parents=True)
    (where / DOC_IMAGE).symlink_to(source)
    namespace, printed = {"__name__": "notebook"}, io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.chdir(where)
        for block in doc_blocks():
            if not block.startswith(NOT_RUN):
                exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 (the doc, run)
    import matplotlib.pyplot as plt

    yield namespace, printed.getvalue()
    plt.close("all")


@pytest.mark.slow
def test_doc_runs_on_the_real_srtio3_110_image(doc_run):
    ns, printed = doc_run
    from wheeldata import ATOMAP_PIXEL_PM

    image, table, df, cells, cdf = (ns[k] for k in ("image", "table", "df", "cells", "cdf"))
    assert image.data.shape == (400, 380) and image.pixel_size_pm == ATOMAP_PIXEL_PM
    site = df.site.to_numpy()
    assert (site == "A").sum() >= 110 and (site == "B").sum() >= 104 and (site == "O").sum() >= 90
    assert set(df.species[site == "A"]) == {"SrO"} and set(df.species[site == "B"]) == {"Ti"}
    assert re.search(r"^\d{3} columns \(\d+ A, \d+ B, \d+ O\), \[110\] haadf, 9.33 pm/px$",
                     printed, flags=re.MULTILINE)
    assert table.check["a_over_b"] > 1.3 and table.check["unmodelled_peak"] < 0.2
    # the wrong zone axis is refused, saying what the image looks like
    assert "looks like [110], configured [001]" in printed
    np.testing.assert_allclose(df.x_pm, df.x * ATOMAP_PIXEL_PM)
    assert np.median(cdf.a_pm) == pytest.approx(390.5, rel=0.02)
    assert np.median(cdf.b_pm) == pytest.approx(390.5, rel=0.02)
    assert len(cells) == len(cdf) >= 80 and cells.projection["family"] == "110"
    assert np.nanmedian(np.abs(cdf.dx_pm)) < 10
    assert len(ns["ax"].collections) >= 3  # the overlay: A, B, O and the arrows


@pytest.mark.slow
def test_doc_array_and_fake_signal_give_what_the_image_gives(doc_run):
    ns, _ = doc_run
    image, table = ns["image"], ns["table"]
    same = latticegenome.find_columns(image.data, pixel_size_pm=9.326, zone_axis="110")
    np.testing.assert_array_equal(same.columns.x, table.columns.x)
    # the HyperSpy variant of the doc: the file's axes (0.009326, no unit), units set to nm
    signal = FakeSignal(image.data, (0.009326, 0.009326), ("<undefined>",) * 2)
    with pytest.raises(PixelSizeError, match="no length unit"):
        latticegenome.find_columns(signal, zone_axis="110")
    for axis in signal.axes_manager.signal_axes:
        axis.units = "nm"
    via_signal = latticegenome.find_columns(signal, zone_axis="110")
    assert via_signal.pixel_size_pm == pytest.approx(9.326)
    np.testing.assert_allclose(via_signal.columns.x, table.columns.x)
