//! The store's tables in their schema: the schema's name (checked, then
//! quoted), the migrations, and every statement the store runs, written
//! once per store with that name in them. Values always travel as bound
//! parameters; the name is the only text put into SQL, and only after
//! [`Schema::new`] accepted it.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, Executor, PgConnection};

use super::PgError;

/// A schema name the store accepted: a lowercase letter or `_`, then
/// lowercase letters, digits and `_`, at most 48 bytes (PostgreSQL keeps 63,
/// and the notification channel adds a suffix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Schema(String);

impl Schema {
    pub(crate) fn new(name: &str) -> Result<Self, PgError> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !first_ok || !rest_ok || name.len() > 48 || name.starts_with("pg_") {
            return Err(PgError::Config(format!(
                "the schema name {name:?} is not allowed: use 1 to 48 lowercase letters, digits and _, starting with a letter or _, not pg_"
            )));
        }
        Ok(Schema(name.to_string()))
    }

    pub(crate) fn name(&self) -> &str {
        &self.0
    }

    /// `"name"`: the name quoted, for SQL.
    fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// The channel enqueues notify and workers listen on.
    pub(crate) fn channel(&self) -> String {
        format!("{}_jobs", self.0)
    }
}

/// The schema, one migration per version, applied in order.
const MIGRATIONS: [&str; 1] = ["
    CREATE TABLE S.jobs (
        id bigserial PRIMARY KEY,
        queue text NOT NULL,
        payload bytea NOT NULL,
        state text NOT NULL CHECK (state IN
            ('available', 'scheduled', 'running', 'retryable', 'completed', 'failed', 'cancelled')),
        attempt integer NOT NULL DEFAULT 0,
        max_attempts integer NOT NULL,
        crashes integer NOT NULL DEFAULT 0,
        cancel_requested boolean NOT NULL DEFAULT false,
        priority integer NOT NULL DEFAULT 0,
        run_at timestamptz NOT NULL DEFAULT now(),
        owner bigint,
        claim bigint,
        enqueued_by bigint,
        ticket bigint,
        timeout_ms bigint,
        unique_key text,
        created_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        finished_at timestamptz,
        errors jsonb NOT NULL DEFAULT '[]'
    );
    CREATE INDEX jobs_ready ON S.jobs (queue, priority, run_at, id)
        WHERE state IN ('available', 'scheduled', 'retryable');
    CREATE INDEX jobs_running ON S.jobs (owner) WHERE state = 'running';
    CREATE INDEX jobs_finished ON S.jobs (finished_at)
        WHERE state IN ('completed', 'failed', 'cancelled');
    CREATE UNIQUE INDEX jobs_unique ON S.jobs (queue, unique_key) WHERE unique_key IS NOT NULL;
    CREATE TABLE S.owners (
        id bigserial PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        lease_ms bigint NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        seen_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE S.leader (
        name text PRIMARY KEY,
        owner bigint NOT NULL,
        until timestamptz NOT NULL
    );
"];

/// The newest schema version this build knows.
pub(crate) const VERSION: i32 = MIGRATIONS.len() as i32;

/// Creates the schema if needed and applies the migrations it lacks, in one
/// transaction, holding an advisory lock so that processes starting
/// together do not migrate twice. Returns the version it found.
pub(crate) async fn migrate(conn: &mut PgConnection, schema: &Schema) -> Result<i32, PgError> {
    let mut tx = sqlx::Connection::begin(conn).await.map_err(PgError::sql)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('workpool migrate ' || $1))")
        .bind(schema.name())
        .execute(&mut *tx)
        .await
        .map_err(PgError::sql)?;
    let s = schema.quoted();
    let setup = format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    );
    tx.execute(AssertSqlSafe(setup))
        .await
        .map_err(PgError::sql)?;
    let found = current(&mut tx, schema).await?;
    if found > VERSION {
        return Err(PgError::NewerSchema {
            schema: schema.name().to_string(),
            found,
            known: VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute(AssertSqlSafe(sql.replace("S.", &format!("{s}."))))
            .await
            .map_err(PgError::sql)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {s}.migrations (version) VALUES ($1)"
        )))
        .bind(i as i32 + 1)
        .execute(&mut *tx)
        .await
        .map_err(PgError::sql)?;
    }
    tx.commit().await.map_err(PgError::sql)?;
    Ok(found)
}

