"""The local-filesystem backend, the embedded default (no account, no network).

:class:`LocalBackend` copies an experiment's files from a facility folder into
scratch, each verified by SHA-256, read-only, resumable; symbolic links and
anything whose real path lies outside the facility root are refused, never
read. :func:`facility_changes` tells which originals changed since ingest.

The parts: :func:`open_facility_folder` (the experiment folder, checked to lie
inside the facility after it was opened), :func:`scan_folder` (what is taken
and what refused), ``_FolderIngest`` (reuse or copy one file, verified) and
:class:`LocalBackend` (the interface of
:class:`latticegenome.ingest.backends.TransferBackend`). Progress goes to
``logging.getLogger(__name__)``."""

from __future__ import annotations

import contextlib
import csv
import errno
import fnmatch
import hashlib
import json
import logging
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from latticegenome.core.errors import TransferError
from latticegenome.core.fsutil import CHUNK, atomic_path, atomic_write, sha256_file
from latticegenome.ingest.manifest import (
    ManifestEntry,
    _now,
    _warn_log_ignored,
    check_name,
    display_name,
    publishable_files,
    read_manifest,
    read_raw_provenance,
    record_copy,
    write_manifest,
)

logger = logging.getLogger(__name__)


class _Refused(TransferError):
    """One source file not taken (a link, not a regular file, changed).

    Reported in the ``refused`` list, not fatal. ``keep`` is the entry that
    stays in the manifest (the record of an existing raw copy), or None.
    """

    def __init__(self, message: str, keep: ManifestEntry | None = None):
        super().__init__(message)
        self.keep = keep


class _FolderMissing(TransferError):
    """The experiment folder does not exist at the facility."""


