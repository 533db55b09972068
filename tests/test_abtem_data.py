"""The abTEM multislice test images (tests/data/abtem): files, truth, dose model."""

from __future__ import annotations

import numpy as np
import pytest
from abtem_data import DATA_DIR, SOURCE_SIZE_PM, at_dose, load, names, source_blur

EXPECTED = ("pto_001", "sto_001", "sto_110")
CENTROSYMMETRIC = ("sto_001", "sto_110", "sto_bto_001")


def _available(selection):
    return [n for n in selection if n in names()]


def _peak(img: np.ndarray, x: float, y: float, radius: int = 2):
    """Brightest pixel within `radius` of (x, y), refined by a 3x3 parabola; None at edges."""
    h, w = img.shape
    r, c = round(y), round(x)
    if not (radius + 1 <= r < h - radius - 1 and radius + 1 <= c < w - radius - 1):
        return None
    win = img[r - radius:r + radius + 1, c - radius:c + radius + 1]
    i, j = np.unravel_index(np.argmax(win), win.shape)
    r, c = r + i - radius, c + j - radius
    nb = img[r - 1:r + 2, c - 1:c + 2]
    if nb[1, 1] < nb.max():  # not a local maximum of its 3x3 neighbourhood
        return (c, r, False)
    dx = (nb[1, 2] - nb[1, 0]) / (2 * (2 * nb[1, 1] - nb[1, 2] - nb[1, 0]))
    dy = (nb[2, 1] - nb[0, 1]) / (2 * (2 * nb[1, 1] - nb[2, 1] - nb[0, 1]))
    return (c + dx, r + dy, True)


def _interior(truth, shape, margin=4):
    h, w = shape
    return ((truth["x_px"] >= margin) & (truth["x_px"] <= w - 1 - margin)
            & (truth["y_px"] >= margin) & (truth["y_px"] <= h - 1 - margin))


def test_files_load():
    have = names()
    assert set(EXPECTED) <= set(have), f"missing in {DATA_DIR}: {set(EXPECTED) - set(have)}"
    assert sum((DATA_DIR / f"{n}.npz").stat().st_size for n in have) < 3e6
    for name in have:
        signals, truth, meta = load(name)
        assert meta["name"] == name
        for key in ("haadf", "abf"):
            img = signals[key]
            assert img.dtype == np.float32 and img.shape == tuple(meta["shape"])
            assert 200 <= min(img.shape) <= max(img.shape) <= 256
            assert np.isfinite(img).all() and img.min() > -1e-4 and img.max() < 1
        assert signals["haadf"].mean() < signals["abf"].mean()
        n = len(truth["x_px"])
        assert n > 100 and all(len(v) == n for v in truth.values())
        assert set(truth["site"]) == {"A", "B", "O"}
        assert 15 <= meta["pixel_pm"] <= 30
        assert meta["voltage_kv"] == 200 and meta["convergence_semiangle_mrad"] == 22
        assert meta["haadf_mrad"] == [70, 200]
        fp = meta["frozen_phonons"]
        assert fp["configurations"] >= 8 and fp["antithetic_pairs"] * 2 == fp["configurations"]
        assert fp["max_abs_mean_displacement_a"] < 1e-12
        # every column within the image or up to 1 A outside it, and all of those
        margin = 100.0 / meta["pixel_pm"] + 0.5 + 1e-9
        h, w = signals["haadf"].shape
        assert truth["x_px"].min() >= -margin and truth["x_px"].max() <= w - 1 + margin
        assert truth["y_px"].min() >= -margin and truth["y_px"].max() <= h - 1 + margin
    with pytest.raises(FileNotFoundError):
        load("no_such_structure")


def test_pixel_sizes_differ_and_lattice_is_rotated():
    metas = [load(n)[2] for n in names()]
    assert len({m["pixel_pm"] for m in metas}) == len(metas)
    for m in metas:
        (ax, ay), _ = m["tile_vectors_px"]
        angle = np.degrees(np.arctan2(ay, ax))
        assert 1.0 < abs(angle) < 10.0


@pytest.mark.parametrize("name", _available(EXPECTED + ("sto_bto_001",)))
@pytest.mark.parametrize("site", ["A", "B"])
def test_haadf_maxima_on_cation_columns(name, site):
    signals, truth, _ = load(name)
    img = signals["haadf"].astype(np.float64)
    sel = (truth["site"] == site) & _interior(truth, img.shape)
    assert sel.sum() > 50
    for x, y in zip(truth["x_px"][sel], truth["y_px"][sel]):
        px, py, is_max = _peak(img, x, y)
        assert is_max and np.hypot(px - x, py - y) <= 1.0, (name, site, x, y, px, py)


@pytest.mark.parametrize("name", _available(EXPECTED + ("sto_bto_001",)))
def test_abf_minima_on_a_columns(name):
    signals, truth, _ = load(name)
    img = -signals["abf"].astype(np.float64)
    sel = (truth["site"] == "A") & _interior(truth, img.shape)
    for x, y in zip(truth["x_px"][sel], truth["y_px"][sel]):
        px, py, is_min = _peak(img, x, y)
        assert is_min and np.hypot(px - x, py - y) <= 1.0, (name, x, y, px, py)


