"""The notebook interface: images in, tables out, in one call each.

:func:`find_columns` takes what a microscopist has at hand in Jupyter: a
NumPy array with its pixel size, an :class:`~latticegenome.columns.readers.Image`
from :func:`read_image`, or a HyperSpy ``Signal2D`` (pixel size and units from
its signal axes). HyperSpy is never imported: any object with ``.data`` and
``.axes_manager.signal_axes[k].scale`` / ``.units`` will do.

:func:`measure_cells` measures the unit cells of the columns found. Both
return a small table (:class:`ColumnTable`, :class:`CellTable`) whose
``to_pandas()`` is a :class:`pandas.DataFrame`.

Units: positions ``x``, ``y`` (and their errors) are pixels (x = column
index, y = row index, origin at the centre of pixel [0, 0]); the ``*_pm``
columns are picometres; the pixel size is pm per pixel.

Examples
--------
>>> import numpy as np, latticegenome
>>> table = latticegenome.find_columns(image, pixel_size_pm=9.33,
...                                    zone_axis="110")  # doctest: +SKIP
>>> table  # doctest: +SKIP
372 columns (117 A, 130 B, 125 O), [110] haadf, 9.33 pm/px
>>> df = table.to_pandas()  # doctest: +SKIP
>>> cells = latticegenome.measure_cells(table).to_pandas()  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from latticegenome.columns.analysis import analyse_array
from latticegenome.columns.finder import Columns
from latticegenome.columns.readers import Image, read_image, unit_to_pm, validate_image
from latticegenome.core.errors import ImageReadError, PixelSizeError
from latticegenome.core.settings import AnalysisSettings
from latticegenome.statistics.cells import measure_cells as _measure_cells

#: The pixel sizes accepted (pm), as in the configuration.
PIXEL_SIZE_RANGE_PM = (0.5, 2000.0)
#: How far (relative) the two signal axes' scales may differ.
SCALE_TOLERANCE = 0.01

__all__ = ["CellTable", "ColumnTable", "find_columns", "measure_cells", "read_image"]


# --------------------------------------------------------------------------- tables


def _dataframe(data: dict):
    """``data`` as a :class:`pandas.DataFrame` (pandas imported here, not before)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_pandas() needs pandas: pip install pandas") from None
    return pd.DataFrame(data)


def zone_label(zone_axis) -> str:
    """A zone axis as microscopists write it.

    Examples
    --------
    >>> zone_label([1, 1, 0]), zone_label([1, -1, 0]), zone_label("001")
    ('[110]', '[1-10]', '[001]')
    """
    if isinstance(zone_axis, str):
        return f"[{zone_axis.strip('[]')}]"
    return "[" + "".join(str(int(v)) for v in zone_axis) + "]"


@dataclass
class ColumnTable:
    """The columns of one image, with the pixel size they were found at.

    Attributes
    ----------
    columns : Columns
        The refined columns (positions in px).
    pixel_size_pm : float
        Pixel size in pm per px.
    pixel_size_source : str
        Where the pixel size came from (``"argument"``, ``"signal axes (...)"``,
        ``"file"``, ``"settings"``).
    settings : AnalysisSettings
        The settings the columns were found with.

    Examples
    --------
    >>> table = find_columns(image, pixel_size_pm=9.33, zone_axis="110")  # doctest: +SKIP
    >>> len(table), table.check["a_over_b"]  # doctest: +SKIP
    (372, 1.87)
    >>> table.to_pandas()[["site", "species", "x_pm", "y_pm"]]  # doctest: +SKIP
    """

    columns: Columns
    pixel_size_pm: float
    pixel_size_source: str = "argument"
    settings: AnalysisSettings = field(default_factory=AnalysisSettings)

    def __len__(self) -> int:
        return len(self.columns)

    def __repr__(self) -> str:
        site = np.asarray(self.columns.site).astype(str)
        counts = ", ".join(f"{int((site == s).sum())} {s}" for s in ("A", "B", "O")
                           if s != "O" or (site == "O").any())
        info = self.columns.info
        zone = zone_label(info.get("zone_axis", self.settings.zone_axis))
        contrast = info.get("contrast", self.settings.contrast)
        return (f"{len(self)} columns ({counts}), {zone} {contrast}, "
                f"{self.pixel_size_pm:.3g} pm/px")

    @property
    def check(self) -> dict:
        """The self-check's figures (lattice ratio, A/B contrast, unmodelled peak...)."""
        return self.columns.info.get("check", {})

    @property
    def projection(self) -> dict | None:
        """The projection record the columns were found in (zone axis, cell, motif)."""
        return self.columns.info.get("projection")

    def as_dict(self) -> dict[str, np.ndarray]:
        """Per-column arrays: the fields of :class:`Columns` (px) and ``x_pm``, ``y_pm``,
        ``x_err_pm``, ``y_err_pm`` (pm)."""
        out = dict(self.columns.as_dict())
        for name in ("x", "y", "x_err", "y_err"):
            out[f"{name}_pm"] = np.asarray(out[name], dtype=float) * self.pixel_size_pm
        return out

    def to_pandas(self):
        """The columns as a :class:`pandas.DataFrame`, one row per column
        (:meth:`as_dict`'s keys as its columns)."""
        return _dataframe(self.as_dict())


