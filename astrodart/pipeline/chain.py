"""Layer 3: the stage-1 chain in one pass per frame, driven by a printable plan.

The order of the per-frame calibrations is data: :data:`CHAIN_ORDER` lists the steps in
the guide's order, each with the plan field that switches it on and the plan fields it
takes. A :class:`CalibrationPlan` (the options of one reduction) picks its steps from
that list; :class:`calibration_chain` runs them on each frame in memory (read once,
write once) with the provenance of the separate steps::

    >>> plan = CalibrationPlan(region='[1:1024,1:1024]', cosmic_rays='lacosmic',
    ...                        masterbias_file='masterbias.fits')  # doctest: +SKIP
    >>> print(plan)  # doctest: +SKIP
    calibration plan, 5 steps per frame:
      1. trimmer                          region='[1:1024,1:1024]'
      2. deviation_calculation            ron=header, gain=header
      ...
    >>> calibration_chain(wdir, files, 'yes', plan=plan).run()  # doctest: +SKIP

To add a per-frame step to the chain: write its Step class, add a field to
:class:`CalibrationPlan` and a :class:`ChainLink` at its place in :data:`CHAIN_ORDER`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from astropy.io import fits

from astrodart import __version__
from astrodart import calibration as cal
from astrodart.calibration.base import CalibrationError
from astrodart.frames.io import read_header
from astrodart.pipeline.calibrate import (
    bad_pixel_correction,
    correct_flatfield,
    subtract_bias,
    subtract_dark,
)
from astrodart.pipeline.calibration_step import (
    CalibrationStep,
    Files,
    Overwrite,
    PathLike,
    _compare_geometry,
    _shape_from_header,
)
from astrodart.pipeline.cosmic_rays import (
    cosmic_ray_laplacian_correction,
    cosmic_ray_median_correction,
)
from astrodart.pipeline.prepare import deviation_calculation, gain_correction, trimmer

__all__ = ["ChainLink", "CHAIN_ORDER", "CalibrationPlan", "calibration_chain"]


@dataclass(frozen=True)
class ChainLink:
    """One step of the chain's order.

    Parameters
    ----------
    step : type
        The :class:`~astrodart.pipeline.calibration_step.CalibrationStep` subclass.
    on : str
        The :class:`CalibrationPlan` field that switches the step on: the step runs when
        the field is neither None nor False (or equals ``value`` when given).
    args : dict
        Step argument -> plan field giving its value.
    value : str, optional
        The value of ``on`` that selects this step (for a choice such as the cosmic-ray
        method).
    extra : str, optional
        A plan field holding a dict of further step arguments.
    """

    step: type
    on: str
    args: dict = field(default_factory=dict)
    value: str | None = None
    extra: str | None = None

    def active(self, plan: "CalibrationPlan") -> bool:
        """Whether a plan runs this step.

        Parameters
        ----------
        plan : CalibrationPlan
            The plan.

        Returns
        -------
        bool
            True when the plan's ``on`` field switches the step on.
        """
        v = getattr(plan, self.on)
        return v == self.value if self.value is not None else v is not None and v is not False

    def options(self, plan: "CalibrationPlan") -> dict:
        """The step's arguments taken from a plan.

        Parameters
        ----------
        plan : CalibrationPlan
            The plan.

        Returns
        -------
        dict
            Keyword arguments of the step's constructor.
        """
        opts = {arg: getattr(plan, name) for arg, name in self.args.items()}
        if self.extra is not None:
            opts.update(getattr(plan, self.extra) or {})
        return opts


#: The per-frame calibrations in the guide's order (cosmic rays before bias and dark).
CHAIN_ORDER: tuple[ChainLink, ...] = (
    ChainLink(trimmer, "region", {"region": "region"}),
    ChainLink(deviation_calculation, "uncertainty", {"ron": "ron", "gain": "gain"}),
    ChainLink(gain_correction, "gain_correct", {"gain": "gain"}),
    ChainLink(cosmic_ray_laplacian_correction, "cosmic_rays", {"gain": "gain",
              "mask_file": "badpixel_file"}, value="lacosmic", extra="cosmic_options"),
    ChainLink(cosmic_ray_median_correction, "cosmic_rays", {"gain": "gain",
              "mask_file": "badpixel_file"}, value="median", extra="cosmic_options"),
    ChainLink(subtract_bias, "masterbias_file", {"masterbias_file": "masterbias_file"}),
    ChainLink(subtract_dark, "masterdark_file", {"masterdark_file": "masterdark_file"}),
    ChainLink(correct_flatfield, "masterflatfield_file",
              {"masterflatfield_file": "masterflatfield_file"}),
    ChainLink(bad_pixel_correction, "repair_bad_pixels", {"badpixel_file": "badpixel_file"}),
)

#: The cosmic-ray methods a plan may name (None: no cosmic-ray step).
_COSMIC_METHODS = (None,) + tuple(k.value for k in CHAIN_ORDER if k.on == "cosmic_rays")


@dataclass
class CalibrationPlan:
    """The per-frame calibrations of one reduction: which steps, in which order, with
    which options. ``print(plan)`` shows them.

    Parameters
    ----------
    region : str, optional
        FITS section ``'[x1:x2,y1:y2]'`` to keep (:class:`trimmer`); None: no trimming.
    ron : float, optional
        Read noise (e-) for the uncertainty plane; None: the header's.
    gain : float, optional
        Gain (e-/ADU); None: the header's.
    uncertainty : bool
        Add the uncertainty plane (:class:`deviation_calculation`).
    gain_correct : bool
        Convert ADU to electrons (:class:`gain_correction`).
    cosmic_rays : {None, 'lacosmic', 'median'}
        Cosmic-ray method (:class:`cosmic_ray_laplacian_correction` or
        :class:`cosmic_ray_median_correction`).
    cosmic_options : dict, optional
        Further options of the cosmic-ray step (e.g. ``{'sigclip': 5}``).
    masterbias_file : str, optional
        Master bias (:class:`subtract_bias`).
    masterdark_file : str or list of str, optional
        Master dark(s) (:class:`subtract_dark`; several are interpolated).
    masterflatfield_file : str, optional
        Master flat (:class:`correct_flatfield`).
    badpixel_file : str, optional
        Bad-pixel map: hidden from the cosmic-ray detection, repaired at the end when
        ``repair_bad_pixels``.
    repair_bad_pixels : bool
        Interpolate the map's pixels as the last step (:class:`bad_pixel_correction`).

    Raises
    ------
    CalibrationError
        Unknown cosmic-ray method, ``repair_bad_pixels`` without ``badpixel_file``, or
        every step switched off.
    """

    region: str | None = None
    ron: float | None = None
    gain: float | None = None
    uncertainty: bool = True
    gain_correct: bool = True
    cosmic_rays: str | None = None
    cosmic_options: dict | None = None
    masterbias_file: PathLike | None = None
    masterdark_file: PathLike | Sequence[PathLike] | None = None
    masterflatfield_file: PathLike | None = None
    badpixel_file: PathLike | None = None
    repair_bad_pixels: bool = False

    def __post_init__(self):
        if self.cosmic_rays not in _COSMIC_METHODS:
            raise CalibrationError(
                f"calibration_chain: cosmic_rays={self.cosmic_rays!r}; use None, 'lacosmic' "
                "or 'median'"
            )
        if self.repair_bad_pixels and self.badpixel_file is None:
            raise CalibrationError("calibration_chain: repair_bad_pixels needs badpixel_file")
        if not self.links():
            raise CalibrationError("calibration_chain: nothing to do (every part is switched off)")

    def links(self) -> list[ChainLink]:
        """The steps this plan runs.

        Returns
        -------
        list of ChainLink
            The active :data:`CHAIN_ORDER` entries, in order.
        """
        return [link for link in CHAIN_ORDER if link.active(self)]

    def steps(self, wdir: PathLike, **engine) -> list[CalibrationStep]:
        """The plan's steps, built for in-memory use by :class:`calibration_chain`.

        Parameters
        ----------
        wdir : str or pathlib.Path
            Working folder given to each step.
        **engine
            Engine options of the steps (e.g. ``progress=False``).

        Returns
        -------
        list of CalibrationStep
            One step object per active link, without input files.
        """
        return [link.step(wdir, [], **link.options(self), **engine) for link in self.links()]

    def describe(self) -> str:
        """The plan as text, for a user to read.

        Returns
        -------
        str
            A title line, then one line per step: its place, its name and its options
            (``header``: read from each frame's header; paths shown as file names).
        """
        lines = [f"calibration plan, {len(self.links())} steps per frame:"]
        for i, link in enumerate(self.links(), 1):
            opts = ", ".join(
                f"{k}={'header' if v is None else _short(v)}"
                for k, v in link.options(self).items()
                if v is not None or k in ("ron", "gain")
            )
            lines.append(f"  {i}. {link.step.name:<32} {opts}".rstrip())
        return "\n".join(lines)

    __str__ = describe


def _short(value) -> str:
    """A path as its file name, a list of paths as a list of names, else ``repr``."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, Path) or (isinstance(value, str) and value.lower().endswith(
            (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz"))):
        return repr(Path(value).name)
    return repr(value)


class calibration_chain(CalibrationStep):  # noqa: N801
    """The stage-1 chain applied to each frame in one pass: read once, write once.

    The same per-frame calibrations as the step classes, in the guide's order
    (:data:`CHAIN_ORDER`), with the same provenance in the header: trim
    (:class:`trimmer`), uncertainty (:class:`deviation_calculation`), ADU -> electrons
    (:class:`gain_correction`), cosmic rays (:class:`cosmic_ray_laplacian_correction` or
    :class:`cosmic_ray_median_correction`), bias (:class:`subtract_bias`), dark
    (:class:`subtract_dark`), flat (:class:`correct_flatfield`) and bad pixels
    (:class:`bad_pixel_correction`). Each part is skipped when its option is None; the
    result equals running the classes one after the other, without the intermediate
    files (and their writes and reads). ``print(chain.plan)`` shows what will run.

    %(step_parameters)s
    plan : CalibrationPlan, optional
        The steps and their options; or give the options below (AstroDART style), from
        which the plan is built (see :class:`CalibrationPlan` for each).
    region : str, optional
        FITS section to keep.
    ron, gain : float, optional
        Read noise (e-) and gain (e-/ADU); default: each frame's header.
    uncertainty, gain_correct : bool
        Add the uncertainty plane; convert ADU to electrons.
    cosmic_rays : {None, 'lacosmic', 'median'}
        Cosmic-ray method.
    cosmic_options : dict, optional
        Options of the cosmic-ray step (e.g. ``{'sigclip': 5}``).
    masterbias_file, masterflatfield_file : str, optional
        Master bias and master flat.
    masterdark_file : str or list of str, optional
        Master dark(s); several are interpolated as in :class:`subtract_dark`.
    badpixel_file : str, optional
        Bad-pixel map (hidden from the cosmic-ray detection; repaired when
        ``repair_bad_pixels``).
    repair_bad_pixels : bool
        Interpolate the map's pixels as the last step.
    %(engine_parameters)s

    Raises
    ------
    CalibrationError
        A bad plan (see :class:`CalibrationPlan`), both ``plan`` and options given, or
        (at ``run``) the region does not fit the frames, or a master's size or binning
        differs from the trimmed frames'.
    """

    name = "calibration_chain"
    prefix = "calibrated_"

    def __init__(
        self,
        wdir: PathLike,
        files: Files,
        overwrite: Overwrite = False,
        *,
        plan: CalibrationPlan | None = None,
        region: str | None = None,
        ron: float | None = None,
        gain: float | None = None,
        uncertainty: bool = True,
        gain_correct: bool = True,
        cosmic_rays: str | None = None,
        cosmic_options: dict | None = None,
        masterbias_file: PathLike | None = None,
        masterdark_file: PathLike | Sequence[PathLike] | None = None,
        masterflatfield_file: PathLike | None = None,
        badpixel_file: PathLike | None = None,
        repair_bad_pixels: bool = False,
        **engine,
    ):
        super().__init__(wdir, files, overwrite, **engine)
        options = dict(
            region=region, ron=ron, gain=gain, uncertainty=uncertainty,
            gain_correct=gain_correct, cosmic_rays=cosmic_rays, cosmic_options=cosmic_options,
            masterbias_file=masterbias_file, masterdark_file=masterdark_file,
            masterflatfield_file=masterflatfield_file, badpixel_file=badpixel_file,
            repair_bad_pixels=repair_bad_pixels,
        )
        if plan is None:
            plan = CalibrationPlan(**options)
        elif any(options[f.name] != f.default for f in dataclasses.fields(CalibrationPlan)):
            raise CalibrationError("calibration_chain: give plan= or the options, not both")
        self.plan = plan
        self.parts = plan.steps(wdir, progress=False, executor="serial")
        self.region = plan.region

    def parameters(self):
        """The options recorded in provenance and the run log.

        Returns
        -------
        dict
            ``{'parts': [step name, ...]}`` in the order applied (each part stamps its own).
        """
        return {"parts": [p.name for p in self.parts]}

    def fingerprint_parameters(self):
        """Every part's parameters: a change in any part makes the outputs stale.

        Returns
        -------
        dict
            ``{part name: its parameters}``, in the order applied.
        """
        return {p.name: p.fingerprint_parameters() for p in self.parts}

    def masters(self):
        """The masters of all parts, recorded in provenance.

        Returns
        -------
        dict
            ``{role: path}`` merged over the parts (bias, darks, flat, bad-pixel map).
        """
        out = {}
        for p in self.parts:
            out.update(p.masters())
        return out

    def check(self):
        """Check the plan against the first readable input before any frame is processed.

        Raises
        ------
        CalibrationError
            No read noise for the uncertainty, a region that does not fit, a master whose
            size or binning differs from the trimmed frame's, or an unusable master flat.
        """
        f, h = self._first_header()
        if h is None:
            return
        for p in self.parts:
            if isinstance(p, deviation_calculation):
                p.files = [f]
                p.check()
        trimmed = self._trimmed_header(f, h)
        where = f + " (after trimming)" if self.region else f
        for p in self.parts:
            if isinstance(p, correct_flatfield):
                p.check_flat()
            for role, m in p.masters().items():
                _compare_geometry(self.name, m, role, read_header(m), where, trimmed)

    def _trimmed_header(self, path: str, header: fits.Header) -> fits.Header:
        """``header`` with the frame size after the chain's trimming."""
        shape = _shape_from_header(header)
        if self.region is not None:
            try:
                rows, cols = cal.parse_section(self.region, shape)
            except CalibrationError as exc:
                raise CalibrationError(f"calibration_chain: {path}: {exc}") from None
            shape = (rows.stop - rows.start, cols.stop - cols.start)
        trimmed = header.copy()
        trimmed["NAXIS2"], trimmed["NAXIS1"] = shape
        return trimmed

    def apply(self, ccd, path):
        """Run every part of the chain on one frame in memory, each stamping provenance.

        Parameters
        ----------
        ccd : astropy.nddata.CCDData
            The raw frame, shape ``(ny, nx)``.
        path : str
            Its file, for messages and the history.

        Returns
        -------
        astropy.nddata.CCDData
            The calibrated frame (shape after trimming), as the steps one by one give it.

        Raises
        ------
        CalibrationError
            Raised by a part (see the step classes); the frame is reported and skipped.
        """
        for p in self.parts:
            ccd = p.process(ccd, path)
            p.stamp(ccd, path)
        return ccd

    def stamp(self, ccd, in_path):
        """The parts stamped their own provenance; add the chain's history line.

        Parameters
        ----------
        ccd : astropy.nddata.CCDData
            The output frame; its ``meta`` becomes a :class:`astropy.io.fits.Header`.
        in_path : str
            The input file, named in the ``HISTORY`` card.
        """
        meta = ccd.meta if isinstance(ccd.meta, fits.Header) else fits.Header(ccd.meta)
        ccd.meta = meta
        meta.add_history(
            f"astrodart {__version__} calibration_chain: "
            f"{', '.join(p.name for p in self.parts)} on {Path(in_path).name}"
        )
