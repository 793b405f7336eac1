"""Layer 3: the JSON-lines run log kept in each target's reduction directory.

Every step appends one record per run: what ran, when, with which parameters and
masters, on which inputs, and what it wrote, reused or failed on.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from astrodart import __version__

__all__ = ["LOG_NAME", "SOURCES_MANIFEST", "SCIENCE_MANIFEST", "find_log_path", "log_event"]

#: Name of the JSON-lines run log kept in each target's reduction directory.
LOG_NAME = "astrodart_log.jsonl"
#: Record of the copies ``data_organiser`` made: destination -> source path, size, mtime, fixes.
SOURCES_MANIFEST = ".astrodart_sources.json"
#: Record of the calibrated science frames ``finalize_stage1`` put in ``<filter>/`` folders.
SCIENCE_MANIFEST = ".astrodart_science.json"
#: Files that mark a target's reduction directory (the log goes there).
_TREE_FILES = (LOG_NAME, SOURCES_MANIFEST, SCIENCE_MANIFEST)


def find_log_path(directory, existing_only: bool = False) -> Path | None:
    """The run log for work in ``directory``.

    Parameters
    ----------
    directory : str or pathlib.Path
        Folder the work happens in.
    existing_only : bool, optional
        Return None instead of a new log's path when no log exists yet (for steps that
        must not create files, e.g. header edits in a raw night).

    Returns
    -------
    pathlib.Path or None
        ``astrodart_log.jsonl`` of the nearest of ``directory`` and its three parents that
        is a target's reduction directory (it holds the log or a record of
        ``data_organiser`` or ``finalize_stage1``): the log lives in the reduction folder,
        also when a step works in a sub-folder such as ``object/<filter>/``. Elsewhere (no
        reduction tree), ``directory/astrodart_log.jsonl`` (None with ``existing_only``).
    """
    directory = Path(directory).resolve()
    for d in [directory, *list(directory.parents)[:3]]:
        if (d / LOG_NAME).exists():
            return d / LOG_NAME
        if not existing_only and any((d / name).exists() for name in _TREE_FILES):
            return d / LOG_NAME
    return None if existing_only else directory / LOG_NAME


def log_event(log_path, **event) -> None:
    """Append one JSON record (with a UTC timestamp and package version) to a run log.

    Appends of one line below the pipe-buffer size are atomic on POSIX, so parallel
    writers do not interleave.

    Parameters
    ----------
    log_path : str or pathlib.Path
        The log file (created with its folder if needed).
    **event
        JSON-serialisable fields of the record (others are written with ``str``).
    """
    record = {"time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "astrodart": __version__, **event}
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
