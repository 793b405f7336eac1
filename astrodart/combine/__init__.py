"""Layer 2: the one stacking engine and its file-level driver.

- :mod:`~astrodart.combine.methods`: the vocabulary (``ENGINE_METHODS``, ``COMBINE_METHODS``,
  ``CLIPPING_METHODS``) and :class:`~astrodart.combine.methods.Rejection`;
- :mod:`~astrodart.combine.engine`: :func:`~astrodart.combine.engine.combine_band`, mean/median/sum
  of a band of frames after rejection (sorting networks in :mod:`~astrodart.combine.sorting`,
  rejection algorithms in :mod:`~astrodart.combine.rejection`);
- :mod:`~astrodart.combine.uncertainty` and :mod:`~astrodart.combine.masters`: master
  bias/dark/flat as calls of the engine with uncertainties propagated from the inputs;
- :mod:`~astrodart.combine.reading` and :mod:`~astrodart.combine.files`:
  :func:`~astrodart.combine.files.combine_files`, files combined band by band within a
  memory limit;
- the AstroDART-compatible ``image_combination`` stage lives in :mod:`astrodart.pipeline.image_combination` (it writes the run log).
"""
