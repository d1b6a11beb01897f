//! `workpool run`: wires the input reader, the pool, the reporter and the
//! signals together, and says in what order things stop.

use std::collections::HashSet;
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use workpool::signal::{Signal, Signals};
use workpool::{
    BoxError, Completion, Job, JobContext, Outcome, OutcomeKind, Permanent, Pool, RetryPolicy,
    ShutdownReport, permanent,
};

use crate::capture::{LINE_BUDGET, LineSink};
use crate::cli::{Halt, HaltWhen, RunArgs};
use crate::command::{self, Ran, lock};
use crate::joblog::{JobLog, Previous, ResumeMode};
use crate::report::{Done, Event, OutputError, Reporter, Stop, Summary, progress_bar, say};
use crate::sources::{self, Group, Jobs, Values, shown};
use crate::template::{Slots, Spread, Template};

/// Jobs whose output may wait to be printed at once: enough to keep -j
/// running and the queue full (and with -k, jobs that ended before their
/// turn), and no more, so that a slow reader of stdout holds up the run
/// instead of filling memory.
fn window_size(jobs: usize, keep_order: bool) -> usize {
    let jobs = jobs.min(usize::MAX / 8);
    if keep_order {
        jobs * 4 + 16
    } else {
        jobs * 2 + 16
    }
}

/// What the captured output held in memory comes to at most, per stream,
/// for -j up to a few thousand (each stream keeps at least 4 KiB); the rest
/// of each job's output goes to a temporary file.
const OUTPUT_IN_MEMORY: usize = 16 << 20;

/// The end of a job's stderr kept for the summary and the job log.
const TAIL_BYTES: usize = 4096;

/// The most records queued for free workers, whatever -j is.
const MAX_QUEUED: usize = 4096;

/// How long, after a signal, the reporter may take to write what is left.
const REPORTER_PATIENCE: Duration = Duration::from_secs(2);

/// Long enough to mean "no limit" without overflowing a deadline.
const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What one attempt of a job left: the command line, when it started, how
/// long it took, and how the command ended with its output. The handler
/// returns it (in `Ok`, or inside a [`CommandFailed`] error), so it reaches
/// the reporter with the job's outcome.
#[derive(Debug)]
pub(crate) struct Attempted {
    argv: Vec<OsString>,
    start: SystemTime,
    took: Duration,
    ran: Ran,
}

impl Attempted {
    /// How its command ended, for people.
    pub(crate) fn describe(&self) -> String {
        self.ran.exit.describe()
    }
}

/// The error of an attempt whose command did not exit 0 (or did not start).
#[derive(Debug)]
pub(crate) struct CommandFailed(pub(crate) Attempted);

impl std::fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.ran.exit.describe())
    }
}

impl std::error::Error for CommandFailed {}

/// The pool of `workpool run`: records in, attempts out.
type RunPool = Pool<Values, Attempted>;

/// Shared by the handler and the outcome hook.
pub(crate) struct State {
    template: Template,
    /// How commands start and stop: programs found in `PATH`, where output
    /// goes, the process groups alive.
    launch: command::Launch,
    /// --tag with --line-buffer: lines are tagged as they are passed on.
    tag_lines: bool,
    halt: Option<Halt>,
    /// Final failures and successes so far, counted in the outcome hook,
    /// and the records read (for a `--halt` percentage).
    failures: AtomicU64,
    successes: AtomicU64,
    read: Arc<AtomicU64>,
    /// Set in the outcome hook when --halt's limit is reached.
    halted: AtomicBool,
    /// --delay, and when the next job may start under it.
    delay: Option<Duration>,
    next_start: Mutex<Option<tokio::time::Instant>>,
    /// Stops the pool's intake, for the hook at the limit. (The pool holds
    /// the hook, so this is a cycle; the process exits after the run.)
    stop_intake: OnceLock<Box<dyn Fn() + Send + Sync>>,
    stop: mpsc::UnboundedSender<Stop>,
}

