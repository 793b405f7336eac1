"""Layer 1: a camera's raw saturation level from its frames (header, else data).

The night runner's default saturation (:func:`astrodart.pipeline.night.reduce_night`):
a camera that writes no ``SATURATE`` and stores a 12- or 14-bit ADC in 16-bit words
saturates below the data type's limit (:mod:`astrodart.frames.cmos`).
"""
from __future__ import annotations

from astrodart.frames.checks import SATURATION_KEYS, raw_saturation
from astrodart.frames.cmos import camera_bit_depth
from astrodart.frames.io import read_frame, read_header

__all__ = ["camera_saturation"]


def camera_saturation(files, max_frames: int = 5) -> float:
    """The raw saturation level (ADU) of a camera, from its frames' header or data.

    The first frame's ``SATURATE``/``DATAMAX``/... when written; else the depth the
    data show (:func:`camera_bit_depth` over up to ``max_frames`` frames spread over
    ``files``); else the data type's limit (65535 for unsigned 16-bit).

    Parameters
    ----------
    files : sequence of str or pathlib.Path
        Raw frames of one camera (a night's light frames).
    max_frames : int
        At most this many frames are read.

    Returns
    -------
    float
        The level in stored ADU.

    Raises
    ------
    ValueError
        ``files`` is empty.
    """
    files = list(files)
    if not files:
        raise ValueError("camera_saturation: files is empty; give at least one raw frame")
    header = read_header(files[0])
    written = next((float(header[k]) for k in SATURATION_KEYS
                    if isinstance(header.get(k), (int, float)) and header[k] > 0), None)
    level = raw_saturation(header)
    if written is not None or level is None:
        return written or 65535.0
    step = max(1, len(files) // max(1, max_frames))
    depth = camera_bit_depth(read_frame(f).data for f in files[::step][:max_frames])
    return min(level, depth.saturation) if depth is not None else float(level)

