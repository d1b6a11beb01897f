//! The job store subcommands over PostgreSQL, driven as a user would: the
//! real binary, several worker processes sharing one queue, one of them
//! killed with SIGKILL and started again, and a server restart.

#[path = "../../workpool/tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pg::TestSchema;

const BIN: &str = env!("CARGO_BIN_EXE_workpool");

macro_rules! schema {
    ($name:expr) => {
        match TestSchema::new($name).await {
            Some(s) => s,
            None => return,
        }
    };
}

/// A URL with a password: the server trusts this machine and ignores it,
/// and no output may show it.
fn url() -> String {
    pg::url().replacen("postgres@", "postgres:hunter2@", 1)
}

/// A fresh directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("workpool-pg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `workpool SUBCOMMAND --db URL --schema S REST` with `input` on stdin.
fn wp(schema: &TestSchema, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg(args[0])
        .args(["--db", &url(), "--schema", &schema.name])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("hunter2"), "the password was shown: {all}");
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_is_filled_run_inspected_retried_and_cancelled() {
    let schema = schema!("cli");
    let out = wp(&schema, &["migrate"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("version 1 (was 0)"));
    assert!(
        text(&out.stderr).contains("postgres:***@"),
        "{}",
        text(&out.stderr)
    );
    let records: String = (1..=30).map(|i| format!("{i}\n")).collect();
    let out = wp(&schema, &["enqueue"], records.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("30 jobs enqueued"));
    // Record 7 fails; the rest succeed.
    let out = wp(
        &schema,
        &[
            "worker",
            "-j",
            "4",
            "--exit-when-empty",
            "sh",
            "-c",
            "test $1 != 7 && echo ran $1",
            "_",
            "{}",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 29);
    let status = text(&wp(&schema, &["status", "--json"], b"").stdout);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let counts: HashMap<String, u64> = v["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["state"].as_str().unwrap().to_string(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts.get("completed"), Some(&29), "{status}");
    assert_eq!(counts.get("failed"), Some(&1), "{status}");
    let failed = text(&wp(&schema, &["jobs", "--state", "failed", "--json"], b"").stdout);
    let row: serde_json::Value = serde_json::from_str(failed.lines().next().unwrap()).unwrap();
    let id = row["id"].as_u64().unwrap().to_string();
    let out = wp(&schema, &["retry", &id], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("1 job made available"));
    let out = wp(&schema, &["cancel", "--state", "available"], b"");
    assert!(
        text(&out.stderr).contains("1 job cancelled"),
        "{}",
        text(&out.stderr)
    );
    let out = wp(&schema, &["retry", "999999"], b"");
    assert_eq!(out.status.code(), Some(1));
    // Errors say what is wrong, without the password.
    let out = Command::new(BIN)
        .args(["status", "--db", "postgres://u:hunter2@127.0.0.1:1/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("Connection refused") && err.contains("u:***@"),
        "{err}"
    );
    assert!(!err.contains("hunter2"));
    let out = Command::new(BIN)
        .args(["status", "--db", &url(), "--schema", "x\"; DROP TABLE y"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not allowed"));
    let help = Command::new(BIN)
        .args(["worker", "--help"])
        .output()
        .unwrap();
    assert!(text(&help.stdout).contains("postgres://"));
}

/// A worker process on the test's queue: each job appends `PID RECORD` to
/// `log` (the PID is the worker's: the shell's parent).
fn spawn_worker(schema: &TestSchema, log: &std::path::Path, jobs: &str, lease: &str) -> Child {
    Command::new(BIN)
        .args(["worker", "-j", jobs, "--lease", lease])
        .args(["--db", &url(), "--schema", &schema.name])
        .args([
            "sh",
            "-c",
            "echo \"$PPID $1\" >> \"$0\"",
            log.to_str().unwrap(),
            "{}",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Which process ran each record, in the order they ran.
fn runs(log: &std::path::Path) -> HashMap<u64, Vec<u32>> {
    let mut by_record: HashMap<u64, Vec<u32>> = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let (pid, record) = line.split_once(' ').unwrap();
        by_record
            .entry(record.parse().unwrap())
            .or_default()
            .push(pid.parse().unwrap());
    }
    by_record
}

async fn completed(schema: &TestSchema, conn: &mut sqlx::PgConnection) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM {}.jobs WHERE state = 'completed'",
        schema.name
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Three workers share `n` jobs while one is killed with SIGKILL `kills`
/// times and started again; then every job is completed, and a record ran
/// twice only if its first run was in a killed process.
async fn share_and_kill(schema: &TestSchema, n: u64, kills: usize) {
    let dir = Dir::new(&schema.name);
    let log = dir.0.join("log");
    let records: String = (1..=n).map(|i| format!("{i}\n")).collect();
    let out = wp(schema, &["enqueue"], records.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut workers: Vec<Child> = (0..3)
        .map(|_| spawn_worker(schema, &log, "4", "1s"))
        .collect();
    let mut spawned: HashSet<u32> = workers.iter().map(Child::id).collect();
    let mut killed = HashSet::new();
    let started = Instant::now();
    let mut conn = schema.conn().await;
    for k in 0..kills {
        // Wait for progress, then kill the first worker mid-run.
        let target = (n as i64) * (k as i64 + 1) / (kills as i64 + 2);
        while completed(schema, &mut conn).await < target {
            assert!(started.elapsed() < Duration::from_secs(240), "no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let victim = &mut workers[0];
        killed.insert(victim.id());
        victim.kill().unwrap();
        victim.wait().unwrap();
        workers[0] = spawn_worker(schema, &log, "4", "1s");
        spawned.insert(workers[0].id());
    }
    while completed(schema, &mut conn).await < n as i64 {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "{} of {n} completed",
            completed(schema, &mut conn).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for mut w in workers {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(w.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        w.wait().unwrap();
    }
    let left: i64 = schema
        .scalar("SELECT count(*) FROM S.jobs WHERE state <> 'completed'")
        .await;
    assert_eq!(left, 0, "every job completed");
    let by_record = runs(&log);
    assert_eq!(by_record.len() as u64, n, "every record ran");
    let mut again = 0;
    for (record, pids) in &by_record {
        if pids.len() > 1 {
            again += pids.len() - 1;
            // A job's shell that outlived its killed worker (or started
            // as it died) has been handed to another parent: still not a
            // worker that lived on.
            assert!(
                killed.contains(&pids[0]) || !spawned.contains(&pids[0]),
                "record {record} ran again, but its first run ({}) was in a worker that was not killed: {pids:?}",
                pids[0]
            );
        }
    }
    // What runs again is what the killed worker held as running: its 4
    // jobs that ran, and those that had ended but whose end was still on
    // its way to the database (ends are written in batches).
    assert!(
        again <= 12 * kills,
        "{again} runs again after {kills} kills"
    );
    eprintln!("{n} jobs, {kills} kills: 0 lost, {again} ran again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_jobs_and_a_killed_one_loses_nothing() {
    let schema = schema!("kill");
    share_and_kill(&schema, 2000, 3).await;
}

/// The size: 10^4 jobs, more kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: 10^4 jobs, 10 kills"]
async fn three_workers_share_ten_thousand_jobs_through_ten_kills() {
    let schema = schema!("killlong");
    share_and_kill(&schema, 10_000, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_db_keeps_a_run_in_postgres_and_the_same_command_line_runs_nothing_twice() {
    let schema = schema!("rundb");
    let dir = Dir::new("rundb");
    let out_file = dir.0.join("out");
    let run = || {
        let mut child = Command::new(BIN)
            .args([
                "run",
                "--db",
                &url(),
                "--schema",
                &schema.name,
                "-j",
                "3",
                "--",
            ])
            .args([
                "sh",
                "-c",
                "echo \"$1\" >> \"$0\"",
                out_file.to_str().unwrap(),
                "{}",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let records: String = (1..=20).map(|i| format!("{i}\n")).collect();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(records.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    };
    let first = run();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let again = run();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let ran = std::fs::read_to_string(&out_file).unwrap();
    let mut records: Vec<u32> = ran.lines().map(|l| l.parse().unwrap()).collect();
    records.sort_unstable();
    assert_eq!(
        records,
        (1..=20).collect::<Vec<_>>(),
        "each record ran once"
    );
    assert!(!text(&again.stderr).contains("hunter2"));
}
