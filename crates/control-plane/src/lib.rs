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
//! **Runs always end.** Each state but HELD has a deadline ([`deadlines`]: `[control_plane]
//! fetch_deadline_seconds`, `plan_deadline_seconds`, `apply_deadline_seconds` plus
//! `apply_deadline_per_change_ms` per planned change), and every replica's [`reaper`] fails
//! the runs past it, naming the state and, for APPLYING, each product with changes
//! unreported; a HELD run ends at its `hold_expiry`. After a restart [`runs::recover`]
//! publishes again what a run's state still needs (`RunRequested` for a REQUESTED run,
//! `RunApproved` for an approved APPLYING one), which downstream deduplicates.
//!
//! Who may call what is decided in one place, [`auth`]: a bearer token gives a role
//! (`token` the operator's, `service_token` the appliers'), and [`auth::ACCESS`] lists
//! every RPC with the roles allowed to make it. The API serves TLS when `tls_cert_file`
//! and `tls_key_file` are set (mutual TLS with `tls_client_ca_file`), and plaintext only
//! on loopback unless `allow_plaintext = true`.
//!
//! Start reading at [`App::build`], then [`machine::next`] (the state machine as a pure
//! function; [`deadlines::overdue`] is the reaper's decision, pure too), [`runs::Runs`] (what each RPC and event does to a run; [`holds`] for what
//! concerns held runs), [`history::History`] (what the reads answer) and [`store::Store`]
//! (the buckets).
//!
//! Rules a run keeps: one run of a Keycloak connector is active at a time (REQUESTED to
//! APPLYING, HELD aside), claimed in the store so that replicas agree; an apply run
//! supersedes (cancels) the HELD runs of its connector; a HELD run expires after
//! `[control_plane] hold_expiry`; approving needs a reason and is refused once a product
//! changed since the plan was made. The schedule starts one apply run per configured
//! connector and records a skip when the connector is busy.
//!
//! The modules depend on each other one way only, from the edges to the core:
//!
//! ```text
//! app -> service -> history -> runs (+ holds) -> store -> machine
//!            history, reaper -> run_index
//!     -> events  ----------->  runs
//!     -> schedule ---------->  runs, settings
//!     -> reaper  ----------->  runs -> deadlines -> machine
//! ```
//!
//! The reads are sized by the page, not by the deployment: [`run_index::RunIndex`] keeps
//! every run id (and state) in memory, followed from the runs bucket, so `ListRuns` and
//! the [`reaper`] read only the runs they need; `ListChanges` streams the plan object.
//!
//! [`app`] builds everything. The gRPC [`service`] calls [`history`] (the reads) and
//! [`runs`] (the writes), the event consumer [`events`] and the [`schedule`] call [`runs`];
//! [`history`] shares [`runs`]' error type and reads the [`store`]; [`runs`] writes through
//! the [`store`]; both decide with the pure state machine [`machine`], which knows only the
//! wire types, and the [`reaper`] with the pure [`deadlines`]. Nothing below calls back up.
//!
//! **Architecture invariant:** the control plane knows the wire (`proto`), the bus and the
//! run's state machine; it never fetches from Keycloak or writes to a product (it only
//! checks that they answer, for `TestConnection`), and it knows nothing of how a plan is
//! made.

pub mod app;
pub mod auth;
pub mod connections;
pub mod deadlines;
pub mod events;
pub mod history;
pub mod holds;
pub mod machine;
pub mod metrics;
pub mod pending;
pub mod reaper;
pub mod run_index;
pub mod runs;
pub mod schedule;
pub mod service;
pub mod settings;
pub mod store;

use std::net::SocketAddr;

use config::Invalid;

pub use crate::{
    app::App,
    settings::{BusSettings, ControlPlaneSettings, HealthSettings, ScheduleSettings, Settings},
};

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
    /// `[control_plane] tls_cert_file`, `tls_key_file` or `tls_client_ca_file` is not
    /// usable PEM, or the key does not go with the certificate.
    #[error(
        "the TLS settings of [control_plane] (tls_cert_file, tls_key_file, tls_client_ca_file)"
    )]
    Tls(#[source] tonic::transport::Error),
    #[error("building the reflection service from the descriptor set")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The event consumer could not be bound, or the health endpoints not served.
    #[error(transparent)]
    Worker(#[from] bus::worker::WorkerError),
}
