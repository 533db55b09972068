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
