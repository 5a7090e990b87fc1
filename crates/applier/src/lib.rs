//! The keysync applier of one product (`--product jira|confluence|bitbucket`; one
//! deployment each, any number of replicas): it reads the product's state into the cache
//! at the start of every run, and applies the change sets the planner publishes.
//!
//! # State refresh
//!
//! Each applier consumes `RunRequested` through the durable consumer
//! `applier-{product}-state` on the events stream. For a run that includes its product
//! (or names none), it reads the product's complete state ([`Directory::fetch_state`]),
//! keeps what only keysync knows from the previous cached state ([`state::refresh`]),
//! stores it in the cache and publishes `StateReady` (message id `{run_id}/state/{product}`),
//! or `StateFailed` (`{run_id}/state-failed/{product}`) when the product cannot be read.
//! So the planner plans against the product as it is now, changes made by hand included.
//!
//! # Applying change sets
//!
//! Replicas share the durable pull consumer `applier-{product}` on the changes stream. For
//! each change set:
//!
//! 1. **Order.** A run's sets are applied in sequence order, tracked per run in the KV
//!    bucket `{prefix}-applier` ([`progress`]). A set whose predecessor has not finished is
//!    handed back with a delay and comes again; one that was finished already is
//!    acknowledged and nothing else. A set that waited longer than
//!    `applier.sequence_timeout_seconds` is given up: its changes and those of the run's
//!    later sets are reported skipped, never applied out of order.
//! 2. **Cancellation.** `GetRun` comes first: the changes of a cancelled run are reported
//!    skipped ("run cancelled") without touching the product.
//! 3. **Apply** ([`apply`]): in dependency phases with bounded concurrency; the cache is
//!    updated with what succeeded and written once, at the end of the set.
//! 4. **Report** every result to the control plane with `ReportResults`, in batches, with
//!    retries ([`control`]). Only then is the message acknowledged; if reporting fails the
//!    set is redelivered and applied again, which the product's idempotent writes make
//!    harmless (a create of an existing identical account is "already done").
//!
//! A message that does not decode, or whose stored changes are gone, goes to the
//! dead-letter stream and is counted (`keysync_dead_letters_total`); the applier goes on.
//! On SIGTERM it stops taking messages and finishes the one in hand.
//!
//! While it runs, the applier serves `[health]` (`bus::health`: ready while it pulls from
//! both its consumers) and records their lag (`bus::lag`). Its metrics, product API
//! latency, retries and 429s included, are listed in [`metrics`].

pub mod apply;
pub mod control;
pub mod metrics;
pub mod progress;
pub mod state;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use atlassian::Directory;
pub use bus::health::HealthSettings;
use bus::health::{Health, HealthServer};
use bus::lag::ConsumerLag;
use bus::objects::ObjectError;
use bus::{Bus, Topology};
use cache::Cache;
use cache::settings::{BusSettings, ProductsSettings};
use config::{Invalid, Secret};
use futures::{Stream, StreamExt};
use model::state::Product;
use opentelemetry::KeyValue;
use proto::v1;
use serde::Deserialize;
use tracing::Instrument;

use crate::apply::error_chain;
use crate::control::{Control, ControlError};
use crate::metrics::{Metrics, ProductApiMetrics};
use crate::progress::{Mark, Progress};

/// How long [`App::try_step`] waits on each consumer.
const STEP_WAIT: Duration = Duration::from_millis(250);

/// How long a set whose predecessor is not finished waits before it comes again.
const WAIT_DELAY: Duration = Duration::from_secs(1);

/// How long a message whose handling failed for a reason outside it (the bus, the control
/// plane) waits before it comes again.
const RETRY_DELAY: Duration = Duration::from_secs(5);

/// The applier's settings: the sections of the shared configuration file it reads. Other
/// top-level sections are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    /// `[bus]`.
    #[serde(default)]
    pub bus: BusSettings,
    /// `[products.*]`: the section of the applier's product holds its client settings.
    #[serde(default)]
    pub products: ProductsSettings,
    /// `[control_plane]`: where results are reported.
    pub control_plane: ControlPlaneSettings,
    /// `[applier]`.
    #[serde(default)]
    pub applier: ApplierSettings,
    /// `[health]`: the HTTP liveness and readiness endpoints (see `bus::health`).
    #[serde(default)]
    pub health: HealthSettings,
}

