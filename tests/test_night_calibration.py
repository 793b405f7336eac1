"""A night's calibration with whatever calibration frames it has (issue 17, "Missing
calibrations" and "Gain and read noise"), on small simulated nights with known truth.

One night is simulated (128 x 128 px, bias, darks of 4, 30, 60 and 90 s, flats in V and
R, lights of 30 s in V and 60 s in R, no frame-to-frame bias drift so that the truth of
a master is exactly ``gain x BIAS + DARK x t``); each test copies it, removes the frames
it should lack, sorts it with ``data_organiser`` and calibrates it.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats

from astrodart.calibration.base import CalibrationError
from astrodart.calibration.flat import flat_normalisation
from astrodart.datasets.night_model import Camera
from astrodart.datasets.simulated_night import simulate_night
from astrodart.frames.io import read_frame
from astrodart.pipeline.interpolated_dark import choose_darks
from astrodart.pipeline.night_calibration import (
    MissingCalibrationWarning, calibrate_science, in_electrons_already, kept_masters,
    masters_from_calibration, night_masters, saturation_electrons)
from astrodart.pipeline.night_noise import AssumedGainWarning, night_gain_read_noise
from astrodart.pipeline.organise import data_organiser, get_directory

ENGINE = {"executor": "serial", "progress": False}
GAIN, RON = 1.4, 9.0
CLIP = ("average", "sigclip", 3.0, 3.0)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """The raw simulated night (never modified: each test works on a copy)."""
    root = tmp_path_factory.mktemp("sim")
    sim = simulate_night(root, 3, shape=(128, 128), n_bias=8, n_dark=6,
                         dark_exptimes=(4.0, 30.0, 60.0, 90.0), n_flat=8,
                         n_science={"V": 3, "R": 3}, exptimes={"V": 30.0, "R": 60.0},
                         flat_exptimes={"V": 4.0, "R": 4.0}, faint_stars=0,
                         camera=Camera(gain=GAIN, read_noise=RON, bias_drift=0.0),
                         compress=False, workers=1)
    truth = fits.open(root / "uncal_data" / "truth_maps.fits")
    maps = {h.name: np.asarray(h.data, np.float64) for h in truth[1:]}
    import json
    frames = json.loads((root / "uncal_data" / "truth.json").read_text())["frames"]
    return sim, maps, frames


def _night(simulated, dest: Path, drop=(), strip=()):
    """Copy the raw night without the files whose names start with ``drop``, remove the
    header keywords ``strip`` from the copies, sort it; the tree."""
    sim = simulated[0]
    raw = dest / "uncal_data" / sim.date
    raw.mkdir(parents=True)
    for f in sorted(sim.night_dir.iterdir()):
        if not f.name.startswith(tuple(drop)):
            shutil.copy2(f, raw / f.name)
            if strip:
                with fits.open(raw / f.name, mode="update") as h:
                    for k in strip:
                        h[0].header.remove(k, ignore_missing=True)
    org = data_organiser(dest / "uncal_data", dest / "reduced_data", sim.date, sim.target,
                         verbose=False)
    org.run()
    return get_directory(org.get_directory())


def _calibrated(tree, f):
    d = tree.data_dir / "object" / f
    return sorted(str(p) for p in d.glob("calibrated_*.fits"))


def _record(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [w for w in caught if issubclass(w.category, MissingCalibrationWarning)
                 or issubclass(w.category, AssumedGainWarning)]


# ---------------------------------------------------------------------------------------
def _old_recipe(tree):
    """The night as the code before issue 17 calibrated it (bias, darks, flats, lights)."""
    from astrodart.pipeline.chain import calibration_chain
    from astrodart.pipeline.characterise import bad_pixel_map
    from astrodart.pipeline.masters import master_frame

    e = {"uncertainty": True, "gain_correct": True, **ENGINE}
    bias_dir, bias_files = tree.bias()
    b = calibration_chain(bias_dir, bias_files, False, **e).run()
    mbias = master_frame(bias_dir, b, "masterbias.fits", *CLIP, frame_type="bias").run()
    mdark = {}
    for d, files, t in zip(*tree.dark()):
        out = calibration_chain(d, files, False, masterbias_file=mbias, **e).run()
        mdark[t] = master_frame(d, out, f"masterdark_{t:g}s.fits", *CLIP, frame_type="dark").run()
    darks = [mdark[t] for t in sorted(mdark)]
    mflat = {}
    for d, files, f in zip(*tree.flatfield()):
        out = calibration_chain(d, files, False, masterbias_file=mbias, masterdark_file=darks,
                                **e).run()
        mflat[f] = master_frame(d, out, f"masterflat_{f}.fits", *CLIP, frame_type="flat").run()
    bpm = bad_pixel_map(Path(mdark[max(mdark)]).parent, mdark[max(mdark)]).run()
    for d, files, f in zip(*tree.science()):
        calibration_chain(d, files, False, cosmic_rays="lacosmic", masterbias_file=mbias,
                          masterdark_file=darks, masterflatfield_file=mflat[f],
                          badpixel_file=bpm, **e).run()
    return [mbias, *darks, *mflat.values(), bpm] + [p for f in ("R", "V")
                                                    for p in _calibrated(tree, f)]


def test_full_night_gives_the_same_masters_and_frames_as_before(simulated, tmp_path):
    old = _old_recipe(_night(simulated, tmp_path / "old"))
    tree = _night(simulated, tmp_path / "new")
    m, caught = _record(night_masters, tree, ENGINE, False)
    calibrate_science(tree, m, ["R", "V"], "lacosmic", ENGINE, False)
    new = [m["bias"], *[m["dark"][t] for t in sorted(m["dark"])], *m["flat"].values(),
           m["badpixel"]] + [p for f in ("R", "V") for p in _calibrated(tree, f)]
    assert [Path(p).name for p in new] == [Path(p).name for p in old] and len(new) == 14
    for a, b in zip(old, new):
        for ha, hb in zip(fits.open(a), fits.open(b)):
            if ha.data is None:
                continue
            if ha.name == "UNCERT" and isinstance(hb, fits.CompImageHDU):
                # the night writes its calibrated frames with the planes compressed (the
                # uncertainty quantized by 1/1000 of its smallest value), the chain alone
                # plain: equal within that step
                np.testing.assert_allclose(hb.data, ha.data, rtol=5.1e-4, err_msg=b)
            else:
                assert np.array_equal(ha.data, hb.data, equal_nan=True), Path(b).name
    assert caught == []
    assert m["gain"] == (GAIN, "header GAIN") and m["read_noise"] == (RON, "header RON")
    assert {t: d["how"] for t, d in m["dark_for"].items()} == {30.0: "same exposure",
                                                                60.0: "same exposure"}


# ---------------------------------------------------------------------------------------
def _interpolated_vs_truth(m, maps, carries_bias: bool, t: float = 60.0):
    dark = read_frame(m["dark_for"][t]["path"])
    truth = maps["DARK"] * t + (GAIN * maps["BIAS"] if carries_bias else 0.0)
    resid = np.asarray(dark.data, np.float64) - truth
    sigma = np.asarray(dark.uncertainty.array, np.float64)
    sigma_mean = 1.2533 * np.sqrt(np.mean(sigma ** 2) / resid.size)
    z = resid / sigma
    return float(np.median(resid)), sigma_mean, float(np.std(z[np.abs(z) < 6]))


@pytest.mark.parametrize("drop, carries_bias", [(("dark-60s",), False),
                                                (("dark-60s", "bias"), True)])
def test_interpolated_dark_matches_the_truth_within_its_noise(simulated, tmp_path, drop,
                                                              carries_bias):
    _, maps, _ = simulated
    tree = _night(simulated, tmp_path, drop=drop)
    m = night_masters(tree, ENGINE, False, interpolate_darks=True)
    how = m["dark_for"][60.0]["how"]
    assert how == "interpolated from 3 masters (4, 30, 90 s)"
    assert m["dark_for"][30.0]["how"] == "same exposure"
    median, sigma_mean, zstd = _interpolated_vs_truth(m, maps, carries_bias)
    assert abs(median) < 3 * sigma_mean, (median, sigma_mean)
    assert 0.85 < zstd < 1.15, zstd
    calibrate_science(tree, m, ["R", "V"], None, ENGINE, False)
    header = fits.getheader(_calibrated(tree, "R")[0])
    assert header["ADDKSRC"].endswith("masterdark_60s_interpolated.fits")
    assert header["ADDKSCAL"] == 1.0 and len(_calibrated(tree, "V")) == 3


def test_without_interpolation_the_closest_bias_subtracted_master_is_scaled(simulated,
                                                                           tmp_path):
    tree = _night(simulated, tmp_path, drop=("dark-60s",))
    m = night_masters(tree, ENGINE, False)
    assert m["dark_for"][60.0]["how"] == "scaled from 90 s"
    calibrate_science(tree, m, ["R"], None, ENGINE, False)
    header = fits.getheader(_calibrated(tree, "R")[0])
    assert header["ADDKSCAL"] == pytest.approx(60 / 90)


def test_dark_choice_is_decided_before_any_work():
    assert choose_darks([20.0], [20.0, 10.0], True) == {10.0: ("scaled", (20.0,)),
                                                        20.0: ("same exposure", (20.0,))}
    assert choose_darks([10.0, 30.0], [20.0], False)[20.0] == ("interpolated", (10.0, 30.0))
    assert choose_darks([], [20.0], True) == {20.0: ("none", ())}
    with pytest.raises(CalibrationError, match="only master dark is of 20 s.*holds the bias"):
        choose_darks([20.0], [60.0], bias_subtracted=False)


def test_single_dark_of_another_exposure_without_bias_is_refused_before_any_master(
        simulated, tmp_path):
    tree = _night(simulated, tmp_path, drop=("bias", "dark-4s", "dark-30s", "dark-90s"))
    with pytest.raises(CalibrationError, match="frames of 30 s.*60 s.*cannot be scaled"):
        night_masters(tree, ENGINE, False)
    assert not list(tree.data_dir.rglob("master*.fits"))


# ---------------------------------------------------------------------------------------
def _sky_residual(path, truth, flat_level):
    """Calibrated frame minus the true sky (its level and gradient times the flat's
    central level) in the central 96 x 96 px away from the stars: the residuals and the
    frame's uncertainty there."""
    from astrodart.datasets.truth import frame_truth_stars

    name = Path(path).name.removeprefix("calibrated_").replace(".fits", ".fit")
    entry = truth["frames"][name]
    yy, xx = np.mgrid[:128, :128]
    keep = np.zeros((128, 128), bool)
    keep[16:112, 16:112] = True
    for star in frame_truth_stars(truth, name, margin=20):
        r = 4 * entry["fwhm_px"] * max(1.0, np.log10(max(star["flux"], 10.0)) - 2)
        keep &= (xx - star["x"]) ** 2 + (yy - star["y"]) ** 2 >= r * r
    gx, gy = entry["sky_gradient_e_per_px_per_px"]
    sky = entry["sky_e_per_px"] + gx * (xx - 63.5) + gy * (yy - 63.5)
    ccd = read_frame(path)
    resid = np.asarray(ccd.data, np.float64) - sky * flat_level
    return resid[keep], np.asarray(ccd.uncertainty.array, np.float64)[keep], ccd.meta


