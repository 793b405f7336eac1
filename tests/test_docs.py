"""The documentation site builds with warnings as errors (API reference from the
docstrings, the guided notebooks, the architecture, the command line)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_documentation_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("myst_nb", reason="the docs extra is not installed (pip install -e '.[docs]')")
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(REPO / "docs"), str(out)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    pages = {p.name for p in out.rglob("*.html")}
    assert {"index.html", "ARCHITECTURE.html", "command_line.html", "own_night.html"} <= pages
    assert {"astrophotography.html", "photometry.html", "detector_lab.html"} <= pages
    api = (out / "api" / "astrodart.first_stage.html").read_text()
    assert "trimmer" in api and "master_frame" in api
