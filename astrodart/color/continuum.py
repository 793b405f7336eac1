"""Layer 2: continuum subtraction of narrow-band frames (H-alpha, [O III], [S II]).

A narrow-band frame holds the line emission plus the stellar (and nebular) continuum
that the filter passes; a broad-band frame of the same field (R for H-alpha, V for
[O III]) holds the continuum. The continuum's share is fitted on the stars, which are
pure continuum: the stars are detected on the broad-band frame
(:func:`astrodart.sources.stars.find_stars`), measured in both frames with the same
apertures and local sky annuli (:func:`astrodart.photometry.apertures.aperture_photometry_ccd`),
and the scale is the inverse-variance weighted mean of their narrow/broad flux ratios
left by a median/MAD sigma clip (bright stars weigh most: faint ones carry the bias of
the sky annuli). The scaled
broad-band frame is then subtracted with astropy's NDData arithmetic, propagating both
frames' uncertainties and the scale's own (standard error of the clipped median).

The frames must be registered on one grid (``resample_frame`` or the aligner) and of
similar seeing (a star's residual is a ring when the PSFs differ; see
:func:`astrodart.color.composite.match_psf`).

References
----------
Method: Waller 1990, PASP 102, 1217 (continuum scaling on field stars); Spector et al.
2012, New Astron. 17, 524 (star-based scaling for H-alpha imaging).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.stats import sigma_clip

from astrodart.calibration.arithmetic import imarith
from astrodart.frames.checks import check_number
from astrodart.photometry.apertures import aperture_photometry_ccd
from astrodart.sources.psf import fwhm_of_stars
from astrodart.sources.stars import find_stars, positions_of

__all__ = ["ContinuumFit", "continuum_scale", "continuum_subtract"]

#: Fewest stars a continuum scale is fitted on.
MIN_CONTINUUM_STARS = 3


@dataclass(frozen=True)
class ContinuumFit:
    """The continuum scale fitted on stars by :func:`continuum_scale`.

    Parameters
    ----------
    scale : float
        Narrow-band flux per unit of broad-band flux of a pure-continuum source.
    scale_err : float
        Standard error of ``scale`` (of the inverse-variance mean, inflated by the square
        root of the reduced chi-square when the ratios scatter more than their errors).
    xy : numpy.ndarray
        ``(n, 2)`` 0-based positions of the stars used.
    ratios : numpy.ndarray
        Their narrow/broad flux ratios (clipped ones included).
    fwhm : float
        Seeing FWHM used for the apertures (pixels; radius 2 FWHM, sky 3-5 FWHM).
    """

    scale: float
    scale_err: float
    xy: np.ndarray
    ratios: np.ndarray
    fwhm: float

    @property
    def n_stars(self) -> int:
        """Number of stars the scale was fitted on."""
        return len(self.xy)


def _frame_parts(ccd: CCDData):
    mask = None if ccd.mask is None else np.asarray(ccd.mask, bool)
    unc = None if ccd.uncertainty is None else ccd.uncertainty.represent_as(
        StdDevUncertainty).array
    return np.asarray(ccd.data, float), mask, unc


def _measure(ccd: CCDData, xy, fwhm: float):
    data, mask, unc = _frame_parts(ccd)
    return aperture_photometry_ccd(data, xy, 2 * fwhm, 3 * fwhm, 5 * fwhm, uncertainty=unc,
                                   mask=mask)


def continuum_scale(narrow: CCDData, broad: CCDData, *, fwhm: float | None = None,
                    threshold: float = 10.0, max_stars: int = 200, min_snr: float = 20.0,
                    sigma: float = 3.0) -> ContinuumFit:
    """The scale of the broad-band frame's continuum in the narrow-band frame, on stars.

    Parameters
    ----------
    narrow, broad : astropy.nddata.CCDData
        Registered frames of one shape (uncertainty planes used when present).
    fwhm : float, optional
        Seeing FWHM, pixels (default: measured on the broad-band stars).
    threshold : float
        Detection threshold on the broad-band frame, sigma.
    max_stars : int
        Brightest stars detected at most.
    min_snr : float
        Fewest signal-to-noise a star's broad-band flux needs to be used.
    sigma : float
        Clipping threshold of the ratios (median centre, MAD spread) before their
        weighted mean.

    Returns
    -------
    ContinuumFit
        The scale, its error, the stars used.

    Raises
    ------
    ValueError
        Frames of different shapes, or fewer than three clean stars (unflagged in both
        frames, broad-band S/N above ``min_snr``).

    Notes
    -----
    Method: Waller 1990 (PASP 102, 1217); libraries: photutils apertures through
    :func:`astrodart.photometry.apertures.aperture_photometry_ccd`, astropy
    ``sigma_clip``.
    """
    if narrow.shape != broad.shape:
        raise ValueError(f"continuum_scale: narrow has shape {narrow.shape}, broad "
                         f"{broad.shape}; register them on one grid first")
    check_number("min_snr", min_snr, minimum=0, owner="continuum_scale")
    data, mask, _ = _frame_parts(broad)
    guess = fwhm if fwhm is not None else 3.0
    stars = find_stars(data, guess, threshold, mask=mask, max_stars=max_stars,
                       reject_sharp=True)
    xy = positions_of(stars)
    if fwhm is None and len(xy) >= MIN_CONTINUUM_STARS:
        measured = fwhm_of_stars(data, xy[:50], mask=mask, fwhm_guess=guess)
        fwhm = float(measured) if np.isfinite(measured) else guess
    fwhm = float(fwhm or guess)
    nb, bb = _measure(narrow, xy, fwhm), _measure(broad, xy, fwhm)
    good = ((nb.flags == 0) & (bb.flags == 0) & np.isfinite(nb.flux)
            & (bb.flux > min_snr * bb.flux_err))
    if good.sum() < MIN_CONTINUUM_STARS:
        raise ValueError(f"continuum_scale: {int(good.sum())} clean stars with broad-band "
                         f"S/N > {min_snr} found; at least {MIN_CONTINUUM_STARS} are needed "
                         "(lower threshold/min_snr, or give the scale)")
    ratios = nb.flux[good] / bb.flux[good]
    ratio_err = np.abs(ratios) * np.hypot(nb.flux_err[good] / nb.flux[good],
                                          bb.flux_err[good] / bb.flux[good])
    scale, scale_err = _weighted_ratio(ratios, ratio_err, sigma)
    return ContinuumFit(scale, scale_err, xy[good], ratios, fwhm)


def _weighted_ratio(ratios, errors, sigma: float) -> tuple[float, float]:
    """Inverse-variance mean of the ratios left by a median/MAD sigma clip, and its error
    (inflated by the square root of the reduced chi-square when above 1)."""
    clipped = sigma_clip(ratios, sigma=sigma, cenfunc="median", stdfunc="mad_std",
                         maxiters=10)
    keep = ~np.ma.getmaskarray(clipped) & np.isfinite(errors) & (errors > 0)
    if keep.sum() < MIN_CONTINUUM_STARS:  # too few with errors: the clipped median
        keep = ~np.ma.getmaskarray(clipped)
        return float(np.median(ratios[keep])), float(1.2533 * np.std(ratios[keep])
                                                     / np.sqrt(keep.sum()))
    w = 1.0 / errors[keep] ** 2
    mean = float(np.sum(w * ratios[keep]) / np.sum(w))
    chi2 = float(np.sum(w * (ratios[keep] - mean) ** 2)) / max(int(keep.sum()) - 1, 1)
    return mean, float(np.sqrt(max(chi2, 1.0) / np.sum(w)))


def continuum_subtract(narrow: CCDData, broad: CCDData, *, scale: float | None = None,
                       scale_err: float = 0.0, **fit) -> tuple[CCDData, ContinuumFit | None]:
    """Line emission alone: the narrow-band frame minus the scaled broad-band frame.

    Parameters
    ----------
    narrow, broad : astropy.nddata.CCDData
        Registered frames of one shape and unit (sky-subtracted if the result should
        have a zero sky: the skies are subtracted with the same scale).
    scale : float, optional
        The continuum scale; default fitted on the stars (:func:`continuum_scale`).
    scale_err : float
        Its standard error when ``scale`` is given.
    **fit
        Options of :func:`continuum_scale` (``fwhm``, ``threshold``, ``max_stars``,
        ``min_snr``, ``sigma``).

    Returns
    -------
    result : astropy.nddata.CCDData
        ``narrow - scale * broad`` in the narrow frame's unit, uncertainty propagated from
        both frames and the scale (NDData arithmetic), masks OR-ed; header ``CONTSCAL``,
        ``CONTSERR``, ``CONTNSTR``.
    fit : ContinuumFit or None
        The fit (None when ``scale`` was given).

    Raises
    ------
    ValueError
        Frames of different shapes, too few stars to fit, or a given scale that is not a
        finite number.
    UnitMismatchError
        Frames in different units.

    Notes
    -----
    Library: astropy NDData arithmetic (first-order propagation, the scale's error
    included per pixel as ``broad x scale_err``).
    """
    result_fit = None
    if scale is None:
        result_fit = continuum_scale(narrow, broad, **fit)
        scale, scale_err = result_fit.scale, result_fit.scale_err
    check_number("scale", scale, owner="continuum_subtract")
    check_number("scale_err", scale_err, minimum=0, owner="continuum_subtract")
    factor = NDData(np.float64(scale), uncertainty=StdDevUncertainty(np.float64(scale_err)),
                    unit="")
    continuum = broad.multiply(factor, handle_meta="first_found")
    continuum = CCDData(continuum.data, unit=continuum.unit, mask=continuum.mask,
                        uncertainty=continuum.uncertainty, meta=continuum.meta)
    result = imarith(narrow, "-", continuum)
    result.meta["CONTSCAL"] = (float(scale), "continuum scale: broad-band x this subtracted")
    result.meta["CONTSERR"] = (float(scale_err), "standard error of CONTSCAL")
    nstars = result_fit.n_stars if result_fit is not None else 0
    result.meta["CONTNSTR"] = (nstars, "stars the scale was fitted on (0: given)")
    return result, result_fit
