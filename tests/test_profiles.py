import os
from pathlib import Path

import pytest
import yaml

from latticegenome.profiles import install_profiles


def make_profiles(tmp_path):
    prof = tmp_path / "repo" / "profiles"
    for name in ("local", "titan"):
        (prof / name).mkdir(parents=True)
        (prof / name / "config.yaml").write_text("cores: 1\n")
    return prof


def test_links_then_idempotent(tmp_path):
    prof = make_profiles(tmp_path)
    target = tmp_path / "cfg"
    lines = install_profiles(prof, target)
    assert all("linked" in ln for ln in lines)
    assert os.readlink(target / "titan") == str((prof / "titan").resolve())
    assert all("already linked" in ln for ln in install_profiles(prof, target))


def test_replaces_stale_links_and_keeps_users_own(tmp_path):
    prof = make_profiles(tmp_path)
    target = tmp_path / "cfg"
    target.mkdir()
    (target / "local").symlink_to(tmp_path / "old-clone" / "profiles" / "local")  # dangling
    (target / "titan").mkdir()  # the user's own profile
    lines = install_profiles(prof, target)
    assert os.readlink(target / "local") == str((prof / "local").resolve())
    assert (target / "titan").is_dir() and not (target / "titan").is_symlink()
    assert any("your own" in ln for ln in lines)


def _profiles_with_config():
    root = Path(__file__).resolve().parents[1] / "profiles"
    return [p for p in [*sorted(root.glob("*/config.yaml")), root / "slurm-template.yaml"]
            if "config" in (yaml.safe_load(p.read_text()) or {})]


@pytest.mark.parametrize("profile", _profiles_with_config(), ids=lambda p: p.parent.name + "/" + p.name)
def test_profile_settings_are_settings_of_the_model(profile, monkeypatch):
    """A profile's `config:` (mpi_launcher, batch_size, dft.engine) goes over the
    configuration as Snakemake merges it, and must be settings the model knows."""
    from snakemake.utils import update_config

    from latticegenome.core.config import settings_from_config, validate_config

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    overrides = yaml.safe_load(profile.read_text())["config"]
    update_config(config, overrides)
    settings = settings_from_config(validate_config(config, root / "config" / "schema.yaml"))
    for key, value in overrides.items():
        if isinstance(value, dict):
            assert getattr(settings, key).model_dump(include=set(value)) == value
        else:
            assert getattr(settings, key) == value
