"""Stage 3, astrophotography: align, stack per filter, colour composites, exports.

``from astrodart.third_stage_astrophotography import *`` gives the names the AstroDART
astrophotography guide uses, plus :func:`stack`:

>>> directories, files, filters = get_directory(data_dir).science_final()   # doctest: +SKIP
>>> aligned = align(files, directories, reference_frame=files[0][0]).run()   # doctest: +SKIP
>>> stacks = stack(aligned, filters, data_dir + 'stacks')                     # doctest: +SKIP
>>> rgb_image(stacks[2], stacks[1], stacks[0]).show()                        # doctest: +SKIP
>>> save_to_tiff(stacks, directories, filters, 'astrophotography', '180423', 'M67',
...              'yes').run()                                                 # doctest: +SKIP

Alignment never gives up silently: each frame goes down a ladder of methods (WCS
reprojection, star-pattern matching with mirror detection, FFT translation; see
:mod:`astrodart.alignment.match`), the method, transform and residual of every aligned
frame are written into its header (``ALN*`` keywords) and the run log, and a frame
that cannot be aligned, or whose transform breaks the limits, is listed in
``align.failed`` with the reason and left out of the outputs, so it can never be
stacked as if it were aligned.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from astrodart.alignment.match import (
    METHODS,
    AlignmentError,
    AlignmentLimitError,
    AlignmentLimits,
    AlignmentResult,
    PixelTransform,
    ReferenceFrame,
    align_frame,
    registration_offset,
)
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
from astrodart.frames.io import FrameError, atomic_output, read_frame, read_header, strip_fits_suffix
from astrodart.pipeline.step import Step, StepReport, check_kwargs, find_log_path, log_event, parse_overwrite

__all__ = [
    "align",
    "stack",
    "rgb_image",
    "save_to_tiff",
    "AlignmentError",
    "AlignmentLimitError",
    "AlignmentLimits",
]

log = logging.getLogger("astrodart")

#: Header keywords written into every aligned frame.
ALIGN_KEYWORDS = ("ALNMETH", "ALNREF", "ALNRKEY", "ALNRES", "ALNNSTAR", "ALNROT", "ALNSCALE",
                  "ALNDX", "ALNDY", "ALNMIRR", "ALNOVER", "ALNA11", "ALNA12", "ALNA13", "ALNA21",
                  "ALNA22", "ALNA23")

_WCS_KEY = re.compile(
    r"^(WCSAXES|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CROTA\d|CD\d_\d|PC\d_\d|PV\d_\d+|PS\d_\d+|"
    r"LONPOLE|LATPOLE|RADESYS|RADECSYS|WCSNAME|(A|B|AP|BP)_\d+_\d+|(A|B|AP|BP)_ORDER|"
    r"A_DMAX|B_DMAX|IMAGEW|IMAGEH)$")


def _strip_wcs(header: fits.Header) -> fits.Header:
    """A copy of ``header`` without WCS keywords (they describe the old pixel grid)."""
    out = header.copy()
    for key in [k for k in out if _WCS_KEY.match(k)]:
        out.remove(key, ignore_missing=True, remove_all=True)
    return out


def _option_names(func) -> list[str]:
    """Named parameters of ``func`` (for the unknown-keyword message)."""
    import inspect

    return [n for n, p in inspect.signature(func).parameters.items()
            if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def _reference_key(path) -> str:
    """Short fingerprint of the reference file (resolved path, size and mtime): a reused
    output aligned to another reference is redone."""
    p = Path(path).resolve()
    st = p.stat()
    return hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


_REF_CACHE: dict[tuple, tuple[ReferenceFrame, fits.Header]] = {}


def _load_reference(path: str, fwhm: float, max_stars: int) -> tuple[ReferenceFrame, fits.Header]:
    """The reference frame, read and its stars found once per process."""
    p = Path(path)
    key = (str(p.resolve()), p.stat().st_mtime_ns, fwhm, max_stars)
    if key not in _REF_CACHE:
        _REF_CACHE.clear()
        ccd = read_frame(p)
        header = ccd.meta if isinstance(ccd.meta, fits.Header) else fits.Header(ccd.meta)
        ref = ReferenceFrame(ccd.data, ccd.mask, wcs=header, fwhm=fwhm, max_stars=max_stars)
        _ = ref.stars
        _REF_CACHE[key] = (ref, header)
    return _REF_CACHE[key]


def _aligned_header(header: fits.Header, ref: ReferenceFrame, ref_header: fits.Header,
                    ref_path: str, result: AlignmentResult) -> fits.Header:
    out = _strip_wcs(header)
    if ref.wcs is not None:
        # the frame now lives on the reference grid: the reference's full WCS applies
        from astropy.wcs import WCS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs_cards = WCS(ref_header).to_header(relax=True)
        # only the geometric cards: astropy also writes the reference's DATE-OBS/MJD-OBS,
        # which must not replace the frame's own time stamps
        for card in wcs_cards.cards:
            if _WCS_KEY.match(card.keyword):
                out[card.keyword] = (card.value, card.comment)
    t = result.transform
    dx, dy = t.offset
    out["ALNMETH"] = (result.method, "alignment method (wcs, stars, fft, reference)")
    out["ALNREF"] = (Path(ref_path).name, "alignment reference frame")
    out["ALNRKEY"] = (_reference_key(ref_path), "fingerprint of the reference file")
    if np.isfinite(result.residual):
        out["ALNRES"] = (round(float(result.residual), 4), "[px] RMS of matched stars after align")
    out["ALNNSTAR"] = (int(result.n_matches), "stars matched to the reference")
    out["ALNROT"] = (round(t.rotation, 5), "[deg] rotation frame -> reference")
    out["ALNSCALE"] = (round(t.scale, 7), "scale frame -> reference")
    out["ALNDX"] = (round(dx, 4), "[px] x offset of the transform")
    out["ALNDY"] = (round(dy, 4), "[px] y offset of the transform")
    out["ALNMIRR"] = (bool(t.mirrored), "frame was mirrored relative to reference")
    out["ALNOVER"] = (round(float(result.overlap), 4), "fraction of reference grid covered")
    m = t.matrix
    for i in range(2):
        for j in range(3):
            out[f"ALNA{i + 1}{j + 1}"] = (float(m[i, j]), "x_ref,y_ref = A @ (x,y,1), 0-based px")
    for a in result.attempts:
        out.add_history(f"astrodart align: {a}"[:400])
    return out


class _AlignStep(Step):
    """Align the frames of one filter onto the reference grid (see :class:`align`)."""

    name = "align"
    prefix = "aligned_"

    def __init__(self, wdir, files, reference: str, overwrite=False, *, options: dict,
                 executor=None, workers=None, progress=True, log_path=None):
        super().__init__(wdir, files, overwrite, executor=executor, workers=workers,
                         progress=progress, log_path=log_path)
        self.reference = str(reference)
        self.options = options

    def parameters(self) -> dict[str, Any]:
        o = dict(self.options)
        lim = o.pop("limits")
        return {"reference": Path(self.reference).name, **o, "max_rotation": lim.max_rotation,
                "scale_range": lim.scale_range, "max_shift": lim.max_shift,
                "allow_mirror": lim.allow_mirror, "min_overlap": lim.min_overlap}

    def masters(self) -> dict[str, str]:
        return {"reference": self.reference}

    def process(self, ccd: CCDData, path: str) -> CCDData:
        o = dict(self.options)
        fwhm, max_stars = o.pop("fwhm"), o.pop("max_stars")
        ref, ref_header = _load_reference(self.reference, fwhm, max_stars)
        header = ccd.meta if isinstance(ccd.meta, fits.Header) else fits.Header(ccd.meta)
        unc = None
        if ccd.uncertainty is not None:
            unc = ccd.uncertainty.represent_as(StdDevUncertainty).array
        if Path(path).resolve() == Path(self.reference).resolve():
            data = np.array(ccd.data, np.float32)
            invalid = np.zeros(data.shape, bool) if ccd.mask is None else np.asarray(ccd.mask, bool)
            invalid = invalid | ~np.isfinite(data)
            data[invalid] = np.nan
            result = AlignmentResult(data, invalid, "reference", PixelTransform.identity(), 0.0,
                                     len(ref.stars), float((~invalid).mean()), [], unc)
        else:
            result = align_frame(ccd.data, ref, mask=ccd.mask, wcs=header, uncertainty=unc, **o)
        log.debug("align %s: %s", path, result.summary())
        unc = None if result.uncertainty is None else StdDevUncertainty(result.uncertainty)
        return CCDData(result.data, unit=ccd.unit, mask=result.invalid, uncertainty=unc,
                       meta=_aligned_header(header, ref, ref_header, self.reference, result))


def _as_filter_lists(files_to_align, directories) -> tuple[list[list[str]], list[str]]:
    if isinstance(directories, (str, Path)):
        directories = [directories]
        if files_to_align and isinstance(files_to_align[0], (str, Path)):
            files_to_align = [files_to_align]
    files = [[str(f) for f in ([group] if isinstance(group, (str, Path)) else group)]
             for group in files_to_align]
    dirs = [str(d) for d in directories]
    if len(files) != len(dirs):
        raise ValueError(f"align: files_to_align has {len(files)} filter groups but directories "
                         f"has {len(dirs)}; they must be parallel lists as returned by "
                         "get_directory(...).science_final()")
    return files, dirs


class align:  # noqa: N801  (AstroDART's public name)
    """Align every frame of every filter onto the pixel grid of one reference frame.

    Each frame goes down a ladder of methods (:func:`astrodart.alignment.match.align_frame`):
    WCS reprojection (``reproject``) when the frame and the reference both carry a
    celestial WCS; else star-pattern matching (astroalign, Beroiz et al. 2020, with a
    least-squares similarity refit on every matched star, and a mirrored attempt for
    frames flipped left-right); else a translation from the FFT phase correlation.
    The output keeps the frame's header, with the old WCS replaced by the reference's
    (if any), and adds ``ALNMETH`` (method), ``ALNA11..ALNA23`` (the affine transform,
    frame pixels to reference pixels, 0-based), ``ALNROT``, ``ALNSCALE``, ``ALNDX``,
    ``ALNDY``, ``ALNMIRR``, ``ALNRES`` (RMS of matched stars, px), ``ALNNSTAR``,
    ``ALNOVER`` and ``ALNREF``. Pixels not covered by the frame are NaN and True in the
    ``MASK`` extension (the footprint).

    Parameters
    ----------
    files_to_align : list of list of str
        Frames per filter (``files`` of ``get_directory(...).science_final()``); a flat
        list is taken as one filter.
    directories : list of str
        Folder of each filter (parallel to ``files_to_align``); a single string for one
        filter.
    reference_frame : str or pathlib.Path
        The frame whose pixel grid every output shares (e.g. ``files[0][0]``).
    overwrite : bool or {'yes', 'no'}
        Redo existing outputs. Outputs aligned to another reference are always redone.
    output_dir : str or pathlib.Path, optional
        Outputs go to ``output_dir/<filter folder name>/``. Default:
        ``<parent of the filter folder>/aligned/<filter folder name>/`` (for the
        reduction tree: ``reduced_data/YYMMDD/<target>/aligned/<filter>/``).
    methods : sequence of {'wcs', 'stars', 'fft'}
        The ladder, in order.
    max_rotation : float, optional
        Largest allowed rotation, degrees (default: any).
    scale_range : (float, float) or None
        Allowed scale range (default 0.9 to 1.1; None for any).
    max_shift : float, optional
        Largest allowed displacement of the frame centre, reference pixels.
    allow_mirror : bool
        Accept (and look for) mirrored frames.
    min_overlap : float
        Smallest fraction of the reference grid a frame must cover.
    match_radius : float
        Star cross-match radius, pixels.
    min_matches : int
        Matched stars needed to accept or verify a transform.
    fwhm : float
        Expected stellar FWHM for star detection, pixels.
    max_stars : int
        Stars detected per frame for matching.
    order : int
        Spline order of the resampling (3 = bicubic).
    executor, workers, progress, log_path
        Passed to the step engine (:class:`astrodart.pipeline.step.Step`): frames are aligned in
        parallel (a process pool over all cores by default).

    Attributes
    ----------
    aligned : list of list of str
        After :meth:`run`: aligned file paths per filter, in input order.
    failed : dict
        After :meth:`run`: ``{input path: reason}`` for every frame left out.
    frames : list of dict
        After :meth:`run`: per aligned frame: filter, input, output, method, rotation,
        scale, dx, dy, mirrored, residual, n_matches, overlap.
    reports : list of astrodart.pipeline.step.StepReport
        The engine's report per filter.

    Raises
    ------
    TypeError
        Unknown keyword argument.
    ValueError
        ``files_to_align`` and ``directories`` are not parallel, or an unknown method.
    """

    def __init__(self, files_to_align, directories, reference_frame, overwrite=False, *,
                 output_dir=None, methods: Sequence[str] = METHODS,
                 max_rotation: float | None = None,
                 scale_range: tuple[float, float] | None = (0.9, 1.1),
                 max_shift: float | None = None, allow_mirror: bool = True,
                 min_overlap: float = 0.2, match_radius: float = 3.0, min_matches: int = 6,
                 fwhm: float = 3.0, max_stars: int = 200, order: int = 3,
                 executor=None, workers: int | None = None, progress: bool = True,
                 log_path=None, **unknown):
        check_kwargs("align", unknown, _option_names(align.__init__))
        self.files, self.directories = _as_filter_lists(files_to_align, directories)
        self.reference_frame = str(reference_frame)
        self.overwrite = parse_overwrite(overwrite)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise ValueError(f"align: unknown method(s) {bad}; choose from {METHODS}")
        self.options = {
            "methods": tuple(methods),
            "limits": AlignmentLimits(max_rotation=max_rotation,
                                      scale_range=None if scale_range is None
                                      else tuple(scale_range),
                                      max_shift=max_shift, allow_mirror=allow_mirror,
                                      min_overlap=min_overlap),
            "match_radius": match_radius, "min_matches": min_matches, "order": order,
            "fwhm": fwhm, "max_stars": max_stars,
        }
        self.engine = {"executor": executor, "workers": workers, "progress": progress,
                       "log_path": log_path}
        self.aligned: list[list[str]] = []
        self.failed: dict[str, str] = {}
        self.frames: list[dict] = []
        self.reports: list[StepReport] = []

    def output_folder(self, i: int) -> Path:
        """Folder of the aligned frames of filter ``i``.

        Parameters
        ----------
        i : int
            Index of the filter in ``directories``.

        Returns
        -------
        pathlib.Path
        """
        label = Path(self.directories[i]).name or f"filter{i}"
        if self.output_dir is not None:
            return self.output_dir / label
        return Path(self.directories[i]).parent / "aligned" / label

    def run(self) -> list[list[str]]:
        """Align all frames; return the aligned file paths per filter.

        Frames that could not be aligned (or broke the limits) are absent from the
        result and listed, with the reason, in :attr:`failed` (and warned about by the
        engine).

        Raises
        ------
        FrameError
            The reference frame is missing or unreadable.
        """
        ref_header = read_header(self.reference_frame)  # fail early and clearly
        del ref_header
        ref_key = _reference_key(self.reference_frame)
        self.aligned, self.failed, self.frames, self.reports = [], {}, [], []
        for i, files in enumerate(self.files):
            wdir = self.output_folder(i)
            probe = _AlignStep(wdir, files, self.reference_frame, self.overwrite,
                               options=self.options, **self.engine)
            stale = []
            if not self.overwrite:
                for f in files:
                    out = probe.output_path(f)
                    if out.exists():
                        try:
                            same = read_header(out).get("ALNRKEY") == ref_key
                        except FrameError:  # unreadable output: redo it
                            same = False
                        if not same:
                            stale.append(f)
            fresh = [f for f in files if f not in stale]
            outs: list[str] = []
            for group, ow in ((stale, True), (fresh, self.overwrite)):
                if not group:
                    continue
                step = _AlignStep(wdir, group, self.reference_frame, ow, options=self.options,
                                  **self.engine)
                outs += step.run()
                self.reports.append(step.report)
                self.failed.update(step.report.failed)
                for f in step.report.failed:
                    old = step.output_path(f)
                    if old.exists():  # an earlier output must not be stacked as if aligned now
                        old.unlink()
                        log.warning("align: removed %s (its frame could not be re-aligned)", old)
            order = {str(probe.output_path(f)): k for k, f in enumerate(files)}
            outs.sort(key=lambda p: order[p])
            self.aligned.append(outs)
            for f in files:
                out = str(probe.output_path(f))
                if out in order and out in outs:
                    self.frames.append(self._frame_record(Path(self.directories[i]).name, f, out))
        log_event(self.engine["log_path"] or find_log_path(self.output_folder(0)),
                  step="align_frames", reference=self.reference_frame, frames=self.frames,
                  failed=self.failed)
        n_ok = sum(len(a) for a in self.aligned)
        if self.failed:
            why = "; ".join(f"{Path(k).name}: {v}" for k, v in self.failed.items())
            log.warning("align: %d frame(s) aligned, %d left out (not aligned): %s", n_ok,
                        len(self.failed), why)
        else:
            log.info("align: %d frame(s) aligned onto %s", n_ok, Path(self.reference_frame).name)
        return self.aligned

    @staticmethod
    def _frame_record(filter_name: str, in_path: str, out_path: str) -> dict:
        h = read_header(out_path)
        return {"filter": filter_name, "input": in_path, "output": out_path,
                "method": h.get("ALNMETH"), "rotation_deg": h.get("ALNROT"),
                "scale": h.get("ALNSCALE"), "dx": h.get("ALNDX"), "dy": h.get("ALNDY"),
                "mirrored": h.get("ALNMIRR"), "residual_px": h.get("ALNRES"),
                "n_matches": h.get("ALNNSTAR"), "overlap": h.get("ALNOVER")}

    def table(self):
        """The per-frame alignment record as an :class:`astropy.table.Table`
        (one row per aligned frame; see :attr:`frames`)."""
        from astropy.table import Table

        rows = [{k: (np.nan if v is None and k == "residual_px" else v) for k, v in r.items()}
                for r in self.frames]
        return Table(rows=rows) if rows else Table()


# --------------------------------------------------------------------------------------
# stacking
# --------------------------------------------------------------------------------------
def _frame_key(path) -> str:
    name = strip_fits_suffix(Path(str(path)).name)
    return name.removeprefix("aligned_")


def _flagged_by_quality(quality, rules=None) -> set[str]:
    """Keys of the frames a quality table rejects.

    With :mod:`astrodart.sources.quality` available, its :func:`~astrodart.sources.quality.good_files`
    decides (``rules`` re-flags the table first; a saved table's path is accepted);
    otherwise a table with a 'file' column and a 'good' (bool) or 'flags' (text)
    column is read directly.
    """
    try:
        from astrodart.sources.quality import good_files
    except ImportError:
        good_files = None
    if good_files is not None:
        table = quality
        if isinstance(quality, (str, os.PathLike)):
            from astrodart.sources.quality import read_quality_table

            table = read_quality_table(quality)
        good = {_frame_key(f) for f in good_files(table, rules)}
        return {_frame_key(f) for f in table["file"]} - good
    cols = quality.colnames if hasattr(quality, "colnames") else list(quality.keys())
    if "file" not in cols or not ({"good", "flags"} & set(cols)):
        raise ValueError(f"stack: the quality table needs a 'file' column and a 'good' or "
                         f"'flags' column; it has {cols}")
    if "good" in cols:
        return {_frame_key(f) for f, g in zip(quality["file"], quality["good"]) if not g}
    return {_frame_key(f) for f, q in zip(quality["file"], quality["flags"]) if str(q).strip()}


def stack(aligned_images, filters, wdir, *, combining_method: str = "median",
          clipping_method: str | None = None, exclude=None, quality=None, quality_rules=None,
          output_name: str = "Combined_image_{filter}.fits", overwrite=False,
          **combine_options) -> list[str | None]:
    """Combine the aligned frames of each filter into one stack per filter.

    Uses :class:`astrodart.combine.files.image_combination` (AstroDART's ``image_combination``:
    methods, clipping and ``memory_limit`` as documented there). Aligned frames carry
    their footprint as a ``MASK`` extension (and NaN); pixels outside a frame's
    footprint do not enter the combination.

    Parameters
    ----------
    aligned_images : list of list of str
        Aligned frames per filter (the result of :meth:`align.run`).
    filters : list of str
        Filter names, parallel to ``aligned_images`` (used in the output names).
    wdir : str or pathlib.Path
        Folder for the stacks (created).
    combining_method : {'median', 'average', 'sum'}
        Passed to ``image_combination``.
    clipping_method : {'sigclip', 'extrema_clipping', 'minmax'}, optional
        Passed to ``image_combination``.
    exclude : iterable of str, optional
        Frames to leave out (paths or file names, of the aligned frames or of the frames
        they came from), e.g. the frames a quality check flagged.
    quality : astropy.table.Table or str, optional
        A per-frame quality table of :func:`astrodart.sources.quality.quality_table` (or the path
        of a saved one): the frames it flags (not in
        :func:`astrodart.sources.quality.good_files`) are left out, matched by file name to
        their aligned copies.
    quality_rules : astrodart.sources.quality.QualityRules, optional
        Re-flag the quality table with these rules first.
    output_name : str
        Output file name; ``{filter}`` is replaced by the filter name.
    overwrite : bool or {'yes', 'no'}
        Redo stacks that exist (otherwise they are reused).
    **combine_options
        Further ``image_combination`` options (``minclip``, ``maxclip``, ``nlow``,
        ``nhigh``, ``memory_limit``, ...); unknown names are rejected by it.

    Returns
    -------
    list of str or None
        Stack path per filter; None for a filter left with no frame.

    Raises
    ------
    ValueError
        ``aligned_images`` and ``filters`` are not parallel, or a bad quality table.
    """
    if len(aligned_images) != len(filters):
        raise ValueError(f"stack: {len(aligned_images)} groups of frames but {len(filters)} "
                         "filters")
    overwrite = parse_overwrite(overwrite)
    drop = {_frame_key(f) for f in (exclude or [])}
    if quality is not None:
        drop |= _flagged_by_quality(quality, quality_rules)
    from astrodart.combine.files import image_combination

    wdir = Path(wdir)
    wdir.mkdir(parents=True, exist_ok=True)
    outputs: list[str | None] = []
    for files, filt in zip(aligned_images, filters):
        files = [str(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
        kept = [f for f in files if _frame_key(f) not in drop]
        left_out = [Path(f).name for f in files if f not in kept]
        name = output_name.format(filter=re.sub(r"[^\w.+-]+", "_", str(filt)))
        if left_out:
            log.info("stack %s: left out %d flagged/excluded frame(s): %s", filt, len(left_out),
                     ", ".join(left_out))
        if not kept:
            warnings.warn(f"stack: no frame left for filter {filt!r}; no stack written",
                          UserWarning, stacklevel=2)
            outputs.append(None)
            continue
        target = wdir / name
        if target.exists() and not overwrite:
            outputs.append(str(target))
            continue
        opts = {"remove_files": "no", "overwrite": True, **combine_options}
        path = image_combination(str(wdir), kept, name, combining_method,
                                 clipping_method=clipping_method, **opts).run()
        log_event(find_log_path(wdir), step="stack", filter=str(filt), output=str(path),
                  inputs=kept, left_out=left_out, combining_method=combining_method,
                  clipping_method=clipping_method, options=combine_options)
        outputs.append(str(path))
    return outputs


# --------------------------------------------------------------------------------------
# colour composites
# --------------------------------------------------------------------------------------
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
        Options of :func:`astrodart.alignment.match.align_frame` (e.g. ``methods``, ``limits``).

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
        self.images = (red_image, green_image, blue_image)
        self.weights = np.array([red_stretch, green_stretch, blue_stretch], float)
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
        :meth:`astrodart.alignment.match.AlignmentResult.summary`)."""
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


# --------------------------------------------------------------------------------------
# TIFF export
# --------------------------------------------------------------------------------------
class save_to_tiff:  # noqa: N801  (AstroDART's public name)
    """Export each filter's stack as a linear 16-bit greyscale TIFF, for editing elsewhere.

    Pixel values are mapped linearly from ``[low, high]`` to ``[0, 65535]``, where
    ``low``/``high`` are the given percentiles of the valid pixels (default: the minimum
    and the maximum, so nothing is clipped); the mapping is stored as JSON in the TIFF
    ``ImageDescription`` (``low``, ``high``, ``unit``), so values can be recovered.
    Invalid (masked or NaN) pixels become 0. The first TIFF row is the top of the image
    (the highest FITS row), as image editors expect.

    Parameters
    ----------
    files : list of str
        One stack per filter (e.g. the paths returned by ``image_combination(...).run()``
        or :func:`stack`); a path relative to the matching entry of ``directories`` is
        resolved there.
    directories : list of str, optional
        Filter folders, parallel to ``files``.
    filters : list of str, optional
        Filter names, parallel to ``files`` (default: the folder names, else the file
        names).
    astro_directory : str or pathlib.Path, optional
        Output folder (created; default: the folder of each stack).
    date, target_name : str, optional
        Put in the output names: ``<target_name>_<date>_<filter>.tif``.
    overwrite : bool or {'yes', 'no'}
        Redo existing TIFFs (else they are reused).
    percentiles : (float, float)
        Percentiles of the valid pixels mapped to 0 and 65535.

    Raises
    ------
    TypeError
        Unknown keyword argument.
    ValueError
        ``files``, ``directories`` and ``filters`` are not parallel.
    """

    def __init__(self, files, directories=None, filters=None, astro_directory=None, date=None,
                 target_name=None, overwrite=False, *,
                 percentiles: tuple[float, float] = (0.0, 100.0), **unknown):
        check_kwargs("save_to_tiff", unknown, _option_names(save_to_tiff.__init__))
        if isinstance(files, (str, Path)):
            files = [files]
        self.files = [str(f[0] if isinstance(f, (list, tuple)) else f) for f in files]
        n = len(self.files)
        if isinstance(directories, (str, Path)):
            directories = [directories] * n
        if isinstance(filters, str):
            filters = [filters]
        for name, seq in (("directories", directories), ("filters", filters)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"save_to_tiff: {n} files but {len(seq)} {name}; pass "
                                 "parallel lists")
        self.directories = [str(d) for d in directories] if directories is not None else None
        self.filters = [str(f) for f in filters] if filters is not None else None
        self.astro_directory = Path(astro_directory) if astro_directory is not None else None
        self.date = None if date is None else str(date)
        self.target_name = None if target_name is None else str(target_name)
        self.overwrite = parse_overwrite(overwrite)
        lo, hi = percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"save_to_tiff: percentiles={percentiles}; need "
                             "0 <= low < high <= 100")
        self.percentiles = (float(lo), float(hi))

    def _source(self, i: int) -> Path:
        p = Path(self.files[i])
        if not p.exists() and self.directories is not None:
            alt = Path(self.directories[i]) / p
            p = alt if alt.exists() else p
        return p

    def _filter(self, i: int, src: Path) -> str:
        if self.filters is not None:
            return self.filters[i]
        if self.directories is not None:
            return Path(self.directories[i]).name
        return strip_fits_suffix(src.name)

    def output_path(self, i: int) -> Path:
        """Output TIFF path of stack ``i``.

        Parameters
        ----------
        i : int
            Index of the stack in ``files``.

        Returns
        -------
        pathlib.Path
        """
        src = self._source(i)
        parts = [self.target_name, self.date, self._filter(i, src)]
        name = "_".join(re.sub(r"[^\w.+-]+", "_", p) for p in parts if p) + ".tif"
        folder = self.astro_directory if self.astro_directory is not None else src.parent
        return folder / name

    def run(self) -> list[str]:
        """Write the TIFFs; return their paths, one per stack.

        Raises
        ------
        FrameError
            A stack is missing or unreadable.
        """
        import tifffile

        outputs = []
        for i in range(len(self.files)):
            src = self._source(i)
            out = self.output_path(i)
            if out.exists() and not self.overwrite:
                outputs.append(str(out))
                continue
            ccd = read_frame(src)
            data = np.asarray(ccd.data, np.float64)
            bad = ~np.isfinite(data)
            if ccd.mask is not None:
                bad |= np.asarray(ccd.mask, bool)
            valid = data[~bad]
            if valid.size == 0:
                raise ValueError(f"save_to_tiff: {src} has no valid pixel")
            low, high = (float(v) for v in np.percentile(valid, self.percentiles))
            if high <= low:
                high = low + 1.0
            scaled = np.clip((data - low) / (high - low), 0.0, 1.0)
            scaled[bad] = 0.0
            img = to_uint16(scaled)  # flipped: first row = top
            meta = {"software": "astrodart save_to_tiff", "source": src.name,
                    "filter": self._filter(i, src), "low": low, "high": high,
                    "unit": ccd.unit.to_string() if ccd.unit is not None else "",
                    "mapping": "value = low + (high - low) * pixel / 65535",
                    "orientation": "first row is the highest FITS row"}
            with atomic_output(out) as tmp:
                tifffile.imwrite(tmp, img, photometric="minisblack", description=json.dumps(meta))
            log.info("save_to_tiff: %s -> %s (low %.4g, high %.4g)", src.name, out, low, high)
            outputs.append(str(out))
        if outputs:
            log_event(find_log_path(Path(outputs[0]).parent), step="save_to_tiff",
                      inputs=self.files, written=outputs, percentiles=list(self.percentiles))
        return outputs
