"""Layer 2: plate solving through nova.astrometry.net (astroquery), the online fallback.

A star list (not the image) is sent with an API key; every HTTP request has a timeout,
network errors are retried, and the solve itself has a time limit.

References
----------
Lang, D., Hogg, D. W., Mierle, K., Blanton, M. & Roweis, S. 2010, AJ 139, 1782,
"Astrometry.net: blind astrometric calibration of arbitrary astronomical images".
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from numpy.typing import ArrayLike

from astrodart.astrometry.index import _default_radius
from astrodart.astrometry.result import SolveResult, _check_shape, _package_version, _xy_array
from astrodart.astrometry.verify import verify_wcs
from astrodart.exceptions import quiet

__all__ = ["solve_online"]

log = logging.getLogger("astrodart.astrometry")

def _configured_api_key() -> str:
    """The nova.astrometry.net API key astroquery is configured with ('' when none).

    Importing ``astroquery.astrometry_net`` costs ~2 s (it loads astroquery's HTTP stack),
    so when it is not loaded yet the key is read from astroquery's configuration file
    (``[astrometry_net] api_key`` in ``astroquery.cfg`` of astropy's configuration folder,
    where astroquery's ``conf`` reads it from).
    """
    import sys

    if "astroquery.astrometry_net" in sys.modules:
        try:
            return str(sys.modules["astroquery.astrometry_net"].conf.api_key or "")
        except Exception:  # its configuration unreadable
            return ""
    from astropy.config import get_config

    try:  # the section astroquery's ConfigItem reads: astroquery.cfg in astropy's folder
        return str(get_config("astroquery.astrometry_net").get("api_key", "") or "").strip()
    except Exception:  # the configuration file unreadable
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
    tried: list[str] = []
    with conf.set_temp("api_key", key):
        ast = client if client is not None else _nova_client(AstrometryNetClass, request_timeout)
        header = _submit(ast, xy, (ny, nx), settings, timeout, retries, retry_wait, tried)

    def failed(reason):
        return SolveResult(False, backend, reason, solver=solver, elapsed=time.monotonic() - t0,
                           attempts=tried)

    if isinstance(header, str):
        return failed(header)
    if header is None:
        return failed(f"nova.astrometry.net unreachable after {retries + 1} "
                      f"attempts ({tried[-1] if tried else ''})")
    if not header:
        return failed("nova.astrometry.net found no solution")
    with quiet(FITSFixedWarning):
        wcs = WCS(fits.Header(header))
    if not wcs.has_celestial:
        return failed("nova.astrometry.net returned a header without a WCS")
    _, _, center, scale = verify_wcs(wcs, xy[:0], SkyCoord([], [], unit="deg"), (ny, nx))
    return SolveResult(True, backend, "", wcs, solver, "nova.astrometry.net", None, None, None,
                       scale, center, time.monotonic() - t0, tried)


def _submit(ast, xy, shape, settings: dict, timeout, retries, retry_wait, tried: list):
    """Send the star list, retrying network errors (each noted in ``tried``).

    Returns the solution header (empty when the service found none), None when every
    attempt failed on the network, or the reason (str) of a definitive failure.
    """
    import requests
    from astroquery.exceptions import TimeoutError as AQTimeoutError

    ny, nx = shape
    for attempt in range(retries + 1):
        try:
            return ast.solve_from_source_list(xy[:, 0] + 1.0, xy[:, 1] + 1.0, nx, ny,
                                              solve_timeout=timeout, verbose=False, **settings)
        except AQTimeoutError as exc:
            sub = exc.args[1] if len(exc.args) > 1 else "?"
            return (f"nova.astrometry.net did not finish within {timeout:g} s "
                    f"(submission {sub})")
        except requests.exceptions.RequestException as exc:  # network: retry
            tried.append(f"attempt {attempt + 1}: {type(exc).__name__}: {exc}")
            log.warning("nova.astrometry.net: %s", tried[-1])
            ast._session_id = None  # log in again on the next attempt
            if attempt < retries:
                time.sleep(retry_wait)
        except (RuntimeError, ValueError, KeyError) as exc:
            return f"nova.astrometry.net: {type(exc).__name__}: {exc}"
    return None
