"""Layer 4: the diagnostics of a reduced night, as PNG/GIF files with captions.

:func:`night_diagnostics` reads the calibrated frames of a data tree
(``reduced_data/DATE/TARGET/``, or an ``astrodart reduce`` output folder holding one) and
writes, into ``diagnostics/``: the background mesh, the curves of growth, the median PSF
with the FWHM map, signal-to-noise against magnitude and the measured noise of the stars
against the CCD equation (all of one filter's first frame, or its first ``n_frames``
frames for the noise), and an animated GIF of the frames on one grid. The science is
:mod:`astrodart.sources.diagnostics`; the drawing :mod:`astrodart.ui.diagnostic_figures`.
:func:`record_diagnostics` adds the files and captions to ``results/summary.json``
(``astrodart reduce --png`` calls both).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from astrodart.exceptions import AstrodartWarning, warn
from astrodart.frames.io import atomic_output, read_frame
from astrodart.sources import diagnostics as diag
from astrodart.ui import diagnostic_figures as figs

__all__ = ["DiagnosticFailedWarning", "NightDiagnostics", "night_diagnostics",
           "record_diagnostics"]

log = logging.getLogger("astrodart")

#: Aperture radius of the SNR and noise figures, and the inner radius of their annulus
#: (FWHM); the annulus is 20 px wide so the sky level adds little noise.
_APERTURE_FWHM, _ANNULUS_FWHM, _ANNULUS_WIDTH = 2.0, 4.0, 20.0


class DiagnosticFailedWarning(AstrodartWarning):
    """One diagnostic figure could not be made (the others are); its caption says why."""


def _attempt(name: str, make, dx, *args) -> None:
    """Run ``make(*args, dx)``; on failure record the reason as the figure's caption."""
    try:
        make(*args, dx)
    except Exception as exc:  # one figure must not cost the others
        log.debug("diagnostic %s failed", name, exc_info=True)
        dx.figures[name] = {"file": None, "caption": f"{name}: not made "
                            f"({type(exc).__name__}: {exc})"}
        warn("a diagnostic figure could not be made (its caption in summary.json says why)",
             DiagnosticFailedWarning, item=f"{name}: {exc}")


@dataclass
class NightDiagnostics:
    """What :func:`night_diagnostics` wrote and measured.

    Parameters
    ----------
    folder : pathlib.Path
        Where the figures are.
    filter : str
        The filter measured.
    figures : dict
        Name -> ``{'file': pathlib.Path, 'caption': str}``.
    fwhm : float
        FWHM of the first frame (sep adaptive moments, the quality table's measure), px.
    fwhm_map : astrodart.sources.diagnostics.FWHMMap
        The binned FWHM of the first frame.
    growth : astrodart.sources.diagnostics.GrowthCurves
        The curves of growth of the first frame.
    noise : astrodart.sources.diagnostics.NoiseComparison or None
        Measured against predicted noise (None when it could not be measured; the
        caption of ``'noise'`` says why).
    """

    folder: Path
    filter: str
    figures: dict = field(default_factory=dict)
    fwhm: float = float("nan")
    fwhm_map: object = field(default=None, repr=False)
    growth: object = field(default=None, repr=False)
    noise: object = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-able record (for ``summary.json``).

        Returns
        -------
        dict
            ``filter``, ``fwhm_px``, ``figures`` (name -> file and caption) and, when
            measured, ``growth`` (radii and the median normalised curve), ``fwhm_map``
            (median, cells and stars per cell, rows from the bottom) and ``noise`` (stars,
            frames, median measured/predicted ratio, fraction within 10 %).
        """
        def rounded(values):
            return [None if not np.isfinite(v) else round(float(v), 4) for v in values]

        out = {"filter": self.filter, "fwhm_px": round(float(self.fwhm), 3),
               "figures": {k: {"file": str(v["file"]) if v.get("file") else None,
                               "caption": v["caption"]} for k, v in self.figures.items()}}
        if self.growth is not None:
            out["growth"] = {"radii_px": rounded(self.growth.radii),
                             "median": rounded(self.growth.median)}
        if self.fwhm_map is not None:
            out["fwhm_map"] = {"median_px": round(self.fwhm_map.fwhm, 4),
                               "cells_px": [rounded(r) for r in self.fwhm_map.median],
                               "stars": self.fwhm_map.count.tolist()}
        if self.noise is not None:
            r = self.noise.ratio
            out["noise"] = {"stars": int(r.size), "frames": self.noise.n_frames,
                            "median_ratio": round(self.noise.median_ratio, 4),
                            "within_10_percent": round(float(np.mean(np.abs(r - 1) <= 0.1)), 3)}
        return out


def _data_dir(source) -> Path:
    """The data tree of ``source``: itself, or the one ``reduced_data/DATE/TARGET`` of an
    ``astrodart reduce`` output folder."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"source={str(source)!r}: no such folder; give a data tree "
                                "(reduced_data/DATE/TARGET) or an astrodart reduce --out folder")
    trees = sorted(p for p in source.glob("reduced_data/*/*") if p.is_dir())
    if not trees:
        return source
    if len(trees) > 1:
        raise ValueError(f"source={str(source)!r} holds {len(trees)} data trees "
                         f"({', '.join(str(t) for t in trees)}); give one of them")
    return trees[0]


