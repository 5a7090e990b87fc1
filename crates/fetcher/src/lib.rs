//! The fetcher service: on a run request from the bus, read one Keycloak realm into a
//! snapshot, store it in the JetStream object store, and announce it; or announce that
//! there is none.
//!
//! ```text
//! {prefix}.run.requested (RunRequested)
//!     -> keycloak::client::Client::fetch           a complete, consistent realm, or an error
//!     -> {prefix}-snapshots/{run_id}.pb.zst         proto Snapshot, zstd, SHA-256 in the ref
//!     -> {prefix}.snapshot.ready (SnapshotReady)    object ref and counts
//!     or {prefix}.snapshot.failed (SnapshotFailed)  the reason; no object, nothing else
//! ```
//!
//! An event run (`RunRequested.event` naming users or groups, #16) reads only those again
//! ([`keycloak::client::Client::read_delta`]) into a delta snapshot (`Snapshot.delta`),
//! announced with `SnapshotReady.base`, the connector's last full snapshot ([`base`]);
//! without one it reads the whole realm. Per connector with `[keycloak.<name>.events]
//! enabled`, an [`observe::Observer`] follows Keycloak's events ([`follow`]) and publishes
//! `EventsObserved` on `{prefix}.run.events` for the control plane to start such runs.
//!
//! Start with [`app::App`]: [`app::App::build`] connects and checks the settings,
//! [`app::App::run_until_stopped`] runs the service loop (`bus::worker`, the same in every
//! service), and [`app::App::try_step`] handles at most one request, so tests drive the
//! service one message at a time. [`fetch::Fetcher`] is what is done with one request;
//! [`settings::Settings`] is the configuration; [`convert`] turns `model`'s snapshot into
//! the wire's; `metrics` lists the instruments.
//!
//! **Architecture invariant:** nothing downstream plans from part of a directory. A run
//! gets a `SnapshotReady` only for a snapshot the `keycloak` crate returned whole; any
//! failure, a Keycloak that dies mid-fetch included, gets one `SnapshotFailed` and no
//! object. Both are published with the message id `{run_id}/snapshot`, so a run never has
//! both within JetStream's duplicate window.

pub mod app;
pub mod base;
pub mod carry;
pub mod convert;
mod event_run;
pub mod fetch;
pub mod follow;
mod metrics;
pub mod observe;
pub mod settings;
mod stream;

/// Why the service could not start or go on. A failed fetch is not an error of the
/// service: it is a `SnapshotFailed` on the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid settings: {0}")]
    Settings(#[from] config::Invalid),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Object(#[from] bus::objects::ObjectError),
    #[error("setting up keycloak connector `{connector}`")]
    Keycloak {
        connector: String,
        #[source]
        source: keycloak::Error,
    },
    #[error(transparent)]
    Worker(#[from] bus::worker::WorkerError),
    #[error(transparent)]
    Follow(#[from] follow::FollowError),
    #[error(transparent)]
    Base(#[from] base::BaseError),
}
