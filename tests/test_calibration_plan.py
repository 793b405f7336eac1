"""The calibration chain's order is data: CalibrationPlan picks its steps from CHAIN_ORDER,
prints them, and drives calibration_chain exactly as the AstroDART options do."""

from __future__ import annotations

import pytest

from astrodart.calibration.base import CalibrationError
from astrodart.first_stage import CalibrationPlan, calibration_chain
from astrodart.pipeline.chain import CHAIN_ORDER


def test_plan_follows_the_guide_order_and_prints_it(tmp_path):
    plan = CalibrationPlan(region="[1:50,1:40]", cosmic_rays="median",
                           cosmic_options={"thresh": 6.0}, repair_bad_pixels=True,
                           badpixel_file=str(tmp_path / "master_badpixel_map.fits"))
    names = [link.step.name for link in plan.links()]
    assert names == ["trimmer", "deviation_calculation", "gain_correction",
                     "cosmic_ray_median_correction", "bad_pixel_correction"]
    order = [link.step.name for link in CHAIN_ORDER]
    assert [order.index(n) for n in names] == sorted(order.index(n) for n in names)
    text = str(plan)
    assert text.splitlines()[0] == "calibration plan, 5 steps per frame:"
    assert "1. trimmer" in text and "region='[1:50,1:40]'" in text
    assert "thresh=6.0" in text and "mask_file='master_badpixel_map.fits'" in text
    assert "ron=header, gain=header" in text


@pytest.mark.parametrize("options, words", [
    ({"cosmic_rays": "laplace"}, "cosmic_rays='laplace'"),
    ({"repair_bad_pixels": True}, "needs badpixel_file"),
    ({"uncertainty": False, "gain_correct": False}, "nothing to do"),
])
def test_bad_plans_are_refused(options, words):
    with pytest.raises(CalibrationError, match=words):
        CalibrationPlan(**options)


def test_chain_takes_a_plan_or_the_options_not_both(tmp_path):
    plan = CalibrationPlan(region="[1:10,1:10]", uncertainty=False)
    by_plan = calibration_chain(tmp_path, [], plan=plan)
    by_options = calibration_chain(tmp_path, [], region="[1:10,1:10]", uncertainty=False)
    assert [p.name for p in by_plan.parts] == [p.name for p in by_options.parts]
    assert by_options.plan == plan
    with pytest.raises(CalibrationError, match="not both"):
        calibration_chain(tmp_path, [], plan=plan, gain=2.0)
