"""Layer 3: the step engine that turns a per-frame function into a file-level step.

Every file-level step of astrodart (``trimmer``, ``gain_correction``, ...) is a small
subclass of :class:`Step` that implements only :meth:`Step.process` (one
``CCDData`` in, one ``CCDData`` out). The engine supplies, once and for all:

* inputs = list of paths, outputs = list of paths, named with the AstroDART prefix
  (``trimmed_``, ``gain_corrected_`` ...) in the working directory;
* resume: an output that exists and is a complete FITS file is reused unless
  ``overwrite`` (writes are atomic: temporary file, then rename); temporaries left by a
  killed run are removed;
* a parallel map over frames through any :class:`concurrent.futures.Executor`
  (default: a process pool sized to the cores; a ``dask.distributed.Client`` fits the
  same slot because it has ``submit``);
* per-frame error capture: one bad frame is reported (warning + log) and skipped;
* provenance header keywords (step, package version, parameters, masters used);
* a JSON-lines run log in the target's reduction directory.

Speed: each frame is read once and written once per step, by the worker that processes
it; only paths and a small summary travel back to the caller. Outputs are not forced to
disk one by one (``fsync``): a per-frame ``fsync`` made the workers wait for the disk
(several seconds per night on a shared disk) and protects only against a power loss,
which the resume check below covers (a truncated output is redone, not reused). Set
:attr:`Step.fsync_outputs` to force each output to disk.

Why our own engine and not a workflow library: the step semantics users know from
AstroDART (prefix naming, ``overwrite='yes'``, returning output lists) plus resume and
provenance fit in ~200 lines, and keep one loop instead of one per step.
"""
from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import json
import logging
import os
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from astropy.io import fits
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning

from astrodart import __version__
from astrodart.frames.io import read_frame, remove_stale_temporaries, strip_fits_suffix, write_frame

__all__ = [
    "Step",
    "StepReport",
    "FrameSkippedWarning",
    "parse_overwrite",
    "make_executor",
    "process_pool",
    "find_log_path",
    "log_event",
    "LOG_NAME",
    "known_prefixes",
    "is_complete_fits",
]

log = logging.getLogger("astrodart")

#: Name of the JSON-lines run log kept in each target's reduction directory.
LOG_NAME = "astrodart_log.jsonl"


_PREFIXES: set[str] = set()


def known_prefixes() -> list[str]:
    """Output prefixes of every Step subclass defined so far (e.g. ``'trimmed_'``): files
    with these prefixes were written by astrodart, not copied from a raw night."""
    return sorted(_PREFIXES)


class FrameSkippedWarning(UserWarning):
    """A frame failed in a step and was skipped; the rest of the batch went on."""


def parse_overwrite(value) -> bool:
    """Interpret AstroDART's ``overwrite`` argument.

    ``'yes'``/``'y'``/``'true'``/``True``/``1`` mean redo; ``'no'``/``'n'``/``'false'``/
    ``False``/``None``/``0`` mean reuse existing outputs.

    Raises
    ------
    ValueError
        Any other value (a typo must not silently mean "no").
    """
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, (int,)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("yes", "y", "true", "1", "overwrite"):
            return True
        if v in ("no", "n", "false", "0", ""):
            return False
    raise ValueError(f"overwrite={value!r} not understood; use 'yes'/'no' or True/False")


#: Kept alive in each pool worker: the thread limits set by :func:`_one_thread_per_worker`.
_WORKER_LIMITS = None


def _one_thread_per_worker() -> None:
    """Process-pool initializer: one BLAS / OpenMP thread per worker process.

    The steps get their parallelism from processes. Left alone, OpenBLAS and the OpenMP
    runtime (astroscrappy, scipy) start a thread per core inside every worker, and on a
    2-core machine two workers then fight over the cores with four threads: measured on
    30 real frames (benchmarks/scaling.py), 2 workers ran L.A.Cosmic 1.35x faster than
    one process with the library threads and 1.85x faster with one thread each, for 20 %
    less CPU. threadpoolctl sets the limit for the libraries already loaded.
    """
    global _WORKER_LIMITS
    from threadpoolctl import threadpool_limits

    _WORKER_LIMITS = threadpool_limits(limits=1)


