"""The figures of an experiment: histograms, the layer profile and an overview of
a sample of its images (the figures of the workflow's ``statistics`` rule).

The cells are read back from the statistics file (as measured and classified,
no recomputation), the columns from their files, the images from the raw
files. Set the matplotlib backend before calling (see
:mod:`latticegenome.figures.plots`).
"""

from __future__ import annotations

from pathlib import Path

from latticegenome.columns.batch import output_name
from latticegenome.columns.readers import read_image
from latticegenome.columns.store import read_columns
from latticegenome.figures.plots import (
    plot_experiment,
    plot_image_overview,
    plot_layers,
)
from latticegenome.statistics.results import image_cells, read_statistics


def figure_sample(n_images: int) -> list[int]:
    """Indices of the images shown: the first, the last and two between.

    Examples
    --------
    >>> figure_sample(10), figure_sample(2), figure_sample(1), figure_sample(0)
    ([0, 3, 6, 9], [0, 1], [0], [])
    """
    if n_images < 1:
        return []
    return sorted({0, n_images - 1, n_images // 3, (2 * n_images) // 3})


def _image_data(raw: str | Path, settings: dict):
    """The image (2-D array) of a raw file, read as the column finder read it."""
    return read_image(raw, pixel_size_pm=settings.get("pixel_size_pm"),
                      hdf5_dataset=settings.get("hdf5_dataset"),
                      stack=settings.get("stack", "sum"))[0].data


def experiment_figures(statistics_h5: str | Path, raw_images, columns_files, *,
                       histograms_png: str | Path, overview_dir: str | Path,
                       layers_png: str | Path, title: str = "",
                       settings: dict | None = None) -> list[Path]:
    """Draw an experiment's figures from its statistics file.

    Parameters
    ----------
    statistics_h5 : path
        Written by :func:`latticegenome.statistics.aggregate.aggregate`.
    raw_images, columns_files : list of path
        The raw images and their column files (named
        :func:`~latticegenome.columns.batch.output_name` of the image).
    histograms_png : path
        The histograms and class populations (:func:`plot_experiment`).
    overview_dir : path
        Created; one ``<image stem>.png`` per image of :func:`figure_sample`
        (:func:`plot_image_overview`).
    layers_png : path
        The layer profile of the first image (:func:`plot_layers`).
    title : str
        The experiment's name.
    settings : dict, optional
        How the images are read: ``pixel_size_pm``, ``hdf5_dataset``,
        ``stack`` (default ``sum``).

    Returns
    -------
    list of Path
        The overview figures written.
    """
    settings = settings or {}
    stats = read_statistics(statistics_h5)
    for png in (histograms_png, layers_png):
        Path(png).parent.mkdir(parents=True, exist_ok=True)
    plot_experiment(stats, histograms_png, title=title)
    overview_dir = Path(overview_dir)
    overview_dir.mkdir(parents=True, exist_ok=True)
    columns_by_name = {Path(c).name: c for c in columns_files}
    written = []
    for k in figure_sample(len(stats.images)):
        name = stats.images[k]
        raw = next(r for r in raw_images if Path(r).name == name)
        cols, attrs = read_columns(columns_by_name[output_name(name)])
        px = float(attrs["pixel_size_pm"])
        cells = image_cells(statistics_h5, k)
        written.append(overview_dir / f"{Path(name).stem}.png")
        plot_image_overview(_image_data(raw, settings), cols, cells, px, written[-1], title=name,
                            classes=cells["class"])
        if k == 0:
            plot_layers(stats, layers_png, image=name, pixel_size_pm=px, title=title)
    return written
