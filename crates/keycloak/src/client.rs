//! [`Client`]: one realm's admin API with bounded concurrency, timeouts and retries.
//!
//! Every request goes through [`Client::get`]: it takes a permit of the client-wide
//! semaphore (`concurrency` requests in flight at most, whatever the fetch does), sends
//! with the cached token, and retries with exponential backoff on a 5xx, a 429, a
//! transport error or timeout, and a body that is not the expected JSON (Keycloak cuts
//! long responses short when its transaction times out, keycloak#52033). A 401 gets one
//! new token and one more try; a 403 is [`Error::MissingRole`] with the role the endpoint
//! needs.
//!
//! Transport errors drop the URL reqwest puts in them (`reqwest::Error::without_url`)
//! before they are logged or returned, so no query string reaches a log line or a stored
//! result; the client credentials travel in the token request's body, never in a URL.
//! [`Client::new`] trusts the extra roots of `ca` (`ca_file`) and logs
//! [`::config::plaintext_warning`] for plain `http://` to another host.
//!
//! ## Hostile answers
//!
//! What the server sends is never trusted with memory, time or arithmetic:
//!
//! - **Bodies are read with a limit.** A 2xx body is read chunk by chunk and fails with
//!   [`Error::BodyTooLarge`] (naming the limit, not retried) as soon as it passes
//!   [`MAX_BODY_BYTES`] (64 MiB), or at once when its `Content-Length` does; the rest is
//!   never read. A token answer has [`MAX_TOKEN_BODY_BYTES`]; of an error answer only the
//!   first 16 KiB are read, for the message. The client's timeout covers the whole body,
//!   so a server that sends slowly is a timeout, retried like any.
//! - **Decode errors are told apart.** JSON cut short or not JSON at all is retried (the
//!   truncation above); JSON of the wrong shape (a missing required field, a wrong type)
//!   is [`Error::Decode`] at once: asking again gets the same answer.
//! - **Token lifetimes are clamped.** `expires_in` is read as any JSON number; negative is
//!   zero (a new token for every request), anything past [`MAX_TOKEN_LIFETIME`] (one day)
//!   is one day, so no overflow and no token kept for ever; see `token`.
//! - **`Retry-After` is bounded.** On a retried 5xx or 429, a `Retry-After` in seconds
//!   lengthens the backoff, cut to [`MAX_RETRY_AFTER`]; digits past `u64` are the cap,
//!   an HTTP date or a malformed value is ignored. Retries stay bounded by `retries`.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::{
    Error,
    config::KeycloakSettings,
    representation::TokenResponse,
    token::{AccessToken, TokenCache},
};

/// The admin API of one realm. Cheap to clone; clones share the token, the connection
/// pool, the concurrency limit and the progress counters.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    settings: KeycloakSettings,
    /// `{endpoint}/admin/realms/{realm}`.
    admin_base: url::Url,
    token_url: url::Url,
    token: TokenCache,
    permits: Semaphore,
    progress: Progress,
}

/// Counters of what the client has read so far, for logs and for tests that act in the
/// middle of a fetch.
#[derive(Clone, Default)]
pub struct Progress {
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    users: AtomicU64,
    groups: AtomicU64,
    memberships: AtomicU64,
}

impl Progress {
    /// Admin API responses received (any status).
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::Relaxed)
    }

    pub fn retries(&self) -> u64 {
        self.counters.retries.load(Ordering::Relaxed)
    }

    /// Users read, counting a rescan's users again.
    pub fn users(&self) -> u64 {
        self.counters.users.load(Ordering::Relaxed)
    }

    pub fn groups(&self) -> u64 {
        self.counters.groups.load(Ordering::Relaxed)
    }

    pub fn memberships(&self) -> u64 {
        self.counters.memberships.load(Ordering::Relaxed)
    }

    pub(crate) fn add_users(&self, n: usize) {
        self.counters.users.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_groups(&self, n: usize) {
        self.counters.groups.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_memberships(&self, n: usize) {
        self.counters
            .memberships
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Progress")
            .field("requests", &self.requests())
            .field("retries", &self.retries())
            .field("users", &self.users())
            .field("groups", &self.groups())
            .field("memberships", &self.memberships())
            .finish()
    }
}

/// An admin API endpoint, as errors and logs name it; each knows the role it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Users,
    UsersCount,
    User,
    UserGroups,
    Groups,
    GroupsCount,
    Children,
    Members,
    /// `GET /admin-events` (see `events`).
    AdminEvents,
    /// `GET /events`, the user events (see `events`).
    UserEvents,
    EventsConfig,
    /// `GET /admin/realms/{realm}` itself.
    Realm,
}

