"""Layer 3: the options every step takes the same way: ``overwrite``, unknown keywords.

Both checks live in the one home of argument checks, :mod:`astrodart.frames.checks`;
they are re-exported here for the steps that import them from this module.
"""
from __future__ import annotations

from astrodart.frames.checks import check_kwargs, parse_overwrite

__all__ = ["parse_overwrite", "check_kwargs"]
