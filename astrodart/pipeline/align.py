"""Layer 3: the file-level alignment step -- every frame of a night onto one pixel grid.

:class:`align` (AstroDART's name) runs the alignment ladder of
:func:`astrodart.alignment.ladder.align_frame` (WCS reprojection, star-pattern matching
with mirror detection, FFT translation) over the frames of each filter through the step
engine (:class:`astrodart.pipeline.step.Step`: parallel, resumable, logged). The
method, transform and residual of every aligned frame are written into its header
(``ALN*`` keywords, :data:`ALIGN_KEYWORDS`) and the run log, and a frame that cannot
be aligned, or whose transform breaks the limits, is listed in ``align.failed`` with
the reason and left out of the outputs, so it can never be stacked as if it were
aligned.
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from astrodart.alignment.ladder import METHODS, AlignmentResult, ReferenceFrame, align_frame
from astrodart.alignment.transforms import AlignmentLimits, PixelTransform
from astrodart.calibration.pixels import repair_pixels
from astrodart.frames.io import FrameError, read_frame, read_header
from astrodart.pipeline.step import Step, StepReport, check_kwargs, find_log_path, log_event, parse_overwrite
from astrodart.exceptions import quiet

__all__ = [
    "ALIGN_KEYWORDS",
    "align",
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

        with quiet():
            wcs_cards = WCS(ref_header).to_header(relax=True)
        # only the geometric cards: astropy also writes the reference's DATE-OBS/MJD-OBS,
        # which must not replace the frame's own time stamps
        for card in wcs_cards.cards:
            if _WCS_KEY.match(card.keyword):
                out[card.keyword] = (card.value, card.comment)
    t = result.transform
    dx, dy = t.offset
    out["ALNMETH"] = (result.method, "alignment method (wcs, stars, fft, reference)")
    # no comment: a long file name would have it truncated (one VerifyWarning per frame)
    out["ALNREF"] = Path(ref_path).name
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
            if invalid.any():  # as for the other frames: repaired, flagged, not NaN
                data = repair_pixels(data, invalid)
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

    Each frame goes down a ladder of methods (:func:`astrodart.alignment.ladder.align_frame`):
    WCS reprojection (``reproject``) when the frame and the reference both carry a
    celestial WCS; else star-pattern matching (astroalign, Beroiz et al. 2020, with a
    least-squares similarity refit on every matched star, and a mirrored attempt for
    frames flipped left-right); else a translation from the FFT phase correlation.
    The output keeps the frame's header, with the old WCS replaced by the reference's
    (if any), and adds ``ALNMETH`` (method), ``ALNA11..ALNA23`` (the affine transform,
    frame pixels to reference pixels, 0-based), ``ALNROT``, ``ALNSCALE``, ``ALNDX``,
    ``ALNDY``, ``ALNMIRR``, ``ALNRES`` (RMS of matched stars, px), ``ALNNSTAR``,
    ``ALNOVER`` and ``ALNREF``. Pixels not covered by the frame are NaN and True in the
    ``MASK`` extension (the footprint). Masked input pixels (cosmic rays, defects) are
    repaired from their neighbours before the resampling and are True in ``MASK`` at the
    pixel they land on: the mask is not spread, and photometry on the aligned frames
    loses no flux to it.

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
    **unknown
        Any other keyword: rejected with a :class:`TypeError` naming the valid options.

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

        Returns
        -------
        list of list of str
            Aligned file paths per filter, in input order.

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
        """The per-frame alignment record.

        Returns
        -------
        astropy.table.Table
            One row per aligned frame (see :attr:`frames`); empty before :meth:`run`.
        """
        from astropy.table import Table

        rows = [{k: (np.nan if v is None and k == "residual_px" else v) for k, v in r.items()}
                for r in self.frames]
        return Table(rows=rows) if rows else Table()