impl Endpoint {
    fn template(self) -> &'static str {
        match self {
            Endpoint::Users => "GET /users",
            Endpoint::UsersCount => "GET /users/count",
            Endpoint::User => "GET /users/{id}",
            Endpoint::UserGroups => "GET /users/{id}/groups",
            Endpoint::Groups => "GET /groups",
            Endpoint::GroupsCount => "GET /groups/count",
            Endpoint::Children => "GET /groups/{id}/children",
            Endpoint::Members => "GET /groups/{id}/members",
            Endpoint::AdminEvents => "GET /admin-events",
            Endpoint::UserEvents => "GET /events",
            Endpoint::EventsConfig => "GET /events/config",
            Endpoint::Realm => "GET /admin/realms/{realm}",
        }
    }

    /// The `realm-management` role that grants the endpoint. `view-users` implies
    /// `query-users` and `query-groups`; listing a group's members needs `view-users`.
    /// Both event listings and the events configuration need `view-events`
    /// (`requireViewEvents`); the realm's attributes need `view-realm`.
    fn role(self) -> &'static str {
        match self {
            Endpoint::AdminEvents | Endpoint::UserEvents | Endpoint::EventsConfig => "view-events",
            Endpoint::Realm => "view-realm",
            Endpoint::Groups | Endpoint::GroupsCount | Endpoint::Children => "query-groups",
            Endpoint::Users
            | Endpoint::UsersCount
            | Endpoint::User
            | Endpoint::UserGroups
            | Endpoint::Members => "view-users",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.template())
    }
}

/// What one attempt of a request came to.
enum Attempt<T> {
    Done(T),
    /// Worth another try after a backoff.
    Retry(Error),
    /// Worth another try after a backoff, but not before the server's `Retry-After`.
    Wait(Error, Duration),
    /// Another try gives the same answer.
    Fail(Error),
}

