//! The pool's side of a durable store: claims fetched from the database in
//! batches sized to the idle workers, payloads encoded and decoded, the
//! handles of jobs submitted in this process found again by row, and the
//! count of jobs this process holds (claimed and not yet settled), which is
//! what a shutdown waits for.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU64;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::backend::Backend;
use super::rows::{ClaimedRow, End, NewRow, now_ms};
use super::{Claim, Queued, Refused};
use crate::handler::BoxError;
use crate::job::{Job, JobId};
use crate::outcome::OutcomeKind;
use crate::sync::lock;

/// The most jobs one claim takes.
const MAX_CLAIM: usize = 256;

pub(crate) struct DurableStore<P> {
    db: Backend,
    encode: fn(&P) -> Vec<u8>,
    decode: fn(&[u8]) -> Result<P, BoxError>,
    /// Attempts a job gets, from the pool's retry policy.
    max_attempts: u32,
    local: Mutex<Local<P>>,
    /// Wakes claimers waiting for the poller's fetch.
    wake: Notify,
    /// Wakes the poller: a job was enqueued here, or the store closed.
    poke: Notify,
    /// Told whenever what a shutdown waits for changes here: a claimed job
    /// is settled, or a fetch finds the file has nothing more ready.
    changed: Notify,
    closed: AtomicBool,
}

struct Local<P> {
    /// Claimed, not yet started.
    buffer: VecDeque<Queued<P>>,
    /// A claimer is the poller (see `claim`).
    polling: bool,
    /// Claimers waiting for a fetch.
    waiting: usize,
    /// The database may hold available jobs: the last fetch came back full,
    /// or this process enqueued since.
    more: bool,
    /// Row → the ticket of its handle, for jobs submitted here.
    tickets: HashMap<i64, NonZeroU64>,
    /// Row → the attempt its claim made.
    claimed: HashMap<i64, u32>,
    /// Jobs with a handle here waiting in the file to retry: if the pool
    /// stops first, their handles get them back as unstarted.
    retrying: HashMap<i64, Queued<P>>,
}

fn row_of(id: &JobId) -> i64 {
    id.as_u64().map_or(0, |n| n as i64)
}

impl<P> DurableStore<P> {
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
        self.poke.notify_one();
    }
}

