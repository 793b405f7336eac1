"""Layer 2: aperture photometry with honest errors, ensemble light curves, transit fit.

Pure functions on 2-D arrays and light-curve arrays: no file I/O, no printing.
Pixel coordinates are 0-based with the centre of the first pixel at ``(0, 0)`` (the
numpy/photutils convention); ``x`` is the column, ``y`` the row.

Methods and their sources
-------------------------
* **Centroids** (:func:`recentre`): the peak of the Gaussian-smoothed image near the
  given position, refined by the iterative Gaussian-windowed centroid (SExtractor's
  ``XWIN``; Bertin & Arnouts 1996, A&AS 117, 393).
* **FWHM of the measured stars** (:func:`gaussian_fwhm`): a circular Gaussian plus a
  constant fitted by least squares on a cutout; fast enough to run on every frame.
* **Apertures** (:func:`aperture_photometry_ccd`): exact circular apertures (photutils);
  the sky is the sigma-clipped median of a circular annulus; the error follows the CCD
  equation (Merline & Howell 1995, Exp. Astron. 6, 163; Howell 2006, *Handbook of CCD
  Astronomy*, eq. 4.4)::

      sigma_F**2 = F / g + n_pix * sigma_pix**2 + n_pix**2 * (pi / 2) * sigma_pix**2 / n_sky

  with ``sigma_pix**2 = (S g + RN**2) / g**2`` per pixel (sky ``S``, read noise ``RN``,
  gain ``g``), or the measured scatter of the annulus when the read noise is unknown; the
  last term is the error of the sky level (the median of ``n_sky`` pixels has
  ``pi / 2`` times the variance of their mean). With an uncertainty plane the first two
  terms are replaced by the sum of its variances over the aperture.
* **Frame-to-frame tracking** (:func:`bright_star_positions`, :func:`frame_transform`,
  :func:`image_offset`): a similarity transform between star lists found by astroalign's
  triangle invariants (Beroiz, Cabral & Sanchez 2020, A&C 32, 100384), or a translation
  by phase correlation of the images when too few stars match.
* **Ensemble** (:func:`ensemble_light_curve`): a weighted artificial comparison star
  whose weights are iterated as the inverse variance of each comparison relative to the
  others (Broeg, Fernandez & Neuhaeuser 2005, AN 326, 134); comparisons whose scatter
  exceeds their expected noise far more than the rest's are declared variable and
  dropped.
* **Transit** (:func:`fit_transit`): a trapezoid (total duration ``T14``, ingress
  ``T12``, flat-bottom depth) times a polynomial baseline, fitted by least squares;
  errors from the covariance, inflated by the reduced chi-square and by the
  time-averaging red-noise factor beta (Winn et al. 2008, ApJ 683, 1076). The trapezoid
  is the usual approximation of a limb-darkened transit (Carter et al. 2008, ApJ 689,
  499); for radii and limb darkening use a full model (Mandel & Agol 2002, ApJ 580, L171).
"""

from __future__ import annotations

import enum
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from astropy.stats import mad_std, sigma_clip
from astropy.table import Table
from scipy import ndimage, optimize

__all__ = [
    "PhotFlag",
    "GAUSSIAN_SIGMA_TO_FWHM",
    "gaussian_fwhm",
    "frame_fwhm",
    "recentre",
    "ApertureResult",
    "aperture_photometry_ccd",
    "instrumental_magnitude",
    "bright_star_positions",
    "frame_transform",
    "apply_transform",
    "image_offset",
    "EnsembleResult",
    "ensemble_light_curve",
    "bin_light_curve",
    "trapezoid_model",
    "TransitFit",
    "fit_transit",
    "time_averaged_beta",
]

log = logging.getLogger("astrodart")

#: FWHM of a Gaussian in units of its standard deviation, 2 sqrt(2 ln 2).
GAUSSIAN_SIGMA_TO_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))


class PhotFlag(enum.IntFlag):
    """Quality flags of one photometric point (bits; 0 means good).

    ``SATURATED``: a pixel of the aperture is at or above the saturation level.
    ``BAD_PIXEL``: a masked or non-finite pixel lies in the aperture (left out of the sum).
    ``OFF_IMAGE``: the aperture runs off the frame.
    ``CENTROID``: re-centring failed or wandered; the given position was used.
    ``SKY``: fewer usable annulus pixels than required.
    ``NONPOSITIVE``: flux <= 0 (no magnitude).
    ``FAILED``: the frame could not be measured at all (values are NaN).
    """

    OK = 0
    SATURATED = 1
    BAD_PIXEL = 2
    OFF_IMAGE = 4
    CENTROID = 8
    SKY = 16
    NONPOSITIVE = 32
    FAILED = 64


#: Flags that make a point unusable for a light curve.
SEVERE_FLAGS = (
    PhotFlag.SATURATED
    | PhotFlag.BAD_PIXEL
    | PhotFlag.OFF_IMAGE
    | PhotFlag.SKY
    | PhotFlag.NONPOSITIVE
    | PhotFlag.FAILED
)


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


# ----------------------------------------------------------------------------- FWHM
def _fit_gaussian(cut: np.ndarray, xc: float, yc: float, sigma0: float):
    good = np.isfinite(cut)
    if good.sum() < 9:
        return None
    yy, xx = np.mgrid[: cut.shape[0], : cut.shape[1]]
    xx, yy, z = xx[good].astype(float), yy[good].astype(float), cut[good]
    edge = np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]])
    b0 = float(np.nanmedian(edge))
    a0 = float(np.nanmax(cut) - b0)
    if not a0 > 0:
        return None

    def resid(p):
        a, x0, y0, s, b = p
        return a * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s)) + b - z

    def jac(p):
        a, x0, y0, s, _ = p
        dx, dy = xx - x0, yy - y0
        r2 = dx * dx + dy * dy
        g = np.exp(-r2 / (2 * s * s))
        return np.column_stack(
            [g, a * g * dx / s**2, a * g * dy / s**2, a * g * r2 / s**3, np.ones_like(g)]
        )

    try:
        sol = optimize.least_squares(
            resid,
            [a0, xc, yc, sigma0, b0],
            jac=jac,
            method="lm",
            x_scale=[a0, 1, 1, sigma0, abs(b0) + a0 * 0.01],
        )
    except (ValueError, RuntimeError):
        return None
    a, x0, y0, s, _ = sol.x
    if not sol.success or a <= 0 or not (0 <= x0 < cut.shape[1]) or not (0 <= y0 < cut.shape[0]):
        return None
    return abs(s)


