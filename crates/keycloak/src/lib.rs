//! keysync's client for the Keycloak Admin REST API: everything the fetcher reads from one
//! realm, and nothing it would write.
//!
//! Start with [`client::Client`]: [`client::Client::new`] takes validated
//! [`config::KeycloakSettings`] and does no IO; [`client::Client::fetch`] returns a complete
//! and consistent [`model::snapshot::Snapshot`] of the realm or an [`Error`], never a part of
//! one; [`client::Client::check`] is the test connection the control API offers.
//!
//! - `token`: the client-credentials grant, cached and re-requested at 80 % of its
//!   lifetime or once on a 401 (Keycloak issues no refresh token for this grant).
//! - `client`: one GET with bounded concurrency, a timeout, and retries with backoff on
//!   5xx, transport errors and truncated JSON; 401/403 become errors that name the missing
//!   `realm-management` role.
//! - `fetch`: the snapshot algorithm (users paged concurrently by offset and checked
//!   against `/users/count`; the group tree walked through `/children`; direct members of
//!   every group; a rescan when the directory changed during the fetch).
//! - [`representation`]: the JSON shapes, parsed straight into compact structs.
//!
//! Facts about the API this relies on are in `shared/reference/keycloak-admin.md`.
//!
//! **Hostile answers.** A malformed or hostile answer never hangs, panics or silently
//! truncates a fetch: a fetch that cannot be proven complete and correct fails with an
//! [`Error`] that says why. In short (the rules are in `client`'s and `fetch`'s docs):
//! every paging loop proves progress and is bounded by the counts
//! ([`Error::Repeated`], [`Error::Endless`], [`Error::PageTooLong`]); counts are checked
//! ([`Error::ImpossibleCount`], [`MAX_COUNT`]) and never size an allocation; token
//! lifetimes and `Retry-After` are clamped; bodies are read up to
//! [`client::MAX_BODY_BYTES`] ([`Error::BodyTooLarge`]); a missing required field (a
//! user's `enabled` above all) is [`Error::Decode`], never a default.
//!
//! **Architecture invariant:** this crate knows HTTP and Keycloak's JSON, and `model`'s
//! snapshot types; it knows nothing of NATS, protobuf or the products.

pub mod check;
pub mod client;
pub mod config;
pub mod delta;
pub mod events;
pub mod representation;
pub mod stream;

mod fetch;
mod token;

/// Everything that can go wrong talking to Keycloak.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid keycloak settings: {0}")]
    Settings(#[from] ::config::Invalid),
    #[error("building the HTTP client")]
    Build(#[source] reqwest::Error),
    /// The token endpoint refused the client id and secret.
    #[error(
        "keycloak refused the client credentials of `{client_id}` at {endpoint} ({status}): {body}"
    )]
    Unauthorized {
        client_id: String,
        endpoint: String,
        status: u16,
        body: String,
    },
    /// The service account lacks a `realm-management` role (Keycloak answered 403, or 401
    /// with a fresh token).
    #[error(
        "the service account of client `{client_id}` lacks the `realm-management` role \
         `{role}`, needed for {endpoint} (keycloak answered {status})"
    )]
    MissingRole {
        role: &'static str,
        endpoint: String,
        client_id: String,
        status: u16,
    },
    #[error("realm `{realm}` does not exist at {endpoint}")]
    RealmNotFound { realm: String, endpoint: String },
    #[error("{endpoint} answered {status}: {body}")]
    Http {
        status: u16,
        endpoint: String,
        body: String,
    },
    #[error("requesting {endpoint}")]
    Transport {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// The body was not the JSON expected: usually a response cut short.
    #[error("{endpoint} answered with JSON that does not decode")]
    Decode {
        endpoint: String,
        #[source]
        source: serde_json::Error,
    },
    /// The directory kept changing while it was read; no consistent snapshot was taken.
    #[error("the directory changed during the fetch ({detail}); gave up after {attempts} attempts")]
    Changed { attempts: u32, detail: String },
    #[error("required group `{path}` does not exist in the realm")]
    RequiredGroupMissing { path: String },
    /// A count that cannot be true: negative, not an integer, or past [`MAX_COUNT`].
    #[error("{endpoint} answered the impossible count {value} (expected 0 to {MAX_COUNT})")]
    ImpossibleCount { endpoint: String, value: String },
    /// A response body longer than [`client::MAX_BODY_BYTES`]; it was not read further.
    #[error("{endpoint} answered a body larger than the limit of {limit} bytes")]
    BodyTooLarge { endpoint: String, limit: usize },
    /// A page with more entries than `max` asked for: the server does not page as the
    /// fetch relies on.
    #[error("{endpoint} answered {len} entries to a request for at most {max}")]
    PageTooLong {
        endpoint: String,
        max: usize,
        len: usize,
    },
    /// A listing answered entries it had already given: a whole page read before (the
    /// server ignores `first`, or entries were inserted ahead of the read), or a group
    /// twice in the tree. The fetch reads the realm again, and reports this error when
    /// every pass met it.
    #[error(
        "{endpoint} answered entries already read ({detail}): the server ignores `first`, or the directory changed during the read"
    )]
    Repeated { endpoint: String, detail: String },
    /// A listing went on past every entry the counts allow: it does not end.
    #[error("{endpoint} listed more than {limit} entries, more than the counts allow ({detail})")]
    Endless {
        endpoint: String,
        limit: u64,
        detail: String,
    },
}

/// The largest count (of users, groups, subgroups) believed; a larger one fails the fetch
/// with [`Error::ImpossibleCount`]. Counts only bound listings; they never size an
/// allocation.
pub const MAX_COUNT: u64 = 50_000_000;
