//! [`Fetcher`]: what the fetcher does with one run request. The worker loop around it
//! (pulling, keep-alive while a fetch runs, acknowledging only after the outcome is on the
//! bus, dead letters, rebinding) is `bus::worker`'s.
//!
//! A request gets `SnapshotReady` (the snapshot stored whole) or `SnapshotFailed` (the
//! reason), both with the message id `{run_id}/snapshot`. A request delivered again reuses
//! the snapshot already stored for its run, so an object never changes under a
//! `SnapshotReady`. A full snapshot becomes its connector's base ([`crate::base`]) before
//! it is announced; an event run's delta is `crate::event_run`'s.

use std::{collections::BTreeMap, time::Instant};

use bus::{
    Bus,
    worker::{Delivery, Handler},
};
use opentelemetry::KeyValue;
use proto::v1::{self, RunRequested, SnapshotFailed, SnapshotReady};
use telemetry::error_chain;
use tracing::Instrument;

use crate::{
    Error,
    base::Bases,
    convert::{SnapshotHeader, snapshot_to_proto},
    metrics::Metrics,
};

/// What handling one run request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// No request came within the wait.
    Idle,
    /// The request did not decode (or had no run id) and went to the dead letters.
    DeadLettered,
    SnapshotReady {
        run_id: String,
        users: u64,
        groups: u64,
        memberships: u64,
    },
    /// An event run's delta snapshot, stored and announced with its base.
    DeltaReady {
        run_id: String,
        /// The named users Keycloak still has, and their memberships.
        users: u64,
        memberships: u64,
        /// The named users Keycloak no longer has.
        deleted: u64,
        /// Whether the delta carries the group tree.
        groups_included: bool,
        /// The key of the base snapshot (the connector's last full one).
        base: String,
    },
    SnapshotFailed {
        run_id: String,
        reason: String,
    },
}

/// The fetcher's handler of run requests: one Keycloak client per connector.
pub struct Fetcher {
    pub(crate) bus: Bus,
    pub(crate) connectors: BTreeMap<String, keycloak::client::Client>,
    pub(crate) bucket: String,
    pub(crate) metrics: Metrics,
    pub(crate) bases: Bases,
    /// `[fetcher] first_sync_part_users` (`crate::stream`).
    pub(crate) part_users: usize,
}

impl Handler for Fetcher {
    type Outcome = StepOutcome;
    type Error = Error;

    async fn handle(&self, delivery: &Delivery<'_>) -> Result<StepOutcome, Error> {
        self.metrics.received.add(1, &[]);
        let Some(request) = delivery.decode::<RunRequested>().await? else {
            self.metrics.dropped();
            return Ok(StepOutcome::DeadLettered);
        };
        if request.run_id.is_empty() {
            delivery.dead_letter("RunRequested has no run_id").await?;
            self.metrics.dropped();
            return Ok(StepOutcome::DeadLettered);
        }
        let span = tracing::info_span!(
            "fetch",
            run_id = %request.run_id,
            connector = %request.connector,
        );
        bus::trace::continue_trace(&span, delivery.message().headers.as_ref());
        self.serve(&request).instrument(span).await
    }
}

impl Fetcher {
    /// Fetches and stores the run's snapshot and announces the outcome.
    async fn serve(&self, request: &RunRequested) -> Result<StepOutcome, Error> {
        let produced = self.produce(request).await;
        let message_id = format!("{}/snapshot", request.run_id);
        let topology = self.bus.topology();
        let connector = KeyValue::new("connector", request.connector.clone());
        let outcome = match produced {
            Ok(Produced::Full(ready)) => {
                // Before the announcement: the next event run's delta applies to this
                // snapshot, never to an older one. A failure hands the request back; its
                // redelivery reuses the stored snapshot and records it again.
                if let Some(object) = &ready.snapshot {
                    self.bases.put(&ready.connector, object).await?;
                }
                self.bus
                    .publish(&topology.snapshot_ready(), &ready, &message_id)
                    .await?;
                self.metrics.ready.add(1, &[connector]);
                tracing::info!(
                    users = ready.users,
                    groups = ready.groups,
                    memberships = ready.memberships,
                    key = ready.snapshot.as_ref().map(|object| object.key.as_str()),
                    "Snapshot ready."
                );
                StepOutcome::SnapshotReady {
                    run_id: request.run_id.clone(),
                    users: ready.users,
                    groups: ready.groups,
                    memberships: ready.memberships,
                }
            }
            Ok(Produced::Delta {
                ready,
                own,
                groups_included,
            }) => {
                self.bus
                    .publish(&topology.snapshot_ready(), &ready, &message_id)
                    .await?;
                self.metrics.ready.add(1, &[connector]);
                let base = ready
                    .base
                    .as_ref()
                    .map(|object| object.key.clone())
                    .unwrap_or_default();
                tracing::info!(
                    users = own.users,
                    deleted = own.deleted,
                    carried = own.carried,
                    memberships = own.memberships,
                    groups_included,
                    key = ready.snapshot.as_ref().map(|object| object.key.as_str()),
                    base = %base,
                    "Delta snapshot ready."
                );
                StepOutcome::DeltaReady {
                    run_id: request.run_id.clone(),
                    users: ready.users,
                    memberships: ready.memberships,
                    deleted: own.deleted,
                    groups_included,
                    base,
                }
            }
            Err(reason) => {
                let failed = SnapshotFailed {
                    schema_version: v1::SCHEMA_VERSION,
                    run_id: request.run_id.clone(),
                    connector: request.connector.clone(),
                    reason: reason.clone(),
                };
                self.bus
                    .publish(&topology.snapshot_failed(), &failed, &message_id)
                    .await?;
                self.metrics.failed.add(1, &[connector]);
                tracing::warn!(reason = %reason, "Snapshot failed.");
                StepOutcome::SnapshotFailed {
                    run_id: request.run_id.clone(),
                    reason,
                }
            }
        };
        Ok(outcome)
    }

