"""Layer 3: the settings of ``astrodart reduce``, checked before any work, and their TOML file.

:class:`ReduceOptions` is the one list of what a reduction of one's own night can be
told: the command line builds its options from it, ``--config night.toml`` reads them,
``--write-config`` writes a run's full settings back (a short text file a user keeps
with the data and runs again, as Siril scripts are kept), and :meth:`ReduceOptions.check`
turns every value into what the steps need -- or stops with a :class:`UsageError` naming
the option, the value and what is allowed, before a file is read or written.
"""
from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["REDUCE_STEPS", "STEP_ALIASES", "USER_FRAME_TYPES", "ReduceOptions", "UsageError",
           "parse_coord", "read_config"]

#: The steps of ``astrodart reduce``, in order (``--start/--stop/--only`` take these).
REDUCE_STEPS = ("organise", "masters", "calibrate", "cosmics", "quality", "astrometry",
                "align", "stack", "photometry", "lightcurve", "transit")
#: Steps done inside another step's single pass over the frames.
STEP_ALIASES = {"cosmics": "calibrate"}
#: Frame types ``--frame-type GLOB=TYPE`` accepts.
USER_FRAME_TYPES = ("bias", "dark", "flat", "light")


class UsageError(ValueError):
    """A command-line or configuration value that cannot be used (exit status 2)."""


def _opt(default, help: str, flag: str | None = None, config: bool = True,
         metavar: str | None = None):
    return field(default=default, metadata={"help": help, "flag": flag, "config": config,
                                            "metavar": metavar})


def _many(help: str):
    return field(default_factory=list, metadata={"help": help, "flag": None, "config": True})


