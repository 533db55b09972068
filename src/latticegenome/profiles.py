"""Make ``snakemake --profile NAME`` find the profiles of this repository.

Snakemake looks for a profile named NAME in ``./NAME``,
``$XDG_CONFIG_HOME/snakemake/NAME`` (``~/.config/snakemake/NAME``) and
``/etc/xdg/snakemake/NAME``, not in ``./profiles/NAME``. This links each
``profiles/NAME`` into the user's Snakemake configuration folder, so the
commands in the README work as typed from the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_target() -> Path:
    """``$XDG_CONFIG_HOME/snakemake`` or ``~/.config/snakemake``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "snakemake"


def install_profiles(profiles_dir: str | Path = "profiles", target: str | Path | None = None) -> list[str]:
    """Link every profile folder into ``target``; return what was done, a line each.

    A link already pointing here is left alone; a link pointing elsewhere (an
    older clone, or a dangling link) is replaced and said so; a real folder
    of the user's own is never touched (a line says how to use ours anyway).
    """
    profiles_dir = Path(profiles_dir).resolve()
    target = Path(target) if target else default_target()
    target.mkdir(parents=True, exist_ok=True)
    lines = []
    for prof in sorted(p for p in profiles_dir.iterdir() if (p / "config.yaml").is_file()):
        link = target / prof.name
        if link.is_symlink():
            if Path(os.readlink(link)) == prof:
                lines.append(f"profile {prof.name}: already linked")
                continue
            old = os.readlink(link)
            link.unlink()
            link.symlink_to(prof, target_is_directory=True)
            lines.append(f"profile {prof.name}: now {prof} (was {old})")
        elif link.exists():
            lines.append(f"profile {prof.name}: {link} is your own; not replaced "
                         f"(use --profile {profiles_dir.name}/{prof.name} for ours)")
        else:
            link.symlink_to(prof, target_is_directory=True)
            lines.append(f"profile {prof.name}: linked {link} -> {prof}")
    return lines


#: Lines every rendered SLURM profile starts with, after the machine's title and notes.
_RENDERED_HEADER = """\
# Per-user settings come from SLURM's own environment variables, read by sbatch
# (nothing to edit here): export SBATCH_ACCOUNT=<project>; optionally SBATCH_QOS,
# SBATCH_CONSTRAINT, SBATCH_PARTITION. See README, section "Running on HPC".
# Rendered by `latticegenome render-profiles` from profiles/slurm-template.yaml and
# profiles/machines.yaml: edit those, not this file.
# software-deployment-method "?CONDA" (YTE, rendered by Snakemake): conda environments
# for every run; only a dry run (-n) on a machine without conda plans without them.
"""


def merge_settings(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``: mappings merge key by key, anything else
    replaces, and ``None`` removes the key."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_settings(out[key], value)
        else:
            out[key] = value
    return out


def render_profile(template: dict, machine: dict) -> str:
    """The text of one machine's profile: the template with the machine's settings on top.

    Parameters
    ----------
    template : dict
        The loaded ``profiles/slurm-template.yaml``.
    machine : dict
        ``title`` (one line), optional ``notes`` (lines) and ``settings`` (profile keys).
    """
    import yaml

    head = [f"# {machine['title']}"] + [f"# {line}" for line in machine.get("notes", [])]
    body = yaml.safe_dump(merge_settings(template, machine.get("settings") or {}),
                          sort_keys=False, default_flow_style=False, width=100)
    return "\n".join(head) + "\n" + _RENDERED_HEADER + body


def render_profiles(profiles_dir: str | Path = "profiles", *, check: bool = False) -> list[str]:
    """Write ``profiles/<machine>/config.yaml`` for every entry of ``profiles/machines.yaml``.

    With ``check``, write nothing: return a line for each profile that differs
    from what would be rendered (empty when all are up to date).
    """
    import yaml

    profiles_dir = Path(profiles_dir)
    template = yaml.safe_load((profiles_dir / "slurm-template.yaml").read_text())
    machines = yaml.safe_load((profiles_dir / "machines.yaml").read_text())
    lines = []
    for name, machine in machines.items():
        path = profiles_dir / name / "config.yaml"
        text = render_profile(template, machine)
        current = path.read_text() if path.exists() else None
        if current == text:
            if not check:
                lines.append(f"profile {name}: up to date")
            continue
        if check:
            lines.append(f"profile {name}: differs from the template; run: latticegenome render-profiles")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        lines.append(f"profile {name}: written {path}")
    return lines
