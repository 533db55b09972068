"""Multislice (abTEM) STEM test images with exact column truth, read without abTEM.

The files ``tests/data/abtem/NAME.npz`` are written by ``benchmarks/abtem_images.py``
(run in the separate ``.venv-abtem`` made by ``benchmarks/abtem_setup.sh``). Each holds
the noise-free HAADF (70-200 mrad) and ABF (11-22 mrad) signals of a 200 kV, 22 mrad
probe as fractions of the incident beam on the scan grid (rows = y, columns = x), the
positions of every projected column within the image or up to 1 A outside it, and the
simulation settings. This module is plain NumPy and json: tests that use it run where
abTEM is not installed.

Examples
--------
>>> import numpy as np
>>> from abtem_data import names, load, at_dose
>>> signals, truth, meta = load("sto_001")
>>> counts = at_dose(signals["haadf"], 1e4, np.random.default_rng(0),
...                  pixel_pm=meta["pixel_pm"])
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: Folder of the ``.npz`` files.
DATA_DIR = Path(__file__).resolve().parent / "data" / "abtem"

#: Arrays of the truth in every file (one entry per column).
TRUTH_KEYS = ("x_px", "y_px", "site", "species", "column", "cell_ij")

#: Default source size: full width at half maximum of the Gaussian blur, in pm.
SOURCE_SIZE_PM = 40.0

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def names(data_dir: Path | str | None = None) -> list[str]:
    """Names of the simulated structures available.

    Parameters
    ----------
    data_dir : path, optional
        Folder of the ``.npz`` files; :data:`DATA_DIR` if not given.

    Returns
    -------
    list of str
        Sorted file stems, e.g. ``["pto_001", "sto_001", "sto_110", "sto_bto_001"]``;
        empty if the folder does not exist.
    """
    folder = Path(data_dir) if data_dir is not None else DATA_DIR
    return sorted(p.stem for p in folder.glob("*.npz")) if folder.is_dir() else []


def load(name: str, data_dir: Path | str | None = None) -> tuple[dict, dict, dict]:
    """Read one simulated structure.

    Parameters
    ----------
    name : str
        A name from :func:`names`.
    data_dir : path, optional
        Folder of the ``.npz`` files; :data:`DATA_DIR` if not given.

    Returns
    -------
    signals : dict of str to ndarray
        ``"haadf"`` and ``"abf"``: float32 images (rows = y, columns = x), noise-free,
        as the fraction of the incident beam reaching the detector, without source-size
        blur (apply :func:`at_dose`).
    truth : dict of str to ndarray
        One entry per projected column whose position lies within the image or up to
        1 A outside it: ``x_px`` (column index), ``y_px`` (row index), both with the
        origin at the centre of pixel [0, 0]; ``site`` (``"A"``, ``"B"`` or ``"O"``: the
        column holds the A cation, the B cation, or only O); ``species`` (content per
        repeat along the beam, e.g. ``"Sr"``, ``"TiO"``, ``"O2"``); ``column`` (index into
        ``meta["columns"]``) and ``cell_ij`` (tile translation, shape (n, 2)). The position
        of a mixed column is that of its heaviest atom (in ``pto_001`` the O of the TiO
        column sits 0.50 A from Ti along -c: see ``meta["columns"]``).
    meta : dict
        Settings: ``pixel_pm``, ``zone_axis``, ``structure``, ``thickness_a``,
        ``voltage_kv``, ``convergence_semiangle_mrad``, ``haadf_mrad``, ``abf_mrad``,
        ``frozen_phonons``, ``abtem_version``, ``tile_vectors_px`` (the two tile vectors
        in pixels, (dx, dy) each), and for the polar ``pto_001`` a ``polar`` entry
        (``b_displacement_pm`` of Ti from the Pb-cell centre along ``c_direction_px``).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    """
    folder = Path(data_dir) if data_dir is not None else DATA_DIR
    path = folder / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such simulated structure (have {names(folder)})")
    with np.load(path, allow_pickle=False) as z:
        signals = {k: z[k] for k in ("haadf", "abf")}
        truth = {k: z[k] for k in TRUTH_KEYS if k in z.files}
        meta = json.loads(str(z["meta_json"]))
    return signals, truth, meta


def _blur_matrix(n: int, sigma_px: float) -> np.ndarray:
    """(n, n) matrix of a 1-D Gaussian convolution with mirror boundaries."""
    radius = max(1, int(np.ceil(4.0 * sigma_px)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma_px) ** 2)
    kernel /= kernel.sum()
    m = np.zeros((n, n))
    rows = np.arange(n)
    for off, w in zip(offsets, kernel):
        j = rows + off
        j = np.where(j < 0, -j - 1, j)  # mirror about the edge: ... 1 0 | 0 1 ...
        j = np.where(j >= n, 2 * n - 1 - j, j)
        j = np.clip(j, 0, n - 1)
        np.add.at(m, (rows, j), w)
    return m


def source_blur(signal: np.ndarray, source_size_pm: float = SOURCE_SIZE_PM,
                pixel_pm: float | None = None) -> np.ndarray:
    """Blur an image by a Gaussian source size.

    Parameters
    ----------
    signal : ndarray, shape (rows, columns)
        Image.
    source_size_pm : float
        Full width at half maximum of the Gaussian in pm (sigma = FWHM / 2.355); 0 for
        no blur. Default 40 pm, a typical effective source size of an aberration-corrected
        STEM (the simulation's probe itself is a point source).
    pixel_pm : float
        Pixel size in pm (``meta["pixel_pm"]``); required when ``source_size_pm > 0``.

    Returns
    -------
    ndarray of float64
        Blurred image (mirror boundaries, so a constant image stays constant).
    """
    img = np.asarray(signal, dtype=np.float64)
    if source_size_pm <= 0:
        return img.copy()
    if pixel_pm is None or pixel_pm <= 0:
        raise ValueError("pixel_pm is required for a source-size blur")
    sigma_px = source_size_pm / _FWHM_PER_SIGMA / pixel_pm
    rows, cols = img.shape
    return _blur_matrix(rows, sigma_px) @ img @ _blur_matrix(cols, sigma_px).T


def at_dose(signal: np.ndarray, electrons_per_position: float, rng: np.random.Generator,
            source_size_pm: float = SOURCE_SIZE_PM, pixel_pm: float | None = None) -> np.ndarray:
    """Detector counts at a finite dose: source-size blur, then Poisson noise.

    Parameters
    ----------
    signal : ndarray, shape (rows, columns)
        Noise-free signal as a fraction of the incident beam (from :func:`load`).
    electrons_per_position : float
        Incident electrons per probe position (pixel dwell time x beam current / e).
    rng : numpy.random.Generator
        Source of the noise.
    source_size_pm : float
        Full width at half maximum of the Gaussian source-size blur in pm
        (sigma = FWHM / 2.355); default 40 pm; 0 for none. See :func:`source_blur`.
    pixel_pm : float
        Pixel size in pm (``meta["pixel_pm"]``); required when ``source_size_pm > 0``.

    Returns
    -------
    ndarray of float64
        ``counts = Poisson(electrons_per_position * blurred signal)``, integer-valued.
    """
    if electrons_per_position < 0:
        raise ValueError("electrons_per_position must be >= 0")
    lam = electrons_per_position * np.clip(source_blur(signal, source_size_pm, pixel_pm), 0, None)
    return rng.poisson(lam).astype(np.float64)
