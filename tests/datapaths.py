"""Where the tests find the real sample data: ../shared/data next to the repository.

A missing folder is a test failure with a clear message, never a skip: the real-data
tests are the point of the suite.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASTRODART_SAMPLE_DATA", REPO.parent / "shared" / "data"))

HATP27 = SHARED / "hatp27b_sbu_180423"
HATP32 = SHARED / "hatp32_mobs_171220_first10"
M67 = SHARED / "m67_bvr"
FEDER = SHARED / "feder_headers"


def require(path: Path) -> Path:
    """Return ``path`` or fail loudly if the sample data are not where CI puts them."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: sample data missing; the tests read ../shared/data "
                                "(or set ASTRODART_SAMPLE_DATA)")
    return path


def copy_night(src: Path, dest: Path, pattern: str = "*") -> list[Path]:
    """Copy files of a sample night into ``dest`` (created) and return the copies, sorted."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for p in sorted(require(src).glob(pattern)):
        if p.is_file() and p.name != "README.md":
            shutil.copy2(p, dest / p.name)
            out.append(dest / p.name)
    return out
