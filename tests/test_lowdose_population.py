"""At low dose the cells that enter classes and references are not selected by noise.

On a multislice PbTiO3 image at 60 electrons per probe position only 11-14 % of the B
columns pass the 5-standard-error significance test. Classes and displacement
references used to take only those cells: the ones whose noise happened to brighten
their B, so their B/A intensity ratio came out ~40 % high. ``B_usable`` keeps every
B the image cannot tell from its typical B column, and refuses a significantly empty
site (a vacancy) at any dose.
"""

from __future__ import annotations

import numpy as np
import pytest

abtem_data = pytest.importorskip("abtem_data")

from latticegenome.columns.finder import find_columns  # noqa: E402
from latticegenome.columns.projection import projection_for  # noqa: E402
from latticegenome.statistics.cells import b_usable, measure_cells  # noqa: E402
from latticegenome.statistics.classes import descriptor_matrix  # noqa: E402


def _cells(image, proj, px, spacing):
    cols = find_columns(image, projection=proj, contrast="haadf", spacing_px=spacing / px,
                        pixel_size_pm=px)
    return measure_cells(cols.as_dict(), px, projection=proj)


@pytest.mark.slow
def test_low_dose_population_is_not_selected_by_noise():
    if "pto_001" not in abtem_data.names():
        pytest.skip("no pto_001 in tests/data/abtem")
    signals, _, meta = abtem_data.load("pto_001")
    px, spacing = float(meta["pixel_pm"]), 390.0
    proj = projection_for("100", [["Pb", "Ti"]], spacing)
    clean = _cells(abtem_data.source_blur(signals["haadf"], pixel_pm=px) * 60.0, proj, px, spacing)
    truth_ratio = float(np.nanmedian(clean["intensity_ratio"]))
    cells = _cells(abtem_data.at_dose(signals["haadf"], 60.0, np.random.default_rng(0), pixel_pm=px),
                   proj, px, spacing)
    detected, usable = np.asarray(cells["B_detected"]), np.asarray(cells["B_usable"])
    assert detected.mean() < 0.3  # the case: most B columns are not significant alone
    ratio = np.asarray(cells["intensity_ratio"])
    assert np.nanmean(ratio[detected]) > 1.2 * truth_ratio  # selecting them is biased
    assert usable.mean() >= 0.95
    assert abs(np.nanmean(ratio[usable]) / truth_ratio - 1) < 0.05
    _, ok = descriptor_matrix(cells)  # the classes' population
    assert ok.sum() >= 0.95 * len(ok)
    # the displacement of the usable cells is the noise-free one within its error
    dy = np.asarray(cells["dy_pm"])[usable]
    assert abs(dy.mean() - np.nanmedian(clean["dy_pm"])) < 3 * dy.std() / np.sqrt(dy.size)


def test_a_significantly_empty_site_is_not_usable_at_any_dose():
    amp = np.array([100.0, 100.0, 0.0, 3.0, 30.0, 40.0])
    err = np.array([2.0, 2.0, 2.0, 30.0, 30.0, 1.0])
    detected = amp > 5 * err
    use = b_usable({"amplitude": amp, "amplitude_err": err}, np.ones(amp.size, bool), detected)
    # a vacancy at high dose; a faint column at low dose; half the typical one at low
    # dose; a weak but certain (40 +- 1 > 5 err) column is detected, so usable
    assert use.tolist() == [True, True, False, True, True, True]
    # an old column file without amplitude errors: detected only, as before
    assert b_usable({"amplitude": amp}, np.ones(amp.size, bool), detected).tolist() == detected.tolist()
