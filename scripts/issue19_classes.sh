#!/usr/bin/env bash
# Issue 19, by hand: one representative command for each class of bad input the issue lists (and for what a run
# directory must do on its own), run in a fresh temporary directory. A row per class: the exit code, the number of
# output lines (stdout + stderr), whether a traceback appeared, whether a file was left behind or changed, and the
# verdict. Bad input must give exit 2, exactly one line, no traceback, nothing left behind; the accepted cases exit
# 0. Exits 1 when any class breaks its rule.
#
#   bash scripts/issue19_classes.sh                      # with `longrec` on PATH (make setup)
#   LONGREC="python -m longrec" PYTHON=python bash scripts/issue19_classes.sh
set -u
LONGREC=${LONGREC:-longrec}
PYTHON=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/longrec-issue19.XXXXXX")
trap 'rm -rf "$work"' EXIT
export LONGREC_CACHE_DIR="$work/.cache"  # prepared corpora go here, outside what the rows compare
mkdir -p "$work/a/b" && cd "$work/a/b"  # name=../../x resolves inside $work
fails=0

lr() { $LONGREC "$@"; }  # unquoted: LONGREC may be a command with arguments
# lr in the background with SIGINT restored: a shell started in the background hands its children SIGINT ignored,
# and a Python started so would never see Ctrl-C
restore_sigint='import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])'
lr_bg() { $PYTHON -c "$restore_sigint" $LONGREC "$@" & }
snap() { find "$work" -path "$work/.cache" -prune -o -type f -printf '%P %s %T@\n' | sort; }
row() { printf '%-40s %4s %5s %9s %5s  %-4s  %s\n' "$@"; }

# check CLASS WANT CMD...: run CMD (WANT = its expected exit code; 2 = bad input, judged by the whole rule)
check() {
  local cls=$1 want=$2 out rc before after lines tb left verdict first
  shift 2
  before=$(snap)
  out=$("$@" 2>&1 </dev/null)
  rc=$?
  after=$(snap)
  lines=$(printf '%s\n' "$out" | tr '\r' '\n' | grep -c .)
  tb=no; grep -q Traceback <<<"$out" && tb=yes
  left=no; [ "$before" != "$after" ] && left=yes
  verdict=ok
  if [ "$rc" != "$want" ] || [ "$tb" = yes ]; then verdict=FAIL; fi
  if [ "$want" = 2 ] && { [ "$lines" != 1 ] || [ "$left" = yes ]; }; then verdict=FAIL; fi
  first=$(printf '%s\n' "$out" | tr '\r' '\n' | grep . | tail -1 | cut -c1-150)
  row "$cls" "$rc" "$lines" "$tb" "$left" "$verdict" "$first"
  if [ "$verdict" != ok ]; then
    fails=$((fails + 1))
    printf '%s\n' "$out" | tail -5 | sed 's/^/      | /'
  fi
}

# fixtures: a walk log (200 users x 20 events over 40 items) and one small finished run
log=$work/walk.txt
awk 'BEGIN { for (u = 1; u <= 200; u++) for (t = 0; t < 20; t++) print u, (u * 7 + t) % 40 + 1 }' >"$log"
tiny=(model.dim=16 model.max_len=12 train.batch_size=64 train.epochs=1 eval.batch_size=256)
lr train gru4rec "data.name=$log" "${tiny[@]}" --run-dir "$work/run" >/dev/null 2>&1 || { echo "fixture run failed"; exit 1; }
fresh() { rm -rf "$work/$1" && cp -r "$work/run" "$work/$1" && echo "$work/$1"; }
edit_json() { $PYTHON - "$@" <<'EOF'
import json, sys
path, key, value = sys.argv[1], sys.argv[2], sys.argv[3]
obj = json.load(open(path))
if value == "DELETE":
    del obj[key]
else:
    obj[key] = json.loads(value)
json.dump(obj, open(path, "w"))
EOF
}
damage_optim() { $PYTHON - "$@" <<'EOF'
import sys
from safetensors.torch import load_file, save_file
path, how = sys.argv[1], sys.argv[2]
t = load_file(path)
key = next(k for k in t if k.endswith("exp_avg"))
t[key] = t[key][:1] if how == "shape" else t[key] * float("nan")
save_file(t, path)
EOF
}

