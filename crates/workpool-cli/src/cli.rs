//! Flags, each defined once, with the parsers for their values.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

const RUN_AFTER_HELP: &str = "\
Records:
  Each input record is one job: a line, or with -0 a NUL-terminated record.
  Empty records are skipped. Records are bytes: invalid UTF-8 passes through.
  `{}` anywhere in COMMAND or its arguments is replaced by the record, and as
  in GNU parallel `{.}` by it without its extension, `{/}` its basename,
  `{//}` its dirname, `{/.}` its basename without extension, `{#}` the job's
  sequence number and `{%}` its job slot; with none of these, the record is
  added as the last argument. Each job sees PARALLEL_SEQ and
  PARALLEL_JOBSLOT in its environment. No shell is involved (unless
  you run one), so a record can never inject a command.

Sources:
  `COMMAND ::: a b c` runs COMMAND once per value (stdin is then not read);
  `:::: FILE` reads records from FILE (`-` is stdin). With several sources
  every combination runs, the first source's values changing slowest
  (`--link` pairs them instead); `{1}` `{2}`… stand for each source's value
  (or, with --colsep, each column; with -n, each record), and `{}` for all
  of them, one argument each.

Output:
  Each job's stdout and stderr are printed as whole blocks when it ends, never
  interleaved line by line with other jobs; --keep-order prints them in input
  order. --line-buffer prints whole lines as they come, --ungroup lets jobs
  write directly, --results stores each job's output in files instead. A
  summary goes to stderr at the end.

Job log:
  --joblog writes one JSON line per finished job (seq, record, command, exit
  code or signal, outcome, attempts, start, duration, stderr tail), flushed
  line by line. --resume skips records the log shows finished (succeeded,
  failed or timed out); --resume-failed skips only those that succeeded.

Signals:
  The first SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 or SIGALRM
  stops reading input and lets running jobs finish (up to --shutdown-timeout,
  then SIGTERM and after --kill-after SIGKILL to their process groups), and
  says so on stderr; the records that did not run are named in the summary
  and logged as unstarted. A second signal kills running jobs at once. The
  exit status is 128 + the signal's number. Signals are obeyed also while
  stdout is blocked by a reader that does not read (what is left of the
  output is then lost) and during --dry-run.

Exit status:
  0    every record was read and every job succeeded, its output delivered
  1    some job failed, timed out or was stopped, --halt stopped the run, or
       the jobs' output or the job log could not be written (nothing more
       was started)
  2    usage or input error (bad flag, unreadable --input, unwritable or
       corrupt --joblog); nothing was run
  130  interrupted by SIGINT (128 + the number of any other signal above)
  141  stdout was closed (as by `| head`); nothing more was started (GNU
       parallel's status too)
  143  interrupted by SIGTERM
  70   workpool itself cannot go on (say, no thread can be started: the
       user's process limit); every job's process is killed first";

/// workpool: run jobs on a bounded pool of workers.
#[derive(Debug, Parser)]
#[command(name = "workpool", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process: the size of `run`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run COMMAND once per input record, N at a time (like `xargs -P` or GNU parallel).
    #[command(after_long_help = RUN_AFTER_HELP, after_help = "See --help for records, output, job log, signals and exit status.")]
    Run(RunArgs),
    /// Put records in a job store (a SQLite file or PostgreSQL) for `workpool worker` to run
    Enqueue(EnqueueArgs),
    /// Run the jobs of a job store, N at a time, until Ctrl-C (or until none is left)
    #[command(after_long_help = WORKER_AFTER_HELP)]
    Worker(WorkerArgs),
    /// A job store's jobs by queue and state, the oldest waiting, recent failures
    Status(StatusArgs),
    /// List a job store's jobs (never their records: they may hold secrets)
    Jobs(JobsArgs),
    /// Make failed or cancelled jobs available again, by ID or by state
    Retry(SelectArgs),
    /// Cancel jobs, by ID or by state: waiting ones at once, running ones through their worker
    Cancel(SelectArgs),
    /// Create or upgrade a PostgreSQL job store's tables (also done when a store is opened)
    Migrate(DbFlags),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page of `workpool run` (roff), e.g. `workpool man > workpool-run.1`
    Man,
}

/// How jobs run: shared by `workpool run` and `workpool worker`.
#[derive(Debug, Args)]
pub struct JobFlags {
    /// Commands that run at once [default: the number of CPUs]
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = parse_jobs)]
    pub jobs: Option<usize>,

    /// Per-job time limit, more than 0 (seconds, or 500ms, 30s, 2m, 1h); at the
    /// deadline the job's process group gets SIGTERM, then SIGKILL after --kill-after
    #[arg(long, value_name = "DUR", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// Wait between SIGTERM and SIGKILL when stopping a job
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub kill_after: Duration,

    /// Run a job again up to N times after a non-zero exit or a timeout
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,

    /// Backoff between attempts: before retry n, a random wait between 0 and
    /// DUR × 2^(n-1), at most 64 × DUR ("full jitter")
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "1s")]
    pub retry_delay: Duration,

    /// After an interrupt, how long running jobs may take to finish
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "30s")]
    pub shutdown_timeout: Duration,
}

