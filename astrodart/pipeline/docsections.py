"""Docstring sections shared by the step classes, written once.

A step's docstring names a shared section by a line holding only a marker such as
``%(step_parameters)s`` (the matplotlib ``interpd`` convention); :class:`Step` replaces
the marker, at its indentation, when the subclass is defined, so ``help()``, Sphinx and
numpydoc see the whole text. ``{prefix}`` in a section becomes the class's ``prefix``.
"""
from __future__ import annotations

import inspect
import re

__all__ = ["fill_docstrings"]

_PARAMETERS = "Parameters\n----------\n"

#: A ``*_parameters`` section that opens a Parameters list includes the list's header.
_SECTIONS = {
    # wdir, files and overwrite of every file-level step (opens the class's list)
    "step_parameters": _PARAMETERS + """\
wdir : str or pathlib.Path
    Folder for the outputs (``{prefix}<name>.fits``).
files : list of str
    Input frames.
overwrite : bool or {'yes', 'no'}
    Redo outputs that exist.""",
    # the engine keywords a step passes through to Step (inside a list)
    "engine_parameters": """\
**engine
    Engine options ``executor``, ``workers``, ``progress``, ``log_path`` (see
    :class:`astrodart.pipeline.step.Step`).""",
    # the arguments of a calibration step's apply(ccd, path)
    "frame_parameters": _PARAMETERS + """\
ccd : astropy.nddata.CCDData
    The input frame, shape ``(ny, nx)``.
path : str
    Its file, for messages.""",
    # Parameters, Returns and Raises of the cosmic-ray steps' apply(ccd, path)
    "cosmic_apply_sections": _PARAMETERS + """\
ccd : astropy.nddata.CCDData
    The input frame, shape ``(ny, nx)``, in ADU or electrons.
path : str
    Its file, for messages.

Returns
-------
astropy.nddata.CCDData
    The cleaned frame, same unit; flagged pixels replaced and masked, counted in
    ``ADNCRPIX``.

Raises
------
CalibrationError
    No gain for a frame in ADU, or a bad-pixel map of another shape.""",
    # the whole constructor of a step kind that takes only Step's arguments
    "kind_parameters": _PARAMETERS + """\
wdir : str or pathlib.Path
    Folder of the outputs (and of the run log).
files : sequence of str or pathlib.Path
    Input frames.
overwrite : bool or {'yes', 'no'}, optional
    Redo outputs that exist.
executor : None, str, int, Executor or dask Client, optional
    How frames are mapped (see :func:`astrodart.pipeline.executors.make_executor`).
workers : int, optional
    Pool size when ``executor`` is a string or None.
progress : bool, optional
    Show a progress bar.
log_path : str or pathlib.Path, optional
    JSON-lines run log.""",
    # the argument of the engine's per-task methods (execute, is_done, ...)
    "task_parameters": _PARAMETERS + """\
task : Task
    The task.""",
    # the arguments of a step kind's result(tasks, report)
    "result_parameters": _PARAMETERS + """\
tasks : list of Task
    The run's tasks, in input order.
report : StepReport
    What the run did.""",
}

_MARKER = re.compile(r"^([ \t]*)%\((\w+)\)s[ \t]*$", re.MULTILINE)


def _expand(doc: str, prefix: str) -> str:
    def section(match: re.Match) -> str:
        indent, key = match.groups()
        text = _SECTIONS[key].replace("{prefix}", prefix)
        return "\n".join(indent + line if line else line for line in text.splitlines())

    return _MARKER.sub(section, doc)


def fill_docstrings(step_class: type) -> None:
    """Expand the section markers in a class's own docstring and its own methods'.

    Parameters
    ----------
    step_class : type
        A step class (it has a ``prefix`` attribute, which may be empty).
    """
    prefix = getattr(step_class, "prefix", "") or "<prefix>"
    if "%(" in (step_class.__dict__.get("__doc__") or ""):
        step_class.__doc__ = _expand(step_class.__doc__, prefix)
    for value in vars(step_class).values():
        if inspect.isfunction(value) and "%(" in (value.__doc__ or ""):
            value.__doc__ = _expand(value.__doc__, prefix)
