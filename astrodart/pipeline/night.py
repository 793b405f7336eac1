"""The night runner: one call from a raw night to its science products.

:func:`reduce_night` walks :data:`NIGHT_STEPS`, the order of a night written as data: a
list of named :class:`NightStep` entries, each a small function over the run's state that
chains the public stage calls in the order the guided notebooks use them -- nothing here
measures or models anything itself::

    organise     data_organiser (raw night -> sorted data tree; or the frames of a survey)
    masters      calibration_chain + master_frame (bias, darks, flats in electrons)
                 -> bad_pixel_map
    calibrate    calibration_chain (science: uncertainty, gain, L.A.Cosmic, bias, dark,
                 flat, in one pass) -> finalize_stage1
    quality      get_fwhm (detection kernel) -> quality_table (per filter) -> reference
    astrometry   astrometry (offline plate solving; the reference frame first)
    align        align (onto the sharpest good frame)
    stack        stack -> get_fwhm (stacks)
    photometry   comparison stars -> ensemble light curve -> transit fit; field-star
                 fluxes (only with a target)

``print(*NIGHT_STEPS, sep='\n')`` lists that plan; a caller may walk another one
(``steps=``), e.g. with the light-curve figure of the user interface
(:data:`astrodart.ui.lightcurve_plot.LIGHTCURVE_FIGURE`) appended. The run returns a
:class:`NightResult` with the paths of everything it wrote and the seconds spent per
step. Every step resumes (outputs that exist are reused unless ``overwrite``), so a
second call on the same tree is quick; the quality and plate-solution tables carry the
fingerprint of their inputs (:mod:`astrodart.pipeline.fingerprint`) and are reused only
when it matches.

Only the conversions a user would do by hand live here: the camera's raw saturation
level expressed in calibrated electrons and the choice of comparison stars from the
detections of a reference frame. The simulated night with known truth is run by
:mod:`astrodart.pipeline.simulated` and compared by :mod:`astrodart.pipeline.truth`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table

from astrodart.pipeline.night_calibration import (
    calibrate_science, kept_masters, masters_from_calibration, night_masters, saturation_electrons)
from astrodart.pipeline.night_astrometry import astrometry_step
from astrodart.pipeline.night_photometry import night_light_curve
from astrodart.pipeline.night_stack import align_night, stack_night
from astrodart.pipeline.quality_stars import keep_star_lists

__all__ = [
    "FLUX_APERTURES",
    "LIGHTCURVE_APERTURES",
    "NIGHT_STEPS",
    "NightResult",
    "NightStep",
    "reduce_night",
]

log = logging.getLogger("astrodart")

#: Aperture radius, sky annulus inner and outer radius (in FWHM) of the light curve: near
#: the signal-to-noise optimum of stars against a bright sky (Howell 1989, PASP 101, 616).
LIGHTCURVE_APERTURES = (2.0, 4.0, 6.0)
#: The same for absolute star fluxes: a Moffat (beta = 3) star loses 0.14 % of its light
#: outside 5 FWHM, 1.8 % outside AstroDART's 2.5 FWHM.
FLUX_APERTURES = (5.0, 6.0, 8.0)


@dataclass
class NightResult:
    """What :func:`reduce_night` produced (paths are strings).

    The steps of :data:`NIGHT_STEPS` fill it in turn; each field is also an attribute.

    Parameters
    ----------
    root : pathlib.Path
        Project folder holding ``uncal_data/`` and ``reduced_data/``.
    date, target : str
        Night folder name and target.
    data_dir : pathlib.Path
        ``root/reduced_data/<date>/<target>/``.
    filters : list of str
        Filters reduced.
    masters : dict
        ``{'bias': path, 'dark': {exptime: path}, 'flat': {filter: path},
        'badpixel': path}`` (copies kept in ``data_dir/calibration/``), in electrons.
    calibrated : dict
        Filter -> calibrated science frames (``data_dir/<filter>/``), plate-solved in place.
    fwhm : dict
        Filter -> FWHM per calibrated frame (pixels).
    astrometry : astropy.table.Table
        One row per frame: solved, backend, index, matched stars, rms, scale, reason.
    quality : astropy.table.Table
        Per-frame quality (:func:`astrodart.pipeline.quality.quality_table`), saved in
        ``data_dir/quality/quality.ecsv``.
    reference_frame : str
        The frame every filter was aligned onto.
    aligned : dict
        Filter -> aligned frames.
    align_failed : dict
        Frames left out of the alignment -> the reason.
    stacks : dict
        Filter -> stack path (``data_dir/stacks/``).
    stack_fwhm : dict
        Filter -> FWHM of the stack (pixels).
    saturation : float
        Level (calibrated electrons) above which a pixel counts as saturated.
    target_coord : SkyCoord or None
        The light-curve target.
    comparison_coords : list of SkyCoord
        Comparison stars chosen on the reference frame.
    lightcurve : dict or None
        :meth:`astrodart.pipeline.photometry.PhotometryRun.run_multi_coord` result of the
        series filter (saved in ``data_dir/photometry/``).
    transit : astrodart.photometry.transit.TransitFit or None
        Transit fit of the differential light curve.
    field_photometry : dict or None
        Large-aperture photometry of the target and comparisons in every filter (for
        absolute fluxes), saved in ``data_dir/photometry/``.
    series_filter : str or None
        Filter of the light curve.
    timings : dict
        Seconds per stage.
    reused : list of str
        Steps whose outputs were found current and reused.
    products : dict
        Files written by steps appended to the plan (name -> path).
    target_xy : tuple of float or None
        Re-centred pixel position of a target given in pixels (fields without a plate
        solution), on the frame it was given for.
    """

    root: Path
    date: str
    target: str
    data_dir: Path
    filters: list = field(default_factory=list)
    masters: dict = field(default_factory=dict)
    calibrated: dict = field(default_factory=dict)
    fwhm: dict = field(default_factory=dict)
    astrometry: Table | None = None
    quality: Table | None = None
    reference_frame: str | None = None
    aligned: dict = field(default_factory=dict)
    align_failed: dict = field(default_factory=dict)
    stacks: dict = field(default_factory=dict)
    stack_fwhm: dict = field(default_factory=dict)
    saturation: float | None = None
    target_coord: SkyCoord | None = None
    comparison_coords: list = field(default_factory=list)
    lightcurve: dict | None = None
    transit: object | None = None
    field_photometry: dict | None = None
    series_filter: str | None = None
    timings: dict = field(default_factory=dict)
    reused: list = field(default_factory=list)
    products: dict = field(default_factory=dict)
    target_xy: tuple | None = None

    def summary(self) -> str:
        """A few lines: frames, solved frames, stacks, transit, time per stage.

        Returns
        -------
        str
            The lines, joined by newlines.
        """
        n = sum(len(v) for v in self.calibrated.values())
        solved = int(np.sum(self.astrometry["solved"])) if self.astrometry is not None else 0
        lines = [f"night {self.date} / {self.target}: {n} calibrated frames in "
                 f"{', '.join(self.filters)}; {solved}/{n} plate-solved; stacks: "
                 + ", ".join(f"{f} (FWHM {self.stack_fwhm.get(f, float('nan')):.2f} px)"
                             for f in self.stacks)]
        if self.transit is not None:
            lines.append(f"transit ({self.series_filter}): {self.transit.summary()}")
        lines.append("time per stage: " + ", ".join(f"{k} {v:.0f} s"
                                                    for k, v in self.timings.items()))
        return "\n".join(lines)


class _Clock:
    """Seconds spent per stage, logged as each stage ends."""

    def __init__(self, timings: dict):
        self.timings, self.name, self.t0 = timings, None, 0.0

    def __call__(self, name: str):
        self.name = name
        return self

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.name] = time.perf_counter() - self.t0
        log.info("reduce_night: %s in %.1f s", self.name, self.timings[self.name])


# ---------------------------------------------------------------------------------------
# the night as data: named steps over the run's state
# ---------------------------------------------------------------------------------------
@dataclass
class _NightRun:
    """What the steps of one night share: the options, the result being filled, the pool."""

    root: Path
    options: SimpleNamespace
    result: NightResult
    pool: object
    engine: dict
    tree: object = None
    dirs: dict = field(default_factory=dict)
    guess: dict = field(default_factory=dict)
    reused: list = field(default_factory=list)
    tables: dict = field(default_factory=dict)
    colour: dict = field(default_factory=dict)

    @property
    def products(self) -> dict:
        """Files written by appended steps (the result's ``products``)."""
        return self.result.products


@dataclass(frozen=True)
class NightStep:
    """One named step of a night: what it does and the function that does it.

    Parameters
    ----------
    name : str
        Short name; also the key of the step's time in :attr:`NightResult.timings`.
    run : callable
        ``run(state)`` on the run's state (options, data tree, :class:`NightResult`
        being filled, executor); fills its part of the result.
    does : str
        One line for people: the stage calls it chains.
    when : callable, optional
        ``when(options) -> bool``: whether the step runs for these options of
        :func:`reduce_night` (default: always).
    """

    name: str
    run: Callable
    does: str
    when: Callable | None = None

    def applies(self, options) -> bool:
        """Whether the step runs for ``options`` (the keyword arguments of the run).

        Parameters
        ----------
        options : types.SimpleNamespace
            The options of :func:`reduce_night`.

        Returns
        -------
        bool
            True when ``when`` is None or says so.
        """
        return self.when is None or bool(self.when(options))

    def __repr__(self) -> str:
        return f"{self.name:<12} {self.does}"


def _organise(run: _NightRun) -> None:
    from astrodart.pipeline.organise import data_organiser, get_directory

    opt, result = run.options, run.result
    org = data_organiser(run.root / "uncal_data", run.root / "reduced_data", result.date,
                         result.target, overwrite=opt.overwrite, verbose=False,
                         survey=opt.survey)
    org.run()
    result.data_dir = Path(org.get_directory())
    run.tree = get_directory(result.data_dir)
    _, _, raw_filters = run.tree.science()
    if not raw_filters:
        raise FileNotFoundError(f"{result.data_dir}: no science frames of {result.target!r}")
    chosen = list(raw_filters if opt.filters is None else opt.filters)
    unknown = [f for f in chosen if f not in raw_filters]
    if unknown:
        raise ValueError(f"filters {unknown} have no science frames; the night has "
                         f"{raw_filters}")
    result.filters = chosen


def _finalized(run: _NightRun) -> tuple:
    """The calibrated science of the chosen filters when a previous run finalized them."""
    dirs, files, filters = run.tree.science_final()
    done = (not run.options.overwrite and set(run.result.filters) <= set(filters)
            and all(files[filters.index(f)] for f in run.result.filters))
    return done, dirs, files, filters


def _masters(run: _NightRun) -> None:
    opt, result, tree = run.options, run.result, run.tree
    done, *_ = _finalized(run)
    if done:
        result.masters = masters_from_calibration(tree.calibration())
        return
    exptimes = sorted({float(t) for t in _light_exptimes(tree, result.filters)})
    result.masters = night_masters(tree, run.engine, opt.overwrite,
                                   interpolate_darks=opt.interpolate_darks,
                                   light_exptimes=exptimes, gain=opt.gain,
                                   read_noise=opt.read_noise)


def _light_exptimes(tree, filters) -> list:
    """Exposure times of the science frames of ``filters`` (from their headers)."""
    from astrodart.frames.header import FrameHeader

    times = set()
    for _, files, f in zip(*tree.science()):
        if f in filters:
            times.update(FrameHeader.from_file(p).exptime for p in files)
    return sorted(times)


def _calibrate(run: _NightRun) -> None:
    from astrodart.frames.camera import camera_saturation
    from astrodart.pipeline.finalize import finalize_stage1
    from astrodart.pipeline.organise import get_directory

    opt, result, tree = run.options, run.result, run.tree
    chosen, data_dir = result.filters, result.data_dir
    done, done_dirs, done_files, done_filters = _finalized(run)
    if not done:
        obj_dirs = calibrate_science(tree, result.masters, chosen, opt.cosmic_rays, run.engine,
                                     opt.overwrite, already_calibrated=opt.calibrated)
        finalize_stage1(data_dir, obj_dirs, tree.bias()[0], tree.dark()[0],
                        tree.flatfield()[0]).run()
        result.masters = kept_masters(get_directory(data_dir).calibration(), result.masters)
        _, done_dirs, done_files, done_filters = _finalized(run)
    else:
        run.reused += ["masters", "calibrate"]
    run.dirs = {f: d for d, f in zip(done_dirs, done_filters) if f in chosen}
    result.calibrated = {f: fl for fl, f in zip(done_files, done_filters) if f in chosen}
    saturation = opt.saturation
    if saturation is None:
        raw = tree.science()[1]
        first = raw[0][0] if raw and raw[0] else result.calibrated[chosen[0]][0]
        saturation = camera_saturation(raw[0] if raw and raw[0] else [first])  # 12-bit too
    result.saturation = saturation_electrons(saturation, result.masters, chosen)
    from astrodart.pipeline.night_bayer import demosaic_night

    demosaic_night(run)  # colour cameras: each CFA filter becomes three channel filters


def _quality(run: _NightRun) -> None:
    from astropy.table import vstack
    from astrodart.pipeline.fingerprint import table_of
    from astrodart.pipeline.measure import get_fwhm
    from astrodart.pipeline.quality import quality_table, sharpest_good_frame

    result, stars = run.result, {}
    files = [p for f in result.filters for p in result.calibrated[f]]

    def measure():
        for f in result.filters:
            # one frame's FWHM sets the detection kernel; the quality table measures all
            run.guess[f] = get_fwhm(result.calibrated[f][:1],
                                    saturation=result.saturation).estimate_fwhm()[0]
        # per filter: transparency and the outlier rules compare frames of one filter
        tables = [quality_table(result.calibrated[f], executor=run.pool, star_lists=stars,
                                fwhm_guess=run.guess[f] if np.isfinite(run.guess[f]) else None)
                  for f in result.filters]
        return vstack(tables, metadata_conflicts="silent")

    table, reused = table_of(result.data_dir / "quality" / "quality.ecsv", "quality", files,
                             {"filters": result.filters}, measure, run.options.overwrite)
    if reused:
        run.reused.append("quality")
    run.tables["stars"] = keep_star_lists(result.data_dir / "quality", table.meta.get(
        "fingerprint"), stars, run.options.overwrite)  # the lists of the frames' stars
    result.quality = table
    rows = {str(r["file"]): float(r["fwhm"]) for r in result.quality}
    for f in result.filters:
        result.fwhm[f] = [rows.get(p, float("nan")) for p in result.calibrated[f]]
        if f not in run.guess:  # a reused table: its median FWHM is the detection kernel
            fw = np.asarray(result.fwhm[f], float)
            run.guess[f] = float(np.median(fw[np.isfinite(fw)])) if np.isfinite(fw).any() \
                else float("nan")
    series = run.options.series_filter or max(result.filters,
                                              key=lambda f: len(result.calibrated[f]))
    result.series_filter = series
    result.reference_frame = sharpest_good_frame(result.quality, result.calibrated[series])


def _align(run: _NightRun) -> None:
    from astrodart.pipeline.align import align

    opt, result, chosen = run.options, run.result, run.result.filters
    if not opt.overwrite:  # aligned frames removed once stacked (tidy): the stacks stand
        from astrodart.pipeline.tidy import stacks_stand
        result.stacks = stacks_stand(result.data_dir, chosen, result.calibrated)
        if result.stacks:
            run.reused.append("align")
            return
    if opt.stack and not getattr(opt, "write_aligned", False):  # transforms from star lists
        return align_night(run)
    step = align([result.calibrated[f] for f in chosen], [run.dirs[f] for f in chosen],
                 result.reference_frame, opt.overwrite, methods=opt.align_methods, **run.engine)
    result.aligned = dict(zip(chosen, step.run()))
    result.align_failed = dict(step.failed)
    reports = getattr(step, "reports", None) or [getattr(step, "report", None)]
    if all(r is not None and r.reused and not r.written for r in reports):
        run.reused.append("align")


def _stack(run: _NightRun) -> None:
    from astrodart.pipeline.measure import get_fwhm
    from astrodart.pipeline.night_bayer import colour_composite
    from astrodart.pipeline.stack import stack

    opt, result = run.options, run.result
    stack_night(run)  # after align_night: frames warped in memory, no aligned file
    chosen = [f for f in result.filters if result.aligned.get(f) and f not in result.stacks]
    stacks = stack([result.aligned[f] for f in chosen], chosen, result.data_dir / "stacks",
                   combining_method="median", quality=result.quality, overwrite=opt.overwrite)
    result.stacks.update({f: s for f, s in zip(chosen, stacks) if s is not None})
    fw = get_fwhm(list(result.stacks.values()), saturation=result.saturation)
    result.stack_fwhm = dict(zip(result.stacks, fw.estimate_fwhm()))
    colour_composite(run)


def _photometry_step(run: _NightRun) -> None:
    opt = run.options
    night_light_curve(run.result, opt.target_coord, opt.comparisons, opt.transit_guess,
                      opt.lightcurve_apertures, opt.flux_apertures, target_xy=opt.target_xy,
                      site=opt.site, aperture=opt.lightcurve_aperture)


#: The order of a night (data, walked by :func:`reduce_night`);
#: ``print(*NIGHT_STEPS, sep='\n')`` shows the plan. A step's name keys its time in
#: :attr:`NightResult.timings`.
NIGHT_STEPS = (
    NightStep("organise", _organise, "data_organiser: raw night -> data tree"),
    NightStep("masters", _masters,
              "calibration_chain + master_frame: bias, darks, flats in electrons -> "
              "bad_pixel_map (what the night has; missing kinds are said)"),
    NightStep("calibrate", _calibrate,
              "calibration_chain on the science frames in one pass (uncertainty, gain, "
              "cosmic rays by L.A.Cosmic, bias, dark, flat) -> finalize_stage1 -> "
              "demosaic (colour cameras: three channel filters)"),
    NightStep("quality", _quality, "get_fwhm (detection kernel) -> quality_table per filter "
                                   "-> the sharpest good frame is the reference"),
    NightStep("astrometry", astrometry_step,
              "astrometry (offline plate solving): the reference frame first, the others "
              "with its scale and centre, none when it fails"),
    NightStep("align", _align, "align onto the reference frame (stars, WCS, FFT)"),
    NightStep("stack", _stack, "stack (median of the good frames) -> get_fwhm (stacks)",
              when=lambda opt: getattr(opt, "stack", True)),
    NightStep("photometry", _photometry_step,
              "comparison stars -> light curve -> transit fit; field-star fluxes",
              when=lambda opt: opt.target_coord is not None or opt.target_xy is not None),
)


def reduce_night(root, date: str, target: str, *, filters=None, target_coord=None,
                 series_filter: str | None = None, comparisons=10, transit_guess=None,
                 saturation: float | None = None, cosmic_rays: str | None = "lacosmic",
                 lightcurve_apertures=LIGHTCURVE_APERTURES, flux_apertures=FLUX_APERTURES,
                 align_methods=("stars", "wcs", "fft"), executor=None,
                 workers: int | None = None, progress: bool = False,
                 overwrite: bool = False, steps=NIGHT_STEPS, interpolate_darks: bool = False,
                 gain: float | None = None, read_noise: float | None = None,
                 calibrated=False, site=None, stack: bool = True,
                 survey=None, target_xy=None, lightcurve_aperture: str = "fwhm",
                 bayer_pattern: str | None = None, demosaic: str = "bilinear",
                 write_aligned: bool = False) -> NightResult:
    """Reduce a raw night ``root/uncal_data/<date>/`` end to end: walk :data:`NIGHT_STEPS`.

    Parameters
    ----------
    root : str or pathlib.Path
        Project folder holding ``uncal_data/<date>/``; products go to
        ``root/reduced_data/<date>/<target>/``.
    date : str
        Night folder name (``YYMMDD``).
    target : str
        ``OBJECT`` of the science frames (matched ignoring case, spaces, '-' and '_').
    filters : sequence of str, optional
        Filters to reduce (default: every filter with science frames).
    target_coord : SkyCoord, optional
        The light-curve target; without it no photometry is done.
    series_filter : str, optional
        Filter of the light curve (default: the filter with the most frames).
    comparisons : int or list of SkyCoord
        Number of comparison stars to choose on the reference frame, or the stars.
    transit_guess : dict, optional
        ``{'t0': BJD_TDB, 'duration': days}`` for the transit fit (default: a blind fit;
        ``False`` skips the fit).
    saturation : float, optional
        Raw saturation level of the camera (ADU); default the frames' ``SATURATE``, else
        the 16-bit converter's maximum.
    cosmic_rays : {'lacosmic', 'median', None}
        Cosmic-ray method for the science frames.
    lightcurve_apertures, flux_apertures : tuple of float
        Aperture, annulus inner and outer radius (FWHM) of the light curve and of the
        field-star fluxes.
    align_methods : sequence of {'stars', 'wcs', 'fft'}
        The alignment ladder (:class:`astrodart.pipeline.align.align`);
        star patterns first: as accurate as WCS reprojection on these fields and about
        five times faster.
    executor : concurrent.futures.Executor, distributed.Client or str, optional
        Shared by the steps (default: a process pool of ``workers`` processes, shut down
        at the end), or a dask scheduler address (``'tcp://HOST:8786'``); a client made
        from an address is closed at the end.
    workers : int, optional
        Processes of the default pool (default: all cores).
    progress : bool
        Show the step engine's progress bars.
    overwrite : bool
        Redo every step (default: reuse what exists).
    steps : sequence of NightStep
        The plan to walk, in order (default :data:`NIGHT_STEPS`); each step relies on
        the ones before it.
    interpolate_darks : bool
        A light exposure without darks gets a master dark interpolated per pixel from
        the masters of the other exposures (``D = t A + B``, as astro_reduce does)
        instead of one scaled from the nearest.
    gain, read_noise : float, optional
        Gain (e-/ADU) and read noise (e-) when the headers do not give them (default:
        measured from bias and flat pairs when the night has them).
    calibrated : bool or set of str
        The science frames are calibrated already (True), or the names of those that
        are: no bias, dark or flat again.
    site : astropy.coordinates.EarthLocation, optional
        The observatory, for time stamps and airmass (default: the frames' headers).
    stack : bool
        Stack the aligned frames.
    survey : astrodart.pipeline.survey.NightSurvey, optional
        Frames found and classified in any folder layout
        (:func:`astrodart.pipeline.survey.survey_night`): the organise step sorts these
        instead of reading ``root/uncal_data/<date>/`` by header.
    target_xy : tuple of float, optional
        ``(x, y)``: 0-based pixel position of the target on the earliest light frame,
        for fields without a plate solution (instead of ``target_coord``).
    lightcurve_aperture : {'fwhm', 'auto'}
        The light curve's aperture: ``lightcurve_apertures[0]`` x FWHM, or the radius
        whose differential light curve scatters least (``'auto'``, as EXOTIC chooses).
    bayer_pattern : str, optional
        CFA pattern of a colour camera's frames, overriding their headers' ``BAYERPAT``.
    demosaic : {'bilinear', 'malvar', 'menon', 'superpixel'}
        How colour frames are demosaiced (:mod:`astrodart.pipeline.night_bayer`).
    write_aligned : bool
        Write an aligned frame per light (the ``align`` step); by default the night is
        aligned from the quality step's star lists and stacked in memory
        (:mod:`astrodart.pipeline.night_stack`) and ``NightResult.aligned`` stays empty.

    Returns
    -------
    NightResult
        Paths of every product and the seconds spent per step (``timings``).

    Raises
    ------
    FileNotFoundError
        No night folder, or a frame type the reduction needs is missing.
    ValueError
        Unknown filter, or no usable comparison stars.
    """
    from astrodart.pipeline.cluster import shared_executor

    options = SimpleNamespace(
        filters=filters, target_coord=target_coord, series_filter=series_filter,
        comparisons=comparisons, transit_guess=transit_guess, saturation=saturation,
        cosmic_rays=cosmic_rays, lightcurve_apertures=lightcurve_apertures,
        flux_apertures=flux_apertures, align_methods=align_methods, overwrite=overwrite,
        interpolate_darks=interpolate_darks, gain=gain, read_noise=read_noise,
        calibrated=calibrated, site=site, stack=stack, survey=survey, target_xy=target_xy,
        lightcurve_aperture=lightcurve_aperture, bayer_pattern=bayer_pattern, demosaic=demosaic,
        write_aligned=write_aligned)
    root = Path(root)
    result = NightResult(root, str(date), str(target), Path())
    clock = _Clock(result.timings)
    pool, release = shared_executor(executor, workers)
    run = _NightRun(root, options, result, pool, {"executor": pool, "progress": progress})
    try:
        for step in steps:
            if step.applies(options):
                with clock(step.name):
                    step.run(run)
        result.reused = list(dict.fromkeys(run.reused))
    finally:
        release()
    log.info("%s", result.summary())
    return result

