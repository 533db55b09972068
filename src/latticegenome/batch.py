"""Batches of images: one process analyses many images, each to its own HDF5 file.

Starting a Python process with NumPy, SciPy, scikit-image and the compiled
kernels costs about as much as analysing a 512² image, and on a cluster
every job also waits in the queue. The workflow therefore gives each job a
fixed batch of images (``batch_size`` in the configuration): the start-up
is paid once per batch, and 10,000 images become 100 jobs.

A broken image never costs the batch: it is written as ``rejected`` with its
reason, and the others go on.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import LatticeGenomeError

#: Keys of the analysis settings passed to :func:`latticegenome.analysis.analyse_file`.
_ANALYSIS_KEYS = ("pixel_size_pm", "spacing_pm", "hdf5_dataset", "stack", "significance",
                  "b_search")


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


def analyse_one(source: str, out: str, settings: dict, provenance: dict | None = None,
                log_file: str | None = None) -> dict:
    """Analyse one image and write its columns (or its rejection) to ``out``.

    Parameters
    ----------
    source : str
        Image file.
    out : str
        HDF5 file to write (atomically).
    settings : dict
        Analysis settings (see ``config/schema.yaml``, ``analysis``); ``pixel_size_pm``
        is used only for files that carry no pixel size.
    provenance : dict, optional
        ``rule``, ``workdir`` and ``params`` for the provenance record of ``out``.
    log_file : str, optional
        Named in the reason of an internal error (where its traceback is).

    Returns
    -------
    dict
        ``source``, ``status`` (``ok`` or ``rejected``), ``reason``, ``n_a``, ``n_b``,
        ``dispersion``; for an internal error also ``traceback``.
    """
    from .analysis import analyse_file
    from .provenance import make_record
    from .store import write_columns_h5

    prov = provenance or {}

    def record(instrument=None):
        if not prov:
            return None
        return make_record(out, rule=prov.get("rule", "find_columns"), params=prov.get("params", settings),
                           inputs=[source], instrument=instrument, workdir=prov.get("workdir"))

    kwargs = {k: settings.get(k) for k in _ANALYSIS_KEYS if settings.get(k) is not None}
    try:
        res = analyse_file(source, **kwargs)
    except LatticeGenomeError as exc:
        write_columns_h5(out, None, source=source, pixel_size_pm=None, status="rejected",
                         reason=exc.reason, provenance=record())
        return {"source": source, "status": "rejected", "reason": str(exc)}
    except Exception as exc:  # a bug must not cost the other images; the log has it
        where = f"; see {log_file}" if log_file else ""
        reason = f"internal error ({type(exc).__name__}: {exc}){where}"
        write_columns_h5(out, None, source=source, pixel_size_pm=None, status="rejected",
                         reason=reason, provenance=record())
        return {"source": source, "status": "rejected", "reason": reason,
                "traceback": traceback.format_exc()}
    img, _ = res.frames[0]
    merged = res.merged()
    instrument = {**img.metadata, "pixel_size_pm": img.pixel_size_pm,
                  "pixel_size_source": img.pixel_size_source}
    write_columns_h5(out, merged, source=source, pixel_size_pm=img.pixel_size_pm,
                     shape=img.data.shape, metadata=img.metadata, provenance=record(instrument))
    n_a = int((merged.site == "A").sum())
    return {"source": source, "status": "ok", "reason": "", "n_a": n_a, "n_b": len(merged) - n_a,
            "dispersion": float(merged.dispersion)}


def analyse_batch(sources: Sequence[str], out_dir: str | os.PathLike, settings: dict, *,
                  workers: int = 1, provenance: dict | None = None, log_file: str | None = None,
                  log: Callable[[str], None] | None = None) -> list[dict]:
    """Analyse a batch of images into ``out_dir/<image name>.h5``, one file each.

    Parameters
    ----------
    sources : sequence of str
        Image files. Two with the same file name are refused (their outputs would collide).
    out_dir : path
        Folder for the outputs (created).
    settings : dict
        Analysis settings, as for :func:`analyse_one`.
    workers : int
        Processes analysing images at the same time (1: in this process). Each
        needs about 220-280 MB (512² to 2048² images; benchmarks/README.md).
    provenance, log_file
        As for :func:`analyse_one`.
    log : callable, optional
        Called with one line per image.

    Returns
    -------
    list of dict
        One summary per image (see :func:`analyse_one`), in the order of ``sources``.
    """
    log = log or (lambda message: None)
    names = [output_name(s) for s in sources]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"images with the same file name in one batch: {', '.join(dup)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(str(s), str(out_dir / n), settings, provenance, log_file) for s, n in zip(sources, names)]
    workers = max(1, min(int(workers), len(jobs)))
    from . import analysis  # noqa: F401  (imported once, before the workers are forked)
    from ._memory import return_freed_memory

    return_freed_memory()  # image-sized temporaries go back to the system (inherited by forks)
    _compile_kernels_aside()

    if workers == 1:
        results = [analyse_one(*job) for job in jobs]
    else:
        # fork: the workers inherit the imported library (no second start-up)
        ctx = multiprocessing.get_context("fork")
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            results = list(pool.map(_analyse_star, jobs, chunksize=1))
    for r in results:
        if r["status"] == "ok":
            log(f"{r['source']}: {r['n_a']} A, {r['n_b']} B columns; dispersion {r['dispersion']:.3f}")
        else:
            log(f"{r['source']}: rejected: {r['reason']}")
            if "traceback" in r:
                log(r["traceback"])
    return results


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

    subprocess.run([sys.executable, "-c", "from latticegenome._kernels import warm_up; warm_up()"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def _analyse_star(job):
    return analyse_one(*job)
