"""The demo's report pieces, without running the notebooks: figure names, the science
table read from the notebooks' summaries, where a simulated night's truth goes."""
import base64
import json

import nbformat

from astrodart.datasets.truth import truth_file
from astrodart.ui.notebooks import _figure_slug, _save_figures, science_results_table

# the smallest valid PNG (1 x 1 pixel)
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")).decode()


def _figure_cell(**metadata):
    cell = nbformat.v4.new_code_cell("plot()", metadata=metadata)
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": PNG})]
    return cell


def test_figures_are_named_by_notebook_number_and_section(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title\n\n## 2. Stage 1: calibration"),
        _figure_cell(),
        nbformat.v4.new_markdown_cell("### 2.7 The master flat\n\nsome text"),
        nbformat.v4.new_markdown_cell("Prose without a heading keeps the section."),
        _figure_cell(),
        _figure_cell(figure="Raw vs calibrated"),
        _figure_cell(tags=["figure:drift"]),
    ])
    names = [p.name for p in _save_figures(nb, tmp_path / "astrophotography_figures")]
    assert names == ["astrophotography_01_stage_1_calibration.png",
                     "astrophotography_02_master_flat.png",
                     "astrophotography_03_raw_vs_calibrated.png",
                     "astrophotography_04_drift.png"]
    assert _figure_slug("## 4. Stage 3: align and stack") == "stage_3_align_and_stack"
    assert _figure_slug("") == "figure"


def test_science_table_reads_the_summaries_and_marks_what_is_missing(tmp_path):
    out = tmp_path / "reduced_data" / "notebooks"
    out.mkdir(parents=True)
    (out / "photometry_summary.json").write_text(json.dumps(dict(
        depth=0.0135, depth_err=0.0004, midtime_bjd=2458231.67891, midtime_err_min=0.8,
        predicted_midtime_bjd=2458231.67900, midtime_offset_min=-0.13, oot_rms_ppt=3.14,
        n_frames=97, t14_hours=1.66)))
    (out / "astrophotography_summary.json").write_text(json.dumps(dict(
        n_solved=10, n_hatp32=10, pixel_scale_arcsec=5.1634, n_stacked=96, n_science=100,
        median_single_fwhm=3.21, stack_fwhm=3.30, fwhm_ratio=1.028)))
    table = science_results_table(tmp_path)
    assert "1.35 ± 0.04 %" in table and "1.41 % (Béky+2011)" in table
    assert "2458231.6789" in table and "-0.1 min" in table and "3.14 ppt" in table
    assert "10/10" in table and "5.163 \"/px" in table and "96 of 100" in table
    assert "— ADU" in table                      # no detector-lab summary: shown as missing


def test_simulated_truth_goes_with_the_raw_data(tmp_path):
    assert truth_file(tmp_path) == tmp_path / "uncal_data" / "truth.json"
    assert truth_file(tmp_path / "new") == tmp_path / "new" / "uncal_data" / "truth.json"
    (tmp_path / "truth.json").write_text("{}")   # written by an older version: still found
    assert truth_file(tmp_path) == tmp_path / "truth.json"
