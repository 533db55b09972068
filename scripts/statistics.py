"""Rule statistics: cells of every image -> classes, layers, statistics, figures."""

from pathlib import Path

import numpy as np
from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.columns.batch import batch_is_whole, output_name  # noqa: E402
from latticegenome.columns.readers import read_image  # noqa: E402
from latticegenome.columns.store import read_columns  # noqa: E402
from latticegenome.core.records import make_record  # noqa: E402
from latticegenome.figures.plots import (
    plot_experiment,
    plot_image_overview,
    plot_layers,
)
from latticegenome.ingest.manifest import read_refused  # noqa: E402
from latticegenome.statistics.aggregate import aggregate

sm = snakemake  # noqa: F821

# One columns file per raw image, in manifest order, from whole batch folders.
for folder in sm.input.columns:
    if (why := batch_is_whole(folder, ())) is not None:
        raise SystemExit(f"{why}; remove that folder and run the workflow again")
found = {p.name: str(p) for folder in sm.input.columns for p in Path(folder).glob("*.h5")}
missing = [r for r in sm.input.raw if output_name(r) not in found]
if missing:
    raise SystemExit(f"no columns file for {len(missing)} image(s), e.g. {missing[0]}; "
                     f"rerun find_columns for {sm.wildcards.experiment}")
columns = [found[output_name(r)] for r in sm.input.raw]
record = make_record(sm.output.cells, rule=sm.rule, inputs=columns, workdir=str(sm.scriptdir),
                     params={"nominal_pm": sm.params.nominal_pm, "stacking_axis": sm.params.stacking_axis,
                             "materials": sm.params.materials,
                             "reference_region_px": sm.params.reference_region,
                             "lattice_tolerance": sm.params.settings.get("lattice_tolerance")})
summary = aggregate(
    columns, sm.output.cells, sm.output.images, sm.output.rejected,
    classes_csv=sm.output.classes, layers_csv=sm.output.layers,
    nominal_pm=sm.params.nominal_pm, stacking_axis=sm.params.stacking_axis,
    materials=sm.params.materials, reference_region_px=sm.params.reference_region,
    lattice_tolerance=sm.params.settings.get("lattice_tolerance"),
    extra_rejected=read_refused(sm.input.refused),  # links, unsafe names: refused at ingest
    provenance=record, log=log.info,
)
log.info("summary: %s", summary)
if summary["images_used"] == 0:
    raise SystemExit(f"{sm.wildcards.experiment}: every image was rejected; see {sm.output.rejected}")
plot_experiment(sm.output.cells, sm.output.histograms, title=sm.wildcards.experiment)

# Figures of a sample of the analysed images (first, last and two between).
import h5py  # noqa: E402

out_dir = Path(sm.output.overview)
out_dir.mkdir(parents=True, exist_ok=True)
sample_cells = {}
with h5py.File(sm.output.cells, "r") as f:
    names = list(f["images"].asstr()[()])  # UTF-8 names (µ, Å, ...)
    image_index = f["cells/image"][()]
    sample = sorted({0, len(names) - 1, len(names) // 3, (2 * len(names)) // 3})
    for k in sample:  # the cells as measured and classified, read back (no recomputation);
        # they are stored image after image, so each image is one slice
        start, stop = np.searchsorted(image_index, [k, k + 1])
        sample_cells[k] = {name: f[f"cells/{name}"][start:stop] for name in f["cells"]}
for k in sample:
    name = names[k]
    raw = next(r for r in sm.input.raw if Path(r).name == name)
    columns_file = found[output_name(name)]
    cols, attrs = read_columns(columns_file)
    px = float(attrs["pixel_size_pm"])
    img = read_image(raw, pixel_size_pm=sm.params.settings.get("pixel_size_pm"),
                     hdf5_dataset=sm.params.settings.get("hdf5_dataset"),
                     stack=sm.params.settings.get("stack", "sum"))[0]
    cells = sample_cells[k]
    plot_image_overview(img.data, cols, cells, px, out_dir / f"{Path(name).stem}.png", title=name,
                        classes=cells["class"])
    if k == 0:
        plot_layers(sm.output.cells, sm.output.layer_figure, image=name, pixel_size_pm=px,
                    title=sm.wildcards.experiment)