/// `[control_plane]` as the appliers read it: `endpoint` and `token` (or `token_file`).
/// The control plane owns this section and checks it strictly; its own keys (`listen`,
/// `schedule`) are left to it, so unknown keys are not errors here.
#[derive(Clone, Debug, Deserialize)]
pub struct ControlPlaneSettings {
    /// The control plane's gRPC endpoint. Default: `http://127.0.0.1:50051`.
    #[serde(default = "default_control_plane_endpoint")]
    pub endpoint: String,
    /// The bearer token of the control API; set `token_file` to read it from a file.
    pub token: Secret,
}

fn default_control_plane_endpoint() -> String {
    "http://127.0.0.1:50051".to_owned()
}

/// `[applier]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplierSettings {
    /// Changes of one phase applied at once: 1 to 64. The product client's own
    /// `max_concurrency` bounds its requests too. Default: 8.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Results per `ReportResults` call: 1 to 10,000. Default: 100.
    #[serde(default = "default_report_batch_size")]
    pub report_batch_size: usize,
    /// How long a replica may go silent on a message in hand before JetStream gives it to
    /// another replica, in seconds (a replica in good health says it is alive every third
    /// of this): 1 to 3,600. Default: 60.
    #[serde(default = "default_ack_wait_seconds")]
    pub ack_wait_seconds: u64,
    /// How long a change set waits for its predecessor in the run before it is given up
    /// (reported skipped, with the rest of the run), in seconds; at least 1. Default: 600.
    #[serde(default = "default_sequence_timeout_seconds")]
    pub sequence_timeout_seconds: u64,
}

impl Default for ApplierSettings {
    fn default() -> ApplierSettings {
        ApplierSettings {
            concurrency: default_concurrency(),
            report_batch_size: default_report_batch_size(),
            ack_wait_seconds: default_ack_wait_seconds(),
            sequence_timeout_seconds: default_sequence_timeout_seconds(),
        }
    }
}

fn default_concurrency() -> usize {
    8
}

fn default_report_batch_size() -> usize {
    100
}

fn default_ack_wait_seconds() -> u64 {
    60
}

fn default_sequence_timeout_seconds() -> u64 {
    600
}