def test_no_bias_dark_only_calibration_gives_the_true_sky(simulated, tmp_path):
    from astrodart.datasets.truth import load_truth

    sim, maps, _ = simulated
    truth = load_truth(sim.root)
    tree = _night(simulated, tmp_path, drop=("bias",))
    m, caught = _record(night_masters, tree, ENGINE, False)
    assert m["bias"] is None and caught == []
    assert any("dark-only" in n for n in m["notes"])
    calibrate_science(tree, m, ["V"], None, ENGINE, False)
    files = _calibrated(tree, "V")
    assert len(files) == 3
    for f in files:
        resid, sigma, header = _sky_residual(f, truth, flat_normalisation(maps["FLAT_V"]))
        _, level, std = sigma_clipped_stats(resid, sigma=3)
        assert abs(level) < 3 * 1.2533 * std / np.sqrt(resid.size), (level, std)
        # the uncertainty plane holds the sky's noise, not the bias pedestal's
        assert 0.9 < np.median(sigma) / std < 1.1, (np.median(sigma), std)
        assert "ADMBIAS" not in header and header["ADDKSCAL"] == 1.0


def test_filter_without_flats_is_not_flat_fielded_with_one_warning(simulated, tmp_path):
    tree = _night(simulated, tmp_path, drop=("flat-V",))
    m = night_masters(tree, ENGINE, False)
    assert set(m["flat"]) == {"R"}
    _, caught = _record(calibrate_science, tree, m, ["R", "V"], None, ENGINE, False)
    assert len(caught) == 1 and "'V'" in str(caught[0].message)
    assert len(_calibrated(tree, "V")) == 3 and len(_calibrated(tree, "R")) == 3
    assert "ADFLBAD" not in fits.getheader(_calibrated(tree, "V")[0])


