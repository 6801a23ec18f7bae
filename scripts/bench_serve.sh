#!/usr/bin/env bash
# Issue 20's measurement: `longrec bench loadtest` with the server pinned to CPU 0 and the clients to CPU 1, and
# the processes listed in $PAUSE_PIDS (say, background trainings) paused meanwhile (resumed on every exit,
# failures included).
#   PAUSE_PIDS="1234 5678" scripts/bench_serve.sh CODE_DIR RUN_DIR [loadtest options...]
# CODE_DIR is a checkout (this one, or a worktree of main for the old figures): its src/ is the code measured,
# loadtest and server alike. The server is re-pinned to CPU 0 as soon as it appears (and again after the
# kill -9 restart), the same way for old and new code, so the same command measures both.
# LOADTEST=path/to/loadtest.py runs that file as the load test instead (main's httpx client against this server).
set -euo pipefail
code=$(cd "$1" && pwd); run=$2; shift 2
pids=${PAUSE_PIDS:-}
resume() { for p in $pids; do kill -CONT "$p" 2>/dev/null || true; done; }
trap resume EXIT
for p in $pids; do kill -STOP "$p" 2>/dev/null || true; done
export PYTHONPATH="$code/src:$code" OMP_NUM_THREADS=1
if [ -n "${LOADTEST:-}" ]; then cmd=("$LOADTEST"); else cmd=(-m longrec bench loadtest); fi
taskset -c 1 "${PYTHON:-$(pwd)/.venv/bin/python}" "${cmd[@]}" "$run" "$@" &
lt=$!
while kill -0 "$lt" 2>/dev/null; do  # pin every server process the load test starts to CPU 0
  for p in $(pgrep -P "$lt" -f "longrec serve" || true); do
    taskset -a -p -c 0 "$p" >/dev/null 2>&1 || true
    for c in $(pgrep -P "$p" || true); do taskset -a -p -c 0 "$c" >/dev/null 2>&1 || true; done
  done
  sleep 0.1
done
wait "$lt"
