//! The one HTTP layer the three clients share.
//!
//! Every request carries the auth header (`Bearer` PAT or `Basic`), `Accept` and, with a
//! body, `Content-Type: application/json`, and `X-Atlassian-Token: no-check`. Requests wait
//! for a slot of a semaphore (bounded concurrency) and then for the pacer, which keeps the
//! request rate below what the product's `X-RateLimit-*` headers say it refills, so a client
//! alone never provokes 429s. 429, 502, 503, 504 and transport errors are retried with
//! backoff, honouring `Retry-After`; every other status goes back to the product module, which
//! knows what it means for that call (a Jira 400 on "add member" is success).
//!
//! Every attempt is told to the client's [`RequestObserver`], if one is set, so the caller
//! can measure latency, retries and 429s without this crate knowing any metrics library.
//!
//! No error or log line carries a request's URL: reqwest's errors end with it, and a
//! Bitbucket user creation puts the initial password in its query, so every reqwest error
//! goes through [`without_url`] before it is logged, returned or stored; log lines describe
//! a request by its method and path only. The client trusts the extra roots of
//! `Connection::ca` (`ca_file`), and building one for plain `http://` to another host logs
//! [`::config::plaintext_warning`].
//!
//! Hostile or broken answers (rules this layer keeps for every product):
//! - Bodies are read chunk by chunk within [`Connection::max_body_bytes`] (64 MiB by
//!   default) and never buffered whole past it; a larger one is
//!   [`Error::ResponseTooLarge`], naming the limit, and is not retried (`http/body.rs`).
//! - Every number from a header is parsed without panicking and used with checked or
//!   saturating arithmetic: `Retry-After` is whole non-negative seconds or ignored (an HTTP
//!   date, a negative or fractional value falls back on the backoff), kept at most a day
//!   in [`Error::RateLimited`], and never waited for longer than `max_backoff`; the
//!   `X-RateLimit-*` numbers are checked and clamped by the pacer, which never holds a
//!   request back longer than `max_backoff` either, or one interval of
//!   `max_requests_per_second` when that is longer (`http/pacer.rs`).
//! - Paging is proven to progress one level up, in `client.rs`; required fields are
//!   required by the products' page and user types, in each product module.

mod body;
mod pacer;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use url::Url;

use self::body::BodyError;
use self::pacer::Pacer;
use crate::config::{Auth, Connection};
use crate::{Error, Product, RequestEvent, RequestObserver};

/// One request, built by a product module without IO. Its `Debug` shows the names of the
/// query parameters but no value and no body: a create carries the initial password in one
/// or the other.
#[derive(Clone, PartialEq)]
pub(crate) struct ApiRequest {
    pub(crate) method: Method,
    /// The path below the endpoint without the segments appended to it (names, ids), for
    /// metrics: one of a few dozen, never a user's name.
    pub(crate) endpoint: &'static str,
    /// Path segments below the endpoint, each percent-encoded on send.
    pub(crate) segments: Vec<String>,
    pub(crate) query: Vec<(&'static str, String)>,
    pub(crate) body: Option<serde_json::Value>,
}

impl ApiRequest {
    pub(crate) fn new(method: Method, path: &'static str) -> ApiRequest {
        ApiRequest {
            method,
            endpoint: path,
            segments: path.split('/').map(str::to_owned).collect(),
            query: Vec::new(),
            body: None,
        }
    }

    pub(crate) fn get(path: &'static str) -> ApiRequest {
        ApiRequest::new(Method::GET, path)
    }

    /// Appends one path segment, such as a user or group name, which may hold any character.
    pub(crate) fn segment(mut self, segment: &str) -> ApiRequest {
        self.segments.push(segment.to_owned());
        self
    }

    pub(crate) fn query(mut self, name: &'static str, value: impl Into<String>) -> ApiRequest {
        self.query.push((name, value.into()));
        self
    }

