"""The single-job commands (``astrodart header|solve|quality|stack``) on copies of the ten
HAT-P-32 frames: each does its one job on the files named and says so."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from astrodart.cli import main
from datapaths import HATP32, copy_night


@pytest.fixture
def frames(tmp_path):
    return [str(p) for p in copy_night(HATP32, tmp_path / "frames")]


def test_header_sets_keywords_and_keeps_the_old_value_in_history(frames, capsys):
    assert main(["header", *frames[:3], "--set", "OBJECT=HAT-P-32", "--set", "GAIN=1.5"]) == 0
    h = fits.getheader(frames[0])
    assert h["OBJECT"] == "HAT-P-32" and h["GAIN"] == 1.5
    assert any("HATP-32" in str(c) for c in h.get("HISTORY", []))
    assert fits.getheader(frames[3])["OBJECT"] == "HATP-32"  # files not named: untouched
    assert "changed 3 of 3 files" in capsys.readouterr().out


def test_header_dry_run_and_bad_arguments_change_nothing(frames):
    before = [open(f, "rb").read() for f in frames[:2]]
    assert main(["header", *frames[:2], "--set", "OBJECT=X", "--dry-run"]) == 0
    assert main(["header", *frames[:2], "--set", "NOEQUALSIGN"]) == 2
    assert main(["header", frames[0], "/no/such.fits", "--set", "A=1"]) == 2
    assert [open(f, "rb").read() for f in frames[:2]] == before


def test_solve_writes_a_wcs(frames, capsys):
    assert main(["solve", frames[0]]) == 0
    wcs = WCS(fits.getheader(frames[0]))
    assert wcs.has_celestial
    scale = np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600
    assert scale == pytest.approx(5.16, abs=0.05)  # MicroObservatory: 5.16"/px
    assert "solved" in capsys.readouterr().out


def test_quality_and_stack(frames, tmp_path):
    table_path = tmp_path / "q.ecsv"
    assert main(["quality", *frames, "-o", str(table_path)]) == 0
    table = Table.read(table_path)
    assert len(table) == 10 and np.all((table["fwhm"] > 1) & (table["fwhm"] < 4))
    out = tmp_path / "stack.fits"
    assert main(["stack", *frames, "-o", str(out)]) == 0
    data = fits.getdata(out)
    assert data.shape == fits.getdata(frames[0]).shape
    assert np.nanmedian(data) == pytest.approx(np.median(fits.getdata(frames[0])), rel=0.2)
