"""Stand-ins for engines that cannot be installed on the project's machines.

A stand-in speaks an engine's documented command line and output format and does real
work with real parts (transformers, torchao, the project's GGUF writer), so that the
runner that drives the engine is exercised end to end: argv, exit codes, JSON parsing,
timeouts, fault reporting. A stand-in is never the engine itself, and says so in its
``--version`` line, its output and its files. Tests that need the real engine are marked
(``requires_apr``) and skip when only the stand-in is present.

- :mod:`standins.apr`: the ``apr`` CLI of aprender.
"""