_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _open_source(name: str | Path, dir_fd: int | None = None):
    """Open a facility file for reading without following a symbolic link.

    Parameters
    ----------
    name : str or Path
        File name, relative to ``dir_fd`` when given.
    dir_fd : int, optional
        Descriptor of the folder holding it.

    Returns
    -------
    file : binary file object
    st : os.stat_result
        Of the opened file (``fstat``), so size and mtime are those read.

    Raises
    ------
    _Refused
        For a symbolic link (``O_NOFOLLOW``) or anything but a regular file.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise _Refused("a symbolic link: not followed") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _Refused("not a regular file")
    return os.fdopen(fd, "rb"), st


def _hash_source(dir_fd: int, name: str) -> tuple[str, os.stat_result]:
    """SHA-256 and ``fstat`` of the facility file ``name`` (never through a link)."""
    fin, st = _open_source(name, dir_fd)
    h = hashlib.sha256()
    with fin:
        for block in iter(lambda: fin.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest(), st


def _change_text(old_sha: str, new_sha: str, old_size: int, new_size: int) -> str:
    """``sha256 ab12... -> cd34..., size N bytes`` (or ``N -> M bytes``)."""
    size = f"{old_size} bytes" if old_size == new_size else f"{old_size} -> {new_size} bytes"
    return f"sha256 {old_sha[:12]}... -> {new_sha[:12]}..., size {size}"


def _changed(record: ManifestEntry, digest: str, size: int) -> str:
    change = _change_text(record.sha256, digest, record.size, size)
    return f"changed at the facility since ingest: {change}"


def _copy_verified(src, dest: Path, *, dir_fd: int | None = None,
                   expect: ManifestEntry | None = None) -> tuple[int, str, os.stat_result]:
    """Copy ``src`` to ``dest`` through a temporary file; verify by SHA-256.

    The copy is re-read from disk and compared with the digest of the bytes
    read from the source before it takes its final name; it is then made
    read-only.

    Parameters
    ----------
    src : str or Path
        The source; a name in the folder ``dir_fd`` when given, then opened
        with ``O_NOFOLLOW``.
    dest : Path
    dir_fd : int, optional
    expect : ManifestEntry, optional
        The record of an earlier ingest: a source with other content is not
        taken (``dest`` is left as it was).

    Returns
    -------
    size, sha256, stat of the source as read

    Raises
    ------
    _Refused
        The source is a link or not a regular file, or differs from ``expect``.
    TransferError
        The copy does not match the bytes read.
    """
    if dir_fd is None:
        fin, st = open(src, "rb"), os.stat(src)
    else:
        fin, st = _open_source(src, dir_fd)
    h = hashlib.sha256()
    size = 0
    with fin, atomic_path(dest) as tmp:
        with open(tmp, "wb") as fout:
            for block in iter(lambda: fin.read(CHUNK), b""):
                h.update(block)
                fout.write(block)
                size += len(block)
            fout.flush()
            os.fsync(fout.fileno())
        digest = h.hexdigest()
        if expect is not None and digest != expect.sha256:
            raise _Refused(f"{_changed(expect, digest, size)}; the raw copy is missing: left out")
        check = sha256_file(tmp)
        if check != digest:
            raise TransferError(
                f"checksum mismatch after copy (source {digest}, copy {check})", str(dest)
            )
    os.chmod(dest, 0o444)  # after the rename: atomic_path may set the umask's mode
    return size, digest, st


def _entry_refusal(entry: os.DirEntry) -> str | None:
    """Why a folder entry is not taken (unsafe name, link, not a file); None if fine."""
    try:
        check_name(entry.name)
    except TransferError as exc:
        return exc.reason
    if entry.is_symlink():
        return "a symbolic link: not followed"
    if not entry.is_file(follow_symlinks=False):
        return "not a regular file"
    return None


# --------------------------------------------------------------------------- the facility folder


def _outside(facility: str, root: Path, path: str, folder: str | None = None) -> TransferError:
    shown = display_name(str(root / path))
    where = f" (it resolves to {display_name(folder)})" if folder else ""
    return TransferError(f"experiment folder lies outside facility '{facility}' "
                         f"({display_name(str(root))}){where}: refused", shown)


def _resolve_folder(facility: str, root: Path, path: str) -> Path:
    """The experiment folder, resolved; it must lie inside the resolved root.

    Raises
    ------
    TransferError
        If it resolves outside the root (``..``, an absolute path, a
        link to elsewhere); ``_FolderMissing`` if it does not exist.
    """
    try:
        real_root = root.resolve()
        folder = (root / path).resolve()
    except (OSError, RuntimeError):
        raise TransferError("cannot resolve the experiment folder (a link loop?)",
                            display_name(str(root / path))) from None
    if folder != real_root and real_root not in folder.parents:
        raise _outside(facility, root, path)
    if not folder.is_dir():
        raise _FolderMissing(f"no such folder at facility '{facility}'",
                             display_name(str(root / path)))
    return folder


@contextlib.contextmanager
def open_facility_folder(facility: str, root: str | Path, path: str):
    """A descriptor of the experiment folder ``root/path``, checked to lie inside
    ``root`` after it was opened (no race with a link swapped in meanwhile).

    Parameters
    ----------
    facility : str
        The facility's name (for messages).
    root : str or Path
        The facility's base folder.
    path : str
        The experiment folder, relative to ``root``.

    Raises
    ------
    TransferError
        The folder lies outside ``root``; ``_FolderMissing`` (a
        TransferError) when it does not exist.
    """
    root = Path(root)
    folder = _resolve_folder(facility, root, path)
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC)
    except FileNotFoundError:
        raise _FolderMissing(f"no such folder at facility '{facility}'",
                             display_name(str(root / path))) from None
    except OSError:
        raise _outside(facility, root, path) from None
    try:
        opened = os.path.realpath(f"/proc/self/fd/{fd}")
        if os.path.isabs(opened) and not opened.startswith("/proc/"):
            real_root = str(root.resolve())
            if opened != real_root and not opened.startswith(real_root.rstrip(os.sep) + os.sep):
                raise _outside(facility, root, path, opened)
        yield fd
    finally:
        os.close(fd)


def scan_folder(fd: int, pattern: str) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """Files of the folder open as ``fd`` matching ``pattern``: taken and refused.

    Entries are lstat'ed, never followed; sub-folders are left out.

    Returns
    -------
    files : list of (name, size in bytes)
        Regular files with safe names, sorted by name.
    refused : list of (name, reason)
        Unsafe names, symbolic links and anything but a regular file, sorted.
    """
    files, refused = [], []
    with os.scandir(fd) as it:
        for entry in it:
            if not fnmatch.fnmatch(entry.name, pattern):
                continue
            if entry.is_dir(follow_symlinks=False):
                continue  # sub-folders are not images
            reason = _entry_refusal(entry)
            if reason:
                refused.append((entry.name, reason))
            else:
                files.append((entry.name, entry.stat(follow_symlinks=False).st_size))
    return sorted(files), sorted(refused)


# --------------------------------------------------------------------------- one ingest


def _task_state(state_path: Path, source: str, pattern: str, label: str | None) -> dict:
    """The task's state file: reused when it exists, written before any copy."""
    if state_path.exists():
        state = json.loads(state_path.read_text())
        logger.info("resuming transfer task %s", state["task_id"])
        return state
    state = {"task_id": f"local-{uuid.uuid4()}", "source": source,
             "pattern": pattern, "label": label, "submitted_at": _now()}
    with atomic_write(state_path, "w") as fh:
        json.dump(state, fh)
    return state


