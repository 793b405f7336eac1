"""Layer 3: combine FITS files into a master frame, band by band, within a memory limit.

:func:`combine_files` reads every input once, in bands of rows whose size follows from
``memory_limit``, combines each band with :func:`astrodart.combine.engine.combine_band`
and writes the result atomically. :class:`image_combination` is the AstroDART-compatible
stage built on it (``from astrodart.utils import image_combination``).

How the inputs are read
-----------------------
* Uncompressed files and gzip-compressed files (``.gz``) whose image is a plain image HDU
  are *streamed*: each file stays open and the next rows are read from it with
  ``readinto`` into one small reusable buffer per reading thread (a gzip stream is
  decompressed once, front to back, never seeked backwards). Nothing is memory-mapped,
  so the page cache never counts against the process's resident memory.
* Tile-compressed images (``CompImageHDU``) are read through astropy's ``section``.
* A ``MASK`` extension (as written by :func:`astrodart.frames.io.write_frame`) is streamed
  the same way from a second handle; masked values, NaN, +/-inf and integer ``BLANK``
  values are missing values: excluded, and not counted as rejected.
* Before any pixel is read, every file's headers are checked (shape, unit, image HDU):
  a bad file is an error naming it. For a gzip file this header scan inflates the
  stream once more (10-20 ms per 1024x1024 frame here); pixels are read once.

Memory
------
The working band holds ``nframes x rows x nx`` values in ``dtype`` (float32 by default);
``rows`` is chosen so that the band, the reading buffers and the engine's bounded
scratch space fit in ``memory_limit`` bytes. On top of that come the outputs (combined
image, uncertainty, two int16 count planes: 12 bytes per pixel) and the interpreter.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import gzip
import logging
import os
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import bottleneck as bn
import numpy as np
from astropy import units as u
from astropy.io import fits

from astrodart import __version__
from astrodart.combine.engine import METHODS, CombineResult, Rejection, combine_band
from astrodart.frames.io import (
    FrameError,
    _unit_from_header,
    image_hdu_index,
    read_frame,
    read_header,
    write_hdulist,
)
from astrodart.pipeline.step import find_log_path, log_event, parse_overwrite

__all__ = [
    "CLIPPING_NAMES",
    "COMBINING_METHODS",
    "combine_files",
    "image_combination",
    "plan_band_rows",
]

log = logging.getLogger("astrodart")

#: Methods accepted by :func:`combine_files` and :class:`image_combination`.
#: 'weighted' = weighted average (``weights`` required); 'scaled' = average of the frames
#: multiplied by ``scale`` (default: each frame's inverse median).
COMBINING_METHODS = ("median", "average", "sum", "weighted", "scaled")
_METHOD_ALIASES = {"mean": "average", "avg": "average"}
#: Clipping names accepted (several may be combined in a list; applied in the order
#: minmax, extrema_clipping, sigclip). Aliases map to these names.
CLIPPING_NAMES = ("sigclip", "extrema_clipping", "minmax")
_CLIP_ALIASES = {
    "sigclip": "sigclip",
    "sigma_clip": "sigclip",
    "sigma_clipping": "sigclip",
    "sigma": "sigclip",
    "extrema_clipping": "extrema_clipping",
    "extrema": "extrema_clipping",
    "clip_extrema": "extrema_clipping",
    "minmax": "minmax",
    "minmax_clipping": "minmax",
    "minmax_clip": "minmax",
}
_NO_CLIP = (None, "", "none", "no")

_BITPIX_DTYPES = {
    8: np.dtype("u1"),
    16: np.dtype(">i2"),
    32: np.dtype(">i4"),
    64: np.dtype(">i8"),
    -32: np.dtype(">f4"),
    -64: np.dtype(">f8"),
}
#: Bytes reserved per reading/combining thread besides the band (engine scratch space).
_FIXED_PER_THREAD = 24e6
_DROP_KEYS = (
    "SIMPLE",
    "BITPIX",
    "NAXIS",
    "NAXIS1",
    "NAXIS2",
    "NAXIS3",
    "EXTEND",
    "BZERO",
    "BSCALE",
    "BLANK",
    "PCOUNT",
    "GCOUNT",
    "CHECKSUM",
    "DATASUM",
    "XTENSION",
    "EXTNAME",
    "NCOMBINE",
)


def _unknown_kwargs(func_name: str, unknown: dict, allowed: Sequence[str]) -> None:
    if not unknown:
        return
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, allowed, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(
        f"{func_name}() got unknown keyword argument(s) {', '.join(parts)}; "
        f"allowed: {', '.join(allowed)}"
    )


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


@dataclass
class _Input:
    """What is needed to stream one input file (found by :func:`_inspect`)."""

    path: Path
    header: fits.Header
    shape: tuple[int, int]
    unit: u.UnitBase
    gzip: bool
    hdu_index: int
    streamable: bool
    data_offset: int
    dtype: np.dtype
    bscale: float
    bzero: float
    blank: int | None
    mask_index: int | None
    mask_offset: int | None
    mask_dtype: np.dtype | None


def _inspect(path) -> _Input:
    """Check one input and find where its pixels (and mask) are; raises FrameError."""
    path = Path(path)
    header = read_header(path)  # FrameError for missing, empty, truncated, image-less files
    try:
        with fits.open(path, memmap=False) as hdul:
            idx = image_hdu_index(hdul, path)
            hdus = list(hdul)  # reads every header (MASK may follow the data)
            hdu = hdus[idx]
            naxis = hdu.header["NAXIS"]
            dims = [hdu.header[f"NAXIS{k}"] for k in range(1, naxis + 1)]
            if naxis != 2 and not (naxis == 3 and dims[2] == 1):
                raise FrameError(
                    path, f"image has {naxis} axes {dims}; only 2-D frames can be combined"
                )
            shape = (dims[1], dims[0])
            compressed = isinstance(hdu, fits.CompImageHDU)
            bitpix = hdu.header["BITPIX"] if not compressed else hdu.header.get("ZBITPIX")
            info = hdul.fileinfo(idx)
            mask_index = mask_offset = mask_dtype = None
            names = [h.name for h in hdus]
            if "MASK" in names:
                mask_index = names.index("MASK")
                mh = hdus[mask_index]
                mshape = tuple(mh.header.get(f"NAXIS{k}", 0) for k in (2, 1))
                if mshape != shape:
                    raise FrameError(
                        path, f"MASK extension shape {mshape} differs from the image {shape}"
                    )
                if not isinstance(mh, fits.CompImageHDU) and mh.header["BITPIX"] in _BITPIX_DTYPES:
                    mask_offset = hdul.fileinfo(mask_index)["datLoc"]
                    mask_dtype = _BITPIX_DTYPES[mh.header["BITPIX"]]
    except FrameError:
        raise
    except Exception as exc:
        raise FrameError(path, f"not a readable FITS file ({type(exc).__name__}: {exc})") from exc
    blank = hdu.header.get("BLANK") if bitpix is not None and bitpix > 0 else None
    streamable = not compressed and bitpix in _BITPIX_DTYPES and info.get("datLoc") is not None
    return _Input(
        path=path,
        header=header,
        shape=shape,
        unit=_unit_from_header(header, "adu"),
        gzip=_is_gzip(path),
        hdu_index=idx,
        streamable=streamable,
        data_offset=info.get("datLoc") or 0,
        dtype=_BITPIX_DTYPES.get(bitpix, np.dtype(">f4")),
        bscale=float(hdu.header.get("BSCALE", 1.0)),
        bzero=float(hdu.header.get("BZERO", 0.0)),
        blank=None if blank is None else int(blank),
        mask_index=mask_index,
        mask_offset=mask_offset,
        mask_dtype=mask_dtype,
    )


class _Stream:
    """Sequential row reader over the raw bytes of one HDU (plain or gzip file)."""

    def __init__(self, inp: _Input, offset: int, dtype: np.dtype):
        self.inp, self.offset, self.dtype = inp, offset, dtype
        self.row_bytes = inp.shape[1] * dtype.itemsize
        self.fh = None
        self.next_row = 0

    def _open(self, row: int):
        if self.fh is None or row < self.next_row:
            if self.fh is not None:
                self.fh.close()
            # kept open across bands on purpose (closed by close()): one pass per file
            opener = gzip.open if self.inp.gzip else open
            self.fh = opener(self.inp.path, "rb")
            self.next_row = 0
            self.fh.seek(self.offset)
        if row > self.next_row:
            self.fh.seek(self.offset + row * self.row_bytes)
            self.next_row = row

    def read(self, r0: int, r1: int, buf: np.ndarray) -> np.ndarray:
        """Rows r0..r1-1 as a (r1-r0, nx) array of the file's dtype, read into ``buf``."""
        self._open(r0)
        n = (r1 - r0) * self.row_bytes
        view = memoryview(buf).cast("B")[:n]
        got = 0
        while got < n:
            k = self.fh.readinto(view[got:])
            if not k:
                raise FrameError(self.inp.path, f"pixel data truncated (expected rows up to {r1})")
            got += k
        self.next_row = r1
        return np.frombuffer(buf, dtype=self.dtype, count=n // self.dtype.itemsize).reshape(
            r1 - r0, -1
        )

    def close(self):
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class _Reader:
    """Reads bands of one input into float rows (NaN for missing values)."""

    def __init__(self, inp: _Input):
        self.inp = inp
        self.hdul = None
        self.data = _Stream(inp, inp.data_offset, inp.dtype) if inp.streamable else None
        self.mask = (
            _Stream(inp, inp.mask_offset, inp.mask_dtype) if inp.mask_offset is not None else None
        )

    def _astropy(self):
        if self.hdul is None:
            self.hdul = fits.open(self.inp.path, memmap=False)
        return self.hdul

    def read(self, r0: int, r1: int, out: np.ndarray, buf: np.ndarray) -> None:
        inp = self.inp
        try:
            if self.data is not None:
                raw = self.data.read(r0, r1, buf)
                if inp.bscale != 1.0:
                    np.multiply(raw, out.dtype.type(inp.bscale), out=out, casting="unsafe")
                    if inp.bzero != 0.0:
                        out += out.dtype.type(inp.bzero)
                elif inp.bzero != 0.0:
                    np.add(raw, out.dtype.type(inp.bzero), out=out, casting="unsafe")
                else:
                    np.copyto(out, raw, casting="unsafe")
                if inp.blank is not None:
                    out[raw == inp.blank] = np.nan
            else:
                sec = self._astropy()[inp.hdu_index].section
                out[...] = sec[r0:r1] if len(sec.shape) == 2 else sec[0, r0:r1]
            if self.mask is not None:
                out[self.mask.read(r0, r1, buf) != 0] = np.nan
            elif inp.mask_index is not None:
                out[np.asarray(self._astropy()[inp.mask_index].section[r0:r1]) != 0] = np.nan
        except FrameError:
            raise
        except Exception as exc:  # zlib/EOF errors on damaged files
            raise FrameError(
                inp.path, f"pixel data unreadable ({type(exc).__name__}: {exc})"
            ) from exc

    def close(self):
        for s in (self.data, self.mask):
            if s is not None:
                s.close()
        if self.hdul is not None:
            self.hdul.close()


