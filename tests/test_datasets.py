"""Sample nights: the real-night locator and the simulated night with known truth.

The simulated night is generated once per module (default parameters, ~15 s) and its
frames are checked against its truth.json with simple, independent measurements
(numpy medians, photutils apertures), never by re-running the simulator.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning
from datapaths import HATP32, require
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture, aperture_photometry
from photutils.centroids import centroid_2dg, centroid_sources

from astrodart.datasets import catalogue, detector
from astrodart.datasets import samples as datasets
from astrodart.datasets import simulate as sim
from astrodart.datasets.catalogue import load_catalogue
from astrodart.datasets.samples import SAMPLES, SampleDataNotFound, get_night, sample_night
from astrodart.datasets.simulated_night import simulate_night
from astrodart.datasets.truth import frame_truth_stars, load_truth, truth_wcs
from astrodart.frames.header import FrameHeader
from astrodart.photometry.timing import airmass
from astrodart.utils import data_organiser

#: A small night for the fast tests (determinism, overwrite, fallback).
SMALL = {"shape": (128, 128), "pixel_scale": 24.0, "n_bias": 2, "n_dark": 1, "n_flat": 1,
         "n_science": {"V": 4, "B": 1}, "faint_stars": 20}


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _stack(pattern: str) -> np.ndarray:
    return np.array([fits.getdata(p).astype(np.float64) for p in sorted(glob.glob(pattern))])


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    made = simulate_night(tmp_path_factory.mktemp("simnight"), seed=1)
    truth = load_truth(made.root)
    d = str(made.night_dir) + "/"
    bias = _stack(d + "bias-*").mean(axis=0)
    dark120 = _stack(d + "dark-120s-*").mean(axis=0) - bias
    t_flat = truth["parameters"]["flat_exptimes"]["V"]
    flat_v = _stack(d + "flat-V-*").mean(axis=0) - bias - dark120 * t_flat / 120
    return made, truth, {"bias": bias, "dark120": dark120, "flat_V": flat_v / np.median(flat_v)}


def _calibrated(made, masters, name) -> np.ndarray:
    """A science frame in electrons: bias, dark and flat removed with the night's own masters."""
    raw = fits.getdata(made.night_dir / name).astype(np.float64)
    gain = FrameHeader.from_file(made.night_dir / name).gain
    return (raw - masters["bias"] - masters["dark120"]) / masters["flat_V"] * gain


def _isolated(stars: Table, lo: float, hi: float, shape, radius: float) -> Table:
    """Real stars with lo < flux < hi, inside the frame, no neighbour above 0.5 % of their
    flux within ``radius`` pixels."""
    ny, nx = shape
    keep = []
    for i, s in enumerate(stars):
        if not (s["real"] and lo < s["flux"] < hi and radius < s["x"] < nx - radius
                and radius < s["y"] < ny - radius):
            continue
        sep = np.hypot(stars["x"] - s["x"], stars["y"] - s["y"])
        near = (sep < radius) & (stars["flux"] > 0.005 * s["flux"])
        near[i] = False
        if not near.any():
            keep.append(i)
    return stars[keep]


# ---------------------------------------------------------------------------------------
# the simulated night: layout, headers and truth
# ---------------------------------------------------------------------------------------
def test_default_night_is_fast_small_and_organised(night, tmp_path):
    made, truth, _ = night
    assert made.seconds < 60                     # ~15 s on 2 shared cores
    size = sum(p.stat().st_size for p in made.night_dir.iterdir())
    assert size < 60e6                           # 125 gzipped uint16 frames, ~40 MB
    report = data_organiser(made.root / "uncal_data", made.root / "reduced_data", made.date,
                            "m67", verbose=False).run()
    expected = {("bias", ""): 10, ("dark", 60.0): 5, ("dark", 120.0): 5, ("flat", "B"): 5,
                ("flat", "V"): 5, ("flat", "R"): 5, ("object", "B"): 10, ("object", "V"): 70,
                ("object", "R"): 10}
    assert dict(report.counts) == expected
    assert not report.unclassified and not report.unreadable and not report.other_targets
    assert sum(truth["counts"].values()) == sum(expected.values()) == len(truth["frames"])
    assert truth["counts"]["object/V"] == 70 and truth["counts"]["dark/120"] == 5


