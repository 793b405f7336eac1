"""Layer 2: array helpers shared by the sources room (private)."""
from __future__ import annotations

import numpy as np


def _as_image(data, name: str = "data") -> np.ndarray:
    arr = np.asarray(getattr(data, "data", data), dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D image, got shape {arr.shape}")
    return arr


def _as_mask(mask, shape) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask, dtype=bool)
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} differs from data shape {shape}")
    return m


def _cutouts(img: np.ndarray, ix: np.ndarray, iy: np.ndarray, r: int) -> np.ndarray:
    """Stack of (2r+1, 2r+1) cutouts centred on integer pixels; NaN outside the image."""
    pad = np.pad(img, r, mode="constant", constant_values=np.nan)
    off = np.arange(-r, r + 1)
    rows = (iy[:, None] + r + off[None, :])[:, :, None]
    cols = (ix[:, None] + r + off[None, :])[:, None, :]
    inside = ((rows >= 0) & (rows < pad.shape[0])) & ((cols >= 0) & (cols < pad.shape[1]))
    out = pad[np.clip(rows, 0, pad.shape[0] - 1), np.clip(cols, 0, pad.shape[1] - 1)]
    return np.where(inside, out, np.nan)

