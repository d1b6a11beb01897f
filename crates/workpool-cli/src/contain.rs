//! Process containment beyond a job's process group.
//!
//! A job's command runs in a process group of its own, killed when the job
//! ends. A process that leaves the group (`setsid`, a daemon's double fork)
//! would outlive it, and if it holds the job's stdout, keep the job "running"
//! until it exits. So `workpool run` is the child subreaper of its jobs'
//! descendants (Linux `PR_SET_CHILD_SUBREAPER`): an orphan is re-parented to
//! it, not to init. Each job's processes carry the job's token in their
//! environment ([`TOKEN_VAR`]). When a job's command has exited and its
//! output stays open, the orphans carrying its token are killed; at exit
//! every orphan is. (Looking costs a read of `/proc` per process, so it is
//! done only when a job's output stays open.)
//!
//! What still escapes: an orphan that does not hold its job's output lives
//! until `workpool` exits; one that clears its environment and holds the
//! output keeps its job running until it exits; one that a process outside
//! the job adopts (another subreaper between it and us, or a container's
//! init) is out of reach.

use std::io;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// The environment variable that names a job's token.
pub const TOKEN_VAR: &str = "WORKPOOL_JOB";

/// Makes this process the subreaper of its descendants' orphans.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// A new job token, unique in this run (and across runs, with the pid).
pub fn new_token() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// Kills the orphans re-parented to us that carry `token` (every orphan
/// but the `leaders` of running jobs when `token` is `None`), and reaps
/// them. Repeats while killing one orphans its children in turn, a bounded
/// number of times.
pub fn kill_orphans(token: Option<&str>, leaders: &[i32]) {
    let needle = token.map(|t| format!("{TOKEN_VAR}={t}").into_bytes());
    // Only what this call killed is reaped here: a zombie may also be a job
    // leader that tokio is about to reap itself.
    let mut killed: Vec<i32> = Vec::new();
    for _ in 0..50 {
        let mut waiting = false;
        for (pid, zombie) in orphans() {
            if leaders.contains(&pid) {
                continue;
            }
            if zombie {
                if killed.contains(&pid) || token.is_none() {
                    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                }
                continue;
            }
            if needle.as_ref().is_none_or(|n| carries(pid, n)) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                killed.push(pid);
                waiting = true;
            }
        }
        if !waiting {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Our children that we did not spawn ourselves as far as `/proc` can tell:
/// (pid, whether it is a zombie). Job leaders are among them; callers
/// leave those out.
fn orphans() -> Vec<(i32, bool)> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces and parens.
            let mut rest = stat.rsplit_once(") ")?.1.split(' ');
            let state = rest.next()?;
            let ppid: i32 = rest.next()?.parse().ok()?;
            (ppid == me).then_some((pid, state == "Z"))
        })
        .collect()
}

/// Whether process `pid`'s environment holds `needle` (`NAME=value`).
fn carries(pid: i32, needle: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle))
}
