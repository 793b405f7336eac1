"""Layer 3: what a finished reduction leaves on disk: disk used, intermediates removed.

What a night's reduction keeps is what an astronomer keeps: the masters, the calibrated
frames (float32 pixels, lossless; their uncertainty and mask planes tile-compressed by
:func:`astrodart.frames.io.write_frame`), the stacks, the tables, the light curve and
the summary. Two kinds of file are intermediates, recomputable and large:

- the aligned frames (``<night>/aligned/``): the calibrated frames resampled onto the
  reference grid, needed only to make the stack; the align step remakes them;
- the sorted copies of the raw frames (``<night>/{bias,dark,flat,flatdark,object}/``):
  copies of a raw night that is kept elsewhere; the organise step copies them again.

:func:`remove_intermediate` deletes them (each only once what replaces it exists: the
stack, the calibrated frames and the masters) and returns a :class:`TidyReport` that
says what went, how many bytes, and how to get it back. ``astrodart reduce`` and
``astrodart demo`` call it at the end of every run unless ``--keep-intermediate``;
:func:`disk_usage` and :func:`folder_bytes` measure the result against the raw night.

A re-run needs the aligned frames only to make a stack again: removing them leaves a
record (:data:`ALIGNED_RECORD`) of the stack each filter's frames made and the content
identity of the calibrated frames they came from; while those hold, :func:`stacks_stand`
tells the night runner to keep the stacks instead of aligning again
(:func:`forget_removed` drops the records: ``--keep-intermediate``, a redone stack).
The sorted raw copies are copied again by the organise step of every run (the data tree
lists its frames from them) and removed again at its end.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ALIGNED_RECORD",
    "INTERMEDIATES",
    "TidyReport",
    "disk_usage",
    "folder_bytes",
    "forget_removed",
    "remove_intermediate",
    "stacks_stand",
]

#: Left in ``<night>/aligned/`` when its frames are removed: per filter, the stack they made
#: and the content identity of the calibrated frames they were aligned from.
ALIGNED_RECORD = "removed_aligned.json"

#: Kinds of intermediate file: what they are and how to get them back.
INTERMEDIATES = {
    "aligned": ("aligned frames (calibrated frames resampled onto the reference grid)",
                "the align step remakes them from the calibrated frames: run again with "
                "--keep-intermediate (`astrodart reduce NIGHT --out OUT --only align "
                "--keep-intermediate`; the demo: `astrodart demo --keep-intermediate`)"),
    "sorted_raw": ("sorted copies of the raw frames (the raw night itself is untouched)",
                   "the organise step copies them again from the raw night: `astrodart "
                   "reduce NIGHT --out OUT --only organise --keep-intermediate`"),
    "lab_frames": ("the detector lab's bias-subtracted and calibrated frame folders",
                   "run the detector_lab notebook again (`astrodart notebooks detector_lab`)"),
    "duplicate_masters": ("second copies of the masters beside their frames (the same bytes "
                          "as in calibration/)",
                          "nothing to get back: each path stays, as a hard link to the one "
                          "copy in calibration/"),
}


def folder_bytes(*folders) -> int:
    """Bytes of the files under some folders (missing folders count 0; hard links once).

    Parameters
    ----------
    *folders : str or pathlib.Path
        Folders (or single files).

    Returns
    -------
    int
        Total size of the files they hold.
    """
    seen, total = set(), 0  # a file hard-linked twice is on the disk once
    for folder in folders:
        folder = Path(folder)
        files = [folder] if folder.is_file() else folder.rglob("*") if folder.is_dir() else []
        for p in files:
            st = p.lstat()
            if p.is_file() and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def disk_usage(root, night) -> tuple[int, int]:
    """Disk used by a demo run, against the raw night it started from.

    Parameters
    ----------
    root : str or pathlib.Path
        The project folder holding ``uncal_data/`` and ``reduced_data/``.
    night : str or pathlib.Path
        The raw night folder (``uncal_data/YYMMDD/``).

    Returns
    -------
    raw_bytes : int
        Bytes of the files in ``night``.
    total_bytes : int
        Bytes of the files in ``root/uncal_data`` and ``root/reduced_data`` together.
    """
    root = Path(root)
    return folder_bytes(night), folder_bytes(root / "uncal_data", root / "reduced_data")


@dataclass
class TidyReport:
    """What :func:`remove_intermediate` deleted.

    Parameters
    ----------
    removed : dict
        ``{kind: [paths]}`` with the kinds of :data:`INTERMEDIATES`.
    nbytes : dict
        ``{kind: bytes}`` deleted.
    """

    removed: dict = field(default_factory=dict)
    nbytes: dict = field(default_factory=dict)

    @property
    def files(self) -> list[Path]:
        """Every file deleted."""
        return [p for paths in self.removed.values() for p in paths]

    @property
    def total_bytes(self) -> int:
        """Bytes deleted in all."""
        return sum(self.nbytes.values())

    def to_dict(self) -> dict:
        """The report for ``summary.json``.

        Returns
        -------
        dict
            ``{kind: {'what', 'files', 'MB', 'folders', 'get_back'}}`` for each kind that
            lost files.
        """
        out = {}
        for kind, paths in self.removed.items():
            if paths:
                what, back = INTERMEDIATES[kind]
                out[kind] = {"what": what, "files": len(paths),
                             "MB": round(self.nbytes.get(kind, 0) / 1e6, 1),
                             "folders": sorted({str(p.parent) for p in paths}),
                             "get_back": back}
        return out

    def lines(self) -> list[str]:
        """One line per kind removed, with how to get it back (for the last screen).

        Returns
        -------
        list of str
            Empty when nothing was removed.
        """
        return [f"{'hard-linked' if kind == 'duplicate_masters' else 'removed'} {d['files']} "
                f"{kind.replace('_', ' ')} files ({d['MB']:.0f} MB): {d['what']}; to get them "
                f"back: {d['get_back']}" for kind, d in self.to_dict().items()]


def _stack_name(filt: str) -> str:
    """The stack of a filter as :func:`astrodart.pipeline.stack.stack` names it by default."""
    return "Combined_image_{}.fits".format(re.sub(r"[^\w.+-]+", "_", str(filt)))


def _aligned(night: Path) -> list[Path]:
    """Aligned frames of a night, once a stack of them exists (recorded before removal)."""
    from astrodart.frames.identity import content_id
    from astrodart.pipeline.organise import get_directory
    from astrodart.pipeline.tree import read_record, write_record

    if not any(night.glob("stacks/*.fit*")):
        return []
    paths = sorted(p for p in (night / "aligned").rglob("aligned_*.fit*") if p.is_file())
    record = read_record(night / "aligned" / ALIGNED_RECORD)
    for _, files, filt in zip(*get_directory(str(night) + "/").science_final()):
        if (night / "stacks" / _stack_name(filt)).is_file() and any(
                p.parent.name == filt for p in paths):
            record[filt] = {"stack": _stack_name(filt),
                            "calibrated": {Path(f).name: content_id(f) for f in files}}
    if paths:
        write_record(night / "aligned" / ALIGNED_RECORD, record)
    return paths


def forget_removed(root) -> int:
    """Forget the records of removed aligned frames, so that the next run aligns again
    (``--keep-intermediate``, or a stack redone) instead of keeping the stacks as they stand.

    Parameters
    ----------
    root : str or pathlib.Path
        Project or output folder holding ``reduced_data/``.

    Returns
    -------
    int
        Records deleted.
    """
    records = list(Path(root).glob(f"reduced_data/*/*/aligned/{ALIGNED_RECORD}"))
    for p in records:
        p.unlink()
    return len(records)


def stacks_stand(data_dir, filters, calibrated: dict) -> dict:
    """The stacks a re-run can keep without aligning again: their aligned frames were
    removed (:func:`remove_intermediate`) and the calibrated frames are those they came from.

    Parameters
    ----------
    data_dir : str or pathlib.Path
        The night's folder (``reduced_data/DATE/TARGET/``).
    filters : sequence of str
        The filters of the run.
    calibrated : dict
        Filter -> this run's calibrated frames.

    Returns
    -------
    dict
        Filter -> stack path, for every filter, or empty when any filter must be aligned
        (no record, a stack missing, or a calibrated frame added, removed or changed).
    """
    from astrodart.frames.identity import content_id
    from astrodart.pipeline.tree import read_record

    data_dir = Path(data_dir)
    record = read_record(data_dir / "aligned" / ALIGNED_RECORD)
    out = {}
    for filt in filters:
        entry, files = record.get(filt), calibrated.get(filt) or []
        stack = data_dir / "stacks" / str((entry or {}).get("stack", ""))
        if (not entry or not stack.is_file() or any((data_dir / "aligned" / filt).glob("aligned_*"))
                or entry.get("calibrated") != {Path(f).name: content_id(f) for f in files}):
            return {}
        out[filt] = str(stack)
    return out


def _sorted_raw(night: Path, root: Path, raw_elsewhere: bool) -> list[Path]:
    """The organiser's copies of raw frames, once the night is calibrated."""
    from astrodart.pipeline.organise import get_directory

    tree = get_directory(str(night) + "/")
    _, final, _ = tree.science_final()
    if not (final and all(final) and tree.calibration()):
        return []
    if raw_elsewhere:  # the sorted copies, as get_directory lists them
        out = [Path(p) for p in tree.bias()[1]]
        for group in (tree.dark()[1], tree.flatdark()[1], tree.flatfield()[1],
                      tree.science()[1]):
            out += [Path(p) for files in group for p in files]
        return out
    raw_dir = root / "uncal_data" / night.parent.name
    return [p for kind in ("bias", "dark", "flat", "object") for p in (night / kind).rglob("*")
            if p.is_file() and (raw_dir / p.name).is_file()
            and p.stat().st_size == (raw_dir / p.name).stat().st_size]


