"""Layer 2: plate solving from star lists, offline first: the backends in one place.

Every backend takes the same input, a star list and an image shape, and returns a
:class:`~astrodart.astrometry.result.SolveResult`; none of them reads or writes the
user's FITS files (that is :mod:`astrodart.pipeline.solve`'s job).

Backends
--------
``'inprocess'``
    The astrometry.net engine compiled into the ``astrometry`` Python package, with
    local index files (:func:`~astrodart.astrometry.engine.solve_in_process`).
``'solve-field'``
    The ``solve-field`` program of a local astrometry.net installation
    (:func:`~astrodart.astrometry.solve_field.solve_with_solve_field`).
``'online'``
    nova.astrometry.net through ``astroquery.astrometry_net``
    (:func:`~astrodart.astrometry.online.solve_online`).

The rooms: :mod:`~astrodart.astrometry.index` (index files and search hints),
:mod:`~astrodart.astrometry.engine`, :mod:`~astrodart.astrometry.solve_field`,
:mod:`~astrodart.astrometry.online` (the backends), :mod:`~astrodart.astrometry.verify`
(WCS verification, SIP significance). This module names them all, so
``from astrodart.astrometry import solve`` reaches every public name.

Coordinates: star positions are 0-based ``(x, y)`` pixel positions (numpy/photutils
convention, ``x`` along NAXIS1), brightest first; shapes are numpy ``(ny, nx)``.
"""
from __future__ import annotations

import shutil
from collections.abc import Sequence

from astrodart.astrometry.engine import solve_in_process
from astrodart.astrometry.index import (
    INDEX_ENV,
    SYSTEM_INDEX_DIRS,
    IndexFile,
    discover_index_files,
    field_size_arcmin,
    index_coverage,
    usable_index_files,
)
from astrodart.astrometry.online import _configured_api_key, solve_online
from astrodart.astrometry.result import BACKENDS, SolveResult
from astrodart.astrometry.solve_field import solve_with_solve_field
from astrodart.astrometry.verify import verify_wcs

__all__ = [
    "BACKENDS",
    "INDEX_ENV",
    "SYSTEM_INDEX_DIRS",
    "IndexFile",
    "SolveResult",
    "available_backends",
    "discover_index_files",
    "field_size_arcmin",
    "index_coverage",
    "solve_in_process",
    "solve_online",
    "solve_with_solve_field",
    "usable_index_files",
    "verify_wcs",
]


def available_backends(index_files: Sequence[IndexFile] | None = None,
                       api_key: str | None = None) -> list[str]:
    """Backends usable here, in the order ``backend='auto'`` tries them.

    Parameters
    ----------
    index_files : sequence of IndexFile, optional
        Default: :func:`discover_index_files`.
    api_key : str, optional
        nova.astrometry.net key (or astroquery's configured one).

    Returns
    -------
    list of str
        ``'inprocess'`` (package and index files present), else ``'solve-field'``
        (program present); then ``'online'`` when an API key is known.
    """
    if index_files is None:
        index_files = discover_index_files()
    out = []
    try:
        import astrometry  # noqa: F401
        has_pkg = True
    except ImportError:
        has_pkg = False
    if has_pkg and index_files:
        out.append("inprocess")
    elif shutil.which("solve-field"):
        out.append("solve-field")
    if api_key or _configured_api_key():
        out.append("online")
    return out

