//! The keysync planner: for each run, it joins the fetcher's snapshot with the state of
//! every product of the run, plans each product with its policy, stores the whole plan and,
//! when the run may write, publishes the change sets the appliers consume.
//!
//! # Protocol
//!
//! One durable consumer, `planner`, reads `SnapshotReady`, `StateReady`, `StateFailed` and
//! `RunApproved` from the events stream; replicas share it. Per run:
//!
//! 1. The snapshot and each state are recorded in the run's join ([`join`], KV bucket
//!    `{prefix}-planner`), so a restart loses nothing. The products of the run are those of
//!    `SnapshotReady`, or every product enabled here when it names none.
//! 2. A `StateFailed` of one of them, a product not enabled here, or a state that has not
//!    arrived `planner.state_timeout_seconds` after the snapshot fails the run:
//!    `PlanFailed` is published, and nothing else.
//! 3. Once every state is there, the snapshot and the announced states are loaded
//!    (checksums checked), each product is planned with [`model::plan::plan`], and one
//!    [`proto::v1::Plan`] for all products (changes in plan order, product by product;
//!    conflicts; a summary per product; held with the reasons if any product's plan is held)
//!    is stored as `{run_id}.pb.zst` in `{prefix}-plans`. `PlanReady` announces it (message
//!    id `{run_id}/plan`). A missing or damaged object fails the run instead.
//! 4. Only when the run's mode is APPLY and the plan is not held are the change sets
//!    published ([`change_sets`]). A simulated run stops after step 3.
//! 5. `RunApproved` loads the stored plan and publishes its change sets unchanged, with
//!    the same message ids, so a repeated approval is deduplicated.
//!
//! A message is acknowledged once its effect is recorded; a failure of the bus itself
//! (not of the run's data) leaves it to be redelivered. A message that does not decode is
//! dead-lettered and counted.
//!
//! While it runs, the planner serves `[health]` (`bus::health`: ready while it pulls from
//! its consumer) and records its consumer's lag (`bus::lag`).

pub mod change_sets;
pub mod convert;
pub mod join;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
pub use bus::health::HealthSettings;
use bus::health::{Health, HealthServer};
use bus::lag::ConsumerLag;
use bus::objects::ObjectError;
use bus::{Bus, Topology};
use cache::Cache;
use cache::settings::{BusSettings, ProductsSettings};
use config::Invalid;
use futures::StreamExt;
use model::policy::ValidPolicy;
use model::state::Product;
use opentelemetry::KeyValue;
use proto::v1;
use serde::Deserialize;
use tracing::Instrument;

use crate::join::{Decision, Join, Joins, Status};

/// The durable consumer every planner replica shares.
pub const CONSUMER: &str = "planner";

/// How long a message may be in hand before JetStream redelivers it.
const ACK_WAIT: Duration = Duration::from_secs(120);

/// How long [`App::try_step`] waits for a message.
const STEP_WAIT: Duration = Duration::from_millis(500);

/// The planner's settings: the sections of the shared configuration file it reads. Other
/// top-level sections are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    /// `[bus]`.
    #[serde(default)]
    pub bus: BusSettings,
    /// `[products.*]`: which products are enabled, and each one's policy.
    #[serde(default)]
    pub products: ProductsSettings,
    /// `[planner]`.
    #[serde(default)]
    pub planner: PlannerSettings,
    /// `[health]`: the HTTP liveness and readiness endpoints (see `bus::health`).
    #[serde(default)]
    pub health: HealthSettings,
}

/// `[planner]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannerSettings {
    /// The most changes in one change set: 1 to 10,000. Default: 500.
    #[serde(default = "default_change_set_size")]
    pub change_set_size: usize,
    /// How long after the snapshot a run waits for each product's state before it fails,
    /// in seconds; at least 1. Default: 600.
    #[serde(default = "default_state_timeout_seconds")]
    pub state_timeout_seconds: u64,
}

