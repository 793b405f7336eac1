"""Layer 2: star detection.

Pure functions on 2-D arrays: no file I/O, no printing. Pixel coordinates are
0-based with the centre of the first pixel at ``(0, 0)`` (the numpy/photutils
convention); ``x`` runs along the second array axis (columns), ``y`` along the
first (rows). Every width is in pixels; arcseconds are the caller's business
(multiply by the pixel scale *after* measuring, never before detecting).

This is astrodart's one star detector (:func:`find_stars`): plate solving, FWHM
measurement, alignment, colour calibration, photometry tracking and the star picker all
call it. The background it subtracts comes from
:func:`astrodart.sources.background.estimate_background`; the widths of the stars it
finds from :mod:`astrodart.sources.psf`.

Methods
-------
* Detection (:func:`find_stars`): a matched filter (Gaussian of the expected FWHM)
  followed by local maxima above ``threshold`` times the filtered noise, and a
  Gaussian-windowed centroid (the iterative "windowed" centroid of SExtractor,
  Bertin & Arnouts 1996, ``XWIN_IMAGE``). No roundness cut is applied, so undersampled
  stars (FWHM ~ 2 px, rejected by DAOStarFinder's default sharpness range) are kept;
  ``reject_sharp=True`` drops only sources far sharper than the kernel (hot pixels,
  cosmic-ray hits).

References
----------
Bertin, E. & Arnouts, S. 1996, A&AS 117, 393, "SExtractor: Software for source
extraction".
"""
from __future__ import annotations

import math

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.spatial import cKDTree

from astrodart.sources._image import _as_image, _as_mask, _cutouts
from astrodart.sources.background import estimate_background

__all__ = [
    "GAUSSIAN_SIGMA_TO_FWHM",
    "find_stars",
    "positions_of",
]

#: FWHM of a Gaussian in units of its standard deviation, 2 sqrt(2 ln 2).
GAUSSIAN_SIGMA_TO_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))


