"""Layer 3: fingerprints of what made an output, so a re-run reuses it only when nothing changed.

Frames written by a step carry in their header ``ADFPRINT``, the fingerprint of what
made them (the step, the content identity of its inputs and masters, its parameters
and the package version) and ``ADPARAMS``, the parts of it in JSON, so that a re-run
that finds another fingerprint can say *what* changed ("region changed: recomputing
100 frames"): :func:`frame_fingerprint`, :func:`seal_header` and :func:`stale_reason`.

The night runner's measuring steps (the quality table, the plate solutions) keep their
results as ECSV tables; each table carries in its metadata the fingerprint of what made
it: the step, the content identity of every input frame
(:func:`astrodart.frames.identity.content_id`), the parameters and the package version.
:func:`current_table` returns the saved table only when that fingerprint matches the
one of this run, and otherwise says why it is recomputed.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astrodart import __version__
from astrodart.frames.identity import content_id

if TYPE_CHECKING:
    from astropy.nddata import CCDData
    from astropy.table import Table

__all__ = ["inputs_fingerprint", "current_table", "save_table", "table_of", "frame_fingerprint",
           "seal_header", "stale_reason", "master_identities", "code_version", "FingerprintedOutputs", "FINGERPRINT_CARD", "PARAMETERS_CARD"]

#: Header card holding the fingerprint of what made a frame.
FINGERPRINT_CARD = "ADFPRINT"
#: Header card holding, in JSON, the parameters, masters and version behind the fingerprint.
PARAMETERS_CARD = "ADPARAMS"

log = logging.getLogger("astrodart")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package version and a hash of its source: an edited astrodart is another code.

    Returns
    -------
    str
        ``'<version>+<10 hex digits>'``: the hash covers every ``.py`` file of the
        installed package (read once per process, a few milliseconds), so outputs made
        by a changed step are recomputed even when the version number did not move.
    """
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha1()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return f"{__version__}+{h.hexdigest()[:10]}"


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
                       parameters or {}, code_version()], sort_keys=True, default=str)
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
    from astropy.table import Table  # lazy: ~0.2 s that importing the step engine need not pay

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


def table_of(path, step: str, files: Sequence, parameters: dict, compute,
             overwrite: bool = False) -> tuple[Table, bool]:
    """A step's table: the saved one when made from the same inputs, else computed and saved.

    Parameters
    ----------
    path : str or pathlib.Path
        The ECSV table.
    step : str
        Step name (part of the fingerprint).
    files : sequence of str or pathlib.Path
        Input frames (their content identities are part of the fingerprint).
    parameters : dict
        Parameters of the step (part of the fingerprint).
    compute : callable
        ``compute() -> astropy.table.Table``, called only when the saved table cannot
        be reused.
    overwrite : bool, optional
        Compute again even when the saved table matches.

    Returns
    -------
    table : astropy.table.Table
        The table.
    reused : bool
        True when the saved table was reused.
    """
    fingerprint = inputs_fingerprint(step, files, parameters)
    table = None if overwrite else current_table(path, fingerprint)
    if table is not None:
        return table, True
    table = compute()
    save_table(table, path, fingerprint)
    return table, False


def _identity(path) -> str:
    """Content identity of a file, or a marker saying why there is none."""
    try:
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
        if key not in _IDENTITIES:  # a step asks twice: to decide reuse, then to seal
            if len(_IDENTITIES) > 100_000:
                _IDENTITIES.clear()
            _IDENTITIES[key] = content_id(path)
        return _IDENTITIES[key]
    except (OSError, ValueError) as exc:  # a missing master makes every output stale
        return f"unreadable: {type(exc).__name__}"


#: Content identities known in this process, by (path, size, modification time in ns).
_IDENTITIES: dict[tuple, str] = {}


