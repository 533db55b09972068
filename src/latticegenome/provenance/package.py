"""Publication package of an experiment: results, report and an RO-Crate.

:func:`build_package` copies the experiment's results (HDF5, CSV, figures,
their provenance sidecars) and the report into one folder and describes it
with an RO-Crate (``ro-crate-metadata.json``, written by ro-crate-py): every
file with its size and SHA-256, the workflow and its version (package version
and git commit), the run that made the results (a ``CreateAction`` whose
instruments are the workflow and the microscope), the people and the facility
from the configuration. The package is then sent through the configured
transfer backend (:func:`latticegenome.ingest.backends.backend_for`) and
:func:`record_publication` writes where it went, with its provenance.
"""

from __future__ import annotations

import json
import mimetypes
import shutil
import time
from pathlib import Path

from latticegenome.core.fsutil import atomic_write, sha256_file
from latticegenome.core.records import SIDECAR, make_record, software, write_sidecar
from latticegenome.ingest.manifest import BOOKKEEPING

WORKFLOW_URL = "https://github.com/latticegenome/latticegenome"


#: What each kind of result file is, for the crate's descriptions.
DESCRIPTIONS = {
    "statistics.h5": "histograms, class table, layer profiles and interfaces, and the batches' "
                     "cell tables named (HDF5)",
    "cells.parquet": "per-cell table of one batch of images: lattice parameters, strain, B "
                     "displacement, intensities (Parquet)",
    "classes.parquet": "configuration class of every cell of one batch (Parquet)",
    "dynamics.tsv": "one row per image series: frames tracked, registration residual, domain "
                    "wall velocity, lattice parameter against temperature or time",
    "classes.csv": "class table: population, mean and spread of each measure per configuration class",
    "layers.csv": "per-plane profile along the stacking axis of every image",
    "images.tsv": "per-image summary",
    "rejected.tsv": "images set aside, with the reason",
    "report.html": "Snakemake report of the run (figures, tables, software, runtimes)",
}


def check_report(report: str | Path, results: list[str | Path], *, experiment: str) -> None:
    """The report must show these result files as they are now.

    A package holds the run's report beside the results: one made before the
    experiment was analysed (or before it was analysed again) would describe
    other numbers. Every file of ``results`` (paths as the workflow names
    them, e.g. ``results/<exp>/classes.csv``) must be embedded in the
    Snakemake report with exactly its current content.

    Raises
    ------
    LatticeGenomeError
        Naming the report, the first result it lacks or shows in an older
        version, and the command that writes a current report.
    """
    import base64
    import hashlib
    import re

    from latticegenome.core.errors import LatticeGenomeError

    fix = f"write it again (snakemake --report {report}), then publish"
    text = Path(report).read_text(errors="replace")
    found = re.search(r'<script id="results">\s*var results = (.*?);\s*</script>', text, re.S)
    if found is None:
        raise LatticeGenomeError(f"not a Snakemake report with results: {fix}", str(report))
    shown = json.loads(found.group(1))
    for res in map(str, results):
        entry = shown.get(res)
        if entry is None:
            raise LatticeGenomeError(f"does not include {res} of experiment {experiment}: {fix}",
                                     str(report))
        data = entry.get("data_uri", "").partition("base64,")[2]
        embedded = hashlib.sha256(base64.b64decode(data)).hexdigest() if data else None
        if embedded != sha256_file(res):
            raise LatticeGenomeError(f"shows an older {res} than the one on disk (made before the "
                                     f"last analysis of {experiment}): {fix}", str(report))


def describe(path: Path) -> str:
    """A description of a result file for the RO-Crate."""
    name = path.name
    if name.endswith(".prov.json"):
        return f"provenance record of {name[: -len('.prov.json')]}"
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    if path.suffix == ".png":
        return f"figure {path.stem}"
    return "latticegenome result file"


def _one(items: list):
    """A single value for a one-element list (RO-Crate 1.3 JSON-LD recommendation)."""
    return items[0] if len(items) == 1 else items