def test_lights_only_are_put_in_electrons_with_one_loud_warning(simulated, tmp_path):
    tree = _night(simulated, tmp_path, drop=("bias", "dark", "flat"))
    m, caught = _record(night_masters, tree, ENGINE, False)
    _, more = _record(calibrate_science, tree, m, ["V"], None, ENGINE, False)
    assert len(caught + more) == 1 and "no calibration frames at all" in str(caught[0].message)
    assert (m["bias"], m["dark"], m["flat"], m["badpixel"]) == (None, {}, {}, None)
    files = _calibrated(tree, "V")
    assert len(files) == 3
    raw = read_frame(tree.science()[1][1][0])
    ccd = read_frame(files[0])
    assert str(ccd.unit) == "electron" and ccd.uncertainty is not None
    np.testing.assert_allclose(ccd.data, raw.data * np.float32(GAIN), rtol=1e-6)
    assert not {"ADMBIAS", "ADDKSRC", "ADFLBAD"} & set(ccd.meta)
    assert saturation_electrons(65535, m, ["V"]) == pytest.approx(65535 * GAIN)


def test_already_calibrated_lights_are_not_calibrated_again(simulated, tmp_path):
    tree = _night(simulated, tmp_path)
    m = night_masters(tree, ENGINE, False)
    v = tree.science()[1][1]
    with fits.open(v[1], mode="update") as h:  # a light already in electrons
        h[0].header["BUNIT"] = "electron"
    calibrate_science(tree, m, ["V"], None, ENGINE, False, already_calibrated={v[0], v[1]})
    out = {Path(p).name: read_frame(p) for p in _calibrated(tree, "V")}
    for raw, factor in ((v[0], GAIN), (v[1], 1.0)):
        ccd = out["calibrated_" + Path(raw).name.replace(".fit", ".fits")]
        np.testing.assert_allclose(ccd.data, read_frame(raw).data * np.float32(factor),
                                   rtol=1e-6)
        assert "ADMBIAS" not in ccd.meta and "ADDKSRC" not in ccd.meta
    third = out["calibrated_" + Path(v[2]).name.replace(".fit", ".fits")]
    assert "ADMBIAS" in third.meta and "ADDKSRC" in third.meta
    assert [in_electrons_already(p) for p in v] == [False, True, False]
    assert "1 converted from ADU to electrons" in m["notes"][-1]


