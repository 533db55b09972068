"""One image series, end to end: frames -> columns -> registration -> tracks -> series.

:func:`track_series` analyses every frame with the same finder as single images
(:func:`latticegenome.columns.analysis.analyse_array`), sets aside a frame the
model does not fit (with its reason; the rest go on), registers the frames
(:func:`~latticegenome.dynamics.registration.register_rigid`, then
:func:`~latticegenome.dynamics.registration.register_lattice` on the A columns),
gives every column a track id (:func:`~latticegenome.dynamics.registration.assign_tracks`)
and every cell the id of its lattice site in the reference frame
(:func:`~latticegenome.dynamics.registration.align_indices`), and measures the
cells of each frame in the frame's own coordinates (the lattice parameters and
displacements are physical only there: registration takes out uniform strain).
:func:`write_track_outputs` writes the CSV (one row per column per frame) and
``dynamics.h5`` (:func:`~latticegenome.dynamics.series.write_dynamics_h5`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from latticegenome.core.errors import LatticeGenomeError

logger = logging.getLogger(__name__)

#: Columns of the track CSV, in order.
TRACK_FIELDS = ("frame", "track", "site", "x", "y", "x_err", "y_err", "x_raw", "y_raw",
                "detected", "intensity")


def _analyse_frames(frames, pixel_size_pm: float, settings, source: str):
    """Columns of each frame, or why it was set aside: ([(k, cols)], [(k, reason)])."""
    from latticegenome.columns.analysis import analyse_array
    from latticegenome.columns.readers import validate_image

    good, bad = [], []
    for k, frame in enumerate(frames):
        if isinstance(frame, str):  # a frame's file that could not be read: why
            logger.warning("%s frame %d set aside: %s", source, k, frame)
            bad.append((k, frame))
            continue
        try:
            data = validate_image(np.asarray(frame, float), f"{source} frame {k}")
            good.append((k, analyse_array(data, pixel_size_pm, settings).as_dict()))
        except (LatticeGenomeError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            logger.warning("%s frame %d set aside: %s", source, k, reason)
            bad.append((k, reason))
    if len(good) < 2:
        why = "; ".join(f"frame {k}: {r}" for k, r in bad[:3])
        raise LatticeGenomeError(f"{len(good)} of {len(frames)} frames have a lattice: a series "
                                 f"needs two or more{' (' + why + ')' if why else ''}", source)
    return good, bad


def _frame_cells(cols: dict, aligned: dict, pixel_size_pm: float, projection) -> dict:
    """Cells of one frame in its own coordinates, their ids from the aligned indices."""
    from latticegenome.dynamics.series import cell_ids
    from latticegenome.statistics.cells import measure_cells

    own = {**cols, "i": aligned[:, 0], "j": aligned[:, 1]}  # reference-frame indexing
    cells = measure_cells(own, pixel_size_pm, projection=projection)
    cells["cell_id"] = cell_ids(cells["i"], cells["j"])
    return cells


def track_series(frames, pixel_size_pm: float, settings=None, *, source: str = "series",
                 order: int = 1, meta: dict | None = None, max_gap: int = 1) -> dict:
    """Columns, registration, tracks and cells of every frame of one series.

    Parameters
    ----------
    frames : sequence of 2-D ndarray or str
        The frames, in order, all of one shape; a str stands for a frame that
        could not be read (its reason): set aside like a frame without a lattice.
    pixel_size_pm : float
    settings : AnalysisSettings, mapping or None
        As for single images.
    source : str
        The file, for messages.
    order : int
        Order of the lattice registration field (1 affine, 2 quadratic).
    meta : dict, optional
        Per-frame ``time_s`` (s), ``temperature_K`` (K), ``dose_e_per_A2`` (e/A^2),
        one value per frame of ``frames`` (:func:`series_frame_meta`).
    max_gap : int
        Frames in a row a column may be missed and keep its track
        (:func:`~latticegenome.dynamics.registration.assign_tracks`).

    Returns
    -------
    dict
        ``frames`` (for :mod:`latticegenome.dynamics.series`: per analysed
        frame ``frame``, ``columns`` with ``track``, registered ``x``/``y``
        and ``x_raw``/``y_raw``, ``cells``), ``registration``, ``set_aside``
        (frame, reason), ``meta`` (of the analysed frames).

    Raises
    ------
    LatticeGenomeError
        Frames of different shapes, or fewer than two frames with a lattice.
    """
    from latticegenome.dynamics.registration import (
        align_indices,
        apply_registration,
        assign_tracks,
        register_lattice,
        register_rigid,
    )

    frames = list(frames)
    arrays = [(k, f) for k, f in enumerate(frames) if not isinstance(f, str)]
    if len(frames) < 2:
        raise LatticeGenomeError(f"{len(frames)} frame: a series needs two or more", source)
    bad_shape = [k for k, f in arrays if np.shape(f) != np.shape(arrays[0][1])] if arrays else []
    if bad_shape:
        k, k0 = bad_shape[0], arrays[0][0]
        raise LatticeGenomeError(f"frame {k} has shape {np.shape(frames[k])}, frame {k0} "
                                 f"{np.shape(frames[k0])}: a series has one frame size", source)
    good, bad = _analyse_frames(frames, pixel_size_pm, settings, source)
    kept = [k for k, _ in good]
    cols = [c for _, c in good]
    rigid = register_rigid([frames[k] for k in kept])
    # a frame off by a whole lattice vector is corrected where the columns tell, else
    # flagged with a warning naming it (lattice_shift_ambiguous)
    reg = register_lattice(cols, rigid=rigid, order=order, source=source, frame_ids=kept)
    tracks = assign_tracks(cols, reg, max_gap=max_gap)
    aligned = align_indices(cols, tracks)
    out = []
    for n, (k, c) in enumerate(good):
        xr, yr = apply_registration(c["x"], c["y"], reg, n)
        columns = {**c, "track": tracks[n], "x_raw": c["x"], "y_raw": c["y"], "x": xr, "y": yr,
                   "intensity": 2 * np.pi * np.asarray(c["sigma"]) ** 2 * np.asarray(c["amplitude"])}
        cells = _frame_cells(c, aligned[n], pixel_size_pm, (c.get("info") or {}).get("projection"))
        out.append({"frame": k, "columns": columns, "cells": cells})
    meta = {key: np.asarray(v, float)[kept] for key, v in (meta or {}).items()}
    return {"frames": out, "registration": reg, "set_aside": bad, "meta": meta,
            "source": source, "max_gap": int(max_gap)}


def track_table(result: dict) -> dict:
    """The CSV table of :func:`track_series`: one row per column per frame (a lattice
    site reported but not detected in a frame has ``track`` -1 there)."""
    rows = {k: [] for k in TRACK_FIELDS}
    for fr in result["frames"]:
        c = fr["columns"]
        n = len(c["x"])
        rows["frame"].append(np.full(n, fr["frame"]))
        for key in TRACK_FIELDS[1:]:
            default = np.ones(n, bool) if key == "detected" else np.full(n, np.nan)
            rows[key].append(np.asarray(c.get(key, default)))
    return {k: np.concatenate(v) if v else np.array([]) for k, v in rows.items()}


def _wall_in_image(wall: dict) -> dict:
    """The wall's velocity along the image axes too (px/s; the lattice index axis may
    point either way): fits of its per-frame image position against time."""
    from latticegenome.dynamics.series import linear_fit

    t = np.asarray(wall["time_s"], float)
    for axis in ("x", "y"):
        pos = np.asarray(wall[f"{axis}_px"], float)
        ok = np.isfinite(t) & np.isfinite(pos)
        if ok.sum() >= 3:
            fit = linear_fit(t[ok], pos[ok])
            wall[f"velocity_{axis}_px_per_s"] = fit["slope"]
            wall[f"velocity_{axis}_px_per_s_err"] = fit["slope_err"]
    return wall


def polar_states(cells: dict, *, sigmas: float = 2.0) -> np.ndarray:
    """Two states of each cell from its B displacement along y: 1 up (dy above
    ``sigmas`` errors), 0 down (below), -1 undetermined (within, or unknown)."""
    dy = np.asarray(cells["dy_pm"], float)
    err = np.asarray(cells["dy_err_pm"], float)
    out = np.full(dy.size, -1, dtype=np.int64)
    out[dy > sigmas * err] = 1
    out[dy < -sigmas * err] = 0
    return out


#: Above this fraction of undetermined polar states the thresholded transitions are
#: flagged (a warning in the log): the hidden Markov model's counts are the ones to use.
UNDETERMINED_WARN = 0.2


def _measured(cells: dict, n_frames: int) -> np.ndarray:
    """(frames, cells) mask of the cells measured (a finite displacement) in each frame."""
    from latticegenome.dynamics.series import pivot

    _, dy = pivot(cells, "dy_pm", key="cell_id", n_frames=n_frames)
    return np.isfinite(dy)


def polar_hmm(cells: dict, n_frames: int) -> dict:
    """The two polar states of every cell through the series from a hidden Markov model
    (:func:`latticegenome.dynamics.hmm.fit_polar_hmm`) of its displacement along y and
    its error: expected transition counts, per-frame transition probabilities, the
    state means (pm) and whether it beats the same states without memory."""
    from latticegenome.dynamics.hmm import fit_polar_hmm
    from latticegenome.dynamics.series import pivot

    _, dy = pivot(cells, "dy_pm", key="cell_id", n_frames=n_frames)
    _, err = pivot(cells, "dy_err_pm", key="cell_id", n_frames=n_frames)
    fit = fit_polar_hmm(dy, err)
    keep = ("mu_pm", "tau_pm", "transition", "initial", "stationary", "counts", "loglik",
            "loglik_mixture", "bic", "bic_mixture", "beats_mixture", "iterations", "converged")
    return {k: fit[k] for k in keep}


def _tracked(frames: list[dict]) -> list[dict]:
    """The frames with only their tracked columns (undetected sites have track -1)."""
    return [{**f, "columns": {k: np.asarray(v)[np.asarray(f["columns"]["track"]) >= 0]
                              for k, v in f["columns"].items() if np.ndim(v) == 1}}
            for f in frames]


def _summaries(result: dict, cells: dict, meta: dict, tracked: list[dict]) -> dict:
    """The series' summaries (each one left out, with a line in the log, if it cannot be made)."""
    from latticegenome.dynamics.series import (
        beam_damage,
        class_matrix,
        transitions,
        versus,
        wall_motion,
    )

    n_frames = len(result["frames"])

    def polar_transitions():
        _, labels = class_matrix({**cells, "class": polar_states(cells)}, n_frames=n_frames)
        out = transitions(labels, meta.get("time_s"), meta.get("temperature_K"), n_classes=2)
        measured = _measured(cells, n_frames)  # same cell order as labels (sorted ids)
        out["undetermined_fraction"] = (float((labels == -1)[measured].mean()) if measured.any()
                                        else float("nan"))
        if out["undetermined_fraction"] > UNDETERMINED_WARN:
            logger.warning("%s: %.0f %% of the cells' polar states are undetermined (within 2 "
                           "errors of zero): the thresholded transitions undercount; see "
                           "summaries/polar_hmm", result["source"], 100 * out["undetermined_fraction"])
        return out

    steps = [("a_vs_time", lambda: versus(cells, by="time_s", field="a_pm")),
             ("dy_vs_time", lambda: versus(cells, by="time_s", field="dy_pm")),
             ("wall", lambda: _wall_in_image(wall_motion(cells, meta))),
             ("polar_transitions", polar_transitions),
             ("polar_hmm", lambda: polar_hmm(cells, n_frames)),
             ("beam_damage", lambda: beam_damage(tracked, meta))]
    if np.isfinite(np.asarray(meta.get("temperature_K", [np.nan]), float)).any():
        steps.append(("a_vs_temperature", lambda: versus(cells, by="temperature_K", field="a_pm")))
    out = {}
    for name, fn in steps:
        try:
            out[name] = fn()
        except (ValueError, KeyError, TypeError, np.linalg.LinAlgError) as exc:
            logger.info("%s: no %s: %s", result["source"], name, exc)
    aside = result["set_aside"]
    out["set_aside"] = {"frame": np.array([k for k, _ in aside], np.int64),
                        "reason": np.array([str(r) for _, r in aside], dtype=object)}
    return out