def process_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A process pool whose workers run one BLAS / OpenMP thread each.

    Parameters
    ----------
    workers : int
        Number of worker processes.

    Returns
    -------
    concurrent.futures.ProcessPoolExecutor
    """
    return cf.ProcessPoolExecutor(max_workers=workers, initializer=_one_thread_per_worker)


def make_executor(executor=None, workers: int | None = None):
    """Return ``(executor, owned)`` for a step run.

    Parameters
    ----------
    executor : None, str, int or Executor-like
        ``None`` or ``'process'``: a process pool of ``workers`` (default: the number of
        cores); ``'thread'``: a thread pool; ``'serial'`` or ``1``: run in this process;
        an int: a process pool of that size; any object with ``submit`` (a
        ``concurrent.futures.Executor``, a ``dask.distributed.Client`` or its
        ``client.get_executor()``) is used as is. Dask tasks are submitted with
        ``pure=False`` (a re-run is always computed again).
    workers : int, optional
        Pool size for the string forms.

    Returns
    -------
    executor : Executor-like or None
        None means serial execution.
    owned : bool
        True if the caller must shut the executor down.
    """
    n = workers or os.cpu_count() or 1
    if executor is None or executor == "process":
        return (process_pool(n), True) if n > 1 else (None, False)
    if executor == "thread":
        return cf.ThreadPoolExecutor(max_workers=n), True
    if executor == "serial" or executor == 1:
        return None, False
    if isinstance(executor, int) and executor > 1:
        return process_pool(executor), True
    if hasattr(executor, "submit"):
        return executor, False
    raise ValueError(f"executor={executor!r} not understood; use None, 'process', 'thread', "
                     "'serial', an int, or an object with .submit (Executor, dask Client)")


def find_log_path(directory) -> Path:
    """The run log for work in ``directory``: the nearest existing ``astrodart_log.jsonl``
    in ``directory`` or up to three parents (the target's reduction directory made by
    ``data_organiser``), else ``directory/astrodart_log.jsonl``."""
    directory = Path(directory).resolve()
    for d in [directory, *list(directory.parents)[:3]]:
        if (d / LOG_NAME).exists():
            return d / LOG_NAME
    return directory / LOG_NAME


def log_event(log_path, **event) -> None:
    """Append one JSON record (with a UTC timestamp and package version) to a run log.

    Appends of one line below the pipe-buffer size are atomic on POSIX, so parallel
    writers do not interleave.
    """
    record = {"time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "astrodart": __version__, **event}
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")


@dataclass
class StepReport:
    """What a step run did: outputs written, reused, and frames that failed (path -> reason)."""

    step: str
    written: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: per written output, what :meth:`Step.summary` returned for it (e.g. counts)
    summaries: dict[str, dict] = field(default_factory=dict)

    @property
    def outputs(self) -> list[str]:
        """All usable outputs (written or reused), in input order is kept by the step."""
        return self.written + self.reused

    def __str__(self) -> str:
        s = (f"{self.step}: {len(self.written)} written, {len(self.reused)} reused, "
             f"{len(self.failed)} failed")
        for p, why in self.failed.items():
            s += f"\n  FAILED {p}: {why}"
        return s


def _run_one(step: "Step", in_path: str, out_path: str):
    """Worker body (module level so process pools and dask can pickle it).

    Returns ``(in_path, out_path or None, error or None, summary dict)``; only these
    small values travel back to the caller, never pixels.
    """
    try:
        ccd = step.read(in_path)
        result = step.process(ccd, in_path)
        step.stamp(result, in_path)
        write_frame(result, out_path, overwrite=True, fsync=step.fsync_outputs)
        return in_path, out_path, None, step.summary(result)
    except Exception as exc:  # one bad frame must never kill the batch
        log.debug("step %s failed on %s\n%s", step.name, in_path, traceback.format_exc())
        return in_path, None, f"{type(exc).__name__}: {exc}", {}


def is_complete_fits(path) -> bool:
    """Whether ``path`` is a readable FITS file whose every HDU is whole.

    Only the headers are read; astropy warns when a file is shorter than its headers
    announce (e.g. cut short by a power loss before the data reached the disk).

    Parameters
    ----------
    path : str or pathlib.Path
        The file.

    Returns
    -------
    bool
        False for a missing, unreadable, empty or truncated file.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                ok = len(hdul) > 0
    except Exception:
        return False
    return ok and not any(
        issubclass(w.category, AstropyUserWarning) and "truncated" in str(w.message)
        for w in caught
    )


def _is_dask_client(executor) -> bool:
    return type(executor).__module__.split(".")[0] == "distributed"


