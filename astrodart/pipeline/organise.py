"""Layer 3: sorting a raw night into a reduction tree, and finding its folders again.

:class:`data_organiser` copies ``uncal_data/YYMMDD/*`` (or the frames of a
:class:`astrodart.pipeline.survey.NightSurvey`, any layout) into
``reduced_data/YYMMDD/<target>/`` sorted by frame type, filter and exposure;
:class:`get_directory` lists its folders and frames (also to resume). The data tree (see docs/ARCHITECTURE.md)::

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

import hashlib
import json
import logging
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits

from astrodart.frames.header import (
    FrameHeader,
    HeaderValueError,
    MissingKeywordError,
    normalise_frame_type,
    normalise_name,
)
from astrodart.frames.io import (
    FrameError,
    atomic_output,
    find_fits,
    image_hdu_index,
    is_fits_path,
    strip_fits_suffix,
)
from astrodart.pipeline.runlog import LOG_NAME, log_event
from astrodart.pipeline.step import known_prefixes, parse_overwrite

__all__ = ["data_organiser", "get_directory", "OrganiseReport", "group_dirname", "RESERVED_DIRS",
           "IMAGETYP_OF", "SOURCES_MANIFEST"]

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


#: How a copy's header spells each decided type (FrameHeader.frame_type reads it back).
IMAGETYP_OF = {"bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field",
               "flatdark": "Flat Dark", "light": "Light Frame"}
#: Record of the copies made from a survey: destination -> source path, size, mtime, fixes.
SOURCES_MANIFEST = ".astrodart_sources.json"


def _write_fixed(src: Path, dest: Path, cards: dict, history: list) -> None:
    """Write a copy of ``src`` with header cards changed and HISTORY lines (pixels untouched)."""
    with fits.open(src) as hdul:       # the data are never accessed: raw integers stay as they are
        header = hdul[image_hdu_index(hdul, src)].header
        for key, value in cards.items():
            header[key] = value
        for text in history:
            header.add_history(f"astrodart data_organiser: {text}")
        with atomic_output(dest, overwrite=True, fsync=False) as tmp:
            hdul.writeto(tmp, output_verify="silentfix")


def _header_fixes(rec, target: str) -> tuple[dict, list]:
    """Header cards a copy of a surveyed frame needs, and the HISTORY lines saying why."""
    cards, history = {}, []
    written = normalise_frame_type(rec.header_type)
    if (written or "").replace("object", "light") != rec.frame_type:
        cards["IMAGETYP"] = IMAGETYP_OF[rec.frame_type]
        history.append(f"IMAGETYP={IMAGETYP_OF[rec.frame_type]!r} (was {rec.header_type!r}): {rec.why}")
    if rec.frame_type == "light" and not rec.target:
        cards["OBJECT"] = target
        history.append(f"OBJECT={target!r} (was missing): the target of the night")
    return cards, history


def _copy_name(rec, folder_names: Counter, folder: Path, fixed: bool) -> str:
    """Destination name: the raw name (uncompressed when the header is fixed), with a short hash
    of the path relative to the night when two inputs of the folder share a name."""
    name = rec.path.name
    if fixed:
        name = re.sub(r"\.(gz|bz2)$", "", name, flags=re.IGNORECASE)
    if folder_names[(folder, rec.path.name.lower())] > 1:
        stem = strip_fits_suffix(name)
        tag = hashlib.sha1(rec.relpath.encode()).hexdigest()[:6]
        name = f"{stem}_{tag}{name[len(stem):]}"
    return name


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
    fixed : list of str
        Copies whose header was fixed (from a survey: IMAGETYP, OBJECT), a HISTORY line each.
    removed : list of str
        Copies an earlier run made from a survey that this run's survey no longer places there.
    """

    counts: Counter = field(default_factory=Counter)
    copied: list = field(default_factory=list)
    reused: list = field(default_factory=list)
    other_targets: dict = field(default_factory=dict)
    unclassified: dict = field(default_factory=dict)
    unreadable: dict = field(default_factory=dict)
    fixed: list = field(default_factory=list)
    removed: list = field(default_factory=list)

    def per_type(self) -> dict[str, int]:
        """Frames per type, as the reduce summary's ``frames`` counts them.

        Returns
        -------
        dict
            ``{'bias', 'dark', 'flat', 'light'}`` (and ``'flatdark'`` when any) to counts,
            zeros included; 'light' counts the object frames.
        """
        c = Counter()
        for (t, _), n in self.counts.items():
            c["light" if t == "object" else t] += n
        keys = ["bias", "dark", "flat"] + (["flatdark"] if c["flatdark"] else []) + ["light"]
        return {k: c[k] for k in keys}

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
        if self.fixed:
            lines.append(f"{len(self.fixed)} copies with a fixed header (IMAGETYP/OBJECT; HISTORY says why)")
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
    survey : astrodart.pipeline.survey.NightSurvey, optional
        Take the frames, their types, filters and exposures from this survey (any layout)
        instead of ``uncal_dir/date``; ``uncal_dir`` is then unused, ``date`` defaults to
        ``survey.night_date()`` and ``target`` to ``survey.target()``.

    Notes
    -----
    Frame types come from the normalised ``IMAGETYP`` (:class:`astrodart.frames.header.FrameHeader`).
    Flat-darks are their own type (not also flats or darks, a defect of the original).
    Files are copied (atomically), never moved: ``uncal_dir`` stays byte-identical.

    With a survey, the lights the survey kept go to ``object/<filter>/`` whatever their
    ``OBJECT`` says; a copy whose header disagrees with the survey is written by astropy
    with ``IMAGETYP`` (and a missing ``OBJECT``) fixed and a HISTORY line saying why,
    uncompressed; the others are byte copies (compression kept). Two inputs of the same
    name in one destination get a short hash of their path relative to the night. A
    copy is reused only when :data:`SOURCES_MANIFEST` records it was made from the same
    source path, size and modification time, with the same fixes.
    """

    def __init__(self, uncal_dir, reduction_dir, date=None, target=None, overwrite=False,
                 verbose=True, *, survey=None):
        if survey is None and (date is None or target is None):
            raise ValueError("data_organiser: date and target are required without a survey")
        self.survey = survey
        self.uncal_dir = Path(uncal_dir) if uncal_dir is not None else None
        self.reduction_dir = Path(reduction_dir)
        self.date = str(date if date is not None else survey.night_date()).strip("/")
        self.target = str(target if target is not None else (survey.target() or "target"))
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
        if self.survey is not None:
            return self._run_survey()
        source = self.uncal_dir / self.date
        if not source.is_dir():
            raise FileNotFoundError(f"{source}: no such night folder (expected uncal_dir/date/ with raw FITS files)")
        dest_root = Path(self.get_directory())
        report = OrganiseReport()
        sorted_before = _surveyed_copies(dest_root)
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
            earlier = sorted_before.get((sub.as_posix(), p.name))
            if earlier is not None and not self.overwrite:  # sorted by astrodart reduce
                report.reused.append(str(dest_root / earlier))
                continue
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


    def _plan(self, dest_root: Path, report: OrganiseReport) -> list:
        """(record, destination, header cards, history) for every frame of the survey."""
        placed = []
        for rec in self.survey.frames:
            if rec.frame_type == "bias":
                key, sub = ("bias", ""), Path("bias")
            elif rec.frame_type in ("dark", "flatdark"):
                if rec.exptime is None:
                    report.unclassified[str(rec.path)] = "dark without an exposure time (EXPTIME)"
                    continue
                key, sub = (rec.frame_type, rec.exptime), Path(rec.frame_type) / group_dirname(rec.exptime)
            else:
                kind = "object" if rec.frame_type == "light" else "flat"
                key, sub = (kind, rec.filter or "none"), Path(kind) / group_dirname(rec.filter or "none")
            placed.append((rec, key, sub))
        names = Counter((sub, rec.path.name.lower()) for rec, _, sub in placed)
        plan = []
        for rec, key, sub in placed:
            report.counts[key] += 1
            cards, history = _header_fixes(rec, self.target)
            dest = dest_root / sub / _copy_name(rec, names, sub, bool(cards))
            plan.append((rec, dest, cards, history))
        return plan

    def _place(self, rec, dest: Path, cards: dict, history: list, old: dict | None,
               report: OrganiseReport) -> dict:
        """Copy (or reuse) one frame; return its manifest entry."""
        st = rec.path.stat()
        entry = {"source": str(rec.path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                 "fixes": history}
        if (not self.overwrite and old and dest.exists()
                and all(old.get(k) == v for k, v in entry.items())
                and old.get("dest_size") == dest.stat().st_size):
            report.reused.append(str(dest))
        else:
            if cards:
                _write_fixed(rec.path, dest, cards, history)
                report.fixed.append(str(dest))
            else:
                _copy_atomic(rec.path, dest)
            report.copied.append(str(dest))
        entry["dest_size"] = dest.stat().st_size
        return entry

    def _run_survey(self) -> OrganiseReport:
        """:meth:`run` with the frames of a survey."""
        dest_root = Path(self.get_directory())
        report = OrganiseReport(unreadable=dict(self.survey.unreadable),
                                unclassified=dict(self.survey.unclassified),
                                other_targets=dict(self.survey.other_targets))
        manifest_path = dest_root / SOURCES_MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {}
        new = {}
        for rec, dest, cards, history in self._plan(dest_root, report):
            rel = dest.relative_to(dest_root).as_posix()
            new[rel] = self._place(rec, dest, cards, history, manifest.get(rel), report)
        for rel in sorted(set(manifest) - set(new)):      # our own earlier copies only
            if (dest_root / rel).exists():
                (dest_root / rel).unlink()
                report.removed.append(str(dest_root / rel))
        with atomic_output(manifest_path, overwrite=True, fsync=False) as tmp:
            tmp.write_text(json.dumps(new, indent=1, sort_keys=True))
        self.report = report
        log_event(dest_root / LOG_NAME, step="data_organiser", source=str(self.survey.night),
                  layout=self.survey.layout, target=self.target,
                  counts={f"{t}/{g}": n for (t, g), n in report.counts.items()},
                  copied=len(report.copied), reused=len(report.reused), fixed=len(report.fixed),
                  removed=report.removed, unclassified=report.unclassified,
                  unreadable=report.unreadable, other_targets=report.other_targets)
        if self.verbose:
            print(f"data_organiser: {self.survey.night} ({self.survey.layout} layout) -> {dest_root}")
            print(report.table())
        return report


def _surveyed_copies(dest_root: Path) -> dict:
    """``(folder, source name) -> copy`` of a survey run's copies (renamed when decompressed
    for a header fix), so a header-based run does not sort the same frame twice."""
    try:
        manifest = json.loads((dest_root / SOURCES_MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return {(str(Path(rel).parent.as_posix()), Path(e["source"]).name): rel
            for rel, e in manifest.items() if (dest_root / rel).exists()}


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
