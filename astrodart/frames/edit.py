"""Layer 1: header edits of FITS files in place, safely.

An edit rewrites the file atomically (temporary file in the same folder, then rename),
keeps its gzip compression and permissions, leaves the pixel bytes and every other card
unchanged (no rescaling of ``BZERO`` data, no "fixing" of other cards) and records every
change as a ``HISTORY`` card with the old value. The three edits of AstroDART's
``header_tools`` are functions of a header that return one :class:`KeywordChange` per
change: :func:`rename_keywords`, :func:`update_keywords`, :func:`append_keywords`.

A batch is checked before anything is written: :func:`card_problem` (what FITS allows
as keyword, value and comment) and :func:`header_file_problem` (a file that exists, is a
whole FITS file with an image and can be replaced); :func:`plan_header_edit` gives the
changes from the header alone and :func:`write_edited_header` writes the edited file to
a temporary path, which the caller renames. :func:`edit_header_in_place` does all of it
for one file, under the folder's lock (:mod:`astrodart.frames.locks`).
"""
from __future__ import annotations

import gzip
import io
import logging
import math
import numbers
import os
import re
import shutil
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from astropy.io import fits

from astrodart.exceptions import recorded
from astrodart.frames.io import FrameError, atomic_output, image_hdu_index
from astrodart.frames.locks import folder_lock

__all__ = [
    "KeywordChange",
    "HeaderEditError",
    "edit_header_in_place",
    "rewrite_fits_atomic",
    "plan_header_edit",
    "write_edited_header",
    "rename_keywords",
    "update_keywords",
    "append_keywords",
    "keyword_problems",
    "card_problem",
    "header_file_problem",
]

log = logging.getLogger("astrodart")

_KEYWORD_RE = re.compile(r"^[A-Z0-9_-]{1,8}$")
#: Keywords that describe the file's structure or the pixel scaling: editing them would
#: change how the pixels are read (or break the file).
_STRUCTURAL_RE = re.compile(
    r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|XTENSION|PCOUNT|GCOUNT|GROUPS|BZERO|BSCALE|BLANK|END)$")
_COMMENTARY = ("HISTORY", "COMMENT", "CONTINUE")
_PRINTABLE_RE = re.compile(r"^[\x20-\x7e]*$")


@dataclass(frozen=True)
class KeywordChange:
    """One change of one keyword, as recorded in HISTORY and in the run log.

    Parameters
    ----------
    key : str
        The keyword after the change.
    new : object
        Its new value.
    old : object, optional
        Its value before (None when it was absent, see ``existed``).
    existed : bool, optional
        Whether ``key`` was in the header before.
    renamed_from : str, optional
        For a rename: the keyword the value came from (now removed).
    """

    key: str
    new: Any
    old: Any = None
    existed: bool = False
    renamed_from: str | None = None

    def __str__(self) -> str:
        if self.renamed_from:
            replaced = f" (replacing {self.key}={self.old!r})" if self.existed else ""
            return f"renamed {self.renamed_from} -> {self.key} = {self.new!r}{replaced}"
        was = f"(was {self.old!r})" if self.existed else "(new)"
        return f"{self.key} = {self.new!r} {was}"

    def record(self) -> dict:
        """The change as a run-log record.

        Returns
        -------
        dict
            ``{'key', 'old', 'new'}`` plus ``'renamed_from'`` for a rename; ``old`` is
            None for a keyword that was absent.
        """
        rec = {"key": self.key, "old": self.old if self.existed else None, "new": self.new}
        if self.renamed_from:
            rec["renamed_from"] = self.renamed_from
        return rec


class HeaderEditError(ValueError, KeyError):
    """A batch header edit was refused before any file was written.

    A ``ValueError`` and, for compatibility with the first ``header_tools``, a
    ``KeyError``; the message lists every bad file with its reason.

    Parameters
    ----------
    problems : dict
        ``{file: [reason, ...]}``.
    action : str
        The edit, named in the message.
    """

    def __init__(self, problems: dict, action: str):
        self.problems = {str(f): list(r) for f, r in problems.items()}
        lines = "\n".join(f"  {f}: {'; '.join(r)}" for f, r in self.problems.items())
        super().__init__(f"{action} refused for {len(self.problems)} file(s); nothing was "
                         f"changed:\n{lines}")

    def __str__(self) -> str:
        return str(self.args[0])


