"""Layer 2: combine FITS files into one frame, band by band, within a memory limit.

:func:`combine_files` reads every input once, in bands of rows whose size follows from
``memory_limit`` (:func:`plan_band_rows`; the streamed readers are in
:mod:`astrodart.combine.reading`), combines each band with
:func:`astrodart.combine.engine.combine_band` and writes the result atomically.
:class:`astrodart.pipeline.image_combination.image_combination` is the AstroDART-compatible stage built
on it (``from astrodart.utils import image_combination``).

Memory
------
The working band holds ``nframes x rows x nx`` values in ``dtype`` (float32 by default);
``rows`` is chosen so that the band, the reading buffers and the engine's bounded
scratch space fit in ``memory_limit`` bytes, and the band is at most ~64 MB (a bigger
one is no faster: it only costs fresh pages and cache misses). On top of that come the
outputs (combined image, uncertainty, two int16 count planes: 12 bytes per pixel) and
the interpreter.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bottleneck as bn
import numpy as np
from astropy.io import fits

from astrodart import __version__
from astrodart.combine.engine import CombineResult, combine_band
from astrodart.combine.methods import Rejection, parse_method, parse_rejection
from astrodart.combine.reading import _BandReader, _Input, _inspect_all
from astrodart.frames.checks import check_files, check_number, header_text
from astrodart.frames.io import FrameError, read_frame, write_hdulist

__all__ = ["combine_files", "plan_band_rows", "check_resources", "MIN_MEMORY_LIMIT"]

log = logging.getLogger("astrodart")

#: Bytes reserved per reading/combining thread besides the band (engine scratch space).
_FIXED_PER_THREAD = 24e6
#: Bytes of the working band beyond which a bigger band brings no speed (see _combine_bands).
_BAND_BYTES = 64e6
#: The smallest ``memory_limit`` (bytes) a combination accepts.
MIN_MEMORY_LIMIT = 1e5
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
        header[f"IMCMB{i:03d}"] = header_text(inp.path.name)[-68:]
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


def _check_inputs(paths, owner: str = "combine_files", name: str = "paths") -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError(
            f"{owner}: {name} must be a list of FITS files, not a single path ({paths!s}); "
            "wrap it in a list"
        )
    return [Path(p) for p in check_files(name, paths, owner=owner, min_count=1, unique=True)]


def check_resources(memory_limit, threads,
                    owner: str = "combine_files") -> tuple[float, int | None]:
    """Check the memory limit and thread count of a combination, at the call.

    Parameters
    ----------
    memory_limit : float
        Bytes; at least :data:`MIN_MEMORY_LIMIT`.
    threads : int or None
        At least 1 (None: the default).
    owner : str
        The call named in the message.

    Returns
    -------
    tuple
        ``(memory_limit, threads)`` as float and int (or None).

    Raises
    ------
    TypeError, ValueError
        A value that is not a number or out of range; the message names it.
    """
    memory_limit = check_number("memory_limit", memory_limit, minimum=MIN_MEMORY_LIMIT,
                                owner=owner, unit="bytes")
    threads = check_number("threads", threads, minimum=1, integer=True, allow_none=True,
                           owner=owner)
    return memory_limit, threads


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


def _check_weights(weights, method_key: str, nfiles: int) -> np.ndarray | None:
    if method_key == "weighted" and weights is None:
        raise ValueError("method 'weighted' needs weights (one per file)")
    if weights is None:
        return None
    if method_key not in ("weighted", "average", "sum"):
        raise ValueError(f"weights apply to 'weighted', 'average' and 'sum', not to {method_key!r}")
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if weights.size != nfiles:
        raise ValueError(f"{weights.size} weights for {nfiles} files")
    return weights


def _check_output(output_path: Path, paths: list[Path], dtype, overwrite: bool) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if output_path.resolve() in {p.resolve() for p in paths}:
        raise ValueError(f"{output_path}: output would replace one of the inputs")
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path}: exists; pass overwrite=True to replace it")
    return dtype


def _combine_bands(
    inputs: list[_Input], method: str, rejection: Rejection, factors, weights, dtype,
    memory_limit: float, threads: int,
) -> tuple[CombineResult, float, float]:
    """Read and combine the inputs band by band; returns the result and the seconds spent
    reading and combining."""
    nframes, (ny, nx) = len(inputs), inputs[0].shape
    rows = plan_band_rows(nframes, (ny, nx), memory_limit, dtype.itemsize, threads)
    # Within the limit, a band of ~_BAND_BYTES is reused from band to band: a larger one
    # only adds fresh pages (page faults) and falls out of the processor's cache.
    rows = min(rows, max(4 * threads, int(_BAND_BYTES // (nframes * nx * dtype.itemsize))))
    # The engine's general path uses ~40 bytes per value of a piece; keep a piece within
    # the scratch space reserved per thread by plan_band_rows.
    general_pixels = max(256, int(0.6 * min(_FIXED_PER_THREAD, memory_limit / 8) / (40 * nframes)))
    result = CombineResult.empty((ny, nx), dtype, nframes)
    log.info(
        "combine_files: %d frames of %dx%d, method=%s, clipping=%s, %d rows per band "
        "(memory_limit=%.3g bytes), %d threads",
        nframes, nx, ny, method, "+".join(rejection.names) or "none", rows, memory_limit, threads,
    )
    reader = _BandReader(inputs, rows, threads)
    band = np.empty((nframes, rows, nx), dtype)
    t_read = t_comb = 0.0
    has_data = np.zeros(nframes, bool)  # inputs with a finite value so far
    try:
        with ThreadPoolExecutor(threads) as pool:
            for r0 in range(0, ny, rows):
                r1 = min(ny, r0 + rows)
                ta = time.perf_counter()
                reader.read(pool, band[:, : r1 - r0], r0, r1)
                if not has_data.all():  # usually settled by the first band
                    has_data |= np.isfinite(band[:, : r1 - r0]).any(axis=(1, 2))
                tb = time.perf_counter()
                part = combine_band(band[:, : r1 - r0], method, scale=factors, weights=weights,
                                    rejection=rejection, threads=threads,
                                    general_pixels=general_pixels)
                view = result.rows(r0, r1)
                for name in ("data", "uncertainty", "nrejected", "ncombined"):
                    getattr(view, name)[...] = getattr(part, name)
                t_read += tb - ta
                t_comb += time.perf_counter() - tb
    finally:
        reader.close()
    if not has_data.all():
        empty = inputs[int(np.flatnonzero(~has_data)[0])].path
        raise FrameError(empty, f"every pixel is NaN or infinite: no data to combine; leave "
                                f"this frame out ({int((~has_data).sum())} such input(s))")
    return result, t_read, t_comb


def _write_result(result: CombineResult, header: fits.Header, path: Path, overwrite: bool) -> None:
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
    # atomic (temporary file + rename) but not forced to disk: a combined frame is remade
    # from its inputs after a power cut, as every step's output is (0.25-0.3 s a write)
    write_hdulist(hdul, path, overwrite=overwrite, fsync=False)


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
    overwrite: bool = False,
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
    overwrite : bool
        Replace an existing ``output_path`` (AstroDART's 'yes'/'no' are parsed by
        :class:`astrodart.pipeline.image_combination.image_combination`, not here).
    **unknown
        Rejected: an unknown keyword is a TypeError naming the closest allowed one.

    Returns
    -------
    pathlib.Path
        ``output_path``.

    Raises
    ------
    TypeError
        Unknown keyword arguments (the message lists the allowed ones), ``overwrite``
        not a bool.
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
    memory_limit, threads = check_resources(memory_limit, threads)
    output_path = Path(output_path)
    method_key = parse_method(method)
    weights = _check_weights(weights, method_key, len(paths))
    rejection = parse_rejection(clipping, sigma_low, sigma_high, sigma_center, sigma_spread,
                                maxiters, nlow, nhigh, min_value, max_value)
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"overwrite={overwrite!r}: give True or False")
    dtype = _check_output(output_path, paths, dtype, overwrite)

    t0 = time.perf_counter()
    inputs = _inspect_all(paths)
    factors = _scale_factors(scale, method_key, inputs, dtype)
    threads = max(1, min(int(threads or min(2, os.cpu_count() or 1)), 8))
    core_method = {"weighted": "average", "scaled": "average"}.get(method_key, method_key)
    result, t_read, t_comb = _combine_bands(inputs, core_method, rejection, factors, weights,
                                            dtype, memory_limit, threads)
    nrej_total = int(result.nrejected.sum(dtype=np.int64))
    header = _output_header(inputs, method_key, rejection, factors, weights, dtype,
                            inputs[0].unit, nrej_total)
    _write_result(result, header, output_path, overwrite)
    nvalues = result.data.size * len(inputs)
    log.info(
        "combine_files: wrote %s in %.2f s (read %.2f s, combine %.2f s); rejected %d of "
        "%d values (%.3f%%)",
        output_path, time.perf_counter() - t0, t_read, t_comb, nrej_total, nvalues,
        100.0 * nrej_total / nvalues,
    )
    return output_path
