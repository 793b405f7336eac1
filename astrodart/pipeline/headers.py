"""Layer 3: AstroDART's ``header_tools``: inspect and edit the headers of many files.

A batch edit is all or nothing. Under a lock on every folder of the batch
(:func:`astrodart.frames.locks.folder_locks`: a second edit of the same files waits):

1. every file is checked and its changes planned from its header: readable, whole (a
   truncated or corrupt file is caught), an image, the keywords the edit needs present
   (or absent); one :class:`~astrodart.frames.edit.HeaderEditError` lists every bad file
   and NO file is changed;
2. every changed file is written to a temporary file beside it (pixels and other cards
   byte for byte, gzip kept, each change added as a ``HISTORY`` card with the old
   value); if any write fails, every temporary is removed and no file is changed;
3. the temporaries are renamed over the files (``os.replace``, atomic), and each change
   (file, key, old, new) is logged to the run log and the ``astrodart`` logger.

Temporaries left by a killed edit are removed the next time a folder is edited.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Sequence

from astropy.io import fits

from astrodart.exceptions import replay, warning_tally
from astrodart.frames.checks import check_files, check_number
from astrodart.frames.edit import (
    HeaderEditError,
    KeywordChange,
    append_keywords,
    card_problem,
    header_file_problem,
    keyword_problems,
    plan_header_edit,
    rename_keywords,
    update_keywords,
    write_edited_header,
)
from astrodart.frames.header import FrameHeader
from astrodart.frames.io import atomic_output, remove_stale_temporaries
from astrodart.frames.locks import folder_locks
from astrodart.pipeline.kinds import InPlaceStep
from astrodart.pipeline.runlog import log_event
from astrodart.pipeline.step import Task

__all__ = ["header_tools", "HeaderEdit"]

log = logging.getLogger("astrodart")


def _unique(files: list[str]) -> list[str]:
    """The files in order, each once (a file listed twice is edited once)."""
    seen, out = set(), []
    for f in files:
        key = str(Path(f).resolve())
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


class HeaderEdit(InPlaceStep):
    """An all-or-nothing batch applying one header function to every file.

    Parameters
    ----------
    files : sequence of str or pathlib.Path
        Files to edit (a file listed twice is edited once).
    action : str
        Named in the HISTORY cards (``"astrodart header_tools <action>: ..."``).
    function : callable
        ``function(header, values) -> changes``, e.g.
        :func:`astrodart.frames.edit.update_keywords`.
    values : dict
        Passed to ``function``.
    dry_run : bool, optional
        Check and print what would change, write nothing.
    must_exist : sequence of str, optional
        Keywords every file must have (else the batch is refused).
    must_be_absent : sequence of str, optional
        Keywords no file may have (else the batch is refused).
    timeout : float, optional
        Seconds to wait for another edit of the same folders.
    **engine
        ``executor``, ``workers``, ``progress``, ``log_path`` as for
        :class:`astrodart.pipeline.step.Step`.
    """

    name = "header_tools"

    def __init__(self, files: Sequence, action: str, function: Callable, values: dict,
                 dry_run: bool = False, *, must_exist: Sequence = (),
                 must_be_absent: Sequence = (), timeout: float = 60.0, **engine):
        super().__init__(files, dry_run=dry_run, **engine)
        self.files = _unique(self.files)
        self.name = f"header_tools {action}"
        self.function, self.values = function, dict(values)
        self.must_exist, self.must_be_absent = tuple(must_exist), tuple(must_be_absent)
        self.timeout = check_number("timeout", timeout, minimum=0, owner="header_tools", unit="s")
        self.phase = "check"

    def parameters(self) -> dict:
        """The options recorded in the run log.

        Returns
        -------
        dict
            ``{'values': values}``, the keywords and values given to the function.
        """
        return {"values": self.values}

    def edit(self, header: fits.Header, path: str) -> list:
        """Apply the header function to one file's header.

        Parameters
        ----------
        header : astropy.io.fits.Header
            The image header, changed in place.
        path : str
            Its file, for messages.

        Returns
        -------
        list of KeywordChange
            One per change, recorded as HISTORY (empty: no change, no rewrite).
        """
        return self.function(header, self.values)

    def check(self, path: str) -> tuple[list[str], list]:
        """What stops the edit of one file, and the changes it would make.

        Parameters
        ----------
        path : str
            The file.

        Returns
        -------
        problems : list of str
            Empty when the file can be edited.
        changes : list of KeywordChange
            The changes planned from its header (empty when there are problems).
        """
        problem = header_file_problem(path)
        if problem:
            return [problem], []
        problems: list[str] = []

        def checked_edit(header):
            problems.extend(f"lacks keyword {k.upper()}"
                            for k in keyword_problems(header, self.must_exist, True))
            problems.extend(f"already has {k.upper()} = {header[k.upper()]!r}"
                            for k in keyword_problems(header, self.must_be_absent, False))
            return [] if problems else self.edit(header, path)

        changes = plan_header_edit(path, checked_edit)
        return problems, ([] if problems else changes)

    def execute(self, task: Task) -> dict:
        """Check one file (phase ``'check'``) or write its edited copy (phase ``'write'``).

        %(task_parameters)s

        Returns
        -------
        dict
            ``{'problems': [...], 'changes': [...]}`` when checking; ``{'changes': [...]}``
            when writing ``task.outputs[0]`` (a temporary beside the file).
        """
        if self.phase == "check":
            problems, changes = self.check(task.key)
            return {"problems": problems, "changes": changes}
        changes = write_edited_header(task.key, lambda h: self.edit(h, task.key), self.name,
                                      task.outputs[0])
        return {"changes": changes}

    def _results(self, tasks: list[Task]) -> tuple[dict, dict]:
        """Map the tasks; ``({file: summary}, {file: [problem, ...]})``."""
        done, bad = {}, {}
        for key, err, summary, records in self._map(tasks):
            replay(records)
            problems = list(summary.get("problems", [])) + ([err] if err else [])
            if problems:
                bad[key] = problems
            else:
                done[key] = summary
        return done, {f: bad[f] for f in self.files if f in bad}

    def _plan(self) -> dict:
        """Check every file; ``{file: changes}`` of the files that change, in input order."""
        self.phase = "check"
        done, bad = self._results([Task(f, (f,), ()) for f in self.files])
        if bad:
            raise HeaderEditError(bad, self.name)
        return {f: done[f]["changes"] for f in self.files if done[f]["changes"]}

    def _write(self, plans: dict) -> dict:
        """Write every temporary, then rename them all; on any error none is renamed."""
        self.phase = "write"
        with ExitStack() as stack:  # each atomic_output removes its temporary on error
            tasks = [Task(f, (f,), (str(stack.enter_context(atomic_output(f, fsync=True))),))
                     for f in plans]
            done, bad = self._results(tasks)
            bad.update({f: ["header changed during the edit"] for f in done
                        if not done[f]["changes"]})
            if bad:
                raise HeaderEditError(bad, f"{self.name} (writing)")
            # leaving the block renames every temporary over its file
        return {f: done[f]["changes"] for f in plans}

    def _log(self, written: dict) -> None:
        target = self.log_target()
        for f, changes in written.items():
            for c in changes:
                record = c.record() if isinstance(c, KeywordChange) else {"change": str(c)}
                log.info("%s on %s: %s", self.name, f, c)
                if target is not None:
                    log_event(target, step=self.name, file=str(f), **record)

    def run(self) -> list[str]:
        """Check every file, then edit them all or none (see the module's description).

        Returns
        -------
        list of str
            The files changed (or that would change, in a dry run), in input order.

        Raises
        ------
        astrodart.frames.edit.HeaderEditError
            A file cannot be edited (every such file listed); no file was changed.
        TimeoutError
            Another edit held a folder of the batch for longer than ``timeout``.
        """
        with warning_tally():
            folders = {Path(f).resolve().parent for f in self.files}
            with folder_locks([d for d in folders if d.is_dir()], self.timeout):
                for d in folders:
                    remove_stale_temporaries(d)
                plans = self._plan()
                if self.dry_run:
                    for f, changes in plans.items():
                        for c in changes:
                            print(f"[dry run] {Path(f).name}: {c}")
                    return list(plans)
                written = self._write(plans)
                self._log(written)
            return list(written)


def _dict_problems(header_dict: dict, rename: bool) -> list[str]:
    """What FITS cannot take in ``header_dict`` (keywords, values; for a rename, names)."""
    if not rename:
        return [p for k, v in header_dict.items() if (p := card_problem(k, v))]
    problems = []
    for old, new in header_dict.items():
        problems += [p for p in (card_problem(old, is_value=False),
                                 card_problem(new, is_value=False)) if p]
        if isinstance(old, str) and isinstance(new, str) and old.upper() == new.upper():
            problems.append(f"{old!r} -> {new!r} renames a keyword to itself")
    news = [str(n).upper() for n in header_dict.values()]
    olds = {str(o).upper() for o in header_dict}
    problems += [f"two keywords renamed to {n}" for n in sorted({n for n in news if news.count(n) > 1})]
    problems += [f"{n} is both renamed and a new name (rename in two calls)"
                 for n in sorted(set(news) & olds)]
    return problems


class header_tools:  # noqa: N801  (AstroDART's public name)
    """Inspect and edit FITS headers of many files at once, safely.

    An edit is all or nothing: every file is checked first (readable, whole, an image,
    the keywords present or absent as the edit needs) and one error lists every bad file
    before any file is changed; then every file is written to a temporary beside it and
    all are renamed in place together (gzip kept, pixel bytes and other cards unchanged,
    every change recorded as a ``HISTORY`` card with the old value). The folders are
    locked for the edit, so a second edit of the same files waits for the first. Every
    change (file, key, old, new) goes to the run log (``log_path``, or a run log that
    exists near the files: a raw night gets no new file) and the ``astrodart`` logger.

    Parameters
    ----------
    files : sequence of str or pathlib.Path
        FITS files to inspect or edit (a file listed twice is edited once).
    header_dict : dict, optional
        For the edit methods: ``{'OLD': 'NEW'}`` (rename), ``{'KEY': value}`` (update,
        append). A value may be a ``(value, comment)`` tuple. Keywords have 1-8 characters
        of A-Z, 0-9, '-', '_'; values are printable-ASCII strings, finite numbers or bools.
    header_key : str, optional
        Keyword for :meth:`check_key_is_present`.
    dry_run : bool
        Check everything and report what would change without writing.
    timeout : float, optional
        Seconds to wait for another edit of the same folders before giving up.
    log_path : str or pathlib.Path, optional
        JSON-lines run log that receives one record per change.
    executor : None, str, int or Executor, optional
        How files are checked and written (default: a thread pool).

    Raises
    ------
    TypeError
        ``files`` is not a list of paths, or ``header_dict`` not a dict.
    ValueError
        A folder among ``files``, or a bad ``timeout``.

    Examples
    --------
    >>> header_tools(flats, {'IMAGETYP': 'Flat Field'}).update_header_values()  # doctest: +SKIP
    >>> header_tools(files, {'INSFILTE': 'FILTER'}).change_header_key_name()    # doctest: +SKIP
    """

    def __init__(self, files: Sequence, header_dict: dict | None = None,
                 header_key: str | None = None, dry_run: bool = False, *,
                 timeout: float = 60.0, log_path=None, executor="thread"):
        self.files = check_files("files", files, owner="header_tools")
        if header_dict is not None and not isinstance(header_dict, dict):
            raise TypeError(f"header_tools: header_dict={header_dict!r} "
                            f"({type(header_dict).__name__}) must be a dict such as "
                            "{'OBJECT': 'HAT-P-27'}")
        self.header_dict = dict(header_dict or {})
        self.header_key = header_key
        self.dry_run = bool(dry_run)
        self.timeout = check_number("timeout", timeout, minimum=0, owner="header_tools", unit="s")
        self.log_path, self.executor = log_path, executor

    # -- reading -------------------------------------------------------------------
    def _headers(self):
        for f in self.files:
            yield f, FrameHeader.from_file(f).header

    def check_full_header(self) -> list[fits.Header]:
        """Print and return the image header of every file.

        Returns
        -------
        list of astropy.io.fits.Header
            One per file, in order.
        """
        headers = []
        for f, h in self._headers():
            print(f"== {f}")
            print(repr(h))
            headers.append(h)
        return headers

    def check_key_is_present(self) -> dict[str, bool]:
        """Report, per file, whether ``header_key`` is present; print a summary.

        Returns
        -------
        dict
            ``{file: bool}``.

        Raises
        ------
        ValueError
            No ``header_key`` was given.
        """
        if not self.header_key:
            raise ValueError("check_key_is_present needs header_key='KEYWORD'")
        key = self.header_key.upper()
        present = {f: key in h for f, h in self._headers()}
        missing = [f for f, ok in present.items() if not ok]
        print(f"{key}: present in {len(present) - len(missing)} of {len(present)} files")
        for f in missing:
            print(f"  missing in {f}")
        return present

    # -- editing -------------------------------------------------------------------
    def _edit(self, action: str, function: Callable, **require) -> list[str]:
        method = {"rename": "change_header_key_name", "update": "update_header_values",
                  "append": "append_header_key"}[action]
        if not self.files:
            raise ValueError(f"header_tools.{method}: files is empty, nothing to edit")
        if not self.header_dict:
            raise ValueError(f"header_tools.{method}: header_dict is empty, nothing to edit")
        problems = _dict_problems(self.header_dict, rename=action == "rename")
        if problems:
            raise ValueError(f"header_tools.{method}: header_dict has entries FITS cannot "
                             "take; nothing was changed:\n  " + "\n  ".join(problems))
        return HeaderEdit(self.files, action, function, self.header_dict, dry_run=self.dry_run,
                          timeout=self.timeout, log_path=self.log_path, executor=self.executor,
                          **require).run()

    def change_header_key_name(self) -> list[str]:
        """Rename keywords ``{'OLD': 'NEW'}``, moving value and comment, in every file.

        Returns
        -------
        list of str
            The files changed.

        Raises
        ------
        ValueError
            A new name FITS does not allow, or a rename onto itself (nothing changed).
        astrodart.frames.edit.HeaderEditError
            A file lacks an ``OLD`` keyword, already has a ``NEW`` one, or cannot be read
            (every such file listed; nothing is changed). Also a ``KeyError``.
        TimeoutError
            Another edit held the folders for longer than ``timeout``.
        """
        return self._edit("rename", rename_keywords, must_exist=list(self.header_dict),
                          must_be_absent=[str(v) for v in self.header_dict.values()])

    def update_header_values(self) -> list[str]:
        """Set existing keywords ``{'KEY': value}`` in every file.

        Returns
        -------
        list of str
            The files changed.

        Raises
        ------
        ValueError
            A keyword or value FITS cannot hold (nothing changed).
        astrodart.frames.edit.HeaderEditError
            A file lacks a keyword or cannot be read (every such file listed; nothing is
            changed). Use :meth:`append_header_key` to add keywords.
        TimeoutError
            Another edit held the folders for longer than ``timeout``.
        """
        return self._edit("update", update_keywords, must_exist=list(self.header_dict))

    def append_header_key(self) -> list[str]:
        """Add keywords ``{'KEY': value}`` (e.g. ``{'GAIN': 2.06, 'RON': 6.5}``: GAIN in
        e-/ADU, RON in e-, SCALE in arcsec/px). An existing keyword is overwritten and its
        old value recorded in HISTORY.

        Returns
        -------
        list of str
            The files changed.

        Raises
        ------
        ValueError
            A keyword or value FITS cannot hold (nothing changed).
        astrodart.frames.edit.HeaderEditError
            A file cannot be read or edited (every such file listed; nothing is changed).
        TimeoutError
            Another edit held the folders for longer than ``timeout``.
        """
        return self._edit("append", append_keywords)
