"""Layer 3: ``astrodart reduce``: one's own night, in any common layout, to science products.

:func:`reduce` finds and classifies the frames of a night folder
(:func:`astrodart.pipeline.survey.survey_night`), sorts them into the AstroDART data tree
under ``OUT/reduced_data/DATE/TARGET/`` (so the guided notebooks and
``get_directory(...).science_final()`` resume from it), walks the night's steps
(:data:`astrodart.pipeline.night.NIGHT_STEPS`, the plan the demo uses, selected by
``--start/--stop/--only``) and writes ``OUT/results/``::

    summary.json        frames per type and filter, rejected frames with reasons, reused
                        steps, masters, gain and read noise with their source, timings
    quality.ecsv        per-frame quality table
    stack_<filter>.fits the stack (with its WCS where the field was solved) and a PNG
    lightcurve.ecsv     bjd_tdb, rel_flux, rel_flux_err, airmass, fwhm, sky, centroids
    transit.json        t0_bjd_tdb, t0_err_min, depth, depth_err, duration_h, rms_oot
                        (or detected: false)
    aavso_extended.txt  AAVSO Extended File Format, aavso_exoplanet.txt: AAVSO Exoplanet
                        Database report (--obscode; astrodart.pipeline.night_exports)

Nothing here measures anything: the steps are the stage calls of the guides; this module
chooses them, runs them and reports. The raw night is only read (``--out`` inside the
night folder is refused).

The per-frame steps run on a process pool here, or with ``--scheduler ADDRESS`` on the
workers of a running dask.distributed cluster (:mod:`astrodart.pipeline.cluster`: the
scheduler is reached and its workers checked before anything is read or written);
``summary.json`` records where under ``ran_on``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

from astrodart import __version__
from astrodart.pipeline.night import NIGHT_STEPS, NightStep, reduce_night
from astrodart.pipeline.reduce_options import REDUCE_STEPS, STEP_ALIASES, ReduceOptions

__all__ = ["reduce", "plan_text", "clear_output", "MANIFEST_NAME", "ReduceRun"]

log = logging.getLogger("astrodart")

#: Written at the top of OUT: what astrodart made there (read by :func:`clear_output`).
MANIFEST_NAME = "astrodart_reduce.json"
#: File kinds astrodart writes into its folders (``astrodart clear`` removes only these).
_OUR_SUFFIXES = (".fits", ".fit", ".fts", ".gz", ".fz", ".ecsv", ".json", ".jsonl", ".png",
                 ".gif", ".h5", ".hdf5", ".toml", ".ipynb", ".txt", ".csv", ".tmp")


@dataclasses.dataclass
class ReduceRun:
    """What :func:`reduce` did.

    Parameters
    ----------
    options : ReduceOptions
        The settings of the run.
    survey : astrodart.pipeline.survey.NightSurvey
        The frames found and their types.
    date, target : str
        The night folder name (YYMMDD) and target of the data tree.
    result : astrodart.pipeline.night.NightResult or None
        The night run (None for a dry run).
    products : dict
        Product name -> path (``OUT/results/...``).
    summary : dict
        The content of ``summary.json``.
    ran_on : dict
        Where the per-frame steps ran
        (:func:`astrodart.pipeline.cluster.where_it_runs`).
    """

    options: ReduceOptions
    survey: object
    date: str
    target: str
    result: object = None
    products: dict = dataclasses.field(default_factory=dict)
    summary: dict = dataclasses.field(default_factory=dict)
    ran_on: dict = dataclasses.field(default_factory=dict)


def _target(options: ReduceOptions, survey, parsed: dict, notes: list):
    """Name and position of the target: the options, else the lights' headers."""
    from astrodart.frames.header import FrameHeader

    name = options.target or survey.target() or "target"
    coord = parsed["coord"]
    lights = survey.of_type("light")
    if coord is None and parsed["target_xy"] is None and lights:
        coord = FrameHeader.from_file(lights[0].path).coord
        if coord is not None:
            notes.append(f"target position from the header of {lights[0].path.name}: "
                         f"{coord.to_string('hmsdms', precision=1)} (give --coord to change)")
    return name, coord


