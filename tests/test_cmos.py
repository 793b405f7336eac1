"""CMOS realities: gain settings vs e-/ADU, 12/14-bit data in 16-bit words, darks matched
on exposure and sensor temperature (issue 21)."""
from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits
from datapaths import FEDER, HATP27, HATP32, require

from astrodart.calibration.dark_temperature import DarkTemperatureWarning, nearest_temperature
from astrodart.frames.camera import camera_saturation
from astrodart.frames.cmos import GainSettingWarning, camera_bit_depth, frame_bit_depth
from astrodart.frames.header import FrameHeader
from astrodart.frames.io import read_frame

# --- 1. gain keywords, as each capture program writes them ---------------------------
# N.I.N.A. (and SharpCap / ASIAIR with a known camera): GAIN = setting, OFFSET, EGAIN e-/ADU
NINA = {"INSTRUME": "ZWO ASI2600MM Pro", "GAIN": 100, "OFFSET": 50, "EGAIN": 0.2478,
        "SET-TEMP": -10.0, "CCD-TEMP": -9.9}
SHARPCAP = {"INSTRUME": "ZWO ASI294MC Pro", "GAIN": 120, "BAYERPAT": "RGGB"}
ASIAIR = {"GAIN": 0, "OFFSET": 70}  # low gain setting: only OFFSET tells it from e-/ADU
QHY = {"INSTRUME": "QHY268M", "GAIN": 26}
UNKNOWN_LARGE = {"GAIN": 139}
MAXIM_CCD = {"INSTRUME": "SBIG STL-11000 3 CCD Camera", "GAIN": 0.8}  # MaxIm DL: e-/ADU


def _fh(cards):
    return FrameHeader(fits.Header(cards), "x.fits")


def test_egain_wins_over_the_gain_setting():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: EGAIN is there
        fh = _fh(NINA)
        assert fh.gain == pytest.approx(0.2478)
        assert fh.gain_keyword == "EGAIN"
        assert fh.gain_setting == 100
        assert fh.offset == 50
        assert fh.sensor_temperature == pytest.approx(-9.9)


@pytest.mark.parametrize("cards, setting", [(SHARPCAP, 120), (ASIAIR, 0), (QHY, 26),
                                            (UNKNOWN_LARGE, 139)])
def test_a_gain_setting_is_not_taken_as_e_per_adu(cards, setting):
    fh = _fh(cards)
    with pytest.warns(GainSettingWarning, match="gain setting, not e-/ADU") as rec:
        assert fh.gain is None
        assert fh.gain_setting == setting
        assert fh.gain is None  # asked again: still one warning for this frame
    assert len(rec) == 1


def test_maxim_gain_in_e_per_adu_is_kept():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fh = _fh(MAXIM_CCD)
        assert fh.gain == pytest.approx(0.8) and fh.gain_keyword == "GAIN"
        assert fh.gain_setting is None and fh.offset is None


def test_real_headers_sbig_and_maxim():
    hat = FrameHeader.from_file(sorted(require(HATP27).glob("*science*"))[0])
    assert hat.gain == pytest.approx(2.06) and hat.gain_keyword == "EGAIN"  # CCDSoft, SBIG
    neon = FrameHeader.from_file(require(FEDER) / "neon-on-dome-10-sec-high-res-though-scope.fit")
    assert neon.gain == pytest.approx(1.74) and neon.gain_setting is None  # SBIG CCDOPS EGAIN
    head = fits.getheader(FEDER / "maximdl_6_18_header.fit")  # MaxIm DL 6.18, Apogee CCD
    assert FrameHeader(head).gain is None and FrameHeader(head).sensor_temperature == pytest.approx(-19.98, abs=0.01)
    head["GAIN"] = 1.5
    assert FrameHeader(head).gain == pytest.approx(1.5)
    head["GAIN"], head["OFFSET"] = 120, 10  # the same file as N.I.N.A. would write it
    with pytest.warns(GainSettingWarning):
        assert FrameHeader(head).gain is None


