"""Layer 3: the kinds of step beyond one-to-one, on the engine of :mod:`astrodart.pipeline.step`.

* :class:`ManyToOneStep`: many frames in, one frame out (combining: master frames, stacks);
* :class:`OneToManyStep`: one frame in, several out (e.g. a colour frame into its planes);
* :class:`InPlaceStep`: edits the headers of the inputs themselves, no new file;
* :class:`MeasuringStep`: frames in, a table out, no image written.

Each kind is one method to write; resume, provenance, the run log, per-frame error
capture, the executor and the once-per-run warnings are the engine's (see the examples
in :mod:`astrodart.pipeline.step`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from astropy.io import fits

if TYPE_CHECKING:  # a type only: astropy.nddata (and scipy) load when a frame is read
    from astropy.nddata import CCDData

from astrodart.exceptions import warn
from astrodart.frames.edit import edit_header_in_place
from astrodart.frames.io import (
    read_header,
    remove_stale_temporaries,
    write_frame,
)
from astrodart.pipeline.runlog import find_log_path
from astrodart.pipeline.step import FrameSkippedWarning, Step, Task, _frame_independent

__all__ = ["ManyToOneStep", "OneToManyStep", "InPlaceStep", "MeasuringStep"]


class ManyToOneStep(Step):
    """Many inputs, one output: combining (master frames, stacks).

    Subclasses set :attr:`name` and implement :meth:`combine` (paths in, so that the
    combine engine can read the frames in memory-bounded chunks). Each input is first
    checked by :meth:`check_input` (default: its header is readable); a failing input
    is reported and left out, and the combination goes on with the rest. An error in
    :meth:`combine` itself propagates.

    Parameters
    ----------
    wdir : str or pathlib.Path
        Folder of the output.
    files : sequence of str or pathlib.Path
        Input frames.
    output : str or pathlib.Path
        Output file name (in ``wdir``) or path.
    overwrite : bool or {'yes', 'no'}, optional
        Combine again even when the output's fingerprint matches.
    **engine
        ``executor``, ``workers``, ``progress``, ``log_path`` as for
        :class:`astrodart.pipeline.step.Step`.

    Notes
    -----
    The output is reused only when its header's ``ADFPRINT`` equals the fingerprint of
    this run (the inputs' content, parameters, masters, package version).
    """

    capture_errors = False
    unique_inputs = True

    def __init__(self, wdir, files: Sequence, output, overwrite=False, **engine):
        super().__init__(wdir, files, overwrite, **engine)
        self.output = Path(output) if Path(output).is_absolute() else self.wdir / output

    def combine(self, paths: list[str]) -> CCDData:
        """Combine the (checked) input frames into one (override).

        Parameters
        ----------
        paths : list of str
            The input files.

        Returns
        -------
        astropy.nddata.CCDData
            The combined frame.
        """
        raise NotImplementedError

    def check_input(self, path: str) -> None:
        """Check that an input can take part (override; default: its header is readable).

        Parameters
        ----------
        path : str
            An input file.

        Raises
        ------
        Exception
            Any error leaves the input out (reported, counted once per run).
        """
        read_header(path)

    def tasks(self) -> list[Task]:
        """The one task of a combination.

        Returns
        -------
        list of Task
            One task: every input in, :attr:`output` out.
        """
        return [Task(str(self.output), tuple(self.files), (str(self.output),))]

    def execute(self, task: Task) -> dict:
        """Check the inputs, combine those that pass, stamp and write the output.

        %(task_parameters)s

        Returns
        -------
        dict
            ``{'inputs': n_used, 'failed_inputs': {path: reason}}``.

        Raises
        ------
        ValueError
            No input passed :meth:`check_input` (the message gives the first failure).
        """
        good, failed = [], {}
        for p in task.inputs:
            try:
                self.check_input(p)
                good.append(p)
            except Exception as exc:
                failed[p] = f"{type(exc).__name__}: {exc}"
                warn(f"{self.name} failed: {_frame_independent(failed[p], p)}",
                     FrameSkippedWarning, item=p)
        if not good:
            first = next(iter(failed.items()), ("", "no input given"))
            raise ValueError(f"{self.name}: no usable input among {len(task.inputs)} frames; "
                             f"{first[0]}: {first[1]}")
        result = self.combine(good)
        self.stamp(result, good)
        self.seal(result, task.inputs)
        self.write(result, task.outputs[0])
        return {"inputs": len(good), "failed_inputs": failed}

    def write(self, ccd: CCDData, path: str) -> None:
        """Write the combined frame atomically (override e.g. for another data type).

        Parameters
        ----------
        ccd : astropy.nddata.CCDData
            The stamped output.
        path : str
            The output file.
        """
        write_frame(ccd, path, overwrite=True, fsync=self.fsync_outputs)

    def result(self, tasks, report) -> str:
        """The output path.

        Parameters
        ----------
        tasks : list of Task
            The one task.
        report : StepReport
            What the run did (inputs left out are in ``report.failed``).

        Returns
        -------
        str
            The output file.
        """
        return str(self.output)


class OneToManyStep(Step):
    """One input, several outputs (e.g. a colour frame split into its planes).

    Subclasses set :attr:`name`, :attr:`prefix` and :attr:`labels` and implement
    :meth:`split`. The output of label ``L`` for input ``a.fits`` is
    ``prefix + 'a_' + L + suffix``; an input whose outputs all exist is reused.

    %(kind_parameters)s
    """

    #: One label per output of a frame.
    labels: tuple = ()

    def split(self, ccd: CCDData, path: str) -> dict[str, CCDData]:
        """Split one frame (override).

        Parameters
        ----------
        ccd : astropy.nddata.CCDData
            The input frame.
        path : str
            Its file, for messages.

        Returns
        -------
        dict
            ``{label: CCDData}`` for every label of :attr:`labels`.
        """
        raise NotImplementedError

    def output_paths(self, in_path: str) -> list[Path]:
        """The output paths of one input.

        Parameters
        ----------
        in_path : str
            The input file.

        Returns
        -------
        list of pathlib.Path
            ``wdir / (prefix + name + '_' + label + suffix)`` in :attr:`labels` order.
        """
        stem = self.output_name(in_path)[: -len(self.suffix) or None]
        return [self.wdir / f"{stem}_{label}{self.suffix}" for label in self.labels]

    def tasks(self) -> list[Task]:
        """The tasks of this run, in input order.

        Returns
        -------
        list of Task
            One task per input, with its :meth:`output_paths`.
        """
        return [Task(f, (f,), tuple(str(p) for p in self.output_paths(f))) for f in self.files]

    def execute(self, task: Task) -> dict:
        """Read one input, :meth:`split` it, stamp and write each part.

        %(task_parameters)s

        Returns
        -------
        dict
            Empty (nothing to send back).

        Raises
        ------
        ValueError
            :meth:`split` did not give exactly the :attr:`labels`.
        """
        path = task.inputs[0]
        parts = self.split(self.read(path), path)
        if set(parts) != set(self.labels):
            raise ValueError(f"{self.name}: split gave {sorted(parts)}, expected {list(self.labels)}")
        for label, out in zip(self.labels, task.outputs):
            self.stamp(parts[label], path)
            self.seal(parts[label], task.inputs)
            write_frame(parts[label], out, overwrite=True, fsync=self.fsync_outputs)
        return {}

    def result(self, tasks, report) -> list[list[str]]:
        """Per input that succeeded (or was reused), its outputs.

        %(result_parameters)s

        Returns
        -------
        list of list of str
            The outputs of each input, in label order.
        """
        usable = set(report.outputs)
        return [list(t.outputs) for t in tasks if all(o in usable for o in t.outputs)]


class InPlaceStep(Step):
    """Edit the headers of the input files themselves (no new file).

    Subclasses set :attr:`name` and implement :meth:`edit`. Each file is rewritten
    atomically (temporary file, then rename; gzip kept), pixels byte-identical, every
    change recorded as a ``HISTORY`` card; a file the edit does not change is not
    rewritten. Files are edited by a thread pool by default (gzip releases the GIL).

    Parameters
    ----------
    files : sequence of str or pathlib.Path
        Files to edit.
    dry_run : bool, optional
        Print what would change, write nothing.
    executor : None, str, int or Executor, optional
        Default ``'thread'``.
    progress : bool, optional
        Show a progress bar (default off).
    **engine
        ``workers``, ``log_path`` as for :class:`astrodart.pipeline.step.Step`; the JSON
        log is written only to ``log_path`` or a log that exists near the files (a raw
        night gets no new file).
    """

    reuse_outputs = False
    writes_to_wdir = False

    def __init__(self, files: Sequence, *, dry_run: bool = False, executor="thread",
                 progress: bool = False, **engine):
        paths = [files] if isinstance(files, (str, Path)) else list(files)
        wdir = Path(paths[0]).parent if paths else Path(".")
        super().__init__(wdir, paths, True, executor=executor, progress=progress, **engine)
        self.dry_run = bool(dry_run)

    def edit(self, header: fits.Header, path: str) -> list[str]:
        """Edit one image header in place (override).

        Parameters
        ----------
        header : astropy.io.fits.Header
            The image header, changed in place.
        path : str
            Its file, for messages.

        Returns
        -------
        list of str
            One note per change, recorded as HISTORY (empty: no change, no rewrite).
        """
        raise NotImplementedError

    def tasks(self) -> list[Task]:
        """The tasks of this run, in input order.

        Returns
        -------
        list of Task
            One task per file, the file being both input and output.
        """
        return [Task(f, (f,), (f,)) for f in self.files]

    def _prepare_folders(self, tasks) -> None:
        for folder in {Path(f).parent for f in self.files}:
            remove_stale_temporaries(folder)

    def execute(self, task: Task) -> dict:
        """Apply :meth:`edit` to one file's header and rewrite it atomically if it changed.

        %(task_parameters)s

        Returns
        -------
        dict
            ``{'notes': [change, ...]}`` (empty: file unchanged).
        """
        notes = edit_header_in_place(task.inputs[0], lambda h: self.edit(h, task.inputs[0]),
                                     self.name, dry_run=self.dry_run)
        return {"notes": notes}

    def log_target(self) -> Path | None:
        """The JSON-lines run log: none for a dry run, and no new one next to raw files.

        Returns
        -------
        pathlib.Path or None
            ``log_path``, or a log that already exists near the files; None: no JSON log.
        """
        if self.dry_run:
            return None
        return self.log_path or find_log_path(self.wdir, existing_only=True)

    def result(self, tasks, report) -> list[str]:
        """The files the edit changed (or would change, in a dry run).

        %(result_parameters)s

        Returns
        -------
        list of str
            The changed files, in input order.
        """
        return [t.key for t in tasks if report.summaries.get(t.key, {}).get("notes")]


class MeasuringStep(Step):
    """Frames in, a table out, no image written (quality, photometry ...).

    Subclasses set :attr:`name` and implement :meth:`measure`; :meth:`run` returns an
    :class:`astropy.table.Table` with a ``file`` column and one row per frame that
    succeeded, in input order (also kept in :attr:`table`). Nothing is reused: every
    run measures again.

    %(kind_parameters)s
    """

    reuse_outputs = False
    writes_to_wdir = False
    #: Create a run log when none exists near the files (False: append only to an
    #: existing log, for measurements that must not add files next to raw frames).
    new_log = True

    def measure(self, ccd: CCDData, path: str) -> dict:
        """Measure one frame (override).

        Parameters
        ----------
        ccd : astropy.nddata.CCDData
            The frame.
        path : str
            Its file, for messages.

        Returns
        -------
        dict
            One row ``{column: value}``; every frame must give the same columns.
        """
        raise NotImplementedError

    def tasks(self) -> list[Task]:
        """The tasks of this run, in input order.

        Returns
        -------
        list of Task
            One task per input, with no output file.
        """
        return [Task(f, (f,), ()) for f in self.files]

    def execute(self, task: Task) -> dict:
        """Read and :meth:`measure` one frame.

        %(task_parameters)s

        Returns
        -------
        dict
            The frame's row ``{column: value}``, sent back to the caller.
        """
        return self.measure(self.read(task.inputs[0]), task.inputs[0])

    def log_target(self) -> Path | None:
        """The JSON-lines run log (see :attr:`new_log`).

        Returns
        -------
        pathlib.Path or None
            ``log_path``, or the nearest log (a new one only when :attr:`new_log`).
        """
        return self.log_path or find_log_path(self.wdir, existing_only=not self.new_log)

    def result(self, tasks, report):
        """The table of measured rows.

        %(result_parameters)s

        Returns
        -------
        astropy.table.Table
            A ``file`` column and the measured columns, one row per frame that succeeded.
        """
        from astropy.table import Table

        rows = [{"file": t.key, **report.summaries[t.key]} for t in tasks
                if t.key in report.summaries]
        self.table = Table(rows=rows) if rows else Table(names=["file"], dtype=[str])
        return self.table
