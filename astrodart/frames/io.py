"""Layer 1: reading and writing FITS frames.

Every FITS flavour found on amateur and teaching-lab nights is read here into
:class:`astropy.nddata.CCDData` with a unit: ``.fit/.fits/.fts`` in any case,
gzip-compressed ``.gz``, pixels in the primary HDU or in the first image
extension, unsigned 16-bit data stored with ``BZERO=32768``.

All writes are atomic: the frame is written to a hidden temporary file in the
destination folder and renamed over the final name, so an interrupted run
never leaves a half-written FITS behind (``os.replace`` is atomic on POSIX and
Windows when source and destination share a file system).
"""
from __future__ import annotations

import errno
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
from astropy import units as u
from astropy.io import fits
if TYPE_CHECKING:  # astropy.nddata (with scipy, ~0.3 s) loads on a frame's first read/write
    from astropy.nddata import CCDData

from astrodart.exceptions import recorded
from astrodart.frames.planes import plane_hdu
from astrodart.frames.checks import (
    MAX_NONFINITE_FRACTION,
    FrameError,
    NonFinitePixelsWarning,
    check_2d,
    check_pixels,
    mask_saturated,
    raw_saturation,
)

#: Header card counting the raw pixels at saturation that :func:`read_frame` masked.
KW_SATURATED = "ADNSATUR"

__all__ = [
    "FITS_SUFFIXES",
    "FrameError",
    "KW_SATURATED",
    "NonFinitePixelsWarning",
    "MAX_NONFINITE_FRACTION",
    "is_fits_path",
    "find_fits",
    "image_hdu_index",
    "read_header",
    "read_frame",
    "write_frame",
    "write_hdulist",
    "atomic_output",
    "atomic_path",
    "remove_stale_temporaries",
    "is_complete_fits",
    "strip_fits_suffix",
    "unique_stems",
]

#: Extensions recognised as FITS images (case-insensitive, optionally ``.gz``, ``.bz2`` or ``.fz``).
FITS_SUFFIXES = (".fit", ".fits", ".fts")

_FITS_RE = re.compile(r"\.(fit|fits|fts)(\.gz|\.bz2|\.fz)?$|\.fz$", re.IGNORECASE)
_TMP_PREFIX = ".astrodart-tmp-"


def is_fits_path(path) -> bool:
    """Whether ``path`` names a FITS image and is not an astrodart temporary file.

    Parameters
    ----------
    path : str or pathlib.Path
        A file path; the extension ``.fit``, ``.fits`` or ``.fts`` (any case, optionally
        followed by ``.gz``, ``.bz2`` or fpack's ``.fz``), or a bare ``.fz``, counts.

    Returns
    -------
    bool
        True for a FITS image name.
    """
    name = Path(path).name
    return bool(_FITS_RE.search(name)) and not name.startswith(_TMP_PREFIX)


def strip_fits_suffix(name: str) -> str:
    """Return ``name`` without its FITS (and ``.gz``) extension.

    Parameters
    ----------
    name : str
        A file name, e.g. ``'a.FIT.gz'``.

    Returns
    -------
    str
        The name without the extension (``'a'``).
    """
    return _FITS_RE.sub("", name)


def unique_stems(paths) -> dict[str, str]:
    """Output stems of input frames, unique by construction.

    Two inputs that share a name (``night1/frame.fits.gz`` and ``night2/frame.fits.gz``,
    or ``a.fits`` and ``a.fits.gz``) would otherwise write one output over the other.
    Those, and only those, get a stable suffix: six hex digits of a hash of their full
    path, so that a re-run names them the same way.

    Parameters
    ----------
    paths : iterable of str or pathlib.Path
        The input files of one step run.

    Returns
    -------
    dict
        ``{str(path): stem}``; the stem is :func:`strip_fits_suffix` of the name, plus
        ``'_' + hash`` where names collide.
    """
    import hashlib

    stems = {str(p): strip_fits_suffix(Path(p).name) for p in paths}
    owners: dict[str, set] = {}
    for p, stem in stems.items():
        owners.setdefault(stem, set()).add(os.path.abspath(p))
    for p, stem in stems.items():
        if len(owners[stem]) > 1:
            digest = hashlib.sha1(os.path.abspath(p).encode()).hexdigest()[:6]
            stems[p] = f"{stem}_{digest}"
    return stems