def _check_site(parsed: dict, survey, coord) -> None:
    """A light curve needs the observatory (BJD_TDB, airmass): refuse before any work when
    neither ``--site`` nor the lights' headers give it."""
    from astrodart.frames.header import FrameHeader
    from astrodart.pipeline.reduce_options import UsageError

    wants = {"photometry", "lightcurve", "transit"} & set(parsed["steps"])
    lights = survey.of_type("light")
    if (not wants or parsed["site"] is not None or not lights
            or (coord is None and parsed["target_xy"] is None)):
        return
    if FrameHeader.from_file(lights[0].path).location is None:
        raise UsageError(f"--site is needed for the light curve (BJD_TDB, airmass): the "
                         f"frames carry no site keywords ({lights[0].path.name}); give "
                         "--site LAT,LON,HEIGHT_M or an observatory name, or --stop stack")


def _selected(names: list[str], redo: bool, product_steps: tuple) -> list[NightStep]:
    """The night's steps to walk: every step up to the last selected one (earlier steps
    reuse their outputs), with ``redo`` applied to the selected ones only."""
    wanted = {STEP_ALIASES.get(n, n) for n in names}
    plan = list(NIGHT_STEPS) + list(product_steps)
    last = max(i for i, s in enumerate(plan) if s.name in wanted)

    def wrap(step: NightStep) -> NightStep:
        selected = step.name in wanted

        def run(state, _step=step, _selected=selected):
            state.options.overwrite = bool(redo and _selected)
            _step.run(state)
        return NightStep(step.name, run, step.does, step.when)

    return [wrap(s) for s in plan[:last + 1]]


def plan_text(options: ReduceOptions, survey, date: str, target: str, out: Path,
              has_target: bool = True) -> str:
    """The plan of a run as text (what ``--dry-run`` prints): frames, masters per light,
    the steps and what each would reuse.

    Parameters
    ----------
    options : ReduceOptions
        The settings.
    survey : astrodart.pipeline.survey.NightSurvey
        The frames found.
    date, target : str
        Night folder name and target.
    out : pathlib.Path
        Output folder.
    has_target : bool
        Whether the target's position is known (photometry runs only then).

    Returns
    -------
    str
        The plan; nothing is written to make it.
    """
    from astrodart.pipeline.organise import get_directory

    lines = [f"night {survey.night} ({survey.layout} layout) -> {out}/reduced_data/"
             f"{date}/{target}/ and {out}/results/", "", survey.table(), ""]
    lines += ["calibration of each light group:"] + _master_plan(options, survey)
    data_dir = out / "reduced_data" / date / target
    done = get_directory(data_dir).science_final()[2] if data_dir.is_dir() else []
    lines += ["", "steps:"]
    names = options.steps()
    for step in list(NIGHT_STEPS) + list(PRODUCT_STEPS):
        shown = [n for n in names if STEP_ALIASES.get(n, n) == step.name]
        if not shown:
            continue
        reuse = ""
        if step.name in ("masters", "calibrate") and done and not options.redo:
            reuse = f"  [reuses the calibrated frames of {', '.join(done)}]"
        alias = "".join(f"; {a}: {_alias_text(a)}" for a in shown if a != step.name)
        if step.name in ("photometry", "lightcurve", "transit") and not has_target:
            reuse = "  [skipped: no target position; give --coord or --target-xy]"
        lines.append(f"  {step!r}{alias}{reuse}")
    skipped = [n for n in REDUCE_STEPS if n not in names]
    if skipped:
        lines.append(f"  not run: {', '.join(skipped)}")
    return "\n".join(lines)


def _alias_text(name: str) -> str:
    return {"cosmics": "in the same pass (L.A.Cosmic)"}.get(name, "")


def _master_plan(options: ReduceOptions, survey) -> list[str]:
    """One line per (filter, exposure) of the lights: the masters that will calibrate it."""
    if options.calibrated:
        return ["  lights calibrated already (--calibrated): no bias, dark or flat"]
    bias = len(survey.of_type("bias"))
    darks = sorted({r.exptime for r in survey.of_type("dark")})
    groups = sorted({(r.filter or "none", r.exptime) for r in survey.of_type("light")})
    out = []
    for filt, t in groups:
        if t in darks:
            dark = f"master dark {t:g} s"
        elif darks and options.interpolate_darks and len(darks) >= 2:
            dark = f"master dark interpolated from {', '.join(f'{d:g}' for d in darks)} s"
        elif darks and bias:
            near = min(darks, key=lambda d: abs(d - t))
            dark = f"master dark scaled from {near:g} s"
        elif darks:
            dark = f"no dark of {t:g} s (darks at {darks} s cannot be scaled without a bias)"
        else:
            dark = "no dark"
        flats = len(survey.of_type("flat", filt))
        out.append(f"  {filt:<10} {t:>7g} s: {'master bias' if bias else 'no bias'}, {dark}, "
                   + (f"master flat {filt} ({flats} frames)" if flats else "no flat"))
    return out


