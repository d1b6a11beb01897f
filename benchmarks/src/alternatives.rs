//! Each strategy, run on a workload: the time from the first submit until
//! every job has run and the pool (or channel, or threads) is shut down.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use workpool::{Job, Pool};

use crate::work::{Payload, Workload, cpu, payload, rounds};

/// Every async strategy runs on a runtime with two worker threads (the two
/// cores).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Where an async strategy's submitter runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Submitter {
    /// A task on the runtime, as in a service (the default).
    Task,
    /// The main thread, through `block_on`, as a `main` that submits would:
    /// every wait for room is then an OS-level park and wake.
    Main,
}

/// Runs an async strategy's `body` (which spawns its workers, submits and
/// waits) on a fresh runtime, with the submitter where `submitter` says.
fn on_runtime<F>(submitter: Submitter, body: F) -> Duration
where
    F: Future<Output = Duration> + Send + 'static,
{
    let rt = runtime();
    match submitter {
        Submitter::Main => rt.block_on(body),
        Submitter::Task => rt.block_on(async { tokio::spawn(body).await.expect("the submitter") }),
    }
}

const SLEEP: Duration = Duration::from_millis(10);

async fn job(p: Payload, workload: Workload, r: u64) {
    cpu(&p, r);
    if workload == Workload::Sleep {
        tokio::time::sleep(SLEEP).await;
    }
}

/// Whether strategy `i` runs workload `w` (thread-per-worker strategies do not
/// take the I/O-like workload with W = 1000).
pub(crate) fn applies(i: usize, w: Workload) -> bool {
    !(w == Workload::Sleep && i >= 7)
}

pub(crate) fn run(
    i: usize,
    w: Workload,
    n: u64,
    workers: usize,
    calibration: u64,
    s: Submitter,
) -> Duration {
    let r = rounds(w, calibration);
    match i {
        0 => on_runtime(s, workpool(Mode::Detached, w, n, workers, r)),
        1 => on_runtime(s, workpool(Mode::Handles, w, n, workers, r)),
        2 => on_runtime(s, workpool(Mode::HandlesInFlight, w, n, workers, r)),
        3 => on_runtime(s, workpool(Mode::Timeout, w, n, workers, r)),
        4 => on_runtime(s, tokio_mpsc(w, n, workers, r)),
        5 => on_runtime(s, spawn_semaphore(w, n, workers, r)),
        6 => on_runtime(s, flume_tasks(w, n, workers, r)),
        7 => crossbeam_threads(n, workers, r),
        8 => rayon_spawn(n, workers, r),
        _ => threadpool_crate(n, workers, r),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Detached,
    /// Every handle held until all jobs are submitted, then awaited (as
    /// `join_all` would): 10^6 reply cells live at once.
    Handles,
    /// Each handle awaited once `IN_FLIGHT` newer ones are out, as a service
    /// that awaits its results does (a `buffered` stream).
    HandlesInFlight,
    Timeout,
}

/// Handles outstanding in `Mode::HandlesInFlight`.
const IN_FLIGHT: usize = 1_000;

async fn workpool(mode: Mode, w: Workload, n: u64, workers: usize, r: u64) -> Duration {
    let pool = Pool::builder()
        .workers(workers)
        .queue_capacity(100)
        .build(move |job_: Job<Payload>, _ctx| async move {
            job(*job_.payload(), w, r).await;
            Ok::<(), Infallible>(())
        })
        .expect("a pool");
    let start = Instant::now();
    match mode {
        Mode::Detached => {
            for i in 0..n {
                pool.submit_detached(Job::with_id(i, payload(i)))
                    .await
                    .expect("open");
            }
        }
        Mode::Timeout => {
            for i in 0..n {
                let job = Job::with_id(i, payload(i)).with_timeout(Duration::from_secs(600));
                pool.submit_detached(job).await.expect("open");
            }
        }
        Mode::HandlesInFlight => {
            let mut handles = std::collections::VecDeque::with_capacity(IN_FLIGHT);
            for i in 0..n {
                if handles.len() == IN_FLIGHT {
                    let oldest: workpool::JobHandle<Payload> =
                        handles.pop_front().expect("IN_FLIGHT handles");
                    assert!(oldest.await.is_success());
                }
                handles.push_back(
                    pool.submit(Job::with_id(i, payload(i)))
                        .await
                        .expect("open"),
                );
            }
            for h in handles {
                assert!(h.await.is_success());
            }
        }
        Mode::Handles => {
            let mut handles = Vec::with_capacity(n as usize);
            for i in 0..n {
                handles.push(
                    pool.submit(Job::with_id(i, payload(i)))
                        .await
                        .expect("open"),
                );
            }
            for h in handles {
                assert!(h.await.is_success());
            }
        }
    }
    let report = pool.shutdown(Duration::from_secs(600)).await;
    assert_eq!(report.stats().succeeded, n);
    start.elapsed()
}

/// The Go tutorial's pattern ported literally: a bounded channel of 100 and
/// W tasks sharing its receiver behind a mutex.
async fn tokio_mpsc(w: Workload, n: u64, workers: usize, r: u64) -> Duration {
    let (tx, rx) = tokio::sync::mpsc::channel::<Payload>(100);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let rx = rx.clone();
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    match next {
                        Some(p) => job(p, w, r).await,
                        None => break,
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    for i in 0..n {
        tx.send(payload(i)).await.expect("open");
    }
    drop(tx);
    for t in tasks {
        t.await.expect("worker");
    }
    start.elapsed()
}

async fn spawn_semaphore(w: Workload, n: u64, workers: usize, r: u64) -> Duration {
    let sem = Arc::new(Semaphore::new(workers));
    let start = Instant::now();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("open");
        tokio::spawn(async move {
            job(payload(i), w, r).await;
            drop(permit);
        });
    }
    let _all = sem.acquire_many(workers as u32).await.expect("open");
    start.elapsed()
}

async fn flume_tasks(w: Workload, n: u64, workers: usize, r: u64) -> Duration {
    let (tx, rx) = flume::bounded::<Payload>(100);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let rx = rx.clone();
            tokio::spawn(async move {
                while let Ok(p) = rx.recv_async().await {
                    job(p, w, r).await;
                }
            })
        })
        .collect();
    let start = Instant::now();
    for i in 0..n {
        tx.send_async(payload(i)).await.expect("open");
    }
    drop(tx);
    for t in tasks {
        t.await.expect("worker");
    }
    start.elapsed()
}

