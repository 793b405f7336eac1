"""One-shot colour (Bayer) cameras: the CFA pattern from the headers the capture programs
write, demosaicing against known truth, and a simulated colour night (from the real M67
B, V, R frames) reduced end to end by ``astrodart reduce``."""
from __future__ import annotations

import glob
import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.stats import mad_std

from astrodart.color.bayer import (
    BAYER_PATTERNS,
    cfa_masks,
    demosaic_ccd,
    demosaic_cfa,
    frame_bayer_pattern,
    mosaic_cfa,
    shift_bayer_pattern,
    split_cfa,
)
from astrodart.frames.header import FrameHeader, HeaderValueError
from datapaths import M67, require


def _colour_of_pixel(header: dict, shape, y: int, x: int) -> str:
    """The colour the header says array pixel (y, x) has."""
    p = frame_bayer_pattern(fits.Header(header), shape=shape)
    return p[2 * (y % 2) + (x % 2)]


# --------------------------------------------------------------------------------------
# the pattern from the headers, as each capture program writes it
# --------------------------------------------------------------------------------------
def test_nina_header_offsets_and_top_down():
    # N.I.N.A. (>= 1.10): BAYERPAT from the ASCOM SensorType, XBAYROFF/YBAYROFF from the
    # driver's BayerOffsetX/Y, ROWORDER='TOP-DOWN' (the first FITS row is read out first)
    head = {"BAYERPAT": "RGGB", "XBAYROFF": 0, "YBAYROFF": 1, "ROWORDER": "TOP-DOWN",
            "NAXIS1": 6248, "NAXIS2": 4176}
    assert FrameHeader(head).bayer_offsets == (0, 1)
    assert FrameHeader(head).row_order == "TOP-DOWN"
    # a row offset of 1 starts the reading on the second row: G B / R G
    assert frame_bayer_pattern(fits.Header(head)) == "GBRG"
    assert _colour_of_pixel(head, (4176, 6248), 1, 0) == "R"
    assert frame_bayer_pattern(fits.Header({**head, "YBAYROFF": 0})) == "RGGB"


def test_sharpcap_header_bottom_up_flips_row_parity():
    # SharpCap (>= 3.3) writes BAYERPAT (and COLORTYP) with ROWORDER; a bottom-up file has
    # the first read-out row LAST: RGGB reads GBRG from the first array row when the
    # height is even, and stays RGGB when it is odd
    head = {"BAYERPAT": "RGGB", "COLORTYP": "RGGB", "ROWORDER": "BOTTOM-UP",
            "NAXIS1": 1936, "NAXIS2": 1096}
    assert frame_bayer_pattern(fits.Header(head)) == "GBRG"
    assert frame_bayer_pattern(fits.Header({**head, "NAXIS2": 1097})) == "RGGB"
    # the last array row is the first read-out row: R G there
    assert _colour_of_pixel(head, (1096, 1936), 1095, 0) == "R"
    with pytest.raises(HeaderValueError, match="ROWORDER"):
        FrameHeader({**head, "ROWORDER": "SIDEWAYS"}).row_order


def test_asiair_header_pattern_without_row_order():
    # ASIAIR writes BAYERPAT with zero offsets and no ROWORDER: top-down, as the ZWO
    # driver reads the sensor (Siril: "most camera drivers are writing data top-down")
    head = {"BAYERPAT": "GRBG", "XBAYROFF": 0, "YBAYROFF": 0, "NAXIS1": 4144, "NAXIS2": 2822}
    assert FrameHeader(head).row_order is None
    assert frame_bayer_pattern(fits.Header(head)) == "GRBG"
    assert _colour_of_pixel(head, (2822, 4144), 0, 1) == "R"


