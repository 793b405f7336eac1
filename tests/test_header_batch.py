"""header_tools batch edits: all or nothing, atomic, locked, logged (issue 18, item 4).

Every test edits copies of the real sample frames in a tmp folder (tests/datapaths.py).
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import astrodart.pipeline.headers as headers_module
from astrodart.frames.edit import HeaderEditError, card_problem, header_file_problem
from astrodart.frames.locks import folder_lock
from astrodart.pipeline.headers import header_tools
from datapaths import FEDER, HATP27, HATP32, copy_night, require

pytestmark = pytest.mark.sample_data


def _hashes(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def _temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".astrodart-tmp")]


@pytest.fixture
def hatp32(tmp_path) -> list[Path]:
    files = copy_night(HATP32, tmp_path / "night", "*.FITS")
    assert len(files) == 10
    return files


def test_one_truncated_file_changes_no_file_and_is_named(hatp32):
    folder = hatp32[0].parent
    bad = hatp32[6]
    bad.write_bytes(bad.read_bytes()[:100_000])
    before = _hashes(folder)
    with pytest.raises(HeaderEditError) as err:
        header_tools(hatp32, {"OBJECT": "HAT-P-32b", "OBSERVER": "lab"}).append_header_key()
    msg = str(err.value)
    assert bad.name in msg and "truncated" in msg and "nothing was changed" in msg
    assert list(err.value.problems) == [str(bad)]          # only the bad file is blamed
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    assert _hashes(folder) == before                        # byte-identical: no file changed
    assert _temporaries(folder) == []


def test_every_bad_file_is_listed_with_its_reason(tmp_path, hatp32):
    folder = hatp32[0].parent
    (folder / "table.fits").unlink(missing_ok=True)
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="x", format="E", array=np.arange(3.0))])]).writeto(folder / "table.fits")
    gz = copy_night(HATP27, tmp_path / "gz", "*science_exposures.00000001.FIT.gz")[0]
    corrupt = folder / "corrupt.fit.gz"
    blob = bytearray(gz.read_bytes())
    blob[len(blob) // 2] ^= 0xFF                             # one flipped byte: CRC fails
    corrupt.write_bytes(bytes(blob))
    empty = folder / "empty.fits"
    empty.write_bytes(b"")
    missing = folder / "missing.fits"
    batch = hatp32 + [folder / "table.fits", corrupt, empty, missing]
    before = _hashes(folder)
    with pytest.raises(HeaderEditError) as err:
        header_tools(batch, {"OBJECT": "X"}).update_header_values()
    problems = {Path(f).name: " ".join(r) for f, r in err.value.problems.items()}
    assert set(problems) == {"table.fits", "corrupt.fit.gz", "empty.fits", "missing.fits"}
    assert "no image data" in problems["table.fits"]
    assert "CRC" in problems["corrupt.fit.gz"]
    assert "empty" in problems["empty.fits"]
    assert "does not exist" in problems["missing.fits"]
    assert _hashes(folder) == before


def test_missing_and_present_keywords_refuse_the_batch(hatp32):
    folder = hatp32[0].parent
    before = _hashes(folder)
    with pytest.raises(KeyError) as err:                    # HAT-P-32 frames have no IMAGETYP
        header_tools(hatp32, {"IMAGETYP": "Light Frame"}).update_header_values()
    assert all(p.name in str(err.value) for p in hatp32) and "lacks keyword IMAGETYP" in str(err.value)
    with pytest.raises(HeaderEditError) as err:             # the new name exists already
        header_tools(hatp32, {"OBJECT": "FILTER"}).change_header_key_name()
    assert "already has FILTER = 'Clear'" in str(err.value)
    assert _hashes(folder) == before


@pytest.mark.parametrize("header_dict,method,text", [
    ({"OBSERVATORY": "x"}, "append_header_key", "11 characters; FITS allows 1 to 8"),
    ({"FILT ER": 1}, "append_header_key", "only A-Z, 0-9"),
    ({"GAIN": float("nan")}, "append_header_key", "NaN or infinity"),
    ({"OBJECT": "Gliese 581 \u00e9"}, "append_header_key", "printable ASCII"),
    ({"OBJECT": None}, "append_header_key", "cannot be written"),
    ({"OBJECT": ["a"]}, "append_header_key", "cannot be written"),
    ({"OBJECT": ("x", "c" * 90)}, "append_header_key", "does not fit a FITS card"),
    ({"NAXIS1": 10}, "update_header_values", "structure or pixel scaling"),
    ({"BZERO": 0}, "update_header_values", "structure or pixel scaling"),
    ({"HISTORY": "x"}, "append_header_key", "commentary card"),
    ({"FILTER": "INSTRUMENTFILTER"}, "change_header_key_name", "16 characters"),
    ({"FILTER": "filter"}, "change_header_key_name", "to itself"),
    ({"FILTER": "A", "OBJECT": "A"}, "change_header_key_name", "two keywords renamed to A"),
    ({"FILTER": "OBJECT", "OBJECT": "TARGET"}, "change_header_key_name", "both renamed and a new name"),
    ({}, "append_header_key", "header_dict is empty"),
])
def test_bad_header_dict_refused_before_any_file_is_read(tmp_path, header_dict, method, text):
    files = [tmp_path / "does-not-exist.fits"]       # never opened: the dict is checked first
    with pytest.raises(ValueError, match=text.replace("(", r"\(")):
        getattr(header_tools(files, header_dict), method)()


def test_bad_arguments_named_at_the_call(tmp_path):
    with pytest.raises(TypeError, match="header_dict"):
        header_tools([tmp_path / "a.fits"], ["OBJECT", "x"])
    with pytest.raises(ValueError, match="timeout=-1"):
        header_tools([tmp_path / "a.fits"], {"OBJECT": "x"}, timeout=-1)
    with pytest.raises(ValueError, match="is a folder"):
        header_tools([tmp_path], {"OBJECT": "x"})
    with pytest.raises(ValueError, match="files is empty"):
        header_tools([], {"OBJECT": "x"}).append_header_key()


def test_card_and_file_checks():
    assert card_problem("object", "HAT-P-27") is None
    assert card_problem("GAIN", np.float32(2.06)) is None
    assert card_problem("FLAG", np.bool_(True)) is None
    assert "infinity" in card_problem("GAIN", float("inf"))
    assert header_file_problem(require(FEDER) / "uint16.fit") is None


def test_failed_write_rolls_back_every_file_and_leaves_no_temporary(hatp32, monkeypatch):
    folder = hatp32[0].parent
    before = _hashes(folder)
    real = headers_module.write_edited_header

    def disk_full_on_the_seventh(path, edit, action, destination):
        changes = real(path, edit, action, destination)
        if Path(path) == hatp32[6]:                        # half a temporary, then ENOSPC
            Path(destination).write_bytes(b"SIMPLE  =" + b" " * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return changes

    monkeypatch.setattr(headers_module, "write_edited_header", disk_full_on_the_seventh)
    with pytest.raises(HeaderEditError, match="No space left on device") as err:
        header_tools(hatp32, {"OBJECT": "HAT-P-32b"}).append_header_key()
    assert list(err.value.problems) == [str(hatp32[6])]
    assert _hashes(folder) == before                        # the 9 good writes were not kept
    assert _temporaries(folder) == []


def test_stale_temporaries_of_a_killed_edit_are_removed(hatp32):
    folder = hatp32[0].parent
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = folder / f".astrodart-tmp-{dead.pid}-0badc0de-{hatp32[0].name}"
    stale.write_bytes(b"half a file")
    mine = folder / f".astrodart-tmp-{os.getpid()}-0000beef-{hatp32[1].name}"  # a live writer's
    mine.write_bytes(b"being written")
    header_tools(hatp32, {"OBJECT": "HAT-P-32b"}).append_header_key()
    assert not stale.exists() and mine.exists()
    mine.unlink()
    assert _temporaries(folder) == []


def test_log_holds_one_record_per_edit_with_old_and_new_values(hatp32, tmp_path):
    log_path = tmp_path / "astrodart_log.jsonl"
    old = {str(f): fits.getheader(f) for f in hatp32}
    changed = header_tools(hatp32, {"OBJECT": "HAT-P-32b", "FILTER": ("CLR", "clear filter")},
                           log_path=log_path).update_header_values()
    assert changed == [str(f) for f in hatp32]
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(records) == 20                                # 10 files x 2 keywords
    for r in records:
        assert r["step"] == "header_tools update"
        assert r["old"] == old[r["file"]][r["key"]]
        assert r["new"] == {"OBJECT": "HAT-P-32b", "FILTER": "CLR"}[r["key"]]
    assert {(r["file"], r["key"]) for r in records} == {(str(f), k) for f in hatp32
                                                         for k in ("OBJECT", "FILTER")}
    h = fits.getheader(hatp32[0])
    assert h["OBJECT"] == "HAT-P-32b" and h["FILTER"] == "CLR" and h.comments["FILTER"] == "clear filter"
    history = "\n".join(h["HISTORY"])
    assert "OBJECT = 'HAT-P-32b' (was 'HATP-32')" in history and "(was 'Clear')" in history
    # a second identical edit changes nothing and logs nothing
    assert header_tools(hatp32, {"OBJECT": "HAT-P-32b"}, log_path=log_path).update_header_values() == []
    assert len(log_path.read_text().splitlines()) == 20


def test_rename_logs_the_moved_value(hatp32, tmp_path):
    log_path = tmp_path / "log.jsonl"
    header_tools(hatp32 + hatp32[:3], {"FILTER": "INSFILTE"},   # duplicates edited once
                 log_path=log_path).change_header_key_name()
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(records) == 10
    assert all(r["key"] == "INSFILTE" and r["renamed_from"] == "FILTER" and r["old"] is None
               and r["new"] == "Clear" for r in records)
    h = fits.getheader(hatp32[0])
    assert "FILTER" not in h and h["INSFILTE"] == "Clear" and h.comments["INSFILTE"] == "Filter chosen"


def test_gzip_frames_keep_pixels_and_every_other_card(tmp_path):
    files = copy_night(HATP27, tmp_path, "*science_exposures.0000000[1-3].FIT.gz")

    def content(f):
        with fits.open(f, do_not_scale_image_data=True) as hdul:
            return hdul[0].data.tobytes(), [c.image for c in hdul[0].header.cards]

    before = {f: content(f) for f in files}
    header_tools(files, {"OBJECT": "HAT-P-27"}).append_header_key()
    for f in files:
        assert gzip.open(f).read(6) == b"SIMPLE"              # still gzip
        data, cards = content(f)
        assert data == before[f][0]                          # uint16+BZERO bytes unchanged
        added = [c for c in cards if c not in before[f][1]]
        assert [c[:8].strip() for c in added] == ["OBJECT", "HISTORY"]
        assert all(c in cards for c in before[f][1] if c.strip())  # no other card changed


def test_dry_run_writes_nothing(hatp32, capsys):
    folder = hatp32[0].parent
    before = _hashes(folder)
    names = sorted(p.name for p in folder.iterdir())
    would = header_tools(hatp32, {"OBJECT": "X"}, dry_run=True).update_header_values()
    assert would == [str(f) for f in hatp32]
    assert capsys.readouterr().out.count("[dry run]") == 10
    assert _hashes(folder) == before and sorted(p.name for p in folder.iterdir()) == names


def test_a_locked_folder_makes_the_edit_wait_then_time_out(hatp32):
    folder = hatp32[0].parent
    before = _hashes(folder)
    with folder_lock(folder):
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="timeout=0.5 s") as err:
            header_tools(hatp32, {"OBJECT": "X"}, timeout=0.5).update_header_values()
        assert 0.45 < time.monotonic() - t0 < 3
    assert str(folder.resolve()) in str(err.value)
    assert _hashes(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(before)   # no lock file left


def _edit_in_child(files, key, value, barrier, log_path):
    barrier.wait(timeout=60)
    header_tools(files, {key: value}, log_path=log_path).append_header_key()


def test_two_concurrent_processes_editing_different_keys_both_land(hatp32, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    log_path = tmp_path / "log.jsonl"
    files = [str(f) for f in hatp32]
    procs = [ctx.Process(target=_edit_in_child, args=(files, key, value, barrier, str(log_path)))
             for key, value in (("OBSERVER", "alice"), ("SITENAME", "Whipple"))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    for f in hatp32:
        h = fits.getheader(f)
        assert h["OBSERVER"] == "alice" and h["SITENAME"] == "Whipple", f.name
        assert len(h["HISTORY"]) == 2
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert sorted(r["key"] for r in records) == ["OBSERVER"] * 10 + ["SITENAME"] * 10
    assert _temporaries(hatp32[0].parent) == []


def test_threads_editing_file_after_file_do_not_starve_each_other(tmp_path):
    import threading

    stop, waits = threading.Event(), []

    def busy():  # edits file after file: releases and at once takes the lock again
        while not stop.is_set():
            with folder_lock(tmp_path, timeout=5):
                time.sleep(0.1)                      # one file's write

    t = threading.Thread(target=busy)
    t.start()
    time.sleep(0.3)                                  # busy holds the lock by now
    try:
        for _ in range(5):
            t0 = time.monotonic()
            with folder_lock(tmp_path, timeout=2):
                waits.append(time.monotonic() - t0)
    finally:
        stop.set()
        t.join()
    assert len(waits) == 5 and max(waits) < 1.0      # polling alone timed out 5 of 5
