#!/usr/bin/env bash
# A Kinesis emulator (kinesalite, in memory) on 127.0.0.1:4567, with the streams the
# example configs use. Called by scripts/test-services.sh; usable alone:
#
#   scripts/services/kinesis.sh install   # npm package kinesalite under $SVC_DIR (idempotent)
#   scripts/services/kinesis.sh start     # install if needed, start, wait, create streams
#   scripts/services/kinesis.sh stop      # stop the emulator this script started
#   scripts/services/kinesis.sh status
#
# kinesalite's command line cannot choose the listen address, so it is started through its
# Node API from a small script written next to it. Every start begins empty. If something
# already listens on the port, `start` reuses it and `stop` leaves it alone.
set -euo pipefail

: "${SVC_DIR:=$HOME/.cache/pipeline-services}"
: "${KINESIS_HOST:=127.0.0.1}"
: "${KINESIS_PORT:=4567}"
KINESALITE='kinesalite@3.3.3'
DIR="$SVC_DIR/kinesalite"
PIDFILE="$SVC_DIR/kinesalite.pid"
LOG="$SVC_DIR/kinesalite.log"
# The streams of pipelines/kinesis-*.toml, with the shard count each gets.
STREAMS=(probes-clean:4 observations:4 speeds:4 observations-late:4)

mkdir -p "$SVC_DIR"

port_open() { (exec 3<>"/dev/tcp/$KINESIS_HOST/$KINESIS_PORT") 2>/dev/null; }

wait_port() { # timeout_s
  local end=$((SECONDS + $1))
  until port_open; do
    if [ "$SECONDS" -ge "$end" ]; then
      echo "kinesis: timeout waiting for $KINESIS_HOST:$KINESIS_PORT; log: $LOG" >&2
      tail -20 "$LOG" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

install() {
  if [ ! -f "$DIR/node_modules/kinesalite/package.json" ]; then
    command -v npm >/dev/null || { echo "kinesis: npm is needed (apt-get install nodejs npm)" >&2; return 1; }
    echo "kinesis: installing $KINESALITE into $DIR" >&2
    mkdir -p "$DIR"
    (cd "$DIR" && npm install --silent --no-audit --no-fund --prefix "$DIR" "$KINESALITE")
  fi
  # Written on every install so an older install gets the current scripts.
  # serve.js HOST PORT: short stream state transitions, so tests need not wait half a
  # second per stream.
  cat >"$DIR/serve.js" <<'JS'
var s = require('kinesalite')({createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50, shardLimit: 1000})
s.listen(+process.argv[3], process.argv[2], function () { console.log('kinesalite ready') })
JS
  # create-streams.js HOST PORT NAME:SHARDS...: CreateStream for each (awsJson 1.1 with a
  # dummy SigV4 header; kinesalite checks its shape only). An existing stream is fine.
  cat >"$DIR/create-streams.js" <<'JS'
var http = require('http')
var host = process.argv[2], port = +process.argv[3], specs = process.argv.slice(4), failed = 0
function next() {
  var spec = specs.shift()
  if (!spec) process.exit(failed ? 1 : 0)
  var parts = spec.split(':'), body = JSON.stringify({StreamName: parts[0], ShardCount: +parts[1]})
  var req = http.request({host: host, port: port, method: 'POST', path: '/', headers: {
    'Content-Type': 'application/x-amz-json-1.1',
    'X-Amz-Target': 'Kinesis_20131202.CreateStream',
    'X-Amz-Date': '20200101T000000Z',
    'Authorization': 'AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0',
    'Content-Length': Buffer.byteLength(body)}}, function (res) {
    var text = ''
    res.on('data', function (d) { text += d })
    res.on('end', function () {
      if (res.statusCode != 200 && text.indexOf('ResourceInUseException') < 0) {
        console.error('CreateStream ' + parts[0] + ': ' + res.statusCode + ' ' + text); failed++
      }
      next()
    })
  })
  req.on('error', function (e) { console.error('CreateStream ' + parts[0] + ': ' + e.message); failed++; next() })
  req.end(body)
}
next()
JS
}

running_pid() { # prints the pid of the emulator this script started, if it still runs
  [ -f "$PIDFILE" ] || return 1
  local pid; pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

create_streams() {
  node "$DIR/create-streams.js" "$KINESIS_HOST" "$KINESIS_PORT" "${STREAMS[@]}" >>"$LOG" 2>&1 \
    || echo "kinesis: creating streams failed; see $LOG" >&2
}

start() {
  install
  if port_open; then
    echo "kinesis: $KINESIS_HOST:$KINESIS_PORT already listening; reusing it" >&2
    create_streams
    return 0
  fi
  # cd first, separately, so that `$!` is node itself (nohup execs it), not a subshell.
  (cd "$DIR" || exit 1
   nohup node "$DIR/serve.js" "$KINESIS_HOST" "$KINESIS_PORT" >"$LOG" 2>&1 </dev/null &
   echo $! >"$PIDFILE")
  wait_port 30
  create_streams
  echo "kinesis: kinesalite on $KINESIS_HOST:$KINESIS_PORT (pid $(cat "$PIDFILE"), log $LOG)" >&2
}

stop() {
  local pid
  pid=$(running_pid) || { rm -f "$PIDFILE"; return 0; }
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  echo "kinesis: kinesalite stopped" >&2
}

status() {
  if pid=$(running_pid); then echo "running (pid $pid) on $KINESIS_HOST:$KINESIS_PORT"
  elif port_open; then echo "something else listens on $KINESIS_HOST:$KINESIS_PORT"
  else echo "stopped"; return 1; fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
