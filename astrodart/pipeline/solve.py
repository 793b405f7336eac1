"""Layer 3: plate-solve frames on disk and write the WCS into each one.

The file-level side of :mod:`astrodart.astrometry`: read a frame, find its stars
(:func:`astrodart.sources.stars.find_stars`, with the FWHM in **pixels**), try the
backends in turn (offline first, online as the fallback), and write the solution into
the file atomically, pixel data untouched, with the solver, index, matched stars and
residual rms in the header and in the run log. A frame that cannot be solved is
reported with the reason and never stops the batch.

Header keywords written by :class:`astrometry` (besides the WCS itself): ``ASTSOLVR``
(solver), ``ASTBACKE`` (backend), ``ASTINDEX`` (index file), ``ASTNSTAR`` (matched
stars), ``ASTRMS`` (residual rms, arcsec), ``ASTSCALE`` (arcsec/px), ``ASTLOGOD``
(log-odds), ``ASTTIME`` (seconds), ``ASTDATE`` (UTC), ``ASTVERS`` (astrodart version).
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from astrodart import __version__
from astrodart.astrometry import solve as _solve
from astrodart.exceptions import AstrodartWarning, warn, quiet
from astrodart.frames.checks import check_files, check_number
from astrodart.frames.header import FrameHeader
from astrodart.frames.io import image_hdu_index, read_frame, read_header, write_hdulist
from astrodart.pipeline.runlog import find_log_path, log_event
from astrodart.pipeline.step import parse_overwrite
from astrodart.sources.background import saturation_level
from astrodart.sources.stars import find_stars

__all__ = [
    "AstrometryFailedWarning",
    "WCS_KEYWORD_PATTERN",
    "astrometry",
    "frame_saturation",
    "has_astrodart_wcs",
    "write_solution",
]

log = logging.getLogger("astrodart.second_stage")


class AstrometryFailedWarning(AstrodartWarning):
    """A frame could not be plate-solved; the message names the file and the reason."""


def frame_saturation(fh: FrameHeader, data) -> float | None:
    """Saturation level of a frame, data units.

    Parameters
    ----------
    fh : FrameHeader
        The frame's header.
    data : array_like, shape (ny, nx)
        The frame's pixels (raw, background included).

    Returns
    -------
    float or None
        The header's level (``SATURATE``/``DATAMAX``) when given, else the plateau of
        identical maximum values that saturated pixels leave in raw frames
        (:func:`astrodart.sources.background.saturation_level`); None when neither is found.
    """
    level = getattr(fh, "saturation", None)
    return float(level) if level else saturation_level(data)


# ------------------------------------------------------------------------- astrometry
#: Header keywords describing a celestial WCS (removed before a new solution is written).
WCS_KEYWORD_PATTERN = re.compile(
    r"^(WCSAXES|WCSNAME|CTYPE\d|CUNIT\d|CRVAL\d|CRPIX\d|CDELT\d|CROTA\d|CD\d_\d|PC\d_\d|"
    r"PV\d_\d+|PS\d_\d+|LONPOLE|LATPOLE|RADESYS|RADECSYS|(A|B|AP|BP)_ORDER|"
    r"(A|B|AP|BP)_\d+_\d+|A_DMAX|B_DMAX|IMAGEW|IMAGEH)$")


_PROVENANCE = ("ASTSOLVR", "ASTBACKE", "ASTINDEX", "ASTNSTAR", "ASTRMS", "ASTSCALE", "ASTLOGOD",
               "ASTTIME", "ASTDATE", "ASTVERS")


def has_astrodart_wcs(header: fits.Header) -> bool:
    """Whether a header already holds a plate solution written by :class:`astrometry`.

    Parameters
    ----------
    header : astropy.io.fits.Header
        The frame's header.

    Returns
    -------
    bool
        True when ``ASTSOLVR`` is present and the header has a valid celestial WCS.
    """
    if "ASTSOLVR" not in header:
        return False
    with quiet():
        try:
            return WCS(header).has_celestial
        except Exception:  # malformed WCS keywords: treat as not solved
            return False


def _wcs_cards(wcs: WCS) -> fits.Header:
    # astrometry.net solves on ICRS catalogues (Tycho-2, Gaia) and labels them "equinox
    # 2000", which astropy reads as FK5: say ICRS, and leave the camera's EQUINOX alone
    w = wcs.deepcopy()
    if w.wcs.radesys in ("", "FK5") and (np.isnan(w.wcs.equinox) or w.wcs.equinox == 2000.0):
        w.wcs.radesys = "ICRS"
        w.wcs.equinox = np.nan
    h = w.to_header(relax=True)
    return fits.Header([c for c in h.cards
                        if WCS_KEYWORD_PATTERN.match(c.keyword) and c.keyword != "EQUINOX"])


def write_solution(path: str | Path, result: _solve.SolveResult) -> None:
    """Write a solution's WCS and provenance into ``path`` atomically, pixels untouched.

    Parameters
    ----------
    path : str or pathlib.Path
        FITS file (primary image or first image extension; ``.gz`` stays compressed).
    result : SolveResult
        A solved result.

    Raises
    ------
    FrameError
        The file cannot be read.
    """
    path = Path(path)
    with fits.open(path, do_not_scale_image_data=True, memmap=False) as hdul:
        for hdu in hdul:  # load everything before the file is replaced
            _ = hdu.data
        idx = image_hdu_index(hdul, path)
        hdr = hdul[idx].header
        for key in [k for k in hdr if WCS_KEYWORD_PATTERN.match(k)]:
            hdr.remove(key, ignore_missing=True, remove_all=True)
        for key in _PROVENANCE:
            hdr.remove(key, ignore_missing=True, remove_all=True)
        hdr.update(_wcs_cards(result.wcs))
        hdr["ASTSOLVR"] = (result.solver[:60], "plate solver")
        hdr["ASTBACKE"] = (result.backend, "astrodart solver backend")
        if result.index:
            hdr["ASTINDEX"] = (str(result.index)[:60], "index of the match")
        if result.n_matched is not None:
            hdr["ASTNSTAR"] = (int(result.n_matched), "stars matched to catalogue")
        if result.rms_arcsec is not None and np.isfinite(result.rms_arcsec):
            hdr["ASTRMS"] = (round(float(result.rms_arcsec), 4), "[arcsec] residual rms")
        if result.pixel_scale:
            hdr["ASTSCALE"] = (round(float(result.pixel_scale), 5), "[arcsec/px] pixel scale")
        if result.logodds is not None:
            hdr["ASTLOGOD"] = (round(float(result.logodds), 2), "log-odds of the match")
        hdr["ASTTIME"] = (round(float(result.elapsed), 3), "[s] solve time")
        hdr["ASTDATE"] = (_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                          "UTC of the solve")
        hdr["ASTVERS"] = (__version__, "astrodart version")
        hdr.add_history(f"astrodart {__version__} astrometry: WCS from {result.solver}"
                        f"{' (SIP)' if result.sip else ''}")
        write_hdulist(hdul, path, overwrite=True)


def _as_coord(position) -> SkyCoord | None:
    if position is None or isinstance(position, SkyCoord):
        return position
    ra, dec = position
    return SkyCoord(float(ra) * u.deg, float(dec) * u.deg)


class astrometry:
    """Plate-solve frames and write the WCS into each one.

    Parameters
    ----------
    directory : str or pathlib.Path
        Working directory; the run log (``astrodart_log.jsonl``) is the one found by
        :func:`astrodart.pipeline.runlog.find_log_path` from here.
    files : sequence of str or pathlib.Path
        FITS frames; each solved file gets its WCS in place (atomic rewrite).
    api_key : str, optional
        nova.astrometry.net API key for the online fallback (else astroquery's
        configured key; without any key the online backend is not used).
    fwhm : float or sequence of float, optional
        FWHM in **pixels** for star finding, one for all or one per file (as returned
        by ``get_fwhm(files).estimate_fwhm()``); default 3 px. Never scaled to arcsec.
    backend : {'auto', 'inprocess', 'solve-field', 'online'}
        ``'auto'`` tries the in-process engine (or solve-field when the ``astrometry``
        package or index files are missing), then online when a key is known.
    index_dir : str, path or sequence, optional
        Extra index files or folders, searched before ``$ASTRODART_INDEX_DIR`` and
        the system folders.
    pixel_scale : float, optional
        Arcsec/px, overriding the header (``IM_SCALE``/``SCALE``/``PIXSCALE`` or
        ``XPIXSZ`` with ``FOCALLEN``).
    scale_tolerance : float
        Fractional half-width of the scale range searched.
    position : SkyCoord or (ra_deg, dec_deg), optional
        Field centre overriding the header pointing.
    radius : float, optional
        Search radius around the pointing, degrees.
    time_limit : float
        Seconds allowed per frame for the offline search.
    sip_order : int
        SIP distortion order (0 for a pure TAN projection).
    threshold : float
        Star detection threshold, sigma.
    max_stars : int
        Brightest stars given to the solver.
    overwrite : bool or 'yes'/'no'
        Re-solve frames that already carry an astrodart WCS (default: keep them).
    online_timeout, request_timeout : float
        Seconds for the online solve and for each HTTP request.
    retries : int
        Extra online attempts after network errors.
    give_up_after : int or None
        After this many consecutive frames failed a *blind* search (no pixel scale
        known) by running out of time, the remaining frames without a scale are skipped
        with that reason instead of spending ``time_limit`` each (None: never).

    Attributes
    ----------
    results : dict
        File -> :class:`astrodart.astrometry.solve.SolveResult`, filled by :meth:`run`.
    """

    def __init__(self, directory: str | Path | None, files: Sequence, api_key: str | None = None,
                 fwhm: float | Sequence[float] | None = None, *,
                 backend: str = "auto", index_dir: str | Path | Sequence | None = None,
                 pixel_scale: float | None = None, scale_tolerance: float = 0.1,
                 position: SkyCoord | tuple[float, float] | None = None,
                 radius: float | None = None,
                 time_limit: float = 20.0, sip_order: int = 2, threshold: float = 5.0,
                 max_stars: int = 100, overwrite: bool | str = False, online_timeout: float = 300.0,
                 request_timeout: float = 60.0, retries: int = 2, give_up_after: int | None = 3):
        self.files = check_files("files", files, owner="astrometry")
        self.directory = Path(directory) if directory else (
            Path(self.files[0]).parent if self.files else Path.cwd())
        self.api_key = api_key or None
        if backend not in ("auto",) + _solve.BACKENDS:
            raise ValueError(f"backend={backend!r}; use 'auto' or one of "
                             f"{', '.join(_solve.BACKENDS)}")
        self.backend = backend
        if fwhm is None or np.isscalar(fwhm):
            self.fwhm = [fwhm] * len(self.files)
        else:
            self.fwhm = list(fwhm)
            if len(self.fwhm) != len(self.files):
                raise ValueError(f"fwhm has {len(self.fwhm)} values for {len(self.files)} files")
        me, positive = "astrometry", {"minimum": 0, "exclusive": True}
        for i, f in enumerate(self.fwhm if fwhm is not None and not np.isscalar(fwhm) else [fwhm]):
            check_number(f"fwhm[{i}]" if not np.isscalar(fwhm) else "fwhm", f, allow_none=True,
                         owner=me, unit="px", **positive)
        self.index_dir = index_dir
        self.pixel_scale = check_number("pixel_scale", pixel_scale, allow_none=True, owner=me,
                                        unit="arcsec/px", **positive)
        self.scale_tolerance = check_number("scale_tolerance", scale_tolerance, maximum=1,
                                            owner=me, **positive)
        self.position = _as_coord(position)
        self.radius = check_number("radius", radius, allow_none=True, owner=me, **positive)
        self.time_limit, self.threshold, self.online_timeout, self.request_timeout = (
            check_number(n, v, owner=me, **positive) for n, v in (
                ("time_limit", time_limit), ("threshold", threshold),
                ("online_timeout", online_timeout), ("request_timeout", request_timeout)))
        self.sip_order = check_number("sip_order", sip_order, minimum=0, maximum=5, integer=True,
                                      owner=me)
        self.max_stars = check_number("max_stars", max_stars, minimum=4, integer=True, owner=me)
        self.overwrite = parse_overwrite(overwrite)
        self.retries = check_number("retries", retries, minimum=0, integer=True, owner=me)
        self.give_up_after = check_number("give_up_after", give_up_after, minimum=1,
                                          integer=True, allow_none=True, owner=me)
        self.results: dict[str, _solve.SolveResult] = {}
        self._index_files = None

    # -- helpers --------------------------------------------------------------------
    @property
    def index_files(self) -> list:
        """Index files found for the offline backends (see
        :func:`astrodart.astrometry.solve.discover_index_files`)."""
        if self._index_files is None:
            self._index_files = _solve.discover_index_files(self.index_dir)
        return self._index_files

    def backends(self) -> list[str]:
        """Backends that :meth:`run` will try.

        Returns
        -------
        list of str
            Backend names, in the order they are tried.
        """
        if self.backend != "auto":
            return [self.backend]
        return _solve.available_backends(self.index_files, self.api_key)

    def _detection_fwhm(self, i: int) -> float:
        f = self.fwhm[i]
        try:
            f = float(f)
        except (TypeError, ValueError):
            return 3.0
        return f if np.isfinite(f) and f > 0 else 3.0

    def _solve_one(self, path: str, i: int, skip_blind: str | None) -> _solve.SolveResult:
        ccd = read_frame(path)
        fh = FrameHeader(ccd.meta, path)
        scale = self.pixel_scale or fh.pixel_scale
        position = self.position if self.position is not None else fh.coord
        if skip_blind and not scale:
            return _solve.SolveResult(False, "none", skip_blind)
        stars = find_stars(ccd.data, self._detection_fwhm(i), self.threshold, mask=ccd.mask,
                           saturation=frame_saturation(fh, ccd.data), max_stars=self.max_stars)
        xy = np.column_stack([stars["x"], stars["y"]])
        shape = ccd.shape  # (ny, nx) = (NAXIS2, NAXIS1): backends take width = nx
        common = dict(pixel_scale=scale, scale_tolerance=self.scale_tolerance, position=position,
                      radius=self.radius, sip_order=self.sip_order, max_stars=self.max_stars)
        attempts, last = [], None
        for name in self.backends():
            if name == "inprocess":
                res = _solve.solve_in_process(xy, shape, index_files=self.index_files,
                                              time_limit=self.time_limit, **common)
            elif name == "solve-field":
                res = _solve.solve_with_solve_field(xy, shape, flux=stars["flux"],
                                                    index_files=self.index_files or None,
                                                    time_limit=self.time_limit, **common)
            else:
                res = _solve.solve_online(xy, shape, api_key=self.api_key,
                                          timeout=self.online_timeout,
                                          request_timeout=self.request_timeout,
                                          retries=self.retries, **common)
            attempts.append(f"{name}: {'solved' if res.solved else res.reason}")
            last = res
            if res.solved:
                break
        if last is None:
            return _solve.SolveResult(False, "none", "no plate-solving backend available: install "
                                      "astrometry.net index files (or solve-field) or give an "
                                      "api_key for nova.astrometry.net")
        last.attempts = attempts
        if not last.solved and len(attempts) > 1:
            last.reason = " | ".join(attempts)
        return last

    # -- the step -------------------------------------------------------------------
    def run(self) -> list[str]:
        """Solve every frame and write the WCS into the solved ones.

        Returns
        -------
        list of str
            Files that could not be solved (each also reported by an
            :class:`AstrometryFailedWarning` with the reason, and in the run log).
        """
        failed: list[str] = []
        log_path = find_log_path(self.directory)
        blind_timeouts = 0
        skip_blind = None
        t_batch = time.monotonic()
        for i, path in enumerate(self.files):
            t0 = time.monotonic()
            try:
                if not self.overwrite and has_astrodart_wcs(read_header(path)):
                    self.results[path] = _solve.SolveResult(True, "previous",
                                                            "kept the WCS solved earlier")
                    continue
                res = self._solve_one(path, i, skip_blind)
                if res.solved:
                    write_solution(path, res)
            except Exception as exc:  # one bad frame must never stop the batch
                res = _solve.SolveResult(False, "none", f"{type(exc).__name__}: {exc}")
            res.elapsed = time.monotonic() - t0
            self.results[path] = res
            if res.solved:
                if res.reason.startswith("blind search"):  # blind searches can succeed here
                    blind_timeouts = 0
                log.info("%s: solved by %s (%s), %s stars, rms %.2f\", %.3f\"/px, %.2f s", path,
                         res.backend, res.index, res.n_matched, res.rms_arcsec or float("nan"),
                         res.pixel_scale or float("nan"), res.elapsed)
            else:
                failed.append(path)
                warn(res.reason, AstrometryFailedWarning, item=path, stacklevel=3)
                if "blind scale search" in res.reason and "time limit" in res.reason:
                    blind_timeouts += 1
                    give_up = self.give_up_after and blind_timeouts >= self.give_up_after
                    if give_up and not skip_blind:
                        skip_blind = (f"skipped: the previous {blind_timeouts} frames without a "
                                      "pixel scale failed a blind search of "
                                      f"{self.time_limit:g} s; give pixel_scale= (arcsec/px) to "
                                      "try these frames")
            log_event(log_path, step="astrometry", file=path, **res.summary())
        n = len(self.files)
        if n:
            log.info("astrometry: %d/%d solved in %.1f s (%.2f s per frame)", n - len(failed), n,
                     time.monotonic() - t_batch, (time.monotonic() - t_batch) / n)
        return failed

    def to_table(self) -> Table:
        """The solutions so far as a table.

        Returns
        -------
        astropy.table.Table
            One row per file solved so far: ``file``, ``solved``, ``backend``, ``index``,
            ``n_matched``, ``rms_arcsec``, ``pixel_scale`` (arcsec/px), ``center_ra``,
            ``center_dec`` (deg), ``elapsed`` (s), ``reason``.
        """
        rows = []
        for f in self.files:
            r = self.results.get(f)
            if r is None:
                continue
            rows.append({"file": f, "solved": r.solved, "backend": r.backend,
                         "index": r.index or "", "n_matched": r.n_matched if r.n_matched else 0,
                         "rms_arcsec": r.rms_arcsec if r.rms_arcsec else math.nan,
                         "pixel_scale": r.pixel_scale or math.nan,
                         "center_ra": r.center.ra.deg if r.center is not None else math.nan,
                         "center_dec": r.center.dec.deg if r.center is not None else math.nan,
                         "elapsed": r.elapsed, "reason": r.reason})
        names = ["file", "solved", "backend", "index", "n_matched", "rms_arcsec", "pixel_scale",
                 "center_ra", "center_dec", "elapsed", "reason"]
        return Table(rows=rows, names=names) if rows else Table(names=names)

