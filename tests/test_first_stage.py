"""Stage 1 at file level (astrodart.first_stage): accuracy on a synthetic night of known
truth, the real HAT-P-27b night end to end, bad input, and the AstroDART surface."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats

import astrodart.first_stage as fs
from astrodart.calibration import pixels as det
from astrodart.first_stage import (
    CalibrationError,
    CalibrationWarning,
    bad_pixel_correction,
    bad_pixel_map,
    calibration_chain,
    correct_flatfield,
    cosmic_ray_laplacian_correction,
    cosmic_ray_median_correction,
    dark_current,
    dark_interpolation,
    deviation_calculation,
    finalize_stage1,
    gain_correction,
    master_frame,
    overscan_correction,
    photon_transfer,
    subtract_bias,
    subtract_dark,
    trimmer,
)
from astrodart.frames.io import read_frame, read_header
from astrodart.pipeline.step import FrameSkippedWarning
from conftest import SyntheticCamera

QUIET = dict(progress=False)
REGION = "[5:252,3:254]"  # x 5..252, y 3..254 (1-based, inclusive)
ROWS, COLS = slice(2, 254), slice(4, 252)  # the same in numpy


# ---------------------------------------------------------------------------------------
# a synthetic night laid out as data_organiser does, reduced with the step classes
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    data_dir = root / "reduced_data" / "200101" / "SYN"
    cam = SyntheticCamera(ny=256, nx=256, seed=42)
    d = {k: data_dir / k for k in ("bias", "dark/10", "dark/60", "flat/V", "object/V")}
    bias = cam.write_series(d["bias"], "bias", "bias", 15, 0.0)
    dark10 = cam.write_series(d["dark/10"], "dark", "dark", 10, 10.0)
    dark60 = cam.write_series(d["dark/60"], "dark", "dark", 10, 60.0)
    flats = cam.write_series(d["flat/V"], "flat", "flat", 10, 5.0, flat_lamp=25000.0)
    stars, star_img = cam.stars(n=30, fwhm=3.5, flux_range=(5e3, 3e5))
    sky, texp = 500.0, 30.0
    science, hits = [], []
    for i in range(6):
        h, cimg = cam.cosmic_rays(25, avoid=stars[:, :2])
        hits.append(h)
        raw = cam.expose(texp, photons=star_img, sky=sky, cosmics=cimg)
        science.append(
            cam.write(
                d["object/V"] / f"sci_{i:03d}.fits", raw, cam.header("object", texp, OBJECT="SYN")
            )
        )

    ptc = photon_transfer(bias[:4], flats[:4]).run()

    def pre(wdir, files):
        r = trimmer(wdir, files, REGION, "yes", **QUIET).run()
        r = deviation_calculation(wdir, r, "yes", ron=ptc.read_noise, **QUIET).run()
        return gain_correction(wdir, r, "yes", **QUIET).run()

    mb = master_frame(
        d["bias"], pre(d["bias"], bias), "masterbias.fits", "median", "sigclip", 3, 3
    ).run()
    md = {}
    for t, files, key in ((10, dark10, "dark/10"), (60, dark60, "dark/60")):
        r = subtract_bias(d[key], pre(d[key], files), mb, "yes", **QUIET).run()
        md[t] = master_frame(d[key], r, f"masterdark_{t}s.fits", "median", "sigclip", 3, 3).run()
    f = subtract_bias(d["flat/V"], pre(d["flat/V"], flats), mb, "yes", **QUIET).run()
    f = subtract_dark(d["flat/V"], f, [md[10], md[60]], "yes", **QUIET).run()
    mf = master_frame(
        d["flat/V"], f, "masterflat_V.fits", "median", "sigclip", 3, 3, frame_type="flat"
    ).run()
    bpm = bad_pixel_map(d["dark/60"], md[60], mf).run()
    s = pre(d["object/V"], science)
    cr = cosmic_ray_laplacian_correction(d["object/V"], s, "yes", mask_file=bpm, **QUIET).run()
    s = subtract_bias(d["object/V"], cr, mb, "yes", **QUIET).run()
    s = subtract_dark(d["object/V"], s, [md[10], md[60]], "yes", **QUIET).run()
    calibrated = correct_flatfield(d["object/V"], s, mf, "yes", **QUIET).run()
    return dict(
        cam=cam,
        root=root,
        data_dir=data_dir,
        dirs=d,
        ptc=ptc,
        mb=mb,
        md=md,
        mf=mf,
        bpm=bpm,
        cr=cr,
        calibrated=calibrated,
        stars=stars,
        star_img=star_img,
        sky=sky,
        texp=texp,
        hits=hits,
        raw=dict(bias=bias, dark10=dark10, dark60=dark60, flats=flats, science=science),
    )


def _trimmed(a):
    return np.asarray(a)[ROWS, COLS]


def test_detector_properties_recovered(synthetic):
    cam, ptc = synthetic["cam"], synthetic["ptc"]
    assert ptc.gain == pytest.approx(cam.gain, rel=0.03)
    assert ptc.read_noise == pytest.approx(cam.read_noise, rel=0.05)


def test_master_bias_within_its_noise(synthetic):
    cam = synthetic["cam"]
    mb = read_frame(synthetic["mb"])
    truth = _trimmed(cam.bias_adu) * cam.gain  # e-
    resid = mb.data - truth
    expected = np.sqrt(1.526) * cam.read_noise / np.sqrt(15)  # median of 15 frames
    assert abs(np.mean(resid)) < 5 * expected / np.sqrt(resid.size) + 0.05
    assert np.std(resid) == pytest.approx(expected, rel=0.05)
    assert np.median(mb.uncertainty.array) == pytest.approx(np.std(resid), rel=0.05)
    h = mb.meta
    assert h["NCOMBINE"] == 15 and h["ADMASTER"] == "bias" and h["ADCMETH"] == "median"
    assert h["ADCCLIP"] == "sigclip" and h["ADCLOW"] == 3 and h["ADCHIGH"] == 3
    names = [h[f"IMCMB{i:03d}"] for i in range(1, 16)]
    assert names[0].endswith("bias_000.fits") and names[0].startswith("gain_corrected_")
    assert mb.unit == "electron"


def test_master_dark_and_interpolation_within_noise(synthetic, tmp_path, caplog):
    cam, md = synthetic["cam"], synthetic["md"]
    for t in (10, 60):
        m = read_frame(md[t])
        resid = m.data - _trimmed(cam.dark_rate) * t
        ok = ~_trimmed(cam.hot)
        assert abs(np.mean(resid[ok])) < 0.3
        assert np.std(resid[ok]) == pytest.approx(np.median(m.uncertainty.array[ok]), rel=0.05)
        assert m.meta["EXPTIME"] == t and m.meta["ADBIASSB"] is True
    # a 30 s dark from the 10 s and 60 s masters (bias-subtracted: t = 0 is zero dark)
    path = dark_interpolation(tmp_path, [md[10], md[60]], 30).run()
    d30 = read_frame(path)
    resid = d30.data - _trimmed(cam.dark_rate) * 30
    ok = ~_trimmed(cam.hot)
    assert abs(np.mean(resid[ok])) < 0.3
    assert np.std(resid[ok]) == pytest.approx(np.median(d30.uncertainty.array[ok]), rel=0.05)
    # hot pixels too: the model is per pixel
    hot = _trimmed(cam.hot)
    z = resid[hot] / d30.uncertainty.array[hot]
    assert np.percentile(np.abs(z), 90) < 3
    assert d30.meta["EXPTIME"] == 30 and d30.meta["ADDKINTP"] and d30.meta["NCOMBINE"] == 2
    # the same with raw (not bias-subtracted) masters and the master bias as t = 0
    raw_masters = []
    for t, key in ((10, "dark/10"), (60, "dark/60")):
        g = sorted(Path(synthetic["dirs"][key]).glob("gain_corrected_*.fits"))
        raw_masters.append(master_frame(tmp_path, g, f"rawdark_{t}s.fits", frame_type="dark").run())
    with pytest.raises(CalibrationError, match="two different exposure times"):
        dark_interpolation(tmp_path, raw_masters[:1], 30, "one.fits").run()
    # an existing output made from other masters is not reused: it is rebuilt, and said
    old = tmp_path / "masterdark_30s_interpolated.fits"
    assert old.exists()
    from astrodart.pipeline.step import OutputRecomputedWarning

    with pytest.warns(OutputRecomputedWarning, match="input frame changed; rebuilt"):
        rebuilt = dark_interpolation(tmp_path, raw_masters, 30,
                                     masterbias_file=synthetic["mb"]).run()
    assert fits.getheader(rebuilt)["NCOMBINE"] == 3  # two raw masters + the master bias
    p = dark_interpolation(
        tmp_path, raw_masters, 30, "raw30.fits", masterbias_file=synthetic["mb"]
    ).run()
    with_bias = read_frame(p)
    resid = with_bias.data - (_trimmed(cam.bias_adu) * cam.gain + _trimmed(cam.dark_rate) * 30)
    assert abs(np.mean(resid[ok])) < 0.5
    assert np.std(resid[ok]) < 1.15 * np.median(with_bias.uncertainty.array[ok])
    assert with_bias.meta["ADBIASSB"] is False


def test_master_flat_within_its_noise(synthetic):
    cam = synthetic["cam"]
    mf = read_frame(synthetic["mf"])
    truth = _trimmed(cam.flat)
    ny, nx = truth.shape
    c = (slice(ny // 4, ny - ny // 4), slice(nx // 4, nx - nx // 4))
    norm = mf.data / np.median(mf.data[c])
    resid = norm - truth / np.median(truth[c])
    ok = ~_trimmed(cam.dead)
    assert np.std(resid[ok]) == pytest.approx(np.median(mf.uncertainty.array[ok]), rel=0.05)
    assert np.std(resid[ok]) < 0.003  # 10 flats of 25 000 e-
    assert mf.meta["ADMASTER"] == "flat" and mf.meta["ADCNORM"]


def test_calibrated_science_matches_truth_and_its_uncertainty(synthetic):
    """The uncertainty plane matches the empirical scatter about the truth within 10 %."""
    truth = _trimmed(synthetic["star_img"] + synthetic["sky"])  # e-, flat removed
    bpm = read_frame(synthetic["bpm"]).data > 0
    zs, means = [], []
    for path in synthetic["calibrated"]:
        c = read_frame(path)
        assert np.isfinite(c.data).all() and np.isfinite(c.uncertainty.array).all()
        good = ~bpm & ~np.asarray(c.mask, bool)
        resid = c.data - truth
        z = resid[good] / c.uncertainty.array[good]
        zs.append(z)
        means.append(np.median(resid[good]))
    z = np.concatenate(zs)
    _, zmed, zstd = sigma_clipped_stats(z, sigma=5)
    assert zstd == pytest.approx(1.0, abs=0.1)
    assert abs(np.median(means)) < 0.01 * synthetic["sky"]
    # the chain is recorded in every output
    h = read_header(synthetic["calibrated"][0])
    steps = [h[k] for k in h if k.startswith("ADSTEP")]
    assert steps == [
        "trimmer",
        "deviation_calculation",
        "gain_correction",
        "cosmic_ray_laplacian_correction",
        "subtract_bias",
        "subtract_dark",
        "correct_flatfield",
    ]
    history = "\n".join(str(x) for x in h["HISTORY"])
    assert "masterbias.fits" in history and "masterflat_V.fits" in history


def test_cosmic_rays_removed_in_the_chain(synthetic):
    found = total = 0
    for path, hits in zip(synthetic["cr"], synthetic["hits"]):
        mask = np.asarray(read_frame(path).mask, bool)
        for px in hits:
            y, x = px[:, 0] - ROWS.start, px[:, 1] - COLS.start
            inside = (y >= 0) & (y < mask.shape[0]) & (x >= 0) & (x < mask.shape[1])
            if inside.all():
                total += 1
                found += bool(mask[y, x].any())
        stars = synthetic["stars"]
        for sx, sy, _ in stars:
            yi, xi = int(round(sy)) - ROWS.start, int(round(sx)) - COLS.start
            assert not mask[yi - 1 : yi + 2, xi - 1 : xi + 2].any()
    assert found >= 0.95 * total and total > 100


def test_bad_pixel_map_and_repair(synthetic, tmp_path):
    cam = synthetic["cam"]
    bpm = read_frame(synthetic["bpm"]).data.astype(np.uint8)
    strong = _trimmed(cam.hot & (cam.dark_rate > 2))
    assert ((bpm & (det.BAD_HOT | det.BAD_WARM)) > 0)[strong].all()
    assert ((bpm & det.BAD_FLAT_LOW) > 0)[_trimmed(cam.dead)].all()
    assert read_header(synthetic["bpm"])["ADBPHOT"] > 50
    out = bad_pixel_correction(
        tmp_path, synthetic["calibrated"][:1], synthetic["bpm"], "yes", **QUIET
    ).run()
    c = read_frame(out[0])
    repaired = (bpm & det.REPAIR_BITS) > 0
    assert c.mask[repaired].all() and c.meta["ADNBADPX"] == repaired.sum()
    truth = _trimmed(synthetic["star_img"] + synthetic["sky"])
    dead = _trimmed(cam.dead)
    assert np.all(np.abs(c.data[dead] - truth[dead]) < 6 * np.sqrt(truth[dead] + 200))


def test_one_pass_chain_equals_the_step_chain(synthetic, tmp_path):
    """calibration_chain (read once, write once) gives the step chain's frames."""
    out = calibration_chain(
        tmp_path,
        synthetic["raw"]["science"][:2],
        "yes",
        region=REGION,
        ron=synthetic["ptc"].read_noise,
        cosmic_rays="lacosmic",
        masterbias_file=synthetic["mb"],
        masterdark_file=[synthetic["md"][10], synthetic["md"][60]],
        masterflatfield_file=synthetic["mf"],
        badpixel_file=synthetic["bpm"],
        **QUIET,
    ).run()
    assert [Path(p).name for p in out] == ["calibrated_sci_000.fits", "calibrated_sci_001.fits"]
    for fused, steps in zip(out, synthetic["calibrated"][:2]):
        a, b = read_frame(fused), read_frame(steps)
        assert np.allclose(a.data, b.data, rtol=1e-5, atol=1e-3)
        # uncertainty planes are stored quantised (steps of 1/16 of a tile's spread, about
        # 1e-3 relative a write): the step chain writes and re-reads them six times, the
        # one-pass chain once (measured: median 6e-4, largest 4e-3 relative)
        rel = np.abs(a.uncertainty.array - b.uncertainty.array) / b.uncertainty.array
        assert np.median(rel) < 1e-3 and rel.max() < 6e-3
        assert np.array_equal(a.mask, b.mask)
        steps_a = [a.meta[k] for k in a.meta if k.startswith("ADSTEP")]
        assert steps_a == [b.meta[k] for k in b.meta if k.startswith("ADSTEP")]
    with pytest.raises(CalibrationError, match="master bias.*256x256 px; trim"):
        calibration_chain(
            tmp_path / "x",
            synthetic["raw"]["science"][:1],
            "yes",
            masterbias_file=synthetic["mb"],
            ron=12,
            **QUIET,
        ).run()


