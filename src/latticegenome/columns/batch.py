"""Batches of images: one process analyses many images, each to its own HDF5 file.

Starting a Python process with NumPy, SciPy, scikit-image and the compiled
kernels costs about as much as analysing a 512² image, and on a cluster
every job also waits in the queue. The workflow therefore gives each job a
fixed batch of images (``batch_size`` in the configuration): the start-up
is paid once per batch, and 10,000 images become 100 jobs.

A broken image never costs the batch: it is written as ``rejected`` with its
reason, and the others go on. A raw copy whose SHA-256 is no longer the one
its manifest recorded at ingest is rejected too (it was modified since).
With ``scan_pair`` configured, a 90-degree frame whose 0-degree partner is
in its folder gets the status ``paired`` instead: it is analysed with that
partner (:mod:`latticegenome.columns.analysis`), not on its own.

A batch folder appears whole or not at all: it is written as a temporary
``.batch-NNNNN.<host>.<pid>.<random>.part`` folder beside its final name and
renamed when every image has its file and the marker :data:`MARKER`
(``batch.json``: the images, their checksums and statuses) is written. A
batch killed part-way leaves only the temporary folder; the next run takes
over the image files in it that were made from the same raw bytes with the
same settings, and removes it.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import shutil
import traceback
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from latticegenome.core.errors import LatticeGenomeError
from latticegenome.core.fsutil import atomic_dir, atomic_write, sha256_file, stale_parts
from latticegenome.core.settings import AnalysisSettings

logger = logging.getLogger(__name__)

#: The file that marks a batch folder as whole (written last).
MARKER = "batch.json"


def output_name(source: str | os.PathLike) -> str:
    """File name of an image's columns inside its batch folder: ``<image name>.h5``."""
    return f"{Path(source).name}.h5"


def batches(names: Sequence[str], size: int) -> list[list[str]]:
    """Split image names, in the given order, into consecutive batches of ``size``.

    The split depends only on the list and ``size``: the same experiment gives
    the same batches on every machine.
    """
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    return [list(names[k:k + size]) for k in range(0, len(names), size)]


def increment_batches(rows: Sequence[tuple[str, int]], size: int) -> list[list[str]]:
    """Batches of at most ``size`` images, never spanning two ingest increments.

    ``rows`` are ``(name, increment)`` in manifest order (append-only: the
    rows of earlier increments never change), so a batch, once made, keeps
    its images: a new increment only adds batches, and no image already
    analysed is analysed again. One increment gives :func:`batches`.

    Examples
    --------
    >>> increment_batches([("a", 0), ("b", 0), ("c", 0), ("d", 1)], 2)
    [['a', 'b'], ['c'], ['d']]
    """
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    out: list[list[str]] = []
    current, last = [], None
    for name, inc in rows:
        if current and (inc != last or len(current) == size):
            out.append(current)
            current = []
        current.append(name)
        last = inc
    if current:
        out.append(current)
    return out


#: Memory of a batch job (benchmarks/README.md, peak RSS per worker at 512² to 2048²,
#: and 1.6 GB measured for an 8192² image): the parent process, a worker's floor, and
#: bytes of worker memory per byte of the largest image file (images of 2 bytes per
#: pixel, ~24 bytes of working memory per pixel; 4-byte pixels are over-estimated, 1-byte
#: or compressed files under-estimated).
PARENT_MB, WORKER_MB, BYTES_PER_FILE_BYTE = 250, 250, 12


