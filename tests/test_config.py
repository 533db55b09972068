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
