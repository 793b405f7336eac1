"""Layer 2: streamed reading of the input files of a combination, band of rows by band.

:func:`astrodart.combine.files.combine_files` reads every input once, a band of rows at a
time, through the readers here.

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
"""

from __future__ import annotations

import gzip
import queue
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits

from astrodart.frames.checks import raw_saturation
from astrodart.frames.header import FrameHeader
from astrodart.frames.io import FrameError, _unit_from_header, image_hdu_index, read_header

__all__: list[str] = []

_BITPIX_DTYPES = {
    8: np.dtype("u1"),
    16: np.dtype(">i2"),
    32: np.dtype(">i4"),
    64: np.dtype(">i8"),
    -32: np.dtype(">f4"),
    -64: np.dtype(">f8"),
}


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
    saturation: float | None = None  # raw integer data: values at or above are masked


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
        saturation=raw_saturation(header),
    )


def _is_unsigned16(inp: _Input) -> bool:
    """True for the usual camera data: big-endian int16 with ``BZERO = 32768``, unscaled."""
    return inp.dtype == np.dtype(">i2") and inp.bscale == 1.0 and inp.bzero == 32768.0


def _unsigned16(raw: np.ndarray) -> np.ndarray:
    """The unsigned values (``raw + 32768``) of big-endian int16 ``raw``, as a big-endian
    uint16 view of the same buffer (overwritten): flipping the sign bit adds 32768 modulo
    65536, which is cheaper than converting through a byte-swapped int16 and adding."""
    native = raw.view(np.uint16)
    np.bitwise_xor(native, np.uint16(0x0080 if sys.byteorder == "little" else 0x8000), out=native)
    return native.view(">u2")


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
                if inp.blank is not None:
                    missing = raw == inp.blank  # before _unsigned16 reuses the buffer
                if _is_unsigned16(inp):
                    np.copyto(out, _unsigned16(raw), casting="unsafe")
                elif inp.bscale != 1.0:
                    np.multiply(raw, out.dtype.type(inp.bscale), out=out, casting="unsafe")
                    if inp.bzero != 0.0:
                        out += out.dtype.type(inp.bzero)
                elif inp.bzero != 0.0:
                    np.add(raw, out.dtype.type(inp.bzero), out=out, casting="unsafe")
                else:
                    np.copyto(out, raw, casting="unsafe")
                if inp.blank is not None:
                    np.copyto(out, np.nan, where=missing)
            else:
                sec = self._astropy()[inp.hdu_index].section
                out[...] = sec[r0:r1] if len(sec.shape) == 2 else sec[0, r0:r1]
            if inp.saturation is not None:  # saturated raw pixels are left out
                np.copyto(out, np.nan, where=out >= inp.saturation)
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


def _inspect_all(paths) -> list[_Input]:
    """Inspect every input; all must have the shape and unit of the first (FrameError)."""
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
        binning = FrameHeader(inp.header, inp.path).binning
        if binning != FrameHeader(first.header, first.path).binning:
            raise FrameError(
                inp.path, f"binning {binning} differs from "
                f"{FrameHeader(first.header, first.path).binning} of {first.path.name}; combine "
                "frames taken with one binning"
            )
    return inputs


class _BandReader:
    """Reads the same rows of every input into a band, one thread per file at a time,
    each thread with its own raw-read buffer."""

    def __init__(self, inputs: list[_Input], rows: int, threads: int):
        self.readers = [_Reader(inp) for inp in inputs]
        nx = inputs[0].shape[1]
        max_item = max(
            [inp.dtype.itemsize for inp in inputs]
            + [inp.mask_dtype.itemsize for inp in inputs if inp.mask_dtype is not None]
        )
        self.buffers: queue.Queue = queue.Queue()
        for _ in range(threads):
            self.buffers.put(np.empty(rows * nx * max_item, dtype=np.uint8))

    def _read_one(self, target: np.ndarray, i: int, r0: int, r1: int) -> None:
        buf = self.buffers.get()
        try:
            self.readers[i].read(r0, r1, target, buf)
        finally:
            self.buffers.put(buf)

    def read(self, pool, band: np.ndarray, r0: int, r1: int) -> None:
        """Rows ``r0:r1`` of every input into ``band`` (``(nframes, r1 - r0, nx)``)."""
        futures = [pool.submit(self._read_one, band[i], i, r0, r1) for i in range(len(band))]
        for fut in futures:
            fut.result()

    def close(self) -> None:
        for r in self.readers:
            r.close()