impl<P: Send + 'static> DurableStore<P> {
    pub(crate) fn new(
        db: Backend,
        encode: fn(&P) -> Vec<u8>,
        decode: fn(&[u8]) -> Result<P, BoxError>,
        max_attempts: u32,
    ) -> Self {
        DurableStore {
            db,
            encode,
            decode,
            max_attempts: max_attempts.max(1),
            local: Mutex::new(Local {
                buffer: VecDeque::new(),
                polling: false,
                waiting: 0,
                more: true,
                tickets: HashMap::new(),
                claimed: HashMap::new(),
                retrying: HashMap::new(),
            }),
            wake: Notify::new(),
            poke: Notify::new(),
            changed: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Writes a job in; returns its row as its new ID once committed.
    pub(crate) async fn enqueue(&self, q: Queued<P>) -> Result<JobId, Refused<Queued<P>>> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Refused::Closed(q));
        }
        let max_attempts = q
            .job
            .retry
            .as_ref()
            .map_or(self.max_attempts, |r| r.policy.max_attempts());
        let row = NewRow {
            queue: self.db.queue().to_string(),
            payload: (self.encode)(&q.job.payload),
            max_attempts,
            priority: 0,
            run_at: now_ms(),
            timeout_ms: q.job.timeout.map(|t| t.as_millis() as i64),
            unique_key: None,
            ticket: q.ticket.map(NonZeroU64::get),
        };
        match self.db.insert(vec![row]).await {
            Ok(found) => {
                let id = found[0].id;
                let mut local = lock(&self.local);
                if let Some(ticket) = q.ticket {
                    local.tickets.insert(id, ticket);
                }
                local.more = true;
                drop(local);
                self.poke.notify_one();
                Ok(JobId::from(id as u64))
            }
            Err(e) => {
                tracing::error!(target: "workpool", error = %e, "the job store could not keep a job");
                Err(Refused::Failed(q))
            }
        }
    }

    pub(crate) fn try_claim(&self) -> Option<Queued<P>> {
        lock(&self.local).buffer.pop_front()
    }

    /// Waits for a job: from the buffer, or fetched. One claimer at a time
    /// is the poller: it fetches for everyone waiting, and when the file has
    /// nothing ready it sleeps a poll interval (or until this process
    /// enqueues) and fetches again. The others sleep until a fetch brings
    /// jobs, the poller hands its role on, or the store closes, so idle
    /// workers cost one query per poll interval, however many they are.
    pub(crate) async fn claim(&self, interrupted: impl Fn() -> bool) -> Claim<P> {
        let mut poller = false;
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let fetch = {
                let mut local = lock(&self.local);
                let done = if let Some(q) = local.buffer.pop_front() {
                    Some(Claim::Job(q))
                } else if self.closed.load(Ordering::SeqCst) {
                    Some(Claim::Closed)
                } else if interrupted() {
                    Some(Claim::Interrupted)
                } else {
                    None
                };
                if let Some(claim) = done {
                    if poller {
                        // Another waiter takes the role on.
                        local.polling = false;
                        drop(local);
                        self.wake.notify_one();
                    }
                    return claim;
                }
                if poller || !local.polling {
                    local.polling = true;
                    poller = true;
                    Some((local.waiting + 1).min(MAX_CLAIM))
                } else {
                    local.waiting += 1;
                    None
                }
            };
            match fetch {
                Some(n) => {
                    if self.fetch(n).await == 0 {
                        // Nothing ready. `poke` keeps an enqueue's wake-up
                        // for a poller that was busy polling; `arrivals`
                        // tells of other processes' enqueues, where the
                        // database can.
                        let poll = self.db.poll_interval();
                        let arrived = async {
                            match self.db.arrivals() {
                                Some(n) => n.notified().await,
                                None => std::future::pending().await,
                            }
                        };
                        let _ = tokio::time::timeout(poll, async {
                            tokio::select! {
                                () = self.poke.notified() => {}
                                () = arrived => {}
                            }
                        })
                        .await;
                    }
                }
                None => {
                    notified.await;
                    lock(&self.local).waiting -= 1;
                }
            }
        }
    }

    /// Claims up to `n` jobs into the buffer; how many it got.
    async fn fetch(&self, n: usize) -> usize {
        let rows = self.db.claim(self.db.queue(), n).await;
        let rows = rows.unwrap_or_else(|e| {
            tracing::error!(target: "workpool", error = %e, "the job store could not claim jobs");
            Vec::new()
        });
        let got = rows.len();
        let mut local = lock(&self.local);
        local.more = got == n;
        for row in rows {
            if let Some(q) = self.to_queued(row, &mut local) {
                local.buffer.push_back(q);
            }
        }
        drop(local);
        // Wake the other waiting claimers only for jobs: woken for nothing,
        // they would each fetch in turn, without pause.
        if got > 0 {
            self.wake.notify_waiters();
        } else {
            // The file has nothing ready: a draining shutdown may be done.
            self.changed.notify_waiters();
        }
        got
    }

    /// A claimed row as a job for a worker; a payload that cannot be decoded
    /// ends the job failed at once.
    fn to_queued(&self, row: ClaimedRow, local: &mut Local<P>) -> Option<Queued<P>> {
        let payload = match (self.decode)(&row.payload) {
            Ok(p) => p,
            Err(e) => {
                let end = End::Failed(format!("the payload cannot be decoded: {e}"));
                let _ = self.db.end(row.id, row.attempt, end);
                return None;
            }
        };
        local.claimed.insert(row.id, row.attempt);
        local.retrying.remove(&row.id);
        lock(self.db.running()).insert(row.id, Default::default());
        let mut job = Job::with_id(row.id as u64, payload);
        job.timeout = row.timeout_ms.map(|ms| Duration::from_millis(ms as u64));
        // The row has the ticket: the enqueue that put it in the map may
        // not have returned yet.
        let ticket = row.ticket.and_then(NonZeroU64::new);
        if let Some(t) = ticket {
            local.tickets.insert(row.id, t);
        }
        Some(match row.attempt {
            0 | 1 => Queued::new(job, ticket),
            n => Queued::again(job, ticket, n - 1, None),
        })
    }

    /// A claimed job is settled here: it no longer counts as held.
    fn settle(&self, row: i64, forget_ticket: bool) -> u32 {
        let mut local = lock(&self.local);
        let attempt = local.claimed.remove(&row).unwrap_or(0);
        if forget_ticket {
            local.tickets.remove(&row);
        }
        drop(local);
        lock(self.db.running()).remove(&row);
        self.changed.notify_waiters();
        attempt
    }

    fn end(&self, id: i64, attempt: u32, end: End) {
        if self.db.end(id, attempt, end).is_err() {
            tracing::error!(target: "workpool", id, "the job store is closed: the job's end is not recorded; it runs again");
        }
    }

    pub(crate) fn complete(
        &self,
        id: &JobId,
        attempt: u32,
        kind: OutcomeKind,
        error: Option<String>,
        shutdown: bool,
    ) {
        let row = row_of(id);
        self.settle(row, true);
        let text = error.unwrap_or_else(|| kind.as_str().to_string());
        let end = match kind {
            OutcomeKind::Succeeded => End::Completed,
            OutcomeKind::Cancelled | OutcomeKind::Abandoned if shutdown => End::Interrupted(text),
            OutcomeKind::Cancelled => End::Cancelled(text),
            OutcomeKind::Unstarted => End::Unclaim,
            _ => End::Failed(text),
        };
        self.end(row, attempt, end);
    }

    pub(crate) fn retry_at(&self, q: Queued<P>, at: Instant, error: Option<String>) {
        let row = row_of(q.job.id());
        let attempt = self.settle(row, false);
        if q.ticket.is_some() {
            lock(&self.local).retrying.insert(row, q);
        }
        let wait = at.saturating_duration_since(Instant::now());
        let end = End::Retry {
            at: now_ms() + wait.as_millis() as i64,
            error: error.unwrap_or_default(),
        };
        self.end(row, attempt, end);
    }

    /// A claimed job that will not run now goes back to available: its
    /// claim undone if it did not start, its attempt counted if it did.
    pub(crate) fn release(&self, q: &Queued<P>) {
        let row = row_of(q.job.id());
        let attempt = self.settle(row, true);
        let end = if q.attempts() < attempt {
            End::Unclaim
        } else {
            End::Interrupted("stopped by a shutdown".into())
        };
        self.end(row, attempt, end);
    }

    /// A claimed job that was cancelled while it waited.
    pub(crate) fn skipped(&self, q: &Queued<P>) {
        let row = row_of(q.job.id());
        let attempt = self.settle(row, true);
        self.end(
            row,
            attempt,
            End::Cancelled("cancelled while it waited".into()),
        );
    }

    /// A job whose handle cancelled it while it waited in the database.
    pub(crate) fn discard(&self, ticket: NonZeroU64) {
        let mut local = lock(&self.local);
        let row = local
            .tickets
            .iter()
            .find_map(|(row, t)| (*t == ticket).then_some(*row));
        if let Some(row) = row {
            local.tickets.remove(&row);
            // One in the buffer is skipped when a worker takes it.
            if !local.claimed.contains_key(&row) {
                self.db.cancel_waiting(row);
            }
        }
    }

    /// The database may hold ready jobs this process did not put there:
    /// count them as possible until a fetch says otherwise.
    pub(crate) fn look_again(&self) {
        lock(&self.local).more = true;
        self.poke.notify_one();
    }

    pub(crate) fn wake_claimers(&self) {
        self.wake.notify_waiters();
        self.poke.notify_one();
    }

    /// A claimed job that did not start, released to the database, or a
    /// job with a handle here that waits in the file to retry (it stays
    /// there): the caller hands it to its handle as unstarted.
    pub(crate) fn take_left(&self) -> Option<Queued<P>> {
        let mut local = lock(&self.local);
        if let Some(q) = local.buffer.pop_front() {
            drop(local);
            self.release(&q);
            return Some(q);
        }
        let row = *local.retrying.keys().next()?;
        let q = local.retrying.remove(&row)?;
        local.tickets.remove(&row);
        Some(q)
    }

    /// Jobs claimed and waiting here, plus one if the database may hold
    /// more: zero means none is known to be available.
    pub(crate) fn queued(&self) -> usize {
        let local = lock(&self.local);
        local.buffer.len() + usize::from(local.more)
    }

    /// Waits until every end sent so far is committed.
    pub(crate) async fn flush(&self) {
        if let Err(e) = self.db.flush().await {
            tracing::error!(target: "workpool", error = %e, "the job store could not write the last ends: those jobs run again");
        }
    }

    /// The cancel signal a cancel by ID fires for this claimed job; for a
    /// job with a handle, the handle's signal is fired instead.
    pub(crate) fn cancel_ref(
        &self,
        q: &Queued<P>,
        handle: Option<&crate::cancel::CancelRef>,
    ) -> Option<crate::cancel::CancelRef> {
        let running = lock(self.db.running());
        let c = running.get(&row_of(q.job.id()))?;
        match handle {
            Some(h) => {
                c.forward_to(h.clone());
                None
            }
            None => Some(c.clone() as crate::cancel::CancelRef),
        }
    }

    pub(crate) fn held(&self) -> usize {
        lock(&self.local).claimed.len()
    }

    /// See the field `changed`.
    pub(crate) fn changed(&self) -> &Notify {
        &self.changed
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}
