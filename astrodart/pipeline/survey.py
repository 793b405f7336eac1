"""Layer 3: find and classify the frames of a night in any layout.

:func:`survey_night` walks a night folder (or takes a list of files), reads each frame's
header once and decides its type (:mod:`astrodart.pipeline.survey_rules`): the user's
``--frame-type GLOB=TYPE`` first, then ``EXPTIME == 0`` (a bias wherever it sits), then
``IMAGETYP`` when it is believable, then the file and folder names and cheap image
statistics. Every decision keeps the reason it was taken; every one that overrides a
header is reported (:meth:`NightSurvey.override_messages`). Nothing is written.

Layouts recognised: astro_reduce's ``DARK/ FLAT/ ORIGINAL/``, AstroDART's
``uncal_data/DATE/``, a tree by type or filter, a flat folder of mixed frames, lights only.
"""
from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.time import Time

from astrodart.frames.header import (
    HeaderValueError,
    MissingKeywordError,
    normalise_name,
)
from astrodart.frames.io import FITS_SUFFIXES, FrameError, is_fits_path
from astrodart.pipeline.survey_rules import (
    ASTRO_REDUCE_DIRS,
    SURVEY_TYPES,
    FrameEvidence,
    StatsOnDemand,
    decide_type,
    folder_filter,
    is_calibrated,
    read_evidence,
)

__all__ = ["LAYOUTS", "FrameRecord", "NightSurvey", "survey_night"]

#: The layouts a survey recognises.
LAYOUTS = ("astro_reduce", "astrodart", "by-type", "flat", "lights-only")

#: Folders a survey never enters: astrodart's own output.
_SKIP_DIRS = {"reduced_data", "results", "__pycache__"}
_TYPE_ALIASES = {"object": "light", "science": "light", "zero": "bias"}


@dataclass
class FrameRecord:
    """One raw frame of a night and what it was decided to be.

    Parameters
    ----------
    path : pathlib.Path
        The raw file (never written).
    frame_type : str
        'bias', 'dark', 'flat', 'flatdark' or 'light'.
    filter : str or None
        Filter name as written.
    exptime : float or None
        Exposure time (s).
    date_obs : astropy.time.Time or None
        Exposure start (UTC).
    target : str or None
        ``OBJECT`` as written.
    header_type : str or None
        The raw ``IMAGETYP`` (or ``FRAMETYP``/``OBSTYPE``) value.
    why : str
        How the type was decided, e.g. ``"IMAGETYP='Bias Frame'"``.
    overrides_header : bool
        True when the type differs from what ``IMAGETYP`` says or ``IMAGETYP`` is absent.
    shape : tuple or None
        ``(ny, nx)``.
    binning : tuple
        ``(xbin, ybin)``.
    camera : str or None
        ``INSTRUME`` / ``DETECTOR`` / ``CCD-ID`` (:attr:`astrodart.frames.header.FrameHeader.camera_id`).
    ccd_temp : float or None
        CCD temperature (deg C).
    calibrated : bool
        The header says the frame was already bias, dark or flat corrected.
    calibrated_by : str or None
        What says so (a keyword or a HISTORY line).
    relpath : str
        Path relative to the surveyed night.
    """

    path: Path
    frame_type: str
    filter: str | None
    exptime: float | None
    date_obs: Time | None
    target: str | None
    header_type: str | None
    why: str
    overrides_header: bool
    shape: tuple | None = None
    binning: tuple = (1, 1)
    camera: str | None = None
    ccd_temp: float | None = None
    calibrated: bool = False
    calibrated_by: str | None = None
    relpath: str = ""


def _group_numbers(whys: list[str]) -> str:
    """One text for a group of reasons that differ only in their numbers (medians)."""
    nums = [re.findall(r"\d+(?:\.\d+)?", w) for w in whys]
    if len({len(n) for n in nums}) != 1:
        return whys[0]
    out, parts = [], re.split(r"\d+(?:\.\d+)?", whys[0])
    for i, part in enumerate(parts[:-1]):
        column = [n[i] for n in nums]
        if len(set(column)) == 1:
            out.append(part + column[0])
        else:
            digits = len(column[0].split(".")[1]) if "." in column[0] else 0
            out.append(part + f"{np.median([float(c) for c in column]):.{digits}f}")
    return "".join(out) + parts[-1]


