"""Layer 5: notebook widgets that turn clicks into the plain arguments of the stages.

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
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from astrodart.ui.plotting import as_positions, image_array, mark_stars, show_image, zscale_limits

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
# Front end detection and shared plumbing
# ---------------------------------------------------------------------------------------
def frontend_available() -> bool:
    """Whether widgets can be shown: code runs in a Jupyter kernel.

    Returns
    -------
    bool
        True inside an IPython kernel (JupyterLab, Notebook, VS Code, or a notebook run
        by nbclient, whose widget state is saved with the notebook); False in plain
        Python, in a terminal IPython and in pytest, or when the environment variable
        ``ASTRODART_HEADLESS`` is set to ``1``/``true``/``yes``.
    """
    if os.environ.get("ASTRODART_HEADLESS", "").strip().lower() in ("1", "true", "yes"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _image_shape(image: Any) -> tuple[int, int]:
    """``(ny, nx)`` of an image; a FITS path is measured from its header only."""
    if isinstance(image, (str, Path)):
        from astrodart.frames.header import shape_of

        return shape_of(image)
    if isinstance(image, tuple) and len(image) == 2 and all(isinstance(v, int) for v in image):
        return image
    return image_array(image).shape


def _auto_figsize(figsize: tuple[float, float] | None, shape: tuple[int, int],
                  width: float) -> tuple[float, float]:
    """``figsize`` if given, else ``width`` inches wide and as high as the image's aspect
    ratio asks (plus room for the title and axis labels), within sensible bounds."""
    if figsize is not None:
        return figsize
    ny, nx = shape
    return width, float(min(max(width * ny / nx + 0.9, 2.5), 1.4 * width))


def _ipympl_classes() -> tuple[type, type]:
    """ipympl's ``Canvas`` and ``FigureManager``, imported without side effects.

    Importing the ``ipympl`` package calls ``matplotlib.use('module://ipympl...')`` when
    matplotlib is loaded, which would switch the notebook's pyplot backend (a user on
    ``%matplotlib inline`` would suddenly get widget figures). The widgets build their
    canvases directly and need no backend switch, so ``matplotlib.use`` is made a no-op
    for the duration of that first import.
    """
    import sys

    if "ipympl.backend_nbagg" not in sys.modules:
        import matplotlib

        use = matplotlib.use
        matplotlib.use = lambda *args, **kwargs: None
        try:
            import ipympl.backend_nbagg  # noqa: F401
        finally:
            matplotlib.use = use
    from ipympl.backend_nbagg import Canvas, FigureManager

    return Canvas, FigureManager


class _Figure:
    """A matplotlib figure shown in a widget: an ipympl canvas when ipympl is installed,
    otherwise a static PNG re-rendered on every redraw."""

    def __init__(self, figsize: tuple[float, float]):
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=figsize)
        try:
            Canvas, FigureManager = _ipympl_classes()
        except ImportError:
            import ipywidgets as w
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            log.warning("ipympl is not installed: images are static; install ipympl "
                        "(pip install ipympl) to drag and click on them")
            FigureCanvasAgg(self.figure)
            self.widget = w.Image(format="png")
            self.interactive = False
        else:
            canvas = Canvas(self.figure)
            # A manager gives the canvas its toolbar (zoom/pan) without registering the
            # figure with pyplot, so it is never shown twice nor kept alive by pyplot.
            with warnings.catch_warnings():
                # ipympl's own Toolbar passes its canvas on to traitlets (ipympl 0.9-0.10)
                warnings.filterwarnings("ignore", "Passing unrecognized arguments",
                                        DeprecationWarning)
                FigureManager(canvas, 0)
            canvas.header_visible = False
            canvas.footer_visible = False
            canvas.toolbar_position = "left"
            canvas.toolbar_visible = "visible"
            canvas.add_class("astrodart-canvas")
            self.widget = canvas
            self.interactive = True
        self.canvas = self.figure.canvas

    def draw(self) -> None:
        """Redraw (lazily on ipympl; at once for a static picture)."""
        if self.interactive:
            self.canvas.draw_idle()
            return
        import io

        buf = io.BytesIO()
        self.figure.savefig(buf, format="png")
        self.widget.value = buf.getvalue()

    def navigating(self) -> bool:
        """True while the zoom or pan tool is active (clicks then belong to it)."""
        return bool(self.canvas.widgetlock.locked()) or bool(
            str(getattr(getattr(self.canvas, "toolbar", None), "mode", "") or ""))


class _Widget:
    """Shared behaviour: a ``widget`` (None when headless), rich display, change callbacks."""

    widget: Any = None

    def __init__(self) -> None:
        self._callbacks: list[Callable[[Any], None]] = []

    @property
    def interactive(self) -> bool:
        """True when a widget was built (False in the headless fallback)."""
        return self.widget is not None

    def on_change(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(self)`` whenever the value changes.

        Parameters
        ----------
        callback : callable
            Receives this object; exceptions it raises are logged, not raised, so a
            broken callback cannot freeze the widget.
        """
        self._callbacks.append(callback)

    def _notify(self) -> None:
        for cb in self._callbacks:
            try:
                cb(self)
            except Exception:  # a user callback must not break the widget
                log.exception("astrodart widget callback %r failed", cb)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        if self.widget is None:
            return {"text/plain": repr(self)}
        return self.widget._repr_mimebundle_(**kwargs)

    @staticmethod
    def _decide(interactive: bool | None) -> bool:
        return frontend_available() if interactive is None else bool(interactive)


