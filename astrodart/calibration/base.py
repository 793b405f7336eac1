"""Layer 2: what every calibration of :mod:`astrodart.calibration` shares.

The errors (:class:`CalibrationError`, :class:`CalibrationWarning`), the header keywords
the calibrations write, the variance of a frame (:func:`variance_of`), the shape/unit
check of a master against a frame (:func:`check_same_shape`) and the bias state of a
frame (:func:`is_bias_subtracted`).

Units and conventions (the whole room)
--------------------------------------
* Data are in ADU until :func:`~astrodart.calibration.noise.gain_correct`, in electrons
  after it. Gains are in e-/ADU, read noise in electrons, exposure times in seconds.
* Uncertainties are standard deviations (:class:`~astropy.nddata.StdDevUncertainty`)
  in the unit of the data. Work arrays are float32.
* Array shapes are ``(ny, nx)`` (numpy order); FITS sections are written
  ``'[x1:x2,y1:y2]'``, 1-based and inclusive, x first.
* No file I/O and no printing: the file-level steps of :mod:`astrodart.pipeline` read
  frames, call these functions and write the results. Every function returns a new
  object and never modifies its inputs.

The Poisson term of an uncertainty plane made from a raw frame
(:func:`~astrodart.calibration.noise.add_uncertainty`) includes the bias pedestal, which
carries no photon noise. The frame records this in its header (``ADPEDVAR``) and
:func:`~astrodart.calibration.bias.subtract_master_bias` /
:func:`~astrodart.calibration.sections.subtract_overscan` remove the pedestal's share
from the variance when they remove the pedestal, so the final plane holds read noise +
photon noise of the real signal + the masters' noise.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from astrodart.exceptions import AstrodartWarning

__all__ = [
    "CalibrationError",
    "CalibrationWarning",
    "KW_PEDESTAL_VAR",
    "KW_GAIN_USED",
    "KW_RON_USED",
    "KW_BIAS_SUB",
    "variance_of",
    "check_same_shape",
    "is_bias_subtracted",
]

#: Header keywords written by this module (all ours; instrument keywords are read
#: through :class:`astrodart.frames.header.FrameHeader` by the callers).
KW_PEDESTAL_VAR = "ADPEDVAR"  # Poisson variance still includes the bias pedestal
KW_GAIN_USED = "ADGAIN"  # gain (e-/ADU) used for the uncertainty / gain correction
KW_RON_USED = "ADRDNOIS"  # read noise (e-) used for the uncertainty plane
KW_BIAS_SUB = "ADBIASSB"  # bias (or overscan) removed from this frame / master


class CalibrationError(ValueError):
    """A calibration cannot be done as asked (incompatible master, bad flat, missing
    quantity); the message says what is wrong and how to fix it."""


class CalibrationWarning(AstrodartWarning):
    """Something the user should look at (pixels masked, a value ignored)."""


# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------
def _header(ccd: CCDData) -> fits.Header:
    meta = ccd.meta
    return meta.copy() if isinstance(meta, fits.Header) else fits.Header(meta)


def _new(ccd: CCDData, data, uncertainty=None, mask=None, unit=None, meta=None) -> CCDData:
    """A new CCDData with the header copied (never shares arrays with ``ccd``)."""
    unc = None if uncertainty is None else StdDevUncertainty(np.asarray(uncertainty, np.float32))
    return CCDData(
        np.asarray(data, dtype=np.float32),
        unit=unit or ccd.unit,
        meta=meta if meta is not None else _header(ccd),
        uncertainty=unc,
        mask=None if mask is None else np.asarray(mask, bool),
        wcs=ccd.wcs,
    )


def variance_of(ccd: CCDData) -> np.ndarray | None:
    """Variance of a frame, from its uncertainty plane.

    Parameters
    ----------
    ccd : CCDData
        Frame of shape ``(ny, nx)``, with any astropy uncertainty (or none).

    Returns
    -------
    numpy.ndarray or None
        ``(ny, nx)`` float32 variance in the unit of the data squared; None when the
        frame has no uncertainty.
    """
    if ccd.uncertainty is None:
        return None
    unc = ccd.uncertainty
    if not isinstance(unc, StdDevUncertainty):
        unc = unc.represent_as(StdDevUncertainty)
    a = np.asarray(unc.array, dtype=np.float32)
    return a * a


def _or_masks(*masks):
    out = None
    for m in masks:
        if m is None:
            continue
        out = np.array(m, bool) if out is None else (out | np.asarray(m, bool))
    return out




def check_same_shape(ccd: CCDData, master: CCDData, what: str) -> None:
    """Raise :class:`CalibrationError` unless ``master`` has the shape and unit of ``ccd``.

    Parameters
    ----------
    ccd, master : CCDData
        The frame and the master frame.
    what : str
        Name of the master (``'master bias'``) used in the message.
    """
    if ccd.shape != master.shape:
        raise CalibrationError(
            f"{what} is {master.shape[1]}x{master.shape[0]} px but the frame is "
            f"{ccd.shape[1]}x{ccd.shape[0]} px (NAXIS1xNAXIS2); trim frames and master with "
            f"the same region, or build the {what} from frames of this size and binning"
        )
    if master.unit != ccd.unit:
        raise CalibrationError(
            f"{what} is in {master.unit} but the frame is in {ccd.unit}; apply gain_correction "
            f"to both or to neither"
        )


def is_bias_subtracted(header) -> bool:
    """Whether a frame (or master) had its bias removed.

    Parameters
    ----------
    header : astropy.io.fits.Header or dict or None
        The frame's header.

    Returns
    -------
    bool
        The ``ADBIASSB`` keyword when present, else whether a ``subtract_bias`` or
        ``overscan_correction`` step is recorded (``ADSTEPnn``); False for None.
    """
    if header is None:
        return False
    if header.get(KW_BIAS_SUB) is not None:
        return bool(header.get(KW_BIAS_SUB))
    for key in header:
        if key.startswith("ADSTEP") and str(header[key]) in (
            "subtract_bias",
            "overscan_correction",
        ):
            return True
    return False
