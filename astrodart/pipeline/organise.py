"""Layer 3: sorting a raw night into a reduction tree, and finding its folders again.

:class:`data_organiser` copies ``uncal_data/YYMMDD/*`` into
``reduced_data/YYMMDD/<target>/`` sorted by frame type, filter and exposure;
:class:`get_directory` lists that tree's folders and frames (also after a reduction, to
resume another day). The data tree (see docs/ARCHITECTURE.md)::

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

import logging
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from astrodart.frames.header import (
    FrameHeader,
    HeaderValueError,
    MissingKeywordError,
    normalise_name,
)
from astrodart.frames.io import FrameError, atomic_output, find_fits, is_fits_path
from astrodart.pipeline.runlog import LOG_NAME, log_event
from astrodart.pipeline.step import known_prefixes, parse_overwrite

__all__ = ["data_organiser", "get_directory", "OrganiseReport", "group_dirname", "RESERVED_DIRS"]

log = logging.getLogger("astrodart")

#: Sub-folders of a target's reduction directory that are not calibrated-science filters.
RESERVED_DIRS = ("bias", "dark", "flat", "flatdark", "object", "calibration", "quality",
                 "aligned", "stacks", "photometry", "astrophotography", "figures", "notebooks")


def _dir_str(path) -> str:
    """AstroDART guides concatenate folder strings, so folders are returned with a trailing '/'."""
    return str(Path(path)) + os.sep


def group_dirname(value) -> str:
    """Folder name for a filter or an exposure time.

    Parameters
    ----------
    value : float or str
        Exposure time in s (20.0 -> '20', 0.5 -> '0.5') or filter name ('Visible ' ->
        'Visible'; characters unsafe in paths become '_').

    Returns
    -------
    str
        The folder name ('none' for an empty name).
    """
    if isinstance(value, (int, float)):
        return f"{float(value):g}"
    return re.sub(r"[^\w.+-]+", "_", str(value).strip()) or "none"


def _copy_atomic(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` (with its times and permissions) through a temporary file."""
    with atomic_output(dest, overwrite=True, fsync=False) as tmp:
        shutil.copy2(src, tmp)


# ---------------------------------------------------------------------------------------
# data_organiser
# ---------------------------------------------------------------------------------------
@dataclass
class OrganiseReport:
    """Outcome of :meth:`data_organiser.run`.

    Parameters
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
        """Plain-text summary table.

        Returns
        -------
        str
            One line per (type, group) with its frame count, then the frames left out and why.
        """
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
        """The target's reduction directory.

        Returns
        -------
        str
            ``reduction_dir/date/target/`` (with a trailing separator).
        """
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

        Returns
        -------
        OrganiseReport
            Counts per type and group, files copied or reused, and the files left out.

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
            _copy_atomic(p, dest)
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
    try:  # the calibration steps register their output prefixes when their modules load
        from astrodart.pipeline import calibrate, chain, cosmic_rays, prepare  # noqa: F401
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
        """The bias frames.

        Returns
        -------
        bias_dir : str
            ``data_dir/bias/`` (with a trailing separator).
        bias_files : list of str
            The raw copies; empty when there are no bias frames.
        """
        d = self.data_dir / "bias"
        return _dir_str(d), [f for f in find_fits(d) if _is_raw_copy(f)]

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
        """The calibrated science frames written by ``finalize_stage1``, to resume another day.

        Returns
        -------
        directories : list of str
            ``data_dir/<filter>/`` folders (with a trailing separator), sorted by filter.
        files : list of list of str
            The frames in each folder.
        filters : list of str
            The filter of each folder.
        """
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
        """Master frames kept in ``data_dir/calibration/``.

        Returns
        -------
        dict
            ``{file name: path}``.
        """
        return {Path(f).name: f for f in find_fits(self.data_dir / "calibration")}
