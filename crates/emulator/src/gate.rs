//! The middleware in front of every product endpoint: counting, the token-bucket rate limit
//! (429 with `Retry-After`, `X-RateLimit-*` on every answer), injected 503s, latency, and
//! authentication.
//!
//! Authentication answers who the caller is ([`Caller`]) and handlers check the rights they
//! need. Bad credentials answer 401, except a bad bearer token on Confluence, which the real
//! product answers as the anonymous user.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;

use crate::store::{RequestRecord, StateHandle, Take};
use crate::{Config, Product, bitbucket, confluence, jira};

/// Who a request comes from, as handlers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Valid credentials; every emulated caller is a system administrator.
    Admin,
    /// No credentials (or, on Confluence, a bad token).
    Anonymous,
}

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
    let mut response = if let Take::Throttled { retry_after_secs } = take {
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
        match authenticate(config, request.headers()) {
            Some(caller) => {
                if caller == Caller::Anonymous && request.headers().contains_key(AUTHORIZATION) {
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

/// `Some(caller)` for valid or missing credentials, `None` for credentials to refuse with
/// 401. A bad bearer token on Confluence is the anonymous user.
fn authenticate(config: &Config, headers: &HeaderMap) -> Option<Caller> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Some(Caller::Anonymous);
    };
    let value = value.to_str().unwrap_or_default();
    if let Some(token) = value.strip_prefix("Bearer ") {
        if config.token.as_deref() == Some(token.trim()) {
            return Some(Caller::Admin);
        }
        return (config.product == Product::Confluence).then_some(Caller::Anonymous);
    }
    if let Some(encoded) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())?;
        let (user, password) = decoded.split_once(':')?;
        let accepted = config
            .basic
            .as_ref()
            .is_some_and(|(u, p)| u == user && p == password);
        return accepted.then_some(Caller::Admin);
    }
    None
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
