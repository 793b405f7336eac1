"""Ctrl-C, SIGTERM and a killed parent during a parallel step (issue 18, item 3).

A script runs a slow step (1 s per frame, 20 frames, 2 pool workers) in a real
subprocess; the test signals it 1.5 s into the run and measures: the time until the
interrupt reaches the caller (``CAUGHT``), the time until the process has exited, the
worker processes left, and the files in the output folder (only complete outputs, no
temporary). A SIGKILLed parent's workers must be gone within 5 s on their own. On real
HAT-P-32 frames, an L.A.Cosmic run interrupted mid-way and then resumed gives the same
bytes as a clean run. Every subprocess runs under a timeout.
"""
from __future__ import annotations

import concurrent.futures as cf
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from astrodart.frames.io import atomic_output, is_complete_fits, write_frame
from astrodart.pipeline.executors import map_tasks, process_pool, sigterm_as_exit
from astrodart.pipeline.step import Step
from datapaths import HATP32, copy_night

HERE = Path(__file__).resolve().parent
TMP_PREFIX = ".astrodart-tmp-"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class SlowStep(Step):
    """Sleeps 1 s per frame in :meth:`process` (pixels unchanged)."""

    name, prefix = "slow_test", "slow_"

    def process(self, ccd, path):
        time.sleep(1.0)
        return ccd


class SlowWriteStep(Step):
    """Holds its temporary output file open for 1 s: an interrupt lands mid-write."""

    name, prefix = "slow_write_test", "slowwrite_"

    def execute(self, task):
        with atomic_output(task.outputs[0], fsync=False) as tmp:
            fits.PrimaryHDU(np.zeros((16, 16), np.float32)).writeto(tmp)
            time.sleep(1.0)
        return {}


STEPS = {"process": SlowStep, "write": SlowWriteStep}