def gaussian_fwhm(data, positions, *, fwhm_guess: float = 3.0, mask=None) -> np.ndarray:
    """FWHM of each star from a circular Gaussian fit.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Image in data units (background included: a constant is fitted).
    positions : array_like, shape (n, 2)
        0-based ``(x, y)`` of the stars, good to a pixel or two.
    fwhm_guess : float
        Starting FWHM in pixels; sets the cutout size (``2 * ceil(2.5 * guess) + 1``,
        refitted once with a larger cutout if the star is much wider).
    mask : array_like of bool, shape (ny, nx), optional
        True for pixels to ignore.

    Returns
    -------
    numpy.ndarray, shape (n,)
        FWHM in pixels; NaN where the fit failed.

    Notes
    -----
    Model ``A exp(-r**2 / (2 s**2)) + B`` sampled at pixel centres; FWHM = 2.3548 ``s``.
    Good to a few per cent for stars wider than ~2.5 px — ample for sizing apertures.
    """
    arr = _as_image(data)
    bad = _bad_mask(arr, mask)
    work = np.where(bad, np.nan, arr)
    xy = _as_positions(positions)
    out = np.full(len(xy), np.nan)
    for i, (x, y) in enumerate(xy):
        guess = max(float(fwhm_guess), 1.0)
        for _ in range(2):
            half = int(np.clip(math.ceil(2.5 * guess), 4, 30))
            cut, x0, y0 = _cutout(work, x, y, half)
            if cut is None:
                break
            s = _fit_gaussian(cut, x - x0, y - y0, guess / GAUSSIAN_SIGMA_TO_FWHM)
            if s is None:
                break
            f = s * GAUSSIAN_SIGMA_TO_FWHM
            out[i] = f
            if f < 1.6 * guess:
                break
            guess = f
    return out


def frame_fwhm(
    data,
    positions,
    *,
    fwhm_guess: float = 3.0,
    mask=None,
    min_fwhm: float = 0.8,
    max_fwhm: float = 40.0,
    max_stars: int = 12,
) -> float:
    """Median FWHM (pixels) of the stars at ``positions`` (see :func:`gaussian_fwhm`).

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Image.
    positions : array_like, shape (n, 2)
        0-based ``(x, y)`` of point sources (e.g. the target and comparison stars).
    fwhm_guess : float
        Starting FWHM, pixels.
    mask : array_like of bool, shape (ny, nx), optional
        True for pixels to ignore.
    min_fwhm, max_fwhm : float
        Fits outside this range (hot pixels, blends) are rejected, pixels.
    max_stars : int
        Only the first ``max_stars`` positions are fitted.

    Returns
    -------
    float
        Median of the accepted fits; NaN when none is usable.
    """
    f = gaussian_fwhm(data, _as_positions(positions)[:max_stars], fwhm_guess=fwhm_guess, mask=mask)
    f = f[np.isfinite(f) & (f >= min_fwhm) & (f <= max_fwhm)]
    return float(np.median(f)) if f.size else float("nan")


# ------------------------------------------------------------------------- centroids
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


