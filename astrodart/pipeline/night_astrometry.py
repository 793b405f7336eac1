"""Layer 3: the astrometry step of a night: the reference frame first, the others with its
solution as hints, none frame after frame when the field cannot be solved.

Used by :data:`astrodart.pipeline.night.NIGHT_STEPS`; each frame is solved by
:class:`astrodart.pipeline.solve.astrometry` (offline index files).
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

from astropy.table import Table

from astrodart.pipeline.executors import map_tasks

__all__ = ["astrometry_step", "BLIND_TIME_LIMIT"]

#: Seconds the sharpest frame's blind plate solution may take (benchmarks/astrometry_refusal.py).
BLIND_TIME_LIMIT = 5.0

log = logging.getLogger("astrodart")


def astrometry_step(run) -> None:
    """The astrometry step of a night: plate solutions of the calibrated frames, reused
    when their fingerprint matches (``data_dir/quality/astrometry.ecsv``).

    Parameters
    ----------
    run : astrodart.pipeline.night._NightRun
        The run's state (result with calibrated frames, reference frame and FWHM guess).
    """
    from astrodart.pipeline.fingerprint import table_of

    result = run.result
    files = [p for f in result.filters for p in result.calibrated[f]]
    table, reused = table_of(result.data_dir / "quality" / "astrometry.ecsv", "astrometry",
                             files, {"reference": result.reference_frame},
                             lambda: _solve_night(run, files), run.options.overwrite)
    if reused:
        run.reused.append("astrometry")
    result.astrometry = table


def _solve_night(run, files: list) -> Table:
    """Solve the sharpest frame first; only when it solves, the others with its scale and
    centre as hints (in the pool). A field the sharpest frame cannot give is not tried
    frame after frame: the others are reported with that frame's reason."""
    from astropy.table import vstack

    result, pool = run.result, run.pool
    best = result.reference_frame
    guess = run.guess[result.series_filter]
    # a blind search that solves does so in 0.4-2 s (HAT-P-32, the simulated night); a
    # field the index files cannot give costs the whole limit: 5 s, not the default 20
    first = _solve_frames(str(result.data_dir), [best], guess, run.options.overwrite,
                          {"time_limit": BLIND_TIME_LIMIT})
    rest = [p for p in files if p != best]
    if not first["solved"][0]:
        reason = (f"not tried: the sharpest frame {Path(best).name} could not be solved "
                  f"({first['reason'][0]})")
        skipped = Table(first[[0] * len(rest)]) if rest else first[:0]
        skipped["file"] = rest
        skipped["reason"] = [reason] * len(rest)
        skipped["elapsed"] = 0.0
        log.info("astrometry: %s", reason)
        return vstack([first, skipped])
    hints = {"pixel_scale": float(first["pixel_scale"][0]),
             "position": (float(first["center_ra"][0]), float(first["center_dec"][0]))}
    from astrodart.pipeline.cluster import where_it_runs

    where = where_it_runs(pool)  # a dask cluster: its threads, not this machine's cores
    n_chunks = max(1, int(where.get("threads") or where["workers"]))
    size = max(1, -(-len(rest) // n_chunks))
    solve = functools.partial(_solve_frames, str(result.data_dir), fwhm=guess,
                              overwrite=run.options.overwrite, hints=hints)
    # map_tasks: Ctrl-C or SIGTERM ends the night's workers at once
    return vstack([first] + map_tasks(solve, [rest[k:k + size] for k in range(0, len(rest), size)],
                                      pool))


def _solve_frames(data_dir: str, files: list, fwhm: float, overwrite: bool,
                  hints: dict | None = None) -> Table:
    """Plate-solve frames with :class:`astrodart.pipeline.solve.astrometry` (offline), in a
    worker, with optional ``pixel_scale``/``position`` hints; returns its table."""
    from astrodart.pipeline.solve import astrometry

    step = astrometry(data_dir, files, None, fwhm, overwrite=overwrite, **(hints or {}))
    step.run()
    return step.to_table()
