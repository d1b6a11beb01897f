//! Handlers: the user's code that does the work, async or blocking.

use std::error::Error;
use std::fmt;
use std::future::Future;

use crate::context::JobContext;
use crate::job::Job;

/// A boxed error, `Send + Sync`: what every handler error is turned into.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Work done for each job, as a type.
///
/// Closures need not implement this: pass them to
/// [`PoolBuilder::build`](crate::PoolBuilder::build). Implement it when the
/// handler carries state or you want to name its type; then use
/// [`PoolBuilder::build_handler`](crate::PoolBuilder::build_handler).
///
/// The error may be any `E: Error + Send + Sync + 'static`, a [`BoxError`], or
/// anything else that turns into one (`String`, `&'static str`, `anyhow::Error`).
/// On success it returns its [`Output`](Handler::Output), usually `()`; a
/// [`JobHandle`](crate::JobHandle) yields it, a detached job drops it after
/// the outcome hook has seen it.
///
/// # Examples
///
/// ```
/// use workpool::{Handler, Job, JobContext};
///
/// struct Resize { max_side: u32 }
///
/// impl Handler<bytes::Bytes> for Resize {
///     type Output = u32;
///     type Error = std::io::Error;
///     async fn call(&self, job: Job, _ctx: JobContext) -> Result<u32, std::io::Error> {
///         Ok(self.max_side.min(job.payload().len() as u32))
///     }
/// }
/// ```
pub trait Handler<P>: Send + Sync + 'static {
    /// What a successful attempt returns.
    type Output: Send + 'static;
    /// The error an attempt may return.
    type Error: Into<BoxError>;

    /// Runs one attempt of `job`.
    fn call(
        &self,
        job: Job<P>,
        ctx: JobContext,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;
}

/// Adapts a closure returning a future into a [`Handler`].
pub(crate) struct FnHandler<F>(pub(crate) F);

impl<P, F, Fut, T, E> Handler<P> for FnHandler<F>
where
    F: Fn(Job<P>, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send,
    T: Send + 'static,
    E: Into<BoxError>,
{
    type Output = T;
    type Error = E;

    fn call(&self, job: Job<P>, ctx: JobContext) -> impl Future<Output = Result<T, E>> + Send {
        (self.0)(job, ctx)
    }
}

/// An error that must not be retried, whatever the retry policy says.
///
/// Made by [`permanent`]; its `Display` is the wrapped error's.
#[derive(Debug)]
pub struct Permanent(BoxError);

impl Permanent {
    /// The wrapped error.
    pub fn into_inner(self) -> BoxError {
        self.0
    }

    /// The wrapped error, by reference (to downcast it).
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for Permanent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for Permanent {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// Marks an error as permanent: the job fails at once, without retries.
///
/// # Examples
///
/// ```
/// use workpool::{permanent, BoxError, Job, JobContext};
///
/// async fn handle(job: Job, _ctx: JobContext) -> Result<(), BoxError> {
///     if job.payload().is_empty() {
///         return Err(permanent("empty payload").into());
///     }
///     Ok(())
/// }
/// ```
pub fn permanent(error: impl Into<BoxError>) -> Permanent {
    Permanent(error.into())
}

/// Whether an error was marked with [`permanent`].
pub(crate) fn is_permanent(error: &BoxError) -> bool {
    error.downcast_ref::<Permanent>().is_some()
}
