"""Layer 3: open a frame in SAOImage DS9 for a quick look, when DS9 is installed."""
from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from astrodart.exceptions import AstrodartWarning, warn

__all__ = ["DS9NotInstalledWarning", "check_ds9"]

log = logging.getLogger("astrodart.second_stage")


class DS9NotInstalledWarning(AstrodartWarning):
    """SAOImage DS9 is not installed (or not on the PATH)."""


class check_ds9:
    """Open an image in SAOImage DS9 if it is installed.

    The viewer is started in the background (its own session, so closing the notebook
    does not kill it). When DS9 is not on the PATH, a :class:`DS9NotInstalledWarning`
    says so and nothing else happens.

    Parameters
    ----------
    image : str or pathlib.Path
        FITS file to show.
    executable : str
        Program name or path of DS9.
    zscale : bool
        Ask DS9 for a zscale stretch.

    Attributes
    ----------
    opened : bool
        True when DS9 was started.
    process : subprocess.Popen or None
        The DS9 process.

    Raises
    ------
    FileNotFoundError
        ``image`` does not exist.
    """

    def __init__(self, image: str | Path, *, executable: str = "ds9", zscale: bool = True):
        self.image = str(image)
        self.opened = False
        self.process = None
        if not Path(self.image).exists():
            raise FileNotFoundError(f"{self.image}: file does not exist")
        exe = shutil.which(executable)
        if exe is None:
            warn(f"DS9 is not installed (no '{executable}' on the PATH), so {self.image} was "
                 "not opened; install SAOImage DS9 "
                 "(https://sites.google.com/cfa.harvard.edu/saoimageds9) "
                 "or look at the frame with astrodart's plotting helpers",
                 DS9NotInstalledWarning, stacklevel=3)
            return
        cmd = [exe, self.image] + (["-zscale"] if zscale else [])
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        self.opened = True
        log.info("opened %s in DS9 (pid %d)", self.image, self.process.pid)

