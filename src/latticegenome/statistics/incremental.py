"""Reduce side of the experiment statistics: merge the batches' partials, keep
the class model stable as data grows, assign only what is stale.

:func:`reduce_experiment` is the ``statistics`` rule. Its cost grows with the
number of batches, not of cells: it reads every batch's partials
(:mod:`latticegenome.statistics.partials`), fits or keeps the class model on
the merged sample, assigns classes only in batches whose assignment is
missing or came from another model (:func:`~latticegenome.statistics.mapreduce.assign_batch`,
batches side by side in worker processes), merges their class sums and
layer profiles and writes the experiment's summary file and tables.

Refit policy
------------
The class model is kept in ``<results>/<exp>/classes/model.json`` (its
history in ``classes/history/``). It is refitted when there is none, when
the class settings changed, when no model could be fitted before and
there are more cells now, or when the classifiable cells have grown by the
factor ``refit_growth`` (default 2) since the last fit; otherwise the same
model assigns the new batches and earlier assignments stay as they are.
After a refit, the new classes are matched to the previous ones (Hungarian
assignment on the class means in standardised descriptor units, accepted
within :data:`MATCH_DISTANCE`): a matched class keeps its id, a new one
gets the next unused id, a class that disappeared leaves its id unused.
So class ids never shuffle; with ``refit_growth: 1`` every increment refits
and the classes are those of a one-shot run on the same images (same
sample: the partials' keyed sample does not depend on the batches), up to
their ids.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latticegenome.core.fsutil import atomic_write
from latticegenome.statistics.classes import DESCRIPTORS, TABLE_FIELDS, ClassModel, fit_classes
from latticegenome.statistics.partials import Partials, read_partials

logger = logging.getLogger(__name__)

#: Largest distance (standardised descriptor units, RMS over descriptors)
#: at which a refitted class is the same class as a previous one.
MATCH_DISTANCE = 1.0


# --------------------------------------------------------------------------- the model as JSON


def model_to_json(model: ClassModel) -> dict:
    """The class model as plain JSON (scaler, PCA, mixture, class order, BIC)."""
    g = model.gmm
    return {"mean": model.mean.tolist(), "scale": model.scale.tolist(),
            "components": model.components.tolist(), "order": model.order.tolist(),
            "bic": {str(k): v for k, v in model.bic.items()},
            "gmm": {"weights": g.weights_.tolist(), "means": g.means_.tolist(),
                    "covariances": g.covariances_.tolist(),
                    "precisions_cholesky": g.precisions_cholesky_.tolist()},
            "descriptors": list(DESCRIPTORS)}


class StoredMixture:
    """A fitted full-covariance Gaussian mixture, as stored: what assigning needs.

    ``predict_proba`` is scikit-learn's (the same formula on the same
    parameters) without importing scikit-learn, whose import costs more than
    assigning a batch: an increment with a kept model does not pay it.
    """

    def __init__(self, weights, means, covariances, precisions_cholesky):
        self.weights_, self.means_ = np.asarray(weights, float), np.asarray(means, float)
        self.covariances_ = np.asarray(covariances, float)
        self.precisions_cholesky_ = np.asarray(precisions_cholesky, float)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Posterior probability of each component for each row of ``x``."""
        x = np.atleast_2d(np.asarray(x, float))
        n, d = x.shape
        logp = np.empty((n, len(self.weights_)))
        for k, (mu, pc) in enumerate(zip(self.means_, self.precisions_cholesky_)):
            y = x @ pc - mu @ pc
            logp[:, k] = (-0.5 * (d * np.log(2 * np.pi) + np.sum(y * y, axis=1))
                          + np.log(np.diag(pc)).sum() + np.log(self.weights_[k]))
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return p / p.sum(axis=1, keepdims=True)


def model_from_json(d: dict) -> ClassModel:
    """The :class:`ClassModel` of :func:`model_to_json` (its mixture a :class:`StoredMixture`)."""
    gd = d["gmm"]
    g = StoredMixture(gd["weights"], gd["means"], gd["covariances"], gd["precisions_cholesky"])
    return ClassModel(mean=np.asarray(d["mean"]), scale=np.asarray(d["scale"]),
                      components=np.asarray(d["components"]), gmm=g,
                      order=np.asarray(d["order"], dtype=np.int64),
                      bic={int(k): v for k, v in d["bic"].items()})


def class_means(model: ClassModel) -> np.ndarray:
    """Each class's mean descriptor row (row ``c``: the model's class ``c``)."""
    back = model.gmm.means_ @ model.components * model.scale + model.mean
    out = np.empty_like(back)
    out[model.order] = back
    return out


