"""The calibration part of a night run: masters in electrons, calibrated science frames,
whatever calibration frames the night has.

:func:`night_masters` makes the master bias, darks and flats a sorted night has, all in
electrons, a bad-pixel map, and decides which master dark each light exposure uses
(:func:`astrodart.pipeline.interpolated_dark.choose_darks`); the gain and read noise
come from :func:`astrodart.pipeline.night_noise.night_gain_read_noise`;
:func:`calibrate_science` calibrates the science frames with what there is (a night
without bias is calibrated by its darks alone, a filter without flats is not
flat-fielded, lights already calibrated are only put in electrons);
:func:`kept_masters` and :func:`masters_from_calibration` find the masters again in
``calibration/`` once the night is finalized; :func:`saturation_electrons` expresses the
camera's raw saturation level in calibrated electrons. Used by the calibration step of
:data:`astrodart.pipeline.night.NIGHT_STEPS`.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

from astrodart.exceptions import AstrodartWarning, warn
from astrodart.pipeline.night_noise import night_gain_read_noise

__all__ = [
    "MissingCalibrationWarning",
    "calibrate_science",
    "in_electrons_already",
    "kept_masters",
    "masters_from_calibration",
    "night_masters",
    "saturation_electrons",
]

#: ``BUNIT`` spellings of a frame already in electrons.
_ELECTRON_UNITS = ("electron", "electrons", "e-", "e")


class MissingCalibrationWarning(AstrodartWarning):
    """Calibration frames of a kind are missing: the lights are calibrated without them."""


#: Combination of every master: 3-sigma clipped average.
_CLIP = ("average", "sigclip", 3.0, 3.0)


def _exptimes(files: Sequence[str]) -> dict:
    """``{path: exposure time (s) or None}`` from the headers (each read once per process)."""
    return {f: _exptime(str(f), Path(f).stat().st_mtime_ns) for f in files}


@functools.lru_cache(maxsize=4096)
def _exptime(path: str, mtime_ns: int) -> float | None:
    from astrodart.frames.header import FrameHeader

    return FrameHeader.from_file(path).exptime_or_none


def _chain_noise(masters: dict) -> dict:
    """``gain=``/``ron=`` of :class:`calibration_chain`: None (each frame's header) when the
    value came from the header, so a night with GAIN/RON is calibrated as before."""
    out = {}
    for arg, key in (("gain", "gain"), ("ron", "read_noise")):
        value, source = masters.get(key) or (None, "header")
        out[arg] = None if source.startswith("header") else value
    return out


def _flat_darks(tree, darks: list, choices_for, has_bias: bool, notes: list):
    """The master darks given to the flats (all of them, picked or interpolated per frame
    by ``subtract_dark``), or None when they cannot serve the flats' exposures."""
    from astrodart.calibration.base import CalibrationError

    if not darks:
        if not has_bias and any(tree.flatfield()[1]):
            _missing("no bias and no dark frames: the flats keep the bias offset "
                     "(their pixel-to-pixel pattern is diluted by it)", notes)
        return None
    files = [f for g in tree.flatfield()[1] for f in g]
    times = {t for t in _exptimes(files).values() if t is not None}
    try:
        choices_for(times)
    except CalibrationError as exc:
        _missing(f"the flats are not dark-subtracted and keep the bias offset: {exc}", notes)
        return None
    return darks


def _missing(message: str, notes: list) -> None:
    notes.append(message)
    warn(message, MissingCalibrationWarning)


def _badpixel(mdark: dict, mflat: dict, overwrite: bool) -> str | None:
    """Bad-pixel map from the longest bias-subtracted master dark, else from the first
    master flat, else None."""
    from astrodart import calibration as cal
    from astrodart.frames.io import read_header
    from astrodart.pipeline.characterise import bad_pixel_map

    if mdark and cal.is_bias_subtracted(read_header(mdark[max(mdark)])):
        longest = mdark[max(mdark)]
        return bad_pixel_map(Path(longest).parent, longest, overwrite=overwrite).run()
    if mflat:
        first = mflat[sorted(mflat)[0]]
        return bad_pixel_map(Path(first).parent, masterflat_file=first, overwrite=overwrite).run()
    return None


def _drop_pedestal_variance(mdark: dict) -> None:
    """Master darks that hold the bias (a night without bias frames): take the bias
    pedestal's Poisson share out of their uncertainty planes, rewritten in place.

    A raw frame's Poisson term counts the pedestal, which has no photon noise; a bias
    subtraction removes that share (:mod:`astrodart.calibration.base`), but these masters
    never see one. The pedestal is the median of the shortest master (its dark current,
    a few electrons, is the error); each master of ``NCOMBINE`` frames loses
    ``pedestal / NCOMBINE`` of variance, down to ``ADRDNOIS^2 / NCOMBINE``. Done once
    (``ADPEDVAR`` becomes False).
    """
    from astropy.nddata import StdDevUncertainty

    from astrodart import calibration as cal
    from astrodart.frames.io import read_frame, write_frame

    if not mdark:
        return
    pedestal = float(np.nanmedian(read_frame(mdark[min(mdark)]).data))
    for path in mdark.values():
        ccd = read_frame(path)
        var = cal.variance_of(ccd)
        if var is None or not ccd.meta.get(cal.KW_PEDESTAL_VAR, False):
            continue
        n = max(int(ccd.meta.get("NCOMBINE", 1)), 1)
        floor = float(ccd.meta.get(cal.KW_RON_USED, 0.0)) ** 2 / n
        ccd.uncertainty = StdDevUncertainty(np.sqrt(np.maximum(var - pedestal / n, floor)))
        ccd.meta[cal.KW_PEDESTAL_VAR] = (False, "pedestal Poisson share removed")
        write_frame(ccd, path, overwrite=True)


def _light_exptimes(tree, light_exptimes) -> set:
    """The exposure times of the lights: those given plus those of the science headers."""
    files = [f for g in tree.science()[1] for f in g]
    found = {t for t in _exptimes(files).values() if t is not None}
    return {float(t) for t in light_exptimes} | found


def _inventory_notes(bias_files, dark_times, flat_filters, notes: list) -> None:
    """Say what the night lacks: nothing at all (loudly), darks, bias."""
    if not (bias_files or dark_times or flat_filters):
        _missing("no calibration frames at all (no bias, dark or flat): the lights are used "
                 "as they are, only converted to electrons with an uncertainty plane -- no "
                 "bias, dark or flat-field correction", notes)
    elif not dark_times:
        _missing("no dark frames: the lights are not dark-subtracted", notes)
    elif not bias_files:
        notes.append("no bias frames: the darks keep the bias and the lights are calibrated "
                     "by the darks alone (dark-only calibration)")


def night_masters(tree, engine: dict, overwrite: bool, *, interpolate_darks: bool = False,
                  light_exptimes: Sequence[float] = (), gain: float | None = None,
                  read_noise: float | None = None) -> dict:
    """The masters a night has (bias, darks, flats, in electrons), a bad-pixel map, the
    master dark of each light exposure, and the gain and read noise with their sources.

    Each master is a 3-sigma clipped average (``master_frame``) of frames first put in
    electrons with their uncertainty (``calibration_chain``). With bias frames the darks
    are bias-subtracted and scaled to other exposures (or interpolated with
    ``interpolate_darks``); without them the darks keep the bias and serve only their own
    exposure, or, with two exposure times or more, the line ``D = t A + B`` whose ``B``
    holds the bias (:func:`~astrodart.pipeline.interpolated_dark.choose_darks`). Flats
    have the bias and the darks removed as far as the night allows. The bad-pixel map
    comes from the longest bias-subtracted master dark, else from the first master flat.
    What is missing is said once (:class:`MissingCalibrationWarning`); the decisions are
    listed in ``notes``. Everything is decided (and refused) before any master is made.

    Parameters
    ----------
    tree : astrodart.pipeline.organise.get_directory
        The sorted night (``bias/``, ``dark/<exptime>/``, ``flat/<filter>/``,
        ``object/<filter>/``).
    engine : dict
        Step-engine options (``executor``, ``progress``).
    overwrite : bool
        Redo steps whose outputs exist.
    interpolate_darks : bool
        For a light exposure without darks, interpolate the masters of the other
        exposures (least squares ``t A + B``, as astro_reduce) rather than scale one.
    light_exptimes : sequence of float
        Light exposure times (s) to prepare darks for, besides those of the science
        frames' headers.
    gain : float, optional
        The user's gain (e-/ADU), see
        :func:`astrodart.pipeline.night_noise.night_gain_read_noise`.
    read_noise : float, optional
        The user's read noise (e-), likewise.

    Returns
    -------
    dict
        ``{'bias': path or None, 'dark': {exptime_s: path}, 'flat': {filter: path},
        'badpixel': path or None, 'dark_for': {light_exptime: {'path': str or None,
        'how': 'same exposure' | 'scaled from 20 s' | 'interpolated from 2 masters
        (10, 30 s)' | 'no dark'}}, 'gain': (e-/ADU, source), 'read_noise': (e-, source),
        'notes': [str, ...]}``.

    Raises
    ------
    CalibrationError
        A light exposure that only a master dark holding the bias of another exposure
        could serve (a night without bias), before any master is made.
    ValueError
        ``gain`` or ``read_noise`` out of range.
    """
    from astrodart.pipeline.interpolated_dark import choose_darks, darks_for_exposures

    bias_dir, bias_files = tree.bias()
    dark_dirs, dark_files, dark_times = tree.dark()
    flat_filters = tree.flatfield()[2]
    has_bias = bool(bias_files)
    choices = choose_darks(dark_times, _light_exptimes(tree, light_exptimes), has_bias,
                           interpolate_darks)
    noise = night_gain_read_noise(tree, gain, read_noise)
    notes = list(noise["notes"])
    _inventory_notes(bias_files, dark_times, flat_filters, notes)
    electrons = {"uncertainty": True, "gain_correct": True, **_chain_noise(noise), **engine}
    mbias = _master(bias_dir, bias_files, "masterbias.fits", "bias", electrons,
                    overwrite) if has_bias else None
    mdark = {float(t): _master(d, files, f"masterdark_{t:g}s.fits", "dark", electrons,
                               overwrite, masterbias_file=mbias)
             for d, files, t in zip(dark_dirs, dark_files, dark_times)}
    if not has_bias:
        _drop_pedestal_variance(mdark)
    darks = _flat_darks(tree, [mdark[t] for t in sorted(mdark)],
                        lambda ts: choose_darks(dark_times, ts, has_bias), has_bias, notes)
    mflat = {f: _master(d, files, f"masterflat_{f}.fits", "flat", electrons, overwrite,
                        masterbias_file=mbias, masterdark_file=darks)
             for d, files, f in zip(*tree.flatfield())}
    bpm = _badpixel(mdark, mflat, overwrite)
    wdir = Path(mdark[max(mdark)]).parent if mdark else tree.data_dir
    dark_for = darks_for_exposures(choices, mdark, wdir, overwrite)
    notes += [f"lights of {t:g} s: master dark {Path(d['path']).name} ({d['how']})"
              if d["path"] else f"lights of {t:g} s: no master dark" for t, d in dark_for.items()]
    return {"bias": mbias, "dark": mdark, "flat": mflat, "badpixel": bpm,
            "dark_for": dark_for, "gain": noise["gain"], "read_noise": noise["read_noise"],
            "notes": notes}


def _master(wdir, files, name, kind, electrons, overwrite, **masters) -> str:
    """One master: the frames through ``calibration_chain``, then ``master_frame``."""
    from astrodart.pipeline.chain import calibration_chain
    from astrodart.pipeline.masters import master_frame

    out = calibration_chain(wdir, files, overwrite, **masters, **electrons).run()
    return master_frame(wdir, out, name, *_CLIP, frame_type=kind, overwrite=overwrite).run()


def _is_listed(spec) -> callable:
    """``already_calibrated`` as a test on a path: True/False for all, or membership of
    a collection of paths (matched by resolved path or by file name)."""
    if isinstance(spec, bool) or spec is None:
        return lambda p: bool(spec)
    paths = {str(Path(p).resolve()) for p in spec}
    names = {Path(p).name for p in spec}
    return lambda p: str(Path(p).resolve()) in paths or Path(p).name in names


def in_electrons_already(path: str) -> bool:
    """Whether a frame's header says its pixels are electrons already.

    Header provenance decides: ``BUNIT`` spelled as electrons (astrodart writes it with
    every frame), or ccdproc's ``gain_correct`` record; otherwise the frame is taken to
    be in ADU. (astrodart's ``ADGAIN`` does not decide: the uncertainty step writes it
    on frames still in ADU.)

    Parameters
    ----------
    path : str
        The frame.

    Returns
    -------
    bool
        True when the frame is in electrons.
    """
    from astrodart.frames.io import read_header

    h = read_header(path)
    unit = str(h.get("BUNIT", "")).strip().lower()
    return unit in _ELECTRON_UNITS or any(k.lower() == "gain_correct" for k in h)


def _by_exptime(files: Sequence[str], dark_for: dict) -> dict:
    """Files grouped by the master dark of their exposure (one group without darks)."""
    if not dark_for:
        return {None: list(files)} if files else {}
    groups: dict = {}
    for f, t in _exptimes(files).items():
        key = next((k for k in dark_for if t is not None and np.isclose(k, t, rtol=1e-3)),
                   None)
        groups.setdefault(key, []).append(f)
    return groups


def _dark_of(masters: dict, exptime) -> str | list | None:
    """The master dark(s) for lights of ``exptime``: the one decided by
    :func:`night_masters`, else every master (``subtract_dark`` picks or interpolates)."""
    chosen = (masters.get("dark_for") or {}).get(exptime)
    if chosen is not None:
        return chosen["path"]
    darks = [masters["dark"][t] for t in sorted(masters.get("dark") or {})]
    return darks or None


def _calibrate_as_they_are(d, files, cosmic_rays, noise, engine, overwrite) -> str:
    """Lights already calibrated: uncertainty, electrons (only those still in ADU) and
    cosmic rays; no bias, dark or flat. Returns a note saying what was done."""
    from astrodart.pipeline.chain import calibration_chain

    adu = [f for f in files if not in_electrons_already(f)]
    for group, to_electrons in ((adu, True), ([f for f in files if f not in adu], False)):
        if group:
            calibration_chain(d, group, overwrite, uncertainty=True,
                              gain_correct=to_electrons, cosmic_rays=cosmic_rays,
                              compress_planes=True, **noise, **engine).run()
    return (f"{len(files)} lights in {Path(d).name} already calibrated: no bias, dark or flat "
            f"applied; {len(adu)} converted from ADU to electrons (no BUNIT=electron in their "
            f"headers), {len(files) - len(adu)} already in electrons (BUNIT)")


def calibrate_science(tree, masters: dict, filters, cosmic_rays, engine, overwrite, *,
                      already_calibrated=False) -> list:
    """Calibrate the science frames of the chosen filters with the night's masters.

    Uncertainty, gain (electrons), cosmic rays, then whatever masters the night has:
    bias, the master dark :func:`night_masters` chose for the frame's exposure
    (``masters['dark_for']``; every master when the exposure is not there), the flat of
    the frame's filter and the bad-pixel mask, by ``calibration_chain`` (one read and one
    write a frame, the planes compressed there, in parallel over the frames on the
    engine's pool). A filter without
    a master flat is not flat-fielded (one :class:`MissingCalibrationWarning` naming it,
    unless the night has no calibration frames at all). Lights already calibrated get no
    bias, dark or flat: only the uncertainty plane, cosmic rays, and the conversion to
    electrons when their header does not say they are in electrons already
    (:func:`in_electrons_already`); what was done is appended to ``masters['notes']``.

    Parameters
    ----------
    tree : astrodart.pipeline.organise.get_directory
        The sorted night (``object/<filter>/``).
    masters : dict
        As :func:`night_masters` returns.
    filters : sequence of str
        Filters to calibrate.
    cosmic_rays : {'lacosmic', 'median', None}
        Cosmic-ray method.
    engine : dict
        Step-engine options (``executor``, ``progress``).
    overwrite : bool
        Redo steps whose outputs exist.
    already_calibrated : bool or collection of str
        True: every light is calibrated already; or the paths (raw or sorted copies,
        matched by file name) of those that are.

    Returns
    -------
    list of str
        The science folders calibrated.
    """
    from astrodart.pipeline.chain import calibration_chain

    dirs = []
    listed = _is_listed(already_calibrated)
    noise = _chain_noise(masters)
    anything = masters.get("bias") or masters.get("dark") or masters.get("flat")
    for d, files, f in zip(*tree.science()):
        if f not in filters:
            continue
        flat = (masters.get("flat") or {}).get(f)
        raw = [p for p in files if not listed(p)]
        if flat is None and anything and raw:
            warn(f"no flats in filter {f!r}: its {len(raw)} lights are not flat-fielded",
                 MissingCalibrationWarning)
        for t, group in _by_exptime(raw, masters.get("dark_for")).items():
            calibration_chain(d, group, overwrite, uncertainty=True, gain_correct=True,
                              cosmic_rays=cosmic_rays, masterbias_file=masters.get("bias"),
                              masterdark_file=_dark_of(masters, t),
                              masterflatfield_file=flat, badpixel_file=masters.get("badpixel"),
                              compress_planes=True, **noise, **engine).run()
        done = [p for p in files if listed(p)]
        if done:
            note = _calibrate_as_they_are(d, done, cosmic_rays, noise, engine, overwrite)
            masters.setdefault("notes", []).append(note)
        dirs.append(d)
    return dirs


def kept_masters(calibration: dict, masters: dict) -> dict:
    """The masters' copies in ``calibration/`` (what ``finalize_stage1`` keeps).

    Parameters
    ----------
    calibration : dict
        File name -> path of ``calibration/`` (``get_directory(...).calibration()``).
    masters : dict
        As :func:`night_masters` returns (paths in the working folders; None entries
        stay None).

    Returns
    -------
    dict
        The same structure with each path replaced by its kept copy (the path itself
        when no copy was found); ``gain``, ``read_noise`` and ``notes`` passed through.
    """
    by_name = {Path(p).name: p for p in calibration.values()}

    def kept(p):
        if p is None:
            return None
        name = Path(p).name
        hits = [v for k, v in by_name.items() if k == name or k.endswith("_" + name)]
        parent = Path(p).parent.name
        exact = [v for v in hits if Path(v).name.startswith(parent + "_")]
        return (exact or hits or [p])[0]

    out = dict(masters)
    out.update({"bias": kept(masters.get("bias")),
                "dark": {t: kept(p) for t, p in (masters.get("dark") or {}).items()},
                "flat": {f: kept(p) for f, p in (masters.get("flat") or {}).items()},
                "badpixel": kept(masters.get("badpixel")),
                "dark_for": {t: {**v, "path": kept(v["path"])}
                             for t, v in (masters.get("dark_for") or {}).items()}})
    return out


def saturation_electrons(saturation_adu: float, masters: dict, filters) -> float:
    """The raw saturation level (ADU) as a calibrated value (electrons).

    The lowest level a saturated pixel can show after the offset is removed and the
    frame divided by the normalised flat: ``(saturation_adu x gain - offset) / f99.9``
    with ``offset`` the median of the master bias (else of the shortest master dark when
    it still holds the bias, else 0) and ``f99.9`` the 99.9th percentile of the
    normalised flats of ``filters`` that have one (at least 1). The gain is the offset
    master's ``ADGAIN``, else ``masters['gain']``, else 1.

    Parameters
    ----------
    saturation_adu : float
        Raw saturation level of the camera (ADU).
    masters : dict
        As :func:`night_masters` returns (bias, darks and flats are read).
    filters : sequence of str
        Filters whose flats count.

    Returns
    -------
    float
        Saturation level in calibrated electrons.
    """
    from astrodart import calibration as cal
    from astrodart.calibration.flat import flat_normalisation
    from astrodart.frames.header import FrameHeader
    from astrodart.pipeline.calibration_step import load_master

    darks = masters.get("dark") or {}
    offset = masters.get("bias") or (darks[min(darks)] if darks else None)
    ref = load_master(offset) if offset else None
    gain = (masters.get("gain") or (1.0, ""))[0]
    if ref is not None:
        gain = float(ref.meta.get("ADGAIN") or FrameHeader(ref.meta).gain or gain)
    pedestal = 0.0
    if ref is not None and (masters.get("bias") or not cal.is_bias_subtracted(ref.meta)):
        pedestal = float(np.nanmedian(ref.data))
    level = saturation_adu * gain - pedestal
    top = 1.0
    for f in filters:
        if f in (masters.get("flat") or {}):
            flat = np.asarray(load_master(masters["flat"][f]).data, float)
            top = max(top, float(np.nanpercentile(flat / flat_normalisation(flat), 99.9)))
    return level / top


def masters_from_calibration(calibration: dict) -> dict:
    """Masters of a finalized night found again in ``calibration/``.

    Parameters
    ----------
    calibration : dict
        File name -> path of ``calibration/`` (``get_directory(...).calibration()``).

    Returns
    -------
    dict
        As :func:`night_masters` returns (dark exposure times read from the headers;
        interpolated darks count as darks of their exposure; ``dark_for`` empty; gain
        and read noise from the masters' ``ADGAIN``/``ADRDNOIS`` when recorded, else
        None; no notes).
    """
    from astrodart import calibration as cal
    from astrodart.frames.io import read_header
    from astrodart.frames.header import FrameHeader

    out = {"bias": None, "dark": {}, "flat": {}, "badpixel": None, "dark_for": {},
           "gain": None, "read_noise": None, "notes": []}
    for name, path in sorted(calibration.items()):
        if name.endswith("masterbias.fits"):
            out["bias"] = path
        elif "masterdark_" in name:
            out["dark"][FrameHeader(read_header(path), path).exptime] = path
        elif "masterflat_" in name:
            out["flat"][name.split("masterflat_", 1)[1].removesuffix(".fits")] = path
        elif "badpixel" in name:
            out["badpixel"] = path
    first = out["bias"] or next(iter(out["dark"].values()), None)
    if first:
        h = read_header(first)
        for key, kw in (("gain", cal.KW_GAIN_USED), ("read_noise", cal.KW_RON_USED)):
            if h.get(kw) is not None:
                out[key] = (float(h[kw]), f"{kw} of {Path(first).name}")
    return out
