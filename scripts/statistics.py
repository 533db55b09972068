"""Rule statistics: cells of every image -> classes, layers, statistics, figures."""

import matplotlib

matplotlib.use("Agg")  # figures go to files: the backend is set here, once, before pyplot
from _setup import setup  # noqa: E402

log = setup(snakemake)  # noqa: F821

from latticegenome.core.errors import LatticeGenomeError  # noqa: E402
from latticegenome.figures.experiment import experiment_figures  # noqa: E402
from latticegenome.statistics.experiment import experiment_statistics  # noqa: E402

sm, out, params = snakemake, snakemake.output, snakemake.params  # noqa: F821
try:
    summary, columns = experiment_statistics(
        sm.input.columns, sm.input.raw, sm.input.refused, out.cells, out.images, out.rejected,
        classes_csv=out.classes, layers_csv=out.layers, experiment=sm.wildcards.experiment,
        rule=sm.rule, workdir=str(sm.scriptdir), nominal_pm=params.nominal_pm,
        materials=params.materials, stacking_axis=params.stacking_axis,
        reference_region_px=params.reference_region, corrections=params.corrections,
        lattice_tolerance=params.settings.get("lattice_tolerance"))
except LatticeGenomeError as exc:  # one line, in the log and on stderr: no traceback
    log.error("%s", exc)
    raise SystemExit(str(exc)) from None
experiment_figures(out.cells, sm.input.raw, columns, histograms_png=out.histograms,
                   overview_dir=out.overview, layers_png=out.layer_figure,
                   title=sm.wildcards.experiment, settings=params.settings)