# -- what FITS allows ---------------------------------------------------------------
def _keyword_problem(key) -> str | None:
    if not isinstance(key, str):
        return f"keyword {key!r} is of type {type(key).__name__}, not a string"
    k = key.strip().upper()
    if not _KEYWORD_RE.match(k):
        if not 1 <= len(k) <= 8:
            return f"keyword {key!r} has {len(k)} characters; FITS allows 1 to 8"
        return f"keyword {key!r}: FITS keywords hold only A-Z, 0-9, '-' and '_'"
    if _STRUCTURAL_RE.match(k):
        return f"keyword {k} describes the file's structure or pixel scaling and cannot be edited"
    if k in _COMMENTARY:
        return f"keyword {k} is a commentary card, not a keyword with a value"
    return None


def _value_problem(key: str, value) -> str | None:
    value, comment = value if isinstance(value, tuple) and len(value) == 2 else (value, None)
    if isinstance(value, tuple) or value is None:
        return (f"{key}: value {value!r} cannot be written; give a string, number or bool, "
                "or a (value, comment) pair")
    if isinstance(value, str):
        if not _PRINTABLE_RE.match(value):
            return f"{key}: value {value!r} holds characters FITS cannot store (printable ASCII only)"
    elif not isinstance(value, (numbers.Number, np.bool_)):
        return f"{key}: value {value!r} ({type(value).__name__}) cannot be written; give a string, number or bool"
    elif not isinstance(value, (bool, np.bool_)) and not all(
            math.isfinite(x) for x in (complex(value).real, complex(value).imag)):
        return f"{key}: value {value!r}: FITS headers cannot hold NaN or infinity"
    if comment is not None and (not isinstance(comment, str) or not _PRINTABLE_RE.match(comment)):
        return f"{key}: comment {comment!r} must be printable ASCII text"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            str(fits.Card(key, value, comment))
        except Exception as exc:  # astropy's VerifyWarning / ValueError
            return f"{key}: {value!r} with comment {comment!r} does not fit a FITS card ({exc})"
    return None


def card_problem(key, value=None, *, is_value: bool = True) -> str | None:
    """What is wrong with a keyword (and its value) for a FITS header, or None.

    Parameters
    ----------
    key : str
        The keyword (any case): 1 to 8 characters of A-Z, 0-9, '-', '_', not a structural
        keyword (``NAXIS``, ``BITPIX``, ``BZERO`` ...) nor a commentary card.
    value : object, optional
        Its value or a ``(value, comment)`` pair: a printable-ASCII string, an integer, a
        finite float or complex, or a bool.
    is_value : bool, optional
        False: ``value`` is not checked (for a rename, whose "value" is the new keyword).

    Returns
    -------
    str or None
        The problem, naming the keyword and value, or None when FITS can hold it.
    """
    problem = _keyword_problem(key)
    if problem or not is_value:
        return problem
    return _value_problem(key.strip().upper(), value)


def keyword_problems(header: fits.Header, keys, must_exist: bool) -> list[str]:
    """The keywords of ``keys`` that are missing (``must_exist``) or already present.

    Parameters
    ----------
    header : astropy.io.fits.Header
        The header to check.
    keys : iterable of str
        Keywords (any case).
    must_exist : bool
        Report the missing ones (True) or the present ones (False).

    Returns
    -------
    list of str
        The offending keywords, as given.
    """
    return [k for k in keys if (k.upper() in header) != must_exist]


# -- whether a file can be edited ---------------------------------------------------
def _file_length_problem(path: Path) -> str | None:
    source, length = path, path.stat().st_size
    if path.name.lower().endswith(".gz"):
        try:  # decompressed once, to the end: a cut stream or a wrong CRC shows here
            with gzip.open(path, "rb") as fh:
                source = io.BytesIO(fh.read())
        except (OSError, EOFError, zlib.error) as exc:
            return f"corrupt or truncated gzip file ({type(exc).__name__}: {exc})"
        length = len(source.getbuffer())
    with recorded() as caught:  # thread-safe: a neighbour's warning is never ours
        try:
            with fits.open(source, memmap=False, lazy_load_hdus=False) as hdul:
                idx = image_hdu_index(hdul, path)
                if isinstance(hdul[idx], fits.CompImageHDU):
                    return "tile-compressed image: an edit would recompress it (funpack it first)"
                # a tile-compressed extension (UNCERT, MASK) is on disk as its table's span
                needed = max(hdul.fileinfo(i)["datLoc"] + (hdul.fileinfo(i)["datSpan"] if
                             isinstance(hdu, fits.CompImageHDU) else hdu.size)
                             for i, hdu in enumerate(hdul))
        except FrameError as exc:
            return exc.problem
        except Exception as exc:  # astropy raises OSError, ValueError, EOFError...
            return f"not a readable FITS file ({type(exc).__name__}: {exc})"
    if any("truncated" in str(w.message) for w in caught) or length < needed:
        return f"file is truncated: {length} bytes where its headers announce {needed}"
    return None