def test_maxim_dl_header_colortyp_and_offsets():
    # MaxIm DL: COLORTYP with XBAYROFF/YBAYROFF (an odd X offset starts on the second
    # column); COLORTYP may also say the camera is monochrome
    head = {"COLORTYP": "RGGB", "XBAYROFF": 1, "YBAYROFF": 0, "NAXIS1": 3326, "NAXIS2": 2504}
    assert FrameHeader(head).bayer_pattern == "RGGB"
    assert frame_bayer_pattern(fits.Header(head)) == "GRBG"
    assert frame_bayer_pattern(fits.Header({**head, "XBAYROFF": 1, "YBAYROFF": 1})) == "BGGR"
    assert frame_bayer_pattern(fits.Header({"COLORTYP": "MONO"})) is None
    assert frame_bayer_pattern(fits.Header({"COLORTYP": 0})) is None


def test_pattern_override_and_clear_errors():
    assert frame_bayer_pattern(fits.Header({})) is None
    # the argument overrides the header's pattern; the header's offsets still apply
    assert frame_bayer_pattern(fits.Header({"BAYERPAT": "RGGB"}), bayer_pattern="bggr") == "BGGR"
    assert frame_bayer_pattern(fits.Header({"XBAYROFF": 1}), bayer_pattern="RGGB") == "GRBG"
    with pytest.raises(ValueError, match="'CMYG' is not a Bayer pattern; use one of RGGB"):
        frame_bayer_pattern(fits.Header({"BAYERPAT": "CMYG"}))
    with pytest.raises(ValueError, match="bayer_pattern='XTRANS'"):
        frame_bayer_pattern(fits.Header({}), bayer_pattern="XTRANS")
    with pytest.raises(ValueError, match="method='nearest'"):
        demosaic_cfa(np.zeros((4, 4)), "RGGB", "nearest")
    with pytest.raises(ValueError, match="2-D CFA image"):
        demosaic_cfa(np.zeros((3, 4, 4)), "RGGB")
    # every pattern shifted by one column and one row is its opposite
    for p in BAYER_PATTERNS:
        assert shift_bayer_pattern(shift_bayer_pattern(p, 1, 1), 1, 1) == p
    assert {shift_bayer_pattern("RGGB", dx, dy) for dx in (0, 1) for dy in (0, 1)} == set(BAYER_PATTERNS)


