"""Figures: an analysed image with its columns and cells, the experiment's
histograms, the layer profile (matplotlib, written to PNG).

These functions draw with whatever matplotlib backend is in use; they never
choose one. Entry points that write files without a display set it once,
before pyplot is first imported (``matplotlib.use("Agg")``). The statistics
are read through :mod:`latticegenome.statistics.results`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latticegenome.statistics.results import Statistics, read_statistics


def _statistics(source: str | Path | Statistics) -> Statistics:
    """The statistics of an experiment, read from its file unless given."""
    return source if isinstance(source, Statistics) else read_statistics(source)

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


def _finish_panel(ax, title, pixel_size_pm, shape):
    """Scale bar, title, no axes: the end of every image panel."""
    _scale_bar(ax, pixel_size_pm, shape)
    ax.set_title(title)
    ax.set_axis_off()


def _class_colours(n):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(max(n, 1))]


def plot_image_overview(image, columns, cells, pixel_size_pm, out, *, title="", classes=None):
    """One image in four panels: columns, B displacement, strain e_yy, class map.

    Positions (``columns``, ``cells``) in pixels of ``image``, displacements in
    pm; ``classes``: the class of each cell (-1: unclassified).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(2, 2, figsize=(12, 11.5), constrained_layout=True)
    ax = axes[0, 0]
    ax.imshow(image, cmap="gray")
    a = columns["site"] == "A"
    ax.scatter(columns["x"][a], columns["y"][a], s=6, c="tab:orange", label="A site")
    ax.scatter(columns["x"][~a], columns["y"][~a], s=4, c="tab:cyan", label="B site")
    ax.legend(loc="upper right", fontsize=8)
    _finish_panel(ax, "Refined A and B columns", pixel_size_pm, image.shape)

    ax = axes[0, 1]
    ax.imshow(image, cmap="gray")
    ok = cells["has_B"]
    mag = np.hypot(cells["dx_pm"][ok], cells["dy_pm"][ok])
    q = ax.quiver(cells["x"][ok], cells["y"][ok], cells["dx_pm"][ok], cells["dy_pm"][ok], mag,
                  angles="xy", scale_units="xy", scale=0.5, cmap="plasma", width=0.004)
    fig.colorbar(q, ax=ax, label="B displacement |d| (pm); arrows 2 px per pm", shrink=0.8)
    _finish_panel(ax, "B-site displacement (polarisation proxy)", pixel_size_pm, image.shape)

    ax = axes[1, 0]
    ax.imshow(image, cmap="gray", alpha=0.5)
    lim = max(0.01, float(np.nanpercentile(np.abs(cells["eyy"]), 99)))
    sc = ax.scatter(cells["x"], cells["y"], c=cells["eyy"] * 100, cmap="RdBu_r", vmin=-lim * 100,
                    vmax=lim * 100, s=30, marker="s")
    fig.colorbar(sc, ax=ax, label="strain e_yy (%)", shrink=0.8)
    _finish_panel(ax, "Out-of-plane strain e_yy (vs reference)", pixel_size_pm, image.shape)

    ax = axes[1, 1]
    ax.imshow(image, cmap="gray", alpha=0.5)
    if classes is not None and np.any(classes >= 0):
        n = int(classes.max()) + 1
        colours = np.array(_class_colours(n))
        have = classes >= 0
        ax.scatter(cells["x"][have], cells["y"][have], c=colours[classes[have]], s=30, marker="s")
        ax.scatter(cells["x"][~have], cells["y"][~have], c="lightgrey", s=30, marker="s")
        ax.legend(handles=[Patch(color=colours[c], label=f"class {c}") for c in range(n)]
                  + [Patch(color="lightgrey", label="unclassified")], loc="upper right", fontsize=8)
    _finish_panel(ax, "Configuration class of each cell", pixel_size_pm, image.shape)
    fig.suptitle(title)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_experiment(statistics, out, *, title=""):
    """Histograms of lattice parameters, displacement, intensity ratio; class populations.

    ``statistics``: the statistics file or what :func:`read_statistics` read from it.
    """
    import matplotlib.pyplot as plt

    stats = _statistics(statistics)
    h, summary = stats.histograms, stats.summary
    pop = stats.classes.get("population", np.zeros(0))
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)

    def zoom(ax, e, c):
        nz = np.flatnonzero(c)
        if nz.size:
            lo, hi = e[max(nz[0] - 2, 0)], e[min(nz[-1] + 3, len(e) - 1)]
            ax.set_xlim(lo, hi)

    def pair(ax, keys_labels, xlabel):
        for key, label in keys_labels:
            e, c = h[key]
            ax.stairs(c, e, label=label, lw=1.5)
        zoom(ax, e, sum(h[k][1] for k, _ in keys_labels))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("cells")
        ax.legend()

    pair(axes[0, 0], (("a_pm", "a (along x)"), ("b_pm", "b (other axis)")), "lattice parameter (pm)")
    pair(axes[0, 1], (("dx_pm", "d_x"), ("dy_pm", "d_y")), "B displacement from the cell centre (pm)")
    e, c = h["intensity_ratio"]
    axes[1, 0].stairs(c, e, lw=1.5, color="k")
    zoom(axes[1, 0], e, c)
    axes[1, 0].set_xlabel("integrated intensity ratio I_B / I_A")
    axes[1, 0].set_ylabel("cells")
    if pop.size:
        colours = _class_colours(len(pop))
        axes[1, 1].bar(np.arange(len(pop)), pop, color=colours)
        axes[1, 1].set_xticks(np.arange(len(pop)))
        axes[1, 1].set_xlabel("class")
        axes[1, 1].set_ylabel("cells")
        axes[1, 1].set_title("Class populations")
    fig.suptitle(f"{title}: {summary['cells']} cells from {summary['images_used']} images "
                 f"({summary['images_rejected']} set aside), {summary['classes']} classes")
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_layers(statistics, out, *, image=None, pixel_size_pm=None, title=""):
    """Layer profile of one image along the stacking axis, interfaces marked.

    ``statistics``: the statistics file or what :func:`read_statistics` read
    from it; ``image``: the image's name (default: the first); positions in
    nm with ``pixel_size_pm``, else in px.
    """
    import matplotlib.pyplot as plt

    stats = _statistics(statistics)
    lay, summary = stats.layers, stats.summary
    imgs, mats = lay["image"], lay["material"]
    ifc_pos, ifc_img = stats.interfaces["position_px"], stats.interfaces["image"]
    if image is None and imgs.size:
        image = imgs[0]
    m = imgs == image
    scale = (pixel_size_pm or 1.0) / 1000.0
    unit = "nm" if pixel_size_pm else "px"
    pos = lay["position_px"][m] * scale
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True, constrained_layout=True)
    axes[0].plot(pos, lay["b_pm"][m], "o-", label="b (stacking direction)")
    axes[0].plot(pos, lay["a_pm"][m], "s-", label="a (in plane)")
    axes[0].set_ylabel("lattice parameter (pm)")
    axes[0].legend()
    axes[1].plot(pos, lay["intensity_ratio"][m], "o-", color="k")
    axes[1].set_ylabel("I_B / I_A")
    axes[2].plot(pos, lay["dy_pm"][m], "o-", color="tab:red", label="d_y")
    axes[2].plot(pos, lay["dx_pm"][m], "s-", color="tab:blue", label="d_x")
    axes[2].axhline(0, color="grey", lw=0.8)
    axes[2].set_ylabel("B displacement (pm)")
    axes[2].set_xlabel(f"position along the stacking axis ({unit})")
    axes[2].legend()
    for p in ifc_pos[ifc_img == image] * scale:
        for ax in axes:
            ax.axvline(p, color="tab:green", ls="--", lw=1)
    mats = mats[m]
    for mat, colour in zip(sorted(set(x for x in mats if x)), ("#fde0c5", "#d5e8f5")):
        sel = mats == mat
        for p in pos[sel]:
            axes[0].axvspan(p - 0.5 * np.median(np.diff(pos)) if len(pos) > 1 else p, p + 0.5 * np.median(np.diff(pos)) if len(pos) > 1 else p,
                            color=colour, lw=0, zorder=0)
        axes[0].plot([], [], color=colour, lw=8, label=mat)
    axes[0].legend(fontsize=8)
    period = summary.get("period_planes_mean")
    axes[0].set_title(f"{title} {image}: interfaces dashed"
                      + (f"; experiment period {period:.1f} planes" if period else ""))
    fig.savefig(out, dpi=100)
    plt.close(fig)
