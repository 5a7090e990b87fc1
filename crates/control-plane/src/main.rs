//! The `control-plane` binary: loads the settings (`--config FILE`, then `KEYSYNC_*`
//! variables), sets up telemetry, builds the [`control_plane::App`] and runs it until
//! SIGTERM or ctrl-c.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use control_plane::{App, Settings};

/// keysync's control plane: the gRPC control API, the runs and the schedule.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The keysync configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry =
        telemetry::init("keysync-control-plane", "info").context("setting up telemetry")?;
    let settings = Settings::load(args.config.as_deref()).context("loading the settings")?;
    let app = App::build(settings)
        .await
        .context("starting the control plane")?;
    app.run_until_stopped()
        .await
        .context("running the control plane")?;
    Ok(())
}
