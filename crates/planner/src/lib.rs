//! The keysync planner: for each run, it joins the fetcher's snapshot with the state of
//! every product of the run, plans each product with its policy, stores the whole plan and,
//! when the run may write, publishes the change sets the appliers consume.
//!
//! # Protocol
//!
//! One durable consumer, `planner`, reads `SnapshotReady`, `StateReady`, `StateFailed` and
//! `RunApproved` from the events stream; replicas share it. Per run:
//!
//! 1. The snapshot and each state are recorded in the run's join ([`join`], KV bucket
//!    `{prefix}-planner`), so a restart loses nothing. The products of the run are those of
//!    `SnapshotReady`, or every product enabled here when it names none.
//! 2. A `StateFailed` of one of them, a product not enabled here, or a state that has not
//!    arrived `planner.state_timeout_seconds` after the snapshot fails the run:
//!    `PlanFailed` is published, and nothing else.
//! 3. Once every state is there, the snapshot and the announced states are loaded
//!    (checksums checked), each product is planned with [`model::plan::plan`], and one
//!    [`proto::v1::Plan`] for all products (changes in plan order, product by product;
//!    conflicts; a summary per product; held with the reasons if any product's plan is held)
//!    is stored as `{run_id}.pb.zst` in `{prefix}-plans`. `PlanReady` announces it (message
//!    id `{run_id}/plan`). A missing or damaged object fails the run instead.
//!    A delta snapshot (an event run, #16) is planned over the full snapshot
//!    `SnapshotReady.base` names, patched with it, with [`model::plan::plan_scoped`]: only
//!    the users it names (and the members of groups it removed, renamed or moved) change,
//!    and no group is removed; a delta with no usable base fails the run (`delta`).
//!    An APPLY plan's change sets are cut then, and their manifest (one digest per set,
//!    `bus::integrity`) is stored as `{run_id}.sets.pb.zst` and named in `PlanReady`: the
//!    control plane records it, and an applier applies only a set the manifest lists.
//! 4. Only when the run's mode is APPLY and the plan is not held are the change sets
//!    published ([`change_sets`]). A simulated run stops after step 3.
//! 5. `RunApproved` is checked with the control plane first (`GetRun`, with the service
//!    token of `[control_plane]`): unless the run is recorded as approved, the message is
//!    dead-lettered and nothing is published. Then the stored plan's change sets are
//!    published unchanged (cut at the size the plan records), with the same message ids,
//!    so a repeated approval is deduplicated.
//!
//! A message is acknowledged once its effect is recorded; a failure of the bus itself
//! (not of the run's data) leaves it to be redelivered. A message that does not decode is
//! dead-lettered and counted.
//!
//! While it runs, the planner serves `[health]` (`bus::health`: ready while it pulls from
//! its consumer) and records its consumer's lag (`bus::lag`).
//!
//! # Layout
//!
//! Start with [`app::App`]: [`app::App::build`] checks the settings and connects,
//! [`app::App::run_until_stopped`] runs the service loop (`bus::worker`, the same in every
//! service), and [`app::App::try_step`] handles at most one message, so tests drive the
//! planner one message at a time. [`runs::Planner`] is what is done with one message and
//! with the runs whose states are late; [`join`] the durable join of a run's messages;
//! [`change_sets`] the cutting and publishing of a plan's change sets; `delta` what a run
//! is planned from (a delta over its base, the bases kept in memory); [`convert`] the
//! wire's snapshot and plan to and from `model`'s; [`settings::Settings`] the
//! configuration; `metrics` lists the instruments.

pub mod app;
pub mod change_sets;
pub mod convert;
mod delta;
pub mod join;
mod metrics;
mod parts;
pub mod runs;
pub mod settings;
mod window;

use bus::objects::ObjectError;
use config::Invalid;

pub use crate::app::App;
pub use crate::runs::{Planner, StepOutcome};
pub use crate::settings::{HealthSettings, PlannerSettings, Settings};

/// Why the planner could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid settings")]
    Config(#[from] Invalid),
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
    #[error("the control plane")]
    Control(#[from] control_client::ControlError),
}