def memory_mb(file_sizes: Sequence[int], workers: int) -> int:
    """Memory (MB) to request for a batch job analysing files of these sizes.

    Parameters
    ----------
    file_sizes : sequence of int
        Sizes in bytes of the batch's image files (from the manifest).
    workers : int
        Images analysed side by side.

    Examples
    --------
    >>> memory_mb([512 * 512 * 2] * 100, 4)
    1274
    >>> memory_mb([8192 * 8192 * 2], 4)  # one worker is enough for one image
    2036
    """
    if not file_sizes:
        return PARENT_MB
    largest = max(int(s) for s in file_sizes)
    per_worker = WORKER_MB + BYTES_PER_FILE_BYTE * largest / 2**20
    return int(PARENT_MB + max(1, min(int(workers), len(file_sizes))) * per_worker)


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 over the library's source files: the code that made a result,
    exact even in a checkout with uncommitted changes."""
    import hashlib

    h = hashlib.sha256()
    here = Path(__file__).resolve().parents[1]  # the whole library
    for f in sorted(here.rglob("*.py")):
        h.update(f.relative_to(here).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def analyse_one(source: str, out: str, settings: AnalysisSettings | Mapping | None,
                provenance: dict | None = None, log_file: str | None = None,
                expected_sha256: str | None = None, partner_sha256: str | None = None) -> dict:
    """Analyse one image and write its columns (or its rejection) to ``out``.

    Parameters
    ----------
    source : str
        Image file.
    out : str
        HDF5 file to write (atomically).
    settings : AnalysisSettings, mapping or None
        Analysis settings (:class:`~latticegenome.core.settings.AnalysisSettings`;
        the workflow passes the experiment's merged settings; a plain dict is
        checked by the model, None: the defaults); ``pixel_size_pm`` is used only
        for files that carry no pixel size.
    provenance : dict, optional
        ``rule``, ``workdir`` and ``params`` (default: the settings the column
        finding uses) for the provenance record of ``out``.
    log_file : str, optional
        Named in the reason of an internal error (where its traceback is).
    expected_sha256 : str, optional
        The checksum the manifest recorded at ingest: a raw copy that no longer
        has it is rejected, never analysed.
    partner_sha256 : str, optional
        With ``scan_pair``: the checksum the manifest recorded for the 90-degree
        partner of a 0-degree frame (when known to the batch).

    With ``scan_pair`` set, a 0-degree frame is analysed with its 90-degree
    partner (:func:`~latticegenome.columns.analysis.correct_scan_pair`, the
    partner read from the same folder and listed in the provenance's inputs);
    a 90-degree frame whose 0-degree partner is in its folder gets the status
    ``paired`` (no columns: the statistics skip it, not a rejection).

    Returns
    -------
    dict
        ``source``, ``status`` (``ok``, ``rejected`` or ``paired``), ``reason``, ``n_a``,
        ``n_b``, ``dispersion``, ``sha256`` (of the bytes analysed); ``warning`` for a
        frame of a pair analysed alone; for an internal error also ``traceback``.
    """
    from latticegenome.columns.analysis import analyse_file, scan_pair_role

    settings = AnalysisSettings.of(settings)
    digest = sha256_file(source) if Path(source).exists() else None

    def record(instrument=None, pair=None):
        return _record(out, source, digest, settings, provenance, instrument, pair)

    role = scan_pair_role(source, settings.scan_pair)
    reason = _changed_since_ingest(digest, expected_sha256) or \
        (role and role[0] == "0" and _partner_changed(role[1], partner_sha256))
    if reason:
        _no_columns(out, source, "rejected", reason, record())
        return {"source": source, "status": "rejected", "reason": f"{source}: {reason}",
                "sha256": digest}
    if role is not None and role[0] == "90" and role[1].is_file():
        reason = paired_reason(role[1].name)
        _no_columns(out, source, "paired", reason, record())
        return {"source": source, "status": "paired", "reason": reason, "sha256": digest}
    try:
        res = analyse_file(source, settings)
    except LatticeGenomeError as exc:
        _no_columns(out, source, "rejected", exc.reason, record())
        return {"source": source, "status": "rejected", "reason": str(exc), "sha256": digest}
    except Exception as exc:  # a bug must not cost the other images; the log has it
        where = f"; see {log_file}" if log_file else ""
        reason = f"internal error ({type(exc).__name__}: {exc}){where}"
        _no_columns(out, source, "rejected", reason, record())
        return {"source": source, "status": "rejected", "reason": reason, "sha256": digest,
                "traceback": traceback.format_exc()}
    return _write_result(out, source, res, digest, record, bool(partner_sha256))


def _changed_since_ingest(digest: str | None, expected: str | None, what: str = "raw copy") -> str:
    """Why a raw file is not the one ingested (its SHA-256 differs), or ``""``."""
    if not expected or digest == expected:
        return ""
    return (f"{what} changed since ingest (sha256 {str(digest)[:12]}, manifest "
            f"{expected[:12]}): restore it or ingest it again")


def _partner_changed(partner: Path, expected: str | None) -> str:
    """Why a 0-degree frame's 90-degree partner is not the one ingested, or ``""``
    (unknown checksum, or no partner: nothing to check here)."""
    if not expected or not partner.is_file():
        return ""
    return _changed_since_ingest(sha256_file(partner), expected,
                                 f"its 90-degree partner {partner.name}")


def _record(out, source, digest, settings: AnalysisSettings, provenance: dict | None,
            instrument=None, pair=None) -> dict | None:
    """The provenance record of one image's column file (None without ``provenance``):
    the raw file as checked (read and hashed once), and the 90-degree partner it was
    corrected with."""
    from latticegenome.core.records import make_record

    prov = provenance or {}
    if not prov:
        return None
    rec = make_record(out, rule=prov.get("rule", "find_columns"),
                      params=prov.get("params", settings.for_columns()), inputs=[],
                      instrument=instrument, workdir=prov.get("workdir"))
    rec["inputs"] = [{"path": str(source), "size": Path(source).stat().st_size, "sha256": digest}]
    if pair and pair.get("corrected"):
        other = Path(source).parent / pair["partner"]
        rec["inputs"].append({"path": str(other), "size": other.stat().st_size,
                              "sha256": pair["partner_sha256"]})
    return {**rec, "code_sha256": code_fingerprint()}


def _no_columns(out, source, status: str, reason: str, provenance: dict | None) -> None:
    """The column file of an image without columns: rejected, or paired."""
    from latticegenome.columns.store import write_columns_h5

    write_columns_h5(out, None, source=source, pixel_size_pm=None, status=status,
                     reason=reason, provenance=provenance)


def _write_result(out, source, res, digest, record, partner_checked: bool) -> dict:
    """Write an analysed image's columns; its summary (see :func:`analyse_one`).
    ``partner_checked``: a scan partner's SHA-256 was checked against the manifest."""
    from latticegenome.columns.store import write_columns_h5

    img, _ = res.frames[0]
    merged = res.merged()
    instrument = {**img.metadata, "pixel_size_pm": img.pixel_size_pm,
                  "pixel_size_source": img.pixel_size_source}
    pair = merged.info.get("scan_pair")
    if pair and pair.get("corrected"):  # hashed as read; also the manifest's, when known
        pair["partner_sha256_source"] = "manifest" if partner_checked else "read"
    write_columns_h5(out, merged, source=source, pixel_size_pm=img.pixel_size_pm,
                     shape=img.data.shape, metadata=img.metadata,
                     provenance=record(instrument, pair))
    n_a = int((merged.site == "A").sum())
    summary = {"source": source, "status": "ok", "reason": "", "n_a": n_a,
               "n_b": len(merged) - n_a, "dispersion": float(merged.dispersion), "sha256": digest}
    if pair and pair.get("warning"):
        summary["warning"] = pair["warning"]
    return summary


def paired_reason(partner: str) -> str:
    """The reason of a 90-degree frame's ``paired`` status: whose partner it is.

    Examples
    --------
    The 90-degree frame is set aside before its partner's outcome is known
    (the two may be analysed side by side): the reason says where that
    outcome is, never that the pair was corrected (the partner may be
    rejected, e.g. a pair whose scan rotations are not orthogonal).

    Examples
    --------
    >>> paired_reason("field_0.tif")  # doctest: +ELLIPSIS
    'the 90-degree partner of field_0.tif: not analysed on its own; ...'
    """
    return (f"the 90-degree partner of {partner}: not analysed on its own; {partner}'s column "
            f"file says whether the pair was corrected, rejected (naming both files), or, when "
            f"{partner} came in an earlier ingest increment, analysed alone")


def analyse_batch(sources: Sequence[str], out_dir: str | os.PathLike,
                  settings: AnalysisSettings | Mapping | None, *, workers: int = 1,
                  provenance: dict | None = None, log_file: str | None = None,
                  expected_sha256: Mapping[str, str] | None = None,
                  exclusive: bool = False) -> list[dict]:
    """Analyse a batch of images into ``out_dir/<image name>.h5``, one file each.

    ``out_dir`` appears whole or not at all (see the module's docstring): with
    every image's file and the marker ``batch.json``. One line per image goes
    to this module's logger.

    Parameters
    ----------
    sources : sequence of str
        Image files. Two with the same file name are refused (their outputs would collide).
    out_dir : path
        Folder for the outputs (replaced when whole).
    settings : AnalysisSettings, mapping or None
        Analysis settings, as for :func:`analyse_one`.
    workers : int
        Processes analysing images at the same time (1: in this process). Each
        needs about 220-280 MB (512² to 2048² images; benchmarks/README.md).
    provenance, log_file
        As for :func:`analyse_one`.
    expected_sha256 : mapping, optional
        Image file name -> SHA-256 recorded at ingest; an image whose bytes
        differ is rejected with the reason (see :func:`analyse_one`).
    exclusive : bool
        The caller holds ``out_dir`` (a Snakemake job for its output): every
        temporary folder of it is a killed run's, not only those whose
        process is gone on this host.

    Returns
    -------
    list of dict
        One summary per image (see :func:`analyse_one`), in the order of ``sources``.
    """
    settings = AnalysisSettings.of(settings)
    names = [output_name(s) for s in sources]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"images with the same file name in one batch: {', '.join(dup)}")
    expected = dict(expected_sha256 or {})
    out_dir = Path(out_dir)
    leftovers = stale_parts(out_dir, force=exclusive)
    with atomic_dir(out_dir) as tmp:
        reused = _take_over(leftovers, sources, tmp, settings, provenance, expected)
        jobs = [(str(s), str(tmp / n), settings, provenance, log_file, expected.get(Path(s).name),
                 expected.get(_partner_name(s, settings)))
                for s, n in zip(sources, names) if n not in reused]
        fresh = iter(_run_jobs(jobs, workers))
        results = [reused[n] if n in reused else next(fresh) for n in names]
        _write_marker(tmp / MARKER, results, settings)
        for old in leftovers:  # taken over; the rest of them is of no use
            shutil.rmtree(old, ignore_errors=True)
    for r in results:
        _log_result(r)
    return results


