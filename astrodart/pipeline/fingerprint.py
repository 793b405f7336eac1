"""Layer 3: fingerprints of what made a table, so a re-run reuses it only when nothing changed.

The night runner's measuring steps (the quality table, the plate solutions) keep their
results as ECSV tables; each table carries in its metadata the fingerprint of what made
it: the step, the content identity of every input frame
(:func:`astrodart.frames.identity.content_id`), the parameters and the package version.
:func:`current_table` returns the saved table only when that fingerprint matches the
one of this run, and otherwise says why it is recomputed.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from astropy.table import Table

from astrodart import __version__
from astrodart.frames.identity import content_id

__all__ = ["inputs_fingerprint", "current_table", "save_table"]

log = logging.getLogger("astrodart")


def inputs_fingerprint(step: str, files: Sequence, parameters: dict | None = None) -> str:
    """The fingerprint of a step over input frames with parameters.

    Parameters
    ----------
    step : str
        Step name.
    files : sequence of str or pathlib.Path
        Input frames; their order counts.
    parameters : dict, optional
        JSON-able parameters of the step (values rendered with ``str`` otherwise).

    Returns
    -------
    str
        SHA-1 (hex) of the step, each input's name and content identity, the parameters
        and the astrodart version.
    """
    blob = json.dumps([step, [(Path(f).name, content_id(f)) for f in files],
                       parameters or {}, __version__], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()


def current_table(path, fingerprint: str) -> Table | None:
    """A saved table when it was made by the same inputs and parameters, else None.

    Parameters
    ----------
    path : str or pathlib.Path
        The ECSV table (written by :func:`save_table`).
    fingerprint : str
        This run's :func:`inputs_fingerprint`.

    Returns
    -------
    astropy.table.Table or None
        The table, or None (absent, unreadable or made from other inputs: the reason is
        logged).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        table = Table.read(path, format="ascii.ecsv")
    except Exception as exc:  # a damaged table is recomputed, never trusted
        log.info("%s: unreadable (%s); recomputing", path, exc)
        return None
    if table.meta.get("fingerprint") != fingerprint:
        log.info("%s: made from other inputs or parameters; recomputing", path)
        return None
    return table


def save_table(table: Table, path, fingerprint: str | None = None) -> Path:
    """Write ``table`` as ECSV with its fingerprint, atomically.

    Parameters
    ----------
    table : astropy.table.Table
        The table (its metadata gains ``fingerprint`` when one is given).
    path : str or pathlib.Path
        Destination (parent folders are created); replaced if it exists.
    fingerprint : str, optional
        :func:`inputs_fingerprint` of what made it.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from astrodart.frames.io import atomic_output

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fingerprint is not None:
        table.meta["fingerprint"] = fingerprint
    with atomic_output(path, overwrite=True, fsync=False) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path