def test_headers_are_a_cameras_without_wcs(night):
    made, truth, _ = night
    name = "M67-V-0035.fit.gz"
    path = made.night_dir / name
    raw = fits.getheader(path)
    assert raw["BITPIX"] == 16 and raw["BZERO"] == 32768
    assert fits.getdata(path).dtype == np.uint16
    assert not WCS(raw, fix=False).has_celestial
    assert not any(k in raw for k in ("CTYPE1", "CRVAL1", "CRPIX1", "CD1_1", "PC1_1", "CDELT1"))
    fh = FrameHeader(raw, path)
    assert (fh.frame_type, fh.filter, fh.object, fh.exptime) == ("object", "V", "M67", 120.0)
    assert fh.gain == truth["camera"]["gain"] and fh.read_noise == truth["camera"]["read_noise"]
    assert fh.date_obs.isot == truth["frames"][name]["date_obs"]
    assert fh.location.lat.deg == pytest.approx(truth["site"]["latitude"], abs=1e-3)
    assert fh.location.lon.deg == pytest.approx(truth["site"]["longitude"], abs=1e-3)
    assert fh.pixel_scale == pytest.approx(truth["camera"]["pixel_scale_arcsec"], rel=1e-3)
    # RA/DEC are a pointing hint: near the true centre, not equal to it
    true_centre = truth_wcs(truth, name).pixel_to_world(255.5, 255.5)
    sep = fh.coord.separation(true_centre).arcmin
    assert 0.05 < sep < 5
    kinds = {"bias-0001.fit.gz": "bias", "dark-60s-0003.fit.gz": "dark",
             "flat-R-0002.fit.gz": "flat"}
    for fname, kind in kinds.items():
        assert FrameHeader.from_file(made.night_dir / fname).frame_type == kind
    # the night folder is the local date at dusk; DATE-OBS is UTC, after midnight
    assert made.date == "240209" and fh.date_obs.isot.startswith("2024-02-10")


def test_bias_frames_match_truth(night):
    made, truth, masters = night
    cam = truth["camera"]
    sigma_mean = cam["read_noise"] / cam["gain"] / np.sqrt(np.prod(cam["shape"]))
    for p in sorted(made.night_dir.glob("bias-*")):
        level = fits.getdata(p).astype(np.float64).mean()
        want = cam["bias_level_adu"] + truth["frames"][p.name]["bias_offset_adu"]
        assert abs(level - want) < 6 * sigma_mean + 0.02, p.name
    columns = masters["bias"].mean(axis=0) - masters["bias"].mean()
    assert np.corrcoef(columns, cam["bias_columns_adu"])[0, 1] > 0.97
    # read noise from the difference of two bias frames (Howell 2006, sect. 4.3); a robust
    # width, as a cosmic ray may hit a bias during read-out
    a, b = _stack(str(made.night_dir / "bias-000[12]*"))
    ron = 1.4826 * np.median(np.abs(a - b - np.median(a - b))) / np.sqrt(2) * cam["gain"]
    assert ron == pytest.approx(cam["read_noise"], rel=0.03)


def test_dark_current_and_hot_pixels_match_truth(night):
    made, truth, masters = night
    cam = truth["camera"]
    # the bias level drifts from frame to frame (truth: bias_offset_adu); take it out
    def drift(pattern):
        return np.mean([truth["frames"][p.name]["bias_offset_adu"]
                        for p in made.night_dir.glob(pattern)])

    offset = drift("dark-120s-*") - drift("bias-*")
    rate = (masters["dark120"] - offset) * cam["gain"] / 120.0
    # the mean, not the median: read noise broadens a skewed distribution (glow, hot pixels)
    assert np.mean(rate) == pytest.approx(cam["dark_current_mean_e_per_s"], abs=0.003)
    hot = np.array(cam["hot_pixels_xy_rate"])
    assert len(hot) == round(cam["hot_pixel_fraction"] * np.prod(cam["shape"]))
    x, y, r = hot[:10].T
    np.testing.assert_allclose(rate[y.astype(int), x.astype(int)], r, rtol=0.1)
    # the amplifier glows in the corner (y=0, x=nx-1)
    assert np.median(rate[:20, -20:]) > np.median(rate) + 0.5 * cam["amp_glow"]


