"""The widgets in a real browser: JupyterLab on localhost, driven by headless Chromium.

A notebook written into ``tmp_path`` shows a region picker, a combine-method picker,
a star picker and a frame browser. Chromium (Debian's ``chromium`` package, driven through playwright's Python
package with ``executable_path``; playwright never downloads a browser here) opens
it, runs all cells, and checks that

* the ipywidgets and the ipympl canvas rendered (DOM elements present and sized);
* changing the clipping dropdown enables the sigma fields and changes the preview
  computed in the kernel, and a re-run cell prints the new keyword arguments;
* dragging a rectangle on the ipympl canvas changes the section text box (the
  RectangleSelector callback ran in the kernel) and ``.section`` printed by a cell;
* a click beside a star on the star picker's canvas makes that star the target;
* the frame browser's next button and flag checkbox change the kept frames;
* a re-run cell prints the new values held in the kernel.

Screenshots are saved to ``benchmarks/_work/browser_*.png`` (and into ``tmp_path``)
for a person to look at.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("ASTRODART_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = REPO / "benchmarks" / "_work" / "browser_widgets.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]

pytestmark = pytest.mark.browser

CELLS = [
    (  # no %matplotlib widget: the widgets bring their own ipympl canvas
        "import numpy as np\n"
        "from astrodart.ui.widgets import combine_picker, frame_browser, region_picker, star_picker\n"
        "rng = np.random.default_rng(1)\n"
        "img = rng.normal(1000.0, 10.0, (200, 300))\n"
        "yy, xx = np.mgrid[:200, :300]\n"
        "for x0, y0, a in [(60, 50, 3000.0), (150, 120, 6000.0), (240, 160, 4000.0)]:\n"
        "    img += a * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / 8.0)"),
    ("rp = region_picker(img, default='[21:280,11:190]', title='synthetic frame')\n"
     "rp"),
    ("cp = combine_picker('median')\n"
     "cp"),
    ("sp = star_picker(img, fwhm=3.0, threshold=10.0, snap_radius=12)\n"
     "sp"),
    ("fb = frame_browser([img, img * 1.2, img * 0.8], {'fwhm': [3.0, 3.1, 8.2]})\n"
     "fb"),
    ("sp._ax.apply_aspect()  # as drawn: imshow's equal aspect shrinks the axes box\n"
     "x, y = sp._ax.transData.transform(sp.stars[2])  # star 2 in figure pixels\n"
     "print('STARPX', x, sp._fig.figure.bbox.height - y)\n"
     "print('KWARGS', cp.kwargs)\n"
     "print('SECTION', rp.section)\n"
     "print('TARGET', sp.target_index)\n"
     "print('KEPT', len(fb.kept))"),
]


def _notebook(path: Path) -> None:
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"cell{i}",
                   "metadata": {}, "outputs": [], "source": src}
                  for i, src in enumerate(CELLS)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on a free localhost port, with its own config and runtime
    folders under ``tmp_path``; stopped (with its kernels) at the end."""
    root = tmp_path / "root"
    root.mkdir()
    _notebook(root / "widgets.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    # no "get Jupyter news?" pop-up over the notebook (and no request for news)
    settings = tmp_path / "jsettings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    settings = tmp_path / "jsettings"
    env = dict(os.environ)
    env.update({
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jconfig"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jruntime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "jworkspaces"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "MPLBACKEND": "agg",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    })
    env.pop("ASTRODART_HEADLESS", None)
    log = tmp_path / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True",
           "--LabApp.expose_app_in_browser=True",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{base}/api/status?token={token}", proc, log)
        yield {"base": base, "token": token, "log": log}
    finally:
        proc.terminate()  # jupyter_server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


# JupyterLab (exposed as window.jupyterapp by --LabApp.expose_app_in_browser) has the
# notebook open and its kernel connected and idle.
KERNEL_READY = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && k.connectionStatus === 'connected';
}"""

# The "Run All Cells" command (as in the Run menu); resolves when the cells have run,
# bounded so that a stuck kernel fails the test instead of hanging it.
RUN_ALL = """async () => {
  const run = window.jupyterapp.commands.execute('notebook:run-all-cells').then(() => 'done');
  const limit = new Promise(resolve => setTimeout(() => resolve('timed out after 90 s'), 90000));
  try { return await Promise.race([run, limit]); } catch (e) { return 'error: ' + e; }
}"""


def _cell(page, index: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(index)


def _save(shot: Path, name: str) -> None:
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SCREENSHOT.with_name(name))


def test_widgets_render_and_respond_in_jupyterlab(jupyterlab, tmp_path):
    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} missing: apt-get install -y chromium chromium-driver "
        "(or set ASTRODART_CHROMIUM to a Chromium binary)")
    from playwright.sync_api import expect, sync_playwright

    url = f"{jupyterlab['base']}/lab/tree/widgets.ipynb?token={jupyterlab['token']}"
    profile = tmp_path / "chromium-profile"
    last = len(CELLS) - 1
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1500})
        page = browser.pages[0] if browser.pages else browser.new_page()
        try:
            page.set_default_timeout(60_000)
            page.goto(url)
            # the notebook is open and its kernel connected and idle
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            page.wait_for_function("() => window.jupyterapp !== undefined")
            page.wait_for_function(KERNEL_READY)
            ran = page.evaluate(RUN_ALL)
            assert ran == "done", f"'Run All Cells' did not finish: {ran}"
            out = _cell(page, last).locator(".jp-OutputArea")
            expect(out).to_contain_text("KEPT 3")
            printed = out.inner_text()
            assert "'clipping_method': None" in printed and "TARGET None" in printed

            # rendered: an ipympl canvas in each image widget, and the ipywidgets
            for widget in ("region-picker", "star-picker", "frame-browser"):
                canvas = page.locator(f".astrodart-{widget} .jupyter-matplotlib canvas").first
                canvas.scroll_into_view_if_needed()
                expect(canvas).to_be_visible()
                box = canvas.bounding_box()
                assert box is not None and box["width"] > 200 and box["height"] > 150, widget
            section_box = page.locator(".astrodart-region-picker .astrodart-section input")
            expect(section_box).to_have_value("[21:280,11:190]")
            clipping = page.locator(".astrodart-combine-picker .astrodart-clipping-method select")
            minclip = page.locator(".astrodart-combine-picker .astrodart-minclip input")
            expect(minclip).to_be_disabled()

            # respond (1): the clipping dropdown enables the sigma fields and the preview
            # computed in the kernel follows
            clipping.scroll_into_view_if_needed()
            clipping.select_option("sigclip")
            expect(minclip).to_be_enabled()
            expect(page.locator(".astrodart-combine-picker .astrodart-nlow input")).to_be_disabled()
            expect(page.locator(".astrodart-combine-preview")).to_contain_text(
                "clipping_method='sigclip'")

            # respond (2): drag a rectangle on the region picker's image
            canvas = page.locator(".astrodart-region-picker .jupyter-matplotlib canvas").last
            box = canvas.bounding_box()
            canvas.hover(position={"x": box["width"] * 0.40, "y": box["height"] * 0.40})
            box = canvas.bounding_box()  # after any scrolling the hover did
            x0, y0 = box["x"] + box["width"] * 0.40, box["y"] + box["height"] * 0.40
            page.mouse.down()
            for k in range(1, 11):
                page.mouse.move(x0 + 12 * k, y0 + 9 * k)
                time.sleep(0.03)
            page.mouse.up()
            expect(section_box).not_to_have_value("[21:280,11:190]", timeout=20_000)
            new_section = section_box.input_value()
            assert re.fullmatch(r"\[\d+:\d+,\d+:\d+\]", new_section), new_section
            page.locator(".astrodart-region-picker").scroll_into_view_if_needed()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(tmp_path / "browser_widgets.png"))
            _save(tmp_path / "browser_widgets.png", SCREENSHOT.name)

            # respond (3): click next to star 2 on the star picker's image; the click
            # snaps to it and it becomes the target
            m = re.search(r"STARPX ([\d.]+) ([\d.]+)", printed)
            canvas = page.locator(".astrodart-star-picker .jupyter-matplotlib canvas").last
            canvas.click(position={"x": float(m.group(1)) + 3, "y": float(m.group(2)) - 2})
            status = page.locator(".astrodart-star-picker .astrodart-status")
            expect(status).to_contain_text("target: 2;", timeout=20_000)
            page.wait_for_timeout(1500)  # let ipympl deliver the redrawn image
            page.locator(".astrodart-star-picker").screenshot(
                path=str(tmp_path / "browser_star_picker.png"))
            _save(tmp_path / "browser_star_picker.png", "browser_star_picker.png")

            # respond (4): the frame browser's next button and flag checkbox
            browser_w = page.locator(".astrodart-frame-browser")
            browser_w.scroll_into_view_if_needed()
            browser_w.get_by_role("button", name="▶").click()
            expect(page.locator(".astrodart-frame-info")).to_contain_text("frame 1: kept")
            page.locator(".astrodart-flag input[type=checkbox]").check()
            expect(page.locator(".astrodart-frame-info")).to_contain_text("2 of 3 kept")
            expect(page.locator(".astrodart-quality-row")).to_contain_text("3.1")
            page.wait_for_timeout(1500)
            browser_w.screenshot(path=str(tmp_path / "browser_frame_browser.png"))
            _save(tmp_path / "browser_frame_browser.png", "browser_frame_browser.png")

            # re-run the printing cell: the kernel holds what was clicked
            _cell(page, last).locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            expect(out).to_contain_text("'clipping_method': 'sigclip'")
            expect(out).to_contain_text(f"SECTION {new_section}")
            expect(out).to_contain_text("TARGET 2")
            expect(out).to_contain_text("KEPT 2")
        except Exception:
            try:
                page.screenshot(path=str(tmp_path / "browser_failure.png"))
                _save(tmp_path / "browser_failure.png", "browser_failure.png")
            except Exception as exc:  # the page itself may be gone; the first error matters
                print(f"no failure screenshot: {exc}", file=sys.stderr)
            raise
        finally:
            browser.close()
