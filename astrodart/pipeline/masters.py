"""Layer 3: master frames: the combined master bias/dark/flat and interpolated darks.

:class:`master_frame` combines calibration frames into a master that records its
inputs (``NCOMBINE``, ``IMCMBnnn``) and combine settings; :class:`dark_interpolation`
makes a master dark for an exposure time without darks from masters at other exposure
times (least squares ``D = t A + B`` per pixel).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from astrodart import calibration as cal
from astrodart.calibration.base import CalibrationError
from astrodart.combine.files import check_resources
from astrodart.combine.masters import MASTER_SIGCLIP_PASSES, combine_master, master_rejection
from astrodart.combine.methods import CLIPPING_METHODS, ENGINE_METHODS
from astrodart.frames.checks import check_number
from astrodart.frames.header import FrameHeader
from astrodart.frames.io import read_frame, read_header
from astrodart.pipeline.calibrate import dark_for_exposure
from astrodart.pipeline.calibration_step import (
    Files,
    Overwrite,
    PathLike,
    _shape_from_header,
    load_master,
)
from astrodart.pipeline.master_records import (  # noqa: F401 (first_stage imports them here)
    _PER_FRAME_KEYWORDS,
    _MasterStep,
    _record_inputs,
    _recorded_inputs,
    _reuse_master,
)

__all__ = ["master_frame"]

log = logging.getLogger("astrodart")


class master_frame(_MasterStep):  # noqa: N801
    """Combine calibration frames into a master that records its inputs and settings.

    A :class:`~astrodart.pipeline.kinds.ManyToOneStep` run in this process; the master
    also carries the engine's ``ADFPRINT`` (its own cards record the provenance).

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
        super().__init__(wdir, files, str(output_name), overwrite, log_path)
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
        me, sigma = "master_frame", {"minimum": 0, "exclusive": True, "unit": "sigma"}
        self.low = check_number("minclip", minclip, owner=me, **sigma)
        self.high = check_number("maxclip", maxclip, owner=me, **sigma)
        self.nlow, self.nhigh = (check_number(n, v, minimum=0, integer=True, owner=me)
                                 for n, v in (("nlow", nlow), ("nhigh", nhigh)))
        self.vmin, self.vmax = (check_number(n, v, allow_none=True, owner=me) for n, v in
                                (("minmax_clip_min", minmax_clip_min),
                                 ("minmax_clip_max", minmax_clip_max)))
        self.frame_type = frame_type
        self.memory_limit = check_resources(memory_limit, None, me)[0]

    name = "master_frame"

    @property
    def output_path(self) -> Path:
        """Where the master is written."""
        return self.wdir / self.output_name

    def parameters(self) -> dict:
        """The combine settings and frame type (in the fingerprint).

        Returns
        -------
        dict
            As recorded in the header, plus ``frame_type``.
        """
        return dict(self._settings(len(self.files)), frame_type=self.frame_type)

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

    def combine(self, paths: list[str]) -> CCDData:
        """Validate and combine the inputs (in bands of rows within ``memory_limit``).

        Parameters
        ----------
        paths : list of str
            The inputs (all of :attr:`files`).

        Returns
        -------
        astropy.nddata.CCDData
            The master, written by the engine to ``wdir/output_name`` (:meth:`run`
            returns that path; an existing master from the same frames is reused).

        Raises
        ------
        CalibrationError
            No inputs, frames of different sizes, binnings, units or (darks) exposure
            times, a non-calibration frame type, or a bad combine option.
        """
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
        self._record = {"frame_type": ftype, "inputs": self.files, "settings": settings,
                        "rejected_fraction": float(np.mean(rejected))}
        log.info("master_frame: %s from %d frames (%s)", self.output, n, settings)
        return ccd
