//! `cargo bench -p atlassian --bench apply` (`make bench-apply`): account creates through the
//! Jira client against the Jira emulator with 10 ms latency and a 1,000 requests/s token
//! bucket.
//!
//! Prints `BENCH apply creates=N req_per_s=X limit=L limit_ratio=R throttled=T`, where X is
//! the requests the emulator answered per second, R = X/L and T the 429s it sent, and exits
//! non-zero when R < 0.90, when T exceeds 1 % of the requests (the client must pace itself
//! from the `X-RateLimit-*` headers, not discover the limit by 429s), or when a create fails.
//! `BENCH_APPLY_CREATES` sets the number of creates (default 100,000).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use atlassian::config::{Auth, Connection, JiraSettings, UserListing};
use atlassian::jira::JiraClient;
use atlassian::{Directory, NewAccount};
use config::Secret;
use futures::StreamExt;

const DEFAULT_CREATES: usize = 100_000;
const LIMIT: u32 = 1000;
const LATENCY: Duration = Duration::from_millis(10);
/// With 10 ms latency, 1,000 requests/s need about 10 in flight; more leaves headroom.
const CONCURRENCY: usize = 48;
const MIN_RATIO: f64 = 0.90;

fn main() -> ExitCode {
    let creates = match std::env::var("BENCH_APPLY_CREATES") {
        Err(_) => DEFAULT_CREATES,
        Ok(value) => match value.parse::<usize>() {
            Ok(creates) if creates > 0 => creates,
            _ => {
                eprintln!("BENCH_APPLY_CREATES must be a positive integer, not {value:?}");
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(creates))
}

async fn run(creates: usize) -> ExitCode {
    let mut config = emulator::Config::for_tests(emulator::Product::Jira);
    config.latency = LATENCY;
    config.rate_limit = LIMIT;
    let emulator = match emulator::spawn(config).await {
        Ok(emulator) => emulator,
        Err(error) => {
            eprintln!("cannot start the emulator: {error}");
            return ExitCode::FAILURE;
        }
    };
    let endpoint = match url::Url::parse(&emulator.url()) {
        Ok(endpoint) => endpoint,
        Err(error) => {
            eprintln!("the emulator URL does not parse: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut connection = Connection::new(endpoint, Auth::Bearer(Secret::new("test-token")));
    connection.max_concurrency = CONCURRENCY;
    let client = match JiraClient::new(
        connection,
        JiraSettings {
            user_listing: UserListing::Cursor,
        },
    ) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("cannot build the client: {error}");
            return ExitCode::FAILURE;
        }
    };

    let started = Instant::now();
    let client = &client;
    let n_failed = futures::stream::iter(0..creates)
        .map(|idx| async move {
            let account = NewAccount {
                login: format!("bench{idx:06}"),
                display_name: format!("Bench User {idx}"),
                email: format!("bench{idx:06}@example.com"),
                password: None,
            };
            client.create_account(&account).await
        })
        .buffer_unordered(CONCURRENCY * 2)
        .filter(|result| {
            if let Err(error) = result {
                eprintln!("create failed: {error}");
            }
            std::future::ready(result.is_err())
        })
        .count()
        .await;
    let elapsed = started.elapsed().as_secs_f64();

    let counters = emulator.state().dump().counters;
    let req_per_s = counters.requests as f64 / elapsed;
    let ratio = req_per_s / f64::from(LIMIT);
    println!(
        "BENCH apply creates={creates} req_per_s={req_per_s:.1} limit={LIMIT} limit_ratio={ratio:.3} throttled={}",
        counters.throttled
    );
    emulator.shutdown().await;

    let mut ok = true;
    if n_failed > 0 {
        eprintln!("{n_failed} creates failed");
        ok = false;
    }
    if ratio < MIN_RATIO {
        eprintln!("limit_ratio {ratio:.3} is below the floor {MIN_RATIO}");
        ok = false;
    }
    if counters.throttled * 100 > counters.requests {
        eprintln!(
            "the client provoked {} 429s in {} requests (more than 1 %)",
            counters.throttled, counters.requests
        );
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
