"""Workflow configuration: load, validate against the schema, resolve.

The Snakefile validates with ``snakemake.utils.validate`` against the same
schema (``config/schema.yaml``); this module gives the command line the same
check with one-line messages naming the key, and resolves per-experiment
settings (defaults merged with an experiment's overrides).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ConfigError


def _with_defaults(validator_class):
    import jsonschema

    validate_props = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(prop, sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def validate_config(config: dict, schema_path: str | Path, *, source: str = "config") -> dict:
    """Validate ``config`` in place (defaults filled in); return it.

    Raises
    ------
    ConfigError
        Naming the first offending key (``experiments.demo.pixel_size_pm``)
        and what was expected.
    """
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    cls = _with_defaults(jsonschema.validators.validator_for(schema))
    errors = sorted(cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        key = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(f"{key}: {e.message}", source)
    check_references(config, source=source)
    return config


def _facility_references(config: dict) -> list[tuple[str, str | None]]:
    """(configuration key, facility name) of every experiment and of the publication."""
    refs = [(f"experiments.{name}.facility", exp.get("facility"))
            for name, exp in config.get("experiments", {}).items()]
    if config.get("publication"):
        refs.append(("publication.facility", config["publication"].get("facility")))
    return refs


def check_references(config: dict, *, source: str = "config") -> None:
    """Every facility named by an experiment or the publication exists.

    Raises
    ------
    ConfigError
        Naming the key and the facilities that do exist.
    """
    known = config.get("facilities", {})
    for key, name in _facility_references(config):
        if name not in known:
            raise ConfigError(f"{key}: '{name}' is not a facility (known: {', '.join(known) or 'none'})",
                              source)
    check_globus(config, source=source)


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
        p = Path(config.get(key, key))
        p = (p if p.is_absolute() else Path(base) / p).resolve()
        if p != root and root not in p.parents:
            raise ConfigError(f"{key}: {p} is not below facilities.{host}.local_path {root}, "
                              "so Globus cannot deliver there", source)


def load_config(path: str | Path, schema_path: str | Path) -> dict:
    """Read a YAML configuration and validate it."""
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError("no such file", str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", str(path)) from None
    return validate_config(config, schema_path, source=str(path))


def experiment_settings(config: dict, name: str) -> dict:
    """Analysis settings of one experiment: defaults, then its overrides.

    Adds ``spacing_pm`` (the first material's lattice parameter) as the
    lattice-search hint unless set.
    """
    exp = config["experiments"][name]
    settings = dict(config.get("analysis", {}))
    settings.update(exp.get("analysis", {}) or {})
    materials = exp.get("materials") or []
    if "spacing_pm" not in settings and materials:
        settings["spacing_pm"] = materials[0]["a_pm"]
    settings["pixel_size_pm"] = exp.get("pixel_size_pm")
    settings["hdf5_dataset"] = exp.get("hdf5_dataset")
    return settings
