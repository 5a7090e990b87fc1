//! `make bench-e2e` and `make bench-events`: the whole pipeline at 100,000 users (#16).
//!
//! Nothing is bypassed: the bench Keycloak with its kept realm (`test_support::bench_realm`:
//! 100,000 users, 2,000 groups, 300,000 memberships; seeded on the first run, which takes a
//! while), a fresh `e2e::Stack` on it (nats-server, the control plane, fetcher, planner and
//! one applier per product, every one a release-built process, with the default policy),
//! and the three emulators, each answering after [`LATENCY_MS`] and allowing
//! [`RATE_LIMIT`] requests a second (429 with `Retry-After` beyond). The appliers are
//! configured as an operator would to use that allowance ([`APPLIER_CONCURRENCY`],
//! [`MAX_CONCURRENCY`]); everything else is the default.
//!
//! **e2e** (both targets):
//! 1. *the fetch alone*: `keycloak::client::Client::fetch` of the realm, in this process,
//!    with the connector's default settings, timed;
//! 2. *the first sync*: StartSync (APPLY, every product), timed from the call to the run's
//!    end; it must end SUCCEEDED with nothing failed. It is the connector's first, so it
//!    streams (`[fetcher] first_sync_part_users`, the default 10,000): the appliers write
//!    while Keycloak is still read, which is what lets it end near the slowest stage rather
//!    than at the fetch plus the apply;
//! 3. *the no-op resync*: the same again, which must write nothing to any product.
//!
//! The slowest single stage at its limit is the larger of the fetch alone and, for the
//! product written most, its writes at [`RATE_LIMIT`] a second. The floors: the first sync
//! within [`FIRST_SYNC_FACTOR`] of that stage, the resync within [`RESYNC_FACTOR`] of the
//! fetch alone, the peak resident memory (`VmHWM`) of the fetcher, each applier and the
//! control plane within [`MAX_SERVICE_MIB`] and the planner's within [`MAX_PLANNER_MIB`].
//!
//! ```text
//! BENCH e2e users=100000 first_sync_s=S resync_s=R resync_vs_fetch=X applied=N failed=0 peak_mib_fetcher=.. peak_mib_planner=.. peak_mib_applier=.. peak_mib_control_plane=..
//! ```
//! (`peak_mib_applier` is the largest of the three appliers.)
//!
//! **events** (`make bench-events`, after the e2e part on the same stack): the realm is made
//! to save its events and the fetcher restarted with `[keycloak.e2e.events] enabled` (poll
//! every second, 500 ms batching window: the defaults). Once its first-start full sync has
//! ended, [`EDITS`] edits go through Keycloak's Admin API, one every [`EDIT_EVERY`]: for
//! each of 40 new users, a creation, an email update, joining the group `/dept-00`, leaving
//! it, and a disable (even users) or a deletion (odd users), made kind by kind so that one
//! user's edits are 20 s apart. For each edit, the time from its `2xx` to the moment
//! Jira's REST API (`GET /rest/api/2/user?username=…&expand=groups`, polled every
//! [`POLL_EVERY`]) shows its effect; an edit not seen within [`SEEN_DEADLINE`] is missed.
//! A full sync at the end must write nothing. The floor: p95 within [`MAX_P95_S`], none
//! missed.
//!
//! ```text
//! BENCH events edits=200 p50_s=.. p95_s=.. max_s=.. missed=0
//! ```
//!
//! The users the events part creates are deleted from Keycloak at its end, so the kept
//! realm keeps its 100,000 users for the other benchmarks.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use config::Secret;
use e2e::{CONNECTOR, PRODUCTS, Stack, StackOptions};
use futures::StreamExt;
use keycloak::{client::Client, config::KeycloakSettings};
use proto::v1::{self, Product, RunMode, RunState};
use reqwest::Method;
use serde_json::{Value, json};
use test_support::{bench_realm, keycloak::TestRealm};

