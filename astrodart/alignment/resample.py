"""Layer 2: resampling a frame onto a reference pixel grid.

Two ways, both returning the resampled pixels and a footprint mask (True where the
output is not covered by valid input pixels, the CCDData convention):
:func:`warp_to_reference` through an affine :class:`~astrodart.alignment.transforms.PixelTransform`
(OpenCV's ``warpAffine``, as Siril registers frames: bicubic convolution, Keys 1981, 10-20x
faster than ``scipy.ndimage.affine_transform``'s cubic spline, which remains for the spline
orders OpenCV lacks and for frames wider than its 32767-pixel limit) and
:func:`reproject_to_reference` through two celestial WCSs (``reproject.reproject_interp``).
Invalid input pixels are filled with the sky level before interpolation (so no NaN
spreads) and invalidate the output pixels they touch.
"""
from __future__ import annotations


import numpy as np
from scipy import ndimage

from astrodart.alignment.transforms import PixelTransform
from astrodart.exceptions import quiet

__all__ = [
    "invalid_pixels",
    "warp_to_reference",
    "reproject_to_reference",
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


def _sky_fill(data: np.ndarray, bad: np.ndarray) -> float:
    """Median of the valid pixels (sampled), to fill invalid ones before interpolation."""
    v = data[~bad]
    return float(np.median(v[::max(1, v.size // 250_000)])) if v.size else 0.0


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
        True marks invalid input pixels; they invalidate the output pixels they touch.
    order : int
        Interpolation order: 0 nearest, 1 bilinear, 3 bicubic (OpenCV's cubic convolution;
        other orders: scipy's spline of that order). Values are interpolated
        (surface brightness is kept; flux per pixel scales by ``1/scale**2``).

    Returns
    -------
    aligned : (ny_ref, nx_ref) ndarray of float32
        Resampled frame, NaN where invalid.
    invalid : (ny_ref, nx_ref) ndarray of bool
        Footprint mask: True where the output is not covered by valid input pixels
        (CCDData convention).
    """
    data = np.asarray(data, np.float32)
    bad = invalid_pixels(data, mask)
    fill = _sky_fill(data, bad)
    src = np.where(bad, fill, data)
    inv = transform.inverse().matrix
    warp = _opencv_warp if _opencv_can(order, data.shape, ref_shape) else _scipy_warp
    out = warp(src, inv, ref_shape, order, replicate=True)
    # footprint: the reference pixels whose centres map inside the frame (nearest pixel)
    inside = warp(np.ones(data.shape, np.float32), inv, ref_shape, 0, replicate=False)
    invalid = inside < 0.5
    if bad.any():
        invalid |= warp(bad.astype(np.float32), inv, ref_shape, 1, replicate=False) > 0.01
    out = out.astype(np.float32, copy=False)
    out[invalid] = np.nan
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
        True marks invalid input pixels.
    order : str
        Interpolation order passed to reproject ('nearest-neighbor', 'bilinear',
        'bicubic').

    Returns
    -------
    aligned : ndarray of float32
        Reprojected frame, NaN where invalid.
    invalid : ndarray of bool
        Footprint mask, True where invalid.
    """
    from reproject import reproject_interp

    data = np.asarray(data, np.float32)
    bad = invalid_pixels(data, mask)
    fill = _sky_fill(data, bad)
    src = np.where(bad, fill, data)
    with quiet():
        out, foot = reproject_interp((src, src_wcs), ref_wcs, shape_out=tuple(ref_shape),
                                     order=order, return_footprint=True)
        invalid = ~(foot > 0.999) | ~np.isfinite(out)
        if bad.any():
            bad_r, _ = reproject_interp((bad.astype(np.float32), src_wcs), ref_wcs,
                                        shape_out=tuple(ref_shape), order="bilinear")
            invalid |= ~(np.nan_to_num(bad_r, nan=1.0) <= 0.01)
    out = out.astype(np.float32)
    out[invalid] = np.nan
    return out, invalid
