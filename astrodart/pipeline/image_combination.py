"""Layer 3: AstroDART's ``image_combination`` -- the one stacking engine as a file-level stage.

``from astrodart.utils import image_combination`` gives :class:`image_combination`, which
writes a master frame with :func:`astrodart.combine.files.combine_files` and records the
run in the target's log (:mod:`astrodart.pipeline.runlog`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from astrodart.combine.files import _check_inputs, _unknown_kwargs, check_resources, combine_files
from astrodart.combine.methods import Rejection, parse_method, parse_rejection
from astrodart.frames.checks import check_number, check_output_dir
from astrodart.pipeline.options import parse_overwrite
from astrodart.pipeline.runlog import find_log_path, log_event

__all__ = ["image_combination"]

log = logging.getLogger("astrodart")


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
    sigma_center : {'median', 'mean'}
        'sigclip' centre, passed to :func:`combine_files`.
    sigma_spread : {'mad_std', 'std'}
        'sigclip' spread, passed to :func:`combine_files`.
    maxiters : int
        'sigclip' passes at most.
    dtype : numpy dtype
        Working and output precision (float32 or float64).
    threads : int, optional
        Reading/combining threads (default: up to 2).
    **unknown
        Rejected: an unknown keyword is a TypeError naming the closest allowed one.

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
        self.wdir = check_output_dir("wdir", wdir, owner="image_combination")
        self.files = _check_inputs(files, "image_combination", "files")
        memory_limit, threads = check_resources(memory_limit, threads, "image_combination")
        self.output_name = str(output_name)
        self.overwrite = parse_overwrite(overwrite)
        self.remove_files = parse_overwrite(remove_files)
        me, sigma = "image_combination", {"minimum": 0, "exclusive": True, "unit": "sigma"}
        for n, v in (("minclip", minclip), ("maxclip", maxclip), ("low_thresh", low_thresh),
                     ("high_thresh", high_thresh)):
            check_number(n, v, allow_none=True, owner=me, **sigma)
        for n, v in (("nlow", nlow), ("nhigh", nhigh)):
            check_number(n, v, minimum=0, integer=True, allow_none=True, owner=me)
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
        parse_method(combining_method)
        self.method = combining_method
        rej = parse_rejection(
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
        unused = _unused_settings(
            rej, minclip=minclip, maxclip=maxclip, low_thresh=low_thresh,
            high_thresh=high_thresh, nlow=nlow, nhigh=nhigh, minmax_clip_min=minmax_clip_min,
            minmax_clip_max=minmax_clip_max,
        )
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


#: The settings each rejection algorithm uses.
_SETTINGS_OF = {
    "sigclip": ("minclip", "maxclip", "low_thresh", "high_thresh"),
    "extrema": ("nlow", "nhigh"),
    "minmax": ("minmax_clip_min", "minmax_clip_max"),
}


def _unused_settings(rej: Rejection, **given) -> list[str]:
    """Names of the settings given (not None) that no chosen algorithm uses."""
    unused = []
    for algorithm, names in _SETTINGS_OF.items():
        if not getattr(rej, algorithm):
            unused += [n for n in names if given.get(n) is not None]
    return unused
