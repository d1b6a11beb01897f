//! The Markdown report and the SVG chart.

use std::fmt::Write as _;

use crate::alternatives::{Latency, Memory, ShutdownLatency, Submitter};
use crate::work::Workload;
use crate::{Cell, Config, STRATEGIES, WORKPOOL_ROWS};

const GO: &str = "Go tutorial pattern (chan 100 + goroutines)";

/// Reads `workload,workers,ns_per_job[,cpu_ns_per_job]` lines written by
/// `benchmarks/go`.
pub(crate) fn read_go(path: &str) -> Vec<Cell> {
    let Ok(text) = std::fs::read_to_string(path) else {
        eprintln!("compare: no Go results at {path}");
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(',');
            let workload = match f.next()? {
                "trivial" => Workload::Trivial,
                "micro" => Workload::Micro,
                "sleep" => Workload::Sleep,
                _ => return None,
            };
            Some(Cell {
                workload,
                workers: f.next()?.parse().ok()?,
                strategy: GO.to_string(),
                ns_per_job: f.next()?.parse().ok()?,
                cpu_ns_per_job: f.next().and_then(|c| c.parse().ok()),
            })
        })
        .collect()
}

fn go_version(path: Option<&String>) -> String {
    path.and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("# ").map(str::to_string))
        })
        .unwrap_or_else(|| "not run".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or_else(String::new, |kb| format!(", {} GiB", kb / 1024 / 1024));
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores{mem}; {rustc}")
}

/// One table: a row per strategy that has a figure (the Go pattern last), a
/// column per W, each figure shown by `show` with its ratio to the least of
/// the Rust alternatives in that column.
fn ratio_table(
    s: &mut String,
    cols: &[usize],
    value: impl Fn(&str, usize) -> Option<f64>,
    show: impl Fn(f64, f64) -> String,
) {
    let _ = write!(s, "| strategy |");
    for c in cols {
        let _ = write!(s, " W = {c} |");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "| --- |{}", " --- |".repeat(cols.len()));
    let least: Vec<f64> = cols
        .iter()
        .map(|&c| {
            STRATEGIES[WORKPOOL_ROWS..]
                .iter()
                .filter_map(|st| value(st, c))
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    for st in STRATEGIES.iter().copied().chain([GO]) {
        if !cols.iter().any(|&c| value(st, c).is_some()) {
            continue;
        }
        let _ = write!(s, "| {st} |");
        for (k, &c) in cols.iter().enumerate() {
            match value(st, c) {
                Some(v) => {
                    let _ = write!(s, " {} |", show(v, v / least[k]));
                }
                None => {
                    let _ = write!(s, " n/a |");
                }
            }
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s);
}

fn find<'a>(cells: &'a [Cell], w: Workload, workers: usize, strategy: &str) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|c| c.workload == w && c.workers == workers && c.strategy == strategy)
}