def test_night_gain_falls_back_when_gain_is_a_setting(tmp_path):
    from astrodart.pipeline.night_noise import AssumedGainWarning, night_gain_read_noise

    path = tmp_path / "light.fits"
    fits.writeto(path, np.zeros((8, 8), np.float32), fits.Header(SHARPCAP))
    tree = SimpleNamespace(bias=lambda: ("", []), dark=lambda: ([], [], []),
                           flatfield=lambda: ([], []), science=lambda: ([], [[str(path)]]))
    with pytest.warns(GainSettingWarning), pytest.warns(AssumedGainWarning):
        out = night_gain_read_noise(tree)
    assert out["gain"][0] == 1.0 and out["gain"][1].startswith("assumed")
    with pytest.warns(GainSettingWarning):
        assert night_gain_read_noise(tree, gain=0.9, read_noise=3.0)["gain"] == (0.9, "user")


# --- 2. 12- and 14-bit data in 16-bit words -------------------------------------------
def _adc_frame(bits=12, seed=1, shape=(120, 160)):
    """A frame of a ``bits``-bit ADC: Poisson sky and one star clipped at 2**bits - 1."""
    rng = np.random.default_rng(seed)
    top = 2 ** bits - 1
    data = rng.poisson(top / 12, shape).astype(np.int64)
    y, x = np.mgrid[: shape[0], : shape[1]]
    data += (5 * top * np.exp(-((x - 80) ** 2 + (y - 60) ** 2) / 8.0)).astype(np.int64)
    return np.clip(data, 0, top)


def test_hatp32_saturation_is_4095_from_the_data():
    files = sorted(require(HATP32).glob("*.FITS"))
    for f in files[:3]:
        raw = fits.getdata(f)
        n = int(np.count_nonzero(raw >= 4095))
        assert n > 100  # HAT-P-32 sample: ~160 pixels per frame at 4095, no SATURATE keyword
        depth = frame_bit_depth(raw)
        assert (depth.bits, depth.saturation) == (12, 4095)
        # not masked at read (only a header's level or the data type's limit is): the
        # plate solver needs the bright stars' cores (one solution went off by 2 px)
        assert "ADNSATUR" not in read_frame(f).meta
    depth = camera_bit_depth(fits.getdata(f) for f in files)
    assert (depth.bits, depth.shift, depth.saturation) == (12, 0, 4095)
    assert camera_saturation(files) == 4095


def test_sixteen_bit_real_night_is_not_mistaken():
    files = sorted(require(HATP27).glob("*science*"))[:3]
    assert camera_saturation(files) == 65535
    assert frame_bit_depth(fits.getdata(files[0])) is None


@pytest.mark.parametrize("bits", [12, 14])
def test_left_shifted_frame_is_recognised(tmp_path, bits):
    counts = _adc_frame(bits)
    shift = 16 - bits
    stored = (counts << shift).astype(np.uint16)
    path = tmp_path / f"shifted{bits}.fits"
    fits.PrimaryHDU(stored).writeto(path)  # astropy writes uint16 with BZERO=32768
    top = (2 ** bits - 1) * 2 ** shift
    depth = frame_bit_depth(stored)
    assert (depth.bits, depth.shift, depth.saturation) == (bits, shift, top)
    ccd = read_frame(path)
    assert int(np.count_nonzero(counts == 2 ** bits - 1)) >= 3
    assert ccd.data.max() == top  # the stored ADU scale is kept
    assert camera_saturation([path]) == top


def test_sixteen_bit_and_constant_frames_have_no_depth():
    rng = np.random.default_rng(3)
    assert frame_bit_depth(rng.poisson(30000, (100, 100))) is None
    assert frame_bit_depth(np.full((50, 50), 1024, np.uint16)) is None  # multiples of 1024
    assert frame_bit_depth(np.zeros((50, 50))) is None
    assert frame_bit_depth(rng.normal(0, 1, (50, 50))) is None  # not integer-valued


# --- 3. darks matched on exposure and temperature (amp glow) --------------------------
SHAPE = (48, 64)
_Y, _X = np.mgrid[: SHAPE[0], : SHAPE[1]]
GLOW = 400.0 * np.exp(-np.hypot(_X, _Y) / 8.0)  # amp glow from the read-out corner


def _dark_signal(temp):
    """Dark current (5 ADU) and amp glow of 60 s, doubling every 6 C (0 C reference)."""
    return (5.0 + GLOW) * 2 ** (temp / 6.0)


