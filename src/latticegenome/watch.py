"""Watch mode: analyse images as they land, keep a live page.

:func:`watch` polls each experiment's facility folder (the same listing the
workflow makes before it plans: :func:`latticegenome.ingest.increments.refresh_listing`).
When a listing changed it runs the workflow once for the watched
experiments' statistics (an *increment*: ingest of the new files, their
column finding and cells, the merge of partials) and rewrites
``<results>/live.html`` (:func:`latticegenome.figures.live.write_live_page`).
Nothing else is redone: earlier images keep their results.

Stopping: Ctrl-C or SIGTERM between increments stops at once; during an
increment the watch lets the running workflow finish its increment first
(a second signal stops it: Snakemake then removes the outputs of the jobs
it interrupted, and the next start finishes them). Snakemake runs in its own
session, so a Ctrl-C in the terminal reaches the watch only. A restart
resumes: whatever was ingested and analysed stays, whatever is new is the
next increment. On a cluster the watch runs on the login node and
Snakemake submits each increment's jobs through the profile.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Seconds after which a failed increment is tried again (nothing new needed).
RETRY_S = 60.0


class _Stop:
    """Signal bookkeeping: the first signal asks to stop, the second stops the increment."""

    def __init__(self):
        self.requested, self.child = 0, None

    def __call__(self, signum, frame):
        self.requested += 1
        if self.requested == 1:
            print(f"latticegenome watch: {signal.Signals(signum).name}: stopping after this "
                  "increment (again to stop it now)", file=sys.stderr, flush=True)
        elif self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)


def _snakemake_command(profile: str, targets, *, snakefile=None, directory=None,
                       configfile=None, extra=()) -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    # targets first: --configfile takes every word after it
    cmd = [str(exe) if exe.exists() else "snakemake", *targets, "--profile", profile]
    for flag, value in (("--snakefile", snakefile), ("--directory", directory),
                        ("--configfile", configfile)):
        if value is not None:
            cmd.append(f"{flag}={value}")
    return [*cmd, *extra]


def listings_changed(settings, config: dict, names, workdir: Path) -> list[str]:
    """The experiments whose facility listing changed (their markers rewritten)."""
    from latticegenome.ingest.backends import backend_for
    from latticegenome.ingest.increments import refresh_listing

    changed = []
    for name in names:
        exp = settings.experiments[name]
        marker = workdir / settings.scratch / name / "listing.json"
        try:
            backend = backend_for(exp.facility, config["facilities"][exp.facility],
                                  base=workdir, config=config)
            if refresh_listing(backend, exp.path, exp.pattern, marker):
                changed.append(name)
        except Exception as exc:  # noqa: BLE001 (one facility down: say so, watch the rest)
            logger.warning("%s: facility not listed: %s", name, exc)
    return changed


def watch(configfile: str | Path = "config/config.yaml", *, profile: str = "local",
          experiments=None, interval: float = 5.0, directory: str | Path = ".",
          snakefile=None, once: bool = False, max_increments: int | None = None,
          extra_args=()) -> int:
    """Poll, run an increment when something new arrived, keep the live page.

    Parameters
    ----------
    configfile : path
        The workflow configuration (relative to ``directory``).
    profile : str
        The Snakemake profile of each increment (``local``, ``titan``, ...).
    experiments : list of str, optional
        The experiments to watch (default all).
    interval : float
        Seconds between polls of the facilities.
    directory : path
        The workflow's working directory (where ``data/`` and ``results/`` are).
    snakefile : path, optional
        Default: Snakemake's (``Snakefile`` in ``directory``).
    once : bool
        One poll (and increment when needed), then return.
    max_increments : int, optional
        Return after this many increments (tests, benchmarks).
    extra_args : list of str
        More Snakemake arguments for each increment.

    Returns
    -------
    int
        0 when stopped by a signal or ``once``; the workflow's exit status
        when an increment failed and ``once``.
    """
    import yaml

    from latticegenome.core.config import settings_from_config

    workdir = Path(directory).resolve()
    cfg_path = Path(configfile) if Path(configfile).is_absolute() else workdir / configfile
    config = yaml.safe_load(cfg_path.read_text())
    settings = settings_from_config(config)
    names = list(experiments or settings.experiments)
    unknown = [n for n in names if n not in settings.experiments]
    if unknown:
        raise ValueError(f"no experiment {unknown[0]!r} in {cfg_path} "
                         f"(it has {', '.join(settings.experiments)})")
    results = workdir / settings.results
    targets = [f"{settings.results}/{n}/statistics.h5" for n in names]
    stop = _Stop()
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _loop(stop, settings, config, names, workdir, results, interval, once,
                     max_increments, _snakemake_command(
                         profile, targets, snakefile=snakefile, directory=workdir,
                         configfile=cfg_path, extra=extra_args))
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _loop(stop, settings, config, names, workdir, results, interval, once, max_increments,
          command) -> int:
    """The poll loop of :func:`watch`. The page is rewritten after each increment (and
    when the watch stops), not at every poll; a failed increment is retried after
    :data:`RETRY_S` even when nothing new arrived."""
    increments, status, last_run = 0, 0, None
    while not stop.requested:
        changed = listings_changed(settings, config, names, workdir)
        retry = status != 0 and time.monotonic() - last_run > RETRY_S
        if changed or last_run is None or retry:
            logger.info("increment %d: %s", increments + 1,
                        ", ".join(changed) or ("retrying" if retry else "catching up"))
            write_live(results, settings, names, workdir, status="running an increment")
            status, last_run = _run(command, stop, workdir), time.monotonic()
            increments += 1
            if status != 0:
                logger.warning("the increment ended with exit status %d (retried in %g s); "
                               "see %s and the logs in %s", status, RETRY_S,
                               workdir / ".latticegenome-watch.log", results)
            write_live(results, settings, names, workdir, refresh_s=0 if once else interval,
                       status="stopped" if (once or stop.requested) else
                       f"watching; polls every {interval:g} s" + (
                           "; the last increment failed" if status else ""))
        if once or (max_increments is not None and increments >= max_increments):
            break
        _sleep(interval, stop)
    write_live(results, settings, names, workdir, status="stopped", refresh_s=0)
    return status if once else 0


def _run(command, stop: _Stop, workdir: Path) -> int:
    """One Snakemake run, in its own session (a terminal's Ctrl-C reaches only us)."""
    from latticegenome.resume import remove_stale_lock

    remove_stale_lock(workdir)  # left by a killed Snakemake (never one of a live run)
    with open(workdir / ".latticegenome-watch.log", "a") as log:
        stop.child = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            return stop.child.wait()
        finally:
            stop.child = None


def _sleep(seconds: float, stop: _Stop) -> None:
    end = time.monotonic() + seconds
    while not stop.requested and time.monotonic() < end:
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))


