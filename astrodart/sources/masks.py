"""Layer 2: source masks -- the pixels of stars and galaxies, to leave out of a sky estimate.

The background map and the sky noise come from the one background estimator
(:func:`astrodart.sources.background.estimate_background`); the sources are the
connected groups of pixels above a threshold in the image smoothed to the seeing,
segmented and grown (dilated) with photutils (``detect_sources`` and
``SegmentationImage.make_source_mask``, the replacement of photutils' former
``make_source_mask``), so the faint wings of a star are masked too.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from astrodart.frames.checks import check_number
from astrodart.sources._image import _as_image, _as_mask
from astrodart.sources.background import estimate_background, sky_stats

__all__ = ["source_mask"]

_SIGMA_PER_FWHM = 1.0 / 2.3548200450309493


def source_mask(data: ArrayLike, *, mask: ArrayLike | None = None, nsigma: float = 3.0,
                npixels: int = 5, fwhm: float = 3.0, dilate: int = 11,
                box_size: int = 64) -> np.ndarray:
    """Mask of the sources of an image (True on a source), grown to cover their wings.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Image in data units (a ``CCDData`` is accepted); non-finite pixels are ignored.
    mask : array_like of bool, shape (ny, nx), optional
        True marks invalid pixels (ignored; not part of the returned mask).
    nsigma : float
        Threshold above the background, in units of the noise of the smoothed image
        (its sigma-clipped MAD standard deviation).
    npixels : int
        Fewest connected pixels above the threshold that make a source.
    fwhm : float
        Seeing FWHM, pixels: the image is smoothed by a Gaussian of this width before
        thresholding.
    dilate : int
        Side of the square footprint each source is grown by (pixels, odd; 1: not grown).
    box_size : int
        Box of the background map (:func:`astrodart.sources.background.estimate_background`).

    Returns
    -------
    numpy.ndarray of bool, shape (ny, nx)
        True on (grown) sources.

    Raises
    ------
    ValueError
        A non-positive ``nsigma``, ``fwhm``, ``npixels`` or ``dilate``, or an image that is
        not 2-D.

    Notes
    -----
    Library: photutils segmentation (``detect_sources``, ``make_source_mask``); the
    background is the SExtractor mesh scheme (Bertin & Arnouts 1996, A&AS 117, 393).
    """
    from photutils.segmentation import detect_sources

    for name, value, integer in (("nsigma", nsigma, False), ("fwhm", fwhm, False),
                                 ("npixels", npixels, True), ("dilate", dilate, True)):
        check_number(name, value, minimum=0, exclusive=True, integer=integer,
                     owner="source_mask")
    arr = _as_image(data)
    m = _as_mask(mask, arr.shape)
    bad = ~np.isfinite(arr) if m is None else (m | ~np.isfinite(arr))
    background, _ = estimate_background(arr, mask=bad, box_size=box_size)
    resid = np.where(bad, 0.0, arr - background)
    smooth = ndimage.gaussian_filter(resid, fwhm * _SIGMA_PER_FWHM, mode="constant",
                                     truncate=4.0)
    # the noise measured on the smoothed image itself: right for correlated noise, and
    # for integer data whose pixel MAD is quantised (a MAD of 1 ADU)
    threshold = nsigma * max(sky_stats(smooth, mask=bad).rms, np.finfo(float).tiny)
    segments = detect_sources(smooth, threshold, int(npixels), mask=bad)
    if segments is None:
        return np.zeros(arr.shape, bool)
    grown = segments.make_source_mask(size=int(dilate)) if dilate > 1 else segments.data > 0
    return np.asarray(grown, bool) & ~bad
