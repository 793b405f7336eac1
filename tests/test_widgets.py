"""Widgets and plotting helpers without a browser: headless fallbacks, validation, and
simulated interactions (synthetic matplotlib events and widget value changes).

The widgets are built here with ``interactive=True`` outside a kernel: ipywidgets and
ipympl construct their models without a front end, so the callbacks can be driven as a
user's clicks would drive them. The real front end is covered by ``test_browser.py``.
"""
from __future__ import annotations

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")  # pyplot-based helpers below must never try a display

import matplotlib.pyplot as plt
import numpy as np
import pytest
from astropy.nddata import CCDData
from astropy.table import Table
from datapaths import HATP27, REPO, require
from matplotlib.backend_bases import MouseEvent

from astrodart.ui import plotting
from astrodart.ui import widgets
from astrodart.calibration.sections import trim

# The arguments of image_combination that the combine picker may fill.
IMAGE_COMBINATION_ARGS = {"combining_method", "clipping_method", "minclip", "maxclip", "nlow",
                          "nhigh", "minmax_clip_min", "minmax_clip_max", "memory_limit",
                          "weights", "scale"}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


class Event:
    """A synthetic matplotlib event: only the attributes the handlers read."""

    def __init__(self, xdata=None, ydata=None, inaxes=None, button=1):
        self.xdata, self.ydata, self.inaxes, self.button = xdata, ydata, inaxes, button


def star_field(shape=(120, 160), stars=((30.0, 40.0, 5000.0), (100.0, 80.0, 9000.0),
                                        (130.0, 25.0, 3000.0), (60.0, 100.0, 7000.0)),
               sigma=1.7, seed=3):
    """A synthetic frame with Gaussian stars at known (x, y) and fluxes, plus sky noise."""
    rng = np.random.default_rng(seed)
    img = rng.normal(500.0, 5.0, shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for x, y, flux in stars:
        img += flux / (2 * np.pi * sigma ** 2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2)
                                                       / (2 * sigma ** 2))
    return img


def science_files(n):
    return [str(p) for p in sorted(require(HATP27).glob("*science_exposures*"))[:n]]


