"""Map side of the experiment statistics: one batch of images -> its cell table
and its mergeable partial summaries.

:func:`measure_batch` runs where the columns are (one job per column-finding
batch): it measures the cells of each image of the batch, writes them as a
Parquet table (:data:`CELL_SCHEMA` columns: every cell field, ``image`` and
``cell``, the cell's index in its image) and writes the batch's *partials*:
fixed-bin histograms, running moments, the images' rows of ``images.tsv``,
the rejected images, and a sample of descriptor rows. The experiment-level
step (:mod:`latticegenome.statistics.incremental`) only merges partials, so
its cost grows with the number of batches, not of cells.

The sample is mergeable exactly: each cell gets a pseudo-random key from its
image's name and its index (:func:`cell_keys`), and a sample is the cells
with the smallest keys. The smallest keys of a union are among the smallest
of each part, so the merged sample of any split of the images into batches
(one-shot or in increments) is the same set of cells.

Cell tables are written to ``<root>/experiment=<name>/batch=<k>/cells.parquet``
(Hive partitioning: ``pyarrow.dataset.dataset(root, partitioning="hive")``,
DuckDB's ``read_parquet('<root>/*/*/*.parquet', hive_partitioning=true)`` and
Spark read them as one table).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latticegenome.core.fsutil import atomic_path, atomic_write
from latticegenome.statistics.cells import BOOL_FIELDS, CELL_FIELDS
from latticegenome.statistics.classes import DESCRIPTORS, descriptor_matrix

logger = logging.getLogger(__name__)

#: Version of the partials layout written by :func:`write_partials`.
PARTIALS_VERSION = 1

#: Fields with running moments (count, mean, M2) in the partials.
MOMENT_FIELDS = ("a_pm", "b_pm", "dx_pm", "dy_pm", "intensity_ratio")

#: Cells sampled for the class model (the experiment's and each batch's).
SAMPLE_SIZE = 20000


def cell_keys(image: str, n: int, seed: int = 0) -> np.ndarray:
    """Uniform keys in [0, 1) for the ``n`` cells of ``image``: the sample order.

    Deterministic: the same image name, cell count and seed give the same
    keys on every machine and in every batch.

    Examples
    --------
    >>> k = cell_keys("a.tif", 3)
    >>> k.shape, bool((k >= 0).all() and (k < 1).all()), bool((k == cell_keys("a.tif", 3)).all())
    ((3,), True, True)
    """
    digest = hashlib.sha256(f"{seed}\0{image}".encode("utf-8", "surrogatepass")).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return rng.random(n)


def merge_moments(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge two running moments ``[count, mean, M2]`` (Chan et al.).

    Examples
    --------
    >>> x = np.arange(10.0)
    >>> m = merge_moments(moments(x[:3]), moments(x[3:]))
    >>> bool(np.allclose(m, moments(x)))
    True
    """
    na, ma, qa = a
    nb, mb, qb = b
    n = na + nb
    if n == 0:
        return np.zeros(3)
    d = mb - ma
    return np.array([n, ma + d * nb / n, qa + qb + d * d * na * nb / n])


