//! A small service: it accepts jobs over TCP on 127.0.0.1, one per line, and
//! runs them on the pool. Ctrl-C or SIGTERM stops intake, lets running jobs
//! finish within a timeout, and prints the report; a second signal cancels
//! running jobs at once.
//!
//! ```text
//! cargo run --example graceful_shutdown            # listens on 127.0.0.1:7878
//! printf 'hello\nsleep 3\n' | nc 127.0.0.1 7878    # in another terminal
//! ```
//!
//! A line `sleep N` takes N seconds; any other line takes 1 second. The
//! server answers `accepted <id>`, `busy` (queue full: try again later) or
//! `shutting down`.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use workpool::{Job, JobContext, Pool, TrySubmitError};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7878".into());
    let pool = Pool::builder()
        .workers(4)
        .queue_capacity(16)
        .grace(Duration::from_secs(2))
        .build(|job: Job, ctx: JobContext| async move {
            let text = String::from_utf8_lossy(job.payload()).into_owned();
            let secs = text
                .strip_prefix("sleep ")
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(1);
            println!(
                "job {} started on worker {}: {text:?}",
                job.id(),
                ctx.worker()
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs)) => {
                    println!("job {} done", job.id());
                    Ok(())
                }
                _ = ctx.cancelled() => {
                    println!("job {} cancelled", job.id());
                    Err("cancelled before it was done")
                }
            }
        })?;

    let listener = TcpListener::bind(&addr).await?;
    println!(
        "listening on {}; send lines with `nc {}`; Ctrl-C to stop",
        listener.local_addr()?,
        listener.local_addr()?.to_string().replace(':', " ")
    );
    let intake = tokio::spawn(accept(listener, pool.clone()));

    let (signal, report) =
        workpool::signal::shutdown_on_signal(&pool, Duration::from_secs(10)).await?;
    intake.abort();
    println!("{signal:?}: {report}");
    for n in report.not_finished() {
        println!(
            "  did not finish: job {} ({}, {} attempt(s))",
            n.id, n.outcome, n.attempts
        );
    }
    for u in report.take_unstarted() {
        // A real service would store these and run them after restart.
        println!(
            "  handed back: job {} {:?}",
            u.job.id(),
            String::from_utf8_lossy(u.job.payload())
        );
    }
    std::process::exit(signal.exit_code());
}

async fn accept(listener: TcpListener, pool: Pool) {
    loop {
        match listener.accept().await {
            Ok((socket, _peer)) => {
                tokio::spawn(serve(socket, pool.clone()));
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
}

async fn serve(socket: TcpStream, pool: Pool) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let job = Job::new(Bytes::from(line));
        let id = job.id().clone();
        let reply = match pool.try_submit_detached(job) {
            Ok(()) => format!("accepted {id}\n"),
            Err(TrySubmitError::Full(_)) => "busy: queue full, try again later\n".to_string(),
            Err(TrySubmitError::Closed(_)) => "shutting down\n".to_string(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}
