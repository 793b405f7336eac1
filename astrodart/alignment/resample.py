"""Layer 2: resampling a frame onto a reference pixel grid.

Two ways, both returning the resampled pixels and a footprint mask (True where the
output is not covered by valid input pixels, the CCDData convention):
:func:`warp_to_reference` through an affine :class:`~astrodart.alignment.transforms.PixelTransform`
(``scipy.ndimage.affine_transform``, spline interpolation) and
:func:`reproject_to_reference` through two celestial WCSs (``reproject.reproject_interp``).
Invalid input pixels are filled with the sky level before interpolation (so no NaN
spreads) and invalidate the output pixels they touch.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from astrodart.alignment.transforms import PixelTransform

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
        Spline order (0 nearest, 1 bilinear, 3 bicubic spline). Values are interpolated
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
    # ndimage works in (row, col): swap x/y on both sides of the inverse map
    p = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float)
    m = p @ inv @ p
    out = ndimage.affine_transform(src, m[:2, :2], offset=m[:2, 2], output_shape=tuple(ref_shape),
                                   order=order, mode="nearest", prefilter=order > 1)
    # footprint: exact bounds of the inverse-mapped reference pixel centres
    ny, nx = ref_shape
    gy, gx = np.mgrid[0:ny, 0:nx]
    sx = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
    sy = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
    h, w = data.shape
    invalid = (sx < -0.5) | (sx > w - 0.5) | (sy < -0.5) | (sy > h - 0.5)
    if bad.any():
        bad_w = ndimage.affine_transform(bad.astype(np.float32), m[:2, :2], offset=m[:2, 2],
                                         output_shape=tuple(ref_shape), order=1, mode="constant",
                                         cval=0.0, prefilter=False)
        invalid |= bad_w > 0.01
    out = out.astype(np.float32)
    out[invalid] = np.nan
    return out, invalid


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
