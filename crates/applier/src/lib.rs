//! The keysync applier of one product (`--product jira|confluence|bitbucket`; one
//! deployment each, any number of replicas): it reads the product's state into the cache
//! at the start of every run, and applies the change sets the planner publishes.
//!
//! # State refresh
//!
//! Each applier consumes `RunRequested` through the durable consumer
//! `applier-{product}-state` on the events stream. For a run that includes its product
//! (or names none), it reads the product's complete state ([`Directory::fetch_state`]),
//! keeps what only keysync knows from the previous cached state ([`state::refresh`]),
//! stores it in the cache and publishes `StateReady` (message id `{run_id}/state/{product}`),
//! or `StateFailed` (`{run_id}/state-failed/{product}`) when the product cannot be read.
//! So the planner plans against the product as it is now, changes made by hand included.
//!
//! # Applying change sets
//!
//! Replicas share the durable pull consumer `applier-{product}` on the changes stream. For
//! each change set:
//!
//! 1. **Order.** A run's sets are applied in sequence order, tracked per run in the KV
//!    bucket `{prefix}-applier` ([`progress`]). A set whose predecessor has not finished is
//!    handed back with a delay and comes again; one that was finished already is
//!    acknowledged and nothing else. A set that waited longer than
//!    `applier.sequence_timeout_seconds` is given up: its changes and those of the run's
//!    later sets are reported skipped, never applied out of order.
//! 2. **Cancellation.** `GetRun` comes first: the changes of a cancelled run are reported
//!    skipped ("run cancelled") without touching the product.
//! 3. **Apply** ([`apply`]): in dependency phases with bounded concurrency; what succeeded
//!    is recorded in the state taken from the cache, and appended to the product's state
//!    journal once, at the end of the set (one small entry, `cache::Cache::record_set`).
//! 4. **Report** every result to the control plane with `ReportResults`, in batches, with
//!    retries (the `control-client` crate). Only then is the message acknowledged; if reporting fails the
//!    set is redelivered and applied again, which the product's idempotent writes make
//!    harmless (a create of an existing identical account is "already done").
//!
//! A message that does not decode, or whose stored changes are gone, goes to the
//! dead-letter stream and is counted (`keysync_dead_letters_total`); the applier goes on.
//! On SIGTERM it stops taking messages and finishes the one in hand.
//!
//! While it runs, the applier serves `[health]` (`bus::health`: ready while it pulls from
//! both its consumers) and records their lag (`bus::lag`). Its metrics, product API
//! latency, retries and 429s included, are listed in [`metrics`].
//!
//! # Layout
//!
//! [`app`] binds the two consumers to one `bus::worker::Worker` (the loop, the same in
//! every service) around the [`app::Applier`] handler; [`refresh`] reads the product's
//! state; [`change_sets`] takes one change set through order, cancellation, [`apply`] and
//! `control_client`; [`state`] keeps the cached state up to date through `model::apply`;
//! [`progress`] is the per-run sequence mark; [`settings`] the configuration.

pub mod app;
pub mod apply;
mod cache_lock;
pub mod change_sets;
pub mod metrics;
pub mod progress;
pub mod refresh;
pub mod settings;
pub mod state;

use bus::objects::ObjectError;
use config::Invalid;
use model::state::Product;

pub use crate::app::{App, StepOutcome};
pub use crate::settings::{HealthSettings, Settings};
use control_client::ControlError;

/// Why the applier could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid settings")]
    Config(#[from] Invalid),
    #[error("building the {product} client")]
    Client {
        product: Product,
        #[source]
        source: atlassian::Error,
    },
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error("key-value bucket {bucket}")]
    Kv {
        bucket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Worker(#[from] bus::worker::WorkerError),
    #[error(transparent)]
    Liveness(Box<bus::liveness::LivenessError>),
}
