"""Layer 3: one-shot colour (Bayer) cameras in the night runner.

A colour camera's frames are calibrated as raw CFA images (bias, dark and flat of the
same pattern, pixel by pixel; the master flat normalised by one global level, which is
right because the divide happens before demosaicing: each pixel is divided by its own
colour's response). Then, as Siril's one-shot-colour scripts do (``calibrate ... -cfa
-debayer``, then ``register`` and ``stack`` the colour frames), every calibrated light is
demosaiced (:func:`astrodart.color.bayer.demosaic_ccd`) into three colour frames, which
the rest of the night treats as three filters -- quality, alignment and stacking per
channel -- and the three stacks become a colour composite
(:class:`astrodart.pipeline.rgb.rgb_image`).

:func:`demosaic_night` runs at the end of the calibrate step, :func:`colour_composite` at
the end of the stack step (both do nothing for a monochrome night).
"""
from __future__ import annotations

import logging
from pathlib import Path

from astrodart.pipeline.kinds import OneToManyStep

__all__ = ["channel_filter", "demosaic_frames", "demosaic_night", "colour_composite"]

log = logging.getLogger("astrodart")


def channel_filter(filt: str, channel: str) -> str:
    """The filter name of one colour of a CFA filter's frames.

    Parameters
    ----------
    filt : str
        The CFA frames' filter ('none' without a FILTER keyword).
    channel : {'R', 'G', 'B'}
        The colour.

    Returns
    -------
    str
        ``channel`` for a night without a filter, else ``'<filter>_<channel>'``.
    """
    return channel if str(filt).lower() in ("none", "") else f"{filt}_{channel}"


def _pattern_of(path, forced: str | None):
    from astrodart.color.bayer import frame_bayer_pattern
    from astrodart.frames.header import FrameHeader, shape_of

    return frame_bayer_pattern(FrameHeader.from_file(path), bayer_pattern=forced,
                               shape=shape_of(path))


class demosaic_frames(OneToManyStep):  # noqa: N801
    """One-to-many step: each calibrated CFA frame into its R, G and B frames.

    The colour frames of an input ``a.fits`` are ``folders['R'] / 'a.fits'`` and so on,
    each with ``FILTER`` set to its folder's name (the channel filter). Like every step
    they are reused only when their fingerprint (input content, pattern, method, code
    version) matches, made in parallel on the night's pool, and carry provenance.

    Parameters
    ----------
    files : sequence of str
        Calibrated CFA frames.
    folders : dict
        ``{'R': folder, 'G': folder, 'B': folder}`` (created).
    pattern : str
        CFA pattern of the frames (:func:`astrodart.color.bayer.frame_bayer_pattern`).
    method : str
        A method of :data:`astrodart.color.bayer.DEMOSAIC_METHODS`.
    overwrite : bool
        Remake existing colour frames.
    **engine
        ``executor``, ``workers``, ``progress``, ``log_path`` of the step engine.
    """

    name = "demosaic"
    labels = ("R", "G", "B")

    def __init__(self, files, folders: dict, pattern: str, method: str = "bilinear",
                 overwrite=False, **engine):
        self.folders = {ch: Path(folders[ch]) for ch in self.labels}
        for folder in self.folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        super().__init__(self.folders["G"], files, overwrite, **engine)
        self.pattern, self.method = pattern, method

    def parameters(self) -> dict:
        """The pattern and the method (they decide the pixels).

        Returns
        -------
        dict
            ``{'pattern': ..., 'method': ...}``.
        """
        return {"pattern": self.pattern, "method": self.method}

    def output_paths(self, in_path: str) -> list[Path]:
        """The colour frames of one input, one per channel folder.

        Parameters
        ----------
        in_path : str
            The input file.

        Returns
        -------
        list of pathlib.Path
            ``folders[ch] / name`` for R, G, B.
        """
        name = self.output_name(in_path)
        return [self.folders[ch] / name for ch in self.labels]

    def split(self, ccd, path: str) -> dict:
        """Demosaic one frame (:func:`astrodart.color.bayer.demosaic_ccd`).

        Parameters
        ----------
        ccd : astropy.nddata.CCDData
            The calibrated CFA frame.
        path : str
            Its file.

        Returns
        -------
        dict
            ``{'R': CCDData, 'G': CCDData, 'B': CCDData}``.
        """
        from astrodart.color.bayer import demosaic_ccd

        parts = demosaic_ccd(ccd, self.pattern, self.method)
        for ch, part in parts.items():
            part.meta["FILTER"] = (self.folders[ch].name, "colour channel of a CFA frame")
        return parts


