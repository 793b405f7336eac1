"""Layer 2: one-shot colour (Bayer) cameras: the CFA pattern of a frame and demosaicing.

A one-shot colour camera puts a 2 x 2 colour filter array (CFA) over its pixels
(Bayer 1976, US patent 3 971 065): one red, two green and one blue pixel per cell. Its
raw frame is a 2-D image whose pixels belong to three colours; it is calibrated as it is
(bias, dark and flat frames of the same camera have the same pattern, so every
subtraction and division is pixel by pixel within one colour) and only then demosaiced
into three colour images, as Siril's one-shot-colour scripts do (``calibrate ... -cfa
-debayer``, then register and stack the colour frames).

The pattern from the header
---------------------------
``BAYERPAT`` (N.I.N.A., SharpCap, ASIAIR, MaxIm DL >= 6.23, ...) or ``COLORTYP`` (MaxIm DL,
SBIG's extension; SharpCap writes it too) name the colours of the top-left 2 x 2 cell of
the sensor as it is read out (``'RGGB'``: red at the first pixel of the first row,
blue at the second pixel of the second row). ``XBAYROFF`` / ``YBAYROFF`` (MaxIm DL's
keywords, also written by N.I.N.A. and SharpCap from the ASCOM ``BayerOffsetX/Y``) shift
where that pattern starts: an odd offset starts the reading at the second column / row.
``ROWORDER`` (proposed by Siril and CCDciel in 2020, written by N.I.N.A. >= 1.10,
SharpCap >= 3.3, MaxIm DL >= 6.23, INDI, ASIAIR's INDI-based firmware, ...) says where
the first read-out row sits in the file: ``'TOP-DOWN'`` -- the first FITS row; ``'BOTTOM-UP'``
-- the last FITS row (the writer flipped the image to the FITS display convention, so an
``RGGB`` sensor becomes ``GBRG`` in a file of an even number of rows). Without
``ROWORDER`` the file is taken as top-down, as nearly all capture programs write it
(Siril's "FITS orientation" page: "most camera drivers are writing data in the top-down
order"). Sources: free-astro.org/index.php/Siril:FITS_orientation; MaxIm DL's "FITS
File Header Definitions"; N.I.N.A. issue #125 (BAYERPAT with the offsets).

:func:`frame_bayer_pattern` turns these into the pattern of the array as astropy reads it
(``data[0, 0]`` is the first pixel of the first FITS row); the functions below take that
array pattern. Arrays are ``(ny, nx)`` numpy order.

Demosaicing
-----------
Through the ``colour-demosaicing`` library (Colour Developers): bilinear interpolation,
Malvar, He & Cutler (2004, ICASSP, "High-quality linear interpolation for demosaicing of
Bayer-patterned color images") and Menon, Andriani & Calvagno (2007, IEEE TIP 16, 132,
directional filtering with a posteriori decision); plus the superpixel mode (as Siril's
and DeepSkyStacker's "super pixel"): each 2 x 2 cell becomes one pixel of half the
resolution (R, mean of the two G, B) -- no interpolation at all.
"""
from __future__ import annotations

import numpy as np
from astropy.nddata import CCDData, StdDevUncertainty

from astrodart.frames.header import FrameHeader

__all__ = [
    "BAYER_PATTERNS",
    "DEMOSAIC_METHODS",
    "CFA_KEYWORDS",
    "check_bayer_pattern",
    "shift_bayer_pattern",
    "frame_bayer_pattern",
    "cfa_masks",
    "mosaic_cfa",
    "demosaic_cfa",
    "split_cfa",
    "demosaic_ccd",
]

#: The four Bayer patterns: colours of the 2 x 2 cell, row by row.
BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
#: Methods of :func:`demosaic_cfa`.
DEMOSAIC_METHODS = ("bilinear", "malvar", "menon", "superpixel")
#: Header keywords that describe a CFA (removed from demosaiced frames).
CFA_KEYWORDS = ("BAYERPAT", "COLORTYP", "XBAYROFF", "YBAYROFF", "BAYOFFX", "BAYOFFY")
_CHANNELS = ("R", "G", "B")


