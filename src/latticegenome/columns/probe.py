"""Probe tails: measure a probe's tail on the image itself and take its light out.

A real STEM probe is not the Gaussian the column model assumes. Residual
aberrations (coma, three-fold astigmatism), the source spread and the
columns' own channelling put a few to twenty per cent of each column's
intensity into a wider, often off-centre tail. A faint column then sits on
the tails of its bright neighbours, which pull its fitted position. The pull
depends on the neighbourhood: a Ti column between Ba columns is pulled about
twice as far as one between Sr columns. No displacement reference can cancel
it, so a polar layer reads several picometres wrong.

The model: every column is imaged with the same probe,

    image = (1 - f) core + f (core * G_st)(r - s) + b,

``core`` the Gaussian columns, ``G_st`` a normalised Gaussian of width
``st`` and ``s`` the tail's shift (coma-like). In Fourier space the probe's
transfer is ``H(k) = 1 - f + f exp(-st^2 k^2 / 2 - i k.s)``, with ``H(0) = 1``
(the tail conserves counts).

- :func:`estimate_probe_tail` fits ``(f, st, s)`` to the image given the
  fitted columns, by variable projection (the amplitudes of core and tail and
  the background are linear; ``st`` and ``s`` by bounded least squares), on a
  central crop, with the evidence for it (the chi-square it removes, over the
  dispersion).
- :func:`tail_light` is the tail's share of the image, ``(H - 1) core``: the
  light the tails add around each column minus what they take from its core.
  :func:`remove_probe_tail` subtracts it. Unlike a deconvolution this leaves
  the image's noise as it was (Poisson, uncorrelated): only a smooth model is
  subtracted.

:func:`latticegenome.columns.finder.find_columns` with ``probe_tail="correct"``
iterates: columns, tail, image less the tail's light, columns again.

Lengths are in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import ndimage, optimize

from latticegenome.columns.model import render_columns

#: A tail is worth taking out when it holds at least this fraction of the intensity...
MIN_FRACTION = 0.03
#: ... and the chi-square it removes, over the dispersion, is at least this.
MIN_EVIDENCE = 40.0
#: ... and taken out only when off-centre by at least this fraction of its width.
MIN_SHIFT = 0.25
#: The estimate is fitted on a central crop of at most this many pixels a side.
CROP_PX = 256


@dataclass(frozen=True)
class ProbeTail:
    """A probe tail: its fraction of the intensity, width and shift (pixels).

    Attributes
    ----------
    fraction : float
        Share of each column's counts in the tail (0 to 0.5).
    sigma_px : float
        Gaussian width of the tail (added in quadrature to the column's).
    shift_px : (float, float)
        Shift (x, y) of the tail from its column's centre.
    evidence : float
        Chi-square the tail removes from a fit without it, over the
        dispersion (NaN when the tail was given, not estimated).

    Examples
    --------
    >>> t = ProbeTail(0.2, 3.0, (0.0, 4.0))
    >>> round(float(abs(t.transfer((64, 64))[0, 0])), 6)  # counts are conserved
    1.0
    >>> t.significant  # given, not measured: taken as it is
    True
    """

    fraction: float
    sigma_px: float
    shift_px: tuple[float, float] = (0.0, 0.0)
    evidence: float = float("nan")

    def __post_init__(self):
        if not 0.0 <= self.fraction < 0.5 or not self.sigma_px > 0:
            raise ValueError(f"probe tail fraction {self.fraction} (0 to 0.5) and width "
                             f"{self.sigma_px} px (> 0)")

    @property
    def significant(self) -> bool:
        """Large enough, and (when estimated) well supported."""
        return self.fraction >= MIN_FRACTION and not self.evidence < MIN_EVIDENCE

    @property
    def moment_px(self) -> float:
        """How far the tail moves each column's centroid, ``fraction * |shift|`` (px): the
        asymmetric, coma-like part that pulls faint neighbours."""
        return float(self.fraction * np.hypot(*self.shift_px))

    @property
    def asymmetric(self) -> bool:
        """Significant and off-centre (shift beyond :data:`MIN_SHIFT` of its width).

        A centred tail is what real columns look like anyway (channelling, the
        probe's Airy rings: multislice images give 25-35 % in a centred tail).
        It moves no column between equal neighbours, and taking a two-Gaussian
        model of it out did not make multislice positions better (worse for a
        displaced Ti between Pb columns), so only an off-centre tail is taken out.
        """
        return self.significant and bool(np.hypot(*self.shift_px) >= MIN_SHIFT * self.sigma_px)

    def transfer(self, shape: tuple[int, int]) -> np.ndarray:
        """``H(k)`` on the real-FFT grid of ``shape`` (``scipy.fft.rfft2`` layout)."""
        return 1.0 - self.fraction + self.fraction * _tail_kernel(shape, self.sigma_px,
                                                                  self.shift_px)

    def record(self, pixel_size_pm: float | None = None) -> dict:
        """A plain-dict record (pixels, and picometres when ``pixel_size_pm`` is given)."""
        out = {"fraction": float(self.fraction), "sigma_px": float(self.sigma_px),
               "shift_px": [float(v) for v in self.shift_px],
               "evidence": None if np.isnan(self.evidence) else float(self.evidence),
               "moment_px": self.moment_px, "significant": self.significant,
               "asymmetric": self.asymmetric}
        if pixel_size_pm:
            out["sigma_pm"] = float(self.sigma_px * pixel_size_pm)
            out["shift_pm"] = [float(v * pixel_size_pm) for v in self.shift_px]
            out["moment_pm"] = float(self.moment_px * pixel_size_pm)
        return out

    @classmethod
    def from_pm(cls, fraction: float, sigma_pm: float, shift_pm, pixel_size_pm: float) -> "ProbeTail":
        """A tail given in picometres (a measured probe), in pixels of an image."""
        sx, sy = (float(v) / pixel_size_pm for v in shift_pm)
        return cls(float(fraction), float(sigma_pm) / pixel_size_pm, (sx, sy))


def _tail_kernel(shape, sigma_px: float, shift_px) -> np.ndarray:
    """Fourier transform of a normalised Gaussian of ``sigma_px`` shifted by ``shift_px``."""
    ky = 2 * np.pi * sfft.fftfreq(shape[0])[:, None]
    kx = 2 * np.pi * sfft.rfftfreq(shape[1])[None, :]
    return np.exp(-0.5 * sigma_px**2 * (kx**2 + ky**2) - 1j * (kx * shift_px[0] + ky * shift_px[1]))


def _pad_for(sigma_px: float, shift_px) -> int:
    """Zero padding that holds a tail's reach (no wrap-around in the FFT)."""
    return int(np.ceil(4.0 * sigma_px + np.hypot(*shift_px))) + 1


def _core(shape, x, y, amplitude, sigma, pad: int, offset=(0, 0)) -> np.ndarray:
    """The Gaussian columns rendered on ``shape`` padded by ``pad`` on every side;
    ``offset`` (row, col) of the canvas's unpadded origin in the column coordinates."""
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(amplitude) & (amplitude > 0)
    big = (shape[0] + 2 * pad, shape[1] + 2 * pad)
    return render_columns(big, x[ok] - offset[1] + pad, y[ok] - offset[0] + pad, amplitude[ok],
                          np.broadcast_to(sigma, x.shape)[ok])


def tail_light(shape: tuple[int, int], x, y, amplitude, sigma, tail: ProbeTail) -> np.ndarray:
    """The probe tail's share of an image of Gaussian columns: ``(H - 1) core``.

    Parameters
    ----------
    shape : (rows, cols)
    x, y, amplitude, sigma : ndarray
        The columns' core (pixels; amplitude in image units per pixel).
    tail : ProbeTail

    Returns
    -------
    ndarray, shape ``shape``
        Positive around each column where its tail lands, negative on its
        core (what the tail took from it); sums to about zero.

    Examples
    --------
    >>> light = tail_light((64, 64), np.array([32.0]), np.array([32.0]), np.array([100.0]),
    ...                    3.0, ProbeTail(0.2, 3.0, (0.0, 4.0)))
    >>> bool(light[32, 32] < 0 < light[40, 32]), abs(float(light.sum())) < 1e-6
    (True, True)
    """
    x, y, amplitude = (np.asarray(v, float).ravel() for v in (x, y, amplitude))
    pad = _pad_for(tail.sigma_px, tail.shift_px)
    core = _core(shape, x, y, amplitude, sigma, pad)
    h_minus_1 = tail.fraction * (_tail_kernel(core.shape, tail.sigma_px, tail.shift_px) - 1.0)
    light = sfft.irfft2(sfft.rfft2(core) * h_minus_1, s=core.shape)
    return light[pad:pad + shape[0], pad:pad + shape[1]]


def remove_probe_tail(image: np.ndarray, x, y, amplitude, sigma, tail: ProbeTail) -> np.ndarray:
    """``image`` less the probe tail's light (:func:`tail_light`), clipped at zero.

    The result is what the columns would give with the tail's counts back in
    their cores; its noise is the image's own.
    """
    out = np.asarray(image, float) - tail_light(image.shape, x, y, amplitude, sigma, tail)
    return np.clip(out, 0.0, None, out=out)


def _crop(shape, size: int, margin: int):
    """A central crop (row0, row1, col0, col1) of at most ``size`` a side, ``margin`` in from
    the edges where the image allows."""
    out = []
    for n in shape:
        m = min(margin, max(0, (n - 16) // 4))
        lo, hi = m, n - m
        if hi - lo > size:
            lo = (n - size) // 2
            hi = lo + size
        out += [lo, hi]
    return tuple(out)


class _TailProblem:
    """Variable projection: for a tail width and shift, the best core and tail amplitudes
    and background are a weighted linear fit; the residual is a function of (st, sx, sy)."""

    def __init__(self, image, x, y, amplitude, sigma, spacing_px: float, crop_px: int):
        margin = int(np.ceil(0.5 * spacing_px))
        r0, r1, c0, c1 = _crop(image.shape, crop_px, margin)
        self.pad = int(np.ceil(spacing_px)) + 4
        shape = (r1 - r0, c1 - c0)
        self.core = _core(shape, x, y, amplitude, sigma, self.pad, (r0, c0))
        self.core_ft = sfft.rfft2(self.core)
        sl = (slice(self.pad, self.pad + shape[0]), slice(self.pad, self.pad + shape[1]))
        self.sl = sl
        data = np.asarray(image, float)[r0:r1, c0:c1].ravel()
        floor = max(1e-9, float(np.percentile(data, 50)) * 1e-3)
        # Pearson weights, 1 / the expected counts of a fit without a tail (weights from
        # the data themselves, Neyman's, bias a fit low at a few counts per pixel)
        core = self.core[sl].ravel()
        a = np.column_stack([core, np.ones_like(core)])
        w0 = 1.0 / np.sqrt(np.maximum(ndimage.uniform_filter(
            np.asarray(image, float)[r0:r1, c0:c1], 5).ravel(), floor))
        c, *_ = np.linalg.lstsq(a * w0[:, None], data * w0, rcond=None)
        self.sw = 1.0 / np.sqrt(np.maximum(a @ c, floor))
        self.d = data * self.sw
        self.basis_core = core * self.sw
        # A width change and a shift of every core (linear: the derivatives of the core):
        # the fitted widths' and positions' own errors must not pass for a tail.
        eps = 0.02
        varied = [_core(shape, x, y, amplitude / (1 + eps) ** 2, sigma * (1 + eps), self.pad,
                        (r0, c0)),
                  _core(shape, x + 0.05, y, amplitude, sigma, self.pad, (r0, c0)),
                  _core(shape, x, y + 0.05, amplitude, sigma, self.pad, (r0, c0))]
        self.basis_local = [(v - self.core)[sl].ravel() * self.sw for v in varied]
        self.n = data.size

    def solve(self, q, with_tail=True):
        cols = [self.basis_core, *self.basis_local, self.sw]
        if with_tail:
            g = _tail_kernel(self.core.shape, abs(q[0]), (q[1], q[2]))
            cols.insert(1, sfft.irfft2(self.core_ft * g, s=self.core.shape)[self.sl].ravel()
                        * self.sw)
        a = np.column_stack(cols)
        c, *_ = np.linalg.lstsq(a, self.d, rcond=None)
        return a @ c - self.d, c

    def residual(self, q):
        return self.solve(q)[0]


def estimate_probe_tail(image: np.ndarray, x, y, amplitude, sigma, *, spacing_px: float,
                        start: ProbeTail | None = None, crop_px: int = CROP_PX) -> ProbeTail:
    """Fit a probe tail to an image, given its fitted Gaussian columns.

    Parameters
    ----------
    image : ndarray
        The image (counts; any non-negative scale: the evidence is over the
        dispersion).
    x, y, amplitude, sigma : ndarray
        Every fitted column (pixels; columns just outside the image help).
    spacing_px : float
        Short A-A spacing: the tail's shift is searched within a third of it
        (a shift by a lattice vector would look the same), its width up to half.
    start : ProbeTail, optional
        A previous estimate to start from (the iterations of
        :func:`~latticegenome.columns.finder.find_columns`).
    crop_px : int
        Side of the central crop the fit uses.

    Returns
    -------
    ProbeTail
        With its ``evidence``; a fraction at or below zero (no tail, or a core
        narrower than a Gaussian) comes back as 0.

    Notes
    -----
    Columns fitted on a tailed image have absorbed part of the tail (wider,
    higher, shifted towards it), so one estimate falls short of the truth;
    iterating with the columns refitted on the corrected image converges.
    """
    x, y, amplitude = (np.asarray(v, float).ravel() for v in (x, y, amplitude))
    sigma = np.broadcast_to(np.asarray(sigma, float), x.shape)
    prob = _TailProblem(image, x, y, amplitude, sigma, spacing_px, crop_px)
    s0 = float(np.nanmedian(sigma))
    reach = spacing_px / 3.0
    lo, hi = [s0, -reach, -reach], [0.5 * spacing_px, reach, reach]  # a tail: wider than the core
    starts = ([[start.sigma_px, *start.shift_px]] if start is not None and start.fraction > 0
              else [[w * s0, dx * s0, dy * s0] for w in (1.2, 2.0)
                    for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))])
    starts = [np.clip(q0, np.add(lo, 1e-6), np.subtract(hi, 1e-6)) for q0 in starts]
    cost = [float(np.sum(prob.residual(q0) ** 2)) for q0 in starts]
    best = None
    for k in np.argsort(cost)[:2]:  # refine from the two best starts
        q0 = starts[k]
        res = optimize.least_squares(prob.residual, q0, bounds=(lo, hi), x_scale=1.0,
                                     diff_step=1e-3, xtol=1e-4, ftol=1e-6, max_nfev=60)
        if best is None or res.cost < best.cost:
            best = res
    r1, c = prob.solve(best.x)
    r0, _ = prob.solve(None, with_tail=False)
    chi1, chi0 = float(r1 @ r1), float(r0 @ r0)
    dispersion = chi1 / max(prob.n - 9, 1)
    fraction = float(c[1] / (c[0] + c[1])) if c[0] + c[1] > 0 else 0.0
    fraction = float(np.clip(fraction, 0.0, 0.49))
    return ProbeTail(fraction, float(abs(best.x[0])), (float(best.x[1]), float(best.x[2])),
                     evidence=(chi0 - chi1) / dispersion if fraction > 0 else 0.0)


def converged(a: ProbeTail, b: ProbeTail, tol_px: float = 0.05, tol_fraction: float = 0.005) -> bool:
    """Two estimates agree (the iterations of the finder stop)."""
    return (abs(a.fraction - b.fraction) < tol_fraction
            and abs(a.sigma_px - b.sigma_px) < tol_px * 4
            and float(np.hypot(a.shift_px[0] - b.shift_px[0], a.shift_px[1] - b.shift_px[1]))
            < tol_px)
