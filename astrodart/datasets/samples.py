"""Sample nights: locate (or download) the real ones, or fall back to a simulated one.

Real sample nights
------------------
The sample data are real observations (see ``../shared/data/README.md`` in a
development checkout). They are never copied into the project's git; this module
finds them:

1. in the directory named by the ``ASTRODART_SAMPLE_DATA`` environment variable;
2. in ``../shared/data`` next to a development checkout (or next to the current
   working directory);
3. in the download cache (:func:`download_sample`, from the pinned public sources),
   unless ``ASTRODART_OFFLINE`` is set.

If none holds them a :class:`SampleDataNotFound` error says where it looked.
:func:`sample_night` lays a real night out as ``dest/uncal_data/YYMMDD/``.

:func:`get_night` gives the real HAT-P-27b night when it can be had and the simulated
night (:func:`astrodart.datasets.simulated_night.simulate_night`) otherwise, and says which.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path



from astrodart.datasets.simulated_night import simulate_night

__all__ = [
    "SAMPLES",
    "SAMPLE_SOURCES_PATH",
    "NightChoice",
    "SampleDataNotFound",
    "SampleNight",
    "download_sample",
    "sample_cache_dir",
    "find_sample_dir",
    "get_night",
    "sample_night",
]

log = logging.getLogger("astrodart")


# =======================================================================================
# Real sample nights
# =======================================================================================
@dataclass(frozen=True)
class SampleNight:
    """A real sample night.

    Parameters
    ----------
    folder : str
        Its folder in the sample data (``shared/data/<folder>``).
    date : str
        The night folder (``YYMMDD``) it is laid out under by :func:`sample_night`.
    target : str
        The target's name.
    description : str
        One line about the night.
    """

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
    """The sample data are not available on this machine; the message lists the places
    looked in and how to point astrodart at them (``ASTRODART_SAMPLE_DATA``)."""


def _default_search_dirs() -> list[Path]:
    """Places searched after ``ASTRODART_SAMPLE_DATA``: ``shared/data`` beside the checkout
    holding this package, beside the current directory, and under it."""
    here = Path(__file__).resolve().parents[2]       # the checkout holding astrodart/
    return [here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data",
            Path.cwd() / "shared" / "data"]


def _candidates() -> list[Path]:
    out = []
    env = os.environ.get("ASTRODART_SAMPLE_DATA")
    if env:
        out.append(Path(env))
    return list(dict.fromkeys(out + _default_search_dirs()))  # each place once, in order


#: Pinned public sources of the real samples (raw URLs and sha256 of every file).
SAMPLE_SOURCES_PATH = Path(__file__).resolve().parents[1] / "data" / "sample_sources.json"


def _sample_sources() -> dict:
    return json.loads(SAMPLE_SOURCES_PATH.read_text())


def sample_cache_dir(name: str) -> Path:
    """Folder where :func:`download_sample` keeps a downloaded sample night.

    ``$ASTRODART_CACHE/samples/<folder>`` if ``ASTRODART_CACHE`` is set, else
    ``~/.cache/astrodart/samples/<folder>``.

    Parameters
    ----------
    name : str
        One of :data:`SAMPLES`.

    Returns
    -------
    pathlib.Path
    """
    root = os.environ.get("ASTRODART_CACHE") or Path.home() / ".cache" / "astrodart"
    return Path(root) / "samples" / SAMPLES[name].folder


def download_sample(name: str, cache=None, *, base_url: str | None = None,
                    timeout: float = 30.0, progress: bool = True) -> Path:
    """Download a real sample night from its original public source, verified by sha256.

    Every file of the night is fetched from the pinned URL in
    ``astrodart/data/sample_sources.json`` (a fixed commit of the public repository that
    published it), checked against its pinned sha256 and kept in ``cache``; files already
    there with the right hash are not fetched again. Downloading and hashing are done by
    pooch.

    Parameters
    ----------
    name : str
        A sample with a pinned source (``'hatp27b'``, ``'hatp32'``).
    cache : str or pathlib.Path, optional
        Destination folder (default :func:`sample_cache_dir`).
    base_url : str, optional
        Another place serving the same files (a mirror); the hashes still apply.
    timeout : float
        Seconds to wait for the server on each file.
    progress : bool
        Show a progress bar over the files.

    Returns
    -------
    pathlib.Path
        The folder holding the night.

    Raises
    ------
    SampleDataNotFound
        No pinned source for ``name``, or a file could not be fetched (the message says
        which and why).
    ValueError
        A fetched file does not match its pinned sha256 (raised by pooch; the file is
        not kept).
    """
    import pooch
    import requests
    from tqdm.auto import tqdm

    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; known: {', '.join(SAMPLES)}")
    sources = _sample_sources()
    if name not in sources:
        raise SampleDataNotFound(f"sample night {name!r} has no pinned public source to "
                                 "download from; set ASTRODART_SAMPLE_DATA to a copy of it")
    src = sources[name]
    url = base_url or src["base_url"]
    url = url if url.endswith("/") else url + "/"
    dest = Path(cache) if cache is not None else sample_cache_dir(name)
    dest.mkdir(parents=True, exist_ok=True)
    downloader = pooch.HTTPDownloader(timeout=timeout, progressbar=False)
    files = sorted(src["files"].items())
    for fname, sha in tqdm(files, desc=f"download {name}", disable=not progress, unit="file"):
        try:
            pooch.retrieve(url + fname, known_hash=f"sha256:{sha}", fname=fname, path=dest,
                           downloader=downloader, progressbar=False)
        except (requests.exceptions.RequestException, OSError) as exc:
            raise SampleDataNotFound(f"sample night {name!r}: could not download {url + fname} "
                                     f"({type(exc).__name__}: {exc})") from exc
    log.info("sample night %s: %d files verified in %s", name, len(files), dest)
    return dest


def _downloads_allowed() -> bool:
    return os.environ.get("ASTRODART_OFFLINE", "").strip().lower() not in ("1", "true", "yes")


def find_sample_dir(name: str) -> Path:
    """Folder holding the real sample night ``name`` (a key of :data:`SAMPLES`).

    Parameters
    ----------
    name : str
        One of :data:`SAMPLES`.

    Returns
    -------
    pathlib.Path
        The first non-empty folder found (``ASTRODART_SAMPLE_DATA`` first, then
        ``shared/data`` beside the checkout or the current directory); failing those, the
        download cache (:func:`download_sample`, which is tried unless ``ASTRODART_OFFLINE``
        is set).

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
    why = "downloads are off (ASTRODART_OFFLINE)"
    if _downloads_allowed():
        try:
            return download_sample(name)
        except SampleDataNotFound as exc:
            why = str(exc)
    raise SampleDataNotFound(
        f"sample night {name!r} not found; looked in: {'; '.join(tried)}; {why}. "
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

    Raises
    ------
    KeyError, SampleDataNotFound
        See :func:`find_sample_dir`.
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


# =======================================================================================
# Real if possible, simulated otherwise
# =======================================================================================
@dataclass
class NightChoice:
    """The night :func:`get_night` laid out.

    Parameters
    ----------
    source : {'real', 'simulated'}
        Which one it is.
    night_dir : pathlib.Path
        ``dest/uncal_data/YYMMDD/``.
    date : str
        ``YYMMDD``.
    target : str
        The target's name (``OBJECT`` of the science frames once headers are fixed).
    truth_path : pathlib.Path or None
        ``truth.json`` of a simulated night.
    reason : str
        Why this source was used.
    """

    source: str
    night_dir: Path
    date: str
    target: str
    truth_path: Path | None = None
    reason: str = ""


def get_night(dest, prefer: str = "real", sample: str = "hatp27b", seed: int = 0,
              simulate_options: Mapping | None = None) -> NightChoice:
    """Lay out a night to reduce: the real sample night when it can be had, else a simulated one.

    Parameters
    ----------
    dest : str or pathlib.Path
        Project folder (``dest/uncal_data/YYMMDD/`` is written).
    prefer : {'real', 'simulated'}
        ``'real'`` uses the real sample night if found (:func:`sample_night`) and falls back
        to :func:`simulate_night`; ``'simulated'`` always simulates.
    sample : str
        Which real night (a key of :data:`SAMPLES`).
    seed : int
        Seed of the simulated night.
    simulate_options : dict, optional
        Keyword arguments for :func:`simulate_night` (checked even when the real night is
        used, so a misspelt option fails at once).

    Returns
    -------
    NightChoice
        With ``source`` ``'real'`` or ``'simulated'``.

    Raises
    ------
    ValueError
        Unknown ``prefer``.
    TypeError
        Unknown key in ``simulate_options``.

    Notes
    -----
    The real HAT-P-27b night needs two logged header fixes before it can be organised
    (its dome flats are labelled 'Light Frame' and it has no OBJECT; see
    :func:`astrodart.cli.prepare_sample_night`); the simulated night needs none
    (organise it with target ``'M67'``).
    """
    if prefer not in ("real", "simulated"):
        raise ValueError(f"prefer must be 'real' or 'simulated', got {prefer!r}")
    opts = dict(simulate_options or {})
    inspect.signature(simulate_night).bind(dest, seed, **opts)
    reason = "simulated night requested"
    if prefer == "real":
        try:
            night = sample_night(sample, dest)
            info = SAMPLES[sample]
            log.info("get_night: real sample night %s at %s", sample, night)
            return NightChoice("real", night, info.date, info.target, None,
                               f"real sample {sample!r} found")
        except SampleDataNotFound as exc:
            reason = f"real sample unavailable ({exc}); simulated night used"
            log.warning("get_night: %s", reason)
    opts.setdefault("overwrite", True)
    made = simulate_night(dest, seed, **opts)
    return NightChoice("simulated", made.night_dir, made.date, made.target, made.truth_path, reason)
