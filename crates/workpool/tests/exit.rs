//! After shutdown returns, the process must be able to exit, even when a
//! blocking handler was abandoned in a loop that never checks its signal.
//!
//! Each case runs this test binary again as a child process (the ignored
//! `child` test), which builds a multi-threaded runtime as `#[tokio::main]`
//! does, shuts the pool down, drops the runtime and returns. The parent checks
//! that the child exits, and how.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use workpool::{Job, JobContext, OutcomeKind, Pool};

const CHILD: &str = "WORKPOOL_EXIT_CHILD";

/// Runs the child with `mode`; returns whether it exited by itself within
/// `limit` (otherwise it is killed) and what it printed.
fn run_child(mode: &str, limit: Duration) -> (bool, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let read = |child: &mut std::process::Child| {
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        out
    };
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = read(&mut child);
            assert!(status.success(), "child failed: {status}\n{out}");
            return (true, out);
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            return (false, read(&mut child));
        }
        // Polling a real process's exit; this is the bound, not a wait for an event.
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_process_exits_after_shutdown_abandons_a_spinning_blocking_handler() {
    let (exited, out) = run_child("blocking", Duration::from_secs(20));
    assert!(
        exited,
        "the child process must exit by itself; it printed:\n{out}"
    );
    assert!(out.contains("abandoned=[spin]"), "{out}");
    assert!(out.contains("runtime dropped"), "{out}");
}

/// The documented trap, shown: an *async* handler that never yields holds a
/// runtime thread, and dropping the runtime waits for it, so `main` never
/// returns. This is why such work belongs in `build_blocking`.
#[test]
fn an_async_handler_that_never_yields_keeps_the_runtime_from_dropping() {
    let (exited, out) = run_child("async", Duration::from_secs(3));
    // Shutdown itself returned and reported the job; only the runtime's drop hangs.
    assert!(out.contains("abandoned=[spin]"), "{out}");
    assert!(
        !exited && !out.contains("runtime dropped"),
        "expected a hang in runtime drop:\n{out}"
    );
}

#[test]
#[ignore = "child process of the tests above"]
fn child() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let report = rt.block_on(async move {
        let builder = Pool::builder().workers(1).grace(Duration::from_millis(100));
        let pool = if mode == "blocking" {
            builder
                .build_blocking(
                    move |_job: Job, _ctx: JobContext| -> Result<(), std::io::Error> {
                        tx.send(()).unwrap();
                        #[allow(clippy::empty_loop)]
                        loop {
                            std::hint::spin_loop();
                        }
                    },
                )
                .unwrap()
        } else {
            builder
                .build(move |_job: Job, _ctx: JobContext| {
                    let tx = tx.clone();
                    async move {
                        #[allow(unreachable_code)]
                        if false {
                            return Ok::<(), std::io::Error>(());
                        }
                        tx.send(()).unwrap();
                        #[allow(clippy::empty_loop)]
                        loop {
                            std::hint::spin_loop();
                        }
                    }
                })
                .unwrap()
        };
        pool.submit_detached(Job::with_id("spin", "x".into()))
            .await
            .unwrap();
        rx.recv().unwrap();
        pool.shutdown(Duration::from_millis(100)).await
    });
    let ids: Vec<String> = report
        .ids(OutcomeKind::Abandoned)
        .iter()
        .map(|i| i.to_string())
        .collect();
    println!("abandoned=[{}]", ids.join(","));
    drop(rt);
    println!("runtime dropped");
}
