"""Layer 3: stacks per filter and their 16-bit TIFF export (file-level).

:func:`stack` combines the aligned frames of each filter with the one stacking engine
(:class:`astrodart.pipeline.image_combination.image_combination`), leaving out the frames a quality
table flags; :class:`save_to_tiff` (AstroDART's name) writes each stack as a linear
16-bit greyscale TIFF whose mapping back to the FITS values is stored in the file.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from astrodart.color.composite import to_uint16
from astrodart.exceptions import warn
from astrodart.frames.io import atomic_output, read_frame, strip_fits_suffix
from astrodart.pipeline.align import _option_names
from astrodart.pipeline.step import check_kwargs, find_log_path, log_event, parse_overwrite

__all__ = [
    "stack",
    "save_to_tiff",
]

log = logging.getLogger("astrodart")


def _frame_key(path) -> str:
    name = strip_fits_suffix(Path(str(path)).name)
    return name.removeprefix("aligned_")


def _flagged_by_quality(quality, rules=None) -> set[str]:
    """Keys of the frames a quality table rejects.

    With :mod:`astrodart.pipeline.quality` available, its :func:`~astrodart.pipeline.quality.good_files`
    decides (``rules`` re-flags the table first; a saved table's path is accepted);
    otherwise a table with a 'file' column and a 'good' (bool) or 'flags' (text)
    column is read directly.
    """
    try:
        from astrodart.pipeline.quality import good_files
    except ImportError:
        good_files = None
    if good_files is not None:
        table = quality
        if isinstance(quality, (str, os.PathLike)):
            from astrodart.pipeline.quality import read_quality_table

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

    Uses :class:`astrodart.pipeline.image_combination.image_combination` (AstroDART's ``image_combination``:
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
        A per-frame quality table of :func:`astrodart.pipeline.quality.quality_table` (or the path
        of a saved one): the frames it flags (not in
        :func:`astrodart.pipeline.quality.good_files`) are left out, matched by file name to
        their aligned copies.
    quality_rules : astrodart.pipeline.quality.QualityRules, optional
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
    from astrodart.pipeline.image_combination import image_combination

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
            warn("stack: no frame left; no stack written", item=f"filter {filt!r}")
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
    **unknown
        Any other keyword: rejected with a :class:`TypeError` naming the valid options.

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

        Returns
        -------
        list of str
            TIFF path per stack, in the order of ``files``.

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
