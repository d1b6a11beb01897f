#!/usr/bin/env bash
# The library benchmarks: workpool against the Rust alternatives and the Go
# tutorial pattern, on the same workloads, in one script run. Writes
# BENCHMARKS.md and benchmarks/chart.svg at the repository root.
#
#   benchmarks/run.sh            # the full run (several minutes)
#   benchmarks/run.sh --quick    # a smoke run (what CI does)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
[[ "${1:-}" == "--quick" ]] && quick=(--quick)

if ! command -v go >/dev/null 2>&1; then
    echo "run.sh: the Go toolchain is needed for the Go pattern's row (Debian: apt-get install golang-go)" >&2
    exit 2
fi

cargo build --release -q -p workpool-benchmarks
rounds=$(./target/release/compare --calibrate)

out=target/bench
mkdir -p "$out"
(cd benchmarks/go && GOFLAGS=-mod=mod go build -o "../../$out/go-pattern" main.go)
"$out/go-pattern" --micro-rounds "$rounds" "${quick[@]}" > "$out/go.csv"

report=(--go-results "$out/go.csv" --svg benchmarks/chart.svg --out BENCHMARKS.md)
[[ ${#quick[@]} -gt 0 ]] && report=(--go-results "$out/go.csv" --svg "$out/chart.svg" --out "$out/BENCHMARKS.md")
./target/release/compare "${quick[@]}" --micro-rounds "$rounds" "${report[@]}"