def _earlier_records(manifest: Path, dest_dir: Path, names) -> dict[str, ManifestEntry]:
    """What an earlier ingest recorded: the manifest, else each copy's sidecar
    (an ingest interrupted before it wrote the manifest)."""
    out: dict[str, ManifestEntry] = {}
    if manifest.exists():
        try:
            out = {e.file: e for e in read_manifest(manifest)}
        except (OSError, ValueError, KeyError, TypeError, csv.Error):
            out = {}
    for name in names:
        if name not in out:
            rec = read_raw_provenance(dest_dir / name)
            if rec is not None:
                out[name] = rec
    return out


def _source_digest(fd: int, name: str, record: ManifestEntry):
    """The facility file's SHA-256 and stat: the record's when size and mtime
    are those recorded (no hashing), else computed."""
    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        raise _Refused("a symbolic link: not followed")
    if (record.source_mtime_ns and st.st_size == record.size
            and str(st.st_mtime_ns) == record.source_mtime_ns):
        return record.sha256, st
    return _hash_source(fd, name)


@dataclass
class _FolderIngest:
    """Files of one open facility folder into ``dest_dir``, under one task.

    Parameters
    ----------
    fd : int
        Descriptor of the facility folder (:func:`open_facility_folder`).
    dest_dir : Path
        Where the raw copies go.
    facility, collection : str
        The facility's name and collection label (manifest columns).
    path : str
        The experiment folder at the facility (for ``source_path``).
    task_id : str
    """

    fd: int
    dest_dir: Path
    facility: str
    collection: str
    path: str
    task_id: str

    def take(self, name: str, record: ManifestEntry | None) -> ManifestEntry:
        """Reuse or copy one file; return its manifest entry (or raise _Refused)."""
        dest = self.dest_dir / name
        if dest.exists():
            entry = self._reuse(name, dest, record)
            if entry is not None:
                return entry
        nbytes, digest, st = _copy_verified(name, dest, dir_fd=self.fd, expect=record)
        logger.info("copied %s (%d bytes, sha256 %s)", display_name(name), nbytes, digest[:12])
        return self._entry(dest, nbytes, digest, st)

    def _reuse(self, name: str, dest: Path, record: ManifestEntry | None) -> ManifestEntry | None:
        """The entry of the raw copy ``dest`` if it is the facility file, None
        to copy it again (a damaged copy of an unchanged file).

        Raises
        ------
        _Refused
            The facility file differs from the record (the copy and its
            record are kept), or from a copy without any record.
        """
        copy = sha256_file(dest)
        if record is None:
            digest, st = _hash_source(self.fd, name)
            if digest == copy:
                return self._entry(dest, st.st_size, digest, st)
            raise _Refused("the raw copy differs from the facility file and has no ingest "
                           f"record ({_change_text(copy, digest, dest.stat().st_size, st.st_size)})"
                           "; kept, left out (delete it to ingest the facility file)")
        digest, st = _source_digest(self.fd, name, record)
        if digest != record.sha256:
            if copy == record.sha256:
                raise _Refused(f"{_changed(record, digest, st.st_size)}; the raw copy and its "
                               "record are kept", keep=record)
            raise _Refused(f"{_changed(record, digest, st.st_size)}; the raw copy differs from "
                           "its record too: left out")
        if copy == record.sha256:
            return self._entry(dest, record.size, copy, st)
        return None

    def _entry(self, dest: Path, size: int, digest: str, st: os.stat_result) -> ManifestEntry:
        return record_copy(dest, size=size, sha256=digest, facility=self.facility,
                           collection=self.collection, source_path=f"{self.path}/{dest.name}",
                           task_id=self.task_id, source_mtime_ns=str(st.st_mtime_ns))


