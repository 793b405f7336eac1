"""One call from a raw night to its science products, and the simulated night checked
against its truth.

:func:`reduce_night` chains the public stage calls in the order the guided notebooks
use them — nothing here measures or models anything itself::

    data_organiser -> calibration_chain + master_frame (bias, darks, flats in electrons)
    -> bad_pixel_map -> calibration_chain (science: uncertainty, gain, L.A.Cosmic, bias,
    dark, flat) -> finalize_stage1 -> get_fwhm -> astrometry (offline plate solving)
    -> quality_table -> align -> stack -> get_fwhm (stacks) -> photometry (ensemble light
    curve and transit fit; field-star fluxes)

It returns a :class:`NightResult` with the paths of everything it wrote. Every step
resumes (outputs that exist are reused unless ``overwrite``), so a second call on the
same tree is quick.

:func:`simulate_and_reduce` simulates a night with known truth
(:func:`astrodart.datasets.samples.simulate_night`, settings :data:`SIMULATED_NIGHT`), reduces it
with :func:`reduce_night` and compares every product with the truth
(:func:`compare_with_truth`: masters, plate solutions, stack FWHM, star fluxes, transit).
:func:`simulated_night_report` is the main job's fallback when the real sample night is
not available (``python -m astrodart.cli demo``, or ``demo --simulated``): it prints that
table (:func:`format_comparison`) and saves it (:func:`save_comparison`).
``tests/test_accuracy.py`` checks each criterion against the truth.

Only the conversions a user would do by hand live here: the camera's raw saturation
level expressed in calibrated electrons, the choice of comparison stars from the
detections of a reference frame, and (for the simulated night) the truth expressed in
the units of the reduction.
"""
from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

__all__ = [
    "SIMULATED_NIGHT",
    "NightResult",
    "compare_with_truth",
    "format_comparison",
    "reduce_night",
    "save_comparison",
    "simulate_and_reduce",
    "simulated_night_report",
    "star_flux_residuals",
]

log = logging.getLogger("astrodart")

#: Options of :func:`astrodart.datasets.samples.simulate_night` for the simulated night of the
#: main job and of the accuracy tests (over its defaults): a 512 x 512 px, 51' field of M67
#: at 6"/px (plate-solvable with the Tycho-2 index files), 8 bias frames, 5 darks at 60 s
#: and at 120 s, 5 dome flats per filter, 3 B (120 s) and 3 R (60 s) frames around a
#: 60-frame V series (120 s exposures, 2.3 h at 140 s cadence) with a 3 %, 1.5 h transit
#: of a V ~ 10 star 6 min after the series' middle. The transit fit's depth error is then
#: ~4 % of the depth and its mid-time error ~0.6 min, well inside the accuracy criteria
#: (10 %, 2 min); 3 frames is the fewest the field-star ensemble accepts per filter. Sized
#: so that simulation and reduction take about 3 minutes on two busy cores.
SIMULATED_NIGHT = {
    "n_bias": 8, "n_dark": 5, "n_flat": 5, "n_science": {"B": 3, "V": 60, "R": 3},
    "transit_depth": 0.03, "transit_duration": 1.5,
}

#: Aperture radius, sky annulus inner and outer radius (in FWHM) of the light curve: near
#: the signal-to-noise optimum of stars against a bright sky (Howell 1989, PASP 101, 616).
LIGHTCURVE_APERTURES = (2.0, 4.0, 6.0)
#: The same for absolute star fluxes: a Moffat (beta = 3) star loses 0.14 % of its light
#: outside 5 FWHM, 1.8 % outside AstroDART's 2.5 FWHM.
FLUX_APERTURES = (5.0, 6.0, 8.0)


