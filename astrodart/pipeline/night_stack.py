"""Layer 3: a night's stacks without aligned files -- transforms from the quality step's
star lists, frames warped in memory and median-combined.

The night's quality step (:func:`astrodart.pipeline.quality.quality_table`) already
detects the stars of every calibrated frame and keeps them beside the quality table
(:mod:`astrodart.pipeline.quality_stars`). :func:`plan_alignment` turns them into transforms onto the reference frame with the
'stars' rung of the alignment ladder
(:func:`astrodart.alignment.ladder.star_transform`) without reading a pixel;
:func:`stack_in_memory` then reads each good frame once (data and mask), resamples it
onto the reference grid (:func:`astrodart.alignment.resample.warp_to_reference`; a
frame the star lists could not align goes down the whole ladder,
:func:`astrodart.alignment.ladder.align_frame`), in parallel on the night's pool, and
combines them with the one stacking engine
(:func:`astrodart.combine.engine.combine_band`, median as the file path does). The stack
is written as :func:`astrodart.combine.files.combine_files` writes one (``UNCERT``,
``MASK``, ``NREJECT``), with the reference's WCS and, in ``ADFPRINT``, the fingerprint of
its inputs: a re-run with the same frames keeps it.

The file path (:class:`astrodart.pipeline.align.align` writing aligned frames, then
:func:`astrodart.pipeline.stack.stack`) remains for users who want the aligned frames.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from astrodart.alignment.ladder import (
    ReferenceFrame,
    align_frame,
    star_transform,
    stars_from_detections,
)
from astrodart.alignment.resample import warp_to_reference
from astrodart.alignment.transforms import AlignmentError, PixelTransform
from astrodart.pipeline.quality_stars import star_list_arrays

__all__ = ["AlignmentPlan", "NightStack", "align_night", "plan_alignment", "stack_in_memory",
           "stack_night"]

log = logging.getLogger("astrodart")

@dataclass
class AlignmentPlan:
    """How each frame of a filter goes onto the reference grid.

    Parameters
    ----------
    reference : str
        The reference frame.
    reference_stars : (n, 2) ndarray or None
        Its star positions (None: found on its pixels).
    transforms : dict
        Frame -> ``(transform, residual, n_matches)`` found from the star lists.
    stars : dict
        Frame -> its star positions (n, 2), or None (found on its pixels).
    ladder : dict
        Frame -> why the star lists did not align it: it goes down the whole ladder of
        :func:`astrodart.alignment.ladder.align_frame` on its pixels.
    """

    reference: str
    reference_stars: np.ndarray | None
    transforms: dict = field(default_factory=dict)
    stars: dict = field(default_factory=dict)
    ladder: dict = field(default_factory=dict)


def plan_alignment(files, reference: str, star_lists: dict, options: dict) -> AlignmentPlan:
    """Transforms onto ``reference`` from star lists alone (no pixel read).

    Parameters
    ----------
    files : sequence of str
        Frames of one filter.
    reference : str
        The reference frame.
    star_lists : dict
        File -> star list (:func:`load_star_lists` entries or the quality step's tables).
    options : dict
        The options of :class:`astrodart.pipeline.align.align` (``methods``, ``limits``,
        ``match_radius``, ``min_matches``, ``max_stars``, ...).

    Returns
    -------
    AlignmentPlan
        Frames whose list is missing or too short, whose patterns do not match, or whose
        ladder does not start with 'stars', are left to the whole ladder.
    """
    def xy_of(f):
        entry = star_lists.get(str(f))
        if entry is None:
            return None
        x, y, flux, flag, shape = star_list_arrays(entry)
        return stars_from_detections(x, y, flux, flag, shape, options["max_stars"]), shape

    ref_entry = xy_of(reference)
    plan = AlignmentPlan(str(reference), None if ref_entry is None else ref_entry[0])
    ref = None
    if plan.reference_stars is not None:
        ref = ReferenceFrame(np.zeros(ref_entry[1], np.float32), stars=plan.reference_stars)
    for f in (str(p) for p in files):
        entry = xy_of(f)
        plan.stars[f] = None if entry is None else entry[0]
        if f == plan.reference:
            continue
        if ref is None or entry is None or entry[0] is None:
            plan.ladder[f] = "no star list from the quality step"
        elif tuple(options["methods"])[:1] != ("stars",):
            plan.ladder[f] = "the ladder does not start with 'stars'"
        else:
            try:
                plan.transforms[f] = star_transform(
                    entry[0], ref, entry[1], limits=options["limits"],
                    match_radius=options["match_radius"], min_matches=options["min_matches"])
            except AlignmentError as exc:
                plan.ladder[f] = str(exc)
    return plan


def _read_pixels(path, header: bool = False) -> tuple:
    """Data (float32), invalid pixels (MASK extension, non-finite, raw saturation) and,
    when asked, header of a calibrated frame. The uncertainty plane is not read (a median
    stack measures its own) and the header is not parsed unless asked (its cards cost
    more than the pixels)."""
    from astrodart.frames.checks import raw_saturation
    from astrodart.frames.io import FrameError, image_hdu_index

    try:
        # plain files are memory-mapped (one copy into float32); gzip files cannot be
        with fits.open(path, memmap=not str(path).lower().endswith((".gz", ".bz2"))) as hdul:
            idx = image_hdu_index(hdul, path)
            hdu = hdul[idx]
            data = np.array(hdu.data, np.float32).reshape(hdu.data.shape[-2:])
            names = [h.name for h in hdul]
            bad = (np.asarray(hdul["MASK"].data).reshape(data.shape) != 0 if "MASK" in names
                   else np.zeros(data.shape, bool))
            level = raw_saturation(hdu.header) if hdu.header.get("BITPIX", -32) > 0 else None
            head = hdu.header.copy() if header else None
    except FrameError:
        raise
    except Exception as exc:  # truncated or damaged file
        raise FrameError(path, f"pixel data unreadable ({type(exc).__name__}: {exc})") from exc
    bad |= ~np.isfinite(data)
    if level is not None:
        bad |= data >= level
    return data, bad, head


_REFERENCES: dict[tuple, ReferenceFrame] = {}


def _reference(path: str, stars, options: dict) -> ReferenceFrame:
    """The reference frame with its pixels and WCS, read once per process (the ladder's
    WCS and FFT rungs need them)."""
    key = (str(path), Path(path).stat().st_mtime_ns, options["fwhm"], options["max_stars"])
    if key not in _REFERENCES:
        _REFERENCES.clear()
        data, bad, header = _read_pixels(path, header=True)
        _REFERENCES[key] = ReferenceFrame(data, bad, wcs=header, fwhm=options["fwhm"],
                                          max_stars=options["max_stars"], stars=stars)
    return _REFERENCES[key]


def _record(method, transform: PixelTransform, residual, n, overlap, attempts=()) -> dict:
    return {"method": method, "matrix": transform.matrix[:2].tolist(),
            "residual": float(residual), "n_matches": int(n), "overlap": float(overlap),
            "attempts": list(attempts)}


def _on_grid(task) -> tuple:
    """One frame on the reference grid, a picklable worker: ``(pixels with NaN where
    invalid, record, None)``, or ``(True, record, None)`` once written into the shared cube
    named by the task's last item, or ``(None, None, reason)`` when it cannot be aligned."""
    *frame, slot = task
    data, rec, why = _grid_pixels(*frame)
    if data is None or slot is None:
        return data, rec, why
    cube_path, cube_shape, i = slot
    cube = np.memmap(cube_path, np.float32, "r+", shape=cube_shape)
    cube[i] = data
    del cube
    return True, rec, None


def _grid_pixels(path, how, ref_path, ref_stars, shape, o) -> tuple:
    """:func:`_on_grid` of one frame: its pixels on the grid (NaN where invalid), the
    record, or the reason it cannot be aligned."""
    try:
        data, bad, header = _read_pixels(path)
    except Exception as exc:  # one unreadable frame is left out, never kills the stack
        return None, None, f"{type(exc).__name__}: {exc}"
    if how[0] == "reference":
        data[bad] = np.nan
        return data, _record("reference", PixelTransform.identity(), 0.0, 0,
                             float((~bad).mean())), None
    if how[0] == "stars":
        transform = PixelTransform(np.vstack([how[1], [0.0, 0.0, 1.0]]))
        out, invalid = warp_to_reference(data, transform, shape, bad, order=o["order"])
        overlap = float((~invalid).mean())
        if overlap >= o["limits"].min_overlap:
            out[invalid] = np.nan
            return out, _record("stars", transform, how[2], how[3], overlap), None
    ref = _reference(ref_path, ref_stars, o)
    header = _read_pixels(path, header=True)[2]
    try:
        res = align_frame(data, ref, mask=bad, wcs=header, stars=how[1] if how[0] == "ladder"
                          else None, methods=o["methods"], limits=o["limits"],
                          match_radius=o["match_radius"], min_matches=o["min_matches"],
                          order=o["order"])
    except AlignmentError as exc:
        return None, None, str(exc)
    res.data[res.invalid] = np.nan
    return res.data, _record(res.method, res.transform, res.residual, res.n_matches,
                             res.overlap, res.attempts), None


@dataclass
class NightStack:
    """One filter's stack made by :func:`stack_in_memory`.

    Parameters
    ----------
    path : str or None
        The stack (None when no frame was left).
    combined : list of str
        Calibrated frames combined.
    failed : dict
        Frame -> why it could not be aligned (left out).
    frames : list of dict
        Per combined frame: ``input``, ``method``, ``matrix`` (2 x 3, frame pixels ->
        reference pixels, 0-based), ``residual`` (px), ``n_matches``, ``overlap``.
    reused : bool
        The stack on disk was made from the same frames and kept.
    """

    path: str | None
    combined: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    frames: list = field(default_factory=list)
    reused: bool = False


def _stack_fingerprint(files, reference: str, options: dict, inputs_id) -> str:
    """What made a stack: the frames (their content identities, or ``inputs_id`` standing
    for them), the reference file as it is now (a re-solved reference makes another stack)
    and the options."""
    import hashlib
    import json

    from astrodart.pipeline.align import _reference_key
    from astrodart.pipeline.fingerprint import inputs_fingerprint

    o = {k: v for k, v in options.items() if k != "limits"}
    o["limits"] = repr(options["limits"])
    if inputs_id is None:
        inputs_id = inputs_fingerprint("night_stack", [*files, reference], {})
    blob = json.dumps(["night_stack", inputs_id, [Path(f).name for f in files],
                       _reference_key(reference), "median", o], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()


def _tasks(files, plan: AlignmentPlan, shape, options, cube_path=None) -> list:
    tasks = []
    for i, f in enumerate(files):
        if f == plan.reference:
            how = ("reference",)
        elif f in plan.transforms:
            t, resid, n = plan.transforms[f]
            how = ("stars", t.matrix[:2], resid, n)
        else:
            how = ("ladder", plan.stars.get(f))
        slot = None if cube_path is None else (cube_path, (len(files), *shape), i)
        tasks.append((f, how, plan.reference, plan.reference_stars, tuple(shape), options, slot))
    return tasks


def _shared_cube(n: int, shape) -> tuple[np.ndarray, str]:
    """An ``(n, ny, nx)`` float32 array in a file every worker process of this machine maps
    (in memory under ``/dev/shm`` when it has room): frames go in without being pickled."""
    import os
    import shutil
    import tempfile

    size = 4 * n * shape[0] * shape[1]
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    if shm is not None and shutil.disk_usage(shm).free < 1.2 * size:
        shm = None
    fd, path = tempfile.mkstemp(prefix="astrodart_stack_", suffix=".f32", dir=shm)
    os.close(fd)
    return np.memmap(path, np.float32, "w+", shape=(n, *shape)), path


def _warp_all(files, plan, shape, options, executor, batch: int = 16):
    """Every frame on the reference grid, stacked into one ``(n, ny, nx)`` float32 array
    (NaN where invalid); frames that fail are reported, not stacked. A process pool writes
    into a shared cube; otherwise the frames come back as arrays, a batch at a time."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    from astrodart.pipeline.executors import map_tasks

    shared = isinstance(executor, ProcessPoolExecutor)
    cube, cube_path = (_shared_cube(len(files), shape) if shared
                       else (np.empty((len(files), *shape), np.float32), None))
    kept, records, failed, slots = [], [], {}, []
    tasks = _tasks(files, plan, shape, options, cube_path)
    step = len(tasks) if shared else batch
    try:
        for b in range(0, len(tasks), step):  # not shared: at most one batch held besides
            for i, (data, rec, why) in enumerate(map_tasks(_on_grid, tasks[b:b + step],
                                                           executor), start=b):
                if data is None:
                    failed[files[i]] = why
                    continue
                if not shared:
                    cube[len(kept)] = data
                slots.append(i)
                kept.append(files[i])
                records.append({"input": files[i], **rec})
    finally:
        if cube_path is not None:
            os.remove(cube_path)  # the mapping lives on until the cube is released
    if shared:
        return (cube if len(slots) == len(files) else np.asarray(cube[slots])), kept, records, \
            failed
    return cube[:len(kept)], kept, records, failed


def _combined_header(kept: list, record: dict, plan: AlignmentPlan, nrejected: int):
    """The stack's header as the file path writes it: the first frame's, aligned onto the
    reference (reference WCS, ``ALN*`` cards), with the combination's cards."""
    from types import SimpleNamespace

    from astrodart.alignment.ladder import AlignmentResult
    from astrodart.combine.files import _output_header
    from astrodart.combine.methods import Rejection
    from astrodart.frames.io import _unit_from_header, read_header
    from astrodart.pipeline.align import _aligned_header

    ref_header = read_header(plan.reference)
    ref = ReferenceFrame(np.zeros((1, 1), np.float32), wcs=ref_header)
    t = PixelTransform(np.vstack([record["matrix"], [0.0, 0.0, 1.0]]))
    res = AlignmentResult(None, None, record["method"], t, record["residual"],
                          record["n_matches"], record["overlap"], record["attempts"])
    header = _aligned_header(read_header(kept[0]), ref, ref_header, plan.reference, res)
    inputs = [SimpleNamespace(path=Path(f), header=header) for f in kept]
    return _output_header(inputs, "median", Rejection(), None, None, np.float32,
                          _unit_from_header(header, "adu"), nrejected)


def stack_in_memory(files, plan: AlignmentPlan, path, *, options: dict, executor=None,
                    overwrite: bool = False, threads: int = 2,
                    inputs_id: str | None = None) -> NightStack:
    """Align the frames of one filter in memory and median-combine them into ``path``.

    Parameters
    ----------
    files : sequence of str
        Calibrated frames to stack (the good ones), one filter.
    plan : AlignmentPlan
        From :func:`plan_alignment`.
    path : str or pathlib.Path
        The stack to write (FITS: data, ``UNCERT``, ``MASK``, ``NREJECT`` as
        :func:`astrodart.combine.files.combine_files` writes them).
    options : dict
        The options of :class:`astrodart.pipeline.align.align` (``align(...).options``).
    executor : Executor-like, optional
        The night's pool: frames are read and warped in parallel (None: here).
    overwrite : bool
        Make the stack again even when the one on disk was made from the same frames.
    threads : int
        Threads of the combination.
    inputs_id : str, optional
        A fingerprint already covering the content of ``files`` (the night's quality
        table's): spares reading every frame's identity again to decide on reuse.

    Returns
    -------
    NightStack
        ``path`` is None when every frame failed (``failed`` says why).

    Notes
    -----
    The filter's frames on the grid take 4 bytes per pixel per frame (100 frames of
    1024 x 1024: 0.4 GB): in memory, or with a process pool in a file the workers map
    (under ``/dev/shm`` when it has room, else the system's temporary folder).
    """
    from astrodart.combine.engine import combine_band
    from astrodart.frames.io import read_header

    files, path = [str(f) for f in files], Path(path)
    fingerprint = _stack_fingerprint(files, plan.reference, options, inputs_id)
    if not overwrite and _stands(path, fingerprint):
        return NightStack(str(path), files, reused=True)
    t0 = time.perf_counter()
    h = read_header(plan.reference)
    shape = (int(h["NAXIS2"]), int(h["NAXIS1"]))
    cube, kept, records, failed = _warp_all(files, plan, shape, options, executor)
    if not kept:
        return NightStack(None, [], failed, records)
    t1 = time.perf_counter()
    result = combine_band(cube, "median", threads=threads)  # the engine: in place
    del cube
    header = _combined_header(kept, records[0], plan, int(result.nrejected.sum(dtype=np.int64)))
    header["ADFPRINT"] = (fingerprint, "inputs of the stack")
    _write_stack(result, header, path)
    made = NightStack(str(path), kept, failed, records)
    _log(made, t1 - t0, time.perf_counter() - t1)
    return made


def _log(made: NightStack, warp: float, combine: float) -> None:
    """The stack in the log and in the target's run log (frames, transforms, left out)."""
    from astrodart.pipeline.runlog import find_log_path, log_event

    path = Path(made.path)
    log.info("stack in memory: %d frames -> %s (warp %.2f s, combine %.2f s)",
             len(made.combined), path.name, warp, combine)
    log_event(find_log_path(path.parent), step="stack", output=str(path), inputs=made.combined,
              left_out=sorted(made.failed), combining_method="median", in_memory=True,
              frames=made.frames, failed=made.failed, warp_seconds=round(warp, 3),
              combine_seconds=round(combine, 3))


def _stands(path: Path, fingerprint: str) -> bool:
    """Whether the stack at ``path`` was made from what ``fingerprint`` describes."""
    from astrodart.frames.io import FrameError, read_header

    try:
        return path.is_file() and read_header(path).get("ADFPRINT") == fingerprint
    except FrameError:  # a damaged stack is made again
        return False


def _write_stack(result, header: fits.Header, path: Path) -> None:
    """The combination written as :func:`astrodart.combine.files.combine_files` writes it."""
    from astrodart.combine.files import _write_result

    path.parent.mkdir(parents=True, exist_ok=True)
    _write_result(result, header, path, True)


def align_night(run) -> None:
    """The night's align step without aligned files: a transform per good frame from the
    star lists (:func:`plan_alignment`), kept in ``run.tables['align_plans']``; a filter
    whose stack was made from the same frames keeps it (``result.stacks``).

    Parameters
    ----------
    run : astrodart.pipeline.night._NightRun
        The night's state after the quality step (``tables['stars']`` its star lists).
    """
    from astrodart.pipeline.align import align
    from astrodart.pipeline.quality import good_files
    from astrodart.pipeline.stack import _frame_key
    from astrodart.pipeline.tidy import _stack_name

    result, plans, stood = run.result, {}, []
    ref, inputs_id = result.reference_frame, (result.quality.meta or {}).get("fingerprint")
    options = align([[ref]], [str(Path(ref).parent)], ref,
                    methods=run.options.align_methods).options
    good = {_frame_key(f) for f in good_files(result.quality)}
    for f in result.filters:
        files = [p for p in result.calibrated[f] if _frame_key(p) in good]
        path = result.data_dir / "stacks" / _stack_name(f)
        if not run.options.overwrite and _stands(path, _stack_fingerprint(files, ref, options,
                                                                          inputs_id)):
            result.stacks[f] = str(path)  # made from these frames: nothing to align
            stood.append(f)
            continue
        plan = plan_alignment(files, ref, run.tables.get("stars") or {}, options)
        plans[f] = (files, plan, options)
        if plan.ladder:
            log.info("align %s: %d frame(s) by star lists, %d by the ladder on pixels", f,
                     len(plan.transforms), len(plan.ladder))
    run.tables["align_plans"] = plans
    if stood and not plans:
        run.reused += ["align", "stack"]


def stack_night(run) -> None:
    """The night's stack step after :func:`align_night`: each filter's good frames warped
    in memory and median-combined into ``data_dir/stacks/`` (:func:`stack_in_memory`);
    nothing when the align step wrote aligned frames instead.

    Parameters
    ----------
    run : astrodart.pipeline.night._NightRun
        The night's state; fills ``result.stacks`` and ``result.align_failed``.
    """
    from astrodart.pipeline.tidy import _stack_name

    result, reused, plans = run.result, True, run.tables.get("align_plans")
    if not plans:  # the align step wrote aligned frames (or found the stacks standing)
        return
    for f, (files, plan, options) in plans.items():
        if f in result.stacks:
            continue
        made = stack_in_memory(files, plan, result.data_dir / "stacks" / _stack_name(f),
                               options=options, executor=run.pool, overwrite=True,
                               inputs_id=(result.quality.meta or {}).get("fingerprint"))
        reused &= made.reused
        result.align_failed.update(made.failed)
        if made.path is not None:
            result.stacks[f] = made.path
        run.tables.setdefault("aligned_frames", {})[f] = made.frames
    if reused:
        run.reused += ["align", "stack"]
