#!/usr/bin/env bash
# Soak test: runs the whole chain (generator with vehicle churn → clean → assign →
# aggregate → Parquet) at a fixed input rate for SOAK_MINUTES, samples the process RSS every
# SOAK_SAMPLE_S seconds into a CSV and prints the least-squares RSS slope over the warm part.
# With SOAK_OVERLOAD=N it first measures what the pipeline sustains unpaced (calibration),
# then offers N times that, to show that overload turns into backpressure, not memory growth.
# Not part of CI: it runs for minutes. Usage: scripts/soak.sh PATH/TO/release/pipeline
#
# Settings (environment):
#   SOAK_MINUTES=20       wall-clock length of the measured run
#   SOAK_PPS=15000        input rate, probes/s (normal mode; event time runs faster than the
#                         wall clock by SOAK_PPS × SOAK_INTERVAL_S / SOAK_VEHICLES)
#   SOAK_VEHICLES=5000    vehicles driving at any moment
#   SOAK_INTERVAL_S=5     sampling interval of each vehicle, event time
#   SOAK_TRIP_S=600       mean trip length, event time; a new vehicle id replaces each ending trip
#   SOAK_OVERLOAD=0       N > 0: offer N × the calibrated capacity instead of SOAK_PPS
#   SOAK_CALIBRATE_S=90   length of the unpaced calibration run (overload mode)
#   SOAK_WARM_FRACTION=0.25  the slope and min/max ignore this first part of the run
#   SOAK_SAMPLE_S=5       RSS sampling period
#   SOAK_OSM=data/helsinki.osm.pbf  the map (make soak downloads it)
#   SOAK_OUT=out/soak     graph, config, CSV, logs and the Parquet outputs (deleted at start)
#   SOAK_LISTEN=127.0.0.1:19899     the run's /metrics address
set -euo pipefail
BIN=${1:?usage: soak.sh PIPELINE_BINARY}
cd "$(dirname "$0")/.."
MINUTES=${SOAK_MINUTES:-20}
PPS=${SOAK_PPS:-15000}
VEHICLES=${SOAK_VEHICLES:-5000}
INTERVAL_S=${SOAK_INTERVAL_S:-5}
TRIP_S=${SOAK_TRIP_S:-600}
OVERLOAD=${SOAK_OVERLOAD:-0}
CALIBRATE_S=${SOAK_CALIBRATE_S:-90}
WARM_FRACTION=${SOAK_WARM_FRACTION:-0.25}
SAMPLE_S=${SOAK_SAMPLE_S:-5}
OSM=${SOAK_OSM:-data/helsinki.osm.pbf}
OUT=${SOAK_OUT:-out/soak}
LISTEN=${SOAK_LISTEN:-127.0.0.1:19899}
export PIPELINE_LOG=${PIPELINE_LOG:-warn}

mkdir -p "$OUT"
GRAPH="$OUT/$(basename "$OSM" .osm.pbf).graph"
[ -f "$GRAPH" ] || "$BIN" graph build --osm "$OSM" --out "$GRAPH" >/dev/null

# Writes the run's config: $1 = event-time rate factor ("" for unpaced), $2 = directory.
write_config() {
  local rate=$1 dir=$2 duration_s pacing=""
  [ -n "$rate" ] && pacing="rate = $rate"
  # Long enough never to run out within the wall-clock run, even unpaced.
  duration_s=$(awk -v m="$MINUTES" -v c="$CALIBRATE_S" -v r="${rate:-1000}" \
    'BEGIN { printf "%d", (m * 60 + c) * r * 2 + 3600 }')
  mkdir -p "$dir"
  cat >"$dir/soak.toml" <<EOF
# Written by scripts/soak.sh.
edges = [
  "fleet -> clean -> assign -> aggregate -> speeds",
  "assign -> observations",
]

[runtime]
channel_capacity_batches = 8

[telemetry]
listen = "$LISTEN"

[graph]
path = "$GRAPH"

[sources.fleet]
type = "generator"
vehicles = $VEHICLES
duration_s = $duration_s
interval_s = $INTERVAL_S
trip_s = $TRIP_S
noise_m = 5.0
seed = 8
$pacing

[stages.clean]
type = "clean"

[stages.assign]
type = "assign"
workers = 2

[stages.aggregate]
type = "aggregate"
window_ms = 60000
max_out_of_orderness_ms = 30000
allowed_lateness_ms = 120000

[[stages.aggregate.estimators]]
kind = "space_mean"

[[stages.aggregate.estimators]]
kind = "median"

[sinks.speeds]
type = "parquet"
path = "$dir/speeds.parquet"
max_rows_per_file = 1000000

[sinks.observations]
type = "parquet"
path = "$dir/observations.parquet"
max_rows_per_file = 2000000
EOF
}

# One sample of a metric from /metrics (summed over labels that match $2), or empty.
scrape() {
  awk -v name="$1" -v match_="${2:-}" '
    ($1 == name || index($1, name "{") == 1) && index($1, match_) { s += $NF; found = 1 }
    END { if (found) printf "%.0f", s }' "$OUT/metrics.txt" 2>/dev/null || true
}