def _science_frames(data_dir: Path, filter: str | None) -> tuple[str, list[str]]:
    """The calibrated frames of ``filter`` (default: the filter with most frames)."""
    from astrodart.pipeline.tree import get_directory

    _, files, filters = get_directory(data_dir).science_final()
    found = {f: fl for f, fl in zip(filters, files) if fl}
    if not found:
        raise FileNotFoundError(f"{data_dir}: no calibrated science frames (run astrodart "
                                "reduce at least to --stop calibrate)")
    if filter is None:
        filter = max(found, key=lambda f: len(found[f]))
    if filter not in found:
        raise ValueError(f"filter={filter!r}: {data_dir} has calibrated frames in "
                         f"{sorted(found)} only")
    return filter, sorted(found[filter])


def _noise_terms(ccd, data_dir: Path) -> tuple[float | None, float, float]:
    """Read noise (e-), dark electrons per pixel in the exposure, and the camera gain
    (e-/ADU) of a calibrated frame, from the records its calibration wrote."""
    from astrodart.frames.header import FrameHeader

    meta = ccd.meta
    head = FrameHeader(meta)
    rn = meta.get("ADRDNOIS", head.read_noise)
    gain = float(meta.get("ADGAIN") or head.gain or 1.0)
    dark = 0.0
    name = meta.get("ADDKSRC")
    if name:
        found = sorted(data_dir.glob(f"calibration/{name}")) or sorted(data_dir.rglob(name))
        if found:
            master = read_frame(found[0])
            dark = float(np.nanmedian(master.data)) * float(meta.get("ADDKSCAL", 1.0))
    return (float(rn) if rn is not None else None), max(dark, 0.0), gain


def _isolated_stars(det, mask, shape, fwhm: float, border: float) -> np.ndarray:
    """Positions ``(n, 2)`` of unsaturated detections without a bad pixel or a detected
    neighbour within 5 FWHM, ``border`` pixels inside the frame, brightest first."""
    x, y = np.asarray(det["x"], float), np.asarray(det["y"], float)
    keep = (~np.asarray(det["saturated"], bool)) & (np.asarray(det["nn_dist"]) > 5 * fwhm)
    keep &= (x > border) & (x < shape[1] - 1 - border) & (y > border) & (y < shape[0] - 1 - border)
    if mask is not None and keep.any():
        r = int(np.ceil(2 * fwhm))
        for i in np.flatnonzero(keep):
            ix, iy = round(float(x[i])), round(float(y[i]))
            keep[i] = not mask[max(iy - r, 0):iy + r + 1, max(ix - r, 0):ix + r + 1].any()
    return np.column_stack([x[keep], y[keep]])