impl Default for PlannerSettings {
    fn default() -> PlannerSettings {
        PlannerSettings {
            change_set_size: default_change_set_size(),
            state_timeout_seconds: default_state_timeout_seconds(),
        }
    }
}

fn default_change_set_size() -> usize {
    500
}

fn default_state_timeout_seconds() -> u64 {
    600
}

impl Settings {
    /// Checks every section the planner reads and compiles the policies; no IO.
    pub fn validate(&self) -> Result<BTreeMap<Product, ValidPolicy>, Invalid> {
        self.bus.validate().map_err(|error| error.within("bus"))?;
        if !(1..=10_000).contains(&self.planner.change_set_size) {
            return Err(Invalid::new(
                "planner.change_set_size",
                format!("must be 1 to 10000, not {}", self.planner.change_set_size),
            ));
        }
        if self.planner.state_timeout_seconds == 0 {
            return Err(Invalid::new(
                "planner.state_timeout_seconds",
                "must be at least 1",
            ));
        }
        let mut policies = BTreeMap::new();
        for product in self.products.enabled() {
            let Some(section) = self.products.get(product) else {
                continue;
            };
            let policy = section
                .valid_policy()
                .map_err(|error| error.within(&format!("products.{product}")))?;
            policies.insert(product, policy);
        }
        Ok(policies)
    }
}

/// Why the planner could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid settings")]
    Config(#[from] Invalid),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error("key-value bucket {bucket}")]
    Kv {
        bucket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("fetching from consumer {consumer}")]
    Consume {
        consumer: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Health(#[from] bus::health::HealthError),
}

/// What one [`App::try_step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// No message arrived.
    Idle,
    /// A message that does not decode went to the dead-letter stream.
    DeadLettered,
    /// The message is recorded; the run waits for more.
    Waiting { run_id: String },
    /// The plan is stored and announced; `change_sets` were published (none when held or
    /// simulated).
    Planned {
        run_id: String,
        held: bool,
        change_sets: usize,
    },
    /// `PlanFailed` was published.
    Failed { run_id: String, reason: String },
    /// An approval published the stored plan's change sets.
    Approved { run_id: String, change_sets: usize },
    /// The message changed nothing: its run is finished, or it is not for the planner.
    Ignored,
}

/// Counters, made once.
struct Metrics {
    plans: opentelemetry::metrics::Counter<u64>,
    change_sets: opentelemetry::metrics::Counter<u64>,
    dead_letters: opentelemetry::metrics::Counter<u64>,
}

impl Metrics {
    /// Starts the counters of rare events at zero, so that they are exported (and a
    /// dashboard shows 0, not "no data") before the first one happens.
    fn start_at_zero(&self) {
        for outcome in ["planned", "held", "failed"] {
            self.plans.add(0, &[KeyValue::new("outcome", outcome)]);
        }
        use bus::BusMessage;
        for kind in [
            v1::SnapshotReady::KIND,
            v1::StateReady::KIND,
            v1::StateFailed::KIND,
            v1::RunApproved::KIND,
        ] {
            self.dead_letters.add(
                0,
                &[
                    KeyValue::new("service", "planner"),
                    KeyValue::new("kind", kind),
                ],
            );
        }
    }

    fn new() -> Metrics {
        let meter = opentelemetry::global::meter("keysync");
        Metrics {
            plans: meter
                .u64_counter("keysync_plans_total")
                .with_description("Runs planned, by outcome (planned, held, failed).")
                .build(),
            change_sets: meter
                .u64_counter("keysync_change_sets_published_total")
                .with_description("Change sets the planner published, by product.")
                .build(),
            dead_letters: meter
                .u64_counter("keysync_dead_letters_total")
                .with_description(
                    "Messages that did not decode and went to the dead-letter stream.",
                )
                .build(),
        }
    }
}

/// Whether a run's failure lies in its data (it fails the run) or in the bus (retry).
enum Failure {
    Run(String),
    Bus(Error),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Bus(error)
    }
}

