//! [`App`]: the fetcher's consumer of run requests and what it does with each one.
//!
//! A request is acknowledged only once its outcome (`SnapshotReady` or `SnapshotFailed`)
//! is stored on the bus; while the fetch runs, the request's ack deadline is renewed, so a
//! long fetch is not handed to a second replica. A request that does not decode is
//! dead-lettered and the consumer goes on.
//!
//! While it runs, the service serves `[health]` (`bus::health`: ready once it pulls from
//! its consumer) and records its consumer's lag (`bus::lag`).
//!
//! Metrics (OTLP, through the `telemetry` crate): `keysync_fetcher_runs_received_total`,
//! `keysync_fetcher_snapshots_ready_total{connector}`,
//! `keysync_fetcher_snapshots_failed_total{connector}`,
//! `keysync_fetcher_requests_dropped_total` (also `keysync_dead_letters_total{service}`),
//! `keysync_fetcher_fetch_duration_seconds{connector, outcome}` (one whole realm read),
//! and the Keycloak Admin API calls it took, `keysync_fetcher_keycloak_requests_total`
//! and `keysync_fetcher_keycloak_retries_total{connector}`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use bus::{
    Bus, Topology,
    health::{Health, HealthServer},
    lag::ConsumerLag,
};
use futures::StreamExt;
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram},
};
use proto::v1::{self, RunRequested, SnapshotFailed, SnapshotReady};
use tracing::Instrument;

use crate::{
    Error,
    convert::{SnapshotHeader, snapshot_to_proto},
    settings::Settings,
};

/// The name of the durable consumer all fetcher replicas share.
pub const CONSUMER: &str = "fetcher";

/// The running service.
pub struct App {
    bus: Bus,
    consumer: PullConsumer,
    connectors: BTreeMap<String, keycloak::client::Client>,
    bucket: String,
    ack_wait: Duration,
    metrics: Metrics,
    health: Health,
    health_server: Option<HealthServer>,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// No request came within the wait.
    Idle,
    /// The request did not decode (or had no run id) and went to the dead letters.
    DeadLettered,
    SnapshotReady {
        run_id: String,
        users: u64,
        groups: u64,
        memberships: u64,
    },
    SnapshotFailed {
        run_id: String,
        reason: String,
    },
}

/// What the service loop reacts to.
enum Event {
    Stop,
    Message(Option<Result<Box<jetstream::Message>, Error>>),
}

struct Metrics {
    received: Counter<u64>,
    ready: Counter<u64>,
    failed: Counter<u64>,
    dropped: Counter<u64>,
    dead_letters: Counter<u64>,
    fetch_duration: Histogram<f64>,
    keycloak_requests: Counter<u64>,
    keycloak_retries: Counter<u64>,
}

/// Bucket boundaries of a whole fetch, in seconds: a tenth of a second to an hour.
const FETCH_DURATION_BOUNDARIES: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

impl Metrics {
    fn new() -> Metrics {
        let meter = opentelemetry::global::meter("keysync");
        Metrics {
            received: meter
                .u64_counter("keysync_fetcher_runs_received_total")
                .with_description("Run requests received.")
                .build(),
            ready: meter
                .u64_counter("keysync_fetcher_snapshots_ready_total")
                .with_description("Snapshots stored and announced, by connector.")
                .build(),
            failed: meter
                .u64_counter("keysync_fetcher_snapshots_failed_total")
                .with_description("Runs that got SnapshotFailed, by connector.")
                .build(),
            dropped: meter
                .u64_counter("keysync_fetcher_requests_dropped_total")
                .with_description("Run requests dead-lettered because they do not decode.")
                .build(),
            dead_letters: meter
                .u64_counter("keysync_dead_letters_total")
                .with_description("Messages that went to the dead-letter stream, by service.")
                .build(),
            fetch_duration: meter
                .f64_histogram("keysync_fetcher_fetch_duration_seconds")
                .with_description(
                    "Reading one whole realm from Keycloak, by connector and outcome (ok, error).",
                )
                .with_unit("s")
                .with_boundaries(FETCH_DURATION_BOUNDARIES.to_vec())
                .build(),
            keycloak_requests: meter
                .u64_counter("keysync_fetcher_keycloak_requests_total")
                .with_description("Keycloak Admin API responses received, by connector.")
                .build(),
            keycloak_retries: meter
                .u64_counter("keysync_fetcher_keycloak_retries_total")
                .with_description("Keycloak Admin API requests retried, by connector.")
                .build(),
        }
    }

