"""survey_night: the frames of a night in any layout, classified; data_organiser(survey=...)."""
from __future__ import annotations

import bz2
import hashlib
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrodart.frames.header import FrameHeader
from astrodart.pipeline.organise import SOURCES_MANIFEST, data_organiser, get_directory
from astrodart.pipeline.survey import survey_night
from astrodart.pipeline.survey_rules import image_stats, stats_type
from datapaths import FEDER, HATP27, HATP32, require

RNG = np.random.default_rng(17)


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _pixels(kind: str, n: int = 256, seed: int = 0) -> np.ndarray:
    """Synthetic raw pixels (ADU) of a bias, dark, flat or star field on a 1000-ADU bias."""
    rng = np.random.default_rng(seed)
    img = 1000.0 + rng.normal(0, 5, (n, n))
    if kind == "dark":
        img += 12.0
    elif kind == "flat":
        y, x = np.mgrid[:n, :n] / n
        light = 20000.0 * (1 + 0.05 * x - 0.03 * y)
        img += rng.poisson(light / 2.0) * 2.0        # 2 e-/ADU photon noise
    elif kind == "light":
        img += 300.0 + rng.normal(0, 12, (n, n))
        y, x = np.mgrid[:n, :n]
        for sx, sy in rng.uniform(n * 0.2, n * 0.8, (40, 2)):
            img += rng.uniform(800, 4000) * np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * 1.5 ** 2))
    return img


def _write(path: Path, kind: str, exptime: float, imagetyp=None, filt="V", seed=0, **cards) -> Path:
    h = fits.Header()
    h["EXPTIME"] = exptime
    h["FILTER"] = filt
    h["DATE-OBS"] = f"2024-03-0{1 + seed % 5}T0{seed % 10}:00:00"
    if imagetyp is not None:
        h["IMAGETYP"] = imagetyp
    for k, v in cards.items():
        h[k] = v
    data = np.clip(_pixels(kind, seed=seed), 0, 65535).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data, header=h).writeto(path)
    return path


# ---------------------------------------------------------------------------------------
# the real nights
# ---------------------------------------------------------------------------------------
def test_hatp27_night_as_it_is():
    night = require(HATP27)
    t0 = time.perf_counter()
    s = survey_night(night)
    took = time.perf_counter() - t0
    print(f"survey of the HAT-P-27b night: {took:.2f} s")
    assert took < 15
    assert s.counts() == {"bias": 10, "dark": 10, "flat": 10, "light": 100}
    assert s.layout == "flat" and s.night_date() == "180423"
    assert s.filters() == ["Visible"] and not s.unreadable and not s.unclassified
    assert {r.exptime for r in s.of_type("dark")} == {20.0}
    assert all("dome_flat" in r.path.name for r in s.of_type("flat"))
    assert all("science" in r.path.name and not r.overrides_header for r in s.of_type("light"))
    msgs = s.override_messages()
    assert len(msgs) == 1, msgs
    m = re.fullmatch(r"10 frames IMAGETYP='Light Frame' read as flat: name says dome_flat, "
                     r"median (\d+) ADU, no stars", msgs[0])
    assert m and 18000 < int(m.group(1)) < 19000          # README: ~18 200 ADU
    assert msgs[0] in s.table()
    d = s.to_dict()
    assert d["counts"]["flat"] == 10 and len(d["lights"]["Visible"]) == 100
    assert d["overrides"] == msgs and d["date"] == "180423"
    rec = s.of_type("flat")[0]
    assert rec.header_type == "Light Frame" and rec.shape == (1024, 1024) and rec.ccd_temp is not None
    assert rec.camera.startswith("SBIG") and not rec.calibrated


def test_hatp32_lights_without_imagetyp():
    s = survey_night(require(HATP32))
    assert s.counts() == {"bias": 0, "dark": 0, "flat": 0, "light": 10}
    assert s.layout == "lights-only" and s.filters() == ["Clear"]
    assert {r.exptime for r in s.frames} == {60.0}
    assert all(r.overrides_header and r.header_type is None for r in s.frames)
    assert all(re.search(r"\d+ stars", r.why) for r in s.frames)
    assert s.target() == "HATP-32"
    assert s.night_date() == "171220"                   # UTC (DATE-OBS is local -0700)
    assert s.override_messages()[0].startswith("10 frames without IMAGETYP read as light: ")