/// The running planner.
pub struct App {
    bus: Bus,
    cache: Cache,
    joins: Joins,
    consumer: PullConsumer,
    enabled: Vec<Product>,
    policies: BTreeMap<Product, ValidPolicy>,
    change_set_size: usize,
    state_timeout: Duration,
    metrics: Metrics,
    health: Health,
    health_server: Option<HealthServer>,
}

/// What the run loop waits for.
enum Event {
    Shutdown,
    Tick,
    Message(Box<jetstream::Message>),
    ConsumerFailed(Box<Error>),
}

impl App {
    /// Validates the settings, connects to the bus and binds the durable consumer.
    pub async fn build(settings: Settings) -> Result<App, Error> {
        let policies = settings.validate()?;
        let bus = Bus::connect(&settings.bus.nats_url, Topology::new(&settings.bus.prefix)).await?;
        let topology = bus.topology().clone();
        let filters = [
            topology.snapshot_ready(),
            topology.state_ready("*"),
            topology.state_failed("*"),
            topology.run_approved(),
        ];
        let consumer = bus
            .durable_consumer_of_subjects(&topology.events_stream(), CONSUMER, &filters, ACK_WAIT)
            .await?;
        let joins = Joins::open(&bus).await?;
        let health = Health::new(bus.client().clone());
        health.expect(CONSUMER);
        let health_server = HealthServer::bind(&settings.health).await?;
        let metrics = Metrics::new();
        metrics.start_at_zero();
        Ok(App {
            cache: Cache::new(bus.clone()),
            bus,
            joins,
            consumer,
            enabled: policies.keys().copied().collect(),
            policies,
            change_set_size: settings.planner.change_set_size,
            state_timeout: Duration::from_secs(settings.planner.state_timeout_seconds),
            metrics,
            health,
            health_server,
        })
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The address of the HTTP health endpoints, when `[health] listen` is set; they are
    /// served while [`App::run_until_stopped`] runs.
    pub fn health_addr(&self) -> Option<std::net::SocketAddr> {
        self.health_server.as_ref().map(HealthServer::local_addr)
    }

    /// Whether the planner can take work, as `/readyz` answers it.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Handles messages and state timeouts until `shutdown` completes. A message in hand is
    /// finished first; nothing is taken after `shutdown`. Serves the health endpoints
    /// meanwhile, and stops them before it returns.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let health = self
            .health_server
            .take()
            .map(|server| server.spawn(self.health.clone()));
        let lag = ConsumerLag::spawn(vec![self.consumer.clone()], bus::lag::DEFAULT_INTERVAL);
        let ran = self.run_loop(shutdown).await;
        self.health.set_stopping();
        lag.stop().await;
        bus::health::stop(health).await;
        ran
    }

