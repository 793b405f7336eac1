"""Per-frame quality table: synthetic night with known outliers, and the real HAT-P-32 frames."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time, TimeDelta
from datapaths import HATP32, copy_night
from test_sources import star_field

from astrodart.pipeline.quality import (
    QualityRules,
    flag_frames,
    good_files,
    plot_quality,
    quality_table,
    read_quality_table,
    save_quality_table,
)

#: frame index -> (FWHM px, relative transparency, ellipticity); all others 2.5 px, clear, round
OUTLIERS = {3: (4.5, 1.0, 0.0), 5: (2.5, 0.5, 0.0), 6: (2.5, 1.0, 0.6)}


@pytest.fixture(scope="module")
def synthetic_night(tmp_path_factory):
    d = tmp_path_factory.mktemp("night")
    start = Time("2024-03-01T02:00:00", scale="utc")
    files = []
    for i in range(8):
        fwhm, transp, ell = OUTLIERS.get(i, (2.5, 1.0, 0.0))
        img, _ = star_field(fwhm, "gauss", flux=2.0e4 * transp, ellipticity=ell,
                            shift=(0.7 * i, -0.4 * i), seed=10 + i)
        h = fits.Header()
        h["DATE-OBS"] = (start + TimeDelta(120 * i, format="sec")).isot
        h["EXPTIME"] = 30.0
        h["IM_SCALE"] = 1.5
        path = d / f"night_{i:02d}.fits"
        fits.PrimaryHDU(img.astype(np.float32), header=h).writeto(path)
        files.append(str(path))
    table = quality_table(files)
    return d, files, table


def test_quality_table_measures_every_frame(synthetic_night):
    _, files, t = synthetic_night
    assert list(t["file"]) == files
    for name in ("file", "mid_exposure", "fwhm", "fwhm_arcsec", "ellipticity", "sky_level",
                 "sky_rms", "n_stars", "n_matched", "transparency", "wcs", "flags", "good"):
        assert name in t.colnames
    assert t["mid_exposure"][0] == "2024-03-01T02:00:15.000"  # start + exptime / 2
    for i, row in enumerate(t):
        fwhm, transp, ell = OUTLIERS.get(i, (2.5, 1.0, 0.0))
        assert row["fwhm"] == pytest.approx(fwhm, rel=0.05)
        assert row["fwhm_arcsec"] == pytest.approx(1.5 * row["fwhm"])
        assert row["ellipticity"] == pytest.approx(ell, abs=0.05)
        assert row["transparency"] == pytest.approx(transp, abs=0.05)
        assert row["sky_level"] == pytest.approx(100.0, abs=0.5)
        assert row["sky_rms"] == pytest.approx(5.0, rel=0.1)
        assert row["n_stars"] == 25 and row["n_matched"] == 25
        assert row["wcs"] == "none"
    assert t["fwhm"].unit == "pix"


def test_outliers_are_flagged_by_the_default_rules(synthetic_night):
    _, files, t = synthetic_night
    assert dict(zip(range(8), t["flags"])) == {0: "", 1: "", 2: "", 3: "fwhm", 4: "",
                                               5: "transparency", 6: "ellipticity", 7: ""}
    assert good_files(t) == [f for i, f in enumerate(files) if i not in OUTLIERS]
    assert t.meta["rules"]["max_fwhm_factor"] == 1.5


def test_rules_can_be_changed_after_measuring(synthetic_night):
    _, files, t = synthetic_night
    relaxed = QualityRules(max_fwhm_factor=2.0, max_ellipticity=None, min_transparency=0.4)
    assert good_files(t, relaxed) == files
    strict = flag_frames(t, QualityRules(min_transparency=0.8, require_wcs=True))
    assert not any(strict["good"])
    assert all("wcs" in f for f in strict["flags"])
    assert list(t["good"]).count(True) == 5  # the original table is untouched


def test_ecsv_roundtrip_and_plot(synthetic_night, tmp_path):
    _, files, t = synthetic_night
    path = save_quality_table(t, tmp_path / "quality.ecsv")
    back = read_quality_table(path)
    assert back.colnames == t.colnames
    assert back["fwhm"].unit == "pix"
    np.testing.assert_allclose(back["transparency"], t["transparency"])
    assert back.meta["rules"] == t.meta["rules"]
    assert good_files(path) == good_files(t)
    assert good_files(path, QualityRules(max_fwhm_factor=None, min_transparency=None,
                                         max_ellipticity=None)) == files
    fig = plot_quality(t, tmp_path / "quality.png")
    assert (tmp_path / "quality.png").stat().st_size > 10_000
    assert len(fig.axes) == 5


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_unreadable_frames_are_listed_not_fatal(synthetic_night, tmp_path):
    _, files, _ = synthetic_night
    bad = tmp_path / "truncated.fits"
    bad.write_bytes(b"SIMPLE  =                    T")
    t = quality_table([files[0], str(bad), files[1]], rules=QualityRules(min_stars_fraction=None))
    assert list(t["file"]) == [files[0], files[1]]
    assert str(bad) in t.meta["unreadable"]
    with pytest.raises(ValueError, match="no readable frame"):
        quality_table([str(bad)])


def test_matplotlib_is_not_imported_by_the_library():
    code = ("import sys, astrodart.pipeline.quality, astrodart.second_stage, astrodart.sources.stars, "
            "astrodart.astrometry.solve; sys.exit('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_real_hatp32_night_is_all_good(tmp_path):
    files = [str(p) for p in copy_night(HATP32, tmp_path)]
    t = quality_table(files, executor=None)  # a process pool over the cores
    assert len(t) == 10 and all(t["good"]), list(t["flags"])
    assert np.all((t["fwhm"] > 1.4) & (t["fwhm"] < 2.6))  # ~2 px, undersampled
    assert np.all((t["fwhm_arcsec"] > 7) & (t["fwhm_arcsec"] < 14))  # IM_SCALE 5.21"/px
    assert np.all(np.abs(t["transparency"] - 1) < 0.1)
    assert np.all(t["n_matched"] >= 50)
    assert np.all((t["sky_level"] > 340) & (t["sky_level"] < 380))
    assert t["mid_exposure"][0] == "2017-12-20T01:34:13.317"  # local -0700 converted to UTC
