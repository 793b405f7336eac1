"""A corpus of bad-input and fault cases (issue 18): every one ends in a clear outcome.

Each case is one row of :data:`CASES`: its name, what it feeds to which call, and the
expected outcome -- a clear error (type and a regular expression over its text), a
warning (category and text), or a result checked against what is true. Every case runs
under a timeout (none may hang), in a folder of its own; a refused call must not leave a
file behind (the arguments are checked at the call, before any work).

The synthetic cases (small 64 x 64 frames written like a camera writes them) run
everywhere; the cases marked ``data`` work on copies of the real sample nights
(``tests/datapaths.py``) and skip, saying why, when the nights are absent. Nothing is
ever written into the sample-data folder.
"""
from __future__ import annotations

import errno
import gzip
import os
import shutil
import signal
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from datapaths import FEDER, HATP27, HATP32, missing

from astrodart.calibration.base import CalibrationError
from astrodart.combine.files import combine_files
from astrodart.exceptions import AstrodartWarning
from astrodart.first_stage import (
    correct_flatfield,
    cosmic_ray_laplacian_correction,
    cosmic_ray_median_correction,
    deviation_calculation,
    finalize_stage1,
    gain_correction,
    master_frame,
    overscan_correction,
    subtract_bias,
    subtract_dark,
    trimmer,
)
from astrodart.frames.checks import (
    NonFinitePixelsWarning,
    check_choice,
    check_files,
    check_number,
    header_text,
)
from astrodart.frames.header import FrameHeader, HeaderValueError, MissingKeywordError
from astrodart.frames.io import (
    FrameError,
    find_fits,
    is_complete_fits,
    read_frame,
    read_header,
    write_frame,
)
from astrodart.pipeline.step import FrameSkippedWarning
from astrodart.second_stage import astrometry, get_fwhm
from astrodart.third_stage_astrophotography import rgb_image
from astrodart.third_stage_photometry import check_image, get_site_coordinates, photometry
from astrodart.utils import data_organiser, get_directory, image_combination

#: Seconds a case may take (the real-data cases read 1024 x 1024 gzip frames).
TIMEOUT = 60
Q = dict(progress=False, executor="serial")
SHAPE = (64, 64)


# ------------------------------------------------------------------------------------
# the frames
# ------------------------------------------------------------------------------------
def _header(kind: str, exptime: float, **extra) -> fits.Header:
    h = fits.Header()
    h["IMAGETYP"] = {"bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field",
                     "light": "Light Frame"}[kind]
    h["EXPTIME"] = float(exptime)
    h["EGAIN"] = 2.0
    h["RDNOISE"] = 10.0
    h["XBINNING"] = h["YBINNING"] = 1
    h["FILTER"] = "V"
    h["DATE-OBS"] = "2020-01-01T00:00:00"
    for k, v in extra.items():
        h[k] = v
    return h


def write_raw(path, level=1000.0, kind="bias", exptime=0.0, shape=SHAPE, seed=0,
              data=None, **extra) -> str:
    """A raw frame as a camera writes it: uint16 with BZERO=32768."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = np.clip(np.round(level + rng.normal(0, 5, shape)), 0, 65535).astype(np.uint16)
    fits.PrimaryHDU(data, header=_header(kind, exptime, **extra)).writeto(path, overwrite=True)
    return str(path)


def write_float(path, data, kind="bias", exptime=0.0, **extra) -> str:
    """A float32 frame (already processed, may hold NaN)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(np.asarray(data, np.float32), header=_header(kind, exptime, **extra)).writeto(
        path, overwrite=True)
    return str(path)


