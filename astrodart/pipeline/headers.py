"""Layer 3: AstroDART's ``header_tools``: inspect and edit the headers of many files.

The edits are in-place steps (:class:`astrodart.pipeline.step.InPlaceStep`) over the
header functions of :mod:`astrodart.frames.edit`: atomic, gzip kept, pixel bytes
unchanged, every change recorded as ``HISTORY`` with the old value.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from astropy.io import fits

from astrodart.frames.edit import (
    append_keywords,
    keyword_problems,
    rename_keywords,
    update_keywords,
)
from astrodart.frames.header import FrameHeader
from astrodart.pipeline.kinds import InPlaceStep

__all__ = ["header_tools", "HeaderEdit"]


class HeaderEdit(InPlaceStep):
    """An in-place step applying one header function to every file.

    Parameters
    ----------
    files : sequence of str or pathlib.Path
        Files to edit.
    action : str
        Named in the HISTORY cards (``"astrodart header_tools <action>: ..."``).
    function : callable
        ``function(header, values) -> notes``, e.g.
        :func:`astrodart.frames.edit.update_keywords`.
    values : dict
        Passed to ``function``.
    dry_run : bool, optional
        Print what would change, write nothing.
    **engine
        ``executor``, ``workers``, ``progress``, ``log_path`` as for
        :class:`astrodart.pipeline.step.Step`.
    """

    name = "header_tools"
    capture_errors = False

    def __init__(self, files: Sequence, action: str, function: Callable, values: dict,
                 dry_run: bool = False, **engine):
        super().__init__(files, dry_run=dry_run, **engine)
        self.name = f"header_tools {action}"
        self.function, self.values = function, dict(values)

    def parameters(self) -> dict:
        """The options recorded in the run log.

        Returns
        -------
        dict
            ``{'values': values}``, the keywords and values given to the function.
        """
        return {"values": self.values}

    def edit(self, header: fits.Header, path: str) -> list[str]:
        """Apply the header function to one file's header.

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
        return self.function(header, self.values)


class header_tools:  # noqa: N801  (AstroDART's public name)
    """Inspect and edit FITS headers of many files at once, safely.

    Edits are in place but atomic (written to a temporary file, then renamed), work on
    gzip-compressed files, keep the pixel bytes unchanged (no rescaling of ``BZERO``
    data), and record every change as a ``HISTORY`` card with the old value.

    Parameters
    ----------
    files : sequence of str or pathlib.Path
        FITS files to inspect or edit.
    header_dict : dict, optional
        For the edit methods: ``{'OLD': 'NEW'}`` (rename), ``{'KEY': value}`` (update,
        append). A value may be a ``(value, comment)`` tuple.
    header_key : str, optional
        Keyword for :meth:`check_key_is_present`.
    dry_run : bool
        Report what would change without writing.

    Examples
    --------
    >>> header_tools(flats, {'IMAGETYP': 'Flat Field'}).update_header_values()  # doctest: +SKIP
    >>> header_tools(files, {'INSFILTE': 'FILTER'}).change_header_key_name()    # doctest: +SKIP
    """

    def __init__(self, files: Sequence, header_dict: dict | None = None,
                 header_key: str | None = None, dry_run: bool = False):
        if isinstance(files, (str, Path)):
            files = [files]
        self.files = [str(f) for f in files]
        self.header_dict = dict(header_dict or {})
        self.header_key = header_key
        self.dry_run = bool(dry_run)

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
    def _require(self, keys, must_exist: bool) -> None:
        lacking = {}
        for f, h in self._headers():
            bad = keyword_problems(h, keys, must_exist)
            if bad:
                lacking[f] = bad
        if lacking:
            what = "lack" if must_exist else "already have"
            lines = "\n".join(f"  {f}: {', '.join(b)}" for f, b in lacking.items())
            raise KeyError(f"{len(lacking)} file(s) {what} the keyword(s); nothing was changed:\n{lines}")

    def _edit(self, action: str, function: Callable) -> list[str]:
        return HeaderEdit(self.files, action, function, self.header_dict,
                          dry_run=self.dry_run).run()

    def change_header_key_name(self) -> list[str]:
        """Rename keywords ``{'OLD': 'NEW'}``, moving value and comment, in every file.

        Returns
        -------
        list of str
            The files changed.

        Raises
        ------
        KeyError
            Some file lacks an ``OLD`` keyword (files listed; nothing is changed).
        """
        self._require(list(self.header_dict), must_exist=True)
        return self._edit("rename", rename_keywords)

    def update_header_values(self) -> list[str]:
        """Set existing keywords ``{'KEY': value}`` in every file.

        Returns
        -------
        list of str
            The files changed.

        Raises
        ------
        KeyError
            Some file lacks a keyword (files listed; nothing is changed). Use
            :meth:`append_header_key` to add keywords.
        """
        self._require(list(self.header_dict), must_exist=True)
        return self._edit("update", update_keywords)

    def append_header_key(self) -> list[str]:
        """Add keywords ``{'KEY': value}`` (e.g. ``{'GAIN': 2.06, 'RON': 6.5}``: GAIN in
        e-/ADU, RON in e-, SCALE in arcsec/px). An existing keyword is overwritten and its
        old value recorded in HISTORY.

        Returns
        -------
        list of str
            The files changed.
        """
        return self._edit("append", append_keywords)
