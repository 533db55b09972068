"""A [110] experiment and an ABF experiment through the whole workflow (real Snakemake),
on the real SrTiO3 [110] ADF and ABF crops of the atomap 0.4.2 wheel (read as data).

A third experiment, configured as [001] (the default), holds the same ADF image beside
a [001] image: the [110] one is rejected with the self-check's reason and listed in
rejected.tsv; the [001] one is analysed; the run finishes.
"""

import json
import shutil

import h5py
import numpy as np
import pytest
import tifffile
import yaml
from test_workflow import ROOT, snakemake

from latticegenome.columns.simulate import simulate_superlattice
from latticegenome.core.tables import read_table

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


@pytest.fixture(scope="module")
def projected(tmp_path_factory):
    from wheeldata import ATOMAP_PIXEL_PM, RegistryUnavailable, atomap_image

    try:
        adf, abf = atomap_image("ADF"), atomap_image("ABF")
    except RegistryUnavailable as exc:
        pytest.skip(f"the package registry cannot be reached: {exc}")
    work = tmp_path_factory.mktemp("wf110")
    for folder, src in (("sto110_adf", adf), ("sto110_abf", abf), ("sto_wrong_axis", adf)):
        (work / "facility" / folder).mkdir(parents=True)
        shutil.copy(src, work / "facility" / folder / src.name)
    img, _, _ = simulate_superlattice((200, 200), rng=np.random.default_rng(0))
    tifffile.imwrite(work / "facility" / "sto_wrong_axis" / "sl_001.tif", img.astype(np.uint16),
                     imagej=True, resolution=(50.0, 50.0), metadata={"unit": "nm"})
    sto = {"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5,
           "structure_file": str(ROOT / "resources/structures/SrTiO3.cif")}

    def experiment(folder, **analysis):
        exp = {"facility": "scope", "path": folder, "pattern": "*",
               "pixel_size_pm": ATOMAP_PIXEL_PM, "materials": [sto]}
        if analysis:
            exp["analysis"] = analysis
        return exp

    config = {
        "scratch": "data", "results": "results",
        "facilities": {"scope": {"backend": "local", "path": str(work / "facility")}},
        "experiments": {
            "sto110_adf": experiment("sto110_adf", zone_axis=[1, 1, 0]),
            "sto110_abf": experiment("sto110_abf", zone_axis=[1, 1, 0], contrast="abf"),
            "sto_wrong_axis": experiment("sto_wrong_axis"),
        },
        "dft": {"enabled": False},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return work, snakemake(work)


def test_110_and_abf_experiments_run_through(projected):
    work, run = projected
    assert run.returncode == 0, run.stderr[-3000:]
    for exp in ("sto110_adf", "sto110_abf"):
        res = work / "results" / exp
        (image,) = read_table(res / "images.tsv")
        assert int(image["n_A"]) >= 110 and int(image["n_B"]) >= 104, image
        # pseudo-cubic lattice parameters of SrTiO3 from the a/sqrt2 x a cell
        assert float(image["a_pm"]) == pytest.approx(390.5, rel=0.02)
        assert float(image["b_pm"]) == pytest.approx(390.5, rel=0.02)
        assert read_table(res / "rejected.tsv") == []
        (h5,) = (res / "columns").rglob("*.hdf5.h5")
        with h5py.File(h5) as f:
            info = json.loads(f.attrs["info"])
            species = set(np.char.decode(f["columns/species"][()]))
        assert info["projection"]["zone_axis"] == [1, 1, 0] and info["check"]["lattice_ratio"] > 1.3
        assert {"SrO", "Ti"} <= species
        if exp == "sto110_abf":
            assert info["contrast"] == "abf" and "O2" in species
        assert len(read_table(res / "classes.csv")) >= 1


def test_an_image_of_another_projection_is_rejected_with_what_it_looks_like(projected):
    work, run = projected
    res = work / "results" / "sto_wrong_axis"
    (row,) = read_table(res / "rejected.tsv")
    assert row["file"] == "test_ADF_cropped.hdf5"
    assert "looks like [110], configured [001]" in row["reason"]
    assert [r["image"] for r in read_table(res / "images.tsv")] == ["sl_001.tif"]
    log = "".join(p.read_text() for p in (res / "logs" / "columns").glob("*.log"))
    assert "looks like [110]" in log and "Traceback" not in log
