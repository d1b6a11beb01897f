//! How a handler is run: inline on the worker's task (async), or on a plain
//! thread of the worker's own (blocking).

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::context::JobContext;
use crate::handler::{BoxError, Handler};
use crate::job::Job;

/// How one attempt's call came back.
pub(crate) enum Attempt<T> {
    Returned(Result<T, BoxError>),
    Panicked(String),
}

/// How a handler is run: on the worker's task (async) or on a thread of its
/// own (blocking). `Local` is per-worker state, e.g. that thread.
///
/// `start` returns the attempt's future and the worker polls it itself,
/// catching a panic in `start` and in every poll: for an async handler that
/// future is the handler's own, with no layer in between (a layer is one more
/// copy of the job per attempt).
pub(crate) trait Exec<P>: Send + Sync + 'static {
    /// What a successful attempt returns.
    type Output: Send + 'static;
    type Local: Send + 'static;
    /// What the attempt's future returns; [`Exec::attempt`] reads it.
    type Out;
    fn local(&self) -> Self::Local;
    fn start<'a>(
        &'a self,
        local: &'a mut Self::Local,
        job: Job<P>,
        ctx: JobContext,
    ) -> impl Future<Output = Self::Out> + Send + 'a;
    fn attempt(out: Self::Out) -> Attempt<Self::Output>;
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Runs an async handler inline on the worker's task: no spawn, no box.
pub(crate) struct AsyncExec<H>(pub(crate) H);

impl<P: Send + 'static, H: Handler<P>> Exec<P> for AsyncExec<H> {
    type Output = H::Output;
    type Local = ();
    type Out = Result<H::Output, H::Error>;

    fn local(&self) {}

    fn start<'a>(
        &'a self,
        _: &'a mut (),
        job: Job<P>,
        ctx: JobContext,
    ) -> impl Future<Output = Self::Out> + Send + 'a {
        self.0.call(job, ctx)
    }

    fn attempt(out: Self::Out) -> Attempt<H::Output> {
        Attempt::Returned(out.map_err(Into::into))
    }
}

/// One attempt for the blocking thread.
type BlockingJob<P> = (Job<P>, JobContext);

/// A worker's blocking thread, as its next attempt finds it.
pub(crate) struct BlockingThread<P, T> {
    jobs: std::sync::mpsc::Sender<BlockingJob<P>>,
    results: tokio::sync::mpsc::Receiver<Attempt<T>>,
}

fn start_thread<P, F, T, E>(f: &Arc<F>) -> std::io::Result<BlockingThread<P, T>>
where
    P: Send + 'static,
    T: Send + 'static,
    F: Fn(Job<P>, JobContext) -> Result<T, E> + Send + Sync + 'static,
    E: Into<BoxError> + 'static,
{
    let (jobs, job_rx) = std::sync::mpsc::channel::<BlockingJob<P>>();
    let (result_tx, results) = tokio::sync::mpsc::channel(1);
    let f = f.clone();
    std::thread::Builder::new()
        .name("workpool-blocking".into())
        .spawn(move || {
            while let Ok((job, ctx)) = job_rx.recv() {
                let attempt = match catch_unwind(AssertUnwindSafe(|| f(job, ctx))) {
                    Ok(r) => Attempt::Returned(r.map_err(Into::into)),
                    Err(p) => Attempt::Panicked(panic_message(&*p)),
                };
                if result_tx.blocking_send(attempt).is_err() {
                    break;
                }
            }
        })?;
    Ok(BlockingThread { jobs, results })
}

/// Runs a blocking handler on a plain thread owned by the worker.
///
/// Not `spawn_blocking`: dropping a tokio runtime waits for blocking tasks, so
/// a handler stuck in a loop there would keep `main` from returning. A plain
/// thread does not hold the process: when `main` returns, it is gone.
///
/// If an attempt is given up on (timeout or shutdown), the worker's future is
/// dropped and with it the thread's handle; the thread finishes that call in
/// the background, sees its channel closed and exits. The next attempt starts
/// a fresh thread, so the worker goes on.
///
/// `T` and `E` name what the closure returns, which its type alone does not.
pub(crate) struct BlockingExec<F, T, E>(pub(crate) Arc<F>, PhantomData<fn() -> (T, E)>);

impl<F, T, E> BlockingExec<F, T, E> {
    pub(crate) fn new(f: F) -> Self {
        BlockingExec(Arc::new(f), PhantomData)
    }
}

impl<P, F, T, E> Exec<P> for BlockingExec<F, T, E>
where
    P: Send + 'static,
    T: Send + 'static,
    F: Fn(Job<P>, JobContext) -> Result<T, E> + Send + Sync + 'static,
    E: Into<BoxError> + 'static,
{
    type Output = T;
    type Local = Option<BlockingThread<P, T>>;
    type Out = Attempt<T>;

    fn local(&self) -> Self::Local {
        None
    }

    fn attempt(out: Attempt<T>) -> Attempt<T> {
        out
    }

    async fn start(&self, local: &mut Self::Local, job: Job<P>, ctx: JobContext) -> Attempt<T> {
        let mut thread = match local.take() {
            Some(t) => t,
            None => match start_thread(&self.0) {
                Ok(t) => t,
                Err(e) => {
                    return Attempt::Returned(Err(format!(
                        "could not start a thread for a blocking handler: {e}"
                    )
                    .into()));
                }
            },
        };
        if thread.jobs.send((job, ctx)).is_err() {
            return Attempt::Panicked("the blocking handler's thread exited".into());
        }
        match thread.results.recv().await {
            Some(attempt) => {
                // Only a thread that answered goes back for the next job.
                *local = Some(thread);
                attempt
            }
            None => Attempt::Panicked("the blocking handler's thread exited".into()),
        }
    }
}
