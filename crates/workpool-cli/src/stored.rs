//! `workpool run --db FILE`: a run kept in a job store, so that the same
//! command line continues it after a kill.
//!
//! The run has a queue of its own in the file, named from its command and
//! input (`run-` and a hash). Each record is stored as it is read, under its
//! number as unique key: run again, the records already there are found,
//! not added. Those that finished (completed, failed, cancelled) are
//! skipped; the rest run, including those that were running when the last
//! process died (the file's owners tell at once that it is gone). Jobs run
//! on a durable pool, as in `workpool worker`, and the reporter prints them.
//! The run is over when the input is read and the queue holds no job that
//! may still run: the file says so, whichever process ran what.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use workpool::JobId;
use workpool::store::NewJob;

use crate::db::Store;

use crate::capture::LINE_BUDGET;
use crate::cli::{HaltWhen, RunArgs};
use crate::report::{Event, Stop, progress_bar, say};
use crate::run;
use crate::sources::{Jobs, Values};

/// Runs `workpool run --db`; returns the exit status.
///
/// # Errors
///
/// A usage or input problem found before anything ran (exit status 2).
pub async fn run(args: RunArgs) -> Result<i32, String> {
    let started = Instant::now();
    let mut signals = run::listen()?;
    let _ = crate::contain::become_subreaper();
    let jobs = run::jobs_of(&args);
    let (template, inputs) = run::open_sources(&args, jobs)?;
    run::check_joblog(&args)?;
    let db = crate::cli::DbFlags {
        db: args.db.clone().expect("run --db"),
        schema: args.schema.clone(),
    };
    let queue = queue_of(&args);
    let store = crate::jobstore::open(&db, &queue, None).await?;
    let (joblog, _, _) = run::open_joblog(&args)?;
    let (events, events_rx) = mpsc::unbounded_channel();
    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel();
    let line_budget = Arc::new(Semaphore::new(LINE_BUDGET));
    let output = run::output_mode(&args, &events, &line_budget);
    let state = run::new_state(&args, jobs, template, output, stop_tx.clone());
    // No window: outputs wait in the file, not in memory (-k is refused).
    let window = Arc::new(Semaphore::new(0));
    let bar = progress_bar(args.bar);
    let reporter = run::reporter_for(&args, joblog, bar, window, stop_tx.clone(), line_budget)
        .spawn(events_rx)
        .map_err(|e| format!("cannot start the reporter thread: {e}"))?;
    // The records the file already holds are read and checked before
    // anything runs: a changed input runs nothing.
    let mut inputs = inputs;
    let (seq, ended) = check_known(&mut inputs, &store, &queue, &events).await?;
    // Jobs already in the file may run here before the reader reaches
    // their records: those are remembered, not reported skipped too.
    let newest = store.jobs(None, 1).await?;
    let finished = crate::worker::Finished {
        up_to: newest.first().map_or(0, |j| j.id),
        ids: Arc::default(),
    };
    let pool = crate::worker::build(
        &args.job,
        jobs,
        &store,
        state.clone(),
        events.clone(),
        unpack,
        Some(finished.clone()),
    )?;
    // --halt stops this pool's intake from its outcome hook.
    state.set_stop_intake(&pool);
    let reader = tokio::spawn(store_records(
        Reading {
            inputs,
            seq,
            ended,
            read: state.read_counter(),
        },
        store.clone(),
        queue,
        events.clone(),
        stop_tx,
        finished,
    ));

    let mut interrupted = None;
    let first = tokio::select! {
        s = run::next_signal(&mut signals) => { interrupted = Some(s); None }
        stop = stop_rx.recv() => stop,
    };
    reader.abort();
    let timeout = match &first {
        Some(Stop::AllDone) => Duration::from_secs(5),
        // --halt now: stop running jobs at once (they go back to the file);
        // soon: let them finish.
        Some(Stop::Halt(HaltWhen::Now)) => Duration::ZERO,
        Some(Stop::Halt(HaltWhen::Soon)) => Duration::from_secs(10 * 365 * 86_400),
        _ => args.job.shutdown_timeout,
    };
    let report = crate::worker::stop(&pool, &state, &mut signals, &mut interrupted, timeout).await;
    let summary = crate::worker::summarize(&state, &events, reporter, started).await;
    store.close_or_say().await;
    let released = report.stats().unstarted;
    if released > 0 || interrupted.is_some() {
        say(&format!(
            "workpool: the run is kept in {}: the same command line continues it\n",
            db.db
        ));
    }
    if let Some(Stop::InputFailed(e)) = &first {
        say(&format!("workpool: {e}\n"));
        return Ok(2);
    }
    Ok(match (interrupted, &summary.output_error) {
        (Some(s), _) => s.exit_code(),
        (None, Some(crate::report::OutputError::Closed)) => 141,
        (None, Some(_)) => 1,
        // A record that failed in an earlier run of this one still counts.
        (None, None) if summary.any_failed() || summary.skipped_failed > 0 || summary.halted => 1,
        (None, None) if summary.joblog_error.is_some() => 1,
        (None, None) => 0,
    })
}

