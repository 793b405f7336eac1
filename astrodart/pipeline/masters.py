"""Layer 3: master frames: the combined master bias/dark/flat and interpolated darks.

:class:`master_frame` combines calibration frames into a master that records its
inputs (``NCOMBINE``, ``IMCMBnnn``) and combine settings; :class:`dark_interpolation`
makes a master dark for an exposure time without darks from masters at other exposure
times (least squares ``D = t A + B`` per pixel).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from astrodart import __version__
from astrodart import calibration as cal
from astrodart.calibration.base import CalibrationError
from astrodart.combine.masters import MASTER_SIGCLIP_PASSES, combine_master, master_rejection
from astrodart.combine.methods import CLIPPING_METHODS, ENGINE_METHODS
from astrodart.frames.header import FrameHeader
from astrodart.frames.io import read_frame, read_header, write_frame
from astrodart.pipeline.calibrate import _shared_bias_variance, dark_for_exposure
from astrodart.pipeline.calibration_step import (
    KW_NONFINITE,
    Files,
    Overwrite,
    PathLike,
    _compare_geometry,
    _one_path,
    _shape_from_header,
    load_master,
)
from astrodart.pipeline.step import find_log_path, log_event, parse_overwrite

__all__ = ["master_frame", "dark_interpolation"]

log = logging.getLogger("astrodart")


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


#: Keywords of one input frame that do not describe a master made of many.
_PER_FRAME_KEYWORDS = (
    "ADNCRPIX",
    "ADDKSCAL",
    "ADFLBAD",
    KW_NONFINITE,
    "ADNBADPX",
    "ADMDARK",
    "ADDKEXP",
    "ADDKSRC",
)


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
        :func:`astrodart.combine.masters.combine_master`).
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
        if combining_method not in ENGINE_METHODS:
            raise CalibrationError(
                f"master_frame: combining_method={combining_method!r} unknown; use "
                f"one of {ENGINE_METHODS}"
            )
        if clipping_method not in CLIPPING_METHODS:
            raise CalibrationError(
                f"master_frame: clipping_method={clipping_method!r} unknown; use "
                f"one of {[c for c in CLIPPING_METHODS if c]} or None"
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
                dark, dark_t, bsub, _ = dark_for_exposure(paths, float(first["ADDKEXP"]))
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

    def _settings(self, n: int) -> dict:
        """The combine settings recorded in the master's header and the run log."""
        settings = {"method": self.method, "clipping": self.clipping, "n": n}
        if self.clipping == "sigclip":
            settings.update(low=self.low, high=self.high, centre="median", spread="MAD",
                            iterations=MASTER_SIGCLIP_PASSES)
        elif self.clipping == "extrema_clipping":
            settings.update(nlow=self.nlow, nhigh=self.nhigh)
        elif self.clipping == "minmax":
            settings.update(vmin=self.vmin, vmax=self.vmax)
        return settings

    def _bands(self, n: int, ny: int, nx: int) -> list:
        """Row bands (slices; ``[None]`` for the whole frame) such that a band's stack of
        ``n`` frames, its variances and the combine's temporaries fit ``memory_limit``."""
        need = n * ny * nx * 4 * 6  # cube, variances and the combine's temporaries
        if need <= self.memory_limit:
            return [None]
        step = max(1, int(ny * self.memory_limit / need))
        return [slice(y, min(y + step, ny)) for y in range(0, ny, step)]

    def _header(self, headers: list, ftype: str) -> fits.Header:
        """The master's header: the first input's, without the per-frame keywords, with
        the mean exposure time, the bias state and (flats) the normalisation."""
        header = headers[0].copy()
        for key in _PER_FRAME_KEYWORDS:
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
        return header

    def run(self) -> str:
        """Combine and write the master; return its path (reused if it exists and not
        ``overwrite``).

        Returns
        -------
        str
            The master's path (``wdir/output_name``).

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
        bands = self._bands(n, ny, nx)
        data = np.empty((ny, nx), np.float32)
        error = np.empty((ny, nx), np.float32)
        used = np.empty((ny, nx), np.int16)
        rejected, unit = [], None
        for band in bands:
            cube = vcube = res = None  # free the previous band before reading the next
            cube, vcube, levels, unit = self._read_stack(band, normalise)
            common = self._common_variance(headers, band, levels) if vcube is not None else None
            rej = master_rejection(self.clipping, self.low, self.high, self.nlow, self.nhigh,
                                   self.vmin, self.vmax)
            res = combine_master(cube, self.method, rej, variances=vcube, common_variance=common)
            sl = band if band is not None else slice(None)
            data[sl], error[sl], used[sl] = res.data, res.uncertainty, res.ncombined
            rejected.append(res.rejected_fraction)
            settings = dict(self._settings(n), normalised=normalise)
        cube = vcube = res = None
        header = self._header(headers, ftype)
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

    def _read_masters(self) -> tuple[list[CCDData], list[float], list[str], bool]:
        """The masters to fit, their exposure times (s), the input paths and whether
        they are bias-subtracted; the master bias (or, for bias-subtracted darks of one
        exposure, a zero dark) enters at exposure 0."""
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
        return darks, times, inputs, bsub

    def _header(self, first: CCDData, times, model, bsub: bool) -> fits.Header:
        """The interpolated dark's header: the first master's, with the exposure wanted
        and the fit recorded."""
        meta = first.meta
        header = meta.copy() if isinstance(meta, fits.Header) else fits.Header(meta)
        for k in [k for k in header if k.startswith("IMCMB")]:
            header.remove(k, ignore_missing=True, remove_all=True)
        header["EXPTIME"] = (self.exptime, "[s] exposure of this interpolated dark")
        header["EXPOSURE"] = (self.exptime, "[s] exposure of this interpolated dark")
        header["ADDKINTP"] = (True, "dark = t * A + B, per-pixel least squares")
        header["ADDKTIMS"] = (",".join(f"{t:g}" for t in times), "[s] exposures fitted")
        header["ADDKRMS"] = (model.residual_rms, "RMS of the fit residuals")
        header[cal.KW_BIAS_SUB] = (bsub, "bias removed from the inputs")
        return header

    def run(self) -> str:
        """Fit, evaluate at ``exptime`` and write; return the output path.

        Returns
        -------
        str
            The interpolated master dark's path.

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
        darks, times, inputs, bsub = self._read_masters()
        common = None if self.masterbias_file else _shared_bias_variance([d.meta for d in darks])
        model = cal.fit_dark_model(
            times,
            [d.data for d in darks],
            [cal.variance_of(d) for d in darks],
            common_variance=common,
        )
        data, std = model.evaluate(self.exptime)
        header = self._header(darks[0], times, model, bsub)
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
