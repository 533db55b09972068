import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from latticegenome.cli import main
from latticegenome.columns.simulate import simulate_lattice
from latticegenome.core.tables import read_table

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
    import csv
    import json

    header = out.read_text().splitlines()[0].split(",")  # a plain CSV: the header comes first
    for field in ("x", "y", "site", "x_err", "y_err", "amplitude", "background"):
        assert field in header
    with open(out, newline="") as fh:  # any CSV reader with its defaults
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == header
    try:
        import pandas
    except ImportError:
        pandas = None
    if pandas is not None:
        frame = pandas.read_csv(out)
        assert list(frame.columns) == header and len(frame) == len(rows)
        assert set(frame["site"]) == {"A", "B"}
    meta = json.loads((tmp_path / "cols.csv.json").read_text())  # the metadata: a JSON sidecar
    assert meta["pixel_size_pm"] == pytest.approx(20.0) and meta["source"] == str(path)
    assert meta["format_version"] == 1 and "px" in meta["units"] and len(meta["basis_px"]) == 2
    sites = {r["site"] for r in rows}
    assert sites == {"A", "B"}
    # x = column index, y = row index: compare with the truth
    x = np.array([float(r["x"]) for r in rows])
    y = np.array([float(r["y"]) for r in rows])
    d = np.min(np.hypot(x[:, None] - truth.x[None], y[:, None] - truth.y[None]), axis=1)
    assert np.median(d) < 0.3


def test_cells_from_columns(tmp_path, image_file):
    path, _ = image_file
    cols = tmp_path / "cols.csv"
    main(["columns", str(path), "--csv", str(cols)])
    out = tmp_path / "cells.csv"
    assert main(["cells", str(cols), "--csv", str(out)]) == 0
    rows = read_table(out)
    need = "x,y,i,j,a_pm,b_pm,angle_deg,exx,eyy,exy,rotation_deg,dx_pm,dy_pm,dx_err_pm,dy_err_pm,intensity_A,intensity_B"
    assert set(need.split(",")) <= set(rows[0])
    assert abs(np.median([float(r["a_pm"]) for r in rows]) - 400.0) < 2.0  # pixel size: the sidecar's
    (tmp_path / "cols.csv.json").unlink()  # a CSV alone still reads, with no pixel size
    assert main(["cells", str(cols), "--csv", str(tmp_path / "c2.csv")]) == 2
    assert main(["cells", str(cols), "--csv", str(tmp_path / "c2.csv"), "--pixel-size-pm", "20"]) == 0