@dataclass
class Env:
    """What a case works on: its own folder, the synthetic frames, real copies."""

    tmp: Path
    bias: list
    darks: list
    flats: list
    lights: list

    @property
    def out(self) -> Path:
        """The case's output folder (not created: a refused call must not create it)."""
        return self.tmp / "out"

    def copy(self, path, name=None) -> str:
        """A copy of ``path`` in the case's folder (to damage it without harm)."""
        dest = self.tmp / "in" / (name or Path(path).name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
        return str(dest)

    def truncated(self, path, keep=0.5, name=None) -> str:
        """A copy cut short (as by a full disk or a killed copy)."""
        dest = Path(self.copy(path, name))
        raw = dest.read_bytes()
        dest.write_bytes(raw[: int(len(raw) * keep)])
        return str(dest)

    def real(self, night: Path, pattern: str, n: int) -> list:
        """Copies of ``n`` real frames of a sample night (skips without the data)."""
        if not Path(night).is_dir():
            missing(Path(night))
        src = sorted(Path(night).glob(pattern))[:n]
        if len(src) < n:
            missing(Path(night), f"{night}: fewer than {n} files match {pattern}")
        return [self.copy(p) for p in src]

    def written(self) -> list:
        """Files under the output folder (a refused call must leave none)."""
        return sorted(str(p) for p in self.out.rglob("*") if p.is_file()) if self.out.exists() else []


# ------------------------------------------------------------------------------------
# outcomes
# ------------------------------------------------------------------------------------
@dataclass
class Raises:
    """The call stops with ``error`` whose text matches ``match``; nothing is written."""

    error: Any
    match: str
    nothing_written: bool = True


@dataclass
class Warns:
    """The call warns ``category`` (text ``match``) and ``check(result, env)`` holds."""

    category: Any
    match: str
    check: Callable | None = None


@dataclass
class Gives:
    """The call returns a result for which ``check(result, env)`` holds."""

    check: Callable


@dataclass
class Case:
    """One row of the corpus."""

    name: str
    feeds: str
    run: Callable
    outcome: Any
    data: bool = False
    marks: list = field(default_factory=list)


CASES: list[Case] = []


def case(name, feeds, outcome, data=False):
    """Decorator: add the function (``env -> result``) as a case."""
    def add(fn):
        CASES.append(Case(name, feeds, fn, outcome, data))
        return fn
    return add


def simple(name, feeds, run, outcome, data=False):
    CASES.append(Case(name, feeds, run, outcome, data))


# ------------------------------------------------------------------------------------
# A. numeric options: refused at the call, naming the argument, value and range
# ------------------------------------------------------------------------------------
V = ValueError
T = TypeError
RANGE = r"out of range; allowed"
for nm, kw, err, rx in [
    ("master sigma negative", dict(minclip=-1), V, rf"master_frame: minclip=-1 sigma is {RANGE}: a number > 0"),
    ("master sigma zero", dict(maxclip=0), V, rf"maxclip=0 sigma is {RANGE}"),
    ("master sigma nan", dict(minclip=float("nan")), V, r"minclip=nan is not finite"),
    ("master sigma string", dict(minclip="3"), T, r"minclip='3' \(str\) is not a number"),
    ("master sigma bool", dict(maxclip=True), T, r"maxclip=True \(bool\) is not a number"),
    ("master tiny memory", dict(memory_limit=10), V, rf"memory_limit=10 bytes is {RANGE}: a number >= 100000.0 bytes"),
    ("master negative memory", dict(memory_limit=-1e9), V, r"memory_limit=-1000000000.0 bytes"),
    ("master memory string", dict(memory_limit="1e9"), T, r"memory_limit='1e9' \(str\)"),
    ("master nlow negative", dict(clipping_method="extrema_clipping", nlow=-1), V, rf"nlow=-1 is {RANGE}: an integer >= 0"),
    ("master nhigh fractional", dict(clipping_method="extrema_clipping", nhigh=1.5), V, r"nhigh=1.5 is not a whole number"),
    ("master minmax infinite", dict(clipping_method="minmax", minmax_clip_min=-np.inf), V, r"minmax_clip_min=-inf is not finite"),
    ("master unknown method", dict(combining_method="mode"), CalibrationError, r"combining_method='mode' unknown"),
    ("master unknown frame type", dict(frame_type="science"), CalibrationError, r"frame_type='science'"),
]:
    simple(nm, f"master_frame(bias, {kw})",
           lambda env, kw=kw: master_frame(env.out, env.bias, "m.fits", **kw).run(), Raises(err, rx))

for nm, kw, err, rx in [
    ("combination sigma negative", dict(clipping_method="sigclip", minclip=-1), V, rf"image_combination: minclip=-1 sigma is {RANGE}"),
    ("combination sigma nan", dict(clipping_method="sigclip", maxclip=float("nan")), V, r"image_combination: maxclip=nan is not finite"),
    ("combination tiny memory", dict(memory_limit=10), V, rf"image_combination: memory_limit=10 bytes is {RANGE}"),
    ("combination zero threads", dict(threads=0), V, rf"image_combination: threads=0 is {RANGE}: an integer >= 1"),
    ("combination nlow negative", dict(clipping_method="extrema_clipping", nlow=-2), V, rf"nlow=-2 is {RANGE}"),
    ("combination maxiters zero", dict(clipping_method="sigclip", maxiters=0), V, rf"maxiters=0 is {RANGE}: an integer >= 1"),
    ("combination unknown method", dict(combining_method="mean?"), V, r"'mean\?' unknown"),
    ("combination unknown clipping", dict(clipping_method="sigmaclip"), V, r"'sigmaclip' unknown"),
    ("combination minmax reversed", dict(clipping_method="minmax", minmax_clip_min=5, minmax_clip_max=1), V, r"minmax limits reversed"),
    ("combination weights count", dict(combining_method="weighted", weights=[1, 2]), V, r"2 weights for 4 files"),
    ("combination unused option", dict(clipping_method=None, nlow=2), V, r"nlow given but clipping_method=None"),
    ("combination unknown keyword", dict(sigma=3), T, r"sigma"),
]:
    simple(nm, f"image_combination(bias, {kw})",
           lambda env, kw=kw: image_combination(env.out, env.bias, "c.fits", **kw).run(),
           Raises(err, rx))

simple("combine_files zero memory", "combine_files(memory_limit=0)",
       lambda env: combine_files(env.bias, env.out / "c.fits", memory_limit=0),
       Raises(V, rf"combine_files: memory_limit=0 bytes is {RANGE}"))
simple("combine_files sigma bool", "combine_files(sigma_low=True)",
       lambda env: combine_files(env.bias, env.out / "c.fits", clipping="sigclip", sigma_low=True),
       Raises(T, r"sigma_low=True \(bool\)"))

for nm, cls, kw, err, rx in [
    ("deviation negative ron", deviation_calculation, dict(ron=-1), V, rf"deviation_calculation: ron=-1 e- is {RANGE}: a number >= 0"),
    ("deviation zero gain", deviation_calculation, dict(ron=5, gain=0), V, rf"gain=0 e-/ADU is {RANGE}: a number > 0"),
    ("deviation nan gain", deviation_calculation, dict(ron=5, gain=float("nan")), V, r"gain=nan is not finite"),
    ("gain negative", gain_correction, dict(gain=-2), V, rf"gain_correction: gain=-2 e-/ADU is {RANGE}"),
    ("gain string", gain_correction, dict(gain="2"), T, r"gain='2' \(str\) is not a number"),
    ("gain infinite", gain_correction, dict(gain=np.inf), V, r"gain=inf is not finite"),
    ("lacosmic negative sigclip", cosmic_ray_laplacian_correction, dict(gain=2, sigclip=-5), V, rf"sigclip=-5 is {RANGE}"),
    ("lacosmic zero niter", cosmic_ray_laplacian_correction, dict(gain=2, niter=0), V, rf"niter=0 is {RANGE}: an integer >= 1"),
    ("lacosmic zero objlim", cosmic_ray_laplacian_correction, dict(gain=2, objlim=0), V, rf"objlim=0 is {RANGE}"),
    ("lacosmic negative satlevel", cosmic_ray_laplacian_correction, dict(gain=2, satlevel=-1), V, rf"satlevel=-1 is {RANGE}"),
    ("lacosmic negative gain", cosmic_ray_laplacian_correction, dict(gain=-2), V, r"cosmic_ray_laplacian_correction: gain=-2"),
    ("median zero mbox", cosmic_ray_median_correction, dict(gain=2, mbox=0), V, rf"mbox=0 px is {RANGE}: an integer >= 1"),
    ("median negative rbox", cosmic_ray_median_correction, dict(gain=2, rbox=-3), V, rf"rbox=-3 px is {RANGE}"),
    ("median fractional gbox", cosmic_ray_median_correction, dict(gain=2, gbox=2.5), V, r"gbox=2.5 is not a whole number"),
    ("median zero thresh", cosmic_ray_median_correction, dict(gain=2, thresh=0), V, rf"thresh=0 is {RANGE}"),
    ("step zero workers", gain_correction, dict(gain=2, workers=0), V, rf"gain_correction: workers=0 is {RANGE}"),
    ("step fractional workers", gain_correction, dict(gain=2, workers=2.5), V, r"workers=2.5 is not a whole number"),
    ("step overwrite typo", gain_correction, dict(gain=2, overwrite="maybe"), V, r"overwrite='maybe' not understood"),
    ("step unknown keyword", gain_correction, dict(gian=2), T, r"gain_correction.*gian"),
]:
    simple(nm, f"{cls.__name__}(bias, {kw})",
           lambda env, cls=cls, kw=kw: cls(env.out, env.bias, **{**Q, **kw}).run(),
           Raises(err, rx))

simple("overscan negative degree", "overscan_correction(degree=-1)",
       lambda env: overscan_correction(env.out, env.bias, "[60:64,1:64]", 1, degree=-1, **Q).run(),
       Raises(V, rf"overscan_correction: degree=-1 is {RANGE}"))
simple("overscan bad axis", "overscan_correction(overscan_axis=2)",
       lambda env: overscan_correction(env.out, env.bias, "[60:64,1:64]", 2, **Q).run(),
       Raises(CalibrationError, r"overscan_axis=2"))
simple("trim region outside", "trimmer('[1:100,1:10]') on 64x64",
       lambda env: trimmer(env.out, env.bias, "[1:100,1:10]", "yes", **Q).run(),
       Raises(CalibrationError, r"x range 1:100 does not fit a frame of 64x64"))
simple("trim region text", "trimmer('centre')",
       lambda env: trimmer(env.out, env.bias, "centre", "yes", **Q).run(),
       Raises(CalibrationError, r"'centre' is not a FITS section"))
for nm, kw, rx in [
    ("fwhm negative threshold", dict(threshold=-1), rf"get_fwhm: threshold=-1 sigma is {RANGE}"),
    ("fwhm zero max_stars", dict(max_stars=0), rf"max_stars=0 is {RANGE}"),
    ("fwhm zero guess", dict(fwhm_guess=0), rf"fwhm_guess=0 px is {RANGE}"),
]:
    simple(nm, f"get_fwhm(lights, {kw})", lambda env, kw=kw: get_fwhm(env.lights, **kw).estimate_fwhm(),
           Raises(V, rx))
for nm, kw, rx in [
    ("astrometry negative fwhm", dict(fwhm=-1), rf"astrometry: fwhm=-1 px is {RANGE}"),
    ("astrometry sip order", dict(sip_order=9), rf"sip_order=9 is {RANGE}: an integer with 0 <= value <= 5"),
    ("astrometry zero time limit", dict(time_limit=0), rf"time_limit=0 is {RANGE}"),
    ("astrometry scale tolerance", dict(scale_tolerance=2), rf"scale_tolerance=2 is {RANGE}"),
]:
    simple(nm, f"astrometry(lights, {kw})",
           lambda env, kw=kw: astrometry(str(env.out), env.lights, None, **kw).run(),
           Raises(V, rx))
simple("rgb negative stretch", "rgb_image(red_stretch=-1)",
       lambda env: rgb_image(*env.lights, red_stretch=-1), Raises(V, rf"red_stretch=-1 is {RANGE}"))
simple("rgb nan stretch", "rgb_image(green_stretch=nan)",
       lambda env: rgb_image(*env.lights, green_stretch=float("nan")),
       Raises(V, r"green_stretch=nan is not finite"))
simple("check_image negative threshold", "check_image(threshold=-1)",
       lambda env: check_image(env.lights[0], threshold=-1, plot=False).run(),
       Raises(V, rf"check_image: threshold=-1 sigma is {RANGE}"))
simple("photometry negative radius", "photometry('custom', radius_phot=-1)",
       lambda env: photometry("pixel", "custom", [env.lights], ["V"], obs_location="OT",
                              target_coord=[(20, 20)], comparison_coord=[(40, 40)],
                              radius_phot=-1, radius_annulus=5, radius_dannulus=7),
       Raises(V, r"0 < radius_phot"))
simple("site latitude 100", "get_site_coordinates([100, 0, 0])",
       lambda env: get_site_coordinates(coordinates=[100, 0, 0]).from_lat_lon(),
       Raises(V, r"latitude 100.0 outside -90..90"))
simple("site longitude text", "get_site_coordinates([10, 'a', 0])",
       lambda env: get_site_coordinates(coordinates=[10, "a", 0]).from_lat_lon(),
       Raises(V, r"must be \[lat_deg, lon_deg, height_m\] numbers"))
simple("check_number integer range", "check_number('n', 11, 0..10)",
       lambda env: check_number("n", 11, minimum=0, maximum=10, integer=True, owner="f"),
       Raises(V, rf"f: n=11 is {RANGE}: an integer with 0 <= value <= 10"))
simple("check_choice names the choices", "check_choice('method', 'avg')",
       lambda env: check_choice("method", "avg", ("median", "average")),
       Raises(V, r"method='avg' is not known; use one of 'median', 'average'"))
simple("check_choice ignores case", "check_choice('method', ' Median ')",
       lambda env: check_choice("method", " Median ", ("median", "average")),
       Gives(lambda r, env: r == "median"))


# ------------------------------------------------------------------------------------
# B. paths
# ------------------------------------------------------------------------------------
simple("files None", "trimmer(files=None)",
       lambda env: trimmer(env.out, None, "[1:10,1:10]", **Q).run(),
       Raises(T, r"trimmer: files=None: give a list of FITS file paths"))
simple("files a folder", "trimmer(files=[folder])",
       lambda env: trimmer(env.out, [str(Path(env.bias[0]).parent)], "[1:10,1:10]", **Q).run(),
       Raises(V, r"files\[0\]=.* is a folder, not a FITS file"))
simple("files a number", "trimmer(files=[5])",
       lambda env: trimmer(env.out, [5], "[1:10,1:10]", **Q).run(),
       Raises(T, r"files\[0\]=5 \(int\) is not a file path"))
simple("wdir is a file", "trimmer(wdir=<a FITS file>)",
       lambda env: trimmer(env.bias[0] + "/sub", env.bias, "[1:10,1:10]", **Q).run(),
       Raises(V, r"wdir=.*bias_000.fits is a file, not a folder"))


@contextmanager
def _read_only(folder: Path):
    """``folder`` made read-only (and seen so by the checks even when running as root)."""
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    try:
        with mock.patch("astrodart.frames.checks.os.access", access):
            yield folder
    finally:
        folder.chmod(0o755)


@case("wdir read-only", "trimmer into a subfolder of a read-only folder",
      Raises(PermissionError, r"trimmer: wdir=.*: folder .*out is not writable"))
def _read_only_step(env):
    with _read_only(env.out):
        return trimmer(env.out / "t", env.bias, "[1:10,1:10]", **Q).run()


@case("combination read-only", "image_combination into a read-only folder",
      Raises(PermissionError, r"image_combination: wdir=.* is not writable"))
def _read_only_combination(env):
    with _read_only(env.out):
        return image_combination(env.out, env.bias, "c.fits").run()


@case("master read-only", "master_frame into a read-only folder",
      Raises(PermissionError, r"master_frame: wdir=.* is not writable"))
def _read_only_master(env):
    with _read_only(env.out):
        return master_frame(env.out, env.bias, "m.fits").run()


simple("combination no files", "image_combination(files=[])",
       lambda env: image_combination(env.out, [], "c.fits").run(),
       Raises(V, r"image_combination: files has 0 file\(s\); at least 1 needed"))
simple("combination one path", "image_combination(files='a.fits')",
       lambda env: image_combination(env.out, env.bias[0], "c.fits").run(),
       Raises(T, r"files must be a list of FITS files, not a single path"))
for nm, cls in [("bias", subtract_bias), ("dark", subtract_dark), ("flat", correct_flatfield)]:
    simple(f"missing master {nm}", f"{cls.__name__}(master='missing.fits')",
           lambda env, cls=cls: cls(env.out, env.lights, str(env.tmp / "missing.fits"), **Q).run(),
           Raises(FileNotFoundError, rf"missing.fits: master {nm} does not exist"))
simple("all inputs missing", "trimmer(['nope1.fits', 'nope2.fits'])",
       lambda env: trimmer(env.out, [str(env.tmp / "nope1.fits"), str(env.tmp / "nope2.fits")],
                           "[1:10,1:10]", **Q).run(),
       Raises(FileNotFoundError, r"none of the 2 input files exists"))
simple("one input missing", "trimmer(bias + ['nope.fits'])",
       lambda env: trimmer(env.out, env.bias + [str(env.tmp / "nope.fits")], "[1:10,1:10]", **Q).run(),
       Warns(FrameSkippedWarning, r"nope.fits.*file does not exist|file does not exist",
             lambda r, env: len(r) == len(env.bias)))
simple("rgb missing file", "rgb_image('missing.fits', ...)",
       lambda env: rgb_image(str(env.tmp / "missing.fits"), *env.lights[:2]),
       Raises(FileNotFoundError, r"rgb_image: red_image=.*missing.fits.*no such file"))
simple("check_image missing file", "check_image('missing.fits')",
       lambda env: check_image(str(env.tmp / "missing.fits"), threshold=5, plot=False).run(),
       Raises(FileNotFoundError, r"check_image: reference_image=.*missing.fits"))
simple("organiser missing night", "data_organiser(uncal_dir missing)",
       lambda env: data_organiser(str(env.tmp / "nope"), str(env.out), "200101", "x", "yes").run(),
       Raises(FileNotFoundError, r"no such night folder"))
simple("finalize missing folder", "finalize_stage1(missing)",
       lambda env: finalize_stage1(str(env.tmp / "nope"), str(env.tmp / "nope2")).run(),
       Raises(FileNotFoundError, r"no such reduction folder"))


# ------------------------------------------------------------------------------------
# C. truncated and corrupt FITS
# ------------------------------------------------------------------------------------
simple("read truncated", "read_frame(half a file)",
       lambda env: read_frame(env.truncated(env.bias[0])), Raises(FrameError, r"truncated"))
simple("read empty file", "read_frame(0 bytes)",
       lambda env: read_frame(env.truncated(env.bias[0], keep=0)),
       Raises(FrameError, r"file is empty \(0 bytes\)"))


@case("read text as FITS", "read_frame(a text file named .fits)", Raises(FrameError, r"not a readable FITS file"))
def _text_file(env):
    p = env.tmp / "notes.fits"
    p.write_text("this is not a FITS file\n" * 100)
    return read_frame(p)


@case("read truncated gzip", "read_frame(a gzip cut short)", Raises(FrameError, r"trunc|unreadable|not a readable"))
def _gzip_cut(env):
    p = env.tmp / "a.fits.gz"
    p.write_bytes(gzip.compress(Path(env.bias[0]).read_bytes())[:3000])
    return read_frame(p)


simple("complete check on truncated", "is_complete_fits(half a file)",
       lambda env: is_complete_fits(env.truncated(env.bias[0])), Gives(lambda r, env: r is False))
simple("trim one truncated", "trimmer(bias + truncated copy)",
       lambda env: trimmer(env.out, env.bias + [env.truncated(env.bias[0], name="cut.fits")],
                           "[1:10,1:10]", **Q).run(),
       Warns(FrameSkippedWarning, r"cut.fits|truncated", lambda r, env: len(r) == len(env.bias)))
simple("master with truncated", "master_frame(bias + truncated copy)",
       lambda env: master_frame(env.out, env.bias + [env.truncated(env.bias[0], name="cut.fits")],
                                "m.fits").run(),
       Raises(FrameError, r"cut.fits: file is truncated"))
simple("combination with truncated", "image_combination(bias + truncated copy)",
       lambda env: image_combination(env.out, env.bias + [env.truncated(env.bias[0], name="cut.fits")],
                                     "c.fits").run(),
       Raises(FrameError, r"cut.fits: file is truncated"))


# ------------------------------------------------------------------------------------
# D. missing and bad keywords
# ------------------------------------------------------------------------------------
@case("dark without EXPTIME", "master_frame(darks, one without EXPTIME)",
      Raises(MissingKeywordError, r"exposure time"))
def _dark_no_exptime(env):
    darks = [env.copy(d) for d in env.darks]
    with fits.open(darks[1], mode="update") as h:
        del h[0].header["EXPTIME"]
    return master_frame(env.out, darks, "md.fits").run()


@case("negative EXPTIME", "FrameHeader of EXPTIME=-20", Raises(HeaderValueError, r"EXPTIME=-20.0 is not a usable exposure time"))
def _negative_exptime(env):
    p = write_raw(env.tmp / "neg.fits", kind="dark", exptime=-20)
    return FrameHeader(read_header(p), p).exptime


@case("text EXPTIME", "FrameHeader of EXPTIME='long'", Raises(HeaderValueError, r"EXPTIME='long' is not a number"))
def _text_exptime(env):
    p = write_raw(env.tmp / "txt.fits", kind="dark", exptime=1, EXPOSURE=None)
    with fits.open(p, mode="update") as h:
        h[0].header["EXPTIME"] = "long"
    return FrameHeader(read_header(p), p).exptime


@case("master dark negative EXPTIME", "master_frame(darks + EXPTIME=-20)",
      Raises(HeaderValueError, r"neg.fits: keyword EXPTIME=-20.0"))
def _master_negative(env):
    return master_frame(env.out, env.darks + [write_raw(env.tmp / "neg.fits", kind="dark", exptime=-20)],
                        "md.fits").run()


@case("subtract dark from negative EXPTIME", "subtract_dark(frame with EXPTIME=-20)",
      Warns(FrameSkippedWarning, r"EXPTIME=-20.0", lambda r, env: len(r) == len(env.lights)))
def _subtract_negative(env):
    md = master_frame(env.tmp / "m", env.darks, "md.fits").run()
    bad = write_raw(env.tmp / "neg.fits", kind="light", exptime=-20, level=1500)
    return subtract_dark(env.out, env.lights + [bad], md, **Q).run()


def _copies_without(env, sources, key):
    """Copies of ``sources`` whose primary header has lost ``key``."""
    frames = [env.copy(b) for b in sources]
    for f in frames:
        with fits.open(f, mode="update") as h:
            del h[0].header[key]
    return frames


def _run_skipping(step):
    """``step.run()`` with the per-frame skip warnings silenced (the error is the outcome)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameSkippedWarning)
        return step.run()


@case("gain missing everywhere", "gain_correction(frames without gain keyword, no gain=)",
      Raises(CalibrationError, r"no gain for .*pass gain="))
def _no_gain(env):
    return _run_skipping(gain_correction(env.out, _copies_without(env, env.bias[:2], "EGAIN"), **Q))


@case("read noise missing", "deviation_calculation(no RON keyword, no ron=)", Raises(CalibrationError, r"ron="))
def _no_ron(env):
    frames = _copies_without(env, env.bias[:2], "RDNOISE")
    return _run_skipping(deviation_calculation(env.out, frames, **Q))


@case("master without IMAGETYP", "master_frame(frames without IMAGETYP)", Raises(CalibrationError, r"IMAGETYP"))
def _no_imagetyp(env):
    return master_frame(env.out, _copies_without(env, env.bias, "IMAGETYP"), "m.fits").run()


# ------------------------------------------------------------------------------------
# E. mixed sizes, binning and units in one combination or calibration
# ------------------------------------------------------------------------------------
simple("master mixed shape", "master_frame(64x64 bias + 64x80 bias)",
       lambda env: master_frame(env.out, env.bias + [write_raw(env.tmp / "big.fits", shape=(80, 64))],
                                "m.fits").run(),
       Raises(CalibrationError, r"big.fits is \(64, 80\) px .* but .*bias_000.fits is \(64, 64\) px"))
simple("master mixed binning", "master_frame(bias + a 2x2-binned bias)",
       lambda env: master_frame(env.out, env.bias + [write_raw(env.tmp / "bin2.fits", XBINNING=2, YBINNING=2)],
                                "m.fits").run(),
       Raises(CalibrationError, r"bin2.fits .* binned \(2, 2\)"))
simple("combination mixed shape", "image_combination(bias + 64x80 frame)",
       lambda env: image_combination(env.out, env.bias + [write_raw(env.tmp / "big.fits", shape=(80, 64))],
                                     "c.fits").run(),
       Raises(FrameError, r"big.fits: shape \(80, 64\) differs from \(64, 64\)"))
simple("combination mixed binning", "image_combination(bias + 2x2-binned frame)",
       lambda env: image_combination(env.out, env.bias + [write_raw(env.tmp / "bin2.fits", XBINNING=2, YBINNING=2)],
                                     "c.fits").run(),
       Raises(FrameError, r"bin2.fits: binning \(2, 2\) differs from \(1, 1\)"))
simple("combination mixed units", "image_combination(adu + electron frames)",
       lambda env: image_combination(env.out, env.bias + [write_raw(env.tmp / "e.fits", BUNIT="electron")],
                                     "c.fits").run(),
       Raises(FrameError, r"e.fits: unit electron differs from adu"))


@case("bias master of another size", "subtract_bias(64x64 frames, 32x32 master)",
      Raises(CalibrationError, r"master bias .* is 32x32 px but .* is 64x64 px; trim"))
def _bias_size(env):
    small = [write_raw(env.tmp / f"s{i}.fits", shape=(32, 32), seed=i) for i in range(3)]
    mb = master_frame(env.tmp / "m", small, "mb.fits").run()
    return subtract_bias(env.out, env.lights, mb, **Q).run()


@case("bias master of another binning", "subtract_bias(1x1 frames, 2x2 master)",
      Raises(CalibrationError, r"binning 2x2 but .* has 1x1"))
def _bias_binning(env):
    b2 = [write_raw(env.tmp / f"b2_{i}.fits", seed=i, XBINNING=2, YBINNING=2) for i in range(3)]
    mb = master_frame(env.tmp / "m", b2, "mb.fits").run()
    return subtract_bias(env.out, env.lights, mb, **Q).run()


@case("bias master in another unit", "subtract_bias(frames in electrons, master in adu)",
      Raises(CalibrationError, r"master bias .* is in adu but .* is in electron; apply gain_correction"))
def _bias_unit(env):
    mb = master_frame(env.tmp / "m", env.bias, "mb.fits").run()
    electrons = gain_correction(env.tmp / "g", env.lights, gain=2, **Q).run()
    return subtract_bias(env.out, electrons, mb, **Q).run()


# ------------------------------------------------------------------------------------
# F. empty folders, G. duplicate files
# ------------------------------------------------------------------------------------
@case("empty folder listing", "find_fits(empty folder)", Gives(lambda r, env: r == []))
def _empty_find(env):
    (env.tmp / "empty").mkdir()
    return find_fits(env.tmp / "empty")


@case("empty folder tree", "get_directory(empty).science()", Gives(lambda r, env: r == ([], [], [])))
def _empty_tree(env):
    (env.tmp / "empty").mkdir()
    return get_directory(str(env.tmp / "empty")).science()


@case("combine an empty folder", "image_combination(find_fits(empty))",
      Raises(V, r"files has 0 file\(s\); at least 1 needed"))
def _empty_combination(env):
    (env.tmp / "empty").mkdir()
    return image_combination(env.out, find_fits(env.tmp / "empty"), "c.fits").run()


simple("steps on no frames", "trimmer(files=[])",
       lambda env: trimmer(env.out, [], "[1:10,1:10]", **Q).run(), Gives(lambda r, env: r == []))
simple("master duplicate", "master_frame(bias + bias[0])",
       lambda env: master_frame(env.out, env.bias + [env.bias[0]], "m.fits").run(),
       Raises(V, r"master_frame: files lists .*bias_000.fits' twice \(entries 0 and 4\)"))
simple("combination duplicate spelled apart", "image_combination(bias + 'dir/../bias_000.fits')",
       lambda env: image_combination(
           env.out, env.bias + [str(Path(env.bias[0]).parent / ".." / Path(env.bias[0]).parent.name
                                    / Path(env.bias[0]).name)], "c.fits").run(),
       Raises(V, r"twice \(entries 0 and 4\)"))
simple("combine_files duplicate", "combine_files(bias + bias[1])",
       lambda env: combine_files(env.bias + [env.bias[1]], env.out / "c.fits"),
       Raises(V, r"combine_files: paths lists .*bias_001.fits' twice"))
simple("check_files duplicate allowed", "check_files(unique=False)",
       lambda env: check_files("files", [env.bias[0], env.bias[0]]),
       Gives(lambda r, env: len(r) == 2))


# ------------------------------------------------------------------------------------
# H. cubes and tables
# ------------------------------------------------------------------------------------
def _cube(env, planes=3) -> str:
    p = env.tmp / f"cube{planes}.fits"
    fits.PrimaryHDU(np.ones((planes, 64, 64), np.float32)).writeto(p)
    return str(p)


def _table(env) -> str:
    p = env.tmp / "table.fits"
    Table({"x": [1.0, 2.0], "y": [3.0, 4.0]}).write(p)
    return str(p)


simple("read cube", "read_frame(3 x 64 x 64 cube)", lambda env: read_frame(_cube(env)),
       Raises(FrameError, r"cube3.fits: HDU 0 is a 3-D cube \(64 x 64 x 3 px\).*split the cube"))
simple("read header of cube", "read_header(cube)", lambda env: read_header(_cube(env)),
       Raises(FrameError, r"3-D cube"))
simple("read one-plane cube", "read_frame(1 x 64 x 64 cube)",
       lambda env: read_frame(_cube(env, 1)), Gives(lambda r, env: r.shape == (64, 64)))
simple("trim cube", "trimmer([cube])",
       lambda env: trimmer(env.out, [_cube(env)], "[1:10,1:10]", **Q).run(),
       Raises(CalibrationError, r"every frame failed; .*cube3.fits: FrameError: .*3-D cube"), )
simple("combine with cube", "image_combination(bias + cube)",
       lambda env: image_combination(env.out, env.bias + [_cube(env)], "c.fits").run(),
       Raises(FrameError, r"cube3.fits: .*3-D cube"))
simple("master with cube", "master_frame(bias + cube)",
       lambda env: master_frame(env.out, env.bias + [_cube(env)], "m.fits").run(),
       Raises(FrameError, r"cube3.fits: .*3-D cube"))
simple("read table", "read_frame(table-only file)", lambda env: read_frame(_table(env)),
       Raises(FrameError, r"table.fits: no image data in any HDU .*only table HDUs"))
simple("combine with table", "image_combination(bias + table)",
       lambda env: image_combination(env.out, env.bias + [_table(env)], "c.fits").run(),
       Raises(FrameError, r"table.fits: no image data"))


@case("read image extension", "read_frame(empty primary + image extension)",
      Gives(lambda r, env: r.shape == (64, 64) and r.meta["EXPTIME"] == 5.0))
def _extension(env):
    p = env.tmp / "ext.fits"
    fits.HDUList([fits.PrimaryHDU(header=_header("light", 5.0)),
                  fits.ImageHDU(np.ones((64, 64), np.float32))]).writeto(p)
    return read_frame(p)


# ------------------------------------------------------------------------------------
# I. NaN
# ------------------------------------------------------------------------------------
def _all_nan(env, value=np.nan) -> str:
    return write_float(env.tmp / "nan.fits", np.full(SHAPE, value))


def _mostly_nan(env) -> str:
    data = 1000 + np.random.default_rng(3).normal(0, 5, SHAPE)
    data[:40] = np.nan  # 62 %
    return write_float(env.tmp / "holes.fits", data)


simple("read all-NaN", "read_frame(all NaN)", lambda env: read_frame(_all_nan(env)),
       Raises(FrameError, r"nan.fits: every pixel \(4096\) is NaN or infinite"))
simple("read all-inf", "read_frame(all +inf)", lambda env: read_frame(_all_nan(env, np.inf)),
       Raises(FrameError, r"every pixel .* is NaN or infinite"))
simple("gain on all-NaN", "gain_correction([all NaN])",
       lambda env: gain_correction(env.out, [_all_nan(env)], gain=2, **Q).run(),
       Raises(CalibrationError, r"every frame failed; .*nan.fits: FrameError: .*every pixel"))
simple("combine with all-NaN", "image_combination(bias + all-NaN frame)",
       lambda env: image_combination(env.out, env.bias + [_all_nan(env)], "c.fits").run(),
       Raises(FrameError, r"nan.fits: every pixel is NaN or infinite: no data to combine"))
simple("master with all-NaN", "master_frame(bias + all-NaN frame)",
       lambda env: master_frame(env.out, env.bias + [_all_nan(env)], "m.fits").run(),
       Raises(FrameError, r"nan.fits: every pixel"))
simple("read mostly NaN", "read_frame(62 % NaN)", lambda env: read_frame(_mostly_nan(env)),
       Warns(NonFinitePixelsWarning, r"more than 25% of the pixels are NaN",
             lambda r, env: int(np.isnan(r.data).sum()) == 40 * 64))
simple("gain on mostly NaN", "gain_correction([62 % NaN])",
       lambda env: gain_correction(env.out, [_mostly_nan(env)], gain=2, **Q).run(),
       Warns(NonFinitePixelsWarning, r"NaN",
             lambda r, env: int(read_frame(r[0]).mask.sum()) == 40 * 64
             and np.isfinite(read_frame(r[0]).data).all()))


# ------------------------------------------------------------------------------------
# J. names with spaces and non-ASCII letters
# ------------------------------------------------------------------------------------
def _odd_names(env) -> list:
    return [env.copy(b, f"bias {i} é ü ø.fits") for i, b in enumerate(env.bias)]


simple("trim odd names", "trimmer(['bias 0 é ü ø.fits', ...])",
       lambda env: trimmer(env.out / "sp ace", _odd_names(env), "[1:10,1:20]", **Q).run(),
       Gives(lambda r, env: len(r) == 4 and Path(r[0]).name == "trimmed_bias 0 é ü ø.fits"
             and read_frame(r[0]).shape == (20, 10)
             and np.array_equal(read_frame(r[0]).data, read_frame(env.bias[0]).data[:20, :10])))
simple("master odd names", "master_frame(['bias 0 é ü ø.fits', ...])",
       lambda env: master_frame(env.out / "é", _odd_names(env), "maître.fits").run(),
       Gives(lambda r, env: read_header(r)["IMCMB001"] == "bias 0 e u ?.fits"
             and abs(float(np.median(read_frame(r).data)) - 1000) < 2))
simple("combination odd names", "image_combination(['bias 0 é ü ø.fits', ...], 'c é.fits')",
       lambda env: image_combination(env.out / "é", _odd_names(env), "c é.fits").run(),
       Gives(lambda r, env: Path(r).name == "c é.fits" and "IMCMB004" in read_header(r)))
simple("header text", "header_text('Ångström ø')", lambda env: header_text("Ångström ø"),
       Gives(lambda r, env: r == "Angstrom ?"))


@case("master odd names reused", "master_frame twice on non-ASCII names", Gives(lambda r, env: r[0] == r[1]))
def _reuse_odd(env):
    files = _odd_names(env)
    first = master_frame(env.out, files, "m.fits").run()
    mtime = Path(first).stat().st_mtime_ns
    second = master_frame(env.out, files, "m.fits").run()
    return (mtime, Path(second).stat().st_mtime_ns)


# ------------------------------------------------------------------------------------
# K. disk full during a write (simulated): a clear error, no partial or temporary file
# ------------------------------------------------------------------------------------
def _disk_full(monkeypatch):
    def full(self, *args, **kwargs):
        target = Path(args[0] if args else kwargs["fileobj"])
        target.write_bytes(b"SIMPLE  =" + b" " * 100)  # a partial file, then the error
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fits.HDUList, "writeto", full)


FULL = r"no space left on the disk while writing"
simple("disk full write_frame", "write_frame with ENOSPC",
       lambda env: write_frame(read_frame(env.bias[0]), env.out / "x.fits"), Raises(OSError, FULL))
simple("disk full trimmer", "trimmer with ENOSPC",
       lambda env: trimmer(env.out, env.bias, "[1:10,1:10]", **Q).run(),
       Raises(CalibrationError, r"every frame failed; .*" + FULL))
simple("disk full combination", "image_combination with ENOSPC",
       lambda env: image_combination(env.out, env.bias, "c.fits").run(), Raises(OSError, FULL))
simple("disk full master", "master_frame with ENOSPC",
       lambda env: master_frame(env.out, env.bias, "m.fits").run(), Raises(OSError, FULL))
DISK_FULL = {"disk full write_frame", "disk full trimmer", "disk full combination", "disk full master"}


# ------------------------------------------------------------------------------------
# M. saturation: masked at read, carried through calibration and combination
# ------------------------------------------------------------------------------------
def _saturated(env, i=0, value=65535, **extra) -> str:
    data = np.clip(np.round(1000 + np.random.default_rng(40 + i).normal(0, 5, SHAPE)), 0, 65535)
    data = data.astype(np.uint16)
    data[20, 20] = value  # saturated in every frame
    data[10, 10 + i] = value  # in this frame only
    return write_raw(env.tmp / "sat" / f"sat_{i}.fits", kind="light", exptime=20, data=data, **extra)


simple("saturated at type limit", "read_frame(uint16 frame with 65535 pixels)",
       lambda env: read_frame(_saturated(env)),
       Gives(lambda r, env: int(r.mask.sum()) == 2 and r.mask[20, 20] and r.meta["ADNSATUR"] == 2))
simple("saturated at DATAMAX", "read_frame(DATAMAX=50000, pixels at 50000)",
       lambda env: read_frame(_saturated(env, value=50000, DATAMAX=50000)),
       Gives(lambda r, env: int(r.mask.sum()) == 2))
simple("processed frame not saturated", "read_frame(float frame keeping DATAMAX)",
       lambda env: read_frame(write_float(env.tmp / "f.fits", np.full(SHAPE, 70000.0), DATAMAX=65535)),
       Gives(lambda r, env: r.mask is None and "ADNSATUR" not in r.meta))
simple("saturation through calibration", "trimmer, then subtract_bias",
       lambda env: subtract_bias(env.out / "b", trimmer(env.out / "t", [_saturated(env)],
                                                        "[1:64,1:64]", **Q).run(),
                                 master_frame(env.out / "m", env.bias, "mb.fits").run(), **Q).run(),
       Gives(lambda r, env: read_frame(r[0]).mask[20, 20] and int(read_frame(r[0]).mask.sum()) == 2))
simple("saturation left out of a combination", "image_combination(3 frames, one pixel saturated in one)",
       lambda env: image_combination(env.out, [_saturated(env, i) for i in range(3)], "c.fits").run(),
       Gives(lambda r, env: read_frame(r).mask[20, 20] and not read_frame(r).mask[10, 10]
             and abs(float(read_frame(r).data[10, 10]) - 1000) < 30))
simple("saturation left out of a master", "master_frame(3 frames, one pixel saturated in one)",
       lambda env: master_frame(env.out, [_saturated(env, i) for i in range(3)], "m.fits",
                                frame_type="bias").run(),
       Gives(lambda r, env: read_frame(r).mask[20, 20] and abs(float(read_frame(r).data[10, 11]) - 1000) < 30))


# ------------------------------------------------------------------------------------
# L. the real sample nights (copies)
# ------------------------------------------------------------------------------------
@case("real master negative sigma", "master_frame(3 real HAT-P-27 bias, minclip=-1)",
      Raises(V, r"minclip=-1 sigma is out of range"), data=True)
def _real_sigma(env):
    return master_frame(env.out, env.real(HATP27, "*bias_frame*", 3), "mb.fits", minclip=-1).run()


@case("real master", "master_frame(3 real HAT-P-27 bias)",
      Gives(lambda r, env: 950 < float(np.median(read_frame(r).data)) < 1010
            and read_header(r)["NCOMBINE"] == 3), data=True)
def _real_master(env):
    return master_frame(env.out, env.real(HATP27, "*bias_frame*", 3), "mb.fits").run()


@case("real truncated gzip", "trimmer(real science frames, one gzip cut short)",
      Warns(FrameSkippedWarning, r"cut.FIT.gz|truncated|unreadable", lambda r, env: len(r) == 2), data=True)
def _real_cut(env):
    lights = env.real(HATP27, "*science_exposures*", 3)
    cut = env.truncated(lights[0], keep=0.4, name="cut.FIT.gz")
    return trimmer(env.out, lights[1:] + [cut], "[1:100,1:100]", **Q).run()


@case("real negative EXPTIME", "master_frame(real darks, one copy with EXPTIME=-20)",
      Raises(HeaderValueError, r"EXPTIME=-20.0 is not a usable exposure time"), data=True)
def _real_negative(env):
    darks = env.real(HATP27, "*dark_frame*", 3)
    with fits.open(darks[0], mode="update") as h:
        h[0].header["EXPTIME"] = -20.0
        h[0].header["EXPOSURE"] = -20.0
    return master_frame(env.out, darks, "md.fits").run()


@case("real size mismatch", "subtract_bias(HAT-P-32 650x500 lights, HAT-P-27 1024x1024 master)",
      Raises(CalibrationError, r"is 1024x1024 px but .*HATP-32.* is 650x500 px"), data=True)
def _real_size(env):
    mb = master_frame(env.tmp / "m", env.real(HATP27, "*bias_frame*", 3), "mb.fits").run()
    return subtract_bias(env.out, env.real(HATP32, "*.FITS", 2), mb, **Q).run()


@case("real mixed nights", "image_combination(HAT-P-27 bias + HAT-P-32 light)",
      Raises(FrameError, r"HATP-32.*shape \(500, 650\) differs from \(1024, 1024\)"), data=True)
def _real_mixed(env):
    return image_combination(env.out, env.real(HATP27, "*bias_frame*", 2) + env.real(HATP32, "*.FITS", 1),
                             "c.fits").run()


@case("real no IMAGETYP", "master_frame(HAT-P-32 lights without IMAGETYP)",
      Raises(CalibrationError, r"IMAGETYP"), data=True)
def _real_no_type(env):
    return master_frame(env.out, env.real(HATP32, "*.FITS", 3), "m.fits").run()


@case("real odd name", "trimmer(real science frame copied as 'nuit é 1.FIT.gz')",
      Gives(lambda r, env: Path(r[0]).name == "trimmed_nuit é 1.fits"
            and np.array_equal(read_frame(r[0]).data, env.raw[:50, 10:60])), data=True)
def _real_odd(env):
    src = env.real(HATP27, "*science_exposures*", 1)[0]
    env.raw = np.asarray(read_frame(src).data)
    return trimmer(env.out, [env.copy(src, "nuit é 1.FIT.gz")], "[11:60,1:50]", **Q).run()


@case("real feder cube check", "read_frame(every feder header file)",
      Gives(lambda r, env: all(s is not None and len(s) == 2 for s in r)), data=True)
def _real_feder(env):
    return [read_frame(p).shape for p in env.real(FEDER, "*.fit", 5)]


# ------------------------------------------------------------------------------------
# the runner
# ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Synthetic frames shared by the cases (never modified by them)."""
    root = tmp_path_factory.mktemp("corpus_frames")
    bias = [write_raw(root / "bias" / f"bias_{i:03d}.fits", seed=i) for i in range(4)]
    darks = [write_raw(root / "dark" / f"dark_{i:03d}.fits", level=1100, kind="dark", exptime=20,
                       seed=10 + i) for i in range(3)]
    flats = [write_raw(root / "flat" / f"flat_{i:03d}.fits", level=20000, kind="flat", exptime=5,
                       seed=20 + i) for i in range(3)]
    lights = []
    yy, xx = np.mgrid[0:64, 0:64]
    for i in range(3):
        stars = sum(3000 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.5)
                    for x, y in ((15, 20), (40, 45), (50, 12), (25, 50)))
        data = np.clip(1500 + stars + np.random.default_rng(30 + i).normal(0, 5, SHAPE), 0, 65535)
        lights.append(write_raw(root / "light" / f"light_{i:03d}.fits", kind="light", exptime=20,
                                data=data.astype(np.uint16)))
    return dict(bias=bias, darks=darks, flats=flats, lights=lights)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout(f"case took more than {TIMEOUT} s")