def check_bayer_pattern(pattern, what: str = "bayer_pattern") -> str:
    """A Bayer pattern in canonical form, or a clear error.

    Parameters
    ----------
    pattern : str
        E.g. ``'RGGB'``, ``'rggb'``, ``' GBRG '``.
    what : str
        The argument's name (or the file and keyword), for the error message.

    Returns
    -------
    str
        One of :data:`BAYER_PATTERNS`.

    Raises
    ------
    ValueError
        Not one of the four Bayer patterns (e.g. a CMYG or X-Trans sensor).
    """
    text = str(pattern).strip().upper() if pattern is not None else ""
    if text not in BAYER_PATTERNS:
        raise ValueError(f"{what}={pattern!r} is not a Bayer pattern; use one of "
                         f"{', '.join(BAYER_PATTERNS)} (colours of the top-left 2x2 cell, "
                         "row by row)")
    return text


def shift_bayer_pattern(pattern: str, dx: int = 0, dy: int = 0) -> str:
    """The pattern seen when reading starts ``dx`` columns and ``dy`` rows further on.

    Parameters
    ----------
    pattern : str
        One of :data:`BAYER_PATTERNS`.
    dx, dy : int
        Column and row offsets (only their parity matters).

    Returns
    -------
    str
        The shifted pattern (e.g. ``'RGGB'`` with ``dx=1`` is ``'GRBG'``).

    Raises
    ------
    ValueError
        Unknown pattern.
    """
    p = check_bayer_pattern(pattern)
    cell = [[p[0], p[1]], [p[2], p[3]]]
    return "".join(cell[(r + int(dy)) % 2][(c + int(dx)) % 2] for r in (0, 1) for c in (0, 1))


def frame_bayer_pattern(header=None, *, bayer_pattern: str | None = None,
                        shape: tuple[int, int] | None = None) -> str | None:
    """The CFA pattern of a frame's array (``data[0:2, 0:2]`` as astropy reads it).

    Parameters
    ----------
    header : astropy.io.fits.Header, dict or FrameHeader, optional
        The raw frame's header: ``BAYERPAT``/``COLORTYP``, ``XBAYROFF``/``YBAYROFF``
        and ``ROWORDER`` (see the module notes for the capture programs' conventions).
    bayer_pattern : str, optional
        The pattern given by the user: it overrides the header's pattern (the header's
        offsets and row order still apply, as in Siril's "force Bayer pattern").
    shape : (int, int), optional
        ``(ny, nx)``; needed for ``ROWORDER='BOTTOM-UP'`` (default: ``NAXIS2``/``NAXIS1``).

    Returns
    -------
    str or None
        One of :data:`BAYER_PATTERNS`, or None for a monochrome frame (no pattern in the
        header and none given).

    Raises
    ------
    ValueError
        An unknown pattern (argument or header), or a bottom-up frame of unknown height.
    """
    fh = header if isinstance(header, FrameHeader) else FrameHeader(header or {})
    if bayer_pattern is not None:
        pattern = check_bayer_pattern(bayer_pattern)
    else:
        written = fh.bayer_pattern
        if written is None:
            return None
        pattern = check_bayer_pattern(written, f"{fh.path}: BAYERPAT/COLORTYP")
    dx, dy = fh.bayer_offsets
    if fh.row_order == "BOTTOM-UP":
        ny = shape[0] if shape is not None else fh.header.get("NAXIS2")
        if ny is None:
            raise ValueError(f"{fh.path}: ROWORDER='BOTTOM-UP' needs the image height "
                             "(NAXIS2, or give shape=)")
        # array row r is read-out row ny-1-r, whose parity is that of r + ny - 1
        dy += int(ny) - 1
    return shift_bayer_pattern(pattern, dx, dy)


def _library():
    """colour-demosaicing, imported on first use (it imports the deprecated
    ``scipy.ndimage.filters`` namespace: that warning is the library's, not the user's)."""
    from astrodart.exceptions import quiet

    with quiet(DeprecationWarning):
        import colour_demosaicing
    return colour_demosaicing


def _check_cfa(cfa, what: str = "cfa") -> np.ndarray:
    arr = np.asarray(cfa, dtype=np.float64)
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ValueError(f"{what} must be a 2-D CFA image of at least 2 x 2 pixels; got "
                         f"shape {arr.shape}")
    return arr


