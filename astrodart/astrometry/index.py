"""Layer 2: astrometry.net index files, and the search hints they allow.

An index file holds catalogue quads of one range of sizes (``SCALE_L``..``SCALE_U``);
a field can only be solved with indexes whose quads fit in it. This module finds the
index files (:func:`discover_index_files`), says which ones suit a field
(:func:`usable_index_files`) and turns header hints (pixel scale, pointing) into the
search ranges the solvers take. Shapes are numpy ``(ny, nx)``.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

__all__ = [
    "INDEX_ENV",
    "SYSTEM_INDEX_DIRS",
    "IndexFile",
    "discover_index_files",
    "field_size_arcmin",
    "index_coverage",
    "usable_index_files",
]

#: Environment variable naming extra index directories (``os.pathsep``-separated).
INDEX_ENV = "ASTRODART_INDEX_DIR"
#: Where astrometry.net installations put index files.
SYSTEM_INDEX_DIRS = ("/usr/share/astrometry", "/usr/local/share/astrometry",
                     "/usr/local/astrometry/data", "/opt/homebrew/share/astrometry",
                     "/opt/local/share/astrometry")

_RAD_TO_ARCMIN = 180.0 / math.pi * 60.0


@dataclass(frozen=True)
class IndexFile:
    """One astrometry.net index file.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    index_id : int
        ``INDEXID`` (e.g. 4108).
    quad_min_arcmin, quad_max_arcmin : float
        Range of quad diameters it holds (``SCALE_L``, ``SCALE_U``), arcminutes.
    """

    path: Path
    index_id: int
    quad_min_arcmin: float
    quad_max_arcmin: float

    @property
    def name(self) -> str:
        """File name, e.g. ``'index-tycho2-08.littleendian.fits'``."""
        return self.path.name


_INDEX_CACHE: dict[tuple[str, float], IndexFile | None] = {}


def _read_index(path: Path) -> IndexFile | None:
    key = (str(path), path.stat().st_mtime)
    if key not in _INDEX_CACHE:
        try:
            h = fits.getheader(path, 0)
            lo, hi = float(h["SCALE_L"]), float(h["SCALE_U"])
            _INDEX_CACHE[key] = IndexFile(path, int(h.get("INDEXID", -1)),
                                          lo * _RAD_TO_ARCMIN, hi * _RAD_TO_ARCMIN)
        except (OSError, KeyError, ValueError, TypeError):
            _INDEX_CACHE[key] = None  # not an index file (no quad scale range)
    return _INDEX_CACHE[key]


def discover_index_files(paths: str | os.PathLike | Iterable | None = None, *,
                         use_env: bool = True, use_system: bool = True) -> list[IndexFile]:
    """Find astrometry.net index files.

    Parameters
    ----------
    paths : str, path or iterable of them, optional
        Index files or directories holding them, searched first.
    use_env : bool
        Also search the directories in the ``ASTRODART_INDEX_DIR`` environment variable.
    use_system : bool
        Also search :data:`SYSTEM_INDEX_DIRS` (Debian/Ubuntu ``astrometry-data-*``
        packages install to ``/usr/share/astrometry``).

    Returns
    -------
    list of IndexFile
        Unique files (by resolved path), smallest quads first. FITS files without a
        quad scale range (``SCALE_L``/``SCALE_U``) are ignored.
    """
    roots: list[Path] = []
    if paths is not None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        roots += [Path(p) for p in paths]
    if use_env and os.environ.get(INDEX_ENV):
        roots += [Path(p) for p in os.environ[INDEX_ENV].split(os.pathsep) if p]
    if use_system:
        roots += [Path(p) for p in SYSTEM_INDEX_DIRS]
    found: dict[Path, IndexFile] = {}
    for root in roots:
        if root.is_file():
            candidates = [root]
        elif root.is_dir():
            candidates = sorted(p for p in root.iterdir()
                                if p.is_file() and re.search(r"\.fits?$", p.name, re.IGNORECASE))
        else:
            continue
        for p in candidates:
            rp = p.resolve()
            if rp not in found:
                idx = _read_index(rp)
                if idx is not None:
                    found[rp] = idx
    return sorted(found.values(), key=lambda i: (i.quad_min_arcmin, i.name))


def index_coverage(index_files: Sequence[IndexFile]) -> str:
    """Range of quad sizes covered by index files, for messages.

    Parameters
    ----------
    index_files : sequence of IndexFile
        The index files.

    Returns
    -------
    str
        The range, e.g. ``"30'–2000'"`` for the Debian Tycho-2 files, ``"no index files"`` if empty.
    """
    if not index_files:
        return "no index files"
    lo = min(i.quad_min_arcmin for i in index_files)
    hi = max(i.quad_max_arcmin for i in index_files)
    return f"{_fmt_arcmin(lo)}–{_fmt_arcmin(hi)}"


def _fmt_arcmin(v: float) -> str:
    return f"{v:.0f}'" if v >= 10 else f"{v:.1f}'"


def field_size_arcmin(shape: tuple[int, int], pixel_scale: float) -> tuple[float, float]:
    """``(width, height)`` of a field in arcminutes.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)`` (numpy order).
    pixel_scale : float
        Arcseconds per pixel.

    Returns
    -------
    tuple of float
        Width (along x, NAXIS1) and height (along y, NAXIS2), arcminutes.
    """
    ny, nx = shape
    return nx * pixel_scale / 60.0, ny * pixel_scale / 60.0


def usable_index_files(index_files: Sequence[IndexFile], width_arcmin: float,
                       height_arcmin: float, min_quad_fraction: float = 0.1) -> list[IndexFile]:
    """Index files whose quads can be seen in a field of the given size.

    An index is usable when its smallest quads fit within the field's longer side and
    its largest quads are at least ``min_quad_fraction`` of the shorter side (the
    astrometry.net default lower limit for quad sizes).

    Parameters
    ----------
    index_files : sequence of IndexFile
    width_arcmin, height_arcmin : float
        Field size in arcminutes.
    min_quad_fraction : float
        Smallest quad tried, as a fraction of the shorter side.

    Returns
    -------
    list of IndexFile
    """
    big, small = max(width_arcmin, height_arcmin), min(width_arcmin, height_arcmin)
    return [i for i in index_files
            if i.quad_min_arcmin <= big and i.quad_max_arcmin >= min_quad_fraction * small]


# ----------------------------------------------------------------------------- hints
def _scale_range(pixel_scale, scale_tolerance, shape, index_files):
    """Pixel-scale search range (arcsec/px) and a note; the blind range is limited to
    scales at which some index quad fits in the field."""
    ny, nx = shape
    if pixel_scale:
        return (pixel_scale * (1 - scale_tolerance), pixel_scale * (1 + scale_tolerance)), ""
    lo = min(i.quad_min_arcmin for i in index_files) * 60.0 / max(nx, ny)
    hi = max(i.quad_max_arcmin for i in index_files) * 60.0 / (0.1 * min(nx, ny))
    return (max(lo, 0.1), min(hi, 1000.0)), "blind search (no pixel scale known)"


def _default_radius(shape, pixel_scale) -> float:
    """Search radius (deg) around a header pointing: twice the field diagonal, at least
    1 deg; 5 deg when the scale is unknown."""
    if not pixel_scale:
        return 5.0
    return max(1.0, 2 * math.hypot(*shape) * pixel_scale / 3600.0)


def _coverage_reason(shape, pixel_scale, index_files) -> str:
    w, h = field_size_arcmin(shape, pixel_scale)
    return (f"field {_fmt_arcmin(w)} x {_fmt_arcmin(h)} wide ({pixel_scale:.3g}\"/px); installed "
            f"index files cover {index_coverage(index_files)} (quad sizes), none fits this field: "
            "add index files for smaller/larger fields (e.g. the 4100 or 5200 series with "
            "quads of about a third of the field) or use the online backend (api_key)")

