#!/usr/bin/env bash
# The Kafka benches, in release: sink throughput against a plain librdkafka producer
# (benches/kafka_sink.rs) and end-to-end latency at half the maximum rate
# (benches/kafka_latency.rs). Starts a broker on 127.0.0.1:9092 if none answers, installs the
# PyPI wheel confluent-kafka (which ships librdkafka) into a venv under $SVC_DIR, and stops
# what it started.
#
#   scripts/bench_kafka.sh [sink|latency]   # default both; env as in each bench's header
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SVC_DIR:=$HOME/.cache/pipeline-services}"
VENV="$SVC_DIR/bench-venv"
if ! "$VENV/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'confluent-kafka==2.*'
fi
started=
if ! (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; then
  bash scripts/services/kafka.sh start
  started=1
fi
trap '[ -n "$started" ] && bash scripts/services/kafka.sh stop' EXIT
case "${1:-both}" in
  sink|both) BENCH_KAFKA_PYTHON="$VENV/bin/python" cargo bench --bench kafka_sink ;;&
  latency|both) cargo bench --bench kafka_latency ;;
  sink) ;;
  *) echo "usage: $0 [sink|latency]" >&2; exit 2 ;;
esac