/// The schema's version: 0 if it has no migrations table.
pub(crate) async fn current(conn: &mut PgConnection, schema: &Schema) -> Result<i32, PgError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'migrations')",
    )
    .bind(schema.name())
    .fetch_one(&mut *conn)
    .await
    .map_err(PgError::sql)?;
    if !exists {
        return Ok(0);
    }
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT coalesce(max(version), 0) FROM {}.migrations",
        schema.quoted()
    )))
    .fetch_one(&mut *conn)
    .await
    .map_err(PgError::sql)
}

/// A statement's text, cheap to clone.
pub(crate) type Text = Arc<str>;

/// Every statement the store runs, with the schema's name in it.
pub(crate) struct Sql {
    pub(crate) insert: Text,
    pub(crate) insert_plain: Text,
    pub(crate) existing: Text,
    pub(crate) claim: Text,
    pub(crate) end: Text,
    pub(crate) cancel_waiting: Text,
    pub(crate) cancel_running: Text,
    pub(crate) cancels_asked: Text,
    pub(crate) retry: Text,
    pub(crate) counts: Text,
    pub(crate) jobs: Text,
    pub(crate) oldest_ready: Text,
    pub(crate) prune: Text,
    pub(crate) register: Text,
    pub(crate) heartbeat: Text,
    pub(crate) reregister: Text,
    pub(crate) deregister: Text,
    pub(crate) lead: Text,
    pub(crate) rescue: Text,
    pub(crate) schedule: Text,
    pub(crate) release_own: Text,
    pub(crate) undo_claim: Text,
    pub(crate) vacuum: Text,
}

impl Sql {
    pub(crate) fn new(schema: &Schema) -> Self {
        let prefix = schema.quoted();
        let t = |sql: &str| -> Text { Arc::from(sql.replace("{s}", &prefix)) };
        Sql {
            insert: t(INSERT),
            insert_plain: t(INSERT_PLAIN),
            existing: t(EXISTING),
            claim: t(CLAIM),
            end: t(END),
            cancel_waiting: t(CANCEL_WAITING),
            cancel_running: t(CANCEL_RUNNING),
            cancels_asked: t(CANCELS_ASKED),
            retry: t(RETRY),
            counts: t(COUNTS),
            jobs: t(JOBS),
            oldest_ready: t(OLDEST_READY),
            prune: t(PRUNE),
            register: t(REGISTER),
            heartbeat: t(HEARTBEAT),
            reregister: t(REREGISTER),
            deregister: t(DEREGISTER),
            lead: t(LEAD),
            rescue: t(RESCUE),
            schedule: t(SCHEDULE),
            vacuum: t(VACUUM),
            undo_claim: t(UNDO_CLAIM),
            release_own: t(RELEASE_OWN),
        }
    }
}

// The statements, `{s}` standing for the quoted schema name.

/// The IDs are drawn first, so that each input row (by its
/// ordinality) knows its own, inserted or not.
const INSERT: &str = "WITH input AS (
                    SELECT nextval('{s}.jobs_id_seq') AS id, i.*
                      FROM unnest($1::text[], $2::bytea[], $3::int[], $4::int[], $5::bigint[], $6::bigint[],
                                  $7::text[], $8::bigint[])
                           WITH ORDINALITY AS i(queue, payload, max_attempts, priority, run_at_ms, timeout_ms,
                                                unique_key, ticket, ord)
                 ), ins AS (
                    INSERT INTO {s}.jobs (id, queue, payload, state, max_attempts, priority, run_at, timeout_ms,
                                          unique_key, ticket, enqueued_by)
                    SELECT id, queue, payload,
                           CASE WHEN run_at_ms IS NOT NULL AND to_timestamp(run_at_ms / 1000.0) > now()
                                THEN 'scheduled' ELSE 'available' END,
                           max_attempts, priority, coalesce(to_timestamp(run_at_ms / 1000.0), now()),
                           timeout_ms, unique_key, ticket, CASE WHEN ticket IS NOT NULL THEN $9::bigint END
                      FROM input ORDER BY ord
                    ON CONFLICT (queue, unique_key) WHERE unique_key IS NOT NULL DO NOTHING
                    RETURNING id
                 )
                 SELECT input.id, ins.id IS NOT NULL FROM input LEFT JOIN ins USING (id) ORDER BY input.ord";

