#!/usr/bin/env bash
# Instructions per job under callgrind: the stable guard on noisy machines.
#
# Trivial jobs on 2 workers, detached and with handles. Each strategy runs at
# two job counts and the figure is the slope, (I(n2) - I(n1)) / (n2 - n1), so
# start-up and tear-down cancel out. Needs valgrind (Debian: valgrind); this
# script installs nothing.
#
#   benchmarks/instructions.sh           # 50,000 and 150,000 jobs
#   benchmarks/instructions.sh --quick   # 5,000 and 15,000 (a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
    echo "instructions.sh: valgrind is needed (apt-get install valgrind)" >&2
    exit 2
fi

n1=50000 n2=150000
[[ "${1:-}" == "--quick" ]] && n1=5000 n2=15000

cargo build --release -q -p workpool-benchmarks
out=target/bench/callgrind
mkdir -p "$out"

# Total instructions of one run (callgrind's "summary:" line).
count() {
    local strategy=$1 jobs=$2 file
    file="$out/$(echo "$strategy" | tr -c 'a-z0-9' '_').$jobs.out"
    valgrind --tool=callgrind --callgrind-out-file="$file" \
        target/release/compare --only "$strategy" --workload trivial \
        --workers 2 --reps 1 --jobs "$jobs" >/dev/null 2>&1
    awk '/^summary:/ { print $2 }' "$file"
}

printf '%-22s %s\n' "strategy" "instructions per job (W = 2, trivial)"
for strategy in "workpool (detached)" "workpool (handles)"; do
    a=$(count "$strategy" "$n1")
    b=$(count "$strategy" "$n2")
    printf '%-22s %d\n' "$strategy" $(( (b - a) / (n2 - n1) ))
done
