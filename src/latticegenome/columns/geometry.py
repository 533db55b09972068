"""Image-frame geometry shared by the column stage.

Positions are pixels: x = column index, y = row index, origin at the centre
of pixel [0, 0]. The pixel centres of an image of shape ``(rows, cols)`` span
``0 <= x <= cols - 1`` and ``0 <= y <= rows - 1``; the pixels themselves cover
``-0.5 <= x <= cols - 0.5`` (a margin of 0.5 px).
"""

from __future__ import annotations

#: Margin (px) of the area the pixels cover, beyond their centres.
PIXEL_AREA = 0.5


def in_frame(x, y, shape: tuple[int, int], margin: float = 0, *, strict: bool = False):
    """Whether points lie inside the image frame, widened by ``margin``.

    The frame is the rectangle of pixel centres, ``[0, cols - 1] x [0, rows - 1]``,
    widened on every side by ``margin`` px (a negative margin narrows it:
    points must lie that far inside). Points exactly on the edge count as
    inside, unless ``strict``.

    Parameters
    ----------
    x, y : array_like or scalar
        Positions in pixels (x = column index, y = row index); integers stay
        integers when ``margin`` is an integer (exact for pixel indices).
    shape : (rows, cols)
        Image shape in pixels.
    margin : float
        Widening of the frame in pixels; :data:`PIXEL_AREA` (0.5) is the area
        the pixels cover, ``-r`` keeps a window of half-size ``r`` inside.
    strict : bool
        Points on the edge of the widened frame are outside.

    Returns
    -------
    ndarray of bool (or a bool for scalars)
        NaN positions are never inside.

    Examples
    --------
    >>> import numpy as np
    >>> in_frame(np.array([0.0, 9.0, 9.5, -0.6]), np.zeros(4), (5, 10))
    array([ True,  True, False, False])
    >>> in_frame(np.array([9.5, -0.6]), np.zeros(2), (5, 10), margin=PIXEL_AREA)
    array([ True, False])
    >>> in_frame(np.array([1, 2]), np.array([2, 2]), (5, 10), margin=-1, strict=True)
    array([False,  True])
    """
    rows, cols = shape
    lo = -margin
    x_hi = cols - 1 + margin
    y_hi = rows - 1 + margin
    if strict:
        return (x > lo) & (x < x_hi) & (y > lo) & (y < y_hi)
    return (x >= lo) & (x <= x_hi) & (y >= lo) & (y <= y_hi)