    /// The progress counters of a connector's client, for logs and tests.
    pub fn progress(&self, connector: &str) -> Option<keycloak::client::Progress> {
        self.connectors
            .get(connector)
            .map(|client| client.progress().clone())
    }

    /// Fetches and stores the snapshot of the run (a delta for an event run naming users
    /// or groups, when the connector has a base), or says why there is none.
    async fn produce(&self, request: &RunRequested) -> Result<Produced, String> {
        let (connector, client) = self.connector(&request.connector)?;
        let key = format!("{}.pb.zst", request.run_id);
        // A request delivered again (the last replica stopped before its ack) reuses the
        // snapshot already stored, so the object never changes under a SnapshotReady.
        match self
            .bus
            .get_latest_object::<v1::Snapshot>(&self.bucket, &key)
            .await
        {
            Ok(Some((stored, object))) => {
                tracing::info!(key = %key, "Reusing the snapshot stored for this run.");
                if stored.delta {
                    return self.reuse_delta(request, connector, stored, object).await;
                }
                return Ok(Produced::Full(ready(request, connector, &stored, object)));
            }
            Ok(None) => {}
            Err(error) => return Err(format!("reading {key}: {}", error_chain(&error))),
        }
        if let Some(touched) = crate::event_run::delta_of(request) {
            match self.base_of(connector).await? {
                Some(base) => {
                    return self
                        .produce_delta(request, connector, client, &key, &touched, base)
                        .await;
                }
                None => tracing::info!(
                    users = touched.users.len(),
                    groups = touched.groups.len(),
                    "The connector has no stored full snapshot to apply a delta to: \
                     reading the whole realm instead."
                ),
            }
        }
        let fetched_at = prost_types::Timestamp::from(std::time::SystemTime::now());
        let (requests, retries) = (client.progress().requests(), client.progress().retries());
        let started = Instant::now();
        let (fetched, parts) = if self.streams(request, connector, client).await? {
            self.fetch_streaming(request, connector, client).await
        } else {
            (client.fetch().await, 0)
        };
        let labels = [
            KeyValue::new("connector", connector.to_owned()),
            KeyValue::new("outcome", if fetched.is_ok() { "ok" } else { "error" }),
        ];
        self.metrics
            .fetch_duration
            .record(started.elapsed().as_secs_f64(), &labels);
        self.count_requests(connector, client, requests, retries);
        let snapshot = fetched.map_err(|error| {
            format!(
                "fetching realm `{}` of connector `{connector}`: {}",
                client.settings().realm,
                error_chain(&error)
            )
        })?;
        let mut snapshot = snapshot_to_proto(
            snapshot,
            &SnapshotHeader {
                run_id: &request.run_id,
                connector,
                realm: &client.settings().realm,
                fetched_at,
            },
        );
        snapshot.parts = parts;
        let object = self
            .bus
            .put_object(&self.bucket, &key, &snapshot)
            .await
            .map_err(|error| format!("storing the snapshot: {}", error_chain(&error)))?;
        Ok(Produced::Full(ready(request, connector, &snapshot, object)))
    }

    /// Counts the Keycloak requests and retries made since the counters read `requests`
    /// and `retries`.
    pub(crate) fn count_requests(
        &self,
        connector: &str,
        client: &keycloak::client::Client,
        requests: u64,
        retries: u64,
    ) {
        let label = [KeyValue::new("connector", connector.to_owned())];
        self.metrics.keycloak_requests.add(
            client.progress().requests().saturating_sub(requests),
            &label,
        );
        self.metrics
            .keycloak_retries
            .add(client.progress().retries().saturating_sub(retries), &label);
    }

    /// The connector a request names; an empty name means the only one configured.
    fn connector<'a>(
        &'a self,
        name: &'a str,
    ) -> Result<(&'a str, &'a keycloak::client::Client), String> {
        if name.is_empty() && self.connectors.len() == 1 {
            return self
                .connectors
                .iter()
                .next()
                .map(|(name, client)| (name.as_str(), client))
                .ok_or_else(|| "no keycloak connector is configured".to_owned());
        }
        self.connectors
            .get(name)
            .map(|client| (name, client))
            .ok_or_else(|| {
                format!(
                    "no keycloak connector named `{name}`; configured: {}",
                    self.connectors
                        .keys()
                        .map(|name| format!("`{name}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

/// What a request produced: a full snapshot, or an event run's delta (the stored wire
/// snapshot kept for its counts).
pub(crate) enum Produced {
    Full(SnapshotReady),
    Delta {
        ready: SnapshotReady,
        /// What the delta holds of the users its run named.
        own: crate::carry::Own,
        groups_included: bool,
    },
}

/// The announcement of a stored snapshot; its `base` is unset (a delta sets it).
pub(crate) fn ready(
    request: &RunRequested,
    connector: &str,
    snapshot: &v1::Snapshot,
    object: v1::ObjectRef,
) -> SnapshotReady {
    SnapshotReady {
        schema_version: v1::SCHEMA_VERSION,
        run_id: request.run_id.clone(),
        connector: connector.to_owned(),
        snapshot: Some(object),
        users: snapshot.users.len() as u64,
        groups: snapshot.groups.len() as u64,
        memberships: snapshot.memberships.len() as u64,
        fetched_at: snapshot.fetched_at,
        mode: request.mode,
        products: request.products.clone(),
        base: None,
        part: 0,
        parts: snapshot.parts,
        realm_users: 0,
    }
}