/// The run's queue: named from what makes its records (the command, with
/// its `:::` sources, the input file and the flags that split or group
/// records), so that the same command line finds it again.
fn queue_of(args: &RunArgs) -> String {
    let mut key = Vec::new();
    for word in &args.command {
        key.extend_from_slice(word.as_encoded_bytes());
        key.push(0);
    }
    let input = args
        .input
        .as_ref()
        .map(|p| p.as_os_str().as_encoded_bytes());
    key.extend_from_slice(input.unwrap_or(b"-"));
    let flags = format!(
        "\0{}\0{:?}\0{:?}\0{}{}{}",
        args.null, args.colsep, args.max_args, args.multiple, args.context_replace, args.link
    );
    key.extend_from_slice(flags.as_bytes());
    format!("run-{:016x}", fnv1a(&key))
}

/// FNV-1a, 64 bits: stable across builds and platforms (a queue name must
/// be the same for every run of the same command line).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The input, with the records read so far, and whether it ended.
struct Reading {
    inputs: Jobs,
    seq: u64,
    ended: bool,
    /// Records read so far, for a `--halt` percentage.
    read: Arc<std::sync::atomic::AtomicU64>,
}

/// Tells the reporter of a record an earlier run finished, if its job's
/// state (`None`: stored now) says it did.
fn done_earlier(events: &mpsc::UnboundedSender<Event>, state: Option<&str>) {
    if let Some(state @ ("completed" | "failed" | "cancelled")) = state {
        let _ = events.send(Event::Skipped {
            failed: state != "completed",
        });
    }
}

/// Why a run stops when record `seq` is not the one stored under its number.
fn changed(seq: u64) -> String {
    format!(
        "record {seq} is not the one this run stored under its number: the input changed since the run began; give a new --db file (or remove the old one) to start over"
    )
}

/// Records per transaction while the records the file knows are checked.
const CHECK_BATCH: usize = 512;

