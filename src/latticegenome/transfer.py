"""Moving raw images from a facility to scratch, with a manifest.

A *facility* is where raw images live (the microscope facility's collection)
or where results go (a publication collection). Each backend implements the
same two operations:

- :meth:`LocalBackend.ingest` — copy every file of an experiment matching a
  pattern into scratch, verify each by SHA-256, and write a manifest;
- :meth:`LocalBackend.publish` — copy a results package out.

The local-filesystem backend is the embedded default: no account, no
network. It is resumable: a task id is written before the first byte is
copied and reused by a rerun, files already present with the right checksum
are skipped, and every file appears whole (written to a temporary name,
verified, then renamed) and read-only, so raw data cannot be modified by a
later step.

Remote names are untrusted: :func:`check_name` refuses names with ``..``,
absolute paths, path separators, control characters or leading dots.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import TransferError
from .fsutil import CHUNK, atomic_path, atomic_write, sha256_file

#: Files a workflow engine leaves in output folders: never published.
BOOKKEEPING = {".snakemake_timestamp"}

MANIFEST_FIELDS = ("file", "size", "sha256", "facility", "collection", "source_path",
                   "task_id", "transferred_at")


@dataclass
class ManifestEntry:
    """One transferred file: what it is, where it came from, which task."""

    file: str
    size: int
    sha256: str
    facility: str
    collection: str
    source_path: str
    task_id: str
    transferred_at: str


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe plain file name, else raise.

    Raises
    ------
    TransferError
        For empty names, ``.`` or ``..``, absolute paths, names containing a
        path separator, a control character or a leading dot.
    """
    if not name or name in (".", ".."):
        raise TransferError(f"refused remote name {name!r}: empty or a directory reference")
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise TransferError(f"refused remote name {name!r}: absolute path")
    if "/" in name or "\\" in name or ".." in name.split("/"):
        raise TransferError(f"refused remote name {name!r}: contains a path separator or '..'")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise TransferError(f"refused remote name {name!r}: contains a control character")
    if name.startswith("."):
        raise TransferError(f"refused remote name {name!r}: hidden file")
    return name


def write_raw_provenance(dest: Path, entry: ManifestEntry) -> None:
    """Sidecar ``<raw file>.prov.json``: where the raw copy came from."""
    from .provenance import make_record, write_sidecar

    raw = asdict(entry)
    raw.pop("file")
    write_sidecar(dest, make_record(dest, rule="ingest", raw=raw))


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Read a manifest written by :func:`write_manifest`."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [ManifestEntry(**{**r, "size": int(r["size"])}) for r in rows]


