"""Workflow configuration: load, validate, resolve.

Every setting, its range and its default are fields of the model
:class:`latticegenome.core.settings.Settings`; ``config/schema.yaml`` is made
from it. The Snakefile validates with ``snakemake.utils.validate`` against that
schema (which fills in the defaults) and calls :func:`check_references`; this
module gives the command line the same check with one-line messages naming the
key, then builds the model (:func:`settings_from_config`), and resolves
per-experiment settings (:func:`experiment_settings`: defaults merged with an
experiment's overrides).

Relative paths in a configuration (facility folders, scratch, results,
structure files) are relative to the workflow root, the folder holding the
Snakefile (the Snakefile runs there).
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

import yaml

from latticegenome.core.errors import ConfigError
from latticegenome.core.settings import (
    AnalysisSettings,
    Facility,
    Settings,
    json_schema,
)

#: The backend of a facility block that names none.
DEFAULT_BACKEND = Facility.model_fields["backend"].default


def _with_defaults(validator_class):
    import jsonschema

    validate_props = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _read_schema(schema_path: str | Path) -> dict:
    """The schema as a dict; one line naming the file if it cannot be read."""
    try:
        return yaml.safe_load(Path(schema_path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the schema ({exc.strerror or exc})", str(schema_path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"the schema is not valid YAML: {exc}", str(schema_path)) from None


def validate_config(config: dict, schema_path: str | Path | None = None, *,
                    source: str = "config", base: str | Path | None = None) -> dict:
    """Validate ``config`` in place (defaults filled in); return it.

    Parameters
    ----------
    config : dict
        The configuration as read from YAML.
    schema_path : path, optional
        The JSON schema (``config/schema.yaml``); default the one made from the
        model (:func:`latticegenome.core.settings.json_schema`).
    source : str
        Named in messages (the configuration file).
    base : path, optional
        The workflow root that relative paths are relative to; default the
        current directory (where the Snakefile runs).

    Raises
    ------
    ConfigError
        Naming the first offending key (``experiments.demo.pixel_size_pm``)
        and what was expected.
    """
    import jsonschema

    base = Path.cwd() if base is None else Path(base)
    check_finite(config, source=source)
    schema = json_schema() if schema_path is None else _read_schema(schema_path)
    cls = _with_defaults(jsonschema.validators.validator_for(schema))
    errors = sorted(cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        key = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(f"{key}: {e.message}", source)
    settings_from_config(config, source=source)  # the model itself: also with an older schema
    check_references(config, source=source, base=base)
    check_structure_files(config, source=source, base=base)
    return config


def model_error(exc, source: str = "config") -> ConfigError:
    """A one-line :class:`ConfigError` naming the key of a pydantic ``ValidationError``."""
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"] if p != "[key]") or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    return ConfigError(f"{key}: {message}", source)


def settings_from_config(config: Mapping | Settings, *, source: str = "config") -> Settings:
    """The configuration as the typed model (every default from it).

    Parameters
    ----------
    config : mapping or Settings
        The configuration as read from YAML (validated or not); a
        :class:`~latticegenome.core.settings.Settings` is returned as it is.

    Raises
    ------
    ConfigError
        Naming the first offending key.

    Examples
    --------
    >>> cfg = {"facilities": {"f": {"path": "raw"}}, "experiments": {"e": {
    ...     "facility": "f", "path": "x", "materials": [
    ...         {"formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5}]}}}
    >>> s = settings_from_config(cfg)
    >>> s.batch_size, s.experiments["e"].stacking_axis, s.facilities["f"].backend
    (100, 'y', 'local')
    """
    from pydantic import ValidationError

    if isinstance(config, Settings):
        return config
    try:
        return Settings.model_validate(dict(config))
    except ValidationError as exc:
        raise model_error(exc, source) from None


def _non_finite(value, key: tuple = ()):
    """(key, value) of every NaN or infinite number inside ``value``."""
    if isinstance(value, float) and not math.isfinite(value):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _non_finite(v, (*key, k))
    elif isinstance(value, (list, tuple)):
        for k, v in enumerate(value):
            yield from _non_finite(v, (*key, k))


def check_finite(config: dict, *, source: str = "config") -> None:
    """No number anywhere in the configuration is NaN or infinite.

    JSON-schema bounds let NaN through (every comparison with NaN is false),
    so this is checked separately.

    Raises
    ------
    ConfigError
        Naming the first such key (``experiments.demo.pixel_size_pm: nan is
        not a finite number``).
    """
    for key, value in _non_finite(config):
        name = ".".join(str(k) for k in key) or "(top level)"
        raise ConfigError(f"{name}: {value} is not a finite number", source)


def check_structure_files(config: dict, *, base: str | Path = ".", source: str = "config") -> None:
    """Every material's ``structure_file`` exists (relative to ``base``).

    Raises
    ------
    ConfigError
        Naming the key and the path looked for.
    """
    for name, exp in (config.get("experiments") or {}).items():
        for k, mat in enumerate(exp.get("materials") or []):
            given = mat.get("structure_file")
            if given is None:
                continue
            path = Path(given) if Path(given).is_absolute() else Path(base) / given
            if not path.is_file():
                raise ConfigError(f"experiments.{name}.materials.{k}.structure_file: no such file "
                                  f"{path}", source)


def _facility_references(config: dict) -> list[tuple[str, str | None]]:
    """(configuration key, facility name) of every experiment and of the publication."""
    refs = [(f"experiments.{name}.facility", exp.get("facility"))
            for name, exp in config.get("experiments", {}).items()]
    if config.get("publication"):
        refs.append(("publication.facility", config["publication"].get("facility")))
    return refs


def check_references(config: dict, *, source: str = "config", base: str | Path = ".") -> None:
    """Every facility named exists, experiment folders stay inside their
    facility, no number is NaN or infinite, a Globus host holds the outputs.

    Parameters
    ----------
    config : dict
        The validated configuration.
    source : str
        Named in messages.
    base : path
        Folder that relative local paths are relative to (the workflow root;
        the Snakefile calls this from there).

    Raises
    ------
    ConfigError
        Naming the key and what is wrong (for a facility, the ones that exist).
    """
    check_finite(config, source=source)
    known = config.get("facilities", {})
    for key, name in _facility_references(config):
        if name not in known:
            raise ConfigError(f"{key}: '{name}' is not a facility (known: {', '.join(known) or 'none'})",
                              source)
    check_experiment_paths(config, base=base, source=source)
    check_globus(config, base=base, source=source)


def _relative_problem(path: str) -> str | None:
    """Why ``path`` is not a plain relative folder path (None if it is)."""
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() or \
            path.startswith("\\"):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", path):
        return "has a '..' component"
    return None


def _local_root(block: dict, base: str | Path) -> Path:
    root = Path(block["path"])
    return (root if root.is_absolute() else Path(base) / root).resolve()


def check_experiment_paths(config: dict, *, base: str | Path = ".", source: str = "config") -> None:
    """Every experiment's ``path`` is a folder inside its facility's root.

    Experiment paths are relative to the facility's ``path``: no absolute path
    and no ``..`` component; for a local facility the folder, symbolic links
    followed, must also resolve inside the resolved facility root (it need
    not exist yet).

    Raises
    ------
    ConfigError
        Naming ``experiments.<name>.path`` and the problem.
    """
    facilities = config.get("facilities") or {}
    for name, exp in (config.get("experiments") or {}).items():
        path, fac = exp.get("path"), exp.get("facility")
        if not isinstance(path, str):
            continue
        key = f"experiments.{name}.path"
        problem = _relative_problem(path)
        if problem:
            raise ConfigError(f"{key}: {path!r} {problem}; give a folder relative to "
                              f"facilities.{fac}.path", source)
        block = facilities.get(fac) or {}
        if block.get("backend", DEFAULT_BACKEND) != "local" or not block.get("path"):
            continue
        try:
            root = _local_root(block, base)
            folder = (root / path).resolve()
        except (OSError, RuntimeError) as exc:  # a symbolic link loop
            raise ConfigError(f"{key}: cannot resolve {path!r} at facilities.{fac}.path: {exc}",
                              source) from None
        if folder != root and root not in folder.parents:
            raise ConfigError(f"{key}: {path!r} resolves to {folder}, outside facilities.{fac}.path "
                              f"({root})", source)


def globus_facilities(config: dict) -> list[str]:
    """Names of the facilities with ``backend: globus`` that the workflow uses."""
    fac = config.get("facilities", {})
    used = [name for _, name in _facility_references(config)]
    names = [n for n in dict.fromkeys(used) if fac.get(n, {}).get("backend") == "globus"]
    host = (config.get("globus") or {}).get("host")
    if names and host:
        names.append(host)
    return list(dict.fromkeys(names))


def check_globus(config: dict, *, base: str | Path = ".", source: str = "config") -> None:
    """A workflow using Globus names a host facility that holds scratch and results.

    Raises
    ------
    ConfigError
        If ``globus.host`` is missing, is not a Globus facility with
        ``local_path``, or scratch/results are not below that folder (Globus
        could not deliver files where the workflow looks for them).
    """
    if not globus_facilities(config):
        return
    fac = config.get("facilities", {})
    host = (config.get("globus") or {}).get("host")
    if not host or host not in fac:
        raise ConfigError(f"globus.host: '{host}' is not a facility; name the Globus "
                          "collection (with local_path) this workflow runs on", source)
    block = fac[host]
    if block.get("backend") != "globus" or not block.get("local_path"):
        raise ConfigError(f"facilities.{host}: the Globus host needs backend: globus and "
                          "local_path", source)
    root = Path(block["local_path"])
    root = (root if root.is_absolute() else Path(base) / root).resolve()
    for key in ("scratch", "results"):
        p = Path(config.get(key, Settings.model_fields[key].default))
        p = (p if p.is_absolute() else Path(base) / p).resolve()
        if p != root and root not in p.parents:
            raise ConfigError(f"{key}: {p} is not below facilities.{host}.local_path {root}, "
                              "so Globus cannot deliver there", source)


def workflow_root(config_path: str | Path) -> Path:
    """The folder holding the Snakefile above a configuration file, else the cwd."""
    start = Path(os.path.abspath(config_path)).parent
    for folder in (start, *start.parents):
        if (folder / "Snakefile").is_file():
            return folder
    return Path.cwd()


def find_schema(config_path: str | Path) -> Path:
    """The schema for a configuration: ``schema.yaml`` beside it, else the
    ``config/schema.yaml`` of the checkout this package comes from.

    Raises
    ------
    ConfigError
        If neither exists (give ``--schema``).
    """
    beside = Path(config_path).parent / "schema.yaml"
    checkout = Path(__file__).resolve().parents[3] / "config" / "schema.yaml"
    for candidate in (beside, checkout):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no schema.yaml beside it nor in {checkout.parent}: give --schema",
                      str(config_path))


def load_config(path: str | Path, schema_path: str | Path | None = None, *,
                base: str | Path | None = None) -> dict:
    """Read a YAML configuration and validate it.

    Parameters
    ----------
    path : path
        The configuration file.
    schema_path : path, optional
        Default: :func:`find_schema`.
    base : path, optional
        Folder relative paths are relative to; default :func:`workflow_root`.
    """
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError("no such file", str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", str(path)) from None
    if not isinstance(config, dict):
        raise ConfigError("not a configuration (expected a mapping of keys)", str(path))
    schema_path = find_schema(path) if schema_path is None else schema_path
    base = workflow_root(path) if base is None else base
    return validate_config(config, schema_path, source=str(path), base=base)


def load_settings(path: str | Path, schema_path: str | Path | None = None, *,
                  base: str | Path | None = None) -> Settings:
    """:func:`load_config`, as the typed model."""
    return settings_from_config(load_config(path, schema_path, base=base), source=str(path))


def experiment_settings(config: Mapping | Settings, name: str) -> AnalysisSettings:
    """Analysis settings of one experiment: the defaults, then its overrides.

    See :meth:`latticegenome.core.settings.Settings.analysis_for`: the
    ``analysis:`` block, then the keys the experiment's own ``analysis:``
    gives, its ``pixel_size_pm`` and ``hdf5_dataset``; ``spacing_pm`` (the
    lattice-search hint) is the first material's lattice parameter unless set.

    Parameters
    ----------
    config : mapping or Settings
        The configuration (a dict as read and validated, or the model).
    name : str
        The experiment.

    Raises
    ------
    ConfigError
        If the configuration is not valid.
    """
    return settings_from_config(config).analysis_for(name)
