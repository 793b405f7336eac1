"""The detector-lab notebook on the real HAT-P-27b calibration frames, checked against
independent measurements made here with numpy/astropy from the raw FITS files; and the
two core functions it introduced (tile photon-transfer curve, sky flatness) against the
synthetic camera's known truth."""

from __future__ import annotations

from conftest import assert_notebook_ran_cleanly
import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std, sigma_clipped_stats

from astrodart import calibration as det

HEADER_GAIN = 2.06  # EGAIN of every frame of the night


# ---------------------------------------------------------------------------------------
# independent measurements on the raw frames
# ---------------------------------------------------------------------------------------
def _load(directory, pattern):
    return [fits.getdata(p).astype(np.float64) for p in sorted(directory.glob(pattern))]


def _centre(a):
    ny, nx = a.shape
    return a[ny // 4 : ny - ny // 4, nx // 4 : nx - nx // 4]


def _clipped_std(a):
    return sigma_clipped_stats(a, sigma=5, maxiters=10)[2]


def _grid_rms(img, n=8):
    ny, nx = img.shape
    cells = [
        sigma_clipped_stats(
            img[i * ny // n : (i + 1) * ny // n, j * nx // n : (j + 1) * nx // n], sigma=3
        )[1]
        for i in range(n)
        for j in range(n)
    ]
    return float(np.std(cells) / np.mean(cells))


@pytest.fixture(scope="module")
def independent(hatp27_dir):
    """Bias level, read noise, gain, dark current, hot pixels and flatness measured with
    plain numpy/astropy (no astrodart) on the shared raw frames."""
    bias = _load(hatp27_dir, "*bias_frame*")
    darks = _load(hatp27_dir, "*dark_frame*")
    flats = _load(hatp27_dir, "*dome_flat*")
    science = _load(hatp27_dir, "*science_exposures.0000000[1-9]*")[:1]
    mbias = np.median(bias, axis=0)
    # read noise from ONE bias pair
    rn = _clipped_std(_centre(bias[0] - bias[1])) / np.sqrt(2)
    # gain from ONE flat pair and one bias pair (Janesick's formula, no level matching)
    f1, f2, b1, b2 = (_centre(a) for a in (flats[0], flats[1], bias[0], bias[1]))
    signal = np.median(f1) + np.median(f2) - np.median(b1) - np.median(b2)
    gain = signal / (_clipped_std(f1 - f2) ** 2 - _clipped_std(b1 - b2) ** 2)
    # dark current and hot pixels of the median dark minus the median bias
    rate = (np.median(darks, axis=0) - mbias) / 20.0  # ADU/s
    n_hot = int((rate > np.median(rate) + 5 * mad_std(rate)).sum())
    # master flat (bias removed; the dark adds < 0.05 %), normalised in the centre
    normed = [(f - mbias) / np.median(_centre(f - mbias)) for f in flats]
    mflat = np.median(normed, axis=0)
    sky = science[0] - mbias - rate * 20.0
    return {
        "bias": float(np.median(mbias)),
        "read_noise": float(rn),
        "gain": float(gain),
        "dark_e": float(np.median(rate)) * gain,
        "n_hot": n_hot,
        "flat_rms": 100 * _grid_rms(mflat),
        "sky_before": 100 * _grid_rms(sky),
        "sky_after": 100 * _grid_rms(sky / np.where(mflat > 0.1, mflat, 1.0)),
    }


# ---------------------------------------------------------------------------------------
# the notebook
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_detector_lab_runs_and_shows_its_figures(run_guide):
    run, summary = run_guide("detector_lab")
    # bias, read-noise pair, photon transfer, dark/hot pixels, flat, flat-fielding
    nb = assert_notebook_ran_cleanly(run, min_figures=6)
    questions = [
        c for c in nb.cells if c.cell_type == "markdown" and "Questions for students" in c.source
    ]
    assert len(questions) >= 6
    assert set(summary) >= {
        "bias_adu",
        "read_noise_adu",
        "read_noise_e",
        "gain_e_per_adu",
        "gain_err",
        "header_gain",
        "dark_current_e_s",
        "n_hot_pixels",
        "flat_rms_percent",
    }


@pytest.mark.slow
def test_detector_lab_numbers_match_independent_measurements(run_guide, independent):
    _, s = run_guide("detector_lab")
    ind = independent
    assert s["bias_adu"] == pytest.approx(ind["bias"], abs=1.0)  # ~980.5 ADU
    assert s["read_noise_adu"] == pytest.approx(ind["read_noise"], rel=0.05)  # ~6.7 ADU
    assert s["gain_e_per_adu"] == pytest.approx(ind["gain"], rel=0.05)  # ~1.94 e-/ADU
    assert s["read_noise_e"] == pytest.approx(s["read_noise_adu"] * s["gain_e_per_adu"], rel=1e-9)
    assert s["header_gain"] == HEADER_GAIN
    # the measured gain is precise and differs from the header's by more than its error
    assert 0 < s["gain_err"] < 0.01
    assert abs(s["gain_e_per_adu"] - HEADER_GAIN) > 5 * s["gain_err"]
    assert s["gain_ptc_tiles"] == pytest.approx(s["gain_e_per_adu"], rel=0.02)
    assert s["dark_current_e_s"] == pytest.approx(ind["dark_e"], rel=0.03)  # ~1.2 e-/s/px
    assert s["n_hot_pixels"] == pytest.approx(ind["n_hot"], rel=0.02)  # ~16 000
    assert s["flat_rms_percent"] == pytest.approx(ind["flat_rms"], rel=0.02)  # ~2.5 %
    assert s["sky_flatness_before_percent"] == pytest.approx(ind["sky_before"], rel=0.05)
    assert s["sky_flatness_after_percent"] == pytest.approx(ind["sky_after"], rel=0.15)
    assert s["sky_flatness_before_percent"] > 1.5
    assert s["sky_flatness_after_percent"] < s["sky_flatness_before_percent"] / 3


# ---------------------------------------------------------------------------------------
# the core functions, against known truth
# ---------------------------------------------------------------------------------------
def test_photon_transfer_curve_recovers_the_gain(camera):
    biases = [camera.expose(0.0) for _ in range(4)]
    flats = [camera.expose(1.0, flat_lamp=30_000.0) for _ in range(4)]
    curve = det.photon_transfer_curve(biases, flats, box=32)
    assert curve.signal.shape == (8, 8) == curve.variance.shape == curve.tile_gains.shape
    # vignetting (25 % at the corners) spreads the tiles over a range of signals
    assert curve.signal.max() / curve.signal.min() > 1.2
    assert curve.gain == pytest.approx(camera.gain, rel=0.03)
    assert curve.gain_error < 0.03
    assert curve.read_noise_adu == pytest.approx(camera.read_noise / camera.gain, rel=0.03)
    assert curve.model(10_000.0) == pytest.approx(curve.read_variance + 10_000.0 / curve.gain)
    with pytest.raises(det.CalibrationError, match="box"):
        det.photon_transfer_curve(biases, flats, box=1000)
    with pytest.raises(det.CalibrationError, match="not brighter"):
        det.photon_transfer_curve(biases, biases)


def test_sky_flatness_measures_the_large_scale_structure(camera):
    rng = np.random.default_rng(3)
    uniform = 1000.0 + rng.normal(0, 10.0, (256, 256))
    assert det.sky_flatness(uniform) < 0.001
    vignetted = 1000.0 * camera.flat + rng.normal(0, 10.0, (256, 256))
    truth = np.array(
        [
            [camera.flat[i * 32 : (i + 1) * 32, j * 32 : (j + 1) * 32].mean() for j in range(8)]
            for i in range(8)
        ]
    )
    assert det.sky_flatness(vignetted) == pytest.approx(truth.std() / truth.mean(), rel=0.05)
    assert det.grid_levels(vignetted).shape == (8, 8)
    with pytest.raises(det.CalibrationError, match="not positive"):
        det.sky_flatness(-uniform)
