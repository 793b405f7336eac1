"""``astrodart reduce`` on a simulated night laid out as astro_reduce users keep theirs.

astro_reduce reads ``DARK/ FLAT/ ORIGINAL/`` folders and no bias frames; with
``--interpolate`` it makes the master dark of an exposure without darks from the others
(least squares ``D = t A + B`` per pixel). Here the night has lights of 30 s (V) and 60 s
(R), darks of 4, 30 and 90 s (none of 60 s) and no IMAGETYP keyword anywhere: the frame
types must come from the folders, and the interpolated 60-s master dark must match the
simulator's truth (dark current x 60 s + bias, in electrons) within its own noise.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from astropy.io import fits

from astrodart.cli import main
from astrodart.datasets.night_model import Camera
from astrodart.datasets.simulated_night import simulate_night
from astrodart.frames.io import read_frame

GAIN, RON = 1.4, 9.0


@pytest.fixture(scope="module")
def astro_reduce_night(tmp_path_factory):
    """The simulated night in DARK/ FLAT/ ORIGINAL/, without bias and IMAGETYP; the truth."""
    root = tmp_path_factory.mktemp("sim")
    sim = simulate_night(root, 5, shape=(128, 128), n_bias=0, n_dark=6,
                         dark_exptimes=(4.0, 30.0, 60.0, 90.0), n_flat=8,
                         n_science={"V": 4, "R": 4}, exptimes={"V": 30.0, "R": 60.0},
                         flat_exptimes={"V": 4.0, "R": 4.0}, faint_stars=0,
                         camera=Camera(gain=GAIN, read_noise=RON, bias_drift=0.0),
                         compress=False, workers=1)
    night = root / "night"
    folders = {"dark": "DARK", "flat": "FLAT", "light": "ORIGINAL", "object": "ORIGINAL"}
    for i, f in enumerate(sorted(sim.night_dir.iterdir())):
        if not f.name.lower().endswith((".fit", ".fits")):
            continue
        header = fits.getheader(f)
        kind = str(header.get("IMAGETYP", "")).lower().split()[0]
        kind = {"dark": "dark", "flat": "flat"}.get(kind, "light")
        if kind == "dark" and float(header["EXPTIME"]) == 60.0:
            continue  # the missing dark exposure
        dest = night / folders[kind] / f"frame{i:03d}.fit"  # neutral names: the folder tells
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
        with fits.open(dest, mode="update") as h:
            h[0].header.remove("IMAGETYP", ignore_missing=True)
    truth = fits.open(root / "uncal_data" / "truth_maps.fits")
    maps = {h.name: np.asarray(h.data, np.float64) for h in truth[1:]}
    return night, maps, root


def test_interpolated_dark_of_an_astro_reduce_night_matches_the_truth(astro_reduce_night):
    night, maps, root = astro_reduce_night
    out = root / "out"
    status = main(["reduce", str(night), "--out", str(out), "--interpolate-darks",
                   "--stop", "calibrate", "--no-progress"])
    assert status == 0
    summary = json.loads((out / "results" / "summary.json").read_text())
    assert summary["layout"] == "astro_reduce"
    assert summary["frames"]["bias"] == 0
    assert summary["frames"]["dark"] == 18 and summary["frames"]["light"] == 8
    chosen = summary["masters"]["dark_for"]["60.0"]
    assert chosen["how"].startswith("interpolated from 3 masters")
    dark = read_frame(chosen["path"])
    truth = maps["DARK"] * 60.0 + GAIN * maps["BIAS"]  # no bias frames: the dark carries it
    resid = np.asarray(dark.data, np.float64) - truth
    sigma = np.asarray(dark.uncertainty.array, np.float64)
    sigma_mean = 1.2533 * np.sqrt(np.mean(sigma ** 2) / resid.size)
    z = resid / sigma
    print(f"\ninterpolated 60-s dark - truth: median {np.median(resid):.3f} e- "
          f"(3 sigma of the mean {3 * sigma_mean:.3f} e-), std(resid/sigma) "
          f"{np.std(z[np.abs(z) < 6]):.3f}")
    assert abs(np.median(resid)) < 3 * sigma_mean
    assert 0.85 < np.std(z[np.abs(z) < 6]) < 1.15
    calibrated = sorted((out / "reduced_data").glob("*/*/R/calibrated_*.fits"))
    assert len(calibrated) == 4