def _partner_name(source, settings: AnalysisSettings) -> str | None:
    """File name of a 0-degree frame's 90-degree partner (None for any other file)."""
    from latticegenome.columns.analysis import scan_pair_role

    role = scan_pair_role(source, settings.scan_pair)
    return role[1].name if role is not None and role[0] == "0" else None


def _log_result(r: dict) -> None:
    """One image's line (or lines) in the log."""
    if r["status"] == "ok":
        logger.info("%s: %d A, %d B columns; dispersion %.3f", r["source"], r["n_a"], r["n_b"],
                    r["dispersion"])
        if r.get("warning"):
            logger.warning("%s: %s", r["source"], r["warning"])
    elif r["status"] == "paired":
        logger.info("%s: paired, not analysed on its own: %s", r["source"], r["reason"])
    else:
        logger.info("%s: rejected: %s", r["source"], r["reason"])
        if "traceback" in r:
            logger.info("%s", r["traceback"])


def _run_jobs(jobs: list[tuple], workers: int) -> list[dict]:
    """Run :func:`analyse_one` on each job, ``workers`` side by side."""
    if not jobs:
        return []
    workers = max(1, min(int(workers), len(jobs)))
    from latticegenome.columns import analysis  # noqa: F401  (imported once, before the workers are forked)
    from latticegenome.core._memory import return_freed_memory

    return_freed_memory()  # image-sized temporaries go back to the system (inherited by forks)
    _compile_kernels_aside()
    if workers == 1:
        return [analyse_one(*job) for job in jobs]
    # fork: the workers inherit the imported library (no second start-up)
    ctx = multiprocessing.get_context("fork")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(_analyse_star, jobs, chunksize=1))


