"""Where the tests find the real sample nights, and what they do when a night is absent.

Each night is located by the package's own locator
(:func:`astrodart.datasets.samples.find_sample_dir`): ``$ASTRODART_SAMPLE_DATA``, then
``../shared/data`` beside the checkout, then the download cache, then (unless
``ASTRODART_OFFLINE=1``) a download from the night's pinned public source, checked file
by file against its sha256.

A test that needs a night that cannot be found is SKIPPED with a reason naming the
night, the places looked in and how to get it. Those tests carry the ``sample_data``
marker (``pytest -m sample_data`` runs only them); ``ASTRODART_REQUIRE_SAMPLE_DATA=1``
turns a missing night into a failure, for CI machines that must have the data.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from astrodart.datasets.samples import SAMPLES, SampleDataNotFound, find_sample_dir

REPO = Path(__file__).resolve().parents[1]

#: Why a night is missing, by its folder path (filled by :func:`_locate`).
MISSING: dict[Path, str] = {}


def _locate(name: str) -> Path:
    """The folder of sample night ``name``, or a placeholder path recorded in MISSING."""
    try:
        return find_sample_dir(name)
    except SampleDataNotFound as exc:
        placeholder = REPO.parent / "shared" / "data" / SAMPLES[name].folder
        MISSING[placeholder] = str(exc)
        return placeholder


HATP27 = _locate("hatp27b")
HATP32 = _locate("hatp32")
M67 = _locate("m67")
FEDER = _locate("feder")
#: The folder holding the nights (``../shared/data`` or ``$ASTRODART_SAMPLE_DATA``), or None.
SHARED = HATP27.parent if HATP27.is_dir() else None


def data_required() -> bool:
    """True when a missing sample night must fail the test instead of skipping it."""
    return os.environ.get("ASTRODART_REQUIRE_SAMPLE_DATA", "").lower() in ("1", "true", "yes")


def missing(path: Path, reason: str | None = None):
    """Skip the calling test (or fail it, see :func:`data_required`) for a missing night."""
    why = reason or MISSING.get(path) or f"{path} does not exist"
    text = (f"sample data missing: {why} -- get the real nights by putting them in "
            "../shared/data or setting ASTRODART_SAMPLE_DATA (see tests/datapaths.py)")
    if data_required():
        pytest.fail(text, pytrace=False)
    pytest.skip(text)


def require(path: Path) -> Path:
    """Return ``path`` when the sample night is there; otherwise skip (or fail) the test."""
    if not Path(path).exists():
        missing(Path(path))
    return Path(path)


def copy_night(src: Path, dest: Path, pattern: str = "*") -> list[Path]:
    """Copy files of a sample night into ``dest`` (created) and return the copies, sorted."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for p in sorted(require(src).glob(pattern)):
        if p.is_file() and p.name != "README.md":
            shutil.copy2(p, dest / p.name)
            out.append(dest / p.name)
    return out
