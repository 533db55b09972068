"""Read STEM images with their pixel size and instrument metadata.

Formats: TIFF (ImageJ and OME pixel sizes, resolution tags in cm; FEI/Thermo,
Zeiss, TVIPS, Olympus SIS, JEOL SightX and DigitalMicrograph TIFFs through
RosettaSciIO for their pixel size and metadata), DM3/DM4 and EMD (Velox and
Berkeley) through RosettaSciIO, HDF5 (dataset path configurable; HyperSpy-
written files through RosettaSciIO), HyperSpy ``.hspy``/``.zspy``, MRC, FEI
TIA and NPY. The pixel size comes from the file when it carries one, else
from the caller (the configuration); a file with neither is an error. Every
error names the file and the problem
(:class:`~latticegenome.core.errors.ImageReadError`,
:class:`~latticegenome.core.errors.PixelSizeError`). A parser's own message is
never passed on: it may quote the file's first bytes (a text file named
``x.tif`` holding a password file), so a failure is reported as a phrase per
format with the exception's type (:func:`read_failure`).

Files with several signals (Velox HAADF + ABF + DPC, DM files with several
images, spectrum images with their survey) give the image named by the
caller's ``signal``, else the HAADF (then ADF, then DF) image by its title or
detector name (:func:`choose_signal`); spectra and spectrum images are never
taken. Instrument metadata is recorded under common keys with their units
in the name: ``voltage_kV``, ``convergence_angle_mrad``, ``detector``,
``detector_inner_angle_mrad``, ``detector_outer_angle_mrad``,
``dwell_time_us``, ``magnification``, ``acquisition_time`` (ISO 8601),
``stage_tilt_alpha_deg``, ``stage_tilt_beta_deg``, ``camera_length_mm``,
``microscope``, ``scan_rotation_deg`` (the scan rotation set at the
microscope, in degrees: DigitalMicrograph ``DigiScan.Rotation``, Velox
``Scan.ScanRotation`` converted from radians; the sign convention is the
vendor's) and ``scan_rotation_offset_deg`` (DigitalMicrograph ``DigiScan.
Rotation Offset``, recorded as it is, never added to the rotation). A value
that is not a finite number is left out.

3-D stacks (frames, rows, cols) give one :class:`Image` per frame
(``stack="frames"``), their sum (``"sum"``), or their sum after rigid
registration of every frame to the first (``"align"``, phase correlation).
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latticegenome.core.errors import ImageReadError, PixelSizeError

#: Length units to picometres.
UNIT_PM = {
    "pm": 1.0, "a": 100.0, "å": 100.0, "angstrom": 100.0, "ang": 100.0, "nm": 1e3,
    "um": 1e6, "µm": 1e6, "μm": 1e6, "micron": 1e6, "micrometer": 1e6, "mm": 1e9,
    "cm": 1e10, "m": 1e12,
}

SUFFIXES = {
    ".tif": "tiff", ".tiff": "tiff", ".dm3": "dm", ".dm4": "dm", ".emd": "emd",
    ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".npy": "npy",
    ".hspy": "hspy", ".zspy": "zspy", ".mrc": "mrc", ".ser": "tia", ".emi": "tia",
}

#: RosettaSciIO plugin of each format read through its generic reader.
RSCIIO_PLUGINS = {"hspy": "hspy", "zspy": "zspy", "mrc": "mrc", "tia": "tia"}

#: Smallest image side accepted, in pixels.
MIN_SIDE = 16

#: What a file that a format's parser rejects is called (no parser text).
NOT_READABLE = {
    "tiff": "not a readable TIFF file",
    "dm": "not a readable DigitalMicrograph (DM3/DM4) file",
    "emd": "not a readable EMD file",
    "hdf5": "not a readable HDF5 file",
    "npy": "not a readable NPY array",
    "hspy": "not a readable HyperSpy file",
    "zspy": "not a readable HyperSpy Zarr file",
    "mrc": "not a readable MRC file",
    "tia": "not a readable FEI TIA (SER/EMI) file",
}


def read_failure(kind: str, exc: BaseException) -> str:
    """A reason for a parser failure that quotes nothing from the file.

    Parameters
    ----------
    kind : str
        A key of :data:`NOT_READABLE`.
    exc : BaseException
        What the parser raised; only its type (and, for an operating-system
        error, the system's wording of its errno) is kept.

    Examples
    --------
    >>> read_failure("tiff", ValueError("not a TIFF file: header=b'root'"))
    'not a readable TIFF file (ValueError)'
    """
    what = type(exc).__name__
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        what = f"{what}: {os.strerror(exc.errno)}"
    return f"{NOT_READABLE.get(kind, 'not a readable image file')} ({what})"


def _listing(names: list[str], limit: int = 8, width: int = 200) -> str:
    """Names from a file, escaped to one line and capped in length."""
    from latticegenome.ingest.manifest import display_name

    text = ", ".join(display_name(n) for n in names[:limit]) or "none"
    if len(names) > limit:
        text += f", ... ({len(names)} in all)"
    return text if len(text) <= width else text[:width] + "..."


@dataclass
class Image:
    """One 2-D image, ready for analysis.

    Attributes
    ----------
    data : ndarray of float64, shape (rows, cols)
    pixel_size_pm : float
        Size of one pixel in picometres.
    pixel_size_source : str
        ``"file"`` or ``"config"``.
    path : str
        The file read.
    frame : int or None
        Frame index in a stack (None for a single image or a summed stack).
    metadata : dict
        Instrument metadata found in the file (microscope, voltage_kV,
        convergence_angle_mrad, detector, detector_inner_angle_mrad,
        detector_outer_angle_mrad, dwell_time_us, magnification,
        acquisition_time, stage_tilt_alpha_deg, scan_rotation_deg (degrees,
        the vendor's sign convention), ...), JSON-serialisable. Files
        read through RosettaSciIO add ``signal`` (the title of the image
        read), ``signals`` (every title in the file) and ``signal_choice``
        (one line: what was chosen and why, for the log).
    """

    data: np.ndarray
    pixel_size_pm: float
    pixel_size_source: str
    path: str
    frame: int | None = None
    metadata: dict = field(default_factory=dict)


def unit_to_pm(unit: str | None) -> float | None:
    """Factor from ``unit`` to picometres, or None if not a length unit."""
    if unit is None:
        return None
    u = str(unit).strip().lower().replace("\u00c5", "å")
    return UNIT_PM.get(u)


def _jsonable(d, depth=0):
    """A JSON-safe copy of nested metadata (bytes, arrays and the like dropped)."""
    if depth > 6:
        return None
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            jv = _jsonable(v, depth + 1)
            if jv is not None:
                out[str(k)] = jv
        return out
    if isinstance(d, (list, tuple)) and len(d) <= 64:
        return [x for x in (_jsonable(v, depth + 1) for v in d) if x is not None]
    if isinstance(d, (str, bool, int, float)):
        return d
    if isinstance(d, np.generic):
        return d.item()
    return None


# --- metadata trees: RosettaSciIO's "mapping", key look-ups, units -----------

_MISSING = object()


def _get_path(tree, dotted: str):
    """The value at a dotted path of nested dicts, or ``_MISSING``.

    Keys may themselves hold dots (Velox ``"Aperture[C1].Name"``): at each
    level the longest key that matches is taken.
    """
    node, parts, i = tree, dotted.split("."), 0
    while i < len(parts):
        if not isinstance(node, dict):
            return _MISSING
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if key in node:
                node, i = node[key], j
                break
        else:
            return _MISSING
    return node


def _set_path(tree: dict, dotted: str, value) -> None:
    """Set ``value`` at a dotted path, making the dicts on the way."""
    *heads, last = dotted.split(".")
    for key in heads:
        nxt = tree.get(key)
        if not isinstance(nxt, dict):
            nxt = tree[key] = {}
        tree = nxt
    tree[last] = value


def _mapped_metadata(sig: dict) -> dict:
    """A signal's HyperSpy-style metadata with its RosettaSciIO ``mapping`` applied.

    RosettaSciIO readers leave part of the metadata (voltage, stage tilt,
    magnification, dwell time ...) as a mapping from ``original_metadata``
    that HyperSpy applies on loading; it is applied here the same way. A
    mapping function that fails on a value skips that value.
    """
    import copy

    md = copy.deepcopy(sig.get("metadata") or {})
    om = sig.get("original_metadata") or {}
    for source, target in (sig.get("mapping") or {}).items():
        if not isinstance(target, tuple) or len(target) != 2:
            continue
        value = _get_path(om, source)
        if value is _MISSING:
            continue
        dest, func = target
        if func is not None:
            try:
                value = func(value)
            except Exception:  # noqa: BLE001, S112 - a vendor value the mapping cannot parse
                continue
        if value is not None:
            _set_path(md, dest, value)
    return md


def _number(value) -> float | None:
    """``value`` as a finite float (numbers and numeric strings), else None."""
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def _find_text(tree, names: set[str], depth: int = 4, skip: tuple = ()) -> str | None:
    """The first non-empty string under a key in ``names`` (case-insensitive)."""
    if depth < 0 or not isinstance(tree, dict):
        return None
    for key, val in tree.items():
        if str(key).casefold() in names and isinstance(val, str) and val.strip():
            return val.strip()
    for key, val in tree.items():
        if isinstance(val, dict) and key not in skip:
            found = _find_text(val, names, depth - 1, skip)
            if found:
                return found
    return None


def _iso_time(date: str | None, time: str | None = None, zone: str | None = None) -> str | None:
    """An ISO 8601 date-time from vendor date and time strings, else None."""
    if not date:
        return None
    from dateutil import parser

    try:
        stamp = parser.parse(f"{date} {time or ''}".strip())
    except (ValueError, OverflowError, TypeError):
        return None
    text = stamp.isoformat() if time else stamp.date().isoformat()
    return text + "+00:00" if time and zone in ("UTC", "GMT") and stamp.tzinfo is None else text


# --- instrument metadata, per format -----------------------------------------

#: HyperSpy metadata (``Acquisition_instrument.TEM`` or ``.SEM``) -> instrument record key.
_TEM_KEYS = {"beam_energy": "voltage_kV", "microscope": "microscope",
             "convergence_angle": "convergence_angle_mrad", "magnification": "magnification",
             "probe_area": "probe_area_nm2", "beam_current": "beam_current_nA",
             "camera_length": "camera_length_mm"}


def _detector_angles(detectors: dict) -> dict:
    """Collection angles (mrad) of HyperSpy ``Detector`` entries, named by detector."""
    out: dict = {}
    for name, val in detectors.items():
        if not isinstance(val, dict):
            continue
        if "dwell_time" in val and _number(val["dwell_time"]) is not None:
            out["dwell_time_us"] = _number(val["dwell_time"]) * 1e6  # HyperSpy: seconds
        for key in ("collection_angle", "inner_collection_angle", "outer_collection_angle"):
            if key in val:
                out[f"{name.lower()}_{key}_mrad"] = val[key]
    angled = [n for n, v in detectors.items() if isinstance(v, dict)
              and {"inner_collection_angle", "outer_collection_angle"} & set(v)]
    if len(angled) == 1:
        det = detectors[angled[0]]
        out["detector"] = angled[0]
        for side in ("inner", "outer"):
            if f"{side}_collection_angle" in det:
                out[f"detector_{side}_angle_mrad"] = det[f"{side}_collection_angle"]
    return out


def _magnification(text: str) -> float | None:
    """A magnification written as text (``"5.00 K X"``, ``"1000x"``) as a number."""
    m = re.fullmatch(r"\s*([0-9.]+(?:[eE][-+]?\d+)?)\s*([kKM]?)\s*[xX]?\s*", text)
    if not m or _number(m.group(1)) is None:
        return None
    return _number(m.group(1)) * {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6}[m.group(2)]


def _instrument_from_rsciio(md: dict) -> dict:
    """Instrument metadata from a RosettaSciIO signal's HyperSpy-style metadata.

    HyperSpy's units: beam energy in kV, angles in mrad, dwell time in s
    (given here in µs), stage tilt in degrees, camera length in mm.
    """
    out: dict = {}
    inst = md.get("Acquisition_instrument") or {}
    tem = inst.get("TEM") or inst.get("SEM") or {}
    for key, name in _TEM_KEYS.items():
        if key in tem and tem[key] not in (0, 0.0, "", None):  # 0: the vendor's "unknown"
            out[name] = tem[key]
    stage = tem.get("Stage") or {}
    for key, name in (("tilt_alpha", "tilt_alpha"), ("tilt_beta", "tilt_beta"), ("tilt", "tilt_alpha")):
        if _number(stage.get(key)) is not None:
            out.setdefault(f"stage_{name}_deg", _number(stage[key]))
    detectors = tem.get("Detector") or {}
    out.update(_detector_angles(detectors))
    if isinstance(detectors.get("detector_type"), str):  # Zeiss TIFF
        out["detector"] = detectors["detector_type"]
    if isinstance(out.get("magnification"), str):  # Zeiss: "5.00 K X"
        out["magnification"] = _magnification(out["magnification"])
    if _number(tem.get("dwell_time")) is not None:
        out["dwell_time_us"] = _number(tem["dwell_time"]) * 1e6
    general = md.get("General") or {}
    for k in ("title", "date", "time"):
        if k in general:
            out[k] = general[k]
    when = _iso_time(general.get("date"), general.get("time"), general.get("time_zone"))
    if when:
        out["acquisition_time"] = when
    return out


def _velox_instrument(om: dict) -> dict:
    """Instrument metadata from a Velox EMD image's own metadata (SI units in the file)."""
    from datetime import UTC, datetime

    optics, scan = om.get("Optics") or {}, om.get("Scan") or {}
    det = om.get("DetectorMetadata") or {}
    out: dict = {"microscope": (om.get("Instrument") or {}).get("InstrumentClass"),
                 "manufacturer": (om.get("Instrument") or {}).get("Manufacturer"),
                 "detector": det.get("DetectorName") or (om.get("BinaryResult") or {}).get("Detector")}
    for name, value, factor in (
        ("voltage_kV", optics.get("AccelerationVoltage"), 1e-3),       # V
        ("convergence_angle_mrad", optics.get("BeamConvergence"), 1e3),  # rad
        ("camera_length_mm", optics.get("CameraLength"), 1e3),          # m
        ("dwell_time_us", scan.get("DwellTime"), 1e6),                  # s
        ("beam_current_nA", optics.get("LastMeasuredScreenCurrent"), 1e9),  # A
        ("frame_time_s", scan.get("FrameTime"), 1.0),
        ("magnification", _get_path(om, "CustomProperties.StemMagnification.value"), 1.0),
    ):
        if _number(value):
            out[name] = _number(value) * factor
    angles = det.get("CollectionAngleRange") or {}
    inner, outer = _number(angles.get("begin")), _number(angles.get("end"))
    if outer:  # rad; Velox writes 0, 0 for detectors without a calibration
        out["detector_inner_angle_mrad"], out["detector_outer_angle_mrad"] = inner * 1e3, outer * 1e3
    for axis in ("Alpha", "Beta"):
        tilt = _number((om.get("Stage") or {}).get(f"{axis}Tilt"))  # rad
        if tilt is not None:
            out[f"stage_tilt_{axis.lower()}_deg"] = round(float(np.degrees(tilt)), 4)
    rotation = _number(scan.get("ScanRotation"))  # rad, as a string
    if rotation is not None:
        out["scan_rotation_deg"] = round(float(np.degrees(rotation)), 4)
    unix = _number(_get_path(om, "Acquisition.AcquisitionStartDatetime.DateTime"))
    if unix:  # seconds since 1970 UTC; RosettaSciIO gives it in the reader's time zone
        stamp = datetime.fromtimestamp(unix, tz=UTC)
        out.update(acquisition_time=stamp.isoformat(), date=stamp.date().isoformat(),
                   time=stamp.time().isoformat())
    return out


def _dm_instrument(om: dict) -> dict:
    """Instrument metadata from a DigitalMicrograph image's ``ImageTags``."""
    tags = _get_path(om, "ImageList.TagGroup0.ImageTags")
    if not isinstance(tags, dict):
        return {}
    info = tags.get("Microscope Info") or {}
    name = next((str(info[k]) for k in ("Name", "Microscope") if isinstance(info.get(k), str)
                 and info[k].strip() and info[k] != "Unknown"), None)
    out: dict = {"microscope": name}
    for key, value, factor in (
        ("voltage_kV", info.get("Voltage"), 1e-3),                              # V
        ("magnification", info.get("Indicated Magnification"), 1.0),
        ("dwell_time_us", _get_path(tags, "DigiScan.Sample Time"), 1.0),       # µs
        ("beam_current_nA", info.get("Probe Current (nA)"), 1.0),              # nA
        ("stage_tilt_alpha_deg", _get_path(info, "Stage Position.Stage Alpha"), 1.0),
        ("stage_tilt_beta_deg", _get_path(info, "Stage Position.Stage Beta"), 1.0),
    ):
        if _number(value) is not None and (_number(value) or key.startswith("stage")):
            out[key] = _number(value) * factor
    out.update(_dm_scan_rotation(tags))
    bar = tags.get("DataBar") or {}
    out["acquisition_time"] = _iso_time(bar.get("Acquisition Date"), bar.get("Acquisition Time"))
    out["detector"] = _find_text(tags, {"detector", "detector name", "detectorname", "signal name"},
                                 skip=("Meta Data",))
    return out


def _dm_scan_rotation(tags: dict) -> dict:
    """The DigiScan scan rotation of a DigitalMicrograph image, in degrees.

    Parameters
    ----------
    tags : dict
        The image's ``ImageList.TagGroup<n>.ImageTags``.

    Returns
    -------
    dict
        ``scan_rotation_deg`` (``DigiScan.Rotation``) and
        ``scan_rotation_offset_deg`` (``DigiScan.Rotation Offset``), each only
        where the tag is a finite number (0 included: a rotation of 0 degrees
        is a value, not "unknown"). The offset is recorded, not added.

    Examples
    --------
    >>> _dm_scan_rotation({"DigiScan": {"Rotation": 90.0, "Rotation Offset": 1.5}})
    {'scan_rotation_deg': 90.0, 'scan_rotation_offset_deg': 1.5}
    >>> _dm_scan_rotation({"DigiScan": {"Rotation": float("nan")}})
    {}
    """
    out: dict = {}
    for key, tag in (("scan_rotation_deg", "Rotation"), ("scan_rotation_offset_deg", "Rotation Offset")):
        value = _number(_get_path(tags, f"DigiScan.{tag}"))  # degrees
        if value is not None:
            out[key] = value
    return out


def _fei_tiff_instrument(om: dict) -> dict:
    """Instrument metadata from an FEI/Thermo TIFF's INI-style header (SI units)."""
    fei = om.get("fei_metadata") or {}
    beam, scan, stage = fei.get("Beam") or {}, fei.get("Scan") or fei.get("EScan") or {}, fei.get("Stage") or {}
    dets = fei.get("Detectors") or {}
    out: dict = {"microscope": (fei.get("System") or {}).get("SystemType"),
                 "detector": " ".join(str(dets[k]) for k in ("Name", "Mode") if dets.get(k)) or None}
    hv = _number(beam.get("HV", (fei.get("EBeam") or {}).get("HV")))
    if hv:
        out["voltage_kV"] = hv * 1e-3
    if _number(scan.get("Dwelltime")):
        out["dwell_time_us"] = _number(scan["Dwelltime"]) * 1e6
    for key, name in (("StageT", "alpha"), ("StageTb", "beta")):
        if _number(stage.get(key)) is not None:  # rad
            out[f"stage_tilt_{name}_deg"] = round(float(np.degrees(_number(stage[key]))), 4)
    rotation = next((_number(sec.get("ScanRotation")) for sec in (beam, fei.get("EBeam") or {}, scan)
                     if _number(sec.get("ScanRotation")) is not None), None)
    if rotation is not None:  # rad, in [Beam] (or [EBeam]) of the header
        out["scan_rotation_deg"] = round(float(np.degrees(rotation)), 4)
    user = fei.get("User") or {}
    out["acquisition_time"] = _iso_time(user.get("Date"), user.get("Time"))
    return out


def _vendor_instrument(om: dict) -> dict:
    """Instrument metadata read straight from the vendor's own tags, where known."""
    if "ImageList" in om:
        found = _dm_instrument(om)
    elif "BinaryResult" in om or "Optics" in om:
        found = _velox_instrument(om)
    elif "fei_metadata" in om:
        found = _fei_tiff_instrument(om)
    else:
        return {}
    return {k: v for k, v in found.items() if v is not None}


def _axes_pixel_size(axes: list[dict]):
    """Pixel size (pm) from RosettaSciIO axes: the last two are y, x."""
    if len(axes) < 2:
        return None
    ax = axes[-1]
    factor = unit_to_pm(ax.get("units"))
    scale = ax.get("scale")
    if factor and scale and scale > 0:
        return float(scale) * factor
    return None


def _axes_note(axes: list[dict]) -> dict:
    """A record of axes that have a scale but no length unit (never taken as a pixel size)."""
    if len(axes) < 2 or _axes_pixel_size(axes) is not None:
        return {}
    ax = axes[-1]
    if ax.get("scale") not in (None, 1, 1.0):
        return {"axes_scale_without_unit": float(ax["scale"]), "axes_units": str(ax.get("units"))}
    return {}


# --- several signals in one file: which one is the image ----------------------

#: Detector classes, best first: the image analysed unless ``signal`` names another.
DETECTOR_CLASSES = (
    ("HAADF", re.compile(r"(?<![a-z])haadf(?![a-z])", re.IGNORECASE)),
    ("ADF", re.compile(r"(?<![a-z])(?:ma|la)?adf(?![a-z])", re.IGNORECASE)),
    ("DF", re.compile(r"(?<![a-z])(?:df\d*|dark[\s_-]?field)(?![a-z])", re.IGNORECASE)),
)

#: Kinds of signal that are analysable images.
IMAGE_KINDS = ("image", "image stack")

_ENERGY_UNITS = {"ev", "kev", "mev"}


@dataclass
class _Signal:
    """What a file's signal is: its title, detector, kind and size."""

    title: str
    detector: str | None
    kind: str
    size: int
    raw: dict

    def label(self) -> str:
        return self.title if self.kind in IMAGE_KINDS else f"{self.title} ({self.kind})"


def _signal_kind(sig: dict) -> str:
    """``"image"``, ``"image stack"``, ``"spectrum"``, ``"spectrum image"``, ... of a signal."""
    data = sig["data"]
    ndim, dtype = len(np.shape(data)), np.dtype(getattr(data, "dtype", float))
    axes = sig.get("axes") or []
    units = {str(a.get("units") or "").strip().lower().replace(" ", "") for a in axes}
    om_format = _get_path(sig.get("original_metadata") or {}, "ImageList.TagGroup0.ImageTags.Meta Data.Format")
    signal_type = str(_get_path(sig.get("metadata") or {}, "Signal.signal_type") or "")
    n_signal = sum(1 for a in axes if not a.get("navigate", False)) if axes else min(ndim, 2)
    if ndim == 1 or (units & _ENERGY_UNITS) or om_format in ("Spectrum image", "Spectrum") \
            or signal_type.upper().startswith(("EELS", "EDS", "CL")) or n_signal == 1:
        return "spectrum" if ndim == 1 else "spectrum image"
    if dtype.kind == "c":
        return "complex image"
    if dtype.names:
        return "colour image"
    if units & {"1/nm", "1/å", "1/a", "1/m", "mrad", "rad"} or "diffraction" in signal_type.lower():
        return "diffraction pattern"
    return {2: "image", 3: "image stack"}.get(ndim, f"{ndim}-D dataset")


def _signal_detector(sig: dict) -> str | None:
    """The detector a signal was recorded with, from its vendor metadata."""
    om = sig.get("original_metadata") or {}
    for path in ("DetectorMetadata.DetectorName", "BinaryResult.Detector"):  # Velox
        name = _get_path(om, path)
        if isinstance(name, str) and name.strip():
            return name.strip()
    if "ImageList" in om:  # DigitalMicrograph
        return _vendor_instrument(om).get("detector")
    det = _get_path(sig.get("metadata") or {}, "Acquisition_instrument.TEM.Detector")
    if isinstance(det, dict) and len(det) == 1:  # HyperSpy: one named detector
        return str(next(iter(det)))
    return None


def _describe(signals: list[dict]) -> list[_Signal]:
    out = []
    for k, sig in enumerate(signals):
        title = _get_path(sig.get("metadata") or {}, "General.title")
        title = title.strip() if isinstance(title, str) and title.strip() else f"signal {k + 1}"
        out.append(_Signal(title, _signal_detector(sig), _signal_kind(sig),
                           int(np.prod(np.shape(sig["data"]))), sig))
    return out


#: Titles of images computed from segmented detectors (Velox DPC, iDPC, FFT, A-C ...):
#: never ranked by the detector they were computed from.
_DERIVED = re.compile(r"dpc|fft|^[ab]-[cd]$|^dcfi$", re.IGNORECASE)


def _detector_class(sig: _Signal) -> tuple[int, str] | None:
    """Rank (0 best) of a signal's detector class, and what told it, or None."""
    if _DERIVED.search(sig.title):
        return None
    for rank, (_, pattern) in enumerate(DETECTOR_CLASSES):
        for text, how in ((sig.title, "title"), (sig.detector or "", "detector name")):
            if pattern.search(text):
                return rank, how
    return None


def _choose_named(found: list[_Signal], wanted: str, path: Path) -> tuple[_Signal, str]:
    """The signal titled (or recorded with the detector) ``wanted``, an image."""
    key = wanted.strip().casefold()
    for how, attr in (("title", "title"), ("detector name", "detector")):
        hits = [s for s in found if (getattr(s, attr) or "").casefold() == key]
        if hits:
            break
    else:
        raise ImageReadError(
            f"no signal titled '{_listing([wanted])}' (signal in the configuration); the file "
            f"holds {len(found)}: {_listing([s.label() for s in found])}", path)
    images = [s for s in hits if s.kind in IMAGE_KINDS]
    if not images:
        raise ImageReadError(f"signal '{_listing([wanted])}' is a {hits[0].kind}, not a 2-D image",
                             path)
    return max(images, key=lambda s: s.size), (f"chosen by its {how} as configured "
                                               f"(signal: {_listing([wanted])})")


def _choose_auto(found: list[_Signal], path: Path) -> tuple[_Signal, str]:
    """The HAADF (else ADF, else DF) image by its title or detector, or the only image."""
    images = [s for s in found if s.kind in IMAGE_KINDS]
    if not images:
        raise ImageReadError(
            f"the file holds no 2-D image (found {len(found)}: {_listing([s.label() for s in found])})",
            path)
    if len(images) == 1:
        return images[0], "chosen as the only image"
    ranked = [(c, s) for s in images if (c := _detector_class(s)) is not None]
    if not ranked:
        raise ImageReadError(
            f"{len(images)} images and none is HAADF, ADF or DF by its title or detector name: "
            f"name the one to analyse (signal in the configuration) among "
            f"{_listing([s.title for s in images])}", path)
    best = min(c[0] for c, _ in ranked)
    top = [(c, s) for c, s in ranked if c[0] == best]
    (_, how), chosen = max(top, key=lambda cs: cs[1].size)
    return chosen, f"chosen by its {how}"


def choose_signal(signals: list[dict], path: str | Path, wanted: str | None = None) -> tuple[dict, dict]:
    """Choose the image to analyse among a file's signals (RosettaSciIO dicts).

    Parameters
    ----------
    signals : list of dict
        As RosettaSciIO's ``file_reader`` returns them.
    path : str or Path
        The file, for messages.
    wanted : str, optional
        Title (or detector name) of the signal to analyse; default the HAADF
        image, else ADF, else DF (by title, then detector name), the largest
        of a class; a file with a single image gives that image.

    Returns
    -------
    signal : dict
        The chosen signal.
    record : dict
        ``signal`` (its title), ``signals`` (every title) and ``signal_choice``
        (one line saying what was chosen and why).

    Raises
    ------
    ImageReadError
        No 2-D image; ``wanted`` matching no signal (the titles are listed) or
        a spectrum; several images and none recognisably HAADF/ADF/DF.
    """
    path = Path(path)
    found = _describe(signals)
    named = any(s.detector or not s.title.startswith("signal ") for s in found)
    if wanted and wanted.strip() and named:
        chosen, why = _choose_named(found, wanted, path)
    else:
        chosen, why = _choose_auto(found, path)
        if wanted and wanted.strip():
            why += f" (the file names no signals: signal '{_listing([wanted])}' not checked)"
    title = _listing([chosen.title])  # escaped to one line, for the log
    if len(found) == 1:
        phrase = f"{title} {why.replace('the only image', 'the only signal in the file')}"
    else:
        what = "images" if all(s.kind in IMAGE_KINDS for s in found) else "signals"
        phrase = (f"{title} {why} of {len(found)} {what}: "
                  f"{_listing([s.label() for s in found], width=300)}")
    return chosen.raw, {"signal": chosen.title, "signals": [s.title for s in found],
                        "signal_choice": phrase}


def _from_rsciio(signals, path: Path, wanted: str | None):
    """(array, pixel size in pm or None, metadata) of the chosen signal."""
    sig, record = choose_signal(signals if isinstance(signals, list) else [signals], path, wanted)
    om = sig.get("original_metadata") or {}
    meta = {**_instrument_from_rsciio(_mapped_metadata(sig)), **_vendor_instrument(om),
            **_axes_note(sig["axes"]), **record}
    meta.setdefault("detector", _signal_detector(sig))
    return np.asarray(sig["data"]), _axes_pixel_size(sig["axes"]), {k: v for k, v in meta.items()
                                                                     if v is not None}


# --- readers: each returns (array, pixel_size_pm or None, metadata) ---------

def _read_dm(path: Path, dataset: str | None, signal: str | None = None):
    from rsciio.digitalmicrograph import file_reader

    return _from_rsciio(file_reader(str(path)), path, signal)


def _velox_unread(path: Path) -> list[dict]:
    """Stand-ins for a Velox file's spectra, which are listed but not read."""
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        data = f.get("Data")
        if not isinstance(data, h5py.Group):
            return []
        for group, kind, ndim in (("SpectrumImage", "EDS", 3), ("Spectrum", "EDS", 1),
                                  ("EelsSpectrumImage", "EELS", 3)):
            for _ in (data[group] if isinstance(data.get(group), h5py.Group) else ()):
                out.append({"data": np.zeros((1,) * ndim), "axes": [], "original_metadata": {},
                            "metadata": {"General": {"title": kind},
                                         "Signal": {"signal_type": kind}}})
    return out


def _read_emd(path: Path, dataset: str | None, signal: str | None = None):
    from rsciio.emd import file_reader

    try:  # Velox: images only (spectrum streams are large)
        signals = file_reader(str(path), select_type="images")
    except ModuleNotFoundError as exc:  # Velox with a spectrum image: rsciio needs 'sparse'
        name = exc.name or "sparse"
        raise ImageReadError(f"this EMD file holds a spectrum image; RosettaSciIO reads such "
                             f"files only with {name} installed (pip install {name})", path) from None
    except Exception as exc:  # rsciio raises many types for foreign HDF5
        raise ImageReadError(read_failure("emd", exc), path) from None
    signals = signals if isinstance(signals, list) else [signals]
    return _from_rsciio(signals + _velox_unread(path), path, signal)


def _read_rsciio(kind: str):
    """A reader for a format RosettaSciIO reads (HyperSpy, Zarr HyperSpy, MRC, FEI TIA)."""

    def read(path: Path, dataset: str | None, signal: str | None = None):
        import importlib

        try:
            plugin = importlib.import_module(f"rsciio.{RSCIIO_PLUGINS[kind]}")
        except ImportError as exc:
            raise ImageReadError(f"reading {path.suffix} files needs {exc.name} "
                                 f"(pip install {exc.name})", path) from None
        return _from_rsciio(plugin.file_reader(str(path)), path, signal)

    return read


# --- TIFF: tifffile for ImageJ/OME/resolution tags, RosettaSciIO for vendors --

def _tiff_vendor(tf) -> str | None:
    """The vendor whose metadata RosettaSciIO reads from this TIFF, or None."""
    page = tf.pages[0]
    for flag, name in (("fei", "FEI/Thermo"), ("sem", "Zeiss"), ("tvips", "TVIPS"), ("sis", "Olympus SIS")):
        if flag in tf.flags or getattr(page, f"is_{flag}", False):
            return name
    make = page.tags.get("Make")
    if make is not None and make.value == "JEOL Ltd.":
        return "JEOL"
    if any(tag in page.tags for tag in (65003, 65009, 65010)):
        return "DigitalMicrograph"
    return None


def _tiff_plain(tf) -> tuple[float | None, dict]:
    """Pixel size (pm) from OME, ImageJ or centimetre resolution tags, and JSON/OME metadata."""
    size, meta = None, {}
    if tf.is_ome and tf.ome_metadata:
        try:
            root = ET.fromstring(tf.ome_metadata)
            pix = next(el for el in root.iter() if el.tag.endswith("Pixels"))
            psx = pix.get("PhysicalSizeX")
            unit = pix.get("PhysicalSizeXUnit", "µm")
            if psx and unit_to_pm(unit):
                size = float(psx) * unit_to_pm(unit)
            when = next((el.text for el in root.iter() if el.tag.endswith("AcquisitionDate")), None)
            if when:
                meta["acquisition_time"] = when.strip()
        except (ET.ParseError, StopIteration, ValueError):
            pass
    page = tf.pages[0]
    if size is None and tf.is_imagej:
        ij = tf.imagej_metadata or {}
        unit = ij.get("unit")
        tag = page.tags.get("XResolution")
        factor = unit_to_pm(unit.replace("\\u00B5", "µ") if isinstance(unit, str) else unit)
        if tag is not None and factor:
            num, den = tag.value
            if num > 0:
                size = den / num * factor
    if size is None:
        tag = page.tags.get("XResolution")
        runit = page.tags.get("ResolutionUnit")
        # Only centimetre resolution units are physical at this scale;
        # inch (often a 72 dpi default) is not trusted.
        if tag is not None and runit is not None and int(runit.value) == 3:
            num, den = tag.value
            if num > 0:
                size = den / num * UNIT_PM["cm"]
    desc = page.tags.get("ImageDescription")
    if desc is not None and isinstance(desc.value, str) and desc.value.startswith("{"):
        try:
            meta.update(_jsonable(json.loads(desc.value)) or {})
        except json.JSONDecodeError:
            pass
    return size, meta


def _tiff_vendor_read(path: Path, vendor: str) -> tuple[float | None, dict]:
    """Pixel size (pm) and instrument metadata of a vendor TIFF, through rsciio.tiff."""
    from rsciio.tiff import file_reader

    try:
        signals = file_reader(str(path))
    except Exception as exc:  # noqa: BLE001 - the image itself was readable: say so, go on
        return None, {"tiff_vendor": vendor, "vendor_metadata_unreadable": type(exc).__name__}
    sig = signals[0] if isinstance(signals, list) else signals
    om = sig.get("original_metadata") or {}
    meta = {**_instrument_from_rsciio(_mapped_metadata(sig)), **_vendor_instrument(om),
            "tiff_vendor": vendor}
    return _axes_pixel_size(sig.get("axes") or []), {k: v for k, v in meta.items() if v is not None}


def _read_tiff(path: Path, dataset: str | None, signal: str | None = None):
    import tifffile

    with tifffile.TiffFile(path) as tf:
        data = tf.asarray()
        size, meta = _tiff_plain(tf)
        vendor = _tiff_vendor(tf)
    if vendor is not None:
        vendor_size, vendor_meta = _tiff_vendor_read(path, vendor)
        meta.update(vendor_meta)
        if vendor_size is not None:
            size = vendor_size
    return data, size, meta


def _read_hdf5(path: Path, dataset: str | None, signal: str | None = None):
    import h5py

    with h5py.File(path, "r") as f:
        hyperspy = str(f.attrs.get("file_format", "")) == "HyperSpy"
    if hyperspy and dataset is None:  # written by HyperSpy: its axes carry the pixel size
        return _read_rsciio("hspy")(path, dataset, signal)
    with h5py.File(path, "r") as f:
        if dataset is None:
            found = []
            f.visititems(
                lambda name, obj: found.append(name)
                if isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3) and obj.dtype.kind in "uif"
                else None
            )
            if len(found) != 1:
                raise ImageReadError(
                    f"name the image dataset (hdf5_dataset in the configuration); "
                    f"2-D/3-D datasets found: {_listing(found)}",
                    path,
                )
            dataset = found[0]
        if dataset not in f:
            raise ImageReadError(f"no dataset '{_listing([dataset])}' in the file", path)
        ds = f[dataset]
        data = ds[()]
        size = None
        attrs = {**dict(f.attrs), **dict(ds.attrs)}
        if "pixel_size_pm" in attrs:
            size = float(np.ravel(attrs["pixel_size_pm"])[0])
        elif "pixel_size" in attrs:
            unit = attrs.get("pixel_size_unit", attrs.get("unit", "nm"))
            unit = unit.decode() if isinstance(unit, bytes) else unit
            factor = unit_to_pm(unit)
            if factor:
                size = float(np.ravel(attrs["pixel_size"])[-1]) * factor
        meta = {}
        for key in ("microscope", "voltage_kV", "dwell_time_us"):
            if key in attrs:
                v = attrs[key]
                meta[key] = v.decode() if isinstance(v, bytes) else np.ravel(v)[0].item() if isinstance(v, np.ndarray) else v
        meta["hdf5_dataset"] = dataset
    return data, size, meta


def _read_npy(path: Path, dataset: str | None, signal: str | None = None):
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise ImageReadError("not an NPY file (no NumPy header)", path)
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:  # its message may quote the header
        reason = "an object (pickled) array" if "allow_pickle" in str(exc) else None
        raise ImageReadError(f"not a plain NPY array ({reason})" if reason
                             else read_failure("npy", exc), path) from None
    return data, None, {}


READERS = {"tiff": _read_tiff, "dm": _read_dm, "emd": _read_emd, "hdf5": _read_hdf5, "npy": _read_npy,
           **{kind: _read_rsciio(kind) for kind in RSCIIO_PLUGINS}}


def validate_image(data: np.ndarray, path: str | Path) -> np.ndarray:
    """Check a 2-D image and return it as float64.

    Raises
    ------
    ImageReadError
        For non-numeric data, NaN or infinite pixels, a constant image, or an
        image smaller than :data:`MIN_SIDE` pixels.
    """
    arr = np.asarray(data)
    if arr.dtype.kind not in "uifb":
        raise ImageReadError(f"pixel type {arr.dtype} is not numeric", path)
    if arr.dtype.kind == "c":
        raise ImageReadError("complex pixels: give the modulus or the real part", path)
    arr = arr.astype(float, copy=False)
    if arr.ndim != 2:
        raise ImageReadError(f"expected a 2-D image, got shape {arr.shape}", path)
    if min(arr.shape) < MIN_SIDE:
        raise ImageReadError(
            f"image of {arr.shape[1]}x{arr.shape[0]} px is too small (at least {MIN_SIDE} px a side)",
            path,
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ImageReadError(f"{int(bad.sum())} NaN or infinite pixels", path)
    if float(arr.max()) == float(arr.min()):
        raise ImageReadError(f"constant image (every pixel is {arr.flat[0]:g})", path)
    return arr


def read_image(
    path: str | Path,
    *,
    pixel_size_pm: float | None = None,
    hdf5_dataset: str | None = None,
    stack: str = "frames",
    prefer: str = "file",
    signal: str | None = None,
    check_frames: bool = True,
) -> list[Image]:
    """Read an image file; return one :class:`Image` per frame.

    Parameters
    ----------
    path : str or Path
    pixel_size_pm : float, optional
        Pixel size from the configuration, used when the file has none (or
        always, with ``prefer="config"``).
    hdf5_dataset : str, optional
        Path of the image dataset inside an HDF5 file.
    stack : {"frames", "sum", "align"}
        What to do with a 3-D stack.
    prefer : {"file", "config"}
        Which pixel size wins when both are known.
    signal : str, optional
        Files with several signals (Velox EMD, DM, HyperSpy, ...): the title
        (or detector name) of the image to analyse. Default: the HAADF image,
        else ADF, else DF, by title or detector name (:func:`choose_signal`).
        The choice is recorded in ``metadata["signal"]``, ``["signals"]`` and
        ``["signal_choice"]`` (one line, for the log). Ignored by formats
        that hold a single unnamed image (TIFF, NPY, plain HDF5).
    check_frames : bool
        With ``stack="frames"``: False leaves each frame's checks (constant,
        non-finite) to the caller, so that one broken frame of a series can be
        set aside instead of refusing the file.

    Returns
    -------
    list of Image

    Raises
    ------
    ImageReadError, PixelSizeError
    """
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ImageReadError(
            f"unknown image format '{path.suffix}' (known: {', '.join(sorted(SUFFIXES))})", path
        )
    if not path.is_file():
        raise ImageReadError("no such file", path)
    if stack not in ("frames", "sum", "align"):
        raise ValueError(f"stack must be 'frames', 'sum' or 'align', not {stack!r}")
    try:
        data, file_size, meta = READERS[kind](path, hdf5_dataset, signal)
    except (ImageReadError, PixelSizeError):
        raise
    except Exception as exc:  # any parser failure is a bad file, not a crash
        raise ImageReadError(read_failure(kind, exc), path) from None
    if file_size is not None and (not np.isfinite(file_size) or file_size <= 0):
        file_size = None
    if file_size is not None and (prefer == "file" or pixel_size_pm is None):
        size, source = float(file_size), "file"
    elif pixel_size_pm is not None:
        size, source = float(pixel_size_pm), "config"
    else:
        unitless = (f" (its axes have a scale of {meta['axes_scale_without_unit']:g} but no "
                    f"length unit)" if "axes_scale_without_unit" in meta else "")
        raise PixelSizeError(
            f"the file carries no pixel size{unitless} and none is configured "
            "(set pixel_size_pm for this experiment, or --pixel-size-pm)",
            path,
        )
    arr = np.asarray(data)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
        raise ImageReadError("colour (RGB) image: STEM images are single-channel", path)
    meta = _jsonable(meta) or {}
    if arr.ndim == 3:
        if stack == "frames" and not check_frames:
            return [Image(np.asarray(f, float), size, source, str(path), k, meta)
                    for k, f in enumerate(arr)]
        frames = [validate_image(f, path) for f in arr]
        if stack == "frames":
            return [Image(f, size, source, str(path), k, meta) for k, f in enumerate(frames)]
        if stack == "align":
            frames = align_frames(frames)
        return [Image(np.sum(frames, axis=0), size, source, str(path), None,
                      {**meta, "frames": len(frames), "stack": stack})]
    return [Image(validate_image(arr, path), size, source, str(path), None, meta)]


def align_frames(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Register every frame to the first by phase correlation (sub-pixel) and
    shift it there (Fourier shift); returns the aligned frames."""
    from scipy.ndimage import fourier_shift
    from skimage.registration import phase_cross_correlation

    ref = frames[0]
    out = [ref]
    for f in frames[1:]:
        shift, _, _ = phase_cross_correlation(ref, f, upsample_factor=20)
        out.append(np.real(np.fft.ifftn(fourier_shift(np.fft.fftn(f), shift))))
    return out