@dataclass
class ReduceOptions:
    """Everything ``astrodart reduce`` can be told (command line, TOML file or Python).

    Parameters
    ----------
    night : str
        The raw night: a folder in any common layout (astro_reduce's ``DARK/ FLAT/
        ORIGINAL/``, ``uncal_data/DATE/``, folders per type or filter, one folder of mixed
        frames, lights only). Never written.
    out : str
        Output folder: the AstroDART data tree (``reduced_data/DATE/TARGET/``) and
        ``results/``.
    target : str, optional
        Target name (default: the lights' OBJECT, else 'target').
    coord : str, optional
        Target position, any form astropy parses ("14h51m04.2s +05d56m50s",
        "14:51:04.2 +05:56:50", "222.767 5.947" in degrees). Default: the lights' RA/DEC.
    target_xy : str, optional
        "X,Y": 0-based pixel position of the target on the earliest light frame, for
        fields that cannot be plate-solved.
    comparisons : str
        Number of comparison stars to choose, or ";"-separated positions.
    aperture : {'auto', 'fwhm'}
        Light-curve aperture: the radius whose differential light curve scatters least
        (EXOTIC's choice), or 2 x FWHM.
    site : str, optional
        "LAT,LON,HEIGHT_M" (degrees, east-positive; metres) or an observatory name.
        Default: the headers' site keywords.
    obscode : str
        AAVSO observer code written in ``results/aavso_extended.txt`` and
        ``results/aavso_exoplanet.txt`` (default ``TST01``, the code of the AAVSO
        specifications' examples: replace it with your own before uploading).
    transit : str, optional
        "T0,DURATION_H[,PERIOD_D[,T0_ERR_MIN]]": a prior for the transit (BJD_TDB, hours);
        with the period (days) and the error of T0 (minutes), an ephemeris: the transit
        is then fitted with the physical model (batman, emcee).
    frame_type : list of str
        "GLOB=TYPE" overrides of the frame type (TYPE one of bias, dark, flat, light).
    filters : list of str
        Filters to reduce (default: all).
    interpolate_darks : bool
        Dark for a light exposure without darks: least-squares ``t A + B`` per pixel
        from the other exposures (default: scaled from the nearest).
    calibrated : bool
        The lights are calibrated already.
    gain, read_noise : float, optional
        e-/ADU and e- when the headers do not give them.
    saturation : float, optional
        Raw saturation level (ADU).
    start, stop, only : str, optional
        First, last, or the one step to run (names in :data:`REDUCE_STEPS`).
    redo : bool
        Recompute the steps run even when their outputs are current.
    dry_run : bool
        Print the plan and write nothing.
    workers : int, optional
        Worker processes (default: all cores).
    scheduler : str or distributed.Client, optional
        Address of a running dask.distributed scheduler (``tcp://HOST:8786``), or in
        Python a ``Client``: the per-frame steps run on its workers instead of a process
        pool here (:mod:`astrodart.pipeline.cluster`). The workers need astrodart and the
        same file system (the night and ``out`` at the same paths); this is checked
        before any work.
    cosmics, stack : bool
        Clean cosmic rays; stack the aligned frames.
    png : bool
        PNG previews of the masters and of one calibrated frame per filter too; on the
        command line also the night's diagnostics (``results/diagnostics/``).
    keep_intermediate : bool
        Write and keep every intermediate file. By default the night is stacked from
        frames aligned in memory (no aligned file is written) and a run ends by deleting
        what no product needs (:func:`astrodart.pipeline.tidy.remove_intermediate`; a
        re-run remakes it when needed): the sorted copies of the raw frames once
        calibrated, and aligned frames once stacked; ``results/summary.json`` lists what
        went and how to get it back.
    progress : bool
        Progress bars.
    bayer_pattern : str, optional
        CFA pattern of a one-shot colour camera, overriding the frames' ``BAYERPAT``.
    demosaic : {'bilinear', 'malvar', 'menon', 'superpixel'}
        Demosaicing of the calibrated colour frames.
    """

    night: str = _opt("", "the raw night folder (never written)", config=True)
    out: str = _opt("", "output folder: the data tree and results/", config=True)
    target: str | None = _opt(None, "target name (default: the lights' OBJECT)")
    coord: str | None = _opt(None, "target position 'RA DEC' (any form astropy parses; "
                                   "default: the lights' RA/DEC)")
    target_xy: str | None = _opt(None, "X,Y: 0-based pixel position of the target on the "
                                       "earliest light frame (fields that cannot be solved)")
    comparisons: str = _opt("10", "number of comparison stars, or ';'-separated 'RA DEC'")
    aperture: str = _opt("auto", "light-curve aperture: 'auto' (the radius of least scatter "
                                 "among 0.6-3.0 x FWHM) or 'fwhm' (2 x FWHM)")
    site: str | None = _opt(None, "LAT,LON,HEIGHT_M (deg east-positive, m) or an "
                                  "observatory name (default: the headers)")
    obscode: str = _opt("TST01", "AAVSO observer code for results/aavso_*.txt (default "
                                 "TST01, the AAVSO examples' code: replace before uploading)")
    transit: str | None = _opt(None, "T0,DURATION_H[,PERIOD_D[,T0_ERR_MIN]]: transit "
                                "prior (BJD_TDB, hours); with a period, an ephemeris")
    frame_type: list = _many("GLOB=TYPE: frame type override (bias, dark, flat, light)")
    filters: list = _many("filter to reduce (default: all)")
    interpolate_darks: bool = _opt(False, "interpolate master darks in exposure time "
                                          "(t*A+B) for exposures without darks")
    calibrated: bool = _opt(False, "the lights are calibrated already")
    gain: float | None = _opt(None, "gain in e-/ADU when the headers do not give it")
    read_noise: float | None = _opt(None, "read noise in e- when the headers do not give it")
    saturation: float | None = _opt(None, "raw saturation level in ADU")
    start: str | None = _opt(None, "first step to run")
    stop: str | None = _opt(None, "last step to run")
    only: str | None = _opt(None, "the one step to run")
    redo: bool = _opt(False, "recompute the steps run even when their outputs are current")
    dry_run: bool = _opt(False, "print the plan; write nothing", config=False)
    workers: int | None = _opt(None, "worker processes (default: all cores)")
    scheduler: str | None = _opt(None, "address of a running dask.distributed scheduler "
                                       "(tcp://HOST:8786): the per-frame steps run on its "
                                       "workers, which need astrodart and the same file "
                                       "system (default: a process pool here)",
                                 metavar="ADDRESS")
    cosmics: bool = _opt(True, "clean cosmic rays (L.A.Cosmic)", flag="--no-cosmics")
    stack: bool = _opt(True, "stack the aligned frames", flag="--no-stack")
    png: bool = _opt(False, "PNG previews of masters and calibrated frames, and the "
                            "night's diagnostics (results/diagnostics/), too")
    keep_intermediate: bool = _opt(False, "write and keep the aligned frames, and keep the "
                                          "sorted raw copies (by default the night is stacked "
                                          "in memory and the copies deleted once calibrated)")
    progress: bool = _opt(True, "progress bars", flag="--no-progress", config=False)
    bayer_pattern: str | None = _opt(None, "CFA pattern of a colour camera (RGGB, BGGR, GRBG, "
                                           "GBRG), overriding the headers' BAYERPAT")
    demosaic: str = _opt("bilinear", "demosaicing of colour-camera frames: bilinear, malvar, "
                                     "menon or superpixel (2x2, half resolution)")

    # -- checking --------------------------------------------------------------------
    def steps(self) -> list[str]:
        """The steps to run, in order, after ``start``/``stop``/``only``.

        Returns
        -------
        list of str
            Names from :data:`REDUCE_STEPS`.

        Raises
        ------
        UsageError
            An unknown step, ``only`` together with ``start``/``stop``, or ``start`` after
            ``stop``.
        """
        for name in ("start", "stop", "only"):
            v = getattr(self, name)
            if v is not None and v not in REDUCE_STEPS:
                raise UsageError(f"--{name} {v!r}: not a step; the steps are "
                                 f"{', '.join(REDUCE_STEPS)}")
        if self.only and (self.start or self.stop):
            raise UsageError("--only cannot be combined with --start or --stop")
        first = REDUCE_STEPS.index(self.only or self.start or REDUCE_STEPS[0])
        last = REDUCE_STEPS.index(self.only or self.stop or REDUCE_STEPS[-1])
        if first > last:
            raise UsageError(f"--start {self.start} comes after --stop {self.stop}")
        return list(REDUCE_STEPS[first:last + 1])

    def check(self) -> dict:
        """Check every value; return the parsed ones the run needs.

        Returns
        -------
        dict
            ``night``, ``out`` (Paths), ``coord`` (SkyCoord or None), ``target_xy``
            (tuple or None), ``comparisons`` (int or list of SkyCoord), ``site``
            (EarthLocation or None), ``transit`` (dict or None), ``frame_types`` ({glob:
            type}), ``steps`` (list of str).

        Raises
        ------
        UsageError
            The first value that cannot be used, named with what is allowed.
        """
        night = Path(self.night).expanduser()
        if not str(self.night) or not night.exists():
            raise UsageError(f"NIGHT {self.night!r}: no such folder or file")
        if not str(self.out):
            raise UsageError("--out is required: the folder that receives the products")
        out = Path(self.out).expanduser()
        if night.is_dir() and out.resolve().is_relative_to(night.resolve()):
            raise UsageError(f"--out {self.out!r} is inside NIGHT {self.night!r}; the raw "
                             "folder is never written: choose a folder outside it")
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {self.out!r} exists and is not a folder")
        for name, zero_ok in (("gain", False), ("read_noise", True), ("saturation", False)):
            v = getattr(self, name)
            if v is not None and not (float(v) >= 0 if zero_ok else float(v) > 0):
                raise UsageError(f"--{name.replace('_', '-')} {v}: must be "
                                 f"{'>= 0' if zero_ok else '> 0'}")
        if self.aperture not in ("auto", "fwhm"):
            raise UsageError(f"--aperture {self.aperture!r}: use 'auto' or 'fwhm'")
        if self.workers is not None and int(self.workers) < 1:
            raise UsageError(f"--workers {self.workers}: must be at least 1")
        if self.scheduler is not None and not (
                (isinstance(self.scheduler, str) and self.scheduler.strip())
                or hasattr(self.scheduler, "submit")):
            raise UsageError(f"--scheduler {self.scheduler!r}: give the address of a dask "
                             "scheduler (tcp://HOST:8786) or, in Python, a "
                             "dask.distributed.Client")
        from astrodart.color.bayer import BAYER_PATTERNS, DEMOSAIC_METHODS

        if self.bayer_pattern is not None and str(self.bayer_pattern).upper() not in BAYER_PATTERNS:
            raise UsageError(f"--bayer-pattern {self.bayer_pattern!r}: use one of "
                             f"{', '.join(BAYER_PATTERNS)}")
        if self.demosaic not in DEMOSAIC_METHODS:
            raise UsageError(f"--demosaic {self.demosaic!r}: use one of {', '.join(DEMOSAIC_METHODS)}")
        return {"night": night, "out": out, "coord": parse_coord(self.coord, "--coord"),
                "target_xy": _parse_numbers(self.target_xy, "--target-xy", 2, "X,Y"),
                "comparisons": self._comparisons(), "site": self._site(),
                "transit": self._transit(), "frame_types": self._frame_types(),
                "steps": self.steps(), "obscode": self._obscode()}

    def _obscode(self) -> str:
        code = str(self.obscode).strip()
        if not re.fullmatch(r"[A-Za-z0-9]{1,5}", code):
            raise UsageError(f"--obscode {self.obscode!r}: the AAVSO observer code, 1 to 5 "
                             "letters or digits")
        return code.upper()

    def _comparisons(self):
        text = str(self.comparisons).strip()
        if re.fullmatch(r"\d+", text):
            if int(text) < 1:
                raise UsageError(f"--comparisons {text}: at least 1 comparison star")
            return int(text)
        return [parse_coord(c, "--comparisons") for c in text.split(";") if c.strip()]

    def _site(self):
        if self.site is None:
            return None
        from astrodart.photometry.sites import resolve_location

        nums = _parse_numbers(self.site, "--site", (2, 3), "LAT,LON[,HEIGHT_M]", quiet=True)
        try:
            return resolve_location(list(nums) if nums else self.site)
        except (ValueError, KeyError) as exc:
            raise UsageError(f"--site {self.site!r}: {exc}") from None

    def _transit(self):
        vals = _parse_numbers(self.transit, "--transit", (2, 3, 4),
                              "T0,DURATION_H[,PERIOD_D[,T0_ERR_MIN]]")
        if vals is None:
            return None
        t0, hours, *eph = vals
        if not (2_400_000 < t0 < 2_600_000) or not 0 < hours < 24:
            raise UsageError(f"--transit {self.transit!r}: T0 is a BJD_TDB (2400000-2600000) "
                             "and the duration 0-24 hours")
        if eph and not (eph[0] > 0 and (len(eph) < 2 or eph[1] >= 0)):
            raise UsageError(f"--transit {self.transit!r}: the period (days) must be > 0 "
                             "and the error of T0 (minutes) >= 0")
        out = {"t0": t0, "duration": hours / 24.0}
        if eph:  # an ephemeris: the physical transit model is fitted
            out.update(period=eph[0], t0_err=(eph[1] if len(eph) > 1 else 0.0) / 1440.0)
        return out

    def _frame_types(self) -> dict:
        out = {}
        for item in self.frame_type:
            glob, sep, kind = str(item).partition("=")
            kind = kind.strip().lower()
            if not sep or not glob.strip() or kind not in USER_FRAME_TYPES:
                raise UsageError(f"--frame-type {item!r}: use GLOB=TYPE with TYPE one of "
                                 f"{', '.join(USER_FRAME_TYPES)}")
            out[glob.strip()] = kind
        return out

    # -- the TOML file ---------------------------------------------------------------
    @classmethod
    def from_config(cls, path, **overrides) -> "ReduceOptions":
        """Options from a TOML file, with ``overrides`` (the command line) on top.

        Parameters
        ----------
        path : str or pathlib.Path
            TOML file with keys named as the fields (``-`` or ``_``).
        **overrides
            Values that replace the file's.

        Returns
        -------
        ReduceOptions

        Raises
        ------
        UsageError
            Unreadable file or unknown key.
        """
        return cls(**{**read_config(path), **overrides})

    def to_toml(self) -> str:
        """The full settings as TOML (options that cannot be kept in a file excluded).

        Returns
        -------
        str
            One ``key = value`` line per option, with its help as a comment; unset
            options are commented out.
        """
        lines = ["# astrodart reduce settings: run again with `astrodart reduce --config FILE`"]
        for f in dataclasses.fields(self):
            if not f.metadata.get("config", True):
                continue
            value = getattr(self, f.name)
            if f.name == "scheduler" and value is not None and not isinstance(value, str):
                from astrodart.pipeline.cluster import scheduler_address

                value = scheduler_address(value)  # a Client: its address
            lines.append(f"# {f.metadata['help']}")
            if value is None:
                lines.append(f"# {f.name} =")
            else:
                lines.append(f"{f.name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    """A TOML literal for a bool, number, string or list of strings (JSON strings are TOML
    basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def read_config(path) -> dict:
    """The options of a TOML settings file.

    Parameters
    ----------
    path : str or pathlib.Path
        TOML file.

    Returns
    -------
    dict
        Field name -> value (the older ``remove_intermediate = B`` is read as
        ``keep_intermediate = not B``).

    Raises
    ------
    UsageError
        The file is missing or not TOML, or a key is not an option.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--config {str(path)!r}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {str(path)!r}: not valid TOML ({exc})") from None
    names = {f.name for f in dataclasses.fields(ReduceOptions)}
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "remove_intermediate":  # the older, opt-in spelling
            name, value = "keep_intermediate", not value
        if name not in names:
            raise UsageError(f"--config {str(path)!r}: unknown option {key!r}; the options "
                             f"are {', '.join(sorted(names))}")
        out[name] = value
    return out


def parse_coord(text, option: str = "coord"):
    """A sky position from text: sexagesimal (hours for RA) or decimal degrees.

    Parameters
    ----------
    text : str or None
        "14h51m04.2s +05d56m50s", "14:51:04.2 +05:56:50", "14 51 04.2 +05 56 50" or
        "222.7675 5.9472" (degrees); None passes through.
    option : str
        The option's name, for the error message.

    Returns
    -------
    astropy.coordinates.SkyCoord or None
        ICRS position.

    Raises
    ------
    UsageError
        Text astropy cannot read as a position.
    """
    if text is None or str(text).strip() == "":
        return None
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    text = str(text).strip()
    parts = text.replace(",", " ").split()
    try:
        if len(parts) == 2 and all(re.fullmatch(r"[+-]?\d+(\.\d*)?", p) for p in parts):
            return SkyCoord(float(parts[0]) * u.deg, float(parts[1]) * u.deg)
        return SkyCoord(text.replace(",", " "), unit=(u.hourangle, u.deg))
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: not a sky position ({exc}); use e.g. "
                         "'14h51m04.2s +05d56m50s', '14:51:04.2 +05:56:50' or "
                         "'222.7675 5.9472' (degrees)") from None


def _parse_numbers(text, option: str, count, form: str, quiet: bool = False):
    """Comma-separated numbers (``count`` of them, an int or a tuple of allowed counts)."""
    if text is None:
        return None
    counts = (count,) if isinstance(count, int) else tuple(count)
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        if quiet:
            return None
        raise UsageError(f"{option} {text!r}: use {form} (numbers)") from None
    if len(vals) not in counts:
        raise UsageError(f"{option} {text!r}: use {form}")
    if option == "--target-xy" and min(vals) < 0:
        raise UsageError(f"{option} {text!r}: pixel positions are >= 0 (0-based)")
    return vals