def find_stars(data: ArrayLike, fwhm: float = 3.0, threshold: float = 5.0, *,
               mask: ArrayLike | None = None, background: ArrayLike | None = None,
               background_rms: ArrayLike | None = None, saturation: float | None = None,
               border: int | None = None, max_stars: int | None = None,
               reject_sharp: bool = False) -> Table:
    """Detect point sources, including undersampled ones.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Image in data units (not background-subtracted).
    fwhm : float
        Expected FWHM in **pixels** (the matched-filter width); a rough guess is enough.
    threshold : float
        Detection threshold in units of the matched-filtered background noise.
    mask : array_like of bool, shape (ny, nx), optional
        True where pixels must be ignored.
    background, background_rms : float or array_like, shape (ny, nx), optional
        Background and its rms; estimated with :func:`estimate_background` when absent.
    saturation : float, optional
        Pixel level (same units as ``data``, background included) at or above which a
        star is flagged ``saturated``.
    border : int, optional
        Ignore peaks closer than this to the edge (pixels); default ``ceil(fwhm) + 1``.
    max_stars : int, optional
        Keep only the brightest ``max_stars`` detections (only the ``2 * max_stars + 50``
        highest matched-filter peaks are centroided and measured, which saves time on
        crowded fields).
    reject_sharp : bool
        Drop sources far sharper than the kernel: hot pixels and cosmic-ray hits, whose
        brightest pixel (3 x 3 maximum, background-subtracted) exceeds
        ``max(3, pi * s**2)`` times the filtered peak (``s`` the kernel's standard
        deviation; a star of the kernel's width has a ratio of about 2, a single hot
        pixel ``2 pi s**2``). Stars down to about 0.4 times the kernel FWHM are kept.

    Returns
    -------
    astropy.table.Table
        One row per star, brightest (``flux``) first, with columns ``x``, ``y`` (0-based
        pixel centroid), ``flux`` (background-subtracted sum in a circle of radius
        ``1.5 * fwhm``, at least 2 px, rim pixels weighted by their approximate overlap),
        ``peak`` (background-subtracted maximum pixel), ``sky``
        (background at the star), ``snr`` (matched-filter signal-to-noise),
        ``saturated`` (bool) and ``nn_dist`` (distance from the star's peak pixel to the
        nearest other detection's, pixels; inf when alone). ``meta`` records the parameters.

    Raises
    ------
    ValueError
        ``data`` is not 2-D, ``fwhm`` or ``threshold`` is not positive.

    Notes
    -----
    Detection: the background-subtracted image is convolved with a unit-sum Gaussian of
    the given FWHM; local maxima of the filtered image above ``threshold`` times its
    noise (the background rms times the square root of the sum of squared kernel
    weights, valid for uncorrelated pixel noise) are kept. No sharpness or roundness
    cut is applied (see the module notes). Centroids are Gaussian-windowed centroids.
    """
    arr = _as_image(data)
    if not fwhm or fwhm <= 0 or not np.isfinite(fwhm):
        raise ValueError(f"fwhm must be a positive number of pixels, got {fwhm!r}")
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold!r}")
    m = _as_mask(mask, arr.shape)
    bad = ~np.isfinite(arr) if m is None else (m | ~np.isfinite(arr))
    if background is None or background_rms is None:
        b, r = estimate_background(arr, mask=bad)
        background = b if background is None else background
        background_rms = r if background_rms is None else background_rms
    back = np.broadcast_to(np.asarray(background, dtype=float), arr.shape)
    rms = np.broadcast_to(np.asarray(background_rms, dtype=float), arr.shape)
    resid = np.where(bad, 0.0, arr - back)
    sig = fwhm / GAUSSIAN_SIGMA_TO_FWHM
    conv = ndimage.gaussian_filter(resid, sig, mode="constant", truncate=4.0)
    noise = rms * _kernel_norm(sig)
    iy, ix, nn = _peaks(conv, noise, bad, fwhm, threshold, border)
    peak = ndimage.maximum_filter(resid, size=3)[iy, ix] if len(ix) else np.zeros(0)
    if reject_sharp and len(ix):
        keep = peak <= max(3.0, math.pi * sig**2) * conv[iy, ix]
        iy, ix, nn, peak = iy[keep], ix[keep], nn[keep], peak[keep]
    if max_stars is not None and len(ix) > 2 * max_stars + 50:
        # centroid and measure only the candidates that can make the brightest max_stars
        keep = np.argsort(conv[iy, ix])[::-1][:2 * max_stars + 50]
        iy, ix, nn, peak = iy[keep], ix[keep], nn[keep], peak[keep]
    if len(ix) == 0:
        return _empty_star_table(fwhm, threshold)
    x, y = _windowed_centroids(resid, ix.astype(float), iy.astype(float), fwhm)
    flux = _aperture_sums(resid, x, y, max(2.0, 1.5 * fwhm))
    raw3 = ndimage.maximum_filter(np.where(bad, -np.inf, arr), size=3)[iy, ix]
    sat = np.zeros(len(x), bool) if saturation is None else raw3 >= saturation
    t = Table({"x": x, "y": y, "flux": np.asarray(flux, float), "peak": peak,
               "sky": back[iy, ix], "snr": conv[iy, ix] / noise[iy, ix], "saturated": sat,
               "nn_dist": nn})
    t.sort("flux", reverse=True)
    if max_stars is not None:
        t = t[:max_stars]
    t.meta.update({"fwhm_px": float(fwhm), "threshold_sigma": float(threshold),
                   "method": "matched filter + windowed centroid"})
    return t


def positions_of(stars: Table) -> np.ndarray:
    """Star positions as an array, in the table's order.

    Parameters
    ----------
    stars : astropy.table.Table
        A table with ``x`` and ``y`` columns (as :func:`find_stars` returns).

    Returns
    -------
    numpy.ndarray, shape (n, 2)
        0-based ``(x, y)`` pixel positions.
    """
    return np.column_stack([np.asarray(stars["x"], float), np.asarray(stars["y"], float)])