def test_feder_headers_as_an_astronomer_reads_them():
    s = survey_night(require(FEDER))
    by_name = {r.path.name: r for r in s.frames}
    # flattest.fit: IMAGETYP='BIAS' and EXPTIME=0. A 0-s exposure collects no light, so
    # whatever its name says it cannot be a flat: it is a bias (median 32818 ADU, flat-free)
    flattest = by_name["flattest.fit"]
    assert flattest.frame_type == "bias" and not flattest.overrides_header
    assert "name says flattest, but a 0-s exposure collects no light" in flattest.why
    assert s.counts() == {"bias": 6, "dark": 5, "flat": 1, "light": 6}
    assert {r.exptime for r in s.of_type("dark")} == {30.0}
    assert [r.path.name for r in s.of_type("flat", "R")] == ["aspen_trimmed.fit"]
    # the neon lamp frame has no IMAGETYP; its name says 'dome' but it is faint (median
    # 100 ADU = its PEDESTAL): not a flat -- left for the user to type, with the reason
    neon = next(p for p in s.unclassified if "neon-on-dome" in p)
    assert "not a flat" in s.unclassified[neon] and "--frame-type" in s.unclassified[neon]
    # one night, one target: the most common OBJECT; lights of others are reported
    assert s.target() == "ngc-6946"
    assert sorted(s.other_targets.values()) == ["Mette", "ey-uma", "kelt-16-b"]
    assert {r.target for r in s.of_type("light")} == {"ngc-6946", None}


def test_survey_is_cheap_per_frame():
    flat = sorted(require(HATP27).glob("*dome_flat*"))[0]
    data = fits.getdata(flat)
    best = min(_timed(lambda: image_stats(data, level=980.0)) for _ in range(3))
    print(f"image_stats on a 1024x1024 frame: {best * 1000:.0f} ms")
    assert best < 0.1
    assert stats_type(image_stats(data, level=980.0)) == "flat"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# layouts, rules and overrides on synthetic frames
# ---------------------------------------------------------------------------------------
def test_astro_reduce_layout_types_from_folders(tmp_path):
    for i in range(3):
        _write(tmp_path / "DARK" / f"img_{i}.fits", "dark", 30.0, seed=i)
        _write(tmp_path / "FLAT" / f"img_{i}.fits", "flat", 2.0, seed=i)
        _write(tmp_path / "ORIGINAL" / f"img_{i}.fits", "light", 30.0, seed=i)
    s = survey_night(tmp_path)
    assert s.layout == "astro_reduce"
    assert s.counts() == {"bias": 0, "dark": 3, "flat": 3, "light": 3}
    assert all(r.why == "folder DARK/ says dark" for r in s.of_type("dark"))
    assert all(r.why == "folder ORIGINAL/ says light" for r in s.of_type("light"))
    assert len(s.override_messages()) == 3


def test_flat_folder_of_mixed_frames_by_exptime_and_statistics(tmp_path):
    kinds = {"bias": 0.0, "dark": 60.0, "flat": 3.0, "light": 60.0}
    for k, (kind, exptime) in enumerate(kinds.items()):
        for i in range(2):
            _write(tmp_path / f"frame_{k}{i}.fits", kind, exptime, seed=10 * k + i)
    s = survey_night(tmp_path)
    got = {r.path.name: r.frame_type for r in s.frames}
    assert got == {f"frame_{k}{i}.fits": kind for k, kind in enumerate(kinds) for i in range(2)}
    assert s.layout == "flat"
    flat = s.of_type("flat")[0]
    assert re.fullmatch(r"median \d+ ADU, no stars", flat.why)
    assert "faint" in s.of_type("dark")[0].why and "stars" in s.of_type("light")[0].why
    assert s.of_type("bias")[0].why == "EXPTIME=0"


def test_imagetyp_believed_unless_names_and_statistics_both_disagree(tmp_path):
    _write(tmp_path / "dome_flat_1.fits", "light", 30.0, "Light Frame", seed=1)  # stats say light
    _write(tmp_path / "dome_flat_2.fits", "flat", 3.0, "Light Frame", seed=2)    # stats agree: flat
    _write(tmp_path / "m42_dark_3.fits", "dark", 30.0, "Dark Frame", seed=3)     # they agree
    s = survey_night(tmp_path)
    by = {r.path.name: r for r in s.frames}
    assert by["dome_flat_1.fits"].frame_type == "light" and not by["dome_flat_1.fits"].overrides_header
    assert "but median" in by["dome_flat_1.fits"].why
    assert by["dome_flat_2.fits"].frame_type == "flat" and by["dome_flat_2.fits"].overrides_header
    assert by["m42_dark_3.fits"].why == "IMAGETYP='Dark Frame'"


def test_frame_type_override_wins_and_bad_type_fails_first(tmp_path):
    for i in range(2):
        _write(tmp_path / "sub" / f"odd_{i}.fits", "flat", 3.0, "Light Frame", seed=i)
    s = survey_night(tmp_path, frame_types={"sub/odd_*": "dark"})
    assert s.counts()["dark"] == 2
    assert s.override_messages() == ["2 frames IMAGETYP='Light Frame' read as dark: --frame-type sub/odd_*=dark"]
    with pytest.raises(ValueError, match=r"\*\.fit='sky'.*allowed: bias, dark, flat, flatdark, light"):
        survey_night(tmp_path / "does-not-exist", frame_types={"*.fit": "sky"})