def plan_band_rows(
    nframes: int, shape: tuple[int, int], memory_limit: float, itemsize: int = 4, threads: int = 1
) -> int:
    """Number of image rows per band so that one band fits in ``memory_limit``.

    Parameters
    ----------
    nframes : int
        Frames combined.
    shape : tuple of int
        ``(ny, nx)`` of each frame.
    memory_limit : float
        Bytes for the band, the reading buffers and the engine's scratch space.
    itemsize : int
        Bytes per working value (4 for float32).
    threads : int
        Reading/combining threads (each has a reading buffer and scratch space).

    Returns
    -------
    int
        Rows per band, between 1 and ``ny``.

    Raises
    ------
    ValueError
        ``memory_limit`` cannot hold even one row of every frame plus the fixed scratch space.
    """
    ny, nx = shape
    # Per row: the band, a raw-read buffer of <= 8 bytes per pixel and a boolean
    # temporary per thread.
    per_row = nx * (nframes * itemsize + threads * 9)
    fixed = threads * min(_FIXED_PER_THREAD, memory_limit / 8)
    rows = int((memory_limit - fixed) // per_row)
    if rows < 1:
        need = fixed + per_row
        raise ValueError(
            f"memory_limit={memory_limit:.3g} bytes is too small for {nframes} frames "
            f"of {nx} columns; at least {need:.3g} bytes are needed"
        )
    return min(ny, rows)


def _scale_factors(scale, method: str, inputs: list[_Input], dtype) -> np.ndarray | None:
    """Per-frame scale factors from an array, a callable or the inverse-median default."""
    if scale is None and method != "scaled":
        return None
    n = len(inputs)
    if scale is None or (isinstance(scale, str) and scale == "inverse_median"):

        def scale(data):  # ccdproc's documented flat scaling
            return 1.0 / bn.nanmedian(data)
    elif isinstance(scale, str):
        raise ValueError(
            f"scale={scale!r} unknown; give an array of {n} factors, a callable or 'inverse_median'"
        )
    if callable(scale):
        # A callable needs whole frames: each is read once more, one at a time.
        factors = []
        for inp in inputs:
            frame = read_frame(inp.path, dtype=dtype)
            data = (
                np.where(frame.mask, np.nan, frame.data) if frame.mask is not None else frame.data
            )
            factors.append(float(scale(data)))
            del frame, data
        factors = np.array(factors)
    else:
        factors = np.asarray(scale, dtype=np.float64).ravel()
        if factors.size != n:
            raise ValueError(f"scale has {factors.size} factors for {n} files")
    if not np.all(np.isfinite(factors)) or np.any(factors == 0):
        bad = [str(inputs[i].path) for i in np.flatnonzero(~np.isfinite(factors) | (factors == 0))]
        raise ValueError(f"scale factor is zero or not finite for {', '.join(bad)}")
    return factors


def _output_header(
    inputs: list[_Input],
    method: str,
    rejection: Rejection,
    scale,
    weights,
    dtype,
    unit,
    nrej_total: int,
) -> fits.Header:
    header = inputs[0].header.copy()
    for key in _DROP_KEYS:
        header.remove(key, ignore_missing=True, remove_all=True)
    for key in [k for k in header if k[:5] in ("IMCMB", "IMSCL", "IMWGT")]:
        header.remove(key, ignore_missing=True, remove_all=True)
    header["BUNIT"] = unit.to_string()
    header["NCOMBINE"] = (len(inputs), "number of frames combined")
    header["COMBMETH"] = (method, "astrodart combination method")
    header["COMBTYPE"] = (np.dtype(dtype).name, "working precision")
    header["CLIPMETH"] = ("+".join(rejection.names) or "none", "rejection algorithms, in order")
    if rejection.sigclip:
        header["CLIPSLO"] = (rejection.sigma_low, "sigclip low threshold (sigma)")
        header["CLIPSHI"] = (rejection.sigma_high, "sigclip high threshold (sigma)")
        header["CLIPCEN"] = (rejection.center, "sigclip centre")
        header["CLIPSPRD"] = (rejection.spread, "sigclip spread (mad_std = 1.4826 MAD)")
        header["CLIPITER"] = (rejection.maxiters, "sigclip maximum passes")
    if rejection.extrema:
        header["CLIPNLO"] = (rejection.nlow, "extrema: lowest values dropped")
        header["CLIPNHI"] = (rejection.nhigh, "extrema: highest values dropped")
    if rejection.minmax:
        if rejection.min_value is not None:
            header["CLIPMIN"] = (rejection.min_value, "minmax: lowest value kept (unscaled)")
        if rejection.max_value is not None:
            header["CLIPMAX"] = (rejection.max_value, "minmax: highest value kept (unscaled)")
    header["NREJECT"] = (int(nrej_total), "values rejected in total (see NREJECT HDU)")
    for i, inp in enumerate(inputs[:999], start=1):
        header[f"IMCMB{i:03d}"] = inp.path.name[-68:]
        if scale is not None:
            header[f"IMSCL{i:03d}"] = (float(scale[i - 1]), "scale factor applied")
        if weights is not None:
            header[f"IMWGT{i:03d}"] = (float(weights[i - 1]), "weight")
    if len(inputs) > 999:
        header["HISTORY"] = f"only the first 999 of {len(inputs)} inputs are listed in IMCMBnnn"
    header["HISTORY"] = (
        f"astrodart {__version__} combine_files "
        f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}"
    )
    return header


