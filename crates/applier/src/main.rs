//! The applier binary: loads the settings, starts telemetry, and runs the applier of one
//! product until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use model::state::Product;

/// Reads one product's state for each run and applies the planner's change sets to it.
#[derive(Parser)]
#[command(name = "applier", version)]
struct Args {
    /// The keysync configuration file (TOML); `KEYSYNC_*` variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The product this applier writes to.
    #[arg(long, value_enum)]
    product: ProductArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProductArg {
    Jira,
    Confluence,
    Bitbucket,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let product = match args.product {
        ProductArg::Jira => Product::Jira,
        ProductArg::Confluence => Product::Confluence,
        ProductArg::Bitbucket => Product::Bitbucket,
    };
    let service = match product {
        Product::Jira => "keysync-applier-jira",
        Product::Confluence => "keysync-applier-confluence",
        Product::Bitbucket => "keysync-applier-bitbucket",
    };
    let _telemetry = telemetry::init(service, "info").context("starting telemetry")?;
    let settings: applier::Settings =
        config::load(args.config.as_deref()).context("loading the configuration")?;
    let app = applier::App::build(settings, product)
        .await
        .with_context(|| format!("starting the {product} applier"))?;
    let result = app.run_until_stopped(telemetry::shutdown_signal()).await;
    if let Err(error) = &result {
        tracing::error!(error = %error, "The applier stopped with an error.");
    }
    result.context("running the applier")
}
