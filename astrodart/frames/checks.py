"""Layer 1: the one home of argument checks, made at the call before any work.

Every public call of astrodart checks its numeric, choice and path arguments here,
when it is called (a step class: in its constructor), before a file is read or
written. A bad value stops with a :class:`ValueError` or :class:`TypeError` whose
message names the call, the argument, the value given and what is allowed::

    >>> check_number("sigma", -1, minimum=0, exclusive=True, owner="master_frame")
    Traceback (most recent call last):
    ...
    ValueError: master_frame: sigma=-1 is out of range; allowed: > 0

The checks of the frames themselves live here too and are called where a frame is
read (:func:`astrodart.frames.io.read_frame`, ``read_header``): a cube is refused
(:func:`check_2d`), a frame without one finite pixel is refused and one with many NaN
is warned about (:func:`check_pixels`); both raise :class:`FrameError`, which names
the file. A header's values are checked where they are read
(:class:`astrodart.frames.header.FrameHeader`: a negative ``EXPTIME`` is refused).
"""
from __future__ import annotations

import math
import numbers
import os
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from astrodart.exceptions import AstrodartWarning, warn

__all__ = [
    "FrameError",
    "NonFinitePixelsWarning",
    "MAX_NONFINITE_FRACTION",
    "check_2d",
    "check_pixels",
    "SATURATION_KEYS",
    "raw_saturation",
    "mask_saturated",
    "check_number",
    "check_choice",
    "check_path",
    "check_files",
    "check_output_dir",
    "check_step_arguments",
    "header_text",
    "parse_overwrite",
    "check_kwargs",
]