def _rejection_from(
    clipping,
    sigma_low,
    sigma_high,
    sigma_center,
    sigma_spread,
    maxiters,
    nlow,
    nhigh,
    min_value,
    max_value,
) -> Rejection:
    if clipping is None or isinstance(clipping, str):
        names = [] if clipping is None or clipping.strip().lower() in _NO_CLIP else [clipping]
    else:
        names = [c for c in clipping if c is not None]
    chosen = set()
    for name in names:
        key = _CLIP_ALIASES.get(str(name).strip().lower())
        if key is None:
            raise ValueError(
                f"clipping method {name!r} unknown; use one of {CLIPPING_NAMES} or None"
            )
        chosen.add(key)
    return Rejection(
        minmax="minmax" in chosen,
        min_value=min_value,
        max_value=max_value,
        extrema="extrema_clipping" in chosen,
        nlow=int(nlow),
        nhigh=int(nhigh),
        sigclip="sigclip" in chosen,
        sigma_low=float(sigma_low),
        sigma_high=float(sigma_high),
        center=sigma_center,
        spread=sigma_spread,
        maxiters=int(maxiters),
    )


def _method_key(method) -> str:
    key = _METHOD_ALIASES.get(str(method).strip().lower(), str(method).strip().lower())
    if key not in COMBINING_METHODS:
        raise ValueError(f"combining method {method!r} unknown; use one of {COMBINING_METHODS}")
    return key