def reduce(options: ReduceOptions, echo=print) -> ReduceRun:
    """Reduce a night folder to science products (``astrodart reduce``).

    Parameters
    ----------
    options : ReduceOptions
        The settings (checked before anything is read or written).
    echo : callable
        Where the plan, notes and final summary are printed (``print``).

    Returns
    -------
    ReduceRun
        The survey, the night result and the products.

    Raises
    ------
    astrodart.pipeline.reduce_options.UsageError
        A setting that cannot be used, also a ``--scheduler`` that does not answer or
        whose workers cannot run the night (before anything is read or written).
    FileNotFoundError
        No FITS frames in the night folder, or a frame type the steps need is missing.
    """
    parsed = options.check()
    with _night_executor(options, parsed) as (executor, ran_on):
        return _reduce(options, parsed, executor, ran_on, echo)


@contextlib.contextmanager
def _night_executor(options: ReduceOptions, parsed: dict):
    """``(executor, ran_on)`` for the run: None (the night's own process pool) or the
    client of ``--scheduler``, connected and checked before any work (the night and OUT
    made absolute: the workers resolve no relative path); the client made here is closed
    at the end, the cluster keeps running."""
    from astrodart.pipeline.cluster import SchedulerError, connect_scheduler, where_it_runs
    from astrodart.pipeline.reduce_options import UsageError

    if options.scheduler is None:
        yield None, where_it_runs(None, options.workers)
        return
    parsed["night"], parsed["out"] = parsed["night"].resolve(), parsed["out"].resolve()
    try:
        client, owned = connect_scheduler(options.scheduler, read=[parsed["night"]],
                                          write=[parsed["out"]])
    except (SchedulerError, ValueError) as exc:
        raise UsageError(f"--{exc}" if str(exc).startswith("scheduler") else
                         f"--scheduler: {exc}") from None
    try:
        yield client, where_it_runs(client)
    finally:
        if owned:
            client.close()


def _where_text(ran_on: dict) -> str:
    """One line: where the per-frame steps run."""
    if ran_on.get("scheduler"):
        return (f"per-frame steps on the dask cluster at {ran_on['scheduler']}: "
                f"{ran_on['workers']} workers, {ran_on['threads']} threads")
    return f"per-frame steps on {ran_on['host']}: {ran_on['executor']} of {ran_on['workers']}"


def _reduce(options: ReduceOptions, parsed: dict, executor, ran_on: dict, echo) -> ReduceRun:
    """The run of :func:`reduce` once the options are checked and the executor chosen."""
    from astrodart.pipeline.survey import survey_night

    t0 = time.perf_counter()
    survey = survey_night(parsed["night"], frame_types=parsed["frame_types"],
                          target=options.target)
    t_survey = time.perf_counter() - t0
    notes = list(survey.override_messages())
    date = survey.night_date()
    target, coord = _target(options, survey, parsed, notes)
    run = ReduceRun(options, survey, date, target, ran_on=ran_on)
    out = parsed["out"]
    _check_site(parsed, survey, coord)
    if options.dry_run:
        echo(plan_text(options, survey, date, target, out,
                       coord is not None or parsed["target_xy"] is not None))
        echo(_where_text(ran_on))
        return run
    for line in notes + ([_where_text(ran_on)] if executor is not None else []):
        echo(line)
    out.mkdir(parents=True, exist_ok=True)
    with _sole_run(out):
        _write_manifest(out, date, target)
        steps = _selected(parsed["steps"], options.redo, _product_steps(parsed, out))
        if options.keep_intermediate or (options.redo and "stack" in parsed["steps"]):
            from astrodart.pipeline.tidy import forget_removed

            forget_removed(out)  # aligned frames removed by an earlier run are made again
        run.result = reduce_night(
            out, date, target, filters=options.filters or None, target_coord=coord,
            comparisons=parsed["comparisons"], transit_guess=False,  # the transit step fits
            saturation=options.saturation, cosmic_rays="lacosmic" if options.cosmics else None,
            executor=executor, workers=options.workers, progress=options.progress, steps=steps,
            interpolate_darks=options.interpolate_darks, gain=options.gain,
            read_noise=options.read_noise, calibrated=_calibrated_lights(options, survey),
            site=parsed["site"],
            stack=options.stack, survey=survey, target_xy=parsed["target_xy"],
            lightcurve_aperture=options.aperture, bayer_pattern=options.bayer_pattern,
            demosaic=options.demosaic,
            # aligned frames as files only when kept or when the run ends at align
            write_aligned=options.keep_intermediate or "stack" not in parsed["steps"])
        run.result.timings = {"survey": t_survey, **run.result.timings}
        from astrodart.pipeline.reduce_summary import finish

        finish(run, out, notes, time.perf_counter() - t0, echo)
    return run