/// `workpool run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub job: JobFlags,

    /// Read records from FILE instead of standard input (`-`: standard input)
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Records end with NUL instead of newline (for `find -print0`)
    #[arg(short = '0', long = "null")]
    pub null: bool,

    /// Write one JSON line per finished job to FILE (replaced unless resuming)
    #[arg(long, value_name = "FILE")]
    pub joblog: Option<PathBuf>,

    /// Skip records the --joblog shows finished (succeeded, failed or timed out)
    #[arg(long, requires = "joblog")]
    pub resume: bool,

    /// Like --resume, but run the failed and timed-out records again
    #[arg(long, requires = "joblog", conflicts_with = "resume")]
    pub resume_failed: bool,

    /// Stop early: `WHEN,fail=N` after N failed jobs, `WHEN,fail=P%` once P % of the
    /// records read so far failed (after at least 3 ended), `WHEN,success=N` or
    /// `success=P%` likewise for successes. WHEN is `now` (kill running jobs) or
    /// `soon` (let them finish); no new job starts once the limit is reached
    #[arg(long, value_name = "WHEN,fail|success=N[%]", value_parser = parse_halt)]
    pub halt: Option<Halt>,

    /// Print each job's output in input order
    #[arg(short = 'k', long)]
    pub keep_order: bool,

    /// Start each line of a job's output with its record and a tab (as GNU
    /// parallel's --tag)
    #[arg(long)]
    pub tag: bool,

    /// Start jobs at least DUR apart (as GNU parallel's --delay)
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub delay: Option<Duration>,

    /// Split each record into columns at SEP (plain text; `\t` is a tab) for
    /// `{1}` `{2}`…; with several columns `{}` stands for all of them
    #[arg(short = 'C', long, value_name = "SEP", value_parser = crate::sources::parse_colsep)]
    pub colsep: Option<crate::sources::ColumnSeparator>,

    /// Pair the sources (`::: a b ::: 1 2` runs `a 1` and `b 2`) instead of
    /// running every combination; shorter sources start over
    #[arg(long)]
    pub link: bool,

    /// Put up to N records in each command (`{}` stands for all of them,
    /// `{1}` `{2}`… for each)
    #[arg(short = 'n', long = "max-args", value_name = "N", value_parser = parse_jobs)]
    pub max_args: Option<usize>,

    /// Put several records in each command: up to -n, or as many as fit in
    /// 128 KiB (an input that fits once is spread over the job slots); a
    /// word holding `{}` takes them all, spliced in
    #[arg(short = 'm', conflicts_with = "context_replace")]
    pub multiple: bool,

    /// As -m, but a word holding `{}` is repeated once per record
    /// (`pic{}.jpg` becomes `pic1.jpg pic2.jpg`)
    #[arg(short = 'X')]
    pub context_replace: bool,

    /// Print each job's output line by line as it comes, whole lines only,
    /// never a line of one job inside another's (not with -k)
    #[arg(long, conflicts_with = "keep_order")]
    pub line_buffer: bool,

    /// Let jobs write straight to stdout and stderr: fastest, but output of
    /// jobs may mix within a line, and write errors are the jobs' own
    #[arg(short = 'u', long, conflicts_with_all = ["keep_order", "line_buffer", "tag"])]
    pub ungroup: bool,

    /// Store each job's stdout, stderr and sequence number in files under
    /// DIR (DIR/1/VALUE/stdout…, as GNU parallel) instead of printing them;
    /// with a replacement string, DIR names each job's files (ending in `/`:
    /// a directory)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["line_buffer", "ungroup"])]
    pub results: Option<OsString>,

    /// Show a progress bar on stderr (only when stderr is a terminal)
    #[arg(long)]
    pub bar: bool,

    /// Print the commands that would run, one per line, and run nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Keep the run in a job store (a SQLite file, or a postgres:// URL):
    /// each record is stored as it is read, and if the run is killed, the
    /// same command line again continues it (what finished is not run
    /// again; what was running runs again). Not with -k, --resume or
    /// --dry-run
    #[arg(long, value_name = "FILE|URL", value_parser = crate::db::parse_target, conflicts_with_all = ["keep_order", "resume", "resume_failed", "dry_run"])]
    pub db: Option<crate::db::Target>,

    /// The PostgreSQL schema of the job store's tables
    #[arg(long, value_name = "NAME", default_value = crate::db::DEFAULT_SCHEMA, requires = "db")]
    pub schema: String,

    /// The command and its arguments (`--` before it is optional)
    #[arg(value_name = "COMMAND", required = true, num_args = 1.., trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