class Step:
    """Base of every file-level step.

    Subclasses set :attr:`name` and :attr:`prefix` and implement :meth:`process`.

    Parameters
    ----------
    wdir : str or pathlib.Path
        Working directory where outputs are written (created if needed).
    files : sequence of str or pathlib.Path
        Input FITS files.
    overwrite : bool or {'yes', 'no'}
        Redo outputs that already exist (AstroDART's ``'yes'`` is accepted).
    executor : None, str, int, Executor or dask Client, optional
        How frames are mapped (see :func:`make_executor`).
    workers : int, optional
        Pool size when ``executor`` is a string or None.
    progress : bool
        Show a tqdm progress bar (renders in notebooks).
    log_path : str or pathlib.Path, optional
        JSON-lines run log; default from :func:`find_log_path`.

    Raises
    ------
    TypeError
        Unknown keyword arguments (subclasses pass theirs through :meth:`_check_kwargs`).
    """

    name = "step"
    prefix = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.prefix:
            _PREFIXES.add(cls.prefix)
    #: Output file suffix (inputs may be gzipped; outputs are written plain for speed).
    suffix = ".fits"
    #: Force every output to disk (``fsync``) before its atomic rename. Off by default:
    #: a killed run never leaves a partial output either way, and an output truncated by
    #: a power loss is detected and redone by the resume check.
    fsync_outputs = False

    def __init__(self, wdir, files: Sequence, overwrite=False, *, executor=None,
                 workers: int | None = None, progress: bool = True, log_path=None):
        self.wdir = Path(wdir)
        if isinstance(files, (str, Path)):
            files = [files]
        self.files = [str(f) for f in files]
        self.overwrite = parse_overwrite(overwrite)
        self.executor = executor
        self.workers = workers
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
        """Parameters recorded in provenance and the run log (override to add)."""
        return {}

    def masters(self) -> dict[str, str]:
        """Master frames used, recorded in provenance (override to add)."""
        return {}

    def read(self, path) -> CCDData:
        """Read one input frame (override e.g. to force a unit)."""
        return read_frame(path)

    def process(self, ccd: CCDData, path: str) -> CCDData:
        """Apply the step to one frame; must return a new ``CCDData``."""
        raise NotImplementedError

    def summary(self, ccd: CCDData) -> dict:
        """Small facts about one output sent back to the caller with its path (override;
        e.g. a count from the header), so the caller need not re-read the file."""
        return {}

    def output_name(self, in_path: str) -> str:
        """Output file name for an input: prefix + input name without FITS/gz suffix + suffix."""
        return self.prefix + strip_fits_suffix(Path(in_path).name) + self.suffix

    # -- engine --------------------------------------------------------------------
    def output_path(self, in_path: str) -> Path:
        """Full output path of one input."""
        return self.wdir / self.output_name(in_path)

    def stamp(self, ccd: CCDData, in_path: str) -> None:
        """Write provenance keywords into ``ccd.meta`` (deterministic: no clock time, so a
        re-run produces byte-identical files)."""
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
        meta.add_history(f"astrodart {__version__} {self.name}({text}) on {Path(in_path).name}")
        for role, mpath in self.masters().items():
            meta.add_history(f"astrodart {self.name} used {role}: {Path(mpath).name}")

    def run(self) -> list[str]:
        """Process every input; return the output paths (in input order) of the frames
        that succeeded or were reused. Failed frames are in ``self.report.failed``."""
        self.wdir.mkdir(parents=True, exist_ok=True)
        outs = {f: self.output_path(f) for f in self.files}
        remove_stale_temporaries(self.wdir, [p.name for p in outs.values()])
        report = StepReport(self.name)
        todo = []
        for f, o in outs.items():
            if o.exists() and not self.overwrite and is_complete_fits(o):
                report.reused.append(str(o))
            else:
                if o.exists() and not self.overwrite:
                    log.warning("%s: %s is incomplete (truncated); redoing it", self.name, o)
                todo.append(f)
        results = self._map(todo, outs)
        for in_path, out_path, err, summary in results:
            if err is None:
                report.written.append(str(out_path))
                report.summaries[str(out_path)] = summary
            else:
                report.failed[in_path] = err
                warnings.warn(f"{self.name}: skipped {in_path}: {err}", FrameSkippedWarning,
                              stacklevel=2)
        self.report = report
        order = {str(o): i for i, o in enumerate(outs.values())}
        ordered = sorted(report.outputs, key=lambda p: order[p])
        log_event(self.log_path or find_log_path(self.wdir), step=self.name,
                  parameters=self.parameters(), masters=self.masters(), wdir=str(self.wdir),
                  inputs=self.files, written=report.written, reused=report.reused,
                  failed=report.failed)
        log.info(str(report))
        return ordered

    def _map(self, todo: list[str], outs: dict) -> list[tuple]:
        if not todo:
            return []
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=self.name, disable=not self.progress, leave=True)
        results = []
        executor, owned = make_executor(self.executor, self.workers) if len(todo) > 1 else (None, False)
        try:
            if executor is None:
                for f in todo:
                    results.append(_run_one(self, f, str(outs[f])))
                    bar.update()
            else:
                # dask: pure=False, so that re-running a step is never served from the
                # cluster's memory of an earlier identical call
                extra = {"pure": False} if _is_dask_client(executor) else {}
                futures = [executor.submit(_run_one, self, f, str(outs[f]), **extra) for f in todo]
                for f, fut in zip(todo, futures):
                    try:
                        results.append(tuple(fut.result()))
                    except Exception as exc:  # worker crash (e.g. killed process)
                        results.append((f, None, f"{type(exc).__name__}: {exc}", {}))
                    bar.update()
        finally:
            bar.close()
            if owned:
                executor.shutdown()
        return results


def check_kwargs(step_name: str, kwargs: dict, allowed: Iterable[str] = ()) -> None:
    """Reject unknown keyword arguments with a message listing the allowed ones.

    Raises
    ------
    TypeError
        Some key of ``kwargs`` is not in ``allowed``.
    """
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{step_name}() got unknown keyword argument(s) {', '.join(unknown)}; "
                        f"allowed: {', '.join(sorted(allowed)) or 'none'}")


__all__.append("check_kwargs")
