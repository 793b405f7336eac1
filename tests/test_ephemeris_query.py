"""The planet's ephemeris from the NASA Exoplanet Archive: cache, offline rule, parsing.

No test touches the network. The archive's answer is replaced by a STAND-IN table in the
archive's column names, holding the HAT-P-27 b ephemeris of Béky et al. (2011) that the
real-night tests use (tc, period); its error columns are illustrative.
"""
from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from astrodart.photometry import ephemeris_query as E
from astrodart.photometry.catalogue_query import CatalogueUnavailableError

TC, PERIOD = 2455186.01879, 3.0395803  # Béky et al. 2011


def _stand_in(name, timeout):
    calls.append(name)
    return Table({"pl_name": [name], "pl_tranmid": [TC], "pl_tranmiderr1": [0.00054],
                  "pl_tranmiderr2": [-0.00054], "pl_orbper": [PERIOD],
                  "pl_orbpererr1": [0.000012], "pl_orbpererr2": [-0.000012],
                  "pl_trandur": [1.68], "pl_ratror": [0.1186], "pl_ratdor": [9.65],
                  "pl_imppar": [np.ma.masked]})


calls: list = []


def test_query_is_cached_and_reused_offline(tmp_path, monkeypatch):
    calls.clear()
    monkeypatch.setattr(E, "_fetch", _stand_in)
    eph = E.planet_ephemeris("HAT-P-27 b", cache_dir=tmp_path, offline=False)
    assert (eph.tc, eph.period) == (TC, PERIOD)
    assert eph.tc_err == pytest.approx(0.00054) and eph.period_err == pytest.approx(1.2e-5)
    # the night of 2018-04-23: the transit the real-night tests predict
    epoch, t_pred, _ = eph.predict(2458231.68)
    assert t_pred == pytest.approx(TC + round((2458231.68 - TC) / PERIOD) * PERIOD)
    again = E.planet_parameters("HAT-P-27 b", cache_dir=tmp_path, offline=True)
    assert again["from_cache"] and calls == ["HAT-P-27 b"]       # no second request
    assert np.isnan(again["pl_imppar"]) and again["pl_ratror"] == pytest.approx(0.1186)
    cached = Table.read(again["cache"])
    assert cached.meta["query"]["table"] == "pscomppars"


def test_offline_without_cache_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "_fetch", _stand_in)
    monkeypatch.setenv("ASTRODART_OFFLINE", "1")
    with pytest.raises(CatalogueUnavailableError, match="Ephemeris\\(tc, period"):
        E.planet_ephemeris("HAT-P-27 b", cache_dir=tmp_path)


def test_unknown_planet_and_unreachable_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "_fetch", lambda name, timeout: Table(names=E.ARCHIVE_COLUMNS))
    with pytest.raises(ValueError, match="not in the NASA Exoplanet Archive"):
        E.planet_ephemeris("HAT-P-999 z", cache_dir=tmp_path, offline=False)

    def down(name, timeout):
        raise ConnectionError("no route to host")
    monkeypatch.setattr(E, "_fetch", down)
    with pytest.raises(CatalogueUnavailableError, match="could not be reached"):
        E.planet_ephemeris("HAT-P-27 b", cache_dir=tmp_path, offline=False)
    with pytest.raises(ValueError, match="name=''"):
        E.planet_ephemeris("", cache_dir=tmp_path)