impl Settings {
    /// Checks every section the applier of `product` reads; no IO. Answers the product's
    /// client settings.
    pub fn validate(&self, product: Product) -> Result<atlassian::config::Settings, Invalid> {
        self.bus.validate().map_err(|error| error.within("bus"))?;
        let applier = &self.applier;
        if !(1..=64).contains(&applier.concurrency) {
            return Err(Invalid::new(
                "applier.concurrency",
                format!("must be 1 to 64, not {}", applier.concurrency),
            ));
        }
        if !(1..=10_000).contains(&applier.report_batch_size) {
            return Err(Invalid::new(
                "applier.report_batch_size",
                format!("must be 1 to 10000, not {}", applier.report_batch_size),
            ));
        }
        if !(1..=3600).contains(&applier.ack_wait_seconds) {
            return Err(Invalid::new(
                "applier.ack_wait_seconds",
                format!("must be 1 to 3600, not {}", applier.ack_wait_seconds),
            ));
        }
        if applier.sequence_timeout_seconds == 0 {
            return Err(Invalid::new(
                "applier.sequence_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self.control_plane.token.expose().trim().is_empty() {
            return Err(Invalid::new(
                "control_plane.token",
                "must not be empty (set `token_file` to a file that holds it)",
            ));
        }
        let section = format!("products.{product}");
        let Some(settings) = self.products.get(product) else {
            return Err(Invalid::new(
                &section,
                "is missing; the applier needs its product's settings",
            ));
        };
        if !settings.enabled {
            return Err(Invalid::new(
                &format!("{section}.enabled"),
                "is false; this applier has nothing to do",
            ));
        }
        settings
            .client_settings(product)
            .map_err(|error| error.within(&section))
    }
}

/// Why the applier could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid settings")]
    Config(#[from] Invalid),
    #[error("building the {product} client")]
    Client {
        product: Product,
        #[source]
        source: atlassian::Error,
    },
    #[error(transparent)]
    Control(#[from] ControlError),
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
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// No message arrived.
    Idle,
    /// A message went to the dead-letter stream.
    DeadLettered,
    /// A run without this product.
    Ignored,
    /// The product's state is cached and announced.
    StateReady { run_id: String, accounts: usize },
    /// The product could not be read; `StateFailed` was published.
    StateFailed { run_id: String, reason: String },
    /// A change set was applied (or skipped) and every result recorded.
    Applied {
        run_id: String,
        sequence: u32,
        results: Vec<v1::ChangeResult>,
    },
    /// The set was finished before; nothing was done.
    AlreadyApplied { run_id: String, sequence: u32 },
    /// The set's predecessor has not finished; the set comes again.
    Waiting { run_id: String, sequence: u32 },
}

/// The running applier of one product.
pub struct App {
    product: Product,
    wire_product: v1::Product,
    directory: atlassian::Client,
    bus: Bus,
    cache: Cache,
    progress: Progress,
    control: Control,
    change_sets: PullConsumer,
    runs: PullConsumer,
    concurrency: usize,
    report_batch_size: usize,
    keepalive: Duration,
    sequence_timeout: Duration,
    metrics: Metrics,
    health: Health,
    health_server: Option<HealthServer>,
}

/// Which consumer a message came from.
#[derive(Clone, Copy)]
enum Kind {
    RunRequested,
    ChangeSet,
}

/// What the run loop waits for.
enum Event {
    Shutdown,
    RunRequested(Box<jetstream::Message>),
    ChangeSet(Box<jetstream::Message>),
    ConsumerFailed(Box<Error>),
}

impl App {
    /// Validates the settings, builds the product client, connects to the bus and binds
    /// both consumers. The control plane is connected on first use.
    pub async fn build(settings: Settings, product: Product) -> Result<App, Error> {
        let client_settings = settings.validate(product)?;
        let directory = atlassian::Client::new(client_settings)
            .map_err(|source| Error::Client { product, source })?
            .with_observer(ProductApiMetrics::observer());
        let control = Control::new(
            &settings.control_plane.endpoint,
            &settings.control_plane.token,
        )?;
        let bus = Bus::connect(&settings.bus.nats_url, Topology::new(&settings.bus.prefix)).await?;
        let topology = bus.topology().clone();
        let ack_wait = Duration::from_secs(settings.applier.ack_wait_seconds);
        let change_sets = bus
            .durable_consumer(
                &topology.changes_stream(),
                &topology.applier_consumer(product.as_str()),
                &topology.changes(product.as_str()),
                ack_wait,
            )
            .await?;
        let runs = bus
            .durable_consumer(
                &topology.events_stream(),
                &state_consumer(product),
                &topology.run_requested(),
                ack_wait,
            )
            .await?;
        let progress = Progress::open(&bus, product).await?;
        let health = Health::new(bus.client().clone());
        health.expect(&state_consumer(product));
        health.expect(&topology.applier_consumer(product.as_str()));
        let health_server = HealthServer::bind(&settings.health).await?;
        let metrics = Metrics::new();
        metrics.start_at_zero(product);
        Ok(App {
            product,
            wire_product: cache::convert::product_to_proto(product),
            directory,
            cache: Cache::new(bus.clone()),
            bus,
            progress,
            control,
            change_sets,
            runs,
            concurrency: settings.applier.concurrency,
            report_batch_size: settings.applier.report_batch_size,
            keepalive: (ack_wait / 3).max(Duration::from_millis(200)),
            sequence_timeout: Duration::from_secs(settings.applier.sequence_timeout_seconds),
            metrics,
            health,
            health_server,
        })
    }

    pub fn product(&self) -> Product {
        self.product
    }

    /// The address of the HTTP health endpoints, when `[health] listen` is set; they are
    /// served while [`App::run_until_stopped`] runs.
    pub fn health_addr(&self) -> Option<std::net::SocketAddr> {
        self.health_server.as_ref().map(HealthServer::local_addr)
    }

    /// Whether the applier can take work, as `/readyz` answers it.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Handles run requests and change sets until `shutdown` completes. The message in
    /// hand is finished first; nothing is taken after `shutdown`. Serves the health
    /// endpoints meanwhile, and stops them before it returns.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let health = self
            .health_server
            .take()
            .map(|server| server.spawn(self.health.clone()));
        let lag = ConsumerLag::spawn(
            vec![self.runs.clone(), self.change_sets.clone()],
            bus::lag::DEFAULT_INTERVAL,
        );
        let ran = self.run_loop(shutdown).await;
        self.health.set_stopping();
        lag.stop().await;
        bus::health::stop(health).await;
        ran
    }

    async fn run_loop(&self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        tokio::pin!(shutdown);
        let state_consumer = state_consumer(self.product);
        let consumer = self.bus.topology().applier_consumer(self.product.as_str());
        let mut runs = messages(&self.runs, &state_consumer).await?;
        self.health.set_ready(&state_consumer, true);
        let mut change_sets = messages(&self.change_sets, &consumer).await?;
        self.health.set_ready(&consumer, true);
        tracing::info!(product = %self.product, "The applier is running.");
        loop {
            let event = tokio::select! {
                biased;
                () = &mut shutdown => Event::Shutdown,
                message = runs.next() => next_event(message, Event::RunRequested, &state_consumer),
                message = change_sets.next() => next_event(message, Event::ChangeSet, &consumer),
            };
            let handled = match event {
                Event::Shutdown => break,
                Event::RunRequested(message) => self.handle(*message, Kind::RunRequested).await,
                Event::ChangeSet(message) => self.handle(*message, Kind::ChangeSet).await,
                Event::ConsumerFailed(error) => {
                    tracing::warn!(error = %error, "A consumer failed; binding it again in a second.");
                    self.health.set_ready(&state_consumer, false);
                    self.health.set_ready(&consumer, false);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    runs = messages(&self.runs, &state_consumer).await?;
                    self.health.set_ready(&state_consumer, true);
                    change_sets = messages(&self.change_sets, &consumer).await?;
                    self.health.set_ready(&consumer, true);
                    continue;
                }
            };
            if let Err(error) = handled {
                tracing::warn!(error = %error, "A message will come again after an error outside it.");
            }
        }
        tracing::info!(product = %self.product, "The applier stopped.");
        Ok(())
    }

    /// Takes one message, a run request first, else a change set, if one arrives within a
    /// quarter of a second on either consumer, and handles it.
    pub async fn try_step(&self) -> Result<StepOutcome, Error> {
        if let Some(message) = fetch_one(&self.runs, &state_consumer(self.product)).await? {
            return self.handle(message, Kind::RunRequested).await;
        }
        let consumer = self.bus.topology().applier_consumer(self.product.as_str());
        if let Some(message) = fetch_one(&self.change_sets, &consumer).await? {
            return self.handle(message, Kind::ChangeSet).await;
        }
        Ok(StepOutcome::Idle)
    }

    /// Handles one message and settles it: acknowledged once handled, handed back when
    /// waiting for its predecessor or when handling failed for a reason outside the
    /// message.
    async fn handle(&self, message: jetstream::Message, kind: Kind) -> Result<StepOutcome, Error> {
        let work = async {
            match kind {
                Kind::RunRequested => self.refresh(&message).await,
                Kind::ChangeSet => self.apply_change_set(&message).await,
            }
        };
        let outcome = match keep_alive(&message, self.keepalive, work).await {
            Ok(outcome) => outcome,
            Err(error) => {
                let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
                return Err(error);
            }
        };
        match &outcome {
            StepOutcome::DeadLettered => {}
            StepOutcome::Waiting { .. } => {
                self.metrics.retries.add(
                    1,
                    &[
                        KeyValue::new("product", self.product.as_str()),
                        KeyValue::new("kind", "sequence"),
                    ],
                );
                let _ = message.ack_with(AckKind::Nak(Some(WAIT_DELAY))).await;
            }
            _ => message.double_ack().await.map_err(bus::Error::Ack)?,
        }
        Ok(outcome)
    }

    /// Reads the product's state for a run and announces it.
    async fn refresh(&self, message: &jetstream::Message) -> Result<StepOutcome, Error> {
        let Some(requested) = self.decode::<v1::RunRequested>(message).await? else {
            return Ok(StepOutcome::DeadLettered);
        };
        let run_id = requested.run_id.clone();
        let span = tracing::info_span!("refresh_state", run_id = %run_id, product = %self.product);
        bus::trace::continue_trace(&span, message.headers.as_ref());
        async {
            if !requested.products.is_empty()
                && !requested.products.contains(&(self.wire_product as i32))
            {
                return Ok(StepOutcome::Ignored);
            }
            let topology = self.bus.topology();
            let product = self.product.as_str();
            let directory = match self.directory.fetch_state().await {
                Ok(directory) => directory,
                Err(error) => {
                    let reason = error_chain(&error);
                    let failed = v1::StateFailed {
                        schema_version: v1::SCHEMA_VERSION,
                        run_id: run_id.clone(),
                        product: self.wire_product as i32,
                        reason: reason.clone(),
                    };
                    self.bus
                        .publish(
                            &topology.state_failed(product),
                            &failed,
                            &format!("{run_id}/state-failed/{product}"),
                        )
                        .await?;
                    self.metrics.refreshes.add(
                        1,
                        &[
                            KeyValue::new("product", product),
                            KeyValue::new("outcome", "failed"),
                        ],
                    );
                    tracing::warn!(reason, "Could not read the product's state.");
                    return Ok(StepOutcome::StateFailed { run_id, reason });
                }
            };
            let previous = self.cache.load(self.product).await?;
            let lists_email = self.directory.capabilities().lists_email;
            let state = state::refresh(
                self.wire_product,
                directory,
                previous.as_ref().map(|(state, _)| state),
                lists_email,
                &run_id,
                SystemTime::now(),
            );
            let object = self.cache.store(self.product, &state).await?;
            let ready = v1::StateReady {
                schema_version: v1::SCHEMA_VERSION,
                run_id: run_id.clone(),
                product: self.wire_product as i32,
                state: Some(object),
                accounts: state.accounts.len() as u64,
                groups: state.groups.len() as u64,
                memberships: state.memberships.len() as u64,
            };
            self.bus
                .publish(
                    &topology.state_ready(product),
                    &ready,
                    &format!("{run_id}/state/{product}"),
                )
                .await?;
            self.metrics.refreshes.add(
                1,
                &[
                    KeyValue::new("product", product),
                    KeyValue::new("outcome", "ready"),
                ],
            );
            tracing::info!(
                accounts = state.accounts.len(),
                groups = state.groups.len(),
                memberships = state.memberships.len(),
                "Cached the product's state."
            );
            Ok(StepOutcome::StateReady {
                run_id,
                accounts: state.accounts.len(),
            })
        }
        .instrument(span)
        .await
    }

    /// Applies one change set, in order, and reports every result.
    async fn apply_change_set(&self, message: &jetstream::Message) -> Result<StepOutcome, Error> {
        let Some(set) = self.decode::<v1::ChangeSet>(message).await? else {
            return Ok(StepOutcome::DeadLettered);
        };
        if set.product != self.wire_product as i32 {
            let reason = format!(
                "a change set of product {} on the {} subject",
                set.product, self.product
            );
            self.dead_letter(message, &reason).await?;
            return Ok(StepOutcome::DeadLettered);
        }
        let span = tracing::info_span!(
            "apply_change_set",
            run_id = %set.run_id,
            product = %self.product,
            sequence = set.sequence,
            total_sets = set.total_sets,
        );
        bus::trace::continue_trace(&span, message.headers.as_ref());
        self.apply_in_order(message, set).instrument(span).await
    }

    async fn apply_in_order(
        &self,
        message: &jetstream::Message,
        set: v1::ChangeSet,
    ) -> Result<StepOutcome, Error> {
        let run_id = set.run_id.clone();
        let sequence = set.sequence;
        let mark = self.progress.get(&run_id).await?;
        if sequence < mark.next_sequence {
            tracing::info!("The change set was applied before.");
            return Ok(StepOutcome::AlreadyApplied { run_id, sequence });
        }
        let mut skip_reason = (!mark.skip_reason.is_empty()).then(|| mark.skip_reason.clone());
        if skip_reason.is_none() && sequence > mark.next_sequence {
            let published = message
                .info()
                .map(|info| info.published.unix_timestamp())
                .unwrap_or(i64::MAX);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|since| since.as_secs() as i64)
                .unwrap_or(0);
            if now.saturating_sub(published) < self.sequence_timeout.as_secs() as i64 {
                tracing::debug!(
                    waiting_for = mark.next_sequence,
                    "The change set waits for its predecessor."
                );
                return Ok(StepOutcome::Waiting { run_id, sequence });
            }
            skip_reason = Some(format!(
                "change set {} of this run did not finish within {} s",
                mark.next_sequence,
                self.sequence_timeout.as_secs()
            ));
        }

        let changes = match &set.stored {
            None => set.changes,
            Some(object) => match self.bus.get_object::<v1::ChangeSet>(object).await {
                Ok(stored) => stored.changes,
                Err(error) if error.is_permanent() => {
                    let reason =
                        format!("the stored changes are unusable: {}", error_chain(&error));
                    self.dead_letter(message, &reason).await?;
                    return Ok(StepOutcome::DeadLettered);
                }
                Err(error) => return Err(error.into()),
            },
        };

        let run = match self.control.get_run(&run_id).await {
            Ok(run) => run,
            Err(error) if error.is_not_found() => {
                let reason = format!("the control plane does not know run {run_id}");
                self.dead_letter(message, &reason).await?;
                return Ok(StepOutcome::DeadLettered);
            }
            Err(error) => return Err(error.into()),
        };
        let results = if run.state() == v1::RunState::Cancelled {
            tracing::info!(
                changes = changes.len(),
                "The run is cancelled; its changes are skipped."
            );
            apply::skip_all(&run_id, self.wire_product, &changes, "run cancelled")
        } else if let Some(reason) = &skip_reason {
            tracing::warn!(
                reason,
                changes = changes.len(),
                "The change set is given up."
            );
            apply::skip_all(&run_id, self.wire_product, &changes, reason)
        } else {
            let cached = self.cache.load(self.product).await?;
            let mut working = state::Working::new(match cached {
                Some((state, _)) => state,
                None => v1::ProductState {
                    schema_version: v1::SCHEMA_VERSION,
                    product: self.wire_product as i32,
                    ..Default::default()
                },
            });
            let results = apply::apply(
                &self.directory,
                &run_id,
                self.wire_product,
                &changes,
                &mut working,
                self.concurrency,
            )
            .await;
            self.cache
                .store(self.product, &working.into_state(&run_id))
                .await?;
            results
        };

        let reported = self
            .control
            .report(&run_id, self.wire_product, &results, self.report_batch_size)
            .await?;
        if reported.retries > 0 {
            self.metrics.retries.add(
                reported.retries,
                &[
                    KeyValue::new("product", self.product.as_str()),
                    KeyValue::new("kind", "report"),
                ],
            );
        }
        let next = Mark {
            next_sequence: sequence + 1,
            skip_reason: skip_reason.unwrap_or_default(),
        };
        self.progress.set(&run_id, &next).await?;
        self.count(&changes, &results);
        tracing::info!(
            changes = changes.len(),
            recorded = reported.recorded,
            "Applied the change set and reported its results."
        );
        Ok(StepOutcome::Applied {
            run_id,
            sequence,
            results,
        })
    }

    /// Counts the set's results by operation and outcome, once per set.
    fn count(&self, changes: &[v1::Change], results: &[v1::ChangeResult]) {
        let mut counts: std::collections::BTreeMap<(&'static str, &'static str), u64> =
            Default::default();
        for (change, result) in changes.iter().zip(results) {
            let op = change.op().as_str_name();
            let outcome = result.outcome().as_str_name();
            *counts.entry((op, outcome)).or_default() += 1;
        }
        for ((op, outcome), count) in counts {
            self.metrics.changes.add(
                count,
                &[
                    KeyValue::new("product", self.product.as_str()),
                    KeyValue::new("op", op),
                    KeyValue::new("outcome", outcome),
                ],
            );
        }
    }

    async fn decode<M: bus::BusMessage>(
        &self,
        message: &jetstream::Message,
    ) -> Result<Option<M>, Error> {
        let decoded = self.bus.decode_or_dead_letter::<M>(message).await?;
        if decoded.is_none() {
            self.count_dead_letter();
        }
        Ok(decoded)
    }

    async fn dead_letter(&self, message: &jetstream::Message, reason: &str) -> Result<(), Error> {
        self.bus.dead_letter(message, reason).await?;
        self.count_dead_letter();
        tracing::warn!(reason, subject = %message.subject, "Dead-lettered a message.");
        Ok(())
    }

    fn count_dead_letter(&self) {
        self.metrics.dead_letters.add(
            1,
            &[
                KeyValue::new("service", "applier"),
                KeyValue::new("product", self.product.as_str()),
            ],
        );
    }
}

/// The durable consumer of run requests all replicas of one product's applier share.
pub fn state_consumer(product: Product) -> String {
    format!("applier-{product}-state")
}

/// Runs `work`, telling JetStream every `interval` that the message is still in hand.
async fn keep_alive<T>(
    message: &jetstream::Message,
    interval: Duration,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticker.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

/// A consumer's messages, one at a time.
async fn messages(
    consumer: &PullConsumer,
    name: &str,
) -> Result<impl Stream<Item = Result<jetstream::Message, Error>> + Unpin + use<>, Error> {
    let name = name.to_owned();
    let stream = consumer
        .stream()
        .max_messages_per_batch(1)
        .messages()
        .await
        .map_err(|error| Error::Consume {
            consumer: name.clone(),
            source: Box::new(error),
        })?;
    Ok(stream.map(move |message| {
        message.map_err(|error| Error::Consume {
            consumer: name.clone(),
            source: Box::new(error),
        })
    }))
}

fn next_event(
    message: Option<Result<jetstream::Message, Error>>,
    wrap: fn(Box<jetstream::Message>) -> Event,
    consumer: &str,
) -> Event {
    match message {
        Some(Ok(message)) => wrap(Box::new(message)),
        Some(Err(error)) => Event::ConsumerFailed(Box::new(error)),
        None => Event::ConsumerFailed(Box::new(Error::Consume {
            consumer: consumer.to_owned(),
            source: "the message stream ended".into(),
        })),
    }
}

/// One message, if one arrives within [`STEP_WAIT`].
async fn fetch_one(
    consumer: &PullConsumer,
    name: &str,
) -> Result<Option<jetstream::Message>, Error> {
    let consume_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Consume {
        consumer: name.to_owned(),
        source,
    };
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(STEP_WAIT)
        .messages()
        .await
        .map_err(|error| consume_error(Box::new(error)))?;
    match batch.next().await {
        None => Ok(None),
        Some(Ok(message)) => Ok(Some(message)),
        Some(Err(error)) => Err(consume_error(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One file for every service: the applier reads its sections and leaves the others.
    const SHARED: &str = r#"
        [bus]
        prefix = "corp"

        [keycloak.corp]
        endpoint = "http://127.0.0.1:8080"
        realm = "corp"

        [control_plane]
        listen = "127.0.0.1:50051"
        endpoint = "http://keysync-control-plane:50051"
        token_file = "SECRET_PATH"

        [control_plane.schedule]
        cron = "0 3 * * *"

        [products.jira]
        endpoint = "http://jira.example.org"
        token_file = "SECRET_PATH"

        [products.bitbucket]
        enabled = false
        endpoint = "http://bitbucket.example.org"
        user = "svc-keysync"
        password_file = "SECRET_PATH"

        [planner]
        change_set_size = 200

        [applier]
        concurrency = 4
    "#;

    fn load(toml: &str) -> Result<Settings, config::Error> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").expect("writes the secret");
        let file = dir.path().join("keysync.toml");
        let toml = toml.replace("SECRET_PATH", &secret.display().to_string());
        std::fs::write(&file, toml).expect("writes the file");
        config::load::<Settings>(Some(&file))
    }

    #[test]
    fn the_shared_file_gives_the_applier_its_sections_with_their_defaults() {
        let settings = load(SHARED).expect("loads");
        assert_eq!(settings.bus.prefix, "corp");
        assert_eq!(
            settings.control_plane.endpoint,
            "http://keysync-control-plane:50051"
        );
        assert_eq!(settings.control_plane.token.expose(), "s3cret");
        assert_eq!(settings.applier.concurrency, 4);
        assert_eq!(settings.applier.report_batch_size, 100);
        assert_eq!(settings.applier.ack_wait_seconds, 60);
        let client = settings.validate(Product::Jira).expect("jira is valid");
        assert_eq!(
            client.connection.endpoint.as_str(),
            "http://jira.example.org/"
        );
        assert!(
            !format!("{settings:?}").contains("s3cret"),
            "a secret leaked into Debug"
        );
    }

    #[test]
    fn an_applier_of_a_product_without_a_section_or_disabled_does_not_start() {
        let settings = load(SHARED).expect("loads");
        let missing = settings
            .validate(Product::Confluence)
            .expect_err("no section");
        assert_eq!(missing.key(), "products.confluence");
        let disabled = settings.validate(Product::Bitbucket).expect_err("disabled");
        assert_eq!(disabled.key(), "products.bitbucket.enabled");
    }

    #[test]
    fn an_unknown_key_in_the_applier_section_is_an_error() {
        let error =
            load(&format!("{SHARED}\n[applier.extra]\ncolour = 1\n")).expect_err("unknown key");
        assert!(error.to_string().contains("applier"), "{error}");
    }
}