/// The command's template and the jobs' inputs: standard input or
/// `--input`, or the sources after `:::` and `::::`, combined, split and
/// grouped as the flags say. Opened before anything runs, so a bad path is
/// a usage error.
pub(crate) fn open_sources(args: &RunArgs, jobs: usize) -> Result<(Template, Jobs), String> {
    let (command, specs) = sources::split_command(&args.command)?;
    let spread = match args.context_replace {
        true => Spread::Repeat,
        false => Spread::Splice,
    };
    let group = match (args.max_args, args.multiple || args.context_replace) {
        (Some(n), _) => Group::Count(n),
        (None, true) => Group::Fill { slots: jobs },
        (None, false) => Group::One,
    };
    let opened = sources::open_all(args.input.as_deref(), specs)?;
    let separator = if args.null { 0 } else { b'\n' };
    let inputs = Jobs::new(
        opened,
        separator,
        args.colsep.clone().map(|c| c.0),
        args.link,
        group,
    );
    Ok((Template::new(&command, spread), inputs))
}

/// A job log must be a file of its own: not standard output (where the
/// jobs' output goes), and not the input (opening the log would empty it).
pub(crate) fn check_joblog(args: &RunArgs) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Some(log) = &args.joblog else {
        return Ok(());
    };
    if log.as_os_str() == "-" {
        return Err(
            "--joblog - is not supported: the jobs' output goes to standard output; give a file"
                .into(),
        );
    }
    let same_file = match (&args.input, std::fs::metadata(log)) {
        (Some(input), Ok(l)) if input.as_os_str() != "-" => {
            std::fs::metadata(input).is_ok_and(|i| (i.dev(), i.ino()) == (l.dev(), l.ino()))
        }
        _ => false,
    };
    if same_file {
        return Err(format!(
            "--joblog {} is the --input file: writing the log would destroy the input",
            log.display()
        ));
    }
    Ok(())
}

/// The signals `workpool run` answers, listened for from the start so that
/// none of them kills it and leaves its jobs behind: the first stops intake
/// and lets running jobs finish, the second kills them. SIGHUP, SIGQUIT,
/// SIGUSR1, SIGUSR2 and SIGALRM count as SIGTERM does.
const HANDLED: [Signal; 7] = [
    Signal::Interrupt,
    Signal::Terminate,
    Signal::Hangup,
    Signal::Quit,
    Signal::User1,
    Signal::User2,
    Signal::Alarm,
];

pub(crate) fn listen() -> Result<Signals, String> {
    Signals::new(&HANDLED).map_err(|e| format!("cannot install signal handlers: {e}"))
}

/// The next signal; an error to listen is taken as none ever coming.
pub(crate) async fn next_signal(signals: &mut Signals) -> Signal {
    match signals.recv().await {
        Ok(s) => s,
        Err(_) => std::future::pending().await,
    }
}