@dataclass
class NightResult:
    """What :func:`reduce_night` produced (paths are strings).

    Attributes
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
        Per-frame quality (:func:`astrodart.sources.quality.quality_table`), saved in
        ``data_dir/quality/quality.ecsv``.
    reference_frame : str
        The frame every filter was aligned onto.
    aligned : dict
        Filter -> aligned frames; ``align_failed`` maps left-out frames to the reason.
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
        :meth:`astrodart.third_stage_photometry.photometry.run_multi_coord` result of the
        series filter (saved in ``data_dir/photometry/``).
    transit : astrodart.photometry.measure.TransitFit or None
        Transit fit of the differential light curve.
    field_photometry : dict or None
        Large-aperture photometry of the target and comparisons in every filter (for
        absolute fluxes), saved in ``data_dir/photometry/``.
    series_filter : str or None
        Filter of the light curve.
    timings : dict
        Seconds per stage.
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

    def summary(self) -> str:
        """A few lines: frames, solved frames, stacks, transit, time per stage."""
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
# stage 1
# ---------------------------------------------------------------------------------------
def _calibration_masters(tree, engine: dict, overwrite: bool) -> dict:
    """Master bias, darks (bias-subtracted) and flats, all in electrons, and a bad-pixel map."""
    from astrodart.first_stage import bad_pixel_map, calibration_chain, master_frame

    clip = ("average", "sigclip", 3.0, 3.0)
    bias_dir, bias_files = tree.bias()
    if not bias_files:
        raise FileNotFoundError(f"{tree.data_dir}: no bias frames (bias/); the night needs them")
    electrons = {"uncertainty": True, "gain_correct": True, **engine}
    b = calibration_chain(bias_dir, bias_files, overwrite, **electrons).run()
    mbias = master_frame(bias_dir, b, "masterbias.fits", *clip, frame_type="bias",
                         overwrite=overwrite).run()
    mdark = {}
    for d, files, t in zip(*tree.dark()):
        out = calibration_chain(d, files, overwrite, masterbias_file=mbias, **electrons).run()
        mdark[float(t)] = master_frame(d, out, f"masterdark_{t:g}s.fits", *clip,
                                       frame_type="dark", overwrite=overwrite).run()
    if not mdark:
        raise FileNotFoundError(f"{tree.data_dir}: no dark frames (dark/<exptime>/)")
    darks = [mdark[t] for t in sorted(mdark)]
    mflat = {}
    for d, files, f in zip(*tree.flatfield()):
        out = calibration_chain(d, files, overwrite, masterbias_file=mbias,
                                masterdark_file=darks, **electrons).run()
        mflat[f] = master_frame(d, out, f"masterflat_{f}.fits", *clip, frame_type="flat",
                                overwrite=overwrite).run()
    longest = Path(mdark[max(mdark)]).parent
    bpm = bad_pixel_map(longest, mdark[max(mdark)], overwrite=overwrite).run()
    return {"bias": mbias, "dark": mdark, "flat": mflat, "badpixel": bpm}


def _calibrate_science(tree, masters: dict, filters, cosmic_rays, engine, overwrite) -> list:
    from astrodart.first_stage import calibration_chain

    dirs = []
    darks = [masters["dark"][t] for t in sorted(masters["dark"])]
    for d, files, f in zip(*tree.science()):
        if f not in filters:
            continue
        if f not in masters["flat"]:
            raise FileNotFoundError(f"{tree.data_dir}: science frames in filter {f!r} but no "
                                    f"flats of that filter (flat/{f}/)")
        calibration_chain(d, files, overwrite, uncertainty=True, gain_correct=True,
                          cosmic_rays=cosmic_rays, masterbias_file=masters["bias"],
                          masterdark_file=darks, masterflatfield_file=masters["flat"][f],
                          badpixel_file=masters["badpixel"], **engine).run()
        dirs.append(d)
    return dirs


def _kept_masters(calibration: dict, masters: dict) -> dict:
    """The masters' copies in ``calibration/`` (what finalize_stage1 keeps)."""
    by_name = {Path(p).name: p for p in calibration.values()}

    def kept(p):
        name = Path(p).name
        hits = [v for k, v in by_name.items() if k == name or k.endswith("_" + name)]
        parent = Path(p).parent.name
        exact = [v for v in hits if Path(v).name.startswith(parent + "_")]
        return (exact or hits or [p])[0]

    return {"bias": kept(masters["bias"]),
            "dark": {t: kept(p) for t, p in masters["dark"].items()},
            "flat": {f: kept(p) for f, p in masters["flat"].items()},
            "badpixel": kept(masters["badpixel"])}


def _saturation_electrons(saturation_adu: float, masters: dict, filters) -> float:
    """The raw saturation level (ADU) as a calibrated value (electrons): the lowest level a
    saturated pixel can show after bias subtraction and division by the normalised flat."""
    from astrodart.calibration.ccd import flat_normalisation
    from astrodart.first_stage import load_master

    bias = load_master(masters["bias"])
    gain = float(bias.meta.get("ADGAIN") or bias.meta.get("GAIN") or 1.0)
    level = saturation_adu * gain - float(np.nanmedian(bias.data))
    top = 1.0
    for f in filters:
        flat = np.asarray(load_master(masters["flat"][f]).data, float)
        top = max(top, float(np.nanpercentile(flat / flat_normalisation(flat), 99.9)))
    return level / top


# ---------------------------------------------------------------------------------------
# stage 3 photometry
# ---------------------------------------------------------------------------------------
def _pick_comparisons(reference: str, target: SkyCoord, n: int, saturation: float,
                      margin: float) -> list[SkyCoord]:
    """The ``n`` brightest detections of the reference frame (the sharpest of the night)
    whose peak stays below 3/4 of the saturation level, with no other detection within
    6 FWHM, away from the edges and not the target."""
    from astrodart.frames.io import read_frame
    from astrodart.second_stage import get_fwhm
    from astrodart.third_stage_photometry import _frame_wcs

    fw = get_fwhm([reference], saturation=saturation)
    fwhm = fw.estimate_fwhm()[0]
    det = fw.results[reference].detections
    ccd = read_frame(reference)
    wcs = _frame_wcs(ccd.meta)
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


def _photometry(files: dict, filters, target, comparisons, saturation, factors, out_dir,
                stem, date, name):
    from astrodart.third_stage_photometry import photometry

    step = photometry("sky", "fwhm", [files[f] for f in filters], list(filters),
                      target_coord=target, comparison_coord=comparisons,
                      fwhm_factors=factors, saturation=saturation, save_results=False,
                      date=date, target_name=name)
    res = step.run_multi_coord()
    step.save_data_dir = Path(out_dir)
    step.save(stem, res)
    return step, res


