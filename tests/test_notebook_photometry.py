"""The photometry notebook on the real HAT-P-27b night (2018-04-23, Stony Brook), checked
against the published ephemeris and transit of HAT-P-27b (Béky et al. 2011).

The notebook runs in the session's shared data tree. When the astrophotography notebook ran
first (it sorts before this file), the calibrated frames it left are reused (``resumed``);
run alone, the notebook reduces stage 1 itself. Either way the light curve must show the
transit where and as deep as the literature says, with errors that match the scatter.
"""

from __future__ import annotations

from conftest import assert_notebook_ran_cleanly
import numpy as np
import pytest
from astropy.table import Table

pytestmark = pytest.mark.slow

TC, PERIOD = 2455186.01879, 3.0395803  # Béky et al. 2011, BJD_TDB and days
PREDICTED_T0 = TC + round((2458231.68 - TC) / PERIOD) * PERIOD  # 2458231.6783
DEPTH_RANGE = (0.008, 0.020)  # literature ~1.4 %; the tolerance of test_photometry_real.py
MIDTIME_TOL_MIN = 20.0  # likewise
T14_RANGE_H = (1.0, 2.5)  # published 1.7 h


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
    # airmass, check_image, target zoom, drift, chosen stars, raw fluxes, light curve, fit
    nb = assert_notebook_ran_cleanly(run, min_figures=8, min_png_bytes=10_000)
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
    assert s["n_comparisons"] >= 8 and s["n_comparisons_used"] >= 8
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
