"""Layer 2: master-bias subtraction.

Conventions: see :mod:`astrodart.calibration.base`; the pedestal's share of the variance
is removed here (:func:`subtract_master_bias`).
"""

from __future__ import annotations

import numpy as np
from astropy.nddata import CCDData

from astrodart.calibration.base import (
    KW_BIAS_SUB,
    KW_PEDESTAL_VAR,
    _header,
    _new,
    _or_masks,
    check_same_shape,
    variance_of,
)
from astrodart.calibration.noise import _remove_pedestal_variance

__all__ = ["subtract_master_bias"]


def subtract_master_bias(ccd: CCDData, master: CCDData) -> CCDData:
    """Subtract a master bias.

    Parameters
    ----------
    ccd : CCDData
        Frame, shape ``(ny, nx)``, unit ADU or electron.
    master : CCDData
        Master bias of the same shape and unit.

    Returns
    -------
    CCDData
        ``ccd - master``; variance: the frame's (minus the pedestal's Poisson share, see
        the module notes) plus the master's; masks OR-ed; header ``ADBIASSB=True``.

    Raises
    ------
    CalibrationError
        Shape or unit mismatch.
    """
    check_same_shape(ccd, master, "master bias")
    header = _header(ccd)
    var = _remove_pedestal_variance(variance_of(ccd), header, master.data, ccd.unit)
    mvar = variance_of(master)
    if var is not None and mvar is not None:
        var = var + mvar
    header[KW_PEDESTAL_VAR] = False if var is not None else header.get(KW_PEDESTAL_VAR, False)
    header[KW_BIAS_SUB] = (True, "bias removed (overscan or master bias)")
    return _new(
        ccd,
        ccd.data - master.data,
        None if var is None else np.sqrt(var),
        _or_masks(ccd.mask, master.mask),
        meta=header,
    )