def _write(path, data, temp, kind):
    head = fits.Header({"IMAGETYP": kind, "EXPTIME": 60.0, "CCD-TEMP": temp, "SET-TEMP": round(temp)})
    fits.writeto(path, np.asarray(data, np.float32), head)
    return str(path)


def test_nearest_temperature_rules():
    assert nearest_temperature([-10.0, 0.0, 10.0], 1.5) == 1
    assert nearest_temperature([None, None], 3.0) == 0
    assert nearest_temperature([-10.0, 0.0], None) == 0
    with pytest.warns(DarkTemperatureWarning, match="no master dark within 2 C"):
        assert nearest_temperature([-10.0, 0.0], 6.0) == 1
    with pytest.raises(ValueError, match="tolerance=-1"):
        nearest_temperature([0.0], 0.0, tolerance=-1)
    with pytest.raises(ValueError, match="empty"):
        nearest_temperature([], 0.0)


def test_subtract_dark_matches_temperature_and_removes_amp_glow(tmp_path):
    from astrodart.first_stage import subtract_dark

    bias, sky = 500.0, 100.0
    (tmp_path / "cal").mkdir()
    masters = [_write(tmp_path / "cal" / f"masterdark_{t:+d}C.fits", bias + _dark_signal(t), t, "DARK")
               for t in (-10, 0, 10)]
    lights = {t: _write(tmp_path / f"light_{i}.fits", bias + sky + _dark_signal(t), t, "LIGHT")
              for i, t in enumerate((-10.4, 0.3, 9.2))}
    out = subtract_dark(tmp_path / "out", list(lights.values()), masters, "yes", progress=False).run()
    assert len(out) == 3
    for (t, _), path, master in zip(lights.items(), sorted(out), masters):
        ccd = read_frame(path)
        assert ccd.meta["ADDKSRC"] == Path(master).name
        residual_glow = float(ccd.data[0, 0] - np.median(ccd.data))  # the glow corner
        glow = GLOW[0, 0] * 2 ** (t / 6.0)  # the light's own glow at its corner
        # at most 0.8 C off: under 10 % of the glow left (exposure-only matching, which took
        # the first master, would leave 70 % at 0.3 C and 89 % at 9.2 C)
        assert abs(residual_glow) < 0.10 * glow
        assert np.median(ccd.data) == pytest.approx(sky, abs=2.0)
    hot = _write(tmp_path / "light_hot.fits", bias + sky + _dark_signal(15.0), 15.0, "LIGHT")
    with pytest.warns(DarkTemperatureWarning, match="nearest dark 10.0 C"):
        (res,) = subtract_dark(tmp_path / "out2", [hot], masters, "yes", progress=False).run()
    assert read_frame(res).meta["ADDKSRC"] == Path(masters[2]).name


# --- 4. multi-camera nights: the survey says which cameras it found --------------------
def test_camera_id_joins_instrume_detector_ccd_id():
    fh = _fh({"INSTRUME": "OPTICAM", "DETECTOR": "Andor Zyla", "CCD-ID": "cam2"})
    assert fh.camera_id == "OPTICAM / Andor Zyla / cam2"
    assert _fh({"INSTRUME": "SBIG ST-7"}).camera_id == "SBIG ST-7"
    assert _fh({}).camera_id is None


def test_survey_counts_frames_per_camera(tmp_path):
    from datapaths import copy_night

    from astrodart.pipeline.survey import survey_night

    files = copy_night(HATP32, tmp_path / "night")
    for i, f in enumerate(files):  # two cameras behind one INSTRUME, as opticam writes them
        with fits.open(f, mode="update") as hdul:
            hdul[0].header["CCD-ID"] = "cam1" if i < 6 else "cam2"
    survey = survey_night(tmp_path / "night")
    assert survey.cameras() == {"Main / cam1": 6, "Main / cam2": 4}
    assert "2 cameras: Main / cam1 (6 frames), Main / cam2 (4 frames)" in survey.table()
    single = survey_night(files[:6])
    assert single.cameras() == {"Main / cam1": 6} and "cameras:" not in single.table()
