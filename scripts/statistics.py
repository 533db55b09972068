"""Rule statistics: cells of every image -> classes, layers, statistics, figures."""

from pathlib import Path

import numpy as np
from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.cells import measure_cells  # noqa: E402
from latticegenome.io import read_image  # noqa: E402
from latticegenome.stats import aggregate, plot_experiment, plot_image_overview, plot_layers  # noqa: E402
from latticegenome.store import read_columns  # noqa: E402

sm = snakemake  # noqa: F821
summary = aggregate(
    sm.input.columns, sm.output.cells, sm.output.images, sm.output.rejected,
    classes_csv=sm.output.classes, layers_csv=sm.output.layers,
    nominal_pm=sm.params.nominal_pm, stacking_axis=sm.params.stacking_axis,
    materials=sm.params.materials, log=log.info,
)
log.info("summary: %s", summary)
if summary["images_used"] == 0:
    raise SystemExit(f"{sm.wildcards.experiment}: every image was rejected; see {sm.output.rejected}")
plot_experiment(sm.output.cells, sm.output.histograms, title=sm.wildcards.experiment)

# Figures of the first image that was analysed.
Path(sm.output.overview).parent.mkdir(parents=True, exist_ok=True)
import h5py  # noqa: E402

with h5py.File(sm.output.cells, "r") as f:
    first = f["images"][0].decode()
    n0 = int(np.sum(f["cells/image"][()] == 0))
    classes0 = f["cells/class"][:n0]
raw = next(r for r in sm.input.raw if Path(r).name == first)
columns_file = next(c for c in sm.input.columns if Path(c).name == f"{first}.h5")
cols, attrs = read_columns(columns_file)
px = float(attrs["pixel_size_pm"])
img = read_image(raw, pixel_size_pm=sm.params.settings.get("pixel_size_pm"),
                 hdf5_dataset=sm.params.settings.get("hdf5_dataset"),
                 stack=sm.params.settings.get("stack", "sum"))[0]
cells = measure_cells(cols, px, reference_pm=(sm.params.nominal_pm, sm.params.nominal_pm))
plot_image_overview(img.data, cols, cells, px, sm.output.overview, title=first, classes=classes0)
plot_layers(sm.output.cells, sm.output.layer_figure, image=first, pixel_size_pm=px,
            title=sm.wildcards.experiment)
