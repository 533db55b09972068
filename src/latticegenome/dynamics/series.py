"""Time series of tracked columns and cells: transitions, wall motion, trends, beam damage.

Everything here works on plain inputs (dicts of NumPy arrays), so that it can be fed
by the registration and tracking of :mod:`latticegenome.dynamics` or by any other
source of tracked frames.

Conventions
-----------
``frames``
    A list with one dict per frame of the series, in acquisition order (frame ``k``
    is ``frames[k]``). Each dict holds

    ``columns``
        dict of equal-length 1-D arrays, one entry per column: ``track`` (int, the
        same lattice site in every frame, unique within a frame), ``site`` ("A",
        "B", "O"), ``x``, ``y`` (px, registered into the reference frame) and,
        optional (NaN where absent), ``x_err``, ``y_err`` (px), ``x_raw``, ``y_raw``
        (px, in the frame as recorded) and ``intensity`` (integrated counts, image
        units). A column lost in a frame is either absent from that frame or has
        NaN ``x``/``y``.
    ``cells``
        dict of equal-length 1-D arrays as
        :func:`latticegenome.statistics.cells.measure_cells` returns them (its
        :data:`~latticegenome.statistics.cells.CELL_FIELDS`: positions in px,
        lengths and displacements in pm). A cell's identity across frames is its
        lattice indices (i, j) in the reference frame's indexing, assumed already
        aligned: ``cell_id`` (int) when given, else :func:`cell_ids` of ``i, j``.
        ``u, v`` default to ``i, j``. A class per cell may come as ``cells["class"]``
        or as the frame's ``classes`` (int per cell, -1 unknown).
``meta``
    dict of per-frame arrays (length = number of frames): ``time_s`` (s),
    ``temperature_K`` (K), ``dose_e_per_A2`` (accumulated dose, e per A^2). Any may
    be missing or NaN; a missing one is NaN throughout.
Long tables
    :func:`column_series` and :func:`cell_series` return "long" tables: dicts of
    equal-length arrays with one row per (frame, track) or (frame, cell), sorted by
    frame then by track / cell id. :func:`pivot` turns one field into a
    (n_frames, n_ids) matrix.
Wall position
    In lattice units along the chosen axis: A-column planes at integers, cell ``u``
    spanning [u, u + 1] (its centre at u + 0.5).

A hidden Markov model of the classes (hmmlearn) is not provided: the transition
counts and rates here are those of the observed labels between consecutive frames.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from latticegenome.core.errors import LatticeGenomeError
from latticegenome.core.fsutil import atomic_path
from latticegenome.core.tables import write_table_csv
from latticegenome.statistics.cells import BOOL_FIELDS, CELL_FIELDS

#: Version of the layout of ``dynamics.h5`` this module writes (and the newest it reads).
FORMAT_VERSION = 1

#: Fields of :func:`column_series`, in order.
COLUMN_FIELDS = ("frame", "track", "site", "x", "y", "x_err", "y_err", "x_raw", "y_raw",
                 "intensity")

#: Per-frame metadata, in order.
META_FIELDS = ("time_s", "temperature_K", "dose_e_per_A2")

#: Units of the fields written to ``dynamics.h5`` and the CSVs.
UNITS = {
    "x": "px", "y": "px", "x_err": "px", "y_err": "px", "x_raw": "px", "y_raw": "px",
    "intensity": "image counts", "a_pm": "pm", "b_pm": "pm", "dx_pm": "pm", "dy_pm": "pm",
    "dx_err_pm": "pm", "dy_err_pm": "pm", "angle_deg": "deg", "area_pm2": "pm^2",
    "rotation_deg": "deg", "exx": "1", "eyy": "1", "exy": "1", "time_s": "s",
    "temperature_K": "K", "dose_e_per_A2": "e/A^2", "rates_per_s": "1/s", "rates_per_K": "1/K",
    "exposure_s": "s", "exposure_K": "K", "position_cells": "lattice units",
    "position_px": "px", "velocity_cells_per_s": "lattice units/s", "velocity_px_per_s": "px/s",
    "velocity_pm_per_s": "pm/s", "length_frames": "frames", "length_s": "s",
    "class": "class id (-1 unknown)", "class_probability": "1",
}

_OFFSET = 1 << 20  # lattice indices in (-2**20, 2**20)
_STRIDE = 1 << 21


# --- identities and validation ----------------------------------------------


def cell_ids(i, j) -> np.ndarray:
    """Stable integer ids of cells from their lattice indices.

    Parameters
    ----------
    i, j : array_like of int
        Lattice indices of the cells' (i, j) corner, in the reference frame's
        indexing; ``|i|, |j| < 2**20``.

    Returns
    -------
    ndarray of int64
        ``(i + 2**20) * 2**21 + (j + 2**20)``: the same cell has the same id in
        every frame; ids sort by i, then j. :func:`cell_indices` inverts it.

    Raises
    ------
    ValueError
        If an index is out of range or not an integer.
    """
    i, j = np.asarray(i), np.asarray(j)
    for name, a in (("i", i), ("j", j)):
        if a.size and (a.dtype.kind not in "iu" and not np.all(np.mod(a, 1) == 0)):
            raise ValueError(f"cell index {name} must be integers")
        if a.size and np.max(np.abs(a)) >= _OFFSET:
            raise ValueError(f"cell index {name} out of range (|{name}| < 2**20)")
    return (i.astype(np.int64) + _OFFSET) * _STRIDE + (j.astype(np.int64) + _OFFSET)


def cell_indices(ids) -> tuple[np.ndarray, np.ndarray]:
    """The lattice indices (i, j) of cell ids made by :func:`cell_ids`."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids // _STRIDE - _OFFSET, ids % _STRIDE - _OFFSET


def _table_length(table, what: str, required=(), where: str = "") -> int:
    """The common length of the arrays of ``table``; ValueError (prefixed ``where``) if not."""
    if not isinstance(table, dict):
        raise ValueError(f"{where}{what} must be a dict of arrays")
    missing = [k for k in required if k not in table]
    if missing:
        raise ValueError(f"{where}{what} lacks {', '.join(missing)}")
    lengths = {}
    for key, value in table.items():
        arr = np.asarray(value)
        if arr.ndim != 1:
            raise ValueError(f"{where}{what} field {key!r} is not 1-D")
        lengths[key] = arr.shape[0]
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise ValueError(f"{where}{what} arrays differ in length ({detail})")
    return next(iter(lengths.values()), 0)


