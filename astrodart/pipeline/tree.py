"""Layer 3: the reduction tree: safe folder names, writable outputs, and its frames found by provenance.

``reduced_data/YYMMDD/<target>/`` (see docs/ARCHITECTURE.md) is made by
:class:`astrodart.pipeline.organise.data_organiser` and
:class:`astrodart.pipeline.finalize.finalize_stage1`; :class:`get_directory` finds its
folders and frames again, also another day. Frames are selected by what made them, never
by a folder listing alone:

* raw copies: the organiser's record (:data:`astrodart.pipeline.runlog.SOURCES_MANIFEST`);
  a file it did not record counts only when its header says no step made it (no
  ``ADSTEPnn``) and it is no combination (no ``NCOMBINE``/``ADMASTER``);
* calibrated science frames: the record ``finalize_stage1`` writes
  (:data:`astrodart.pipeline.runlog.SCIENCE_MANIFEST`); in a tree without it, the frames
  whose header says a step made them and that are no combination. A stack written beside
  them (the guide's ``Combined_image_<filter>.fits``) is never a frame.

Names that become folders (date, target, filter) are checked by :func:`folder_name`;
every path written is checked to stay inside its root by :func:`inside`.
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path

from astrodart.frames.io import atomic_output, find_fits, read_header
from astrodart.pipeline.runlog import SCIENCE_MANIFEST, SOURCES_MANIFEST
from astrodart.pipeline.step import known_prefixes

__all__ = ["get_directory", "RESERVED_DIRS", "group_dirname", "folder_name", "inside",
           "read_record", "write_record", "is_combination", "made_by_step"]

#: Sub-folders of a target's reduction directory that are not calibrated-science filters.
RESERVED_DIRS = ("bias", "dark", "flat", "flatdark", "object", "calibration", "quality",
                 "aligned", "stacks", "photometry", "astrophotography", "figures", "notebooks")

_ALLOWED = ("letters of any language, digits, spaces and punctuation; not '/', '\\', "
            "control characters, '.' or '..', nor a leading '.'")


def _dir_str(path) -> str:
    """AstroDART guides concatenate folder strings, so folders are returned with a trailing '/'."""
    return str(Path(path)) + os.sep


def _unsafe(name: str) -> str | None:
    """Why ``name`` is not a safe folder name, or None."""
    if not name:
        return "empty"
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(s in name for s in seps):
        return "it holds a path separator"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "it holds a control character"
    if name.startswith("."):
        return "'.', '..' or a leading '.'"
    if len(name.encode("utf-8")) > 255:
        return "longer than 255 bytes"
    return None


def folder_name(value, argument: str, *, fix: bool = False) -> str:
    """A name (target, date, filter) as one safe folder name.

    Parameters
    ----------
    value : object
        The name (``str(value)``, surrounding spaces removed). Letters of any language,
        digits, spaces and punctuation are kept.
    argument : str
        What the name is (e.g. ``'target'``), for the error message.
    fix : bool, optional
        False (user arguments): an unsafe name is refused. True (names read from
        headers): path separators, control characters and leading dots are replaced by
        ``'_'`` (``'../../x'`` -> ``'_._.._x'``); an empty name becomes ``'none'``.

    Returns
    -------
    str
        The folder name.

    Raises
    ------
    ValueError
        Without ``fix``: the name is empty, holds a path separator or a control
        character, is ``'.'``/``'..'``, starts with ``'.'`` or is over 255 bytes.
    """
    name = str(value).strip()
    if fix:
        name = "".join("_" if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
                       for c in name)
        name = re.sub(r"[/\\]", "_", name)
        name = re.sub(r"^\.", "_", name)[:120] or "none"
    why = _unsafe(name)
    if why:
        raise ValueError(f"{argument}={value!r} is not a safe folder name ({why}); "
                         f"allowed: {_ALLOWED}")
    return name


def group_dirname(value) -> str:
    """Folder name for a filter or an exposure time.

    Parameters
    ----------
    value : float or str
        Exposure time in s (20.0 -> '20', 0.5 -> '0.5') or filter name ('Visible ' ->
        'Visible'; characters other than letters of any language, digits and ``.+-``
        become '_', a leading '.' too, so '..' -> '_.').

    Returns
    -------
    str
        The folder name ('none' for an empty name).
    """
    if isinstance(value, (int, float)):
        return f"{float(value):g}"
    name = re.sub(r"[^\w.+-]+", "_", str(value).strip())
    return folder_name(re.sub(r"^\.", "_", name) or "none", "filter", fix=True)


def inside(root, path, argument: str = "path") -> Path:
    """``path``, checked to resolve inside ``root``.

    Parameters
    ----------
    root : str or pathlib.Path
        The folder outputs must stay in (e.g. the reduction folder).
    path : str or pathlib.Path
        A path to write.
    argument : str, optional
        What the path is made from, for the error message.

    Returns
    -------
    pathlib.Path
        ``path`` (unchanged).

    Raises
    ------
    ValueError
        ``path`` resolves (symbolic links followed) outside ``root``.
    """
    r, p = Path(root).resolve(), Path(path).resolve()
    if p != r and not p.is_relative_to(r):
        raise ValueError(f"{argument}: {str(path)!r} resolves to {p}, outside {r}; outputs "
                         "must stay inside the reduction folder")
    return Path(path)


def read_record(path) -> dict:
    """A JSON record of the tree (:data:`SOURCES_MANIFEST`, :data:`SCIENCE_MANIFEST`).

    Parameters
    ----------
    path : str or pathlib.Path
        The record file.

    Returns
    -------
    dict
        Its content; ``{}`` when it is missing or unreadable.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_record(path, data: dict) -> None:
    """Write a JSON record of the tree atomically.

    Parameters
    ----------
    path : str or pathlib.Path
        The record file.
    data : dict
        JSON-serialisable content.
    """
    with atomic_output(path, overwrite=True, fsync=False) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False),
                       encoding="utf-8")


