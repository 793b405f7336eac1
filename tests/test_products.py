"""Image products against known answers: resampling onto a WCS and mosaics, continuum
subtraction, the master sky, image arithmetic, and their command lines.

Synthetic fields are made here with known star positions on the sky, known scales and an
injected sky gradient; the real-data checks (M67 R stars, HAT-P-27 dome flats) skip with
the reason when the sample nights are absent.
"""
from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.stats import mad_std
from astropy.wcs import WCS
from datapaths import HATP27, M67, require

from astrodart.alignment.mosaic import coadd_mosaic, mosaic_grid
from astrodart.alignment.resample import resample_frame
from astrodart.calibration.arithmetic import UnitMismatchError, imarith
from astrodart.calibration.sky import master_sky, subtract_sky
from astrodart.cli import main
from astrodart.color.continuum import continuum_scale, continuum_subtract
from astrodart.frames.io import read_frame, write_frame
from astrodart.photometry.apertures import aperture_photometry_ccd
from astrodart.sources.background import estimate_background
from astrodart.sources.stars import find_stars

FWHM = 3.0
SIG = FWHM / 2.3548


def _wcs(ra, dec, scale_arcsec=1.0, rot_deg=0.0, crpix=(64.5, 64.5)):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = list(crpix)
    s, t = scale_arcsec / 3600.0, np.radians(rot_deg)
    w.wcs.cd = s * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])
    return w


def _render(shape, xy, flux, fwhm=FWHM):
    """Gaussian stars of total ``flux`` at 0-based ``xy`` (pixel-centre sampled)."""
    sig = fwhm / 2.3548
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.zeros(shape)
    for (x, y), f in zip(xy, flux):
        img += f / (2 * np.pi * sig**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sig**2))
    return img


def _sky_stars(n=12, seed=3, ra=150.0, dec=20.0, half_arcsec=45.0):
    rng = np.random.default_rng(seed)
    off = rng.uniform(-half_arcsec, half_arcsec, (n, 2)) / 3600.0
    return ra + off[:, 0] / np.cos(np.radians(dec)), dec + off[:, 1], rng.uniform(2e4, 6e4, n)


def _field(wcs, shape, stars, sky=100.0, noise=0.5, seed=0):
    ra, dec, flux = stars
    x, y = wcs.world_to_pixel_values(ra, dec)
    img = _render(shape, np.c_[x, y], flux) + sky
    if noise:
        img += np.random.default_rng(seed).normal(0, noise, shape)
    unc = StdDevUncertainty(np.full(shape, max(noise, 1.0), np.float32))
    return CCDData(img.astype(np.float32), unit="adu", wcs=wcs, uncertainty=unc)


def _offsets(found, expected):
    """Distance of each expected position to the nearest detection, pixels."""
    d = np.hypot(found[:, None, 0] - expected[None, :, 0], found[:, None, 1] - expected[None, :, 1])
    return d.min(axis=0)


# ---------------------------------------------------------------- resample and mosaics
def test_resampled_star_lands_where_the_reference_wcs_says():
    stars = _sky_stars()
    src_wcs = _wcs(150.0 + 8 / 3600, 20.0 - 5 / 3600, 1.1, rot_deg=27.0, crpix=(60.3, 66.8))
    ref_wcs, shape = _wcs(150.0, 20.0, 1.0), (128, 128)
    frame = _field(src_wcs, shape, stars)
    out = resample_frame(frame, ref_wcs, shape, order="bicubic")
    assert out.shape == shape and out.wcs.wcs.compare(ref_wcs.wcs)
    x, y = ref_wcs.world_to_pixel_values(stars[0], stars[1])
    inside = (x > 8) & (x < 120) & (y > 8) & (y < 120)
    found = find_stars(np.nan_to_num(out.data, nan=100.0), FWHM, 5.0)
    err = _offsets(np.c_[found["x"], found["y"]], np.c_[x, y][inside])
    assert inside.sum() >= 6
    assert err.max() < 0.1, err
    # outside the frame's footprint: NaN and masked; the uncertainty travels along
    assert out.mask[~np.isfinite(out.data)].all() and np.isfinite(out.data).mean() > 0.5
    assert np.nanmedian(out.uncertainty.array) == pytest.approx(1.0, abs=0.01)