    pub(crate) fn json(mut self, body: serde_json::Value) -> ApiRequest {
        self.body = Some(body);
        self
    }

    /// A short, secret-free description for logs and errors.
    fn describe(&self) -> String {
        format!("{} /{}", self.method, self.segments.join("/"))
    }
}

impl fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let query: Vec<&str> = self.query.iter().map(|(name, _)| *name).collect();
        f.debug_struct("ApiRequest")
            .field("method", &self.method)
            .field("endpoint", &self.endpoint)
            .field("segments", &self.segments)
            .field("query", &query)
            .field("body", &self.body.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// A product's answer that was neither retried nor a transport error.
#[derive(Debug)]
pub(crate) struct ApiResponse {
    pub(crate) status: u16,
    pub(crate) body: bytes::Bytes,
    product: Product,
}

impl ApiResponse {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub(crate) fn json<T: DeserializeOwned>(&self, what: &'static str) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            product: self.product,
            what,
            source,
        })
    }

    /// The product's own error message from its error body (Jira `errorMessages`/`errors`,
    /// Confluence `message`, Bitbucket `errors[].message`), else the start of the body.
    pub(crate) fn message(&self) -> String {
        error_message(self.product, &self.body)
    }

    /// The error this status means when the product module has nothing more specific to say.
    pub(crate) fn into_error(self) -> Error {
        let message = self.message();
        let (product, status) = (self.product, self.status);
        match status {
            400 | 422 => Error::Validation {
                product,
                status,
                message,
            },
            401 => Error::Unauthorized {
                product,
                status,
                message,
            },
            402 => Error::LicenseLimit {
                product,
                status,
                message,
            },
            403 => Error::Forbidden {
                product,
                status,
                message,
            },
            404 => Error::NotFound {
                product,
                status,
                message,
            },
            409 => Error::Conflict {
                product,
                status,
                message,
            },
            _ => Error::UnexpectedStatus {
                product,
                status,
                message,
            },
        }
    }
}