def _write_marker(path: Path, results: list[dict], settings: AnalysisSettings) -> None:
    images = [{"file": Path(r["source"]).name, "status": r["status"], "sha256": r.get("sha256")}
              for r in results]
    with atomic_write(path, "w") as fh:
        json.dump({"images": images, "settings": settings.for_columns()}, fh, indent=1, default=str)


def batch_is_whole(folder: str | os.PathLike, names: Sequence[str]) -> str | None:
    """Why ``folder`` is not a whole batch of the images ``names``, or None.

    A whole batch has its marker (written last) listing every image, and
    each image's file.
    """
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        return f"{folder}: no {MARKER} (an interrupted batch): run the workflow again"
    listed = {e["file"] for e in json.loads(marker.read_text()).get("images", [])}
    missing = [n for n in names if n not in listed or not (folder / output_name(n)).is_file()]
    if missing:
        return f"{folder}: no columns for {len(missing)} image(s), e.g. {missing[0]}"
    return None


def _take_over(leftovers: list[Path], sources, dest: Path, settings: AnalysisSettings, provenance,
               expected: dict) -> dict[str, dict]:
    """Image files of a killed run of this batch that can stand: moved into ``dest``.

    A file is taken over when it was made from the same raw bytes (SHA-256
    in its provenance, equal to the manifest's when known), with the same
    settings and the same library code; everything else is analysed again.
    """
    taken: dict[str, dict] = {}
    if not provenance:
        return taken
    want = (_comparable(provenance.get("params", settings.for_columns())), code_fingerprint())
    for old in sorted(leftovers, key=lambda p: p.stat().st_mtime, reverse=True):
        for source in sources:
            name = output_name(source)
            candidate = old / name
            if name in taken or not candidate.is_file():
                continue
            summary = _summary_if_same(candidate, source, want, expected.get(Path(source).name))
            if summary is not None:
                os.replace(candidate, dest / name)
                taken[name] = summary
    if taken:
        logger.info("%d image(s) taken over from an interrupted run of this batch", len(taken))
    return taken


