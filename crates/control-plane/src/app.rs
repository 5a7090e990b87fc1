//! The control plane as one service: [`App::build`] connects and binds everything, and
//! [`App::run_until`] serves the gRPC API, follows the events (through `bus::worker`, which
//! also serves the health endpoints and ticks the sweep of expired holds), fires the
//! schedule, fails the runs past their deadline ([`crate::reaper`]) and recovers what a
//! stop left, until it is told to stop.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use bus::{Bus, health::Health, worker::Worker};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tonic::transport::{ServerTlsConfig, server::TcpIncoming};

use crate::{
    Error,
    auth::{self, BearerAuth},
    connections::Connections,
    deadlines::Deadlines,
    events::{self, EventError, EventHandler, StepOutcome},
    history::History,
    reaper,
    run_index::RunIndex,
    runs::{self, Runs, RunsSettings},
    schedule::{self, Schedule},
    service,
    settings::Settings,
    store::Store,
};

/// The service's name in the shared metrics (`keysync_dead_letters_total{service}`).
pub const SERVICE: &str = "control-plane";

/// A built control plane: connected to NATS, its buckets and consumer made, its ports bound.
/// Nothing runs until [`App::run_until_stopped`] or [`App::run_until`].
pub struct App {
    runs: Arc<Runs>,
    index: Arc<RunIndex>,
    history: Arc<History>,
    connections: Arc<Connections>,
    events: EventHandler,
    worker: Worker,
    auth: BearerAuth,
    tls: Option<ServerTlsConfig>,
    schedule: Option<Schedule>,
    listener: TcpListener,
    local_addr: SocketAddr,
    health: Health,
}

impl App {
    /// Validates `settings`, connects to NATS, opens the buckets, binds the event consumer
    /// and the ports (port 0 picks a free one; see [`App::local_addr`]).
    pub async fn build(settings: Settings) -> Result<App, Error> {
        settings.validate()?;
        // One schedule per connector (`[control_plane.schedule.connectors.*]`); keys in
        // errors are full paths.
        let schedule = Schedule::from_settings(&settings)?;
        let auth = BearerAuth::from_settings(&settings.control_plane);
        // TLS is checked here, so a bad certificate stops the start, not the serving.
        let tls = auth::server_tls(&settings.control_plane);
        if let Some(tls) = &tls {
            tonic::transport::Server::builder()
                .tls_config(tls.clone())
                .map_err(Error::Tls)?;
        } else if settings.control_plane.plaintext_beyond_loopback() {
            tracing::warn!(
                listen = %settings.control_plane.listen,
                "The control API serves plaintext beyond loopback (allow_plaintext = true): \
                 tokens and results cross the network unencrypted unless a proxy or mesh \
                 encrypts them."
            );
        }
        let connections = Arc::new(Connections::new(&settings.keycloak, &settings.products)?);
        let bus = Bus::connect_with(&settings.bus).await?;
        let store = Arc::new(Store::open(&bus).await?);
        let worker = Worker::bind(
            &bus,
            SERVICE,
            vec![events::consumer_spec(bus.topology())],
            &settings.health,
        )
        .await?
        .with_retry_delay(events::RETRY_DELAY);
        let health = worker.health().clone();
        // Loads every run id while the rest starts; `ListRuns` waits for it.
        let index = Arc::new(RunIndex::start(
            store.runs_bucket().clone(),
            store.client().clone(),
        ));
        let history = Arc::new(History::new(
            bus.clone(),
            Arc::clone(&store),
            Arc::clone(&index),
        ));
        let runs = Arc::new(
            Runs::new(
                bus,
                store,
                RunsSettings {
                    connectors: settings.keycloak.keys().cloned().collect(),
                    hold_expiry: settings.control_plane.hold_expiry(),
                    deadlines: Deadlines::from_settings(&settings.control_plane),
                },
            )
            .with_index(Arc::clone(&index)),
        );
        let events = EventHandler::new(Arc::clone(&runs));

        let address = settings.control_plane.listen;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| Error::Bind { address, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { address, source })?;
        Ok(App {
            runs,
            index,
            history,
            connections,
            events,
            worker,
            auth,
            tls,
            schedule,
            listener,
            local_addr,
            health,
        })
    }

    /// The address the gRPC API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the HTTP health endpoints, when `[health] listen` is set.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.worker.health_addr()
    }

    /// Whether the control plane can take work, as `/readyz` answers it.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Handles at most one event, if one comes within `wait`, and settles it as the running
    /// app does (for tests that drive the app one event at a time instead of running it).
    /// `Ok(None)`: no event came. An error hands the event back for a retry.
    pub async fn step(&self, wait: Duration) -> Result<Option<StepOutcome>, EventError> {
        self.worker.step(&self.events, wait).await
    }

    /// Runs until SIGTERM or ctrl-c, then drains: the API stops taking calls and finishes
    /// the ones in flight, and the event consumer finishes the event in hand.
    pub async fn run_until_stopped(self) -> Result<(), Error> {
        self.run_until(telemetry::shutdown_signal()).await
    }

    /// Runs until `shutdown` completes, then drains as [`App::run_until_stopped`] does.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        // grpcurl 1.8 speaks only v1alpha; newer tools speak v1.
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(Error::Reflection)?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(Error::Reflection)?;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status(service::SERVICE_NAME, tonic_health::ServingStatus::Serving)
            .await;
        let control = service::ControlPlane::new(
            Arc::clone(&self.runs),
            Arc::clone(&self.history),
            self.connections,
        )
        .into_server(self.auth);

        let (stop_sender, stop) = watch::channel(false);
        let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();
        {
            // Follows the events and serves the health endpoints until `stop`.
            let (worker, events, mut stop) = (self.worker, self.events, stop.clone());
            tasks.spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                };
                Ok(worker.run(&events, stopped).await?)
            });
        }
        if let Some(schedule) = self.schedule {
            let (runs, stop) = (Arc::clone(&self.runs), stop.clone());
            tasks.spawn(async move {
                schedule::run(schedule, runs, stop).await;
                Ok(())
            });
        }
        {
            let (runs, index, stop) = (Arc::clone(&self.runs), self.index, stop.clone());
            tasks.spawn(async move {
                reaper::run(runs, index, stop).await;
                Ok(())
            });
        }
        {
            let runs = Arc::clone(&self.runs);
            tasks.spawn(async move { Ok(runs::recover(runs).await?) });
        }

        tracing::info!(
            listen = %self.local_addr,
            tls = self.tls.is_some(),
            "Serving the control API."
        );
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            server = server.tls_config(tls).map_err(Error::Tls)?;
        }
        let served = server
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(control)
            .serve_with_incoming_shutdown(
                // Small answers go out at once: without TCP_NODELAY, a response written
                // in two segments waited for the client's delayed ACK (40 ms a ListRuns).
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await;
        self.health.set_stopping();
        health_reporter
            .set_service_status(
                service::SERVICE_NAME,
                tonic_health::ServingStatus::NotServing,
            )
            .await;
        let _ = stop_sender.send(true);
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(error = %error, "A control plane task failed."),
                Err(error) => tracing::error!(error = %error, "A control plane task panicked."),
            }
        }
        tracing::info!("Stopped.");
        served.map_err(Error::Serve)
    }
}
