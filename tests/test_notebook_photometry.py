"""The photometry notebook on the real HAT-P-27b night (2018-04-23, Stony Brook), checked
against the published ephemeris and transit of HAT-P-27b (Béky et al. 2011).

The notebook runs in the session's shared data tree. When the astrophotography notebook ran
first (it sorts before this file), the calibrated frames it left are reused (``resumed``);
run alone, the notebook reduces stage 1 itself. Either way the light curve must show the
transit where and as deep as the literature says, with errors that match the scatter.

Issue 19: the notebook chooses the aperture radius of least light-curve scatter
(``aperture_type='auto'``), vets the comparison stars, fits the physical transit model
(batman + emcee) with the ephemeris as a prior on the mid-time and priors on a/R* and b
from the published star and duration, and writes the AAVSO Exoplanet Database and Extended reports,
which must pass their format checks and hold the light curve the notebook measured.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from conftest import assert_notebook_ran_cleanly

from astrodart.photometry.aperture_choice import AUTO_APERTURE_GRID
from astrodart.photometry.exports import validate_aavso_extended, validate_exoplanet_report

pytestmark = pytest.mark.slow

TC, PERIOD = 2455186.01879, 3.0395803  # Béky et al. 2011, BJD_TDB and days
PREDICTED_T0 = TC + round((2458231.68 - TC) / PERIOD) * PERIOD  # 2458231.6783
DEPTH_RANGE = (0.008, 0.020)  # literature ~1.4 %; the tolerance of test_photometry_real.py
MIDTIME_TOL_MIN = 20.0  # likewise
T14_RANGE_H = (1.0, 2.5)  # published 1.7 h
EPOCH = 1002  # transits since Tc
# the notebook's prior on the mid-time: Tc +- 0.00054 d, P +- 0.000012 d (Béky et al. 2011)
PREDICTED_ERR_MIN = math.hypot(0.00054, EPOCH * 0.000012) * 1440  # 17.4 min
G_MSUN_M3_S2, RSUN_M = 1.32712440018e20, 6.957e8  # GM_sun (IAU 2015), nominal solar radius


@pytest.fixture(scope="module")
def photometry_run(run_guide, guide_root):
    """Run the notebook once; note whether the astrophotography notebook had run before."""
    notebooks = guide_root / "reduced_data" / "notebooks"
    before = {
        "astro_summary": (notebooks / "astrophotography_summary.json").exists(),
        "astro_executed": (notebooks / "astrophotography.ipynb").exists(),
    }
    run, summary = run_guide("photometry")
    return run, summary, before


def test_photometry_notebook_runs_and_shows_its_figures(photometry_run):
    run, summary, _ = photometry_run
    # airmass, check_image, target zoom, drift, chosen stars, aperture scatter, raw fluxes,
    # light curve, trapezoid fit, batman fit, corner plot (then the diagnostics)
    nb = assert_notebook_ran_cleanly(run, min_figures=11, min_png_bytes=10_000)
    names = " ".join(p.name for p in run.figures)
    for figure in ("aperture_scatter_against_radius", "batman_fit", "batman_corner"):
        assert f"_{figure}.png" in names
    assert any(
        c.cell_type == "markdown" and "Questions for students" in c.source for c in nb.cells
    )
    assert summary, "the notebook wrote no summary"


def test_photometry_notebook_resumes_or_reduces(photometry_run, guide_root):
    _, s, before = photometry_run
    if before["astro_summary"]:
        # the astrophotography notebook calibrated the night: nothing is recomputed
        assert s["resumed"] is True
    elif not before["astro_executed"]:
        assert s["resumed"] is False
    night = guide_root / "reduced_data" / "180423" / "HAT-P-27"
    calibrated = list((night / "Visible").glob("*.fits"))
    assert len(calibrated) == 100


def test_photometry_notebook_measures_every_frame(photometry_run, guide_root):
    _, s, _ = photometry_run
    assert s["n_frames"] >= 95
    # 12 picked; at the radius 'auto' chooses (~1 FWHM) the vetting drops several for trends
    assert s["n_comparisons"] >= 8 and s["n_comparisons_used"] >= 5
    assert s["target_index"] >= 0
    # the field wanders by tens of pixels through the night; the apertures follow it
    assert s["max_drift_px"] > 20
    # BJD_TDB = UTC mid-exposure + 69.2 s (TDB - UTC) + Roemer delay toward HAT-P-27 (~463 s)
    assert s["bjd_minus_utc_s"] == pytest.approx(69.2 + 463, abs=5)
    lo, hi = s["airmass_range"]
    assert 1.0 < lo < hi < 2.0
    out = guide_root / "reduced_data" / "180423" / "HAT-P-27" / "photometry"
    table = Table.read(
        out / "photometry_results_target_and_comparison_Visible.ecsv", format="ascii.ecsv"
    )
    assert len(table) == 100
    assert np.isfinite(table["rel_flux"]).sum() == s["n_frames"]
    assert np.all(np.diff(table["bjd_tdb"]) > 0)
    assert (out / "hatp27b_180423_lightcurve.png").stat().st_size > 20_000


def test_photometry_notebook_finds_the_published_transit(photometry_run):
    _, s, _ = photometry_run
    assert s["predicted_midtime_bjd"] == pytest.approx(PREDICTED_T0, abs=1e-6)
    assert DEPTH_RANGE[0] <= s["depth"] <= DEPTH_RANGE[1]
    assert 0 < s["depth_err"] < s["depth"]  # a detection, not noise
    offset_min = (s["midtime_bjd"] - PREDICTED_T0) * 1440
    assert offset_min == pytest.approx(s["midtime_offset_min"], abs=1e-6)
    assert abs(offset_min) < MIDTIME_TOL_MIN
    assert 0 < s["midtime_err_min"] < 15
    assert T14_RANGE_H[0] < s["t14_hours"] < T14_RANGE_H[1]
    # the transit is found without being told where to look
    assert abs(s["blind_midtime_offset_min"]) < MIDTIME_TOL_MIN
    assert DEPTH_RANGE[0] <= s["blind_depth"] <= DEPTH_RANGE[1]


def test_photometry_notebook_errors_match_the_scatter(photometry_run):
    _, s, _ = photometry_run
    assert s["oot_rms_ppt"] < 12  # per 20-s frame, as test_photometry_real.py
    # the CCD-equation error bars describe the scatter (no hidden systematics left)
    assert 0.7 < s["chi2_red"] < 1.5
    assert s["oot_rms_ppt"] == pytest.approx(s["median_err_ppt"], rel=0.35)


def test_photometry_notebook_chooses_the_aperture_of_least_scatter(photometry_run, guide_root):
    _, s, _ = photometry_run
    factors = np.asarray(s["aperture_factors"], float)
    scatter = np.asarray(s["aperture_scatter"], float)
    np.testing.assert_allclose(factors, AUTO_APERTURE_GRID)
    k = int(np.flatnonzero(np.isclose(factors, s["aperture_chosen_factor"]))[0])
    assert scatter[k] == np.nanmin(scatter)
    # a real minimum inside the grid: smaller apertures lose light, larger ones add sky
    assert scatter[0] > scatter[k] and scatter[-1] > scatter[k]
    # HAT-P-27 is sky-limited: the best radius is well inside AstroDART's 2.5 x FWHM
    assert 0.6 < s["aperture_chosen_factor"] < 2.5
    assert 1.0 < s["aperture_chosen_px"] / s["aperture_chosen_factor"] < 6.0  # the FWHM, px
    # the light curve's scatter per frame is the chosen radius's
    assert s["oot_rms_ppt"] == pytest.approx(1e3 * scatter[k], rel=0.35)
    out = guide_root / "reduced_data" / "180423" / "HAT-P-27" / "photometry"
    table = Table.read(
        out / "photometry_results_target_and_comparison_Visible.ecsv", format="ascii.ecsv"
    )
    assert table.meta["aperture_radius_fwhm"] == s["aperture_chosen_factor"]
    np.testing.assert_allclose(table.meta["aperture_choice"]["Visible"]["scatter_p2p"], scatter)


def test_photometry_notebook_vets_the_comparisons(photometry_run):
    _, s, _ = photometry_run
    kept = [int(c) for c in s["comparisons_kept"]]
    dropped = {int(c): why for c, why in s["comparisons_dropped"].items()}
    # every comparison is either kept or dropped with its reason
    assert sorted(kept + list(dropped)) == list(range(1, s["n_comparisons"] + 1))
    assert len(kept) == s["n_comparisons_used"] >= 5
    # each with the rule that dropped it (the picked stars are unsaturated, isolated, bright)
    assert all(why.startswith("variable: ") for why in dropped.values())


def test_photometry_notebook_fits_the_physical_model(photometry_run):
    _, s, _ = photometry_run
    b = s["batman"]
    assert DEPTH_RANGE[0] <= b["depth"] <= DEPTH_RANGE[1]
    assert 0 < b["depth_err"] < b["depth"] / 2
    assert b["rp_rs"] == pytest.approx(math.sqrt(b["depth"]), rel=1e-9)
    offset_min = (b["t0_bjd_tdb"] - PREDICTED_T0) * 1440
    assert abs(offset_min) < MIDTIME_TOL_MIN
    assert 0 < b["t0_err_min"] < 15
    # O-C against the same ephemeris, with the fit's and the ephemeris' errors combined
    assert b["epoch"] == EPOCH
    assert s["batman_predicted_bjd"] == pytest.approx(PREDICTED_T0, abs=1e-6)
    assert s["batman_predicted_err_min"] == pytest.approx(PREDICTED_ERR_MIN, rel=1e-6)
    assert b["oc_min"] == pytest.approx(offset_min, abs=1e-6)
    assert b["oc_err_min"] == pytest.approx(math.hypot(b["t0_err_min"], PREDICTED_ERR_MIN),
                                            rel=1e-6)
    assert T14_RANGE_H[0] < b["duration_h"] < T14_RANGE_H[1]
    # the priors: a/R* from Kepler's third law (M = 0.94 Msun, R = 0.90 Rsun, Béky et al.
    # 2011) and b from the published duration 0.0705 d
    a_m = (G_MSUN_M3_S2 * 0.94 * (PERIOD * 86400) ** 2 / (4 * math.pi**2)) ** (1 / 3)
    a_rs = a_m / (0.90 * RSUN_M)
    assert s["batman_priors"]["a_rs"][0] == pytest.approx(a_rs, rel=1e-3)  # 9.61
    chord = a_rs * math.sin(math.pi * 0.0705 / PERIOD)
    assert s["batman_priors"]["b"][0] == pytest.approx(math.sqrt(1.1187**2 - chord**2), abs=0.01)
    assert abs(b["a_rs"] - a_rs) < 3 * s["batman_priors"]["a_rs"][1]
    # the physical model and the trapezoid agree on the mid-time within their errors
    assert abs(b["t0_bjd_tdb"] - s["midtime_bjd"]) * 1440 < 2 * s["midtime_err_min"]
    # a sampler that moved, of a size that keeps the notebook quick
    assert 0.1 < b["acceptance"] < 0.8
    sampler = s["batman_sampler"]
    assert sampler["n_walkers"] * sampler["n_steps"] <= 40_000
    assert b["n_points"] == s["n_frames"]


def test_photometry_notebook_writes_valid_aavso_reports(photometry_run, guide_root):
    _, s, _ = photometry_run
    path = Path(s["exoplanet_report"])
    assert path.parent == guide_root / "reduced_data" / "180423" / "HAT-P-27" / "photometry"
    assert s["exoplanet_report_problems"] == [] and validate_exoplanet_report(path) == []
    lines = path.read_text().splitlines()
    head = dict(ln[1:].split("=", 1) for ln in lines if ln.startswith("#") and "=" in ln)
    assert head["TYPE"] == "EXOPLANET" and head["DATE_TYPE"] == "BJD_TDB"
    assert head["STAR_NAME"] == "HAT-P-27" and head["EXOPLANET_NAME"] == "HAT-P-27 b"
    assert head["FILTER"] == "CV"  # unfiltered CCD
    assert float(head["EXPOSURE_TIME"]) == 20.0
    assert head["DETREND_PARAMETERS"].split(",")[0] == "AIRMASS"
    assert f"Tc={s['batman']['t0_bjd_tdb']:.5f}" in head["RESULTS"]
    # the rows are the notebook's light curve: same times, flux normalised out of transit
    rows = np.array([ln.split(",") for ln in lines if not ln.startswith("#")], float)
    out = path.parent
    table = Table.read(
        out / "photometry_results_target_and_comparison_Visible.ecsv", format="ascii.ecsv"
    )
    ok = np.isfinite(table["rel_flux"])
    assert len(rows) == ok.sum() == s["n_frames"]
    np.testing.assert_allclose(rows[:, 0], np.asarray(table["bjd_tdb"])[ok], atol=1e-8, rtol=0)
    ratio = rows[:, 1] / np.asarray(table["rel_flux"])[ok]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)
    half = s["batman"]["duration_h"] / 48
    oot = np.abs(rows[:, 0] - s["batman"]["t0_bjd_tdb"]) > half
    assert np.median(rows[oot, 1]) == pytest.approx(1.0, abs=1e-6)
    assert np.median(rows[~oot, 1]) < 1 - 0.5 * DEPTH_RANGE[0]  # the transit is in the file
    # and the Extended File Format report of the same curve
    ext = Path(s["extended_report"])
    assert s["extended_report_problems"] == [] and validate_aavso_extended(ext) == []
    data = [ln.split(",") for ln in ext.read_text().splitlines() if not ln.startswith("#")]
    assert len(data) == s["n_frames"] and {row[0] for row in data} == {"HAT-P-27"}