# ---------------------------------------------------------------------------------------
# Region picker
# ---------------------------------------------------------------------------------------
def section_bounds(section: str, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Validate a FITS section against a frame shape and return its bounds.

    Parameters
    ----------
    section : str
        ``'[x1:x2,y1:y2]'``, 1-based, inclusive, x (columns) first; ``*`` is a whole
        axis. The same syntax :func:`astrodart.calibration.ccd.parse_section` (and so
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
    from astrodart.calibration.ccd import parse_section

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


# ---------------------------------------------------------------------------------------
# Combine-method picker
# ---------------------------------------------------------------------------------------
#: Combination methods of ``image_combination``.
COMBINE_METHODS = ("median", "average", "sum", "weighted", "scaled")
#: Rejection methods of ``image_combination`` (None = no rejection).
CLIPPING_METHODS = (None, "sigclip", "extrema_clipping", "minmax")

# Which keyword arguments each clipping method uses.
_CLIP_FIELDS = {
    None: (),
    "sigclip": ("minclip", "maxclip"),
    "extrema_clipping": ("nlow", "nhigh"),
    "minmax": ("minmax_clip_min", "minmax_clip_max"),
}


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("none", ""):
        value = None
    if isinstance(value, str):
        value = value.strip().lower()
    if value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not known; use one of {shown}")
    return value


class CombinePicker(_Widget):
    """Choose the keyword arguments of ``image_combination`` with dropdowns and boxes.

    Only the fields of the chosen clipping method are enabled; ``.kwargs`` (also
    ``.value``) holds exactly the arguments that apply, ready for
    ``image_combination(wdir, files, output_name, **picker.kwargs)``. Build it with
    :func:`combine_picker`.

    Parameters
    ----------
    combining_method : {'median', 'average', 'sum', 'weighted', 'scaled'}
        How frames are combined. 'weighted' and 'scaled' need per-frame ``weights`` /
        ``scale``, passed here or to ``image_combination`` directly.
    clipping_method : {None, 'none', 'sigclip', 'extrema_clipping', 'minmax'}
        Pixel rejection before combining.
    minclip, maxclip : float
        'sigclip': low and high thresholds in standard deviations (> 0).
    nlow, nhigh : int
        'extrema_clipping': numbers of lowest and highest values dropped per pixel (>= 0).
    minmax_clip_min, minmax_clip_max : float, optional
        'minmax': values outside ``[min, max]`` are rejected (in the unit of the data;
        one of them may be None, not both).
    memory_limit : float
        Bytes that combining may hold in memory (> 0); shown in MB in the widget.
    weights, scale : sequence of float, optional
        Passed through for 'weighted' and 'scaled' (one value per file).
    interactive : bool, optional
        Build the widget, never, or decide by :func:`frontend_available` (None).

    Raises
    ------
    ValueError
        An unknown method or clipping name, or a threshold out of range.
    """

    def __init__(self, combining_method: str = "median", clipping_method: str | None = None, *,
                 minclip: float = 3.0, maxclip: float = 3.0, nlow: int = 1, nhigh: int = 1,
                 minmax_clip_min: float | None = 0.0, minmax_clip_max: float | None = 65535.0,
                 memory_limit: float = 1e9, weights: Sequence[float] | None = None,
                 scale: Sequence[float] | None = None, interactive: bool | None = None) -> None:
        super().__init__()
        self.weights = None if weights is None else [float(v) for v in weights]
        self.scale = None if scale is None else [float(v) for v in scale]
        self._state: dict[str, Any] = {}
        self._fields: dict[str, Any] = {}
        self._preview = None
        self._note = None
        self._syncing = False
        self.update(combining_method=combining_method, clipping_method=clipping_method,
                    minclip=minclip, maxclip=maxclip, nlow=nlow, nhigh=nhigh,
                    minmax_clip_min=minmax_clip_min, minmax_clip_max=minmax_clip_max,
                    memory_limit=memory_limit)
        if self._decide(interactive):
            self._build()

    # -- value -------------------------------------------------------------------------
    @staticmethod
    def _validated(state: dict[str, Any]) -> dict[str, Any]:
        s = dict(state)
        s["combining_method"] = _check_choice("combining_method", s["combining_method"],
                                              COMBINE_METHODS)
        s["clipping_method"] = _check_choice("clipping_method", s["clipping_method"],
                                             CLIPPING_METHODS)
        for key in ("minclip", "maxclip"):
            s[key] = float(s[key])
            if not s[key] > 0:
                raise ValueError(f"{key}={s[key]} must be a positive number of standard "
                                 "deviations")
        for key in ("nlow", "nhigh"):
            if float(s[key]) != int(s[key]) or int(s[key]) < 0:
                raise ValueError(f"{key}={s[key]} must be a whole number >= 0")
            s[key] = int(s[key])
        lo, hi = s["minmax_clip_min"], s["minmax_clip_max"]
        lo = None if lo is None else float(lo)
        hi = None if hi is None else float(hi)
        if s["clipping_method"] == "minmax":
            if lo is None and hi is None:
                raise ValueError("clipping_method='minmax' needs minmax_clip_min and/or "
                                 "minmax_clip_max")
            if lo is not None and hi is not None and not lo < hi:
                raise ValueError(f"minmax_clip_min={lo} must be below minmax_clip_max={hi}")
        s["minmax_clip_min"], s["minmax_clip_max"] = lo, hi
        s["memory_limit"] = float(s["memory_limit"])
        if not s["memory_limit"] > 0:
            raise ValueError(f"memory_limit={s['memory_limit']} must be a positive number "
                             "of bytes")
        return s

    def update(self, **changes: Any) -> None:
        """Change some settings (validated together), updating the widget.

        Parameters
        ----------
        **changes
            Any of ``combining_method``, ``clipping_method``, ``minclip``, ``maxclip``,
            ``nlow``, ``nhigh``, ``minmax_clip_min``, ``minmax_clip_max``,
            ``memory_limit``.

        Raises
        ------
        ValueError
            An unknown setting name, or an invalid value; nothing is changed then.
        """
        known = ("combining_method", "clipping_method", "minclip", "maxclip", "nlow", "nhigh",
                 "minmax_clip_min", "minmax_clip_max", "memory_limit")
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; known: {list(known)}")
        new = self._validated({**self._state, **changes})
        changed = new != self._state
        self._state = new
        if self.widget is not None:
            self._sync_widgets()
        if changed:
            self._notify()

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``image_combination`` that apply to the chosen settings:
        ``combining_method``, ``clipping_method``, the two thresholds of that clipping
        method, ``memory_limit``, and ``weights``/``scale`` for 'weighted'/'scaled' when
        they were given."""
        s = self._state
        out: dict[str, Any] = {"combining_method": s["combining_method"],
                               "clipping_method": s["clipping_method"]}
        for key in _CLIP_FIELDS[s["clipping_method"]]:
            if s[key] is not None:
                out[key] = s[key]
        out["memory_limit"] = s["memory_limit"]
        if s["combining_method"] == "weighted" and self.weights is not None:
            out["weights"] = list(self.weights)
        if s["combining_method"] == "scaled" and self.scale is not None:
            out["scale"] = list(self.scale)
        return out

    @property
    def value(self) -> dict[str, Any]:
        """Same as :attr:`kwargs`."""
        return self.kwargs

    def __repr__(self) -> str:
        mode = "widget" if self.interactive else "headless"
        return f"CombinePicker({self.kwargs!r}, {mode})"

    def _needs_note(self) -> str:
        method = self._state["combining_method"]
        if method == "weighted" and self.weights is None:
            return "'weighted' needs weights=[...] (one per file) in image_combination"
        if method == "scaled" and self.scale is None:
            return "'scaled' needs scale=[...] (one per file) in image_combination"
        return ""

    # -- widget ------------------------------------------------------------------------
    def _build(self) -> None:
        import ipywidgets as w

        style = {"description_width": "150px"}
        lay = w.Layout(width="330px")
        f = self._fields
        f["combining_method"] = w.Dropdown(options=list(COMBINE_METHODS), description="method",
                                           style=style, layout=lay)
        f["clipping_method"] = w.Dropdown(
            options=[("none", "none")] + [(c, c) for c in CLIPPING_METHODS if c],
            description="clipping", style=style, layout=lay)
        f["minclip"] = w.BoundedFloatText(min=0.01, max=1e3, step=0.5,
                                          description="low (sigma)", style=style, layout=lay)
        f["maxclip"] = w.BoundedFloatText(min=0.01, max=1e3, step=0.5,
                                          description="high (sigma)", style=style, layout=lay)
        f["nlow"] = w.BoundedIntText(min=0, max=1000, description="drop lowest (n)",
                                     style=style, layout=lay)
        f["nhigh"] = w.BoundedIntText(min=0, max=1000, description="drop highest (n)",
                                      style=style, layout=lay)
        f["minmax_clip_min"] = w.FloatText(description="reject below", style=style, layout=lay)
        f["minmax_clip_max"] = w.FloatText(description="reject above", style=style, layout=lay)
        f["memory_limit"] = w.BoundedFloatText(min=1, max=1e7, step=100,
                                               description="memory limit (MB)", style=style,
                                               layout=lay)
        for name, field in f.items():
            field.add_class(f"astrodart-{name.replace('_', '-')}")
            field.observe(self._on_field, names="value")
        self._note = w.HTML()
        self._preview = w.HTML()
        self._preview.add_class("astrodart-combine-preview")
        self.widget = w.VBox([*f.values(), self._note, self._preview])
        self.widget.add_class("astrodart-combine-picker")
        self._sync_widgets()

    def _on_field(self, change: dict) -> None:
        if self._syncing:
            return
        name = next(k for k, v in self._fields.items() if v is change["owner"])
        value = change["new"]
        if name == "memory_limit":
            value = float(value) * 1e6
        try:
            self.update(**{name: value})
        except ValueError as exc:
            self._note.value = f'<span style="color:#b00020">{exc}</span>'
            self._sync_widgets(keep_note=True)

    def _sync_widgets(self, keep_note: bool = False) -> None:
        import html

        s = self._state
        self._syncing = True
        try:
            for name, field in self._fields.items():
                value = s[name]
                if name == "clipping_method":
                    value = value or "none"
                elif name == "memory_limit":
                    value = value / 1e6
                elif value is None:  # an open minmax bound (JSON has no infinity)
                    value = -1e30 if name == "minmax_clip_min" else 1e30
                if field.value != value:
                    field.value = value
            active = _CLIP_FIELDS[s["clipping_method"]]
            for names in _CLIP_FIELDS.values():
                for name in names:
                    self._fields[name].disabled = name not in active
        finally:
            self._syncing = False
        if not keep_note:
            note = self._needs_note()
            self._note.value = (f'<span style="color:#8a5a00">{html.escape(note)}</span>'
                                if note else "")
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        self._preview.value = (f"<code>image_combination(wdir, files, output_name, "
                               f"{html.escape(args)})</code>")


def combine_picker(combining_method: str = "median", clipping_method: str | None = None,
                   **options: Any) -> CombinePicker:
    """Choose ``image_combination``'s method, clipping and limits (see :class:`CombinePicker`).

    Parameters
    ----------
    combining_method : str
        Initial (and headless) method.
    clipping_method : str or None
        Initial (and headless) clipping.
    **options
        Thresholds, ``memory_limit``, ``weights``, ``scale``, ``interactive`` of
        :class:`CombinePicker`.

    Returns
    -------
    CombinePicker
        Show it as a cell's last expression; pass ``**picker.kwargs`` in a later cell.

    Examples
    --------
    >>> combine_picker('median', 'sigclip', minclip=2, maxclip=5, interactive=False).kwargs
    {'combining_method': 'median', 'clipping_method': 'sigclip', 'minclip': 2.0, 'maxclip': 5.0, \
'memory_limit': 1000000000.0}
    """
    return CombinePicker(combining_method, clipping_method, **options)


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


# ---------------------------------------------------------------------------------------
# Frame browser
# ---------------------------------------------------------------------------------------
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
        ``file`` column (e.g. from :func:`astrodart.sources.quality.quality_table`) gives both
        the files and their quality values.
    quality : dict or table, optional
        Quality values per frame: ``{file: {metric: value}}`` (file paths or names),
        ``{metric: [value per frame]}``, or an astropy Table / pandas DataFrame with
        one row per frame (in the order of ``files``, or matched by a ``file``
        column).
    flagged : iterable of int or path, optional
        Frames flagged from the start (indices or file paths/names); this is also the
        headless result. By default the frames whose quality ``good`` value is False
        (the verdict of :func:`astrodart.sources.quality.quality_table`), else none.
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
