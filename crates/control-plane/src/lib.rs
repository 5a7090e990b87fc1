//! The control plane: keysync's gRPC control API (`keysync.v1.ControlService`), the runs
//! as a state machine stored in JetStream, and the sync schedule.
//!
//! A run goes `REQUESTED → FETCHING → PLANNING → (HELD →) APPLYING → SUCCEEDED | FAILED |
//! CANCELLED`. `StartSync` (or the schedule) creates it and publishes `RunRequested`; the
//! control plane then follows the fetcher's and planner's events on the bus ([`events`]) and
//! the appliers' `ReportResults` calls, and finishes the run when every planned change has a
//! result. Every run lives in a JetStream key-value bucket ([`store`]), so a restart, or a
//! second replica, loses nothing.
//!
//! Start reading at [`App::build`], then [`events::next`] (the state machine as a pure
//! function), [`runs::Runs`] (what each RPC does) and [`store::Store`] (the buckets).
//!
//! **Architecture invariant:** the control plane knows the wire (`proto`), the bus and the
//! run's state machine; it never fetches from Keycloak or writes to a product (it only
//! checks that they answer, for `TestConnection`), and it knows nothing of how a plan is
//! made.

pub mod auth;
pub mod connections;
pub mod events;
pub mod metrics;
pub mod runs;
pub mod schedule;
pub mod service;
pub mod store;

use std::{collections::BTreeMap, future::Future, net::SocketAddr, path::Path, sync::Arc};

use bus::{
    Bus, Topology,
    health::{Health, HealthError, HealthServer},
    lag::ConsumerLag,
};
use config::{Invalid, Secret};
use serde::Deserialize;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tonic::transport::server::TcpIncoming;

use crate::{
    auth::BearerAuth, connections::Connections, events::EventConsumer, runs::Runs,
    schedule::Schedule, store::Store,
};

/// The sections of the shared configuration file the control plane reads: `[bus]`,
/// `[control_plane]` and `[health]`, and, for `TestConnection` only, `[keycloak.*]` and
/// `[products.*]` (documented with the fetcher and the appliers, which use them).
///
/// Every service reads the same file, so the top level leaves the other services' sections
/// to them; inside the sections read here, an unknown key is an error
/// (`keysync config check` checks the whole file, sections included).
///
/// ```toml
/// [bus]
/// nats_url = "nats://127.0.0.1:4222"    # default
/// prefix = "keysync"                    # default
///
/// [control_plane]
/// listen = "127.0.0.1:50051"            # default
/// endpoint = "http://127.0.0.1:50051"   # default; where the appliers call the API
/// token_file = "/run/secrets/keysync-api/token"   # required (or `token`)
///
/// [control_plane.schedule]
/// enabled = true                        # default
/// cron = "0 2 * * *"                    # default: daily at 02:00
/// timezone = "UTC"                      # default; an IANA name such as "Europe/Berlin"
///
/// [health]
/// # listen = "0.0.0.0:8080"             # default: not served
/// ```
#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    /// `[bus]`: where NATS is, and the prefix of every subject, stream and bucket.
    #[serde(default)]
    pub bus: BusSettings,
    /// `[control_plane]`: the API and the schedule.
    pub control_plane: ControlPlaneSettings,
    /// `[health]`: the HTTP liveness and readiness endpoints.
    #[serde(default)]
    pub health: HealthSettings,
    /// `[keycloak.<connector>]`: the realms `TestConnection` checks.
    #[serde(default)]
    pub keycloak: BTreeMap<String, keycloak::config::KeycloakSettings>,
    /// `[products.<name>]`: the products `TestConnection` checks, when enabled.
    #[serde(default)]
    pub products: cache::settings::ProductsSettings,
}

/// `[bus]`: where NATS is and the prefix of every subject, stream and bucket.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSettings {
    /// The NATS server. Default: `nats://127.0.0.1:4222`.
    #[serde(default = "default_nats_url")]
    pub nats_url: String,
    /// The prefix of every subject, stream and bucket of one deployment: letters, digits,
    /// `-` and `_`. Default: `keysync`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

/// `[control_plane]`: the gRPC control API and the schedule.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneSettings {
    /// Where the gRPC API listens. Default: `127.0.0.1:50051`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The bearer token every API call must carry (health and reflection need none). Set
    /// `token_file` to read it from a file when the service starts; one trailing newline is
    /// dropped. Required.
    pub token: Secret,
    /// Where the other services reach this API (the appliers report results there), for
    /// example `http://keysync-control-plane:50051`. The control plane itself does not use
    /// it. Default: `http://127.0.0.1:50051`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// When syncs start by themselves.
    #[serde(default)]
    pub schedule: ScheduleSettings,
}

