//! Outcomes: the one terminal result every accepted job reaches.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::handler::BoxError;
use crate::job::{Job, JobId};

/// How a job ended. Every accepted job reaches exactly one.
///
/// `T` is what the handler returns on success (`()` unless it returns a
/// value); a [`JobHandle`](crate::JobHandle) yields it in `Succeeded`.
pub enum Outcome<P = Bytes, T = ()> {
    /// The handler returned `Ok`.
    Succeeded {
        /// What the handler returned.
        value: T,
        /// Attempts made, the successful one included.
        attempts: u32,
    },
    /// The handler returned an error on its last attempt.
    Failed {
        /// The last attempt's error.
        error: BoxError,
        /// Attempts made.
        attempts: u32,
    },
    /// The handler panicked on its last attempt. The worker went on.
    Panicked {
        /// The panic message (`"<non-string panic payload>"` if it was not text).
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The last attempt passed its deadline.
    TimedOut {
        /// The error the handler returned after its deadline; `None` when it
        /// did not stop within the grace period and was given up on.
        error: Option<BoxError>,
        /// Attempts made.
        attempts: u32,
    },
    /// The job was cancelled through its handle, or stopped at shutdown after
    /// its signal fired.
    Cancelled {
        /// The error the handler returned after the signal; `None` when the
        /// job was cancelled before it ran.
        error: Option<BoxError>,
        /// Attempts made (0 if it was cancelled before it ran).
        attempts: u32,
    },
    /// The job did not (again) run because the pool shut down: it comes back so
    /// it can be stored and retried later.
    Unstarted {
        /// The job itself, as submitted.
        job: Job<P>,
        /// Attempts already made (non-zero for a job that was waiting to retry).
        attempts: u32,
    },
    /// The job ignored its cancellation signal past the grace period and was
    /// given up on at shutdown. A blocking handler may still be running on its
    /// own thread; an async one has been dropped.
    Abandoned {
        /// Attempts made.
        attempts: u32,
    },
}

impl<P, T> Outcome<P, T> {
    /// The kind of outcome, without its data.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Succeeded { .. } => OutcomeKind::Succeeded,
            Outcome::Failed { .. } => OutcomeKind::Failed,
            Outcome::Panicked { .. } => OutcomeKind::Panicked,
            Outcome::TimedOut { .. } => OutcomeKind::TimedOut,
            Outcome::Cancelled { .. } => OutcomeKind::Cancelled,
            Outcome::Unstarted { .. } => OutcomeKind::Unstarted,
            Outcome::Abandoned { .. } => OutcomeKind::Abandoned,
        }
    }

    /// Attempts made.
    pub fn attempts(&self) -> u32 {
        match self {
            Outcome::Succeeded { attempts, .. }
            | Outcome::Failed { attempts, .. }
            | Outcome::Panicked { attempts, .. }
            | Outcome::TimedOut { attempts, .. }
            | Outcome::Cancelled { attempts, .. }
            | Outcome::Unstarted { attempts, .. }
            | Outcome::Abandoned { attempts } => *attempts,
        }
    }

    /// Whether the job succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded { .. })
    }

    /// The job, if it came back unstarted.
    pub fn into_unstarted(self) -> Option<Job<P>> {
        match self {
            Outcome::Unstarted { job, .. } => Some(job),
            _ => None,
        }
    }

    /// What the handler returned, if the job succeeded.
    pub fn into_value(self) -> Option<T> {
        match self {
            Outcome::Succeeded { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The error of the last attempt: a failure's, or the one a timed-out or
    /// cancelled attempt returned.
    pub fn error(&self) -> Option<&BoxError> {
        match self {
            Outcome::Failed { error, .. } => Some(error),
            Outcome::TimedOut { error, .. } | Outcome::Cancelled { error, .. } => error.as_ref(),
            _ => None,
        }
    }

    /// The same outcome with the success value dropped: what a caller that
    /// only counts outcomes needs.
    pub fn without_value(self) -> Outcome<P> {
        match self {
            Outcome::Succeeded { attempts, .. } => Outcome::Succeeded {
                value: (),
                attempts,
            },
            Outcome::Failed { error, attempts } => Outcome::Failed { error, attempts },
            Outcome::Panicked { message, attempts } => Outcome::Panicked { message, attempts },
            Outcome::TimedOut { error, attempts } => Outcome::TimedOut { error, attempts },
            Outcome::Cancelled { error, attempts } => Outcome::Cancelled { error, attempts },
            Outcome::Unstarted { job, attempts } => Outcome::Unstarted { job, attempts },
            Outcome::Abandoned { attempts } => Outcome::Abandoned { attempts },
        }
    }
}

impl<P, T> fmt::Debug for Outcome<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Failed { error, attempts } => f
                .debug_struct("Failed")
                .field("error", &error.to_string())
                .field("attempts", attempts)
                .finish(),
            Outcome::Panicked { message, attempts } => f
                .debug_struct("Panicked")
                .field("message", message)
                .field("attempts", attempts)
                .finish(),
            Outcome::Unstarted { job, attempts } => f
                .debug_struct("Unstarted")
                .field("job", job)
                .field("attempts", attempts)
                .finish(),
            Outcome::TimedOut {
                error: Some(error),
                attempts,
            }
            | Outcome::Cancelled {
                error: Some(error),
                attempts,
            } => f
                .debug_struct(self.kind().as_str())
                .field("error", &error.to_string())
                .field("attempts", attempts)
                .finish(),
            other => f
                .debug_struct(other.kind().as_str())
                .field("attempts", &other.attempts())
                .finish(),
        }
    }
}

