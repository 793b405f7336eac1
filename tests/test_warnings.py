"""Warnings: one family (AstrodartWarning), each kind issued once per run with a count,
also when the frames were processed in pool workers; the real missing-GAIN case."""
from __future__ import annotations

import concurrent.futures as cf
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from datapaths import HATP32, copy_night

from astrodart import exceptions
from astrodart.exceptions import AstrodartWarning, capture, replay, warn, warning_tally
from astrodart.pipeline.step import FrameSkippedWarning, Step


class _Kind(AstrodartWarning):
    """A warning kind for these tests."""


def _recorded(func):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = func()
    return out, [w for w in rec if issubclass(w.category, AstrodartWarning)]


def test_base_class_is_an_astropy_user_warning():
    assert issubclass(AstrodartWarning, AstropyUserWarning)
    with pytest.raises(TypeError, match="AstrodartWarning"):
        warn("plain", UserWarning)


def test_every_warning_class_of_the_package_derives_from_the_base():
    from astrodart import first_stage, second_stage, third_stage_photometry
    from astrodart.sources.psf import NoStarsWarning

    classes = [FrameSkippedWarning, first_stage.CalibrationWarning, NoStarsWarning,
               second_stage.AstrometryFailedWarning, second_stage.FWHMFailedWarning,
               second_stage.DS9NotInstalledWarning, third_stage_photometry.PhotometryWarning]
    assert all(issubclass(c, AstrodartWarning) for c in classes)


def test_tally_issues_each_kind_once_with_the_count():
    def run():
        with warning_tally():
            for i in range(5):
                warn("GAIN missing: 1.0 e-/ADU assumed", _Kind, item=f"f{i}.fits")
            with warning_tally():  # nested: folds into the outer one
                warn("GAIN missing: 1.0 e-/ADU assumed", _Kind, item="f5.fits")
            warn("another kind", _Kind)

    _, rec = _recorded(run)
    texts = sorted(str(w.message) for w in rec)
    assert len(rec) == 2
    assert texts[0].startswith("GAIN missing in 6 frames: 1.0 e-/ADU assumed")
    assert "(first: f0.fits, f1.fits, f2.fits)" in texts[0]
    assert texts[1] == "another kind"


def test_outside_a_tally_each_call_warns_at_once():
    def run():
        for i in range(3):
            warn("GAIN missing: 1.0 e-/ADU assumed", _Kind, item=f"f{i}.fits")

    _, rec = _recorded(run)
    assert [str(w.message) for w in rec] == [
        f"f{i}.fits: GAIN missing: 1.0 e-/ADU assumed" for i in range(3)]


def _worker(i):
    """Runs in a pool process: records its warnings for the caller."""
    with capture() as records:
        warn("saturated stars: masked", _Kind, item=f"frame{i}.fits")
    return records


def test_worker_warnings_are_replayed_once_through_a_process_pool():
    def run():
        with warning_tally(), cf.ProcessPoolExecutor(2) as pool:
            for records in pool.map(_worker, range(6)):
                replay(records)

    _, rec = _recorded(run)
    assert len(rec) == 1 and "in 6 frames" in str(rec[0].message)
    assert rec[0].category is _Kind


class _WarnStep(Step):
    """Copies a frame and warns about it (in whatever worker runs it)."""

    name = "warn_test"
    prefix = "warned_"

    def process(self, ccd, path):
        warn("no GAIN keyword: 1.0 e-/ADU assumed", _Kind, item=path)
        return ccd.copy()


@pytest.fixture
def small_frames(tmp_path):
    files = []
    for i in range(4):
        p = tmp_path / "raw" / f"f{i}.fits"
        p.parent.mkdir(exist_ok=True)
        fits.PrimaryHDU(np.full((8, 8), i, dtype=np.float32)).writeto(p)
        files.append(str(p))
    return files


@pytest.mark.parametrize("executor", ["serial", "thread", 2])
def test_a_step_run_warns_once_whatever_the_executor(small_frames, tmp_path, executor):
    step = _WarnStep(tmp_path / str(executor), small_frames, executor=executor, progress=False)
    outs, rec = _recorded(step.run)
    assert len(outs) == 4
    assert len(rec) == 1, [str(w.message) for w in rec]
    assert str(rec[0].message).startswith("no GAIN keyword in 4 frames: 1.0 e-/ADU assumed")


def test_failed_frames_give_one_frame_skipped_warning(small_frames, tmp_path):
    class Failing(_WarnStep):
        name, prefix = "failing_test", "failing_"

        def process(self, ccd, path):
            raise ValueError(f"cannot use {path}: broken")

    step = Failing(tmp_path / "w", small_frames, executor="serial", progress=False)
    outs, rec = _recorded(step.run)
    assert outs == [] and len(step.report.failed) == 4
    assert len(rec) == 1 and rec[0].category is FrameSkippedWarning
    assert "failing_test failed in 4 frames: ValueError: cannot use the frame: broken" in str(
        rec[0].message)


