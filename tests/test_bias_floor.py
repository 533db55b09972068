"""Noise-free bias of the column fit (#17 floor: <= 0.002 px), and where a larger one
comes from.

On the multislice images the noise-free fit is off the true positions by up to 0.74 pm
(0.026 px) on the SrTiO3/BaTiO3 superlattice's Ba columns (5.5 pm on PbTiO3's TiO
columns, whose O sits 50 pm from the Ti). A Gaussian twin of each image (the columns
at their true positions, with the amplitudes and widths the fit found on the multislice
image, every neighbour in place) is fitted to within 0.002 px: the fit and its
neighbour modelling are unbiased; the rest is in the multislice columns themselves
(their shape near a layer of other columns, cross-talk), not in the fit.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

abtem_data = pytest.importorskip("abtem_data")

from latticegenome.columns.finder import find_columns  # noqa: E402
from latticegenome.columns.model import render_columns  # noqa: E402
from latticegenome.columns.projection import projection_for  # noqa: E402

#: name: zone axis, cations, spacing (pm). sto_110 is left out: the finder does not
#: find the [110] lattice in its Gaussian twin (A and B told apart at 276 pm only by a
#: brightness contrast the twin's fitted Gaussians do not reproduce).
CASES = {
    "sto_001": ("001", [["Sr", "Ti"]], 390.5),
    "pto_001": ("100", [["Pb", "Ti"]], 390.0),
    "sto_bto_001": ("001", [["Sr", "Ti"], ["Ba", "Ti"]], 390.5),
}


def _interior_errors(cols, truth, shape, radius_px, edge=20.0):
    """(found - true) px of the interior A and B sites with a reported column nearby."""
    tx, ty, ts = truth["x_px"], truth["y_px"], truth["site"].astype(str)
    dist, j = cKDTree(np.column_stack([cols.x, cols.y])).query(np.column_stack([tx, ty]))
    h, w = shape
    keep = ((ts != "O") & (dist < radius_px) & (tx > edge) & (tx < w - edge)
            & (ty > edge) & (ty < h - edge))
    keep &= cols.site[j] == ts
    return np.column_stack([cols.x[j] - tx, cols.y[j] - ty])[keep], keep, j


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_fit_is_unbiased_on_a_gaussian_twin_of_each_multislice_image(name):
    if name not in abtem_data.names():
        pytest.skip(f"no {name} in tests/data/abtem")
    signals, truth, meta = abtem_data.load(name)
    zone, cations, spacing = CASES[name]
    px = float(meta["pixel_pm"])
    proj = projection_for(zone, cations, spacing)
    clean = abtem_data.source_blur(signals["haadf"], pixel_pm=px) * 1e6
    kw = dict(projection=proj, contrast="haadf", spacing_px=spacing / px, pixel_size_pm=px)
    cols = find_columns(clean, **kw)
    radius = 0.1 * spacing / px
    err, keep, j = _interior_errors(cols, truth, clean.shape, radius)
    assert len(err) > 50
    # the twin: Gaussians at the true positions of every site the fit found (edges too)
    tx, ty, ts = truth["x_px"], truth["y_px"], truth["site"].astype(str)
    dist, jj = cKDTree(np.column_stack([cols.x, cols.y])).query(np.column_stack([tx, ty]))
    use = (dist < radius) & (cols.site[jj] == ts)
    twin = render_columns(clean.shape, tx[use], ty[use], cols.amplitude[jj[use]],
                          cols.sigma[jj[use]], float(np.median(cols.background)))
    twin_err, _, _ = _interior_errors(find_columns(twin, **kw), truth, clean.shape, radius)
    assert len(twin_err) > 50
    assert np.abs(twin_err).max() <= 0.002, (name, np.abs(twin_err).max())
    if name == "sto_bto_001":  # the multislice image's own offset, far above the fit's
        assert np.hypot(*err.T).max() * px > 0.5
