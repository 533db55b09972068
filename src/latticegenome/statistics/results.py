"""The layout of an experiment's statistics file (``statistics.h5``): its writer and readers.

This module alone knows how the file is laid out; the aggregation writes it
through :class:`StatisticsWriter`, figures and scripts read it through
:func:`read_statistics` and :func:`image_cells`.

Layout (format version :data:`FORMAT_VERSION`, the file attribute
``format_version``; a file without it is version 1)
-------------------------------------------------------------------------
``cells/`` (format 1: a one-shot :func:`~latticegenome.statistics.aggregate.aggregate`)
    One dataset per field of :data:`latticegenome.statistics.cells.CELL_FIELDS`,
    plus ``image`` (the index of the cell's image in ``images``), ``class``
    (-1: not classified) and ``class_probability``. Cells are stored image
    after image, so the cells of one image are one slice.
``batches/`` (format 2: the workflow's map-reduce statistics)
    Instead of ``cells/``: one row per batch, ``name``, ``partition``
    (``experiment=<name>/batch=<k>``), ``cells`` and ``classes`` (the paths
    of its Parquet cell table and class table, relative to this file's
    folder); ``image_batch`` (the batch of each image of ``images``).
    :func:`image_cells` reads either layout.
``images``
    The names of the images used, in order (UTF-8 strings).
``histograms/<field>/edges``, ``histograms/<field>/counts``
    Fixed-bin histograms of ``a_pm``, ``b_pm``, ``dx_pm``, ``dy_pm`` and
    ``intensity_ratio`` over every cell.
``classes/``
    The class table (one dataset per column; empty without classes), with
    the attributes ``bic`` (JSON: BIC by number of classes) and
    ``descriptors`` (JSON list) when classes were fitted.
``layers/``, ``interfaces/``
    The per-plane layer profile of every image and the interfaces found
    (``image`` and ``material`` as UTF-8 strings).
File attributes
    ``summary`` (JSON), ``units`` (JSON), ``provenance`` (JSON, when
    recorded), ``format_version``.

Positions are in pixels, lengths in pm, strain dimensionless, angles in
degrees (the ``units`` attribute).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from latticegenome.core.errors import LatticeGenomeError
from latticegenome.core.fsutil import atomic_path
from latticegenome.statistics.cells import BOOL_FIELDS, CELL_FIELDS

#: Version of the layout written by :class:`StatisticsWriter` (1) and
#: :func:`write_summary_file` (2); the newest this module reads.
FORMAT_VERSION = 2

#: The ``units`` attribute of every statistics file.
UNITS = {"positions": "px", "lengths": "pm", "strain": "1", "angles": "deg"}

#: Columns of the row groups (``layers``, ``interfaces``) stored as names.
TEXT_COLUMNS = ("image", "material")


def read_h5_strings(dataset) -> np.ndarray:
    """The names in an HDF5 dataset (image files, materials) as an array of str.

    Names are UTF-8: variable-length UTF-8 strings since names may be
    non-ASCII, fixed-length bytes in older files; an empty dataset of any
    type gives an empty array.
    """
    import h5py

    if dataset.dtype.kind == "S" or h5py.check_string_dtype(dataset.dtype) is not None:
        return np.asarray(dataset.asstr("utf-8")[()], dtype=str).reshape(dataset.shape)
    if dataset.size == 0:
        return np.zeros(dataset.shape, dtype=str)
    raise TypeError(f"{dataset.name} holds {dataset.dtype}, not names")


def _write_names(group, name: str, values) -> None:
    """Names (image files, materials) as a dataset of UTF-8 strings."""
    import h5py

    group.create_dataset(name, data=np.array(list(values), dtype=h5py.string_dtype("utf-8")))


def _cell_dtype(name: str):
    if name in ("i", "j", "image"):
        return np.int64
    return bool if name in BOOL_FIELDS else float


class StatisticsWriter:
    """Writes the groups of a statistics file, cells appended image by image.

    Use :func:`statistics_writer` to get one on a file that appears whole
    or not at all.

    Parameters
    ----------
    h5file : h5py.File
        Open for writing, empty.
    """

    def __init__(self, h5file, fields=CELL_FIELDS):
        self.file = h5file
        self.cells = h5file.create_group("cells")
        self.fields = [*fields, "image"]
        for name in self.fields:
            self.cells.create_dataset(name, shape=(0,), maxshape=(None,), dtype=_cell_dtype(name),
                                      chunks=(65536,), compression="gzip", shuffle=True)
        self.n_cells = 0

    def append_cells(self, cells: dict, image_index: int) -> tuple[int, int]:
        """Append one image's cells; return their (start, count) in the table."""
        start, m = self.n_cells, len(cells["x"])
        for name in self.fields:
            ds = self.cells[name]
            ds.resize((start + m,))
            ds[start:] = np.full(m, image_index) if name == "image" else cells[name]
        self.n_cells += m
        return start, m

    def read_cells(self, start: int, count: int) -> dict[str, np.ndarray]:
        """The cells ``start .. start + count`` as stored (every field and ``image``)."""
        return {name: self.cells[name][start : start + count] for name in self.fields}

    def write_images(self, names) -> None:
        """The names of the images used, in the order of their index."""
        _write_names(self.file, "images", names)

    def write_histograms(self, histograms: dict) -> None:
        """Histograms: field -> object with ``edges`` and ``counts``."""
        g = self.file.create_group("histograms")
        for name, h in histograms.items():
            g.create_dataset(f"{name}/edges", data=h.edges)
            g.create_dataset(f"{name}/counts", data=h.counts)

    def start_classes(self) -> None:
        """Create ``cells/class`` and ``cells/class_probability`` for every cell."""
        self.cells.create_dataset("class", shape=(self.n_cells,), dtype=np.int64)
        self.cells.create_dataset("class_probability", shape=(self.n_cells,), dtype=float)

    def write_assignment(self, start: int, labels: np.ndarray, probability: np.ndarray) -> None:
        """The class and its probability of the cells from ``start`` on."""
        stop = start + len(labels)
        self.cells["class"][start:stop] = labels
        self.cells["class_probability"][start:stop] = probability

    def write_classes(self, table: dict, *, bic: dict | None = None, descriptors=None) -> None:
        """The class table; the BIC per number of classes and the descriptors if fitted."""
        g = self.file.create_group("classes")
        for name, arr in table.items():
            g.create_dataset(name, data=arr)
        if bic is not None:
            g.attrs["bic"] = json.dumps(bic)
            g.attrs["descriptors"] = json.dumps(list(descriptors or ()))

    def write_rows(self, group: str, rows: dict) -> None:
        """One dataset per column of ``rows`` (``layers``, ``interfaces``)."""
        g = self.file.create_group(group)
        for name, values in rows.items():
            if name in TEXT_COLUMNS:
                _write_names(g, name, values)
            else:
                g.create_dataset(name, data=np.asarray(values))

    def write_attributes(self, summary: dict, provenance: dict | None = None) -> None:
        """Summary, provenance (given with its ``output`` name), units and format version."""
        self.file.attrs["summary"] = json.dumps(summary)
        if provenance is not None:
            self.file.attrs["provenance"] = json.dumps(provenance)
        self.file.attrs["units"] = json.dumps(UNITS)
        self.file.attrs["format_version"] = 1 if "cells" in self.file else FORMAT_VERSION


