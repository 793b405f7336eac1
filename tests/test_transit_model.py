"""The physical transit fit (batman + emcee) with BIC-chosen detrending, on simulated nights.

Truth is injected with batman itself (Mandel & Agol 2002): ten nights of 5 h at 1-2 min
cadence with 2-5 ppt white noise and an airmass trend, each with its own seed; the fit
must recover Rp/Rs within 5 % and t0 within 1 min on average, and the 68 % interval of t0
must hold the truth in 5 to 9 of the 10 nights. No sample data and no network needed.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from astrodart.photometry.transit_model import (
    LIMB_DARKENING,
    Ephemeris,
    batman_light_curve,
    fit_batman_transit,
    limb_darkening,
    t14_duration,
)

TRUTH = {"rp": 0.11, "a_rs": 9.0, "b": 0.35, "period": 2.8}
EPH_ERR_MIN = 3.0  # the ephemeris' predicted mid-time error, minutes
SAMPLER = {"n_walkers": 20, "n_steps": 1200, "n_burn": 400}


def _airmass(n, z_start=30.0, z_end=55.0):
    """sec(z) of a star setting from zenith distance ``z_start`` to ``z_end`` degrees."""
    return 1.0 / np.cos(np.radians(np.linspace(z_start, z_end, n)))


def simulate_night(seed: int, trend: float = 0.004, z_range=(30.0, 55.0)):
    """A 5-h night with a transit: ``(time, flux, err, airmass, t0_true, ephemeris)``."""
    rng = np.random.default_rng(seed)
    cadence = rng.uniform(1.0, 2.0) / 1440.0
    start = 2460000.5 + seed
    t = np.arange(start, start + 5.0 / 24.0, cadence)
    t0_true = float(start + 2.5 / 24.0 + rng.uniform(-20, 20) / 1440.0)
    sigma = rng.uniform(0.002, 0.005)
    am = _airmass(t.size, *z_range)
    transit = batman_light_curve(t, t0_true, TRUTH["rp"], TRUTH["a_rs"], TRUTH["b"],
                                 TRUTH["period"], LIMB_DARKENING["R"])
    flux = transit * (1.0 + trend * (am - am.mean())) + rng.normal(0.0, sigma, t.size)
    # an honest ephemeris: its prediction is off by a draw of its own stated error
    tc = t0_true - 150 * TRUTH["period"] + rng.normal(0, EPH_ERR_MIN) / 1440.0
    eph = Ephemeris(tc, TRUTH["period"], EPH_ERR_MIN / 1440.0, 0.0)
    return t, flux, np.full(t.size, sigma), am, t0_true, eph


@pytest.fixture(scope="module")
def ten_nights():
    out = []
    for seed in range(10):
        t, f, e, am, t0_true, eph = simulate_night(seed)
        fit = fit_batman_transit(t, f, e, ephemeris=eph, filter_name="R",
                                 regressors={"airmass": am}, seed=seed, **SAMPLER)
        out.append((fit, t0_true))
    return out


def test_ten_nights_recover_rp_and_t0(ten_nights):
    rp_err = [abs(fit.rp / TRUTH["rp"] - 1) for fit, _ in ten_nights]
    t0_err_min = [abs(fit.t0 - t0) * 1440 for fit, t0 in ten_nights]
    assert np.mean(rp_err) < 0.05, rp_err
    assert np.mean(t0_err_min) < 1.0, t0_err_min


def test_ten_nights_t0_interval_coverage(ten_nights):
    inside = sum(lo <= t0 <= hi for (lo, hi), t0 in
                 ((fit.t0_interval, t0) for fit, t0 in ten_nights))
    assert 5 <= inside <= 9, inside


def test_outputs_consistent(ten_nights):
    fit, _t0_true = ten_nights[0]
    assert fit.chain.shape == (20 * (1200 - 400), 4)
    assert 0.15 < fit.acceptance < 0.7
    assert fit.depth == pytest.approx(fit.rp ** 2, rel=0.05)
    t14_true = t14_duration(TRUTH["period"], TRUTH["rp"], TRUTH["a_rs"], TRUTH["b"])
    assert fit.t14 == pytest.approx(float(t14_true), rel=0.1)
    # O-C is t0 minus the ephemeris' prediction, in minutes
    _, pred, _ = Ephemeris(*_eph_tuple(ten_nights, 0)).predict(fit.t0)
    assert fit.oc_min == pytest.approx((fit.t0 - pred) * 1440, abs=1e-6)
    assert fit.epoch == 150
    assert fit.oc_err_min > EPH_ERR_MIN
    d = fit.to_dict()
    assert d["t0_err_min"] == pytest.approx(fit.t0_err * 1440)
    assert "rp_rs" in fit.summary() or "Rp/Rs" in fit.summary()
    assert np.allclose(fit.model(), fit.transit(fit.time) * fit.systematics)


def _eph_tuple(nights, seed):
    *_, eph = simulate_night(seed)
    return eph.tc, eph.period, eph.tc_err, eph.period_err


def _quick(seed, trend, regressors_of):
    t, f, e, am, _t0_true, eph = simulate_night(seed, trend=trend, z_range=(40.0, 72.0))
    rng = np.random.default_rng(100 + seed)
    fwhm = 3.0 + np.cumsum(rng.normal(0, 0.02, t.size))  # seeing drifts, flux ignores it
    regs = regressors_of(am, fwhm)
    return fit_batman_transit(t, f, e, ephemeris=eph, filter_name="R", regressors=regs,
                              n_walkers=10, n_steps=60, n_burn=20, seed=seed)


def test_bic_picks_airmass_when_there_is_an_airmass_trend():
    fit = _quick(3, 0.01, lambda am, fwhm: {"airmass": am, "fwhm": fwhm})
    assert "airmass" in fit.regressors
    assert set(fit.bic) == {"none", "airmass", "fwhm", "airmass+fwhm"}
    assert fit.bic["+".join(fit.regressors)] == min(fit.bic.values())
    assert fit.bic["none"] - min(fit.bic.values()) > 10


def test_bic_picks_none_without_a_trend():
    fit = _quick(4, 0.0, lambda am, fwhm: {"airmass": am, "fwhm": fwhm})
    assert fit.regressors == ()
    assert fit.bic["none"] == min(fit.bic.values())


def test_joint_detrending_recovers_depth_under_a_strong_trend():
    fit = _quick(5, 0.01, lambda am, fwhm: {"airmass": am})
    ls_rp = fit.chain[:, 1]  # short chain: check the centre only
    assert abs(np.median(ls_rp) / TRUTH["rp"] - 1) < 0.1


def test_limb_darkening_table_and_user_values():
    assert limb_darkening("v") == LIMB_DARKENING["V"]
    assert limb_darkening("R", u=(0.3, 0.2)) == (0.3, 0.2)
    with pytest.raises(ValueError, match="Ha"):
        limb_darkening("Ha")
    with pytest.raises(ValueError, match="u1"):
        limb_darkening(None, u=(0.9, 0.5))


def test_bad_input_is_named():
    t = np.linspace(0, 0.2, 50)
    f = np.ones(50)
    e = np.full(50, 1e-3)
    with pytest.raises(ValueError, match="period"):
        fit_batman_transit(t, f, e)
    with pytest.raises(ValueError, match="'seeing' is not one of"):
        fit_batman_transit(t, f, e, period=2.0, regressors={"seeing": f})
    with pytest.raises(ValueError, match="constant"):
        fit_batman_transit(t, f, e, period=2.0, regressors={"sky": f})
    with pytest.raises(ValueError, match="n_walkers"):
        fit_batman_transit(t, f, e, period=2.0, n_walkers=7)
    with pytest.raises(ValueError, match="period > 0"):
        Ephemeris(2460000.0, -1.0)
    with pytest.raises(ValueError, match="'inc' is not one of"):
        fit_batman_transit(t, f, e, period=2.0, priors={"inc": (88, 1)})
    with pytest.raises(ValueError, match="sigma > 0"):
        fit_batman_transit(t, f, e, period=2.0, priors={"a_rs": (9, 0)})


def test_a_rs_prior_tightens_the_posterior():
    t, f, e, _, _, eph = simulate_night(6)
    kw = {"ephemeris": eph, "filter_name": "R", "n_walkers": 16, "n_steps": 300,
          "n_burn": 100, "seed": 6}
    free = fit_batman_transit(t, f, e, **kw)
    tied = fit_batman_transit(t, f, e, priors={"a_rs": (TRUTH["a_rs"], 0.2)}, **kw)
    assert tied.a_rs_err < 0.5 * free.a_rs_err
    assert tied.a_rs == pytest.approx(TRUTH["a_rs"], abs=0.4)


def test_t14_matches_batman_contacts():
    # first and last contact of the batman curve bracket T14 (Winn 2010, eq. 14)
    t = np.linspace(-0.1, 0.1, 20001)
    lc = batman_light_curve(t, 0.0, 0.1, 8.0, 0.4, 3.0, (0.4, 0.25))
    dip = t[lc < 1.0]
    t14 = float(t14_duration(3.0, 0.1, 8.0, 0.4))
    assert dip.max() - dip.min() == pytest.approx(t14, abs=2e-5)
    assert math.isclose(lc.min(), 1 - 0.1 ** 2 * 1.1, rel_tol=0.1)


def test_figures(ten_nights, tmp_path):
    from astrodart.ui.transit_figures import plot_batman_corner, plot_batman_fit

    fit, _ = ten_nights[1]
    fig = plot_batman_fit(fit, path=tmp_path / "fit.png")
    top, bottom = fig.axes[:2]
    assert (tmp_path / "fit.png").stat().st_size > 10_000
    model = next(ln for ln in top.lines if str(ln.get_label()).startswith("batman"))
    assert 1 - model.get_ydata().min() == pytest.approx(fit.depth, rel=0.25)
    assert bottom.get_ylabel() == "residual [ppt]"
    corner_fig = plot_batman_corner(fit, path=tmp_path / "corner.png")
    assert len(corner_fig.axes) == 16
    with pytest.raises(ValueError, match="bin_minutes"):
        plot_batman_fit(fit, bin_minutes=0)


def test_reduce_transit_step_uses_batman_with_an_ephemeris(tmp_path):
    import json
    from types import SimpleNamespace

    import astropy.units as u
    from astropy.table import QTable

    from astrodart.pipeline.reduce_options import ReduceOptions, UsageError
    from astrodart.pipeline.reduce_summary import transit_step

    t, f, e, am, t0_true, eph = simulate_night(7)
    night = tmp_path / "night"
    night.mkdir()
    base = {"night": str(night), "out": str(tmp_path / "out")}
    # an ephemeris at an old epoch (T0 error in minutes): the step finds tonight's transit
    text = f"{eph.tc:.6f},2.5,{TRUTH['period']},{EPH_ERR_MIN}"
    prior = ReduceOptions(**base, transit=text).check()["transit"]
    assert prior["period"] == TRUTH["period"]
    assert prior["t0_err"] == pytest.approx(EPH_ERR_MIN / 1440)
    with pytest.raises(UsageError, match="period"):
        ReduceOptions(**base, transit=f"{eph.tc:.6f},2.5,-1").check()
    table = QTable({"bjd_tdb": t * u.d, "rel_flux": f, "rel_flux_err": e, "airmass": am})
    state = SimpleNamespace(tables={"lightcurve": table}, products={},
                            result=SimpleNamespace(lightcurve=None))
    transit_step(tmp_path, prior).run(state)
    report = json.loads((tmp_path / "transit.json").read_text())
    assert report["method"].startswith("batman")
    assert report["epoch"] == 150
    assert abs(report["t0_bjd_tdb"] - t0_true) * 1440 < 3 * report["t0_err_min"]
    assert report["rp_rs"] == pytest.approx(TRUTH["rp"], rel=0.1)
    assert abs(report["oc_min"]) < 4 * report["oc_err_min"]
    assert set(report["bic"]) == {"none", "airmass"}
    assert "t0_bjd_tdb" in report["trapezoid"]


def test_photometry_run_fit_transit_model_switch():
    from astrodart.pipeline.photometry import PhotometryRun

    t, f, e, am, t0_true, eph = simulate_night(2)
    rng = np.random.default_rng(2)
    run = object.__new__(PhotometryRun)  # only the results of a run are needed here
    run.filters = ["R"]
    run.results = {
        "differential": {"filter": {"R": {"timestamps": t, "rel_flux": f,
                                          "rel_flux_err": e, "airmass": am}}},
        "target": {"filter": {"R": {"fwhm": 3 + rng.normal(0, 0.1, t.size),
                                    "sky": np.full(t.size, 100.0)}}},
    }
    trap = run.fit_transit(t0=t0_true, duration=0.1)
    assert abs(trap.t0 - t0_true) * 1440 < 5
    fit = run.fit_transit(model="batman", ephemeris=eph, n_walkers=10, n_steps=80,
                          n_burn=40, seed=1)
    assert set(fit.bic) == {"none", "airmass", "fwhm", "airmass+fwhm"}  # sky is constant
    assert fit.u == LIMB_DARKENING["R"]
    assert abs(fit.t0 - t0_true) * 1440 < 5
    with pytest.raises(ValueError, match="model='box'"):
        run.fit_transit(model="box")
