//! `workpool worker`: runs the jobs of a job store, as `workpool run` runs
//! records, until a signal (or, with `--exit-when-empty`, until none is
//! ready). Several workers may share a store.
//!
//! The pool is a durable one (`PoolBuilder::store`): jobs come from the
//! file, not from a reader. Each attempt's result is kept by job ID until
//! the outcome hook says which attempt was the last; the hook then hands
//! the job's end to the reporter, which prints its output as a block.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use workpool::signal::Signal;
use workpool::{
    BoxError, Completion, Job, JobContext, JobId, OutcomeKind, Pool, RetryPolicy, permanent,
};

use crate::capture::LINE_BUDGET;
use crate::cli::{JobFlags, WorkerArgs};
use crate::command::lock;
use crate::report::{Done, Event, Reporter, say};
use crate::run::{self, Attempted, CommandFailed, State};
use crate::sources::Values;
use crate::template::{Spread, Template};

/// Jobs whose output may wait to be printed: the reporter prints each as it
/// ends, so this only bounds the memory of captured output per job.
const WINDOW: usize = 64;

/// The most workers over a job store: unlike `run`'s, which start as
/// records come, they all start at once and wait on the file.
const MAX_WORKERS: usize = 4096;

/// What each job's last attempt left (with its number and values), until
/// the outcome hook takes it.
type Attempts = Arc<Mutex<HashMap<JobId, (u64, Values, Attempted)>>>;

/// A stored payload as a job's number (for `{#}` and the output order) and
/// its values; `None` if it cannot be read.
pub(crate) type Unpack = fn(&JobId, Vec<u8>) -> Option<(u64, Values)>;

/// Jobs with an ID up to `up_to` that ended here (for `run --db`, which
/// must not also report them as done by an earlier run).
#[derive(Clone, Debug, Default)]
pub(crate) struct Finished {
    pub(crate) up_to: u64,
    pub(crate) ids: Arc<Mutex<std::collections::HashSet<u64>>>,
}

impl Finished {
    pub(crate) fn ran_here(&self, id: u64) -> bool {
        lock(&self.ids).contains(&id)
    }
}

/// `workpool worker`'s payloads: one record each, numbered by job ID.
fn one_record(id: &JobId, payload: Vec<u8>) -> Option<(u64, Values)> {
    Some((id.as_u64().unwrap_or(0), vec![payload]))
}

/// Runs `workpool worker`; returns the exit status.
///
/// # Errors
///
/// A usage problem found before any job ran (the store cannot be opened).
pub async fn worker(args: WorkerArgs) -> Result<i32, String> {
    let started = Instant::now();
    let mut signals = run::listen()?;
    let _ = crate::contain::become_subreaper();
    let store = crate::jobstore::open(&args.store.db, &args.store.queue, Some(args.lease)).await?;
    let jobs = args
        .job
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (events, events_rx) = mpsc::unbounded_channel();
    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel();
    let template = Template::new(&args.command, Spread::Splice);
    let state = Arc::new(State::new(template, &args.job, WINDOW, stop_tx.clone()));
    let reporter = Reporter {
        keep_order: false,
        joblog: None,
        bar: None,
        // Nobody waits on it: each job's permit comes back as it is printed.
        window: Arc::new(Semaphore::new(0)),
        timeout: args.job.timeout,
        stop: stop_tx,
        tag: args.tag,
        results: None,
        line_budget: Arc::new(Semaphore::new(LINE_BUDGET)),
    }
    .spawn(events_rx)
    .map_err(|e| format!("cannot start the reporter thread: {e}"))?;

    let pool = build(
        &args.job,
        jobs,
        &store,
        state.clone(),
        events.clone(),
        one_record,
        None,
    )?;
    let drained = async {
        if args.exit_when_empty {
            Some(pool.shutdown(Duration::MAX).await)
        } else {
            std::future::pending().await
        }
    };
    let mut interrupted = None;
    let report = tokio::select! {
        report = drained => report,
        s = run::next_signal(&mut signals) => { interrupted = Some(s); None }
        _ = stop_rx.recv() => None,
    };
    let report = match report {
        Some(r) => r,
        None => {
            stop(
                &pool,
                &state,
                &mut signals,
                &mut interrupted,
                args.job.shutdown_timeout,
            )
            .await
        }
    };
    let summary = summarize(&state, &events, reporter, started).await;
    store.close_or_say().await;
    let released = report.stats().unstarted;
    if released > 0 {
        say(&format!(
            "workpool: {released} claimed job{} went back to the store\n",
            if released == 1 { "" } else { "s" }
        ));
    }
    Ok(match interrupted {
        Some(s) => s.exit_code(),
        None if summary.any_failed() || summary.output_error.is_some() => 1,
        None => 0,
    })
}

