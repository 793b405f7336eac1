"""Shared fixtures: the real sample data, and a synthetic camera with known truth.

The real-data fixtures locate the sample nights through ``tests/datapaths.py`` (the
package's own locator) and skip, naming what is missing and how to get it, when a night
is not on this machine; ``ASTRODART_REQUIRE_SAMPLE_DATA=1`` makes that a failure.

:class:`SyntheticCamera` simulates a CCD whose every ingredient is known: a bias level
with a column pattern and a gradient, dark current with hot pixels, a vignetted flat
with dust donuts and pixel response non-uniformity, Poisson and read noise, cosmic rays
and stars. Frames are written as raw uint16 FITS (``BZERO=32768``) with the header
keywords of a real camera, so the whole file-level chain can run on them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
# the tests download a missing sample night only when the user allows it: by default
# they look in the usual places (and the cache) and skip what is not there
os.environ.setdefault("ASTRODART_OFFLINE", "1")

from datapaths import HATP27, SHARED, missing  # noqa: E402  (after the environment)

#: Fixtures that hand a test the real sample data: such a test is marked ``sample_data``.
SAMPLE_FIXTURES = {"shared_data", "hatp27_dir", "guide_root", "run_guide", "real_night"}


def _reads_sample_nights(item) -> bool:
    """Whether a test reads the real nights: a sample-data fixture, or a sample path or
    the locator's helpers named in the test's own code (or a fixture of its module)."""
    if SAMPLE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    names = {"HATP27", "HATP32", "M67", "FEDER", "SHARED", "require", "copy_night"}
    codes = [getattr(item, "function", None)]
    module = getattr(item, "module", None)
    for fixture in getattr(item, "fixturenames", ()):
        codes.append(getattr(module, fixture, None))
    for fn in codes:
        code = getattr(getattr(fn, "__wrapped__", fn), "__code__", None)
        if code is not None and names & set(code.co_names):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    """Mark every test that reads the real sample nights ``sample_data``."""
    for item in items:
        if _reads_sample_nights(item):
            item.add_marker(pytest.mark.sample_data)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder holding the sample nights; the test is skipped (with the reason) if absent."""
    if SHARED is None:
        missing(HATP27)
    return SHARED


@pytest.fixture(scope="session")
def hatp27_dir() -> Path:
    """The HAT-P-27b night (10 bias, 10 darks, 10 dome flats, 100 science frames)."""
    if not HATP27.is_dir():
        missing(HATP27)
    if len(list(HATP27.glob("*science_exposures*"))) < 20:
        missing(HATP27, f"{HATP27}: HAT-P-27b sample night incomplete (fewer than 20 science frames)")
    return HATP27


