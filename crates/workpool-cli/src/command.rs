//! Building a job's argv from the template, running it in a process group of
//! its own, and stopping that whole group.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;
use workpool::JobContext;

use crate::capture::{Captured, LineSink};
use crate::contain;

/// A command line for people: each argument shell-quoted when it needs it.
pub fn display(argv: &[OsString]) -> String {
    argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// It could not be started; the text says why.
    NotStarted(String),
}

impl Exit {
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }

    pub fn describe(&self) -> String {
        match self {
            Exit::Code(c) => format!("exit status {c}"),
            Exit::Signal(s) => {
                let name = Signal::try_from(*s)
                    .map_or_else(|_| format!("signal {s}"), |sig| sig.as_str().to_string());
                format!("killed by {name}")
            }
            Exit::NotStarted(why) => why.clone(),
        }
    }
}

/// What one run of a command left behind.
#[derive(Debug)]
pub struct Ran {
    pub exit: Exit,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl Ran {
    /// A command that did not start, and why.
    pub fn not_started(why: String) -> Self {
        Ran {
            exit: Exit::NotStarted(why),
            stdout: Captured::default(),
            stderr: Captured::default(),
        }
    }
}

/// Locks, ignoring poison: no critical section here leaves its data half-written.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Signals a whole process group. An error (the group is gone) is fine.
fn signal_group(pgid: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// Kills the group if it is dropped before the command was waited for: when
/// the pool gives up on a job and drops its future, nothing stays behind.
struct GroupGuard {
    pgid: i32,
    reaped: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.reaped {
            signal_group(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Where each program named without a `/` was found in `PATH`, looked up once
/// per name for the whole run. Left to `execvp`, the search happens again for
/// every job: with `true` in the ninth `PATH` entry that is eight failed
/// `execve` calls per job, with the spawning thread held in `vfork`
/// meanwhile. A name not found is left to the spawn, which reports it.
#[derive(Debug, Default)]
pub struct Programs(Mutex<HashMap<OsString, Option<PathBuf>>>);

impl Programs {
    fn find(&self, name: &OsStr) -> Option<PathBuf> {
        if name.as_bytes().contains(&b'/') {
            return None;
        }
        if let Some(found) = lock(&self.0).get(name) {
            return found.clone();
        }
        let found = search_path(name);
        lock(&self.0).insert(name.to_owned(), found.clone());
        found
    }
}

/// The first executable file called `name` in `PATH`, as `execvp` would
/// find it (an empty entry is the current directory).
fn search_path(name: &OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `argv` in a new process group with stdin closed and output captured
/// (or passed on, see [`Output`]); `tag` starts each line passed on.
///
/// When `ctx` is cancelled (deadline, shutdown), the group gets SIGTERM and,
/// if it has not exited after `kill_after`, SIGKILL; when `kill_now` fires,
/// SIGKILL at once. When the command exits, whatever it left running in its
/// group is killed, so no stray outlives the job or holds its pipes open.
pub async fn run(
    argv: &[OsString],
    env: &[(&str, String)],
    tag: &[u8],
    ctx: &JobContext,
    launch: &Launch,
) -> Ran {
    let groups = &*launch.groups;
    // The job's processes carry its token, so that one that leaves the
    // process group is still found when the job ends (`contain.rs`).
    let token = contain::new_token();
    let mut child = match command(argv, env, &token, launch).spawn() {
        Ok(child) => child,
        Err(e) => {
            return Ran::not_started(format!("cannot run {}: {e}", quote(&argv[0])));
        }
    };
    // A spawned child that has not been waited for always has an id.
    let pgid = child.id().map_or(0, |id| id as i32);
    let mut guard = GroupGuard {
        pgid,
        reaped: false,
    };
    lock(groups).insert(pgid);
    // What a command prints is kept (in memory up to `capture_limit` bytes
    // per stream, the rest in a temporary file) or passed on line by line.
    let outputs_done = tokio::sync::Semaphore::new(0);
    let (out_pipe, err_pipe) = (child.stdout.take(), child.stderr.take());
    let read_out = async {
        let c = collect(out_pipe, false, tag, launch).await;
        outputs_done.add_permits(1);
        c
    };
    let read_err = async {
        let c = collect(err_pipe, true, tag, launch).await;
        outputs_done.add_permits(1);
        c
    };
    let wait = async {
        let status = wait_stopping(&mut child, pgid, ctx, launch).await;
        // Strays left in the group die with the job.
        signal_group(pgid, Signal::SIGKILL);
        // A process that left the group and still holds the job's output
        // open would keep the job running: if the output does not end at
        // once, such orphans (re-parented to us, carrying the job's token)
        // die with the job too. Others are killed when `workpool` exits.
        let ended = outputs_done.acquire_many(2);
        if tokio::time::timeout(OUTPUT_GRACE, ended).await.is_err() {
            let leaders: Vec<i32> = lock(groups).iter().copied().collect();
            contain::kill_orphans(Some(&token), &leaders);
        }
        status
    };
    let (status, stdout, stderr) = tokio::join!(wait, read_out, read_err);
    guard.reaped = true;
    lock(groups).remove(&pgid);
    Ran {
        exit: exit_of(status),
        stdout,
        stderr,
    }
}

/// The command for `argv`: the program as found in `PATH` (seeing its name
/// as given), the job's environment, stdin closed, output captured, in a
/// process group of its own.
fn command(
    argv: &[OsString],
    env: &[(&str, String)],
    token: &str,
    launch: &Launch,
) -> tokio::process::Command {
    let mut cmd = match launch.programs.find(&argv[0]) {
        Some(path) => {
            let mut cmd = tokio::process::Command::new(path);
            cmd.arg0(&argv[0]);
            cmd
        }
        None => tokio::process::Command::new(&argv[0]),
    };
    cmd.args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(contain::TOKEN_VAR, token)
        .stdin(Stdio::null())
        .process_group(0);
    if let Output::Inherit = launch.output {
        cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    cmd
}

/// Waits for the job's command to exit. When `ctx` is cancelled its group
/// gets SIGTERM, then SIGKILL after `kill_after`; when `kill_now` fires,
/// SIGKILL at once.
async fn wait_stopping(
    child: &mut tokio::process::Child,
    pgid: i32,
    ctx: &JobContext,
    launch: &Launch,
) -> std::io::Result<std::process::ExitStatus> {
    let kill_now = &launch.kill_now;
    tokio::select! {
        status = child.wait() => return status,
        _ = ctx.cancelled() => {}
    }
    if kill_now.is_cancelled() {
        signal_group(pgid, Signal::SIGKILL);
    } else {
        signal_group(pgid, Signal::SIGTERM);
    }
    tokio::select! {
        status = child.wait() => return status,
        _ = tokio::time::sleep(launch.kill_after) => {}
        _ = kill_now.cancelled() => {}
    }
    signal_group(pgid, Signal::SIGKILL);
    child.wait().await
}

/// How a command ended, from its wait.
fn exit_of(status: std::io::Result<std::process::ExitStatus>) -> Exit {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::NotStarted("ended with an unknown status".into()),
        },
        Err(e) => Exit::NotStarted(format!("waiting for the command failed: {e}")),
    }
}

/// How long a job's output may stay open after its command exited before
/// the job's escaped processes are looked for.
const OUTPUT_GRACE: Duration = Duration::from_millis(50);

/// How commands are started and stopped, the same for every job of a run.
#[derive(Debug)]
pub struct Launch {
    /// Where each program was found in `PATH`.
    pub programs: Programs,
    /// Bytes of a job's stream kept in memory; the rest goes to a file.
    pub capture_limit: usize,
    /// Where the jobs' output goes.
    pub output: Output,
    /// The wait between SIGTERM and SIGKILL when a job is stopped.
    pub kill_after: Duration,
    /// Fired by a second signal: running jobs get SIGKILL at once.
    pub kill_now: CancellationToken,
    /// Process groups still alive, killed on the way out whatever happened.
    pub groups: Arc<Mutex<HashSet<i32>>>,
}

/// Where a job's stdout and stderr go.
#[derive(Debug)]
pub enum Output {
    /// Kept whole, printed (or stored with --results) when the job ends.
    Capture,
    /// Passed on a line at a time as it comes (--line-buffer).
    Lines(LineSink),
    /// The job writes to our stdout and stderr itself (--ungroup).
    Inherit,
}

/// Reads a pipe of the job's to its end (nothing if it has none): kept,
/// or passed on line by line (then nothing is kept).
async fn collect(
    pipe: Option<impl tokio::io::AsyncRead + Unpin>,
    stderr: bool,
    tag: &[u8],
    launch: &Launch,
) -> Captured {
    let Some(mut pipe) = pipe else {
        return Captured::default();
    };
    match &launch.output {
        Output::Lines(sink) => {
            sink.pass_on(&mut pipe, stderr, tag).await;
            Captured::default()
        }
        _ => Captured::read(&mut pipe, launch.capture_limit)
            .await
            .unwrap_or_default(),
    }
}

/// The last `lines` lines of `bytes`, as text, at most `max` bytes.
pub fn tail(bytes: &[u8], lines: usize, max: usize) -> String {
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut start = trimmed.len();
    for _ in 0..lines {
        match trimmed[..start].iter().rposition(|b| *b == b'\n') {
            Some(i) => start = i,
            None => {
                start = 0;
                break;
            }
        }
    }
    let mut slice = &trimmed[start..];
    if slice.first() == Some(&b'\n') {
        slice = &slice[1..];
    }
    if slice.len() > max {
        slice = &slice[slice.len() - max..];
    }
    String::from_utf8_lossy(slice).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn display_quotes_what_needs_it() {
        assert_eq!(
            display(&os(&["echo", "a b", "it's", "x"])),
            r"echo 'a b' 'it'\''s' x"
        );
    }

    #[test]
    fn tails() {
        assert_eq!(tail(b"1\n2\n3\n4\n", 2, 100), "3\n4");
        assert_eq!(tail(b"only", 3, 100), "only");
        assert_eq!(tail(b"", 3, 100), "");
        assert_eq!(tail(b"abcdef", 1, 3), "def");
    }
}
