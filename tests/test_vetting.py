"""Comparison stars vetted (issue 19): a variable, a trending, a saturated, a blended, a
faint and a catalogue-variable comparison among simulated stars are each dropped with
the right reason, the good ones are kept, and the target's light curve gets quieter.

Synthetic truth (no sample data needed): a night of 240 points with clouds common to
every star, photon noise per star, a 1.2 % transit on the target.
"""
from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from astrodart.photometry.ensemble import VettingRules, ensemble_light_curve, vet_comparisons
from astrodart.photometry.transit import trapezoid_model

N = 240
T = np.linspace(2458231.60, 2458231.76, N)  # BJD_TDB, the HAT-P-27 night
T0, DEPTH = 2458231.68, 0.012


def _night(seed=3):
    """Target and 8 comparisons: 0-3 good, 4 variable (2 % sine), 5 trending (1 % ramp),
    6 saturated (a bright star clipped at its detector's full well), 7 good."""
    rng = np.random.default_rng(seed)
    clouds = 1 - 0.15 * np.sin(30 * (T - T[0])) ** 2
    base = np.array([2.0e5, 1.6e5, 1.3e5, 1.0e5, 1.2e5, 1.1e5, 6.0e5, 0.9e5])
    noise = 0.003 * np.sqrt(2e5 / base)
    true = base[:, None] * clouds[None, :]
    true[4] *= 1 + 0.02 * np.sin(2 * np.pi * (T - T[0]) / 0.05)
    true[5] *= 1 + 0.01 * (T - T[0]) / np.ptp(T)
    comp = true * (1 + noise[:, None] * rng.normal(size=true.shape))
    cap = np.quantile(comp[6], 0.5)  # the star saturates in the clearer half of the night
    saturated = np.zeros(comp.shape, bool)
    saturated[6] = comp[6] > cap
    comp[6] = np.minimum(comp[6], cap)
    comp_err = base[:, None] * noise[:, None] * np.ones((1, N))
    transit = trapezoid_model(T, T0, DEPTH, 0.07, 0.012)
    target = 1e5 * clouds * transit * (1 + 0.003 * rng.normal(size=N))
    target_err = np.full(N, 300.0)
    return target, target_err, comp, comp_err, saturated, transit


def _residual_rms(ens, transit):
    r = ens.rel_flux[ens.valid] - transit[ens.valid]
    return float(np.std(r - np.median(r)))


def test_variable_trending_and_saturated_comparisons_are_dropped_with_their_reason():
    target, terr, comp, cerr, saturated, transit = _night()
    ens = ensemble_light_curve(target, terr, comp, cerr, time=T, saturated=saturated)
    dropped = ens.dropped  # 1-based comparison -> reason
    assert set(dropped) == {5, 6, 7}, dropped
    assert dropped[5].startswith("variable: scatter")
    assert dropped[6].startswith("variable: trend")
    assert dropped[7].startswith("saturated in")
    assert ens.kept == [1, 2, 3, 4, 8]
    assert ens.weights[[4, 5, 6]].sum() == 0 and ens.weights.sum() == pytest.approx(1.0)
    d = ens.diagnostics
    assert list(d["variable"]) == [False] * 4 + [True, True, False, False]
    # the target's scatter improves on the same ensemble without vetting
    plain = ensemble_light_curve(target, terr, comp, cerr, time=T, vet=False)
    good, bad = _residual_rms(ens, transit), _residual_rms(plain, transit)
    assert good < 0.8 * bad, (good, bad)
    assert good < 0.004  # about the target's own 0.3 % photon noise and the ensemble's


