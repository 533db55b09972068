"""Incremental ingest: an append-only manifest made of immutable increments.

Images keep arriving while an experiment runs. Each ingest lists the
facility and takes only the files not yet in the manifest: they become the
next *increment*, written once to ``increments/NNNNNN.tsv`` beside the
experiment's manifest and never changed afterwards. The manifest the
workflow reads (``manifest.tsv``) is the increments in order, each row
with its ``increment`` number, so the rows of earlier increments never
change and neither do the batches made from them
(:func:`latticegenome.columns.batch.increment_batches`): a new image costs
its own analysis, never its neighbours'.

A file of an earlier increment that changed at the facility is reported
(``refused``), never copied again or silently re-used under the same name.
A killed ingest leaves no increment file; the rerun takes the same files
again (their copies and sidecars are reused, the transfer task resumed).

:func:`refresh_listing` is the cheap check the workflow makes before it
plans: it lists the facility and rewrites a small marker file only when
the listing changed, which makes the ingest checkpoint run again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from latticegenome.core.fsutil import atomic_write
from latticegenome.ingest.manifest import ManifestEntry, read_manifest, write_manifest

logger = logging.getLogger(__name__)

#: The folder of an experiment's increments, beside its manifest.
INCREMENTS = "increments"


def increment_files(folder: str | Path) -> list[Path]:
    """The increment files of ``folder``, in order (``000000.tsv``, ``000001.tsv``, ...)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("[0-9]" * 6 + ".tsv"))


def read_increments(folder: str | Path) -> list[list[ManifestEntry]]:
    """The entries of every increment in ``folder``, in order, each row with its number.

    Raises
    ------
    ValueError
        If the increments are not numbered 0, 1, 2, ... without a gap, or a
        file appears in two of them.
    """
    out, seen = [], set()
    for k, path in enumerate(increment_files(folder)):
        if int(path.stem) != k:
            raise ValueError(f"{path}: increment {int(path.stem)} where {k} was expected "
                             "(an increment file was removed?)")
        entries = read_manifest(path)
        for e in entries:
            if e.file in seen:
                raise ValueError(f"{path}: {e.file} is already in an earlier increment")
            seen.add(e.file)
            e.increment = str(k)
        out.append(entries)
    return out


def ingest_increment(backend, path: str, pattern: str, raw_dir: str | Path,
                     manifest: str | Path, *, label: str | None = None):
    """Ingest what is new at the facility as the next increment; write the manifest.

    Parameters
    ----------
    backend : TransferBackend
        The facility (:func:`latticegenome.ingest.backends.backend_for`).
    path, pattern : str
        The experiment folder at the facility and the file pattern.
    raw_dir : path
        Where the raw copies go.
    manifest : path
        The manifest to write (all increments); the increments are kept in
        ``<its folder>/increments/``.
    label : str, optional
        The transfer task's label.

    Returns
    -------
    new : list of ManifestEntry
        The files of this increment (empty when nothing was new: no
        increment is written).
    refused : list of (name, reason)
        Files not taken, and earlier files that changed at the facility.
    entries : list of ManifestEntry
        Every row of the manifest, in order.
    """
    folder = Path(manifest).parent / INCREMENTS
    earlier = read_increments(folder)
    known = {e.file: e for inc in earlier for e in inc}
    k = len(earlier)
    new, refused = backend.ingest(path, pattern, raw_dir, None, label=label, skip=known,
                                  state_name=f".transfer-{k:06d}.json")
    new = [e for e in new if e.file not in known]
    if new:
        folder.mkdir(parents=True, exist_ok=True)
        write_manifest(folder / f"{k:06d}.tsv", new)  # once; never changed afterwards
        for e in new:
            e.increment = str(k)
        logger.info("increment %d: %d new file(s)", k, len(new))
    else:
        logger.info("nothing new at the facility (%d file(s) ingested before)", len(known))
    entries = [e for inc in earlier for e in inc] + new
    write_manifest(manifest, entries)
    return new, refused, entries


def listing_digest(files) -> str:
    """SHA-256 of a facility listing ``[(name, size)]`` (order-independent)."""
    h = hashlib.sha256()
    for name, size in sorted((str(n), int(s)) for n, s in files):
        h.update(f"{name}\t{size}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def refresh_listing(backend, path: str, pattern: str, marker: str | Path) -> bool:
    """List the facility; rewrite ``marker`` when the listing differs from its record.

    The marker is an input of the ingest checkpoint: rewritten, it makes the
    workflow ingest again (and only then). Unchanged, it is not touched.

    Returns
    -------
    bool
        True if the marker was (re)written.
    """
    files = backend.list(path, pattern)
    digest = listing_digest(files)
    marker = Path(marker)
    try:
        if json.loads(marker.read_text()).get("digest") == digest:
            return False
    except (OSError, ValueError, AttributeError):
        pass
    marker.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(marker, "w") as fh:
        json.dump({"digest": digest, "files": len(files)}, fh)
    return True


__all__ = ["INCREMENTS", "increment_files", "ingest_increment", "listing_digest",
           "read_increments", "refresh_listing"]
