"""Per-image column results: HDF5 for the workflow, CSV for the command line.

An HDF5 result holds the group ``columns`` (one dataset per field of
:data:`latticegenome.columns.finder.FIELDS`) and attributes: ``status`` (``ok`` or
``rejected``), ``reason`` (for rejected images), ``source`` (the image file),
``pixel_size_pm``, the lattice basis and origin (px), the image shape, the
instrument metadata and the provenance record (JSON). A rejected image still
gets a file, so a rerun does not try it again and the experiment's statistics
can list it with its reason.

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

CSV_FIELDS = ("x", "y", "site", "x_err", "y_err", "amplitude", "background",
              "amplitude_err", "sigma", "i", "j", "converged")


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
            if shape is not None:
                f.attrs["shape"] = np.asarray(shape, dtype=np.int64)
            g = f.create_group("columns")
            if columns is not None:
                for name, arr in columns.as_dict().items():
                    arr = np.asarray(arr)
                    if arr.dtype.kind == "U":
                        arr = arr.astype("S1")
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
        ``basis_px``, ... ; for CSV only what the header comments carry).

    Raises
    ------
    ImageReadError
        If the file is not a column table.
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
    if "site" in cols:
        cols["site"] = np.char.decode(np.asarray(cols["site"], dtype="S1"), "ascii")
    return cols, attrs


def write_columns_csv(path: str | Path, columns: Columns, *, pixel_size_pm: float | None = None,
                      source: str = "") -> None:
    """Write the columns as CSV (one row per column), atomically.

    Leading ``#`` lines record the source and the pixel size; the header
    row follows. Positions are pixels, x = column index, y = row index,
    origin at the centre of pixel [0, 0].
    """
    with atomic_write(path, "w") as fh:
        fh.write(f"# source: {source}\n")
        if pixel_size_pm is not None:
            fh.write(f"# pixel_size_pm: {pixel_size_pm:.6g}\n")
        fh.write(f"# basis_px: {json.dumps(np.asarray(columns.basis).tolist())}\n")
        fh.write("# units: px (x = column index, y = row index, origin at the centre of pixel [0,0])\n")
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(CSV_FIELDS)
        data = columns.as_dict()
        for k in range(len(columns)):
            row = []
            for name in CSV_FIELDS:
                v = data[name][k]
                if name in ("site",):
                    row.append(str(v))
                elif name in ("i", "j"):
                    row.append(int(v))
                elif name == "converged":
                    row.append(int(bool(v)))
                else:
                    row.append(f"{float(v):.6f}")
            w.writerow(row)


def read_columns_csv(path: str | Path):
    """Read a CSV written by :func:`write_columns_csv` (or any CSV with at
    least ``x,y,site``)."""
    path = Path(path)
    attrs: dict = {"status": "ok"}
    rows = []
    try:
        with open(path, newline="") as fh:
            lines = [ln for ln in fh]
    except OSError as exc:
        raise ImageReadError(f"cannot read: {exc.strerror}", path) from None
    body = []
    for ln in lines:
        if ln.startswith("#"):
            key, _, val = ln[1:].partition(":")
            key, val = key.strip(), val.strip()
            if key == "pixel_size_pm":
                attrs["pixel_size_pm"] = float(val)
            elif key == "basis_px":
                attrs["basis_px"] = np.array(json.loads(val))
            elif key == "source":
                attrs["source"] = val
        else:
            body.append(ln)
    reader = csv.DictReader(body)
    if reader.fieldnames is None or not {"x", "y", "site"} <= set(reader.fieldnames):
        raise ImageReadError("not a column table (needs at least the columns x, y, site)", path)
    rows = list(reader)
    cols: dict[str, np.ndarray] = {}
    for name in reader.fieldnames:
        vals = [r[name] for r in rows]
        if name == "site":
            cols[name] = np.array(vals, dtype=str)
        elif name in ("i", "j", "converged"):
            cols[name] = np.array([int(float(v)) for v in vals], dtype=np.int64)
        else:
            try:
                cols[name] = np.array([float(v) for v in vals], dtype=float)
            except ValueError:
                raise ImageReadError(f"column '{name}' is not numeric", path) from None
    return cols, attrs


__all__ = ["write_columns_h5", "read_columns", "write_columns_csv", "read_columns_csv"]