def _field_figures(ccd, look, out: Path, label: str, rn: float | None, dx, name: str) -> None:
    """Background mesh, growth curves, PSF + FWHM map and SNR of the first frame."""
    unit, fwhm, data = str(ccd.unit or ""), look.fwhm, np.asarray(ccd.data, float)
    mesh = diag.background_mesh(data, mask=ccd.mask)
    dx.figures["background"] = {
        "file": figs.draw_background_mesh(mesh, out / "background_mesh.png", unit=unit,
                                          title=f"{label}: background mesh"),
        "caption": f"Background of {name} on a {mesh.box_size} px mesh (sep): level "
                   f"{mesh.level:.1f} {unit}, rms {mesh.noise:.2f} {unit}; the level spans "
                   f"{np.ptp(np.percentile(mesh.background, [1, 99])):.1f} {unit} (1-99 %)."}
    bright = look.detections[np.asarray(look.detections["snr"], float) >= 50]
    stars = _isolated_stars(bright, ccd.mask, data.shape, fwhm, 8.5 * fwhm)[:25]
    radii = np.round(np.linspace(0.5, 5.0, 19) * fwhm, 3)
    dx.growth = diag.growth_curves(data, stars, radii, r_in=5.5 * fwhm, r_out=8 * fwhm,
                                   mask=ccd.mask)
    at = dx.growth.median
    dx.figures["growth"] = {
        "file": figs.draw_growth_curves(dx.growth, out / "growth_curves.png", fwhm=fwhm,
                                        title=f"{label}: curves of growth"),
        "caption": f"Curves of growth of {len(stars)} bright isolated stars, normalised at "
                   f"5 FWHM ({radii[-1]:.1f} px) on {name}: the median holds {100 * at[2]:.0f} % "
                   f"of the light at 1 FWHM and {100 * at[6]:.0f} % at 2 FWHM."}
    _psf_figure(data, look, out, label, dx)
    phot_r = _APERTURE_FWHM * fwhm
    pos = _isolated_stars(look.detections, ccd.mask, data.shape, fwhm, 6 * fwhm + 22)
    from astrodart.photometry.apertures import aperture_photometry_ccd

    ph = aperture_photometry_ccd(data, pos, phot_r, _ANNULUS_FWHM * fwhm,
                                 _ANNULUS_FWHM * fwhm + _ANNULUS_WIDTH, read_noise=rn,
                                 mask=ccd.mask)
    mag, snr = diag.snr_magnitude(ph.flux, ph.flux_err, float(ccd.meta.get("EXPTIME", 1.0)))
    good = np.isfinite(snr)
    dx.figures["snr"] = {
        "file": figs.draw_snr_magnitude(mag, snr, out / "snr_magnitude.png",
                                        title=f"{label}: aperture {phot_r:.1f} px"),
        "caption": f"Signal-to-noise (CCD equation) against instrumental magnitude of "
                   f"{int(good.sum())} stars in a {phot_r:.1f} px aperture: SNR 100 at "
                   f"magnitude {_mag_at(mag[good], snr[good], 100):.2f}, SNR 10 at "
                   f"{_mag_at(mag[good], snr[good], 10):.2f}."}


def _mag_at(mag, snr, level: float) -> float:
    """The magnitude where the SNR crosses ``level`` (interpolated in log SNR)."""
    o = np.argsort(mag)
    m, s = mag[o], np.log10(snr[o])
    return float(np.interp(-np.log10(level), -s, m)) if m.size > 1 else float("nan")


