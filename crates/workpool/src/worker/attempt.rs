//! One attempt: the handler's future raced against the job's deadline (plus
//! the grace period) and the worker's abandon signal, with every panic (in
//! the call, in a poll, in the future's `Drop`) caught and kept to this job.
//!
//! The three futures live in pinned places that the worker's own loop owns
//! (`Places`), and the race only borrows them: a handler's future holds the
//! job, and building the race as one future of its own moved all of it
//! twice per job (`benchmarks/NOTES.md`).

use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::exec::{Attempt, panic_message};

/// How an attempt's race ended.
pub(crate) enum Ended<T> {
    /// The handler came back (or panicked).
    Returned(Attempt<T>),
    /// The deadline and the grace period passed first: given up on.
    GaveUp,
    /// Shutdown abandoned the job; it already has its outcome.
    Abandoned,
}

/// The deadline of one attempt, and how long past it the handler may run.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) deadline: Option<Instant>,
    pub(crate) grace: Duration,
}

/// The pinned places of one attempt: the handler's future, the give-up
/// timer, the abandon signal's future. Each is `None` until needed.
pub(crate) struct Places<'p, 'a, F> {
    pub(crate) run: Pin<&'p mut Option<F>>,
    pub(crate) timer: Pin<&'p mut Option<Sleep>>,
    pub(crate) abandoned: Pin<&'p mut Option<WaitForCancellationFuture<'a>>>,
}

/// Calls the handler (`start` returns its future), writing the future
/// straight into its place. A panic in the call comes back as its message.
#[inline(always)]
pub(crate) fn call<F>(run: Pin<&mut Option<F>>, start: impl FnOnce() -> F) -> Option<String> {
    let mut run = run;
    catch_unwind(AssertUnwindSafe(|| run.set(Some(start()))))
        .err()
        .map(|p| panic_message(&*p))
}

/// Runs the attempt whose future is in `places.run` to its end, then drops
/// that future (a panic in its `Drop` ends the attempt `Panicked`).
///
/// The timer and the abandon signal are built only if the handler does not
/// finish on its first poll: a quick job never touches them. `early` is the
/// message of a panic in the call itself.
pub(crate) async fn race<'a, F, O, T>(
    places: Places<'_, 'a, F>,
    early: Option<String>,
    out: impl Fn(O) -> Attempt<T>,
    limits: Limits,
    abandon: &'a CancellationToken,
    span: &tracing::Span,
) -> Ended<T>
where
    F: Future<Output = O>,
{
    let Places {
        mut run,
        mut timer,
        mut abandoned,
    } = places;
    // Entered around each poll, as `Instrument` would, but only when a
    // subscriber wants the span: a disabled one costs nothing per poll.
    let traced = !span.is_disabled();
    let mut early = early;
    let ended = poll_fn(|cx| {
        let Some(fut) = run.as_mut().as_pin_mut() else {
            let message = early.take().unwrap_or_default();
            return Poll::Ready(Ended::Returned(Attempt::Panicked(message)));
        };
        let entered = traced.then(|| span.enter());
        let polled = catch_unwind(AssertUnwindSafe(|| fut.poll(cx)));
        drop(entered);
        match polled {
            Ok(Poll::Ready(o)) => return Poll::Ready(Ended::Returned(out(o))),
            Err(p) => return Poll::Ready(Ended::Returned(Attempt::Panicked(panic_message(&*p)))),
            Ok(Poll::Pending) => {}
        }
        if abandoned.is_none() {
            abandoned.set(Some(abandon.cancelled()));
        }
        if let Some(a) = abandoned.as_mut().as_pin_mut()
            && a.poll(cx).is_ready()
        {
            return Poll::Ready(Ended::Abandoned);
        }
        if let Some(d) = limits.deadline {
            // None if past what the clock can hold: no give-up then.
            if timer.is_none()
                && let Some(give_up) = d.checked_add(limits.grace)
            {
                timer.set(Some(tokio::time::sleep_until(give_up)));
            }
            if let Some(t) = timer.as_mut().as_pin_mut()
                && t.poll(cx).is_ready()
            {
                return Poll::Ready(Ended::GaveUp);
            }
        }
        Poll::Pending
    })
    .await;

    match catch_unwind(AssertUnwindSafe(|| run.set(None))) {
        Ok(()) => ended,
        // The future panicked while it was dropped. An attempt that came back
        // ends `Panicked`; one given up on or abandoned keeps that ending.
        Err(p) => match ended {
            Ended::Returned(_) => Ended::Returned(Attempt::Panicked(format!(
                "panicked while dropped: {}",
                panic_message(&*p)
            ))),
            other => other,
        },
    }
}
