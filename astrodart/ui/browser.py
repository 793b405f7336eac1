"""Layer 4: the frame browser -- step through frames with their quality, flag bad ones.

:func:`frame_browser` shows one frame at a time (zscale) with its row of the quality
table; ``.kept`` lists the frames not flagged, for the next step's ``files``.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from astrodart.ui.base import _auto_figsize, _Figure, _Widget
from astrodart.ui.plotting import image_array, show_image, zscale_limits

__all__ = [
    "FrameBrowser",
    "frame_browser",
]

log = logging.getLogger("astrodart")


def _quality_rows(quality: Any, files: Sequence[Any]) -> list[dict[str, Any]]:
    """One dict of quality values per frame, from the accepted table shapes."""
    n = len(files)
    if quality is None:
        return [{} for _ in range(n)]
    names = [Path(f).name if isinstance(f, (str, Path)) else None for f in files]
    # a table (astropy Table, pandas DataFrame): one row per frame, or a 'file' column
    if hasattr(quality, "colnames") or (hasattr(quality, "columns") and hasattr(quality, "iloc")):
        cols = list(quality.colnames) if hasattr(quality, "colnames") else list(quality.columns)
        quality = {c: list(quality[c]) for c in cols}
    if not isinstance(quality, dict):
        raise TypeError("quality must be a dict or a table (astropy Table, pandas DataFrame)")
    keys = [str(k) for k in quality]
    file_keys = {Path(str(k)).name: k for k in quality}
    if names and all(nm is not None and nm in file_keys for nm in names):
        # {file: {metric: value}}
        return [dict(quality[file_keys[nm]]) for nm in names]
    lengths = {k: len(v) for k, v in quality.items() if hasattr(v, "__len__") and
               not isinstance(v, (str, dict))}
    if len(lengths) == len(quality) and set(lengths.values()) == {n}:
        # {metric: [value per frame]}, possibly with a 'file' column giving the order
        for fcol in ("file", "filename", "path"):
            if fcol in quality and names and all(nm is not None for nm in names):
                order = {Path(str(v)).name: j for j, v in enumerate(quality[fcol])}
                missing = [nm for nm in names if nm not in order]
                if missing:
                    raise ValueError(f"quality table has no row for {missing[:3]}")
                return [{k: quality[k][order[nm]] for k in quality if k != fcol} for nm in names]
        return [{k: quality[k][j] for k in quality} for j in range(n)]
    raise ValueError(f"quality must hold one row per frame ({n} frames): a dict "
                     f"{{file: {{metric: value}}}}, a dict {{metric: [{n} values]}}, or a table "
                     f"with {n} rows; got keys {keys[:5]}")


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


class FrameBrowser(_Widget):
    """Step through frames, see each one's quality values, and flag the bad ones.

    A slider (and previous/next buttons) choose the frame; it is shown with zscale
    limits, with its row of the quality table underneath; the checkbox flags or
    unflags it. ``.kept`` lists the files not flagged, in their original order, for
    the next step's ``files`` argument. Build it with :func:`frame_browser`.

    Parameters
    ----------
    files : sequence of path (or CCDData / arrays), or a quality table
        The frames, read one at a time when shown (a few are cached). A table with a
        ``file`` column (e.g. from :func:`astrodart.pipeline.quality.quality_table`) gives both
        the files and their quality values.
    quality : dict or table, optional
        Quality values per frame: ``{file: {metric: value}}`` (file paths or names),
        ``{metric: [value per frame]}``, or an astropy Table / pandas DataFrame with
        one row per frame (in the order of ``files``, or matched by a ``file``
        column).
    flagged : iterable of int or path, optional
        Frames flagged from the start (indices or file paths/names); this is also the
        headless result. By default the frames whose quality ``good`` value is False
        (the verdict of :func:`astrodart.pipeline.quality.quality_table`), else none.
    interactive : bool, optional
        Build the widget, never, or decide by :func:`frontend_available` (None).
    figsize : (float, float), optional
        Figure size in inches; by default 6 wide (7 for the star picker) and as high
        as the image's aspect ratio asks.
    cache_size : int
        Frames kept in memory for quick back-and-forth.

    Attributes
    ----------
    files : list
        The frames, as given.
    flags : list of bool
        True for each flagged frame.
    quality : list of dict
        Quality values, one dict per frame.
    index : int
        The frame shown.

    Raises
    ------
    ValueError
        No files, a quality table that does not match the files, or an unknown
        flagged frame.
    """

    def __init__(self, files: Sequence[Any], quality: Any = None, *,
                 flagged: Iterable[int | str | Path] | None = None,
                 interactive: bool | None = None, figsize: tuple[float, float] | None = None,
                 cache_size: int = 4) -> None:
        super().__init__()
        if quality is None and "file" in getattr(files, "colnames", ()):
            quality, files = files, [str(f) for f in files["file"]]  # a quality_table
        self.files = list(files)
        if not self.files:
            raise ValueError("no frames to browse")
        self.quality = _quality_rows(quality, self.files)
        self.flags = [False] * len(self.files)
        if flagged is None:  # start from the quality table's verdict, if it has one
            flagged = [i for i, row in enumerate(self.quality)
                       if "good" in row and not bool(row["good"])]
        for item in flagged:
            self.flags[self._index_of(item)] = True
        self.index = 0
        self._cache: dict[int, np.ndarray] = {}
        self._cache_size = max(1, int(cache_size))
        self._syncing = False
        if self._decide(interactive):
            self._build(figsize)

    def _index_of(self, item: Any) -> int:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < len(self.files):
                raise ValueError(f"frame {item} does not exist (0..{len(self.files) - 1})")
            return int(item)
        name = Path(str(item)).name
        for i, f in enumerate(self.files):
            if isinstance(f, (str, Path)) and (str(f) == str(item) or Path(f).name == name):
                return i
        raise ValueError(f"{item!r} is not one of the frames")

    # -- value -------------------------------------------------------------------------
    @property
    def kept(self) -> list[Any]:
        """The frames not flagged, in their original order."""
        return [f for f, bad in zip(self.files, self.flags) if not bad]

    @property
    def flagged(self) -> list[Any]:
        """The flagged frames, in their original order."""
        return [f for f, bad in zip(self.files, self.flags) if bad]

    @property
    def value(self) -> list[Any]:
        """Same as :attr:`kept`."""
        return self.kept

    def flag(self, item: int | str | Path, state: bool = True) -> None:
        """Flag (``state=True``) or unflag a frame.

        Parameters
        ----------
        item : int, str or pathlib.Path
            Frame index (0-based) or file path/name.
        state : bool
            True flags (rejects) the frame, False keeps it.

        Raises
        ------
        ValueError
            Unknown frame.
        """
        i = self._index_of(item)
        if self.flags[i] != bool(state):
            self.flags[i] = bool(state)
            log.debug("frame browser: %s %s", self._name(i), "flagged" if state else "kept")
            if self.widget is not None:
                self._sync_widgets()
            self._notify()

    def show(self, index: int) -> None:
        """Show a frame in the widget.

        Parameters
        ----------
        index : int
            Frame index, 0-based.

        Raises
        ------
        ValueError
            No such frame.
        """
        self.index = self._index_of(int(index))
        if self.widget is not None:
            self._sync_widgets(redraw_image=True)

    def __repr__(self) -> str:
        mode = "widget" if self.interactive else "headless"
        return (f"FrameBrowser({len(self.files)} frames, {sum(self.flags)} flagged, {mode})")

    def _name(self, i: int) -> str:
        f = self.files[i]
        return Path(f).name if isinstance(f, (str, Path)) else f"frame {i}"

    def _data(self, i: int) -> np.ndarray:
        if i not in self._cache:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[i] = image_array(self.files[i])
        return self._cache[i]

    # -- widget ------------------------------------------------------------------------
    def _build(self, figsize: tuple[float, float] | None) -> None:
        import ipywidgets as w

        n = len(self.files)
        first = self._data(0)
        self._fig = _Figure(_auto_figsize(figsize, first.shape, 6.0))
        self._ax = self._fig.figure.add_subplot()
        self._im = show_image(first, ax=self._ax, title=self._name(0))
        self._fig.figure.tight_layout()
        self._slider = w.IntSlider(value=0, min=0, max=n - 1, description="frame",
                                   continuous_update=False, layout=w.Layout(width="420px"))
        self._slider.add_class("astrodart-frame-slider")
        self._slider.observe(lambda ch: None if self._syncing else self.show(ch["new"]),
                             names="value")
        prev_b = w.Button(description="◀", layout=w.Layout(width="40px"), tooltip="previous")
        next_b = w.Button(description="▶", layout=w.Layout(width="40px"), tooltip="next")
        prev_b.on_click(lambda _: self.show(max(0, self.index - 1)))
        next_b.on_click(lambda _: self.show(min(n - 1, self.index + 1)))
        self._flag = w.Checkbox(description="flag (reject) this frame", indent=False)
        self._flag.add_class("astrodart-flag")
        self._flag.observe(lambda ch: None if self._syncing else self.flag(self.index, ch["new"]),
                           names="value")
        self._info = w.HTML()
        self._info.add_class("astrodart-frame-info")
        self._table = w.HTML()
        self._table.add_class("astrodart-quality-row")
        self.widget = w.VBox([self._fig.widget, w.HBox([prev_b, self._slider, next_b]),
                              self._flag, self._info, self._table])
        self.widget.add_class("astrodart-frame-browser")
        self._sync_widgets(redraw_image=False)
        self._fig.draw()

    def _sync_widgets(self, redraw_image: bool = False) -> None:
        import html

        i = self.index
        self._syncing = True
        try:
            self._slider.value = i
            self._flag.value = self.flags[i]
        finally:
            self._syncing = False
        if redraw_image:
            data = self._data(i)
            self._im.set_data(data)
            self._im.set_extent((-0.5, data.shape[1] - 0.5, -0.5, data.shape[0] - 0.5))
            self._im.set_clim(*zscale_limits(data))
            self._ax.set_title(self._name(i), fontsize="medium")
        color = "#b00020" if self.flags[i] else "#333"
        state = "FLAGGED" if self.flags[i] else "kept"
        self._info.value = (f'<span style="color:{color}">{html.escape(self._name(i))}: {state}'
                            f" &mdash; {len(self.kept)} of {len(self.files)} kept</span>")
        row = self.quality[i]
        if row:
            head = "".join(f"<th>{html.escape(str(k))}</th>" for k in row)
            cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row.values())
            style = "background:#fdd" if self.flags[i] else ""
            self._table.value = (f'<table class="astrodart-quality"><tr>{head}</tr>'
                                 f'<tr style="{style}">{cells}</tr></table>')
        self._fig.draw()


def frame_browser(files: Sequence[Any], quality: Any = None, **options: Any) -> FrameBrowser:
    """Browse frames with their quality values and flag bad ones (see :class:`FrameBrowser`).

    Parameters
    ----------
    files : sequence of path (or CCDData / arrays), or a quality table
        The frames (a table with a ``file`` column gives files and quality values).
    quality : dict or table, optional
        Quality values per frame (see :class:`FrameBrowser`).
    **options
        ``flagged``, ``interactive``, ``figsize``, ``cache_size`` of :class:`FrameBrowser`.

    Returns
    -------
    FrameBrowser
        Show it as a cell's last expression; pass ``.kept`` to the next step in a later
        cell.
    """
    return FrameBrowser(files, quality, **options)
