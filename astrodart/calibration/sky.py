"""Layer 2: a master sky from dithered science frames, and its subtraction.

Near-infrared style sky subtraction (and the thermal/fringe patterns of red CCD frames):
the sky of a night's dithered frames has one pattern -- a gradient, fringes, the
illumination left by the flat -- whose level changes from frame to frame, while the
stars move from frame to frame. :func:`master_sky` masks each frame's sources
(:func:`astrodart.sources.masks.source_mask`), normalises the frame by its sky level
(sigma-clipped median of the unmasked pixels) and median-combines the normalised frames
with sigma clipping through the one stacking engine
(:func:`astrodart.combine.engine.combine_band`), so each pixel's sky comes from the
frames where no star covered it. :func:`subtract_sky` scales the master to a frame (the
median of frame / master over the frame's sky pixels) and subtracts it with the
uncertainty propagated (:func:`astrodart.calibration.arithmetic.imarith`); without a
master it subtracts the frame's own median sky level (the ``--no-master-sky`` fallback:
right for a flat sky, blind to a gradient).

References
----------
The IRAF/DIMSUM and SWarp-era NIR recipe: e.g. Stanford, Eisenhardt & Dickinson,
DIMSUM (IRAF package, 1995); Vaisanen, Tollestrup & Fazio 2000, MNRAS 318, 303 (two-pass
sky with object masks).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from astrodart.calibration.arithmetic import UnitMismatchError, imarith
from astrodart.combine.engine import combine_band
from astrodart.combine.methods import Rejection
from astrodart.frames.checks import check_number
from astrodart.sources.background import estimate_background, sky_stats
from astrodart.sources.masks import source_mask

__all__ = ["master_sky", "subtract_sky", "sky_pixels"]

#: Fewest frames a master sky is made of (a median of two cannot reject a star).
MIN_SKY_FRAMES = 3


def sky_pixels(ccd: CCDData, mask=None, *, mask_sources: bool = True, fwhm: float = 3.0,
               nsigma: float = 3.0, dilate: int = 11) -> np.ndarray:
    """The sky pixels of a frame: valid, and (optionally) off its sources.

    Parameters
    ----------
    ccd : astropy.nddata.CCDData
        The frame, shape ``(ny, nx)``.
    mask : array_like of bool, optional
        More pixels to leave out (True), on top of ``ccd.mask`` and non-finite pixels.
    mask_sources : bool
        Leave out the sources (:func:`astrodart.sources.masks.source_mask`).
    fwhm, nsigma, dilate : float, float, int
        Seeing FWHM (pixels), detection threshold (sigma) and growth of the source mask
        (pixels), passed to :func:`astrodart.sources.masks.source_mask`.

    Returns
    -------
    numpy.ndarray of bool
        True on the sky pixels.
    """
    data = np.asarray(ccd.data, float)
    bad = ~np.isfinite(data)
    for m in (ccd.mask, mask):
        if m is not None:
            bad |= np.asarray(m, bool)
    if mask_sources:
        bad |= source_mask(data, mask=bad, nsigma=nsigma, fwhm=fwhm, dilate=dilate)
    return ~bad


def _check_frames(frames: Sequence[CCDData]) -> list[CCDData]:
    frames = list(frames)
    if len(frames) < MIN_SKY_FRAMES:
        raise ValueError(f"master_sky: {len(frames)} frame(s) given; at least {MIN_SKY_FRAMES} "
                         "dithered frames are needed (or subtract each frame's median sky)")
    for i, f in enumerate(frames):
        if not isinstance(f, CCDData):
            raise TypeError(f"master_sky: frames[{i}] is a {type(f).__name__}, not a CCDData")
        if f.shape != frames[0].shape:
            raise ValueError(f"master_sky: frames[{i}] has shape {f.shape}, frames[0] "
                             f"{frames[0].shape}; the frames must share one grid")
        if f.unit != frames[0].unit:
            raise UnitMismatchError(f"master_sky: frames[{i}] is in {f.unit}, frames[0] in "
                                    f"{frames[0].unit}; give frames in one unit")
    return frames


def master_sky(frames: Sequence[CCDData], *, masks=None, mask_sources: bool = True,
               fwhm: float = 3.0, nsigma: float = 3.0, dilate: int = 11,
               sigma: float = 3.0) -> CCDData:
    """A master sky frame from dithered science frames, their sources masked.

    Parameters
    ----------
    frames : sequence of astropy.nddata.CCDData
        At least three dithered frames of one shape and unit, with a positive sky.
    masks : sequence of array_like of bool, optional
        Per frame, more pixels to leave out (True).
    mask_sources : bool
        Mask each frame's sources before combining.
    fwhm, nsigma, dilate : float, float, int
        Source mask settings (see :func:`sky_pixels`).
    sigma : float
        Sigma-clipping threshold of the combination (median centre, MAD spread).

    Returns
    -------
    astropy.nddata.CCDData
        The sky pattern at the median sky level of the frames (``SKYLEVEL``), in their
        unit, with the standard error of each pixel's clipped median as uncertainty
        (where one value or none was left: the largest standard error of the frame).
        Pixels that were a source or invalid in every frame take the smooth sky of the
        master there (:func:`astrodart.sources.background.estimate_background`; counted
        in ``SKYNFILL``). ``NCOMBINE`` counts the frames.

    Raises
    ------
    ValueError
        Fewer than three frames, frames of different shapes, or a frame whose sky level
        is not positive.
    UnitMismatchError
        Frames in different units.
    TypeError
        A frame is not a CCDData.

    Notes
    -----
    Method: object-masked, level-normalised median of dithered frames (the IRAF DIMSUM
    recipe); library: the stacking engine :func:`astrodart.combine.engine.combine_band`.
    """
    frames = _check_frames(frames)
    check_number("sigma", sigma, minimum=0, exclusive=True, owner="master_sky")
    n, (ny, nx) = len(frames), frames[0].shape
    band = np.empty((n, ny, nx), np.float32)
    bad = np.empty((n, ny, nx), bool)
    levels = np.empty(n)
    for i, f in enumerate(frames):
        good = sky_pixels(f, None if masks is None else masks[i], mask_sources=mask_sources,
                          fwhm=fwhm, nsigma=nsigma, dilate=dilate)
        levels[i] = sky_stats(f.data, mask=~good).level
        if not levels[i] > 0:
            raise ValueError(f"master_sky: frames[{i}] has sky level {levels[i]:.4g} "
                             f"{f.unit}; a master sky needs frames with a positive sky")
        band[i], bad[i] = f.data, ~good
    rejection = Rejection(sigclip=True, sigma_low=sigma, sigma_high=sigma, maxiters=3)
    result = combine_band(band, "median", mask=bad, scale=1.0 / levels, rejection=rejection)
    level = float(np.median(levels))
    sky = result.data * np.float32(level)
    unc = result.uncertainty * np.float32(level)
    holes = ~np.isfinite(sky)  # a source (or a bad pixel) there in every frame
    if holes.any():  # the smooth sky of the master, not a hole in every frame it meets
        sky[holes] = estimate_background(sky, mask=holes)[0][holes]
    finite = np.isfinite(unc)
    unc = np.where(finite, unc, np.nanmax(unc) if finite.any() else 0.0).astype(np.float32)
    header = fits.Header()
    header["NCOMBINE"] = (n, "frames combined into the master sky")
    header["SKYLEVEL"] = (level, "median sky level of the frames, data units")
    header["SKYMASKD"] = (bool(mask_sources), "sources masked before combining")
    header["SKYNFILL"] = (int(holes.sum()), "pixels never sky, filled from the smooth sky")
    return CCDData(sky, unit=frames[0].unit, uncertainty=StdDevUncertainty(unc),
                   mask=~np.isfinite(sky), meta=header)


def subtract_sky(ccd: CCDData, sky: CCDData | None = None, *, mask=None,
                 mask_sources: bool = True, fwhm: float = 3.0, nsigma: float = 3.0,
                 dilate: int = 11) -> CCDData:
    """Subtract a master sky scaled to the frame, or the frame's own median sky.

    Parameters
    ----------
    ccd : astropy.nddata.CCDData
        The science frame, shape ``(ny, nx)``.
    sky : astropy.nddata.CCDData, optional
        A master sky (:func:`master_sky`), same shape and unit. None: subtract the
        frame's median sky level instead (a constant).
    mask : array_like of bool, optional
        More pixels to leave out of the sky fit (True).
    mask_sources : bool
        Leave the frame's sources out of the sky fit.
    fwhm, nsigma, dilate : float, float, int
        Source mask settings (see :func:`sky_pixels`).

    Returns
    -------
    astropy.nddata.CCDData
        ``ccd - s * sky`` (``s`` the median of ``ccd / sky`` over the frame's sky pixels,
        header ``SKYSCALE``) with the master's uncertainty propagated and its mask OR-ed,
        or ``ccd - level`` (header ``SKYLEVEL``); ``SKYSUB`` says which.

    Raises
    ------
    ValueError
        A sky of another shape, or no sky pixel to fit on.
    UnitMismatchError
        A sky in another unit than the frame.
    """
    good = sky_pixels(ccd, mask, mask_sources=mask_sources, fwhm=fwhm, nsigma=nsigma,
                      dilate=dilate)
    if sky is None:
        level = sky_stats(ccd.data, mask=~good).level
        out = imarith(ccd, "-", level * (ccd.unit or u.adu))
        out.meta["SKYSUB"] = ("median", "sky subtracted: the frame's median sky level")
        out.meta["SKYLEVEL"] = (level, "sky level subtracted, data units")
        return out
    if sky.shape != ccd.shape:
        raise ValueError(f"subtract_sky: sky has shape {sky.shape}, the frame {ccd.shape}; "
                         "make the master sky from frames of this grid")
    if sky.unit != ccd.unit:
        raise UnitMismatchError(f"subtract_sky: the frame is in {ccd.unit}, the sky in "
                                f"{sky.unit}; give them in one unit")
    pattern = np.asarray(sky.data, float)
    fit = good & np.isfinite(pattern) & (pattern > 0)
    if sky.mask is not None:
        fit &= ~np.asarray(sky.mask, bool)
    if not fit.any():
        raise ValueError("subtract_sky: no sky pixel left to scale the master sky on")
    scale = float(np.median(np.asarray(ccd.data, float)[fit] / pattern[fit]))
    scaled = imarith(sky, "*", scale)
    scaled.unit = ccd.unit
    out = imarith(ccd, "-", scaled)
    out.meta["SKYSUB"] = ("master", "sky subtracted: master sky x SKYSCALE")
    out.meta["SKYSCALE"] = (scale, "master sky scale fitted on the frame's sky")
    return out