def test_finalize_keeps_masters_and_is_found_again(synthetic, tmp_path):
    from astrodart.utils import get_directory

    src = synthetic["data_dir"]
    data_dir = tmp_path / "SYN"
    shutil.copytree(src, data_dir)
    g = get_directory(data_dir)
    bias_dir, _ = g.bias()
    dark_dirs, _, groups = g.dark()
    flat_dirs, _, _ = g.flatfield()
    obj_dirs, obj_files, filters = g.science()
    assert groups == [10.0, 60.0] and filters == ["V"] and len(obj_files[0]) == 6
    # two masters of the same name in two folders are both kept
    shutil.copy2(
        data_dir / "dark" / "10" / "masterdark_10s.fits",
        data_dir / "dark" / "10" / "masterdark.fits",
    )
    shutil.copy2(
        data_dir / "dark" / "60" / "masterdark_60s.fits",
        data_dir / "dark" / "60" / "masterdark.fits",
    )
    masters_before = {p.name for p in data_dir.rglob("master*.fits")}
    dirs, files = finalize_stage1(
        str(data_dir) + "/", obj_dirs, bias_dir, dark_dirs, flat_dirs
    ).run()
    assert dirs == [str(data_dir / "V") + "/"] and len(files[0]) == 6
    assert all(Path(f).name.startswith("flatfield_corrected_") for f in files[0])
    kept = {p.name for p in (data_dir / "calibration").iterdir()}
    assert masters_before <= kept and "master_badpixel_map.fits" in kept
    assert "dark_60_masterdark.fits" in kept
    assert read_header(data_dir / "calibration" / "dark_60_masterdark.fits")["EXPTIME"] == 60
    assert {p.name for p in data_dir.rglob("master*.fits")} >= masters_before  # originals stay
    # raw copies stay; intermediates are gone
    assert len(list((data_dir / "object" / "V").glob("sci_*.fits"))) == 6
    assert not list(data_dir.rglob("trimmed_*")) and not list(data_dir.rglob("deviation_*"))
    assert len(list((data_dir / "bias").glob("bias_*.fits"))) == 15
    # the masters and the bad-pixel map are not taken for raw frames
    assert len(get_directory(data_dir).dark()[1][1]) == 10
    assert len(get_directory(data_dir).bias()[1]) == 15
    d2, f2, filt2 = get_directory(data_dir).science_final()
    assert d2 == dirs and f2 == files and filt2 == ["V"]
    assert finalize_stage1(data_dir, obj_dirs, bias_dir).run() == (dirs, files)  # idempotent