def header_file_problem(path) -> str | None:
    """What stops a header edit of ``path``, or None.

    Checked: the file exists and is a file, is not empty, is a whole FITS file (every
    HDU as long as its header says; a gzip file's stream complete and its CRC right),
    holds an image (not only a table), is not bzip2- or tile-compressed (which cannot be
    rewritten unchanged), and its folder is writable (the edited file replaces it by a
    rename).

    Parameters
    ----------
    path : str or pathlib.Path
        The file.

    Returns
    -------
    str or None
        The reason, e.g. ``"file is truncated: 100000 bytes where its headers announce
        656640"``, or None when the file can be edited.
    """
    path = Path(path)
    if not path.exists():
        return "file does not exist"
    if not path.is_file():
        return "not a file (a folder?); give FITS files"
    if path.stat().st_size == 0:
        return "file is empty (0 bytes)"
    if path.name.lower().endswith((".bz2", ".fz")):
        return "bzip2- or tile-compressed file: it cannot be rewritten unchanged (decompress it first)"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"folder {path.parent} is not writable: the edited file cannot replace it"
    return _file_length_problem(path)


# -- the edit -----------------------------------------------------------------------
def _write_fits(hdul: fits.HDUList, destination: Path, gz: bool) -> None:
    """Write ``hdul`` as it is (no card fixed, no pixel rescaled), gzip-compressed if ``gz``."""
    if gz:
        buf = io.BytesIO()
        hdul.writeto(buf, output_verify="ignore")
        with gzip.open(destination, "wb", compresslevel=3) as out:
            out.write(buf.getbuffer())
    else:
        hdul.writeto(destination, output_verify="ignore")


def rewrite_fits_atomic(hdul: fits.HDUList, path) -> None:
    """Rewrite a FITS file in place atomically, keeping its compression and permissions.

    Gzip files are written at level 3: on ten HAT-P-27b frames 0.4 % larger than level 6
    (1.7 % larger than the camera's files) at 3.4x its speed. The temporary file is forced to disk before the rename. Cards are written as
    they are (``output_verify='ignore'``): an edit never "fixes" other cards.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
        The (edited) content.
    path : str or pathlib.Path
        The file to replace; a name ending in ``.gz`` is written gzip-compressed.
    """
    path = Path(path)
    with atomic_output(path, overwrite=True, fsync=True) as tmp:
        _write_fits(hdul, tmp, path.name.lower().endswith(".gz"))
        shutil.copymode(path, tmp)


def plan_header_edit(path, edit: Callable[[fits.Header], list]) -> list:
    """The changes ``edit`` would make to the image header of ``path``; nothing is written.

    Only the headers are read.

    Parameters
    ----------
    path : str or pathlib.Path
        The FITS file (plain or gzip).
    edit : callable
        ``edit(header) -> list of changes`` (:class:`KeywordChange` or str).

    Returns
    -------
    list
        The changes (empty: the file would not change).

    Raises
    ------
    astrodart.frames.io.FrameError
        The file cannot be read or holds no image HDU.
    """
    try:
        with fits.open(path, do_not_scale_image_data=True, memmap=False) as hdul:
            header = hdul[image_hdu_index(hdul, path)].header.copy()
    except FrameError:
        raise
    except Exception as exc:
        raise FrameError(path, f"not a readable FITS file ({type(exc).__name__}: {exc})") from exc
    return list(edit(header) or [])


def write_edited_header(path, edit: Callable[[fits.Header], list], action: str,
                        destination) -> list:
    """Write ``path`` with ``edit`` applied to its image header to ``destination``.

    The pixels are copied byte for byte, every other card as it is; each change is
    added as a ``HISTORY`` card (``"astrodart <action>: <change>"``); the destination
    gets the file's compression (a ``.gz`` source name: gzip) and permissions. The
    source is not touched; the caller renames ``destination`` over it (see
    :func:`astrodart.frames.io.atomic_output`).

    Parameters
    ----------
    path : str or pathlib.Path
        The FITS file (plain or gzip).
    edit : callable
        ``edit(header) -> list of changes``.
    action : str
        Named in the HISTORY cards.
    destination : str or pathlib.Path
        Where to write (nothing is written when there is no change).

    Returns
    -------
    list
        The changes (empty: nothing written).

    Raises
    ------
    astrodart.frames.io.FrameError
        The file holds no image HDU.
    """
    path = Path(path)
    with fits.open(path, do_not_scale_image_data=True, memmap=False) as hdul:
        header = hdul[image_hdu_index(hdul, path)].header
        changes = list(edit(header) or [])
        if not changes:
            return []
        for change in changes:
            header.add_history(f"astrodart {action}: {change}")
        _write_fits(hdul, Path(destination), path.name.lower().endswith(".gz"))
    shutil.copymode(path, destination)
    return changes