def test_mosaic_of_two_pointings_puts_each_star_once_in_its_place():
    stars = _sky_stars(n=16, half_arcsec=70.0, seed=5)
    shape = (128, 128)
    left = _field(_wcs(150.0 - 30 / 3600, 20.0, 1.0), shape, stars)
    right = _field(_wcs(150.0 + 30 / 3600, 20.0, 1.0, rot_deg=5.0), shape, stars)
    wcs, mshape = mosaic_grid([left, right])
    assert mshape[1] > 180  # wider than one frame: covers both pointings
    mos = coadd_mosaic([left, right], wcs, mshape)
    assert mos.meta["NCOMBINE"] == 2
    x, y = wcs.world_to_pixel_values(stars[0], stars[1])
    covered = ~mos.mask
    ix, iy = np.round(x).astype(int), np.round(y).astype(int)
    ok = (ix > 6) & (iy > 6) & (ix < mshape[1] - 7) & (iy < mshape[0] - 7)
    ok[ok] &= np.array([covered[j - 6:j + 7, i - 6:i + 7].all() for i, j in zip(ix[ok], iy[ok])])
    found = find_stars(np.nan_to_num(mos.data, nan=100.0), FWHM, 5.0, mask=mos.mask)
    err = _offsets(np.c_[found["x"], found["y"]], np.c_[x, y][ok])
    assert ok.sum() >= 8 and err.max() < 0.15, err
    # the sky level is kept where the frames overlap (a mean, not a sum)
    assert np.nanmedian(mos.data) == pytest.approx(100.0, abs=0.5)


def test_resample_refuses_a_frame_without_wcs():
    with pytest.raises(ValueError, match="no celestial WCS"):
        resample_frame(CCDData(np.ones((8, 8)), unit="adu"), _wcs(1, 2), (8, 8))


# ---------------------------------------------------------------- continuum subtraction
def _continuum_pair(seed=7, scale=0.08, blob_flux=6000.0):
    rng = np.random.default_rng(seed)
    shape = (220, 220)
    xy = rng.uniform(15, 205, (40, 2))
    flux = 10 ** rng.uniform(3.7, 5.0, 40)
    blob = np.array([[110.3, 107.6]])
    far = np.hypot(*(xy - blob).T) > 30
    xy, flux = xy[far], flux[far]
    stars = _render(shape, xy, flux)
    b_sig, n_sig = 6.0, 2.0
    broad = stars + 300.0 + rng.normal(0, b_sig, shape)
    narrow = scale * stars + 25.0 + _render(shape, blob, [blob_flux], fwhm=9.0) \
        + rng.normal(0, n_sig, shape)
    mk = lambda d, s: CCDData(d.astype(np.float32), unit="adu",
                              uncertainty=StdDevUncertainty(np.full(shape, s, np.float32)))
    return mk(narrow, n_sig), mk(broad, b_sig), xy, flux, blob


