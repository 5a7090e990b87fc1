//! Plain HTTP health endpoints for orchestrators' probes, the same in every service, served
//! when `[health] listen` is set:
//!
//! - `GET /healthz` answers 200 while the process runs (liveness);
//! - `GET /readyz` answers 200 while the service can take work (readiness): its connection
//!   to NATS is up, every durable consumer it [expects](Health::expect) is bound and being
//!   pulled from, and it is not shutting down. Otherwise 503, with the reason in the body.
//!
//! A service binds the port when it is built ([`HealthServer::bind`], so a port taken is an
//! error at start), [spawns](HealthServer::spawn) the server when it starts running, marks
//! its consumers [ready](Health::set_ready) once it pulls from them, and
//! [stops](RunningHealth::stop) the server when it shuts down, after
//! [`Health::set_stopping`].
//!
//! ```toml
//! [health]
//! listen = "0.0.0.0:8080"   # default: not served
//! ```

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, http::StatusCode, routing::get};
use serde::Deserialize;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

/// `[health]`: where the HTTP liveness and readiness endpoints listen. Every service reads
/// this section.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Where `/healthz` and `/readyz` listen, e.g. `0.0.0.0:8080`; port 0 picks a free
    /// one. Default: not served.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// Why the health endpoints could not be served.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("listening for the health endpoints on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving the health endpoints")]
    Serve(#[source] std::io::Error),
    #[error("the health endpoints' task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Whether a service can take work: cheap to clone, shared by the service's loop (which
/// reports on its consumers) and the `/readyz` handler (which reads it).
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    /// Each expected consumer, and whether it is bound and pulled from now.
    consumers: Mutex<BTreeMap<String, bool>>,
    /// The latest changes of a consumer's readiness, oldest first (at most
    /// [`TRANSITIONS_KEPT`]).
    transitions: Mutex<std::collections::VecDeque<(String, bool)>>,
    stopping: AtomicBool,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("readiness", &self.readiness())
            .finish()
    }
}

impl Health {
    /// The readiness of a service connected to NATS with `client`; it expects no consumer
    /// yet.
    pub fn new(client: async_nats::Client) -> Health {
        Health {
            inner: Arc::new(Inner {
                client,
                consumers: Mutex::new(BTreeMap::new()),
                transitions: Mutex::new(std::collections::VecDeque::new()),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// The service is not ready until [`Health::set_ready`] says `consumer` is.
    pub fn expect(&self, consumer: &str) {
        self.consumers().entry(consumer.to_owned()).or_insert(false);
    }

    /// Whether `consumer` is bound and pulled from now (false while it is bound again after
    /// a failure). Expects it, if it was not expected.
    pub fn set_ready(&self, consumer: &str, ready: bool) {
        let before = self.consumers().insert(consumer.to_owned(), ready);
        if before != Some(ready) {
            let mut transitions = lock(&self.inner.transitions);
            if transitions.len() == TRANSITIONS_KEPT {
                transitions.pop_front();
            }
            transitions.push_back((consumer.to_owned(), ready));
        }
    }

    /// The latest changes of the consumers' readiness, oldest first: `(consumer, ready)`.
    /// A consumer bound again after its stream failed shows `false`, then `true`.
    pub fn transitions(&self) -> Vec<(String, bool)> {
        lock(&self.inner.transitions).iter().cloned().collect()
    }

    /// The service is shutting down and takes no more work: not ready from now on.
    pub fn set_stopping(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
    }

    /// `Ok` when the service can take work, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.inner.stopping.load(Ordering::Relaxed) {
            return Err("shutting down".to_owned());
        }
        if self.inner.client.connection_state() != async_nats::connection::State::Connected {
            return Err("not connected to NATS".to_owned());
        }
        let waiting: Vec<String> = self
            .consumers()
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(name, _)| format!("`{name}`"))
            .collect();
        if !waiting.is_empty() {
            return Err(format!("consumer {} not bound yet", waiting.join(", ")));
        }
        Ok(())
    }

    fn consumers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        lock(&self.inner.consumers)
    }
}

/// How many readiness changes [`Health::transitions`] keeps.
const TRANSITIONS_KEPT: usize = 64;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The health endpoints' port, bound and not served yet.
#[derive(Debug)]
pub struct HealthServer {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl HealthServer {
    /// Binds `[health] listen`, if set.
    pub async fn bind(settings: &HealthSettings) -> Result<Option<HealthServer>, HealthError> {
        let Some(address) = settings.listen else {
            return Ok(None);
        };
        let bind_error = |source| HealthError::Bind { address, source };
        let listener = TcpListener::bind(address).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Some(HealthServer {
            listener,
            local_addr,
        }))
    }

    /// The address bound (with the port picked when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves the endpoints until `shutdown` completes.
    pub async fn serve(
        self,
        health: Health,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HealthError> {
        tracing::info!(listen = %self.local_addr, "Serving /healthz and /readyz.");
        axum::serve(self.listener, router(health))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(HealthError::Serve)
    }

    /// Serves the endpoints on a task of their own until [`RunningHealth::stop`].
    pub fn spawn(self, health: Health) -> RunningHealth {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(self.serve(health, async move {
            let _ = stopped.wait_for(|stopped| *stopped).await;
        }));
        RunningHealth { stop, task }
    }
}

/// Health endpoints served on their own task.
#[derive(Debug)]
pub struct RunningHealth {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), HealthError>>,
}

impl RunningHealth {
    /// Stops serving (requests in flight are answered first) and waits until the port is
    /// closed.
    pub async fn stop(self) -> Result<(), HealthError> {
        let _ = self.stop.send(true);
        self.task.await.map_err(HealthError::Task)?
    }
}

/// Stops `running`, if any, logging a failure instead of answering it: for a service's
/// shutdown path, which goes on either way.
pub async fn stop(running: Option<RunningHealth>) {
    if let Some(running) = running
        && let Err(error) = running.stop().await
    {
        tracing::warn!(error = %error, "The health endpoints stopped with an error.");
    }
}

fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = health.readiness();
                async move {
                    match readiness {
                        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
                    }
                }
            }),
        )
}