@dataclass
class CellTable:
    """The unit cells measured from a :class:`ColumnTable` (or a column dict).

    Attributes
    ----------
    cells : dict of ndarray
        :data:`latticegenome.statistics.cells.CELL_FIELDS`, one entry per cell:
        ``x``, ``y`` in px, lengths in pm, strain dimensionless, angles in deg.
    pixel_size_pm : float
    projection : dict or None
        The projection record the cells were measured in.

    Examples
    --------
    >>> cells = measure_cells(find_columns(image, 9.33, zone_axis="110"))  # doctest: +SKIP
    >>> cells.to_pandas()["a_pm"].median()  # doctest: +SKIP
    390.1
    """

    cells: dict
    pixel_size_pm: float
    projection: dict | None = None

    def __len__(self) -> int:
        return int(np.asarray(self.cells["x"]).size)

    def __repr__(self) -> str:
        zone = zone_label(self.projection["zone_axis"]) if self.projection else "[001]"
        if not len(self):
            return f"0 cells, {zone}, {self.pixel_size_pm:.3g} pm/px"
        a, b = (float(np.nanmedian(self.cells[k])) for k in ("a_pm", "b_pm"))
        return (f"{len(self)} cells, {zone}, median a {a:.1f} pm, b {b:.1f} pm, "
                f"{self.pixel_size_pm:.3g} pm/px")

    def as_dict(self) -> dict[str, np.ndarray]:
        """The per-cell arrays."""
        return dict(self.cells)

    def to_pandas(self):
        """The cells as a :class:`pandas.DataFrame`, one row per cell."""
        return _dataframe(self.as_dict())


# --------------------------------------------------------------------------- pixel sizes


def _checked_pixel_size(value, where: str) -> float:
    """``value`` as a pixel size in pm, or a :class:`PixelSizeError` naming ``where``."""
    low, high = PIXEL_SIZE_RANGE_PM
    try:
        size = float(value)
    except (TypeError, ValueError):
        raise PixelSizeError(f"pixel_size_pm from {where} is {value!r}, not a number") from None
    if not (math.isfinite(size) and low <= size <= high):
        raise PixelSizeError(f"pixel size {size:g} pm from {where} is outside {low:g}-{high:g} "
                             "pm per pixel: are the units right?")
    return size


def signal_pixel_size(signal) -> tuple[float, str]:
    """Pixel size (pm) of a HyperSpy ``Signal2D``-like object, from its signal axes.

    Duck-typed: ``signal.axes_manager.signal_axes`` holds two axes with
    ``.scale`` and ``.units`` (HyperSpy is not imported).

    Returns
    -------
    pixel_size_pm : float
    source : str
        ``"signal axes (<scale> <units>)"``, for the record.

    Raises
    ------
    PixelSizeError
        The axes carry no length unit (``"<undefined>"``, empty: never
        guessed), a scale that is not positive, or scales along x and y that
        differ by more than :data:`SCALE_TOLERANCE`.
    ImageReadError
        The signal does not have two signal axes.

    Examples
    --------
    >>> s = hs.signals.Signal2D(data)  # doctest: +SKIP
    >>> s.axes_manager[0].scale = s.axes_manager[1].scale = 0.0093  # doctest: +SKIP
    >>> s.axes_manager[0].units = s.axes_manager[1].units = "nm"  # doctest: +SKIP
    >>> signal_pixel_size(s)  # doctest: +SKIP
    (9.3, 'signal axes (0.0093 nm)')
    """
    axes = list(signal.axes_manager.signal_axes)
    if len(axes) != 2:
        raise ImageReadError(f"the signal has {len(axes)} signal axes, not 2: give a 2-D "
                             "image (a Signal2D)")
    sizes = []
    for ax in axes:
        name, scale, units = getattr(ax, "name", None), getattr(ax, "scale", None), ax.units
        label = f"axis {name!r}" if isinstance(name, str) and name else "a signal axis"
        factor = unit_to_pm(units)
        if factor is None:
            raise PixelSizeError(
                f"{label} has a scale of {scale!r} but no length unit (units {units!r}): the "
                "pixel size is not guessed; give it, e.g. find_columns(s, pixel_size_pm=9.33), "
                "or set s.axes_manager[0].units = s.axes_manager[1].units = 'nm'")
        if not (isinstance(scale, (int, float, np.number)) and math.isfinite(scale)
                and scale > 0):
            raise PixelSizeError(f"{label} has scale {scale!r}: give pixel_size_pm")
        sizes.append(float(scale) * factor)
    if abs(sizes[0] - sizes[1]) > SCALE_TOLERANCE * max(sizes):
        raise PixelSizeError(
            f"the signal axes have different pixel sizes ({sizes[0]:g} and {sizes[1]:g} pm): "
            "the column finder needs square pixels; resample the image, or give pixel_size_pm "
            "if the axes are wrong")
    scale, units = axes[0].scale, axes[0].units
    return _checked_pixel_size(sum(sizes) / 2, "the signal axes"), \
        f"signal axes ({float(scale):g} {units})"