def _frames(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"f{i:02d}.fits"
        write_frame(CCDData(np.full((16, 16), i, np.float32), unit="adu"), p)
        out.append(str(p))
    return out


_CHILD = """
import sys, time
sys.path.insert(0, {here!r})
import test_interrupt as t
step = t.STEPS[{kind!r}]({wdir!r}, {files!r}, executor=2, progress=False)
print("READY", flush=True)
try:
    step.run()
except BaseException as exc:
    print("CAUGHT", type(exc).__name__, isinstance(exc, SystemExit), repr(time.time()), flush=True)
    raise
print("DONE", flush=True)
"""


def _live(procs) -> list[int]:
    """Pids of ``procs`` still running (a zombie waiting to be reaped counts as gone)."""
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _start(code: str, wait_workers: int = 2):
    """Start ``python -c code``; wait for READY and for its pool workers; return both."""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "READY"
    deadline = time.monotonic() + 60
    kids = []
    while time.monotonic() < deadline and len(kids) < wait_workers:
        kids = psutil.Process(child.pid).children(recursive=True)
        time.sleep(0.05)
    assert len(kids) == wait_workers, f"expected {wait_workers} workers, saw {kids}"
    return child, kids


def _first_output(wdir: Path, prefix: str, at_least: float = 1.5) -> None:
    """Wait ``at_least`` seconds and until the step has written its first output (a loaded
    machine may need longer than 1.5 s for the first frame), at most 60 s."""
    time.sleep(at_least)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (wdir.is_dir() and any(wdir.glob(f"{prefix}*.fits"))):
        time.sleep(0.05)


def _interrupt(tmp_path: Path, kind: str, sig: int) -> dict:
    """Run a slow step of 20 frames on 2 workers; send ``sig`` 1.5 s in; measure."""
    files = _frames(tmp_path / "raw", 20)
    wdir = tmp_path / "out"
    child, kids = _start(_CHILD.format(here=str(HERE), kind=kind, wdir=str(wdir), files=files))
    _first_output(wdir, STEPS[kind].prefix)
    t_sig = time.time()
    child.send_signal(sig)
    try:
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    t_exit = time.time()
    caught = [ln.split() for ln in out.splitlines() if ln.startswith("CAUGHT")]
    assert caught, f"the interrupt did not reach the caller:\n{out}\n{err}"
    return {"returncode": child.returncode, "exception": caught[0][1],
            "system_exit": caught[0][2] == "True", "to_caller": float(caught[0][3]) - t_sig,
            "to_exit": t_exit - t_sig, "left": _live(kids), "wdir": wdir, "stderr": err}


def _check_folder(wdir: Path, prefix: str, at_least: int = 1) -> list[Path]:
    """Only complete outputs, no temporary, fewer than the 20 of a whole run (and at least
    ``at_least``: 0 where a timer, not the first output, set the moment of the signal)."""
    names = sorted(p.name for p in wdir.iterdir())
    assert not [n for n in names if n.startswith(TMP_PREFIX)], names
    outs = sorted(wdir.glob(f"{prefix}*.fits"))
    assert at_least <= len(outs) < 20, names
    assert all(is_complete_fits(p) for p in outs)
    return outs


@pytest.mark.parametrize("kind", ["process", "write"])
def test_ctrl_c_stops_a_process_pool_step_at_once(tmp_path, kind):
    r = _interrupt(tmp_path, kind, signal.SIGINT)
    print(f"\nSIGINT ({kind}): caller got KeyboardInterrupt after {r['to_caller']:.2f} s, "
          f"process exited after {r['to_exit']:.2f} s")
    assert r["exception"] == "KeyboardInterrupt" and r["returncode"] == -signal.SIGINT
    assert r["to_caller"] < 2.0, r
    assert r["to_exit"] < 3.0, r
    assert r["left"] == [], "worker processes left running"
    _check_folder(r["wdir"], STEPS[kind].prefix)


@pytest.mark.parametrize("kind", ["process", "write"])
def test_sigterm_stops_a_process_pool_step_at_once(tmp_path, kind):
    r = _interrupt(tmp_path, kind, signal.SIGTERM)
    print(f"\nSIGTERM ({kind}): caller got SystemExit after {r['to_caller']:.2f} s, "
          f"process exited after {r['to_exit']:.2f} s")
    assert r["system_exit"] and r["returncode"] == 128 + signal.SIGTERM
    assert r["to_caller"] < 2.0 and r["to_exit"] < 3.0, r
    assert r["left"] == []
    assert "Traceback" not in r["stderr"], r["stderr"]  # a clean exit, as with SIG_DFL
    _check_folder(r["wdir"], STEPS[kind].prefix)


@pytest.mark.parametrize("kind", ["process", "write"])
def test_workers_of_a_killed_parent_exit_on_their_own(tmp_path, kind):
    files = _frames(tmp_path / "raw", 20)
    wdir = tmp_path / "out"
    child, kids = _start(_CHILD.format(here=str(HERE), kind=kind, wdir=str(wdir), files=files))
    _first_output(wdir, STEPS[kind].prefix)
    t_kill = time.monotonic()
    child.kill()
    child.wait(timeout=10)
    while _live(kids) and time.monotonic() - t_kill < 5.0:
        time.sleep(0.05)
    gone_after = time.monotonic() - t_kill
    print(f"\nSIGKILL ({kind}): workers gone {gone_after:.2f} s after the parent was killed")
    assert _live(kids) == [], "workers of a killed parent still running after 5 s"
    # the workers left their frames through the SIGTERM handler: temporaries removed
    _check_folder(wdir, STEPS[kind].prefix)


def _sleep_and_return(x):
    time.sleep(x)
    return x


def test_pool_stop_ends_busy_workers_without_waiting_for_their_task():
    pool = process_pool(2)
    futures = [pool.submit(_sleep_and_return, 30) for _ in range(4)]
    deadline = time.monotonic() + 60
    while sum(f.running() for f in futures) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    procs = [psutil.Process(pid) for pid in pool._processes]
    t0 = time.monotonic()
    pids = pool.stop()
    took = time.monotonic() - t0
    assert sorted(pids) == sorted(p.pid for p in procs) and len(pids) == 2
    assert _live(procs) == [] and took < 1.0, took
    assert all(f.done() for f in futures)
    t0 = time.monotonic()
    pool.shutdown()  # what the night runner's finally does: returns at once
    assert time.monotonic() - t0 < 1.0


def _worker_state():
    return (signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
            [t.name for t in threading.enumerate()])


def test_pool_workers_ignore_sigint_and_watch_their_parent():
    pool = process_pool(2)
    try:
        ignores, threads = pool.submit(_worker_state).result(timeout=60)
    finally:
        pool.shutdown()
    assert ignores and "astrodart-parent-watch" in threads


def _boom(x):
    if x == 2:
        raise ValueError("two")
    return x * 10


def test_map_tasks_runs_here_in_order_and_lets_errors_through():
    assert map_tasks(_boom, [3, 1, 0]) == [30, 10, 0]
    ticks = []
    with pytest.raises(ValueError, match="two"):  # no worker to crash: the error propagates
        map_tasks(_boom, [0, 1, 2, 3], None, on_done=lambda: ticks.append(1))
    assert len(ticks) == 2


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_map_tasks_keeps_order_and_captures_crashes(executor):
    pool = cf.ThreadPoolExecutor(2) if executor == "thread" else process_pool(2)
    ticks = []
    got = map_tasks(_boom, [0, 1, 2, 3], pool, owned=True, on_done=lambda: ticks.append(1),
                    on_crash=lambda item, exc: ("crashed", item, str(exc)))
    assert got == [0, 10, ("crashed", 2, "two"), 30] and len(ticks) == 4


def _alarm(seconds: float):
    """Raise KeyboardInterrupt in this (main) thread after ``seconds`` (as Ctrl-C would)."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return previous


def test_ctrl_c_stops_a_pool_the_caller_gave(tmp_path):
    """The night runner passes its own pool to every step: Ctrl-C ends its workers too."""
    files = _frames(tmp_path / "raw", 20)
    pool = process_pool(2)
    previous = _alarm(1.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            SlowWriteStep(tmp_path / "out", files, executor=pool, progress=False).run()
        took = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    t0 = time.monotonic()
    pool.shutdown()
    assert took < 1.5 + 1.0 and time.monotonic() - t0 < 1.0, took
    _check_folder(tmp_path / "out", SlowWriteStep.prefix, at_least=0)  # a loaded CI: none yet
    with pytest.raises(RuntimeError, match="pool was stopped"):
        pool.submit(_sleep_and_return, 0)


def test_ctrl_c_with_a_thread_pool_cancels_the_pending_frames(tmp_path):
    files = _frames(tmp_path / "raw", 20)
    previous = _alarm(1.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            SlowStep(tmp_path / "out", files, executor="thread", workers=2, progress=False).run()
        took = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert took < 2.0, took
    time.sleep(1.5)  # the two running frames finish and are written; nothing after them
    outs = _check_folder(tmp_path / "out", SlowStep.prefix)
    assert 2 <= len(outs) <= 4, outs  # 2 threads x at most 2 rounds of 1 s in 1.5 s
    time.sleep(1.5)
    assert len(list((tmp_path / "out").glob("*.fits"))) == len(outs), "a cancelled frame ran"


def test_sigterm_handler_only_around_the_map():
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with sigterm_as_exit():
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def mine(signum, frame):
        pass
    signal.signal(signal.SIGTERM, mine)
    try:
        with sigterm_as_exit():  # an application's own handler is left alone
            assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


_REAL_CHILD = """
import sys, time
from astrodart.pipeline import fingerprint
fingerprint.code_version = lambda: {pin!r}
from astrodart.pipeline.cosmic_rays import cosmic_ray_laplacian_correction as cr
print("READY", flush=True)
try:
    cr({wdir!r}, {files!r}, gain=1.0, executor=2, progress=False).run()
except BaseException as exc:
    print("CAUGHT", type(exc).__name__, isinstance(exc, SystemExit), repr(time.time()), flush=True)
    raise
"""


@pytest.mark.sample_data
def test_real_frames_interrupted_then_resumed_equal_a_clean_run(tmp_path, monkeypatch):
    from astrodart.pipeline import fingerprint
    from astrodart.pipeline.cosmic_rays import cosmic_ray_laplacian_correction as cr

    # The fingerprint holds a hash of the package source: pinned here (in this process,
    # the child and their workers), so that an edit of the checkout while the test runs
    # is not taken for a code change between the runs.
    pin = fingerprint.code_version() if hasattr(fingerprint, "code_version") else ""
    monkeypatch.setattr(fingerprint, "code_version", lambda: pin, raising=False)
    files = [str(p) for p in copy_night(HATP32, tmp_path / "raw")]
    assert len(files) == 10
    wdir = tmp_path / "cr"
    cr(wdir, files, gain=1.0, executor=2, progress=False).run()  # the clean run
    clean = {p.name: p.read_bytes() for p in sorted(wdir.glob("*.fits"))}
    assert len(clean) == 10
    shutil.rmtree(wdir)
    child, kids = _start(_REAL_CHILD.format(wdir=str(wdir), files=files, pin=pin))
    deadline = time.monotonic() + 120
    while len(list(wdir.glob("cosmic_ray_removed_*.fits"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    t_sig = time.time()
    child.send_signal(signal.SIGINT)
    try:
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    to_exit = time.time() - t_sig
    caught = [ln.split() for ln in out.splitlines() if ln.startswith("CAUGHT")]
    assert caught and caught[0][1] == "KeyboardInterrupt", out + err
    to_caller = float(caught[0][3]) - t_sig
    print(f"\nL.A.Cosmic on HAT-P-32: KeyboardInterrupt in the caller after {to_caller:.2f} s, "
          f"exit after {to_exit:.2f} s")
    assert to_caller < 2.0 and to_exit < 3.0 and _live(kids) == []
    done = {p.name for p in wdir.glob("*.fits")}
    assert not [p for p in wdir.iterdir() if p.name.startswith(TMP_PREFIX)]
    assert 2 <= len(done) < 10, "the interrupt must land mid-run"
    step = cr(wdir, files, gain=1.0, executor=2, progress=False)
    step.run()
    assert sorted(Path(p).name for p in step.report.reused) == sorted(done)
    assert len(step.report.written) == 10 - len(done)
    resumed = {p.name: p.read_bytes() for p in sorted(wdir.glob("*.fits"))}
    assert resumed.keys() == clean.keys()
    assert all(resumed[k] == clean[k] for k in clean), "resumed outputs differ from a clean run"
