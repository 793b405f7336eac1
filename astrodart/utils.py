"""AstroDART-compatible utilities: header editing, organising a night, finding its folders.

``from astrodart.utils import *`` gives the names the AstroDART guides use:
:class:`header_tools`, :class:`data_organiser`, :class:`get_directory` and
:class:`image_combination`.

The data tree (see ARCHITECTURE.md)::

    uncal_data/YYMMDD/*.fit[s][.gz]              raw night (only header_tools edits it)
    reduced_data/YYMMDD/<target>/bias/           copies of raw frames, sorted
    reduced_data/YYMMDD/<target>/dark/<exptime>/
    reduced_data/YYMMDD/<target>/flatdark/<exptime>/
    reduced_data/YYMMDD/<target>/flat/<filter>/
    reduced_data/YYMMDD/<target>/object/<filter>/
    reduced_data/YYMMDD/<target>/<filter>/       calibrated science (finalize_stage1)
    reduced_data/YYMMDD/<target>/calibration/    master frames, kept
    reduced_data/YYMMDD/<target>/astrodart_log.jsonl
"""
from __future__ import annotations

import gzip
import io
import logging
import os
import re
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from astropy.io import fits

from astrodart.frames.io import FrameError, atomic_path, find_fits, image_hdu_index
from astrodart.frames.header import FrameHeader, HeaderValueError, MissingKeywordError, normalise_name
from astrodart.pipeline.step import LOG_NAME, log_event, parse_overwrite

__all__ = ["header_tools", "data_organiser", "get_directory", "image_combination",
           "OrganiseReport", "group_dirname", "RESERVED_DIRS"]

log = logging.getLogger("astrodart")

#: Sub-folders of a target's reduction directory that are not calibrated-science filters.
RESERVED_DIRS = ("bias", "dark", "flat", "flatdark", "object", "calibration", "quality",
                 "aligned", "stacks", "photometry", "astrophotography", "figures", "notebooks")


def _dir_str(path) -> str:
    """AstroDART guides concatenate folder strings, so folders are returned with a trailing '/'."""
    return str(Path(path)) + os.sep


def group_dirname(value) -> str:
    """Folder name for a filter or an exposure time: exposure 20.0 -> '20', 0.5 -> '0.5';
    filter 'Visible ' -> 'Visible'; characters unsafe in paths become '_'."""
    if isinstance(value, (int, float)):
        return f"{float(value):g}"
    return re.sub(r"[^\w.+-]+", "_", str(value).strip()) or "none"


