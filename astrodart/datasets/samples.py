"""Sample nights: locate the real ones, or simulate one with known truth.

Real sample nights
------------------
The sample data are real observations (see ``../shared/data/README.md`` in a
development checkout). They are never copied into the project's git; this module
finds them:

1. in the directory named by the ``ASTRODART_SAMPLE_DATA`` environment variable;
2. in ``../shared/data`` next to a development checkout (or next to the current
   working directory).

If neither holds them a :class:`SampleDataNotFound` error says where it looked.
:func:`sample_night` lays a real night out as ``dest/uncal_data/YYMMDD/``.

Simulated night
---------------
:func:`simulate_night` writes a raw night of the open cluster M67 as a small CCD
camera would have taken it — bias frames, darks at two exposure times, dome flats and
dithered science frames in B, V and R — to ``dest/uncal_data/YYMMDD/``, and everything
that went into it to ``dest/truth.json``: the true WCS of every frame (which is *not* in
the frame headers), seeing, sky, transparency, the bias, dark and flat-field models, the
stars with their fluxes, and a transit injected into one star's light curve; the camera's
per-pixel bias, dark current and flat responses go to ``dest/truth_maps.fits``. The stars
are real: Tycho-2 positions and VT magnitudes shipped in ``astrodart/data/`` (see
:func:`load_catalogue` and ``astrodart/data/README.md``). The pixel-level physics lives
in :mod:`astrodart.datasets.simulate`.

:func:`get_night` gives the real HAT-P-27b night when it can be had and the simulated
night otherwise, and says which.
"""
from __future__ import annotations

import gzip
import inspect
import io
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time, TimeDelta
from astropy.wcs import WCS

from astrodart.datasets import simulate as sim
from astrodart.frames.io import atomic_output, find_fits

__all__ = [
    "CATALOGUE_PATH",
    "M67_CENTRE",
    "SAMPLES",
    "Camera",
    "NightChoice",
    "SampleDataNotFound",
    "SampleNight",
    "SimulatedNight",
    "Site",
    "TRUTH_MAPS",
    "download_sample",
    "sample_cache_dir",
    "build_field_catalogue",
    "find_sample_dir",
    "frame_truth_stars",
    "get_night",
    "load_catalogue",
    "load_truth",
    "sample_night",
    "simulate_night",
    "truth_wcs",
    "tycho2_index_stars",
]

log = logging.getLogger("astrodart")


# =======================================================================================
# Real sample nights
# =======================================================================================
@dataclass(frozen=True)
class SampleNight:
    """A real sample night.

    Attributes
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
    return out + _default_search_dirs()


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
# The star catalogue shipped with the package
# =======================================================================================
#: The shipped catalogue: real Tycho-2 stars around M67 (see astrodart/data/README.md).
CATALOGUE_PATH = Path(__file__).resolve().parents[1] / "data" / "m67_tycho2.ecsv"

#: File beside ``truth.json`` holding the per-pixel truth of a simulated night's camera
#: (extensions BIAS in ADU, DARK in e-/s, FLAT_<filter> with mean 1).
TRUTH_MAPS = "truth_maps.fits"

#: Centre of M67 (ICRS, degrees) used for the shipped catalogue and the simulated pointing.
M67_CENTRE = (132.825, 11.8)

#: Tycho-2 BT/VT of M67 stars listed in the real M67 sample's README (shared/data); matched
#: to index stars by VT (identical to 0.001 mag) within 10' of the cluster centre.
_M67_TYCHO_BT = {  # VT: (TYC, BT)
    9.969: ("TYC 814-2331", 11.581), 10.523: ("TYC 814-1493", 12.075),
    10.520: ("TYC 814-1531", 11.915), 11.843: ("TYC 814-1119", 12.626),
    11.277: ("TYC 814-1931", 11.469), 10.072: ("TYC 814-1795", 10.018),
}

_INDEX_DIRS = ("/usr/share/astrometry", "/usr/local/share/astrometry", "/usr/share/astrometry-data")


def _index_files(index_dir=None) -> list[Path]:
    dirs = [Path(index_dir)] if index_dir else (
        ([Path(os.environ["ASTRODART_INDEX_DIR"])] if os.environ.get("ASTRODART_INDEX_DIR") else [])
        + [Path(d) for d in _INDEX_DIRS])
    for d in dirs:
        files = sorted(d.glob("index-tycho2-*.fits")) if d.is_dir() else []
        if files:
            return files
    raise FileNotFoundError("no astrometry.net Tycho-2 index files (index-tycho2-*.fits) in "
                            + ", ".join(str(d) for d in dirs)
                            + "; install astrometry-data-tycho2-* or set ASTRODART_INDEX_DIR")


def _read_index_stars(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (n, 3) and VT magnitudes (n,) of the stars of one index file.

    The star kd-tree stores each star's unit vector as three unsigned 32-bit integers
    mapped linearly onto [lower, upper] by the scale in ``kdtree_range_stars`` (as the
    comments of that HDU explain); ``MAG_VT`` is a tag-along column in the same order.
    """
    with fits.open(path, memmap=True) as hdul:
        by_col = {h.columns.names[0]: h for h in hdul[1:] if isinstance(h, fits.BinTableHDU)}
        for need in ("kdtree_data_stars", "kdtree_range_stars", "MAG_VT"):
            if need not in by_col:
                raise ValueError(f"{path}: not a Tycho-2 index file with a {need} table")
        order = "<" if hdul[0].header.get("ENDIAN", "04:03:02:01") == "04:03:02:01" else ">"
        kind = by_col["kdtree_header_stars"].header.get("KDT_DATA", "u32").strip()
        rng = np.frombuffer(np.asarray(by_col["kdtree_range_stars"].data).tobytes(), order + "f8")
        raw = np.asarray(by_col["kdtree_data_stars"].data).tobytes()
        if kind == "u32":
            xyz = rng[:3] + np.frombuffer(raw, order + "u4").reshape(-1, 3) / rng[6]
        elif kind == "double":
            xyz = np.frombuffer(raw, order + "f8").reshape(-1, 3)
        else:
            raise ValueError(f"{path}: star tree data type {kind!r} not supported")
        mag = np.asarray(by_col["MAG_VT"].data["MAG_VT"], dtype=float)
    return xyz, mag


def tycho2_index_stars(ra: float, dec: float, radius: float, index_dir=None) -> Table:
    """Real Tycho-2 stars near a position, read from astrometry.net index files.

    The Debian packages ``astrometry-data-tycho2-*`` install index files built from the
    Tycho-2 catalogue (Høg et al. 2000, A&A 355, L27); each keeps a spatially uniform
    subset of the stars with their positions and ``MAG_VT``. The stars of all files are
    merged (duplicates within 0.5" dropped).

    Parameters
    ----------
    ra, dec : float
        Centre (ICRS, degrees).
    radius : float
        Search radius (degrees).
    index_dir : str or pathlib.Path, optional
        Folder of ``index-tycho2-*.fits``; default ``ASTRODART_INDEX_DIR``, then
        ``/usr/share/astrometry``.

    Returns
    -------
    astropy.table.Table
        Columns ``ra``, ``dec`` (deg, 7 decimals) and ``vt`` (mag, 3 decimals), sorted by
        ``vt`` then ``ra``.

    Raises
    ------
    FileNotFoundError
        No index files found (the message names the folders looked in).
    """
    r0, d0 = math.radians(ra), math.radians(dec)
    centre = np.array([math.cos(d0) * math.cos(r0), math.cos(d0) * math.sin(r0), math.sin(d0)])
    found: list[tuple[float, float, float]] = []
    for path in _index_files(index_dir):
        xyz, mag = _read_index_stars(path)
        sel = xyz @ centre > math.cos(math.radians(radius))
        v = xyz[sel] / np.linalg.norm(xyz[sel], axis=1)[:, None]
        ras = np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360.0
        decs = np.degrees(np.arcsin(np.clip(v[:, 2], -1, 1)))
        found += zip(np.round(ras, 7), np.round(decs, 7), np.round(mag[sel], 3))
    kept: list[tuple[float, float, float]] = []
    for s in sorted(set(found), key=lambda s: (s[2], s[0])):
        dup = any(abs(s[1] - k[1]) * 3600 < 0.5 and abs(s[0] - k[0]) * 3600 * math.cos(d0) < 0.5
                  for k in kept)
        if not dup:
            kept.append(s)
    t = Table(rows=kept, names=("ra", "dec", "vt"), dtype=(float, float, float))
    t["ra"].unit = t["dec"].unit = u.deg
    t["vt"].unit = u.mag
    return t


