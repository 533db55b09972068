"""Resuming a workflow after its Snakemake process was killed.

Snakemake locks the working directory (``.snakemake/locks/``) while it runs.
A ``kill -9`` (or a node that went down) leaves the lock behind, and the
next run stops with "Directory cannot be locked" until ``snakemake
--unlock``. :func:`stale_lock` tells a stale lock from a live run (a
Snakemake process whose working directory is this one, on this machine), so
that ``make demo`` can remove a stale lock by itself and never one of a run
that is still going.

Run as ``python -m latticegenome.resume [WORKDIR]``: removes a stale lock
(as ``snakemake --unlock`` does) and says so; exits 0 when the directory can
be used, 1 when another Snakemake is running in it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def snakemake_processes(workdir: str | os.PathLike) -> list[int]:
    """PIDs of Snakemake processes on this machine working in ``workdir``."""
    want = Path(workdir).resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        words = [Path(a.decode(errors="replace")).name for a in argv[:3]]
        if any(w == "snakemake" or w.startswith("snakemake ") for w in words) and cwd == want:
            found.append(int(entry.name))
    return found


def stale_lock(workdir: str | os.PathLike) -> bool:
    """True when ``workdir`` holds a Snakemake lock and no Snakemake runs there."""
    locks = Path(workdir) / ".snakemake" / "locks"
    held = locks.is_dir() and any(locks.iterdir())
    return held and not snakemake_processes(workdir)


def remove_stale_lock(workdir: str | os.PathLike) -> bool:
    """Remove the lock a killed Snakemake left in ``workdir`` (as ``snakemake --unlock``
    does), never one of a live run; True if there was one."""
    if not stale_lock(workdir):
        return False
    for lock in (Path(workdir) / ".snakemake" / "locks").iterdir():
        lock.unlink()
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    workdir = Path(args[0] if args else ".")
    if snakemake_processes(workdir):
        print(f"latticegenome: another Snakemake is running in {workdir.resolve()}; "
              "wait for it (or stop it) first", file=sys.stderr)
        return 1
    if remove_stale_lock(workdir):
        print(f"latticegenome: removed the lock a killed Snakemake left in {workdir.resolve()}; "
              "resuming")
    return 0


if __name__ == "__main__":
    sys.exit(main())