# ---------------------------------------------------------------------------------------
# the real night
# ---------------------------------------------------------------------------------------
N_SCIENCE = 16


def _grid_flatness(img) -> float:
    ny, nx = img.shape
    vals = [
        sigma_clipped_stats(img[i * ny // 8 : (i + 1) * ny // 8, j * nx // 8 : (j + 1) * nx // 8])[
            1
        ]
        for i in range(8)
        for j in range(8)
    ]
    return float(np.std(vals) / np.mean(vals))


@pytest.fixture(scope="module")
def real_night(tmp_path_factory, hatp27_dir):
    """The guide's chain plus darks on the real night laid out by data_organiser."""
    from astrodart.utils import data_organiser, get_directory, header_tools, image_combination

    root = tmp_path_factory.mktemp("hatp27")
    night = root / "uncal_data" / "180423"
    night.mkdir(parents=True)
    pick = (
        sorted(hatp27_dir.glob("*bias_frame*"))
        + sorted(hatp27_dir.glob("*dark_frame*"))
        + sorted(hatp27_dir.glob("*dome_flat*"))
        + sorted(hatp27_dir.glob("*science_exposures*"))[:N_SCIENCE]
    )
    for p in pick:
        shutil.copy2(p, night / p.name)
    files = sorted(night.iterdir())
    header_tools(
        [f for f in files if "dome_flat" in f.name], {"IMAGETYP": "Flat Field"}
    ).update_header_values()
    header_tools(
        [f for f in files if "science" in f.name], {"OBJECT": "HAT-P-27"}
    ).append_header_key()
    org = data_organiser(
        root / "uncal_data", root / "reduced_data", "180423", "HAT-P-27", verbose=False
    )
    org.run()
    data_dir = org.get_directory()
    g = get_directory(data_dir)
    bias_dir, bias_files = g.bias()
    dark_dirs, dark_files, dark_groups = g.dark()
    flat_dirs, flat_files, flat_filters = g.flatfield()
    object_dirs, object_files, object_filters = g.science()

    ptc = photon_transfer(bias_files, flat_files[0]).run()
    ron = ptc.read_noise_for_gain(2.06)  # the chain converts with the header's EGAIN
    region = "[1:1024,1:1024]"

    def pre(wdir, files):
        r = trimmer(wdir, files, region, "yes", **QUIET).run()
        r = deviation_calculation(wdir, r, "yes", ron=ron, **QUIET).run()
        return gain_correction(wdir, r, "yes", **QUIET).run()

    # masters as the guide makes them (image_combination), the dark with master_frame
    mb = image_combination(
        wdir=bias_dir,
        files=pre(bias_dir, bias_files),
        output_name="masterbias.fits",
        combining_method="median",
        clipping_method="sigclip",
        minclip=3,
        maxclip=3,
    ).run()
    d = subtract_bias(dark_dirs[0], pre(dark_dirs[0], dark_files[0]), mb, "yes", **QUIET).run()
    md = master_frame(dark_dirs[0], d, "masterdark_20s.fits", "median", "sigclip", 3, 3).run()
    f = subtract_bias(flat_dirs[0], pre(flat_dirs[0], flat_files[0]), mb, "yes", **QUIET).run()
    f = subtract_dark(flat_dirs[0], f, md, "yes", **QUIET).run()
    mf = image_combination(
        wdir=flat_dirs[0],
        files=f,
        output_name=f"masterflat_{flat_filters[0]}.fits",
        combining_method="median",
        clipping_method="sigclip",
        minclip=3,
        maxclip=3,
    ).run()
    bpm = bad_pixel_map(dark_dirs[0], md, mf).run()
    s = pre(object_dirs[0], object_files[0])
    s = cosmic_ray_laplacian_correction(object_dirs[0], s, "yes", mask_file=bpm, **QUIET).run()
    s = subtract_bias(object_dirs[0], s, mb, "yes", **QUIET).run()
    s = subtract_dark(object_dirs[0], s, md, "yes", **QUIET).run()
    with pytest.warns(CalibrationWarning, match="2 pixels below 0.1"):  # 2 dead pixels
        s = correct_flatfield(object_dirs[0], s, mf, "yes", **QUIET).run()
    # uncalibrated reference for the flatness: raw science minus the master bias, in ADU
    raw = np.median([read_frame(p).data for p in object_files[0][:15]], axis=0)
    raw_flatness = _grid_flatness(raw - read_frame(mb).data / 2.06)
    cal_flatness = _grid_flatness(np.median([read_frame(p).data for p in s[:15]], axis=0))
    directories, final = finalize_stage1(
        data_dir, object_dirs, bias_dir, dark_dirs, flat_dirs
    ).run()
    return dict(
        data_dir=data_dir,
        ptc=ptc,
        mb=mb,
        md=md,
        mf=mf,
        bpm=bpm,
        final=final,
        directories=directories,
        raw_flatness=raw_flatness,
        cal_flatness=cal_flatness,
        object_dirs=object_dirs,
        filters=object_filters,
        n_raw=len(object_files[0]),
    )


def test_real_night_detector_numbers(real_night):
    ptc = real_night["ptc"]
    assert 1.8 < ptc.gain < 2.2  # header EGAIN 2.06 e-/ADU
    assert 6.0 < ptc.read_noise_adu < 7.5  # ~6.7 ADU from 5 bias pairs
    assert 11 < ptc.read_noise < 16
    calib = Path(real_night["data_dir"]) / "calibration"
    mb = read_frame(calib / "masterbias.fits")
    assert np.median(mb.data) / 2.06 == pytest.approx(980, abs=4)  # ADU
    assert np.median(mb.data) == pytest.approx(2020, abs=8)  # e-
    dc = dark_current(calib / "masterdark_20s.fits").run()
    assert 1.0 < dc.median_rate < 1.6  # e-/s/px at -5 C
    assert 5000 < dc.n_hot < 40000
    bpm_h = read_header(calib / "master_badpixel_map.fits")
    assert 1000 < bpm_h["ADBPHOT"] < 30000


def test_real_night_sky_is_flat_after_calibration(real_night):
    assert real_night["raw_flatness"] > 0.015  # dust donuts and vignetting: ~2 %
    assert real_night["cal_flatness"] < 0.01


def test_real_night_finalized_tree(real_night):
    from astrodart.utils import get_directory

    dirs, files, filters = get_directory(real_night["data_dir"]).science_final()
    assert dirs == real_night["directories"] and filters == ["Visible"]
    assert len(files[0]) == N_SCIENCE == real_night["n_raw"]
    calib = {p.name for p in (Path(real_night["data_dir"]) / "calibration").iterdir()}
    assert {
        "masterbias.fits",
        "masterdark_20s.fits",
        "masterflat_Visible.fits",
        "master_badpixel_map.fits",
    } <= calib
    for f in files[0][:4]:
        c = read_frame(f)
        assert c.unit == "electron" and np.isfinite(c.data).all()
        assert np.isfinite(c.uncertainty.array).all() and (c.uncertainty.array > 0).all()
        assert c.meta["ADNCRPIX"] < 1000  # cosmic rays, not hot pixels or stars
        assert c.meta.get("ADNNONF", 0) == 0  # no non-finite pixel had to be repaired
    # the raw copies are still there
    assert len(list(Path(real_night["object_dirs"][0]).glob("*science_exposures*"))) == N_SCIENCE


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path):
    """Small gain-corrected frames and masters, made with the steps."""
    cam = SyntheticCamera(ny=64, nx=64, seed=3)
    raw = cam.write_series(tmp_path / "raw", "sci", "object", 3, 20.0, sky=300.0)
    wdir = tmp_path / "work"
    e = gain_correction(
        wdir, deviation_calculation(wdir, raw, "yes", ron=12, **QUIET).run(), "yes", **QUIET
    ).run()
    return cam, tmp_path, wdir, raw, e


