//! `make bench-apply-replicas`: the same 20,000 account creations applied to the Jira
//! emulator (`--latency-ms 20`, no rate limit) by one and by three replicas of the Jira
//! applier; the three must be at least [`MIN_SPEEDUP`] times as fast.
//!
//! Nothing is bypassed: each measurement is a fresh `e2e::Stack` (nats-server, a realm in
//! the shared Keycloak into which 20,000 users are imported, the emulators, the control plane, fetcher,
//! planner and appliers, every one a process), plus the extra Jira appliers started here
//! from the same binaries and configuration, each serving `/readyz` on its own port so the
//! run starts only once every replica is bound. The run is an APPLY run of Jira alone
//! (StartSync with `products = [JIRA]`); the users have no groups, so the plan is 20,000
//! `CREATE_ACCOUNT` changes, cut into change sets of [`CHANGE_SET_SIZE`] (`[planner]
//! change_set_size`) so that the replicas have sets to share: every set is of the same phase,
//! so none waits for another.
//!
//! What is timed is the apply: from the moment WatchRun shows the run APPLYING to the moment
//! it shows it SUCCEEDED. The fetch and the plan, the same for both, are left out. The run
//! must end SUCCEEDED with 20,000 applied and none failed, and the emulator must hold
//! 20,000 accounts created once each.
//!
//! Printed on stdout:
//!
//! ```text
//! BENCH apply-replicas replicas=1 seconds=S changes_per_s=C
//! BENCH apply-replicas replicas=3 seconds=S changes_per_s=C speedup=X
//! ```
//!
//! The bench fails when X < 2.5. `KEYSYNC_BENCH_CONCURRENCY` overrides the Jira applier's
//! `max_concurrency` (default [`CONCURRENCY`]), `KEYSYNC_BENCH_SET_SIZE` the change-set
//! size and `KEYSYNC_BENCH_USERS` the number of users (for a quick look; the floor is only
//! meaningful at 20,000).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use e2e::{CONNECTOR, Stack, StackOptions};
use futures::StreamExt;
use proto::v1::{self, Product, RunMode, RunState};
use test_support::{
    keycloak::{RealmSpec, UserSpec},
    process::{Tethered, free_port, log_dir},
};

/// Users of the realm, hence creations in Jira.
const USERS: usize = 20_000;
/// `[planner] change_set_size`: 80 sets of 250 changes.
const CHANGE_SET_SIZE: usize = 250;
/// `max_concurrency` of each Jira applier replica.
const CONCURRENCY: usize = 8;
/// The Jira emulator's latency per request.
const LATENCY_MS: u64 = 20;
/// The floor: three replicas at least this many times as fast as one.
const MIN_SPEEDUP: f64 = 2.5;
/// Users imported into Keycloak per request (and per admin token).
const IMPORT_BATCH: usize = 1_000;
/// How long one run may take, fetch and plan included.
const RUN_DEADLINE: Duration = Duration::from_secs(900);

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench-apply-replicas: starting tokio: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(bench()).unwrap_or_else(|error| {
        eprintln!("bench-apply-replicas: {error:#}");
        ExitCode::FAILURE
    })
}

/// The bench's knobs, from the environment or the defaults.
struct Knobs {
    users: usize,
    set_size: usize,
    concurrency: usize,
}

fn env_or(key: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(key) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{key}={value} is not a number")),
        Err(_) => Ok(default),
    }
}