def _normal(value):
    """``value`` as it reads back from JSON (tuples become lists, objects strings)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def frame_fingerprint(step: str, inputs: Sequence, parameters: dict,
                      master_ids: dict) -> tuple[str, dict]:
    """The fingerprint of one output of a step, and what it is made of.

    Parameters
    ----------
    step : str
        Step name.
    inputs : sequence of str or pathlib.Path
        The input frames of this output (one, or all of a combination); order counts.
    parameters : dict
        The step's parameters (JSON-able; other values are rendered with ``str``).
    master_ids : dict
        ``{role: content identity}`` of the masters used (:func:`master_identities`).

    Returns
    -------
    fingerprint : str
        SHA-1 (hex) of all of the below.
    parts : dict
        ``{'step', 'parameters', 'masters', 'inputs', 'version'}``: what
        :func:`seal_header` records so that :func:`stale_reason` can name a change
        (``inputs`` is a hash of the inputs' names and content identities).
    """
    ids = [(Path(f).name, _identity(f)) for f in inputs]
    parts = {"step": step, "parameters": _normal(parameters), "masters": _normal(master_ids),
             "inputs": hashlib.sha1(json.dumps(ids).encode()).hexdigest()[:16],
             "version": code_version()}
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest(), parts


def master_identities(masters: dict) -> dict:
    """Content identities of the masters a step uses.

    Parameters
    ----------
    masters : dict
        ``{role: path}`` as :meth:`astrodart.pipeline.step.Step.masters` gives it.

    Returns
    -------
    dict
        ``{role: content identity}`` (a changed master bias changes its identity).
    """
    return {role: _identity(path) for role, path in sorted(masters.items())}


def seal_header(header, fingerprint: str, parts: dict) -> None:
    """Record a fingerprint and its parts in a frame's header.

    Parameters
    ----------
    header : astropy.io.fits.Header
        The output's header (changed in place).
    fingerprint : str
        From :func:`frame_fingerprint`.
    parts : dict
        Its parts, written as JSON in ``ADPARAMS`` (a long-string card).
    """
    header[FINGERPRINT_CARD] = (fingerprint, "astrodart made-from hash")
    header[PARAMETERS_CARD] = json.dumps(parts, sort_keys=True, separators=(",", ":"))


def _changed(old: dict, new: dict) -> list[str]:
    """Names whose values differ between two dicts, with the values when short."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a != b:
            text = f"{key} changed"
            if len(repr(a)) + len(repr(b)) < 60:
                text += f" ({a!r} -> {b!r})"
            out.append(text)
    return out


def stale_reason(header, fingerprint: str, parts: dict) -> str | None:
    """Why an existing output cannot be reused, or None when it can.

    Parameters
    ----------
    header : astropy.io.fits.Header
        The existing output's header.
    fingerprint : str
        This run's fingerprint for that output.
    parts : dict
        This run's parts (:func:`frame_fingerprint`).

    Returns
    -------
    str or None
        None: same fingerprint. Otherwise a reason that is the same for every frame it
        hits (so that a run reports it once with a count): ``"region changed ('[1:512,
        1:512]' -> '[1:256, 1:256]')"``, ``"master bias changed"``, ``"input frame
        changed"``, ``"astrodart version changed (0.3 -> 0.4)"``, or ``"made without a
        fingerprint"``.
    """
    if header.get(FINGERPRINT_CARD) == fingerprint:
        return None
    try:
        old = json.loads(header.get(PARAMETERS_CARD, ""))
    except ValueError:
        return "made without a fingerprint (an earlier astrodart or another program)"
    reasons = _changed(old.get("parameters", {}), parts["parameters"])
    reasons += [f"{role} changed" for role in sorted(set(old.get("masters", {}))
                                                     | set(parts["masters"]))
                if old.get("masters", {}).get(role) != parts["masters"].get(role)]
    if old.get("inputs") != parts["inputs"]:
        reasons.append("input frame changed")
    if old.get("version") != parts["version"]:
        reasons.append(f"astrodart code changed ({old.get('version')} -> {parts['version']})")
    if old.get("step") != parts["step"]:
        reasons.append(f"made by another step ({old.get('step')})")
    return "; ".join(reasons) or "fingerprint differs"


class FingerprintedOutputs:
    """What the step engine needs to seal its outputs and to tell a stale one.

    Mixed into :class:`astrodart.pipeline.step.Step`; a step supplies ``name``,
    ``parameters()`` and ``masters()``.
    """

    def stale_reason(self, inputs: Sequence[str], outputs: Sequence[str]) -> str | None:
        """Why existing outputs of ``inputs`` cannot be reused, or None when they can.

        Parameters
        ----------
        inputs : sequence of str
            The input files of one task.
        outputs : sequence of str
            Its existing, complete outputs.

        Returns
        -------
        str or None
            See :func:`stale_reason` (the first output with a reason gives it).
        """
        from astropy.io import fits

        fingerprint, parts = self.fingerprint(inputs)
        for o in outputs:
            why = stale_reason(fits.getheader(o), fingerprint, parts)
            if why is not None:
                return why
        return None

    def fingerprint(self, inputs: Sequence[str]) -> tuple[str, dict]:
        """The fingerprint of an output made from ``inputs`` by this step as configured.

        Parameters
        ----------
        inputs : sequence of str
            The input files of one task.

        Returns
        -------
        fingerprint : str
            SHA-1 (hex) of the step name, the inputs' names and content identities
            (:func:`astrodart.frames.identity.content_id`), :meth:`fingerprint_parameters`,
            the masters' content identities and the package version.
        parts : dict
            What it is made of (recorded as ``ADPARAMS``, so that a mismatch is explained).
        """
        ids = self.__dict__.get("_master_ids")
        if ids is None:  # once per run: computed before the frames go to the workers
            ids = self._master_ids = master_identities(self.masters())
        return frame_fingerprint(self.name, inputs, self.fingerprint_parameters(), ids)

    def fingerprint_parameters(self) -> dict[str, Any]:
        """The parameters that decide an output's pixels (default: :meth:`parameters`).

        Returns
        -------
        dict
            JSON-able ``{name: value}``; a change makes existing outputs stale.
        """
        return self.parameters()

    def seal(self, ccd: CCDData, inputs: Sequence[str]) -> None:
        """Record this run's :meth:`fingerprint` of ``inputs`` in the output's header.

        Parameters
        ----------
        ccd : astropy.nddata.CCDData
            The output (its ``meta`` becomes a :class:`astropy.io.fits.Header`).
        inputs : sequence of str
            The input files it was made from.
        """
        from astropy.io import fits

        if not isinstance(ccd.meta, fits.Header):
            ccd.meta = fits.Header(ccd.meta)
        seal_header(ccd.meta, *self.fingerprint(inputs))
