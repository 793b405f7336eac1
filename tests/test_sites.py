"""Observatory sites offline: every site of astropy's registry, the sample-data sites, and
the closest names for an unknown one.

The reference is ``tests/data/astropy_sites.json``: astropy's full site registry (the
astropy-data repository's ``coordinates/sites.json`` at commit 0114fac2, the file
``EarthLocation.of_site`` downloads; astropy >= 6 ships only Greenwich offline), read
here by astropy's own ``SiteRegistry.from_json`` so that its names, aliases, 0..360
longitudes and units are interpreted as astropy interprets them. When astropy's
download cache holds the live registry, it is checked too.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import EarthLocation
from astropy.coordinates.sites import SiteRegistry

from astrodart.photometry.sites import (
    SITES,
    UnknownSiteError,
    closest_sites,
    find_site,
    site_location,
)
from astrodart.third_stage_photometry import get_site_coordinates

REFERENCE = Path(__file__).parent / "data" / "astropy_sites.json"


def _distance_m(a: EarthLocation, b: EarthLocation) -> float:
    return float(np.sqrt((a.x - b.x) ** 2 + (a.y - b.y) ** 2 + (a.z - b.z) ** 2).to_value(u.m))


def _check_registry(registry) -> tuple[int, list]:
    """Every name of an astropy site registry against the table: (names checked, misses)."""
    misses = []
    for name in registry.names:
        site = find_site(name)
        if site is None:
            misses.append((name, "not found"))
            continue
        d = _distance_m(registry[name], site.location)
        if d > 1.0:
            misses.append((name, site.key, round(d, 1)))
    return len(registry.names), misses


def test_every_site_of_astropys_registry_is_found_offline(no_network):
    registry = SiteRegistry.from_json(json.loads(REFERENCE.read_text(encoding="utf-8")))
    sites = json.loads(REFERENCE.read_text(encoding="utf-8"))
    n_names, misses = _check_registry(registry)
    assert misses == []
    assert (len(sites), n_names) == (95, 326)  # astropy-data at 0114fac2: 95 sites, 326 names
    # each astropy site is one entry of ours, which names its astropy key in its source
    ours = {s.key for s in SITES for key in sites if f"coordinates/sites.json {key!r}" in s.source}
    assert len(ours) == 95
    assert len(SITES) == 99  # + Mt Stony Brook, Feder, Sierra Nevada, Mauna Kea
    print(f"\nastropy registry: {len(sites)} sites, {n_names} names, all within 1 m; "
          f"astrodart table: {len(SITES)} sites")


def test_astropys_own_registry_agrees_where_it_is_available():
    from astropy.coordinates import sites as astropy_sites
    from astropy.utils.data import conf

    builtin = astropy_sites._GREENWICH  # astropy's one offline site
    assert _distance_m(builtin, site_location("greenwich", online=False)) < 1.0
    try:  # the live registry, when astropy's download cache holds it (never downloaded here)
        with conf.set_temp("allow_internet", False):
            registry = EarthLocation._get_site_registry()
    except Exception:  # noqa: BLE001 - not cached: Greenwich was the comparison
        return
    if len(registry.names) < 10:  # astropy's offline example registry
        return
    n_names, misses = _check_registry(registry)
    new_upstream = [m for m in misses if m[1] == "not found"]
    assert [m for m in misses if m[1] != "not found"] == []  # a site we know never moved
    assert len(new_upstream) < 0.1 * n_names  # sites added upstream since: online lookup


def test_longitudes_are_east_and_entries_complete():
    for s in SITES:
        assert -90 <= s.lat <= 90 and -180 <= s.lon <= 180, s.key
        assert s.source and s.name, s.key
    assert find_site("Siding Spring").lon > 0 and find_site("ctio").lon < 0
    assert find_site("lick").lon == pytest.approx(238.36333333333332 - 360)


@pytest.mark.parametrize("name", ["Whipple Observatory", "whipple", "flwo", "MicroObservatory"])
def test_whipple_observatory_by_name_offline(name, no_network):
    loc = get_site_coordinates(name).from_name().to_geodetic()  # the name given first
    # astropy-data 'flwo': 31.680944444444446, 249.1225 (= -110.8775), 2320 m
    assert loc.lat.deg == pytest.approx(31.680944444, abs=1e-7)
    assert loc.lon.deg == pytest.approx(-110.8775, abs=1e-7)
    assert loc.height.to_value(u.m) == pytest.approx(2320, abs=0.01)


def test_sample_sites_kept(no_network):
    stony = site_location("Mt Stony Brook").to_geodetic()
    assert (stony.lat.deg, stony.lon.deg, stony.height.to_value(u.m)) == pytest.approx(
        (40.91, -73.12, 40.0))
    feder = site_location("Feder Observatory").to_geodetic()
    assert (feder.lat.deg, feder.lon.deg) == pytest.approx((46.86678, -96.453278))
    assert "m67_bvr" in find_site("La Silla").source
    assert "HAT-P-32" in find_site("Whipple Observatory").source


def test_unknown_names_list_the_closest(no_network):
    with pytest.raises(UnknownSiteError, match="closest known names: 'Whipple Observatory'") as e:
        site_location("Whiple Observatry")
    assert len(e.value.suggestions) == 5
    with pytest.raises(UnknownSiteError) as e:
        get_site_coordinates("Parks").from_name()
    assert "parkes" in str(e.value).lower() and "99 built-in sites" in str(e.value)
    assert "ASTRODART_OFFLINE" in str(e.value)  # why astropy's registry was not asked
    assert closest_sites("Effelsburg", n=1) == ["Effelsberg"]
