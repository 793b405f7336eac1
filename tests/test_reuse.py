"""Safe re-runs on the real HAT-P-27b frames: an output is reused only when its fingerprint
(inputs' content, parameters, masters, package version) matches, and a stale one is
recomputed with one warning that says what changed."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
import warnings

import numpy as np
import pytest
from astropy.io import fits

from astrodart.pipeline.calibrate import subtract_bias
from astrodart.pipeline.masters import master_frame
from astrodart.pipeline.prepare import trimmer
from astrodart.pipeline.step import OutputRecomputedWarning
from tests.datapaths import HATP27, copy_night


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """Five bias and four light frames of the HAT-P-27b night, copied (gz as shipped)."""
    root = tmp_path_factory.mktemp("reuse")
    bias = copy_night(HATP27, root / "raw", "*bias_frame.0000000[1-5]*")
    lights = copy_night(HATP27, root / "raw", "*science_exposures.0000000[159]*")
    lights += copy_night(HATP27, root / "raw", "*science_exposures.00000013*")
    assert len(bias) == 5 and len(lights) == 4
    return root, [str(p) for p in bias], [str(p) for p in lights]


def _run(step):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = step.run()
    texts = [str(w.message) for w in caught if issubclass(w.category, OutputRecomputedWarning)]
    return out, texts


def test_trim_again_with_a_new_region_gives_frames_of_the_new_shape(night):
    root, _, lights = night
    wdir = root / "trim"
    first, said = _run(trimmer(wdir, lights, "[1:512, 1:512]", executor="serial"))
    assert [fits.getdata(p).shape for p in first] == [(512, 512)] * 4 and not said
    again, said = _run(trimmer(wdir, lights, "[1:512, 1:512]", executor="serial"))
    assert again == first and not said  # same region: the four frames reused

    new, said = _run(trimmer(wdir, lights, "[1:256, 1:300]", executor="serial"))
    assert [fits.getdata(p).shape for p in new] == [(300, 256)] * 4
    assert len(said) == 1, said  # one warning for the four frames, naming the change
    assert "trimmer in 4 frames" in said[0] and "region changed" in said[0]
    assert "'[1:512, 1:512]' -> '[1:256, 1:300]'" in said[0]


def test_an_input_replaced_in_place_recomputes_only_its_output(night, tmp_path):
    root, _, lights = night
    inputs = []
    for p in lights:
        inputs.append(str(tmp_path / p.split("/")[-1]))
        shutil.copy2(p, inputs[-1])
    wdir = tmp_path / "out"
    step = trimmer(wdir, inputs, "[1:100, 1:100]", executor="serial")
    first, _ = _run(step)
    before = [fits.getdata(p).copy() for p in first]
    shutil.copy2(lights[3], inputs[0])  # same size and name, other pixels
    again = trimmer(wdir, inputs, "[1:100, 1:100]", executor="serial")
    out, said = _run(again)
    assert len(again.report.written) == 1 and len(again.report.reused) == 3
    assert said == [f"{inputs[0]}: trimmer: input frame changed; recomputed"]
    assert np.array_equal(fits.getdata(out[0]), before[3])  # the new content, not the old


def test_a_changed_master_bias_makes_the_calibrated_frames_stale(night):
    root, bias, lights = night
    cal = root / "cal"
    mb = master_frame(cal, bias[:3], "masterbias.fits", "median", None).run()
    first, _ = _run(subtract_bias(cal, lights, mb, executor="serial"))
    before = fits.getdata(first[0]).copy()
    # the same master rebuilt from other frames: the master itself says so, and then
    # every calibrated frame is recomputed against it
    with pytest.warns(OutputRecomputedWarning, match="input frame changed; rebuilt"):
        master_frame(cal, bias[2:], "masterbias.fits", "median", None).run()
    out, said = _run(subtract_bias(cal, lights, mb, executor="serial"))
    assert said and "subtract_bias in 4 frames: master bias changed" in said[0]
    new_bias = fits.getdata(mb)
    assert out == first and not np.array_equal(fits.getdata(out[0]), before)
    raw = fits.getdata(lights[0]).astype(np.float32)
    assert np.allclose(fits.getdata(out[0]), raw - new_bias)


def test_a_master_with_other_settings_is_rebuilt(night):
    root, bias, _ = night
    wdir = root / "settings"
    master_frame(wdir, bias, "masterbias.fits", "median", None).run()
    plain = fits.getdata(wdir / "masterbias.fits")
    said = r"clipping changed \(None -> 'sigclip'\).*method changed \('median' -> 'average'\)"
    with pytest.warns(OutputRecomputedWarning, match=said):
        master_frame(wdir, bias, "masterbias.fits", "average", "sigclip").run()
    assert fits.getheader(wdir / "masterbias.fits")["ADCMETH"] == "average"
    assert not np.array_equal(fits.getdata(wdir / "masterbias.fits"), plain)


def test_an_output_without_a_fingerprint_is_recomputed(night):
    root, _, lights = night
    wdir = root / "old"
    out, _ = _run(trimmer(wdir, lights[:1], "[1:64, 1:64]", executor="serial"))
    with fits.open(out[0], mode="update") as hdul:  # as an earlier astrodart wrote it
        del hdul[0].header["ADFPRINT"], hdul[0].header["ADPARAMS"]
    step = trimmer(wdir, lights[:1], "[1:64, 1:64]", executor="serial")
    _, said = _run(step)
    assert step.report.written == out and "made without a fingerprint" in said[0]


def test_two_inputs_with_one_name_give_two_outputs(night, tmp_path):
    _, _, lights = night
    name = "frame.fits.gz"
    a, b = tmp_path / "night1" / name, tmp_path / "night2" / name
    for src, dst in ((lights[0], a), (lights[1], b)):
        dst.parent.mkdir()
        shutil.copy2(src, dst)
    out = trimmer(tmp_path / "out", [a, b], "[1:50, 1:40]", executor="serial").run()
    assert len(set(out)) == 2, out
    for src, o in zip((lights[0], lights[1]), out):
        assert np.array_equal(fits.getdata(o), fits.getdata(src)[:40, :50])
        assert str(Path(o).name).startswith("trimmed_frame_")  # stable suffix
    history = "".join(fits.getheader(out[1])["HISTORY"])
    assert str(b) in history.replace(" ", "") or str(b).replace(" ", "") in history
    again = trimmer(tmp_path / "out", [a, b], "[1:50, 1:40]", executor="serial")
    assert again.run() == out and len(again.report.reused) == 2  # same names next time


def test_a_second_reduce_on_one_output_folder_refuses(tmp_path):
    from tests.datapaths import HATP32, require

    night = require(HATP32)
    out = tmp_path / "out"
    out.mkdir()
    from astrodart.frames.locks import folder_lock

    with folder_lock(out):  # as a first run holds it
        done = subprocess.run([sys.executable, "-m", "astrodart.cli", "reduce", str(night),
                               "--out", str(out), "--stop", "calibrate"],
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "another astrodart reduce is running on this output folder" in done.stderr
    assert list(out.iterdir()) == []  # nothing written
