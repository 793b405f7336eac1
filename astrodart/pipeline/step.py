"""Layer 3: the step engine that turns a science function into a file-level step.

Every file-level step of astrodart (``trimmer``, ``gain_correction``, ...) is a small
subclass of one of the step kinds below that implements one method. The engine
supplies, once and for all:

* inputs = list of paths, outputs = list of paths, named with the AstroDART prefix
  (``trimmed_``, ``gain_corrected_`` ...) in the working directory;
* resume: an output that exists and is a complete FITS file is reused unless
  ``overwrite`` (writes are atomic: temporary file, then rename); temporaries left by a
  killed run are removed;
* a parallel map over frames through any :class:`concurrent.futures.Executor`
  (default: a process pool sized to the cores; a ``dask.distributed.Client`` fits the
  same slot because it has ``submit``), see :mod:`astrodart.pipeline.executors`;
* per-frame error capture: one bad frame is reported (one :class:`FrameSkippedWarning`
  per run, with the count, + log) and skipped;
* warnings once per run: :meth:`Step.run` counts the :func:`astrodart.exceptions.warn`
  calls of its frames (also those made in pool workers, recorded there and replayed
  here) and issues each kind once, with the number of frames it hit;
* provenance header keywords (step, package version, parameters, masters used);
* a JSON-lines run log in the target's reduction directory
  (:mod:`astrodart.pipeline.runlog`).

The kinds of step (each one method to write; the four beyond one-to-one live in
:mod:`astrodart.pipeline.kinds`)::

    from astrodart.pipeline.kinds import InPlaceStep, ManyToOneStep, MeasuringStep, OneToManyStep

    # one-to-one: one frame in, one frame out (calibrations)
    class smooth(Step):
        name, prefix = "smooth", "smoothed_"
        def process(self, ccd, path):
            return ccd.copy()
    smooth(wdir, files).run()                        # -> ['.../smoothed_a.fits', ...]

    # many-to-one: many frames in, one frame out (combining: master frames, stacks)
    class mean_stack(ManyToOneStep):
        name = "mean_stack"
        def combine(self, paths):
            return CCDData(np.mean([read_frame(p).data for p in paths], axis=0), unit="adu")
    mean_stack(wdir, files, "master.fits").run()     # -> '.../master.fits'

    # one-to-many: one frame in, several out (e.g. a colour frame into its planes)
    class halves(OneToManyStep):
        name, prefix, labels = "halves", "half_", ("top", "bottom")
        def split(self, ccd, path):
            n = ccd.shape[0] // 2
            return {"top": ccd[n:], "bottom": ccd[:n]}
    halves(wdir, files).run()                        # -> [['.../half_a_top.fits', ...], ...]

    # in-place: edit the headers of the inputs themselves, no new file
    class set_object(InPlaceStep):
        name = "set_object"
        def edit(self, header, path):
            header["OBJECT"] = "M67"
            return ["OBJECT = 'M67'"]                 # notes, recorded as HISTORY
    set_object(files).run()                          # -> the files changed

    # measuring: frames in, a table out, no image written
    class median_level(MeasuringStep):
        name = "median_level"
        def measure(self, ccd, path):
            return {"median": float(np.median(ccd.data))}
    median_level(wdir, files).run()                  # -> astropy Table, one row per frame

Every written frame carries the fingerprint of what made it (header ``ADFPRINT``: the
content identity of its inputs and masters, the parameters and the package version;
``ADPARAMS`` holds the parts), and an existing output is reused only when it matches.
Otherwise it is recomputed and the run says why, once with a count ("trimmer in 100
frames: region changed ('[1:512, 1:512]' -> '[1:256, 1:256]'); recomputed"). In-place
and measuring steps always run.

Speed: each frame is read and written once per step, by its worker; only paths and a
small summary travel back. Outputs are not ``fsync``-ed one by one (that made workers
wait seconds per night on a shared disk, against a power loss only, which the resume
check covers: a truncated output is redone); set :attr:`Step.fsync_outputs` to force it.

Why our own engine and not a workflow library: AstroDART's step semantics (prefix
naming, ``overwrite='yes'``, output lists) plus resume and provenance fit in a few
hundred lines, one loop for every step.
"""
from __future__ import annotations