/// The end of a run over a job store, once its pool stopped: every job's
/// process killed, the reporter's summary (with `--halt`'s verdict),
/// printed.
pub(crate) async fn summarize(
    state: &State,
    events: &mpsc::UnboundedSender<Event>,
    reporter: tokio::sync::oneshot::Receiver<crate::report::Summary>,
    started: Instant,
) -> crate::report::Summary {
    state.kill_all();
    let _ = events.send(Event::Finish);
    let mut summary = reporter.await.unwrap_or_default();
    state.mark_halt(&mut summary);
    say(&summary.render(started.elapsed()));
    summary
}

/// Stops claiming, lets running jobs finish until `timeout` (a signal
/// meanwhile cancels them, a second kills them) and releases the rest.
pub(crate) async fn stop(
    pool: &Pool<Vec<u8>>,
    state: &State,
    signals: &mut workpool::signal::Signals,
    interrupted: &mut Option<Signal>,
    timeout: Duration,
) -> workpool::ShutdownReport<Vec<u8>> {
    if let Some(s) = interrupted {
        say(&format!(
            "workpool: {} received: claiming nothing more; running jobs get up to {timeout:?} to finish (send it again to kill them now)\n",
            run::signal_name(*s)
        ));
    }
    let shutdown = pool.shutdown_without_draining(timeout);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            report = &mut shutdown => return report,
            s = run::next_signal(signals) => {
                if interrupted.is_some() {
                    state.kill_now();
                }
                interrupted.get_or_insert(s);
                pool.cancel_running();
            }
        }
    }
}

/// The durable pool: the handler runs each job's command and keeps what it
/// left; the hook passes the last attempt's to the reporter.
pub(crate) fn build(
    flags: &JobFlags,
    jobs: usize,
    store: &crate::db::Store,
    state: Arc<State>,
    events: mpsc::UnboundedSender<Event>,
    unpack: Unpack,
    finished: Option<Finished>,
) -> Result<Pool<Vec<u8>>, String> {
    if jobs > MAX_WORKERS {
        return Err(format!(
            "-j {jobs}: at most {MAX_WORKERS} workers run on a job store (each waits on it from the start)"
        ));
    }
    let attempts: Attempts = Arc::default();
    let kept = attempts.clone();
    let hook_state = state.clone();
    let mut builder = Pool::builder()
        .workers(jobs)
        .store(store.durable())
        .grace(flags.kill_after + Duration::from_secs(2))
        .recent_failures(0)
        .retry(
            RetryPolicy::attempts(flags.retries.saturating_add(1))
                .with_backoff(flags.retry_delay, flags.retry_delay.saturating_mul(64))
                .retry_timeouts(true),
        );
    if let Some(t) = flags.timeout {
        builder = builder.default_timeout(t);
    }
    builder
        .on_outcome(move |c: &Completion<Vec<u8>, ()>| {
            let kind = c.outcome().kind();
            let last = lock(&kept).remove(c.id());
            // A job that did not start here went back to the store.
            if kind == OutcomeKind::Unstarted {
                run::check_halt(&hook_state, kind);
                return;
            }
            if let (Some(f), Some(id)) = (&finished, c.id().as_u64())
                && id <= f.up_to
            {
                lock(&f.ids).insert(id);
            }
            let (seq, values, attempted) = match last {
                Some((seq, values, a)) => (seq, values, Some(a)),
                None => (c.id().as_u64().unwrap_or(0), Vec::new(), None),
            };
            let mut done = Done::new(seq, values, kind, c.outcome().attempts());
            if let Some(a) = attempted {
                run::fill_done(&mut done, a);
            }
            // The job goes to the reporter before a halt it causes stops
            // the run: the stop must not overtake its output.
            let _ = events.send(Event::Done(Box::new(done)));
            run::check_halt(&hook_state, kind);
        })
        .build(move |job: Job<Vec<u8>>, ctx: JobContext| {
            let (state, attempts) = (state.clone(), attempts.clone());
            async move { attempt(job, ctx, state, attempts, unpack).await }
        })
        .map_err(|e| e.to_string())
}

/// One attempt of a stored job: its record fills the template as in `run`.
async fn attempt(
    job: Job<Vec<u8>>,
    ctx: JobContext,
    state: Arc<State>,
    attempts: Attempts,
    unpack: Unpack,
) -> Result<(), BoxError> {
    let id = job.id().clone();
    let Some((seq, values)) = unpack(&id, job.into_payload()) else {
        return Err(permanent(std::io::Error::other("the stored job cannot be read")).into());
    };
    // The job's deadline is in `ctx`, which stops the command.
    let result = run::handle(values.clone(), seq, ctx, state).await;
    let (attempted, error): (Attempted, Option<BoxError>) = match result {
        Ok(a) => (a, None),
        Err(e) => {
            let permanent_error = e.downcast_ref::<workpool::Permanent>().is_some();
            match run::command_failed(e) {
                Ok(CommandFailed(a)) => {
                    let text = a.describe();
                    let e: BoxError = if permanent_error {
                        permanent(std::io::Error::other(text)).into()
                    } else {
                        Box::new(std::io::Error::other(text))
                    };
                    (a, Some(e))
                }
                Err(e) => return Err(e),
            }
        }
    };
    lock(&attempts).insert(id, (seq, values, attempted));
    match error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}
