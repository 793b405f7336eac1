"""The photometry part of a night run: comparison stars, light curve, transit, field stars.

:func:`pick_comparisons` chooses comparison stars among the detections of the reference
frame; :func:`night_light_curve` measures the series light curve, fits the transit and
measures the field stars in every filter. Used by the photometry step of
:data:`astrodart.pipeline.night.NIGHT_STEPS`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord

__all__ = [
    "night_light_curve",
    "pick_comparisons",
]


def pick_comparisons(reference: str, target: SkyCoord, n: int, saturation: float,
                     margin: float) -> list[SkyCoord]:
    """Comparison stars chosen among the detections of a plate-solved reference frame.

    The ``n`` brightest detections whose peak stays below 3/4 of the saturation level,
    with no other detection within 6 FWHM, more than ``margin`` from the edges and more
    than 3 FWHM from the target.

    Parameters
    ----------
    reference : str
        Plate-solved calibrated frame (the sharpest of the night).
    target : astropy.coordinates.SkyCoord
        The light-curve target.
    n : int
        Most comparison stars to return.
    saturation : float
        Saturation level of the frame (calibrated electrons).
    margin : float
        Distance from the frame's edges (pixels).

    Returns
    -------
    list of astropy.coordinates.SkyCoord
        Brightest first.

    Raises
    ------
    ValueError
        The frame has no WCS, or fewer than 2 stars qualify.
    """
    from astrodart.frames.io import read_frame
    from astrodart.pipeline.measure import get_fwhm
    from astrodart.pipeline.star_positions import frame_wcs

    fw = get_fwhm([reference], saturation=saturation)
    fwhm = fw.estimate_fwhm()[0]
    det = fw.results[reference].detections
    ccd = read_frame(reference)
    wcs = frame_wcs(ccd.meta)
    if wcs is None:
        raise ValueError(f"{reference}: no WCS; comparison stars are chosen on a "
                         "plate-solved frame")
    ny, nx = ccd.shape
    x, y = np.asarray(det["x"], float), np.asarray(det["y"], float)
    tx, ty = wcs.world_to_pixel(target)
    peak = np.asarray(det["peak"] + det["sky"], float)
    ok = (~np.asarray(det["saturated"], bool)) & (peak < 0.75 * saturation)
    ok &= np.asarray(det["nn_dist"], float) > 6 * fwhm
    ok &= (x > margin) & (x < nx - 1 - margin) & (y > margin) & (y < ny - 1 - margin)
    ok &= np.hypot(x - tx, y - ty) > 3 * fwhm
    idx = np.flatnonzero(ok)[:n]
    if len(idx) < 2:
        raise ValueError(f"{reference}: only {len(idx)} isolated, unsaturated comparison "
                         "stars found; give comparison coordinates")
    sky = wcs.pixel_to_world(x[idx], y[idx])
    return [sky[i] for i in range(len(idx))]


def _measure(files: dict, filters, target, comparisons, saturation, factors, out_dir,
             stem, date, name):
    """Ensemble photometry of the frames of ``filters``, saved as ``out_dir/<stem>*``."""
    from astrodart.pipeline.photometry import PhotometryRun

    step = PhotometryRun("sky", "fwhm", [files[f] for f in filters], list(filters),
                         target_coord=target, comparison_coord=comparisons,
                         fwhm_factors=factors, saturation=saturation, save_results=False,
                         date=date, target_name=name)
    res = step.run_multi_coord()
    step.save_data_dir = Path(out_dir)
    step.save(stem, res)
    return step, res


def night_light_curve(result, target_coord, comparisons, transit_guess, lc_factors,
                      flux_factors) -> None:
    """Comparison stars, the series light curve and its transit fit, field-star fluxes.

    Fills ``target_coord``, ``comparison_coords``, ``lightcurve``, ``transit`` and
    ``field_photometry`` of ``result``; writes ``data_dir/photometry/lightcurve*`` and
    ``field_stars*`` (the figure is a layer-5 step:
    :data:`astrodart.ui.lightcurve_plot.LIGHTCURVE_FIGURE`).

    Parameters
    ----------
    result : astrodart.pipeline.night.NightResult
        A night reduced up to its stacks (reference frame, FWHM, saturation known).
    target_coord : SkyCoord or str
        The light-curve target.
    comparisons : int or list of SkyCoord
        Number of comparison stars to choose (:func:`pick_comparisons`), or the stars.
    transit_guess : dict or None or False
        ``{'t0': BJD_TDB, 'duration': days}``; None for a blind fit; False for no fit.
    lc_factors, flux_factors : tuple of float
        Aperture, annulus inner and outer radius (FWHM) of the light curve and of the
        field-star fluxes.

    Raises
    ------
    ValueError
        No usable comparison stars.
    """
    target = target_coord if isinstance(target_coord, SkyCoord) else SkyCoord(target_coord)
    result.target_coord = target
    if isinstance(comparisons, int):
        fwhm = np.nanmedian(result.fwhm[result.series_filter])
        # far enough from the edges for the largest annulus at the worst pointing drift
        margin = flux_factors[2] * 1.5 * fwhm + 30
        comparisons = pick_comparisons(result.reference_frame, target, comparisons,
                                       result.saturation, margin)
    result.comparison_coords = list(comparisons)
    out = result.data_dir / "photometry"
    series = result.series_filter
    step, res = _measure(result.calibrated, [series], target, result.comparison_coords,
                         result.saturation, lc_factors, out, "lightcurve", result.date,
                         result.target)
    result.lightcurve = res
    if transit_guess is not False:
        guess = transit_guess or {}
        result.transit = step.fit_transit(series, t0=guess.get("t0"),
                                          duration=guess.get("duration"))
    _, result.field_photometry = _measure(result.calibrated, result.filters, target,
                                          result.comparison_coords, result.saturation,
                                          flux_factors, out, "field_stars", result.date,
                                          result.target)
