"""Private helpers of the photometry room: checked images, positions and masks.

Pixel coordinates are 0-based with the centre of the first pixel at ``(0, 0)`` (the
numpy/photutils convention); ``x`` is the column, ``y`` the row.
"""

from __future__ import annotations

import numpy as np


def _as_image(data) -> np.ndarray:
    arr = np.asarray(getattr(data, "data", data), dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"data must be a 2-D image, got shape {arr.shape}")
    return arr


def _as_positions(positions) -> np.ndarray:
    xy = np.asarray(positions, dtype=float)
    if xy.ndim == 1 and xy.size == 2:
        xy = xy[None, :]
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"positions must be (x, y) pairs, shape (n, 2); got shape {xy.shape}")
    return xy


def _bad_mask(arr: np.ndarray, mask) -> np.ndarray:
    bad = ~np.isfinite(arr)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != arr.shape:
            raise ValueError(f"mask shape {m.shape} differs from data shape {arr.shape}")
        bad |= m
    return bad


def _cutout(arr: np.ndarray, x: float, y: float, half: int):
    """Cutout of half-size ``half`` around the pixel nearest (x, y), clipped to the image;
    returns (cut, x0, y0) with (x0, y0) the image coordinates of cut[0, 0]."""
    ix, iy = int(round(x)), int(round(y))
    x0, x1 = max(ix - half, 0), min(ix + half + 1, arr.shape[1])
    y0, y1 = max(iy - half, 0), min(iy + half + 1, arr.shape[0])
    if x1 <= x0 or y1 <= y0:
        return None, x0, y0
    return arr[y0:y1, x0:x1], x0, y0
