"""Rule figures: an experiment's histograms, layer profile and image overviews."""

import matplotlib

matplotlib.use("Agg")  # figures go to files: the backend is set here, once, before pyplot
from _setup import setup  # noqa: E402

log = setup(snakemake)  # noqa: F821

from latticegenome.figures.experiment import experiment_figures  # noqa: E402
from latticegenome.statistics.experiment import experiment_columns  # noqa: E402

sm, out, params = snakemake, snakemake.output, snakemake.params  # noqa: F821
columns = experiment_columns(sm.input.columns, sm.input.raw, experiment=sm.wildcards.experiment)
experiment_figures(sm.input.statistics, sm.input.raw, columns, histograms_png=out.histograms,
                   overview_dir=out.overview, layers_png=out.layer_figure,
                   title=sm.wildcards.experiment, settings=params.settings)