def copy_results(files: list[str | Path], package: Path) -> list[Path]:
    """Copy result files and folders into ``package``; return the copies.

    A folder is copied whole (workflow bookkeeping left out) under its own
    name, a Hive partition (``cells/experiment=<name>``) under its parent's
    name too, so the package keeps the partitioning; a file goes with its
    provenance sidecar (``.prov.json``) if any.
    """
    copied: list[Path] = []
    for f in map(Path, files):
        if f.is_dir():
            top = Path(f.parent.name, f.name) if "=" in f.name else Path(f.name)
            for sub in sorted(p for p in f.rglob("*") if p.is_file() and p.name not in BOOKKEEPING):
                dest = package / top / sub.relative_to(f)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(sub, dest)
                copied.append(dest)
        else:
            for src in (f, Path(str(f) + SIDECAR)):
                if src.exists():
                    shutil.copy2(src, package / src.name)
                    copied.append(package / src.name)
    return copied


def media_type(path: Path) -> str:
    """The encoding format of a packaged file (HDF5 and TSV named explicitly).

    Examples
    --------
    >>> media_type(Path("statistics.h5")), media_type(Path("images.tsv"))
    ('application/x-hdf5', 'text/tab-separated-values')
    """
    return mimetypes.guess_type(path.name)[0] or (
        "application/x-hdf5" if path.suffix == ".h5" else "text/tab-separated-values"
        if path.suffix == ".tsv" else "application/octet-stream")


def _add_people(crate, people: list[dict]) -> list:
    """The authors (an ORCID iD when known) as crate Persons."""
    from rocrate.model.person import Person

    authors = []
    for k, person in enumerate(people):
        pid = (f"https://orcid.org/{person['orcid'].rsplit('/', 1)[-1]}" if person.get("orcid")
               else f"#person-{k}")
        props = {"name": person["name"]}
        if person.get("affiliation"):
            props["affiliation"] = person["affiliation"]
        authors.append(crate.add(Person(crate, pid, properties=props)))
    if authors:
        crate.root_dataset["author"] = _one(authors)
    return authors


def _add_instruments(crate, sw: dict, instrument: dict | None) -> list:
    """The workflow (version, git commit) and the microscope; the facility as publisher."""
    from rocrate.model.contextentity import ContextEntity

    workflow = crate.add(ContextEntity(crate, WORKFLOW_URL, properties={
        "@type": "SoftwareApplication",
        "name": "latticegenome Snakemake workflow",
        "url": WORKFLOW_URL,
        "version": sw.get("latticegenome"),
        "identifier": sw.get("git_commit") or "unknown",
        "programmingLanguage": "Snakemake",
    }))
    instruments = [workflow]
    if instrument:
        micro = crate.add(ContextEntity(crate, "#instrument", properties={
            "@type": "IndividualProduct", "name": str(instrument.get("microscope", "microscope")),
            "description": ", ".join(f"{k}: {v}" for k, v in instrument.items()),
        }))
        instruments.append(micro)
        if instrument.get("facility"):
            crate.root_dataset["publisher"] = crate.add(ContextEntity(crate, "#facility", properties={
                "@type": "Organization", "name": str(instrument["facility"])}))
    return instruments


def _add_files(crate, package: Path, copied: list[Path]) -> list:
    """Every packaged file with its description, size (bytes), format and SHA-256."""
    parts = []
    for path in copied:
        props = {"name": path.name, "description": describe(path),
                 "contentSize": str(path.stat().st_size), "encodingFormat": media_type(path),
                 "sha256": sha256_file(path)}
        parts.append(crate.add_file(path, dest_path=path.relative_to(package).as_posix(),
                                    properties=props))
    return parts