fn crossbeam_threads(n: u64, workers: usize, r: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<Payload>(100);
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || {
                for p in rx {
                    cpu(&p, r);
                }
            })
        })
        .collect();
    let start = Instant::now();
    for i in 0..n {
        tx.send(payload(i)).expect("open");
    }
    drop(tx);
    for t in threads {
        t.join().expect("worker");
    }
    start.elapsed()
}

fn rayon_spawn(n: u64, workers: usize, r: u64) -> Duration {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .expect("rayon");
    let start = Instant::now();
    pool.scope(|s| {
        for i in 0..n {
            s.spawn(move |_| {
                cpu(&payload(i), r);
            });
        }
    });
    start.elapsed()
}

fn threadpool_crate(n: u64, workers: usize, r: u64) -> Duration {
    let pool = threadpool::ThreadPool::new(workers);
    let start = Instant::now();
    for i in 0..n {
        pool.execute(move || {
            cpu(&payload(i), r);
        });
    }
    pool.join();
    start.elapsed()
}

/// Submit-to-start latency percentiles (µs) at one job per `interval`.
pub(crate) struct Latency {
    pub(crate) strategy: &'static str,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
}

fn percentiles(strategy: &'static str, mut v: Vec<Duration>) -> Latency {
    v.sort();
    let at =
        |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_nanos() as f64 / 1000.0;
    Latency {
        strategy,
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
    }
}

/// Waits (spinning: the submitter's thread is not a runtime worker) until `at`.
fn pace(at: Instant) {
    while Instant::now() < at {
        std::hint::spin_loop();
    }
}

pub(crate) fn latency(n: u64, interval: Duration) -> Vec<Latency> {
    let mut out = Vec::new();
    let seen = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));

    let s = seen.clone();
    runtime().block_on(async move {
        let pool = Pool::builder()
            .workers(8)
            .queue_capacity(100)
            .build(move |job: Job<Instant>, _ctx| {
                let s = s.clone();
                async move {
                    s.lock().expect("lock").push(job.payload().elapsed());
                    Ok::<(), Infallible>(())
                }
            })
            .expect("a pool");
        let start = Instant::now();
        for i in 0..n {
            pace(start + interval * i as u32);
            pool.submit_detached(Job::with_id(i, Instant::now()))
                .await
                .expect("open");
        }
        pool.shutdown(Duration::from_secs(60)).await;
    });
    out.push(percentiles(
        "workpool (detached)",
        std::mem::take(&mut *seen.lock().expect("lock")),
    ));

    let s = seen.clone();
    runtime().block_on(async move {
        let (tx, rx) = flume::bounded::<Instant>(100);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (rx, s) = (rx.clone(), s.clone());
                tokio::spawn(async move {
                    while let Ok(t) = rx.recv_async().await {
                        s.lock().expect("lock").push(t.elapsed());
                    }
                })
            })
            .collect();
        let start = Instant::now();
        for i in 0..n {
            pace(start + interval * i as u32);
            tx.send_async(Instant::now()).await.expect("open");
        }
        drop(tx);
        for t in tasks {
            t.await.expect("worker");
        }
    });
    out.push(percentiles(
        "flume + tasks",
        std::mem::take(&mut *seen.lock().expect("lock")),
    ));

    let s = seen.clone();
    runtime().block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::channel::<Instant>(100);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (rx, s) = (rx.clone(), s.clone());
                tokio::spawn(async move {
                    loop {
                        let next = rx.lock().await.recv().await;
                        match next {
                            Some(t) => s.lock().expect("lock").push(t.elapsed()),
                            None => break,
                        }
                    }
                })
            })
            .collect();
        let start = Instant::now();
        for i in 0..n {
            pace(start + interval * i as u32);
            tx.send(Instant::now()).await.expect("open");
        }
        drop(tx);
        for t in tasks {
            t.await.expect("worker");
        }
    });
    out.push(percentiles(
        "tokio mpsc + shared receiver (tutorial port)",
        std::mem::take(&mut *seen.lock().expect("lock")),
    ));

    let (tx, rx) = crossbeam_channel::bounded::<Instant>(100);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (rx, s) = (rx.clone(), seen.clone());
            std::thread::spawn(move || {
                for t in rx {
                    s.lock().expect("lock").push(t.elapsed());
                }
            })
        })
        .collect();
    let start = Instant::now();
    for i in 0..n {
        pace(start + interval * i as u32);
        tx.send(Instant::now()).expect("open");
    }
    drop(tx);
    for t in threads {
        t.join().expect("worker");
    }
    out.push(percentiles(
        "crossbeam-channel + threads",
        std::mem::take(&mut *seen.lock().expect("lock")),
    ));
    out
}

