"""Per-frame time, temperature and dose of an image series.

A configured frames CSV (:func:`latticegenome.dynamics.track.read_frames_csv`)
gives the fields it has; the others come from the frames' metadata where the
format carries them (acquisition time; beam current and dwell time, hence the
dose). Where each field came from, or why it is missing, goes into the
provenance: without per-frame times the rates and velocities of a series are
per frame, and the log says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from latticegenome.core.errors import LatticeGenomeError
from latticegenome.dynamics.track import read_frames_csv

logger = logging.getLogger(__name__)

#: Elementary charge, C.
ELEMENTARY_CHARGE_C = 1.602176634e-19

#: The per-frame metadata of a series, in the order they are reported.
FRAME_META_FIELDS = ("time_s", "temperature_K", "dose_e_per_A2")

#: A CSV time and a metadata time of a frame (both from the first frame) disagree when
#: they differ by more than this (s) plus :data:`TIME_AGREE_REL` of the time.
TIME_AGREE_S = 1.0
TIME_AGREE_REL = 0.01


def _acquired(meta: dict):
    """A frame's ``acquisition_time`` as a datetime, or why not (a phrase)."""
    import re
    from datetime import datetime

    text = meta.get("acquisition_time")
    if not isinstance(text, str) or not text.strip():
        return None, "has no acquisition time"
    if not re.search(r"\d{1,2}:\d{2}", text):
        return None, f"has an acquisition date only ({text.strip()})"
    try:
        return datetime.fromisoformat(text.strip()), ""
    except ValueError:
        return None, f"has an acquisition time that is not ISO 8601 ({text.strip()[:40]})"


def _one_file_frames(images) -> str:
    """Why the frames' times are not per frame when two frames come from one file, else ''."""
    paths = [getattr(im, "path", None) for im in images if not isinstance(im, str)]
    if len(set(paths)) == len(paths):
        return ""
    if len(set(paths)) == 1:
        return "one stack file: no per-frame times in its metadata"
    dup = next(p for p in paths if paths.count(p) > 1)
    ks = [k for k, im in enumerate(images) if getattr(im, "path", None) == dup][:2]
    return f"frames {ks[0]} and {ks[1]} are of one stack file: no per-frame times in its metadata"


def _frame_times(images) -> tuple[np.ndarray | None, str]:
    """Seconds since the first readable frame from each frame's ``acquisition_time``, or
    None and why. A frame that could not be read (a str) has NaN: it is set aside."""
    from itertools import pairwise

    why = _one_file_frames(images)
    if why:
        return None, why
    stamps = {}
    for k, im in enumerate(images):
        if isinstance(im, str):
            continue
        stamps[k], problem = _acquired(im.metadata or {})
        if stamps[k] is None:
            return None, f"frame {k} {problem}"
    if not stamps:
        return None, "no frame could be read"
    if len({s.tzinfo is None for s in stamps.values()}) > 1:
        return None, "some acquisition times have a time zone and some not"
    ks = sorted(stamps)
    whole = all(s.microsecond == 0 for s in stamps.values())
    res = " (the metadata's resolution is 1 s)" if whole else ""
    for a, b in pairwise(ks):
        if stamps[b] == stamps[a]:
            return None, (f"frames {a} and {b} share an acquisition time "
                          f"({stamps[a].isoformat()}){res}")
        if stamps[b] < stamps[a]:
            return None, (f"times not in frame order: frame {b} ({stamps[b].isoformat()}) was "
                          f"acquired before frame {a} ({stamps[a].isoformat()})")
    t = np.full(len(images), np.nan)
    for k in ks:
        t[k] = (stamps[k] - stamps[ks[0]]).total_seconds()
    unread = len(images) - len(ks)
    return t, (f"the acquisition times of {len(ks)} frames{res}"
               + (f"; {unread} unreadable frame(s) have none" if unread else ""))


