"""Rule dynamics: an experiment's image series -> its table of series and figures
(summaries, a poster frame and an animation of each series)."""

import matplotlib

matplotlib.use("Agg")  # figures go to files: the backend is set here, once, before pyplot
from _setup import setup  # noqa: E402

log = setup(snakemake)  # noqa: F821

from pathlib import Path  # noqa: E402

from latticegenome.columns.readers import read_image  # noqa: E402
from latticegenome.core.records import make_record, write_sidecar  # noqa: E402
from latticegenome.core.settings import AnalysisSettings  # noqa: E402
from latticegenome.core.tables import write_table_csv  # noqa: E402
from latticegenome.dynamics.series import read_dynamics  # noqa: E402
from latticegenome.dynamics.track import SERIES_FIELDS, series_row  # noqa: E402
from latticegenome.figures.dynamics import plot_series_summary, write_series_animation  # noqa: E402

sm, out, params = snakemake, snakemake.output, snakemake.params  # noqa: F821


def _sum_or_none(path):
    try:
        return read_image(path, pixel_size_pm=settings.pixel_size_pm,
                          hdf5_dataset=settings.hdf5_dataset, stack="sum")[0].data
    except Exception:  # noqa: BLE001 (a frame set aside at tracking is not drawn)
        return None

settings = AnalysisSettings.of(dict(params.settings))
rows = {k: [] for k in SERIES_FIELDS}
figures = Path(out.figures)
figures.mkdir(parents=True, exist_ok=True)
for h5, raw in zip(sm.input.series, params.raw):
    row = series_row(h5)
    for k in SERIES_FIELDS:
        rows[k].append(row[k])
    if row["status"] != "ok":
        log.warning("%s: %s", row["series"], row["reason"])
        continue
    stem = sm.wildcards.experiment if Path(raw).is_dir() else Path(raw).stem
    dyn = read_dynamics(h5)
    plot_series_summary(dyn, figures / f"{stem}_summary.png", title=row["series"])
    if Path(raw).is_dir():  # series: files, one frame per file, in the recorded order
        names = (dyn["provenance"].get("params") or {}).get("frame_files", [])
        frames = [_sum_or_none(Path(raw) / n) for n in names]
    else:
        frames = [f.data for f in read_image(raw, pixel_size_pm=settings.pixel_size_pm,
                                             hdf5_dataset=settings.hdf5_dataset, stack="frames",
                                             check_frames=False)]
    n = write_series_animation(frames, dyn, figures / f"{stem}_frames.gif",
                               figures / f"{stem}_poster.png", title=row["series"])
    log.info("%s: %d frames tracked, %d drawn", row["series"], row["frames_tracked"], n)
write_table_csv(out.table, rows, SERIES_FIELDS, delimiter="\t")
write_sidecar(out.table, make_record(out.table, rule=sm.rule, inputs=list(sm.input.series),
                                     workdir=str(sm.scriptdir)))
