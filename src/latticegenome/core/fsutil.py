"""Files that appear whole or not at all, with the permissions the umask allows.

Every output is written to a temporary name beside its target and renamed
over it when whole (:func:`atomic_write`, :func:`atomic_path`,
:func:`atomic_dir`). Temporary names carry the writer's host and process id
(``.<name>.<host>.<pid>.<random>.part``), so that the next writer of the same
target can tell a stale one (its process is gone) from a live one and remove
it (:func:`remove_stale_parts`). The final file gets the mode the process's
umask allows (``0666 & ~umask``; ``mkstemp`` alone would leave ``0600``), so
results on a shared HPC project are readable by the group when the umask says
so.

A full disk ends the write with :class:`NoSpaceError` naming the path and
"no space left"; the target is left as it was (or absent).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

CHUNK = 1 << 20

#: A temporary file whose writer cannot be checked (another host) is stale after this long.
STALE_AFTER_S = 24 * 3600


class NoSpaceError(OSError):
    """The file system is full (or over quota) while writing ``path``."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(errno.ENOSPC, "no space left on device", str(path))

    def __str__(self) -> str:
        return f"{self.filename}: no space left on device"


def is_no_space(exc: BaseException) -> bool:
    """True for an error that means the disk is full or the quota is spent
    (``ENOSPC``, ``EDQUOT``, or HDF5's message for them)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "errno = 28" in text or "Disk quota exceeded" in text


def umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _host() -> str:
    return socket.gethostname().split(".")[0].replace(".", "_") or "host"


def _part_prefix(path: Path) -> str:
    return f".{path.name}.{_host()}.{os.getpid()}."


def _writer_alive(part: Path, target: Path) -> bool:
    """Whether the process that writes ``part`` may still be running."""
    rest = part.name[len(f".{target.name}."):]
    host, _, rest = rest.partition(".")
    pid, _, _ = rest.partition(".")
    if host == _host() and pid.isdigit():
        if int(pid) == os.getpid():
            return False  # an earlier, abandoned write of this process
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:  # another host (or an old-style name): only age can tell
        return time.time() - part.lstat().st_mtime < STALE_AFTER_S
    except FileNotFoundError:
        return False


def stale_parts(path: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Temporary files or folders beside ``path`` left by writers that are gone.

    With ``force``, every temporary of ``path`` counts as stale (for a caller
    that holds the target exclusively, such as a Snakemake job for its own
    outputs).
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    found = path.parent.glob(f".{glob.escape(path.name)}.*.part")
    return sorted(p for p in found if force or not _writer_alive(p, path))


def remove_stale_parts(path: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Remove what :func:`stale_parts` finds; return what was removed."""
    removed = []
    for p in stale_parts(path, force=force):
        with contextlib.suppress(FileNotFoundError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def _publish(tmp: Path, path: Path, *, directory: bool = False) -> None:
    os.chmod(tmp, (0o777 if directory else 0o666) & ~umask())
    os.replace(tmp, path)


@contextlib.contextmanager
def _no_space_named(path: Path):
    try:
        yield
    except NoSpaceError:
        raise
    except Exception as exc:
        if is_no_space(exc):
            raise NoSpaceError(path) from None
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Open a temporary file beside ``path``; rename it over ``path`` on success.

    A crash or an exception leaves ``path`` untouched (as it was, or absent)
    and removes the temporary file (one left by a killed process is removed
    by the next write of ``path``). The file gets ``0666 & ~umask``. Text
    modes write UTF-8 whatever the locale.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "table.tsv"
    >>> with atomic_write(out, "w") as fh:
    ...     _ = fh.write("a\\tb\\n")
    >>> out.read_text()
    'a\\tb\\n'
    """
    path = Path(path)
    text = {} if "b" in mode else {"encoding": "utf-8"}  # names in any language, any locale
    with atomic_path(path) as tmp, open(tmp, mode, **text) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` to write to (for libraries that
    want a file name, such as h5py); rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    fd, tmp = tempfile.mkstemp(prefix=_part_prefix(path), suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        with _no_space_named(path):
            yield tmp
            _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder beside ``path``; it becomes ``path`` when whole.

    The folder appears under its final name only after the body finished
    (an existing ``path`` is replaced). Interrupted, it stays a
    ``.<name>.<host>.<pid>.<random>.part`` folder that :func:`stale_parts`
    finds, so the next run can reuse what it holds or remove it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_part_prefix(path), suffix=".part", dir=path.parent))
    try:
        with _no_space_named(path):
            yield tmp
            if path.exists():
                shutil.rmtree(path)
            _publish(tmp, path, directory=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()
