"""Rule package: results + report + RO-Crate of one experiment."""

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.core.errors import LatticeGenomeError  # noqa: E402
from latticegenome.provenance.chain import raw_sources, trace  # noqa: E402
from latticegenome.provenance.package import build_package, check_report  # noqa: E402

sm = snakemake  # noqa: F821
exp = sm.params.experiment
try:  # the report must show this experiment's tables as they are now
    check_report(sm.input.report, sm.input.tables, experiment=sm.wildcards.experiment)
except LatticeGenomeError as exc:
    log.error("%s", exc)
    raise SystemExit(f"package {sm.wildcards.experiment}: {exc}") from None
files = [sm.input.cells, *sm.input.tables, *sm.params.tables, *sm.input.figures, sm.input.report]
package = build_package(
    files, sm.output.package, experiment=sm.wildcards.experiment,
    description=exp.get("description", ""), people=sm.params.people,
    instrument=exp.get("instrument"), license=sm.params.license,
    raw_images=raw_sources(trace(sm.input.cells)), workdir=str(sm.scriptdir),
)
log.info("package %s written", package)
