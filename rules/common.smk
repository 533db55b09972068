# Helpers shared by the rules: paths, per-experiment settings, and the
# image list that the ingest checkpoint's manifest drives. Every default is a
# field of the settings model (src/latticegenome/core/settings.py): SETTINGS is
# the configuration as that model; validate() in the Snakefile has filled the
# same defaults into `config` (config/schema.yaml is made from the model).

import json
import os
import sys
from functools import lru_cache
from pathlib import Path

# The library of this checkout (also installed in .venv; this keeps the two in step).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from latticegenome.columns.batch import increment_batches, memory_mb
from latticegenome.ingest.manifest import manifest_increments, manifest_index
from latticegenome.core.config import check_references, globus_facilities, settings_from_config

SETTINGS = settings_from_config(config)
SCRATCH = SETTINGS.scratch
RESULTS = SETTINGS.results
EXPERIMENTS = list(SETTINGS.experiments)
# experiments of image series (followed frame by frame) and of single images
SERIES_EXPERIMENTS = [n for n in EXPERIMENTS if SETTINGS.experiments[n].series]
IMAGE_EXPERIMENTS = [n for n in EXPERIMENTS if n not in SERIES_EXPERIMENTS]
GLOBUS = globus_facilities(config)
# the dft block as written, with the model's defaults filled in by validate()
# (as parameters of the jobs: the values as written, so that no job reruns for 400 vs 400.0)
DFT = config["dft"]
BATCH_SIZE = SETTINGS.batch_size

# Unattended Globus runs authenticate as a confidential client; its id and
# secret come from the environment (never from the configuration) and are
# passed on to cluster jobs.
if GLOBUS and SETTINGS.globus.auth == "client":

    envvars:
        "LATTICEGENOME_GLOBUS_CLIENT_ID",
        "LATTICEGENOME_GLOBUS_CLIENT_SECRET",


wildcard_constraints:
    experiment="[A-Za-z0-9][A-Za-z0-9_.-]*",
    image="[^/]+",
    batch="[0-9]{5}",


def experiment(wildcards):
    """The experiment's block of the configuration (a dict, defaults filled in)."""
    return config["experiments"][wildcards.experiment]


def experiment_model(wildcards):
    """The experiment as the settings model (typed; every default from the model)."""
    return SETTINGS.experiments[wildcards.experiment]


def analysis_settings(wildcards):
    """The analysis block merged with the experiment's overrides, as a dict."""
    return SETTINGS.analysis_for(wildcards.experiment).model_dump()


def column_settings(wildcards):
    """The analysis settings of find_columns: those the statistics alone use
    (lattice_tolerance) left out, so that changing them does not re-run it."""
    return SETTINGS.analysis_for(wildcards.experiment).for_columns()


def _manifest(wildcards):
    """(path, mtime) of the experiment's manifest, from the ingest checkpoint: the key of
    the cached readers below (every batch job's input function asks; reading the file
    each time made planning 50,000 images quadratic)."""
    path = checkpoints.ingest.get(experiment=wildcards.experiment).output.manifest
    return path, os.stat(path).st_mtime_ns


@lru_cache(maxsize=32)
def _manifest_rows(path, mtime_ns):
    """{file: (size in bytes, sha256)} of a manifest, in its order (the manifest
    layout is ingest.manifest's)."""
    return manifest_index(path)


def _manifest_names(path, mtime_ns):
    return tuple(_manifest_rows(path, mtime_ns))


@lru_cache(maxsize=32)
def _manifest_batches(path, mtime_ns, size):
    """Batches that never span two ingest increments: earlier batches never change."""
    return tuple(tuple(b) for b in increment_batches(manifest_increments(path), size))


@lru_cache(maxsize=32)
def _batch_of_image(path, mtime_ns, size):
    return {n: k for k, names in enumerate(_manifest_batches(path, mtime_ns, size)) for n in names}


def manifest_images(wildcards):
    """Image names of an experiment, from the ingest checkpoint's manifest."""
    return list(_manifest_names(*_manifest(wildcards)))


def image_batches(wildcards):
    """The experiment's images in batches of at most BATCH_SIZE, in manifest order,
    one increment's images per batch (a batch, once made, never changes)."""
    return _manifest_batches(*_manifest(wildcards), BATCH_SIZE)


def batch_images(wildcards):
    """Raw image files of one batch of find_columns."""
    names = image_batches(wildcards)[int(wildcards.batch)]
    return [f"{SCRATCH}/{wildcards.experiment}/raw/{name}" for name in names]


