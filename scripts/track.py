"""Rule track: one image series -> its tracks (CSV) and dynamics.h5. A series that
cannot be followed (one frame, no lattice) is written as rejected with its reason:
the experiment's other series go on."""

from _setup import setup

log = setup(snakemake)  # noqa: F821

from pathlib import Path  # noqa: E402

from latticegenome.columns.readers import read_image  # noqa: E402
from latticegenome.core.errors import LatticeGenomeError  # noqa: E402
from latticegenome.core.records import make_record  # noqa: E402
from latticegenome.core.settings import AnalysisSettings  # noqa: E402
from latticegenome.dynamics.track import (  # noqa: E402
    read_frames_csv,
    track_series,
    write_rejected_series,
    write_track_outputs,
)

sm, out, params = snakemake, snakemake.output, snakemake.params  # noqa: F821
settings = AnalysisSettings.of(dict(params.settings))
inputs = [sm.input.series] + ([params.frames_csv] if params.frames_csv else [])
record = make_record(out.h5, rule=sm.rule, inputs=inputs, workdir=str(sm.scriptdir),
                     params={**settings.for_columns(), "frames_csv": params.frames_csv})
name = Path(sm.input.series).name
try:
    frames = read_image(sm.input.series, pixel_size_pm=settings.pixel_size_pm,
                        hdf5_dataset=settings.hdf5_dataset, stack="frames", check_frames=False)
    if len(frames) < 2:
        raise LatticeGenomeError(f"{len(frames)} frame: a series needs two or more", name)
    meta = read_frames_csv(params.frames_csv, len(frames)) if params.frames_csv else None
    result = track_series([f.data for f in frames], frames[0].pixel_size_pm, settings,
                          source=name, meta=meta)
    write_track_outputs(result, csv=out.csv, h5=out.h5, provenance=record)
    log.info("%s: %d of %d frames tracked", name, len(result["frames"]), len(frames))
except LatticeGenomeError as exc:  # this series is set aside with its reason
    log.warning("%s: set aside: %s", name, exc)
    write_rejected_series(out.h5, out.csv, str(exc), provenance=record)