# --------------------------------------------------------------------------- the backend


class LocalBackend:
    """A facility that is a folder on a local or mounted file system.

    One of the backends of :class:`latticegenome.ingest.backends.TransferBackend`.

    Parameters
    ----------
    name : str
        The facility's name in the configuration.
    root : str or Path
        Its base folder; experiment paths are relative to it and must
        resolve inside it.
    """

    kind = "local"

    def __init__(self, name: str, root: str | Path):
        self.name = name
        self.root = Path(root)

    @property
    def collection(self) -> str:
        """``local:<resolved root>``, the manifest's ``collection`` column."""
        return f"local:{self.root.resolve()}"

    @property
    def collection_label(self) -> str:
        """The same as :attr:`collection` (the name every backend has)."""
        return self.collection

    def _open_folder(self, path: str):
        """:func:`open_facility_folder` of the experiment folder ``path``."""
        return open_facility_folder(self.name, self.root, path)

    def scan(self, path: str, pattern: str = "*"
             ) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
        """Files in ``path`` matching ``pattern``: those taken and those refused.

        See :func:`scan_folder`: symbolic links are refused wherever they
        point (never followed), sub-folders left out.

        Raises
        ------
        TransferError
            If the folder is missing or lies outside the facility's root.
        """
        with self._open_folder(path) as fd:
            return scan_folder(fd, pattern)

    def list(self, path: str, pattern: str = "*") -> list[tuple[str, int]]:
        """Files (name, size) in ``path`` matching ``pattern``, sorted by name
        (links and unsafe names left out: see :meth:`scan`)."""
        return self.scan(path, pattern)[0]

    def ingest(self, path: str, pattern: str, dest_dir: str | Path, manifest: str | Path | None,
               *, label: str | None = None, log=None, skip=None,
               state_name: str = ".transfer.json"
               ) -> tuple[list[ManifestEntry], list[tuple[str, str]]]:
        """Copy matching files into ``dest_dir`` and write the manifest.

        ``label`` names the task in its state file (as a Globus task label).
        A raw copy already in ``dest_dir`` is reused when it is the facility
        file; when the facility file changed since it was ingested (its
        record in the manifest or the copy's sidecar), the copy and its
        record are kept and the file is reported, never silently replaced.
        ``skip`` (``{name: ManifestEntry}``, the files of earlier increments:
        :mod:`latticegenome.ingest.increments`) are neither copied nor
        returned; each is only checked, cheaply (size and time; hashed only
        when those differ), for a change at the facility, which is reported
        in ``refused``. Progress goes to this module's logger; ``log`` is
        deprecated and ignored.

        Returns
        -------
        entries : list of ManifestEntry
            Also written to ``manifest`` (unless None).
        refused : list of (name, reason)
            Files not transferred: unsafe names, symbolic links, not regular
            files, and files changed at the facility since their ingest.

        Raises
        ------
        TransferError
            If the source folder is missing or outside the facility's root,
            nothing matches, or a copy fails its checksum.
        """
        _warn_log_ignored(log, "LocalBackend.ingest", __name__)
        dest_dir, skip = Path(dest_dir), dict(skip or {})
        with self._open_folder(path) as fd:
            files, refused = scan_folder(fd, pattern)
            if not files and not refused and not skip:
                raise TransferError(f"no files match '{pattern}' at facility '{self.name}'",
                                    display_name(str(self.root / path)))
            refused += [(e.file, why) for e in skip.values()  # deleted there: no change of ours
                        if (why := _change_of(fd, e)) and why != "gone from the facility"]
            files = [(n, size) for n, size in files if n not in skip]
            dest_dir.mkdir(parents=True, exist_ok=True)
            entries = self._take_all(fd, path, files, refused, dest_dir,
                                     None if manifest is None else Path(manifest),
                                     state_name=state_name, pattern=pattern, label=label)
        for name, reason in sorted(refused):
            logger.info("refused %s: %s", display_name(name), reason)
        if manifest is not None:
            write_manifest(manifest, entries)
        return entries, sorted(refused)

    def _take_all(self, fd, path, files, refused, dest_dir: Path, manifest: Path | None, *,
                  state_name: str, pattern: str, label) -> list[ManifestEntry]:
        """Reuse or copy each of ``files`` under one task; refusals appended to ``refused``."""
        if not files:
            return []
        state = _task_state(dest_dir / state_name, f"{self.collection}/{path}", pattern, label)
        records = _earlier_records(manifest or dest_dir / ".none", dest_dir, [n for n, _ in files])
        run = _FolderIngest(fd, dest_dir, self.name, self.collection, path, state["task_id"])
        entries: list[ManifestEntry] = []
        for name, _ in files:
            try:
                entries.append(run.take(name, records.get(name)))
            except _Refused as exc:
                refused.append((name, exc.reason))
                if exc.keep is not None:
                    entries.append(exc.keep)
        return entries

    def publish(self, source: str | Path, dest: str, *, label: str | None = None,
                log=None) -> dict:
        """Copy a package folder (or one file) to ``root/dest``, checksummed.

        Relative paths are kept; every path component must be a safe name
        (checked for all files before any is copied). Returns the record of
        where it went (facility, collection, path, task id, files with size
        and SHA-256). ``log`` is deprecated and ignored.
        """
        _warn_log_ignored(log, "LocalBackend.publish", __name__)
        pairs = publishable_files(source)
        target = self.root / dest
        target.mkdir(parents=True, exist_ok=True)
        task_id = f"local-{uuid.uuid4()}"
        out = []
        for f, rel in pairs:
            dest_file = target / rel
            if dest_file.exists():
                os.chmod(dest_file, 0o644)  # a previous publication of ours
            size, digest, _ = _copy_verified(f, dest_file)
            out.append({"file": rel.as_posix(), "size": size, "sha256": digest})
            logger.info("published %s", rel.as_posix())
        return {"facility": self.name, "collection": self.collection, "path": dest,
                "task_id": task_id, "files": out, "published_at": _now()}