def _frames(frames) -> list:
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ValueError("frames must be a non-empty list of per-frame dicts")
    for k, fr in enumerate(frames):
        if not isinstance(fr, dict):
            raise ValueError(f"frame {k}: not a dict")
    return list(frames)


def frame_meta(meta: dict | None, n_frames: int) -> dict[str, np.ndarray]:
    """The per-frame metadata as float arrays of length ``n_frames`` (NaN where missing).

    Parameters
    ----------
    meta : dict or None
        ``time_s`` (s), ``temperature_K`` (K), ``dose_e_per_A2`` (accumulated,
        e per A^2); each optional.
    n_frames : int

    Returns
    -------
    dict
        Keys :data:`META_FIELDS`.

    Raises
    ------
    ValueError
        If an array's length is not ``n_frames``.
    """
    meta = meta or {}
    out = {}
    for key in META_FIELDS:
        if meta.get(key) is None:
            out[key] = np.full(n_frames, np.nan)
            continue
        arr = np.asarray(meta[key], dtype=float).reshape(-1)
        if arr.shape[0] != n_frames:
            raise ValueError(f"meta {key!r} has {arr.shape[0]} entries for {n_frames} frames")
        out[key] = arr
    return out


def _optional(table: dict, key: str, n: int, dtype=float, fill=np.nan) -> np.ndarray:
    if key in table and table[key] is not None:
        return np.asarray(table[key]).astype(dtype)
    return np.full(n, fill, dtype=dtype)


# --- long tables ---------------------------------------------------------------


def _frame_columns(fr: dict, k: int) -> dict[str, np.ndarray]:
    cols = fr.get("columns")
    n = _table_length(cols, "columns", ("track", "site", "x", "y"), f"frame {k}: ")
    track = np.asarray(cols["track"])
    if track.size and track.dtype.kind not in "iu":
        if not np.all(np.isfinite(track.astype(float))) or np.any(np.mod(track, 1) != 0):
            raise ValueError(f"frame {k}: columns 'track' must be integers")
    track = track.astype(np.int64)
    if np.unique(track).size != n:
        raise ValueError(f"frame {k}: columns 'track' repeats an id")
    out = {"frame": np.full(n, k, dtype=np.int64), "track": track,
           "site": np.asarray(cols["site"]).astype(str)}
    for key in COLUMN_FIELDS[3:]:
        out[key] = _optional(cols, key, n)
    order = np.argsort(track, kind="stable")
    return {key: v[order] for key, v in out.items()}


def _concat(parts: list[dict], fields) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in fields}


def column_series(frames) -> dict[str, np.ndarray]:
    """The long table of the tracked columns of every frame.

    Parameters
    ----------
    frames : list of dict
        Per frame ``columns`` (see the module's conventions).

    Returns
    -------
    dict of ndarray
        One row per (frame, column), sorted by frame then track: ``frame``,
        ``track`` (int), ``site`` (str), ``x``, ``y``, ``x_err``, ``y_err``,
        ``x_raw``, ``y_raw`` (px; NaN where not given), ``intensity`` (image units).

    Raises
    ------
    ValueError
        Naming the frame, if its columns are missing, of unequal lengths, or repeat
        a track id.
    """
    frames = _frames(frames)
    return _concat([_frame_columns(fr, k) for k, fr in enumerate(frames)], COLUMN_FIELDS)


def _cell_fields() -> tuple[str, ...]:
    rest = tuple(f for f in CELL_FIELDS if f not in ("i", "j", "u", "v"))
    return ("frame", "cell_id", "i", "j", "u", "v", *rest, "class", *META_FIELDS)


def _frame_cells(fr: dict, k: int) -> dict[str, np.ndarray]:
    cells = fr.get("cells")
    n = _table_length(cells, "cells", (), f"frame {k}: ")
    if "cell_id" in cells:
        ids = np.asarray(cells["cell_id"]).astype(np.int64)
    elif "i" in cells and "j" in cells:
        ids = cell_ids(cells["i"], cells["j"])
    else:
        raise ValueError(f"frame {k}: cells need 'cell_id' or lattice indices 'i', 'j'")
    if np.unique(ids).size != n:
        raise ValueError(f"frame {k}: cells repeat a cell id")
    ci, cj = cell_indices(ids)
    i = _optional(cells, "i", n, np.int64, 0) if "i" in cells else ci
    j = _optional(cells, "j", n, np.int64, 0) if "j" in cells else cj
    out = {"frame": np.full(n, k, dtype=np.int64), "cell_id": ids, "i": i, "j": j,
           "u": _optional(cells, "u", n, np.int64) if "u" in cells else i.copy(),
           "v": _optional(cells, "v", n, np.int64) if "v" in cells else j.copy()}
    for key in _cell_fields()[6:-4]:
        kind = bool if key in BOOL_FIELDS else float
        out[key] = _optional(cells, key, n, kind, False if kind is bool else np.nan)
    labels = fr.get("classes", cells.get("class"))
    if labels is None:
        labels = np.full(n, -1)
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"frame {k}: {labels.shape[0]} classes for {n} cells")
    out["class"] = labels.astype(np.int64)
    order = np.argsort(ids, kind="stable")
    return {key: v[order] for key, v in out.items()}


def cell_series(frames, meta: dict | None = None) -> dict[str, np.ndarray]:
    """The long table of the cells of every frame, with the frame's metadata.

    Parameters
    ----------
    frames : list of dict
        Per frame ``cells`` and optional ``classes`` (see the module's conventions).
    meta : dict, optional
        Per-frame ``time_s`` (s), ``temperature_K`` (K), ``dose_e_per_A2`` (e per A^2).

    Returns
    -------
    dict of ndarray
        One row per (frame, cell), sorted by frame then cell id: ``frame``,
        ``cell_id``, ``i``, ``j``, ``u``, ``v`` (int), the remaining
        :data:`~latticegenome.statistics.cells.CELL_FIELDS` (``x``, ``y`` px;
        ``a_pm``, ``b_pm``, ``dx_pm``, ``dy_pm``, ``dx_err_pm``, ``dy_err_pm`` pm;
        ...; NaN / False where not given), ``class`` (int, -1 unknown) and
        ``time_s`` (s), ``temperature_K`` (K), ``dose_e_per_A2`` (e per A^2) of the
        cell's frame.

    Raises
    ------
    ValueError
        Naming the frame, if its cells are of unequal lengths, lack an identity,
        repeat one, or have a class array of another length; or if a ``meta``
        array is not one value per frame.
    """
    frames = _frames(frames)
    fmeta = frame_meta(meta, len(frames))
    parts = [_frame_cells(fr, k) for k, fr in enumerate(frames)]
    fields = _cell_fields()
    table = _concat(parts, fields[:-3])
    for key in META_FIELDS:
        table[key] = fmeta[key][table["frame"]]
    return table