def _unstacked(obj) -> object:
    """The one image of a one-element list (what :func:`read_image` returns)."""
    if isinstance(obj, (list, tuple)):
        if len(obj) != 1:
            raise ImageReadError(
                f"a list of {len(obj)} images: pass one (e.g. images[0]), or read the file "
                "with read_image(path, stack='sum')")
        return obj[0]
    return obj


def image_and_pixel_size(image, pixel_size_pm: float | None = None,
                         fallback_pm: float | None = None) -> tuple[np.ndarray, float, str]:
    """The 2-D array of ``image`` and its pixel size (pm), with where the size came from.

    Parameters
    ----------
    image : ndarray, Image, Signal2D-like, or a one-element list of them
    pixel_size_pm : float, optional
        Overrides any pixel size the image carries; required for a bare array
        unless ``fallback_pm`` is given.
    fallback_pm : float, optional
        Used when neither ``pixel_size_pm`` nor the image gives one (the
        settings' ``pixel_size_pm``).

    Raises
    ------
    ImageReadError
        Not an image, a stack of frames (3-D), a bad array.
    PixelSizeError
        No pixel size, or one outside :data:`PIXEL_SIZE_RANGE_PM`.

    Examples
    --------
    >>> data, px, source = image_and_pixel_size(np.random.rand(64, 64), 20.0)
    >>> px, source
    (20.0, 'argument')
    """
    image = _unstacked(image)
    signal = hasattr(image, "axes_manager")
    if signal or isinstance(image, Image):
        data = image.data
    elif isinstance(image, np.ndarray) or hasattr(image, "__array__"):
        data = image
    else:
        raise ImageReadError(
            f"find_columns takes an image (a NumPy array, a HyperSpy Signal2D, or what "
            f"read_image returns), not {type(image).__name__}"
            + (": read the file with latticegenome.read_image(path) first"
               if isinstance(image, str) else ""))
    data = np.asarray(data)
    if data.ndim == 3:
        raise ImageReadError(
            f"a stack of {data.shape[0]} frames (shape {data.shape}): sum it (s.sum() for a "
            "HyperSpy signal, data.sum(axis=0) for an array) or pick a frame (s.inav[k], "
            "data[k])")
    data = validate_image(data, "the image")
    if pixel_size_pm is not None:
        return data, _checked_pixel_size(pixel_size_pm, "the argument"), "argument"
    if signal:
        size, source = signal_pixel_size(image)
        return data, size, source
    if isinstance(image, Image):
        return data, _checked_pixel_size(image.pixel_size_pm, "the image"), \
            image.pixel_size_source
    if fallback_pm is not None:
        return data, _checked_pixel_size(fallback_pm, "the settings"), "settings"
    raise PixelSizeError("an array carries no pixel size: give it, e.g. "
                         "find_columns(data, pixel_size_pm=9.33)")


# --------------------------------------------------------------------------- the calls


