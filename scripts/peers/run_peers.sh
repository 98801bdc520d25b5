#!/usr/bin/env bash
# Runs the two peer map matchers, FMM (fastmm_kubicka.py) and OSRM (osrm_kubicka.py), on the
# 30 Kubicka tracks at the given sampling steps, and prints their scores beside ours, all from
# ../shared/scripts/score_kubicka.py (RMF, precision, recall by length), plus the probes/s of
# the peers' match calls alone (one thread each; the machine may be shared, so timings are noisy).
#
# Usage: scripts/peers/run_peers.sh [STEP_S ...]        (default steps: 1 5 15 30)
# Environment (all optional):
#   KUBICKA_WORK   where scripts/kubicka.sh left its outputs (default /tmp/kub). FMM takes each
#                  track's network from $KUBICKA_WORK/step1/ID/segments.parquet (`pipeline graph
#                  export`), and our own scores are read from $KUBICKA_WORK/stepN when present.
#                  Make them with: KUBICKA_WORK=/tmp/kub scripts/kubicka.sh PIPELINE_BINARY N
#   PEERS_OUT      output root (default /tmp/peers): fmm/stepN/ID.txt, osrm_r<R>/stepN/ID.txt, logs
#   PEERS          which peers to run (default "fmm osrm")
#   FMM_GPS_ERROR  FMM gps_error in m (default 50); FMM_DELTA overrides the UBODT delta (default 1000 m)
#   OSRM_RADIUS    OSRM match radius in m (default 15); OSRM_TIDY=0 turns tidy off
# Settings: FMM k=8, r=50 m, gps_error 50 m, reverse tolerance 20 m, UBODT delta 1 km;
# OSRM car.lua, MLD, radius 15 m, tidy, timestamps. See the two scripts' headers.
# Needs: ../shared/data/kubicka and ../shared/scripts/score_kubicka.py; Python 3.11 for fastmm
# (venv ~/.cache/pipeline-venv) and Python 3.12 for osrm-bindings (venv
# ~/.cache/pipeline-osrm-venv, made from pyenv's 3.12.1 or python3.12); both installed here
# from PyPI if missing. Caches: /tmp/fastmm_ubodt (UBODT, GBs) and /tmp/osrm_kubicka (OSRM
# graphs); delete them when done.
set -euo pipefail
STEPS=("${@:-1 5 15 30}")
read -r -a STEPS <<<"${STEPS[*]}"
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=$(realpath "${SHARED_DATA:-$HERE/../../../shared/data}")
DATA="$SHARED/kubicka"
SCORER=$(realpath "$SHARED/../scripts/score_kubicka.py")
WORK=${KUBICKA_WORK:-/tmp/kub}
OUT=${PEERS_OUT:-/tmp/peers}
PEERS=${PEERS:-fmm osrm}
GPS_ERROR=${FMM_GPS_ERROR:-50}
RADIUS=${OSRM_RADIUS:-15}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"

FMM_VENV=$HOME/.cache/pipeline-venv
OSRM_VENV=$HOME/.cache/pipeline-osrm-venv
[ -x "$FMM_VENV/bin/python" ] || python3.11 -m venv "$FMM_VENV" || "$HOME/.pyenv/versions/3.11.7/bin/python" -m venv "$FMM_VENV"
"$FMM_VENV/bin/python" -c 'import fastmm, pyarrow' 2>/dev/null || "$FMM_VENV/bin/pip" install -q fastmm==0.3.2 pyarrow numpy
if [[ " $PEERS " == *" osrm "* ]]; then
  if [ ! -x "$OSRM_VENV/bin/python" ]; then
    PY312=$(command -v python3.12 || echo "$HOME/.pyenv/versions/3.12.1/bin/python")
    "$PY312" -m venv "$OSRM_VENV"
  fi
  "$OSRM_VENV/bin/python" -c 'import osrm, pyarrow' 2>/dev/null || "$OSRM_VENV/bin/pip" install -q osrm-bindings==26.10.0 pyarrow
fi

score() {  # label outroot
  printf '%-10s ' "$1"
  "$FMM_VENV/bin/python" "$SCORER" --many "$DATA" --outputs "$2" | tail -1
}

for step in "${STEPS[@]}"; do
  echo "== step ${step} s"
  for peer in $PEERS; do
    case $peer in
      fmm)
        [ -f "$WORK/step1/00000000/segments.parquet" ] || { echo "missing $WORK/step1/*/segments.parquet (run scripts/kubicka.sh)"; exit 1; }
        "$FMM_VENV/bin/python" "$HERE/fastmm_kubicka.py" "$DATA" "$WORK/step1" "$OUT/fmm/step$step" "$step" \
          --gps-error "$GPS_ERROR" ${FMM_DELTA:+--delta "$FMM_DELTA"} >"$OUT/fmm_step$step.log" 2>&1
        tail -1 "$OUT/fmm_step$step.log"
        score fmm "$OUT/fmm/step$step" ;;
      osrm)
        tidy=(); [ "${OSRM_TIDY:-1}" = 0 ] && tidy=(--no-tidy)
        dir="$OUT/osrm_r${RADIUS}${tidy:+_notidy}/step$step"
        mkdir -p "$(dirname "$dir")"
        "$OSRM_VENV/bin/python" "$HERE/osrm_kubicka.py" "$DATA" "$dir" "$step" --radius "$RADIUS" "${tidy[@]}" >"$dir.log" 2>&1
        tail -1 "$dir.log"
        score osrm "$dir" ;;
    esac
  done
  [ -d "$WORK/step$step/00000000" ] && score ours "$WORK/step$step"
done