def _comparable(settings: dict):
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def _summary_if_same(h5: Path, source: str, want: tuple, expected: str | None) -> dict | None:
    """The summary of an earlier result if it matches the raw file, the
    settings and the code (``want``: parameters, :func:`code_fingerprint`)."""
    import h5py

    try:
        with h5py.File(h5, "r") as f:
            rec = json.loads(f.attrs.get("provenance", "{}") or "{}")
            status, reason = str(f.attrs["status"]), str(f.attrs["reason"])
            n_a = int(np.sum(f["columns/site"][()] == b"A")) if "site" in f["columns"] else 0
            n = len(f["columns/site"]) if "site" in f["columns"] else 0
            dispersion = float(f.attrs.get("dispersion", np.nan))
    except (OSError, KeyError, ValueError):
        return None
    inputs = rec.get("inputs") or [{}]
    digest = sha256_file(source) if Path(source).exists() else None
    params, code = want
    same = (digest is not None and inputs[0].get("sha256") == digest
            and expected in (None, digest)
            and _comparable(rec.get("params", {})) == params
            and rec.get("code_sha256") == code)
    if not same:
        return None
    out = {"source": source, "status": status, "reason": reason, "sha256": digest}
    if status == "ok":
        out.update(n_a=n_a, n_b=n - n_a, dispersion=dispersion)
    return out


def _compile_kernels_aside() -> None:
    """Compile the refinement kernels in a short-lived child process.

    On an installation whose Numba cache is empty (a fresh conda environment
    of the workflow), the first image would otherwise compile them, and the
    compiler's memory (~35 MB) would stay with the worker for the whole
    batch. With the cache filled, the child only loads it (~1 s per batch).
    A failure here is not an error: the workers compile for themselves.
    """
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", "from latticegenome.columns._kernels import warm_up; warm_up()"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def _analyse_star(job):
    return analyse_one(*job)
