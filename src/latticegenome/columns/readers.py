"""Read STEM images with their pixel size and instrument metadata.

Formats: TIFF (ImageJ and OME pixel sizes, resolution tags in cm), DM3/DM4
and EMD (Velox and Berkeley) through RosettaSciIO, HDF5 (dataset path
configurable) and NPY. The pixel size comes from the file when it carries
one, else from the caller (the configuration); a file with neither is an
error. Every error names the file and the problem
(:class:`~latticegenome.core.errors.ImageReadError`,
:class:`~latticegenome.core.errors.PixelSizeError`). A parser's own message is
never passed on: it may quote the file's first bytes (a text file named
``x.tif`` holding a password file), so a failure is reported as a phrase per
format with the exception's type (:func:`read_failure`).

3-D stacks (frames, rows, cols) give one :class:`Image` per frame
(``stack="frames"``), their sum (``"sum"``), or their sum after rigid
registration of every frame to the first (``"align"``, phase correlation).
"""

from __future__ import annotations

import json
import os
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
        dwell_time_us, ...), JSON-serialisable.
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


# --- readers: each returns (array, pixel_size_pm or None, metadata) ---------

def _read_tiff(path: Path, dataset: str | None):
    import tifffile

    with tifffile.TiffFile(path) as tf:
        data = tf.asarray()
        size = None
        meta: dict = {}
        if tf.is_ome and tf.ome_metadata:
            try:
                root = ET.fromstring(tf.ome_metadata)
                pix = next(el for el in root.iter() if el.tag.endswith("Pixels"))
                psx = pix.get("PhysicalSizeX")
                unit = pix.get("PhysicalSizeXUnit", "µm")
                if psx and unit_to_pm(unit):
                    size = float(psx) * unit_to_pm(unit)
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
    return data, size, meta


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


#: HyperSpy metadata (``Acquisition_instrument.TEM``) -> instrument record key.
_TEM_KEYS = {"beam_energy": "voltage_kV", "microscope": "microscope",
             "convergence_angle": "convergence_angle_mrad", "magnification": "magnification",
             "probe_area": "probe_area_nm2", "beam_current": "beam_current_nA"}


def _instrument_from_rsciio(md: dict) -> dict:
    """Instrument metadata from a RosettaSciIO signal's HyperSpy-style metadata."""
    out = {}
    tem = (md.get("Acquisition_instrument") or {}).get("TEM") or {}
    for key, name in _TEM_KEYS.items():
        if key in tem:
            out[name] = tem[key]
    stage = tem.get("Stage") or {}
    for key in ("tilt_alpha", "tilt_beta"):
        if key in stage:
            out[f"stage_{key}_deg"] = stage[key]
    det = (tem.get("Detector") or {})
    for name, val in det.items():
        if isinstance(val, dict) and "dwell_time" in val:
            out["dwell_time_us"] = val["dwell_time"] * 1e6 if val["dwell_time"] < 1 else val["dwell_time"]
        if isinstance(val, dict):
            for key in ("collection_angle", "inner_collection_angle", "outer_collection_angle"):
                if key in val:
                    out[f"{name.lower()}_{key}_mrad"] = val[key]
    if "dwell_time" in tem:
        out["dwell_time_us"] = tem["dwell_time"]
    if "camera_length" in tem:
        out["camera_length_mm"] = tem["camera_length"]
    general = md.get("General") or {}
    for k in ("title", "date", "time"):
        if k in general:
            out[k] = general[k]
    return out


def _pick_image(signals: list[dict], path: Path) -> dict:
    images = [s for s in signals if np.asarray(s["data"]).ndim in (2, 3)]
    # DM files carry a thumbnail first; the image is the largest 2/3-D array.
    if not images:
        raise ImageReadError("the file holds no 2-D image", path)
    return max(images, key=lambda s: np.asarray(s["data"]).size)


def _read_dm(path: Path, dataset: str | None):
    from rsciio.digitalmicrograph import file_reader

    sig = _pick_image(file_reader(str(path)), path)
    md = sig.get("metadata", {})
    meta = _instrument_from_rsciio(md)
    omd = sig.get("original_metadata", {})
    try:
        info = omd["ImageList"]["TagGroup0"]["ImageTags"]["Microscope Info"]
        meta.setdefault("microscope", info.get("Name") or info.get("Microscope"))
        if "Voltage" in info:
            meta.setdefault("voltage_kV", float(info["Voltage"]) / 1e3)
    except (KeyError, TypeError):
        pass
    return np.asarray(sig["data"]), _axes_pixel_size(sig["axes"]), {k: v for k, v in meta.items() if v is not None}


def _read_emd(path: Path, dataset: str | None):
    from rsciio.emd import file_reader

    try:
        signals = file_reader(str(path))
    except Exception as exc:  # rsciio raises many types for foreign HDF5
        raise ImageReadError(read_failure("emd", exc), path) from None
    sig = _pick_image(signals if isinstance(signals, list) else [signals], path)
    md = sig.get("metadata", {})
    return np.asarray(sig["data"]), _axes_pixel_size(sig["axes"]), _instrument_from_rsciio(md)


def _axes_note(axes: list[dict]) -> dict:
    """A record of axes that have a scale but no length unit (never taken as a pixel size)."""
    if len(axes) < 2 or _axes_pixel_size(axes) is not None:
        return {}
    ax = axes[-1]
    if ax.get("scale") not in (None, 1, 1.0):
        return {"axes_scale_without_unit": float(ax["scale"]), "axes_units": str(ax.get("units"))}
    return {}


def _read_rsciio(kind: str):
    """A reader for a format RosettaSciIO reads (HyperSpy, Zarr HyperSpy, MRC, FEI TIA)."""

    def read(path: Path, dataset: str | None):
        import importlib

        try:
            plugin = importlib.import_module(f"rsciio.{RSCIIO_PLUGINS[kind]}")
        except ImportError as exc:
            raise ImageReadError(f"reading {path.suffix} files needs {exc.name} "
                                 f"(pip install {exc.name})", path) from None
        signals = plugin.file_reader(str(path))
        sig = _pick_image(signals if isinstance(signals, list) else [signals], path)
        meta = {**_instrument_from_rsciio(sig.get("metadata", {})), **_axes_note(sig["axes"])}
        return np.asarray(sig["data"]), _axes_pixel_size(sig["axes"]), meta

    return read


def _read_hdf5(path: Path, dataset: str | None):
    import h5py

    with h5py.File(path, "r") as f:
        hyperspy = str(f.attrs.get("file_format", "")) == "HyperSpy"
    if hyperspy and dataset is None:  # written by HyperSpy: its axes carry the pixel size
        return _read_rsciio("hspy")(path, dataset)
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


def _read_npy(path: Path, dataset: str | None):
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
        data, file_size, meta = READERS[kind](path, hdf5_dataset)
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
