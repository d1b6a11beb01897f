//! The SQLite store through the pool: jobs outlive the pool that took
//! them, shutdown releases what did not run, retries and failures are
//! kept with their errors.

#![cfg(feature = "sqlite")]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use workpool::store::sqlite::{NewJob, SqliteStore};
use workpool::{Job, JobContext, Outcome, Pool, RetryPolicy};

/// A fresh database path for one test, removed when dropped.
struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("workpool-sqlite-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDb(dir.join("jobs.db"))
    }

    fn open(&self) -> SqliteStore {
        SqliteStore::options(&self.0)
            .poll_interval(Duration::from_millis(10))
            .open()
            .unwrap()
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

/// One worker whose jobs say they started, then wait for their cancel
/// signal and fail with "stopped".
fn waiting_pool(store: &SqliteStore, retry: RetryPolicy) -> (Pool<Vec<u8>>, Arc<Notify>) {
    let started = Arc::new(Notify::new());
    let s = started.clone();
    let pool = Pool::builder()
        .workers(1)
        .retry(retry)
        .store(store.clone())
        .build(move |_job: Job<Vec<u8>>, ctx: JobContext| {
            let s = s.clone();
            async move {
                s.notify_one();
                ctx.cancelled().await;
                Err::<(), _>(std::io::Error::other("stopped"))
            }
        })
        .unwrap();
    (pool, started)
}

async fn count(store: &SqliteStore, state: &str) -> u64 {
    store
        .counts()
        .await
        .unwrap()
        .iter()
        .filter(|c| c.state == state)
        .map(|c| c.count)
        .sum()
}

#[tokio::test]
async fn submitted_jobs_run_and_are_recorded_completed() {
    let db = TempDb::new("basic");
    let store = db.open();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let pool: Pool<Vec<u8>, usize> = Pool::builder()
        .workers(2)
        .store(store.clone())
        .build(move |job: Job<Vec<u8>>, _ctx: JobContext| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(job.payload().len())
            }
        })
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..20u8 {
        handles.push(pool.submit(Job::new(vec![i; i as usize])).await.unwrap());
    }
    let mut ids = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        ids.push(h.id().as_u64().unwrap());
        match h.await {
            Outcome::Succeeded { value, .. } => assert_eq!(value, i),
            other => panic!("job {i}: {other:?}"),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20, "each job has its own stored ID");
    let report = pool.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.stats().succeeded, 20);
    store.flush().await.unwrap();
    assert_eq!(count(&store, "completed").await, 20);
    assert_eq!(ran.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn jobs_left_in_the_file_run_in_the_next_pool() {
    let db = TempDb::new("left");
    {
        let store = db.open();
        let jobs = (0..10).map(|i| NewJob::new(vec![i])).collect();
        assert_eq!(store.enqueue(jobs).await.unwrap().len(), 10);
    }
    let store = db.open();
    assert_eq!(count(&store, "available").await, 10);
    let pool: Pool<Vec<u8>> = Pool::builder()
        .workers(3)
        .store(store.clone())
        .build(|_job: Job<Vec<u8>>, _ctx| async { Ok::<_, std::io::Error>(()) })
        .unwrap();
    // Draining waits for what the file holds ready.
    let report = pool.shutdown(Duration::from_secs(10)).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.stats().succeeded, 10);
    store.flush().await.unwrap();
    assert_eq!(count(&store, "completed").await, 10);
}

#[tokio::test]
async fn shutdown_without_draining_releases_what_did_not_finish() {
    let db = TempDb::new("release");
    let store = db.open();
    let (pool, started) = waiting_pool(&store, RetryPolicy::attempts(1));
    for i in 0..5u8 {
        pool.submit_detached(Job::new(vec![i])).await.unwrap();
    }
    started.notified().await;
    let report = pool.shutdown_without_draining(Duration::ZERO).await;
    assert!(
        report.take_unstarted().is_empty(),
        "nothing is handed back: {report}"
    );
    assert_eq!(
        report.not_finished().len(),
        1,
        "the one it ran, named: {report}"
    );
    store.flush().await.unwrap();
    // The running one was interrupted and the rest never left the file.
    assert_eq!(
        count(&store, "available").await,
        5,
        "{:?}",
        store.counts().await
    );
    let rows = store.jobs(Some("available"), 10).await.unwrap();
    assert_eq!(
        rows.iter().filter(|r| r.attempt == 1).count(),
        1,
        "{rows:?}"
    );
}