impl<P, T> fmt::Display for Outcome<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Failed { error, attempts } => {
                write!(f, "failed after {attempts} attempt(s): {error}")
            }
            Outcome::Panicked { message, .. } => write!(f, "panicked: {message}"),
            other => f.write_str(other.kind().as_str()),
        }
    }
}

/// The kind of an [`Outcome`], without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutcomeKind {
    /// See [`Outcome::Succeeded`].
    Succeeded,
    /// See [`Outcome::Failed`].
    Failed,
    /// See [`Outcome::Panicked`].
    Panicked,
    /// See [`Outcome::TimedOut`].
    TimedOut,
    /// See [`Outcome::Cancelled`].
    Cancelled,
    /// See [`Outcome::Unstarted`].
    Unstarted,
    /// See [`Outcome::Abandoned`].
    Abandoned,
}

impl OutcomeKind {
    /// Every kind, in declaration order.
    pub const ALL: [OutcomeKind; 7] = [
        OutcomeKind::Succeeded,
        OutcomeKind::Failed,
        OutcomeKind::Panicked,
        OutcomeKind::TimedOut,
        OutcomeKind::Cancelled,
        OutcomeKind::Unstarted,
        OutcomeKind::Abandoned,
    ];

    /// A lowercase name: `"succeeded"`, `"timed_out"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Succeeded => "succeeded",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Panicked => "panicked",
            OutcomeKind::TimedOut => "timed_out",
            OutcomeKind::Cancelled => "cancelled",
            OutcomeKind::Unstarted => "unstarted",
            OutcomeKind::Abandoned => "abandoned",
        }
    }

    /// Whether the job did not run to an end of its own: cancelled, unstarted or
    /// abandoned. These are the ones a shutdown report names.
    pub fn is_unfinished(self) -> bool {
        matches!(
            self,
            OutcomeKind::Cancelled | OutcomeKind::Unstarted | OutcomeKind::Abandoned
        )
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A finished job as the outcome hook sees it: its ID, its outcome, and the
/// time from the start of its first attempt to its end (zero for a job that
/// never ran).
pub struct Completion<P = Bytes, T = ()> {
    id: JobId,
    outcome: Outcome<P, T>,
    duration: Duration,
}

impl<P, T> Completion<P, T> {
    pub(crate) fn new(id: JobId, outcome: Outcome<P, T>, duration: Duration) -> Self {
        Completion {
            id,
            outcome,
            duration,
        }
    }

    /// The job's ID.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// How it ended.
    pub fn outcome(&self) -> &Outcome<P, T> {
        &self.outcome
    }

    /// Wall time from the first attempt's start to the outcome.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    pub(crate) fn into_parts(self) -> (JobId, Outcome<P, T>) {
        (self.id, self.outcome)
    }
}

impl<P, T> fmt::Debug for Completion<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("id", &self.id)
            .field("outcome", &self.outcome)
            .field("duration", &self.duration)
            .finish()
    }
}

/// A job that did not run to an end of its own during shutdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotFinished {
    /// The job's ID.
    pub id: JobId,
    /// Why: `Cancelled`, `Unstarted` or `Abandoned`.
    pub outcome: OutcomeKind,
    /// Attempts made.
    pub attempts: u32,
}

/// A job handed back unstarted, with the attempts it had already made.
pub struct UnstartedJob<P = Bytes> {
    /// The job, as submitted.
    pub job: Job<P>,
    /// Attempts already made (non-zero if it was waiting to retry).
    pub attempts: u32,
}

impl<P> fmt::Debug for UnstartedJob<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnstartedJob")
            .field("job", &self.job)
            .field("attempts", &self.attempts)
            .finish()
    }
}