def _rewrite_atomic(hdul: fits.HDUList, path: Path) -> None:
    """Rewrite a FITS file in place atomically, keeping its gzip compression (level 6:
    within 1 % of level 9's size at two thirds of the time) and its permissions."""
    tmp = atomic_path(path)
    try:
        if path.name.lower().endswith(".gz"):
            buf = io.BytesIO()
            hdul.writeto(buf, output_verify="silentfix")
            with gzip.open(tmp, "wb", compresslevel=6) as gz:
                gz.write(buf.getbuffer())
        else:
            hdul.writeto(tmp, output_verify="silentfix")
        shutil.copymode(path, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ---------------------------------------------------------------------------------------
# header_tools
# ---------------------------------------------------------------------------------------
class header_tools:  # noqa: N801  (AstroDART's public name)
    """Inspect and edit FITS headers of many files at once, safely.

    Edits are in place but atomic (written to a temporary file, then renamed), work on
    gzip-compressed files, keep the pixel bytes unchanged (no rescaling of ``BZERO``
    data), and record every change as a ``HISTORY`` card with the old value.

    Parameters
    ----------
    files : sequence of str or pathlib.Path
        FITS files to inspect or edit.
    header_dict : dict, optional
        For the edit methods: ``{'OLD': 'NEW'}`` (rename), ``{'KEY': value}`` (update,
        append). A value may be a ``(value, comment)`` tuple.
    header_key : str, optional
        Keyword for :meth:`check_key_is_present`.
    dry_run : bool
        Report what would change without writing.

    Examples
    --------
    >>> header_tools(flats, {'IMAGETYP': 'Flat Field'}).update_header_values()  # doctest: +SKIP
    >>> header_tools(files, {'INSFILTE': 'FILTER'}).change_header_key_name()    # doctest: +SKIP
    """

    def __init__(self, files: Sequence, header_dict: dict | None = None,
                 header_key: str | None = None, dry_run: bool = False):
        if isinstance(files, (str, Path)):
            files = [files]
        self.files = [str(f) for f in files]
        self.header_dict = dict(header_dict or {})
        self.header_key = header_key
        self.dry_run = bool(dry_run)

    # -- reading -------------------------------------------------------------------
    def _headers(self):
        for f in self.files:
            yield f, FrameHeader.from_file(f).header

    def check_full_header(self) -> list[fits.Header]:
        """Print and return the image header of every file."""
        headers = []
        for f, h in self._headers():
            print(f"== {f}")
            print(repr(h))
            headers.append(h)
        return headers

    def check_key_is_present(self) -> dict[str, bool]:
        """Report, per file, whether ``header_key`` is present; print a summary.

        Returns
        -------
        dict
            ``{file: bool}``.
        """
        if not self.header_key:
            raise ValueError("check_key_is_present needs header_key='KEYWORD'")
        key = self.header_key.upper()
        present = {f: key in h for f, h in self._headers()}
        missing = [f for f, ok in present.items() if not ok]
        print(f"{key}: present in {len(present) - len(missing)} of {len(present)} files")
        for f in missing:
            print(f"  missing in {f}")
        return present

    # -- editing -------------------------------------------------------------------
    def _require(self, keys, must_exist: bool):
        lacking = {}
        for f, h in self._headers():
            bad = [k for k in keys if (k.upper() in h) != must_exist]
            if bad:
                lacking[f] = bad
        if lacking:
            what = "lack" if must_exist else "already have"
            lines = "\n".join(f"  {f}: {', '.join(b)}" for f, b in lacking.items())
            raise KeyError(f"{len(lacking)} file(s) {what} the keyword(s); nothing was changed:\n{lines}")

    def _edit_one(self, f: str, action: str, edit) -> bool:
        path = Path(f)
        with fits.open(path, do_not_scale_image_data=True, memmap=False) as hdul:
            idx = image_hdu_index(hdul, path)
            header = hdul[idx].header
            notes = edit(header)
            if not notes:
                return False
            if self.dry_run:
                for n in notes:
                    print(f"[dry run] {path.name}: {n}")
                return True
            for n in notes:
                header.add_history(f"astrodart header_tools {action}: {n}")
                log.info("header_tools %s on %s: %s", action, path, n)
            _rewrite_atomic(hdul, path)
        return True

    def _edit(self, action: str, edit) -> list[str]:
        # gzip compression dominates the cost of an edit and zlib releases the GIL,
        # so files are rewritten by a thread pool sized to the cores.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            done = list(pool.map(lambda f: self._edit_one(f, action, edit), self.files))
        return [f for f, changed in zip(self.files, done) if changed]

    @staticmethod
    def _split(value):
        return value if isinstance(value, tuple) else (value, None)

    def change_header_key_name(self) -> list[str]:
        """Rename keywords ``{'OLD': 'NEW'}``, moving value and comment, in every file.

        Raises
        ------
        KeyError
            Some file lacks an ``OLD`` keyword (files listed; nothing is changed).
        """
        self._require(list(self.header_dict), must_exist=True)

        def edit(h):
            notes = []
            for old, new in self.header_dict.items():
                old, new = old.upper(), str(new).upper()
                value, comment = h[old], h.comments[old]
                previous = f" (replacing {new}={h[new]!r})" if new in h else ""
                h[new] = (value, comment)
                del h[old]
                notes.append(f"renamed {old} -> {new} = {value!r}{previous}")
            return notes
        return self._edit("rename", edit)

    def update_header_values(self) -> list[str]:
        """Set existing keywords ``{'KEY': value}`` in every file.

        Raises
        ------
        KeyError
            Some file lacks a keyword (files listed; nothing is changed). Use
            :meth:`append_header_key` to add keywords.
        """
        self._require(list(self.header_dict), must_exist=True)

        def edit(h):
            notes = []
            for key, value in self.header_dict.items():
                key = key.upper()
                value, comment = self._split(value)
                old = h[key]
                if old == value and comment is None:
                    continue
                h[key] = (value, comment) if comment is not None else value
                notes.append(f"{key} = {value!r} (was {old!r})")
            return notes
        return self._edit("update", edit)

    def append_header_key(self) -> list[str]:
        """Add keywords ``{'KEY': value}`` (e.g. ``{'GAIN': 2.06, 'RON': 6.5}``: GAIN in
        e-/ADU, RON in e-, SCALE in arcsec/px). An existing keyword is overwritten and its
        old value recorded in HISTORY."""
        def edit(h):
            notes = []
            for key, value in self.header_dict.items():
                key = key.upper()
                value, comment = self._split(value)
                old = f" (was {h[key]!r})" if key in h else " (new)"
                if key in h and h[key] == value:
                    continue
                h[key] = (value, comment) if comment is not None else value
                notes.append(f"{key} = {value!r}{old}")
            return notes
        return self._edit("append", edit)


# ---------------------------------------------------------------------------------------
# data_organiser
# ---------------------------------------------------------------------------------------
@dataclass
class OrganiseReport:
    """Outcome of :meth:`data_organiser.run`.

    Attributes
    ----------
    counts : collections.Counter
        ``(frame_type, group) -> number of frames`` where group is the filter (flats,
        objects), exposure time in s (darks, flat-darks) or '' (bias).
    copied, reused : list of str
        Destination paths written now / already present.
    other_targets : dict
        Object frames of another target: ``path -> OBJECT``.
    unclassified : dict
        ``path -> reason`` for frames whose type could not be decided or that lack a
        required keyword.
    unreadable : dict
        ``path -> reason`` for files that are not readable FITS images.
    """

    counts: Counter = field(default_factory=Counter)
    copied: list = field(default_factory=list)
    reused: list = field(default_factory=list)
    other_targets: dict = field(default_factory=dict)
    unclassified: dict = field(default_factory=dict)
    unreadable: dict = field(default_factory=dict)

    def table(self) -> str:
        """Plain-text summary table."""
        lines = [f"{'type':<10}{'group':<16}{'frames':>7}"]
        order = {t: i for i, t in enumerate(("bias", "dark", "flatdark", "flat", "object"))}
        for (t, g), n in sorted(self.counts.items(), key=lambda kv: (order[kv[0][0]], str(kv[0][1]))):
            lines.append(f"{t:<10}{str(g):<16}{n:>7}")
        if self.other_targets:
            lines.append(f"{len(self.other_targets)} object frame(s) of other targets left out: "
                         + ", ".join(sorted(set(self.other_targets.values()))))
        for title, d in (("unclassified", self.unclassified), ("unreadable", self.unreadable)):
            if d:
                lines.append(f"{len(d)} {title} file(s):")
                lines += [f"  {Path(p).name}: {why}" for p, why in d.items()]
        return "\n".join(lines)

    def __str__(self):
        return self.table()


class data_organiser:  # noqa: N801  (AstroDART's public name)
    """Copy a raw night into a reduction tree sorted by frame type, filter and exposure.

    Parameters
    ----------
    uncal_dir : str or pathlib.Path
        Folder holding raw nights (``uncal_dir/date/*.fits``); never modified.
    reduction_dir : str or pathlib.Path
        Folder where ``reduction_dir/date/target/`` is made.
    date : str
        Night folder name, e.g. ``'180423'``.
    target : str
        Target name; object frames whose ``OBJECT`` matches it ignoring case, spaces,
        '-' and '_' are taken ('hat-p-27' matches 'HAT-P-27' and 'HATP27').
    overwrite : bool or {'yes', 'no'}
        Copy again files already present in the tree.
    verbose : bool
        Print the summary table after :meth:`run`.

    Notes
    -----
    Frame types come from the normalised ``IMAGETYP`` (:class:`astrodart.frames.header.FrameHeader`).
    Flat-darks are their own type (not also flats or darks, a defect of the original).
    Files are copied (atomically), never moved: ``uncal_dir`` stays byte-identical.
    """

    def __init__(self, uncal_dir, reduction_dir, date, target, overwrite=False, verbose=True):
        self.uncal_dir = Path(uncal_dir)
        self.reduction_dir = Path(reduction_dir)
        self.date = str(date).strip("/")
        self.target = str(target)
        self.overwrite = parse_overwrite(overwrite)
        self.verbose = verbose
        self.report: OrganiseReport | None = None

    def get_directory(self) -> str:
        """``reduction_dir/date/target/`` (with a trailing separator)."""
        return _dir_str(self.reduction_dir / self.date / self.target)

    def _destination(self, path: str, fh: FrameHeader, report: OrganiseReport):
        ftype = fh.frame_type
        if ftype is None:
            raw = fh.raw_frame_type
            reason = ("no frame-type keyword (IMAGETYP); add one with header_tools(files, "
                      "{'IMAGETYP': 'Light Frame'}).append_header_key()") if raw is None else (
                      f"IMAGETYP={raw!r} not understood; set it with header_tools(...).update_header_values()")
            report.unclassified[path] = reason
            return None
        if ftype == "bias":
            return ("bias", ""), Path("bias")
        exptime = fh.exptime  # raises MissingKeywordError with file + keyword
        if ftype in ("dark", "flatdark"):
            return (ftype, exptime), Path(ftype) / group_dirname(exptime)
        filt = fh.filter
        if filt is None:
            filt = "none"
            log.warning("%s: no FILTER keyword; grouped under 'none'", path)
        if ftype == "object":
            obj = fh.object
            if obj is None:
                report.unclassified[path] = ("object frame without OBJECT; add it with "
                                             "header_tools(files, {'OBJECT': name}).append_header_key()")
                return None
            if normalise_name(obj) != normalise_name(self.target):
                report.other_targets[path] = obj
                return None
        return (ftype, filt), Path(ftype) / group_dirname(filt)

    def run(self) -> OrganiseReport:
        """Classify and copy the night; return (and print) the summary.

        Raises
        ------
        FileNotFoundError
            ``uncal_dir/date`` does not exist.
        """
        source = self.uncal_dir / self.date
        if not source.is_dir():
            raise FileNotFoundError(f"{source}: no such night folder (expected uncal_dir/date/ with raw FITS files)")
        dest_root = Path(self.get_directory())
        report = OrganiseReport()
        candidates = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
        for p in candidates:
            from astrodart.frames.io import is_fits_path
            if not is_fits_path(p):
                if p.suffix.lower() not in (".md", ".txt", ".json", ".jsonl"):
                    report.unclassified[str(p)] = "not a FITS file name (.fit/.fits/.fts[.gz])"
                continue
            try:
                fh = FrameHeader.from_file(p)
                where = self._destination(str(p), fh, report)
            except FrameError as exc:
                report.unreadable[str(p)] = exc.problem
                continue
            except (MissingKeywordError, HeaderValueError) as exc:
                report.unclassified[str(p)] = str(exc).split(": ", 1)[-1]
                continue
            if where is None:
                continue
            key, sub = where
            report.counts[key] += 1
            dest = dest_root / sub / p.name
            if dest.exists() and not self.overwrite and dest.stat().st_size == p.stat().st_size:
                report.reused.append(str(dest))
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = atomic_path(dest)
            try:
                shutil.copy2(p, tmp)
                os.replace(tmp, dest)
            finally:
                if tmp.exists():
                    tmp.unlink()
            report.copied.append(str(dest))
        self.report = report
        log_event(dest_root / LOG_NAME, step="data_organiser", source=str(source),
                  target=self.target, counts={f"{t}/{g}": n for (t, g), n in report.counts.items()},
                  copied=len(report.copied), reused=len(report.reused),
                  unclassified=report.unclassified, unreadable=report.unreadable,
                  other_targets=report.other_targets)
        if self.verbose:
            print(f"data_organiser: {source} -> {dest_root}")
            print(report.table())
        return report


# ---------------------------------------------------------------------------------------
# get_directory
# ---------------------------------------------------------------------------------------
def _is_raw_copy(path: str) -> bool:
    """True for frames copied by data_organiser, False for files written by steps
    (which carry a step prefix such as 'trimmed_') or masters."""
    from astrodart.pipeline.step import known_prefixes
    try:  # the stage modules register their step prefixes when imported
        from astrodart import first_stage  # noqa: F401
    except ImportError:
        pass
    name = Path(path).name
    return not any(name.startswith(p) for p in known_prefixes()) and not name.lower().startswith("master")


class get_directory:  # noqa: N801  (AstroDART's public name)
    """Find the folders and files of a target's reduction tree.

    Parameters
    ----------
    data_dir : str or pathlib.Path
        ``reduced_data/YYMMDD/<target>/`` (trailing slash optional), as returned by
        :meth:`data_organiser.get_directory`.

    Notes
    -----
    Every method returns sorted lists; folders are strings ending with a separator
    (AstroDART guides concatenate them). Frame lists hold the raw copies only (files
    written by steps carry a prefix such as ``trimmed_`` and are left out).
    """

    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)

    def _groups(self, kind: str, numeric: bool):
        base = self.data_dir / kind
        if not base.is_dir():
            return [], [], []
        groups = []
        for d in base.iterdir():
            if d.is_dir() and not d.name.startswith("."):
                files = [f for f in find_fits(d) if _is_raw_copy(f)]
                if files:
                    label = float(d.name) if numeric else d.name
                    groups.append((label, _dir_str(d), files))
        groups.sort(key=lambda g: g[0])
        return [g[1] for g in groups], [g[2] for g in groups], [g[0] for g in groups]

    def bias(self) -> tuple[str, list[str]]:
        """``(bias_dir, bias_files)``; an empty list when there are no bias frames."""
        d = self.data_dir / "bias"
        return _dir_str(d), [f for f in find_fits(d) if _is_raw_copy(f)]

    def dark(self) -> tuple[list[str], list[list[str]], list[float]]:
        """``(dark_dirs, dark_files, dark_groups)``: one entry per exposure time (s), sorted."""
        return self._groups("dark", numeric=True)

    def flatdark(self) -> tuple[list[str], list[list[str]], list[float]]:
        """``(flatdark_dirs, flatdark_files, flatdark_groups)``: darks taken for the flats,
        one entry per exposure time (s)."""
        return self._groups("flatdark", numeric=True)

    def flatfield(self) -> tuple[list[str], list[list[str]], list[str]]:
        """``(flat_dirs, flat_files, flat_filters)``: one entry per filter."""
        return self._groups("flat", numeric=False)

    def science(self) -> tuple[list[str], list[list[str]], list[str]]:
        """``(object_dirs, object_files, object_filters)``: one entry per filter."""
        return self._groups("object", numeric=False)

    def science_final(self) -> tuple[list[str], list[list[str]], list[str]]:
        """``(directories, files, filters)`` of the calibrated science frames written by
        ``finalize_stage1`` into ``data_dir/<filter>/``, to resume another day."""
        out = []
        if self.data_dir.is_dir():
            for d in self.data_dir.iterdir():
                if d.is_dir() and d.name not in RESERVED_DIRS and not d.name.startswith("."):
                    files = find_fits(d)
                    if files:
                        out.append((d.name, _dir_str(d), files))
        out.sort()
        return [o[1] for o in out], [o[2] for o in out], [o[0] for o in out]

    def calibration(self) -> dict[str, str]:
        """Master frames kept in ``data_dir/calibration/``: ``{file name: path}``."""
        return {Path(f).name: f for f in find_fits(self.data_dir / "calibration")}


def __getattr__(name):
    # image_combination lives in the stacking layer; imported lazily so that utils stays
    # importable while the combine engine loads its heavier dependencies.
    if name == "image_combination":
        from astrodart.combine.files import image_combination
        return image_combination
    raise AttributeError(name)