def moments(values) -> np.ndarray:
    """``[count, mean, M2]`` of the finite values."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.zeros(3)
    m = float(v.mean())
    return np.array([v.size, m, float(((v - m) ** 2).sum())])


@dataclass
class Sample:
    """Descriptor rows with their keys and images: the cells of smallest key."""

    rows: np.ndarray = field(default_factory=lambda: np.empty((0, len(DESCRIPTORS))))
    keys: np.ndarray = field(default_factory=lambda: np.empty(0))
    images: list = field(default_factory=list)

    def add(self, rows, keys, images, size: int = SAMPLE_SIZE) -> None:
        """Offer rows; keep the ``size`` of smallest key (ties: by image name)."""
        rows = np.vstack([self.rows, np.asarray(rows, float).reshape(-1, len(DESCRIPTORS))])
        keys = np.concatenate([self.keys, np.asarray(keys, float)])
        images = list(self.images) + list(images)
        if len(keys) > size:
            keep = np.lexsort((np.array(images, dtype=object).astype(str), keys))[:size]
            keep.sort()
            rows, keys, images = rows[keep], keys[keep], [images[k] for k in keep]
        self.rows, self.keys, self.images = rows, keys, images


@dataclass
class Partials:
    """Mergeable summaries of some images (a batch, or merged batches).

    Attributes
    ----------
    histograms : dict
        Field -> (edges, counts) with the experiment's fixed bins.
    moments : dict
        Field -> ``[count, mean, M2]`` over the cells.
    rows : dict of list
        Their rows of images.tsv.
    rejected : dict of list
        ``file``, ``source``, ``reason`` of the images set aside.
    sample : Sample
    n_cells : int
    images : list of (name, n_cells)
        The images used, in order, with their cell counts.
    classifiable : int
        Cells with every descriptor and a detected B (the sample's population).
    params : list of str
        Fingerprints of the parameters the cells were measured with (one per
        batch setting: a class model fitted on other cells is refitted).
    """

    histograms: dict
    moments: dict = field(default_factory=lambda: {k: np.zeros(3) for k in MOMENT_FIELDS})
    rows: dict = field(default_factory=dict)
    rejected: dict = field(default_factory=lambda: {"file": [], "source": [], "reason": []})
    sample: Sample = field(default_factory=Sample)
    n_cells: int = 0
    images: list = field(default_factory=list)
    classifiable: int = 0
    params: list = field(default_factory=list)

    def merge(self, other: "Partials", *, sample_size: int = SAMPLE_SIZE) -> None:
        """Add ``other`` (another batch, later in order) to these partials."""
        for name, (edges, counts) in other.histograms.items():
            mine = self.histograms.setdefault(name, (edges, np.zeros_like(counts)))
            if not np.array_equal(mine[0], edges):
                raise ValueError(f"histogram {name}: the batches were binned differently "
                                 "(a changed nominal lattice parameter?): rerun their statistics")
            self.histograms[name] = (edges, mine[1] + counts)
        for name, m in other.moments.items():
            self.moments[name] = merge_moments(self.moments.get(name, np.zeros(3)), m)
        for target, part in ((self.rows, other.rows), (self.rejected, other.rejected)):
            for name, values in part.items():
                target.setdefault(name, []).extend(values)
        self.sample.add(other.sample.rows, other.sample.keys, other.sample.images, sample_size)
        self.n_cells += other.n_cells
        self.images.extend(other.images)
        self.classifiable += other.classifiable
        self.params = sorted(set(self.params) | set(other.params))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value)} is not JSON")


def write_partials(path: str | Path, partials: Partials, meta: dict | None = None) -> None:
    """Write partials to ``path`` (``.npz``), whole or not at all."""
    arrays = {f"hist/{k}/edges": e for k, (e, _) in partials.histograms.items()}
    arrays |= {f"hist/{k}/counts": c for k, (_, c) in partials.histograms.items()}
    arrays |= {f"moments/{k}": m for k, m in partials.moments.items()}
    arrays |= {"sample/rows": partials.sample.rows, "sample/keys": partials.sample.keys}
    text = {"version": PARTIALS_VERSION, "rows": partials.rows, "rejected": partials.rejected,
            "sample_images": partials.sample.images, "n_cells": partials.n_cells,
            "classifiable": partials.classifiable,
            "images": partials.images, "meta": meta or {}}
    arrays["json"] = np.frombuffer(json.dumps(text, default=_json_default, allow_nan=True)
                                   .encode(), dtype=np.uint8)
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)


def read_partials(path: str | Path) -> tuple[Partials, dict]:
    """Partials written by :func:`write_partials`, and their ``meta``."""
    with np.load(path) as z:
        text = json.loads(bytes(z["json"]).decode())
        if text.get("version", 0) > PARTIALS_VERSION:
            raise ValueError(f"{path}: partials version {text['version']}; this latticegenome "
                             f"reads up to {PARTIALS_VERSION}")
        names = {k.split("/")[1] for k in z.files if k.startswith("hist/")}
        hist = {k: (z[f"hist/{k}/edges"], z[f"hist/{k}/counts"]) for k in sorted(names)}
        mom = {k.split("/")[1]: z[k] for k in z.files if k.startswith("moments/")}
        sample = Sample(z["sample/rows"].reshape(-1, len(DESCRIPTORS)), z["sample/keys"],
                        list(text["sample_images"]))
    meta = text.get("meta", {})
    p = Partials(hist, mom, text["rows"], text["rejected"], sample, int(text["n_cells"]),
                 [tuple(x) for x in text["images"]], int(text.get("classifiable", 0)),
                 [meta["cells_params"]] if meta.get("cells_params") else [])
    return p, meta


# --------------------------------------------------------------------------- the cell table


def cell_schema():
    """The Arrow schema of a cell table: the cell fields, ``image``, ``cell``."""
    import pyarrow as pa

    def kind(name):
        if name in ("i", "j", "u", "v"):
            return pa.int64()
        return pa.bool_() if name in BOOL_FIELDS else pa.float64()

    return pa.schema([pa.field("image", pa.string()), pa.field("cell", pa.int32()),
                      *(pa.field(n, kind(n)) for n in CELL_FIELDS)])


def write_cell_table(path: str | Path, per_image: list[tuple[str, dict]]) -> None:
    """Write the cells of some images as one Parquet file, whole or not at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = cell_schema()
    cols = {"cell": []} | {n: [] for n in CELL_FIELDS}
    names: list[str] = []  # a list of str, not an object array (that would import pandas)
    for name, cells in per_image:
        n = len(cells["x"])
        names += [name] * n
        cols["cell"].append(np.arange(n, dtype=np.int32))
        for f in CELL_FIELDS:
            cols[f].append(np.asarray(cells[f]))
    arrays = [pa.array(names, type=pa.string())] + [
        pa.array(np.concatenate(cols[f.name]) if cols[f.name] else [], type=f.type)
        for f in list(schema)[1:]]
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), tmp, compression="zstd")