# ------------------------------------------------------------------------ apertures
@dataclass
class ApertureResult:
    """Aperture photometry of ``n`` stars on one frame (arrays of shape (n,)).

    Attributes
    ----------
    x, y : numpy.ndarray
        0-based aperture centres, pixels.
    flux, flux_err : numpy.ndarray
        Sky-subtracted flux and its 1-sigma error, data units (ADU or electrons).
    sky, sky_std : numpy.ndarray
        Sky level per pixel (sigma-clipped median of the annulus) and the clipped scatter
        of the annulus pixels, data units.
    area : numpy.ndarray
        Aperture area used (pixels; masked pixels excluded).
    n_sky : numpy.ndarray of int
        Annulus pixels kept after clipping.
    flags : numpy.ndarray of int
        :class:`PhotFlag` bits.
    r_ap, r_in, r_out : float
        Aperture radius and annulus radii, pixels.
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    sky: np.ndarray
    sky_std: np.ndarray
    area: np.ndarray
    n_sky: np.ndarray
    flags: np.ndarray
    r_ap: float
    r_in: float
    r_out: float

    def to_table(self) -> Table:
        """The result as an :class:`astropy.table.Table`, radii in ``meta``."""
        t = Table(
            {
                k: getattr(self, k)
                for k in ("x", "y", "flux", "flux_err", "sky", "sky_std", "area", "n_sky", "flags")
            }
        )
        t.meta.update(r_ap=self.r_ap, r_in=self.r_in, r_out=self.r_out)
        return t


def aperture_photometry_ccd(
    data,
    positions,
    r_ap: float,
    r_in: float,
    r_out: float,
    *,
    gain: float = 1.0,
    read_noise: float | None = None,
    uncertainty=None,
    mask=None,
    saturation: float | None = None,
    sigma: float = 3.0,
    min_sky_pixels: int = 20,
) -> ApertureResult:
    """Circular-aperture photometry with an annulus sky and CCD-equation errors.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Calibrated image in data units (ADU, or electrons with ``gain=1``).
    positions : array_like, shape (n, 2)
        0-based ``(x, y)`` of the aperture centres.
    r_ap : float
        Aperture radius, pixels.
    r_in, r_out : float
        Inner and outer radius of the sky annulus, pixels (``r_ap <= r_in < r_out``).
    gain : float
        Electrons per data unit (1 when the data are in electrons).
    read_noise : float, optional
        Read noise in electrons. When None (and no ``uncertainty``) the per-pixel
        background variance is the measured scatter of the annulus instead of the model.
    uncertainty : array_like, shape (ny, nx), optional
        Per-pixel 1-sigma uncertainty (data units) including every noise source (as
        written by ``deviation_calculation``); used instead of the CCD model.
    mask : array_like of bool, shape (ny, nx), optional
        True for bad pixels: left out of sums and sky, and flagged ``BAD_PIXEL`` when in
        an aperture.
    saturation : float, optional
        Level (data units) at or above which a pixel is saturated.
    sigma : float
        Sigma-clipping threshold for the sky annulus (median centre, MAD width).
    min_sky_pixels : int
        Fewer usable annulus pixels than this flags ``SKY``.

    Returns
    -------
    ApertureResult

    Raises
    ------
    ValueError
        Radii out of order, non-positive gain, or badly shaped inputs.

    Notes
    -----
    The CCD equation of Merline & Howell (1995) (see the module notes), with the sky
    term of a median. The source term uses ``max(F, 0)``. The median of a Poisson sky is
    low by about ``1/6`` electron per pixel (the skewness of the distribution), which
    biases faint, sky-dominated fluxes high by ~0.1 sigma; the bias is the same for the
    target and the comparisons and cancels in differential photometry.
    """
    from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry

    arr = _as_image(data)
    xy = _as_positions(positions)
    if not (0 < r_ap <= r_in < r_out):
        raise ValueError(
            f"radii must satisfy 0 < r_ap <= r_in < r_out, got {r_ap}, {r_in}, {r_out}"
        )
    if not (gain and gain > 0):
        raise ValueError(f"gain must be positive (e-/data unit), got {gain!r}")
    bad = _bad_mask(arr, mask)
    clean = np.where(bad, 0.0, arr)
    unc = None
    if uncertainty is not None:
        unc = np.asarray(getattr(uncertainty, "array", uncertainty), dtype=float)
        if unc.shape != arr.shape:
            raise ValueError(f"uncertainty shape {unc.shape} differs from data shape {arr.shape}")
        bad = bad | ~np.isfinite(unc)
        unc = np.where(bad, 0.0, unc)
    n = len(xy)
    flags = np.zeros(n, dtype=np.int64)
    ny, nx = arr.shape
    off = (
        (xy[:, 0] - r_out < -0.5)
        | (xy[:, 0] + r_out > nx - 0.5)
        | (xy[:, 1] - r_out < -0.5)
        | (xy[:, 1] + r_out > ny - 0.5)
    )
    off_ap = (
        (xy[:, 0] - r_ap < -0.5)
        | (xy[:, 0] + r_ap > nx - 0.5)
        | (xy[:, 1] - r_ap < -0.5)
        | (xy[:, 1] + r_ap > ny - 0.5)
    )
    flags[off_ap] |= PhotFlag.OFF_IMAGE

    ap = CircularAperture(xy, r=r_ap)
    table = aperture_photometry(clean, ap, error=unc, mask=bad, method="exact")
    ap_sum = np.asarray(table["aperture_sum"], dtype=float)
    ap_var = np.asarray(table["aperture_sum_err"], dtype=float) ** 2 if unc is not None else None
    area = np.atleast_1d(ap.area_overlap(arr, mask=bad)).astype(float)

    sky = np.full(n, np.nan)
    sky_std = np.full(n, np.nan)
    n_sky = np.zeros(n, dtype=np.int64)
    sky_unc2 = np.full(n, np.nan)
    ann_masks = CircularAnnulus(xy, r_in=r_in, r_out=r_out).to_mask(method="center")
    ap_masks = ap.to_mask(method="exact")
    if not isinstance(ann_masks, list):  # a scalar aperture gives a single mask
        ann_masks, ap_masks = [ann_masks], [ap_masks]
    for i in range(n):
        vals = ann_masks[i].get_values(arr)
        bvals = ann_masks[i].get_values(bad.astype(float)) > 0
        good = vals[~bvals & np.isfinite(vals)]
        if good.size:
            clipped = sigma_clip(
                good, sigma=sigma, maxiters=10, cenfunc="median", stdfunc="mad_std", masked=True
            )
            kept = np.asarray(clipped.data[~clipped.mask])
            if kept.size:
                sky[i] = float(np.median(kept))
                sky_std[i] = float(np.std(kept, ddof=1)) if kept.size > 1 else np.nan
                n_sky[i] = kept.size
                if unc is not None:
                    uvals = ann_masks[i].get_values(unc)[~bvals & np.isfinite(vals)]
                    sky_unc2[i] = float(np.mean(uvals[~clipped.mask] ** 2))
        if n_sky[i] < min_sky_pixels:
            flags[i] |= PhotFlag.SKY
        in_ap = ap_masks[i].get_values(bad.astype(float))
        if np.any(in_ap > 0):
            flags[i] |= PhotFlag.BAD_PIXEL
        if saturation is not None and np.any(
            ap_masks[i].get_values(np.where(bad, -np.inf, arr)) >= saturation
        ):
            flags[i] |= PhotFlag.SATURATED

    flux = ap_sum - sky * area
    with np.errstate(invalid="ignore", divide="ignore"):
        nsky = np.where(n_sky > 0, n_sky, np.nan)
        if unc is not None:
            var = ap_var + area**2 * (np.pi / 2) * sky_unc2 / nsky
        else:
            if read_noise is not None:
                var_pix = (np.clip(sky, 0, None) * gain + float(read_noise) ** 2) / gain**2
            else:
                var_pix = sky_std**2
            var = (
                np.clip(flux, 0, None) / gain
                + area * var_pix
                + area**2 * (np.pi / 2) * var_pix / nsky
            )
    flux_err = np.sqrt(var)
    flags[~(flux > 0)] |= PhotFlag.NONPOSITIVE
    del off  # annulus partly off the frame only shrinks n_sky (flagged through SKY)
    return ApertureResult(
        x=xy[:, 0].copy(),
        y=xy[:, 1].copy(),
        flux=flux,
        flux_err=flux_err,
        sky=sky,
        sky_std=sky_std,
        area=area,
        n_sky=n_sky,
        flags=flags,
        r_ap=float(r_ap),
        r_in=float(r_in),
        r_out=float(r_out),
    )


def instrumental_magnitude(flux, flux_err, exptime: float, zmag: float = 25.0):
    """Instrumental magnitude of a count rate, and its error.

    Parameters
    ----------
    flux, flux_err : array_like
        Flux and 1-sigma error in data units (per exposure).
    exptime : float or array_like
        Exposure time(s), seconds.
    zmag : float
        Zero point: the magnitude of 1 data unit per second (25 by default, as AstroDART).

    Returns
    -------
    mag, mag_err : numpy.ndarray
        ``zmag - 2.5 log10(flux / exptime)`` and ``2.5 / ln(10) * flux_err / flux``; NaN
        where ``flux <= 0``.
    """
    f = np.asarray(flux, dtype=float)
    e = np.asarray(flux_err, dtype=float)
    t = np.asarray(exptime, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pos = f > 0
        mag = np.where(pos, zmag - 2.5 * np.log10(np.where(pos, f, 1.0) / t), np.nan)
        err = np.where(pos, 2.5 / np.log(10) * e / np.where(pos, f, 1.0), np.nan)
    return mag, err


# ------------------------------------------------------------------------- tracking
def bright_star_positions(
    data,
    *,
    fwhm: float = 3.0,
    n: int = 40,
    threshold: float = 5.0,
    border: int | None = None,
    mask=None,
    bin_factor: int = 1,
) -> np.ndarray:
    """Positions of the brightest point sources, brightest first (for matching frames).

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Image in data units.
    fwhm : float
        Expected FWHM, pixels (matched-filter width).
    n : int
        Maximum number of stars returned.
    threshold : float
        Detection threshold in sigma of the filtered background.
    border : int, optional
        Margin ignored at the edges, pixels; default ``2 * fwhm + 2``.
    mask : array_like of bool, shape (ny, nx), optional
        True for pixels to ignore.
    bin_factor : int
        Detect on the image block-averaged by this factor (faster; for matching frames),
        then re-centre on the full image.

    Returns
    -------
    numpy.ndarray, shape (m, 2)
        0-based ``(x, y)``, m <= n, ordered by smoothed peak height.

    Notes
    -----
    The background-subtracted image is convolved with a Gaussian of the given FWHM;
    local maxima above ``threshold`` times the filtered noise are kept, except those far
    sharper than the kernel (hot pixels, cosmic rays: raw peak more than
    ``max(3, pi sigma**2)`` times the smoothed peak).
    """
    full = _as_image(data)
    full_bad = _bad_mask(full, mask)
    k = int(bin_factor)
    if k > 1:
        ny, nx = (full.shape[0] // k) * k, (full.shape[1] // k) * k
        blocks = np.where(full_bad, np.nan, full)[:ny, :nx].reshape(ny // k, k, nx // k, k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
            arr = np.nanmean(blocks, axis=(1, 3))
        bad = ~np.isfinite(arr)
        fwhm_full, fwhm = fwhm, max(fwhm / k, 1.0)
        if border is not None:
            border = int(math.ceil(border / k))
    else:
        arr, bad, fwhm_full = full, full_bad, fwhm
    sample = arr[::3, ::3][~bad[::3, ::3]]
    clipped = sigma_clip(
        sample, sigma=3, maxiters=5, cenfunc="median", stdfunc="mad_std", masked=True
    )
    kept = clipped.data[~clipped.mask]
    bkg, rms = float(np.median(kept)), float(mad_std(kept))
    resid = np.where(bad, 0.0, arr - bkg)
    sig = max(fwhm, 1.0) / GAUSSIAN_SIGMA_TO_FWHM
    smooth = ndimage.gaussian_filter(resid, sig, mode="constant")
    knorm = 1.0 / (2.0 * math.sqrt(math.pi) * sig)  # sqrt(sum k**2) of a unit Gaussian
    half = int(math.ceil(fwhm))
    b = max(int(2 * fwhm + 2) if border is None else int(border), half + 1)
    above = smooth > threshold * rms * knorm
    above[:b], above[-b:], above[:, :b], above[:, -b:] = False, False, False, False
    iy, ix = np.nonzero(above)
    # local maxima among the (few) pixels above threshold: cheaper than a full-frame filter
    is_max = np.ones(iy.size, bool)
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            if dx or dy:
                is_max &= smooth[iy, ix] >= smooth[iy + dy, ix + dx]
    iy, ix = iy[is_max], ix[is_max]
    if ix.size == 0:
        return np.zeros((0, 2))
    raw = np.max([resid[iy + dy, ix + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    # a star of the kernel's width has raw/smoothed peak ~2, a single hot pixel 2 pi sig**2
    keep = raw <= max(3.0, math.pi * sig**2) * smooth[iy, ix]
    order = np.argsort(smooth[iy, ix][keep])[::-1][:n]
    xy = np.column_stack([ix[keep][order], iy[keep][order]]).astype(float)
    if k > 1:
        xy = k * xy + (k - 1) / 2.0  # block centre in full-resolution pixels
    xy, _ = recentre(full, xy, fwhm_full, search_radius=max(1.0, float(k)), mask=full_bad)
    return xy


def _fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (scale, rotation, shift) taking src to dst."""
    # x' = a x - b y + tx ; y' = b x + a y + ty  (linear in a, b, tx, ty)
    n = len(src)
    design = np.zeros((2 * n, 4))
    design[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    design[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    sol, *_ = np.linalg.lstsq(design, dst.reshape(-1), rcond=None)
    a, b, tx, ty = sol
    return np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 1.0]])