def find_fits(directory, recursive: bool = False) -> list[str]:
    """List the FITS files in ``directory``, sorted by name.

    Parameters
    ----------
    directory : str or pathlib.Path
        Folder to look in (a trailing slash is fine).
    recursive : bool
        Also look in sub-folders.

    Returns
    -------
    list of str
        Sorted absolute-or-as-given paths of every FITS file (see :func:`is_fits_path`).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    it = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(str(p) for p in it if p.is_file() and is_fits_path(p))


def image_hdu_index(hdul: fits.HDUList, path="<memory>") -> int:
    """Index of the first HDU holding a 2-D (or higher) image.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        The open file.
    path : str or pathlib.Path, optional
        Named in the error.

    Returns
    -------
    int
        The HDU index (0 for the primary HDU).

    Raises
    ------
    FrameError
        If no HDU holds image data.
    """
    for i, hdu in enumerate(hdul):
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            naxis = hdu.header.get("NAXIS", 0)
            axes = [hdu.header.get(f"NAXIS{k}", 0) for k in range(1, naxis + 1)]
            if naxis >= 2 and all(n > 0 for n in axes):
                return i
    tables = [h.name or str(i) for i, h in enumerate(hdul)
              if isinstance(h, (fits.BinTableHDU, fits.TableHDU))]
    what = f" (only table HDUs: {', '.join(tables)})" if tables else ""
    raise FrameError(path, "no image data in any HDU (empty primary HDU and no image "
                           f"extension){what}")


def _open(path, **kwargs) -> fits.HDUList:
    path = Path(path)
    if not path.exists():
        raise FrameError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise FrameError(path, "file is empty (0 bytes)")
    try:
        return fits.open(path, **kwargs)
    except Exception as exc:  # astropy raises OSError, ValueError, EOFError... on bad files
        raise FrameError(path, f"not a readable FITS file ({type(exc).__name__}: {exc})") from exc


def read_header(path) -> fits.Header:
    """Read the header of the image HDU of ``path`` (primary, or first image extension).

    When the image sits in an extension, the primary header's cards that the
    extension lacks (e.g. ``DATE-OBS`` written only in the primary) are merged in.

    Parameters
    ----------
    path : str or pathlib.Path
        A FITS file (plain or gzip).

    Returns
    -------
    astropy.io.fits.Header
        A copy of the image header.

    Raises
    ------
    FrameError
        Missing, empty, truncated, unreadable or image-less file.
    """
    with recorded() as caught:  # thread-safe: a neighbour's warning is never ours
        hdul = _open(path)
    truncated = [w for w in caught if "truncated" in str(w.message)]
    if truncated:
        hdul.close()
        raise FrameError(path, f"file is truncated ({truncated[0].message})")
    with hdul:
        try:
            idx = image_hdu_index(hdul, path)
            header = hdul[idx].header.copy()
            check_2d(header, idx, path)
            if idx > 0:
                for card in hdul[0].header.cards:
                    if card.keyword and card.keyword not in header and card.keyword not in (
                        "SIMPLE", "EXTEND", "NAXIS", "BITPIX"
                    ):
                        header.append(card)
        except FrameError:
            raise
        except Exception as exc:
            raise FrameError(path, f"unreadable header ({type(exc).__name__}: {exc})") from exc
    return header


_UNIT_ALIASES = {
    "adu": u.adu, "adus": u.adu, "count": u.adu, "counts": u.adu, "dn": u.adu,
    "electron": u.electron, "electrons": u.electron, "e-": u.electron, "e": u.electron,
}


def _unit_from_header(header, default) -> u.UnitBase:
    bunit = str(header.get("BUNIT", "") or "").strip()
    if not bunit:
        return u.Unit(default)
    if bunit.lower() in _UNIT_ALIASES:
        return _UNIT_ALIASES[bunit.lower()]
    try:
        return u.Unit(bunit)
    except ValueError:
        return u.Unit(default)


def read_frame(path, unit=None, dtype=np.float32, default_unit="adu", *,
               uncertainty: bool = True) -> CCDData:
    """Read one frame into a :class:`~astropy.nddata.CCDData`.

    Parameters
    ----------
    path : str or pathlib.Path
        FITS file (any extension of :data:`FITS_SUFFIXES`, optionally gzipped).
    unit : str or astropy.units.Unit, optional
        Force this unit. By default the ``BUNIT`` keyword is used (``'adu'``,
        ``'electron'`` and common spellings), else ``default_unit``.
    dtype : numpy dtype
        Working precision of the pixel array (float32 by default; raw integer data
        with ``BZERO`` are scaled to their true values first).
    default_unit : str
        Unit used when the header has no usable ``BUNIT``.
    uncertainty : bool
        Read the ``UNCERT`` plane (False: leave it; its decompression is most of the read
        of a calibrated frame, for work that needs only the pixels and the mask).

    Returns
    -------
    CCDData
        2-D data of shape ``(NAXIS2, NAXIS1)``; ``meta`` is the image header; an
        ``UNCERT`` extension (standard deviation) and a ``MASK`` extension, as
        written by :func:`write_frame`, are read back as ``uncertainty`` and ``mask``.

    Raises
    ------
    FrameError
        Missing, empty, truncated or non-FITS file, or no image data.
    """
    from astropy.nddata import CCDData, StdDevUncertainty  # lazy: header work need not pay it
    # plain files are memory-mapped and copied once into ``dtype`` (about half the CPU
    # of reading into a buffer and converting it); gzip files and scaled integer data
    # (BZERO/BSCALE/BLANK) cannot be mapped
    hdul = _open(path, memmap=not str(path).lower().endswith((".gz", ".bz2")))
    if any(k in h.header for h in hdul for k in ("BZERO", "BSCALE", "BLANK")):
        hdul.close()
        hdul = _open(path, memmap=False)
    with hdul:
        idx = image_hdu_index(hdul, path)
        check_2d(hdul[idx].header, idx, path)
        level = raw_saturation(hdul[idx].header)  # before the data scale the header
        may_hold_nan = level is None or "BLANK" in hdul[idx].header  # float, or BLANK ints
        want_unc, uncertainty, mask = uncertainty, None, None
        try:
            data = np.array(hdul[idx].data, dtype=dtype)
            names = [h.name for h in hdul]
            if want_unc and "UNCERT" in names:
                uncertainty = StdDevUncertainty(np.array(hdul["UNCERT"].data, dtype=dtype))
            if "MASK" in names:
                mask = np.array(hdul["MASK"].data).astype(bool)
        except Exception as exc:  # truncated files fail here
            raise FrameError(path, f"pixel data unreadable or truncated ({type(exc).__name__}: {exc})") from exc
        header = hdul[idx].header.copy()
    if idx > 0:
        header = read_header(path)
    for key in ("BZERO", "BSCALE"):
        header.remove(key, ignore_missing=True)
    data = data.reshape(data.shape[-2:])  # singleton axes of a 1-plane cube
    if may_hold_nan:
        check_pixels(data, path)
    if mask is not None and mask.shape != data.shape:
        mask = mask.reshape(data.shape)
    if uncertainty is not None and uncertainty.array.shape != data.shape:
        uncertainty = StdDevUncertainty(uncertainty.array.reshape(data.shape))
    mask, nsat = mask_saturated(data, mask, level)
    if nsat:
        header[KW_SATURATED] = (nsat, "raw pixels at saturation, masked at read")
    the_unit = u.Unit(unit) if unit is not None else _unit_from_header(header, default_unit)
    return CCDData(data, unit=the_unit, meta=header, uncertainty=uncertainty, mask=mask)


def atomic_path(path) -> Path:
    """A hidden temporary path in the same folder as ``path``, with the same suffix.

    Parameters
    ----------
    path : str or pathlib.Path
        The final path (keeping its suffix, astropy still gzips a ``.gz`` name).

    Returns
    -------
    pathlib.Path
        ``.astrodart-tmp-<pid>-<random>-<name>`` beside ``path``.
    """
    path = Path(path)
    return path.with_name(f"{_TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")


@contextmanager
def atomic_output(path, overwrite: bool = True, fsync: bool = True):
    """Write a file atomically: yield a temporary path beside ``path``, then rename it.

    Whatever is written to the yielded path replaces ``path`` in one ``os.replace`` once the
    ``with`` block ends without an error (after an ``fsync``), so a reader never sees half a
    file and an interrupted run leaves the old file intact; on an error the temporary file
    is removed. Folders are created.

    Parameters
    ----------
    path : str or pathlib.Path
        Final destination.
    overwrite : bool
        If False and ``path`` exists, raise before anything is written.
    fsync : bool
        Force the data to disk before the rename (without it the write is still atomic
        for readers and for a killed process, but not across a power loss).

    Yields
    ------
    pathlib.Path
        The temporary path to write to (same folder and suffix as ``path``).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; pass overwrite='yes' to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(path)
    try:
        yield tmp
        _commit(tmp, path, fsync)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(exc.errno, f"{path}: no space left on the disk while writing it "
                                     f"({exc.strerror or exc}); nothing was written there: free "
                                     "space or choose another folder") from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _commit(tmp: Path, path: Path, fsync: bool = True) -> None:
    if fsync:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_hdulist(hdul: fits.HDUList, path, overwrite: bool = False, fsync: bool = True) -> Path:
    """Write an HDU list atomically (temporary file in the same folder, then rename).

    ``fsync=False`` skips forcing the data to disk before the rename: the write is still
    atomic for readers and for a killed process, but not across a power loss (the step
    engine uses it for intermediate frames, whose completeness it checks before reuse).

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        What to write.
    path : str or pathlib.Path
        Destination (folders are created).
    overwrite : bool
        Replace an existing file.
    fsync : bool
        Force the data to disk before the rename.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    with atomic_output(path, overwrite, fsync) as tmp:
        hdul.writeto(tmp, output_verify="silentfix")
    return path


def write_frame(ccd: CCDData, path, overwrite: bool = False, dtype=np.float32,
                fsync: bool = True, compress: bool = True) -> Path:
    """Write a :class:`CCDData` atomically, with ``UNCERT`` and ``MASK`` extensions if present.

    The pixels are written lossless; the two extensions tile-compressed, or plain for an
    intermediate output (:func:`astrodart.frames.planes.plane_hdu`).

    Parameters
    ----------
    ccd : CCDData
        Frame to write; its ``meta`` becomes the primary header and its unit ``BUNIT``.
    path : str or pathlib.Path
        Destination (``.gz`` names are gzip-compressed).
    overwrite : bool
        Replace an existing file.
    dtype : numpy dtype
        Precision written for data and uncertainty (float32 by default).
    fsync : bool
        Force the data to disk before the atomic rename (see :func:`write_hdulist`).
    compress : bool
        Tile-compress the ``UNCERT`` and ``MASK`` planes.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    from astropy.nddata import StdDevUncertainty
    header = fits.Header(ccd.meta) if not isinstance(ccd.meta, fits.Header) else ccd.meta.copy()
    for key in ("BZERO", "BSCALE", "BLANK"):
        header.remove(key, ignore_missing=True)
    if ccd.wcs is not None:
        header.update(ccd.wcs.to_header(relax=True))
    header["BUNIT"] = ccd.unit.to_string() if ccd.unit is not None else "adu"
    hdus = [fits.PrimaryHDU(np.asarray(ccd.data, dtype=dtype), header=header)]
    if ccd.uncertainty is not None:
        std = ccd.uncertainty.represent_as(StdDevUncertainty) if not isinstance(
            ccd.uncertainty, StdDevUncertainty) else ccd.uncertainty
        uh = fits.Header()
        uh["UTYPE"] = ("StdDevUncertainty", "uncertainty is a standard deviation")
        uh["BUNIT"] = header["BUNIT"]
        hdus.append(plane_hdu(np.asarray(std.array, dtype=dtype), "UNCERT", uh, compress))
    if ccd.mask is not None:
        hdus.append(plane_hdu(np.asarray(ccd.mask, dtype=np.uint8), "MASK", None, compress))
    return write_hdulist(fits.HDUList(hdus), path, overwrite=overwrite, fsync=fsync)


