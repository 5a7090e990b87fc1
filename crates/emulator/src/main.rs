//! `emulator --product jira|confluence|bitbucket --port N …`: serves one product's emulated
//! REST API until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

/// REST emulator of Jira, Confluence or Bitbucket Data Center, for tests, the demo and
/// benchmarks.
#[derive(Debug, Parser)]
#[command(name = "emulator", version)]
struct Args {
    /// Which product to emulate.
    #[arg(long, value_enum)]
    product: ProductArg,
    /// Port on 127.0.0.1; 0 picks a free one (printed on start).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The accepted personal access token (Authorization: Bearer).
    #[arg(long, default_value = "emulator-token")]
    token: String,
    /// The accepted basic-auth user.
    #[arg(long, default_value = "admin")]
    user: String,
    /// The accepted basic-auth password.
    #[arg(long, default_value = "admin")]
    password: String,
    /// Milliseconds slept before every answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Requests per second of the token bucket (its capacity too); 0 turns it off.
    #[arg(long, default_value_t = 0)]
    rate_limit: u32,
    /// Answer every Nth request with 503; 0 never.
    #[arg(long = "fail-503-every", default_value_t = 0)]
    fail_503_every: u64,
    /// Answer every Nth request with 429 and `Retry-After: 1`, whatever the rate; 0 never.
    #[arg(long = "fail-429-every", default_value_t = 0)]
    fail_429_every: u64,
    /// Jira version: 10.3 (cursor /user/list), 10.1 (no /user/list, /user/search capped at
    /// 100) or 9.12 (no /user/list, /user/search capped at 1000).
    #[arg(long, value_enum, default_value = "10.3")]
    jira_version: JiraVersionArg,
    /// The most groups one Jira groups/picker call answers.
    #[arg(long, default_value_t = 1000)]
    jira_picker_limit: usize,
    /// Active accounts the licence allows (Confluence 402, Bitbucket 403 beyond it).
    #[arg(long)]
    license_seats: Option<usize>,
    /// Keep a log of every request in the state dump.
    #[arg(long)]
    record_requests: bool,
    /// JSON file with initial accounts, groups, memberships, (Bitbucket) global permissions
    /// and callers that may sign in besides the administrator.
    #[arg(long)]
    seed_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProductArg {
    Jira,
    Confluence,
    Bitbucket,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum JiraVersionArg {
    #[value(name = "10.3")]
    V10_3,
    #[value(name = "10.1")]
    V10_1,
    #[value(name = "9.12")]
    V9_12,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("keysync-emulator", "info").context("setting up telemetry")?;
    let args = Args::parse();
    let mut seed: emulator::store::SeedDocument = match &args.seed_file {
        None => emulator::store::SeedDocument::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the seed file {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("invalid seed file {}", path.display()))?
        }
    };
    let projects = std::mem::take(&mut seed.projects);
    let (seed, permissions, callers) = seed.into_parts();
    let config = emulator::Config {
        product: match args.product {
            ProductArg::Jira => emulator::Product::Jira,
            ProductArg::Confluence => emulator::Product::Confluence,
            ProductArg::Bitbucket => emulator::Product::Bitbucket,
        },
        port: args.port,
        token: Some(args.token),
        basic: Some((args.user, args.password)),
        latency: Duration::from_millis(args.latency_ms),
        rate_limit: args.rate_limit,
        fail_503_every: args.fail_503_every,
        fail_429_every: args.fail_429_every,
        jira_version: match args.jira_version {
            JiraVersionArg::V10_3 => emulator::JiraVersion::V10_3,
            JiraVersionArg::V10_1 => emulator::JiraVersion::V10_1,
            JiraVersionArg::V9_12 => emulator::JiraVersion::V9_12,
        },
        jira_picker_limit: args.jira_picker_limit,
        license_seats: args.license_seats,
        record_requests: args.record_requests,
        seed,
        permissions,
        callers,
    };
    let running = emulator::spawn(config)
        .await
        .context("cannot start the emulator")?;
    running
        .state()
        .set_initial_projects(&projects)
        .context("invalid projects in the seed file")?;
    // The test stack reads the URL from this line (it starts emulators on port 0).
    println!("emulator listening on {}", running.url());
    wait_for_signal().await?;
    tracing::info!("Shutting down.");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