def _add_raw_images(crate, raw_images: list[dict]) -> list:
    """The raw images the results came from (collection, source path, checksum, task)."""
    from rocrate.model.contextentity import ContextEntity

    return [crate.add(ContextEntity(crate, f"#raw-{k}", properties={
        "@type": "CreativeWork", "name": str(raw.get("source_path")),
        "identifier": f"{raw.get('collection')}/{raw.get('source_path')}",
        "sha256": raw.get("sha256"), "description": f"raw image, transfer task {raw.get('task_id')}",
    })) for k, raw in enumerate(raw_images)]


def _add_run(crate, experiment: str, *, instruments: list, parts: list, objects: list,
             authors: list) -> None:
    """The run that made the results: a CreateAction, mentioned by the root dataset."""
    from rocrate.model.contextentity import ContextEntity

    action_props = {"@type": "CreateAction", "name": f"latticegenome run on {experiment}",
                    "endTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    action = crate.add(ContextEntity(crate, "#run", properties=action_props))
    action["instrument"] = _one(instruments)
    action["result"] = _one(parts)
    if objects:
        action["object"] = _one(objects)
    if authors:
        action["agent"] = authors[0]
    crate.root_dataset["mentions"] = action


def build_package(
    files: list[str | Path],
    package_dir: str | Path,
    *,
    experiment: str,
    description: str = "",
    people: list[dict] | None = None,
    instrument: dict | None = None,
    license: str = "https://creativecommons.org/licenses/by/4.0/",
    raw_images: list[dict] | None = None,
    workdir: str | None = None,
) -> Path:
    """Copy ``files`` into ``package_dir`` and write its RO-Crate.

    Parameters
    ----------
    files : list of path
        Result files and folders; folders are copied whole, a file's
        provenance sidecar (``.prov.json``) goes with it.
    package_dir : path
        The package folder (replaced if it exists).
    experiment, description : str
        Name and description of the crate.
    people : list of dict, optional
        ``name``, ``affiliation``, ``orcid``: the authors.
    instrument : dict, optional
        ``microscope``, ``facility`` and any other properties.
    license : str
        License URL of the data.
    raw_images : list of dict, optional
        Raw-image records (collection, source path, checksum, task id), e.g.
        from :func:`latticegenome.provenance.chain.raw_sources`.
    workdir : str, optional
        Where to read the workflow's git commit.

    Returns
    -------
    Path
        The package folder.
    """
    from rocrate.rocrate import ROCrate

    package = Path(package_dir)
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    copied = copy_results(files, package)
    crate = ROCrate()
    crate.name = f"latticegenome results: {experiment}"
    crate.description = description or f"Local lattice configurations of experiment {experiment}."
    crate.license = license
    crate.datePublished = time.strftime("%Y-%m-%d", time.gmtime())
    authors = _add_people(crate, people or [])
    instruments = _add_instruments(crate, software(workdir), instrument)
    parts = _add_files(crate, package, copied)
    objects = _add_raw_images(crate, raw_images or [])
    _add_run(crate, experiment, instruments=instruments, parts=parts, objects=objects,
             authors=authors)
    crate.metadata.write(package)  # ro-crate-metadata.json; the files are in place already
    return package


def record_publication(record_path: str | Path, record: dict, package: str | Path) -> Path:
    """Write a publication's record (``published.json``) and its provenance sidecar.

    Parameters
    ----------
    record_path : path
        Where the record goes (written atomically).
    record : dict
        What :meth:`~latticegenome.ingest.backends.TransferBackend.publish`
        returned (facility, collection, path, task id, files, time).
    package : path
        The package folder that was published: its files are the record's inputs.

    Returns
    -------
    Path
        The sidecar.
    """
    with atomic_write(record_path, "w") as fh:
        json.dump(record, fh, indent=1)
    prov = make_record(record_path, rule="publish",
                       params={"facility": record["facility"], "path": record["path"]},
                       inputs=[p for p in sorted(Path(package).rglob("*")) if p.is_file()
                               and p.name not in BOOKKEEPING])
    prov["transfer"] = {k: record[k] for k in ("facility", "collection", "path", "task_id",
                                               "published_at")}
    return write_sidecar(record_path, prov)