    async fn run_loop(&self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        tokio::pin!(shutdown);
        let tick =
            (self.state_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One long-lived pull of one message at a time: unlike a fetch, polling it again
        // after the ticker or the shutdown won loses nothing in flight.
        let mut messages = self.messages().await?;
        self.health.set_ready(CONSUMER, true);
        tracing::info!(products = ?self.enabled, "The planner is running.");
        loop {
            let event = tokio::select! {
                biased;
                () = &mut shutdown => Event::Shutdown,
                _ = ticker.tick() => Event::Tick,
                message = messages.next() => match message {
                    Some(Ok(message)) => Event::Message(Box::new(message)),
                    Some(Err(error)) => Event::ConsumerFailed(Box::new(Error::Consume {
                        consumer: CONSUMER.to_owned(),
                        source: Box::new(error),
                    })),
                    None => Event::ConsumerFailed(Box::new(Error::Consume {
                        consumer: CONSUMER.to_owned(),
                        source: "the message stream ended".into(),
                    })),
                },
            };
            match event {
                Event::Shutdown => break,
                Event::Tick => {
                    if let Err(error) = self.check_deadlines().await {
                        tracing::warn!(error = %error, "Could not check the runs waiting for a state.");
                    }
                }
                Event::ConsumerFailed(error) => {
                    tracing::warn!(error = %error, "The consumer failed; binding it again in a second.");
                    self.health.set_ready(CONSUMER, false);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    messages = self.messages().await?;
                    self.health.set_ready(CONSUMER, true);
                }
                Event::Message(message) => {
                    if let Err(error) = self.handle(*message).await {
                        tracing::warn!(error = %error, "A message will be redelivered after an error of the bus.");
                    }
                }
            }
        }
        tracing::info!("The planner stopped.");
        Ok(())
    }

    /// Takes one message, if one arrives within half a second, and handles it.
    pub async fn try_step(&self) -> Result<StepOutcome, Error> {
        match self.next_message(STEP_WAIT).await? {
            None => Ok(StepOutcome::Idle),
            Some(message) => self.handle(message).await,
        }
    }

    /// Fails every run whose states did not arrive in time. Answers the failed run ids.
    pub async fn check_deadlines(&self) -> Result<Vec<String>, Error> {
        let mut failed = Vec::new();
        for run_id in self.joins.run_ids().await? {
            let Some(join) = self.joins.get(&run_id).await? else {
                continue;
            };
            if join.snapshot.is_none() {
                continue;
            }
            if let Decision::Fail { reason } =
                join.decide(&self.enabled, self.state_timeout, SystemTime::now())
            {
                let span = tracing::info_span!("plan_run", run_id = %run_id);
                self.fail_run(&run_id, &reason).instrument(span).await?;
                failed.push(run_id);
            }
        }
        Ok(failed)
    }

    /// The consumer's messages, pulled one at a time.
    async fn messages(&self) -> Result<jetstream::consumer::pull::Stream, Error> {
        self.consumer
            .stream()
            .max_messages_per_batch(1)
            .messages()
            .await
            .map_err(|error| Error::Consume {
                consumer: CONSUMER.to_owned(),
                source: Box::new(error),
            })
    }

    async fn next_message(&self, wait: Duration) -> Result<Option<jetstream::Message>, Error> {
        let consume_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Consume {
            consumer: CONSUMER.to_owned(),
            source,
        };
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .map_err(|error| consume_error(Box::new(error)))?;
        match batch.next().await {
            None => Ok(None),
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(error)) => Err(consume_error(error)),
        }
    }

    /// Handles one message and acknowledges it, or leaves it for redelivery when the bus
    /// failed.
    async fn handle(&self, message: jetstream::Message) -> Result<StepOutcome, Error> {
        let outcome = match self.dispatch(&message).await {
            Ok(outcome) => outcome,
            Err(error) => {
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return Err(error);
            }
        };
        if outcome != StepOutcome::DeadLettered {
            message.double_ack().await.map_err(bus::Error::Ack)?;
        }
        Ok(outcome)
    }

    async fn dispatch(&self, message: &jetstream::Message) -> Result<StepOutcome, Error> {
        let topology = self.bus.topology();
        let subject = message.subject.as_str();
        let prefix = topology.prefix();
        let headers = message.headers.as_ref();
        if subject == topology.snapshot_ready() {
            let Some(ready) = self.decode::<v1::SnapshotReady>(message).await? else {
                return Ok(StepOutcome::DeadLettered);
            };
            let span = run_span(&ready.run_id, "snapshot_ready", headers);
            let run_id = ready.run_id.clone();
            return self
                .record(&run_id, move |join| {
                    join.add_snapshot(ready.clone(), SystemTime::now())
                })
                .instrument(span)
                .await;
        }
        if subject.starts_with(&format!("{prefix}.state.ready.")) {
            let Some(ready) = self.decode::<v1::StateReady>(message).await? else {
                return Ok(StepOutcome::DeadLettered);
            };
            let span = run_span(&ready.run_id, "state_ready", headers);
            let run_id = ready.run_id.clone();
            return self
                .record(&run_id, move |join| join.add_state(ready.clone()))
                .instrument(span)
                .await;
        }
        if subject.starts_with(&format!("{prefix}.state.failed.")) {
            let Some(failed) = self.decode::<v1::StateFailed>(message).await? else {
                return Ok(StepOutcome::DeadLettered);
            };
            let span = run_span(&failed.run_id, "state_failed", headers);
            let run_id = failed.run_id.clone();
            return self
                .record(&run_id, move |join| join.add_failure(failed.clone()))
                .instrument(span)
                .await;
        }
        if subject == topology.run_approved() {
            let Some(approved) = self.decode::<v1::RunApproved>(message).await? else {
                return Ok(StepOutcome::DeadLettered);
            };
            let span = run_span(&approved.run_id, "run_approved", headers);
            return self.approve(&approved).instrument(span).await;
        }
        tracing::debug!(subject, "Ignored a message the planner does not handle.");
        Ok(StepOutcome::Ignored)
    }

