"""Stage 3 photometry on synthetic frames with known truth.

The frames are made here: pixel-integrated Gaussian stars of known flux on a flat sky,
Poisson noise in electrons plus Gaussian read noise, converted to ADU with a known gain,
a drift and a changing seeing from frame to frame. The recovered fluxes must agree with
the truth *within their own errors*: the reduced chi-square of (measured - true) / error
over every star and frame must be 0.8-1.2 — errors that are too small or too large both
fail.
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.table import Table
from astropy.time import Time, TimeDelta
from astropy.wcs import WCS
from datapaths import HATP32, copy_night

from astrodart.photometry.apertures import PhotFlag, aperture_photometry_ccd
from astrodart.photometry.ensemble import ensemble_light_curve
from astrodart.photometry.lightcurve import bin_light_curve
from astrodart.photometry.transit import fit_transit, time_averaged_beta, trapezoid_model
from astrodart.datasets import simulate
from astrodart.second_stage import astrometry, get_fwhm
from astrodart.frames.io import write_frame
from astrodart.third_stage_photometry import (
    InteractiveUnavailableError,
    PhotometryWarning,
    check_image,
    coordinates,
    photometry,
    plot_light_curve,
    track_positions,
    track_stars,
)

GAIN = 2.0  # e-/ADU
READ_NOISE = 8.0  # e-
SKY = 300.0  # e-/pixel
EXPTIME = 30.0  # s
SHAPE = (300, 300)
SITE = [40.91, -73.12, 40.0]
TARGET = SkyCoord("14h51m04.2s", "+05d56m50s", frame="icrs")
START = Time("2018-04-23T03:00:00", scale="utc")
SCALE = 1.0  # arcsec/pixel of the synthetic WCS


# ----------------------------------------------------------------------------- truth
def render_stars(shape, xs, ys, fluxes, fwhm):
    """Circular Gaussian stars integrated over each pixel (erf), total flux ``fluxes``: the
    package's simulator (:func:`astrodart.datasets.simulate.render_stars`)."""
    return simulate.render_stars(shape, xs, ys, fluxes, fwhm, psf="gaussian")


def star_field(rng, n_side=7, spacing=38.0, first=36.0):
    """Stars on a jittered grid (>= 32 px apart, >= 33 px from the edges)."""
    g = first + spacing * np.arange(n_side)
    xx, yy = np.meshgrid(g, g)
    xy = np.column_stack([xx.ravel(), yy.ravel()]) + rng.uniform(-2, 2, (n_side * n_side, 2))
    flux_e = np.exp(rng.uniform(np.log(3e4), np.log(1e6), len(xy)))
    return xy, flux_e


def make_night(
    directory,
    *,
    n_frames=20,
    seed=1,
    rn_in_header=True,
    uncertainty=False,
    with_wcs=False,
    saturate=60000.0,
):
    """Write a synthetic night; return the truth."""
    rng = np.random.default_rng(seed)
    xy, flux_e = star_field(rng)
    directory.mkdir(parents=True, exist_ok=True)
    drift = np.column_stack([np.linspace(0, 4, n_frames), np.linspace(0, -3, n_frames)])
    drift += rng.normal(0, 0.3, drift.shape)
    fwhm = np.linspace(3.0, 4.2, n_frames) + rng.normal(0, 0.1, n_frames)
    files, truth_xy, starts = [], [], []
    for i in range(n_frames):
        pos = xy + drift[i]
        electrons = render_stars(SHAPE, pos[:, 0], pos[:, 1], flux_e, fwhm[i]) + SKY
        noisy = rng.poisson(electrons).astype(float) + rng.normal(0, READ_NOISE, SHAPE)
        adu = (noisy / GAIN).astype(np.float32)
        header = fits.Header()
        start = START + TimeDelta(60.0 * i, format="sec")
        header["DATE-OBS"] = start.isot
        header["EXPTIME"] = EXPTIME
        header["GAIN"] = GAIN
        if rn_in_header:
            header["RDNOISE"] = READ_NOISE
        header["FILTER"] = "V"
        header["IMAGETYP"] = "Light Frame"
        header["SATURATE"] = saturate
        if with_wcs:
            w = WCS(naxis=2)
            w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
            w.wcs.crval = [TARGET.ra.deg, TARGET.dec.deg]
            w.wcs.crpix = [151.0 + drift[i, 0], 151.0 + drift[i, 1]]  # 1-based
            w.wcs.cdelt = [-SCALE / 3600, SCALE / 3600]
            header.update(w.to_header())
        unc = None
        if uncertainty:  # as deviation_calculation writes it: from the noisy data
            unc = StdDevUncertainty(
                (np.sqrt(np.clip(noisy, 0, None) + READ_NOISE**2) / GAIN).astype(np.float32)
            )
        path = directory / f"synthetic_{i:03d}.fits"
        write_frame(CCDData(adu, unit="adu", meta=header, uncertainty=unc), path)
        files.append(str(path))
        truth_xy.append(pos)
        starts.append(start)
    base_sky = None
    if with_wcs:
        w0 = WCS(fits.getheader(files[0]))
        base_sky = w0.pixel_to_world(truth_xy[0][:, 0], truth_xy[0][:, 1])
    return {
        "files": files,
        "xy": np.array(truth_xy),
        "flux_adu": flux_e / GAIN,
        "fwhm": fwhm,
        "starts": starts,
        "sky": base_sky,
    }


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    return make_night(tmp_path_factory.mktemp("night"))