@contextlib.contextmanager
def _sole_run(out: Path):
    """Hold OUT's lock for the run: a second ``astrodart reduce`` on it refuses at once
    (two runs writing one tree would each reuse the other's half-written products)."""
    from astrodart.frames.locks import folder_lock

    with contextlib.ExitStack() as held:
        try:
            held.enter_context(folder_lock(out, timeout=0))
        except TimeoutError:
            raise RuntimeError(f"{out}: another astrodart reduce is running on this output "
                               "folder; wait for it to finish or choose another --out "
                               "(nothing was written)") from None
        yield


def _calibrated_lights(options: ReduceOptions, survey):
    """True (``--calibrated``), or the names of the lights whose headers say they are
    calibrated (as sorted copies: compressed names also without the compression suffix)."""
    if options.calibrated:
        return True
    names = set()
    for r in survey.of_type("light"):
        if r.calibrated:
            names |= {r.path.name, r.path.name.rsplit(".", 1)[0]}
    return names or False


def _product_steps(parsed: dict, out: Path) -> tuple:
    """The light-curve and transit steps of the command line (after photometry)."""
    from astrodart.pipeline.reduce_summary import lightcurve_step, transit_step

    code = parsed.get("obscode", "TST01")
    return (lightcurve_step(out / "results", obscode=code),
            transit_step(out / "results", parsed["transit"], obscode=code))


#: Names and descriptions of the steps after photometry (for the plan).
PRODUCT_STEPS = (
    NightStep("lightcurve", None, "differential light curve -> results/lightcurve.ecsv"),
    NightStep("transit", None, "box least squares search -> transit fit -> results/transit.json"),
)


def _write_manifest(out: Path, date: str, target: str) -> None:
    """Record in OUT what this run writes (read by :func:`clear_output`)."""
    path = out / MANIFEST_NAME
    data = json.loads(path.read_text()) if path.is_file() else {"trees": [], "results": []}
    tree = f"reduced_data/{date}/{target}"
    if tree not in data["trees"]:
        data["trees"].append(tree)
    if "results" not in data["results"]:
        data["results"].append("results")
    data["written_by"] = f"astrodart {__version__} reduce"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def clear_output(out) -> tuple[list[Path], list[Path]]:
    """Remove what ``astrodart reduce`` wrote in ``out``, and nothing else.

    Only the folders listed in ``out/astrodart_reduce.json`` are visited, and in them
    only files of the kinds astrodart writes (FITS, ECSV, JSON, PNG, ...); any other file
    is kept and reported, and so are the folders holding it.

    Parameters
    ----------
    out : str or pathlib.Path
        An output folder of ``astrodart reduce``.

    Returns
    -------
    removed : list of pathlib.Path
        Files deleted.
    kept : list of pathlib.Path
        Files left in place (not astrodart's kinds).

    Raises
    ------
    FileNotFoundError
        ``out`` has no ``astrodart_reduce.json``: it is not an astrodart output folder.
    """
    out = Path(out)
    manifest = out / MANIFEST_NAME
    if not manifest.is_file():
        raise FileNotFoundError(f"{out}: no {MANIFEST_NAME}; not an output folder of "
                                "astrodart reduce, nothing removed")
    data = json.loads(manifest.read_text())
    removed, kept = [], []
    for rel in data.get("trees", []) + data.get("results", []):
        top = (out / rel).resolve()
        if not top.is_relative_to(out.resolve()) or not top.is_dir():
            continue
        for p in sorted(top.rglob("*"), reverse=True):
            if p.is_file() or p.is_symlink():
                if p.name.lower().endswith(_OUR_SUFFIXES):
                    p.unlink()
                    removed.append(p)
                else:
                    kept.append(p)
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        if top.is_dir() and not any(top.iterdir()):
            top.rmdir()
    for parent in sorted({(out / t).parent for t in data.get("trees", [])}, reverse=True):
        for d in (parent, parent.parent):
            if d.is_dir() and d != out and not any(d.iterdir()):
                d.rmdir()
    manifest.unlink()
    return removed, kept
