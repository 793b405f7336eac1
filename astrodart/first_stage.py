"""Stage 1, AstroDART-compatible: from raw frames to calibrated science frames.

``from astrodart.first_stage import *`` gives the classes the AstroDART guides use,
with the same signatures (plus keyword-only options): :class:`trimmer`,
:class:`overscan_correction`, :class:`deviation_calculation`, :class:`gain_correction`,
:class:`cosmic_ray_laplacian_correction`, :class:`cosmic_ray_median_correction`,
:class:`subtract_bias`, :class:`subtract_dark`, :class:`correct_flatfield` and
:class:`finalize_stage1`. Each per-frame class is a :class:`astrodart.pipeline.step.Step`
(resume, parallel map, per-frame error capture, provenance, run log) bound to a pure
function of :mod:`astrodart.calibration.ccd` / :mod:`astrodart.calibration.cosmics`; its
``.run()`` returns the list of output paths (``wdir/<prefix><name>.fits``).

Beyond the original:

* :class:`master_frame` combines bias, dark or flat frames into a master that records
  its inputs (``NCOMBINE``, ``IMCMBnnn``) and its combine settings;
* :class:`dark_interpolation` makes a master dark for an exposure time without darks
  from masters at other exposures (least squares ``D = t A + B`` per pixel);
* :class:`subtract_dark` scales by exposure time, picks the matching master out of
  several, or interpolates between them, and refuses masters of another shape or binning;
* :class:`bad_pixel_map` and :class:`bad_pixel_correction` flag hot and defective pixels
  from the master dark and flat and repair them by interpolation;
* :class:`photon_transfer` measures gain and read noise from flat and bias pairs, and
  :class:`dark_current` the dark current and hot pixels of a master dark;
* :class:`calibration_chain` applies the whole per-frame chain in one pass (each frame
  read once and written once), with the same results and provenance as the classes.

Order matters in one place: the guide removes cosmic rays before the bias and dark.
Hand the cosmic-ray step a bad-pixel map (``mask_file=``) then, or hot pixels are
"cleaned" into holes by the later dark subtraction (they are masked either way).

A typical chain (the astrophotography guide plus darks)::

    rn = photon_transfer(bias_files, flat_files).run()          # no RON in the header?
    b = gain_correction(bias_dir, deviation_calculation(bias_dir,
            trimmer(bias_dir, bias_files, region, 'yes').run(), 'yes', ron=rn.read_noise).run(),
            'yes').run()
    masterbias = master_frame(bias_dir, b, 'masterbias.fits', 'median', 'sigclip', 3, 3).run()
    ...
    directories, files = finalize_stage1(data_dir, object_dir, bias_dir, dark_dir, flat_dir).run()
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from astrodart import __version__
from astrodart.calibration import ccd as cal
from astrodart.calibration import cosmics as crs
from astrodart.calibration import detector as det
from astrodart.calibration.ccd import CalibrationError, CalibrationWarning
from astrodart.frames.io import find_fits, read_frame, read_header, write_frame, write_hdulist
from astrodart.frames.header import FrameHeader, MissingKeywordError
from astrodart.pipeline.step import (
    LOG_NAME,
    Step,
    check_kwargs,
    find_log_path,
    known_prefixes,
    log_event,
    parse_overwrite,
)

__all__ = [
    "trimmer",
    "overscan_correction",
    "deviation_calculation",
    "gain_correction",
    "cosmic_ray_laplacian_correction",
    "cosmic_ray_median_correction",
    "subtract_bias",
    "subtract_dark",
    "correct_flatfield",
    "finalize_stage1",
    "master_frame",
    "dark_interpolation",
    "bad_pixel_map",
    "bad_pixel_correction",
    "calibration_chain",
    "photon_transfer",
    "dark_current",
    "CalibrationError",
    "CalibrationWarning",
]

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
    The returned object is shared: callers must not modify it (core functions never do)."""
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