/// Runs `workpool run`; returns the exit status.
///
/// The steps, in order: open the input and the job log (usage errors before
/// anything runs), build the pool, start the reporter and the reader, wait
/// for the first reason to stop, stop (the stop order is in `stop`), and
/// finish (the summary and the exit status).
///
/// # Errors
///
/// A usage or input problem found before anything ran (exit status 2).
pub async fn run(args: RunArgs) -> Result<i32, String> {
    if args.db.is_some() {
        return crate::stored::run(args).await;
    }
    let started = Instant::now();
    let mut signals = listen()?;
    // Orphaned descendants of jobs come to us, not to init (`contain.rs`).
    if let Err(e) = crate::contain::become_subreaper() {
        say(&format!(
            "workpool: warning: cannot become the subreaper of the jobs' processes ({e}); a process that leaves its job's group may outlive it\n"
        ));
    }
    let jobs = jobs_of(&args);
    let (template, inputs) = open_sources(&args, jobs)?;
    check_joblog(&args)?;

    if args.dry_run {
        // A signal ends even a dry run waiting on its input.
        return tokio::select! {
            status = dry_run(inputs, &template, jobs) => status,
            s = next_signal(&mut signals) => Ok(s.exit_code()),
        };
    }

    let (joblog, previous, resume_mode) = open_joblog(&args)?;
    let (events, events_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = mpsc::unbounded_channel();
    let line_budget = Arc::new(Semaphore::new(LINE_BUDGET));
    let output = output_mode(&args, &events, &line_budget);
    let state = new_state(&args, jobs, template, output, stop_tx.clone());
    let pool = build_pool(&args, jobs, &state)?;

    let window = Arc::new(Semaphore::new(window_size(jobs, args.keep_order)));
    let bar = progress_bar(args.bar);
    let reporter = reporter_for(
        &args,
        joblog,
        bar.clone(),
        window.clone(),
        stop_tx.clone(),
        line_budget,
    )
    .spawn(events_rx)
    .map_err(|e| format!("cannot start the reporter thread: {e}"))?;

    // The reader: streams records into the pool, waiting when the queue is full.
    let stop_reading = CancellationToken::new();
    let (alive_tx, alive) = mpsc::channel::<()>(1);
    let reader = tokio::spawn(read_input(ReadInput {
        records: inputs,
        pool: pool.clone(),
        template: state.template.clone(),
        alive: alive_tx,
        jobs,
        submitted: 0,
        read: state.read.clone(),
        events: events.clone(),
        previous,
        resume_mode,
        joblog_path: args.joblog.clone(),
        window,
        stop: stop_reading.clone(),
        stop_tx,
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

    let mut run = Running {
        args,
        started,
        signals,
        state,
        pool,
        events,
        interrupted: None,
        input_error: None,
    };
    let first = run.first_stop(stop_rx).await;
    stop_reading.cancel();
    let report = run.stop(first).await;
    run.finish(reader, alive, reporter, report).await
}

/// A run once everything is started.
struct Running {
    args: RunArgs,
    started: Instant,
    signals: Signals,
    state: Arc<State>,
    pool: RunPool,
    events: mpsc::UnboundedSender<Event>,
    /// The first signal, if one came.
    interrupted: Option<Signal>,
    input_error: Option<String>,
}

impl Running {
    /// Waits for the first reason to stop: every record read and every job
    /// ended, a signal (`None`), a halt, output that cannot be written, or
    /// an input error.
    async fn first_stop(&mut self, mut stop_rx: mpsc::UnboundedReceiver<Stop>) -> Option<Stop> {
        let first = tokio::select! {
            s = next_signal(&mut self.signals) => { self.interrupted = Some(s); None }
            stop = stop_rx.recv() => stop,
        };
        if let Some(s) = self.interrupted {
            say(&format!(
                "workpool: {} received: starting nothing more; running jobs get up to {:?} to finish (send it again to kill them now)\n",
                signal_name(s),
                self.args.job.shutdown_timeout
            ));
        }
        first
    }

    /// The stop order: refuse new jobs first (the reader sees Closed and
    /// reports what it holds as not run), then let running jobs finish as
    /// long as this way of stopping allows; a signal meanwhile cancels them,
    /// a second one kills them.
    async fn stop(&mut self, first: Option<Stop>) -> ShutdownReport<Values> {
        let (drain, timeout) = match first {
            Some(Stop::AllDone) => (true, FOREVER),
            Some(Stop::Halt(HaltWhen::Now)) => (false, Duration::ZERO),
            Some(Stop::Halt(HaltWhen::Soon) | Stop::CannotReport) => (false, FOREVER),
            Some(Stop::InputFailed(e)) => {
                self.input_error = Some(e);
                (false, FOREVER)
            }
            None => (false, self.args.job.shutdown_timeout),
        };
        let pool = self.pool.clone();
        let shutdown = async move {
            if drain {
                pool.shutdown(timeout).await
            } else {
                pool.shutdown_without_draining(timeout).await
            }
        };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                report = &mut shutdown => return report,
                s = next_signal(&mut self.signals) => {
                    if self.interrupted.is_none() {
                        // First signal during a halt or the final drain: stop running jobs now.
                        self.interrupted = Some(s);
                    } else {
                        // Second signal: kill at once.
                        self.state.launch.kill_now.cancel();
                    }
                    self.pool.cancel_running();
                }
            }
        }
    }

    /// Collects the last outcomes and the summary, stops every process group
    /// still known, prints the summary; the exit status.
    async fn finish(
        mut self,
        reader: tokio::task::JoinHandle<Result<(), String>>,
        mut alive: mpsc::Receiver<()>,
        reporter: tokio::sync::oneshot::Receiver<Summary>,
        report: ShutdownReport<Values>,
    ) -> Result<i32, String> {
        // The reader ends promptly: reading was cancelled and submits now fail.
        if let Ok(Err(e)) = reader.await {
            self.input_error.get_or_insert(e);
        }
        // Each job's handle is awaited by a task of its own, which passes the
        // outcome on to the reporter; the last one gone closes this channel.
        let _ = alive.recv().await;
        let _ = self.events.send(Event::Finish);
        let Some(mut summary) = self.summary(reporter).await else {
            kill_groups(&self.state.launch.groups);
            return Ok(self.interrupted.map_or(1, Signal::exit_code));
        };
        self.state.mark_halt(&mut summary);
        // No child outlives us, even one whose job the pool gave up on.
        kill_groups(&self.state.launch.groups);
        // The summary is built from the handles' outcomes, the report from the
        // pool's counters: one count per job either way.
        if let Some(mismatch) = disagreement(&summary, report.stats()) {
            say(&format!(
                "workpool: internal error: the summary and the pool disagree: {mismatch}\n"
            ));
        }
        say(&summary.render(self.started.elapsed()));
        if let Some(e) = self.input_error {
            say(&format!("workpool: {e}\n"));
            return Ok(2);
        }
        Ok(match (self.interrupted, &summary.output_error) {
            (Some(signal), _) => signal.exit_code(),
            // As GNU parallel: the status of a process killed by SIGPIPE.
            (None, Some(OutputError::Closed)) => 141,
            (None, Some(OutputError::Failed(_))) => 1,
            (None, None) if summary.any_failed() || summary.halted => 1,
            (None, None) if summary.joblog_error.is_some() => 1,
            (None, None) => 0,
        })
    }

    /// The reporter's summary. It may be blocked writing to a reader that
    /// does not read: a signal then ends the wait (`None`), and after a
    /// signal it gets [`REPORTER_PATIENCE`] to finish.
    async fn summary(
        &mut self,
        reporter: tokio::sync::oneshot::Receiver<Summary>,
    ) -> Option<Summary> {
        let patience = match self.interrupted {
            Some(_) => REPORTER_PATIENCE,
            None => FOREVER,
        };
        tokio::select! {
            summary = reporter => Some(summary.unwrap_or_default()),
            s = next_signal(&mut self.signals) => {
                self.interrupted.get_or_insert(s);
                say("workpool: stopped while the output was not being read; the rest of it is lost\n");
                None
            }
            _ = tokio::time::sleep(patience) => {
                say("workpool: the output is not being read; the rest of it is lost\n");
                None
            }
        }
    }
}

/// -j, or the number of CPUs.
pub(crate) fn jobs_of(args: &RunArgs) -> usize {
    args.job
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The reporter of a run: the flags' output settings, `window` the permits
/// of outputs not yet printed.
pub(crate) fn reporter_for(
    args: &RunArgs,
    joblog: Option<JobLog>,
    bar: Option<indicatif::ProgressBar>,
    window: Arc<Semaphore>,
    stop: mpsc::UnboundedSender<Stop>,
    line_budget: Arc<Semaphore>,
) -> Reporter {
    Reporter {
        keep_order: args.keep_order,
        joblog,
        bar,
        window,
        timeout: args.job.timeout,
        stop,
        // With --line-buffer, lines are tagged as they are passed on.
        tag: args.tag && !args.line_buffer,
        results: args.results.as_deref().map(crate::results::Results::new),
        line_budget,
    }
}

/// Where the jobs' output goes: captured (the default), passed on line by
/// line to the reporter, or inherited.
pub(crate) fn output_mode(
    args: &RunArgs,
    events: &mpsc::UnboundedSender<Event>,
    budget: &Arc<Semaphore>,
) -> command::Output {
    match (args.ungroup, args.line_buffer) {
        (true, _) => command::Output::Inherit,
        (_, true) => command::Output::Lines(LineSink {
            events: events.clone(),
            budget: budget.clone(),
        }),
        _ => command::Output::Capture,
    }
}

/// What the handler and the outcome hook share for this run.
pub(crate) fn new_state(
    args: &RunArgs,
    jobs: usize,
    template: Template,
    output: command::Output,
    stop: mpsc::UnboundedSender<Stop>,
) -> Arc<State> {
    let mut state = State::new(
        template,
        &args.job,
        window_size(jobs, args.keep_order),
        stop,
    );
    state.launch.output = output;
    state.tag_lines = args.tag && args.line_buffer;
    state.halt = args.halt;
    state.delay = args.delay;
    Arc::new(state)
}

impl State {
    /// The state of a run whose outputs wait `window` at most at once, with
    /// output captured, no halt and no delay.
    pub(crate) fn new(
        template: Template,
        job: &crate::cli::JobFlags,
        window: usize,
        stop: mpsc::UnboundedSender<Stop>,
    ) -> Self {
        State {
            template,
            launch: command::Launch {
                programs: command::Programs::default(),
                capture_limit: (OUTPUT_IN_MEMORY / window).max(4096),
                output: command::Output::Capture,
                kill_after: job.kill_after,
                kill_now: CancellationToken::new(),
                groups: GROUPS.get_or_init(Default::default).clone(),
            },
            tag_lines: false,
            halt: None,
            failures: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            read: Arc::new(AtomicU64::new(0)),
            halted: AtomicBool::new(false),
            delay: None,
            next_start: Mutex::new(None),
            stop_intake: OnceLock::new(),
            stop,
        }
    }

    /// Lets `--halt` stop `pool`'s intake.
    pub(crate) fn set_stop_intake<P: Send + 'static, T: Send + 'static>(&self, pool: &Pool<P, T>) {
        let pool = pool.clone();
        let _ = self.stop_intake.set(Box::new(move || pool.stop_intake()));
    }

    /// The count of records read, for a `--halt` percentage.
    pub(crate) fn read_counter(&self) -> Arc<AtomicU64> {
        self.read.clone()
    }

    /// Puts in the summary whether `--halt` stopped the run: a halt on
    /// successes is a success, one on failures is not.
    pub(crate) fn mark_halt(&self, summary: &mut Summary) {
        let halted = self.halted.load(Ordering::SeqCst);
        let on_success = self.halt.is_some_and(|h| h.on_success);
        summary.halted = halted && !on_success;
        summary.halted_on_success = halted && on_success;
    }

    /// Fired by a second signal: running jobs get SIGKILL at once.
    pub(crate) fn kill_now(&self) {
        self.launch.kill_now.cancel();
    }

    /// SIGKILLs every job's processes still known.
    pub(crate) fn kill_all(&self) {
        kill_groups(&self.launch.groups);
    }
}

/// The job log, what it says finished (when resuming), and how to resume.
pub(crate) fn open_joblog(
    args: &RunArgs,
) -> Result<(Option<JobLog>, Previous, Option<ResumeMode>), String> {
    let resume_mode = match (args.resume, args.resume_failed) {
        (true, _) => Some(ResumeMode::Finished),
        (_, true) => Some(ResumeMode::Succeeded),
        _ => None,
    };
    match &args.joblog {
        Some(path) => {
            let (log, previous) = JobLog::open(path, resume_mode.is_some())?;
            Ok((Some(log), previous, resume_mode))
        }
        None => Ok((None, Previous::default(), resume_mode)),
    }
}

/// The pool: workers added as records come, the queue at most
/// [`MAX_QUEUED`], the retry policy and timeout of the flags, the hook that
/// halts.
fn build_pool(args: &RunArgs, jobs: usize, state: &Arc<State>) -> Result<RunPool, String> {
    let mut builder = Pool::builder()
        // Workers are added as records come (see `read_input`): -j a million
        // with three records costs three workers.
        .workers(1)
        .queue_capacity(jobs.min(MAX_QUEUED))
        // The handler stops its command itself (TERM, then KILL after
        // --kill-after); the pool must give it that long before giving up.
        .grace(args.job.kill_after + Duration::from_secs(2))
        .recent_failures(0)
        .retry(
            RetryPolicy::attempts(args.job.retries.saturating_add(1))
                .with_backoff(
                    args.job.retry_delay,
                    args.job.retry_delay.saturating_mul(64),
                )
                .retry_timeouts(true),
        );
    if let Some(t) = args.job.timeout {
        builder = builder.default_timeout(t);
    }
    let (hook_state, handler_state) = (state.clone(), state.clone());
    let pool: RunPool = builder
        .on_outcome(move |c: &Completion<Values, Attempted>| {
            check_halt(&hook_state, c.outcome().kind());
        })
        .build(move |job: Job<Values>, ctx: JobContext| {
            let st = handler_state.clone();
            // The job's ID is its record's number.
            let seq = job.id().as_u64().unwrap_or(0);
            async move { handle(job.into_payload(), seq, ctx, st).await }
        })
        .map_err(|e| e.to_string())?;
    state.set_stop_intake(&pool);
    Ok(pool)
}

/// Where the summary's counts differ from the pool's, if anywhere. Records
/// the pool refused at shutdown count as not run in the summary and as
/// rejected, not unstarted, in the pool.
fn disagreement(summary: &crate::report::Summary, stats: &workpool::Stats) -> Option<String> {
    let mut off = Vec::new();
    for kind in OutcomeKind::ALL {
        let (ours, pool) = (summary.count(kind), stats.count(kind));
        if kind != OutcomeKind::Unstarted && ours != pool {
            off.push(format!("{kind}: {ours} vs {pool}"));
        }
    }
    let not_run = summary.not_run_total;
    if not_run < stats.unstarted {
        off.push(format!(
            "not run: {not_run} vs {} unstarted",
            stats.unstarted
        ));
    }
    (!off.is_empty()).then(|| off.join(", "))
}

/// The process groups of the running jobs, for a panic to kill on its way
/// out (`main.rs`).
static GROUPS: OnceLock<Arc<Mutex<HashSet<i32>>>> = OnceLock::new();

/// Kills every job's processes: what a run that cannot go on does last.
pub fn kill_every_job() {
    match GROUPS.get() {
        Some(groups) => kill_groups(groups),
        None => crate::contain::kill_orphans(None, &[]),
    }
}

/// SIGKILLs every process group still known, and every orphan of a job
/// re-parented to us (`contain.rs`).
fn kill_groups(groups: &Mutex<HashSet<i32>>) {
    for pgid in lock(groups).drain() {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    crate::contain::kill_orphans(None, &[]);
}

/// A signal's usual name.
pub(crate) fn signal_name(s: Signal) -> &'static str {
    match s {
        Signal::Interrupt => "SIGINT",
        Signal::Terminate => "SIGTERM",
        Signal::Hangup => "SIGHUP",
        Signal::Quit => "SIGQUIT",
        Signal::User1 => "SIGUSR1",
        Signal::User2 => "SIGUSR2",
        Signal::Alarm => "SIGALRM",
    }
}

async fn dry_run(mut inputs: Jobs, template: &Template, jobs: usize) -> Result<i32, String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut seq = 0u64;
    while let Some(values) = inputs
        .next()
        .await
        .map_err(|e| format!("reading input: {e}"))?
    {
        seq += 1;
        // The slots a run would use in turn, as GNU parallel's --dry-run shows.
        let slots = Slots {
            seq,
            slot: ((seq - 1) % jobs as u64) as usize + 1,
        };
        if let Err(e) = writeln!(out, "{}", command::display(&template.argv(&values, slots))) {
            // As a run: a closed stdout is 141, another failure 1.
            return Ok(if e.kind() == std::io::ErrorKind::BrokenPipe {
                141
            } else {
                say(&format!("workpool: writing the commands failed: {e}\n"));
                1
            });
        }
    }
    Ok(0)
}

struct ReadInput {
    records: Jobs,
    pool: RunPool,
    template: Template,
    /// Held by each task that awaits a job's handle (see `run`).
    alive: mpsc::Sender<()>,
    /// -j: workers are added one per record submitted, up to this.
    jobs: usize,
    /// Records submitted so far.
    submitted: usize,
    /// Records read so far, for a `--halt` percentage.
    read: Arc<AtomicU64>,
    events: mpsc::UnboundedSender<Event>,
    previous: Previous,
    resume_mode: Option<ResumeMode>,
    joblog_path: Option<std::path::PathBuf>,
    window: Arc<Semaphore>,
    stop: CancellationToken,
    stop_tx: mpsc::UnboundedSender<Stop>,
}

async fn read_input(mut r: ReadInput) -> Result<(), String> {
    // Resuming, every record the job log knows is read and checked before
    // anything runs: the ones to run again wait here until then, so that an
    // input that changed since the log was written runs nothing.
    let check_until = match r.resume_mode {
        Some(_) => r.previous.last_seq(),
        None => 0,
    };
    let mut held: Vec<(u64, Values)> = Vec::new();
    let mut seq = 0u64;
    // Ok(true): the input was read to its end; Ok(false): reading stopped.
    let result = loop {
        let next = tokio::select! {
            next = r.records.next() => next,
            _ = r.stop.cancelled() => break Ok(false),
        };
        let record = match next {
            Ok(Some(record)) => record,
            Ok(None) => break Ok(true),
            Err(e) => break Err(format!("reading input failed: {e}")),
        };
        seq += 1;
        r.read.store(seq, Ordering::SeqCst);
        if let (Some(mode), Some(path)) = (r.resume_mode, &r.joblog_path) {
            match r.previous.skip(seq, &shown(&record), mode, path) {
                Ok(true) => {
                    let _ = r.events.send(Event::Skipped { failed: false });
                    continue;
                }
                Ok(false) => {}
                Err(e) => break Err(e),
            }
        }
        if seq < check_until {
            held.push((seq, record));
            continue;
        }
        if !r.offer_held(&mut held).await || !r.offer(seq, record).await {
            break Ok(false);
        }
    };
    if matches!(result, Ok(true)) {
        // The input ended before the log's last record: what was held runs
        // now (what the run then refuses stays held, reported below).
        let _ = r.offer_held(&mut held).await;
    }
    for (seq, record) in held {
        let _ = r.events.send(Event::Submitted(seq));
        let _ = r.events.send(Event::Refused(seq, record));
    }
    let _ = r.events.send(Event::InputDone {
        complete: matches!(result, Ok(true)),
    });
    match result {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = r.stop_tx.send(Stop::InputFailed(e.clone()));
            Err(e)
        }
    }
}

impl ReadInput {
    /// Offers the records held while the job log was checked; false once
    /// the run stops taking them (the rest stay in `held`).
    async fn offer_held(&mut self, held: &mut Vec<(u64, Values)>) -> bool {
        let mut records = std::mem::take(held).into_iter();
        while let Some((seq, record)) = records.next() {
            if !self.offer(seq, record).await {
                held.extend(records);
                return false;
            }
        }
        true
    }

    /// Submits one record, once the reporter has room for its output; false
    /// when the run no longer takes records (it was reported not run).
    async fn offer(&mut self, seq: u64, record: Values) -> bool {
        tokio::select! {
            permit = self.window.acquire() => match permit {
                Ok(p) => p.forget(),
                Err(_) => return false,
            },
            _ = self.stop.cancelled() => {
                let _ = self.events.send(Event::Submitted(seq));
                let _ = self.events.send(Event::Refused(seq, record));
                return false;
            }
        }
        let _ = self.events.send(Event::Submitted(seq));
        self.submitted += 1;
        if self.submitted <= self.jobs && self.submitted > 1 {
            // Refused only once shutdown has begun, and then the submit is too.
            let _ = self.pool.resize(self.submitted);
        }
        match self.pool.submit(Job::with_id(seq, record.clone())).await {
            Ok(handle) => {
                let (events, template, alive) = (
                    self.events.clone(),
                    self.template.clone(),
                    self.alive.clone(),
                );
                tokio::spawn(async move {
                    let outcome = handle.await;
                    let done = done_from(seq, record, outcome, &template);
                    let _ = events.send(Event::Done(Box::new(done)));
                    drop(alive);
                });
                true
            }
            Err(refused) => {
                let record = refused.into_inner().into_payload();
                let _ = self.events.send(Event::Refused(seq, record));
                false
            }
        }
    }
}

/// Counts a job's end and, at --halt's limit, stops new jobs at once and
/// tells the main task.
pub(crate) fn check_halt(st: &State, kind: OutcomeKind) {
    let Some(halt) = st.halt else { return };
    let (failed, succeeded) = match kind {
        OutcomeKind::Failed | OutcomeKind::TimedOut => (1, 0),
        OutcomeKind::Succeeded => (0, 1),
        _ => return,
    };
    let failures = st.failures.fetch_add(failed, Ordering::SeqCst) + failed;
    let successes = st.successes.fetch_add(succeeded, Ordering::SeqCst) + succeeded;
    let counted = if halt.on_success { successes } else { failures };
    let read = st.read.load(Ordering::SeqCst);
    if halt.reached(counted, failures + successes, read) && !st.halted.swap(true, Ordering::SeqCst)
    {
        // The hook runs on the worker before it claims another job: from
        // here on nothing starts, and queued records come back unstarted.
        if let Some(stop_intake) = st.stop_intake.get() {
            stop_intake();
        }
        let _ = st.stop.send(Stop::Halt(halt.when));
    }
}

/// Why a record holding a NUL byte cannot run.
const NUL_RECORD: &str =
    "the record holds a NUL byte, which no command argument can carry (split on NUL with -0)";

/// One attempt of a job: record number `seq` (for `{#}`) with `values`.
pub(crate) async fn handle(
    values: Values,
    seq: u64,
    ctx: JobContext,
    st: Arc<State>,
) -> Result<Attempted, BoxError> {
    let slots = Slots {
        seq,
        slot: ctx.worker(),
    };
    let argv = st.template.argv(&values, slots);
    // As GNU parallel: scripts find their sequence number and job slot.
    let env = [
        ("PARALLEL_SEQ", slots.seq.to_string()),
        ("PARALLEL_JOBSLOT", slots.slot.to_string()),
    ];
    let start = SystemTime::now();
    // An argument is a C string: a NUL byte cannot be passed, so say so
    // instead of the OS's "nul byte found".
    if values.iter().any(|v| v.contains(&0)) {
        let ran = Ran::not_started(NUL_RECORD.into());
        let attempted = Attempted {
            argv,
            start,
            took: Duration::ZERO,
            ran,
        };
        return Err(permanent(CommandFailed(attempted)).into());
    }
    // --delay: starts at least the delay apart, in the order jobs get here.
    if let Some(delay) = st.delay {
        let at = {
            let mut next = lock(&st.next_start);
            let now = tokio::time::Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + delay);
            at
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = ctx.cancelled() => {
                let ran = Ran::not_started("stopped while it waited for --delay".into());
                let attempted = Attempted { argv, start, took: Duration::ZERO, ran };
                return Err(Box::new(CommandFailed(attempted)));
            }
        }
    }
    let (start, began) = (SystemTime::now(), Instant::now());
    let tag = match st.tag_lines {
        true => [shown(&values), b"\t".to_vec()].concat(),
        false => Vec::new(),
    };
    let ran = command::run(&argv, &env, &tag, &ctx, &st.launch).await;
    let success = ran.exit.success();
    let attempted = Attempted {
        argv,
        start,
        took: began.elapsed(),
        ran,
    };
    if success {
        Ok(attempted)
    } else {
        Err(Box::new(CommandFailed(attempted)))
    }
}