def cfa_masks(shape: tuple[int, int], pattern: str) -> dict[str, np.ndarray]:
    """Which pixels of a CFA image carry each colour.

    Parameters
    ----------
    shape : (int, int)
        ``(ny, nx)``.
    pattern : str
        Array pattern (:func:`frame_bayer_pattern`).

    Returns
    -------
    dict
        ``{'R': mask, 'G': mask, 'B': mask}``, boolean ``(ny, nx)`` arrays
        (``colour_demosaicing.masks_CFA_Bayer``).

    Raises
    ------
    ValueError
        Unknown pattern.
    """
    masks = _library().masks_CFA_Bayer(tuple(int(n) for n in shape), check_bayer_pattern(pattern))
    return dict(zip(_CHANNELS, (np.asarray(m, bool) for m in masks)))


def mosaic_cfa(red, green, blue, pattern: str = "RGGB") -> np.ndarray:
    """A CFA image from three colour images: each pixel keeps its filter's colour.

    Parameters
    ----------
    red, green, blue : (ny, nx) array_like
        Registered colour images.
    pattern : str
        Array pattern of the CFA.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float64 CFA image (``colour_demosaicing.mosaicing_CFA_Bayer``).

    Raises
    ------
    ValueError
        Unknown pattern, or images of different shapes.
    """
    chans = [np.asarray(c, dtype=np.float64) for c in (red, green, blue)]
    if len({c.shape for c in chans}) != 1 or chans[0].ndim != 2:
        raise ValueError(f"mosaic_cfa: red, green, blue must be 2-D images of one shape; "
                         f"got {[c.shape for c in chans]}")
    return np.asarray(_library().mosaicing_CFA_Bayer(np.dstack(chans), check_bayer_pattern(pattern)),
                      dtype=np.float64)


