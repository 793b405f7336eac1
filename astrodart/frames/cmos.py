"""Layer 1: what CMOS cameras write differently: the gain setting and the ADC bit depth.

Gain: N.I.N.A., SharpCap, ASIAIR and the ZWO/QHY drivers write ``GAIN`` as the camera's
gain *setting* (e.g. 120, unitless) with ``OFFSET`` beside it, and ``EGAIN`` as e-/ADU;
MaxIm DL, SBIG CCDOPS and IRAF write ``EGAIN`` or ``GAIN`` in e-/ADU.
:func:`gain_setting_reason` says when a ``GAIN`` is a setting (used by
:attr:`astrodart.frames.header.FrameHeader.gain`).

Bit depth: a 12- or 14-bit ADC stores its counts in 16-bit words either left-shifted
(every value a multiple of 2**4 or 2**2: ZWO, QHY and most CMOS drivers) or as they come
(every value <= 4095: MicroObservatory's 12-bit CCD). Neither writes ``SATURATE``, so the
data type's limit (65535) would never be reached and saturated stars would pass as good.
:func:`frame_bit_depth` reads the depth from one frame (a left shift, or a plateau of
pixels at exactly 4095 or 16383), :func:`camera_bit_depth` from a night's frames (also
every value <= 4095). Left-shifted data KEEP their stored ADU scale: the capture program's
``EGAIN`` and ``SATURATE``, and the masters of the same camera, are in the stored units,
and dividing by 2**shift would silently change every value a user compares with other
software; a gain in e-/ADU then refers to the shifted ADU (a 12-bit camera of 1 e-/ADU
at the ADC reads 1/16 e-/ADU in the stored words).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from astrodart.exceptions import AstrodartWarning

__all__ = [
    "CMOS_CAMERA_NAMES",
    "MAX_GAIN_E_PER_ADU",
    "GainSettingWarning",
    "gain_setting_reason",
    "BitDepth",
    "frame_bit_depth",
    "camera_bit_depth",
]

#: Camera names (``INSTRUME``/``DETECTOR``/``CAMERA``) of CMOS cameras, whose capture
#: programs write ``GAIN`` as the gain setting (ZWO ASI, QHY, ToupTek, Player One, ...).
CMOS_CAMERA_NAMES = re.compile(r"\bzwo\b|\basi ?\d{3}|\bqhy|touptek|player ?one|svbony|altair ?cam"
                               r"|\bpoa\b|\bimx ?\d{3}|atik (horizon|apx|acis)|moravian c\d",
                               re.IGNORECASE)
#: A ``GAIN`` above this, with no ``EGAIN``, is a setting, not e-/ADU.
MAX_GAIN_E_PER_ADU = 20.0
#: ADC depths recognised in 16-bit words, and the fewest pixels that make a plateau.
_DEPTHS = (12, 14)
_MIN_PLATEAU = 3
_MIN_DISTINCT = 16


class GainSettingWarning(AstrodartWarning):
    """``GAIN`` holds a CMOS camera's gain setting, not e-/ADU: the gain is measured or
    assumed instead."""


def gain_setting_reason(value: float, camera: str | None, has_offset: bool) -> str | None:
    """Why a ``GAIN`` keyword without ``EGAIN`` is a camera's gain setting, or None.

    Parameters
    ----------
    value : float
        The ``GAIN`` value.
    camera : str or None
        The camera name (``INSTRUME``/``DETECTOR``/``CAMERA``).
    has_offset : bool
        Whether an ``OFFSET`` keyword stands beside it (CMOS capture programs write both).

    Returns
    -------
    str or None
        The reason, for the warning; None when ``GAIN`` reads as e-/ADU (MaxIm DL, IRAF).
    """
    if camera and CMOS_CAMERA_NAMES.search(camera):
        return f"{camera!r} is a CMOS camera"
    if has_offset:
        return "an OFFSET keyword stands beside it"
    if value > MAX_GAIN_E_PER_ADU:
        return f"above {MAX_GAIN_E_PER_ADU:g}, too large for e-/ADU"
    return None


@dataclass(frozen=True)
class BitDepth:
    """The ADC depth of a camera as seen in its stored pixel values.

    Parameters
    ----------
    bits : int
        Significant bits of the ADC (12, 14, ...).
    shift : int
        Left shift of the counts in the stored words (0 when stored as they come).
    saturation : float
        Stored value at and above which a pixel is saturated:
        ``(2**bits - 1) * 2**shift``.
    evidence : str
        What in the data showed it.
    """

    bits: int
    shift: int
    saturation: float
    evidence: str

    def __str__(self) -> str:
        how = f"left-shifted by {self.shift}" if self.shift else "not shifted"
        return f"{self.bits}-bit ADC ({how}), saturated at {self.saturation:g} ADU: {self.evidence}"


def _shift(values: np.ndarray) -> int:
    """Trailing zero bits common to every value (the left shift), 0 when unclear."""
    ints = np.abs(np.asarray(values, dtype=np.int64)).ravel()
    common = int(np.bitwise_or.reduce(ints)) if ints.size else 0
    if common == 0:
        return 0
    return (common & -common).bit_length() - 1


def _integer_valued(data: np.ndarray) -> bool:
    sample = np.asarray(data).ravel()[:: max(1, data.size // 4096)]
    return bool(np.all(np.isfinite(sample)) and np.all(sample == np.round(sample)))


def frame_bit_depth(data, word_bits: int = 16) -> BitDepth | None:
    """The ADC depth of one raw integer frame, when its data show it.

    Left-shifted: every value a multiple of ``2**k`` (``k >= 2``, and at least 16
    distinct values, so a constant test frame is not mistaken). Not shifted: at least 3
    pixels share a maximum of exactly 4095 or 16383 (the plateau a saturated 12- or
    14-bit ADC leaves). A frame with neither gives None (its depth cannot be told, and
    nothing in it is saturated at a 12-bit level below its maximum).

    Parameters
    ----------
    data : numpy.ndarray
        The raw pixel values (true values, after ``BZERO``), integer-valued.
    word_bits : int
        Bits of the stored word (16).

    Returns
    -------
    BitDepth or None
        The depth, shift and saturation level, or None.
    """
    data = np.asarray(data)
    if data.size < 64 or not _integer_valued(data):
        return None
    sample = data.ravel()[:: max(1, data.size // 4096)]
    if _shift(sample) >= 2 and np.unique(sample).size >= _MIN_DISTINCT:
        k = min(_shift(data), word_bits - 8)
        if k >= 2:
            bits = word_bits - k
            return BitDepth(bits, k, float((2 ** bits - 1) * 2 ** k),
                            f"every value a multiple of {2 ** k}")
    top = float(np.nanmax(data))
    for bits in _DEPTHS:
        if top == 2 ** bits - 1:
            n = int(np.count_nonzero(data == top))
            if n >= _MIN_PLATEAU:
                return BitDepth(bits, 0, top, f"{n} pixels at exactly {top:g}")
    return None


def camera_bit_depth(frames, word_bits: int = 16) -> BitDepth | None:
    """The ADC depth of a camera from several of its raw frames.

    Adds, to :func:`frame_bit_depth`'s rules over the frames together, a maximum of at
    most 4095 across every frame: a 12-bit ADC stored unshifted (MicroObservatory).

    Parameters
    ----------
    frames : iterable of numpy.ndarray
        Raw integer frames of one camera (true values), e.g. a night's light frames.
    word_bits : int
        Bits of the stored word (16).

    Returns
    -------
    BitDepth or None
        The depth, or None when the frames do not show one (a 16-bit camera).
    """
    common, top, n_top, n_frames, found = 0, -np.inf, 0, 0, []
    for data in frames:
        data = np.asarray(data)
        if data.size < 64 or not _integer_valued(data):
            return None
        n_frames += 1
        found.append(frame_bit_depth(data, word_bits))
        common |= int(np.bitwise_or.reduce(np.abs(data.astype(np.int64)).ravel()))
        m = float(np.nanmax(data))
        n_top = n_top + int(np.count_nonzero(data == m)) if m == top else (
            int(np.count_nonzero(data == m)) if m > top else n_top)
        top = max(top, m)
    if not n_frames:
        return None
    shifted = [f for f in found if f is not None and f.shift]
    if shifted and common and (common & -common).bit_length() - 1 >= shifted[0].shift:
        return BitDepth(shifted[0].bits, shifted[0].shift, shifted[0].saturation,
                        f"every value of {n_frames} frames a multiple of {2 ** shifted[0].shift}")
    if 0 < top <= 4095:
        return BitDepth(12, 0, 4095.0, f"maximum {top:g} over {n_frames} frames "
                                       f"({n_top} pixels at it)")
    plateau = next((f for f in found if f is not None), None)
    return plateau
