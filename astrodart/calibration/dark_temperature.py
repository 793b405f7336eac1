"""Layer 2: which master dark matches a light's sensor temperature.

Dark current, and the amp glow of CMOS sensors, roughly double every 5-7 C (Widenhorn
et al. 2002, Proc. SPIE 4669, 193), so a master dark serves a light only at the same
exposure AND temperature. BANZAI picks its darks the same way (by exposure and
temperature). :func:`nearest_temperature` picks, among master darks of one exposure,
the one nearest the light's temperature; beyond ``tolerance`` the nearest is still used
(better than none) and a :class:`DarkTemperatureWarning` says so once per run.
"""
from __future__ import annotations

import math
from typing import Sequence

from astrodart.exceptions import AstrodartWarning, warn

__all__ = ["DARK_TEMPERATURE_TOLERANCE", "DarkTemperatureWarning", "nearest_temperature"]

#: Largest difference (deg C) between a light's and its master dark's sensor temperature.
DARK_TEMPERATURE_TOLERANCE = 2.0


class DarkTemperatureWarning(AstrodartWarning):
    """No master dark within the tolerance of a light's sensor temperature: the nearest
    is used."""


def nearest_temperature(dark_temperatures: Sequence[float | None], temperature: float | None,
                        tolerance: float = DARK_TEMPERATURE_TOLERANCE,
                        item: str | None = None) -> int:
    """Index of the master dark whose sensor temperature is nearest a light's.

    Parameters
    ----------
    dark_temperatures : sequence of float or None
        Sensor temperature (deg C, ``CCD-TEMP`` else ``SET-TEMP``) of each candidate
        master dark (all of the light's exposure time); None where not recorded.
    temperature : float or None
        The light's sensor temperature (deg C); None: not recorded.
    tolerance : float
        Largest acceptable difference (deg C), >= 0.
    item : str, optional
        The light (file name), named in the warning.

    Returns
    -------
    int
        Index into ``dark_temperatures``: the nearest in temperature; 0 when the light
        or every dark lacks a temperature (nothing to match on).

    Raises
    ------
    ValueError
        ``dark_temperatures`` is empty, or ``tolerance`` is negative or not finite.
    """
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance={tolerance!r}: give the largest temperature difference "
                         "in deg C, a finite number >= 0")
    if len(dark_temperatures) == 0:
        raise ValueError("dark_temperatures is empty: give at least one master dark")
    known = [(abs(t - temperature), i) for i, t in enumerate(dark_temperatures)
             if t is not None and temperature is not None and math.isfinite(t)]
    if not known:
        return 0
    diff, best = min(known)
    if diff > tolerance:
        warn(f"no master dark within {tolerance:g} C of the light's sensor temperature: the "
             "nearest is used, so dark current and amp glow are under- or over-subtracted; "
             "take darks at the lights' temperature",
             DarkTemperatureWarning,
             item=f"{item or 'light'} ({temperature:.1f} C; nearest dark "
                  f"{dark_temperatures[best]:.1f} C)")
    return best
