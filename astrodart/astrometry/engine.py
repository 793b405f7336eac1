"""Layer 2: plate solving with the astrometry.net engine compiled into this process.

The ``astrometry`` Python package (neuromorphicsystems/astrometry) with local index
files found by :func:`astrodart.astrometry.index.discover_index_files`. The engine only
stops by itself after trying every index, which takes minutes, so the search is stopped
at the first match whose log-odds reach ``stop_logodds`` (a callback), and bounded by a
wall-clock ``time_limit`` (a timer signal in the main thread, a killable child process
otherwise). The engine wants 1-based FITS pixel positions; 0-based input shifts the
solution by one pixel.

References
----------
Lang, D., Hogg, D. W., Mierle, K., Blanton, M. & Roweis, S. 2010, AJ 139, 1782,
"Astrometry.net: blind astrometric calibration of arbitrary astronomical images".
"""
from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.wcs import FITSFixedWarning
from numpy.typing import ArrayLike

from astrodart.astrometry.index import (
    INDEX_ENV,
    SYSTEM_INDEX_DIRS,
    IndexFile,
    _coverage_reason,
    _default_radius,
    _fmt_arcmin,
    _scale_range,
    discover_index_files,
    field_size_arcmin,
    index_coverage,
    usable_index_files,
)
from astrodart.astrometry.result import SolveResult, _check_shape, _package_version, _xy_array
from astrodart.astrometry.verify import _check_sip, verify_wcs
from astrodart.exceptions import quiet

__all__ = ["solve_in_process"]

class _SolveTimeout(Exception):
    pass


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

    On Linux the engine runs in a forked child process that is killed on time-out: the
    limit then holds to a few milliseconds (an interval timer in the main thread, which
    the engine notices only between its own long loops, overshot 5 s by 2.5-3 s on the
    HAT-P-27b night, ``benchmarks/astrometry_refusal.py``). The engine's package is
    imported here first, so the child never waits on an import lock another thread held
    at the fork. Elsewhere, in the main thread, an interval timer raises inside the
    engine (it polls Python signals); in other threads a spawned child is used.
    Returns the Solution JSON or raises :class:`_SolveTimeout`.
    """
    import astrometry  # noqa: F401  (loaded before the fork, see above)

    # a daemonic worker process (multiprocessing.Pool) may not start children
    use_fork = sys.platform.startswith("linux") and not multiprocessing.current_process().daemon
    if (not use_fork and threading.current_thread() is threading.main_thread()
            and hasattr(signal, "setitimer")):
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
    ctx = multiprocessing.get_context("fork" if use_fork else "spawn")
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
    shape = _check_shape(shape)
    xy = _xy_array(xy)[:max_stars]
    solver = f"astrometry.net engine (astrometry {_package_version('astrometry')})"

    def failed(reason, tried=()):
        return SolveResult(False, "inprocess", reason, solver=solver,
                           elapsed=time.monotonic() - t0, attempts=list(tried))

    usable = _usable_indexes(xy, shape, index_files, pixel_scale, scale_tolerance)
    if isinstance(usable, str):
        return failed(usable)
    size, note = _scale_range(pixel_scale, scale_tolerance, shape, usable)
    passes = []
    if position is not None:
        if radius is None:
            radius = _default_radius(shape, pixel_scale)
        passes.append((float(position.icrs.ra.wrap_at(360 * u.deg).deg) % 360.0,
                       float(position.icrs.dec.deg), float(radius)))
    passes.append(None)
    params = dict(sip_order=int(sip_order), tune_up_logodds_threshold=14.0 if sip_order else None)
    tried: list[str] = []
    for pos in passes:
        left = time_limit - (time.monotonic() - t0)
        if left <= 0.05:
            break
        what = "around the header pointing" if pos else "all sky"
        try:
            payload = _run_with_time_limit(left, [str(i.path) for i in usable],
                                           (xy + 1.0).tolist(),  # FITS: first pixel is (1, 1)
                                           size, pos, params, stop_logodds)
        except _SolveTimeout:
            tried.append(f"{what}: no match within the {time_limit:g} s time limit")
            break
        except RuntimeError as exc:
            tried.append(f"{what}: engine error {exc}")
            break
        found = _accept_match(payload, xy, shape, match_radius, min_matched, sip_order, note)
        if isinstance(found, str):
            tried.append(f"{what}: {found}")
            continue
        wcs, match, note, (n, rms, center, scale) = found
        return SolveResult(True, "inprocess", note, wcs, solver, match.index_path.name, n, rms,
                           float(match.logodds), scale, center, time.monotonic() - t0, tried)
    return failed(_not_solved_reason(tried, size, pixel_scale, shape, len(xy), usable), tried)


def _usable_indexes(xy, shape, index_files, pixel_scale, scale_tolerance):
    """The index files worth searching for this field, or the reason there are none."""
    try:
        import astrometry  # noqa: F401
    except ImportError:
        return "the 'astrometry' package is not installed"
    if index_files is None:
        index_files = discover_index_files()
    if not index_files:
        return ("no astrometry.net index files found (searched "
                f"${INDEX_ENV} and {', '.join(SYSTEM_INDEX_DIRS)})")
    if len(xy) < 4:
        return f"only {len(xy)} stars detected (at least 4 needed)"
    if not pixel_scale:
        return list(index_files)
    w, h = field_size_arcmin(shape, pixel_scale)
    usable = usable_index_files(index_files, w * (1 + scale_tolerance), h * (1 + scale_tolerance))
    return usable or _coverage_reason(shape, pixel_scale, index_files)


def _accept_match(payload, xy, shape, match_radius, min_matched, sip_order, note):
    """The engine's best match as ``(wcs, match, note, (n, rms, center, scale))`` after
    verification (and the SIP significance test), or why it was not accepted."""
    import astrometry

    solution = astrometry.Solution.from_json(payload)
    if not solution.has_match():
        return "no match"
    match = solution.best_match()
    with quiet(FITSFixedWarning):
        wcs = match.astropy_wcs()
    cat = SkyCoord([s.ra_deg for s in match.stars] * u.deg,
                   [s.dec_deg for s in match.stars] * u.deg)
    n, rms, center, scale = verify_wcs(wcs, xy, cat, shape, match_radius)
    if n < min_matched:
        return (f"match with log-odds {match.logodds:.1f} rejected "
                f"({n} stars verified, {min_matched} needed)")
    if sip_order:
        wcs, n, rms, center, scale, note = _check_sip(
            wcs, n, rms, center, scale, note, xy, cat, shape, match_radius, min_matched,
            int(sip_order))
    return wcs, match, note, (n, rms, center, scale)


def _not_solved_reason(tried, size, pixel_scale, shape, n_stars, usable) -> str:
    detail = "; ".join(tried)
    scale_txt = (f"scale {size[0]:.3g}–{size[1]:.3g}\"/px" if pixel_scale else
                 f"blind scale search {size[0]:.3g}–{size[1]:.3g}\"/px (no pixel scale in the "
                 "header: give pixel_scale= or add SCALE/PIXSCALE, or XPIXSZ with FOCALLEN)")
    field_txt = ""
    if pixel_scale:
        w, h = field_size_arcmin(shape, pixel_scale)
        field_txt = f"field {_fmt_arcmin(w)} x {_fmt_arcmin(h)}, "
    return (f"not solved: {detail}; {field_txt}{scale_txt}, {n_stars} stars, index files cover "
            f"{index_coverage(usable)} (too few catalogue stars in the field, or wrong hints)")
