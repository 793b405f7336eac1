"""``aperture_type='auto'`` (issue 19): the aperture radius of least light-curve scatter.

Two kinds of test:

* Synthetic series whose best radius is known from the noise model: Gaussian stars of a
  known FWHM on a known sky with Poisson and read noise, through a changing transparency.
  For a faint, sky-limited target the best radius is small (~0.7 FWHM for a Gaussian:
  Howell 1989, PASP 101, 616); for a bright, photon-limited one it is large. The expected
  relative variance of the differential curve at each radius follows from the CCD
  equation (target plus the inverse-variance ensemble); 'auto' must pick the model's best
  radius within one grid step.
* The real HAT-P-27b night (calibrated once, as in ``tests/test_photometry_real.py``):
  'auto' scatters no more than the fixed 2.0 x FWHM aperture, and the transit comes out
  with a depth of 0.8-2.0 % (published 1.41 %) near the ephemeris mid-time.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from astrodart.photometry.aperture_choice import (
    AUTO_APERTURE_GRID,
    choose_aperture,
    point_to_point_scatter,
)
from astrodart.photometry.apertures import aperture_photometry_ccd, aperture_photometry_radii
from astrodart.pipeline.photometry import PhotometryRun

FWHM = 3.0
BETA = 2.5  # Moffat wings, as real seeing-limited stars have (a Gaussian's optimum is flat)
ALPHA = FWHM / (2 * math.sqrt(2 ** (1 / BETA) - 1))
SHAPE = (72, 120)
READ_NOISE = 8.0  # e-
R_IN, R_OUT = 3.5, 5.5  # annulus, FWHM


def _enclosed(r):
    """Fraction of a Moffat star's flux within radius ``r`` (pixels)."""
    return 1 - (1 + (r / ALPHA) ** 2) ** (1 - BETA)


def _moffat_star(x0, y0, flux, oversample=5):
    """A Moffat star integrated over the pixels (5 x 5 sub-pixels each), total ``flux``."""
    ny, nx = SHAPE
    yy, xx = np.mgrid[0 : ny * oversample, 0 : nx * oversample]
    xx = (xx + 0.5) / oversample - 0.5
    yy = (yy + 0.5) / oversample - 0.5
    img = (1 + ((xx - x0) ** 2 + (yy - y0) ** 2) / ALPHA**2) ** (-BETA)
    img = img.reshape(ny, oversample, nx, oversample).mean(axis=(1, 3))
    return flux * img * (BETA - 1) / (math.pi * ALPHA**2)


