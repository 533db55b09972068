"""Does the image fit the configured projection and contrast? The finder's self-check.

Every test here answers with figures (kept in the per-image record, so images
can be sorted by them) and, where the answer is a clear no, with a
:class:`~latticegenome.core.errors.ModelMismatchError` whose reason says what
the image looks like instead (``"... looks like [110], configured [001]"``).
Nothing is labelled wrongly with success.

- :func:`contrast_polarity`: are the columns bright spots (HAADF) or dark
  dips (ABF)? The skewness of the lightly smoothed image: a few bright peaks
  on a dark background skew it positive, dips on a bright one negative.
- :func:`choose_a_lattice`: which sub-lattice of the intensity maxima is the
  A lattice of the configured projection (its shape: square for [001],
  a x a*sqrt(2) for [110]); none fits: rejected, saying which projection the
  lattice looks like.
- :func:`column_contrast`: the A columns brighter than the B columns where
  every material of the sample says so (HAADF).
- :func:`unmodelled_residual`: the residual of the fitted model, pooled over
  the cells at positions where the projection has no column (strong peaks
  there: a structure the model does not describe).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, stats

from latticegenome.columns.lattice import index_lattice, reduce_basis
from latticegenome.columns.projection import Projection
from latticegenome.core.errors import ModelMismatchError

#: Skewness below -POLARITY_LIMIT (of the image as the configured contrast
#: orients it) means the columns have the other contrast.
POLARITY_LIMIT = 0.2
#: A-cell shape tolerance: |ratio / expected - 1| and |angle - expected| (degrees);
#: wide enough for a few per cent of scan distortion.
RATIO_TOLERANCE = 0.12
ANGLE_TOLERANCE_DEG = 10.0
#: A candidate A lattice whose short spacing is further than this fraction
#: from the expected one (pixel size and lattice parameter) is not preferred.
SCALE_TOLERANCE = 0.25
#: A split of the maxima into two halves is real when the halves differ by
#: this many standard errors and this fraction.
SPLIT_SIGMAS, SPLIT_CONTRAST = 8.0, 0.05
#: Unmodelled residual peaks stronger than this fraction of the B amplitude reject.
UNMODELLED_LIMIT = 0.5


def oriented(image: np.ndarray, contrast: str) -> np.ndarray:
    """The image with its columns bright: as it is (haadf), or mirrored (abf).

    ABF columns are dips on a bright background: ``2 L - image`` with ``L``
    the 99.5th percentile, so the background stays at about its level (the
    Poisson weights of the fit stay near the true variances) and the dips
    become peaks.
    """
    img = np.asarray(image, dtype=float)
    if contrast == "abf":
        return 2.0 * float(np.percentile(img, 99.5)) - img
    if contrast != "haadf":
        raise ValueError(f"contrast {contrast!r}: haadf or abf")
    return img


def contrast_polarity(image: np.ndarray, spacing_px: float, contrast: str) -> dict:
    """Skewness of the oriented image smoothed at a tenth of the spacing.

    Raises
    ------
    ModelMismatchError
        When the columns clearly have the other contrast.
    """
    smooth = ndimage.gaussian_filter(image.astype(np.float32), max(1.0, 0.1 * spacing_px))
    skew = float(stats.skew(smooth.ravel()))
    if skew < -POLARITY_LIMIT:
        looks, other = ("dark on a bright background (ABF-like)", "haadf") if contrast == "haadf" \
            else ("bright on a dark background (HAADF-like)", "abf")
        raise ModelMismatchError(
            f"the columns look {looks}: intensity skewness {(-1 if contrast == 'abf' else 1) * skew:+.2f}; "
            f"configured contrast {other}")
    return {"polarity_skewness": round(skew, 3)}


@dataclass
class LatticeChoice:
    """A candidate A lattice: which maxima, its basis, what it looks like."""

    name: str  # "maxima" (all of them), or the split: "i", "j", "i+j"
    keep: np.ndarray  # indices into the indexed maxima
    basis: np.ndarray
    sigmas: float  # significance of the split (0 for "maxima")

    @property
    def lengths(self) -> np.ndarray:
        return np.sort(np.hypot(self.basis[:, 0], self.basis[:, 1]))

    @property
    def angle_deg(self) -> float:
        b = self.basis
        cos = abs(b[0] @ b[1]) / (np.hypot(*b[0]) * np.hypot(*b[1]))
        return float(np.degrees(np.arccos(min(1.0, cos))))

    def fits(self, projection: Projection) -> bool:
        ratio = self.lengths[1] / self.lengths[0]
        return (abs(ratio / projection.ratio - 1) <= RATIO_TOLERANCE
                and abs(self.angle_deg - projection.angle_deg) <= ANGLE_TOLERANCE_DEG)


def _splits(height: np.ndarray, ij: np.ndarray, local: np.ndarray, floor: float = 0.0):
    """The index-2 sub-lattices of the maxima whose halves differ in brightness
    (above ``floor``, the image's background level), their basis from the
    median local lattice vectors of the maxima kept."""
    rules = {"i": (ij[:, 0] % 2, lambda b1, b2: (2 * b1, b2)),
             "j": (ij[:, 1] % 2, lambda b1, b2: (b1, 2 * b2)),
             "i+j": ((ij[:, 0] + ij[:, 1]) % 2, lambda b1, b2: (b1 + b2, b1 - b2))}
    for name, (parity, make) in rules.items():
        parity = parity.astype(bool)
        if not 0.25 < parity.mean() < 0.75:
            continue
        h0, h1 = height[~parity], height[parity]
        se = np.sqrt(h0.var() / h0.size + h1.var() / h1.size) + 1e-12
        diff = abs(h0.mean() - h1.mean())
        if diff > SPLIT_SIGMAS * se and diff / max(h0.mean() - floor, h1.mean() - floor) > SPLIT_CONTRAST:
            keep = np.flatnonzero(parity == (h1.mean() > h0.mean()))
            b1, b2 = np.nanmedian(local[keep], axis=0)  # robust: one maximum's may be noisy
            yield LatticeChoice(name, keep, reduce_basis(np.array(make(b1, b2))), float(diff / se))


def looks_like(choice: LatticeChoice) -> str:
    """The projection a lattice's shape suggests, in words."""
    ratio, angle = choice.lengths[1] / choice.lengths[0], choice.angle_deg
    if abs(angle - 90) <= ANGLE_TOLERANCE_DEG:
        if abs(ratio - 1) <= RATIO_TOLERANCE:
            return "looks like [001]"
        if abs(ratio / np.sqrt(2) - 1) <= RATIO_TOLERANCE:
            return "looks like [110]"
    if abs(ratio - 1) <= RATIO_TOLERANCE and abs(angle - 60) <= ANGLE_TOLERANCE_DEG:
        return "a hexagonal lattice: not a perovskite [001] or [110] projection"
    return "not a perovskite projection the finder knows"


def _describe(choice: LatticeChoice, pixel_size_pm: float | None) -> str:
    l1, l2 = choice.lengths
    unit, f = ("pm", pixel_size_pm) if pixel_size_pm else ("px", 1.0)
    return (f"a lattice with spacings {l1 * f:.0f} / {l2 * f:.0f} {unit} (ratio {l2 / l1:.2f}, "
            f"{choice.angle_deg:.0f} deg)")


def choose_a_lattice(points, height, ij, found, local, basis, projection: Projection, *,
                     spacing_px: float | None = None, pixel_size_pm: float | None = None,
                     floor: float = 0.0, brightness=None):
    """The A lattice among the indexed maxima, for the configured projection.

    The maxima may hold more than the A columns (B columns in [001] and [110]
    HAADF, B and O columns in ABF). Starting from all of them, the bright
    half of a two-fold sub-lattice (by parity of i, of j or of i + j) is
    taken while one exists whose halves differ in brightness and whose cell
    has the projection's shape (the most significant such split each time):
    [001] HAADF A + B -> A; ABF A + B + O -> A + B -> A; [110] A + B rows ->
    A. Of that chain, the deepest at the expected scale (``spacing_px``, the
    short A spacing) is the A lattice, else the deepest. Brightness
    differences are relative to the heights above ``floor`` (the image's
    background level: ABF columns are shallow dips on a bright background), of
    ``brightness`` (a function of positions; default the maxima's
    ``height``): at low dose, the image smoothed at the column width, sampled
    at the lattice sites of the indexed maxima (a local affine lattice
    through their neighbours), a steadier figure than the maxima, which are mostly noise.

    Returns
    -------
    ij, found, local : ndarray
        Re-indexed on the A lattice (A maxima only), a1 the shorter vector.
    basis : ndarray, shape (2, 2)
    info : dict
        The lattice figures of the self-check.

    Raises
    ------
    ModelMismatchError
        No candidate has the projection's shape: the reason says what the
        lattice looks like.
    """
    idx = np.flatnonzero(found)
    bright = height
    if brightness is not None:
        from latticegenome.columns.lattice import predict_sites

        sites = predict_sites(points[idx], ij[idx], ij[idx])  # local affine: follows distortion
        sites = np.where(np.isfinite(sites), sites, points[idx])
        bright = np.array(height, dtype=float)
        bright[idx] = brightness(sites)
    chain = [LatticeChoice("maxima", idx, reduce_basis(basis), 0.0)]
    seen: list[LatticeChoice] = []
    for _ in range(3):
        cur = chain[-1]
        sub_ij = ij[cur.keep] if cur.name == "maxima" else \
            index_lattice(points[cur.keep], cur.basis, weights=height[cur.keep])[0]
        sub_local = local[cur.keep] if cur.name == "maxima" else \
            np.repeat(cur.basis[None], cur.keep.size, axis=0)
        splits = [LatticeChoice(c.name if cur.name == "maxima" else f"{cur.name},{c.name}",
                                cur.keep[c.keep], c.basis, c.sigmas)
                  for c in _splits(bright[cur.keep], sub_ij, sub_local, floor)]
        seen += splits
        fitting = [c for c in splits if c.fits(projection)]
        if not fitting:
            break
        chain.append(max(fitting, key=lambda c: c.sigmas))
    fitting = [c for c in chain if c.fits(projection)]
    if not fitting:
        best = max(seen, key=lambda c: c.sigmas) if seen else chain[0]
        raise ModelMismatchError(
            f"{_describe(best, pixel_size_pm)}: {looks_like(best)}, configured "
            f"[{''.join(str(v) for v in projection.zone_axis)}]")
    if spacing_px:
        scaled = [c for c in fitting if abs(c.lengths[0] / spacing_px - 1) <= SCALE_TOLERANCE]
        if not scaled:
            unit, f = ("pm", pixel_size_pm) if pixel_size_pm else ("px", 1.0)
            raise ModelMismatchError(
                f"the lattice of the columns has a spacing of {fitting[-1].lengths[0] * f:.1f} "
                f"{unit} where the configured projection and lattice parameter expect "
                f"{spacing_px * f:.1f} {unit}: check the pixel size, or A and B cannot be told "
                f"apart (too few counts)")
        fitting = scaled
    return _chosen(fitting[-1], points, height, ij, found, local, basis, projection)


def _chosen(choice: LatticeChoice, points, height, ij, found, local, basis, projection):
    """Indices, basis (a1 the shorter where the cell is not square) and figures of the choice."""
    l1, l2 = choice.lengths
    info = {"lattice_from": choice.name, "lattice_split_sigmas": round(choice.sigmas, 1),
            "lattice_spacings_px": [round(float(l1), 3), round(float(l2), 3)],
            "lattice_ratio": round(float(l2 / l1), 4), "lattice_angle_deg": round(choice.angle_deg, 2),
            "lattice_expected_ratio": round(projection.ratio, 4)}
    a_basis = basis if choice.name == "maxima" else choice.basis
    swap = np.hypot(*a_basis[0]) > np.hypot(*a_basis[1]) and projection.ratio > 1 + RATIO_TOLERANCE
    if choice.name == "maxima" and not swap:  # the maxima as indexed are the A lattice
        return ij, found, local, basis, info
    if swap:
        a_basis = a_basis[::-1].copy()
    return (*_reindex(points, height, choice.keep, a_basis, ij.dtype), a_basis, info)


def _reindex(points, height, keep, basis, dtype):
    """Index the maxima ``keep`` on ``basis``; arrays over all maxima (others not found)."""
    sub_ij, sub_found, sub_local = index_lattice(points[keep], basis, weights=height[keep])
    n = len(points)
    ij = np.full((n, 2), np.iinfo(np.int64).min, dtype=dtype)
    found = np.zeros(n, dtype=bool)
    local = np.full((n, 2, 2), np.nan)
    ij[keep], found[keep], local[keep] = sub_ij, sub_found, sub_local
    return ij, found, local


def column_contrast(amplitude_a: np.ndarray, amplitude_b: np.ndarray, expected: tuple[float, float],
                    contrast: str) -> dict:
    """Measured A/B peak-height ratio against the materials' expected range (HAADF).

    Raises
    ------
    ModelMismatchError
        HAADF, every material expects A clearly brighter (ratio > 1.3) and the
        B columns are brighter than the A columns.
    """
    if amplitude_a.size == 0 or amplitude_b.size == 0:
        return {"a_over_b": None}
    ratio = float(np.median(amplitude_a) / max(np.median(amplitude_b), 1e-12))
    out = {"a_over_b": round(ratio, 3), "a_over_b_expected": [round(v, 2) for v in expected]}
    if contrast == "haadf" and expected[0] > 1.3 and ratio < 1.0:
        raise ModelMismatchError(
            f"the B columns are brighter than the A columns (A/B {ratio:.2f}; the projection "
            f"expects {expected[0]:.1f} or more): the projection or the materials do not fit")
    return out


def unmodelled_residual(residual: np.ndarray, corners: np.ndarray, projection: Projection,
                        b_amplitude: float, modelled: list[tuple[float, float]],
                        b_detected: float = 1.0) -> dict:
    """Pooled residual at the quarter positions of the A cells the model leaves empty.

    Parameters
    ----------
    residual : ndarray
        Image minus the fitted model, smoothed.
    corners : ndarray, shape (n, 4, 2)
        The four A corners (00, 10, 01, 11) of each complete cell, px.
    projection : Projection
    b_amplitude : float
        Median B peak height (the scale of the figure).
    modelled : list of (float, float)
        Fractions where the model has a column.
    b_detected : float
        Fraction of the B sites detected: below 1/2 (low dose) the B height is
        not measured well enough to judge by, and the figure is only recorded.

    Raises
    ------
    ModelMismatchError
        A peak at an empty position at least :data:`UNMODELLED_LIMIT` of the B height.
    """
    if len(corners) == 0 or b_amplitude <= 0:
        return {"unmodelled_peak": None}
    best, where = -np.inf, None
    for fi in (0.0, 0.25, 0.5, 0.75):
        for fj in (0.0, 0.25, 0.5, 0.75):
            if any(np.hypot(fi - m[0], fj - m[1]) < 0.2 for m in _periodic(modelled)):
                continue
            p = ((1 - fi) * (1 - fj) * corners[:, 0] + fi * (1 - fj) * corners[:, 1]
                 + (1 - fi) * fj * corners[:, 2] + fi * fj * corners[:, 3])
            r = np.clip(np.rint(p[:, 1]).astype(int), 0, residual.shape[0] - 1)
            c = np.clip(np.rint(p[:, 0]).astype(int), 0, residual.shape[1] - 1)
            value = float(np.median(residual[r, c])) / b_amplitude
            if value > best:
                best, where = value, (fi, fj)
    out = {"unmodelled_peak": round(best, 3), "unmodelled_at": list(where)}
    if best >= UNMODELLED_LIMIT and b_detected >= 0.5:
        raise ModelMismatchError(
            f"a column the [{''.join(str(v) for v in projection.zone_axis)}] motif does not have, "
            f"at ({where[0]:g}, {where[1]:g}) of the A cell, {best:.0%} of the B height")
    return out


def _periodic(fracs):
    """The fractions and their images at 1 (so (0, 0) also excludes (1, 0)...)."""
    return [(f0 + s0, f1 + s1) for f0, f1 in fracs for s0 in (0, 1) for s1 in (0, 1)]
