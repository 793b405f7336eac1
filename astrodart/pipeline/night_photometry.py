"""The photometry part of a night run: comparison stars, light curve, transit, field stars.

:func:`pick_comparisons` chooses comparison stars among the detections of the reference
frame; :func:`night_light_curve` measures the series light curve, fits the transit and
measures the field stars in every filter. Used by the photometry step of
:data:`astrodart.pipeline.night.NIGHT_STEPS`.

A field that cannot be plate-solved is measured from a target given in pixels
(``target_xy``): it is snapped to the nearest detected star, followed through the night by
the alignment's transforms (``ALNA*`` keywords of the aligned frames) or by star patterns
(:func:`astrodart.pipeline.star_positions.track_positions`), and its comparison stars are
chosen in pixels and kept only when they stay inside every frame.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord

__all__ = [
    "night_light_curve",
    "pick_comparisons",
]


def pick_comparisons(reference: str, target, n: int, saturation: float,
                     margin: float) -> list:
    """Comparison stars chosen among the detections of a reference frame.

    The ``n`` brightest detections whose peak stays below 3/4 of the saturation level,
    with no other detection within 6 FWHM, more than ``margin`` from the edges and more
    than 3 FWHM from the target. With a SkyCoord target the frame must be plate-solved
    and the stars come back as SkyCoord; with a pixel target ``(x, y)`` no WCS is
    needed and they come back as ``(x, y)`` pixels of ``reference``.

    Parameters
    ----------
    reference : str
        Calibrated frame (the sharpest of the night, or the one the pixels refer to).
    target : astropy.coordinates.SkyCoord or (float, float)
        The light-curve target: on the sky, or 0-based pixels of ``reference``.
    n : int
        Most comparison stars to return.
    saturation : float
        Saturation level of the frame (calibrated electrons).
    margin : float
        Distance from the frame's edges (pixels).

    Returns
    -------
    list of astropy.coordinates.SkyCoord or list of (float, float)
        Brightest first.

    Raises
    ------
    ValueError
        A SkyCoord target and a frame without WCS, or fewer than 2 stars qualify.
    """
    from astrodart.frames.io import read_frame
    from astrodart.pipeline.measure import get_fwhm
    from astrodart.pipeline.star_positions import frame_wcs

    fw = get_fwhm([reference], saturation=saturation)
    fwhm = fw.estimate_fwhm()[0]
    det = fw.results[reference].detections
    ccd = read_frame(reference)
    on_sky = isinstance(target, SkyCoord)
    wcs = frame_wcs(ccd.meta) if on_sky else None
    if on_sky and wcs is None:
        raise ValueError(f"{reference}: no WCS; comparison stars for a sky target are "
                         "chosen on a plate-solved frame (give the target in pixels)")
    ny, nx = ccd.shape
    x, y = np.asarray(det["x"], float), np.asarray(det["y"], float)
    tx, ty = wcs.world_to_pixel(target) if on_sky else (float(v) for v in target)
    peak = np.asarray(det["peak"] + det["sky"], float)
    ok = (~np.asarray(det["saturated"], bool)) & (peak < 0.75 * saturation)
    ok &= np.asarray(det["nn_dist"], float) > 6 * fwhm
    ok &= (x > margin) & (x < nx - 1 - margin) & (y > margin) & (y < ny - 1 - margin)
    ok &= np.hypot(x - tx, y - ty) > 3 * fwhm
    idx = np.flatnonzero(ok)[:n]
    if len(idx) < 2:
        raise ValueError(f"{reference}: only {len(idx)} isolated, unsaturated comparison "
                         "stars found; give comparison coordinates")
    if not on_sky:
        return [(float(x[i]), float(y[i])) for i in idx]
    sky = wcs.pixel_to_world(x[idx], y[idx])
    return [sky[i] for i in range(len(idx))]


def _measure(files: dict, filters, target, comparisons, saturation, factors, out_dir,
             stem, date, name, aperture_type="fwhm", **extra):
    """Ensemble photometry of the frames of ``filters``, saved as ``out_dir/<stem>*``.

    ``target`` and ``comparisons`` are SkyCoords ('sky'), or per-filter pixel positions
    (``target[filter][file]``, ``comparisons[star][filter][file]``: 'pixel').
    """
    from astrodart.pipeline.photometry import PhotometryRun

    method = "sky" if isinstance(target, SkyCoord) else "pixel"
    step = PhotometryRun(method, aperture_type, [files[f] for f in filters], list(filters),
                         target_coord=target, comparison_coord=comparisons,
                         fwhm_factors=factors, saturation=saturation, save_results=False,
                         date=date, target_name=name, **extra)
    res = step.run_multi_coord()
    step.save_data_dir = Path(out_dir)
    step.save(stem, res)
    return step, res


def night_light_curve(result, target_coord, comparisons, transit_guess, lc_factors,
                      flux_factors, *, target_xy=None, xy_frame=None, site=None,
                      aperture: str = "fwhm") -> None:
    """Comparison stars, the series light curve and its transit fit, field-star fluxes.

    Fills ``target_coord``, ``comparison_coords``, ``lightcurve``, ``transit`` and
    ``field_photometry`` of ``result``; writes ``data_dir/photometry/lightcurve*`` and
    ``field_stars*`` (the figure is a layer-5 step:
    :data:`astrodart.ui.lightcurve_plot.LIGHTCURVE_FIGURE`).

    With ``target_xy`` (a field that cannot be plate-solved) the target is given in
    pixels, re-centred on the star, and followed through the night with the alignment's
    transforms where the frames were aligned (``ALNA*`` header keywords of
    ``result.aligned``), else by star patterns
    (:func:`astrodart.pipeline.star_positions.track_positions`); the comparison stars
    are chosen in pixels and kept only when they stay inside every frame;
    ``result.comparison_coords`` then holds their ``(x, y)`` on ``xy_frame`` and
    ``result.target_xy`` the re-centred target.

    Parameters
    ----------
    result : astrodart.pipeline.night.NightResult
        A night reduced up to its stacks (reference frame, FWHM, saturation known).
    target_coord : SkyCoord or str or None
        The light-curve target on the sky. With ``target_xy`` it is optional and only
        gives the direction of the BJD_TDB and airmass (default the frames' RA/DEC).
    comparisons : int or list
        Number of comparison stars to choose (:func:`pick_comparisons`), or the stars:
        SkyCoords, or ``(x, y)`` pixels of ``xy_frame`` with ``target_xy``.
    transit_guess : dict or None or False
        ``{'t0': BJD_TDB, 'duration': days}``; None for a blind fit; False for no fit.
    lc_factors, flux_factors : tuple of float
        Aperture, annulus inner and outer radius (FWHM) of the light curve and of the
        field-star fluxes.
    target_xy : (float, float), optional
        The target in 0-based pixels (photutils' convention) of the raw frame of
        ``xy_frame``; a trimmed calibrated frame's ``LTV1``/``LTV2`` move it onto the
        calibrated pixels (IRAF's convention), as the photometry notebook does.
    xy_frame : str, optional
        The calibrated frame ``target_xy`` refers to (default the earliest frame of the
        series filter).
    site : str, sequence or EarthLocation, optional
        The observatory (default the frames' site keywords).
    aperture : {'fwhm', 'auto'}
        Aperture of the light curve: ``lc_factors[0]`` x FWHM, or the radius of the
        least scattered light curve among a grid (``'auto'``; the annulus stays
        ``lc_factors[1:]``); the field-star fluxes always use ``flux_factors``.

    Raises
    ------
    ValueError
        No usable comparison stars; no star near ``target_xy``; neither a target nor
        a pixel target.
    """
    extra = {"lightcurve_aperture": aperture}
    if site is not None:
        extra["obs_location"] = site
    if target_xy is not None:
        _pixel_light_curve(result, target_coord, comparisons, transit_guess, lc_factors,
                           flux_factors, target_xy, xy_frame, extra)
        return
    if target_coord is None:
        raise ValueError("night_light_curve needs target_coord (a SkyCoord) or target_xy")
    target = target_coord if isinstance(target_coord, SkyCoord) else SkyCoord(target_coord)
    result.target_coord = target
    if isinstance(comparisons, int):
        fwhm = np.nanmedian(result.fwhm[result.series_filter])
        # far enough from the edges for the largest annulus at the worst pointing drift
        margin = flux_factors[2] * 1.5 * fwhm + 30
        comparisons = pick_comparisons(result.reference_frame, target, comparisons,
                                       result.saturation, margin)
    result.comparison_coords = list(comparisons)
    _series_and_field(result, target, result.comparison_coords, transit_guess, lc_factors,
                      flux_factors, extra)


def _series_and_field(result, target, comps, transit_guess, lc_factors, flux_factors,
                      extra) -> None:
    """The series light curve, its transit fit and the field-star fluxes."""
    out = result.data_dir / "photometry"
    series = result.series_filter
    step, res = _measure(result.calibrated, [series], _in(target, result, [series]),
                         _in(comps, result, [series], many=True), result.saturation,
                         lc_factors, out, "lightcurve", result.date, result.target,
                         aperture_type=extra.pop("lightcurve_aperture", "fwhm"), **extra)
    result.lightcurve = res
    if transit_guess is not False:
        guess = transit_guess or {}
        result.transit = step.fit_transit(series, t0=guess.get("t0"),
                                          duration=guess.get("duration"))
    _, result.field_photometry = _measure(
        result.calibrated, result.filters, _in(target, result, result.filters),
        _in(comps, result, result.filters, many=True), result.saturation, flux_factors,
        out, "field_stars", result.date, result.target, **extra)


def _in(positions, result, filters, many=False):
    """Sky positions as they are; tracked pixel positions (a dict by filter) laid out
    for ``filters``: ``[filter][file]``, or ``[star][filter][file]`` when ``many``."""
    if not isinstance(positions, dict):
        return positions
    if many:
        n = len(positions[filters[0]][0]) - 1
        return [[[tuple(p[k + 1]) for p in positions[f]] for f in filters] for k in range(n)]
    return [[tuple(p[0]) for p in positions[f]] for f in filters]


# ---------------------------------------------------------------------------------------
# pixel targets: fields without a WCS
# ---------------------------------------------------------------------------------------
def _earliest(files) -> str:
    """The frame of ``files`` with the earliest mid-exposure (the first when unknown)."""
    from astrodart.frames.header import FrameHeader

    def when(path):
        mid = FrameHeader.from_file(path).mid_exposure
        return mid.jd if mid is not None else np.inf

    return min(files, key=when)


def _target_on_frame(frame: str, target_xy, fwhm: float) -> np.ndarray:
    """``target_xy`` (raw pixels) moved onto calibrated ``frame``, snapped to the nearest
    star detected there (5 sigma) and re-centred."""
    from astrodart.frames.io import read_frame
    from astrodart.photometry.centroids import recentre
    from astrodart.pipeline.star_positions import numbered_stars

    try:
        xy = np.array([float(v) for v in target_xy])
    except (TypeError, ValueError):
        xy = np.zeros(0)
    if xy.shape != (2,) or not np.all(np.isfinite(xy)):
        raise ValueError(f"target_xy={target_xy!r}: give two finite 0-based pixel numbers X,Y")
    ccd = read_frame(frame)
    xy = xy + [float(ccd.meta.get("LTV1", 0.0)), float(ccd.meta.get("LTV2", 0.0))]
    ny, nx = ccd.shape
    if not (0 <= xy[0] <= nx - 1 and 0 <= xy[1] <= ny - 1):
        raise ValueError(f"target_xy={tuple(target_xy)}: outside {Path(frame).name} "
                         f"({nx} x {ny} pixels, 0-based)")
    radius = max(5.0, 2.0 * fwhm)
    stars, _ = numbered_stars(frame, 5.0)
    dist = np.hypot(np.asarray(stars["x"], float) - xy[0], np.asarray(stars["y"], float) - xy[1])
    if dist.size == 0 or dist.min() > radius:
        raise ValueError(f"target_xy={tuple(target_xy)}: no star detected (5 sigma) within "
                         f"{radius:.0f} px of ({xy[0]:.1f}, {xy[1]:.1f}) on {frame}")
    k = int(np.argmin(dist))
    start = np.array([[float(stars["x"][k]), float(stars["y"][k])]])
    new, ok = recentre(np.asarray(ccd.data, float), start, fwhm, mask=ccd.mask)
    return new[0] if ok[0] else start[0]


def _check_time_inputs(frame: str, target_coord, site) -> None:
    """Before any work: the BJD_TDB needs the target's direction and the site."""
    from astrodart.frames.header import FrameHeader
    from astrodart.photometry.sites import resolve_location

    header = FrameHeader.from_file(frame)
    if target_coord is None and header.coord is None:
        raise ValueError(f"{frame}: no RA/DEC in the header; give the target's sky position "
                         "too (--coord), for the BJD_TDB time stamps and the airmass")
    resolve_location(site, header)  # ValueError naming what to give when unknown


def _aligned_transforms(result, files) -> dict:
    """Calibrated frame -> its transform onto the alignment's reference grid
    (:class:`~astrodart.alignment.transforms.PixelTransform`), from the ``ALNA*`` header
    keywords of the aligned frames; frames that were not aligned are absent."""
    from astrodart.alignment.transforms import PixelTransform
    from astrodart.frames.io import read_header, strip_fits_suffix

    by_stem = {strip_fits_suffix(Path(f).name): f for f in files}
    out = {}
    for aligned in (a for fl in (result.aligned or {}).values() for a in (fl or [])):
        stem = strip_fits_suffix(Path(aligned).name)
        stem = stem.removeprefix("aligned_")
        if stem not in by_stem:
            continue
        h = read_header(aligned)
        if "ALNA11" not in h:
            continue
        m = np.eye(3)
        m[:2, :] = [[h[f"ALNA{i}{j}"] for j in (1, 2, 3)] for i in (1, 2)]
        out[by_stem[stem]] = PixelTransform(m)
    return out


def _track(result, ref: str, xy: np.ndarray) -> dict:
    """Positions ``(n, 2)`` of ``xy`` (on ``ref``) in every frame of every filter."""
    from astrodart.pipeline.star_positions import track_positions

    files = [f for flt in result.filters for f in result.calibrated[flt]]
    known = _aligned_transforms(result, files + [ref])
    tracked = {}
    if ref in known:
        on_grid = known[ref].apply(xy)
        tracked = {f: known[f].inverse().apply(on_grid) for f in files if f in known}
    rest = [f for f in files if f not in tracked]
    if rest:
        tracked.update(zip(rest, track_positions(rest, xy, reference=ref)))
    return {flt: [tracked[f] for f in result.calibrated[flt]] for flt in result.filters}


def _inside_all_night(tracked: dict, shape, margin: float) -> np.ndarray:
    """Which of the tracked stars stay ``margin`` pixels inside every frame."""
    ny, nx = shape
    allxy = np.stack([p for fl in tracked.values() for p in fl])  # (frames, stars, 2)
    x, y = allxy[..., 0], allxy[..., 1]
    return ((x.min(0) > margin) & (x.max(0) < nx - 1 - margin)
            & (y.min(0) > margin) & (y.max(0) < ny - 1 - margin))


def _pixel_pairs(comparisons) -> list:
    """Comparison stars given as ``(x, y)`` pixels, checked."""
    try:
        pairs = [tuple(float(v) for v in c) for c in comparisons]
    except (TypeError, ValueError):
        pairs = []
    if len(pairs) < 2 or any(len(p) != 2 for p in pairs):
        raise ValueError(f"comparisons={comparisons!r}: with target_xy give a number of stars "
                         "to choose, or at least two (x, y) pixel positions on xy_frame")
    return pairs


def _pixel_light_curve(result, target_coord, comparisons, transit_guess, lc_factors,
                       flux_factors, target_xy, xy_frame, extra) -> None:
    """:func:`night_light_curve` of a target given in pixels (see there)."""
    from astrodart.frames.io import read_frame

    series = result.series_filter
    ref = str(xy_frame) if xy_frame is not None else _earliest(result.calibrated[series])
    fwhm = float(np.nanmedian(result.fwhm.get(series, [np.nan])))
    fwhm = fwhm if np.isfinite(fwhm) else 3.0
    _check_time_inputs(ref, target_coord, extra.get("obs_location"))
    txy = _target_on_frame(ref, target_xy, fwhm)
    margin = flux_factors[2] * 1.5 * fwhm
    if isinstance(comparisons, int):
        n_wanted = comparisons
        # candidates beyond the number wanted: some may leave the frame during the night
        comps = pick_comparisons(ref, tuple(txy), 3 * comparisons, result.saturation, margin)
    else:
        n_wanted, comps = len(comparisons), _pixel_pairs(comparisons)
    tracked = _track(result, ref, np.vstack([txy[None, :], np.asarray(comps, float)]))
    inside = _inside_all_night(tracked, read_frame(ref).shape, margin)
    keep = [k for k in range(len(comps)) if inside[k + 1]][:n_wanted]
    if len(keep) < 2:
        raise ValueError(f"only {len(keep)} comparison stars stay inside every frame of the "
                         f"night on {ref}; give comparisons in pixels")
    cols = [0] + [k + 1 for k in keep]
    tracked = {f: [p[cols] for p in fl] for f, fl in tracked.items()}
    sky = None
    if target_coord is not None:
        sky = target_coord if isinstance(target_coord, SkyCoord) else SkyCoord(target_coord)
        extra = {**extra, "target_skycoord": sky}
    result.target_coord = sky
    result.target_xy = (float(txy[0]), float(txy[1]))
    result.comparison_coords = [tuple(comps[k]) for k in keep]
    _series_and_field(result, tracked, tracked, transit_guess, lc_factors, flux_factors,
                      extra)
