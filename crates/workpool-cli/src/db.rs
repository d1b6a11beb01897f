//! Where a job store is (`--db`): a SQLite file, or a PostgreSQL database
//! given by a `postgres://` URL; and the store opened there, with the calls
//! the subcommands make, the same for both.

use std::fmt;
use std::path::PathBuf;

use workpool::store::postgres::{PgStore, redact};
use workpool::store::sqlite::SqliteStore;
use workpool::store::{Durable, Enqueued, JobRow, NewJob, StateCount};

/// A `--db` value.
#[derive(Clone)]
pub enum Target {
    File(PathBuf),
    Postgres(String),
}

// A URL may hold a password: clap's and our own `Debug` show it redacted.
impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::File(p) => write!(f, "{}", p.display()),
            Target::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// Parses `--db`: a URL starting `postgres://` or `postgresql://`, or a file.
pub fn parse_target(text: &str) -> Result<Target, String> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(Target::Postgres(text.to_string()));
    }
    if text.contains("://") {
        return Err(format!(
            "{}: only postgres:// URLs (or a SQLite file) are job stores",
            redact(text)
        ));
    }
    if text.is_empty() {
        return Err("an empty path".into());
    }
    Ok(Target::File(PathBuf::from(text)))
}

/// A job store opened for the CLI.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Calls `$e` on whichever store `$self` is, bound to `$s`; errors as text.
macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e.map_err(|e| e.to_string()),
            Store::Postgres($s) => $e.map_err(|e| e.to_string()),
        }
    };
}

/// How to open a store.
pub struct Open<'a> {
    pub target: &'a Target,
    pub queue: &'a str,
    pub schema: &'a str,
    /// A SQLite file that does not exist is created (else an error).
    pub create: bool,
    /// How long claims stay leased without a heartbeat (the store's
    /// default if `None`).
    pub lease: Option<std::time::Duration>,
}

impl Store {
    pub async fn open(o: Open<'_>) -> Result<Store, String> {
        match o.target {
            Target::File(path) => {
                if !o.create && !path.exists() {
                    return Err(format!("no job store at {}", path.display()));
                }
                if o.schema != DEFAULT_SCHEMA {
                    return Err("--schema is for PostgreSQL stores, not a SQLite file".into());
                }
                let mut options = SqliteStore::options(path).queue(o.queue);
                if let Some(lease) = o.lease {
                    options = options.lease(lease);
                }
                options.open().map(Store::Sqlite).map_err(|e| e.to_string())
            }
            Target::Postgres(url) => {
                let mut options = PgStore::options(url).schema(o.schema).queue(o.queue);
                if let Some(lease) = o.lease {
                    options = options.lease(lease);
                }
                options
                    .open()
                    .await
                    .map(Store::Postgres)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The store for `PoolBuilder::store`.
    pub fn durable(&self) -> Durable {
        match self {
            Store::Sqlite(s) => s.clone().into(),
            Store::Postgres(s) => s.clone().into(),
        }
    }

    pub async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<u64>, String> {
        each!(self, s => s.enqueue(jobs).await)
    }

    pub async fn enqueue_unique(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, String> {
        each!(self, s => s.enqueue_unique(jobs).await)
    }

    pub async fn counts(&self) -> Result<Vec<StateCount>, String> {
        each!(self, s => s.counts().await)
    }

    pub async fn jobs(&self, state: Option<&str>, limit: usize) -> Result<Vec<JobRow>, String> {
        each!(self, s => s.jobs(state, limit).await)
    }

    pub async fn oldest_ready(&self) -> Result<Option<JobRow>, String> {
        each!(self, s => s.oldest_ready().await)
    }

    pub async fn cancel(&self, id: u64) -> Result<bool, String> {
        each!(self, s => s.cancel(id).await)
    }

    pub async fn cancel_all(&self, state: &str) -> Result<u64, String> {
        each!(self, s => s.cancel_all(state).await)
    }

    pub async fn retry(&self, id: u64) -> Result<bool, String> {
        each!(self, s => s.retry(id).await)
    }

    pub async fn retry_all(&self, state: &str) -> Result<u64, String> {
        each!(self, s => s.retry_all(state).await)
    }

    /// Writes what is pending and (PostgreSQL) leaves the owners table at
    /// once instead of when its lease runs out.
    pub async fn close(&self) -> Result<(), String> {
        match self {
            Store::Sqlite(s) => s.flush().await.map_err(|e| e.to_string()),
            Store::Postgres(s) => s.close().await.map_err(|e| e.to_string()),
        }
    }

    /// [`close`](Self::close) at the end of a run: a failure is said, not
    /// returned (the run's own status stands).
    pub async fn close_or_say(&self) {
        if let Err(e) = self.close().await {
            crate::report::say(&format!("workpool: {e}\n"));
        }
    }
}

/// The schema PostgreSQL stores use unless `--schema` says otherwise.
pub const DEFAULT_SCHEMA: &str = "workpool";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_files_or_postgres_urls_and_show_no_password() {
        let t = parse_target("postgres://u:pw@h/db").unwrap();
        assert!(matches!(t, Target::Postgres(_)));
        assert_eq!(t.to_string(), "postgres://u:***@h/db");
        assert_eq!(format!("{t:?}"), "postgres://u:***@h/db");
        assert!(matches!(parse_target("jobs.db").unwrap(), Target::File(_)));
        let e = parse_target("mysql://u:pw@h/db").unwrap_err();
        assert!(e.contains("only postgres://") && !e.contains("pw"), "{e}");
    }
}