/// Every emulator's latency per request.
const LATENCY_MS: u64 = 10;
/// Every emulator's rate limit, in requests per second.
const RATE_LIMIT: u32 = 1_000;
/// `[applier] concurrency`: the changes each applier has in hand at once. The default (8)
/// is sized for a product that answers slowly; at [`LATENCY_MS`] it would cap an applier at
/// about 8 / 10 ms = 800 changes/s, below [`RATE_LIMIT`] (Bitbucket's additions are two
/// requests each). By Little's law 1,000 req/s at 10 ms need about 10 requests in flight;
/// this leaves headroom, and the client paces itself from the `X-RateLimit-*` headers.
const APPLIER_CONCURRENCY: usize = 32;
/// `[products.*] max_concurrency`: the requests each product client has in flight at once.
const MAX_CONCURRENCY: usize = 48;
/// The first sync, at most this many times the slowest single stage.
const FIRST_SYNC_FACTOR: f64 = 1.25;
/// The no-op resync, at most this many times the fetch alone.
const RESYNC_FACTOR: f64 = 1.3;
/// The fetcher, each applier and the control plane: peak resident memory.
const MAX_SERVICE_MIB: f64 = 256.0;
/// The planner's peak resident memory.
const MAX_PLANNER_MIB: f64 = 1024.0;
/// How long one run may take.
const RUN_DEADLINE: Duration = Duration::from_secs(3 * 3600);
/// The Keycloak edits of the events part.
const EDITS: usize = 200;
/// One edit every half second: two a second.
const EDIT_EVERY: Duration = Duration::from_millis(500);
/// How often Jira is asked whether an edit arrived.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// An edit not in Jira this long after its `2xx` is missed.
const SEEN_DEADLINE: Duration = Duration::from_secs(60);
/// The floor of the events part.
const MAX_P95_S: f64 = 3.0;
/// The group the events part's users join and leave.
const EDIT_GROUP: &str = "/dept-00";
/// Its Jira group, named after the Keycloak group's name (the default policy).
const EDIT_GROUP_NAME: &str = "dept-00";

fn main() -> ExitCode {
    let events = std::env::args().any(|arg| arg == "--events");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench-pipeline: starting tokio: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(bench(events)).unwrap_or_else(|error| {
        eprintln!("bench-pipeline: {error:#}");
        ExitCode::FAILURE
    })
}