def test_flat_matches_vignetting_and_donuts(night):
    _, truth, masters = night
    cam = truth["camera"]
    shape = tuple(cam["shape"])
    donuts = [detector.Donut(*d) for d in cam["donuts"]["window"] + cam["donuts"]["V"]]
    model = detector.flat_response(shape, vignetting=cam["vignetting"],
                              optical_centre=tuple(cam["optical_centre_xy"]), donuts=donuts)
    ratio = masters["flat_V"] / (model / np.median(model))
    assert np.std(ratio[10:-10, 10:-10]) < 0.01                # PRNU 0.5 % + photon noise
    corner, centre = masters["flat_V"][:30, :30].mean(), masters["flat_V"][241:271, 241:271].mean()
    assert corner < 0.92 * centre                               # vignetting
    for d in donuts:                                  # each dust shadow is where truth says
        ring = np.hypot(*np.meshgrid(np.arange(shape[1]) - d.x, np.arange(shape[0]) - d.y))
        on_ring = (ring > 0.6 * d.radius) & (ring < 0.9 * d.radius)
        around = (ring > 1.3 * d.radius) & (ring < 1.8 * d.radius)
        dip = 1 - masters["flat_V"][on_ring].mean() / masters["flat_V"][around].mean()
        assert dip == pytest.approx(1 - model[on_ring].mean() / model[around].mean(), abs=0.006)
        assert dip > 0.5 * d.depth


def test_true_wcs_puts_stars_where_they_are(night):
    made, truth, masters = night
    name = "M67-V-0010.fit.gz"
    img = _calibrated(made, masters, name)
    stars = _isolated(frame_truth_stars(truth, name), 2e4, 2.5e5, img.shape, 12)
    assert len(stars) >= 5
    x, y = centroid_sources(img - np.median(img), stars["x"], stars["y"], box_size=7,
                            centroid_func=centroid_2dg)
    offsets = np.hypot(x - stars["x"], y - stars["y"])
    assert np.median(offsets) < 0.1 and offsets.max() < 0.3
    # frames differ: dither, drift and rotation move the stars between frames
    w1, w2 = truth_wcs(truth, "M67-V-0001.fit.gz"), truth_wcs(truth, "M67-V-0070.fit.gz")
    c = w1.pixel_to_world(256, 256)
    assert np.hypot(*np.subtract(w2.world_to_pixel(c), (256, 256))) > 5
    rot = [truth["frames"][f"M67-V-{i:04d}.fit.gz"]["rotation_deg"] for i in (1, 70)]
    assert rot[1] > rot[0]


def test_star_fluxes_match_truth(night):
    made, truth, masters = night
    ratios = []
    for name in (f"M67-V-{i:04d}.fit.gz" for i in range(10, 71, 10)):
        img = _calibrated(made, masters, name)
        r = 5 * truth["frames"][name]["fwhm_px"]
        stars = _isolated(frame_truth_stars(truth, name), 5e4, 2.5e5, img.shape, r + 10)
        pos = np.c_[stars["x"], stars["y"]]
        ap, ann = CircularAperture(pos, r), CircularAnnulus(pos, r + 4, r + 12)
        sky = ApertureStats(img, ann).median * ap.area
        flux = np.asarray(aperture_photometry(img, ap)["aperture_sum"]) - sky
        ratios += list(flux / stars["flux"])
    # Moffat(beta=3) encircled energy at 5 FWHM is 0.9986; photon, sky and scintillation
    # noise are ~1 % for these stars
    assert len(ratios) >= 10
    assert np.median(ratios) == pytest.approx(1.0, abs=0.01)
    assert np.all(np.abs(np.asarray(ratios) - 1) < 0.05)


def test_saturation_and_cosmic_rays_are_there(night):
    made, truth, _ = night
    cam = truth["camera"]
    name = "M67-V-0030.fit.gz"
    data = fits.getdata(made.night_dir / name).astype(np.float64)
    brightest = frame_truth_stars(truth, name)[0]
    x, y = round(brightest["x"]), round(brightest["y"])
    column = data[:, x]
    at_full_well = np.abs(column - cam["saturation_adu"]) < 5 * cam["read_noise"] / cam["gain"]
    assert at_full_well[y] and at_full_well.sum() >= 3                # a bleed trail
    assert truth["frames"][name]["n_saturated_pixels"] >= at_full_well.sum()
    n_cr = [e["n_cosmic_rays"] for e in truth["frames"].values() if e["type"] == "object"]
    assert np.mean(n_cr) > 1