/// Bytes of resident memory per queued job, with `n` jobs queued behind a
/// blocked worker. Each measurement runs in a child process of its own, so
/// one does not reuse the memory another freed.
pub(crate) struct Memory {
    pub(crate) strategy: &'static str,
    pub(crate) jobs: u64,
    pub(crate) bytes_per_job: f64,
}

pub(crate) fn memory(n: u64) -> Vec<Memory> {
    let exe = std::env::current_exe().expect("own path");
    ["workpool", "flume", "tokio-mpsc"]
        .into_iter()
        .map(|kind| {
            let out = std::process::Command::new(&exe)
                .env("WORKPOOL_BENCH_MEMORY", format!("{kind}:{n}"))
                .output()
                .expect("memory child");
            let bytes: f64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(f64::NAN);
            Memory {
                strategy: match kind {
                    "workpool" => "workpool (detached)",
                    "flume" => "flume bounded",
                    _ => "tokio mpsc bounded",
                },
                jobs: n,
                bytes_per_job: bytes / n as f64,
            }
        })
        .collect()
}

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

/// The child side of `memory`: queue `n` jobs and print the RSS growth.
pub(crate) fn memory_child(spec: &str) {
    let (kind, n) = spec.split_once(':').expect("kind:n");
    let n: u64 = n.parse().expect("n");
    let rt = runtime();
    let before = rss();
    let grown = rt.block_on(async move {
        match kind {
            "workpool" => {
                let gate = Arc::new(Semaphore::new(0));
                let g = gate.clone();
                let pool = Pool::builder()
                    .workers(1)
                    .queue_capacity(n as usize + 1)
                    .build(move |_job: Job<Payload>, _ctx| {
                        let g = g.clone();
                        async move {
                            let _ = g.acquire().await;
                            Ok::<(), Infallible>(())
                        }
                    })
                    .expect("a pool");
                for i in 0..n {
                    pool.submit_detached(Job::with_id(i, payload(i)))
                        .await
                        .expect("open");
                }
                rss().saturating_sub(before)
            }
            "flume" => {
                let (tx, _rx) = flume::bounded::<Payload>(n as usize + 1);
                for i in 0..n {
                    tx.send_async(payload(i)).await.expect("open");
                }
                rss().saturating_sub(before)
            }
            _ => {
                let (tx, _rx) = tokio::sync::mpsc::channel::<Payload>(n as usize + 1);
                for i in 0..n {
                    tx.send(payload(i)).await.expect("open");
                }
                rss().saturating_sub(before)
            }
        }
    });
    println!("{grown}");
}

/// Shutdown latency: of an idle pool, and of a pool whose jobs ignore
/// cancellation (timeout 50 ms + grace 50 ms: the floor is 100 ms).
pub(crate) struct ShutdownLatency {
    pub(crate) idle_us: f64,
    pub(crate) deaf_ms: f64,
}

pub(crate) fn shutdown_latency(reps: usize) -> ShutdownLatency {
    let rt = runtime();
    let (mut idle, mut deaf) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        rt.block_on(async {
            let pool = Pool::builder()
                .workers(8)
                .build(|_job: Job, _ctx| async { Ok::<(), Infallible>(()) })
                .expect("a pool");
            let start = Instant::now();
            pool.shutdown(Duration::from_secs(10)).await;
            idle.push(start.elapsed().as_nanos() as f64 / 1000.0);

            let pool = Pool::builder()
                .workers(8)
                .grace(Duration::from_millis(50))
                .build(|_job: Job, _ctx| std::future::pending::<Result<(), Infallible>>())
                .expect("a pool");
            for i in 0..8 {
                pool.submit_detached(Job::with_id(i, workpool::Bytes::new()))
                    .await
                    .expect("open");
            }
            let start = Instant::now();
            let report = pool.shutdown(Duration::from_millis(50)).await;
            deaf.push(start.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(report.stats().abandoned, 8);
        });
    }
    ShutdownLatency {
        idle_us: crate::median_of(idle),
        deaf_ms: crate::median_of(deaf),
    }
}
