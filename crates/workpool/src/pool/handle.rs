//! `JobHandle`: the caller's end of one job's outcome.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::core::CancelWaiting;
use crate::core::reply::ReplyCell;
use crate::job::JobId;
use crate::outcome::Outcome;

/// Resolves to the job's [`Outcome`], which on success carries what the
/// handler returned; can cancel the job.
///
/// Dropping the handle does not cancel the job: it runs on, and its outcome
/// is still counted and passed to the hook.
///
/// If the runtime that runs the pool is dropped while the job is queued or
/// running, the handle resolves to [`Outcome::Abandoned`] with 0 attempts.
///
/// # Cancel safety
///
/// Awaiting the handle is cancel safe: drop the future, keep the handle,
/// await it again.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use workpool::{Job, Outcome, Pool};
///
/// let pool = Pool::builder().workers(1).build(|job: Job, _ctx| async move {
///     Ok::<_, std::io::Error>(job.payload().len())
/// })?;
/// let handle = pool.submit(Job::new("four".into())).await?;
/// assert!(matches!(handle.await, Outcome::Succeeded { value: 4, .. }));
/// # Ok(()) }
/// ```
#[must_use = "a JobHandle does nothing unless awaited; dropping it does not cancel the job"]
pub struct JobHandle<P = Bytes, T = ()> {
    id: JobId,
    cell: Arc<ReplyCell<P, T>>,
    ticket: NonZeroU64,
    pool: Arc<dyn CancelWaiting>,
    /// The outcome was returned: nothing to tell the cell on drop.
    done: bool,
}

impl<P, T> JobHandle<P, T> {
    pub(crate) fn new(
        id: JobId,
        cell: Arc<ReplyCell<P, T>>,
        ticket: NonZeroU64,
        pool: Arc<dyn CancelWaiting>,
    ) -> Self {
        JobHandle {
            id,
            cell,
            ticket,
            pool,
            done: false,
        }
    }

    /// A durable store gave the job its own ID (its row) when it stored it.
    pub(crate) fn stored_as(&mut self, id: Option<JobId>) {
        if let Some(id) = id {
            self.id = id;
        }
    }

    /// The job's ID.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// Cancels this one job. Still queued or waiting to retry: it never runs
    /// (again) and the handle resolves to [`Outcome::Cancelled`] at once.
    /// Running: its [`JobContext`](crate::JobContext) signal fires; if it
    /// then returns an error it ends `Cancelled`, if it returns `Ok` it ends
    /// `Succeeded`. Already finished: nothing happens.
    pub fn cancel(&self) {
        self.cell.cancel().cancel();
        self.pool.cancel_waiting(self.ticket, &self.id);
    }
}

impl<P, T> Drop for JobHandle<P, T> {
    fn drop(&mut self) {
        if !self.done {
            self.cell.handle_dropped();
        }
    }
}

impl<P, T: 'static> Future for JobHandle<P, T> {
    type Output = Outcome<P, T>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<P, T>> {
        assert!(
            !self.done,
            "a JobHandle was polled after it returned its outcome"
        );
        let polled = self.cell.poll_outcome(cx);
        if polled.is_ready() {
            self.done = true;
        }
        polled
    }
}

impl<P, T> Unpin for JobHandle<P, T> {}

impl<P, T> fmt::Debug for JobHandle<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
