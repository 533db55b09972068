"""Per-image column results: HDF5 for the workflow, CSV for the command line.

This module owns both layouts (version :data:`FORMAT_VERSION`).

An HDF5 result holds the group ``columns`` (one dataset per field of
:data:`latticegenome.columns.finder.FIELDS`) and attributes: ``status`` (``ok`` or
``rejected``), ``reason`` (for rejected images), ``source`` (the image file),
``pixel_size_pm``, the lattice basis and origin (px), the image shape, the
instrument metadata, the provenance record (JSON) and ``format_version`` (a
file without it is version 1). A rejected image still gets a file, so a rerun
does not try it again and the experiment's statistics can list it with its
reason.

A CSV result is a plain CSV (the first line is the header, one row per
column: :data:`CSV_FIELDS`), readable by any CSV reader with its defaults;
its metadata (source, pixel size, basis, units, format version) is the JSON
sidecar ``<file>.json`` (:func:`csv_sidecar`). A CSV without a sidecar still
reads, with no pixel size.

Files are written atomically: they appear whole or not at all.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from latticegenome.core.errors import ImageReadError
from latticegenome.core.fsutil import atomic_path, atomic_write

if TYPE_CHECKING:  # the column finder (and its compiled kernels) is not needed to read results
    from latticegenome.columns.finder import Columns

CSV_FIELDS = ("x", "y", "site", "species", "x_err", "y_err", "amplitude", "background",
              "amplitude_err", "sigma", "i", "j", "converged", "detected", "significance")

#: Version of the layouts written here (the ``format_version`` attribute of an HDF5
#: result, the ``format_version`` of a CSV's sidecar).
FORMAT_VERSION = 1

#: Units of a CSV result (its sidecar's ``units``).
CSV_UNITS = "px (x = column index, y = row index, origin at the centre of pixel [0,0])"


def _check_version(version, path) -> int:
    """The format version of a file (1 when absent); newer ones are refused."""
    version = 1 if version is None else int(version)
    if version > FORMAT_VERSION:
        raise ImageReadError(f"column file format version {version}; this latticegenome reads up "
                             f"to {FORMAT_VERSION}: update it", path)
    return version


def write_columns_h5(
    path: str | Path,
    columns: Columns | None,
    *,
    source: str,
    pixel_size_pm: float | None,
    shape: tuple[int, int] | None = None,
    status: str = "ok",
    reason: str = "",
    metadata: dict | None = None,
    provenance: dict | None = None,
) -> None:
    """Write one image's columns (or its rejection) to HDF5, atomically."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["status"] = status
            f.attrs["reason"] = reason
            f.attrs["source"] = str(source)
            f.attrs["pixel_size_pm"] = np.nan if pixel_size_pm is None else float(pixel_size_pm)
            f.attrs["metadata"] = json.dumps(metadata or {})
            f.attrs["provenance"] = json.dumps(provenance or {})
            f.attrs["format_version"] = FORMAT_VERSION
            if shape is not None:
                f.attrs["shape"] = np.asarray(shape, dtype=np.int64)
            g = f.create_group("columns")
            if columns is not None:
                for name, arr in columns.as_dict().items():
                    arr = np.asarray(arr)
                    if arr.dtype.kind == "U":
                        arr = np.char.encode(arr, "ascii")
                    g.create_dataset(name, data=arr, compression="gzip", shuffle=True)
                g.attrs["units"] = "px"
                f.attrs["basis_px"] = columns.basis
                f.attrs["origin_px"] = columns.origin
                f.attrs["dispersion"] = columns.dispersion
                f.attrs["info"] = json.dumps(columns.info, default=float)


