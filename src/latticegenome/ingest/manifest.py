"""The manifest of an experiment's raw images, and the names ingest accepts.

Every backend (:mod:`latticegenome.ingest.local`, :mod:`latticegenome.ingest.globus`)
writes one manifest row per file that arrived (:class:`ManifestEntry`: size,
SHA-256, facility, collection, source path, task, time): the record later
stages check raw copies against. Remote names are untrusted: :func:`check_name`
refuses names with ``..``, absolute paths, path separators, control
characters, leading dots or bytes that are not UTF-8; messages show a name
through :func:`display_name`, so a hostile name cannot break a log line or a
TSV row. Refused files are listed with :func:`write_refused`.

This module owns both layouts (the manifest TSV, :data:`MANIFEST_FIELDS`, and
the refused list, :data:`REFUSED_FIELDS`) and the ``raw`` record of a raw
copy's sidecar (:func:`record_copy`, :func:`read_raw_provenance`): nothing
else writes or parses them by hand.
"""

from __future__ import annotations

import csv
import io
import json
import time
import unicodedata
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from latticegenome.core.errors import TransferError
from latticegenome.core.fsutil import atomic_write
from latticegenome.core.records import SIDECAR, make_record, write_sidecar

#: Files a workflow engine leaves in output folders: never published.
BOOKKEEPING = {".snakemake_timestamp"}

MANIFEST_FIELDS = ("file", "size", "sha256", "facility", "collection", "source_path",
                   "task_id", "transferred_at", "source_mtime_ns", "increment")

#: Columns of a list of refused files (``rejected.tsv``).
REFUSED_FIELDS = ("file", "reason")

