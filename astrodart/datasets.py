"""Locate the real sample nights and lay them out as a raw night for a reduction.

The sample data are real observations (see ``../shared/data/README.md`` in a
development checkout). They are never copied into the project's git; this module
finds them:

1. in the directory named by the ``ASTRODART_SAMPLE_DATA`` environment variable;
2. in ``../shared/data`` next to a development checkout (or next to the current
   working directory).

If neither holds them a :class:`SampleDataNotFound` error says where it looked.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SAMPLES", "SampleNight", "SampleDataNotFound", "find_sample_dir", "sample_night"]

log = logging.getLogger("astrodart")


@dataclass(frozen=True)
class SampleNight:
    """A real sample night: its folder name in the sample data, the night folder
    (YYMMDD) it is laid out under, its target, and a one-line description."""

    folder: str
    date: str
    target: str
    description: str


#: The real sample nights, by name.
SAMPLES = {
    "hatp27b": SampleNight("hatp27b_sbu_180423", "180423", "HAT-P-27",
                           "Stony Brook teaching-lab night: 10 bias, 10 darks, 10 dome flats, "
                           "100 science frames of the HAT-P-27b transit (SBIG STL-1001E)"),
    "hatp32": SampleNight("hatp32_mobs_171220_first10", "171220", "HATP-32",
                          "MicroObservatory HAT-P-32 field, 10 frames, plate-solvable offline"),
    "m67": SampleNight("m67_bvr", "970306", "M67", "ESO La Silla M67 in B, V, R (reduced)"),
    "feder": SampleNight("feder_headers", "120206", "various",
                         "Feder Observatory header variants (tiny pixel arrays)"),
}


class SampleDataNotFound(FileNotFoundError):
    """The sample data are not available on this machine."""


def _candidates() -> list[Path]:
    out = []
    env = os.environ.get("ASTRODART_SAMPLE_DATA")
    if env:
        out.append(Path(env))
    here = Path(__file__).resolve().parents[1]       # the checkout holding astrodart/
    out += [here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data",
            Path.cwd() / "shared" / "data"]
    return out


def find_sample_dir(name: str) -> Path:
    """Folder holding the real sample night ``name`` (a key of :data:`SAMPLES`).

    Raises
    ------
    KeyError
        Unknown sample name (the message lists the known ones).
    SampleDataNotFound
        None of the places looked at holds it (the message lists them).
    """
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; known: {', '.join(SAMPLES)}")
    tried = []
    for base in _candidates():
        d = base / SAMPLES[name].folder
        tried.append(str(d))
        if d.is_dir() and any(d.iterdir()):
            return d
    raise SampleDataNotFound(
        f"sample night {name!r} not found; looked in: {'; '.join(tried)}. "
        "Set ASTRODART_SAMPLE_DATA to the folder that holds "
        f"{SAMPLES[name].folder}/.")


def sample_night(name: str, dest) -> Path:
    """Copy a real sample night into ``dest/uncal_data/YYMMDD/`` (existing files are kept).

    Parameters
    ----------
    name : str
        One of :data:`SAMPLES` (``'hatp27b'``, ``'hatp32'``, ``'m67'``, ``'feder'``).
    dest : str or pathlib.Path
        Project folder; the night goes to ``dest/uncal_data/<date>/``.

    Returns
    -------
    pathlib.Path
        The night folder.
    """
    src = find_sample_dir(name)
    night = Path(dest) / "uncal_data" / SAMPLES[name].date
    night.mkdir(parents=True, exist_ok=True)
    n = 0
    for p in sorted(src.iterdir()):
        if p.is_file() and p.name != "README.md" and not (night / p.name).exists():
            shutil.copy2(p, night / p.name)
            n += 1
    log.info("sample night %s: %d files copied from %s to %s", name, n, src, night)
    return night