def test_blended_faint_and_catalogue_variable_comparisons_are_refused():
    target, terr, comp, cerr, _, _ = _night(seed=5)
    comp, cerr = comp[[0, 1, 2, 3, 7]].copy(), cerr[[0, 1, 2, 3, 7]].copy()
    cerr[3] = comp[3] / 6.0  # S/N 6 per point: too faint for the default floor of 10
    # target, then 5 comparisons; comparisons 1 and 2 (of comparable brightness) are
    # 4 px apart: each blends the other
    positions = np.array([[500, 500], [100, 100], [104, 100], [300, 700], [800, 200],
                          [700, 800.0]])
    coords = SkyCoord([10.0, 10.1, 10.2, 10.3, 10.4], [5.0, 5.1, 5.2, 5.3, 5.4], unit="deg")
    known = [SkyCoord(10.4, 5.4, unit="deg").directional_offset_by(0 * u.deg, 2 * u.arcsec)]
    ens = ensemble_light_curve(target, terr, comp, cerr, time=T, positions=positions,
                               fwhm=2.5, coords=coords, known_variables=known)
    dropped = ens.dropped
    assert set(dropped) == {1, 2, 4, 5}, dropped
    assert dropped[1].startswith("blended: comparison 2 4.0 px away")
    assert dropped[2].startswith("blended: comparison 1 4.0 px away")
    assert dropped[4].startswith("too faint: S/N 6.0")
    assert dropped[5].startswith("catalogue variable at")
    assert ens.kept == [3]
    # names from an offline VSX list are refused too, and every comparison refused is
    # a clear error naming each reason
    by_name = vet_comparisons(comp, cerr, names=["a", "V0501 Oph", "c", "d", "e"],
                              known_variables=["v0501  oph"])
    assert by_name == {1: "catalogue variable v0501  oph",
                       3: "too faint: S/N 6.0 per point < 10"}
    with pytest.raises(ValueError, match="every comparison star was refused.*too faint"):
        ensemble_light_curve(target, terr, comp, cerr * 100, time=T)


def test_rules_are_the_users_and_a_faint_neighbour_does_not_blend():
    _, _, comp, cerr, _, _ = _night(seed=9)
    comp, cerr = comp[[0, 1, 2, 3]], cerr[[0, 1, 2, 3]]
    positions = np.array([[500, 500], [100, 100], [400, 400], [300, 700], [800, 200.0]])
    # a neighbour 1/20 as bright is not of comparable brightness (default ratio 0.1)
    faint_neighbour = np.vstack([positions, [[104, 100]]])
    reasons = vet_comparisons(np.vstack([comp, comp[0] / 20]), np.vstack([cerr, cerr[0]]),
                              positions=faint_neighbour, fwhm=2.5)
    assert 0 not in reasons and 4 in reasons  # the faint star itself sits next to a bright one
    strict = VettingRules(min_snr=1e6)
    assert set(vet_comparisons(comp, cerr, rules=strict)) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match=r"positions must have shape \(5, 2\)"):
        vet_comparisons(comp, cerr, positions=positions[:3], fwhm=2.5)


def test_the_photometry_runs_ensemble_vets_by_default():
    """``PhotometryRun.differential`` (the path of the guides and of ``astrodart reduce``)
    hands the flags, positions, FWHM and known variables of its results to the vetting."""
    from astrodart.photometry.apertures import PhotFlag
    from astrodart.pipeline.photometry import PhotometryRun

    target, terr, comp, cerr, saturated, _ = _night(seed=11)
    xy = [(500, 500), (100, 100), (200, 900), (300, 700), (800, 200), (600, 300),
          (900, 900), (150, 600), (700, 800)]

    def record(flux, err, k, flags):
        return {"flux": flux, "flux_err": err, "flags": flags, "timestamps": T, "airmass": 1.2,
                "x": np.full(N, xy[k][0] + 0.0), "y": np.full(N, xy[k][1] + 0.0),
                "fwhm": np.full(N, 2.5)}

    comps = {f"comparison_{i + 1}": {"filter": {"V": record(
        comp[i], cerr[i], i + 1, np.where(saturated[i], int(PhotFlag.SATURATED), 0))},
        "coords": {}} for i in range(8)}
    res = {"target": {"filter": {"V": record(target, terr, 0, np.zeros(N, int))}},
           "comparison_stars": comps}
    run = object.__new__(PhotometryRun)
    run.filters, run.variable_threshold, run.results = ["V"], 3.0, res
    run.known_variables = [(700.5, 800.5)]  # comparison 8, by its pixel position
    dropped = run.differential("V").dropped
    assert set(dropped) == {5, 6, 7, 8}, dropped
    assert dropped[7].startswith("saturated in") and dropped[8].startswith("catalogue variable")
    # the reasons travel with the results (HDF5 / ECSV) and the light-curve table's meta
    from astrodart.pipeline.photometry_results import differential_record

    rec = differential_record(run.differential("V"), res["target"]["filter"]["V"])
    assert list(rec["comparison_reason"] != "") == [False] * 4 + [True] * 4
