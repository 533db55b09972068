"""Synthetic HAADF-STEM image series of one perovskite field of view, with known truth.

One SrTiO3-like [001] lattice (A at the cell corners, B at the cell centres) is
imaged over ``n_frames`` frames. From frame to frame:

- the field drifts (a constant velocity, px per frame) and rotates by a small
  random jitter about the image centre;
- the slow scan distorts each frame differently: a shear (x moves with the row)
  and a stretch (y moves with the row), optionally a quadratic term in y;
- the lattice parameter follows a linear temperature ramp (a uniform scale about
  the image centre);
- a polar domain wall (B columns displaced by ``+polar_pm`` along +y on one side,
  ``-polar_pm`` on the other) moves along x at a known speed (cells per frame);
- columns are lost at random with a probability that grows with the accumulated
  dose (a lost column stays lost); columns drift into and out of the field.

Conventions (as in the rest of the library): positions are pixels, x = column
index, y = row index, origin at the centre of pixel [0, 0]; lengths pm where
physical, times s, temperatures K, doses electrons per square angstrom.

**Reference coordinates** are those of frame 0: its transform is the identity.
Frame k sees the point ``p`` of the reference at ``T_k(p)``
(:func:`frame_transform`):

1. ``q = c + shift_k + scale_k R(rotation_k) (p - c)`` (c the image centre,
   ``scale_k = a_pm[k] / a_pm[0]``, R a rotation counter-clockwise in (x, y));
2. slow-scan distortion, with ``v = q_y - c_y``:
   ``x = q_x + shear_k v``, ``y = q_y + stretch_k v + curvature_k v**2 / c_y``.

The column renderer and brightness rules are those of
:mod:`latticegenome.columns.simulate` and :mod:`latticegenome.columns.model`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from latticegenome.columns.geometry import PIXEL_AREA, in_frame
from latticegenome.columns.model import amplitude_for_counts, render_columns
from latticegenome.columns.simulate import column_brightness, square_lattice_sites

#: Fraction of the incident electrons that an A (Sr) column scatters onto the HAADF
#: detector, per unit-cell area: counts_sr = dose x cell area (A^2) x this.
HAADF_FRACTION = 0.05


def series_schedule(n_frames: int, frame_time_s: float, temperature_K, dose_per_frame: float,
                    a_pm: float, expansion_pm_per_K: float) -> dict:
    """Time, temperature, accumulated dose and lattice parameter of every frame.

    Parameters
    ----------
    n_frames : int
    frame_time_s : float
        Time between frame starts, s.
    temperature_K : (float, float)
        Temperature of the first and of the last frame, K (linear ramp).
    dose_per_frame : float
        Electron dose of one frame, e/A^2.
    a_pm : float
        Lattice parameter at the first frame's temperature, pm.
    expansion_pm_per_K : float
        d a / d T, pm/K.

    Returns
    -------
    dict
        ``time_s``, ``temperature_K``, ``dose_e_per_A2`` (accumulated at the end of
        the frame), ``dose_before_e_per_A2`` (received before the frame starts) and
        ``a_pm``, each of shape (n_frames,).

    Examples
    --------
    >>> s = series_schedule(3, 2.0, (300.0, 400.0), 10.0, 390.0, 0.01)
    >>> s["time_s"].tolist(), s["a_pm"].tolist(), s["dose_e_per_A2"].tolist()
    ([0.0, 2.0, 4.0], [390.0, 390.5, 391.0], [10.0, 20.0, 30.0])
    """
    k = np.arange(n_frames, dtype=float)
    t0, t1 = (float(v) for v in temperature_K)
    temp = t0 + (t1 - t0) * k / max(1, n_frames - 1)
    return {"time_s": k * frame_time_s, "temperature_K": temp,
            "dose_e_per_A2": (k + 1) * dose_per_frame, "dose_before_e_per_A2": k * dose_per_frame,
            "a_pm": a_pm + expansion_pm_per_K * (temp - t0)}


def frame_transforms(n_frames: int, scale: np.ndarray, drift_px_per_frame, rotation_jitter_deg: float,
                     scan_drift, rng: np.random.Generator) -> dict:
    """Per-frame parameters of the map from reference to frame coordinates.

    Frame 0 is the reference (identity). Frame k is shifted by ``k`` times the
    drift, rotated by a normal jitter of standard deviation ``rotation_jitter_deg``,
    scaled by ``scale[k]`` and distorted by a shear, stretch and curvature drawn
    from normals of standard deviations ``scan_drift`` (see the module docstring).

    Returns
    -------
    dict
        ``shift_px`` (n, 2) (x, y), ``rotation_deg``, ``scale``, ``shear``,
        ``stretch``, ``curvature`` (each (n,)).
    """
    k = np.arange(n_frames, dtype=float)
    sd = np.zeros(3)
    sd[: len(np.atleast_1d(scan_drift))] = np.atleast_1d(scan_drift)
    draw = rng.normal(0.0, 1.0, (n_frames, 4)) * np.r_[rotation_jitter_deg, sd]
    draw[0] = 0.0
    return {"shift_px": np.outer(k, np.asarray(drift_px_per_frame, float)),
            "rotation_deg": draw[:, 0], "scale": np.asarray(scale, float),
            "shear": draw[:, 1], "stretch": draw[:, 2], "curvature": draw[:, 3]}


def frame_transform(x, y, truth: dict, frame: int):
    """Reference coordinates to the coordinates of ``frame`` (px), by the truth's transform.

    Parameters
    ----------
    x, y : array_like
        Points in reference-frame (frame 0) coordinates, px.
    truth : dict
        The truth of :func:`simulate_series` (or :func:`series_truth`), or any
        dict with its per-frame transform keys and ``centre_px``.
    frame : int

    Returns
    -------
    x, y : ndarray
        The same points as ``frame`` sees them, px.

    Examples
    --------
    >>> t = {"centre_px": (10.0, 10.0), "shift_px": np.array([[1.0, 2.0]]),
    ...      "rotation_deg": np.zeros(1), "scale": np.ones(1), "shear": np.zeros(1),
    ...      "stretch": np.zeros(1), "curvature": np.zeros(1)}
    >>> frame_transform(np.array([10.0]), np.array([10.0]), t, 0)
    (array([11.]), array([12.]))
    """
    cx, cy = truth["centre_px"]
    th = np.deg2rad(truth["rotation_deg"][frame])
    s = truth["scale"][frame]
    dx, dy = np.asarray(x, float) - cx, np.asarray(y, float) - cy
    qx = cx + truth["shift_px"][frame][0] + s * (np.cos(th) * dx - np.sin(th) * dy)
    qy = cy + truth["shift_px"][frame][1] + s * (np.sin(th) * dx + np.cos(th) * dy)
    v = qy - cy
    return (qx + truth["shear"][frame] * v,
            qy + truth["stretch"][frame] * v + truth["curvature"][frame] * v**2 / cy)


def reference_lattice(shape, a_px: float, reach_px: float, rng: np.random.Generator) -> dict:
    """A and B sites of the reference frame that come within ``reach_px`` of the image.

    Site (0, 0) is at the image centre plus a random offset within one cell
    (:func:`~latticegenome.columns.simulate.square_lattice_sites`, no rotation).

    Returns
    -------
    dict
        ``x``, ``y`` (px, B at the exact cell centre), ``site`` ("A"/"B"), ``i``,
        ``j`` (lattice indices; of the cell's lower corner for B).
    """
    pa, pb, ij = square_lattice_sites(shape, a_px, 0.0, rng.uniform(0, a_px, 2))
    pos = np.vstack([pa, pb])
    site = np.r_[np.full(len(pa), "A"), np.full(len(pb), "B")]
    ij = np.vstack([ij, ij])
    keep = in_frame(pos[:, 0], pos[:, 1], shape, reach_px)
    return {"x": pos[keep, 0], "y": pos[keep, 1], "site": site[keep],
            "i": ij[keep, 0], "j": ij[keep, 1]}


def polar_field(site, i, wall_cells: np.ndarray, polar_px: float) -> np.ndarray:
    """Signed B displacement along +y (px) of every column in every frame.

    A B column whose cell centre ``i + 0.5`` lies below the wall (``i + 0.5 <
    wall_cells[k]``) is displaced by ``+polar_px``, the others by ``-polar_px``;
    A columns are not displaced.

    Returns
    -------
    ndarray, shape (n_frames, n_columns)

    Examples
    --------
    >>> polar_field(np.array(["A", "B", "B"]), np.array([0, 0, 2]), np.array([1.0, 3.0]), 0.5)
    array([[ 0. ,  0.5, -0.5],
           [ 0. ,  0.5,  0.5]])
    """
    below = (np.asarray(i)[None, :] + 0.5) < np.asarray(wall_cells, float)[:, None]
    return np.where(np.asarray(site)[None, :] == "B", np.where(below, polar_px, -polar_px), 0.0)


def column_survival(n_columns: int, dose_before: np.ndarray, loss_per_dose: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Which columns survive the beam in each frame.

    A column is present in frame k with probability ``exp(-loss_per_dose *
    dose_before[k])`` (dose received before the frame, e/A^2), and once lost it
    stays lost (one uniform draw per column, compared with a falling threshold).

    Returns
    -------
    ndarray of bool, shape (n_frames, n_columns)
    """
    u = rng.uniform(0.0, 1.0, n_columns)
    return u[None, :] <= np.exp(-loss_per_dose * np.asarray(dose_before, float))[:, None]


def series_truth(
    n_frames: int = 20,
    shape: tuple[int, int] = (256, 256),
    *,
    pixel_size_pm: float = 20.0,
    a_pm: float = 390.5,
    drift_px_per_frame: tuple[float, float] = (0.4, -0.25),
    rotation_jitter_deg: float = 0.05,
    scan_drift: tuple[float, ...] = (2e-3, 2e-3),
    polar_pm: float = 10.0,
    wall_start_cells: float = -3.0,
    wall_speed_cells_per_frame: float = 0.5,
    frame_time_s: float = 1.0,
    temperature_K: tuple[float, float] = (300.0, 600.0),
    expansion_pm_per_K: float = 4.3e-3,
    dose_per_frame_e_per_A2: float = 2.5e4,
    loss_per_dose: float = 1e-7,
    counts_sr: float | None = None,
    sigma_pm: float = 60.0,
    background: float = 20.0,
    rng: np.random.Generator | int | None = None,
) -> dict:
    """The truth of a series (every frame's transform, every column's fate), without images.

    Parameters as :func:`simulate_series`; the frames are drawn from it by
    :func:`render_frame`, one at a time (so a long series need not be held).

    Returns
    -------
    dict
        See :func:`simulate_series`.
    """
    rng = np.random.default_rng(rng)
    sched = series_schedule(n_frames, frame_time_s, temperature_K, dose_per_frame_e_per_A2, a_pm,
                            expansion_pm_per_K)
    a_px, sigma_px = a_pm / pixel_size_pm, sigma_pm / pixel_size_pm
    if counts_sr is None:
        counts_sr = dose_per_frame_e_per_A2 * (a_pm / 100.0) ** 2 * HAADF_FRACTION
    centre = ((shape[1] - 1) / 2, (shape[0] - 1) / 2)
    truth = {**sched, **frame_transforms(n_frames, sched["a_pm"] / a_pm, drift_px_per_frame,
                                         rotation_jitter_deg, scan_drift, rng),
             "centre_px": centre}
    span = float(np.hypot(*drift_px_per_frame)) * n_frames + 0.05 * max(shape) + 6 * sigma_px
    lat = reference_lattice(shape, a_px, span, rng)
    origin_x = float(np.mean(lat["x"][(lat["site"] == "A") & (lat["i"] == 0)]))
    wall = wall_start_cells + wall_speed_cells_per_frame * np.arange(n_frames)
    dy = polar_field(lat["site"], lat["i"], wall, polar_pm / pixel_size_pm)
    x_ref = np.broadcast_to(lat["x"], dy.shape).copy()
    y_ref = lat["y"][None, :] + dy
    xy = [frame_transform(x_ref[k], y_ref[k], truth, k) for k in range(n_frames)]
    x, y = np.array([p[0] for p in xy]), np.array([p[1] for p in xy])
    near = in_frame(x, y, shape, 5 * sigma_px, strict=True)
    keep = near.any(axis=0)
    wall_x = origin_x + wall * a_px
    truth.update(_columns_truth(lat, keep, x, y, x_ref, y_ref, dy, shape, pixel_size_pm))
    truth["present"] = column_survival(int(keep.sum()), sched["dose_before_e_per_A2"], loss_per_dose, rng)
    truth.update(
        wall_cells=wall, wall_x_ref_px=wall_x,
        wall_x_px=np.array([frame_transform(wall_x[k], centre[1], truth, k)[0] for k in range(n_frames)]),
        shape=tuple(int(v) for v in shape), pixel_size_pm=float(pixel_size_pm), a0_pm=float(a_pm),
        a0_px=float(a_px), sigma_px=float(sigma_px), counts_sr=float(counts_sr),
        background=float(background), polar_amplitude_pm=float(polar_pm), frame_time_s=float(frame_time_s),
        wall_speed_cells_per_frame=float(wall_speed_cells_per_frame),
        drift_px_per_frame=tuple(float(v) for v in drift_px_per_frame),
        noise_seed=int(rng.integers(0, 2**63 - 1)))
    return truth


def _columns_truth(lat, keep, x, y, x_ref, y_ref, dy, shape, pixel_size_pm) -> dict:
    """The per-column part of the truth, for the columns that come near the field."""
    return {"site": lat["site"][keep], "i": lat["i"][keep], "j": lat["j"][keep],
            "x": x[:, keep], "y": y[:, keep], "x_ref": x_ref[:, keep], "y_ref": y_ref[:, keep],
            "polar_pm": dy[:, keep] * pixel_size_pm,
            "in_field": in_frame(x[:, keep], y[:, keep], shape, PIXEL_AREA)}


def render_frame(truth: dict, frame: int, *, noise: bool = True, a_contrast: float = 1.0,
                 layers: tuple[int, int] = (3, 3)) -> np.ndarray:
    """One frame of a series: its present columns rendered, with Poisson noise.

    The noise of frame k is drawn from ``default_rng([truth["noise_seed"], k])``,
    so a frame is the same whether rendered alone or with the others.

    Parameters
    ----------
    truth : dict
        :func:`series_truth`.
    frame : int
    noise : bool
        Poisson counts (True) or their expectation.
    a_contrast : float
        A superlattice: the A columns of the last ``layers[1]`` of every
        ``sum(layers)`` rows of cells (lattice index j, along y) are this many
        times brighter; 1 (default) is one material.
    layers : (int, int)
        Rows of cells of the plain and of the bright layer.

    Returns
    -------
    ndarray of float, shape ``truth["shape"]`` (counts)
    """
    sigma = truth["sigma_px"]
    h_a = amplitude_for_counts(truth["counts_sr"], sigma)
    ratio = column_brightness("Ti", 1) / column_brightness("Sr")
    bright = (truth["j"] % sum(layers)) >= layers[0]
    amp = np.where(truth["site"] == "A", h_a * np.where(bright, a_contrast, 1.0), ratio * h_a)
    on = truth["present"][frame]
    lam = render_columns(truth["shape"], truth["x"][frame, on], truth["y"][frame, on], amp[on], sigma,
                         truth["background"])
    if not noise:
        return lam
    return np.random.default_rng([truth["noise_seed"], frame]).poisson(lam).astype(float)


def iter_frames(truth: dict, *, noise: bool = True) -> Iterator[np.ndarray]:
    """The frames of a series one after the other (:func:`render_frame`)."""
    for k in range(len(truth["time_s"])):
        yield render_frame(truth, k, noise=noise)


def simulate_series(
    n_frames: int = 20, shape: tuple[int, int] = (256, 256), *, pixel_size_pm: float = 20.0,
    drift_px_per_frame: tuple[float, float] = (0.4, -0.25), rotation_jitter_deg: float = 0.05,
    scan_drift: tuple[float, ...] = (2e-3, 2e-3), wall_speed_cells_per_frame: float = 0.5,
    temperature_K: tuple[float, float] = (300.0, 600.0), expansion_pm_per_K: float = 4.3e-3,
    dose_per_frame_e_per_A2: float = 2.5e4, loss_per_dose: float = 1e-7,
    counts_sr: float | None = None, rng: np.random.Generator | int | None = None, **options,
):
    """A HAADF-STEM series of one field of view with drift, distortion, a moving wall and damage.

    Parameters
    ----------
    n_frames : int
        Number of frames (at least 2).
    shape : (rows, cols)
        Frame size, px.
    pixel_size_pm : float
        pm per px.
    drift_px_per_frame : (float, float)
        Sample drift (x, y), px per frame.
    rotation_jitter_deg : float
        Standard deviation of the rotation of each frame about the image centre, deg.
    scan_drift : (shear, stretch[, curvature])
        Standard deviations of each frame's slow-scan distortion (dimensionless; see
        the module docstring).
    wall_speed_cells_per_frame : float
        Speed of the polar domain wall along +x, unit cells per frame.
    temperature_K : (float, float)
        Temperature of the first and last frame, K (linear ramp).
    expansion_pm_per_K : float
        d a / d T, pm/K (the lattice scales about the image centre).
    dose_per_frame_e_per_A2 : float
        Electron dose per frame, e/A^2.
    loss_per_dose : float
        Column loss rate per unit accumulated dose, (e/A^2)^-1.
    counts_sr : float, optional
        Integrated counts of an A column per frame; by default the dose times the
        cell area (A^2) times :data:`HAADF_FRACTION`. B (Ti + O) columns scale by
        the Z^1.7 rule.
    rng : numpy Generator or seed
    **options
        Further keywords of :func:`series_truth`: ``a_pm`` (390.5), ``polar_pm`` (10.0,
        the B displacement each side of the wall), ``wall_start_cells`` (-3.0, from
        site i = 0), ``frame_time_s`` (1.0), ``sigma_pm`` (60.0), ``background`` (20.0/px).

    Returns
    -------
    frames : ndarray of float, shape (n_frames, rows, cols)
        Poisson counts.
    truth : dict
        Per frame (shape (n,)): ``time_s``, ``temperature_K``, ``dose_e_per_A2``
        (accumulated at the end of the frame), ``dose_before_e_per_A2``, ``a_pm``,
        the transform from reference to frame coordinates (:func:`frame_transform`:
        ``shift_px`` (n, 2), ``rotation_deg``, ``scale``, ``shear``, ``stretch``,
        ``curvature``), the wall (``wall_cells``: position in cells from A site
        i = 0; ``wall_x_ref_px``: its x in reference coordinates; ``wall_x_px``: its
        x in the frame at the centre row). Per column (m of them, every column that
        comes within five widths of some frame): ``site``, ``i``, ``j`` (reference
        lattice indices; the cell's lower corner for B); per frame and column,
        shape (n, m): ``x``, ``y`` (px in the frame), ``x_ref``, ``y_ref`` (px in
        reference coordinates: where registration should put it), ``polar_pm``
        (the B displacement along +y), ``present`` (not lost to the beam),
        ``in_field`` (centre on the area the pixels cover). Scalars: ``shape``, ``a0_pm``,
        ``a0_px``, ``sigma_px``, ``counts_sr``, ``polar_amplitude_pm``, ``centre_px``...

    Raises
    ------
    ValueError
        Fewer than two frames.
    """
    if n_frames < 2:
        raise ValueError(f"a series needs at least two frames, not {n_frames}")
    truth = series_truth(n_frames, shape, pixel_size_pm=pixel_size_pm, drift_px_per_frame=drift_px_per_frame,
                         rotation_jitter_deg=rotation_jitter_deg, scan_drift=scan_drift,
                         wall_speed_cells_per_frame=wall_speed_cells_per_frame, temperature_K=temperature_K,
                         expansion_pm_per_K=expansion_pm_per_K, counts_sr=counts_sr, rng=rng,
                         dose_per_frame_e_per_A2=dose_per_frame_e_per_A2, loss_per_dose=loss_per_dose,
                         **options)
    return np.stack(list(iter_frames(truth))), truth


def write_series(outdir, *, n_frames: int = 12, size: int = 256, seed: int = 20261202,
                 pixel_size_pm: float = 20.0, name: str = "series") -> dict:
    """Write a simulated series: a TIFF stack, its frames' metadata (CSV) and its truth.

    ``<name>.tif`` (the frames, 16-bit counts, pixel size in its resolution tags),
    ``<name>.frames.csv`` (``frame, time_s, temperature_K, dose_e_per_A2``: the
    per-frame metadata a series carries or a user configures) and
    ``<name>.truth.json`` (per frame the shift, wall position and lattice
    parameter; the wall speed). Each file appears whole (atomic writes).

    Returns
    -------
    dict
        The paths written (``tif``, ``frames_csv``, ``truth``).
    """
    import json
    from pathlib import Path

    import tifffile

    from latticegenome.core.fsutil import atomic_path, atomic_write
    from latticegenome.core.tables import write_table_csv

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    truth = series_truth(n_frames, (size, size), pixel_size_pm=pixel_size_pm,
                         rng=np.random.default_rng(seed))
    stack = np.stack([np.clip(f, 0, 65535) for f in iter_frames(truth)]).astype(np.uint16)
    paths = {"tif": out / f"{name}.tif", "frames_csv": out / f"{name}.frames.csv",
             "truth": out / f"{name}.truth.json"}
    with atomic_path(paths["tif"]) as tmp:
        tifffile.imwrite(tmp, stack, imagej=True, resolution=(1000 / pixel_size_pm,) * 2,
                         metadata={"unit": "nm", "axes": "TYX"})
    write_table_csv(paths["frames_csv"], {"frame": list(range(n_frames)),
                                          **{k: list(truth[k]) for k in META_KEYS}})
    record = {k: np.asarray(truth[k]).tolist() for k in (*META_KEYS, "a_pm", "shift_px",
                                                          "wall_cells", "wall_x_px")}
    record["wall_speed_cells_per_frame"] = float(np.mean(np.diff(truth["wall_cells"])))
    with atomic_write(paths["truth"], "w") as fh:
        json.dump(record, fh, indent=1)
    return paths


#: The per-frame metadata of a series (``<name>.frames.csv``).
META_KEYS = ("time_s", "temperature_K", "dose_e_per_A2")
