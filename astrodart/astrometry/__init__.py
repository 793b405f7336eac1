"""Layer 2: plate solving (offline with astrometry.net index files, online fallback) and WCS checks.

:mod:`astrodart.astrometry.solve` names every backend and public name;
:mod:`~astrodart.astrometry.index` (index files, search hints),
:mod:`~astrodart.astrometry.engine` (in-process engine),
:mod:`~astrodart.astrometry.solve_field` (``solve-field``),
:mod:`~astrodart.astrometry.online` (nova.astrometry.net),
:mod:`~astrodart.astrometry.verify` (WCS verification, SIP significance),
:mod:`~astrodart.astrometry.result` (the result every backend returns).
Writing solutions into files is :mod:`astrodart.pipeline.solve`.
"""