/// `[control_plane.schedule]`: the cron schedule of apply runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Whether scheduled runs start at all. Default: `true`.
    #[serde(default = "default_schedule_enabled")]
    pub enabled: bool,
    /// A cron expression: five fields (minute hour day-of-month month day-of-week), or six
    /// with seconds first. Default: `0 2 * * *`, daily at 02:00.
    #[serde(default = "default_cron")]
    pub cron: String,
    /// The IANA time zone the expression is read in, for example `Europe/Berlin`.
    /// Default: `UTC`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

/// `[health]`: plain HTTP `GET /healthz` (the process runs) and `GET /readyz` (it is
/// connected to NATS and follows its events), for orchestrators' probes; the same section
/// every service reads (see `bus::health`).
pub use bus::health::HealthSettings;

impl Default for BusSettings {
    fn default() -> BusSettings {
        BusSettings {
            nats_url: default_nats_url(),
            prefix: default_prefix(),
        }
    }
}

impl Default for ScheduleSettings {
    fn default() -> ScheduleSettings {
        ScheduleSettings {
            enabled: default_schedule_enabled(),
            cron: default_cron(),
            timezone: default_timezone(),
        }
    }
}

impl Settings {
    /// Loads the settings from the optional TOML `file` and the `KEYSYNC_*` environment
    /// (see the `config` crate), then validates them.
    pub fn load(file: Option<&Path>) -> Result<Settings, config::Error> {
        let settings: Settings = config::load(file)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value; no IO. Keys in errors are full paths (`control_plane.schedule.cron`).
    pub fn validate(&self) -> Result<(), Invalid> {
        self.bus.validate().map_err(|error| error.within("bus"))?;
        self.control_plane
            .validate()
            .map_err(|error| error.within("control_plane"))?;
        for (name, connector) in &self.keycloak {
            connector
                .validate()
                .map_err(|error| error.within(&format!("keycloak.{name}")))?;
        }
        for product in self.products.enabled() {
            if let Some(settings) = self.products.get(product) {
                settings
                    .client_settings(product)
                    .map_err(|error| error.within(&format!("products.{product}")))?;
            }
        }
        Ok(())
    }
}

impl BusSettings {
    /// Checks the prefix and the URL; no IO. Keys are relative to `[bus]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let valid_prefix = !self.prefix.is_empty()
            && self
                .prefix
                .chars()
                .all(|char| char.is_ascii_alphanumeric() || char == '-' || char == '_');
        if !valid_prefix {
            return Err(Invalid::new(
                "prefix",
                "must be letters, digits, `-` and `_`",
            ));
        }
        if self.nats_url.trim().is_empty() {
            return Err(Invalid::new("nats_url", "must not be empty"));
        }
        Ok(())
    }
}

impl ControlPlaneSettings {
    /// Checks the token and the schedule; no IO (the time zone is looked up when the
    /// service starts). Keys are relative to `[control_plane]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.token.expose().trim().is_empty() {
            return Err(Invalid::new(
                "token",
                "must not be empty (set `token_file` to a file that holds it)",
            ));
        }
        let endpoint = self.endpoint.trim();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(Invalid::new(
                "endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        schedule::parse_cron(&self.schedule.cron)
            .map_err(|reason| Invalid::new("cron", reason).within("schedule"))?;
        Ok(())
    }
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".to_owned()
}