def _kernel_norm(sig: float) -> float:
    """sqrt(sum k**2) of the unit-sum Gaussian kernel ``gaussian_filter`` applies: the
    factor from pixel noise to filtered noise (uncorrelated pixels)."""
    delta = np.zeros((2 * int(4 * sig + 1) + 1,) * 2)
    delta[delta.shape[0] // 2, delta.shape[1] // 2] = 1.0
    kernel = ndimage.gaussian_filter(delta, sig, mode="constant", truncate=4.0)
    return math.sqrt(float((kernel**2).sum()))


def _peaks(conv, noise, bad, fwhm, threshold, border):
    """Local maxima of the filtered image above ``threshold * noise``, away from the
    border: rows, columns and the distance from each to its nearest other peak."""
    size = 2 * max(1, int(round(0.75 * fwhm))) + 1
    peaks = (conv == ndimage.maximum_filter(conv, size=size, mode="constant", cval=-np.inf))
    peaks &= conv > threshold * noise
    peaks &= ~bad
    b = math.ceil(fwhm) + 1 if border is None else int(border)
    if b > 0:
        peaks[:b, :] = peaks[-b:, :] = False
        peaks[:, :b] = peaks[:, -b:] = False
    # plateaus (e.g. saturated cores) give several equal maxima: keep one per plateau
    labels, n = ndimage.label(peaks)
    if n == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    flat = np.flatnonzero(peaks)
    _, first = np.unique(labels.ravel()[flat], return_index=True)
    iy, ix = np.unravel_index(flat[first], conv.shape)
    # isolation is judged against every detection, before any cut on brightness
    if len(ix) > 1:
        pk = np.column_stack([ix, iy]).astype(float)
        d, _ = cKDTree(pk).query(pk, k=2)
        nn = d[:, 1]
    else:
        nn = np.full(len(ix), np.inf)
    return iy, ix, nn


def _windowed_centroids(img: np.ndarray, x: np.ndarray, y: np.ndarray, fwhm: float,
                        iters: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-windowed centroids (SExtractor's XWIN/YWIN) starting from ``x, y``."""
    sig = max(fwhm, 1.0) / GAUSSIAN_SIGMA_TO_FWHM
    r = math.ceil(4 * sig) + 1
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    cut = np.nan_to_num(_cutouts(img, ix, iy, r))
    off = np.arange(-r, r + 1, dtype=float)
    gx = ix[:, None, None] + off[None, None, :]
    gy = iy[:, None, None] + off[None, :, None]
    cx, cy = x.astype(float).copy(), y.astype(float).copy()
    for _ in range(iters):
        w = np.exp(-((gx - cx[:, None, None]) ** 2 + (gy - cy[:, None, None]) ** 2) / (2 * sig**2))
        wi = w * cut
        s = wi.sum(axis=(1, 2))
        ok = s > 0
        norm = np.where(ok, s, 1.0)
        dx = np.where(ok, 2 * (wi * (gx - cx[:, None, None])).sum(axis=(1, 2)) / norm, 0.0)
        dy = np.where(ok, 2 * (wi * (gy - cy[:, None, None])).sum(axis=(1, 2)) / norm, 0.0)
        cx, cy = cx + dx, cy + dy
        if np.all(np.hypot(dx, dy) < 1e-3):
            break
    # a centroid that wandered off its peak (blend, artefact) falls back to the peak
    lost = ~np.isfinite(cx) | ~np.isfinite(cy) | (np.hypot(cx - x, cy - y) > max(1.0, fwhm / 2))
    cx[lost], cy[lost] = x[lost], y[lost]
    return cx, cy


def _aperture_sums(img: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Sums in circular apertures; each pixel weighs its approximate overlap with the
    circle (1 inside, 0 outside, linear across the half-pixel rim)."""
    r = math.ceil(radius) + 1
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    cut = np.nan_to_num(_cutouts(img, ix, iy, r))
    off = np.arange(-r, r + 1, dtype=float)
    dx = ix[:, None, None] + off[None, None, :] - x[:, None, None]
    dy = iy[:, None, None] + off[None, :, None] - y[:, None, None]
    w = np.clip(radius + 0.5 - np.hypot(dx, dy), 0.0, 1.0)
    return (w * cut).sum(axis=(1, 2))


def _empty_star_table(fwhm, threshold) -> Table:
    t = Table({k: np.zeros(0) for k in ("x", "y", "flux", "peak", "sky", "snr")})
    t["saturated"] = np.zeros(0, bool)
    t["nn_dist"] = np.zeros(0)
    t.meta.update({"fwhm_px": float(fwhm), "threshold_sigma": float(threshold)})
    return t
