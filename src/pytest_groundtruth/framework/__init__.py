"""The suite framework below the built-in suites: where a calibrated bound comes from.

* :mod:`.bounds` - bound files (the package defaults, a model's committed file), one
  reader, and the resolution order with each bound's provenance;
* :mod:`.rules` - the calibration rules (worst correct conversion + 3 standard errors, ...)
  as pure functions of measured statistics;
* :mod:`.reference` - reference conversions of a model made by llama.cpp's own converter
  and quantizer, recipe-matched or type-matched to an artifact;
* :mod:`.auto` - bounds for the model at hand, derived from its reference conversions
  and cached by content.

Nothing here imports a suite: a suite hands its :class:`~.bounds.Calibration` (file,
statistics, rule) to these functions.
"""
