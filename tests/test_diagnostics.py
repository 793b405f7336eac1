"""The diagnostics of a night (issue 21): each computation against known truth on
synthetic data, and ``astrodart reduce --png`` on the real HAT-P-27b night (a subset
calibrated in a temporary folder): the noise of unsaturated stars against the CCD
equation, growth curves, the FWHM map against the quality table, and every figure."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from datapaths import HATP27, require

from astrodart.sources import diagnostics as D

RNG_SEED = 21


def _gaussian_stars(shape, xy, flux, sigma):
    """Pixel-integrated circular Gaussians (error functions), so the truth is exact."""
    from scipy.special import erf

    ny, nx = shape
    img = np.zeros(shape)
    ex, ey = np.arange(nx + 1) - 0.5, np.arange(ny + 1) - 0.5
    for (x, y), f in zip(xy, np.broadcast_to(flux, len(xy))):
        gx = np.diff(erf((ex - x) / (math.sqrt(2) * sigma))) / 2
        gy = np.diff(erf((ey - y) / (math.sqrt(2) * sigma))) / 2
        img += f * np.outer(gy, gx)
    return img


# ---------------------------------------------------------------------------- synthetic
def test_background_mesh_recovers_an_injected_gradient():
    rng = np.random.default_rng(RNG_SEED)
    yy, xx = np.mgrid[:512, :512]
    truth = 200.0 + 0.08 * xx - 0.05 * yy
    xy = rng.uniform(20, 492, (60, 2))
    img = truth + _gaussian_stars(truth.shape, xy, 2e4, 1.5) + rng.normal(0, 8.0, truth.shape)
    mesh = D.background_mesh(img, box_size=64)
    inner = np.s_[32:-32, 32:-32]
    assert np.max(np.abs(mesh.background[inner] - truth[inner])) < 2.0   # 0.25 sigma
    assert mesh.noise == pytest.approx(8.0, rel=0.05)
    assert np.median(mesh.rms) == pytest.approx(8.0, rel=0.05)
    with pytest.raises(ValueError, match="box_size"):
        D.background_mesh(img, box_size=4)


def test_growth_curve_of_a_gaussian_star_is_the_analytic_one():
    sigma = 1.6
    img = _gaussian_stars((81, 81), [(40.3, 39.7)], 1e5, sigma) + 50.0
    radii = np.linspace(1.0, 12.0, 12)
    gc = D.growth_curves(img, [(40.3, 39.7)], radii, r_in=14, r_out=22)
    # pixel-integrated, then spread evenly over each pixel by the exact apertures: two
    # box smoothings of 1/12 px**2 each (Sheppard's correction) widen the Gaussian
    var = sigma ** 2 + 1 / 6
    truth = (1 - np.exp(-radii ** 2 / (2 * var))) / (1 - np.exp(-144 / (2 * var)))
    assert np.allclose(gc.normalised[0], truth, atol=0.003)
    assert gc.flux[0, -1] == pytest.approx(1e5, rel=1e-3)
    with pytest.raises(ValueError, match="increasing"):
        D.growth_curves(img, [(40, 40)], [3, 2], r_in=14, r_out=22)


def test_psf_stamp_is_the_centred_normalised_star():
    rng = np.random.default_rng(RNG_SEED)
    xy = np.column_stack([rng.uniform(20, 236, 30), rng.uniform(20, 236, 30)])
    img = _gaussian_stars((256, 256), xy, 5e4, 1.3)
    psf = D.psf_stamp(img, xy, size=15)
    truth = _gaussian_stars((15, 15), [(7, 7)], 1.0, 1.3)
    assert psf.n_stars == 30
    assert psf.stamp.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.max(np.abs(psf.stamp - truth)) < 0.02 * truth.max()
    with pytest.raises(ValueError, match="odd"):
        D.psf_stamp(img, xy, size=14)


def test_fwhm_map_bins_a_known_gradient():
    y, x = (a.ravel() for a in np.mgrid[0:500:5, 0:1000])  # every column, every 5th row
    fwhm = 2.0 + x / 500.0
    m = D.fwhm_map(x, y, fwhm, (500, 1000), bins=(2, 4))
    centres = (m.x_edges[:-1] + m.x_edges[1:]) / 2
    assert m.median.shape == (2, 4) and m.count.sum() == x.size
    assert np.allclose(m.median, 2.0 + centres / 500.0, atol=1e-9)
    assert m.fwhm == pytest.approx(2.0 + 499.5 / 500.0)
    with pytest.raises(ValueError, match="differ"):
        D.fwhm_map(x, y[:5], fwhm, (500, 1000))


def test_snr_and_ccd_equation_by_hand():
    mag, snr = D.snr_magnitude([1000.0, -5.0], [10.0, 3.0], 10.0)
    assert snr[0] == pytest.approx(100.0) and np.isnan(snr[1])
    assert mag[0] == pytest.approx(25 - 2.5 * math.log10(100.0))
    got = D.ccd_equation_noise(1e4, 50, sky=100, dark=10, read_noise=5, n_sky_pix=500, gain=2)
    assert got == pytest.approx(math.sqrt(1e4 + 50 * 1.1 * (100 + 10 + 25 + 4 / 12)))
    with pytest.raises(ValueError, match="read_noise"):
        D.ccd_equation_noise(1, 1, sky=1, read_noise=-1)


def _synthetic_night(rng, n_frames=12, shape=(256, 256), sky=300.0, rn=6.0):
    """Frames in electrons with Poisson and read noise, a transparency trend and a drift."""
    xy = rng.uniform(30, 226, (40, 2))
    flux = 10 ** rng.uniform(3.3, 5.3, 40)
    frames = []
    for k in range(n_frames):
        shift = np.array([0.9 * k, -0.6 * k])
        trans = 1 - 0.1 * k / n_frames
        model = sky + _gaussian_stars(shape, xy + shift, flux * trans, 1.4)
        frames.append(rng.poisson(model) + rng.normal(0, rn, shape))
    return frames, xy, sky, rn


def test_measured_noise_of_a_synthetic_sequence_matches_the_ccd_equation():
    rng = np.random.default_rng(RNG_SEED)
    frames, xy, _, rn = _synthetic_night(rng)
    fwhm = 1.4 * 2.3548
    seq = D.sequence_photometry(iter(frames), xy, fwhm=fwhm, r_ap=2 * fwhm, r_in=4 * fwhm,
                                r_out=4 * fwhm + 15)
    # tracked through the drift: the last frame's centres are the drifted truth
    assert np.median(np.hypot(seq.x[-1] - xy[:, 0] - 9.9, seq.y[-1] - xy[:, 1] + 6.6)) < 0.1
    nc = D.noise_vs_ccd_equation(seq, read_noise=rn, gain=1.0)
    assert nc.ratio.size >= 30
    assert nc.median_ratio == pytest.approx(1.0, abs=0.08)
    with pytest.raises(ValueError, match="5 frames"):
        D.noise_vs_ccd_equation(D.StarSequence(*(getattr(seq, k)[:3] for k in (
            "x", "y", "flux", "sky", "area", "n_sky", "flags")), r_ap=1, r_in=2, r_out=3),
            read_noise=rn)


def test_animated_gif_has_every_frame(tmp_path):
    from PIL import Image

    from astrodart.ui.diagnostic_figures import animate_frames

    rng = np.random.default_rng(RNG_SEED)
    frames = [rng.normal(100, 5, (300, 200)) for _ in range(5)]
    frames[2][100:120, 50:70] = np.nan
    gif = animate_frames(frames, tmp_path / "a.gif", max_size=100, labels=list("abcde"))
    with Image.open(gif) as im:
        assert im.n_frames == 5 and im.size == (66, 100)  # 3 x 3 blocks
    with pytest.raises(ValueError, match="at least 2"):
        animate_frames(frames[:1], tmp_path / "b.gif")


def test_night_diagnostics_refuses_bad_input(tmp_path):
    from astrodart.ui.night_diagnostics import night_diagnostics

    with pytest.raises(FileNotFoundError, match="source="):
        night_diagnostics(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="n_frames=3"):
        night_diagnostics(tmp_path, n_frames=3)
    with pytest.raises(FileNotFoundError, match="no calibrated science frames"):
        night_diagnostics(tmp_path)


def test_a_failed_figure_is_captioned_and_warned_and_others_stand(tmp_path):
    from astrodart.ui.night_diagnostics import (
        DiagnosticFailedWarning,
        NightDiagnostics,
        _attempt,
        record_diagnostics,
    )

    def broken(dx):
        raise RuntimeError("no stars matched")

    dx = NightDiagnostics(tmp_path, "V", figures={"snr": {"file": tmp_path / "s.png",
                                                          "caption": "SNR"}})
    with pytest.warns(DiagnosticFailedWarning):
        _attempt("aligned_gif", broken, dx)
    assert dx.figures["aligned_gif"] == {"file": None, "caption": "aligned_gif: not made "
                                         "(RuntimeError: no stars matched)"}
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"products": {"a": "b"}}))
    written = record_diagnostics(summary, dx)
    assert written["products"] == {"a": "b", "diagnostics_snr": str(tmp_path / "s.png")}
    assert json.loads(summary.read_text())["diagnostics"]["figures"]["aligned_gif"]["file"] is None
    with pytest.raises(FileNotFoundError, match="summary_path="):
        record_diagnostics(tmp_path / "none.json", dx)


# ---------------------------------------------------------------------------- real night
@pytest.fixture(scope="module")
def reduced_subset(tmp_path_factory):
    """5 bias, 5 darks, 5 dome flats and the first 16 lights of the HAT-P-27b night,
    ``astrodart reduce --stop calibrate --png --no-cosmics`` (the noise figure clips
    cosmic rays itself; L.A.Cosmic would double the run)."""
    from astrodart.cli import main

    src = require(HATP27)
    night = tmp_path_factory.mktemp("hatp27_subset") / "180423"
    night.mkdir()
    for pattern, n in (("*bias_frame*", 5), ("*dark_frame*", 5), ("*dome_flat*", 5),
                       ("*science_exposures*", 16)):
        for p in sorted(src.glob(pattern))[:n]:
            shutil.copy2(p, night / p.name)
    out = night.parent / "out"
    status = main(["reduce", str(night), "--out", str(out), "--target", "HAT-P-27",
                   "--stop", "calibrate", "--png", "--no-progress", "--no-cosmics"])
    summary = json.loads((out / "results" / "summary.json").read_text())
    return {"status": status, "out": out, "summary": summary}


@pytest.mark.sample_data
def test_reduce_png_writes_every_diagnostic_with_a_caption(reduced_subset):
    from PIL import Image

    assert reduced_subset["status"] == 0
    diag = reduced_subset["summary"]["diagnostics"]
    names = {"background", "growth", "psf", "snr", "noise", "aligned_gif"}
    assert set(diag["figures"]) == names
    for name, fig in diag["figures"].items():
        path = reduced_subset["out"] / "results" / "diagnostics" / fig["file"].split("/")[-1]
        assert path.is_file() and path.stat().st_size > 15_000, name
        assert len(fig["caption"]) > 60 and fig["file"] in reduced_subset["summary"][
            "products"].values()
        with Image.open(path) as im:
            assert min(im.size) >= 300 and (name != "aligned_gif" or im.n_frames == 16)
    assert (reduced_subset["out"] / "results" / "png" / "masterbias.png").is_file()


@pytest.mark.sample_data
def test_measured_noise_is_within_10_percent_of_the_ccd_equation(reduced_subset):
    noise = reduced_subset["summary"]["diagnostics"]["noise"]
    assert noise["frames"] == 16 and noise["stars"] >= 20
    assert noise["median_ratio"] == pytest.approx(1.0, abs=0.10)


@pytest.mark.sample_data
def test_growth_curves_and_fwhm_map_agree_with_the_quality_table(reduced_subset):
    from astrodart.pipeline.quality import frame_quality
    from astrodart.pipeline.tree import get_directory

    diag = reduced_subset["summary"]["diagnostics"]
    med = np.array(diag["growth"]["median"], float)
    assert np.all(np.diff(med) > -0.01)                      # rises (within noise) ...
    assert med[-5] > 0.97 and med[-1] == pytest.approx(1.0)  # ... to 1 by 4 FWHM
    # at 1 FWHM a star holds between a Moffat (beta = 3: 0.76) and a Gaussian (0.94)
    assert 0.76 < med[2] < 0.94
    data_dir = next(reduced_subset["out"].glob("reduced_data/*/*"))
    first = min(get_directory(data_dir).science_final()[1][0])
    quality = frame_quality(first)["fwhm"]
    fmap = diag["fwhm_map"]
    assert fmap["median_px"] == pytest.approx(quality, rel=0.05)
    cells = np.array([c for row in fmap["cells_px"] for c in row if c is not None])
    assert cells.size >= 6 and np.all(np.abs(cells / quality - 1) < 0.35)