/// The commit the figures were measured on (`git describe`), if known.
fn commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The fastest Rust alternative's figure in a column, and its name.
fn fastest_alternative(cells: &[Cell], w: Workload, workers: usize) -> Option<(&str, f64)> {
    STRATEGIES[WORKPOOL_ROWS..]
        .iter()
        .filter_map(|st| find(cells, w, workers, st).map(|c| (*st, c.ns_per_job)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// A few sentences that read the tables for a user.
fn meaning(s: &mut String, cells: &[Cell]) {
    let ns = |w, workers, st: &str| find(cells, w, workers, st).map(|c| c.ns_per_job);
    let _ = writeln!(s, "## What this means for you\n");
    if let (Some(wp), Some((alt, best))) = (
        ns(Workload::Trivial, 2, "workpool (detached)"),
        fastest_alternative(cells, Workload::Trivial, 2),
    ) {
        let _ = writeln!(
            s,
            "- The pool's own cost is about {wp:.0} ns per job (trivial jobs, 2 workers): {:.2}× the fastest Rust alternative here ({alt}, {best:.0} ns), which keeps none of the contract (no outcomes, no shutdown report, no timeouts).",
            wp / best
        );
    }
    if let (Some(d), Some(h)) = (
        ns(Workload::Trivial, 2, "workpool (detached)"),
        ns(Workload::Trivial, 2, "workpool (handles, 1,000 in flight)"),
    ) {
        let _ = writeln!(
            s,
            "- A handle (to await the outcome or cancel the job) adds about {:.0} ns per job; submit detached when the hook or the stats are enough.",
            (h - d).max(0.0)
        );
    }
    if let (Some(wp), Some((_, best))) = (
        ns(Workload::Micro, 2, "workpool (detached)"),
        fastest_alternative(cells, Workload::Micro, 2),
    ) {
        let _ = writeln!(
            s,
            "- Once a job does about 1 µs of work, the whole run takes {:.2}× the fastest alternative's time; with real work (milliseconds, I/O) the pool's cost is lost in the noise (the 10 ms table).",
            wp / best
        );
    }
    if let (Some(wp), Some(port), Some(spawn)) = (
        ns(Workload::Trivial, 2, "workpool (detached)"),
        ns(Workload::Trivial, 2, STRATEGIES[WORKPOOL_ROWS]),
        ns(Workload::Trivial, 2, STRATEGIES[WORKPOOL_ROWS + 1]),
    ) {
        let _ = writeln!(
            s,
            "- What people write by hand costs more per job: the literal tokio port of the Go tutorial (a receiver behind a mutex) {:.1}×, spawn-per-job with a semaphore {:.1}× the pool's time.",
            port / wp,
            spawn / wp
        );
    }
    let _ = writeln!(s);
}

pub(crate) fn markdown(
    config: &Config,
    cells: &[Cell],
    latency: &[Latency],
    memory: &[Memory],
    shutdown: &ShutdownLatency,
    calibration: u64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    if config.quick {
        let _ = writeln!(
            s,
            "**A quick (smoke) run: 1/100 of the jobs, one repetition; not the real figures.**\n"
        );
    }
    let _ = writeln!(
        s,
        "Machine: {}; Go: {}. Commit: `{}`.\n",
        machine(),
        go_version(config.go_results.as_ref()),
        commit()
    );
    let _ = writeln!(
        s,
        "Method: every strategy runs the same jobs in one process (the Go pattern in the same script run), from the first submit until every job has run and the pool is shut down; median of {} repetitions taken in turns across strategies. Async strategies run on tokio with 2 worker threads and {}. Cells read ns per job · jobs per second · ratio to the fastest Rust alternative in the column (below 1.00: faster than all of them). The CPU tables give the process's CPU time per job (every thread), steadier than wall time on this shared machine. 1 µs of work = {calibration} rounds of a multiply-add. (handles) awaits 10^6 handles at the end; (handles, 1,000 in flight) awaits each once 1,000 newer ones are out.\n",
        config.reps,
        match config.submitter {
            Submitter::Task => "a submitter task",
            Submitter::Main => "the main thread submitting through `block_on`",
        }
    );
    meaning(&mut s, cells);
    for w in [Workload::Trivial, Workload::Micro, Workload::Sleep] {
        let mut cols: Vec<usize> = cells
            .iter()
            .filter(|c| c.workload == w)
            .map(|c| c.workers)
            .collect();
        cols.sort_unstable();
        cols.dedup();
        if cols.is_empty() {
            continue;
        }
        let _ = writeln!(s, "## {}\n", w.title());
        ratio_table(
            &mut s,
            &cols,
            |st, c| find(cells, w, c, st).map(|cell| cell.ns_per_job),
            |ns, ratio| format!("{ns:.0} ns · {:.2} M/s · {ratio:.2}×", 1e3 / ns),
        );
        let cpu = |st: &str, c: usize| find(cells, w, c, st).and_then(|cell| cell.cpu_ns_per_job);
        if w != Workload::Sleep
            && STRATEGIES
                .iter()
                .any(|st| cols.iter().any(|&c| cpu(st, c).is_some()))
        {
            let _ = writeln!(s, "### CPU time per job\n");
            ratio_table(&mut s, &cols, cpu, |ns, ratio| {
                format!("{ns:.0} ns · {ratio:.2}×")
            });
        }
    }
    let _ = writeln!(
        s,
        "## Submit-to-start latency, one job every 100 µs, 8 workers\n"
    );
    let _ = writeln!(
        s,
        "| strategy | p50 | p99 | p99.9 |\n| --- | --- | --- | --- |"
    );
    for l in latency {
        let _ = writeln!(
            s,
            "| {} | {:.1} µs | {:.1} µs | {:.1} µs |",
            l.strategy, l.p50, l.p99, l.p999
        );
    }
    let _ = writeln!(
        s,
        "\n## Memory per queued job (64-byte payloads, workers blocked)\n"
    );
    let _ = writeln!(
        s,
        "| queue | jobs queued | resident bytes per job |\n| --- | --- | --- |"
    );
    for m in memory {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} |",
            m.strategy, m.jobs, m.bytes_per_job
        );
    }
    let _ = writeln!(
        s,
        "\nShutdown (workpool): {:.1} µs for an idle pool of 8 workers; {:.1} ms for 8 jobs that ignore cancellation with timeout 50 ms + grace 50 ms (floor 100 ms).\n",
        shutdown.idle_us, shutdown.deaf_ms
    );
    ending(&mut s);
    s
}

/// The chart, the durable stores' sections (written by
/// `benchmarks/durable.sh` and `benchmarks/pg.sh`) and how to reproduce it
/// all.
fn ending(s: &mut String) {
    let _ = writeln!(
        s,
        "## Chart\n\n![ns per job, trivial jobs, by strategy and W](benchmarks/chart.svg)\n"
    );
    for section in ["benchmarks/durable-results.md", "benchmarks/pg-results.md"] {
        if let Ok(text) = std::fs::read_to_string(section) {
            let _ = writeln!(s, "{}", text.trim_end());
            let _ = writeln!(s);
        }
    }
    let _ = writeln!(
        s,
        "## Reproduce\n\n`benchmarks/run.sh` writes this file and the chart (it needs Go: Debian's `golang-go`); `--quick` is CI's smoke run. `benchmarks/instructions.sh` prints instructions per job under callgrind, the stable guard for changes to the hot path. `benchmarks/cli.sh` measures `workpool run` against `xargs -P`, GNU parallel and rust-parallel: [benchmarks/cli-results.md](benchmarks/cli-results.md). `benchmarks/durable.sh` measures the SQLite store against SQLite itself, and `benchmarks/pg.sh` the PostgreSQL store against PostgreSQL itself and riverqueue; each writes its section above. What was tried on the hot path, and what it gave: [benchmarks/NOTES.md](benchmarks/NOTES.md)."
    );
}

/// One colour per strategy and one for the Go pattern.
const COLORS: [&str; 11] = [
    "#1b7837", "#5aae61", "#a6dba0", "#762a83", "#9970ab", "#c2a5cf", "#2166ac", "#67a9cf",
    "#d6604d", "#444444", "#e08214",
];
const _: () = assert!(COLORS.len() > STRATEGIES.len(), "a colour for every bar");

/// Grouped bars: ns per job for trivial jobs, one group per W.
pub(crate) fn svg(cells: &[Cell]) -> String {
    let strategies: Vec<&str> = STRATEGIES.iter().copied().chain([GO]).collect();
    let groups = [2usize, 8, 64];
    let value = |st: &str, w: usize| find(cells, Workload::Trivial, w, st).map(|c| c.ns_per_job);
    // A log scale: the strategies differ by two orders of magnitude.
    let top_value = groups
        .iter()
        .flat_map(|&w| strategies.iter().filter_map(move |st| value(st, w)))
        .fold(10.0f64, f64::max);
    let (lo, hi) = (1.0f64, top_value.log10().ceil().max(2.0));
    let (width, height, left, top, plot_h) = (980.0, 520.0, 70.0, 40.0, 300.0);
    let scale = |v: f64| plot_h * ((v.max(10.0).log10() - lo) / (hi - lo));
    let bar = 18.0;
    let group_w = bar * strategies.len() as f64 + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="22" font-size="15">ns per job, 10^6 trivial jobs, log scale (lower is better)</text>"#
    );
    for e in (lo as i32)..=(hi as i32) {
        let v = 10f64.powi(e);
        let y = top + plot_h - scale(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{v:.0}</text>"##,
            left + group_w * 3.0,
            left - 5.0,
            y + 4.0
        );
    }
    for (g, &w) in groups.iter().enumerate() {
        let x0 = left + 20.0 + g as f64 * group_w;
        for (i, st) in strategies.iter().enumerate() {
            if let Some(v) = value(st, w) {
                let h = scale(v);
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.1}" y="{:.1}" width="{}" height="{h:.1}" fill="{}"><title>{st}, W = {w}: {v:.0} ns</title></rect>"#,
                    x0 + i as f64 * bar,
                    top + plot_h - h,
                    bar - 2.0,
                    COLORS[i]
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">W = {w}</text>"#,
            x0 + bar * strategies.len() as f64 / 2.0,
            top + plot_h + 18.0
        );
    }
    for (i, st) in strategies.iter().enumerate() {
        let y = top + plot_h + 40.0 + (i / 2) as f64 * 18.0;
        let x = left + (i % 2) as f64 * 440.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{st}</text>"#,
            y - 10.0,
            COLORS[i],
            x + 18.0,
            y
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The trivial-jobs table of a BENCHMARKS.md, back into cells: redraws the
/// chart without running everything again (`compare --chart-from FILE --svg FILE`).
pub(crate) fn cells_from_markdown(text: &str) -> Vec<Cell> {
    let mut cells = Vec::new();
    let mut in_table = false;
    let mut cols: Vec<usize> = Vec::new();
    for line in text.lines() {
        if line.starts_with("## ") || line.starts_with("### ") {
            in_table = line == format!("## {}", Workload::Trivial.title());
            continue;
        }
        if !in_table || !line.starts_with('|') {
            continue;
        }
        let fields: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if fields[0] == "strategy" {
            cols = fields[1..]
                .iter()
                .filter_map(|f| f.strip_prefix("W = ")?.parse().ok())
                .collect();
            continue;
        }
        for (k, f) in fields[1..].iter().enumerate() {
            if let (Some(&w), Some(ns)) = (
                cols.get(k),
                f.split(" ns").next().and_then(|n| n.parse::<f64>().ok()),
            ) {
                cells.push(Cell {
                    workload: Workload::Trivial,
                    workers: w,
                    strategy: fields[0].to_string(),
                    ns_per_job: ns,
                    cpu_ns_per_job: None,
                });
            }
        }
    }
    cells
}
