"""Layer 4: the region picker -- a FITS section chosen on an image.

:func:`region_picker` shows a zscale image on which a rectangle is dragged (or the
section typed); ``.section`` is the ``'[x1:x2,y1:y2]'`` string ``trimmer`` and
``overscan_correction`` accept. :func:`section_bounds` and :func:`format_section`
convert between that string and its bounds. Sections are 1-based, inclusive, x first;
pixel ``(x, y)`` (0-based) lies in column ``x + 1`` and row ``y + 1``.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from astrodart.ui.base import _auto_figsize, _Figure, _image_shape, _Widget
from astrodart.ui.plotting import image_array, show_image

__all__ = [
    "section_bounds",
    "format_section",
    "RegionPicker",
    "region_picker",
]

log = logging.getLogger("astrodart")


def section_bounds(section: str, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Validate a FITS section against a frame shape and return its bounds.

    Parameters
    ----------
    section : str
        ``'[x1:x2,y1:y2]'``, 1-based, inclusive, x (columns) first; ``*`` is a whole
        axis. The same syntax :func:`astrodart.calibration.sections.parse_section` (and so
        ``trimmer``) accepts.
    shape : (int, int)
        ``(ny, nx)`` of the frame.

    Returns
    -------
    (int, int, int, int)
        ``(x1, x2, y1, y2)``, 1-based and inclusive.

    Raises
    ------
    ValueError
        A malformed section, a reversed or empty range, or a range outside the frame;
        the message shows the expected form and the frame size.
    """
    from astrodart.calibration.sections import parse_section

    rows, cols = parse_section(section, shape)
    return cols.start + 1, cols.stop, rows.start + 1, rows.stop


def format_section(x1: int, x2: int, y1: int, y2: int) -> str:
    """Write bounds as a FITS section string.

    Parameters
    ----------
    x1, x2, y1, y2 : int
        1-based inclusive bounds, x (columns) first.

    Returns
    -------
    str
        ``'[x1:x2,y1:y2]'``.
    """
    return f"[{int(x1)}:{int(x2)},{int(y1)}:{int(y2)}]"


def _pixel_span(a: float, b: float, n: int) -> tuple[int, int]:
    """0-based first and last pixel overlapped by the interval between data coordinates
    ``a`` and ``b`` (pixel centres at integers, pixel ``i`` spans ``i - 0.5 .. i + 0.5``),
    clipped to ``0 .. n - 1``. An edge on a pixel border does not take the next pixel."""
    lo, hi = min(a, b), max(a, b)
    first = math.floor(lo + 0.5)
    last = max(math.ceil(hi - 0.5), first)
    return int(min(max(first, 0), n - 1)), int(min(max(last, 0), n - 1))