    async fn decode<M: bus::BusMessage>(
        &self,
        message: &jetstream::Message,
    ) -> Result<Option<M>, Error> {
        let decoded = self.bus.decode_or_dead_letter::<M>(message).await?;
        if decoded.is_none() {
            self.metrics.dead_letters.add(
                1,
                &[
                    KeyValue::new("service", "planner"),
                    KeyValue::new("kind", M::KIND),
                ],
            );
        }
        Ok(decoded)
    }

    /// Records a message in its run's join, then plans or fails the run if it can.
    async fn record(&self, run_id: &str, change: impl Fn(&mut Join)) -> Result<StepOutcome, Error> {
        let join = self
            .joins
            .update(run_id, |join| {
                if !join.is_finished() {
                    change(join);
                }
            })
            .await?;
        match join.decide(&self.enabled, self.state_timeout, SystemTime::now()) {
            Decision::Done => Ok(StepOutcome::Ignored),
            Decision::Wait { missing } => {
                tracing::info!(
                    ?missing,
                    "The run waits for its snapshot or product states."
                );
                Ok(StepOutcome::Waiting {
                    run_id: run_id.to_owned(),
                })
            }
            Decision::Fail { reason } => {
                self.fail_run(run_id, &reason).await?;
                Ok(StepOutcome::Failed {
                    run_id: run_id.to_owned(),
                    reason,
                })
            }
            Decision::Plan { products } => self.plan_run(run_id, &join, &products).await,
        }
    }

    /// Plans a complete run, stores and announces the plan, and publishes its change sets
    /// when the run may write.
    async fn plan_run(
        &self,
        run_id: &str,
        join: &Join,
        products: &[(Product, v1::ObjectRef)],
    ) -> Result<StepOutcome, Error> {
        let plan = match self.build_plan(run_id, join, products).await {
            Ok(plan) => plan,
            Err(Failure::Bus(error)) => return Err(error),
            Err(Failure::Run(reason)) => {
                self.fail_run(run_id, &reason).await?;
                return Ok(StepOutcome::Failed {
                    run_id: run_id.to_owned(),
                    reason,
                });
            }
        };
        let topology = self.bus.topology();
        let object = self
            .bus
            .put_object(&topology.plans_bucket(), &format!("{run_id}.pb.zst"), &plan)
            .await?;
        let ready = v1::PlanReady {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            products: plan.products.clone(),
            plan: Some(object),
            held: plan.held,
            hold_reason: plan.hold_reason.clone(),
        };
        self.bus
            .publish(&topology.plan_ready(), &ready, &format!("{run_id}/plan"))
            .await?;
        let applies = plan.mode == v1::RunMode::Apply as i32;
        let change_sets = if applies && !plan.held {
            self.publish_change_sets(&plan).await?
        } else {
            0
        };
        self.joins
            .update(run_id, |join| join.status = Status::Planned as i32)
            .await?;
        let outcome = if plan.held { "held" } else { "planned" };
        self.metrics
            .plans
            .add(1, &[KeyValue::new("outcome", outcome)]);
        tracing::info!(
            changes = plan.changes.len(),
            held = plan.held,
            hold_reason = %plan.hold_reason,
            mode = ?v1::RunMode::try_from(plan.mode).unwrap_or_default(),
            change_sets,
            "Planned the run."
        );
        Ok(StepOutcome::Planned {
            run_id: run_id.to_owned(),
            held: plan.held,
            change_sets,
        })
    }