impl Client {
    /// Validates the settings and builds the HTTP client; no IO.
    pub fn new(settings: KeycloakSettings) -> Result<Client, Error> {
        settings.validate()?;
        let endpoint = url::Url::parse(settings.endpoint.trim_end_matches('/'))
            .map_err(|error| ::config::Invalid::new("endpoint", error.to_string()))?;
        let url_below = |segments: &[&str]| -> Result<url::Url, Error> {
            let mut url = endpoint.clone();
            url.path_segments_mut()
                .map_err(|()| ::config::Invalid::new("endpoint", "cannot be a base URL"))?
                .pop_if_empty()
                .extend(segments);
            Ok(url)
        };
        let admin_base = url_below(&["admin", "realms", &settings.realm])?;
        let token_url = url_below(&[
            "realms",
            &settings.realm,
            "protocol",
            "openid-connect",
            "token",
        ])?;
        if let Some(warning) = ::config::plaintext_warning(&settings.endpoint) {
            tracing::warn!(realm = %settings.realm, "Keycloak endpoint: {warning}");
        }
        let ca_certificates = settings.ca_certificates()?;
        let has_ca = !ca_certificates.is_empty();
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout())
            .connect_timeout(settings.timeout().min(Duration::from_secs(10)))
            .pool_max_idle_per_host(settings.concurrency)
            .tcp_nodelay(true)
            .user_agent(concat!("keysync/", env!("CARGO_PKG_VERSION")));
        if has_ca {
            builder = builder.tls_certs_merge(ca_certificates);
        }
        let http = builder.build().map_err(|error| {
            let error = error.without_url();
            if has_ca {
                // The extra roots are what can make an otherwise fixed build fail.
                Error::Settings(::config::Invalid::new(
                    "ca_file",
                    format!("cannot be trusted: {error}"),
                ))
            } else {
                Error::Build(error)
            }
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                permits: Semaphore::new(settings.concurrency),
                settings,
                admin_base,
                token_url,
                token: TokenCache::default(),
                progress: Progress::default(),
            }),
        })
    }

    pub fn settings(&self) -> &KeycloakSettings {
        &self.inner.settings
    }

    /// The counters of this client (and its clones).
    pub fn progress(&self) -> &Progress {
        &self.inner.progress
    }

    /// GETs `path` below `/admin/realms/{realm}` (segments, percent-encoded here) and
    /// decodes the JSON answer.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        path: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, Error> {
        let mut url = self.inner.admin_base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.extend(path);
        }
        let mut reauthorized = false;
        let mut failures = 0;
        loop {
            let token = self.token().await?;
            let (error, at_least) = match self.get_once(endpoint, &url, query, &token).await {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fail(Error::MissingRole { status: 401, .. }) if !reauthorized => {
                    // The token may have expired early (a clock jump, a revocation):
                    // one new token, one more try.
                    reauthorized = true;
                    self.inner.token.invalidate(&token).await;
                    continue;
                }
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry(error) => (error, Duration::ZERO),
                Attempt::Wait(error, at_least) => (error, at_least),
            };
            failures += 1;
            if failures > self.inner.settings.retries {
                return Err(error);
            }
            self.inner
                .progress
                .counters
                .retries
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                endpoint = endpoint.template(),
                attempt = failures,
                error = %error,
                "Retrying a Keycloak request."
            );
            tokio::time::sleep(backoff(failures).max(at_least)).await;
        }
    }

    async fn get_once<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        url: &url::Url,
        query: &[(&str, &str)],
        token: &AccessToken,
    ) -> Attempt<T> {
        let label = || endpoint.template().to_owned();
        let response = {
            // The semaphore is never closed, so a permit always comes. It is held until
            // the body is read.
            let _permit = self.inner.permits.acquire().await.ok();
            let sent = self
                .inner
                .http
                .get(url.clone())
                .query(query)
                .bearer_auth(token.expose())
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(source) => {
                    return Attempt::Retry(Error::Transport {
                        endpoint: label(),
                        source: source.without_url(),
                    });
                }
            };
            self.inner
                .progress
                .counters
                .requests
                .fetch_add(1, Ordering::Relaxed);
            let status = response.status();
            if !status.is_success() {
                let wait = retry_after(response.headers());
                return match read_prefix(response, ERROR_BODY_BYTES).await {
                    Ok(body) => self.failure(endpoint, status, &body, wait),
                    Err(source) => Attempt::Retry(Error::Transport {
                        endpoint: label(),
                        source: source.without_url(),
                    }),
                };
            }
            read_body(response, MAX_BODY_BYTES).await
        };
        match response {
            Ok(body) => decode(label(), &body),
            Err(BodyError::TooLarge) => Attempt::Fail(Error::BodyTooLarge {
                endpoint: label(),
                limit: MAX_BODY_BYTES,
            }),
            Err(BodyError::Transport(source)) => Attempt::Retry(Error::Transport {
                endpoint: label(),
                source: source.without_url(),
            }),
        }
    }

    /// What an answer other than 2xx comes to; `body` is its start, `wait` its
    /// `Retry-After`.
    fn failure<T>(
        &self,
        endpoint: Endpoint,
        status: StatusCode,
        body: &[u8],
        wait: Option<Duration>,
    ) -> Attempt<T> {
        let label = || endpoint.template().to_owned();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Attempt::Fail(Error::MissingRole {
                role: endpoint.role(),
                endpoint: label(),
                client_id: self.inner.settings.client_id.clone(),
                status: status.as_u16(),
            });
        }
        let error = Error::Http {
            status: status.as_u16(),
            endpoint: label(),
            body: body_excerpt(body),
        };
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return retry(error, wait);
        }
        if status == StatusCode::NOT_FOUND && is_realm_missing(body) {
            return Attempt::Fail(Error::RealmNotFound {
                realm: self.inner.settings.realm.clone(),
                endpoint: self.inner.settings.endpoint.clone(),
            });
        }
        Attempt::Fail(error)
    }

    /// The current access token, requested (with retries) when there is none or it is
    /// due for renewal.
    pub(crate) async fn token(&self) -> Result<AccessToken, Error> {
        self.inner
            .token
            .get(|| async {
                let mut failures = 0;
                loop {
                    let (error, at_least) = match self.request_token().await {
                        Attempt::Done(token) => return Ok(token),
                        Attempt::Fail(error) => return Err(error),
                        Attempt::Retry(error) => (error, Duration::ZERO),
                        Attempt::Wait(error, at_least) => (error, at_least),
                    };
                    failures += 1;
                    if failures > self.inner.settings.retries {
                        return Err(error);
                    }
                    tracing::warn!(
                        attempt = failures,
                        error = %error,
                        "Retrying the Keycloak token request."
                    );
                    tokio::time::sleep(backoff(failures).max(at_least)).await;
                }
            })
            .await
    }

    async fn request_token(&self) -> Attempt<(String, Duration)> {
        let settings = &self.inner.settings;
        let label = || format!("POST {}", self.inner.token_url);
        let sent = self
            .inner
            .http
            .post(self.inner.token_url.clone())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", settings.client_id.as_str()),
                ("client_secret", settings.client_secret.expose()),
            ])
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(source) => {
                return Attempt::Retry(Error::Transport {
                    endpoint: label(),
                    source: source.without_url(),
                });
            }
        };
        let status = response.status();
        let wait = retry_after(response.headers());
        let body = if status.is_success() {
            read_body(response, MAX_TOKEN_BODY_BYTES).await
        } else {
            // An error's body is only for the message: its start will do.
            read_prefix(response, ERROR_BODY_BYTES)
                .await
                .map_err(BodyError::Transport)
        };
        let body = match body {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Attempt::Fail(Error::BodyTooLarge {
                    endpoint: label(),
                    limit: MAX_TOKEN_BODY_BYTES,
                });
            }
            Err(BodyError::Transport(source)) => {
                return Attempt::Retry(Error::Transport {
                    endpoint: label(),
                    source: source.without_url(),
                });
            }
        };
        if status.is_success() {
            return match decode::<TokenResponse>(label(), &body) {
                Attempt::Done(token) => {
                    let lifetime = token_lifetime(&token.expires_in);
                    Attempt::Done((token.access_token, lifetime))
                }
                Attempt::Retry(error) => Attempt::Retry(error),
                Attempt::Wait(error, at_least) => Attempt::Wait(error, at_least),
                Attempt::Fail(error) => Attempt::Fail(error),
            };
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            let error = Error::Http {
                status: status.as_u16(),
                endpoint: label(),
                body: body_excerpt(&body),
            };
            return retry(error, wait);
        }
        if status == StatusCode::NOT_FOUND {
            return Attempt::Fail(Error::RealmNotFound {
                realm: settings.realm.clone(),
                endpoint: settings.endpoint.clone(),
            });
        }
        // Keycloak answers 401 `invalid_client` for a wrong id or secret, and 400
        // `unauthorized_client` for a client without service accounts.
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST) {
            return Attempt::Fail(Error::Unauthorized {
                client_id: settings.client_id.clone(),
                endpoint: label(),
                status: status.as_u16(),
                body: body_excerpt(&body),
            });
        }
        Attempt::Fail(Error::Http {
            status: status.as_u16(),
            endpoint: label(),
            body: body_excerpt(&body),
        })
    }
}

