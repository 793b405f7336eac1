"""The kinds of step beyond one-to-one: many-to-one, one-to-many, in-place, measuring."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from astrodart.frames.io import read_frame
from astrodart.pipeline.kinds import InPlaceStep, ManyToOneStep, MeasuringStep, OneToManyStep
from astrodart.pipeline.step import FrameSkippedWarning, known_prefixes


class mean_stack(ManyToOneStep):  # noqa: N801
    name = "mean_stack"

    def combine(self, paths):
        return CCDData(np.mean([read_frame(p).data for p in paths], axis=0), unit="adu")


class halves(OneToManyStep):  # noqa: N801
    name, prefix, labels = "halves", "half_", ("top", "bottom")

    def split(self, ccd, path):
        n = ccd.shape[0] // 2
        return {"top": ccd[n:], "bottom": ccd[:n]}


class set_object(InPlaceStep):  # noqa: N801
    name = "set_object"

    def edit(self, header, path):
        if header.get("OBJECT") == "M67":
            return []
        header["OBJECT"] = "M67"
        return ["OBJECT = 'M67'"]


class median_level(MeasuringStep):  # noqa: N801
    name = "median_level"

    def measure(self, ccd, path):
        if ccd.data[0, 0] < 0:
            raise ValueError(f"{path}: negative corner")
        return {"median": float(np.median(ccd.data))}


@pytest.fixture
def frames(tmp_path):
    files = []
    for i in range(3):
        p = tmp_path / "raw" / f"f{i}.fits"
        p.parent.mkdir(exist_ok=True)
        fits.PrimaryHDU(np.full((8, 6), 10.0 * (i + 1), dtype=np.float32),
                        header=fits.Header({"EXPTIME": 20.0})).writeto(p)
        files.append(str(p))
    return files


def _log(folder):
    return [json.loads(line) for line in (folder / "astrodart_log.jsonl").read_text().splitlines()]


def test_many_to_one_combines_stamps_and_resumes_on_fingerprint(frames, tmp_path):
    w = tmp_path / "m"
    out = mean_stack(w, frames, "master.fits", progress=False).run()
    assert out == str(w / "master.fits")
    c = read_frame(out)
    assert np.allclose(c.data, 20.0) and c.meta["ADSTEP01"] == "mean_stack"
    assert "on 3 frames" in "".join(c.meta["HISTORY"]) and len(c.meta["ADFPRINT"]) == 40
    mtime = (w / "master.fits").stat().st_mtime_ns
    step = mean_stack(w, frames, "master.fits", progress=False)
    step.run()
    assert step.report.reused == [out] and (w / "master.fits").stat().st_mtime_ns == mtime
    step = mean_stack(w, frames[:2], "master.fits", progress=False)  # other inputs: redo
    assert np.allclose(read_frame(step.run()).data, 15.0) and step.report.written == [out]
    assert [r["step"] for r in _log(w)] == ["mean_stack"] * 3


def test_many_to_one_leaves_out_a_bad_input_with_one_warning(frames, tmp_path):
    bad = tmp_path / "raw" / "broken.fits"
    bad.write_text("not a FITS file\n" * 100)
    step = mean_stack(tmp_path / "m", frames + [str(bad)], "master.fits", progress=False)
    with pytest.warns(FrameSkippedWarning, match="broken.fits"):
        out = step.run()
    assert np.allclose(read_frame(out).data, 20.0) and list(step.report.failed) == [str(bad)]


def test_one_to_many_writes_every_label_and_resumes(frames, tmp_path):
    w = tmp_path / "h"
    out = halves(w, frames, executor="thread", progress=False).run()
    assert [[p.rsplit("/", 1)[1] for p in o] for o in out][0] == ["half_f0_top.fits",
                                                                  "half_f0_bottom.fits"]
    assert len(out) == 3 and read_frame(out[1][0]).shape == (4, 6)
    assert "half_" in known_prefixes()
    step = halves(w, frames, progress=False)
    assert step.run() == out and len(step.report.reused) == 6


def test_in_place_edits_headers_records_history_and_keeps_pixels(frames, tmp_path):
    pixels = [fits.getdata(f).tobytes() for f in frames]
    assert set_object(frames[:1], dry_run=True).run() == frames[:1]
    assert "OBJECT" not in fits.getheader(frames[0])
    assert set_object(frames).run() == frames
    h = fits.getheader(frames[0])
    assert h["OBJECT"] == "M67" and "astrodart set_object: OBJECT = 'M67'" in "".join(h["HISTORY"])
    assert [fits.getdata(f).tobytes() for f in frames] == pixels
    assert set_object(frames).run() == []                   # nothing left to change
    assert not (tmp_path / "raw" / "astrodart_log.jsonl").exists()  # no new file in a raw night


def test_measuring_returns_a_table_in_input_order(frames, tmp_path):
    data = fits.getdata(frames[1])
    data[0, 0] = -1
    fits.writeto(frames[1], data, overwrite=True)
    step = median_level(tmp_path / "q", frames, executor=2, progress=False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        table = step.run()
    assert list(table["file"]) == [frames[0], frames[2]]
    assert np.allclose(table["median"], [10.0, 30.0])
    assert [w.category for w in rec] == [FrameSkippedWarning]
    assert "negative corner" in step.report.failed[frames[1]]
    assert not list((tmp_path / "q").glob("*.fits"))