    async fn build_plan(
        &self,
        run_id: &str,
        join: &Join,
        products: &[(Product, v1::ObjectRef)],
    ) -> Result<v1::Plan, Failure> {
        let Some(ready) = &join.snapshot else {
            return Err(Failure::Run("the run has no snapshot".to_owned()));
        };
        let Some(snapshot_ref) = &ready.snapshot else {
            return Err(Failure::Run(
                "SnapshotReady names no snapshot object".to_owned(),
            ));
        };
        let snapshot = match self.bus.get_object::<v1::Snapshot>(snapshot_ref).await {
            Ok(snapshot) => snapshot,
            Err(error) if error.is_permanent() => {
                return Err(Failure::Run(format!(
                    "the snapshot is unusable: {}",
                    error_chain(&error)
                )));
            }
            Err(error) => return Err(Failure::Bus(error.into())),
        };
        let snapshot = convert::snapshot_to_model(&snapshot);
        let mut plan = v1::Plan {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            mode: ready.mode,
            ..Default::default()
        };
        let mut hold_reasons = Vec::new();
        for (product, object) in products {
            let product = *product;
            let cached = match self.cache.load_announced(product, object).await {
                Ok(cached) => cached,
                Err(error) if error.is_permanent() => {
                    return Err(Failure::Run(format!(
                        "the state of {product} is unusable: {}",
                        error_chain(&error)
                    )));
                }
                Err(error) => return Err(Failure::Bus(error.into())),
            };
            let state = cache::convert::state_to_model(&cached).map_err(|error| {
                Failure::Run(format!("the state of {product} is unusable: {error}"))
            })?;
            let Some(policy) = self.policies.get(&product) else {
                return Err(Failure::Run(format!("{product} has no policy")));
            };
            let product_plan = model::plan::plan(&snapshot, &state, policy);
            for diagnostic in &product_plan.diagnostics {
                tracing::debug!(
                    %product,
                    kind = ?diagnostic.kind,
                    subject = %diagnostic.subject,
                    message = %diagnostic.message,
                    "The plan reports a problem."
                );
            }
            let (changes, conflicts, summary) = convert::plan_to_proto(&product_plan, &state);
            if let Some(hold) = &product_plan.hold {
                hold_reasons.push(format!("{product}: {}", hold.reason));
            }
            plan.changes.extend(changes);
            plan.conflicts.extend(conflicts);
            plan.products.push(summary);
        }
        plan.held = !hold_reasons.is_empty();
        plan.hold_reason = hold_reasons.join("; ");
        Ok(plan)
    }

    async fn publish_change_sets(&self, plan: &v1::Plan) -> Result<usize, Error> {
        let sets = change_sets::split(plan, self.change_set_size);
        for (product, _) in &sets {
            self.metrics
                .change_sets
                .add(1, &[KeyValue::new("product", product.as_str())]);
        }
        change_sets::publish(&self.bus, sets).await
    }