class _CalibrationStep(Step):
    """Base of the stage-1 steps: sanitised outputs, an up-front check of the inputs,
    and an error (not an empty list) when every frame failed."""

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
        **unknown,
    ):
        if unknown:  # name the step and its real options, not this base class
            import inspect

            allowed = [
                n
                for n in inspect.signature(type(self).__init__).parameters
                if n not in ("self", "engine")
            ] + ["executor", "workers", "progress", "log_path"]
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
        """The calibration of one frame (override)."""
        raise NotImplementedError

    def check(self) -> None:
        """Validate options and masters against the inputs before any frame is processed
        (override); raise :class:`CalibrationError` naming the files and the fix."""

    def process(self, ccd: CCDData, path: str) -> CCDData:
        """:meth:`apply`, then repair and report any non-finite pixel it produced."""
        return _sanitise(self.apply(ccd, path), path)

    def summary(self, ccd: CCDData) -> dict:
        """The count of repaired non-finite pixels (``ADNNONF``), sent back with the path."""
        return {KW_NONFINITE: int(ccd.meta.get(KW_NONFINITE, 0) or 0)}

    def run(self) -> list[str]:
        """Process every input; return the output paths in input order.

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
                warnings.warn(
                    f"{self.name}: {out}: {nbad} non-finite pixels were interpolated and "
                    f"masked ({KW_NONFINITE})",
                    CalibrationWarning,
                    stacklevel=2,
                )
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


# ---------------------------------------------------------------------------------------
# per-frame steps
# ---------------------------------------------------------------------------------------
class trimmer(_CalibrationStep):  # noqa: N801  (AstroDART's public name)
    """Cut a region out of every frame.

    Parameters
    ----------
    wdir : str or pathlib.Path
        Folder for the outputs (``trimmed_<name>.fits``).
    files : list of str
        Input frames.
    region : str
        FITS section ``'[x1:x2,y1:y2]'``: 1-based, inclusive, x (NAXIS1) first.
    overwrite : bool or {'yes', 'no'}
        Redo outputs that exist.
    executor, workers, progress, log_path
        Engine options (see :class:`astrodart.pipeline.step.Step`).

    Raises
    ------
    CalibrationError
        (at ``run``) the region is malformed or does not fit the first frame; the
        message names the file, its size and the valid ranges.
    """

    name = "trimmer"
    prefix = "trimmed_"

    def __init__(
        self, wdir: PathLike, files: Files, region: str, overwrite: Overwrite = False, **engine
    ):
        super().__init__(wdir, files, overwrite, **engine)
        self.region = str(region)

    def parameters(self) -> dict[str, Any]:
        return {"region": self.region}

    def check(self) -> None:
        f, h = self._first_header()
        if h is not None:
            try:
                cal.parse_section(self.region, _shape_from_header(h))
            except CalibrationError as exc:
                raise CalibrationError(f"trimmer: {f}: {exc}") from None

    def apply(self, ccd, path):
        return cal.trim(ccd, self.region)


class overscan_correction(_CalibrationStep):  # noqa: N801
    """Subtract the bias level measured in an overscan strip (ccdproc ``subtract_overscan``).

    Parameters
    ----------
    wdir, files, overwrite
        As :class:`trimmer`; outputs ``overscan_corrected_<name>.fits``.
    region : str
        FITS section of the overscan strip, ``'[x1:x2,y1:y2]'``.
    overscan_axis : {0, 1, None}
        Numpy axis collapsed: 1 for a strip of columns (one level per row), 0 for a
        strip of rows; None: the strip's short axis.
    model : {'median', 'mean', 'constant', 'polynomial'}
        Line-by-line median or mean profile, a single level, or a polynomial of
        ``degree`` fitted to the median profile.
    degree : int
        Polynomial degree.
    executor, workers, progress, log_path
        Engine options.

    Notes
    -----
    Trim the overscan strip away afterwards with :class:`trimmer`.
    """

    name = "overscan_correction"
    prefix = "overscan_corrected_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        region: str,
        overscan_axis: int | None = 1,
        overwrite: Overwrite = False,
        *,
        model: str = "median",
        degree: int = 1,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        if model not in cal.OVERSCAN_MODELS:
            raise CalibrationError(
                f"overscan_correction: model={model!r} unknown; use one of {cal.OVERSCAN_MODELS}"
            )
        if overscan_axis not in (0, 1, None):
            raise CalibrationError(
                f"overscan_correction: overscan_axis={overscan_axis!r}; use 0, 1 or None"
            )
        self.region, self.overscan_axis, self.model, self.degree = (
            str(region),
            overscan_axis,
            model,
            int(degree),
        )

    def parameters(self):
        return {
            "region": self.region,
            "overscan_axis": self.overscan_axis,
            "model": self.model,
            "degree": self.degree,
        }

    def check(self):
        f, h = self._first_header()
        if h is not None:
            try:
                cal.parse_section(self.region, _shape_from_header(h))
            except CalibrationError as exc:
                raise CalibrationError(f"overscan_correction: {f}: {exc}") from None

    def apply(self, ccd, path):
        return cal.subtract_overscan(ccd, self.region, self.overscan_axis, self.model, self.degree)


class deviation_calculation(_CalibrationStep):  # noqa: N801
    """Add an uncertainty plane (standard deviation) of read noise and photon noise.

    ``sigma = sqrt(max(S, 0) * g + RON^2) / g`` in ADU (``sqrt(max(S, 0) + RON^2)`` in
    electrons). Bias frames (``IMAGETYP`` bias or ``EXPTIME`` 0) get read noise only.
    The photon noise of a raw frame includes the bias pedestal; it is taken out again
    when the bias is subtracted (see :mod:`astrodart.calibration.ccd`).

    Parameters
    ----------
    wdir, files, overwrite
        As :class:`trimmer`; outputs ``deviation_<name>.fits``.
    ron : float, optional
        Read noise in electrons; default: the header (``RON``/``RDNOISE``/``READNOIS``).
    gain : float, optional
        Gain in e-/ADU; default: the header (``GAIN``/``EGAIN``). Needed for ADU data.
    executor, workers, progress, log_path
        Engine options.

    Raises
    ------
    CalibrationError
        (per frame, reported with the file name) no read noise given nor in the header,
        or no gain for data in ADU.
    """

    name = "deviation_calculation"
    prefix = "deviation_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        overwrite: Overwrite = False,
        ron: float | None = None,
        gain: float | None = None,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        self.ron, self.gain = ron, gain

    def parameters(self):
        return {"ron": self.ron, "gain": self.gain}

    def check(self):
        f, h = self._first_header()
        if h is None:
            return
        fh = FrameHeader(h, f)
        if self.ron is None and fh.read_noise is None:
            raise CalibrationError(
                f"deviation_calculation: {f}: no read noise given and none in the header (looked "
                f"for {', '.join(FrameHeader.RON_KEYS)}); pass ron= in electrons, add it with "
                "header_tools(files, {'RON': value}).append_header_key(), or measure it with "
                "photon_transfer(bias_files, flat_files).run()"
            )

    def apply(self, ccd, path):
        fh = _frame_header(ccd, path)
        ron = self.ron if self.ron is not None else fh.read_noise
        if ron is None:
            raise CalibrationError(
                f"no read noise for {path}: pass ron= (electrons) or add RON "
                "with header_tools(files, {'RON': value}).append_header_key()"
            )
        gain = self.gain if self.gain is not None else fh.gain
        if ccd.unit == u.adu and gain is None:
            raise CalibrationError(
                f"no gain for {path} (data in ADU): pass gain= (e-/ADU) or add "
                "GAIN with header_tools(files, {'GAIN': value}).append_header_key()"
            )
        exptime = fh.exptime_or_none
        is_bias = fh.frame_type == "bias" or (exptime is not None and exptime == 0)
        if ccd.uncertainty is not None:
            log.info("%s: existing uncertainty plane replaced", path)
        return cal.add_uncertainty(ccd, float(ron), gain, poisson=not is_bias)


class gain_correction(_CalibrationStep):  # noqa: N801
    """Convert frames from ADU to electrons (data and uncertainty times the gain).

    Parameters
    ----------
    wdir, files, overwrite
        As :class:`trimmer`; outputs ``gain_corrected_<name>.fits``.
    gain : float, optional
        e-/ADU; default: the header (``GAIN``/``EGAIN``/``E-GAIN``).
    executor, workers, progress, log_path
        Engine options.

    Raises
    ------
    CalibrationError
        (per frame) no gain, or the frame is already in electrons.
    """

    name = "gain_correction"
    prefix = "gain_corrected_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        overwrite: Overwrite = False,
        gain: float | None = None,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        self.gain = gain

    def parameters(self):
        return {"gain": self.gain}

    def apply(self, ccd, path):
        gain = self.gain if self.gain is not None else _frame_header(ccd, path).gain
        if gain is None:
            raise CalibrationError(
                f"no gain for {path}: pass gain= (e-/ADU) or add GAIN with "
                "header_tools(files, {'GAIN': value}).append_header_key()"
            )
        return cal.gain_correct(ccd, float(gain))


class _CosmicStep(_CalibrationStep):
    """Shared gain, saturation and bad-pixel-mask handling of the cosmic-ray steps."""

    method = "lacosmic"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        overwrite: Overwrite = False,
        gain: float | None = None,
        mask_file: PathLike | None = None,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        self.gain = gain
        self.mask_file = None if mask_file is None else _one_path(mask_file, "bad-pixel map")

    def masters(self):
        return {"bad-pixel map": self.mask_file} if self.mask_file else {}

    def check(self):
        if self.mask_file:
            _check_master(self.name, self.mask_file, "bad-pixel map", self.files)

    def _gain_and_mask(self, ccd, path):
        fh = _frame_header(ccd, path)
        if ccd.unit == u.electron:
            gain = 1.0  # astroscrappy's gain converts to electrons: none needed
        else:
            gain = self.gain if self.gain is not None else fh.gain
            if gain is None:
                raise CalibrationError(
                    f"no gain for {path} (data in ADU): pass gain= (e-/ADU), add "
                    "GAIN with header_tools, or run gain_correction first"
                )
        mask = None
        if self.mask_file:
            bpm = load_master(self.mask_file)
            if bpm.shape != ccd.shape:
                raise CalibrationError(
                    f"bad-pixel map {self.mask_file} is {bpm.shape[::-1]} px but "
                    f"{path} is {ccd.shape[::-1]} px; make the map from masters "
                    "trimmed like the frames"
                )
            mask = np.asarray(bpm.data) > 0
        return gain, mask, fh


class cosmic_ray_laplacian_correction(_CosmicStep):  # noqa: N801
    """Remove cosmic rays with L.A.Cosmic (van Dokkum 2001) through astroscrappy.

    Gain semantics: astroscrappy multiplies the data by ``gain`` to reach electrons; for
    frames in ADU the gain (e-/ADU) is ``gain`` or the header's, for frames already in
    electrons (after :class:`gain_correction`) it is 1 and ``gain`` is ignored. The noise
    model is measured on the frame (:func:`astrodart.calibration.cosmics.noise_variance`), so a
    bias pedestal still in the data does not blunt the detection.

    Parameters
    ----------
    wdir, files, overwrite
        As :class:`trimmer`; outputs ``cosmic_ray_removed_<name>.fits``.
    gain : float, optional
        e-/ADU for frames in ADU.
    sigclip : float
        Laplacian-to-noise detection limit.
    sigfrac, objlim, niter
        astroscrappy's neighbour fraction, fine-structure contrast and iterations.
    satlevel : float, optional
        Saturation in the units of the data; default from ``SATURATE``/``DATAMAX`` (ADU,
        converted to electrons for gain-corrected frames).
    mask_file : str, optional
        Bad-pixel map (:class:`bad_pixel_map`); its pixels are neither flagged nor used.
        Recommended when cosmic rays are removed before dark subtraction, so that hot
        pixels are not "cleaned" into holes.
    executor, workers, progress, log_path
        Engine options.

    Notes
    -----
    Flagged pixels are replaced (astroscrappy 'meanmask') and set in the output's mask;
    the header's ``ADNCRPIX`` counts them.
    """

    name = "cosmic_ray_laplacian_correction"
    prefix = "cosmic_ray_removed_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        overwrite: Overwrite = False,
        gain: float | None = None,
        sigclip: float = 5,
        *,
        sigfrac: float = 0.3,
        objlim: float = 5.0,
        niter: int = 4,
        satlevel: float | None = None,
        mask_file: PathLike | None = None,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, gain=gain, mask_file=mask_file, **engine)
        self.sigclip, self.sigfrac, self.objlim, self.niter = (
            float(sigclip),
            float(sigfrac),
            float(objlim),
            int(niter),
        )
        self.satlevel = satlevel

    def parameters(self):
        return {
            "gain": self.gain,
            "sigclip": self.sigclip,
            "sigfrac": self.sigfrac,
            "objlim": self.objlim,
            "niter": self.niter,
            "satlevel": self.satlevel,
            "noise_model": "measured background + source photon noise",
        }

    def apply(self, ccd, path):
        gain, mask, fh = self._gain_and_mask(ccd, path)
        if self.gain is not None and ccd.unit == u.electron and not np.isclose(self.gain, 1.0):
            log.warning("%s: gain=%s ignored, the frame is already in electrons", path, self.gain)
        sat = self.satlevel
        if sat is None and fh.saturation is not None:
            sat = fh.saturation * (
                float(ccd.meta.get(cal.KW_GAIN_USED, 1.0)) if ccd.unit == u.electron else 1.0
            )
        out, _ = crs.clean_cosmics(
            ccd,
            "lacosmic",
            gain=gain,
            mask=mask,
            satlevel=sat,
            sigclip=self.sigclip,
            sigfrac=self.sigfrac,
            objlim=self.objlim,
            niter=self.niter,
        )
        return out


class cosmic_ray_median_correction(_CosmicStep):  # noqa: N801
    """Remove cosmic rays with the median-filter method (ccdproc ``cosmicray_median``,
    like IRAF's), configured not to eat star cores.

    A pixel is a hit when it exceeds the ``mbox`` median by ``thresh`` times its noise
    *and* by ``contrast`` times its own 3x3 median's excess (a star raises its 3x3 median
    almost as much as its peak; a cosmic ray does not). See
    :func:`astrodart.calibration.cosmics.median_cosmics`.

    Parameters
    ----------
    wdir, files, overwrite
        As :class:`trimmer`; outputs ``cosmic_ray_median_removed_<name>.fits``.
    gain : float, optional
        e-/ADU for frames in ADU (ignored for frames in electrons).
    mbox, rbox, gbox : int
        Median box for detection, median box for replacement, growth box (px).
    thresh : float
        Detection threshold (sigma).
    contrast : float
        Sharpness required of a hit (0 disables the star-core protection).
    mask_file : str, optional
        Bad-pixel map whose pixels are left alone.
    executor, workers, progress, log_path
        Engine options.
    """

    name = "cosmic_ray_median_correction"
    prefix = "cosmic_ray_median_removed_"
    method = "median"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        overwrite: Overwrite = False,
        gain: float | None = None,
        mbox: int = 11,
        rbox: int = 11,
        gbox: int = 5,
        *,
        thresh: float = 5.0,
        contrast: float = 3.0,
        mask_file: PathLike | None = None,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, gain=gain, mask_file=mask_file, **engine)
        self.mbox, self.rbox, self.gbox = int(mbox), int(rbox), int(gbox)
        self.thresh, self.contrast = float(thresh), float(contrast)

    def parameters(self):
        return {
            "gain": self.gain,
            "mbox": self.mbox,
            "rbox": self.rbox,
            "gbox": self.gbox,
            "thresh": self.thresh,
            "contrast": self.contrast,
        }

    def apply(self, ccd, path):
        gain, mask, _ = self._gain_and_mask(ccd, path)
        out, _ = crs.clean_cosmics(
            ccd,
            "median",
            gain=gain,
            mask=mask,
            thresh=self.thresh,
            mbox=self.mbox,
            rbox=self.rbox,
            gbox=self.gbox,
            contrast=self.contrast,
        )
        return out


class subtract_bias(_CalibrationStep):  # noqa: N801
    """Subtract a master bias.

    Parameters
    ----------
    wdir, files, overwrite
        As :class:`trimmer`; outputs ``bias_subtracted_<name>.fits``.
    masterbias_file : str
        Master bias (same size, binning and unit as the frames).
    executor, workers, progress, log_path
        Engine options.

    Raises
    ------
    FileNotFoundError
        The master does not exist.
    CalibrationError
        (at ``run``) the master's size or binning differs from the frames'.
    """

    name = "subtract_bias"
    prefix = "bias_subtracted_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        masterbias_file: PathLike,
        overwrite: Overwrite = False,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        self.masterbias_file = _one_path(masterbias_file, "master bias")

    def masters(self):
        return {"master bias": self.masterbias_file}

    def check(self):
        _check_master(self.name, self.masterbias_file, "master bias", self.files)

    def apply(self, ccd, path):
        master = load_master(self.masterbias_file)
        _compare_geometry(self.name, self.masterbias_file, "master bias", master, path, ccd)
        try:
            out = cal.subtract_bias(ccd, master)
        except CalibrationError as exc:
            raise CalibrationError(f"{exc} (master {self.masterbias_file})") from None
        out.meta["ADMBIAS"] = str(
            Path(self.masterbias_file).resolve()
        )  # path: no room for a comment
        return out


def _dark_entries(paths: Sequence[str]) -> list[tuple[float, str, bool]]:
    """``(exptime, path, bias_subtracted)`` of master darks, sorted by exposure time."""
    return list(_dark_entries_cached(tuple((p, Path(p).stat().st_mtime_ns) for p in paths)))


@functools.lru_cache(maxsize=16)
def _dark_entries_cached(key: tuple) -> tuple:
    out = []
    for p, _ in key:
        h = read_header(p)
        out.append((FrameHeader(h, p).exptime, p, cal.is_bias_subtracted(h)))
    return tuple(sorted(out))


class subtract_dark(_CalibrationStep):  # noqa: N801
    """Subtract a master dark scaled to each frame's exposure time.

    * one master: scaled by ``EXPTIME(frame) / EXPTIME(master)`` when the master is
      bias-subtracted; a master that still holds the bias is used only at its own
      exposure time;
    * several masters (a list): the one of the frame's exposure time, else a per-pixel
      least-squares line ``D = t A + B`` through all of them (:class:`dark_interpolation`).

    Parameters
    ----------
    wdir, files, overwrite
        As :class:`trimmer`; outputs ``dark_subtracted_<name>.fits``.
    masterdark_file : str or list of str
        Master dark(s), with ``EXPTIME``; same size, binning and unit as the frames.
    executor, workers, progress, log_path
        Engine options.

    Raises
    ------
    CalibrationError
        (at ``run``) a master of another size or binning, or without exposure time;
        (per frame) a frame without ``EXPTIME`` (message names the file and the
        ``header_tools`` fix), or an exposure the master cannot be scaled to.
    """

    name = "subtract_dark"
    prefix = "dark_subtracted_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        masterdark_file: PathLike | Sequence[PathLike],
        overwrite: Overwrite = False,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        many = isinstance(masterdark_file, (list, tuple)) and len(masterdark_file) > 1
        self.masterdark_files = (
            [_one_path(m, "master dark") for m in masterdark_file]
            if many
            else [_one_path(masterdark_file, "master dark")]
        )

    def masters(self):
        return {f"master dark {i + 1}": p for i, p in enumerate(self.masterdark_files)}

    def check(self):
        for m in self.masterdark_files:
            _check_master(self.name, m, "master dark", self.files)
            try:
                _ = FrameHeader(read_header(m), m).exptime
            except MissingKeywordError as exc:
                raise CalibrationError(f"subtract_dark: master dark {exc}") from None
        entries = _dark_entries(self.masterdark_files)
        if len({e[2] for e in entries}) > 1:
            raise CalibrationError(
                "subtract_dark: some master darks are bias-subtracted and some "
                "are not; build them all the same way"
            )

    def _dark_for(self, exptime: float):
        entries = _dark_entries(self.masterdark_files)
        for t, p, bsub in entries:
            if np.isclose(t, exptime, rtol=1e-3):
                return load_master(p), t, bsub, p
        if len(entries) == 1:
            t, p, bsub = entries[0]
            return load_master(p), t, bsub, p
        model = _dark_model(tuple((p, Path(p).stat().st_mtime_ns) for p in self.masterdark_files))
        data, std = model.evaluate(exptime)
        first = load_master(entries[0][1])
        ccd = CCDData(
            data,
            unit=first.unit,
            meta=first.meta.copy(),
            uncertainty=None if std is None else StdDevUncertainty(std),
        )
        return ccd, exptime, entries[0][2], f"interpolated from {len(entries)} masters"

    def apply(self, ccd, path):
        fh = _frame_header(ccd, path)
        exptime = fh.exptime  # MissingKeywordError names the file and the header_tools fix
        dark, dark_t, dark_bsub, source = self._dark_for(exptime)
        _compare_geometry(self.name, source, "master dark", dark, path, ccd)
        frame_bsub = cal.is_bias_subtracted(ccd.meta)
        if frame_bsub and not dark_bsub:
            raise CalibrationError(
                f"{path} is bias-subtracted but master dark {source} still contains the bias "
                "(it would be subtracted twice); subtract the master bias from the darks before "
                "combining them"
            )
        try:
            out = cal.subtract_dark(ccd, dark, exptime, dark_t, scale=dark_bsub)
        except CalibrationError as exc:
            raise CalibrationError(f"{exc} (master dark {source})") from None
        out.meta["ADDKSRC"] = Path(source).name[-68:]  # the master dark used
        out.meta["ADMDARK"] = ";".join(str(Path(p).resolve()) for p in self.masterdark_files)
        out.meta["ADDKEXP"] = (float(exptime), "[s] exposure the dark was scaled to")
        return out


def _shared_bias_variance(headers) -> np.ndarray | None:
    """Variance of the master bias subtracted from all of these masters (``ADMBIAS``),
    or None when they do not share one or it cannot be read."""
    paths = {h.get("ADMBIAS") for h in headers}
    if len(paths) != 1 or None in paths:
        return None
    p = paths.pop()
    return cal.variance_of(load_master(p)) if Path(p).is_file() else None


@functools.lru_cache(maxsize=4)
def _dark_model(key: tuple) -> cal.DarkModel:
    """The dark model of master darks ``key = ((path, mtime_ns), ...)``, once per process."""
    paths = [p for p, _ in key]
    ccds = [load_master(p) for p in paths]
    times = [FrameHeader(c.meta, p).exptime for c, p in zip(ccds, paths)]
    return cal.fit_dark_model(
        times,
        [c.data for c in ccds],
        [cal.variance_of(c) for c in ccds],
        common_variance=_shared_bias_variance([c.meta for c in ccds]),
    )


class correct_flatfield(_CalibrationStep):  # noqa: N801
    """Divide frames by a master flat normalised by its robust central level.

    The master is divided by the 3-sigma-clipped median of its central half (per axis)
    before use, so a master flat in electrons or ADU, normalised or not, gives the same
    result. Flat pixels below ``min_value`` (zero, negative, dead) are not divided: the
    frame's pixel is kept and masked, and counted in ``ADFLBAD``.

    Parameters
    ----------
    wdir, files, overwrite
        As :class:`trimmer`; outputs ``flatfield_corrected_<name>.fits``.
    masterflatfield_file : str
        Master flat (same size and binning).
    min_value : float
        Lowest usable normalised flat response.
    max_bad_fraction : float
        A flat with more guarded pixels than this fraction is refused.
    executor, workers, progress, log_path
        Engine options.

    Raises
    ------
    CalibrationError
        (at ``run``) the master's size or binning differs, its central level is not
        positive, or too many of its pixels are zero/negative/low; the message names the
        master and the fix.
    """

    name = "correct_flatfield"
    prefix = "flatfield_corrected_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        masterflatfield_file: PathLike,
        overwrite: Overwrite = False,
        *,
        min_value: float = 0.1,
        max_bad_fraction: float = 0.01,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        self.masterflatfield_file = _one_path(masterflatfield_file, "master flat")
        self.min_value, self.max_bad_fraction = float(min_value), float(max_bad_fraction)

    def masters(self):
        return {"master flat": self.masterflatfield_file}

    def parameters(self):
        return {
            "min_value": self.min_value,
            "max_bad_fraction": self.max_bad_fraction,
            "normalisation": "3-sigma-clipped median of the central half",
        }

    def _flat(self):
        return _normalised_flat(
            self.masterflatfield_file, Path(self.masterflatfield_file).stat().st_mtime_ns
        )

    def check(self):
        _check_master(self.name, self.masterflatfield_file, "master flat", self.files)
        self.check_flat()

    def check_flat(self) -> None:
        """Refuse a master flat with a non-positive level or too many low pixels; warn
        about the few pixels that will be guarded."""
        try:
            flat, level = self._flat()
        except CalibrationError as exc:
            raise CalibrationError(
                f"correct_flatfield: {self.masterflatfield_file}: {exc}"
            ) from None
        f = flat.data
        bad = ~np.isfinite(f) | (f < self.min_value)
        nbad = int(bad.sum())
        if nbad > self.max_bad_fraction * f.size:
            raise CalibrationError(
                f"correct_flatfield: master flat {self.masterflatfield_file} has {nbad} pixels "
                f"({100 * nbad / f.size:.2f} %) at or below {self.min_value} of its central level "
                f"{level:.6g} (zeros, negatives or unexposed areas); rebuild it from well exposed, "
                "bias-subtracted flats of this filter, or pass max_bad_fraction= to accept it"
            )
        if nbad:
            warnings.warn(
                f"correct_flatfield: master flat {self.masterflatfield_file}: {nbad} "
                f"pixels below {self.min_value} (zero/negative/dead) are not divided and "
                "are masked in every output (ADFLBAD)",
                CalibrationWarning,
                stacklevel=3,
            )

    def apply(self, ccd, path):
        flat, _ = self._flat()
        _compare_geometry(self.name, self.masterflatfield_file, "master flat", flat, path, ccd)
        out, _ = cal.flat_correct(ccd, flat, self.min_value, self.max_bad_fraction)
        return out


@functools.lru_cache(maxsize=4)
def _normalised_flat(path: str, mtime_ns: int):
    return cal.normalise_flat(load_master(path))


class bad_pixel_correction(_CalibrationStep):  # noqa: N801
    """Repair bad pixels by interpolation from their good neighbours.

    Parameters
    ----------
    wdir, files, overwrite
        As :class:`trimmer`; outputs ``bad_pixel_corrected_<name>.fits``.
    badpixel_file : str
        Bad-pixel map (:class:`bad_pixel_map`; non-zero = bad).
    bits : int
        Bits of the map to repair (default: hot, low flat, deviant flat, non-finite;
        not warm, which dark subtraction handles).
    include_mask : bool
        Also repair pixels already masked in the frame (cosmic rays, guarded flat pixels).
    sigma : float
        Width (px) of the Gaussian interpolation kernel.
    executor, workers, progress, log_path
        Engine options.

    Notes
    -----
    Repaired pixels stay masked; their uncertainty is set to that of the interpolated
    neighbours times ``sqrt(2)`` (an interpolated value is not a measurement).
    """

    name = "bad_pixel_correction"
    prefix = "bad_pixel_corrected_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        badpixel_file: PathLike,
        overwrite: Overwrite = False,
        *,
        bits: int = det.REPAIR_BITS,
        include_mask: bool = False,
        sigma: float = 1.5,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        self.badpixel_file = _one_path(badpixel_file, "bad-pixel map")
        self.bits, self.include_mask, self.sigma = int(bits), bool(include_mask), float(sigma)

    def masters(self):
        return {"bad-pixel map": self.badpixel_file}

    def parameters(self):
        return {"bits": self.bits, "include_mask": self.include_mask, "sigma": self.sigma}

    def check(self):
        _check_master(self.name, self.badpixel_file, "bad-pixel map", self.files)

    def apply(self, ccd, path):
        bpm = load_master(self.badpixel_file)
        if bpm.shape != ccd.shape:
            raise CalibrationError(
                f"bad-pixel map {self.badpixel_file} is {bpm.shape[::-1]} px, "
                f"{path} is {ccd.shape[::-1]} px"
            )
        bad = (np.asarray(bpm.data).astype(np.uint8) & self.bits) > 0
        if self.include_mask and ccd.mask is not None:
            bad = bad | np.asarray(ccd.mask, bool)
        data = cal.repair_pixels(ccd.data, bad, self.sigma)
        unc = None
        if ccd.uncertainty is not None:
            sd = np.asarray(ccd.uncertainty.array, np.float32)
            sd = np.where(bad, cal.repair_pixels(sd, bad, self.sigma) * np.float32(np.sqrt(2)), sd)
            unc = StdDevUncertainty(sd)
        header = ccd.meta.copy() if isinstance(ccd.meta, fits.Header) else fits.Header(ccd.meta)
        header["ADNBADPX"] = (int(bad.sum()), "bad pixels interpolated")
        mask = bad if ccd.mask is None else (np.asarray(ccd.mask, bool) | bad)
        return CCDData(data, unit=ccd.unit, meta=header, uncertainty=unc, mask=mask, wcs=ccd.wcs)


# ---------------------------------------------------------------------------------------
# the whole chain in one pass
# ---------------------------------------------------------------------------------------
class calibration_chain(_CalibrationStep):  # noqa: N801
    """The stage-1 chain applied to each frame in one pass: read once, write once.

    The same per-frame calibrations as the step classes, in the guide's order, with
    the same provenance in the header: trim (:class:`trimmer`), uncertainty
    (:class:`deviation_calculation`), ADU -> electrons (:class:`gain_correction`),
    cosmic rays (:class:`cosmic_ray_laplacian_correction` or
    :class:`cosmic_ray_median_correction`), bias (:class:`subtract_bias`), dark
    (:class:`subtract_dark`), flat (:class:`correct_flatfield`) and bad pixels
    (:class:`bad_pixel_correction`). Each part is skipped when its option is None; the
    result equals running the classes one after the other, without the intermediate
    files (and their writes and reads).

    Parameters
    ----------
    wdir, files, overwrite
        As :class:`trimmer`; outputs ``calibrated_<name>.fits``.
    region : str, optional
        FITS section to keep.
    ron : float, optional
        Read noise (e-) for the uncertainty plane (default: header); ``uncertainty=False``
        skips the plane.
    gain : float, optional
        e-/ADU (default: header).
    uncertainty, gain_correct : bool
        Add the uncertainty plane; convert to electrons.
    cosmic_rays : {None, 'lacosmic', 'median'}
        Cosmic-ray method; its options in ``cosmic_options`` (e.g. ``{'sigclip': 5}``).
    masterbias_file, masterdark_file, masterflatfield_file : str, optional
        Masters (a list of master darks is interpolated as in :class:`subtract_dark`).
    badpixel_file : str, optional
        Bad-pixel map: hidden from the cosmic-ray detection, and repaired at the end
        when ``repair_bad_pixels``.
    repair_bad_pixels : bool
        Interpolate the map's pixels (:class:`bad_pixel_correction`) as the last step.
    executor, workers, progress, log_path
        Engine options.

    Raises
    ------
    CalibrationError
        (at ``run``) the region does not fit the frames, or a master's size or binning
        differs from the trimmed frames'.
    """

    name = "calibration_chain"
    prefix = "calibrated_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        overwrite: Overwrite = False,
        *,
        region: str | None = None,
        ron: float | None = None,
        gain: float | None = None,
        uncertainty: bool = True,
        gain_correct: bool = True,
        cosmic_rays: str | None = None,
        cosmic_options: dict | None = None,
        masterbias_file: PathLike | None = None,
        masterdark_file: PathLike | Sequence[PathLike] | None = None,
        masterflatfield_file: PathLike | None = None,
        badpixel_file: PathLike | None = None,
        repair_bad_pixels: bool = False,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        if cosmic_rays not in (None, "lacosmic", "median"):
            raise CalibrationError(
                f"calibration_chain: cosmic_rays={cosmic_rays!r}; use None, 'lacosmic' or 'median'"
            )
        if repair_bad_pixels and badpixel_file is None:
            raise CalibrationError("calibration_chain: repair_bad_pixels needs badpixel_file")
        sub = dict(progress=False, executor="serial")
        parts: list[_CalibrationStep] = []
        if region is not None:
            parts.append(trimmer(wdir, [], region, **sub))
        if uncertainty:
            parts.append(deviation_calculation(wdir, [], ron=ron, gain=gain, **sub))
        if gain_correct:
            parts.append(gain_correction(wdir, [], gain=gain, **sub))
        if cosmic_rays == "lacosmic":
            parts.append(
                cosmic_ray_laplacian_correction(
                    wdir, [], gain=gain, mask_file=badpixel_file, **sub, **(cosmic_options or {})
                )
            )
        elif cosmic_rays == "median":
            parts.append(
                cosmic_ray_median_correction(
                    wdir, [], gain=gain, mask_file=badpixel_file, **sub, **(cosmic_options or {})
                )
            )
        if masterbias_file is not None:
            parts.append(subtract_bias(wdir, [], masterbias_file, **sub))
        if masterdark_file is not None:
            parts.append(subtract_dark(wdir, [], masterdark_file, **sub))
        if masterflatfield_file is not None:
            parts.append(correct_flatfield(wdir, [], masterflatfield_file, **sub))
        if repair_bad_pixels:
            parts.append(bad_pixel_correction(wdir, [], badpixel_file, **sub))
        if not parts:
            raise CalibrationError("calibration_chain: nothing to do (every part is switched off)")
        self.parts = parts
        self.region = region

    def parameters(self):
        return {"parts": [p.name for p in self.parts]}

    def masters(self):
        out = {}
        for p in self.parts:
            out.update(p.masters())
        return out

    def check(self):
        f, h = self._first_header()
        if h is None:
            return
        for p in self.parts:
            if isinstance(p, deviation_calculation):
                p.files = [f]
                p.check()
        shape = _shape_from_header(h)
        if self.region is not None:
            try:
                rows, cols = cal.parse_section(self.region, shape)
            except CalibrationError as exc:
                raise CalibrationError(f"calibration_chain: {f}: {exc}") from None
            shape = (rows.stop - rows.start, cols.stop - cols.start)
        trimmed = h.copy()
        trimmed["NAXIS2"], trimmed["NAXIS1"] = shape
        for p in self.parts:
            if isinstance(p, correct_flatfield):
                p.check_flat()
            for role, m in p.masters().items():
                _compare_geometry(
                    self.name,
                    m,
                    role,
                    read_header(m),
                    f + " (after trimming)" if self.region else f,
                    trimmed,
                )

    def apply(self, ccd, path):
        for p in self.parts:
            ccd = p.process(ccd, path)
            p.stamp(ccd, path)
        return ccd

    def stamp(self, ccd, in_path):
        """The parts stamped their own provenance; add the chain's history line."""
        meta = ccd.meta if isinstance(ccd.meta, fits.Header) else fits.Header(ccd.meta)
        ccd.meta = meta
        meta.add_history(
            f"astrodart {__version__} calibration_chain: "
            f"{', '.join(p.name for p in self.parts)} on {Path(in_path).name}"
        )


