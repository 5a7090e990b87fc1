//! What a run is planned from: the snapshot `SnapshotReady` names, or, for an event run's
//! delta snapshot (#16), the connector's last full snapshot (`SnapshotReady.base`) patched
//! with the delta ([`model::delta::patch`]) and the users the delta may change
//! ([`model::delta::scope`]), which [`model::plan::plan_scoped`] keeps the plan to.
//!
//! Loading the base is what a delta costs: at 100,000 users it is a large object to fetch,
//! decompress and convert for a burst of a few events. [`Bases`] keeps the last base of
//! each connector in memory, keyed by its SHA-256 (checked when it was loaded), so the
//! deltas that follow one full sync load it once per replica.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use model::snapshot::{Snapshot, UserId};
use proto::v1;
use telemetry::error_chain;

use crate::convert;
use crate::runs::{Failure, Planner};

/// What one run is planned from.
pub(crate) struct Input {
    /// The directory as the run sees it: the snapshot, or the base patched with the delta.
    pub snapshot: Snapshot,
    /// For a delta: the only users the plan may change. `None`: a full plan.
    pub scope: Option<BTreeSet<UserId>>,
}

/// The last base snapshot loaded per connector, with the SHA-256 of its stored object.
/// One entry per connector bounds the memory to one directory each.
#[derive(Default)]
pub(crate) struct Bases {
    last: Mutex<HashMap<String, (String, Arc<Snapshot>)>>,
}

impl Bases {
    fn get(&self, connector: &str, sha256: &str) -> Option<Arc<Snapshot>> {
        // A panic elsewhere while the lock was held leaves a whole entry or none, never a
        // torn one, so a poisoned map is still good.
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.get(connector)
            .filter(|(sha, _)| sha == sha256)
            .map(|(_, snapshot)| Arc::clone(snapshot))
    }

    fn put(&self, connector: &str, sha256: &str, snapshot: Arc<Snapshot>) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.insert(connector.to_owned(), (sha256.to_owned(), snapshot));
    }
}

impl Planner {
    /// Loads what the run of `ready` is planned from. A missing or unusable snapshot or
    /// base fails the run.
    pub(crate) async fn load_input(&self, ready: &v1::SnapshotReady) -> Result<Input, Failure> {
        let Some(snapshot_ref) = &ready.snapshot else {
            return Err(Failure::Run(
                "SnapshotReady names no snapshot object".to_owned(),
            ));
        };
        let wire = self.load_snapshot(snapshot_ref, "the snapshot").await?;
        if !wire.delta {
            return Ok(Input {
                snapshot: convert::snapshot_to_model(&wire),
                scope: None,
            });
        }
        let Some(base_ref) = &ready.base else {
            return Err(Failure::Run(
                "the snapshot is a delta, but SnapshotReady names no base snapshot to apply it to"
                    .to_owned(),
            ));
        };
        let base = self.load_base(&ready.connector, base_ref).await?;
        let delta = convert::delta_to_model(&wire);
        // Users the earlier deltas on this base named are carried for what they read, not
        // planned again: only the ones this run named are in scope.
        let scope = if !wire.named_listed {
            model::delta::scope(&base, &delta)
        } else {
            let named = wire
                .named_user_ids
                .iter()
                .map(|id| UserId::new(id.as_str()))
                .collect();
            model::delta::scope_of(&base, &delta, named)
        };
        tracing::info!(
            users = delta.users.len(),
            deleted = delta.deleted.len(),
            named = wire.named_user_ids.len(),
            groups_included = delta.groups.is_some(),
            scope = scope.len(),
            "Planning a delta over its base snapshot."
        );
        Ok(Input {
            snapshot: model::delta::patch(&base, &delta),
            scope: Some(scope),
        })
    }

    /// The connector's base snapshot, from memory when it is the one loaded last.
    async fn load_base(
        &self,
        connector: &str,
        base_ref: &v1::ObjectRef,
    ) -> Result<Arc<Snapshot>, Failure> {
        if let Some(base) = self.bases.get(connector, &base_ref.sha256) {
            tracing::debug!(key = %base_ref.key, "The base snapshot is in memory.");
            return Ok(base);
        }
        let wire = self.load_snapshot(base_ref, "the base snapshot").await?;
        if wire.delta {
            return Err(Failure::Run(format!(
                "the base snapshot {} is itself a delta",
                base_ref.key
            )));
        }
        if !wire.connector.is_empty() && wire.connector != connector {
            return Err(Failure::Run(format!(
                "the base snapshot {} is of connector {}, not {connector}",
                base_ref.key, wire.connector
            )));
        }
        let base = Arc::new(convert::snapshot_to_model(&wire));
        self.bases
            .put(connector, &base_ref.sha256, Arc::clone(&base));
        tracing::info!(key = %base_ref.key, users = base.users.len(), "Loaded the base snapshot.");
        Ok(base)
    }

    /// A stored snapshot; a permanent error (gone, damaged) fails the run as `what`.
    async fn load_snapshot(
        &self,
        object: &v1::ObjectRef,
        what: &str,
    ) -> Result<v1::Snapshot, Failure> {
        match self.bus.get_object::<v1::Snapshot>(object).await {
            Ok(snapshot) => Ok(snapshot),
            Err(error) if error.is_permanent() => Err(Failure::Run(format!(
                "{what} is unusable: {}",
                error_chain(&error)
            ))),
            Err(error) => Err(Failure::Bus(error.into())),
        }
    }
}