@dataclass
class NightSurvey:
    """The frames of a night, classified.

    Parameters
    ----------
    night : pathlib.Path
        The folder surveyed (for a list of files: their common folder).
    layout : str
        One of :data:`LAYOUTS`.
    frames : list of FrameRecord
        The frames used, sorted by path.
    unreadable : dict
        ``path -> reason`` for files that are not readable 2-D FITS images.
    unclassified : dict
        ``path -> reason`` for frames whose evidence contradicts itself (give their type
        with ``--frame-type``).
    other_targets : dict
        ``path -> OBJECT`` for lights of another target than the chosen one.
    chosen_target : str or None
        The target asked for, or the most common ``OBJECT`` of the lights.
    """

    night: Path
    layout: str
    frames: list
    unreadable: dict = field(default_factory=dict)
    unclassified: dict = field(default_factory=dict)
    other_targets: dict = field(default_factory=dict)
    chosen_target: str | None = None

    def counts(self) -> dict[str, int]:
        """Frames per type.

        Returns
        -------
        dict
            ``{'bias', 'dark', 'flat', 'light'}`` (and ``'flatdark'`` when any) to counts,
            zeros included.
        """
        c = Counter(r.frame_type for r in self.frames)
        keys = ["bias", "dark", "flat"] + (["flatdark"] if c["flatdark"] else []) + ["light"]
        return {k: c[k] for k in keys}

    def of_type(self, frame_type: str, filter=None) -> list[FrameRecord]:
        """The frames of one type (and filter).

        Parameters
        ----------
        frame_type : str
            'bias', 'dark', 'flat', 'flatdark' or 'light' ('object' is 'light').
        filter : str, optional
            Only this filter ('none' selects frames without a filter).

        Returns
        -------
        list of FrameRecord
            Sorted by path.
        """
        ftype = _TYPE_ALIASES.get(frame_type, frame_type)
        out = [r for r in self.frames if r.frame_type == ftype]
        if filter is not None:
            out = [r for r in out if (r.filter or "none") == filter]
        return out

    def filters(self) -> list[str]:
        """The filters of the lights ('none' for lights without one), sorted.

        Returns
        -------
        list of str
            Filter names.
        """
        return sorted({r.filter or "none" for r in self.of_type("light")})

    def cameras(self) -> dict[str, int]:
        """Frames per camera (``INSTRUME`` / ``DETECTOR`` / ``CCD-ID``; 'unknown' without).

        Returns
        -------
        dict
            Camera name to frame count, sorted by name.
        """
        return dict(sorted(Counter(r.camera or "unknown" for r in self.frames).items()))

    def night_date(self) -> str:
        """AstroDART's night folder name: 'YYMMDD' of the earliest light's UTC start.

        Returns
        -------
        str
            From the earliest light, else the earliest frame, else the newest file time.
        """
        for group in (self.of_type("light"), self.frames):
            times = [r.date_obs for r in group if r.date_obs is not None]
            if times:
                return min(times, key=lambda t: t.jd).datetime.strftime("%y%m%d")
        mtimes = [r.path.stat().st_mtime for r in self.frames if r.path.exists()]
        if not mtimes:
            return Time.now().datetime.strftime("%y%m%d")
        return Time(max(mtimes), format="unix").datetime.strftime("%y%m%d")

    def target(self) -> str | None:
        """The target: the one asked for, or the most common ``OBJECT`` of the lights.

        Returns
        -------
        str or None
            None when no light names one.
        """
        return self.chosen_target

    def override_messages(self) -> list[str]:
        """Every decision that overrides a header, one line per (header type, type, reason).

        Returns
        -------
        list of str
            E.g. ``"10 frames IMAGETYP='Light Frame' read as flat: name says dome_flat,
            median 18662 ADU, no stars"``.
        """
        groups = defaultdict(list)
        for r in self.frames:
            if r.overrides_header:
                key = (r.header_type, r.frame_type, re.sub(r"\d+(?:\.\d+)?", "#", r.why))
                groups[key].append(r.why)
        out = []
        for (htype, ftype, _), whys in groups.items():
            head = f"IMAGETYP={htype!r}" if htype is not None else "without IMAGETYP"
            noun = "frame" if len(whys) == 1 else "frames"
            out.append(f"{len(whys)} {noun} {head} read as {ftype}: {_group_numbers(whys)}")
        return out

    def table(self) -> str:
        """Plain-text summary.

        Returns
        -------
        str
            One line per type / filter / exposure with its frame count, then the files
            left out and why, then the decisions that override a header.
        """
        rows = Counter((r.frame_type, r.filter or "" if r.frame_type in ("flat", "light") else "",
                        r.exptime) for r in self.frames)
        order = {t: i for i, t in enumerate(SURVEY_TYPES)}
        lines = [f"{'type':<10}{'filter':<14}{'exptime':>9}{'frames':>8}"]
        for (t, f, e), n in sorted(rows.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], kv[0][2] or 0)):
            lines.append(f"{t:<10}{f:<14}{'' if e is None else f'{e:g} s':>9}{n:>8}")
        named = {c: n for c, n in self.cameras().items() if c != "unknown"}
        if len(named) > 1:  # opticam-like nights: not yet reduced camera by camera
            lines.append(f"{len(named)} cameras: " + ", ".join(f"{c} ({n} frames)" for c, n in named.items())
                         + "; reduce each camera's frames as a night of its own")
        calibrated = [r for r in self.frames if r.calibrated]
        if calibrated:
            lines.append(f"{len(calibrated)} frame(s) already calibrated ({calibrated[0].calibrated_by})")
        if self.other_targets:
            lines.append(f"{len(self.other_targets)} light(s) of other targets left out: "
                         + ", ".join(sorted(set(self.other_targets.values()))))
        for title, d in (("unreadable", self.unreadable), ("unclassified", self.unclassified)):
            if d:
                lines.append(f"{len(d)} {title} file(s):")
                lines += [f"  {Path(p).name}: {why}" for p, why in sorted(d.items())]
        lines += self.override_messages()
        return "\n".join(lines)

    def __str__(self):
        return self.table()

    def to_dict(self) -> dict:
        """JSON-able summary (for ``summary.json``).

        Returns
        -------
        dict
            ``night``, ``layout``, ``target``, ``date``, ``counts``, ``lights`` (per filter:
            file names), ``calibrated`` (names), ``unreadable`` and ``unclassified`` (name:
            reason), ``other_targets`` and ``overrides`` (the messages).
        """
        lights = defaultdict(list)
        for r in self.of_type("light"):
            lights[r.filter or "none"].append(r.path.name)
        return {
            "night": str(self.night), "layout": self.layout, "target": self.target(),
            "date": self.night_date(), "counts": self.counts(),
            "lights": {k: sorted(v) for k, v in sorted(lights.items())},
            "calibrated": sorted(r.path.name for r in self.frames if r.calibrated),
            "unreadable": {Path(p).name: why for p, why in sorted(self.unreadable.items())},
            "unclassified": {Path(p).name: why for p, why in sorted(self.unclassified.items())},
            "other_targets": {Path(p).name: o for p, o in sorted(self.other_targets.items())},
            "overrides": self.override_messages(),
        }


