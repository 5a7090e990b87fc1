//! [`App`]: the fetcher's run-request consumer (`bus::worker`) around its handler
//! ([`Fetcher`]).
//!
//! A request is acknowledged only once its outcome (`SnapshotReady` or `SnapshotFailed`)
//! is stored on the bus; while the fetch runs, the request's ack deadline is renewed, so a
//! long fetch is not handed to a second replica. A request that does not decode is
//! dead-lettered and the consumer goes on. While it runs, the service serves `[health]`
//! (ready while it pulls from its consumer) and records its consumer's lag.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use bus::{
    Bus,
    health::Health,
    worker::{ConsumerSpec, Worker},
};

pub use crate::fetch::{Fetcher, StepOutcome};
use crate::{Error, metrics::Metrics, settings::Settings};

/// The running service.
pub struct App {
    worker: Worker,
    fetcher: Fetcher,
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
        let metrics = Metrics::new();
        metrics.start_at_zero(connectors.keys().cloned());
        Ok(App {
            worker,
            fetcher: Fetcher {
                bus,
                connectors,
                bucket,
                metrics,
            },
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

    /// Handles run requests one at a time until `shutdown` completes; a request being
    /// handled then is finished first. Serves the health endpoints meanwhile, and stops
    /// them before it returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        tracing::info!(
            bucket = %self.fetcher.bucket,
            connectors = ?self.fetcher.connectors.keys().collect::<Vec<_>>(),
            "The fetcher is running."
        );
        Ok(self.worker.run(&self.fetcher, shutdown).await?)
    }
}
