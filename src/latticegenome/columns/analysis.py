"""One image file in, its refined columns out: the per-image analysis.

Used by the command line (``latticegenome columns``) and by the workflow's
per-image rule, so both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latticegenome.columns.finder import Columns, find_columns
from latticegenome.columns.projection import expected_contrast, projection_for
from latticegenome.columns.readers import Image, read_image
from latticegenome.core.errors import LatticeGenomeError
from latticegenome.core.settings import AnalysisSettings


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


def analyse_file(path: str | Path, settings: AnalysisSettings | Mapping | None = None,
                 **overrides) -> FileResult:
    """Read an image file and find its A and B columns.

    Parameters
    ----------
    path : str or Path
    settings : AnalysisSettings, mapping or None
        How to read and analyse the file (``pixel_size_pm``, used when the file
        has no pixel size; ``spacing_pm``, the nominal A-A spacing, a hint for
        the lattice search converted to pixels with the pixel size;
        ``hdf5_dataset``; ``stack``; ``significance``; ``b_search``). A plain
        dict is checked by the model; None: the defaults.
    **overrides
        Any field of :class:`~latticegenome.core.settings.AnalysisSettings` by
        name, replacing the one of ``settings``.

    Raises
    ------
    LatticeGenomeError
        Naming the file: unreadable, no pixel size, no lattice.
    pydantic.ValidationError
        For an unknown setting or a value out of its range.

    Examples
    --------
    >>> res = analyse_file("image.tif", pixel_size_pm=20.0)  # doctest: +SKIP
    >>> res = analyse_file("image.tif", AnalysisSettings(significance=6.0))  # doctest: +SKIP
    """
    settings = AnalysisSettings.of(settings, **overrides)
    images = read_image(path, pixel_size_pm=settings.pixel_size_pm,
                        hdf5_dataset=settings.hdf5_dataset, stack=settings.stack,
                        signal=settings.signal)
    result = FileResult(str(path))
    for img in images:
        try:
            cols = analyse_array(img.data, img.pixel_size_pm, settings)
        except LatticeGenomeError as exc:
            where = f" (frame {img.frame})" if img.frame is not None else ""
            raise type(exc)(exc.reason + where, str(path)) from None
        result.frames.append((img, cols))
    return result


def analyse_array(data: np.ndarray, pixel_size_pm: float,
                  settings: AnalysisSettings | Mapping | None = None, **overrides) -> Columns:
    """Find the columns of one 2-D image (an array) with the experiment's settings.

    The projected motif comes from ``zone_axis`` and the first of
    ``cations`` (default SrTiO3) with ``spacing_pm`` as its lattice
    parameter; the expected A/B contrast from all of ``cations``.

    Parameters
    ----------
    data : ndarray, shape (rows, cols)
    pixel_size_pm : float
    settings : AnalysisSettings, mapping or None
    **overrides
        Fields of :class:`~latticegenome.core.settings.AnalysisSettings`.

    Returns
    -------
    Columns

    Raises
    ------
    LatticeGenomeError
        No lattice, or the image does not fit the projection or contrast.
    """
    settings = AnalysisSettings.of(settings, **overrides)
    a_pm = settings.spacing_pm or 390.5
    projection = projection_for(settings.zone_axis, settings.cations, a_pm)
    spacing_px = projection.cell_pm[0] / pixel_size_pm if settings.spacing_pm else None
    fit_oxygen = {"auto": None, "fit": True, "skip": False}[settings.oxygen]
    cols = find_columns(
        data, projection=projection, contrast=settings.contrast, fit_oxygen=fit_oxygen,
        spacing_px=spacing_px, pixel_size_pm=pixel_size_pm,
        expected_contrast=expected_contrast(settings.zone_axis, settings.cations),
        significance=settings.significance, b_search=settings.b_search)
    cols.info["projection"] = projection.as_record()
    return cols
