"""Layer 2: the sky under the stars: background map, sky noise, global sky statistics,
and the saturation level of a frame.

Pure functions on 2-D arrays: no file I/O, no printing. Every value is in the data
units of the image.

This is astrodart's one background estimator: star detection, alignment (phase
correlation), colour composites and the quality table all call
:func:`estimate_background` (a map) or :func:`sky_stats` (one level for the frame).

Methods
-------
* Background map and sky noise (:func:`estimate_background`): clipped medians in a mesh
  of boxes, median-filtered and interpolated bilinearly to full resolution (the
  SExtractor scheme, Bertin & Arnouts 1996, with linear rather than bicubic
  interpolation so that a gradient stays linear up to the edges).
* Global sky level and rms (:func:`sky_stats`): sigma-clipped median and MAD standard
  deviation.
* Saturation (:func:`saturation_level`): the plateau that saturated pixels leave in a
  raw frame.

References
----------
Bertin, E. & Arnouts, S. 1996, A&AS 117, 393, "SExtractor: Software for source
extraction".
"""
from __future__ import annotations

from dataclasses import dataclass

import bottleneck as bn
import numpy as np
from astropy.stats import sigma_clipped_stats
from numpy.typing import ArrayLike
from scipy import ndimage

from astrodart.sources._image import _as_image, _as_mask

__all__ = ["SkyStats", "estimate_background", "saturation_level", "sky_stats"]


@dataclass(frozen=True)
class SkyStats:
    """Global sky statistics of an image.

    Parameters
    ----------
    level : float
        Sigma-clipped median of the pixels (data units).
    rms : float
        Sigma-clipped standard deviation estimated from the median absolute deviation
        (data units).
    """

    level: float
    rms: float


def sky_stats(data: ArrayLike, mask: ArrayLike | None = None, sigma: float = 3.0,
              maxiters: int = 10) -> SkyStats:
    """Sky level and rms of an image, robust against stars.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Image (a ``CCDData`` is accepted; its ``.data`` is used). Non-finite pixels are
        ignored.
    mask : array_like of bool, shape (ny, nx), optional
        True where pixels must be ignored.
    sigma : float
        Clipping threshold in standard deviations.
    maxiters : int
        Maximum number of clipping iterations.

    Returns
    -------
    SkyStats
        ``level`` (median) and ``rms`` (MAD standard deviation) after clipping.

    Notes
    -----
    Sigma clipping around the median with the MAD as the width, as in
    ``astropy.stats.sigma_clipped_stats(cenfunc='median', stdfunc='mad_std')``.
    """
    arr = _as_image(data)
    m = _as_mask(mask, arr.shape)
    bad = ~np.isfinite(arr) if m is None else (m | ~np.isfinite(arr))
    _, median, std = sigma_clipped_stats(arr, mask=bad, sigma=sigma, maxiters=maxiters,
                                         cenfunc="median", stdfunc="mad_std")
    return SkyStats(float(median), float(std))