def pivot(table: dict, field: str, *, key: str = "track", n_frames: int | None = None,
          fill=np.nan) -> tuple[np.ndarray, np.ndarray]:
    """One field of a long table as a (n_frames, n_ids) matrix.

    Parameters
    ----------
    table : dict
        A long table (:func:`column_series`, :func:`cell_series`).
    field : str
        The field to spread out (its units are kept).
    key : str
        The identity column: ``"track"`` or ``"cell_id"``.
    n_frames : int, optional
        Number of frames (default: the last frame in the table + 1).
    fill : scalar
        Value where an id is absent in a frame (NaN; use -1 for classes).

    Returns
    -------
    ids : ndarray
        The sorted ids (the matrix's columns).
    matrix : ndarray
        ``matrix[frame, n]`` is the field of ``ids[n]`` in that frame.
    """
    frame = np.asarray(table["frame"], dtype=np.int64)
    n_frames = int(frame.max()) + 1 if n_frames is None else int(n_frames)
    ids, col = np.unique(np.asarray(table[key]), return_inverse=True)
    values = np.asarray(table[field])
    dtype = np.result_type(values.dtype, np.asarray(fill).dtype)
    matrix = np.full((n_frames, ids.size), fill, dtype=dtype)
    matrix[frame, col] = values
    return ids, matrix


