#!/usr/bin/env bash
# The durable store's benchmark: workpool's SQLite store against the same
# statements in a tight rusqlite loop (the ceiling), in one run. Writes
# benchmarks/durable-results.md, which BENCHMARKS.md includes.
#
#   benchmarks/durable.sh            # 100,000 jobs per workload
#   benchmarks/durable.sh --quick    # a smoke run (what CI does)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p workpool-benchmarks --features durable --bin durable
out=target/bench
mkdir -p "$out"
if [[ "${1:-}" == "--quick" ]]; then
    ./target/release/durable --quick | tee "$out/durable-results.md"
else
    ./target/release/durable | tee "$out/durable-results.md"
    cp "$out/durable-results.md" benchmarks/durable-results.md
fi