/// The shared HTTP client of one product.
pub(crate) struct Http {
    product: Product,
    client: reqwest::Client,
    endpoint: Url,
    authorization: HeaderValue,
    /// The credentials are a bearer token.
    bearer: bool,
    slots: Semaphore,
    max_concurrency: usize,
    pacer: Pacer,
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    /// [`Connection::max_body_bytes`].
    max_body_bytes: usize,
    observer: Option<Arc<dyn RequestObserver>>,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http")
            .field("product", &self.product)
            .field("endpoint", &self.endpoint.as_str())
            .field("max_retries", &self.max_retries)
            .field("observed", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl Http {
    pub(crate) fn new(product: Product, connection: Connection) -> Result<Http, Error> {
        connection.validate(product)?;
        let config_error = |message: String| Error::Config { product, message };
        let credentials = match &connection.auth {
            Auth::Bearer(token) => format!("Bearer {}", token.expose()),
            Auth::Basic { user, password } => {
                let pair = format!("{user}:{}", password.expose());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
        };
        let mut authorization = HeaderValue::from_str(&credentials)
            .map_err(|_| config_error("credentials hold characters a header cannot".into()))?;
        authorization.set_sensitive(true);
        let mut default_headers = HeaderMap::new();
        default_headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        default_headers.insert("X-Atlassian-Token", HeaderValue::from_static("no-check"));
        if let Some(warning) = ::config::plaintext_warning(connection.endpoint.as_str()) {
            tracing::warn!(product = %product, "{product} endpoint: {warning}");
        }
        let ca_certificates = connection
            .ca_certificates()
            .map_err(|reason| config_error(format!("`ca_file` {reason}")))?;
        let has_ca = !ca_certificates.is_empty();
        let mut builder = reqwest::Client::builder()
            .default_headers(default_headers)
            .timeout(connection.request_timeout)
            .connect_timeout(connection.connect_timeout)
            .pool_max_idle_per_host(connection.max_concurrency);
        if has_ca {
            builder = builder.tls_certs_merge(ca_certificates);
        }
        let client = builder.build().map_err(|error| {
            let error = without_url(error);
            if has_ca {
                // The extra roots are what can make an otherwise fixed build fail.
                config_error(format!("`ca_file` cannot be trusted: {error}"))
            } else {
                config_error(format!("cannot build the HTTP client: {error}"))
            }
        })?;
        // The pacer holds a request back at most `max_backoff`, or one interval of our own
        // ceiling when that is longer.
        let pace_wait = connection
            .max_requests_per_second
            .and_then(|rate| Duration::try_from_secs_f64(rate.recip()).ok())
            .map_or(connection.max_backoff, |interval| {
                interval.max(connection.max_backoff)
            });
        Ok(Http {
            product,
            client,
            endpoint: connection.endpoint,
            authorization,
            bearer: matches!(connection.auth, Auth::Bearer(_)),
            slots: Semaphore::new(connection.max_concurrency),
            max_concurrency: connection.max_concurrency,
            pacer: Pacer::new(connection.max_requests_per_second, pace_wait),
            max_body_bytes: connection.max_body_bytes,
            max_retries: connection.max_retries,
            initial_backoff: connection.initial_backoff,
            max_backoff: connection.max_backoff,
            observer: None,
        })
    }

    /// Tells `observer` of every attempt from now on.
    pub(crate) fn set_observer(&mut self, observer: Arc<dyn RequestObserver>) {
        self.observer = Some(observer);
    }

    fn observe(&self, request: &ApiRequest, status: Option<u16>, elapsed: Duration, attempt: u32) {
        let Some(observer) = &self.observer else {
            return;
        };
        let retryable = status.is_none_or(|status| matches!(status, 429 | 502 | 503 | 504));
        observer.observe(&RequestEvent {
            product: self.product,
            method: request.method.as_str(),
            endpoint: request.endpoint,
            status,
            elapsed,
            attempt,
            retried: retryable && attempt <= self.max_retries,
        });
    }

    /// The product this client talks to.
    pub(crate) fn product(&self) -> Product {
        self.product
    }

    /// The most requests in flight at once, for callers that fan out.
    pub(crate) fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// Whether requests carry a bearer token rather than Basic credentials.
    pub(crate) fn uses_bearer_token(&self) -> bool {
        self.bearer
    }

    fn url(&self, request: &ApiRequest) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(&request.segments);
        }
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&request.query);
        }
        url
    }

    /// Sends `request`, retrying 429, 502, 503, 504 and transport errors, and answers any
    /// other status for the product module to interpret. A body over the limit fails at
    /// once ([`Error::ResponseTooLarge`]).
    pub(crate) async fn send(&self, request: &ApiRequest) -> Result<ApiResponse, Error> {
        let url = self.url(request);
        let body = request.body.as_ref().map(|body| body.to_string());
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let result = self.attempt(request, &url, body.as_deref(), attempt).await;
            let can_retry = attempt <= self.max_retries;
            let wait = match result {
                Ok((status, headers, body)) => {
                    let retry_after = retry_after(&headers);
                    let retryable = matches!(status, 429 | 502 | 503 | 504);
                    if !retryable {
                        return Ok(ApiResponse {
                            status,
                            body,
                            product: self.product,
                        });
                    }
                    let message = error_message(self.product, &body);
                    if !can_retry {
                        return Err(if status == 429 {
                            Error::RateLimited {
                                product: self.product,
                                attempts: attempt,
                                retry_after,
                                message,
                            }
                        } else {
                            Error::Unavailable {
                                product: self.product,
                                attempts: attempt,
                                status,
                                message,
                            }
                        });
                    }
                    let wait = retry_after
                        .unwrap_or_else(|| self.backoff(attempt))
                        .min(self.max_backoff);
                    if status == 429 {
                        self.pacer.pause(Instant::now(), wait);
                    }
                    tracing::warn!(
                        product = %self.product,
                        request = %request.describe(),
                        status,
                        attempt,
                        wait_ms = millis(wait),
                        "Retrying after a temporary failure."
                    );
                    wait
                }
                Err(BodyError::TooLarge) => {
                    return Err(Error::ResponseTooLarge {
                        product: self.product,
                        limit: self.max_body_bytes,
                    });
                }
                Err(BodyError::Transport(source)) => {
                    if !can_retry {
                        return Err(Error::Transport {
                            product: self.product,
                            attempts: attempt,
                            source,
                        });
                    }
                    let wait = self.backoff(attempt);
                    tracing::warn!(
                        product = %self.product,
                        request = %request.describe(),
                        attempt,
                        wait_ms = millis(wait),
                        error = %source,
                        "Retrying after a transport error."
                    );
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt of `request`: waits for a slot and the pacer, sends, and reads the body
    /// within the limit; tells the observer and the pacer.
    async fn attempt(
        &self,
        request: &ApiRequest,
        url: &Url,
        body: Option<&str>,
        attempt: u32,
    ) -> Result<(u16, HeaderMap, bytes::Bytes), BodyError> {
        let _slot = self.slots.acquire().await;
        let now = Instant::now();
        let start_at = self.pacer.reserve(now);
        if start_at > now {
            tokio::time::sleep_until(tokio::time::Instant::from_std(start_at)).await;
        }
        let mut builder = self
            .client
            .request(request.method.clone(), url.clone())
            .header(AUTHORIZATION, self.authorization.clone());
        if let Some(body) = body {
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_owned());
        }
        let _in_flight = self.pacer.start();
        let started = Instant::now();
        let result = match builder.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                body::read_limited(response, self.max_body_bytes)
                    .await
                    .map(|body| (status, headers, body))
            }
            Err(error) => Err(BodyError::Transport(error)),
        }
        .map_err(|error| match error {
            BodyError::Transport(error) => BodyError::Transport(without_url(error)),
            too_large => too_large,
        });
        self.observe(
            request,
            result.as_ref().ok().map(|(status, _, _)| *status),
            started.elapsed(),
            attempt,
        );
        if let Ok((status, headers, _)) = &result {
            self.pacer.observe(Instant::now(), headers);
            tracing::debug!(
                product = %self.product,
                request = %request.describe(),
                status,
                elapsed_ms = millis(started.elapsed()),
                "Request answered."
            );
        }
        result
    }

    /// Exponential backoff with jitter: between half and all of `initial * 2^(attempt-1)`,
    /// never more than `max_backoff`.
    fn backoff(&self, attempt: u32) -> Duration {
        use rand::Rng;
        let full = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let half = full / 2;
        // Below half of `full`, so it cannot overflow.
        let jitter = full.mul_f64(rand::rng().random_range(0.0..0.5));
        half.saturating_add(jitter).min(self.max_backoff)
    }
}

