//! `fetcher [--config FILE]`: reads the settings (the file, then `KEYSYNC_*` variables),
//! connects, and serves run requests until SIGTERM or Ctrl-C, finishing the request in
//! hand first.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use fetcher::{app::App, settings::Settings};

/// keysync's fetcher: reads a Keycloak realm into a snapshot for every run request.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The configuration file (TOML); `KEYSYNC_*` environment variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init("keysync-fetcher", "info").context("setting up telemetry")?;
    let settings = Settings::load(args.config.as_deref()).context("loading the settings")?;
    let app = App::build(settings).await.context("starting the fetcher")?;
    app.run_until_stopped(telemetry::shutdown_signal())
        .await
        .context("serving run requests")
}
