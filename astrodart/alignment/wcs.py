"""Layer 2: celestial WCS for alignment -- pixel maps between frames, catalogue pairing.

The ``'wcs'`` rung of the alignment ladder: when a frame and the reference both carry a
celestial WCS, the pixel map ``frame -> sky -> reference`` is known exactly
(:func:`transform_from_wcs` gives its affine approximation for limits and logs), and
stars of a catalogue are paired with detected stars through a WCS
(:func:`pair_with_catalog`, used to verify plate solutions).
"""
from __future__ import annotations


import numpy as np

from astrodart.alignment.matching import crossmatch
from astrodart.alignment.transforms import AlignmentError, PixelTransform, _rms, fit_affine
from astrodart.exceptions import quiet

__all__ = [
    "celestial_wcs",
    "transform_from_wcs",
    "pair_with_catalog",
]


def celestial_wcs(header_or_wcs):
    """The celestial part of a header's WCS, or None if it has none.

    Parameters
    ----------
    header_or_wcs : astropy.io.fits.Header, dict, astropy.wcs.WCS or None

    Returns
    -------
    astropy.wcs.WCS or None
        Two-axis celestial WCS; None when the header has no (valid) celestial WCS
        (e.g. blank CTYPEs, or only RA/DEC pointing keywords).
    """
    from astropy.wcs import WCS

    if header_or_wcs is None:
        return None
    try:
        with quiet():
            w = header_or_wcs if isinstance(header_or_wcs, WCS) else WCS(header_or_wcs)
            if not w.has_celestial:
                return None
            return w.celestial
    except Exception:  # a malformed WCS is no WCS for alignment purposes
        return None


def transform_from_wcs(src_wcs, ref_wcs, src_shape: tuple[int, int],
                       n: int = 11) -> tuple[PixelTransform, float]:
    """Affine approximation of the pixel map ``src -> sky -> ref`` given by two WCSs.

    Parameters
    ----------
    src_wcs, ref_wcs : astropy.wcs.WCS
        Celestial WCSs of the frame and the reference.
    src_shape : (int, int)
        Frame shape ``(ny, nx)``.
    n : int
        Grid points per axis used for the fit.

    Returns
    -------
    transform : PixelTransform
        Best-fit affine map (for limits and the log; the pixels themselves are
        reprojected exactly).
    nonlinearity : float
        RMS departure of the exact map from the affine fit, reference pixels.
    """
    ny, nx = src_shape
    xx, yy = np.meshgrid(np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n))
    src = np.column_stack([xx.ravel(), yy.ravel()])
    dst = _wcs_map(src_wcs, ref_wcs, src)
    ok = np.isfinite(dst).all(1)
    if ok.sum() < 3:
        raise AlignmentError("the two WCSs do not overlap (no finite pixel mapping)")
    t = fit_affine(src[ok], dst[ok])
    r = t.apply(src[ok]) - dst[ok]
    return t, _rms(np.hypot(r[:, 0], r[:, 1]))


def _wcs_map(src_wcs, ref_wcs, xy) -> np.ndarray:
    with quiet():
        world = src_wcs.pixel_to_world_values(xy[:, 0], xy[:, 1])
        x, y = ref_wcs.world_to_pixel_values(*world)
    return np.column_stack([np.asarray(x, float), np.asarray(y, float)])


def pair_with_catalog(wcs, xy, catalog, match_radius: float):
    """Pair detected stars with catalogue stars through a WCS (one-to-one, :func:`crossmatch`).

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        Celestial WCS of the frame.
    xy : (N, 2) array_like
        Detected star positions, 0-based pixels.
    catalog : astropy.coordinates.SkyCoord
        Catalogue stars, shape ``(M,)``.
    match_radius : float
        Pairing radius, pixels.

    Returns
    -------
    paired : (N,) ndarray of bool
        True for detected stars paired with a catalogue star.
    stars : astropy.coordinates.SkyCoord
        The paired catalogue stars, in the order of ``xy[paired]``.
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    paired = np.zeros(len(xy), bool)
    if len(xy) == 0 or len(catalog) == 0:
        return paired, catalog[:0]
    with quiet():
        cx, cy = wcs.world_to_pixel(catalog)
    cx, cy = np.atleast_1d(cx), np.atleast_1d(cy)
    finite = np.flatnonzero(np.isfinite(cx) & np.isfinite(cy))
    ia, ib, _d = crossmatch(xy, np.column_stack([cx[finite], cy[finite]]), match_radius)
    order = np.argsort(ia)
    paired[ia] = True
    return paired, catalog[finite[ib[order]]]
