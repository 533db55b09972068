"""The live page of a watch mode: one self-refreshing HTML file that shows,
per experiment, what has been analysed so far (counts, the newest image with
its columns and displacement arrows, histograms, class populations, the
newest rows of the quality table, the newest rejections and the warnings).

The page opens from disk (``file://``) without a network: every figure is a
PNG embedded as base64, drawn with matplotlib's Agg canvas directly (no
pyplot, no backend chosen, nothing cached between calls). It is written
atomically (:func:`latticegenome.core.fsutil.atomic_write`), so a browser that
refreshes while a new page is written sees the old page or the new one,
whole. Every text that comes from the data (experiment and file names,
reasons, warnings) is HTML-escaped; figures hold no such text (names in any
script would need fonts matplotlib may lack), the captions carry it.

Rendering takes a few hundred milliseconds per experiment: the newest image
is block-averaged to at most :data:`DISPLAY_PX` pixels a side before drawing,
arrows are at least :data:`ARROW_PX` figure pixels apart (block means of the
cells when these are closer), and column sites too dense to tell apart are
left out (the caption says so).
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from pathlib import Path

import numpy as np

from latticegenome.core.fsutil import atomic_write

#: The newest image is block-averaged to at most this many pixels a side.
DISPLAY_PX = 512
#: Arrows at least this many figure pixels apart (block means of the cells when closer).
ARROW_PX = 18
#: Newest rows shown of the quality table, newest rejections shown.
QUALITY_ROWS, REJECTED_ROWS = 20, 10

_HISTOGRAMS = (("a_pm", "a (pm)"), ("b_pm", "b (pm)"), ("dx_pm", "dx of B (pm)"),
               ("dy_pm", "dy of B (pm)"))
_QUALITY = (("image", "image"), ("n_cells", "cells"), ("a_pm", "a (pm)"), ("b_pm", "b (pm)"),
            ("b_over_a", "b/a"), ("dx_pm", "dx (pm)"), ("dy_pm", "dy (pm)"),
            ("dispersion", "dispersion"))
#: site, colour, dot size relative to A, fewest figure px between cells to draw it
_SITES = (("A", "red", 1.0, 6), ("B", "cyan", 0.8, 6), ("O", "yellow", 0.45, 10))

_CSS = """
body{font-family:system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}
header{border-bottom:2px solid #446;margin-bottom:1em}
h1{margin:.2em 0;font-size:1.4em} h2{margin:.2em 0;font-size:1.2em}
section{background:#fff;border:1px solid #ccd;border-radius:6px;padding:.6em 1em;margin:1em 0}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}
td,th{border:1px solid #ddd;padding:.1em .45em;text-align:right}
td.t,th.t{text-align:left} .bad{color:#b00;font-weight:bold} .ok{color:#070}
.warn{color:#8a4b00} .muted{color:#777} .grid{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0} figcaption{font-size:.8em;color:#444;max-width:42em}
.bar{display:inline-block;height:.7em;background:#68a}
"""


def write_live_page(out_html, experiments: list[dict], *, refresh_s: float = 5.0,
                    updated: str | None = None, status: str = "") -> None:
    """Write the live page of a watch mode (atomically) to ``out_html``.

    Parameters
    ----------
    out_html : path
        The page; its folder is made if missing. An existing page is replaced
        whole (a browser refreshing meanwhile sees the old or the new page).
    experiments : list of dict
        One per experiment, every key present (values may be empty):
        ``name`` (str); ``images_analysed``, ``images_rejected``, ``cells``
        (int); ``rejected``: list of ``(file_name, reason)``, newest last;
        ``histograms``: ``{"a_pm", "b_pm", "dx_pm", "dy_pm"}`` each
        ``(edges, counts)``; ``classes``: ``{"class", "count", "a_pm",
        "dy_pm"}`` lists; ``quality``: dict of equal-length lists (the newest
        rows of the per-image table; ``image``, ``n_cells``, ``a_pm``,
        ``b_pm``, ``b_over_a``, ``dx_pm``, ``dy_pm``, ``dispersion`` and the
        ``check_*`` columns are shown); ``warnings``: list of str;
        ``newest``: None or ``{"image", "data", "pixel_size_pm", "columns":
        {"x", "y", "site"}, "cells": {"x", "y", "dx_pm", "dy_pm"}}``
        (positions in pixels of ``data``, displacements in pm).
    refresh_s : float
        The browser reloads the page this often (``<meta http-equiv=
        "refresh">``); 0 or less: no reloading (a page after the watch ended).
    updated : str, optional
        When the results were last updated, as shown; default: now (local time).
    status : str
        The watcher's state, shown under the title (e.g. ``"watching; next
        poll in 5 s"``, ``"stopped"``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "live.html"
    >>> empty = {"name": "run <1>", "images_analysed": 0, "images_rejected": 0, "cells": 0,
    ...          "rejected": [], "histograms": {}, "classes": {}, "quality": {},
    ...          "warnings": [], "newest": None}
    >>> write_live_page(out, [empty], updated="12:00:00", status="watching")
    >>> page = out.read_text(encoding="utf-8")
    >>> '<meta http-equiv="refresh" content="5">' in page, "run &lt;1&gt;" in page
    (True, True)
    >>> "no images yet" in page
    True
    """
    page = _page(experiments, refresh_s=refresh_s,
                 updated=time.strftime("%Y-%m-%d %H:%M:%S") if updated is None else updated,
                 status=status)
    with atomic_write(out_html, "w") as fh:
        fh.write(page)


# --- the page ----------------------------------------------------------------

def _esc(value) -> str:
    """``value`` as HTML text; lone surrogates (undecodable file names) as ``\\udcxx``."""
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return html.escape(text, quote=True)


def _page(experiments, *, refresh_s, updated, status) -> str:
    refresh = (f'<meta http-equiv="refresh" content="{float(refresh_s):g}">'
               if refresh_s and refresh_s > 0 else "")
    sections = "\n".join(_section(exp, i) for i, exp in enumerate(experiments))
    sections = sections or '<p class="muted">no experiments yet</p>'
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"{refresh}<title>latticegenome live</title><style>{_CSS}</style></head><body>\n"
        f"<header><h1>latticegenome &mdash; live results</h1>"
        f"<p>updated <b class=\"updated\">{_esc(updated)}</b> &middot; "
        f"<span class=\"status\">{_esc(status)}</span></p>{_summary(experiments)}</header>\n"
        f"{sections}\n</body></html>\n")


def _summary(experiments) -> str:
    """The table at the top: one row per experiment, linked to its section."""
    if not experiments:
        return ""
    rows = "".join(
        f'<tr><td class="t"><a href="#exp-{i}">{_esc(e["name"])}</a></td>'
        f'<td>{int(e["images_analysed"])}</td><td>{int(e["images_rejected"])}</td>'
        f'<td>{int(e["cells"])}</td><td>{len(e["warnings"] or [])}</td></tr>'
        for i, e in enumerate(experiments))
    return ('<table class="summary"><tr><th class="t">experiment</th><th>analysed</th>'
            f"<th>rejected</th><th>cells</th><th>warnings</th></tr>{rows}</table>")


def _section(exp: dict, index: int) -> str:
    analysed, rejected = int(exp["images_analysed"]), int(exp["images_rejected"])
    head = (f'<section id="exp-{index}"><h2>{_esc(exp["name"])}</h2>'
            f'<p class="counts">images analysed: <b>{analysed}</b> &middot; '
            f'rejected: <b>{rejected}</b> &middot; cells: <b>{int(exp["cells"])}</b></p>')
    warnings = "".join(f"<li>{_esc(w)}</li>" for w in exp["warnings"] or [])
    if warnings:
        head += f'<ul class="warn">{warnings}</ul>'
    if analysed == 0 and rejected == 0 and exp["newest"] is None:
        return head + '<p class="muted">no images yet</p></section>'
    figures = _newest_html(exp["newest"]) + _histograms_html(exp["histograms"])
    return (f'{head}<div class="grid">{figures}<div>{_classes_html(exp["classes"])}</div></div>'
            f'{_quality_html(exp["quality"])}'
            f'{_rejected_html(exp["rejected"], rejected)}</section>')


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'


def _fmt(value) -> str:
    """A table cell: NaN or None as an en dash, checks as a mark, numbers short."""
    if value is None:
        return "&ndash;"
    if isinstance(value, (bool, np.bool_)):
        return '<span class="ok">&#10003;</span>' if value else '<span class="bad">&#10007;</span>'
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "&ndash;" if not math.isfinite(value) else f"{float(value):.4g}"
    return _esc(value)


def _classes_html(classes: dict) -> str:
    counts = list(classes.get("count") or [])
    if not counts:
        return '<p class="muted">no classes yet</p>'
    top = max(max(counts), 1)
    rows = "".join(
        f'<tr><td>{_fmt(c)}</td><td>{_fmt(n)}</td><td class="t"><span class="bar" '
        f'style="width:{6 * n / top:.2f}em"></span></td><td>{_fmt(a)}</td><td>{_fmt(dy)}</td></tr>'
        for c, n, a, dy in zip(classes["class"], counts, classes["a_pm"], classes["dy_pm"]))
    return ('<table class="classes"><tr><th>class</th><th>cells</th><th></th><th>a (pm)</th>'
            f"<th>dy (pm)</th></tr>{rows}</table>")


def _quality_html(quality: dict) -> str:
    """The newest rows of the per-image table, newest first."""
    keys = [(k, t) for k, t in _QUALITY if k in quality]
    keys += [(k, k.removeprefix("check_")) for k in quality if k.startswith("check_")]
    n = min((len(quality[k]) for k, _ in keys), default=0)
    if n == 0:
        return ""
    head = "".join(f'<th class="t" title="{_esc(k)}">{_esc(t)}</th>' if k == "image"
                   else f'<th title="{_esc(k)}">{_esc(t)}</th>' for k, t in keys)
    rows = "".join(
        "<tr>" + "".join(f'<td class="t">{_fmt(quality[k][i])}</td>' if k == "image"
                         else f"<td>{_fmt(quality[k][i])}</td>" for k, _ in keys) + "</tr>"
        for i in range(n - 1, max(n - QUALITY_ROWS, 0) - 1, -1))
    return (f'<details open><summary>per image, newest first ({min(n, QUALITY_ROWS)} rows)'
            f'</summary><table class="quality"><tr>{head}</tr>{rows}</table></details>')


def _rejected_html(rejected, n_rejected: int) -> str:
    """The newest rejections with their reasons, newest first."""
    rejected = list(rejected or [])
    if not rejected:
        return ""
    shown = rejected[-REJECTED_ROWS:][::-1]
    rows = "".join(f'<tr><td class="t">{_esc(name)}</td><td class="t">{_esc(reason)}</td></tr>'
                   for name, reason in shown)
    total = max(n_rejected, len(rejected))
    return (f'<details open><summary>rejected, newest first ({len(shown)} of {total})</summary>'
            f'<table class="rejected"><tr><th class="t">file</th><th class="t">reason</th></tr>'
            f"{rows}</table></details>")


# --- figures -----------------------------------------------------------------

def _png(fig) -> bytes:
    """The figure as PNG bytes (drawn by Agg, whatever pyplot's backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def _histograms_html(histograms: dict) -> str:
    present = [(k, t) for k, t in _HISTOGRAMS if k in histograms]
    if not any(np.sum(histograms[k][1]) > 0 for k, _ in present):
        return '<p class="muted">no cells measured yet</p>'
    return (f"<figure>{_img(_histograms_png(histograms, present), 'histograms')}"
            "<figcaption>cells of every analysed image so far</figcaption></figure>")


def _histograms_png(histograms: dict, present) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.1 * len(present), 1.9), dpi=80)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.2, top=0.84, wspace=0.3)
    for ax, (key, title) in zip(np.atleast_1d(fig.subplots(1, len(present))), present):
        edges, counts = (np.asarray(v) for v in histograms[key])
        total = int(np.sum(counts))
        if total and edges.size == counts.size + 1:
            ax.stairs(counts, edges, fill=True, color="#5577aa")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{title}  n={total}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    return _png(fig)


def _newest_html(newest) -> str:
    if newest is None:
        return '<p class="muted">no analysed image yet</p>'
    png, note = _newest_png(newest)
    n_col = len(newest["columns"]["x"])
    caption = (f"newest: <b class=\"newest\">{_esc(newest['image'])}</b> &middot; {n_col} columns "
               f"(A red, B cyan, O yellow){' &middot; ' if note else ''}{note}")
    return f"<figure>{_img(png, 'newest image')}<figcaption>{caption}</figcaption></figure>"


def _display_image(data: np.ndarray, max_px: int = DISPLAY_PX):
    """``data`` block-averaged to at most ``max_px`` a side (edges padded); the factor."""
    data = np.asarray(data, dtype=float)
    f = max(1, math.ceil(max(data.shape) / max_px))
    if f > 1:
        rows, cols = -(-data.shape[0] // f) * f, -(-data.shape[1] // f) * f
        if (rows, cols) != data.shape:
            data = np.pad(data, ((0, rows - data.shape[0]), (0, cols - data.shape[1])), mode="edge")
        data = data.reshape(rows // f, f, cols // f, f).mean(axis=(1, 3))
    return data, f


def _grey_limits(small: np.ndarray):
    finite = small[np.isfinite(small)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _arrow_field(cells: dict, block: float):
    """Arrow positions and displacements: every finite cell (``block`` 0), or the
    means of the cells in each ``block`` x ``block`` pixel square."""
    x, y, dx, dy = (np.asarray(cells[k], dtype=float).ravel() for k in ("x", "y", "dx_pm", "dy_pm"))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(dx) & np.isfinite(dy)
    x, y, dx, dy = x[ok], y[ok], dx[ok], dy[ok]
    if not block or x.size == 0:
        return x, y, dx, dy
    nx = int(np.max(x) // block) + 2
    key = (np.clip(y // block, 0, None) * nx + np.clip(x // block, 0, nx - 1)).astype(np.int64)
    n = np.bincount(key)
    used = n > 0
    return tuple(np.bincount(key, weights=v)[used] / n[used] for v in (x, y, dx, dy))


def _key_pm(magnitudes: np.ndarray) -> float:
    """A round (1, 2, 5 x 10^k pm) length near the 95th percentile of ``magnitudes``.

    Examples
    --------
    >>> _key_pm(np.array([3.0, 7.0, 12.0])), _key_pm(np.array([])), _key_pm(np.array([0.2]))
    (10.0, 10.0, 0.2)
    """
    if magnitudes.size == 0 or not np.any(magnitudes > 0):
        return 10.0
    p = float(np.percentile(magnitudes, 95))
    k = 10.0 ** math.floor(math.log10(p))
    return float(min((m * k for m in (1, 2, 5, 10)), key=lambda v: abs(math.log(v / p))))


def _newest_png(newest: dict):
    """The newest image with its columns and arrows, as PNG; a note on what is drawn."""
    from matplotlib.figure import Figure

    small, f = _display_image(newest["data"])
    shape = np.shape(newest["data"])
    width_px = min(560, max(320, small.shape[1]))
    zoom = width_px / shape[1]  # figure px per image px
    fig = Figure(figsize=(width_px / 100, width_px * shape[0] / shape[1] / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    lo, hi = _grey_limits(small)
    ax.imshow(small, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest",
              extent=(-0.5, small.shape[1] * f - 0.5, small.shape[0] * f - 0.5, -0.5))
    spacing = _spacing(newest, shape)
    notes = [_columns(ax, newest["columns"], spacing * zoom)]
    pixel_size_pm = float(newest["pixel_size_pm"])
    notes.append(_arrows(ax, newest["cells"], spacing, zoom, pixel_size_pm))
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)
    _scale_bar(ax, pixel_size_pm, shape)
    ax.set_axis_off()
    return _png(fig), " &middot; ".join(n for n in notes if n)


def _spacing(newest: dict, shape) -> float:
    """Image pixels between neighbouring cells (from the number of A columns or cells)."""
    n = int(np.sum(np.asarray(newest["columns"]["site"]).astype(str) == "A"))
    n = n or len(newest["cells"]["x"])
    return math.sqrt(shape[0] * shape[1] / max(n, 1))


def _columns(ax, columns: dict, on_screen: float) -> str:
    """Dots of the columns sized to their spacing ``on_screen`` (figure px); the
    sites too dense to tell apart are left out (said in the returned note)."""
    site = np.asarray(columns["site"]).astype(str)
    x, y = np.asarray(columns["x"], dtype=float), np.asarray(columns["y"], dtype=float)
    left_out = []
    for name, colour, rel, min_px in _SITES:
        sel = site == name
        if not np.any(sel):
            continue
        if on_screen < min_px:
            left_out.append(name)
            continue
        size = float(np.clip(0.3 * on_screen * rel, 1.0, 6.0)) * 0.72  # points at 100 dpi
        ax.plot(x[sel], y[sel], "o", ms=size, color=colour, mew=0, ls="none")
    if not left_out:
        return ""
    return (f"{'/'.join(left_out)} columns not drawn: {on_screen:.0f} px apart at this size")


def _arrows(ax, cells: dict, spacing: float, zoom: float, pixel_size_pm: float) -> str:
    """Draw the B displacement arrows (with a key); return the caption's note on them."""
    block = ARROW_PX / zoom if spacing * zoom < ARROW_PX else 0.0
    x, y, dx, dy = _arrow_field(cells, block)
    if x.size == 0:
        return "no cells with a displacement"
    key = _key_pm(np.hypot(dx, dy))
    gain = 0.8 * max(spacing, block) / key  # image px per pm: a key-long arrow spans 0.8 of a cell
    q = ax.quiver(x, y, dx, dy, angles="xy", scale_units="xy", scale=1 / gain, color="white",
                  edgecolor="black", linewidth=0.4, width=0.003, headwidth=3.5, headlength=4,
                  headaxislength=3.5)
    ax.add_patch(_backdrop(ax, (0.78, 0.0), 0.22, 0.1))
    ax.quiverkey(q, 0.88, 0.03, key, f"{key:g} pm", labelpos="N", color="white",
                 labelcolor="white", fontproperties={"size": 9, "weight": "bold"}).set_zorder(4)
    each = (f"each arrow the mean of the cells in a {block:.0f} px square" if block
            else "one arrow per cell")
    return (f"B displacement: {key:g} pm drawn as {key * gain:.0f} image px "
            f"(&times;{gain * pixel_size_pm:.0f}); {each}")


def _backdrop(ax, xy, width, height):
    """A translucent black box (axes fraction) behind a key or a scale bar."""
    from matplotlib.patches import Rectangle

    return Rectangle(xy, width, height, transform=ax.transAxes, color="black", alpha=0.6,
                     lw=0, zorder=2.5)


def _scale_bar(ax, pixel_size_pm: float, shape) -> None:
    """A white bar of a round length in nm at the bottom left."""
    rows, cols = shape
    width_nm = cols * pixel_size_pm / 1000
    length_nm = min((m * 10.0 ** e for e in range(-2, 4) for m in (1, 2, 5)),
                    key=lambda v: abs(v - width_nm / 5))
    length_px = length_nm * 1000 / pixel_size_pm
    ax.add_patch(_backdrop(ax, (0.0, 0.0), 0.1 + length_px / cols, 0.1))
    x0, y0 = cols * 0.05, rows * 0.965
    ax.plot([x0, x0 + length_px], [y0, y0], color="white", lw=4, solid_capstyle="butt", zorder=3)
    ax.text(x0 + length_px / 2, y0 - rows * 0.015, f"{length_nm:g} nm", color="white",
            ha="center", va="bottom", fontsize=9, fontweight="bold", zorder=3)