def ndimage_grow(mask, n):
    """``mask`` grown by ``n`` pixels (8-connected)."""
    from scipy import ndimage

    return ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=n)


def _master(path, data, unit="electron", **meta):
    h = fits.Header({"BUNIT": unit, "XBINNING": 1, "YBINNING": 1, **meta})
    fits.PrimaryHDU(np.asarray(data, np.float32), header=h).writeto(path, overwrite=True)
    return str(path)


def test_master_of_another_shape_is_refused(small):
    cam, tmp, wdir, raw, e = small
    m = _master(tmp / "masterbias_small.fits", np.zeros((32, 64)))
    with pytest.raises(CalibrationError) as exc:
        subtract_bias(wdir, e, m, "yes", **QUIET).run()
    msg = str(exc.value)
    assert "masterbias_small.fits" in msg and Path(e[0]).name in msg
    assert "64x32" in msg and "64x64" in msg and "trim" in msg


def test_dark_of_another_binning_is_refused(small):
    cam, tmp, wdir, raw, e = small
    m = _master(
        tmp / "masterdark_bin2.fits",
        np.zeros((64, 64)),
        EXPTIME=20.0,
        XBINNING=2,
        YBINNING=2,
        ADBIASSB=True,
    )
    with pytest.raises(CalibrationError) as exc:
        subtract_dark(wdir, e, m, "yes", **QUIET).run()
    msg = str(exc.value)
    assert "masterdark_bin2.fits" in msg and "binning 2x2" in msg and "1x1" in msg
    assert "same binning" in msg


