"""Layer 2: circular-aperture photometry with honest errors, and instrumental magnitudes.

Pure functions on 2-D arrays: no file I/O, no printing. Pixel coordinates are 0-based
with the centre of the first pixel at ``(0, 0)`` (the numpy/photutils convention); ``x``
is the column, ``y`` the row.

Method
------
Exact circular apertures (photutils); the sky is the sigma-clipped median of a circular
annulus; the error follows the CCD equation (Merline & Howell 1995, Exp. Astron. 6, 163;
Howell 2006, *Handbook of CCD Astronomy*, eq. 4.4)::

    sigma_F**2 = F / g + n_pix * sigma_pix**2 + n_pix**2 * (pi / 2) * sigma_pix**2 / n_sky

with ``sigma_pix**2 = (S g + RN**2) / g**2`` per pixel (sky ``S``, read noise ``RN``,
gain ``g``), or the measured scatter of the annulus when the read noise is unknown; the
last term is the error of the sky level (the median of ``n_sky`` pixels has ``pi / 2``
times the variance of their mean). With an uncertainty plane the first two terms are
replaced by the sum of its variances over the aperture.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from astropy.stats import sigma_clip
from astropy.table import Table

from astrodart.calibration.pixels import repair_pixels
from astrodart.photometry._arrays import _as_image, _as_positions, _bad_mask

__all__ = [
    "PhotFlag",
    "SEVERE_FLAGS",
    "ApertureResult",
    "aperture_photometry_ccd",
    "aperture_photometry_radii",
    "instrumental_magnitude",
]


class PhotFlag(enum.IntFlag):
    """Quality flags of one photometric point (bits; 0 means good).

    ``SATURATED``: a pixel of the aperture is at or above the saturation level.
    ``BAD_PIXEL``: masked or non-finite pixels of the aperture, repaired from their
    neighbours, hold more than the allowed fraction of the flux (``max_repaired_fraction``).
    ``OFF_IMAGE``: the aperture runs off the frame.
    ``CENTROID``: re-centring failed or wandered; the given position was used.
    ``SKY``: fewer usable annulus pixels than required.
    ``NONPOSITIVE``: flux <= 0 (no magnitude).
    ``FAILED``: the frame could not be measured at all (values are NaN).

    Parameters
    ----------
    value : int
        The bits, e.g. ``PhotFlag(9)`` is ``SATURATED | CENTROID``.
    names, module, qualname, type, start, boundary : optional
        As for :class:`enum.IntFlag` (its functional API; not needed here).
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


