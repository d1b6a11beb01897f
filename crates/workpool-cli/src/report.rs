//! The reporter: one task that receives every job's end, prints its output as
//! a block (in input order with --keep-order), writes the job log, drives the
//! progress bar, and builds the summary. (--halt is decided earlier, in the
//! outcome hook, so that no job starts after the limit: see `run.rs`.)

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{Semaphore, mpsc};
use workpool::OutcomeKind;

use crate::capture::{Captured, LINE_BUDGET, Tagged};
use crate::cli::HaltWhen;
use crate::command::{self, Exit};
use crate::joblog::{Entry, JobLog};
use crate::results::Results;
use crate::sources::{Values, shown};

/// A job's end, from its handle's outcome.
#[derive(Debug)]
pub struct Done {
    pub seq: u64,
    /// The job's values, and as people read them (joined by spaces).
    pub values: Values,
    pub record: Vec<u8>,
    pub kind: OutcomeKind,
    pub attempts: u32,
    pub duration: Duration,
    /// Present once an attempt started.
    pub argv: Vec<OsString>,
    pub start: Option<SystemTime>,
    pub exit: Option<Exit>,
    pub stdout: Captured,
    pub stderr: Captured,
    /// The end of stderr, for the summary and the job log.
    pub stderr_tail: Vec<u8>,
}

impl Done {
    /// A job's end with nothing known beyond its kind and attempts (what an
    /// attempt left is filled in by the caller, when there is any).
    pub fn new(seq: u64, values: Values, kind: OutcomeKind, attempts: u32) -> Self {
        Done {
            seq,
            record: shown(&values),
            values,
            kind,
            attempts,
            duration: Duration::ZERO,
            argv: Vec::new(),
            start: None,
            exit: None,
            stdout: Captured::default(),
            stderr: Captured::default(),
            stderr_tail: Vec::new(),
        }
    }
}

/// What the reader and the handle tasks tell the reporter.
#[derive(Debug)]
pub enum Event {
    /// A record was handed to the pool (sent before the submit).
    Submitted(u64),
    /// A record was read but the pool refused it (shutting down): not run.
    Refused(u64, Values),
    /// A record was skipped because an earlier run did it (the job log or
    /// the job store says so); `failed`: it did not succeed there.
    Skipped { failed: bool },
    /// A job ended.
    Done(Box<Done>),
    /// --line-buffer: whole lines a running job printed, tagged if asked.
    Lines { stderr: bool, bytes: Vec<u8> },
    /// The reader stopped (`complete`: at the end of the input): no more
    /// `Submitted` will come.
    InputDone { complete: bool },
    /// Everything has been sent; build the summary.
    Finish,
}

/// Why the run should stop early; sent to the main task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    Halt(HaltWhen),
    /// The jobs' output or the job log could not be written (stdout closed,
    /// as by `| head`, or a full disk): finish what runs, start nothing.
    CannotReport,
    /// Every submitted job ended and the input is exhausted.
    AllDone,
    /// Reading the input failed, or it no longer matches the job log.
    InputFailed(String),
}

pub struct Reporter {
    pub keep_order: bool,
    pub joblog: Option<JobLog>,
    pub bar: Option<ProgressBar>,
    /// One permit per job whose output is not yet printed: the reader takes
    /// one before it submits, the reporter gives it back once printed. So the
    /// outputs held at once are bounded whatever the reader of stdout does.
    pub window: std::sync::Arc<Semaphore>,
    pub timeout: Option<Duration>,
    pub stop: mpsc::UnboundedSender<Stop>,
    /// --tag: each line of output starts with the record and a tab.
    pub tag: bool,
    /// --results: output stored in files instead of printed.
    pub results: Option<Results>,
    /// --line-buffer: the bytes of `Lines` in flight, given back once written.
    pub line_budget: std::sync::Arc<Semaphore>,
}

/// What the run did, for the summary and the exit status.
#[derive(Debug, Default)]
pub struct Summary {
    pub counts: HashMap<OutcomeKind, u64>,
    pub skipped: u64,
    /// Of the skipped records, those that did not succeed in their run.
    pub skipped_failed: u64,
    /// (record, why) for the first failures.
    /// (seq, (record, why)) for the first failures in record order.
    pub first_failures: Vec<(u64, (String, String))>,
    /// (seq, record) for the first records not run, in record order.
    pub not_run: Vec<(u64, String)>,
    pub not_run_total: u64,
    pub halted: bool,
    /// `--halt ...,success=` stopped the run (not a failure).
    pub halted_on_success: bool,
    pub joblog_error: Option<String>,
    /// Why the jobs' output could not all be delivered, if it could not.
    pub output_error: Option<OutputError>,
    /// The run stopped before the end of its input: the rest was not read.
    pub input_unread: bool,
}

