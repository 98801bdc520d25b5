#!/usr/bin/env bash
# Map-matching speed against FMM (PyPI `fastmm`) on the same data in the same run: generated
# traffic on a real city graph (default the Monaco extract), both matchers on one thread,
# only the match calls timed (our graph import and R-tree, FMM's network and UBODT, outside
# the timing). Prints both figures and the ratio, at each sampling step.
#
# Usage: scripts/peers/fastmm_same_run.sh PIPELINE_BINARY [STEP_S ...]   (default: 1 5)
# Env: OSM (default ../shared/data/osm/monaco.osm.pbf), VEHICLES (20), DURATION_S (1800),
#      SAME_RUN_WORK (default a temporary directory).
# Each vehicle is laid out as one "track" (probes.csv + the map), the layout that
# `BENCH_KUBICKA` (benches/matching.rs) and fastmm_kubicka.py both read. FMM settings are
# fastmm_kubicka.py's (k = 8, r = 50 m, gps_error 50 m, reverse tolerance 20 m, UBODT
# δ = 1 km); ours are the defaults (k = 8, r = 50 m). Needs fastmm and pyarrow (venv under
# ~/.cache, installed if missing).
set -euo pipefail
BIN=$(realpath "${1:?usage: fastmm_same_run.sh PIPELINE_BINARY [STEP_S ...]}")
shift
STEPS=("${@:-1 5}")
read -r -a STEPS <<<"${STEPS[*]}"
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OSM=$(realpath "${OSM:-$ROOT/../shared/data/osm/monaco.osm.pbf}")
VEHICLES=${VEHICLES:-20}
DURATION_S=${DURATION_S:-1800}
W=${SAME_RUN_WORK:-$(mktemp -d)}
VENV=$HOME/.cache/pipeline-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import fastmm, pyarrow' 2>/dev/null || "$VENV/bin/pip" install -q fastmm==0.3.2 pyarrow numpy
export PIPELINE_LOG=warn OMP_NUM_THREADS=1
mkdir -p "$W"

"$BIN" graph build --osm "$OSM" --out "$W/city.graph" >/dev/null
"$BIN" graph export "$W/city.graph" --out "$W/segments.parquet" >/dev/null
"$BIN" generate --graph "$W/city.graph" --vehicles "$VEHICLES" --duration-s "$DURATION_S" \
  --interval-s 1 --noise-m 5 --seed 3 --out "$W/probes.parquet" >/dev/null
"$VENV/bin/python" - "$W" "$OSM" <<'PY'
import os, sys, pyarrow.parquet as pq
work, osm = sys.argv[1], sys.argv[2]
t = pq.read_table(os.path.join(work, "probes.parquet"), columns=["vehicle_id", "ts_ms", "lat", "lon"]).to_pydict()
rows = {}
for v, ts, lat, lon in zip(t["vehicle_id"], t["ts_ms"], t["lat"], t["lon"]):
    rows.setdefault(v, []).append((ts, lat, lon))
for i, (v, fixes) in enumerate(sorted(rows.items())):
    name = f"{i:04d}"
    for d in ("tracks", "seg"):
        os.makedirs(os.path.join(work, d, name), exist_ok=True)
    with open(os.path.join(work, "tracks", name, "probes.csv"), "w") as f:
        f.write("vehicle_id,ts_ms,lat,lon\n")
        f.writelines(f"{name},{ts},{lat:.7f},{lon:.7f}\n" for ts, lat, lon in sorted(fixes))
    for link, target in ((os.path.join(work, "tracks", name, "map.osm.pbf"), osm),
                         (os.path.join(work, "seg", name, "segments.parquet"), os.path.join(work, "segments.parquet"))):
        if not os.path.lexists(link):
            os.symlink(target, link)
PY

for step in "${STEPS[@]}"; do
  echo "== every $step s, $(basename "$OSM"), $VEHICLES vehicles × $DURATION_S s"
  ours=$(cd "$ROOT" && BENCH_KUBICKA="$W/tracks" BENCH_KUBICKA_EVERY="$step" \
    cargo bench --quiet --bench matching 2>/dev/null | grep -o '[0-9]* probes/s overall' | grep -o '^[0-9]*')
  fmm=$("$VENV/bin/python" "$HERE/fastmm_kubicka.py" "$W/tracks" "$W/seg" "$W/fmm_$step" "$step" \
    --cache "$W/ubodt" | grep -o '([0-9]* probes/s' | grep -o '[0-9]*')
  echo "ours $ours probes/s, fastmm $fmm probes/s, ratio $(echo "scale=1; $ours / $fmm" | bc)x"
done
