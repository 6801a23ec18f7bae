"""Studies and peer comparisons behind docs/BENCHMARKS.md: not installed with longrec, run from the repository root
as `python -m benchmarks.NAME --help`. They share longrec.bench.harness (isolated cells, memory, tables) with the
benchmarks that ship, `longrec bench ...`; the side-by-side timings share benchmarks.timing.

    attn_dropout      what dropout on the attention weights costs a softmax training step on CPU
    large_catalogue   loss memory and time over a 1M-item catalogue (full, chunked and sampled losses)
    large_log         preparing a 2M..10M-event Parquet log in bounded memory (data.mmap) against in memory
    lru_scan          the LRU recurrence: log-depth scan against the sequential loop
    peer_recbole      RecBole's SASRec against longrec's on ML-1M (RecBole in a venv of its own)
"""