def _psf_figure(data, look, out: Path, label: str, dx) -> None:
    """The median PSF of the measured stars and their FWHM binned over the field."""
    st = look.stars
    used = np.asarray(st["used"], bool) if "used" in st.colnames else np.ones(len(st), bool)
    x, y, f = (np.asarray(st[k], float)[used] for k in ("x", "y", "fwhm"))
    dx.fwhm_map = diag.fwhm_map(x, y, f, data.shape, bins=3)
    size = int(2 * np.ceil(3 * look.fwhm) + 1)
    stamp = diag.psf_stamp(data, np.column_stack([x, y]), size=size, background=look.background)
    m = dx.fwhm_map.median
    dx.figures["psf"] = {
        "file": figs.draw_psf_and_fwhm_map(stamp, dx.fwhm_map, out / "psf_fwhm_map.png",
                                           title=f"{label}: PSF and FWHM over the field"),
        "caption": f"Median PSF of {stamp.n_stars} stars and the FWHM of {x.size} stars "
                   f"(sep adaptive moments, as the quality table) in a 3 x 3 grid: median "
                   f"{dx.fwhm_map.fwhm:.2f} px, cells {np.nanmin(m):.2f}-{np.nanmax(m):.2f} px."}


def _noise_figure(files, look, ccd, out: Path, label: str, terms, n_frames: int, dx) -> None:
    """Measured noise of the stars over the first ``n_frames`` frames against the CCD
    equation."""
    rn, dark, gain = terms
    if rn is None or len(files) < 5:
        why = "no read noise recorded" if rn is None else f"{len(files)} frames (5 needed)"
        dx.figures["noise"] = {"file": None, "caption": f"Noise against the CCD equation: "
                               f"not measured ({why})."}
        return
    fwhm = look.fwhm
    r_ap, r_in = _APERTURE_FWHM * fwhm, _ANNULUS_FWHM * fwhm
    stars = _isolated_stars(look.detections, ccd.mask, ccd.shape, fwhm, r_in + 60)[:80]
    seq = diag.sequence_photometry((read_frame(f) for f in files[:n_frames]), stars,
                                   fwhm=fwhm, r_ap=r_ap, r_in=r_in, r_out=r_in + _ANNULUS_WIDTH)
    dx.noise = nc = diag.noise_vs_ccd_equation(seq, read_noise=rn, dark=dark, gain=gain)
    dx.figures["noise"] = {
        "file": figs.draw_noise_model(nc, out / "noise_model.png",
                                      title=f"{label}: {nc.n_frames} frames, aperture "
                                            f"{r_ap:.1f} px"),
        "caption": f"Measured scatter of {nc.ratio.size} unsaturated stars over "
                   f"{nc.n_frames} calibrated frames (ensemble trend removed) against the "
                   f"CCD equation (Howell 2006; read noise {rn:.2f} e-, dark {dark:.1f} e-/px, "
                   f"gain {gain:.2f} e-/ADU): median measured/predicted "
                   f"{nc.median_ratio:.3f}, {100 * np.mean(np.abs(nc.ratio - 1) <= 0.1):.0f} % "
                   f"of the stars within 10 % (one star's scatter over {nc.n_frames} frames is "
                   f"itself uncertain by {100 / np.sqrt(2 * (nc.n_frames - 1)):.0f} %)."}


def _gif(data_dir: Path, filter: str, files: list, out: Path, n: int, dx) -> None:
    """An animated GIF of up to ``n`` frames spread over the night on the reference grid:
    the aligned frames when kept, else the calibrated ones aligned here."""
    from astrodart.alignment.ladder import ReferenceFrame, align_frame

    aligned = sorted((data_dir / "aligned" / filter).glob("*.fits"))
    pick = aligned if len(aligned) >= 2 else files
    idx = np.unique(np.linspace(0, len(pick) - 1, min(n, len(pick))).round().astype(int))
    frames, labels = [], []
    ref = None
    for k in idx:
        ccd = read_frame(pick[k])
        data = np.where(ccd.mask, np.nan, ccd.data) if ccd.mask is not None else ccd.data
        if pick is files:
            if ref is None:
                ref = ReferenceFrame(data, fwhm=dx.fwhm if np.isfinite(dx.fwhm) else 3.0)
            data = align_frame(data, ref, methods=("stars", "fft")).data
        frames.append(data)
        labels.append(f"{k + 1}/{len(pick)} {str(ccd.meta.get('DATE-OBS', ''))[11:19]}")
    which = "aligned frames" if pick is aligned else "calibrated frames aligned on the first"
    dx.figures["aligned_gif"] = {
        "file": figs.animate_frames(frames, out / "aligned_frames.gif", labels=labels),
        "caption": f"{len(frames)} of the {len(pick)} {which} ({filter}), evenly spread over "
                   "the night, zscale + asinh of the first: stars must stand still."}