def _check_outcome(c: Case, env: Env, outcome, call):
    if isinstance(outcome, Raises):
        with pytest.raises(outcome.error, match=outcome.match):
            call()
        if outcome.nothing_written and c.name not in DISK_FULL:
            assert [f for f in env.written() if not f.endswith(".jsonl")] == [], \
                f"{c.name}: refused, but files were written"
    elif isinstance(outcome, Warns):
        with pytest.warns(outcome.category, match=outcome.match):
            result = call()
        if outcome.check is not None:
            assert outcome.check(result, env), f"{c.name}: wrong result {result!r}"
    else:
        result = call()
        assert outcome.check(result, env), f"{c.name}: wrong result {result!r}"


@pytest.mark.parametrize("c", CASES, ids=[c.name.replace(" ", "_") for c in CASES])
def test_case(c: Case, frames, tmp_path, monkeypatch):
    """One case of the corpus: the outcome it promises, within the timeout."""
    env = Env(tmp_path, **frames)
    if c.name in DISK_FULL:
        _disk_full(monkeypatch)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstrodartWarning)
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            _check_outcome(c, env, c.outcome, lambda: c.run(env))
    except _Timeout as exc:
        pytest.fail(f"{c.name} ({c.feeds}) hung: {exc}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if c.name in DISK_FULL:  # no partial file and no temporary left anywhere
        left = [f for f in env.written() if not f.endswith(".jsonl")]
        assert left == [], f"{c.name}: left {left}"


def test_corpus_size():
    """At least 100 cases, and enough of them run without the sample data."""
    assert len(CASES) >= 100
    assert sum(not c.data for c in CASES) >= 90
    assert len({c.name for c in CASES}) == len(CASES)
