//! `compare`: workpool against what users would pick instead, on the same
//! workloads, in one process. Prints Markdown tables and writes
//! BENCHMARKS.md and an SVG chart. Run it through `benchmarks/run.sh`, which
//! also runs the Go tutorial pattern and passes its figures in.
//!
//! Flags: `--quick` (a smoke run: small N, one repetition), `--reps N`,
//! `--go-results FILE`, `--out FILE`, `--svg FILE`, `--submitter task|main`
//! (where async strategies submit from; a task by default). For a quick look
//! at a few cells while working on the hot path: `--only TEXT` (strategies
//! whose name contains it), `--workload trivial|micro|sleep`, `--workers N`,
//! `--jobs N` (jobs per run instead of 10^6 / 10^5); with any of these only
//! the throughput lines are printed. For instruction counts:
//! `valgrind --tool=callgrind target/release/compare --only "workpool (detached)"
//! --workload trivial --workers 2 --reps 1 --jobs 100000`. `--latency`
//! runs only the submit-to-start latency table and prints it.

mod alternatives;
mod report;
mod work;

use std::time::Duration;

use work::Workload;

/// Every strategy measured, in table order.
pub(crate) const STRATEGIES: &[&str] = &[
    "workpool (detached)",
    "workpool (handles)",
    "workpool (handles, 1,000 in flight)",
    "workpool (timeout set)",
    "tokio mpsc + shared receiver (tutorial port)",
    "tokio spawn + semaphore",
    "flume + tasks",
    "crossbeam-channel + threads",
    "rayon spawn",
    "threadpool crate",
];

/// The latency table: this many jobs (a tenth with `--quick`), one per
/// interval.
const LATENCY_JOBS: u64 = 20_000;
const LATENCY_INTERVAL: Duration = Duration::from_micros(100);

/// How many of `STRATEGIES` are workpool's own rows.
pub(crate) const WORKPOOL_ROWS: usize = 4;

pub(crate) struct Config {
    pub(crate) quick: bool,
    pub(crate) reps: usize,
    pub(crate) go_results: Option<String>,
    pub(crate) out: Option<String>,
    pub(crate) svg: Option<String>,
    pub(crate) micro_rounds: Option<u64>,
    pub(crate) submitter: alternatives::Submitter,
    only: Option<String>,
    workload: Option<Workload>,
    workers: Option<usize>,
    jobs: Option<u64>,
}

impl Config {
    /// Whether a filter asked for a few cells rather than the full report.
    fn filtered(&self) -> bool {
        self.only.is_some()
            || self.workload.is_some()
            || self.workers.is_some()
            || self.jobs.is_some()
    }
}

fn usage(what: &str) -> ! {
    eprintln!("compare: {what}");
    std::process::exit(2);
}

fn parse_args() -> Config {
    let mut c = Config {
        quick: false,
        reps: 5,
        go_results: None,
        out: None,
        svg: None,
        micro_rounds: None,
        submitter: alternatives::Submitter::Task,
        only: None,
        workload: None,
        workers: None,
        jobs: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                c.quick = true;
                c.reps = 1;
            }
            "--reps" => c.reps = args.next().and_then(|v| v.parse().ok()).unwrap_or(5),
            "--go-results" => c.go_results = args.next(),
            "--out" => c.out = args.next(),
            "--svg" => c.svg = args.next(),
            "--micro-rounds" => c.micro_rounds = args.next().and_then(|v| v.parse().ok()),
            "--submitter" => {
                c.submitter = match args.next().as_deref() {
                    Some("task") => alternatives::Submitter::Task,
                    Some("main") => alternatives::Submitter::Main,
                    _ => usage("--submitter takes task or main"),
                }
            }
            "--only" => c.only = Some(args.next().unwrap_or_else(|| usage("--only takes a text"))),
            "--workload" => {
                c.workload = Some(match args.next().as_deref() {
                    Some("trivial") => Workload::Trivial,
                    Some("micro") => Workload::Micro,
                    Some("sleep") => Workload::Sleep,
                    _ => usage("--workload takes trivial, micro or sleep"),
                })
            }
            "--workers" => {
                c.workers = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage("--workers takes a number")),
                )
            }
            "--jobs" => {
                c.jobs = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .filter(|&n| n > 0)
                        .unwrap_or_else(|| usage("--jobs takes a number above 0")),
                )
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    c
}

/// One measured cell: the median of the repetitions.
#[derive(Clone, Debug)]
pub(crate) struct Cell {
    pub(crate) workload: Workload,
    pub(crate) workers: usize,
    pub(crate) strategy: String,
    pub(crate) ns_per_job: f64,
    /// The process's CPU time (both cores' busy time, every thread) per job,
    /// median over the repetitions; `None` where it was not measured.
    pub(crate) cpu_ns_per_job: Option<f64>,
}

