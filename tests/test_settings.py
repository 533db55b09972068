"""The settings model (latticegenome.core.settings) is the one place of every setting:
the schema, the defaults the workflow sees, and the command-line options are made from it."""

import argparse
import copy
import inspect
import math
import re
from typing import get_args
from pathlib import Path

import pytest
import yaml

from latticegenome.core.config import (
    experiment_settings,
    settings_from_config,
    validate_config,
)
from latticegenome.core.errors import ConfigError, LatticeGenomeError
from latticegenome.core.settings import (
    AnalysisBlock,
    AnalysisSettings,
    DftSettings,
    GlobusSettings,
    Settings,
    json_schema,
    schema_yaml,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"
MATERIALS = [{"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5},
             {"formula": "BaTiO3", "A": "Ba", "B": "Ti", "a_pm": 399.2}]
UUID = "11111111-1111-4111-8111-111111111111"


@pytest.fixture(autouse=True)
def _at_repository_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def minimal():
    return {"facilities": {"scope": {"backend": "local", "path": "demo/facility"}},
            "experiments": {"e": {"facility": "scope", "path": "exp",
                                  "materials": copy.deepcopy(MATERIALS)}}}


# --------------------------------------------------------------------------- the schema


def test_committed_schema_is_the_generated_one():
    assert SCHEMA.read_text(encoding="utf-8") == schema_yaml(), (
        "config/schema.yaml is stale: run 'latticegenome settings-schema'")
    assert yaml.safe_load(SCHEMA.read_text()) == json_schema()


def test_settings_schema_command_checks_and_writes(tmp_path, capsys):
    from latticegenome.cli import main

    out = tmp_path / "schema.yaml"
    assert main(["settings-schema", "--output", str(out), "--check"]) == 1
    assert not out.exists()
    assert main(["settings-schema", "--output", str(out)]) == 0
    assert out.read_text() == schema_yaml()
    assert main(["settings-schema", "--output", str(out), "--check"]) == 0
    assert main(["settings-schema", "--check"]) == 0  # the checkout's is current
    capsys.readouterr()


def test_schema_keeps_the_forms_validate_relies_on():
    schema = json_schema()
    props = schema["properties"]
    # sections with defaults default to {}: validate() then fills their fields
    for section in ("dft", "analysis", "globus"):
        assert props[section]["default"] == {} and "$ref" in props[section]
    assert props["people"]["default"] == []
    # optional fields: no null, no default (absent means none)
    text = SCHEMA.read_text()
    # instrument: text or number; series: true, false or "files"
    assert "null" not in text and text.count("anyOf") == 2
    assert props["experiments"]["propertyNames"] == {"pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"}
    # an experiment's overrides have no defaults (they would hide the analysis block's)
    overrides = schema["$defs"]["AnalysisOverrides"]["properties"]
    assert overrides and not any("default" in p for p in overrides.values())
    assert set(overrides) == set(AnalysisBlock.model_fields)
    # the facility backend rules
    rules = schema["$defs"]["Facility"]["allOf"]
    assert {r["if"]["properties"]["backend"]["const"]: r["then"]["required"] for r in rules} == {
        "local": ["path"], "globus": ["collection_id", "path"]}


# --------------------------------------------------------------------------- real configurations


def _workflow_test_configs():
    """The shapes of configuration the workflow tests write (tests/test_workflow*.py, test_hostile,
    test_resume, test_slurm, test_dft_signals)."""
    tiny = {"scratch": "data", "results": "results",
            "facilities": {"scope": {"backend": "local", "path": "/tmp/facility"},
                           "pub": {"backend": "local", "path": "/tmp/publication"}},
            "publication": {"facility": "pub", "path": "latticegenome"},
            "people": [{"name": "Test Person", "affiliation": "Test Lab"}],
            "experiments": {"tiny": {"facility": "scope", "path": "tiny_exp", "pattern": "*.tif",
                                     "pixel_size_pm": 20.0,
                                     "instrument": {"microscope": "test STEM", "voltage_kV": 300},
                                     "materials": MATERIALS}},
            "dft": {"min_fraction": 0.05, "mp_cache": "/tmp/mp.json"}, "batch_size": 2}
    globus = {"scratch": "/tmp/hpc/data", "results": "/tmp/hpc/results",
              "facilities": {
                  "cnms": {"backend": "globus", "collection_id": UUID, "path": "/"},
                  "olcf": {"backend": "globus", "collection_id": UUID, "path": "/hpc",
                           "local_path": "/tmp/hpc"},
                  "community": {"backend": "globus", "collection_id": UUID, "path": "/",
                                "data_access": False}},
              "globus": {"host": "olcf", "auth": "client", "poll_seconds": 1,
                         "native_client_id": "c"},
              "publication": {"facility": "community", "path": "latticegenome"},
              "people": [{"name": "Test Person"}], "dft": {"enabled": False},
              "experiments": {"sl": {"facility": "cnms", "path": "stem_2026", "pattern": "*.tif",
                                     "materials": MATERIALS[:1]}}}
    hostile = {**minimal(), "dft": {"enabled": False}, "batch_size": 2}
    return {"tiny": tiny, "globus": globus, "hostile": hostile}


@pytest.mark.parametrize("name", ["demo", "tiny", "globus", "hostile"])
def test_real_configurations_validate_and_get_the_model_defaults(config, name):
    cfg = config if name == "demo" else _workflow_test_configs()[name]
    snakemake_utils = pytest.importorskip("snakemake.utils")
    by_snakemake = copy.deepcopy(cfg)
    snakemake_utils.validate(by_snakemake, str(SCHEMA))
    ours = validate_config(copy.deepcopy(cfg), SCHEMA)
    assert ours == by_snakemake  # the same defaults filled in by both
    model = settings_from_config(ours)
    assert model == settings_from_config(cfg)  # the same settings with or without them
    for key in ("scratch", "results", "batch_size", "mpi_launcher"):
        assert ours[key] == getattr(model, key)
    assert ours["dft"] == {**DftSettings().model_dump(), **cfg.get("dft", {})}
    assert ours["globus"] == GlobusSettings(**cfg.get("globus", {})).model_dump(exclude_none=True)
    for exp_name, exp in ours["experiments"].items():
        assert exp["stacking_axis"] == model.experiments[exp_name].stacking_axis
        assert exp["pattern"] == model.experiments[exp_name].pattern
    for block in ours["facilities"].values():
        assert "backend" in block and "data_access" in block


def test_the_commented_globus_example_builds_the_model(config):
    text = (ROOT / "config" / "config.yaml").read_text()
    block = text.split("# BEGIN GLOBUS EXAMPLE\n")[1].split("# END GLOBUS EXAMPLE")[0]
    example = yaml.safe_load("\n".join(line[2:] for line in block.splitlines()))
    cfg = {**config, **example}
    for exp in cfg["experiments"].values():  # every experiment from the Globus microscope
        exp["facility"] = "cnms-microscope"
    s = settings_from_config(validate_config(cfg, SCHEMA))
    assert s.globus.host == "olcf-hpc" and s.facilities["publication"].data_access is False
    assert s.facilities["olcf-hpc"].data_access is True


# --------------------------------------------------------------------------- defaults


def test_defaults_are_the_models():
    cfg = validate_config(minimal(), SCHEMA)
    s = Settings.model_fields
    assert cfg["batch_size"] == s["batch_size"].default
    assert cfg["mpi_launcher"] == s["mpi_launcher"].default
    assert cfg["analysis"] == AnalysisBlock().model_dump(exclude_none=True)
    assert cfg["dft"] == DftSettings().model_dump()
    merged = experiment_settings(cfg, "e")
    assert merged == AnalysisSettings(spacing_pm=390.5, cations=[["Sr", "Ti"], ["Ba", "Ti"]])
    assert isinstance(merged, AnalysisSettings)


def test_an_experiment_override_replaces_only_what_it_gives():
    """A defect of the dict merge: the schema filled the defaults into an experiment's
    analysis block, so overriding one setting reset the others to the built-in defaults."""
    cfg = minimal()
    cfg["analysis"] = {"b_search": 0.25, "stack": "align"}
    cfg["experiments"]["e"]["analysis"] = {"significance": 6.0}
    cfg["experiments"]["e"]["pixel_size_pm"] = 18.5
    cfg = validate_config(cfg, SCHEMA)
    assert cfg["experiments"]["e"]["analysis"] == {"significance": 6.0}
    s = experiment_settings(cfg, "e")
    assert (s.significance, s.b_search, s.stack, s.pixel_size_pm, s.spacing_pm) == (
        6.0, 0.25, "align", 18.5, 390.5)
    assert "lattice_tolerance" not in s.for_columns()


def _duplicated_defaults(text):
    """``.get("key", default)`` calls: a default written again beside the model."""
    return re.findall(r"""\.get\(\s*["'][A-Za-z_]+["']\s*,[^)]*\)""", text)


@pytest.mark.parametrize("path", [*sorted((ROOT / "rules").glob("*.smk")),
                                  ROOT / "scripts" / "find_columns.py",
                                  ROOT / "scripts" / "software.py", ROOT / "Snakefile"],
                         ids=lambda p: p.name)
def test_rules_repeat_no_default(path):
    assert _duplicated_defaults(path.read_text()) == []


def test_entry_points_take_settings_not_defaults():
    from latticegenome.columns.analysis import analyse_file
    from latticegenome.columns.batch import analyse_batch, analyse_one

    params = inspect.signature(analyse_file).parameters
    assert list(params) == ["path", "settings", "overrides"]
    assert params["settings"].default is None
    for func in (analyse_one, analyse_batch):
        assert inspect.signature(func).parameters["settings"].default is inspect.Parameter.empty
    from latticegenome.columns import batch

    assert not hasattr(batch, "_ANALYSIS_KEYS")


def test_the_globus_backend_uses_the_models_settings():
    """The Globus backend's settings are the configuration model's (one set of defaults)."""
    from latticegenome.ingest import globus

    assert globus.GlobusSettings is GlobusSettings
    assert globus.GlobusBackend.__dataclass_fields__["settings"].default_factory is GlobusSettings


def test_a_plain_dict_of_settings_goes_through_the_model():
    s = AnalysisSettings.of({"pixel_size_pm": 20.0, "spacing_pm": 390.5}, significance=6)
    assert (s.pixel_size_pm, s.significance, s.b_search) == (20.0, 6.0, 0.3)
    assert AnalysisSettings.of(s) is s
    with pytest.raises(ValueError, match="colour"):
        AnalysisSettings.of({"colour": "red"})
    with pytest.raises(ValueError, match="b_search"):
        AnalysisSettings.of({"b_search": 0.9})


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("edit,key", [
    (lambda c: c["analysis"].update(b_search=float("nan")), r"analysis\.b_search"),
    (lambda c: c.update(dft={"kpoint_density_A": float("inf")}), r"dft\.kpoint_density_A"),
    (lambda c: c["experiments"]["e"].update(colour="red"), r"experiments\.e.*colour"),
    (lambda c: c.update(colour="red"), r"colour"),
    (lambda c: c["facilities"].update(bad={"backend": "ftp", "path": "x"}),
     r"facilities\.bad\.backend"),
    (lambda c: c["facilities"].update(bad={"backend": "globus", "path": "/x"}),
     r"facilities\.bad: 'collection_id' is a required"),
    (lambda c: c["facilities"].update(bad={"backend": "globus", "path": "/",
                                           "collection_id": "not-a-uuid"}),
     r"facilities\.bad\.collection_id"),
    (lambda c: c["experiments"]["e"].update(pixel_size_pm=5000), r"experiments\.e\.pixel_size_pm"),
    (lambda c: c["experiments"]["e"]["materials"][0].update(a_pm=True),
     r"experiments\.e\.materials\.0\.a_pm"),
    (lambda c: c.update(batch_size=0), r"batch_size"),
    (lambda c: c["experiments"].update({"bad/name": c["experiments"]["e"]}), r"experiments"),
])
def test_a_bad_config_is_refused_naming_the_key(edit, key):
    cfg = minimal()
    cfg["analysis"] = {}
    edit(cfg)
    for check in (lambda c: validate_config(c, SCHEMA, source="c.yaml"),  # the schema's way
                  lambda c: settings_from_config(c, source="c.yaml")):    # the model's way
        with pytest.raises(ConfigError, match=key) as exc:
            check(copy.deepcopy(cfg))
        assert "\n" not in str(exc.value) and str(exc.value).startswith("c.yaml: ")


# --------------------------------------------------------------------------- the command line


def _subparsers():
    from latticegenome.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _options(parser):
    return {a.option_strings[0]: a for a in parser._actions if a.option_strings}


def test_cli_options_are_the_models_fields():
    from latticegenome.cli import FIELD_OPTIONS

    commands = _subparsers()
    # every analysis setting the column finding uses is an option of `columns`
    assert [o.field for o in FIELD_OPTIONS["columns"]] == [
        n for n in AnalysisSettings.column_fields() if n not in AnalysisSettings.NOT_OPTIONS]
    for command, options in FIELD_OPTIONS.items():
        actions = _options(commands[command])
        for opt in options:
            info = opt.model.model_fields[opt.field]
            flag = opt.flag or "--" + opt.field.replace("_", "-")
            action = actions[flag]
            assert action.default == (None if info.is_required() else info.default), flag
            assert (opt.help or info.description) in action.help, flag
            kind = getattr(action.type, "__name__", "")
            if action.choices:
                assert set(action.choices) == set(get_args(info.annotation)) or \
                    set(action.choices) >= {"sum", "align"}, flag
            elif kind.startswith(("float", "int")):
                _check_range(action, info, flag)


def _check_range(action, info, flag):
    import annotated_types as at

    from latticegenome.cli import _flatten

    _, _, constraints = _flatten(info.annotation if not info.metadata else
                                 __import__("typing").Annotated[info.annotation, *info.metadata])
    for c in constraints:
        for bound, inside in ((getattr(c, "ge", None), True), (getattr(c, "le", None), True),
                              (getattr(c, "gt", None), False), (getattr(c, "lt", None), False)):
            if bound is None:
                continue
            if inside:
                assert action.type(str(bound)) == bound, flag
            else:
                with pytest.raises(argparse.ArgumentTypeError):
                    action.type(str(bound))
            step = 1 if action.type.__name__.startswith("int") else 1e-6 * max(1, abs(bound))
            outside = bound - step if isinstance(c, (at.Ge, at.Gt)) else bound + step
            with pytest.raises(argparse.ArgumentTypeError, match="must be"):
                action.type(repr(outside))
    if action.type.__name__.startswith("float"):
        for text in ("nan", "inf", "-inf", "twenty"):
            with pytest.raises(argparse.ArgumentTypeError):
                action.type(text)


def test_the_stack_choices_are_the_models_plus_frames():
    from typing import get_args

    columns = _options(_subparsers()["columns"])
    model = get_args(AnalysisSettings.model_fields["stack"].annotation)
    assert set(columns["--stack"].choices) == {*model, "frames"}


def test_a_cli_setting_reaches_analyse_file(monkeypatch, tmp_path):
    from latticegenome.cli import main
    from latticegenome.columns import analysis

    seen = {}

    def fake(path, settings=None, **overrides):
        seen["settings"] = settings
        raise LatticeGenomeError("stop here", str(path))

    monkeypatch.setattr(analysis, "analyse_file", fake)
    assert main(["columns", str(tmp_path / "x.tif"), "--b-search", "0.2", "--stack", "frames"]) == 2
    s = seen["settings"]
    assert isinstance(s, AnalysisSettings) and s.b_search == 0.2 and s.stack == "frames"
    assert s.significance == AnalysisSettings.model_fields["significance"].default


def test_a_workflow_setting_reaches_find_columns(monkeypatch, tmp_path):
    """The experiment's merged settings, through analyse_one and analyse_file, to the finder."""
    import numpy as np

    from latticegenome.columns import analysis
    from latticegenome.columns.batch import analyse_one
    from latticegenome.columns.readers import Image

    cfg = minimal()
    cfg["experiments"]["e"]["analysis"] = {"b_search": 0.2}
    settings = experiment_settings(validate_config(cfg, SCHEMA), "e")
    seen = {}

    def finder(data, **kwargs):
        seen.update(kwargs)
        raise LatticeGenomeError("no lattice")

    image = Image(data=np.zeros((8, 8)), pixel_size_pm=20.0, pixel_size_source="file", path="x.tif")
    monkeypatch.setattr(analysis, "read_image", lambda path, **kw: seen.update(read=kw) or [image])
    monkeypatch.setattr(analysis, "find_columns", finder)
    src = tmp_path / "x.tif"
    src.write_bytes(b"raw")
    out = analyse_one(str(src), str(tmp_path / "x.h5"), settings)
    assert out["status"] == "rejected"
    assert seen["b_search"] == 0.2 and seen["significance"] == 5.0
    assert math.isclose(seen["spacing_px"], 390.5 / 20.0)
    assert seen["read"]["stack"] == "sum"