class RegionPicker(_Widget):
    """Choose a FITS section on an image, for ``trimmer`` or ``overscan_correction``.

    Drag a rectangle on the zscale image (drag its handles or its centre to adjust
    it), or type the section in the text box and press Enter. The current, always
    valid, section is ``.section`` (also ``.value``). Build it with
    :func:`region_picker`.

    Parameters
    ----------
    image : path, CCDData, HDU, array-like, or (ny, nx)
        The frame to draw on. A shape tuple is enough for the headless fallback.
    default : str, optional
        Initial section; the whole frame by default. Validated against the image.
    interactive : bool, optional
        Build the widget (True), never build it (False), or decide by
        :func:`frontend_available` (None).
    title : str, optional
        Image title; the file name for a path.
    figsize : (float, float), optional
        Figure size in inches; by default 6 wide (7 for the star picker) and as high
        as the image's aspect ratio asks.
    min_size : int
        Rectangles narrower or lower than this (pixels) are taken as stray clicks
        and ignored.

    Attributes
    ----------
    section : str
        The chosen section ``'[x1:x2,y1:y2]'``.
    shape : (int, int)
        ``(ny, nx)`` of the image.
    widget : ipywidgets.VBox or None
        The widget, None when headless.

    Raises
    ------
    ValueError
        ``default`` is malformed or outside the image.
    """

    def __init__(self, image: Any, default: str | None = None, *, interactive: bool | None = None,
                 title: str | None = None, figsize: tuple[float, float] | None = None,
                 min_size: int = 2) -> None:
        super().__init__()
        build = self._decide(interactive)
        data = image_array(image) if build else None
        self.shape = data.shape if data is not None else _image_shape(image)
        ny, nx = self.shape
        self.min_size = int(min_size)
        self.section = format_section(*section_bounds(
            default if default is not None else format_section(1, nx, 1, ny), self.shape))
        self._selector = None
        self._text = None
        self._status = None
        if build:
            if title is None and isinstance(image, (str, Path)):
                title = Path(image).name
            self._build(data, title, figsize)

    # -- value -------------------------------------------------------------------------
    @property
    def value(self) -> str:
        """The chosen section (same as ``.section``)."""
        return self.section

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """``(x1, x2, y1, y2)`` of the section, 1-based and inclusive."""
        return section_bounds(self.section, self.shape)

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, columns)`` slices that cut the section out of a ``(ny, nx)`` array."""
        x1, x2, y1, y2 = self.bounds
        return slice(y1 - 1, y2), slice(x1 - 1, x2)

    def set_section(self, section: str) -> None:
        """Set the section (validated), updating the text box and the rectangle.

        Parameters
        ----------
        section : str
            ``'[x1:x2,y1:y2]'`` (see :func:`section_bounds`).

        Raises
        ------
        ValueError
            Malformed or outside the image; the section is left unchanged.
        """
        bounds = section_bounds(section, self.shape)
        new = format_section(*bounds)
        changed = new != self.section
        self.section = new
        if self.widget is not None:
            self._show(bounds)
        if changed:
            log.debug("region picker: section %s", new)
            self._notify()

    def __repr__(self) -> str:
        mode = "widget" if self.interactive else "headless"
        return f"RegionPicker(section={self.section!r}, shape={self.shape}, {mode})"

    # -- events ------------------------------------------------------------------------
    def _on_select(self, eclick: Any, erelease: Any) -> None:
        """RectangleSelector callback: press and release events in data coordinates."""
        xs = [eclick.xdata, erelease.xdata]
        ys = [eclick.ydata, erelease.ydata]
        if None in xs or None in ys:
            if self._selector is None:
                return
            x0, x1, y0, y1 = self._selector.extents
            xs, ys = [x0, x1], [y0, y1]
        ny, nx = self.shape
        c1, c2 = _pixel_span(xs[0], xs[1], nx)
        r1, r2 = _pixel_span(ys[0], ys[1], ny)
        if c2 - c1 + 1 < self.min_size or r2 - r1 + 1 < self.min_size:
            self._set_status("ignored a rectangle smaller than "
                             f"{self.min_size} px; drag a larger one", error=True)
            return
        self.set_section(format_section(c1 + 1, c2 + 1, r1 + 1, r2 + 1))

    def _on_text(self, change: dict) -> None:
        text = change["new"]
        if text == self.section:  # our own update of the box
            return
        try:
            self.set_section(text)
        except ValueError as exc:
            self._set_status(str(exc), error=True)

    # -- widget ------------------------------------------------------------------------
    def _build(self, data: np.ndarray, title: str | None,
               figsize: tuple[float, float] | None) -> None:
        import ipywidgets as w
        from matplotlib.widgets import RectangleSelector

        self._fig = _Figure(_auto_figsize(figsize, data.shape, 6.0))
        ax = self._fig.figure.add_subplot()
        show_image(data, ax=ax, title=title)
        self._fig.figure.tight_layout()
        self._selector = RectangleSelector(
            ax, self._on_select, useblit=False, button=[1], interactive=True,
            spancoords="data", minspanx=0, minspany=0,
            props={"facecolor": "yellow", "edgecolor": "yellow", "alpha": 0.15, "fill": True,
                   "lw": 2})
        self._text = w.Text(value=self.section, description="section",
                            continuous_update=False, placeholder="[x1:x2,y1:y2]",
                            layout=w.Layout(width="260px"))
        self._text.add_class("astrodart-section")
        self._text.observe(self._on_text, names="value")
        reset = w.Button(description="whole frame", layout=w.Layout(width="110px"))
        ny, nx = self.shape
        reset.on_click(lambda _: self.set_section(format_section(1, nx, 1, ny)))
        self._status = w.HTML()
        self._status.add_class("astrodart-status")
        self.widget = w.VBox([self._fig.widget, w.HBox([self._text, reset]), self._status])
        self.widget.add_class("astrodart-region-picker")
        self._show(self.bounds)

    def _show(self, bounds: tuple[int, int, int, int]) -> None:
        x1, x2, y1, y2 = bounds
        if self._text is not None and self._text.value != self.section:
            self._text.value = self.section
        if self._selector is not None:
            self._selector.extents = (x1 - 1.5, x2 - 0.5, y1 - 1.5, y2 - 0.5)
            self._selector.set_visible(True)
            self._fig.draw()
        self._set_status(f"{self.section}: {x2 - x1 + 1} x {y2 - y1 + 1} px of "
                         f"{self.shape[1]} x {self.shape[0]}")

    def _set_status(self, text: str, error: bool = False) -> None:
        if self._status is not None:
            import html

            color = "#b00020" if error else "#333"
            self._status.value = f'<span style="color:{color}">{html.escape(text)}</span>'


def region_picker(image: Any, default: str | None = None, **options: Any) -> RegionPicker:
    """Pick a FITS section on an image (see :class:`RegionPicker`).

    Parameters
    ----------
    image : path, CCDData, HDU, array-like, or (ny, nx)
        Frame to draw on.
    default : str, optional
        Initial (and headless) section, e.g. ``'[1:1024,1:1024]'``; whole frame if None.
    **options
        ``interactive``, ``title``, ``figsize``, ``min_size`` of :class:`RegionPicker`.

    Returns
    -------
    RegionPicker
        Show it as a cell's last expression; read ``.section`` in a later cell.

    Raises
    ------
    ValueError
        ``default`` is malformed or outside the image.

    Examples
    --------
    >>> p = region_picker((1024, 1024), default='[10:1000, 20:990]', interactive=False)
    >>> p.section
    '[10:1000,20:990]'
    """
    return RegionPicker(image, default, **options)
