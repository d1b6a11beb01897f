//! `workpool run` driven as a user would: the real binary on real processes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_workpool");

/// A fresh directory for one test, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("workpool-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
    fn read(&self, f: &str) -> String {
        std::fs::read_to_string(self.path(f)).unwrap_or_default()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn workpool(dir: &Dir, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("run").args(args).current_dir(&dir.0);
    c
}

/// Runs with `input` on stdin; returns the output.
fn run(dir: &Dir, args: &[&str], input: &[u8]) -> Output {
    let mut child = workpool(dir, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The binary may exit (say, on a usage error) before it reads its input.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

/// Asserts that a run's stderr says `what`, showing it whole if not.
fn stderr_has(out: &Output, what: &str) {
    let err = text(&out.stderr);
    assert!(err.contains(what), "expected {what:?} in: {err}");
}

/// Output as text. Every run's summary must agree with the pool's own
/// counts: the CLI says so on stderr when they differ.
fn text(b: &[u8]) -> String {
    let t = String::from_utf8_lossy(b).into_owned();
    assert!(!t.contains("internal error"), "{t}");
    t
}

fn joblog(dir: &Dir, f: &str) -> Vec<Value> {
    dir.read(f)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn by_seq(entries: &[Value], seq: u64) -> &Value {
    entries.iter().find(|e| e["seq"] == seq).unwrap()
}

/// Waits for a file a job creates to say it started: polling a real
/// process's side effect, with a bound.
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Whether `pid` is a live process. A zombie (dead, waiting for init to reap
/// it, which in a container may never happen) does not count.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: `pid (comm) S ...`.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn a_record_arrives_verbatim_as_one_argument_and_nothing_is_injected() {
    let dir = Dir::new("argv");
    let evil = "$(touch pwned); rm -rf x `touch pwned2` | touch pwned3";
    let out = run(
        &dir,
        &["printf", "<%s>\\n", "{}"],
        format!("{evil}\n").as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("<{evil}>\n"));
    for f in ["pwned", "pwned2", "pwned3"] {
        assert!(
            !dir.path(f).exists(),
            "{f} was created: a record reached a shell"
        );
    }
}

#[test]
fn placeholders_inside_arguments_and_appending_without_one() {
    let dir = Dir::new("subst");
    let out = run(&dir, &["-k", "echo", "pre-{}-post", "{}"], b"a\nb\n");
    assert_eq!(text(&out.stdout), "pre-a-post a\npre-b-post b\n");
    let out = run(&dir, &["-k", "echo", "x"], b"1\n2\n");
    assert_eq!(text(&out.stdout), "x 1\nx 2\n");
}

#[test]
fn empty_records_are_skipped_and_nul_separated_input_works() {
    let dir = Dir::new("nul");
    let out = run(&dir, &["-k", "printf", "[%s]"], b"a\n\n\nb\n");
    assert_eq!(text(&out.stdout), "[a][b]");
    let out = run(
        &dir,
        &["-0", "-k", "printf", "[%s]"],
        b"with\nnewline\0two\0\0",
    );
    assert_eq!(text(&out.stdout), "[with\nnewline][two]");
}

#[test]
fn invalid_utf8_records_pass_through_unchanged() {
    let dir = Dir::new("utf8");
    let out = run(&dir, &["printf", "%s", "{}"], b"\xff\xfe\x80ok\n");
    assert!(out.status.success());
    assert_eq!(out.stdout, b"\xff\xfe\x80ok");
    let out = run(&dir, &["--joblog", "log", "true"], b"\xff\n");
    assert!(out.status.success());
    let log = joblog(&dir, "log");
    assert_eq!(log[0]["record_hex"], "ff");
}

#[test]
fn keep_order_prints_in_input_order() {
    let dir = Dir::new("order");
    let out = run(
        &dir,
        &["-j", "4", "-k", "sh", "-c", "sleep 0.$0; echo $0"],
        b"4\n3\n2\n1\n",
    );
    assert_eq!(text(&out.stdout), "4\n3\n2\n1\n");
    let out = run(
        &dir,
        &["-j", "4", "sh", "-c", "sleep 0.$0; echo $0"],
        b"4\n3\n2\n1\n",
    );
    assert_eq!(
        text(&out.stdout),
        "1\n2\n3\n4\n",
        "without -k: as they finish"
    );
}

#[test]
fn each_jobs_output_is_one_block_never_interleaved() {
    let dir = Dir::new("blocks");
    let script = "echo start $0; sleep 0.05; echo middle $0; sleep 0.05; echo end $0";
    let input: String = (1..=8).map(|i| format!("{i}\n")).collect();
    let out = run(&dir, &["-j", "8", "sh", "-c", script], input.as_bytes());
    let lines: Vec<_> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 24);
    for block in lines.chunks(3) {
        let id = block[0].strip_prefix("start ").unwrap();
        assert_eq!(block[1], format!("middle {id}"));
        assert_eq!(block[2], format!("end {id}"));
    }
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let dir = Dir::new("group");
    let script = "sleep 300 & echo $! > bg.pid; sleep 300";
    let start = Instant::now();
    let out = run(
        &dir,
        &[
            "--timeout",
            "300ms",
            "--kill-after",
            "1s",
            "--joblog",
            "log",
            "sh",
            "-c",
            script,
        ],
        b"x\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed() < Duration::from_secs(10));
    let bg: i32 = dir.read("bg.pid").trim().parse().unwrap();
    assert!(!alive(bg), "the background child {bg} outlived its job");
    let log = joblog(&dir, "log");
    assert_eq!(log[0]["outcome"], "timed_out");
    assert_eq!(log[0]["signal"], 15, "SIGTERM was enough");
    stderr_has(&out, "timed out after 300ms");
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_kill_after() {
    let dir = Dir::new("killafter");
    let script = "trap '' TERM; while :; do sleep 0.05; done";
    let start = Instant::now();
    let out = run(
        &dir,
        &[
            "--timeout",
            "200ms",
            "--kill-after",
            "500ms",
            "--joblog",
            "log",
            "sh",
            "-c",
            script,
        ],
        b"x\n",
    );
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let log = joblog(&dir, "log");
    assert_eq!(log[0]["signal"], 9, "SIGKILL ended it");
}

#[test]
fn retries_run_a_failing_job_again_until_it_succeeds() {
    let dir = Dir::new("retry");
    // Fails twice, then succeeds: the attempt count lives in a file.
    let script = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]";
    let out = run(
        &dir,
        &[
            "--retries",
            "3",
            "--retry-delay",
            "10ms",
            "--joblog",
            "log",
            "sh",
            "-c",
            script,
        ],
        b"x\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(dir.read("count").trim(), "3");
    let log = joblog(&dir, "log");
    assert_eq!(
        (log[0]["outcome"].as_str(), log[0]["attempts"].as_u64()),
        (Some("succeeded"), Some(3))
    );

    let dir = Dir::new("retry-out");
    let out = run(
        &dir,
        &[
            "--retries",
            "2",
            "--retry-delay",
            "1ms",
            "--joblog",
            "log",
            "sh",
            "-c",
            "echo x >> tries; exit 4",
        ],
        b"x\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(dir.read("tries").lines().count(), 3, "1 try + 2 retries");
    let log = joblog(&dir, "log");
    assert_eq!(
        (log[0]["exit_code"].as_i64(), log[0]["attempts"].as_u64()),
        (Some(4), Some(3))
    );
}

#[test]
fn the_joblog_has_one_complete_line_per_job() {
    let dir = Dir::new("joblog");
    let out = run(
        &dir,
        &[
            "-j",
            "2",
            "--joblog",
            "log",
            "sh",
            "-c",
            "echo out; echo oops >&2; exit $0",
        ],
        b"0\n3\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let log = joblog(&dir, "log");
    assert_eq!(log.len(), 2);
    let ok = by_seq(&log, 1);
    assert_eq!(ok["record"], "0");
    assert_eq!(ok["outcome"], "succeeded");
    assert_eq!(ok["exit_code"], 0);
    assert_eq!(ok["attempts"], 1);
    assert_eq!(
        ok["command"],
        serde_json::json!(["sh", "-c", "echo out; echo oops >&2; exit $0", "0"])
    );
    assert!(ok["start"].as_f64().unwrap() > 1.7e9);
    assert!(ok["duration"].as_f64().unwrap() >= 0.0);
    let bad = by_seq(&log, 2);
    assert_eq!(bad["outcome"], "failed");
    assert_eq!(bad["exit_code"], 3);
    assert_eq!(bad["error"], "exit status 3");
    assert_eq!(bad["stderr_tail"], "oops");
    // The summary names the failed record with its status and stderr.
    let err = text(&out.stderr);
    assert!(
        err.contains("failed: record 2 \"3\": exit status 3: oops"),
        "{err}"
    );
}

#[test]
fn resume_after_a_partial_run_runs_exactly_the_missing_records() {
    let dir = Dir::new("resume");
    let input: String = (1..=20).map(|i| format!("{i}\n")).collect();
    std::fs::write(dir.path("in"), &input).unwrap();
    // First run: record 7 fails, and --halt stops the run soon after.
    let script = "echo $0 >> ran; [ $0 -ne 7 ]";
    let out = run(
        &dir,
        &[
            "-j",
            "1",
            "--input",
            "in",
            "--joblog",
            "log",
            "--halt",
            "soon,fail=1",
            "sh",
            "-c",
            script,
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let first: Vec<u64> = dir
        .read("ran")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(first.contains(&7) && first.len() < 20, "{first:?}");
    let succeeded: Vec<u64> = joblog(&dir, "log")
        .iter()
        .filter(|e| e["outcome"] == "succeeded")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();

    // --resume: everything not finished, nothing that finished.
    std::fs::remove_file(dir.path("ran")).unwrap();
    let out = run(
        &dir,
        &[
            "-j",
            "3",
            "--input",
            "in",
            "--joblog",
            "log",
            "--resume",
            "sh",
            "-c",
            "echo $0 >> ran",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut second: Vec<u64> = dir
        .read("ran")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    second.sort_unstable();
    let expected: Vec<u64> = (1..=20).filter(|n| !first.contains(n)).collect();
    assert_eq!(second, expected);

    // --resume-failed: only the failed record 7 again.
    std::fs::remove_file(dir.path("ran")).unwrap();
    let out = run(
        &dir,
        &[
            "--input",
            "in",
            "--joblog",
            "log",
            "--resume-failed",
            "sh",
            "-c",
            "echo $0 >> ran",
        ],
        b"",
    );
    assert!(out.status.success());
    assert_eq!(dir.read("ran"), "7\n");
    assert!(succeeded.iter().all(|s| *s != 7));
    let out = run(
        &dir,
        &[
            "--input",
            "in",
            "--joblog",
            "log",
            "--resume-failed",
            "sh",
            "-c",
            "echo $0 >> ran2",
        ],
        b"",
    );
    assert!(out.status.success());
    assert!(!dir.path("ran2").exists(), "everything has succeeded now");
}

#[test]
fn a_joblog_cut_off_mid_line_is_repaired_on_resume() {
    let dir = Dir::new("cut");
    std::fs::write(dir.path("in"), "a\nb\n").unwrap();
    let out = run(
        &dir,
        &["--input", "in", "--joblog", "log", "-k", "true"],
        b"",
    );
    assert!(out.status.success());
    let mut text_log = dir.read("log");
    let first_line_end = text_log.find('\n').unwrap() + 1;
    let kept: Value = serde_json::from_str(&text_log[..first_line_end]).unwrap();
    let lost = if kept["record"] == "a" { "b" } else { "a" };
    text_log.truncate(first_line_end + 10); // the second line, cut
    std::fs::write(dir.path("log"), &text_log).unwrap();
    let out = run(
        &dir,
        &[
            "--input",
            "in",
            "--joblog",
            "log",
            "--resume",
            "sh",
            "-c",
            "echo $0 > ran",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    stderr_has(&out, "the last line was cut off");
    assert_eq!(
        dir.read("ran"),
        format!("{lost}\n"),
        "only the record whose line was lost runs again"
    );
    assert_eq!(
        joblog(&dir, "log").len(),
        2,
        "the cut line was removed, the new one appended"
    );
}

#[test]
fn a_corrupt_or_foreign_joblog_is_refused_naming_the_line() {
    let dir = Dir::new("corrupt");
    std::fs::write(dir.path("log"), "{\"seq\":1,\"record\":\"a\",\"command\":[],\"exit_code\":0,\"signal\":null,\"outcome\":\"succeeded\",\"attempts\":1,\"start\":1.0,\"duration\":0.1}\nSeq\tHost\tStarttime\n{}\n").unwrap();
    let out = run(
        &dir,
        &["--joblog", "log", "--resume", "sh", "-c", "echo ran > ran"],
        b"a\n",
    );
    assert_eq!(out.status.code(), Some(2));
    stderr_has(&out, "log:2: not a workpool job log entry");
    assert!(!dir.path("ran").exists(), "nothing ran");
}

#[test]
fn bad_input_is_a_clear_error_before_anything_runs() {
    let dir = Dir::new("bad");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--input", "missing.txt", "touch", "ran"],
            "cannot read --input missing.txt",
        ),
        (&["--input", ".", "touch", "ran"], "it is a directory"),
        (
            &["--joblog", "no/such/dir/log", "touch", "ran"],
            "cannot create job log no/such/dir/log",
        ),
        (
            &["--timeout", "soon", "touch", "ran"],
            "invalid duration `soon`",
        ),
        (&["--halt", "sometime", "touch", "ran"], "invalid --halt"),
        (&["-j", "0", "touch", "ran"], "must be at least 1"),
        (&["--resume", "touch", "ran"], "--joblog"),
        (&[], "COMMAND"),
    ];
    for (args, expected) in cases {
        let out = run(&dir, args, b"x\n");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!dir.path("ran").exists(), "{args:?} ran something");
    }
}

#[test]
fn a_command_that_cannot_run_fails_each_job_clearly() {
    let dir = Dir::new("nocmd");
    let out = run(
        &dir,
        &["--joblog", "log", "no-such-command-workpool", "{}"],
        b"a\nb\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot run no-such-command-workpool: No such file or directory"),
        "{err}"
    );
    assert!(err.contains("0 succeeded, 2 failed"), "{err}");
    let log = joblog(&dir, "log");
    assert!(log.iter().all(|e| e["outcome"] == "failed"));

    std::fs::write(dir.path("not-exec"), "#!/bin/sh\n").unwrap();
    let out = run(&dir, &["./not-exec"], b"a\n");
    assert_eq!(out.status.code(), Some(1));
    stderr_has(&out, "Permission denied");
}

#[test]
fn a_program_is_found_in_path_as_execvp_would_and_keeps_its_name() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new("path");
    // `tool` twice on PATH: first not executable (skipped, as execvp skips
    // it), then a script that says which one ran.
    for (sub, mode) in [("a", 0o644), ("b", 0o755)] {
        std::fs::create_dir_all(dir.path(sub)).unwrap();
        let tool = dir.path(sub).join("tool");
        std::fs::write(&tool, format!("#!/bin/sh\necho {sub} \"$1\"\n")).unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let path = format!(
        "{}:{}:{}",
        dir.path("a").display(),
        dir.path("b").display(),
        std::env::var("PATH").unwrap()
    );
    let mut child = workpool(&dir, &["-k", "tool", "{}"])
        .env("PATH", &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"1\n2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "b 1\nb 2\n", "{}", text(&out.stderr));

    // A program run through a PATH lookup sees the name it was given as
    // argv[0], not the path it was found at.
    let out = run(&dir, &["cat", "/proc/self/cmdline"], b"/dev/null\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"cat\0/proc/self/cmdline\0/dev/null\0");
}

#[test]
fn halt_now_kills_running_jobs_and_halt_soon_lets_them_finish() {
    let dir = Dir::new("halt");
    // Record 1 fails at once; record 2 runs long.
    let script = "if [ $0 = 1 ]; then exit 1; fi; touch started-$0; sleep 5; touch finished-$0";
    let start = Instant::now();
    let out = run(
        &dir,
        &[
            "-j",
            "2",
            "--kill-after",
            "100ms",
            "--joblog",
            "log",
            "--halt",
            "now,fail=1",
            "sh",
            "-c",
            script,
        ],
        b"2\n1\n3\n4\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "now: did not wait for the running job"
    );
    assert!(!dir.path("finished-2").exists());
    let log = joblog(&dir, "log");
    assert!(log.iter().any(|e| e["outcome"] == "unstarted"), "{log:?}");
    assert!(text(&out.stderr).contains("halted"));

    let dir = Dir::new("halt-soon");
    let script = "if [ $0 = 1 ]; then sleep 0.2; exit 1; fi; sleep 1; touch finished-$0";
    let out = run(
        &dir,
        &["-j", "2", "--halt", "soon,fail=1", "sh", "-c", script],
        b"2\n1\n3\n4\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        dir.path("finished-2").exists(),
        "soon: the running job finished"
    );
    assert!(
        !dir.path("finished-3").exists() && !dir.path("finished-4").exists(),
        "no new job started"
    );
}

#[test]
fn dry_run_prints_commands_and_runs_nothing() {
    let dir = Dir::new("dry");
    let out = run(
        &dir,
        &["--dry-run", "touch", "{}.done", "it's"],
        b"a b\nc\n",
    );
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        "touch 'a b.done' 'it'\\''s'\ntouch c.done 'it'\\''s'\n"
    );
    assert!(!dir.path("c.done").exists());
}

#[test]
fn exit_status_is_zero_when_every_job_succeeds_and_one_when_any_fails() {
    let dir = Dir::new("status");
    assert_eq!(run(&dir, &["true"], b"a\nb\n").status.code(), Some(0));
    assert_eq!(
        run(&dir, &["true"], b"").status.code(),
        Some(0),
        "no input, nothing failed"
    );
    assert_eq!(
        run(&dir, &["sh", "-c", "[ $0 = a ]"], b"a\nb\n")
            .status
            .code(),
        Some(1)
    );
}

/// Starts a run whose jobs each touch `started-N` then sleep `secs`.
fn interruptible(dir: &Dir, secs: u32, extra: &[&str]) -> Child {
    let script = format!("touch started-$0; sleep {secs}; touch finished-$0");
    let mut args = vec!["-j", "2", "--joblog", "log", "--kill-after", "200ms"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["sh", "-c", &script]);
    let mut child = workpool(dir, &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"1\n2\n3\n4\n5\n");
    drop(stdin);
    child
}

#[test]
fn sigint_lets_running_jobs_finish_and_reports_the_rest_as_not_run() {
    let dir = Dir::new("sigint");
    let child = interruptible(&dir, 1, &[]);
    wait_for(&dir.path("started-1"));
    wait_for(&dir.path("started-2"));
    signal(&child, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        dir.path("finished-1").exists() && dir.path("finished-2").exists(),
        "running jobs finished"
    );
    for n in 3..=5 {
        assert!(
            !dir.path(&format!("started-{n}")).exists(),
            "job {n} started after the signal"
        );
    }
    let err = text(&out.stderr);
    assert!(err.contains("2 succeeded"), "{err}");
    assert!(err.contains("not run: \"3\""), "{err}");
    let log = joblog(&dir, "log");
    assert_eq!(
        log.iter().filter(|e| e["outcome"] == "succeeded").count(),
        2
    );
    assert!(
        log.iter()
            .any(|e| e["outcome"] == "unstarted" && e["record"] == "3"),
        "{log:?}"
    );
}

#[test]
fn a_second_signal_kills_running_jobs_at_once_and_sigterm_exits_143() {
    let dir = Dir::new("twice");
    let child = interruptible(&dir, 60, &[]);
    wait_for(&dir.path("started-1"));
    wait_for(&dir.path("started-2"));
    let start = Instant::now();
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(143),
        "the first signal decides the status"
    );
    let log = joblog(&dir, "log");
    let stopped: Vec<_> = log.iter().filter(|e| e["outcome"] == "cancelled").collect();
    assert_eq!(stopped.len(), 2, "{log:?}");
    assert!(stopped.iter().all(|e| e["signal"] == 9));
}

#[test]
fn the_shutdown_timeout_bounds_the_wait_for_running_jobs() {
    let dir = Dir::new("shutdown-timeout");
    let child = interruptible(&dir, 60, &["--shutdown-timeout", "300ms"]);
    wait_for(&dir.path("started-1"));
    let start = Instant::now();
    signal(&child, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(start.elapsed() < Duration::from_secs(10));
    let log = joblog(&dir, "log");
    assert!(
        log.iter()
            .any(|e| e["outcome"] == "cancelled" && e["signal"] == 15),
        "{log:?}"
    );
}

#[test]
fn a_grandchild_left_running_by_a_finished_job_is_killed() {
    let dir = Dir::new("grandchild");
    let out = run(
        &dir,
        &["sh", "-c", "sleep 300 & echo $! > bg.pid; exit 0"],
        b"x\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bg: i32 = dir.read("bg.pid").trim().parse().unwrap();
    assert!(!alive(bg), "the grandchild {bg} outlived its job");
}

/// kill -9 of `workpool run` mid-run, then `--resume`: no record that the
/// log shows succeeded runs again, and every other record runs (a record
/// running at the kill may run twice: at-least-once).
#[test]
fn after_kill_9_resume_runs_every_record_and_no_success_twice() {
    let dir = Dir::new("kill9");
    let input: String = (1..=40).map(|i| format!("{i}\n")).collect();
    std::fs::write(dir.path("in"), &input).unwrap();
    let script = "echo $0 >> ran; sleep 0.05";
    let child = workpool(
        &dir,
        &[
            "-j", "4", "--input", "in", "--joblog", "log", "sh", "-c", script,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let start = Instant::now();
    while dir.read("log").lines().count() < 8 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the run never got going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    let mut child = child;
    child.wait().unwrap();

    let before: Vec<Value> = dir
        .read("log")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok()) // the last line may be cut
        .collect();
    let succeeded: Vec<String> = before
        .iter()
        .filter(|e| e["outcome"] == "succeeded")
        .map(|e| e["record"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !succeeded.is_empty() && succeeded.len() < 40,
        "{}",
        succeeded.len()
    );

    let out = run(
        &dir,
        &[
            "-j", "4", "--input", "in", "--joblog", "log", "--resume", "sh", "-c", script,
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ran = dir.read("ran");
    let mut times: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for r in ran.lines() {
        *times.entry(r).or_default() += 1;
    }
    for n in 1..=40 {
        let r = n.to_string();
        assert!(
            times.get(r.as_str()).copied().unwrap_or(0) >= 1,
            "record {r} never ran"
        );
    }
    for r in &succeeded {
        assert_eq!(
            times[r.as_str()],
            1,
            "record {r} succeeded before the kill and ran again"
        );
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any bytes as input, either separator: no panic, every non-empty
        /// record becomes exactly one job, and its bytes reach the command.
        #[test]
        fn arbitrary_input_bytes_never_crash_the_tool(input in prop::collection::vec(any::<u8>(), 0..200), nul in any::<bool>()) {
            let dir = Dir::new("fuzz");
            let sep = if nul { 0u8 } else { b'\n' };
            let mut args = vec!["-j", "2", "-k", "--joblog", "log"];
            if nul {
                args.push("-0");
            }
            args.extend(["printf", "%s\\0", "{}"]);
            let out = run(&dir, &args, &input);
            prop_assert!(!text(&out.stderr).contains("panicked"));
            let expected: Vec<&[u8]> = input.split(|b| *b == sep).filter(|r| !r.is_empty()).collect();
            // A record with a NUL byte (possible without -0) cannot be an
            // argument: that job fails with a clear reason, the others run.
            let with_nul = expected.iter().filter(|r| r.contains(&0)).count();
            let code = if with_nul > 0 { 1 } else { 0 };
            prop_assert_eq!(out.status.code(), Some(code), "{}", text(&out.stderr));
            if with_nul > 0 {
                prop_assert!(text(&out.stderr).contains("holds a NUL byte"), "{}", text(&out.stderr));
            } else {
                let mut want = Vec::new();
                for r in &expected {
                    want.extend_from_slice(r);
                    want.push(0);
                }
                prop_assert_eq!(out.stdout, want);
            }
            prop_assert_eq!(joblog(&dir, "log").len(), expected.len());
        }
    }
}

// ---- Edges (each failed before its fix) ----

/// Before: `-j4`, `-j=4` and `-kj4` were taken as the command, and unknown
/// options ran as commands too (exit 1).
#[test]
fn options_parse_in_every_form_and_unknown_ones_are_usage_errors() {
    let dir = Dir::new("optforms");
    for form in [&["-j4"][..], &["-j=4"], &["-kj4"], &["-k", "-j", "4"]] {
        let mut args = form.to_vec();
        args.extend(["echo", "got"]);
        let out = run(&dir, &args, b"1\n2\n");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{form:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout).lines().count(), 2, "{form:?}");
    }
    for bad in [&["--jbos", "4"][..], &["-x"]] {
        let mut args = bad.to_vec();
        args.extend(["touch", "ran"]);
        let out = run(&dir, &args, b"1\n");
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("unexpected argument"), "{bad:?}");
        assert!(!dir.path("ran").exists(), "{bad:?} ran something");
    }
}

/// Before: `--bar` read the input once to count it and then ran nothing
/// from a pipe or FIFO (0 jobs, exit 0).
#[test]
fn a_bar_does_not_read_a_fifo_twice() {
    let dir = Dir::new("barfifo");
    let fifo = dir.path("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, b"1\n2\n3\n").unwrap())
    };
    let out = run(&dir, &["--bar", "--input", "fifo", "echo", "got"], b"");
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 3);
}

/// Before: `-j 1000000` with one record took a minute and 3.5 GB: every
/// worker was started up front. Now workers come with the records.
#[test]
fn a_huge_j_costs_nothing_until_there_is_work() {
    let dir = Dir::new("hugej");
    let started = Instant::now();
    let out = run(&dir, &["-j", "10000000", "echo", "got"], b"1\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "got 1\n");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    stderr_has(&out, "1 job in");
}

/// Before: `--timeout 0` stopped every job at once; the error text said a
/// unit was required though a bare number was taken (as seconds).
#[test]
fn timeouts_are_seconds_or_units_and_never_zero() {
    let dir = Dir::new("timeout0");
    let out = run(&dir, &["--timeout", "0", "touch", "ran"], b"1\n");
    assert_eq!(out.status.code(), Some(2));
    stderr_has(&out, "more than 0");
    assert!(!dir.path("ran").exists());
    let out = run(&dir, &["--timeout", "5", "echo", "ok"], b"1\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&dir, &["--timeout", "5x", "echo", "ok"], b"1\n");
    stderr_has(&out, "expected seconds");
}

/// Before: `--input -` was a file named `-`, `--joblog -` created one, and
/// the same file as --input and --joblog was emptied, exit 0.
#[test]
fn dash_input_is_stdin_and_a_log_cannot_be_stdout_or_the_input() {
    let dir = Dir::new("dashes");
    let out = run(&dir, &["--input", "-", "echo", "got"], b"1\n2\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 2);

    let out = run(&dir, &["--joblog", "-", "touch", "ran"], b"1\n");
    assert_eq!(out.status.code(), Some(2));
    stderr_has(&out, "--joblog -");
    assert!(!dir.path("-").exists() && !dir.path("ran").exists());

    std::fs::write(dir.path("records"), "1\n2\n").unwrap();
    let out = run(
        &dir,
        &["--input", "records", "--joblog", "records", "touch", "ran"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    stderr_has(&out, "is the --input file");
    assert_eq!(dir.read("records"), "1\n2\n", "the input was damaged");
    assert!(!dir.path("ran").exists());
}

/// Before: stdout to /dev/full lost every job's output and exited 0.
#[test]
fn output_that_cannot_be_written_is_never_a_success() {
    let dir = Dir::new("devfull");
    let full = std::fs::File::create("/dev/full").unwrap();
    let mut child = workpool(&dir, &["-j", "2", "echo", "line"])
        .stdin(Stdio::piped())
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(b"1\n2\n3\n");
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("writing the jobs' output failed"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Before: `| head -1` closing stdout ended the run with exit 0 and most
/// records never run.
#[test]
fn a_closed_stdout_stops_the_run_with_status_141() {
    let dir = Dir::new("headone");
    let mut child = workpool(&dir, &["-j", "2", "echo", "line"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = (1..=2000).map(|i| format!("{i}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    {
        use std::io::BufRead;
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.starts_with("line"));
    } // stdout's read end is dropped here, as `head -1` would.
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(err.contains("stdout was closed"), "{err}");
    assert!(err.contains("not run"), "{err}");
}

/// Before: stderr to a closed pipe made `workpool` panic (exit 101).
#[test]
fn a_closed_stderr_is_no_panic() {
    let dir = Dir::new("closederr");
    let mut child = workpool(&dir, &["sh", "-c", "echo oops >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let _ = child.stdin.take().unwrap().write_all(b"1\n2\n");
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(101), "panicked");
    assert_ne!(status.code(), Some(0), "the jobs' stderr was lost");
}

/// Before: a job log that could not be written gave one error and exit 0.
#[test]
fn a_job_log_that_cannot_be_written_stops_intake_and_fails_the_run() {
    let dir = Dir::new("fulllog");
    let out = run(&dir, &["--joblog", "/dev/full", "echo", "x"], b"1\n2\n3\n");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("writing /dev/full failed"), "{err}");
    assert!(err.contains("nothing more is started"), "{err}");
}

/// Before: a last log line whole but for its newline had the next run's
/// first entry glued to it, and the following --resume refused the log.
#[test]
fn a_log_whose_last_line_lacks_its_newline_is_repaired() {
    let dir = Dir::new("nonewline");
    let out = run(&dir, &["--joblog", "log", "echo"], b"a\nb\n");
    assert_eq!(out.status.code(), Some(0));
    let mut log = std::fs::read(dir.path("log")).unwrap();
    assert_eq!(log.pop(), Some(b'\n'));
    std::fs::write(dir.path("log"), &log).unwrap();
    let out = run(&dir, &["--joblog", "log", "--resume", "echo"], b"a\nb\nc\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&dir, &["--joblog", "log", "--resume", "echo"], b"a\nb\nc\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    stderr_has(&out, "3 skipped");
    assert_eq!(joblog(&dir, "log").len(), 3);
}

/// Before: timeouts were listed under `failed:`, failures came in the order
/// they ended, and a 1 MiB record was printed whole.
#[test]
fn the_summary_lists_failures_by_kind_in_record_order_and_cuts_long_records() {
    let dir = Dir::new("summary");
    // They end in the order 3 (a long record: too long an argument), 1, 2
    // (timed out); the summary lists them 1, 2, 3.
    let long = "y".repeat(1 << 20);
    let input = format!("slow\nhang\n{long}\n");
    let script = "case $0 in hang) sleep 5;; slow) sleep 0.3; exit 3;; *) exit 4;; esac";
    let out = run(
        &dir,
        &[
            "-j",
            "3",
            "--timeout",
            "1s",
            "--kill-after",
            "100ms",
            "sh",
            "-c",
            script,
        ],
        input.as_bytes(),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("  ")).collect();
    assert!(lines[0].starts_with("  failed: record 1 \"slow\""), "{err}");
    assert!(
        lines[1].starts_with("  timed out: record 2 \"hang\""),
        "{err}"
    );
    assert!(lines[2].starts_with("  failed: record 3 \"yyy"), "{err}");
    assert!(lines[2].contains(&format!("({} bytes)", 1 << 20)), "{err}");
    assert!(err.len() < 10_000, "the long record was printed whole");
}

/// Before: SIGHUP, SIGQUIT, SIGUSR1 and SIGALRM killed `workpool` and left
/// every job running. Each now stops the run as SIGTERM does, with 128 + its
/// number, and no job's process is left.
#[test]
fn other_stop_signals_stop_the_run_and_leave_no_job_behind() {
    use nix::sys::signal::Signal::{SIGALRM, SIGHUP, SIGQUIT, SIGUSR1};
    for (sig, status) in [
        (SIGHUP, 129),
        (SIGQUIT, 131),
        (SIGUSR1, 138),
        (SIGALRM, 142),
    ] {
        let dir = Dir::new(&format!("sig{status}"));
        let mut child = workpool(
            &dir,
            &[
                "-j",
                "2",
                "--shutdown-timeout",
                "100ms",
                "--kill-after",
                "100ms",
                "sh",
                "-c",
                "echo $$ > pid-$0; exec sleep 30",
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let _ = child.stdin.take().unwrap().write_all(b"1\n2\n3\n");
        wait_for(&dir.path("pid-1"));
        wait_for(&dir.path("pid-2"));
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(status),
            "{sig}: {}",
            text(&out.stderr)
        );
        for n in 1..=2 {
            let pid: i32 = dir.read(&format!("pid-{n}")).trim().parse().unwrap();
            assert!(!alive(pid), "{sig}: job {n} (pid {pid}) outlived workpool");
        }
    }
}

/// Before: the first Ctrl-C printed nothing for up to --shutdown-timeout.
#[test]
fn the_first_signal_says_what_happens_next() {
    let dir = Dir::new("sigsay");
    let child = interruptible(&dir, 1, &[]);
    wait_for(&dir.path("started-1"));
    signal(&child, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(err.contains("SIGINT received"), "{err}");
    assert!(err.contains("send it again to kill them"), "{err}");
}

/// Before: a dry run waiting for its input ignored SIGINT and SIGTERM.
#[test]
fn a_dry_run_waiting_for_input_obeys_signals() {
    let dir = Dir::new("drysig");
    let mut child = workpool(&dir, &["--dry-run", "echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"1\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let status = exit_within(&mut child, Duration::from_secs(5));
    drop(stdin);
    assert_eq!(status, Some(143));
}

/// The child's exit status, waiting at most `limit`; a child still running
/// then is killed and the test fails.
fn exit_within(child: &mut Child, limit: Duration) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("still running {limit:?} after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Before: with stdout blocked (a reader that does not read), SIGINT, a
/// second SIGINT and SIGTERM were all ignored until the reader went away.
#[test]
fn signals_are_obeyed_while_stdout_is_blocked() {
    let dir = Dir::new("blocked");
    let mut child = workpool(
        &dir,
        &[
            "-j",
            "2",
            "--shutdown-timeout",
            "200ms",
            "head",
            "-c",
            "1048576",
            "/dev/zero",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped()) // never read
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let input: String = (1..=50).map(|i| format!("{i}\n")).collect();
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, nix::sys::signal::Signal::SIGINT);
    let status = exit_within(&mut child, Duration::from_secs(15));
    assert_eq!(status, Some(130));
}

/// Before: every job's output was held in memory until printed, so a
/// reader slower than the jobs grew memory without bound (1.67 GB). Output
/// past a per-job limit now goes to a temporary file: it must come out
/// whole and in order (with -k) all the same.
#[test]
fn large_outputs_come_out_whole_and_in_order() {
    let dir = Dir::new("bigout");
    let script = "head -c $((1048576 * $0)) /dev/zero | tr '\\0' \"$0\"";
    let out = run(&dir, &["-k", "-j", "3", "sh", "-c", script], b"3\n1\n2\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut expected = Vec::new();
    for n in [3u8, 1, 2] {
        expected.extend(std::iter::repeat_n(b'0' + n, (n as usize) << 20));
    }
    assert!(
        out.stdout == expected,
        "output differs ({} bytes)",
        out.stdout.len()
    );
}

/// Before: `--resume` with a job log from a different input said "nothing
/// was run" with exit 2, yet re-ran the records it met before the first
/// difference. Every record the log knows is now checked first.
#[test]
fn resume_with_a_log_from_another_input_runs_nothing() {
    let dir = Dir::new("resumeother");
    let script = "touch ran-$0; [ $0 != 2 ]";
    let out = run(
        &dir,
        &["--joblog", "log", "sh", "-c", script],
        b"1\n2\n3\n4\n",
    );
    assert_eq!(out.status.code(), Some(1), "record 2 fails");
    for n in 1..=4 {
        std::fs::remove_file(dir.path(&format!("ran-{n}"))).unwrap();
    }
    let out = run(
        &dir,
        &["--joblog", "log", "--resume-failed", "sh", "-c", script],
        b"1\n2\n3\nchanged\n",
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("input changed"), "{err}");
    assert!(!dir.path("ran-2").exists(), "record 2 ran before the check");
}

/// Before: two runs on one job log both wrote to it, corrupting it.
#[test]
fn two_runs_cannot_share_a_job_log() {
    let dir = Dir::new("locked");
    let first = interruptible(&dir, 1, &[]);
    wait_for(&dir.path("started-1"));
    let out = run(&dir, &["--joblog", "log", "touch", "ran"], b"x\n");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("in use by another workpool run"), "{err}");
    assert!(!dir.path("ran").exists());
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        joblog(&dir, "log").len(),
        5,
        "the first run's log is intact"
    );
}

/// Before: `--resume` over a 10^6-line log held 1.09 GB (every entry kept
/// whole). Only what resuming needs is kept now: 10^5 lines here.
#[test]
fn resuming_from_a_long_log_keeps_memory_small() {
    let dir = Dir::new("longlog");
    let mut log = String::new();
    let mut input = String::new();
    for seq in 1..=100_000u64 {
        let tail = "e".repeat(200);
        log.push_str(&format!(
            "{{\"seq\":{seq},\"record\":\"r{seq}\",\"command\":[\"true\",\"r{seq}\"],\"exit_code\":0,\"signal\":null,\"outcome\":\"succeeded\",\"attempts\":1,\"start\":1.0,\"duration\":0.1,\"stderr_tail\":\"{tail}\"}}\n"
        ));
        input.push_str(&format!("r{seq}\n"));
    }
    input.push_str("new\n");
    std::fs::write(dir.path("log"), log).unwrap();
    std::fs::write(dir.path("input"), input).unwrap();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(BIN)
        .args([
            "run", "--joblog", "log", "--resume", "--input", "input", "touch",
        ])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("100000 skipped"), "{err}");
    assert!(dir.path("new").exists());
    let kib: u64 = err.lines().last().unwrap().trim().parse().unwrap();
    assert!(kib < 64 * 1024, "peak {kib} KiB for a 10^5-line log");
}

/// Before: a job's process that called setsid() left its process group,
/// outlived workpool, and, holding the job's stdout, kept a 0.2 s job
/// "running" until it exited.
#[test]
fn a_process_that_leaves_its_job_group_ends_with_the_job() {
    let dir = Dir::new("setsid");
    let script = "setsid sh -c 'echo $$ > escapee; exec sleep 30' & sleep 0.2; echo done";
    let started = Instant::now();
    let out = run(&dir, &["sh", "-c", script], b"1\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the job waited for its escapee: {:?}",
        started.elapsed()
    );
    let pid: i32 = dir.read("escapee").trim().parse().unwrap();
    assert!(!alive(pid), "the escapee (pid {pid}) outlived its job");
}

/// Before: with the user's process limit reached, the input reader panicked
/// (tokio could not start a blocking thread) and the run hung until SIGTERM.
/// Now every limit ends the run promptly, with a clear message and never a
/// panic's status. Needs root (to run as another user, whose limit is
/// enforced) and setpriv; without them it says so and checks nothing.
#[test]
fn a_process_limit_is_a_clean_stop_never_a_hang() {
    use std::os::unix::fs::PermissionsExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if !root || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root and /usr/bin/setpriv");
        return;
    }
    let dir = Dir::new("nproc");
    let bin = dir.path("workpool");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let records = dir.path("records");
    std::fs::write(&records, "1\n2\n").unwrap();
    for limit in 1..=12 {
        let script = format!(
            "ulimit -u {limit}; exec {} run --input {} echo",
            bin.display(),
            records.display()
        );
        let mut child = Command::new("/usr/bin/setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "bash",
                "-c",
                &script,
            ])
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = exit_within(&mut child, Duration::from_secs(15));
        eprintln!("limit {limit}: status {status:?}");
        let err = {
            let mut s = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
            s
        };
        assert_ne!(status, Some(101), "limit {limit}: a panic: {err}");
        assert!(!err.contains("panicked at"), "limit {limit}: {err}");
    }
}

/// The invocations the README's GNU parallel table claims behave the same,
/// run through GNU parallel and `workpool run`, outputs compared. GNU
/// parallel comes from the machine (CI installs it); without it the test
/// says so and checks nothing, except under CI, where it fails.
#[test]
fn the_same_as_gnu_parallel() {
    let found = Command::new("parallel").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "GNU parallel is needed in CI"
        );
        eprintln!("skipped: GNU parallel is not installed");
        return;
    }
    let dir = Dir::new("vsparallel");
    let input = b"a/b/c.txt\nc.txt\n/c\ndir/\na.b.c\n.hidden\na/.h\nx y.tar.gz\n";
    std::fs::write(dir.path("more"), "f1\nf2.x\n").unwrap();
    let more = dir.path("more");
    let more = more.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["-k", "echo", "{}", ":::", "a", "b", ":::", "1", "2"],
        &[
            "-k", "echo", "{2}-{1}", "{1.}", ":::", "a.x", "b", ":::", "1", "2",
        ],
        &[
            "-k", "--link", "echo", ":::", "a", "b", "c", ":::", "1", "2",
        ],
        &["-k", "echo", ":::", "a", "b", "::::", more],
        &["-k", "--tag", "echo", "t", ":::", "a", "b", ":::", "1", "2"],
        &[
            "-k", "--colsep", "/", "echo", "[{}]", "{2}", "{1.}", "{3/.}",
        ],
        &["-k", "-n", "3", "echo", "x{}y", "{2}"],
        &[
            "-k", "-n", "2", "-X", "echo", "x{}y", "{#}", ":::", "a", "b", "c",
        ],
        &["-k", "-j", "3", "-X", "echo", "[{}]"],
        &["-k", "-j", "2", "-m", "echo"],
        &["-k", "--tag", "-n", "3", "echo", "t"],
        &["-k", "echo", "[{}] [{.}] [{/}] [{//}] [{/.}] [{#}]"],
        &["-k", "-j", "1", "echo", "{%}", "{#}"],
        &["-k", "echo", "pre-{}-post", "{/.}"],
        &["-k", "echo", "appended"],
        &[
            "-k",
            "-j",
            "1",
            "sh",
            "-c",
            "echo \"$PARALLEL_SEQ $PARALLEL_JOBSLOT $1\"",
            "_",
            "{}",
        ],
        &["-0", "-k", "echo", "[{}]"],
        &[
            "-k",
            "--tag",
            "sh",
            "-c",
            "echo \"x $1\"; printf y",
            "_",
            "{}",
        ],
    ];
    for args in cases {
        let stdin: Vec<u8> = if args[0] == "-0" {
            input
                .iter()
                .map(|b| if *b == b'\n' { 0 } else { *b })
                .collect()
        } else {
            input.to_vec()
        };
        let ours = run(&dir, args, &stdin);
        // -q: GNU parallel quotes the command for its shell, so that its
        // arguments arrive as given, as workpool's always do (no shell).
        let mut theirs = Command::new("parallel")
            .args(["--will-cite", "-q"])
            .args(*args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        theirs.stdin.take().unwrap().write_all(&stdin).unwrap();
        let theirs = theirs.wait_with_output().unwrap();
        assert_eq!(ours.status.code(), theirs.status.code(), "{args:?}");
        assert_eq!(text(&ours.stdout), text(&theirs.stdout), "{args:?}");
    }
}

/// --delay spaces job starts at least its duration apart, whatever -j.
#[test]
fn delay_spaces_the_starts() {
    let dir = Dir::new("delay");
    let out = run(
        &dir,
        &[
            "-j",
            "4",
            "--delay",
            "300ms",
            "sh",
            "-c",
            "date +%s%N > start-$0",
        ],
        b"1\n2\n3\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut starts: Vec<u128> = (1..=3)
        .map(|n| dir.read(&format!("start-{n}")).trim().parse().unwrap())
        .collect();
    starts.sort();
    for pair in starts.windows(2) {
        let gap_ms = (pair[1] - pair[0]) / 1_000_000;
        assert!(gap_ms >= 290, "starts {gap_ms} ms apart");
    }
}

/// Shell completions and the man page come from the same flag definitions.
#[test]
fn completions_and_a_man_page_are_generated_from_the_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        assert!(text(&out.stdout).contains("jobs"), "{shell}");
        assert!(text(&out.stdout).contains("joblog"), "{shell}");
    }
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success());
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH workpool-run"),
        "{page}"
    );
    assert!(page.contains("\\-\\-joblog"), "{page}");
    assert!(page.contains("Exit status"), "{page}");
}

/// `--halt` on successes, and by a percentage of the records read so far.
#[test]
fn halt_on_successes_and_percentages() {
    let dir = Dir::new("haltpct");
    let input = b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n";
    // Stop after two successes: a success, exit 0.
    let out = run(
        &dir,
        &[
            "-j",
            "1",
            "--halt",
            "soon,success=2",
            "sh",
            "-c",
            "touch s-$0",
        ],
        input,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    stderr_has(&out, "--halt success limit reached");
    let ran = (1..=10)
        .filter(|n| dir.path(&format!("s-{n}")).exists())
        .count();
    assert_eq!(ran, 2);
    // Every job fails: 50 % of the records read so far is reached once the
    // third has ended (a percentage waits for three), so nothing more starts.
    let script = "touch p-$0; false";
    let out = run(
        &dir,
        &["-j", "1", "--halt", "soon,fail=50%", "sh", "-c", script],
        input,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    stderr_has(&out, "--halt limit reached");
    let ran = (1..=10)
        .filter(|n| dir.path(&format!("p-{n}")).exists())
        .count();
    assert_eq!(ran, 3);
}

/// Two jobs: A prints half a line, B (once A has) prints a whole line,
/// then A ends its line. `--line-buffer` never puts B's line inside A's;
/// `--ungroup` (the jobs write to our stdout themselves) does.
fn half_a_line(dir: &Dir, mode: &str) -> String {
    let script = r#"
        if [ "$1" = A ]; then printf A1; : > g; while [ ! -e f ]; do sleep 0.01; done; echo A2
        else while [ ! -e g ]; do sleep 0.01; done; echo B; : > f; fi"#;
    let out = run(
        dir,
        &[mode, "-j", "2", "sh", "-c", script, "_", ":::", "A", "B"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let _ = std::fs::remove_file(dir.path("f"));
    let _ = std::fs::remove_file(dir.path("g"));
    text(&out.stdout)
}

#[test]
fn line_buffer_passes_whole_lines_on_as_they_come() {
    let dir = Dir::new("linebuffer");
    assert_eq!(half_a_line(&dir, "--line-buffer"), "B\nA1A2\n");
    assert_eq!(half_a_line(&dir, "--ungroup"), "A1B\nA2\n");
    // A line is passed on while its job still runs: the job waits for a
    // file the test creates only once it has read the line.
    let mut child = workpool(
        &dir,
        &[
            "--line-buffer",
            "--tag",
            "sh",
            "-c",
            "echo up; while [ ! -e go ]; do sleep 0.01; done; echo done",
            "_",
            ":::",
            "x",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "x\tup\n");
    std::fs::write(dir.path("go"), "").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "x\tdone\n");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn line_buffer_output_to_a_closed_pipe_stops_the_run() {
    let dir = Dir::new("linebufferclosed");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "seq 1000 | {BIN} run --line-buffer -j 1 -- echo | head -1; echo \"${{PIPESTATUS[1]}}\""
        ))
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "1\n141\n", "{}", text(&out.stderr));
    stderr_has(&out, "not run");
}

#[test]
fn results_stores_each_jobs_output_in_files_inside_the_directory() {
    let dir = Dir::new("results");
    let script = "echo \"out $1\"; echo \"err $1\" >&2; [ \"$1\" != bad ]";
    let out = run(
        &dir,
        &[
            "--results",
            "res",
            "sh",
            "-c",
            script,
            "_",
            ":::",
            "a",
            "b/c",
            "..",
            "bad",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "", "stored, not printed");
    stderr_has(&out, "failed: record 4 \"bad\"");
    for (name, value, seq) in [
        ("a", "a", 1),
        ("b\\_c", "b/c", 2),
        ("\\.\\.", "..", 3),
        ("bad", "bad", 4),
    ] {
        let at = format!("res/1/{name}");
        assert_eq!(dir.read(&format!("{at}/stdout")), format!("out {value}\n"));
        assert_eq!(dir.read(&format!("{at}/stderr")), format!("err {value}\n"));
        assert_eq!(dir.read(&format!("{at}/seq")), format!("{seq}\n"));
    }
    assert!(!dir.path("res/stdout").exists(), "`..` stays inside");
    // Two sources: one level per value; a replacement string names the files.
    let out = run(
        &dir,
        &["--results", "two", "echo", ":::", "a", ":::", "1"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(dir.read("two/1/a/2/1/stdout"), "a 1\n");
    let out = run(
        &dir,
        &["--results", "named/{}.txt", "echo", "hi"],
        b"x\ny\n",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(dir.read("named/x.txt"), "hi x\n");
    assert_eq!(dir.read("named/y.txt.seq"), "2\n");
    // A directory that cannot be made fails the run, with nothing more started.
    std::fs::write(dir.path("file"), "").unwrap();
    let out = run(&dir, &["--results", "file", "echo", ":::", "a"], b"");
    assert_eq!(out.status.code(), Some(1));
    stderr_has(&out, "--results");
}

#[test]
fn sources_and_groups_are_checked_and_resume_by_their_values() {
    let dir = Dir::new("sources");
    for (args, says) in [
        (&["echo", ":::+", "a"][..], "--link"),
        (&[":::", "a"][..], "no command before"),
        (&["echo", "::::"][..], "no file after"),
        (&["echo", "::::", "missing"][..], "cannot read :::: missing"),
        (
            &["--colsep", "\\s+", "echo"][..],
            "regular expressions are not supported",
        ),
        (&["echo", "::::", "-", "::::", "-"][..], "standard input"),
        (&["-m", "-X", "echo"][..], "cannot be used with"),
    ] {
        let out = run(&dir, args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        stderr_has(&out, says);
    }
    // `::: ` values are taken as given (empty ones too); stdin is not read.
    let out = run(&dir, &["-k", "echo", "[{}]", ":::", "a", ""], b"not read\n");
    assert_eq!(text(&out.stdout), "[a]\n[]\n");
    // Resuming a run of combinations skips the ones the log shows done.
    let args = [
        "--joblog",
        "log",
        "-k",
        "sh",
        "-c",
        "echo $1$2; [ $1$2 != b1 ]",
        "_",
        ":::",
        "a",
        "b",
        ":::",
        "1",
        "2",
    ];
    let out = run(&dir, &args, b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(by_seq(&joblog(&dir, "log"), 3)["record"], "b 1");
    let mut again = vec!["--resume-failed"];
    again.extend(args);
    let out = run(&dir, &again, b"");
    assert_eq!(
        text(&out.stdout),
        "b1\n",
        "only the failed combination runs again"
    );
}

/// Any subcommand, with `input` on stdin.
fn wp(dir: &Dir, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(&dir.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

#[test]
fn a_job_store_is_filled_run_inspected_retried_and_cancelled() {
    let dir = Dir::new("store");
    let input: String = (1..=20).map(|i| format!("{i}\n")).collect();
    let out = wp(&dir, &["enqueue", "--db", "q.db"], input.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    stderr_has(&out, "20 jobs enqueued in q.db (queue default)");
    let status = text(&wp(&dir, &["status", "--db", "q.db"], b"").stdout);
    assert!(
        status.contains("default          available          20"),
        "{status}"
    );

    let script = "echo \"r $1\"; [ \"$1\" != 7 ]";
    let args = [
        "worker",
        "--db",
        "q.db",
        "-j",
        "4",
        "--exit-when-empty",
        "--",
        "sh",
        "-c",
        script,
        "_",
        "{}",
    ];
    let out = wp(&dir, &args, b"");
    assert_eq!(
        out.status.code(),
        Some(1),
        "job 7 failed: {}",
        text(&out.stderr)
    );
    let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    lines.sort();
    let mut expected: Vec<String> = (1..=20).map(|i| format!("r {i}")).collect();
    expected.sort();
    assert_eq!(lines, expected);
    stderr_has(&out, "20 jobs");

    let json = text(&wp(&dir, &["status", "--db", "q.db", "--json"], b"").stdout);
    let status: Value = serde_json::from_str(&json).unwrap();
    let count = |state: &str| {
        status["counts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["state"] == state)
            .map_or(0, |c| c["count"].as_u64().unwrap())
    };
    assert_eq!((count("completed"), count("failed")), (19, 1), "{json}");
    assert_eq!(status["recent_failures"][0]["error"], "exit status 1");

    let failed = text(
        &wp(
            &dir,
            &["jobs", "--db", "q.db", "--state", "failed", "--json"],
            b"",
        )
        .stdout,
    );
    let row: Value = serde_json::from_str(failed.lines().next().unwrap()).unwrap();
    let id = row["id"].as_u64().unwrap().to_string();
    assert!(
        !failed.contains("\"7\""),
        "records are never printed: {failed}"
    );

    let out = wp(&dir, &["retry", "--db", "q.db", &id], b"");
    assert_eq!(out.status.code(), Some(0));
    stderr_has(&out, "1 job made available");
    let out = wp(
        &dir,
        &["cancel", "--db", "q.db", "--state", "available"],
        b"",
    );
    stderr_has(&out, "1 job cancelled");
    let out = wp(&dir, &["retry", "--db", "q.db", "999999"], b"");
    assert_eq!(out.status.code(), Some(1));
    stderr_has(&out, "not made available: 999999");

    // Scheduled for later: nothing is ready, the worker has nothing to run.
    let out = wp(
        &dir,
        &["enqueue", "--db", "q.db", "--delay", "1h"],
        b"later\n",
    );
    assert_eq!(out.status.code(), Some(0));
    let out = wp(
        &dir,
        &["worker", "--db", "q.db", "--exit-when-empty", "echo"],
        b"",
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), String::new())
    );
    let status = text(&wp(&dir, &["status", "--db", "q.db"], b"").stdout);
    assert!(status.contains("scheduled"), "{status}");
}

#[test]
fn job_store_input_errors_are_usage_errors() {
    let dir = Dir::new("storeerrors");
    for (args, says) in [
        (
            &["status", "--db", "missing.db"][..],
            "no job store at missing.db",
        ),
        (&["jobs", "--db", "missing.db"][..], "no job store"),
        (
            &["enqueue", "--db", "no/such/dir/q.db"][..],
            "cannot open the job store",
        ),
        (
            &["jobs", "--db", "q.db", "--state", "done"][..],
            "unknown state",
        ),
        (
            &["enqueue", "--db", "q.db", "--at", "tomorrow"][..],
            "invalid time",
        ),
        (&["cancel", "--db", "q.db"][..], "required"),
        (
            &["worker", "--db", "q.db", "-j", "1000000", "true"][..],
            "at most",
        ),
    ] {
        let out = wp(&dir, args, b"");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        stderr_has(&out, says);
    }
    std::fs::write(dir.path("garbage.db"), vec![1u8; 4096]).unwrap();
    let out = wp(&dir, &["status", "--db", "garbage.db"], b"");
    assert_eq!(out.status.code(), Some(2));
    stderr_has(&out, "not a database");
}

/// `workpool worker --db q.db FLAGS -- sh -c SCRIPT _ {}` in `dir`.
fn spawn_worker(dir: &Dir, flags: &[&str], script: &str) -> Child {
    Command::new(BIN)
        .args(["worker", "--db", "q.db"])
        .args(flags)
        .args(["--", "sh", "-c", script, "_", "{}"])
        .current_dir(&dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Two workers share a store: each job runs once. A signal stops a worker:
/// its running job goes back to the store, exit 130.
#[test]
fn workers_share_a_store_and_a_signal_puts_running_jobs_back() {
    let dir = Dir::new("storeworkers");
    let input: String = (1..=200).map(|i| format!("{i}\n")).collect();
    assert!(
        wp(&dir, &["enqueue", "--db", "q.db"], input.as_bytes())
            .status
            .success()
    );
    let worker = || {
        spawn_worker(
            &dir,
            &["-j", "3", "--exit-when-empty"],
            "echo \"$1\" >> ran.txt",
        )
    };
    let (a, b) = (worker(), worker());
    for w in [a, b] {
        let out = w.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("locked"));
    }
    let mut ran: Vec<u32> = dir
        .read("ran.txt")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    ran.sort_unstable();
    assert_eq!(ran, (1..=200).collect::<Vec<_>>(), "each job once");

    assert!(
        wp(&dir, &["enqueue", "--db", "q.db"], b"slow\n")
            .status
            .success()
    );
    let mut w = spawn_worker(&dir, &["--shutdown-timeout", "1s"], ": > started; sleep 30");
    wait_for(&dir.path("started"));
    signal(&w, nix::sys::signal::Signal::SIGINT);
    assert_eq!(exit_within(&mut w, Duration::from_secs(20)), Some(130));
    let json = text(
        &wp(
            &dir,
            &["jobs", "--db", "q.db", "--state", "available", "--json"],
            b"",
        )
        .stdout,
    );
    assert_eq!(
        json.lines().count(),
        1,
        "the interrupted job is available again: {json}"
    );
}

/// `run --db`: killed with SIGKILL mid-run, the same command line again
/// continues it at once: every record runs, only those held by the killed
/// process run again, and a run that is over runs nothing more (with the
/// status of what failed in it).
#[test]
fn run_db_killed_and_run_again_continues_where_it_stopped() {
    let dir = Dir::new("rundb");
    let input: String = (1..=300).map(|i| format!("{i}\n")).collect();
    let args = [
        "--db",
        "r.db",
        "-j",
        "4",
        "--",
        "sh",
        "-c",
        "sleep 0.005; echo \"$1\" >> out.txt; [ \"$1\" != 250 ]",
        "_",
        "{}",
    ];
    let kills = 3;
    for k in 0..kills {
        let mut child = workpool(&dir, &args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + 50 * k));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let out = run(&dir, &args, input.as_bytes());
    assert_eq!(
        out.status.code(),
        Some(1),
        "record 250 failed: {}",
        text(&out.stderr)
    );
    let mut ran: Vec<u32> = dir
        .read("out.txt")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let total = ran.len();
    ran.sort_unstable();
    ran.dedup();
    assert_eq!(ran, (1..=300).collect::<Vec<_>>(), "every record ran");
    assert!(
        total - 300 <= kills as usize * 5,
        "{} ran again after {kills} kills",
        total - 300
    );
    // The summary accounts for every record once: "workpool: N jobs in T:
    // A succeeded, B failed, C skipped (…)".
    let err = text(&out.stderr);
    let line = err.lines().find(|l| l.contains(" jobs in ")).unwrap();
    let parts = line.splitn(3, ": ").nth(2).unwrap();
    let counted: u64 = parts
        .split(", ")
        .filter_map(|p| {
            let mut words = p.split(' ');
            let n = words.next()?.parse::<u64>().ok()?;
            matches!(words.next()?, "succeeded" | "failed" | "skipped").then_some(n)
        })
        .sum();
    assert_eq!(counted, 300, "{err}");
    // Another input under the same command line is refused, naming the
    // first record that differs; nothing runs.
    let changed = input.replace("\n7\n", "\nseven\n");
    let out = run(&dir, &args, changed.as_bytes());
    assert_eq!(out.status.code(), Some(2));
    stderr_has(&out, "record 7 is not the one this run stored");
    // Over: run again, nothing runs, and the failure still shows.
    std::fs::remove_file(dir.path("out.txt")).unwrap();
    let out = run(&dir, &args, input.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    stderr_has(
        &out,
        "300 skipped (done in an earlier run, 1 of them without success)",
    );
    assert_eq!(dir.read("out.txt"), "");
}

/// `workpool cancel` of a running job reaches the worker that runs it: the
/// command is stopped and the job ends cancelled, not failed or retried.
#[test]
fn cancel_by_id_stops_a_running_job_in_its_worker() {
    let dir = Dir::new("storecancel");
    assert!(
        wp(&dir, &["enqueue", "--db", "q.db"], b"slow\n")
            .status
            .success()
    );
    let mut w = spawn_worker(
        &dir,
        &["--retries", "2", "--kill-after", "1s"],
        ": > started; exec sleep 30",
    );
    wait_for(&dir.path("started"));
    let out = wp(&dir, &["cancel", "--db", "q.db", "--state", "running"], b"");
    stderr_has(&out, "1 job cancelled");
    let start = Instant::now();
    loop {
        let json = text(
            &wp(
                &dir,
                &["jobs", "--db", "q.db", "--state", "cancelled", "--json"],
                b"",
            )
            .stdout,
        );
        if json.lines().count() == 1 {
            let row: Value = serde_json::from_str(json.trim()).unwrap();
            assert_eq!(row["attempt"], 1, "not retried: {row}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the job was never cancelled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&w, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(exit_within(&mut w, Duration::from_secs(20)), Some(143));
}

/// A `run --db` whose input changed since the store was written runs
/// nothing: every record the store knows is checked first.
#[test]
fn run_db_refuses_a_changed_input_before_running_anything() {
    let dir = Dir::new("rundbchanged");
    let script = "echo \"$1\" >> started; while [ ! -e go ]; do sleep 0.01; done";
    let args = [
        "--db", "r.db", "-j", "1", "--", "sh", "-c", script, "_", "{}",
    ];
    let mut child = workpool(&dir, &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a\nb\nc\n").unwrap();
    wait_for(&dir.path("started"));
    // Every record is stored as read: wait until the store has all three.
    let start = Instant::now();
    while !text(&wp(&dir, &["status", "--db", "r.db"], b"").stdout).contains(" 2\n") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "records never stored"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = run(&dir, &args, b"a\nB\nc\n");
    std::fs::write(dir.path("go"), "").unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    stderr_has(&out, "record 2 is not the one this run stored");
    assert_eq!(dir.read("started"), "a\n", "nothing ran again");
}

/// `run --db --halt`: the halt stops the run as without `--db`, and the same
/// command line then runs what the halt left, the failure still counted.
#[test]
fn run_db_halts_and_the_same_command_line_runs_the_rest() {
    let dir = Dir::new("rundbhalt");
    let input = b"1\n2\n3\n4\n5\n6\n";
    let args = [
        "--db",
        "r.db",
        "-j",
        "1",
        "--halt",
        "now,fail=1",
        "--",
        "sh",
        "-c",
        "echo \"r $1\"; [ $1 != 2 ]",
        "_",
        "{}",
    ];
    let out = run(&dir, &args, input);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "r 1\nr 2\n");
    stderr_has(&out, "halted");
    let out = run(&dir, &args, input);
    assert_eq!(
        out.status.code(),
        Some(1),
        "record 2 failed in the first run"
    );
    assert_eq!(text(&out.stdout), "r 3\nr 4\nr 5\nr 6\n");
    stderr_has(
        &out,
        "2 skipped (done in an earlier run, 1 of them without success)",
    );
}
