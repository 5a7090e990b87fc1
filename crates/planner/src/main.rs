//! The planner binary: loads the settings, starts telemetry, and runs the planner until
//! SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Joins each run's snapshot with the products' states, plans, and publishes change sets.
#[derive(Parser)]
#[command(name = "planner", version)]
struct Args {
    /// The keysync configuration file (TOML); `KEYSYNC_*` variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init("keysync-planner", "info").context("starting telemetry")?;
    let settings: planner::Settings =
        config::load(args.config.as_deref()).context("loading the configuration")?;
    let app = planner::App::build(settings)
        .await
        .context("starting the planner")?;
    let result = app.run_until_stopped(telemetry::shutdown_signal()).await;
    if let Err(error) = &result {
        tracing::error!(error = %error, "The planner stopped with an error.");
    }
    result.context("running the planner")
}
