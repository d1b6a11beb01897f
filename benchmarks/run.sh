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
    echo "run.sh: installing Debian's golang-go" >&2
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null
    fi
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