class FrameError(Exception):
    """A frame could not be read or written; the message names the file and the problem.

    Parameters
    ----------
    path : str or pathlib.Path
        The file.
    problem : str
        What is wrong with it, e.g. ``"file is empty (0 bytes)"``.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def check_2d(header, index: int, path) -> None:
    """Refuse an image of more than two axes (a cube), naming the file.

    One plane of a third axis (``NAXIS3 = 1``) is a frame and passes.

    Parameters
    ----------
    header : astropy.io.fits.Header
        The image HDU's header.
    index : int
        The HDU's index, for the message.
    path : str or pathlib.Path
        The file, for the message.

    Raises
    ------
    FrameError
        The image is a cube.
    """
    axes = [header.get(f"NAXIS{k}", 0) for k in range(1, header.get("NAXIS", 0) + 1)]
    if any(n > 1 for n in axes[2:]):  # a cube (one plane of a third axis is a frame)
        raise FrameError(path, f"HDU {index} is a {len(axes)}-D cube ({' x '.join(map(str, axes))}"
                               " px); astrodart reads 2-D frames: split the cube into single "
                               "frames first")


#: A frame with more than this fraction of NaN/infinite pixels is read with a warning.
MAX_NONFINITE_FRACTION = 0.25


class NonFinitePixelsWarning(AstrodartWarning):
    """A frame read has many NaN or infinite pixels (they are masked and repaired later)."""


def check_pixels(data, path):
    """Refuse a frame without one finite pixel; warn above :data:`MAX_NONFINITE_FRACTION`.

    Parameters
    ----------
    data : numpy.ndarray
        The frame's pixels (integer data pass unchecked: they cannot be NaN).
    path : str or pathlib.Path
        The file, for the message.

    Returns
    -------
    numpy.ndarray
        ``data``.

    Raises
    ------
    FrameError
        Every pixel is NaN or infinite.

    Warns
    -----
    NonFinitePixelsWarning
        More than :data:`MAX_NONFINITE_FRACTION` of the pixels are NaN or infinite.
    """
    if data.dtype.kind != "f":
        return data
    nbad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if nbad == data.size:
        raise FrameError(path, f"every pixel ({data.size}) is NaN or infinite: no data; "
                               "leave this frame out")
    if nbad > MAX_NONFINITE_FRACTION * data.size:
        warn(f"more than {MAX_NONFINITE_FRACTION:.0%} of the pixels are NaN or infinite "
             "(masked and interpolated by the calibration steps)", NonFinitePixelsWarning,
             item=f"{Path(path).name} ({nbad / data.size:.0%})")
    return data


#: Header keywords of the raw saturation level, in order of preference (read by
#: :attr:`astrodart.frames.header.FrameHeader.saturation` and :func:`raw_saturation`).
SATURATION_KEYS = ("SATURATE", "DATAMAX", "MAXLIN", "SATLEVEL")


def raw_saturation(header) -> float | None:
    """Level at and above which the pixels of raw integer data are saturated.

    The lower of the header's level (:data:`SATURATION_KEYS`) and the largest value the
    data type holds (``BITPIX`` with ``BSCALE``/``BZERO``: 65535 for unsigned 16-bit).

    Parameters
    ----------
    header : astropy.io.fits.Header
        The image header as stored (before the data are scaled).

    Returns
    -------
    float or None
        The level in the data's units; None for floating-point data (a processed frame,
        whose copied ``DATAMAX`` no longer applies).
    """
    bitpix = header.get("BITPIX", -32)
    if not isinstance(bitpix, int) or bitpix <= 0:
        return None
    top = 255 if bitpix == 8 else 2 ** (bitpix - 1) - 1
    level = top * float(header.get("BSCALE", 1.0)) + float(header.get("BZERO", 0.0))
    for key in SATURATION_KEYS:
        try:
            value = float(header[key]) if key in header else 0.0
        except (TypeError, ValueError):
            continue
        if value > 0:
            return min(level, value)
    return level


def mask_saturated(data, mask, level):
    """Mask the pixels at or above a saturation level.

    Parameters
    ----------
    data : numpy.ndarray
        The pixels (true values).
    mask : numpy.ndarray of bool or None
        The frame's mask so far.
    level : float or None
        From :func:`raw_saturation`; None: nothing is masked.

    Returns
    -------
    tuple
        ``(mask, n)``: the mask (None when nothing is masked and there was none) and the
        number of saturated pixels.
    """
    if level is None:
        return mask, 0
    saturated = data >= level
    n = int(np.count_nonzero(saturated))
    if not n:
        return mask, 0
    return (saturated if mask is None else (np.asarray(mask, bool) | saturated)), n


def _prefix(owner: str | None) -> str:
    return f"{owner}: " if owner else ""


def _allowed(minimum, maximum, exclusive: bool, integer: bool) -> str:
    kind = "an integer" if integer else "a number"
    if minimum is not None and maximum is not None:
        low = "<" if exclusive else "<="
        return f"{kind} with {minimum} {low} value <= {maximum}"
    if minimum is not None:
        return f"{kind} {'>' if exclusive else '>='} {minimum}"
    if maximum is not None:
        return f"{kind} <= {maximum}"
    return f"a finite {'integer' if integer else 'number'}"


def check_number(name: str, value: Any, *, minimum: float | None = None,
                 maximum: float | None = None, exclusive: bool = False, integer: bool = False,
                 allow_none: bool = False, owner: str | None = None, unit: str = ""):
    """Check a numeric argument: a finite number (or integer) within a range.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : object
        What the caller passed. Booleans and strings are refused (``'3'`` is not 3).
    minimum, maximum : float, optional
        Allowed range (inclusive, but see ``exclusive``).
    exclusive : bool
        The minimum itself is not allowed (``> minimum``).
    integer : bool
        The value must be a whole number (``3.0`` is accepted as 3).
    allow_none : bool
        None is allowed (meaning "the default" or "from the header") and returned.
    owner : str, optional
        The call, named at the start of the message (e.g. ``'master_frame'``).
    unit : str
        Unit named in the message (e.g. ``'bytes'``).

    Returns
    -------
    float, int or None
        The value as a Python float (int when ``integer``), or None.

    Raises
    ------
    TypeError
        Not a number (or None when not allowed).
    ValueError
        Not finite, not whole when ``integer``, or out of range.
    """
    pre, units = _prefix(owner), f" {unit}" if unit else ""
    allowed = _allowed(minimum, maximum, exclusive, integer) + units
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{pre}{name}=None: give {allowed}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{pre}{name}={value!r} ({type(value).__name__}) is not a number; "
                        f"give {allowed}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{pre}{name}={value!r} is not finite; give {allowed}")
    if integer:
        if number != int(number):
            raise ValueError(f"{pre}{name}={value!r} is not a whole number; give {allowed}")
        number = int(number)
    too_low = minimum is not None and (number <= minimum if exclusive else number < minimum)
    too_high = maximum is not None and number > maximum
    if too_low or too_high:
        raise ValueError(f"{pre}{name}={value!r}{units} is out of range; allowed: {allowed}")
    return number


def check_choice(name: str, value: Any, choices: Sequence[Any], *, owner: str | None = None,
                 ignore_case: bool = True):
    """Check that an argument is one of a fixed set of values.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : object
        What the caller passed.
    choices : sequence
        The allowed values (None may be one of them).
    owner : str, optional
        The call, named at the start of the message.
    ignore_case : bool
        Compare strings without regard to case and surrounding blanks.

    Returns
    -------
    object
        The matching entry of ``choices`` (its own spelling).

    Raises
    ------
    ValueError
        ``value`` is not one of ``choices``.
    """
    for choice in choices:
        if value is choice or (type(value) is type(choice) and value == choice):
            return choice
        if ignore_case and isinstance(value, str) and isinstance(choice, str) \
                and value.strip().lower() == choice.lower():
            return choice
    shown = ", ".join(repr(c) for c in choices)
    raise ValueError(f"{_prefix(owner)}{name}={value!r} is not known; use one of {shown}")


def check_path(name: str, value: Any, *, kind: str = "file", owner: str | None = None) -> Path:
    """Check a path argument that must exist.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : str or os.PathLike
        What the caller passed.
    kind : {'file', 'dir', 'any'}
        What the path must be.
    owner : str, optional
        The call, named at the start of the message.

    Returns
    -------
    pathlib.Path
        The path.

    Raises
    ------
    TypeError
        Not a path (e.g. None or a number).
    FileNotFoundError
        Nothing exists there.
    ValueError
        A folder where a file is needed, or the other way round.
    """
    pre = _prefix(owner)
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise TypeError(f"{pre}{name}={value!r} is not a path; give a file or folder name")
    path = Path(value)
    if not path.exists():
        what = kind if kind != "any" else "file or folder"
        raise FileNotFoundError(f"{pre}{name}={str(value)!r}: no such {what}")
    if kind == "file" and path.is_dir():
        raise ValueError(f"{pre}{name}={str(value)!r} is a folder; a file is needed")
    if kind == "dir" and not path.is_dir():
        raise ValueError(f"{pre}{name}={str(value)!r} is a file; a folder is needed")
    return path


def check_files(name: str, files: Any, *, owner: str | None = None, min_count: int = 0,
                unique: bool = False) -> list[str]:
    """Check a list of input files: paths, no folders, enough of them, no file twice.

    A file that does not exist is not refused here: the steps report and skip it (one
    bad frame does not stop a night); a folder given as a file is refused.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    files : str, os.PathLike or iterable of them
        What the caller passed (a single path is one file).
    owner : str, optional
        The call, named at the start of the message.
    min_count : int
        The fewest files allowed (e.g. 1 for a combination).
    unique : bool
        Refuse a file listed twice (a combination would count it twice).

    Returns
    -------
    list of str
        The paths, in the order given.

    Raises
    ------
    TypeError
        ``files`` is None or not a list of paths.
    ValueError
        Fewer than ``min_count`` files, a folder among them, or a file twice.
    """
    pre = _prefix(owner)
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    if files is None or not isinstance(files, Iterable):
        raise TypeError(f"{pre}{name}={files!r}: give a list of FITS file paths")
    out = []
    for i, f in enumerate(files):
        if not isinstance(f, (str, os.PathLike)):
            raise TypeError(f"{pre}{name}[{i}]={f!r} ({type(f).__name__}) is not a file path")
        if Path(f).is_dir():
            raise ValueError(f"{pre}{name}[{i}]={str(f)!r} is a folder, not a FITS file; pass the "
                             "files in it (astrodart.frames.io.find_fits(folder))")
        out.append(str(f))
    if len(out) < min_count:
        raise ValueError(f"{pre}{name} has {len(out)} file(s); at least {min_count} needed")
    if unique:
        seen: dict[str, int] = {}
        for i, f in enumerate(out):
            key = os.path.realpath(f)
            if key in seen:
                raise ValueError(f"{pre}{name} lists {f!r} twice (entries {seen[key]} and {i}); "
                                 "each file may be combined once")
            seen[key] = i
    return out


def check_output_dir(name: str, value: Any, *, owner: str | None = None) -> Path:
    """Check a folder that outputs will be written to (it is not created here).

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : str or os.PathLike
        The folder (it may not exist yet).
    owner : str, optional
        The call, named at the start of the message.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    TypeError
        Not a path.
    ValueError
        An existing file, or a file on the way to it.
    PermissionError
        The folder (or the nearest existing folder above it) cannot be written.
    """
    pre = _prefix(owner)
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise TypeError(f"{pre}{name}={value!r} is not a folder path")
    path = Path(value)
    here = path
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        raise ValueError(f"{pre}{name}={str(value)!r}: {here} is a file, not a folder")
    # no write bit at all: refused also for root, who could write anyway (marked read-only)
    if not os.access(here, os.W_OK | os.X_OK) or not here.stat().st_mode & 0o222:
        raise PermissionError(f"{pre}{name}={str(value)!r}: folder {here} is not writable; "
                              "choose a folder you can write to")
    return path


def check_step_arguments(owner: str, wdir: Any, files: Any, workers: Any, *,
                         writes: bool = True, unique: bool = False) -> tuple[Path, list[str], Any]:
    """Check the arguments every file-level step takes: output folder, inputs, workers.

    Parameters
    ----------
    owner : str
        The step, named in the messages.
    wdir : str or os.PathLike
        The output folder (see :func:`check_output_dir`; only a path when ``writes`` is
        False: in-place and measuring steps write nothing there).
    files : str, os.PathLike or iterable of them
        The inputs (see :func:`check_files`).
    workers : int or None
        Worker processes, at least 1 (None: the default).
    writes : bool
        The step writes its outputs into ``wdir``.
    unique : bool
        Refuse a file listed twice.

    Returns
    -------
    tuple
        ``(wdir, files, workers)`` as :class:`pathlib.Path`, list of str, int or None.

    Raises
    ------
    TypeError, ValueError, PermissionError
        As :func:`check_output_dir`, :func:`check_files` and :func:`check_number`.
    """
    wdir = check_output_dir("wdir", wdir, owner=owner) if writes else Path(wdir)
    files = check_files("files", files, owner=owner, unique=unique)
    workers = check_number("workers", workers, minimum=1, integer=True, allow_none=True,
                           owner=owner)
    return wdir, files, workers


def header_text(text: Any) -> str:
    """``text`` made storable in a FITS header value: printable ASCII only.

    File names with accents keep their letters (``é`` becomes ``e``); other characters
    become ``?``.

    Parameters
    ----------
    text : object
        Usually a file name.

    Returns
    -------
    str
        The ASCII text.
    """
    decomposed = unicodedata.normalize("NFKD", str(text))
    return "".join(c if 32 <= ord(c) < 127 else ("" if unicodedata.combining(c) else "?")
                   for c in decomposed)


def parse_overwrite(value) -> bool:
    """Interpret AstroDART's ``overwrite`` argument.

    Parameters
    ----------
    value : bool, int, str or None
        ``'yes'``/``'y'``/``'true'``/``True``/``1`` mean redo; ``'no'``/``'n'``/
        ``'false'``/``False``/``None``/``0`` mean reuse existing outputs.

    Returns
    -------
    bool
        True to redo existing outputs.

    Raises
    ------
    ValueError
        Any other value (a typo must not silently mean "no").
    """
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, (int,)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("yes", "y", "true", "1", "overwrite"):
            return True
        if v in ("no", "n", "false", "0", ""):
            return False
    raise ValueError(f"overwrite={value!r} not understood; use 'yes'/'no' or True/False")


def check_kwargs(step_name: str, kwargs: dict, allowed: Iterable[str] = ()) -> None:
    """Reject unknown keyword arguments with a message listing the allowed ones.

    Parameters
    ----------
    step_name : str
        Named in the message.
    kwargs : dict
        The keyword arguments received.
    allowed : iterable of str
        The names the step accepts.

    Raises
    ------
    TypeError
        Some key of ``kwargs`` is not in ``allowed``.
    """
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{step_name}() got unknown keyword argument(s) {', '.join(unknown)}; "
                        f"allowed: {', '.join(sorted(allowed)) or 'none'}")