def _positive(meta: dict, key: str) -> float | None:
    """A metadata value as a finite positive float, else None."""
    try:
        value = float(meta.get(key))
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def _frame_doses(images) -> tuple[np.ndarray | None, str]:
    """Accumulated dose (e/A^2, at the end of each frame) from every frame's beam current
    (nA), dwell time per pixel (us) and pixel size (pm), or None and why."""
    per = np.empty(len(images))
    for k, im in enumerate(images):
        if isinstance(im, str):
            return None, f"frame {k} could not be read: its dose, and every one after, is unknown"
        meta = im.metadata or {}
        current, dwell = _positive(meta, "beam_current_nA"), _positive(meta, "dwell_time_us")
        px = _positive({"px": im.pixel_size_pm}, "px")
        missing = [n for n, v in (("beam current", current), ("dwell time", dwell),
                                  ("pixel size", px)) if v is None]
        if missing:
            return None, f"frame {k} has no {' or '.join(missing)}"
        # electrons per pixel / pixel area in A^2 (1 A = 100 pm)
        per[k] = current * 1e-9 * dwell * 1e-6 / ELEMENTARY_CHARGE_C / (px / 100.0) ** 2
    stack = _one_file_frames(images)
    note = " (of the stack file: the same for every frame)" if stack.startswith("one") else ""
    return np.cumsum(per), f"beam current x dwell time / pixel area of each frame{note}"


def frame_meta_from_images(images) -> tuple[dict, dict]:
    """Per-frame time and accumulated dose of a series from its images' metadata.

    Parameters
    ----------
    images : sequence of Image or str
        The frames in frame order (:class:`latticegenome.columns.readers.Image`:
        ``metadata`` with ``acquisition_time`` (ISO 8601), ``beam_current_nA``
        (nA), ``dwell_time_us`` (per pixel, us); ``pixel_size_pm`` (pm)); a str
        is a frame that could not be read.

    Returns
    -------
    meta : dict of ndarray
        Only the fields found, one value per frame: ``time_s`` (s since the
        first readable frame; NaN for an unreadable one), only when every
        readable frame has an acquisition time, each later than the one before,
        and not all from one stack file (one metadata for every frame);
        ``dose_e_per_A2`` (e/A^2, accumulated at the end of each frame, as
        :func:`latticegenome.dynamics.simulate.series_schedule`), only when
        every frame has a beam current, a dwell time and a pixel size. No
        ``temperature_K``: no format's metadata as read carries one.
    reasons : dict of str
        For each of :data:`FRAME_META_FIELDS`, where it came from or why not.

    Examples
    --------
    >>> from latticegenome.columns.readers import Image
    >>> ims = [Image(np.ones((2, 2)), 50.0, "file", f"f{k}.tif", None,
    ...              {"acquisition_time": f"2024-05-01T10:00:0{2 * k}",
    ...               "beam_current_nA": 0.01, "dwell_time_us": 1.0}) for k in range(3)]
    >>> meta, why = frame_meta_from_images(ims)
    >>> meta["time_s"].tolist(), np.round(meta["dose_e_per_A2"]).tolist()
    ([0.0, 2.0, 4.0], [250.0, 499.0, 749.0])
    >>> why["time_s"]
    "the acquisition times of 3 frames (the metadata's resolution is 1 s)"
    """
    images = list(images)
    meta, reasons = {}, {}
    for key, fn in (("time_s", _frame_times), ("dose_e_per_A2", _frame_doses)):
        values, reasons[key] = fn(images)
        if values is not None:
            meta[key] = values
    reasons["temperature_K"] = "the image metadata as read carries no temperature"
    return meta, {k: reasons[k] for k in FRAME_META_FIELDS}


def _times_disagree(csv_t, md_t) -> str:
    """The first frame whose CSV and metadata times (each from the first frame both
    have) differ by more than 1 s + 1 %, as a phrase, else ''."""
    csv_t, md_t = np.asarray(csv_t, float), np.asarray(md_t, float)
    both = np.flatnonzero(np.isfinite(csv_t) & np.isfinite(md_t))
    if both.size < 2:
        return ""
    a, b = csv_t[both] - csv_t[both[0]], md_t[both] - md_t[both[0]]
    off = np.abs(a - b) > TIME_AGREE_S + TIME_AGREE_REL * np.abs(b)
    if not off.any():
        return ""
    i = int(np.argmax(off))
    return (f"frame {both[i]} is at {a[i]:.6g} s in the CSV and {b[i]:.6g} s in the metadata "
            f"(from frame {both[0]})")


