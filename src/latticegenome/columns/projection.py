"""Projected atom columns of a crystal along a zone axis: the motif the finder looks for.

A STEM image shows a crystal in projection: every atom column along the zone
axis is one spot, its brightness growing with the atomic numbers in it (HAADF:
roughly Z^1.7 per atom). :func:`project_structure` computes, from a pymatgen
``Structure`` and a zone axis [u, v, w], the 2-D lattice of the projection and
every column in its cell: position (fractions of the 2-D cell vectors),
content per repeat along the beam, expected HAADF brightness.
:func:`perovskite_projection` does it for the ideal cubic perovskite ABO3 of a
material and labels the columns: ``A`` (holds the A cation), ``B`` (holds the
B cation) and ``O`` (oxygen only).

For the two projections the finder knows (lengths for a = 390.5 pm, SrTiO3):

======  =====================  ==============================================
axis    A cell (a1 x a2)       columns (fractions of a1, a2)
======  =====================  ==============================================
[001]   a x a (390 x 390 pm)   A (0, 0); B-O (1/2, 1/2); O (1/2, 0), (0, 1/2)
[110]   a/sqrt2 x a (276x390)  A-O (0, 0); B (0, 1/2); O (1/2, 1/2)
======  =====================  ==============================================

In [110] the B columns sit half-way between A columns along [001] (a2), not
at the centres of the A cells (those hold the pure O columns).

Conventions: ``a1`` is the shorter cell vector; lengths in pm; fractions are
of ``a1`` and ``a2``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from latticegenome.core.settings import zone_axis_family

#: Exponent of the HAADF Z-contrast (column brightness ~ sum of Z^HAADF_EXPONENT).
HAADF_EXPONENT = 1.7


@dataclass(frozen=True)
class Column:
    """One projected column of the 2-D cell.

    Attributes
    ----------
    site : str
        ``"A"``, ``"B"`` or ``"O"`` (:func:`perovskite_projection`), or the
        species for a general structure.
    species : str
        Content per repeat along the beam, heaviest first (``"SrO"``, ``"Ti"``, ``"O2"``).
    frac : (float, float)
        Position in fractions of the cell vectors a1, a2, in [0, 1).
    brightness : float
        Expected HAADF brightness: sum of Z^1.7 of the atoms per repeat,
        divided by the repeat length in Å (comparable between columns of one
        projection).
    """

    site: str
    species: str
    frac: tuple[float, float]
    brightness: float


@dataclass(frozen=True)
class Projection:
    """A crystal seen along a zone axis.

    Attributes
    ----------
    zone_axis : (int, int, int)
    family : str
        ``"001"`` or ``"110"`` for a perovskite.
    cell_pm : (float, float)
        Lengths of the 2-D cell vectors a1 <= a2 in pm.
    angle_deg : float
        Angle between a1 and a2.
    columns : tuple of Column
        The columns of one cell, the brightest A column first at (0, 0).
    pseudocubic : (float, float)
        Factors from the lengths along a1, a2 to pseudo-cubic lattice
        parameters (1, 1 for [001]; sqrt 2, 1 for [110]).
    """

    zone_axis: tuple[int, int, int]
    family: str
    cell_pm: tuple[float, float]
    angle_deg: float
    columns: tuple[Column, ...]
    pseudocubic: tuple[float, float]

    @property
    def ratio(self) -> float:
        """|a2| / |a1| of the A cell (1 for [001], sqrt 2 for [110])."""
        return self.cell_pm[1] / self.cell_pm[0]

    def of_site(self, site: str) -> list[Column]:
        """The columns labelled ``site``."""
        return [c for c in self.columns if c.site == site]

    def contrast(self) -> float:
        """Expected HAADF brightness of the A column over the (brightest) B column."""
        return self.of_site("A")[0].brightness / max(c.brightness for c in self.of_site("B"))

    def describe(self) -> str:
        """One line: ``[110]: A cell 276 x 390 pm; A SrO (0, 0), B Ti (0, 1/2), ...``."""
        cols = ", ".join(f"{c.site} {c.species} ({_frac_text(c.frac[0])}, {_frac_text(c.frac[1])})"
                         for c in self.columns)
        return (f"[{''.join(str(v) for v in self.zone_axis)}]: A cell "
                f"{self.cell_pm[0]:.0f} x {self.cell_pm[1]:.0f} pm; {cols}")

    def as_record(self) -> dict:
        """JSON-able description (for column files and provenance)."""
        return {"zone_axis": list(self.zone_axis), "family": self.family,
                "cell_pm": list(self.cell_pm), "pseudocubic": list(self.pseudocubic),
                "columns": [{"site": c.site, "species": c.species, "frac": list(c.frac),
                             "brightness": round(c.brightness, 3)} for c in self.columns]}


def _frac_text(f: float) -> str:
    return {0.0: "0", 0.5: "1/2"}.get(round(f, 3), f"{f:.3f}")


def _unimodular_with(axis: np.ndarray) -> np.ndarray:
    """An integer 3x3 matrix of determinant +1 whose first row is ``axis`` (primitive)."""
    rng = range(-2, 3)
    for p in itertools.product(rng, repeat=3):
        for q in itertools.product(rng, repeat=3):
            m = np.array([axis, p, q])
            if round(np.linalg.det(m)) == 1:
                return m
    raise ValueError(f"no lattice basis contains the zone axis {axis.tolist()}")  # pragma: no cover


def _gauss_reduce(v1: np.ndarray, v2: np.ndarray) -> np.ndarray:
    """Lagrange-Gauss reduction of a 2-D basis; returns an integer matrix T with
    T @ [v1, v2] reduced (shorter vector first)."""
    t = np.eye(2, dtype=int)
    b = np.array([v1, v2], float)
    for _ in range(100):
        if b[1] @ b[1] < b[0] @ b[0]:
            b, t = b[::-1].copy(), t[::-1].copy()
        mu = int(np.rint((b[0] @ b[1]) / (b[0] @ b[0])))
        if mu == 0:
            break
        b[1] -= mu * b[0]
        t[1] -= mu * t[0]
    return t


def _species_text(counts: dict[str, int]) -> str:
    from pymatgen.core import Element

    order = sorted(counts, key=lambda el: -Element(el).Z)
    return "".join(el + (str(counts[el]) if counts[el] > 1 else "") for el in order)


def project_structure(structure, zone_axis, *, tol_A: float = 0.05):
    """The 2-D lattice and the atom columns of ``structure`` seen along ``zone_axis``.

    Parameters
    ----------
    structure : pymatgen.core.Structure
    zone_axis : sequence of 3 int
        Direction [u, v, w] in the structure's lattice vectors.
    tol_A : float
        Atoms whose projections are closer than this (Å) share a column.

    Returns
    -------
    basis_A : ndarray, shape (2, 2)
        Reduced 2-D cell vectors (a1 shorter) in Å, in an orthonormal frame
        of the projection plane.
    columns : list of (frac, counts, repeat_A)
        Fractional position (of a1, a2), the atoms per repeat by element, and
        the repeat length along the beam in Å.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> sto = Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
    ...                 [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])
    >>> basis, cols = project_structure(sto, [1, 1, 0])
    >>> np.round(np.hypot(*basis.T), 3).tolist()
    [2.761, 3.905]
    """
    axis = np.array(zone_axis, dtype=int)
    axis = axis // np.gcd.reduce(axis)
    m = _unimodular_with(axis)
    lat = structure.lattice.matrix  # rows: a, b, c in Å
    rows = m @ lat  # t, p, q
    t = rows[0] / np.linalg.norm(rows[0])
    e1 = rows[1] - (rows[1] @ t) * t
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(t, e1)
    proj = lambda v: np.array([v @ e1, v @ e2])  # noqa: E731
    p1, p2 = proj(rows[1]), proj(rows[2])
    red = _gauss_reduce(p1, p2)
    basis = red @ np.array([p1, p2])
    inv = np.linalg.inv(basis.T)
    groups: list[tuple[np.ndarray, dict]] = []
    for site in structure:
        f = (inv @ proj(site.coords)) % 1.0
        for pos, counts in groups:
            d = (f - pos + 0.5) % 1.0 - 0.5
            if np.hypot(*(basis.T @ d)) < tol_A:
                counts[site.specie.symbol] = counts.get(site.specie.symbol, 0) + 1
                break
        else:
            groups.append((f, {site.specie.symbol: 1}))
    repeat = float(np.linalg.norm(rows[0]))
    return basis, [(pos, counts, repeat) for pos, counts in groups]


def _cubic_perovskite(a: str, b: str, a_pm: float):
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(a_pm / 100.0), [a, b, "O", "O", "O"],
                     [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])


@lru_cache(maxsize=64)
def perovskite_projection(zone_axis: tuple[int, int, int] = (0, 0, 1), a_species: str = "Sr",
                          b_species: str = "Ti", a_pm: float = 390.5) -> Projection:
    """The projected columns of the cubic perovskite ``A B O3`` along ``zone_axis``.

    Parameters
    ----------
    zone_axis : (int, int, int)
        Of the <001> or <110> family.
    a_species, b_species : str
        The A and B cations (element symbols).
    a_pm : float
        Cubic lattice parameter in pm.

    Returns
    -------
    Projection
        A at (0, 0); columns labelled A / B / O; for [110] the B column at (0, 1/2).

    Raises
    ------
    ValueError
        For another zone axis family, or unknown elements.

    Examples
    --------
    >>> p = perovskite_projection((1, 1, 0))
    >>> [(c.site, c.species, c.frac) for c in p.columns]
    [('A', 'SrO', (0.0, 0.0)), ('B', 'Ti', (0.0, 0.5)), ('O', 'O2', (0.5, 0.5))]
    >>> round(p.ratio, 3), round(p.pseudocubic[0], 6)
    (1.414, 1.414214)
    """
    family = zone_axis_family(zone_axis)
    basis, cols = project_structure(_cubic_perovskite(a_species, b_species, a_pm), zone_axis)
    from pymatgen.core import Element

    def site_of(counts):
        return "A" if a_species in counts else "B" if b_species in counts else "O"

    a_cols = [c for c in cols if site_of(c[1]) == "A"]
    if len(a_cols) != 1:  # pragma: no cover - cubic perovskites have one per cell
        raise ValueError(f"{len(a_cols)} A columns per projected cell: not supported")
    origin = a_cols[0][0]
    lengths = np.hypot(*basis.T)
    out = []
    for pos, counts, repeat in cols:
        frac = tuple(float(round(v, 6)) % 1.0 for v in (pos - origin) % 1.0)
        z = sum(n * Element(el).Z ** HAADF_EXPONENT for el, n in counts.items())
        out.append(Column(site_of(counts), _species_text(counts), frac, z / repeat))
    out.sort(key=lambda c: ("ABO".index(c.site), c.frac))
    cos = basis[0] @ basis[1] / (lengths[0] * lengths[1])
    return Projection(
        zone_axis=tuple(int(v) for v in zone_axis), family=family,
        cell_pm=(float(lengths[0] * 100), float(lengths[1] * 100)),
        angle_deg=float(np.degrees(np.arccos(abs(cos)))), columns=tuple(out),
        pseudocubic=(float(a_pm / (lengths[0] * 100)), float(a_pm / (lengths[1] * 100))))


def projection_for(zone_axis, cations=None, a_pm: float = 390.5) -> Projection:
    """The projection of the first material (``cations = [[A, B], ...]``; default SrTiO3)."""
    a, b = (cations[0] if cations else ("Sr", "Ti"))
    return perovskite_projection(tuple(int(v) for v in zone_axis), a, b, float(a_pm))


def expected_contrast(zone_axis, cations) -> tuple[float, float]:
    """Lowest and highest expected HAADF A/B brightness ratio over the materials."""
    ratios = [perovskite_projection(tuple(int(v) for v in zone_axis), a, b).contrast()
              for a, b in (cations or [("Sr", "Ti")])]
    return min(ratios), max(ratios)