/// Why the jobs' output could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputError {
    /// Our stdout was closed by its reader (a broken pipe).
    Closed,
    /// Writing failed otherwise (a full disk, an I/O error).
    Failed(String),
}

/// Writes to our stderr, never panicking: with stderr closed or full there
/// is nowhere left to say anything, and the exit status still tells.
pub fn say(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

const SHOWN: usize = 5;

impl Summary {
    pub fn count(&self, kind: OutcomeKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// Whether any job ended without success (not counting records not run).
    pub fn any_failed(&self) -> bool {
        OutcomeKind::ALL
            .iter()
            .filter(|k| !matches!(k, OutcomeKind::Succeeded | OutcomeKind::Unstarted))
            .any(|k| self.count(*k) > 0)
    }

    /// The summary text for stderr.
    pub fn render(&self, elapsed: Duration) -> String {
        let ran: u64 = OutcomeKind::ALL
            .iter()
            .filter(|k| **k != OutcomeKind::Unstarted)
            .map(|k| self.count(*k))
            .sum();
        let mut parts = vec![format!("{} succeeded", self.count(OutcomeKind::Succeeded))];
        for (kind, word) in [
            (OutcomeKind::Failed, "failed"),
            (OutcomeKind::TimedOut, "timed out"),
            (OutcomeKind::Cancelled, "stopped"),
            (OutcomeKind::Abandoned, "abandoned"),
            (OutcomeKind::Panicked, "crashed"),
        ] {
            if self.count(kind) > 0 {
                parts.push(format!("{} {word}", self.count(kind)));
            }
        }
        if self.not_run_total > 0 {
            parts.push(format!("{} not run", self.not_run_total));
        }
        match (self.skipped, self.skipped_failed) {
            (0, _) => {}
            (n, 0) => parts.push(format!("{n} skipped (done in an earlier run)")),
            (n, f) => parts.push(format!(
                "{n} skipped (done in an earlier run, {f} of them without success)"
            )),
        }
        let mut out = format!(
            "workpool: {ran} job{} in {:.2?}: {}\n",
            if ran == 1 { "" } else { "s" },
            elapsed,
            parts.join(", ")
        );
        for (_, (record, why)) in &self.first_failures {
            out.push_str(&format!("  {record}: {why}\n"));
        }
        let failures = self.count(OutcomeKind::Failed) + self.count(OutcomeKind::TimedOut);
        if failures > self.first_failures.len() as u64 {
            out.push_str(&format!(
                "  ... and {} more failures\n",
                failures - self.first_failures.len() as u64
            ));
        }
        if self.not_run_total > 0 {
            let more = self.not_run_total - self.not_run.len() as u64;
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let shown: Vec<_> = self.not_run.iter().map(|(_, r)| r.as_str()).collect();
            out.push_str(&format!("  not run: {}{more}\n", shown.join(", ")));
        }
        if self.halted {
            out.push_str("  halted: --halt limit reached\n");
        }
        if self.halted_on_success {
            out.push_str("  halted: --halt success limit reached\n");
        }
        if self.input_unread {
            out.push_str("  the rest of the input was not read, so not run\n");
        }
        if let Some(e) = &self.joblog_error {
            out.push_str(&format!("  job log: {e}\n"));
        }
        match &self.output_error {
            Some(OutputError::Closed) => {
                out.push_str("  output: stdout was closed; nothing more was started\n");
            }
            Some(OutputError::Failed(e)) => {
                out.push_str(&format!(
                    "  output: writing the jobs' output failed ({e}); nothing more was started\n"
                ));
            }
            None => {}
        }
        out
    }
}

/// Keeps the `n` entries of lowest sequence number, in order: outcomes
/// arrive in any order, the summary lists them in record order.
fn keep_first<T>(list: &mut Vec<(u64, T)>, entry: (u64, T), n: usize) {
    let at = list.partition_point(|e| e.0 < entry.0);
    if at < n {
        list.insert(at, entry);
        list.truncate(n);
    }
}

/// A record as the summary shows it: quoted, and cut after
/// [`SHOWN_RECORD`] characters (a record may be megabytes long).
fn show(record: &[u8]) -> String {
    let text = String::from_utf8_lossy(record);
    match text.char_indices().nth(SHOWN_RECORD) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], record.len()),
        None => format!("{text:?}"),
    }
}

/// How many characters of a record the summary shows.
const SHOWN_RECORD: usize = 60;