def combine_frame_meta(csv: dict | None, found: dict, reasons: dict, *,
                       source: str = "series") -> tuple[dict, dict]:
    """A configured CSV's per-frame fields, filled in from the metadata where it has none.

    Parameters
    ----------
    csv : dict or None
        :func:`read_frames_csv` (the fields it has).
    found, reasons : dict
        :func:`frame_meta_from_images`.
    source : str
        The series, for the log.

    Returns
    -------
    meta : dict of ndarray
        Per-frame ``time_s`` (s), ``temperature_K`` (K), ``dose_e_per_A2``
        (e/A^2): those known.
    record : dict
        ``frame_meta_source`` ({field: "csv" | "metadata" | "none"}) and
        ``frame_meta_reason`` ({field: one line}), for the provenance.

    Notes
    -----
    Where the CSV and the metadata both give times that disagree by more than
    1 s + 1 % (:data:`TIME_AGREE_S`, :data:`TIME_AGREE_REL`) a warning names
    the series; the CSV's are used. Without a time the rates and velocities
    are per frame (a warning says so).
    """
    csv = {k: np.asarray(v, float) for k, v in (csv or {}).items()}
    meta, src, why = {}, {}, {}
    for key in FRAME_META_FIELDS:
        if key in csv:
            meta[key], src[key], why[key] = csv[key], "csv", "the configured frames CSV"
            if key not in found:
                why[key] += f" (none in the metadata: {reasons.get(key, 'not found')})"
            elif key == "time_s":
                off = _times_disagree(csv[key], found[key])
                why[key] += (f" (the metadata's disagree: {off})" if off
                             else " (the metadata's agree)")
                if off:
                    logger.warning("%s: the frames CSV's times and the metadata's disagree by "
                                   "more than 1 s + 1 %%: %s; the CSV's are used", source, off)
        elif key in found:
            meta[key], src[key], why[key] = np.asarray(found[key], float), "metadata", reasons[key]
        else:
            src[key], why[key] = "none", reasons.get(key, "not in the metadata")
            if csv:
                why[key] = f"not in the frames CSV; {why[key]}"
    if src["time_s"] == "none":
        logger.warning("%s: no per-frame times (%s): rates and velocities are per frame",
                       source, why["time_s"])
    return meta, {"frame_meta_source": src, "frame_meta_reason": why}


def series_frame_meta(images, frames_csv=None, *, source: str = "series") -> tuple[dict, dict]:
    """Per-frame time, temperature and dose of a series: the configured CSV's, else the
    metadata's (:func:`frame_meta_from_images`, :func:`combine_frame_meta`).

    Parameters
    ----------
    images : sequence of Image or str
        The frames in frame order (a str: a frame that could not be read).
    frames_csv : path, optional
        The series' frames CSV (:func:`read_frames_csv`).
    source : str
        The series, for the log.

    Returns
    -------
    meta, record : dict
        As :func:`combine_frame_meta`.

    Raises
    ------
    LatticeGenomeError
        The CSV (:func:`read_frames_csv`).
    """
    images = list(images)
    csv = read_frames_csv(frames_csv, len(images)) if frames_csv else None
    found, reasons = frame_meta_from_images(images)
    return combine_frame_meta(csv, found, reasons, source=source)


def read_series_frames(files, settings, one_per_file: bool) -> list:
    """The :class:`~latticegenome.columns.readers.Image` of every frame of a series.

    Parameters
    ----------
    files : list of path
        One stack file, or the frame files in frame order.
    settings : AnalysisSettings
        ``pixel_size_pm`` and ``hdf5_dataset``.
    one_per_file : bool
        True: one frame per file (a file with several is summed); a file that
        cannot be read is its reason (a str: that frame set aside), the others
        go on. False: the frames of the stack ``files[0]`` (errors raised).
    """
    from latticegenome.columns.readers import read_image

    if not one_per_file:
        return read_image(files[0], pixel_size_pm=settings.pixel_size_pm,
                          hdf5_dataset=settings.hdf5_dataset, stack="frames", check_frames=False)
    out = []
    for f in files:
        try:
            out.append(read_image(f, pixel_size_pm=settings.pixel_size_pm,
                                  hdf5_dataset=settings.hdf5_dataset, stack="sum")[0])
        except LatticeGenomeError as exc:
            out.append(f"{Path(f).name}: {exc.reason if hasattr(exc, 'reason') else exc}")
    return out


__all__ = ["ELEMENTARY_CHARGE_C", "FRAME_META_FIELDS", "combine_frame_meta", "frame_meta_from_images",
           "read_series_frames", "series_frame_meta"]
