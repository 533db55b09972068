import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def match(truth_x, truth_y, x, y, max_dist=1.0):
    """Indices of the nearest found column for each true one, and the distance."""
    from scipy.spatial import cKDTree

    if len(x) == 0:
        return np.full(len(truth_x), -1), np.full(len(truth_x), np.inf)
    d, j = cKDTree(np.column_stack([x, y])).query(np.column_stack([truth_x, truth_y]))
    return np.where(d <= max_dist, j, -1), d


def recall_precision(truth, found, site, shape, margin, match_px=None):
    """Recall over true columns at least `margin` px inside; precision over found.

    A found column is the true one when within ``match_px`` of it (default a
    fifth of the A-A spacing: closer than any other column, and closer than
    the 25 % B displacement, so a B left at its cell centre does not count).
    Position accuracy is checked separately."""
    if match_px is None:
        match_px = 0.2 * 20.0
    rows, cols = shape
    t = (truth.site == site) & truth.present
    tx, ty = truth.x[t], truth.y[t]
    inner = (tx >= margin) & (tx <= cols - 1 - margin) & (ty >= margin) & (ty <= rows - 1 - margin)
    m = found.site == site
    j, d = match(tx, ty, found.x[m], found.y[m], match_px)
    recall = float(np.mean(j[inner] >= 0))
    # precision over what is claimed to be there: the detected columns (undetected
    # lattice sites are reported too, at their sites, with detected False)
    m &= np.asarray(getattr(found, "detected", np.ones(m.size, bool)), bool)
    jj, _ = match(found.x[m], found.y[m], tx, ty, match_px)
    precision = float(np.mean(jj >= 0)) if m.any() else 0.0
    return recall, precision, d
