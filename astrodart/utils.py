"""AstroDART-compatible utilities: header editing, organising a night, finding its folders.

``from astrodart.utils import *`` gives the names the AstroDART guides use:
:class:`header_tools`, :class:`data_organiser`, :class:`get_directory` and
:class:`image_combination`. This module is a facade; the code lives in
:mod:`astrodart.pipeline.headers` (over :mod:`astrodart.frames.edit`),
:mod:`astrodart.pipeline.organise` and :mod:`astrodart.combine.files`.
"""
from __future__ import annotations

from astrodart.frames.header import FrameHeader, HeaderValueError, MissingKeywordError, normalise_name  # noqa: F401
from astrodart.frames.io import FrameError, atomic_path, find_fits, image_hdu_index  # noqa: F401
from astrodart.pipeline.headers import header_tools
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


def __getattr__(name):
    # image_combination lives in the stacking layer; imported lazily so that utils stays
    # importable while the combine engine loads its heavier dependencies.
    if name == "image_combination":
        from astrodart.pipeline.image_combination import image_combination
        return image_combination
    raise AttributeError(name)
