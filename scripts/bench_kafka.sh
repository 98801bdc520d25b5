#!/usr/bin/env bash
# Kafka sink throughput against a plain librdkafka producer (benches/kafka_sink.rs): starts the
# test services (a broker on 127.0.0.1:9092) if needed, installs the PyPI wheel
# confluent-kafka (which ships librdkafka) into a venv under $SVC_DIR, runs the bench in
# release, and stops what it started.
#
#   scripts/bench_kafka.sh            # env BENCH_KAFKA_RECORDS, BENCH_KAFKA_ROUNDS
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
BENCH_KAFKA_PYTHON="$VENV/bin/python" cargo bench --bench kafka_sink
