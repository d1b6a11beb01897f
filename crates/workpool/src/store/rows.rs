//! What the pool's durable glue (`durable.rs`) and the databases behind it
//! pass each other: rows to insert, rows claimed, how an attempt ended, and
//! the cancel signals of running jobs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cancel::{CancelRef, HoldsCancel, JobCancel};

/// Milliseconds since the Unix epoch: the store's clock, shared by processes.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A job to insert.
pub(crate) struct NewRow {
    pub(crate) queue: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) max_attempts: u32,
    pub(crate) priority: i32,
    pub(crate) run_at: i64,
    pub(crate) timeout_ms: Option<i64>,
    pub(crate) unique_key: Option<String>,
    /// The ticket of its handle in the enqueuing process, kept in the row
    /// so that a claim in that process finds it whatever the timing.
    pub(crate) ticket: Option<u64>,
}

/// An enqueued job's row; for a unique key already present, the existing
/// job's row and its state.
pub(crate) struct Inserted {
    pub(crate) id: i64,
    pub(crate) existing: Option<String>,
    /// For a job already there: whether its payload is the one given now.
    pub(crate) same_payload: bool,
}

/// A job a claim took: now `running`, leased to this process.
pub(crate) struct ClaimedRow {
    pub(crate) id: i64,
    pub(crate) payload: Vec<u8>,
    pub(crate) attempt: u32,
    pub(crate) priority: i32,
    pub(crate) run_at: i64,
    pub(crate) timeout_ms: Option<i64>,
    /// Its handle's ticket, if this process enqueued it with one.
    pub(crate) ticket: Option<u64>,
}

/// How a claimed attempt ended, as the store records it.
pub(crate) enum End {
    Completed,
    Failed(String),
    Cancelled(String),
    /// Runs again at this time (ms).
    Retry {
        at: i64,
        error: String,
    },
    /// Did not start: back to available, the claim's attempt undone.
    Unclaim,
    /// Stopped by a shutdown after it started: back to available, the attempt
    /// counted.
    Interrupted(String),
}

/// The cancel signals of a process's running jobs, by row: the store fires
/// those whose cancel was asked for in the database.
pub(crate) type Running = Arc<Mutex<HashMap<i64, Arc<RunningCancel>>>>;

/// A running job's cancel signal, fired by a cancel by ID; for a job with
/// a handle, passed on to the handle's signal.
#[derive(Default)]
pub(crate) struct RunningCancel {
    own: JobCancel,
    forward: Mutex<Option<CancelRef>>,
}

impl RunningCancel {
    /// Fires the handle's signal too when this one fires.
    pub(crate) fn forward_to(&self, handle: CancelRef) {
        *crate::sync::lock(&self.forward) = Some(handle);
    }

    pub(crate) fn fire(&self) {
        self.own.cancel();
        if let Some(h) = &*crate::sync::lock(&self.forward) {
            h.job_cancel().cancel();
        }
    }
}

impl HoldsCancel for RunningCancel {
    fn job_cancel(&self) -> &JobCancel {
        &self.own
    }
}
