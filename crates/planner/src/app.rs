//! [`App`]: the planner's consumer (`bus::worker`) around its handler ([`Planner`]).
//!
//! One durable consumer, `planner` (`Topology::planner_consumer`), shared by every replica, reads `SnapshotReady`,
//! `StateReady`, `StateFailed` and `RunApproved` from the events stream. A message is
//! acknowledged once its effect is recorded; after an error of the bus it is handed back
//! and comes again a second later. Between messages the worker ticks the planner, which
//! fails the runs whose states are late ([`Planner::check_deadlines`]). While it runs, the
//! planner serves `[health]` (ready while it pulls from its consumer) and records its
//! consumer's lag.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bus::health::Health;
use bus::worker::{ConsumerSpec, Worker};
use bus::{Bus, BusMessage};
use cache::Cache;
use proto::v1;

use crate::Error;
use crate::join::Joins;
use crate::metrics::Metrics;
use crate::runs::{Planner, StepOutcome};
use crate::settings::Settings;

/// How long [`App::try_step`] waits for a message.
const STEP_WAIT: Duration = Duration::from_millis(500);

/// How long a message whose handling failed on the bus waits before it comes again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The running planner.
pub struct App {
    worker: Worker,
    planner: Planner,
}

impl App {
    /// Validates the settings, connects to the bus and binds the durable consumer and the
    /// health endpoints' port.
    pub async fn build(settings: Settings) -> Result<App, Error> {
        let policies = settings.validate()?;
        // Connected on first use, so the planner starts while the control plane does.
        let control = control_client::Control::from_settings(&settings.control_plane)?;
        let bus = Bus::connect_with(&settings.bus).await?;
        let topology = bus.topology();
        let consumer = ConsumerSpec {
            stream: topology.events_stream(),
            name: topology.planner_consumer(),
            filter_subjects: vec![
                topology.snapshot_ready(),
                topology.state_ready("*"),
                topology.state_failed("*"),
                topology.run_approved(),
            ],
            ack_wait: Duration::from_secs(settings.planner.ack_wait_seconds),
        };
        let worker = Worker::bind(&bus, "planner", vec![consumer], &settings.health)
            .await?
            .with_retry_delay(RETRY_DELAY)
            .counting_kinds(&[
                v1::SnapshotReady::KIND,
                v1::StateReady::KIND,
                v1::StateFailed::KIND,
                v1::RunApproved::KIND,
            ]);
        let joins = Joins::open(&bus).await?;
        let metrics = Metrics::new();
        metrics.start_at_zero();
        Ok(App {
            worker,
            planner: Planner {
                cache: Cache::new(bus.clone()),
                bus,
                joins,
                enabled: policies.products(),
                policies,
                change_set_size: settings.planner.change_set_size,
                state_timeout: Duration::from_secs(settings.planner.state_timeout_seconds),
                metrics,
                control,
                bases: Default::default(),
            },
        })
    }

    pub fn bus(&self) -> &Bus {
        &self.planner.bus
    }

    /// The address of the HTTP health endpoints, when `[health] listen` is set; they are
    /// served while [`App::run_until_stopped`] runs.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.worker.health_addr()
    }

    /// Whether the planner can take work, as `/readyz` answers it.
    pub fn health(&self) -> &Health {
        self.worker.health()
    }

    /// Handles messages and state timeouts until `shutdown` completes. A message in hand is
    /// finished first; nothing is taken after `shutdown`. Serves the health endpoints
    /// meanwhile, and stops them before it returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let App { worker, planner } = self;
        tracing::info!(products = ?planner.enabled, "The planner is running.");
        worker.run(&planner, shutdown).await?;
        tracing::info!("The planner stopped.");
        Ok(())
    }

    /// Takes one message, if one arrives within half a second, and handles it.
    pub async fn try_step(&self) -> Result<StepOutcome, Error> {
        Ok(self
            .worker
            .step(&self.planner, STEP_WAIT)
            .await?
            .unwrap_or(StepOutcome::Idle))
    }

    /// Fails every run whose states did not arrive in time. Answers the failed run ids.
    pub async fn check_deadlines(&self) -> Result<Vec<String>, Error> {
        self.planner.check_deadlines().await
    }
}
