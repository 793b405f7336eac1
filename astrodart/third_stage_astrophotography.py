"""Stage 3, astrophotography: align, stack per filter, colour composites, exports.

``from astrodart.third_stage_astrophotography import *`` gives the names the AstroDART
astrophotography guide uses, plus :func:`stack`:

>>> directories, files, filters = get_directory(data_dir).science_final()   # doctest: +SKIP
>>> aligned = align(files, directories, reference_frame=files[0][0]).run()   # doctest: +SKIP
>>> stacks = stack(aligned, filters, data_dir + 'stacks')                     # doctest: +SKIP
>>> rgb_image(stacks[2], stacks[1], stacks[0]).show()                        # doctest: +SKIP
>>> save_to_tiff(stacks, directories, filters, 'astrophotography', '180423', 'M67',
...              'yes').run()                                                 # doctest: +SKIP

A thin facade (layer 5) over the rooms that do the work:

- :class:`align` -- :mod:`astrodart.pipeline.align` (file-level step) over the alignment
  ladder of :mod:`astrodart.alignment.ladder` (WCS reprojection, star-pattern matching
  with mirror detection, FFT translation). Alignment never gives up silently: the
  method, transform and residual of every aligned frame are written into its header
  (``ALN*`` keywords) and the run log, and a frame that cannot be aligned, or whose
  transform breaks the limits, is listed in ``align.failed`` with the reason and left
  out of the outputs, so it can never be stacked as if it were aligned;
- :func:`stack`, :class:`save_to_tiff` -- :mod:`astrodart.pipeline.stack`;
- :class:`rgb_image` -- :mod:`astrodart.pipeline.rgb` over the pure colour chain of
  :mod:`astrodart.color.composite`.
"""
from __future__ import annotations

# the rooms' public names stay reachable here, as they were before the split
from astrodart.alignment.ladder import *
from astrodart.alignment.transforms import *
from astrodart.color.composite import *
from astrodart.pipeline.align import ALIGN_KEYWORDS, align
from astrodart.pipeline.rgb import rgb_image
from astrodart.pipeline.stack import save_to_tiff, stack

__all__ = [
    "align",
    "stack",
    "rgb_image",
    "save_to_tiff",
    "AlignmentError",
    "AlignmentLimitError",
    "AlignmentLimits",
]
