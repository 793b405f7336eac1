"""The simulated night: a raw night of M67 with known truth, written as a camera would.

:func:`simulate_night` writes a raw night of the open cluster M67 as a small CCD
camera would have taken it — bias frames, darks at two exposure times, dome flats and
dithered science frames in B, V and R — to ``dest/uncal_data/YYMMDD/``, and everything
that went into it to ``dest/uncal_data/truth.json``: the true WCS of every frame (which
is *not* in the frame headers), seeing, sky, transparency, the bias, dark and flat-field models, the
stars with their fluxes, and a transit injected into one star's light curve; the camera's
per-pixel bias, dark current and flat responses go to ``dest/uncal_data/truth_maps.fits``
(:mod:`astrodart.datasets.truth`). The stars are real: Tycho-2 positions and VT
magnitudes shipped in ``astrodart/data/`` (:mod:`astrodart.datasets.catalogue`). The
model of the night is :mod:`astrodart.datasets.night_model`, the pixel-level physics
:mod:`astrodart.datasets.simulate`.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time, TimeDelta
from astropy.wcs import WCS

from astrodart.datasets import simulate as sim
from astrodart.frames.io import atomic_output, find_fits

from astrodart.datasets.catalogue import M67_CENTRE, load_catalogue
from astrodart.datasets.night_model import Camera, ObservingConditions, _Night, _Spec
from astrodart.datasets.truth import TRUTH_MAPS, _truth, _truth_maps_bytes, truth_file

__all__ = [
    "SimulatedNight",
    "simulate_night",
]

log = logging.getLogger("astrodart")


@dataclass
class SimulatedNight:
    """What :func:`simulate_night` wrote.

    Parameters
    ----------
    root : pathlib.Path
        The ``dest`` folder.
    night_dir : pathlib.Path
        ``dest/uncal_data/YYMMDD/``.
    date : str
        ``YYMMDD``.
    target : str
        ``OBJECT`` of the science frames.
    truth_path : pathlib.Path
        ``dest/uncal_data/truth.json``.
    files : dict
        ``{'bias': [...], 'dark': [...], 'flat': [...], 'object': [...]}`` paths written.
    seconds : float
        Wall-clock time of the generation.
    """

    root: Path
    night_dir: Path
    date: str
    target: str
    truth_path: Path
    files: dict
    seconds: float = 0.0


def _meridian_time(date: str, ra: float, lon: float) -> Time:
    """UTC time of the target's upper culmination in the night starting on local ``date``."""
    noon = Time(f"{date}T12:00:00", scale="utc") - TimeDelta(lon / 15.0 * 3600.0, format="sec")
    gmst = 280.46061837 + 360.98564736629 * (noon.jd - 2451545.0)
    ha = (gmst + lon - ra) % 360.0                   # hour angle at local noon, degrees
    days = ((360.0 - ha) % 360.0) / 360.98564736629
    return noon + TimeDelta(days * 86400.0, format="sec")