impl Reporter {
    /// Starts the reporter on a thread of its own; its summary comes through
    /// the returned receiver (an error if the thread could not start or
    /// panicked).
    pub fn spawn(
        self,
        events: mpsc::UnboundedReceiver<Event>,
    ) -> io::Result<tokio::sync::oneshot::Receiver<Summary>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("workpool-reporter".into())
            .spawn(move || {
                let _ = tx.send(self.run(events));
            })?;
        Ok(rx)
    }

    /// Runs on a thread of its own (`spawn`): its writes to stdout and
    /// stderr block when their reader is slow, and must not hold a runtime
    /// thread while they do.
    pub fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>) -> Summary {
        let mut summary = Summary::default();
        let mut order: VecDeque<u64> = VecDeque::new();
        let mut waiting: HashMap<u64, Box<Done>> = HashMap::new();
        let (mut submitted, mut ended, mut failures) = (0u64, 0u64, 0u64);
        let mut input_done = false;

        while let Some(event) = events.blocking_recv() {
            match event {
                Event::Submitted(seq) => {
                    submitted += 1;
                    if self.keep_order {
                        order.push_back(seq);
                    }
                }
                Event::Refused(seq, values) => {
                    self.not_run(&mut summary, seq, values);
                    if self.keep_order {
                        order.retain(|s| *s != seq);
                    }
                    // It was counted as submitted just before the refusal.
                    submitted = submitted.saturating_sub(1);
                }
                Event::Skipped { failed } => {
                    summary.skipped += 1;
                    summary.skipped_failed += u64::from(failed);
                }
                Event::Done(done) => {
                    ended += 1;
                    *summary.counts.entry(done.kind).or_default() += 1;
                    if matches!(done.kind, OutcomeKind::Failed | OutcomeKind::TimedOut) {
                        failures += 1;
                        let label = match done.kind {
                            OutcomeKind::TimedOut => "timed out",
                            _ => "failed",
                        };
                        let record = format!("{label}: record {} {}", done.seq, show(&done.record));
                        keep_first(
                            &mut summary.first_failures,
                            (done.seq, (record, self.why(&done))),
                            SHOWN,
                        );
                    }
                    if done.kind == OutcomeKind::Unstarted {
                        summary.not_run_total += 1;
                        keep_first(
                            &mut summary.not_run,
                            (done.seq, show(&done.record)),
                            SHOWN * 2,
                        );
                    }
                    self.log(&mut summary, &done);
                    if let Some(bar) = &self.bar {
                        bar.inc(1);
                        bar.set_message(format!("{failures} failed"));
                    }
                    if self.keep_order {
                        waiting.insert(done.seq, done);
                        while let Some(mut next) = order.front().and_then(|s| waiting.remove(s)) {
                            order.pop_front();
                            self.print(&mut summary, &mut next);
                            self.window.add_permits(1);
                        }
                    } else {
                        let mut done = done;
                        self.print(&mut summary, &mut done);
                        self.window.add_permits(1);
                    }
                }
                Event::Lines { stderr, bytes } => {
                    self.write_lines(&mut summary, stderr, &bytes);
                    self.line_budget
                        .add_permits(bytes.len().clamp(1, LINE_BUDGET));
                }
                Event::InputDone { complete } => {
                    input_done = true;
                    summary.input_unread = !complete;
                }
                Event::Finish => break,
            }
            if input_done && ended >= submitted {
                let _ = self.stop.send(Stop::AllDone);
            }
        }
        // Anything still waiting for its turn (its predecessor never ended) is printed now.
        let mut rest: Vec<_> = waiting.into_values().collect();
        rest.sort_by_key(|d| d.seq);
        for mut d in rest {
            self.print(&mut summary, &mut d);
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        summary
    }

    fn not_run(&mut self, summary: &mut Summary, seq: u64, values: Values) {
        let done = Done::new(seq, values, OutcomeKind::Unstarted, 0);
        summary.not_run_total += 1;
        keep_first(&mut summary.not_run, (seq, show(&done.record)), SHOWN * 2);
        self.log(summary, &done);
    }

    fn why(&self, done: &Done) -> String {
        let exit = done.exit.as_ref().map(Exit::describe);
        let mut why = match (done.kind, self.timeout) {
            (OutcomeKind::TimedOut, Some(t)) => format!("timed out after {t:?}"),
            _ => exit.unwrap_or_else(|| done.kind.as_str().to_string()),
        };
        if done.attempts > 1 {
            why.push_str(&format!(" (after {} attempts)", done.attempts));
        }
        let tail = command::tail(&done.stderr_tail, 1, 200);
        if !tail.is_empty() {
            why.push_str(": ");
            why.push_str(&tail);
        }
        why
    }

    fn log(&mut self, summary: &mut Summary, done: &Done) {
        let Some(log) = self.joblog.as_mut() else {
            return;
        };
        let (exit_code, signal) = match &done.exit {
            Some(Exit::Code(c)) => (Some(*c), None),
            Some(Exit::Signal(s)) => (None, Some(*s)),
            _ => (None, None),
        };
        let error = match (&done.exit, done.kind) {
            (_, OutcomeKind::Succeeded) => None,
            (_, OutcomeKind::TimedOut) => Some(match self.timeout {
                Some(t) => format!("timed out after {t:?}"),
                None => "timed out".into(),
            }),
            (Some(e), _) => Some(e.describe()),
            (None, kind) => Some(kind.as_str().replace('_', " ")),
        };
        let mut entry = Entry {
            seq: done.seq,
            record: None,
            record_hex: None,
            command: done
                .argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            exit_code,
            signal,
            outcome: done.kind.as_str().to_string(),
            attempts: done.attempts,
            start: done
                .start
                .and_then(|s| s.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
            duration: done.duration.as_secs_f64(),
            error,
            stderr_tail: command::tail(&done.stderr_tail, 5, 2000),
        };
        entry.set_record(&done.record);
        if let Err(e) = log.write(&entry)
            && summary.joblog_error.is_none()
        {
            let msg = format!("writing {} failed: {e}", log.path().display());
            say(&format!("workpool: {msg}; nothing more is started\n"));
            summary.joblog_error = Some(msg);
            let _ = self.stop.send(Stop::CannotReport);
        }
    }

    /// Prints a job's output as two whole blocks. The first failure to write
    /// is kept in the summary and stops the run's intake; after it, output is
    /// no longer written.
    fn print(&self, summary: &mut Summary, done: &mut Done) {
        if summary.output_error.is_some() {
            return;
        }
        if let Some(results) = &self.results {
            if done.exit.is_some() {
                let stored =
                    results.store(done.seq, &done.values, &mut done.stdout, &mut done.stderr);
                self.check_written(
                    summary,
                    stored.map_err(|e| io::Error::other(format!("--results: {e}"))),
                    None,
                );
            }
            return;
        }
        if done.stdout.is_empty() && done.stderr.is_empty() {
            return;
        }
        // --tag: the record and a tab before each line.
        let prefix = self.tag.then(|| [&done.record[..], b"\t"].concat());
        let mut write = || -> io::Result<()> {
            if !done.stdout.is_empty() {
                let mut out = io::stdout().lock();
                match &prefix {
                    Some(p) => done.stdout.write_to(&mut Tagged::new(&mut out, p))?,
                    None => done.stdout.write_to(&mut out)?,
                }
                out.flush()?;
            }
            if !done.stderr.is_empty() {
                let mut err = io::stderr().lock();
                match &prefix {
                    Some(p) => done.stderr.write_to(&mut Tagged::new(&mut err, p))?,
                    None => done.stderr.write_to(&mut err)?,
                }
                err.flush()?;
            }
            Ok(())
        };
        let written = match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        };
        let lost = done
            .stdout
            .lost()
            .or(done.stderr.lost())
            .map(str::to_string);
        self.check_written(summary, written, lost);
    }

    /// --line-buffer: writes lines a running job printed, at once.
    fn write_lines(&self, summary: &mut Summary, stderr: bool, bytes: &[u8]) {
        if summary.output_error.is_some() {
            return;
        }
        let write = || -> io::Result<()> {
            if stderr {
                let mut err = io::stderr().lock();
                err.write_all(bytes)?;
                err.flush()
            } else {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
        };
        let written = match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        };
        self.check_written(summary, written, None);
    }

    /// The first failure to deliver output is kept in the summary and stops
    /// the run's intake.
    fn check_written(&self, summary: &mut Summary, written: io::Result<()>, lost: Option<String>) {
        let failed = match written {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Some(OutputError::Closed),
            Err(e) => Some(OutputError::Failed(e.to_string())),
            Ok(()) => lost.map(OutputError::Failed),
        };
        if failed.is_some() {
            summary.output_error = failed;
            let _ = self.stop.send(Stop::CannotReport);
        }
    }
}

/// A progress bar on stderr, when asked for and stderr is a terminal: jobs
/// done, failed, running, and the rate (no total: the input is read once).
pub fn progress_bar(wanted: bool) -> Option<ProgressBar> {
    use std::io::IsTerminal;
    if !wanted || !io::stderr().is_terminal() {
        return None;
    }
    // No total: the input streams and is read once.
    let bar = ProgressBar::no_length();
    let template = "{spinner} {pos} done, {msg}, {prefix} running, {per_sec}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_message("0 failed");
    bar.set_prefix("0");
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}