def night_diagnostics(source, out_dir=None, *, filter: str | None = None,
                      n_frames: int = 16, gif_frames: int = 20) -> NightDiagnostics:
    """Measure and draw the diagnostics of a reduced night.

    Parameters
    ----------
    source : str or pathlib.Path
        A data tree (``reduced_data/DATE/TARGET``) or an ``astrodart reduce`` output
        folder holding one, with calibrated frames.
    out_dir : str or pathlib.Path, optional
        Folder of the figures (default ``OUT/results/diagnostics`` for an output folder,
        else ``<data tree>/diagnostics``).
    filter : str, optional
        The filter (default: the one with most frames).
    n_frames : int
        Consecutive frames the noise is measured over (>= 5).
    gif_frames : int
        Frames in the GIF (>= 2).

    Returns
    -------
    NightDiagnostics

    Raises
    ------
    FileNotFoundError
        No such folder, or no calibrated frames in it.
    ValueError
        Unknown filter, several data trees, or ``n_frames``/``gif_frames`` out of range.
    """
    from astrodart.sources.sep_measure import sep_measure

    if not (isinstance(n_frames, int) and n_frames >= 5 and isinstance(gif_frames, int)
            and gif_frames >= 2):
        raise ValueError(f"n_frames={n_frames!r} must be an integer >= 5 and "
                         f"gif_frames={gif_frames!r} >= 2")
    data_dir = _data_dir(source)
    filter, files = _science_frames(data_dir, filter)
    results = Path(source) / "results"
    out = Path(out_dir) if out_dir is not None else (
        results / "diagnostics" if results.is_dir() else data_dir / "diagnostics")
    ccd = read_frame(files[0])
    look = sep_measure(ccd.data, mask=ccd.mask, threshold=3.0, max_stars=300)
    dx = NightDiagnostics(out, filter, fwhm=look.fwhm)
    label = f"{data_dir.name} {filter}, frame 1"
    terms = _noise_terms(ccd, data_dir)
    _field_figures(ccd, look, out, label, terms[0], dx, Path(files[0]).name)
    _attempt("noise", _noise_figure, dx, files, look, ccd, out, f"{data_dir.name} ({filter})",
             terms, n_frames)
    _attempt("aligned_gif", _gif, dx, data_dir, filter, files, out, gif_frames)
    return dx


def record_diagnostics(summary_path, diagnostics: NightDiagnostics) -> dict:
    """Add the diagnostics (files and captions) to a ``summary.json``.

    Parameters
    ----------
    summary_path : str or pathlib.Path
        ``OUT/results/summary.json`` of ``astrodart reduce``.
    diagnostics : NightDiagnostics
        What :func:`night_diagnostics` made.

    Returns
    -------
    dict
        The summary as written: ``diagnostics`` holds :meth:`NightDiagnostics.to_dict`,
        and ``products`` one ``diagnostics_<name>`` entry per file.

    Raises
    ------
    FileNotFoundError
        No ``summary_path``.
    """
    path = Path(summary_path)
    if not path.is_file():
        raise FileNotFoundError(f"summary_path={str(path)!r}: no such file (the summary of "
                                "an astrodart reduce run)")
    summary = json.loads(path.read_text())
    summary["diagnostics"] = diagnostics.to_dict()
    products = summary.setdefault("products", {})
    for name, fig in diagnostics.figures.items():
        if fig.get("file"):
            products[f"diagnostics_{name}"] = str(fig["file"])
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
    return summary
