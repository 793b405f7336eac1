"""Layer 3: which master dark each exposure time uses, and a master dark for an exposure
time without darks, interpolated from master darks at other exposure times (least squares
``D = t A + B`` per pixel).

:func:`choose_darks` decides, from the exposure times alone (before any master is made),
how the frames of each exposure get their dark: the master of the same exposure, one
bias-subtracted master scaled, or the interpolation of :class:`dark_interpolation`;
:func:`darks_for_exposures` carries the decision out on the masters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

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

__all__ = ["choose_darks", "dark_interpolation", "darks_for_exposures"]


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


def _seconds(times) -> str:
    return ", ".join(f"{t:g}" for t in sorted(times))


def choose_darks(dark_exptimes: Sequence[float], exptimes: Sequence[float],
                 bias_subtracted: bool, interpolate: bool = False) -> dict:
    """How frames of each exposure time get their master dark (a decision, no file read).

    * a master of the same exposure (within 0.1 %): used as it is;
    * otherwise, with ``interpolate`` and masters of at least two exposure times: the
      least-squares line ``D = t A + B`` through them (:class:`dark_interpolation`);
    * otherwise, masters that are bias-subtracted: the master of the closest exposure
      (the longer one on a tie), scaled by the exposure ratio;
    * masters that still hold the bias (a night without bias frames) cannot be scaled:
      with two or more exposure times they are interpolated (``B`` then holds the bias),
      even without ``interpolate``;
    * no masters at all: no dark.

    Parameters
    ----------
    dark_exptimes : sequence of float
        Exposure times (s) of the master darks.
    exptimes : sequence of float
        Exposure times (s) of the frames to calibrate.
    bias_subtracted : bool
        Whether the master darks are bias-subtracted (the night has bias frames).
    interpolate : bool
        Interpolate rather than scale when no master has the frame's exposure.

    Returns
    -------
    dict
        ``{exptime: (how, masters)}`` with ``how`` one of ``'same exposure'``,
        ``'scaled'``, ``'interpolated'``, ``'none'`` and ``masters`` the exposure times of
        the master darks used (a tuple, empty for ``'none'``).

    Raises
    ------
    CalibrationError
        A frame exposure that only one master dark holding the bias could serve (it cannot
        be scaled without a bias); the message names the exposures and the fixes.
    """
    darks = sorted({float(t) for t in dark_exptimes})
    out = {}
    for t in sorted({float(t) for t in exptimes}):
        same = [d for d in darks if np.isclose(d, t, rtol=1e-3)]
        if same:
            out[t] = ("same exposure", (same[0],))
        elif not darks:
            out[t] = ("none", ())
        elif len(darks) >= 2 and (interpolate or not bias_subtracted):
            out[t] = ("interpolated", tuple(darks))
        elif bias_subtracted:
            out[t] = ("scaled", (min(darks, key=lambda d: (abs(np.log(d / t)) if d > 0 and t > 0
                                                          else abs(d - t), -d)),))
        else:
            raise CalibrationError(
                f"frames of {t:g} s: the only master dark is of {_seconds(darks)} s and still "
                "holds the bias (the night has no bias frames), so it cannot be scaled to "
                f"{t:g} s; add bias frames, darks of {t:g} s, or darks of a second exposure "
                "time to interpolate (D = t A + B)"
            )
    return out


def darks_for_exposures(choices: dict, masters: dict, wdir: PathLike,
                        overwrite: Overwrite = False) -> dict:
    """Carry out :func:`choose_darks`: the master dark file of each exposure time.

    Interpolated darks are written by :class:`dark_interpolation` into ``wdir`` (reused
    when they exist, unless ``overwrite``).

    Parameters
    ----------
    choices : dict
        As :func:`choose_darks` returns.
    masters : dict
        Exposure time (s) -> master dark path.
    wdir : str or pathlib.Path
        Folder of the interpolated darks.
    overwrite : bool or {'yes', 'no'}
        Rebuild existing interpolated darks.

    Returns
    -------
    dict
        ``{exptime: {'path': str or None, 'how': str}}``, ``how`` for people:
        ``'same exposure'``, ``'scaled from 20 s'``,
        ``'interpolated from 2 masters (10, 30 s)'`` or ``'no dark'``.
    """
    out = {}
    for t, (how, used) in sorted(choices.items()):
        if how == "none":
            out[t] = {"path": None, "how": "no dark"}
        elif how == "same exposure":
            out[t] = {"path": masters[used[0]], "how": how}
        elif how == "scaled":
            out[t] = {"path": masters[used[0]], "how": f"scaled from {used[0]:g} s"}
        else:
            path = dark_interpolation(wdir, [masters[d] for d in used], t,
                                      overwrite=overwrite).run()
            out[t] = {"path": str(path),
                      "how": f"interpolated from {len(used)} masters ({_seconds(used)} s)"}
    return out
