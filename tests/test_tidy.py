"""The disk a reduction leaves: compact frame planes, intermediates removed by default with
a record of how to get them back, and the 5x rule on the real HAT-P-27b night.

The real-night tests run ``astrodart reduce NIGHT --out OUT --stop stack`` with the
default options (the intermediates go) and check that OUT holds at most 5x the raw night
and what ``summary.json`` says was removed; run it again with the defaults (everything
reused, the stack kept without aligning again); then with ``--keep-intermediate`` (the
removed intermediates come back).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from datapaths import HATP27, require

from astrodart.frames.io import read_frame, write_frame
from astrodart.pipeline.reduce_options import ReduceOptions, read_config
from astrodart.pipeline.tidy import (
    INTERMEDIATES,
    TidyReport,
    folder_bytes,
    forget_removed,
    remove_intermediate,
    stacks_stand,
)


def _frame(ny=512, nx=256, seed=0) -> CCDData:
    rng = np.random.default_rng(seed)
    sky = 1000 + 50 * np.sin(np.arange(nx) / 30)[None, :]
    data = rng.poisson(np.broadcast_to(sky, (ny, nx))).astype(np.float32)
    unc = np.sqrt(data + 11.0**2)
    mask = np.zeros((ny, nx), bool)
    mask[10, 20:30] = True
    return CCDData(data, unit="electron", uncertainty=StdDevUncertainty(unc), mask=mask)


def test_planes_compressed_pixels_lossless(tmp_path):
    ccd = _frame()
    path = write_frame(ccd, tmp_path / "a.fits")
    back = read_frame(path)
    assert np.array_equal(back.data, ccd.data)  # the pixels: lossless
    assert np.array_equal(back.mask, ccd.mask)  # the mask: lossless
    rel = np.abs(back.uncertainty.array / ccd.uncertainty.array - 1)
    assert rel.max() < 1e-3  # the uncertainty: quantized, relative error below 1e-3
    with fits.open(path) as hdul:
        assert [type(h).__name__ for h in hdul] == ["PrimaryHDU", "CompImageHDU", "CompImageHDU"]
        assert [h.name for h in hdul[1:]] == ["UNCERT", "MASK"]
    plain = 512 * 256 * (4 + 4 + 1)  # float32 data and uncertainty, uint8 mask
    assert path.stat().st_size < 0.65 * plain
    # the same frame gives the same bytes (dither seeded from each tile's checksum)
    again = write_frame(ccd, tmp_path / "b.fits")
    assert again.read_bytes() == path.read_bytes()


def test_header_edit_keeps_compressed_planes_and_identity(tmp_path):
    from astrodart.frames.edit import append_keywords, edit_header_in_place, header_file_problem
    from astrodart.frames.identity import content_id

    path = write_frame(_frame(), tmp_path / "e.fits")
    before, tail = content_id(path), path.read_bytes()[-100_000:]
    assert header_file_problem(path) is None  # not "truncated": the planes are compressed
    edit_header_in_place(path, lambda h: append_keywords(h, {"OBJECT": "X"}), "test")
    assert fits.getheader(path)["OBJECT"] == "X"
    assert content_id(path) == before and path.read_bytes()[-100_000:] == tail  # not recompressed
    cut = tmp_path / "cut.fits"
    cut.write_bytes(path.read_bytes()[:-50_000])
    assert "truncated" in header_file_problem(cut)


def test_ccdproc_reads_the_compressed_planes(tmp_path):
    ccd = _frame(64, 64)
    path = write_frame(ccd, tmp_path / "c.fits")
    other = CCDData.read(path, hdu_uncertainty="UNCERT", hdu_mask="MASK")
    assert int(other.mask.sum()) == 10
    assert np.allclose(other.uncertainty.array, ccd.uncertainty.array, rtol=1e-3)


def _tree(root: Path, with_stack: bool) -> Path:
    """A demo-like tree: a raw night in uncal_data, organised copies, masters, calibrated
    frames recorded by the tree's provenance, aligned frames and (optionally) a stack."""
    from astrodart.pipeline.runlog import SCIENCE_MANIFEST
    from astrodart.pipeline.tree import write_record

    raw = root / "uncal_data" / "180423"
    night = root / "reduced_data" / "180423" / "T"
    for d in (raw, night / "bias", night / "object" / "V", night / "calibration", night / "V",
              night / "aligned" / "V", night / "stacks"):
        d.mkdir(parents=True)
    small = _frame(16, 16)
    for name in ("b1.fits", "l1.fits"):
        fits.writeto(raw / name, np.zeros((16, 16), np.uint16))
    fits.writeto(night / "bias" / "b1.fits", np.zeros((16, 16), np.uint16))
    fits.writeto(night / "object" / "V" / "l1.fits", np.zeros((16, 16), np.uint16))
    write_frame(small, night / "calibration" / "masterbias.fits")
    write_frame(small, night / "bias" / "masterbias.fits")  # the same master, written twice
    write_frame(small, night / "V" / "calibrated_l1.fits")
    write_frame(small, night / "aligned" / "V" / "aligned_calibrated_l1.fits")
    if with_stack:
        write_frame(small, night / "stacks" / "Combined_image_V.fits")
    write_record(night / SCIENCE_MANIFEST,
                 {"filters": {"V": {"frames": {"calibrated_l1.fits": "object/V/l1.fits"}}}})
    return night


