"""The manifest of an experiment's raw images, and the names ingest accepts.

Every backend (:mod:`latticegenome.ingest.local`, :mod:`latticegenome.ingest.globus`)
writes one manifest row per file that arrived (:class:`ManifestEntry`: size,
SHA-256, facility, collection, source path, task, time): the record later
stages check raw copies against. Remote names are untrusted: :func:`check_name`
refuses names with ``..``, absolute paths, path separators, control
characters, leading dots or bytes that are not UTF-8; messages show a name
through :func:`display_name`, so a hostile name cannot break a log line or a
TSV row. Refused files are listed with :func:`write_refused`.
"""

from __future__ import annotations

import csv
import io
import time
import unicodedata
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from latticegenome.core.errors import TransferError
from latticegenome.core.fsutil import atomic_write

#: Files a workflow engine leaves in output folders: never published.
BOOKKEEPING = {".snakemake_timestamp"}

MANIFEST_FIELDS = ("file", "size", "sha256", "facility", "collection", "source_path",
                   "task_id", "transferred_at", "source_mtime_ns")

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
    recorded and for backends that do not know it (Globus).
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


def write_raw_provenance(dest: Path, entry: ManifestEntry) -> None:
    """Sidecar ``<raw file>.prov.json``: where the raw copy came from."""
    from latticegenome.core.records import make_record, write_sidecar

    raw = asdict(entry)
    raw.pop("file")
    write_sidecar(dest, make_record(dest, rule="ingest", raw=raw))


def _entry_from(row: dict, **override) -> ManifestEntry:
    """A ManifestEntry from a manifest row or a sidecar's ``raw`` record;
    columns it does not know are ignored, optional ones may be missing."""
    known = {f.name for f in fields(ManifestEntry)}
    values = {k: ("" if v is None else v) for k, v in {**row, **override}.items() if k in known}
    values["size"] = int(values["size"])
    values["source_mtime_ns"] = str(values.get("source_mtime_ns", ""))
    return ManifestEntry(**values)


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Read a manifest written by :func:`write_manifest`.

    Manifests written before ``source_mtime_ns`` existed read with it empty.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [_entry_from(r) for r in rows]


def write_manifest(path: str | Path, entries: list[ManifestEntry]) -> None:
    """Write a manifest (TSV, one row per file) atomically."""
    with atomic_write(path, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for e in entries:
            w.writerow(asdict(e))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