/// What the last attempt left, if it left anything: the value of a success,
/// or the [`CommandFailed`] inside a failure, a timeout or a cancellation.
fn attempted(outcome: Outcome<Values, Attempted>) -> Option<Attempted> {
    let error = match outcome {
        Outcome::Succeeded { value, .. } => return Some(value),
        Outcome::Failed { error, .. } => error,
        Outcome::TimedOut { error, .. } | Outcome::Cancelled { error, .. } => error?,
        _ => return None,
    };
    command_failed(error).ok().map(|f| f.0)
}

/// The `CommandFailed` inside an attempt's error (perhaps wrapped in
/// `Permanent`), or the error itself.
pub(crate) fn command_failed(e: BoxError) -> Result<CommandFailed, BoxError> {
    let e = match e.downcast::<Permanent>() {
        Ok(p) => p.into_inner(),
        Err(e) => e,
    };
    e.downcast::<CommandFailed>().map(|b| *b)
}

/// Fills a `Done` with what an attempt left.
pub(crate) fn fill_done(done: &mut Done, a: Attempted) {
    done.argv = a.argv;
    done.start = Some(a.start);
    done.duration = a.took;
    done.exit = Some(a.ran.exit);
    done.stdout = a.ran.stdout;
    let mut stderr = a.ran.stderr;
    done.stderr_tail = stderr.last_bytes(TAIL_BYTES);
    done.stderr = stderr;
}

/// Turns a job's outcome into the reporter's `Done`.
fn done_from(
    seq: u64,
    values: Values,
    outcome: Outcome<Values, Attempted>,
    template: &Template,
) -> Done {
    let (kind, attempts) = (outcome.kind(), outcome.attempts());
    let mut done = Done::new(seq, values, kind, attempts);
    match attempted(outcome) {
        Some(a) => fill_done(&mut done, a),
        // Nothing came back (abandoned, given up on): the command it ran.
        // (The job slot it ran in is not known here.)
        None if attempts > 0 => {
            let slots = Slots { seq, slot: 0 };
            done.argv = template.argv(&done.values, slots);
        }
        None => {}
    }
    done
}
