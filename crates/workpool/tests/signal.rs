//! The `signal` helper: the first SIGINT shuts down gracefully, the second
//! cancels running jobs at once. Real signals, sent to this test process; this
//! file holds one test so no other test shares the process's signals.

#![cfg(all(unix, feature = "signal"))]

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use workpool::signal::{Signal, shutdown_on_signal};
use workpool::{Job, JobContext, OutcomeKind, Pool};

fn kill(sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "current_thread")]
async fn first_signal_drains_second_cancels() {
    // Replace the default disposition (terminate) before any signal is sent.
    let _int = signal(SignalKind::interrupt()).unwrap();
    let _term = signal(SignalKind::terminate()).unwrap();

    let (started, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let pool = Pool::builder()
        .workers(1)
        .build(move |_job: Job, ctx: JobContext| {
            let started = started.clone();
            async move {
                started.send(()).unwrap();
                ctx.cancelled().await;
                Err::<(), _>("cancelled by signal")
            }
        })
        .unwrap();
    pool.submit_detached(Job::with_id("long", "x".into()))
        .await
        .unwrap();
    pool.submit_detached(Job::with_id("queued", "y".into()))
        .await
        .unwrap();
    started_rx.recv().await.unwrap();

    let p = pool.clone();
    let helper = tokio::spawn(async move { shutdown_on_signal(&p, Duration::from_secs(60)).await });
    // On this single-threaded runtime, yielding lets the helper run its first
    // poll, which installs its listeners.
    tokio::task::yield_now().await;

    kill("-INT");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pool.is_closed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first signal did not start shutdown"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !helper.is_finished(),
        "a graceful shutdown waits for the running job"
    );

    kill("-TERM");
    let (first, report) = tokio::time::timeout(Duration::from_secs(10), helper)
        .await
        .expect("second signal must end the shutdown promptly")
        .unwrap()
        .unwrap();
    assert_eq!(first, Signal::Interrupt);
    assert_eq!(first.exit_code(), 130);
    assert_eq!(
        report.ids(OutcomeKind::Cancelled),
        [workpool::JobId::from("long")]
    );
    assert_eq!(
        report.ids(OutcomeKind::Unstarted),
        [workpool::JobId::from("queued")]
    );
    assert!(report.elapsed() < Duration::from_secs(10));
}