# ---------------------------------------------------------------------------------------
# synthetic camera
# ---------------------------------------------------------------------------------------
def gaussian_star(shape, x, y, flux, fwhm):
    """A circular Gaussian star of total ``flux`` (e-) centred at ``(x, y)`` (0-based)."""
    sigma = fwhm / 2.3548
    r = int(np.ceil(5 * sigma))
    out = np.zeros(shape, np.float64)
    x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, shape[1])
    y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, shape[0])
    yy, xx = np.mgrid[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = (
        flux / (2 * np.pi * sigma**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    )
    return out


@dataclass
class SyntheticCamera:
    """A CCD with known bias, dark, flat, gain and read noise (see the module docstring).

    All truth arrays have shape ``(ny, nx)``; ``bias_adu`` in ADU, ``dark_rate`` in e-/s,
    ``flat`` normalised to its central median (what :func:`normalise_flat` recovers).
    """

    ny: int = 256
    nx: int = 256
    gain: float = 2.0  # e-/ADU
    read_noise: float = 12.0  # e-
    seed: int = 1
    bias_adu: np.ndarray = field(init=False)
    dark_rate: np.ndarray = field(init=False)
    hot: np.ndarray = field(init=False)
    flat: np.ndarray = field(init=False)
    dead: np.ndarray = field(init=False)

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        ny, nx = self.ny, self.nx
        yy, xx = np.mgrid[0:ny, 0:nx]
        # bias: level, column pattern, a gentle gradient
        self.bias_adu = (1000.0 + rng.normal(0, 3.0, nx)[None, :] + 0.01 * yy).astype(np.float64)
        # dark current: 0.5 e-/s with 2 % pixel scatter, plus 0.3 % hot pixels (8-400 e-/s)
        self.dark_rate = 0.5 * (1 + 0.02 * rng.standard_normal((ny, nx)))
        self.hot = rng.random((ny, nx)) < 0.003
        self.dark_rate[self.hot] = np.exp(rng.uniform(np.log(8), np.log(400), self.hot.sum()))
        # flat: vignetting, dust donuts, 0.8 % PRNU, a few dead pixels
        r2 = ((xx - nx / 2) ** 2 + (yy - ny / 2) ** 2) / (max(nx, ny) / 2) ** 2
        flat = 1 - 0.25 * r2
        for _ in range(4):
            cx, cy = rng.uniform(0.15, 0.85) * nx, rng.uniform(0.15, 0.85) * ny
            rad, width, depth = rng.uniform(8, 16), rng.uniform(3, 5), rng.uniform(0.05, 0.10)
            rr = np.hypot(xx - cx, yy - cy)
            flat *= 1 - depth * np.exp(-0.5 * ((rr - rad) / width) ** 2)
        flat *= 1 + 0.008 * rng.standard_normal((ny, nx))
        self.dead = np.zeros((ny, nx), bool)
        self.dead[rng.integers(0, ny, 6), rng.integers(0, nx, 6)] = True
        flat[self.dead] = 0.2
        c = (slice(ny // 4, ny - ny // 4), slice(nx // 4, nx - nx // 4))
        self.flat = flat / np.median(flat[c])
        self.rng = rng

    # -- signal in electrons -------------------------------------------------------------
    def stars(self, n=40, fwhm=3.5, flux_range=(3e3, 4e5), margin=12):
        """Star list ``(x, y, flux)`` and their image in e- (before the flat)."""
        rng = self.rng
        xs = rng.uniform(margin, self.nx - margin, n)
        ys = rng.uniform(margin, self.ny - margin, n)
        fl = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), n))
        img = np.zeros((self.ny, self.nx))
        for x, y, f in zip(xs, ys, fl):
            img += gaussian_star((self.ny, self.nx), x, y, f, fwhm)
        return np.c_[xs, ys, fl], img

    def cosmic_rays(self, n, avoid=None, min_dist=8.0, amp_range=(500, 8000)):
        """Cosmic-ray hits: list of pixel-index arrays and their image in e-.

        Shapes: single pixels, pairs and short tracks (3-6 px, any direction); the
        deposit per pixel is log-uniform in ``amp_range`` (e-). Every pixel of a hit is
        kept ``min_dist`` px from the positions in ``avoid`` (stars); hits start 10 px
        apart.
        """
        rng = self.rng
        img = np.zeros((self.ny, self.nx))
        hits, centres = [], []
        while len(hits) < n:
            x, y = rng.uniform(8, self.nx - 8), rng.uniform(8, self.ny - 8)
            kind = rng.random()
            length = 1 if kind < 0.4 else (2 if kind < 0.7 else rng.integers(3, 7))
            angle = rng.uniform(0, 2 * np.pi)
            px = np.unique(
                np.array(
                    [
                        (int(y + k * np.sin(angle)), int(x + k * np.cos(angle)))
                        for k in range(length)
                    ]
                ),
                axis=0,
            )
            if (
                avoid is not None
                and len(avoid)
                and min(np.min(np.hypot(avoid[:, 0] - p[1], avoid[:, 1] - p[0])) for p in px)
                < min_dist
            ):
                continue
            if centres and np.min(np.hypot(*(np.array(centres) - [x, y]).T)) < 10:
                continue
            amp = np.exp(rng.uniform(np.log(amp_range[0]), np.log(amp_range[1])))
            img[px[:, 0], px[:, 1]] += amp * rng.uniform(0.6, 1.0, len(px))
            hits.append(px)
            centres.append((x, y))
        return hits, img

    # -- raw frames ------------------------------------------------------------------------
    def expose(
        self, exptime: float, photons=None, sky: float = 0.0, cosmics=None, flat_lamp: float = 0.0
    ) -> np.ndarray:
        """One raw frame in ADU (float, before quantisation).

        ``photons`` (e-, image) and ``sky`` (e-/px) are multiplied by the flat;
        ``flat_lamp`` (e-/px) is a uniform illumination (for flats); ``cosmics`` (e-) are
        added after the flat (they hit the silicon directly).
        """
        rng = self.rng
        signal = self.dark_rate * exptime
        light = np.zeros((self.ny, self.nx))
        if photons is not None:
            light = light + photons
        light = (light + sky + flat_lamp) * self.flat
        electrons = rng.poisson(np.maximum(signal + light, 0)).astype(np.float64)
        if cosmics is not None:
            electrons += cosmics
        electrons += rng.normal(0, self.read_noise, electrons.shape)
        return self.bias_adu + electrons / self.gain

    def header(self, frame_type: str, exptime: float, **extra) -> fits.Header:
        """A header like a real camera's (``EGAIN``, no ``RON`` unless given)."""
        h = fits.Header()
        h["IMAGETYP"] = {
            "bias": "Bias Frame",
            "dark": "Dark Frame",
            "flat": "Flat Field",
            "object": "Light Frame",
        }[frame_type]
        h["EXPTIME"] = float(exptime)
        h["EXPOSURE"] = float(exptime)
        h["EGAIN"] = self.gain
        h["FILTER"] = "V"
        h["XBINNING"] = 1
        h["YBINNING"] = 1
        h["DATAMAX"] = 65535
        h["DATE-OBS"] = "2020-01-01T00:00:00"
        for k, v in extra.items():
            h[k] = v
        return h

    def write(self, path, adu: np.ndarray, header: fits.Header) -> str:
        """Write a raw frame as uint16 with ``BZERO=32768`` (as cameras do)."""
        data = np.clip(np.round(adu), 0, 65535).astype(np.uint16)
        hdu = fits.PrimaryHDU(data, header=header)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        hdu.writeto(path, overwrite=True)
        return str(path)

    def write_series(self, folder, name, frame_type, n, exptime, **kw) -> list[str]:
        """Write ``n`` raw frames ``folder/name_###.fits`` and return their paths."""
        return [
            self.write(
                Path(folder) / f"{name}_{i:03d}.fits",
                self.expose(exptime, **kw),
                self.header(frame_type, exptime),
            )
            for i in range(n)
        ]


@pytest.fixture
def camera() -> SyntheticCamera:
    """A 256 x 256 synthetic camera (gain 2 e-/ADU, read noise 12 e-)."""
    return SyntheticCamera()


# ---------------------------------------------------------------------------------------
# guided notebooks: one data tree per test session, each notebook executed at most once
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def guide_root(tmp_path_factory, shared_data) -> Path:
    """An empty project folder (``uncal_data/``, ``reduced_data/``) the notebooks fill."""
    root = tmp_path_factory.mktemp("guides")
    (root / "uncal_data").mkdir()
    (root / "reduced_data").mkdir()
    return root


@pytest.fixture(scope="session")
def run_guide(guide_root):
    """``run_guide(name)`` executes a guided notebook headless (once per session).

    The notebooks share one data tree, so a notebook run after another resumes from what
    the first one reduced, exactly as a user starting a new kernel another day would.
    Returns ``(NotebookRun, summary)`` where ``summary`` is the JSON record the notebook
    writes as its last step (``reduced_data/notebooks/<name>_summary.json``).
    """
    import json

    from astrodart.ui.notebooks import run_notebook

    done = {}

    def run(name):
        if name not in done:
            r = run_notebook(name, guide_root)
            summary_path = r.executed.parent / f"{name}_summary.json"
            summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
            done[name] = (r, summary)
        return done[name]

    return run


def assert_notebook_ran_cleanly(run, min_figures: int, min_png_bytes: int = 20_000):
    """Return the executed notebook after checking it has no error output and at least
    ``min_figures`` real PNG figures, none of them blank (a blank figure is ~5 kB)."""
    import nbformat

    nb = nbformat.read(run.executed, as_version=4)
    errors = [(i, o.get("ename"), o.get("evalue")) for i, cell in enumerate(nb.cells)
              for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    assert len(run.figures) >= min_figures
    for number, png in enumerate(run.figures, 1):
        # named by what it shows: <notebook>_<NN>_<section slug>.png
        assert re.fullmatch(rf"{run.name}_{number:02d}_[a-z0-9_]+\.png", png.name), png
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png.stat().st_size > min_png_bytes, png
    return nb


@pytest.fixture
def no_network(monkeypatch):
    """ASTRODART_OFFLINE=1, and every attempt to open a connection is refused and recorded
    (the list is checked empty after the test)."""
    import socket
    import urllib.request

    tried = []

    def refuse(*args, **kwargs):
        tried.append(args)
        raise OSError("no network in this test")

    monkeypatch.setenv("ASTRODART_OFFLINE", "1")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    yield tried
    assert tried == [], "a site lookup tried the network"
