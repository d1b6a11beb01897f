//! The databases a durable store can keep its jobs in, behind the handful
//! of calls the pool's durable glue (`durable.rs`) makes.

use std::time::Duration;

use tokio::sync::Notify;

use super::rows::{ClaimedRow, End, Inserted, NewRow, Running};

/// A durable store for [`PoolBuilder::store`](crate::PoolBuilder::store):
/// made from a [`SqliteStore`](crate::store::sqlite::SqliteStore) (feature
/// `sqlite`) or a [`PgStore`](crate::store::postgres::PgStore) (feature
/// `postgres`) with `.into()`, which `store` does for you.
#[derive(Clone, Debug)]
pub struct Durable {
    pub(crate) backend: Backend,
}

#[derive(Clone, Debug)]
pub(crate) enum Backend {
    #[cfg(feature = "sqlite")]
    Sqlite(super::sqlite::SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(super::postgres::PgStore),
}

#[cfg(feature = "sqlite")]
impl From<super::sqlite::SqliteStore> for Durable {
    fn from(store: super::sqlite::SqliteStore) -> Self {
        Durable {
            backend: Backend::Sqlite(store),
        }
    }
}

#[cfg(feature = "postgres")]
impl From<super::postgres::PgStore> for Durable {
    fn from(store: super::postgres::PgStore) -> Self {
        Durable {
            backend: Backend::Postgres(store),
        }
    }
}

/// Calls `$e` on whichever store `$self` holds, bound to `$s`.
macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite($s) => $e,
            #[cfg(feature = "postgres")]
            Backend::Postgres($s) => $e,
        }
    };
}

impl Backend {
    /// The queue the pool takes jobs from and puts jobs in.
    pub(crate) fn queue(&self) -> &str {
        each!(self, s => s.queue())
    }

    /// How long an idle claimer waits before it looks again.
    pub(crate) fn poll_interval(&self) -> Duration {
        each!(self, s => s.poll_interval())
    }

    /// Told when another process may have enqueued (PostgreSQL's NOTIFY);
    /// `None` where only polling finds such jobs.
    pub(crate) fn arrivals(&self) -> Option<&Notify> {
        match self {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => None,
            #[cfg(feature = "postgres")]
            Backend::Postgres(s) => Some(s.arrivals()),
        }
    }

    /// Inserts rows in one transaction; their IDs once committed.
    pub(crate) async fn insert(&self, rows: Vec<NewRow>) -> Result<Vec<Inserted>, String> {
        each!(self, s => s.insert(rows).await.map_err(|e| e.to_string()))
    }

    /// Claims up to `n` ready jobs of `queue` for this process.
    pub(crate) async fn claim(&self, queue: &str, n: usize) -> Result<Vec<ClaimedRow>, String> {
        each!(self, s => s.claim(queue, n).await.map_err(|e| e.to_string()))
    }

    /// Records how an attempt ended (in a batch, later); an error if the
    /// store is closed.
    pub(crate) fn end(&self, id: i64, attempt: u32, end: End) -> Result<(), String> {
        each!(self, s => s.end(id, attempt, end).map_err(|e| e.to_string()))
    }

    /// Cancels a job that waits (not one that runs).
    pub(crate) fn cancel_waiting(&self, id: i64) {
        each!(self, s => s.cancel_waiting(id))
    }

    /// Waits until every end sent so far is written.
    pub(crate) async fn flush(&self) -> Result<(), String> {
        each!(self, s => s.flush().await.map_err(|e| e.to_string()))
    }

    /// The cancel signals of this process's running jobs.
    pub(crate) fn running(&self) -> &Running {
        each!(self, s => s.running())
    }
}
