"""Time stamps (mid-exposure, BJD_TDB), airmass and observatory sites.

BJD_TDB is checked two ways: against astropy computed directly in the test from the
header strings (the brief's reference, < 1 s; in fact < 1 ms), and against an
independent low-precision solar-position formula (catches a wrong sign, a start-of-
exposure time stamp or a missing TDB offset, each worth 10 s or more).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.time import Time

from astrodart.photometry import timing
from astrodart.photometry.sites import (
    SITES,
    UnknownSiteError,
    closest_sites,
    find_site,
    known_sites,
    location_from_lat_lon,
    site_location,
)
from astrodart.third_stage_photometry import get_site_coordinates

HATP27 = SkyCoord("14h51m04.2s", "+05d56m50s", frame="icrs")
STONY_BROOK = EarthLocation.from_geodetic(lon=-73.12 * u.deg, lat=40.91 * u.deg, height=40 * u.m)
# first science frame of the real night: DATE-OBS and EXPTIME as written in its header
START = "2018-04-23T02:55:21.008"
EXPTIME = 20.0


def test_mid_exposure_is_start_plus_half_exptime():
    start = Time(START, scale="utc")
    mid = timing.mid_exposure(start, EXPTIME)
    assert (mid - start).to_value(u.s) == pytest.approx(10.0, abs=1e-6)
    many = timing.mid_exposure(Time([START, START], scale="utc"), np.array([20.0, 60.0]))
    assert np.allclose((many - start).to_value(u.s), [10.0, 30.0])
    with pytest.raises(ValueError):
        timing.mid_exposure(start, -1.0)


def test_bjd_tdb_matches_astropy_for_the_real_first_frame():
    mid = timing.mid_exposure(Time(START, scale="utc"), EXPTIME)
    ours = timing.bjd_tdb(mid, HATP27, STONY_BROOK)
    # astropy, by hand, from the header strings
    t = Time("2018-04-23T02:55:31.008", format="isot", scale="utc", location=STONY_BROOK)
    ltt = t.light_travel_time(HATP27, kind="barycentric")
    reference = (t.tdb + ltt).jd
    assert ours.scale == "tdb"
    assert abs(ours.jd - reference) * 86400 < 1.0
    assert abs(ours.jd - reference) * 86400 < 1e-3  # the same computation, really
    # 02:55:31 UTC is JD 2458231.6219; TDB adds 69 s and the Roemer delay ~ +463 s here
    assert 2458231.627 < ours.jd < 2458231.629


def _approx_roemer_delay(t: Time, target: SkyCoord) -> float:
    """Light travel time Earth -> Sun along the target direction, from the low-precision
    solar coordinates of the Astronomical Almanac (good to ~0.01 deg, 1e-4 au); the Sun is
    taken as the barycentre (up to ~5 light-seconds off)."""
    n = t.utc.jd - 2451545.0
    L = math.radians((280.460 + 0.9856474 * n) % 360)
    g = math.radians((357.528 + 0.9856003 * n) % 360)
    lam = L + math.radians(1.915) * math.sin(g) + math.radians(0.020) * math.sin(2 * g)
    r = 1.00014 - 0.01671 * math.cos(g) - 0.00014 * math.cos(2 * g)
    eps = math.radians(23.439 - 0.0000004 * n)
    sun = r * np.array(
        [math.cos(lam), math.cos(eps) * math.sin(lam), math.sin(eps) * math.sin(lam)]
    )
    earth = -sun  # heliocentric Earth, au, equatorial
    ra, dec = target.ra.radian, target.dec.radian
    nhat = np.array([math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec)])
    return float(earth @ nhat) * 499.004784  # light seconds per au


def test_bjd_tdb_against_an_independent_formula():
    mid = timing.mid_exposure(Time(START, scale="utc"), EXPTIME)
    ours = timing.bjd_tdb(mid, HATP27, STONY_BROOK)
    tdb_minus_utc = 37.0 + 32.184  # TAI-UTC in 2018 plus TT-TAI (TDB-TT < 2 ms)
    approx = mid.utc.jd + (tdb_minus_utc + _approx_roemer_delay(mid, HATP27)) / 86400
    assert abs(ours.jd - approx) * 86400 < 6.0
    # the exposure start would be 10 s off: the test can tell
    start_bjd = timing.bjd_tdb(Time(START, scale="utc"), HATP27, STONY_BROOK)
    assert (ours.jd - start_bjd.jd) * 86400 == pytest.approx(10.0, abs=1e-3)


def test_light_travel_time_sign_changes_over_the_year():
    # target near the ecliptic: the Earth is closer to it in one season, farther in the other
    target = SkyCoord(ra=0 * u.deg, dec=0 * u.deg)
    t = Time(["2018-03-21T00:00:00", "2018-09-22T00:00:00"], scale="utc")
    ltt = timing.light_travel_time(t, target, STONY_BROOK).to_value(u.s)
    assert ltt[0] < -400 and ltt[1] > 400


def test_airmass_matches_astropy_secz_and_hardie():
    t = timing.mid_exposure(Time(["2018-04-23T02:55:21", "2018-04-23T04:17:00"], scale="utc"), 20)
    am = timing.airmass(t, HATP27, STONY_BROOK)
    altaz = HATP27.transform_to(AltAz(obstime=t, location=STONY_BROOK))
    secz = np.asarray(altaz.secz)
    assert np.all(np.abs(am - secz) / secz < 0.01)
    assert np.all((am > 1.0) & (am < 2.0))
    assert timing.hardie_airmass(1.0) == pytest.approx(1.0)
    assert np.isnan(timing.hardie_airmass(-2.0))  # below the horizon
    # the target is rising towards the meridian that night: the airmass falls
    assert am[1] < am[0]


def test_timing_rejects_wrong_types():
    t = Time(START, scale="utc")
    with pytest.raises(TypeError):
        timing.bjd_tdb(t, "14h51m +05d56m", STONY_BROOK)
    with pytest.raises(TypeError):
        timing.bjd_tdb(t, HATP27, [40.91, -73.12, 40])
    with pytest.raises(TypeError):
        timing.bjd_tdb(START, HATP27, STONY_BROOK)


# ----------------------------------------------------------------------------- sites
@pytest.mark.parametrize(
    "name",
    [
        "OT",
        "ot",
        "Observatorio del Teide",
        "Roque de los Muchachos",
        "Calar Alto",
        "La Silla",
        "Paranal",
        "Mauna Kea",
        "Kitt Peak",
        "Lick",
        "McDonald",
        "Palomar",
        "Whipple",
        "Mt Hopkins",
        "Siding Spring",
        "Mt Stony Brook",
        "Mt. Stony Brook",
    ],
)
def test_builtin_sites_resolve_offline(name):
    loc = site_location(name, online=False)
    assert isinstance(loc, EarthLocation)
    assert find_site(name) is not None


def test_site_values_are_right():
    teide = site_location("OT").to_geodetic()
    assert teide.lat.deg == pytest.approx(28.30, abs=0.02)
    assert teide.lon.deg == pytest.approx(-16.51, abs=0.02)  # west is negative
    assert teide.height.to_value(u.m) == pytest.approx(2390, abs=50)
    sbu = site_location("Mt Stony Brook").to_geodetic()
    assert (sbu.lat.deg, sbu.lon.deg, sbu.height.to_value(u.m)) == pytest.approx(
        (40.91, -73.12, 40.0)
    )
    siding = site_location("Siding Spring").to_geodetic()
    assert siding.lat.deg < 0 and siding.lon.deg > 0
    assert len(SITES) == len(set(known_sites()))


def test_unknown_site_lists_the_closest_names():
    with pytest.raises(UnknownSiteError, match="known_sites"):
        site_location("Nowhere Observatory", online=False)
    with pytest.raises(UnknownSiteError):
        get_site_coordinates(observatory_location="surely-not-a-site-xyz").from_name()
    with pytest.raises(UnknownSiteError, match="closest known names: 'Whipple Observatory'") as e:
        site_location("Whiple Observatry", online=False)
    assert len(e.value.suggestions) == 5 and e.value.suggestions[0] == "Whipple Observatory"
    with pytest.raises(UnknownSiteError, match="Observatorio del Teide"):  # a typo is not guessed
        get_site_coordinates(observatory_location="Observatorio del Tiede").from_name()
    assert closest_sites("Stony Brok", n=3)[0].lower() == "stony brook"


@pytest.mark.parametrize(
    "name",
    ["Whipple Observatory", "whipple", "Fred Lawrence Whipple Observatory", "flwo", "FLWO",
     "MicroObservatory", "Mt. Hopkins"],
)
def test_whipple_observatory_resolves_offline(name, no_network):
    # astropy's online registry: 'flwo', lat 31.680944, lon -110.878111, height 2320 m
    loc = get_site_coordinates(observatory_location=name).from_name().to_geodetic()
    assert loc.lat.deg == pytest.approx(31.680944, abs=0.01)
    assert loc.lon.deg == pytest.approx(-110.878111, abs=0.01)
    assert loc.height.to_value(u.m) == pytest.approx(2320, abs=30)


def test_sample_sites_and_astropy_names_resolve_offline(no_network):
    expect = {  # name: (lat, lon east, height m)
        "Stony Brook": (40.91, -73.12, 40),
        "SBU": (40.91, -73.12, 40),
        "ESO La Silla": (-29.2567, -70.73, 2347),
        "lasilla": (-29.2567, -70.73, 2347),
        "Feder Observatory": (46.8668, -96.4533, 312),  # SITELAT 46 52 01, SITELONG -96 27 12
        "ctio": (-30.1653, -70.815, 2215),
        "Kitt Peak National Observatory": (31.9633, -111.6, 2120),
        "Royal Observatory Greenwich": (51.4778, -0.0015, 46),
    }
    for name, (lat, lon, h) in expect.items():
        g = site_location(name).to_geodetic()
        assert (g.lat.deg, g.lon.deg) == pytest.approx((lat, lon), abs=0.01), name
        assert g.height.to_value(u.m) == pytest.approx(h, abs=30), name
    assert all(s.source for s in SITES)  # every entry says where its numbers come from
    with pytest.raises(UnknownSiteError, match="closest known names"):
        site_location("Observatory of Nowhere")  # astropy's registry: its cache only


def test_from_lat_lon_is_lat_lon_height_east_positive():
    loc = get_site_coordinates(coordinates=[40.91, -73.12, 40]).from_lat_lon().to_geodetic()
    assert loc.lat.deg == pytest.approx(40.91)
    assert loc.lon.deg == pytest.approx(-73.12)
    assert loc.height.to_value(u.m) == pytest.approx(40)
    # a longitude in 0..360 is wrapped
    assert location_from_lat_lon([40.91, 286.88, 40]).to_geodetic().lon.deg == pytest.approx(-73.12)
    with pytest.raises(ValueError, match="latitude"):
        location_from_lat_lon([120.0, 10.0, 0.0])
    with pytest.raises(ValueError):
        location_from_lat_lon([1.0])
    with pytest.raises(ValueError):
        get_site_coordinates().from_lat_lon()
    with pytest.raises(ValueError):
        get_site_coordinates().from_name()