/// Reads the records the file already holds for this run (as many as its
/// queue has jobs) and checks each against the one stored under its
/// number, in batches; reports those an earlier run finished. Returns the
/// records read and whether the input ended.
///
/// # Errors
///
/// The input cannot be read, the file cannot be asked, or a record is not
/// the one stored under its number (the input changed).
async fn check_known(
    inputs: &mut Jobs,
    store: &Store,
    queue: &str,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(u64, bool), String> {
    let counts = store.counts().await?;
    let known: u64 = counts
        .iter()
        .filter(|c| c.queue == queue)
        .map(|c| c.count)
        .sum();
    let mut seq = 0u64;
    while seq < known {
        let mut jobs = Vec::new();
        let mut ended = false;
        while jobs.len() < CHECK_BATCH && seq + (jobs.len() as u64) < known {
            match inputs
                .next()
                .await
                .map_err(|e| format!("reading input failed: {e}"))?
            {
                Some(values) => {
                    let n = seq + jobs.len() as u64 + 1;
                    jobs.push(NewJob::new(pack(n, &values)).unique_key(n.to_string()));
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        let found = store.enqueue_unique(jobs).await?;
        for f in found {
            seq += 1;
            if !f.same_payload {
                return Err(changed(seq));
            }
            done_earlier(events, f.existing.as_deref());
        }
        if ended {
            return Ok((seq, true));
        }
    }
    Ok((seq, false))
}

/// Stores each record as it is read, under its number, telling the
/// reporter about those an earlier run finished; then waits until the
/// queue holds nothing that may still run.
async fn store_records(
    reading: Reading,
    store: Store,
    queue: String,
    events: mpsc::UnboundedSender<Event>,
    stop: mpsc::UnboundedSender<Stop>,
    finished: crate::worker::Finished,
) {
    let Reading {
        mut inputs,
        mut seq,
        ended,
        read,
    } = reading;
    read.store(seq, std::sync::atomic::Ordering::SeqCst);
    let mut ended = ended;
    while !ended {
        let values = match inputs.next().await {
            Ok(Some(v)) => v,
            Ok(None) => {
                ended = true;
                continue;
            }
            Err(e) => {
                let _ = stop.send(Stop::InputFailed(format!("reading input failed: {e}")));
                return;
            }
        };
        seq += 1;
        read.store(seq, std::sync::atomic::Ordering::SeqCst);
        let job = NewJob::new(pack(seq, &values)).unique_key(seq.to_string());
        let found = match store.enqueue_unique(vec![job]).await {
            Ok(mut f) => f.remove(0),
            Err(e) => {
                let _ = stop.send(Stop::InputFailed(format!(
                    "record {seq} could not be stored: {e}"
                )));
                return;
            }
        };
        if !found.same_payload {
            let _ = stop.send(Stop::InputFailed(changed(seq)));
            return;
        }
        if !finished.ran_here(found.id) {
            done_earlier(&events, found.existing.as_deref());
        }
    }
    // Every record is in the file: the run ends when none may still run.
    loop {
        match store.counts().await {
            Ok(counts) => {
                let left = counts.iter().any(|c| {
                    c.queue == queue
                        && !matches!(c.state.as_str(), "completed" | "failed" | "cancelled")
                });
                if !left {
                    let _ = stop.send(Stop::AllDone);
                    return;
                }
            }
            Err(e) => {
                let _ = stop.send(Stop::InputFailed(format!("the job store failed: {e}")));
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stored job: its record number and its values, each with its length.
fn pack(seq: u64, values: &[Vec<u8>]) -> Vec<u8> {
    let mut out = seq.to_le_bytes().to_vec();
    for v in values {
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// The record number and values of a stored job, if it is one of ours.
fn unpack(_id: &JobId, payload: Vec<u8>) -> Option<(u64, Values)> {
    let (seq, mut rest) = payload.split_first_chunk::<8>()?;
    let mut values = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<8>()?;
        let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
        values.push(tail.get(..len)?.to_vec());
        rest = &tail[len..];
    }
    Some((u64::from_le_bytes(*seq), values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_job_unpacks_to_itself_and_garbage_does_not() {
        let id = JobId::from(1u64);
        for values in [
            vec![],
            vec![vec![]],
            vec![b"a".to_vec(), vec![0, 255], b"".to_vec()],
        ] {
            assert_eq!(unpack(&id, pack(42, &values)), Some((42, values)));
        }
        assert_eq!(unpack(&id, vec![1, 2, 3]), None);
        let mut cut = pack(1, &[b"abc".to_vec()]);
        cut.pop();
        assert_eq!(unpack(&id, cut), None);
    }

    #[test]
    fn queue_names_are_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
