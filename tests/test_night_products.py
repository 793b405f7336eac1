"""The light-curve and transit products of ``astrodart reduce``, and fields without a WCS.

Simulated light curves check the single-transit search (box least squares) against
known truth; the real HAT-P-27b night (2018-04-23, Stony Brook; no WCS: it cannot be
plate-solved) is calibrated once per session the way ``tests/test_photometry_real.py``
does it, then measured with the target given in pixels (``target_xy``), and its light
curve and transit compared with the published ephemeris (Béky et al. 2011: mid-transit
BJD_TDB 2458231.6783, depth 1.41 %, duration 1.7 h).
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import QTable
from datapaths import HATP27, copy_night, require

from astrodart.photometry.transit import trapezoid_model
from astrodart.photometry.transit_search import search_transit
from astrodart.pipeline.night_products import (
    lightcurve_table,
    preview_png,
    transit_report,
    write_night_products,
)

TARGET = SkyCoord("14h51m04.2s", "+05d56m50s", frame="icrs")  # HAT-P-27
TARGET_RAW_PIXEL = (481, 522)  # 0-based, on the raw frames (finder chart, as the notebook)
SITE = [40.91, -73.12, 40.0]  # Mt Stony Brook
TC, PERIOD = 2455186.01879, 3.0395803  # Béky et al. 2011
PREDICTED_T0 = TC + round((2458231.68 - TC) / PERIOD) * PERIOD  # 2458231.6783
COLUMNS = ("bjd_tdb", "rel_flux", "rel_flux_err", "airmass", "fwhm", "sky", "xcentroid",
           "ycentroid", "flags", "valid", "file")


# ---------------------------------------------------------------- simulated light curves
def _night(seed, depth=0.014, noise=0.004, t0_offset=0.0):
    """100 points over 2.8 h with a 1.7-h trapezoid transit (ingress 12 min) mid-night,
    a slope, and white noise."""
    rng = np.random.default_rng(seed)
    t = 2458231.628 + np.linspace(0, 0.118, 100)
    t0 = t.mean() + t0_offset
    f = trapezoid_model(t, t0, depth, 1.7 / 24, 0.2 / 24) * (1 + 0.004 * (t - t.mean()) / 0.1)
    return t, f + rng.normal(0, noise, t.size), np.full(t.size, noise), t0


@pytest.mark.parametrize("seed", range(5))
def test_search_finds_a_simulated_transit(seed):
    t, f, e, t0 = _night(seed, t0_offset=(seed - 2) * 0.004)
    s = search_transit(t, f, e)
    print(f"seed {seed}: t0 {(s.t0 - t0) * 1440:+.1f} min, box depth {100 * s.depth:.2f} "
          f"+- {100 * s.depth_err:.2f} %, S/N {s.snr:.1f} (threshold {s.snr_threshold:.1f})")
    assert s.detected and s.reason == ""
    # a box has no ingress: its mid-time scatters by ~4 min here (40 nights); the
    # trapezoid fit of transit_report refines it
    assert abs(s.t0 - t0) * 1440 < 10
    # a box averages the ingress and egress in: its depth lies between the trapezoid's
    # mean depth over T14 (1.24 %) and the flat bottom (1.4 %), within 3 sigma
    assert 0.0124 - 3 * s.depth_err < s.depth < 0.014 + 3 * s.depth_err
    assert 1.2 < s.duration * 24 < 2.0


def test_search_with_a_prior_stays_near_it():
    t, f, e, t0 = _night(7)
    s = search_transit(t, f, e, t0_prior=t0 + 5 / 1440, duration_prior=1.7 / 24)
    assert s.detected and abs(s.t0 - t0) * 1440 < 10
    assert s.snr_threshold < search_transit(t, f, e).snr_threshold  # fewer trials


def test_flat_curves_are_not_detections():
    snrs = []
    for seed in range(30):
        t, f, e, _ = _night(seed, depth=0.0)
        s = search_transit(t, f, e)
        snrs.append(s.snr)
        assert not s.detected, (seed, s)
        assert "S/N" in s.reason or "dimming" in s.reason
    print(f"flat curves: largest S/N {max(snrs):.1f} over 30 nights")


def test_search_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 10"):
        search_transit(np.arange(5.0), np.ones(5))
    with pytest.raises(ValueError, match="durations"):
        search_transit(np.arange(20.0), np.ones(20), durations=[-1.0])
    with pytest.raises(ValueError, match="fap"):
        search_transit(*_night(0)[:3], fap=2.0)


def test_transit_report_fits_what_the_search_found():
    t, f, e, t0 = _night(3, noise=0.003)
    table = QTable({"bjd_tdb": t * u.d, "rel_flux": f, "rel_flux_err": e,
                    "valid": np.ones(t.size, bool)})
    rep = transit_report(table)
    json.dumps(rep, allow_nan=False)
    assert rep["detected"] and abs(rep["t0_bjd_tdb"] - t0) * 1440 < 3 * rep["t0_err_min"]
    assert rep["t0_err_min"] < 3
    assert abs(rep["depth"] - 0.014) < 3 * rep["depth_err"]
    assert abs(rep["duration_h"] - 1.7) < 3 * rep["duration_err_h"]
    assert 0.002 < rep["rms_oot"] < 0.004 and 0.5 < rep["chi2_red"] < 1.6
    flat = transit_report(QTable({"bjd_tdb": t * u.d, "rel_flux": _night(4, depth=0.0)[1],
                                  "rel_flux_err": e}))
    assert flat["detected"] is False and "no transit found" in flat["reason"]
    assert "t0_bjd_tdb" not in flat and flat["rms"] > 0
    with pytest.raises(ValueError, match="prior"):
        transit_report(table, prior=(t0, -1.0))


def test_preview_png_has_the_image_size(tmp_path):
    from matplotlib.image import imread

    rng = np.random.default_rng(0)
    data = rng.normal(100, 5, (60, 80))
    data[30, 40] = 5000.0
    data[0, 0] = np.nan
    fits.PrimaryHDU(data.astype(np.float32)).writeto(tmp_path / "img.fits")
    png = preview_png(tmp_path / "img.fits", tmp_path / "sub" / "img.png")
    img = imread(png)
    assert img.shape[:2] == (60, 80)
    # origin lower: the bright pixel at row 30 from the bottom is row 29 from the top
    assert img[59 - 30, 40, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="stretch"):
        preview_png(tmp_path / "img.fits", tmp_path / "x.png", stretch="cubic")


def test_pixel_tracking_uses_the_alignment_transforms(tmp_path):
    """Frames with ALNA* keywords are followed through the transforms, no star matching."""
    from types import SimpleNamespace

    from astrodart.alignment.transforms import PixelTransform
    from astrodart.pipeline.night_photometry import _track

    cal, ali = [], []
    shifts = [(0.0, 0.0), (12.5, -3.0), (-7.0, 20.0)]
    for k, (dx, dy) in enumerate(shifts):
        c = tmp_path / f"frame{k}.fits"
        fits.PrimaryHDU(np.zeros((10, 10), np.float32)).writeto(c)
        h = fits.Header()
        m = PixelTransform.translation(dx, dy).matrix  # frame -> reference grid
        for i in range(2):
            for j in range(3):
                h[f"ALNA{i + 1}{j + 1}"] = m[i, j]
        a = tmp_path / f"aligned_frame{k}.fits"
        fits.PrimaryHDU(np.zeros((10, 10), np.float32), header=h).writeto(a)
        cal.append(str(c))
        ali.append(str(a))
    result = SimpleNamespace(filters=["V"], calibrated={"V": cal}, aligned={"V": ali})
    xy = np.array([[100.0, 200.0], [300.0, 50.0]])
    tracked = _track(result, cal[1], xy)
    for k, (dx, dy) in enumerate(shifts):
        expect = xy + [shifts[1][0] - dx, shifts[1][1] - dy]
        assert np.allclose(tracked["V"][k], expect)


# ---------------------------------------------------------------------- the real night
@pytest.fixture(scope="session")
def calibrated_hatp27(tmp_path_factory):
    """The HAT-P-27b night bias-, dark- and flat-corrected with first_stage (as in
    tests/test_photometry_real.py), once per session."""
    from astrodart.first_stage import correct_flatfield, master_frame, subtract_bias, subtract_dark

    root = tmp_path_factory.mktemp("hatp27_products")
    raw = copy_night(require(HATP27), root / "raw", "*.FIT.gz")
    kind = {k: [str(p) for p in raw if k in p.name]
            for k in ("bias_frame", "dark_frame", "dome_flat", "science_exposures")}
    quiet = {"progress": False}
    clip = ("median", "sigclip", 3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # header-card comment truncation on the masters
        mbias = master_frame(root / "bias", kind["bias_frame"], "masterbias.fits", *clip).run()
        dark = subtract_bias(root / "dark", kind["dark_frame"], mbias, "yes", **quiet).run()
        mdark = master_frame(root / "dark", dark, "masterdark.fits", *clip,
                             frame_type="dark").run()
        flat = subtract_bias(root / "flat", kind["dome_flat"], mbias, "yes", **quiet).run()
        mflat = master_frame(root / "flat", flat, "masterflat.fits", *clip,
                             frame_type="flat").run()
        sci = subtract_bias(root / "sci", kind["science_exposures"], mbias, "yes", **quiet).run()
        sci = subtract_dark(root / "sci", sci, mdark, "yes", **quiet).run()
        sci = correct_flatfield(root / "sci", sci, mflat, "yes", **quiet).run()
    assert len(sci) == 100
    return root, [str(p) for p in sci]


@pytest.fixture(scope="session")
def pixel_night(calibrated_hatp27):
    """The night measured with the target given in pixels (no WCS), and its products."""
    from astrodart.pipeline.night import NightResult
    from astrodart.pipeline.night_photometry import night_light_curve

    root, sci = calibrated_hatp27
    result = NightResult(root, "180423", "HAT-P-27", root / "reduced", filters=["Visible"],
                         calibrated={"Visible": sci}, fwhm={"Visible": [3.5]},
                         saturation=60000.0, series_filter="Visible")
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a sky-limited V = 12.2 star: 1 FWHM apertures (see tests/test_photometry_real.py)
        night_light_curve(result, TARGET, 15, None, (1.0, 3.5, 5.0), (5.0, 6.0, 8.0),
                          target_xy=TARGET_RAW_PIXEL, site=SITE)
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    products = write_night_products(result, root / "results")
    rep = products["transit_report"]
    print(f"\nHAT-P-27b from target_xy={TARGET_RAW_PIXEL}: photometry {seconds:.0f} s, products "
          f"{time.perf_counter() - t:.1f} s; detected {rep['detected']}, depth "
          f"{100 * rep.get('depth', np.nan):.2f} +- {100 * rep.get('depth_err', np.nan):.2f} %, "
          f"t0 - ephemeris {(rep.get('t0_bjd_tdb', np.nan) - PREDICTED_T0) * 1440:+.1f} min "
          f"(+- {rep.get('t0_err_min', np.nan):.1f}), T14 {rep.get('duration_h', np.nan):.2f} h, "
          f"rms out of transit {1e3 * rep.get('rms_oot', np.nan):.2f} ppt; search S/N "
          f"{rep['search']['snr']:.1f} (threshold {rep['search']['snr_threshold']:.1f})")
    return result, products


@pytest.mark.slow
@pytest.mark.sample_data
def test_lightcurve_table_of_the_real_night(pixel_night):
    result, products = pixel_night
    table = lightcurve_table(result.lightcurve, "Visible")
    assert len(table) == 100
    assert tuple(table.colnames) == COLUMNS
    assert table["bjd_tdb"].unit == u.d and table["fwhm"].unit == u.pix
    assert table["xcentroid"].unit == u.pix and table["ycentroid"].unit == u.pix
    assert table["sky"].unit == u.adu / u.pix  # the first_stage frames stay in ADU
    assert table["rel_flux"].unit == u.dimensionless_unscaled
    assert np.all(np.diff(table["bjd_tdb"].value) > 0)
    assert np.all((table["airmass"] > 1.0) & (table["airmass"] < 2.0))
    assert table["valid"].sum() >= 95 and np.all(table["flags"][table["valid"]] == 0)
    assert np.all((table["fwhm"] > 2 * u.pix) & (table["fwhm"] < 8 * u.pix))
    assert table.meta["target"]["name"] == "HAT-P-27"
    assert len(table.meta["comparisons"]) == 15
    assert table.meta["apertures"]["aperture_annulus_in_out"] == [1.0, 3.5, 5.0]
    back = QTable.read(products["lightcurve"], format="ascii.ecsv")
    assert len(back) == 100 and back["bjd_tdb"].unit == u.d
    assert np.allclose(back["rel_flux"], table["rel_flux"], equal_nan=True)


@pytest.mark.slow
@pytest.mark.sample_data
def test_transit_of_the_real_night_from_a_pixel_target(pixel_night):
    result, products = pixel_night
    rep = json.loads(Path(products["transit"]).read_text())
    assert rep["detected"] is True  # blind: no ephemeris given
    assert 0.008 <= rep["depth"] <= 0.020
    assert abs(rep["t0_bjd_tdb"] - PREDICTED_T0) * 1440 < 20
    assert rep["t0_err_min"] < 20 and rep["depth_err"] < 0.006
    assert 1.0 < rep["duration_h"] < 2.5  # published 1.7 h
    assert rep["rms_oot"] < 0.012 and 0.5 < rep["chi2_red"] < 1.5
    # with the ephemeris as a prior: the same transit
    table = lightcurve_table(result.lightcurve, "Visible")
    prior = transit_report(table, prior=(PREDICTED_T0, 1.7))
    assert prior["detected"] and 0.008 <= prior["depth"] <= 0.020
    assert abs(prior["t0_bjd_tdb"] - PREDICTED_T0) * 1440 < 20
    assert Path(products["lightcurve_png"]).stat().st_size > 20_000


@pytest.mark.slow
@pytest.mark.sample_data
def test_pixel_target_is_recentred_and_tracked(pixel_night):
    result, _ = pixel_night
    assert np.hypot(*(np.array(result.target_xy) - TARGET_RAW_PIXEL)) < 3
    tgt = result.lightcurve["target"]["filter"]["Visible"]
    assert np.ptp(tgt["x"]) > 20  # the field wanders by tens of pixels
    assert np.all(np.isfinite(tgt["flux"])) and np.all(tgt["flux"] > 0)
    assert len(result.comparison_coords) == 15
    assert all(np.hypot(x - result.target_xy[0], y - result.target_xy[1]) > 10
               for x, y in result.comparison_coords)
    assert result.target_coord is TARGET  # kept for the BJD_TDB direction
    assert result.field_photometry is not None


@pytest.mark.slow
@pytest.mark.sample_data
def test_bad_pixel_target_is_refused_before_any_work(calibrated_hatp27):
    from astrodart.pipeline.night import NightResult
    from astrodart.pipeline.night_photometry import night_light_curve

    root, sci = calibrated_hatp27
    result = NightResult(root, "180423", "HAT-P-27", root / "bad", filters=["Visible"],
                         calibrated={"Visible": sci}, fwhm={"Visible": [3.5]},
                         saturation=60000.0, series_filter="Visible")
    args = (5, None, (1, 3.5, 5), (5, 6, 8))
    t = time.perf_counter()
    with pytest.raises(ValueError, match="outside"):
        night_light_curve(result, TARGET, *args, target_xy=(5000, 10), site=SITE)
    with pytest.raises(ValueError, match="no star detected"):  # 47 px from the nearest
        night_light_curve(result, TARGET, *args, target_xy=(300.5, 600.5), site=SITE)
    with pytest.raises(ValueError, match="target_xy"):
        night_light_curve(result, TARGET, *args, target_xy="a,b", site=SITE)
    with pytest.raises(ValueError, match="observatory location is unknown"):
        night_light_curve(result, TARGET, *args, target_xy=TARGET_RAW_PIXEL)
    with pytest.raises(ValueError, match="no RA/DEC"):
        night_light_curve(result, None, *args, target_xy=TARGET_RAW_PIXEL, site=SITE)
    with pytest.raises(ValueError, match="pixel positions"):
        night_light_curve(result, TARGET, [TARGET, TARGET], None, (1, 3.5, 5), (5, 6, 8),
                          target_xy=TARGET_RAW_PIXEL, site=SITE)
    assert time.perf_counter() - t < 30  # refused before the night is measured
    assert result.lightcurve is None
