"""Layer 2: master bias, dark and flat frames as calls of the one stacking engine.

A master is :func:`astrodart.combine.engine.combine_band` with the rejection masters
need - median/MAD sigma clipping floored by the block-median spread
(:class:`astrodart.combine.methods.Rejection` ``spread_floor_box``), so that the few
frames of a calibration set do not reject their own noise - and with the uncertainty
propagated from the inputs' uncertainty planes
(:func:`astrodart.combine.uncertainty.propagate_uncertainty`) instead of the scatter of
each pixel's few values. The file-level step is :class:`astrodart.first_stage.master_frame`.
"""

from __future__ import annotations

import bottleneck as bn
import numpy as np

from astrodart.combine.engine import CombineResult, combine_band
from astrodart.combine.methods import Rejection, parse_rejection
from astrodart.combine.uncertainty import propagate_uncertainty

__all__ = ["MASTER_SPREAD_FLOOR_BOX", "MASTER_SIGCLIP_PASSES", "combine_master", "master_rejection"]

#: Block (pixels) over which the sigma-clipping spread of a master is floored.
MASTER_SPREAD_FLOOR_BOX = 32
#: Sigma-clipping passes of a master.
MASTER_SIGCLIP_PASSES = 2


def master_rejection(
    clipping: str | None,
    low: float = 3.0,
    high: float = 3.0,
    nlow: int = 1,
    nhigh: int = 1,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Rejection:
    """The rejection of a master frame.

    Parameters
    ----------
    clipping : {None, 'sigclip', 'extrema_clipping', 'minmax'}
        Algorithm (aliases as in :func:`astrodart.combine.methods.clipping_names`).
    low, high : float
        'sigclip' thresholds in units of the median/MAD spread (floored over
        :data:`MASTER_SPREAD_FLOOR_BOX` pixels; :data:`MASTER_SIGCLIP_PASSES` passes).
    nlow, nhigh : int
        'extrema_clipping': lowest/highest values dropped per pixel.
    vmin, vmax : float, optional
        'minmax' limits in the unit of the data.

    Returns
    -------
    Rejection
        Sigma clipping with :data:`MASTER_SIGCLIP_PASSES` passes and the spread floored
        over :data:`MASTER_SPREAD_FLOOR_BOX` pixels, or the algorithm chosen.

    Raises
    ------
    ValueError
        Unknown clipping name or inconsistent settings ('minmax' without limits).
    """
    return parse_rejection(clipping, low, high, maxiters=MASTER_SIGCLIP_PASSES, nlow=nlow,
                           nhigh=nhigh, min_value=vmin, max_value=vmax,
                           spread_floor_box=MASTER_SPREAD_FLOOR_BOX)


def combine_master(
    band: np.ndarray,
    method: str,
    rejection: Rejection,
    variances: np.ndarray | None = None,
    common_variance: np.ndarray | None = None,
) -> CombineResult:
    """Combine a stack of calibration frames into (a band of) a master frame.

    Parameters
    ----------
    band : numpy.ndarray
        ``(nframes, ny, nx)`` float32 stack in the data unit (flats already scaled to a
        common level); NaN = missing or masked value. **Modified in place** (rejected
        values become NaN).
    method : {'median', 'average', 'sum'}
        Combination of the kept values ('sum' is the sum of the kept values).
    rejection : Rejection
        Usually :func:`master_rejection`.
    variances : numpy.ndarray, optional
        ``(nframes, ny, nx)`` variances of the inputs (data unit squared).
    common_variance : numpy.ndarray, optional
        ``(ny, nx)`` variance shared by all inputs (a master subtracted from each).

    Returns
    -------
    CombineResult
        ``uncertainty`` as :func:`astrodart.combine.uncertainty.propagate_uncertainty`
        gives it. A pixel where no value is left gets the plain median of its values
        (0 if none is valid) and ``ncombined == 0``, for the caller to mask.

    Raises
    ------
    ValueError
        As :func:`astrodart.combine.engine.combine_band`.
    """
    fallback = bn.nanmedian(band, axis=0) if rejection.minmax else None
    res = combine_band(band, method, rejection=rejection, mark_rejected=True)
    res.uncertainty = propagate_uncertainty(band, res.ncombined, method, variances,
                                            common_variance)
    empty = res.ncombined == 0
    if empty.any():
        res.data[empty] = 0.0 if fallback is None else np.nan_to_num(fallback[empty])
    return res
