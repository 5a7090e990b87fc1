//! REST emulators of Jira, Confluence and Bitbucket Data Center, for tests, the demo and
//! benchmarks.
//!
//! [`spawn`] starts one product on `127.0.0.1` (port 0 picks a free one) and answers its
//! documented user and group endpoints, written from `shared/reference/atlassian-rest.md` and
//! Bitbucket's OpenAPI document, independently of the `atlassian` client: real paths, bodies,
//! status codes, paging envelopes and error shapes; bearer and basic auth (Confluence answers
//! an invalid token as the anonymous user, like the real one; Bitbucket refuses HTTP access
//! tokens on its administrative endpoints, like the real one); each caller's rights (the
//! `access` module); in-memory state.
//!
//! Switches for testing clients ([`Config`]): latency before every answer, a token-bucket rate
//! limit answering 429 with `Retry-After` and `X-RateLimit-*` on every answer, injected 503s,
//! Jira 10.3, 10.1 or 9.12 behaviour, a licence seat limit (and each product's licence
//! endpoint), Jira projects and components with their leads, Bitbucket's global permissions,
//! callers with fewer rights than the administrator.
//!
//! Test endpoints, outside auth and rate limit: `GET /_emulator/state` (accounts, groups,
//! memberships, permissions, Jira projects with their leads, and counters, see
//! [`store::Dump`]), `POST /_emulator/reset` (back
//! to the seed) and `POST /_emulator/seed` (replace the state with a [`store::SeedDocument`]).
//! In-process tests can use [`Running::state`] instead.

#![allow(
    clippy::result_large_err,
    reason = "handlers return the product's error answer as `Err(Response)`, once per request"
)]

/// Unwraps an `Ok`, or returns the `Err` answer from the handler.
macro_rules! tri {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(response) => return response,
        }
    };
}

mod access;
mod bitbucket;
mod bucket;
mod confluence;
mod control;
mod gate;
mod jira;
mod jira_projects;
mod jira_rules;
mod projects;
mod reply;
mod search;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;

/// Which product to emulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    Jira,
    Confluence,
    Bitbucket,
}

/// The Jira version whose user-listing behaviour to emulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JiraVersion {
    /// 10.3 LTS: `GET /user/list` with a cursor; `/user/search` answers at most 100 users and
    /// ignores `startAt`.
    V10_3,
    /// 10.1: no `/user/list` yet (404), and `/user/search` answers at most 100 users and
    /// ignores `startAt` (JRASERVER-78660, JRASERVER-78520): the version where a listing by
    /// search alone is capped at 100.
    V10_1,
    /// 9.12 LTS: no `/user/list` (404); `/user/search` stops at the first 1,000 users.
    V9_12,
}

impl JiraVersion {
    fn version_numbers(self) -> [u32; 3] {
        match self {
            JiraVersion::V10_3 => [10, 3, 0],
            JiraVersion::V10_1 => [10, 1, 0],
            JiraVersion::V9_12 => [9, 12, 0],
        }
    }

    /// Whether `GET /rest/api/2/user/list` exists (10.3 LTS and later).
    fn has_user_list(self) -> bool {
        self == JiraVersion::V10_3
    }
}

/// Everything an emulator is started with.
#[derive(Clone, Debug)]
pub struct Config {
    pub product: Product,
    /// 0 picks a free port.
    pub port: u16,
    /// The accepted personal access token; `None` accepts no bearer token.
    pub token: Option<String>,
    /// The accepted basic-auth user and password; `None` accepts no basic auth.
    pub basic: Option<(String, String)>,
    /// Slept before every answer.
    pub latency: Duration,
    /// Requests per second of the token bucket (capacity = the same number); 0 is no limit.
    pub rate_limit: u32,
    /// Every Nth request answers 503; 0 never.
    pub fail_503_every: u64,
    /// Every Nth request answers 429 with `Retry-After: 1` (before the 503s), whatever the
    /// rate: a limit the client's pacer cannot see coming; 0 never.
    pub fail_429_every: u64,
    pub jira_version: JiraVersion,
    /// The most groups one Jira `groups/picker` call answers (the server property
    /// `jira.ajax.autocomplete.limit`).
    pub jira_picker_limit: usize,
    /// Active accounts the licence allows; `None` is unlimited. Confluence answers 402 to a
    /// create beyond it. Bitbucket answers 403 to a create into the default group, or an add
    /// to a group that grants a licence (`stash-users` or a group with a global permission),
    /// of an account without a licence once that many active accounts hold one.
    pub license_seats: Option<usize>,
    /// Keep a log of every request (time, method, URI, body, status) in the state dump; for
    /// tests that check timing.
    pub record_requests: bool,
    /// The initial state, also restored by `POST /_emulator/reset`.
    pub seed: store::Seed,
    /// Bitbucket's global permissions at start and after `POST /_emulator/reset`; each names
    /// a user or a group of [`Config::seed`]. Must be empty for Jira and Confluence.
    pub permissions: Vec<store::SeedPermission>,
    /// Accounts of [`Config::seed`] that may sign in besides the administrator of `token`
    /// and `basic`, each with the rights the directory gives it.
    pub callers: Vec<store::SeedCaller>,
}

impl Config {
    /// A config for `product` on a free port with the test credentials (token `test-token`,
    /// basic `admin`/`admin`, both a system administrator), no latency, no rate limit, no
    /// failures, Jira 10.3, and an empty directory with no global permissions and no other
    /// callers.
    pub fn for_tests(product: Product) -> Config {
        Config {
            product,
            port: 0,
            token: Some("test-token".to_owned()),
            basic: Some(("admin".to_owned(), "admin".to_owned())),
            latency: Duration::ZERO,
            rate_limit: 0,
            fail_503_every: 0,
            fail_429_every: 0,
            jira_version: JiraVersion::V10_3,
            jira_picker_limit: 1000,
            license_seats: None,
            record_requests: false,
            seed: store::Seed::default(),
            permissions: Vec::new(),
            callers: Vec::new(),
        }
    }
}

/// A failure to start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on 127.0.0.1:{port}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid seed: {message}")]
    Seed { message: String },
}

/// A running emulator; it stops when [`Running::shutdown`] is called or this is dropped.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    state: store::StateHandle,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The in-memory state, for tests that read or seed it without HTTP.
    pub fn state(&self) -> &store::StateHandle {
        &self.state
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Binds `127.0.0.1:config.port` and serves the product in a background task.
pub async fn spawn(config: Config) -> Result<Running, Error> {
    let port = config.port;
    let state = store::StateHandle::new(config)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| Error::Bind { port, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Bind { port, source })?;
    let router = router(state.clone());
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = shutdown_rx.await;
        });
        if let Err(error) = server.await {
            tracing::error!(error = %error, "The emulator stopped serving.");
        }
    });
    tracing::info!(product = ?state.product(), %addr, "The emulator is listening.");
    Ok(Running {
        addr,
        state,
        shutdown: Some(shutdown_tx),
        task: Some(task),
    })
}

/// The whole router: the product's endpoints behind the gate (auth, rate limit, failures,
/// latency, counters), plus the test endpoints outside it.
fn router(state: store::StateHandle) -> axum::Router {
    let product_routes = match state.product() {
        Product::Jira => jira::routes(),
        Product::Confluence => confluence::routes(),
        Product::Bitbucket => bitbucket::routes(),
    };
    let gated = product_routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gate::gate,
        ))
        .with_state(state.clone());
    control::routes().with_state(state).merge(gated)
}
