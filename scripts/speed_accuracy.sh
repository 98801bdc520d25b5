#!/usr/bin/env bash
# Speed accuracy by band of true speed, free flow and congestion: replays the SUMO Monaco
# scenarios (sumo-monaco: free flow; sumo-monaco-jam: ~3.5x the demand, queues) at 1, 5, 10
# and 30 s sampling through clean → assign → aggregate with the DEFAULT config (its
# estimators: space_mean), upserts revisions (the last of each segment-window wins), and
# scores with ../shared/scripts/score_speeds.py: MAPE, bias, coverage overall and MAPE and
# bias per band of true speed, beside the perfect estimator (true 1 Hz speeds, pooled over
# the SUMO edges each segment is associated with, scripts/perfect_speeds.py).
# Usage: scripts/speed_accuracy.sh PIPELINE_BINARY [INTERVAL_S ...]   (default: 1 5 10 30)
# Env: SHARED_DATA (default ../shared/data), SCENARIOS (default "sumo-monaco sumo-monaco-jam"),
#      WORK (keep outputs there), WORKERS (default 2), PARTIAL_START=drop (score the
#      observations without the first of each trace, aggregated by a Python copy of the
#      space mean: what an aggregate that does not count PARTIAL_START would publish).
# Needs python3 with numpy and pyarrow. Not part of the test suite: the data is not committed.
set -euo pipefail
BIN=$(realpath "${1:?usage: speed_accuracy.sh PIPELINE_BINARY [INTERVAL_S ...]}")
shift
INTERVALS=("${@:-1 5 10 30}")
read -r -a INTERVALS <<<"${INTERVALS[*]}"
cd "$(dirname "$0")/.."
SHARED=${SHARED_DATA:-../shared/data}
if [ ! -d "$SHARED/sumo-monaco" ] || [ ! -f "$SHARED/../scripts/score_speeds.py" ]; then
  echo "speed-accuracy: no SUMO scenarios at $SHARED (nor $SHARED/../scripts/score_speeds.py): nothing measured."
  exit 0
fi
SHARED=$(realpath "$SHARED")
SCORER="$SHARED/../scripts/score_speeds.py"
echo "speed-accuracy: reading scenarios and scorer from $SHARED"
PY=${PYTHON:-python3}
"$PY" -c 'import pyarrow, numpy' 2>/dev/null || { echo "speed-accuracy: needs python3 with numpy and pyarrow"; exit 1; }
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
WORKERS=${WORKERS:-2}
export PIPELINE_LOG=warn
[ -f "$WORK/monaco.graph" ] || "$BIN" graph build --osm "$SHARED/osm/monaco.osm.pbf" --out "$WORK/monaco.graph" >/dev/null
[ -f "$WORK/segments.parquet" ] || "$BIN" graph export "$WORK/monaco.graph" --out "$WORK/segments.parquet" >/dev/null

score() { # speeds.parquet scenario estimator json
  "$PY" "$SCORER" --segments "$WORK/segments.parquet" --speeds "$1" --scenario "$2" \
    --estimator "$3" --json "$4" >/dev/null
}

for sc in ${SCENARIOS:-sumo-monaco sumo-monaco-jam}; do
  dir="$SHARED/$sc"
  [ -d "$dir" ] || { echo "speed-accuracy: no $dir, skipped"; continue; }
  out="$WORK/$sc"
  mkdir -p "$out"
  "$PY" scripts/perfect_speeds.py "$SCORER" "$dir" "$WORK/segments.parquet" "$out/perfect.parquet"
  score "$out/perfect.parquet" "$dir" perfect "$out/perfect.json"
  for n in "${INTERVALS[@]}"; do
    run="$out/${n}s"
    mkdir -p "$run"
    "$BIN" replay --graph "$WORK/monaco.graph" --input "$dir/probes_${n}s.parquet" \
      --out-dir "$run" --workers "$WORKERS" | grep "^replay:" || true
    "$PY" scripts/speeds_final.py "$run" "${PARTIAL_START:-keep}"
    for est in $("$PY" -c 'import sys, pyarrow.parquet as pq; print(" ".join(sorted(set(pq.read_table(sys.argv[1], columns=["estimator"])["estimator"].to_pylist()))))' "$run/speeds_final.parquet"); do
      score "$run/speeds_final.parquet" "$dir" "$est" "$run/$est.json"
    done
  done
done
"$PY" scripts/speed_accuracy_table.py "$WORK" ${SCENARIOS:-sumo-monaco sumo-monaco-jam} -- "${INTERVALS[@]}"
