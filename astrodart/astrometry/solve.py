"""Layer 2: plate solving from star lists, offline first.

Every backend takes the same input, a star list and an image shape, and returns a
:class:`SolveResult`; none of them reads or writes the user's FITS files (that is
``astrodart.second_stage``'s job).

Backends
--------
``'inprocess'``
    The astrometry.net engine compiled into the ``astrometry`` Python package
    (neuromorphicsystems/astrometry), with local index files found by
    :func:`discover_index_files`. The engine only stops by itself after trying every
    index, which takes minutes, so the search is stopped at the first match whose
    log-odds reach ``stop_logodds`` (a callback), and bounded by a wall-clock
    ``time_limit`` (a timer signal in the main thread, a killable child process
    otherwise). The engine wants 1-based FITS pixel positions; 0-based input shifts
    the solution by one pixel.
``'solve-field'``
    The ``solve-field`` program of a local astrometry.net installation, given an
    xylist (``--width``/``--height`` are the image's x and y sizes: NAXIS1, NAXIS2).
``'online'``
    nova.astrometry.net through ``astroquery.astrometry_net``, with an API key, a
    solve timeout, an HTTP timeout and retries on network errors.

Coordinates: star positions are 0-based ``(x, y)`` pixel positions (numpy/photutils
convention, ``x`` along NAXIS1), brightest first; shapes are numpy ``(ny, nx)``.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from numpy.typing import ArrayLike

__all__ = [
    "BACKENDS",
    "INDEX_ENV",
    "SYSTEM_INDEX_DIRS",
    "IndexFile",
    "SolveResult",
    "available_backends",
    "discover_index_files",
    "field_size_arcmin",
    "index_coverage",
    "solve_in_process",
    "solve_online",
    "solve_with_solve_field",
    "usable_index_files",
    "verify_wcs",
]

log = logging.getLogger("astrodart.astrometry")

#: Environment variable naming extra index directories (``os.pathsep``-separated).
INDEX_ENV = "ASTRODART_INDEX_DIR"
#: Where astrometry.net installations put index files.
SYSTEM_INDEX_DIRS = ("/usr/share/astrometry", "/usr/local/share/astrometry",
                     "/usr/local/astrometry/data", "/opt/homebrew/share/astrometry",
                     "/opt/local/share/astrometry")
#: Backend names accepted by ``backend=``.
BACKENDS = ("inprocess", "solve-field", "online")

_RAD_TO_ARCMIN = 180.0 / math.pi * 60.0


@dataclass(frozen=True)
class IndexFile:
    """One astrometry.net index file.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    index_id : int
        ``INDEXID`` (e.g. 4108).
    quad_min_arcmin, quad_max_arcmin : float
        Range of quad diameters it holds (``SCALE_L``, ``SCALE_U``), arcminutes.
    """

    path: Path
    index_id: int
    quad_min_arcmin: float
    quad_max_arcmin: float

    @property
    def name(self) -> str:
        """File name, e.g. ``'index-tycho2-08.littleendian.fits'``."""
        return self.path.name


_INDEX_CACHE: dict[tuple[str, float], IndexFile | None] = {}


def _read_index(path: Path) -> IndexFile | None:
    key = (str(path), path.stat().st_mtime)
    if key not in _INDEX_CACHE:
        try:
            h = fits.getheader(path, 0)
            lo, hi = float(h["SCALE_L"]), float(h["SCALE_U"])
            _INDEX_CACHE[key] = IndexFile(path, int(h.get("INDEXID", -1)),
                                          lo * _RAD_TO_ARCMIN, hi * _RAD_TO_ARCMIN)
        except (OSError, KeyError, ValueError, TypeError):
            _INDEX_CACHE[key] = None  # not an index file (no quad scale range)
    return _INDEX_CACHE[key]


def discover_index_files(paths: str | os.PathLike | Iterable | None = None, *,
                         use_env: bool = True, use_system: bool = True) -> list[IndexFile]:
    """Find astrometry.net index files.

    Parameters
    ----------
    paths : str, path or iterable of them, optional
        Index files or directories holding them, searched first.
    use_env : bool
        Also search the directories in the ``ASTRODART_INDEX_DIR`` environment variable.
    use_system : bool
        Also search :data:`SYSTEM_INDEX_DIRS` (Debian/Ubuntu ``astrometry-data-*``
        packages install to ``/usr/share/astrometry``).

    Returns
    -------
    list of IndexFile
        Unique files (by resolved path), smallest quads first. FITS files without a
        quad scale range (``SCALE_L``/``SCALE_U``) are ignored.
    """
    roots: list[Path] = []
    if paths is not None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        roots += [Path(p) for p in paths]
    if use_env and os.environ.get(INDEX_ENV):
        roots += [Path(p) for p in os.environ[INDEX_ENV].split(os.pathsep) if p]
    if use_system:
        roots += [Path(p) for p in SYSTEM_INDEX_DIRS]
    found: dict[Path, IndexFile] = {}
    for root in roots:
        if root.is_file():
            candidates = [root]
        elif root.is_dir():
            candidates = sorted(p for p in root.iterdir()
                                if p.is_file() and re.search(r"\.fits?$", p.name, re.IGNORECASE))
        else:
            continue
        for p in candidates:
            rp = p.resolve()
            if rp not in found:
                idx = _read_index(rp)
                if idx is not None:
                    found[rp] = idx
    return sorted(found.values(), key=lambda i: (i.quad_min_arcmin, i.name))


def index_coverage(index_files: Sequence[IndexFile]) -> str:
    """Range of quad sizes covered by index files, for messages.

    Parameters
    ----------
    index_files : sequence of IndexFile

    Returns
    -------
    str
        e.g. ``"30'–2000'"`` for the Debian Tycho-2 files, ``"no index files"`` if empty.
    """
    if not index_files:
        return "no index files"
    lo = min(i.quad_min_arcmin for i in index_files)
    hi = max(i.quad_max_arcmin for i in index_files)
    return f"{_fmt_arcmin(lo)}–{_fmt_arcmin(hi)}"


def _fmt_arcmin(v: float) -> str:
    return f"{v:.0f}'" if v >= 10 else f"{v:.1f}'"


def field_size_arcmin(shape: tuple[int, int], pixel_scale: float) -> tuple[float, float]:
    """``(width, height)`` of a field in arcminutes.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)`` (numpy order).
    pixel_scale : float
        Arcseconds per pixel.
    """
    ny, nx = shape
    return nx * pixel_scale / 60.0, ny * pixel_scale / 60.0


def usable_index_files(index_files: Sequence[IndexFile], width_arcmin: float,
                       height_arcmin: float, min_quad_fraction: float = 0.1) -> list[IndexFile]:
    """Index files whose quads can be seen in a field of the given size.

    An index is usable when its smallest quads fit within the field's longer side and
    its largest quads are at least ``min_quad_fraction`` of the shorter side (the
    astrometry.net default lower limit for quad sizes).

    Parameters
    ----------
    index_files : sequence of IndexFile
    width_arcmin, height_arcmin : float
        Field size in arcminutes.
    min_quad_fraction : float
        Smallest quad tried, as a fraction of the shorter side.

    Returns
    -------
    list of IndexFile
    """
    big, small = max(width_arcmin, height_arcmin), min(width_arcmin, height_arcmin)
    return [i for i in index_files
            if i.quad_min_arcmin <= big and i.quad_max_arcmin >= min_quad_fraction * small]


@dataclass
class SolveResult:
    """Outcome of one plate solve.

    Attributes
    ----------
    solved : bool
        True when a WCS was found and passed verification.
    backend : str
        One of :data:`BACKENDS` (or ``'none'`` when no backend could run).
    reason : str
        Why the frame was not solved (empty when solved); notes when solved.
    wcs : astropy.wcs.WCS or None
        The solution (TAN, with SIP distortion when fitted), FITS 1-based ``CRPIX``.
    solver : str
        Software and version, e.g. ``'astrometry.net engine (astrometry 4.3.0)'``.
    index : str or None
        Index file (or service) that gave the match.
    n_matched : int or None
        Detected stars within ``match_radius`` of a catalogue star.
    rms_arcsec : float or None
        Rms distance of those pairs, arcseconds.
    logodds : float or None
        Log-odds of the match reported by the engine.
    pixel_scale : float or None
        Arcseconds per pixel of the solution.
    center : astropy.coordinates.SkyCoord or None
        Sky position of the image centre.
    elapsed : float
        Wall-clock seconds spent.
    attempts : list of str
        One line per backend tried.
    """

    solved: bool
    backend: str
    reason: str = ""
    wcs: WCS | None = field(default=None, repr=False)
    solver: str = ""
    index: str | None = None
    n_matched: int | None = None
    rms_arcsec: float | None = None
    logodds: float | None = None
    pixel_scale: float | None = None
    center: SkyCoord | None = None
    elapsed: float = 0.0
    attempts: list[str] = field(default_factory=list)

    @property
    def sip(self) -> bool:
        """True when the WCS carries SIP distortion polynomials."""
        return self.wcs is not None and self.wcs.sip is not None

    def summary(self) -> dict:
        """JSON-friendly dict for logs and tables."""
        d = {k: getattr(self, k) for k in ("solved", "backend", "reason", "solver", "index",
                                           "n_matched", "rms_arcsec", "logodds", "pixel_scale",
                                           "elapsed", "attempts")}
        d["sip"] = self.sip
        if self.center is not None:
            d["center_ra_deg"] = float(self.center.ra.deg)
            d["center_dec_deg"] = float(self.center.dec.deg)
        return d


def _xy_array(xy) -> np.ndarray:
    a = np.asarray(xy, dtype=float)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"star positions must have shape (n, 2), got {a.shape}")
    return a[np.all(np.isfinite(a), axis=1)]


def _check_shape(shape) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f"shape must be (ny, nx) with positive sizes, got {shape!r}")
    return int(shape[0]), int(shape[1])


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
    ok, ref = _pair_stars(wcs, xy, catalog, match_radius)
    if not ok.any():
        return 0, float("nan"), center, scale
    sep = wcs.pixel_to_world(xy[ok, 0], xy[ok, 1]).separation(ref).arcsec
    return int(ok.sum()), float(np.sqrt(np.mean(sep**2))), center, scale


def _pair_stars(wcs: WCS, xy: np.ndarray, catalog: SkyCoord,
                match_radius: float) -> tuple[np.ndarray, SkyCoord]:
    """Pair each detected star with the nearest catalogue star through ``wcs``.

    Returns the mask of detected stars (``xy``, 0-based, shape (n, 2)) with a catalogue
    star within ``match_radius`` pixels, and those catalogue stars, in the same order.
    """
    from scipy.spatial import cKDTree

    none = np.zeros(len(xy), bool), catalog[:0]
    if len(xy) == 0 or len(catalog) == 0:
        return none
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cx, cy = wcs.world_to_pixel(catalog)
    finite = np.flatnonzero(np.isfinite(cx) & np.isfinite(cy))
    if finite.size == 0:
        return none
    d, j = cKDTree(np.column_stack([cx[finite], cy[finite]])).query(
        xy, distance_upper_bound=match_radius)
    ok = np.isfinite(d)
    return ok, catalog[finite[j[ok]]]


# ----------------------------------------------------------------------------- hints
def _scale_range(pixel_scale, scale_tolerance, shape, index_files):
    """Pixel-scale search range (arcsec/px) and a note; the blind range is limited to
    scales at which some index quad fits in the field."""
    ny, nx = shape
    if pixel_scale:
        return (pixel_scale * (1 - scale_tolerance), pixel_scale * (1 + scale_tolerance)), ""
    lo = min(i.quad_min_arcmin for i in index_files) * 60.0 / max(nx, ny)
    hi = max(i.quad_max_arcmin for i in index_files) * 60.0 / (0.1 * min(nx, ny))
    return (max(lo, 0.1), min(hi, 1000.0)), "blind search (no pixel scale known)"


def _default_radius(shape, pixel_scale) -> float:
    """Search radius (deg) around a header pointing: twice the field diagonal, at least
    1 deg; 5 deg when the scale is unknown."""
    if not pixel_scale:
        return 5.0
    return max(1.0, 2 * math.hypot(*shape) * pixel_scale / 3600.0)


def _coverage_reason(shape, pixel_scale, index_files) -> str:
    w, h = field_size_arcmin(shape, pixel_scale)
    return (f"field {_fmt_arcmin(w)} x {_fmt_arcmin(h)} wide ({pixel_scale:.3g}\"/px); installed "
            f"index files cover {index_coverage(index_files)} (quad sizes), none fits this field: "
            "add index files for smaller/larger fields (e.g. the 4100 or 5200 series with "
            "quads of about a third of the field) or use the online backend (api_key)")


# ------------------------------------------------------------------------ in process
class _SolveTimeout(Exception):
    pass


def _package_version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # metadata missing in odd installs: the version is only informative
        return "?"


def _engine_solve(index_paths, xy1, size, position, params: dict, stop_logodds: float):
    """Run the engine once (in this process); return the Solution as JSON (picklable)."""
    import astrometry

    def stop(logodds_list):
        return (astrometry.Action.STOP if logodds_list and max(logodds_list) >= stop_logodds
                else astrometry.Action.CONTINUE)

    with astrometry.Solver([Path(p) for p in index_paths]) as solver:
        sol = solver.solve(
            stars=xy1,
            size_hint=astrometry.SizeHint(*size),
            position_hint=None if position is None else astrometry.PositionHint(*position),
            solution_parameters=astrometry.SolutionParameters(logodds_callback=stop, **params),
        )
    return sol.to_json()


def _child(conn, *args):
    try:
        conn.send(("ok", _engine_solve(*args)))
    except Exception as exc:  # reported to the parent, which turns it into a reason
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _run_with_time_limit(time_limit: float, *args):
    """Run :func:`_engine_solve` bounded by ``time_limit`` seconds of wall time.

    In the main thread an interval timer raises inside the engine (it polls Python
    signals); elsewhere the engine runs in a child process that is killed on time-out.
    Returns the Solution JSON or raises :class:`_SolveTimeout`.
    """
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def on_alarm(signum, frame):
            raise _SolveTimeout()
        previous = signal.signal(signal.SIGALRM, on_alarm)
        old_timer = signal.setitimer(signal.ITIMER_REAL, time_limit)
        t0 = time.monotonic()
        try:
            return _engine_solve(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
            if old_timer[0] > 0:  # somebody else's timer (e.g. pytest-timeout): restore it
                signal.setitimer(signal.ITIMER_REAL,
                                 max(old_timer[0] - (time.monotonic() - t0), 1e-3), old_timer[1])
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, *args), daemon=True)
    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork() in a multi-threaded process; the child only
        # runs the engine and writes to its pipe, and is killed if it ever hangs
        warnings.simplefilter("ignore", DeprecationWarning)
        proc.start()
    child.close()
    try:
        if not parent.poll(time_limit):
            raise _SolveTimeout()
        status, payload = parent.recv()
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()
    if status != "ok":
        raise RuntimeError(payload)
    return payload


def solve_in_process(xy: ArrayLike, shape: tuple[int, int], *,
                     index_files: Sequence[IndexFile] | None = None,
                     pixel_scale: float | None = None, scale_tolerance: float = 0.1,
                     position: SkyCoord | None = None, radius: float | None = None,
                     time_limit: float = 20.0, sip_order: int = 2, stop_logodds: float = 21.0,
                     max_stars: int = 100, match_radius: float = 2.0,
                     min_matched: int = 6) -> SolveResult:
    """Plate-solve a star list with the in-process astrometry.net engine.

    Parameters
    ----------
    xy : array_like, shape (n, 2)
        0-based pixel positions, brightest first.
    shape : tuple of int
        Image shape ``(ny, nx)``.
    index_files : sequence of IndexFile, optional
        Default: :func:`discover_index_files`.
    pixel_scale : float, optional
        Expected arcsec/px (header hint). Without it the search is blind in scale.
    scale_tolerance : float
        Fractional half-width of the scale range searched around ``pixel_scale``.
    position : astropy.coordinates.SkyCoord, optional
        Expected field centre (header pointing).
    radius : float, optional
        Search radius around ``position`` in degrees; default: the larger of 1 deg and
        twice the field diagonal (when the scale is known), else 5 deg.
    time_limit : float
        Wall-clock seconds for the whole search (both passes below).
    sip_order : int
        Order of the SIP distortion polynomial fitted (0: pure TAN). The SIP solution is
        kept only if the distortion is significant (F-test against a least-squares TAN
        fit of the same, outlier-clipped star pairs, p < 0.001), refitted on those pairs;
        otherwise the TAN fit is returned (an order-2 polynomial on ~20 stars bends by an
        arcsecond at the corners of a field without distortion).
    stop_logodds : float
        Stop at the first match with at least this log-odds (21 = odds of 1e9, the
        astrometry.net default for "solved").
    max_stars : int
        Use at most this many (brightest) stars.
    match_radius : float
        Pairing radius in pixels for the verification (see :func:`verify_wcs`).
    min_matched : int
        Fewest verified star pairs for the solution to be accepted.

    Returns
    -------
    SolveResult

    Raises
    ------
    ValueError
        Bad ``xy`` or ``shape``.

    Notes
    -----
    With a position hint, a first pass searches around it; if it fails, a second pass
    drops the position hint for the time left. Positions are passed 1-based.
    """
    t0 = time.monotonic()
    ny, nx = _check_shape(shape)
    xy = _xy_array(xy)[:max_stars]
    backend = "inprocess"
    solver = f"astrometry.net engine (astrometry {_package_version('astrometry')})"
    try:
        import astrometry
    except ImportError:
        return SolveResult(False, backend, "the 'astrometry' package is not installed",
                           solver=solver, elapsed=time.monotonic() - t0)
    if index_files is None:
        index_files = discover_index_files()
    if not index_files:
        return SolveResult(False, backend, "no astrometry.net index files found (searched "
                           f"${INDEX_ENV} and {', '.join(SYSTEM_INDEX_DIRS)})", solver=solver,
                           elapsed=time.monotonic() - t0)
    if len(xy) < 4:
        return SolveResult(False, backend, f"only {len(xy)} stars detected (at least 4 needed)",
                           solver=solver, elapsed=time.monotonic() - t0)
    usable = list(index_files)
    if pixel_scale:
        w, h = field_size_arcmin((ny, nx), pixel_scale)
        usable = usable_index_files(index_files, w * (1 + scale_tolerance),
                                    h * (1 + scale_tolerance))
        if not usable:
            return SolveResult(False, backend, _coverage_reason((ny, nx), pixel_scale, index_files),
                               solver=solver, elapsed=time.monotonic() - t0)
    size, note = _scale_range(pixel_scale, scale_tolerance, (ny, nx), usable)
    passes = []
    if position is not None:
        if radius is None:
            radius = _default_radius((ny, nx), pixel_scale)
        pos = (float(position.icrs.ra.wrap_at(360 * u.deg).deg) % 360.0,
               float(position.icrs.dec.deg), float(radius))
        passes.append(pos)
    passes.append(None)
    params = dict(sip_order=int(sip_order), tune_up_logodds_threshold=14.0 if sip_order else None)
    xy1 = (xy + 1.0).tolist()  # FITS convention: the first pixel's centre is (1, 1)
    tried = []
    for pos in passes:
        left = time_limit - (time.monotonic() - t0)
        if left <= 0.05:
            break
        what = "around the header pointing" if pos else "all sky"
        try:
            payload = _run_with_time_limit(left, [str(i.path) for i in usable], xy1, size, pos,
                                           params, stop_logodds)
        except _SolveTimeout:
            tried.append(f"{what}: no match within the {time_limit:g} s time limit")
            break
        except RuntimeError as exc:
            tried.append(f"{what}: engine error {exc}")
            break
        import astrometry
        solution = astrometry.Solution.from_json(payload)
        if not solution.has_match():
            tried.append(f"{what}: no match")
            continue
        match = solution.best_match()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = match.astropy_wcs()
        cat = SkyCoord([s.ra_deg for s in match.stars] * u.deg,
                       [s.dec_deg for s in match.stars] * u.deg)
        n, rms, center, scale = verify_wcs(wcs, xy, cat, (ny, nx), match_radius)
        if n < min_matched:
            tried.append(f"{what}: match with log-odds {match.logodds:.1f} rejected "
                         f"({n} stars verified, {min_matched} needed)")
            continue
        if sip_order:
            wcs, n, rms, center, scale, note = _check_sip(
                wcs, n, rms, center, scale, note, xy, cat, (ny, nx), match_radius, min_matched,
                int(sip_order))
        return SolveResult(True, backend, note, wcs, solver, match.index_path.name, n, rms,
                           float(match.logodds), scale, center, time.monotonic() - t0, tried)
    detail = "; ".join(tried)
    scale_txt = (f"scale {size[0]:.3g}–{size[1]:.3g}\"/px" if pixel_scale else
                 f"blind scale search {size[0]:.3g}–{size[1]:.3g}\"/px (no pixel scale in the "
                 "header: give pixel_scale= or add SCALE/PIXSCALE, or XPIXSZ with FOCALLEN)")
    field_txt = ""
    if pixel_scale:
        w, h = field_size_arcmin((ny, nx), pixel_scale)
        field_txt = f"field {_fmt_arcmin(w)} x {_fmt_arcmin(h)}, "
    reason = (f"not solved: {detail}; {field_txt}{scale_txt}, {len(xy)} stars, index files cover "
              f"{index_coverage(usable)} (too few catalogue stars in the field, or wrong hints)")
    return SolveResult(False, backend, reason, solver=solver, elapsed=time.monotonic() - t0,
                       attempts=tried)


def _pair_residuals(wcs: WCS, xy: np.ndarray, sky: SkyCoord) -> np.ndarray:
    """Pixel distances between detected stars and their catalogue stars through ``wcs``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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

    ok, sky = _pair_stars(wcs, xy, cat, match_radius)
    p_sip = 2 * ((sip_order + 1) * (sip_order + 2) // 2 - 3)
    if ok.sum() < 6 + p_sip + 4:     # too few pairs to judge: the SIP fit is unconstrained
        return wcs, n, rms, center, scale, note
    pxy = xy[ok]
    keep = np.ones(len(pxy), bool)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
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


# ------------------------------------------------------------------------ solve-field
def solve_with_solve_field(xy: ArrayLike, shape: tuple[int, int], *, flux: ArrayLike | None = None,
                           index_files: Sequence[IndexFile] | None = None,
                           pixel_scale: float | None = None, scale_tolerance: float = 0.1,
                           position: SkyCoord | None = None, radius: float | None = None,
                           time_limit: float = 20.0, sip_order: int = 2, max_stars: int = 100,
                           match_radius: float = 2.0, executable: str = "solve-field",
                           workdir: str | os.PathLike | None = None) -> SolveResult:
    """Plate-solve a star list with astrometry.net's ``solve-field`` program.

    Parameters
    ----------
    xy : array_like, shape (n, 2)
        0-based pixel positions, brightest first.
    shape : tuple of int
        Image shape ``(ny, nx)``; passed as ``--width nx --height ny``.
    flux : array_like, shape (n,), optional
        Brightness used to sort (default: the given order).
    index_files : sequence of IndexFile, optional
        When given (or found by :func:`discover_index_files`), a temporary engine
        configuration lists their directories; otherwise solve-field's own
        configuration is used.
    pixel_scale, scale_tolerance, position, radius, time_limit, sip_order, max_stars, \
match_radius
        As for :func:`solve_in_process`; ``time_limit`` is both ``--cpulimit`` and a
        hard wall-clock limit on the program.
    executable : str
        Program name or path.
    workdir : path, optional
        Where the temporary files go (default: a new temporary directory, removed after).

    Returns
    -------
    SolveResult
        ``n_matched`` and ``rms_arcsec`` come from solve-field's correspondence file.
    """
    t0 = time.monotonic()
    ny, nx = _check_shape(shape)
    xy = _xy_array(xy)[:max_stars]
    exe = shutil.which(executable)
    backend = "solve-field"
    if exe is None:
        return SolveResult(False, backend, f"'{executable}' is not installed", elapsed=0.0)
    version = _solve_field_version(exe)
    solver = f"astrometry.net solve-field {version}".strip()
    if len(xy) < 4:
        return SolveResult(False, backend, f"only {len(xy)} stars detected (at least 4 needed)",
                           solver=solver, elapsed=time.monotonic() - t0)
    if index_files is None:
        index_files = discover_index_files()
    if pixel_scale and index_files:
        w, h = field_size_arcmin((ny, nx), pixel_scale)
        grow = 1 + scale_tolerance
        if not usable_index_files(index_files, w * grow, h * grow):
            return SolveResult(False, backend, _coverage_reason((ny, nx), pixel_scale, index_files),
                               solver=solver, elapsed=time.monotonic() - t0)
    own_tmp = workdir is None
    tmp = Path(tempfile.mkdtemp(prefix="astrodart-solve-")) if own_tmp else Path(workdir)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        from astropy.table import Table
        fl = (np.asarray(flux, float)[:len(xy)] if flux is not None
              else np.arange(len(xy), 0, -1, dtype=float))
        Table({"X": xy[:, 0] + 1.0, "Y": xy[:, 1] + 1.0, "FLUX": fl}).write(tmp / "stars.xyls",
                                                                          format="fits",
                                                                          overwrite=True)
        cmd = [exe, str(tmp / "stars.xyls"), "--width", str(nx), "--height", str(ny),
               "--x-column", "X", "--y-column", "Y", "--sort-column", "FLUX",
               "--no-plots", "--overwrite", "--dir", str(tmp), "--temp-dir", str(tmp),
               "--cpulimit", str(max(1, math.ceil(time_limit))), "--crpix-center",
               "--new-fits", "none", "--match", "none", "--rdls", "none", "--index-xyls", "none",
               "--corr", str(tmp / "corr.fits"), "--wcs", str(tmp / "solution.wcs"),
               "--solved", str(tmp / "solved")]
        cmd += ["--tweak-order", str(sip_order)] if sip_order else ["--no-tweak"]
        if pixel_scale:
            lo, hi = pixel_scale * (1 - scale_tolerance), pixel_scale * (1 + scale_tolerance)
            cmd += ["--scale-units", "arcsecperpix", "--scale-low", f"{lo:.6g}",
                    "--scale-high", f"{hi:.6g}"]
        if position is not None:
            if radius is None:
                radius = _default_radius((ny, nx), pixel_scale)
            cmd += ["--ra", f"{position.icrs.ra.deg:.6f}", "--dec", f"{position.icrs.dec.deg:.6f}",
                    "--radius", f"{radius:.4g}"]
        if index_files:
            cfg = tmp / "engine.cfg"
            dirs = sorted({str(i.path.parent) for i in index_files})
            cfg.write_text(f"cpulimit {max(1, math.ceil(time_limit))}\n"
                           + "".join(f"add_path {d}\n" for d in dirs) + "autoindex\n")
            cmd += ["--config", str(cfg)]
        log.debug("running %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                  timeout=time_limit + 15)
        except subprocess.TimeoutExpired:
            return SolveResult(False, backend,
                               f"solve-field did not finish within {time_limit:g} s",
                               solver=solver, elapsed=time.monotonic() - t0)
        out = proc.stdout + proc.stderr
        if not (tmp / "solved").exists() or not (tmp / "solution.wcs").exists():
            tail = " ".join(out.strip().splitlines()[-3:])[-300:]
            return SolveResult(False, backend,
                               f"solve-field found no solution (exit {proc.returncode}): {tail}",
                               solver=solver, elapsed=time.monotonic() - t0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(fits.getheader(tmp / "solution.wcs"))
        m = re.search(r"solved with index (\S+?)\.?\s*$", out, re.MULTILINE)
        index = m.group(1) if m else None
        lo_m = re.findall(r"log-odds ratio ([-\d.]+)", out)
        logodds = float(lo_m[-1]) if lo_m else None
        n = rms = None
        if (tmp / "corr.fits").exists():
            corr = fits.getdata(tmp / "corr.fits", 1)
            cat = SkyCoord(corr["index_ra"] * u.deg, corr["index_dec"] * u.deg)
            n, rms, center, scale = verify_wcs(wcs, xy, cat, (ny, nx), match_radius)
        else:
            n, rms, center, scale = verify_wcs(wcs, xy, SkyCoord([], [], unit="deg"), (ny, nx))
        return SolveResult(True, backend, "", wcs, solver, index, n, rms, logodds, scale, center,
                           time.monotonic() - t0)
    finally:
        if own_tmp:
            shutil.rmtree(tmp, ignore_errors=True)


_SF_VERSION: dict[str, str] = {}


def _solve_field_version(exe: str) -> str:
    if exe not in _SF_VERSION:
        try:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False,
                                 timeout=10)
            _SF_VERSION[exe] = (out.stdout or out.stderr).strip().splitlines()[0][:30]
        except (OSError, subprocess.SubprocessError, IndexError):
            _SF_VERSION[exe] = ""
    return _SF_VERSION[exe]


# ----------------------------------------------------------------------------- online
def _configured_api_key() -> str:
    try:
        from astroquery.astrometry_net import conf
        return str(conf.api_key or "")
    except Exception:  # astroquery missing or its configuration unreadable
        return ""


def _nova_client(base, request_timeout: float):
    """An astroquery AstrometryNet client whose every HTTP request has a timeout and
    bypasses astroquery's cache (astroquery itself passes no timeout to ``requests``)."""

    class _TimedClient(base):
        def _request(self, method, url, **kwargs):
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = request_timeout
            kwargs["cache"] = False
            return super()._request(method, url, **kwargs)

    return _TimedClient()


def solve_online(xy: ArrayLike, shape: tuple[int, int], *, api_key: str | None = None,
                 pixel_scale: float | None = None, scale_tolerance: float = 0.1,
                 position: SkyCoord | None = None, radius: float | None = None,
                 timeout: float = 300.0, request_timeout: float = 60.0, retries: int = 2,
                 retry_wait: float = 5.0, sip_order: int = 2, max_stars: int = 100,
                 client=None) -> SolveResult:
    """Plate-solve a star list with nova.astrometry.net (through astroquery).

    Parameters
    ----------
    xy : array_like, shape (n, 2)
        0-based pixel positions, brightest first (sent 1-based).
    shape : tuple of int
        ``(ny, nx)``; sent as ``image_width=nx``, ``image_height=ny``.
    api_key : str, optional
        nova.astrometry.net API key; default: astroquery's configuration
        (``[astrometry_net] api_key``).
    pixel_scale, scale_tolerance, position, radius, sip_order, max_stars
        Hints and options as for :func:`solve_in_process`.
    timeout : float
        Seconds to wait for the service to finish solving.
    request_timeout : float
        Seconds allowed for each HTTP request.
    retries : int
        Extra attempts after a network error (connection refused or reset, HTTP timeout,
        any ``requests`` exception).
    retry_wait : float
        Seconds between attempts.
    client : astroquery.astrometry_net.AstrometryNetClass, optional
        Client to use (default: a new one that gives every HTTP request
        ``request_timeout`` and skips astroquery's cache).

    Returns
    -------
    SolveResult
        ``n_matched`` and ``rms_arcsec`` are None: the service's WCS comes without the
        star correspondences.
    """
    t0 = time.monotonic()
    ny, nx = _check_shape(shape)
    xy = _xy_array(xy)[:max_stars]
    backend = "online"
    key = api_key or _configured_api_key()
    try:
        from astroquery.astrometry_net import AstrometryNetClass, conf
        from astroquery.exceptions import TimeoutError as AQTimeoutError
    except ImportError:
        return SolveResult(False, backend, "astroquery is not installed")
    solver = f"nova.astrometry.net (astroquery {_package_version('astroquery')})"
    if not key:
        return SolveResult(False, backend, "no nova.astrometry.net API key (give api_key= or set "
                           "[astrometry_net] api_key in the astroquery configuration)",
                           solver=solver)
    if len(xy) < 4:
        return SolveResult(False, backend, f"only {len(xy)} stars detected (at least 4 needed)",
                           solver=solver)
    settings: dict = {"tweak_order": int(sip_order), "crpix_center": True}
    if pixel_scale:
        settings.update(scale_units="arcsecperpix", scale_type="ev", scale_est=float(pixel_scale),
                        scale_err=float(100 * scale_tolerance))
    if position is not None:
        if radius is None:
            radius = _default_radius((ny, nx), pixel_scale)
        settings.update(center_ra=float(position.icrs.ra.deg),
                        center_dec=float(position.icrs.dec.deg), radius=float(radius))
    import requests

    tried = []
    header = None
    with conf.set_temp("api_key", key):
        ast = client if client is not None else _nova_client(AstrometryNetClass, request_timeout)
        for attempt in range(retries + 1):
            try:
                header = ast.solve_from_source_list(
                    xy[:, 0] + 1.0, xy[:, 1] + 1.0, nx, ny, solve_timeout=timeout,
                    verbose=False, **settings)
                break
            except AQTimeoutError as exc:
                sub = exc.args[1] if len(exc.args) > 1 else "?"
                return SolveResult(False, backend, f"nova.astrometry.net did not finish within "
                                   f"{timeout:g} s (submission {sub})", solver=solver,
                                   elapsed=time.monotonic() - t0, attempts=tried)
            except requests.exceptions.RequestException as exc:  # network: retry
                tried.append(f"attempt {attempt + 1}: {type(exc).__name__}: {exc}")
                log.warning("nova.astrometry.net: %s", tried[-1])
                ast._session_id = None  # log in again on the next attempt
                if attempt < retries:
                    time.sleep(retry_wait)
            except (RuntimeError, ValueError, KeyError) as exc:
                return SolveResult(False, backend,
                                   f"nova.astrometry.net: {type(exc).__name__}: {exc}",
                                   solver=solver, elapsed=time.monotonic() - t0, attempts=tried)
    if header is None:
        return SolveResult(False, backend, f"nova.astrometry.net unreachable after {retries + 1} "
                           f"attempts ({tried[-1] if tried else ''})", solver=solver,
                           elapsed=time.monotonic() - t0, attempts=tried)
    if not header:
        return SolveResult(False, backend, "nova.astrometry.net found no solution", solver=solver,
                           elapsed=time.monotonic() - t0, attempts=tried)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(fits.Header(header))
    if not wcs.has_celestial:
        return SolveResult(False, backend, "nova.astrometry.net returned a header without a WCS",
                           solver=solver, elapsed=time.monotonic() - t0, attempts=tried)
    _, _, center, scale = verify_wcs(wcs, xy[:0], SkyCoord([], [], unit="deg"), (ny, nx))
    return SolveResult(True, backend, "", wcs, solver, "nova.astrometry.net", None, None, None,
                       scale, center, time.monotonic() - t0, tried)


def available_backends(index_files: Sequence[IndexFile] | None = None,
                       api_key: str | None = None) -> list[str]:
    """Backends usable here, in the order ``backend='auto'`` tries them.

    Parameters
    ----------
    index_files : sequence of IndexFile, optional
        Default: :func:`discover_index_files`.
    api_key : str, optional
        nova.astrometry.net key (or astroquery's configured one).

    Returns
    -------
    list of str
        ``'inprocess'`` (package and index files present), else ``'solve-field'``
        (program present); then ``'online'`` when an API key is known.
    """
    if index_files is None:
        index_files = discover_index_files()
    out = []
    try:
        import astrometry  # noqa: F401
        has_pkg = True
    except ImportError:
        has_pkg = False
    if has_pkg and index_files:
        out.append("inprocess")
    elif shutil.which("solve-field"):
        out.append("solve-field")
    if api_key or _configured_api_key():
        out.append("online")
    return out

