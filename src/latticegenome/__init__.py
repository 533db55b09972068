"""latticegenome: a library of local lattice configurations from STEM images.

The library does the work; the Snakemake workflow in the repository calls it.
Everything here is importable and testable without Snakemake.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("latticegenome")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
