"""Layer 3: the quality step's star lists, kept beside its table for the alignment.

:func:`astrodart.pipeline.quality.quality_table` detects the stars of every frame (sep);
with ``star_lists=`` it hands them over, and :func:`keep_star_lists` keeps them in
``data_dir/quality/stars.ecsv`` sealed with the quality table's fingerprint
(:mod:`astrodart.pipeline.fingerprint`): they are reused and invalidated with that table,
so the night's alignment (:mod:`astrodart.pipeline.night_stack`) never detects the stars
of a frame a second time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

__all__ = ["STARS_FILE", "keep_star_lists", "load_star_lists", "save_star_lists",
           "star_list_arrays"]

#: The star lists of the quality step, beside ``quality.ecsv``.
STARS_FILE = "stars.ecsv"


def save_star_lists(lists: dict, path, fingerprint: str) -> Path:
    """Write the quality step's star lists as one ECSV table with their fingerprint.

    Parameters
    ----------
    lists : dict
        ``{file: astropy.table.Table}`` with ``x``, ``y``, ``flux``, ``flag`` columns and
        ``meta['shape']`` (as filled by ``quality_table(..., star_lists=...)``).
    path : str or pathlib.Path
        Destination ECSV.
    fingerprint : str
        :func:`astrodart.pipeline.fingerprint.inputs_fingerprint` of the frames measured.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from astrodart.pipeline.fingerprint import save_table

    files = list(lists)
    parts = []
    for i, f in enumerate(files):
        t = Table(lists[f], copy=True)
        t.meta = {}
        t["frame"] = np.full(len(t), i, np.int32)
        parts.append(t)
    table = vstack(parts, metadata_conflicts="silent") if parts else Table(
        names=("x", "y", "flux", "flag", "frame"), dtype=(float, float, float, int, np.int32))
    table.meta = {"files": files, "shapes": [list(lists[f].meta["shape"]) for f in files],
                  "what": "sep detections of the quality step (brightest first per frame): "
                          "x, y 0-based barycentres (px), isophotal flux, sep flag"}
    for c in ("x", "y"):
        table[c].info.format = ".4f"
    table["flux"].info.format = ".6g"
    return save_table(table, path, fingerprint)


def load_star_lists(path, fingerprint: str) -> dict:
    """The star lists saved by :func:`save_star_lists`, when made from the same frames.

    Parameters
    ----------
    path : str or pathlib.Path
        The ECSV table.
    fingerprint : str
        This run's fingerprint of the quality step.

    Returns
    -------
    dict
        ``{file: (x, y, flux, flag, shape)}``; empty when the file is absent, unreadable
        or stale (the frames are then detected again on their pixels).
    """
    from astrodart.pipeline.fingerprint import current_table

    table = current_table(path, fingerprint)
    if table is None:
        return {}
    frame = np.asarray(table["frame"])
    out = {}
    for i, (f, shape) in enumerate(zip(table.meta["files"], table.meta["shapes"])):
        sel = frame == i
        out[f] = tuple(np.asarray(table[c])[sel] for c in ("x", "y", "flux", "flag")) + (
            tuple(shape),)
    return out


def star_list_arrays(entry) -> tuple:
    """A star list as arrays.

    Parameters
    ----------
    entry : astropy.table.Table or tuple
        A table of the quality step (``x``, ``y``, ``flux``, ``flag``, ``meta['shape']``)
        or a tuple as :func:`load_star_lists` gives.

    Returns
    -------
    tuple
        ``(x, y, flux, flag, shape)``: four (n,) arrays and ``(ny, nx)``.
    """
    if isinstance(entry, Table):
        return tuple(np.asarray(entry[c]) for c in ("x", "y", "flux", "flag")) + (
            tuple(entry.meta["shape"]),)
    return entry


def keep_star_lists(folder, fingerprint: str | None, measured: dict,
                    overwrite: bool = False) -> dict:
    """The quality step's star lists: saved when just measured, else the saved ones when
    they belong to the same quality table.

    Parameters
    ----------
    folder : str or pathlib.Path
        The quality folder (``data_dir/quality/``); the lists go to :data:`STARS_FILE`.
    fingerprint : str or None
        The quality table's fingerprint (``table.meta['fingerprint']``, set by
        :func:`astrodart.pipeline.fingerprint.table_of`): the lists are reused and
        invalidated with the table. None: nothing is saved or reused.
    measured : dict
        ``{file: Table}`` filled by ``quality_table(..., star_lists=...)`` in this run;
        empty when the quality table was reused.
    overwrite : bool
        Ignore saved lists.

    Returns
    -------
    dict
        File -> star list (empty when none is current: the frames are then detected on
        their pixels when aligned).
    """
    path = Path(folder) / STARS_FILE
    if measured:
        if fingerprint is not None:
            save_star_lists(measured, path, fingerprint)
        return dict(measured)
    return {} if overwrite or fingerprint is None else load_star_lists(path, fingerprint)
