"""Layer 3: the end of stage 1: calibrated frames by filter, masters kept.

:class:`finalize_stage1` moves the final product of each frame's step chain into
``data_dir/<filter>/``, copies the masters into ``data_dir/calibration/`` and deletes
the intermediate step outputs (never raw copies nor masters).
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

from astrodart.calibration.base import CalibrationWarning
from astrodart.frames.io import find_fits, read_header
# the stage-1 steps register their output prefixes, which tell step outputs from raw copies
from astrodart.pipeline import calibrate, chain, cosmic_rays, prepare  # noqa: F401
from astrodart.pipeline.calibration_step import Files, PathLike
from astrodart.pipeline.step import LOG_NAME, known_prefixes, log_event

__all__ = ["finalize_stage1"]

log = logging.getLogger("astrodart")


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [str(value)]
    return [str(v) for v in value]


def _is_master(path: str) -> bool:
    name = Path(path).name.lower()
    if name.startswith("master"):
        return True
    try:
        h = read_header(path)
    except Exception:
        return False
    return "ADMASTER" in h or "NCOMBINE" in h


def _is_step_output(path: str) -> bool:
    """Written by an astrodart step: a known prefix and the engine's provenance keyword."""
    name = Path(path).name
    if not any(name.startswith(p) for p in known_prefixes()):
        return False
    try:
        return "ADSTEP01" in read_header(path)
    except Exception:
        return False


def _final_products(directory: str) -> list[str]:
    """The outermost step output per raw frame: a step output that no other step output
    extends with a further prefix."""
    outs = [f for f in find_fits(directory) if _is_step_output(f)]
    names = [Path(f).name for f in outs]
    extended = {m[len(p) :] for m in names for p in known_prefixes() if m.startswith(p)}
    return [f for f, n in zip(outs, names) if n not in extended]


class finalize_stage1:  # noqa: N801
    """Arrange the calibrated science frames by filter and keep the masters.

    For each science folder (``object/<filter>/``) the final products of the step chain
    (the outermost step output of each frame, e.g. ``flatfield_corrected_...``) are moved
    into ``data_dir/<filter>/``; the master frames found in the calibration folders are
    copied into ``data_dir/calibration/``. Raw copies and masters are never deleted
    (the original deleted the bias/dark/flat folders, masters included); the
    intermediate step outputs are deleted unless ``keep_intermediates``.

    Parameters
    ----------
    data_dir : str
        ``reduced_data/YYMMDD/<target>/``.
    object_dir : str or list of str
        Science folders (from ``get_directory(data_dir).science()``).
    bias_dir, dark_dir, flatfield_dir, flatdark_dir : str or list of str, optional
        Calibration folders whose masters are kept in ``calibration/``.
    keep_intermediates : bool
        Keep the intermediate step outputs (``trimmed_``, ``deviation_`` ...).

    Notes
    -----
    ``.run()`` is idempotent: a second call returns the same folders and files.
    ``get_directory(data_dir).science_final()`` finds the same frames another day.
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
                    dest = calib / name
                    if Path(f).resolve() != dest.resolve():
                        shutil.copy2(f, dest)
                    kept.append(str(dest))
                elif not self.keep_intermediates and _is_step_output(f):
                    os.remove(f)
                    deleted.append(f)
        return kept, deleted

    def _arrange(self, d: str, deleted: list) -> Path:
        """Move the final products of science folder ``d`` into ``data_dir/<filter>/``
        and delete its intermediate outputs (appended to ``deleted``) unless
        ``keep_intermediates``; return the filter folder."""
        dest_dir = self.data_dir / Path(d).name
        finals = _final_products(d)
        if finals:
            dest_dir.mkdir(exist_ok=True)
            for f in finals:
                os.replace(f, dest_dir / Path(f).name)
        if not self.keep_intermediates:
            for f in find_fits(d):
                if _is_step_output(f):
                    os.remove(f)
                    deleted.append(f)
        return dest_dir

    def run(self) -> tuple[list[str], list[list[str]]]:
        """Move, copy and clean; return ``(directories, files)``: one folder per filter
        (with a trailing separator) and its calibrated frames.

        Returns
        -------
        directories : list of str
            One folder per filter, with a trailing separator.
        files : list of list of str
            The calibrated frames of each folder.

        Raises
        ------
        FileNotFoundError
            ``data_dir`` does not exist.
        """
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"{self.data_dir}: no such reduction folder")
        calib = self.data_dir / "calibration"
        kept, deleted = self._keep_masters(calib)
        directories, files = [], []
        for d in self.object_dirs:
            dest_dir = self._arrange(d, deleted)
            present = find_fits(dest_dir)
            if not present:
                warnings.warn(
                    f"finalize_stage1: no calibrated frames in {d} (run the step chain first)",
                    CalibrationWarning,
                    stacklevel=2,
                )
                continue
            directories.append(str(dest_dir) + os.sep)
            files.append(present)
        log_event(
            self.data_dir / LOG_NAME,
            step="finalize_stage1",
            directories=directories,
            n_files=[len(f) for f in files],
            masters_kept=kept,
            intermediates_deleted=len(deleted),
        )
        log.info("finalize_stage1: %d folders, masters kept in %s", len(directories), calib)
        return directories, files
