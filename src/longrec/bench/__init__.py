"""Benchmarks a user runs on their own hardware, `longrec bench NAME` (or `python -m longrec.bench.NAME`): scaling
(its cell in scaling_cell), stream_latency, loadtest, window_sweep; harness.py is what they share with the studies
under benchmarks/."""
