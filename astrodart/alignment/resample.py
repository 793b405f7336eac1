"""Layer 2: resampling a frame onto a reference pixel grid.

Two ways, both returning the resampled pixels and a footprint mask (True where the
output is not covered by valid input pixels, the CCDData convention):
:func:`warp_to_reference` through an affine :class:`~astrodart.alignment.transforms.PixelTransform`
(OpenCV's ``warpAffine``, as Siril registers frames: bicubic convolution, Keys 1981, 10-20x
faster than ``scipy.ndimage.affine_transform``'s cubic spline, which remains for the spline
orders OpenCV lacks and for frames wider than its 32767-pixel limit) and
:func:`reproject_to_reference` through two celestial WCSs (``reproject.reproject_interp``).
Masked and non-finite input pixels (cosmic rays, bad pixels, saturation) are repaired
before interpolation (:func:`astrodart.calibration.pixels.repair_pixels`: the mean of the
good neighbours), so no NaN and no outlier spreads through the interpolation kernel; they
are flagged in the output at the pixel they land on (nearest neighbour), never spread into
good pixels. Only output pixels outside the frame's footprint are NaN.
"""
from __future__ import annotations

import re

import numpy as np
from scipy import ndimage

from astrodart.alignment.transforms import PixelTransform
from astrodart.calibration.pixels import repair_pixels
from astrodart.exceptions import quiet

__all__ = [
    "invalid_pixels",
    "warp_to_reference",
    "reproject_to_reference",
    "resample_frame",
]


def invalid_pixels(data: np.ndarray, mask=None) -> np.ndarray:
    """Invalid pixels of an image: non-finite, or True in ``mask``.

    Parameters
    ----------
    data : (ny, nx) ndarray
        Image.
    mask : (ny, nx) bool array_like, optional
        True marks pixels known to be invalid.

    Returns
    -------
    (ny, nx) ndarray of bool
        True where the pixel is invalid.
    """
    bad = ~np.isfinite(data)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    return bad