# ---------------------------------------------------------------------------------------
# masters
# ---------------------------------------------------------------------------------------
def _recorded_inputs(path) -> list[str]:
    h = read_header(path)
    return [str(h[k]) for k in h if k.startswith(("IMCMB", "IMCB"))]


def _reuse_master(out: Path, inputs: Sequence[str], what: str) -> bool:
    """True if ``out`` exists and was made from ``inputs`` (same file names); an existing
    master made from other frames is an error, not a silent reuse."""
    if not out.exists():
        return False
    recorded = _recorded_inputs(out)
    wanted = [Path(f).name for f in inputs]
    if recorded and recorded != wanted:
        raise CalibrationError(
            f"{what}: {out} exists but was made from other frames ({len(recorded)} recorded, "
            f"{len(wanted)} given now); pass overwrite='yes' to rebuild it, or choose another "
            "output_name"
        )
    log.info("%s: %s exists, reused", what, out)
    return True


def _record_inputs(
    header: fits.Header, files: Sequence[str], settings: dict, rejected: float, frame_type: str
) -> None:
    header["ADMASTER"] = (frame_type, "astrodart master frame type")
    header["NCOMBINE"] = (len(files), "number of frames combined")
    for i, f in enumerate(files, 1):
        header[f"IMCMB{i:03d}" if i < 1000 else f"IMCB{i:04d}"] = Path(f).name
    header["ADCMETH"] = (settings.get("method"), "combine method")
    header["ADCCLIP"] = (str(settings.get("clipping")), "rejection method")
    for key, card in (
        ("low", "ADCLOW"),
        ("high", "ADCHIGH"),
        ("nlow", "ADCNLOW"),
        ("nhigh", "ADCNHIGH"),
        ("vmin", "ADCVMIN"),
        ("vmax", "ADCVMAX"),
        ("iterations", "ADCITER"),
    ):
        if settings.get(key) is not None:
            header[card] = (settings[key], f"combine setting {key}")
    if settings.get("normalised"):
        header["ADCNORM"] = (True, "inputs scaled to their central median")
    header["ADCREJ"] = (round(rejected, 6), "fraction of values rejected")
    header.add_history(f"astrodart {__version__} master_frame: {settings} of {len(files)} frames")


