"""Rule software: the versions of the software that made the results, for the report.

The versions are read here, inside the job: in the rule's environment, the
one the analysis jobs run in (the per-rule conda environment on a cluster),
not in the Snakemake process that plans the workflow. latticegenome itself is
the checkout's (what every job imports); the provenance record of each
experiment's statistics adds the version and commit that made them.
"""

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from _setup import setup

log = setup(snakemake)  # noqa: F821

import latticegenome  # noqa: E402
from latticegenome.core.records import software  # noqa: E402
from latticegenome.core.tables import write_table_csv  # noqa: E402
from latticegenome.provenance.chain import read_record  # noqa: E402

#: The packages that make the results (Snakemake: the one that runs the jobs).
PACKAGES = ("numpy", "scipy", "scikit-image", "scikit-learn", "h5py", "tifffile", "rosettasciio",
            "numba", "matplotlib", "pydantic", "rocrate", "snakemake")


def _installed(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _made_by(record):
    sw = (record or {}).get("software") or {}
    commit = sw.get("git_commit") or "unknown commit"
    dirty = " (uncommitted changes)" if sw.get("git_dirty") else ""
    return f"latticegenome {sw.get('latticegenome') or 'unknown'}, {commit}{dirty}"


sm = snakemake  # noqa: F821
versions = {"latticegenome": latticegenome.__version__, "python": platform.python_version()}
versions.update({name: _installed(name) for name in PACKAGES})
sw = software(str(sm.scriptdir))
versions["workflow git commit"] = f"{sw['git_commit']}{' (uncommitted changes)' if sw['git_dirty'] else ''}"
for path in sm.input.statistics:
    experiment = Path(path).parent.name
    versions[f"{experiment}: statistics made by"] = _made_by(read_record(path))
write_table_csv(sm.output[0], {"package": list(versions), "version": list(versions.values())},
                delimiter="\t")
log.info("%s", versions)
