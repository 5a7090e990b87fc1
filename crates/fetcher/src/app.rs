//! [`App`]: the fetcher's run-request consumer (`bus::worker`) around its handler
//! ([`Fetcher`]).
//!
//! A request is acknowledged only once its outcome (`SnapshotReady` or `SnapshotFailed`)
//! is stored on the bus; while the fetch runs, the request's ack deadline is renewed, so a
//! long fetch is not handed to a second replica. A request that does not decode is
//! dead-lettered and the consumer goes on. While it runs, the service serves `[health]`
//! (ready while it pulls from its consumer) and records its consumer's lag, and follows
//! the Keycloak events of every connector with `[keycloak.<name>.events] enabled`, one
//! task each ([`Observer`]), stopped with the worker.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use bus::{
    Bus,
    health::Health,
    worker::{ConsumerSpec, Worker},
};

pub use crate::fetch::{Fetcher, StepOutcome};
use crate::{
    Error,
    base::Bases,
    metrics::Metrics,
    observe::{Observation, ObserveError, Observer},
    settings::Settings,
};

/// The running service.
pub struct App {
    worker: Worker,
    fetcher: Fetcher,
    /// The event followers, by connector.
    observers: BTreeMap<String, Observer>,
}

impl App {
    /// Validates the settings, connects to NATS, makes sure the streams, the consumer, the
    /// snapshot bucket and the follower bucket exist, and builds one Keycloak client per
    /// connector, and one more per connector whose events it follows (no request to
    /// Keycloak yet).
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
        let bus = Bus::connect_with(&settings.bus).await?;
        let topology = bus.topology();
        let consumer = ConsumerSpec {
            stream: topology.events_stream(),
            name: topology.fetcher_consumer(),
            filter_subjects: vec![topology.run_requested()],
            ack_wait: settings.ack_wait(),
        };
        let worker = Worker::bind(&bus, "fetcher", vec![consumer], &settings.health).await?;
        let bucket = settings.snapshot_bucket();
        bus.object_store(&bucket).await?;
        let bases = Bases::open(&bus).await?;
        let mut observers = BTreeMap::new();
        for (name, connector) in &settings.keycloak {
            if connector.events.enabled {
                observers.insert(name.clone(), Observer::open(&bus, name, connector).await?);
            }
        }
        let metrics = Metrics::new();
        metrics.start_at_zero(connectors.keys().cloned());
        Ok(App {
            worker,
            fetcher: Fetcher {
                bus,
                connectors,
                bucket,
                metrics,
                bases,
                part_users: settings.first_sync_part_users(),
            },
            observers,
        })
    }

    /// The address of the HTTP health endpoints, when `[health] listen` is set; they are
    /// served while [`App::run_until_stopped`] runs.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.worker.health_addr()
    }

    /// Whether the service can take work, as `/readyz` answers it.
    pub fn health(&self) -> &Health {
        self.worker.health()
    }

    pub fn bus(&self) -> &Bus {
        &self.fetcher.bus
    }

    pub fn snapshot_bucket(&self) -> &str {
        &self.fetcher.bucket
    }

    /// The progress counters of a connector's client, for logs and tests.
    pub fn progress(&self, connector: &str) -> Option<keycloak::client::Progress> {
        self.fetcher.progress(connector)
    }

    /// Handles at most one run request, waiting up to `wait` for one.
    pub async fn try_step(&self, wait: Duration) -> Result<StepOutcome, Error> {
        Ok(self
            .worker
            .step(&self.fetcher, wait)
            .await?
            .unwrap_or(StepOutcome::Idle))
    }

    /// Polls the events of `connector` once and publishes what they named, as the
    /// service's follower task does every `poll_interval_ms`; `None` when the connector's
    /// events are not followed.
    pub async fn observe_step(&self, connector: &str) -> Option<Result<Observation, ObserveError>> {
        Some(self.observers.get(connector)?.step().await)
    }

    /// Handles run requests one at a time until `shutdown` completes; a request being
    /// handled then is finished first. Serves the health endpoints meanwhile, and stops
    /// them before it returns. Follows the events of the connectors that have them on
    /// meanwhile too, and stops that before it returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let App {
            worker,
            fetcher,
            observers,
        } = self;
        tracing::info!(
            bucket = %fetcher.bucket,
            connectors = ?fetcher.connectors.keys().collect::<Vec<_>>(),
            following = ?observers.keys().collect::<Vec<_>>(),
            "The fetcher is running."
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let followers: Vec<_> = observers
            .into_values()
            .map(|observer| tokio::spawn(observer.run(stopped.clone())))
            .collect();
        let served = worker
            .run(&fetcher, async {
                shutdown.await;
                stop.send_replace(true);
            })
            .await;
        // Also when the worker ended on an error: no follower outlives the service.
        stop.send_replace(true);
        for follower in followers {
            if let Err(error) = follower.await {
                tracing::error!(error = %error, "An event follower task ended abnormally.");
            }
        }
        Ok(served?)
    }
}
