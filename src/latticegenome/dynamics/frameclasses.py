"""Per-frame configuration classes of the cells of a series, and their transitions.

Every cell of every frame is given a class of a class model of the statistics
stage (:mod:`latticegenome.statistics.classes`: standardised descriptors
:data:`~latticegenome.statistics.classes.DESCRIPTORS`, PCA, Gaussian mixture).
The model is either another experiment's (its ``classes/model.json``, written by
the ``statistics`` rule: its stable class ids are kept) or one fitted on the
series' own cells, pooled over all frames, so that class k means the same
configuration in every frame (:func:`frame_classes`).

Two departures from a single image, both about what a series can tell:

- Frame-wide drifts are taken out before classifying (``detrend``): the slow-scan
  distortion of each frame, a thermal expansion over a ramp, a dose-dependent
  contrast move every cell of a frame together and are followed by the series'
  trends (``summaries/a_vs_time``, ``beam_damage``), not by its classes. Each of
  :data:`FRAME_WIDE` is moved so that every frame's median is the series' median
  (units kept: pm, deg, 1). A change of the whole field at once (a transition of
  every cell) is then seen in those trends and in the displacements, not in a, b.
- A series' own model merges mixture components the data cannot tell apart
  (Bhattacharyya distance under ``merge_distance``, :func:`component_groups`):
  a class split by noise alone would make every cell "switch" from frame to frame.

Honesty at low dose: a cell without all descriptors (no usable B column, a
NaN), or whose class posterior is under ``min_probability``, is class -1
(unknown), never a guess; the unknown fraction is reported and above
:data:`UNKNOWN_WARN` a warning names the series. A B column too faint to be
significant alone is used (``B_usable``: taking only the significant ones
selects cells by their noise). The displacement difference the classes can
resolve is reported (``displacement_resolution_pm``); a series' own model that
finds a single class where it is coarser than :data:`RESOLUTION_WARN_PM` warns.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from latticegenome.statistics.classes import DESCRIPTORS, ClassModel, descriptor_matrix, fit_classes

logger = logging.getLogger(__name__)

#: Descriptors that move with the whole frame (scan distortion, temperature, dose).
FRAME_WIDE = ("a_pm", "b_pm", "angle_deg", "intensity_ratio")

#: Above this fraction of unknown classes the transitions are flagged (a warning).
UNKNOWN_WARN = 0.2

#: Displacement difference two classes of cells need to be told apart, in per-cell
#: displacement errors (the merge distance of about two widths, both sides).
RESOLUTION_ERRORS = 4.0

#: A series' own model with a single class warns when its displacement resolution
#: (pm) is coarser than this: polar states of up to ~10 pm could hide in that class.
RESOLUTION_WARN_PM = 10.0

#: Defaults of :func:`frame_classes`.
MIN_PROBABILITY = 0.9
MERGE_DISTANCE = 0.5


def series_descriptors(cells: dict, *, detrend: bool = True, names=DESCRIPTORS):
    """Descriptor rows of a cell series and the rows that have them all.

    Parameters
    ----------
    cells : dict
        A long table (:func:`latticegenome.dynamics.series.cell_series`): ``frame``
        and the descriptors (pm, deg, 1), ``B_usable``.
    detrend : bool
        Move each of :data:`FRAME_WIDE` so that every frame's median is the
        series' median (medians of the complete rows; units kept).
    names : sequence of str
        The descriptors, in the model's order.

    Returns
    -------
    x : ndarray, shape (n_rows, len(names))
    ok : ndarray of bool
        Complete rows with a usable B column (``B_usable``).
    """
    x, ok = descriptor_matrix(cells, names)
    if not detrend or not ok.any():
        return x, ok
    frame = np.asarray(cells["frame"], np.int64)
    cols = [k for k, n in enumerate(names) if n in FRAME_WIDE]
    pooled = np.median(x[ok][:, cols], axis=0)
    for t in np.unique(frame[ok]):
        rows = frame == t
        x[np.ix_(rows, cols)] += pooled - np.median(x[rows & ok][:, cols], axis=0)
    return x, ok


def _bhattacharyya(m1, c1, m2, c2) -> float:
    """Bhattacharyya distance between two Gaussians (means, covariances)."""
    c = 0.5 * (c1 + c2)
    d = m1 - m2
    _, ld = np.linalg.slogdet(c)
    _, l1 = np.linalg.slogdet(c1)
    _, l2 = np.linalg.slogdet(c2)
    return float(d @ np.linalg.solve(c, d) / 8 + 0.5 * (ld - 0.5 * (l1 + l2)))


def component_groups(model: ClassModel, merge_distance: float = MERGE_DISTANCE) -> np.ndarray:
    """The class of each mixture component once components that overlap are merged.

    Components closer than ``merge_distance`` (Bhattacharyya distance in the
    model's PCA space; 0.5 is two equal 1-D Gaussians two widths apart, a Bayes
    error of 16 %) are one class, transitively (single linkage). Classes are
    numbered in the model's stable order (by its smallest class number).

    Returns
    -------
    ndarray of int64, shape (n_components,)
        Component -> class (0 .. n_classes-1).
    """
    g = model.gmm
    k = len(g.weights_)
    cov = np.asarray(g.covariances_, float)
    parent = np.arange(k)

    def root(a):
        while parent[a] != a:
            a = parent[a]
        return a

    for a in range(k):
        for b in range(a + 1, k):
            if _bhattacharyya(g.means_[a], cov[a], g.means_[b], cov[b]) < merge_distance:
                parent[root(b)] = root(a)
    roots = np.array([root(a) for a in range(k)])
    first = {r: model.order[roots == r].min() for r in np.unique(roots)}
    rank = {r: n for n, r in enumerate(sorted(first, key=first.get))}
    return np.array([rank[r] for r in roots], dtype=np.int64)


def load_class_model(source) -> tuple[ClassModel, np.ndarray]:
    """A class model and the stable id of each of its classes.

    Parameters
    ----------
    source : ClassModel, (ClassModel, ids), dict or path
        A model (ids 0 .. n-1); the JSON of the statistics stage's class state
        (``results/<exp>/classes/model.json``: ``model``, ``ids``) or of a bare model
        (:func:`~latticegenome.statistics.incremental.model_to_json`); a path to
        such a file, or to the experiment's ``statistics.h5`` or results folder
        (its ``classes/model.json``).

    Raises
    ------
    ValueError
        No model in the source (the experiment had too few cells), or one of other
        descriptors than :data:`~latticegenome.statistics.classes.DESCRIPTORS`.
    OSError
        The file cannot be read.
    """
    from latticegenome.statistics.incremental import model_from_json

    if isinstance(source, ClassModel):
        return source, np.arange(source.n_classes)
    if isinstance(source, tuple):
        model, ids = source[0], np.asarray(source[1], np.int64)
        if ids.size != model.n_classes:
            raise ValueError(f"{ids.size} class ids for a model of {model.n_classes} classes")
        return model, ids
    if not isinstance(source, dict):
        path = Path(source)
        if path.is_dir():
            path = path / "classes" / "model.json"
        elif path.suffix == ".h5":
            path = path.parent / "classes" / "model.json"
        source = json.loads(path.read_text())
    body = source.get("model", source) if "gmm" not in source else source
    if not body:
        raise ValueError("the class state holds no model (too few cells were classified)")
    if list(body.get("descriptors", DESCRIPTORS)) != list(DESCRIPTORS):
        raise ValueError(f"a model of descriptors {body['descriptors']}, not {list(DESCRIPTORS)}")
    model = model_from_json(body)
    ids = np.asarray(source.get("ids", range(model.n_classes)), np.int64)
    if ids.size != model.n_classes:
        raise ValueError(f"{ids.size} class ids for a model of {model.n_classes} classes")
    return model, ids


def fit_series_model(x: np.ndarray, ok: np.ndarray, *, max_classes: int = 8, seed: int = 0,
                     sample_size: int = 20000, merge_distance: float = MERGE_DISTANCE):
    """A class model fitted on a series' own cells, pooled over its frames.

    Parameters
    ----------
    x, ok : ndarray
        :func:`series_descriptors` of every frame's cells.
    max_classes, seed : int
        As :func:`~latticegenome.statistics.classes.fit_classes`.
    sample_size : int
        At most this many complete rows, drawn uniformly, are fitted.
    merge_distance : float
        :func:`component_groups`.

    Returns
    -------
    model : ClassModel
    comp_to_class : ndarray of int64
        Class of each mixture component.

    Raises
    ------
    ValueError
        Fewer than 10 complete cells.
    """
    rows = x[ok]
    if len(rows) > sample_size:
        pick = np.random.default_rng(seed).choice(len(rows), sample_size, replace=False)
        rows = rows[np.sort(pick)]
    with _one_thread():  # small matrices: BLAS threads only contend (10x slower on 2 cores)
        model = fit_classes(rows, max_classes=max_classes, seed=seed)
    return model, component_groups(model, merge_distance)


def _one_thread():
    """A context limiting BLAS/OpenMP to one thread (a no-op without threadpoolctl)."""
    try:
        import sklearn.mixture  # noqa: F401 (loaded first: the limits reach its libraries)
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover (a dependency of scikit-learn)
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def class_posterior(model: ClassModel, comp_to_class: np.ndarray, x: np.ndarray,
                    ok: np.ndarray) -> np.ndarray:
    """Posterior probability of each class (the sum over its components) per row.

    Returns
    -------
    ndarray, shape (n_rows, comp_to_class.max() + 1)
        NaN on the rows not ``ok``.
    """
    n_classes = int(comp_to_class.max()) + 1
    post = np.full((len(x), n_classes), np.nan)
    if ok.any():
        p = model.gmm.predict_proba(model.transform(x[ok]))
        post[ok] = p @ (comp_to_class[:, None] == np.arange(n_classes)).astype(float)
    return post


def _centroids(x: np.ndarray, labels: np.ndarray, n_classes: int) -> dict:
    """Mean and standard deviation of the descriptors of each class's cells."""
    known = labels >= 0
    n = np.bincount(labels[known], minlength=n_classes)
    s1 = np.zeros((n_classes, x.shape[1]))
    s2 = np.zeros_like(s1)
    np.add.at(s1, labels[known], x[known])
    np.add.at(s2, labels[known], x[known] ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n[:, None]
        std = np.sqrt(np.maximum(s2 / n[:, None] - mean**2, 0))
    return {"population": n, "mean": mean, "std": std}


def frame_classes(cells: dict, model=None, *, model_source: str | None = None,
                  min_probability: float = MIN_PROBABILITY, detrend: bool = True,
                  max_classes: int = 8, seed: int = 0, merge_distance: float = MERGE_DISTANCE,
                  sample_size: int = 20000) -> dict:
    """The class of every cell of every frame of a series, from one class model.

    Parameters
    ----------
    cells : dict
        The series' long cell table (:func:`latticegenome.dynamics.series.cell_series`).
    model : ClassModel, (ClassModel, ids), dict, path or None
        Another experiment's class model (:func:`load_class_model`; its ids kept);
        None: one fitted on the series' own cells of all frames
        (:func:`fit_series_model`).
    model_source : str, optional
        Recorded as ``class_model_source``: the experiment the model comes from
        (default ``"series"`` without a model, ``"model"`` with one).
    min_probability : float
        A cell whose class posterior is under this is unknown (-1).
    detrend : bool
        Take out the frame-wide drifts first (:func:`series_descriptors`).
    max_classes, seed, merge_distance, sample_size
        Of the series' own model (:func:`fit_series_model`).

    Returns
    -------
    dict
        Per row of ``cells``: ``labels`` (int64, -1 unknown), ``probability`` (the
        class posterior; NaN where a descriptor is missing). ``n_classes`` (the
        largest id + 1), ``class_model_source``, ``descriptors``; the classes'
        ``population``, descriptor ``mean``/``std`` (n_classes, n_descriptors;
        units of each descriptor, pm for lengths) of the cells assigned; unknowns:
        ``n_cells``, ``n_unknown``, ``unknown_fraction``, ``n_missing`` (no complete
        descriptors), ``n_uncertain`` (posterior under ``min_probability``),
        ``unknown_fraction_per_frame``; ``min_probability``, ``detrend``.

    Raises
    ------
    ValueError
        Without a model and fewer than 10 complete cells; a model that cannot be used.
    """
    x, ok = series_descriptors(cells, detrend=detrend)
    if model is None:
        fitted, comp = fit_series_model(x, ok, max_classes=max_classes, seed=seed,
                                        sample_size=sample_size, merge_distance=merge_distance)
        ids = np.arange(comp.max() + 1)
        source = model_source or "series"
    else:
        fitted, ids = load_class_model(model)
        comp = fitted.order.copy()
        source = model_source or "model"
    post = class_posterior(fitted, comp, x, ok)
    best = np.where(ok, np.nanargmax(np.where(ok[:, None], post, 0.0), axis=1), -1)
    prob = np.where(ok, np.take_along_axis(np.nan_to_num(post), np.maximum(best, 0)[:, None],
                                           axis=1)[:, 0], np.nan)
    sure = ok & (prob >= min_probability)
    labels = np.where(sure, ids[np.maximum(best, 0)], -1).astype(np.int64)
    n_classes = int(ids.max()) + 1 if ids.size else 0
    frame = np.asarray(cells["frame"], np.int64)
    n_frames = int(frame.max()) + 1 if frame.size else 0
    rows_per_frame = np.maximum(np.bincount(frame, minlength=n_frames), 1)
    per_frame = np.bincount(frame, labels < 0, n_frames) / rows_per_frame
    cent = _centroids(x, labels, n_classes)
    return {"labels": labels, "probability": prob, "n_classes": n_classes,
            "class_model_source": source, "descriptors": np.array(DESCRIPTORS),
            "population": cent["population"], "mean": cent["mean"], "std": cent["std"],
            "n_cells": int(labels.size), "n_unknown": int((labels < 0).sum()),
            "unknown_fraction": float((labels < 0).mean()) if labels.size else float("nan"),
            "n_missing": int((~ok).sum()), "n_uncertain": int((ok & ~sure).sum()),
            "unknown_fraction_per_frame": per_frame, "min_probability": float(min_probability),
            "detrend": bool(detrend)}


def class_transitions(cells: dict, classes: dict, meta: dict | None = None, *,
                      n_frames: int | None = None, source: str = "series") -> dict:
    """Transitions between the per-frame classes of :func:`frame_classes`.

    Parameters
    ----------
    cells : dict
        The cell series whose rows ``classes`` labels.
    classes : dict
        :func:`frame_classes`'s result.
    meta : dict, optional
        Per-frame ``time_s`` (s), ``temperature_K`` (K): rates per s / per K.
    n_frames : int, optional
    source : str
        The series, named in the warning.

    Returns
    -------
    dict
        :func:`latticegenome.dynamics.series.transitions` (counts, counts_per_step,
        probability, rates_per_s, rates_per_K, dwell, ...) plus
        ``class_model_source``, ``class_means`` (n_classes, n_descriptors: each
        class's descriptor centroid; ``class_means_std``), ``descriptors``,
        ``population`` and the unknowns (``n_unknown``, ``unknown_fraction``,
        ``n_missing``, ``n_uncertain``, ``unknown_fraction_per_frame``,
        ``min_probability``). A warning naming ``source`` when more than
        :data:`UNKNOWN_WARN` of the cells are unknown.
    """
    from latticegenome.dynamics.series import class_matrix, transitions

    meta = meta or {}
    _, labels = class_matrix({**cells, "class": classes["labels"]}, n_frames=n_frames)
    out = transitions(labels, meta.get("time_s"), meta.get("temperature_K"),
                      n_classes=max(classes["n_classes"], 1))
    keep = ("class_model_source", "descriptors", "population", "n_cells", "n_unknown",
            "unknown_fraction", "n_missing", "n_uncertain", "unknown_fraction_per_frame",
            "min_probability", "detrend")
    out.update({k: classes[k] for k in keep}, class_means=classes["mean"],
               class_means_std=classes["std"])
    if out["unknown_fraction"] > UNKNOWN_WARN:
        logger.warning("%s: %.0f %% of the cells' classes are unknown (%d without all "
                       "descriptors, %d with a class posterior under %.2f): the class "
                       "transitions undercount", source, 100 * out["unknown_fraction"],
                       out["n_missing"], out["n_uncertain"], out["min_probability"])
    out["displacement_resolution_pm"] = displacement_resolution(cells, classes["labels"] >= 0)
    if (classes["n_classes"] == 1 and out["class_model_source"] == "series"
            and out["displacement_resolution_pm"] > RESOLUTION_WARN_PM):
        logger.warning("%s: one class, but the cells' B displacements are too uncertain to tell "
                       "configurations apart that differ by less than %.0f pm (%g x the median "
                       "per-cell error): polar states could hide in it; see summaries/polar_hmm",
                       source, out["displacement_resolution_pm"], RESOLUTION_ERRORS)
    return out


def displacement_resolution(cells: dict, rows: np.ndarray) -> float:
    """Smallest B-displacement difference (pm) between two classes of cells that the
    class model can resolve: :data:`RESOLUTION_ERRORS` times the median per-cell error
    (the larger of x and y) of ``rows``; NaN without any.

    Examples
    --------
    >>> cells = {"dx_err_pm": np.array([1.0, 2.0, 3.0]), "dy_err_pm": np.array([2.0, 2.0, 4.0])}
    >>> displacement_resolution(cells, np.ones(3, bool))
    8.0
    """
    if "dx_err_pm" not in cells or not np.any(rows):
        return float("nan")
    err = np.fmax(np.asarray(cells["dx_err_pm"], float), np.asarray(cells["dy_err_pm"], float))[rows]
    err = err[np.isfinite(err)]
    return float(RESOLUTION_ERRORS * np.median(err)) if err.size else float("nan")


__all__ = ["FRAME_WIDE", "RESOLUTION_ERRORS", "RESOLUTION_WARN_PM", "UNKNOWN_WARN",
           "class_posterior", "class_transitions", "displacement_resolution",
           "component_groups", "fit_series_model", "frame_classes", "load_class_model",
           "series_descriptors"]
