"""Layer 1: the ``UNCERT`` and ``MASK`` planes of a frame file, and their compression.

:func:`plane_hdu` makes the HDU of a plane: Rice tile-compressed (the mask lossless, the
uncertainty quantized with an absolute step) for the files that are kept, or plain for
the intermediate outputs of a step chain, which are written and read again at once and
deleted by ``finalize_stage1`` (a plain plane costs a tenth of the CPU of a compressed
one, on write and on read); ``finalize_stage1`` compresses the plain planes of the
products it keeps.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

__all__ = ["PLANES", "plane_cards", "plane_hdu"]

#: The planes :func:`plane_hdu` writes.
PLANES = ("UNCERT", "MASK")


def _deterministic_tile_gzip() -> None:
    """Make astropy's gzip tile compression write no time stamp (once per process).

    A tile that cannot be quantised is gzip-compressed instead, as in cfitsio, and
    ``gzip.compress`` stamps the time: the same plane written twice gave different bytes
    (re-runs not byte-identical). With ``mtime=0`` the bytes depend only on the pixels.
    """
    try:
        from astropy.io.fits.hdu.compressed import _codecs
    except ImportError:  # another astropy layout: tiles keep their time stamps
        return
    if getattr(_codecs.gzip_compress, "__name__", "") != "_gzip_no_mtime":
        import gzip

        def _gzip_no_mtime(data, compresslevel=9):
            return gzip.compress(data, compresslevel=compresslevel, mtime=0)

        _codecs.gzip_compress = _gzip_no_mtime


def plane_hdu(array: np.ndarray, name: str, header=None, compress: bool = True):
    """The HDU of an ``UNCERT`` or ``MASK`` plane.

    Compressed: Rice tiles of 64 rows, the mask lossless (1k x 1k: 1 MB -> 20 kB), the
    uncertainty quantized with an absolute step of 1/1000 of its smallest positive value
    (cfitsio's negative ``quantize_level``: no per-tile noise estimate, half the CPU of a
    noise-relative step; relative error <= 5e-4; 4.2 MB -> 0.8 MB), dithered from each
    tile's checksum (the same plane gives the same bytes).

    Parameters
    ----------
    array : numpy.ndarray
        ``(ny, nx)`` plane: float (uncertainty) or uint8 (mask).
    name : str
        ``EXTNAME`` (``'UNCERT'`` or ``'MASK'``).
    header : astropy.io.fits.Header, optional
        Cards of the extension (e.g. ``UTYPE``, ``BUNIT``).
    compress : bool
        Tile-compress (files that are kept) or not (intermediate outputs).

    Returns
    -------
    astropy.io.fits.CompImageHDU or astropy.io.fits.ImageHDU
        The extension.

    References
    ----------
    Pence, W. D. et al. 2009, PASP 121, 414 (tiled image compression, quantization of
    floating-point data).
    """
    if not compress:
        return fits.ImageHDU(array, header=header, name=name)
    _deterministic_tile_gzip()
    kw = {"compression_type": "RICE_1",
          "tile_shape": (min(64, array.shape[0]), array.shape[-1])}
    if array.dtype.kind == "f":
        low = float(np.min(array, initial=np.inf, where=array > 0))
        top = float(np.max(np.abs(array), initial=0.0))
        step = max((low if np.isfinite(low) else 1.0) / 1000, top / 2**30, 1e-30)
        kw.update(quantize_level=-step, dither_seed=-1)  # -1: DITHER_SEED_CHECKSUM
    return fits.CompImageHDU(array, header=header, name=name, **kw)


def plane_cards(header: fits.Header) -> fits.Header:
    """The cards of a plane's header that describe its content (not its layout).

    Parameters
    ----------
    header : astropy.io.fits.Header
        The header of an ``UNCERT`` or ``MASK`` extension.

    Returns
    -------
    astropy.io.fits.Header
        ``UTYPE`` and ``BUNIT`` when present, with their comments.
    """
    out = fits.Header()
    for key in ("UTYPE", "BUNIT"):
        if key in header:
            out[key] = (header[key], header.comments[key])
    return out