@contextlib.contextmanager
def statistics_writer(path: str | Path):
    """A :class:`StatisticsWriter` on ``path``, which appears only when the body ends.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "statistics.h5"
    >>> with statistics_writer(out) as w:  # every group, here empty
    ...     w.write_images(["a.tif"])
    ...     w.write_histograms({})
    ...     w.start_classes()
    ...     w.write_classes({})
    ...     w.write_rows("layers", {})
    ...     w.write_rows("interfaces", {})
    ...     w.write_attributes({"cells": 0})
    >>> s = read_statistics(out)
    >>> s.images, s.summary, s.format_version, s.n_cells
    (['a.tif'], {'cells': 0}, 1, 0)
    """
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield StatisticsWriter(f)


# --- reading ---------------------------------------------------------------


@dataclass
class Statistics:
    """Everything of a statistics file but its cells (see :func:`image_cells`).

    Attributes
    ----------
    images : list of str
        Names of the images used; image ``k`` is ``images[k]``.
    histograms : dict
        Field -> (edges, counts).
    classes : dict of ndarray
        The class table (empty without classes).
    bic : dict or None
        BIC by number of classes (keys as str), when classes were fitted.
    layers, interfaces : dict of ndarray
        Rows of the layer profiles and of the interfaces (names as str).
    summary, units : dict
    provenance : dict or None
    n_cells : int
    format_version : int
    """

    images: list[str]
    histograms: dict
    classes: dict
    layers: dict
    interfaces: dict
    summary: dict
    units: dict = field(default_factory=dict)
    provenance: dict | None = None
    bic: dict | None = None
    descriptors: list | None = None
    n_cells: int = 0
    format_version: int = 1