async fn bench(events: bool) -> anyhow::Result<ExitCode> {
    eprintln!("bench-pipeline: starting the bench Keycloak");
    // The stack's realm borrows the server for as long as the bench runs.
    let keycloak = Box::leak(Box::new(bench_realm::start_keycloak().await?));
    let realm = bench_realm::seeded_realm(keycloak, &bench_realm::data_dir()).await?;
    remove_leftovers(&realm).await?;
    let fetch_s = fetch_alone(&realm).await?;
    eprintln!("bench-pipeline: the fetch alone took {fetch_s:.1} s");

    let mut stack = Stack::start(options(realm))
        .await
        .context("the stack starts")?;
    let mut passed = e2e_part(&stack, fetch_s).await?;
    if events {
        passed &= events_part(&mut stack).await?;
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The stack on the bench realm, every emulator slowed and limited.
fn options(realm: TestRealm<'static>) -> StackOptions {
    let limits = vec![
        "--latency-ms".to_owned(),
        LATENCY_MS.to_string(),
        "--rate-limit".to_owned(),
        RATE_LIMIT.to_string(),
    ];
    StackOptions {
        existing_realm: Some(realm),
        emulator_args: PRODUCTS
            .into_iter()
            .map(|product| (product, limits.clone()))
            .collect(),
        applier_config: format!("concurrency = {APPLIER_CONCURRENCY}"),
        product_config: PRODUCTS
            .into_iter()
            .map(|product| (product, format!("max_concurrency = {MAX_CONCURRENCY}")))
            .collect(),
        // A killed applier's message comes back after 5 s in the e2e stack; a change set
        // at 100,000 users takes longer than that to store, and the keep-alive covers it.
        ..StackOptions::default()
    }
}

/// The fetch alone, as the fetcher does it: seconds.
async fn fetch_alone(realm: &TestRealm<'_>) -> anyhow::Result<f64> {
    let client = Client::new(KeycloakSettings::new(
        realm.base_url(),
        realm.name(),
        realm.client_id(),
        Secret::new(realm.client_secret().to_owned()),
    ))?;
    // Once to warm Keycloak's caches and JIT, as the stack's fetch will find them.
    client.fetch().await.context("the warm-up fetch")?;
    let started = Instant::now();
    let snapshot = client.fetch().await.context("the fetch alone")?;
    let seconds = started.elapsed().as_secs_f64();
    if snapshot.users.len() != bench_realm::USERS {
        bail!(
            "the fetch read {} users, not {}",
            snapshot.users.len(),
            bench_realm::USERS
        );
    }
    Ok(seconds)
}

/// The first sync and the no-op resync; prints the `BENCH e2e` line; answers whether the
/// floors hold.
async fn e2e_part(stack: &Stack, fetch_s: f64) -> anyhow::Result<bool> {
    eprintln!("bench-pipeline: the first sync");
    let (first, first_s) = sync(stack).await.context("the first sync")?;
    let (applied, failed) = totals(&first);
    let mut writes = Vec::new();
    for product in PRODUCTS {
        writes.push((product, stack.writes(product).await?));
    }
    eprintln!("bench-pipeline: first sync {first_s:.1} s, writes {writes:?}");
    // The peaks so far, so a reader can tell the first sync's peak from the resync's.
    eprintln!(
        "bench-pipeline: peak MiB per service after the first sync: {}",
        peaks_text(&stack.service_peaks_kib())
    );
    let most_writes = writes.iter().map(|(_, count)| *count).max().unwrap_or(0);
    let slowest_stage = fetch_s.max(most_writes as f64 / f64::from(RATE_LIMIT));

    eprintln!("bench-pipeline: the no-op resync");
    let (resync, resync_s) = sync(stack).await.context("the resync")?;
    let mut rewritten = Vec::new();
    for (product, before) in &writes {
        let after = stack.writes(*product).await?;
        if after != *before {
            rewritten.push(format!("{product:?}: {} writes", after - before));
        }
    }
    let peaks = stack.service_peaks_kib();
    let peak = |name: &str| peaks.get(name).map_or(f64::NAN, |kib| *kib as f64 / 1024.0);
    // Each service's own peak, for the reader looking for which one sets the figure.
    eprintln!(
        "bench-pipeline: peak MiB per service: {}",
        peaks_text(&peaks)
    );
    let applier_peak = ["applier-jira", "applier-confluence", "applier-bitbucket"]
        .into_iter()
        .map(peak)
        .fold(0.0, f64::max);
    let (fetcher, planner, control_plane) =
        (peak("fetcher"), peak("planner"), peak("control-plane"));
    println!(
        "BENCH e2e users={} first_sync_s={first_s:.1} resync_s={resync_s:.1} \
         resync_vs_fetch={:.2} applied={applied} failed={failed} \
         peak_mib_fetcher={fetcher:.1} peak_mib_planner={planner:.1} \
         peak_mib_applier={applier_peak:.1} peak_mib_control_plane={control_plane:.1}",
        bench_realm::USERS,
        resync_s / fetch_s,
    );
    let mut below = Vec::new();
    for (run, what) in [(&first, "the first sync"), (&resync, "the resync")] {
        if run.state() != RunState::Succeeded {
            below.push(format!("{what} ended {:?}: {}", run.state(), run.reason));
        }
    }
    if failed > 0 {
        below.push(format!("{failed} changes failed"));
    }
    if first_s > FIRST_SYNC_FACTOR * slowest_stage {
        below.push(format!(
            "the first sync took {first_s:.1} s, over {FIRST_SYNC_FACTOR} x the slowest stage \
             ({slowest_stage:.1} s: the fetch {fetch_s:.1} s, or {most_writes} writes at \
             {RATE_LIMIT}/s)"
        ));
    }
    if resync_s > RESYNC_FACTOR * fetch_s {
        below.push(format!(
            "the resync took {resync_s:.1} s, over {RESYNC_FACTOR} x the fetch ({fetch_s:.1} s)"
        ));
    }
    if !rewritten.is_empty() {
        below.push(format!("the resync wrote: {}", rewritten.join(", ")));
    }
    for (name, mib, limit) in [
        ("fetcher", fetcher, MAX_SERVICE_MIB),
        ("appliers", applier_peak, MAX_SERVICE_MIB),
        ("control plane", control_plane, MAX_SERVICE_MIB),
        ("planner", planner, MAX_PLANNER_MIB),
    ] {
        if mib.is_nan() || mib > limit {
            below.push(format!("the {name} peaked at {mib:.1} MiB (limit {limit})"));
        }
    }
    report("e2e", &below);
    Ok(below.is_empty())
}

fn report(workload: &str, below: &[String]) {
    for reason in below {
        eprintln!("bench-pipeline: {workload} below the floor: {reason}");
    }
}

/// Applied and failed changes of `run`, over every product.
fn totals(run: &v1::Run) -> (u64, u64) {
    run.progress
        .iter()
        .fold((0, 0), |(applied, failed), progress| {
            (applied + progress.applied, failed + progress.failed)
        })
}

/// One APPLY run of every product, from StartSync to its end: the run as it ended and the
/// seconds it took.
async fn sync(stack: &Stack) -> anyhow::Result<(v1::Run, f64)> {
    let started = Instant::now();
    let mut client = stack.client.clone();
    let run = client
        .start_sync(v1::StartSyncRequest {
            mode: RunMode::Apply as i32,
            products: Vec::new(),
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
        let mut last_state = None;
        while let Some(seen) = stream.next().await {
            let seen = seen.context("WatchRun")?;
            if last_state != Some(seen.state()) {
                last_state = Some(seen.state());
                eprintln!(
                    "bench-pipeline: run {} {:?} after {:.0} s",
                    seen.run_id,
                    seen.state(),
                    started.elapsed().as_secs_f64()
                );
            }
            if e2e::TERMINAL.contains(&seen.state()) {
                return Ok(seen);
            }
        }
        bail!("WatchRun ended before the run did")
    };
    let ended = tokio::time::timeout(RUN_DEADLINE, follow)
        .await
        .with_context(|| format!("run {} did not end in {RUN_DEADLINE:?}", run.run_id))??;
    Ok((ended, started.elapsed().as_secs_f64()))
}

/// One Keycloak edit of the events part, and what Jira shows once it arrived.
#[derive(Debug, Clone)]
enum Edit {
    Create(String),
    Email(String),
    Join(String),
    Leave(String),
    Disable(String),
    Delete(String),
}

/// The login of the events part's user `index`.
fn edit_user(index: usize) -> String {
    format!("event-user-{index:03}")
}

/// The new email of [`Edit::Email`].
fn new_email(login: &str) -> String {
    format!("{login}@changed.example.org")
}

/// [`EDITS`] edits, kind by kind: 40 users, five edits each.
fn edits() -> Vec<Edit> {
    let users = EDITS / 5;
    let kinds: [fn(usize) -> Edit; 5] = [
        |user| Edit::Create(edit_user(user)),
        |user| Edit::Email(edit_user(user)),
        |user| Edit::Join(edit_user(user)),
        |user| Edit::Leave(edit_user(user)),
        |user| {
            if user.is_multiple_of(2) {
                Edit::Disable(edit_user(user))
            } else {
                Edit::Delete(edit_user(user))
            }
        },
    ];
    kinds.iter().flat_map(|kind| (0..users).map(kind)).collect()
}

/// Deletes the events part's users a stopped earlier run left in the kept realm.
async fn remove_leftovers(realm: &TestRealm<'_>) -> anyhow::Result<()> {
    let found = realm
        .admin(
            Method::GET,
            "users?search=event-user-&briefRepresentation=true&max=1000",
            None,
        )
        .await?;
    for user in found.as_array().into_iter().flatten() {
        if let Some(id) = user["id"].as_str() {
            realm
                .admin(Method::DELETE, &format!("users/{id}"), None)
                .await?;
        }
    }
    Ok(())
}

/// Makes `edit` through the Admin API.
async fn make(realm: &TestRealm<'_>, group_id: &str, edit: &Edit) -> anyhow::Result<()> {
    match edit {
        Edit::Create(login) => {
            realm
                .admin(
                    Method::POST,
                    "users",
                    Some(&json!({
                        "username": login,
                        "email": format!("{login}@example.org"),
                        "emailVerified": true,
                        "firstName": "Event",
                        "lastName": login,
                        "enabled": true,
                    })),
                )
                .await?;
        }
        Edit::Email(login) => {
            let id = realm.user_id(login).await?;
            realm
                .admin(
                    Method::PUT,
                    &format!("users/{id}"),
                    Some(&json!({ "email": new_email(login), "emailVerified": true })),
                )
                .await?;
        }
        Edit::Join(login) | Edit::Leave(login) => {
            let id = realm.user_id(login).await?;
            let method = match edit {
                Edit::Join(_) => Method::PUT,
                _ => Method::DELETE,
            };
            realm
                .admin(method, &format!("users/{id}/groups/{group_id}"), None)
                .await?;
        }
        Edit::Disable(login) => {
            let id = realm.user_id(login).await?;
            realm
                .admin(
                    Method::PUT,
                    &format!("users/{id}"),
                    Some(&json!({ "enabled": false })),
                )
                .await?;
        }
        Edit::Delete(login) => {
            let id = realm.user_id(login).await?;
            realm
                .admin(Method::DELETE, &format!("users/{id}"), None)
                .await?;
        }
    }
    Ok(())
}

/// Whether Jira's user (`GET /rest/api/2/user?expand=groups`, `None` for a 404) shows `edit`.
fn arrived(edit: &Edit, user: Option<&Value>) -> bool {
    let active = user.and_then(|user| user["active"].as_bool());
    let in_group = user.is_some_and(|user| {
        user["groups"]["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|group| group["name"].as_str() == Some(EDIT_GROUP_NAME))
    });
    match edit {
        Edit::Create(_) => active == Some(true),
        Edit::Email(login) => user
            .and_then(|user| user["emailAddress"].as_str())
            .is_some_and(|email| email.eq_ignore_ascii_case(&new_email(login))),
        Edit::Join(_) => in_group,
        Edit::Leave(_) => user.is_some() && !in_group,
        Edit::Disable(_) | Edit::Delete(_) => active == Some(false),
    }
}

/// Jira's view of the users, through its REST API, as an administrator would look.
#[derive(Clone)]
struct Jira {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Jira {
    async fn user(&self, login: &str) -> anyhow::Result<Option<Value>> {
        let response = self
            .http
            .get(format!("{}/rest/api/2/user", self.url))
            .query(&[("username", login), ("expand", "groups")])
            .bearer_auth(&self.token)
            .send()
            .await?;
        match response.status() {
            status if status.is_success() => Ok(Some(response.json().await?)),
            // Not there yet, or over the rate limit (this poll shares it with the
            // applier): no user that shows an edit.
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::TOO_MANY_REQUESTS => Ok(None),
            status => bail!("GET /rest/api/2/user?username={login}: {status}"),
        }
    }

    /// Seconds from now until Jira shows `edit`; `None` past [`SEEN_DEADLINE`].
    async fn until_arrived(&self, edit: &Edit) -> anyhow::Result<Option<f64>> {
        let started = Instant::now();
        let login = match edit {
            Edit::Create(login)
            | Edit::Email(login)
            | Edit::Join(login)
            | Edit::Leave(login)
            | Edit::Disable(login)
            | Edit::Delete(login) => login,
        };
        loop {
            let user = self.user(login).await?;
            if arrived(edit, user.as_ref()) {
                return Ok(Some(started.elapsed().as_secs_f64()));
            }
            if started.elapsed() > SEEN_DEADLINE {
                return Ok(None);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// `name MiB, ...` of each service's peak.
fn peaks_text<'a>(peaks: impl IntoIterator<Item = (&'a String, &'a u64)>) -> String {
    peaks
        .into_iter()
        .map(|(name, kib)| format!("{name} {:.1}", *kib as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The events part; prints the `BENCH events` line; answers whether the floors hold.
async fn events_part(stack: &mut Stack) -> anyhow::Result<bool> {
    turn_events_on(&stack.realm).await?;
    stack.terminate_service("fetcher")?;
    stack.set_service_env(
        &format!(
            "KEYSYNC_KEYCLOAK__{}__EVENTS__ENABLED",
            CONNECTOR.to_uppercase()
        ),
        "true",
    );
    stack.start_service("fetcher")?;
    until_idle(stack)
        .await
        .context("the follower's first sync")?;
    let writes_before = stack.writes(Product::Jira).await?;

    let jira = Jira {
        http: reqwest::Client::new(),
        url: stack.emulators[&Product::Jira].url.clone(),
        token: stack.secrets.product_token.clone(),
    };
    let group_id = stack.realm.group_id(EDIT_GROUP).await?;
    let mut watching = Vec::new();
    let mut next = tokio::time::Instant::now();
    for edit in edits() {
        tokio::time::sleep_until(next).await;
        next += EDIT_EVERY;
        make(&stack.realm, &group_id, &edit)
            .await
            .with_context(|| format!("{edit:?}"))?;
        let jira = jira.clone();
        watching.push(tokio::spawn(async move {
            let seen = jira.until_arrived(&edit).await;
            (edit, seen)
        }));
    }
    let mut seconds = Vec::new();
    let mut missed = Vec::new();
    for watch in watching {
        let (edit, seen) = watch.await?;
        match seen? {
            Some(after) => seconds.push(after),
            None => missed.push(edit),
        }
    }
    let writes_after_edits = stack.writes(Product::Jira).await?;
    eprintln!(
        "bench-pipeline: the edits made {} Jira writes; a full sync now",
        writes_after_edits - writes_before
    );
    let (full, _) = sync(stack).await.context("the final full sync")?;
    let rewritten = stack.writes(Product::Jira).await? - writes_after_edits;
    remove_leftovers(&stack.realm).await?;

    seconds.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        seconds
            .get(((seconds.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let (p50, p95, max) = (quantile(0.5), quantile(0.95), quantile(1.0));
    println!(
        "BENCH events edits={EDITS} p50_s={p50:.2} p95_s={p95:.2} max_s={max:.2} missed={}",
        missed.len() as u64 + u64::from(rewritten > 0)
    );
    let mut below = Vec::new();
    if !missed.is_empty() {
        below.push(format!("not in Jira within {SEEN_DEADLINE:?}: {missed:?}"));
    }
    if full.state() != RunState::Succeeded || rewritten > 0 {
        below.push(format!(
            "the final full sync ended {:?} with {rewritten} Jira writes: the events missed them",
            full.state()
        ));
    }
    if p95.is_nan() || p95 > MAX_P95_S {
        below.push(format!("p95 {p95:.2} s is over {MAX_P95_S} s"));
    }
    report("events", &below);
    Ok(below.is_empty())
}

/// Makes the realm save admin events with details and the user events keysync reads.
async fn turn_events_on(realm: &TestRealm<'_>) -> anyhow::Result<()> {
    realm.save_events(&keycloak::events::USER_EVENT_TYPES).await
}

/// Waits until the follower's first-start run (trigger EVENT) has ended and no run is
/// active.
async fn until_idle(stack: &Stack) -> anyhow::Result<()> {
    let until = Instant::now() + RUN_DEADLINE;
    loop {
        let runs = stack.runs().await?;
        let first_start = runs
            .iter()
            .any(|run| run.trigger() == v1::RunTrigger::Event);
        if first_start && runs.iter().all(|run| e2e::TERMINAL.contains(&run.state())) {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("the follower's first run never ended: {runs:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