row class rc lines traceback left rule "last line of output"
row ----- -- ----- --------- ---- ---- -------------------
# run-directory JSON that parses but has the wrong shape
r=$(fresh r1); edit_json "$r/model.json" num_items '"12"'
check "model.json: num_items a string" 2 lr eval "$r"
r=$(fresh r2); edit_json "$r/results.json" training '{"epochs": 1}'
check "results.json: training incomplete" 2 lr report "$r"
r=$(fresh r3); edit_json "$r/id_maps.json" items '{"a": 1}'
check "id_maps.json: items a mapping" 2 lr eval "$r"
r=$(fresh r4); edit_json "$r/trainer.json" epoch '"one"'
check "trainer.json: epoch a string" 2 lr train gru4rec "data.name=$log" "${tiny[@]}" train.epochs=2 --run-dir "$r" --resume
r=$(fresh r5); echo '[1, 2]' >"$r/model.json"
check "model.json: a JSON list" 2 lr eval "$r"
rm -rf "$work"/r[1-5]

# numbers that are not range-checked (a real log: the config must fail before the data is read)
for o in train.lr=.inf train.lr=0 train.lr=1e10 train.weight_decay=-0.1 train.weight_decay=.nan model.ffn_mult=-1 \
         data.kcore=-1 eval.negatives=0 train.threads=100000 train.patience=0; do
  check "config $o" 2 lr train sasrec "data.name=$log" "$o" --runs-root runs
done
check "eval.negatives >= catalogue (40 items)" 2 lr train sasrec "data.name=$log" eval.sampled=uniform \
  eval.negatives=40 --runs-root runs
check "mixer rule: lru r_min > r_max" 2 lr train lrurec "data.name=$log" model.mixer_args.r_min=0.95 \
  model.mixer_args.r_max=0.9 --runs-root runs
check "cross-field: dim not divisible by heads" 2 lr train sasrec "data.name=$log" model.heads=3 --runs-root runs
check "serve --port 70000" 2 lr serve "$work/run" --port 70000
check "plot --last 0" 2 lr plot attention "$work/run" --user 1 --last 0
check "argparse: unknown option" 2 lr eval "$work/run" --bogus
check "argparse: no subcommand" 2 lr

# training with no usable users
awk 'BEGIN { for (u = 1; u <= 5; u++) print u, 1 "\n" u, 2 }' >"$work/short.txt"
check "no usable users (all under 3 events)" 2 lr train sasrec "data.name=$work/short.txt" --runs-root runs
echo "1 1" >"$work/one.txt"
check "one-event log" 2 lr train sasrec "data.name=$work/one.txt" --runs-root runs
rm -f "$work/short.txt" "$work/one.txt"

# the run name used as a path
check "name=''" 2 lr train sasrec "data.name=$log" name= --runs-root runs
check "name=../../x" 2 lr train sasrec "data.name=$log" name=../../x --runs-root runs
check "name=<absolute>" 2 lr train sasrec "data.name=$log" "name=$work/abs" --runs-root runs

# input read wrongly
printf '\xef\xbb\xbfuser,item\n' >"$work/bom.csv"; awk 'BEGIN { for (u = 1; u <= 5; u++) for (t = 1; t <= 4; t++) print u "," t }' >>"$work/bom.csv"
check "UTF-8 BOM CSV (accepted)" 0 lr data info "$work/bom.csv" --no-cache
awk 'BEGIN { for (u = 1; u <= 5; u++) for (t = 1; t <= 4; t++) print u, t + 10, 5 }' >"$work/ratings.txt"
check "3-field .txt (user item rating)" 2 lr data info "$work/ratings.txt" --no-cache
printf 'user,item,item\n1,2,3\n1,3,4\n' >"$work/dup.csv"
check "duplicate header column" 2 lr data info "$work/dup.csv" --no-cache
$PYTHON -c "import pyarrow as pa, pyarrow.parquet as pq, sys; pq.write_table(pa.table({'user': [1, 1, 1], 'item': [1, 2, 3]}), sys.argv[1])" "$work/log.parquet"
check "Parquet read with --format csv" 2 lr data info "$work/log.parquet" --format csv --no-cache
rm -f "$work/bom.csv" "$work/ratings.txt" "$work/dup.csv" "$work/log.parquet"