def _match_by_offset_votes(a: np.ndarray, b: np.ndarray, n_vote: int, tol: float):
    """Pairs (i, j) of a and b after the offset most voted for by the brightest stars."""
    from scipy.spatial import cKDTree

    d = (b[:n_vote, None, :] - a[None, :n_vote, :]).reshape(-1, 2)
    cells = np.floor(d / tol).astype(np.int64)
    keys, counts = np.unique(cells, axis=0, return_counts=True)
    lookup = {tuple(k): c for k, c in zip(keys, counts)}
    # a true offset may straddle a cell edge: score each cell with its neighbours
    score = [
        sum(lookup.get((k[0] + i, k[1] + j), 0) for i in (-1, 0, 1) for j in (-1, 0, 1))
        for k in keys
    ]
    best = keys[int(np.argmax(score))]
    near = np.all(np.abs(cells - best) <= 1, axis=1)
    shift = np.median(d[near], axis=0)
    dist, j = cKDTree(b).query(a + shift, distance_upper_bound=tol)
    i = np.nonzero(np.isfinite(dist))[0]
    j = j[i]
    # keep one-to-one pairs only
    _, first = np.unique(j, return_index=True)
    return i[first], j[first]


def frame_transform(ref_xy, xy, *, tolerance: float = 3.0, n_vote: int = 20) -> np.ndarray:
    """Similarity transform taking reference-frame pixel positions to another frame.

    Parameters
    ----------
    ref_xy : array_like, shape (n, 2)
        Star positions on the reference frame, brightest first.
    xy : array_like, shape (m, 2)
        Star positions on the other frame, brightest first.
    tolerance : float
        Matching radius, pixels.
    n_vote : int
        Brightest stars of each list that vote for the offset.

    Returns
    -------
    numpy.ndarray, shape (3, 3)
        Homogeneous matrix ``M`` with ``[x', y', 1] = M @ [x, y, 1]`` (see
        :func:`apply_transform`).

    Raises
    ------
    ValueError
        Fewer than 3 stars in a list, or no consistent match.

    Notes
    -----
    First the offset most voted for by all pairs of the brightest stars (robust to
    regular or crowded fields, where shapes alone are ambiguous) with a least-squares
    similarity fit to the stars it pairs, refined once; when fewer than ``max(4, n / 4)``
    stars pair up (e.g. a field rotated by a meridian flip), the triangle-invariant match
    of astroalign (Beroiz et al. 2020).
    """
    a = _as_positions(ref_xy)
    b = _as_positions(xy)
    if len(a) < 3 or len(b) < 3:
        raise ValueError(f"need at least 3 stars on each frame to match, got {len(a)} and {len(b)}")
    need = max(4, min(len(a), len(b)) // 4)
    i, j = _match_by_offset_votes(a, b, n_vote, tolerance)
    if len(i) >= need:
        from scipy.spatial import cKDTree

        m = _fit_similarity(a[i], b[j])
        dist, jj = cKDTree(b).query(apply_transform(m, a), distance_upper_bound=tolerance / 2)
        ii = np.nonzero(np.isfinite(dist))[0]
        if len(ii) >= need:
            m = _fit_similarity(a[ii], b[jj[ii]])
        return m
    import astroalign

    try:
        transform, _ = astroalign.find_transform(a, b, max_control_points=50)
    except Exception as exc:  # astroalign.MaxIterError, TooFewStarsError
        raise ValueError(f"star patterns do not match ({type(exc).__name__}: {exc})") from exc
    return np.asarray(transform.params, dtype=float)


def apply_transform(matrix, xy) -> np.ndarray:
    """Apply a homogeneous transform to pixel positions.

    Parameters
    ----------
    matrix : array_like, shape (3, 3)
        Transform from :func:`frame_transform`.
    xy : array_like, shape (n, 2) or (2,)
        0-based ``(x, y)`` positions.

    Returns
    -------
    numpy.ndarray, shape (n, 2)
        Transformed positions.
    """
    m = np.asarray(matrix, dtype=float)
    p = _as_positions(xy)
    h = np.column_stack([p, np.ones(len(p))]) @ m.T
    return h[:, :2] / h[:, 2:3]


def image_offset(reference, image) -> tuple[float, float]:
    """Translation between two images of the same field by phase correlation.

    Parameters
    ----------
    reference, image : array_like, shape (ny, nx)
        The two images (same shape).

    Returns
    -------
    (dx, dy) : tuple of float
        Shift in pixels such that a star at ``(x, y)`` on ``reference`` is at
        ``(x + dx, y + dy)`` on ``image`` (integer precision, refined to ~0.1 px by a
        parabola through the correlation peak).
    """
    a = _as_image(reference)
    b = _as_image(image)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")

    def prep(z):
        z = np.nan_to_num(z - np.nanmedian(z))
        return np.clip(z, 0, np.percentile(z, 99.9))  # stars, not the few brightest pixels

    fa, fb = np.fft.rfft2(prep(a)), np.fft.rfft2(prep(b))
    cross = fb * np.conj(fa)
    cross /= np.abs(cross) + 1e-12
    corr = np.fft.irfft2(cross, s=a.shape)
    corr = ndimage.gaussian_filter(corr, 1.0, mode="wrap")
    iy, ix = np.unravel_index(np.argmax(corr), corr.shape)

    def refine(c_m, c_0, c_p):
        den = c_m - 2 * c_0 + c_p
        return 0.5 * (c_m - c_p) / den if den != 0 else 0.0

    ny, nx = corr.shape
    dy = iy + refine(corr[(iy - 1) % ny, ix], corr[iy, ix], corr[(iy + 1) % ny, ix])
    dx = ix + refine(corr[iy, (ix - 1) % nx], corr[iy, ix], corr[iy, (ix + 1) % nx])
    dy = dy - ny if dy > ny / 2 else dy
    dx = dx - nx if dx > nx / 2 else dx
    return float(dx), float(dy)


# -------------------------------------------------------------------------- ensemble
@dataclass
class EnsembleResult:
    """A differential light curve against a weighted ensemble of comparison stars.

    Attributes
    ----------
    rel_flux, rel_flux_err : numpy.ndarray, shape (n,)
        Target flux divided by the ensemble, normalised to a median of 1 over the
        normalisation points, and its 1-sigma error. NaN at unusable points.
    reference, reference_err : numpy.ndarray, shape (n,)
        The ensemble (weighted mean of the median-normalised comparisons) and its error.
    weights : numpy.ndarray, shape (m,)
        Final weight of each comparison (sum 1; 0 for variable or unusable ones).
    comparison_curves : numpy.ndarray, shape (m, n)
        Each comparison divided by the ensemble of the *other* used comparisons,
        normalised to 1 (for diagnostics and plots).
    diagnostics : astropy.table.Table
        One row per comparison: ``comparison`` (1-based), ``median_flux``, ``weight``,
        ``rms`` (scatter of its comparison curve), ``expected_rms`` (from its errors and
        the others'), ``excess`` (rms / expected), ``chi2_red``, ``variable`` (bool),
        ``used`` (bool).
    valid : numpy.ndarray of bool, shape (n,)
        Points where the differential flux is defined.
    iterations : int
        Weight iterations run.
    """

    rel_flux: np.ndarray
    rel_flux_err: np.ndarray
    reference: np.ndarray
    reference_err: np.ndarray
    weights: np.ndarray
    comparison_curves: np.ndarray
    diagnostics: Table = field(repr=False)
    valid: np.ndarray = field(repr=False)
    iterations: int = 0

    @property
    def rms(self) -> float:
        """Point-to-point scatter (standard deviation) of the valid differential fluxes."""
        v = self.rel_flux[self.valid]
        return float(np.std(v, ddof=1)) if v.size > 1 else float("nan")


def _robust_std(r: np.ndarray) -> float:
    r = r[np.isfinite(r)]
    if r.size < 3:
        return float("nan")
    c = sigma_clip(r, sigma=5, maxiters=5, cenfunc="median", stdfunc="mad_std", masked=True)
    kept = c.data[~c.mask]
    return float(np.std(kept, ddof=1)) if kept.size > 2 else float("nan")


def _weighted_ref(c, e2, ok, w, use):
    """Weighted mean over comparisons ``use`` at each time, and its error."""
    ww = np.where(ok & use[:, None], w[:, None], 0.0)
    s = ww.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.where(s > 0, (ww * np.where(ok, c, 0.0)).sum(axis=0) / s, np.nan)
        err = np.where(s > 0, np.sqrt((ww**2 * np.where(ok, e2, 0.0)).sum(axis=0)) / s, np.nan)
    return ref, err


def ensemble_light_curve(
    target_flux,
    target_err,
    comp_flux,
    comp_err,
    *,
    valid=None,
    norm_mask=None,
    variable_threshold: float = 3.0,
    max_iter: int = 30,
    tol: float = 1e-4,
) -> EnsembleResult:
    """Differential light curve of a target against a weighted comparison ensemble.

    Parameters
    ----------
    target_flux, target_err : array_like, shape (n,)
        Target flux and 1-sigma error per frame (any consistent unit).
    comp_flux, comp_err : array_like, shape (m, n)
        Comparison fluxes and errors, one row per comparison star.
    valid : array_like of bool, shape (n,) or (m + 1, n), optional
        Points allowed in the computation (e.g. unflagged ones); a 2-D mask gives one row
        for the target then one per comparison. Non-finite and non-positive fluxes are
        always excluded.
    norm_mask : array_like of bool, shape (n,), optional
        Points defining the normalisation of the target curve (e.g. out of transit);
        default all valid points.
    variable_threshold : float
        A comparison whose ``excess`` (rms / expected rms) exceeds this factor times the
        median excess of the used comparisons is declared variable and dropped (needs at
        least 3 comparisons).
    max_iter : int
        Maximum weight iterations.
    tol : float
        Convergence tolerance on the relative change of the weights.

    Returns
    -------
    EnsembleResult

    Raises
    ------
    ValueError
        Shapes inconsistent or no usable comparison.

    Notes
    -----
    Broeg et al. (2005): each comparison is normalised by its median; starting from
    inverse-variance weights of the photometric errors, each comparison's light curve
    relative to the weighted mean of the others is computed and its weight set to the
    inverse of that curve's variance; this is iterated to convergence, so noisy and
    variable stars lose weight automatically. The target is divided by the final
    weighted mean and normalised.
    """
    tf = np.asarray(target_flux, dtype=float).ravel()
    te = np.asarray(target_err, dtype=float).ravel()
    cf = np.atleast_2d(np.asarray(comp_flux, dtype=float))
    ce = np.atleast_2d(np.asarray(comp_err, dtype=float))
    n = tf.size
    if te.shape != tf.shape or cf.shape[1] != n or ce.shape != cf.shape:
        raise ValueError(
            f"shapes differ: target {tf.shape}/{te.shape}, comparisons "
            f"{cf.shape}/{ce.shape} (expected (m, {n}))"
        )
    m = cf.shape[0]
    if m == 0:
        raise ValueError("at least one comparison star is needed")
    if valid is None:
        vt = np.ones(n, bool)
        vc = np.ones((m, n), bool)
    else:
        v = np.asarray(valid, dtype=bool)
        if v.shape == (n,):
            vt, vc = v, np.broadcast_to(v, (m, n))
        elif v.shape == (m + 1, n):
            vt, vc = v[0], v[1:]
        else:
            raise ValueError(f"valid must have shape ({n},) or ({m + 1}, {n}), got {v.shape}")
    ok = vc & np.isfinite(cf) & np.isfinite(ce) & (cf > 0) & (ce > 0)
    med = np.array([np.median(cf[i, ok[i]]) if ok[i].any() else np.nan for i in range(m)])
    usable = np.isfinite(med) & (ok.sum(axis=1) >= max(3, n // 4))
    if not usable.any():
        raise ValueError("no comparison star has enough usable points")
    with np.errstate(invalid="ignore", divide="ignore"):
        c = cf / med[:, None]
        e2 = (ce / med[:, None]) ** 2
    w = np.zeros(m)
    for i in range(m):
        if usable[i]:
            w[i] = 1.0 / np.median(e2[i, ok[i]])
    use = usable.copy()
    variable = np.zeros(m, bool)
    rms = np.full(m, np.nan)
    expected = np.full(m, np.nan)
    chi2 = np.full(m, np.nan)
    curves = np.full((m, n), np.nan)
    iterations = 0
    while True:
        for it in range(max_iter):
            iterations += 1
            w_new = w.copy()
            for i in np.nonzero(use)[0]:
                others = use.copy()
                others[i] = False
                if not others.any():
                    curves[i] = c[i]
                    rms[i] = _robust_std(c[i][ok[i]])
                    expected[i] = float(np.sqrt(np.median(e2[i, ok[i]])))
                    chi2[i] = np.nan
                    continue
                ref, ref_err = _weighted_ref(c, e2, ok, w, others)
                with np.errstate(invalid="ignore", divide="ignore"):
                    r = c[i] / ref
                    rerr = r * np.sqrt(e2[i] / c[i] ** 2 + (ref_err / ref) ** 2)
                good = ok[i] & np.isfinite(r)
                if good.sum() < 3:
                    continue
                r = r / np.median(r[good])
                curves[i] = np.where(good, r, np.nan)
                rms[i] = _robust_std(r[good])
                expected[i] = float(np.median(rerr[good]))
                chi2[i] = float(np.mean(((r[good] - 1.0) / rerr[good]) ** 2))
                if np.isfinite(rms[i]) and rms[i] > 0:
                    w_new[i] = 1.0 / rms[i] ** 2
            w_new[~use] = 0.0
            change = np.max(np.abs(w_new - w) / np.where(w > 0, w, 1.0))
            w = w_new
            if change < tol:
                break
        newly = np.zeros(m, bool)
        if use.sum() >= 3:
            excess = rms / expected
            base = np.nanmedian(excess[use])
            newly = use & (excess > variable_threshold * base)
        if not newly.any():
            break
        for i in np.nonzero(newly)[0]:
            log.info(
                "comparison %d looks variable (rms %.4g vs expected %.4g); dropped",
                i + 1,
                rms[i],
                expected[i],
            )
        variable |= newly
        use &= ~newly
        w[~use] = 0.0

    ref, ref_err = _weighted_ref(c, e2, ok, w, use)
    good = vt & np.isfinite(tf) & np.isfinite(te) & (tf > 0) & np.isfinite(ref) & (ref > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = tf / ref
        rel_err = rel * np.sqrt((te / tf) ** 2 + (ref_err / ref) ** 2)
    nm = good if norm_mask is None else (good & np.asarray(norm_mask, dtype=bool))
    if not nm.any():
        nm = good
    norm = np.median(rel[nm]) if nm.any() else np.nan
    rel = np.where(good, rel / norm, np.nan)
    rel_err = np.where(good, rel_err / norm, np.nan)
    wsum = w[use].sum()
    weights = np.where(use, w / wsum if wsum > 0 else 0.0, 0.0)
    diag = Table(
        {
            "comparison": np.arange(1, m + 1),
            "median_flux": med,
            "weight": weights,
            "rms": rms,
            "expected_rms": expected,
            "excess": rms / expected,
            "chi2_red": chi2,
            "variable": variable,
            "used": use,
        }
    )
    diag.meta["method"] = "Broeg et al. 2005 iterative inverse-variance weighting"
    return EnsembleResult(
        rel_flux=rel,
        rel_flux_err=rel_err,
        reference=ref,
        reference_err=ref_err,
        weights=weights,
        comparison_curves=curves,
        diagnostics=diag,
        valid=good,
        iterations=iterations,
    )


def bin_light_curve(time, flux, flux_err, bin_width: float):
    """Bin a light curve in time by inverse-variance weighted means.

    Parameters
    ----------
    time, flux, flux_err : array_like, shape (n,)
        Light curve; non-finite points are ignored.
    bin_width : float
        Bin width in the units of ``time`` (days for BJD).

    Returns
    -------
    t, f, e : numpy.ndarray, shape (k,)
        Mean time, weighted mean flux and its error per non-empty bin. The error is the
        larger of the formal one and the scatter in the bin over sqrt(count) (when the
        bin holds 3 points or more).
    count : numpy.ndarray of int, shape (k,)
        Points per bin.
    """
    t = np.asarray(time, dtype=float)
    f = np.asarray(flux, dtype=float)
    e = np.asarray(flux_err, dtype=float)
    good = np.isfinite(t) & np.isfinite(f) & np.isfinite(e) & (e > 0)
    t, f, e = t[good], f[good], e[good]
    if t.size == 0:
        z = np.zeros(0)
        return z, z, z, np.zeros(0, int)
    idx = np.floor((t - t.min()) / bin_width).astype(int)
    out_t, out_f, out_e, out_n = [], [], [], []
    for k in np.unique(idx):
        s = idx == k
        w = 1.0 / e[s] ** 2
        mean = np.sum(w * f[s]) / np.sum(w)
        err = 1.0 / math.sqrt(np.sum(w))
        if s.sum() >= 3:
            err = max(err, float(np.std(f[s], ddof=1) / math.sqrt(s.sum())))
        out_t.append(t[s].mean())
        out_f.append(mean)
        out_e.append(err)
        out_n.append(int(s.sum()))
    return np.array(out_t), np.array(out_f), np.array(out_e), np.array(out_n)


# --------------------------------------------------------------------------- transit
def trapezoid_model(time, t0: float, depth: float, t14: float, t12: float) -> np.ndarray:
    """A trapezoidal transit, normalised to 1 out of transit.

    Parameters
    ----------
    time : array_like, shape (n,)
        Times (same unit as the other parameters, e.g. BJD days).
    t0 : float
        Mid-transit time.
    depth : float
        Fractional depth of the flat bottom.
    t14 : float
        Total duration, first to fourth contact.
    t12 : float
        Ingress (= egress) duration, ``0 < t12 <= t14 / 2``.

    Returns
    -------
    numpy.ndarray, shape (n,)
        ``1`` outside, ``1 - depth`` between second and third contact, linear in between.
    """
    t = np.asarray(time, dtype=float)
    half = 0.5 * t14
    t12 = min(max(t12, 1e-12), half)
    dt = np.abs(t - t0)
    frac = np.clip((half - dt) / t12, 0.0, 1.0)
    return 1.0 - depth * frac


def time_averaged_beta(residuals, errors=None, bin_sizes: Sequence[int] | None = None) -> float:
    """Red-noise factor beta from the time-averaging method (Winn et al. 2008).

    Parameters
    ----------
    residuals : array_like, shape (n,)
        Residuals in time order.
    errors : array_like, shape (n,), optional
        Not used for the ratio (kept for symmetry with fitting code).
    bin_sizes : sequence of int, optional
        Numbers of points per bin; default 2 .. n / 5.

    Returns
    -------
    float
        Median over bin sizes of ``sigma_N / (sigma_1 / sqrt(N) * sqrt(M / (M - 1)))``
        (``M`` bins), at least 1; 1 when there are too few points.
    """
    r = np.asarray(residuals, dtype=float)
    r = r[np.isfinite(r)]
    n = r.size
    if n < 10:
        return 1.0
    s1 = np.std(r, ddof=1)
    sizes = bin_sizes or list(range(2, max(3, n // 5) + 1))
    betas = []
    for nb in sizes:
        m = n // nb
        if m < 3:
            continue
        means = r[: m * nb].reshape(m, nb).mean(axis=1)
        expected = s1 / math.sqrt(nb) * math.sqrt(m / (m - 1))
        betas.append(np.std(means, ddof=1) / expected)
    return float(max(1.0, np.median(betas))) if betas else 1.0


@dataclass
class TransitFit:
    """Result of :func:`fit_transit`.

    Attributes
    ----------
    t0, t0_err : float
        Mid-transit time and 1-sigma error (units of the input times).
    depth, depth_err : float
        Fractional flat-bottom depth and error.
    t14, t14_err : float
        Total duration and error.
    t12, t12_err : float
        Ingress duration and error.
    baseline : numpy.ndarray
        Polynomial baseline coefficients (constant first) in ``time - t_ref``, then the
        airmass coefficient when fitted.
    t_ref : float
        Reference time of the baseline polynomial.
    chi2, dof : float, int
        Chi-square and degrees of freedom of the best fit.
    rms : float
        Standard deviation of the residuals (all points).
    oot_rms : float
        Standard deviation of the residuals out of transit, per point.
    beta : float
        Red-noise factor applied to the errors.
    error_scale : float
        Total factor applied to the formal errors (sqrt of reduced chi-square, if > 1,
        times beta).
    n_points : int
        Points fitted.
    """

    t0: float
    t0_err: float
    depth: float
    depth_err: float
    t14: float
    t14_err: float
    t12: float
    t12_err: float
    baseline: np.ndarray
    t_ref: float
    chi2: float
    dof: int
    rms: float
    oot_rms: float
    beta: float
    error_scale: float
    n_points: int
    _degree: int = field(default=1, repr=False)
    _airmass_mean: float | None = field(default=None, repr=False)

    @property
    def chi2_red(self) -> float:
        """Reduced chi-square of the best fit (before any error scaling)."""
        return self.chi2 / self.dof if self.dof > 0 else float("nan")

    def transit(self, time) -> np.ndarray:
        """The trapezoid alone (normalised to 1) at ``time``."""
        return trapezoid_model(time, self.t0, self.depth, self.t14, self.t12)

    def baseline_model(self, time, airmass=None) -> np.ndarray:
        """The baseline at ``time`` (and ``airmass`` when an airmass term was fitted)."""
        tau = np.asarray(time, dtype=float) - self.t_ref
        b = np.polyval(self.baseline[: self._degree + 1][::-1], tau)
        if self._airmass_mean is not None:
            if airmass is None:
                raise ValueError("this fit has an airmass term: pass airmass=")
            b = b + self.baseline[-1] * (np.asarray(airmass, dtype=float) - self._airmass_mean)
        return b

    def model(self, time, airmass=None) -> np.ndarray:
        """Full model (transit times baseline).

        Parameters
        ----------
        time : array_like, shape (n,)
            Times (units of the fitted times).
        airmass : array_like, shape (n,), optional
            Needed when the fit has an airmass term.

        Returns
        -------
        numpy.ndarray, shape (n,)
            Model flux.

        Raises
        ------
        ValueError
            The fit has an airmass term and ``airmass`` is None.
        """
        return self.transit(time) * self.baseline_model(time, airmass)

    def summary(self, time_unit: str = "d") -> str:
        """A one-paragraph text summary (durations also in hours for day units)."""
        h = 24.0 if time_unit == "d" else 1.0
        return (
            f"t0 = {self.t0:.5f} +- {self.t0_err:.5f} {time_unit}"
            f" ({self.t0_err * h * 60:.1f} min); depth = {100 * self.depth:.3f} +- "
            f"{100 * self.depth_err:.3f} %; T14 = {self.t14 * h:.3f} +- {self.t14_err * h:.3f} h;"
            f" T12 = {self.t12 * h:.3f} h; rms = {1e3 * self.rms:.2f} ppt "
            f"(out of transit {1e3 * self.oot_rms:.2f} ppt); chi2_red = {self.chi2_red:.2f};"
            f" beta = {self.beta:.2f}; n = {self.n_points}"
        )


def fit_transit(
    time,
    flux,
    flux_err,
    *,
    t0: float | None = None,
    duration: float | None = None,
    baseline_degree: int = 1,
    airmass=None,
    t0_window: float | None = None,
    min_depth: float = 0.0,
    max_depth: float = 0.5,
) -> TransitFit:
    """Fit a trapezoidal transit times a polynomial baseline to a light curve.

    Parameters
    ----------
    time : array_like, shape (n,)
        Times, e.g. BJD_TDB in days.
    flux, flux_err : array_like, shape (n,)
        Normalised differential flux and its 1-sigma error. Non-finite points are ignored.
    t0 : float, optional
        Guess of the mid-time (e.g. from an ephemeris); default: a grid over the data.
    duration : float, optional
        Guess of the total duration T14 (same unit as ``time``); default: a grid of 5 %
        to 60 % of the time span.
    baseline_degree : int
        Degree of the polynomial baseline in time (0, 1 or 2).
    airmass : array_like, shape (n,), optional
        Adds a term linear in airmass to the baseline.
    t0_window : float, optional
        Half-width of the allowed range of t0 around the guess; default the data range.
    min_depth, max_depth : float
        Bounds of the depth (a dimming: ``min_depth=0`` by default, so that noise bumps
        in the baseline cannot be fitted as "negative transits").

    Returns
    -------
    TransitFit

    Raises
    ------
    ValueError
        Too few points for the number of parameters, or bad ``baseline_degree``.

    Notes
    -----
    Least squares (``scipy.optimize.least_squares``, trust-region reflective) started
    from a grid of mid-times, durations and ingress fractions (around the guesses when
    given), keeping the best; errors are the square roots of the diagonal
    of ``(J^T J)^-1``, multiplied by ``sqrt(chi2_red)`` when it exceeds 1 and by the
    red-noise factor :func:`time_averaged_beta` of the residuals (Winn et al. 2008).
    """
    t = np.asarray(time, dtype=float)
    f = np.asarray(flux, dtype=float)
    e = np.asarray(flux_err, dtype=float)
    if not (t.shape == f.shape == e.shape):
        raise ValueError(f"time, flux, flux_err differ in shape: {t.shape}, {f.shape}, {e.shape}")
    if baseline_degree not in (0, 1, 2):
        raise ValueError(f"baseline_degree must be 0, 1 or 2, got {baseline_degree!r}")
    good = np.isfinite(t) & np.isfinite(f) & np.isfinite(e) & (e > 0)
    am = None
    if airmass is not None:
        am = np.asarray(airmass, dtype=float)
        if am.shape != t.shape:
            raise ValueError(f"airmass shape {am.shape} differs from time shape {t.shape}")
        good &= np.isfinite(am)
    t, f, e = t[good], f[good], e[good]
    am = am[good] if am is not None else None
    order = np.argsort(t)
    t, f, e = t[order], f[order], e[order]
    am_mean = None
    if am is not None:
        am = am[order]
        am_mean = float(np.mean(am))
    nb = baseline_degree + 1 + (1 if am is not None else 0)
    npar = 4 + nb
    if t.size < npar + 3:
        raise ValueError(f"{t.size} usable points are too few to fit {npar} parameters")
    t_ref = float(0.5 * (t.min() + t.max()))
    # fit in times relative to t_ref: least_squares' finite-difference step is relative to
    # each parameter (~1.5e-8 |p|), i.e. ~50 min for a t0 in absolute JD, which wrecks the
    # Jacobian (the optimisation of t0 and every error derived from it)
    t = t - t_ref
    if t0 is not None:
        t0 = float(t0) - t_ref
    span = float(t.max() - t.min())
    cadence = float(np.median(np.diff(t))) if t.size > 1 else span

    def baseline(p_b):
        tau = t
        b = np.polyval(p_b[: baseline_degree + 1][::-1], tau)
        if am is not None:
            b = b + p_b[-1] * (am - am_mean)
        return b

    def resid(p):
        t0_, depth, t14, f12 = p[:4]
        model = trapezoid_model(t, t0_, depth, t14, f12 * 0.5 * t14) * baseline(p[4:])
        return (f - model) / e

    if t0 is not None and t0_window is not None:
        lo_t0, hi_t0 = t0 - t0_window, t0 + t0_window
    else:
        lo_t0, hi_t0 = t.min() - 0.25 * span, t.max() + 0.25 * span
    min_dur = max(3 * cadence, 0.02 * span)
    if not min_depth < max_depth:
        raise ValueError(f"need min_depth < max_depth, got {min_depth}, {max_depth}")
    lo = [lo_t0, min_depth, min_dur, 0.02] + [-np.inf] * nb
    hi = [hi_t0, max_depth, 2.0 * span, 1.0] + [np.inf] * nb
    # the trapezoid's chi-square surface has many local minima (it is piecewise smooth in
    # t0 and degenerate between depth and ingress): start from a grid, keep the best
    if duration is not None:
        dur_grid = [duration * k for k in (0.75, 1.0, 1.3)]
    else:
        dur_grid = list(np.array([0.05, 0.1, 0.2, 0.35, 0.6]) * span)
    if t0 is not None:
        t0_grid = [t0 + k * dur_grid[1 if duration is not None else 2] for k in (-0.25, 0.0, 0.25)]
    else:
        t0_grid = list(np.linspace(t.min(), t.max(), 13))
    base0 = [float(np.median(f))] + [0.0] * (nb - 1)
    best = None
    for g0 in t0_grid:
        g0 = float(np.clip(g0, lo[0], hi[0]))
        for gd in dur_grid:
            gd = float(np.clip(gd, lo[2] * 1.01, hi[2] * 0.99))
            inside = np.abs(t - g0) < gd / 4
            outside = np.abs(t - g0) > gd / 2
            if inside.any() and outside.any():
                d0 = 1.0 - np.median(f[inside]) / np.median(f[outside])
            else:
                d0 = 0.01
            for g12 in (0.2, 0.5, 0.9):
                d0 = float(np.clip(d0, min_depth + 0.05 * (max_depth - min_depth), 0.9 * max_depth))
                p0 = [g0, d0, gd, g12] + base0
                try:
                    sol = optimize.least_squares(resid, p0, bounds=(lo, hi), x_scale="jac")
                except ValueError:
                    continue
                if best is None or sol.cost < best.cost:
                    best = sol
    if best is None:
        raise ValueError("the transit fit failed from every starting point")
    p = best.x
    r = resid(p)
    chi2 = float(np.sum(r**2))
    dof = int(t.size - npar)
    jac = best.jac
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            cov = np.linalg.pinv(jac.T @ jac)
        except np.linalg.LinAlgError:
            cov = np.full((npar, npar), np.nan)
    t14 = float(p[2])
    t12 = float(p[3] * 0.5 * t14)
    model = trapezoid_model(t, p[0], p[1], t14, t12) * baseline(p[4:])
    res = f - model
    beta = time_averaged_beta(res)
    scale = max(1.0, math.sqrt(chi2 / dof)) if dof > 0 else 1.0
    scale *= beta
    perr = np.sqrt(np.clip(np.diag(cov), 0, None)) * scale
    # error of T12 from those of f12 and T14 (first order, ignoring their covariance)
    t12_err = float(math.hypot(perr[3] * 0.5 * t14, p[3] * 0.5 * perr[2]))
    oot = np.abs(t - p[0]) > 0.5 * t14
    oot_rms = float(np.std(res[oot], ddof=1)) if oot.sum() > 2 else float("nan")
    return TransitFit(
        t0=float(p[0]) + t_ref,
        t0_err=float(perr[0]),
        depth=float(p[1]),
        depth_err=float(perr[1]),
        t14=t14,
        t14_err=float(perr[2]),
        t12=t12,
        t12_err=t12_err,
        baseline=np.asarray(p[4:], dtype=float),
        t_ref=t_ref,
        chi2=chi2,
        dof=dof,
        rms=float(np.std(res, ddof=1)),
        oot_rms=oot_rms,
        beta=float(beta),
        error_scale=float(scale),
        n_points=int(t.size),
        _degree=baseline_degree,
        _airmass_mean=am_mean,
    )
