//! `workpool`: the command-line tool. Parses flags once, runs, prints, exits.

#![forbid(unsafe_code)]

mod capture;
mod cli;
mod command;
mod contain;
mod db;
mod input;
mod joblog;
mod jobstore;
mod report;
mod results;
mod run;
mod sources;
mod stored;
mod template;
mod worker;

use clap::Parser;

/// A panic ends the run at once, wherever it happens (a thread that
/// panicked would otherwise leave `main` waiting for it): one line on stderr
/// (the full default report with `RUST_BACKTRACE` set), every job's process
/// killed, status 70 (EX_SOFTWARE). The `workpool run` code has no panic
/// it expects; the one seen is a system out of processes or threads, where
/// tokio cannot start a worker thread.
fn report_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            default(info);
        }
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        report::say(&format!("workpool: cannot go on: {message}\n"));
        run::kill_every_job();
        std::process::exit(70);
    }));
}

fn main() {
    let cli = cli::Cli::parse();
    let args = match cli.command {
        cli::Command::Run(args) => args,
        cli::Command::Enqueue(args) => exit_with(jobstore::enqueue(args)),
        cli::Command::Worker(args) => {
            report_panics();
            exit_with(worker::worker(args))
        }
        cli::Command::Status(args) => exit_with(jobstore::status(args)),
        cli::Command::Jobs(args) => exit_with(jobstore::jobs(args)),
        cli::Command::Retry(args) => exit_with(jobstore::retry_or_cancel(args, false)),
        cli::Command::Cancel(args) => exit_with(jobstore::retry_or_cancel(args, true)),
        cli::Command::Migrate(args) => exit_with(jobstore::migrate(args)),
        cli::Command::Completions { shell } => {
            let mut command = <cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "workpool", &mut std::io::stdout());
            return;
        }
        cli::Command::Man => {
            // The page of `workpool run`, the tool's one job, as `workpool-run(1)`.
            let command = <cli::Cli as clap::CommandFactory>::command();
            let run = command
                .find_subcommand("run")
                .cloned()
                .expect("the run subcommand")
                .name("workpool-run");
            let page = clap_mangen::Man::new(run);
            if let Err(e) = page.render(&mut std::io::stdout()) {
                report::say(&format!("workpool: writing the man page failed: {e}\n"));
                std::process::exit(1);
            }
            return;
        }
    };
    report_panics();
    exit_with(run::run(args))
}

/// Runs a subcommand on a multi-threaded runtime and exits with its status
/// (2 and the message for a usage error).
fn exit_with(command: impl std::future::Future<Output = Result<i32, String>>) -> ! {
    std::process::exit(run_on_a_runtime(command))
}

fn run_on_a_runtime(command: impl std::future::Future<Output = Result<i32, String>>) -> i32 {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let code = match rt.block_on(command) {
                Ok(code) => code,
                Err(msg) => {
                    report::say(&format!("workpool: {msg}\n"));
                    2
                }
            };
            // Do not wait for tasks on the way out: a job the pool gave up on
            // must not hold the exit.
            rt.shutdown_background();
            code
        }
        Err(e) => {
            report::say(&format!("workpool: cannot start the async runtime: {e}\n"));
            2
        }
    }
}
