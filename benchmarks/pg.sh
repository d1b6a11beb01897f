#!/usr/bin/env bash
# The PostgreSQL store's benchmark: workpool's store against the same SQL
# alone (the ceiling) and against riverqueue (River's Rust client), on the
# machine's PostgreSQL, in one run. Writes benchmarks/pg-results.md, which
# BENCHMARKS.md includes. It creates and drops the database workpool_bench.
#
#   benchmarks/pg.sh                 # 20,000 jobs per workload
#   benchmarks/pg.sh --quick         # a smoke run (what CI does)
#   benchmarks/pg.sh --soak 600      # a sustained 10-minute run, minute by minute
#
# WORKPOOL_PG_URL names an admin URL of another server.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p workpool-benchmarks --features postgres --bin pg
out=target/bench
mkdir -p "$out"
case "${1:-}" in
    --quick) ./target/release/pg --quick | tee "$out/pg-results.md" ;;
    --soak) ./target/release/pg --soak "${2:-600}" ;;
    *)
        ./target/release/pg "$@" | tee "$out/pg-results.md"
        cp "$out/pg-results.md" benchmarks/pg-results.md
        ;;
esac
