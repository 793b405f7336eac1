"""Layer 3: sorting a raw night into a reduction tree, and finding its folders again.

:class:`data_organiser` copies ``uncal_data/YYMMDD/*`` (or the frames of a
:class:`astrodart.pipeline.survey.NightSurvey`, any layout) into
``reduced_data/YYMMDD/<target>/`` sorted by frame type, filter and exposure;
:class:`get_directory` (in :mod:`astrodart.pipeline.tree`) lists its folders and frames (also
to resume). The data tree (see docs/ARCHITECTURE.md)::

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
import logging
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits

from astrodart.frames.checks import check_output_dir, header_text
from astrodart.frames.header import (
    FrameHeader,
    HeaderValueError,
    MissingKeywordError,
    normalise_frame_type,
    normalise_name,
)
from astrodart.frames.identity import content_id
from astrodart.frames.io import (
    FrameError,
    atomic_output,
    image_hdu_index,
    is_fits_path,
    strip_fits_suffix,
)
from astrodart.pipeline.runlog import LOG_NAME, SOURCES_MANIFEST, log_event
from astrodart.pipeline.step import parse_overwrite

# the tree's folders and its resume calls live in tree.py; exported here as before
from astrodart.pipeline.tree import (
    RESERVED_DIRS,
    _dir_str,
    folder_name,
    get_directory,
    group_dirname,
    inside,
    read_record,
    write_record,
)

__all__ = ["data_organiser", "get_directory", "OrganiseReport", "group_dirname", "RESERVED_DIRS",
           "IMAGETYP_OF", "SOURCES_MANIFEST"]

log = logging.getLogger("astrodart")


def _copy_atomic(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` (with its times and permissions) through a temporary file."""
    with atomic_output(dest, overwrite=True, fsync=False) as tmp:
        shutil.copy2(src, tmp)


#: How a copy's header spells each decided type (FrameHeader.frame_type reads it back).
IMAGETYP_OF = {"bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field",
               "flatdark": "Flat Dark", "light": "Light Frame"}


