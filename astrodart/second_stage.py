"""Stage 2 (AstroDART-compatible): seeing, plate solving and a quick look in DS9.

The names are AstroDART's, so an AstroDART notebook keeps working::

    from astrodart.second_stage import *
    fwhm = get_fwhm(files).estimate_fwhm()             # one FWHM per file, pixels
    failed = astrometry(directory, files, api_key, fwhm).run()
    check_ds9(files[0])

What changed under the names (see ``API.md``, "Known defects of the original"):

* ``get_fwhm`` measures a true FWHM: a pixel-integrated elliptical Moffat fitted to
  isolated, unsaturated stars (:func:`astrodart.sources.stars.measure_fwhm`), not a
  bounding box averaged across files. It also gives ellipticity, and arcseconds when the
  pixel scale is in the header.
* ``astrometry`` solves offline first (the in-process astrometry.net engine with local
  index files, or ``solve-field``), online through nova.astrometry.net only as a
  fallback when an API key is known. The pixel FWHM is used as is for star finding
  (never multiplied by arcsec/px); the image width is NAXIS1 and the height NAXIS2. The
  WCS is written into each solved file atomically, pixel data untouched, with the
  solver, index, matched stars and residual rms in the header and in the run log. A
  frame that cannot be solved is reported with the reason and never stops the batch.

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
import shutil
import subprocess
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from astrodart import __version__
from astrodart.astrometry import solve as _solve
from astrodart.sources.stars import NoStarsWarning, find_stars, measure_fwhm, saturation_level
from astrodart.frames.io import FrameError, image_hdu_index, read_frame, read_header, write_hdulist
from astrodart.frames.header import FrameHeader
from astrodart.pipeline.step import find_log_path, log_event, parse_overwrite

__all__ = [
    "AstrometryFailedWarning",
    "DS9NotInstalledWarning",
    "FWHMFailedWarning",
    "astrometry",
    "check_ds9",
    "get_fwhm",
    "has_astrodart_wcs",
    "write_solution",
]

log = logging.getLogger("astrodart.second_stage")


class AstrometryFailedWarning(UserWarning):
    """A frame could not be plate-solved; the message names the file and the reason."""


class FWHMFailedWarning(UserWarning):
    """No FWHM could be measured on a frame; its value is NaN."""


class DS9NotInstalledWarning(UserWarning):
    """SAOImage DS9 is not installed (or not on the PATH)."""


def _frame_saturation(fh: FrameHeader, data) -> float | None:
    # the header's level (SATURATE/DATAMAX) when given, else the plateau of identical
    # maximum values that saturated pixels leave in raw frames
    level = getattr(fh, "saturation", None)
    return float(level) if level else saturation_level(data)


def _frame_pixel_scale(fh: FrameHeader) -> float | None:
    """Arcsec/px from a celestial WCS in the header when there is one (a plate solution
    beats a nominal scale), else from the scale keywords; None if unknown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            w = WCS(fh.header)
        except Exception:  # malformed WCS keywords: fall back to the scale keywords
            w = None
    if w is not None and w.has_celestial:
        return float(np.mean(proj_plane_pixel_scales(w.celestial)) * 3600.0)
    return fh.pixel_scale


