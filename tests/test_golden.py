"""Golden outputs: a refactor must not change a number.

Column positions of the precision benchmark's images (one per dose, the same
seeds as ``benchmarks/bench_columns.py``) and of superlattice images, and the
statistics tables aggregated from them, are compared with the copies recorded
in ``tests/golden/`` before the code was reorganised: positions within 1e-9 px,
tables equal as text.

After an intended change of results, write them again and say why in the
commit: ``LATTICEGENOME_WRITE_GOLDEN=1 pytest tests/test_golden.py``.
"""

import os
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
WRITE = os.environ.get("LATTICEGENOME_WRITE_GOLDEN") == "1"
#: (counts of an A column, background, B/A ratio), as DOSES in benchmarks/bench_columns.py
DOSES = [(1696.5, 5.0, 0.4), (5655.0, 20.0, 0.4), (56549.0, 100.0, 0.4), (5655.0, 20.0, 0.2)]
SPACING, SIGMA = 20.0, 2.0
FIELDS = ("x", "y", "site", "x_err", "y_err", "amplitude")


def _benchmark_image(counts, bg, ratio):
    from latticegenome.columns.simulate import simulate_lattice

    rng = np.random.default_rng([int(counts), 0, int(ratio * 10)])
    clean, _ = simulate_lattice((512, 512), spacing_px=SPACING, sigma_px=SIGMA,
                                angle_deg=float(rng.uniform(0, 90)), counts_a=counts,
                                background=bg, b_ratio=ratio, b_jitter_px=1.0, rng=rng, noise=False)
    return rng.poisson(clean).astype(float)


def _superlattice_image(seed):
    from latticegenome.columns.simulate import simulate_superlattice

    img, _, _ = simulate_superlattice((256, 256), rng=np.random.default_rng(seed))
    return img.astype(float)


def _images():
    out = {f"dose{k}": _benchmark_image(*d) for k, d in enumerate(DOSES)}
    out.update({f"superlattice{s}": _superlattice_image(s) for s in range(3)})
    return out


@pytest.fixture(scope="module")
def found():
    from latticegenome.columns.finder import find_columns

    return {name: find_columns(img, spacing_px=19.5 if name.startswith("super") else None)
            for name, img in _images().items()}


def _as_arrays(cols):
    d = cols.as_dict()
    return {k: np.asarray(d[k]).astype("U1") if k == "site" else np.asarray(d[k], float)
            for k in FIELDS}


def test_column_positions_are_the_recorded_ones(found):
    path = GOLDEN / "columns.npz"
    now = {f"{name}/{k}": v for name, cols in found.items() for k, v in _as_arrays(cols).items()}
    if WRITE:
        path.parent.mkdir(exist_ok=True)
        np.savez_compressed(path, **now)
    golden = dict(np.load(path))
    assert sorted(golden) == sorted(now)
    for key, want in golden.items():
        got = now[key]
        assert got.shape == want.shape, key
        if want.dtype.kind == "U":
            assert np.array_equal(got, want), key
        else:
            tol = 1e-9 if key.endswith(("/x", "/y")) else 1e-9 * np.nanmax(np.abs(want))
            assert np.allclose(got, want, rtol=0, atol=tol, equal_nan=True), key


def test_statistics_tables_are_the_recorded_ones(found, tmp_path):
    from latticegenome.columns.store import write_columns_h5
    from latticegenome.statistics.aggregate import aggregate

    files = []
    for name, cols in found.items():
        if name.startswith("superlattice"):
            f = tmp_path / f"{name}.tif.h5"
            write_columns_h5(f, cols, source=f"raw/{name}.tif", pixel_size_pm=20.0, shape=(256, 256))
            files.append(f)
    out = tmp_path / "stats"
    out.mkdir()
    materials = [{"name": "SrTiO3", "formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5},
                 {"name": "BaTiO3", "formula": "BaTiO3", "A": "Ba", "B": "Ti", "a_pm": 399.2}]
    aggregate(files, out / "statistics.h5", out / "images.tsv", out / "rejected.tsv",
              classes_csv=out / "classes.csv", layers_csv=out / "layers.csv", nominal_pm=390.5,
              materials=materials)
    for table in ("images.tsv", "classes.csv", "layers.csv", "rejected.tsv"):
        golden = GOLDEN / "statistics" / table
        if WRITE:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text((out / table).read_text(encoding="utf-8"), encoding="utf-8")
        assert (out / table).read_text(encoding="utf-8") == golden.read_text(encoding="utf-8"), table