# --------------------------------------------------------------------------- the live page


def write_live(results: Path, settings, names, workdir: Path, *, status: str,
               refresh_s: float = 5.0) -> None:
    """Rewrite ``results/live.html`` from what the workflow has written so far."""
    from latticegenome.figures.live import write_live_page

    pages = [live_experiment(results, workdir / settings.scratch, n, settings) for n in names]
    write_live_page(results / "live.html", pages, refresh_s=refresh_s, status=status)


def _table(path: Path) -> dict:
    from latticegenome.core.tables import read_table

    if not path.exists():
        return {}
    rows = read_table(path)
    return {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}


def _number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def live_experiment(results: Path, scratch: Path, name: str, settings) -> dict:
    """The live page's record of one experiment (see :func:`write_live_page`)."""
    from latticegenome.statistics.results import read_statistics

    out = {"name": name, "images_analysed": 0, "images_rejected": 0, "cells": 0,
           "rejected": [], "histograms": {}, "warnings": [], "newest": None,
           "classes": {"class": [], "count": [], "a_pm": [], "dy_pm": []}, "quality": {}}
    h5 = results / name / "statistics.h5"
    if not h5.exists():
        return out
    try:
        stats = read_statistics(h5)
    except Exception as exc:  # noqa: BLE001 (a page must be written whatever happened)
        out["warnings"] = [f"statistics not readable yet: {exc}"]
        return out
    summary = stats.summary
    quality = {k: [_number(v) for v in vals] for k, vals in _table(results / name / "images.tsv").items()}
    rejected = _table(results / name / "rejected.tsv")
    classes = _table(results / name / "classes.csv")
    out.update(images_analysed=summary.get("images_used", 0),
               images_rejected=summary.get("images_rejected", 0), cells=summary.get("cells", 0),
               warnings=list(summary.get("warnings", [])), histograms=stats.histograms,
               quality={k: v[-20:] for k, v in quality.items()},
               rejected=list(zip(rejected.get("file", []), rejected.get("reason", []))))
    if classes.get("class"):
        out["classes"] = {"class": [int(c) for c in classes["class"]],
                          "count": [int(float(c)) for c in classes["population"]],
                          "a_pm": [float(v) for v in classes["a_pm_mean"]],
                          "dy_pm": [float(v) for v in classes["dy_pm_mean"]]}
    if stats.images:
        out["newest"] = newest_image(results, scratch, name, stats, settings)
    return out


def newest_image(results: Path, scratch: Path, name: str, stats, settings) -> dict | None:
    """The newest analysed image of an experiment: its data, columns and cells."""
    from latticegenome.columns.batch import output_name
    from latticegenome.columns.readers import read_image
    from latticegenome.columns.store import read_columns
    from latticegenome.statistics.results import image_cells

    k = len(stats.images) - 1
    image = stats.images[k]
    found = sorted((results / name / "columns").glob(f"batch-*/{output_name(image)}"))
    raw = scratch / name / "raw" / image
    if not found or not raw.exists():
        return None
    try:
        cols, attrs = read_columns(found[-1])
        an = settings.analysis_for(name)
        data = read_image(raw, pixel_size_pm=an.pixel_size_pm, hdf5_dataset=an.hdf5_dataset,
                          stack=an.stack)[0].data
        cells = image_cells(results / name / "statistics.h5", k)
    except Exception as exc:  # noqa: BLE001 (the page goes on without the picture)
        logger.warning("%s: newest image not shown: %s", image, exc)
        return None
    return {"image": image, "data": np.asarray(data, float),
            "pixel_size_pm": float(attrs["pixel_size_pm"]),
            "columns": {"x": cols["x"], "y": cols["y"], "site": cols["site"]},
            "cells": {k2: cells[k2] for k2 in ("x", "y", "dx_pm", "dy_pm")}}


__all__ = ["listings_changed", "live_experiment", "newest_image", "watch", "write_live"]