# ------------------------------------------------------------------------------ FWHM
class get_fwhm:
    """Measure the FWHM (seeing) of each frame.

    Parameters
    ----------
    files : sequence of str or pathlib.Path
        FITS frames.
    fwhm_guess : float, optional
        Starting FWHM in pixels (see :func:`astrodart.sources.stars.measure_fwhm`).
    threshold : float
        Detection threshold in sigma of the filtered background.
    max_stars : int
        Fit at most this many isolated, unsaturated stars per frame.
    min_snr : float
        Minimum signal-to-noise of a fitted star.
    saturation : float, optional
        Saturation level in data units; default from the header or the frame's plateau.

    Attributes
    ----------
    results : dict
        File -> :class:`~astrodart.sources.stars.FWHMResult` (None when the frame
        could not be read), filled by :meth:`estimate_fwhm`.

    Examples
    --------
    >>> fw = get_fwhm(files)                 # doctest: +SKIP
    >>> fwhm_px = fw.estimate_fwhm()         # doctest: +SKIP
    >>> fw.fwhm_arcsec, fw.ellipticity       # doctest: +SKIP
    """

    def __init__(self, files: Sequence, *, fwhm_guess: float | None = None, threshold: float = 5.0,
                 max_stars: int = 25, min_snr: float = 20.0, saturation: float | None = None):
        if isinstance(files, (str, Path)):
            files = [files]
        self.files = [str(f) for f in files]
        self.fwhm_guess = fwhm_guess
        self.threshold = float(threshold)
        self.max_stars = int(max_stars)
        self.min_snr = float(min_snr)
        self.saturation = saturation
        self.results: dict = {}
        self.pixel_scales: dict[str, float | None] = {}

    def _measure(self, path: str):
        ccd = read_frame(path)
        fh = FrameHeader(ccd.meta, path)
        self.pixel_scales[path] = _frame_pixel_scale(fh)
        sat = self.saturation if self.saturation is not None else _frame_saturation(fh, ccd.data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoStarsWarning)
            return measure_fwhm(ccd.data, fwhm_guess=self.fwhm_guess, threshold=self.threshold,
                                saturation=sat, max_stars=self.max_stars, min_snr=self.min_snr,
                                mask=ccd.mask)

    def estimate_fwhm(self) -> list[float]:
        """Measure every frame.

        Returns
        -------
        list of float
            FWHM in pixels, one per file in input order; NaN (with a
            :class:`FWHMFailedWarning`) for a frame that is unreadable or has no usable star.
        """
        out = []
        for f in self.files:
            try:
                res = self._measure(f)
            except (FrameError, OSError, ValueError) as exc:
                warnings.warn(FWHMFailedWarning(f"{f}: {exc}"), stacklevel=2)
                self.results[f] = None
                out.append(float("nan"))
                continue
            self.results[f] = res
            if not np.isfinite(res.fwhm):
                warnings.warn(FWHMFailedWarning(
                    f"{f}: no isolated, unsaturated star with S/N >= {self.min_snr:g} "
                    f"({len(res.detections)} detections)"), stacklevel=2)
            log.info("%s: FWHM %.2f px from %d stars", f, res.fwhm, res.n_stars)
            out.append(float(res.fwhm))
        return out

    def _per_file(self, attr):
        if not self.results:
            self.estimate_fwhm()
        return [float(getattr(self.results[f], attr)) if self.results.get(f) else float("nan")
                for f in self.files]

    @property
    def fwhm(self) -> list[float]:
        """FWHM per file, pixels (measures on first use)."""
        return self._per_file("fwhm")

    @property
    def ellipticity(self) -> list[float]:
        """Median ``1 - minor/major`` per file (measures on first use)."""
        return self._per_file("ellipticity")

    @property
    def fwhm_arcsec(self) -> list[float]:
        """FWHM per file in arcseconds (pixel scale from the frame's WCS if solved, else
        from its scale keywords), NaN where the scale is unknown."""
        px = self.fwhm
        return [p * self.pixel_scales[f] if self.pixel_scales.get(f) else float("nan")
                for f, p in zip(self.files, px)]

    def to_table(self) -> Table:
        """One row per file: ``file``, ``fwhm`` (px), ``fwhm_err`` (px), ``fwhm_arcsec``,
        ``ellipticity``, ``beta`` (Moffat index), ``n_stars``."""
        fw = self.fwhm
        t = Table({"file": self.files, "fwhm": fw, "fwhm_err": self._per_file("fwhm_err"),
                   "fwhm_arcsec": self.fwhm_arcsec, "ellipticity": self.ellipticity,
                   "beta": self._per_file("beta"),
                   "n_stars": [self.results[f].n_stars if self.results.get(f) else 0
                               for f in self.files]})
        t["fwhm"].unit = t["fwhm_err"].unit = u.pix
        t["fwhm_arcsec"].unit = u.arcsec
        return t


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

    Returns
    -------
    bool
        True when ``ASTSOLVR`` is present and the header has a valid celestial WCS.
    """
    if "ASTSOLVR" not in header:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
        :func:`astrodart.pipeline.step.find_log_path` from here.
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
        if isinstance(files, (str, Path)):
            files = [files]
        self.files = [str(f) for f in files]
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
        self.index_dir = index_dir
        self.pixel_scale = pixel_scale
        self.scale_tolerance = float(scale_tolerance)
        self.position = _as_coord(position)
        self.radius = radius
        self.time_limit = float(time_limit)
        self.sip_order = int(sip_order)
        self.threshold = float(threshold)
        self.max_stars = int(max_stars)
        self.overwrite = parse_overwrite(overwrite)
        self.online_timeout = float(online_timeout)
        self.request_timeout = float(request_timeout)
        self.retries = int(retries)
        self.give_up_after = give_up_after
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
        """Backends that :meth:`run` will try, in order."""
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
                           saturation=_frame_saturation(fh, ccd.data), max_stars=self.max_stars)
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
                warnings.warn(AstrometryFailedWarning(f"{path}: {res.reason}"), stacklevel=2)
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
        """One row per file solved so far: file, solved, backend, index, n_matched,
        rms_arcsec, pixel_scale, center_ra, center_dec, elapsed, reason."""
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


# ------------------------------------------------------------------------------- DS9
class check_ds9:
    """Open an image in SAOImage DS9 if it is installed.

    The viewer is started in the background (its own session, so closing the notebook
    does not kill it). When DS9 is not on the PATH, a :class:`DS9NotInstalledWarning`
    says so and nothing else happens.

    Parameters
    ----------
    image : str or pathlib.Path
        FITS file to show.
    executable : str
        Program name or path of DS9.
    zscale : bool
        Ask DS9 for a zscale stretch.

    Attributes
    ----------
    opened : bool
        True when DS9 was started.
    process : subprocess.Popen or None
        The DS9 process.

    Raises
    ------
    FileNotFoundError
        ``image`` does not exist.
    """

    def __init__(self, image: str | Path, *, executable: str = "ds9", zscale: bool = True):
        self.image = str(image)
        self.opened = False
        self.process = None
        if not Path(self.image).exists():
            raise FileNotFoundError(f"{self.image}: file does not exist")
        exe = shutil.which(executable)
        if exe is None:
            warnings.warn(DS9NotInstalledWarning(
                f"DS9 is not installed (no '{executable}' on the PATH), so {self.image} was not "
                "opened; install SAOImage DS9 "
                "(https://sites.google.com/cfa.harvard.edu/saoimageds9) "
                "or look at the frame with astrodart's plotting helpers"), stacklevel=2)
            return
        cmd = [exe, self.image] + (["-zscale"] if zscale else [])
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        self.opened = True
        log.info("opened %s in DS9 (pid %d)", self.image, self.process.pid)
