"""Figures of an image series (the report's): summaries, a poster frame, an animation.

Drawn with matplotlib's object API (no pyplot state, no backend chosen). The
animation is an animated GIF written with Pillow (a matplotlib dependency), of
the registered frames (each shifted by its rigid registration) with their
tracked columns and B displacements; the first frame is also the poster still.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from latticegenome.core.fsutil import atomic_path

#: Frames drawn in an animation at most (evenly picked), and its largest side (px).
ANIMATION_FRAMES, ANIMATION_PX = 40, 256
#: B displacement drawn as this many image pixels per pm.
ARROW_PX_PER_PM = 0.8


def plot_series_summary(dyn: dict, out: str | Path, *, title: str = "") -> None:
    """Wall position per frame; mean lattice parameter and B displacement per frame.

    ``dyn``: what :func:`latticegenome.dynamics.series.read_dynamics` returns.
    """
    summ = dyn["summaries"]
    fig = Figure(figsize=(10, 3.2), dpi=100)
    axes = fig.subplots(1, 3)
    wall = summ.get("wall", {})
    if len(wall.get("time_s", [])):
        axes[0].plot(wall["time_s"], wall["x_px"], "o-", ms=3)
        axes[0].set_ylabel("wall position x (px)")
    axes[0].set_xlabel("time (s)")
    axes[0].set_title("domain wall")
    for ax, name, label in ((axes[1], "a_vs_temperature", "a (pm)"),
                            (axes[2], "dy_vs_time", "B displacement dy (pm)")):
        s = summ.get(name) or summ.get(name.replace("temperature", "time"), {})
        if len(s.get("x", [])):
            ax.errorbar(s["x"], s["mean"], yerr=s["sem"], fmt="o", ms=3)
            xs = np.linspace(np.nanmin(s["x"]), np.nanmax(s["x"]), 2)
            ax.plot(xs, s["intercept"] + s["slope"] * xs, "-", lw=1)
            ax.set_xlabel(str(s.get("by", "")).replace("_", " "))
        ax.set_ylabel(label)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")


def _display(frame: np.ndarray, shift, max_px: int = ANIMATION_PX):
    """A frame shifted into the reference's place, block-averaged to <= max_px, and
    the factor."""
    from scipy.ndimage import shift as nd_shift

    moved = nd_shift(np.asarray(frame, float), (-shift[1], -shift[0]), order=1, mode="nearest")
    k = max(1, int(np.ceil(max(moved.shape) / max_px)))
    h, w = (moved.shape[0] // k) * k, (moved.shape[1] // k) * k
    small = moved[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))
    lo, hi = np.percentile(small, [0.5, 99.5])
    return np.clip((small - lo) / max(hi - lo, 1e-9), 0, 1), k


def _draw_frame(ax, image, k, cols, cells):
    """One registered frame with its A (red) and B (cyan) columns and B displacements."""
    ax.imshow(image, cmap="gray", interpolation="nearest")
    for site, colour in (("A", "#e33"), ("B", "#3cf")):
        m = (np.asarray(cols["site"]) == site) & (np.asarray(cols["track"]) >= 0)
        ax.plot(np.asarray(cols["x"])[m] / k, np.asarray(cols["y"])[m] / k, ".", ms=2,
                color=colour)
    if len(cells.get("x", [])):
        ax.quiver(cells["x"] / k, cells["y"] / k, cells["dx_pm"] * ARROW_PX_PER_PM / k,
                  cells["dy_pm"] * ARROW_PX_PER_PM / k, color="yellow", angles="xy",
                  scale_units="xy", scale=1, width=0.004)
    ax.set_axis_off()


def _frame_parts(dyn: dict, n: int):
    """Columns and cells (registered centres) of the n-th analysed frame."""
    cols, cells = dyn["columns"], dyn["cells"]
    c = {k: np.asarray(v)[np.asarray(cols["frame"]) == n] for k, v in cols.items()}
    m = np.asarray(cells["frame"]) == n
    return c, {k: np.asarray(cells[k])[m] for k in ("x", "y", "dx_pm", "dy_pm")}


def write_series_animation(frames, dyn: dict, gif: str | Path, poster: str | Path, *,
                           title: str = "") -> int:
    """The registered frames with their columns as an animated GIF, and its first
    frame as a still; returns the number of frames drawn.

    ``frames``: the series' frames (raw, all of them); ``dyn``: its dynamics file
    (:func:`~latticegenome.dynamics.series.read_dynamics`). Cell centres of a
    frame are in its own coordinates: they are moved by the registration's shift.
    """
    from matplotlib.animation import FuncAnimation, PillowWriter

    reg = dyn["registration"]
    analysed = np.asarray(reg["frames_analysed"], int)
    pick = np.unique(np.linspace(0, len(analysed) - 1, min(ANIMATION_FRAMES, len(analysed)))
                     .round().astype(int))
    fig = Figure(figsize=(4, 4.3), dpi=80)
    ax = fig.add_axes((0, 0, 1, 0.93))

    def draw(i):
        ax.clear()
        n = pick[i]
        shift = np.asarray(reg["shift_px"])[n]
        image, k = _display(frames[analysed[n]], shift)
        cols, cells = _frame_parts(dyn, n)  # drawn where they are in the shifted frame
        cols["x"], cols["y"] = cols["x_raw"] - shift[0], cols["y_raw"] - shift[1]
        cells["x"], cells["y"] = cells["x"] - shift[0], cells["y"] - shift[1]
        _draw_frame(ax, image, k, cols, cells)
        fig.suptitle(f"{title} frame {analysed[n]}", fontsize=9)

    draw(0)
    with atomic_path(poster) as tmp:
        fig.savefig(tmp, format="png")
    anim = FuncAnimation(fig, draw, frames=len(pick))
    gif = Path(gif)
    tmp = gif.with_name(f".{gif.stem}.{os.getpid()}.part.gif")  # Pillow goes by the suffix
    try:
        anim.save(str(tmp), writer=PillowWriter(fps=4))
        os.replace(tmp, gif)
    finally:
        tmp.unlink(missing_ok=True)
    return len(pick)


__all__ = ["plot_series_summary", "write_series_animation"]
