"""Classes of local configurations: the same classes across an experiment.

Per-cell descriptors (lattice parameters, angle, strain, B displacement, B/A
intensity ratio) are standardised, reduced with PCA, and modelled by a
Gaussian mixture whose number of components is chosen by BIC (scikit-learn).
The model is fitted once on a uniform sample of cells drawn across all images
(:class:`Reservoir`), then every cell is assigned, so class k means the same
configuration in every image. Classes are numbered by increasing mean
intensity ratio, then b, so the numbering does not depend on the fit's
random start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latticegenome.statistics.cells import usable_b_cells

#: Descriptors used for classification (cells without a B column are not
#: classified: their class is -1).
DESCRIPTORS = ("a_pm", "b_pm", "angle_deg", "exx", "eyy", "exy", "dx_pm", "dy_pm",
               "intensity_ratio")

#: Statistics reported per class.
TABLE_FIELDS = ("a_pm", "b_pm", "angle_deg", "exx", "eyy", "exy", "rotation_deg", "dx_pm",
                "dy_pm", "intensity_A", "intensity_B", "intensity_ratio")


def descriptor_matrix(cells: dict, names=DESCRIPTORS) -> tuple[np.ndarray, np.ndarray]:
    """Rows of descriptors and the mask of cells that have all of them and a usable B
    column (:func:`~latticegenome.statistics.cells.usable_b_cells`: a class is a
    configuration of the cell, not of the noise of an empty site; nor of the few
    cells whose noise made their B significant at low dose)."""
    x = np.column_stack([np.asarray(cells[n], float) for n in names])
    ok = np.isfinite(x).all(axis=1) & usable_b_cells(cells)
    return x, ok


class Reservoir:
    """A uniform random sample of fixed size from a stream of rows.

    Memory is ``size`` rows whatever the length of the stream (algorithm R,
    vectorised per batch).
    """

    def __init__(self, size: int, n_features: int, seed: int = 0):
        self.size = size
        self.rows = np.empty((size, n_features))
        self.origin = np.empty(size, dtype=np.int64)  # image index of each row
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def add(self, rows: np.ndarray, origin: int = 0) -> None:
        rows = np.asarray(rows, float)
        n = len(rows)
        if n == 0:
            return
        fill = max(0, min(n, self.size - self.seen))
        if fill:
            self.rows[self.seen : self.seen + fill] = rows[:fill]
            self.origin[self.seen : self.seen + fill] = origin
        rest = rows[fill:]
        if len(rest):
            idx = self.seen + fill + np.arange(len(rest))  # stream positions (0-based)
            slot = (self.rng.random(len(rest)) * (idx + 1)).astype(np.int64)
            take = slot < self.size
            self.rows[slot[take]] = rest[take]
            self.origin[slot[take]] = origin
        self.seen += n

    @property
    def sample(self) -> np.ndarray:
        return self.rows[: min(self.seen, self.size)]


@dataclass
class ClassModel:
    """Scaler, PCA and Gaussian mixture, with classes in a stable order."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    gmm: object
    order: np.ndarray  # fitted component -> class number
    bic: dict

    @property
    def n_classes(self) -> int:
        return int(len(self.order))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.components.T

    def assign(self, x: np.ndarray, usable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Class of each row (-1 where a descriptor is missing, or ``usable`` is False)
        and its probability."""
        x = np.asarray(x, float)
        ok = np.isfinite(x).all(axis=1)
        if usable is not None:
            ok &= np.asarray(usable, bool)
        labels = np.full(len(x), -1, dtype=np.int64)
        prob = np.full(len(x), np.nan)
        if ok.any():
            p = self.gmm.predict_proba(self.transform(x[ok]))
            comp = p.argmax(axis=1)
            labels[ok] = self.order[comp]
            prob[ok] = p.max(axis=1)
        return labels, prob


def fit_classes(sample: np.ndarray, *, max_classes: int = 8, variance: float = 0.99,
                seed: int = 0) -> ClassModel:
    """Fit the class model on a sample of descriptor rows.

    Parameters
    ----------
    sample : ndarray, shape (n, len(DESCRIPTORS))
    max_classes : int
        Mixtures of 1 .. max_classes components are compared by BIC.
    variance : float
        PCA keeps the components explaining this fraction of the variance.
    seed : int

    Raises
    ------
    ValueError
        With fewer than 10 complete rows.
    """
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    x = np.asarray(sample, float)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < 10:
        raise ValueError(f"{len(x)} complete cells: too few to classify")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    pca = PCA(n_components=variance, svd_solver="full", random_state=seed).fit(z)
    y = pca.transform(z)
    bic = {}
    best = None
    for k in range(1, min(max_classes, len(x) // 10) + 1):
        gmm = GaussianMixture(k, covariance_type="full", n_init=2, random_state=seed,
                              reg_covar=1e-4).fit(y)
        bic[k] = float(gmm.bic(y))
        if best is None or bic[k] < bic[best[0]]:
            best = (k, gmm)
    k, gmm = best
    # Stable numbering: by the component means' intensity ratio, then b.
    back = gmm.means_ @ pca.components_ * scale + mean
    ratio_col = DESCRIPTORS.index("intensity_ratio")
    b_col = DESCRIPTORS.index("b_pm")
    rank = np.lexsort((back[:, b_col], back[:, ratio_col]))
    order = np.empty(k, dtype=np.int64)
    order[rank] = np.arange(k)
    return ClassModel(mean=mean, scale=scale, components=pca.components_, gmm=gmm, order=order,
                      bic=bic)


class ClassTable:
    """Running per-class statistics (count, mean, standard deviation)."""

    def __init__(self, n_classes: int, fields=TABLE_FIELDS):
        self.fields = list(fields)
        self.n = np.zeros(n_classes, dtype=np.int64)
        self.s1 = np.zeros((n_classes, len(self.fields)))
        self.s2 = np.zeros((n_classes, len(self.fields)))
        self.finite = np.zeros((n_classes, len(self.fields)), dtype=np.int64)

    def add(self, cells: dict, labels: np.ndarray) -> None:
        v = np.column_stack([np.asarray(cells[f], float) for f in self.fields])
        for c in range(len(self.n)):
            m = labels == c
            if not m.any():
                continue
            vc = v[m]
            fin = np.isfinite(vc)
            self.n[c] += m.sum()
            self.s1[c] += np.where(fin, vc, 0).sum(axis=0)
            self.s2[c] += np.where(fin, vc**2, 0).sum(axis=0)
            self.finite[c] += fin.sum(axis=0)

    def table(self) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.s1 / self.finite
            std = np.sqrt(np.maximum(self.s2 / self.finite - mean**2, 0))
        out = {"class": np.arange(len(self.n)), "population": self.n,
               "fraction": self.n / max(1, self.n.sum())}
        for j, f in enumerate(self.fields):
            out[f"{f}_mean"] = mean[:, j]
            out[f"{f}_std"] = std[:, j]
        return out