def write_manifest(path: str | Path, entries: list[ManifestEntry]) -> None:
    """Write a manifest (TSV, one row per file) atomically."""
    with atomic_write(path, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for e in entries:
            w.writerow(asdict(e))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _copy_verified(src: Path, dest: Path) -> tuple[int, str]:
    """Copy ``src`` to ``dest`` through a temporary file; verify by SHA-256.

    The copy is re-read from disk and compared with the digest of the bytes
    read from the source before it takes its final name; it is then made
    read-only.
    """
    import hashlib

    h = hashlib.sha256()
    size = 0
    with atomic_path(dest) as tmp:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            for block in iter(lambda: fin.read(CHUNK), b""):
                h.update(block)
                fout.write(block)
                size += len(block)
            fout.flush()
            os.fsync(fout.fileno())
        check = sha256_file(tmp)
        if check != h.hexdigest():
            raise TransferError(
                f"checksum mismatch after copy (source {h.hexdigest()}, copy {check})", str(dest)
            )
        os.chmod(tmp, 0o444)
    return size, h.hexdigest()


class LocalBackend:
    """A facility that is a folder on a local or mounted file system.

    Parameters
    ----------
    name : str
        The facility's name in the configuration.
    root : str or Path
        Its base folder; experiment paths are relative to it.
    """

    kind = "local"

    def __init__(self, name: str, root: str | Path):
        self.name = name
        self.root = Path(root)

    @property
    def collection(self) -> str:
        return f"local:{self.root.resolve()}"

    def list(self, path: str, pattern: str = "*") -> list[tuple[str, int]]:
        """Files (name, size) in ``path`` matching ``pattern``, sorted by name."""
        folder = self.root / path
        if not folder.is_dir():
            raise TransferError(f"no such folder at facility '{self.name}'", str(folder))
        out = []
        for entry in os.scandir(folder):
            if entry.is_file() and fnmatch.fnmatch(entry.name, pattern):
                out.append((entry.name, entry.stat().st_size))
        return sorted(out)

    def ingest(
        self,
        path: str,
        pattern: str,
        dest_dir: str | Path,
        manifest: str | Path,
        *,
        label: str | None = None,
        log=print,
    ) -> tuple[list[ManifestEntry], list[tuple[str, str]]]:
        """Copy matching files into ``dest_dir`` and write the manifest.

        ``label`` names the task in its state file (as a Globus task label).

        Returns
        -------
        entries : list of ManifestEntry
        refused : list of (name, reason)
            Files not transferred because their names are unsafe.

        Raises
        ------
        TransferError
            If the source folder is missing, nothing matches, or a copy
            fails its checksum.
        """
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        state_path = dest_dir / ".transfer.json"
        if state_path.exists():
            state = json.loads(state_path.read_text())
            log(f"resuming transfer task {state['task_id']}")
        else:
            state = {"task_id": f"local-{uuid.uuid4()}", "source": f"{self.collection}/{path}",
                     "pattern": pattern, "label": label, "submitted_at": _now()}
            with atomic_write(state_path, "w") as fh:
                json.dump(state, fh)
        files = self.list(path, pattern)
        if not files:
            raise TransferError(f"no files match '{pattern}' at facility '{self.name}'",
                                str(self.root / path))
        entries: list[ManifestEntry] = []
        refused: list[tuple[str, str]] = []
        for name, size in files:
            try:
                check_name(name)
            except TransferError as exc:
                refused.append((name, exc.reason))
                log(f"refused: {exc.reason}")
                continue
            src = self.root / path / name
            dest = dest_dir / name
            if dest.exists() and dest.stat().st_size == size:
                digest = sha256_file(dest)
                if digest == sha256_file(src):
                    entries.append(self._entry(name, size, digest, path, state, dest))
                    continue
                # A wrong copy: replace it (it is ours, made read-only).
                os.chmod(dest, 0o644)
            nbytes, digest = _copy_verified(src, dest)
            entries.append(self._entry(name, nbytes, digest, path, state, dest))
            log(f"copied {name} ({nbytes} bytes, sha256 {digest[:12]})")
        write_manifest(manifest, entries)
        return entries, refused

    def _entry(self, name, size, digest, path, state, dest):
        entry = ManifestEntry(
            file=name, size=int(size), sha256=digest, facility=self.name,
            collection=self.collection, source_path=f"{path}/{name}",
            task_id=state["task_id"],
            transferred_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(dest.stat().st_mtime)),
        )
        write_raw_provenance(dest, entry)
        return entry

    def publish(self, source: str | Path, dest: str, *, label: str | None = None,
                log=print) -> dict:
        """Copy a package folder (or one file) to ``root/dest``, checksummed.

        Relative paths are kept; every path component must be a safe name.
        Returns the record of where it went (facility, collection, path,
        task id, files with size and SHA-256).
        """
        source = Path(source)
        target = self.root / dest
        target.mkdir(parents=True, exist_ok=True)
        task_id = f"local-{uuid.uuid4()}"
        files = [source] if source.is_file() else sorted(
            p for p in source.rglob("*") if p.is_file() and p.name not in BOOKKEEPING)
        out = []
        for f in files:
            rel = Path(f.name) if source.is_file() else f.relative_to(source)
            for part in rel.parts:
                check_name(part)
            dest_file = target / rel
            if dest_file.exists():
                os.chmod(dest_file, 0o644)  # a previous publication of ours
            size, digest = _copy_verified(f, dest_file)
            out.append({"file": rel.as_posix(), "size": size, "sha256": digest})
            log(f"published {rel.as_posix()}")
        return {"facility": self.name, "collection": self.collection, "path": dest,
                "task_id": task_id, "files": out, "published_at": _now()}


def backend_for(name: str, facility: dict, *, base: str | Path = ".", config: dict | None = None,
                client=None):
    """The transfer backend of a facility block of the configuration.

    Parameters
    ----------
    name : str
        The facility's name.
    facility : dict
        Its block: ``{backend: local, path}`` or ``{backend: globus,
        collection_id, path}``.
    base : str or Path
        Folder that relative local paths are relative to.
    config : dict, optional
        The whole configuration; needed for Globus (its ``globus:`` block
        names the host facility this workflow runs on).
    client : globus_sdk.TransferClient, optional
        For Globus, a client to use instead of one authenticated from the
        environment or the user's tokens.

    Raises
    ------
    TransferError
        For an unknown backend or an incomplete Globus configuration.
    """
    kind = facility.get("backend", "local")
    if kind == "local":
        root = Path(facility["path"])
        if not root.is_absolute():
            root = Path(base) / root
        return LocalBackend(name, root)
    if kind == "globus":
        from .globus import (
            GlobusBackend,
            GlobusSettings,
            collection_from_config,
            make_app,
            transfer_client,
        )

        config = config or {}
        gblock = config.get("globus") or {}
        host_name = gblock.get("host")
        facilities = config.get("facilities", {})
        if not host_name or host_name not in facilities:
            raise TransferError(f"facility '{name}' uses Globus: set globus.host to the facility "
                                "(a Globus collection with local_path) this workflow runs on")
        host = collection_from_config(host_name, facilities[host_name], base=base)
        coll = collection_from_config(name, facility, base=base)
        settings = GlobusSettings.from_config(gblock)
        if client is None:
            consent = [c.collection_id for c in (coll, host) if c.data_access]
            client = transfer_client(make_app(settings), consent)
        return GlobusBackend(coll, host, client, settings)
    raise TransferError(f"facility '{name}': unknown transfer backend '{kind}'")


__all__ = ["LocalBackend", "ManifestEntry", "backend_for", "check_name", "read_manifest",
           "write_manifest"]
