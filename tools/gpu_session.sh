#!/usr/bin/env bash
# Record the GPU results the book cites, on a machine with one CUDA GPU, in one go:
#
#   tools/gpu_session.sh start RUNS    # run everything below in the background (setsid), logging to RUNS/log
#   tools/gpu_session.sh wait RUNS S   # wait up to S seconds for it to finish; print the log's new lines
#
# Steps (a step whose result JSON is already in RUNS is skipped, so a second start continues a broken session):
#   1. the Zaremba-medium language model with lstm_lab.LSTM, in the background from the start (the longest);
#   2. every chapter executed top to bottom (tools/run_chapters.py), beside step 1;
#   3. the Zaremba-medium language model with nn.LSTM (cuDNN), beside step 1;
#   4. the speed ladder (python -m lstm_lab bench --device cuda), alone on the GPU once step 1 is done
#      (or after BENCH_DEADLINE seconds, default 1200, at the latest; the record notes which).
# The result JSONs land in RUNS; copy them into results/ and commit them.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=$1 runs=$2
mkdir -p "$runs"
log="$runs/log"

step() {  # step NAME RESULT DONE COMMAND...: run COMMAND unless RESULT holds DONE; log start, end and status
  local name=$1 result=$2 done=$3; shift 3
  if [ -s "$result" ] && grep -q "$done" "$result"; then
    echo "$(date -u +%T) $name: already recorded in $result, skipped"; return 0
  fi
  echo "$(date -u +%T) $name: start: $*"
  local t0=$SECONDS
  "$@" > "$runs/$name.out" 2>&1
  local rc=$?
  echo "$(date -u +%T) $name: exit $rc after $((SECONDS - t0)) s"; tail -n 5 "$runs/$name.out" | sed "s/^/  $name| /"
}

train() {  # train RNN: the Zaremba-medium preset, resumed if its run folder holds a checkpoint
  local rnn=$1 out="$runs/medium-$1"
  local resume=(); [ -f "$out/checkpoint.pt" ] && resume=(--resume)
  python -m lstm_lab train --preset zaremba-medium --rnn "$rnn" --out "$out" --no-progress "${resume[@]}" \
    --results "$runs/ptb-zaremba-medium-$rnn.json"
}

session() {
  echo "$(date -u +%T) session start on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
  python -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
             torch.backends.cudnn.version(), "python", sys.version.split()[0])'
  step medium-lab "$runs/ptb-zaremba-medium-lab.json" '"complete": true' train lab &
  local lab=$!
  step chapters "$runs/chapters-gpu.json" '"notebooks"' python tools/run_chapters.py --json "$runs/chapters-gpu.json" \
    --executed "$runs/executed" --note "ran beside the Zaremba-medium training with lstm_lab.LSTM on the same GPU"
  step medium-torch "$runs/ptb-zaremba-medium-torch.json" '"complete": true' train torch
  while kill -0 "$lab" 2>/dev/null && [ $SECONDS -lt "${BENCH_DEADLINE:-1200}" ]; do sleep 5; done
  kill -0 "$lab" 2>/dev/null && echo "$(date -u +%T) bench: starting while medium-lab still runs (deadline)"
  step bench "$runs/bench-gpu.json" '"results"' python -m lstm_lab bench --device cuda --json "$runs/bench-gpu.json"
  wait "$lab"
  echo "$(date -u +%T) session done"
}

case $mode in
  start)
    setsid nohup bash -c "$(declare -f step train session); runs='$runs'; session" >> "$log" 2>&1 < /dev/null &
    echo "started; log in $log" ;;
  wait)
    limit=$3 shown=0
    while :; do
      lines=$(wc -l < "$log"); [ "$lines" -gt "$shown" ] && sed -n "$((shown + 1)),${lines}p" "$log" && shown=$lines
      grep -q "session done" "$log" && break
      if [ $SECONDS -ge "$limit" ]; then
        echo "(still running after $limit s)"
        for out in "$runs"/*.out; do echo "== $out"; tail -n 2 "$out"; done
        break
      fi
      sleep 5
    done ;;
  *) echo "usage: tools/gpu_session.sh start|wait RUNS [SECONDS]" >&2; exit 2 ;;
esac