@pytest.mark.parametrize("name", _available(CENTROSYMMETRIC))
def test_truth_of_centrosymmetric_structure_is_centrosymmetric(name):
    """Inversion about the tile origin (an Sr column; in sto_bto_001 the O column of
    the TiO2 plane between the two SrO planes), taken near the image centre."""
    signals, truth, meta = load(name)
    h, w = signals["haadf"].shape
    xy = np.column_stack([truth["x_px"], truth["y_px"]])
    t = np.array(meta["tile_vectors_px"]).T  # columns: the two tile vectors
    ij = np.round(np.linalg.solve(t, np.array([w / 2, h / 2]) - meta["tile_origin_px"]))
    centre = meta["tile_origin_px"] + t @ ij
    inv = 2 * centre - xy
    inside = (inv[:, 0] > 0) & (inv[:, 0] < w - 1) & (inv[:, 1] > 0) & (inv[:, 1] < h - 1)
    assert inside.sum() > 100
    for k in np.flatnonzero(inside):
        d = np.hypot(*(xy - inv[k]).T)
        j = np.argmin(d)
        assert d[j] < 1e-6 and truth["species"][j] == truth["species"][k]


def _b_minus_a_centre_pm(xy_b, xy_a, pixel_pm):
    """Each B position minus the centre of its four nearest A positions, in pm."""
    out = []
    for p in xy_b:
        d = np.hypot(*(xy_a - p).T)
        near = np.argsort(d)[:4]
        out.append((p - xy_a[near].mean(axis=0)) * pixel_pm)
    return np.array(out)


def test_polar_structure_has_its_b_displacement():
    signals, truth, meta = load("pto_001")
    polar = meta["polar"]
    c_dir = np.array(polar["c_direction_px"])
    xy = np.column_stack([truth["x_px"], truth["y_px"]])
    inner = _interior(truth, signals["haadf"].shape, margin=20)
    b = inner & (truth["site"] == "B")
    d = _b_minus_a_centre_pm(xy[b], xy[truth["site"] == "A"], meta["pixel_pm"])
    along = d @ c_dir
    across = d @ np.array([-c_dir[1], c_dir[0]])
    assert polar["b_displacement_pm"] == pytest.approx(30.0)
    np.testing.assert_allclose(along, polar["b_displacement_pm"], atol=1e-6)
    np.testing.assert_allclose(across, 0.0, atol=1e-6)


@pytest.mark.parametrize("name,lo,hi", [("pto_001", 25.0, 36.0), ("sto_001", -2.0, 2.0)])
def test_haadf_peaks_show_the_b_displacement(name, lo, hi):
    """Sub-pixel HAADF peaks: B minus the centre of the four A peaks, along +y of the tile."""
    signals, truth, meta = load(name)
    img = signals["haadf"].astype(np.float64)
    inner = _interior(truth, img.shape, margin=20)
    found = {}
    for k in np.flatnonzero(inner | (truth["site"] == "A")):
        if truth["site"][k] in ("A", "B"):
            p = _peak(img, truth["x_px"][k], truth["y_px"][k])
            if p is not None and p[2]:
                found[k] = p[:2]
    a = [k for k in found if truth["site"][k] == "A"]
    b = [k for k in found if truth["site"][k] == "B" and inner[k]]
    d = _b_minus_a_centre_pm(np.array([found[k] for k in b]), np.array([found[k] for k in a]),
                             meta["pixel_pm"])
    ty = np.array(meta["tile_vectors_px"][1])
    along = d @ (ty / np.linalg.norm(ty))
    assert lo < np.median(along) < hi


def test_at_dose_has_the_poisson_mean_and_variance():
    rng = np.random.default_rng(7)
    flat = np.full((128, 128), 0.05)
    counts = at_dose(flat, 2000.0, rng, pixel_pm=20.0)
    assert counts.dtype == np.float64 and np.all(counts == np.round(counts))
    n = counts.size
    assert abs(counts.mean() - 100.0) < 5 * np.sqrt(100.0 / n)
    assert abs(counts.var() / 100.0 - 1.0) < 5 * np.sqrt(2.0 / n)


def test_at_dose_on_a_simulated_image():
    signals, _, meta = load("sto_001")
    haadf = signals["haadf"]
    rng = np.random.default_rng(3)
    dose = 5e4
    blurred = source_blur(haadf, SOURCE_SIZE_PM, meta["pixel_pm"])
    assert blurred.max() < haadf.max()  # the blur lowers the peaks
    assert blurred.mean() == pytest.approx(float(haadf.mean()), rel=1e-3)
    counts = at_dose(haadf, dose, rng, pixel_pm=meta["pixel_pm"])
    lam = dose * blurred
    z = (counts - lam) / np.sqrt(lam)
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.std() - 1) < 0.05
    exact = at_dose(haadf, dose, np.random.default_rng(3), source_size_pm=0)
    assert abs(exact.sum() / (dose * haadf.sum()) - 1) < 5 / np.sqrt(dose * haadf.sum())
    with pytest.raises(ValueError):
        at_dose(haadf, dose, rng)  # a blur needs the pixel size