import functools
import logging
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from astropy.io import fits
if TYPE_CHECKING:  # a type only: astropy.nddata (and scipy) load when a frame is read
    from astropy.nddata import CCDData

from astrodart import __version__
from astrodart.exceptions import AstrodartWarning, capture, replay, warn, warning_tally
from astrodart.frames.checks import check_step_arguments, header_text
from astrodart.frames.io import (is_complete_fits, read_frame, remove_stale_temporaries,
                                 strip_fits_suffix, unique_stems, write_frame)
from astrodart.pipeline.docsections import fill_docstrings
from astrodart.pipeline.executors import make_executor, map_tasks, process_pool
from astrodart.pipeline.fingerprint import FingerprintedOutputs
from astrodart.pipeline.options import check_kwargs, parse_overwrite
from astrodart.pipeline.runlog import LOG_NAME, find_log_path, log_event

__all__ = [
    "Step", "Task", "StepReport", "FrameSkippedWarning", "OutputRecomputedWarning",
    "known_prefixes",
    # re-exported for the callers that import them from here
    "parse_overwrite", "check_kwargs", "make_executor", "process_pool", "find_log_path",
    "log_event", "LOG_NAME", "is_complete_fits",
]

log = logging.getLogger("astrodart")

_PREFIXES: set[str] = set()


def known_prefixes() -> list[str]:
    """Output prefixes of every Step subclass defined so far.

    Returns
    -------
    list of str
        Sorted prefixes (e.g. ``'trimmed_'``): files with these prefixes were written by
        astrodart, not copied from a raw night.
    """
    return sorted(_PREFIXES)


class FrameSkippedWarning(AstrodartWarning):
    """A frame failed in a step and was skipped; the rest of the batch went on."""


class OutputRecomputedWarning(AstrodartWarning):
    """An existing output was made from other inputs, parameters, masters or code: recomputed."""


@dataclass(frozen=True)
class Task:
    """One unit of work of a step: what it reads and what it writes.

    Parameters
    ----------
    key : str
        What the task is about, as reported in :attr:`StepReport.failed` and warnings
        (the input path; the output path for a many-to-one step).
    inputs : tuple of str
        Files read.
    outputs : tuple of str
        Files written (empty for a measuring step; the input itself when in place).
    """

    key: str
    inputs: tuple = ()
    outputs: tuple = ()


