"""Rule find_columns: one image -> its A and B columns (HDF5).

Any failure on this image is recorded in the output as 'rejected' with its
reason, so one broken image never stops an experiment of thousands.
"""

import traceback

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.analysis import analyse_file  # noqa: E402
from latticegenome.errors import LatticeGenomeError  # noqa: E402
from latticegenome.provenance import make_record  # noqa: E402
from latticegenome.store import write_columns_h5  # noqa: E402

src = snakemake.input.image  # noqa: F821
out = snakemake.output.columns  # noqa: F821
s = dict(snakemake.params.settings)  # noqa: F821
workdir = str(snakemake.scriptdir)  # noqa: F821  (the workflow checkout, for its git commit)


def record(instrument=None):
    return make_record(out, rule=snakemake.rule, params=s, inputs=[src],  # noqa: F821
                       instrument=instrument, workdir=workdir)

try:
    res = analyse_file(
        src,
        pixel_size_pm=s.get("pixel_size_pm"),
        spacing_pm=s.get("spacing_pm"),
        hdf5_dataset=s.get("hdf5_dataset"),
        stack=s.get("stack", "sum"),
        significance=s.get("significance", 5.0),
        b_search=s.get("b_search", 0.3),
    )
except LatticeGenomeError as exc:
    log.warning("rejected: %s", exc)
    write_columns_h5(out, None, source=src, pixel_size_pm=None, status="rejected",
                     reason=exc.reason, provenance=record())
except Exception as exc:  # a bug must not cost the other images; the log has it
    log.error("internal error on %s:\n%s", src, traceback.format_exc())
    write_columns_h5(out, None, source=src, pixel_size_pm=None, status="rejected",
                     reason=f"internal error ({type(exc).__name__}: {exc}); see {snakemake.log[0]}",  # noqa: F821
                     provenance=record())
else:
    img, cols = res.frames[0]
    merged = res.merged()
    instrument = {**img.metadata, "pixel_size_pm": img.pixel_size_pm,
                  "pixel_size_source": img.pixel_size_source}
    write_columns_h5(out, merged, source=src, pixel_size_pm=img.pixel_size_pm,
                     shape=img.data.shape, metadata=img.metadata, provenance=record(instrument))
    n_a = int((merged.site == "A").sum())
    log.info("%s: %d A, %d B columns; dispersion %.3f", src, n_a, len(merged) - n_a,
             merged.dispersion)
