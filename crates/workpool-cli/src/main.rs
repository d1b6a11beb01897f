//! `workpool`: the command-line tool. Parses flags once, runs, prints, exits.

#![forbid(unsafe_code)]

mod capture;
mod cli;
mod command;
mod contain;
mod input;
mod joblog;
mod report;
mod run;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let cli::Command::Run(args) = cli.command;
    let code = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let code = match rt.block_on(run::run(args)) {
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
    };
    std::process::exit(code);
}
