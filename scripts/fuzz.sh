#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer; needs a nightly toolchain, CI does not run it).
#
#   scripts/fuzz.sh [run]      every target (or FUZZ_TARGETS) for FUZZ_SECONDS each
#   scripts/fuzz.sh minimize   merge the working corpus into testdata/fuzz/<target>/,
#                              keeping a small set of inputs covering the same edges (libFuzzer
#                              -set_cover_merge=1 over edges only, -use_counters=0, so the
#                              committed corpus stays small); files already there stay
#
# Targets are `fuzz/fuzz_targets/*.rs`; their bodies are `pipeline::fuzzing`. Each run reads
# the committed corpus (testdata/fuzz/<target>/, replayed on stable by
# tests/fuzz_corpus.rs) and grows a working corpus in fuzz/corpus/<target>/ (ignored by
# git). A crash leaves its input in fuzz/artifacts/<target>/ and makes the script exit 1
# once every target has run. Per-target figures go to FUZZ_SUMMARY (fuzz/logs/summary.tsv).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-run}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-decode_json decode_proto parquet_probes osm_pbf osm_xml graph_file matcher clean}
FUZZ_RSS_LIMIT_MB=${FUZZ_RSS_LIMIT_MB:-2048}
# Seconds one input may take before libFuzzer calls it a hang.
FUZZ_TIMEOUT_S=${FUZZ_TIMEOUT_S:-10}
# Most new bytes `minimize` adds to one target's committed corpus.
FUZZ_CORPUS_KB=${FUZZ_CORPUS_KB:-64}
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/pipeline-fuzz-target}
# No sanitizer: the code is safe Rust, and panics, aborts, hangs and OOMs are what we look
# for; -a keeps debug assertions and overflow checks on, as in the dev profile.
BUILD_FLAGS=(-s none -a --target-dir "$FUZZ_TARGET_DIR")

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "make fuzz: needs a nightly Rust toolchain (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "make fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

max_len() {
    case "$1" in
        decode_json | decode_proto) echo 4096 ;;
        matcher | clean) echo 8192 ;;
        *) echo 65536 ;;
    esac
}

mkdir -p fuzz/logs
cargo +nightly fuzz build "${BUILD_FLAGS[@]}"

if [ "$MODE" = minimize ]; then
    for t in $FUZZ_TARGETS; do
        [ -d "fuzz/corpus/$t" ] || continue
        merged=$(mktemp -d)
        cp testdata/fuzz/"$t"/* "$merged"/
        cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "$t" "$merged" "fuzz/corpus/$t" -- \
            -set_cover_merge=1 -use_counters=0 -max_len="$(max_len "$t")" -rss_limit_mb="$FUZZ_RSS_LIMIT_MB" \
            -timeout="$FUZZ_TIMEOUT_S" >"fuzz/logs/$t.merge.log" 2>&1
        # New inputs, smallest first, up to FUZZ_CORPUS_KB per target: a Parquet input
        # is a few KB, and the merged set of a long run would be megabytes.
        budget=$((FUZZ_CORPUS_KB * 1024))
        while read -r size file; do
            [ -e "testdata/fuzz/$t/$file" ] && continue
            [ "$size" -gt "$budget" ] && break
            cp "$merged/$file" "testdata/fuzz/$t/"
            budget=$((budget - size))
        done < <(cd "$merged" && find . -type f -printf '%s %P\n' | sort -n)
        rm -rf "$merged"
        echo "$t: $(ls "testdata/fuzz/$t" | wc -l) files, $(cat "testdata/fuzz/$t"/* | wc -c) bytes"
    done
    exit 0
fi
if [ "$MODE" != run ]; then
    echo "usage: scripts/fuzz.sh [run|minimize]" >&2
    exit 2
fi

failed=()
SUMMARY=${FUZZ_SUMMARY:-fuzz/logs/summary.tsv}
printf 'target\tseconds\texecutions\tcorpus_files\tcrashed\n' >"$SUMMARY"
for t in $FUZZ_TARGETS; do
    mkdir -p "fuzz/corpus/$t"
    log="fuzz/logs/$t.log"
    echo "== $t: ${FUZZ_SECONDS}s (log: $log)"
    start=$(date +%s)
    status=0
    cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "$t" "fuzz/corpus/$t" "testdata/fuzz/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -max_len="$(max_len "$t")" \
        -rss_limit_mb="$FUZZ_RSS_LIMIT_MB" -timeout="$FUZZ_TIMEOUT_S" \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    seconds=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    corpus=$(ls "fuzz/corpus/$t" | wc -l)
    crashed=no
    if [ "$status" -ne 0 ]; then
        crashed=yes
        failed+=("$t")
        grep -E "^(==[0-9]+==|thread '|SUMMARY|artifact_prefix|Test unit written)" "$log" | tail -8 >&2 || true
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$seconds" "${execs:-?}" "$corpus" "$crashed" |
        tee -a "$SUMMARY"
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "make fuzz: crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "make fuzz: no crashes"
