//! A PostgreSQL for tests: the machine's server (`WORKPOOL_PG_URL`, by
//! default `postgres://postgres@127.0.0.1:5432/test`), a schema of its own
//! per test, dropped afterwards. Without a reachable server a test skips
//! with one line, except in CI (`CI=true`), where that fails it.

// File locks are Rust 1.89; the `postgres` feature needs 1.94 (sqlx 0.9)
// anyway, above the crate's 1.88 without it.
#![allow(clippy::incompatible_msrv)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use workpool::store::postgres::{PgOptions, PgStore};

pub fn url() -> String {
    std::env::var("WORKPOOL_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `host:port` of [`url`].
pub fn upstream() -> String {
    let u = url();
    let after = u.split_once('@').map_or(u.as_str(), |(_, a)| a);
    let after = after.split_once("://").map_or(after, |(_, a)| a);
    after.split(['/', '?']).next().unwrap().to_string()
}

/// [`url`] through a local port (a [`Proxy`](super::proxy::Proxy)).
pub fn url_via(port: u16) -> String {
    url().replacen(&upstream(), &format!("127.0.0.1:{port}"), 1)
}

/// A schema for one test, dropped when this is.
pub struct TestSchema {
    pub name: String,
    /// Held shared while the test runs; a test that restarts the server
    /// holds it alone (see [`TestSchema::alone`]).
    _lock: std::fs::File,
}

fn lock_file() -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("workpool-pg-tests.lock"))
        .unwrap()
}

impl TestSchema {
    /// `None` (after one line on stderr) if no server answers and this is
    /// not CI.
    pub async fn new(test: &str) -> Option<Self> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "wpt_{}_{}_{}",
            test.chars().take(20).collect::<String>(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let connect = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url()));
        match connect.await {
            Ok(Ok(mut conn)) => {
                drop_left_behind(&mut conn).await;
                let _ = conn.close().await;
            }
            Ok(Err(e)) if !in_ci() => {
                eprintln!("skipped: no PostgreSQL at {} ({e})", url());
                return None;
            }
            Err(_) if !in_ci() => {
                eprintln!("skipped: no PostgreSQL answered at {}", url());
                return None;
            }
            Ok(Err(e)) => panic!("CI=true and no PostgreSQL at {}: {e}", url()),
            Err(_) => panic!("CI=true and no PostgreSQL answered at {}", url()),
        }
        let lock = lock_file();
        lock.lock_shared().unwrap();
        Some(TestSchema { name, _lock: lock })
    }

    /// As [`new`](Self::new), for a test that disturbs the whole server:
    /// it waits until no other test uses the server, and others wait for it.
    #[allow(dead_code)]
    pub async fn alone(test: &str) -> Option<Self> {
        let s = Self::new(test).await?;
        s._lock.unlock().unwrap();
        s._lock.lock().unwrap();
        Some(s)
    }

    pub fn options(&self) -> PgOptions {
        PgStore::options(&url())
            .schema(&self.name)
            .poll_interval(Duration::from_millis(50))
            .max_connections(4)
    }

    pub async fn open(&self) -> PgStore {
        self.options().open().await.unwrap()
    }

    /// A plain connection, for what a test does behind the store's back.
    pub async fn conn(&self) -> PgConnection {
        PgConnection::connect(&url()).await.unwrap()
    }

    /// Runs `sql` with `S.` standing for the schema.
    pub async fn exec(&self, sql: &str) {
        let mut c = self.conn().await;
        sqlx::raw_sql(AssertSqlSafe(sql.replace("S.", &format!("{}.", self.name))))
            .execute(&mut c)
            .await
            .unwrap();
        let _ = c.close().await;
    }

    /// One row of `sql` (with `S.` as in [`exec`](Self::exec)).
    pub async fn row<T>(&self, sql: &str) -> T
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let mut c = self.conn().await;
        let v = sqlx::query_as(AssertSqlSafe(sql.replace("S.", &format!("{}.", self.name))))
            .fetch_one(&mut c)
            .await
            .unwrap();
        let _ = c.close().await;
        v
    }

    /// One value of `sql` (with `S.` as in [`exec`](Self::exec)).
    pub async fn scalar<T>(&self, sql: &str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        let mut c = self.conn().await;
        let v = sqlx::query_scalar(AssertSqlSafe(sql.replace("S.", &format!("{}.", self.name))))
            .fetch_one(&mut c)
            .await
            .unwrap();
        let _ = c.close().await;
        v
    }
}

/// Drops the schemas of test processes that are gone (killed before they
/// could drop their own): `wpt_{test}_{pid}_{n}`.
async fn drop_left_behind(conn: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'wpt\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name.rsplit('_').nth(1).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A runtime of its own: this may run inside another's.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = PgConnection::connect(&url()).await {
                    let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {name} CASCADE"
                    )))
                    .execute(&mut c)
                    .await;
                }
            });
        })
        .join();
    }
}