def test_continuum_subtraction_removes_stars_and_keeps_the_emission():
    narrow, broad, xy, flux, blob = _continuum_pair()
    result, fit = continuum_subtract(narrow, broad)
    assert fit.n_stars >= 10
    assert fit.scale == pytest.approx(0.08, abs=3 * fit.scale_err + 1e-4)
    assert fit.scale_err < 0.002
    # pure-continuum stars subtract to noise: their residual flux is within 3 sigma of 0
    data, unc = result.data, result.uncertainty.array
    bright = np.argsort(flux)[::-1][:10]
    res = aperture_photometry_ccd(data, xy[bright], 2 * FWHM, 3 * FWHM, 5 * FWHM,
                                  uncertainty=unc)
    before = aperture_photometry_ccd(narrow.data, xy[bright], 2 * FWHM, 3 * FWHM, 5 * FWHM,
                                     uncertainty=narrow.uncertainty.array)
    assert np.all(np.abs(res.flux) < 3 * res.flux_err), res.flux / res.flux_err
    assert np.all(before.flux > 30 * before.flux_err)  # they were there before
    # the emission blob survives with its flux (aperture of 3 blob FWHM)
    em = aperture_photometry_ccd(data, blob, 13.5, 18, 26, uncertainty=unc)
    assert em.flux[0] == pytest.approx(6000.0, abs=max(3 * em.flux_err[0], 0.03 * 6000))
    # uncertainty: narrow and scaled broad in quadrature, plus the scale's own term
    expect = np.sqrt(2.0**2 + (fit.scale * 6.0) ** 2 + (fit.scale_err * broad.data) ** 2)
    assert np.allclose(unc, expect, rtol=1e-4)
    assert result.meta["CONTSCAL"] == pytest.approx(fit.scale)


def test_continuum_scale_refuses_misregistered_frames_and_starless_fields():
    narrow, broad, *_ = _continuum_pair()
    with pytest.raises(ValueError, match="one grid"):
        continuum_scale(narrow[:100, :100], broad)
    flat = CCDData(np.random.default_rng(1).normal(0, 1, (80, 80)), unit="adu")
    with pytest.raises(ValueError, match="at least 3"):
        continuum_scale(flat, flat)


@pytest.mark.sample_data
def test_continuum_scale_on_real_m67_stars():
    """Real PSFs and a real field: 'narrow' = 0.05 x the R frame + an emission blob."""
    r = read_frame(require(M67) / "M67_R.fits")
    data = np.nan_to_num(np.asarray(r.data, float))
    rng = np.random.default_rng(2)
    sig = 0.05 * 3 * float(mad_std(data))  # a narrow band 3 x noisier than the R frame
    blob = np.array([[161.0, 300.0]])
    narrow = 0.05 * data + _render(data.shape, blob, [0.05 * 2e5], fwhm=8.0) \
        + rng.normal(0, sig, data.shape)
    broad = CCDData(data.astype(np.float32), unit="adu")
    nccd = CCDData(narrow.astype(np.float32), unit="adu",
                   uncertainty=StdDevUncertainty(np.full(data.shape, sig, np.float32)))
    result, fit = continuum_subtract(nccd, broad)
    assert fit.n_stars >= 20
    assert fit.scale == pytest.approx(0.05, abs=3 * fit.scale_err) and fit.scale_err < 2.5e-4
    em = aperture_photometry_ccd(result.data, blob, 12.0, 16.0, 24.0,
                                 uncertainty=result.uncertainty.array)
    assert em.flux[0] == pytest.approx(0.05 * 2e5, abs=max(3 * em.flux_err[0], 0.03 * 1e4))


