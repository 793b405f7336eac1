"""The step engine: resume after SIGKILL, per-frame errors, executors, provenance, log."""
from __future__ import annotations

import concurrent.futures as cf
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from astrodart.frames.io import read_frame
from astrodart.pipeline.step import FrameSkippedWarning, Step, parse_overwrite
from datapaths import HATP27, require

HERE = Path(__file__).resolve().parent


class SmoothStep(Step):
    """A deterministic, CPU-bound test step (3x3 median filter); fails on one named frame."""

    name = "smooth_test"
    prefix = "smoothed_"

    def __init__(self, wdir, files, overwrite=False, fail_on=None, **options):
        super().__init__(wdir, files, overwrite, **options)
        self.fail_on = fail_on

    def parameters(self):
        return {"size": 3}

    def process(self, ccd, path):
        if self.fail_on and self.fail_on in Path(path).name:
            raise ValueError("synthetic failure for the test")
        out = ccd.copy()
        out.data = ndimage.median_filter(ccd.data, size=3)
        return out


def _science(n):
    return sorted(require(HATP27).glob("*science_exposures*"))[:n]


def _bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("*.fits"))}


def test_overwrite_values():
    assert parse_overwrite("yes") and parse_overwrite(True) and parse_overwrite("Y")
    assert not parse_overwrite("no") and not parse_overwrite(False) and not parse_overwrite(None)
    with pytest.raises(ValueError, match="yse"):
        parse_overwrite("yse")


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="exeuctor"):
        SmoothStep(tmp_path, _science(1), exeuctor="thread")


def test_bad_frame_is_reported_and_others_complete(tmp_path):
    files = _science(4)
    step = SmoothStep(tmp_path / "w", files, fail_on=files[1].name, executor="thread", progress=False)
    with pytest.warns(FrameSkippedWarning, match=files[1].name):
        outs = step.run()
    assert len(outs) == 3 and files[1].name not in " ".join(outs)
    assert list(step.report.failed) == [str(files[1])]
    assert "synthetic failure" in step.report.failed[str(files[1])]
    rec = json.loads((tmp_path / "w" / "astrodart_log.jsonl").read_text().splitlines()[-1])
    assert rec["step"] == "smooth_test" and len(rec["written"]) == 3 and rec["parameters"] == {"size": 3}
    # provenance: step keyword, version, parameters; the original header is kept
    h = fits.getheader(outs[0])
    assert h["ADSTEP01"] == "smooth_test" and h["EXPTIME"] == 20.0
    assert "smooth_test(size=3)" in "".join(h["HISTORY"])
    ccd = read_frame(outs[0])
    raw = read_frame(files[0])
    np.testing.assert_allclose(ccd.data, ndimage.median_filter(raw.data, size=3))


def test_executors_give_identical_outputs(tmp_path):
    files = _science(4)
    SmoothStep(tmp_path / "serial", files, executor="serial", progress=False).run()
    SmoothStep(tmp_path / "thread", files, executor="thread", progress=False).run()
    with cf.ProcessPoolExecutor(2) as pool:
        SmoothStep(tmp_path / "given", files, executor=pool, progress=False).run()
    SmoothStep(tmp_path / "default", files, progress=False).run()
    ref = _bytes(tmp_path / "serial")
    assert len(ref) == 4
    for other in ("thread", "given", "default"):
        assert _bytes(tmp_path / other) == ref, other


def test_resume_reuses_and_overwrite_redoes(tmp_path):
    files = _science(2)
    SmoothStep(tmp_path, files, progress=False).run()
    out = sorted(tmp_path.glob("*.fits"))[0]
    mtime = out.stat().st_mtime_ns
    step = SmoothStep(tmp_path, files, progress=False)
    step.run()
    assert len(step.report.reused) == 2 and not step.report.written and out.stat().st_mtime_ns == mtime
    step = SmoothStep(tmp_path, files, overwrite="yes", progress=False)
    step.run()
    assert len(step.report.written) == 2


_CHILD = """
import sys
sys.path.insert(0, {here!r})
from test_steps import SmoothStep
SmoothStep({wdir!r}, {files!r}, executor="serial", progress=False).run()
"""


def test_sigkill_midrun_then_rerun_is_byte_identical(tmp_path):
    files = [str(f) for f in _science(12)]
    SmoothStep(tmp_path / "reference", files, executor="serial", progress=False).run()
    wdir = tmp_path / "killed"
    code = _CHILD.format(here=str(HERE), wdir=str(wdir), files=files)
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 120
    while time.time() < deadline and len(list(wdir.glob("smoothed_*.fits"))) < 3:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_before = len(list(wdir.glob("smoothed_*.fits")))
    assert 3 <= done_before < 12, "the kill must land mid-run"
    SmoothStep(wdir, files, executor="serial", progress=False).run()
    assert _bytes(wdir) == _bytes(tmp_path / "reference")
    assert not [p for p in wdir.iterdir() if p.name.startswith(".astrodart-tmp")]


def test_truncated_output_is_redone_not_reused(tmp_path):
    """Outputs are not fsync'ed one by one: an output cut short (a power loss before the
    data reached the disk) must be detected on resume and redone, not reused."""
    files = _science(2)
    first = SmoothStep(tmp_path, files, progress=False, executor="serial").run()
    good = Path(first[0]).read_bytes()
    Path(first[0]).write_bytes(good[: len(good) // 2])  # the data cut in half
    step = SmoothStep(tmp_path, files, progress=False, executor="serial")
    again = step.run()
    assert again == first
    assert step.report.written == [first[0]] and step.report.reused == [first[1]]
    np.testing.assert_array_equal(
        fits.getdata(first[0]), ndimage.median_filter(read_frame(files[0]).data, size=3)
    )


def _library_threads():
    from threadpoolctl import threadpool_info

    return [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]


def test_pool_workers_run_one_library_thread_each():
    # 2 workers x (BLAS + OpenMP threads per core) oversubscribe the cores: the engine's
    # pool limits every worker to one library thread (benchmarks/scaling.py: 1.35x -> 1.8x)
    import astroscrappy.utils  # noqa: F401  (loads the OpenMP runtime in this process)
    import numpy  # noqa: F401

    from astrodart.pipeline.step import make_executor

    pool, owned = make_executor(None, workers=2)
    try:
        infos = pool.submit(_library_threads).result()
    finally:
        pool.shutdown()
    assert owned and infos, "no BLAS/OpenMP library seen in the worker"
    assert all(n == 1 for _, n in infos), infos
