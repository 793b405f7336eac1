"""Layer 2: checking a plate solution against the catalogue stars it was matched to.

:func:`verify_wcs` counts the detected stars that land on a catalogue star through a
WCS and measures their rms separation; :func:`check_sip` keeps a SIP distortion
solution only when the distortion it fits is statistically significant.
"""
from __future__ import annotations


import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from numpy.typing import ArrayLike

from astrodart.alignment.wcs import pair_with_catalog
from astrodart.astrometry.result import _check_shape, _xy_array
from astrodart.exceptions import quiet

__all__ = ["verify_wcs"]

def verify_wcs(wcs: WCS, xy: ArrayLike, catalog: SkyCoord, shape: tuple[int, int],
               match_radius: float = 2.0) -> tuple[int, float, SkyCoord, float]:
    """Cross-match detected stars with catalogue stars through a WCS.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        Celestial WCS with FITS (1-based) ``CRPIX``.
    xy : array_like, shape (n, 2)
        0-based detected star positions.
    catalog : astropy.coordinates.SkyCoord
        Reference stars (e.g. the index stars of the match).
    shape : tuple of int
        ``(ny, nx)``.
    match_radius : float
        Pairing radius in pixels.

    Returns
    -------
    n_matched : int
        Number of detected stars with a catalogue star within ``match_radius``.
    rms_arcsec : float
        Rms separation of those pairs (NaN if none).
    center : SkyCoord
        Sky position of the image centre, pixel ``((nx - 1) / 2, (ny - 1) / 2)`` 0-based.
    pixel_scale : float
        Mean pixel scale at the reference point, arcsec/px.
    """
    ny, nx = _check_shape(shape)
    xy = _xy_array(xy)
    center = wcs.pixel_to_world((nx - 1) / 2.0, (ny - 1) / 2.0)
    scale = float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)
    ok, ref = pair_with_catalog(wcs, xy, catalog, match_radius)
    if not ok.any():
        return 0, float("nan"), center, scale
    sep = wcs.pixel_to_world(xy[ok, 0], xy[ok, 1]).separation(ref).arcsec
    return int(ok.sum()), float(np.sqrt(np.mean(sep**2))), center, scale


def _pair_residuals(wcs: WCS, xy: np.ndarray, sky: SkyCoord) -> np.ndarray:
    """Pixel distances between detected stars and their catalogue stars through ``wcs``."""
    with quiet():
        cx, cy = wcs.world_to_pixel(sky)
    return np.hypot(np.asarray(cx) - xy[:, 0], np.asarray(cy) - xy[:, 1])


def _check_sip(wcs, n, rms, center, scale, note, xy, cat, shape, match_radius, min_matched,
               sip_order, significance=1e-3):
    """Keep the engine's SIP solution only if the distortion it fits is significant.

    The engine's SIP tweak is an unweighted least-squares fit to the star pairs it finds:
    with ~20 pairs an order-2 polynomial (6 more parameters) always lowers the residuals
    a little, and one poorly measured or mispaired star can bend it by an arcsecond or
    more at the corners of a field that has no distortion at all. So the pairs the SIP
    solution verifies are refitted twice with :func:`astropy.wcs.utils.fit_wcs_from_points`
    — pure TAN and TAN + SIP of the same order, after clipping pairs more than 5 robust
    sigma (1.4826 MAD) off the TAN fit — and the two are compared with the F-test for
    nested least-squares models (e.g. Bevington & Robinson, *Data Reduction and Error
    Analysis*, 3rd ed., sect. 11.4): the SIP solution is kept if the drop in the residual
    sum of squares is significant at ``significance``; otherwise the least-squares TAN
    solution replaces it. Real distortion (tens of stars, residuals far above the
    centroid noise) passes the test by orders of magnitude; the SIP solution returned
    is then the refit on the clipped pairs, which a mispaired star cannot bend.
    """
    from astropy.wcs.utils import fit_wcs_from_points
    from scipy import stats

    ok, sky = pair_with_catalog(wcs, xy, cat, match_radius)
    p_sip = 2 * ((sip_order + 1) * (sip_order + 2) // 2 - 3)
    if ok.sum() < 6 + p_sip + 4:     # too few pairs to judge: the SIP fit is unconstrained
        return wcs, n, rms, center, scale, note
    pxy = xy[ok]
    keep = np.ones(len(pxy), bool)
    try:
        with quiet():
            for _ in range(3):
                tan = fit_wcs_from_points((pxy[keep, 0], pxy[keep, 1]), sky[keep],
                                          projection="TAN")
                r = _pair_residuals(tan, pxy, sky)
                mad = 1.4826 * float(np.median(np.abs(r[keep] - np.median(r[keep]))))
                new = r <= np.median(r[keep]) + 5 * max(mad, 0.01)
                if np.array_equal(new, keep) or new.sum() < 6 + p_sip + 4:
                    break
                keep = new
            sip = fit_wcs_from_points((pxy[keep, 0], pxy[keep, 1]), sky[keep],
                                      projection="TAN", sip_degree=sip_order)
    except (ValueError, np.linalg.LinAlgError):
        return wcs, n, rms, center, scale, note
    rss_tan = float(np.sum(_pair_residuals(tan, pxy[keep], sky[keep]) ** 2))
    rss_sip = float(np.sum(_pair_residuals(sip, pxy[keep], sky[keep]) ** 2))
    dof = 2 * int(keep.sum()) - 6 - p_sip
    if dof <= 0 or rss_sip <= 0:
        return wcs, n, rms, center, scale, note
    f_stat = (rss_tan - rss_sip) / p_sip / (rss_sip / dof)
    p_value = float(stats.f.sf(f_stat, p_sip, dof))
    if p_value < significance:
        best, why = sip, (f"SIP order {sip_order} refitted on {int(keep.sum())} stars "
                          f"(F = {f_stat:.3g}, p = {p_value:.2g})")
    else:
        best, why = tan, (f"SIP order {sip_order} not significant (F = {f_stat:.2f}, "
                          f"p = {p_value:.2g} on {int(keep.sum())} stars): least-squares "
                          "TAN solution kept")
    n_b, rms_b, center_b, scale_b = verify_wcs(best, xy, cat, shape, match_radius)
    if n_b < min_matched:
        return wcs, n, rms, center, scale, note
    return best, n_b, rms_b, center_b, scale_b, "; ".join(s for s in (note, why) if s)