def class_matrix(series: dict, n_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The class of every cell in every frame, -1 where unknown or absent.

    Returns
    -------
    ids : ndarray of int64
        Cell ids (columns of ``labels``).
    labels : ndarray of int64, shape (n_frames, n_cells)
    """
    ids, labels = pivot(series, "class", key="cell_id", n_frames=n_frames, fill=-1)
    return ids, labels.astype(np.int64)


# --- fits -------------------------------------------------------------------------


def linear_fit(x, y, sigma=None) -> dict:
    """Straight line ``y = slope * x + intercept`` by (weighted) least squares.

    Parameters
    ----------
    x, y : array_like
        Non-finite pairs are left out.
    sigma : array_like, optional
        Standard errors of ``y``; used as weights where all are finite and > 0,
        ignored otherwise.

    Returns
    -------
    dict
        ``slope``, ``intercept``, ``slope_err``, ``intercept_err``, ``cov``
        (covariance of slope and intercept), ``n``, ``chi2_reduced`` (NaN when
        unweighted), ``x_mean``, ``weighted`` (bool). Errors come from the
        residuals when unweighted; weighted, from the sigmas, scaled up by
        sqrt(reduced chi^2) when that exceeds 1. NaN with fewer than 2 (errors:
        3) points.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    s = None if sigma is None else np.asarray(sigma, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    s = None if s is None else s[ok]
    weighted = s is not None and s.size > 0 and bool(np.all(np.isfinite(s) & (s > 0)))
    w = 1.0 / s**2 if weighted else np.ones_like(x)
    nan = {"slope": np.nan, "intercept": np.nan, "slope_err": np.nan, "intercept_err": np.nan,
           "cov": np.nan, "n": int(x.size), "chi2_reduced": np.nan,
           "x_mean": float(np.mean(x)) if x.size else np.nan, "weighted": weighted}
    if x.size < 2 or np.ptp(x) == 0:
        return nan
    a = np.stack([x, np.ones_like(x)], axis=1)
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    slope, intercept = cov @ (a.T @ (w * y))
    chi2 = float(np.sum(w * (y - slope * x - intercept) ** 2))
    dof = x.size - 2
    if dof <= 0:
        cov = cov * np.nan
    elif weighted:
        cov = cov * max(1.0, chi2 / dof)
    else:
        cov = cov * chi2 / dof
    return {**nan, "slope": float(slope), "intercept": float(intercept),
            "slope_err": float(np.sqrt(cov[0, 0])), "intercept_err": float(np.sqrt(cov[1, 1])),
            "cov": float(cov[0, 1]), "chi2_reduced": chi2 / dof if weighted and dof > 0 else np.nan}


# --- transitions ------------------------------------------------------------------


def _labels(labels) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be (n_frames, n_cells), got shape {lab.shape}")
    if lab.size and lab.dtype.kind not in "iu":
        if not np.all(np.isfinite(lab)) or np.any(np.mod(lab, 1) != 0):
            raise ValueError("labels must be integers (-1 for unknown)")
    lab = lab.astype(np.int64)
    lab[lab < 0] = -1
    return lab


def _steps(values, n_frames: int, name: str) -> np.ndarray | None:
    """Per-interval increments |v[t+1] - v[t]| of a per-frame array (None if not given)."""
    if values is None:
        return None
    v = np.asarray(values, dtype=float).reshape(-1)
    if v.shape[0] != n_frames:
        raise ValueError(f"{name} has {v.shape[0]} entries for {n_frames} frames")
    return np.abs(np.diff(v))


def _rates(counts_step: np.ndarray, steps: np.ndarray | None, k: int) -> dict:
    """Rates per unit of ``steps`` (s or K) from the per-interval counts."""
    if steps is None:
        nan = np.full((k, k), np.nan)
        return {"exposure": np.full(k, np.nan), "rates": nan, "rates_err": nan.copy()}
    ok = np.isfinite(steps)
    exposure = np.einsum("t,tk->k", steps[ok], counts_step[ok].sum(axis=2))
    counts = counts_step[ok].sum(axis=0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = counts / exposure[:, None]
        err = np.sqrt(counts) / exposure[:, None]
        off = counts - np.diag(np.diag(counts))
        np.fill_diagonal(rates, 0.0 - off.sum(axis=1) / exposure)
        np.fill_diagonal(err, np.sqrt(off.sum(axis=1)) / exposure)
    bad = ~(exposure > 0)
    rates[bad], err[bad] = np.nan, np.nan
    return {"exposure": exposure, "rates": rates, "rates_err": err}


def _runs(lab: np.ndarray, durations: np.ndarray) -> dict[str, np.ndarray]:
    """The runs of one known class per cell (column of ``lab``)."""
    n_frames, n_cells = lab.shape
    pad = np.full((1, n_cells), -2, dtype=np.int64)
    ext = np.concatenate([pad, lab, pad])
    change = ext[1:] != ext[:-1]  # (n_frames + 1, n_cells): a run starts at frame t
    cell, start = np.nonzero(change.T)  # sorted by cell, then frame
    same_cell = np.r_[cell[1:] == cell[:-1], False]
    stop = np.where(same_cell, np.r_[start[1:], 0], n_frames)
    keep = start < n_frames
    cell, start, stop = cell[keep], start[keep], stop[keep]
    cls = lab[start, cell]
    known = cls >= 0
    cell, start, stop, cls = cell[known], start[known], stop[known], cls[known]
    before = np.where(start > 0, lab[np.maximum(start - 1, 0), cell], -1)
    after = np.where(stop < n_frames, lab[np.minimum(stop, n_frames - 1), cell], -1)
    csum = np.r_[0.0, np.cumsum(np.nan_to_num(durations))]
    holes = np.r_[0, np.cumsum(~np.isfinite(durations))]
    length_s = np.where(holes[stop] > holes[start], np.nan, csum[stop] - csum[start])
    return {"cell": cell.astype(np.int64), "class": cls, "start": start.astype(np.int64),
            "length_frames": (stop - start).astype(np.int64), "length_s": length_s,
            "left_censored": before < 0, "right_censored": after < 0,
            "censored": (before < 0) | (after < 0)}


def _dwell_summary(runs: dict, counts: np.ndarray, exposure_s: np.ndarray, k: int) -> dict:
    """Per class: mean dwell of complete runs and the censoring-aware estimate."""
    out = {key: np.full(k, np.nan) for key in (
        "mean_frames", "mean_frames_err", "mean_s", "mean_s_err",
        "mle_mean_frames", "mle_mean_frames_err", "mle_mean_s", "mle_mean_s_err")}
    out["n_runs"] = np.zeros(k, dtype=np.int64)
    out["n_complete"] = np.zeros(k, dtype=np.int64)
    n_from = counts.sum(axis=1).astype(float)
    exits = n_from - np.diag(counts)
    for c in range(k):
        mine = runs["class"] == c
        done = mine & ~runs["censored"]
        out["n_runs"][c], out["n_complete"][c] = int(mine.sum()), int(done.sum())
        for unit in ("frames", "s"):
            vals = runs[f"length_{unit}"][done].astype(float)
            if vals.size:
                out[f"mean_{unit}"][c] = vals.mean()
                out[f"mean_{unit}_err"][c] = (vals.std(ddof=1) / math.sqrt(vals.size)
                                             if vals.size > 1 else np.nan)
        if exits[c] > 0:
            p = exits[c] / n_from[c]  # exit probability per frame interval
            mean = 1.0 / p
            err = math.sqrt(p * (1 - p) / n_from[c]) / p**2 if p < 1 else 0.0
            out["mle_mean_frames"][c], out["mle_mean_frames_err"][c] = mean, err
            if np.isfinite(exposure_s[c]):
                out["mle_mean_s"][c] = exposure_s[c] / exits[c]
                out["mle_mean_s_err"][c] = out["mle_mean_s"][c] * err / mean
    return out


def transitions(labels, times=None, temperatures=None, *, n_classes: int | None = None) -> dict:
    """Class transitions between consecutive frames: counts, rates, dwell times.

    Parameters
    ----------
    labels : array_like of int, shape (n_frames, n_cells)
        Class of each cell in each frame (:func:`class_matrix`); negative = unknown.
    times : array_like, optional
        Time of each frame (s). Rates per second need it.
    temperatures : array_like, optional
        Temperature of each frame (K). Rates per kelvin need it.
    n_classes : int, optional
        Number of classes (default: the largest label + 1).

    Returns
    -------
    dict
        ``classes`` (0 .. K-1); ``counts`` (K, K) int, ``counts[k, l]`` = cells in
        class k in frame t and in class l in frame t + 1, both known, summed over t;
        ``counts_per_step`` (n_frames - 1, K, K); ``n_from`` (pairs starting in k);
        ``probability`` (counts / n_from: the per-frame transition matrix) and
        ``probability_err`` (binomial); ``exposure_s`` (s spent in k over the
        counted pairs: occupancy x dt), ``rates_per_s`` (counts / exposure, 1/s;
        diagonal = minus the total exit rate) and ``rates_err_per_s`` (Poisson:
        sqrt(counts) / exposure); ``exposure_K``, ``rates_per_K``,
        ``rates_err_per_K`` the same per kelvin of |dT| (NaN without temperatures);
        ``dwell``: the runs (``cell``, ``class``, ``start``, ``length_frames``,
        ``length_s``, ``left_censored``, ``right_censored``, ``censored``; a run is
        censored where the series or the known labels begin or end) and per class
        ``n_runs``, ``n_complete``, ``mean_frames``/``mean_s`` (+ ``_err``, complete
        runs only) and ``mle_mean_frames``/``mle_mean_s`` (+ ``_err``: pairs from k
        / exits from k, which counts the censored runs too; the mean of a geometric
        dwell); ``n_frames``, ``n_cells``.

    Raises
    ------
    ValueError
        If ``labels`` is not 2-D integers, or ``times`` / ``temperatures`` is not one
        value per frame.
    """
    lab = _labels(labels)
    n_frames, n_cells = lab.shape
    k = int(n_classes) if n_classes is not None else int(max(lab.max(initial=-1) + 1, 0))
    if lab.max(initial=-1) >= k:
        raise ValueError(f"labels reach {lab.max()} with n_classes = {k}")
    dt = _steps(times, n_frames, "times")
    d_temp = _steps(temperatures, n_frames, "temperatures")
    a, b = lab[:-1], lab[1:]
    both = (a >= 0) & (b >= 0)
    t_idx = np.nonzero(both)[0]
    step = np.zeros((max(n_frames - 1, 0), k, k), dtype=np.int64)
    np.add.at(step, (t_idx, a[both], b[both]), 1)
    counts = step.sum(axis=0)
    n_from = counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        prob = counts / n_from[:, None]
        prob_err = np.sqrt(prob * (1 - prob) / n_from[:, None])
    per_s, per_k = _rates(step, dt, k), _rates(step, d_temp, k)
    if dt is None:
        durations = np.full(n_frames, np.nan)
    else:
        typical = np.nanmedian(dt) if np.any(np.isfinite(dt)) else np.nan
        durations = np.r_[dt, typical] if n_frames else dt
    runs = _runs(lab, durations)
    dwell = {**runs, **_dwell_summary(runs, counts, per_s["exposure"], k)}
    return {"classes": np.arange(k), "counts": counts, "counts_per_step": step,
            "n_from": n_from, "probability": prob, "probability_err": prob_err,
            "exposure_s": per_s["exposure"], "rates_per_s": per_s["rates"],
            "rates_err_per_s": per_s["rates_err"], "exposure_K": per_k["exposure"],
            "rates_per_K": per_k["rates"], "rates_err_per_K": per_k["rates_err"],
            "dwell": dwell, "n_frames": int(n_frames), "n_cells": int(n_cells)}


def transition_table(result: dict) -> dict[str, np.ndarray]:
    """The transition matrices of :func:`transitions` as a long table (one row per pair).

    Returns
    -------
    dict of ndarray
        ``from``, ``to``, ``count``, ``probability``, ``probability_err``,
        ``rate_per_s``, ``rate_err_per_s`` (1/s), ``rate_per_K``, ``rate_err_per_K``
        (1/K): for :func:`write_series_csv`.
    """
    k = len(result["classes"])
    f, t = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    return {"from": f.ravel(), "to": t.ravel(), "count": result["counts"].ravel(),
            "probability": result["probability"].ravel(),
            "probability_err": result["probability_err"].ravel(),
            "rate_per_s": result["rates_per_s"].ravel(),
            "rate_err_per_s": result["rates_err_per_s"].ravel(),
            "rate_per_K": result["rates_per_K"].ravel(),
            "rate_err_per_K": result["rates_err_per_K"].ravel()}


# --- wall motion ------------------------------------------------------------------


def _as_cells(frames, meta) -> dict:
    if isinstance(frames, dict) and "frame" in frames and "cell_id" in frames:
        return frames
    return cell_series(frames, meta)


def _profile(u, values, x, y) -> dict:
    """Means per lattice plane ``u``: the field, its standard error, the centres."""
    ok = np.isfinite(values)
    u, values, x, y = u[ok], values[ok], x[ok], y[ok]
    planes, inv, n = np.unique(u, return_inverse=True, return_counts=True)
    mean = np.bincount(inv, values) / n
    var = np.bincount(inv, (values - mean[inv]) ** 2) / np.maximum(n - 1, 1)
    with np.errstate(invalid="ignore"):
        sem = np.where(n > 1, np.sqrt(var / n), np.nan)
    return {"u": planes.astype(float), "mean": mean, "sem": sem, "n": n,
            "x": np.bincount(inv, x) / n, "y": np.bincount(inv, y) / n}


def _crossing(prof: dict, threshold: float) -> dict:
    """Where the profile crosses ``threshold``: the crossing that best splits it in two."""
    d = prof["mean"] - threshold
    nan = {"position": np.nan, "error": np.nan, "x": np.nan, "y": np.nan, "n_crossings": 0,
           "left_sign": 0.0}
    if d.size < 2:
        return nan
    cand = np.nonzero((d[:-1] == 0) | (np.sign(d[:-1]) * np.sign(d[1:]) < 0))[0]
    if cand.size == 0:
        return nan
    n = d.size
    csum = np.cumsum(d)
    left_n = cand + 1.0
    left = csum[cand] / left_n
    right = (csum[-1] - csum[cand]) / (n - left_n)
    score = np.abs(left - right) * np.sqrt(left_n * (n - left_n) / n)
    k = int(cand[np.argmax(score)])
    dk, dk1 = d[k], d[k + 1]
    delta = dk - dk1
    f = 0.0 if delta == 0 else dk / delta
    du = prof["u"][k + 1] - prof["u"][k]
    sk, sk1 = prof["sem"][k], prof["sem"][k + 1]
    err = (math.sqrt((dk1 * sk) ** 2 + (dk * sk1) ** 2) / delta**2 * abs(du)
           if delta != 0 else np.nan)
    return {"position": prof["u"][k] + 0.5 + f * du, "error": err,
            "x": prof["x"][k] + f * (prof["x"][k + 1] - prof["x"][k]),
            "y": prof["y"][k] + f * (prof["y"][k + 1] - prof["y"][k]),
            "n_crossings": int(cand.size), "left_sign": float(np.sign(left[cand == k][0]))}


def _spacing_px(prof: dict) -> float:
    """Median distance (px) between the centres of neighbouring planes per lattice unit."""
    du = np.diff(prof["u"])
    if du.size == 0:
        return np.nan
    return float(np.median(np.hypot(np.diff(prof["x"]), np.diff(prof["y"])) / du))


def _field_values(table: dict, field: str, positive_class: int) -> np.ndarray:
    if field == "class":
        cls = table["class"]
        return np.where(cls >= 0, np.where(cls == positive_class, 1.0, -1.0), np.nan)
    if field not in table:
        raise ValueError(f"no field {field!r} in the cells")
    return np.asarray(table[field], dtype=float)


def _wall_per_frame(table: dict, values: np.ndarray, axis: str, threshold: float,
                    n_frames: int) -> tuple[dict, np.ndarray]:
    """The crossing of every frame (:func:`_crossing`) and its plane spacing (px)."""
    keys = ("position", "error", "x", "y", "n_crossings", "left_sign")
    per = {key: np.full(n_frames, np.nan) for key in keys}
    spacing = np.full(n_frames, np.nan)
    for t in range(n_frames):
        rows = table["frame"] == t
        prof = _profile(table[axis][rows], values[rows], table["x"][rows], table["y"][rows])
        for key, val in _crossing(prof, threshold).items():
            per[key][t] = val
        spacing[t] = _spacing_px(prof)
    return per, spacing


def wall_motion(frames, meta: dict | None = None, *, axis: str = "u", field: str = "dy_pm",
                threshold: float = 0.0, positive_class: int = 1) -> dict:
    """The position of a domain wall in every frame and its velocity.

    Per frame, the field is averaged over each lattice plane along ``axis`` (all
    cells with the same ``u``, or ``v``); the wall is where this profile crosses
    ``threshold``, by linear interpolation between the two planes around the
    crossing (of several crossings, the one that splits the profile into the two
    most different halves). The velocity is a straight-line fit of the position
    against time.

    Parameters
    ----------
    frames : list of dict or dict
        Tracked frames (module conventions) or a :func:`cell_series` table.
    meta : dict, optional
        Per-frame ``time_s`` (s); without it the velocity is per frame.
    axis : {"u", "v"}
        Lattice direction across the wall (u along a, v along b).
    field : str
        A cell field (``dy_pm``, ``dx_pm``: pm) or ``"class"``: then the profile is
        the signed fraction (+1 all ``positive_class``, -1 none) of the known classes.
    threshold : float
        The level (field units; 0 = equal parts for ``"class"``).
    positive_class : int
        See ``field``.

    Returns
    -------
    dict
        Per frame: ``frame``, ``time_s`` (s; the frame index where no time is
        known), ``position_cells`` and ``position_err_cells`` (lattice units along
        ``axis``, cell u spanning [u, u + 1]), ``position_px`` (px from the lattice
        origin: position x spacing), ``x_px``, ``y_px`` (image position of the
        crossing, px), ``n_crossings``, ``left_sign`` (sign of field - threshold on
        the low-u side). Fit: ``velocity_cells_per_s`` / ``_err``,
        ``velocity_px_per_s`` / ``_err``, ``velocity_pm_per_s`` / ``_err`` (pm from
        the mean lattice parameter along the axis: a_pm for u, b_pm for v),
        ``intercept_cells`` / ``_err``, ``spacing_px`` (px per lattice unit),
        ``spacing_pm``, ``time_unit`` ("s" or "frame").

    Raises
    ------
    ValueError
        For an unknown axis or field, or bad frames (see :func:`cell_series`).
    """
    if axis not in ("u", "v"):
        raise ValueError(f"axis must be 'u' or 'v', not {axis!r}")
    table = _as_cells(frames, meta)
    n_frames = int(table["frame"].max()) + 1 if table["frame"].size else 0
    per, spacing = _wall_per_frame(table, _field_values(table, field, positive_class), axis,
                                   threshold, n_frames)
    time = _frame_values(table, "time_s", n_frames)
    unit = "s" if np.any(np.isfinite(time)) else "frame"
    if unit == "frame":
        time = np.arange(n_frames, dtype=float)
    fit = linear_fit(time, per["position"], per["error"])
    sp_px = float(np.nanmean(spacing)) if np.any(np.isfinite(spacing)) else np.nan
    length = table["a_pm" if axis == "u" else "b_pm"]
    sp_pm = float(np.nanmean(length)) if np.any(np.isfinite(length)) else np.nan
    v, ve = fit["slope"], fit["slope_err"]
    return {"frame": np.arange(n_frames), "time_s": time, "position_cells": per["position"],
            "position_err_cells": per["error"], "position_px": per["position"] * sp_px,
            "x_px": per["x"], "y_px": per["y"],
            "n_crossings": np.nan_to_num(per["n_crossings"]).astype(np.int64),
            "left_sign": per["left_sign"], "velocity_cells_per_s": v,
            "velocity_cells_per_s_err": ve, "velocity_px_per_s": v * sp_px,
            "velocity_px_per_s_err": ve * sp_px, "velocity_pm_per_s": v * sp_pm,
            "velocity_pm_per_s_err": ve * sp_pm, "intercept_cells": fit["intercept"],
            "intercept_cells_err": fit["intercept_err"], "spacing_px": sp_px,
            "spacing_pm": sp_pm, "time_unit": unit, "axis": axis, "field": field,
            "threshold": float(threshold)}


def _frame_values(table: dict, key: str, n_frames: int) -> np.ndarray:
    """A per-row metadata field back to one value per frame (NaN for frames without rows)."""
    out = np.full(n_frames, np.nan)
    if key in table and len(table[key]):
        out[np.asarray(table["frame"], dtype=np.int64)] = np.asarray(table[key], dtype=float)
    return out


# --- trends -------------------------------------------------------------------------


def _frame_stats(frame, values, n_frames: int) -> dict[str, np.ndarray]:
    ok = np.isfinite(values)
    frame, values = frame[ok], values[ok]
    n = np.bincount(frame, minlength=n_frames)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(frame, values, minlength=n_frames) / n
        sq = np.bincount(frame, (values - np.nan_to_num(mean)[frame]) ** 2, minlength=n_frames)
        std = np.where(n > 1, np.sqrt(sq / np.maximum(n - 1, 1)), np.nan)
        sem = std / np.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "sem": sem}


def _fit_keys(fit: dict) -> dict:
    keep = ("slope", "intercept", "slope_err", "intercept_err", "cov", "chi2_reduced", "x_mean")
    return {key: fit[key] for key in keep} | {"n_fit": fit["n"]}


def versus(series: dict, by: str = "temperature_K", field: str = "a_pm", *,
           per: str | None = None) -> dict:
    """A field's per-frame mean and spread against time, temperature or dose, with a line.

    Parameters
    ----------
    series : dict
        A long table (:func:`cell_series` or :func:`column_series`).
    by : {"temperature_K", "time_s", "dose_e_per_A2"}
        The per-frame quantity on the x axis (K, s, e per A^2), or any field that is
        constant within a frame.
    field : str
        The measured field (e.g. ``a_pm``, ``dy_pm``: pm).
    per : str, optional
        A field to group the cells by in addition (e.g. ``"v"``: one lattice plane,
        a layer, per group).

    Returns
    -------
    dict
        ``frame``, ``x`` (the value of ``by`` per frame), ``mean``, ``std``, ``n``,
        ``sem`` (units of ``field``); the weighted straight-line fit of ``mean``
        against ``x`` (weights 1 / sem^2): ``slope`` (field units per unit of
        ``by``: e.g. pm/K, the thermal expansion of a), ``intercept`` (at x = 0),
        their errors, ``cov``, ``chi2_reduced``, ``x_mean``, ``n_fit``; ``by``,
        ``field``. With ``per``: also ``layers``, a dict of the same per-frame
        statistics for each group (``layer``, ``frame``, ``x``, ``mean``, ...) and
        ``layer_fit`` (``layer``, ``slope``, ``slope_err``, ``intercept``,
        ``intercept_err``).

    Raises
    ------
    ValueError
        If ``by``, ``field`` or ``per`` is not in the table.
    """
    for key in (by, field, "frame") + ((per,) if per else ()):
        if key not in series:
            raise ValueError(f"no field {key!r} in the series")
    frame = np.asarray(series["frame"], dtype=np.int64)
    n_frames = int(frame.max()) + 1 if frame.size else 0
    x = _frame_values(series, by, n_frames)
    values = np.asarray(series[field], dtype=float)
    stats = _frame_stats(frame, values, n_frames)
    out = {"frame": np.arange(n_frames), "x": x, **stats,
           **_fit_keys(linear_fit(x, stats["mean"], stats["sem"])), "by": by, "field": field}
    if per:
        out.update(_per_layer(frame, values, np.asarray(series[per]), x, n_frames))
    return out


def _per_layer(frame, values, group, x, n_frames: int) -> dict:
    layers = np.unique(group)
    rows = {key: [] for key in ("layer", "frame", "x", "n", "mean", "std", "sem")}
    fits = {key: [] for key in ("layer", "slope", "slope_err", "intercept", "intercept_err")}
    for g in layers:
        mine = group == g
        st = _frame_stats(frame[mine], values[mine], n_frames)
        rows["layer"].append(np.full(n_frames, g))
        rows["frame"].append(np.arange(n_frames))
        rows["x"].append(x)
        for key in ("n", "mean", "std", "sem"):
            rows[key].append(st[key])
        fit = linear_fit(x, st["mean"], st["sem"])
        fits["layer"].append(g)
        for key in fits.keys() - {"layer"}:
            fits[key].append(fit[key])
    return {"layers": {key: np.concatenate(v) for key, v in rows.items()},
            "layer_fit": {key: np.asarray(v) for key, v in fits.items()}}


# --- beam damage --------------------------------------------------------------------


def _exp_fit(x, y, *, through_origin: bool = False) -> dict:
    """Fit of ln(y) against x: ``y = y0 exp(-x / scale)``; scale with its error."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ly = np.where(y > 0, np.log(y), np.nan)
    if through_origin:
        ok = np.isfinite(x) & np.isfinite(ly)
        xs, ys = x[ok], ly[ok]
        sxx = float(np.sum(xs * xs))
        slope = float(np.sum(xs * ys) / sxx) if sxx > 0 else np.nan
        err = (float(np.sqrt(np.sum((ys - slope * xs) ** 2) / (xs.size - 1) / sxx))
               if xs.size > 1 and sxx > 0 else np.nan)
        fit = {"slope": slope, "slope_err": err, "intercept": 0.0, "intercept_err": 0.0}
    else:
        fit = linear_fit(x, ly)
    slope, err = fit["slope"], fit["slope_err"]
    scale = -1.0 / slope if slope < 0 else np.nan
    return {"slope": slope, "slope_err": err, "intercept": fit["intercept"],
            "intercept_err": fit["intercept_err"], "scale": scale,
            "scale_err": err / slope**2 if np.isfinite(scale) else np.nan}


def beam_damage(frames, meta: dict | None = None, *, site: str = "A") -> dict:
    """Columns lost and intensity decay against the accumulated dose.

    Parameters
    ----------
    frames : list of dict or dict
        Tracked frames (module conventions) or a :func:`column_series` table.
    meta : dict, optional
        Per-frame ``dose_e_per_A2`` (accumulated, e per A^2); without it the fits
        are against ``time_s`` (s), without that against the frame index.
    site : str
        The columns whose intensity is followed ("A").

    Returns
    -------
    dict
        Per frame: ``frame``, ``x`` (the dose, time or frame), ``present`` (tracks
        with a finite position), ``lost`` (tracks of the first frame not present),
        ``new`` (present, not in the first frame), ``surviving_fraction`` (1 - lost
        / tracks of the first frame), ``mean_intensity`` (mean intensity of the
        ``site`` columns present, image units), ``mean_intensity_surviving`` (of
        those also in the first frame), ``relative_intensity`` (the latter over its
        first-frame value). Fits (against ``x``): ``intensity_decay``: ln relative
        intensity = intercept + slope x, ``scale`` = -1 / slope (the 1/e dose, e per
        A^2, or time), with errors; ``column_loss``: -ln surviving fraction = x /
        scale through the origin; ``loss_per_unit`` (columns lost per unit x, linear)
        and its error; ``by`` (``dose_e_per_A2``, ``time_s`` or ``frame``).
    """
    if isinstance(frames, dict) and "track" in frames:
        table, n_frames = frames, int(np.max(frames["frame"])) + 1
    else:
        table, n_frames = column_series(frames), len(_frames(frames))
    fmeta = frame_meta(meta, n_frames)
    x, by = fmeta["dose_e_per_A2"], "dose_e_per_A2"
    if not np.any(np.isfinite(x)):
        x, by = fmeta["time_s"], "time_s"
    if not np.any(np.isfinite(x)):
        x, by = np.arange(n_frames, dtype=float), "frame"
    ids, px = pivot(table, "x", n_frames=n_frames)
    _, py = pivot(table, "y", n_frames=n_frames)
    _, inten = pivot(table, "intensity", n_frames=n_frames)
    sites = np.empty(ids.size, dtype=object)
    sites[np.searchsorted(ids, table["track"])] = np.asarray(table["site"]).astype(str)
    alive = np.isfinite(px) & np.isfinite(py)
    first = alive[0]
    n0 = int(first.sum())
    lost = (first[None, :] & ~alive).sum(axis=1)
    is_site = sites == site
    mean_i = _masked_mean(inten, alive & is_site[None, :])
    surv_i = _masked_mean(inten, alive & (is_site & first)[None, :])
    rel = surv_i / surv_i[0] if surv_i[0] else np.full(n_frames, np.nan)
    surviving = 1.0 - lost / n0 if n0 else np.full(n_frames, np.nan)
    loss = linear_fit(x, lost.astype(float))
    return {"frame": np.arange(n_frames), "x": x, "present": alive.sum(axis=1),
            "lost": lost, "new": (~first[None, :] & alive).sum(axis=1),
            "surviving_fraction": surviving, "mean_intensity": mean_i,
            "mean_intensity_surviving": surv_i, "relative_intensity": rel,
            "intensity_decay": _exp_fit(x, rel),
            "column_loss": _exp_fit(x, surviving, through_origin=True),
            "loss_per_unit": loss["slope"], "loss_per_unit_err": loss["slope_err"], "by": by}


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = mask & np.isfinite(values)
    n = mask.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mask, values, 0.0).sum(axis=1) / n


# --- files --------------------------------------------------------------------------


def _scalar(value):
    """A JSON-able scalar (NumPy scalars as Python ones; NaN and inf as JSON allows in Python)."""
    return value.item() if isinstance(value, np.generic) else value


def _write_tree(group, tree: dict) -> None:
    """Nested dicts as groups, arrays as datasets, scalars in the group's ``scalars``."""
    import h5py

    scalars = {}
    for key, value in (tree or {}).items():
        key = str(key)
        if isinstance(value, dict):
            _write_tree(group.create_group(key), value)
            continue
        if value is None or isinstance(value, (str, bool, int, float, np.generic)):
            scalars[key] = _scalar(value)
            continue
        arr = np.asarray(value)
        if arr.ndim == 0:
            scalars[key] = _scalar(arr.item())
        elif arr.dtype.kind in "UOS":
            group.create_dataset(key, data=np.array([str(s) for s in arr.ravel()],
                                                    dtype=h5py.string_dtype("utf-8")
                                                    ).reshape(arr.shape))
        else:
            big = arr.size > 4096
            group.create_dataset(key, data=arr, compression="gzip" if big else None,
                                 shuffle=big)
    if scalars:
        group.attrs["scalars"] = json.dumps(scalars)


def _read_tree(group) -> dict:
    import h5py

    out = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = _read_tree(item)
        elif h5py.check_string_dtype(item.dtype) is not None:
            out[key] = np.asarray(item.asstr("utf-8")[()], dtype=str).reshape(item.shape)
        else:
            out[key] = item[()]
    if "scalars" in group.attrs:
        out.update(json.loads(group.attrs["scalars"]))
    return out


GROUPS = ("columns", "cells", "registration", "transitions", "summaries")


def write_dynamics_h5(path: str | Path, *, columns: dict, cells: dict,
                      registration: dict | None = None, transitions: dict | None = None,
                      summaries: dict | None = None, provenance: dict | None = None) -> None:
    """Write ``dynamics.h5``; the file appears whole or not at all.

    Parameters
    ----------
    path : str or Path
        E.g. ``results/<exp>/dynamics.h5``.
    columns, cells : dict of ndarray
        The long tables of :func:`column_series` and :func:`cell_series` (the
        tracks and the per-cell series); groups ``columns/`` and ``cells/``.
    registration : dict, optional
        Per-frame registration (shifts in px, ...); group ``registration/``.
    transitions : dict, optional
        :func:`transitions`'s result; group ``transitions/`` (``counts``,
        ``rates_per_s``, ..., ``dwell/``).
    summaries : dict of dict, optional
        Named results (:func:`wall_motion`, :func:`versus`, :func:`beam_damage`):
        groups ``summaries/<name>/``.
    provenance : dict, optional
        Stored as JSON in the file's ``provenance`` attribute.

    Notes
    -----
    Nested dicts become groups, arrays datasets (str arrays as UTF-8 strings) and
    scalars (numbers, str, bool, None) a JSON ``scalars`` attribute of their
    group. File attributes: ``units`` (JSON, :data:`UNITS`), ``provenance``
    (JSON), ``format_version``. Dict keys are stored as str.
    """
    import h5py

    for name, table in (("columns", columns), ("cells", cells)):
        _table_length(table, name)
    content = dict(zip(GROUPS, (columns, cells, registration, transitions, summaries)))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, tree in content.items():
            _write_tree(f.create_group(name), tree or {})
        f.attrs["units"] = json.dumps(UNITS)
        f.attrs["provenance"] = json.dumps(provenance if provenance is not None else {})
        f.attrs["format_version"] = FORMAT_VERSION


def read_dynamics(path: str | Path) -> dict:
    """Read a file written by :func:`write_dynamics_h5`.

    Returns
    -------
    dict
        ``columns``, ``cells``, ``registration``, ``transitions``, ``summaries``
        (dicts as written; lists come back as arrays), ``units``, ``provenance``
        (dicts), ``format_version`` (int).

    Raises
    ------
    LatticeGenomeError
        If the file cannot be read as a dynamics file or is of a newer format.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise LatticeGenomeError(f"not a dynamics file: {exc}", str(path)) from None
    with f:
        version = int(f.attrs.get("format_version", 0))
        if version > FORMAT_VERSION or "units" not in f.attrs:
            raise LatticeGenomeError(f"dynamics format version {version}; this latticegenome "
                                     f"reads 1 to {FORMAT_VERSION}", str(path))
        out = {name: _read_tree(f[name]) if name in f else {} for name in GROUPS}
        out["units"] = json.loads(f.attrs["units"])
        out["provenance"] = json.loads(f.attrs.get("provenance", "{}"))
        out["format_version"] = version
    return out


def write_series_csv(path: str | Path, table: dict, fields=None) -> None:
    """Write a long table (or :func:`transition_table`) as CSV, atomically.

    Parameters
    ----------
    path : str or Path
    table : dict of 1-D arrays of equal length
        Units as in :data:`UNITS`; NaN is written as an empty cell.
    fields : sequence of str, optional
        Columns to write, in order (default: all).

    Raises
    ------
    ValueError
        If the arrays are not 1-D or differ in length, or a field is missing.
    """
    _table_length(table, "table", tuple(fields or ()))
    write_table_csv(path, table, fields)
