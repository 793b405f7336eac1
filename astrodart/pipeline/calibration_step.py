"""Layer 3: the base of the stage-1 file-level steps and what they share.

:class:`CalibrationStep` is a one-to-one :class:`~astrodart.pipeline.step.Step` whose
outputs are sanitised (non-finite pixels repaired, masked and counted), whose inputs and
masters are checked before any frame is processed, and which raises (not returns an
empty list) when every frame failed. Masters are read once per process
(:func:`load_master`) and compared with the frames (shape, binning) with messages that
name both files and the fix.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from astrodart import calibration as cal
from astrodart.calibration.base import CalibrationError, CalibrationWarning
from astrodart.exceptions import warn
from astrodart.frames.header import FrameHeader
from astrodart.frames.io import _unit_from_header, read_frame, read_header, write_frame
from astrodart.pipeline.step import Step, check_kwargs

__all__ = ["CalibrationStep", "load_master", "KW_NONFINITE", "PathLike", "Files", "Overwrite"]

log = logging.getLogger("astrodart")

PathLike = str | os.PathLike
Files = Sequence[str | os.PathLike]
Overwrite = bool | str

#: Header keyword counting non-finite pixels repaired in a step's output.
KW_NONFINITE = "ADNNONF"


# ---------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------
def _one_path(value, what: str) -> str:
    """A single existing file path from a str/Path or a one-element list (what
    ``image_combination(...).run()`` may return)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise CalibrationError(f"{what}: expected one file, got {len(value)}: {list(value)}")
        value = value[0]
    if value is None:
        raise CalibrationError(f"{what}: no file given")
    p = Path(value)
    if not p.is_file():
        raise FileNotFoundError(
            f"{p}: {what} does not exist; build it first (master_frame or "
            "image_combination) and pass the path it returns"
        )
    return str(p)


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int) -> CCDData:
    return read_frame(path)


def load_master(path) -> CCDData:
    """Read a master frame once per process (cached by path and modification time).

    Parameters
    ----------
    path : str or pathlib.Path
        The master's FITS file.

    Returns
    -------
    CCDData
        The master, shared between callers: do not modify it (the functions of
        :mod:`astrodart.calibration` never do).
    """
    p = Path(path).resolve()
    return _read_cached(str(p), p.stat().st_mtime_ns)


def _shape_from_header(header) -> tuple[int, int]:
    return int(header.get("NAXIS2", 0)), int(header.get("NAXIS1", 0))


def _sanitise(ccd: CCDData, path: str) -> CCDData:
    """Repair non-finite pixels (interpolated from neighbours, masked, counted in the
    header) so that no NaN leaves a step unreported."""
    data = np.asarray(ccd.data)
    bad = ~np.isfinite(data)
    unc_bad = None
    if ccd.uncertainty is not None:
        unc_bad = ~np.isfinite(np.asarray(ccd.uncertainty.array))
    n = int((bad | unc_bad).sum()) if unc_bad is not None else int(bad.sum())  # pixels
    if n == 0:
        return ccd
    header = ccd.meta if isinstance(ccd.meta, fits.Header) else fits.Header(ccd.meta)
    header[KW_NONFINITE] = (n, "non-finite pixels repaired and masked")
    mask = bad if ccd.mask is None else (np.asarray(ccd.mask, bool) | bad)
    unc = ccd.uncertainty
    if unc_bad is not None and unc_bad.any():
        arr = np.asarray(unc.array, np.float32)
        good_max = np.nanmax(np.where(unc_bad, np.nan, arr)) if (~unc_bad).any() else 1.0
        arr = np.where(unc_bad, good_max, arr)
        unc = StdDevUncertainty(arr)
        mask = mask | unc_bad
    log.warning("%s: %d non-finite pixels repaired and masked (%s)", path, n, KW_NONFINITE)
    return CCDData(
        cal.repair_pixels(data, bad),
        unit=ccd.unit,
        meta=header,
        uncertainty=unc,
        mask=mask,
        wcs=ccd.wcs,
    )