def demosaic_night(run) -> None:
    """Demosaic the calibrated lights of every CFA filter of a night into colour frames.

    Parameters
    ----------
    run : astrodart.pipeline.night._NightRun
        The night's state after calibration (``result.calibrated``, ``dirs``); its
        options ``bayer_pattern`` (overrides the headers) and ``demosaic`` (a method of
        :data:`astrodart.color.bayer.DEMOSAIC_METHODS`) are used.

    Returns
    -------
    None
        The colour frames go to ``data_dir/<channel filter>/`` (:class:`demosaic_frames`:
        reused when their fingerprint matches); ``result.filters``, ``result.calibrated`` and
        ``run.dirs`` then name the channels, ``run.colour`` maps each CFA filter to its
        channel filters, and the light curve is measured on the green channel (unless
        another series filter was chosen).

    Raises
    ------
    ValueError
        An unknown pattern or method.
    """
    from astrodart.color.bayer import DEMOSAIC_METHODS

    opt, result = run.options, run.result
    forced = getattr(opt, "bayer_pattern", None)
    method = getattr(opt, "demosaic", None) or "bilinear"
    if method not in DEMOSAIC_METHODS:
        raise ValueError(f"demosaic={method!r}; use one of {', '.join(DEMOSAIC_METHODS)}")
    filters, calibrated, dirs, colour = [], {}, {}, {}
    for filt in result.filters:
        files = result.calibrated[filt]
        pattern = _pattern_of(files[0], forced) if files else None
        if pattern is None:
            filters.append(filt)
            calibrated[filt], dirs[filt] = files, run.dirs.get(filt)
            continue
        names = {ch: channel_filter(filt, ch) for ch in "RGB"}
        folders = {ch: result.data_dir / name for ch, name in names.items()}
        made = demosaic_frames(files, folders, pattern, method, bool(opt.overwrite),
                               **run.engine).run()
        log.info("demosaiced %d of %d %s frames (%s, %s)", len(made), len(files), filt,
                 pattern, method)
        for k, (ch, name) in enumerate(names.items()):
            filters.append(name)
            calibrated[name] = [outs[k] for outs in made]
            dirs[name] = str(folders[ch])
        colour[filt] = {"channels": names, "pattern": pattern, "method": method}
        if getattr(opt, "series_filter", None) in (None, filt):
            opt.series_filter = names["G"]  # the light curve on green: half the pixels
    result.filters, result.calibrated = filters, calibrated
    run.dirs = {f: d for f, d in dirs.items() if d is not None}
    run.colour = colour


def colour_composite(run) -> None:
    """The colour composite of each CFA filter's three channel stacks.

    Parameters
    ----------
    run : astrodart.pipeline.night._NightRun
        The night's state after stacking (``result.stacks``; ``run.colour`` from
        :func:`demosaic_night`).

    Returns
    -------
    None
        ``data_dir/stacks/colour[_<filter>].png`` (8-bit, Lupton asinh stretch, star
        colour balance) and ``.tif`` (16-bit) are written and recorded in
        ``result.products`` as ``colour[_<filter>]_png`` / ``_tiff``.
    """
    from astrodart.pipeline.rgb import rgb_image

    result = run.result
    for filt, info in (getattr(run, "colour", None) or {}).items():
        names = info["channels"]
        if not all(names[ch] in result.stacks for ch in "RGB"):
            log.warning("no colour composite of %s: a channel stack is missing", filt)
            continue
        stem = "colour" if channel_filter(filt, "R") == "R" else f"colour_{filt}"
        img = rgb_image(*(result.stacks[names[ch]] for ch in "RGB"), register="auto")
        folder = result.data_dir / "stacks"
        result.products[f"{stem}_png"] = img.save_png(folder / f"{stem}.png")
        result.products[f"{stem}_tiff"] = img.save_tiff(folder / f"{stem}.tif")
