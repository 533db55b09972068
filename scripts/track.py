"""Rule track: one image series -> its tracks (CSV) and dynamics.h5. A series that
cannot be followed (one frame, no lattice) is written as rejected with its reason:
the experiment's other series go on."""

from _setup import setup

log = setup(snakemake)  # noqa: F821

from pathlib import Path  # noqa: E402

from latticegenome.core.errors import LatticeGenomeError  # noqa: E402
from latticegenome.core.records import make_record  # noqa: E402
from latticegenome.core.settings import AnalysisSettings  # noqa: E402
from latticegenome.dynamics.framemeta import read_series_frames, series_frame_meta  # noqa: E402
from latticegenome.dynamics.track import (  # noqa: E402
    order_frames,
    track_series,
    write_rejected_series,
    write_track_outputs,
)

sm, out, params = snakemake, snakemake.output, snakemake.params  # noqa: F821
settings = AnalysisSettings.of(dict(params.settings))
files = list(sm.input.series) if params.files else [sm.input.series]
inputs = files + ([params.frames_csv] if params.frames_csv else [])
record = make_record(out.h5, rule=sm.rule, inputs=inputs, workdir=str(sm.scriptdir),
                     params={**settings.for_columns(), "frames_csv": params.frames_csv,
                             "max_gap": params.max_gap})
name = Path(files[0]).name if not params.files else f"{sm.wildcards.experiment} ({len(files)} files)"
try:
    if params.files:  # one frame per file (a file with several is summed), in series order
        files = order_frames(files, params.order, settings=settings)
        record["params"]["frame_files"] = [Path(f).name for f in files]
    frames = read_series_frames(files, settings, params.files)
    if len(frames) < 2:
        raise LatticeGenomeError(f"{len(frames)} frame: a series needs two or more", name)
    images = [f for f in frames if not isinstance(f, str)]
    if not images:
        raise LatticeGenomeError("no frame could be read", name)
    # time, temperature, dose: the CSV's fields, the rest from the files' metadata
    meta, sources = series_frame_meta(frames, params.frames_csv, source=name)
    record["params"].update(sources)
    result = track_series([f if isinstance(f, str) else f.data for f in frames],
                          images[0].pixel_size_pm, settings, source=name, meta=meta,
                          max_gap=params.max_gap)
    # per-frame classes: the configured experiment's class model, else the series' own
    stats = getattr(sm.input, "class_model", None) or []
    stats = [stats] if isinstance(stats, str) else list(stats)
    class_options = {"model_source": params.class_model or "series",
                     "max_classes": params.classes["max_classes"], "seed": params.classes["seed"],
                     "min_probability": params.class_min_probability}
    record["params"]["class_model"] = class_options["model_source"]
    write_track_outputs(result, csv=out.csv, h5=out.h5, provenance=record,
                        class_model=stats[0] if stats else None, class_options=class_options)
    log.info("%s: %d of %d frames tracked", name, len(result["frames"]), len(frames))
except LatticeGenomeError as exc:  # this series is set aside with its reason
    log.warning("%s: set aside: %s", name, exc)
    write_rejected_series(out.h5, out.csv, str(exc), provenance=record)
