#!/usr/bin/env bash
# The CLI benchmarks: `workpool run` against `xargs -P`, GNU parallel and
# rust-parallel on 10,000 x `true` and 1,000 x `sleep 0.01`, at -j 2 and -j 8;
# then the peak memory of `workpool run` over 10^6 records against 10^5
# (10^7 with CLI_MEMORY_LARGE=10000000).
# GNU parallel must be installed (Debian: parallel); rust-parallel is built
# from crates.io into target/ when missing. Writes benchmarks/cli-results.md,
# which BENCHMARKS.md links to.
#
#   benchmarks/cli.sh            # the full run (the 10^7-record run takes long)
#   benchmarks/cli.sh --quick    # a smoke run (what CI does): 1/100 of the jobs
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[[ "${1:-}" == "--quick" ]] && quick=1
out=target/bench
mkdir -p "$out"
tools="$PWD/$out/tools"

for tool in parallel bc xargs /usr/bin/time; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "cli.sh: $tool is needed (Debian: apt-get install parallel bc findutils time)" >&2
        exit 2
    fi
done
if ! command -v rust-parallel >/dev/null 2>&1 && [[ ! -x "$tools/bin/rust-parallel" ]]; then
    echo "cli.sh: installing rust-parallel from crates.io" >&2
    cargo install -q --locked --root "$tools" rust-parallel
fi
export PATH="$tools/bin:$PATH"
cargo build --release -q -p workpool-cli
workpool="$PWD/target/release/workpool"

reps=3
n_true=10000
n_sleep=1000
# The 10^7-record run takes over an hour on 2 cores (a fork and exec per
# record): opt in with CLI_MEMORY_LARGE=10000000.
n_slow=2000
slow_s=5
mem_small=100000
mem_large=${CLI_MEMORY_LARGE:-1000000}
if [[ $quick -eq 1 ]]; then
    reps=1; n_true=100; n_sleep=20; mem_small=1000; mem_large=10000; n_slow=50; slow_s=1
fi

# The input of the sleep workload: n lines of 0.01 (no `yes | head`, whose
# SIGPIPE would fail the pipeline under pipefail).
sleeps="awk -v n=$n_sleep 'BEGIN { for (i = 0; i < n; i++) print \"0.01\" }'"

# Seconds (float) for: input-generator | tool
time_one() {
    local input=$1; shift
    local start end
    start=$(date +%s%N)
    eval "$input" | "$@" >/dev/null 2>&1
    end=$(date +%s%N)
    echo "scale=6; ($end - $start) / 1000000000" | bc
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Milliseconds per job, median of $reps runs.
per_job() {
    local n=$1 input=$2; shift 2
    for _ in $(seq "$reps"); do time_one "$input" "$@"; done | median | awk -v n="$n" '{printf "%.3f", $1 * 1000 / n}'
}

{
    echo "## The command-line tool"
    echo
    echo "\`benchmarks/cli.sh\`: wall time per job (median of $reps runs), and its ratio to \`xargs -P\`'s. workpool runs with its defaults (output grouping, summary) and nothing more."
    echo
    for j in 2 8; do
        echo "### -j $j"
        echo
        echo "| tool | $n_true × \`true\`: ms per job | vs xargs | $n_sleep × \`sleep 0.01\`: ms per job | vs xargs |"
        echo "| --- | --- | --- | --- | --- |"
        xt=$(per_job "$n_true" "seq $n_true" xargs -P "$j" -n 1 true)
        xs=$(per_job "$n_sleep" "$sleeps" xargs -P "$j" -n 1 sleep)
        for tool in xargs workpool rust-parallel parallel; do
            case $tool in
                xargs) t=$xt; s=$xs ;;
                workpool) t=$(per_job "$n_true" "seq $n_true" "$workpool" run -j "$j" true)
                          s=$(per_job "$n_sleep" "$sleeps" "$workpool" run -j "$j" sleep) ;;
                rust-parallel) t=$(per_job "$n_true" "seq $n_true" rust-parallel -j "$j" true)
                               s=$(per_job "$n_sleep" "$sleeps" rust-parallel -j "$j" sleep) ;;
                parallel) t=$(per_job "$n_true" "seq $n_true" parallel --will-cite -j "$j" true)
                          s=$(per_job "$n_sleep" "$sleeps" parallel --will-cite -j "$j" sleep) ;;
            esac
            printf '| %s | %s | %.2f× | %s | %.2f× |\n' "$tool" "$t" "$(echo "$t / $xt" | bc -l)" "$s" "$(echo "$s / $xs" | bc -l)"
        done
        echo
    done
    echo "### Memory: \`seq N | workpool run -j 8 true\`"
    echo
    echo "| records | peak RSS |"
    echo "| --- | --- |"
    for n in $mem_small $mem_large; do
        kb=$( { /usr/bin/time -f '%M' sh -c "seq $n | '$workpool' run -j 8 true >/dev/null 2>/dev/null"; } 2>&1 | tail -1)
        echo "| $n | $((kb / 1024)) MiB ($kb KiB) |"
    done
    echo
    echo "### Memory with a slow reader: \`seq N | workpool run -j 4 [-k | --line-buffer] head -c 1048576 /dev/zero | (sleep S; wc -c)\`"
    echo
    echo "1 MiB of output per job, a reader that reads nothing for S seconds (the target: under 64 MiB whatever the output and the reader)."
    echo
    echo "| flags | jobs | output | peak RSS |"
    echo "| --- | --- | --- | --- |"
    for k in "" "-k" "--line-buffer"; do
        kb=$( { /usr/bin/time -f '%M' sh -c "seq $n_slow | '$workpool' run $k -j 4 head -c 1048576 /dev/zero 2>/dev/null | (sleep $slow_s; wc -c) >/dev/null"; } 2>&1 | tail -1)
        echo "| ${k:-(none)} | $n_slow | $n_slow MiB | $((kb / 1024)) MiB ($kb KiB) |"
    done
    echo
} > "$out/cli-results.md"

# Hand-written figures that the script does not redo (the 10^7-record run)
# follow the tables.
if [[ -f benchmarks/cli-notes.md ]]; then
    cat benchmarks/cli-notes.md >> "$out/cli-results.md"
fi
cat "$out/cli-results.md"
[[ $quick -eq 0 ]] && cp "$out/cli-results.md" benchmarks/cli-results.md
exit 0