@pytest.fixture(scope="module")
def night_no_rn(tmp_path_factory):
    return make_night(tmp_path_factory.mktemp("night_no_rn"), seed=2, rn_in_header=False)


@pytest.fixture(scope="module")
def night_unc(tmp_path_factory):
    return make_night(tmp_path_factory.mktemp("night_unc"), seed=3, uncertainty=True)


@pytest.fixture(scope="module")
def night_wcs(tmp_path_factory):
    return make_night(tmp_path_factory.mktemp("night_wcs"), seed=4, with_wcs=True, n_frames=12)


def pixel_inputs(truth, rng, jitter=1.5):
    """target_coord[filter][file], comparison_coord[star][filter][file] from the truth,
    each position off by up to ``jitter`` px (re-centring must fix it)."""
    xy = truth["xy"] + rng.uniform(-jitter, jitter, truth["xy"].shape)
    n_star = xy.shape[1]
    target = [[tuple(xy[j, 0]) for j in range(len(truth["files"]))]]
    comps = [[[tuple(xy[j, s]) for j in range(len(truth["files"]))]] for s in range(1, n_star)]
    return target, comps


def all_stars(res, filt="V"):
    stars = [res["target"]["filter"][filt]]
    stars += [c["filter"][filt] for c in res["comparison_stars"].values()]
    return stars


def pulls(res, truth, filt="V"):
    stars = all_stars(res, filt)
    measured = np.array([s["flux"] for s in stars])  # (n_star, n_frame)
    err = np.array([s["flux_err"] for s in stars])
    true = truth["flux_adu"][:, None]
    return (measured - true) / err


# ----------------------------------------------------------------- flux accuracy
@pytest.mark.parametrize("case", ["ccd_equation", "measured_sky_noise", "uncertainty_plane"])
def test_fluxes_agree_with_truth_within_their_errors(case, night, night_no_rn, night_unc):
    truth = {
        "ccd_equation": night,
        "measured_sky_noise": night_no_rn,
        "uncertainty_plane": night_unc,
    }[case]
    rng = np.random.default_rng(10)
    target, comps = pixel_inputs(truth, rng)
    step = photometry(
        "pixel",
        "fwhm",
        [truth["files"]],
        ["V"],
        obs_location=SITE,
        target_coord=target,
        comparison_coord=comps,
        target_skycoord=TARGET,
    )
    res = step.run_multi_coord()
    z = pulls(res, truth)
    chi2 = float(np.mean(z**2))
    print(f"{case}: reduced chi-square {chi2:.3f} over {z.size} points, mean pull {z.mean():+.3f}")
    assert z.size >= 900
    assert 0.8 <= chi2 <= 1.2
    assert abs(z.mean()) < 0.15
    assert np.max(np.abs(z)) < 5
    flags = np.array([s["flags"] for s in all_stars(res)])
    assert np.all(flags == 0)
    # re-centring recovers the true positions (0-based) from 1.5-px-off guesses
    x = np.array([s["x"] for s in all_stars(res)]).T
    y = np.array([s["y"] for s in all_stars(res)]).T
    dpos = np.hypot(x - truth["xy"][:, :, 0], y - truth["xy"][:, :, 1])
    assert np.median(dpos) < 0.05 and dpos.max() < 0.5
    # FWHM apertures follow the seeing: 2.5, 3.5, 4.5 x the measured FWHM
    t = res["target"]["filter"]["V"]
    assert np.allclose(t["fwhm"], truth["fwhm"], rtol=0.05)
    assert np.allclose(t["r_ap"], 2.5 * t["fwhm"]) and np.allclose(t["r_out"], 4.5 * t["fwhm"])


