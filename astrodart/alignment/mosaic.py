"""Layer 2: mosaics -- frames of several pointings on one celestial grid.

reproject's mosaicking does the work: :func:`mosaic_grid` is
``reproject.mosaicking.find_optimal_celestial_wcs`` (the grid that covers every frame,
north up, at the finest input pixel scale unless told), and :func:`coadd_mosaic` is
``reproject.mosaicking.reproject_and_coadd`` with ``reproject_interp``, each frame
weighted by its valid pixels (masked and non-finite pixels get weight 0, so a bad
pixel of one frame never reaches the mosaic where another frame covers it). A single
frame onto a given grid is :func:`astrodart.alignment.resample.resample_frame`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from astrodart.alignment.resample import invalid_pixels
from astrodart.alignment.wcs import celestial_wcs
from astrodart.exceptions import quiet
from astrodart.frames.checks import check_choice, check_number

__all__ = ["MOSAIC_COMBINE", "mosaic_grid", "coadd_mosaic"]

#: How overlapping frames are combined (reproject's ``combine_function``).
MOSAIC_COMBINE = ("mean", "sum", "median", "first", "last", "min", "max")


def _inputs(frames: Sequence) -> list[tuple[np.ndarray, object, np.ndarray]]:
    """``(data, celestial WCS, weight)`` of each frame, checked."""
    frames = list(frames)
    if not frames:
        raise ValueError("mosaic: no frame given")
    out = []
    for i, f in enumerate(frames):
        w = celestial_wcs(getattr(f, "wcs", None)) or celestial_wcs(getattr(f, "meta", None))
        if w is None:
            raise ValueError(f"mosaic: frames[{i}] has no celestial WCS; plate-solve it first")
        data = np.asarray(f.data, np.float64)
        bad = invalid_pixels(data, f.mask)
        out.append((np.where(bad, 0.0, data), w, (~bad).astype(np.float64)))
    return out


def mosaic_grid(frames: Sequence, resolution: float | None = None):
    """The celestial grid that covers every frame (north up, TAN projection).

    Parameters
    ----------
    frames : sequence of astropy.nddata.CCDData
        Frames with a celestial WCS.
    resolution : float, optional
        Pixel scale of the grid, arcsec/px (default: the finest of the frames).

    Returns
    -------
    wcs : astropy.wcs.WCS
        The grid's WCS.
    shape : (int, int)
        Its shape ``(ny, nx)``.

    Raises
    ------
    ValueError
        No frame, a frame without a celestial WCS, or a non-positive resolution.

    Notes
    -----
    Library: reproject ``find_optimal_celestial_wcs``.
    """
    from astropy import units as u
    from reproject.mosaicking import find_optimal_celestial_wcs

    inputs = _inputs(frames)
    res = check_number("resolution", resolution, minimum=0, exclusive=True, allow_none=True,
                       owner="mosaic_grid")
    with quiet():
        wcs, shape = find_optimal_celestial_wcs(
            [(d.shape, w) for d, w, _ in inputs],
            resolution=None if res is None else res * u.arcsec)
    return wcs, tuple(int(n) for n in shape)


def coadd_mosaic(frames: Sequence, wcs=None, shape: tuple[int, int] | None = None, *,
                 combine: str = "mean", order: str = "bilinear"):
    """Reproject frames onto one grid and combine them where they overlap.

    Parameters
    ----------
    frames : sequence of astropy.nddata.CCDData
        Frames with a celestial WCS, in one unit (sky-subtracted or matched in level:
        no background matching is done).
    wcs : astropy.wcs.WCS, optional
        Output grid (default :func:`mosaic_grid`); ``shape`` is then required.
    shape : (int, int), optional
        Output shape ``(ny, nx)``.
    combine : str
        One of :data:`MOSAIC_COMBINE`.
    order : {'nearest-neighbor', 'bilinear', 'bicubic'}
        Interpolation of ``reproject_interp``.

    Returns
    -------
    astropy.nddata.CCDData
        The mosaic in the frames' unit with the grid's WCS; masked (and NaN) where no
        frame covers it; header ``NCOMBINE`` (frames) and ``MOSCOMB`` (combination).

    Raises
    ------
    ValueError
        No frame, a frame without WCS, frames in different units, an unknown ``combine``
        or ``order``, or ``wcs`` without ``shape``.

    Notes
    -----
    Library: reproject ``reproject_and_coadd`` with ``reproject_interp``.
    """
    from astropy.io import fits
    from astropy.nddata import CCDData
    from reproject import reproject_interp
    from reproject.mosaicking import reproject_and_coadd

    combine = check_choice("combine", combine, MOSAIC_COMBINE, owner="coadd_mosaic")
    order = check_choice("order", order, ("nearest-neighbor", "bilinear", "bicubic"),
                         owner="coadd_mosaic")
    units = {str(getattr(f, "unit", None)) for f in frames}
    if len(units) > 1:
        raise ValueError(f"coadd_mosaic: frames in several units {sorted(units)}; give one unit")
    inputs = _inputs(frames)
    if wcs is None:
        wcs, shape = mosaic_grid(frames)
    elif shape is None:
        raise ValueError("coadd_mosaic: a wcs was given without its shape=(ny, nx)")
    with quiet():
        array, footprint = reproject_and_coadd(
            [(d, w) for d, w, _ in inputs], wcs, shape_out=tuple(shape),
            input_weights=[wt for _, _, wt in inputs], reproject_function=reproject_interp,
            combine_function=combine, order=order)
    empty = ~(footprint > 0) | ~np.isfinite(array)
    array = np.where(empty, np.nan, array).astype(np.float32)
    header = fits.Header()
    header["NCOMBINE"] = (len(inputs), "frames in the mosaic")
    header["MOSCOMB"] = (combine, "how overlapping frames were combined")
    return CCDData(array, unit=frames[0].unit, wcs=wcs, mask=empty, meta=header)