const WORKER_AFTER_HELP: &str = "\
Each job's record (as `workpool enqueue` stored it) fills COMMAND's
replacement strings as in `workpool run`. Several workers, in one process or
many, may share a store: each job runs once, except one whose worker died
while it ran, which runs again. The first Ctrl-C (or SIGTERM) stops claiming,
lets running jobs finish (up to --shutdown-timeout) and puts the rest back in
the store; a second kills them. Exit status: 0, or 1 if a job failed, or 128 +
the signal's number.";

/// Where a job store is, for every store subcommand.
#[derive(Debug, Args)]
pub struct DbFlags {
    /// The job store: a SQLite file (created if missing, readable by its
    /// owner only), or a PostgreSQL database as a postgres:// URL (keep its
    /// password in PGPASSWORD or ~/.pgpass rather than in the URL)
    #[arg(long, value_name = "FILE|URL", value_parser = crate::db::parse_target)]
    pub db: crate::db::Target,

    /// The PostgreSQL schema of the job store's tables
    #[arg(long, value_name = "NAME", default_value = crate::db::DEFAULT_SCHEMA)]
    pub schema: String,
}

/// The job store and queue a store subcommand works on.
#[derive(Debug, Args)]
pub struct StoreFlags {
    #[command(flatten)]
    pub db: DbFlags,

    /// The queue within the store
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub queue: String,
}

/// `workpool enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub store: StoreFlags,

    /// Read records from FILE instead of standard input (`-`: standard input)
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Records end with NUL instead of newline
    #[arg(short = '0', long = "null")]
    pub null: bool,

    /// Lower runs sooner
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub priority: i32,

    /// Not before TIME: `2026-12-24T18:00:00Z` (UTC) or `@SECONDS` since the epoch
    #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with = "delay")]
    pub at: Option<std::time::SystemTime>,

    /// Not before DUR from now (seconds, or 500ms, 30s, 2m, 1h)
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub delay: Option<Duration>,
}

/// `workpool worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub store: StoreFlags,

    #[command(flatten)]
    pub job: JobFlags,

    /// Stop once no job is ready, instead of waiting for more
    #[arg(long)]
    pub exit_when_empty: bool,

    /// How long this worker's claims stay leased without its heartbeat: if
    /// it dies (or loses the store), its running jobs run again this long
    /// after (on one machine, SQLite sees a dead process at once)
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "30s")]
    pub lease: Duration,

    /// Start each line of a job's output with its record and a tab
    #[arg(long)]
    pub tag: bool,

    /// The command and its arguments (`--` before it is optional)
    #[arg(value_name = "COMMAND", required = true, num_args = 1.., trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