# ---------------------------------------------------------------------------------------
# import hygiene and front-end detection
# ---------------------------------------------------------------------------------------
def test_astrodart_import_loads_no_gui_library():
    code = ("import sys, astrodart, astrodart.ui.widgets, astrodart.ui.plotting\n"
            "bad = [m for m in ('matplotlib', 'ipywidgets', 'ipympl', 'photutils') "
            "if m in sys.modules]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.strip()
    assert out == "[]"


def test_building_a_widget_keeps_the_notebook_backend():
    """Importing ipympl would switch pyplot to the widget backend; the widgets must not."""
    code = ("import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt\n"
            "import numpy as np\n"
            "from astrodart.ui.widgets import region_picker\n"
            "p = region_picker(np.zeros((20, 30)), interactive=True)\n"
            "print(matplotlib.get_backend(), type(p._fig.canvas).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.split()
    assert out == ["Agg", "Canvas"]


def test_no_frontend_in_pytest(monkeypatch):
    assert widgets.frontend_available() is False
    picker = widgets.region_picker((100, 200))
    assert picker.widget is None and not picker.interactive
    assert picker._repr_mimebundle_() == {"text/plain": repr(picker)}
    monkeypatch.setenv("ASTRODART_HEADLESS", "1")
    assert widgets.frontend_available() is False


# ---------------------------------------------------------------------------------------
# region picker
# ---------------------------------------------------------------------------------------
def test_region_headless_default_is_validated_and_normalised():
    p = widgets.region_picker((1024, 1024), default=" [ 10:1000 , 20:990 ] ")
    assert p.section == p.value == "[10:1000,20:990]"
    assert p.bounds == (10, 1000, 20, 990)
    assert widgets.region_picker((1024, 1024), default="[1:1024,1:1024]").section == \
        "[1:1024,1:1024]"
    assert widgets.region_picker((50, 80)).section == "[1:80,1:50]"          # whole frame
    assert widgets.region_picker((50, 80), default="[*,5:10]").section == "[1:80,5:10]"


def test_region_headless_reads_only_the_header_of_a_file():
    f = science_files(1)[0]
    p = widgets.region_picker(f, default="[1:1024,1:1024]", interactive=False)
    assert p.shape == (1024, 1024) and p.section == "[1:1024,1:1024]"
    with pytest.raises(ValueError, match="1025"):
        widgets.region_picker(f, default="[1:1025,1:1024]", interactive=False)


@pytest.mark.parametrize("bad, message", [
    ("1:100,1:100", "not a FITS section"),
    ("[1:100;1:100]", "not a FITS section"),
    ("[a:b,1:10]", "not a FITS section"),
    ("[100:1,1:10]", "x range 100:1"),
    ("[0:10,1:10]", "x range 0:10"),
    ("[1:10,1:300]", r"y range 1:300 does not fit a frame of 160x120"),
    ("[1:161,1:10]", "x must satisfy"),
])
def test_region_malformed_or_outside_section_is_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        widgets.region_picker(np.zeros((120, 160)), default=bad)


def test_region_section_is_what_trim_cuts():
    data = np.arange(120 * 160, dtype=np.float32).reshape(120, 160)
    p = widgets.region_picker(data, default="[11:60,21:40]")
    out = trim(CCDData(data, unit="adu"), p.section)
    assert out.shape == (20, 50)
    np.testing.assert_array_equal(out.data, data[p.slices])
    assert out.data[0, 0] == data[20, 10]  # FITS pixel (11, 21) is numpy [20, 10]


def test_region_rectangle_callback_sets_the_section():
    p = widgets.region_picker(np.zeros((200, 300)), default="[1:10,1:10]", interactive=True)
    seen = []
    p.on_change(lambda picker: seen.append(picker.section))
    # a drag from (5.2, 7.8) to (120.4, 60.6), in data coordinates (pixel centres at ints)
    p._on_select(Event(5.2, 7.8), Event(120.4, 60.6))
    assert p.section == "[6:121,9:62]"
    # dragged right-to-left and top-to-bottom, and beyond the image: sorted and clipped
    p._on_select(Event(400.0, 250.0), Event(-30.0, 99.6))
    assert p.section == "[1:300,101:200]"
    assert seen == ["[6:121,9:62]", "[1:300,101:200]"]
    assert p._text.value == "[1:300,101:200]"
    assert "300 x 100 px" in p._status.value
    # the rectangle on the image follows the section (edges at pixel borders)
    np.testing.assert_allclose(p._selector.extents, (-0.5, 299.5, 99.5, 199.5))


def test_region_stray_click_is_ignored():
    p = widgets.region_picker(np.zeros((200, 300)), default="[21:280,11:190]", interactive=True)
    p._on_select(Event(50.0, 50.0), Event(50.2, 50.1))
    assert p.section == "[21:280,11:190]"
    assert "ignored" in p._status.value


def test_region_release_outside_axes_uses_selector_extents():
    p = widgets.region_picker(np.zeros((200, 300)), interactive=True)
    p._selector.extents = (9.5, 59.5, 19.5, 39.5)
    p._on_select(Event(10.0, 20.0), Event(None, None))
    assert p.section == "[11:60,21:40]"


def test_region_real_mouse_events_through_the_rectangle_selector():
    """Press, move, release as matplotlib events: the selector calls our callback."""
    p = widgets.region_picker(np.zeros((200, 300)), interactive=True)
    ax = p._selector.ax
    canvas = ax.figure.canvas

    def send(name, x, y):
        px, py = ax.transData.transform((x, y))
        canvas.callbacks.process(name, MouseEvent(name, canvas, px, py, button=1))

    send("button_press_event", 10, 20)
    send("motion_notify_event", 50, 60)
    send("motion_notify_event", 100.3, 120.2)
    send("button_release_event", 100.3, 120.2)
    assert p.section == "[11:101,21:121]"


def test_region_text_box_edits_and_rejects():
    p = widgets.region_picker(np.zeros((200, 300)), interactive=True)
    p._text.value = "[5:50, 6:60]"
    assert p.section == "[5:50,6:60]"
    np.testing.assert_allclose(p._selector.extents, (3.5, 49.5, 4.5, 59.5))
    p._text.value = "[1:400,1:10]"                       # outside: kept, error shown
    assert p.section == "[5:50,6:60]"
    assert "does not fit" in p._status.value and "#b00020" in p._status.value
    p._text.value = "nonsense"
    assert p.section == "[5:50,6:60]" and "not a FITS section" in p._status.value
    with pytest.raises(ValueError, match="does not fit"):
        p.set_section("[1:301,1:10]")


def test_widgets_without_ipympl_show_a_static_image(monkeypatch):
    def no_ipympl():
        raise ImportError("no ipympl")

    monkeypatch.setattr("astrodart.ui.base._ipympl_classes", no_ipympl)
    p = widgets.region_picker(np.zeros((50, 80)), default="[1:40,1:20]", interactive=True)
    image = p._fig.widget
    assert image.value[:8] == b"\x89PNG\r\n\x1a\n"
    before = image.value
    p._text.value = "[5:60,5:45]"                         # the controls still work
    assert p.section == "[5:60,5:45]" and image.value != before
    s = widgets.star_picker(star_field(), STARS, interactive=True)
    s._target.value = 2
    assert s.target_index == 2 and s._fig.widget.value[:4] == b"\x89PNG"


def test_region_widget_layout_on_a_real_frame():
    f = science_files(1)[0]
    p = widgets.region_picker(f, default="[101:900,101:900]", interactive=True)
    assert p.shape == (1024, 1024)
    assert "astrodart-region-picker" in p.widget._dom_classes
    bundle = p._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert p._selector.ax.get_title().startswith("Lab_1_HAT-P-27b_science")


# ---------------------------------------------------------------------------------------
# combine picker
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", widgets.COMBINE_METHODS)
@pytest.mark.parametrize("clipping, extra", [
    (None, {}),
    ("sigclip", {"minclip": 2.0, "maxclip": 5.0}),
    ("extrema_clipping", {"nlow": 1, "nhigh": 2}),
    ("minmax", {"minmax_clip_min": 100.0, "minmax_clip_max": 60000.0}),
])
def test_combine_kwargs_for_each_method_and_clipping(method, clipping, extra):
    p = widgets.combine_picker(method, clipping, minclip=2, maxclip=5, nlow=1, nhigh=2,
                               minmax_clip_min=100, minmax_clip_max=60000, memory_limit=5e8)
    assert p.widget is None
    assert p.kwargs == p.value == {"combining_method": method, "clipping_method": clipping,
                                   **extra, "memory_limit": 5e8}
    assert set(p.kwargs) <= IMAGE_COMBINATION_ARGS


def test_combine_defaults_and_spellings():
    assert widgets.combine_picker().kwargs == {"combining_method": "median",
                                               "clipping_method": None, "memory_limit": 1e9}
    p = widgets.combine_picker("Average", "none")
    assert p.kwargs["combining_method"] == "average" and p.kwargs["clipping_method"] is None
    assert widgets.combine_picker("median", "sigclip").kwargs["minclip"] == 3.0


def test_combine_weights_and_scale_pass_through():
    w = widgets.combine_picker("weighted", weights=[1, 2, 3]).kwargs
    assert w["weights"] == [1.0, 2.0, 3.0]
    s = widgets.combine_picker("scaled", scale=[1.0, 0.5]).kwargs
    assert s["scale"] == [1.0, 0.5] and "weights" not in s
    assert "weights" not in widgets.combine_picker("median", weights=[1, 2]).kwargs


@pytest.mark.parametrize("args, kwargs, message", [
    (("mean",), {}, "combining_method='mean' is not known"),
    (("median", "sigma"), {}, "clipping_method='sigma' is not known"),
    (("median", "sigclip"), {"minclip": 0}, "minclip=0.0 must be a positive"),
    (("median", "extrema_clipping"), {"nlow": -1}, "nlow=-1 must be a whole number"),
    (("median", "extrema_clipping"), {"nhigh": 1.5}, "nhigh=1.5 must be a whole number"),
    (("median", "minmax"), {"minmax_clip_min": 10, "minmax_clip_max": 5}, "must be below"),
    (("median", "minmax"), {"minmax_clip_min": None, "minmax_clip_max": None}, "needs"),
    (("median",), {"memory_limit": 0}, "memory_limit=0.0 must be a positive"),
])
def test_combine_invalid_settings_are_clear_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        widgets.combine_picker(*args, **kwargs)


def test_combine_open_minmax_bound_and_unknown_setting():
    p = widgets.combine_picker("median", "minmax", minmax_clip_min=None, minmax_clip_max=6e4)
    assert p.kwargs == {"combining_method": "median", "clipping_method": "minmax",
                        "minmax_clip_max": 6e4, "memory_limit": 1e9}
    with pytest.raises(ValueError, match="unknown setting"):
        p.update(low_thresh=3)


def test_combine_widget_enables_only_the_relevant_fields():
    p = widgets.combine_picker(interactive=True)
    f = p._fields
    clip_fields = ("minclip", "maxclip", "nlow", "nhigh", "minmax_clip_min", "minmax_clip_max")
    assert all(f[k].disabled for k in clip_fields)
    expected = {"sigclip": {"minclip", "maxclip"}, "extrema_clipping": {"nlow", "nhigh"},
                "minmax": {"minmax_clip_min", "minmax_clip_max"}, "none": set()}
    for choice, enabled in expected.items():
        f["clipping_method"].value = choice
        assert {k for k in clip_fields if not f[k].disabled} == enabled
        assert p.kwargs["clipping_method"] == (None if choice == "none" else choice)
        assert f"clipping_method={p.kwargs['clipping_method']!r}".replace("'", "&#x27;") in \
            p._preview.value
    assert not f["memory_limit"].disabled and not f["combining_method"].disabled


def test_combine_widget_values_reach_the_kwargs():
    p = widgets.combine_picker(interactive=True)
    seen = []
    p.on_change(lambda picker: seen.append(dict(picker.kwargs)))
    p._fields["clipping_method"].value = "sigclip"
    p._fields["minclip"].value = 2.5
    p._fields["memory_limit"].value = 250          # MB in the widget, bytes in kwargs
    p._fields["combining_method"].value = "sum"
    assert p.kwargs == {"combining_method": "sum", "clipping_method": "sigclip",
                        "minclip": 2.5, "maxclip": 3.0, "memory_limit": 2.5e8}
    assert len(seen) == 4
    # 'weighted' without weights: allowed, with a note saying what image_combination needs
    p._fields["combining_method"].value = "weighted"
    assert "needs weights" in p._note.value
    # an invalid value is refused, shown, and the field goes back to the valid one
    p._fields["clipping_method"].value = "minmax"
    p._fields["minmax_clip_min"].value = 70000
    assert p.kwargs["minmax_clip_min"] == 0.0
    assert "must be below" in p._note.value
    assert p._fields["minmax_clip_min"].value == 0.0
    # programmatic updates show in the widget
    p.update(clipping_method="extrema_clipping", nhigh=3)
    assert p._fields["clipping_method"].value == "extrema_clipping"
    assert p._fields["nhigh"].value == 3 and not p._fields["nhigh"].disabled


# ---------------------------------------------------------------------------------------
# star picker
# ---------------------------------------------------------------------------------------
STARS = np.array([[30.0, 40.0], [100.0, 80.0], [130.0, 25.0], [60.0, 100.0]])


def test_star_headless_arguments():
    p = widgets.star_picker(np.zeros((120, 160)), STARS, target=1, comparisons=[3, 0])
    assert p.widget is None
    assert p.target_index == 1 and p.target_position == (100.0, 80.0)
    assert p.comparison_indices == [3, 0]
    assert p.comparison_positions == [(60.0, 100.0), (30.0, 40.0)]
    assert p.value == {"target_index": 1, "target_position": (100.0, 80.0),
                       "comparison_indices": [3, 0],
                       "comparison_positions": [(60.0, 100.0), (30.0, 40.0)]}
    assert p.kwargs == {"target_index": 1, "comparison_stars_indeces": [3, 0]}
    none = widgets.star_picker(np.zeros((120, 160)), STARS)
    assert none.target_index is None and none.target_position is None
    assert none.comparison_indices == []


@pytest.mark.parametrize("kwargs, message", [
    ({"target": 4}, r"star number 4 does not exist; the stars are numbered 0\.\.3"),
    ({"target": 1, "comparisons": [1]}, "is the target"),
    ({"comparisons": [-1]}, "does not exist"),
    ({"target": 1.5}, "must be an integer"),
])
def test_star_invalid_numbers(kwargs, message):
    with pytest.raises(ValueError, match=message):
        widgets.star_picker(np.zeros((120, 160)), STARS, **kwargs)


def test_star_list_as_table_and_empty_list():
    t = Table({"xcentroid": STARS[:, 0], "ycentroid": STARS[:, 1], "flux": [1, 2, 3, 4]})
    p = widgets.star_picker(np.zeros((120, 160)), t, target=2)
    assert p.target_position == (130.0, 25.0)
    with pytest.raises(ValueError, match="no stars to choose from"):
        widgets.star_picker(np.zeros((120, 160)), [])


def test_star_detection_finds_the_stars_brightest_first():
    img = star_field()
    p = widgets.star_picker(img, interactive=False, fwhm=4.0, threshold=10.0)
    assert len(p.stars) == 4
    # brightest first: fluxes 9000, 7000, 5000, 3000
    np.testing.assert_allclose(p.stars, [[100, 80], [60, 100], [30, 40], [130, 25]], atol=0.2)


def test_star_clicks_snap_to_the_nearest_star():
    p = widgets.star_picker(star_field(), STARS, interactive=True, snap_radius=10)
    seen = []
    p.on_change(lambda picker: seen.append((picker.target_index, list(picker.comparison_indices))))
    ax = p._ax
    p._on_click(Event(103.0, 77.0, ax))                  # near star 1, target mode
    assert p.target_index == 1 and p._target.value == 1
    p._mode.value = "comparison"
    p._on_click(Event(58.0, 104.0, ax))                  # star 3
    p._on_click(Event(31.0, 41.0, ax))                   # star 0
    assert p.comparison_indices == [3, 0] and p._comparisons.value == (3, 0)
    p._on_click(Event(59.0, 99.0, ax))                   # star 3 again: removed
    assert p.comparison_indices == [0]
    p._on_click(Event(100.0, 80.0, ax))                  # the target: refused
    assert p.comparison_indices == [0] and "is the target" in p._status.value
    p._on_click(Event(10.0, 110.0, ax))                  # far from any star: nothing
    assert "no star within 10 px" in p._status.value
    p._on_click(Event(130.0, 25.0, ax, button=3))        # right button: ignored
    p._on_click(Event(130.0, 25.0, None))                # outside the axes: ignored
    assert p.comparison_indices == [0] and p.target_index == 1
    assert seen == [(1, []), (1, [3]), (1, [3, 0]), (1, [0])]
    # target and comparison marks are drawn on the image
    labels = {t.get_text() for t in ax.texts}
    assert {"T", "C1"} <= labels and "C2" not in labels


def test_star_clicks_are_ignored_while_zooming():
    p = widgets.star_picker(star_field(), STARS, interactive=True)
    lock_owner = object()
    p._fig.canvas.widgetlock(lock_owner)                 # what the zoom/pan tools do
    p._on_click(Event(100.0, 80.0, p._ax))
    assert p.target_index is None
    p._fig.canvas.widgetlock.release(lock_owner)
    p._on_click(Event(100.0, 80.0, p._ax))
    assert p.target_index == 1


def test_star_numbered_lists_drive_the_choice():
    p = widgets.star_picker(star_field(), STARS, interactive=True, target=0)
    p._target.value = 2
    assert p.target_index == 2
    p._comparisons.value = (1, 3)
    assert p.comparison_indices == [1, 3]
    p._comparisons.value = (3, 1, 0)                      # order of earlier choices kept
    assert p.comparison_indices == [1, 3, 0]
    p._target.value = 3                                   # the new target leaves the comparisons
    assert p.target_index == 3 and p.comparison_indices == [1, 0]
    assert p._comparisons.value == (1, 0)
    p._target.value = -1                                  # "(none)"
    assert p.target_index is None
    assert p.kwargs == {"target_index": None, "comparison_stars_indeces": [1, 0]}


def test_star_real_mouse_click_through_matplotlib():
    p = widgets.star_picker(star_field(), STARS, interactive=True)
    canvas = p._fig.canvas
    px, py = p._ax.transData.transform((61.0, 99.0))
    canvas.callbacks.process("button_press_event",
                             MouseEvent("button_press_event", canvas, px, py, button=1))
    assert p.target_index == 3


# ---------------------------------------------------------------------------------------
# frame browser
# ---------------------------------------------------------------------------------------
def test_frames_headless_kept_list():
    files = [f"/night/f{i}.fits" for i in range(5)]
    b = widgets.frame_browser(files, flagged=[1, "f3.fits"])
    assert b.widget is None
    assert b.kept == b.value == ["/night/f0.fits", "/night/f2.fits", "/night/f4.fits"]
    assert b.flagged == ["/night/f1.fits", "/night/f3.fits"]
    b.flag("/night/f1.fits", False)
    b.flag(4)
    assert b.kept == ["/night/f0.fits", "/night/f1.fits", "/night/f2.fits"]
    with pytest.raises(ValueError, match="not one of the frames"):
        b.flag("other.fits")
    with pytest.raises(ValueError, match="does not exist"):
        b.flag(7)
    with pytest.raises(ValueError, match="no frames"):
        widgets.frame_browser([])


def test_frames_quality_table_shapes():
    files = ["/n/a.fits", "/n/b.fits", "/n/c.fits"]
    by_metric = {"fwhm": [3.0, 3.5, 6.0], "sky": [100, 110, 400]}
    rows = widgets.frame_browser(files, by_metric).quality
    assert rows[2] == {"fwhm": 6.0, "sky": 400}
    by_file = {"c.fits": {"fwhm": 6.0}, "a.fits": {"fwhm": 3.0}, "/n/b.fits": {"fwhm": 3.5}}
    assert [r["fwhm"] for r in widgets.frame_browser(files, by_file).quality] == [3.0, 3.5, 6.0]
    table = Table({"file": ["c.fits", "a.fits", "b.fits"], "fwhm": [6.0, 3.0, 3.5]})
    assert [r["fwhm"] for r in widgets.frame_browser(files, table).quality] == [3.0, 3.5, 6.0]
    assert widgets.frame_browser(files, Table(by_metric)).quality[1] == {"fwhm": 3.5, "sky": 110}
    with pytest.raises(ValueError, match="one row per frame"):
        widgets.frame_browser(files, {"fwhm": [1.0, 2.0]})
    with pytest.raises(ValueError, match="no row for"):
        widgets.frame_browser(files, Table({"file": ["a.fits", "b.fits", "x.fits"],
                                            "fwhm": [1, 2, 3]}))


def test_frames_start_from_a_quality_table_verdict():
    table = Table({"file": ["/n/a.fits", "/n/b.fits", "/n/c.fits"], "fwhm": [3.0, 9.0, 3.1],
                   "flags": ["", "fwhm", ""], "good": [True, False, True]})
    b = widgets.frame_browser(table)                      # files and quality from the table
    assert b.files == ["/n/a.fits", "/n/b.fits", "/n/c.fits"]
    assert b.kept == ["/n/a.fits", "/n/c.fits"] and b.quality[1]["flags"] == "fwhm"
    assert widgets.frame_browser(b.files, table, flagged=[]).kept == b.files  # overridden


def test_frames_widget_steps_flags_and_shows_quality():
    frames = [np.full((40, 60), 100.0 * (i + 1)) + np.random.default_rng(i).normal(0, 1, (40, 60))
              for i in range(4)]
    b = widgets.frame_browser(frames, {"fwhm": [3.1, 3.2, 7.9, 3.0]}, interactive=True)
    assert "astrodart-frame-browser" in b.widget._dom_classes
    b._slider.value = 2
    assert b.index == 2
    assert b._im.get_array().mean() == pytest.approx(300.0, abs=1)
    lo, hi = b._im.get_clim()
    assert lo < 300 < hi                                  # zscale of the frame shown
    assert "<td>7.9</td>" in b._table.value
    b._flag.value = True
    assert b.flags == [False, False, True, False]
    assert b.kept == [frames[0], frames[1], frames[3]]
    assert "FLAGGED" in b._info.value and "3 of 4 kept" in b._info.value
    b.show(3)
    assert b._flag.value is False and b._slider.value == 3
    b.flag(3)
    assert b._flag.value is True and len(b.kept) == 2


def test_frames_widget_on_real_files():
    files = science_files(3)
    b = widgets.frame_browser(files, {"fwhm": [3.0, 3.1, 3.2]}, flagged=[files[2]],
                              interactive=True, cache_size=2)
    b.show(1)
    b.show(2)
    assert b._ax.get_title() == files[2].split("/")[-1]
    assert b._flag.value is True
    assert b.kept == files[:2]
    assert len(b._cache) == 2


# ---------------------------------------------------------------------------------------
# plotting helpers
# ---------------------------------------------------------------------------------------
def test_image_array_inputs():
    data = np.arange(12, dtype=np.int16).reshape(3, 4)
    assert plotting.image_array(data).dtype.kind == "f"
    assert plotting.image_array(CCDData(data.astype(float), unit="adu")).shape == (3, 4)
    with pytest.raises(ValueError, match="2-D image"):
        plotting.image_array(np.zeros((2, 3, 4)))


def test_zscale_limits_ignore_hot_pixels_and_nan():
    img = star_field()
    img[5, 5] = 1e9
    img[6, 6] = np.nan
    lo, hi = plotting.zscale_limits(img)
    assert 450 < lo < 500 < hi < 560
    assert plotting.zscale_limits(np.full((10, 10), np.nan)) == (0.0, 1.0)
    lo, hi = plotting.zscale_limits(np.full((10, 10), 7.0))
    assert lo < 7.0 < hi


def test_as_positions_variants():
    expect = np.array([[1.0, 2.0], [3.0, 4.0]])
    for stars in (expect, [(1, 2), (3, 4)], {"x": [1, 3], "y": [2, 4]},
                  Table({"x_centroid": [1, 3], "y_centroid": [2, 4]}),
                  Table({"xcentroid": [1, 3], "ycentroid": [2, 4]})):
        np.testing.assert_array_equal(plotting.as_positions(stars), expect)
    assert plotting.as_positions((5, 6)).shape == (1, 2)
    assert plotting.as_positions([]).shape == (0, 2)
    with pytest.raises(ValueError, match="no position columns"):
        plotting.as_positions(Table({"ra": [1.0], "dec": [2.0]}))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        plotting.as_positions(np.zeros((3, 3)))


def test_show_image_on_a_real_frame():
    f = science_files(1)[0]
    im = plotting.show_image(f, colorbar=True)
    ax = im.axes
    assert ax.get_title() == f.split("/")[-1]
    assert im.get_clim() == pytest.approx(plotting.zscale_limits(f))
    assert im.origin == "lower" and im.get_array().shape == (1024, 1024)
    assert len(ax.figure.axes) == 2                       # image + colour bar
    _, ax2 = plt.subplots()
    im2 = plotting.show_image(np.ones((5, 5)), ax=ax2, title="flat", vmin=0, vmax=2)
    assert im2.axes is ax2 and ax2.get_title() == "flat" and im2.get_clim() == (0, 2)


def test_show_histogram_thumbnails_and_marks(tmp_path):
    img = star_field()
    ax = plotting.show_histogram(CCDData(img, unit="adu"), title="sky")
    assert ax.get_xlabel() == "pixel value [adu]" and len(ax.lines) == 2  # zscale marks
    fig = plotting.show_thumbnails([img, img * 2, img * 3], titles=["a", "b", "c"], ncols=2,
                                   flagged=[1])
    axes = fig.axes
    assert [a.get_title() for a in axes[:3]] == ["a", "b", "c"]
    assert not axes[3].axison                             # empty slot switched off
    assert any(t.get_text() == "flagged" for t in axes[1].texts)
    with pytest.raises(ValueError, match="2 titles for 3 images"):
        plotting.show_thumbnails([img] * 3, titles=["a", "b"])
    im = plotting.show_image(img)
    artists = plotting.mark_stars(im.axes, STARS, start=1)
    assert len(artists) == 8 and [t.get_text() for t in im.axes.texts] == ["1", "2", "3", "4"]
    for a in artists:
        a.remove()
    assert not im.axes.texts
    fig.savefig(tmp_path / "thumbs.png")
    assert (tmp_path / "thumbs.png").stat().st_size > 1000