/// Without unique keys every row goes in, and the IDs, drawn in
/// the rows' order, sorted are the input's order.
const INSERT_PLAIN: &str = "INSERT INTO {s}.jobs (queue, payload, state, max_attempts, priority, run_at, timeout_ms,
                                       unique_key, ticket, enqueued_by)
                 SELECT queue, payload,
                        CASE WHEN run_at_ms IS NOT NULL AND to_timestamp(run_at_ms / 1000.0) > now()
                             THEN 'scheduled' ELSE 'available' END,
                        max_attempts, priority, coalesce(to_timestamp(run_at_ms / 1000.0), now()),
                        timeout_ms, unique_key, ticket, CASE WHEN ticket IS NOT NULL THEN $9::bigint END
                   FROM unnest($1::text[], $2::bytea[], $3::int[], $4::int[], $5::bigint[], $6::bigint[],
                               $7::text[], $8::bigint[])
                        WITH ORDINALITY AS i(queue, payload, max_attempts, priority, run_at_ms, timeout_ms,
                                             unique_key, ticket, ord)
                  ORDER BY ord
                 RETURNING id";

const EXISTING: &str =
    "SELECT id, state, payload = $3 FROM {s}.jobs WHERE queue = $1 AND unique_key = $2";

const CLAIM: &str = "UPDATE {s}.jobs SET state = 'running', attempt = attempt + 1, owner = $3, claim = $4,
                        started_at = now()
                  WHERE id IN (SELECT id FROM {s}.jobs
                                WHERE queue = $1 AND state IN ('available', 'scheduled', 'retryable') AND run_at <= now()
                                ORDER BY priority, run_at, id LIMIT $2
                                FOR UPDATE SKIP LOCKED)
                 RETURNING id, payload, attempt, priority, (extract(epoch FROM run_at) * 1000)::bigint, timeout_ms,
                           CASE WHEN enqueued_by = $3 THEN ticket END";

/// Fenced by the attempt: a late end from a rescued attempt
/// changes nothing. The state it must be in (`running`) comes
/// in the batch (`was`), not as a constant: a constant lets the
/// planner walk the partial index of running jobs and match
/// each against the whole batch, which statistics taken while
/// nothing ran make look cheap (0.5 s for 500 ends, measured).
/// Run with sequential scans off (see `tasks::write_batch`).
const END: &str = "UPDATE {s}.jobs AS j SET
                    state = e.state,
                    attempt = j.attempt - e.undo::int,
                    run_at = CASE WHEN e.delay_ms IS NULL THEN j.run_at
                                  ELSE now() + e.delay_ms * interval '1 millisecond' END,
                    finished_at = CASE WHEN e.state IN ('completed', 'failed', 'cancelled') THEN now() END,
                    started_at = CASE WHEN e.undo THEN NULL ELSE j.started_at END,
                    owner = NULL,
                    errors = CASE WHEN e.error IS NULL THEN j.errors ELSE j.errors ||
                        jsonb_build_array(jsonb_build_object('attempt', e.attempt, 'at', now(), 'error', e.error)) END
                   FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::bigint[], $6::bool[],
                               $7::text[])
                        AS e(id, attempt, state, error, delay_ms, undo, was)
                  WHERE j.id = e.id AND j.attempt = e.attempt AND j.state = e.was";

const CANCEL_WAITING: &str = "UPDATE {s}.jobs SET state = 'cancelled', finished_at = now()
                  WHERE ($1::bigint IS NULL OR id = $1) AND ($2::text IS NULL OR state = $2)
                    AND state IN ('available', 'scheduled', 'retryable')";

const CANCEL_RUNNING: &str = "UPDATE {s}.jobs SET cancel_requested = true
                  WHERE ($1::bigint IS NULL OR id = $1) AND ($2::text IS NULL OR state = $2)
                    AND state = 'running'";

const CANCELS_ASKED: &str =
    "SELECT id FROM {s}.jobs WHERE owner = $1 AND state = 'running' AND cancel_requested";

const RETRY: &str = "UPDATE {s}.jobs SET state = 'available', run_at = now(), finished_at = NULL,
                        max_attempts = greatest(max_attempts, attempt + 1), cancel_requested = false
                  WHERE ($1::bigint IS NULL OR id = $1) AND ($2::text IS NULL OR state = $2)
                    AND state IN ('failed', 'cancelled')";

const COUNTS: &str =
    "SELECT queue, state, count(*) FROM {s}.jobs GROUP BY queue, state ORDER BY queue, state";