def read_cell_table(path: str | Path, image: str | None = None) -> dict[str, np.ndarray]:
    """The cells of a cell table (of one image when given), as arrays by field."""
    import pyarrow.parquet as pq

    filters = [("image", "==", image)] if image is not None else None
    table = pq.read_table(path, filters=filters)
    out = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names
           if name != "image"}
    out["image"] = np.array(table.column("image").to_pylist(), dtype=object)
    return out


def add_image(partials: Partials, name: str, cells: dict, *, seed: int = 0,
              sample_size: int = SAMPLE_SIZE) -> None:
    """Add one usable image's cells to ``partials`` (its row of images.tsv aside)."""
    for field_name, (edges, counts) in partials.histograms.items():
        v = np.asarray(cells[field_name], float)
        partials.histograms[field_name] = (edges, counts + np.histogram(v[np.isfinite(v)], edges)[0])
    for field_name in MOMENT_FIELDS:
        partials.moments[field_name] = merge_moments(partials.moments[field_name],
                                                     moments(cells[field_name]))
    x, ok = descriptor_matrix(cells)
    keys = cell_keys(name, len(x), seed)
    partials.sample.add(x[ok], keys[ok], [name] * int(ok.sum()), sample_size)
    partials.n_cells += len(cells["x"])
    partials.images.append((name, len(cells["x"])))
    partials.classifiable += int(ok.sum())


__all__ = ["MOMENT_FIELDS", "PARTIALS_VERSION", "Partials", "SAMPLE_SIZE", "Sample", "add_image",
           "cell_keys", "cell_schema", "merge_moments", "moments", "read_cell_table",
           "read_partials", "write_cell_table", "write_partials"]