def test_flat_with_zeros_is_refused_or_guarded(small):
    cam, tmp, wdir, raw, e = small
    flat = np.ones((64, 64))
    flat[:20] = 0.0
    m = _master(tmp / "masterflat_zeros.fits", flat, unit="")
    with pytest.raises(CalibrationError) as exc:
        correct_flatfield(wdir, e, m, "yes", **QUIET).run()
    msg = str(exc.value)
    assert "masterflat_zeros.fits" in msg and "rebuild" in msg and "max_bad_fraction" in msg
    # a few dead pixels are guarded: masked, counted, no NaN, with a warning
    flat = np.ones((64, 64))
    flat[5, 5] = 0.0
    flat[6, 6] = -1.0
    m = _master(tmp / "masterflat_dead.fits", flat, unit="")
    with pytest.warns(CalibrationWarning, match="2 pixels"):
        out = correct_flatfield(wdir, e, m, "yes", **QUIET).run()
    c = read_frame(out[0])
    assert np.isfinite(c.data).all() and c.mask[5, 5] and c.mask[6, 6] and c.meta["ADFLBAD"] == 2


def test_science_frame_without_exptime(small):
    cam, tmp, wdir, raw, e = small
    m = _master(tmp / "masterdark.fits", np.full((64, 64), 10.0), EXPTIME=20.0, ADBIASSB=True)
    with fits.open(e[1], mode="update") as hdul:
        del hdul[0].header["EXPTIME"]
        del hdul[0].header["EXPOSURE"]
    with pytest.warns(FrameSkippedWarning, match=Path(e[1]).name) as rec:
        out = subtract_dark(wdir, e, m, "yes", **QUIET).run()
    assert len(out) == 2
    msg = " ".join(str(r.message) for r in rec)
    assert "EXPTIME" in msg and "header_tools" in msg
    with (
        pytest.raises(CalibrationError, match=f"{Path(e[1]).name}.*EXPTIME.*header_tools"),
        pytest.warns(FrameSkippedWarning),
    ):
        subtract_dark(wdir / "one", [e[1]], m, "yes", **QUIET).run()


