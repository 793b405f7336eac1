"""Layer 4: the figures of a night's diagnostics, one PNG each, and the aligned-frames GIF.

Each function draws one result of :mod:`astrodart.sources.diagnostics` into a PNG with
matplotlib's Agg canvas (a bare :class:`matplotlib.figure.Figure`: no pyplot, no GUI
backend, safe in threads and headless CI) and writes it atomically
(:func:`astrodart.frames.io.atomic_output`). :func:`animate_frames` writes an animated
GIF with Pillow. matplotlib and Pillow are imported inside the functions only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from astrodart.frames.io import atomic_output

__all__ = ["animate_frames", "draw_background_mesh", "draw_growth_curves", "draw_noise_model",
           "draw_psf_and_fwhm_map", "draw_snr_magnitude"]


def _canvas(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _image(fig, ax, data, label: str, *, cmap="viridis", vlim=None, step: int = 1):
    lo, hi = vlim if vlim is not None else np.nanpercentile(data, [1, 99])
    extent = (-0.5, data.shape[1] - 0.5, -0.5, data.shape[0] - 0.5)
    im = ax.imshow(data[::step, ::step], origin="lower", cmap=cmap, vmin=lo, vmax=hi,
                   interpolation="nearest", extent=extent)
    fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    return im


def draw_background_mesh(mesh, path, *, title: str = "", unit: str = "") -> Path:
    """Draw the background level and its rms over the image, side by side.

    Parameters
    ----------
    mesh : astrodart.sources.diagnostics.BackgroundMesh
        The mesh (:func:`astrodart.sources.diagnostics.background_mesh`).
    path : str or pathlib.Path
        PNG to write (folders created).
    title : str
        Figure title.
    unit : str
        Data unit for the colour bars (e.g. ``'electron'``).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fig = _canvas((11, 4.6))
    ax1, ax2 = fig.subplots(1, 2)
    step = max(1, max(mesh.background.shape) // 256)  # the mesh is smooth: 256 px suffice
    _image(fig, ax1, mesh.background, f"background ({unit})", step=step)
    ax1.set_title(f"background, {mesh.box_size} px mesh")
    _image(fig, ax2, mesh.rms, f"rms ({unit})", cmap="magma", step=step)
    ax2.set_title("background rms")
    fig.suptitle(title)
    return _save(fig, path)


def draw_growth_curves(curves, path, *, fwhm: float | None = None, title: str = "") -> Path:
    """Draw normalised curves of growth, each star and their median.

    Parameters
    ----------
    curves : astrodart.sources.diagnostics.GrowthCurves
        The curves (:func:`astrodart.sources.diagnostics.growth_curves`).
    path : str or pathlib.Path
        PNG to write.
    fwhm : float, optional
        FWHM, pixels: the top axis is drawn in FWHM too.
    title : str
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fig = _canvas((6.5, 4.6))
    ax = fig.add_subplot()
    for row in curves.normalised:
        ax.plot(curves.radii, row, "-", color="0.7", lw=0.7)
    ax.plot(curves.radii, curves.median, "o-", color="C3", lw=2,
            label=f"median of {len(curves.normalised)} stars")
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    ax.set_xlabel("aperture radius (px)")
    ax.set_ylabel(f"flux / flux at {curves.radii[-1]:.1f} px")
    if fwhm:
        top = ax.secondary_xaxis("top", functions=(lambda r: r / fwhm, lambda f: f * fwhm))
        top.set_xlabel("aperture radius (FWHM)")
    ax.set_ylim(0, 1.15)
    ax.legend(loc="lower right")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def draw_psf_and_fwhm_map(stamp, fmap, path, *, shape=None, title: str = "") -> Path:
    """Draw the median PSF (linear and log) and the FWHM map of the field.

    Parameters
    ----------
    stamp : astrodart.sources.diagnostics.PSFStamp
        The median star (:func:`astrodart.sources.diagnostics.psf_stamp`).
    fmap : astrodart.sources.diagnostics.FWHMMap
        The binned FWHM (:func:`astrodart.sources.diagnostics.fwhm_map`).
    path : str or pathlib.Path
        PNG to write.
    shape : (int, int), optional
        Image shape (sets the map's extent; default from the bin edges).
    title : str
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fig = _canvas((14, 4.4))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    s = stamp.stamp
    _image(fig, ax1, s, "fraction of flux per pixel", cmap="gray", vlim=(0, s.max()))
    ax1.set_title(f"median PSF of {stamp.n_stars} stars")
    _image(fig, ax2, np.log10(np.clip(s, s.max() * 1e-4, None)), "log10 fraction",
           cmap="gray")
    ax2.set_title("median PSF (log)")
    extent = (fmap.x_edges[0], fmap.x_edges[-1], fmap.y_edges[0], fmap.y_edges[-1])
    im = ax3.imshow(fmap.median, origin="lower", extent=extent, cmap="coolwarm",
                    aspect="auto")
    fig.colorbar(im, ax=ax3, shrink=0.8, label="FWHM (px)")
    for i in range(fmap.median.shape[0]):
        for j in range(fmap.median.shape[1]):
            if fmap.count[i, j]:
                ax3.text((fmap.x_edges[j] + fmap.x_edges[j + 1]) / 2,
                         (fmap.y_edges[i] + fmap.y_edges[i + 1]) / 2,
                         f"{fmap.median[i, j]:.2f}\n({fmap.count[i, j]})", ha="center",
                         va="center", fontsize=7)
    ax3.set_title(f"FWHM map: median {fmap.fwhm:.2f} px")
    ax3.set_xlabel("x (px)")
    ax3.set_ylabel("y (px)")
    fig.suptitle(title)
    return _save(fig, path)


def draw_snr_magnitude(mag, snr, path, *, title: str = "") -> Path:
    """Draw signal-to-noise against instrumental magnitude (log scale).

    Parameters
    ----------
    mag, snr : array_like, shape (n,)
        From :func:`astrodart.sources.diagnostics.snr_magnitude`.
    path : str or pathlib.Path
        PNG to write.
    title : str
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    mag, snr = np.asarray(mag, float), np.asarray(snr, float)
    ok = np.isfinite(mag) & np.isfinite(snr) & (snr > 0)
    fig = _canvas((6.5, 4.6))
    ax = fig.add_subplot()
    ax.semilogy(mag[ok], snr[ok], ".", color="C0")
    for level in (10, 100):
        ax.axhline(level, color="0.6", lw=0.6, ls=":")
    ax.set_xlabel("instrumental magnitude (25 - 2.5 log10 e-/s)")
    ax.set_ylabel("signal-to-noise ratio")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def draw_noise_model(noise, path, *, title: str = "") -> Path:
    """Draw measured against predicted noise of stars over a sequence, and their ratio.

    Parameters
    ----------
    noise : astrodart.sources.diagnostics.NoiseComparison
        From :func:`astrodart.sources.diagnostics.noise_vs_ccd_equation`.
    path : str or pathlib.Path
        PNG to write.
    title : str
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fig = _canvas((7, 6.4))
    ax, axr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    o = np.argsort(noise.flux)
    f = noise.flux[o]
    ax.loglog(f, noise.measured[o] / f, "o", ms=4, color="k", label="measured (over the frames)")
    ax.loglog(f, noise.predicted[o] / f, "-", color="C3", label="CCD equation + ensemble")
    ax.loglog(f, noise.ccd[o] / f, "--", color="C1", lw=1, label="CCD equation")
    ax.loglog(f, 1 / np.sqrt(f), ":", color="C0", lw=1, label="star photons alone")
    ax.set_ylabel("relative noise per frame")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    axr.semilogx(f, noise.ratio[o], "o", ms=4, color="k")
    axr.axhline(1, color="C3")
    axr.axhspan(0.9, 1.1, color="C3", alpha=0.12)
    axr.set_ylabel("measured /\npredicted")
    axr.set_xlabel("star flux per frame (electrons)")
    return _save(fig, path)


def animate_frames(images, path, *, seconds_per_frame: float = 0.3,
                   max_size: int = 360, labels=None) -> Path:
    """Write images of one grid as an animated GIF (zscale of the first, asinh stretch).

    Parameters
    ----------
    images : sequence of array_like, each shape (ny, nx)
        Frames on one grid (e.g. aligned frames), in time order; at least 2.
    path : str or pathlib.Path
        GIF to write.
    seconds_per_frame : float
        Display time of each frame (> 0).
    max_size : int
        Longest side of the GIF at most, pixels (frames are block-averaged by a whole
        factor down to it; sky noise compresses badly, so a GIF stays small only small).
    labels : sequence of str, optional
        A caption drawn on each frame.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        Fewer than 2 images, images of different shapes, or ``seconds_per_frame <= 0``.
    """
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval
    from PIL import Image, ImageDraw

    arrs = [np.asarray(a, float) for a in images]
    if len(arrs) < 2 or len({a.shape for a in arrs}) != 1 or arrs[0].ndim != 2:
        raise ValueError(f"animate_frames: give at least 2 images of one 2-D shape, got "
                         f"{[a.shape for a in arrs]}")
    if not seconds_per_frame > 0:
        raise ValueError(f"seconds_per_frame={seconds_per_frame!r} must be > 0")
    k = max(1, int(np.ceil(max(arrs[0].shape) / max_size)))
    first = arrs[0][np.isfinite(arrs[0])]
    norm = ImageNormalize(first, interval=ZScaleInterval(), stretch=AsinhStretch(), clip=True)
    fill = float(np.median(first)) if first.size else 0.0
    frames = []
    for i, a in enumerate(arrs):
        ny, nx = (a.shape[0] // k) * k, (a.shape[1] // k) * k
        a = np.where(np.isfinite(a), a, fill)[:ny, :nx]   # outside the footprint: sky
        small = a.reshape(ny // k, k, nx // k, k).mean(axis=(1, 3))
        grey = np.nan_to_num(np.asarray(norm(small)), nan=0.0)
        img = Image.fromarray((255 * grey[::-1]).astype(np.uint8))  # row 0 at the bottom
        if labels is not None:
            ImageDraw.Draw(img).text((4, 4), str(labels[i]), fill=255)
        frames.append(img)
    with atomic_output(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=int(1000 * seconds_per_frame), loop=0)
    return Path(path)
