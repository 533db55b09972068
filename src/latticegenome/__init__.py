"""latticegenome: a library of local lattice configurations from STEM images.

The library does the work; the Snakemake workflow in the repository calls it.
Everything here is importable and testable without Snakemake.

In a notebook, the calls are at the top (imported on first use, so that
``import latticegenome`` stays light):

- :func:`find_columns` (an array with its pixel size, or a HyperSpy
  ``Signal2D``) -> :class:`~latticegenome.api.ColumnTable`;
- :func:`measure_cells` (the columns) -> :class:`~latticegenome.api.CellTable`;
- :func:`read_image` (a file) -> a list of
  :class:`~latticegenome.columns.readers.Image`.

Examples
--------
>>> import latticegenome
>>> table = latticegenome.find_columns(data, pixel_size_pm=9.33,
...                                    zone_axis="110")  # doctest: +SKIP
>>> df = table.to_pandas()  # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("latticegenome")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

#: Names served by :mod:`latticegenome.api`, imported on first access.
_API = ("find_columns", "measure_cells", "read_image", "ColumnTable", "CellTable")

__all__ = ["CellTable", "ColumnTable", "__version__", "find_columns", "measure_cells",
           "read_image"]


def __getattr__(name: str):
    if name in _API:
        # imported by name, not by an import statement: the stages import
        # ``__version__`` from here, and must not seem to depend on the API above them
        value = getattr(import_module("latticegenome.api"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'latticegenome' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
