//! What every scenario shares: the suite's settings (`KEYSYNC_RELIABILITY_RUNS`,
//! `KEYSYNC_RELIABILITY_FULL`), the stack a scenario runs on, waiting for a run that may
//! outlive a killed service, the checks of a finished run, and the `RELIABILITY` line.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use e2e::{PRODUCTS, Stack, StackOptions};
use proto::v1::{ChangeOutcome, Product, Run, RunState};
use serde_json::Value;

use crate::directory::{self, Person};

/// How long a run under faults may take: a killed planner's message comes back only after
/// its consumer's two-minute ack wait.
pub const RUN_DEADLINE: Duration = Duration::from_secs(300);

/// How often the scenarios look at a run or an emulator.
pub const POLL: Duration = Duration::from_millis(10);

/// `KEYSYNC_RELIABILITY_RUNS`: how many times each scenario runs; default 1.
pub fn runs() -> usize {
    std::env::var("KEYSYNC_RELIABILITY_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .filter(|runs| *runs > 0)
        .unwrap_or(1)
}

/// `KEYSYNC_RELIABILITY_FULL=1`: the whole suite, not only the fast subset.
pub fn full() -> bool {
    std::env::var("KEYSYNC_RELIABILITY_FULL").is_ok_and(|value| value == "1")
}

/// Whether a scenario of the full suite is skipped (and says so).
pub fn skipped_unless_full(scenario: &str) -> bool {
    if full() {
        return false;
    }
    println!(
        "RELIABILITY {scenario} skipped reason=only-with-KEYSYNC_RELIABILITY_FULL=1 (make reliability)"
    );
    true
}

/// The shape of a scenario's deployment.
#[derive(Clone)]
pub struct Shape {
    /// People of the realm ([`directory::people`]).
    pub people: usize,
    /// `--latency-ms` of the Jira emulator, whose applier has `max_concurrency = 2`, so
    /// the run lasts long enough to break something in its middle.
    pub jira_latency_ms: u64,
    /// `[planner] change_set_size`.
    pub change_set_size: usize,
    /// `keycloak.e2e.page_size`, so that the fetch takes several pages.
    pub page_size: u32,
    /// More emulator flags.
    pub emulator_args: BTreeMap<Product, Vec<String>>,
    /// More environment of every service.
    pub service_env: Vec<(String, String)>,
}

impl Shape {
    /// A run of ~2.25 changes per person and product, slowed down on Jira.
    pub fn new(people: usize, jira_latency_ms: u64) -> Shape {
        Shape {
            people,
            jira_latency_ms,
            change_set_size: 10,
            page_size: 25,
            emulator_args: BTreeMap::new(),
            service_env: Vec::new(),
        }
    }
}

/// A stack for `people` shaped by `shape`: every message of a killed fetcher or applier
/// comes back within 5 s.
pub async fn start_stack(people: &[Person], shape: &Shape) -> anyhow::Result<Stack> {
    let mut emulator_args = shape.emulator_args.clone();
    emulator_args
        .entry(Product::Jira)
        .or_default()
        .extend(["--latency-ms".to_owned(), shape.jira_latency_ms.to_string()]);
    let mut service_env = vec![(
        "KEYSYNC_KEYCLOAK__E2E__PAGE_SIZE".to_owned(),
        shape.page_size.to_string(),
    )];
    service_env.extend(shape.service_env.iter().cloned());
    Stack::start(StackOptions {
        realm: directory::realm(people),
        emulator_args,
        product_config: [(Product::Jira, "max_concurrency = 2".to_owned())].into(),
        extra_config: format!(
            "[planner]\nchange_set_size = {}\n\n[fetcher]\nack_wait_seconds = 5\n",
            shape.change_set_size
        ),
        service_env,
        ..StackOptions::default()
    })
    .await
    .context("the stack starts")
}

/// Polls GetRun until the run ends, through a control plane that may be down for a while.
pub async fn wait_terminal(stack: &Stack, run_id: &str, deadline: Duration) -> anyhow::Result<Run> {
    let until = Instant::now() + deadline;
    let mut last = None;
    loop {
        match stack.get_run(run_id).await {
            Ok(run) if e2e::TERMINAL.contains(&run.state()) => return Ok(run),
            Ok(run) => last = Some(run),
            Err(_) => {}
        }
        if Instant::now() > until {
            bail!(
                "run {run_id} did not end within {deadline:?}; last seen: {:?} {:?}",
                last.as_ref().map(Run::state),
                last.as_ref().map(|run| &run.progress)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls GetRun until the run has reached `state` or a later one (the states in their
/// order); answers the state seen then.
pub async fn wait_state(stack: &Stack, run_id: &str, state: RunState) -> anyhow::Result<RunState> {
    let until = Instant::now() + e2e::DEADLINE;
    loop {
        let seen = stack.get_run(run_id).await?.state();
        if seen as i32 >= state as i32 {
            return Ok(seen);
        }
        if Instant::now() > until {
            bail!("run {run_id} stayed {seen:?}, never {state:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the product has taken at least `writes` writes.
pub async fn wait_writes(stack: &Stack, product: Product, writes: u64) -> anyhow::Result<()> {
    let until = Instant::now() + e2e::DEADLINE;
    while stack.writes(product).await? < writes {
        if Instant::now() > until {
            bail!("{product:?} did not take {writes} writes");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// How many writes a product that starts empty takes in a run for `people`.
pub fn writes_of(people: &[Person]) -> u64 {
    let expected = directory::expected(people);
    (expected.accounts.len() + expected.memberships.len() + expected.groups.len()) as u64
}

/// What one run came to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The run ended as the scenario expects (SUCCEEDED; FAILED or HELD for R4 and R5).
    pub succeeded: bool,
    /// Every product holds exactly what the scenario expects.
    pub expected_state: bool,
    pub lost: u64,
    pub duplicated: u64,
    /// Planned changes of the run, every product.
    pub changes: u64,
    /// What went wrong, for the log.
    pub notes: Vec<String>,
}

/// Checks a run that should have synced `people` into empty products: SUCCEEDED, every
/// product holding exactly [`directory::expected`], each planned change one result, each
/// account created once.
pub async fn check_complete(
    stack: &Stack,
    run: &Run,
    people: &[Person],
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        succeeded: run.state() == RunState::Succeeded,
        expected_state: true,
        ..Outcome::default()
    };
    if !outcome.succeeded {
        outcome
            .notes
            .push(format!("run ended {:?}: {}", run.state(), run.reason));
    }
    let expected = directory::expected(people);
    for product in PRODUCTS {
        let state = stack.emulator_state(product).await?;
        let holdings = directory::holdings(
            &state,
            &directory::logins(people),
            &directory::group_names(),
        )?;
        if holdings != expected {
            outcome.expected_state = false;
            outcome.notes.push(format!(
                "{product:?}: {} of {} accounts, {} of {} memberships, groups {:?}",
                holdings.accounts.len(),
                expected.accounts.len(),
                holdings.memberships.len(),
                expected.memberships.len(),
                holdings.groups
            ));
        }
        outcome.lost += expected
            .accounts
            .keys()
            .filter(|login| !holdings.accounts.contains_key(*login))
            .count() as u64;
        outcome.lost += expected
            .memberships
            .difference(&holdings.memberships)
            .count() as u64;
        outcome.duplicated += duplicate_accounts(&state, holdings.accounts.len() as u64);
        let (lost, duplicated, changes) =
            check_changes(stack, run, product, &mut outcome.notes).await?;
        outcome.lost += lost;
        outcome.duplicated += duplicated;
        outcome.changes += changes;
    }
    Ok(outcome)
}

/// Accounts created more than once: a login twice in the product, or more successful
/// creations than accounts (the products start empty).
fn duplicate_accounts(state: &Value, accounts: u64) -> u64 {
    let logins: Vec<&str> = state["accounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|account| account["login"].as_str())
        .collect();
    let unique: BTreeSet<&str> = logins.iter().copied().collect();
    let twice = (logins.len() - unique.len()) as u64;
    let created = state["counters"]["writes"]["create_account"]
        .as_u64()
        .unwrap_or(0);
    twice.max(created.saturating_sub(accounts))
}

/// The run's changes for `product` against its plan: `(lost, duplicated, planned)`, lost
/// being the planned changes without a result, duplicated those listed twice.
async fn check_changes(
    stack: &Stack,
    run: &Run,
    product: Product,
    notes: &mut Vec<String>,
) -> anyhow::Result<(u64, u64, u64)> {
    let planned: u64 = run
        .plan
        .iter()
        .filter(|summary| summary.product() == product)
        .flat_map(|summary| summary.changes_by_op.values())
        .sum();
    let records = stack.changes(&run.run_id, product).await?;
    let mut results: BTreeMap<&str, u64> = BTreeMap::new();
    let mut lost = 0;
    for record in &records {
        let Some(change) = record.change.as_ref() else {
            continue;
        };
        *results.entry(change.id.as_str()).or_default() += 1;
        match record.outcome() {
            ChangeOutcome::Applied | ChangeOutcome::AlreadyDone => {}
            ChangeOutcome::Unspecified | ChangeOutcome::Planned => lost += 1,
            other => notes.push(format!(
                "{product:?} {:?} {}: {other:?} {}",
                change.op(),
                change.id,
                record.message
            )),
        }
    }
    let duplicated = results.values().map(|count| count - 1).sum();
    lost += planned.saturating_sub(results.len() as u64);
    Ok((lost, duplicated, planned))
}

/// The counts of one scenario over its runs; [`Tally::finish`] prints the line and asserts.
pub struct Tally {
    scenario: String,
    started: Instant,
    runs: usize,
    succeeded: usize,
    expected_state: usize,
    lost: u64,
    duplicated: u64,
    changes: Vec<u64>,
    notes: Vec<String>,
}

impl Tally {
    pub fn new(scenario: &str) -> Tally {
        Tally {
            scenario: scenario.to_owned(),
            started: Instant::now(),
            runs: 0,
            succeeded: 0,
            expected_state: 0,
            lost: 0,
            duplicated: 0,
            changes: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Counts one run; an error (a run that did not end, a stack that did not start) counts
    /// as a run that neither succeeded nor ended in the expected state.
    pub fn add(&mut self, run: usize, outcome: anyhow::Result<Outcome>) {
        self.runs += 1;
        match outcome {
            Ok(outcome) => {
                self.succeeded += usize::from(outcome.succeeded);
                self.expected_state += usize::from(outcome.expected_state);
                self.lost += outcome.lost;
                self.duplicated += outcome.duplicated;
                self.changes.push(outcome.changes);
                self.notes.extend(
                    outcome
                        .notes
                        .into_iter()
                        .map(|note| format!("run {run}: {note}")),
                );
            }
            Err(error) => self.notes.push(format!("run {run}: {error:#}")),
        }
    }

    /// A remark for the log, not counted.
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Prints the `RELIABILITY` line (and the notes), then asserts every run succeeded,
    /// ended in the expected state, and nothing was lost or duplicated.
    pub fn finish(self) {
        let seconds = self.started.elapsed().as_secs_f64();
        for note in self.notes.iter().take(40) {
            println!("  {} note: {note}", self.scenario);
        }
        println!(
            "RELIABILITY {} runs={} succeeded={} expected_state={} lost={} duplicated={} seconds={seconds:.1}",
            self.scenario,
            self.runs,
            self.succeeded,
            self.expected_state,
            self.lost,
            self.duplicated,
        );
        if self.changes.iter().any(|changes| *changes > 0) {
            println!(
                "  {} planned changes per run: {:?}",
                self.scenario, self.changes
            );
        }
        assert_eq!(self.lost, 0, "{}: changes lost", self.scenario);
        assert_eq!(self.duplicated, 0, "{}: changes duplicated", self.scenario);
        assert_eq!(
            self.succeeded, self.runs,
            "{}: runs that did not end as expected",
            self.scenario
        );
        assert_eq!(
            self.expected_state, self.runs,
            "{}: runs that left another state",
            self.scenario
        );
    }
}