def _change_of(fd: int, entry: ManifestEntry) -> str | None:
    """How the facility original of ``entry`` differs from its record; None if not.

    Size and mtime first; the file is hashed only when one of them differs
    (or no mtime was recorded); a changed mtime with the same content is no
    change. Links are never followed.
    """
    try:
        check_name(entry.file)
    except TransferError as exc:
        return exc.reason
    try:
        st = os.stat(entry.file, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            return "now a symbolic link at the facility: not followed"
        if not stat.S_ISREG(st.st_mode):
            return "no longer a regular file at the facility"
        if (entry.source_mtime_ns and st.st_size == entry.size
                and str(st.st_mtime_ns) == entry.source_mtime_ns):
            return None
        digest, st = _hash_source(fd, entry.file)
    except FileNotFoundError:
        return "gone from the facility"
    except _Refused as exc:
        return f"now {exc.reason} at the facility"
    if digest == entry.sha256:
        return None
    return f"changed since ingest ({_change_text(entry.sha256, digest, entry.size, st.st_size)})"


def facility_changes(backend: LocalBackend, path: str,
                     entries: list[ManifestEntry]) -> list[tuple[str, str]]:
    """Manifest entries whose facility original changed since they were ingested.

    Cheap when nothing changed: a file whose size and modification time are
    those recorded is not read. Only a different content counts (a touched
    file is no change). Symbolic links are never followed.

    Parameters
    ----------
    backend : LocalBackend
        The facility the entries came from.
    path : str
        The experiment folder at the facility.
    entries : list of ManifestEntry
        From :func:`read_manifest`.

    Returns
    -------
    list of (display name, reason)
        ``changed since ingest (sha256 ab12... -> cd34..., size ...)``,
        ``gone from the facility``, or why the file can no longer be read.

    Raises
    ------
    TransferError
        For a facility that is not local, or a folder outside its root.
    """
    if not isinstance(backend, LocalBackend):
        raise TransferError(f"facility '{getattr(backend, 'name', backend)}': checking the "
                            "originals for changes needs a local facility")
    try:
        with backend._open_folder(path) as fd:
            found = [(e.file, _change_of(fd, e)) for e in entries]
    except _FolderMissing:
        found = [(e.file, "gone from the facility") for e in entries]
    return [(display_name(name), reason) for name, reason in found if reason]