def test_missing_read_noise_names_the_fix(small):
    cam, tmp, wdir, raw, e = small
    with pytest.raises(CalibrationError) as exc:
        deviation_calculation(tmp / "w2", raw, "yes", **QUIET).run()
    msg = str(exc.value)
    assert Path(raw[0]).name in msg and "ron=" in msg and "photon_transfer" in msg
    with pytest.raises(CalibrationError, match="gain"), pytest.warns(FrameSkippedWarning):
        gain_correction(tmp / "w3", e, "yes", **QUIET).run()  # already in electrons


def test_region_outside_the_frame(small):
    cam, tmp, wdir, raw, e = small
    with pytest.raises(CalibrationError) as exc:
        trimmer(tmp / "t", raw, "[1000:3040,1000:3040]", "yes", **QUIET).run()
    msg = str(exc.value)
    assert Path(raw[0]).name in msg and "64x64" in msg and "x2 <= 64" in msg


def test_nan_never_leaks_unreported(small):
    cam, tmp, wdir, raw, e = small
    c = read_frame(raw[0])
    c.data[10, 10:13] = np.nan
    c.data[30, 30] = np.inf
    bad = str(tmp / "with_nan.fits")
    from astrodart.frames.io import write_frame

    write_frame(c, bad)
    w = tmp / "nan"
    with pytest.warns(CalibrationWarning, match="4 non-finite"):
        out = deviation_calculation(w, [bad], "yes", ron=12, gain=2.0, **QUIET).run()
    res = read_frame(out[0])
    assert np.isfinite(res.data).all() and np.isfinite(res.uncertainty.array).all()
    assert res.mask[10, 10:13].all() and res.mask[30, 30] and res.meta["ADNNONF"] == 4


