"""Layer 4: the plumbing every astrodart widget shares.

:func:`frontend_available` decides whether a widget can be shown (a Jupyter kernel) or
the headless fallback applies; :class:`_Figure` is a matplotlib figure drawn on an ipympl
canvas (the ``jupyter-matplotlib`` widget) built directly, whatever pyplot backend the
notebook selected, or a static PNG without ipympl; :class:`_Widget` gives each widget
its rich display and change callbacks. ipywidgets, matplotlib and ipympl are imported
only when a widget is built.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from astrodart.ui.plotting import image_array

__all__ = ["frontend_available"]

log = logging.getLogger("astrodart")


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


#: ipympl's matplotlib backend, named as matplotlib names a third-party backend.
_IPYMPL_BACKEND = "module://ipympl.backend_nbagg"


def _ipympl_classes() -> tuple[type, type]:
    """ipympl's canvas widget and figure manager, loaded without switching pyplot's backend.

    ipympl is reached through matplotlib's backend interface only: the module of the
    ``module://ipympl.backend_nbagg`` backend (loaded by matplotlib's backend registry)
    exports ``FigureCanvas`` -- the ``jupyter-matplotlib`` canvas widget -- and
    ``FigureManager``, as every matplotlib backend module does. Loading it first imports
    the ``ipympl`` package, whose ``__init__`` calls ``matplotlib.use`` on that backend
    when matplotlib is loaded (ipympl issue #623): that would switch the notebook's
    pyplot backend and close its open figures (a user on ``%matplotlib inline`` would
    suddenly get widget figures). The widgets build their canvases directly and need no
    backend switch, so ``matplotlib.use`` is a no-op during that first import.

    Returns
    -------
    (type, type)
        The backend's ``FigureCanvas`` and ``FigureManager`` classes.

    Raises
    ------
    ImportError
        ipympl is not installed.
    """
    import importlib
    import sys

    import matplotlib

    try:
        from matplotlib.backends import backend_registry  # matplotlib >= 3.9
        load = backend_registry.load_backend_module
    except ImportError:
        def load(name: str):
            return importlib.import_module(name.removeprefix("module://"))
    if "ipympl" in sys.modules:
        module = load(_IPYMPL_BACKEND)
    else:
        use = matplotlib.use
        matplotlib.use = lambda *args, **kwargs: None
        try:
            module = load(_IPYMPL_BACKEND)
        finally:
            matplotlib.use = use
    return module.FigureCanvas, module.FigureManager


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