async fn bench() -> anyhow::Result<ExitCode> {
    let knobs = Knobs {
        users: env_or("KEYSYNC_BENCH_USERS", USERS)?,
        set_size: env_or("KEYSYNC_BENCH_SET_SIZE", CHANGE_SET_SIZE)?,
        concurrency: env_or("KEYSYNC_BENCH_CONCURRENCY", CONCURRENCY)?,
    };
    eprintln!(
        "bench-apply-replicas: {} creations, sets of {}, max_concurrency {} per replica, \
         {LATENCY_MS} ms per request",
        knobs.users, knobs.set_size, knobs.concurrency
    );
    let one = measure(&knobs, 1).await.context("one replica")?;
    println!(
        "BENCH apply-replicas replicas=1 seconds={:.1} changes_per_s={:.0}",
        one.as_secs_f64(),
        knobs.users as f64 / one.as_secs_f64()
    );
    let three = measure(&knobs, 3).await.context("three replicas")?;
    let speedup = one.as_secs_f64() / three.as_secs_f64();
    println!(
        "BENCH apply-replicas replicas=3 seconds={:.1} changes_per_s={:.0} speedup={speedup:.2}",
        three.as_secs_f64(),
        knobs.users as f64 / three.as_secs_f64()
    );
    if speedup < MIN_SPEEDUP {
        eprintln!("bench-apply-replicas: speedup {speedup:.2} is below the floor {MIN_SPEEDUP}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `users` users with an email and no group: one account creation each.
fn users(users: usize) -> Vec<UserSpec> {
    (0..users)
        .map(|index| {
            let username = format!("bench{index:05}");
            UserSpec::new(&username)
                .name(&format!("First{index}"), &format!("Last{index}"))
                .email(&format!("{username}@example.org"))
        })
        .collect()
}

/// Imports `users` into the stack's realm, [`IMPORT_BATCH`] at a time.
async fn import(stack: &Stack, users: &[UserSpec]) -> anyhow::Result<()> {
    let started = Instant::now();
    stack
        .realm
        .import_users(users, IMPORT_BATCH)
        .await
        .context("importing the users")?;
    eprintln!(
        "bench-apply-replicas: imported {} users in {:.0} s",
        users.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One measurement on a fresh stack: the time from APPLYING to SUCCEEDED.
async fn measure(knobs: &Knobs, replicas: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let stack = Stack::start(StackOptions {
        realm: RealmSpec::default(),
        emulator_args: [(
            Product::Jira,
            vec!["--latency-ms".to_owned(), LATENCY_MS.to_string()],
        )]
        .into(),
        product_config: [(
            Product::Jira,
            format!("max_concurrency = {}", knobs.concurrency),
        )]
        .into(),
        extra_config: format!("[planner]\nchange_set_size = {}\n", knobs.set_size),
        service_env: vec![(
            format!("KEYSYNC_KEYCLOAK__{}__PAGE_SIZE", CONNECTOR.to_uppercase()),
            "500".to_owned(),
        )],
        ..StackOptions::default()
    })
    .await
    .context("the stack starts")?;
    import(&stack, &users(knobs.users)).await?;
    let mut extra = Vec::new();
    for replica in 2..=replicas {
        extra.push(Replica::start(&stack, replica)?);
    }
    for replica in &mut extra {
        replica.wait_ready().await?;
    }
    eprintln!(
        "bench-apply-replicas: replicas={replicas}: stack up in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let (run, applying) = run_to_end(&stack).await?;
    check(&stack, &run, knobs.users as u64).await?;
    for replica in &mut extra {
        if let Some(status) = replica.process.exited() {
            bail!("Jira applier replica {} exited: {status}", replica.number);
        }
    }
    Ok(applying)
}

/// An APPLY run of Jira alone, followed with WatchRun: the run as it ended and how long
/// it was APPLYING.
async fn run_to_end(stack: &Stack) -> anyhow::Result<(v1::Run, Duration)> {
    let mut client = stack.client.clone();
    let run = client
        .start_sync(v1::StartSyncRequest {
            mode: RunMode::Apply as i32,
            products: vec![Product::Jira as i32],
            connector: CONNECTOR.to_owned(),
        })
        .await
        .context("StartSync")?
        .into_inner();
    let follow = async {
        let mut stream = client
            .watch_run(v1::WatchRunRequest {
                run_id: run.run_id.clone(),
            })
            .await
            .context("WatchRun")?
            .into_inner();
        let mut applying_since = None;
        while let Some(seen) = stream.next().await {
            let seen = seen.context("WatchRun")?;
            let state = seen.state();
            if applying_since.is_none() && state as i32 >= RunState::Applying as i32 {
                applying_since = Some(Instant::now());
            }
            if e2e::TERMINAL.contains(&state) {
                let since = applying_since.context("the run never showed APPLYING")?;
                return Ok((seen, since.elapsed()));
            }
        }
        bail!("WatchRun ended before the run did")
    };
    tokio::time::timeout(RUN_DEADLINE, follow)
        .await
        .with_context(|| format!("run {} did not end in {RUN_DEADLINE:?}", run.run_id))?
}

/// The run SUCCEEDED with `users` creations applied and none failed, and Jira holds them.
async fn check(stack: &Stack, run: &v1::Run, users: u64) -> anyhow::Result<()> {
    if run.state() != RunState::Succeeded {
        bail!("run {} ended {:?}: {}", run.run_id, run.state(), run.reason);
    }
    let progress = run
        .progress
        .iter()
        .find(|progress| progress.product() == Product::Jira)
        .context("the run has no Jira progress")?;
    if progress.planned != users || progress.applied != users || progress.failed != 0 {
        bail!("Jira: {progress:?}, expected {users} planned and applied, none failed");
    }
    let state = stack.emulator_state(Product::Jira).await?;
    let created = state["counters"]["writes"]["create_account"]
        .as_u64()
        .unwrap_or(0);
    let accounts = state["accounts"].as_array().map_or(0, |accounts| {
        accounts
            .iter()
            .filter(|account| {
                account["login"]
                    .as_str()
                    .is_some_and(|login| login.starts_with("bench"))
            })
            .count()
    }) as u64;
    if created != users || accounts != users {
        bail!("Jira created {created} accounts and holds {accounts} of {users}");
    }
    Ok(())
}

/// A Jira applier started next to the stack's own, with its readiness endpoint.
struct Replica {
    number: usize,
    process: Tethered,
    ready_url: String,
}

impl Replica {
    fn start(stack: &Stack, number: usize) -> anyhow::Result<Replica> {
        let port = free_port()?;
        let args = vec![
            "--config".to_owned(),
            stack.config_path().display().to_string(),
            "--product".to_owned(),
            "jira".to_owned(),
        ];
        let env = [
            ("RUST_LOG", "info".to_owned()),
            ("KEYSYNC_HEALTH__LISTEN", format!("127.0.0.1:{port}")),
        ];
        let log = log_dir().join(format!(
            "{}-applier-jira-replica-{number}.log",
            stack.prefix
        ));
        let process = Tethered::spawn(&binaries()?.join("applier"), &args, &env, &log)?;
        Ok(Replica {
            number,
            process,
            ready_url: format!("http://127.0.0.1:{port}/readyz"),
        })
    }

    /// Polls `/readyz` until the replica has bound its consumers.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + e2e::DEADLINE;
        loop {
            if let Some(status) = self.process.exited() {
                bail!("Jira applier replica {} exited: {status}", self.number);
            }
            let ready = http
                .get(&self.ready_url)
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Jira applier replica {} never became ready", self.number);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The directory of the service binaries (the stack builds them before it starts):
/// `target/<profile>`, above this bench's `deps`.
fn binaries() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .and_then(Path::parent)
        .context("the bench binary is not in target/<profile>/deps")?
        .to_owned())
}
