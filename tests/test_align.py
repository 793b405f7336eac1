"""Alignment, stacking and TIFF export against synthetic truth.

Star fields are rendered with known positions, so every transform the ladder finds can be
checked against the one used to make the frame (0-based pixels, ``x`` = column).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from astrodart.alignment.correlation import fft_translation
from astrodart.alignment.ladder import ReferenceFrame, align_frame, registration_offset
from astrodart.alignment.matching import crossmatch, match_stars, pair_stars
from astrodart.alignment.resample import warp_to_reference
from astrodart.alignment.transforms import (
    AlignmentError,
    AlignmentLimitError,
    AlignmentLimits,
    PixelTransform,
    fit_similarity,
)
from astrodart.frames.io import read_frame
from astrodart.sources.background import estimate_background
from astrodart.sources.stars import find_stars, positions_of
from astrodart.pipeline.step import FrameSkippedWarning
from astrodart.third_stage_astrophotography import align, save_to_tiff, stack

SHAPE = (300, 320)


# --------------------------------------------------------------------------------------
# synthetic sky
# --------------------------------------------------------------------------------------
def star_list(n=70, seed=0, margin=-40.0):
    """Star positions on a sky larger than the frame (so shifted frames still see stars)."""
    rng = np.random.default_rng(seed)
    ny, nx = SHAPE
    xy = np.c_[rng.uniform(margin, nx - margin, n), rng.uniform(margin, ny - margin, n)]
    flux = np.exp(rng.uniform(np.log(2e3), np.log(1e5), n))
    return xy, flux


def render(xy, flux, shape=SHAPE, fwhm=3.0, sky=100.0, noise=3.0, seed=1):
    """Gaussian stars (total flux ``flux``) at ``xy`` on a flat sky with Gaussian noise."""
    rng = np.random.default_rng(seed)
    img = np.full(shape, sky, np.float64)
    s = fwhm / 2.3548
    r = int(np.ceil(5 * s))
    for (x, y), f in zip(xy, flux):
        x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, shape[1])
        y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, shape[0])
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        r2 = (xx - x) ** 2 + (yy - y) ** 2
        img[y0:y1, x0:x1] += f / (2 * np.pi * s * s) * np.exp(-r2 / (2 * s * s))
    return (img + rng.normal(0, noise, shape)).astype(np.float32)


def similarity(rot_deg=0.0, scale=1.0, dx=0.0, dy=0.0, centre=(160.0, 150.0)):
    """Similarity about ``centre`` then a shift, as a PixelTransform."""
    t = np.radians(rot_deg)
    a = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = np.asarray(centre)
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = c - a @ c + [dx, dy]
    return PixelTransform(m)


def frame_through(transform: PixelTransform, seed=2, **kw):
    """A frame whose pixels relate to the reference sky by ``ref = transform(frame)``."""
    xy, flux = star_list()
    return render(transform.inverse().apply(xy), flux, seed=seed, **kw)


@pytest.fixture(scope="module")
def sky():
    xy, flux = star_list()
    return xy, flux, render(xy, flux)


def max_error(found: PixelTransform, truth: PixelTransform, shape=SHAPE) -> float:
    """Largest disagreement (px) of two transforms over the frame corners and centre."""
    ny, nx = shape
    pts = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1], [nx / 2, ny / 2]], float)
    return float(np.abs(found.apply(pts) - truth.apply(pts)).max())


# --------------------------------------------------------------------------------------
# pure functions
# --------------------------------------------------------------------------------------
def test_transform_algebra():
    t = similarity(30, 1.1, 5, -3)
    assert t.rotation == pytest.approx(30) and t.scale == pytest.approx(1.1)
    assert not t.mirrored
    pts = np.array([[1.0, 2.0], [100.0, 50.0]])
    np.testing.assert_allclose(t.inverse().apply(t.apply(pts)), pts, atol=1e-9)
    m = similarity(90) @ PixelTransform.mirror_x(320)
    assert m.mirrored and m.rotation == pytest.approx(90) and m.scale == pytest.approx(1)
    assert PixelTransform.translation(3, 4).shift_of_centre((10, 10), (10, 10)) == pytest.approx(5)
    with pytest.raises(ValueError):
        PixelTransform(np.eye(2))


def test_fit_similarity_recovers_truth_from_noisy_points():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 300, (40, 2))
    truth = similarity(-12.5, 0.97, 8.2, -3.1)
    dst = truth.apply(src) + rng.normal(0, 0.05, src.shape)
    assert max_error(fit_similarity(src, dst), truth) < 0.05


def test_background_is_flat_sky_and_noise(sky):
    _, _, img = sky
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    bkg, sigma = estimate_background(img + 0.1 * xx, box_size=32)
    assert np.abs(bkg - (100 + 0.1 * xx)).max() < 2.0
    assert sigma == pytest.approx(3.0, rel=0.1)


def test_find_stars_finds_true_positions_and_rejects_hot_pixels(sky):
    xy, flux, img = sky
    img = img.copy()
    img[50, 60] += 5000  # hot pixel / cosmic ray: one pixel, no PSF
    img[200, 30] += 3000
    stars = positions_of(find_stars(img, 3.0, reject_sharp=True))
    inside = (xy[:, 0] > 8) & (xy[:, 0] < SHAPE[1] - 8) & (xy[:, 1] > 8) & (xy[:, 1] < SHAPE[0] - 8)
    bright = inside & (flux > 1e4)
    ia, ib, d = crossmatch(xy[bright], stars, 1.0)
    assert len(ia) == bright.sum()  # every bright star found
    assert np.median(d) < 0.1  # centroids to a tenth of a pixel
    assert crossmatch([[60, 50], [30, 200]], stars, 2.0)[0].size == 0


def test_match_stars_recovers_rotation_scale_shift(sky):
    xy, _, _ = sky
    truth = similarity(37.0, 1.03, 12.0, -7.0)
    src = truth.inverse().apply(xy)
    found, resid, n = match_stars(src, xy, SHAPE)
    assert max_error(found, truth) < 1e-6 and resid < 1e-6 and n >= 30
    assert not found.mirrored


def test_match_stars_detects_a_mirror(sky):
    xy, _, _ = sky
    truth = similarity(90.0) @ PixelTransform.mirror_x(SHAPE[1])
    found, resid, n = match_stars(truth.inverse().apply(xy), xy, SHAPE)
    assert found.mirrored and max_error(found, truth) < 1e-6
    with pytest.raises(AlignmentError):
        match_stars(truth.inverse().apply(xy), xy, SHAPE, allow_mirror=False)


def test_pair_stars_recovers_a_shift_with_missing_stars():
    rng = np.random.default_rng(5)
    a = rng.uniform(0, 500, (80, 2))
    b = a + [12.3, -7.8] + rng.normal(0, 0.1, a.shape)
    b = np.vstack([b[5:], rng.uniform(0, 500, (10, 2))])  # 5 lost, 10 new
    i, j, transform = pair_stars(a, b, 1.0)
    assert transform.offset == pytest.approx((12.3, -7.8), abs=0.05)
    assert len(i) == 75
    assert np.all(i - 5 == j)
    empty = pair_stars(a, np.zeros((0, 2)))
    assert len(empty[0]) == 0 and empty[2] is None


def test_match_stars_works_without_the_frame_shape_and_on_a_meridian_flip(sky):
    xy, _, _ = sky
    truth = similarity(180.0)
    found, resid, n = match_stars(truth.inverse().apply(xy), xy)
    assert not found.mirrored and max_error(found, truth) < 1e-6


def test_fft_translation_subpixel(sky):
    _, _, ref = sky
    frame = frame_through(PixelTransform.translation(7.3, -4.6))
    dx, dy, ratio = fft_translation(frame, ref)
    assert dx == pytest.approx(7.3, abs=0.15) and dy == pytest.approx(-4.6, abs=0.15)
    assert ratio > 2


def test_warp_footprint_marks_uncovered_pixels(sky):
    _, _, ref = sky
    frame = frame_through(PixelTransform.translation(10.0, 0.0))
    out, invalid = warp_to_reference(frame, PixelTransform.translation(10.0, 0.0), SHAPE)
    assert invalid[:, :10].all() and not invalid[:, 11:].any()
    assert np.isnan(out[invalid]).all() and np.isfinite(out[~invalid]).all()
    resid = (out - ref)[:, 20:-20]
    assert np.std(resid) < 3.0 * 1.6  # two noise realisations, interpolated


# --------------------------------------------------------------------------------------
# the ladder
# --------------------------------------------------------------------------------------
def tan_wcs(crpix=(160.0, 150.0), rot_deg=0.0, scale_arcsec=1.0, crval=(150.0, 20.0)) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = crval
    w.wcs.crpix = [crpix[0] + 1, crpix[1] + 1]  # FITS is 1-based
    t = np.radians(rot_deg)
    s = scale_arcsec / 3600
    w.wcs.cd = s * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])
    return w


def test_ladder_uses_wcs_when_both_frames_have_one(sky):
    _, _, ref_img = sky
    truth = similarity(0.0, 1.0, 6.0, -4.0)
    frame = frame_through(truth)
    ref = ReferenceFrame(ref_img, wcs=tan_wcs())
    # the frame's pixel (x, y) shows the sky at reference pixel (x + 6, y - 4)
    res = align_frame(frame, ref, wcs=tan_wcs(crpix=(154.0, 154.0)))
    assert res.method == "wcs"
    assert max_error(res.transform, truth) < 0.01
    assert res.n_matches >= 20 and res.residual < 0.2


def test_ladder_rejects_a_wrong_wcs_and_uses_the_stars(sky):
    _, _, ref_img = sky
    truth = similarity(0.0, 1.0, 6.0, -4.0)
    ref = ReferenceFrame(ref_img, wcs=tan_wcs())
    res = align_frame(frame_through(truth), ref, wcs=tan_wcs(crpix=(134.0, 154.0)))  # 20 px off
    assert res.method == "stars" and max_error(res.transform, truth) < 0.1
    assert any("disagrees with the stars" in a for a in res.attempts)


def test_ladder_falls_back_to_fft_with_too_few_stars():
    xy = np.array([[100.0, 120.0], [220.0, 90.0]])
    flux = np.array([4e4, 3e4])
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]

    def nebula(dx, dy):  # an extended, structured source besides the two stars
        return 400 * np.exp(-(((xx - 170 + dx) / 25) ** 2 + ((yy - 200 + dy) / 12) ** 2))

    ref = render(xy, flux) + nebula(0, 0)
    frame = render(xy - [5.0, -3.0], flux, seed=4) + nebula(-5.0, 3.0)
    res = align_frame(frame, ReferenceFrame(ref))
    assert res.method == "fft"
    assert res.transform.offset == pytest.approx((5.0, -3.0), abs=0.2)
    assert any(a.startswith("stars:") for a in res.attempts)


def test_limits_leave_a_frame_out(sky):
    _, _, ref_img = sky
    frame = frame_through(similarity(37.0))
    with pytest.raises(AlignmentLimitError, match=r"rotation 3[67]\.\d+ deg > max_rotation 10"):
        align_frame(frame, ReferenceFrame(ref_img), limits=AlignmentLimits(max_rotation=10))
    with pytest.raises(AlignmentLimitError, match="max_shift"):
        align_frame(frame_through(similarity(0, 1, 30, 0)), ReferenceFrame(ref_img),
                    limits=AlignmentLimits(max_shift=10))


def test_unalignable_frame_names_every_attempt(sky):
    _, _, ref_img = sky
    noise = np.random.default_rng(9).normal(100, 3, SHAPE).astype(np.float32)
    with pytest.raises(AlignmentError) as err:
        align_frame(noise, ReferenceFrame(ref_img))
    msg = str(err.value)
    assert "wcs: no celestial WCS" in msg and "stars:" in msg and "fft:" in msg
    with pytest.raises(ValueError, match="unknown alignment method"):
        align_frame(noise, ReferenceFrame(ref_img), methods=("stars", "magic"))


def test_registration_offset(sky):
    _, _, ref_img = sky
    ref = ReferenceFrame(ref_img)
    off, n = registration_offset(frame_through(PixelTransform.identity(), seed=5), ref)
    assert off < 0.1 and n > 20
    off, n = registration_offset(frame_through(PixelTransform.translation(1.5, 0), seed=5), ref)
    assert off == pytest.approx(1.5, abs=0.15)


# --------------------------------------------------------------------------------------
# the file-level step
# --------------------------------------------------------------------------------------
def write(path: Path, data, **header) -> str:
    h = fits.Header()
    h["EXPTIME"] = 10.0
    h["FILTER"] = "V"
    for k, v in header.items():
        h[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(np.asarray(data, np.float32), header=h).writeto(path)
    return str(path)


@pytest.fixture
def night(tmp_path, sky):
    """A filter folder with a reference, a shifted frame, a rotated one and pure noise."""
    xy, flux, ref_img = sky
    d = tmp_path / "M00" / "V"
    ref = write(d / "f0.fits", ref_img)
    shifted = write(d / "f1.fits", frame_through(PixelTransform.translation(4.5, -2.25), seed=11))
    stale_wcs = tan_wcs().to_header()
    rotated = write(d / "f2.fits", frame_through(similarity(20.0, 1.0, 3, 1), seed=12), **stale_wcs)
    noise = write(d / "f3.fits", np.random.default_rng(5).normal(100, 3, SHAPE))
    return {"dir": str(d) + "/", "files": [ref, shifted, rotated, noise], "ref": ref,
            "noise": noise}


def test_align_step_outputs_headers_masks_and_failures(night, tmp_path):
    step = align([night["files"]], [night["dir"]], night["ref"], executor="serial", progress=False)
    with pytest.warns(FrameSkippedWarning, match="f3.fits"):
        out = step.run()
    assert len(out) == 1 and len(out[0]) == 3
    # default destination: <target>/aligned/<filter>/ (a folder get_directory skips)
    assert all(Path(p).parent == tmp_path / "M00" / "aligned" / "V" for p in out[0])
    assert list(step.failed) == [night["noise"]]
    assert "could not align" in step.failed[night["noise"]]
    assert not (tmp_path / "M00" / "aligned" / "V" / "aligned_f3.fits").exists()
    h = fits.getheader(out[0][1])
    assert h["ALNMETH"] == "stars" and h["ALNREF"] == "f0.fits"
    assert (h["ALNA13"], h["ALNA23"]) == pytest.approx((4.5, -2.25), abs=0.05)
    assert h["ALNRES"] < 0.2 and h["ALNNSTAR"] >= 20
    h2 = fits.getheader(out[0][2])
    assert h2["ALNROT"] == pytest.approx(20.0, abs=0.02)
    assert "CTYPE1" not in h2 and "CD1_1" not in h2  # the old WCS no longer applies
    ccd = read_frame(out[0][1])
    assert ccd.mask is not None and ccd.mask[:, :4].all() and not ccd.mask[:, 10:-10][5:-5].any()
    assert np.isnan(ccd.data[ccd.mask]).all()
    assert read_frame(out[0][0]).mask.sum() == 0  # the reference itself: identity, all valid
    assert [r["method"] for r in step.frames] == ["reference", "stars", "stars"]
    rec = [json.loads(line) for line in (tmp_path / "M00" / "aligned" / "V" / "astrodart_log.jsonl")
           .read_text().splitlines()]
    frames = [r for r in rec if r["step"] == "align_frames"][-1]
    assert [f["method"] for f in frames["frames"]] == ["reference", "stars", "stars"]
    assert frames["frames"][2]["rotation_deg"] == pytest.approx(20.0, abs=0.02)
    assert night["noise"] in frames["failed"]
    assert len(step.table()) == 3


def test_align_resumes_and_redoes_for_another_reference(night, tmp_path):
    files = night["files"][:3]
    out = align(files, night["dir"], night["ref"], executor="serial", progress=False).run()[0]
    mtimes = [Path(p).stat().st_mtime_ns for p in out]
    again = align(files, night["dir"], night["ref"], executor="serial", progress=False)
    assert again.run()[0] == out
    assert [Path(p).stat().st_mtime_ns for p in out] == mtimes
    assert again.reports[0].reused and not again.reports[0].written
    other = align(files, night["dir"], files[1], executor="serial", progress=False)
    other.run()
    assert fits.getheader(out[0])["ALNREF"] == "f1.fits"  # re-aligned, not reused
    assert fits.getheader(out[0])["ALNA13"] == pytest.approx(-4.5, abs=0.05)


def test_align_output_takes_the_reference_wcs(tmp_path, sky):
    _, _, ref_img = sky
    d = tmp_path / "T" / "R"
    ref_h = {**tan_wcs().to_header(), "DATE-OBS": "2020-01-01T00:00:00"}
    frm_h = {**tan_wcs(crpix=(154.0, 154.0)).to_header(), "DATE-OBS": "2020-01-01T01:00:00"}
    ref = write(d / "r0.fits", ref_img, **ref_h)
    frm = write(d / "r1.fits", frame_through(PixelTransform.translation(6, -4), seed=3), **frm_h)
    step = align([[ref, frm]], [str(d)], ref, executor="serial", progress=False)
    out = step.run()[0]
    h = fits.getheader(out[1])
    assert h["ALNMETH"] == "wcs"
    assert WCS(h).wcs.crpix == pytest.approx(tan_wcs().wcs.crpix)
    assert h["DATE-OBS"] == "2020-01-01T01:00:00"  # the frame's own time stamp is kept


def test_align_rejects_bad_arguments(night):
    with pytest.raises(TypeError, match="refrence_frame"):
        align([night["files"]], [night["dir"]], night["ref"], refrence_frame=1)
    with pytest.raises(ValueError, match="parallel"):
        align([night["files"], night["files"]], [night["dir"]], night["ref"])
    with pytest.raises(ValueError, match="unknown method"):
        align([night["files"]], [night["dir"]], night["ref"], methods=("stars", "sift"))


# --------------------------------------------------------------------------------------
# stacking and export
# --------------------------------------------------------------------------------------
def test_stack_ignores_footprints_and_drops_excluded_and_flagged_frames(tmp_path):
    d = tmp_path / "aligned" / "V"
    base = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    paths = []
    for k, off in enumerate([0.0, 1.0, 2.0, 100.0, 200.0]):
        from astropy.nddata import CCDData

        from astrodart.frames.io import write_frame

        data = base + off
        mask = np.zeros(base.shape, bool)
        if k == 1:
            mask[:, :5] = True  # outside this frame's footprint
            data[mask] = np.nan
        p = d / f"aligned_frame{k}.fits"
        write_frame(CCDData(data, unit="adu", mask=mask), p)
        paths.append(str(p))
    quality = Table({"file": [f"/night/V/frame{k}.fits" for k in range(5)],
                     "flags": ["", "", "", "fwhm", ""], "good": [True, True, True, False, True]})
    out = stack([paths], ["V"], tmp_path / "stacks", exclude=["frame4.fits"], quality=quality)
    assert Path(out[0]).name == "Combined_image_V.fits"
    s = read_frame(out[0])
    # frames 0, 1, 2 remain: median 1.0 where all three are valid, 1.0 (mean of 0, 2) where
    # frame 1 is outside its footprint
    np.testing.assert_allclose(s.data, base + 1.0, atol=1e-4)
    with pytest.raises(ValueError):
        stack([paths], ["V", "B"], tmp_path / "stacks")
    with pytest.raises(TypeError, match="minclp"):  # image_combination rejects typos
        stack([paths], ["V"], tmp_path / "stacks2", clipping_method="sigclip", minclp=2)


def test_save_to_tiff_is_16_bit_invertible_and_top_up(tmp_path):
    import tifffile
    from astropy.nddata import CCDData

    from astrodart.frames.io import write_frame

    data = np.linspace(-5, 1000, 40 * 50, dtype=np.float32).reshape(40, 50)
    data[3, 4] = np.nan
    d = tmp_path / "V"
    write_frame(CCDData(data, unit="electron"), d / "Combined_image_V.fits")
    out = save_to_tiff(["Combined_image_V.fits"], [str(d)], ["V"], tmp_path / "astro", "180423",
                       "HAT-P-27", "yes").run()
    assert Path(out[0]).name == "HAT-P-27_180423_V.tif"
    with tifffile.TiffFile(out[0]) as tf:
        img = tf.asarray()
        meta = json.loads(tf.pages[0].description)
    assert img.dtype == np.uint16 and img.shape == (40, 50)
    assert img.max() == 65535 and img[-1, 0] == 0  # FITS row 0 is the bottom row of the TIFF
    back = meta["low"] + (meta["high"] - meta["low"]) * img[::-1].astype(float) / 65535
    ok = np.isfinite(data)
    assert np.abs(back - data)[ok].max() < (1005 / 65535)
    assert img[::-1][3, 4] == 0 and meta["unit"] == "electron"
    mtime = Path(out[0]).stat().st_mtime_ns
    assert save_to_tiff([[str(d / "Combined_image_V.fits")]], filters="V",
                        astro_directory=tmp_path / "astro", date="180423",
                        target_name="HAT-P-27", overwrite="no").run() == out
    assert Path(out[0]).stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="parallel"):
        save_to_tiff(["a.fits"], ["d1", "d2"])
    with pytest.raises(TypeError, match="targetname"):
        save_to_tiff(["a.fits"], targetname="x")
