"""Layer 2: detector characterisation from calibration frames (pure functions).

* read noise from pairs of bias frames and gain from pairs of flats — the
  photon-transfer method (Janesick 2001, *Scientific Charge-Coupled Devices*, SPIE PM83,
  ch. 2; Janesick 2007, *Photon Transfer*, SPIE PM170): differencing two frames removes
  fixed patterns (bias structure, flat-field response) and leaves twice the random noise;
* dark current and hot pixels from a bias-subtracted master dark.

The bad-pixel map built from the masters is in :mod:`astrodart.calibration.pixels`.

Units: frames in ADU for the photon transfer (the gain is the unknown); gain in e-/ADU,
read noise in electrons (and ADU), dark current in (data unit)/s/px.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from astrodart.calibration.base import CalibrationError
from astrodart.calibration.noise import robust_std
from astrodart.calibration.pixels import hot_pixel_mask

__all__ = [
    "central_region",
    "read_noise_from_pair",
    "gain_from_pairs",
    "PhotonTransferResult",
    "measure_photon_transfer",
    "PhotonTransferCurve",
    "photon_transfer_curve",
    "DarkCurrentResult",
    "measure_dark_current",
]


#: Clipping (robust sigma) of the noise measured in difference images: removes cosmic
#: rays and hot pixels, keeps the Gaussian efficiency of the standard deviation.
_NOISE_CLIP = 5.0


def central_region(shape: tuple[int, int], fraction: float = 0.5) -> tuple[slice, slice]:
    """The central part of a frame.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the frame.
    fraction : float
        Fraction of each axis kept, centred.

    Returns
    -------
    (slice, slice)
        ``(rows, columns)`` of the central region.
    """
    ny, nx = shape
    fy, fx = int(ny * (1 - fraction) / 2), int(nx * (1 - fraction) / 2)
    return slice(fy, ny - fy), slice(fx, nx - fx)


def read_noise_from_pair(bias1: np.ndarray, bias2: np.ndarray, region=None) -> float:
    """Read noise (units of the data) from two bias frames: ``std(b1 - b2) / sqrt(2)``.

    Parameters
    ----------
    bias1, bias2 : numpy.ndarray
        ``(ny, nx)`` bias frames.
    region : tuple of slice, optional
        Area used (default: the central half of each axis).

    Returns
    -------
    float
        Read noise in the units of the data (ADU for raw frames).
    """
    region = region or central_region(np.shape(bias1))
    d = np.asarray(bias1, np.float64)[region] - np.asarray(bias2, np.float64)[region]
    return robust_std(d, clip=_NOISE_CLIP) / np.sqrt(2)


def gain_from_pairs(
    flat1: np.ndarray, flat2: np.ndarray, bias1: np.ndarray, bias2: np.ndarray, region=None
) -> tuple[float, float]:
    """Gain and read noise from one flat pair and one bias pair (Janesick).

    ``g = ((F1 + F2) - (B1 + B2)) / (var(F1 - F2) - var(B1 - B2))`` with means and
    variances over ``region``; ``F2`` is first scaled to ``F1``'s level so that a
    change of illumination between the two flats does not leave a flat-field pattern
    in the difference.

    Parameters
    ----------
    flat1, flat2, bias1, bias2 : numpy.ndarray
        ``(ny, nx)`` raw frames in ADU (same exposure for the two flats).
    region : tuple of slice, optional
        Area used (default: the central half).

    Returns
    -------
    gain : float
        Gain (e-/ADU).
    read_noise : float
        Electrons: ``gain * std(B1 - B2) / sqrt(2)``.

    Raises
    ------
    CalibrationError
        The flats are not brighter than the biases, or their difference is not noisier.
    """
    region = region or central_region(np.shape(flat1))
    f1 = np.asarray(flat1, np.float64)[region]
    f2 = np.asarray(flat2, np.float64)[region]
    b1 = np.asarray(bias1, np.float64)[region]
    b2 = np.asarray(bias2, np.float64)[region]
    mb1, mb2 = np.median(b1), np.median(b2)
    s1, s2 = np.median(f1) - mb1, np.median(f2) - mb2
    if s1 <= 0 or s2 <= 0:
        raise CalibrationError(
            "flats are not brighter than the biases: photon transfer needs exposed flats"
        )
    # bring flat 2 to flat 1's signal level (bias removed before scaling)
    f2s = (f2 - mb2) * (s1 / s2) + mb1
    var_f = robust_std(f1 - f2s, clip=_NOISE_CLIP) ** 2
    var_b = robust_std(b1 - b2, clip=_NOISE_CLIP) ** 2
    if var_f <= var_b:
        raise CalibrationError(
            "flat-pair difference is not noisier than the bias-pair difference; "
            "are the 'flats' exposed and unsaturated?"
        )
    signal = 2 * s1
    gain = signal / (var_f - var_b)
    return float(gain), float(gain * np.sqrt(var_b / 2))


@dataclass
class PhotonTransferResult:
    """Gain and read noise from pairs of flats and biases.

    Returned by :func:`measure_photon_transfer`; the fields are also its attributes.

    Parameters
    ----------
    gain : float
        Median gain over the pairs (e-/ADU).
    gain_error : float
        Standard error of the mean gain over the pairs (e-/ADU; NaN with one pair).
    read_noise_adu : float
        Median read noise from the bias pairs (ADU).
    read_noise : float
        ``gain * read_noise_adu`` (electrons).
    gains, read_noises_adu : list of float
        Per-pair values.
    signal_adu : float
        Median flat signal above bias (ADU).

    References
    ----------
    Janesick, J. R. 2007, *Photon Transfer*, SPIE Press, doi:10.1117/3.725073.
    """

    gain: float
    gain_error: float
    read_noise_adu: float
    read_noise: float
    gains: list = field(default_factory=list)
    read_noises_adu: list = field(default_factory=list)
    signal_adu: float = float("nan")

    def read_noise_for_gain(self, gain: float) -> float:
        """Read noise in electrons at another gain: ``read_noise_adu * gain``.

        The noise measured in ADU is the robust quantity; use this when the chain
        converts with another gain (e.g. the header's), and pass the result to
        ``deviation_calculation(ron=...)`` together with that gain.

        Parameters
        ----------
        gain : float
            Gain the frames are converted with (e-/ADU).

        Returns
        -------
        float
            Read noise of one frame (electrons).
        """
        return self.read_noise_adu * float(gain)

    def __str__(self) -> str:
        return (
            f"gain {self.gain:.3f} +/- {self.gain_error:.3f} e-/ADU, read noise "
            f"{self.read_noise_adu:.3f} ADU = {self.read_noise:.2f} e- "
            f"({len(self.gains)} flat pairs, {len(self.read_noises_adu)} bias pairs, "
            f"flat signal {self.signal_adu:.0f} ADU)"
        )


def measure_photon_transfer(
    biases: Sequence[np.ndarray], flats: Sequence[np.ndarray], region=None
) -> PhotonTransferResult:
    """Gain and read noise from frames taken in pairs (Janesick's photon transfer).

    Parameters
    ----------
    biases : sequence of numpy.ndarray
        At least two raw bias frames ``(ny, nx)`` in ADU; consecutive frames are paired.
    flats : sequence of numpy.ndarray
        At least two raw flats of equal exposure, ADU, unsaturated; paired alike.
    region : tuple of slice, optional
        Area used (default: the central half of each axis).

    Returns
    -------
    PhotonTransferResult

    Raises
    ------
    CalibrationError
        Fewer than two biases or two flats.
    """
    if len(biases) < 2 or len(flats) < 2:
        raise CalibrationError("photon transfer needs at least two bias frames and two flats")
    rn = [
        read_noise_from_pair(biases[i], biases[i + 1], region) for i in range(0, len(biases) - 1, 2)
    ]
    gains, signals = [], []
    for j, i in enumerate(range(0, len(flats) - 1, 2)):
        k = (2 * j) % (len(biases) - 1)
        g, _ = gain_from_pairs(flats[i], flats[i + 1], biases[k], biases[k + 1], region)
        gains.append(g)
        reg = region or central_region(np.shape(flats[i]))
        signals.append(
            float(np.median(np.asarray(flats[i])[reg]) - np.median(np.asarray(biases[k])[reg]))
        )
    gain = float(np.median(gains))
    gerr = float(np.std(gains, ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else float("nan")
    rn_adu = float(np.median(rn))
    return PhotonTransferResult(
        gain, gerr, rn_adu, gain * rn_adu, gains, rn, float(np.median(signals))
    )


@dataclass
class PhotonTransferCurve:
    """Signal and pair variance in tiles of flat pairs: a photon-transfer curve.

    A single flat level still gives a range of signals when the illumination is not
    uniform (vignetting): each tile is one point of the curve. Returned by
    :func:`photon_transfer_curve`; the fields are also its attributes.

    Parameters
    ----------
    signal : numpy.ndarray
        ``(ty, tx)`` median flat signal above bias per tile (ADU), averaged over the
        pairs; row 0 at the bottom of the frame, like the image.
    variance : numpy.ndarray
        ``(ty, tx)`` noise variance of one flat per tile, ``var(F1 - F2) / 2`` (ADU^2),
        averaged over the pairs; read noise included.
    read_variance : float
        Read-noise variance of one frame, ``var(B1 - B2) / 2`` (ADU^2), median over the
        bias pairs.
    gain : float
        e-/ADU from the least-squares line ``variance - read_variance = signal / gain``
        through the origin.
    gain_error : float
        Standard error of the gain from the scatter of the per-tile gains (e-/ADU).
    tile_gains : numpy.ndarray
        ``(ty, tx)`` per-tile gains ``signal / (variance - read_variance)`` (e-/ADU;
        NaN where the variance does not exceed the read noise).
    box : int
        Tile size (px).

    References
    ----------
    Janesick, J. R. 2007, *Photon Transfer*, SPIE Press, doi:10.1117/3.725073.
    """

    signal: np.ndarray
    variance: np.ndarray
    read_variance: float
    gain: float
    gain_error: float
    tile_gains: np.ndarray
    box: int

    @property
    def read_noise_adu(self) -> float:
        """Read noise of one frame (ADU)."""
        return float(np.sqrt(self.read_variance))

    def model(self, signal, gain: float | None = None) -> np.ndarray:
        """Expected variance of one frame: ``read_variance + signal / gain``.

        Parameters
        ----------
        signal : float or array_like
            Signal above bias (ADU), any shape.
        gain : float, optional
            Gain (e-/ADU); default: the fitted :attr:`gain`.

        Returns
        -------
        numpy.ndarray
            Variance (ADU^2), float64, shape of ``signal``.
        """
        g = self.gain if gain is None else float(gain)
        return self.read_variance + np.asarray(signal, np.float64) / g

    def __str__(self) -> str:
        return (
            f"photon-transfer curve: {self.signal.size} tiles of {self.box} px, signal "
            f"{self.signal.min():.0f}-{self.signal.max():.0f} ADU, gain {self.gain:.3f} "
            f"+/- {self.gain_error:.3f} e-/ADU, read noise {self.read_noise_adu:.3f} ADU"
        )


def photon_transfer_curve(
    biases: Sequence[np.ndarray], flats: Sequence[np.ndarray], box: int = 64
) -> PhotonTransferCurve:
    """Photon-transfer curve from flat pairs measured in ``box`` x ``box`` tiles.

    Consecutive flats (and biases) are paired as in :func:`measure_photon_transfer`. In each
    tile the signal is ``median(F1) - median(B1)`` and the variance of one flat is
    ``var(F1 - F2') / 2`` (clipped, :func:`~astrodart.calibration.noise.robust_std`), where
    ``F2'`` is ``F2``
    brought to ``F1``'s overall level (a lamp change between the two exposures would
    otherwise leave the flat-field pattern in the difference). Per tile, shot noise
    gives ``variance = read_variance + signal / gain``.

    Parameters
    ----------
    biases : sequence of numpy.ndarray
        At least two raw bias frames ``(ny, nx)`` in ADU.
    flats : sequence of numpy.ndarray
        At least two raw flats ``(ny, nx)`` in ADU, same exposure, unsaturated.
    box : int
        Tile size (px); edge rows/columns that do not fill a tile are left out.

    Returns
    -------
    PhotonTransferCurve

    Raises
    ------
    CalibrationError
        Fewer than two frames of a kind, a box larger than the frame, or flats not
        brighter than the biases.
    """
    if len(biases) < 2 or len(flats) < 2:
        raise CalibrationError("a photon-transfer curve needs at least two biases and two flats")
    ny, nx = np.shape(flats[0])
    box = int(box)
    if box < 4 or box > min(ny, nx):
        raise CalibrationError(
            f"box={box} px does not fit a {nx}x{ny} frame (4 <= box <= {min(ny, nx)})"
        )
    ty, tx = ny // box, nx // box
    rows = [slice(i * box, (i + 1) * box) for i in range(ty)]
    cols = [slice(j * box, (j + 1) * box) for j in range(tx)]
    centre = central_region((ny, nx))

    read_var = [
        robust_std(np.asarray(biases[i], np.float64) - np.asarray(biases[i + 1], np.float64),
                   clip=_NOISE_CLIP) ** 2 / 2
        for i in range(0, len(biases) - 1, 2)
    ]
    read_variance = float(np.median(read_var))
    signals, variances = [], []
    for j, i in enumerate(range(0, len(flats) - 1, 2)):
        k = (2 * j) % (len(biases) - 1)
        f1, f2 = np.asarray(flats[i], np.float64), np.asarray(flats[i + 1], np.float64)
        b1, b2 = np.asarray(biases[k], np.float64), np.asarray(biases[k + 1], np.float64)
        s1 = np.median(f1[centre]) - np.median(b1[centre])
        s2 = np.median(f2[centre]) - np.median(b2[centre])
        if s1 <= 0 or s2 <= 0:
            raise CalibrationError(
                "flats are not brighter than the biases: photon transfer needs exposed flats"
            )
        diff = f1 - ((f2 - b2) * (s1 / s2) + b1)  # bias pattern and flat pattern cancel
        sig = np.empty((ty, tx))
        var = np.empty((ty, tx))
        for a, r in enumerate(rows):
            for b, c in enumerate(cols):
                sig[a, b] = np.median(f1[r, c]) - np.median(b1[r, c])
                var[a, b] = robust_std(diff[r, c], clip=_NOISE_CLIP) ** 2 / 2
        signals.append(sig)
        variances.append(var)
    signal = np.mean(signals, axis=0)
    variance = np.mean(variances, axis=0)
    shot = variance - read_variance
    gain = float(np.sum(signal * signal) / np.sum(signal * shot))
    with np.errstate(divide="ignore", invalid="ignore"):
        tile_gains = np.where(shot > 0, signal / shot, np.nan)
    good = np.isfinite(tile_gains)
    n_good = int(good.sum())
    gerr = float(np.std(tile_gains[good], ddof=1) / np.sqrt(n_good)) if n_good > 1 else np.nan
    return PhotonTransferCurve(signal, variance, read_variance, gain, gerr, tile_gains, box)


@dataclass
class DarkCurrentResult:
    """Dark current statistics of a bias-subtracted master dark.

    Returned by :func:`measure_dark_current`; the fields are also its attributes.

    Parameters
    ----------
    median_rate : float
        Median dark current (data unit / s / px; e-/s/px for a master in electrons).
    mean_rate : float
        Sigma-clipped mean of the rate (same unit).
    rate_scatter : float
        Robust standard deviation of the rate over the detector (same unit).
    hot_mask : numpy.ndarray
        ``(ny, nx)`` bool, hot pixels (see :func:`hot_pixel_mask`).
    n_hot : int
        Number of hot pixels.
    threshold : float
        Rate above which a pixel is hot (same unit).
    unit : str
        Unit of the rates.
    """

    median_rate: float
    mean_rate: float
    rate_scatter: float
    hot_mask: np.ndarray
    n_hot: int
    threshold: float
    unit: str = "electron / s"

    def __str__(self) -> str:
        return (
            f"dark current median {self.median_rate:.3f} {self.unit}/px (clipped mean "
            f"{self.mean_rate:.3f}, scatter {self.rate_scatter:.3f}); {self.n_hot} hot pixels "
            f"above {self.threshold:.3f} {self.unit}"
        )


def measure_dark_current(
    master_dark: np.ndarray,
    exptime: float,
    nsigma: float = 5.0,
    min_rate: float | None = None,
    unit: str = "electron / s",
) -> DarkCurrentResult:
    """Dark current and hot pixels of a bias-subtracted master dark.

    Parameters
    ----------
    master_dark : numpy.ndarray
        ``(ny, nx)`` master dark, bias removed, e.g. in electrons.
    exptime : float
        Its exposure time (s, > 0).
    nsigma, min_rate : float
        Hot-pixel threshold (see :func:`hot_pixel_mask`).
    unit : str
        Unit of the rate, for display.

    Returns
    -------
    DarkCurrentResult

    Raises
    ------
    CalibrationError
        Non-positive exposure time.
    """
    if not exptime or exptime <= 0:
        raise CalibrationError(f"dark exposure time {exptime!r} s must be positive")
    rate = np.asarray(master_dark, np.float32) / np.float32(exptime)
    hot, thr = hot_pixel_mask(rate, nsigma, min_rate)
    good = rate[~hot]
    return DarkCurrentResult(
        float(np.median(rate)),
        float(np.mean(good)),
        float(robust_std(rate)),
        hot,
        int(hot.sum()),
        thr,
        unit,
    )