def test_remove_intermediate_only_what_is_replaced(tmp_path):
    night = _tree(tmp_path / "a", with_stack=True)
    kept = [night / "calibration" / "masterbias.fits", night / "V" / "calibrated_l1.fits",
            night / "stacks" / "Combined_image_V.fits"]
    report = remove_intermediate(tmp_path / "a")
    assert isinstance(report, TidyReport)
    assert {k: len(v) for k, v in report.removed.items() if v} == {
        "aligned": 1, "sorted_raw": 2, "duplicate_masters": 1}
    twice = night / "bias" / "masterbias.fits"  # one file on disk, both paths kept
    assert twice.samefile(night / "calibration" / "masterbias.fits")
    assert folder_bytes(night / "bias", night / "calibration") == twice.stat().st_size
    assert all(p.is_file() for p in kept)  # products stay
    assert not list(night.rglob("aligned_*")) and not (night / "bias" / "b1.fits").exists()
    assert (tmp_path / "a" / "uncal_data" / "180423" / "b1.fits").is_file()  # raw untouched
    d = report.to_dict()
    assert d["aligned"]["files"] == 1 and "align step" in d["aligned"]["get_back"]
    assert report.total_bytes == sum(report.nbytes.values()) > 0
    assert any("to get them back" in line for line in report.lines())
    # a re-run keeps the stack while the calibrated frames are those it came from
    calibrated = {"V": [night / "V" / "calibrated_l1.fits"]}
    assert stacks_stand(night, ["V"], calibrated) == {"V": str(kept[2])}
    assert stacks_stand(night, ["V", "R"], calibrated) == {}  # a filter never stacked
    write_frame(_frame(16, 16, seed=5), calibrated["V"][0], overwrite=True)  # recalibrated
    assert stacks_stand(night, ["V"], calibrated) == {}
    assert forget_removed(tmp_path / "a") == 1 and stacks_stand(night, ["V"], {}) == {}
    # without a stack the aligned frames are the only copy of that work: kept
    night = _tree(tmp_path / "b", with_stack=False)
    report = remove_intermediate(tmp_path / "b")
    assert report.removed["aligned"] == [] and list(night.rglob("aligned_*"))


def test_keep_intermediate_option_and_its_older_spelling(tmp_path):
    assert ReduceOptions().keep_intermediate is False  # the default removes them
    toml = tmp_path / "n.toml"
    toml.write_text("remove_intermediate = false\n")
    assert read_config(toml) == {"keep_intermediate": True}
    assert "keep_intermediate = false" in ReduceOptions().to_toml()
    assert set(INTERMEDIATES) == {"aligned", "sorted_raw", "lab_frames", "duplicate_masters"}


# ------------------------------------------------------------------ the real night
def _reduce(*args) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "astrodart.cli", "reduce", *map(str, args),
                           "--no-progress"], check=False, capture_output=True, text=True,
                          timeout=3000)
    return proc.returncode, time.perf_counter() - t0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def reduced_default(tmp_path_factory):
    night = require(HATP27)
    out = tmp_path_factory.mktemp("disk") / "out"
    status, seconds, text = _reduce(night, "--out", out, "--stop", "stack")
    return {"out": out, "night": night, "status": status, "seconds": seconds, "text": text,
            "raw": folder_bytes(night), "used": folder_bytes(out)}