def _check_inputs(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError(
            f"paths must be a list of FITS files, not a single path ({paths!s}); wrap it in a list"
        )
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no files to combine")
    return paths


_COMBINE_FILES_ARGS = (
    "clipping",
    "sigma_low",
    "sigma_high",
    "sigma_center",
    "sigma_spread",
    "maxiters",
    "nlow",
    "nhigh",
    "min_value",
    "max_value",
    "weights",
    "scale",
    "memory_limit",
    "dtype",
    "threads",
    "overwrite",
)


def combine_files(
    paths: Sequence[str | os.PathLike],
    output_path: str | os.PathLike,
    method: str = "median",
    *,
    clipping: str | Sequence[str] | None = None,
    sigma_low: float = 3.0,
    sigma_high: float = 3.0,
    sigma_center: str = "median",
    sigma_spread: str = "mad_std",
    maxiters: int = 10,
    nlow: int = 1,
    nhigh: int = 1,
    min_value: float | None = None,
    max_value: float | None = None,
    weights: Sequence[float] | None = None,
    scale: Sequence[float] | Callable | str | None = None,
    memory_limit: float = 1e9,
    dtype=np.float32,
    threads: int | None = None,
    overwrite: bool | str = False,
    **unknown,
) -> Path:
    """Combine FITS frames pixel by pixel into one frame, reading them band by band.

    Parameters
    ----------
    paths : sequence of str or pathlib.Path
        Input frames, all of the same shape ``(ny, nx)`` and unit (``BUNIT``; 'adu' when
        absent). Uncompressed, gzip (``.gz``) or tile-compressed FITS; a ``MASK``
        extension marks bad pixels. Inputs are only read, never modified or deleted.
    output_path : str or pathlib.Path
        FITS file written atomically: primary HDU = combined image (``dtype``), ``UNCERT``
        = standard error of each combined value, ``MASK`` (uint8, 1 where no value was
        left), ``NREJECT`` (int16, values rejected per pixel). Readable with
        :func:`astrodart.frames.io.read_frame` and ``CCDData.read``.
    method : {'median', 'average', 'sum', 'weighted', 'scaled'}
        'weighted' is the average weighted by ``weights``; 'scaled' is the average of the
        frames multiplied by ``scale`` (default: each frame's inverse median, which
        normalises flats to 1). ``scale`` may also be used with the other methods.
        Uncertainties: see :mod:`astrodart.combine.engine`.
    clipping : str, sequence of str or None
        'sigclip', 'extrema_clipping', 'minmax' (several may be listed; applied in the
        order minmax, extrema_clipping, sigclip), or None for no rejection.
    sigma_low, sigma_high : float
        'sigclip' thresholds in units of the spread.
    sigma_center : {'median', 'mean'}
        'sigclip' centre (median by default; 'mean' with 'std' reproduces ccdproc).
    sigma_spread : {'mad_std', 'std'}
        'sigclip' spread: 1.4826 x median absolute deviation (robust, default) or the
        standard deviation.
    maxiters : int
        'sigclip' passes at most (it stops earlier when nothing changes).
    nlow, nhigh : int
        'extrema_clipping': lowest/highest values dropped per pixel.
    min_value, max_value : float, optional
        'minmax' limits, in the unit of the (unscaled) input values.
    weights : sequence of float, optional
        One non-negative weight per file ('weighted', 'average', 'sum').
    scale : sequence of float, callable or 'inverse_median', optional
        Per-file factors the frames are multiplied by before rejection (IRAF order), or a
        function of a whole frame's data array returning its factor (as in ccdproc; each
        frame is then read once more, one at a time).
    memory_limit : float
        Bytes for the working band and scratch space (see module notes); the outputs
        (12 bytes per pixel) and the interpreter come on top.
    dtype : numpy dtype
        Working and output precision (float32 by default, or float64).
    threads : int, optional
        Threads for reading and combining (default: up to 2, the cores available).
    overwrite : bool or {'yes', 'no'}
        Replace an existing ``output_path``.

    Returns
    -------
    pathlib.Path
        ``output_path``.

    Raises
    ------
    TypeError
        Unknown keyword arguments (the message lists the allowed ones).
    ValueError
        Unknown method or clipping name, inconsistent settings, ``output_path`` equal to
        an input, ``memory_limit`` too small.
    FrameError
        An input is missing, unreadable, not 2-D, or differs in shape or unit from the
        first (the message names the file).
    FileExistsError
        ``output_path`` exists and ``overwrite`` is false.
    """
    _unknown_kwargs("combine_files", unknown, _COMBINE_FILES_ARGS)
    paths = _check_inputs(paths)
    output_path = Path(output_path)
    method_key = _method_key(method)
    if method_key == "weighted" and weights is None:
        raise ValueError("method 'weighted' needs weights (one per file)")
    if weights is not None and method_key not in ("weighted", "average", "sum"):
        raise ValueError(f"weights apply to 'weighted', 'average' and 'sum', not to {method_key!r}")
    core_method = {"weighted": "average", "scaled": "average"}.get(method_key, method_key)
    assert core_method in METHODS
    rejection = _rejection_from(
        clipping,
        sigma_low,
        sigma_high,
        sigma_center,
        sigma_spread,
        maxiters,
        nlow,
        nhigh,
        min_value,
        max_value,
    )
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    overwrite = parse_overwrite(overwrite)
    resolved = {p.resolve() for p in paths}
    if output_path.resolve() in resolved:
        raise ValueError(f"{output_path}: output would replace one of the inputs")
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path}: exists; pass overwrite=True to replace it")
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if weights.size != len(paths):
            raise ValueError(f"{weights.size} weights for {len(paths)} files")

    t0 = time.perf_counter()
    inputs = [_inspect(p) for p in paths]
    first = inputs[0]
    for inp in inputs[1:]:
        if inp.shape != first.shape:
            raise FrameError(
                inp.path, f"shape {inp.shape} differs from {first.shape} of {first.path.name}"
            )
        if inp.unit != first.unit:
            raise FrameError(
                inp.path, f"unit {inp.unit} differs from {first.unit} of {first.path.name}"
            )
    factors = _scale_factors(scale, method_key, inputs, dtype)

    nframes, (ny, nx) = len(inputs), first.shape
    threads = max(1, min(int(threads or min(2, os.cpu_count() or 1)), 8))
    rows = plan_band_rows(nframes, first.shape, memory_limit, dtype.itemsize, threads)
    # The engine's general path uses ~40 bytes per value of a piece; keep a piece within
    # the scratch space reserved per thread by plan_band_rows.
    general_pixels = max(256, int(0.6 * min(_FIXED_PER_THREAD, memory_limit / 8) / (40 * nframes)))
    itype = np.int16 if nframes < 32768 else np.int32
    result = CombineResult(
        np.empty((ny, nx), dtype),
        np.empty((ny, nx), dtype),
        np.empty((ny, nx), itype),
        np.empty((ny, nx), itype),
    )
    log.info(
        "combine_files: %d frames of %dx%d, method=%s, clipping=%s, %d rows per band "
        "(memory_limit=%.3g bytes), %d threads",
        nframes,
        nx,
        ny,
        method_key,
        "+".join(rejection.names) or "none",
        rows,
        memory_limit,
        threads,
    )

    readers = [_Reader(inp) for inp in inputs]
    band = np.empty((nframes, rows, nx), dtype)
    max_item = max(
        [inp.dtype.itemsize for inp in inputs]
        + [inp.mask_dtype.itemsize for inp in inputs if inp.mask_dtype is not None]
    )
    buffers: queue.Queue = queue.Queue()
    for _ in range(threads):
        buffers.put(np.empty(rows * nx * max_item, dtype=np.uint8))

    def read_one(target: np.ndarray, i: int, r0: int, r1: int) -> None:
        buf = buffers.get()
        try:
            readers[i].read(r0, r1, target, buf)
        finally:
            buffers.put(buf)

    t_read = t_comb = 0.0
    try:
        with ThreadPoolExecutor(threads) as pool:
            for r0 in range(0, ny, rows):
                r1 = min(ny, r0 + rows)
                ta = time.perf_counter()
                for fut in [
                    pool.submit(read_one, band[i, : r1 - r0], i, r0, r1) for i in range(nframes)
                ]:
                    fut.result()
                tb = time.perf_counter()
                part = combine_band(
                    band[:, : r1 - r0],
                    core_method,
                    scale=factors,
                    weights=weights,
                    rejection=rejection,
                    threads=threads,
                    general_pixels=general_pixels,
                )
                result.data[r0:r1] = part.data
                result.uncertainty[r0:r1] = part.uncertainty
                result.nrejected[r0:r1] = part.nrejected
                result.ncombined[r0:r1] = part.ncombined
                del part
                t_read += tb - ta
                t_comb += time.perf_counter() - tb
    finally:
        for r in readers:
            r.close()
    del band

    nrej_total = int(result.nrejected.sum(dtype=np.int64))
    header = _output_header(
        inputs, method_key, rejection, factors, weights, dtype, first.unit, nrej_total
    )
    uh = fits.Header()
    uh["UTYPE"] = ("StdDevUncertainty", "uncertainty is a standard deviation")
    uh["BUNIT"] = header["BUNIT"]
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(result.data, header=header),
            fits.ImageHDU(result.uncertainty, header=uh, name="UNCERT"),
            fits.ImageHDU((result.ncombined == 0).astype(np.uint8), name="MASK"),
            fits.ImageHDU(result.nrejected, name="NREJECT"),
        ]
    )
    write_hdulist(hdul, output_path, overwrite=overwrite)
    nvalues = nframes * ny * nx
    log.info(
        "combine_files: wrote %s in %.2f s (read %.2f s, combine %.2f s); rejected %d of "
        "%d values (%.3f%%)",
        output_path,
        time.perf_counter() - t0,
        t_read,
        t_comb,
        nrej_total,
        nvalues,
        100.0 * nrej_total / nvalues,
    )
    return output_path


