"""Tests of the memory-bounded combine engine (astrodart.combine.engine, astrodart.combine.files).

Accuracy is pinned against ccdproc.combine configured the same way, and against a
per-pixel pure-Python reference where ccdproc differs by design (iterated clipping).
Big-memory and speed measurements live in benchmarks/combine.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import ccdproc
import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from datapaths import HATP27, REPO, require

from astrodart.combine.engine import combine_band
from astrodart.combine.methods import MAD_TO_STD, Rejection
from astrodart.combine.sorting import batcher_comparators
from astrodart.frames.io import FrameError, read_frame, write_frame
from astrodart.combine.files import combine_files, plan_band_rows
from astrodart.pipeline.image_combination import image_combination

RTOL = 1e-5


def write_cube(
    folder: Path,
    cube: np.ndarray,
    unit: str = "adu",
    masks=None,
    suffix=".fits",
    names: str = "frame",
) -> list[Path]:
    """Write each plane of ``cube`` as a float32 FITS frame (with a MASK extension if given)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, plane in enumerate(cube):
        p = folder / f"{names}_{i:03d}{suffix}"
        mask = None if masks is None else masks[i]
        write_frame(CCDData(plane.astype(np.float32), unit=unit, mask=mask), p, overwrite=True)
        paths.append(p)
    return paths


def ccdproc_combine(files, **kw) -> CCDData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ccdproc.combine([str(f) for f in files], unit="adu", **kw)


