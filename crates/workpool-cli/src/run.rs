//! `workpool run`: wires the input reader, the pool, the reporter and the
//! signals together, and says in what order things stop.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufRead, BufReader};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use workpool::{
    BoxError, Completion, Job, JobContext, Outcome, OutcomeKind, Pool, RetryPolicy, permanent,
};

use crate::cli::{Halt, HaltWhen, RunArgs};
use crate::command::{self, Ran, Template, lock};
use crate::input::Records;
use crate::joblog::{JobLog, Previous, ResumeMode};
use crate::report::{Done, Event, Reporter, Stop, progress_bar};

/// Long enough to mean "no limit" without overflowing a deadline.
const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What a job's attempts left for the outcome hook.
struct AttemptInfo {
    record: Vec<u8>,
    argv: Vec<OsString>,
    start: SystemTime,
    ran: Option<Ran>,
    /// Not started because the run halted.
    halted: bool,
}

/// Shared by the handler and the outcome hook.
struct State {
    template: Template,
    kill_after: Duration,
    /// Fired by a second signal: running jobs get SIGKILL at once.
    kill_now: CancellationToken,
    attempts: Mutex<HashMap<u64, AttemptInfo>>,
    /// Process groups still alive, killed on the way out whatever happened.
    groups: Arc<Mutex<HashSet<i32>>>,
    /// Where each program was found in `PATH`.
    programs: command::Programs,
    halt: Option<Halt>,
    /// Final failures so far, counted in the outcome hook.
    failures: AtomicU64,
    /// Set in the outcome hook when --halt's limit is reached. The hook runs
    /// on the worker before it takes its next job, and the handler checks
    /// this before starting a command: so no job starts after the limit.
    halted: AtomicBool,
    stop: mpsc::UnboundedSender<Stop>,
}

/// The error of a job that was not started because the run halted.
#[derive(Debug)]
struct Halted;

impl std::fmt::Display for Halted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not started: the run halted")
    }
}

impl std::error::Error for Halted {}

/// Exit status for an interrupted run.
fn signal_status(kind: SignalKind) -> i32 {
    if kind == SignalKind::terminate() {
        143
    } else {
        130
    }
}

type Input = Pin<Box<dyn AsyncBufRead + Send>>;

/// Opens the input before anything runs, so a bad path is a usage error.
async fn open_input(args: &RunArgs) -> Result<(Input, Option<u64>), String> {
    match &args.input {
        None => Ok((Box::pin(BufReader::new(tokio::io::stdin())), None)),
        Some(path) => {
            let fail = |e: std::io::Error| format!("cannot read --input {}: {e}", path.display());
            let meta = tokio::fs::metadata(path).await.map_err(fail)?;
            if meta.is_dir() {
                return Err(format!(
                    "cannot read --input {}: it is a directory",
                    path.display()
                ));
            }
            let file = tokio::fs::File::open(path).await.map_err(fail)?;
            // Count records up front only when a bar wants a total (an ETA).
            let total = if args.bar {
                let bytes = tokio::fs::read(path).await.map_err(fail)?;
                let sep = if args.null { 0 } else { b'\n' };
                Some(
                    crate::input::split(&bytes, sep)
                        .iter()
                        .filter(|r| !r.is_empty())
                        .count() as u64,
                )
            } else {
                None
            };
            Ok((Box::pin(BufReader::new(file)), total))
        }
    }
}

