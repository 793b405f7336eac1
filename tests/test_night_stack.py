"""The night's stack without aligned files (astrodart.pipeline.night_stack) against the
file path (align writing aligned frames, then stack), on real frames and on frames with
known shifts."""
from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from datapaths import HATP27, copy_night, require
from scipy.spatial import cKDTree

from astrodart.alignment.ladder import stars_from_detections
from astrodart.frames.io import write_frame
from astrodart.pipeline.align import align
from astrodart.pipeline.night_stack import plan_alignment, stack_in_memory
from astrodart.pipeline.quality import quality_table
from astrodart.pipeline.quality_stars import STARS_FILE, keep_star_lists
from astrodart.pipeline.stack import stack

METHODS = ("stars", "wcs", "fft")


def _stars(path, threshold=20.0):
    """Windowed centroids (px) and fluxes of the clean stars of a stack (sep)."""
    import sep

    d = fits.getdata(path).astype(np.float32)
    d = np.ascontiguousarray(np.where(np.isfinite(d), d, np.nanmedian(d)))
    bkg = sep.Background(d)
    sub = d - bkg.back()
    obj = sep.extract(sub, threshold, err=bkg.globalrms, minarea=5)
    obj = obj[obj["flag"] == 0]
    x, y, _ = sep.winpos(sub, obj["x"], obj["y"], np.full(len(obj), 1.5))
    return np.column_stack([x, y])


def _compare(file_stack, memory_stack):
    """Median |difference| in units of the file stack's uncertainty, and the star offsets."""
    a, b = fits.open(file_stack), fits.open(memory_stack)
    da, db = a[0].data.astype(float), b[0].data.astype(float)
    both = np.isfinite(da) & np.isfinite(db)
    ratio = np.abs(da - db)[both] / a["UNCERT"].data[both]
    pa, pb = _stars(file_stack), _stars(memory_stack)
    dist, _ = cKDTree(pb).query(pa, distance_upper_bound=2.0)
    return {"median_diff_over_noise": float(np.median(ratio)),
            "only_one_finite": int((np.isfinite(da) ^ np.isfinite(db)).sum()),
            "n_stars": int(np.isfinite(dist).sum()),
            "star_offsets": dist[np.isfinite(dist)], "ncombine": (a[0].header["NCOMBINE"],
                                                                  b[0].header["NCOMBINE"])}


@pytest.fixture(scope="module")
def hatp27_frames(tmp_path_factory):
    """16 raw science frames of HAT-P-27b spread over the night (the field drifts by tens
    of pixels), measured by the quality table with their star lists."""
    root = tmp_path_factory.mktemp("night_stack")
    raw = [p for p in copy_night(require(HATP27), root / "Visible", "*science*")][::6][:16]
    files = [str(p) for p in raw]
    lists = {}
    table = quality_table(files, star_lists=lists)
    return root, files, table, lists


def test_star_lists_of_the_quality_step_round_trip(hatp27_frames, tmp_path):
    _, files, _, lists = hatp27_frames
    assert set(lists) == set(files)
    first = lists[files[0]]
    assert {"x", "y", "flux", "flag"} <= set(first.colnames) and len(first) > 20
    assert list(first.meta["shape"]) == [1024, 1024]
    assert np.all(np.diff(first["flux"]) <= 0)  # brightest first
    keep_star_lists(tmp_path, "fp-1", lists)
    back = keep_star_lists(tmp_path, "fp-1", {})
    x, _, flux, _, shape = back[files[0]]
    assert shape == (1024, 1024)
    np.testing.assert_allclose(x, first["x"], atol=1e-4)
    np.testing.assert_allclose(flux, first["flux"], rtol=1e-5)
    # another quality table (fingerprint): the lists are not trusted
    assert keep_star_lists(tmp_path, "fp-2", {}) == {}
    assert (tmp_path / STARS_FILE).is_file()