def stack_with_outliers(n=7, shape=(40, 50), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cube = rng.normal(1000.0, 10.0, (n,) + shape)
    hits = rng.integers(0, shape[0] * shape[1], 25)
    cube[rng.integers(0, n, 25), hits // shape[1], hits % shape[1]] += rng.uniform(200, 5e4, 25)
    return cube.astype(np.float32)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    cube = stack_with_outliers()
    return cube, write_cube(folder, cube)


def open_result(path):
    with fits.open(path) as hdul:
        return (
            hdul[0].data.astype(np.float64),
            hdul["UNCERT"].data.astype(np.float64),
            hdul["NREJECT"].data.copy(),
            hdul["MASK"].data.copy(),
            hdul[0].header.copy(),
        )


# --------------------------------------------------------------------------- agreement with ccdproc


@pytest.mark.parametrize("method", ["median", "average", "sum"])
def test_methods_match_ccdproc(frames, tmp_path, method):
    _cube, files = frames
    data, unc, nrej, mask, header = open_result(combine_files(files, tmp_path / "m.fits", method))
    ref = ccdproc_combine(files, method=method)
    np.testing.assert_allclose(data, ref.data, rtol=RTOL)
    np.testing.assert_allclose(unc, ref.uncertainty.array, rtol=1e-4)
    assert (nrej == 0).all() and not mask.any()
    assert header["NCOMBINE"] == len(files) and header["COMBMETH"] == method


def test_weighted_average_matches_ccdproc(frames, tmp_path):
    cube, files = frames
    w = np.linspace(0.5, 2.0, len(files))
    out = combine_files(files, tmp_path / "w.fits", "weighted", weights=w)
    data, unc, *_, header = open_result(out)
    ref = ccdproc_combine(files, method="average", weights=w)
    np.testing.assert_allclose(data, ref.data, rtol=RTOL)
    # standard error of a weighted mean: sqrt(sum w^2 (x - m)^2) / sum w
    x = cube.astype(np.float64)
    m = (w[:, None, None] * x).sum(0) / w.sum()
    se = np.sqrt(((w[:, None, None] * (x - m)) ** 2).sum(0)) / w.sum()
    np.testing.assert_allclose(unc, se, rtol=1e-4)
    assert header["IMWGT003"] == pytest.approx(w[2])


def test_weighted_sum_matches_ccdproc(frames, tmp_path):
    _cube, files = frames
    w = np.linspace(1.0, 3.0, len(files))
    data, *_ = open_result(combine_files(files, tmp_path / "ws.fits", "sum", weights=w))
    np.testing.assert_allclose(
        data, ccdproc_combine(files, method="sum", weights=w).data, rtol=RTOL
    )


def test_scaled_matches_ccdproc(frames, tmp_path):
    _cube, files = frames
    factors = np.linspace(0.8, 1.2, len(files))
    data, *_, header = open_result(
        combine_files(files, tmp_path / "s.fits", "scaled", scale=factors)
    )
    np.testing.assert_allclose(
        data, ccdproc_combine(files, method="average", scale=factors).data, rtol=RTOL
    )
    assert header["IMSCL002"] == pytest.approx(factors[1])

    def inv_median(a):
        return 1.0 / np.median(a)

    data, *_ = open_result(combine_files(files, tmp_path / "s2.fits", "median", scale=inv_median))
    ref = ccdproc_combine(files, method="median", scale=inv_median)
    np.testing.assert_allclose(data, ref.data, rtol=RTOL)
    assert np.median(data) == pytest.approx(1.0, abs=1e-3)
    # 'scaled' without a scale uses the inverse medians (flat normalisation)
    data3, *_ = open_result(combine_files(files, tmp_path / "s3.fits", "scaled"))
    np.testing.assert_allclose(
        data3, ccdproc_combine(files, method="average", scale=inv_median).data, rtol=RTOL
    )


@pytest.mark.parametrize("method", ["median", "average"])
def test_sigclip_one_pass_matches_ccdproc(frames, tmp_path, method):
    _cube, files = frames
    out = combine_files(
        files,
        tmp_path / "c.fits",
        method,
        clipping="sigclip",
        sigma_low=2.5,
        sigma_high=2.0,
        maxiters=1,
    )
    data, _unc, nrej, _mask, header = open_result(out)
    ref = ccdproc_combine(
        files,
        method=method,
        sigma_clip=True,
        sigma_clip_low_thresh=2.5,
        sigma_clip_high_thresh=2.0,
        sigma_clip_func="median",
        sigma_clip_dev_func="mad_std",
    )
    np.testing.assert_allclose(data, ref.data, rtol=RTOL)
    assert nrej.sum() > 25  # the outliers and some noise were clipped
    assert header["CLIPMETH"] == "sigclip" and header["CLIPSLO"] == 2.5 and header["CLIPSHI"] == 2.0
    assert header["NREJECT"] == nrej.sum()


def test_sigclip_mean_std_matches_ccdproc_default(frames, tmp_path):
    _cube, files = frames
    out = combine_files(
        files,
        tmp_path / "c.fits",
        "average",
        clipping="sigclip",
        sigma_low=1.5,
        sigma_high=1.5,
        sigma_center="mean",
        sigma_spread="std",
        maxiters=1,
    )
    ref = ccdproc_combine(
        files,
        method="average",
        sigma_clip=True,
        sigma_clip_low_thresh=1.5,
        sigma_clip_high_thresh=1.5,
    )
    np.testing.assert_allclose(open_result(out)[0], ref.data, rtol=RTOL)


def reference_clip(v, lo, hi, maxiters):
    """Per-pixel iterated median/MAD clipping; rejected values stay rejected."""
    v = v[np.isfinite(v)].astype(np.float64)
    for _ in range(maxiters if v.size else 0):
        c = np.median(v)
        s = MAD_TO_STD * np.median(np.abs(v - c))
        keep = (v >= c - lo * s) & (v <= c + hi * s)
        if keep.all():
            break
        v = v[keep]
    return v


@pytest.mark.parametrize("nframes", [5, 9, 20, 70])
def test_sigclip_iterates_like_reference(nframes):
    cube = stack_with_outliers(n=nframes, shape=(16, 18), seed=nframes)
    cube[:, 3, 3] = np.nan  # all missing
    cube[1, 4, 4] = np.nan
    cube[:, 5, 5] = 1000.0  # zero spread
    rej = Rejection(sigclip=True, sigma_low=3.0, sigma_high=3.0, maxiters=10)
    res = {m: combine_band(cube.copy(), m, rejection=rej) for m in ("median", "average", "sum")}
    for y in range(cube.shape[1]):
        for x in range(cube.shape[2]):
            v = reference_clip(cube[:, y, x], 3.0, 3.0, 10)
            nvalid = np.isfinite(cube[:, y, x]).sum()
            r = res["median"]
            assert r.nrejected[y, x] == nvalid - v.size and r.ncombined[y, x] == v.size
            if v.size == 0:
                assert np.isnan(r.data[y, x])
                continue
            assert r.data[y, x] == pytest.approx(np.median(v), rel=1e-6)
            assert res["average"].data[y, x] == pytest.approx(v.mean(), rel=1e-6)
            assert res["sum"].data[y, x] == pytest.approx(v.sum(), rel=1e-6)
            if v.size > 1:
                mad_err = MAD_TO_STD * np.median(np.abs(v - np.median(v))) / np.sqrt(v.size)
                assert r.uncertainty[y, x] == pytest.approx(mad_err, rel=1e-3, abs=1e-3)
                assert res["average"].uncertainty[y, x] == pytest.approx(
                    v.std() / np.sqrt(v.size), rel=1e-4, abs=1e-4
                )


def test_extrema_clipping_matches_ccdproc(frames, tmp_path):
    _cube, files = frames
    out = combine_files(
        files, tmp_path / "e.fits", "average", clipping="extrema_clipping", nlow=1, nhigh=2
    )
    data, _unc, nrej, _mask, header = open_result(out)
    ref = ccdproc_combine(files, method="average", clip_extrema=True, nlow=1, nhigh=2)
    np.testing.assert_allclose(data, ref.data, rtol=RTOL)
    assert (nrej == 3).all()
    assert header["CLIPNLO"] == 1 and header["CLIPNHI"] == 2


def test_minmax_matches_ccdproc_and_counts(frames, tmp_path):
    cube, files = frames
    lo, hi = 985.0, 1020.0
    out = combine_files(
        files, tmp_path / "mm.fits", "median", clipping="minmax", min_value=lo, max_value=hi
    )
    data, _unc, nrej, mask, header = open_result(out)
    ref = ccdproc_combine(
        files, method="median", minmax_clip=True, minmax_clip_min=lo, minmax_clip_max=hi
    )
    ok = ~ref.mask
    np.testing.assert_allclose(data[ok], ref.data[ok], rtol=RTOL)
    np.testing.assert_array_equal(nrej, ((cube < lo) | (cube > hi)).sum(0))
    np.testing.assert_array_equal(mask.astype(bool), ref.mask)
    assert header["CLIPMIN"] == lo and header["CLIPMAX"] == hi


def test_minmax_then_sigclip_combined(frames, tmp_path):
    cube, files = frames
    out = combine_files(
        files, tmp_path / "ms.fits", "median", clipping=["sigclip", "minmax"], max_value=3e4
    )
    data, _unc, _nrej, _mask, header = open_result(out)
    assert header["CLIPMETH"] == "minmax+sigclip"
    expected = np.empty(cube.shape[1:])
    for y, x in np.ndindex(*cube.shape[1:]):
        v = cube[:, y, x].astype(np.float64)
        expected[y, x] = np.median(reference_clip(v[v <= 3e4], 3.0, 3.0, 10))
    np.testing.assert_allclose(data, expected, rtol=RTOL)


# --------------------------------------------------------------------------- missing values


def test_masked_and_nan_values_are_excluded(tmp_path):
    cube = stack_with_outliers(n=6, shape=(30, 32), seed=4)
    masks = np.zeros(cube.shape, bool)
    masks[0, :, 5] = True  # a bad column in frame 0
    masks[2, 10:12, :] = True  # bad rows in frame 2
    cube[3, 7, 7] = np.nan
    masks[:, 20, 20] = True  # nothing left there
    files = write_cube(tmp_path / "in", cube, masks=masks)
    out = combine_files(files, tmp_path / "m.fits", "median", memory_limit=3e5)  # many bands
    data, _unc, nrej, mask, _ = open_result(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-masked pixel
        expected = np.nanmedian(np.where(masks, np.nan, cube).astype(np.float64), axis=0)
    ok = np.isfinite(expected)
    np.testing.assert_allclose(data[ok], expected[ok], rtol=RTOL)
    assert np.isnan(data[20, 20]) and mask[20, 20] == 1 and mask.sum() == 1
    assert (nrej == 0).all()  # missing values are not "rejected"
    ref = ccdproc_combine(files, method="median")  # ccdproc reads the MASK extension too
    np.testing.assert_allclose(data[ok], ref.data[ok], rtol=RTOL)


def test_gzip_input_with_mask_streams_in_bands(tmp_path):
    cube = stack_with_outliers(n=5, shape=(64, 40), seed=5)
    masks = np.zeros(cube.shape, bool)
    masks[1, 30:40, 3] = True
    files = write_cube(tmp_path / "gz", cube, masks=masks, suffix=".fits.gz")
    assert files[0].read_bytes()[:2] == b"\x1f\x8b"
    out = combine_files(files, tmp_path / "g.fits", "average", memory_limit=2e5)
    expected = np.nanmean(np.where(masks, np.nan, cube).astype(np.float64), axis=0)
    np.testing.assert_allclose(open_result(out)[0], expected, rtol=RTOL)


def test_tile_compressed_and_integer_inputs(tmp_path):
    rng = np.random.default_rng(6)
    cube = rng.integers(900, 1100, (5, 33, 47)).astype(np.uint16)
    files = []
    for i, plane in enumerate(cube):
        p = tmp_path / f"c{i}.fits"
        if i % 2:
            fits.HDUList(
                [fits.PrimaryHDU(), fits.CompImageHDU(plane, compression_type="RICE_1")]
            ).writeto(p)
        else:
            fits.PrimaryHDU(plane).writeto(p)  # uint16 stored as int16 + BZERO=32768
        files.append(p)
    data = open_result(combine_files(files, tmp_path / "o.fits", "median"))[0]
    np.testing.assert_array_equal(data, np.median(cube.astype(np.float64), axis=0))


def test_unsigned16_inputs_read_exactly_with_blank_and_saturation(tmp_path):
    """Camera data (uint16 stored as int16 + BZERO 32768) over the whole range, read in
    several bands: values equal the physical ones exactly, BLANK and saturated (65535)
    values are missing, not rejected."""
    rng = np.random.default_rng(11)
    cube = rng.integers(0, 65536, (4, 12, 1500)).astype(np.uint16)
    cube[:, 0, :4] = [[0], [1], [32767], [32768]]  # the sign-bit boundary, both sides
    cube[1, 5, 5] = cube[2, 6, 6] = 65535  # saturated
    files = []
    for i, plane in enumerate(cube):
        hdu = fits.PrimaryHDU(plane)  # written as int16 with BZERO = 32768
        hdu.header["BLANK"] = -32767  # raw value of the physical 1
        files.append(tmp_path / f"u{i}.fits")
        hdu.writeto(files[-1])
        header = fits.getheader(files[-1])
        assert (header["BITPIX"], header["BZERO"], header["BLANK"]) == (16, 32768, -32767)
    missing = (cube == 1) | (cube == 65535)
    truth = np.where(missing, np.nan, cube.astype(np.float64))
    out = combine_files(files, tmp_path / "o.fits", "median", memory_limit=1e5)
    assert plan_band_rows(4, (12, 1500), 1e5) < 6  # read band by band
    data, _unc, nrej, _mask, _hdr = open_result(out)
    np.testing.assert_array_equal(data, np.nanmedian(truth, axis=0))
    assert (nrej == 0).all()
    res = combine_band(truth.astype(np.float32), "sum")
    np.testing.assert_array_equal(res.ncombined, (~missing).sum(axis=0))


# --------------------------------------------------------------------------- rejection power


def test_single_outlier_among_five_frames_is_rejected(tmp_path):
    rng = np.random.default_rng(7)
    cube = rng.normal(1000.0, 5.0, (5, 20, 20)).astype(np.float32)
    cube[2, 10, 10] = 1e5
    files = write_cube(tmp_path / "in", cube)
    data, _unc, nrej, *_ = open_result(
        combine_files(files, tmp_path / "o.fits", "average", clipping="sigclip")
    )
    clean = np.delete(cube[:, 10, 10], 2).astype(np.float64)
    assert nrej[10, 10] == 1
    assert data[10, 10] == pytest.approx(clean.mean(), rel=RTOL)
    # ccdproc's default mean/std clipping cannot: the largest z-score among 5 is 4/sqrt(5)
    ref = ccdproc_combine(files, method="average", sigma_clip=True)
    assert ref.data[10, 10] > 2e4


# --------------------------------------------------------------------------- real data


def test_real_bias_frames_master(tmp_path):
    files = sorted(require(HATP27).glob("*bias_frame*.FIT.gz"))
    assert len(files) == 10
    out = image_combination(
        wdir=tmp_path,
        files=files,
        output_name="Masterbias.fits",
        combining_method="median",
        memory_limit=20e6,
    ).run()
    assert out == str(tmp_path / "Masterbias.fits")
    master = read_frame(out)
    assert master.unit == u.adu
    assert 970 < np.median(master.data) < 990  # ~980 ADU pedestal
    ref = ccdproc_combine(files, method="median")
    np.testing.assert_allclose(master.data, ref.data, rtol=RTOL)
    np.testing.assert_allclose(
        master.uncertainty.array, ref.uncertainty.array, rtol=1e-4, atol=1e-4
    )
    header = master.meta
    assert header["NCOMBINE"] == 10
    assert [header[f"IMCMB{i:03d}"] for i in range(1, 11)] == [f.name for f in files]
    assert all(f.exists() for f in files)  # never deleted (remove_files='yes' is ignored)


# --------------------------------------------------------------------------- memory


def test_band_sizing():
    rows = plan_band_rows(20, (4096, 4096), 1e9, itemsize=4, threads=2)
    band_bytes = rows * 20 * 4096 * 4
    assert rows < 4096 and 0.85e9 < band_bytes + rows * 4096 * 18 + 48e6 <= 1e9
    assert plan_band_rows(3, (100, 100), 1e9) == 100
    with pytest.raises(ValueError, match="too small"):
        plan_band_rows(20, (4096, 4096), 1e5)


_MEMORY_CHILD = r"""
import json, sys
import psutil
sys.path.insert(0, sys.argv[1])
from astrodart.combine.files import combine_files
files, out, limit = json.loads(sys.argv[2])
rss0 = psutil.Process().memory_info().rss
combine_files(files, out, "median", clipping="sigclip", memory_limit=limit, threads=1)
# VmHWM is this process image's peak; ru_maxrss would carry the forking parent's peak over exec.
with open("/proc/self/status") as fh:
    hwm = [int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmHWM:")][0]
print(json.dumps({"rss0": rss0, "peak": hwm}))
"""


def test_memory_stays_bounded_in_subprocess(tmp_path):
    nframes, ny, nx = 16, 1024, 1024
    rng = np.random.default_rng(8)
    files = []
    for i in range(nframes):
        p = tmp_path / f"f{i:02d}.fits"
        fits.PrimaryHDU(rng.normal(1000, 10, (ny, nx)).astype(np.float32)).writeto(p)
        files.append(str(p))
    limit = 16e6
    stack_bytes = nframes * ny * nx * 4  # 67 MB: what loading everything would take
    assert plan_band_rows(nframes, (ny, nx), limit) < ny // 4
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEMORY_CHILD,
            str(REPO),
            json.dumps([files, str(tmp_path / "o.fits"), limit]),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(res.stdout.strip().splitlines()[-1])
    growth = info["peak"] - info["rss0"]
    output_bytes = ny * nx * 13  # data, uncertainty, counts, mask
    assert growth < limit + output_bytes + 20e6, f"peak grew by {growth / 1e6:.1f} MB"
    assert growth < stack_bytes
    assert fits.getdata(tmp_path / "o.fits").shape == (ny, nx)


# --------------------------------------------------------------------------- API and errors


def test_image_combination_astrodart_call(frames, tmp_path):
    _cube, files = frames
    step = image_combination(
        wdir=tmp_path,
        files=[str(f) for f in files],
        output_name="Masterbias.fits",
        combining_method="median",
        clipping_method="sigclip",
        minclip=2,
        maxclip=5,
    )
    out = step.run()
    assert Path(out).exists() and all(f.exists() for f in files)
    header = fits.getheader(out)
    assert header["CLIPSLO"] == 2 and header["CLIPSHI"] == 5
    # re-running replaces the master (AstroDART behaviour); aliases give the same result
    out2 = image_combination(
        tmp_path,
        files,
        "Masterbias.fits",
        "median",
        "sigclip",
        low_thresh=2,
        high_thresh=5,
        remove_files="no",
    ).run()
    assert out2 == out
    from astrodart.utils import image_combination as from_utils

    assert from_utils is image_combination


def test_output_is_a_ccddata_file(frames, tmp_path):
    _cube, files = frames
    out = combine_files(files, tmp_path / "o.fits", "median", clipping="sigclip")
    ccd = CCDData.read(out)
    assert ccd.uncertainty is not None and ccd.mask is not None and ccd.unit == u.adu
    assert fits.getdata(out, "NREJECT").dtype.kind == "i"
    with pytest.raises(FileExistsError):
        combine_files(files, out, "median")
    assert combine_files(files, out, "median", overwrite=True) == out
    with pytest.raises(TypeError, match="True or False"):
        combine_files(files, out, "median", overwrite="yes")


def test_threads_and_float64_give_the_same_result():
    cube = stack_with_outliers(n=11, shape=(50, 60), seed=9)
    rej = Rejection(sigclip=True)
    one = combine_band(cube.copy(), "median", rejection=rej, threads=1)
    two = combine_band(cube.copy(), "median", rejection=rej, threads=2)
    f64 = combine_band(cube.astype(np.float64), "median", rejection=rej)
    np.testing.assert_array_equal(one.data, two.data)
    np.testing.assert_array_equal(one.nrejected, two.nrejected)
    assert f64.data.dtype == np.float64
    # float32 rounding may flip a clipping decision right at a bound, nowhere else
    same = one.nrejected == f64.nrejected
    assert same.mean() > 0.99
    np.testing.assert_allclose(one.data[same], f64.data[same], rtol=RTOL)


def test_sorting_network_sorts():
    rng = np.random.default_rng(10)
    assert len(batcher_comparators(20)) == 103
    for n in range(1, 40):
        x = rng.normal(size=(n, 64)).astype(np.float32)
        res = combine_band(x[:, None, :].copy(), "median")
        np.testing.assert_allclose(res.data[0], np.median(x, axis=0), rtol=1e-6)


def test_unknown_names_are_errors(frames, tmp_path):
    _cube, files = frames
    with pytest.raises(ValueError, match=r"'mediam' unknown.*median"):
        combine_files(files, tmp_path / "x.fits", "mediam")
    with pytest.raises(ValueError, match=r"'sigmaclip' unknown.*sigclip"):
        combine_files(files, tmp_path / "x.fits", "median", clipping="sigmaclip")
    with pytest.raises(TypeError, match=r"'clip_method'.*allowed"):
        image_combination(tmp_path, files, "x.fits", "median", clip_method="sigclip")
    with pytest.raises(TypeError, match=r"'sigma_clip_low'"):
        combine_files(files, tmp_path / "x.fits", "median", sigma_clip_low=2)
    with pytest.raises(ValueError, match="nlow"):
        image_combination(tmp_path, files, "x.fits", "median", "sigclip", nlow=2)
    with pytest.raises(ValueError, match="minclip=2 and low_thresh=3"):
        image_combination(tmp_path, files, "x.fits", "median", "sigclip", minclip=2, low_thresh=3)
    with pytest.raises(ValueError, match="weights"):
        combine_files(files, tmp_path / "x.fits", "weighted")
    with pytest.raises(ValueError, match="weights"):
        combine_files(files, tmp_path / "x.fits", "average", weights=[1, 2])
    with pytest.raises(ValueError, match="replace one of the inputs"):
        combine_files(files, files[0], "median", overwrite=True)
    with pytest.raises(ValueError, match="center"):
        Rejection(sigclip=True, center="mode")
    assert not (tmp_path / "x.fits").exists()


def test_shape_and_unit_mismatch_name_the_file(tmp_path):
    good = write_cube(tmp_path / "a", np.ones((2, 10, 12), np.float32))
    small = write_cube(tmp_path / "b", np.ones((1, 10, 11), np.float32), names="small")[0]
    electrons = write_cube(
        tmp_path / "c", np.ones((1, 10, 12), np.float32), unit="electron", names="elec"
    )[0]
    with pytest.raises(FrameError, match=r"small_000\.fits.*shape"):
        combine_files(good + [small], tmp_path / "o.fits")
    with pytest.raises(FrameError, match=r"elec_000\.fits.*unit"):
        combine_files(good + [electrons], tmp_path / "o.fits")
    with pytest.raises(FrameError, match="missing.fits"):
        combine_files(good + [tmp_path / "missing.fits"], tmp_path / "o.fits")


def test_master_combination_rejects_outliers_with_few_frames():
    """Masters (master_frame) are the engine with a floored MAD spread and propagated
    uncertainties (was calibration.ccd.combine_stack, bit-identical on real bias frames)."""
    from astrodart.combine.masters import combine_master, master_rejection
    from astrodart.combine.uncertainty import median_variance_factor

    rng = np.random.default_rng(1)
    cube = rng.normal(100, 5, (5, 60, 60)).astype(np.float32)
    cube[2, 10, 10] = 5000  # one cosmic ray in five frames
    res = combine_master(cube.copy(), "average", master_rejection("sigclip", 3, 3))
    assert res.ncombined[10, 10] == 4 and abs(res.data[10, 10] - 100) < 15
    assert res.uncertainty.mean() == pytest.approx(5 / np.sqrt(5), rel=0.15)
    # the floor keeps the few frames from rejecting their own noise
    raw = combine_band(cube.copy(), "average", rejection=Rejection(sigclip=True, maxiters=2))
    assert res.rejected_fraction < 0.02 < 0.05 < raw.rejected_fraction
    med = combine_master(cube.copy(), "median", master_rejection(None),
                         variances=np.full(cube.shape, 25.0))
    assert med.uncertainty.mean() == pytest.approx(np.sqrt(1.430) * 5 / np.sqrt(5), rel=1e-3)
    # the median's error factor for small stacks, checked by simulation
    sims = np.median(np.random.default_rng(2).standard_normal((200000, 10)), axis=1)
    assert np.var(sims) * 10 == pytest.approx(float(median_variance_factor(10)), rel=0.02)
    assert median_variance_factor(500) == pytest.approx(np.pi / 2)
    ext = combine_master(cube.copy(), "average", master_rejection("extrema_clipping", nlow=1, nhigh=1))
    assert ext.ncombined.max() == 3 and abs(ext.data[10, 10] - 100) < 15
    mm = combine_master(cube.copy(), "sum", master_rejection("minmax", vmin=0, vmax=1000))
    assert mm.ncombined[10, 10] == 4 and abs(mm.data[10, 10] / 4 - 100) < 15
    with pytest.raises(ValueError, match="combination method"):
        combine_master(cube.copy(), "mode", master_rejection(None))
    with pytest.raises(ValueError, match="clipping method"):
        master_rejection("sigmaclip")
    with pytest.raises(ValueError, match="extrema_clipping drops"):
        combine_master(cube.copy(), "median", master_rejection("extrema_clipping", nlow=3, nhigh=2))


def test_mark_rejected_marks_exactly_the_values_left_out():
    rng = np.random.default_rng(3)
    cube = rng.normal(100, 5, (9, 40, 50)).astype(np.float32)
    cube[1, 5, 5] = 5000
    cube[3, 7, 7] = np.nan
    for method in ("median", "average"):
        for rej in (Rejection(sigclip=True), Rejection(sigclip=True, spread_floor_box=8),
                    Rejection(extrema=True), Rejection(minmax=True, max_value=120)):
            band = cube.copy()
            res = combine_band(band, method, rejection=rej, mark_rejected=True)
            assert np.array_equal((~np.isnan(band)).sum(axis=0), res.ncombined)
            plain = combine_band(cube.copy(), method, rejection=rej)
            assert np.array_equal(plain.data, res.data, equal_nan=True)
