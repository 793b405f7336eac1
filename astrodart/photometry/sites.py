"""Observatory locations, offline.

A table of observatories shipped with astrodart (``astrodart/data/sites.json``): every
site of astropy's site registry (the astropy-data repository's
``coordinates/sites.json``, which :meth:`astropy.coordinates.EarthLocation.of_site`
downloads; astropy 8 ships only Greenwich), under astropy's keys, names and aliases and
at astropy's coordinates, plus the sites of the sample nights (Mt Stony Brook, Whipple
Observatory / MicroObservatory, ESO La Silla, Feder Observatory) and a few more, so that
``obs_location='Whipple Observatory'`` works without a network. Each entry says where its
numbers come from (``source``). Names are matched case-insensitively, ignoring spaces and
punctuation, against each site's key, name and aliases. Other names are looked up in
astropy's site registry (sites added upstream since): from astropy's download cache when
it holds the registry, and over the network only when downloads are allowed (not with
``ASTRODART_OFFLINE=1``). An unknown name raises :class:`UnknownSiteError` listing the
five closest known names.

Coordinates are geodetic (WGS84), longitude **east-positive** in degrees, height in
metres above the ellipsoid (to a few metres). A kilometre of error in the site moves a
BJD_TDB by at most 3 microseconds, so this precision is ample for timing.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from dataclasses import dataclass
from importlib import resources

from astropy import units as u
from astropy.coordinates import EarthLocation, UnknownSiteException

__all__ = [
    "Site",
    "SITES",
    "UnknownSiteError",
    "site_location",
    "find_site",
    "closest_sites",
    "known_sites",
    "location_from_lat_lon",
    "resolve_location",
]

log = logging.getLogger("astrodart")


@dataclass(frozen=True)
class Site:
    """One observatory of the built-in table.

    Parameters
    ----------
    key : str
        Short name (e.g. ``'OT'``).
    name : str
        Full name.
    lat, lon : float
        Geodetic latitude and east-positive longitude, degrees.
    height : float
        Height above the WGS84 ellipsoid, metres.
    aliases : tuple of str
        Other names accepted for the site.
    source : str
        Where the numbers come from.
    """

    key: str
    name: str
    lat: float
    lon: float
    height: float
    aliases: tuple[str, ...] = ()
    source: str = ""

    @property
    def location(self) -> EarthLocation:
        """The site as an :class:`~astropy.coordinates.EarthLocation`."""
        return EarthLocation.from_geodetic(
            lon=self.lon * u.deg, lat=self.lat * u.deg, height=self.height * u.m
        )


def _load_sites() -> tuple[Site, ...]:
    text = resources.files("astrodart").joinpath("data/sites.json").read_text(encoding="utf-8")
    return tuple(
        Site(key, d["name"], float(d["latitude"]), float(d["longitude"]),
             float(d["elevation"]), tuple(d.get("aliases", ())), d.get("source", ""))
        for key, d in json.loads(text).items()
    )


#: The built-in observatories (``astrodart/data/sites.json``; each with its ``source``).
SITES: tuple[Site, ...] = _load_sites()


class UnknownSiteError(KeyError):
    """An observatory name is neither in the built-in table nor in astropy's registry.

    The message lists the closest known names (also in :attr:`suggestions`).

    Parameters
    ----------
    message : str
        What was asked for and the closest known names.
    suggestions : tuple of str, optional
        The closest known names, best first (kept as :attr:`suggestions`).
    """

    def __init__(self, message: str, suggestions: tuple[str, ...] = ()):
        super().__init__(message)
        self.suggestions = tuple(suggestions)

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower().replace("ñ", "n"))


_INDEX: dict[str, Site] = {}
_DISPLAY: dict[str, str] = {}  # normalised name -> name as written
for _s in SITES:
    for _n in (_s.name, _s.name.split(" (")[0], *_s.aliases, _s.key):  # keys: often lower case
        _INDEX.setdefault(_norm(_n), _s)
        _DISPLAY.setdefault(_norm(_n), _n)


def known_sites() -> list[str]:
    """Keys of the built-in observatories.

    Returns
    -------
    list of str
        E.g. ``['OT', 'ORM', ...]``.
    """
    return [s.key for s in SITES]


def find_site(name: str) -> Site | None:
    """The built-in :class:`Site` of a name.

    Parameters
    ----------
    name : str
        Key or alias (case, spaces and punctuation ignored).

    Returns
    -------
    Site or None
        None when the name is not in the table.
    """
    return _INDEX.get(_norm(str(name)))


def site_location(name: str, online: bool = True) -> EarthLocation:
    """Location of an observatory by name.

    Parameters
    ----------
    name : str
        Key, name or alias of a built-in site (``'OT'``, ``'Roque de los Muchachos'``,
        ``'Whipple Observatory'``, ``'flwo'``, ``'Mt Stony Brook'`` ...; case, spaces
        and punctuation ignored), or any name of astropy's site registry.
    online : bool
        Try astropy's registry for names not in the table: its cached copy, and the
        network unless ``ASTRODART_OFFLINE`` is set.

    Returns
    -------
    astropy.coordinates.EarthLocation

    Raises
    ------
    UnknownSiteError
        The name is unknown (the message lists the 5 closest known names).
    """
    site = find_site(name)
    if site is not None:
        return site.location
    if online:
        download = os.environ.get("ASTRODART_OFFLINE", "").strip().lower() not in (
            "1", "true", "yes")
        try:
            from astropy.utils.data import conf

            with conf.set_temp("allow_internet", download):
                loc = EarthLocation.of_site(str(name))
            log.info("site %r taken from astropy's site registry", name)
            return loc
        except UnknownSiteException:
            reason = "not in astropy's registry either"
        except Exception as exc:  # URLError when offline without a cached registry, ...
            reason = (f"astropy's registry unavailable: {type(exc).__name__}" if download
                      else "astropy's registry not in its cache, ASTRODART_OFFLINE set")
    else:
        reason = "astropy's registry not consulted"
    close = closest_sites(name)
    raise UnknownSiteError(
        f"unknown observatory {name!r} ({reason}); closest known names: "
        f"{', '.join(repr(c) for c in close)}; known_sites() lists all {len(SITES)} built-in "
        "sites; or give [lat_deg, lon_deg_east, height_m]",
        close,
    )


def closest_sites(name: str, n: int = 5) -> list[str]:
    """The known site names closest to a name (case, spaces and punctuation ignored).

    Parameters
    ----------
    name : str
        A (misspelt) observatory name.
    n : int
        How many names to return.

    Returns
    -------
    list of str
        Up to ``n`` names (or aliases) of different built-in sites, closest first.
    """
    key = _norm(str(name))
    out: dict[str, str] = {}  # site key -> closest of its names
    for c in difflib.get_close_matches(key, list(_DISPLAY), n=len(_DISPLAY), cutoff=0.0):
        out.setdefault(_INDEX[c].key, _DISPLAY[c])
        if len(out) == n:
            break
    return list(out.values())


def location_from_lat_lon(coordinates) -> EarthLocation:
    """Location from ``[lat_deg, lon_deg, height_m]`` (east-positive longitude).

    Parameters
    ----------
    coordinates : sequence of 2 or 3 numbers
        Latitude (deg, -90..90), longitude (deg, east-positive; west is negative) and
        optionally the height in metres (default 0).

    Returns
    -------
    astropy.coordinates.EarthLocation

    Raises
    ------
    ValueError
        Wrong length, non-numeric values or a latitude outside -90..90.
    """
    try:
        vals = [float(v) for v in coordinates]
    except (TypeError, ValueError):
        raise ValueError(
            f"site coordinates must be [lat_deg, lon_deg, height_m] numbers, got {coordinates!r}"
        ) from None
    if len(vals) not in (2, 3):
        raise ValueError(
            f"site coordinates must be [lat_deg, lon_deg, height_m], got {coordinates!r}"
        )
    lat, lon = vals[0], vals[1]
    height = vals[2] if len(vals) == 3 else 0.0
    if not -90 <= lat <= 90:
        raise ValueError(f"latitude {lat} outside -90..90 deg: the order is [lat, lon, height]")
    if not -360 <= lon <= 360:
        raise ValueError(f"longitude {lon} outside -360..360 deg")
    return EarthLocation.from_geodetic(
        lon=((lon + 180) % 360 - 180) * u.deg, lat=lat * u.deg, height=height * u.m
    )


def resolve_location(obs_location, header=None) -> EarthLocation:
    """The observatory from a name, coordinates, a location or a frame header.

    Parameters
    ----------
    obs_location : str, sequence of float, EarthLocation or None
        A site name (see :func:`site_location`), ``[lat_deg, lon_deg, height_m]`` (see
        :func:`location_from_lat_lon`) or an EarthLocation (returned as is).
    header : astrodart.frames.header.FrameHeader, optional
        Used when ``obs_location`` is None: its ``location`` (site keywords).

    Returns
    -------
    astropy.coordinates.EarthLocation

    Raises
    ------
    UnknownSiteError
        Unknown site name.
    ValueError
        Malformed coordinates, or nothing gives the site.
    """
    if isinstance(obs_location, EarthLocation):
        return obs_location
    if isinstance(obs_location, str):
        return site_location(obs_location)
    if obs_location is not None:
        return location_from_lat_lon(obs_location)
    if header is not None:
        loc = header.location
        if loc is not None:
            log.info("observatory location taken from the header of %s", header.path)
            return loc
    raise ValueError(
        "the observatory location is unknown: pass obs_location= (a site name such "
        "as 'OT', [lat_deg, lon_deg, height_m], or an EarthLocation); the frames "
        "carry no site keywords"
    )