def test_memory_stack_agrees_with_the_file_stack(hatp27_frames):
    root, files, _, lists = hatp27_frames
    ref = files[len(files) // 2]
    step = align([files], [str(root / "Visible")], ref, methods=METHODS, progress=False,
                 executor="serial")
    aligned = step.run()
    file_stack = stack(aligned, ["Visible"], root / "file_stacks")[0]
    plan = plan_alignment(files, ref, lists, step.options)
    assert len(plan.transforms) == len(files) - 1 and not plan.ladder
    with ProcessPoolExecutor(2) as pool:  # the night's pool: frames go into a shared cube
        made = stack_in_memory(files, plan, root / "memory" / "stack.fits",
                               options=step.options, executor=pool)
    assert not made.failed and len(made.combined) == len(files)
    # the transforms from the quality step's stars are those of the file path (< 0.05 px
    # over the frame), checked on a grid of points
    by_input = {r["input"]: np.array(r["matrix"]) for r in made.frames}
    grid = np.array([[x, y, 1.0] for x in (0, 512, 1023) for y in (0, 512, 1023)])
    for rec in step.frames:
        h = fits.getheader(rec["output"])
        old = np.array([[h[f"ALNA{i}{j}"] for j in (1, 2, 3)] for i in (1, 2)])
        err = np.abs(grid @ old.T - grid @ by_input[rec["input"]].T).max()
        assert err < 0.05, (rec["input"], err)
    c = _compare(file_stack, made.path)
    print(json.dumps({k: v for k, v in c.items() if k != "star_offsets"}))
    assert c["ncombine"] == (len(files), len(files))
    assert c["only_one_finite"] == 0
    assert c["median_diff_over_noise"] < 0.1
    assert c["n_stars"] >= 30 and np.max(c["star_offsets"]) < 0.05
    # the reference's WCS and the alignment cards travel with the stack, as in the file path
    h = fits.getheader(made.path)
    assert h["ALNREF"] == fits.getheader(file_stack)["ALNREF"] and "ADFPRINT" in h
    # the same frames again: the stack on disk is kept, not remade
    again = stack_in_memory(files, plan, made.path, options=step.options)
    assert again.reused


def _frame(path, dx, dy, rng, stars=None):
    """A 256 x 256 frame of Gaussian stars shifted by (dx, dy), or pure noise."""
    yy, xx = np.mgrid[:256, :256]
    img = 100.0 + rng.normal(0, 3.0, (256, 256))
    for x, y, f in ([] if stars is None else stars):
        img += f * np.exp(-((xx - x - dx) ** 2 + (yy - y - dy) ** 2) / (2 * 1.3 ** 2))
    write_frame(CCDData(img.astype(np.float32), unit="electron"), path)
    return str(path)


@pytest.mark.parametrize("pool", [False, True], ids=["here", "process_pool"])
def test_a_frame_that_cannot_be_aligned_is_reported_and_left_out(tmp_path, pool):
    rng = np.random.default_rng(3)
    stars = np.column_stack([rng.uniform(20, 236, 40), rng.uniform(20, 236, 40),
                             rng.uniform(300, 3000, 40)])
    shifts = [(0.0, 0.0), (3.25, -2.5), (-4.75, 1.5)]
    files = [_frame(tmp_path / f"f{i}.fits", dx, dy, rng, stars)
             for i, (dx, dy) in enumerate(shifts)]
    files.append(_frame(tmp_path / "noise.fits", 0, 0, rng))
    lists = {}
    quality_table(files, star_lists=lists)
    options = align([files], [str(tmp_path)], files[0], methods=("stars",)).options
    plan = plan_alignment(files, files[0], lists, options)
    for f, (dx, dy) in zip(files[1:3], shifts[1:]):  # frame -> reference: minus the shift
        np.testing.assert_allclose(plan.transforms[f][0].offset, (-dx, -dy), atol=0.05)
    assert files[3] in plan.ladder  # no star list: left to the ladder on its pixels
    executor = ProcessPoolExecutor(2) if pool else None
    try:
        made = stack_in_memory(files, plan, tmp_path / "out" / "stack.fits", options=options,
                               executor=executor)
    finally:
        if executor is not None:
            executor.shutdown()
    assert list(made.failed) == [files[3]] and made.combined == files[:3]
    assert fits.getheader(made.path)["NCOMBINE"] == 3
    # the stars sit where they are in the reference frame, on every frame
    d = fits.getdata(made.path)
    x, y = round(stars[0, 0]), round(stars[0, 1])
    assert d[y, x] > 100.0 + 0.5 * stars[0, 2]


def test_stars_from_detections_keeps_clean_bright_stars_inside():
    x = np.array([1.0, 50, 60, 70] + [100.0 + i for i in range(12)])
    y = np.full(len(x), 100.0)
    flux = np.arange(len(x), 0, -1).astype(float)
    flag = np.zeros(len(x), int)
    flag[1] = 2  # blended
    xy = stars_from_detections(x, y, flux, flag, (200, 200), max_stars=13)
    assert len(xy) == 13 and xy[0, 0] == 60 and 1.0 not in xy[:, 0] and 50 not in xy[:, 0]
    assert stars_from_detections(x[:8], y[:8], flux[:8], flag[:8], (200, 200)) is None