def _classify(result: dict, cells: dict, class_model, class_options: dict | None) -> dict | None:
    """Per-frame classes of the cells (:func:`~latticegenome.dynamics.frameclasses.frame_classes`),
    written into ``cells`` (``class``, ``class_probability``); None (classes -1, a line in
    the log) where there is no model to be had."""
    from latticegenome.dynamics.frameclasses import frame_classes

    opts = dict(class_options or {})
    errors = (ValueError, KeyError, TypeError, OSError, np.linalg.LinAlgError)
    out = None
    if class_model is not None:
        try:
            out = frame_classes(cells, class_model, **opts)
        except errors as exc:  # the other experiment's model cannot be used: the series' own
            logger.warning("%s: the class model of %s cannot be used (%s): classes fitted on "
                           "the series' own cells instead", result["source"],
                           opts.get("model_source", "the configured experiment"), exc)
    if out is None:
        try:
            out = frame_classes(cells, None, **{**opts, "model_source": "series"})
        except errors as exc:
            logger.info("%s: no per-frame classes: %s", result["source"], exc)
            cells["class_probability"] = np.full(len(cells["frame"]), np.nan)
            return None
    cells["class"], cells["class_probability"] = out["labels"], out["probability"]
    logger.info("%s: %d classes (model: %s), %.0f %% of the cells unknown", result["source"],
                out["n_classes"], out["class_model_source"], 100 * out["unknown_fraction"])
    return out