def test_magnitudes_and_errors(night):
    rng = np.random.default_rng(11)
    target, _ = pixel_inputs(night, rng)
    res = photometry(
        "pixel",
        "fwhm",
        [night["files"]],
        ["V"],
        obs_location=SITE,
        single_coord=target,
        target_skycoord=TARGET,
    ).run_single_coord()
    obj = res["object"]["filter"]["V"]
    expected = 25 - 2.5 * np.log10(obj["flux"] / EXPTIME)
    assert np.allclose(obj["mag_ins"], expected)
    assert np.allclose(obj["mag_err"], 2.5 / np.log(10) * obj["flux_err"] / obj["flux"])
    assert set(res) == {"object", "files", "meta"}
    assert res["object"]["coords"]["x"]["unit"] == "pixel"


# ------------------------------------------------------------------------- timing
def test_timestamps_are_bjd_tdb_at_mid_exposure(night):
    rng = np.random.default_rng(12)
    target, comps = pixel_inputs(night, rng)
    res = photometry(
        "pixel",
        "fwhm",
        [night["files"]],
        ["V"],
        obs_location=SITE,
        target_coord=target,
        comparison_coord=comps[:3],
        target_skycoord=TARGET,
    ).run_multi_coord()
    stamps = res["target"]["filter"]["V"]["timestamps"]
    from astropy.coordinates import AltAz, EarthLocation

    site = EarthLocation.from_geodetic(
        lon=SITE[1] * u.deg, lat=SITE[0] * u.deg, height=SITE[2] * u.m
    )
    for j, start in enumerate(night["starts"]):
        t = Time(start.isot, scale="utc", location=site) + TimeDelta(EXPTIME / 2, format="sec")
        bjd = (t.tdb + t.light_travel_time(TARGET)).jd
        assert abs(stamps[j] - bjd) * 86400 < 1.0
        secz = TARGET.transform_to(AltAz(obstime=t, location=site)).secz.value
        assert res["target"]["filter"]["V"]["airmass"][j] == pytest.approx(secz, rel=0.01)
    # comparisons carry the same (target-direction) time stamps
    assert np.array_equal(
        res["comparison_stars"]["comparison_1"]["filter"]["V"]["timestamps"], stamps
    )
    assert "BJD_TDB" in res["meta"]["time_scale"]


def test_bjd_needs_a_sky_direction(night):
    rng = np.random.default_rng(13)
    target, comps = pixel_inputs(night, rng)
    step = photometry(
        "pixel",
        "custom",
        [night["files"][:3]],
        ["V"],
        obs_location=SITE,
        target_coord=[target[0][:3]],
        comparison_coord=[[c[0][:3]] for c in comps[:2]],
        radius_phot=8,
        radius_annulus=12,
        radius_dannulus=16,
    )
    with pytest.raises(ValueError, match="target_skycoord"):
        step.run_multi_coord()


# ------------------------------------------------------------------ sky + WCS
def test_sky_method_with_wcs_and_arcsec_radii(night_wcs):
    truth = night_wcs
    sky = truth["sky"]
    step = photometry(
        "sky",
        "custom",
        [truth["files"]],
        ["V"],
        obs_location="Mt Stony Brook",
        target_coord=sky[0],
        comparison_coord=[sky[i] for i in range(1, len(sky))],
        radius_phot=10.0,
        radius_annulus=13.0,
        radius_dannulus=17.0,
    )
    res = step.run_multi_coord()
    z = pulls(res, truth)
    chi2 = float(np.mean(z**2))
    assert 0.75 <= chi2 <= 1.25 and np.max(np.abs(z)) < 5
    t = res["target"]["filter"]["V"]
    assert np.allclose(t["r_ap"], 10.0 / SCALE)  # arcsec -> pixels through the WCS
    assert np.allclose(t["x"], truth["xy"][:, 0, 0], atol=0.02)  # placed by each frame's WCS
    assert res["target"]["coords"]["ra"]["value"] == pytest.approx(sky[0].ra.deg)


def test_coordinates_between_pixels_and_sky(night_wcs):
    truth = night_wcs
    files = truth["files"][:4]
    px = coordinates(files=files, world_coordinates=truth["sky"][0]).world_to_px()
    for j, (x, y) in enumerate(px):
        assert (x, y) == pytest.approx(tuple(truth["xy"][j, 0]), abs=1e-6)
    many = coordinates(
        files=files, world_coordinates=[truth["sky"][0], truth["sky"][5]]
    ).world_to_px()
    assert len(many[0]) == 2 and many[0][1] == pytest.approx(tuple(truth["xy"][0, 5]), abs=1e-6)
    back = coordinates(files=files, pixel_coordinates=px).px_to_world()
    for c in back:
        assert c.separation(truth["sky"][0]).arcsec < 1e-3
    # from_index on a frame with a WCS returns sky positions of the numbered stars
    positions = check_image(files[0], threshold=5, plot=False).run()
    target, comps = coordinates(
        files=files, reference_frame=0, target_index=0, comparison_stars_indeces=[1, 2]
    ).from_index()
    assert isinstance(target, SkyCoord) and all(isinstance(c, SkyCoord) for c in comps)
    nearest = np.argmin(np.hypot(*(truth["xy"][0] - positions[0]).T))
    assert target.separation(truth["sky"][nearest]).arcsec < 0.3