# ---------------------------------------------------------------------------------------
# the night
# ---------------------------------------------------------------------------------------
def reduce_night(root, date: str, target: str, *, filters=None, target_coord=None,
                 series_filter: str | None = None, comparisons=10, transit_guess=None,
                 saturation: float | None = None, cosmic_rays: str | None = "lacosmic",
                 lightcurve_apertures=LIGHTCURVE_APERTURES, flux_apertures=FLUX_APERTURES,
                 align_methods=("stars", "wcs", "fft"), executor=None,
                 workers: int | None = None, progress: bool = False,
                 overwrite: bool = False) -> NightResult:
    """Reduce a raw night ``root/uncal_data/<date>/`` end to end with the public stage calls.

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
        The alignment ladder (:class:`astrodart.third_stage_astrophotography.align`);
        star patterns first: as accurate as WCS reprojection on these fields and about
        five times faster.
    executor, workers, progress
        Step-engine options (default: one process pool over all cores, shared by the steps).
    overwrite : bool
        Redo every step (default: reuse what exists).

    Returns
    -------
    NightResult

    Raises
    ------
    FileNotFoundError
        No night folder, or a frame type the reduction needs is missing.
    ValueError
        Unknown filter, or no usable comparison stars.
    """
    from astrodart.first_stage import finalize_stage1
    from astrodart.pipeline.step import process_pool
    from astrodart.frames.header import FrameHeader
    from astrodart.sources.quality import quality_table, save_quality_table
    from astrodart.second_stage import get_fwhm
    from astrodart.third_stage_astrophotography import align, stack
    from astrodart.utils import data_organiser, get_directory

    from astropy.table import vstack

    root = Path(root)
    result = NightResult(root, str(date), str(target), Path())
    clock = _Clock(result.timings)
    pool = process_pool(workers or os.cpu_count() or 1) if executor is None else executor
    engine = {"executor": pool, "progress": progress}
    try:
        with clock("organise"):
            org = data_organiser(root / "uncal_data", root / "reduced_data", date, target,
                                 overwrite=overwrite, verbose=False)
            org.run()
            data_dir = Path(org.get_directory())
            result.data_dir = data_dir
            tree = get_directory(data_dir)
            _, _, raw_filters = tree.science()
            if not raw_filters:
                raise FileNotFoundError(f"{data_dir}: no science frames of {target!r}")
            chosen = list(raw_filters if filters is None else filters)
            unknown = [f for f in chosen if f not in raw_filters]
            if unknown:
                raise ValueError(f"filters {unknown} have no science frames; the night has "
                                 f"{raw_filters}")
            result.filters = chosen
        with clock("calibration"):
            done_dirs, done_files, done_filters = tree.science_final()
            calibration = tree.calibration()
            resume = (not overwrite and set(chosen) <= set(done_filters)
                      and any(n.endswith("masterbias.fits") for n in calibration))
            if resume:
                masters = _masters_from_calibration(calibration)
            else:
                masters = _calibration_masters(tree, engine, overwrite)
                obj_dirs = _calibrate_science(tree, masters, chosen, cosmic_rays, engine,
                                              overwrite)
                bias_dir, _ = tree.bias()
                dark_dirs = tree.dark()[0]
                flat_dirs = tree.flatfield()[0]
                finalize_stage1(data_dir, obj_dirs, bias_dir, dark_dirs, flat_dirs).run()
                masters = _kept_masters(get_directory(data_dir).calibration(), masters)
                done_dirs, done_files, done_filters = tree.science_final()
            result.masters = masters
            dirs = {f: d for d, f in zip(done_dirs, done_filters) if f in chosen}
            result.calibrated = {f: fl for fl, f in zip(done_files, done_filters) if f in chosen}
            if saturation is None:
                raw = FrameHeader.from_file(tree.science()[1][0][0])
                saturation = raw.saturation or 65535.0
            result.saturation = _saturation_electrons(saturation, masters, chosen)
        with clock("astrometry"):
            jobs, guess = [], {}
            n_chunks = max(1, getattr(pool, "_max_workers", None) or os.cpu_count() or 1)
            for f in chosen:
                # one frame's FWHM sets the detection kernel; the quality table measures all
                guess[f] = get_fwhm(result.calibrated[f][:1],
                                    saturation=result.saturation).estimate_fwhm()[0]
                # the astrometry step solves its frames one after the other: split each
                # filter's frames over the workers
                files = result.calibrated[f]
                size = -(-len(files) // n_chunks)
                for k in range(0, len(files), size):
                    jobs.append(pool.submit(_solve_frames, str(data_dir), files[k:k + size],
                                            guess[f], overwrite))
            result.astrometry = vstack([j.result() for j in jobs])
        with clock("quality"):
            # per filter: transparency and the outlier rules compare frames of one filter
            tables = [quality_table(result.calibrated[f], executor=pool,
                                    fwhm_guess=guess[f] if np.isfinite(guess[f]) else None)
                      for f in chosen]
            result.quality = vstack(tables, metadata_conflicts="silent")
            save_quality_table(result.quality, data_dir / "quality" / "quality.ecsv")
            for f in chosen:
                rows = {str(r["file"]): float(r["fwhm"]) for r in result.quality}
                result.fwhm[f] = [rows.get(p, float("nan")) for p in result.calibrated[f]]
        series = series_filter or max(chosen, key=lambda f: len(result.calibrated[f]))
        result.series_filter = series
        with clock("align+stack"):
            ref = _reference_frame(result.quality, result.calibrated[series])
            result.reference_frame = ref
            step = align([result.calibrated[f] for f in chosen], [dirs[f] for f in chosen],
                         ref, overwrite, methods=align_methods, **engine)
            aligned = step.run()
            result.aligned = dict(zip(chosen, aligned))
            result.align_failed = dict(step.failed)
            stacks = stack(aligned, chosen, data_dir / "stacks", combining_method="median",
                           quality=result.quality, overwrite=overwrite)
            result.stacks = {f: s for f, s in zip(chosen, stacks) if s is not None}
            fw = get_fwhm(list(result.stacks.values()), saturation=result.saturation)
            result.stack_fwhm = dict(zip(result.stacks, fw.estimate_fwhm()))
        if target_coord is not None:
            with clock("photometry"):
                _light_curve(result, target_coord, comparisons, transit_guess,
                             lightcurve_apertures, flux_apertures)
    finally:
        if executor is None:
            pool.shutdown()
    log.info("%s", result.summary())
    return result


def _solve_frames(data_dir: str, files: list, fwhm: float, overwrite: bool) -> Table:
    """Plate-solve frames with :class:`astrodart.second_stage.astrometry` (offline), in a
    worker; returns its table."""
    from astrodart.second_stage import astrometry

    step = astrometry(data_dir, files, None, fwhm, overwrite=overwrite)
    step.run()
    return step.to_table()


def _masters_from_calibration(calibration: dict) -> dict:
    """Masters of a finalized night found again in ``calibration/``."""
    from astrodart.frames.io import read_header
    from astrodart.frames.header import FrameHeader

    out = {"bias": None, "dark": {}, "flat": {}, "badpixel": None}
    for name, path in sorted(calibration.items()):
        if name.endswith("masterbias.fits"):
            out["bias"] = path
        elif "masterdark_" in name:
            out["dark"][FrameHeader(read_header(path), path).exptime] = path
        elif "masterflat_" in name:
            out["flat"][name.split("masterflat_", 1)[1].removesuffix(".fits")] = path
        elif "badpixel" in name:
            out["badpixel"] = path
    return out


def _reference_frame(quality: Table, files: list) -> str:
    """The good frame of the series with the sharpest stars."""
    from astrodart.sources.quality import good_files

    good = set(good_files(quality))
    rows = [r for r in quality if r["file"] in files and r["file"] in good
            and np.isfinite(r["fwhm"])]
    if not rows:
        return files[0]
    return str(min(rows, key=lambda r: r["fwhm"])["file"])


def _light_curve(result: NightResult, target_coord, comparisons, transit_guess,
                 lc_factors, flux_factors) -> None:
    """Comparison stars, the series light curve and its transit fit, field-star fluxes."""
    target = target_coord if isinstance(target_coord, SkyCoord) else SkyCoord(target_coord)
    result.target_coord = target
    if isinstance(comparisons, int):
        fwhm = np.nanmedian(result.fwhm[result.series_filter])
        # far enough from the edges for the largest annulus at the worst pointing drift
        margin = flux_factors[2] * 1.5 * fwhm + 30
        comparisons = _pick_comparisons(result.reference_frame, target, comparisons,
                                        result.saturation, margin)
    result.comparison_coords = list(comparisons)
    out = result.data_dir / "photometry"
    series = result.series_filter
    step, res = _photometry(result.calibrated, [series], target, result.comparison_coords,
                            result.saturation, lc_factors, out, "lightcurve", result.date,
                            result.target)
    result.lightcurve = res
    if transit_guess is not False:
        guess = transit_guess or {}
        result.transit = step.fit_transit(series, t0=guess.get("t0"),
                                          duration=guess.get("duration"))
        step.plot(series, fit=result.transit, path=out / f"lightcurve_{series}.png",
                  title=f"{result.target} {result.date}, filter {series} (astrodart)")
    _, result.field_photometry = _photometry(result.calibrated, result.filters, target,
                                             result.comparison_coords, result.saturation,
                                             flux_factors, out, "field_stars", result.date,
                                             result.target)


# ---------------------------------------------------------------------------------------
# the simulated night against its truth
# ---------------------------------------------------------------------------------------
def _truth_key(path, truth: dict) -> str:
    """The raw frame name (key of ``truth['frames']``) a product was made from."""
    from astrodart.frames.io import strip_fits_suffix

    stem = strip_fits_suffix(Path(str(path)).name)
    for key in truth["frames"]:
        raw = strip_fits_suffix(key)
        if stem == raw or stem.endswith("_" + raw):
            return key
    raise KeyError(f"{path}: made from no frame of this simulated night")


def _rows_masters(result: NightResult, truth: dict, maps) -> list[dict]:
    """Each master minus the truth in the reduction's units, against the noise expected
    of an average of N frames (read noise, quantisation, dark and photon noise)."""
    from astrodart.calibration.ccd import flat_normalisation
    from astrodart.first_stage import load_master

    cam = truth["camera"]
    gain, ron2 = cam["gain"], cam["read_noise"] ** 2 + cam["gain"] ** 2 / 12.0
    frames = truth["frames"]

    def offsets(kind, **match):
        return [e["bias_offset_adu"] for e in frames.values() if e["type"] == kind
                and all(e.get(k) == v for k, v in match.items())]

    rows = []

    def add(what, master, model, var, scale_free=False):
        master = np.asarray(master, float)
        if scale_free:
            # a flat's overall level is divided out: compare shapes, with the one scale
            # factor fitted (least squares), so the residual is master - c * truth
            model = model * float(np.sum(master * model) / np.sum(model * model))
        resid = master - model
        expected = math.sqrt(float(np.mean(var)))
        rms, mean = float(np.std(resid)), float(np.mean(resid))
        rows.append(_row(f"{what}: rms(master - truth)", "", expected, rms,
                         "within 10 % of the expected noise",
                         abs(rms / expected - 1) <= 0.10))
        if not scale_free:
            mean_tol = 5 * expected / math.sqrt(resid.size)
            rows.append(_row(f"{what}: mean(master - truth)", "", 0.0, mean,
                             f"|mean| <= 5 sigma/sqrt(N) = {mean_tol:.2g}",
                             abs(mean) <= mean_tol))
        # large-scale structure (column pattern, glow, vignetting, dust donuts): means of
        # b x b pixel blocks of the residual against the noise of such a mean
        ny, nx = resid.shape
        b = max(4, min(ny, nx) // 16)
        cut = resid[: ny // b * b, : nx // b * b].reshape(ny // b, b, nx // b, b)
        blocks = cut.mean(axis=(1, 3))
        vb = np.asarray(var, float) * np.ones(resid.shape)
        vb = vb[: ny // b * b, : nx // b * b].reshape(ny // b, b, nx // b, b).mean(axis=(1, 3))
        expected_b = math.sqrt(float(np.mean(vb))) / b
        rms_b = float(np.sqrt(np.mean((blocks - blocks.mean()) ** 2)))
        rows.append(_row(f"{what}: rms of {b}x{b} px block means of master - truth", "",
                         expected_b, rms_b, "within 25 % of the expected noise",
                         abs(rms_b / expected_b - 1) <= 0.25))

    bias_off = offsets("bias")
    nb = len(bias_off)
    bias_true = (maps["BIAS"] + np.mean(bias_off)) * gain
    var_b = np.full(bias_true.shape, ron2 / nb)
    add(f"master bias ({nb} frames, e-)", load_master(result.masters["bias"]).data, bias_true,
        var_b)
    for t, path in sorted(result.masters["dark"].items()):
        off = offsets("dark", exptime=t)
        nd = len(off)
        model = maps["DARK"] * t + (np.mean(off) - np.mean(bias_off)) * gain
        var = (ron2 + maps["DARK"] * t) / nd + var_b
        add(f"master dark {t:g} s ({nd} frames, e-)", load_master(path).data, model, var)
    for f, path in sorted(result.masters["flat"].items()):
        flats = [e for e in frames.values() if e["type"] == "flat" and e["filter"] == f]
        resp = maps[f"FLAT_{f}"]
        level = flat_normalisation(resp)
        dark_t = maps["DARK"] * flats[0]["exptime"]
        var = sum((e["illumination_e"] * resp + ron2 + dark_t)
                  / (e["illumination_e"] * level) ** 2 for e in flats) / len(flats) ** 2
        master = np.asarray(load_master(path).data, float)
        add(f"master flat {f} ({len(flats)} frames, relative)", master / flat_normalisation(master),
            resp / level, var, scale_free=True)
    return rows


def _rows_astrometry(result: NightResult, truth: dict) -> list[dict]:
    """Solved WCS against the true WCS over a 5 x 5 grid of pixels spanning each frame."""
    from astropy.wcs import WCS, FITSFixedWarning

    from astrodart.datasets.samples import truth_wcs
    from astrodart.frames.io import read_header

    ny, nx = truth["camera"]["shape"]
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 5), np.linspace(0, ny - 1, 5))
    worst, n_solved, n = [], 0, 0
    for f in result.filters:
        for p in result.calibrated[f]:
            n += 1
            h = read_header(p)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                w = WCS(h).celestial
            if not w.has_celestial:
                continue
            n_solved += 1
            true = truth_wcs(truth, _truth_key(p, truth))
            sep = w.pixel_to_world(gx, gy).separation(true.pixel_to_world(gx, gy)).arcsec
            worst.append(float(np.max(sep)))
    worst = np.asarray(worst)
    return [_row("frames plate-solved", "", n, n_solved, "all", n_solved == n),
            _row("plate solutions: median over frames of the worst grid offset", "arcsec", 0.0,
                 float(np.median(worst)) if worst.size else math.nan, "< 1",
                 bool(worst.size) and float(np.median(worst)) < 1.0),
            _row("plate solutions: worst offset, all frames, 5x5 grid", "arcsec", 0.0,
                 float(np.max(worst)) if worst.size else math.nan, "< 1",
                 bool(worst.size) and float(np.max(worst)) < 1.0)]


def _mean_profile_fwhm(fwhms, beta: float) -> float:
    """FWHM (px) of the average of unit-flux Moffat profiles of the given FWHMs."""
    from astrodart.datasets.simulate import moffat_alpha

    r = np.linspace(0.0, 4.0 * max(fwhms), 40001)
    prof = np.zeros_like(r)
    for fw in fwhms:
        a = float(moffat_alpha(fw, beta))
        prof += (beta - 1) / (math.pi * a * a) * (1 + (r / a) ** 2) ** -beta
    return float(2.0 * r[np.argmax(prof < prof[0] / 2)])


def _rows_stacks(result: NightResult, truth: dict) -> list[dict]:
    """Stack FWHM against the true image FWHM (seeing and optics) of the frames stacked."""
    from astrodart.frames.io import read_header

    rows = []
    beta = truth["camera"]["beta"]
    scale = truth["camera"]["pixel_scale_arcsec"]
    for f in result.filters:
        if f not in result.stacks:
            rows.append(_row(f"stack FWHM {f}", "px", math.nan, math.nan, "+-10 %", False))
            continue
        h = read_header(result.stacks[f])
        used = [str(h[k]) for k in h if k.startswith("IMCMB")]
        fw = [truth["frames"][_truth_key(p, truth)]["fwhm_px"] for p in used]
        want = _mean_profile_fwhm(fw, beta)
        got = result.stack_fwhm.get(f, math.nan)
        rows.append(_row(f"stack FWHM {f} ({len(used)} frames; true {want * scale:.1f}\")", "px",
                         want, got, "+-10 %", abs(got / want - 1) <= 0.10))
    return rows


def _moffat_in_circle(dx, dy, radius: float, alpha: float, beta: float,
                      n_r: int = 48, n_theta: int = 72) -> np.ndarray:
    """Fraction of the light of unit-flux Moffat stars centred at ``(dx, dy)`` (pixels from
    the circle's centre) that falls within ``radius`` (midpoint quadrature in polar
    coordinates)."""
    r = (np.arange(n_r) + 0.5) / n_r * radius
    th = (np.arange(n_theta) + 0.5) / n_theta * 2 * math.pi
    rr, tt = np.meshgrid(r, th)
    px, py = rr * np.cos(tt), rr * np.sin(tt)
    dx = np.asarray(dx, float)[:, None, None]
    dy = np.asarray(dy, float)[:, None, None]
    sb = (beta - 1) / (math.pi * alpha ** 2) * (1 + ((px - dx) ** 2 + (py - dy) ** 2)
                                                / alpha ** 2) ** -beta
    return np.sum(sb * rr, axis=(1, 2)) * (radius / n_r) * (2 * math.pi / n_theta)


def _annulus_sky_bias(x, y, r_in, r_out, sx, sy, sflux, alpha, beta, noise, rng) -> float:
    """How much the stars ``(sx, sy, sflux)`` raise the sky level measured in the annulus
    ``r_in .. r_out`` around ``(x, y)``: the annulus pixels (centres inside it, as
    :func:`astrodart.photometry.measure.aperture_photometry_ccd` takes them) are given the
    stars' Moffat light and Gaussian noise of the measured sky scatter, and the same
    3-sigma clipped median is taken with and without the stars."""
    from astropy.stats import sigma_clip

    x0, x1 = int(math.floor(x - r_out)), int(math.ceil(x + r_out))
    y0, y1 = int(math.floor(y - r_out)), int(math.ceil(y + r_out))
    gy, gx = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    d = np.hypot(gx - x, gy - y)
    sel = (d >= r_in) & (d <= r_out)
    px, py = gx[sel].astype(float), gy[sel].astype(float)
    light = np.zeros(px.size)
    for xs, ys, fs in zip(sx, sy, sflux):
        light += fs * (beta - 1) / (math.pi * alpha ** 2) * (
            1 + ((px - xs) ** 2 + (py - ys) ** 2) / alpha ** 2) ** -beta
    e = rng.standard_normal(px.size) * (noise if np.isfinite(noise) and noise > 0 else 1.0)

    def level(v):
        c = sigma_clip(v, sigma=3.0, maxiters=10, cenfunc="median", stdfunc="mad_std",
                       masked=True)
        return float(np.median(np.asarray(c.data[~c.mask])))

    return level(light + e) - level(e)


def _moffat_enclosed(radius: float, alpha: float, beta: float) -> float:
    """Fraction of a Moffat star's light within ``radius`` of its centre."""
    return 1.0 - (1.0 + (radius / alpha) ** 2) ** (1.0 - beta)


def star_flux_residuals(result: NightResult, truth: dict, maps) -> Table:
    """Measured field-star fluxes against the truth, one row per star and frame.

    The truth is what the measurement should give: the star's true flux
    (:func:`astrodart.datasets.samples.frame_truth_stars`: electrons at the detector before the
    flat-field response) x the flat's normalisation (calibrated = true flux x the central
    level of the true response, :func:`astrodart.calibration.ccd.flat_normalisation`) x the
    fraction of its true profile (Moffat, the frame's true FWHM) inside the aperture, plus
    the neighbours' light inside the aperture, less what the star's own wings and its
    neighbours add to the sky level of the annulus (the clipped median of the annulus
    emulated on the true light, :func:`_annulus_sky_bias`) times the aperture's area. Its
    uncertainty is the measured error, the scintillation the truth states
    (``scintillation_sigma`` x flux) and 10 % of each modelled neighbour term, in
    quadrature. Measurements are used when they carry no photometry flag, are centred
    within 1 px of the true position, and each modelled neighbour term is below 1 sigma.

    Parameters
    ----------
    result : NightResult
        With ``field_photometry``.
    truth : dict
        :func:`astrodart.datasets.samples.load_truth`.
    maps : mapping
        Truth maps (``FLAT_<filter>``).

    Returns
    -------
    astropy.table.Table
        ``filter``, ``frame``, ``star``, ``flux`` (measured), ``flux_err``, ``true_flux``
        (expected measurement), ``neighbours`` (their modelled share of it), ``sigma``
        (total), ``z`` = (flux - true_flux) / sigma, ``used``.
    """
    from astrodart.calibration.ccd import flat_normalisation
    from astrodart.datasets.simulate import moffat_alpha
    from astrodart.datasets.samples import frame_truth_stars

    res = result.field_photometry
    beta = truth["camera"]["beta"]
    stars = {"target": res["target"], **res["comparison_stars"]}
    rng = np.random.default_rng(0)
    rows = []
    for f in result.filters:
        level = flat_normalisation(maps[f"FLAT_{f}"])
        names = res["files"][f]
        for j, name in enumerate(names):
            key = _truth_key(name, truth)
            entry = truth["frames"][key]
            ts = frame_truth_stars(truth, key, margin=30)
            tx, ty = np.asarray(ts["x"], float), np.asarray(ts["y"], float)
            tflux = np.asarray(ts["flux"], float) * level
            a = float(moffat_alpha(entry["fwhm_px"], beta))
            for s, d in stars.items():
                m = d["filter"][f]
                x, y = m["x"][j], m["y"][j]
                r_ap, r_in, r_out = m["r_ap"][j], m["r_in"][j], m["r_out"][j]
                if not (np.isfinite(x) and np.isfinite(m["flux"][j])):
                    continue
                dist = np.hypot(tx - x, ty - y)
                i = int(np.argmin(dist))
                own = tflux[i] * _moffat_enclosed(r_ap, a, beta)
                near = np.flatnonzero((dist < r_out + 10 * entry["fwhm_px"])
                                      & (np.arange(len(ts)) != i))
                in_ap = float(np.sum(tflux[near] * _moffat_in_circle(
                    tx[near] - x, ty[near] - y, r_ap, a, beta)))
                sky_bias = _annulus_sky_bias(x, y, r_in, r_out, tx[[i, *near]],
                                             ty[[i, *near]], tflux[[i, *near]], a, beta,
                                             m["sky_std"][j], rng)
                sky_light = sky_bias * m["area"][j]
                neighbours = in_ap - sky_light
                true = own + neighbours
                sigma = math.sqrt(m["flux_err"][j] ** 2
                                  + (entry["scintillation_sigma"] * tflux[i]) ** 2
                                  + (0.1 * in_ap) ** 2 + (0.1 * sky_light) ** 2)
                used = bool(m["flags"][j] == 0 and dist[i] < 1.0 and in_ap < sigma
                            and abs(sky_light) < sigma)
                rows.append({"filter": f, "frame": key, "star": s, "flux": m["flux"][j],
                             "flux_err": m["flux_err"][j], "true_flux": true,
                             "neighbours": neighbours, "sigma": sigma,
                             "z": (m["flux"][j] - true) / sigma, "used": used})
    return Table(rows=rows)


def _rows_fluxes(t: Table) -> list[dict]:
    z = np.asarray(t["z"][t["used"]], float)
    n = f"{z.size} measurements of {len(set(t['star'][t['used']]))} stars"
    if not z.size:
        return [_row("star fluxes: mean |z|", "sigma", 0.8, math.nan, "<= 1", False)]
    return [_row(f"star fluxes: mean |flux - truth| / sigma ({n})", "sigma", 0.798,
                 float(np.mean(np.abs(z))), "<= 1 (within 1 sigma on average)",
                 float(np.mean(np.abs(z))) <= 1.0),
            _row("star fluxes: mean z (bias)", "sigma", 0.0, float(np.mean(z)), "|mean| <= 0.3",
                 abs(float(np.mean(z))) <= 0.3),
            _row("star fluxes: rms z (honest errors)", "sigma", 1.0,
                 float(np.sqrt(np.mean(z ** 2))), "0.8 .. 1.25",
                 0.8 <= float(np.sqrt(np.mean(z ** 2))) <= 1.25)]


def _rows_transit(result: NightResult, truth: dict) -> list[dict]:
    from astropy.coordinates import EarthLocation
    from astropy.time import Time

    from astrodart.photometry import timing

    tr = truth["transit"]
    if tr is None or result.transit is None:
        return [_row("transit depth", "%", math.nan, math.nan, "+-10 %", False)]
    site = truth["site"]
    loc = EarthLocation.from_geodetic(site["longitude"] * u.deg, site["latitude"] * u.deg,
                                      site["height"] * u.m)
    star = SkyCoord(tr["ra"], tr["dec"], unit="deg")
    t0 = float(timing.bjd_tdb(Time(tr["t0_jd"], format="jd", scale="utc"), star, loc).jd)
    fit = result.transit
    dt = (fit.t0 - t0) * 1440.0
    return [_row(f"transit depth (fit: +-{100 * fit.depth_err:.2f} %)", "%", 100 * tr["depth"],
                 100 * fit.depth, "+-10 %", abs(fit.depth / tr["depth"] - 1) <= 0.10),
            _row(f"transit mid-time - {t0:.5f} BJD_TDB (fit: +-{fit.t0_err * 1440:.1f} min)",
                 "min", 0.0, dt, "|dt| <= 2", abs(dt) <= 2.0)]


def _row(quantity, unit, truth, measured, tolerance, passed) -> dict:
    return {"quantity": quantity, "unit": unit, "truth": float(truth),
            "measured": float(measured), "tolerance": tolerance, "passed": bool(passed)}


def compare_with_truth(result: NightResult, truth=None) -> Table:
    """The reduction of a simulated night against its truth, row by row.

    Parameters
    ----------
    result : NightResult
        :func:`reduce_night` of a night written by :func:`astrodart.datasets.samples.simulate_night`
        (with ``target_coord`` the transit star).
    truth : dict or str or pathlib.Path, optional
        :func:`astrodart.datasets.samples.load_truth` or the folder / file; default
        ``result.root/truth.json``. The per-pixel maps are read from the file it names
        (``truth_maps.fits`` beside it).

    Returns
    -------
    astropy.table.Table
        Columns ``quantity``, ``unit``, ``truth``, ``measured``, ``tolerance``, ``passed``:
        masters (rms and mean of master - truth against the noise of an N-frame average),
        plate solutions (offset from the true WCS), stack FWHM (against the FWHM of the
        mean true profile of the frames stacked), star fluxes (see
        :func:`star_flux_residuals`), transit depth and mid-time (truth converted to
        BJD_TDB). ``meta['flux_residuals']`` holds the per-measurement flux table.
    """
    from astropy.io import fits

    from astrodart.datasets.samples import TRUTH_MAPS, load_truth

    where = Path(truth) if isinstance(truth, (str, os.PathLike)) else result.root
    if not isinstance(truth, dict):
        truth = load_truth(where)
    folder = where if where.is_dir() else where.parent
    maps_path = folder / truth.get("maps", {}).get("file", TRUTH_MAPS)
    with fits.open(maps_path) as hdul:
        maps = {h.name: np.asarray(h.data, float) for h in hdul[1:]}
    rows = _rows_masters(result, truth, maps) + _rows_astrometry(result, truth)
    rows += _rows_stacks(result, truth)
    fluxes = None
    if result.field_photometry is not None:
        fluxes = star_flux_residuals(result, truth, maps)
        rows += _rows_fluxes(fluxes)
    rows += _rows_transit(result, truth)
    table = Table(rows=rows, names=("quantity", "unit", "truth", "measured", "tolerance",
                                    "passed"))
    if fluxes is not None:
        table.meta["flux_residuals"] = fluxes
    table.meta["night"] = f"{truth['night']} {truth['target']} (simulated, seed {truth['seed']})"
    return table


def format_comparison(table: Table) -> str:
    """The comparison table as plain text, one line per row, with a pass/fail count.

    Parameters
    ----------
    table : astropy.table.Table
        As returned by :func:`compare_with_truth` (columns quantity, unit, truth,
        measured, tolerance, ok).

    Returns
    -------
    str
        Aligned text ending with the line ``"N of M checks passed"``.
    """
    w = max(len(q) for q in table["quantity"])
    lines = [f"{'quantity':<{w}}  {'unit':<6} {'truth':>12} {'measured':>12}  "
             f"{'tolerance':<34} ok"]
    lines.append("-" * len(lines[0]))
    for r in table:
        lines.append(f"{r['quantity']:<{w}}  {r['unit']:<6} {r['truth']:>12.5g} "
                     f"{r['measured']:>12.5g}  {r['tolerance']:<34} "
                     f"{'yes' if r['passed'] else 'NO'}")
    n_ok = int(np.sum(table["passed"]))
    lines.append(f"{n_ok} of {len(table)} checks passed")
    return "\n".join(lines)


def simulate_and_reduce(root, seed: int = 0, *, simulate_options=None,
                        **reduce_options) -> tuple[NightResult, Table]:
    """Simulate a night (unless ``root/truth.json`` exists), reduce it and compare it with
    its truth.

    Parameters
    ----------
    root : str or pathlib.Path
        Project folder: the night goes to ``root/uncal_data/<date>/``, its truth to
        ``root/truth.json`` and ``root/truth_maps.fits``, the reduction to
        ``root/reduced_data/``.
    seed : int
        Seed of the simulated night (ignored when ``root/truth.json`` already exists: that
        night is reduced again, resuming what was done).
    simulate_options : dict, optional
        Options of :func:`astrodart.datasets.samples.simulate_night` over :data:`SIMULATED_NIGHT`.
    **reduce_options
        Passed to :func:`reduce_night` (default ``saturation``: the camera's raw saturation
        level from the truth, as a user would take it from the camera's data sheet; the
        frames carry no ``SATURATE``).

    Returns
    -------
    result : NightResult
        What :func:`reduce_night` produced; ``result.timings['simulate']`` is the time
        spent simulating (0 when the night existed).
    table : astropy.table.Table
        :func:`compare_with_truth`; ``table.meta['made']`` is ``'simulated'`` or ``'found'``.
    """
    from astrodart.datasets.samples import load_truth, simulate_night

    root = Path(root)
    t0 = time.perf_counter()
    made = "found"
    if not (root / "truth.json").exists():
        simulate_night(root, seed, **{**SIMULATED_NIGHT, **(simulate_options or {})})
        made = "simulated"
    t_sim = time.perf_counter() - t0
    truth = load_truth(root)
    tr = truth["transit"]
    target = SkyCoord(tr["ra"], tr["dec"], unit="deg") if tr else None
    reduce_options.setdefault("saturation", truth["camera"]["saturation_adu"])
    result = reduce_night(root, truth["night"], truth["target"], target_coord=target,
                          **reduce_options)
    result.timings = {"simulate": t_sim, **result.timings}
    table = compare_with_truth(result, truth)
    table.meta["made"] = made
    return result, table


def simulated_night_report(root, seed: int = 0, *, simulate_options=None,
                           **reduce_options) -> str:
    """Simulate a night (unless ``root/truth.json`` exists), reduce it, compare with its truth.

    Parameters
    ----------
    root : str or pathlib.Path
        Project folder (see :func:`simulate_and_reduce`).
    seed : int
        Seed of the simulated night.
    simulate_options : dict, optional
        Options of :func:`astrodart.datasets.samples.simulate_night` over :data:`SIMULATED_NIGHT`.
    **reduce_options
        Passed to :func:`reduce_night`.

    Returns
    -------
    str
        Which night was reduced, the truth-vs-measured table (:func:`format_comparison`),
        the transit fit and the time per stage. The table is also written to
        ``<data_dir>/truth_comparison.txt`` and ``.ecsv``.
    """
    from astrodart.datasets.samples import load_truth

    root = Path(root)
    t_start = time.perf_counter()
    result, table = simulate_and_reduce(root, seed, simulate_options=simulate_options,
                                        **reduce_options)
    seconds = time.perf_counter() - t_start
    truth = load_truth(root)
    text = format_comparison(table)
    save_comparison(table, result.data_dir / "truth_comparison")
    head = (f"SIMULATED night ({table.meta['made']}: seed {truth['seed']}, {truth['target']} "
            f"on {truth['date']}, {sum(truth['counts'].values())} raw frames in "
            f"{root / 'uncal_data' / truth['night']}; truth in {root / 'truth.json'})\n"
            f"{'simulated and ' if table.meta['made'] == 'simulated' else ''}reduced with "
            f"astrodart.pipeline.night.reduce_night in {seconds:.0f} s; "
            f"products in {result.data_dir}\n")
    return (head + "\n" + text + f"\n(table saved in {result.data_dir / 'truth_comparison'}"
            ".txt and .ecsv)\n\n" + result.summary())


def save_comparison(table: Table, stem) -> tuple[Path, Path]:
    """Write :func:`compare_with_truth`'s table as text (:func:`format_comparison`) and ECSV.

    Parameters
    ----------
    table : astropy.table.Table
        The comparison.
    stem : str or pathlib.Path
        Path without suffix; ``.txt`` and ``.ecsv`` are written (atomically, replacing).

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The text and ECSV files.
    """
    from astrodart.frames.io import atomic_output

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    txt, ecsv = stem.with_suffix(".txt"), stem.with_suffix(".ecsv")
    with atomic_output(txt) as tmp:
        Path(tmp).write_text(f"{table.meta.get('night', '')}\n{format_comparison(table)}\n")
    plain = Table(table, copy=True)
    plain.meta = {k: v for k, v in table.meta.items() if isinstance(v, (str, int, float))}
    with atomic_output(ecsv) as tmp:
        plain.write(tmp, format="ascii.ecsv", overwrite=True)
    return txt, ecsv