def read_columns(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read columns from an HDF5 or CSV result.

    Returns
    -------
    columns : dict of ndarray
        Per-column arrays (``site`` as str).
    attrs : dict
        File attributes (``status``, ``reason``, ``pixel_size_pm``,
        ``basis_px``, ``format_version`` (1 for files without it), ... ; for
        CSV what its sidecar carries).

    Raises
    ------
    ImageReadError
        If the file is not a column table, or has a newer format version.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_columns_csv(path)
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = {}
            for k, v in f.attrs.items():
                v = v.decode() if isinstance(v, bytes) else v
                if k in ("metadata", "provenance", "info"):
                    v = json.loads(v)
                attrs[k] = v
            g = f["columns"]
            cols = {k: g[k][()] for k in g}
    except (OSError, KeyError) as exc:
        raise ImageReadError(f"not a column table: {exc}", path) from None
    attrs["format_version"] = _check_version(attrs.get("format_version"), path)
    for name in ("site", "species"):
        if name in cols:
            cols[name] = np.char.decode(np.asarray(cols[name], dtype="S"), "ascii")
    return cols, attrs


def csv_sidecar(path: str | Path) -> Path:
    """The metadata sidecar of a CSV result: ``<file>.json``.

    Examples
    --------
    >>> csv_sidecar("out/cols.csv").as_posix()
    'out/cols.csv.json'
    """
    return Path(f"{path}.json")


def _csv_cell(name: str, value):
    if name in ("site", "species"):
        return str(value)
    if name in ("i", "j"):
        return int(value)
    if name in ("converged", "detected"):
        return int(bool(value))
    return f"{float(value):.6f}"


def write_columns_csv(path: str | Path, columns: Columns, *, pixel_size_pm: float | None = None,
                      source: str = "") -> None:
    """Write the columns as a plain CSV and its metadata as ``<path>.json``, atomically.

    The CSV's first line is the header (:data:`CSV_FIELDS`), then one row
    per column: positions in pixels, x = column index, y = row index, origin
    at the centre of pixel [0, 0]. The sidecar (:func:`csv_sidecar`) holds
    ``source``, ``pixel_size_pm`` (null when unknown), ``basis_px``,
    ``units``, ``fields`` and ``format_version``. Both are written to
    temporary files; the sidecar replaces its old copy once the whole CSV is
    written, and the CSV follows.

    Examples
    --------
    >>> import csv, tempfile, pathlib
    >>> from latticegenome.columns.finder import Columns
    >>> one = {k: np.zeros(1) for k in ("x", "y", "x_err", "y_err", "amplitude",
    ...        "amplitude_err", "background", "sigma")}
    >>> cols = Columns(**one, site=np.array(["A"]), species=np.array(["Sr"]),
    ...                i=np.zeros(1, int), j=np.zeros(1, int),
    ...                converged=np.ones(1, bool), detected=np.ones(1, bool),
    ...                significance=np.full(1, 50.0), basis=np.eye(2) * 20, origin=np.zeros(2),
    ...                dispersion=1.0)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "cols.csv"
    >>> write_columns_csv(out, cols, pixel_size_pm=19.5, source="a.tif")
    >>> next(csv.DictReader(open(out)))["site"]
    'A'
    >>> read_columns_csv(out)[1]["pixel_size_pm"]
    19.5
    """
    meta = {"source": str(source),
            "pixel_size_pm": None if pixel_size_pm is None else float(pixel_size_pm),
            "basis_px": np.asarray(columns.basis).tolist(), "units": CSV_UNITS,
            "fields": list(CSV_FIELDS), "format_version": FORMAT_VERSION,
            "info": json.loads(json.dumps(columns.info, default=float))}
    data = columns.as_dict()
    with atomic_write(path, "w") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(CSV_FIELDS)
        for k in range(len(columns)):
            w.writerow([_csv_cell(name, data[name][k]) for name in CSV_FIELDS])
        with atomic_write(csv_sidecar(path), "w") as side:
            json.dump(meta, side, indent=1)
            side.write("\n")


def _sidecar_attrs(path: Path) -> dict:
    """The attributes in a CSV's sidecar (none without one)."""
    side = csv_sidecar(path)
    if not side.is_file():
        return {}
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise ImageReadError("the metadata sidecar is not JSON", side) from None
    if not isinstance(meta, dict):
        raise ImageReadError("the metadata sidecar is not a JSON object", side)
    attrs = {"format_version": _check_version(meta.get("format_version"), side)}
    if meta.get("source") is not None:
        attrs["source"] = str(meta["source"])
    if meta.get("units") is not None:
        attrs["units"] = str(meta["units"])
    if isinstance(meta.get("info"), dict):
        attrs["info"] = meta["info"]
    try:
        if meta.get("pixel_size_pm") is not None:
            attrs["pixel_size_pm"] = float(meta["pixel_size_pm"])
        if meta.get("basis_px") is not None:
            attrs["basis_px"] = np.array(meta["basis_px"], dtype=float)
    except (TypeError, ValueError):
        raise ImageReadError("pixel_size_pm or basis_px in the metadata sidecar is not a number",
                             side) from None
    return attrs


def _comment_attrs(comments: list[str]) -> dict:
    """Attributes from ``# key: value`` lines (CSVs written before the sidecar)."""
    attrs: dict = {}
    for ln in comments:
        key, _, val = ln[1:].partition(":")
        key, val = key.strip(), val.strip()
        if key == "pixel_size_pm":
            attrs["pixel_size_pm"] = float(val)
        elif key == "basis_px":
            attrs["basis_px"] = np.array(json.loads(val))
        elif key == "source":
            attrs["source"] = val
    return attrs


def _csv_columns(rows: list[dict], fieldnames, path: Path) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for name in fieldnames:
        vals = [r[name] for r in rows]
        if name in ("site", "species"):
            cols[name] = np.array(vals, dtype=str)
        elif name in ("i", "j", "converged", "detected"):
            cols[name] = np.array([int(float(v)) for v in vals], dtype=np.int64)
        else:
            try:
                cols[name] = np.array([float(v) for v in vals], dtype=float)
            except ValueError:
                raise ImageReadError(f"column '{name}' is not numeric", path) from None
    return cols


def read_columns_csv(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a CSV written by :func:`write_columns_csv` (or any CSV with at least
    ``x,y,site``), with the attributes of its sidecar ``<path>.json`` when present.

    Without a sidecar the attributes have no pixel size (``# key: value``
    lines of CSVs written before the sidecar are still read).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            lines = list(fh)
    except OSError as exc:
        raise ImageReadError(f"cannot read: {exc.strerror}", path) from None
    except UnicodeDecodeError:
        raise ImageReadError("not a UTF-8 text file", path) from None
    body = [ln for ln in lines if not ln.startswith("#")]
    attrs = {"status": "ok", "format_version": 1,
             **_comment_attrs([ln for ln in lines if ln.startswith("#")]), **_sidecar_attrs(path)}
    reader = csv.DictReader(body)
    if reader.fieldnames is None or not {"x", "y", "site"} <= set(reader.fieldnames):
        raise ImageReadError("not a column table (needs at least the columns x, y, site)", path)
    return _csv_columns(list(reader), reader.fieldnames, path), attrs


__all__ = [
    "FORMAT_VERSION",
    "csv_sidecar",
    "read_columns",
    "read_columns_csv",
    "write_columns_csv",
    "write_columns_h5",
]