# ---------------------------------------------------------------------------------------
# the real case: 10 HAT-P-32 frames without a GAIN keyword
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hatp32(tmp_path_factory):
    d = tmp_path_factory.mktemp("hatp32")
    files = [str(p) for p in copy_night(HATP32, d)]
    assert len(files) == 10 and all("GAIN" not in fits.getheader(f) for f in files)
    return d, files


def _one_gain_warning(run):
    from astrodart.first_stage import CalibrationError

    def call():
        with pytest.raises(CalibrationError, match="every frame failed.*gain"):
            run()

    _, rec = _recorded(call)
    texts = [str(w.message) for w in rec]
    assert len(rec) == 1, texts
    assert "in 10 frames" in texts[0] and "no gain" in texts[0] and "GAIN" in texts[0]
    return texts[0]


def test_missing_gain_warns_once_for_ten_frames_gain_correction(hatp32):
    from astrodart.first_stage import gain_correction

    d, files = hatp32
    text = _one_gain_warning(lambda: gain_correction(d / "g", files, "yes", progress=False).run())
    assert text.startswith("gain_correction failed in 10 frames")


def test_missing_gain_warns_once_for_ten_frames_deviation_and_chain(hatp32):
    from astrodart.first_stage import calibration_chain, deviation_calculation

    d, files = hatp32
    _one_gain_warning(lambda: deviation_calculation(d / "u", files, "yes", ron=8.0,
                                                    progress=False).run())
    _one_gain_warning(lambda: calibration_chain(d / "c", files, "yes", ron=8.0,
                                                executor="thread", progress=False).run())


def test_module_state_is_clean_after_runs():
    assert exceptions._tallies() == []


def _frame_files(folder, n_good=24, n_cut=6):
    """Small FITS files, some cut short (their data end is missing), and which are cut."""
    folder.mkdir()
    data = np.zeros((64, 64), np.float32)
    cut = set()
    for i in range(n_good + n_cut):
        path = folder / f"f{i:02d}.fits"
        fits.PrimaryHDU(data).writeto(path)
        if i % 5 == 2 and len(cut) < n_cut:
            path.write_bytes(path.read_bytes()[:2880 + 1000])
            cut.add(path.name)
    return sorted(folder.iterdir()), cut


def test_truncation_checks_in_threads_blame_only_the_cut_files(tmp_path):
    """catch_warnings swaps process-wide state: blocks overlapping in threads used to
    blame a neighbour for a cut file's warning (CI, header_tools on HAT-P-32) and to leave
    a stale recorder behind. The checks now take turns, and the state is put back."""
    from astrodart.frames.edit import header_file_problem
    from astrodart.frames.io import is_complete_fits

    files, cut = _frame_files(tmp_path / "night")
    filters, shower = list(warnings.filters), warnings._showwarnmsg_impl
    for _ in range(5):  # the race needed a few tries to show before the fix
        with cf.ThreadPoolExecutor(8) as pool:
            problems = dict(zip([p.name for p in files], pool.map(header_file_problem, files)))
            complete = dict(zip([p.name for p in files], pool.map(is_complete_fits, files)))
        assert {n for n, why in problems.items() if why} == cut
        assert all("truncated" in problems[n] for n in cut)
        assert {n for n, ok in complete.items() if not ok} == cut
    assert warnings.filters == filters and warnings._showwarnmsg_impl is shower


def test_quiet_silences_our_warnings_per_thread_and_others_by_taking_turns():
    import threading

    seen = []
    barrier = threading.Barrier(2)

    def silenced():
        with exceptions.quiet(_Kind):
            barrier.wait()
            warn("hidden here", _Kind)
            barrier.wait()

    def loud():
        barrier.wait()
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            warn("shown here", _Kind)
        seen.extend(str(w.message) for w in rec)
        barrier.wait()

    threads = [threading.Thread(target=silenced), threading.Thread(target=loud)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == ["shown here"]                 # the other thread's quiet() did not hide it
    assert not exceptions.is_quiet(_Kind)
    with exceptions.quiet(RuntimeWarning):
        assert exceptions.is_quiet(RuntimeWarning) and not exceptions.is_quiet(_Kind)
        np.nanmean(np.full(3, np.nan))             # "Mean of empty slice": silenced
    _, ours = _recorded(lambda: warn("after", _Kind))
    assert [str(w.message) for w in ours] == ["after"]