@pytest.mark.sample_data
def test_default_run_leaves_at_most_5x_the_raw_night(reduced_default):
    r = reduced_default
    assert r["status"] == 0, r["text"][-3000:]
    print(f"\nHAT-P-27b --stop stack: raw {r['raw'] / 1e6:.0f} MB, OUT {r['used'] / 1e6:.0f} MB "
          f"({r['used'] / r['raw']:.2f} x) in {r['seconds']:.0f} s")
    assert r["used"] <= 5 * r["raw"]
    out = r["out"]
    summary = json.loads((out / "results" / "summary.json").read_text())
    removed = summary["disk"]["removed"]
    assert "aligned" not in removed  # stacked in memory: no aligned frame was written
    assert removed["sorted_raw"]["files"] == 130  # 10 bias, 10 dark, 10 flat, 100 lights
    assert summary["disk"]["ratio"] <= 5
    assert "to get them back" in r["text"] and "--keep-intermediate" in r["text"]
    calibrated = sorted(out.glob("reduced_data/*/*/Visible/calibrated_*.fits"))
    assert len(calibrated) == 100
    with fits.open(calibrated[0]) as hdul:
        assert hdul[0].header["BITPIX"] == -32  # float32 pixels, uncompressed
        assert isinstance(hdul["UNCERT"], fits.CompImageHDU)
    assert (out / "results" / "stack_Visible.fits").is_file()
    assert len(list(out.glob("reduced_data/*/*/calibration/master*.fits"))) >= 3
    assert not list(out.glob("reduced_data/*/*/aligned/**/aligned_*.fits"))


@pytest.mark.sample_data
def test_default_rerun_reuses_and_does_not_align_again(reduced_default):
    out = reduced_default["out"]
    first = {p: p.stat().st_mtime_ns for p in out.glob("reduced_data/*/*/Visible/calibrated_*")}
    stack = (out / "results" / "stack_Visible.fits").read_bytes()
    status, seconds, text = _reduce(reduced_default["night"], "--out", out, "--stop", "stack")
    assert status == 0, text[-3000:]
    summary = json.loads((out / "results" / "summary.json").read_text())
    print(f"\ndefault re-run: {seconds:.0f} s (first run {reduced_default['seconds']:.0f} s); "
          f"timings {summary['timings']}")
    # (quality and astrometry are reused too unless the package's code changed in between:
    # their fingerprints hold a hash of its source)
    assert {"masters", "calibrate", "align"} <= set(summary["reused"])
    assert {p: p.stat().st_mtime_ns for p in first} == first  # calibrated frames not rewritten
    assert (out / "results" / "stack_Visible.fits").read_bytes() == stack
    assert summary["disk"]["removed"]["sorted_raw"]["files"] == 130  # copied and removed again
    assert "aligned" not in summary["disk"]["removed"]  # none made, none removed
    assert folder_bytes(out) <= 5 * reduced_default["raw"]
    assert seconds < 0.5 * reduced_default["seconds"]


@pytest.mark.sample_data
def test_rerun_keeping_intermediates_restores_them(reduced_default):
    out = reduced_default["out"]
    status, seconds, text = _reduce(reduced_default["night"], "--out", out, "--stop", "stack",
                                    "--keep-intermediate")
    assert status == 0, text[-3000:]
    print(f"\nre-run with --keep-intermediate: {seconds:.0f} s")
    summary = json.loads((out / "results" / "summary.json").read_text())
    assert {"masters", "calibrate"} <= set(summary["reused"])
    assert "align" not in summary["reused"]  # aligned again: the frames are kept this time
    assert "removed" not in summary["disk"] and summary["disk"]["keep_intermediate"]
    assert len(list(out.glob("reduced_data/*/*/aligned/**/aligned_*.fits"))) == 100
    assert len([p for p in out.glob("reduced_data/*/*/object/*/*") if p.is_file()]) == 100