/// The largest response body read, in bytes: a longer one fails the request with
/// [`Error::BodyTooLarge`] as soon as it passes the limit (or at once, when its
/// `Content-Length` does), without reading the rest. A page of 500 full user
/// representations is well below 1 MiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The largest token endpoint answer read: a token is a few KiB.
pub const MAX_TOKEN_BODY_BYTES: usize = 1024 * 1024;

/// Of an error answer (not 2xx) only this much is read, for the message.
const ERROR_BODY_BYTES: usize = 16 * 1024;

/// The longest token lifetime believed; a longer (or overflowing) `expires_in` is cut to
/// it, a negative one is taken as zero (a new token for every request).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Why a body was not read.
enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// The whole body, read chunk by chunk, or [`BodyError::TooLarge`] as soon as it passes
/// `limit` bytes.
async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    let announced = response.content_length().unwrap_or(0);
    if usize::try_from(announced).map_or(true, |announced| announced > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if chunk.len() > limit.saturating_sub(body.len()) {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first `limit` bytes of the body at most; the rest is not read.
async fn read_prefix(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while body.len() < limit {
        let Some(chunk) = response.chunk().await? else {
            break;
        };
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(chunk.get(..room).unwrap_or(&chunk));
    }
    Ok(body)
}

/// Decodes a 2xx body. JSON cut short (or not JSON at all: a proxy's error page) is worth
/// another try; JSON of the wrong shape (a missing required field, a wrong type) is what
/// the server will answer again, so it fails at once.
fn decode<T: DeserializeOwned>(endpoint: String, body: &[u8]) -> Attempt<T> {
    match serde_json::from_slice(body) {
        Ok(value) => Attempt::Done(value),
        Err(source) if source.classify() == serde_json::error::Category::Data => {
            Attempt::Fail(Error::Decode { endpoint, source })
        }
        Err(source) => Attempt::Retry(Error::Decode { endpoint, source }),
    }
}

/// `expires_in` as a lifetime: negative (or not a number) is zero, and anything past
/// [`MAX_TOKEN_LIFETIME`] (an overflow included) is [`MAX_TOKEN_LIFETIME`].
pub(crate) fn token_lifetime(expires_in: &serde_json::Number) -> Duration {
    let seconds = if let Some(seconds) = expires_in.as_u64() {
        Duration::from_secs(seconds)
    } else {
        match expires_in.as_f64() {
            Some(seconds) if seconds.is_finite() && seconds > 0.0 => {
                Duration::try_from_secs_f64(seconds).unwrap_or(MAX_TOKEN_LIFETIME)
            }
            _ => Duration::ZERO,
        }
    };
    seconds.min(MAX_TOKEN_LIFETIME)
}

/// The longest `Retry-After` honoured; a longer one is cut to it, so that a server cannot
/// park the fetch (each retry still counts against `retries`).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Another try, not before `wait` if the server asked for one.
fn retry<T>(error: Error, wait: Option<Duration>) -> Attempt<T> {
    match wait {
        Some(wait) => Attempt::Wait(error, wait),
        None => Attempt::Retry(error),
    }
}

/// `Retry-After` in delta-seconds, cut to [`MAX_RETRY_AFTER`] (a number too long for a
/// `u64` included). An HTTP date, a negative, fractional or otherwise malformed value is
/// ignored: the usual backoff applies.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    // Only digits: the one way to fail is a number past `u64::MAX`.
    let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// 200 ms, 400 ms, 800 ms ... up to 5 s, each stretched by up to a quarter so that
/// concurrent retries spread out.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(200)
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(Duration::from_secs(5));
    let spread = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|now| now.subsec_nanos() % 250)
        .unwrap_or(0);
    base + base.mul_f64(f64::from(spread) / 1000.0)
}