@dataclass
class StepReport:
    """What a step run did.

    Parameters
    ----------
    step : str
        The step's name.
    written, reused : list of str
        Outputs written by this run / found complete and kept.
    failed : dict
        ``{input path: "ErrorType: reason"}`` for the frames that failed and were skipped.
    summaries : dict
        Per task, what the worker returned: :meth:`Step.summary` of a written output
        (keyed by the output), a measured row or the notes of an edit (keyed by the input).
    """

    step: str
    written: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: per task, what the worker returned: :meth:`Step.summary` of a written output (keyed
    #: by the output), a measured row or the notes of an edit (keyed by the input)
    summaries: dict[str, dict] = field(default_factory=dict)

    @property
    def outputs(self) -> list[str]:
        """All usable outputs (written or reused); the step orders them by input."""
        return self.written + self.reused

    def __str__(self) -> str:
        s = (f"{self.step}: {len(self.written)} written, {len(self.reused)} reused, "
             f"{len(self.failed)} failed")
        for p, why in self.failed.items():
            s += f"\n  FAILED {p}: {why}"
        return s


def _run_one(step: "Step", task: Task):
    """Worker body (module level so process pools and dask can pickle it).

    Returns ``(key, error or None, summary dict, warning records)``; only these small
    values travel back to the caller, never pixels. The :func:`astrodart.exceptions.warn`
    calls of the task are recorded and replayed by the caller.
    """
    err, summary = None, {}
    with capture() as records:
        try:
            summary = step.execute(task)
        except Exception as exc:  # one bad frame must never kill the batch
            if not step.capture_errors:
                raise
            log.debug("step %s failed on %s\n%s", step.name, task.key, traceback.format_exc())
            err = f"{type(exc).__name__}: {exc}"
    return task.key, err, summary or {}, records


def _frame_independent(reason: str, key: str) -> str:
    """``reason`` with the frame's path and name replaced, so that one failure hitting
    many frames is counted as one kind of warning."""
    for s in (key, Path(key).name):  # whole names only: "read a.fits" keeps "read"
        if s:
            reason = re.sub(rf"(?<![\w.-]){re.escape(s)}(?![\w.-])", "the frame", reason)
    return reason


def _tallied(run):
    """Wrap a ``run`` method in :func:`astrodart.exceptions.warning_tally`."""

    @functools.wraps(run)
    def wrapper(self, *args, **kwargs):
        with warning_tally():
            return run(self, *args, **kwargs)
    return wrapper


class Step(FingerprintedOutputs):
    """Base of every file-level step, and the one-to-one kind.

    A one-to-one subclass sets :attr:`name` and :attr:`prefix` and implements
    :meth:`process`. Other kinds (:class:`ManyToOneStep`, :class:`OneToManyStep`,
    :class:`InPlaceStep`, :class:`MeasuringStep`) override :meth:`tasks`,
    :meth:`execute` and :meth:`result`; the engine (:meth:`run`) is shared.

    Parameters
    ----------
    wdir : str or pathlib.Path
        Working directory where outputs are written (created if needed).
    files : sequence of str or pathlib.Path
        Input FITS files.
    overwrite : bool or {'yes', 'no'}
        Redo outputs that already exist (AstroDART's ``'yes'`` is accepted).
    executor : None, str, int, Executor or dask Client, optional
        How frames are mapped (see :func:`astrodart.pipeline.executors.make_executor`).
    workers : int, optional
        Pool size when ``executor`` is a string or None.
    progress : bool
        Show a tqdm progress bar (renders in notebooks).
    log_path : str or pathlib.Path, optional
        JSON-lines run log; default from :func:`astrodart.pipeline.runlog.find_log_path`.

    Raises
    ------
    TypeError
        Unknown keyword arguments (subclasses pass theirs through :func:`check_kwargs`).
    """

    name = "step"
    prefix = ""
    #: Output file suffix (inputs may be gzipped; outputs are written plain for speed).
    suffix = ".fits"
    #: Force every output to disk (``fsync``) before its atomic rename. Off by default:
    #: a killed run never leaves a partial output either way, and an output truncated by
    #: a power loss is detected and redone by the resume check.
    fsync_outputs = False
    #: Reuse outputs that exist and are complete (unless ``overwrite``).
    reuse_outputs = True
    #: Catch a task's error, report and skip it (False: the error propagates).
    capture_errors = True
    writes_to_wdir, unique_inputs = True, False  # wdir checked at the call; no input twice

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        fill_docstrings(cls)
        if cls.prefix:
            _PREFIXES.add(cls.prefix)
        if "run" in cls.__dict__:  # a subclass's own run also counts its warnings once
            cls.run = _tallied(cls.__dict__["run"])

    def __init__(self, wdir, files: Sequence, overwrite=False, *, executor=None,
                 workers: int | None = None, progress: bool = True, log_path=None):
        self.wdir, self.files, self.workers = check_step_arguments(
            type(self).__name__, wdir, files, workers, writes=self.writes_to_wdir,
            unique=self.unique_inputs)
        self.overwrite = parse_overwrite(overwrite)
        self.executor = executor
        self.progress = progress
        self.log_path = Path(log_path) if log_path else None
        self.report: StepReport | None = None

    # picklable for process pools: drop the executor (a pool cannot be pickled)
    def __getstate__(self):
        state = self.__dict__.copy()
        state["executor"] = None
        return state

    # -- to override ---------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """Parameters recorded in provenance and the run log (override to add).

        Returns
        -------
        dict
            ``{name: value}``, JSON-serialisable.
        """
        return {}

    def masters(self) -> dict[str, str]:
        """Master frames used, recorded in provenance (override to add).

        Returns
        -------
        dict
            ``{role: path}``, e.g. ``{'master bias': '.../masterbias.fits'}``.
        """
        return {}

    def read(self, path) -> CCDData:
        """Read one input frame (override e.g. to force a unit).

        Parameters
        ----------
        path : str
            The input file.

        Returns
        -------
        astropy.nddata.CCDData
            The frame.
        """
        return read_frame(path)

    def process(self, ccd: CCDData, path: str) -> CCDData:
        """Apply the step to one frame (one-to-one kind: override).

        %(frame_parameters)s

        Returns
        -------
        astropy.nddata.CCDData
            A new frame.
        """
        raise NotImplementedError

    def summary(self, ccd: CCDData) -> dict:
        """Small facts about one output sent back to the caller with its path (override).

        Parameters
        ----------
        ccd : astropy.nddata.CCDData
            The output frame.

        Returns
        -------
        dict
            E.g. a count from the header, so that the caller need not re-read the file.
        """
        return {}

    def output_name(self, in_path: str) -> str:
        """Output file name of an input.

        Parameters
        ----------
        in_path : str
            The input file.

        Returns
        -------
        str
            Prefix + input name without FITS/gz suffix + :attr:`suffix`; inputs that
            share a name get a stable suffix (:func:`astrodart.frames.io.unique_stems`).
        """
        stems = self.__dict__.get("_stems")
        if stems is None or str(in_path) not in stems:
            stems = self._stems = unique_stems(self.files)
        stem = stems.get(str(in_path)) or strip_fits_suffix(Path(in_path).name)
        return self.prefix + stem + self.suffix

    def _source_name(self, in_path) -> str:
        """The input's name in provenance; its full path when its name collides."""
        stem = self.__dict__.get("_stems", {}).get(str(in_path))
        plain = strip_fits_suffix(Path(in_path).name)
        return str(in_path) if stem not in (None, plain) else Path(in_path).name

    # -- the kind: what a task is, how it runs, what run() returns -----------------
    def output_path(self, in_path: str) -> Path:
        """Full output path of one input.

        Parameters
        ----------
        in_path : str
            The input file.

        Returns
        -------
        pathlib.Path
            ``wdir / output_name(in_path)``.
        """
        return self.wdir / self.output_name(in_path)

    def tasks(self) -> list[Task]:
        """The tasks of this run, in input order (override for another kind).

        Returns
        -------
        list of Task
            One-to-one: one task per input, with its one output.
        """
        return [Task(f, (f,), (str(self.output_path(f)),)) for f in self.files]

    def execute(self, task: Task) -> dict:
        """Do one task, in a worker (override for another kind).

        One-to-one: read, :meth:`process`, :meth:`stamp`, write (atomically).

        %(task_parameters)s

        Returns
        -------
        dict
            The summary sent back to the caller.
        """
        in_path, out_path = task.inputs[0], task.outputs[0]
        result = self.process(self.read(in_path), in_path)
        self.stamp(result, in_path)
        self.seal(result, task.inputs)
        write_frame(result, out_path, overwrite=True, fsync=self.fsync_outputs)
        return self.summary(result)

    def is_done(self, task: Task) -> bool:
        """Whether a task's outputs can be reused.

        %(task_parameters)s

        Returns
        -------
        bool
            True when ``overwrite`` is off and every output exists, is a complete FITS
            file (a truncated one is logged and redone) and carries this run's
            :meth:`fingerprint` (otherwise an :class:`OutputRecomputedWarning` says what
            changed, once per run with the number of frames).
        """
        if not (self.reuse_outputs and task.outputs and not self.overwrite):
            return False
        if not all(Path(o).exists() for o in task.outputs):
            return False
        if not all(is_complete_fits(o) for o in task.outputs):
            log.warning("%s: an output of %s is incomplete (truncated); redoing it",
                        self.name, task.key)
            return False
        why = self.stale_reason(task.inputs, task.outputs)
        if why is not None:
            warn(f"{self.name}: {why}; recomputed", OutputRecomputedWarning, item=task.key)
            return False
        return True

    def result(self, tasks: list[Task], report: StepReport):
        """What :meth:`run` returns (override for another kind).

        %(result_parameters)s

        Returns
        -------
        list of str
            One-to-one: the usable outputs (written or reused) in input order.
        """
        usable = set(report.outputs)
        return [o for t in tasks for o in t.outputs if o in usable]

    # -- engine --------------------------------------------------------------------
    def stamp(self, ccd: CCDData, in_path) -> None:
        """Write provenance keywords into ``ccd.meta``.

        Deterministic (no clock time), so that a re-run produces byte-identical files.

        Parameters
        ----------
        ccd : astropy.nddata.CCDData
            The output frame; its ``meta`` becomes a :class:`astropy.io.fits.Header`.
        in_path : str or sequence of str
            The input file, or the inputs of a combination.
        """
        if not isinstance(ccd.meta, fits.Header):  # CCDData arithmetic hands back a dict
            ccd.meta = fits.Header(ccd.meta)
        meta = ccd.meta
        n = 1
        while f"ADSTEP{n:02d}" in meta:
            n += 1
        meta[f"ADSTEP{n:02d}"] = (self.name, "astrodart step applied")
        meta["ADVERS"] = (__version__, "astrodart version")
        params = self.parameters()
        text = ", ".join(f"{k}={v!r}" for k, v in params.items())
        source = (f"{len(in_path)} frames" if not isinstance(in_path, (str, Path))
                  else self._source_name(in_path))
        meta.add_history(header_text(f"astrodart {__version__} {self.name}({text}) on {source}"))
        for role, mpath in self.masters().items():
            meta.add_history(f"astrodart {self.name} used {role}: {header_text(Path(mpath).name)}")

    def log_target(self) -> Path | None:
        """The JSON-lines run log of this step.

        Returns
        -------
        pathlib.Path or None
            ``log_path`` or the nearest log (see
            :func:`astrodart.pipeline.runlog.find_log_path`); None: no JSON log.
        """
        return self.log_path or find_log_path(self.wdir)

    def run(self):
        """Process every input (each kind of warning issued once, with its count).

        Returns
        -------
        list of str
            One-to-one: the output paths (in input order) of the frames that succeeded
            or were reused. Failed frames are in ``self.report.failed``. Other kinds
            return what their :meth:`result` says.
        """
        with warning_tally():
            self._master_ids = None  # the masters may have changed since the last run
            tasks = self.tasks()
            self._prepare_folders(tasks)
            report = StepReport(self.name)
            todo = []
            for t in tasks:
                if self.is_done(t):
                    report.reused.extend(t.outputs)
                else:
                    todo.append(t)
            self._collect(self._map(todo), {t.key: t for t in todo}, report)
            self.report = report
            target = self.log_target()
            if target is not None:
                log_event(target, step=self.name, parameters=self.parameters(),
                          masters=self.masters(), wdir=str(self.wdir), inputs=self.files,
                          written=report.written, reused=report.reused, failed=report.failed)
            log.info(str(report))
            return self.result(tasks, report)

    def _prepare_folders(self, tasks: list[Task]) -> None:
        """Create the output folders and remove temporaries left there by a killed run."""
        by_folder: dict[Path, list[str]] = {}
        for t in tasks:
            for o in t.outputs:
                by_folder.setdefault(Path(o).parent, []).append(Path(o).name)
        self.wdir.mkdir(parents=True, exist_ok=True)
        for folder, names in by_folder.items():
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(folder, names)

    def _collect(self, results: list[tuple], tasks: dict, report: StepReport) -> None:
        for key, err, summary, records in results:
            replay(records)
            task = tasks[key]
            report.failed.update(summary.pop("failed_inputs", {}))  # inputs a task left out
            if err is None:
                report.written.extend(str(o) for o in task.outputs)
                report.summaries[str(task.outputs[0]) if task.outputs else key] = summary
            else:
                report.failed[key] = err
                warn(f"{self.name} failed: {_frame_independent(err, key)}",
                     FrameSkippedWarning, item=key, stacklevel=4)

    def _map(self, todo: list[Task]) -> list[tuple]:
        """Run the tasks; an interrupt ends the workers and removes their temporaries."""
        if not todo:
            return []
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=self.name, disable=not self.progress, leave=True)
        executor, owned = make_executor(self.executor, self.workers) if len(todo) > 1 else (None, False)
        crashed = (lambda t, exc: (t.key, f"{type(exc).__name__}: {exc}", {}, [])  # a worker died
                   ) if self.capture_errors else None
        try:
            return [tuple(r) for r in map_tasks(functools.partial(_run_one, self), todo, executor,
                                                owned, on_done=bar.update, on_crash=crashed)]
        except BaseException:
            self._prepare_folders(todo)  # the temporaries of the workers ended
            raise
        finally:
            bar.close()


fill_docstrings(Step)  # its subclasses are filled by Step.__init_subclass__