def test_no_wcs_means_pixel_positions(night):
    files = night["files"][:2]
    target, comps = coordinates(
        files=files, reference_frame=0, target_index=0, comparison_stars_indeces=[1, 2, 3]
    ).from_index()
    assert isinstance(target, tuple) and len(target) == 2 and len(comps) == 3
    with pytest.raises(ValueError, match="WCS"):
        coordinates(files=files, world_coordinates=TARGET).world_to_px()
    with pytest.raises(ValueError, match="WCS"):
        coordinates(files=files, pixel_coordinates=[(10, 10), (10, 10)]).px_to_world()
    with pytest.raises(IndexError, match="target_index"):
        coordinates(files=files, target_index=500, comparison_stars_indeces=[1]).from_index()
    with pytest.raises(ValueError, match="both"):
        coordinates(files=files, target_index=1, comparison_stars_indeces=[1, 2]).from_index()


def test_from_image_outside_a_notebook_says_what_to_do(night):
    with pytest.raises(InteractiveUnavailableError, match="from_index"):
        coordinates(files=night["files"], reference_frame=0).from_image()


def test_from_image_in_a_notebook_reads_the_picker(night, monkeypatch):
    """The notebook path with the widget replaced by a stub that 'clicked' stars 3, 1, 2."""
    import astrodart.ui.widgets as widgets

    class StubPicker:
        def __init__(self, image, stars=None, **options):
            self.stars, self.target_index, self.comparison_indices = stars, None, []

        def _repr_mimebundle_(self, **kwargs):
            return {"text/plain": "star picker"}

    monkeypatch.setattr(widgets, "frontend_available", lambda: True)
    monkeypatch.setattr(widgets, "star_picker", StubPicker)
    selection = coordinates(files=night["files"], reference_frame=0).from_image()
    assert selection._repr_mimebundle_() == {"text/plain": "star picker"}
    with pytest.raises(ValueError, match="choose"):
        selection.result()  # nothing clicked yet
    with pytest.raises(InteractiveUnavailableError, match="next cell"):
        target, comps = selection  # AstroDART's one-cell unpacking
    selection.picker.target_index, selection.picker.comparison_indices = 3, [1, 2]
    target, comps = selection.result()
    assert target == pytest.approx(tuple(selection.positions[3]))
    assert len(comps) == 2


# ------------------------------------------------------------------- check_image
def test_check_image_numbers_stars_brightest_first(night):
    ci = check_image(night["files"][0], threshold=5, plot=True)
    positions = ci.run()
    flux = np.asarray(ci.sources["flux"])
    assert np.all(np.diff(flux) <= 0)
    assert list(ci.sources["id"][:3]) == [0, 1, 2]
    assert len(positions) >= 45
    # star 0 is the brightest true star, star 1 the second
    order = np.argsort(night["flux_adu"])[::-1]
    for k in range(2):
        d = np.hypot(*(night["xy"][0, order[k]] - positions[k]))
        assert d < 0.2
    assert ci.fwhm == pytest.approx(night["fwhm"][0], rel=0.1)
    fig = ci.figure
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert {"0", "1", "2"} <= labels


