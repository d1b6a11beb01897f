//! Turns SIGINT/SIGTERM/SIGHUP/SIGQUIT (Ctrl-C on Windows) into a graceful
//! shutdown, and a listener for any set of signals.

use std::io;
use std::time::Duration;

use crate::lifecycle::report::ShutdownReport;
use crate::pool::Pool;

/// Which signal arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// SIGHUP (the terminal went away).
    Hangup,
    /// SIGQUIT (Ctrl-\\).
    Quit,
    /// SIGUSR1.
    User1,
    /// SIGUSR2.
    User2,
    /// SIGALRM.
    Alarm,
}

impl Signal {
    /// The signals that ask a process to stop: SIGINT, SIGTERM, SIGHUP and
    /// SIGQUIT. What [`shutdown_on_signal`] listens for.
    pub const STOP: [Signal; 4] = [
        Signal::Interrupt,
        Signal::Terminate,
        Signal::Hangup,
        Signal::Quit,
    ];

    /// The signal's number on Linux.
    pub fn number(self) -> i32 {
        match self {
            Signal::Hangup => 1,
            Signal::Interrupt => 2,
            Signal::Quit => 3,
            Signal::User1 => 10,
            Signal::User2 => 12,
            Signal::Alarm => 14,
            Signal::Terminate => 15,
        }
    }

    /// The exit status a shell expects after this signal: 128 + its number
    /// (130 for SIGINT, 143 for SIGTERM).
    pub fn exit_code(self) -> i32 {
        128 + self.number()
    }

    #[cfg(unix)]
    fn kind(self) -> tokio::signal::unix::SignalKind {
        use tokio::signal::unix::SignalKind;
        match self {
            Signal::Interrupt => SignalKind::interrupt(),
            Signal::Terminate => SignalKind::terminate(),
            Signal::Hangup => SignalKind::hangup(),
            Signal::Quit => SignalKind::quit(),
            Signal::User1 => SignalKind::user_defined1(),
            Signal::User2 => SignalKind::user_defined2(),
            Signal::Alarm => SignalKind::alarm(),
        }
    }
}

/// Listens for a set of signals from the moment it is created: from then on
/// they no longer have their default effect (ending the process), and
/// [`recv`](Self::recv) returns each as it arrives.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    listeners: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Starts listening for `signals`.
    ///
    /// # Errors
    ///
    /// When a handler cannot be installed.
    pub fn new(signals: &[Signal]) -> io::Result<Self> {
        #[cfg(unix)]
        {
            let listeners = signals
                .iter()
                .map(|s| Ok((*s, tokio::signal::unix::signal(s.kind())?)))
                .collect::<io::Result<_>>()?;
            Ok(Signals { listeners })
        }
        #[cfg(not(unix))]
        {
            let _ = signals;
            Ok(Signals {})
        }
    }

    /// Waits for the next signal (on other platforms than Unix: Ctrl-C, as
    /// `Interrupt`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal that arrives meanwhile is kept for the next call.
    pub async fn recv(&mut self) -> io::Result<Signal> {
        #[cfg(unix)]
        {
            std::future::poll_fn(|cx| {
                for (signal, listener) in &mut self.listeners {
                    if listener.poll_recv(cx).is_ready() {
                        return std::task::Poll::Ready(Ok(*signal));
                    }
                }
                std::task::Poll::Pending
            })
            .await
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await?;
            Ok(Signal::Interrupt)
        }
    }
}

/// Runs until SIGINT, SIGTERM, SIGHUP or SIGQUIT ([`Signal::STOP`]), then
/// shuts `pool` down gracefully with
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
    let mut listener = Signals::new(&Signal::STOP)?;
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