def _series(fluxes, sky, n_frames, seed):
    """Frames in electrons: stars of ``fluxes`` (target first) at fixed places, sky
    ``sky`` e-/px, transparency varying by 3 %, Poisson + read noise; and positions."""
    rng = np.random.default_rng(seed)
    xy = np.array([[20.0 + 27.0 * (i % 4), 18.0 + 36.0 * (i // 4)] for i in range(len(fluxes))])
    xy += rng.uniform(-0.5, 0.5, xy.shape)
    model = sum(_moffat_star(x, y, f) for (x, y), f in zip(xy, fluxes))
    frames = []
    for _ in range(n_frames):
        trans = 1.0 + 0.03 * rng.standard_normal()
        frames.append(rng.poisson(trans * model + sky) + rng.normal(0, READ_NOISE, SHAPE))
    return frames, xy


def _model_best(fluxes, sky, grid):
    """The grid radius of least expected differential scatter (CCD equation, with the
    error of a median sky), and the expected scatter at each radius."""
    n_sky = math.pi * ((R_OUT * FWHM) ** 2 - (R_IN * FWHM) ** 2)
    var_pix = sky + READ_NOISE**2
    total = []
    for f in grid:
        r = f * FWHM
        area = math.pi * r**2
        rel = [(F * _enclosed(r) + area * var_pix + area**2 * (math.pi / 2) * var_pix / n_sky)
               / (F * _enclosed(r)) ** 2 for F in fluxes]
        total.append(rel[0] + 1.0 / sum(1.0 / v for v in rel[1:]))
    return int(np.argmin(total)), np.sqrt(total)


def _choose(frames, xy, grid):
    k = len(grid)
    n = len(frames)
    flux = np.zeros((k, len(xy), n))
    err = np.zeros_like(flux)
    for j, img in enumerate(frames):
        res = aperture_photometry_radii(img, xy, [f * FWHM for f in grid], R_IN * FWHM,
                                        R_OUT * FWHM, gain=1.0, read_noise=READ_NOISE)
        for i, ap in enumerate(res):
            flux[i, :, j], err[i, :, j] = ap.flux, ap.flux_err
    return choose_aperture(grid, np.array(grid) * FWHM, flux[:, 0], err[:, 0], flux[:, 1:],
                           err[:, 1:])


@pytest.mark.parametrize(
    "case, fluxes, sky",
    [
        ("faint, sky-limited", [4000.0] + [5000.0] * 7, 800.0),
        ("bright, photon-limited", [3e5] + [3.75e5] * 7, 100.0),
    ],
)
def test_auto_picks_the_noise_model_best_radius(case, fluxes, sky):
    grid = AUTO_APERTURE_GRID
    best, model_sigma = _model_best(fluxes, sky, grid)
    frames, xy = _series(fluxes, sky, 300, seed=7)
    choice = _choose(frames, xy, grid)
    print(f"\n{case}: model best {grid[best]} x FWHM, chosen {choice.factor}; "
          f"measured / model scatter per radius: "
          + " ".join(f"{f}:{1e3 * s:.2f}/{1e3 * m:.2f}"
                     for f, s, m in zip(grid, choice.scatter, model_sigma)))
    assert abs(choice.best - best) <= 1
    # the measured scatter follows the noise model (point-to-point, robust)
    assert choice.scatter[choice.best] == pytest.approx(model_sigma[best], rel=0.2)
    if case.startswith("faint"):
        assert choice.factor <= 1.2
    else:
        assert choice.factor >= 1.6


def test_one_pass_radii_equal_single_radius_photometry():
    frames, xy = _series([5e4, 8e4, 2e4], 300.0, 1, seed=3)
    img = frames[0]
    mask = np.zeros(SHAPE, bool)
    mask[int(xy[0, 1]), int(xy[0, 0]) + 4] = True
    radii = [2.0, 4.5, 7.0]
    many = aperture_photometry_radii(img, xy, radii, 10.0, 15.0, gain=1.5, read_noise=7.0,
                                     mask=mask, saturation=1e9)
    for r, got in zip(radii, many):
        one = aperture_photometry_ccd(img, xy, r, 10.0, 15.0, gain=1.5, read_noise=7.0,
                                      mask=mask, saturation=1e9)
        for key in ("flux", "flux_err", "sky", "area", "flags", "n_repaired"):
            np.testing.assert_array_equal(getattr(got, key), getattr(one, key))
    # the bad pixel is 3-5 px out: outside the 2-px aperture, repaired inside the larger
    # ones, where it holds too little of the flux to refuse the point
    assert many[0].n_repaired[0] == 0 and many[1].n_repaired[0] > 0.5
    assert many[1].flags[0] == 0 and 0 < many[1].repaired_fraction[0] < 0.02


def test_point_to_point_scatter_ignores_trends_and_sorts_by_time():
    rng = np.random.default_rng(1)
    t = np.linspace(0, 1, 2000)
    y = 1 + 0.05 * np.sin(2 * np.pi * t) + 0.002 * rng.standard_normal(t.size)
    assert point_to_point_scatter(y) == pytest.approx(0.002, rel=0.08)
    order = rng.permutation(t.size)
    assert point_to_point_scatter(y[order], t[order]) == pytest.approx(
        point_to_point_scatter(y), rel=1e-12)
    assert math.isnan(point_to_point_scatter([1.0, np.nan]))


def _write_frames(tmp_path, frames):
    """The frames as FITS files in electrons, 20 s each, one minute apart."""
    from astropy.io import fits
    from astropy.time import Time

    start = Time("2024-03-10T03:00:00", scale="utc")
    paths = []
    for j, img in enumerate(frames):
        hdr = fits.Header({"BUNIT": "electron", "EXPTIME": 20.0, "IMAGETYP": "Light Frame",
                           "DATE-OBS": (start + j * 60 * u.s).isot, "FILTER": "V"})
        path = tmp_path / f"frame_{j:03d}.fits"
        fits.PrimaryHDU(img.astype(np.float32), hdr).writeto(path)
        paths.append(str(path))
    return paths


def test_auto_end_to_end_on_fits_frames(tmp_path):
    fluxes, sky = [1e5] + [1.25e5] * 5, 200.0
    frames, xy = _series(fluxes, sky, 40, seed=11)
    files = _write_frames(tmp_path, frames)
    common = {"obs_location": [40.9, -73.1, 40.0], "read_noise": READ_NOISE,
              "target_skycoord": SkyCoord(150, 20, unit="deg"),
              "fwhm_factors": (1.0, R_IN, R_OUT)}
    run = PhotometryRun("pixel", "auto", [files], ["V"],
                        target_coord=[[tuple(xy[0])] * len(files)],
                        comparison_coord=[[[tuple(p)] * len(files)] for p in xy[1:]],
                        save_results=True, save_data_dir=tmp_path / "out", **common)
    res = run.run_multi_coord()
    choice = run.aperture_choices["V"]
    best, _ = _model_best(fluxes, sky, AUTO_APERTURE_GRID)
    print(f"\nFITS frames: model best {AUTO_APERTURE_GRID[best]}, chosen {choice.factor}")
    assert abs(choice.best - best) <= 2  # 40 frames only: the scatter is known to ~11 %
    tgt = res["target"]["filter"]["V"]
    np.testing.assert_allclose(np.nanmedian(tgt["fwhm"]), FWHM, rtol=0.1)
    np.testing.assert_allclose(tgt["r_ap"], choice.factor * tgt["fwhm"])
    np.testing.assert_allclose(tgt["r_in"], R_IN * tgt["fwhm"])
    assert res["meta"]["aperture_type"] == "auto"
    table = Table.read(tmp_path / "out" / "photometry_results_target_and_comparison_V.ecsv",
                       format="ascii.ecsv")
    assert table.meta["aperture_radius_fwhm"] == choice.factor
    # the chosen radius's light curve is the one a fixed run at that radius gives
    fixed = PhotometryRun("pixel", "fwhm", [files], ["V"],
                          target_coord=[[tuple(xy[0])] * len(files)],
                          comparison_coord=[[[tuple(p)] * len(files)] for p in xy[1:]],
                          **{**common, "fwhm_factors": (choice.factor, R_IN, R_OUT)})
    ref = fixed.run_multi_coord()
    # the run log goes with the results; the frames' own folder receives no file
    assert (tmp_path / "out" / "astrodart_log.jsonl").exists()
    assert not (tmp_path / "astrodart_log.jsonl").exists()
    np.testing.assert_allclose(res["differential"]["filter"]["V"]["rel_flux"],
                               ref["differential"]["filter"]["V"]["rel_flux"], rtol=1e-12)
    # a single star: its own normalised flux decides
    single = PhotometryRun("pixel", "auto", [files], ["V"],
                           single_coord=[[tuple(xy[1])] * len(files)], **common)
    one = single.run_single_coord()
    assert one["meta"]["aperture_choice"]["V"]["chosen_factor"] in AUTO_APERTURE_GRID


def test_auto_options_are_checked_before_any_frame(tmp_path):
    files = [str(tmp_path / "never_read.fits")]
    with pytest.raises(ValueError, match="inside the sky annulus"):
        PhotometryRun("pixel", "auto", [files], ["V"], fwhm_factors=(1.0, 2.5, 4.0))
    with pytest.raises(ValueError, match="aperture_grid"):
        PhotometryRun("pixel", "auto", [files], ["V"], aperture_grid=[1.0])
    with pytest.raises(ValueError, match="'fwhm', 'custom', 'auto'"):
        PhotometryRun("pixel", "best", [files], ["V"])
    run = PhotometryRun("pixel", "auto", [files], ["V"], aperture_grid=[2.0, 0.5, 1.0])
    assert run.aperture_grid == (0.5, 1.0, 2.0)


# ---------------------------------------------------------------------------------------
# the real HAT-P-27b night
# ---------------------------------------------------------------------------------------
from test_photometry_real import PREDICTED_T0, SITE, TARGET, hatp27  # noqa: F401


def _run(night, aperture_type, factors, out=None):
    step0 = night["step"]
    run = PhotometryRun(
        "pixel", aperture_type, [night["files"]], ["Visible"], obs_location=SITE,
        target_coord=step0.target_coord, comparison_coord=step0.comparison_coord,
        target_skycoord=TARGET, fwhm_factors=factors, save_results=out is not None,
        save_data_dir=out, target_name="HAT-P-27", date="180423",
    )
    t0 = time.perf_counter()
    res = run.run_multi_coord()
    seconds = time.perf_counter() - t0
    fit = run.fit_transit(t0=PREDICTED_T0, duration=1.7 / 24)
    blind = run.fit_transit()
    return {"run": run, "res": res, "fit": fit, "blind": blind, "seconds": seconds}


@pytest.fixture(scope="module")
def hatp27_auto(hatp27, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("hatp27_auto")
    fixed = _run(hatp27, "fwhm", (2.0, 3.5, 5.0))
    auto = _run(hatp27, "auto", (1.0, 3.5, 5.0), out)
    choice = auto["run"].aperture_choices["Visible"]
    print("\nHAT-P-27b 'auto':", choice.to_table())
    for name, r in (("fixed 2.0 x FWHM", fixed), ("auto", auto)):
        f, b = r["fit"], r["blind"]
        print(f"  {name}: {r['seconds']:.1f} s, OOT rms {1e3 * f.oot_rms:.2f} ppt, depth "
              f"{100 * f.depth:.2f} +- {100 * f.depth_err:.2f} %, t0 - ephemeris "
              f"{(f.t0 - PREDICTED_T0) * 1440:+.1f} min; blind depth {100 * b.depth:.2f} %, "
              f"t0 {(b.t0 - PREDICTED_T0) * 1440:+.1f} min")
    return {"fixed": fixed, "auto": auto, "choice": choice, "out": out}


@pytest.mark.slow
def test_auto_beats_the_fixed_aperture_on_hatp27(hatp27_auto):
    fixed, auto = hatp27_auto["fixed"], hatp27_auto["auto"]
    assert auto["fit"].oot_rms <= fixed["fit"].oot_rms
    assert 0.008 <= auto["fit"].depth <= 0.020
    assert abs(auto["fit"].t0 - PREDICTED_T0) * 1440 < 20
    assert 0.008 <= auto["blind"].depth <= 0.020
    choice = hatp27_auto["choice"]
    assert choice.scatter[choice.best] == np.nanmin(choice.scatter[np.isfinite(choice.scatter)])
    # one pass: a grid of 13 radii costs well under twice one radius
    assert auto["seconds"] < 2.0 * fixed["seconds"] + 10


@pytest.mark.slow
def test_auto_grid_equals_fixed_apertures_on_hatp27(hatp27, hatp27_auto):  # noqa: F811
    """The 1.0 x FWHM entry of the grid is the fixed 1.0 x FWHM run of
    test_photometry_real (same annulus): the other aperture types' numbers are unchanged."""
    choice = hatp27_auto["choice"]
    k = int(np.flatnonzero(np.isclose(choice.factors, 1.0))[0])
    d = hatp27["res"]["differential"]["filter"]["Visible"]
    assert choice.scatter[k] == pytest.approx(
        point_to_point_scatter(d["rel_flux"], d["timestamps"]), rel=1e-9)


@pytest.mark.slow
def test_auto_choice_is_recorded_on_hatp27(hatp27_auto):
    import h5py

    auto, choice, out = hatp27_auto["auto"], hatp27_auto["choice"], hatp27_auto["out"]
    res = auto["res"]
    rec = res["meta"]["aperture_choice"]["Visible"]
    assert rec["chosen_factor"] == choice.factor
    assert len(rec["scatter_p2p"]) == len(AUTO_APERTURE_GRID)
    assert res["meta"]["fwhm_factors"][0] == choice.factor
    tgt = res["target"]["filter"]["Visible"]
    np.testing.assert_allclose(tgt["r_ap"], choice.factor * tgt["fwhm"])
    table = Table.read(out / "photometry_results_target_and_comparison_Visible.ecsv",
                       format="ascii.ecsv")
    assert table.meta["aperture_radius_fwhm"] == choice.factor
    assert table.meta["aperture_choice"]["Visible"]["scatter_p2p"] == rec["scatter_p2p"]
    with h5py.File(out / "photometry_results_target_and_comparison.h5") as h5:
        grp = h5["meta/aperture_choice/Visible"]
        assert grp["chosen_factor"][()] == choice.factor
        np.testing.assert_allclose(grp["scatter_p2p"][()], choice.scatter)
