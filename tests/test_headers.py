"""Frames and headers layer on the real header variants in ../shared/data."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from astrodart.frames.io import FrameError, find_fits, is_fits_path, read_frame, write_frame
from astrodart.frames.header import FrameHeader, MissingKeywordError, normalise_frame_type, normalise_name
from datapaths import FEDER, HATP27, HATP32, M67, require


def test_reads_gzip_uint16_bzero_frame_with_unit():
    f = sorted(require(HATP27).glob("*bias_frame*"))[0]
    ccd = read_frame(f)
    assert ccd.shape == (1024, 1024)
    assert ccd.unit == "adu"
    assert ccd.data.dtype == np.float32
    # uint16 stored as int16 + BZERO=32768: the true values are ~980 ADU, never negative
    assert 950 < np.median(ccd.data) < 1010
    assert ccd.data.min() >= 0
    assert "BZERO" not in ccd.meta


@pytest.mark.parametrize("suffix", [".fit", ".FITS", ".fts", ".fits.gz", ".FIT.gz"])
def test_every_fits_suffix_roundtrips_atomically(tmp_path, suffix):
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    ccd = CCDData(data, unit="electron", uncertainty=StdDevUncertainty(np.ones_like(data)),
                  mask=data > 10, meta={"EXPTIME": 5.0})
    path = write_frame(ccd, tmp_path / f"frame{suffix}")
    assert is_fits_path(path)
    assert find_fits(tmp_path) == [str(path)]
    if suffix.endswith(".gz"):
        assert gzip.open(path).read(6) == b"SIMPLE"
    back = read_frame(path)
    np.testing.assert_array_equal(back.data, data)
    assert back.unit == "electron"
    np.testing.assert_array_equal(back.uncertainty.array, 1)
    assert back.mask.sum() == 1
    assert not any(p.name.startswith(".astrodart-tmp") for p in tmp_path.iterdir())
    with pytest.raises(FileExistsError):
        write_frame(ccd, path)


def test_image_in_first_extension_is_read_with_primary_keywords(tmp_path):
    prim = fits.PrimaryHDU(header=fits.Header({"DATE-OBS": "2020-01-01T00:00:00", "EXPTIME": 3}))
    ext = fits.ImageHDU(np.full((5, 6), 7, dtype=np.uint16), name="SCI")
    fits.HDUList([prim, ext]).writeto(tmp_path / "ext.fits")
    ccd = read_frame(tmp_path / "ext.fits")
    assert ccd.shape == (5, 6) and float(ccd.data.mean()) == 7
    assert FrameHeader(ccd.meta).exptime == 3


@pytest.mark.parametrize("content,problem", [
    (b"", "empty"),
    (b"this is not a FITS file\n" * 200, "not a readable FITS"),
])
def test_bad_files_name_the_file_and_problem(tmp_path, content, problem):
    p = tmp_path / "bad.fits"
    p.write_bytes(content)
    with pytest.raises(FrameError, match=problem) as err:
        read_frame(p)
    assert "bad.fits" in str(err.value)


def test_truncated_fits_is_reported(tmp_path):
    src = sorted(require(HATP32).glob("*.FITS"))[0]
    p = tmp_path / "truncated.fits"
    p.write_bytes(src.read_bytes()[:100_000])
    with pytest.raises(FrameError, match="truncated.fits"):
        read_frame(p)


def test_frame_type_spellings():
    cases = {"Bias Frame": "bias", "BIAS": "bias", "zero": "bias", "Dark Frame": "dark",
             "Flat Field": "flat", "FLAT": "flat", "Light Frame": "object", "object": "object",
             "flatdark": "flatdark", "Flat Dark": "flatdark", "LIGHT": "object", "comet": None}
    for raw, expected in cases.items():
        assert normalise_frame_type(raw) == expected, raw
    assert normalise_name("hat-p-27") == normalise_name("HAT-P-27") == normalise_name("HAT P_27")


def test_sbig_ccdsoft_header():
    fh = FrameHeader.from_file(sorted(require(HATP27).glob("*science*"))[0])
    assert fh.exptime == 20.0
    assert fh.gain == pytest.approx(2.06)          # only EGAIN is written
    assert fh.read_noise is None
    assert fh.filter == "Visible"
    assert fh.frame_type == "object"
    assert fh.binning == (1, 1)
    assert fh.date_obs.scale == "utc" and fh.date_obs.isot.startswith("2018-04-23T02:5")
    assert (fh.mid_exposure - fh.date_obs).sec == pytest.approx(10.0, abs=1e-6)
    assert fh.pixel_scale is None                  # FOCALLEN = 0: unknown, not infinite
    assert fh.coord is None and fh.object is None


def test_microobservatory_local_time_and_west_longitude():
    for f in sorted(require(HATP32).glob("*.FITS")):
        fh = FrameHeader.from_file(f)
        ut = FrameHeader({"UT-OBS": fh.header["UT-OBS"]}).date_obs
        assert abs((fh.date_obs - ut).sec) < 1e-3, f      # -0700 local == UT-OBS
        assert abs(fh.date_obs.mjd - fh.header["MJD-OBS"]) < 1e-3
        assert fh.frame_type is None                      # no IMAGETYP at all
    loc = fh.location
    assert loc.lon.deg == pytest.approx(-110.88) and loc.lat.deg == pytest.approx(31.68)
    assert fh.coord.ra.deg == pytest.approx(31.312099, abs=1e-5)   # decimal RA is degrees
    assert fh.pixel_scale == pytest.approx(5.21)
    assert fh.ccd_temperature == pytest.approx(271.0 - 273.15)


def test_maxim_sexagesimal_pointing_and_signed_longitude():
    fh = FrameHeader.from_file(require(FEDER) / "maximdl_6_18_header.fit")
    c = fh.coord
    assert c.ra.deg == pytest.approx((20 + 57 / 60 + 4.40 / 3600) * 15)
    assert c.dec.deg == pytest.approx(31 + 39 / 60 + 39.6 / 3600)
    assert fh.location.lon.deg == pytest.approx(-(96 + 27 / 60 + 12 / 3600))
    assert fh.filter == "r" and fh.object == "kelt-16-b"


def test_feder_frames_classify_as_their_headers_say():
    expected = {"biastest1.fit": "bias", "darktest1.fit": "dark", "aspen_trimmed.fit": "flat",
                "flattest.fit": "bias",  # labelled BIAS: the header wins over the name
                "maximdl_5_21_header.fit": "object", "uint16.fit": "object",
                "neon-on-dome-10-sec-high-res-though-scope.fit": None}
    for name, kind in expected.items():
        assert FrameHeader.from_file(require(FEDER) / name).frame_type == kind, name


def test_missing_exptime_names_file_and_keywords(tmp_path):
    p = tmp_path / "noexp.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(p)
    with pytest.raises(MissingKeywordError) as err:
        FrameHeader.from_file(p).exptime
    msg = str(err.value)
    assert "noexp.fits" in msg and "EXPTIME" in msg and "EXPOSURE" in msg


def test_m67_float_frames():
    ccd = read_frame(require(M67) / "M67_V.fits")
    assert ccd.shape == (512, 323)
    assert FrameHeader(ccd.meta).filter is None