def _jname(ra: float, dec: float) -> str:
    ra_s = Angle(ra, u.deg).to_string(unit=u.hourangle, sep="", precision=2, pad=True)
    dec_s = Angle(dec, u.deg).to_string(unit=u.deg, sep="", precision=1, pad=True, alwayssign=True)
    return f"J{ra_s}{dec_s}"


def build_field_catalogue(ra: float = M67_CENTRE[0], dec: float = M67_CENTRE[1],
                          radius: float = 0.75, index_dir=None, colour_seed: int = 67) -> Table:
    """Build the simulation catalogue of a field from the Tycho-2 index files.

    Positions and VT are real (:func:`tycho2_index_stars`). Johnson B and V and Cousins R
    are derived from them: where BT is known (:data:`_M67_TYCHO_BT`, the M67 stars of the
    real M67 sample), ``B-V = 0.850 (BT-VT)`` and ``V = VT - 0.090 (BT-VT)`` (ESA 1997,
    The Hipparcos and Tycho Catalogues, vol. 1, sect. 1.3); elsewhere ``B-V`` is *assumed*,
    drawn from N(0.75, 0.25) clipped to [0, 1.6] with a fixed seed, and the same relations
    are inverted for V. ``V-R = 0.56 (B-V)`` for all (an approximate dwarf-star relation
    from Bessell 1990, PASP 102, 1181, tables; good to ~0.05 mag for 0 < B-V < 1.2).
    Column ``colour_source`` says which stars carry real colours.

    Parameters
    ----------
    ra, dec : float
        Centre (ICRS, degrees).
    radius : float
        Radius (degrees).
    index_dir : str or pathlib.Path, optional
        See :func:`tycho2_index_stars`.
    colour_seed : int
        Seed of the assumed colours.

    Returns
    -------
    astropy.table.Table
        Columns ``id`` (J-name from the position), ``tyc`` (TYC number where known, else
        ``'-'``),
        ``ra``, ``dec`` (deg), ``vt``, ``bt`` (NaN where unknown), ``b_v``, ``v_r``,
        ``B``, ``V``, ``R`` (mag) and ``colour_source`` (``'tycho2 BT'`` or ``'assumed'``).
    """
    t = tycho2_index_stars(ra, dec, radius, index_dir)
    rng = np.random.default_rng(colour_seed)
    assumed = np.clip(rng.normal(0.75, 0.25, len(t)), 0.0, 1.6)
    rows = []
    c0 = math.cos(math.radians(dec))
    for s, bv_assumed in zip(t, assumed):
        near = math.hypot((s["ra"] - ra) * c0, s["dec"] - dec) < 10 / 60
        known = _M67_TYCHO_BT.get(round(float(s["vt"]), 3)) if near else None
        if known:
            tyc, bt = known
            bv, source = 0.850 * (bt - s["vt"]), "tycho2 BT"
        else:
            tyc, bt, bv, source = "-", float("nan"), float(bv_assumed), "assumed"
        v = s["vt"] - 0.090 * bv / 0.850
        vr = 0.56 * bv
        mags = [round(m, 3) for m in (bv, vr, v + bv, v, v - vr)]
        rows.append((_jname(s["ra"], s["dec"]), tyc, s["ra"], s["dec"], s["vt"], bt, *mags, source))
    names = ("id", "tyc", "ra", "dec", "vt", "bt", "b_v", "v_r", "B", "V", "R", "colour_source")
    out = Table(rows=rows, names=names, dtype=(str, str) + (float,) * 9 + (str,))
    for c in ("ra", "dec"):
        out[c].unit = u.deg
    for c in ("vt", "bt", "b_v", "v_r", "B", "V", "R"):
        out[c].unit = u.mag
    out.meta.update({"centre_ra": ra, "centre_dec": dec, "radius_deg": radius,
                     "colour_seed": colour_seed,
                     "source": "Tycho-2 (Hog et al. 2000) via astrometry.net index files "
                               "(Debian astrometry-data-tycho2-*); see astrodart/data/README.md"})
    return out


def load_catalogue(path=None) -> Table:
    """The star catalogue shipped with astrodart (real Tycho-2 stars around M67).

    Parameters
    ----------
    path : str or pathlib.Path, optional
        Another catalogue in the same format (ECSV written from
        :func:`build_field_catalogue`).

    Returns
    -------
    astropy.table.Table
        See :func:`build_field_catalogue` for the columns.

    Raises
    ------
    FileNotFoundError
        The file is missing (a broken installation: check the package data).
    """
    path = Path(path) if path is not None else CATALOGUE_PATH
    if not path.exists():
        raise FileNotFoundError(f"{path}: star catalogue missing (astrodart/data is package data; "
                                "reinstall astrodart)")
    return Table.read(path, format="ascii.ecsv")


# =======================================================================================
# The simulated night
# =======================================================================================
#: Effective wavelengths (nm) of the filters, for the wavelength dependence of seeing.
_WAVELENGTH = {"B": 440.0, "V": 550.0, "R": 650.0}