# Runs the pipeline for $1 seconds with config dir $2, sampling into $2/rss.csv.
run_for() {
  local seconds=$1 dir=$2 pid start now elapsed rss
  "$BIN" run --config "$dir/soak.toml" >"$dir/run.log" 2>&1 &
  pid=$!
  start=$(date +%s.%N)
  echo "elapsed_s,rss_kib,source_sent_probes,distinct_vehicles,clean_vehicles,assign_vehicles,assign_pending_probes,aggregate_open_windows,aggregate_state_bytes,speeds_written" >"$dir/rss.csv"
  while :; do
    sleep "$SAMPLE_S"
    kill -0 "$pid" 2>/dev/null || { echo "soak: the pipeline exited early; see $dir/run.log" >&2; cat "$dir/run.log" >&2; return 1; }
    now=$(date +%s.%N)
    elapsed=$(awk -v a="$start" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    curl -sf "http://$LISTEN/metrics" >"$OUT/metrics.txt" || : >"$OUT/metrics.txt"
    echo "$elapsed,$rss,$(scrape pipeline_component_sent_events_total 'component="fleet"'),$(scrape pipeline_generator_vehicles_total),$(scrape pipeline_clean_active_vehicles),$(scrape pipeline_assign_active_vehicles),$(scrape pipeline_assign_pending_probes),$(scrape pipeline_aggregate_open_windows),$(scrape pipeline_aggregate_state_bytes),$(scrape pipeline_component_received_events_total 'component="speeds"')" >>"$dir/rss.csv"
    awk -v e="$elapsed" -v s="$seconds" 'BEGIN { exit !(e >= s) }' && break
  done
  kill -TERM "$pid"
  wait "$pid" || { echo "soak: the pipeline failed at shutdown; see $dir/run.log" >&2; return 1; }
}

# Achieved input rate (probes/s) between the warm point and the end of a CSV.
achieved_pps() {
  awk -F, -v wf="$WARM_FRACTION" 'NR > 1 { t[++n] = $1; c[n] = $3 }
    END { w = int(n * wf) + 1; if (n > w && t[n] > t[w]) printf "%.0f", (c[n] - c[w]) / (t[n] - t[w]); else print 0 }' "$1"
}

MODE=normal
RATE=$(awk -v p="$PPS" -v i="$INTERVAL_S" -v v="$VEHICLES" 'BEGIN { printf "%.4f", p * i / v }')
OFFERED_PPS=$PPS
if [ "$OVERLOAD" != 0 ]; then
  MODE="overload${OVERLOAD}x"
  echo "soak: calibrating capacity, unpaced, ${CALIBRATE_S} s"
  rm -rf "$OUT/calibrate"
  write_config "" "$OUT/calibrate"
  run_for "$CALIBRATE_S" "$OUT/calibrate"
  CAPACITY_PPS=$(achieved_pps "$OUT/calibrate/rss.csv")
  OFFERED_PPS=$(awk -v c="$CAPACITY_PPS" -v n="$OVERLOAD" 'BEGIN { printf "%.0f", c * n }')
  RATE=$(awk -v p="$OFFERED_PPS" -v i="$INTERVAL_S" -v v="$VEHICLES" 'BEGIN { printf "%.4f", p * i / v }')
  echo "soak: capacity ${CAPACITY_PPS} probes/s unpaced; offering ${OFFERED_PPS} probes/s"
fi

RUN="$OUT/$MODE"
rm -rf "$RUN"
write_config "$RATE" "$RUN"
echo "soak: $MODE, ${MINUTES} min, ${VEHICLES} vehicles every ${INTERVAL_S} s, trips of ~${TRIP_S} s, ${OFFERED_PPS} probes/s offered (event time ×${RATE}), map $OSM; CSV $RUN/rss.csv"
run_for "$((MINUTES * 60))" "$RUN"

# Least-squares slope of RSS over the warm part, in MiB per hour, and the warm min/max.
STATS=$(awk -F, -v wf="$WARM_FRACTION" 'NR > 1 { t[++n] = $1; r[n] = $2 / 1024 }
  END {
    w = int(n * wf) + 1
    for (i = w; i <= n; i++) {
      m++; sx += t[i]; sy += r[i]; sxx += t[i] * t[i]; sxy += t[i] * r[i]
      if (min == "" || r[i] < min) min = r[i]
      if (r[i] > max) max = r[i]
    }
    d = m * sxx - sx * sx
    slope = d > 0 ? (m * sxy - sx * sy) / d * 3600 : 0
    printf "warm_rss_mib_min=%.1f warm_rss_mib_max=%.1f slope_mib_per_h=%.2f samples=%d", min, max, slope, m
  }' "$RUN/rss.csv")
ACHIEVED=$(achieved_pps "$RUN/rss.csv")
DISTINCT=$(awk -F, 'END { print $4 }' "$RUN/rss.csv")
echo "soak: mode=$MODE minutes=$MINUTES vehicles=$VEHICLES trip_s=$TRIP_S offered_pps=$OFFERED_PPS achieved_pps=$ACHIEVED distinct_vehicles=$DISTINCT $STATS"