def test_injected_transit_is_seen_at_the_right_time(night):
    made, truth, masters = night
    tr = truth["transit"]
    assert tr["filter"] == "V" and truth["stars"]["real"][truth["stars"]["id"].index(tr["star_id"])]
    names = sorted(n for n, e in truth["frames"].items()
                   if e["type"] == "object" and e["filter"] == "V")
    per_frame = [frame_truth_stars(truth, n, margin=-15) for n in names]
    comps = set.intersection(*[{s["id"] for s in t if s["real"] and 3e4 < s["flux"] < 2.5e5}
                               for t in per_frame]) - {tr["star_id"]}
    comps = sorted(comps)
    assert len(comps) >= 5
    jd, rel = [], []
    for n, t in zip(names, per_frame):
        e = truth["frames"][n]
        img = _calibrated(made, masters, n)
        ids = list(t["id"])
        rows = [ids.index(tr["star_id"])] + [ids.index(c) for c in comps]
        pos = np.c_[t["x"][rows], t["y"][rows]]
        r = 2.5 * e["fwhm_px"]
        ap, ann = CircularAperture(pos, r), CircularAnnulus(pos, r + 4, r + 10)
        sky = ApertureStats(img, ann).median * ap.area
        f = np.asarray(aperture_photometry(img, ap)["aperture_sum"]) - sky
        jd.append(e["jd_mid_utc"])
        rel.append(f[0] / f[1:].sum())
    jd, rel = np.array(jd), np.array(rel)
    hours = (jd - jd.mean()) * 24

    def fit(t0):
        shape = sim.transit_model(jd, t0, tr["duration_h"] / 24, 0.01, tr["impact_parameter"])
        template = (1 - shape) / 0.01                                   # 1 at full depth
        design = np.c_[np.ones_like(jd), hours, template]
        coef = np.linalg.lstsq(design, rel, rcond=None)[0]
        return -coef[2] / coef[0], np.sum((rel - design @ coef) ** 2)

    depth, _ = fit(tr["t0_jd"])
    assert depth == pytest.approx(tr["depth"], abs=0.004)
    trials = tr["t0_jd"] + np.arange(-1.0, 1.0001, 0.025) / 24
    best = trials[np.argmin([fit(t)[1] for t in trials])]
    assert abs(best - tr["t0_jd"]) * 24 < 0.25                          # within 15 minutes
    no_transit = fit(tr["t0_jd"] + 5 / 24)[0]                            # a wrong time sees nothing
    assert abs(no_transit) < 0.004


def test_simulated_field_plate_solves_offline(night, tmp_path):
    made, truth, _ = night
    name = "M67-V-0040.fit.gz"
    image = tmp_path / "frame.fits"
    fits.writeto(image, fits.getdata(made.night_dir / name).astype(np.float32),
                 fits.getheader(made.night_dir / name))
    scale = truth["camera"]["pixel_scale_arcsec"]
    fh = FrameHeader.from_file(image)
    cmd = ["solve-field", str(image), "--overwrite", "--no-plots", "--dir", str(tmp_path / "out"),
           "--scale-units", "arcsecperpix",
           "--scale-low", str(0.9 * scale), "--scale-high", str(1.1 * scale),
           "--ra", f"{fh.coord.ra.deg}", "--dec", f"{fh.coord.dec.deg}", "--radius", "2",
           "--cpulimit", "60", "--new-fits", "none", "--corr", "none", "--rdls", "none",
           "--match", "none", "--index-xyls", "none"]
    index_dir = os.environ.get("ASTRODART_INDEX_DIR")
    if index_dir:                        # index files outside the system's astrometry.cfg
        cfg = tmp_path / "astrometry.cfg"
        cfg.write_text(f"add_path {index_dir}\nautoindex\n")
        cmd += ["--config", str(cfg)]
    if shutil.which("solve-field") is None:
        raise FileNotFoundError("solve-field not installed: run .ci/install (apt-get install "
                                "astrometry.net astrometry-data-tycho2-*)")
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    with warnings.catch_warnings():      # the .wcs file is a header without an image
        warnings.simplefilter("ignore", FITSFixedWarning)
        solved = WCS(fits.getheader(tmp_path / "out" / "frame.wcs"))
    true = truth_wcs(truth, name)
    centre = (255.5, 255.5)
    assert solved.pixel_to_world(*centre).separation(true.pixel_to_world(*centre)).arcsec < 3
    corner = (10.0, 500.0)
    assert solved.pixel_to_world(*corner).separation(true.pixel_to_world(*corner)).arcsec < 5