# ---------------------------------------------------------------------------------------
# finding the frames
# ---------------------------------------------------------------------------------------
def _check_overrides(frame_types) -> list[tuple[str, str]]:
    """Validate ``--frame-type`` overrides before anything is read."""
    out = []
    for glob, value in (frame_types or {}).items():
        ftype = _TYPE_ALIASES.get(str(value).strip().lower(), str(value).strip().lower())
        if ftype not in SURVEY_TYPES:
            raise ValueError(f"--frame-type {glob}={value!r}: unknown frame type; allowed: "
                             f"{', '.join(SURVEY_TYPES)} (object/science mean light, zero means bias)")
        if not str(glob).strip():
            raise ValueError(f"--frame-type {glob!r}={value}: empty file pattern")
        out.append((str(glob), ftype))
    return out


def _walk(night: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(night):
        if "astrodart_log.jsonl" in filenames and Path(dirpath) != night:
            dirnames[:] = []          # an astrodart reduction tree, not raw frames
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        files += [Path(dirpath) / f for f in filenames if not f.startswith(".") and is_fits_path(f)]
    return sorted(files)


def _collect(night) -> tuple[Path, list[Path]]:
    """The night's root folder and its FITS files."""
    looked = "/".join(FITS_SUFFIXES) + " in any case, optionally .gz/.bz2/.fz"
    if isinstance(night, (list, tuple)):
        files = sorted(Path(p) for p in night)
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"night: no such file(s): {', '.join(missing[:5])}")
        files = [p for p in files if is_fits_path(p)]
        if not files:
            raise FileNotFoundError(f"night: none of the {len(night)} files given is a FITS frame "
                                    f"(looked for {looked})")
        root = Path(os.path.commonpath([str(p.resolve().parent) for p in files]))
        return root, files
    root = Path(night)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such night folder")
    files = _walk(root)
    if not files:
        raise FileNotFoundError(f"{root}: no FITS frames in it or its sub-folders (looked for {looked})")
    return root, files


def _relpath(p: Path, root: Path) -> str:
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return p.name


def _layout_dirs(root: Path, rels: list[str]) -> dict | None:
    """astro_reduce's folder meanings when the night has its layout, else None."""
    tops = {r.split("/")[0].lower() for r in rels if "/" in r}
    return ASTRO_REDUCE_DIRS if "original" in tops or {"dark", "flat"} <= tops else None


def _layout(root: Path, records: list[FrameRecord], astro_reduce: bool) -> str:
    if astro_reduce:
        return "astro_reduce"
    if "uncal_data" in (root.name, root.parent.name) or any(
            r.relpath.startswith("uncal_data/") for r in records):
        return "astrodart"
    if records and all(r.frame_type == "light" for r in records):
        return "lights-only"
    folders = {r.relpath.rsplit("/", 1)[0] for r in records if "/" in r.relpath}
    return "by-type" if folders else "flat"


