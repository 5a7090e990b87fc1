//! `make bench-listing`: the control plane's reads at scale, as issue #15 states them: a
//! control plane holding 100,000 runs answers `ListRuns` (page size 20) in under 100 ms,
//! and lists every change of a 500,000-change run within its memory limit (256 MiB in the
//! Helm chart).
//!
//! A real nats-server is started; 100,000 runs are written straight into the runs bucket
//! in the control plane's stored format (`control_plane::store::Store`, many writes in
//! flight), their ids spread over the last 200 days as a year of hourly and manual runs
//! would be; then the `control-plane` binary is started as a process on free ports. The
//! bench times 20 `ListRuns` calls after the first (which waits for the index of runs to
//! load): the first pages of all runs, following the page token, and pages filtered on a
//! state. Then it stores a plan of 500,000 changes and its run, with results for 1 % of
//! the changes, lists every change page by page (1,000 a page), then the FAILED ones, and
//! reads the control plane's peak resident memory (`VmHWM`).
//!
//! Prints `BENCH list-runs runs=100000 p50_ms=.. max_ms=..` and
//! `BENCH list-changes changes=500000 pages=.. peak_mib=.. seconds=..`; fails when the
//! median or the slowest `ListRuns` takes 100 ms or more, when a listing's total or pages
//! are wrong, or when the peak is 256 MiB or more.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail, ensure};
use bus::{Bus, Topology};
use control_plane::store::{Store, StoredRun};
use futures::{StreamExt, TryStreamExt};
use proto::v1::{
    self, ChangeOp, ChangeOutcome, Product, RunMode, RunState,
    control_service_client::ControlServiceClient,
};
use test_support::{nats::NatsServer, process};
use tonic::{Request, transport::Channel};