# ---------------------------------------------------------------------------------------
def test_gain_from_the_header_when_present(simulated, tmp_path):
    tree = _night(simulated, tmp_path, drop=("M67",))
    noise, caught = _record(night_gain_read_noise, tree, gain=2.0)
    assert noise["gain"] == (GAIN, "header GAIN") and noise["read_noise"] == (RON, "header RON")
    assert caught == [] and any("gain=2 given but not used" in n for n in noise["notes"])


def test_gain_measured_from_the_pairs_when_the_header_has_none(simulated, tmp_path):
    tree = _night(simulated, tmp_path, drop=("M67", "dark"), strip=("GAIN", "RON"))
    noise, caught = _record(night_gain_read_noise, tree)
    (g, gsource), (r, rsource) = noise["gain"], noise["read_noise"]
    assert gsource.startswith("measured: photon transfer") and rsource.startswith("measured")
    assert abs(g / GAIN - 1) < 0.10 and abs(r / RON - 1) < 0.10, (g, r)
    assert caught == []


def test_gain_is_assumed_with_one_warning_when_nothing_is_known(simulated, tmp_path):
    tree = _night(simulated, tmp_path, drop=("bias", "dark", "flat"), strip=("GAIN", "RON"))
    noise, caught = _record(night_gain_read_noise, tree)
    assert noise["gain"][0] == 1.0 and noise["gain"][1].startswith("assumed")
    assert noise["read_noise"][0] == 0.0
    assert len(caught) == 1 and issubclass(caught[0].category, AssumedGainWarning)
    user, caught = _record(night_gain_read_noise, tree, gain=1.5, read_noise=8.0)
    assert user["gain"] == (1.5, "user") and user["read_noise"] == (8.0, "user")
    assert caught == []
    with pytest.raises(ValueError, match="gain=-1"):
        night_gain_read_noise(tree, gain=-1)


def test_kept_and_found_masters_allow_missing_entries(tmp_path):
    masters = {"bias": None, "dark": {}, "flat": {}, "badpixel": None, "dark_for": {},
               "gain": (1.0, "assumed"), "read_noise": (0.0, "assumed"), "notes": ["x"]}
    assert kept_masters({}, masters) == masters
    found = masters_from_calibration({})
    assert found["bias"] is None and found["dark"] == {} and found["gain"] is None
