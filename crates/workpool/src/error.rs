//! Errors. Every refusal hands the job back.

use std::fmt;

use crate::job::Job;

macro_rules! job_error {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        pub enum $name<P> {
            $($(#[$vmeta])* $variant(Job<P>)),+
        }

        impl<P> $name<P> {
            /// The job that was refused.
            pub fn into_inner(self) -> Job<P> {
                match self { $($name::$variant(job))|+ => job }
            }

            /// The job that was refused, by reference.
            pub fn job(&self) -> &Job<P> {
                match self { $($name::$variant(job))|+ => job }
            }
        }

        impl<P> fmt::Debug for $name<P> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(job) => f.debug_tuple(stringify!($variant)).field(job.id()).finish()),+
                }
            }
        }

        impl<P> fmt::Display for $name<P> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(job) => write!(f, $text, job.id())),+
                }
            }
        }

        impl<P> std::error::Error for $name<P> {}
    };
}

job_error! {
    /// [`Pool::submit`](crate::Pool::submit) refused the job; it is handed back.
    SubmitError {
        /// The pool is shutting down or shut down.
        Closed => "pool is shut down; job {} was not accepted",
        /// A durable store could not keep the job (a full disk, a failed
        /// write; its error is logged): nothing was stored.
        Store => "the job store could not keep job {}; it was not accepted",
    }
}

job_error! {
    /// [`Pool::try_submit`](crate::Pool::try_submit) refused the job; it is handed back.
    TrySubmitError {
        /// The queue is full.
        Full => "queue is full; job {} was not accepted",
        /// The pool is shutting down or shut down.
        Closed => "pool is shut down; job {} was not accepted",
    }
}

job_error! {
    /// [`Pool::submit_timeout`](crate::Pool::submit_timeout) refused the job; it is handed back.
    SubmitTimeoutError {
        /// No room appeared in the queue before the timeout.
        Timeout => "queue stayed full until the timeout; job {} was not accepted",
        /// The pool is shutting down or shut down.
        Closed => "pool is shut down; job {} was not accepted",
        /// A durable store could not keep the job: nothing was stored.
        Store => "the job store could not keep job {}; it was not accepted",
    }
}

/// A setting given to [`PoolBuilder`](crate::PoolBuilder) cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// `workers(0)`: a pool needs at least one worker.
    #[error("a pool needs at least one worker")]
    ZeroWorkers,
    /// `queue_capacity(0)`: the queue needs room for at least one job.
    #[error("the queue capacity must be at least 1")]
    ZeroCapacity,
    /// `build` was called outside a tokio runtime.
    #[error("workpool must be built inside a tokio runtime")]
    NoRuntime,
}

/// [`Pool::resize`](crate::Pool::resize) could not change the number of workers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResizeError {
    /// A pool needs at least one worker.
    #[error("a pool needs at least one worker")]
    ZeroWorkers,
    /// The pool is shutting down or shut down.
    #[error("pool is shut down")]
    Closed,
}