def write_track_outputs(result: dict, *, csv=None, h5=None, provenance=None, class_model=None,
                        class_options: dict | None = None) -> dict:
    """Write the track CSV and/or ``dynamics.h5``; return the summaries written.

    Summaries: lattice parameter and B displacement against time (and
    temperature when known), the domain wall, transitions between the two
    polar states of each cell (:func:`polar_states`: counts, rates per s and
    per K, dwell times), transitions between the cells' configuration classes
    (``class_transitions``: :func:`~latticegenome.dynamics.frameclasses.class_transitions`)
    and beam damage (columns lost, A intensity decay).

    Parameters
    ----------
    result : dict
        :func:`track_series`.
    csv, h5 : path, optional
    provenance : dict, optional
    class_model : ClassModel, dict, path or None
        Another experiment's class model (e.g. its ``classes/model.json``:
        :func:`~latticegenome.dynamics.frameclasses.load_class_model`); None: a model
        fitted on the series' own cells of all frames.
    class_options : dict, optional
        Keywords of :func:`~latticegenome.dynamics.frameclasses.frame_classes`:
        ``model_source`` (the experiment's name, recorded), ``min_probability``,
        ``max_classes``, ``seed``, ``detrend``, ``merge_distance``.
    """
    from latticegenome.core.tables import write_table_csv
    from latticegenome.dynamics.frameclasses import class_transitions
    from latticegenome.dynamics.series import cell_series, column_series, write_dynamics_h5

    table = track_table(result)
    if csv is not None:
        write_table_csv(csv, {k: list(v) for k, v in table.items()}, TRACK_FIELDS)
    meta = dict(result["meta"] or {})  # without times (a dose alone, say): per frame
    meta.setdefault("time_s", np.array([f["frame"] for f in result["frames"]], float))
    cells = cell_series(result["frames"], meta)
    classes = _classify(result, cells, class_model, class_options)
    tracked = _tracked(result["frames"])
    summaries = _summaries(result, cells, meta, tracked)
    if classes is not None:
        summaries["class_transitions"] = class_transitions(
            cells, classes, meta, n_frames=len(result["frames"]), source=result["source"])
    if h5 is not None:
        reg = {k: v for k, v in result["registration"].items() if isinstance(v, np.ndarray)}
        reg["frames_analysed"] = np.array([f["frame"] for f in result["frames"]])
        write_dynamics_h5(h5, columns=column_series(tracked), cells=cells,
                          registration=reg, summaries=summaries, provenance=provenance)
    return summaries


