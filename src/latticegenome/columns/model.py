"""The image model of an atomic column and its Fisher information.

A HAADF-STEM image is modelled as a background plus a sum of isotropic Gaussian
columns, evaluated at pixel centres:

    lambda(x, y) = b + sum_k h_k exp(-((x - x_k)^2 + (y - y_k)^2) / (2 s_k^2))

All coordinates are in pixels, with x the column index, y the row index and the
origin at the centre of pixel [0, 0]. Under Poisson noise the expected counts in
a pixel are lambda; the integrated counts of a column are N = 2 pi s^2 h.

The same model is used by the simulator, by the refinement and by the
Cramér-Rao bound, so that precision figures compare like with like.
"""

from __future__ import annotations

import numpy as np

#: Columns are rendered out to this many widths; exp(-12.5) ~ 4e-6 of the peak.
RENDER_WIDTHS = 5.0


def render_columns(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    amplitude: np.ndarray,
    sigma: np.ndarray | float,
    background: float | np.ndarray = 0.0,
    *,
    radius: int | None = None,
) -> np.ndarray:
    """Render Gaussian columns into an image.

    Parameters
    ----------
    shape : (rows, cols)
        Image shape in pixels.
    x, y : array_like, shape (n,)
        Column centres in pixels (x = column index, y = row index).
    amplitude : array_like, shape (n,)
        Peak height of each column (counts per pixel).
    sigma : array_like or float
        Gaussian width of each column in pixels.
    background : float or ndarray
        Constant or per-pixel background added to the result.
    radius : int, optional
        Half-size in pixels of the square each column is rendered into;
        default ``ceil(5 * max(sigma))``.

    Returns
    -------
    ndarray of float64, shape ``shape`` (without background: a view into
    the rendering canvas)
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    amplitude = np.broadcast_to(np.asarray(amplitude, dtype=float), x.shape)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), x.shape)
    rows, cols = shape
    if radius is None:
        radius = int(np.ceil(RENDER_WIDTHS * float(np.max(sigma)))) if x.size else 1
    # Render into a canvas padded by twice the radius, so that columns up to
    # one radius outside the image add their tails and no index needs a mask.
    pad = 2 * radius
    prow, pcol = rows + 2 * pad, cols + 2 * pad
    out = np.zeros(prow * pcol, dtype=float)
    from latticegenome.columns._kernels import accumulate

    accumulate(out, rows, cols, pad, np.ascontiguousarray(x), np.ascontiguousarray(y),
               np.ascontiguousarray(amplitude, dtype=float), np.ascontiguousarray(sigma, dtype=float),
               radius)
    out = out.reshape(prow, pcol)[pad : pad + rows, pad : pad + cols]
    if np.ndim(background) == 0 and background == 0:
        return out  # a view of the canvas: no copy
    return out + background


def column_counts(amplitude, sigma):
    """Integrated counts N = 2 pi s^2 h of a Gaussian column."""
    return 2.0 * np.pi * np.asarray(sigma, float) ** 2 * np.asarray(amplitude, float)


def amplitude_for_counts(counts, sigma):
    """Peak height h of a Gaussian column holding ``counts`` in total."""
    return np.asarray(counts, float) / (2.0 * np.pi * np.asarray(sigma, float) ** 2)


def window_jacobian(dx, dy, amplitude, sigma):
    """Model value and derivatives of one Gaussian column plus background.

    Parameters
    ----------
    dx, dy : ndarray, shape (n, p)
        Pixel-centre offsets from the column centre (pixel - centre), in px.
    amplitude, sigma : ndarray, shape (n,)

    Returns
    -------
    g : ndarray, shape (n, p)
        The Gaussian term h exp(-r^2 / 2 s^2).
    jac : ndarray, shape (n, p, 5)
        d lambda / d (x, y, h, s, b).
    """
    s2 = sigma[:, None] ** 2
    r2 = dx * dx + dy * dy
    e = np.exp(-0.5 * r2 / s2)  # (exp is ~1/4 of the cost here; kept exact)
    g = amplitude[:, None] * e
    jac = np.empty(dx.shape + (5,))
    jac[..., 0] = g * dx / s2
    jac[..., 1] = g * dy / s2
    jac[..., 2] = e
    jac[..., 3] = g * r2 / (s2 * sigma[:, None])
    jac[..., 4] = 1.0
    return g, jac


def fisher_information(jac, lam, mask=None):
    """Poisson Fisher information sum_p J_p J_p^T / lambda_p, per column.

    Parameters
    ----------
    jac : ndarray, shape (n, p, k)
    lam : ndarray, shape (n, p)
        Expected counts in each pixel (must be positive where used).
    mask : ndarray of bool, shape (n, p), optional
        Pixels that take part (inside the image).

    Returns
    -------
    ndarray, shape (n, k, k)
    """
    w = 1.0 / np.maximum(lam, 1e-12)
    if mask is not None:
        w = w * mask
    jw = jac * w[..., None]
    return np.matmul(np.swapaxes(jw, 1, 2), jac)
