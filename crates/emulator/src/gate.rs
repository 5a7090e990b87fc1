//! The middleware in front of every product endpoint: counting, the token-bucket rate limit
//! (429 with `Retry-After`, `X-RateLimit-*` on every answer), injected 429s and 503s, latency, and
//! authentication.
//!
//! Authentication answers who the caller is ([`Caller`], see the `access` module) and
//! handlers check the rights they need. Bad credentials answer 401, except a bad bearer token
//! on Confluence, which the real product answers as the anonymous user. Bitbucket refuses an
//! HTTP access token (any bearer token) on its administrative endpoints, whatever the rights
//! of its owner ([`refuses_token`]). What it counts and records is [`Counters`] and
//! [`RequestRecord`] (served by `/_emulator/state` through the store).

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;

use crate::access::{Caller, authenticate};
use crate::store::{StateHandle, Take};
use crate::{Product, bitbucket, confluence, jira};

/// The largest request body kept in the request log.
const MAX_LOGGED_BODY: usize = 1 << 20;

pub(crate) async fn gate(
    State(state): State<StateHandle>,
    request: Request,
    next: Next,
) -> Response {
    let arrived = Instant::now();
    let config = state.config();
    let (request, body_text) = if config.record_requests {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_LOGGED_BODY)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (Request::from_parts(parts, Body::from(bytes)), text)
    } else {
        (request, String::new())
    };
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let request_number = {
        let mut store = state.lock();
        store.counters.requests += 1;
        store.settle_long_tasks(arrived);
        store.counters.requests
    };
    let take = state
        .0
        .bucket
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take(arrived);
    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }

    let mut retry_after = None;
    let injected_429 = config.fail_429_every > 0 && request_number % config.fail_429_every == 0;
    // Throttled as Data Center rate limiting answers: 429 with `Retry-After` in seconds
    // (https://confluence.atlassian.com/conf87/_ratelimiting_httpheaders-1333822054.html;
    // Jira 8.6+ and Bitbucket use the same per-user token bucket). An injected 429 stands for
    // a bucket emptied between two requests by another client of the same user, which the
    // `X-RateLimit-*` headers of this answer could not foretell: one second.
    let throttled = match take {
        Take::Throttled { retry_after_secs } => Some(retry_after_secs),
        _ if injected_429 => Some(1),
        _ => None,
    };
    let mut response = if let Some(retry_after_secs) = throttled {
        state.lock().counters.throttled += 1;
        retry_after = Some(retry_after_secs);
        let mut response = product_error(
            config.product,
            429,
            "Rate limit exceeded: too many requests for this user; retry after the time in Retry-After.",
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
        response
    } else if config.fail_503_every > 0 && request_number % config.fail_503_every == 0 {
        state.lock().counters.unavailable += 1;
        product_error(
            config.product,
            503,
            "The service is temporarily unavailable (injected by the emulator).",
        )
    } else {
        let caller = authenticate(config, &state.lock(), request.headers());
        match caller {
            Some(caller) if refuses_token(config.product, &caller, request.uri().path()) => {
                state.lock().counters.unauthorized += 1;
                bitbucket::not_permitted()
            }
            Some(caller) => {
                if caller.is_anonymous() && request.headers().contains_key(AUTHORIZATION) {
                    state.lock().counters.unauthorized += 1;
                }
                let mut request = request;
                request.extensions_mut().insert(caller);
                next.run(request).await
            }
            None => {
                state.lock().counters.unauthorized += 1;
                unauthorized(config.product)
            }
        }
    };

    if let Some(limit) = (config.rate_limit > 0).then_some(config.rate_limit) {
        let remaining = match take {
            Take::Allowed { remaining } => remaining,
            Take::Throttled { .. } | Take::Unlimited => 0,
        };
        let headers = response.headers_mut();
        headers.insert("X-RateLimit-Limit", HeaderValue::from(limit));
        headers.insert("X-RateLimit-Remaining", HeaderValue::from(remaining));
        headers.insert("X-RateLimit-Interval-Seconds", HeaderValue::from(1u32));
        headers.insert("X-RateLimit-FillRate", HeaderValue::from(limit));
    }
    if config.record_requests {
        let record = RequestRecord {
            at_ms: (arrived - state.0.started).as_secs_f64() * 1000.0,
            method,
            uri,
            body: body_text,
            status: response.status().as_u16(),
            retry_after,
        };
        state.lock().requests.push(record);
    }
    response
}

/// Whether Bitbucket refuses `caller` on `path` because it signed in with an HTTP access
/// token (a bearer token) and `path` is an administrative endpoint (`/rest/api/*/admin/…`).
///
/// Follows Atlassian's KB "How to use OAuth2 tokens for administrative endpoints of
/// Bitbucket Data Center" (and BSERV-10482, "Create admin personal tokens for admin endpoints
/// in Bitbucket Server REST API"): Bitbucket Data Center does not accept HTTP access tokens
/// on administrative and user-management endpoints, only Basic auth or OAuth 2.0. The answer
/// is Bitbucket's authorisation failure, 401 with an `AuthorisationException` ("You are not
/// permitted to access this resource"), the status the 8.14 OpenAPI document gives these
/// endpoints for a caller without the permission they need.
fn refuses_token(product: Product, caller: &Caller, path: &str) -> bool {
    product == Product::Bitbucket
        && caller.by_token()
        && path
            .split('/')
            .skip_while(|segment| *segment != "api")
            .nth(2)
            == Some("admin")
}

/// The product's 401 answer.
fn unauthorized(product: Product) -> Response {
    match product {
        Product::Jira => jira::error(
            401,
            "You are not authenticated. Authentication required to perform this operation.",
        ),
        Product::Confluence => confluence::error(
            401,
            "Authentication failed: the user name or password is not valid.",
        ),
        Product::Bitbucket => bitbucket::error(
            401,
            "Authentication failed. Please check your credentials and try again.",
            "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException",
        ),
    }
}

/// An error in the product's own shape.
fn product_error(product: Product, status: u16, message: &str) -> Response {
    match product {
        Product::Jira => jira::error(status, message),
        Product::Confluence => confluence::error(status, message),
        Product::Bitbucket => {
            bitbucket::error(status, message, "com.atlassian.bitbucket.ServiceException")
        }
    }
}

/// What the emulator has answered since it started or was reset.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    /// Every request to the product endpoints, whatever the answer.
    pub requests: u64,
    /// 429 answers.
    pub throttled: u64,
    /// Injected 503 answers.
    pub unavailable: u64,
    /// 401 answers and requests answered as anonymous because of a bad token.
    pub unauthorized: u64,
    /// Successful writes by kind (`create_account`, `add_member`, …).
    pub writes: BTreeMap<String, u64>,
}

/// One request, when `record_requests` is on.
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    /// Milliseconds since the emulator started, when the request arrived.
    pub at_ms: f64,
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub body: String,
    pub status: u16,
    /// The `Retry-After` seconds of a 429.
    pub retry_after: Option<u64>,
}