def is_combination(header) -> bool:
    """Whether a header is that of a combination (master frame, stack).

    Parameters
    ----------
    header : astropy.io.fits.Header
        The header.

    Returns
    -------
    bool
        True when it carries ``NCOMBINE`` or ``ADMASTER``.
    """
    return "NCOMBINE" in header or "ADMASTER" in header


def made_by_step(path) -> bool | None:
    """Whether a file is a frame written by a one-frame step (not a raw copy nor a stack).

    Parameters
    ----------
    path : str or pathlib.Path
        A FITS file.

    Returns
    -------
    bool or None
        True: its header carries ``ADSTEP01`` and no combination keyword; False: no step
        made it (a raw frame) or it is a combination; None: the header is unreadable.
    """
    h = _header_or_none(path)
    if h is None:
        return None
    return "ADSTEP01" in h and not is_combination(h)


def _is_step_name(name: str) -> bool:
    try:  # the calibration steps register their output prefixes when their modules load
        from astrodart.pipeline import calibrate, chain, cosmic_rays, prepare  # noqa: F401
    except ImportError:
        pass
    return any(name.startswith(p) for p in known_prefixes()) or name.lower().startswith("master")


class get_directory:  # noqa: N801  (AstroDART's public name)
    """Find the folders and frames of a target's reduction tree (also to resume).

    Parameters
    ----------
    data_dir : str or pathlib.Path
        ``reduced_data/YYMMDD/<target>/`` (trailing slash optional), as returned by
        :meth:`astrodart.pipeline.organise.data_organiser.get_directory`.

    Notes
    -----
    Every method returns sorted lists; folders are strings ending with a separator
    (AstroDART guides concatenate them). Frames are selected by provenance (see the
    module notes): raw-frame lists hold the organiser's copies (files written by steps,
    masters and stacks are left out); :meth:`science_final` holds what
    ``finalize_stage1`` recorded, never a stack.
    """

    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)

    def _raw_copies(self, folder: Path, recorded: set) -> list[str]:
        out = []
        for f in find_fits(folder):
            rel = Path(f).relative_to(self.data_dir).as_posix()
            if rel in recorded:
                out.append(f)
            elif not _is_step_name(Path(f).name):
                h = _header_or_none(f)  # unreadable: a raw file for the steps to report
                if h is None or not ("ADSTEP01" in h or is_combination(h)):
                    out.append(f)
        return out

    def _recorded(self) -> set:
        return set(read_record(self.data_dir / SOURCES_MANIFEST))

    def _groups(self, kind: str, numeric: bool):
        base = self.data_dir / kind
        if not base.is_dir():
            return [], [], []
        recorded, groups = self._recorded(), []
        for d in base.iterdir():
            if d.is_dir() and not d.name.startswith("."):
                files = self._raw_copies(d, recorded)
                if files:
                    try:
                        label = float(d.name) if numeric else d.name
                    except ValueError:  # not an exposure folder
                        continue
                    groups.append((label, _dir_str(d), files))
        groups.sort(key=lambda g: g[0])
        return [g[1] for g in groups], [g[2] for g in groups], [g[0] for g in groups]

    def bias(self) -> tuple[str, list[str]]:
        """The bias frames.

        Returns
        -------
        bias_dir : str
            ``data_dir/bias/`` (with a trailing separator).
        bias_files : list of str
            The raw copies; empty when there are no bias frames.
        """
        d = self.data_dir / "bias"
        return _dir_str(d), self._raw_copies(d, self._recorded())

    def dark(self) -> tuple[list[str], list[list[str]], list[float]]:
        """The dark frames, one group per exposure time.

        Returns
        -------
        dirs : list of str
            One folder per exposure time (ending with a separator), sorted.
        files : list of list of str
            The raw copies in each folder.
        groups : list
            The exposure time of each folder (float, s).
        """
        return self._groups("dark", numeric=True)

    def flatdark(self) -> tuple[list[str], list[list[str]], list[float]]:
        """The darks taken for the flats, one group per exposure time.

        Returns
        -------
        dirs : list of str
            One folder per exposure time (ending with a separator), sorted.
        files : list of list of str
            The raw copies in each folder.
        groups : list
            The exposure time of each folder (float, s).
        """
        return self._groups("flatdark", numeric=True)

    def flatfield(self) -> tuple[list[str], list[list[str]], list[str]]:
        """The flat fields, one group per filter.

        Returns
        -------
        dirs : list of str
            One folder per filter (ending with a separator), sorted.
        files : list of list of str
            The raw copies in each folder.
        groups : list
            The filter of each folder (str).
        """
        return self._groups("flat", numeric=False)

    def science(self) -> tuple[list[str], list[list[str]], list[str]]:
        """The raw science (object) frames, one group per filter.

        Returns
        -------
        dirs : list of str
            One folder per filter (ending with a separator), sorted.
        files : list of list of str
            The raw copies in each folder.
        groups : list
            The filter of each folder (str).
        """
        return self._groups("object", numeric=False)

    def science_final(self) -> tuple[list[str], list[list[str]], list[str]]:
        """The calibrated science frames ``finalize_stage1`` put in place, to resume another day.

        Returns
        -------
        directories : list of str
            ``data_dir/<filter>/`` folders (with a trailing separator), sorted by filter.
        files : list of list of str
            The frames of each folder that ``finalize_stage1`` recorded and that are still
            there (in a tree without its record: the files a one-frame step wrote); a
            stack or any other combination written beside them is never counted.
        filters : list of str
            The filter of each folder.
        """
        out = []
        record = read_record(self.data_dir / SCIENCE_MANIFEST).get("filters")
        if isinstance(record, dict):
            for filt, entry in record.items():
                d = self.data_dir / filt
                files = sorted(str(d / n) for n in entry.get("frames", {}) if (d / n).is_file())
                if files and not _unsafe(filt):
                    out.append((filt, _dir_str(d), files))
        elif self.data_dir.is_dir():
            for d in self.data_dir.iterdir():
                if d.is_dir() and d.name not in RESERVED_DIRS and not d.name.startswith("."):
                    files = [f for f in find_fits(d) if made_by_step(f)]
                    if files:
                        out.append((d.name, _dir_str(d), files))
        out.sort()
        return [o[1] for o in out], [o[2] for o in out], [o[0] for o in out]

    def calibration(self) -> dict[str, str]:
        """Master frames kept in ``data_dir/calibration/``.

        Returns
        -------
        dict
            ``{file name: path}``.
        """
        return {Path(f).name: f for f in find_fits(self.data_dir / "calibration")}


def _header_or_none(path):
    """The header of ``path``, or None when it cannot be read."""
    try:
        return read_header(path)
    except Exception:  # noqa: BLE001
        return None