def test_no_matplotlib_at_import():
    code = (
        "import sys, astrodart.third_stage_photometry as m; from astrodart.third_stage_photometry "
        "import *; import astrodart.ui.lightcurve_plot, astrodart.photometry.ensemble, "
        "astrodart.photometry.timing, astrodart.photometry.sites; print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ arguments
def test_unknown_and_bad_arguments_are_rejected(night):
    files = [night["files"][:2]]
    with pytest.raises(TypeError, match="radius_phto"):
        photometry("pixel", "custom", files, ["V"], radius_phto=5)
    with pytest.raises(ValueError, match="phot_method"):
        photometry("pix", "fwhm", files, ["V"])
    with pytest.raises(ValueError, match="aperture_type"):
        photometry("pixel", "gaussian", files, ["V"])
    with pytest.raises(ValueError, match="radius_phot"):
        photometry("pixel", "custom", files, ["V"], radius_phot=5)
    with pytest.raises(ValueError, match="radius"):
        photometry(
            "pixel", "custom", files, ["V"], radius_phot=10, radius_annulus=8, radius_dannulus=12
        )
    with pytest.raises(ValueError, match="save_data_dir"):
        photometry("pixel", "fwhm", files, ["V"], save_results=True)
    from astrodart.photometry.sites import UnknownSiteError

    with pytest.raises(UnknownSiteError):
        photometry("pixel", "fwhm", files, ["V"], obs_location="Observatorio del Tiede")
    with pytest.raises(ValueError, match="filters"):
        photometry("pixel", "fwhm", files, ["V", "R"])
    step = photometry(
        "pixel",
        "fwhm",
        files,
        ["V"],
        obs_location=SITE,
        target_coord=[[(10, 10)]],
        comparison_coord=[[[(20, 20)] * 2]],
    )
    with pytest.raises(ValueError, match="target_coord"):
        step.run_multi_coord()  # one position for two files
    # AstroDART's demo spells the comparisons multi_coord=
    alias = photometry("pixel", "fwhm", files, ["V"], multi_coord=[[[(20, 20)] * 2]])
    assert alias.comparison_coord == [[[(20, 20)] * 2]]


# --------------------------------------------------------------------- flags
def test_flags_saturation_bad_pixels_and_edges():
    rng = np.random.default_rng(5)
    xs = np.array([50.0, 120.0, 196.0, 60.0])
    ys = np.array([50.0, 120.0, 100.0, 160.0])
    flux = np.array([5e6, 2e5, 2e5, 2e5])
    img = render_stars((200, 200), xs, ys, flux, 3.0) + SKY
    img = (rng.poisson(img) + rng.normal(0, READ_NOISE, img.shape)) / GAIN
    mask = np.zeros(img.shape, bool)
    mask[120, 121] = True  # a bad pixel inside star 1's aperture
    img[160, 60] = np.nan  # a non-finite pixel in star 3's core
    res = aperture_photometry_ccd(
        img,
        np.column_stack([xs, ys]),
        7.5,
        10.5,
        13.5,
        gain=GAIN,
        read_noise=READ_NOISE,
        mask=mask,
        saturation=60000.0,
    )
    assert res.flags[0] & PhotFlag.SATURATED
    assert res.flags[1] & PhotFlag.BAD_PIXEL and not res.flags[1] & PhotFlag.SATURATED
    assert res.flags[2] & PhotFlag.OFF_IMAGE
    assert res.flags[3] & PhotFlag.BAD_PIXEL
    # bad pixels in an aperture are repaired and summed (no flux lost), counted, and a
    # point whose repaired pixels hold more than 2 % of the flux (a core pixel) is refused
    assert res.area[1] == pytest.approx(math.pi * 7.5**2)
    assert res.n_repaired[1] == pytest.approx(1.0) and res.n_repaired[3] == pytest.approx(1.0)
    assert res.repaired_fraction[1] > 0.02 and res.repaired_fraction[3] > 0.02
    assert res.n_repaired[0] == 0 and res.repaired_fraction[0] == 0
    with pytest.raises(ValueError):
        aperture_photometry_ccd(img, [(50, 50)], 8, 6, 10)


def test_bad_frame_is_reported_and_skipped(night, tmp_path):
    files = list(night["files"][:5])
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"not a fits file at all")
    files[2] = str(broken)
    rng = np.random.default_rng(14)
    target, comps = pixel_inputs(night, rng)
    t = [target[0][:5]]
    c = [[comp[0][:5]] for comp in comps[:4]]
    step = photometry(
        "pixel",
        "fwhm",
        [files],
        ["V"],
        obs_location=SITE,
        target_coord=t,
        comparison_coord=c,
        target_skycoord=TARGET,
    )
    with pytest.warns(PhotometryWarning, match="broken.fits"):
        res = step.run_multi_coord()
    tgt = res["target"]["filter"]["V"]
    assert tgt["flags"][2] & PhotFlag.FAILED and np.isnan(tgt["flux"][2])
    assert np.all(tgt["flags"][[0, 1, 3, 4]] == 0)
    assert not res["differential"]["filter"]["V"]["valid"][2]


