"""The calibration part of a night run: masters in electrons, calibrated science frames.

:func:`night_masters` makes the master bias, darks (bias-subtracted) and flats of a
sorted night, all in electrons, and a bad-pixel map; :func:`calibrate_science` calibrates
the science frames with them; :func:`kept_masters` and :func:`masters_from_calibration`
find the masters again in ``calibration/`` once the night is finalized;
:func:`saturation_electrons` expresses the camera's raw saturation level in calibrated
electrons. Used by the calibration step of :data:`astrodart.pipeline.night.NIGHT_STEPS`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "calibrate_science",
    "kept_masters",
    "masters_from_calibration",
    "night_masters",
    "saturation_electrons",
]


def night_masters(tree, engine: dict, overwrite: bool) -> dict:
    """Master bias, darks (bias-subtracted) and flats, all in electrons, and a bad-pixel map.

    Each master is a 3-sigma clipped average (``master_frame``) of frames first put in
    electrons with their uncertainty (``calibration_chain``); darks have the master bias
    subtracted, flats the bias and the darks (interpolated in exposure time). The
    bad-pixel map is made from the longest master dark.

    Parameters
    ----------
    tree : astrodart.pipeline.organise.get_directory
        The sorted night (``bias/``, ``dark/<exptime>/``, ``flat/<filter>/``).
    engine : dict
        Step-engine options (``executor``, ``progress``).
    overwrite : bool
        Redo steps whose outputs exist.

    Returns
    -------
    dict
        ``{'bias': path, 'dark': {exptime_s: path}, 'flat': {filter: path},
        'badpixel': path}``.

    Raises
    ------
    FileNotFoundError
        The night has no bias or no dark frames.
    """
    from astrodart.pipeline.chain import calibration_chain
    from astrodart.pipeline.characterise import bad_pixel_map
    from astrodart.pipeline.masters import master_frame

    clip = ("average", "sigclip", 3.0, 3.0)
    bias_dir, bias_files = tree.bias()
    if not bias_files:
        raise FileNotFoundError(f"{tree.data_dir}: no bias frames (bias/); the night needs them")
    electrons = {"uncertainty": True, "gain_correct": True, **engine}
    b = calibration_chain(bias_dir, bias_files, overwrite, **electrons).run()
    mbias = master_frame(bias_dir, b, "masterbias.fits", *clip, frame_type="bias",
                         overwrite=overwrite).run()
    mdark = {}
    for d, files, t in zip(*tree.dark()):
        out = calibration_chain(d, files, overwrite, masterbias_file=mbias, **electrons).run()
        mdark[float(t)] = master_frame(d, out, f"masterdark_{t:g}s.fits", *clip,
                                       frame_type="dark", overwrite=overwrite).run()
    if not mdark:
        raise FileNotFoundError(f"{tree.data_dir}: no dark frames (dark/<exptime>/)")
    darks = [mdark[t] for t in sorted(mdark)]
    mflat = {}
    for d, files, f in zip(*tree.flatfield()):
        out = calibration_chain(d, files, overwrite, masterbias_file=mbias,
                                masterdark_file=darks, **electrons).run()
        mflat[f] = master_frame(d, out, f"masterflat_{f}.fits", *clip, frame_type="flat",
                                overwrite=overwrite).run()
    longest = Path(mdark[max(mdark)]).parent
    bpm = bad_pixel_map(longest, mdark[max(mdark)], overwrite=overwrite).run()
    return {"bias": mbias, "dark": mdark, "flat": mflat, "badpixel": bpm}


def calibrate_science(tree, masters: dict, filters, cosmic_rays, engine, overwrite) -> list:
    """Calibrate the science frames of the chosen filters with the night's masters.

    Uncertainty, gain (electrons), cosmic rays, bias, dark (interpolated in exposure
    time), flat of the frame's filter and the bad-pixel mask, by ``calibration_chain``.

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

    Returns
    -------
    list of str
        The science folders calibrated.

    Raises
    ------
    FileNotFoundError
        Science frames in a filter without flats.
    """
    from astrodart.pipeline.chain import calibration_chain

    dirs = []
    darks = [masters["dark"][t] for t in sorted(masters["dark"])]
    for d, files, f in zip(*tree.science()):
        if f not in filters:
            continue
        if f not in masters["flat"]:
            raise FileNotFoundError(f"{tree.data_dir}: science frames in filter {f!r} but no "
                                    f"flats of that filter (flat/{f}/)")
        calibration_chain(d, files, overwrite, uncertainty=True, gain_correct=True,
                          cosmic_rays=cosmic_rays, masterbias_file=masters["bias"],
                          masterdark_file=darks, masterflatfield_file=masters["flat"][f],
                          badpixel_file=masters["badpixel"], **engine).run()
        dirs.append(d)
    return dirs


def kept_masters(calibration: dict, masters: dict) -> dict:
    """The masters' copies in ``calibration/`` (what ``finalize_stage1`` keeps).

    Parameters
    ----------
    calibration : dict
        File name -> path of ``calibration/`` (``get_directory(...).calibration()``).
    masters : dict
        As :func:`night_masters` returns (paths in the working folders).

    Returns
    -------
    dict
        The same structure with each path replaced by its kept copy (the path itself
        when no copy was found).
    """
    by_name = {Path(p).name: p for p in calibration.values()}

    def kept(p):
        name = Path(p).name
        hits = [v for k, v in by_name.items() if k == name or k.endswith("_" + name)]
        parent = Path(p).parent.name
        exact = [v for v in hits if Path(v).name.startswith(parent + "_")]
        return (exact or hits or [p])[0]

    return {"bias": kept(masters["bias"]),
            "dark": {t: kept(p) for t, p in masters["dark"].items()},
            "flat": {f: kept(p) for f, p in masters["flat"].items()},
            "badpixel": kept(masters["badpixel"])}


def saturation_electrons(saturation_adu: float, masters: dict, filters) -> float:
    """The raw saturation level (ADU) as a calibrated value (electrons).

    The lowest level a saturated pixel can show after bias subtraction and division by
    the normalised flat: ``(saturation_adu x gain - median master bias) / f99.9`` with
    ``f99.9`` the 99.9th percentile of the normalised flats (at least 1).

    Parameters
    ----------
    saturation_adu : float
        Raw saturation level of the camera (ADU).
    masters : dict
        As :func:`night_masters` returns (bias and flats are read).
    filters : sequence of str
        Filters whose flats count.

    Returns
    -------
    float
        Saturation level in calibrated electrons.
    """
    from astrodart.calibration.flat import flat_normalisation
    from astrodart.pipeline.calibration_step import load_master

    bias = load_master(masters["bias"])
    gain = float(bias.meta.get("ADGAIN") or bias.meta.get("GAIN") or 1.0)
    level = saturation_adu * gain - float(np.nanmedian(bias.data))
    top = 1.0
    for f in filters:
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
        As :func:`night_masters` returns (dark exposure times read from the headers).
    """
    from astrodart.frames.io import read_header
    from astrodart.frames.header import FrameHeader

    out = {"bias": None, "dark": {}, "flat": {}, "badpixel": None}
    for name, path in sorted(calibration.items()):
        if name.endswith("masterbias.fits"):
            out["bias"] = path
        elif "masterdark_" in name:
            out["dark"][FrameHeader(read_header(path), path).exptime] = path
        elif "masterflat_" in name:
            out["flat"][name.split("masterflat_", 1)[1].removesuffix(".fits")] = path
        elif "badpixel" in name:
            out["badpixel"] = path
    return out
