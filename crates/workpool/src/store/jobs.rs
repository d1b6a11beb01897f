//! The jobs of a durable store as its callers see them: a job to put in
//! without a pool, a stored job, counts by state.

use std::fmt;
use std::time::{Duration, SystemTime};

/// A job in a durable store: how many attempts fail before it ends failed,
/// and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobRow {
    /// The store's ID for the job, which is also its [`JobId`](crate::JobId)
    /// when it runs.
    pub id: u64,
    /// Its queue.
    pub queue: String,
    /// `available`, `scheduled`, `running`, `retryable`, `completed`,
    /// `failed` or `cancelled`.
    pub state: String,
    /// Attempts made (or being made).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Lower runs sooner.
    pub priority: i32,
    /// When it may run (ms since the Unix epoch).
    pub run_at: i64,
    /// The error of each failed attempt, as a JSON array.
    pub errors: String,
}

/// A job a durable store's `enqueue_unique` stored or found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Enqueued {
    /// The job's ID.
    pub id: u64,
    /// `None` if it was stored now; the state of the job already there with
    /// its unique key otherwise.
    pub existing: Option<String>,
    /// Whether the job already there has the payload given now (always
    /// true for a job stored now).
    pub same_payload: bool,
}

/// Jobs in one queue and state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateCount {
    /// The queue.
    pub queue: String,
    /// The state.
    pub state: String,
    /// How many jobs.
    pub count: u64,
}

/// A job to put in the store without a pool (a producer that does not run
/// jobs): its payload as bytes and where and when it runs.
#[derive(Clone)]
pub struct NewJob {
    pub(crate) payload: Vec<u8>,
    pub(crate) queue: Option<String>,
    pub(crate) priority: i32,
    pub(crate) run_at: Option<SystemTime>,
    pub(crate) max_attempts: u32,
    pub(crate) unique_key: Option<String>,
    pub(crate) timeout: Option<Duration>,
}

impl fmt::Debug for NewJob {
    // Payloads may hold secrets: their length only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewJob")
            .field("payload_len", &self.payload.len())
            .field("queue", &self.queue)
            .field("priority", &self.priority)
            .field("run_at", &self.run_at)
            .field("max_attempts", &self.max_attempts)
            .field("unique_key", &self.unique_key)
            .finish()
    }
}

impl NewJob {
    /// A job with this payload, in the store's queue, to run now, once.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        NewJob {
            payload: payload.into(),
            queue: None,
            priority: 0,
            run_at: None,
            max_attempts: 1,
            unique_key: None,
            timeout: None,
        }
    }

    /// In this queue instead of the store's.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Lower runs sooner (default 0).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Not before this time.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Attempts allowed (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// At most one job with this key in its queue: enqueueing another
    /// returns the existing job's ID.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Its time limit when it runs.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