/// A duration in whole milliseconds for a log field, saturated.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `error` without the URL reqwest appends to its message: a Bitbucket user creation
/// carries the initial password in its query (and a URL may carry userinfo), so no HTTP
/// error leaves this module, reaches a log line or is stored with its URL. Every reqwest
/// error of [`Http::send`] goes through here.
pub(crate) fn without_url(error: reqwest::Error) -> reqwest::Error {
    error.without_url()
}

/// The longest `Retry-After` kept: a day. The wait itself is at most the client's
/// `max_backoff`; this only bounds what [`Error::RateLimited`] reports, so that a caller
/// adding it to an instant cannot overflow.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// `Retry-After` in whole seconds (the form the Data Center products send), at most
/// [`MAX_RETRY_AFTER`]; `None` for anything else (an HTTP date, a negative or fractional
/// number, garbage), which falls back on the backoff.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    // All digits: only too many of them fail to parse, and that is a huge wait.
    let seconds: u64 = text.parse().unwrap_or(u64::MAX);
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The product's message from its documented error body, or the start of the body.
fn error_message(product: Product, body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let mut messages: Vec<String> = Vec::new();
    if let Some(value) = &parsed {
        match product {
            Product::Jira => {
                if let Some(list) = value.get("errorMessages").and_then(|v| v.as_array()) {
                    messages.extend(list.iter().filter_map(|m| m.as_str()).map(str::to_owned));
                }
                if let Some(fields) = value.get("errors").and_then(|v| v.as_object()) {
                    messages.extend(fields.iter().map(|(field, message)| {
                        format!("{field}: {}", message.as_str().unwrap_or_default())
                    }));
                }
            }
            Product::Confluence => {
                if let Some(message) = value.get("message").and_then(|v| v.as_str()) {
                    messages.push(message.to_owned());
                }
                if let Some(list) = value.pointer("/data/errors").and_then(|v| v.as_array()) {
                    messages.extend(
                        list.iter()
                            .filter_map(|e| e.pointer("/message/translation"))
                            .filter_map(|m| m.as_str())
                            .map(str::to_owned),
                    );
                }
            }
            Product::Bitbucket => {
                if let Some(list) = value.get("errors").and_then(|v| v.as_array()) {
                    messages.extend(
                        list.iter()
                            .filter_map(|e| e.get("message"))
                            .filter_map(|m| m.as_str())
                            .map(str::to_owned),
                    );
                }
            }
        }
    }
    if !messages.is_empty() {
        return messages.join("; ");
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Keeps every event's fields as text.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<String>>>);

    struct FieldText<'a>(&'a mut String);

    impl tracing::field::Visit for FieldText<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            self.0.push_str(&format!("{}={value:?} ", field.name()));
        }
    }

    impl tracing::Subscriber for Captured {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            let mut text = String::new();
            span.record(&mut FieldText(&mut text));
            self.0.lock().unwrap().push(text);
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
            let mut text = String::new();
            values.record(&mut FieldText(&mut text));
            self.0.lock().unwrap().push(text);
        }
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut text = String::new();
            event.record(&mut FieldText(&mut text));
            self.0.lock().unwrap().push(text);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// An error and all its causes, as a log line or a stored result would carry it.
    fn chain(error: &(dyn std::error::Error + 'static)) -> String {
        let mut text = format!("{error} | {error:?}");
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(&format!(" | {cause} | {cause:?}"));
            source = cause.source();
        }
        text
    }

    #[tokio::test]
    async fn a_transport_error_on_a_bitbucket_create_carries_neither_the_url_nor_the_password() {
        // A port nobody listens on: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let endpoint = Url::parse(&format!("http://127.0.0.1:{port}/bitbucket")).unwrap();
        let mut connection = Connection::new(
            endpoint,
            Auth::Basic {
                user: "svc".into(),
                password: ::config::Secret::new("admin-pw-7f3a"),
            },
        );
        connection.max_retries = 1;
        connection.initial_backoff = Duration::from_millis(1);
        let http = Http::new(Product::Bitbucket, connection).expect("a client");
        // As `bitbucket::create_user_request` builds it: the initial password in the query.
        let request = ApiRequest::new(Method::POST, "rest/api/1.0/admin/users")
            .query("name", "carol")
            .query("password", "initial-pw-9c2e")
            .query("notify", "false");
        let printed = format!("{request:?}");
        assert!(printed.contains("password"), "{printed}");
        assert!(!printed.contains("initial-pw-9c2e"), "{printed}");
        let captured = Captured::default();
        let error = {
            let _guard = tracing::subscriber::set_default(captured.clone());
            http.send(&request).await.expect_err("connection refused")
        };
        assert!(
            matches!(error, Error::Transport { attempts: 2, .. }),
            "{error:?}"
        );
        let text = chain(&error);
        let logged = captured.0.lock().unwrap().join("\n");
        assert!(
            logged.contains("Retrying after a transport error"),
            "{logged}"
        );
        for secret in [
            "initial-pw-9c2e",
            "admin-pw-7f3a",
            "password=",
            "notify",
            "?",
        ] {
            assert!(!text.contains(secret), "`{secret}` in the error: {text}");
            assert!(!logged.contains(secret), "`{secret}` in the logs: {logged}");
        }
    }

    /// A self-signed test CA (`openssl req -x509`, EC P-256), valid until 2126.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBjDCCATGgAwIBAgIUfW1ZA+rv57RXl0MtFGYHLgXtfEAwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPa2V5c3luYyB0ZXN0IENBMCAXDTI2MTIwMjA5MjQyNloYDzIx
