//! `keysync`, the control API from a terminal: start a sync and follow it with progress
//! bars, list runs and their changes, explain why a user was (or was not) changed,
//! approve or cancel a run, test the connections, and check a configuration file. Tables are for people; `--json` prints JSON for scripts.
//!
//! Exit codes: 0 when the command (and a followed run) succeeded, 1 on an error or a run
//! that failed or was cancelled, 2 when a followed run is held for approval.

/// `println!` that ends the process quietly when the reader of the output went away
/// (`keysync run ID --changes | head`): exit status 141, as a shell reports a pipe closed
/// under a writer, instead of the panic `println!` would raise.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout(), $($arg)*) {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(141);
            }
            panic!("writing to standard output: {error}");
        }
    }};
}

mod args;
mod client;
mod commands;
mod config_check;
mod error;
mod explain;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::args::Args;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // SIGPIPE stays ignored (Rust's default): a closed connection to the control plane (a
    // refused TLS handshake) must be an error to report, not a silent death; a closed
    // standard output ends the process quietly through `out!`.
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