def _natural_key(name: str):
    """``frame_9`` before ``frame_10``: digits compared as numbers."""
    import re

    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def order_frames(paths, order: str = "number", *, settings=None) -> list[str]:
    """The files of a series, in frame order.

    Parameters
    ----------
    paths : list of path
    order : {"number", "name", "time"}
        ``number``: the numbers in the file names (``f_9`` before ``f_10``);
        ``name``: the names as text; ``time``: the acquisition time in each
        file's metadata.
    settings : AnalysisSettings, optional
        How the files are read (``time``).

    Raises
    ------
    LatticeGenomeError
        ``time`` and a file whose metadata has no acquisition time (named).

    Examples
    --------
    >>> order_frames(["f_10.tif", "f_9.tif", "f_1.tif"])
    ['f_1.tif', 'f_9.tif', 'f_10.tif']
    """
    paths = [str(p) for p in paths]
    if order == "name":
        return sorted(paths, key=lambda p: Path(p).name)
    if order == "number":
        return sorted(paths, key=lambda p: _natural_key(Path(p).name))
    from latticegenome.columns.readers import read_image

    when = {}
    for p in paths:
        meta = read_image(p, pixel_size_pm=getattr(settings, "pixel_size_pm", None) or 1.0,
                          stack="sum")[0].metadata or {}
        if not meta.get("acquisition_time"):
            raise LatticeGenomeError("no acquisition time in the file's metadata: order the "
                                     "series by number or name", p)
        when[p] = str(meta["acquisition_time"])
    return sorted(paths, key=lambda p: (when[p], _natural_key(Path(p).name)))


#: Columns of an experiment's table of series (``dynamics.tsv``).
SERIES_FIELDS = ("series", "status", "reason", "frames", "frames_tracked", "frames_set_aside",
                 "set_aside", "registration_residual_px", "tracks_throughout",
                 "wall_velocity_x_px_per_s", "wall_velocity_y_px_per_s", "a_slope",
                 "a_slope_per", "dy_mean_pm", "frames_shift_corrected", "frames_shift_ambiguous",
                 "classes", "class_model_source", "class_unknown_fraction")


