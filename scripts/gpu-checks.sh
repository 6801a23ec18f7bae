#!/usr/bin/env bash
# Everything longrec checks on one CUDA machine, in one pass (docs/BENCHMARKS.md, docs/RESULTS.md):
#   1. ML-1M / Beauty trainings of every preset the open issues ask for, all at once on the one GPU, each with a
#      wall-clock budget (TRAIN_MIN minutes), then the LinRec paper protocol (100 popularity-sampled negatives);
#   2. meanwhile the CUDA tests (pytest -m gpu: fla == chunked, fp32 and bf16; every mixer CUDA == CPU);
#   3. after the trainings, on the otherwise idle GPU: the scaling sweeps (mixer, block, model; bf16 and fp32,
#      raw SDPA and fla kernels beside the mixers) and the LRU scan-vs-loop table.
# Usage: OUT=dir LONGREC_DATA_DIR=data LONGREC_GIT_COMMIT=<sha sent> TRAIN_MIN=5 bash scripts/gpu-checks.sh
#   ONLY="ml-1m-lrurec ml-1m-sasrec" trains only those runs (default: all 28); TRAIN_MIN=0 trains none.
# Lessons of the first lease (2026-11-26, H200): 16 runs sharing the GPU took 8-15 s/epoch each (4.5 min gave
# 20-30 epochs, short of convergence); fla's first Triton compile+autotune took over 30 s, so its sweep runs last
# and alone; a copied tree's .git may be stale, so state the commit in LONGREC_GIT_COMMIT.
# Needs: CUDA torch, flash-linear-attention (pip install 'longrec[gpu]'), ml-1m and amazon-beauty under the data dir.
# Writes OUT/log.txt, OUT/pytest.txt, OUT/bench.tgz and OUT/runs-[a-d].tgz (run folders without last/optimizer state).
set -u
OUT=${OUT:-runs/gpu-checks}
TRAIN_MIN=${TRAIN_MIN:-5}
BENCH_S=${BENCH_S:-200}     # seconds for all benchmark sweeps together
LENGTHS=${LENGTHS:-"128 256 512 1024 2048 4096 8192 16384"}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}           # overrides appended to every training (a dry run: data.name=ml-100k train.epochs=1)
RUNS=$OUT/runs
mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export LONGREC_GIT_COMMIT=${LONGREC_GIT_COMMIT:-}  # the commit sent; empty: the copy's own .git (may be stale)
exec > >(tee -a "$OUT/log.txt") 2>&1
stamp() { echo "[$(date +%T)] $*"; }

stamp "start: $(nvidia-smi -L 2>/dev/null | head -1); commit $(git rev-parse --short HEAD 2>/dev/null)"
$PY -c "import torch, fla; print('torch', torch.__version__, 'fla', fla.__version__, 'cuda', torch.cuda.is_available())"
$PY -m longrec data prepare ml-1m >/dev/null && $PY -m longrec data prepare beauty >/dev/null \
  || stamp "data preparation failed"