#[tokio::test]
async fn retries_are_stored_and_exhausted_jobs_end_failed_with_every_error() {
    let db = TempDb::new("retry");
    let store = db.open();
    let pool: Pool<Vec<u8>> = Pool::builder()
        .workers(2)
        .retry(
            RetryPolicy::attempts(3)
                .with_backoff(Duration::from_millis(1), Duration::from_millis(5)),
        )
        .store(store.clone())
        .build(|_job: Job<Vec<u8>>, ctx: JobContext| async move {
            Err::<(), _>(std::io::Error::other(format!("boom {}", ctx.attempt())))
        })
        .unwrap();
    let handle = pool.submit(Job::new(b"x".to_vec())).await.unwrap();
    let outcome = handle.await;
    assert!(
        matches!(outcome, Outcome::Failed { attempts: 3, .. }),
        "{outcome:?}"
    );
    pool.shutdown(Duration::from_secs(5)).await;
    store.flush().await.unwrap();
    let rows = store.jobs(Some("failed"), 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attempt, 3);
    for n in 1..=3 {
        assert!(
            rows[0].errors.contains(&format!("boom {n}")),
            "{}",
            rows[0].errors
        );
    }
    // Retrying a failed job makes it available with one more attempt.
    assert!(store.retry(rows[0].id).await.unwrap());
    assert_eq!(count(&store, "available").await, 1);
}

#[tokio::test]
async fn a_new_file_is_private_and_bad_files_are_clear_errors() {
    use std::os::unix::fs::PermissionsExt;
    let db = TempDb::new("files");
    let store = db.open();
    store.flush().await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.0.display());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path}");
    }
    let garbage = db.0.with_file_name("garbage.db");
    std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
    let err = SqliteStore::open(&garbage).unwrap_err().to_string();
    assert!(
        err.contains("garbage.db") && err.contains("not a database"),
        "{err}"
    );
    let missing = db.0.with_file_name("no/such/dir.db");
    let err = SqliteStore::open(&missing).unwrap_err().to_string();
    assert!(err.contains("cannot open the job store"), "{err}");
}

/// The example `durable` (a program running a durable pool over N jobs,
/// each appending `PID JOB` to a log), built if it is not there yet.
fn durable_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("examples").join("durable");
    if !bin.exists() {
        let mut build = std::process::Command::new(env!("CARGO"));
        build.args(["build", "-p", "workpool", "--example", "durable"]);
        build.args(["--features", "sqlite"]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success());
    }
    bin
}

/// What a kill run showed.
struct KillRun {
    /// Jobs that ran more than once, and the extra runs in all.
    again: u32,
    /// Kills that landed while the program ran (not after it finished).
    landed: u64,
}