# --------------------------------------------------------------- tracking
def test_track_positions_follows_the_drift(night):
    files = night["files"]
    ref = night["xy"][0, [0, 10, 20]]
    tracked = track_positions(files, ref)
    for j, p in enumerate(tracked):
        assert np.max(np.hypot(*(p - night["xy"][j, [0, 10, 20]]).T)) < 0.3
    via_coordinates = coordinates(files=files, pixel_coordinates=ref, reference_frame=0).track_px()
    assert np.allclose(via_coordinates[-1], tracked[-1])
    target_coord, comp_coord = track_stars([files], tuple(ref[0]), [tuple(ref[1]), tuple(ref[2])])
    assert len(target_coord) == 1 and len(target_coord[0]) == len(files)
    assert len(comp_coord) == 2 and len(comp_coord[1][0]) == len(files)
    assert target_coord[0][-1] == pytest.approx(tuple(night["xy"][-1, 0]), abs=0.3)


def _track_both_ways(files, caplog):
    """track_stars from the sky positions of stars 0, 1, 2 of files[0] and from their pixel
    positions; returns both results as arrays (star, file, xy) and the log text."""
    target, comps = coordinates(
        files=files, reference_frame=0, target_index=0, comparison_stars_indeces=[1, 2]
    ).from_index()
    assert isinstance(target, SkyCoord)
    ref_px = coordinates(files=files, world_coordinates=[target, *comps]).world_to_px()[0]
    with caplog.at_level("INFO", logger="astrodart"):
        t_sky, c_sky = track_stars([files], target, comps)
        t_px, c_px = track_stars([files], ref_px[0], ref_px[1:])
    sky = np.array([t_sky[0], *[c[0] for c in c_sky]])
    px = np.array([t_px[0], *[c[0] for c in c_px]])
    return sky, px, caplog.text


def test_track_stars_takes_pixel_or_sky_positions(night_wcs, caplog):
    files = night_wcs["files"]
    sky, px, text = _track_both_ways(files, caplog)
    assert sky.shape == px.shape == (3, len(files), 2)
    assert np.max(np.hypot(*(sky - px).T)) < 0.5
    assert "got sky positions" in text and "got pixel positions" in text
    # a list of SkyCoord (any frame) and a SkyCoord array are both sky positions
    stars = night_wcs["sky"]
    t1, c1 = track_stars([files[:3]], stars[0], [stars[1].fk5, stars[2]])
    t2, c2 = track_stars([files[:3]], stars[0], stars[1:3])
    assert np.allclose(c1, c2, atol=1e-6) and np.allclose(t1, t2)
    assert t1[0][2] == pytest.approx(tuple(night_wcs["xy"][2, 0]), abs=0.02)


def test_track_stars_sky_and_pixel_agree_on_real_hatp32(tmp_path, caplog):
    files = [str(p) for p in copy_night(HATP32, tmp_path)][:4]
    fwhm = get_fwhm(files[:1]).estimate_fwhm()
    assert astrometry(str(tmp_path), files, None, fwhm * len(files)).run() == []
    sky, px, text = _track_both_ways(files, caplog)
    assert np.max(np.hypot(*(sky - px).T)) < 0.5  # WCS conversion vs star-pattern tracking
    assert "got sky positions" in text and "got pixel positions" in text


def test_track_stars_rejects_what_it_cannot_use(night):
    files = night["files"][:2]
    for bad in ("abc", {"x": 1}, 5, [(1, 2, 3)]):
        with pytest.raises(TypeError, match=r"target must be pixel positions .* or sky positions"):
            track_stars([files], bad, [])
    with pytest.raises(TypeError, match="comparisons must be .* got str"):
        track_stars([files], (10, 10), "star 1")
    with pytest.raises(TypeError, match="both in pixels or both as SkyCoord"):
        track_stars([files], TARGET, [(10.0, 10.0)])
    with pytest.raises(TypeError, match="one position"):
        track_stars([files], [(10, 10), (20, 20)], [])
    with pytest.raises(ValueError, match=r"synthetic_000\.fits: no celestial WCS"):
        track_stars([files], TARGET, [])


def test_image_offset_by_phase_correlation(night):
    from astrodart.alignment.correlation import fft_translation
    from astrodart.frames.io import read_frame

    a = read_frame(night["files"][0]).data
    b = read_frame(night["files"][-1]).data
    dx, dy, _ratio = fft_translation(a, b)
    true = night["xy"][-1, 0] - night["xy"][0, 0]
    assert (dx, dy) == pytest.approx(tuple(true), abs=0.5)