def match_classes(new_means: np.ndarray, old_means: np.ndarray, old_ids, scale) -> np.ndarray:
    """Stable ids for a refitted model's classes.

    Parameters
    ----------
    new_means : ndarray, shape (k, d)
        Mean descriptors of the new classes 0 .. k-1.
    old_means : ndarray, shape (m, d)
        Those of the previous classes, whose ids are ``old_ids``.
    scale : ndarray, shape (d,)
        Descriptor scale (distances are in these units).

    Returns
    -------
    ndarray of int, shape (k,)
        The id of each new class: the matched old id, else a new one
        (above every id used before).

    Examples
    --------
    >>> match_classes(np.array([[1.0], [5.0]]), np.array([[5.1]]), [7], np.array([1.0]))
    array([8, 7])
    """
    from scipy.optimize import linear_sum_assignment

    new_means, old_means = np.atleast_2d(new_means), np.atleast_2d(old_means)
    old_ids = np.asarray(old_ids, dtype=np.int64)
    ids = np.full(len(new_means), -1, dtype=np.int64)
    if len(old_ids):
        d = np.sqrt((((new_means[:, None, :] - old_means[None, :, :]) / scale) ** 2).mean(-1))
        rows, cols = linear_sum_assignment(d)
        for r, c in zip(rows, cols):
            if d[r, c] <= MATCH_DISTANCE:
                ids[r] = old_ids[c]
    nxt = int(old_ids.max()) + 1 if len(old_ids) else 0
    for r in np.flatnonzero(ids < 0):
        ids[r], nxt = nxt, nxt + 1
    return ids


# --------------------------------------------------------------------------- the refit policy


@dataclass
class ClassState:
    """The class model of an experiment and what it was fitted on."""

    model: ClassModel | None
    ids: np.ndarray
    model_id: str
    fitted_on: int  # classifiable cells in the experiment at the fit
    settings: dict
    refitted: bool = False

    def as_json(self) -> dict:
        return {"model": model_to_json(self.model) if self.model is not None else None,
                "ids": self.ids.tolist(), "model_id": self.model_id, "fitted_on": self.fitted_on,
                "settings": self.settings,
                "means": class_means(self.model).tolist() if self.model is not None else []}


def read_state(path: Path) -> tuple[ClassState | None, dict]:
    """The state saved by :func:`save_state` (None if missing or unreadable) and its JSON."""
    try:
        d = json.loads(Path(path).read_text())
        model = model_from_json(d["model"]) if d["model"] else None
        return ClassState(model, np.asarray(d["ids"], np.int64), d["model_id"],
                          int(d["fitted_on"]), d["settings"]), d
    except (OSError, ValueError, KeyError, TypeError):
        return None, {}


def save_state(folder: Path, state: ClassState) -> None:
    """``folder/model.json`` (atomic) and a copy in ``folder/history/``."""
    text = json.dumps(state.as_json())
    (folder / "history").mkdir(parents=True, exist_ok=True)
    for path in (folder / "history" / f"model-{state.model_id[:16]}.json", folder / "model.json"):
        with atomic_write(path, "w") as fh:
            fh.write(text)


def needs_refit(state: ClassState | None, settings: dict, classifiable: int,
                growth: float) -> str | None:
    """Why the class model must be refitted now (None: keep it)."""
    if state is None:
        return "no class model yet"
    if state.settings != settings:
        return "the class settings changed"
    if state.model is None and classifiable > state.fitted_on:
        return "no model could be fitted before, and there are more cells now"
    if state.model is not None and classifiable >= growth * max(state.fitted_on, 1):
        return f"the cells grew from {state.fitted_on} to {classifiable} (x{growth:g} or more)"
    return None


def update_state(folder: Path, sample: np.ndarray, classifiable: int, *, settings: dict,
                 growth: float = 2.0) -> ClassState:
    """The experiment's class model: the saved one, or refitted (ids matched) and saved."""
    old, old_json = read_state(folder / "model.json")
    why = needs_refit(old, settings, classifiable, growth)
    if why is None:
        logger.info("class model %s kept (fitted on %d cells, %d now)", old.model_id[:12],
                    old.fitted_on, classifiable)
        return old
    logger.info("class model refitted: %s", why)
    try:
        model = fit_classes(sample, max_classes=settings["max_classes"], seed=settings["seed"])
    except ValueError as exc:
        logger.info("no classification: %s", exc)
        model = None
    ids = np.zeros(0, np.int64)
    if model is not None:
        old_means = np.asarray(old_json.get("means") or np.empty((0, len(DESCRIPTORS))))
        ids = match_classes(class_means(model), old_means,
                            old.ids if old is not None and old.model is not None else [],
                            model.scale)
    body = json.dumps({"model": model_to_json(model) if model else None, "ids": ids.tolist(),
                       "settings": settings, "fitted_on": classifiable}, sort_keys=True)
    state = ClassState(model, ids, hashlib.sha256(body.encode()).hexdigest(), classifiable,
                       settings, refitted=True)
    save_state(folder, state)
    return state


