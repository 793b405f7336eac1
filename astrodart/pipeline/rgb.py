"""Layer 3: :class:`rgb_image` (AstroDART's name) -- a colour composite of three stacks.

Reads the three stacks (paths, CCDData or arrays), registers red and blue on green with
the alignment ladder when they are not already registered, and runs the pure colour
chain of :mod:`astrodart.color.composite` (sky neutralisation, PSF matching, star colour
balance, stretch); shows the result with matplotlib (imported on use) or writes it as
an 8-bit PNG or a 16-bit TIFF.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData

from astrodart.alignment.ladder import ReferenceFrame, align_frame, registration_offset
from astrodart.color.composite import (
    STRETCHES,
    ColourBalance,
    auto_stretch_parameters,
    channel_fwhm,
    match_psf,
    neutralise_background,
    select_field_stars,
    star_colour_balance,
    stretch_rgb,
    to_uint8,
    to_uint16,
)
from astrodart.frames.checks import check_number, check_path
from astrodart.frames.io import atomic_output, read_frame
from astrodart.pipeline.align import _option_names
from astrodart.pipeline.step import check_kwargs

__all__ = ["rgb_image"]

log = logging.getLogger("astrodart")


def _as_ccd(image, what: str) -> CCDData:
    if isinstance(image, CCDData):
        return image
    if isinstance(image, (str, Path)):
        return read_frame(image)
    if isinstance(image, (list, tuple)) and len(image) == 1:
        return _as_ccd(image[0], what)
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"rgb_image: {what} must be a FITS path, CCDData or 2-D array; got "
                         f"shape {arr.shape}")
    return CCDData(arr, unit="adu")


class rgb_image:  # noqa: N801  (AstroDART's public name)
    """Colour composite of three stacks (red, green, blue).

    The chain (computed on first use, then cached): register the red and blue images on
    the green one if they are not already (same ladder as :class:`align`); subtract each
    channel's smooth sky so the background is black and neutral; match the channels'
    star widths (optional, on by default); scale red and blue so
    the field stars are white on average (:func:`astrodart.color.composite.star_colour_balance`);
    multiply by ``red_stretch``, ``green_stretch``, ``blue_stretch``; stretch for display
    (Lupton et al. 2004 by default).

    Parameters
    ----------
    red_image, green_image, blue_image : str, pathlib.Path, CCDData or 2-D array
        The three stacks (e.g. R, V, B).
    red_stretch, green_stretch, blue_stretch : float
        Extra multipliers of each channel after the star balance (1 keeps the balanced
        colour; e.g. ``red_stretch=1.2`` warms the image).
    stretch : {'lupton', 'asinh', 'linear'}
        Display stretch (see :func:`astrodart.color.composite.stretch_rgb`).
    Q, stretch_value : float, optional
        Lupton softening and linear range (default: 8 and 20 sky sigmas).
    minimum : float or sequence of 3 float, optional
        Black point per channel (default: one sky sigma below zero, the same in all three
        channels so the sky stays neutral).
    white : float, optional
        White point for the 'asinh' and 'linear' stretches.
    balance : {'stars', 'none'} or sequence of 3 float
        Colour balance: on the field stars, none, or explicit multipliers.
    register : {'auto', 'always', 'never'}
        Register red and blue on green when needed (offset > 0.25 px or different
        shape), always, or never.
    box_size : int
        Sky box size for background subtraction, pixels.
    saturation : float or sequence of 3 float, optional
        Saturation level per channel for the star balance.
    match_psf : bool
        Blur the sharper channels to the broadest channel's FWHM before balancing, so
        stars are not given false colour by seeing differences between the bands
        (:func:`astrodart.color.composite.match_psf`).
    align_options : dict, optional
        Options of :func:`astrodart.alignment.ladder.align_frame` (e.g. ``methods``, ``limits``).
    **unknown
        Any other keyword: rejected with a :class:`TypeError` naming the valid options.

    Raises
    ------
    TypeError
        Unknown keyword argument.
    ValueError
        Unknown stretch or balance option.
    """

    def __init__(self, red_image, green_image, blue_image, red_stretch: float = 1,
                 green_stretch: float = 1, blue_stretch: float = 1, *, stretch: str = "lupton",
                 Q: float | None = None, stretch_value: float | None = None, minimum=None,
                 white: float | None = None, balance="stars", register: str = "auto",
                 box_size: int = 64, saturation=None, match_psf: bool = True,
                 align_options: dict | None = None, **unknown):
        check_kwargs("rgb_image", unknown, _option_names(rgb_image.__init__))
        if stretch not in STRETCHES:
            raise ValueError(f"rgb_image: stretch={stretch!r}; choose from {STRETCHES}")
        if register not in ("auto", "always", "never"):
            raise ValueError(f"rgb_image: register={register!r}; use 'auto', 'always' or 'never'")
        if isinstance(balance, str) and balance not in ("stars", "none"):
            raise ValueError(f"rgb_image: balance={balance!r}; use 'stars', 'none' or 3 factors")
        for n, v in (("red_image", red_image), ("green_image", green_image),
                     ("blue_image", blue_image)):
            if isinstance(v, (str, os.PathLike)):  # a file: it must be there (arrays pass)
                check_path(n, v, owner="rgb_image")
        self.images = (red_image, green_image, blue_image)
        self.weights = np.array([check_number(n, v, minimum=0, exclusive=True, owner="rgb_image")
                                 for n, v in (("red_stretch", red_stretch),
                                              ("green_stretch", green_stretch),
                                              ("blue_stretch", blue_stretch))], float)
        self.stretch, self.Q, self.stretch_value = stretch, Q, stretch_value
        self.minimum, self.white = minimum, white
        self.balance_option, self.register, self.box_size = balance, register, box_size
        self.saturation = saturation
        self.match_psf = bool(match_psf)
        self._fwhms: list[float] | None = None  # results, filled by _compute()
        self.align_options = dict(align_options or {})
        self._channels: list[np.ndarray] | None = None
        self._rgb: np.ndarray | None = None
        self._balance: ColourBalance | None = None
        self._factors: np.ndarray | None = None
        self._registration: dict[str, dict] = {}
        self._sky_sigmas: list[float] | None = None
        self._invalid: np.ndarray | None = None

    # -- processing ----------------------------------------------------------------------
    def _registered(self) -> tuple[list[np.ndarray], np.ndarray]:
        names = ("red_image", "green_image", "blue_image")
        ccds = [_as_ccd(img, name) for img, name in zip(self.images, names)]
        g = ccds[1]
        g_head = g.meta if isinstance(g.meta, fits.Header) else fits.Header(g.meta)
        ref = ReferenceFrame(g.data, g.mask, wcs=g_head)
        invalid = ref.mask.copy()
        out = [None, np.where(ref.mask, np.nan, g.data).astype(np.float32), None]
        self._registration = {"green": {"method": "reference"}}
        for k, name in ((0, "red"), (2, "blue")):
            c = ccds[k]
            head = c.meta if isinstance(c.meta, fits.Header) else fits.Header(c.meta)
            offset, n = (registration_offset(c.data, ref, c.mask) if self.register == "auto"
                         else (np.inf, 0))
            if self.register == "never" or (self.register == "auto" and offset < 0.25 and n >= 5):
                if c.shape != g.shape:
                    raise ValueError(f"rgb_image: {name} image has shape {c.shape}, green "
                                     f"{g.shape}; they must be registered (use register='auto')")
                bad = ~np.isfinite(c.data) | (np.zeros(c.shape, bool) if c.mask is None else c.mask)
                out[k] = np.where(bad, np.nan, c.data).astype(np.float32)
                invalid |= bad
                self._registration[name] = {
                    "method": "already registered",
                    "median_offset_px": float(offset) if np.isfinite(offset) else None}
                continue
            res = align_frame(c.data, ref, mask=c.mask, wcs=head, **self.align_options)
            out[k] = res.data
            invalid |= res.invalid
            self._registration[name] = res.summary()
            log.info("rgb_image: %s registered on green by %s (residual %.3f px)", name,
                     res.method, res.residual)
        return out, invalid

    def _compute(self) -> None:
        if self._channels is not None:
            return
        chans, invalid = self._registered()
        chans, sigmas = neutralise_background(*chans, mask=invalid, box_size=self.box_size)
        xy, fwhm = select_field_stars(*chans, mask=invalid, saturation=self.saturation)
        self._fwhms = channel_fwhm(chans, xy, invalid) if len(xy) else [float("nan")] * 3
        if self.match_psf:
            chans, fwhm = match_psf(chans, self._fwhms, invalid)
            invalid = invalid | ~np.all([np.isfinite(c) for c in chans], axis=0)
            fwhm = fwhm if np.isfinite(fwhm) else 3.0
            log.info("rgb_image: channel FWHM R %.2f, G %.2f, B %.2f px matched to %.2f px",
                     *self._fwhms, fwhm)
        if isinstance(self.balance_option, str):
            if self.balance_option == "stars":
                self._balance = star_colour_balance(*chans, mask=invalid, fwhm=fwhm, xy=xy)
                factors = self._balance.factors
            else:
                factors = np.ones(3)
        else:
            factors = np.asarray(self.balance_option, float).reshape(3)
        self._factors = factors * self.weights
        self._channels = [c * f for c, f in zip(chans, self._factors)]
        self._sky_sigmas = [s * f for s, f in zip(sigmas, self._factors)]
        self._invalid = invalid

    @property
    def registration(self) -> dict[str, dict]:
        """How the red and blue images were put on the green image's grid (per channel:
        'already registered', or the alignment summary of
        :meth:`astrodart.alignment.ladder.AlignmentResult.summary`)."""
        self._compute()
        return self._registration

    @property
    def factors(self) -> np.ndarray:
        """Multipliers applied to red, green, blue: star balance x user ``*_stretch``."""
        self._compute()
        return self._factors

    @property
    def balance(self) -> ColourBalance | None:
        """The star colour balance (None unless ``balance='stars'``)."""
        self._compute()
        return self._balance

    @property
    def fwhms(self) -> list[float]:
        """Star FWHM of the red, green and blue channels before PSF matching, pixels."""
        self._compute()
        return self._fwhms

    @property
    def sky_sigmas(self) -> list[float]:
        """Sky noise of the balanced red, green and blue channels."""
        self._compute()
        return self._sky_sigmas

    @property
    def invalid(self) -> np.ndarray:
        """Pixels invalid in any channel (outside the common footprint or masked)."""
        self._compute()
        return self._invalid

    @property
    def channels(self) -> list[np.ndarray]:
        """The red, green and blue channels after registration, sky subtraction and colour
        balance (linear, ``(ny, nx)`` float32 each, NaN where invalid)."""
        self._compute()
        return self._channels

    @property
    def rgb(self) -> np.ndarray:
        """The stretched composite, ``(ny, nx, 3)`` floats in ``[0, 1]``, row 0 at the bottom;
        pixels outside the common footprint of the three channels are black."""
        if self._rgb is None:
            self._compute()
            auto = auto_stretch_parameters(*self._channels, sigmas=self._sky_sigmas)
            pick = {k: auto[k] if v is None else v for k, v in (
                ("minimum", self.minimum), ("stretch", self.stretch_value), ("Q", self.Q),
                ("white", self.white))}
            rgb = stretch_rgb(*self._channels, method=self.stretch, **pick)
            rgb[self._invalid] = 0.0  # outside the common footprint: black, not a false colour
            self._rgb = rgb
        return self._rgb

    # -- output ----------------------------------------------------------------------------
    def show(self, ax=None, figsize: tuple[float, float] = (8, 8), title: str | None = None):
        """Display the composite with matplotlib (imported here, not at module import).

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Axes to draw in (a new figure otherwise).
        figsize : (float, float)
            Size of a new figure, inches.
        title : str, optional
            Axes title.

        Returns
        -------
        matplotlib.axes.Axes
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _fig, ax = plt.subplots(figsize=figsize)
        ax.imshow(self.rgb, origin="lower", interpolation="nearest")
        ax.set_axis_off()
        if title:
            ax.set_title(title)
        if ax.figure.canvas.__class__.__name__ != "FigureCanvasAgg":
            plt.show()
        return ax

    def save_png(self, path) -> Path:
        """Write the composite as an 8-bit RGB PNG (top row = highest FITS row).

        Parameters
        ----------
        path : str or pathlib.Path
            Destination ``.png`` (folders are created).

        Returns
        -------
        pathlib.Path
        """
        from PIL import Image

        path = Path(path)
        with atomic_output(path) as tmp:
            Image.fromarray(to_uint8(self.rgb), mode="RGB").save(tmp, format="PNG")
        return path

    def save_tiff(self, path) -> Path:
        """Write the composite as a 16-bit RGB TIFF (top row = highest FITS row).

        Parameters
        ----------
        path : str or pathlib.Path
            Destination ``.tif``/``.tiff``.

        Returns
        -------
        pathlib.Path
        """
        import tifffile

        path = Path(path)
        meta = {"software": "astrodart rgb_image", "stretch": self.stretch,
                "factors": [float(f) for f in (self._factors if self._factors is not None else [])]}
        with atomic_output(path) as tmp:
            tifffile.imwrite(tmp, to_uint16(self.rgb), photometric="rgb",
                             description=json.dumps(meta))
        return path