# ---------------------------------------------------------------- ensemble
def test_ensemble_downweights_a_variable_comparison():
    rng = np.random.default_rng(7)
    n = 300
    t = np.linspace(0, 0.2, n)
    transparency = 1 - 0.1 * np.sin(20 * t) ** 2  # clouds: common to all stars
    base = np.array([2e5, 1.5e5, 1e5, 8e4, 6e4])
    noise = 0.004 * np.sqrt(2e5 / base)  # fainter -> noisier
    comp = base[:, None] * transparency[None, :] * (1 + noise[:, None] * rng.normal(size=(5, n)))
    comp[2] *= 1 + 0.03 * np.sin(2 * np.pi * t / 0.07)  # a 3 % variable star
    comp_err = base[:, None] * noise[:, None] * np.ones((1, n))
    depth = 0.012
    transit = trapezoid_model(t, 0.1, depth, 0.07, 0.012)
    target = 1e5 * transparency * transit * (1 + 0.003 * rng.normal(size=n))
    target_err = 1e5 * 0.003 * np.ones(n)
    ens = ensemble_light_curve(target, target_err, comp, comp_err)
    d = ens.diagnostics
    assert bool(d["variable"][2]) and ens.weights[2] == 0
    assert not np.any(d["variable"][[0, 1, 3, 4]])
    w = ens.weights[[0, 1, 3, 4]]
    assert np.all(np.diff(w) < 0)  # brighter = quieter = heavier
    assert ens.weights.sum() == pytest.approx(1.0)
    # with the variable dropped, the light curve is the transit, normalised out of transit
    oot = np.abs(t - 0.1) > 0.04
    resid = ens.rel_flux / np.median(ens.rel_flux[oot]) - transit
    assert np.std(resid) < 0.005
    pull = resid / ens.rel_flux_err
    assert 0.7 < np.std(pull) < 1.3
    assert d["excess"][2] > 3 * np.median(d["excess"][[0, 1, 3, 4]])


