"""Layer 3: what a finished reduction can give back: disk used, intermediates removed.

:func:`disk_usage` measures a reduction against its raw night; :func:`remove_intermediate`
deletes, in a data tree, only files astrodart wrote that no later step needs -- each only
once what replaces it exists (the demo's and ``astrodart reduce``'s
``--remove-intermediate``).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["disk_usage", "remove_intermediate"]


def disk_usage(root, night) -> tuple[int, int]:
    """Disk used by a demo run, against the raw night it started from.

    Parameters
    ----------
    root : str or pathlib.Path
        The project folder holding ``uncal_data/`` and ``reduced_data/``.
    night : str or pathlib.Path
        The raw night folder (``uncal_data/YYMMDD/``).

    Returns
    -------
    raw_bytes : int
        Bytes of the files in ``night``.
    total_bytes : int
        Bytes of the files in ``root/uncal_data`` and ``root/reduced_data`` together.
    """
    def size(folder):
        return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    root = Path(root)
    return size(night), size(root / "uncal_data") + size(root / "reduced_data")


def remove_intermediate(root, raw_elsewhere: bool = False) -> tuple[list, int]:
    """Delete the products of a demo run that no later step needs; only files astrodart wrote.

    Removed, each only when what replaces it exists: the aligned frames
    (``<night>/aligned/``) once a stack is in ``<night>/stacks/``; the organised copies of
    the raw frames (``<night>/{bias,dark,flat,object}/``, byte-for-byte the files of
    ``uncal_data/<date>/``, so a new ``data_organiser`` run restores them) once the
    calibrated frames and the masters are in ``<night>/<filter>/`` and
    ``<night>/calibration/``; the detector lab's bias-subtracted and calibrated frame
    folders (its masters and bad-pixel maps stay). Calibrated frames, masters, stacks,
    tables, figures and notebooks are kept.

    Parameters
    ----------
    root : str or pathlib.Path
        Project folder holding ``uncal_data/`` and ``reduced_data/``.
    raw_elsewhere : bool
        The raw night is kept outside ``root`` (``astrodart reduce`` sorts copies of a
        night folder it never writes): the sorted copies go once calibrated, without
        comparing them with ``uncal_data/``.

    Returns
    -------
    removed : list of pathlib.Path
        The files deleted.
    nbytes : int
        Their total size.
    """
    from astrodart.pipeline.organise import get_directory

    root = Path(root)
    doomed = []
    for night in sorted(p for p in (root / "reduced_data").glob("[0-9]" * 6 + "/*") if p.is_dir()):
        if any((night / "stacks").glob("*.fit*")):
            doomed += (night / "aligned").rglob("aligned_*.fit*")
        tree = get_directory(str(night) + "/")
        _, final, _ = tree.science_final()
        raw_dir = root / "uncal_data" / night.parent.name
        if final and all(final) and tree.calibration():
            if raw_elsewhere:  # the sorted copies, as get_directory lists them
                doomed += [Path(p) for p in tree.bias()[1]]
                for group in (tree.dark()[1], tree.flatdark()[1], tree.flatfield()[1],
                              tree.science()[1]):
                    doomed += [Path(p) for files in group for p in files]
                continue
            for kind in ("bias", "dark", "flat", "object"):
                doomed += [p for p in (night / kind).rglob("*") if p.is_file()
                           and (raw_dir / p.name).is_file()
                           and p.stat().st_size == (raw_dir / p.name).stat().st_size]
    lab = root / "reduced_data" / "detector_lab"
    for sub in ("dark", "flat", "science_bias_dark", "science_calibrated"):
        doomed += (p for p in lab.glob(f"*/{sub}/*.fit*") if p.is_file())
    nbytes = 0
    for p in doomed:
        nbytes += p.stat().st_size
        p.unlink()
    return doomed, nbytes
