"""Experiment-level statistics, streamed over per-image results.

:func:`aggregate` reads the per-image column files one at a time, measures
their cells, appends them to an HDF5 table on disk and keeps only fixed-size
running summaries in memory, so memory does not grow with the number of
images. Rejected images (unreadable, no lattice, no complete cell) are
listed with their reason and left out of the statistics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cells import CELL_FIELDS, measure_cells
from .fsutil import atomic_path
from .store import read_columns
from .tables import write_table_csv

IMAGE_FIELDS = ("image", "n_A", "n_B", "n_cells", "pixel_size_pm", "a_pm", "b_pm",
                "dx_pm", "dy_pm", "intensity_ratio", "dispersion", "mean_x_err_A_pm",
                "mean_x_err_B_pm")


@dataclass
class Histogram:
    """A fixed-bin histogram that can be filled batch by batch."""

    edges: np.ndarray
    counts: np.ndarray = field(init=False)

    def __post_init__(self):
        self.counts = np.zeros(len(self.edges) - 1, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, float)
        self.counts += np.histogram(v[np.isfinite(v)], self.edges)[0]


class CellTable:
    """An extendible HDF5 table of cells (one dataset per field)."""

    def __init__(self, h5file, fields=CELL_FIELDS):
        self.group = h5file.create_group("cells")
        self.fields = list(fields) + ["image"]
        for name in self.fields:
            dtype = np.int64 if name in ("i", "j", "image") else (bool if name == "has_B" else float)
            self.group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                                      chunks=(65536,), compression="gzip", shuffle=True)
        self.n = 0

    def append(self, cells: dict, image_index: int) -> None:
        m = len(cells["x"])
        for name in self.fields:
            ds = self.group[name]
            ds.resize((self.n + m,))
            ds[self.n :] = np.full(m, image_index) if name == "image" else cells[name]
        self.n += m


def aggregate(
    results: list[str | Path],
    out_h5: str | Path,
    images_tsv: str | Path,
    rejected_tsv: str | Path,
    *,
    nominal_pm: float | None = None,
    log=print,
) -> dict:
    """Measure and aggregate the cells of every image of an experiment.

    Parameters
    ----------
    results : list of path
        Per-image column files (HDF5), rejected ones included.
    out_h5 : path
        Written: ``cells`` table (with an ``image`` index), ``images`` names,
        histograms, summary attributes.
    images_tsv, rejected_tsv : path
        Per-image summary; rejected images with their reason.
    nominal_pm : float, optional
        Nominal lattice parameter: centres the lattice-parameter histograms
        and is the strain reference.

    Returns
    -------
    dict
        Summary (images used and rejected, cells, means).
    """
    import h5py

    centre = nominal_pm or 400.0
    hist = {
        "a_pm": Histogram(np.linspace(0.85 * centre, 1.15 * centre, 121)),
        "b_pm": Histogram(np.linspace(0.85 * centre, 1.15 * centre, 121)),
        "dx_pm": Histogram(np.linspace(-40, 40, 161)),
        "dy_pm": Histogram(np.linspace(-40, 40, 161)),
        "intensity_ratio": Histogram(np.linspace(0, 1.5, 151)),
    }
    rows = {k: [] for k in IMAGE_FIELDS}
    rejected = {"file": [], "source": [], "reason": []}
    names = []
    with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as f:
        table = CellTable(f)
        for path in results:
            path = Path(path)
            cols, attrs = read_columns(path)
            source = attrs.get("source", str(path))
            if attrs.get("status") != "ok":
                rejected["file"].append(Path(source).name)
                rejected["source"].append(source)
                rejected["reason"].append(attrs.get("reason", "rejected"))
                continue
            px = float(attrs["pixel_size_pm"])
            try:
                cells = measure_cells(cols, px, reference_pm=(nominal_pm, nominal_pm) if nominal_pm else None)
            except ValueError as exc:
                rejected["file"].append(Path(source).name)
                rejected["source"].append(source)
                rejected["reason"].append(str(exc))
                log(f"{source}: set aside: {exc}")
                continue
            k = len(names)
            names.append(Path(source).name)
            table.append(cells, k)
            for name, h in hist.items():
                h.add(cells[name])
            is_a = cols["site"] == "A"
            rows["image"].append(Path(source).name)
            rows["n_A"].append(int(is_a.sum()))
            rows["n_B"].append(int((~is_a).sum()))
            rows["n_cells"].append(len(cells["x"]))
            rows["pixel_size_pm"].append(px)
            for name in ("a_pm", "b_pm", "dx_pm", "dy_pm", "intensity_ratio"):
                v = cells[name][np.isfinite(cells[name])]
                rows[name].append(float(np.median(v)) if v.size else np.nan)
            rows["dispersion"].append(float(attrs.get("dispersion", np.nan)))
            rows["mean_x_err_A_pm"].append(float(np.mean(cols["x_err"][is_a]) * px))
            rows["mean_x_err_B_pm"].append(float(np.mean(cols["x_err"][~is_a]) * px) if (~is_a).any() else np.nan)
        f.create_dataset("images", data=np.array(names, dtype="S"))
        g = f.create_group("histograms")
        for name, h in hist.items():
            g.create_dataset(f"{name}/edges", data=h.edges)
            g.create_dataset(f"{name}/counts", data=h.counts)
        summary = {
            "images_used": len(names),
            "images_rejected": len(rejected["file"]),
            "cells": int(table.n),
        }
        f.attrs["summary"] = json.dumps(summary)
        f.attrs["units"] = json.dumps({"positions": "px", "lengths": "pm", "strain": "1",
                                       "angles": "deg"})
    write_table_csv(images_tsv, rows, IMAGE_FIELDS, delimiter="\t")
    write_table_csv(rejected_tsv, rejected, ("file", "reason", "source"), delimiter="\t")
    return summary


# --- figures ---------------------------------------------------------------

def _scale_bar(ax, pixel_size_pm: float, shape, length_nm: float | None = None):
    rows, cols = shape
    if length_nm is None:
        width_nm = cols * pixel_size_pm / 1000
        length_nm = float(np.round(width_nm / 5, 0 if width_nm > 5 else 1)) or 0.5
    length_px = length_nm * 1000 / pixel_size_pm
    x0, y0 = cols * 0.05, rows * 0.93
    ax.plot([x0, x0 + length_px], [y0, y0], color="white", lw=4, solid_capstyle="butt")
    ax.text(x0 + length_px / 2, y0 - rows * 0.02, f"{length_nm:g} nm", color="white",
            ha="center", va="bottom", fontsize=9, fontweight="bold")


def plot_image_overview(image, columns, cells, pixel_size_pm, out, *, title=""):
    """Image with A/B columns, B-displacement arrows and a strain map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), constrained_layout=True)
    ax = axes[0]
    ax.imshow(image, cmap="gray")
    a = columns["site"] == "A"
    ax.scatter(columns["x"][a], columns["y"][a], s=6, c="tab:orange", label="A")
    ax.scatter(columns["x"][~a], columns["y"][~a], s=4, c="tab:cyan", label="B")
    ax.legend(loc="upper right", fontsize=8)
    _scale_bar(ax, pixel_size_pm, image.shape)
    ax.set_title("A and B columns")
    ax.set_axis_off()

    ax = axes[1]
    ax.imshow(image, cmap="gray")
    ok = cells["has_B"]
    mag = np.hypot(cells["dx_pm"][ok], cells["dy_pm"][ok])
    q = ax.quiver(cells["x"][ok], cells["y"][ok], cells["dx_pm"][ok], cells["dy_pm"][ok], mag,
                  angles="xy", scale_units="xy", scale=0.5, cmap="plasma", width=0.004)
    fig.colorbar(q, ax=ax, label="B displacement |d| (pm); arrows x2 px/pm", shrink=0.8)
    _scale_bar(ax, pixel_size_pm, image.shape)
    ax.set_title("B-site displacement (polarisation proxy)")
    ax.set_axis_off()

    ax = axes[2]
    ax.imshow(image, cmap="gray", alpha=0.5)
    lim = max(0.01, float(np.nanpercentile(np.abs(cells["eyy"]), 99)))
    sc = ax.scatter(cells["x"], cells["y"], c=cells["eyy"] * 100, cmap="RdBu_r", vmin=-lim * 100,
                    vmax=lim * 100, s=30, marker="s")
    fig.colorbar(sc, ax=ax, label="strain e_yy (%)", shrink=0.8)
    _scale_bar(ax, pixel_size_pm, image.shape)
    ax.set_title("Out-of-plane strain e_yy")
    ax.set_axis_off()
    fig.suptitle(title)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_experiment(out_h5, out, *, title=""):
    """Histograms of lattice parameters, displacement and intensity ratio."""
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with h5py.File(out_h5, "r") as f:
        h = {k: (f[f"histograms/{k}/edges"][()], f[f"histograms/{k}/counts"][()])
             for k in f["histograms"]}
        summary = json.loads(f.attrs["summary"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    for key, label in (("a_pm", "a (in-plane)"), ("b_pm", "b (out-of-plane)")):
        e, c = h[key]
        axes[0].stairs(c, e, label=label, fill=False, lw=1.5)
    axes[0].set_xlabel("lattice parameter (pm)")
    axes[0].set_ylabel("cells")
    axes[0].legend()
    for key, label in (("dx_pm", "d_x"), ("dy_pm", "d_y")):
        e, c = h[key]
        axes[1].stairs(c, e, label=label, lw=1.5)
    axes[1].set_xlabel("B displacement from cell centre (pm)")
    axes[1].set_ylabel("cells")
    axes[1].legend()
    e, c = h["intensity_ratio"]
    axes[2].stairs(c, e, lw=1.5, color="k")
    axes[2].set_xlabel("intensity ratio I_B / I_A")
    axes[2].set_ylabel("cells")
    fig.suptitle(f"{title}: {summary['cells']} cells from {summary['images_used']} images "
                 f"({summary['images_rejected']} set aside)")
    fig.savefig(out, dpi=110)
    plt.close(fig)