def read_frames_csv(path, n_frames: int) -> dict:
    """Per-frame ``time_s``, ``temperature_K``, ``dose_e_per_A2`` from a CSV, one row per frame.

    Raises
    ------
    LatticeGenomeError
        Naming the file: not one row per frame, or a value that is not a number.
    """
    from latticegenome.core.tables import read_table

    rows = read_table(path)
    if len(rows) != n_frames:
        raise LatticeGenomeError(f"{len(rows)} rows for {n_frames} frames", str(path))
    keys = [k for k in ("time_s", "temperature_K", "dose_e_per_A2") if rows and k in rows[0]]
    try:
        return {k: [float(r[k]) if r[k] != "" else float("nan") for r in rows] for k in keys}
    except ValueError as exc:
        raise LatticeGenomeError(f"not a number: {exc}", str(path)) from None


def write_rejected_series(h5, csv, reason: str, *, provenance=None) -> None:
    """The outputs of a series that could not be followed: its reason, no rows."""
    import h5py

    from latticegenome.core.fsutil import atomic_path
    from latticegenome.core.tables import write_table_csv

    write_table_csv(csv, {k: [] for k in TRACK_FIELDS}, TRACK_FIELDS)
    with atomic_path(h5) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["status"], f.attrs["reason"] = "rejected", reason
        f.attrs["provenance"] = json.dumps(provenance or {})


def _frames_flagged(reg: dict, frames: np.ndarray, key: str) -> str:
    """The frame numbers whose registration entry ``key`` is true, as ``"3 7"`` ('' none)."""
    flags = np.asarray(reg.get(key, []), bool)
    return " ".join(str(int(k)) for k, f in zip(frames, flags) if f)


def series_row(h5) -> dict:
    """One series' row of ``dynamics.tsv`` (:data:`SERIES_FIELDS`) from its dynamics file."""
    import h5py

    from latticegenome.dynamics.series import read_dynamics

    name = Path(h5).name[:-3] if Path(h5).parent.name == "dynamics" else Path(h5).parent.name
    row = dict.fromkeys(SERIES_FIELDS, np.nan) | {"series": name, "reason": "", "set_aside": ""}
    with h5py.File(h5, "r") as f:
        if f.attrs.get("status") == "rejected":
            return row | {"status": "rejected", "reason": str(f.attrs["reason"])}
    d = read_dynamics(h5)
    reg, summ, cols = d["registration"], d["summaries"], d["columns"]
    frames = np.asarray(reg.get("frames_analysed", []))
    side = summ.get("set_aside", {})
    aside = list(zip(np.asarray(side.get("frame", []), int).tolist(),
                     [str(r) for r in side.get("reason", [])]))
    counts = np.bincount(np.asarray(cols["track"], np.int64)) if len(cols.get("track", [])) else []
    a_fit = summ.get("a_vs_temperature") or summ.get("a_vs_time") or {}
    row.update(status="ok", frames=int(frames.size + len(aside)), frames_tracked=int(frames.size),
               frames_set_aside=len(aside), set_aside="; ".join(f"frame {k}: {r}" for k, r in aside),
               registration_residual_px=float(np.nanmedian(reg["residual_rms_px"])),
               tracks_throughout=int(np.sum(np.asarray(counts) == frames.size)),
               a_slope=a_fit.get("slope", np.nan),
               a_slope_per="K" if "a_vs_temperature" in summ else "s",
               dy_mean_pm=float(np.nanmean(d["cells"].get("dy_pm", [np.nan]))),
               frames_shift_corrected=_frames_flagged(reg, frames, "lattice_shift_corrected"),
               frames_shift_ambiguous=_frames_flagged(reg, frames, "lattice_shift_ambiguous"))
    ct = summ.get("class_transitions", {})
    row.update(classes=len(ct.get("classes", [])),
               class_model_source=ct.get("class_model_source", ""),
               class_unknown_fraction=ct.get("unknown_fraction", np.nan))
    for axis in ("x", "y"):
        row[f"wall_velocity_{axis}_px_per_s"] = summ.get("wall", {}).get(
            f"velocity_{axis}_px_per_s", np.nan)
    return row


__all__ = ["SERIES_FIELDS", "TRACK_FIELDS", "order_frames", "read_frames_csv", "series_row",
           "track_series", "track_table", "write_rejected_series", "write_track_outputs"]