_IMAGE_COMBINATION_ARGS = (
    "wdir",
    "files",
    "output_name",
    "combining_method",
    "clipping_method",
    "minclip",
    "maxclip",
    "low_thresh",
    "high_thresh",
    "nlow",
    "nhigh",
    "minmax_clip_min",
    "minmax_clip_max",
    "weights",
    "scale",
    "memory_limit",
    "remove_files",
    "overwrite",
    "sigma_center",
    "sigma_spread",
    "maxiters",
    "dtype",
    "threads",
)


class image_combination:
    """Combine frames into a master frame (AstroDART-compatible stage).

    ``image_combination(wdir, files, output_name, combining_method, ...).run()`` writes
    ``wdir/output_name`` with :func:`combine_files` and returns its path.

    Parameters
    ----------
    wdir : str or pathlib.Path
        Folder the output is written to (created if needed).
    files : sequence of str or pathlib.Path
        Frames to combine (same shape and unit).
    output_name : str
        File name of the master frame, e.g. ``'Masterbias.fits'``.
    combining_method : {'median', 'average', 'sum', 'weighted', 'scaled'}
        See :func:`combine_files` ('weighted' needs ``weights``; 'scaled' uses ``scale``,
        by default each frame's inverse median, so a master flat is normalised to 1).
    clipping_method : {'sigclip', 'extrema_clipping', 'minmax'}, list of them, or None
        Rejection before combining.
    minclip, maxclip : float, optional
        'sigclip' low/high thresholds in sigma (default 3 and 3). The spread is
        1.4826 x MAD and the centre the median unless ``sigma_spread``/``sigma_center``
        say otherwise.
    low_thresh, high_thresh : float, optional
        Aliases of ``minclip``/``maxclip`` (ccdproc's names, which AstroDART also passed);
        giving both spellings with different values is an error.
    nlow, nhigh : int, optional
        'extrema_clipping': lowest/highest values dropped per pixel (default 1 and 1).
    minmax_clip_min, minmax_clip_max : float, optional
        'minmax' limits (raw input values); at least one is required for 'minmax'.
    weights : sequence of float, optional
        Per-file weights ('weighted', 'average', 'sum').
    scale : sequence of float, callable or 'inverse_median', optional
        Per-file scale factors (see :func:`combine_files`).
    memory_limit : float
        Bytes for the working band (default 1e9); see :func:`combine_files`.
    remove_files : {'yes', 'no'} or bool
        Accepted for AstroDART compatibility and **ignored**: AstroDART deleted the input
        frames after combining; astrodart never deletes frames a user or a step made.
    overwrite : {'yes', 'no'} or bool
        Replace an existing master (default True, as AstroDART re-made it on every run).
    sigma_center, sigma_spread, maxiters, dtype, threads
        Passed to :func:`combine_files`.

    Raises
    ------
    TypeError
        Unknown keyword argument (the message lists the allowed ones).
    ValueError
        Unknown method or clipping name, or a parameter given that the chosen clipping
        does not use (it would otherwise be silently ignored).
    """

    def __init__(
        self,
        wdir: str | os.PathLike,
        files: Sequence[str | os.PathLike],
        output_name: str,
        combining_method: str = "median",
        clipping_method: str | Sequence[str] | None = None,
        minclip: float | None = None,
        maxclip: float | None = None,
        low_thresh: float | None = None,
        high_thresh: float | None = None,
        nlow: int | None = None,
        nhigh: int | None = None,
        minmax_clip_min: float | None = None,
        minmax_clip_max: float | None = None,
        weights: Sequence[float] | None = None,
        scale: Sequence[float] | Callable | str | None = None,
        memory_limit: float = 1e9,
        remove_files: bool | str = "yes",
        *,
        overwrite: bool | str = True,
        sigma_center: str = "median",
        sigma_spread: str = "mad_std",
        maxiters: int = 10,
        dtype=np.float32,
        threads: int | None = None,
        **unknown,
    ) -> None:
        _unknown_kwargs("image_combination", unknown, _IMAGE_COMBINATION_ARGS)
        self.wdir = Path(wdir)
        self.files = _check_inputs(files)
        self.output_name = str(output_name)
        self.overwrite = parse_overwrite(overwrite)
        self.remove_files = parse_overwrite(remove_files)
        sigma_low = _alias("minclip", minclip, "low_thresh", low_thresh)
        sigma_high = _alias("maxclip", maxclip, "high_thresh", high_thresh)
        self.kwargs = {
            "clipping": clipping_method,
            "sigma_low": 3.0 if sigma_low is None else sigma_low,
            "sigma_high": 3.0 if sigma_high is None else sigma_high,
            "sigma_center": sigma_center,
            "sigma_spread": sigma_spread,
            "maxiters": maxiters,
            "nlow": 1 if nlow is None else nlow,
            "nhigh": 1 if nhigh is None else nhigh,
            "min_value": minmax_clip_min,
            "max_value": minmax_clip_max,
            "weights": weights,
            "scale": scale,
            "memory_limit": memory_limit,
            "dtype": dtype,
            "threads": threads,
        }
        _method_key(combining_method)
        self.method = combining_method
        rej = _rejection_from(
            clipping_method,
            self.kwargs["sigma_low"],
            self.kwargs["sigma_high"],
            sigma_center,
            sigma_spread,
            maxiters,
            self.kwargs["nlow"],
            self.kwargs["nhigh"],
            minmax_clip_min,
            minmax_clip_max,
        )
        unused = []
        if not rej.sigclip:
            unused += [
                n
                for n, v in (
                    ("minclip", minclip),
                    ("maxclip", maxclip),
                    ("low_thresh", low_thresh),
                    ("high_thresh", high_thresh),
                )
                if v is not None
            ]
        if not rej.extrema:
            unused += [n for n, v in (("nlow", nlow), ("nhigh", nhigh)) if v is not None]
        if not rej.minmax:
            unused += [
                n
                for n, v in (
                    ("minmax_clip_min", minmax_clip_min),
                    ("minmax_clip_max", minmax_clip_max),
                )
                if v is not None
            ]
        if unused:
            raise ValueError(
                f"{', '.join(unused)} given but clipping_method={clipping_method!r} "
                "does not use them; choose the clipping that uses them or drop them"
            )

    @property
    def output_path(self) -> Path:
        """``wdir / output_name``."""
        return self.wdir / self.output_name

    def run(self) -> str:
        """Combine the files and write the master frame.

        Returns
        -------
        str
            Path of the master frame written (``wdir/output_name``).
        """
        if self.remove_files:
            log.info(
                "image_combination: remove_files is ignored; astrodart never deletes "
                "input frames (%d kept)",
                len(self.files),
            )
        t0 = time.perf_counter()
        out = combine_files(
            self.files, self.output_path, self.method, overwrite=self.overwrite, **self.kwargs
        )
        settings = {k: v for k, v in self.kwargs.items() if k not in ("weights", "scale", "dtype")}
        settings["dtype"] = np.dtype(self.kwargs["dtype"]).name
        weights, scale = self.kwargs["weights"], self.kwargs["scale"]
        settings["weights"] = None if weights is None else [float(w) for w in weights]
        if callable(scale):
            scale = "callable"
        elif scale is not None and not isinstance(scale, str):
            scale = [float(s) for s in scale]
        settings["scale"] = scale
        log_event(
            find_log_path(self.wdir),
            step="image_combination",
            method=self.method,
            inputs=[str(f) for f in self.files],
            outputs=[str(out)],
            settings=settings,
            seconds=round(time.perf_counter() - t0, 3),
        )
        return str(out)


def _alias(name: str, value, alias: str, alias_value):
    if value is not None and alias_value is not None and float(value) != float(alias_value):
        raise ValueError(f"{name}={value} and {alias}={alias_value} disagree; give one of them")
    return value if value is not None else alias_value
