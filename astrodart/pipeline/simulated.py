"""The simulated night of the main job and of the accuracy tests: simulate, reduce, compare.

:func:`simulate_and_reduce` simulates a night with known truth
(:func:`astrodart.datasets.simulated_night.simulate_night`, settings :data:`SIMULATED_NIGHT`), reduces
it with :func:`astrodart.pipeline.night.reduce_night` and compares every product with the
truth (:func:`astrodart.pipeline.truth.compare_with_truth`). :func:`simulated_night_report`
is the main job's fallback when the real sample night is not available
(``python -m astrodart.cli demo``, or ``demo --simulated``): it prints that table and saves
it. ``tests/test_accuracy.py`` checks each criterion against the truth.
"""
from __future__ import annotations

import time
from pathlib import Path

from astropy.coordinates import SkyCoord
from astropy.table import Table

from astrodart.pipeline.night import NightResult, reduce_night
from astrodart.pipeline.truth import compare_with_truth, format_comparison, save_comparison

__all__ = [
    "SIMULATED_NIGHT",
    "simulate_and_reduce",
    "simulated_night_report",
]


#: Options of :func:`astrodart.datasets.simulated_night.simulate_night` for the simulated night of the
#: main job and of the accuracy tests (over its defaults): a 512 x 512 px, 51' field of M67
#: at 6"/px (plate-solvable with the Tycho-2 index files), 8 bias frames, 5 darks at 60 s
#: and at 120 s, 5 dome flats per filter, 3 B (120 s) and 3 R (60 s) frames around a
#: 60-frame V series (120 s exposures, 2.3 h at 140 s cadence) with a 3 %, 1.5 h transit
#: of a V ~ 10 star 6 min after the series' middle. The transit fit's depth error is then
#: ~4 % of the depth and its mid-time error ~0.6 min, well inside the accuracy criteria
#: (10 %, 2 min); 3 frames is the fewest the field-star ensemble accepts per filter. Sized
#: so that simulation and reduction take about 3 minutes on two busy cores.
SIMULATED_NIGHT = {
    "n_bias": 8, "n_dark": 5, "n_flat": 5, "n_science": {"B": 3, "V": 60, "R": 3},
    "transit_depth": 0.03, "transit_duration": 1.5,
}


def simulate_and_reduce(root, seed: int = 0, *, simulate_options=None,
                        **reduce_options) -> tuple[NightResult, Table]:
    """Simulate a night (unless ``root/uncal_data/truth.json`` exists), reduce it and
    compare it with its truth.

    Parameters
    ----------
    root : str or pathlib.Path
        Project folder: the night goes to ``root/uncal_data/<date>/``, its truth to
        ``root/uncal_data/truth.json`` and ``root/uncal_data/truth_maps.fits``, the
        reduction to ``root/reduced_data/``.
    seed : int
        Seed of the simulated night (ignored when ``root/uncal_data/truth.json`` already
        exists: that night is reduced again, resuming what was done).
    simulate_options : dict, optional
        Options of :func:`astrodart.datasets.simulated_night.simulate_night` over :data:`SIMULATED_NIGHT`.
    **reduce_options
        Passed to :func:`reduce_night` (default ``saturation``: the camera's raw saturation
        level from the truth, as a user would take it from the camera's data sheet; the
        frames carry no ``SATURATE``).

    Returns
    -------
    result : NightResult
        What :func:`reduce_night` produced; ``result.timings['simulate']`` is the time
        spent simulating (0 when the night existed).
    table : astropy.table.Table
        :func:`compare_with_truth`; ``table.meta['made']`` is ``'simulated'`` or ``'found'``.
    """
    from astrodart.datasets.simulated_night import simulate_night
    from astrodart.datasets.truth import load_truth, truth_file

    root = Path(root)
    t0 = time.perf_counter()
    made = "found"
    if not truth_file(root).exists():
        simulate_night(root, seed, **{**SIMULATED_NIGHT, **(simulate_options or {})})
        made = "simulated"
    t_sim = time.perf_counter() - t0
    truth = load_truth(root)
    tr = truth["transit"]
    target = SkyCoord(tr["ra"], tr["dec"], unit="deg") if tr else None
    reduce_options.setdefault("saturation", truth["camera"]["saturation_adu"])
    result = reduce_night(root, truth["night"], truth["target"], target_coord=target,
                          **reduce_options)
    result.timings = {"simulate": t_sim, **result.timings}
    table = compare_with_truth(result, truth)
    table.meta["made"] = made
    return result, table


def simulated_night_report(root, seed: int = 0, *, simulate_options=None,
                           **reduce_options) -> str:
    """Simulate a night (unless ``root/uncal_data/truth.json`` exists), reduce it, compare
    with its truth.

    Parameters
    ----------
    root : str or pathlib.Path
        Project folder (see :func:`simulate_and_reduce`).
    seed : int
        Seed of the simulated night.
    simulate_options : dict, optional
        Options of :func:`astrodart.datasets.simulated_night.simulate_night` over :data:`SIMULATED_NIGHT`.
    **reduce_options
        Passed to :func:`reduce_night`.

    Returns
    -------
    str
        Which night was reduced, the truth-vs-measured table (:func:`format_comparison`),
        the transit fit and the time per stage. The table is also written to
        ``<data_dir>/truth_comparison.txt`` and ``.ecsv``.
    """
    from astrodart.datasets.truth import load_truth, truth_file

    root = Path(root)
    t_start = time.perf_counter()
    result, table = simulate_and_reduce(root, seed, simulate_options=simulate_options,
                                        **reduce_options)
    seconds = time.perf_counter() - t_start
    truth = load_truth(root)
    text = format_comparison(table)
    save_comparison(table, result.data_dir / "truth_comparison")
    head = (f"SIMULATED night ({table.meta['made']}: seed {truth['seed']}, {truth['target']} "
            f"on {truth['date']}, {sum(truth['counts'].values())} raw frames in "
            f"{root / 'uncal_data' / truth['night']}; truth in {truth_file(root)})\n"
            f"{'simulated and ' if table.meta['made'] == 'simulated' else ''}reduced with "
            f"astrodart.pipeline.night.reduce_night in {seconds:.0f} s; "
            f"products in {result.data_dir}\n")
    return (head + "\n" + text + f"\n(table saved in {result.data_dir / 'truth_comparison'}"
            ".txt and .ecsv)\n\n" + result.summary())