@pytest.mark.parametrize("content,expect", [
    (b"garbage", ("cannot read", "not a readable")),
    (None, ("no pixel size",)),
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
    assert "bad.tif" in out.stderr and any(e in out.stderr for e in expect)
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
    text = (root / "config" / "config.yaml").read_text().replace("pixel_size_pm: 20.0", "pixel_size_pm: twenty", 1)
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


BAD_NUMBERS = [
    ("columns", "--pixel-size-pm", "0"), ("columns", "--pixel-size-pm", "nan"),
    ("columns", "--pixel-size-pm", "-20"), ("columns", "--pixel-size-pm", "inf"),
    ("columns", "--pixel-size-pm", "5000"), ("columns", "--spacing-pm", "50"),
    ("columns", "--spacing-pm", "nan"), ("columns", "--significance", "0"),
    ("columns", "--significance", "nan"), ("columns", "--significance", "inf"),
    ("cells", "--pixel-size-pm", "0"), ("cells", "--reference-pm", "nan"),
    ("cells", "--reference-pm", "-390"), ("classify", "--nominal-pm", "0"),
    ("classify", "--nominal-pm", "inf"), ("simulate", "--images", "0"),
    ("simulate", "--images", "1.5"), ("simulate", "--size", "32"),
    ("simulate", "--size", "20000"), ("simulate", "--pixel-size-pm", "nan"),
    ("simulate", "--seed", "-1"), ("columns", "--pixel-size-pm", "twenty"),
    ("columns", "--b-search", "0"), ("columns", "--b-search", "0.6"),
    ("classify", "--lattice-tolerance", "0"), ("classify", "--lattice-tolerance", "nan"),
]


def _argv(command, tmp_path, option, value):
    target = str(tmp_path / "x.tif")
    rest = {"columns": [target, "--csv", str(tmp_path / "o.csv")],
            "cells": [target, "--csv", str(tmp_path / "o.csv")],
            "classify": [target, "--out", str(tmp_path / "o.h5")],
            "simulate": [str(tmp_path / "demo")]}[command]
    return [command, *rest, option, value]


@pytest.mark.parametrize("command,option,value", BAD_NUMBERS)
def test_numeric_options_out_of_range_are_refused_naming_the_option(tmp_path, capsys, command,
                                                                     option, value):
    (tmp_path / "x.tif").write_bytes(b"garbage")
    with pytest.raises(SystemExit) as exc:
        main(_argv(command, tmp_path, option, value))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"latticegenome {command}: error: argument {option}")
    assert not (tmp_path / "demo").exists()


def test_numeric_options_at_the_limits_are_accepted(tmp_path):
    from latticegenome.cli import build_parser

    p = build_parser()
    a = p.parse_args(["columns", "i.tif", "--pixel-size-pm", "0.5", "--spacing-pm", "2000",
                      "--significance", "1e-3"])
    assert (a.pixel_size_pm, a.spacing_pm, a.significance) == (0.5, 2000.0, 0.001)
    a = p.parse_args(["simulate", "d", "--images", "1", "--size", "16384", "--seed", "0"])
    assert (a.images, a.size, a.seed) == (1, 16384, 0)
    a = p.parse_args(["cells", "c.csv", "--csv", "o.csv", "--reference-pm", "100"])
    assert a.reference_pm == 100.0
    a = p.parse_args(["columns", "i.tif", "--b-search", "0.5"])
    assert (a.b_search, a.significance, a.stack) == (0.5, 5.0, "sum")  # the model's defaults


def test_a_bad_number_exits_2_in_one_line_from_the_command(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"garbage")
    out = subprocess.run([EXE, "columns", str(tmp_path / "x.tif"), "--pixel-size-pm", "nan",
                          "--csv", str(tmp_path / "o.csv")], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "argument --pixel-size-pm: " in out.stderr


def _overwrite_cases(tmp_path):
    img = tmp_path / "img.tif"
    (tmp_path / "sub").mkdir()
    os.link(img, tmp_path / "hard.tif")
    (tmp_path / "soft.tif").symlink_to(img)
    cols = tmp_path / "cols.csv"
    stem = tmp_path / "agg"
    return {
        "csv=image": (["columns", str(img), "--csv", str(img)], img),
        "h5=image": (["columns", str(img), "--h5", str(img)], img),
        "other spelling": (["columns", str(img), "--csv", str(tmp_path / "sub" / ".." / "img.tif")],
                           tmp_path / "sub" / ".." / "img.tif"),
        "hard link": (["columns", str(img), "--csv", str(tmp_path / "hard.tif")], tmp_path / "hard.tif"),
        "symlink": (["columns", str(img), "--h5", str(tmp_path / "soft.tif")], tmp_path / "soft.tif"),
        "csv=h5": (["columns", str(img), "--csv", str(tmp_path / "o"), "--h5", str(tmp_path / "o")],
                   tmp_path / "o"),
        "sidecar=image": (["columns", str(tmp_path / "img.json"), "--csv", str(tmp_path / "img")],
                          Path(f"{tmp_path / 'img'}.json")),
        "cells": (["cells", str(cols), "--csv", str(cols)], cols),
        "classify out": (["classify", str(cols), "--out", str(cols)], cols),
        "classify side file": (["classify", str(img), f"{stem}.classes.csv", "--out", f"{stem}.h5"],
                               Path(f"{stem}.classes.csv")),
        "classify images.tsv": (["classify", f"{stem}.images.tsv", "--out", f"{stem}.h5"],
                                Path(f"{stem}.images.tsv")),
    }


@pytest.mark.parametrize("case", ["csv=image", "h5=image", "other spelling", "hard link", "symlink",
                                  "csv=h5", "sidecar=image", "cells", "classify out", "classify side file",
                                  "classify images.tsv"])
def test_outputs_never_overwrite_inputs(tmp_path, capsys, case):
    img = tmp_path / "img.tif"
    img.write_bytes(b"not really an image")
    for name in ("cols.csv", "agg.classes.csv", "agg.images.tsv"):
        (tmp_path / name).write_text("x,y,site\n1,2,A\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    argv, named = _overwrite_cases(tmp_path)[case]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"latticegenome: error: {named}: output would overwrite an input" or (
        case == "csv=h5" and err.startswith(f"latticegenome: error: {named}: output would overwrite"))
    for name, data in before.items():
        assert (tmp_path / name).read_bytes() == data
    assert os.path.exists(img)


def test_check_config_outside_the_repository(tmp_path):
    root = Path(__file__).resolve().parents[1]
    # from elsewhere: the schema beside the config, relative paths from the Snakefile's folder
    out = subprocess.run([EXE, "check-config", str(root / "config" / "config.yaml")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # a configuration with no schema beside it: the package's checkout has one
    text = (root / "config" / "config.yaml").read_text().replace(
        "resources/structures", str(root / "resources" / "structures"))
    (tmp_path / "mine.yaml").write_text(text)
    out = subprocess.run([EXE, "check-config", "mine.yaml"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # relative structure files are relative to the workflow root, not the cwd: here, none
    (tmp_path / "mine.yaml").write_text((root / "config" / "config.yaml").read_text())
    out = subprocess.run([EXE, "check-config", "mine.yaml"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "experiments.demo_superlattice.materials.0.structure_file" in out.stderr
    # a schema that is not there: one line
    out = subprocess.run([EXE, "check-config", str(root / "config" / "config.yaml"), "--schema",
                          "nowhere.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "nowhere.yaml" in out.stderr


def test_columns_never_overwrites_its_image(tmp_path, image_file, capsys):
    path, _ = image_file
    data = path.read_bytes()
    assert main(["columns", str(path), "--csv", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"latticegenome: error: {path}: output would overwrite an input"
    assert path.read_bytes() == data


def test_the_command_sets_matplotlib_to_files_once(monkeypatch, tmp_path):
    import matplotlib

    calls = []
    monkeypatch.setattr(matplotlib, "use", lambda backend, *a, **k: calls.append(backend))
    main(["simulate", str(tmp_path / "d"), "--images", "1", "--size", "64"])
    assert calls == ["Agg"]