def _write_fixed(src: Path, dest: Path, cards: dict, history: list) -> None:
    """Write a copy of ``src`` with header cards changed and HISTORY lines (pixels untouched)."""
    with fits.open(src) as hdul:       # the data are never accessed: raw integers stay as they are
        header = hdul[image_hdu_index(hdul, src)].header
        for key, value in cards.items():   # FITS holds ASCII: 'Étoile' is written 'Etoile'
            header[key] = header_text(value) if isinstance(value, str) else value
        for text in history:
            header.add_history(header_text(f"astrodart data_organiser: {text}"))
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
        '-' and '_' are taken ('hat-p-27' matches 'HAT-P-27' and 'HATP27'). It is also a
        folder name: letters of any language and spaces are kept, but a ``date`` or
        ``target`` with a path separator, a control character, or that is (or starts
        with) ``'.'``/``'..'`` is REFUSED with a ValueError (``'../../../x'`` never writes
        outside ``reduction_dir``). Names read from a survey's headers are made safe
        instead (see :func:`astrodart.pipeline.tree.folder_name`).
    overwrite : bool or {'yes', 'no'}
        Copy again files already present in the tree.
    verbose : bool
        Print the summary table after :meth:`run`.
    survey : astrodart.pipeline.survey.NightSurvey, optional
        Take the frames, their types, filters and exposures from this survey (any layout)
        instead of ``uncal_dir/date``; ``uncal_dir`` is then unused, ``date`` defaults to
        ``survey.night_date()`` and ``target`` to ``survey.target()``.

    Raises
    ------
    ValueError
        ``date`` and ``target`` both missing without a survey, or one of them is not a
        safe folder name.

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
    source path, size and modification time, with the same fixes (with or without a
    survey); ``get_directory`` takes its raw-frame lists from that record.

    :meth:`run` checks before any work that the reduction folder is writable
    (PermissionError otherwise) and that every copy stays inside it; the run log
    (``astrodart_log.jsonl``) is written in ``reduction_dir/date/target/``, never beside
    the raw frames.
    """

    def __init__(self, uncal_dir, reduction_dir, date=None, target=None, overwrite=False,
                 verbose=True, *, survey=None):
        if survey is None and (date is None or target is None):
            raise ValueError("data_organiser: date and target are required without a survey")
        self.survey = survey
        self.uncal_dir = Path(uncal_dir) if uncal_dir is not None else None
        self.reduction_dir = Path(reduction_dir)
        if date is not None:
            self.date = folder_name(str(date).strip().strip("/"), "date")
        else:
            self.date = folder_name(survey.night_date(), "date", fix=True)
        if target is not None:
            self.target = folder_name(target, "target")
        else:  # read from the headers: made safe rather than refused
            self.target = folder_name(survey.target() or "target", "target", fix=True)
        self.overwrite = parse_overwrite(overwrite)
        self.verbose = verbose
        self.report: OrganiseReport | None = None

    def get_directory(self) -> str:
        """The target's reduction directory.

        Returns
        -------
        str
            ``reduction_dir/date/target/`` (with a trailing separator).

        Raises
        ------
        ValueError
            It would resolve outside ``reduction_dir`` (a symbolic link leading out).
        """
        root = self.reduction_dir / self.date / self.target
        return _dir_str(inside(self.reduction_dir, root, f"date={self.date!r}, target={self.target!r}"))

    def _start(self) -> Path:
        """Checks before any work: the tree stays inside ``reduction_dir``, which is writable."""
        dest_root = Path(self.get_directory())
        check_output_dir("reduction_dir", dest_root, owner="data_organiser")
        return dest_root

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
        PermissionError
            The reduction folder is read-only (checked before any work).
        """
        dest_root = self._start()
        if self.survey is not None:
            return self._run_survey(dest_root)
        source = self.uncal_dir / self.date
        if not source.is_dir():
            raise FileNotFoundError(f"{source}: no such night folder (expected uncal_dir/date/ with raw FITS files)")
        report = OrganiseReport()
        manifest = read_record(dest_root / SOURCES_MANIFEST)
        sorted_before = _surveyed_copies(dest_root, manifest)
        candidates = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
        for p in candidates:
            where = self._classify(p, report)
            if where is None:
                continue
            key, sub = where
            report.counts[key] += 1
            dest = inside(dest_root, dest_root / sub / p.name, str(p))
            rel = dest.relative_to(dest_root).as_posix()
            earlier = sorted_before.get((sub.as_posix(), p.name))
            if earlier not in (None, rel) and not self.overwrite:  # sorted by astrodart reduce
                report.reused.append(str(dest_root / earlier))
                continue
            manifest[rel] = self._place(_Raw(p), dest, {}, [], manifest.get(rel), report)
        write_record(dest_root / SOURCES_MANIFEST, manifest)
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

    def _classify(self, p: Path, report: OrganiseReport):
        """``(key, sub-folder)`` of a raw file, or None (left out, the reason in ``report``)."""
        if not is_fits_path(p):
            if p.suffix.lower() not in (".md", ".txt", ".json", ".jsonl"):
                report.unclassified[str(p)] = "not a FITS file name (.fit/.fits/.fts[.gz])"
            return None
        try:
            fh = FrameHeader.from_file(p)
            return self._destination(str(p), fh, report)
        except FrameError as exc:
            report.unreadable[str(p)] = exc.problem
        except (MissingKeywordError, HeaderValueError) as exc:
            report.unclassified[str(p)] = str(exc).split(": ", 1)[-1]
        return None

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
                 "content": content_id(rec.path), "fixes": history}  # same size+time: cp -p
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

    def _run_survey(self, dest_root: Path) -> OrganiseReport:
        """:meth:`run` with the frames of a survey."""
        report = OrganiseReport(unreadable=dict(self.survey.unreadable),
                                unclassified=dict(self.survey.unclassified),
                                other_targets=dict(self.survey.other_targets))
        manifest = read_record(dest_root / SOURCES_MANIFEST)
        new = {}
        for rec, dest, cards, history in self._plan(dest_root, report):
            dest = inside(dest_root, dest, str(rec.path))
            rel = dest.relative_to(dest_root).as_posix()
            new[rel] = self._place(rec, dest, cards, history, manifest.get(rel), report)
        for rel in sorted(set(manifest) - set(new)):      # our own earlier copies only
            if (dest_root / rel).exists():
                (dest_root / rel).unlink()
                report.removed.append(str(dest_root / rel))
        write_record(dest_root / SOURCES_MANIFEST, new)
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


@dataclass(frozen=True)
class _Raw:
    """A raw file of a header-based run, placed like a surveyed frame."""

    path: Path


def _surveyed_copies(dest_root: Path, manifest: dict) -> dict:
    """``(folder, source name) -> copy`` of the recorded copies (a survey run's are renamed
    when decompressed for a header fix), so a header-based run does not sort a frame twice."""
    return {(str(Path(rel).parent.as_posix()), Path(e["source"]).name): rel
            for rel, e in manifest.items()
            if isinstance(e, dict) and "source" in e and (dest_root / rel).exists()}
