"""Observatory locations, offline.

A small built-in table of common observatories (and the teaching observatories whose
nights ship with astrodart), so that ``obs_location='OT'`` works without a network.
Names are matched case-insensitively, ignoring spaces and punctuation, against each
site's key and aliases. Names that are not in the table are looked up in astropy's
site registry (:meth:`astropy.coordinates.EarthLocation.of_site`), which needs a
network connection the first time.

Coordinates are geodetic (WGS84), longitude **east-positive** in degrees, height in
metres above the ellipsoid (to a few metres). A kilometre of error in the site moves a
BJD_TDB by at most 3 microseconds, so this precision is ample for timing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from astropy import units as u
from astropy.coordinates import EarthLocation

__all__ = [
    "Site",
    "SITES",
    "UnknownSiteError",
    "site_location",
    "find_site",
    "known_sites",
    "location_from_lat_lon",
]

log = logging.getLogger("astrodart")


@dataclass(frozen=True)
class Site:
    """One observatory of the built-in table.

    Attributes
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
    """

    key: str
    name: str
    lat: float
    lon: float
    height: float
    aliases: tuple[str, ...] = ()

    @property
    def location(self) -> EarthLocation:
        """The site as an :class:`~astropy.coordinates.EarthLocation`."""
        return EarthLocation.from_geodetic(
            lon=self.lon * u.deg, lat=self.lat * u.deg, height=self.height * u.m
        )


#: The built-in observatories (published geodetic positions, rounded to ~10 m).
SITES: tuple[Site, ...] = (
    Site(
        "OT",
        "Observatorio del Teide (Tenerife)",
        28.3003,
        -16.5097,
        2390.0,
        ("teide", "observatorio del teide", "izana", "izaña", "tenerife", "iac80", "tcs"),
    ),
    Site(
        "ORM",
        "Observatorio del Roque de los Muchachos (La Palma)",
        28.7606,
        -17.8815,
        2332.0,
        ("roque de los muchachos", "lapalma", "la palma", "wht", "gtc"),
    ),
    Site("CAHA", "Calar Alto Observatory", 37.2236, -2.5461, 2168.0, ("calar alto", "calaralto")),
    Site("OSN", "Observatorio de Sierra Nevada", 37.0642, -3.3847, 2896.0, ("sierra nevada",)),
    Site(
        "OAJ", "Observatorio Astrofisico de Javalambre", 40.0425, -1.0164, 1957.0, ("javalambre",)
    ),
    Site(
        "LASILLA",
        "ESO La Silla Observatory",
        -29.2611,
        -70.7314,
        2400.0,
        ("la silla", "eso la silla", "lso"),
    ),
    Site(
        "PARANAL",
        "ESO Paranal Observatory (VLT)",
        -24.6272,
        -70.4042,
        2635.0,
        ("cerro paranal", "vlt", "eso paranal"),
    ),
    Site(
        "CTIO",
        "Cerro Tololo Inter-American Observatory",
        -30.1694,
        -70.8064,
        2207.0,
        ("cerro tololo", "tololo"),
    ),
    Site(
        "MKO",
        "Mauna Kea Observatories",
        19.8206,
        -155.4681,
        4205.0,
        ("mauna kea", "maunakea", "keck", "cfht", "subaru", "gemini north"),
    ),
    Site(
        "KPNO",
        "Kitt Peak National Observatory",
        31.9583,
        -111.6000,
        2096.0,
        ("kitt peak", "kittpeak"),
    ),
    Site(
        "LICK",
        "Lick Observatory (Mt Hamilton)",
        37.3414,
        -121.6429,
        1283.0,
        ("lick observatory", "mt hamilton", "mount hamilton"),
    ),
    Site(
        "MCDONALD",
        "McDonald Observatory",
        30.6714,
        -104.0222,
        2070.0,
        ("mcdonald observatory", "mt locke"),
    ),
    Site(
        "PALOMAR",
        "Palomar Observatory",
        33.3564,
        -116.8650,
        1712.0,
        ("palomar observatory", "mt palomar", "mount palomar"),
    ),
    Site(
        "FLWO",
        "Fred Lawrence Whipple Observatory (Mt Hopkins)",
        31.6808,
        -110.8783,
        2344.0,
        ("whipple", "mt hopkins", "mount hopkins", "mmt", "microobservatory", "amado"),
    ),
    Site(
        "SSO",
        "Siding Spring Observatory",
        -31.2733,
        149.0644,
        1165.0,
        ("siding spring", "sidingspring", "aat"),
    ),
    Site("APO", "Apache Point Observatory", 32.7803, -105.8203, 2788.0, ("apache point",)),
    Site(
        "GREENWICH",
        "Royal Observatory Greenwich",
        51.4769,
        -0.0005,
        46.0,
        ("royal observatory greenwich",),
    ),
    Site(
        "MSBO",
        "Mt Stony Brook Observatory (Stony Brook University)",
        40.91,
        -73.12,
        40.0,
        ("mt stony brook", "mount stony brook", "stony brook", "sbu"),
    ),
)


class UnknownSiteError(KeyError):
    """An observatory name is neither in the built-in table nor in astropy's registry."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower().replace("ñ", "n"))


_INDEX: dict[str, Site] = {}
for _s in SITES:
    for _n in (_s.key, _s.name, *_s.aliases):
        _INDEX.setdefault(_norm(_n), _s)


def known_sites() -> list[str]:
    """Keys of the built-in observatories, e.g. ``['OT', 'ORM', ...]``."""
    return [s.key for s in SITES]


def find_site(name: str) -> Site | None:
    """The built-in :class:`Site` called ``name`` (key or alias, any case), or None."""
    return _INDEX.get(_norm(str(name)))


def site_location(name: str, online: bool = True) -> EarthLocation:
    """Location of an observatory by name.

    Parameters
    ----------
    name : str
        Key or alias of a built-in site (``'OT'``, ``'Roque de los Muchachos'``,
        ``'Mt Stony Brook'`` ...; case, spaces and punctuation ignored), or any name of
        astropy's site registry.
    online : bool
        Try astropy's registry (may need the network) for names not in the table.

    Returns
    -------
    astropy.coordinates.EarthLocation

    Raises
    ------
    UnknownSiteError
        The name is unknown (the message lists the built-in keys).
    """
    site = find_site(name)
    if site is not None:
        return site.location
    if online:
        try:
            loc = EarthLocation.of_site(str(name))
            log.info("site %r taken from astropy's site registry", name)
            return loc
        except Exception as exc:  # UnknownSiteException, URLError when offline, ...
            reason = f"astropy's registry: {type(exc).__name__}"
    else:
        reason = "astropy's registry not consulted"
    raise UnknownSiteError(
        f"unknown observatory {name!r} ({reason}); built-in sites: {', '.join(known_sites())}; "
        "or give [lat_deg, lon_deg_east, height_m]"
    )


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
