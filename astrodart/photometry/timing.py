"""Layer 2: time systems for photometry — mid-exposure, BJD_TDB and airmass.

Pure functions on :class:`astropy.time.Time`, :class:`~astropy.coordinates.SkyCoord`
and :class:`~astropy.coordinates.EarthLocation`; no file I/O, no printing.

Conventions
-----------
* Frame time stamps are taken at **mid-exposure**: the header's exposure start (UTC)
  plus half the exposure time. (AstroDART used the start, which biases every time by
  ``EXPTIME / 2``.)
* ``BJD_TDB`` is the Barycentric Julian Date in the Barycentric Dynamical Time scale
  (Eastman, Siverd & Gaudi 2010, PASP 122, 935): the mid-exposure time converted to TDB
  plus the light travel time from the observatory to the solar-system barycentre along
  the direction of the target (Roemer delay, with astropy's built-in ephemeris), as
  computed by :meth:`astropy.time.Time.light_travel_time`.
* Airmass uses Hardie's (1962) polynomial in ``sec z`` of the unrefracted zenith
  distance (accurate to better than 0.1 % below airmass 6).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from astropy import units as u
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.time import Time, TimeDelta
from astropy.utils import iers

__all__ = ["mid_exposure", "bjd_tdb", "light_travel_time", "airmass", "hardie_airmass"]

log = logging.getLogger("astrodart")


def _as_time(times) -> Time:
    if isinstance(times, Time):
        return times
    if isinstance(times, Sequence) and len(times) and isinstance(times[0], Time):
        return Time(list(times))
    raise TypeError(f"expected an astropy Time (or a list of them), got {type(times).__name__}")


def _check_target_location(target, location) -> None:
    if not isinstance(target, SkyCoord):
        raise TypeError(f"target must be an astropy SkyCoord, got {type(target).__name__}")
    if not isinstance(location, EarthLocation):
        raise TypeError(
            "location must be an astropy EarthLocation (see "
            f"astrodart.photometry.sites.site_location), got {type(location).__name__}"
        )


def mid_exposure(start, exptime) -> Time:
    """Mid-exposure time from the exposure start and the exposure time.

    Parameters
    ----------
    start : astropy.time.Time, scalar or shape (n,)
        Exposure start (any scale; the result keeps it).
    exptime : float or array_like, shape () or (n,)
        Exposure time(s) in seconds (an astropy Quantity in time units is accepted).

    Returns
    -------
    astropy.time.Time
        ``start + exptime / 2``.

    Raises
    ------
    ValueError
        A negative or non-finite exposure time.
    """
    start = _as_time(start)
    if isinstance(exptime, u.Quantity):
        exptime = exptime.to_value(u.s)
    exptime = np.asarray(exptime, dtype=float)
    if np.any(~np.isfinite(exptime)) or np.any(exptime < 0):
        raise ValueError(f"exposure time must be finite and >= 0 s, got {exptime}")
    return start + TimeDelta(exptime / 2.0, format="sec")


def light_travel_time(times, target: SkyCoord, location: EarthLocation) -> TimeDelta:
    """Barycentric light travel time (Roemer delay) toward ``target``.

    Parameters
    ----------
    times : astropy.time.Time, scalar or shape (n,)
        Observation times (UTC or any scale).
    target : astropy.coordinates.SkyCoord
        Direction of the target (scalar).
    location : astropy.coordinates.EarthLocation
        Observatory (east-positive longitude).

    Returns
    -------
    astropy.time.TimeDelta
        Time to add to a TDB time at the observatory to get the time at the barycentre;
        within about +-500 s.
    """
    times = _as_time(times)
    _check_target_location(target, location)
    t = Time(times, location=location)
    # Earth orientation (UT1, polar motion) only moves the observatory by metres here;
    # do not fail offline for frames newer than the bundled IERS tables.
    with iers.conf.set_temp("iers_degraded_accuracy", "warn"):
        return t.light_travel_time(target, kind="barycentric", location=location)


def bjd_tdb(times, target: SkyCoord, location: EarthLocation) -> Time:
    """Barycentric Julian Date in TDB of observations made at ``times``.

    Parameters
    ----------
    times : astropy.time.Time, scalar or shape (n,)
        Observation times — pass mid-exposure times (see :func:`mid_exposure`). Any
        scale (UTC from headers).
    target : astropy.coordinates.SkyCoord
        Target position (ICRS or any frame astropy can transform), scalar.
    location : astropy.coordinates.EarthLocation
        Observatory (east-positive longitude).

    Returns
    -------
    astropy.time.Time
        BJD_TDB (scale ``'tdb'``, format ``'jd'``); ``.jd`` gives the numbers.

    Raises
    ------
    TypeError
        ``target`` or ``location`` of the wrong type.

    Notes
    -----
    ``BJD_TDB = t_TDB + Delta_Roemer`` (Eastman et al. 2010) where the Roemer delay is
    :func:`light_travel_time`. The Shapiro and Einstein terms (< 1 ms) are neglected, as
    in astropy.
    """
    times = _as_time(times)
    ltt = light_travel_time(times, target, location)
    out = Time(times, location=location).tdb + ltt
    out.format = "jd"
    return out


def hardie_airmass(sec_z) -> np.ndarray:
    """Airmass from the secant of the zenith distance (Hardie 1962).

    Parameters
    ----------
    sec_z : array_like
        Secant of the true (unrefracted) zenith distance.

    Returns
    -------
    numpy.ndarray
        ``sec z - 0.0018167 (sec z - 1) - 0.002875 (sec z - 1)**2
        - 0.0008083 (sec z - 1)**3``; NaN where ``sec z < 1`` (below the horizon).

    Notes
    -----
    Hardie, R. H. 1962, in *Astronomical Techniques*, ed. W. A. Hiltner, p. 180.
    """
    s = np.asarray(sec_z, dtype=float)
    d = s - 1.0
    x = s - 0.0018167 * d - 0.002875 * d**2 - 0.0008083 * d**3
    return np.where(s >= 1.0, x, np.nan)


def airmass(times, target: SkyCoord, location: EarthLocation) -> np.ndarray:
    """Airmass of ``target`` seen from ``location`` at ``times``.

    Parameters
    ----------
    times : astropy.time.Time, scalar or shape (n,)
        Observation times (mid-exposure).
    target : astropy.coordinates.SkyCoord
        Target position, scalar.
    location : astropy.coordinates.EarthLocation
        Observatory.

    Returns
    -------
    numpy.ndarray, shape () or (n,)
        Hardie (1962) airmass of the unrefracted altitude; NaN below the horizon.
    """
    times = _as_time(times)
    _check_target_location(target, location)
    with iers.conf.set_temp("iers_degraded_accuracy", "warn"):
        altaz = target.transform_to(AltAz(obstime=times, location=location, pressure=0 * u.hPa))
    return hardie_airmass(1.0 / np.sin(altaz.alt.radian))
