"""Rule statistics: cells of every image of an experiment -> statistics, figures."""

from pathlib import Path

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.cells import measure_cells  # noqa: E402
from latticegenome.io import read_image  # noqa: E402
from latticegenome.stats import aggregate, plot_experiment, plot_image_overview  # noqa: E402
from latticegenome.store import read_columns  # noqa: E402

sm = snakemake  # noqa: F821
summary = aggregate(
    sm.input.columns, sm.output.cells, sm.output.images, sm.output.rejected,
    nominal_pm=sm.params.nominal_pm, log=log.info,
)
log.info("summary: %s", summary)
plot_experiment(sm.output.cells, sm.output.histograms, title=sm.wildcards.experiment)

# Overview figure of the first image that was analysed.
Path(sm.output.overview).parent.mkdir(parents=True, exist_ok=True)
for columns_file, raw in zip(sm.input.columns, sm.input.raw):
    cols, attrs = read_columns(columns_file)
    if attrs.get("status") != "ok":
        continue
    img = read_image(raw, pixel_size_pm=sm.params.settings.get("pixel_size_pm"),
                     hdf5_dataset=sm.params.settings.get("hdf5_dataset"),
                     stack=sm.params.settings.get("stack", "sum"))[0]
    cells = measure_cells(cols, float(attrs["pixel_size_pm"]),
                          reference_pm=(sm.params.nominal_pm, sm.params.nominal_pm))
    plot_image_overview(img.data, cols, cells, float(attrs["pixel_size_pm"]), sm.output.overview,
                        title=f"{Path(raw).name}")
    break
else:
    raise SystemExit(f"{sm.wildcards.experiment}: every image was rejected; see {sm.output.rejected}")