const RUNS: usize = 100_000;
const CHANGES: usize = 500_000;
/// One change in RESULT_EVERY has a result; one result in FAILED_EVERY is FAILED.
const RESULT_EVERY: usize = 100;
const FAILED_EVERY: usize = 5;
const CHANGES_PAGE: u32 = 1_000;
const RUNS_PAGE: u32 = 20;
const TIMED_CALLS: usize = 20;
const MAX_LIST_MS: f64 = 100.0;
const MAX_PEAK_MIB: f64 = 256.0;
const TOKEN: &str = "bench-token-0123456789-0123456789abcdef";
const PREFIX: &str = "bench";

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let nats = NatsServer::start().context("starting nats-server")?;
    let bus = Bus::connect(&nats.url(), Topology::new(PREFIX))
        .await
        .context("connecting to NATS")?;
    let store = Arc::new(Store::open(&bus).await.context("opening the buckets")?);

    let started = Instant::now();
    write_runs(&store).await?;
    eprintln!(
        "bench-listing: wrote {RUNS} runs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let plan_run = write_plan(&bus, &store).await?;
    eprintln!(
        "bench-listing: stored the plan of {CHANGES} changes and its results after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().context("a temporary directory")?;
    let mut control_plane = ControlPlane::start(dir.path(), &nats.url())?;
    let client = control_plane.client().await?;

    let (p50, max) = list_runs(&client).await?;
    println!("BENCH list-runs runs={RUNS} p50_ms={p50:.1} max_ms={max:.1}");
    eprintln!(
        "bench-listing: the control plane's peak before listing changes: {:.1} MiB",
        control_plane.peak_mib()?
    );

    let started = Instant::now();
    let pages = list_changes(&client, &plan_run, &mut control_plane).await?;
    let seconds = started.elapsed().as_secs_f64();
    let peak = control_plane.peak_mib()?;
    println!(
        "BENCH list-changes changes={CHANGES} pages={pages} peak_mib={peak:.1} seconds={seconds:.1}"
    );
    ensure!(
        p50 < MAX_LIST_MS && max < MAX_LIST_MS,
        "ListRuns took p50 {p50:.1} ms, max {max:.1} ms; the floor is {MAX_LIST_MS} ms"
    );
    ensure!(
        peak < MAX_PEAK_MIB,
        "the control plane peaked at {peak:.1} MiB; the limit is {MAX_PEAK_MIB} MiB"
    );
    Ok(())
}

/// Writes the runs, ids spread over the last 200 days, every one ended (SUCCEEDED, one in
/// ten FAILED), many writes in flight.
async fn write_runs(store: &Store) -> anyhow::Result<()> {
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_millis() as u64;
    let span_ms = 200 * 24 * 3600 * 1000u64;
    futures::stream::iter(0..RUNS)
        .map(|index| {
            let time = now_ms - span_ms + span_ms * index as u64 / RUNS as u64;
            let run_id = ulid::Ulid::from_parts(time, rand_bits(index)).to_string();
            let state = if index % 10 == 0 {
                RunState::Failed
            } else {
                RunState::Succeeded
            };
            async move { store.create(&stored_run(run_id, state, None)).await }
        })
        .buffer_unordered(512)
        .try_collect::<()>()
        .await
        .context("writing the runs")
}

fn rand_bits(index: usize) -> u128 {
    (index as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) & ((1 << 80) - 1)
}

fn stored_run(run_id: String, state: RunState, plan: Option<v1::ObjectRef>) -> StoredRun {
    let mut run = v1::Run {
        run_id,
        connector: "corp".to_owned(),
        requested_by: "schedule".to_owned(),
        products: vec![Product::Jira as i32, Product::Confluence as i32],
        reason: "bench".to_owned(),
        ..v1::Run::default()
    };
    run.set_state(state);
    run.set_mode(RunMode::Apply);
    StoredRun {
        run,
        plan,
        results_counted_through: 0,
        state_since: None,
    }
}

/// Stores a plan of [`CHANGES`] changes, its (ended) run and results for one change in
/// [`RESULT_EVERY`]; answers the run id.
async fn write_plan(bus: &Bus, store: &Store) -> anyhow::Result<String> {
    let run_id = store.new_run_id();
    let products = [Product::Jira, Product::Confluence, Product::Bitbucket];
    let changes = (0..CHANGES)
        .map(|index| {
            let login = format!("user{index:06}");
            let mut change = v1::Change {
                id: format!("{index:016x}"),
                keycloak_user_id: format!("6f1c2a9e-0000-4000-8000-{index:012}"),
                account: Some(v1::AccountRef {
                    r#ref: Some(v1::account_ref::Ref::NewLogin(login.clone())),
                }),
                fields: Some(v1::AccountFields {
                    email: format!("{login}@example.com"),
                    display_name: format!("User {index}"),
                    login,
                    ..v1::AccountFields::default()
                }),
                ..v1::Change::default()
            };
            change.set_product(products[index % products.len()]);
            change.set_op(ChangeOp::CreateUser);
            change
        })
        .collect();
    let plan = v1::Plan {
        schema_version: v1::SCHEMA_VERSION,
        run_id: run_id.clone(),
        changes,
        ..v1::Plan::default()
    };
    let bucket = bus.topology().plans_bucket();
    let object = bus
        .put_object(&bucket, &format!("{run_id}.pb.zst"), &plan)
        .await
        .context("storing the plan")?;
    drop(plan);
    eprintln!(
        "bench-listing: the plan stores in {:.1} MiB",
        object.size as f64 / 1048576.0
    );
    store
        .create(&stored_run(
            run_id.clone(),
            RunState::Succeeded,
            Some(object),
        ))
        .await
        .context("writing the plan's run")?;
    let run = run_id.as_str();
    futures::stream::iter((0..CHANGES).step_by(RESULT_EVERY))
        .map(|index| async move {
            let mut result = v1::ChangeResult {
                schema_version: v1::SCHEMA_VERSION,
                run_id: run.to_owned(),
                change_id: format!("{index:016x}"),
                message: "bench".to_owned(),
                ..v1::ChangeResult::default()
            };
            result.set_outcome(if (index / RESULT_EVERY).is_multiple_of(FAILED_EVERY) {
                ChangeOutcome::Failed
            } else {
                ChangeOutcome::Applied
            });
            store.record_result(&result).await.map(|_| ())
        })
        .buffer_unordered(256)
        .try_collect::<()>()
        .await
        .context("recording the results")?;
    Ok(run_id)
}

type Client = ControlServiceClient<Channel>;

fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let token = format!("Bearer {TOKEN}")
        .parse()
        .expect("an ascii header value");
    request.metadata_mut().insert("authorization", token);
    request
}

/// Times `ListRuns` calls after the first one; answers the median and the slowest, in ms.
async fn list_runs(client: &Client) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let first = list_page(client, "", &[]).await?;
    eprintln!(
        "bench-listing: the first ListRuns (waiting for the index) took {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    ensure!(
        first.runs.len() == RUNS_PAGE as usize,
        "a page of {} runs",
        first.runs.len()
    );
    let mut token = first.next_page_token.clone();
    let mut timings = Vec::new();
    let mut previous_last = first.runs.last().map(|run| run.run_id.clone());
    for call in 0..TIMED_CALLS {
        let started = Instant::now();
        let page = if call % 4 == 3 {
            list_page(client, "", &[RunState::Failed]).await?
        } else {
            list_page(client, &token, &[]).await?
        };
        timings.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(
            page.runs.len() == RUNS_PAGE as usize,
            "a page of {} runs",
            page.runs.len()
        );
        if call % 4 == 3 {
            ensure!(
                page.runs.iter().all(|run| run.state() == RunState::Failed),
                "a run of another state in a filtered page"
            );
            continue;
        }
        let ids: Vec<&str> = page.runs.iter().map(|run| run.run_id.as_str()).collect();
        ensure!(
            ids.windows(2).all(|pair| pair[0] > pair[1])
                && previous_last.as_deref().is_some_and(|last| last > ids[0]),
            "pages are not newest first"
        );
        previous_last = ids.last().map(|id| (*id).to_owned());
        token = page.next_page_token;
    }
    timings.sort_by(f64::total_cmp);
    // What one read of one run through the API takes on this machine now, for scale: on
    // a loaded machine it is most of a page's time.
    let mut baseline = Vec::new();
    for _ in 0..TIMED_CALLS {
        let started = Instant::now();
        client
            .clone()
            .get_run(request(v1::GetRunRequest {
                run_id: token.clone(),
            }))
            .await
            .context("GetRun")?;
        baseline.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    baseline.sort_by(f64::total_cmp);
    eprintln!(
        "bench-listing: GetRun, for scale: p50 {:.1} ms, max {:.1} ms",
        baseline[baseline.len() / 2],
        baseline[baseline.len() - 1]
    );
    Ok((timings[timings.len() / 2], timings[timings.len() - 1]))
}

