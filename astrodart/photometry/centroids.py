"""Layer 2: re-centring stars near given positions.

Pure functions on 2-D arrays: no file I/O, no printing. Pixel coordinates are 0-based
(numpy/photutils convention); ``x`` is the column, ``y`` the row.

Method: the peak of the Gaussian-smoothed image near the given position, refined by the
iterative Gaussian-windowed centroid (SExtractor's ``XWIN``; Bertin & Arnouts 1996,
A&AS 117, 393).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from astrodart.photometry._arrays import _as_image, _as_positions, _bad_mask, _cutout
from astrodart.sources.stars import GAUSSIAN_SIGMA_TO_FWHM

__all__ = ["recentre"]


def recentre(
    data,
    positions,
    fwhm: float,
    *,
    search_radius: float | None = None,
    mask=None,
    max_iter: int = 30,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-centre stars near given positions.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Image (background included; a local median is removed).
    positions : array_like, shape (n, 2)
        0-based starting ``(x, y)``.
    fwhm : float
        FWHM in pixels (sets the smoothing kernel and the centroid window).
    search_radius : float, optional
        How far from the start the star may be, pixels; default ``max(3, 1.5 * fwhm)``.
    mask : array_like of bool, shape (ny, nx), optional
        True for pixels to ignore.
    max_iter : int
        Maximum iterations of the windowed centroid.

    Returns
    -------
    xy : numpy.ndarray, shape (n, 2)
        New positions; the starting position where the centroid failed.
    ok : numpy.ndarray of bool, shape (n,)
        False where no positive signal was found or the centroid did not converge
        within ``search_radius + fwhm`` of the start.

    Notes
    -----
    The brightest pixel of the Gaussian-smoothed cutout within ``search_radius`` gives a
    start robust to hot pixels; the Gaussian-windowed centroid (``XWIN``, window sigma
    = FWHM / 2.3548) is then iterated: ``x <- x + 2 sum(w I (X - x)) / sum(w I)``.
    """
    arr = _as_image(data)
    bad = _bad_mask(arr, mask)
    xy = _as_positions(positions)
    if not (fwhm and np.isfinite(fwhm) and fwhm > 0):
        raise ValueError(f"fwhm must be a positive number of pixels, got {fwhm!r}")
    sig = fwhm / GAUSSIAN_SIGMA_TO_FWHM
    rad = float(search_radius) if search_radius is not None else max(3.0, 1.5 * fwhm)
    win = int(math.ceil(4 * sig)) + 1
    half = int(math.ceil(rad)) + win
    out = xy.copy()
    ok = np.zeros(len(xy), bool)
    for i, (x, y) in enumerate(xy):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        cut, x0, y0 = _cutout(arr, x, y, half)
        if cut is None or cut.size < 9:
            continue
        cbad = bad[y0 : y0 + cut.shape[0], x0 : x0 + cut.shape[1]]
        if cbad.all():
            continue
        sub = np.where(cbad, 0.0, cut - np.median(cut[~cbad]))
        yy, xx = np.mgrid[y0 : y0 + cut.shape[0], x0 : x0 + cut.shape[1]].astype(float)
        smooth = ndimage.gaussian_filter(sub, max(sig, 0.7), mode="constant")
        near = (xx - x) ** 2 + (yy - y) ** 2 <= rad**2
        if not near.any():
            continue
        k = np.argmax(np.where(near, smooth, -np.inf))
        cx, cy = xx.flat[k], yy.flat[k]
        converged = False
        for _ in range(max_iter):
            w = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sig * sig)) * sub
            s = w.sum()
            if not s > 0:
                break
            dx = 2 * (w * (xx - cx)).sum() / s
            dy = 2 * (w * (yy - cy)).sum() / s
            # damp the step: the factor 2 is exact only for a Gaussian star
            step = math.hypot(dx, dy)
            if step > sig:
                dx, dy = dx * sig / step, dy * sig / step
            cx, cy = cx + dx, cy + dy
            if step < 1e-3:
                converged = True
                break
        if converged and math.hypot(cx - x, cy - y) <= rad + fwhm:
            out[i] = cx, cy
            ok[i] = True
    return out, ok