def _open(path: str | Path):
    """The statistics file, open for reading, after checking its version."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise LatticeGenomeError(f"not a statistics file: {exc}", str(path)) from None
    version = int(f.attrs.get("format_version", 1))
    if version > FORMAT_VERSION:
        f.close()
        raise LatticeGenomeError(f"statistics format version {version}; this latticegenome "
                                 f"reads up to {FORMAT_VERSION}: update it", str(path))
    return f


def _read_rows(group) -> dict[str, np.ndarray]:
    return {k: read_h5_strings(group[k]) if k in TEXT_COLUMNS else group[k][()] for k in group}


def _json_attr(attrs, name, default=None):
    return json.loads(attrs[name]) if name in attrs else default


def read_statistics(path: str | Path) -> Statistics:
    """Read a statistics file, all but its cells (the cells: :func:`image_cells`).

    Raises
    ------
    LatticeGenomeError
        If the file cannot be read, lacks a group, or was written in a newer
        format version.
    """
    with _open(path) as f:
        try:
            hist = {k: (f[f"histograms/{k}/edges"][()], f[f"histograms/{k}/counts"][()])
                    for k in f["histograms"]}
            cg = f["classes"]
            return Statistics(
                images=read_h5_strings(f["images"]).tolist(), histograms=hist,
                classes={k: cg[k][()] for k in cg}, layers=_read_rows(f["layers"]),
                interfaces=_read_rows(f["interfaces"]), summary=json.loads(f.attrs["summary"]),
                units=_json_attr(f.attrs, "units", {}), provenance=_json_attr(f.attrs, "provenance"),
                bic=_json_attr(cg.attrs, "bic"), descriptors=_json_attr(cg.attrs, "descriptors"),
                n_cells=(int(f["cells/x"].shape[0]) if "cells" in f
                         else int(json.loads(f.attrs["summary"]).get("cells", 0))),
                format_version=int(f.attrs.get("format_version", 1)))
        except KeyError as exc:
            raise LatticeGenomeError(f"not a statistics file: {exc}", str(path)) from None


def write_summary_file(path: str | Path, merged, image_batch, batches: list[dict], *,
                       table: dict, layers: dict, interfaces: dict, summary: dict,
                       bic: dict | None = None, provenance: dict | None = None) -> None:
    """The statistics file of format 2 (no cell table: the batches' Parquet files).

    ``merged``: the experiment's merged
    :class:`~latticegenome.statistics.partials.Partials`; ``image_batch``: the
    batch index of each of its images; ``batches``: per batch ``name``,
    ``partition``, ``cells``, ``classes`` (paths).
    """
    import h5py

    from latticegenome.statistics.classes import DESCRIPTORS

    here = Path(path).resolve().parent
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        w = StatisticsWriter.__new__(StatisticsWriter)
        w.file, w.n_cells = f, int(merged.n_cells)
        w.write_images([n for n, _ in merged.images])
        f.create_dataset("image_batch", data=np.asarray(image_batch, np.int64))
        g = f.create_group("batches")
        for key in ("name", "partition", "cells", "classes"):
            values = [b.get(key, "") for b in batches]
            if key in ("cells", "classes"):
                values = [os.path.relpath(Path(v).resolve(), here) for v in values]
            _write_names(g, key, values)
        w.write_histograms({k: SimpleNamespace(edges=e, counts=c)
                            for k, (e, c) in merged.histograms.items()})
        w.write_classes(table, bic=bic, descriptors=DESCRIPTORS)
        w.write_rows("layers", layers)
        w.write_rows("interfaces", interfaces)
        w.write_attributes(summary, provenance)


def _parquet_of(path: Path, f, key: str, b: int) -> Path:
    """The Parquet file ``key`` of batch ``b``: as recorded, else below ``cells/``
    beside the statistics file (a published package)."""
    rel = Path(read_h5_strings(f[f"batches/{key}"])[b])
    p = path.parent / rel
    if p.exists():
        return p
    part = read_h5_strings(f["batches/partition"])[b]
    return path.parent / key / part / rel.name


def _image_cells_v2(path: Path, f, k: int) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    name = read_h5_strings(f["images"])[k]
    b = int(f["image_batch"][k])
    filt = [("image", "==", str(name))]
    cells = pq.read_table(_parquet_of(path, f, "cells", b), filters=filt)
    out = {c: cells.column(c).to_numpy(zero_copy_only=False) for c in cells.column_names
           if c not in ("image", "cell")}
    classes = _parquet_of(path, f, "classes", b)
    n = cells.num_rows
    if classes.exists():
        cl = pq.read_table(classes, filters=filt).sort_by("cell")
        out["class"] = cl.column("class").to_numpy()
        out["class_probability"] = cl.column("class_probability").to_numpy()
    else:
        out["class"], out["class_probability"] = np.full(n, -1), np.full(n, np.nan)
    out["image"] = np.full(n, k, dtype=np.int64)
    return out


def image_cells(path: str | Path, k: int) -> dict[str, np.ndarray]:
    """The cells of image ``k`` (``read_statistics(path).images[k]``), as stored.

    Every field of ``cells/`` (``class`` and ``class_probability`` included),
    one entry per cell of that image; empty arrays if it has none. Format 2
    files: read from the batch's Parquet tables.
    """
    with _open(path) as f:
        if "cells" not in f:
            return _image_cells_v2(Path(path), f, k)
        image_index = f["cells/image"][()]
        # stored image after image: one slice per image
        start, stop = np.searchsorted(image_index, [k, k + 1])
        return {name: f[f"cells/{name}"][start:stop] for name in f["cells"]}


__all__ = ["FORMAT_VERSION", "Statistics", "StatisticsWriter", "image_cells", "read_h5_strings",
           "read_statistics", "statistics_writer", "write_summary_file"]