    /// Publishes the stored plan's change sets for an approved run.
    async fn approve(&self, approved: &v1::RunApproved) -> Result<StepOutcome, Error> {
        let run_id = approved.run_id.as_str();
        let key = format!("{run_id}.pb.zst");
        let stored = self
            .bus
            .get_latest_object::<v1::Plan>(&self.bus.topology().plans_bucket(), &key)
            .await;
        let plan = match stored {
            Ok(Some((plan, _))) => plan,
            Ok(None) => {
                let reason = "approved, but no plan is stored for the run".to_owned();
                self.fail_run(run_id, &reason).await?;
                return Ok(StepOutcome::Failed {
                    run_id: run_id.to_owned(),
                    reason,
                });
            }
            Err(error) if error.is_permanent() => {
                let reason = format!(
                    "approved, but the stored plan is unusable: {}",
                    error_chain(&error)
                );
                self.fail_run(run_id, &reason).await?;
                return Ok(StepOutcome::Failed {
                    run_id: run_id.to_owned(),
                    reason,
                });
            }
            Err(error) => return Err(error.into()),
        };
        if plan.mode != v1::RunMode::Apply as i32 {
            tracing::warn!(approved_by = %approved.approved_by, "Ignored the approval of a simulated run.");
            return Ok(StepOutcome::Ignored);
        }
        let change_sets = self.publish_change_sets(&plan).await?;
        tracing::info!(approved_by = %approved.approved_by, change_sets, "Published the approved plan.");
        Ok(StepOutcome::Approved {
            run_id: run_id.to_owned(),
            change_sets,
        })
    }

    /// Publishes `PlanFailed` and marks the run failed. Publishing first means a crash in
    /// between publishes again (deduplicated), never not at all.
    async fn fail_run(&self, run_id: &str, reason: &str) -> Result<(), Error> {
        let failed = v1::PlanFailed {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            reason: reason.to_owned(),
        };
        self.bus
            .publish(
                &self.bus.topology().plan_failed(),
                &failed,
                &format!("{run_id}/plan-failed"),
            )
            .await?;
        self.joins
            .update(run_id, |join| join.status = Status::Failed as i32)
            .await?;
        self.metrics
            .plans
            .add(1, &[KeyValue::new("outcome", "failed")]);
        tracing::warn!(reason, "The run failed to plan.");
        Ok(())
    }
}

/// The span of one message of one run, continuing the run's trace.
fn run_span(
    run_id: &str,
    event: &'static str,
    headers: Option<&async_nats::HeaderMap>,
) -> tracing::Span {
    let span = tracing::info_span!("plan_run", run_id = %run_id, event);
    bus::trace::continue_trace(&span, headers);
    span
}

/// An error with its sources, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Settings, config::Error> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("keysync.toml");
        std::fs::write(&file, toml).expect("writes the file");
        config::load::<Settings>(Some(&file))
    }

    #[test]
    fn the_shared_file_gives_the_planner_its_sections_and_a_policy_per_enabled_product() {
        let settings = load(
            r#"
            [control_plane]
            token = "t"
            listen = "127.0.0.1:50051"

            [products.jira]
            endpoint = "http://jira.example.org"
            token = "t"
            [products.jira.policy.safety]
            max_accounts = 5

            [products.confluence]
            enabled = false
            endpoint = "http://confluence.example.org"
            token = "t"

            [planner]
            change_set_size = 200
            "#,
        )
        .expect("loads");
        assert_eq!(settings.planner.change_set_size, 200);
        assert_eq!(settings.planner.state_timeout_seconds, 600);
        let policies = settings.validate().expect("valid");
        assert_eq!(
            policies.keys().copied().collect::<Vec<_>>(),
            [Product::Jira]
        );
        assert_eq!(policies[&Product::Jira].policy().safety.max_accounts, 5);
    }

    #[test]
    fn a_bad_policy_or_change_set_size_names_its_key() {
        let settings = load(
            "[products.jira]\nendpoint = \"http://x\"\ntoken = \"t\"\n[products.jira.policy.safety]\nmax_percent = 400\n",
        )
        .expect("loads");
        let error = settings.validate().expect_err("400 %");
        assert_eq!(error.key(), "products.jira.policy");
        let settings = load("[planner]\nchange_set_size = 0\n").expect("loads");
        assert_eq!(
            settings.validate().expect_err("zero").key(),
            "planner.change_set_size"
        );
    }
}