# --resume
r=$(fresh r6); edit_json "$r/trainer.json" epoch DELETE
check "trainer.json without epoch" 2 lr train gru4rec "data.name=$log" "${tiny[@]}" train.epochs=2 --run-dir "$r" --resume
r=$(fresh r7); damage_optim "$r/optim.safetensors" shape
check "optimizer state of the wrong shape" 2 lr train gru4rec "data.name=$log" "${tiny[@]}" train.epochs=2 --run-dir "$r" --resume
r=$(fresh r8); damage_optim "$r/optim.safetensors" nan
check "optimizer state with NaNs" 2 lr train gru4rec "data.name=$log" "${tiny[@]}" train.epochs=2 --run-dir "$r" --resume
rm -rf "$work"/r[6-8]
# Ctrl-C in epoch 1: a big enough log that the epoch is still running when SIGINT arrives
awk 'BEGIN { for (u = 1; u <= 5000; u++) for (t = 0; t < 100; t++) print u, (u * 7 + t * 3) % 500 + 1 }' >"$work/big.txt"
big=(sasrec "data.name=$work/big.txt" model.max_len=100 train.epochs=1 --run-dir "$work/ctrlc")
lr_bg train "${big[@]}" >"$work/ctrlc.out" 2>&1
pid=$!
for _ in $(seq 3000); do grep -q "epoch 1" "$work/ctrlc.out" && break; sleep 0.2; done  # the epoch's bar is up
kill -INT "$pid"
wait "$pid"
rc=$?
out=$(tr '\r' '\n' <"$work/ctrlc.out" | grep .)
verdict=ok
if [ "$rc" != 130 ] || grep -q Traceback <<<"$out" || ! tail -1 <<<"$out" | grep -q "longrec: interrupted"; then
  verdict=FAIL; fails=$((fails + 1))
fi
row "Ctrl-C in epoch 1" "$rc" "$(grep -c . <<<"$out")" "$(grep -q Traceback <<<"$out" && echo yes || echo no)" - \
  "$verdict" "$(tail -1 <<<"$out")"
check "  ... then --resume" 0 lr train "${big[@]}" --resume
rm -rf "$work/ctrlc" "$work/ctrlc.out"

# synth and bench
check "synth --users 0" 2 lr synth "$work/s.txt" --users 0
check "synth --period 5 2" 2 lr synth "$work/s.txt" --period 5 2
check "bench scaling --lengths 0" 2 lr bench scaling --lengths 0
check "bench stream-latency --threads 100000" 2 lr bench stream-latency --threads 100000

# storage paths
check "--store sqlite:///no/such/dir/s.db" 2 lr serve "$work/run" --store sqlite:///no/such/dir/s.db
lr_bg serve "$work/run" --store sqlite:///state.db --port 18419 --log-level warning >"$work/serve.out" 2>&1
pid=$!
for _ in $(seq 600); do [ -f state.db ] && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
kill -INT "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
verdict=FAIL; [ -f state.db ] && [ ! -e /state.db ] && verdict=ok
[ "$verdict" = ok ] || fails=$((fails + 1))
row "sqlite:///state.db is ./state.db" - - "$(grep -q Traceback "$work/serve.out" && echo yes || echo no)" - \
  "$verdict" "$(ls state.db 2>/dev/null)"
rm -f state.db* "$work/serve.out"

# a run directory that stands alone: copied elsewhere, its log moved away, run from another working directory
mv "$log" "$log.away"
r=$(fresh copy)
check "stand-alone: eval, log gone" 0 lr eval "$r"
check "stand-alone: recommend, log gone" 0 lr recommend "$r" --users all --k 5 --out "$work/top.csv"
check "stand-alone: resume, log gone" 0 lr train gru4rec "data.name=$log" "${tiny[@]}" train.epochs=2 --run-dir "$r" --resume
rm -rf "$r" "$work/top.csv"
mv "$log.away" "$log"
lr train gru4rec "data.name=$log" "${tiny[@]}" data.mmap=true --run-dir "$work/mm" >/dev/null 2>&1
mv "$log" "$log.away"
check "data.mmap run, log gone: eval" 2 lr eval "$work/mm"
mv "$log.away" "$log"

echo
if [ "$fails" -gt 0 ]; then echo "$fails class(es) broke the rule"; exit 1; fi
echo "every class holds"