# ---------------------------------------------------------------------------------------
# determinism, overwrite protection, argument checking
# ---------------------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes(tmp_path):
    a = simulate_night(tmp_path / "a", seed=7, **SMALL)
    b = simulate_night(tmp_path / "b", seed=7, workers=1, **SMALL)
    c = simulate_night(tmp_path / "c", seed=8, **SMALL)
    ha, hb, hc = _hashes(a.root), _hashes(b.root), _hashes(c.root)
    assert ha == hb and len(ha) == 2 + 2 + 2 + 5 + 2   # bias, darks, flats V B, science, truth
    assert "uncal_data/truth_maps.fits" in ha           # truth.json and its per-pixel maps,
    assert "uncal_data/truth.json" in ha                # with the raw data, never in dest itself
    assert not set(ha.values()) & set(hc.values())


def test_overwrite_is_explicit_and_never_touches_other_files(tmp_path):
    simulate_night(tmp_path, seed=1, **SMALL)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        simulate_night(tmp_path, seed=1, **SMALL)
    fewer = dict(SMALL, n_science={"V": 2})
    made = simulate_night(tmp_path, seed=2, overwrite=True, **fewer)
    assert len(list(made.night_dir.iterdir())) == 2 + 2 + 1 + 2
    foreign = made.night_dir / "my_own_frame.fits"
    shutil.copy(made.files["bias"][0], foreign)
    with pytest.raises(FileExistsError, match="my_own_frame.fits"):
        simulate_night(tmp_path, seed=3, overwrite=True, **fewer)
    assert foreign.exists()


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(TypeError):
        simulate_night(tmp_path, seed=0, n_sciences={"V": 3})            # misspelt option
    with pytest.raises(ValueError, match="filters"):
        simulate_night(tmp_path, seed=0, n_science={"I": 3})
    with pytest.raises(ValueError, match="transit_depth"):
        simulate_night(tmp_path, seed=0, transit_depth=0.5)
    with pytest.raises(TypeError):
        sim.simulate_frame((32, 32), rng=np.random.default_rng(0), exptime=1.0, gain=1.0,
                           read_noise=1.0, sky_level=3.0)
    assert not list(tmp_path.rglob("*.fit*"))


# ---------------------------------------------------------------------------------------
# the pure building blocks
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("psf", sim.PSF_MODELS)
def test_render_stars_integrates_flux_and_width(psf):
    img = sim.render_stars((120, 120), [60.3], [59.6], [1e5], 3.0, psf=psf)
    assert img.sum() == pytest.approx(1e5, rel=1e-9)                     # whole star inside
    edge = sim.render_stars((120, 120), [60.0], [119.4], [1e5], 3.0, psf=psf)
    assert 0.45e5 < edge.sum() < 0.6e5                                   # about half off the edge
    yy, xx = np.mgrid[:120, :120]
    if psf == "moffat":           # sampled at pixel centres, half maximum at FWHM / 2
        fine = sim.render_stars((120, 120), [60.0], [60.0], [1e5], 4.0, psf=psf, oversample=1)
        assert fine[60, 62] / fine[60, 60] == pytest.approx(0.5, rel=1e-9)
    else:                         # integrated over pixels: variance sigma^2 + 1/12
        var = (img * (xx - 60.3) ** 2).sum() / img.sum()
        assert var == pytest.approx(float(sim.gaussian_sigma(3.0)) ** 2 + 1 / 12, rel=1e-3)
    assert (img * xx).sum() / img.sum() == pytest.approx(60.3, abs=0.01)  # centred where asked
    assert (img * yy).sum() / img.sum() == pytest.approx(59.6, abs=0.01)