def batch_checksums(wildcards):
    """{image file name: SHA-256 recorded at ingest} of one batch: a raw copy that
    no longer has its checksum is rejected by find_columns, never analysed."""
    rows = _manifest_rows(*_manifest(wildcards))
    return {name: rows[name][1] for name in image_batches(wildcards)[int(wildcards.batch)]}


def batch_memory_mb(wildcards, threads):
    """Memory of one find_columns job, from the sizes of its images in the manifest."""
    rows = _manifest_rows(*_manifest(wildcards))
    names = image_batches(wildcards)[int(wildcards.batch)]
    return memory_mb([rows[name][0] for name in names], threads)


def image_batch(wildcards):
    """The find_columns batch folder that holds one image's columns, ``<image>.h5``:
    the input of a per-image rule that reads them (see docs/adding.md)."""
    where = _batch_of_image(*_manifest(wildcards), BATCH_SIZE)
    if wildcards.image not in where:
        raise ValueError(f"{wildcards.image} is not in the manifest of {wildcards.experiment}")
    return f"{RESULTS}/{wildcards.experiment}/columns/batch-{where[wildcards.image]:05d}"


def column_batches(wildcards):
    """The find_columns output folders of an experiment, one per batch."""
    return [
        f"{RESULTS}/{wildcards.experiment}/columns/batch-{k:05d}"
        for k in range(len(image_batches(wildcards)))
    ]


def batch_partials(wildcards):
    """The partials of every batch of an experiment (batch_statistics outputs)."""
    return [
        f"{RESULTS}/{wildcards.experiment}/partials/batch-{k:05d}.npz"
        for k in range(len(image_batches(wildcards)))
    ]


def batch_cell_tables(wildcards):
    """The Parquet cell table of every batch of an experiment."""
    return [
        f"{RESULTS}/cells/experiment={wildcards.experiment}/batch={k:05d}/cells.parquet"
        for k in range(len(image_batches(wildcards)))
    ]


def series_outputs(wildcards):
    """The dynamics file of every series of a series experiment (one per file; for
    ``series: files``, the experiment's one)."""
    if experiment_model(wildcards).series == "files":
        return [f"{RESULTS}/{wildcards.experiment}/dynamics.h5"]
    return [
        f"{RESULTS}/{wildcards.experiment}/dynamics/{name}.h5"
        for name in manifest_images(wildcards)
    ]


def series_raw(wildcards):
    """The raw series beside each dynamics file of :func:`series_outputs`."""
    raw = f"{SCRATCH}/{wildcards.experiment}/raw"
    if experiment_model(wildcards).series == "files":
        return [raw]
    return [f"{raw}/{name}" for name in manifest_images(wildcards)]


def package_inputs(wildcards):
    """What the package of an experiment holds: ``cells`` (the file its provenance is
    traced from), ``tables`` (the report must show them as they are) and ``figures``."""
    res = f"{RESULTS}/{wildcards.experiment}"
    if wildcards.experiment in SERIES_EXPERIMENTS:
        files = experiment_model(wildcards).series == "files"
        return {"cells": f"{res}/dynamics.tsv",
                "tables": [f"{res}/dynamics.tsv", *([f"{res}/dynamics.h5", f"{res}/tracks.csv"]
                                                    if files else [])],
                "figures": [f"{res}/figures/series"]}
    return {
        "cells": f"{res}/statistics.h5",
        "tables": [f"{res}/{t}" for t in ("images.tsv", "rejected.tsv", "classes.csv", "layers.csv")],
        "figures": [f"{res}/figures/{f}" for f in ("histograms.png", "layers.png", "images")],
    }


def raw_images(wildcards):
    return expand(
        f"{SCRATCH}/{wildcards.experiment}/raw/{{image}}",
        image=manifest_images(wildcards),
    )


def all_outputs():
    out = [
        *expand(f"{RESULTS}/{{experiment}}/statistics.h5", experiment=IMAGE_EXPERIMENTS),
        *expand(f"{RESULTS}/{{experiment}}/figures/histograms.png", experiment=IMAGE_EXPERIMENTS),
        *expand(f"{RESULTS}/{{experiment}}/dynamics.tsv", experiment=SERIES_EXPERIMENTS),
        f"{RESULTS}/software.tsv",
    ]
    if SETTINGS.dft.enabled:
        out += expand(f"{RESULTS}/{{experiment}}/dft.csv", experiment=IMAGE_EXPERIMENTS)
    return out


