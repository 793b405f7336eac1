"""Layer 4: the combine picker -- ``image_combination``'s method, clipping and limits.

:func:`combine_picker` shows dropdowns and boxes for the combination method, the
rejection algorithm and its two thresholds, and the memory limit; ``.kwargs`` holds
exactly the keyword arguments that apply. The names it offers are those of the one
stacking engine (:data:`astrodart.combine.methods.COMBINE_METHODS`,
:data:`astrodart.combine.methods.CLIPPING_METHODS`).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from astrodart.combine.methods import CLIPPING_METHODS, COMBINE_METHODS
from astrodart.frames.checks import check_choice
from astrodart.ui.base import _Widget

__all__ = [
    "CombinePicker",
    "combine_picker",
]

log = logging.getLogger("astrodart")

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
    return check_choice(name, value, choices)


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