def test_simulate_frame_noise_follows_the_ccd_equation():
    rng = np.random.default_rng(3)
    gain, ron, sky = 1.6, 7.0, 900.0
    fr = sim.simulate_frame((200, 200), rng=rng, exptime=60.0, gain=gain, read_noise=ron,
                            bias=500.0, sky=sky)
    adu = fr.data.astype(np.float64)
    assert adu.mean() == pytest.approx(500 + sky / gain, abs=0.2)
    # variance in ADU^2 = (signal + RON^2) / gain^2 + quantisation 1/12  (Howell 2006, ch. 4)
    assert adu.var() == pytest.approx((sky + ron ** 2) / gain ** 2 + 1 / 12, rel=0.03)
    star = sim.simulate_frame((64, 64), rng=rng, exptime=10.0, gain=1.0, read_noise=5.0,
                              bias=100.0, x=[32], y=[32], flux=[5e6], fwhm=2.0, full_well=5e4)
    sat = star.saturated_mask
    assert sat[32, 32] and sat[:, 32].sum() > sat[32].sum()        # bleeds along the column
    assert (star.data <= 65535).all() and star.data.dtype == np.uint16
    cr = sim.simulate_frame((64, 64), rng=rng, exptime=1.0, gain=1.0, read_noise=1.0,
                            n_cosmic_rays=3)
    assert cr.cosmic_ray_mask.any() and cr.data[cr.cosmic_ray_mask].mean() > 200


def test_transit_model_depth_contacts_and_shape():
    t = np.linspace(-1, 1, 2001)
    f = sim.transit_model(t, 0.0, 1.0, 0.01, impact=0.2)
    assert f.min() == pytest.approx(0.99, abs=1e-9)
    assert f[np.abs(t) >= 0.5].min() == 1.0 and f[np.abs(t) < 0.499].max() < 1.0
    assert np.allclose(f, f[::-1])                                       # symmetric
    with pytest.raises(ValueError):
        sim.transit_model(t, 0.0, 1.0, 0.04, impact=0.9)


def test_tan_wcs_orientation_and_airmass():
    w = sim.tan_wcs((100, 100), 150.0, 20.0, 3.6, rotation=0.0)
    x0, y0 = w.world_to_pixel_values(150.0, 20.0)
    xe, _ = w.world_to_pixel_values(150.01, 20.0)       # east is left
    _, yn = w.world_to_pixel_values(150.0, 20.01)       # north is up
    assert (x0, y0) == pytest.approx((49.5, 49.5)) and xe < x0 and yn > y0
    assert abs(w.proj_plane_pixel_scales()[0].to_value("arcsec") - 3.6) < 1e-9
    # airmass (the photometry's, which the simulator uses): 1 at the zenith, ~2 at 30 degrees
    # altitude, NaN below the horizon
    site, t = EarthLocation.from_geodetic(0.0, 40.0), Time(2451545.0, format="jd")
    gmst = (280.46061837) % 360
    assert airmass(t, SkyCoord(gmst, 40.0, unit="deg"), site) == pytest.approx(1.0, abs=1e-3)
    assert airmass(t, SkyCoord(gmst, -20.0, unit="deg"), site) == pytest.approx(1.993, abs=0.01)
    assert np.isnan(airmass(t, SkyCoord(gmst + 180, -10.0, unit="deg"), site))


# ---------------------------------------------------------------------------------------
# the catalogue is real
# ---------------------------------------------------------------------------------------
def test_shipped_catalogue_is_the_tycho2_index_stars():
    shipped = load_catalogue()
    rebuilt = catalogue.build_field_catalogue(radius=shipped.meta["radius_deg"],
                                             colour_seed=shipped.meta["colour_seed"])
    assert len(shipped) == len(rebuilt) > 50
    for col in ("ra", "dec", "vt", "V", "B", "R"):
        np.testing.assert_array_equal(np.asarray(shipped[col]), np.asarray(rebuilt[col]))
    assert list(shipped["id"]) == list(rebuilt["id"])
    known = {r["tyc"]: (r["vt"], r["bt"]) for r in shipped if r["colour_source"] == "tycho2 BT"}
    assert known == {"TYC 814-2331": (9.969, 11.581), "TYC 814-1795": (10.072, 10.018),
                     "TYC 814-1531": (10.520, 11.915), "TYC 814-1493": (10.523, 12.075)}
    assert Path(catalogue.CATALOGUE_PATH).stat().st_size < 1e6


