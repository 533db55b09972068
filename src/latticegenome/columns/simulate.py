"""Synthetic HAADF-STEM images of perovskites with known truth.

Two generators share the column model of :mod:`latticegenome.columns.model`:

- :func:`simulate_lattice` — one ABO3 lattice at any rotation, for
  precision and speed benchmarks;
- :func:`simulate_superlattice` — an epitaxial superlattice of two ABO3
  materials stacked along the image y axis (coherent in-plane, each with its
  own out-of-plane parameter and A-site brightness, an optional polar B-site
  displacement, vacancies, small rotation and linear scan drift). This is the
  embedded demo experiment.

Lengths are picometres (pm) where physical, pixels (px) where on the image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latticegenome.columns.geometry import in_frame
from latticegenome.columns.model import amplitude_for_counts, render_columns

#: Column brightness in HAADF grows roughly as Z^1.7.
Z = {"O": 8, "Ti": 22, "Sr": 38, "Ba": 56, "Pb": 82, "La": 57, "Mn": 25, "Ca": 20}


def column_brightness(species: str, oxygen: int = 0) -> float:
    """Relative HAADF brightness of a column (Z^1.7 rule), with O atoms."""
    return Z[species] ** 1.7 + oxygen * Z["O"] ** 1.7


@dataclass
class Truth:
    """Ground truth of a simulated image: one entry per lattice site.

    ``present`` is False for vacancies (no column rendered). Positions in px.
    """

    x: np.ndarray
    y: np.ndarray
    site: np.ndarray
    i: np.ndarray
    j: np.ndarray
    amplitude: np.ndarray
    sigma: float
    background: float
    present: np.ndarray
    layer: np.ndarray | None = None
    species: np.ndarray | None = None

    def to_json(self) -> dict:
        out = {
            "x": self.x.tolist(), "y": self.y.tolist(), "site": self.site.tolist(),
            "i": self.i.tolist(), "j": self.j.tolist(),
            "amplitude": self.amplitude.tolist(), "present": self.present.tolist(),
            "sigma_px": self.sigma, "background": self.background,
        }
        if self.layer is not None:
            out["layer"] = self.layer.tolist()
        if self.species is not None:
            out["species"] = self.species.tolist()
        return out


def square_lattice_sites(shape, spacing_px, angle_deg, offset_px, b_displacement_px=(0.0, 0.0)):
    """A and B sites of a rotated square lattice covering an image, in pixels.

    Site (0, 0) is at the image centre plus ``offset_px``; B sits at each cell
    centre plus ``b_displacement_px`` (in the lattice frame). Enough sites are
    made to cover the image at any rotation.

    Returns
    -------
    pa, pb : ndarray, shape (m, 2)
        (x, y) of A and of B (of cell ``ij``: the cell whose lower corner is that A).
    ij : ndarray of int, shape (m, 2)
    """
    rows, cols = shape
    th = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    a1 = rot @ np.array([spacing_px, 0.0])
    a2 = rot @ np.array([0.0, spacing_px])
    n = int(np.ceil(np.hypot(rows, cols) / spacing_px)) + 2
    ii, jj = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    centre = np.array([(cols - 1) / 2, (rows - 1) / 2])
    pa = centre + np.asarray(offset_px, float) + np.outer(ii, a1) + np.outer(jj, a2)
    pb = pa + (a1 + a2) / 2 + rot @ np.asarray(b_displacement_px, float)
    return pa, pb, np.column_stack([ii, jj])


def jitter(points: np.ndarray, radius_px: float, rng: np.random.Generator) -> np.ndarray:
    """Each point moved by its own random offset, uniform in a disk of ``radius_px``."""
    r = radius_px * np.sqrt(rng.uniform(0, 1, len(points)))
    phi = rng.uniform(0, 2 * np.pi, len(points))
    return points + np.column_stack([r * np.cos(phi), r * np.sin(phi)])


def simulate_lattice(
    shape: tuple[int, int] = (512, 512),
    *,
    spacing_px: float = 20.0,
    angle_deg: float = 0.0,
    sigma_px: float = 3.0,
    counts_a: float = 5655.0,
    b_ratio: float = 0.4,
    background: float = 20.0,
    b_displacement_px: tuple[float, float] = (0.0, 0.0),
    b_jitter_px: float = 0.0,
    offset_px: tuple[float, float] | None = None,
    rng: np.random.Generator | None = None,
    noise: bool = True,
):
    """A square ABO3 lattice (A at corners, B at cell centres).

    Sites from :func:`square_lattice_sites`; those up to five widths outside
    the image are rendered (their tails shine in).

    Parameters
    ----------
    shape : (rows, cols)
    spacing_px : float
        A-A distance in pixels.
    angle_deg : float
        In-plane rotation of the lattice.
    sigma_px : float
        Gaussian width of every column.
    counts_a : float
        Integrated counts N of an A column; B columns have ``b_ratio`` times
        the A peak height.
    background : float
        Counts per pixel.
    b_displacement_px : (dx, dy)
        Displacement of every B column from its cell centre, in the lattice
        frame (rotated with the lattice).
    b_jitter_px : float
        Each B column is also moved by its own random offset, uniform in a
        disk of this radius (:func:`jitter`; so that no method profits from a
        B column sitting exactly where it starts looking).
    offset_px : (x, y), optional
        Position of site (0, 0) from the image centre; random by default.
    rng : numpy Generator
    noise : bool
        Draw Poisson counts (else return the expected image).

    Returns
    -------
    image : ndarray
    truth : Truth
    """
    rng = np.random.default_rng(rng)
    if offset_px is None:
        offset_px = rng.uniform(0, spacing_px, 2)
    pa, pb, ij = square_lattice_sites(shape, spacing_px, angle_deg, offset_px, b_displacement_px)
    if b_jitter_px > 0:
        pb = jitter(pb, b_jitter_px, rng)
    pos = np.vstack([pa, pb])
    site = np.r_[np.full(len(pa), "A"), np.full(len(pb), "B")]
    inside = in_frame(pos[:, 0], pos[:, 1], shape, 5 * sigma_px, strict=True)
    pos, site = pos[inside], site[inside]
    ij = np.vstack([ij] * 2)[inside]
    h_a = amplitude_for_counts(counts_a, sigma_px)
    amp = np.where(site == "A", h_a, b_ratio * h_a)
    lam = render_columns(shape, pos[:, 0], pos[:, 1], amp, sigma_px, background)
    image = rng.poisson(lam).astype(float) if noise else lam
    truth = Truth(
        x=pos[:, 0], y=pos[:, 1], site=site, i=ij[:, 0], j=ij[:, 1], amplitude=amp,
        sigma=float(sigma_px), background=float(background),
        present=np.ones(len(site), dtype=bool),
    )
    return image, truth


def projected_sites(shape, projection, a_px: float, angle_deg: float, offset_px):
    """Every column of a projection covering an image, in pixels.

    Parameters
    ----------
    shape : (rows, cols)
    projection : :class:`~latticegenome.columns.projection.Projection`
    a_px : float
        Pseudo-cubic lattice parameter in pixels (the A cell is
        ``projection.cell_pm`` scaled to it).
    angle_deg : float
        Rotation of a1 from the image x axis.
    offset_px : (x, y)
        Position of A site (0, 0) from the image centre.

    Returns
    -------
    pos : ndarray, shape (m, 2)
    site, species : ndarray of str
    ij : ndarray of int, shape (m, 2)
        A lattice indices (of the cell's lower corner for B and O).
    """
    rows, cols = shape
    scale = a_px / (projection.cell_pm[0] * projection.pseudocubic[0])
    l1, l2 = (length * scale for length in projection.cell_pm)
    th = np.deg2rad(angle_deg)
    a1 = l1 * np.array([np.cos(th), np.sin(th)])
    a2 = l2 * np.array([-np.sin(th), np.cos(th)])
    n = int(np.ceil(np.hypot(rows, cols) / min(l1, l2))) + 2
    ii, jj = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    ij = np.column_stack([ii.ravel(), jj.ravel()])
    centre = np.array([(cols - 1) / 2, (rows - 1) / 2]) + np.asarray(offset_px, float)
    parts = []
    for col in projection.columns:
        f = ij + np.asarray(col.frac)
        pos = centre + np.outer(f[:, 0], a1) + np.outer(f[:, 1], a2)
        parts.append((pos, np.full(len(ij), col.site), np.full(len(ij), col.species), ij))
    return (np.vstack([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]), np.vstack([p[3] for p in parts]))


def simulate_projected(
    shape: tuple[int, int] = (256, 256),
    *,
    zone_axis=(1, 1, 0),
    contrast: str = "haadf",
    a_px: float = 28.0,
    angle_deg: float = 3.0,
    sigma_px: float = 2.5,
    counts_a: float = 5655.0,
    background: float = 20.0,
    abf_exponent: float = 0.6,
    b_displacement_px: tuple[float, float] = (0.0, 0.0),
    rng: np.random.Generator | None = None,
    noise: bool = True,
):
    """A SrTiO3 image in any known projection, HAADF or ABF, with its truth.

    Column heights follow the projection's content: HAADF sum of Z^1.7
    (relative to the A column, which holds ``counts_a``), ABF the A dip
    times (brightness ratio)^(``abf_exponent`` / 1.7), a rough rule that
    keeps O columns visible as in real ABF. ABF images are dips of those
    depths on ``background`` (which must then exceed the A dip). Every B
    column is moved by ``b_displacement_px`` (image axes).

    Returns
    -------
    image : ndarray
    truth : Truth
        Every column within five widths of the image, with ``species``.
    """
    from latticegenome.columns.projection import perovskite_projection

    rng = np.random.default_rng(rng)
    proj = perovskite_projection(tuple(zone_axis))
    pos, site, species, ij = projected_sites(shape, proj, a_px, angle_deg,
                                             rng.uniform(0, a_px / 2, 2))
    inside = in_frame(pos[:, 0], pos[:, 1], shape, 5 * sigma_px, strict=True)
    pos, site, species, ij = pos[inside], site[inside], species[inside], ij[inside]
    pos[site == "B"] += np.asarray(b_displacement_px, float)
    bright = {c.species: c.brightness for c in proj.columns}
    rel = np.array([bright[sp] for sp in species]) / proj.of_site("A")[0].brightness
    h_a = amplitude_for_counts(counts_a, sigma_px)
    if contrast == "abf":
        amp = h_a * rel ** (abf_exponent / 1.7)
        lam = 2 * background - render_columns(shape, pos[:, 0], pos[:, 1], amp, sigma_px, background)
    else:
        amp = h_a * rel
        lam = render_columns(shape, pos[:, 0], pos[:, 1], amp, sigma_px, background)
    image = rng.poisson(np.maximum(lam, 0)).astype(float) if noise else lam
    truth = Truth(x=pos[:, 0], y=pos[:, 1], site=site, i=ij[:, 0], j=ij[:, 1], amplitude=amp,
                  sigma=float(sigma_px), background=float(background),
                  present=np.ones(len(site), dtype=bool), species=species)
    return image, truth


#: The demo superlattice: SrTiO3 substrate layers and strained BaTiO3.
DEMO_MATERIALS = [
    {"name": "SrTiO3", "formula": "SrTiO3", "A": "Sr", "B": "Ti", "a_pm": 390.5,
     "c_pm": 390.5, "polar_pm": 0.0},
    {"name": "BaTiO3", "formula": "BaTiO3", "A": "Ba", "B": "Ti", "a_pm": 399.2,
     "c_pm": 412.0, "polar_pm": 12.0},
]


def layer_stack(n_cells: int, layer_cells: tuple[int, int], phase: int, c_px: np.ndarray):
    """Unit-cell rows of a two-material stack along y, centred on y = 0.

    Parameters
    ----------
    n_cells : int
        Number of unit-cell rows (j from ``-n_cells // 2``).
    layer_cells : (int, int)
        Cells per layer of each material; the period is their sum.
    phase : int
        Shift of the layer sequence, in cells.
    c_px : ndarray, shape (2,)
        Out-of-plane parameter of each material, in pixels.

    Returns
    -------
    j_cells : ndarray of int
        Index of each cell row.
    mat_of_cell : ndarray of int
        Material (0 or 1) of each cell row.
    plane_y : ndarray
        y (px) of each A plane (one more than cells: the last closes the
        stack); plane k sits below cell k and takes its A species.

    Examples
    --------
    >>> j, mat, y = layer_stack(4, (1, 1), 0, np.array([2.0, 3.0]))
    >>> j.tolist(), mat.tolist(), y.tolist()
    ([-2, -1, 0, 1], [0, 1, 0, 1], [-5.0, -3.0, 0.0, 2.0, 5.0])
    """
    period = sum(layer_cells)
    j_cells = np.arange(-n_cells // 2, n_cells // 2)
    mat_of_cell = np.array([0 if ((j + phase) % period) < layer_cells[0] else 1 for j in j_cells])
    plane_y = np.concatenate([[0.0], np.cumsum(c_px[mat_of_cell])])
    plane_y -= plane_y[len(plane_y) // 2]
    return j_cells, mat_of_cell, plane_y


def superlattice_sites(j_cells, mat_of_cell, plane_y, i_cells, a_px: float, off, polar_px):
    """A and B sites of a layer stack in the lattice frame (before rotation), in pixels.

    A at ``(i a_px, plane_y[k]) + off``; B at each cell centre, displaced by
    its material's ``polar_px`` along +y.

    Returns
    -------
    x, y : ndarray
    site : ndarray of str ("A" or "B")
    mat : ndarray of int
        Material of the A plane (A) or of the cell (B).
    i, j : ndarray of int
        Lattice indices (of the cell's lower corner for B).
    """
    plane_mat = np.r_[mat_of_cell, mat_of_cell[-1]]
    plane_j = np.r_[j_cells, j_cells[-1] + 1]
    ax = (i_cells[None, :] * a_px + off[0]) * np.ones((len(plane_y), 1))
    ay = (plane_y[:, None] + off[1]) * np.ones((1, len(i_cells)))
    a_mat = np.repeat(plane_mat[:, None], len(i_cells), axis=1)
    a_i = np.repeat(i_cells[None, :], len(plane_y), axis=0)
    a_j = np.repeat(plane_j[:, None], len(i_cells), axis=1)
    # B at cell centres (+ polar displacement along +y in the lattice frame).
    bx = (ax[:-1, :-1] + ax[:-1, 1:]) / 2
    by = (ay[:-1, :-1] + ay[1:, :-1]) / 2
    b_mat = np.repeat(mat_of_cell[:, None], len(i_cells) - 1, axis=1)
    by = by + polar_px[b_mat]
    b_i, b_j = a_i[:-1, :-1], a_j[:-1, :-1]
    return (np.r_[ax.ravel(), bx.ravel()], np.r_[ay.ravel(), by.ravel()],
            np.r_[np.full(ax.size, "A"), np.full(bx.size, "B")], np.r_[a_mat.ravel(), b_mat.ravel()],
            np.r_[a_i.ravel(), b_i.ravel()], np.r_[a_j.ravel(), b_j.ravel()])


def rotate_and_drift(x, y, shape, angle_deg: float, drift_px_per_row=(0.0, 0.0)):
    """Lattice-frame positions (relative to the image centre) on the image, in px.

    Rotated by ``angle_deg`` about the image centre, then each row shifted by
    ``drift_px_per_row`` (x, y) times its row index (linear scan drift).

    Examples
    --------
    >>> rotate_and_drift(np.array([1.0]), np.array([0.0]), (5, 5), 90.0)
    (array([2.]), array([3.]))
    """
    rows, cols = shape
    th = np.deg2rad(angle_deg)
    c, s = np.cos(th), np.sin(th)
    xr = c * x - s * y + (cols - 1) / 2
    yr = s * x + c * y + (rows - 1) / 2
    xr = xr + drift_px_per_row[0] * yr
    yr = yr + drift_px_per_row[1] * yr
    return xr, yr


def site_brightness(site, mat, materials) -> np.ndarray:
    """Brightness of each column relative to a Sr column (Z^1.7 rule; B columns with one O)."""
    ref = column_brightness("Sr")
    return np.array([
        column_brightness(materials[m]["A"]) if st == "A" else column_brightness(materials[m]["B"], 1)
        for st, m in zip(site, mat)
    ]) / ref


def place_vacancies(interior, site, vacancies, rng) -> np.ndarray:
    """Which sites hold a column: ``vacancies`` (A, B) random ``interior`` sites do not."""
    present = np.ones(len(site), dtype=bool)
    for st, count in (("A", vacancies[0]), ("B", vacancies[1])):
        cand = np.flatnonzero(interior & (site == st))
        if count and cand.size:
            present[rng.choice(cand, size=min(count, cand.size), replace=False)] = False
    return present


def simulate_superlattice(
    shape: tuple[int, int] = (512, 512),
    *,
    pixel_size_pm: float = 20.0,
    materials: list[dict] | None = None,
    layer_cells: tuple[int, int] = (5, 5),
    sigma_pm: float = 60.0,
    counts_sr: float = 6000.0,
    background: float = 20.0,
    angle_deg: float = 0.0,
    drift_px_per_row: tuple[float, float] = (0.0, 0.0),
    vacancies: tuple[int, int] = (3, 2),
    rng: np.random.Generator | None = None,
    probe_tail: tuple[float, float, tuple[float, float]] | None = None,
):
    """An epitaxial ABO3/A'B'O3 superlattice stacked along y.

    Every layer takes the in-plane parameter of the first material
    (coherent epitaxy) and its own out-of-plane parameter ``c_pm``
    (:func:`layer_stack`, :func:`superlattice_sites`). A-site columns of each
    material have brightness by the Z^1.7 rule relative to Sr (``counts_sr``
    integrated counts); B columns (B + O) likewise. The B column of a polar
    material is displaced by ``polar_pm`` along +y.

    Parameters
    ----------
    shape : (rows, cols)
    pixel_size_pm : float
    materials : list of dict
        Each with ``A``, ``B``, ``c_pm``, ``polar_pm`` (see
        :data:`DEMO_MATERIALS`). The first sets the in-plane parameter.
    layer_cells : (int, int)
        Unit cells per layer of each material (the period is their sum).
    sigma_pm, counts_sr, background : float
        Column width; integrated counts of a Sr column (other columns scale by
        Z^1.7); counts per pixel.
    angle_deg : float
        In-plane rotation about the image centre.
    drift_px_per_row : (float, float)
        Linear scan drift: each row is shifted by this (x, y) times its row
        index (:func:`rotate_and_drift`).
    vacancies : (int, int)
        Number of missing A and B columns inside the image.
    rng : numpy Generator
    probe_tail : (fraction, sigma_px, (dx_px, dy_px)), optional
        A coma-like probe tail (:func:`add_probe_tail`): the noise-free columns
        become ``(1 - fraction)`` of themselves plus ``fraction`` of themselves
        blurred by a Gaussian of ``sigma_px`` and shifted by ``(dx_px, dy_px)``,
        before the Poisson noise. Off by default (the image is then unchanged).

    Returns
    -------
    image : ndarray of float (Poisson counts)
    truth : Truth
        ``layer`` is the material index of each site (of the cell for B).
    meta : dict
        Material and layer description, interfaces (A-plane indices), period;
        ``probe_tail`` (its fraction, sigma_px and shift_px) when one was added.
    """
    rng = np.random.default_rng(rng)
    materials = materials or DEMO_MATERIALS
    a_px = materials[0]["a_pm"] / pixel_size_pm
    sigma_px = sigma_pm / pixel_size_pm
    # Cells from well above to well below, and left to right of, the image.
    n_rows, n_cols = (int(np.ceil(n * 1.6 / a_px)) + 4 for n in shape)
    phase = int(rng.integers(0, sum(layer_cells)))
    c_px = np.array([m["c_pm"] for m in materials[:2]]) / pixel_size_pm
    j_cells, mat_of_cell, plane_y = layer_stack(n_rows, layer_cells, phase, c_px)
    i_cells = np.arange(-n_cols // 2, n_cols // 2 + 1)
    polar = np.array([materials[m]["polar_pm"] for m in range(len(materials))]) / pixel_size_pm
    x, y, site, mat, ii, jj = superlattice_sites(j_cells, mat_of_cell, plane_y, i_cells, a_px,
                                                 rng.uniform(0, a_px, 2), polar)
    x, y = rotate_and_drift(x, y, shape, angle_deg, drift_px_per_row)
    inside = in_frame(x, y, shape, 5 * sigma_px, strict=True)
    x, y, site, mat, ii, jj = x[inside], y[inside], site[inside], mat[inside], ii[inside], jj[inside]
    amp = amplitude_for_counts(counts_sr, sigma_px) * site_brightness(site, mat, materials)
    present = place_vacancies(in_frame(x, y, shape, -3 * sigma_px, strict=True), site, vacancies, rng)
    if probe_tail is None:
        lam = render_columns(shape, x[present], y[present], amp[present], sigma_px, background)
    else:
        lam = add_probe_tail(shape, x[present], y[present], amp[present], sigma_px, background,
                             *probe_tail)
    image = rng.poisson(lam).astype(float)
    truth = Truth(
        x=x, y=y, site=site, i=ii, j=jj, amplitude=amp, sigma=float(sigma_px),
        background=float(background), present=present, layer=mat,
    )
    meta = _superlattice_meta(
        pixel_size_pm=pixel_size_pm, materials=materials, layer_cells=layer_cells,
        interfaces=interface_planes(j_cells, mat_of_cell), angle_deg=angle_deg,
        drift_px_per_row=drift_px_per_row, sigma_pm=sigma_pm, counts_sr=counts_sr)
    if probe_tail is not None:  # absent when off: the records of untailed images stay as they were
        meta["probe_tail"] = {"fraction": float(probe_tail[0]), "sigma_px": float(probe_tail[1]),
                              "shift_px": [float(v) for v in probe_tail[2]]}
    return image, truth, meta


def add_probe_tail(shape, x, y, amplitude, sigma_px: float, background: float,
                   fraction: float, tail_sigma_px: float, shift_px=(0.0, 0.0)) -> np.ndarray:
    """Expected counts of Gaussian columns imaged with a probe that has a tail.

    ``(1 - fraction) * C + fraction * shift(C * G) + background``, where ``C``
    are the columns (:func:`~latticegenome.columns.model.render_columns`), ``G``
    a normalised Gaussian of ``tail_sigma_px`` and the shift ``shift_px`` (x, y)
    makes the tail asymmetric (coma-like): a bright neighbour's tail then pulls
    the apparent position of a faint column. The blurred columns are rendered
    exactly (a Gaussian convolved with a Gaussian: width sqrt(s² + t²), the
    same integrated counts), so there are no edge effects; counts are conserved.

    Examples
    --------
    >>> lam = add_probe_tail((81, 81), np.array([40.0]), np.array([40.0]), np.array([100.0]),
    ...                      2.0, 0.0, 0.2, 4.0, (3.0, 0.0))
    >>> bool(abs(lam.sum() - 2 * np.pi * 4 * 100) < 1e-3 * lam.sum())  # counts conserved
    True
    >>> bool(lam[40, 43] > lam[40, 37])  # the tail lies towards +x
    True
    """
    if not 0.0 <= fraction <= 1.0 or tail_sigma_px <= 0:
        raise ValueError(f"probe tail fraction {fraction} (0 to 1), sigma {tail_sigma_px} px (> 0)")
    core = render_columns(shape, x, y, amplitude, sigma_px)
    wide = float(np.hypot(sigma_px, tail_sigma_px))
    dx, dy = (float(v) for v in shift_px)
    tail = render_columns(shape, np.asarray(x, float) + dx, np.asarray(y, float) + dy,
                          np.asarray(amplitude, float) * (sigma_px / wide) ** 2, wide)
    return (1.0 - fraction) * core + fraction * tail + background


def interface_planes(j_cells: np.ndarray, mat_of_cell: np.ndarray) -> list[int]:
    """Indices j of the A planes between two cells of different materials.

    Examples
    --------
    >>> interface_planes(np.arange(-2, 3), np.array([0, 0, 1, 1, 0]))
    [0, 2]
    """
    return [int(j) for j in j_cells[1:]
            if mat_of_cell[j - j_cells[0]] != mat_of_cell[j - j_cells[0] - 1]]


def _superlattice_meta(*, pixel_size_pm, materials, layer_cells, interfaces, angle_deg,
                       drift_px_per_row, sigma_pm, counts_sr) -> dict:
    """The description of a simulated superlattice that goes beside its truth."""
    return {
        "pixel_size_pm": pixel_size_pm,
        "materials": materials,
        "layer_cells": list(layer_cells),
        "period_cells": sum(layer_cells),
        "interface_planes_j": interfaces,
        "angle_deg": angle_deg,
        "drift_px_per_row": list(drift_px_per_row),
        "sigma_pm": sigma_pm,
        "counts_sr": counts_sr,
    }


#: The demo's probe tail: ``fraction`` of the light blurred by ``sigma_pm`` and
#: shifted by ``shift_pm`` (x, y) along the stacking axis (a coma- or
#: detector-lag-like tail of an aberration-corrected probe).
DEMO_PROBE_TAIL = {"fraction": 0.15, "sigma_pm": 60.0, "shift_pm": (0.0, 80.0)}


def demo_probe_tail(pixel_size_pm: float, fraction: float = DEMO_PROBE_TAIL["fraction"]):
    """The demo's probe tail in pixels, as :func:`simulate_superlattice` takes it.

    Parameters
    ----------
    pixel_size_pm : float
    fraction : float
        Share of the light in the tail, 0 (none) to 0.45.

    Returns
    -------
    (fraction, sigma_px, (dx_px, dy_px)) or None
        None when ``fraction`` is 0.

    Examples
    --------
    >>> demo_probe_tail(20.0)
    (0.15, 3.0, (0.0, 4.0))
    >>> demo_probe_tail(20.0, 0.0) is None
    True
    """
    if not 0.0 <= fraction <= 0.45:
        raise ValueError(f"probe tail fraction {fraction} is not within 0 to 0.45")
    if fraction == 0:
        return None
    dx, dy = (v / pixel_size_pm for v in DEMO_PROBE_TAIL["shift_pm"])
    return (float(fraction), DEMO_PROBE_TAIL["sigma_pm"] / pixel_size_pm, (dx, dy))


def write_demo_experiment(
    folder: str | Path,
    *,
    n_images: int = 12,
    size: int = 512,
    seed: int = 20261123,
    pixel_size_pm: float = 20.0,
    offset_pm: float = 6.0,
    probe_tail_fraction: float = DEMO_PROBE_TAIL["fraction"],
) -> list[Path]:
    """Write the embedded demo experiment: TIFF images with truth beside them.

    Like real images, the demo carries instrument artefacts: every B column is
    shifted by ``offset_pm`` along the stacking axis (a mistilt-like offset:
    the centrosymmetric SrTiO3 looks polar until its layers are taken as the
    displacement reference), each image has its own small rotation and
    linear scan drift, and the probe has a coma-like tail
    (:data:`DEMO_PROBE_TAIL`, :func:`add_probe_tail`) holding
    ``probe_tail_fraction`` of the light (0: none), which moves every column
    by a few picometres along the stacking axis, more next to bright
    columns (``analysis.probe_tail: correct`` takes it out).

    Each image ``superlattice_NNN.tif`` carries its pixel size (ImageJ
    resolution in nm) and has ``superlattice_NNN.truth.json`` beside it.
    Files already present with the same content are left alone, so running
    it twice does nothing the second time.

    Returns
    -------
    list of Path
        The image files.
    """
    import tifffile

    from latticegenome.core.fsutil import atomic_path, atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe_tail = demo_probe_tail(pixel_size_pm, probe_tail_fraction)
    paths = []
    for k in range(n_images):
        rng = np.random.default_rng([seed, k])
        angle = float(rng.uniform(-3, 3))
        drift = (float(rng.uniform(-0.01, 0.01)), float(rng.uniform(-0.004, 0.004)))
        materials = [dict(m, polar_pm=m["polar_pm"] + offset_pm) for m in DEMO_MATERIALS]
        image, truth, meta = simulate_superlattice(
            (size, size), pixel_size_pm=pixel_size_pm, materials=materials, angle_deg=angle,
            drift_px_per_row=drift, rng=rng, probe_tail=probe_tail,
        )
        meta["instrument_offset_pm"] = offset_pm  # included in each material's polar_pm
        path = folder / f"superlattice_{k:03d}.tif"
        truth_path = path.with_suffix(".truth.json")
        paths.append(path)
        if path.exists() and truth_path.exists():
            continue
        record = {"image": path.name, "seed": [seed, k], **meta, "columns": truth.to_json()}
        with atomic_write(truth_path, "w") as fh:
            json.dump(record, fh)
        with atomic_path(path) as tmp:
            tifffile.imwrite(
                tmp, image.astype(np.uint16), imagej=True,
                resolution=(1000.0 / pixel_size_pm, 1000.0 / pixel_size_pm),
                metadata={"unit": "nm", "axes": "YX"},
            )
    return paths