#: Characters shown escaped besides control characters: line and paragraph
#: separators and the bidirectional overrides (which reorder a displayed line).
_ESCAPED = set("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SHORT = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


@dataclass
class ManifestEntry:
    """One transferred file: what it is, where it came from, which task.

    ``source_mtime_ns`` is the facility original's modification time (ns,
    as text) when it was read; empty for manifests written before it was
    recorded and for backends that do not know it (Globus). ``increment``
    is the ingest increment (0, 1, ...) that brought the file
    (:mod:`latticegenome.ingest.increments`); empty in an increment's own
    file and in manifests written before increments existed (read as 0).
    """

    file: str
    size: int
    sha256: str
    facility: str
    collection: str
    source_path: str
    task_id: str
    transferred_at: str
    source_mtime_ns: str = ""
    increment: str = ""


def _escape_char(c: str) -> str:
    if c == "\\":
        return "\\\\"
    if c in _SHORT:
        return _SHORT[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(c) in ("Cc", "Cs") or c in _ESCAPED:
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return c


def display_name(name: str) -> str:
    r"""``name`` safe to print on one line or in one TSV cell.

    Backslashes and control characters are escaped (``\\``, ``\n``,
    ``\t``, ``\x01``, ``\u2028``; a byte that is not UTF-8 as ``\xff``);
    any other character, Unicode included (µ, Å, ü), is kept.

    Examples
    --------
    >>> display_name("scan\n01\x01µm.tif")
    'scan\\n01\\x01µm.tif'
    """
    return "".join(_escape_char(c) for c in str(name))


def _one_line(text: str) -> str:
    """``text`` with control characters escaped (backslashes kept as they are)."""
    return "".join(c if c == "\\" else _escape_char(c) for c in str(text))


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe plain file name, else raise.

    Raises
    ------
    TransferError
        For empty names, ``.`` or ``..``, absolute paths, names containing a
        path separator, a control character (C0, C1, line separators) or a
        byte that is not UTF-8, and names with a leading dot. The message
        shows the name through :func:`display_name`.
    """
    shown = f"refused remote name '{display_name(name)}'"
    if not name or name in (".", ".."):
        raise TransferError(f"{shown}: empty or a directory reference")
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise TransferError(f"{shown}: absolute path")
    if "/" in name or "\\" in name or ".." in name.split("/"):
        raise TransferError(f"{shown}: contains a path separator or '..'")
    if any(_escape_char(c) != c for c in name):
        raise TransferError(f"{shown}: contains a control character or a byte that is not UTF-8")
    if name.startswith("."):
        raise TransferError(f"{shown}: hidden file")
    return name


def write_refused(path: str | Path, refused) -> None:
    """Write the refused files as a TSV (``file``, ``reason``), atomically.

    Always written: a header only when nothing was refused. Names are shown
    through :func:`display_name` and reasons have their control characters
    escaped, so every file is one row.

    Parameters
    ----------
    path : str or Path
    refused : iterable of (name, reason)
    """
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(REFUSED_FIELDS)
    for name, reason in refused:
        w.writerow((display_name(name), _one_line(reason)))
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue().encode("utf-8"))


def read_refused(path: str | Path) -> list[tuple[str, str]]:
    """The (file, reason) rows of a list written by :func:`write_refused`.

    Names are returned in their display form, as written.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [(r["file"], r["reason"]) for r in rows]


def raw_record(entry: ManifestEntry) -> dict:
    """The ``raw`` record of a provenance record: a manifest row without its file name."""
    raw = asdict(entry)
    raw.pop("file")
    return raw


def write_raw_provenance(dest: Path, entry: ManifestEntry) -> None:
    """Sidecar ``<raw file>.prov.json``: where the raw copy came from."""
    write_sidecar(dest, make_record(dest, rule="ingest", raw=raw_record(entry)))


def read_raw_provenance(dest: Path) -> ManifestEntry | None:
    """The ingest record in a raw copy's ``.prov.json`` sidecar; None if unreadable."""
    side = Path(str(dest) + SIDECAR)
    try:
        raw = json.loads(side.read_text())["raw"]
        return _entry_from(raw, file=Path(dest).name)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_copy(dest: Path, *, size: int, sha256: str, facility: str, collection: str,
                source_path: str, task_id: str, source_mtime_ns: str = "") -> ManifestEntry:
    """The manifest entry of a raw copy that arrived at ``dest``; its sidecar is written.

    ``transferred_at`` is the copy's modification time (UTC).

    Parameters
    ----------
    dest : Path
        The raw copy (its name is the entry's ``file``).
    size : int
        Bytes.
    sha256, facility, collection, source_path, task_id, source_mtime_ns : str
        The other columns of :data:`MANIFEST_FIELDS`.
    """
    entry = ManifestEntry(
        file=dest.name, size=int(size), sha256=sha256, facility=facility,
        collection=collection, source_path=source_path, task_id=task_id,
        transferred_at=timestamp(dest.stat().st_mtime), source_mtime_ns=source_mtime_ns)
    write_raw_provenance(dest, entry)
    return entry


def _entry_from(row: dict, **override) -> ManifestEntry:
    """A ManifestEntry from a manifest row or a sidecar's ``raw`` record;
    columns it does not know are ignored, optional ones may be missing."""
    known = {f.name for f in fields(ManifestEntry)}
    values = {k: ("" if v is None else v) for k, v in {**row, **override}.items() if k in known}
    values["size"] = int(values["size"])
    values["source_mtime_ns"] = str(values.get("source_mtime_ns", ""))
    values["increment"] = str(values.get("increment", ""))
    return ManifestEntry(**values)


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Read a manifest written by :func:`write_manifest`.

    Manifests written before ``source_mtime_ns`` existed read with it empty.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [_entry_from(r) for r in rows]


def manifest_index(path: str | Path) -> dict[str, tuple[int, str]]:
    """``{file: (size in bytes, sha256)}`` of a manifest, in its order.

    What workflow planning needs of a manifest, read without building a
    :class:`ManifestEntry` per row (fast for tens of thousands of images).
    """
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["file"]: (int(row["size"]), row["sha256"])
                for row in csv.DictReader(fh, delimiter="\t")}


def manifest_increments(path: str | Path) -> list[tuple[str, int]]:
    """``[(file, increment)]`` of a manifest, in its order (an empty increment: 0).

    What the batches of the workflow are made from
    (:func:`latticegenome.columns.batch.increment_batches`).
    """
    with open(path, newline="", encoding="utf-8") as fh:
        return [(row["file"], int(row.get("increment") or 0))
                for row in csv.DictReader(fh, delimiter="\t")]


def write_manifest(path: str | Path, entries: list[ManifestEntry]) -> None:
    """Write a manifest (TSV, one row per file) atomically."""
    with atomic_write(path, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for e in entries:
            w.writerow(asdict(e))


def timestamp(seconds: float | None = None) -> str:
    """A time as the manifest and the transfer records write it (ISO 8601, UTC).

    Examples
    --------
    >>> timestamp(0)
    '1970-01-01T00:00:00Z'
    """
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _now() -> str:
    return timestamp()


def _warn_log_ignored(log, call: str, logger: str) -> None:
    """Warn (DeprecationWarning, at the caller's caller) that ``call(log=...)`` is ignored.

    Shared by the ingest modules: their progress goes to ``logger`` now.
    """
    if log is not None:
        warnings.warn(f"{call}(log=...) is deprecated and ignored: progress goes to the logger "
                      f"{logger!r}", DeprecationWarning, stacklevel=3)


def publishable_files(source: str | Path) -> list[tuple[Path, Path]]:
    """The files of a package folder (or one file) to publish, with their paths in it.

    Workflow bookkeeping (:data:`BOOKKEEPING`) is left out; every path
    component must be a safe name (:func:`check_name`), checked for all
    files before any is sent.

    Returns
    -------
    list of (file, relative path)
        Sorted by file; a single file's relative path is its name.
    """
    source = Path(source)
    if source.is_file():
        pairs = [(source, Path(source.name))]
    else:
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.name not in BOOKKEEPING)
        pairs = [(f, f.relative_to(source)) for f in files]
    for _, rel in pairs:
        for part in rel.parts:
            check_name(part)
    return pairs