const JOBS: &str = "SELECT id, queue, state, attempt, max_attempts, priority,
    (extract(epoch FROM run_at) * 1000)::bigint, errors::text FROM {s}.jobs WHERE $1::text IS NULL OR state = $1 ORDER BY id DESC LIMIT $2";

const OLDEST_READY: &str = "SELECT id, queue, state, attempt, max_attempts, priority,
    (extract(epoch FROM run_at) * 1000)::bigint, errors::text FROM {s}.jobs WHERE state IN ('available', 'scheduled', 'retryable') AND run_at <= now()
                  ORDER BY run_at, id LIMIT 1";

const PRUNE: &str = "WITH gone AS (
                    SELECT id FROM {s}.jobs
                     WHERE state IN ('completed', 'failed', 'cancelled') AND finished_at < now() - $1 * interval '1 millisecond'
                     LIMIT 10000)
                 DELETE FROM {s}.jobs WHERE id IN (SELECT id FROM gone)";

const REGISTER: &str =
    "INSERT INTO {s}.owners (host, pid, lease_ms) VALUES ($1, $2, $3) RETURNING id";

const HEARTBEAT: &str = "UPDATE {s}.owners SET seen_at = now() WHERE id = $1";

const REREGISTER: &str = "INSERT INTO {s}.owners (id, host, pid, lease_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO NOTHING";

/// Its lead too, so that the next process need not wait for it.
const DEREGISTER: &str = "WITH led AS (DELETE FROM {s}.leader WHERE owner = $1)
                 DELETE FROM {s}.owners WHERE id = $1";

/// Takes the lead if nobody holds it, it ran out, its owner is
/// gone, or it is ours.
const LEAD: &str = "INSERT INTO {s}.leader (name, owner, until)
                 VALUES ('maintenance', $1, now() + $2 * interval '1 millisecond')
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
                  WHERE {s}.leader.until < now() OR {s}.leader.owner = excluded.owner
                     OR NOT EXISTS (SELECT 1 FROM {s}.owners o WHERE o.id = {s}.leader.owner)
                 RETURNING owner";

/// Owners not seen for their lease are gone; their running jobs
/// go back to available, or end failed at their third such crash (a job
/// that kills its process does not loop forever).
const RESCUE: &str = "WITH gone AS (
                    DELETE FROM {s}.owners WHERE seen_at < now() - lease_ms * interval '1 millisecond'
                    RETURNING id)
                 UPDATE {s}.jobs AS j SET
                    crashes = crashes + 1,
                    state = CASE WHEN crashes + 1 >= 3 THEN 'failed' ELSE 'available' END,
                    finished_at = CASE WHEN crashes + 1 >= 3 THEN now() END,
                    owner = NULL,
                    errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempt, 'at', now(), 'error', $1::text))
                  WHERE state = 'running'
                    AND (owner IN (SELECT id FROM gone)
                         OR NOT EXISTS (SELECT 1 FROM {s}.owners o WHERE o.id = j.owner))
                 RETURNING queue";

const SCHEDULE: &str = "WITH due AS (
                    UPDATE {s}.jobs SET state = 'available'
                     WHERE state IN ('scheduled', 'retryable') AND run_at <= now()
                    RETURNING queue)
                 SELECT DISTINCT queue FROM due";

const VACUUM: &str = "VACUUM (ANALYZE) {s}.jobs";

/// A claim whose answer was lost (the connection dropped): its
/// jobs never reached a worker, so the claim is undone.
const UNDO_CLAIM: &str =
    "UPDATE {s}.jobs SET state = 'available', attempt = attempt - 1, owner = NULL,
                        claim = NULL, started_at = NULL
                  WHERE owner = $1 AND claim = $2 AND state = 'running'";

/// A store closing: what it still holds goes back to available.
const RELEASE_OWN: &str = "UPDATE {s}.jobs SET crashes = crashes + 1, state = 'available', owner = NULL,
                        errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempt, 'at', now(), 'error', $1::text))
                  WHERE owner = $2 AND state = 'running'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        for good in ["workpool", "_x", "jobs_2"] {
            assert_eq!(Schema::new(good).unwrap().name(), good);
        }
        for bad in [
            "",
            "Workpool",
            "2jobs",
            "a-b",
            "a\"; DROP TABLE x; --",
            "pg_catalog",
            &"x".repeat(49),
        ] {
            let e = Schema::new(bad).unwrap_err().to_string();
            assert!(e.contains("not allowed"), "{bad}: {e}");
        }
    }
}
