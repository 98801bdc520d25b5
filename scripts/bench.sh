#!/usr/bin/env bash
# Runs every benchmark and prints the figures BENCHMARKS.md records.
# Usage: scripts/bench.sh PATH/TO/release/pipeline   (make bench does this)
# Real maps and probes come from ../shared/data when present (never committed); without it
# the synthetic grid and generated probes are used.
set -euo pipefail
BIN=${1:?usage: bench.sh PIPELINE_BINARY}
cd "$(dirname "$0")/.."
SHARED=${SHARED_DATA:-../shared/data}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PIPELINE_LOG=warn

echo "== machine"
echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m), $(date -u +%F)"

echo "== clean stage (cargo bench --bench clean)"
cargo bench --quiet --bench clean

echo "== parquet encode/decode (cargo bench --bench parquet_io)"
cargo bench --quiet --bench parquet_io

echo "== graph build/load (cargo bench --bench graph_build)"
maps=()
for m in monaco andorra liechtenstein; do
  [ -f "$SHARED/osm/$m.osm.pbf" ] && maps+=("$SHARED/osm/$m.osm.pbf")
done
cargo bench --quiet --bench graph_build -- "${maps[@]}"

echo "== map matching alone, one core (cargo bench --bench matching)"
cargo bench --quiet --bench matching -- "${maps[@]}"

echo "== map matching throughput, criterion (cargo bench --bench matching_criterion)"
graphs=()
for m in monaco liechtenstein; do
  [ -f "$SHARED/osm/$m.osm.pbf" ] && graphs+=("$SHARED/osm/$m.osm.pbf")
done
BENCH_GRAPHS=$(IFS=:; echo "${graphs[*]}") cargo bench --quiet --bench matching_criterion \
  | grep -E '^matching/|thrpt:'

echo "== assign stage alone, 1 and 2 workers (cargo bench --bench assign_scaling)"
if [ -f "$SHARED/osm/monaco.osm.pbf" ]; then
  cargo bench --quiet --bench assign_scaling -- "$SHARED/osm/monaco.osm.pbf"
else
  cargo bench --quiet --bench assign_scaling
fi

if [ -d "$SHARED/kubicka" ]; then
  echo "== map matching alone on the Kubicka tracks (BENCH_KUBICKA, cargo bench --bench matching)"
  BENCH_KUBICKA="$SHARED/kubicka" cargo bench --quiet --bench matching
fi

echo "== aggregation, criterion, and heap per open segment-window (cargo bench --bench aggregate)"
cargo bench --quiet --bench aggregate | grep -E '^memory|^aggregate/|thrpt:'

echo "== whole replay, Parquet -> clean -> assign -> aggregate -> Parquet, 1 and 2 matching workers"
cities=()
for m in liechtenstein monaco; do
  [ -f "$SHARED/osm/$m.osm.pbf" ] && cities+=("$m")
done
if [ ${#cities[@]} -eq 0 ]; then
  cargo run --quiet --release --example write_grid -- "$WORK/grid.osm.pbf"
  "$BIN" graph build --osm "$WORK/grid.osm.pbf" --out "$WORK/grid.graph" >/dev/null
  cities=(grid)
fi
for city in "${cities[@]}"; do
  graph="$WORK/$city.graph"
  [ -f "$graph" ] || "$BIN" graph build --osm "$SHARED/osm/$city.osm.pbf" --out "$graph" >/dev/null
  inputs=()
  for interval in 1 5; do
    "$BIN" generate --graph "$graph" --vehicles 2000 --duration-s $((600 * interval)) \
      --interval-s "$interval" --noise-m 5 --seed 1 --out "$WORK/$city-${interval}s.parquet" >/dev/null
    inputs+=("$WORK/$city-${interval}s.parquet")
  done
  [ "$city" = monaco ] && [ -f "$SHARED/sumo-monaco/probes_1s.parquet" ] \
    && inputs+=("$SHARED/sumo-monaco/probes_1s.parquet")
  for input in "${inputs[@]}"; do
    for workers in 1 2; do
      echo "-- $city: $(basename "$input"), --workers $workers"
      "$BIN" replay --graph "$graph" --input "$input" --out-dir "$WORK/out" \
        --workers "$workers" | grep -E '^(replay|stage time):'
    done
  done
done

if [ -f "$SHARED/osm/monaco.osm.pbf" ]; then
  echo "== map matching against fastmm, same data, same run (scripts/peers/fastmm_same_run.sh)"
  scripts/peers/fastmm_same_run.sh "$BIN" 1 5
fi

if [ -d "$SHARED/sumo-monaco" ]; then
  echo "== speed accuracy against SUMO (scripts/sumo_speeds.sh)"
  scripts/sumo_speeds.sh "$BIN" 1 5 10 30
fi