class CalibrationStep(Step):
    """Base of the stage-1 steps: sanitised outputs, an up-front check of the inputs,
    and an error (not an empty list) when every frame failed.

    A subclass sets ``name`` and ``prefix`` and implements :meth:`apply` (and, when it
    has options or masters, ``parameters``, ``masters`` and :meth:`check`).

    Parameters
    ----------
    wdir : str or pathlib.Path
        Folder for the outputs (``<prefix><name>.fits``).
    files : list of str
        Input frames.
    overwrite : bool or {'yes', 'no'}
        Redo outputs that exist.
    executor, workers, progress, log_path
        Engine options (see :class:`astrodart.pipeline.step.Step`).
    compress_planes : bool
        Tile-compress the outputs' uncertainty and mask planes. Off by default: a step's
        output is an intermediate, read once by the next step (a plain plane costs a
        tenth of the CPU on write and on read); ``finalize_stage1`` compresses the final
        products it keeps (:func:`astrodart.pipeline.finalize.compress_planes`).
    **unknown
        Refused with a message naming the step's real options.
    """

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        overwrite: Overwrite = False,
        *,
        executor=None,
        workers: int | None = None,
        progress: bool = True,
        log_path=None,
        compress_planes: bool = False,
        **unknown,
    ):
        self.compress_planes = bool(compress_planes)
        if unknown:  # name the step and its real options, not this base class
            import inspect

            allowed = [
                n
                for n in inspect.signature(type(self).__init__).parameters
                if n not in ("self", "engine")
            ] + ["executor", "workers", "progress", "log_path", "compress_planes"]
            check_kwargs(type(self).__name__, unknown, allowed)
        super().__init__(
            wdir,
            files,
            overwrite,
            executor=executor,
            workers=workers,
            progress=progress,
            log_path=log_path,
        )

    def apply(self, ccd: CCDData, path: str) -> CCDData:
        """The calibration of one frame (override).

        Parameters
        ----------
        ccd : astropy.nddata.CCDData
            The input frame, shape ``(ny, nx)``; not modified.
        path : str
            Its file, for messages.

        Returns
        -------
        astropy.nddata.CCDData
            A new, calibrated frame (non-finite pixels are repaired by :meth:`process`).
        """
        raise NotImplementedError

    def check(self) -> None:
        """Validate options and masters against the inputs before any frame (override).

        Raises
        ------
        CalibrationError
            An option or master does not fit the inputs; the message names the files
            and the fix.
        """

    def process(self, ccd: CCDData, path: str) -> CCDData:
        """:meth:`apply`, then repair and report any non-finite pixel it produced.

        %(frame_parameters)s

        Returns
        -------
        astropy.nddata.CCDData
            The calibrated frame; non-finite pixels (data or uncertainty) interpolated
            from their neighbours, masked and counted in ``ADNNONF``.
        """
        return _sanitise(self.apply(ccd, path), path)

    def execute(self, task) -> dict:
        """Do one frame in a worker: read, :meth:`process`, stamp, seal, write (planes
        compressed only with ``compress_planes``).

        Parameters
        ----------
        task : astrodart.pipeline.step.Task
            One input and its output.

        Returns
        -------
        dict
            :meth:`summary` of the output.
        """
        in_path, out_path = task.inputs[0], task.outputs[0]
        result = self.process(self.read(in_path), in_path)
        self.stamp(result, in_path)
        self.seal(result, task.inputs)
        write_frame(result, out_path, overwrite=True, fsync=self.fsync_outputs,
                    compress=self.compress_planes)
        return self.summary(result)

    def summary(self, ccd: CCDData) -> dict:
        """The count of repaired non-finite pixels, sent back with the output's path.

        Parameters
        ----------
        ccd : astropy.nddata.CCDData
            The output frame.

        Returns
        -------
        dict
            ``{'ADNNONF': n}``, the number of non-finite pixels repaired (0 if none).
        """
        return {KW_NONFINITE: int(ccd.meta.get(KW_NONFINITE, 0) or 0)}

    def run(self) -> list[str]:
        """Process every input; return the output paths in input order.

        Returns
        -------
        list of str
            The output paths, in input order (failed frames left out).

        Raises
        ------
        CalibrationError
            The inputs or masters are incompatible (see :meth:`check`), or every frame
            failed (the message gives the first failure).
        """
        missing = [f for f in self.files if not Path(f).exists()]
        if missing and len(missing) == len(self.files):
            raise FileNotFoundError(
                f"{self.name}: none of the {len(self.files)} input files exists, e.g. {missing[0]}"
            )
        self.check()
        outputs = super().run()
        report = self.report
        if report is not None and report.failed and not outputs:
            first, why = next(iter(report.failed.items()))
            raise CalibrationError(f"{self.name}: every frame failed; {first}: {why}")
        for out in report.written if report else []:
            nbad = report.summaries.get(out, {}).get(KW_NONFINITE, 0)
            if nbad:
                warn(f"{self.name}: non-finite pixels were interpolated and masked ({KW_NONFINITE})",
                     CalibrationWarning, item=f"{out} ({nbad} non-finite)")
        return outputs

    def _first_header(self):
        for f in self.files:
            if Path(f).exists():
                try:
                    return f, read_header(f)
                except Exception:
                    continue
        return None, None