def _plan(start_cal: Time, sci_start: Time, n_bias: int, n_dark: int, dark_exptimes, n_flat: int,
          flat_exptimes: Mapping[str, float], n_science: Mapping[str, int],
          exptimes: Mapping[str, float], series_filter: str, target: str, readout: float,
          suffix: str) -> tuple[list[_Spec], Time, Time]:
    """The frames of the night in time order; also the start and end of the time series."""
    specs: list[_Spec] = []
    t = start_cal

    def add(kind, name, exptime, filt=None, gap=readout):
        nonlocal t
        specs.append(_Spec(len(specs), kind, name + suffix, t, float(exptime), filt))
        t = t + TimeDelta(exptime + gap, format="sec")

    for i in range(n_bias):
        add("bias", f"bias-{i + 1:04d}", 0.0)
    for e in dark_exptimes:
        for i in range(n_dark):
            add("dark", f"dark-{e:g}s-{i + 1:04d}", e)
    t = max(t, sci_start - TimeDelta(1.25 * 3600, format="sec"))
    for f, e in flat_exptimes.items():
        for i in range(n_flat):
            add("flat", f"flat-{f}-{i + 1:04d}", e, f)
    t = sci_start
    others = [f for f in n_science if f != series_filter]
    counter = {f: 0 for f in n_science}

    def block(f, n):
        for _ in range(n):
            counter[f] += 1
            add("object", f"{target}-{f}-{counter[f]:04d}", exptimes[f], f)

    for f in others:
        block(f, n_science[f] // 2)
    series_start = t
    block(series_filter, n_science.get(series_filter, 0))
    series_end = t
    for f in others:
        block(f, n_science[f] - n_science[f] // 2)
    return specs, series_start, series_end


def _fits_bytes(data: np.ndarray, header: fits.Header, compress: bool) -> bytes:
    """The file's bytes: uint16 stored as int16 with BZERO=32768; gzip without a time stamp
    or file name in its header, so the same frame gives the same bytes."""
    buf = io.BytesIO()
    fits.PrimaryHDU(data=data, header=header).writeto(buf, output_verify="exception")
    raw = buf.getvalue()
    if not compress:
        return raw
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=1) as gz:
        gz.write(raw)
    return out.getvalue()


def _write_atomic(path: Path, payload: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(payload)


def _field_stars(catalogue: Table, centre, radius: float, n_faint: int, rng: np.random.Generator,
                 zero_points: Mapping[str, float]) -> dict:
    """Real catalogue stars within ``radius`` (deg) plus ``n_faint`` synthetic faint stars."""
    ra0, dec0 = centre
    c0 = math.cos(math.radians(dec0))
    d = np.hypot((np.asarray(catalogue["ra"]) - ra0) * c0, np.asarray(catalogue["dec"]) - dec0)
    cat = catalogue[d < radius]
    # fainter than Tycho-2's limit: dN/dm ~ 10^(0.3 m) between V 11.5 and 15.5
    lo, hi = 10 ** (0.3 * 11.5), 10 ** (0.3 * 15.5)
    v = np.log10(lo + rng.uniform(0, 1, n_faint) * (hi - lo)) / 0.3
    r = radius * np.sqrt(rng.uniform(0, 1, n_faint))
    th = rng.uniform(0, 2 * np.pi, n_faint)
    bv = np.clip(rng.normal(0.8, 0.3, n_faint), -0.1, 1.8)
    stars = {
        "id": list(cat["id"]) + [f"SYN-{i + 1:04d}" for i in range(n_faint)],
        "real": [True] * len(cat) + [False] * n_faint,
        "ra": np.r_[np.asarray(cat["ra"], float), ra0 + r * np.sin(th) / c0],
        "dec": np.r_[np.asarray(cat["dec"], float), dec0 + r * np.cos(th)],
        "mag": {"V": np.r_[np.asarray(cat["V"], float), v],
                "B": np.r_[np.asarray(cat["B"], float), v + bv],
                "R": np.r_[np.asarray(cat["R"], float), v - 0.56 * bv]},
    }
    stars["mag"] = {f: np.round(m, 3) for f, m in stars["mag"].items() if f in zero_points}
    stars["rate"] = {f: sim.magnitude_to_rate(m, zero_points[f]) for f, m in stars["mag"].items()}
    return stars


def _pick_transit_star(stars: dict, wcs: WCS, shape, fwhm_px: float, filt: str) -> int:
    """Index of the real star nearest the centre with V (or the series filter) 9.4-10.4 and
    no star brighter than 4 mag fainter within 8 FWHM (relaxed once if none qualifies)."""
    x, y = wcs.all_world2pix(stars["ra"], stars["dec"], 0)
    ny, nx = shape
    mag = stars["mag"][filt]
    real = np.asarray(stars["real"])
    for (m_lo, m_hi), iso in (((9.4, 10.4), 8.0), ((9.0, 11.8), 4.0)):
        best, best_d = -1, np.inf
        for i in np.flatnonzero(real & (mag >= m_lo) & (mag <= m_hi)):
            if not (0.2 * nx < x[i] < 0.8 * nx and 0.2 * ny < y[i] < 0.8 * ny):
                continue
            sep = np.hypot(x - x[i], y - y[i])
            crowd = (sep < iso * fwhm_px) & (mag < mag[i] + 4.0)
            crowd[i] = False
            dist = math.hypot(x[i] - nx / 2, y[i] - ny / 2)
            if not crowd.any() and dist < best_d:
                best, best_d = int(i), dist
        if best >= 0:
            return best
    raise ValueError("no isolated real star of magnitude 9-11.8 in the central part of the field "
                     "to carry the transit; use a larger field or transit_depth=0")


def simulate_night(dest, seed: int = 0, *, shape: tuple[int, int] = (512, 512),
                   pixel_scale: float = 6.0, n_bias: int = 10, n_dark: int = 5,
                   dark_exptimes: Sequence[float] = (60.0, 120.0), n_flat: int = 5,
                   n_science: Mapping[str, int] | None = None,
                   exptimes: Mapping[str, float] | None = None,
                   flat_exptimes: Mapping[str, float] | None = None,
                   date: str = "2024-02-09", target: str = "M67",
                   transit_depth: float = 0.012, transit_duration: float = 1.8,
                   transit_offset: float = 0.1, transit_impact: float = 0.3,
                   faint_stars: int = 300, dither: float = 20.0,
                   drift: tuple[float, float] = (30.0, -15.0),
                   rotation: tuple[float, float] = (0.5, 0.15),
                   camera: Camera | None = None,
                   conditions: ObservingConditions | None = None,
                   compress: bool = True, overwrite: bool = False,
                   workers: int | None = None) -> SimulatedNight:
    """Write a realistic raw night of M67 with known truth.

    Frames go to ``dest/uncal_data/YYMMDD/`` (``YYMMDD`` from ``date``, the local date at
    dusk), the truth to ``dest/uncal_data/truth.json`` and the camera's per-pixel bias,
    dark current and flat responses to ``dest/uncal_data/truth_maps.fits``
    (:data:`TRUTH_MAPS`). The night:
    ``n_bias`` bias frames; ``n_dark``
    darks at each of ``dark_exptimes``; ``n_flat`` dome flats per filter; science frames of
    the real star field around M67 (:func:`load_catalogue`, plus ``faint_stars`` synthetic
    stars fainter than V = 11.5 flagged ``real: false`` in the truth), half of each other
    filter's frames before and half after a time series in the filter with the most frames,
    centred on the field's meridian passage. One isolated star of V ~ 10 carries a transit.

    The frames carry what a camera writes (``IMAGETYP``, ``FILTER``, ``EXPTIME``,
    ``DATE-OBS`` in UTC, ``OBJECT``, ``GAIN``, ``RON``, ``RA``/``DEC`` of the mount,
    ``SITELAT``/``SITELONG``, ``XPIXSZ``/``FOCALLEN``), uint16 pixels stored with
    ``BZERO=32768``, and no WCS. Each science frame has its own pointing error, dither,
    tracking drift, field rotation, seeing (Moffat PSF), sky level and gradient,
    transparency, extinction, scintillation, cosmic rays, saturation with column bleeding,
    bias drift, dark current with hot pixels and amplifier glow, and flat-field response
    (vignetting, dust donuts, PRNU); all of it is recorded in ``truth.json`` (see
    :func:`load_truth`, :func:`truth_wcs`, :func:`frame_truth_stars`).

    Parameters
    ----------
    dest : str or pathlib.Path
        Project folder (created).
    seed : int
        Seed of every random choice: the same seed gives byte-identical files.
    shape : tuple of int
        ``(ny, nx)`` of the frames.
    pixel_scale : float
        arcsec/px. The default field (512 x 6" = 51') plate-solves with the Debian
        Tycho-2 index files in about a second; fields narrower than about 45' do not
        (the finest of those files, 4108, holds quads of 30' to 42').
    n_bias, n_dark, n_flat : int
        Bias frames; darks per exposure time; flats per filter.
    dark_exptimes : sequence of float
        Dark exposure times (s).
    n_science : dict, optional
        Science frames per filter, default ``{'B': 10, 'V': 70, 'R': 10}`` (filters among
        the camera's zero points: B, V, R).
    exptimes : dict, optional
        Science exposure times (s) per filter, default ``{'B': 120, 'V': 120, 'R': 60}``.
    flat_exptimes : dict, optional
        Flat exposure times (s), default ``{'B': 10, 'V': 4, 'R': 3}``; flats are taken in
        every filter of ``n_science``.
    date : str
        Local date at dusk, ``YYYY-MM-DD``.
    target : str
        ``OBJECT`` of the science frames.
    transit_depth : float
        Fractional depth of the injected transit (0 for none).
    transit_duration : float
        First-to-fourth-contact duration (hours).
    transit_offset : float
        Mid-transit minus the middle of the time series (hours).
    transit_impact : float
        Impact parameter (stellar radii).
    faint_stars : int
        Synthetic stars (V 11.5-15.5) added below the Tycho-2 limit.
    dither : float
        Half-width (arcsec) of the uniform random dither of each science frame.
    drift : tuple of float
        Tracking drift (arcsec per hour, east and north).
    rotation : tuple of float
        Field rotation of the first science frame (deg) and its rate (deg per hour).
    camera : Camera, optional
        Telescope and detector (default :class:`Camera`).
    conditions : astrodart.datasets.night_model.ObservingConditions, optional
        Observatory and sky (default :class:`~astrodart.datasets.night_model.ObservingConditions`:
        Mt. Stony Brook Observatory under suburban skies).
    compress : bool
        Write ``.fit.gz`` (gzip) instead of ``.fit``.
    overwrite : bool
        Replace a night this function wrote before in the same place.
    workers : int, optional
        Threads writing frames (default: the number of cores, at most 4).

    Returns
    -------
    SimulatedNight

    Raises
    ------
    ValueError
        Bad counts, shapes, filters or transit parameters.
    FileExistsError
        The night folder holds FITS files and ``overwrite`` is False, or files this
        function did not write.
    """
    t_begin = time.perf_counter()
    camera, conditions = camera or Camera(), conditions or ObservingConditions()
    n_science = dict(n_science if n_science is not None else {"B": 10, "V": 70, "R": 10})
    exptimes = {"B": 120.0, "V": 120.0, "R": 60.0, **(exptimes or {})}
    flat_exptimes = {"B": 10.0, "V": 4.0, "R": 3.0, **(flat_exptimes or {})}
    shape = (int(shape[0]), int(shape[1]))
    params = {"shape": list(shape), "pixel_scale": pixel_scale, "n_bias": n_bias,
              "n_dark": n_dark, "dark_exptimes": list(dark_exptimes), "n_flat": n_flat,
              "n_science": n_science, "exptimes": exptimes, "flat_exptimes": flat_exptimes,
              "date": date, "target": target, "faint_stars": faint_stars, "dither": dither,
              "drift": list(drift), "rotation": list(rotation), "compress": compress,
              "transit": {"depth": transit_depth, "duration_h": transit_duration,
                          "offset_h": transit_offset, "impact": transit_impact}}
    _check_night_args(params, camera, conditions, transit_depth, transit_impact)
    root = Path(dest)
    night_dir = root / "uncal_data" / Time(f"{date}T12:00:00").strftime("%y%m%d")
    truth_path = truth_file(root)
    _clear_previous(night_dir, truth_path, overwrite)
    night_dir.mkdir(parents=True, exist_ok=True)

    # stars out to the frame corners plus the drift of the night
    radius = (math.hypot(*shape) / 2 * pixel_scale + (abs(drift[0]) + abs(drift[1])) * 4) / 3600.0
    stars = _field_stars(load_catalogue(), M67_CENTRE, radius + 0.08, faint_stars,
                         np.random.default_rng([seed, 3]), camera.zero_points)
    specs, s_start, s_end, series_filter = _schedule(params, camera, conditions,
                                                     ".fit.gz" if compress else ".fit")
    transit = None
    if transit_depth > 0 and s_end > s_start:
        transit = _transit(params, stars, camera, conditions, s_start, s_end, series_filter)
    night = _Night(seed=seed, shape=shape, pixel_scale=pixel_scale, camera=camera,
                   conditions=conditions, target=target, centre=M67_CENTRE, stars=stars,
                   dither=dither, drift=drift, rotation=rotation, series_start=s_start,
                   series_end=s_end, transit=transit, flat_level=25000.0 * camera.gain)
    night.plan_airmass(specs)
    done = _write_frames(night, specs, night_dir, compress, workers)
    truth = _truth(night, done, seed, date, night_dir, series_filter, params)
    _write_atomic(truth_path.parent / TRUTH_MAPS, _truth_maps_bytes(night, sorted(n for n, k in
                                                                     n_science.items() if k)))
    _write_atomic(truth_path, (json.dumps(truth, indent=1, sort_keys=True) + "\n").encode())
    files: dict[str, list[Path]] = {"bias": [], "dark": [], "flat": [], "object": []}
    for spec, _ in done:
        files[spec.kind].append(night_dir / spec.name)
    seconds = time.perf_counter() - t_begin
    log.info("simulate_night: %d frames written to %s in %.1f s (seed %d)", len(specs),
             night_dir, seconds, seed)
    return SimulatedNight(root, night_dir, night_dir.name, target, truth_path, files, seconds)


def _transit(params: dict, stars: dict, camera: Camera, conditions: ObservingConditions,
             s_start: Time, s_end: Time, series_filter: str) -> dict:
    """The injected transit: its star (isolated, V ~ 10, near the centre) and its timing."""
    shape, scale = tuple(params["shape"]), params["pixel_scale"]
    tr = params["transit"]
    fwhm0 = math.hypot(camera.optics_fwhm, conditions.seeing) / scale
    idx = _pick_transit_star(stars, sim.tan_wcs(shape, *M67_CENTRE, scale, params["rotation"][0]),
                             shape, fwhm0, series_filter)
    t0 = s_start + (s_end - s_start) / 2 + TimeDelta(tr["offset_h"] * 3600, format="sec")
    return {"index": idx, "star_id": stars["id"][idx], "ra": float(stars["ra"][idx]),
            "dec": float(stars["dec"][idx]), "depth": tr["depth"], "t0_jd": t0.jd,
            "t0_utc": t0.isot, "duration_h": tr["duration_h"],
            "impact_parameter": tr["impact"], "radius_ratio": math.sqrt(tr["depth"]),
            "filter": series_filter,
            "model": "uniform disc (Mandel & Agol 2002 eq. 1), at mid-exposure"}


def _write_frames(night: _Night, specs: list, night_dir: Path, compress: bool,
                  workers: int | None) -> list:
    """Make and write every frame (threads); ``(spec, truth info)`` per frame, in order."""
    def make(spec: _Spec):
        data, header, info = night.frame(spec)
        _write_atomic(night_dir / spec.name, _fits_bytes(data, header, compress))
        return spec, info

    with ThreadPoolExecutor(max_workers=workers or min(os.cpu_count() or 1, 4)) as pool:
        return list(pool.map(make, specs))


def _schedule(params: dict, camera: Camera, conditions: ObservingConditions,
              suffix: str) -> tuple[list[_Spec], Time, Time, str]:
    """Frames in time order, the start and end of the time series and its filter. The
    series is centred on the field's meridian passage; calibrations come before."""
    n_science = {f: n for f, n in params["n_science"].items() if n > 0}
    exptimes, readout = params["exptimes"], camera.readout_time
    series = max(n_science, key=lambda f: n_science[f]) if n_science else "V"
    t_mid = _meridian_time(params["date"], M67_CENTRE[0], conditions.site.lon)
    length = n_science.get(series, 0) * (exptimes[series] + readout)
    before = sum((n // 2) * (exptimes[f] + readout) for f, n in n_science.items() if f != series)
    sci_start = t_mid - TimeDelta(length / 2 + before, format="sec")
    sci_start = Time(round(sci_start.jd * 86400) / 86400, format="jd", scale="utc")  # whole s
    specs, s_start, s_end = _plan(
        sci_start - TimeDelta(3 * 3600, format="sec"), sci_start, params["n_bias"],
        params["n_dark"], params["dark_exptimes"], params["n_flat"],
        {f: params["flat_exptimes"][f] for f in n_science}, n_science, exptimes, series,
        params["target"], readout, suffix)
    return specs, s_start, s_end, series


def _check_night_args(params: dict, camera: Camera, conditions: ObservingConditions, depth: float,
                      impact: float) -> None:
    shape, n_science = params["shape"], params["n_science"]
    if min(shape) < 64:
        raise ValueError(f"shape {tuple(shape)}: frames must be at least 64 x 64 pixels")
    if params["pixel_scale"] <= 0:
        raise ValueError(f"pixel_scale must be > 0 arcsec/px, got {params['pixel_scale']}")
    counts = [(k, params[k]) for k in ("n_bias", "n_dark", "n_flat")] + list(n_science.items())
    for name, n in counts:
        if int(n) != n or n < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {n!r}")
    unknown = [f for f in n_science if f not in camera.zero_points
               or f not in conditions.extinction or f not in conditions.sky_brightness]
    if unknown:
        raise ValueError(f"filters {unknown} unknown; the catalogue and camera model know "
                         f"{sorted(camera.zero_points)}")
    if any(e <= 0 for e in params["dark_exptimes"]):
        raise ValueError(f"dark_exptimes must be > 0 s, got {params['dark_exptimes']}")
    missing = [f for f in n_science
               if f not in params["exptimes"] or f not in params["flat_exptimes"]]
    if missing:
        raise ValueError(f"no exposure time for filters {missing}")
    if not 0 <= depth < 0.25:
        raise ValueError(f"transit_depth must be in [0, 0.25), got {depth}")
    if depth and not 0 <= impact < 1 - math.sqrt(depth):
        raise ValueError(f"transit_impact must be in [0, 1 - sqrt(depth)), got {impact}")
    if camera.psf not in sim.PSF_MODELS:
        raise ValueError(f"camera psf {camera.psf!r} unknown; use one of {sim.PSF_MODELS}")
    fov = min(shape) * params["pixel_scale"] / 60.0
    if fov < 45.0:
        log.warning("simulated field is %.0f' wide: the Tycho-2 index files (quads of 30' and "
                    "more) may not plate-solve it; 45' or more solves", fov)
    reach = math.hypot(*shape) / 2 * params["pixel_scale"] / 3600.0
    if reach > load_catalogue().meta.get("radius_deg", 1.0):
        log.warning("simulated frames reach %.2f deg from M67, beyond the shipped catalogue: "
                    "their corners have no real stars", reach)


def _clear_previous(night_dir: Path, truth_path: Path, overwrite: bool) -> None:
    """Refuse to mix nights; with ``overwrite``, remove the frames a previous simulation
    listed in its truth.json, and nothing else."""
    existing = find_fits(night_dir)
    if not existing:
        return
    if not overwrite:
        raise FileExistsError(f"{night_dir}: already holds {len(existing)} FITS files; pass "
                              "overwrite=True to replace a simulated night, or choose another dest")
    ours = set()
    if truth_path.exists():
        ours = {night_dir / n for n in json.loads(truth_path.read_text()).get("frames", {})}
    foreign = [p for p in existing if Path(p) not in ours]
    if foreign:
        raise FileExistsError(f"{night_dir}: holds {len(foreign)} FITS files that simulate_night "
                              f"did not write (e.g. {Path(foreign[0]).name}); choose another dest")
    for p in ours:
        p.unlink(missing_ok=True)
