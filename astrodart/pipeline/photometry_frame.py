"""Layer 3: aperture photometry of chosen stars on one FITS frame.

:func:`measure_frame` reads a frame and its header (gain, read noise, saturation,
exposure and mid-exposure time), places the apertures (through the WCS for sky
positions), measures the FWHM, re-centres the stars and calls
:func:`astrodart.photometry.apertures.aperture_photometry_ccd`. The night loop is
:class:`astrodart.pipeline.photometry.PhotometryRun`.
"""

from __future__ import annotations

import logging

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord

from astrodart.exceptions import warn
from astrodart.frames.header import FrameHeader
from astrodart.frames.io import FrameError, read_frame
from astrodart.photometry.apertures import PhotFlag, aperture_photometry_radii
from astrodart.photometry.centroids import recentre
from astrodart.photometry.optimal import optimal_photometry
from astrodart.sources.psf import fwhm_of_stars
from astrodart.pipeline.star_positions import PhotometryWarning, frame_wcs, pixel_scale_arcsec

__all__ = ["aperture_radii", "measure_frame"]

log = logging.getLogger("astrodart")


def _radius_px(value, name: str, wcs, method: str) -> float:
    """A radius in pixels from a number (pixels for 'pixel', arcsec for 'sky') or a Quantity."""
    if isinstance(value, u.Quantity):
        if value.unit == u.pix:
            return float(value.value)
        if value.unit.physical_type == "angle":
            if wcs is None:
                raise ValueError(f"{name} is an angle but the frame has no WCS to convert it")
            return float(value.to_value(u.arcsec) / pixel_scale_arcsec(wcs))
        raise ValueError(f"{name} must be in pixels or an angle, got unit {value.unit}")
    if method == "sky":
        return float(value) / pixel_scale_arcsec(wcs)
    return float(value)


def aperture_radii(options, fwhm: float, wcs, path: str) -> list[float]:
    """Aperture radius and annulus radii (pixels) of one frame.

    Parameters
    ----------
    options : object
        Carries ``aperture_type`` (``'fwhm'``, ``'auto'``, ``'optimal'`` or ``'custom'``),
        ``fwhm_factors``,
        ``phot_method`` and ``radius_phot``, ``radius_annulus``, ``radius_dannulus``
        (numbers or Quantities), as AstroDART's ``photometry`` does.
    fwhm : float
        FWHM of the frame, pixels.
    wcs : astropy.wcs.WCS or None
        The frame's WCS (needed for angular radii).
    path : str
        The frame, for error messages.

    Returns
    -------
    list of float
        ``[r_ap, r_in, r_out]``, pixels (for ``'auto'``, ``r_ap`` is the largest radius
        of ``options.aperture_grid``).

    Raises
    ------
    astrodart.frames.io.FrameError
        Angular radii on a frame without WCS.
    """
    if options.aperture_type in ("fwhm", "optimal"):
        return [f * fwhm for f in options.fwhm_factors]
    if options.aperture_type == "auto":
        return [max(options.aperture_grid) * fwhm] + [f * fwhm
                                                      for f in options.fwhm_factors[1:]]
    named = (
        (options.radius_phot, "radius_phot"),
        (options.radius_annulus, "radius_annulus"),
        (options.radius_dannulus, "radius_dannulus"),
    )
    angular = options.phot_method == "sky" or any(
        isinstance(r, u.Quantity) and r.unit != u.pix for r, _ in named
    )
    if angular and wcs is None:
        raise FrameError(path, "radii in arcsec need a WCS to convert them to pixels")
    return [_radius_px(r, n, wcs, options.phot_method) for r, n in named]


def _frame_gain(ccd, header: FrameHeader, gain, path: str) -> float:
    """e-/data unit: 1 for data in electrons, else ``gain``, the header's, or 1 (warned)."""
    if ccd.unit is not None and ccd.unit.is_equivalent(u.electron):
        return 1.0
    gain = gain if gain is not None else header.gain
    if gain is None:
        warn("no gain (GAIN/EGAIN) in the header and none given; assuming 1 e-/ADU "
             "(errors may be wrong)", PhotometryWarning, item=path)
        gain = 1.0
    return gain


