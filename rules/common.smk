# Helpers shared by the rules: paths, per-experiment settings, and the
# image list that the ingest checkpoint's manifest drives.

import csv
import sys
from pathlib import Path

# The library of this checkout (also installed in .venv; this keeps the two in step).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from latticegenome.config import check_references, experiment_settings

SCRATCH = config["scratch"]
RESULTS = config["results"]
EXPERIMENTS = list(config["experiments"])


wildcard_constraints:
    experiment="[A-Za-z0-9][A-Za-z0-9_.-]*",
    image="[^/]+",


def experiment(wildcards):
    return config["experiments"][wildcards.experiment]


def analysis_settings(wildcards):
    """Defaults merged with the experiment's overrides (see config/schema.yaml)."""
    return experiment_settings(config, wildcards.experiment)


def manifest_images(wildcards):
    """Image names of an experiment, from the ingest checkpoint's manifest."""
    manifest = checkpoints.ingest.get(experiment=wildcards.experiment).output.manifest
    with open(manifest, newline="") as fh:
        return [row["file"] for row in csv.DictReader(fh, delimiter="\t")]


def column_results(wildcards):
    return expand(
        f"{RESULTS}/{wildcards.experiment}/columns/{{image}}.h5",
        image=manifest_images(wildcards),
    )


def raw_images(wildcards):
    return expand(
        f"{SCRATCH}/{wildcards.experiment}/raw/{{image}}",
        image=manifest_images(wildcards),
    )


def software_versions():
    """Versions of the packages that make the results; as parameters, an upgrade reruns the job."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("latticegenome", "numpy", "scipy", "scikit-image", "scikit-learn", "h5py",
                 "tifffile", "rosettasciio", "numba", "matplotlib", "rocrate", "snakemake"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def all_outputs():
    return [
        *expand(f"{RESULTS}/{{experiment}}/statistics.h5", experiment=EXPERIMENTS),
        f"{RESULTS}/software.tsv",
    ]