def _record(info: FrameEvidence, ftype: str, why: str) -> FrameRecord:
    fh = info.fh
    try:
        date_obs = fh.date_obs
    except (MissingKeywordError, HeaderValueError):
        date_obs = None
    try:
        temp = fh.ccd_temperature
    except HeaderValueError:
        temp = None
    cal = is_calibrated(fh.header)
    shape = (int(fh.header["NAXIS2"]), int(fh.header["NAXIS1"])) if "NAXIS2" in fh.header else None
    filt = fh.filter
    if filt is not None:
        filt = str(filt)
    elif ftype in ("flat", "light"):
        filt = folder_filter(info.rel)
    try:
        binning = fh.binning
    except (TypeError, ValueError):
        binning = (1, 1)
    return FrameRecord(path=info.path, frame_type=ftype, filter=filt, exptime=info.exptime,
                       date_obs=date_obs, target=fh.object, header_type=None if info.raw is None
                       else str(info.raw), why=why, overrides_header=info.htype != ftype,
                       shape=shape, binning=binning, camera=fh.camera_id, ccd_temp=temp,
                       calibrated=cal is not None, calibrated_by=cal, relpath=info.rel)


def _choose_target(records: list[FrameRecord], target, other: dict):
    """Keep the lights of one target when the lights name several in ``OBJECT``: the one
    asked for (matched ignoring case, spaces, '-', '_' and a trailing planet letter), else
    the most common. Lights without ``OBJECT`` are kept; a night of one target keeps all."""
    names = Counter(r.target for r in records if r.frame_type == "light" and r.target)
    if not names:
        return records, (str(target) if target is not None else None)
    chosen = names.most_common(1)[0][0]
    if target is not None:
        key = normalise_name(target)
        match = [n for n in names if normalise_name(n) in (key, key.rstrip("bcdefgh"))
                 or key in (normalise_name(n), normalise_name(n).rstrip("bcdefgh"))]
        chosen = max(match, key=names.get) if match else chosen
    if len({normalise_name(n) for n in names}) == 1:
        return records, str(target) if target is not None else chosen
    keep = []
    for r in records:
        if r.frame_type == "light" and r.target and normalise_name(r.target) != normalise_name(chosen):
            other[str(r.path)] = r.target
        else:
            keep.append(r)
    return keep, str(target) if target is not None else chosen


def survey_night(night, *, frame_types: dict[str, str] | None = None,
                 target: str | None = None) -> NightSurvey:
    """Find and classify the frames of a night, in any layout.

    Parameters
    ----------
    night : str or pathlib.Path or list
        A folder (walked recursively; hidden folders, ``reduced_data``/``results`` and
        astrodart reduction trees are skipped) or a list of files.
    frame_types : dict, optional
        ``{glob: type}`` overrides (``--frame-type GLOB=TYPE``), matched against the path
        relative to the night and against the file name; type in bias, dark, flat,
        flatdark, light.
    target : str, optional
        The target's name. When the lights name several targets in ``OBJECT``, the lights
        of this one are kept (compared ignoring case, spaces, '-', '_' and a trailing
        planet letter), else those of the most common; lights without ``OBJECT`` are kept.

    Returns
    -------
    NightSurvey
        The classified frames, with the files left out and why.

    Raises
    ------
    ValueError
        An override names an unknown type (raised before anything is read).
    FileNotFoundError
        No such folder or files, or no FITS frames at all.
    """
    overrides = _check_overrides(frame_types)
    root, files = _collect(night)
    rels = [_relpath(p, root) for p in files]
    layout_dirs = _layout_dirs(root, rels)
    unreadable: dict = {}
    infos = [i for i in (read_evidence(p, r, layout_dirs, unreadable) for p, r in zip(files, rels)) if i]
    decided = {str(i.path): d for i in infos if (d := decide_type(i, overrides, None)) is not None}
    stats = StatsOnDemand([i for i in infos if decided.get(str(i.path), ("",))[0] == "bias"])
    for info in infos:
        if str(info.path) not in decided:
            try:
                decided[str(info.path)] = decide_type(info, overrides, stats(info))
            except (FrameError, OSError, ValueError) as exc:
                unreadable[str(info.path)] = f"pixels unreadable ({type(exc).__name__}: {exc})"
    unclassified, records = {}, []
    for info in infos:
        ftype, why = decided.get(str(info.path), (None, None))
        if ftype == "unclassified":
            unclassified[str(info.path)] = why
        elif ftype is not None:
            records.append(_record(info, ftype, why))
    other: dict = {}
    records, chosen = _choose_target(records, target, other)
    return NightSurvey(night=root, layout=_layout(root, records, layout_dirs is not None),
                       frames=records, unreadable=unreadable, unclassified=unclassified,
                       other_targets=other, chosen_target=chosen)