def find_columns(image, pixel_size_pm: float | None = None, *,
                 settings: AnalysisSettings | Mapping | None = None, **overrides) -> ColumnTable:
    """Find and refine every column of one perovskite STEM image.

    Parameters
    ----------
    image : ndarray, Image, or HyperSpy Signal2D-like
        A 2-D image. A ``Signal2D`` (anything with ``.data`` and
        ``.axes_manager.signal_axes``) gives its pixel size through its axes'
        scale and units (nm, pm, Å, µm); a scale without a length unit is an
        error, never a guess. A 3-D stack is an error: sum it or pick a frame.
    pixel_size_pm : float, optional
        Pixel size in pm per px: required for an array; overrides the signal's
        or the Image's.
    settings : AnalysisSettings or mapping, optional
        Analysis settings; their ``pixel_size_pm`` is used for an array given
        without one.
    **overrides
        Fields of :class:`~latticegenome.core.settings.AnalysisSettings`:
        ``zone_axis`` (``"001"``, ``"110"`` or ``[u, v, w]``), ``contrast``
        (``"haadf"``, ``"abf"``), ``oxygen``, ``significance``, ``b_search``,
        ``spacing_pm`` (pseudo-cubic lattice parameter in pm, a hint),
        ``cations`` (``[[A, B], ...]``).

    Returns
    -------
    ColumnTable

    Raises
    ------
    ImageReadError, PixelSizeError
        Bad image or no usable pixel size.
    ModelMismatchError
        The image does not look like the configured projection (e.g. a [110]
        image analysed as [001]); the message says what it looks like.
    NoLatticeError
        No lattice in the image.
    pydantic.ValidationError
        An unknown setting or a value out of range.

    Examples
    --------
    >>> table = find_columns(data, pixel_size_pm=9.33, zone_axis="110")  # doctest: +SKIP
    >>> table = find_columns(signal, zone_axis="110")  # HyperSpy  # doctest: +SKIP
    >>> table.to_pandas().groupby("site").size()  # doctest: +SKIP
    """
    chosen = AnalysisSettings.of(settings, **overrides)
    data, size, source = image_and_pixel_size(image, pixel_size_pm, chosen.pixel_size_pm)
    columns = analyse_array(data, size, chosen)
    return ColumnTable(columns, size, source, chosen)


def _column_arrays(columns) -> tuple[dict, float | None, dict | None]:
    """Column arrays, pixel size and projection of a table, Columns, mapping or DataFrame."""
    if isinstance(columns, ColumnTable):
        return columns.columns.as_dict(), columns.pixel_size_pm, columns.projection
    if isinstance(columns, Columns):
        return columns.as_dict(), None, columns.info.get("projection")
    if isinstance(columns, Mapping):
        return dict(columns), None, None
    if hasattr(columns, "columns") and hasattr(columns, "__getitem__"):  # a DataFrame
        return {str(k): np.asarray(columns[k]) for k in columns.columns}, None, None
    raise ImageReadError(f"measure_cells takes what find_columns returns (or a dict or "
                         f"DataFrame of columns), not {type(columns).__name__}")


def measure_cells(columns, pixel_size_pm: float | None = None, **kw) -> CellTable:
    """Measure every complete unit cell of the columns found.

    Parameters
    ----------
    columns : ColumnTable, Columns, dict or DataFrame
        A :class:`ColumnTable` carries its pixel size and projection; a dict
        or DataFrame of columns (``x``, ``y`` in px, ``site``, ``i``, ``j``...)
        needs ``pixel_size_pm`` (and ``projection=`` for [110]).
    pixel_size_pm : float, optional
        Pixel size in pm per px; for a ColumnTable it must be the one its
        columns were found at.
    **kw
        ``reference_pm`` (pseudo-cubic (a, b) in pm), ``reference_cells``
        (bool mask of the cells defining the reference), ``projection``: see
        :func:`latticegenome.statistics.cells.measure_cells`.

    Returns
    -------
    CellTable

    Raises
    ------
    PixelSizeError
        No pixel size, or one that contradicts the table's.
    ValueError
        No A columns or no complete cell.

    Examples
    --------
    >>> cells = measure_cells(find_columns(data, 9.33, zone_axis="110"))  # doctest: +SKIP
    >>> cells = measure_cells(df_of_columns, 9.33, projection=table.projection)  # doctest: +SKIP
    """
    arrays, own_pm, projection = _column_arrays(columns)
    if own_pm is not None and pixel_size_pm is not None and \
            not math.isclose(float(pixel_size_pm), own_pm, rel_tol=1e-9):
        raise PixelSizeError(
            f"the columns were found at {own_pm:g} pm/px; pixel_size_pm={pixel_size_pm:g} "
            "contradicts it (find the columns again with that pixel size)")
    if own_pm is None and pixel_size_pm is None:
        raise PixelSizeError("a table of columns in px needs pixel_size_pm (pm per px)")
    size = _checked_pixel_size(own_pm if own_pm is not None else pixel_size_pm, "the argument")
    kw.setdefault("projection", projection)
    cells = _measure_cells(arrays, size, **kw)
    record = kw["projection"]
    if record is not None and not isinstance(record, Mapping):
        record = record.as_record()
    return CellTable(cells, size, record)