/// The median of `v` (the middle value; `v` is not empty).
pub(crate) fn median_of(v: Vec<f64>) -> f64 {
    median(v)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if let Ok(spec) = std::env::var("WORKPOOL_BENCH_MEMORY") {
        alternatives::memory_child(&spec);
        return;
    }
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--chart-from")
        && argv.len() == 5
        && argv[3] == "--svg"
    {
        let text = std::fs::read_to_string(&argv[2]).expect("read the report");
        std::fs::write(&argv[4], report::svg(&report::cells_from_markdown(&text)))
            .expect("write the chart");
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("--latency") {
        for l in alternatives::latency(LATENCY_JOBS, LATENCY_INTERVAL) {
            println!(
                "{:<46} p50 {:>7.1} µs  p99 {:>7.1} µs  p99.9 {:>7.1} µs",
                l.strategy, l.p50, l.p99, l.p999
            );
        }
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("--calibrate") {
        println!("{}", work::calibrate());
        return;
    }
    let config = parse_args();
    let scale = if config.quick { 100 } else { 1 };
    let calibration = config.micro_rounds.unwrap_or_else(work::calibrate);
    eprintln!("1 µs of work = {} rounds", calibration);
    let mut cells = Vec::new();
    for workload in [Workload::Trivial, Workload::Micro, Workload::Sleep] {
        if config.workload.is_some_and(|w| w != workload) {
            continue;
        }
        let (n, workers): (u64, &[usize]) = match workload {
            Workload::Trivial | Workload::Micro => (1_000_000 / scale, &[2, 8, 64]),
            Workload::Sleep => (100_000 / scale, &[1000]),
        };
        let n = config.jobs.unwrap_or(n);
        for &w in workers {
            if config.workers.is_some_and(|only| only != w) {
                continue;
            }
            let chosen: Vec<usize> = (0..STRATEGIES.len())
                .filter(|&i| {
                    alternatives::applies(i, workload)
                        && config
                            .only
                            .as_ref()
                            .is_none_or(|o| STRATEGIES[i].contains(o.as_str()))
                })
                .collect();
            // Repetitions go round the strategies (one of each, then again)
            // rather than five of one strategy in a row: a slow spell of
            // this shared machine then falls on all of them alike.
            let mut runs = vec![Vec::with_capacity(config.reps); chosen.len()];
            let mut cpu_runs = vec![Vec::with_capacity(config.reps); chosen.len()];
            for _ in 0..config.reps {
                for (k, &i) in chosen.iter().enumerate() {
                    // Around the whole run: a runtime's or pool's start and
                    // stop are a few hundred microseconds against the
                    // hundreds of milliseconds of 10^6 jobs.
                    let cpu = cpu_time::ProcessTime::now();
                    let took = alternatives::run(i, workload, n, w, calibration, config.submitter);
                    let cpu = cpu.elapsed();
                    runs[k].push(took.as_nanos() as f64 / n as f64);
                    cpu_runs[k].push(cpu.as_nanos() as f64 / n as f64);
                }
            }
            for (k, &i) in chosen.iter().enumerate() {
                let name = STRATEGIES[i];
                let ns = median(std::mem::take(&mut runs[k]));
                let cpu = median(std::mem::take(&mut cpu_runs[k]));
                eprintln!(
                    "{workload:?} W={w:<4} {name:<46} {ns:>9.1} ns/job  (CPU {cpu:>7.1} ns/job)"
                );
                cells.push(Cell {
                    workload,
                    workers: w,
                    strategy: name.to_string(),
                    ns_per_job: ns,
                    cpu_ns_per_job: Some(cpu),
                });
            }
        }
    }
    if config.filtered() {
        return;
    }
    if let Some(path) = &config.go_results {
        cells.extend(report::read_go(path));
    }
    let latency = alternatives::latency(
        if config.quick {
            LATENCY_JOBS / 10
        } else {
            LATENCY_JOBS
        },
        LATENCY_INTERVAL,
    );
    let memory = alternatives::memory(if config.quick { 10_000 } else { 1_000_000 });
    let shutdown = alternatives::shutdown_latency(config.reps);
    let text = report::markdown(&config, &cells, &latency, &memory, &shutdown, calibration);
    println!("{text}");
    if let Some(out) = &config.out {
        std::fs::write(out, &text).expect("write the report");
        eprintln!("wrote {out}");
    }
    if let Some(svg) = &config.svg {
        std::fs::write(svg, report::svg(&cells)).expect("write the chart");
        eprintln!("wrote {svg}");
    }
}