@dataclass
class ApertureResult:
    """Aperture photometry of ``n`` stars on one frame (arrays of shape (n,)).

    Parameters
    ----------
    x, y : numpy.ndarray
        0-based aperture centres, pixels.
    flux, flux_err : numpy.ndarray
        Sky-subtracted flux and its 1-sigma error, data units (ADU or electrons).
    sky, sky_std : numpy.ndarray
        Sky level per pixel (sigma-clipped median of the annulus) and the clipped scatter
        of the annulus pixels, data units.
    area : numpy.ndarray
        Aperture area (pixels; repaired pixels included).
    n_sky : numpy.ndarray of int
        Annulus pixels kept after clipping.
    flags : numpy.ndarray of int
        :class:`PhotFlag` bits.
    r_ap, r_in, r_out : float
        Aperture radius and annulus radii, pixels.
    n_repaired : numpy.ndarray, optional
        Masked or non-finite pixels in the aperture (aperture-weighted), whose values were
        repaired from their neighbours before the sum.
    repaired_fraction : numpy.ndarray, optional
        Share of the sky-subtracted flux held by those repaired pixels.
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
    n_repaired: np.ndarray | None = None
    repaired_fraction: np.ndarray | None = None

    def to_table(self) -> Table:
        """The result as a table.

        Returns
        -------
        astropy.table.Table
            One row per star (the array attributes as columns), the radii in ``meta``.
        """
        t = Table(
            {
                k: getattr(self, k)
                for k in ("x", "y", "flux", "flux_err", "sky", "sky_std", "area", "n_sky", "flags",
                          "n_repaired", "repaired_fraction")
                if getattr(self, k) is not None
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
    max_repaired_fraction: float = 0.02,
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
        True for bad pixels (cosmic rays, defects, saturation). They are left out of the
        sky; inside an aperture they (and non-finite pixels) are repaired from their good
        neighbours (:func:`astrodart.calibration.pixels.repair_pixels`) and summed, so no
        flux is lost, and counted in ``n_repaired``.
    saturation : float, optional
        Level (data units) at or above which a pixel is saturated.
    sigma : float
        Sigma-clipping threshold for the sky annulus (median centre, MAD width).
    min_sky_pixels : int
        Fewer usable annulus pixels than this flags ``SKY``.
    max_repaired_fraction : float
        A point whose repaired pixels hold more than this share of its flux is flagged
        ``BAD_PIXEL`` (refused for light curves). A repaired pixel's value is an estimate:
        at the default 0.02, one repaired core pixel of a star a few pixels wide is refused,
        a few repaired wing pixels are not.

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
    return aperture_photometry_radii(
        data, positions, [r_ap], r_in, r_out, gain=gain, read_noise=read_noise,
        uncertainty=uncertainty, mask=mask, saturation=saturation, sigma=sigma,
        min_sky_pixels=min_sky_pixels, max_repaired_fraction=max_repaired_fraction,
    )[0]


def aperture_photometry_radii(
    data,
    positions,
    radii,
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
    max_repaired_fraction: float = 0.02,
) -> list[ApertureResult]:
    """:func:`aperture_photometry_ccd` at several aperture radii in one pass.

    The sky annulus is measured once and every circular aperture is summed in one call
    of :func:`photutils.aperture.aperture_photometry` (a list of apertures), so a grid of
    radii costs little more than one.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Calibrated image in data units (ADU, or electrons with ``gain=1``).
    positions : array_like, shape (n, 2)
        0-based ``(x, y)`` of the aperture centres.
    radii : sequence of float
        Aperture radii, pixels, each ``<= r_in``.
    r_in, r_out : float
        Inner and outer radius of the shared sky annulus, pixels.
    gain, read_noise, uncertainty, mask, saturation, sigma, min_sky_pixels, max_repaired_fraction
        As for :func:`aperture_photometry_ccd`.

    Returns
    -------
    list of ApertureResult
        One per radius, in the order of ``radii``; each is what
        :func:`aperture_photometry_ccd` gives for that radius.

    Raises
    ------
    ValueError
        Radii out of order, non-positive gain, or badly shaped inputs.
    """
    from photutils.aperture import CircularAperture, aperture_photometry

    arr = _as_image(data)
    xy = _as_positions(positions)
    radii = [float(r) for r in np.atleast_1d(radii)]
    if not radii or not all(0 < r <= r_in < r_out for r in radii):
        raise ValueError(
            f"radii must satisfy 0 < r_ap <= r_in < r_out, got {radii}, {r_in}, {r_out}"
        )
    if not (gain and gain > 0):
        raise ValueError(f"gain must be positive (e-/data unit), got {gain!r}")
    if not 0 <= max_repaired_fraction <= 1:
        raise ValueError(f"max_repaired_fraction={max_repaired_fraction!r}: allowed 0 to 1")
    bad, unc, skies = _sky_of_stars(arr, xy, mask, uncertainty, r_in, r_out, sigma)
    sky, sky_std, n_sky, sky_unc2 = skies
    work, unc, repaired = _repair_in_apertures(arr, unc, bad, xy, max(radii))
    lost = ~np.isfinite(work)  # not repairable (no good pixel near): left out of the sum
    if unc is not None:
        lost |= ~np.isfinite(unc)
        unc = np.where(lost, 0.0, unc)
    aps = [CircularAperture(xy, r=r) for r in radii]
    table = aperture_photometry(np.where(lost, 0.0, work), aps, error=unc, mask=lost,
                                method="exact")
    rep = aperture_photometry(np.where(repaired & ~lost, work, 0.0), aps, method="exact")
    n_rep = aperture_photometry(repaired.astype(float), aps, method="exact")
    out = []
    for k, (r_ap, ap) in enumerate(zip(radii, aps)):
        flags = np.zeros(len(xy), dtype=np.int64)
        flags[_off_image(xy, r_ap, arr.shape)] |= PhotFlag.OFF_IMAGE
        # (an annulus partly off the frame only shrinks n_sky, flagged through SKY)
        flags[n_sky < min_sky_pixels] |= PhotFlag.SKY
        flags |= _aperture_pixel_flags(arr, bad, ap, saturation)
        ap_sum = np.asarray(table[f"aperture_sum_{k}"], dtype=float)
        ap_var = (np.asarray(table[f"aperture_sum_err_{k}"], dtype=float) ** 2
                  if unc is not None else None)
        area = np.atleast_1d(ap.area_overlap(arr, mask=lost)).astype(float)
        flux = ap_sum - sky * area
        var = _flux_variance(flux, area, sky, sky_std, n_sky, gain, read_noise, ap_var,
                             sky_unc2)
        n_repaired = np.asarray(n_rep[f"aperture_sum_{k}"], dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.abs(np.asarray(rep[f"aperture_sum_{k}"], float) - sky * n_repaired) / flux
        share = np.where(n_repaired > 0, share, 0.0)
        refused = (n_repaired > 0) & ~(share <= max_repaired_fraction)
        flags[refused | (_in_aperture(lost, ap) > 0)] |= PhotFlag.BAD_PIXEL
        flags[~(flux > 0)] |= PhotFlag.NONPOSITIVE
        out.append(ApertureResult(
            x=xy[:, 0].copy(), y=xy[:, 1].copy(), flux=flux, flux_err=np.sqrt(var),
            sky=sky, sky_std=sky_std, area=area, n_sky=n_sky, flags=flags,
            r_ap=r_ap, r_in=float(r_in), r_out=float(r_out),
            n_repaired=n_repaired, repaired_fraction=share,
        ))
    return out


def _sky_of_stars(arr, xy, mask, uncertainty, r_in: float, r_out: float, sigma: float):
    """The bad-pixel map (mask, non-finite data or uncertainty), the uncertainty plane (or
    None) and the annulus sky of each star (:func:`_annulus_sky`'s four arrays)."""
    bad = _bad_mask(arr, mask)
    unc = _uncertainty_plane(uncertainty, arr.shape)
    if unc is not None:
        bad = bad | ~np.isfinite(unc)
    return bad, unc, _annulus_sky(arr, bad, unc, xy, r_in, r_out, sigma)


def _repair_in_apertures(arr, unc, bad, xy, radius: float):
    """Copies of ``arr`` (and ``unc``) whose bad pixels near each position (within
    ``radius`` + 2 px) are repaired from their good neighbours, and the map of the
    repaired pixels. Only cut-outs around the stars are repaired: a frame's NaN border
    (an aligned frame outside its footprint) costs nothing unless a star sits on it."""
    work = np.array(arr, dtype=float)
    work_unc = None if unc is None else np.array(unc, dtype=float)
    repaired = np.zeros(arr.shape, bool)
    if not bad.any():
        return work, work_unc, repaired
    ny, nx = arr.shape
    half = int(np.ceil(radius)) + 2
    for x, y in xy:
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        ix, iy = int(round(x)), int(round(y))
        ys = slice(max(iy - half, 0), max(min(iy + half + 1, ny), 0))
        xs = slice(max(ix - half, 0), max(min(ix + half + 1, nx), 0))
        cut_bad = bad[ys, xs]
        if not (cut_bad & ~repaired[ys, xs]).any():
            continue
        work[ys, xs] = repair_pixels(arr[ys, xs], cut_bad)
        if work_unc is not None:
            work_unc[ys, xs] = repair_pixels(unc[ys, xs], cut_bad)
        repaired[ys, xs] |= cut_bad
    return work, work_unc, repaired


def _in_aperture(image_bool: np.ndarray, ap) -> np.ndarray:
    """Aperture-weighted count of the True pixels of ``image_bool`` in each aperture."""
    from photutils.aperture import aperture_photometry

    if not image_bool.any():
        return np.zeros(len(np.atleast_2d(ap.positions)))
    return np.asarray(aperture_photometry(image_bool.astype(float), ap,
                                          method="exact")["aperture_sum"], float)


def _uncertainty_plane(uncertainty, shape) -> np.ndarray | None:
    """The 1-sigma plane of ``uncertainty`` (array or NDUncertainty) as floats, or None."""
    if uncertainty is None:
        return None
    unc = np.asarray(getattr(uncertainty, "array", uncertainty), dtype=float)
    if unc.shape != shape:
        raise ValueError(f"uncertainty shape {unc.shape} differs from data shape {shape}")
    return unc


def _off_image(xy: np.ndarray, radius: float, shape) -> np.ndarray:
    """True where a circle of ``radius`` around ``xy`` runs off an image of ``shape``."""
    ny, nx = shape
    return (
        (xy[:, 0] - radius < -0.5)
        | (xy[:, 0] + radius > nx - 0.5)
        | (xy[:, 1] - radius < -0.5)
        | (xy[:, 1] + radius > ny - 0.5)
    )


def _annulus_sky(arr, bad, unc, xy, r_in: float, r_out: float, sigma: float):
    """Sigma-clipped sky of each annulus.

    Returns
    -------
    sky, sky_std : numpy.ndarray, shape (n,)
        Median and scatter (ddof=1) of the kept annulus pixels, data units.
    n_sky : numpy.ndarray of int, shape (n,)
        Kept pixels.
    sky_unc2 : numpy.ndarray, shape (n,)
        Mean squared uncertainty of the kept pixels (NaN without ``unc``).
    """
    from photutils.aperture import CircularAnnulus

    n = len(xy)
    sky = np.full(n, np.nan)
    sky_std = np.full(n, np.nan)
    n_sky = np.zeros(n, dtype=np.int64)
    sky_unc2 = np.full(n, np.nan)
    ann_masks = CircularAnnulus(xy, r_in=r_in, r_out=r_out).to_mask(method="center")
    if not isinstance(ann_masks, list):  # a scalar aperture gives a single mask
        ann_masks = [ann_masks]
    badf = bad.astype(float)
    for i in range(n):
        vals = ann_masks[i].get_values(arr)
        usable = ~(ann_masks[i].get_values(badf) > 0) & np.isfinite(vals)
        good = vals[usable]
        if not good.size:
            continue
        clipped = sigma_clip(
            good, sigma=sigma, maxiters=10, cenfunc="median", stdfunc="mad_std", masked=True
        )
        kept = np.asarray(clipped.data[~clipped.mask])
        if kept.size:
            sky[i] = float(np.median(kept))
            sky_std[i] = float(np.std(kept, ddof=1)) if kept.size > 1 else np.nan
            n_sky[i] = kept.size
            if unc is not None:
                uvals = ann_masks[i].get_values(unc)[usable]
                sky_unc2[i] = float(np.mean(uvals[~clipped.mask] ** 2))
    return sky, sky_std, n_sky, sky_unc2


def _aperture_pixel_flags(arr, bad, ap, saturation: float | None) -> np.ndarray:
    """``SATURATED`` bit of each aperture of ``ap``: a valid pixel at or above ``saturation``
    (a masked saturated core is repaired and refused through ``max_repaired_fraction``)."""
    flags = np.zeros(len(np.atleast_2d(ap.positions)), dtype=np.int64)
    if saturation is None:
        return flags
    ap_masks = ap.to_mask(method="exact")
    if not isinstance(ap_masks, list):
        ap_masks = [ap_masks]
    marked = np.where(bad, -np.inf, arr)
    for i, m in enumerate(ap_masks):
        if np.any(m.get_values(marked) >= saturation):
            flags[i] |= PhotFlag.SATURATED
    return flags


def _flux_variance(flux, area, sky, sky_std, n_sky, gain, read_noise, ap_var, sky_unc2):
    """Variance of the sky-subtracted flux: the CCD equation (Merline & Howell 1995) with
    the error of a median sky, or the uncertainty plane's sums when ``ap_var`` is given."""
    with np.errstate(invalid="ignore", divide="ignore"):
        nsky = np.where(n_sky > 0, n_sky, np.nan)
        if ap_var is not None:
            return ap_var + area**2 * (np.pi / 2) * sky_unc2 / nsky
        if read_noise is not None:
            var_pix = (np.clip(sky, 0, None) * gain + float(read_noise) ** 2) / gain**2
        else:
            var_pix = sky_std**2
        return (
            np.clip(flux, 0, None) / gain
            + area * var_pix
            + area**2 * (np.pi / 2) * var_pix / nsky
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
