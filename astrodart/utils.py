"""AstroDART-compatible utilities: header editing, organising a night, finding its folders.

``from astrodart.utils import *`` gives the names the AstroDART guides use:
:class:`header_tools`, :class:`data_organiser`, :class:`get_directory` and
:class:`image_combination`. This module is a facade; the code lives in
:mod:`astrodart.pipeline.headers` (over :mod:`astrodart.frames.edit`),
:mod:`astrodart.pipeline.organise` and :mod:`astrodart.combine.files`.

Every name is loaded on first use (PEP 562 module ``__getattr__``): ``import astrodart.utils``
costs a few milliseconds, and astropy, numpy and the step engine load only when a name
is taken from the module (``benchmarks/import_time.py`` measures both).
"""
from __future__ import annotations

import typing as _typing
from importlib import import_module as _import_module

if _typing.TYPE_CHECKING:  # the same names for type checkers and IDEs; loaded lazily at run time
    from astrodart.frames.header import (  # noqa: F401
        FrameHeader,
        HeaderValueError,
        MissingKeywordError,
        normalise_name,
    )
    from astrodart.frames.io import FrameError, atomic_path, find_fits, image_hdu_index  # noqa: F401
    from astrodart.pipeline.headers import header_tools
    from astrodart.pipeline.image_combination import image_combination
    from astrodart.pipeline.organise import (
        RESERVED_DIRS,
        OrganiseReport,
        data_organiser,
        get_directory,
        group_dirname,
    )
    from astrodart.pipeline.runlog import LOG_NAME, log_event  # noqa: F401
    from astrodart.pipeline.step import parse_overwrite  # noqa: F401

__all__ = ["header_tools", "data_organiser", "get_directory", "image_combination",
           "OrganiseReport", "group_dirname", "RESERVED_DIRS"]

#: Where each name of this facade lives: the module imported on its first use.
_HOMES = {
    **dict.fromkeys(("FrameHeader", "HeaderValueError", "MissingKeywordError", "normalise_name"),
                    "astrodart.frames.header"),
    **dict.fromkeys(("FrameError", "atomic_path", "find_fits", "image_hdu_index"),
                    "astrodart.frames.io"),
    "header_tools": "astrodart.pipeline.headers",
    "image_combination": "astrodart.pipeline.image_combination",
    **dict.fromkeys(("RESERVED_DIRS", "OrganiseReport", "data_organiser", "get_directory",
                     "group_dirname"), "astrodart.pipeline.organise"),
    **dict.fromkeys(("LOG_NAME", "log_event"), "astrodart.pipeline.runlog"),
    "parse_overwrite": "astrodart.pipeline.step",
}


def __getattr__(name):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOMES))