# --------------------------------------------------------------------------------------
# demosaicing against known truth (synthetic, no sample data)
# --------------------------------------------------------------------------------------
def _smooth_scene(shape=(64, 80)):
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(float)
    return {"R": 100 + 2.0 * xx + 0.5 * yy, "G": 300 - 1.0 * xx + 1.5 * yy,
            "B": 50 + 0.25 * xx + 0.75 * yy}


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_demosaic_recovers_planes_exactly_where_the_methods_are_exact(pattern):
    scene = _smooth_scene()
    cfa = mosaic_cfa(scene["R"], scene["G"], scene["B"], pattern)
    masks = cfa_masks(cfa.shape, pattern)
    assert masks["G"].sum() == cfa.size // 2 and masks["R"].sum() == cfa.size // 4
    # bilinear interpolation is exact on linear gradients (away from the border)
    bil = split_cfa(cfa, pattern, "bilinear")
    for ch in "RGB":
        np.testing.assert_allclose(bil[ch][2:-2, 2:-2], scene[ch][2:-2, 2:-2], atol=1e-9)
    # Malvar 2004 adds a gradient correction that is zero on linear planes too
    mal = demosaic_cfa(cfa, pattern, "malvar")
    for k, ch in enumerate("RGB"):
        np.testing.assert_allclose(mal[k][3:-3, 3:-3], scene[ch][3:-3, 3:-3], atol=1e-6)
    # superpixel: each 2x2 cell's own samples, no interpolation
    sp = demosaic_cfa(cfa, pattern, "superpixel")
    assert sp.shape == (3, 32, 40)
    r_at = [(i // 2, i % 2) for i, c in enumerate(pattern) if c == "R"][0]
    np.testing.assert_array_equal(sp[0], scene["R"][r_at[0]::2, r_at[1]::2])


def test_demosaic_ccd_noise_mask_and_header():
    rng = np.random.default_rng(3)
    truth = _smooth_scene((48, 48))
    sigma = 5.0
    cfa = mosaic_cfa(truth["R"], truth["G"], truth["B"], "GBRG") + rng.normal(0, sigma, (48, 48))
    mask = np.zeros(cfa.shape, bool)
    mask[20, 20] = True
    head = fits.Header({"BAYERPAT": "GBRG", "ROWORDER": "TOP-DOWN", "XBAYROFF": 0})
    ccd = CCDData(cfa, unit="electron", mask=mask, meta=head,
                  uncertainty=StdDevUncertainty(np.full(cfa.shape, sigma)))
    out = demosaic_ccd(ccd, method="bilinear")
    for ch in "RGB":
        c = out[ch]
        assert "BAYERPAT" not in c.meta and c.meta["ADCHAN"] == ch and c.meta["ADBAYER"] == "GBRG"
        resid = (np.asarray(c.data, float) - truth[ch])[2:-2, 2:-2][~c.mask[2:-2, 2:-2]]
        # within noise: measured and stated errors at most sigma (interpolation averages)
        assert abs(np.mean(resid)) < 0.5 and 0.4 * sigma < np.std(resid) < 1.05 * sigma
        assert np.all(c.uncertainty.array[1:-1, 1:-1] <= sigma + 1e-4)
        # a masked CFA pixel masks the 3x3 pixels interpolated from it; so is the edge
        assert c.mask[19:22, 19:22].all() and c.mask[1:-1, 1:-1].sum() == 9
        assert c.mask[0].all() and c.mask[:, -1].all()
    sp = demosaic_ccd(ccd, method="superpixel")
    assert sp["G"].shape == (24, 24) and sp["G"].mask.sum() == 1 and sp["G"].meta["XBINNING"] == 2
    with pytest.raises(ValueError, match="no BAYERPAT"):
        demosaic_ccd(CCDData(cfa, unit="electron"))


def test_global_flat_normalisation_is_colour_safe_on_the_cfa():
    """A CFA flat has a different level per colour. Dividing the RAW CFA by the flat
    normalised by ONE global level divides every pixel by its own colour's response:
    the colours come back in their true ratios. The same flat divided into demosaiced
    colour images divides a colour by another colour's response."""
    from astrodart.calibration.flat import flat_normalisation

    scene = {c: np.full((40, 40), v) for c, v in (("R", 200.0), ("G", 400.0), ("B", 100.0))}
    qe = {"R": 0.6, "G": 0.9, "B": 0.45}
    yy, xx = np.mgrid[:40, :40]
    vignette = 1 - 0.2 * ((xx - 20) ** 2 + (yy - 20) ** 2) / 800
    response = mosaic_cfa(*(qe[c] * vignette for c in "RGB"), pattern="RGGB")
    light = mosaic_cfa(*(scene[c] for c in "RGB"), pattern="RGGB") * response
    flat = 30000 * response
    norm = flat_normalisation(flat)
    calibrated = split_cfa(light / (flat / norm), "RGGB")
    level = norm / 30000
    for c in "RGB":  # one common factor: colour ratios exact
        np.testing.assert_allclose(calibrated[c][2:-2, 2:-2], scene[c][2:-2, 2:-2] * level, rtol=1e-9)
    # the same flat divided AFTER demosaicing: a red value at a green site is divided
    # by the green response (0.9 against 0.6): a checkerboard colour error of 33 %
    wrong = split_cfa(light, "RGGB")["R"] / (flat / norm)
    err = wrong[2:-2, 2:-2] / (scene["R"][2:-2, 2:-2] * level) - 1
    assert np.max(np.abs(err)) == pytest.approx(1 - 0.6 / 0.9, abs=0.01)


def test_reduce_options_refuse_unknown_pattern_and_method(tmp_path):
    from astrodart.pipeline.reduce_options import ReduceOptions, UsageError

    night = tmp_path / "night"
    night.mkdir()
    base = {"night": str(night), "out": str(tmp_path / "out")}
    with pytest.raises(UsageError, match="--bayer-pattern 'RGBG': use one of RGGB, BGGR"):
        ReduceOptions(**base, bayer_pattern="RGBG").check()
    with pytest.raises(UsageError, match="--demosaic 'vng': use one of bilinear, malvar"):
        ReduceOptions(**base, demosaic="vng").check()
    assert ReduceOptions(**base, bayer_pattern="gbrg", demosaic="superpixel").check()["steps"]
    assert 'demosaic = "superpixel"' in ReduceOptions(**base, demosaic="superpixel").to_toml()


# --------------------------------------------------------------------------------------
# a simulated colour night from the real M67 B, V, R frames, reduced end to end
# --------------------------------------------------------------------------------------
@pytest.mark.sample_data
def test_reduce_simulated_rggb_night_end_to_end(tmp_path):
    """``astrodart reduce`` on a raw RGGB night (bias, darks, flats, four dithered lights)
    gives three channel stacks equal to the truth within noise, and a colour composite.

    Measured here (seed 0, 4 lights, bilinear): stack / truth = 1.002 (median), residual
    median +0.4..+0.6 e- on a sky of 183-332 e-, residual scatter 6.7-7.1 e- = 0.89 x the
    noise of a median of the lights (1.2533 x one light's residual / sqrt(N)); 99.4-99.8 %
    of pixels within 10 x that noise, 99.0-99.5 % within 5 x (the rest: star cores, where
    interpolation errs). Tolerances: |median| < 0.15, scatter < 1.15, > 99 % within 10."""
    from astrodart.cli import main
    from astrodart.datasets.cfa_night import simulate_cfa_night
    from astrodart.frames.io import read_frame

    require(M67)
    n_lights = 4
    night = simulate_cfa_night(tmp_path / "night", seed=0, n_lights=n_lights, n_bias=3,
                               n_dark=3, n_flat=3, folder=M67)
    out = tmp_path / "out"
    status = main(["reduce", str(night.night), "--out", str(out), "--no-progress",
                   "--workers", "2", "--keep-intermediate"])
    assert status == 0
    results = out / "results"
    summary = json.loads((results / "summary.json").read_text())
    assert set(summary["stack_fwhm_px"]) == {"R", "G", "B"}
    assert (results / "colour.png").is_file() and (results / "colour.tif").is_file()
    from PIL import Image

    with Image.open(results / "colour.png") as im:
        assert im.mode == "RGB" and im.size == (night.shape[1], night.shape[0])
    for ch in "RGB":
        stack = read_frame(results / f"stack_{ch}.fits")
        assert stack.meta["ADDEMOS"] == "bilinear" and stack.meta["ADBAYER"] == "RGGB"
        ref = stack.meta["ALNREF"].replace("calibrated_", "")
        inner = (slice(10, -10), slice(10, -10))
        resid = (np.asarray(stack.data, float) - night.expected(ref, ch))[inner]
        # the noise of one calibrated, demosaiced light against its truth ...
        one = sorted(glob.glob(str(out / "reduced_data" / "*" / "M67" / ch / "*.fits")))[0]
        single = np.asarray(read_frame(one).data, float) - night.expected(
            one.split("calibrated_")[-1], ch)
        noise = 1.2533 * mad_std(single[inner]) / np.sqrt(n_lights)
        # ... sets the noise of the median stack: the stack is the truth within it
        assert abs(np.median(resid)) < 0.15 * noise
        assert mad_std(resid) < 1.15 * noise
        assert np.mean(np.abs(resid) < 10 * noise) > 0.99
        sky = night.parameters["sky"][ch] * night.flat_level()
        assert np.median(np.asarray(stack.data)[inner]) == pytest.approx(sky, rel=0.01)
