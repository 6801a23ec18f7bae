"""Benchmarks a user runs on their own hardware, `longrec bench NAME` (or `python -m longrec.bench.NAME`): scaling
(its cell in scaling_cell, its outputs in scaling_report), stream_latency, loadtest, window_sweep; harness.py is what
they share with the studies under benchmarks/."""