/// `workpool status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub db: DbFlags,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// `workpool jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub db: DbFlags,

    /// Only jobs in this state (available, scheduled, running, retryable,
    /// completed, failed, cancelled)
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    pub state: Option<String>,

    /// At most N jobs, newest first
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,

    /// Print JSON lines instead of a table
    #[arg(long)]
    pub json: bool,
}

/// The jobs `workpool retry` or `workpool cancel` acts on.
#[derive(Debug, Args)]
pub struct SelectArgs {
    #[command(flatten)]
    pub db: DbFlags,

    /// Every job in this state instead of the IDs given
    #[arg(long, value_name = "STATE", value_parser = parse_state, conflicts_with = "ids", required_unless_present = "ids")]
    pub state: Option<String>,

    /// Job IDs (as `workpool jobs` shows them)
    #[arg(value_name = "ID")]
    pub ids: Vec<u64>,
}

/// The states a job can be in.
pub const STATES: [&str; 7] = [
    "available",
    "scheduled",
    "running",
    "retryable",
    "completed",
    "failed",
    "cancelled",
];

fn parse_state(s: &str) -> Result<String, String> {
    if STATES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!("unknown state `{s}`: one of {}", STATES.join(", ")))
    }
}

/// `@SECONDS` since the Unix epoch, or `YYYY-MM-DDTHH:MM:SSZ` (UTC; the `Z`
/// may be left out; a space may stand for the `T`).
pub fn parse_time(s: &str) -> Result<std::time::SystemTime, String> {
    let bad = || format!("invalid time `{s}`: expected 2026-12-24T18:00:00Z (UTC) or @SECONDS");
    let secs: i64 = if let Some(n) = s.strip_prefix('@') {
        n.parse().map_err(|_| bad())?
    } else {
        let t = s.trim_end_matches('Z').replace(' ', "T");
        let (date, time) = t.split_once('T').ok_or_else(bad)?;
        let num = |part: &str, lo: i64, hi: i64| -> Result<i64, String> {
            let v: i64 = part.parse().map_err(|_| bad())?;
            if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(bad())
            }
        };
        let d: Vec<&str> = date.split('-').collect();
        let h: Vec<&str> = time.split(':').collect();
        if d.len() != 3 || h.len() != 3 {
            return Err(bad());
        }
        let (y, m, day) = (num(d[0], 1970, 9999)?, num(d[1], 1, 12)?, num(d[2], 1, 31)?);
        let (hh, mm, ss) = (num(h[0], 0, 23)?, num(h[1], 0, 59)?, num(h[2], 0, 60)?);
        days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss
    };
    let secs = u64::try_from(secs).map_err(|_| bad())?;
    Ok(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// When `--halt` acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaltWhen {
    /// Kill running jobs.
    Now,
    /// Let running jobs finish.
    Soon,
}

/// `--halt WHEN,fail=N`, `fail=P%`, `success=N` or `success=P%`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Halt {
    pub when: HaltWhen,
    /// Halt on successes rather than failures.
    pub on_success: bool,
    pub limit: Limit,
}

/// How many jobs reach a `--halt` limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// This many jobs.
    Count(u64),
    /// This percentage (1 to 100) of the records read so far, once at least
    /// three jobs ended.
    Percent(u64),
}

impl Halt {
    /// Whether `counted` jobs (failed, or succeeded with `on_success`) out of
    /// `ended` jobs and `read` records reach the limit.
    pub fn reached(&self, counted: u64, ended: u64, read: u64) -> bool {
        match self.limit {
            Limit::Count(n) => counted >= n,
            Limit::Percent(p) => ended >= 3 && counted * 100 >= p * read.max(1),
        }
    }
}

fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// A `--timeout`: a duration more than zero (a zero timeout would stop every
/// job as it starts).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err(format!(
            "invalid --timeout `{s}`: must be more than 0 (leave it out for no limit)"
        )),
        d => Ok(d),
    }
}

/// `500ms`, `30s`, `1.5s`, `2m`, `1h`, or a plain number of seconds (as GNU
/// parallel reads it).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || {
        format!(
            "invalid duration `{s}`: expected seconds (like 5 or 1.5) or a number with a unit (500ms, 30s, 2m, 1h)"
        )
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