# ---------------------------------------------------------------------------------------
# the AstroDART surface
# ---------------------------------------------------------------------------------------
def test_star_import_gives_the_guide_names():
    ns = {}
    exec("from astrodart.first_stage import *", ns)
    for name in (
        "trimmer",
        "overscan_correction",
        "deviation_calculation",
        "gain_correction",
        "cosmic_ray_laplacian_correction",
        "cosmic_ray_median_correction",
        "subtract_bias",
        "subtract_dark",
        "correct_flatfield",
        "finalize_stage1",
    ):
        assert name in ns
    assert set(fs.__all__) <= set(ns)


def test_guide_style_calls_resume_and_reject_typos(small):
    cam, tmp, wdir, raw, e = small
    out = trimmer(wdir=str(tmp / "g"), files=raw, region="[1:32,1:64]", overwrite="yes").run()
    assert [Path(p).name for p in out] == [f"trimmed_sci_{i:03d}.fits" for i in range(3)]
    assert read_frame(out[0]).shape == (64, 32)
    mtimes = [Path(p).stat().st_mtime_ns for p in out]
    again = trimmer(str(tmp / "g"), raw, "[1:32,1:64]", "no", **QUIET).run()
    assert again == out and [Path(p).stat().st_mtime_ns for p in again] == mtimes
    with pytest.raises(TypeError, match="trimmer.*regoin"):
        trimmer(tmp / "g", raw, "[1:32,1:64]", "yes", regoin="[1:2,1:2]")
    with pytest.raises(TypeError):
        cosmic_ray_laplacian_correction(tmp / "g", e, "yes", sigmaclip=4)
    with pytest.raises(ValueError, match="yse"):
        trimmer(tmp / "g", raw, "[1:32,1:64]", "yse")