/// Listens for SIGINT and SIGTERM from the start, so the first one never kills us.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, String> {
        let listen = |k| signal(k).map_err(|e| format!("cannot install signal handlers: {e}"));
        Ok(Signals {
            int: listen(SignalKind::interrupt())?,
            term: listen(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) -> SignalKind {
        tokio::select! {
            _ = self.int.recv() => SignalKind::interrupt(),
            _ = self.term.recv() => SignalKind::terminate(),
        }
    }
}

/// Runs `workpool run`; returns the exit status.
///
/// # Errors
///
/// A usage or input problem found before anything ran (exit status 2).
pub async fn run(args: RunArgs) -> Result<i32, String> {
    let started = Instant::now();
    let mut signals = Signals::new()?;
    let template = Template::new(args.command.clone());
    let separator = if args.null { 0 } else { b'\n' };
    let (input, total) = open_input(&args).await?;

    if args.dry_run {
        return dry_run(input, separator, &template).await;
    }

    let resume_mode = match (args.resume, args.resume_failed) {
        (true, _) => Some(ResumeMode::Finished),
        (_, true) => Some(ResumeMode::Succeeded),
        _ => None,
    };
    let (joblog, previous) = match &args.joblog {
        Some(path) => {
            let (log, prev) = JobLog::open(path, resume_mode.is_some())?;
            (Some(log), prev)
        }
        None => (None, Previous::default()),
    };

    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (events, events_rx) = mpsc::unbounded_channel();
    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel();
    let state = Arc::new(State {
        template,
        kill_after: args.kill_after,
        kill_now: CancellationToken::new(),
        attempts: Mutex::new(HashMap::new()),
        groups: Arc::new(Mutex::new(HashSet::new())),
        programs: command::Programs::default(),
        halt: args.halt,
        failures: AtomicU64::new(0),
        halted: AtomicBool::new(false),
        stop: stop_tx.clone(),
    });

    let mut builder = Pool::builder()
        .workers(jobs)
        .queue_capacity(jobs)
        // The handler stops its command itself (TERM, then KILL after
        // --kill-after); the pool must give it that long before giving up.
        .grace(args.kill_after + Duration::from_secs(2))
        .recent_failures(0)
        .retry(
            RetryPolicy::attempts(args.retries.saturating_add(1))
                .with_backoff(args.retry_delay, args.retry_delay.saturating_mul(64))
                .retry_timeouts(true),
        );
    if let Some(t) = args.timeout {
        builder = builder.default_timeout(t);
    }
    let hook_state = state.clone();
    let hook_events = events.clone();
    let handler_state = state.clone();
    let pool: Pool<Vec<u8>> = builder
        .on_outcome(move |c: &Completion<Vec<u8>>| {
            let done = done_from(&hook_state, c);
            check_halt(&hook_state, done.kind);
            let _ = hook_events.send(Event::Done(Box::new(done)));
        })
        .build(move |job: Job<Vec<u8>>, ctx: JobContext| {
            let st = handler_state.clone();
            async move { handle(job, ctx, st).await }
        })
        .map_err(|e| e.to_string())?;

    let window = args
        .keep_order
        .then(|| Arc::new(Semaphore::new(jobs * 4 + 16)));
    let bar = progress_bar(args.bar, total);
    let reporter = Reporter {
        keep_order: args.keep_order,
        joblog,
        bar: bar.clone(),
        window: window.clone(),
        timeout: args.timeout,
        stop: stop_tx.clone(),
    };
    let reporter = tokio::spawn(reporter.run(events_rx));

    // The reader: streams records into the pool, waiting when the queue is full.
    let stop_reading = CancellationToken::new();
    let reader = tokio::spawn(read_input(ReadInput {
        records: Records::new(input, separator),
        pool: pool.clone(),
        events: events.clone(),
        previous,
        resume_mode,
        joblog_path: args.joblog.clone(),
        window,
        stop: stop_reading.clone(),
        stop_tx: stop_tx.clone(),
    }));
    if let Some(bar) = &bar {
        let (pool, bar) = (pool.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                bar.set_prefix(pool.stats().running.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    // Run until the input is done and every job ended, a signal, or a halt.
    let mut interrupted = None;
    let mut input_error = None;
    let first = tokio::select! {
        s = signals.recv() => { interrupted = Some(s); None }
        stop = stop_rx.recv() => stop,
    };
    stop_reading.cancel();

    // The stop order: refuse new jobs first (the reader sees Closed and
    // reports what it holds as not run), then let running jobs finish as long
    // as this way of stopping allows, then stop their process groups.
    let (drain, timeout) = match first {
        Some(Stop::AllDone) => (true, FOREVER),
        Some(Stop::Halt(HaltWhen::Now)) => (false, Duration::ZERO),
        Some(Stop::Halt(HaltWhen::Soon) | Stop::StdoutClosed) => (false, FOREVER),
        Some(Stop::InputFailed(e)) => {
            input_error = Some(e);
            (false, FOREVER)
        }
        None => (false, args.shutdown_timeout),
    };
    let shutdown = async {
        if drain {
            pool.shutdown(timeout).await
        } else {
            pool.shutdown_without_draining(timeout).await
        }
    };
    tokio::pin!(shutdown);
    let report = loop {
        tokio::select! {
            report = &mut shutdown => break report,
            s = signals.recv() => {
                if interrupted.is_none() {
                    // First signal during a halt or the final drain: stop running jobs now.
                    interrupted = Some(s);
                    pool.cancel_running();
                } else {
                    // Second signal: kill at once.
                    state.kill_now.cancel();
                    pool.cancel_running();
                }
            }
        }
    };
    // The reader ends promptly: reading was cancelled and submits now fail.
    if let Ok(Err(e)) = reader.await {
        input_error.get_or_insert(e);
    }
    let _ = events.send(Event::Finish);
    let mut summary = reporter.await.unwrap_or_default();
    summary.halted = state.halted.load(Ordering::SeqCst);
    // No child outlives us, even one whose job the pool gave up on.
    for pgid in lock(&state.groups).drain() {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    drop(report);

    eprint!("{}", summary.render(started.elapsed()));
    if let Some(e) = input_error {
        eprintln!("workpool: {e}");
        return Ok(2);
    }
    Ok(match interrupted {
        Some(kind) => signal_status(kind),
        None if summary.any_failed() || summary.halted => 1,
        None => 0,
    })
}

async fn dry_run(input: Input, separator: u8, template: &Template) -> Result<i32, String> {
    use std::io::Write;
    let mut records = Records::new(input, separator);
    let mut out = std::io::stdout().lock();
    while let Some(rec) = records
        .next()
        .await
        .map_err(|e| format!("reading input: {e}"))?
    {
        if rec.is_empty() {
            continue;
        }
        if writeln!(out, "{}", command::display(&template.argv(&rec))).is_err() {
            break;
        }
    }
    Ok(0)
}

struct ReadInput {
    records: Records<Input>,
    pool: Pool<Vec<u8>>,
    events: mpsc::UnboundedSender<Event>,
    previous: Previous,
    resume_mode: Option<ResumeMode>,
    joblog_path: Option<std::path::PathBuf>,
    window: Option<Arc<Semaphore>>,
    stop: CancellationToken,
    stop_tx: mpsc::UnboundedSender<Stop>,
}

async fn read_input(mut r: ReadInput) -> Result<(), String> {
    let mut seq = 0u64;
    let result = loop {
        let next = tokio::select! {
            next = r.records.next() => next,
            _ = r.stop.cancelled() => break Ok(()),
        };
        let record = match next {
            Ok(Some(record)) => record,
            Ok(None) => break Ok(()),
            Err(e) => break Err(format!("reading input failed: {e}")),
        };
        if record.is_empty() {
            continue;
        }
        seq += 1;
        if let (Some(mode), Some(path)) = (r.resume_mode, &r.joblog_path) {
            match r.previous.skip(seq, &record, mode, path) {
                Ok(true) => {
                    let _ = r.events.send(Event::Skipped);
                    continue;
                }
                Ok(false) => {}
                Err(e) => break Err(e),
            }
        }
        if let Some(w) = &r.window {
            tokio::select! {
                permit = w.acquire() => match permit {
                    Ok(p) => p.forget(),
                    Err(_) => break Ok(()),
                },
                _ = r.stop.cancelled() => {
                    let _ = r.events.send(Event::Submitted(seq));
                    let _ = r.events.send(Event::Refused(seq, record));
                    break Ok(());
                }
            }
        }
        let _ = r.events.send(Event::Submitted(seq));
        if let Err(refused) = r.pool.submit_detached(Job::with_id(seq, record)).await {
            let _ = r
                .events
                .send(Event::Refused(seq, refused.into_inner().into_payload()));
            break Ok(());
        }
    };
    let _ = r.events.send(Event::InputDone);
    if let Err(e) = &result {
        let _ = r.stop_tx.send(Stop::InputFailed(e.clone()));
    }
    result
}

/// Counts a final failure and, at --halt's limit, stops new jobs at once and
/// tells the main task.
fn check_halt(st: &State, kind: OutcomeKind) {
    let Some(halt) = st.halt else { return };
    if !matches!(kind, OutcomeKind::Failed | OutcomeKind::TimedOut) {
        return;
    }
    let failures = st.failures.fetch_add(1, Ordering::SeqCst) + 1;
    if failures >= halt.failures && !st.halted.swap(true, Ordering::SeqCst) {
        let _ = st.stop.send(Stop::Halt(halt.when));
    }
}

/// Why a record holding a NUL byte cannot run.
const NUL_RECORD: &str =
    "the record holds a NUL byte, which no command argument can carry (split on NUL with -0)";

async fn handle(job: Job<Vec<u8>>, ctx: JobContext, st: Arc<State>) -> Result<(), BoxError> {
    let seq = ctx.id().as_u64().unwrap_or(0);
    // Taken from the queue after the halt: reported as not run.
    let halted = st.halted.load(Ordering::SeqCst);
    // An argument is a C string: a NUL byte cannot be passed, so say so
    // instead of the OS's "nul byte found".
    let nul = !halted && job.payload().contains(&0);
    let argv = if halted {
        Vec::new()
    } else {
        st.template.argv(job.payload())
    };
    let not_started = nul.then(|| Ran {
        exit: command::Exit::NotStarted(NUL_RECORD.into()),
        stdout: Vec::new(),
        stderr: Vec::new(),
    });
    lock(&st.attempts).insert(
        seq,
        AttemptInfo {
            record: job.into_payload(),
            argv: argv.clone(),
            start: SystemTime::now(),
            ran: not_started,
            halted,
        },
    );
    if halted {
        return Err(permanent(Halted).into());
    }
    if nul {
        return Err(permanent(NUL_RECORD).into());
    }
    let ran = command::run(
        &argv,
        &ctx,
        st.kill_after,
        &st.kill_now,
        &st.groups,
        &st.programs,
    )
    .await;
    let result = if ran.exit.success() {
        Ok(())
    } else {
        Err(ran.exit.describe().into())
    };
    if let Some(a) = lock(&st.attempts).get_mut(&seq) {
        a.ran = Some(ran);
    }
    result
}

/// Turns the pool's outcome into the reporter's `Done`, with what the last
/// attempt left behind.
fn done_from(st: &State, c: &Completion<Vec<u8>>) -> Done {
    let seq = c.id.as_u64().unwrap_or(0);
    let info = lock(&st.attempts).remove(&seq);
    let halted = info.as_ref().is_some_and(|i| i.halted);
    let (record, argv, start, ran) = match info {
        Some(i) if !i.halted => (i.record, i.argv, Some(i.start), i.ran),
        Some(i) => (i.record, Vec::new(), None, None),
        None => (Vec::new(), Vec::new(), None, None),
    };
    let record = match &c.outcome {
        Outcome::Unstarted { job, .. } => job.payload().clone(),
        _ => record,
    };
    let (exit, stdout, stderr) = match ran {
        Some(r) => (Some(r.exit), r.stdout, r.stderr),
        None => (None, Vec::new(), Vec::new()),
    };
    Done {
        seq,
        record,
        kind: if halted {
            OutcomeKind::Unstarted
        } else {
            c.outcome.kind()
        },
        attempts: if halted { 0 } else { c.outcome.attempts() },
        duration: c.duration,
        argv,
        start,
        exit,
        stdout,
        stderr,
    }
}