/// `now|soon,fail|success=N` or `...=P%`.
pub fn parse_halt(s: &str) -> Result<Halt, String> {
    let bad = || {
        format!(
            "invalid --halt `{s}`: expected now or soon, then fail= or success= with N at least 1, or P% from 1% to 100%"
        )
    };
    let (when, rest) = s.split_once(',').ok_or_else(bad)?;
    let when = match when {
        "now" => HaltWhen::Now,
        "soon" => HaltWhen::Soon,
        _ => return Err(bad()),
    };
    let (on_success, n) = match (rest.strip_prefix("fail="), rest.strip_prefix("success=")) {
        (Some(n), _) => (false, n),
        (_, Some(n)) => (true, n),
        _ => return Err(bad()),
    };
    let limit = match n.strip_suffix('%') {
        Some(p) => match p.parse::<u64>() {
            Ok(p) if (1..=100).contains(&p) => Limit::Percent(p),
            _ => return Err(bad()),
        },
        None => match n.parse::<u64>() {
            Ok(n) if n > 0 => Limit::Count(n),
            _ => return Err(bad()),
        },
    };
    Ok(Halt {
        when,
        on_success,
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "s", "abc", "5x", "-1s", "1..2s", "1e999s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("invalid duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_timeout_must_be_more_than_zero() {
        assert_eq!(parse_timeout("5"), Ok(Duration::from_secs(5)));
        for zero in ["0", "0s", "0ms", "0.0"] {
            let err = parse_timeout(zero).unwrap_err();
            assert!(err.contains("more than 0"), "{zero}: {err}");
        }
    }

    #[test]
    fn halt() {
        let halt = |when, on_success, limit| {
            Ok(Halt {
                when,
                on_success,
                limit,
            })
        };
        assert_eq!(
            parse_halt("now,fail=1"),
            halt(HaltWhen::Now, false, Limit::Count(1))
        );
        assert_eq!(
            parse_halt("soon,fail=3"),
            halt(HaltWhen::Soon, false, Limit::Count(3))
        );
        assert_eq!(
            parse_halt("now,success=2"),
            halt(HaltWhen::Now, true, Limit::Count(2))
        );
        assert_eq!(
            parse_halt("soon,fail=10%"),
            halt(HaltWhen::Soon, false, Limit::Percent(10))
        );
        for bad in [
            "now",
            "later,fail=1",
            "now,fail=0",
            "now,fail=x",
            "now,done=1",
            "now,fail=0%",
            "now,fail=101%",
        ] {
            assert!(parse_halt(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn jobs() {
        assert_eq!(parse_jobs("4"), Ok(4));
        assert!(parse_jobs("0").is_err());
        assert!(parse_jobs("four").is_err());
    }

    #[test]
    fn the_command_needs_no_double_dash_and_keeps_its_flags() {
        let cli = Cli::try_parse_from(["workpool", "run", "-j", "2", "echo", "-n", "{}"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("parsed as run")
        };
        assert_eq!(args.job.jobs, Some(2));
        assert_eq!(args.command, ["echo", "-n", "{}"]);
        let cli = Cli::try_parse_from(["workpool", "run", "--", "ls", "-l"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("parsed as run")
        };
        assert_eq!(args.command, ["ls", "-l"]);
    }

    #[test]
    fn resume_needs_a_joblog() {
        assert!(Cli::try_parse_from(["workpool", "run", "--resume", "true"]).is_err());
    }

    #[test]
    fn times_in_utc_or_epoch_seconds() {
        let secs = |s: &str| {
            parse_time(s)
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!(secs("1970-01-01T00:00:00Z"), 0);
        // `date -u -d 2000-03-01 +%s`, across a leap day of a century year.
        assert_eq!(secs("2000-03-01T00:00:00Z"), 951_868_800);
        assert_eq!(secs("2026-12-24 18:30:05"), 1_798_137_005);
        assert_eq!(secs("@1700000000"), 1_700_000_000);
        for bad in ["2026-13-01T00:00:00Z", "yesterday", "2026-01-01", "@-5"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
