"""Layer 2: a simulated one-shot-colour (Bayer) night made from the real M67 B, V, R images.

The truth is three colour images of a real field: the ESO M67 frames of the sample data
(``m67_bvr``; R -> red, V -> green, B -> blue), trimmed of their reduction residue (the
first four and the last column), with R and B registered onto V by the alignment ladder
(:func:`astrodart.alignment.ladder.align_frame`: the bands are offset by 1.5-2.5 px on
the chip), scaled to electrons and put on a sky of a different level per colour.

:func:`simulate_cfa_night` mosaics that scene into the colour filter array of the
camera (``colour_demosaicing.mosaicing_CFA_Bayer`` through
:func:`astrodart.color.bayer.mosaic_cfa`), with a different quantum efficiency per colour,
vignetting, dark current with hot pixels, a bias pattern, photon and read noise
(:mod:`astrodart.datasets.detector`), and writes a night as a capture program would:
bias, darks, dome flats (a white lamp) and dithered lights, all raw CFA frames of the
same pattern with ``BAYERPAT``, ``XBAYROFF``/``YBAYROFF`` and ``ROWORDER`` in their
headers (N.I.N.A.'s spelling). Dithers are whole pixels, so the truth of every light is
a cut-out of the truth scene, known pixel for pixel.

What a correct reduction gives back (:meth:`CFANight.expected`): each colour image of the
scene times one number, the robust level of the flat's response
(:func:`astrodart.calibration.flat.flat_normalisation` of quantum efficiency x
vignetting). The flat is divided on the CFA, before demosaicing, so each pixel is
divided by its own colour's response: the colours' different efficiencies cancel pixel
by pixel and one global normalisation of the master flat leaves the colour balance
untouched (a white lamp is assumed; a coloured lamp would scale each colour by the
inverse of its colour, a constant per channel that a star colour balance removes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["CFANight", "m67_colour_truth", "simulate_cfa_night"]

#: Colour channel -> M67 band.
M67_BANDS = {"R": "R", "G": "V", "B": "B"}
__all__.append("M67_BANDS")


def m67_colour_truth(folder=None, margin: int = 4) -> dict[str, np.ndarray]:
    """The R, G, B truth images from the real M67 R, V, B frames, on one grid.

    Parameters
    ----------
    folder : str or pathlib.Path, optional
        The ``m67_bvr`` sample folder (default: found by
        :func:`astrodart.datasets.samples.find_sample_dir`).
    margin : int
        Pixels cut from each edge after registration (the resampled bands lose a border).

    Returns
    -------
    dict
        ``{'R': image, 'G': image, 'B': image}``: float64 ``(ny, nx)`` arrays (even sizes),
        sky-subtracted as distributed; R and B registered onto V by star patterns.

    Raises
    ------
    astrodart.datasets.samples.SampleDataNotFound
        The sample folder cannot be found.
    RuntimeError
        A band could not be registered onto V.
    """
    from astrodart.alignment.ladder import ReferenceFrame, align_frame
    from astrodart.datasets.samples import find_sample_dir
    from astrodart.frames.io import read_frame

    folder = Path(folder) if folder is not None else find_sample_dir("m67")
    # the reduced images carry reduction residue in their first four and last columns
    bands = {b: np.asarray(read_frame(folder / f"M67_{b}.fits").data, float)[:, 4:-1]
             for b in "RVB"}
    ref = ReferenceFrame(bands["V"])
    out = {"G": bands["V"]}
    for ch, band in (("R", "R"), ("B", "B")):
        res = align_frame(bands[band], ref, methods=("stars",))
        if not np.isfinite(res.residual) or res.residual > 0.5:
            raise RuntimeError(f"m67_colour_truth: M67_{band} not registered onto V "
                               f"(residual {res.residual})")
        out[ch] = np.asarray(res.data, float)
    ny, nx = out["G"].shape
    ny2, nx2 = ((ny - 2 * margin) // 2) * 2, ((nx - 2 * margin) // 2) * 2
    cut = (slice(margin, margin + ny2), slice(margin, margin + nx2))
    truth = {k: np.nan_to_num(out[k][cut], nan=0.0) for k in ("R", "G", "B")}
    return truth


@dataclass
class CFANight:
    """A simulated colour-camera night and its truth.

    Parameters
    ----------
    night : pathlib.Path
        The folder of raw frames.
    pattern : str
        The array pattern of every frame (``data[0:2, 0:2]``).
    scene : dict
        ``{'R', 'G', 'B'}``: the truth scene in electrons per exposure at unit efficiency,
        on the canvas the lights are cut from (sky included).
    offsets : dict
        Light file name -> ``(dx, dy)``: the light's pixel ``(x, y)`` shows canvas pixel
        ``(x + dx, y + dy)``.
    shape : (int, int)
        ``(ny, nx)`` of every frame.
    response : numpy.ndarray
        Noise-free flat response of each CFA pixel (efficiency of its colour x vignetting).
    parameters : dict
        Camera and scene numbers (gain, read noise, efficiencies, sky, scale ...).
    """

    night: Path
    pattern: str
    scene: dict
    offsets: dict
    shape: tuple
    response: np.ndarray
    parameters: dict = field(default_factory=dict)

    def flat_level(self) -> float:
        """The number a correct reduction multiplies the scene by.

        Returns
        -------
        float
            :func:`astrodart.calibration.flat.flat_normalisation` of :attr:`response`
            (the master flat is normalised by it before the lights are divided).
        """
        from astrodart.calibration.flat import flat_normalisation

        return flat_normalisation(self.response)

    def expected(self, light: str, channel: str) -> np.ndarray:
        """The calibrated colour image a correct reduction gives for one light.

        Parameters
        ----------
        light : str
            A light's file name (a key of :attr:`offsets`).
        channel : {'R', 'G', 'B'}
            The colour.

        Returns
        -------
        numpy.ndarray
            ``(ny, nx)`` electrons: the scene cut-out times :meth:`flat_level`.

        Raises
        ------
        KeyError
            Unknown light or channel.
        """
        dx, dy = self.offsets[Path(light).name]
        ny, nx = self.shape
        return self.scene[channel][dy:dy + ny, dx:dx + nx] * self.flat_level()


def _camera(shape, pattern: str, rng, params: dict) -> dict:
    """Fixed signatures of the simulated camera (bias, dark rate, response per CFA pixel)."""
    from astrodart.color.bayer import mosaic_cfa
    from astrodart.datasets.detector import bias_pattern, dark_current_map, flat_response

    qe = params["qe"]
    eff = mosaic_cfa(*(np.full(shape, qe[c]) for c in "RGB"), pattern=pattern)
    response = eff * flat_response(shape, vignetting=0.12)
    rate, _, _ = dark_current_map(shape, params["dark_rate"], rng, glow=0.0)
    return {"bias": bias_pattern(shape, params["bias"], rng), "dark": rate,
            "response": response}


def _header(kind: str, index: int, exptime: float, pattern: str, params: dict):
    from astropy.io import fits
    from astropy.time import Time, TimeDelta

    start = Time("2024-03-10T21:00:00", scale="utc") + TimeDelta(index * (exptime + 5), format="sec")
    h = fits.Header()
    h["IMAGETYP"] = {"bias": "BIAS", "dark": "DARK", "flat": "FLAT", "light": "LIGHT"}[kind]
    h["EXPOSURE"] = (exptime, "[s] Exposure duration")
    h["EXPTIME"] = (exptime, "[s] Exposure duration")
    h["DATE-OBS"] = (start.isot, "Time of observation (UTC)")
    h["XBINNING"], h["YBINNING"] = 1, 1
    # N.I.N.A. also writes GAIN = the camera's gain setting (not e-/ADU): left out here,
    # because FrameHeader reads GAIN before EGAIN
    h["EGAIN"] = (params["gain"], "[e-/ADU] Electrons per A/D unit")
    h["CCD-TEMP"] = (-10.0, "[degC] sensor temperature")
    h["INSTRUME"] = "ZWO ASI294MC Pro (simulated)"
    h["BAYERPAT"] = (pattern, "Sensor Bayer pattern")
    h["XBAYROFF"] = (0, "Bayer pattern X axis offset")
    h["YBAYROFF"] = (0, "Bayer pattern Y axis offset")
    h["ROWORDER"] = ("TOP-DOWN", "FITS Image Orientation")
    h["SWCREATE"] = ("astrodart.datasets.cfa_night", "software (N.I.N.A.'s keywords)")
    if kind == "light":
        h["OBJECT"] = "M67"
    return h


def _write(path: Path, data: np.ndarray, header) -> Path:
    from astropy.io import fits

    from astrodart.frames.io import atomic_output

    with atomic_output(path, overwrite=True) as tmp:
        fits.PrimaryHDU(data=data, header=header).writeto(tmp, overwrite=True)
    return path


def _frame(expected_e: np.ndarray, cam: dict, params: dict, rng) -> np.ndarray:
    from astrodart.datasets.detector import digitise

    electrons = rng.poisson(np.clip(expected_e, 0, None)).astype(np.float64)
    return digitise(electrons, params["gain"], params["read_noise"], cam["bias"], rng)


DEFAULTS = {"gain": 1.2, "gain_setting": 120, "read_noise": 3.5, "bias": 500.0,
            "dark_rate": 0.05, "qe": {"R": 0.72, "G": 0.9, "B": 0.65},
            "sky": {"R": 260.0, "G": 400.0, "B": 220.0}, "scale": 0.5,
            "flat_level": 25000.0, "exptime": 60.0}
__all__.append("DEFAULTS")


def simulate_cfa_night(dest, seed: int = 0, *, pattern: str = "RGGB", n_lights: int = 5,
                       n_bias: int = 5, n_dark: int = 5, n_flat: int = 5, folder=None,
                       truth: dict | None = None, **camera) -> CFANight:
    """Write a raw colour-camera night (bias, darks, flats, dithered lights) into ``dest``.

    Parameters
    ----------
    dest : str or pathlib.Path
        The night folder (created; existing frames of the same names are replaced).
    seed : int
        Seed of every random number (the night is a function of its arguments).
    pattern : {'RGGB', 'BGGR', 'GRBG', 'GBRG'}
        The camera's Bayer pattern (written as ``BAYERPAT`` with ``ROWORDER='TOP-DOWN'``).
    n_lights, n_bias, n_dark, n_flat : int
        Frames of each kind (darks and flats of the lights' exposure).
    folder : str or pathlib.Path, optional
        The ``m67_bvr`` sample folder (see :func:`m67_colour_truth`).
    truth : dict, optional
        ``{'R', 'G', 'B'}`` images to use instead of M67 (sky-subtracted, one shape).
    **camera
        Overrides of :data:`DEFAULTS` (gain, read_noise, bias, dark_rate, qe, sky, scale,
        flat_level, exptime).

    Returns
    -------
    CFANight
        The folder, the pattern, the truth and what a correct reduction gives back.

    Raises
    ------
    ValueError
        Unknown pattern or camera option, or fewer than one frame of a kind.
    """
    from astrodart.color.bayer import check_bayer_pattern, mosaic_cfa

    pattern = check_bayer_pattern(pattern, "simulate_cfa_night: pattern")
    unknown = sorted(set(camera) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"simulate_cfa_night: unknown camera options {unknown}; the "
                         f"options are {sorted(DEFAULTS)}")
    if min(n_lights, n_bias, n_dark, n_flat) < 1:
        raise ValueError("simulate_cfa_night: at least one frame of each kind")
    params = {**DEFAULTS, **camera}
    rng = np.random.default_rng(seed)
    base = truth if truth is not None else m67_colour_truth(folder)
    scene = {c: np.clip(params["scale"] * base[c] + params["sky"][c], 0, None) for c in "RGB"}
    pad = 4
    ny, nx = scene["G"].shape[0] - 2 * pad, scene["G"].shape[1] - 2 * pad
    cam = _camera((ny, nx), pattern, rng, params)
    night = Path(dest)
    night.mkdir(parents=True, exist_ok=True)
    t = float(params["exptime"])
    zero = np.zeros((ny, nx))
    for i in range(n_bias):
        _write(night / f"bias_{i + 1:03d}.fits", _frame(zero, cam, params, rng),
               _header("bias", i, 0.0, pattern, params))
    for i in range(n_dark):
        _write(night / f"dark_{t:g}s_{i + 1:03d}.fits", _frame(cam["dark"] * t, cam, params, rng),
               _header("dark", i, t, pattern, params))
    for i in range(n_flat):
        flat = params["flat_level"] * cam["response"] + cam["dark"] * t
        _write(night / f"flat_{i + 1:03d}.fits", _frame(flat, cam, params, rng),
               _header("flat", i, t, pattern, params))
    dithers = [(pad + int(dx), pad + int(dy)) for dx, dy in rng.integers(-pad, pad + 1, (n_lights, 2))]
    dithers[0] = (pad, pad)
    offsets = {}
    for i, (dx, dy) in enumerate(dithers):
        cut = [scene[c][dy:dy + ny, dx:dx + nx] for c in "RGB"]
        e = mosaic_cfa(*cut, pattern=pattern) * cam["response"] + cam["dark"] * t
        name = f"M67_light_{i + 1:03d}.fits"
        _write(night / name, _frame(e, cam, params, rng), _header("light", i, t, pattern, params))
        offsets[name] = (dx, dy)
    result = CFANight(night, pattern, scene, offsets, (ny, nx), cam["response"],
                      {k: v for k, v in params.items()})
    _write_truth(night.parent / f"{night.name}_cfa_truth.json", result)
    return result


def _write_truth(path: Path, night: CFANight) -> None:
    """A small JSON record beside the night (the arrays stay in memory: they come from the
    sample data and the seed)."""
    from astrodart.frames.io import atomic_output

    data = {"pattern": night.pattern, "offsets": night.offsets, "shape": list(night.shape),
            "flat_level": night.flat_level(), "parameters": night.parameters}
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=float))
