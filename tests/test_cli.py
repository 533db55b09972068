import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from latticegenome.cli import main
from latticegenome.simulate import simulate_lattice
from latticegenome.tables import read_table

EXE = str(Path(sys.executable).parent / "latticegenome")


@pytest.fixture
def image_file(tmp_path, rng):
    img, truth = simulate_lattice((160, 160), rng=rng)
    p = tmp_path / "img.tif"
    tifffile.imwrite(p, img.astype(np.uint16), imagej=True, resolution=(50.0, 50.0),
                     metadata={"unit": "nm"})
    return p, truth


def test_columns_csv_contract(tmp_path, image_file):
    path, truth = image_file
    out = tmp_path / "cols.csv"
    assert main(["columns", str(path), "--csv", str(out)]) == 0
    lines = [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]
    header = lines[0].split(",")
    for field in ("x", "y", "site", "x_err", "y_err", "amplitude", "background"):
        assert field in header
    rows = read_table_csv(out)
    sites = {r["site"] for r in rows}
    assert sites == {"A", "B"}
    # x = column index, y = row index: compare with the truth
    x = np.array([float(r["x"]) for r in rows])
    y = np.array([float(r["y"]) for r in rows])
    d = np.min(np.hypot(x[:, None] - truth.x[None], y[:, None] - truth.y[None]), axis=1)
    assert np.median(d) < 0.3


def read_table_csv(path):
    body = [ln for ln in Path(path).read_text().splitlines() if not ln.startswith("#")]
    p = Path(path).with_suffix(".plain.csv")
    p.write_text("\n".join(body))
    return read_table(p)


def test_cells_from_columns(tmp_path, image_file):
    path, _ = image_file
    cols = tmp_path / "cols.csv"
    main(["columns", str(path), "--csv", str(cols)])
    out = tmp_path / "cells.csv"
    assert main(["cells", str(cols), "--csv", str(out)]) == 0
    rows = read_table(out)
    need = "x,y,i,j,a_pm,b_pm,angle_deg,exx,eyy,exy,rotation_deg,dx_pm,dy_pm,dx_err_pm,dy_err_pm,intensity_A,intensity_B"
    assert set(need.split(",")) <= set(rows[0])
    assert abs(np.median([float(r["a_pm"]) for r in rows]) - 400.0) < 2.0


@pytest.mark.parametrize("content,expect", [
    (b"garbage", "cannot read"),
    (None, "no pixel size"),
])
def test_bad_input_exit_status_2_without_traceback(tmp_path, content, expect, rng):
    p = tmp_path / "bad.tif"
    if content is None:
        tifffile.imwrite(p, rng.poisson(20, (64, 64)).astype(np.uint16))
    else:
        p.write_bytes(content)
    out = subprocess.run([EXE, "columns", str(p), "--csv", str(tmp_path / "o.csv")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "bad.tif" in out.stderr and expect in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "o.csv").exists()


def test_no_lattice_exit_status_2(tmp_path, rng):
    p = tmp_path / "noise.npy"
    np.save(p, rng.poisson(30, (128, 128)).astype(float))
    out = subprocess.run([EXE, "columns", str(p), "--pixel-size-pm", "20", "--csv", str(tmp_path / "o.csv")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "noise.npy" in out.stderr and "Traceback" not in out.stderr


def test_cells_rejects_columns_without_b(tmp_path):
    p = tmp_path / "a_only.csv"
    p.write_text("x,y,site\n1,2,A\n3,4,A\n")
    out = subprocess.run([EXE, "cells", str(p), "--pixel-size-pm", "20", "--csv", str(tmp_path / "c.csv")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "no B columns" in out.stderr and "a_only.csv" in out.stderr


def test_check_config_names_the_key(tmp_path):
    root = Path(__file__).resolve().parents[1]
    bad = tmp_path / "c.yaml"
    text = (root / "config" / "config.yaml").read_text().replace("pixel_size_pm: 20.0", "pixel_size_pm: twenty")
    bad.write_text(text)
    out = subprocess.run([EXE, "check-config", str(bad), "--schema", str(root / "config" / "schema.yaml")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "experiments.demo_superlattice.pixel_size_pm" in out.stderr and "number" in out.stderr
    ok = subprocess.run([EXE, "check-config", str(root / "config" / "config.yaml"), "--schema",
                         str(root / "config" / "schema.yaml")], capture_output=True, text=True)
    assert ok.returncode == 0


def test_simulate_is_reproducible_and_idempotent(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["simulate", str(a), "--images", "2", "--size", "128"]) == 0
    assert main(["simulate", str(b), "--images", "2", "--size", "128"]) == 0
    for name in ("superlattice_000.tif", "superlattice_001.truth.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    mtime = (a / "superlattice_000.tif").stat().st_mtime_ns
    main(["simulate", str(a), "--images", "2", "--size", "128"])
    assert (a / "superlattice_000.tif").stat().st_mtime_ns == mtime
