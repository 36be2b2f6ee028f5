"""Latency lookup tables: ``table`` (Profile, file format, predict), ``build`` (measure + fit +
provenance, ``profile_to_file``), ``plans`` (ProfileConfig, what a build measures), ``measure``
(CompiledMeter, interleaved blocks, resumable cache), ``curves`` (pure curve rules),
``costmodel`` (the whole-model cost model)."""