def edit_header_in_place(path, edit: Callable[[fits.Header], list], action: str,
                         dry_run: bool = False, timeout: float = 60.0) -> list:
    """Apply ``edit`` to the image header of one file and rewrite it if anything changed.

    The file's folder is locked for the edit (:func:`astrodart.frames.locks.folder_lock`)
    and the file replaced atomically; see :func:`write_edited_header`.

    Parameters
    ----------
    path : str or pathlib.Path
        The FITS file (plain or gzip).
    edit : callable
        ``edit(header) -> list of changes``: changes the header, returns one
        :class:`KeywordChange` (or str note) per change.
    action : str
        Named in the HISTORY cards (``"astrodart <action>: <change>"``) and the log.
    dry_run : bool, optional
        Print the changes, write nothing.
    timeout : float, optional
        Seconds to wait for another edit of the folder.

    Returns
    -------
    list
        The changes (empty: the file was not changed).

    Raises
    ------
    astrodart.frames.io.FrameError
        The file cannot be edited (missing, truncated, no image HDU ...).
    TimeoutError
        Another edit held the folder for longer than ``timeout``.
    """
    path = Path(path)
    if dry_run:
        changes = plan_header_edit(path, edit)
        for c in changes:
            print(f"[dry run] {path.name}: {c}")
        return changes
    with folder_lock(path.parent, timeout):
        problem = header_file_problem(path)
        if problem:
            raise FrameError(path, problem)
        if not plan_header_edit(path, edit):
            return []
        with atomic_output(path, overwrite=True, fsync=True) as tmp:
            changes = write_edited_header(path, edit, action, tmp)
    for c in changes:
        log.info("%s on %s: %s", action, path, c)
    return changes


def _same(a, b) -> bool:
    """Whether header value ``a`` equals ``b`` (True is not 1, '1' is not 1)."""
    if isinstance(a, bool) != isinstance(b, bool) or isinstance(a, str) != isinstance(b, str):
        return False
    return a == b


def _split(value):
    """``(value, comment)`` from a value or a ``(value, comment)`` tuple."""
    return value if isinstance(value, tuple) else (value, None)


def rename_keywords(header: fits.Header, mapping: dict) -> list[KeywordChange]:
    """Rename keywords ``{'OLD': 'NEW'}``, moving value and comment.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Edited in place; every ``OLD`` must be present.
    mapping : dict
        Old name -> new name (any case).

    Returns
    -------
    list of KeywordChange
        One per renamed keyword (``existed``: ``NEW`` was present and is replaced).
    """
    changes = []
    for old, new in mapping.items():
        old, new = old.upper(), str(new).upper()
        value, comment = header[old], header.comments[old]
        existed = new in header
        previous = header[new] if existed else None
        header[new] = (value, comment)
        del header[old]
        changes.append(KeywordChange(new, value, previous, existed, renamed_from=old))
    return changes


def update_keywords(header: fits.Header, values: dict) -> list[KeywordChange]:
    """Set existing keywords ``{'KEY': value}``; a value may be ``(value, comment)``.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Edited in place; every ``KEY`` must be present.
    values : dict
        Keyword -> new value.

    Returns
    -------
    list of KeywordChange
        One per changed keyword, with the old value (unchanged ones give none).
    """
    changes = []
    for key, value in values.items():
        key = key.upper()
        value, comment = _split(value)
        old = header[key]
        if _same(old, value) and comment in (None, header.comments[key]):
            continue
        header[key] = (value, comment) if comment is not None else value
        changes.append(KeywordChange(key, value, old, existed=True))
    return changes


def append_keywords(header: fits.Header, values: dict) -> list[KeywordChange]:
    """Add keywords ``{'KEY': value}``, overwriting (and noting) existing ones.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Edited in place.
    values : dict
        Keyword -> value or ``(value, comment)``, e.g. ``{'GAIN': 2.06, 'RON': 6.5}``
        (GAIN in e-/ADU, RON in e-, SCALE in arcsec/px).

    Returns
    -------
    list of KeywordChange
        One per added or changed keyword (``existed`` False: added).
    """
    changes = []
    for key, value in values.items():
        key = key.upper()
        value, comment = _split(value)
        existed = key in header
        old = header[key] if existed else None
        if existed and _same(old, value) and comment in (None, header.comments[key]):
            continue
        header[key] = (value, comment) if comment is not None else value
        changes.append(KeywordChange(key, value, old, existed))
    return changes
