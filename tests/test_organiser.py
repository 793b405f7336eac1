"""header_tools, data_organiser and get_directory on the real nights."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrodart.frames.header import FrameHeader
from astrodart.utils import data_organiser, get_directory, header_tools
from datapaths import FEDER, HATP27, HATP32, copy_night


def _file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _pixel_hash(path) -> str:
    return hashlib.sha256(np.ascontiguousarray(fits.getdata(path)).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def hatp27_night(tmp_path_factory):
    root = tmp_path_factory.mktemp("hatp27")
    night = root / "uncal_data" / "180423"
    files = copy_night(HATP27, night)
    pixels = {p.name: _pixel_hash(p) for p in files}
    flats = [p for p in files if "dome_flat" in p.name]
    science = [p for p in files if "science" in p.name]
    header_tools(flats, {"IMAGETYP": "Flat Field"}).update_header_values()
    header_tools(science, {"OBJECT": "HAT-P-27"}).append_header_key()
    header_tools(files, {"EGAIN": "GAIN"}).change_header_key_name()
    return root, night, files, pixels


def test_header_edits_keep_pixels_and_record_history(hatp27_night):
    root, night, files, pixels = hatp27_night
    assert {p.name: _pixel_hash(p) for p in files} == pixels
    flat = next(p for p in files if "dome_flat" in p.name)
    h = fits.getheader(flat)
    assert h["IMAGETYP"] == "Flat Field"
    assert h["GAIN"] == pytest.approx(2.06) and "EGAIN" not in h
    assert h["BZERO"] == 32768 and h["BITPIX"] == 16        # still uint16 on disk
    history = "\n".join(h["HISTORY"])
    assert "IMAGETYP = 'Flat Field' (was 'Light Frame" in history
    assert "renamed EGAIN -> GAIN" in history
    sci = next(p for p in files if "science" in p.name)
    assert FrameHeader.from_file(sci).object == "HAT-P-27"
    assert not list(night.glob(".astrodart-tmp*"))


def test_organise_real_night_counts_and_raw_untouched(hatp27_night):
    root, night, files, _ = hatp27_night
    before = _file_hashes(night)
    org = data_organiser(str(root / "uncal_data") + "/", root / "reduced_data", "180423", "hat-p-27",
                         overwrite="no", verbose=False)
    report = org.run()
    assert _file_hashes(night) == before                   # uncal_data byte-identical
    assert dict(report.counts) == {("bias", ""): 10, ("dark", 20.0): 10,
                                   ("flat", "Visible"): 10, ("object", "Visible"): 100}
    assert not report.unclassified and not report.unreadable
    data_dir = org.get_directory()
    assert data_dir.endswith("/") and Path(data_dir) == root / "reduced_data" / "180423" / "hat-p-27"
    g = get_directory(data_dir.rstrip("/"))
    bias_dir, bias_files = g.bias()
    assert len(bias_files) == 10 and bias_files == sorted(bias_files)
    dark_dirs, dark_files, dark_groups = g.dark()
    assert dark_groups == [20.0] and len(dark_files[0]) == 10 and dark_dirs[0].endswith("dark/20/")
    flat_dirs, flat_files, flat_filters = g.flatfield()
    assert flat_filters == ["Visible"] and len(flat_files[0]) == 10
    assert all("dome_flat" in Path(f).name for f in flat_files[0])
    obj_dirs, obj_files, obj_filters = g.science()
    assert obj_filters == ["Visible"] and len(obj_files[0]) == 100
    assert g.flatdark() == ([], [], [])
    assert g.science_final() == ([], [], [])
    # resume: a second run copies nothing and keeps everything
    again = data_organiser(root / "uncal_data", root / "reduced_data", "180423", "hat-p-27",
                           verbose=False).run()
    assert len(again.reused) == 130 and not again.copied
    log = (Path(data_dir) / "astrodart_log.jsonl").read_text().splitlines()
    assert len(log) == 2 and '"step": "data_organiser"' in log[0]


def test_feder_headers_classify(tmp_path):
    night = tmp_path / "uncal" / "120206"
    copy_night(FEDER, night)
    report = data_organiser(tmp_path / "uncal", tmp_path / "red", "120206", "ngc-6946",
                            verbose=False).run()
    c = report.counts
    assert c[("bias", "")] == 6                      # 5 bias + flattest.fit, labelled BIAS
    assert c[("dark", 30.0)] == 5
    assert c[("flat", "R")] == 1
    assert c[("object", "B")] == 2                   # the two ngc-6946 headers
    assert "neon-on-dome" in " ".join(report.unclassified)
    assert "IMAGETYP" in report.unclassified[str(night / "neon-on-dome-10-sec-high-res-though-scope.fit")]
    assert "ey-uma" in report.other_targets.values()
    assert (tmp_path / "red" / "120206" / "ngc-6946" / "bias" / "flattest.fit").exists()


def test_microobservatory_unclassified_then_organised(tmp_path):
    night = tmp_path / "uncal" / "171220"
    files = copy_night(HATP32, night)
    report = data_organiser(tmp_path / "uncal", tmp_path / "red", "171220", "hat-p-32", verbose=False).run()
    assert not report.counts and len(report.unclassified) == 10
    assert all("IMAGETYP" in why for why in report.unclassified.values())
    header_tools(files, {"IMAGETYP": "Light Frame"}).append_header_key()
    report = data_organiser(tmp_path / "uncal", tmp_path / "red", "171220", "hat-p-32", verbose=False).run()
    assert dict(report.counts) == {("object", "Clear"): 10}
    _, files2, filters = get_directory(tmp_path / "red" / "171220" / "hat-p-32").science()
    assert filters == ["Clear"] and len(files2[0]) == 10


def test_bad_files_are_reported_and_the_rest_organised(tmp_path):
    night = tmp_path / "uncal" / "180423"
    files = copy_night(HATP27, night, "*bias_frame.0000000[1-4]*")
    (night / "zero.fits").write_bytes(b"")
    (night / "notes.fits").write_text("observing log, not a FITS file\n" * 100)
    good = files[0].read_bytes()
    import gzip
    (night / "truncated.fits").write_bytes(gzip.decompress(good)[:50_000])
    hdr = fits.Header({"IMAGETYP": "Dark Frame"})
    fits.PrimaryHDU(np.zeros((8, 8), dtype=np.uint16), header=hdr).writeto(night / "noexptime.fits")
    report = data_organiser(tmp_path / "uncal", tmp_path / "red", "180423", "x", verbose=False).run()
    assert report.counts[("bias", "")] == 4
    bad = {Path(p).name: why for p, why in {**report.unreadable, **report.unclassified}.items()}
    assert "empty" in bad["zero.fits"]
    assert "not a readable FITS" in bad["notes.fits"]
    assert "truncated" in bad["truncated.fits"] or "unreadable" in bad["truncated.fits"]
    assert "EXPTIME" in bad["noexptime.fits"]
    assert "truncated.fits" in report.table() and "noexptime.fits" in report.table()


def test_header_tools_errors_and_dry_run(tmp_path, capsys):
    files = copy_night(HATP32, tmp_path, "*01334*") + copy_night(HATP32, tmp_path, "*013612*")
    before = _file_hashes(tmp_path)
    with pytest.raises(KeyError) as err:
        header_tools(files, {"INSFILTE": "FILTER"}).change_header_key_name()
    assert all(p.name in str(err.value) for p in files)
    assert _file_hashes(tmp_path) == before            # nothing changed on error
    header_tools(files, {"OBJECT": "HAT-P-32"}, dry_run=True).update_header_values()
    assert "[dry run]" in capsys.readouterr().out
    assert _file_hashes(tmp_path) == before
    header_tools(files, {"FILTER": "INSFILTE"}).change_header_key_name()
    h = fits.getheader(files[0])
    assert h["INSFILTE"] == "Clear" and h.comments["INSFILTE"] == "Filter chosen"
    present = header_tools(files, header_key="FILTER").check_key_is_present()
    assert present == {str(f): False for f in files}