def estimate_background(data: ArrayLike, mask: ArrayLike | None = None, box_size: int = 64,
                        filter_size: int = 3) -> tuple[np.ndarray, float]:
    """Smooth sky background map and sky noise of an image.

    The image is cut into boxes of about ``box_size`` pixels (equal sizes that tile the
    image exactly); each box's sky is its median after two rounds of 3-sigma clipping
    (MAD-based, so stars barely bias it; at most ~1000 pixels per box are sampled); boxes
    with less than 20 % valid pixels take their nearest valid neighbour's value; the box
    values are median-filtered and interpolated bilinearly (extrapolated linearly to the
    edges) back to full resolution.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Image, any unit (a ``CCDData`` is accepted; its ``.data`` is used).
    mask : array_like of bool, shape (ny, nx), optional
        True marks invalid pixels (ignored, as are non-finite values).
    box_size : int
        Box side, pixels (clamped to the image size).
    filter_size : int
        Size of the median filter applied to the grid of box values, boxes.

    Returns
    -------
    background : ndarray of float32, shape (ny, nx)
        Sky level, same unit as ``data``.
    sigma : float
        Robust standard deviation of the sky: 1.4826 x MAD of ``data - background``,
        after dropping pixels more than 5 such sigma off (stars), same unit as ``data``.

    Raises
    ------
    ValueError
        ``data`` is not 2-D or has no valid pixel.

    References
    ----------
    Bertin, E. & Arnouts, S. 1996, A&AS 117, 393 (the mesh-and-interpolate scheme).
    """
    data = np.asarray(getattr(data, "data", data), dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"estimate_background needs a 2-D image, got shape {data.shape}")
    bad = ~np.isfinite(data)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    if bad.all():
        raise ValueError("estimate_background: no valid pixel in the image")
    ny, nx = data.shape
    work = np.where(bad, np.nan, data)
    ey = np.linspace(0, ny, max(1, int(round(ny / max(box_size, 4)))) + 1).round().astype(int)
    ex = np.linspace(0, nx, max(1, int(round(nx / max(box_size, 4)))) + 1).round().astype(int)
    grid = _box_medians(work, ey, ex)
    if filter_size > 1 and min(grid.shape) >= filter_size:
        # pad by point reflection, which keeps a linear gradient linear up to the edges
        h = filter_size // 2
        padded = np.pad(grid, h, mode="reflect", reflect_type="odd")
        grid = ndimage.median_filter(padded, size=filter_size)[h:-h, h:-h]
    cy = (ey[:-1] + ey[1:] - 1) / 2
    cx = (ex[:-1] + ex[1:] - 1) / 2
    bkg = (_linear_weights(ny, cy) @ grid @ _linear_weights(nx, cx).T).astype(np.float32)
    resid = (data - bkg)[~bad]
    resid = resid[::max(1, resid.size // 250_000)]
    med = np.median(resid)
    sigma = 1.4826 * np.median(np.abs(resid - med))
    resid = resid[np.abs(resid - med) < 5 * max(sigma, 1e-12)]
    if resid.size:
        sigma = 1.4826 * np.median(np.abs(resid - np.median(resid)))
    return bkg, float(sigma)


def _box_medians(work: np.ndarray, ey: np.ndarray, ex: np.ndarray) -> np.ndarray:
    """Clipped median of each box (edges ``ey``, ``ex``; NaN = invalid pixel); boxes with
    too few valid pixels take their nearest valid neighbour's value."""
    grid = np.full((len(ey) - 1, len(ex) - 1), np.nan)
    with np.errstate(invalid="ignore"):  # all-NaN boxes are handled below
        for i in range(len(ey) - 1):
            for j in range(len(ex) - 1):
                cell = work[ey[i]:ey[i + 1], ex[j]:ex[j + 1]].ravel()
                cell = cell[::max(1, cell.size // 1024)]  # ~1000 samples per box are plenty
                if np.isfinite(cell).sum() < 0.2 * cell.size:
                    continue
                for _ in range(2):
                    med = bn.nanmedian(cell)
                    mad = 1.4826 * bn.nanmedian(np.abs(cell - med))
                    cell = np.where(np.abs(cell - med) > 3 * max(mad, 1e-12), np.nan, cell)
                grid[i, j] = bn.nanmedian(cell)
    empty = ~np.isfinite(grid)
    if empty.all():
        grid[:] = float(np.nanmedian(work))
    elif empty.any():
        idx = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
        grid = grid[tuple(idx)]
    return grid


def _linear_weights(n: int, centres: np.ndarray) -> np.ndarray:
    """(n, len(centres)) matrix interpolating linearly between box centres (and
    extrapolating linearly beyond the outermost ones, so a gradient reaches the edges)."""
    nb = len(centres)
    w = np.zeros((n, nb))
    if nb == 1:
        w[:, 0] = 1.0
        return w
    p = np.arange(n, dtype=float)
    j0 = np.clip(np.searchsorted(centres, p) - 1, 0, nb - 2)
    f = (p - centres[j0]) / (centres[j0 + 1] - centres[j0])
    w[np.arange(n), j0] = 1 - f
    w[np.arange(n), j0 + 1] = f
    return w



def saturation_level(data: ArrayLike, min_pixels: int = 4,
                     fraction: float = 0.9) -> float | None:
    """Guess the level above which a raw frame's pixels are saturated or non-linear.

    A saturated detector writes the same maximum value in every saturated pixel; when at
    least ``min_pixels`` pixels share the image maximum, ``fraction`` of that maximum is
    returned (the last ~10 % below full well are non-linear on most CCDs).

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Raw (uncalibrated) image in ADU.
    min_pixels : int
        Number of pixels that must share the maximum value to call it a plateau.
    fraction : float
        Fraction of the plateau value returned.

    Returns
    -------
    float or None
        The level in data units, or None when no plateau is found (use the header's
        ``SATURATE`` or the camera's full well instead).
    """
    arr = _as_image(data)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return None
    top = finite.max()
    if np.count_nonzero(finite == top) >= min_pixels:
        return float(fraction * top)
    return None