def test_extensions_cubes_tables_and_missing(tmp_path):
    plain = _write(tmp_path / "a.FTS", "light", 10.0, "Light Frame", seed=1)
    (tmp_path / "b.fits.bz2").write_bytes(bz2.compress(plain.read_bytes()))
    hdu = fits.PrimaryHDU(_pixels("light", seed=2).astype(np.float32), header=fits.Header({"EXPTIME": 10.0}))
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(hdu.data, hdu.header)]).writeto(tmp_path / "c.fits.fz")
    fits.PrimaryHDU(np.zeros((3, 16, 16), np.float32)).writeto(tmp_path / "cube.fit")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("x", "E", array=np.arange(3.0))])]).writeto(tmp_path / "table.fits")
    (tmp_path / ".hidden").mkdir()
    _write(tmp_path / ".hidden" / "x.fits", "light", 10.0)
    _write(tmp_path / "reduced_data" / "y.fits", "light", 10.0)
    s = survey_night(tmp_path)
    assert sorted(r.path.name for r in s.frames) == ["a.FTS", "b.fits.bz2", "c.fits.fz"]
    assert "cube" in s.unreadable[str(tmp_path / "cube.fit")]
    assert "no image data" in s.unreadable[str(tmp_path / "table.fits")]
    assert survey_night([plain]).counts()["light"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no FITS frames.*\.fit/\.fits/\.fts"):
        survey_night(empty)
    with pytest.raises(FileNotFoundError, match="nope: no such night folder"):
        survey_night(tmp_path / "nope")


def test_calibrated_frames_are_recognised(tmp_path):
    _write(tmp_path / "x.fits", "light", 10.0, "Light Frame", seed=1, SUBBIAS="ccd=<CCDData>")
    h = fits.Header({"EXPTIME": 10.0, "IMAGETYP": "Light Frame"})
    h.add_history("Auto Dark Subtraction")
    fits.PrimaryHDU(np.ones((16, 16), np.float32), header=h).writeto(tmp_path / "y.fits")
    _write(tmp_path / "z.fits", "light", 10.0, "Light Frame", seed=2)
    got = {r.path.name: r.calibrated for r in survey_night(tmp_path).frames}
    assert got == {"x.fits": True, "y.fits": True, "z.fits": False}


# ---------------------------------------------------------------------------------------
# data_organiser(survey=...)
# ---------------------------------------------------------------------------------------
def test_organiser_keeps_same_name_frames_and_never_writes_raw(tmp_path):
    night = tmp_path / "night"
    _write(night / "north" / "a.fits", "light", 20.0, seed=1)
    _write(night / "south" / "a.fits", "light", 20.0, seed=2)
    _write(night / "bias" / "a.fits", "bias", 0.0, seed=3)
    _write(night / "flats" / "f.fits", "flat", 2.0, "Light Frame", seed=4)
    before = _hashes(night)
    s = survey_night(night)
    assert s.layout == "by-type" and s.counts() == {"bias": 1, "dark": 0, "flat": 1, "light": 2}
    org = data_organiser(None, tmp_path / "red", target="T1", survey=s, verbose=False)
    report = org.run()
    assert _hashes(night) == before
    assert report.per_type() == {"bias": 1, "dark": 0, "flat": 1, "light": 2}
    g = get_directory(org.get_directory())
    (obj,) = g.science()[1]
    assert len(obj) == 2 and len({Path(f).name for f in obj}) == 2
    sources = {fits.getdata(f).tobytes() for f in obj}
    assert sources == {fits.getdata(night / d / "a.fits").tobytes() for d in ("north", "south")}
    assert all(FrameHeader.from_file(f).object == "T1" for f in obj)
    flat = g.flatfield()[1][0][0]
    assert FrameHeader.from_file(flat).frame_type == "flat"
    assert "IMAGETYP='Flat Field' (was 'Light Frame')" in "".join(fits.getheader(flat)["HISTORY"])
    # reuse only copies made from the same source; a touched source is copied again
    again = data_organiser(None, tmp_path / "red", target="T1", survey=s, verbose=False).run()
    assert len(again.reused) == 4 and not again.copied
    os.utime(night / "bias" / "a.fits", ns=(1, 1))
    third = data_organiser(None, tmp_path / "red", target="T1", survey=survey_night(night), verbose=False).run()
    assert [Path(p).parent.name for p in third.copied] == ["bias"]
    # other pixels under the same name, size and time (as `cp -p` leaves them): copied again
    with fits.open(night / "bias" / "a.fits", mode="update") as hdul:
        hdul[0].data = hdul[0].data[::-1].copy()
    os.utime(night / "bias" / "a.fits", ns=(1, 1))
    again = data_organiser(None, tmp_path / "red", target="T1", survey=survey_night(night),
                           verbose=False).run()
    assert [Path(p).parent.name for p in again.copied] == ["bias"] and len(again.reused) == 3
    before = _hashes(night)
    # a type changed by an override moves the copy: the old one is removed
    s4 = survey_night(night, frame_types={"flats/*": "light"})
    fourth = data_organiser(None, tmp_path / "red", target="T1", survey=s4, verbose=False).run()
    assert fourth.removed == [flat] and len(get_directory(org.get_directory()).science()[1][0]) == 3
    assert (Path(org.get_directory()) / SOURCES_MANIFEST).is_file()


def test_organiser_hatp27_night_from_its_survey(tmp_path):
    night = require(HATP27)
    before = _hashes(night)
    s = survey_night(night)
    org = data_organiser(None, tmp_path / "reduced_data", target="hat-p-27", survey=s, verbose=False)
    report = org.run()
    assert _hashes(night) == before
    assert report.per_type() == {"bias": 10, "dark": 10, "flat": 10, "light": 100}
    assert Path(org.get_directory()) == tmp_path / "reduced_data" / "180423" / "hat-p-27"
    g = get_directory(org.get_directory())
    assert len(g.bias()[1]) == 10
    assert g.dark()[2] == [20.0] and len(g.dark()[1][0]) == 10
    assert g.flatfield()[2] == ["Visible"] and len(g.flatfield()[1][0]) == 10
    assert g.science()[2] == ["Visible"] and len(g.science()[1][0]) == 100
    flats = g.flatfield()[1][0]
    assert all(FrameHeader.from_file(f).frame_type == "flat" for f in flats)
    raw_flat = next(r.path for r in s.of_type("flat") if r.path.name.startswith(Path(flats[0]).name))
    assert np.array_equal(fits.getdata(raw_flat), fits.getdata(flats[0]))
    assert fits.getheader(flats[0])["BITPIX"] == 16                 # still raw integers
    sci = g.science()[1][0][0]
    assert FrameHeader.from_file(sci).object == "hat-p-27"
    assert all(f.endswith(".BIAS.FIT.gz") for f in g.bias()[1])    # byte copies keep gzip
    t0 = time.perf_counter()
    again = data_organiser(None, tmp_path / "reduced_data", target="hat-p-27", survey=s,
                           verbose=False).run()
    assert len(again.reused) == 130 and not again.copied
    print(f"organise reuse: {time.perf_counter() - t0:.2f} s")


def test_tree_by_type_and_filter_and_target_choice(tmp_path):
    for f in ("R", "V"):
        for i in range(2):
            _write(tmp_path / "lights" / f / f"x{i}.fits", "light", 30.0, filt="", seed=i, OBJECT="HAT-P-32")
    _write(tmp_path / "lights" / "R" / "other.fits", "light", 30.0, filt="", seed=5, OBJECT="M 42")
    s = survey_night(tmp_path, target="hat-p-32 b")
    assert s.layout == "lights-only" and s.filters() == ["R", "V"]
    assert s.target() == "hat-p-32 b" and list(s.other_targets.values()) == ["M 42"]
    assert len(s.of_type("light", "R")) == 2
    one = survey_night(tmp_path / "lights" / "V", target="something else")
    assert one.counts()["light"] == 2 and not one.other_targets     # one target: all kept


def test_common_imagetyp_spellings_are_understood():
    from astrodart.frames.header import normalise_frame_type

    got = {v: normalise_frame_type(v) for v in ("TWIFLAT", "Tricolor Image", "twilight", "STANDARD",
                                                "Light Frame", "zero", "dark_flat")}
    assert got == {"TWIFLAT": "flat", "Tricolor Image": "object", "twilight": "flat",
                   "STANDARD": "object", "Light Frame": "object", "zero": "bias",
                   "dark_flat": "flatdark"}


def test_astrodart_layout(tmp_path):
    night = tmp_path / "uncal_data" / "240301"
    _write(night / "b.fits", "bias", 0.0, "Bias Frame", seed=1)
    _write(night / "l.fits", "light", 10.0, "Light Frame", seed=2)
    for where in (night, tmp_path / "uncal_data", tmp_path):
        s = survey_night(where)
        assert s.layout == "astrodart" and s.counts()["bias"] == 1 and s.counts()["light"] == 1
    assert s.night_date() == "240303"          # the light's DATE-OBS (seed 2), in UTC
