"""Layer 2: a planet's transit ephemeris from the NASA Exoplanet Archive, kept in a cache.

:func:`planet_ephemeris` asks the archive's Planetary Systems Composite Parameters table
(``pscomppars``, one row per planet; Akeson et al. 2013, PASP 125, 989; its TAP
service through astroquery) for the transit mid-time, period and their
errors, with the duration, Rp/Rs, a/Rs and impact parameter where known, and returns an
:class:`astrodart.photometry.transit_model.Ephemeris` for the transit fit's prior. Every
answer is written to the cache folder of :mod:`astrodart.photometry.catalogue_query`
(ECSV, the query in its ``meta``) and reused without the network; offline
(``ASTRODART_OFFLINE=1`` or ``offline=True``) an uncached planet raises
:class:`~astrodart.photometry.catalogue_query.CatalogueUnavailableError`, and a user gives
the ephemeris by hand (``Ephemeris(tc, period, tc_err, period_err)``).

The archive gives ``pl_tranmid`` in BJD (TDB for nearly all planets; the archive's
documentation says so per reference), the time scale of astrodart's light curves.
"""
from __future__ import annotations

import datetime
import logging
import re
from pathlib import Path

import numpy as np
from astropy.table import Table

from astrodart.photometry.catalogue_query import (
    CatalogueUnavailableError,
    _offline_env,
    _write_cache,
    catalogue_cache_dir,
)
from astrodart.photometry.transit_model import Ephemeris

__all__ = ["ARCHIVE_COLUMNS", "planet_ephemeris", "planet_parameters"]

log = logging.getLogger("astrodart.photometry")

#: Columns asked of ``pscomppars`` (NASA Exoplanet Archive column names).
ARCHIVE_COLUMNS = ("pl_name", "pl_tranmid", "pl_tranmiderr1", "pl_tranmiderr2", "pl_orbper",
                   "pl_orbpererr1", "pl_orbpererr2", "pl_trandur", "pl_ratror", "pl_ratdor",
                   "pl_imppar")


def _cache_path(name: str, cache_dir) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    folder = Path(cache_dir) if cache_dir is not None else catalogue_cache_dir()
    return folder / f"nasa_exoplanet_archive_{slug}.ecsv"


def _fetch(name: str, timeout: float) -> Table:
    """One row of ``pscomppars`` for ``name`` (astroquery's TAP client)."""
    from astroquery.ipac.nexsci.nasa_exoplanet_archive import NasaExoplanetArchive

    NasaExoplanetArchive.TIMEOUT = timeout
    safe = name.replace("'", "''")
    return NasaExoplanetArchive.query_criteria(
        table="pscomppars", select=",".join(ARCHIVE_COLUMNS), where=f"pl_name='{safe}'")


def planet_parameters(name: str, *, cache_dir=None, offline: bool | None = None,
                      refresh: bool = False, timeout: float = 60.0) -> dict:
    """A planet's row of the NASA Exoplanet Archive (cached), as plain numbers.

    Parameters
    ----------
    name : str
        The planet as the archive names it, e.g. ``'HAT-P-27 b'``.
    cache_dir : str or pathlib.Path, optional
        Folder of cached answers (default
        :func:`astrodart.photometry.catalogue_query.catalogue_cache_dir`).
    offline : bool, optional
        Never use the network (default: the ``ASTRODART_OFFLINE`` variable).
    refresh : bool
        Ask the archive again even when an answer is cached (ignored offline).
    timeout : float
        Seconds an HTTP request may take.

    Returns
    -------
    dict
        The :data:`ARCHIVE_COLUMNS` (floats, NaN where the archive has none; times BJD,
        periods and durations in days and hours as the archive gives them), and
        ``from_cache`` (bool) and ``cache`` (the file's path).

    Raises
    ------
    ValueError
        An empty name, or a name the archive does not know.
    CatalogueUnavailableError
        Offline or the archive unreachable, and nothing cached for ``name``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name={name!r}: give the planet's archive name, e.g. 'HAT-P-27 b'")
    name = name.strip()
    path = _cache_path(name, cache_dir)
    offline = _offline_env() if offline is None else bool(offline)
    table = None if (refresh and not offline) or not path.is_file() else Table.read(path)
    from_cache = table is not None
    if table is None:
        if offline:
            raise CatalogueUnavailableError(
                f"{name}: offline (ASTRODART_OFFLINE or offline=True) and no cached answer "
                f"at {path}; give the ephemeris yourself: Ephemeris(tc, period, tc_err, "
                "period_err)")
        try:
            table = _fetch(name, timeout)
        except Exception as exc:  # network, HTTP or TAP errors: the same advice
            raise CatalogueUnavailableError(
                f"{name}: the NASA Exoplanet Archive could not be reached ({exc}) and no "
                f"cached answer at {path}") from exc
        if len(table) == 0:
            raise ValueError(f"name={name!r}: not in the NASA Exoplanet Archive's pscomppars "
                             "(spell it as the archive does, e.g. 'HAT-P-27 b')")
        table = Table(table[:1])
        table.meta["query"] = {"service": "NASA Exoplanet Archive TAP", "table": "pscomppars",
                               "pl_name": name, "retrieved": datetime.datetime.now(
                                   datetime.timezone.utc).isoformat(timespec="seconds")}
        _write_cache(table, path)
        log.info("%s: ephemeris cached in %s", name, path)
    row = table[0]
    out = {c: _number(row[c]) if c != "pl_name" else str(row[c]) for c in ARCHIVE_COLUMNS
           if c in table.colnames}
    return {**out, "from_cache": from_cache, "cache": str(path)}


def _number(value) -> float:
    """A float from an archive cell (masked or missing -> NaN; Quantity -> its value)."""
    if np.ma.is_masked(value):
        return float("nan")
    try:
        return float(getattr(value, "value", value))
    except (TypeError, ValueError):
        return float("nan")


def planet_ephemeris(name: str, **kwargs) -> Ephemeris:
    """The linear transit ephemeris of a planet from the NASA Exoplanet Archive (cached).

    Parameters
    ----------
    name : str
        The planet as the archive names it, e.g. ``'HAT-P-27 b'``.
    **kwargs
        ``cache_dir``, ``offline``, ``refresh``, ``timeout`` of :func:`planet_parameters`.

    Returns
    -------
    astrodart.photometry.transit_model.Ephemeris
        ``tc`` (BJD), ``period`` (days) and their 1-sigma errors (the mean of the archive's
        upper and lower errors; 0 where it gives none).

    Raises
    ------
    ValueError
        A name the archive does not know, or no transit mid-time or period for it.
    CatalogueUnavailableError
        Offline or the archive unreachable, and nothing cached.
    """
    p = planet_parameters(name, **kwargs)
    if not (np.isfinite(p.get("pl_tranmid", np.nan)) and np.isfinite(p.get("pl_orbper", np.nan))):
        raise ValueError(f"name={name!r}: the archive gives no transit mid-time or period")

    def err(a, b):
        vals = [abs(v) for v in (p.get(a, np.nan), p.get(b, np.nan)) if np.isfinite(v)]
        return float(np.mean(vals)) if vals else 0.0

    return Ephemeris(p["pl_tranmid"], p["pl_orbper"], err("pl_tranmiderr1", "pl_tranmiderr2"),
                     err("pl_orbpererr1", "pl_orbpererr2"))
