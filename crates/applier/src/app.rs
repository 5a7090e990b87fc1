//! [`App`]: the applier's two consumers on one `bus::worker::Worker`, around its handler
//! ([`Applier`]), which hands a run request to [`crate::refresh`] and a change set to
//! [`crate::change_sets`].

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bus::Bus;
use bus::health::Health;
use bus::liveness::Announcer;
use bus::worker::{ConsumerSpec, Delivery, Handler, Worker};
use cache::Cache;
use control_client::Control;
use model::state::Product;
use opentelemetry::KeyValue;
use proto::v1;

use crate::metrics::{Metrics, ProductApiMetrics};
use crate::progress::Progress;
use crate::{Error, Settings};

/// How long [`App::try_step`] waits on each consumer.
const STEP_WAIT: Duration = Duration::from_millis(250);

/// How long a set whose predecessor is not finished waits before it comes again.
const WAIT_DELAY: Duration = Duration::from_secs(1);

/// How long a message whose handling failed for a reason outside it (the bus, the control
/// plane) waits before it comes again.
const RETRY_DELAY: Duration = Duration::from_secs(5);

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
    /// The control plane has not recorded the run's plan yet (the planner's `PlanReady` is
    /// still on its way); the set comes again.
    Unconfirmed { run_id: String, sequence: u32 },
}

/// The applier's handler: the product's client and everything a change set needs.
pub struct Applier {
    pub(crate) product: Product,
    pub(crate) wire_product: v1::Product,
    pub(crate) directory: atlassian::Client,
    pub(crate) bus: Bus,
    pub(crate) cache: Cache,
    pub(crate) progress: Progress,
    /// Taken to write the product's cached state.
    pub(crate) cache_lock: crate::cache_lock::CacheLock,
    pub(crate) control: Control,
    pub(crate) concurrency: usize,
    pub(crate) report_batch_size: usize,
    pub(crate) sequence_timeout: Duration,
    pub(crate) metrics: Metrics,
    /// The last change-set manifest loaded, by its checksum: the sets of one run come one
    /// after another, and each is checked against it.
    pub(crate) manifest: std::sync::Mutex<Option<(String, std::sync::Arc<v1::ChangeSetManifest>)>>,
    /// The consumer of run requests (the other one is of change sets).
    state_consumer: String,
}

impl Handler for Applier {
    type Outcome = StepOutcome;
    type Error = Error;

    async fn handle(&self, delivery: &Delivery<'_>) -> Result<StepOutcome, Error> {
        let outcome = if delivery.consumer() == self.state_consumer {
            self.refresh(delivery).await?
        } else {
            self.apply_change_set(delivery).await?
        };
        let waits = match &outcome {
            StepOutcome::Waiting { .. } => Some("sequence"),
            StepOutcome::Unconfirmed { .. } => Some("plan"),
            _ => None,
        };
        if let Some(kind) = waits {
            self.metrics.retries.add(
                1,
                &[
                    KeyValue::new("product", self.product.as_str()),
                    KeyValue::new("kind", kind),
                ],
            );
            delivery.retry_after(WAIT_DELAY);
        }
        Ok(outcome)
    }
}

/// The running applier of one product.
pub struct App {
    worker: Worker,
    applier: Applier,
}

impl App {
    /// Validates the settings, builds the product client, connects to the bus and binds
    /// both consumers. The control plane is connected on first use.
    pub async fn build(settings: Settings, product: Product) -> Result<App, Error> {
        let client_settings = settings.validate(product)?;
        let directory = atlassian::Client::new(client_settings)
            .map_err(|source| Error::Client { product, source })?
            .with_observer(ProductApiMetrics::observer());
        let control = Control::from_settings(&settings.control_plane)?;
        let bus = Bus::connect_with(&settings.bus).await?;
        let topology = bus.topology();
        let ack_wait = Duration::from_secs(settings.applier.ack_wait_seconds);
        let state_consumer = topology.applier_state_consumer(product.as_str());
        // Run requests first: a state read is quick, and a run's plan waits for it.
        let consumers = vec![
            ConsumerSpec {
                stream: topology.events_stream(),
                name: state_consumer.clone(),
                filter_subjects: vec![topology.run_requested()],
                ack_wait,
            },
            ConsumerSpec {
                stream: topology.changes_stream(),
                name: topology.applier_consumer(product.as_str()),
                filter_subjects: vec![topology.changes(product.as_str())],
                ack_wait,
            },
        ];
        let worker = Worker::bind(&bus, "applier", consumers, &settings.health)
            .await?
            .with_labels([KeyValue::new("product", product.as_str())])
            .with_retry_delay(RETRY_DELAY);
        let progress = Progress::open(&bus, product).await?;
        let metrics = Metrics::new();
        metrics.start_at_zero(product);
        Ok(App {
            worker,
            applier: Applier {
                product,
                wire_product: cache::convert::product_to_proto(product),
                directory,
                cache: Cache::new(bus.clone()),
                bus,
                cache_lock: progress.cache_lock(),
                progress,
                control,
                concurrency: settings.applier.concurrency,
                report_batch_size: settings.applier.report_batch_size,
                sequence_timeout: Duration::from_secs(settings.applier.sequence_timeout_seconds),
                metrics,
                manifest: Default::default(),
                state_consumer,
            },
        })
    }

    pub fn product(&self) -> Product {
        self.applier.product
    }

    /// The address of the HTTP health endpoints, when `[health] listen` is set; they are
    /// served while [`App::run_until_stopped`] runs.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.worker.health_addr()
    }

    /// Whether the applier can take work, as `/readyz` answers it.
    pub fn health(&self) -> &Health {
        self.worker.health()
    }

    /// Handles run requests and change sets until `shutdown` completes. The message in
    /// hand is finished first; nothing is taken after `shutdown`. Serves the health
    /// endpoints meanwhile, and stops them before it returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        tracing::info!(product = %self.applier.product, "The applier is running.");
        let announcer = Announcer::open(
            &self.applier.bus,
            self.applier.product.as_str(),
            &instance(),
        )
        .await
        .map_err(|error| Error::Liveness(Box::new(error)))?;
        let announcing = tokio::spawn(async move {
            let mut every = tokio::time::interval(bus::liveness::ANNOUNCE_INTERVAL);
            loop {
                every.tick().await;
                if let Err(error) = announcer.announce().await {
                    tracing::warn!(error = %error, "Could not announce the applier as running.");
                }
            }
        });
        let ran = self.worker.run(&self.applier, shutdown).await;
        announcing.abort();
        // Withdrawn so the control plane knows at once when the last replica stopped.
        if let Ok(announcer) = Announcer::open(
            &self.applier.bus,
            self.applier.product.as_str(),
            &instance(),
        )
        .await
        {
            announcer.withdraw().await;
        }
        Ok(ran?)
    }

    /// Takes one message, a run request first, else a change set, if one arrives within a
    /// quarter of a second on either consumer, and handles it.
    pub async fn try_step(&self) -> Result<StepOutcome, Error> {
        Ok(self
            .worker
            .step(&self.applier, STEP_WAIT)
            .await?
            .unwrap_or(StepOutcome::Idle))
    }
}

/// This process's name among the applier's replicas: the host (the pod) and the process id.
fn instance() -> String {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE
        .get_or_init(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let name: String = format!("{}-{}", host.trim(), std::process::id())
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            name.trim_start_matches('-').to_owned()
        })
        .clone()
}
