"""Layer 3: the gain and read noise of a night, and where each comes from.

:func:`night_gain_read_noise` takes them from the header, else measures them on the
night's bias and flat pairs (photon transfer), else uses the user's values, else assumes
1.0 e-/ADU (and the bias scatter, or 0, for the read noise) with one
:class:`AssumedGainWarning`. Used by :func:`astrodart.pipeline.night_calibration.night_masters`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from astrodart.exceptions import AstrodartWarning, warn

__all__ = ["AssumedGainWarning", "night_gain_read_noise"]


class AssumedGainWarning(AstrodartWarning):
    """Neither the header, the calibration frames nor the user gave the gain or read noise:
    an assumed value is used."""


def _header_value(fh, keys) -> tuple[float, str] | None:
    """``(value, keyword)`` of the first numeric keyword of ``keys`` in a header."""
    for k in keys:
        try:
            v = float(fh.header[k])
        except (KeyError, TypeError, ValueError):
            continue
        if np.isfinite(v):
            return v, k
    return None


def _bias_pair_noise(files: Sequence[str]) -> tuple[float, int]:
    """Read noise (ADU) of raw bias frames, median over consecutive pairs, and the pairs."""
    from astrodart import calibration as cal
    from astrodart.frames.io import read_frame

    frames = [read_frame(f).data for f in files[: 2 * (len(files) // 2)]]
    noise = [cal.read_noise_from_pair(frames[i], frames[i + 1])
             for i in range(0, len(frames) - 1, 2)]
    return float(np.median(noise)), len(noise)


def _first_frame(tree) -> str | None:
    """The first raw frame of the night (bias, dark, flat, then science)."""
    groups = [tree.bias()[1]] + tree.dark()[1] + tree.flatfield()[1] + tree.science()[1]
    return next((g[0] for g in groups if g), None)


def _measured_gain(bias_files, flat_groups) -> tuple[float, str] | None:
    """Gain from the photon transfer of the bias and flat pairs, or None when it fails."""
    from astrodart.calibration.base import CalibrationError
    from astrodart.pipeline.characterise import photon_transfer

    flats = next((g for g in flat_groups if len(g) >= 2), None)
    if len(bias_files) < 2 or flats is None:
        return None
    try:
        ptc = photon_transfer(bias_files, flats).run()
    except (CalibrationError, ValueError):
        return None
    if not (np.isfinite(ptc.gain) and ptc.gain > 0):
        return None
    return ptc.gain, (f"measured: photon transfer of {len(ptc.gains)} flat pairs and "
                      f"{len(ptc.read_noises_adu)} bias pairs")


def night_gain_read_noise(tree, gain: float | None = None,
                          read_noise: float | None = None) -> dict:
    """The night's gain (e-/ADU) and read noise (e-), and where each comes from.

    Gain: the header (``EGAIN``/``GAIN``/..., :attr:`FrameHeader.gain`: a CMOS camera's
    gain setting is not e-/ADU), else measured
    by photon transfer when the night has at least two bias frames and two flats of a
    filter (:class:`astrodart.pipeline.characterise.photon_transfer`), else ``gain``, else
    1.0 e-/ADU. Read noise: the header (``RON``/``RDNOISE``/...), else measured from pairs
    of bias frames (ADU, times the gain), else ``read_noise``, else the scatter of the one
    bias frame (times the gain) or 0. Anything assumed is said in ONE
    :class:`AssumedGainWarning`. The header read is that of the first raw frame.

    Parameters
    ----------
    tree : astrodart.pipeline.organise.get_directory
        The sorted night.
    gain : float, optional
        The user's gain (e-/ADU), used when neither header nor frames give one.
    read_noise : float, optional
        The user's read noise (e-), used likewise.

    Returns
    -------
    dict
        ``{'gain': (value, source), 'read_noise': (value, source), 'notes': [str]}``;
        ``source`` starts with ``'header'``, ``'measured'``, ``'user'`` or ``'assumed'``.

    Raises
    ------
    ValueError
        ``gain`` not positive or ``read_noise`` negative (or not finite).
    """
    from astrodart.calibration import robust_std
    from astrodart.frames.header import FrameHeader
    from astrodart.frames.io import read_frame

    _check_user_values(gain, read_noise)
    first = _first_frame(tree)
    fh = FrameHeader.from_file(first) if first else None
    bias_files, flats = tree.bias()[1], tree.flatfield()[1]
    g = (fh.gain, fh.gain_keyword) if fh and fh.gain is not None else None  # not a CMOS setting
    g = (g[0], f"header {g[1]}") if g else _measured_gain(bias_files, flats)
    g = g or ((float(gain), "user") if gain is not None else None)
    assumed = [] if g else ["gain 1.0 e-/ADU"]
    g = g or (1.0, "assumed: no gain in the header, no bias/flat pairs, none given")
    r = _header_value(fh, FrameHeader.RON_KEYS) if fh else None
    r = (r[0], f"header {r[1]}") if r else None
    if r is None and len(bias_files) >= 2:
        adu, pairs = _bias_pair_noise(bias_files)
        r = (adu * g[0], f"measured: {pairs} bias pairs, {adu:.3f} ADU x gain {g[0]:.4g}")
    r = r or ((float(read_noise), "user") if read_noise is not None else None)
    if r is None:
        adu = float(robust_std(read_frame(bias_files[0]).data)) if bias_files else 0.0
        r = (adu * g[0], "assumed: scatter of the one bias frame" if bias_files
             else "assumed: no read noise in the header, no bias frames, none given")
        assumed.append(f"read noise {r[0]:.3g} e-")
    notes = [f"gain {g[0]:.4g} e-/ADU ({g[1]}); read noise {r[0]:.3g} e- ({r[1]})"]
    notes += _ignored_user_values(gain, read_noise, g, r)
    if assumed:
        warn(f"{' and '.join(assumed)} assumed: the uncertainties and electron counts "
             "are only as good as this; pass the camera's gain= and read_noise=",
             AssumedGainWarning)
    return {"gain": g, "read_noise": r, "notes": notes}


def _check_user_values(gain, read_noise) -> None:
    if gain is not None and not (np.isfinite(gain) and gain > 0):
        raise ValueError(f"gain={gain!r}: give the detector gain in e-/ADU, a number > 0")
    if read_noise is not None and not (np.isfinite(read_noise) and read_noise >= 0):
        raise ValueError(f"read_noise={read_noise!r}: give the read noise in electrons, "
                         "a number >= 0")


def _ignored_user_values(gain, read_noise, g, r) -> list[str]:
    """Notes for user values that the header or the frames overrode."""
    out = []
    for name, value, used in (("gain", gain, g), ("read_noise", read_noise, r)):
        if value is not None and used[1] != "user":
            out.append(f"{name}={value:g} given but not used: {used[1]} comes first")
    return out
