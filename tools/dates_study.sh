#!/usr/bin/env bash
# Train chapter 9's date translators: no attention and each of Luong's scores, for each seed in $SEEDS
# (default "0 1"), one after another on the CPU.  Each run's results JSON goes to RECORD (default
# lstm_lab/recorded/dates); a run already complete there is skipped, one with a checkpoint is resumed.
#
#   tools/dates_study.sh [RUNS [RECORD]]      # run folders in RUNS (default runs/dates)
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs/dates} record=${2:-lstm_lab/recorded/dates}
mkdir -p "$runs" "$record"
for seed in ${SEEDS:-0 1}; do
  for score in none dot general concat; do
    name="$score-seed$seed"
    if grep -q '"complete": true' "$record/$name.json" 2>/dev/null; then
      echo "$name: already recorded, skipped"; continue
    fi
    resume=()
    [ -f "$runs/$name/checkpoint.pt" ] && resume=(--resume)
    echo "$(date -u +%T) $name: start"
    python -m lstm_lab dates train --score "$score" --seed "$seed" --out "$runs/$name" --results "$record/$name.json" \
      --device cpu --threads 1 "${resume[@]}" > "$runs/$name.log" 2>&1
    echo "$(date -u +%T) $name: exit $? ($(tail -n 1 "$runs/$name.log"))"
  done
done
