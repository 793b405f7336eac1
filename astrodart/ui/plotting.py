"""Layer 4: quick-look plots of frames and star lists.

matplotlib is imported inside the functions, never at import time, so that
``import astrodart`` (and scripts that never plot) do not pay for it and do not
pick a matplotlib backend behind the user's back. The functions draw with
whatever backend the notebook chose (``%matplotlib inline`` or ``%matplotlib
widget``); pass ``ax=`` to draw into an existing figure.

Images can be given as a FITS path, a :class:`~astropy.nddata.CCDData`, a FITS
HDU or a 2-D array. Display limits come from IRAF's zscale algorithm
(:class:`astropy.visualization.ZScaleInterval`), which ignores the few very bright
stars and hot pixels that make a min/max stretch useless for CCD frames.

Pixel coordinates follow numpy/photutils: ``x`` is the column, ``y`` the row, both
0-based, pixel centres at integers, and images are drawn with ``origin='lower'``
(row 0 at the bottom, as in DS9). FITS sections are 1-based: pixel ``x`` (0-based)
is column ``x + 1`` of a section.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "image_array",
    "zscale_limits",
    "as_positions",
    "show_image",
    "show_histogram",
    "show_thumbnails",
    "mark_stars",
]

log = logging.getLogger("astrodart")


def image_array(image: Any) -> np.ndarray:
    """Return the pixels of an image as a 2-D float array.

    Parameters
    ----------
    image : str, pathlib.Path, CCDData, astropy.io.fits HDU or array-like
        A FITS file (read with :func:`astrodart.frames.io.read_frame`), a frame in
        memory, or a 2-D array of shape ``(ny, nx)``.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float array (float32 for FITS input). Not a copy when the
        input already is a float array.

    Raises
    ------
    ValueError
        The image is not two-dimensional.
    astrodart.frames.io.FrameError
        A path that is missing or not a readable FITS file.
    """
    if isinstance(image, (str, Path)):
        from astrodart.frames.io import read_frame

        data = read_frame(image).data
    elif hasattr(image, "data") and not isinstance(image, np.ndarray):
        data = image.data  # CCDData, NDData, ImageHDU, PrimaryHDU
    else:
        data = image
    data = np.asarray(data)
    if data.dtype.kind not in "f":
        data = data.astype(np.float32)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D image, got an array of shape {data.shape}")
    return data


def zscale_limits(image: Any, contrast: float = 0.25) -> tuple[float, float]:
    """Display limits of an image by the zscale algorithm.

    Parameters
    ----------
    image : path, CCDData, HDU or array-like
        See :func:`image_array`. NaN and infinite pixels are ignored.
    contrast : float
        zscale contrast (IRAF's default 0.25); smaller values widen the range.

    Returns
    -------
    (float, float)
        ``(vmin, vmax)`` in the unit of the data; ``(0, 1)`` for an image without
        any finite pixel, and a range of one unit around a constant image.
    """
    from astropy.visualization import ZScaleInterval

    data = image_array(image)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = ZScaleInterval(contrast=contrast).get_limits(finite)
    if not vmax > vmin:
        vmin, vmax = float(vmin) - 0.5, float(vmin) + 0.5
    return float(vmin), float(vmax)


def as_positions(stars: Any) -> np.ndarray:
    """Convert a star list to an ``(n, 2)`` array of 0-based pixel ``(x, y)``.

    Parameters
    ----------
    stars : array-like or table
        An ``(n, 2)`` sequence of ``(x, y)``; or a table (astropy
        :class:`~astropy.table.Table`, pandas DataFrame, dict of columns) with columns
        ``xcentroid``/``ycentroid`` (photutils < 3), ``x_centroid``/``y_centroid``
        (photutils >= 3), ``x_fit``/``y_fit``, ``x``/``y`` or
        ``x_0``/``y_0``.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` float array; ``(0, 2)`` for an empty list.

    Raises
    ------
    ValueError
        A table without recognised position columns, or an array of the wrong shape.
    """
    if stars is None:
        return np.zeros((0, 2))
    names = None
    if hasattr(stars, "colnames"):
        names = list(stars.colnames)
    elif hasattr(stars, "columns") and not isinstance(stars, np.ndarray):
        names = list(stars.columns)
    elif isinstance(stars, dict):
        names = list(stars)
    if names is not None:
        for xn, yn in (("xcentroid", "ycentroid"), ("x_centroid", "y_centroid"), ("x_fit", "y_fit"),
                       ("x", "y"), ("x_0", "y_0")):
            if xn in names and yn in names:
                return np.column_stack([np.asarray(stars[xn], float), np.asarray(stars[yn], float)])
        raise ValueError(f"star table has no position columns (xcentroid/ycentroid, x/y, ...): "
                         f"columns are {names}")
    arr = np.asarray(stars, dtype=float)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim == 1 and arr.size == 2:
        arr = arr.reshape(1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"star positions must have shape (n, 2) as (x, y); got {arr.shape}")
    return arr


def _new_axes(ax, figsize=(6, 6)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def show_image(image: Any, ax: Any = None, title: str | None = None, *, cmap: str = "gray",
               vmin: float | None = None, vmax: float | None = None, contrast: float = 0.25,
               colorbar: bool = False, origin: str = "lower", **imshow_kwargs: Any) -> Any:
    """Quick-look of a frame with zscale display limits.

    Parameters
    ----------
    image : path, CCDData, HDU or array-like
        The frame (see :func:`image_array`); a path also gives the default title.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; a new figure is made with :mod:`matplotlib.pyplot` otherwise.
    title : str, optional
        Axes title; defaults to the file name for a path.
    cmap : str
        Colour map.
    vmin, vmax : float, optional
        Display limits overriding zscale, in the unit of the data.
    contrast : float
        zscale contrast (see :func:`zscale_limits`).
    colorbar : bool
        Add a colour bar (labelled with the CCDData unit when there is one).
    origin : {'lower', 'upper'}
        Where row 0 goes; 'lower' matches DS9 and FITS pixel coordinates.
    **imshow_kwargs
        Passed to :meth:`matplotlib.axes.Axes.imshow`.

    Returns
    -------
    matplotlib.image.AxesImage
        The image artist (its ``.axes`` and ``.figure`` give the rest), so the caller
        can update it with ``set_data`` / ``set_clim``.
    """
    data = image_array(image)
    lo, hi = zscale_limits(data, contrast) if (vmin is None or vmax is None) else (vmin, vmax)
    vmin = lo if vmin is None else vmin
    vmax = hi if vmax is None else vmax
    ax = _new_axes(ax)
    imshow_kwargs.setdefault("interpolation", "nearest")
    im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, origin=origin, **imshow_kwargs)
    if title is None and isinstance(image, (str, Path)):
        title = Path(image).name
    if title:
        ax.set_title(title, fontsize="medium")
    ax.set_xlabel("x [pixel]")
    ax.set_ylabel("y [pixel]")
    if colorbar:
        unit = getattr(image, "unit", None)
        cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if unit is not None:
            cb.set_label(str(unit))
    return im


def show_histogram(image: Any, ax: Any = None, title: str | None = None, *, bins: int = 256,
                   value_range: tuple[float, float] | None = None, log: bool = True,
                   mark_zscale: bool = True, color: str = "tab:blue") -> Any:
    """Histogram of the pixel values of a frame.

    Parameters
    ----------
    image : path, CCDData, HDU or array-like
        The frame (see :func:`image_array`); NaN and infinite pixels are left out.
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; a new figure is made otherwise.
    title : str, optional
        Axes title; defaults to the file name for a path.
    bins : int
        Number of bins.
    value_range : (float, float), optional
        Range of values histogrammed; by default the 0.1 and 99.9 percentiles, so a
        handful of saturated or dead pixels do not squash the histogram.
    log : bool
        Logarithmic count axis.
    mark_zscale : bool
        Draw the zscale display limits as dashed vertical lines.
    color : str
        Bar colour.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn into.
    """
    data = image_array(image)
    values = data[np.isfinite(data)].ravel()
    ax = _new_axes(ax, figsize=(6, 3.5))
    if values.size == 0:
        log_msg = "image has no finite pixel; empty histogram"
        log.warning(log_msg)
        ax.set_title(title or log_msg)
        return ax
    if value_range is None:
        value_range = tuple(float(v) for v in np.percentile(values, [0.1, 99.9]))
        if value_range[1] <= value_range[0]:
            value_range = (value_range[0] - 0.5, value_range[0] + 0.5)
    ax.hist(values, bins=bins, range=value_range, log=log, color=color, histtype="stepfilled")
    if mark_zscale:
        for v in zscale_limits(data):
            ax.axvline(v, color="k", ls="--", lw=1)
    unit = getattr(image, "unit", None)
    ax.set_xlabel(f"pixel value [{unit}]" if unit is not None else "pixel value")
    ax.set_ylabel("number of pixels")
    if title is None and isinstance(image, (str, Path)):
        title = Path(image).name
    if title:
        ax.set_title(title, fontsize="medium")
    return ax


def show_thumbnails(images: Sequence[Any], titles: Sequence[str] | None = None, *,
                    ncols: int = 4, size: float = 2.5, cmap: str = "gray",
                    flagged: Sequence[int] | None = None) -> Any:
    """A grid of zscale thumbnails, one per frame.

    Parameters
    ----------
    images : sequence of path, CCDData, HDU or array-like
        The frames, read one at a time (memory holds one frame plus the thumbnails).
    titles : sequence of str, optional
        One title per frame; defaults to the file names for paths, else the index.
    ncols : int
        Thumbnails per row.
    size : float
        Width and height of each thumbnail, in inches.
    cmap : str
        Colour map.
    flagged : sequence of int, optional
        Indices of frames drawn with a red frame and a "flagged" mark (e.g. frames
        rejected in :func:`astrodart.ui.widgets.frame_browser`).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (empty axes beyond the last frame are switched off).

    Raises
    ------
    ValueError
        No images, or ``titles`` of a different length.
    """
    import matplotlib.pyplot as plt

    images = list(images)
    if not images:
        raise ValueError("no images to show")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    flagged = set(flagged or ())
    ncols = max(1, min(int(ncols), len(images)))
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= len(images):
            ax.set_axis_off()
            continue
        img = images[i]
        if titles is not None:
            label = titles[i]
        elif isinstance(img, (str, Path)):
            label = Path(img).name
        else:
            label = str(i)
        show_image(img, ax=ax, cmap=cmap)
        ax.set_title(label, fontsize="x-small")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("")
        ax.set_ylabel("")
        if i in flagged:
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(3)
            ax.text(0.03, 0.97, "flagged", color="red", transform=ax.transAxes,
                    va="top", fontsize="x-small", fontweight="bold")
    fig.tight_layout()
    return fig


def mark_stars(ax: Any, stars: Any, labels: Sequence[Any] | None = None, *,
               numbered: bool = True, start: int = 0, radius: float = 8.0,
               color: str = "lime", fontsize: float = 9.0,
               label_offset: tuple[float, float] | None = None,
               gid: str = "astrodart-stars") -> list:
    """Overlay circles and numbers on the stars of a star list.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Axes showing the image (e.g. ``show_image(...).axes``).
    stars : array-like or table
        Star positions, 0-based pixel ``(x, y)`` (see :func:`as_positions`).
    labels : sequence, optional
        Text next to each star; by default its number ``start + i`` when ``numbered``.
    numbered : bool
        Write numbers when ``labels`` is not given.
    start : int
        Number of the first star (0 matches Python list indices, which astrodart's
        star pickers return).
    radius : float
        Circle radius in pixels.
    color : str
        Colour of circles and text.
    fontsize : float
        Label size in points.
    label_offset : (float, float), optional
        Position of each label relative to its star, in pixels; by default up and to
        the right, just outside the circle. A negative x (y) offset right- (top-)
        aligns the text, so labels can sit on either side of a star.
    gid : str
        Group id set on every artist, so they can be found and removed later.

    Returns
    -------
    list of matplotlib.artist.Artist
        The circles and texts added (remove them with ``artist.remove()``).
    """
    from matplotlib import patheffects
    from matplotlib.patches import Circle

    pos = as_positions(stars)
    if labels is not None and len(labels) != len(pos):
        raise ValueError(f"{len(labels)} labels for {len(pos)} stars")
    dx, dy = label_offset if label_offset is not None else (0.75 * radius, 0.75 * radius)
    align = {"ha": "right" if dx < 0 else "left", "va": "top" if dy < 0 else "bottom"}
    artists = []
    for i, (x, y) in enumerate(pos):
        circ = Circle((x, y), radius, fill=False, edgecolor=color, lw=1.2, gid=gid)
        ax.add_patch(circ)
        artists.append(circ)
        text = labels[i] if labels is not None else (start + i if numbered else None)
        if text is not None:
            # beside the circle, outlined in black so it reads on stars and on sky
            t = ax.text(x + dx, y + dy, str(text), color=color, fontsize=fontsize,
                        fontweight="bold", gid=gid, clip_on=True, **align,
                        path_effects=[patheffects.withStroke(linewidth=2.5,
                                                             foreground="black")])
            artists.append(t)
    return artists
