"""The fast paths of stage-1 calibration: L.A.Cosmic on the full frame without a
bad-pixel map (one OpenMP thread set with threadpoolctl), and the uncertainty plane
quantized with an absolute step on write."""

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from conftest import SyntheticCamera
from scipy import ndimage

from astrodart.calibration import cosmics as crs
from astrodart.frames.io import read_frame, write_frame


def _scene(seed=21):
    cam = SyntheticCamera(ny=300, nx=300, seed=seed)
    stars, simg = cam.stars(n=50, fwhm=3.0, flux_range=(2e3, 4e5))
    hits, cimg = cam.cosmic_rays(60, avoid=stars[:, :2], amp_range=(500, 8000))
    e = (cam.expose(20, photons=simg, sky=600, cosmics=cimg) * cam.gain).astype(np.float32)
    return cam, stars, hits, e


def _openmp_threads():
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"]


def test_lacosmic_without_map_is_astroscrappy_on_the_full_frame():
    """No bad-pixel map: the result is astroscrappy's full-frame run (same noise model,
    all iterations at once), then the star-core guard; the OpenMP limit is restored."""
    import astroscrappy

    _, _, hits, e = _scene()
    before = _openmp_threads()
    mask, cleaned = crs.lacosmic(e, gain=1.0, sigclip=5, niter=4, core_ratio=0)
    assert _openmp_threads() == before
    var, _, _ = crs.noise_variance(e)
    full, fclean = astroscrappy.detect_cosmics(e, invar=var, gain=1.0, readnoise=0.0,
                                               sigclip=5, niter=4, sepmed=True,
                                               cleantype="meanmask", fsmode="median")
    assert np.array_equal(mask, full)
    assert np.allclose(cleaned, fclean)
    # every injected hit found; the hot pixels of an undarked frame are flagged too
    found = [bool(mask[px[:, 0], px[:, 1]].any()) for px in hits]
    assert np.mean(found) >= 0.95


def test_lacosmic_with_and_without_map_agree_off_the_bad_pixels():
    cam, _, _, e = _scene(22)
    bad = cam.hot | cam.dead
    with_map, _ = crs.lacosmic(e, gain=1.0, sigclip=5, mask=bad)
    without, _ = crs.lacosmic(e, gain=1.0, sigclip=5)
    near_bad = ndimage.binary_dilation(bad, iterations=3)
    assert (with_map ^ without)[~near_bad].sum() <= max(3, 0.02 * with_map.sum())


def test_uncertainty_plane_round_trip_within_5e_4(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal(1000, 30, (200, 300)).astype(np.float32)
    unc = np.sqrt(np.maximum(data, 0) + 13.0**2).astype(np.float32)
    unc[5, 5] = 4000.0  # a saturated pixel's large error
    ccd = CCDData(data, unit="electron", uncertainty=StdDevUncertainty(unc),
                  mask=np.zeros(data.shape, bool))
    a, b = tmp_path / "a.fits", tmp_path / "b.fits"
    write_frame(ccd, a)
    write_frame(ccd, b)
    assert a.read_bytes() == b.read_bytes()  # deterministic (checksum dither)
    back = read_frame(a)
    assert np.array_equal(back.data, data)
    rel = np.abs(back.uncertainty.array - unc) / unc
    assert rel.max() <= 5.1e-4, rel.max()
    assert a.stat().st_size < data.nbytes * 1.5  # the plane compressed (< 0.5 x raw)
    const = CCDData(data, unit="electron", uncertainty=StdDevUncertainty(np.full_like(unc, 13)))
    write_frame(const, tmp_path / "c.fits")
    assert np.allclose(read_frame(tmp_path / "c.fits").uncertainty.array, 13, rtol=5e-4)
    with fits.open(a, disable_image_compression=True) as hdul:
        assert hdul["UNCERT"].header["ZCMPTYPE"] == "RICE_1"


def test_step_outputs_plain_and_finalize_compresses_them(tmp_path):
    """A step's output (an intermediate) has plain planes; ``compress_planes`` (run by
    finalize_stage1 on the products it keeps) compresses them, the pixels untouched."""
    from astrodart.pipeline.finalize import compress_planes
    from astrodart.pipeline.prepare import deviation_calculation

    rng = np.random.default_rng(5)
    raw = tmp_path / "raw.fits"
    fits.PrimaryHDU(rng.normal(900, 20, (64, 80)).astype(np.float32),
                    fits.Header({"GAIN": 2.0, "EXPTIME": 10.0})).writeto(raw)
    out = deviation_calculation(tmp_path, [str(raw)], ron=10.0, progress=False,
                                executor="serial").run()[0]
    with fits.open(out) as hdul:
        assert type(hdul["UNCERT"]) is fits.ImageHDU
    before = read_frame(out)
    assert compress_planes(out) is True and compress_planes(out) is False
    with fits.open(out) as hdul:
        assert isinstance(hdul["UNCERT"], fits.CompImageHDU)
    after = read_frame(out)
    assert np.array_equal(after.data, before.data)
    np.testing.assert_allclose(after.uncertainty.array, before.uncertainty.array, rtol=5.1e-4)
    assert after.meta["ADSTEP01"] == "deviation_calculation"
