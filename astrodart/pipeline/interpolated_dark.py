"""Layer 3: a master dark for an exposure time without darks, interpolated from master
darks at other exposure times (least squares ``D = t A + B`` per pixel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from astrodart import calibration as cal
from astrodart.calibration.base import CalibrationError
from astrodart.frames.header import FrameHeader
from astrodart.frames.io import read_frame
from astrodart.pipeline.calibrate import _shared_bias_variance
from astrodart.pipeline.calibration_step import (
    Files,
    Overwrite,
    PathLike,
    _compare_geometry,
    _one_path,
)
from astrodart.pipeline.master_records import _MasterStep, _record_inputs

__all__ = ["dark_interpolation"]


class dark_interpolation(_MasterStep):  # noqa: N801
    """A master dark for an exposure time without darks, from masters at other exposure
    times: per-pixel weighted least squares ``D(t) = t A + B`` (as astro_reduce does).

    A many-to-one step (:class:`~astrodart.pipeline.kinds.ManyToOneStep`) run in this
    process; the output also carries the engine's ``ADFPRINT``.

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
        inputs = self.masterdark_files + ([self.masterbias_file] if self.masterbias_file else [])
        super().__init__(wdir, inputs, self.output_name, overwrite, log_path)

    name = "dark_interpolation"

    def parameters(self) -> dict:
        """The exposure time wanted (in the fingerprint).

        Returns
        -------
        dict
            ``{'exptime': seconds}``.
        """
        return {"exptime": self.exptime}

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

    def combine(self, paths: list[str]) -> CCDData:
        """Fit the masters and evaluate the fit at ``exptime``.

        Parameters
        ----------
        paths : list of str
            The inputs (the master darks, then the master bias if given).

        Returns
        -------
        astropy.nddata.CCDData
            The interpolated master dark, written by the engine to ``wdir/output_name``
            (:meth:`run` returns that path; an existing one from the same masters is reused).

        Raises
        ------
        CalibrationError
            Masters of different sizes/units, fewer than two exposure times, a master
            bias given with bias-subtracted darks, or mixed bias states.
        """
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
        self._record = {"inputs": inputs, "exptimes": times, "exptime": self.exptime,
                        "residual_rms": model.residual_rms}
        return ccd