# ---------------------------------------------------------------------------------------
# real sample nights and the fallback
# ---------------------------------------------------------------------------------------
def test_sample_night_copies_a_real_night(tmp_path):
    src = require(HATP32)
    night = sample_night("hatp32", tmp_path)
    assert night == tmp_path / "uncal_data" / SAMPLES["hatp32"].date
    originals = sorted(p for p in src.iterdir() if p.is_file() and p.name != "README.md")
    assert sorted(p.name for p in night.iterdir()) == [p.name for p in originals]
    assert all((night / p.name).read_bytes() == p.read_bytes() for p in originals)


def test_missing_sample_names_every_place_looked(tmp_path, monkeypatch):
    env_dir, other = tmp_path / "env_samples", tmp_path / "elsewhere"
    env_dir.mkdir()
    monkeypatch.setenv("ASTRODART_SAMPLE_DATA", str(env_dir))
    monkeypatch.setattr(datasets, "_default_search_dirs", lambda: [other])
    with pytest.raises(SampleDataNotFound) as err:
        sample_night("hatp27b", tmp_path / "dest")
    msg = str(err.value)
    assert str(env_dir / "hatp27b_sbu_180423") in msg and str(other / "hatp27b_sbu_180423") in msg
    assert "ASTRODART_SAMPLE_DATA" in msg
    with pytest.raises(KeyError, match="known: hatp27b"):
        sample_night("nosuch", tmp_path)


def test_get_night_prefers_the_real_night(tmp_path):
    require(HATP32)
    real = get_night(tmp_path / "real", sample="hatp32")
    assert real.source == "real" and real.truth_path is None
    assert len(list(real.night_dir.iterdir())) == 10


def test_get_night_falls_back_to_the_simulated_night(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTRODART_SAMPLE_DATA", str(tmp_path / "nothing"))
    monkeypatch.setattr(datasets, "_default_search_dirs", list)
    fallback = get_night(tmp_path / "sim", seed=2, simulate_options=SMALL)
    assert fallback.source == "simulated" and "unavailable" in fallback.reason
    assert fallback.truth_path.exists() and fallback.target == "M67"
    assert len(load_truth(fallback.truth_path)["frames"]) == len(list(fallback.night_dir.iterdir()))
    with pytest.raises(TypeError):
        get_night(tmp_path / "x", simulate_options={"n_sciense": {"V": 3}})
    with pytest.raises(ValueError, match="prefer"):
        get_night(tmp_path / "x", prefer="fake")


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server serving the HAT-P-32 frames as their public source does."""
    import functools
    import http.server
    import threading

    root = tmp_path / "mirror"
    root.mkdir()
    for p in require(HATP32).glob("*.FITS"):
        (root / p.name).write_bytes(p.read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_verifies_every_file_against_its_pinned_hash(mirror, tmp_path):
    root, url = mirror
    got = datasets.download_sample("hatp32", tmp_path / "cache", base_url=url, progress=False)
    files = sorted(got.iterdir())
    assert [p.name for p in files] == sorted(p.name for p in root.iterdir())
    assert all(p.read_bytes() == (root / p.name).read_bytes() for p in files)
    # one flipped byte on the server: the pinned sha256 refuses it and nothing is kept
    bad = sorted(root.iterdir())[3]
    raw = bytearray(bad.read_bytes())
    raw[-1] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="(?i)sha256|hash"):
        datasets.download_sample("hatp32", tmp_path / "cache2", base_url=url, progress=False)
    assert not (tmp_path / "cache2" / bad.name).exists()


def test_download_failure_and_unpinned_sample_are_clear(tmp_path):
    with pytest.raises(SampleDataNotFound, match="could not download"):
        datasets.download_sample("hatp32", tmp_path / "c", base_url="http://127.0.0.1:9/",
                                 timeout=2, progress=False)
    with pytest.raises(SampleDataNotFound, match="no pinned public source"):
        datasets.download_sample("m67", tmp_path / "c")
    # every file of the real nights has a pin: the shared copies hash to them
    pins = json.loads(datasets.SAMPLE_SOURCES_PATH.read_text())
    assert len(pins["hatp27b"]["files"]) == 130 and len(pins["hatp32"]["files"]) == 10