def test_overscan_step_and_median_cosmics_step(small, tmp_path):
    cam, tmp, wdir, raw, e = small
    # an overscan strip: columns 57-64 hold only the bias level (+ a row gradient)
    frames = []
    for i, p in enumerate(raw):
        c = read_frame(p)
        c.data[:, 56:] = 1000 + 0.1 * np.arange(64)[:, None]
        c.data[:, :56] += 0.1 * np.arange(64)[:, None]
        from astrodart.frames.io import write_frame

        frames.append(str(write_frame(c, tmp_path / f"os_{i}.fits")))
    out = overscan_correction(
        tmp_path / "os", frames, "[57:64,1:64]", 1, "yes", model="polynomial", degree=1, **QUIET
    ).run()
    c = read_frame(out[0])
    assert abs(np.median(c.data[:, :56]) - np.median(read_frame(raw[0]).data) + 1000) < 3
    assert c.meta["ADBIASSB"] and c.meta["ADSTEP01"] == "overscan_correction"
    # no cosmic rays in these frames: without a bad-pixel map the median method takes the
    # hot pixels for hits (and grows them by gbox=5); with the map it flags nothing
    med = cosmic_ray_median_correction(tmp_path / "cr", e, "yes", **QUIET).run()
    assert len(med) == 3 and Path(med[0]).name.startswith("cosmic_ray_median_removed_")
    flagged = np.asarray(read_frame(med[0]).mask, bool)
    assert flagged.any()
    near_hot = ndimage_grow(cam.hot, 2)
    assert not (flagged & ~near_hot).any()
    bpm = _master(tmp_path / "bpm.fits", cam.hot.astype(np.float32), unit="")
    med = cosmic_ray_median_correction(tmp_path / "cr2", e, "yes", mask_file=bpm, **QUIET).run()
    assert read_header(med[0])["ADNCRPIX"] == 0


def test_subtract_dark_picks_or_interpolates_among_masters(small, tmp_path):
    cam, tmp, wdir, raw, e = small
    shape = (64, 64)
    m10 = _master(tmp_path / "md10.fits", np.full(shape, 10.0), EXPTIME=10.0, ADBIASSB=True)
    m40 = _master(tmp_path / "md40.fits", np.full(shape, 40.0), EXPTIME=40.0, ADBIASSB=True)
    out = subtract_dark(tmp_path / "d", e[:1], [m10, m40], "yes", **QUIET).run()  # 20 s frames
    c, before = read_frame(out[0]), read_frame(e[0])
    assert np.allclose(before.data - c.data, 20.0, atol=1e-3)
    assert "interpolated" in c.meta["ADDKSRC"]
    # a master that still holds the bias is only used at its own exposure time
    mraw = _master(tmp_path / "mraw.fits", np.full(shape, 2000.0), EXPTIME=10.0, ADBIASSB=False)
    with (
        pytest.raises(CalibrationError, match="cannot be scaled|still contains the bias"),
        pytest.warns(FrameSkippedWarning),
    ):
        subtract_dark(tmp_path / "d2", e[:1], mraw, "yes", **QUIET).run()