def warp_to_reference(data, transform: PixelTransform, ref_shape: tuple[int, int], mask=None,
                      order: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Resample a frame onto the reference grid through an affine transform.

    Parameters
    ----------
    data : (ny, nx) array_like
        Frame pixels.
    transform : PixelTransform
        Frame pixels -> reference pixels.
    ref_shape : (int, int)
        Output shape ``(ny_ref, nx_ref)``.
    mask : (ny, nx) bool array_like, optional
        True marks invalid input pixels: they are repaired from their neighbours before
        the interpolation and flagged where they land.
    order : int
        Interpolation order: 0 nearest, 1 bilinear, 3 bicubic (OpenCV's cubic convolution;
        other orders: scipy's spline of that order). Values are interpolated
        (surface brightness is kept; flux per pixel scales by ``1/scale**2``).

    Returns
    -------
    aligned : (ny_ref, nx_ref) ndarray of float32
        Resampled frame; NaN outside the footprint, repaired values at flagged pixels.
    invalid : (ny_ref, nx_ref) ndarray of bool
        True outside the footprint (no input pixel) and at the output pixels whose
        nearest input pixel was invalid (CCDData convention: a mask). As many pixels are
        flagged as were invalid in the input (times the pixel-area ratio): the mask does
        not spread.
    """
    data = np.asarray(data, np.float32)
    bad = invalid_pixels(data, mask)
    src = repair_pixels(data, bad) if bad.any() else data
    inv = transform.inverse().matrix
    warp = _opencv_warp if _opencv_can(order, data.shape, ref_shape) else _scipy_warp
    out = warp(src, inv, ref_shape, order, replicate=True)
    # one nearest-pixel warp gives both the footprint (the reference pixels whose centres
    # map inside the frame: 0 outside) and where invalid input pixels land (2)
    where = warp(np.where(bad, np.float32(2.0), np.float32(1.0)), inv, ref_shape, 0,
                 replicate=False)
    outside = where < 0.5
    invalid = outside | (where > 1.5)
    out = out.astype(np.float32, copy=False)
    out[outside] = np.nan
    return out, invalid


#: OpenCV interpolation flag of each order it has (nearest, bilinear, bicubic convolution).
_OPENCV_ORDERS = {0: "INTER_NEAREST", 1: "INTER_LINEAR", 3: "INTER_CUBIC"}


def _opencv_can(order: int, shape, ref_shape) -> bool:
    """Whether OpenCV can do this warp (its order, and sizes under its 32767-px limit)."""
    if order not in _OPENCV_ORDERS or max(*shape, *ref_shape) >= 32767:
        return False
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _opencv_warp(src, inv, ref_shape, order: int, replicate: bool) -> np.ndarray:
    """``src`` resampled at ``inv @ (x, y)`` of every output pixel, with OpenCV."""
    import cv2

    flags = getattr(cv2, _OPENCV_ORDERS[order]) | cv2.WARP_INVERSE_MAP
    border = cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT
    ny, nx = ref_shape
    return cv2.warpAffine(np.ascontiguousarray(src, np.float32), inv[:2].astype(np.float64),
                          (int(nx), int(ny)), flags=flags, borderMode=border, borderValue=0.0)


def _scipy_warp(src, inv, ref_shape, order: int, replicate: bool) -> np.ndarray:
    """The same with ``scipy.ndimage.affine_transform`` (any spline order)."""
    # ndimage works in (row, col): swap x/y on both sides of the inverse map
    p = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float)
    m = p @ inv @ p
    return ndimage.affine_transform(src, m[:2, :2], offset=m[:2, 2], output_shape=tuple(ref_shape),
                                    order=order, mode="nearest" if replicate else "constant",
                                    cval=0.0, prefilter=order > 1)


def reproject_to_reference(data, src_wcs, ref_wcs, ref_shape: tuple[int, int], mask=None,
                           order: str = "bicubic") -> tuple[np.ndarray, np.ndarray]:
    """Reproject a frame onto the reference grid through the two celestial WCSs
    (``reproject.reproject_interp``).

    Parameters
    ----------
    data : (ny, nx) array_like
        Frame pixels.
    src_wcs, ref_wcs : astropy.wcs.WCS
        Celestial WCS of the frame and of the reference.
    ref_shape : (int, int)
        Output shape.
    mask : bool array_like, optional
        True marks invalid input pixels (repaired before, flagged after, as for
        :func:`warp_to_reference`).
    order : str
        Interpolation order passed to reproject ('nearest-neighbor', 'bilinear',
        'bicubic').

    Returns
    -------
    aligned : ndarray of float32
        Reprojected frame, NaN outside the footprint.
    invalid : ndarray of bool
        True outside the footprint and where an invalid input pixel lands.
    """
    from reproject import reproject_interp

    data = np.asarray(data, np.float32)
    bad = invalid_pixels(data, mask)
    src = repair_pixels(data, bad) if bad.any() else data
    with quiet():
        out, foot = reproject_interp((src, src_wcs), ref_wcs, shape_out=tuple(ref_shape),
                                     order=order, return_footprint=True)
        outside = ~(foot > 0.999) | ~np.isfinite(out)
        invalid = outside.copy()
        if bad.any():  # flagged where they land, not spread (nearest neighbour)
            bad_r, _ = reproject_interp((bad.astype(np.float32), src_wcs), ref_wcs,
                                        shape_out=tuple(ref_shape), order="nearest-neighbor")
            invalid |= np.nan_to_num(bad_r, nan=0.0) > 0.5
    out = out.astype(np.float32)
    out[outside] = np.nan
    return out, invalid


#: Header keywords of a FITS WCS (with SIP and TPV terms), dropped from a resampled frame.
_WCS_KEY = re.compile(r"^(WCSAXES|PC\d_\d|CD\d_\d|CRPIX\d|CRVAL\d|CTYPE\d|"
                      r"CDELT\d|CUNIT\d|CROTA\d|[AB]P?_(\d_\d|ORDER|DMAX)|PV\d_\d+|LONPOLE|"
                      r"LATPOLE|RADESYS|EQUINOX|MJDREF|WCSNAME)$")


def resample_frame(ccd, ref_wcs, ref_shape: tuple[int, int], order: str = "bicubic",
                   conserve_flux: bool = False):
    """A frame reprojected onto a reference WCS grid (:func:`reproject_to_reference`),
    with its uncertainty plane and the reference WCS.

    Parameters
    ----------
    ccd : astropy.nddata.CCDData
        Frame with a celestial WCS (``ccd.wcs`` or in its header).
    ref_wcs : astropy.wcs.WCS
        Celestial WCS of the output grid.
    ref_shape : (int, int)
        Output shape ``(ny, nx)``.
    order : {'nearest-neighbor', 'bilinear', 'bicubic'}
        Interpolation (reproject's ``reproject_interp``).
    conserve_flux : bool
        Scale the values by the ratio of the output to the input pixel area (flux per
        pixel kept; default: surface brightness kept, which is the same for equal
        pixel scales).

    Returns
    -------
    astropy.nddata.CCDData
        Shape ``ref_shape``, WCS ``ref_wcs``, NaN and masked outside the frame's footprint
        and where invalid input pixels land; the uncertainty is the input's standard
        deviation interpolated the same way (correlations the interpolation introduces
        between neighbouring pixels are not tracked).

    Raises
    ------
    ValueError
        The frame has no celestial WCS, or ``order`` is unknown.

    Notes
    -----
    Library: reproject (``reproject_interp``), astropy WCS
    (``proj_plane_pixel_area``).
    """
    from astropy.nddata import CCDData, StdDevUncertainty
    from astropy.wcs.utils import proj_plane_pixel_area

    from astrodart.alignment.wcs import celestial_wcs
    from astrodart.frames.checks import check_choice

    order = check_choice("order", order, ("nearest-neighbor", "bilinear", "bicubic"),
                         owner="resample_frame")
    src_wcs = celestial_wcs(ccd.wcs) or celestial_wcs(ccd.meta)
    if src_wcs is None:
        raise ValueError("resample_frame: the frame has no celestial WCS; plate-solve it "
                         "first (astrodart solve)")
    ref_wcs = celestial_wcs(ref_wcs)
    if ref_wcs is None:
        raise ValueError("resample_frame: ref_wcs is no celestial WCS")
    data, invalid = reproject_to_reference(ccd.data, src_wcs, ref_wcs, ref_shape,
                                           mask=ccd.mask, order=order)
    factor = (proj_plane_pixel_area(ref_wcs) / proj_plane_pixel_area(src_wcs)
              if conserve_flux else 1.0)
    uncertainty = None
    if ccd.uncertainty is not None:
        std = ccd.uncertainty.represent_as(StdDevUncertainty).array
        unc, _ = reproject_to_reference(std, src_wcs, ref_wcs, ref_shape, mask=ccd.mask,
                                        order=order)
        uncertainty = StdDevUncertainty(unc * np.float32(factor))
    meta = ccd.meta.copy()
    for key in [k for k in meta if _WCS_KEY.match(str(k))]:  # the input's WCS no longer applies
        del meta[key]
    return CCDData(data * np.float32(factor), unit=ccd.unit, wcs=ref_wcs, mask=invalid,
                   uncertainty=uncertainty, meta=meta)
