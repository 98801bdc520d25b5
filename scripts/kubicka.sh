#!/usr/bin/env bash
# Map-matching accuracy on the 30 real Kubicka et al. (2015) tracks with hand-corrected
# ground truth: builds each track's graph, replays its probes (optionally subsampled) through
# clean + assign, exports the segments and scores with ../shared/scripts/score_kubicka.py
# (route mismatch fraction, precision, recall, by length).
# Usage: scripts/kubicka.sh PIPELINE_BINARY [STEP_S ...]   (default steps: 1 5 15 30)
# Env: KUBICKA_CONFIG (a config file whose assign stage settings replay uses),
#      KUBICKA_WORK (keep outputs there).
# Needs ../shared/data/kubicka and python3 with pyarrow (installed into a venv under
# ~/.cache by this script). Never part of the test suite: the data is not committed.
set -euo pipefail
BIN=$(realpath "${1:?usage: kubicka.sh PIPELINE_BINARY [STEP_S ...]}")
shift
STEPS=("${@:-1 5 15 30}")
read -r -a STEPS <<<"${STEPS[*]}"
cd "$(dirname "$0")/.."
SHARED=$(realpath "${SHARED_DATA:-../shared/data}")
DATA="$SHARED/kubicka"
SCORER=$(realpath "$SHARED/../scripts/score_kubicka.py")
VENV=${PIPELINE_VENV:-$HOME/.cache/pipeline-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import pyarrow' 2>/dev/null || "$VENV/bin/pip" install -q pyarrow numpy
WORK=${KUBICKA_WORK:-$(mktemp -d)}
export PIPELINE_LOG=warn

for step in "${STEPS[@]}"; do
  out="$WORK/step$step"
  mkdir -p "$out"
  start=$(date +%s.%N)
  probes_total=0
  for track in "$DATA"/*/; do
    id=$(basename "$track")
    mkdir -p "$out/$id"
    [ -f "$WORK/$id.graph" ] || "$BIN" graph build --osm "$track/map.osm.pbf" --out "$WORK/$id.graph" >/dev/null
    [ -f "$out/$id/segments.parquet" ] || "$BIN" graph export "$WORK/$id.graph" --out "$out/$id/segments.parquet" >/dev/null
    # Keep every step-th fix (1 Hz input), as Parquet with the default column names.
    "$VENV/bin/python" - "$track/probes.csv" "$out/$id/input.parquet" "$step" <<'PY'
import sys, pyarrow as pa, pyarrow.csv as csv, pyarrow.parquet as pq
src, dst, step = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = csv.read_csv(src, convert_options=csv.ConvertOptions(column_types={"vehicle_id": pa.string()}))
pq.write_table(t.take(list(range(0, t.num_rows, step))), dst)
PY
    "$BIN" replay --graph "$WORK/$id.graph" --input "$out/$id/input.parquet" \
      --out-dir "$out/$id" --workers 1 ${KUBICKA_CONFIG:+--config "$KUBICKA_CONFIG"} \
      > "$out/$id/replay.txt"
    probes_total=$((probes_total + $(grep -o '^replay: [0-9]*' "$out/$id/replay.txt" | grep -o '[0-9]*$')))
  done
  end=$(date +%s.%N)
  echo "== sampling every $step s: $probes_total probes, 30 tracks, $(echo "$end - $start" | bc) s wall (graph build, conversion and replay included)"
  "$VENV/bin/python" "$SCORER" --many "$DATA" --outputs "$out" | tail -4
done