def test_ensemble_rejects_bad_shapes():
    with pytest.raises(ValueError):
        ensemble_light_curve(np.ones(5), np.ones(5), np.ones((2, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError):
        ensemble_light_curve(np.ones(5), np.ones(5), np.full((2, 5), np.nan), np.ones((2, 5)))


# -------------------------------------------------------------- transit fit
def test_fit_transit_recovers_a_synthetic_transit():
    rng = np.random.default_rng(8)
    t = np.linspace(2458231.62, 2458231.75, 150)
    true = {"t0": 2458231.6783, "depth": 0.014, "t14": 1.7 / 24, "t12": 0.012}
    sigma = 0.004
    model = trapezoid_model(t, **true) * (1.0 + 0.02 * (t - t.mean()))
    flux = model + sigma * rng.normal(size=t.size)
    fit = fit_transit(t, flux, np.full(t.size, sigma))
    assert abs(fit.t0 - true["t0"]) < 4 * fit.t0_err
    assert abs(fit.depth - true["depth"]) < 4 * fit.depth_err
    assert abs(fit.t14 - true["t14"]) < 4 * fit.t14_err
    assert fit.t0_err * 1440 < 5 and fit.depth_err < 0.002
    assert 0.7 < fit.chi2_red < 1.3
    assert fit.oot_rms == pytest.approx(sigma, rel=0.2)
    assert "depth" in fit.summary()
    # the guess and an airmass term
    am = 1.2 + 2 * (t - t.mean()) ** 2
    fit2 = fit_transit(
        t, flux, np.full(t.size, sigma), t0=2458231.67, duration=0.07, airmass=am
    )
    assert abs(fit2.t0 - true["t0"]) < 4 * fit2.t0_err
    with pytest.raises(ValueError):
        fit2.model(t)  # needs the airmass


def test_time_averaged_beta_detects_red_noise():
    rng = np.random.default_rng(9)
    white = rng.normal(size=400)
    red = white + np.repeat(rng.normal(size=20), 20) * 1.0
    assert time_averaged_beta(white) < 1.3
    assert time_averaged_beta(red) > 1.5


def test_bin_light_curve():
    t = np.arange(30) / 1440.0
    f = np.ones(30)
    e = np.full(30, 0.01)
    tb, fb, eb, n = bin_light_curve(t, f, e, 10 / 1440.0)
    assert list(n) == [10, 10, 10] and np.allclose(fb, 1) and np.allclose(eb, 0.01 / math.sqrt(10))


# --------------------------------------------------------------- saving, plots
def test_save_results_writes_hdf5_and_ecsv(night, tmp_path):
    rng = np.random.default_rng(15)
    target, comps = pixel_inputs(night, rng)
    out = tmp_path / "results"
    step = photometry(
        "pixel",
        "fwhm",
        [night["files"]],
        ["V"],
        obs_location="OT",
        target_coord=target,
        comparison_coord=comps[:5],
        target_skycoord=TARGET,
        save_results=True,
        save_data_dir=out,
        target_name="synthetic",
    )
    res = step.run_multi_coord()
    h5 = out / "photometry_results_target_and_comparison.h5"
    ecsv = out / "photometry_results_target_and_comparison_V.ecsv"
    assert h5.exists() and ecsv.exists()
    with h5py.File(h5, "r") as f:
        assert np.allclose(f["target/filter/V/flux"][()], res["target"]["filter"]["V"]["flux"])
        assert np.allclose(
            f["comparison_stars/comparison_5/filter/V/timestamps"][()],
            res["target"]["filter"]["V"]["timestamps"],
        )
        assert np.allclose(
            f["differential/filter/V/rel_flux"][()],
            res["differential"]["filter"]["V"]["rel_flux"],
            equal_nan=True,
        )
        assert f["meta/phot_method"][()].decode() == "pixel"
        assert len(f["files/V"][()]) == len(night["files"])
    table = Table.read(ecsv, format="ascii.ecsv")
    assert len(table) == len(night["files"])
    assert np.allclose(table["target_flux"], res["target"]["filter"]["V"]["flux"])
    assert np.allclose(table["bjd_tdb"], res["target"]["filter"]["V"]["timestamps"])
    assert table.meta["filter"] == "V"
    # explicit overwrite='no' refuses to replace the files
    step2 = photometry(
        "pixel",
        "fwhm",
        [night["files"]],
        ["V"],
        obs_location="OT",
        target_coord=target,
        comparison_coord=comps[:5],
        target_skycoord=TARGET,
        save_results=True,
        save_data_dir=out,
        overwrite="no",
    )
    with pytest.raises(FileExistsError):
        step2.run_multi_coord()


def test_light_curve_plot_is_saved(night, tmp_path):
    rng = np.random.default_rng(16)
    target, comps = pixel_inputs(night, rng)
    step = photometry(
        "pixel",
        "fwhm",
        [night["files"]],
        ["V"],
        obs_location=SITE,
        target_coord=target,
        comparison_coord=comps[:6],
        target_skycoord=TARGET,
    )
    step.run_multi_coord()
    fig = step.plot(path=tmp_path / "lc.png", bin_minutes=5)
    assert (tmp_path / "lc.png").stat().st_size > 10_000
    assert len(fig.axes) == 3  # target, comparisons, airmass
    d = step.results["differential"]["filter"]["V"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig2 = plot_light_curve(d["timestamps"], d["rel_flux"], d["rel_flux_err"])
    assert len(fig2.axes) == 1


def test_star_matcher_shift_and_flip():
    from astrodart.alignment.matching import match_stars
    from astrodart.alignment.transforms import AlignmentError

    rng = np.random.default_rng(17)
    ref = rng.uniform(0, 1000, (40, 2))
    # a small rotation and a drift: found by offset votes
    ang = 0.003
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    moved = ref @ rot.T + [35.0, -12.0]
    m = match_stars(ref, moved + rng.normal(0, 0.05, moved.shape))[0]
    assert np.max(np.abs(m.apply(ref) - moved)) < 0.2
    # a meridian flip (180 degrees): found by astroalign's triangles
    flipped = (1000 - ref) + [5.0, 8.0]
    order = rng.permutation(40)
    m = match_stars(ref, flipped[order])[0]
    assert np.max(np.abs(m.apply(ref) - flipped)) < 0.2
    with pytest.raises(AlignmentError):
        match_stars(ref[:2], flipped)


def test_two_filters(night, tmp_path):
    """files[filter][file] with two filters: tracked from one reference, measured per filter."""
    per_filter = [night["files"][:6], night["files"][6:12]]
    ref = night["xy"][0]
    target_coord, comp_coord = track_stars(per_filter, tuple(ref[0]), [tuple(p) for p in ref[1:5]])
    assert len(target_coord) == 2 and len(comp_coord[0][1]) == 6
    step = photometry(
        "pixel",
        "fwhm",
        per_filter,
        ["V", "R"],
        obs_location=SITE,
        target_coord=target_coord,
        comparison_coord=comp_coord,
        target_skycoord=TARGET,
        save_results=True,
        save_data_dir=tmp_path,
    )
    res = step.run_multi_coord()
    for k, filt in enumerate(["V", "R"]):
        tgt = res["target"]["filter"][filt]
        assert np.allclose(tgt["x"], night["xy"][6 * k : 6 * k + 6, 0, 0], atol=0.1)
        assert np.all(res["differential"]["filter"][filt]["valid"])
        assert (tmp_path / f"photometry_results_target_and_comparison_{filt}.ecsv").exists()
    assert list(res["files"]) == ["V", "R"]