def remove_stale_temporaries(directory, names: Iterable[str] | None = None) -> list[str]:
    """Delete astrodart temporary files left in ``directory`` by a killed process.

    Only files named with astrodart's temporary prefix whose writing process is no
    longer alive are removed; a user's file is never touched.

    Parameters
    ----------
    directory : str or pathlib.Path
        The folder to clean.
    names : iterable of str, optional
        Only temporaries of these final names (default: all).

    Returns
    -------
    list of str
        The temporary files removed.
    """
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    wanted = set(names) if names is not None else None
    for p in directory.iterdir():
        if not p.name.startswith(_TMP_PREFIX):
            continue
        rest = p.name[len(_TMP_PREFIX):]
        try:
            pid_s, _, final = rest.split("-", 2)
            pid = int(pid_s)
        except ValueError:
            continue
        if wanted is not None and final not in wanted:
            continue
        if _pid_alive(pid):  # still being written (this or another live process)
            continue
        p.unlink(missing_ok=True)
        removed.append(str(p))
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_complete_fits(path) -> bool:
    """Whether ``path`` is a readable FITS file whose every HDU is whole.

    Only the headers are read; astropy warns when a file is shorter than its headers
    announce (e.g. cut short by a power loss before the data reached the disk).

    Parameters
    ----------
    path : str or pathlib.Path
        The file.

    Returns
    -------
    bool
        False for a missing, unreadable, empty or truncated file.
    """
    from astropy.utils.exceptions import AstropyUserWarning

    try:
        with recorded() as caught, fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
            ok = len(hdul) > 0
    except Exception:
        return False
    return ok and not any(
        issubclass(w.category, AstropyUserWarning) and "truncated" in str(w.message)
        for w in caught
    )
