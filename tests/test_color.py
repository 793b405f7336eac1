"""Colour composites: background neutralisation, star colour balance, PSF matching,
stretches and exports (synthetic truth), and the real M67 B, V, R set.

The M67 composite is kept as a test artefact in ``benchmarks/_work/test_artefacts/``
(ignored by git) for a person to look at.
"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from astropy.nddata import CCDData
from datapaths import M67, REPO, require

from astrodart.sources.stars import find_stars, positions_of
from astrodart.color.composite import (
    channel_fwhm,
    match_psf,
    neutralise_background,
    star_colour_balance,
    star_fluxes,
    stretch_rgb,
    to_uint8,
    to_uint16,
)
from astrodart.frames.io import read_frame
from astrodart.third_stage_astrophotography import rgb_image

ARTEFACTS = REPO / "benchmarks" / "_work" / "test_artefacts"
SHAPE = (240, 260)


def field(seed=0, n=60):
    rng = np.random.default_rng(seed)
    xy = []
    while len(xy) < n:  # no blends: at least 12 px between stars
        p = rng.uniform([15, 15], [SHAPE[1] - 15, SHAPE[0] - 15])
        if not xy or np.hypot(*(np.array(xy) - p).T).min() > 12:
            xy.append(p)
    xy = np.array(xy)
    flux = np.exp(rng.uniform(np.log(5e3), np.log(2e5), n))
    colour = np.exp(rng.normal(0, 0.15, (n, 3)))  # intrinsic colours scatter around white
    colour /= np.exp(np.median(np.log(colour), axis=0))  # the median star is exactly white
    return xy, flux, colour


def render(xy, flux, fwhm=3.0, sky=0.0, noise=2.0, seed=1, gradient=(0.0, 0.0)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    img = sky + gradient[0] * xx + gradient[1] * yy + rng.normal(0, noise, SHAPE)
    s = fwhm / 2.3548
    for (x, y), f in zip(xy, flux):
        img += f / (2 * np.pi * s * s) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))
    return img.astype(np.float32)


GAINS = np.array([0.5, 1.0, 2.0])  # what the camera+filters did to R, G, B


@pytest.fixture(scope="module")
def channels():
    xy, flux, colour = field()
    grads = [(0.05, 0.0), (0.0, 0.08), (-0.03, 0.02)]
    chans = [render(xy, flux * colour[:, k] * GAINS[k], sky=50 + 20 * k, seed=k + 1,
                    gradient=grads[k]) for k in range(3)]
    return xy, chans


def test_background_is_removed_and_neutral(channels):
    _, chans = channels
    out, sigmas = neutralise_background(*chans, box_size=32)
    for c, s in zip(out, sigmas):
        for sl in [np.s_[:30, :30], np.s_[-30:, -30:], np.s_[:30, -30:], np.s_[-30:, :30]]:
            # every corner at zero sky (the gradients spanned ~20 sigma)
            assert abs(np.median(c[sl])) < 0.5 * s
        assert s == pytest.approx(2.0, rel=0.15)


def test_star_balance_recovers_the_channel_gains(channels):
    _, chans = channels
    out, _ = neutralise_background(*chans, box_size=32)
    bal = star_colour_balance(*out)
    assert bal.n_stars >= 20
    # truth: the median G/R and G/B of the very stars used, as recorded by the camera
    xy, flux, colour = field()
    idx = [int(np.argmin(np.hypot(*(xy - p).T))) for p in bal.xy]
    assert np.hypot(*(xy[idx] - bal.xy).T).max() < 0.2
    seen = colour[idx] * GAINS
    truth = [np.median(seen[:, 1] / seen[:, 0]), 1.0, np.median(seen[:, 1] / seen[:, 2])]
    np.testing.assert_allclose(bal.factors, truth, rtol=0.02)


def test_psf_matching_equalises_star_widths():
    xy, flux, _ = field(seed=4, n=30)
    chans = [render(xy, flux, fwhm=f, seed=k) for k, f in enumerate((2.4, 3.0, 3.6))]
    before = channel_fwhm(chans, xy)
    # (rendered point-sampled; the pixel-integrated fit reads ~0.1 px narrower)
    assert before == pytest.approx([2.4, 3.0, 3.6], abs=0.15)
    matched, target = match_psf(chans, before)
    assert target == pytest.approx(before[2])
    after = channel_fwhm(matched, xy)
    assert np.ptp(after) < 0.1 and after[2] == pytest.approx(before[2], abs=0.02)


def test_lupton_stretch_keeps_colour_ratios_and_range():
    rng = np.random.default_rng(2)
    g = rng.uniform(1, 200, (50, 50)).astype(np.float32)
    r, b = 1.5 * g, 0.5 * g
    rgb = stretch_rgb(r, g, b, method="lupton", minimum=0.0, stretch=50.0, Q=8)
    assert rgb.shape == (50, 50, 3) and rgb.min() >= 0 and rgb.max() <= 1
    ok = rgb.max(axis=2) < 0.99  # not clipped
    np.testing.assert_allclose(rgb[..., 0][ok] / rgb[..., 1][ok], 1.5, rtol=1e-3)
    np.testing.assert_allclose(rgb[..., 2][ok] / rgb[..., 1][ok], 0.5, rtol=1e-3)
    for method in ("asinh", "linear"):
        out = stretch_rgb(r, g, b, method=method, minimum=0.0, white=200.0)
        assert out.min() >= 0 and out.max() <= 1
    lin = stretch_rgb(r, g, b, method="linear", minimum=0.0, white=300.0)
    np.testing.assert_allclose(lin[..., 1], g / 300.0, rtol=1e-5)
    with pytest.raises(ValueError, match="gamma"):
        stretch_rgb(r, g, b, method="gamma")
    with pytest.raises(ValueError, match="one shape"):
        stretch_rgb(r, g[:10], b)


def test_quantisation_puts_the_top_row_first():
    rgb = np.zeros((4, 5, 3))
    rgb[0] = 1.0  # FITS row 0 = bottom of the picture
    a8, a16 = to_uint8(rgb), to_uint16(rgb)
    assert a8.dtype == np.uint8 and a8[-1].min() == 255 and a8[0].max() == 0
    assert a16.dtype == np.uint16 and a16[-1].min() == 65535


def test_rgb_image_registers_balances_and_exports(tmp_path, channels):
    xy, chans = channels
    _, flux, colour = field()
    shifted_blue = render(xy + [2.5, -1.5], flux * colour[:, 2] * GAINS[2], sky=90, seed=3)
    img = rgb_image(chans[0], CCDData(chans[1], unit="adu"), shifted_blue, blue_stretch=1.0)
    assert img.registration["red"]["method"] == "already registered"
    assert img.registration["blue"]["method"] == "stars"
    assert img.registration["blue"]["dx"] == pytest.approx(-2.5, abs=0.05)
    np.testing.assert_allclose(img.factors, 1 / GAINS * GAINS[1], rtol=0.12)  # + star colours
    r, g, b = img.channels
    f = star_fluxes([r, g, b], xy[:40], radius=5.0)
    ok = np.isfinite(f).all(1)
    assert np.median(f[ok, 0] / f[ok, 1]) == pytest.approx(1.0, abs=0.05)
    assert np.median(f[ok, 2] / f[ok, 1]) == pytest.approx(1.0, abs=0.05)
    png = img.save_png(tmp_path / "c.png")
    tif = img.save_tiff(tmp_path / "c.tif")
    import tifffile
    from PIL import Image

    with Image.open(png) as im:
        assert im.mode == "RGB" and im.size == (SHAPE[1], SHAPE[0])
    t = tifffile.imread(tif)
    assert t.dtype == np.uint16 and t.shape == (SHAPE[0], SHAPE[1], 3)
    warm = rgb_image(chans[0], chans[1], shifted_blue, red_stretch=1.2)
    assert warm.factors[0] == pytest.approx(1.2 * img.factors[0], rel=1e-6)


def test_rgb_image_rejects_unknown_options(channels):
    _, chans = channels
    with pytest.raises(TypeError, match="strech"):
        rgb_image(*chans, strech="lupton")
    with pytest.raises(ValueError, match="stretch"):
        rgb_image(*chans, stretch="log")
    with pytest.raises(ValueError, match="balance"):
        rgb_image(*chans, balance="grey")


def test_show_draws_and_matplotlib_is_not_imported_by_the_module(channels):
    code = ("import sys, astrodart.third_stage_astrophotography, astrodart.color.composite, "
            "astrodart.alignment.ladder; print('matplotlib' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
    import matplotlib

    matplotlib.use("Agg")
    _, chans = channels
    ax = rgb_image(*chans).show(title="synthetic")
    assert ax.get_title() == "synthetic" and len(ax.images) == 1
    assert ax.images[0].get_array().shape == (SHAPE[0], SHAPE[1], 3)
    import matplotlib.pyplot as plt

    plt.close(ax.figure)


# --------------------------------------------------------------------------------------
# the real M67 B, V, R images
# --------------------------------------------------------------------------------------
TYCHO = {  # Tycho-2 B and V magnitudes (data README)
    "814-2331": (11.581, 9.969), "814-1493": (12.075, 10.523), "814-1531": (11.915, 10.520),
    "814-1119": (12.626, 11.843), "814-1931": (11.469, 11.277), "814-1795": (10.018, 10.072),
}


def m67(band: str) -> CCDData:
    ccd = read_frame(require(M67) / f"M67_{band}.fits")
    # the reduced images carry reduction residue (+-6000) in their first four and last
    # columns; a user masks (or trims) them, as here
    mask = np.zeros(ccd.shape, bool)
    mask[:, :4] = True
    mask[:, -1] = True
    ccd.mask = mask
    return ccd


@pytest.fixture(scope="module")
def m67_composite():
    img = rgb_image(m67("R"), m67("V"), m67("B"))
    _ = img.rgb
    return img


def identify_tycho_stars(img) -> dict[str, np.ndarray]:
    """Find the six Tycho stars among the ten brightest (in V): the assignment whose
    instrumental B and V magnitudes agree best with the catalogue up to two zero points."""
    r, g, b = img.channels
    bright = positions_of(find_stars(g, 3.0, mask=img.invalid, max_stars=10, reject_sharp=True))
    f = star_fluxes([b, g], bright, radius=12.0, annulus=(18.0, 25.0))
    bmag, vmag = -2.5 * np.log10(f[:, 0]), -2.5 * np.log10(f[:, 1])
    names = list(TYCHO)
    tb = np.array([TYCHO[n][0] for n in names])
    tv = np.array([TYCHO[n][1] for n in names])
    best = min(itertools.permutations(range(len(bright)), len(names)),
               key=lambda p: np.var(bmag[list(p)] - tb) + np.var(vmag[list(p)] - tv))
    p = list(best)
    rms = np.sqrt(np.var(bmag[p] - tb) + np.var(vmag[p] - tv))
    assert rms < 0.4, f"no consistent identification of the Tycho stars (rms {rms:.2f} mag)"
    return {n: bright[i] for n, i in zip(names, p)}


def test_m67_composite_is_registered_neutral_and_saved(m67_composite):
    img = m67_composite
    # the bands are offset by ~1.5-2.5 px on the chip: registered on V by the stars
    for band in ("red", "blue"):
        reg = img.registration[band]
        assert reg["method"] == "stars" and reg["residual_px"] < 0.3 and reg["n_matches"] > 40
    assert img.balance.n_stars >= 20
    # field stars, measured independently of the balance (stars found on G alone, smaller
    # aperture, other sky annulus), average to neutral within 10 %
    r, g, b = img.channels
    fw = img.balance.fwhm
    stars = positions_of(find_stars(g, fw, mask=img.invalid, max_stars=150, reject_sharp=True))
    f = star_fluxes([r, g, b], stars, radius=1.5 * fw, annulus=(3 * fw, 4.5 * fw))
    raw_peak = np.array([max(m67(bd).data[int(round(y)), int(round(x))] for bd in "RVB")
                         for x, y in stars])
    snr = f / (np.array(img.sky_sigmas) * np.sqrt(np.pi) * 1.5 * fw)
    ok = np.isfinite(f).all(1) & (snr > 30).all(1) & (raw_peak < 20000)
    assert ok.sum() >= 20
    assert np.median(f[ok, 0] / f[ok, 1]) == pytest.approx(1.0, abs=0.10)
    assert np.median(f[ok, 2] / f[ok, 1]) == pytest.approx(1.0, abs=0.10)
    # ... and so they look in the stretched composite too
    rgb = img.rgb
    fc = star_fluxes([rgb[..., k] for k in range(3)], stars, radius=1.5 * fw,
                     annulus=(3 * fw, 4.5 * fw))
    okc = ok & np.isfinite(fc).all(1) & (fc > 0).all(1)
    assert np.median(fc[okc, 0] / fc[okc, 1]) == pytest.approx(1.0, abs=0.10)
    assert np.median(fc[okc, 2] / fc[okc, 1]) == pytest.approx(1.0, abs=0.10)
    # the sky is neutral: equal in the three channels
    sky = np.median(rgb[~img.invalid], axis=0)
    assert np.ptp(sky) < 0.01
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    png = img.save_png(ARTEFACTS / "m67_rgb_lupton.png")
    img.save_tiff(ARTEFACTS / "m67_rgb_lupton.tif")
    (ARTEFACTS / "m67_rgb.json").write_text(json.dumps(
        {"factors": list(map(float, img.factors)), "fwhm": list(map(float, img.fwhms)),
         "registration": img.registration, "n_balance_stars": img.balance.n_stars,
         "neutral_R_over_G": float(np.median(f[ok, 0] / f[ok, 1])),
         "neutral_B_over_G": float(np.median(f[ok, 2] / f[ok, 1])),
         "composite_R_over_G": float(np.median(fc[okc, 0] / fc[okc, 1])),
         "composite_B_over_G": float(np.median(fc[okc, 2] / fc[okc, 1]))}, indent=1, default=str))
    from PIL import Image

    with Image.open(png) as im:
        assert im.mode == "RGB" and im.size == (323, 512)


def test_m67_known_stars_show_the_right_colour_order(m67_composite):
    img = m67_composite
    stars = identify_tycho_stars(img)
    red_star, blue_star = stars["814-2331"], stars["814-1795"]  # B-V +1.6 and -0.05
    r, g, b = img.channels
    f = star_fluxes([r, g, b, g], [red_star, blue_star], radius=12.0, annulus=(18.0, 25.0))
    bv = -2.5 * np.log10(f[:, 2] / f[:, 1])
    assert bv[0] - bv[1] > 1.0  # instrumental B-V difference (saturation compresses it)
    assert f[0, 0] / f[0, 2] > 2 * f[1, 0] / f[1, 2]  # linear balanced channels: R/B
    rgb = img.rgb
    fc = star_fluxes([rgb[..., k] for k in range(3)], [red_star, blue_star], radius=12.0,
                     annulus=(18.0, 25.0))
    assert fc[0, 0] > fc[0, 2] and fc[1, 2] > fc[1, 0]  # red star red, blue star blue
    assert fc[0, 0] / fc[0, 2] > 2 * fc[1, 0] / fc[1, 2]
    # and in the 8-bit PNG as written (top row first)
    png = np.asarray(to_uint8(rgb), float)[::-1]
    fp = star_fluxes([png[..., k] for k in range(3)], [red_star, blue_star], radius=12.0,
                     annulus=(18.0, 25.0))
    assert fp[0, 0] / fp[0, 2] > fp[1, 0] / fp[1, 2]
