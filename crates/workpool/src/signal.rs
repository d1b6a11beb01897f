//! Turns SIGINT/SIGTERM (Ctrl-C on Windows) into a graceful shutdown.

use std::io;
use std::time::Duration;

use crate::lifecycle::report::ShutdownReport;
use crate::pool::Pool;

/// Which signal arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    /// The exit status a shell expects after this signal: 130 or 143.
    pub fn exit_code(self) -> i32 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

/// Listens for SIGINT and SIGTERM from the moment it is created.
struct Listener {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Listener {
    fn new() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Listener {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Listener {})
    }

    async fn recv(&mut self) -> io::Result<Signal> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => Ok(Signal::Interrupt),
                _ = self.term.recv() => Ok(Signal::Terminate),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await?;
            Ok(Signal::Interrupt)
        }
    }
}

/// Runs until SIGINT or SIGTERM, then shuts `pool` down gracefully with
/// `timeout` (see [`Pool::shutdown`]). A second signal during the shutdown
/// cancels running jobs at once ([`Pool::cancel_running`]). Returns the first
/// signal and the report.
///
/// Signal handlers are installed when this is first polled; until then a
/// signal has its default effect.
///
/// # Errors
///
/// When the signal handlers cannot be installed.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use workpool::{Job, Pool};
///
/// let pool = Pool::builder().build(|_job: Job, _ctx| async { Ok::<_, std::io::Error>(()) })?;
/// let (signal, report) = workpool::signal::shutdown_on_signal(&pool, Duration::from_secs(30)).await?;
/// eprintln!("{report}");
/// std::process::exit(signal.exit_code());
/// # }
/// ```
pub async fn shutdown_on_signal<P: Send + 'static, T: Send + 'static>(
    pool: &Pool<P, T>,
    timeout: Duration,
) -> io::Result<(Signal, ShutdownReport<P>)> {
    let mut listener = Listener::new()?;
    let first = listener.recv().await?;
    tracing::info!(target: "workpool", ?first, "signal received: shutting down; send another to cancel running jobs");
    let shutdown = pool.shutdown(timeout);
    tokio::pin!(shutdown);
    tokio::select! {
        report = &mut shutdown => return Ok((first, report)),
        second = listener.recv() => {
            tracing::warn!(target: "workpool", second = ?second.ok(), "second signal: cancelling running jobs");
            pool.cancel_running();
        }
    }
    Ok((first, shutdown.await))
}