def remove_intermediate(root, raw_elsewhere: bool = False) -> TidyReport:
    """Delete the intermediates of a reduction; only files astrodart wrote.

    Removed, each only when what replaces it exists: the aligned frames
    (``<night>/aligned/``) once a stack is in ``<night>/stacks/``; the organised copies of
    the raw frames (``<night>/{bias,dark,flat,object}/``, byte-for-byte the files of
    ``uncal_data/<date>/``, so a new ``data_organiser`` run restores them) once the
    calibrated frames and the masters are in ``<night>/<filter>/`` and
    ``<night>/calibration/``; the detector lab's bias-subtracted and calibrated frame
    folders (its masters and bad-pixel maps stay). Masters written twice (in their
    sorted folder and in ``calibration/``, the same bytes) become one file with two paths
    (a hard link). Calibrated frames, masters, stacks, tables, figures and notebooks are kept.

    Parameters
    ----------
    root : str or pathlib.Path
        Project folder holding ``uncal_data/`` and ``reduced_data/``.
    raw_elsewhere : bool
        The raw night is kept outside ``root`` (``astrodart reduce`` sorts copies of a
        night folder it never writes): the sorted copies go once calibrated, without
        comparing them with ``uncal_data/``.

    Returns
    -------
    TidyReport
        The files deleted by kind, their sizes, and how to get each kind back.
    """
    root = Path(root)
    report = TidyReport({k: [] for k in INTERMEDIATES}, {k: 0 for k in INTERMEDIATES})
    for night in sorted(p for p in (root / "reduced_data").glob("[0-9]" * 6 + "/*") if p.is_dir()):
        report.removed["aligned"] += _aligned(night)
        report.removed["sorted_raw"] += _sorted_raw(night, root, raw_elsewhere)
        linked, nbytes = _link_duplicate_masters(night)
        report.removed["duplicate_masters"] += linked
        report.nbytes["duplicate_masters"] += nbytes
    lab = root / "reduced_data" / "detector_lab"
    for sub in ("dark", "flat", "science_bias_dark", "science_calibrated"):
        report.removed["lab_frames"] += (p for p in lab.glob(f"*/{sub}/*.fit*") if p.is_file())
    for kind, paths in report.removed.items():
        if kind == "duplicate_masters":
            continue
        for p in paths:
            report.nbytes[kind] += p.stat().st_size
            p.unlink()
    return report


def _link_duplicate_masters(night: Path) -> tuple[list[Path], int]:
    """Replace the masters in the sorted folders that are byte-identical to the ones in
    ``calibration/`` by hard links to those (each path stays; one copy on disk)."""
    import filecmp
    import os

    linked, nbytes = [], 0
    kept = {p.name: p for p in (night / "calibration").glob("*.fit*") if p.is_file()}
    for kind in ("bias", "dark", "flat", "flatdark"):
        for p in sorted((night / kind).rglob("*.fit*")):
            src = kept.get(p.name)
            if (src is None or not p.is_file() or os.path.samefile(p, src)
                    or p.stat().st_size != src.stat().st_size
                    or not filecmp.cmp(p, src, shallow=False)):
                continue
            tmp = p.with_name(p.name + ".link.tmp")
            tmp.unlink(missing_ok=True)
            os.link(src, tmp)
            os.replace(tmp, p)
            linked.append(p)
            nbytes += src.stat().st_size
    return linked, nbytes