fn default_prefix() -> String {
    "keysync".to_owned()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

fn default_endpoint() -> String {
    "http://127.0.0.1:50051".to_owned()
}

fn default_schedule_enabled() -> bool {
    true
}

fn default_cron() -> String {
    "0 2 * * *".to_owned()
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

/// Why the control plane could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Runs(#[from] runs::RunsError),
    #[error("listening on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving the gRPC API")]
    Serve(#[source] tonic::transport::Error),
    #[error("building the reflection service from the descriptor set")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error(transparent)]
    Health(#[from] HealthError),
}

/// A built control plane: connected to NATS, its buckets and consumer made, its ports bound.
/// Nothing runs until [`App::run_until_stopped`] or [`App::run_until`].
pub struct App {
    runs: Arc<Runs>,
    connections: Arc<Connections>,
    events: EventConsumer,
    auth: BearerAuth,
    schedule: Option<Schedule>,
    listener: TcpListener,
    local_addr: SocketAddr,
    health: Health,
    health_server: Option<HealthServer>,
}

impl App {
    /// Validates `settings`, connects to NATS, opens the buckets and binds the ports
    /// (port 0 picks a free one; see [`App::local_addr`]).
    pub async fn build(settings: Settings) -> Result<App, Error> {
        settings.validate()?;
        let schedule = Schedule::from_settings(&settings.control_plane.schedule)
            .map_err(|error| error.within("control_plane.schedule"))?;
        let auth = BearerAuth::new(&settings.control_plane.token);
        let connections = Arc::new(Connections::new(&settings.keycloak, &settings.products)?);
        let bus = Bus::connect(&settings.bus.nats_url, Topology::new(&settings.bus.prefix)).await?;
        let store = Store::open(&bus).await?;
        let events = EventConsumer::create(&bus).await?;
        let health = Health::new(bus.client().clone());
        health.expect(&bus.topology().control_plane_consumer());
        let runs = Arc::new(Runs::new(bus, store));

        let address = settings.control_plane.listen;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| Error::Bind { address, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { address, source })?;
        let health_server = HealthServer::bind(&settings.health).await?;
        Ok(App {
            runs,
            connections,
            events,
            auth,
            schedule,
            listener,
            local_addr,
            health,
            health_server,
        })
    }

    /// The address the gRPC API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the HTTP health endpoints, when `[health] listen` is set.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_server.as_ref().map(HealthServer::local_addr)
    }

    /// Runs until SIGTERM or ctrl-c, then drains: the API stops taking calls and finishes
    /// the ones in flight, and the event consumer finishes the event in hand.
    pub async fn run_until_stopped(self) -> Result<(), Error> {
        self.run_until(shutdown_signal()).await
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
        let control = service::ControlPlane::new(Arc::clone(&self.runs), self.connections)
            .into_server(self.auth);

        let (stop_sender, stop) = watch::channel(false);
        let lag = ConsumerLag::spawn(
            vec![self.events.pull_consumer().clone()],
            bus::lag::DEFAULT_INTERVAL,
        );
        let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();
        {
            let (runs, stop, health) = (Arc::clone(&self.runs), stop.clone(), self.health.clone());
            tasks.spawn(async move { Ok(events::consume(self.events, runs, stop, health).await?) });
        }
        if let Some(schedule) = self.schedule {
            tasks.spawn(schedule::run(
                schedule,
                Arc::clone(&self.runs),
                stop.clone(),
            ));
        }
        if let Some(server) = self.health_server {
            let mut stop = stop.clone();
            let health = self.health.clone();
            tasks.spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                };
                Ok(server.serve(health, stopped).await?)
            });
        }
        tasks.spawn(runs::recover(Arc::clone(&self.runs)));

        tracing::info!(listen = %self.local_addr, "Serving the control API.");
        let served = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(control)
            .serve_with_incoming_shutdown(TcpIncoming::from(self.listener), shutdown)
            .await;
        self.health.set_stopping();
        lag.stop().await;
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

/// Completes on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %error, "Cannot listen for ctrl-c.");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Received ctrl-c; shutting down."),
        () = terminate => tracing::info!("Received SIGTERM; shutting down."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Settings, config::Error> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").expect("writes the token");
        let file = dir.path().join("keysync.toml");
        let toml = toml.replace("TOKEN_PATH", &token.display().to_string());
        std::fs::write(&file, toml).expect("writes the file");
        Settings::load(Some(&file))
    }

    #[test]
    fn settings_take_their_defaults_and_read_the_token_from_its_file() {
        let settings = load("[control_plane]\ntoken_file = \"TOKEN_PATH\"\n").expect("loads");
        assert_eq!(settings.bus.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(settings.bus.prefix, "keysync");
        let control_plane = &settings.control_plane;
        assert_eq!(control_plane.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(control_plane.token.expose(), "s3cret");
        assert_eq!(control_plane.endpoint, "http://127.0.0.1:50051");
        assert!(control_plane.schedule.enabled);
        assert_eq!(control_plane.schedule.cron, "0 2 * * *");
        assert_eq!(control_plane.schedule.timezone, "UTC");
        assert!(settings.health.listen.is_none());
        assert!(
            !format!("{settings:?}").contains("s3cret"),
            "the token is in Debug"
        );
    }

    #[test]
    fn other_services_sections_are_left_alone_but_an_unknown_key_here_is_an_error() {
        let shared =
            "[control_plane]\ntoken_file = \"TOKEN_PATH\"\n[planner]\nchange_set_size = 10\n";
        assert!(load(shared).is_ok());
        let typo = "[control_plane]\ntoken_file = \"TOKEN_PATH\"\n[control_plane.schedule]\ncorn = \"* * * * *\"\n";
        let error = load(typo).expect_err("unknown key").to_string();
        assert!(error.contains("control_plane.schedule"), "{error}");
        assert!(error.contains("corn"), "{error}");
    }

    #[test]
    fn a_missing_token_or_a_bad_cron_is_an_error_naming_the_key() {
        let error = load("[control_plane]\nlisten = \"127.0.0.1:1\"\n")
            .expect_err("no token")
            .to_string();
        assert!(error.contains("token"), "{error}");
        let error = load(
            "[control_plane]\ntoken_file = \"TOKEN_PATH\"\n[control_plane.schedule]\ncron = \"not cron\"\n",
        )
        .expect_err("bad cron")
        .to_string();
        assert!(error.contains("control_plane.schedule.cron"), "{error}");
    }
}
