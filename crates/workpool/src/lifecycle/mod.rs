//! The lifecycle, step by step: Running → Draining → Cancelling → Stopped,
//! run once by a coordinator task; every caller of shutdown waits for the
//! same report. (The state itself and the admission gate are in
//! `core/state.rs`.)

pub(crate) mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::report::ShutdownReport;
use crate::core::state::Lifecycle;
use crate::core::{Core, after};
use crate::store::Store;

/// How long shutdown waits, after Stopped, for outcomes already on their way
/// (a submit being refused, a worker handing its job back). These paths
/// never wait on user code, so this is a safety bound, not a delay.
const STRAGGLER_BOUND: Duration = Duration::from_secs(1);

/// Whether shutdown has begun, and its report once it is done.
pub(crate) struct Shutdown<P> {
    started: AtomicBool,
    report: watch::Sender<Option<ShutdownReport<P>>>,
}

impl<P> Shutdown<P> {
    pub(crate) fn new() -> Self {
        Shutdown {
            started: AtomicBool::new(false),
            report: watch::Sender::new(None),
        }
    }

    pub(crate) fn is_started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }
}

/// Starts the shutdown once (later calls join it) and waits for the report.
pub(crate) async fn shutdown<P, T, S>(
    core: &Arc<Core<P, T, S>>,
    this: &Arc<Shutdown<P>>,
    drain: bool,
    timeout: Duration,
) -> ShutdownReport<P>
where
    P: Send + 'static,
    T: Send + 'static,
    S: Store<P>,
{
    let mut rx = this.report.subscribe();
    if !this.started.swap(true, Ordering::SeqCst) {
        // A task of its own: if the caller stops waiting, shutdown goes on.
        let (core, this) = (core.clone(), this.clone());
        tokio::spawn(async move {
            let report = coordinate(&core, drain, timeout).await;
            this.report.send_replace(Some(report));
        });
    }
    loop {
        if let Some(report) = rx.borrow_and_update().as_ref() {
            return report.clone();
        }
        // The sender lives in `this`, which we hold: `changed` cannot fail.
        let _ = rx.changed().await;
    }
}

async fn coordinate<P, T, S>(
    core: &Core<P, T, S>,
    drain: bool,
    timeout: Duration,
) -> ShutdownReport<P>
where
    P: Send + 'static,
    T: Send + 'static,
    S: Store<P>,
{
    let began = Instant::now();
    tracing::info!(target: "workpool", ?timeout, drain, "shutdown started");
    let signals = core.signals();

    // 1. Draining: refuse every new submission (the job goes back inside the
    //    error). Without drain, queued jobs and jobs waiting to retry come back
    //    now, and workers hand back whatever they claim from here on.
    core.advance(if drain {
        Lifecycle::Draining
    } else {
        Lifecycle::HandingBack
    });
    if drain {
        core.store().look_again();
    } else {
        core.hand_back_left();
    }

    // 2. Wait for the store and running jobs to finish, until the timeout, or
    //    until `cancel_running` cuts the wait short.
    let drained = wait_idle(core, after(began, timeout), Some(&signals.cut_drain)).await;

    // 3. Cancelling: close the store (waiting submits fail and get their job
    //    back), fire every running job's signal, hand back what is left.
    //    Nothing starts from here on.
    core.advance(Lifecycle::Cancelling);
    core.store().close();
    signals.cancel.cancel();
    core.hand_back_left();

    // 4. Grace: running jobs may stop on their own.
    if !drained {
        wait_idle(core, after(Instant::now(), core.config().grace), None).await;
    }

    // 5. Stopped: whatever still runs is abandoned and reported by ID. Async
    //    handlers that still yield are dropped by their worker; a blocking
    //    handler's thread is let go; a handler that never yields keeps its
    //    runtime thread, but not this report.
    core.advance(Lifecycle::Stopped);
    core.abandon_running();
    signals.abandon.cancel();

    // 6. Outcomes already on their way (see STRAGGLER_BOUND).
    if !wait_idle(core, Instant::now() + STRAGGLER_BOUND, None).await {
        tracing::error!(target: "workpool", "shutdown: some outcomes were still on their way; the report may miss them");
    }

    // 7. A durable store writes down every end before the report says so.
    core.store().flush().await;

    let mut stats = core.stats();
    // Every admission is settled now: the gate's count is exact, where the
    // accepted counter (bumped just after each enqueue) may still lag.
    stats.accepted = core.admitted();
    let (not_finished, unstarted) = core.take_report_lists();
    let report = ShutdownReport::new(stats, not_finished, unstarted, began.elapsed(), drained);
    tracing::info!(target: "workpool", "{report}");
    report
}

/// Waits until every admitted job has its outcome, or `until`, or `interrupt`.
/// Returns whether the pool went idle.
async fn wait_idle<P, T, S>(
    core: &Core<P, T, S>,
    until: Instant,
    interrupt: Option<&CancellationToken>,
) -> bool
where
    P: Send + 'static,
    T: Send + 'static,
    S: Store<P>,
{
    let interrupted = async {
        match interrupt {
            Some(t) => t.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(interrupted);
    loop {
        // Register for the next notification before checking, so that a job
        // finishing between the check and the wait is not missed.
        let notified = core.progress().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // A durable store's own changes (a retry, an empty fetch) come
        // with no outcome: listen to them too.
        let changed = core.store().changes().map(|n| n.notified());
        tokio::pin!(changed);
        if let Some(c) = changed.as_mut().as_pin_mut() {
            c.enable();
        }
        if core.is_idle() {
            return true;
        }
        let store_changed = async {
            match changed.as_mut().as_pin_mut() {
                Some(c) => c.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut notified => {}
            _ = store_changed => {}
            _ = tokio::time::sleep_until(until) => return core.is_idle(),
            _ = &mut interrupted => return false,
        }
    }
}