/// Runs the program over `n` jobs, killing it with SIGKILL `kills` times
/// at moments spread over its runs (20 to 170 ms after each start), then
/// lets a last run finish. Asserts that every job ran, that no process ran
/// a job twice, that a job ran again only after a kill landed (at most 4
/// running and 1 claimed per kill), and that the file says all completed.
fn kill_and_finish(name: &str, n: usize, kills: u64) -> KillRun {
    let db = TempDb::new(name);
    let bin = durable_example();
    let run = || {
        std::process::Command::new(&bin)
            .arg(&db.0)
            .arg(n.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut seed = std::process::id() as u64;
    let mut landed = 0;
    for _ in 0..kills {
        let mut child = run();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(20 + (seed >> 33) % 150));
        landed += u64::from(child.try_wait().unwrap().is_none());
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let status = run().wait().unwrap();
    assert!(status.success());
    let log = std::fs::read_to_string(db.0.with_extension("db.log")).unwrap();
    let mut runs: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let mut per_pid = std::collections::HashSet::new();
    for line in log.lines() {
        let (pid, job) = line.split_once(' ').unwrap();
        *runs.entry(job).or_default() += 1;
        assert!(
            per_pid.insert((pid, job)),
            "{job} ran twice in process {pid}"
        );
    }
    assert_eq!(runs.len(), n, "every job ran");
    let again: u32 = runs.values().map(|r| r - 1).sum();
    assert!(
        u64::from(again) <= landed * 5,
        "{again} runs again after {landed} kills"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let counts = rt.block_on(async { db.open().counts().await.unwrap() });
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(
        (counts[0].state.as_str(), counts[0].count),
        ("completed", n as u64)
    );
    KillRun { again, landed }
}

/// kill -9 at random moments loses no job (the quick run; the long one is
/// `kill_9_long`, figures in RELIABILITY.md).
#[test]
fn kill_9_at_any_moment_loses_no_job() {
    kill_and_finish("kill9", 400, 8);
}

/// The long run: `cargo test -p workpool --all-features --release --test
/// sqlite -- --ignored --nocapture`.
#[test]
#[ignore = "long: 200 kills"]
fn kill_9_long() {
    let (n, kills) = (20_000, 200);
    let started = std::time::Instant::now();
    let r = kill_and_finish("kill9long", n, kills);
    println!(
        "kill -9 long run: {n} jobs, {kills} kills ({} landed mid-run), 0 lost, {} extra runs, {:?}",
        r.landed,
        r.again,
        started.elapsed()
    );
}

/// A full file (here, one at its size limit, which SQLite reports as it
/// reports a full disk) fails the enqueue that does not fit, to its caller,
/// and keeps everything acknowledged before.
#[tokio::test]
async fn a_full_store_refuses_what_does_not_fit_and_keeps_what_it_acknowledged() {
    let db = TempDb::new("full");
    let store = SqliteStore::options(&db.0)
        .max_size(256 * 1024)
        .open()
        .unwrap();
    let mut acknowledged = 0;
    let error = loop {
        match store.enqueue(vec![NewJob::new(vec![7u8; 16 * 1024])]).await {
            Ok(_) => acknowledged += 1,
            Err(e) => break e.to_string(),
        }
        assert!(acknowledged < 100, "the limit was never reached");
    };
    assert!(error.contains("full"), "{error}");
    assert!(acknowledged >= 5);
    assert_eq!(count(&store, "available").await, acknowledged);
    // Through a pool: the submit fails and the job comes back.
    let pool: Pool<Vec<u8>> = Pool::builder()
        .workers(1)
        .store(store.clone())
        .build(|_job: Job<Vec<u8>>, ctx: JobContext| async move {
            ctx.cancelled().await;
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let err = pool
        .submit(Job::new(vec![7u8; 64 * 1024]))
        .await
        .unwrap_err();
    assert!(matches!(err, workpool::SubmitError::Store(_)), "{err}");
    assert_eq!(err.into_inner().payload().len(), 64 * 1024);
    pool.shutdown_without_draining(Duration::ZERO).await;
    store.flush().await.unwrap();
    let kept: u64 = store.counts().await.unwrap().iter().map(|c| c.count).sum();
    assert_eq!(kept, acknowledged);
}

/// Two processes on one file share its jobs: each job runs once, and no
/// "database is locked" reaches either.
#[test]
fn two_processes_on_one_file_run_each_job_once() {
    let db = TempDb::new("two");
    let bin = durable_example();
    let n = 1500;
    let start = || {
        std::process::Command::new(&bin)
            .arg(&db.0)
            .arg(n.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start(), start());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            !stderr.contains("locked") && !stderr.contains("busy"),
            "{stderr}"
        );
    }
    let log = std::fs::read_to_string(db.0.with_extension("db.log")).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut pids = std::collections::HashSet::new();
    for line in log.lines() {
        let (pid, job) = line.split_once(' ').unwrap();
        assert!(seen.insert(job.to_string()), "{job} ran twice");
        pids.insert(pid.to_string());
    }
    assert_eq!(seen.len(), n);
    assert_eq!(pids.len(), 2, "both processes ran jobs");
}

/// A cancel by ID reaches a running job in the process that runs it: its
/// signal fires, and it ends cancelled (not failed, not retried).
#[tokio::test]
async fn a_cancel_by_id_fires_the_running_jobs_signal() {
    let db = TempDb::new("cancelrunning");
    let store = db.open();
    let (pool, started) = waiting_pool(&store, RetryPolicy::attempts(3));
    let handle = pool.submit(Job::new(b"long".to_vec())).await.unwrap();
    let id = handle.id().as_u64().unwrap();
    started.notified().await;
    // From another opening of the file, as `workpool cancel` would.
    let other = db.open();
    assert!(other.cancel(id).await.unwrap());
    let outcome = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Cancelled { attempts: 1, .. }),
        "{outcome:?}"
    );
    pool.shutdown(Duration::from_secs(5)).await;
    store.flush().await.unwrap();
    let rows = store.jobs(Some("cancelled"), 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].errors.contains("stopped"), "{}", rows[0].errors);
}

/// A job submitted here that waits in the file to retry when the pool
/// stops: its handle resolves at shutdown (unstarted, with the job), and
/// the job stays in the file, retryable, for the next pool.
#[tokio::test]
async fn a_handle_whose_job_waits_to_retry_resolves_at_shutdown() {
    let db = TempDb::new("retrywaits");
    let store = db.open();
    // A backoff drawn from up to a century: the retry is not due in this test.
    let century = Duration::from_secs(100 * 365 * 86_400);
    let pool: Pool<Vec<u8>> = Pool::builder()
        .workers(1)
        .retry(RetryPolicy::attempts(3).with_backoff(century, century))
        .store(store.clone())
        .build(|_job: Job<Vec<u8>>, _ctx: JobContext| async {
            Err::<(), _>(std::io::Error::other("not yet"))
        })
        .unwrap();
    let handle = pool.submit(Job::new(b"later".to_vec())).await.unwrap();
    while count(&store, "retryable").await == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pool.shutdown(Duration::from_secs(5)).await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("the handle resolves at shutdown");
    match outcome {
        Outcome::Unstarted { job, attempts } => {
            assert_eq!((job.payload().as_slice(), attempts), (&b"later"[..], 1));
        }
        other => panic!("{other:?}"),
    }
    store.flush().await.unwrap();
    assert_eq!(count(&store, "retryable").await, 1, "it stays in the file");
}