async fn list_page(
    client: &Client,
    token: &str,
    states: &[RunState],
) -> anyhow::Result<v1::ListRunsResponse> {
    Ok(client
        .clone()
        .list_runs(request(v1::ListRunsRequest {
            states: states.iter().map(|state| *state as i32).collect(),
            page_size: RUNS_PAGE,
            page_token: token.to_owned(),
            triggers: Vec::new(),
        }))
        .await
        .context("ListRuns")?
        .into_inner())
}

/// Lists every change of the plan's run page by page, then the FAILED ones; answers how
/// many pages were read.
async fn list_changes(
    client: &Client,
    run_id: &str,
    control_plane: &mut ControlPlane,
) -> anyhow::Result<usize> {
    let mut pages = 0;
    let mut peak = 0.0f64;
    for (outcome, expected) in [
        (ChangeOutcome::Unspecified, CHANGES),
        (
            ChangeOutcome::Failed,
            CHANGES.div_ceil(RESULT_EVERY).div_ceil(FAILED_EVERY),
        ),
    ] {
        let mut token = String::new();
        let mut listed = 0;
        let mut with_result = 0;
        loop {
            let mut list = v1::ListChangesRequest {
                run_id: run_id.to_owned(),
                page_size: CHANGES_PAGE,
                page_token: token.clone(),
                ..v1::ListChangesRequest::default()
            };
            list.set_outcome(outcome);
            let page = client
                .clone()
                .list_changes(request(list))
                .await
                .context("ListChanges")?
                .into_inner();
            pages += 1;
            ensure!(
                page.total as usize == expected,
                "a total of {} for {outcome:?}, not {expected}",
                page.total
            );
            listed += page.changes.len();
            with_result += page
                .changes
                .iter()
                .filter(|record| record.outcome() != ChangeOutcome::Planned)
                .count();
            peak = peak.max(control_plane.peak_mib()?);
            if pages % 50 == 0 {
                eprintln!("bench-listing: {pages} pages of changes, peak {peak:.1} MiB");
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        ensure!(listed == expected, "listed {listed} of {expected} changes");
        let expected_results = if outcome == ChangeOutcome::Failed {
            expected
        } else {
            CHANGES.div_ceil(RESULT_EVERY)
        };
        ensure!(
            with_result == expected_results,
            "{with_result} changes with a result, not {expected_results}"
        );
    }
    Ok(pages)
}

/// The `control-plane` binary, running.
struct ControlPlane {
    child: Child,
    address: String,
}

impl ControlPlane {
    fn start(dir: &Path, nats_url: &str) -> anyhow::Result<ControlPlane> {
        let token_file = dir.join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n"))?;
        let port = process::free_port()?;
        let address = format!("127.0.0.1:{port}");
        let config = format!(
            "[bus]\nnats_url = \"{nats_url}\"\nprefix = \"{PREFIX}\"\n\n\
             [control_plane]\nlisten = \"{address}\"\ntoken_file = \"{}\"\n\n\
             [control_plane.schedule]\nenabled = false\n",
            token_file.display()
        );
        let config_file = dir.join("keysync.toml");
        std::fs::write(&config_file, config)?;
        let log =
            std::fs::File::create(process::log_dir().join("bench-listing-control-plane.log"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .arg("--config")
            .arg(&config_file)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the control-plane binary")?;
        Ok(ControlPlane { child, address })
    }

    /// A client, once the API answers.
    async fn client(&mut self) -> anyhow::Result<Client> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the control plane exited: {status}");
            }
            if let Ok(channel) = Channel::from_shared(format!("http://{}", self.address))?
                .connect()
                .await
            {
                return Ok(ControlServiceClient::new(channel).max_decoding_message_size(64 << 20));
            }
            ensure!(
                Instant::now() < deadline,
                "the control plane never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process's peak resident memory so far, in MiB.
    fn peak_mib(&mut self) -> anyhow::Result<f64> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the control plane exited: {status}");
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmHWM in /proc/PID/status")?;
        Ok(kib / 1024.0)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
