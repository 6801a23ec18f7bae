"""Benchmarks: mixers, ops and end-to-end timings; each module runs with `python -m longrec.bench.NAME`."""
