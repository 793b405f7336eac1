"""Issue 18, items 6 and 8: the reduction tree's resume calls select by provenance, names
that become folders are safe, outputs stay inside the reduction folder, a read-only
output folder fails before any work, and the run log lives in the reduction folder.

Every test works on copies in a tmp folder; the real nights are only read.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from datapaths import HATP27, require

from astrodart.first_stage import finalize_stage1, gain_correction, trimmer
from astrodart.frames.io import read_frame
from astrodart.pipeline.image_combination import image_combination
from astrodart.pipeline.organise import data_organiser, get_directory
from astrodart.pipeline.runlog import LOG_NAME, SCIENCE_MANIFEST, SOURCES_MANIFEST, find_log_path
from astrodart.pipeline.survey import survey_night
from astrodart.pipeline.tree import folder_name, group_dirname, inside

FAST = dict(progress=False, executor="serial")


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in Path(folder).rglob("*") if p.is_file()}


def _copy_tree(src, dest: Path, n_raw: int = 0) -> Path:
    """A copy of a reduction tree with only the first ``n_raw`` raw science copies."""
    keep = {Path(f).name for f in get_directory(src).science()[1][0][:n_raw]}

    def ignore(folder, names):
        if Path(folder).parent.name == "object":
            return [n for n in names if n not in keep]
        return [n for n in names if n in ("bias", "dark", "flat")]
    shutil.copytree(src, dest, ignore=ignore)
    return dest


def _science_raw(n: int | None = None) -> list[Path]:
    files = sorted(require(HATP27).glob("*science_exposures*"))
    return files if n is None else files[:n]


# ---------------------------------------------------------------------------------------
# science_final() by provenance, on the real night
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hatp27_tree(tmp_path_factory):
    """The real HAT-P-27b night organised from its survey; the 100 science frames through
    two real steps (a small trim region, to keep the test fast) and finalize_stage1."""
    root = tmp_path_factory.mktemp("tree27")
    org = data_organiser(None, root / "reduced_data", target="HAT-P-27",
                         survey=survey_night(require(HATP27)), verbose=False)
    org.run()
    data_dir = org.get_directory()
    g = get_directory(data_dir)
    object_dir, object_files, filters = g.science()
    trimmed = trimmer(object_dir[0], object_files[0], "[101:164,201:264]", "no", **FAST).run()
    gain_correction(object_dir[0], trimmed, "no", **FAST).run()
    directories, files = finalize_stage1(data_dir, object_dir, g.bias()[0]).run()
    return dict(data_dir=data_dir, object_dir=object_dir, object_files=object_files,
                directories=directories, files=files, filters=filters)


def test_science_final_after_the_guides_stack_is_the_100_frames(hatp27_tree):
    t = hatp27_tree
    directories, files, filters = t["directories"], t["files"], t["filters"]
    assert filters == ["Visible"] and len(files[0]) == 100
    assert all(Path(f).name.startswith("gain_corrected_trimmed_") for f in files[0])
    # the guide's stacking step, as the AstroDART astrophotography guide writes it: into
    # the finalized filter folder
    stack = image_combination(wdir=directories[0], files=files[0],
                              output_name=f"Combined_image_{filters[0]}.fits",
                              combining_method="median", clipping_method="sigclip",
                              minclip=2, maxclip=5, remove_files="yes").run()
    plain = image_combination(directories[0], files[0], "Combined_image.fits", "median").run()
    assert fits.getval(stack, "NCOMBINE") == 100 and Path(plain).is_file()
    assert len(list(Path(directories[0]).glob("*.fits"))) == 102   # the folder holds 102 files
    d2, f2, filt2 = get_directory(t["data_dir"]).science_final()
    assert (d2, filt2) == (directories, ["Visible"])
    assert f2 == files and len(f2[0]) == 100                       # ... 100 science frames
    assert stack not in f2[0] and plain not in f2[0]
    # the frames are the calibrated science: the trimmed region of each raw frame, in e-
    raw = fits.getdata(t["object_files"][0][0]).astype(float)
    cal = read_frame(f2[0][0])
    assert cal.shape == (64, 64) and str(cal.unit) == "electron"
    np.testing.assert_allclose(cal.data, raw[200:264, 100:164] * 2.06, rtol=1e-5)
    # a second finalize (the notebook runs it again) still returns the 100 frames
    assert finalize_stage1(t["data_dir"], t["object_dir"]).run() == (directories, files)
    # the raw-frame lists do not count a stack written among the raw copies either
    image_combination(t["object_dir"][0], t["object_files"][0][:5], "Combined_image.fits",
                      "median").run()
    assert get_directory(t["data_dir"]).science()[1] == t["object_files"]
    assert len(t["object_files"][0]) == 100


def test_science_final_without_its_record_reads_provenance(hatp27_tree, tmp_path):
    """A tree finalized before the record existed: the headers decide (ADSTEP, no NCOMBINE)."""
    data_dir = _copy_tree(hatp27_tree["data_dir"], tmp_path / "copy")
    (data_dir / SCIENCE_MANIFEST).unlink()
    d, f, filt = get_directory(data_dir).science_final()
    assert filt == ["Visible"] and len(f[0]) == 100
    assert not any("Combined_image" in p for p in f[0])


def test_finalize_does_not_move_a_new_trim_of_finalized_frames(hatp27_tree, tmp_path):
    """The notebook iterates: after finalizing, trimmer runs again on the raw copies with
    another region; finalize must not take those trimmed_ frames for calibrated ones."""
    data_dir = _copy_tree(hatp27_tree["data_dir"], tmp_path / "again", n_raw=10)
    g = get_directory(data_dir)
    object_dir, object_files, _ = g.science()
    before = g.science_final()
    new = trimmer(object_dir[0], object_files[0][:10], "[1:32,1:32]", "yes", **FAST).run()
    assert len(new) == 10
    directories, files = finalize_stage1(data_dir, object_dir).run()
    after = get_directory(data_dir).science_final()
    assert files == before[1] and after == before and len(files[0]) == 100
    assert not any(Path(p).name.startswith("trimmed_") for p in files[0])
    assert not list(Path(directories[0]).glob("trimmed_*"))
    assert not list(Path(object_dir[0]).glob("trimmed_*"))          # intermediates removed
    # a frame whose own chain stopped early (gain_correction not run on it) is left out
    fresh = tmp_path / "fresh"
    shutil.copytree(data_dir, fresh)
    shutil.rmtree(fresh / "Visible")
    (fresh / SCIENCE_MANIFEST).unlink()
    fobj = get_directory(fresh).science()[0]
    t = trimmer(fobj[0], get_directory(fresh).science()[1][0][:6], "[1:32,1:32]", "yes", **FAST).run()
    gain_correction(fobj[0], t[:4], "yes", **FAST).run()
    with pytest.warns(Warning, match="stopped early"):
        _, moved = finalize_stage1(fresh, fobj).run()
    assert len(moved[0]) == 4 and all(Path(p).name.startswith("gain_corrected_") for p in moved[0])


# ---------------------------------------------------------------------------------------
# safe names; outputs inside the reduction folder
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["../../../x", "..", ".", "a/b", "a\\b", "x\x00y", "tab\there",
                                    ".hidden", ""])
def test_unsafe_target_is_refused_and_nothing_is_written(tmp_path, target):
    uncal = tmp_path / "uncal_data" / "180423"
    uncal.mkdir(parents=True)
    for p in _science_raw(2):
        shutil.copy2(p, uncal / p.name)
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"target=.*not a safe folder name") as err:
        data_organiser(tmp_path / "uncal_data", tmp_path / "work" / "reduced_data", "180423",
                       target, verbose=False).run()
    assert repr(target) in str(err.value) and "allowed" in str(err.value)
    assert _snapshot(tmp_path) == before and not (tmp_path / "work").exists()
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


@pytest.mark.parametrize("date", ["../180423", "18/04/23", "..", "\n"])
def test_unsafe_date_is_refused(tmp_path, date):
    with pytest.raises(ValueError, match="date="):
        data_organiser(tmp_path / "u", tmp_path / "r", date, "HAT-P-27", verbose=False)
    assert not (tmp_path / "r").exists()


def test_names_read_from_headers_are_made_safe():
    assert folder_name("../../../x", "target", fix=True) == "_._.._.._x"
    assert folder_name("..", "target", fix=True) == "_."
    assert folder_name("a\x00b\n", "target", fix=True) == "a_b"
    assert folder_name("  ", "target", fix=True) == "none"
    assert folder_name("Étoile du Berger", "target") == "Étoile du Berger"   # kept as is
    assert group_dirname("..") == "_." and group_dirname("../x") == "_._x"
    assert group_dirname("Hα 6563/3nm") == "Hα_6563_3nm" and group_dirname(".R") == "_R"
    assert group_dirname(20.0) == "20" and group_dirname(" Visible ") == "Visible"
    for name in ("../../../x", "..", "a/b/../../c"):
        fixed = folder_name(name, "filter", fix=True)
        assert "/" not in fixed and not fixed.startswith(".")


def test_outputs_stay_inside_the_reduction_folder(tmp_path):
    red = tmp_path / "reduced_data"
    (red).mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (red / "180423").symlink_to(outside, target_is_directory=True)   # a link leading out
    org = data_organiser(tmp_path / "uncal_data", red, "180423", "HAT-P-27", verbose=False)
    with pytest.raises(ValueError, match="outside"):
        org.run()
    assert not any(outside.iterdir())
    with pytest.raises(ValueError, match="outside"):
        inside(red, red / ".." / "x")
    assert inside(red, red / "180423x" / "a.fits") == red / "180423x" / "a.fits"
    # finalize_stage1 refuses an object folder that is not a filter folder
    with pytest.raises(ValueError, match="object_dir"):
        finalize_stage1(red, [str(red / "object")])
    with pytest.raises(ValueError, match="object_dir"):
        finalize_stage1(red, ["/"])


# ---------------------------------------------------------------------------------------
# spaces and non-ASCII letters
# ---------------------------------------------------------------------------------------
def test_spaces_and_non_ascii_names_through_organiser_and_a_step(tmp_path):
    night = tmp_path / "nuit d'été"
    night.mkdir()
    raws = []
    for i, p in enumerate(_science_raw(3)):
        dest = night / f"Étoile du soir ñ {i:02d}.fit.gz"
        shutil.copy2(p, dest)
        raws.append(dest)
    before = _snapshot(night)
    org = data_organiser(None, tmp_path / "données réduites", target="Étoile du Berger",
                         survey=survey_night(night), verbose=False)
    report = org.run()
    assert report.per_type()["light"] == 3
    data_dir = Path(org.get_directory())
    assert data_dir.name == "Étoile du Berger" and data_dir.is_dir()
    g = get_directory(data_dir)
    object_dir, object_files, filters = g.science()
    assert filters == ["Visible"] and len(object_files[0]) == 3
    assert all("Étoile du soir ñ" in Path(f).name for f in object_files[0])
    out = trimmer(object_dir[0], object_files[0], "[11:30,21:50]", "no", **FAST).run()
    assert [Path(p).name for p in out] == [f"trimmed_Étoile du soir ñ {i:02d}.fits" for i in range(3)]
    for raw, o in zip(raws, out):
        np.testing.assert_array_equal(read_frame(o).data, fits.getdata(raw)[20:50, 10:30])
    directories, files = finalize_stage1(data_dir, object_dir).run()
    assert get_directory(data_dir).science_final() == (directories, files, ["Visible"])
    assert len(files[0]) == 3
    assert _snapshot(night) == before                                  # raw never touched
    assert not (night / LOG_NAME).exists() and (data_dir / LOG_NAME).is_file()


# ---------------------------------------------------------------------------------------
# read-only output; the run log's place
# ---------------------------------------------------------------------------------------
def test_read_only_output_folder_fails_before_any_work(tmp_path):
    uncal = tmp_path / "uncal_data" / "180423"
    uncal.mkdir(parents=True)
    for p in _science_raw(2):
        shutil.copy2(p, uncal / p.name)
    red = tmp_path / "reduced_data"
    red.mkdir()
    red.chmod(0o555)
    try:
        before = _snapshot(tmp_path)
        with pytest.raises(PermissionError, match="reduction_dir.*read-only|not writable"):
            data_organiser(tmp_path / "uncal_data", red, "180423", "HAT-P-27", verbose=False).run()
        assert _snapshot(tmp_path) == before and not any(red.iterdir())
    finally:
        red.chmod(0o755)
    # finalize_stage1 on a read-only tree moves nothing
    data = tmp_path / "tree"
    (data / "object" / "V").mkdir(parents=True)
    data.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="data_dir"):
            finalize_stage1(data, [str(data / "object" / "V")]).run()
        assert sorted(p.name for p in data.iterdir()) == ["object"]
    finally:
        data.chmod(0o755)


def test_run_log_lives_in_the_reduction_folder(tmp_path):
    uncal = tmp_path / "uncal_data" / "180423"
    uncal.mkdir(parents=True)
    for p in _science_raw(3):
        dest = uncal / p.name
        shutil.copy2(p, dest)
        with fits.open(dest, mode="update") as hdul:   # our copy: the header the guide adds
            hdul[0].header["OBJECT"] = "HAT-P-27"
    raw_before = _snapshot(uncal)
    org = data_organiser(tmp_path / "uncal_data", tmp_path / "reduced_data", "180423/",
                         "HAT-P-27", verbose=False)
    assert len(org.run().copied) == 3
    data_dir = Path(org.get_directory())
    log = data_dir / LOG_NAME
    assert (data_dir / SOURCES_MANIFEST).is_file()
    object_dir, object_files, _ = get_directory(data_dir).science()
    # a step writing beside the raw copies logs to the reduction folder, also when the
    # log was removed (the organiser's record marks the reduction folder)
    log.unlink()
    assert find_log_path(object_dir[0]) == log.resolve()
    trimmer(object_dir[0], object_files[0], "[1:16,1:16]", "no", **FAST).run()
    finalize_stage1(data_dir, object_dir).run()
    steps = [line.split('"step": "')[1].split('"')[0] for line in log.read_text().splitlines()]
    assert steps == ["trimmer", "finalize_stage1"]
    logs = sorted(p for p in tmp_path.rglob(LOG_NAME))
    assert logs == [log]                                               # one log, none in uncal
    assert _snapshot(uncal) == raw_before
    # the organiser reuses a copy only when its record matches the source (not its size)
    again = data_organiser(tmp_path / "uncal_data", tmp_path / "reduced_data", "180423",
                           "HAT-P-27", verbose=False).run()
    assert len(again.reused) == 3 and not again.copied
    os.utime(uncal / object_files[0][0].split(os.sep)[-1], ns=(1, 1))
    third = data_organiser(tmp_path / "uncal_data", tmp_path / "reduced_data", "180423",
                           "HAT-P-27", verbose=False).run()
    assert len(third.copied) == 1 and len(third.reused) == 2
