"""Rule software: the versions of the packages and the workflow commit, for the report."""

from _setup import setup

log = setup(snakemake)  # noqa: F821

from latticegenome.core.records import software  # noqa: E402
from latticegenome.core.tables import write_table_csv  # noqa: E402

sm = snakemake  # noqa: F821
versions = dict(sm.params.versions)
sw = software(str(sm.scriptdir))
versions["workflow git commit"] = f"{sw['git_commit']}{' (uncommitted changes)' if sw['git_dirty'] else ''}"
write_table_csv(sm.output[0], {"package": list(versions), "version": list(versions.values())},
                delimiter="\t")
log.info("%s", versions)
