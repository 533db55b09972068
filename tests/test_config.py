import copy
from pathlib import Path

import pytest
import yaml

from latticegenome.core.config import experiment_settings, validate_config
from latticegenome.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"


@pytest.fixture(autouse=True)
def _at_repository_root(monkeypatch):
    """The Snakefile's view: relative paths from the repository root."""
    monkeypatch.chdir(ROOT)


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_defaults_and_settings(config):
    cfg = validate_config(copy.deepcopy(config), SCHEMA)
    s = experiment_settings(cfg, "demo_superlattice")
    assert s.spacing_pm == 390.5 and s.significance == 5.0 and s.pixel_size_pm == 20.0
    assert s.b_search == 0.3 and s.stack == "sum" and s.hdf5_dataset is None


@pytest.mark.parametrize("edit,key", [
    (lambda c: c["experiments"]["demo_superlattice"].update(facility="nowhere"),
     "experiments.demo_superlattice.facility"),
    (lambda c: c["publication"].update(facility="nowhere"), "publication.facility"),
    (lambda c: c["experiments"]["demo_superlattice"]["materials"][0].pop("a_pm"),
     "experiments.demo_superlattice.materials.0"),
])
def test_errors_name_the_key(config, edit, key):
    edit(config)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(config, SCHEMA, source="config.yaml")


def _globus_example():
    text = (ROOT / "config" / "config.yaml").read_text()
    block = text.split("# BEGIN GLOBUS EXAMPLE\n")[1].split("# END GLOBUS EXAMPLE")[0]
    return yaml.safe_load("\n".join(line[2:] for line in block.splitlines()))


def test_commented_globus_example_is_a_valid_configuration(config):
    from latticegenome.core.config import check_references, globus_facilities

    example = _globus_example()
    cfg = {**copy.deepcopy(config), **example}
    for exp in cfg["experiments"].values():  # every experiment from the Globus microscope
        exp["facility"] = "cnms-microscope"
    cfg = validate_config(cfg, SCHEMA)
    check_references(cfg)
    assert globus_facilities(cfg) == ["cnms-microscope", "publication", "olcf-hpc"]
    assert cfg["facilities"]["olcf-hpc"]["data_access"] is True  # schema default


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["globus"].pop("host"), "globus.host"),
    (lambda c: c["facilities"]["olcf-hpc"].pop("local_path"), "needs backend: globus and local_path"),
    (lambda c: c.update(scratch="/elsewhere/data"), "scratch: /elsewhere/data is not below"),
])
def test_globus_host_mistakes_are_one_line(config, edit, message):
    from latticegenome.core.config import check_references

    cfg = {**copy.deepcopy(config), **_globus_example()}
    for exp in cfg["experiments"].values():  # every experiment from the Globus microscope
        exp["facility"] = "cnms-microscope"
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        check_references(cfg)


def test_collection_id_must_be_a_uuid(config):
    cfg = {**copy.deepcopy(config), **_globus_example()}
    cfg["facilities"]["olcf-hpc"]["collection_id"] = "olcf#dtn"
    with pytest.raises(ConfigError, match="collection_id"):
        validate_config(cfg, SCHEMA)


@pytest.mark.parametrize("edit,key", [
    (lambda c: c["experiments"]["demo_superlattice"].update(pixel_size_pm=float("nan")),
     "experiments.demo_superlattice.pixel_size_pm"),
    (lambda c: c["experiments"]["demo_superlattice"].update(pixel_size_pm=float("inf")),
     "experiments.demo_superlattice.pixel_size_pm"),
    (lambda c: c["analysis"].update(significance=float("nan")), "analysis.significance"),
    (lambda c: c["experiments"]["demo_superlattice"]["materials"][1].update(a_pm=float("-inf")),
     "experiments.demo_superlattice.materials.1.a_pm"),
    (lambda c: c.update(dft={"cutoff_ry": float("nan")}), "dft.cutoff_ry"),
    (lambda c: c["experiments"]["demo_superlattice"]["instrument"].update(voltage_kV=float("nan")),
     "experiments.demo_superlattice.instrument.voltage_kV"),
])
def test_non_finite_numbers_are_refused_naming_the_key(config, edit, key):
    edit(config)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ": .*not a finite number"):
        validate_config(config, SCHEMA, source="config.yaml")


