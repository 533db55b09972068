"""One image file in, its refined columns out: the per-image analysis.

Used by the command line (``latticegenome columns``) and by the workflow's
per-image rule, so both give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latticegenome.columns.finder import Columns, find_columns
from latticegenome.columns.readers import Image, read_image
from latticegenome.core.errors import LatticeGenomeError


@dataclass
class FileResult:
    """Columns of every frame of one file.

    ``frames`` pairs each analysed :class:`~latticegenome.columns.readers.Image` with its
    :class:`~latticegenome.columns.finder.Columns`.
    """

    path: str
    frames: list[tuple[Image, Columns]] = field(default_factory=list)

    @property
    def pixel_size_pm(self) -> float:
        return self.frames[0][0].pixel_size_pm

    def merged(self) -> Columns:
        """All frames' columns in one table, with a ``frame`` entry in info."""
        if len(self.frames) == 1:
            return self.frames[0][1]
        parts = [c for _, c in self.frames]
        arrays = {k: np.concatenate([getattr(c, k) for c in parts]) for k in parts[0].as_dict()}
        frame = np.concatenate([np.full(len(c), k) for k, c in enumerate(parts)])
        merged = Columns(**arrays, basis=parts[0].basis, origin=parts[0].origin,
                         dispersion=float(np.mean([c.dispersion for c in parts])),
                         info={"frames": len(parts)})
        merged.info["frame"] = frame.tolist()
        return merged


def analyse_file(
    path: str | Path,
    *,
    pixel_size_pm: float | None = None,
    spacing_pm: float | None = None,
    hdf5_dataset: str | None = None,
    stack: str = "sum",
    significance: float = 5.0,
    b_search: float = 0.3,
) -> FileResult:
    """Read an image file and find its A and B columns.

    Parameters
    ----------
    path : str or Path
    pixel_size_pm : float, optional
        Used when the file has no pixel size.
    spacing_pm : float, optional
        Nominal A-A spacing (the material's lattice parameter): a hint for
        the lattice search, converted to pixels with the pixel size.
    hdf5_dataset, stack
        See :func:`latticegenome.columns.readers.read_image`.
    significance, b_search
        See :func:`latticegenome.columns.finder.find_columns`.

    Raises
    ------
    LatticeGenomeError
        Naming the file: unreadable, no pixel size, no lattice.
    """
    images = read_image(path, pixel_size_pm=pixel_size_pm, hdf5_dataset=hdf5_dataset, stack=stack)
    result = FileResult(str(path))
    for img in images:
        spacing_px = spacing_pm / img.pixel_size_pm if spacing_pm else None
        try:
            cols = find_columns(img.data, spacing_px=spacing_px, significance=significance,
                                b_search=b_search)
        except LatticeGenomeError as exc:
            where = f" (frame {img.frame})" if img.frame is not None else ""
            raise type(exc)(exc.reason + where, str(path)) from None
        result.frames.append((img, cols))
    return result
