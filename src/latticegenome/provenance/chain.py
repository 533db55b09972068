"""The chain from a result back to its raw images.

:func:`trace` follows the inputs of a provenance record (see
:mod:`latticegenome.core.records`) back to the raw copies, compares each input
with the checksum recorded when it was used and each raw copy with its
manifest row (the record of what arrived); :func:`chain_problems` lists what
changed or is missing, :func:`format_chain` prints it."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from latticegenome.core.fsutil import sha256_file
from latticegenome.core.records import SIDECAR
from latticegenome.ingest.manifest import raw_record, read_manifest


def _manifest_of(p: Path) -> Path | None:
    """``../manifest.tsv`` of a raw copy (a file in a ``raw/`` folder); None otherwise."""
    manifest = p.parent.parent / "manifest.tsv"
    return manifest if p.parent.name == "raw" and manifest.is_file() else None


@lru_cache(maxsize=8)
def _manifest_rows(manifest: str, mtime_ns: int) -> dict:
    """{file name: ManifestEntry} of a manifest (cached while the file is unchanged)."""
    return {e.file: e for e in read_manifest(manifest)}


def _manifest_entry(p: Path):
    """(manifest path, its row for ``p`` or None), or None if ``p`` is not a raw copy."""
    manifest = _manifest_of(p)
    if manifest is None:
        return None
    rows = _manifest_rows(str(manifest), manifest.stat().st_mtime_ns)
    return manifest, rows.get(p.name)


def _from_manifest(p: Path) -> dict | None:
    """Record of a raw copy from its experiment's manifest (``../manifest.tsv``),
    for copies made before raw sidecars were written."""
    found = _manifest_entry(p)
    if found is None or found[1] is None:
        return None
    manifest, e = found
    return {"output": p.name, "rule": "ingest", "raw": raw_record(e), "inputs": [],
            "software": {}, "params": {}, "from": str(manifest)}


def read_record(path: str | os.PathLike) -> dict | None:
    """The provenance record of a file: HDF5 attribute or sidecar (for a raw
    copy without one, its manifest entry); None if none."""
    p = Path(path)
    side = Path(str(p) + SIDECAR)
    if side.exists():
        return json.loads(side.read_text())
    manifest_record = _from_manifest(p)
    if manifest_record is not None:
        return manifest_record
    if p.suffix.lower() in (".h5", ".hdf5") and p.exists():
        import h5py

        try:
            with h5py.File(p, "r") as f:
                rec = f.attrs.get("provenance")
        except OSError:
            return None
        if rec:
            rec = rec.decode() if isinstance(rec, bytes) else rec
            return json.loads(rec) or None
    return None


def _digest(p: Path, digests: dict) -> str:
    """SHA-256 of a file, computed once per trace."""
    key = str(p.resolve())
    if key not in digests:
        digests[key] = sha256_file(p)
    return digests[key]


def ingest_check(p: Path, digests: dict | None = None) -> dict:
    """Compare a raw copy with its manifest row (size, then SHA-256).

    Returns
    -------
    dict
        ``changed_since_ingest``: True when the file differs from what
        arrived (or has no row), False when it matches, None when ``p`` is
        not a raw copy or is gone; ``ingest``: the manifest and its recorded
        ``sha256`` and ``size`` (None for files that are not raw copies).
    """
    found = _manifest_entry(p) if p.is_file() else None
    if found is None:
        return {"changed_since_ingest": None, "ingest": None}
    manifest, row = found
    info = {"manifest": str(manifest), "sha256": getattr(row, "sha256", None),
            "size": getattr(row, "size", None)}
    if row is None:
        return {"changed_since_ingest": True, "ingest": info}
    digests = {} if digests is None else digests
    changed = p.stat().st_size != row.size or _digest(p, digests) != row.sha256
    return {"changed_since_ingest": changed, "ingest": info}


def trace(path: str | os.PathLike, *, _seen=None, _digests=None) -> dict:
    """The chain from a file back to the raw images, as nested records.

    Each node is ``{"file", "record", "inputs": [nodes], "checksum_ok",
    "changed_since_ingest", "ingest"}``; ``checksum_ok`` tells whether an
    input still has the checksum recorded when the output was made (None
    when the file is gone; absent on the first node); ``changed_since_ingest``
    whether a raw copy differs from its manifest row (see :func:`ingest_check`).
    """
    p = Path(path)
    seen = _seen if _seen is not None else set()
    digests = _digests if _digests is not None else {}
    node = {"file": str(p), "record": read_record(p), "inputs": [], **ingest_check(p, digests)}
    key = str(p.resolve()) if p.exists() else str(p)
    if key in seen or node["record"] is None:
        return node
    seen.add(key)
    base = Path.cwd()
    for entry in node["record"].get("inputs", []):
        ip = Path(entry["path"])
        if not ip.is_absolute() and not ip.exists():
            ip = base / ip
        child = trace(ip, _seen=seen, _digests=digests)
        child["checksum_ok"] = (_digest(ip, digests) == entry["sha256"]) if ip.is_file() else None
        node["inputs"].append(child)
    return node


def _problem(node: dict) -> str | None:
    """What is wrong with one node of a chain (None if nothing)."""
    if node.get("changed_since_ingest"):
        ing = node.get("ingest") or {}
        if ing.get("sha256") is None:
            return f"raw copy not in {ing.get('manifest')}"
        return f"raw copy CHANGED since ingest (manifest {ing.get('manifest')})"
    if node.get("checksum_ok") is False:
        return "CHANGED since its consumer was made"
    if "checksum_ok" in node and node["checksum_ok"] is None:
        return "missing"
    return None


def chain_problems(chain: dict) -> list[str]:
    """``<file>: <problem>`` for every file in a chain that changed or is missing."""
    out = []

    def walk(n):
        problem = _problem(n)
        if problem:
            out.append(f"{n['file']}: {problem}")
        for c in n.get("inputs", []):
            walk(c)

    walk(chain)
    return list(dict.fromkeys(out))


def raw_sources(chain: dict) -> list[dict]:
    """Every raw-image entry reached by a chain (facility, path, checksum, task)."""
    out = []

    def walk(n, instrument=None):
        rec = n.get("record") or {}
        instrument = rec.get("instrument") or instrument
        if "raw" in rec:
            out.append({**rec["raw"], "file": n["file"], "instrument": instrument or {}})
        for c in n.get("inputs", []):
            # the instrument read from an image belongs to that raw image
            walk(c, instrument if "raw" in (c.get("record") or {}) else None)

    walk(chain)
    # the same raw image may be reached along several paths
    unique = {}
    for r in out:
        unique[(r.get("collection"), r.get("source_path"), r.get("sha256"))] = r
    return list(unique.values())


def _ingest_line(ing: dict) -> str:
    """What the manifest recorded for a changed raw copy."""
    if not ing.get("sha256"):
        return f"ingest: not in {ing.get('manifest')}"
    return (f"ingest: {ing.get('manifest')} records sha256 {str(ing['sha256'])[:16]} "
            f"size {ing.get('size')}")


def format_chain(chain: dict, indent: int = 0) -> str:
    """Human-readable chain, one file per line, then its raw images."""
    lines = []

    def walk(n, depth):
        rec = n.get("record") or {}
        ok = n.get("checksum_ok")
        mark = "" if ok is None and depth == 0 else (" [checksum ok]" if ok else
                                                       " [CHANGED since]" if ok is False else " [missing]")
        if n.get("changed_since_ingest"):
            mark += " [CHANGED since ingest]"
        sw = rec.get("software", {})
        if not rec:
            what = "no provenance record"
        elif rec.get("from"):
            what = f"rule {rec.get('rule')} (record from {rec['from']})"
        else:
            what = (f"rule {rec.get('rule')}, latticegenome {sw.get('latticegenome')}, "
                    f"commit {str(sw.get('git_commit'))[:12]}{'+dirty' if sw.get('git_dirty') else ''}")
        lines.append(f"{'  ' * depth}{n['file']}{mark}: {what}")
        if rec.get("raw"):
            raw = rec["raw"]
            lines.append(f"{'  ' * depth}  raw image: {raw.get('collection')}/{raw.get('source_path')} "
                         f"sha256 {str(raw.get('sha256'))[:16]} task {raw.get('task_id')}")
        if n.get("changed_since_ingest"):
            lines.append(f"{'  ' * depth}  {_ingest_line(n.get('ingest') or {})}")
        if rec.get("instrument"):
            inst = ", ".join(f"{k} {v}" for k, v in rec["instrument"].items())
            lines.append(f"{'  ' * depth}  instrument: {inst}")
        for c in n.get("inputs", []):
            if depth < 1 or c.get("record") or _problem(c):
                walk(c, depth + 1)

    walk(chain, indent)
    return "\n".join(lines)