def _frame_fwhm(data, xy, mask, fwhm_prev, path: str) -> float:
    """FWHM on the chosen stars, or the previous frame's when not measurable."""
    guess = fwhm_prev if fwhm_prev and np.isfinite(fwhm_prev) else 3.0
    fwhm = fwhm_of_stars(data, xy, fwhm_guess=guess, mask=mask, max_stars=12, axis="major")
    if np.isfinite(fwhm):
        return fwhm
    if fwhm_prev and np.isfinite(fwhm_prev):
        log.info("%s: FWHM not measurable on the chosen stars; using the previous frame's", path)
        return float(fwhm_prev)
    raise FrameError(path, "FWHM not measurable on the chosen stars (are the positions right?)")


def measure_frame(path: str, stars: list, fwhm_prev: float | None, options) -> dict:
    """Aperture photometry of some stars on one frame.

    Parameters
    ----------
    path : str
        A calibrated FITS frame.
    stars : list
        One entry per star: a SkyCoord (``options.phot_method == 'sky'``) or an ``(x, y)``
        array (0-based pixels).
    fwhm_prev : float or None
        FWHM of the previous frame, pixels (starting guess and fallback).
    options : object
        Carries the attributes of AstroDART's ``photometry``: ``phot_method``,
        ``aperture_type``, ``fwhm_factors``, ``aperture_grid`` (``'auto'``), the three
        custom radii, ``gain``, ``read_noise``, ``saturation``, ``recenter``,
        ``search_radius``, ``sigma``.

    Returns
    -------
    dict
        ``ap`` (:class:`astrodart.photometry.apertures.ApertureResult`), ``ap_grid``
        (one per radius of ``options.aperture_grid`` for ``'auto'``, else ``[ap]``),
        ``flags`` (PhotFlag bits, shape (n,)), ``star_flags`` (the bits that do not
        depend on the radius: re-centring), ``fwhm`` (pixels), ``exptime`` (s), ``mid``
        (mid-exposure Time), ``header``, ``target_sky`` (SkyCoord of the first star or
        None), ``unit``, ``gain`` (e-/data unit), ``read_noise`` (e-).

    Raises
    ------
    astrodart.frames.io.FrameError
        No WCS for sky positions, FWHM not measurable, unreadable frame.
    """
    ccd = read_frame(path)
    header = FrameHeader(ccd.meta, path)
    data = np.asarray(ccd.data, dtype=float)
    wcs = frame_wcs(ccd.meta)
    if options.phot_method == "sky":
        if wcs is None:
            raise FrameError(
                path, "no WCS in the header; plate-solve it or use phot_method='pixel'"
            )
        x, y = wcs.world_to_pixel(SkyCoord(stars))
        xy = np.column_stack([np.atleast_1d(x), np.atleast_1d(y)]).astype(float)
    else:
        xy = np.vstack(stars).astype(float)
    gain = _frame_gain(ccd, header, options.gain, path)
    rn = options.read_noise if options.read_noise is not None else header.read_noise
    saturation = options.saturation if options.saturation is not None else header.saturation
    fwhm = _frame_fwhm(data, xy, ccd.mask, fwhm_prev, path)
    flags = np.zeros(len(xy), dtype=np.int64)
    if options.recenter:
        xy, ok = recentre(data, xy, fwhm, search_radius=options.search_radius, mask=ccd.mask)
        flags[~ok] |= PhotFlag.CENTROID
    r_ap, r_in, r_out = aperture_radii(options, fwhm, wcs, path)
    radii = ([f * fwhm for f in options.aperture_grid] if options.aperture_type == "auto"
             else [r_ap])
    unc = ccd.uncertainty.array if ccd.uncertainty is not None else None
    if options.aperture_type == "optimal":  # weights out to the annulus (Naylor 1998)
        grid = [optimal_photometry(data, xy, fwhm, r_in, r_out, gain=gain, read_noise=rn,
                                   uncertainty=unc, mask=ccd.mask, saturation=saturation,
                                   sigma=options.sigma)]
    else:
        grid = aperture_photometry_radii(data, xy, radii, r_in, r_out, gain=gain,
                                         read_noise=rn, uncertainty=unc, mask=ccd.mask,
                                         saturation=saturation, sigma=options.sigma)
    ap = grid[0]
    return {
        "ap": ap,
        "ap_grid": grid,
        "star_flags": flags,
        "flags": ap.flags | flags,
        "fwhm": fwhm,
        "exptime": header.exptime,
        "mid": header.mid_exposure,
        "header": header,
        "target_sky": wcs.pixel_to_world(xy[0, 0], xy[0, 1]) if wcs is not None else None,
        "unit": ccd.unit.to_string() if ccd.unit is not None else "adu",
        "gain": gain,
        "read_noise": rn,
    }