    /// Starts the counters of rare events at zero, so that they are exported (and a
    /// dashboard shows 0, not "no data") before the first one happens.
    fn start_at_zero(&self, connectors: impl Iterator<Item = String>) {
        self.received.add(0, &[]);
        self.dropped.add(0, &[]);
        self.dead_letters
            .add(0, &[KeyValue::new("service", "fetcher")]);
        for connector in connectors {
            let connector = [KeyValue::new("connector", connector)];
            self.ready.add(0, &connector);
            self.failed.add(0, &connector);
            self.keycloak_requests.add(0, &connector);
            self.keycloak_retries.add(0, &connector);
        }
    }

    fn dropped(&self) {
        self.dropped.add(1, &[]);
        self.dead_letters
            .add(1, &[KeyValue::new("service", "fetcher")]);
    }
}

impl App {
    /// Validates the settings, connects to NATS, makes sure the streams, the consumer and
    /// the snapshot bucket exist, and builds one Keycloak client per connector (no request
    /// to Keycloak yet).
    pub async fn build(settings: Settings) -> Result<App, Error> {
        settings.validate()?;
        let mut connectors = BTreeMap::new();
        for (name, connector) in &settings.keycloak {
            let client = keycloak::client::Client::new(connector.clone()).map_err(|source| {
                Error::Keycloak {
                    connector: name.clone(),
                    source,
                }
            })?;
            connectors.insert(name.clone(), client);
        }
        let bus = Bus::connect(&settings.bus.nats_url, Topology::new(&settings.bus.prefix)).await?;
        let topology = bus.topology().clone();
        let consumer = bus
            .durable_consumer(
                &topology.events_stream(),
                CONSUMER,
                &topology.run_requested(),
                settings.ack_wait(),
            )
            .await?;
        let bucket = settings.snapshot_bucket();
        bus.object_store(&bucket).await?;
        let health = Health::new(bus.client().clone());
        health.expect(CONSUMER);
        let health_server = HealthServer::bind(&settings.health).await?;
        let metrics = Metrics::new();
        metrics.start_at_zero(connectors.keys().cloned());
        Ok(App {
            bus,
            consumer,
            connectors,
            bucket,
            ack_wait: settings.ack_wait(),
            metrics,
            health,
            health_server,
        })
    }