/// The start of an error body, for the error message.
fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Keycloak answers `{"error":"Realm not found."}` for an admin path of a missing realm.
fn is_realm_missing(body: &[u8]) -> bool {
    String::from_utf8_lossy(body).contains("Realm not found")
}

#[cfg(test)]
mod tests {
    use ::config::Secret;

    use super::*;

    #[test]
    fn retry_after_is_read_overflow_safe_and_capped() {
        let parse = |value: &str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::RETRY_AFTER,
                reqwest::header::HeaderValue::from_str(value).expect("a header value"),
            );
            retry_after(&headers)
        };
        assert_eq!(parse("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse("3600"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse("18446744073709551616"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse(&"9".repeat(400)), Some(MAX_RETRY_AFTER));
        for ignored in ["-1", "1.5", "", "Wed, 21 Oct 2015 07:28:00 GMT", "+3"] {
            assert_eq!(parse(ignored), None, "{ignored}");
        }
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new()), None);
    }

    #[test]
    fn token_lifetime_is_clamped() {
        let lifetime = |json: &str| {
            let number: serde_json::Number = serde_json::from_str(json).expect("a number");
            token_lifetime(&number)
        };
        assert_eq!(lifetime("300"), Duration::from_secs(300));
        assert_eq!(lifetime("0"), Duration::ZERO);
        assert_eq!(lifetime("-300"), Duration::ZERO);
        assert_eq!(lifetime("-1e300"), Duration::ZERO);
        assert_eq!(lifetime("18446744073709551615"), MAX_TOKEN_LIFETIME);
        assert_eq!(lifetime("1e300"), MAX_TOKEN_LIFETIME);
        assert_eq!(lifetime("2.5"), Duration::from_millis(2500));
    }

    #[tokio::test]
    async fn a_transport_error_carries_no_url() {
        // A port nobody listens on: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut settings = KeycloakSettings::new(
            &format!("http://127.0.0.1:{port}"),
            "corp",
            "keysync",
            Secret::new("client-secret-5d1b"),
        );
        settings.retries = 0;
        let client = Client::new(settings).expect("a client");
        let error = client
            .get::<serde_json::Value>(Endpoint::Users, &[], &[("search", "carol")])
            .await
            .expect_err("connection refused");
        let Error::Transport { source, .. } = &error else {
            panic!("not a transport error: {error:?}");
        };
        assert_eq!(source.url(), None);
        let text = format!("{error} {error:?} {source} {source:?}");
        assert!(!text.contains("client-secret-5d1b"), "{text}");
        assert!(!text.contains("url: Some"), "{text}");
    }
}