# --------------------------------------------------------------------------- merging


def merge_batches(partials_files) -> tuple[Partials, np.ndarray]:
    """The merged partials of the batches, in order, and each used image's batch index."""
    merged, image_batch = None, []
    for k, path in enumerate(partials_files):
        p, _ = read_partials(path)
        image_batch += [k] * len(p.images)
        if merged is None:
            merged = p
        else:
            merged.merge(p)
    if merged is None:
        raise ValueError("no batch partials to merge")
    return merged, np.asarray(image_batch, np.int64)


def class_table_of(summaries: list[dict], ids: np.ndarray) -> dict:
    """The class table (one row per id in use) from the batches' class sums."""
    n_ids = max([len(s["n"]) for s in summaries] + [int(ids.max()) + 1 if len(ids) else 0])
    n = np.zeros(n_ids, np.int64)
    s1, s2 = np.zeros((n_ids, len(TABLE_FIELDS))), np.zeros((n_ids, len(TABLE_FIELDS)))
    fin = np.zeros((n_ids, len(TABLE_FIELDS)), np.int64)
    for s in summaries:
        k = len(s["n"])
        n[:k] += np.asarray(s["n"], np.int64)
        s1[:k] += np.asarray(s["s1"]).reshape(k, -1)
        s2[:k] += np.asarray(s["s2"]).reshape(k, -1)
        fin[:k] += np.asarray(s["finite"], np.int64).reshape(k, -1)
    keep = np.array(sorted(set(ids.tolist()) | set(np.flatnonzero(n).tolist())), np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1[keep] / fin[keep]
        std = np.sqrt(np.maximum(s2[keep] / fin[keep] - mean**2, 0))
    out = {"class": keep, "population": n[keep], "fraction": n[keep] / max(1, n.sum())}
    for j, f in enumerate(TABLE_FIELDS):
        out[f"{f}_mean"], out[f"{f}_std"] = mean[:, j], std[:, j]
    return out


def assign_stale(jobs: list[dict], state: ClassState, *, workers: int = 1, **kwargs) -> list[dict]:
    """Class summaries of every batch, assigning those that are stale.

    ``jobs``: per batch ``cells`` (Parquet), ``classes`` (Parquet out),
    ``summary`` (JSON out). A batch whose summary names this model and its
    cell table as it is now (size and time) is read, not assigned again.
    """
    from latticegenome.statistics.mapreduce import assign_batch

    out: list[dict | None] = [None] * len(jobs)
    stale = []
    for k, job in enumerate(jobs):
        try:
            s = json.loads(Path(job["summary"]).read_text())
            st = Path(job["cells"]).stat()  # cells measured again: their classes are stale
            if (s.get("model_id") == state.model_id and Path(job["classes"]).exists()
                    and s.get("cells_stamp") == f"{st.st_size}:{st.st_mtime_ns}"):
                out[k] = s
                continue
        except (OSError, ValueError):
            pass
        stale.append(k)
    logger.info("classes: %d batch(es) assigned now, %d already by model %s", len(stale),
                len(jobs) - len(stale), state.model_id[:12])
    args = [(jobs[k]["cells"], state.model, state.ids, state.model_id, jobs[k]["classes"],
             jobs[k]["summary"]) for k in stale]
    if workers > 1 and len(args) > 1:
        with cf.ProcessPoolExecutor(min(workers, len(args))) as pool:
            done = list(pool.map(_assign_star, [(a, kwargs) for a in args]))
    else:
        done = [assign_batch(*a, **kwargs) for a in args]
    for k, s in zip(stale, done):
        out[k] = {**s, "_new": True}
    return out


def _assign_star(job):
    from latticegenome.statistics.mapreduce import assign_batch

    args, kwargs = job
    return assign_batch(*args, **kwargs)


__all__ = ["ClassState", "MATCH_DISTANCE", "StoredMixture", "assign_stale", "class_means", "class_table_of",
           "match_classes", "merge_batches", "model_from_json", "model_to_json", "needs_refit",
           "read_state", "update_state"]
