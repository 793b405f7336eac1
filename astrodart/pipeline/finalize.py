"""Layer 3: the end of stage 1: calibrated frames by filter, masters kept.

:class:`finalize_stage1` moves the final product of each frame's step chain into
``data_dir/<filter>/``, records them (:data:`astrodart.pipeline.runlog.SCIENCE_MANIFEST`,
read by ``get_directory(data_dir).science_final()``), copies the masters into
``data_dir/calibration/`` and deletes the intermediate step outputs (never raw copies
nor masters).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from astrodart.calibration.base import CalibrationWarning
from astrodart.exceptions import warn, warning_tally
from astrodart.frames.checks import check_output_dir
from astrodart.frames.io import find_fits, read_header, strip_fits_suffix
from astrodart.frames.planes import PLANES, plane_cards, plane_hdu

# the stage-1 steps register their output prefixes, which tell step outputs from raw copies
from astrodart.pipeline import calibrate, chain, cosmic_rays, prepare  # noqa: F401
from astrodart.pipeline.calibration_step import Files, PathLike
from astrodart.pipeline.runlog import LOG_NAME, SCIENCE_MANIFEST, log_event
from astrodart.pipeline.step import known_prefixes
from astrodart.pipeline.tree import (
    RESERVED_DIRS,
    _dir_str,
    folder_name,
    inside,
    is_combination,
    read_record,
    write_record,
)

__all__ = ["finalize_stage1"]

log = logging.getLogger("astrodart")


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [str(value)]
    return [str(v) for v in value]


def compress_planes(path) -> bool:
    """Rewrite a frame file's plain ``UNCERT``/``MASK`` planes tile-compressed
    (:func:`astrodart.frames.planes.plane_hdu`), atomically; the primary HDU is kept.

    Parameters
    ----------
    path : str or pathlib.Path
        A frame written by :func:`astrodart.frames.io.write_frame`.

    Returns
    -------
    bool
        True when the file was rewritten, False when it had no plain plane.
    """
    import numpy as np
    from astropy.io import fits

    from astrodart.frames.io import write_hdulist

    with fits.open(path, memmap=False) as hdul:
        plain = [i for i, h in enumerate(hdul)
                 if i > 0 and h.name in PLANES and type(h) is fits.ImageHDU]
        if not plain:
            return False
        hdus = [h if i not in plain else
                plane_hdu(np.asarray(h.data), h.name, plane_cards(h.header))
                for i, h in enumerate(hdul)]
        write_hdulist(fits.HDUList(hdus), path, overwrite=True)
    return True


def _is_master(path: str) -> bool:
    name = Path(path).name.lower()
    if name.startswith("master"):
        return True
    try:
        h = read_header(path)
    except Exception:
        return False
    return is_combination(h)


def _steps(path: str) -> tuple | None:
    """The steps that made a file (``ADSTEP01``, ``ADSTEP02`` ...), or None when it is no
    one-frame step output (no known prefix, no ``ADSTEP01``, or a combination)."""
    if not any(Path(path).name.startswith(p) for p in known_prefixes()):
        return None
    try:
        h = read_header(path)
    except Exception:
        return None
    if "ADSTEP01" not in h or is_combination(h):
        return None
    steps, n = [], 1
    while f"ADSTEP{n:02d}" in h:
        steps.append(str(h[f"ADSTEP{n:02d}"]))
        n += 1
    return tuple(steps)


def _is_step_output(path: str) -> bool:
    """Written by a one-frame astrodart step (a known prefix and ``ADSTEP01``)."""
    return _steps(path) is not None


def _final_products(directory: str) -> list[str]:
    """The final product per raw frame of ``directory`` (see :func:`_choose`)."""
    outputs = {f: s for f in find_fits(directory) if (s := _steps(f)) is not None}
    return sorted(p for p, _ in _choose(outputs, {})[0].values())


def _frame_key(name: str) -> str:
    """The raw frame a step output comes from: its name without the step prefixes."""
    prefixes = known_prefixes()
    stripped = True
    while stripped:
        stripped = False
        for p in prefixes:
            if name.startswith(p):
                name, stripped = name[len(p):], True
    return strip_fits_suffix(name)


def _is_partial(steps: tuple, chains: set) -> bool:
    """A chain that another known chain continues (e.g. only ``trimmer`` when others went on)."""
    return any(len(c) > len(steps) and c[: len(steps)] == steps for c in chains)


def _choose(outputs: dict, earlier: dict) -> tuple[dict, dict]:
    """The final product per raw frame among ``outputs`` (``path -> steps``).

    Per raw frame, the output of the longest chain (the newest on a tie); it is final
    unless its chain is only the start of a chain another frame (or an earlier
    finalized frame, ``earlier``: ``name -> steps``) went through. Returns
    ``(final: key -> (path, steps), partial: key -> steps)``.
    """
    best: dict[str, tuple] = {}
    for path, steps in outputs.items():
        key = _frame_key(Path(path).name)
        rank = (len(steps), os.stat(path).st_mtime_ns)
        if key not in best or rank > best[key][2]:
            best[key] = (path, steps, rank)
    chains = {b[1] for b in best.values()} | {tuple(s) for s in earlier.values()}
    final, partial = {}, {}
    for key, (path, steps, _) in best.items():
        if _is_partial(steps, chains):
            partial[key] = steps
        else:
            final[key] = (path, steps)
    return final, partial


class finalize_stage1:  # noqa: N801
    """Arrange the calibrated science frames by filter and keep the masters.

    For each science folder (``object/<filter>/``) the final product of each frame's
    step chain (e.g. ``flatfield_corrected_...``) is moved into ``data_dir/<filter>/``
    (its uncertainty and mask planes compressed when the steps wrote them plain,
    :func:`compress_planes`) and recorded there; the master frames found in the calibration folders are copied
    into ``data_dir/calibration/``. Raw copies and masters are never deleted (the
    original deleted the bias/dark/flat folders, masters included); the intermediate
    step outputs are deleted unless ``keep_intermediates``.

    Parameters
    ----------
    data_dir : str
        ``reduced_data/YYMMDD/<target>/``.
    object_dir : str or list of str
        Science folders (from ``get_directory(data_dir).science()``); the name of each
        (the filter) names its folder of calibrated frames.
    bias_dir, dark_dir, flatfield_dir, flatdark_dir : str or list of str, optional
        Calibration folders whose masters are kept in ``calibration/``.
    keep_intermediates : bool
        Keep the intermediate step outputs (``trimmed_``, ``deviation_`` ...).

    Raises
    ------
    ValueError
        An ``object_dir`` whose name is not a safe filter folder name, or is a reserved
        folder of the tree (``object``, ``calibration`` ...).

    Notes
    -----
    What is moved is decided from provenance, not names alone: a file counts when its
    header says a one-frame step made it (``ADSTEPnn``) and it is no combination (a
    master or a stack, ``NCOMBINE``/``ADMASTER``, is never moved). Per raw frame the
    product of the longest chain is taken; a frame whose chain stopped early (e.g. only
    ``trimmed_`` while the others, or the frames finalized before, went through the whole
    chain) is not moved: a warning gives their number. A newer complete product of an
    already finalized frame replaces it.

    ``.run()`` is idempotent: a second call returns the same folders and files.
    ``get_directory(data_dir).science_final()`` finds the same frames another day, and
    only those: a stack written into ``<filter>/`` afterwards (the guide's
    ``Combined_image_<filter>.fits``) is not one of them.
    """

    def __init__(
        self,
        data_dir: PathLike,
        object_dir: PathLike | Files,
        bias_dir: PathLike | Files | None = None,
        dark_dir: PathLike | Files | None = None,
        flatfield_dir: PathLike | Files | None = None,
        flatdark_dir: PathLike | Files | None = None,
        *,
        keep_intermediates: bool = False,
    ):
        self.data_dir = Path(data_dir)
        self.object_dirs = _as_list(object_dir)
        for d in self.object_dirs:
            name = folder_name(Path(d).name, "object_dir")
            if name in RESERVED_DIRS:
                raise ValueError(f"object_dir={d!r}: its name {name!r} is a reserved folder of "
                                 "the tree; give the filter folders, e.g. object/<filter>/")
        self.calib_dirs = (
            _as_list(bias_dir)
            + _as_list(dark_dir)
            + _as_list(flatfield_dir)
            + _as_list(flatdark_dir)
        )
        self.keep_intermediates = bool(keep_intermediates)

    def _keep_masters(self, calib: Path) -> tuple[list[str], list[str]]:
        """Copy the masters of the calibration folders into ``calib`` (names qualified
        by their folder when two share a name); delete the intermediate step outputs
        there unless ``keep_intermediates``. Returns ``(kept, deleted)`` paths."""
        kept, deleted = [], []
        taken: dict[str, str] = {}
        for d in self.calib_dirs:
            for f in find_fits(d):
                if _is_master(f):
                    calib.mkdir(exist_ok=True)
                    name = Path(f).name
                    if name in taken and taken[name] != str(Path(f).resolve()):
                        # same name in two folders (e.g. dark/10 and dark/60): qualify it
                        try:
                            rel = Path(f).parent.resolve().relative_to(self.data_dir.resolve())
                        except ValueError:
                            rel = Path(Path(f).parent.name)
                        name = "_".join(rel.parts) + "_" + name
                    taken[name] = str(Path(f).resolve())
                    dest = inside(self.data_dir, calib / name, f)
                    if Path(f).resolve() != dest.resolve():
                        shutil.copy2(f, dest)
                    kept.append(str(dest))
                elif not self.keep_intermediates and _steps(f) is not None:
                    os.remove(f)
                    deleted.append(f)
        return kept, deleted

    def _arrange(self, d: str, entry: dict, deleted: list) -> tuple[Path, int]:
        """Move the final products of science folder ``d`` into ``data_dir/<filter>/``,
        update its record ``entry`` (``{'frames': {name: steps}}``) and delete the other
        step outputs (appended to ``deleted``) unless ``keep_intermediates``; return the
        filter folder and the number of frames left out (chain stopped early)."""
        dest_dir = inside(self.data_dir, self.data_dir / Path(d).name, f"object_dir={d!r}")
        if "frames" not in entry:  # a folder finalized before the record existed
            entry["frames"] = {Path(f).name: list(s) for f in find_fits(dest_dir)
                               if (s := _steps(f)) is not None}
        frames = {n: s for n, s in entry["frames"].items() if (dest_dir / n).is_file()}
        outputs = {f: s for f in find_fits(d) if (s := _steps(f)) is not None}
        final, partial = _choose(outputs, frames)
        by_key = {_frame_key(n): n for n in frames}
        for key, (path, steps) in final.items():
            old = by_key.get(key)
            dest_dir.mkdir(exist_ok=True)
            os.replace(path, dest_dir / Path(path).name)
            compress_planes(dest_dir / Path(path).name)  # a chain of steps wrote it plain
            if old is not None and old != Path(path).name:  # superseded by the new product
                (dest_dir / old).unlink(missing_ok=True)
                frames.pop(old)
            frames[Path(path).name] = list(steps)
        entry["frames"] = frames
        if not self.keep_intermediates:
            for f in outputs:
                if Path(f).exists():
                    os.remove(f)
                    deleted.append(f)
        left_out = [k for k in partial if k not in by_key]
        if left_out:
            warn(f"finalize_stage1: frames whose step chain stopped early were left out "
                 f"(e.g. {left_out[0]}: {' -> '.join(partial[left_out[0]])})",
                 CalibrationWarning, item=d)
        return dest_dir, len(left_out)

    def run(self) -> tuple[list[str], list[list[str]]]:
        """Move, copy and clean; return ``(directories, files)``: one folder per filter
        (with a trailing separator) and its calibrated frames.

        Returns
        -------
        directories : list of str
            One folder per filter, with a trailing separator.
        files : list of list of str
            The calibrated frames of each folder: those recorded as this folder's
            science frames (never a stack or another file written there).

        Raises
        ------
        FileNotFoundError
            ``data_dir`` does not exist.
        PermissionError
            ``data_dir`` is read-only (checked before anything is moved).
        """
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"{self.data_dir}: no such reduction folder")
        check_output_dir("data_dir", self.data_dir, owner="finalize_stage1")
        with warning_tally():
            return self._run()

    def _run(self) -> tuple[list[str], list[list[str]]]:
        """:meth:`run` after its checks."""
        calib = self.data_dir / "calibration"
        kept, deleted = self._keep_masters(calib)
        record = read_record(self.data_dir / SCIENCE_MANIFEST)
        filters = record.setdefault("filters", {})
        directories, files, left_out = [], [], 0
        for d in self.object_dirs:
            entry = filters.setdefault(Path(d).name, {})
            dest_dir, n_left = self._arrange(d, entry, deleted)
            left_out += n_left
            present = sorted(str(dest_dir / n) for n in entry["frames"])
            if not present:
                filters.pop(Path(d).name)
                warn("finalize_stage1: no calibrated frames in a science folder (run the step "
                     "chain first)", CalibrationWarning, item=d)
                continue
            directories.append(_dir_str(dest_dir))
            files.append(present)
        write_record(self.data_dir / SCIENCE_MANIFEST, record)
        log_event(
            self.data_dir / LOG_NAME,
            step="finalize_stage1",
            directories=directories,
            n_files=[len(f) for f in files],
            left_out=left_out,
            masters_kept=kept,
            intermediates_deleted=len(deleted),
        )
        log.info("finalize_stage1: %d folders, masters kept in %s", len(directories), calib)
        return directories, files