def _frame_header(ccd: CCDData, path: str) -> FrameHeader:
    return FrameHeader(
        ccd.meta if isinstance(ccd.meta, fits.Header) else fits.Header(ccd.meta), path
    )


_ADD_GAIN = " or add GAIN with header_tools(files, {'GAIN': value}).append_header_key()"


def _gain_for(option: float | None, fh: FrameHeader, path: str, unit, *,
              required: bool = True, fix: str = _ADD_GAIN) -> float | None:
    """The gain (e-/ADU) for one frame: the step's ``gain=`` option, else the header's.

    None when neither has one and ``required`` is False; otherwise a
    :class:`CalibrationError` naming the file and the fixes (``fix`` ends the message).
    """
    gain = option if option is not None else fh.gain
    if gain is None and required:
        in_adu = " (data in ADU)" if unit == "adu" else ""
        raise CalibrationError(f"no gain for {path}{in_adu}: pass gain= (e-/ADU){fix}")
    return gain


def _check_master(step_name: str, master_path: str, what: str, files: Sequence[str]) -> None:
    """Compare a master's shape and binning with the first readable input; raise a
    :class:`CalibrationError` naming both files and the fix."""
    mh = read_header(master_path)
    for f in files:
        if not Path(f).exists():
            continue
        try:
            fh = read_header(f)
        except Exception:
            continue
        _compare_geometry(step_name, master_path, what, mh, f, fh)
        mu, fu = _unit_from_header(mh, "adu"), _unit_from_header(fh, "adu")
        if what in ("master bias", "master dark") and mu != fu:
            raise CalibrationError(
                f"{step_name}: {what} {master_path} is in {mu} but {f} is in {fu}; apply "
                "gain_correction to both or to neither"
            )
        return


def _geometry(obj) -> tuple[tuple[int, int], fits.Header]:
    """``(shape, header)`` of a CCDData (its array's shape) or of a header (NAXISn)."""
    if isinstance(obj, CCDData):
        meta = obj.meta if isinstance(obj.meta, fits.Header) else fits.Header(obj.meta)
        return obj.shape, meta
    return _shape_from_header(obj), obj


def _compare_geometry(step_name, master_path, what, master, frame_path, frame) -> None:
    """Raise a :class:`CalibrationError` naming both files and the fix unless the master
    (a CCDData or a header) has the frame's binning and shape."""
    (ms, mh), (fs, fh) = _geometry(master), _geometry(frame)
    mb, fb = FrameHeader(mh, master_path).binning, FrameHeader(fh, frame_path).binning
    if mb != fb:
        raise CalibrationError(
            f"{step_name}: {what} {master_path} has binning {mb[0]}x{mb[1]} but {frame_path} has "
            f"{fb[0]}x{fb[1]}; build the {what} from frames taken with the same binning"
        )
    if ms != fs:
        raise CalibrationError(
            f"{step_name}: {what} {master_path} is {ms[1]}x{ms[0]} px but {frame_path} is "
            f"{fs[1]}x{fs[0]} px; trim the frames and the {what} with the same region (trimmer), "
            f"or build the {what} from frames of this size"
        )
