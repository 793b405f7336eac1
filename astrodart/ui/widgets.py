"""Layer 4: notebook widgets that turn clicks into the plain arguments of the stages.

Every widget here produces a plain Python value that a stage accepts as written in a
script, so a notebook that was steered by clicks can be replayed without them:

* :func:`region_picker` -- drag a rectangle on a zscale image, or type the section;
  read ``.section`` for ``trimmer(wdir, files, region=...)``.
* :func:`combine_picker` -- choose method, clipping, thresholds and memory limit; read
  ``.kwargs`` for ``image_combination(wdir, files, output_name, **kwargs)``.
* :func:`star_picker` -- click the target and the comparison stars, or pick their
  numbers; read ``.target_index``/``.comparison_indices`` (and their positions).
* :func:`frame_browser` -- step through the frames with their quality values and tick
  the bad ones; read ``.kept`` for the next step's ``files``.

Each widget lives in its own module -- :mod:`astrodart.ui.regions`,
:mod:`astrodart.ui.combining`, :mod:`astrodart.ui.browser`, the star picker here -- over the
shared plumbing of :mod:`astrodart.ui.base`; this module is the one place to import them from.

How a notebook uses them: build and show the widget as the last line of a cell, act
on it, then read its value in the *next* cell (a cell's code runs before the user can
click, so the value must not be read in the cell that shows the widget)::

    # cell 1
    from astrodart.ui.widgets import region_picker
    picker = region_picker(bias_files[0], default='[1:1024,1:1024]')
    picker                                   # shows the image and the section box

    # cell 2 (after dragging a rectangle or editing the text box)
    results_trim = trimmer(wdir=bias_dir, files=bias_files, region=picker.section,
                           overwrite='yes').run()

Headless fallback: where no Jupyter front end is there (a script, pytest, a batch
job), the same calls build no widget and the value is the validated default, so the
notebook's code runs unchanged: ``region_picker(image, default='[1:1024,1:1024]').section``
is ``'[1:1024,1:1024]'``, or a clear ``ValueError`` if that section is malformed or does
not fit the image. ``interactive=True``/``False`` forces either behaviour, and the
environment variable ``ASTRODART_HEADLESS=1`` forces the fallback everywhere.

The images are drawn on an ipympl canvas (the ``jupyter-matplotlib`` widget, the
backend of ``%matplotlib widget``) built directly, so the widgets work whatever
backend the notebook selected (``%matplotlib inline`` stays in force for other plots). Without ipympl they fall back to a static picture and
the text/list controls still work.

Nothing here is imported by ``import astrodart``; ipywidgets, matplotlib and ipympl
are imported only when a widget is built.

Coordinates: star positions are 0-based pixel ``(x, y)`` (numpy/photutils; ``x`` the
column), FITS sections are ``'[x1:x2,y1:y2]'``, 1-based, inclusive, x first; pixel
``(x, y)`` lies in column ``x + 1`` and row ``y + 1`` of a section.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from astrodart.ui.base import _auto_figsize, _Figure, _Widget, frontend_available
from astrodart.ui.browser import FrameBrowser, frame_browser
from astrodart.combine.methods import CLIPPING_METHODS, COMBINE_METHODS
from astrodart.ui.combining import CombinePicker, combine_picker
from astrodart.ui.plotting import as_positions, image_array, mark_stars, show_image
from astrodart.ui.regions import RegionPicker, format_section, region_picker, section_bounds

__all__ = [
    "frontend_available",
    "section_bounds",
    "format_section",
    "RegionPicker",
    "region_picker",
    "COMBINE_METHODS",
    "CLIPPING_METHODS",
    "CombinePicker",
    "combine_picker",
    "StarPicker",
    "star_picker",
    "FrameBrowser",
    "frame_browser",
]

log = logging.getLogger("astrodart")

# ---------------------------------------------------------------------------------------
# Combine-method picker
# ---------------------------------------------------------------------------------------
# COMBINE_METHODS and CLIPPING_METHODS: one home, astrodart.combine.methods (imported above).


# ---------------------------------------------------------------------------------------
# Star picker
# ---------------------------------------------------------------------------------------
def _detect_stars(data: np.ndarray, fwhm: float, threshold: float, max_stars: int) -> np.ndarray:
    """Positions ``(n, 2)`` of the brightest stars, brightest first, found by
    :func:`astrodart.sources.stars.find_stars` (the detection behind ``check_image``, so
    the numbers agree with its plot for the same FWHM and threshold)."""
    from astrodart.sources.stars import find_stars

    table = find_stars(np.asarray(data, float), fwhm=fwhm, threshold=threshold,
                       max_stars=max_stars)
    return as_positions(table)


class StarPicker(_Widget):
    """Choose the target and the comparison stars on a reference image.

    Stars are numbered 0, 1, 2, ... in the order of ``stars`` (brightest first when
    detected here). Click a star on the image (the click snaps to the nearest listed
    star within ``snap_radius``): in 'target' mode it becomes the target, in
    'comparison' mode it is added to or removed from the comparisons. The dropdown and
    the list below the image do the same by number. Build it with :func:`star_picker`.

    Parameters
    ----------
    image : path, CCDData, HDU or array-like
        Reference frame.
    stars : array-like or table, optional
        Star positions, 0-based pixel ``(x, y)``, as an ``(n, 2)`` array or a table
        with ``xcentroid``/``ycentroid`` or ``x``/``y`` columns (e.g. from
        ``check_image``). Detected on ``image`` when None
        (:func:`astrodart.sources.stars.find_stars`, brightest first).
    target : int, optional
        Initial (and headless) target number.
    comparisons : sequence of int
        Initial (and headless) comparison numbers.
    snap_radius : float
        A click farther than this (pixels) from every star selects nothing.
    fwhm, threshold : float
        Detection FWHM (pixels) and threshold (in sigma of the matched-filtered
        background) when ``stars`` is None.
    max_stars : int
        Keep at most this many detected stars.
    interactive : bool, optional
        Build the widget, never, or decide by :func:`frontend_available` (None).
    figsize : (float, float), optional
        Figure size in inches; by default 6 wide (7 for the star picker) and as high
        as the image's aspect ratio asks.

    Attributes
    ----------
    stars : numpy.ndarray
        ``(n, 2)`` positions ``(x, y)``.
    target_index : int or None
        Number of the target.
    comparison_indices : list of int
        Numbers of the comparison stars, in the order they were chosen.

    Raises
    ------
    ValueError
        A target or comparison number outside the list, the target among the
        comparisons, or no star to choose from.
    """

    def __init__(self, image: Any, stars: Any = None, *, target: int | None = None,
                 comparisons: Iterable[int] = (), snap_radius: float = 15.0, fwhm: float = 4.0,
                 threshold: float = 5.0, max_stars: int = 50, interactive: bool | None = None,
                 figsize: tuple[float, float] | None = None) -> None:
        super().__init__()
        build = self._decide(interactive)
        data = image_array(image) if (build or stars is None) else None
        if stars is None:
            self.stars = _detect_stars(data, fwhm, threshold, max_stars)
            log.info("star picker: %d stars detected", len(self.stars))
        else:
            self.stars = as_positions(stars)
        if len(self.stars) == 0:
            raise ValueError("no stars to choose from: give stars=[(x, y), ...] or lower "
                             "threshold=")
        self.snap_radius = float(snap_radius)
        self.target_index: int | None = None
        self.comparison_indices: list[int] = []
        self._syncing = False
        self._highlight: list = []
        if target is not None:
            self.select_target(target)
        for i in comparisons:
            self.add_comparison(i)
        if build:
            title = Path(image).name if isinstance(image, (str, Path)) else None
            self._build(data, title, figsize)

    # -- value -------------------------------------------------------------------------
    def _check(self, index: Any) -> int:
        if isinstance(index, (bool, np.bool_)) or int(index) != index:
            raise ValueError(f"star number {index!r} must be an integer")
        index = int(index)
        if not 0 <= index < len(self.stars):
            raise ValueError(f"star number {index} does not exist; the stars are numbered "
                             f"0..{len(self.stars) - 1}")
        return index

    def _position(self, index: int) -> tuple[float, float]:
        x, y = self.stars[index]
        return float(x), float(y)

    @property
    def target_position(self) -> tuple[float, float] | None:
        """0-based pixel ``(x, y)`` of the target, or None."""
        return None if self.target_index is None else self._position(self.target_index)

    @property
    def comparison_positions(self) -> list[tuple[float, float]]:
        """0-based pixel ``(x, y)`` of each comparison star."""
        return [self._position(i) for i in self.comparison_indices]

    @property
    def value(self) -> dict[str, Any]:
        """``{'target_index', 'target_position', 'comparison_indices', 'comparison_positions'}``."""
        return {"target_index": self.target_index, "target_position": self.target_position,
                "comparison_indices": list(self.comparison_indices),
                "comparison_positions": self.comparison_positions}

    @property
    def kwargs(self) -> dict[str, Any]:
        """``{'target_index': ..., 'comparison_stars_indeces': [...]}`` for
        ``coordinates(...).from_index()`` (AstroDART's spelling of the second name)."""
        return {"target_index": self.target_index,
                "comparison_stars_indeces": list(self.comparison_indices)}

    def select_target(self, index: int | None) -> None:
        """Make star ``index`` the target (None clears it); it leaves the comparisons.

        Parameters
        ----------
        index : int or None
            Star number (row of ``stars``).

        Raises
        ------
        ValueError
            No such star.
        """
        index = None if index is None else self._check(index)
        if index is not None and index in self.comparison_indices:
            self.comparison_indices.remove(index)
        self.target_index = index
        self._changed()

    def add_comparison(self, index: int) -> None:
        """Add star ``index`` to the comparisons (no-op if it is one already).

        Parameters
        ----------
        index : int
            Star number (row of ``stars``).

        Raises
        ------
        ValueError
            No such star, or the star is the target.
        """
        index = self._check(index)
        if index == self.target_index:
            raise ValueError(f"star {index} is the target; it cannot also be a comparison")
        if index not in self.comparison_indices:
            self.comparison_indices.append(index)
            self._changed()

    def remove_comparison(self, index: int) -> None:
        """Remove star ``index`` from the comparisons (no-op if it is not one).

        Parameters
        ----------
        index : int
            Star number (row of ``stars``).

        Raises
        ------
        ValueError
            No such star.
        """
        index = self._check(index)
        if index in self.comparison_indices:
            self.comparison_indices.remove(index)
            self._changed()

    def nearest_star(self, x: float, y: float) -> int | None:
        """The star a click at ``(x, y)`` snaps to.

        Parameters
        ----------
        x, y : float
            0-based pixel position.

        Returns
        -------
        int or None
            Number of the nearest star if it lies within ``snap_radius``, else None.
        """
        d2 = (self.stars[:, 0] - x) ** 2 + (self.stars[:, 1] - y) ** 2
        i = int(np.argmin(d2))
        return i if d2[i] <= self.snap_radius ** 2 else None

    def __repr__(self) -> str:
        mode = "widget" if self.interactive else "headless"
        return (f"StarPicker(target={self.target_index}, comparisons={self.comparison_indices}, "
                f"{len(self.stars)} stars, {mode})")

    # -- events ------------------------------------------------------------------------
    def _on_click(self, event: Any) -> None:
        """Matplotlib ``button_press_event`` handler (left button, on the image axes)."""
        if self.widget is None or event.inaxes is not self._ax or event.button != 1:
            return
        if event.xdata is None or event.ydata is None or self._fig.navigating():
            return
        i = self.nearest_star(event.xdata, event.ydata)
        if i is None:
            self._set_status(f"no star within {self.snap_radius:g} px of "
                             f"({event.xdata:.0f}, {event.ydata:.0f})", error=True)
            return
        if self._mode.value == "target":
            self.select_target(i)
        elif i in self.comparison_indices:
            self.remove_comparison(i)
        elif i == self.target_index:
            self._set_status(f"star {i} is the target; choose another comparison", error=True)
        else:
            self.add_comparison(i)

    def _on_target_dropdown(self, change: dict) -> None:
        if not self._syncing:
            self.select_target(None if change["new"] < 0 else change["new"])

    def _on_comparison_list(self, change: dict) -> None:
        if self._syncing:
            return
        chosen = [int(i) for i in change["new"]]
        # keep the order of earlier choices, append new ones; the target never counts
        kept = [i for i in self.comparison_indices if i in chosen]
        kept += [i for i in chosen if i not in kept and i != self.target_index]
        self.comparison_indices = kept
        self._changed()

    def _changed(self) -> None:
        if self.widget is not None:
            self._sync_widgets()
        self._notify()

    # -- widget ------------------------------------------------------------------------
    def _label(self, i: int) -> str:
        x, y = self.stars[i]
        return f"{i}: x={x:.1f}, y={y:.1f}"

    def _build(self, data: np.ndarray, title: str | None,
               figsize: tuple[float, float] | None) -> None:
        import ipywidgets as w

        self._fig = _Figure(_auto_figsize(figsize, data.shape, 7.0))
        self._ax = self._fig.figure.add_subplot()
        show_image(data, ax=self._ax, title=title)
        mark_stars(self._ax, self.stars, radius=max(4.0, self.snap_radius / 2), color="lime")
        self._fig.figure.tight_layout()
        self._fig.canvas.mpl_connect("button_press_event", self._on_click)
        self._mode = w.ToggleButtons(options=["target", "comparison"], value="target",
                                     description="click picks")
        self._mode.add_class("astrodart-star-mode")
        options = [(self._label(i), i) for i in range(len(self.stars))]
        self._target = w.Dropdown(options=[("(none)", -1)] + options, description="target")
        self._target.add_class("astrodart-target")
        self._target.observe(self._on_target_dropdown, names="value")
        self._comparisons = w.SelectMultiple(options=options, description="comparisons",
                                             rows=min(8, len(options)),
                                             style={"description_width": "initial"})
        self._comparisons.add_class("astrodart-comparisons")
        self._comparisons.observe(self._on_comparison_list, names="value")
        self._status = w.HTML()
        self._status.add_class("astrodart-status")
        self.widget = w.VBox([self._fig.widget, self._mode,
                              w.HBox([self._target, self._comparisons]), self._status])
        self.widget.add_class("astrodart-star-picker")
        self._sync_widgets()

    def _sync_widgets(self) -> None:
        self._syncing = True
        try:
            self._target.value = -1 if self.target_index is None else self.target_index
            self._comparisons.value = tuple(self.comparison_indices)
        finally:
            self._syncing = False
        for artist in self._highlight:
            artist.remove()
        self._highlight = []
        r = max(6.0, self.snap_radius)
        if self.target_index is not None:
            self._highlight += mark_stars(self._ax, [self.target_position], labels=["T"],
                                          radius=r, color="red", fontsize=11,
                                          label_offset=(-0.75 * r, -0.75 * r))
        if self.comparison_indices:
            labels = [f"C{k + 1}" for k in range(len(self.comparison_indices))]
            self._highlight += mark_stars(self._ax, self.comparison_positions, labels=labels,
                                          radius=r, color="cyan", fontsize=11,
                                          label_offset=(-0.75 * r, -0.75 * r))
        self._fig.draw()
        self._set_status(f"target: {self.target_index}; comparisons: {self.comparison_indices}")

    def _set_status(self, text: str, error: bool = False) -> None:
        import html

        color = "#b00020" if error else "#333"
        self._status.value = f'<span style="color:{color}">{html.escape(text)}</span>'


def star_picker(image: Any, stars: Any = None, **options: Any) -> StarPicker:
    """Choose target and comparison stars on an image (see :class:`StarPicker`).

    Parameters
    ----------
    image : path, CCDData, HDU or array-like
        Reference frame.
    stars : array-like or table, optional
        Star positions (0-based pixel ``(x, y)``); detected when None.
    **options
        ``target``, ``comparisons``, ``snap_radius``, ``fwhm``, ``threshold``,
        ``max_stars``, ``interactive``, ``figsize`` of :class:`StarPicker`.

    Returns
    -------
    StarPicker
        Show it as a cell's last expression; read ``.target_index``,
        ``.comparison_indices`` (or ``.value``, ``.kwargs``) in a later cell.
    """
    return StarPicker(image, stars, **options)
