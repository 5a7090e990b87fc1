//! `keysync`, the control API from a terminal: start a sync and follow it with progress
//! bars, list runs and their changes, approve or cancel a run, test the connections, and
//! check a configuration file. Tables are for people; `--json` prints JSON for scripts.
//!
//! Exit codes: 0 when the command (and a followed run) succeeded, 1 on an error or a run
//! that failed or was cancelled, 2 when a followed run is held for approval.

mod args;
mod client;
mod commands;
mod config_check;
mod error;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Args;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`keysync run ID --changes | head`) instead of panicking on a broken pipe.
    // SAFETY: called first in main, before any thread or output exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args = Args::parse();
    match commands::run(args).await {
        Ok(code) => code,
        Err(error) => {
            let error = anyhow::Error::from(error);
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
