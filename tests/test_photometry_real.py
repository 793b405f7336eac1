"""A real transit recovered: HAT-P-27b on 2018-04-23 from Stony Brook (AST 443 Lab 1).

The whole chain runs on copies of the raw night in a temporary folder: stage-1
calibration with :mod:`astrodart.first_stage` (master bias, bias-subtracted master dark
and dome flat; science frames bias-, dark- and flat-corrected), then stage 3: stars
numbered on the first frame, the target and comparisons followed through the night's
~50 px drift by star-pattern offsets, re-centred FWHM-scaled aperture photometry with
CCD-equation errors, BJD_TDB time stamps, a weighted comparison ensemble and a
trapezoid transit fit.

Expected (Béky et al. 2011 ephemeris Tc = 2455186.01879 BJD_TDB, P = 3.0395803 d):
mid-transit at BJD_TDB 2458231.6783 (~04:17 UT), depth ~1.4 %, duration ~1.7 h.

Aperture: the frames are sky-limited for HAT-P-27 (V = 12.2 with a 14-inch telescope in
20 s: ~40 000 e- from the star against ~600 e- of sky per pixel), so the aperture radius
is 1 x FWHM, near the signal-to-noise optimum of a sky-limited star (Howell 1989, PASP
101, 616), not AstroDART's 2.5 x FWHM (which doubles the noise here). The annulus is
3.5-5 x FWHM.

Set ``ASTRODART_ARTEFACTS=/some/folder`` to keep the light-curve plot and the results.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from datapaths import HATP27, copy_night, require

from astrodart.first_stage import correct_flatfield, master_frame, subtract_bias, subtract_dark
from astrodart.frames.header import FrameHeader
from astrodart.third_stage_photometry import check_image, coordinates, photometry, track_stars

pytestmark = pytest.mark.slow

TARGET = SkyCoord("14h51m04.2s", "+05d56m50s", frame="icrs")
SITE = [40.91, -73.12, 40.0]  # Mt Stony Brook: lat, lon (east +), m
TC, PERIOD = 2455186.01879, 3.0395803  # Béky et al. 2011
N_EPOCH = round((2458231.68 - TC) / PERIOD)
PREDICTED_T0 = TC + N_EPOCH * PERIOD  # 2458231.6783
TARGET_PIXEL = (481, 522)  # on the first science frame
N_COMPARISONS = 15


@pytest.fixture(scope="session")
def hatp27(tmp_path_factory):
    """Calibrate the night with first_stage and run the photometry once for all tests."""
    root = tmp_path_factory.mktemp("hatp27")
    raw = copy_night(require(HATP27), root / "raw", "*.FIT.gz")
    bias = [str(p) for p in raw if "bias_frame" in p.name]
    dark = [str(p) for p in raw if "dark_frame" in p.name]
    flat = [str(p) for p in raw if "dome_flat" in p.name]
    science = [str(p) for p in raw if "science_exposures" in p.name]
    assert (len(bias), len(dark), len(flat), len(science)) == (10, 10, 10, 100)
    quiet = {"progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # header-card comment truncation on the masters
        mbias = master_frame(
            root / "bias", bias, "masterbias.fits", "median", "sigclip", 3, 3
        ).run()
        dark_b = subtract_bias(root / "dark", dark, mbias, "yes", **quiet).run()
        mdark = master_frame(
            root / "dark", dark_b, "masterdark.fits", "median", "sigclip", 3, 3, frame_type="dark"
        ).run()
        flat_b = subtract_bias(root / "flat", flat, mbias, "yes", **quiet).run()
        mflat = master_frame(
            root / "flat", flat_b, "masterflat.fits", "median", "sigclip", 3, 3, frame_type="flat"
        ).run()  # the dome flats say 'Light Frame'
        sci = subtract_bias(root / "sci", science, mbias, "yes", **quiet).run()
        sci = subtract_dark(root / "sci", sci, mdark, "yes", **quiet).run()
        sci = correct_flatfield(root / "sci", sci, mflat, "yes", **quiet).run()
    assert len(sci) == 100

    stars = check_image(sci[0], threshold=5, plot=False)
    positions = stars.run()
    target_index = int(np.argmin(np.hypot(*(positions - TARGET_PIXEL).T)))
    comparison_indices = [i for i in range(N_COMPARISONS + 1) if i != target_index][:N_COMPARISONS]
    target, comparisons = coordinates(
        files=sci,
        reference_frame=0,
        target_index=target_index,
        comparison_stars_indeces=comparison_indices,
    ).from_index()
    target_px, comparisons_px = track_stars([sci], target, comparisons)

    out = root / "results"
    step = photometry(
        "pixel",
        "fwhm",
        [sci],
        ["Visible"],
        obs_location=SITE,
        target_coord=target_px,
        comparison_coord=comparisons_px,
        target_skycoord=TARGET,
        fwhm_factors=(1.0, 3.5, 5.0),
        save_results=True,
        save_data_dir=out,
        target_name="HAT-P-27",
        date="180423",
    )
    res = step.run_multi_coord()
    fit = step.fit_transit(t0=PREDICTED_T0, duration=1.7 / 24)
    blind = step.fit_transit()
    artefacts = Path(os.environ.get("ASTRODART_ARTEFACTS", root / "artefacts"))
    artefacts.mkdir(parents=True, exist_ok=True)
    plot = artefacts / "hatp27b_180423_lightcurve.png"
    step.plot(fit=fit, path=plot, title="HAT-P-27b, 2018-04-23, Stony Brook (astrodart)")
    for f in out.iterdir():
        shutil.copy2(f, artefacts / f.name)
    print(
        f"\nHAT-P-27b: {fit.summary()}\n  mid-time - prediction: "
        f"{(fit.t0 - PREDICTED_T0) * 1440:+.1f} min; blind fit: depth "
        f"{100 * blind.depth:.2f} %, mid-time "
        f"{(blind.t0 - PREDICTED_T0) * 1440:+.1f} min\n  ensemble rms per point "
        f"{1e3 * step.ensembles['Visible'].rms:.2f} ppt; plot {plot}"
    )
    print(step.ensembles["Visible"].diagnostics)
    return {
        "files": sci,
        "step": step,
        "res": res,
        "fit": fit,
        "blind": blind,
        "plot": plot,
        "out": out,
        "target_index": target_index,
        "comparison_indices": comparison_indices,
        "positions": positions,
        "target_px": target_px,
        "comparisons_px": comparisons_px,
    }


def test_target_is_found_and_tracked(hatp27):
    pos = hatp27["positions"][hatp27["target_index"]]
    assert np.hypot(*(pos - TARGET_PIXEL)) < 3
    tgt = hatp27["res"]["target"]["filter"]["Visible"]
    # the field wanders by tens of pixels; the re-centred apertures follow the star
    assert np.ptp(tgt["x"]) > 20
    assert np.all(tgt["flags"] == 0)
    assert np.all(np.isfinite(tgt["flux"])) and np.all(tgt["flux"] > 0)


def test_transit_depth_and_mid_time(hatp27):
    fit = hatp27["fit"]
    assert 0.008 <= fit.depth <= 0.020
    assert abs(fit.t0 - PREDICTED_T0) * 1440 < 20
    assert fit.t0_err * 1440 < 30 and fit.depth_err < 0.01
    assert 1.0 < fit.t14 * 24 < 2.5  # published 1.7 h
    # the transit is there without being told where to look
    blind = hatp27["blind"]
    assert 0.008 <= blind.depth <= 0.020
    assert abs(blind.t0 - PREDICTED_T0) * 1440 < 20


def test_errors_are_honest_on_real_data(hatp27):
    fit = hatp27["fit"]
    # reduced chi-square of the transit fit with the CCD-equation errors
    assert 0.7 < fit.chi2_red < 1.5
    assert fit.oot_rms < 0.012  # per 20-s point
    ens = hatp27["step"].ensembles["Visible"]
    d = ens.diagnostics
    assert d["used"].sum() >= 10
    # comparisons scatter as their errors say, to within a factor ~2 (scintillation, PSF)
    assert np.median(d["excess"][d["used"]]) < 2.0


def test_time_stamps_are_bjd_tdb_mid_exposure(hatp27):
    tgt = hatp27["res"]["target"]["filter"]["Visible"]
    bjd = tgt["timestamps"]
    first = FrameHeader.from_file(hatp27["files"][0])
    last = FrameHeader.from_file(hatp27["files"][-1])
    # UTC mid-exposure plus ~69 s (TDB) plus the Roemer delay toward HAT-P-27 (~ +463 s)
    assert (bjd[0] - first.mid_exposure.utc.jd) * 86400 == pytest.approx(69.2 + 463, abs=5)
    assert (bjd[-1] - last.mid_exposure.utc.jd) * 86400 == pytest.approx(69.2 + 463, abs=5)
    assert np.all(np.diff(bjd) > 0)
    assert np.all((tgt["airmass"] > 1.0) & (tgt["airmass"] < 2.0))


def test_results_and_plot_are_saved(hatp27):
    out = hatp27["out"]
    assert (out / "photometry_results_target_and_comparison.h5").exists()
    table = Table.read(
        out / "photometry_results_target_and_comparison_Visible.ecsv", format="ascii.ecsv"
    )
    assert len(table) == 100 and "rel_flux" in table.colnames
    assert hatp27["plot"].stat().st_size > 20_000


def _fixed_position_run(files, xy_target, xy_comps, aperture_type, **radii):
    """Photometry of aligned frames at fixed pixel positions (one grid), and its fit."""
    n = len(files)
    step = photometry(
        "pixel", aperture_type, [files], ["Visible"], obs_location=SITE,
        target_coord=[[tuple(xy_target)] * n],
        comparison_coord=[[[tuple(c)] * n] for c in xy_comps],
        target_skycoord=TARGET, progress=False, **radii,
    )
    res = step.run_multi_coord()
    return step, res, step.fit_transit(t0=PREDICTED_T0, duration=1.7 / 24)


def test_aligned_frames_at_fixed_positions_lose_no_flux_and_find_the_transit(hatp27, tmp_path):
    """Issue 19: the astrophotography guide hands on aligned frames; photometry on them at
    fixed positions scatters within 10 % of the tracked path on the unaligned frames and
    finds the transit. Before, the masks spread in the resampling: an 8-px aperture held
    up to 19 NaN pixels, the scatter was 3.0 % and the depth negative."""
    from astrodart.third_stage_astrophotography import align

    files = hatp27["files"]
    aligned = align([files], ["Visible"], files[0], output_dir=tmp_path / "aligned",
                    progress=False).run()[0]
    assert len(aligned) == 100
    pos = hatp27["positions"]
    xy_t, xy_c = pos[hatp27["target_index"]], pos[hatp27["comparison_indices"]]
    step, res, fit = _fixed_position_run(aligned, xy_t, xy_c, "fwhm", fwhm_factors=(1.0, 3.5, 5.0))
    tracked = hatp27["step"].ensembles["Visible"].rms
    rms = step.ensembles["Visible"].rms
    tgt = res["target"]["filter"]["Visible"]
    print(f"\naligned, fixed positions, 1 x FWHM: rms {1e3 * rms:.2f} ppt (tracked path "
          f"{1e3 * tracked:.2f}); {fit.summary()}; repaired pixels in the target aperture: "
          f"{np.nansum(tgt['n_repaired']):.1f} over 100 frames, largest share "
          f"{np.nanmax(tgt['repaired_fraction']):.4f}")
    assert rms <= 1.10 * tracked                        # measured: 11.16 against 10.61 ppt
    # (this fit, with its duration free, wanders: 2.45 % over 3.2 h as measured; the
    # 8-px aperture below finds the transit)
    assert np.all(np.isfinite(tgt["flux"])) and np.all(tgt["area"] > 0.99 * np.pi * tgt["r_ap"] ** 2)
    # the issue's own call: a fixed 8-px aperture on the aligned frames
    step8, res8, fit8 = _fixed_position_run(aligned, xy_t, xy_c, "custom", radius_phot=8,
                                            radius_annulus=17, radius_dannulus=24)
    t8 = res8["target"]["filter"]["Visible"]
    print(f"aligned, fixed 8 px: rms {1e3 * step8.ensembles['Visible'].rms:.2f} ppt; "
          f"{fit8.summary()}")
    # before: 3.0 % scatter and a negative depth; measured now: 14.0 ppt (the tracked path
    # on the unaligned frames with the same 8-px aperture: 14.4 ppt), depth 1.12 %, -11 min
    assert step8.ensembles["Visible"].rms < 0.016
    assert 0.008 <= fit8.depth <= 0.020 and abs(fit8.t0 - PREDICTED_T0) * 1440 < 20
    assert np.all(t8["area"] > 0.99 * np.pi * 8**2)       # no aperture loses pixels


def test_optimal_extraction_on_the_night(hatp27):
    """Naylor's (1998) optimal extraction on the tracked stars of the real night: its
    light curve is at least as precise as the 1 x FWHM aperture's, and the transit's depth
    comes out in the published range. (The trapezoid fit's mid-time, with its duration
    free, wandered to +59 min in the measured run, as the 1 x FWHM fit on aligned frames
    does; it is printed, not asserted.)"""
    files = hatp27["files"]
    step = photometry("pixel", "optimal", [files], ["Visible"], obs_location=SITE,
                      target_coord=hatp27["target_px"], comparison_coord=hatp27["comparisons_px"],
                      target_skycoord=TARGET, fwhm_factors=(1.0, 3.5, 5.0), progress=False)
    res = step.run_multi_coord()
    fit = step.fit_transit(t0=PREDICTED_T0, duration=1.7 / 24)
    rms, aperture = step.ensembles["Visible"].rms, hatp27["step"].ensembles["Visible"].rms
    tgt = res["target"]["filter"]["Visible"]
    ratio = np.nanmedian(tgt["flux"] / hatp27["res"]["target"]["filter"]["Visible"]["flux"])
    print(f"\noptimal extraction: rms {1e3 * rms:.2f} ppt (1 x FWHM aperture {1e3 * aperture:.2f}); "
          f"{fit.summary()}; mid-time - prediction {(fit.t0 - PREDICTED_T0) * 1440:+.1f} min; "
          f"target flux / 1 x FWHM aperture flux {ratio:.3f}")
    assert np.all(np.isfinite(tgt["flux"]))
    assert rms <= 1.02 * aperture
    assert 0.008 <= fit.depth <= 0.020                  # measured: 1.71 %
