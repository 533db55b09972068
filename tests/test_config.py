import copy
from pathlib import Path

import pytest
import yaml

from latticegenome.config import experiment_settings, validate_config
from latticegenome.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_defaults_and_settings(config):
    cfg = validate_config(copy.deepcopy(config), SCHEMA)
    s = experiment_settings(cfg, "demo_superlattice")
    assert s["spacing_pm"] == 390.5 and s["significance"] == 5.0 and s["pixel_size_pm"] == 20.0


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
    from latticegenome.config import check_references, globus_facilities

    example = _globus_example()
    cfg = {**copy.deepcopy(config), **example}
    cfg["experiments"]["demo_superlattice"]["facility"] = "cnms-microscope"
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
    from latticegenome.config import check_references

    cfg = {**copy.deepcopy(config), **_globus_example()}
    cfg["experiments"]["demo_superlattice"]["facility"] = "cnms-microscope"
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        check_references(cfg)


def test_collection_id_must_be_a_uuid(config):
    cfg = {**copy.deepcopy(config), **_globus_example()}
    cfg["facilities"]["olcf-hpc"]["collection_id"] = "olcf#dtn"
    with pytest.raises(ConfigError, match="collection_id"):
        validate_config(cfg, SCHEMA)