MjYxMTA4MDkyNDI2WjAaMRgwFgYDVQQDDA9rZXlzeW5jIHRlc3QgQ0EwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAASO/BiblT94IXjOB0eEDWdcPl96iXM9MjlqdQqQ
PG0MEL81Z0R+Sr823mJKCHPVM7EIAXkUnjPexh5WYLcfHp8Jo1MwUTAdBgNVHQ4E
FgQUvhUAF8Wx9hMYUf8Yw/FCrViIC0wwHwYDVR0jBBgwFoAUvhUAF8Wx9hMYUf8Y
w/FCrViIC0wwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAzKwA
GE0Ux/C1cARhafH8vJk0HsSsXTlS4Ry85SGaflACIQDOAGYGAMqAx3dmRlptcdlB
S3yAlMPhTl7tsVVVfOUh/A==
-----END CERTIFICATE-----";

    #[test]
    fn a_ca_bundle_is_trusted_and_a_bad_one_is_an_error_naming_ca_file() {
        let connection = |ca: &str| {
            let mut connection = Connection::new(
                Url::parse("https://jira.example.org").unwrap(),
                Auth::Bearer(::config::Secret::new("t")),
            );
            connection.ca = Some(ca.to_owned());
            connection
        };
        Http::new(Product::Jira, connection(TEST_CA)).expect("a client trusting the CA");
        for bad in [
            "not a certificate",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----",
        ] {
            let error = Http::new(Product::Jira, connection(bad)).expect_err(bad);
            assert!(matches!(error, Error::Config { .. }), "{error:?}");
            assert!(error.to_string().contains("`ca_file`"), "{error}");
        }
    }

    #[test]
    fn a_client_for_plain_http_to_another_host_logs_a_warning() {
        let logged = |endpoint: &str| {
            let captured = Captured::default();
            let _guard = tracing::subscriber::set_default(captured.clone());
            let connection = Connection::new(
                Url::parse(endpoint).unwrap(),
                Auth::Bearer(::config::Secret::new("t")),
            );
            Http::new(Product::Jira, connection).expect("a client");
            captured.0.lock().unwrap().join("\n")
        };
        let remote = logged("http://jira.example.org/jira");
        assert!(remote.contains("plain HTTP"), "{remote}");
        assert!(remote.contains("http://jira.example.org"), "{remote}");
        assert_eq!(logged("http://127.0.0.1:8080/jira"), "");
        assert_eq!(logged("https://jira.example.org/jira"), "");
    }

    #[test]
    fn error_messages_are_read_from_each_products_error_shape() {
        let jira = br#"{"errorMessages":["boom"],"errors":{"username":"taken"}}"#;
        assert_eq!(error_message(Product::Jira, jira), "boom; username: taken");
        let confluence = br#"{"statusCode":404,"data":{"authorized":false,"valid":false,"errors":[],"successful":false},"message":"no user","reason":"Not Found"}"#;
        assert_eq!(error_message(Product::Confluence, confluence), "no user");
        let bitbucket = br#"{"errors":[{"context":null,"message":"gone","exceptionName":"x"}]}"#;
        assert_eq!(error_message(Product::Bitbucket, bitbucket), "gone");
        assert_eq!(error_message(Product::Jira, b"  "), "(empty body)");
    }
}
