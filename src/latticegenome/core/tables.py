"""Small tables (dict of equal-length arrays) to CSV/TSV, atomically."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from latticegenome.core.fsutil import atomic_write


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{float(v):.6g}"
    return str(v)


def write_table_csv(path: str | Path, table: dict, fields=None, *, delimiter: str = ",") -> None:
    """Write columns ``fields`` of ``table`` (default: all) as CSV/TSV.

    NaN is written as an empty cell.
    """
    fields = list(fields or table.keys())
    n = len(next(iter(table.values()))) if table else 0
    with atomic_write(path, "w") as fh:
        w = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
        w.writerow(fields)
        cols = [np.asarray(table[f]) for f in fields]
        for k in range(n):
            w.writerow([_fmt(c[k]) for c in cols])


def read_table(path: str | Path, *, delimiter: str | None = None) -> list[dict[str, str]]:
    """Read a CSV/TSV with a header row into a list of dicts."""
    path = Path(path)
    if delimiter is None:
        delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))