@dataclass(frozen=True)
class Camera:
    """Telescope and camera of the simulated night (defaults: a 100 mm f/3.1 astrograph
    with a 9 um-pixel CCD without anti-blooming gates).

    Attributes
    ----------
    instrument, telescope : str
        Written to ``INSTRUME`` and ``TELESCOP``.
    aperture : float
        Aperture diameter (m); sets the scintillation noise.
    pixel_size : float
        Pixel pitch (um); with the pixel scale it gives ``FOCALLEN``.
    gain : float
        e-/ADU (``GAIN``).
    read_noise : float
        e- (``RON``).
    bias_level : float
        Mean bias (ADU).
    bias_column_sigma : float
        Column-to-column bias structure (ADU, standard deviation).
    bias_drift : float
        Frame-to-frame scatter of the bias level (ADU).
    full_well : float
        Pixel capacity (e-); charge above it bleeds along columns.
    dark_current : float
        Mean dark current of ordinary pixels (e-/s) at ``ccd_temperature``.
    hot_pixel_fraction : float
        Fraction of hot pixels (2 to 50 e-/s).
    amp_glow : float
        Extra dark current at the amplifier corner (e-/s).
    ccd_temperature : float
        Set point (deg C).
    readout_time : float
        Seconds between the end of one exposure and the start of the next.
    optics_fwhm : float
        Image blur of the optics and focus (arcsec FWHM), added in quadrature to seeing.
    psf : {'moffat', 'gaussian'}
        Star profile.
    beta : float
        Moffat index.
    vignetting : float
        Relative light loss at half the image diagonal.
    prnu : float
        Pixel-to-pixel response scatter.
    n_window_donuts, n_filter_donuts : int
        Dust donuts common to all filters (on the CCD window) and particular to each filter.
    zero_points : dict
        Per filter, the magnitude that yields 1 e-/s above the atmosphere.
    """

    instrument: str = "astrodart SimCam 9um (simulated CCD)"
    telescope: str = "100 mm f/3.1 astrograph (simulated)"
    aperture: float = 0.10
    pixel_size: float = 9.0
    gain: float = 1.4
    read_noise: float = 9.0
    bias_level: float = 1000.0
    bias_column_sigma: float = 1.5
    bias_drift: float = 0.8
    full_well: float = 80000.0
    dark_current: float = 0.1
    hot_pixel_fraction: float = 2e-4
    amp_glow: float = 0.5
    ccd_temperature: float = -10.0
    readout_time: float = 20.0
    optics_fwhm: float = 10.0
    psf: str = "moffat"
    beta: float = 3.0
    vignetting: float = 0.15
    prnu: float = 0.005
    n_window_donuts: int = 5
    n_filter_donuts: int = 2
    zero_points: Mapping[str, float] = field(
        default_factory=lambda: {"B": 17.7, "V": 18.3, "R": 18.4})


@dataclass(frozen=True)
class Site:
    """Observatory and sky of the simulated night (defaults: Mt. Stony Brook Observatory,
    the site of the real HAT-P-27b sample night, under suburban skies).

    Attributes
    ----------
    name : str
        ``OBSERVAT``.
    latitude, longitude : float
        Degrees, east-positive longitude.
    height : float
        Metres above sea level.
    seeing : float
        Atmospheric seeing at the zenith in V (arcsec FWHM); it scales as
        ``airmass^0.6 * wavelength^-0.2`` and wanders by about +-30 % during the night.
    extinction : dict
        Per filter, the extinction coefficient (mag per airmass).
    sky_brightness : dict
        Per filter, the zenith sky surface brightness (mag/arcsec^2).
    cosmic_ray_rate : float
        Cosmic-ray events per cm^2 of detector per minute (generous, so frames exercise
        cosmic-ray rejection).
    """

    name: str = "Mt. Stony Brook Observatory"
    latitude: float = 40.9145
    longitude: float = -73.1236
    height: float = 40.0
    seeing: float = 6.0
    extinction: Mapping[str, float] = field(
        default_factory=lambda: {"B": 0.35, "V": 0.22, "R": 0.16})
    sky_brightness: Mapping[str, float] = field(
        default_factory=lambda: {"B": 19.9, "V": 19.0, "R": 18.5})
    cosmic_ray_rate: float = 10.0


@dataclass
class SimulatedNight:
    """What :func:`simulate_night` wrote.

    Attributes
    ----------
    root : pathlib.Path
        The ``dest`` folder.
    night_dir : pathlib.Path
        ``dest/uncal_data/YYMMDD/``.
    date : str
        ``YYMMDD``.
    target : str
        ``OBJECT`` of the science frames.
    truth_path : pathlib.Path
        ``dest/truth.json``.
    files : dict
        ``{'bias': [...], 'dark': [...], 'flat': [...], 'object': [...]}`` paths written.
    seconds : float
        Wall-clock time of the generation.
    """

    root: Path
    night_dir: Path
    date: str
    target: str
    truth_path: Path
    files: dict
    seconds: float = 0.0


@dataclass
class _Spec:
    """One frame to make."""

    index: int
    kind: str               # bias, dark, flat, object
    name: str
    start: Time
    exptime: float
    filter: str | None = None


def _sexagesimal(ra: float, dec: float) -> tuple[str, str]:
    ra_s = Angle(ra, u.deg).to_string(unit=u.hourangle, sep=" ", precision=2, pad=True)
    dec_s = Angle(dec, u.deg).to_string(unit=u.deg, sep=" ", precision=1, pad=True, alwayssign=True)
    return ra_s, dec_s


def _meridian_time(date: str, ra: float, lon: float) -> Time:
    """UTC time of the target's upper culmination in the night starting on local ``date``."""
    noon = Time(f"{date}T12:00:00", scale="utc") - TimeDelta(lon / 15.0 * 3600.0, format="sec")
    gmst = 280.46061837 + 360.98564736629 * (noon.jd - 2451545.0)
    ha = (gmst + lon - ra) % 360.0                   # hour angle at local noon, degrees
    days = ((360.0 - ha) % 360.0) / 360.98564736629
    return noon + TimeDelta(days * 86400.0, format="sec")