    /// The address of the HTTP health endpoints, when `[health] listen` is set; they are
    /// served while [`App::run_until_stopped`] runs.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_server.as_ref().map(HealthServer::local_addr)
    }

    /// Whether the service can take work, as `/readyz` answers it.
    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn snapshot_bucket(&self) -> &str {
        &self.bucket
    }

    /// The progress counters of a connector's client, for logs and tests.
    pub fn progress(&self, connector: &str) -> Option<keycloak::client::Progress> {
        self.connectors
            .get(connector)
            .map(|client| client.progress().clone())
    }

    /// Handles at most one run request, waiting up to `wait` for one.
    pub async fn try_step(&self, wait: Duration) -> Result<StepOutcome, Error> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .map_err(|error| Error::Pull(Box::new(error)))?;
        match batch.next().await {
            None => Ok(StepOutcome::Idle),
            Some(Err(error)) => Err(Error::Pull(error)),
            Some(Ok(message)) => self.handle(message).await,
        }
    }

    /// Handles run requests one at a time until `shutdown` completes; a request being
    /// handled then is finished first. Serves the health endpoints meanwhile, and stops
    /// them before it returns.
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let health = self
            .health_server
            .take()
            .map(|server| server.spawn(self.health.clone()));
        let lag = ConsumerLag::spawn(vec![self.consumer.clone()], bus::lag::DEFAULT_INTERVAL);
        let served = self.serve_requests(shutdown).await;
        self.health.set_stopping();
        lag.stop().await;
        bus::health::stop(health).await;
        served
    }

    async fn serve_requests(&self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let mut messages = self
            .consumer
            .stream()
            .max_messages_per_batch(1)
            .messages()
            .await
            .map_err(|error| Error::Pull(Box::new(error)))?;
        self.health.set_ready(CONSUMER, true);
        tokio::pin!(shutdown);
        tracing::info!(
            subject = %self.bus.topology().run_requested(),
            bucket = %self.bucket,
            connectors = ?self.connectors.keys().collect::<Vec<_>>(),
            "Waiting for run requests."
        );
        loop {
            let event = tokio::select! {
                biased;
                () = &mut shutdown => Event::Stop,
                message = messages.next() => Event::Message(message.map(|result| {
                    result.map(Box::new).map_err(|error| Error::Pull(Box::new(error)))
                })),
            };
            match event {
                Event::Stop => {
                    tracing::info!("Stopped.");
                    return Ok(());
                }
                Event::Message(None) => {
                    self.health.set_ready(CONSUMER, false);
                    return Err(Error::ConsumerClosed);
                }
                Event::Message(Some(Err(error))) => {
                    tracing::warn!(error = %error, "Pulling a run request failed; going on.");
                }
                Event::Message(Some(Ok(message))) => {
                    if let Err(error) = self.handle(*message).await {
                        tracing::error!(
                            error = %error_chain(&error),
                            "Handling a run request failed; it will be delivered again."
                        );
                    }
                }
            }
        }
    }

    async fn handle(&self, message: jetstream::Message) -> Result<StepOutcome, Error> {
        self.metrics.received.add(1, &[]);
        let Some(request) = self
            .bus
            .decode_or_dead_letter::<RunRequested>(&message)
            .await?
        else {
            self.metrics.dropped();
            return Ok(StepOutcome::DeadLettered);
        };
        if request.run_id.is_empty() {
            self.bus
                .dead_letter(&message, "RunRequested has no run_id")
                .await?;
            self.metrics.dropped();
            tracing::warn!("Dead-lettered a run request without a run id.");
            return Ok(StepOutcome::DeadLettered);
        }
        let span = tracing::info_span!(
            "fetch",
            run_id = %request.run_id,
            connector = %request.connector,
        );
        bus::trace::continue_trace(&span, message.headers.as_ref());
        self.serve(&request, &message).instrument(span).await
    }

    async fn serve(
        &self,
        request: &RunRequested,
        message: &jetstream::Message,
    ) -> Result<StepOutcome, Error> {
        let produced = {
            let work = self.produce(request);
            tokio::pin!(work);
            // Renew the ack deadline while the fetch runs.
            let mut renew = tokio::time::interval(self.ack_wait / 3);
            renew.tick().await;
            loop {
                tokio::select! {
                    produced = &mut work => break produced,
                    _ = renew.tick() => {
                        if let Err(error) = message.ack_with(AckKind::Progress).await {
                            tracing::warn!(error = %error, "Renewing the run request's ack deadline failed.");
                        }
                    }
                }
            }
        };
        let message_id = format!("{}/snapshot", request.run_id);
        let topology = self.bus.topology();
        let connector = KeyValue::new("connector", request.connector.clone());
        let outcome = match produced {
            Ok(ready) => {
                self.bus
                    .publish(&topology.snapshot_ready(), &ready, &message_id)
                    .await?;
                self.metrics.ready.add(1, &[connector]);
                tracing::info!(
                    users = ready.users,
                    groups = ready.groups,
                    memberships = ready.memberships,
                    key = ready.snapshot.as_ref().map(|object| object.key.as_str()),
                    "Snapshot ready."
                );
                StepOutcome::SnapshotReady {
                    run_id: request.run_id.clone(),
                    users: ready.users,
                    groups: ready.groups,
                    memberships: ready.memberships,
                }
            }
            Err(reason) => {
                let failed = SnapshotFailed {
                    schema_version: v1::SCHEMA_VERSION,
                    run_id: request.run_id.clone(),
                    connector: request.connector.clone(),
                    reason: reason.clone(),
                };
                self.bus
                    .publish(&topology.snapshot_failed(), &failed, &message_id)
                    .await?;
                self.metrics.failed.add(1, &[connector]);
                tracing::warn!(reason = %reason, "Snapshot failed.");
                StepOutcome::SnapshotFailed {
                    run_id: request.run_id.clone(),
                    reason,
                }
            }
        };
        message.double_ack().await.map_err(bus::Error::Ack)?;
        Ok(outcome)
    }

    /// Fetches and stores the snapshot of the run, or says why there is none.
    async fn produce(&self, request: &RunRequested) -> Result<SnapshotReady, String> {
        let (connector, client) = self.connector(&request.connector)?;
        let key = format!("{}.pb.zst", request.run_id);
        // A request delivered again (the last replica stopped before its ack) reuses the
        // snapshot already stored, so the object never changes under a SnapshotReady.
        match self
            .bus
            .get_latest_object::<v1::Snapshot>(&self.bucket, &key)
            .await
        {
            Ok(Some((stored, object))) => {
                tracing::info!(key = %key, "Reusing the snapshot stored for this run.");
                return Ok(ready(request, connector, &stored, object));
            }
            Ok(None) => {}
            Err(error) => return Err(format!("reading {key}: {}", error_chain(&error))),
        }
        let fetched_at = prost_types::Timestamp::from(std::time::SystemTime::now());
        let (requests, retries) = (client.progress().requests(), client.progress().retries());
        let started = Instant::now();
        let fetched = client.fetch().await;
        let labels = [
            KeyValue::new("connector", connector.to_owned()),
            KeyValue::new("outcome", if fetched.is_ok() { "ok" } else { "error" }),
        ];
        self.metrics
            .fetch_duration
            .record(started.elapsed().as_secs_f64(), &labels);
        self.metrics.keycloak_requests.add(
            client.progress().requests().saturating_sub(requests),
            &labels[..1],
        );
        self.metrics.keycloak_retries.add(
            client.progress().retries().saturating_sub(retries),
            &labels[..1],
        );
        let snapshot = fetched.map_err(|error| {
            format!(
                "fetching realm `{}` of connector `{connector}`: {}",
                client.settings().realm,
                error_chain(&error)
            )
        })?;
        let snapshot = snapshot_to_proto(
            snapshot,
            &SnapshotHeader {
                run_id: &request.run_id,
                connector,
                realm: &client.settings().realm,
                fetched_at,
            },
        );
        let object = self
            .bus
            .put_object(&self.bucket, &key, &snapshot)
            .await
            .map_err(|error| format!("storing the snapshot: {}", error_chain(&error)))?;
        Ok(ready(request, connector, &snapshot, object))
    }

    /// The connector a request names; an empty name means the only one configured.
    fn connector<'a>(
        &'a self,
        name: &'a str,
    ) -> Result<(&'a str, &'a keycloak::client::Client), String> {
        if name.is_empty() && self.connectors.len() == 1 {
            return self
                .connectors
                .iter()
                .next()
                .map(|(name, client)| (name.as_str(), client))
                .ok_or_else(|| "no keycloak connector is configured".to_owned());
        }
        self.connectors
            .get(name)
            .map(|client| (name, client))
            .ok_or_else(|| {
                format!(
                    "no keycloak connector named `{name}`; configured: {}",
                    self.connectors
                        .keys()
                        .map(|name| format!("`{name}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

fn ready(
    request: &RunRequested,
    connector: &str,
    snapshot: &v1::Snapshot,
    object: v1::ObjectRef,
) -> SnapshotReady {
    SnapshotReady {
        schema_version: v1::SCHEMA_VERSION,
        run_id: request.run_id.clone(),
        connector: connector.to_owned(),
        snapshot: Some(object),
        users: snapshot.users.len() as u64,
        groups: snapshot.groups.len() as u64,
        memberships: snapshot.memberships.len() as u64,
        fetched_at: snapshot.fetched_at,
        mode: request.mode,
        products: request.products.clone(),
    }
}

/// An error and its causes, `: `-separated, for a reason a person reads.
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