# ---------------------------------------------------------------- master sky
def _dithered_night(n=5, shape=(160, 160), seed=11):
    """Dithered frames of one star field over a sky with a 12 % gradient, its level
    changing from frame to frame (the pattern scales with it, as a NIR sky does)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    pattern = 1.0 + 0.12 * xx / shape[1] + 0.06 * yy / shape[0]
    xy = rng.uniform(8, 152, (30, 2))
    flux = rng.uniform(800, 30000, 30)
    frames, levels = [], []
    for i in range(n):
        shift = rng.uniform(-20, 20, 2)
        level = 800.0 + 60.0 * i
        img = _render(shape, xy + shift, flux) + level * pattern + rng.normal(0, 8.0, shape)
        frames.append(CCDData(img.astype(np.float32), unit="adu",
                              uncertainty=StdDevUncertainty(np.full(shape, 8.0, np.float32))))
        levels.append(level * float(np.median(pattern)))
    return frames, levels


def _residual_background(ccd) -> np.ndarray:
    back, _ = estimate_background(ccd.data, mask=ccd.mask, box_size=20)
    return back


def test_master_sky_removes_an_injected_gradient_to_within_one_percent_of_sky():
    frames, levels = _dithered_night()
    sky = master_sky(frames)
    assert sky.meta["NCOMBINE"] == 5 and np.isfinite(sky.data).all()
    for f, level in zip(frames[:3], levels):
        out = subtract_sky(f, sky)
        resid = _residual_background(out)
        assert np.abs(resid).max() < 0.01 * level, np.abs(resid).max() / level
        assert out.meta["SKYSUB"] == "master"
        # the master's uncertainty is propagated: larger than the frame's own 8 ADU
        assert 8.0 < np.median(out.uncertainty.array) < 8.0 * 1.2
        # the fallback (--no-master-sky) removes the level, not the gradient
        flat = subtract_sky(f, None)
        assert abs(np.median(_residual_background(flat))) < 0.01 * level
        assert np.abs(_residual_background(flat)).max() > 0.03 * level
        assert flat.meta["SKYSUB"] == "median"


def test_master_sky_refuses_too_few_frames_and_mixed_units():
    frames, _ = _dithered_night(n=3, shape=(64, 64))
    with pytest.raises(ValueError, match="at least 3"):
        master_sky(frames[:2])
    e = CCDData(frames[2].data, unit="electron")
    with pytest.raises(UnitMismatchError, match="one unit"):
        master_sky([frames[0], frames[1], e])


# ---------------------------------------------------------------- image arithmetic
def _pair():
    a = CCDData(np.array([[10.0, 20.0], [30.0, 40.0]]), unit="adu",
                uncertainty=StdDevUncertainty([[1.0, 2.0], [3.0, 4.0]]),
                mask=np.array([[True, False], [False, False]]), meta={"OBJECT": "A"})
    b = CCDData(np.array([[4.0, 5.0], [6.0, 8.0]]), unit="adu",
                uncertainty=StdDevUncertainty([[3.0, 4.0], [0.5, 1.0]]),
                mask=np.array([[False, False], [False, True]]))
    return a, b


@pytest.mark.parametrize("op, value, sigma", [
    ("+", [[14, 25], [36, 48]], [[10**0.5, 20**0.5], [9.25**0.5, 17**0.5]]),
    ("-", [[6, 15], [24, 32]], [[10**0.5, 20**0.5], [9.25**0.5, 17**0.5]]),
    # a*b: |ab| sqrt((sa/a)^2 + (sb/b)^2)
    ("*", [[40, 100], [180, 320]], [[40 * (0.01 + 0.5625) ** 0.5, 100 * (0.01 + 0.64) ** 0.5],
                                    [180 * (0.01 + 1 / 144) ** 0.5, 320 * (0.01 + 1 / 64) ** 0.5]]),
    ("/", [[2.5, 4.0], [5.0, 5.0]], [[2.5 * (0.01 + 0.5625) ** 0.5, 4 * (0.01 + 0.64) ** 0.5],
                                     [5 * (0.01 + 1 / 144) ** 0.5, 5 * (0.01 + 1 / 64) ** 0.5]]),
])
def test_imarith_values_and_uncertainties_against_hand_computed_ones(op, value, sigma):
    a, b = _pair()
    out = imarith(a, op, b)
    assert np.allclose(out.data, value)
    assert np.allclose(out.uncertainty.array, sigma, rtol=1e-6)
    assert out.mask.tolist() == [[True, False], [False, True]]  # OR of the masks
    assert out.meta["OBJECT"] == "A" and out.meta["IMARITH"].startswith(f"A {op}")
    assert str(out.unit) == ("adu" if op in "+-" else {"*": "adu2", "/": ""}[op])


def test_imarith_with_a_number_and_its_refusals():
    a, b = _pair()
    out = imarith(a, "*", 2.5)
    assert np.allclose(out.data, a.data * 2.5) and out.unit == u.adu
    assert np.allclose(out.uncertainty.array, a.uncertainty.array * 2.5)
    out = imarith(a, "subtract", 5)
    assert np.allclose(out.data, a.data - 5) and np.allclose(out.uncertainty.array,
                                                              a.uncertainty.array)
    e = CCDData(b.data, unit="electron", uncertainty=StdDevUncertainty(b.uncertainty.array))
    with pytest.raises(UnitMismatchError, match="A is in adu, B in electron"):
        imarith(a, "-", e)
    with pytest.raises(ValueError, match="operator='%'"):
        imarith(a, "%", b)
    with pytest.raises(ValueError, match="non-zero"):
        imarith(a, "/", 0)
    with pytest.raises(ValueError, match="one shape"):
        imarith(a, "+", CCDData(np.ones((3, 3)), unit="adu"))


@pytest.mark.sample_data
@pytest.mark.slow
def test_imarith_propagated_noise_matches_real_dome_flat_ratio():
    """flat1 / flat2 of two real HAT-P-27 dome flats: the propagated uncertainty (Poisson
    and read noise, EGAIN=2.06) against the measured scatter of the ratio."""
    from astrodart.calibration.noise import add_uncertainty

    flats = sorted(require(HATP27).glob("*dome_flat*"))[:2]
    bias = sorted(HATP27.glob("*bias_frame*"))[:2]
    b1, b2 = (read_frame(p) for p in bias)
    rn_adu = float(np.std((b1.data - b2.data)[100:900, 100:900])) / np.sqrt(2)
    level = float(np.median(b1.data))
    f1, f2 = (add_uncertainty(imarith(read_frame(p), "-", level), 2.06 * rn_adu, 2.06)
              for p in flats)
    ratio = imarith(f1, "/", f2)
    box = (slice(400, 600), slice(400, 600))
    measured = float(np.std(ratio.data[box] - np.median(ratio.data[box])))
    predicted = float(np.median(ratio.uncertainty.array[box]))
    assert predicted == pytest.approx(measured, rel=0.1)


# ---------------------------------------------------------------- command lines
def _write(ccd, path):
    write_frame(ccd, path, overwrite=True)
    return str(path)


def test_cli_imarith_writes_result_uncertainty_and_provenance(tmp_path, capsys):
    a, b = _pair()
    pa, pb = _write(a, tmp_path / "a.fits"), _write(b, tmp_path / "b.fits")
    assert main(["imarith", pa, "-", pb, "--out", str(tmp_path / "c.fits")]) == 0
    c = read_frame(tmp_path / "c.fits")
    assert np.allclose(c.data, [[6, 15], [24, 32]])
    assert np.allclose(c.uncertainty.array, [[10**0.5, 20**0.5], [9.25**0.5, 17**0.5]],
                       rtol=1e-3)
    assert c.mask.tolist() == [[True, False], [False, True]]
    h = fits.getheader(tmp_path / "c.fits")
    assert h["ADSTEP01"] == "imarith" and "a.fits - b.fits" in str(h["HISTORY"])
    assert not list(tmp_path.glob(".astrodart-tmp-*"))  # written atomically
    assert main(["imarith", pa, "/", "2", "--out", str(tmp_path / "d.fits")]) == 0
    assert np.allclose(read_frame(tmp_path / "d.fits").data, a.data / 2)
    e = CCDData(b.data, unit="electron")
    pe = _write(e, tmp_path / "e.fits")
    assert main(["imarith", pa, "+", pe, "--out", str(tmp_path / "f.fits")]) == 1
    assert "adu" in capsys.readouterr().err and not (tmp_path / "f.fits").exists()
    assert main(["imarith", pa, "+", str(tmp_path / "nope.fits"), "--out",
                 str(tmp_path / "g.fits")]) == 2


def test_cli_resample_puts_frames_on_the_reference_grid(tmp_path):
    stars = _sky_stars()
    ref_wcs, shape = _wcs(150.0, 20.0, 1.0), (128, 128)
    ref = _write(_field(ref_wcs, shape, stars), tmp_path / "ref.fits")
    src = _write(_field(_wcs(150.0 + 6 / 3600, 20.0, 1.0, rot_deg=15.0), shape, stars),
                 tmp_path / "src.fits")
    out = tmp_path / "out"
    assert main(["resample", src, "--reference", ref, "--out", str(out)]) == 0
    got = read_frame(out / "resampled_src.fits")
    assert WCS(got.meta).wcs.compare(ref_wcs.wcs, tolerance=1e-9)
    x, y = ref_wcs.world_to_pixel_values(stars[0], stars[1])
    inside = (x > 8) & (x < 120) & (y > 8) & (y < 120)
    found = find_stars(np.nan_to_num(got.data, nan=100.0), FWHM, 5.0)
    assert _offsets(np.c_[found["x"], found["y"]], np.c_[x, y][inside]).max() < 0.1
    nowcs = _write(CCDData(np.ones((8, 8)), unit="adu"), tmp_path / "nowcs.fits")
    assert main(["resample", src, "--reference", nowcs, "--out", str(out)]) == 1


def test_cli_master_sky_and_its_fallback(tmp_path, capsys):
    frames, levels = _dithered_night(n=4, shape=(96, 96), seed=4)
    files = [_write(f, tmp_path / f"f{i}.fits") for i, f in enumerate(frames)]
    sky = tmp_path / "sky.fits"
    assert main(["master-sky", *files, "--out", str(sky), "--subtract",
                 str(tmp_path / "sub")]) == 0
    assert fits.getheader(sky)["NCOMBINE"] == 4
    out = read_frame(tmp_path / "sub" / "skysub_f0.fits")
    assert np.abs(_residual_background(out)).max() < 0.01 * levels[0]
    assert main(["master-sky", *files, "--no-master-sky", "--subtract",
                 str(tmp_path / "med")]) == 0
    flat = read_frame(tmp_path / "med" / "skysub_f0.fits")
    assert flat.meta["SKYSUB"] == "median"
    assert np.allclose(flat.data, subtract_sky(read_frame(files[0]), None).data, atol=1e-3)
    assert np.abs(_residual_background(flat)).max() > 0.03 * levels[0]  # gradient left
    assert main(["master-sky", *files]) == 2  # neither --out nor --no-master-sky
    assert "--no-master-sky" in capsys.readouterr().err


def test_file_steps_for_mosaic_and_continuum_write_products_with_provenance(tmp_path):
    from astrodart.pipeline.products import continuum_subtraction, mosaic

    stars = _sky_stars(n=16, half_arcsec=70.0, seed=5)
    files = [_write(_field(_wcs(150.0 + d / 3600, 20.0, 1.0), (128, 128), stars),
                    tmp_path / f"p{i}.fits") for i, d in enumerate((-30, 30))]
    path = mosaic(tmp_path, files, "mosaic.fits", progress=False).run()
    h = fits.getheader(path)
    assert h["NCOMBINE"] == 2 and h["ADSTEP01"] == "mosaic" and h["NAXIS1"] > 180
    narrow, broad, *_ = _continuum_pair()
    pn, pb = _write(narrow, tmp_path / "ha.fits"), _write(broad, tmp_path / "r.fits")
    out = continuum_subtraction(pn, pb, tmp_path / "line.fits", progress=False).run()
    line = read_frame(out)
    assert line.meta["CONTSCAL"] == pytest.approx(0.08, abs=3 * line.meta["CONTSERR"] + 1e-4)
    assert line.meta["ADSTEP01"] == "continuum_subtraction"
    with pytest.raises(FileNotFoundError, match="broad"):
        continuum_subtraction(pn, tmp_path / "none.fits", tmp_path / "x.fits")