def test_nan_in_yaml_is_refused_by_check_config(tmp_path):
    from latticegenome.core.config import load_config

    text = (ROOT / "config" / "config.yaml").read_text().replace("pixel_size_pm: 20.0",
                                                                 "pixel_size_pm: .nan")
    bad = tmp_path / "c.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=r"experiments\.demo_superlattice\.pixel_size_pm"):
        load_config(bad, SCHEMA)


@pytest.mark.parametrize("block,missing", [
    ({"backend": "local"}, "path"),
    ({"backend": "local", "description": "no folder"}, "path"),
    ({"backend": "globus", "path": "/x"}, "collection_id"),
    ({"backend": "globus", "collection_id": "11111111-1111-4111-8111-111111111111"}, "path"),
])
def test_a_facility_names_what_its_backend_needs(config, block, missing):
    config["facilities"]["demo-microscope"] = block
    with pytest.raises(ConfigError, match=rf"facilities\.demo-microscope: '{missing}' is a required"):
        validate_config(config, SCHEMA)


def test_structure_file_must_exist(config, tmp_path):
    mat = config["experiments"]["demo_superlattice"]["materials"][1]
    mat["structure_file"] = "resources/structures/nothing.cif"
    with pytest.raises(ConfigError, match=r"materials\.1\.structure_file: .*nothing\.cif"):
        validate_config(copy.deepcopy(config), SCHEMA)
    # relative to the workflow root given as base, not to the cwd
    mat["structure_file"] = "resources/structures/BaTiO3.cif"
    validate_config(copy.deepcopy(config), SCHEMA, base=ROOT)
    with pytest.raises(ConfigError, match="structure_file"):
        validate_config(copy.deepcopy(config), SCHEMA, base=tmp_path)


@pytest.mark.parametrize("path,problem", [
    ("../../../../etc", r"'\.\.'"),
    ("/etc", "absolute"),
    ("STO_BTO_superlattice/../../x", r"'\.\.'"),
    ("escape", "outside"),
    ("escape/deeper", "outside"),
])
def test_experiment_path_stays_inside_the_facility(config, tmp_path, path, problem):
    from latticegenome.core.config import check_references

    facility = tmp_path / "facility"
    facility.mkdir()
    (facility / "escape").symlink_to(tmp_path)
    config["facilities"]["demo-microscope"]["path"] = str(facility)
    config["experiments"]["demo_superlattice"]["path"] = path
    key = r"experiments\.demo_superlattice\.path: "
    with pytest.raises(ConfigError, match=key + f".*{problem}"):
        check_references(config, source="config.yaml")
    with pytest.raises(ConfigError, match=key):
        validate_config(copy.deepcopy(config), SCHEMA, base=ROOT)


def test_experiment_path_inside_the_facility_passes(config, tmp_path, monkeypatch):
    from latticegenome.core.config import check_references

    facility = tmp_path / "facility"
    (facility / "2026" / "run").mkdir(parents=True)
    (facility / "inside").symlink_to(facility / "2026")
    config["facilities"]["demo-microscope"]["path"] = "facility"
    for path in ("2026/run", "inside/run", "./2026", "not_yet_there"):
        config["experiments"]["demo_superlattice"]["path"] = path
        check_references(config, base=tmp_path)
    monkeypatch.chdir(tmp_path)  # the Snakefile: relative to the cwd
    check_references(config)


def test_globus_experiment_path_is_relative_without_dotdot(config):
    from latticegenome.core.config import check_references

    cfg = {**copy.deepcopy(config), **_globus_example()}
    for exp in cfg["experiments"].values():  # every experiment from the Globus microscope
        exp["facility"] = "cnms-microscope"
    cfg["experiments"]["demo_superlattice"]["path"] = "2026/../../other_group"
    with pytest.raises(ConfigError, match=r"experiments\.demo_superlattice\.path: .*'\.\.'"):
        check_references(cfg)
    cfg["experiments"]["demo_superlattice"]["path"] = "2026/LSMO"
    check_references(cfg)


def test_lattice_tolerance_default(config):
    cfg = validate_config(copy.deepcopy(config), SCHEMA)
    assert cfg["analysis"]["lattice_tolerance"] == 0.15
    assert experiment_settings(cfg, "demo_superlattice").lattice_tolerance == 0.15
    for bad in (0, 1.5, -0.1):
        c = copy.deepcopy(config)
        c["analysis"]["lattice_tolerance"] = bad
        with pytest.raises(ConfigError, match=r"analysis\.lattice_tolerance"):
            validate_config(c, SCHEMA)
