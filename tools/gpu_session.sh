#!/usr/bin/env bash
# Record the GPU results the book cites, on a machine with one CUDA GPU, in one go:
#
#   tools/gpu_session.sh start RUNS    # run everything below in the background (setsid), logging to RUNS/log
#   tools/gpu_session.sh wait RUNS S   # wait up to S seconds for it to finish; print the log's new lines
#
# Run it from a clean checkout of one commit, and name that commit in $LSTM_LAB_COMMIT (a copy of the tree
# sent to a remote machine may carry a stale .git): every result records it.
#
# Steps (a step whose result is already in RUNS is skipped, so a second start continues a broken session):
#   1. the CUDA tests (graph capture, autocast, cuDNN paths), which every later step relies on;
#   2. the Zaremba-medium language model with lstm_lab.LSTM, each window replayed from a CUDA graph
#      (--cuda-graphs), in the background from the start (the longest);
#   3. every chapter executed top to bottom (tools/run_chapters.py), beside step 2;
#   4. the Zaremba-medium language model with nn.LSTM (cuDNN) for each seed in $SEEDS (default "0"),
#      beside step 2;
#   5. chapter 5's depth study (tools/depth_study.py --device cuda, four runs side by side) into
#      RUNS/depth-200-cuda, beside step 2;
#   6. chapter 8's full-corpus poem model at seed 002's size (2 x 512, Adam at the study's tuned rate) into
#      RUNS/poems-full.json, beside step 2;
#   7. the speed ladder (python -m lstm_lab bench --device cuda), alone on the GPU once step 2 is done
#      (or after BENCH_DEADLINE seconds, default 1200, at the latest; the log says which);
#   8. chapter 7's throughput table (python -m lstm_lab throughput --device cuda), alone after step 7.
# The result JSONs land in RUNS; copy them into lstm_lab/recorded/ and commit them.
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

train() {  # train RNN SEED [OPTIONS]: the Zaremba-medium preset, resumed if its run folder holds a checkpoint
  local rnn=$1 seed=$2; shift 2
  local name="medium-$rnn-seed$seed" resume=()
  [ -f "$runs/$name/checkpoint.pt" ] && resume=(--resume)
  python -m lstm_lab train --preset zaremba-medium --rnn "$rnn" --seed "$seed" --out "$runs/$name" --no-progress \
    "${resume[@]}" "$@" --results "$runs/ptb-zaremba-medium-$rnn-seed$seed.json"
}

session() {
  echo "$(date -u +%T) session start on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
  python -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
             torch.backends.cudnn.version(), "python", sys.version.split()[0])'
  step cuda-tests "$runs/cuda-tests.passed" 'passed' bash -c "python -m pytest -q -p no:cacheprovider \
    tests/test_train.py tests/test_lstm_dropin.py tests/test_clinic.py tests/test_bench.py | tee $runs/cuda-tests.out \
    && echo passed > $runs/cuda-tests.passed"
  [ -s "$runs/cuda-tests.passed" ] || { echo "$(date -u +%T) CUDA tests failed: stopping"; echo "session done"; return; }
  step medium-lab "$runs/ptb-zaremba-medium-lab-seed0.json" '"complete": true' train lab 0 --cuda-graphs &
  local lab=$!
  step chapters "$runs/chapters-gpu.json" '"notebooks"' python tools/run_chapters.py --json "$runs/chapters-gpu.json" \
    --executed "$runs/executed" --note "ran beside the Zaremba-medium training with lstm_lab.LSTM on the same GPU"
  for seed in ${SEEDS:-0}; do
    step "medium-torch-seed$seed" "$runs/ptb-zaremba-medium-torch-seed$seed.json" '"complete": true' train torch "$seed"
  done
  step depth-study "$runs/depth-study.done" 'done' bash -c "python tools/depth_study.py --device cuda --workers 4 \
    --record $runs/depth-200-cuda --runs $runs/depth-runs && echo done > $runs/depth-study.done"
  local poems_resume=(); [ -f "$runs/poems-full/checkpoint.pt" ] && poems_resume=(--resume)
  step poems-full "$runs/poems-full.json" '"complete": true' python -m lstm_lab poems train --out "$runs/poems-full" \
    --optimizer adam --lr 0.003 --embed-size 512 --hidden-size 512 --num-layers 2 --dropout 0.2 --device cuda \
    "${poems_resume[@]}" --results "$runs/poems-full.json"
  while kill -0 "$lab" 2>/dev/null && [ $SECONDS -lt "${BENCH_DEADLINE:-1200}" ]; do sleep 5; done
  kill -0 "$lab" 2>/dev/null && echo "$(date -u +%T) bench: starting while medium-lab still runs (deadline)"
  step bench "$runs/bench-gpu.json" '"results"' python -m lstm_lab bench --device cuda --json "$runs/bench-gpu.json"
  step throughput "$runs/throughput-gpu.json" '"results"' python -m lstm_lab throughput --device cuda \
    --json "$runs/throughput-gpu.json"
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
