//! `JobHandle`: the caller's end of one job's outcome.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use std::sync::Arc;

use crate::reply::ReplyCell;

use crate::job::JobId;
use crate::outcome::Outcome;

/// Resolves to the job's [`Outcome`]; can cancel the job.
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
/// let pool = Pool::builder().workers(1).build(|_job: Job, ctx: workpool::JobContext| async move {
///     ctx.cancelled().await;
///     Err::<(), _>("cancelled")
/// })?;
/// let handle = pool.submit(Job::new("slow".into())).await?;
/// handle.cancel();
/// assert!(matches!(handle.await, Outcome::Cancelled { .. }));
/// # Ok(()) }
/// ```
#[must_use = "a JobHandle does nothing unless awaited; dropping it does not cancel the job"]
pub struct JobHandle<P = Bytes> {
    pub(crate) id: JobId,
    pub(crate) cell: Arc<ReplyCell<P>>,
    /// The outcome was returned: nothing to tell the cell on drop.
    pub(crate) done: bool,
}

impl<P> JobHandle<P> {
    /// The job's ID.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// Cancels this one job. Still queued (or waiting to retry): it never runs
    /// (again) and ends [`Outcome::Cancelled`]. Running: its
    /// [`JobContext`](crate::JobContext) signal fires; if it then returns an
    /// error it ends `Cancelled`, if it returns `Ok` it ends `Succeeded`.
    /// Already finished: nothing happens.
    pub fn cancel(&self) {
        self.cell.cancel().cancel();
    }
}

impl<P> Drop for JobHandle<P> {
    fn drop(&mut self) {
        if !self.done {
            self.cell.handle_dropped();
        }
    }
}

impl<P> Future for JobHandle<P> {
    type Output = Outcome<P>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<P>> {
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

impl<P> fmt::Debug for JobHandle<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
