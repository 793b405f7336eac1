"""Layer 2: the vocabulary of the stacking engine, in one place.

The names every combining interface accepts - :func:`astrodart.combine.engine.combine_band`,
:func:`astrodart.combine.files.combine_files`, :class:`astrodart.utils.image_combination`,
:class:`astrodart.first_stage.master_frame` and the combine picker of
:mod:`astrodart.ui.widgets` - and :class:`Rejection`, the settings of the rejection
algorithms, with the parsers that turn the AstroDART spellings into them.

References
----------
* IRAF ``imcombine`` help (rejection algorithms ``minmax``, ``sigclip``; thresholds applied
  to unscaled input values).
* ``astropy.stats.mad_std`` (1.482602218505602 x MAD).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from astrodart.frames.checks import check_number

__all__ = [
    "CLIPPING_METHODS",
    "COMBINE_METHODS",
    "MAD_TO_STD",
    "ENGINE_METHODS",
    "Rejection",
    "clipping_names",
    "parse_method",
    "parse_rejection",
]

#: Combination methods of the engine (weights apply to 'average' and 'sum').
ENGINE_METHODS = ("median", "average", "sum")
#: Combination methods of the file-level interfaces: the engine's plus 'weighted' (the
#: average weighted by ``weights``) and 'scaled' (the average of the frames multiplied by
#: ``scale``, by default each frame's inverse median).
COMBINE_METHODS = ENGINE_METHODS + ("weighted", "scaled")
#: Rejection algorithms a user chooses from (None = no rejection); several may be
#: combined, and they are applied in the order minmax, extrema_clipping, sigclip.
CLIPPING_METHODS = (None, "sigclip", "extrema_clipping", "minmax")
#: Scale from the median absolute deviation to the standard deviation of a Gaussian
#: (1 / Phi^-1(3/4)), as in astropy's ``mad_std`` and ccdproc's ``sigma_func``.
MAD_TO_STD = 1.482602218505602

_APPLY_ORDER = ("minmax", "extrema_clipping", "sigclip")
_CENTERS = ("median", "mean")
_SPREADS = ("mad_std", "std")
_METHOD_ALIASES = {"mean": "average", "avg": "average"}
_CLIP_ALIASES = {
    "sigclip": "sigclip",
    "sigma_clip": "sigclip",
    "sigma_clipping": "sigclip",
    "sigma": "sigclip",
    "extrema_clipping": "extrema_clipping",
    "extrema": "extrema_clipping",
    "clip_extrema": "extrema_clipping",
    "minmax": "minmax",
    "minmax_clipping": "minmax",
    "minmax_clip": "minmax",
}
_NO_CLIP = (None, "", "none", "no")


@dataclass(frozen=True)
class Rejection:
    """Which values of each pixel's stack to reject before combining.

    Parameters
    ----------
    minmax : bool
        Reject values below ``min_value`` or above ``max_value`` (IRAF ``lthreshold``/
        ``hthreshold``, ccdproc ``minmax_clip``). Applied first, to the *unscaled* values.
    min_value, max_value : float or None
        Limits of ``minmax`` in the unit of the data; None = no limit on that side
        (at least one is required when ``minmax`` is True).
    extrema : bool
        Reject the ``nlow`` lowest and ``nhigh`` highest values of each pixel (IRAF
        ``minmax`` rejection, ccdproc ``clip_extrema``). When a pixel has only ``n``
        of ``N`` values left (masked/NaN/minmax), IRAF's rule is used:
        ``int(nlow * n / N + 0.001)`` lowest and likewise highest are dropped.
    nlow, nhigh : int
        Numbers for ``extrema``.
    sigclip : bool
        Iterative sigma clipping: reject ``x < c - sigma_low * s`` or ``x > c + sigma_high * s``
        with ``c`` the centre and ``s`` the spread of the values still kept, repeated
        until nothing changes or ``maxiters`` passes (rejections accumulate, as in
        ``astropy.stats.sigma_clip``).
    sigma_low, sigma_high : float
        Thresholds in units of the spread (positive).
    center : {'median', 'mean'}
        Centre ``c``. 'median' is robust; 'mean' reproduces ccdproc's default.
    spread : {'mad_std', 'std'}
        ``s``: ``1.4826 * median(|x - median(x)|)`` (robust) or the standard deviation
        about the mean with ``ddof=0`` (ccdproc's default).
    maxiters : int
        Cap on the number of clipping passes (ccdproc does exactly one).
    spread_floor_box : int or None
        When set (median/MAD clipping only), the spread of each pixel is at least the
        median first-pass spread of its ``spread_floor_box`` x ``spread_floor_box`` block
        of pixels, and a pixel whose spread is 0 is not clipped. The MAD of a few values
        is often far too small (with 10 frames, clipping at 3 x a raw MAD rejects ~4 %
        of pure Gaussian noise, with the floor ~0.5 %); the noise varies slowly over a
        detector, so a block median floors it while a hot pixel keeps its own larger
        spread. Master bias/dark/flat frames use 32.

    Raises
    ------
    ValueError
        Unknown ``center``/``spread`` names, negative counts or thresholds, or ``minmax``
        without any limit.
    """

    minmax: bool = False
    min_value: float | None = None
    max_value: float | None = None
    extrema: bool = False
    nlow: int = 1
    nhigh: int = 1
    sigclip: bool = False
    sigma_low: float = 3.0
    sigma_high: float = 3.0
    center: str = "median"
    spread: str = "mad_std"
    maxiters: int = 10
    spread_floor_box: int | None = None

    def __post_init__(self):
        if self.center not in _CENTERS:
            raise ValueError(
                f"sigma-clipping center {self.center!r} unknown; use one of {_CENTERS}"
            )
        if self.spread not in _SPREADS:
            raise ValueError(
                f"sigma-clipping spread {self.spread!r} unknown; use one of {_SPREADS}"
            )
        for name in ("min_value", "max_value"):
            check_number(name, getattr(self, name), allow_none=True)
        if self.minmax and self.min_value is None and self.max_value is None:
            raise ValueError("minmax clipping needs min_value and/or max_value")
        if (
            self.min_value is not None
            and self.max_value is not None
            and self.min_value > self.max_value
        ):
            raise ValueError(
                f"minmax limits reversed: min_value={self.min_value} > max_value={self.max_value}"
            )
        for name, low in (("nlow", 0), ("nhigh", 0), ("maxiters", 1), ("spread_floor_box", 1)):
            check_number(name, getattr(self, name), minimum=low, integer=True,
                         allow_none=name == "spread_floor_box")
        if self.spread_floor_box is not None and \
                (self.center, self.spread) != ("median", "mad_std"):
            raise ValueError("spread_floor_box needs center='median' and spread='mad_std'")
        for name in ("sigma_low", "sigma_high"):
            check_number(name, getattr(self, name), minimum=0, exclusive=True, unit="sigma")

    @property
    def names(self) -> tuple[str, ...]:
        """The active algorithms, in the order they are applied."""
        flags = (self.minmax, self.extrema, self.sigclip)
        return tuple(n for n, f in zip(_APPLY_ORDER, flags) if f)


def parse_method(method) -> str:
    """The name in :data:`COMBINE_METHODS` that ``method`` stands for.

    Parameters
    ----------
    method : str
        A name of :data:`COMBINE_METHODS` or an alias ('mean', 'avg'), any case.

    Returns
    -------
    str
        The canonical name.

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones).
    """
    key = _METHOD_ALIASES.get(str(method).strip().lower(), str(method).strip().lower())
    if key not in COMBINE_METHODS:
        raise ValueError(f"combining method {method!r} unknown; use one of {COMBINE_METHODS}")
    return key


def clipping_names(clipping) -> set[str]:
    """Canonical names of the rejection algorithms ``clipping`` asks for.

    Parameters
    ----------
    clipping : str, sequence of str or None
        Names of :data:`CLIPPING_METHODS` or aliases ('sigma_clip', 'extrema',
        'minmax_clip', ...); None, '' or 'none' = no rejection.

    Returns
    -------
    set of str
        Subset of ``{'sigclip', 'extrema_clipping', 'minmax'}``.

    Raises
    ------
    ValueError
        Unknown name.
    """
    if clipping is None or isinstance(clipping, str):
        names = [] if clipping is None or clipping.strip().lower() in _NO_CLIP else [clipping]
    else:
        names = [c for c in clipping if c is not None]
    chosen = set()
    for name in names:
        key = _CLIP_ALIASES.get(str(name).strip().lower())
        if key is None:
            known = [c for c in CLIPPING_METHODS if c]
            raise ValueError(f"clipping method {name!r} unknown; use one of {known} or None")
        chosen.add(key)
    return chosen


def parse_rejection(
    clipping: str | Sequence[str] | None,
    sigma_low: float = 3.0,
    sigma_high: float = 3.0,
    sigma_center: str = "median",
    sigma_spread: str = "mad_std",
    maxiters: int = 10,
    nlow: int = 1,
    nhigh: int = 1,
    min_value: float | None = None,
    max_value: float | None = None,
    spread_floor_box: int | None = None,
) -> Rejection:
    """The :class:`Rejection` for a clipping choice and its settings.

    Parameters
    ----------
    clipping : str, sequence of str or None
        See :func:`clipping_names`.
    sigma_low, sigma_high : float
        'sigclip' thresholds in units of the spread.
    sigma_center : {'median', 'mean'}
        'sigclip' centre (:attr:`Rejection.center`).
    sigma_spread : {'mad_std', 'std'}
        'sigclip' spread (:attr:`Rejection.spread`).
    maxiters : int
        'sigclip' passes at most.
    nlow, nhigh : int
        'extrema_clipping': lowest/highest values dropped per pixel.
    min_value, max_value : float or None
        'minmax' limits (unscaled data unit).
    spread_floor_box : int or None
        'sigclip' spread floor block (see :class:`Rejection`).

    Returns
    -------
    Rejection
        The settings; those of algorithms not chosen are kept but unused.

    Raises
    ------
    ValueError
        Unknown clipping name or inconsistent settings (see :class:`Rejection`).
    """
    chosen = clipping_names(clipping)
    count = {"minimum": 0, "integer": True}
    sigma = {"minimum": 0, "exclusive": True, "unit": "sigma"}
    return Rejection(
        minmax="minmax" in chosen,
        min_value=check_number("min_value", min_value, allow_none=True),
        max_value=check_number("max_value", max_value, allow_none=True),
        extrema="extrema_clipping" in chosen,
        nlow=check_number("nlow", nlow, **count),
        nhigh=check_number("nhigh", nhigh, **count),
        sigclip="sigclip" in chosen,
        sigma_low=check_number("sigma_low", sigma_low, **sigma),
        sigma_high=check_number("sigma_high", sigma_high, **sigma),
        center=sigma_center,
        spread=sigma_spread,
        maxiters=check_number("maxiters", maxiters, minimum=1, integer=True),
        spread_floor_box=spread_floor_box if "sigclip" in chosen else None,
    )