def dft_results(wildcards):
    """One DFT result per model listed by the models checkpoint (run: true)."""
    folder = checkpoints.models.get(experiment=wildcards.experiment).output.models
    index = json.loads((Path(folder) / "index.json").read_text())
    return [
        f"{RESULTS}/{wildcards.experiment}/dft/{m['name']}.json"
        for m in index["models"]
        if m["run"]
    ]


def models_folder(wildcards):
    """The models folder of the models checkpoint (why a class was not run)."""
    return checkpoints.models.get(experiment=wildcards.experiment).output.models


def refresh_listings():
    """Before planning: list each experiment's facility folder; where the listing
    changed, rewrite scratch/<exp>/listing.json, the input of its ingest checkpoint,
    so that new images are ingested (and nothing else is redone).

    Only in the main Snakemake process (a cluster job re-parsing the workflow
    does not list). A facility that cannot be listed is said in one line;
    the ingest job then reports why.
    """
    from latticegenome.ingest.backends import backend_for
    from latticegenome.ingest.increments import refresh_listing

    for name in EXPERIMENTS:
        exp = SETTINGS.experiments[name]
        marker = Path(f"{SCRATCH}/{name}/listing.json")
        try:
            backend = backend_for(exp.facility, config["facilities"][exp.facility], config=config)
            refresh_listing(backend, exp.path, exp.pattern, marker)
        except Exception as exc:  # a missing folder, Globus unreachable: ingest says why
            print(f"latticegenome: warning: {name}: facility not listed: {exc}", file=sys.stderr)


def listing_marker(wildcards):
    """The ingest checkpoint's input: the facility listing's marker, once there is one
    (before, the missing manifest makes ingest run, and it says what is wrong)."""
    marker = Path(f"{SCRATCH}/{wildcards.experiment}/listing.json")
    return [str(marker)] if marker.exists() else []


def globus_preflight():
    """Before any job runs: can every Globus collection this run needs be used?

    Sources of experiments not yet ingested, and the publication collection
    when a publish target is requested. Stops the run with one line naming
    the collection and the command that fixes it.
    """
    if not GLOBUS:
        return
    from latticegenome.core.errors import TransferError
    from latticegenome.ingest.backends import preflight

    needed = [
        SETTINGS.experiments[name].facility
        for name in EXPERIMENTS
        if not Path(f"{SCRATCH}/{name}/manifest.tsv").exists()
    ]
    targets = " ".join(str(t) for t in (workflow.dag_settings.targets or []))
    if "publish" in targets:
        needed.append(SETTINGS.publication.facility)
    try:
        preflight(config, facilities=needed)
    except TransferError as exc:
        sys.exit(f"latticegenome: {exc}")


def report_facility_changes():
    """Every run: facility originals that changed since they were ingested.

    The workflow goes on with the copies that arrived (the manifest is the
    record of them); a change at the source is said, never taken silently.
    Local facilities only (cheap: files whose size and time are unchanged are
    not read).
    """
    from latticegenome.core.errors import TransferError
    from latticegenome.ingest.backends import backend_for
    from latticegenome.ingest.local import facility_changes
    from latticegenome.ingest.manifest import read_manifest

    for name in EXPERIMENTS:
        exp = config["experiments"][name]
        facility = config["facilities"][exp["facility"]]
        manifest = Path(f"{SCRATCH}/{name}/manifest.tsv")
        if SETTINGS.facilities[exp["facility"]].backend != "local" or not manifest.exists():
            continue
        try:
            backend = backend_for(exp["facility"], facility)
            changes = facility_changes(backend, exp["path"], read_manifest(manifest))
        except TransferError as exc:
            changes = [(exp["path"], str(exc))]
        for file, reason in changes:
            print(f"latticegenome: warning: {name}: facility file {file} {reason}; the results "
                  f"use the copy that arrived ({manifest})", file=sys.stderr)


def series_class_model(wildcards):
    """The experiment whose class model classifies this series' cells (None: its own)."""
    return experiment_model(wildcards).series_class_model


def series_class_model_input(wildcards):
    """The statistics of that experiment (its classes/model.json lies beside), or nothing."""
    name = series_class_model(wildcards)
    return [f"{RESULTS}/{name}/statistics.h5"] if name else []


def series_class_min_probability(wildcards):
    """Below this class posterior a cell's class is unknown (-1)."""
    return experiment_model(wildcards).series_class_min_probability
