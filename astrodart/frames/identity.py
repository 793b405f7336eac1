"""Layer 1: the content identity of a frame on disk, for deciding whether an output can be reused.

A file's name, size or modification time say little about what it holds: a frame
replaced in place by another of the same size, or touched by a copy, must not fool a
re-run. :func:`content_id` hashes what makes a frame that frame -- the header cards
that describe the pixels and a sample of the pixel data itself -- while staying cheap
enough to run on every frame of a night at every re-run (it reads at most 192 kilobytes of pixels of an uncompressed file). Compressed files are hashed whole: they are small,
and their pixel bytes cannot be reached without decompressing.

Headers written later by in-place steps (the plate solution, quality keywords) do not
change the identity, so plate solving a calibrated frame does not make the quality
table of that frame stale; a frame recalibrated with other masters does.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from astropy.io import fits

__all__ = ["content_id", "PIXEL_CARDS"]

#: Header cards that describe the pixel values (the identity includes them).
PIXEL_CARDS = ("BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "BZERO", "BSCALE", "BUNIT")

_SAMPLE = 1 << 16  # bytes read at each end of the data unit


def content_id(path) -> str:
    """A short hash of what a FITS frame holds: pixel-describing cards and a data sample.

    Parameters
    ----------
    path : str or pathlib.Path
        A FITS file (compressed files are hashed in full).

    Returns
    -------
    str
        16 hex digits. Equal for the same pixels under another name or time stamp;
        different when the pixel data (in the sampled bytes), their size, type or
        scaling change.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    OSError
        ``path`` cannot be read.
    """
    path = Path(path)
    h = hashlib.sha1()
    if path.suffix.lower() in (".gz", ".bz2", ".fz", ".xz", ".zip"):
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()[:16]
    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        for i, hdu in enumerate(hdul):
            info = hdul.fileinfo(i)
            cards = [(k, hdu.header.get(k)) for k in PIXEL_CARDS if k in hdu.header]
            h.update(repr((i, cards, info["datSpan"])).encode())
            if not info["datSpan"]:
                continue
            with open(path, "rb") as fh:
                start, span = info["datLoc"], info["datSpan"]
                # the start, the middle and the end of the data unit
                for offset in sorted({0, max(0, span // 2 - _SAMPLE // 2), max(0, span - _SAMPLE)}):
                    fh.seek(start + offset)
                    h.update(fh.read(min(span, _SAMPLE)))
    return h.hexdigest()[:16]