def _superpixel(cfa: np.ndarray, pattern: str) -> np.ndarray:
    ny, nx = (cfa.shape[0] // 2) * 2, (cfa.shape[1] // 2) * 2
    cells = {(r, c): cfa[r:ny:2, c:nx:2] for r in (0, 1) for c in (0, 1)}
    where = {k: [(i // 2, i % 2) for i, ch in enumerate(pattern) if ch == k] for k in _CHANNELS}
    return np.stack([np.mean([cells[rc] for rc in where[k]], axis=0) for k in _CHANNELS])


def demosaic_cfa(cfa, pattern: str, method: str = "bilinear") -> np.ndarray:
    """Demosaic a CFA image into red, green and blue images.

    Parameters
    ----------
    cfa : (ny, nx) array_like
        Calibrated CFA image (linear; any unit).
    pattern : str
        Array pattern (:func:`frame_bayer_pattern`).
    method : {'bilinear', 'malvar', 'menon', 'superpixel'}
        ``colour-demosaicing``'s bilinear, Malvar et al. (2004) or Menon et al. (2007)
        interpolation, or the 2 x 2 superpixel (half resolution, no interpolation; an odd
        last row or column is dropped).

    Returns
    -------
    numpy.ndarray
        ``(3, ny, nx)`` (``(3, ny // 2, nx // 2)`` for 'superpixel'), float64, in the order
        R, G, B.

    Raises
    ------
    ValueError
        Unknown pattern or method, or not a 2-D image.
    """
    pattern = check_bayer_pattern(pattern)
    if method not in DEMOSAIC_METHODS:
        raise ValueError(f"demosaic method={method!r}; use one of {', '.join(DEMOSAIC_METHODS)}")
    arr = _check_cfa(cfa)
    if method == "superpixel":
        return _superpixel(arr, pattern)
    cd = _library()
    fn = {"bilinear": cd.demosaicing_CFA_Bayer_bilinear,
          "malvar": cd.demosaicing_CFA_Bayer_Malvar2004,
          "menon": cd.demosaicing_CFA_Bayer_Menon2007}[method]
    return np.moveaxis(np.asarray(fn(arr, pattern), dtype=np.float64), -1, 0)


def split_cfa(cfa, pattern: str, method: str = "bilinear") -> dict[str, np.ndarray]:
    """The demosaiced colour images by name.

    Parameters
    ----------
    cfa : (ny, nx) array_like
        Calibrated CFA image.
    pattern : str
        Array pattern.
    method : str
        One of :data:`DEMOSAIC_METHODS`.

    Returns
    -------
    dict
        ``{'R': image, 'G': image, 'B': image}`` (see :func:`demosaic_cfa`).

    Raises
    ------
    ValueError
        Unknown pattern or method.
    """
    return dict(zip(_CHANNELS, demosaic_cfa(cfa, pattern, method)))


def _channel_header(meta, channel: str, method: str, pattern: str):
    from astropy.io import fits

    head = fits.Header(meta) if not isinstance(meta, fits.Header) else meta.copy()
    for key in CFA_KEYWORDS:
        head.remove(key, ignore_missing=True, remove_all=True)
    head["ADBAYER"] = (pattern, "CFA pattern of the array before demosaicing")
    head["ADDEMOS"] = (method, "demosaicing method (astrodart.color.bayer)")
    head["ADCHAN"] = (channel, "colour channel of this image")
    if method == "superpixel":
        for key in ("XBINNING", "YBINNING"):
            head[key] = int(head.get(key, 1)) * 2
    return head


def demosaic_ccd(ccd: CCDData, pattern: str | None = None, method: str = "bilinear"
                 ) -> dict[str, CCDData]:
    """Demosaic a calibrated CFA frame into three ``CCDData`` colour frames.

    Parameters
    ----------
    ccd : astropy.nddata.CCDData
        Calibrated CFA frame (bias, dark and flat applied on the CFA).
    pattern : str, optional
        Array pattern (default: from the frame's header, :func:`frame_bayer_pattern`).
    method : str
        One of :data:`DEMOSAIC_METHODS`.

    Returns
    -------
    dict
        ``{'R': CCDData, 'G': CCDData, 'B': CCDData}``, in the frame's unit. The
        uncertainty is the standard deviation demosaiced like the data (for an
        interpolated pixel, a weighted mean of its neighbours' errors: an upper bound
        of the error of the weighted mean); a pixel is masked when a masked or
        non-finite CFA pixel within the method's kernel (3 x 3, 5 x 5 for Malvar and
        Menon, the cell for superpixel) feeds it, and the outer 1 (2 for Malvar and
        Menon) rows and columns are masked (interpolated across the edge). The header loses its CFA keywords and
        records the pattern, method and channel (``ADBAYER``, ``ADDEMOS``, ``ADCHAN``).

    Raises
    ------
    ValueError
        No pattern given and none in the header, or unknown pattern or method.
    """
    if pattern is None:
        pattern = frame_bayer_pattern(ccd.meta, shape=ccd.shape)
        if pattern is None:
            raise ValueError("demosaic_ccd: the frame's header has no BAYERPAT/COLORTYP; "
                             "give pattern= (one of " + ", ".join(BAYER_PATTERNS) + ")")
    pattern = check_bayer_pattern(pattern)
    data = _check_cfa(ccd.data, "ccd.data")
    bad = ~np.isfinite(data) | (np.zeros(data.shape, bool) if ccd.mask is None
                                else np.asarray(ccd.mask, bool))
    planes = demosaic_cfa(np.where(bad, 0.0, data), pattern, method)
    sigma = None
    if ccd.uncertainty is not None:
        err = np.where(bad, 0.0, np.asarray(ccd.uncertainty.represent_as(StdDevUncertainty).array))
        sigma = demosaic_cfa(err, pattern, method)
    masks = _demosaiced_mask(bad, method)
    out = {}
    for k, ch in enumerate(_CHANNELS):
        out[ch] = CCDData(planes[k].astype(np.float32), unit=ccd.unit, mask=masks,
                          uncertainty=None if sigma is None
                          else StdDevUncertainty(sigma[k].astype(np.float32)),
                          meta=_channel_header(ccd.meta, ch, method, pattern))
    return out


def _demosaiced_mask(bad: np.ndarray, method: str) -> np.ndarray:
    if method == "superpixel":
        ny, nx = (bad.shape[0] // 2) * 2, (bad.shape[1] // 2) * 2
        return bad[:ny, :nx].reshape(ny // 2, 2, nx // 2, 2).any(axis=(1, 3))
    from scipy.ndimage import binary_dilation

    size = 3 if method == "bilinear" else 5
    out = binary_dilation(bad, structure=np.ones((size, size), bool)) if bad.any() else bad.copy()
    # the library's convolutions reflect at the edges, which mixes the colours' sites there
    edge = size // 2
    out[:edge], out[-edge:], out[:, :edge], out[:, -edge:] = True, True, True, True
    return out