class master_frame:  # noqa: N801
    """Combine calibration frames into a master that records its inputs and settings.

    Parameters
    ----------
    wdir : str or pathlib.Path
        Folder of the output.
    files : list of str
        Frames to combine (same size, binning, unit; darks: same exposure time).
    output_name : str
        File name of the master (e.g. ``'masterbias.fits'``), written in ``wdir``.
    combining_method : {'median', 'average', 'sum'}
        Per-pixel combination.
    clipping_method : {None, 'sigclip', 'extrema_clipping', 'minmax'}
        Rejection before combining (median/MAD sigma clipping, see
        :func:`astrodart.calibration.ccd.combine_stack`).
    minclip, maxclip : float
        Low/high sigma-clipping thresholds (AstroDART's names).
    nlow, nhigh : int
        Values dropped by 'extrema_clipping'.
    minmax_clip_min, minmax_clip_max : float, optional
        Limits of 'minmax'.
    frame_type : {'bias', 'dark', 'flat', 'flatdark'}, optional
        Kind of master; default from the first frame's ``IMAGETYP``. Flats are scaled to
        their central median before combining (their level changes between frames) and
        the master flat is normalised to 1.
    overwrite : bool or {'yes', 'no'}
        Rebuild a master that exists. Without it an existing master is reused only if it
        was made from the same frames (else :class:`CalibrationError`).
    memory_limit : float
        Bytes; above it the frames are combined in bands of rows (each read once per band).
    log_path : str, optional
        Run log (default: the target's ``astrodart_log.jsonl``).

    Notes
    -----
    Pixels masked in an input (cosmic rays, guarded flat pixels) are left out of the
    combination. The header keeps the first frame's header plus ``ADMASTER``, ``NCOMBINE``,
    ``IMCMBnnn`` (input names), ``ADCMETH``, ``ADCCLIP``, ``ADCLOW``/``ADCHIGH`` ...,
    ``ADCREJ`` (fraction rejected) and ``ADBIASSB`` (whether the inputs were
    bias-subtracted). The uncertainty plane is propagated from the inputs' planes when
    they all have one (the variance of a master bias/dark subtracted from every input is
    common to all of them and is not divided by the number of frames), else estimated
    from the scatter of the stack.
    """

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        output_name: str,
        combining_method: str = "median",
        clipping_method: str | None = "sigclip",
        minclip: float = 3.0,
        maxclip: float = 3.0,
        *,
        nlow: int = 1,
        nhigh: int = 1,
        minmax_clip_min: float | None = None,
        minmax_clip_max: float | None = None,
        frame_type: str | None = None,
        overwrite: Overwrite = False,
        memory_limit: float = 1e9,
        log_path=None,
    ):
        self.wdir = Path(wdir)
        self.files = [str(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
        self.output_name = str(output_name)
        if combining_method not in cal.COMBINE_METHODS:
            raise CalibrationError(
                f"master_frame: combining_method={combining_method!r} unknown; use "
                f"one of {cal.COMBINE_METHODS}"
            )
        if clipping_method not in cal.CLIPPING_METHODS:
            raise CalibrationError(
                f"master_frame: clipping_method={clipping_method!r} unknown; use "
                f"one of {[c for c in cal.CLIPPING_METHODS if c]} or None"
            )
        if frame_type not in (None, "bias", "dark", "flat", "flatdark"):
            raise CalibrationError(
                f"master_frame: frame_type={frame_type!r}; use 'bias', 'dark', 'flat' or 'flatdark'"
            )
        self.method, self.clipping = combining_method, clipping_method
        self.low, self.high, self.nlow, self.nhigh = (
            float(minclip),
            float(maxclip),
            int(nlow),
            int(nhigh),
        )
        self.vmin, self.vmax = minmax_clip_min, minmax_clip_max
        self.frame_type = frame_type
        self.overwrite = parse_overwrite(overwrite)
        self.memory_limit = float(memory_limit)
        self.log_path = log_path

    @property
    def output_path(self) -> Path:
        """Where the master is written."""
        return self.wdir / self.output_name

    def _validate(self) -> tuple[str, list[fits.Header]]:
        if not self.files:
            raise CalibrationError(f"master_frame {self.output_name}: no input frames")
        headers = [read_header(f) for f in self.files]
        first = FrameHeader(headers[0], self.files[0])
        ftype = self.frame_type or first.frame_type
        if ftype not in ("bias", "dark", "flat", "flatdark"):
            raise CalibrationError(
                f"master_frame {self.output_name}: {self.files[0]} has IMAGETYP "
                f"{first.raw_frame_type!r}, not a calibration type; pass frame_type='bias', "
                "'dark', 'flat' or 'flatdark' (or fix IMAGETYP with header_tools)"
            )
        shape0, bin0 = _shape_from_header(headers[0]), first.binning
        times = []
        for f, h in zip(self.files, headers):
            fh = FrameHeader(h, f)
            if _shape_from_header(h) != shape0 or fh.binning != bin0:
                raise CalibrationError(
                    f"master_frame {self.output_name}: {f} is {_shape_from_header(h)[::-1]} px "
                    f"binned {fh.binning} but {self.files[0]} is {shape0[::-1]} px binned "
                    f"{bin0}; combine frames of one size and binning (trim them alike)"
                )
            if (
                str(h.get("BUNIT", "adu")).strip().lower()
                != str(headers[0].get("BUNIT", "adu")).strip().lower()
            ):
                raise CalibrationError(
                    f"master_frame {self.output_name}: {f} has BUNIT "
                    f"{h.get('BUNIT')!r} unlike {self.files[0]}; gain-correct all or none"
                )
            times.append(fh.exptime_or_none)
        if ftype in ("dark", "flatdark"):
            if any(t is None for t in times):
                f = self.files[[t is None for t in times].index(True)]
                _ = FrameHeader(read_header(f), f).exptime  # MissingKeywordError with the fix
            if max(times) - min(times) > 1e-3 * max(max(times), 1):
                raise CalibrationError(
                    f"master_frame {self.output_name}: darks of different exposure times "
                    f"{sorted(set(times))} s; combine each exposure separately "
                    "(get_directory(data_dir).dark() groups them) and use subtract_dark with the "
                    "list of masters"
                )
        return ftype, headers

    def _common_variance(self, headers, rows: slice | None, levels) -> np.ndarray | None:
        """Variance shared by all inputs: that of the master bias / dark subtracted from
        every one of them (recorded by subtract_bias/subtract_dark), which does not
        average down when the frames are combined."""
        total = None
        first = headers[0]
        if first.get("ADMBIAS") and all(h.get("ADMBIAS") == first["ADMBIAS"] for h in headers):
            p = first["ADMBIAS"]
            if Path(p).is_file():
                total = cal.variance_of(load_master(p))
        key = ("ADMDARK", "ADDKEXP")
        if first.get("ADMDARK") and all(
            tuple(h.get(k) for k in key) == tuple(first.get(k) for k in key) for h in headers
        ):
            paths = [p for p in str(first["ADMDARK"]).split(";") if p]
            if all(Path(p).is_file() for p in paths):
                step = subtract_dark.__new__(subtract_dark)
                step.masterdark_files = paths
                dark, dark_t, bsub, _ = step._dark_for(float(first["ADDKEXP"]))
                dvar = cal.variance_of(dark)
                if dvar is not None:
                    k = float(first["ADDKEXP"]) / dark_t if bsub else 1.0
                    dvar = dvar * np.float32(k * k)
                    total = dvar if total is None else total + dvar
        if total is None:
            return None
        if rows is not None:
            total = total[rows]
        if levels:
            total = total / np.float32(np.mean(levels) ** 2)
        return total

    def _read_stack(self, rows: slice | None, normalise: bool):
        frames, variances, levels = [], [], []
        for f in self.files:
            ccd = read_frame(f)
            data = np.asarray(ccd.data, np.float32)
            if ccd.mask is not None and np.any(ccd.mask):  # masked pixels are not combined
                data = np.where(ccd.mask, np.float32(np.nan), data)
            var = cal.variance_of(ccd)
            if normalise:
                lvl = cal.flat_normalisation(data)
                if not np.isfinite(lvl) or lvl <= 0:
                    raise CalibrationError(
                        f"master_frame {self.output_name}: {f} has central level "
                        f"{lvl:.4g}; an unexposed or wrongly calibrated flat"
                    )
                data = data / np.float32(lvl)
                var = None if var is None else var / np.float32(lvl * lvl)
                levels.append(lvl)
            if rows is not None:  # copies, so that the whole frame is freed now
                data = np.array(data[rows])
                var = None if var is None else np.array(var[rows])
            frames.append(data)
            variances.append(var)
        cube = np.stack(frames)
        vcube = None if any(v is None for v in variances) else np.stack(variances)
        return cube, vcube, levels, ccd.unit

    def run(self) -> str:
        """Combine and write the master; return its path (reused if it exists and not
        ``overwrite``).

        Raises
        ------
        CalibrationError
            No inputs, frames of different sizes, binnings, units or (darks) exposure
            times, a non-calibration frame type, or a bad combine option.
        """
        out = self.output_path
        if not self.overwrite and _reuse_master(out, self.files, "master_frame"):
            return str(out)
        ftype, headers = self._validate()
        normalise = ftype == "flat"
        ny, nx = _shape_from_header(headers[0])
        n = len(self.files)
        need = n * ny * nx * 4 * 6  # cube, variances and the combine's temporaries
        if need <= self.memory_limit:
            bands = [None]
        else:
            step = max(1, int(ny * self.memory_limit / need))
            bands = [slice(y, min(y + step, ny)) for y in range(0, ny, step)]
        data = np.empty((ny, nx), np.float32)
        error = np.empty((ny, nx), np.float32)
        used = np.empty((ny, nx), np.int16)
        rejected, unit = [], None
        for band in bands:
            cube = vcube = res = None  # free the previous band before reading the next
            cube, vcube, levels, unit = self._read_stack(band, normalise)
            common = self._common_variance(headers, band, levels) if vcube is not None else None
            res = cal.combine_stack(
                cube,
                self.method,
                self.clipping,
                self.low,
                self.high,
                self.nlow,
                self.nhigh,
                self.vmin,
                self.vmax,
                variances=vcube,
                common_variance=common,
            )
            sl = band if band is not None else slice(None)
            data[sl], error[sl], used[sl] = res.data, res.error, res.n_used
            rejected.append(res.rejected_fraction)
            settings = dict(res.settings, normalised=normalise)
        cube = vcube = res = None
        header = headers[0].copy()
        for key in (
            "ADNCRPIX",
            "ADDKSCAL",
            "ADFLBAD",
            KW_NONFINITE,
            "ADNBADPX",
            "ADMDARK",
            "ADDKEXP",
            "ADDKSRC",
        ):
            header.remove(key, ignore_missing=True)
        if not all(h.get("ADMBIAS") == headers[0].get("ADMBIAS") for h in headers):
            header.remove("ADMBIAS", ignore_missing=True)  # kept only when shared by all
        times = [FrameHeader(h, f).exptime_or_none for f, h in zip(self.files, headers)]
        if all(t is not None for t in times):
            header["EXPTIME"] = (float(np.mean(times)), "[s] exposure time of the combined frames")
        header[cal.KW_BIAS_SUB] = (
            all(cal.is_bias_subtracted(h) for h in headers),
            "bias removed from the inputs",
        )
        if ftype == "flat":
            header["ADFLNORM"] = (1.0, "master flat normalised to ~1")
        _record_inputs(header, self.files, settings, float(np.mean(rejected)), ftype)
        empty = used == 0
        ccd = CCDData(
            data,
            unit=unit if ftype != "flat" else u.dimensionless_unscaled,
            meta=header,
            uncertainty=StdDevUncertainty(error),
            mask=empty if empty.any() else None,
        )
        if ftype == "flat":
            ccd.meta["BUNIT"] = ""
        write_frame(ccd, out, overwrite=True)
        log_event(
            self.log_path or find_log_path(self.wdir),
            step="master_frame",
            output=str(out),
            frame_type=ftype,
            inputs=self.files,
            settings=settings,
            rejected_fraction=float(np.mean(rejected)),
        )
        log.info("master_frame: %s from %d frames (%s)", out, n, settings)
        return str(out)


class dark_interpolation:  # noqa: N801
    """A master dark for an exposure time without darks, from masters at other exposure
    times: per-pixel weighted least squares ``D(t) = t A + B`` (as astro_reduce does).

    Parameters
    ----------
    wdir : str or pathlib.Path
        Folder of the output.
    masterdark_files : list of str
        Master darks (:class:`master_frame`) of at least two exposure times, or one plus
        ``masterbias_file`` when the darks still contain the bias.
    exptime : float
        Exposure time (s) wanted.
    output_name : str, optional
        Default ``'masterdark_<exptime>s_interpolated.fits'``.
    masterbias_file : str, optional
        Master bias entering the fit as a dark of exposure 0 (only for darks that are
        not bias-subtracted).
    overwrite : bool or {'yes', 'no'}
        Rebuild an existing output.
    log_path : str, optional
        Run log.

    Notes
    -----
    The output is a master dark like the inputs (bias-subtracted or not), with
    ``EXPTIME`` = ``exptime``, an uncertainty plane propagated through the fit, the
    inputs recorded (``NCOMBINE``/``IMCMBnnn``) and the fit's residual RMS (``ADDKRMS``).
    """

    def __init__(
        self,
        wdir: PathLike,
        masterdark_files: Files,
        exptime: float,
        output_name: str | None = None,
        *,
        masterbias_file=None,
        overwrite: Overwrite = False,
        log_path=None,
    ):
        self.wdir = Path(wdir)
        files = (
            [masterdark_files]
            if isinstance(masterdark_files, (str, Path))
            else list(masterdark_files)
        )
        self.masterdark_files = [_one_path(m, "master dark") for m in files]
        self.masterbias_file = (
            None if masterbias_file is None else _one_path(masterbias_file, "master bias")
        )
        self.exptime = float(exptime)
        self.output_name = output_name or f"masterdark_{self.exptime:g}s_interpolated.fits"
        self.overwrite = parse_overwrite(overwrite)
        self.log_path = log_path

    def run(self) -> str:
        """Fit, evaluate at ``exptime`` and write; return the output path.

        Raises
        ------
        CalibrationError
            Masters of different sizes/units, fewer than two exposure times, a master
            bias given with bias-subtracted darks, or mixed bias states.
        """
        out = self.wdir / self.output_name
        inputs = list(self.masterdark_files) + (
            [self.masterbias_file] if self.masterbias_file else []
        )
        if not self.overwrite and _reuse_master(out, inputs, "dark_interpolation"):
            return str(out)
        darks = [read_frame(p) for p in self.masterdark_files]
        states = {cal.is_bias_subtracted(d.meta) for d in darks}
        if len(states) > 1:
            raise CalibrationError(
                "dark_interpolation: some master darks are bias-subtracted and "
                "some are not; build them all the same way"
            )
        bsub = states.pop()
        times = [FrameHeader(d.meta, p).exptime for d, p in zip(darks, self.masterdark_files)]
        inputs = list(self.masterdark_files)
        for d, p in zip(darks[1:], self.masterdark_files[1:]):
            _compare_geometry(
                "dark_interpolation", p, "master dark", d, self.masterdark_files[0], darks[0]
            )
            if d.unit != darks[0].unit:
                raise CalibrationError(
                    f"dark_interpolation: {p} is in {d.unit}, "
                    f"{self.masterdark_files[0]} in {darks[0].unit}"
                )
        if self.masterbias_file:
            if bsub:
                raise CalibrationError(
                    "dark_interpolation: the master darks are bias-subtracted; "
                    "a master bias must not enter the fit (zero dark at t=0 is "
                    "implied only for darks that still contain the bias)"
                )
            bias = read_frame(self.masterbias_file)
            _compare_geometry(
                "dark_interpolation",
                self.masterbias_file,
                "master bias",
                bias,
                self.masterdark_files[0],
                darks[0],
            )
            darks.append(bias)
            times.append(0.0)
            inputs.append(self.masterbias_file)
        elif bsub and len(set(times)) == 1:
            # bias-subtracted darks are zero at t = 0
            zero = CCDData(
                np.zeros(darks[0].shape, np.float32),
                unit=darks[0].unit,
                uncertainty=StdDevUncertainty(np.zeros(darks[0].shape, np.float32)),
            )
            darks.append(zero)
            times.append(0.0)
        common = None if self.masterbias_file else _shared_bias_variance([d.meta for d in darks])
        model = cal.fit_dark_model(
            times,
            [d.data for d in darks],
            [cal.variance_of(d) for d in darks],
            common_variance=common,
        )
        data, std = model.evaluate(self.exptime)
        header = (
            darks[0].meta.copy()
            if isinstance(darks[0].meta, fits.Header)
            else fits.Header(darks[0].meta)
        )
        for k in [k for k in header if k.startswith("IMCMB")]:
            header.remove(k, ignore_missing=True, remove_all=True)
        header["EXPTIME"] = (self.exptime, "[s] exposure of this interpolated dark")
        header["EXPOSURE"] = (self.exptime, "[s] exposure of this interpolated dark")
        header["ADDKINTP"] = (True, "dark = t * A + B, per-pixel least squares")
        header["ADDKTIMS"] = (",".join(f"{t:g}" for t in times), "[s] exposures fitted")
        header["ADDKRMS"] = (model.residual_rms, "RMS of the fit residuals")
        header[cal.KW_BIAS_SUB] = (bsub, "bias removed from the inputs")
        _record_inputs(header, inputs, {"method": "linear least squares D = t*A + B"}, 0.0, "dark")
        ccd = CCDData(
            data,
            unit=darks[0].unit,
            meta=header,
            uncertainty=None if std is None else StdDevUncertainty(std),
        )
        write_frame(ccd, out, overwrite=True)
        log_event(
            self.log_path or find_log_path(self.wdir),
            step="dark_interpolation",
            output=str(out),
            inputs=inputs,
            exptimes=times,
            exptime=self.exptime,
            residual_rms=model.residual_rms,
        )
        return str(out)


class bad_pixel_map:  # noqa: N801
    """Build a bad-pixel map from a master dark and/or a master flat.

    Parameters
    ----------
    wdir : str or pathlib.Path
        Folder of the output.
    masterdark_file : str, optional
        Bias-subtracted master dark (with ``EXPTIME``): hot pixels.
    masterflat_file : str, optional
        Master flat: low/dead and pixel-scale defects (normalised internally).
    output_name : str
        File name of the map (uint8; 0 good; bits 1 hot, 2 low flat, 4 deviant flat,
        8 non-finite, 16 warm). The ``master`` prefix keeps it out of the raw-frame lists
        of ``get_directory`` and in ``calibration/`` after :class:`finalize_stage1`.
    hot_sigma : float
        Hot pixel: dark current above median + ``hot_sigma`` robust sigma.
    warm_sigma : float
        Warm pixel (bit 16): between ``warm_sigma`` and ``hot_sigma``. Cosmic-ray steps
        ignore every flagged pixel; :class:`bad_pixel_correction` repairs all but warm
        pixels by default (dark subtraction handles those).
    flat_min, flat_sigma : float
        Flat thresholds (see :func:`astrodart.calibration.detector.flat_defect_mask`).
    overwrite : bool or {'yes', 'no'}
        Rebuild an existing map.
    log_path : str, optional
        Run log.

    Raises
    ------
    CalibrationError
        No master given, masters of different sizes, or a master dark that still
        contains the bias (its "dark current" would be the bias level).
    """

    def __init__(
        self,
        wdir: PathLike,
        masterdark_file: PathLike | None = None,
        masterflat_file: PathLike | None = None,
        output_name: str = "master_badpixel_map.fits",
        *,
        hot_sigma: float = 10.0,
        warm_sigma: float = 5.0,
        flat_min: float = 0.5,
        flat_sigma: float = 7.0,
        overwrite: Overwrite = False,
        log_path=None,
    ):
        self.wdir = Path(wdir)
        self.masterdark_file = (
            None if masterdark_file is None else _one_path(masterdark_file, "master dark")
        )
        self.masterflat_file = (
            None if masterflat_file is None else _one_path(masterflat_file, "master flat")
        )
        if self.masterdark_file is None and self.masterflat_file is None:
            raise CalibrationError("bad_pixel_map: give masterdark_file, masterflat_file or both")
        self.output_name = output_name
        self.hot_sigma, self.warm_sigma = float(hot_sigma), float(warm_sigma)
        self.flat_min, self.flat_sigma = float(flat_min), float(flat_sigma)
        self.overwrite = parse_overwrite(overwrite)
        self.log_path = log_path

    def run(self) -> str:
        """Build and write the map; return its path."""
        out = self.wdir / self.output_name
        if out.exists() and not self.overwrite:
            return str(out)
        rate = flat = None
        header = fits.Header()
        if self.masterdark_file:
            dark = read_frame(self.masterdark_file)
            if not cal.is_bias_subtracted(dark.meta):
                raise CalibrationError(
                    f"bad_pixel_map: master dark {self.masterdark_file} still "
                    "contains the bias; build it from bias-subtracted darks"
                )
            t = FrameHeader(dark.meta, self.masterdark_file).exptime
            rate = np.asarray(dark.data, np.float32) / np.float32(t)
            header = dark.meta.copy()
        if self.masterflat_file:
            f, _ = cal.normalise_flat(read_frame(self.masterflat_file))
            flat = f.data
            if not self.masterdark_file:
                header = f.meta.copy()
        bpm = det.bad_pixel_map(
            rate,
            flat,
            hot_sigma=self.hot_sigma,
            warm_sigma=self.warm_sigma,
            flat_min=self.flat_min,
            flat_sigma=self.flat_sigma,
        )
        for k in [k for k in header if k.startswith(("IMCMB", "ADC", "NCOMBINE"))]:
            header.remove(k, ignore_missing=True, remove_all=True)
        header["ADMASTER"] = ("badpix", "astrodart bad-pixel map (0 good)")
        header["ADBPHOT"] = (int(((bpm & det.BAD_HOT) > 0).sum()), "hot pixels (bit 1)")
        header["ADBPLOW"] = (
            int(((bpm & det.BAD_FLAT_LOW) > 0).sum()),
            "low/dead flat pixels (bit 2)",
        )
        header["ADBPDEV"] = (
            int(((bpm & det.BAD_FLAT_DEVIANT) > 0).sum()),
            "deviant flat pixels (bit 4)",
        )
        header["ADBPNAN"] = (
            int(((bpm & det.BAD_NONFINITE) > 0).sum()),
            "non-finite master pixels (bit 8)",
        )
        header["ADBPWARM"] = (int(((bpm & det.BAD_WARM) > 0).sum()), "warm pixels (bit 16)")
        header["ADBPHSIG"] = (self.hot_sigma, "hot threshold (robust sigma)")
        header["ADBPWSIG"] = (self.warm_sigma, "warm threshold (robust sigma)")
        for i, p in enumerate([p for p in (self.masterdark_file, self.masterflat_file) if p], 1):
            header[f"IMCMB{i:03d}"] = Path(p).name
        header["BUNIT"] = ""
        hdu = fits.PrimaryHDU(bpm, header=header)
        write_hdulist(fits.HDUList([hdu]), out, overwrite=True)
        log_event(
            self.log_path or find_log_path(self.wdir),
            step="bad_pixel_map",
            output=str(out),
            masterdark=self.masterdark_file,
            masterflat=self.masterflat_file,
            n_bad=int((bpm > 0).sum()),
            hot=header["ADBPHOT"],
            flat_low=header["ADBPLOW"],
            flat_deviant=header["ADBPDEV"],
        )
        return str(out)


# ---------------------------------------------------------------------------------------
# detector characterisation
# ---------------------------------------------------------------------------------------
class photon_transfer:  # noqa: N801
    """Measure gain and read noise from pairs of raw flats and biases (Janesick).

    Parameters
    ----------
    bias_files : list of str
        At least two raw bias frames (ADU); consecutive files are paired.
    flat_files : list of str
        At least two raw flats of one exposure time and filter (ADU, unsaturated).
    region : str, optional
        FITS section used (default: the central half of each axis).

    Examples
    --------
    >>> ptc = photon_transfer(bias_files, flat_files).run()  # doctest: +SKIP
    >>> step = deviation_calculation(wdir, files, 'yes', ron=ptc.read_noise)  # doctest: +SKIP
    """

    def __init__(self, bias_files: Files, flat_files: Files, region: str | None = None):
        self.bias_files = [str(f) for f in bias_files]
        self.flat_files = [str(f) for f in flat_files]
        self.region = region

    def run(self) -> det.PhotonTransferResult:
        """Read the frames and measure; return a
        :class:`~astrodart.calibration.detector.PhotonTransferResult`.

        Raises
        ------
        CalibrationError
            Fewer than two frames of a kind, frames in electrons, or flats not brighter
            than the biases.
        """

        def load(files):
            out = []
            for f in files:
                c = read_frame(f)
                if c.unit != u.adu:
                    raise CalibrationError(
                        f"photon_transfer: {f} is in {c.unit}; use raw frames in ADU"
                    )
                out.append(c.data)
            return out

        biases, flats = load(self.bias_files), load(self.flat_files)
        region = None if self.region is None else cal.parse_section(self.region, biases[0].shape)
        return det.photon_transfer(biases, flats, region)


class dark_current:  # noqa: N801
    """Dark current and hot pixels of a bias-subtracted master dark.

    Parameters
    ----------
    masterdark_file : str
        Master dark with ``EXPTIME``, bias removed (in electrons for e-/s/px).
    hot_sigma : float
        Hot pixel: rate above median + ``hot_sigma`` robust sigma.
    min_rate : float, optional
        Also require a rate above this (unit of the master per second).
    """

    def __init__(
        self, masterdark_file: PathLike, hot_sigma: float = 5.0, min_rate: float | None = None
    ):
        self.masterdark_file = _one_path(masterdark_file, "master dark")
        self.hot_sigma, self.min_rate = float(hot_sigma), min_rate

    def run(self) -> det.DarkCurrentResult:
        """Measure; return a :class:`~astrodart.calibration.detector.DarkCurrentResult`.

        Raises
        ------
        CalibrationError
            The master still contains the bias.
        """
        dark = read_frame(self.masterdark_file)
        if not cal.is_bias_subtracted(dark.meta):
            raise CalibrationError(
                f"dark_current: {self.masterdark_file} still contains the bias; "
                "use a master made from bias-subtracted darks"
            )
        t = FrameHeader(dark.meta, self.masterdark_file).exptime
        return det.dark_current(
            dark.data, t, self.hot_sigma, self.min_rate, unit=f"{dark.unit.to_string()} / s"
        )


# ---------------------------------------------------------------------------------------
# finalize
# ---------------------------------------------------------------------------------------
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

    def run(self) -> tuple[list[str], list[list[str]]]:
        """Move, copy and clean; return ``(directories, files)``: one folder per filter
        (with a trailing separator) and its calibrated frames.

        Raises
        ------
        FileNotFoundError
            ``data_dir`` does not exist.
        """
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"{self.data_dir}: no such reduction folder")
        calib = self.data_dir / "calibration"
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
        directories, files = [], []
        for d in self.object_dirs:
            filt = Path(d).name
            dest_dir = self.data_dir / filt
            finals = _final_products(d)
            moved = []
            if finals:
                dest_dir.mkdir(exist_ok=True)
                for f in finals:
                    target = dest_dir / Path(f).name
                    os.replace(f, target)
                    moved.append(str(target))
            if not self.keep_intermediates:
                for f in find_fits(d):
                    if _is_step_output(f):
                        os.remove(f)
                        deleted.append(f)
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