# 1. trainings: NAME CONFIG OVERRIDES...; all start together and share the GPU (epoch times are contended)
ONLY=${ONLY:-}
train() {
  local name=$1 config=$2; shift 2
  if [ "$TRAIN_MIN" = 0 ] || { [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; }; then return; fi
  $PY -m longrec train "$config" "train.time_budget_min=$TRAIN_MIN" train.threads=1 "$@" \
    $EXTRA --run-dir "$RUNS/$name" >"$RUNS/$name.log" 2>&1 &
  PIDS+=($!)
}
PIDS=()
# RecBole's default batch for last-item training, as the LinRec code; length buckets: 0.60 of the cells, 1.6-2x
# faster on CPU, no sign of harm on ml-100k (docs/RESULTS.md); the lease's rows before 2026-11-27 had random batches
PAPER=(train.batch_size=2048 train.bucket=50 data.name=ml-1m)
train ml-1m-sasrec configs/ml-1m-sasrec.yaml
train ml-1m-lrurec configs/ml-1m-lrurec.yaml train.patience=20
train ml-1m-causal-linrec configs/ml-1m-causal-linrec.yaml
train ml-1m-causal-linrec-local configs/ml-1m-causal-linrec-local.yaml
train ml-1m-recgrela-causal configs/ml-1m-recgrela-causal.yaml
train ml-1m-linrec-sasrec linrec-sasrec "${PAPER[@]}"
# end to end (BENCHMARKS "End to end"): the same networks trained on every prefix instead of every position
train ml-1m-sasrec-prefix configs/ml-1m-sasrec.yaml train.objective=last_item "${PAPER[@]}"
train ml-1m-causal-linrec-prefix configs/ml-1m-causal-linrec.yaml train.objective=last_item "${PAPER[@]}"
train ml-1m-linrec-sasrec-no-l2 linrec-sasrec "${PAPER[@]}" model.mixer_args.l2=false
train ml-1m-linrec-sasrec-no-elu linrec-sasrec "${PAPER[@]}" model.mixer_args.elu=false
train ml-1m-lt-sasrec lt-sasrec data.name=ml-1m
train ml-1m-ea-sasrec ea-sasrec data.name=ml-1m
train ml-1m-hydrarec hydrarec data.name=ml-1m
train ml-1m-hydrarec-causal hydrarec-causal data.name=ml-1m
train ml-1m-recgrela recgrela data.name=ml-1m
train ml-1m-sasrec-sampled-uniform configs/ml-1m-sasrec-sampled.yaml train.sampler=uniform
train ml-1m-sasrec-gbce configs/ml-1m-sasrec-gbce.yaml
# issue 21: the top two models in three seeds each, and BERT4Rec to its published level (~200 epochs); alone,
# ONLY="ml-1m-sasrec-ffn4h2-s42 ml-1m-sasrec-ffn4h2-s1 ml-1m-sasrec-ffn4h2-s2 ml-1m-gated-delta-s42 ..." TRAIN_MIN=10
for s in 42 1 2; do
  train ml-1m-sasrec-ffn4h2-s$s configs/ml-1m-sasrec-ffn4h2.yaml seed=$s
  train ml-1m-gated-delta-s$s configs/ml-1m-gated-delta.yaml seed=$s
  train ml-1m-gated-delta-d01-s$s configs/ml-1m-gated-delta.yaml seed=$s model.dropout=0.1  # valid 0.2026 on CPU
done
train ml-1m-bert4rec configs/ml-1m-bert4rec.yaml
train beauty-lrurec lrurec data.name=beauty model.max_len=50
train beauty-sasrec configs/beauty-sasrec.yaml
stamp "${#PIDS[@]} trainings started, $TRAIN_MIN min each"

# 2. CUDA tests while they train
# fla in a second process: a fault there poisons the CUDA context of every later test in the same process
for sel in "not fla" "fla"; do
  $PY -m pytest -q -p no:cacheprovider -m gpu -k "$sel" tests/test_gpu.py tests/test_ops_linear_attn.py \
    >>"$OUT/pytest.txt" 2>&1
  stamp "pytest -m gpu -k '$sel': $(grep -E '^(FAILED|ERROR)|passed|failed' "$OUT/pytest.txt" | tail -n 4 | tr '\n' ' ')"
done

[ ${#PIDS[@]} -gt 0 ] && wait "${PIDS[@]}"  # not a bare wait: that would also wait for the tee above
stamp "trainings done"
if [ ${#PIDS[@]} -gt 0 ]; then
for d in "$RUNS"/*/; do
  n=$(basename "$d")
  $PY - "$d" <<'EOF' || echo "$n: no results.json ($(tail -1 "$RUNS/$n.log" 2>/dev/null))"
import json, sys
r = json.load(open(sys.argv[1] + "results.json"))
t, tr = r.get("test", {}), r.get("training", {})
print(f"{sys.argv[1].rstrip('/').split('/')[-1]}: test ndcg@10 {t.get('ndcg@10')} recall@10 {t.get('recall@10')} "
      f"epochs {tr.get('epochs')} best {tr.get('best_epoch')} s/epoch {tr.get('seconds_per_epoch')} {r['peak_memory']}")
EOF
done
for n in ml-1m-sasrec ml-1m-linrec-sasrec ml-1m-linrec-sasrec-no-l2 ml-1m-linrec-sasrec-no-elu; do
  [ -f "$RUNS/$n/best.safetensors" ] && $PY -m longrec eval "$RUNS/$n" --sampled popularity --negatives 100 \
    >"$RUNS/$n/eval-popularity-100.txt" 2>&1 && stamp "$n popularity-100: $(tail -3 "$RUNS/$n/eval-popularity-100.txt")"
done

group() { local out=$1; shift; (cd "$RUNS" && tar czf "$out" --exclude last.safetensors --exclude 'optim*' \
  $(for n in "$@"; do [ -d "$n" ] && echo "$n" "$n.log"; done)); }
group "$OUT/runs-a.tgz" ml-1m-sasrec ml-1m-linrec-sasrec ml-1m-linrec-sasrec-no-l2 ml-1m-linrec-sasrec-no-elu \
  ml-1m-causal-linrec ml-1m-causal-linrec-local ml-1m-lrurec ml-1m-recgrela-causal
group "$OUT/runs-b.tgz" ml-1m-lt-sasrec ml-1m-ea-sasrec ml-1m-hydrarec ml-1m-hydrarec-causal ml-1m-recgrela \
  ml-1m-sasrec-sampled-uniform ml-1m-sasrec-gbce
group "$OUT/runs-c.tgz" beauty-lrurec beauty-sasrec ml-1m-sasrec-prefix ml-1m-causal-linrec-prefix
group "$OUT/runs-d.tgz" ml-1m-sasrec-ffn4h2-s42 ml-1m-sasrec-ffn4h2-s1 ml-1m-sasrec-ffn4h2-s2 ml-1m-gated-delta-s42 \
  ml-1m-gated-delta-s1 ml-1m-gated-delta-s2 ml-1m-gated-delta-d01-s42 ml-1m-gated-delta-d01-s1 \
  ml-1m-gated-delta-d01-s2 ml-1m-bert4rec
fi

# 3. benchmarks on the idle GPU (bench.tgz rewritten after each sweep: a timeout still leaves the finished ones)
B=$OUT/bench
mkdir -p "$B"
MIXERS="sasrec causal-linrec lt-sasrec hydrarec-causal recgrela-causal lrurec ea-sasrec kernel:sdpa"
bench() { local name=$1 limit=$2; shift 2
  timeout "$limit" $PY -m longrec.bench.scaling --device $DEVICE --lengths $LENGTHS --time-limit 20 --out "$B/$name" "$@" \
    >"$B/$name.txt" 2>&1; stamp "bench $name: exit $?"
  tar czf "$OUT/bench.tgz" -C "$OUT" bench; }
bench mixer-bf16 $((BENCH_S * 2 / 10)) --level mixer --dtype bf16 --variants $MIXERS
bench block-bf16 $((BENCH_S * 15 / 100)) --level block --dtype bf16 --variants $MIXERS
bench block-fp32 $((BENCH_S * 15 / 100)) --level block --dtype fp32 --variants $MIXERS
bench model-bf16 $((BENCH_S * 15 / 100)) --level model --dtype bf16 --variants sasrec causal-linrec lrurec hydrarec-causal recgrela-causal
# fla last, in its own process: a compile failure or fault must not take the CUDA context of the other sweeps
bench fla-bf16 $((BENCH_S * 25 / 100)) --level mixer --dtype bf16 --variants sasrec causal-linrec causal-linrec@fla lt-sasrec lt-sasrec@fla kernel:sdpa kernel:fla
timeout $((BENCH_S / 10)) $PY -m benchmarks.lru_scan --device $DEVICE --lengths 200 1000 4000 16000 --batches 1 8 128 \
  >"$B/lru-scan.txt" 2>&1; stamp "lru scan: exit $?"
cat "$B"/*.txt | grep -v "^ " | head -250

tar czf "$OUT/bench.tgz" -C "$OUT" bench
ls -la "$OUT"
stamp "end"