def _plan(start_cal: Time, sci_start: Time, n_bias: int, n_dark: int, dark_exptimes, n_flat: int,
          flat_exptimes: Mapping[str, float], n_science: Mapping[str, int],
          exptimes: Mapping[str, float], series_filter: str, target: str, readout: float,
          suffix: str) -> tuple[list[_Spec], Time, Time]:
    """The frames of the night in time order; also the start and end of the time series."""
    specs: list[_Spec] = []
    t = start_cal

    def add(kind, name, exptime, filt=None, gap=readout):
        nonlocal t
        specs.append(_Spec(len(specs), kind, name + suffix, t, float(exptime), filt))
        t = t + TimeDelta(exptime + gap, format="sec")

    for i in range(n_bias):
        add("bias", f"bias-{i + 1:04d}", 0.0)
    for e in dark_exptimes:
        for i in range(n_dark):
            add("dark", f"dark-{e:g}s-{i + 1:04d}", e)
    t = max(t, sci_start - TimeDelta(1.25 * 3600, format="sec"))
    for f, e in flat_exptimes.items():
        for i in range(n_flat):
            add("flat", f"flat-{f}-{i + 1:04d}", e, f)
    t = sci_start
    others = [f for f in n_science if f != series_filter]
    counter = {f: 0 for f in n_science}

    def block(f, n):
        for _ in range(n):
            counter[f] += 1
            add("object", f"{target}-{f}-{counter[f]:04d}", exptimes[f], f)

    for f in others:
        block(f, n_science[f] // 2)
    series_start = t
    block(series_filter, n_science.get(series_filter, 0))
    series_end = t
    for f in others:
        block(f, n_science[f] - n_science[f] // 2)
    return specs, series_start, series_end


def _fits_bytes(data: np.ndarray, header: fits.Header, compress: bool) -> bytes:
    """The file's bytes: uint16 stored as int16 with BZERO=32768; gzip without a time stamp
    or file name in its header, so the same frame gives the same bytes."""
    buf = io.BytesIO()
    fits.PrimaryHDU(data=data, header=header).writeto(buf, output_verify="exception")
    raw = buf.getvalue()
    if not compress:
        return raw
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=1) as gz:
        gz.write(raw)
    return out.getvalue()


def _write_atomic(path: Path, payload: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(payload)


def _plain(d: dict) -> dict:
    """A dataclass's dict with its mappings as plain dicts (for JSON)."""
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in d.items()}


def _r(x, nd: int = 6):
    """Round floats (and lists of them) for a compact, stable truth.json."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_r(v, nd) for v in x]
    return round(float(x), nd)


class _Night:
    """Everything fixed for one simulated night; :meth:`frame` makes one frame."""

    def __init__(self, *, seed, shape, pixel_scale, camera: Camera, site: Site, target, centre,
                 stars: dict, dither, drift, rotation, series_start: Time, series_end: Time,
                 transit: dict | None, flat_level: float):
        self.seed, self.shape, self.scale = seed, shape, pixel_scale
        self.camera, self.site, self.target, self.centre = camera, site, target, centre
        self.stars, self.transit, self.flat_level = stars, transit, flat_level
        self.series_start, self.series_end = series_start, series_end
        ny, nx = shape
        cam = np.random.default_rng([seed, 0])             # the camera's fixed signatures
        self.bias = sim.bias_pattern(shape, camera.bias_level, cam, camera.bias_column_sigma)
        self.dark, self.hot_y, self.hot_x = sim.dark_current_map(
            shape, camera.dark_current, cam, hot_fraction=camera.hot_pixel_fraction,
            glow=camera.amp_glow)
        donut_scale = min(shape) / 512.0
        self.optical_centre = ((nx - 1) / 2 + cam.normal(0, 0.03 * nx),
                               (ny - 1) / 2 + cam.normal(0, 0.03 * ny))
        self.window_donuts = sim.random_donuts(shape, camera.n_window_donuts, cam,
                                               radius=(6 * donut_scale, 16 * donut_scale))
        prnu = camera.prnu * cam.standard_normal(shape)
        self.filter_donuts, self.flat = {}, {}
        for f in sorted(camera.zero_points):
            self.filter_donuts[f] = sim.random_donuts(shape, camera.n_filter_donuts, cam,
                                                      radius=(12 * donut_scale, 24 * donut_scale))
            self.flat[f] = sim.flat_response(
                shape, vignetting=camera.vignetting, optical_centre=self.optical_centre,
                donuts=self.window_donuts + self.filter_donuts[f], prnu=prnu)
        cond = np.random.default_rng([seed, 1])            # the night's weather and mount
        self.pointing_error = cond.normal(0.0, 60.0, 2)    # arcsec east, north
        self.seeing_terms = [(cond.uniform(0.4, 2.5), cond.uniform(0, 2 * np.pi)) for _ in range(3)]
        span = max((series_end - series_start).to_value(u.h), 0.5)
        self.dips = [(cond.uniform(0.02, 0.08), cond.uniform(0, span), cond.uniform(0.1, 0.3))
                     for _ in range(2)]
        self.sky_angle = cond.uniform(0, 2 * np.pi)
        self.sky_slope = cond.uniform(0.03, 0.08)          # fractional change across the width
        self.dither, self.drift, self.rotation = dither, drift, rotation

    # -- the conditions as functions of time -------------------------------------------------
    def hours(self, t: Time) -> float:
        return float((t - self.series_start).to_value(u.h))

    def seeing_factor(self, h: float) -> float:
        s = sum(math.sin(2 * math.pi * h / p + ph) for p, ph in self.seeing_terms) / math.sqrt(3)
        return math.exp(0.3 * s)

    def transparency(self, h: float) -> float:
        return 1.0 - sum(d * math.exp(-0.5 * ((h - c) / w) ** 2) for d, c, w in self.dips)

    def airmass(self, t: Time) -> float:
        return float(sim.airmass(t.jd, self.centre[0], self.centre[1], self.site.latitude,
                                 self.site.longitude))

    # -- frames --------------------------------------------------------------------------
    def frame(self, spec: _Spec) -> tuple[np.ndarray, fits.Header, dict]:
        rng = np.random.default_rng([self.seed, 2, spec.index])
        cam = self.camera
        bias = self.bias + rng.normal(0.0, cam.bias_drift)
        area_cm2 = self.shape[0] * self.shape[1] * (cam.pixel_size * 1e-4) ** 2
        minutes = (spec.exptime + cam.readout_time) / 60.0
        n_cr = int(rng.poisson(self.site.cosmic_ray_rate * area_cm2 * minutes))
        common = {"rng": rng, "exptime": spec.exptime, "gain": cam.gain, "bias": bias,
                  "read_noise": cam.read_noise, "n_cosmic_rays": n_cr, "full_well": cam.full_well}
        info = {"type": spec.kind, "exptime": spec.exptime, "date_obs": spec.start.isot,
                "bias_offset_adu": _r(float(bias.mean()) - cam.bias_level, 4),
                "n_cosmic_rays": n_cr}
        if spec.kind == "bias":
            fr = sim.simulate_frame(self.shape, **common)
        elif spec.kind == "dark":
            fr = sim.simulate_frame(self.shape, dark_rate=self.dark, **common)
        elif spec.kind == "flat":
            level = self.flat_level * rng.uniform(0.95, 1.05)
            fr = sim.simulate_frame(self.shape, sky=level, flat=self.flat[spec.filter],
                                    dark_rate=self.dark, **common)
            info.update(filter=spec.filter, illumination_e=_r(level, 2))
        else:
            kw, more = self.science(spec, rng)
            fr = sim.simulate_frame(self.shape, dark_rate=self.dark, flat=self.flat[spec.filter],
                                    psf=cam.psf, beta=cam.beta, **kw, **common)
            info.update(more)
        info["n_saturated_pixels"] = fr.info["n_saturated"]
        return fr.data, self.header(spec, info), info

    def science(self, spec: _Spec, rng: np.random.Generator) -> tuple[dict, dict]:
        """Arguments of :func:`simulate_frame` and truth of one science frame."""
        cam, site, f = self.camera, self.site, spec.filter
        mid = spec.start + TimeDelta(spec.exptime / 2, format="sec")
        h = self.hours(mid)
        x_air = self.airmass(mid)
        colour = (_WAVELENGTH.get(f, 550.0) / 550.0) ** -0.2
        seeing = site.seeing * x_air ** 0.6 * colour * self.seeing_factor(h)
        fwhm = math.hypot(cam.optics_fwhm, seeing) / self.scale
        transp = self.transparency(h)
        atm = 10 ** (-0.4 * site.extinction[f] * x_air) * transp
        dither = rng.uniform(-self.dither, self.dither, 2)
        east, north = self.pointing_error + dither + np.asarray(self.drift) * h
        dec_c = self.centre[1] + north / 3600.0
        ra_c = self.centre[0] + east / 3600.0 / math.cos(math.radians(dec_c))
        rot = self.rotation[0] + self.rotation[1] * h
        wcs = sim.tan_wcs(self.shape, ra_c, dec_c, self.scale, rot)
        st = self.stars
        x, y = wcs.all_world2pix(st["ra"], st["dec"], 0)
        scint = sim.scintillation_sigma(cam.aperture, x_air, spec.exptime, site.height)
        flux = st["rate"][f] * spec.exptime * atm * (1.0 + scint * rng.standard_normal(x.size))
        transit_factor = 1.0
        if self.transit is not None:
            tr = self.transit
            transit_factor = float(sim.transit_model(mid.jd, tr["t0_jd"], tr["duration_h"] / 24.0,
                                                     tr["depth"], tr["impact_parameter"]))
            flux[self.transit["index"]] *= transit_factor
        ny, nx = self.shape
        inside = (x > -50) & (x < nx + 50) & (y > -50) & (y < ny + 50)
        mu = site.sky_brightness[f] - 0.3 * (x_air - 1.0)      # brighter toward the horizon
        sky = float(sim.magnitude_to_rate(mu, cam.zero_points[f])) * self.scale ** 2 * spec.exptime
        grad = sky * self.sky_slope / nx
        gradient = (grad * math.cos(self.sky_angle), grad * math.sin(self.sky_angle))
        kw = {"x": x[inside], "y": y[inside], "flux": flux[inside], "fwhm": fwhm,
              "sky": sim.sky_plane(self.shape, sky, gradient)}
        truth = {"filter": f, "jd_mid_utc": _r(mid.jd, 8), "airmass": _r(x_air, 5),
                 "fwhm_px": _r(fwhm, 4), "seeing_arcsec": _r(seeing, 3),
                 "transparency": _r(transp, 5),
                 "atmospheric_transmission": _r(atm, 6), "scintillation_sigma": _r(scint, 6),
                 "sky_e_per_px": _r(sky, 3), "sky_gradient_e_per_px_per_px": _r(gradient, 6),
                 "centre_radec": _r([ra_c, dec_c], 8), "rotation_deg": _r(rot, 5),
                 "dither_arcsec": _r(dither, 3), "transit_factor": _r(transit_factor, 7),
                 "wcs": _wcs_dict(wcs)}
        if self.transit is not None:
            i = self.transit["index"]
            truth["transit_star_xy"] = _r([x[i], y[i]], 4)
            truth["transit_star_flux_e"] = _r(flux[i], 2)
        return kw, truth

    def header(self, spec: _Spec, info: dict) -> fits.Header:
        """The header a camera-control program would write (no WCS)."""
        cam, site = self.camera, self.site
        h = fits.Header()
        h["DATE-OBS"] = (spec.start.isot, "[UTC] start of exposure")
        h["TIMESYS"] = ("UTC", "time system of DATE-OBS")
        h["JD"] = (round(spec.start.jd, 6), "Julian date at start of exposure (UTC)")
        h["EXPTIME"] = (spec.exptime, "[s] duration of exposure")
        h["EXPOSURE"] = (spec.exptime, "[s] duration of exposure")
        h["IMAGETYP"] = ({"bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field",
                          "object": "Light Frame"}[spec.kind], "type of image")
        if spec.filter is not None:
            h["FILTER"] = (spec.filter, "filter name")
        h["SET-TEMP"] = (cam.ccd_temperature, "[C] CCD temperature set point")
        h["CCD-TEMP"] = (round(cam.ccd_temperature + 0.05 * math.sin(spec.index), 3),
                         "[C] CCD temperature")
        h["XBINNING"], h["YBINNING"] = 1, 1
        h["XPIXSZ"] = (cam.pixel_size, "[um] pixel width")
        h["YPIXSZ"] = (cam.pixel_size, "[um] pixel height")
        h["FOCALLEN"] = (round(206.264806 * cam.pixel_size / self.scale, 1), "[mm] focal length")
        h["APTDIA"] = (cam.aperture * 1000.0, "[mm] aperture diameter")
        h["GAIN"] = (cam.gain, "[e-/ADU] detector gain")
        h["RON"] = (cam.read_noise, "[e-] read noise")
        h["INSTRUME"] = cam.instrument
        h["TELESCOP"] = cam.telescope
        h["OBSERVAT"] = site.name
        lat, lon = Angle(site.latitude, u.deg), Angle(site.longitude, u.deg)
        h["SITELAT"] = (lat.to_string(sep=" ", precision=0, alwayssign=True),
                        "[deg, N positive] site latitude")
        h["SITELONG"] = (lon.to_string(sep=" ", precision=0, alwayssign=True),
                         "[deg, E positive] site longitude")
        h["SITEELEV"] = (site.height, "[m] site elevation")
        if spec.kind == "object":
            h["OBJECT"] = (self.target, "target name")
            ra_s, dec_s = _sexagesimal(*self.centre)
            h["OBJCTRA"] = (ra_s, "[hms J2000] target right ascension")
            h["OBJCTDEC"] = (dec_s, "[dms J2000] target declination")
            # the mount reports where it was sent (target + commanded dither), not the
            # true centre: pointing error and drift are left for the plate solver
            dd = np.asarray(info["dither_arcsec"]) / 3600.0
            cos_dec = math.cos(math.radians(self.centre[1]))
            ra_m, dec_m = _sexagesimal(self.centre[0] + dd[0] / cos_dec, self.centre[1] + dd[1])
            h["RA"] = (ra_m, "[hms J2000] telescope right ascension")
            h["DEC"] = (dec_m, "[dms J2000] telescope declination")
            h["AIRMASS"] = (round(self.airmass(spec.start), 4), "airmass at start of exposure")
        h["SWCREATE"] = ("astrodart.datasets.samples.simulate_night", "software that wrote the file")
        h["COMMENT"] = "Simulated frame with known truth: see truth.json beside uncal_data/."
        return h


def _wcs_dict(w: WCS) -> dict:
    """The true WCS as FITS keywords (CD-matrix convention), full precision."""
    cd = w.wcs.cd
    return {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
            "RADESYS": "ICRS", "CRPIX1": float(w.wcs.crpix[0]), "CRPIX2": float(w.wcs.crpix[1]),
            "CRVAL1": float(w.wcs.crval[0]), "CRVAL2": float(w.wcs.crval[1]),
            "CD1_1": float(cd[0, 0]), "CD1_2": float(cd[0, 1]), "CD2_1": float(cd[1, 0]),
            "CD2_2": float(cd[1, 1])}


def _field_stars(catalogue: Table, centre, radius: float, n_faint: int, rng: np.random.Generator,
                 zero_points: Mapping[str, float]) -> dict:
    """Real catalogue stars within ``radius`` (deg) plus ``n_faint`` synthetic faint stars."""
    ra0, dec0 = centre
    c0 = math.cos(math.radians(dec0))
    d = np.hypot((np.asarray(catalogue["ra"]) - ra0) * c0, np.asarray(catalogue["dec"]) - dec0)
    cat = catalogue[d < radius]
    # fainter than Tycho-2's limit: dN/dm ~ 10^(0.3 m) between V 11.5 and 15.5
    lo, hi = 10 ** (0.3 * 11.5), 10 ** (0.3 * 15.5)
    v = np.log10(lo + rng.uniform(0, 1, n_faint) * (hi - lo)) / 0.3
    r = radius * np.sqrt(rng.uniform(0, 1, n_faint))
    th = rng.uniform(0, 2 * np.pi, n_faint)
    bv = np.clip(rng.normal(0.8, 0.3, n_faint), -0.1, 1.8)
    stars = {
        "id": list(cat["id"]) + [f"SYN-{i + 1:04d}" for i in range(n_faint)],
        "real": [True] * len(cat) + [False] * n_faint,
        "ra": np.r_[np.asarray(cat["ra"], float), ra0 + r * np.sin(th) / c0],
        "dec": np.r_[np.asarray(cat["dec"], float), dec0 + r * np.cos(th)],
        "mag": {"V": np.r_[np.asarray(cat["V"], float), v],
                "B": np.r_[np.asarray(cat["B"], float), v + bv],
                "R": np.r_[np.asarray(cat["R"], float), v - 0.56 * bv]},
    }
    stars["mag"] = {f: np.round(m, 3) for f, m in stars["mag"].items() if f in zero_points}
    stars["rate"] = {f: sim.magnitude_to_rate(m, zero_points[f]) for f, m in stars["mag"].items()}
    return stars


def _pick_transit_star(stars: dict, wcs: WCS, shape, fwhm_px: float, filt: str) -> int:
    """Index of the real star nearest the centre with V (or the series filter) 9.4-10.4 and
    no star brighter than 4 mag fainter within 8 FWHM (relaxed once if none qualifies)."""
    x, y = wcs.all_world2pix(stars["ra"], stars["dec"], 0)
    ny, nx = shape
    mag = stars["mag"][filt]
    real = np.asarray(stars["real"])
    for (m_lo, m_hi), iso in (((9.4, 10.4), 8.0), ((9.0, 11.8), 4.0)):
        best, best_d = -1, np.inf
        for i in np.flatnonzero(real & (mag >= m_lo) & (mag <= m_hi)):
            if not (0.2 * nx < x[i] < 0.8 * nx and 0.2 * ny < y[i] < 0.8 * ny):
                continue
            sep = np.hypot(x - x[i], y - y[i])
            crowd = (sep < iso * fwhm_px) & (mag < mag[i] + 4.0)
            crowd[i] = False
            dist = math.hypot(x[i] - nx / 2, y[i] - ny / 2)
            if not crowd.any() and dist < best_d:
                best, best_d = int(i), dist
        if best >= 0:
            return best
    raise ValueError("no isolated real star of magnitude 9-11.8 in the central part of the field "
                     "to carry the transit; use a larger field or transit_depth=0")


def simulate_night(dest, seed: int = 0, *, shape: tuple[int, int] = (512, 512),
                   pixel_scale: float = 6.0, n_bias: int = 10, n_dark: int = 5,
                   dark_exptimes: Sequence[float] = (60.0, 120.0), n_flat: int = 5,
                   n_science: Mapping[str, int] | None = None,
                   exptimes: Mapping[str, float] | None = None,
                   flat_exptimes: Mapping[str, float] | None = None,
                   date: str = "2024-02-09", target: str = "M67",
                   transit_depth: float = 0.012, transit_duration: float = 1.8,
                   transit_offset: float = 0.1, transit_impact: float = 0.3,
                   faint_stars: int = 300, dither: float = 20.0,
                   drift: tuple[float, float] = (30.0, -15.0),
                   rotation: tuple[float, float] = (0.5, 0.15),
                   camera: Camera | None = None, site: Site | None = None,
                   compress: bool = True, overwrite: bool = False,
                   workers: int | None = None) -> SimulatedNight:
    """Write a realistic raw night of M67 with known truth.

    Frames go to ``dest/uncal_data/YYMMDD/`` (``YYMMDD`` from ``date``, the local date at
    dusk), the truth to ``dest/truth.json`` and the camera's per-pixel bias, dark current
    and flat responses to ``dest/truth_maps.fits`` (:data:`TRUTH_MAPS`). The night:
    ``n_bias`` bias frames; ``n_dark``
    darks at each of ``dark_exptimes``; ``n_flat`` dome flats per filter; science frames of
    the real star field around M67 (:func:`load_catalogue`, plus ``faint_stars`` synthetic
    stars fainter than V = 11.5 flagged ``real: false`` in the truth), half of each other
    filter's frames before and half after a time series in the filter with the most frames,
    centred on the field's meridian passage. One isolated star of V ~ 10 carries a transit.

    The frames carry what a camera writes (``IMAGETYP``, ``FILTER``, ``EXPTIME``,
    ``DATE-OBS`` in UTC, ``OBJECT``, ``GAIN``, ``RON``, ``RA``/``DEC`` of the mount,
    ``SITELAT``/``SITELONG``, ``XPIXSZ``/``FOCALLEN``), uint16 pixels stored with
    ``BZERO=32768``, and no WCS. Each science frame has its own pointing error, dither,
    tracking drift, field rotation, seeing (Moffat PSF), sky level and gradient,
    transparency, extinction, scintillation, cosmic rays, saturation with column bleeding,
    bias drift, dark current with hot pixels and amplifier glow, and flat-field response
    (vignetting, dust donuts, PRNU); all of it is recorded in ``truth.json`` (see
    :func:`load_truth`, :func:`truth_wcs`, :func:`frame_truth_stars`).

    Parameters
    ----------
    dest : str or pathlib.Path
        Project folder (created).
    seed : int
        Seed of every random choice: the same seed gives byte-identical files.
    shape : tuple of int
        ``(ny, nx)`` of the frames.
    pixel_scale : float
        arcsec/px. The default field (512 x 6" = 51') plate-solves with the Debian
        Tycho-2 index files in about a second; fields narrower than about 45' do not
        (the finest of those files, 4108, holds quads of 30' to 42').
    n_bias, n_dark, n_flat : int
        Bias frames; darks per exposure time; flats per filter.
    dark_exptimes : sequence of float
        Dark exposure times (s).
    n_science : dict, optional
        Science frames per filter, default ``{'B': 10, 'V': 70, 'R': 10}`` (filters among
        the camera's zero points: B, V, R).
    exptimes : dict, optional
        Science exposure times (s) per filter, default ``{'B': 120, 'V': 120, 'R': 60}``.
    flat_exptimes : dict, optional
        Flat exposure times (s), default ``{'B': 10, 'V': 4, 'R': 3}``; flats are taken in
        every filter of ``n_science``.
    date : str
        Local date at dusk, ``YYYY-MM-DD``.
    target : str
        ``OBJECT`` of the science frames.
    transit_depth : float
        Fractional depth of the injected transit (0 for none).
    transit_duration : float
        First-to-fourth-contact duration (hours).
    transit_offset : float
        Mid-transit minus the middle of the time series (hours).
    transit_impact : float
        Impact parameter (stellar radii).
    faint_stars : int
        Synthetic stars (V 11.5-15.5) added below the Tycho-2 limit.
    dither : float
        Half-width (arcsec) of the uniform random dither of each science frame.
    drift : tuple of float
        Tracking drift (arcsec per hour, east and north).
    rotation : tuple of float
        Field rotation of the first science frame (deg) and its rate (deg per hour).
    camera : Camera, optional
        Telescope and detector (default :class:`Camera`).
    site : Site, optional
        Observatory and sky (default :class:`Site`).
    compress : bool
        Write ``.fit.gz`` (gzip) instead of ``.fit``.
    overwrite : bool
        Replace a night this function wrote before in the same place.
    workers : int, optional
        Threads writing frames (default: the number of cores, at most 4).

    Returns
    -------
    SimulatedNight

    Raises
    ------
    ValueError
        Bad counts, shapes, filters or transit parameters.
    FileExistsError
        The night folder holds FITS files and ``overwrite`` is False, or files this
        function did not write.
    """
    t_begin = time.perf_counter()
    camera, site = camera or Camera(), site or Site()
    n_science = dict(n_science if n_science is not None else {"B": 10, "V": 70, "R": 10})
    exptimes = {"B": 120.0, "V": 120.0, "R": 60.0, **(exptimes or {})}
    flat_exptimes = {"B": 10.0, "V": 4.0, "R": 3.0, **(flat_exptimes or {})}
    shape = (int(shape[0]), int(shape[1]))
    params = {"shape": list(shape), "pixel_scale": pixel_scale, "n_bias": n_bias,
              "n_dark": n_dark, "dark_exptimes": list(dark_exptimes), "n_flat": n_flat,
              "n_science": n_science, "exptimes": exptimes, "flat_exptimes": flat_exptimes,
              "date": date, "target": target, "faint_stars": faint_stars, "dither": dither,
              "drift": list(drift), "rotation": list(rotation), "compress": compress,
              "transit": {"depth": transit_depth, "duration_h": transit_duration,
                          "offset_h": transit_offset, "impact": transit_impact}}
    _check_night_args(params, camera, site, transit_depth, transit_impact)
    root = Path(dest)
    night_dir = root / "uncal_data" / Time(f"{date}T12:00:00").strftime("%y%m%d")
    truth_path = root / "truth.json"
    _clear_previous(night_dir, truth_path, overwrite)
    night_dir.mkdir(parents=True, exist_ok=True)

    # stars out to the frame corners plus the drift of the night
    radius = (math.hypot(*shape) / 2 * pixel_scale + (abs(drift[0]) + abs(drift[1])) * 4) / 3600.0
    stars = _field_stars(load_catalogue(), M67_CENTRE, radius + 0.08, faint_stars,
                         np.random.default_rng([seed, 3]), camera.zero_points)
    specs, s_start, s_end, series_filter = _schedule(params, camera, site,
                                                     ".fit.gz" if compress else ".fit")
    transit = None
    if transit_depth > 0 and s_end > s_start:
        fwhm0 = math.hypot(camera.optics_fwhm, site.seeing) / pixel_scale
        idx = _pick_transit_star(stars, sim.tan_wcs(shape, *M67_CENTRE, pixel_scale, rotation[0]),
                                 shape, fwhm0, series_filter)
        t0 = s_start + (s_end - s_start) / 2 + TimeDelta(transit_offset * 3600, format="sec")
        transit = {"index": idx, "star_id": stars["id"][idx], "ra": float(stars["ra"][idx]),
                   "dec": float(stars["dec"][idx]), "depth": transit_depth, "t0_jd": t0.jd,
                   "t0_utc": t0.isot, "duration_h": transit_duration,
                   "impact_parameter": transit_impact, "radius_ratio": math.sqrt(transit_depth),
                   "filter": series_filter,
                   "model": "uniform disc (Mandel & Agol 2002 eq. 1), at mid-exposure"}
    night = _Night(seed=seed, shape=shape, pixel_scale=pixel_scale, camera=camera, site=site,
                   target=target, centre=M67_CENTRE, stars=stars, dither=dither, drift=drift,
                   rotation=rotation, series_start=s_start, series_end=s_end, transit=transit,
                   flat_level=25000.0 * camera.gain)

    def make(spec: _Spec):
        data, header, info = night.frame(spec)
        _write_atomic(night_dir / spec.name, _fits_bytes(data, header, compress))
        return spec, info

    with ThreadPoolExecutor(max_workers=workers or min(os.cpu_count() or 1, 4)) as pool:
        done = list(pool.map(make, specs))
    truth = _truth(night, done, seed, date, night_dir, series_filter, params)
    _write_atomic(root / TRUTH_MAPS, _truth_maps_bytes(night, sorted(n for n, k in
                                                                     n_science.items() if k)))
    _write_atomic(truth_path, (json.dumps(truth, indent=1, sort_keys=True) + "\n").encode())
    files: dict[str, list[Path]] = {"bias": [], "dark": [], "flat": [], "object": []}
    for spec, _ in done:
        files[spec.kind].append(night_dir / spec.name)
    seconds = time.perf_counter() - t_begin
    log.info("simulate_night: %d frames written to %s in %.1f s (seed %d)", len(specs),
             night_dir, seconds, seed)
    return SimulatedNight(root, night_dir, night_dir.name, target, truth_path, files, seconds)


def _schedule(params: dict, camera: Camera, site: Site,
              suffix: str) -> tuple[list[_Spec], Time, Time, str]:
    """Frames in time order, the start and end of the time series and its filter. The
    series is centred on the field's meridian passage; calibrations come before."""
    n_science = {f: n for f, n in params["n_science"].items() if n > 0}
    exptimes, readout = params["exptimes"], camera.readout_time
    series = max(n_science, key=lambda f: n_science[f]) if n_science else "V"
    t_mid = _meridian_time(params["date"], M67_CENTRE[0], site.longitude)
    length = n_science.get(series, 0) * (exptimes[series] + readout)
    before = sum((n // 2) * (exptimes[f] + readout) for f, n in n_science.items() if f != series)
    sci_start = t_mid - TimeDelta(length / 2 + before, format="sec")
    sci_start = Time(round(sci_start.jd * 86400) / 86400, format="jd", scale="utc")  # whole s
    specs, s_start, s_end = _plan(
        sci_start - TimeDelta(3 * 3600, format="sec"), sci_start, params["n_bias"],
        params["n_dark"], params["dark_exptimes"], params["n_flat"],
        {f: params["flat_exptimes"][f] for f in n_science}, n_science, exptimes, series,
        params["target"], readout, suffix)
    return specs, s_start, s_end, series


def _check_night_args(params: dict, camera: Camera, site: Site, depth: float,
                      impact: float) -> None:
    shape, n_science = params["shape"], params["n_science"]
    if min(shape) < 64:
        raise ValueError(f"shape {tuple(shape)}: frames must be at least 64 x 64 pixels")
    if params["pixel_scale"] <= 0:
        raise ValueError(f"pixel_scale must be > 0 arcsec/px, got {params['pixel_scale']}")
    counts = [(k, params[k]) for k in ("n_bias", "n_dark", "n_flat")] + list(n_science.items())
    for name, n in counts:
        if int(n) != n or n < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {n!r}")
    unknown = [f for f in n_science if f not in camera.zero_points or f not in site.extinction
               or f not in site.sky_brightness]
    if unknown:
        raise ValueError(f"filters {unknown} unknown; the catalogue and camera model know "
                         f"{sorted(camera.zero_points)}")
    if any(e <= 0 for e in params["dark_exptimes"]):
        raise ValueError(f"dark_exptimes must be > 0 s, got {params['dark_exptimes']}")
    missing = [f for f in n_science
               if f not in params["exptimes"] or f not in params["flat_exptimes"]]
    if missing:
        raise ValueError(f"no exposure time for filters {missing}")
    if not 0 <= depth < 0.25:
        raise ValueError(f"transit_depth must be in [0, 0.25), got {depth}")
    if depth and not 0 <= impact < 1 - math.sqrt(depth):
        raise ValueError(f"transit_impact must be in [0, 1 - sqrt(depth)), got {impact}")
    if camera.psf not in sim.PSF_MODELS:
        raise ValueError(f"camera psf {camera.psf!r} unknown; use one of {sim.PSF_MODELS}")
    fov = min(shape) * params["pixel_scale"] / 60.0
    if fov < 45.0:
        log.warning("simulated field is %.0f' wide: the Tycho-2 index files (quads of 30' and "
                    "more) may not plate-solve it; 45' or more solves", fov)
    reach = math.hypot(*shape) / 2 * params["pixel_scale"] / 3600.0
    if reach > load_catalogue().meta.get("radius_deg", 1.0):
        log.warning("simulated frames reach %.2f deg from M67, beyond the shipped catalogue: "
                    "their corners have no real stars", reach)


def _clear_previous(night_dir: Path, truth_path: Path, overwrite: bool) -> None:
    """Refuse to mix nights; with ``overwrite``, remove the frames a previous simulation
    listed in its truth.json, and nothing else."""
    existing = find_fits(night_dir)
    if not existing:
        return
    if not overwrite:
        raise FileExistsError(f"{night_dir}: already holds {len(existing)} FITS files; pass "
                              "overwrite=True to replace a simulated night, or choose another dest")
    ours = set()
    if truth_path.exists():
        ours = {night_dir / n for n in json.loads(truth_path.read_text()).get("frames", {})}
    foreign = [p for p in existing if Path(p) not in ours]
    if foreign:
        raise FileExistsError(f"{night_dir}: holds {len(foreign)} FITS files that simulate_night "
                              f"did not write (e.g. {Path(foreign[0]).name}); choose another dest")
    for p in ours:
        p.unlink(missing_ok=True)


def _truth(night: _Night, done, seed, date, night_dir: Path, series_filter, params) -> dict:
    cam, site = night.camera, night.site
    st = night.stars
    counts: dict[str, int] = {}
    frames = {}
    for spec, info in done:
        key = {"bias": "bias", "dark": f"dark/{spec.exptime:g}", "flat": f"flat/{spec.filter}",
               "object": f"object/{spec.filter}"}[spec.kind]
        counts[key] = counts.get(key, 0) + 1
        frames[spec.name] = info
    transit = None
    if night.transit is not None:
        transit = {k: v for k, v in night.transit.items()}
        transit["t0_jd"] = _r(transit["t0_jd"], 8)
    from astrodart import __version__
    return {
        "generator": "astrodart.datasets.samples.simulate_night", "astrodart_version": __version__,
        "seed": seed, "parameters": params, "night": night_dir.name, "date": date,
        "target": night.target, "pointing_radec": list(night.centre),
        "series_filter": series_filter,
        "counts": counts,
        "conventions": {"pixels": "0-based (x, y), centre of the first pixel at (0, 0); FITS = +1",
                        "wcs": "FITS keywords with 1-based CRPIX",
                        "times": "UTC; jd_mid_utc at mid-exposure",
                        "flux": "e- per exposure at the detector, before the flat-field response"},
        "camera": {**_plain(asdict(cam)),
                   "shape": list(night.shape), "pixel_scale_arcsec": night.scale,
                   "bias_level_adu": cam.bias_level,
                   "bias_columns_adu": _r(night.bias.mean(axis=0) - cam.bias_level, 3),
                   "saturation_adu": int(min(65535, cam.full_well // cam.gain + cam.bias_level)),
                   "dark_current_median_e_per_s": _r(float(np.median(night.dark)), 5),
                   "dark_current_mean_e_per_s": _r(float(np.mean(night.dark)), 5),
                   "hot_pixels_xy_rate": [[int(x), int(y), _r(night.dark[y, x], 3)]
                                          for y, x in zip(night.hot_y, night.hot_x)],
                   "optical_centre_xy": _r(night.optical_centre, 3),
                   "donuts": {f: [_r([d.x, d.y, d.radius, d.depth], 4) for d in ds] for f, ds
                              in {"window": night.window_donuts, **night.filter_donuts}.items()},
                   "flat_illumination_e": night.flat_level},
        "site": _plain(asdict(site)),
        "stars": {"id": st["id"], "real": st["real"], "ra": _r(st["ra"], 8),
                  "dec": _r(st["dec"], 8),
                  "mag": {f: _r(m, 3) for f, m in st["mag"].items()},
                  "rate_e_per_s": {f: _r(r, 4) for f, r in st["rate"].items()},
                  "source": "real: Tycho-2 via astrodart/data/m67_tycho2.ecsv; SYN-*: synthetic"},
        "transit": transit,
        "frames": frames,
        "maps": {"file": TRUTH_MAPS,
                 "BIAS": "bias structure (ADU, float32) without the per-frame bias_offset_adu",
                 "DARK": "dark current (e-/s per pixel, float32), hot pixels and glow included",
                 "FLAT_<filter>": "flat-field response (float32, mean 1) of each filter"},
    }


def _truth_maps_bytes(night: _Night, filters: Sequence[str]) -> bytes:
    """The camera's per-pixel truth (bias, dark current, flat responses) as a FITS file."""
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(night.bias.astype(np.float32), name="BIAS"),
            fits.ImageHDU(night.dark.astype(np.float32), name="DARK")]
    hdus += [fits.ImageHDU(night.flat[f].astype(np.float32), name=f"FLAT_{f}") for f in filters]
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf, output_verify="exception")
    return buf.getvalue()


# =======================================================================================
# Reading the truth
# =======================================================================================
def load_truth(path) -> dict:
    """Read the truth of a simulated night.

    Parameters
    ----------
    path : str or pathlib.Path
        ``truth.json`` or the ``dest`` folder holding it.

    Returns
    -------
    dict
        See :func:`simulate_night`; ``frames`` is keyed by file name.

    Raises
    ------
    FileNotFoundError
        No truth file there.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "truth.json"
    if not p.exists():
        raise FileNotFoundError(f"{p}: no truth.json (made by astrodart.datasets.samples.simulate_night)")
    return json.loads(p.read_text())


def _frame_entry(truth: dict, frame) -> dict:
    name = Path(frame).name
    try:
        entry = truth["frames"][name]
    except KeyError:
        raise KeyError(f"{name}: not a frame of this simulated night") from None
    if "wcs" not in entry:
        raise KeyError(f"{name}: a {entry['type']} frame has no sky and no WCS")
    return entry


def truth_wcs(truth: dict, frame) -> WCS:
    """The true WCS of a science frame.

    Parameters
    ----------
    truth : dict
        From :func:`load_truth`.
    frame : str or pathlib.Path
        The frame's path or file name (any step prefix is not understood: use the raw name).

    Returns
    -------
    astropy.wcs.WCS

    Raises
    ------
    KeyError
        Unknown frame, or a calibration frame.
    """
    return WCS(fits.Header(_frame_entry(truth, frame)["wcs"]))


def frame_truth_stars(truth: dict, frame, margin: float = 0.0) -> Table:
    """The stars of a science frame with their true positions and fluxes.

    Parameters
    ----------
    truth : dict
        From :func:`load_truth`.
    frame : str or pathlib.Path
        The frame's path or file name.
    margin : float
        Keep stars up to this many pixels outside the frame (a negative margin keeps only
        stars at least that far inside it).

    Returns
    -------
    astropy.table.Table
        ``id``, ``real``, ``x``, ``y`` (0-based pixels), ``mag`` (in the frame's filter) and
        ``flux`` (expected electrons at the detector before the flat-field response: the
        catalogue rate x exposure x atmospheric transmission, x the transit factor for the
        transit star; scintillation, a few 0.1 %, is noise and not included), brightest
        first.
    """
    entry = _frame_entry(truth, frame)
    f = entry["filter"]
    st = truth["stars"]
    x, y = truth_wcs(truth, frame).all_world2pix(np.asarray(st["ra"]), np.asarray(st["dec"]), 0)
    flux = np.asarray(st["rate_e_per_s"][f]) * entry["exptime"] * entry["atmospheric_transmission"]
    if truth.get("transit"):
        i = st["id"].index(truth["transit"]["star_id"])
        flux[i] *= entry["transit_factor"]
    ny, nx = truth["camera"]["shape"]
    lo = -0.5 - margin
    keep = (x > lo) & (x < nx - 1 - lo) & (y > lo) & (y < ny - 1 - lo)
    t = Table({"id": np.asarray(st["id"])[keep], "real": np.asarray(st["real"])[keep], "x": x[keep],
               "y": y[keep], "mag": np.asarray(st["mag"][f])[keep], "flux": flux[keep]})
    t.sort("flux", reverse=True)
    return t


# =======================================================================================
# Real if possible, simulated otherwise
# =======================================================================================
@dataclass
class NightChoice:
    """The night :func:`get_night` laid out.

    Attributes
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
