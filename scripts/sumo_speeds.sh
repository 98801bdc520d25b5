#!/usr/bin/env bash
# Speed accuracy against an independent ground truth: replays the SUMO Monaco scenario's
# noisy probes (../shared/data/sumo-monaco, 1/5/10/30 s sampling) through clean → assign →
# aggregate with three estimators side by side, and scores each estimator with
# ../shared/scripts/score_speeds.py (length-weighted MAPE, bias, coverage against SUMO's own
# per-edge 60 s speeds). Late-data revisions are upserted first (the last revision of each
# (segment, window, estimator) wins), as a consumer would.
# Usage: scripts/sumo_speeds.sh PIPELINE_BINARY [INTERVAL_S ...]   (default: 1 5 10 30)
# Env: MIN_SAMPLES (score only windows with at least that many samples; default 1),
#      SUMO_WORK (keep outputs there), SUMO_SCENARIO (another scenario folder).
# Needs python3 with numpy and pyarrow (installed into a venv under ~/.cache). Never part
# of the test suite: the data is not committed.
set -euo pipefail
BIN=$(realpath "${1:?usage: sumo_speeds.sh PIPELINE_BINARY [INTERVAL_S ...]}")
shift
INTERVALS=("${@:-1 5 10 30}")
read -r -a INTERVALS <<<"${INTERVALS[*]}"
cd "$(dirname "$0")/.."
SHARED=$(realpath "${SHARED_DATA:-../shared/data}")
SCENARIO=$(realpath "${SUMO_SCENARIO:-$SHARED/sumo-monaco}")
SCORER=$(realpath "$SHARED/../scripts/score_speeds.py")
OSM="$SHARED/osm/monaco.osm.pbf"
VENV=${PIPELINE_VENV:-$HOME/.cache/pipeline-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import pyarrow, numpy' 2>/dev/null || "$VENV/bin/pip" install -q pyarrow numpy
WORK=${SUMO_WORK:-$(mktemp -d)}
mkdir -p "$WORK"
MIN_SAMPLES=${MIN_SAMPLES:-1}
export PIPELINE_LOG=warn

[ -f "$WORK/monaco.graph" ] || "$BIN" graph build --osm "$OSM" --out "$WORK/monaco.graph" >/dev/null
[ -f "$WORK/segments.parquet" ] || "$BIN" graph export "$WORK/monaco.graph" --out "$WORK/segments.parquet" >/dev/null
cat > "$WORK/speeds.toml" <<'TOML'
[stages.aggregate]
type = "aggregate"
window_ms = 60000

[[stages.aggregate.estimators]]
kind = "space_mean"

[[stages.aggregate.estimators]]
kind = "median"

[[stages.aggregate.estimators]]
kind = "trimmed_mean"
TOML

for n in "${INTERVALS[@]}"; do
  out="$WORK/${n}s"
  mkdir -p "$out"
  "$BIN" replay --graph "$WORK/monaco.graph" --input "$SCENARIO/probes_${n}s.parquet" \
    --out-dir "$out" --config "$WORK/speeds.toml" | tail -2
  "$VENV/bin/python" - "$out/speeds.parquet" "$out/speeds_final.parquet" <<'PY'
import sys, pyarrow.parquet as pq, pyarrow.compute as pc
t = pq.read_table(sys.argv[1])
t = t.sort_by([("segment_id", "ascending"), ("window_start_ms", "ascending"),
               ("estimator", "ascending"), ("revision", "descending")])
keys = list(zip(t["segment_id"].to_pylist(), t["window_start_ms"].to_pylist(), t["estimator"].to_pylist()))
keep = [i for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
pq.write_table(t.take(keep), sys.argv[2])
PY
  for est in space_mean median trimmed_mean; do
    printf '%4ss %-13s ' "$n" "$est"
    "$VENV/bin/python" "$SCORER" --segments "$WORK/segments.parquet" \
      --speeds "$out/speeds_final.parquet" --scenario "$SCENARIO" --estimator "$est" \
      --min-samples "$MIN_SAMPLES" | tail -1
  done
done
