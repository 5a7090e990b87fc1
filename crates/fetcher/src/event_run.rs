//! An event run's fetch (#16): a `RunRequested` whose `event` names users or groups and
//! gives no `full_sync_reason` reads only those again
//! ([`keycloak::client::Client::read_delta`]) into a delta snapshot, stored at the run's
//! usual key and announced with `SnapshotReady.base`, the connector's last full snapshot
//! ([`crate::base`]). Without a base (none yet, or expired) the run reads the whole realm
//! instead, as a full run does. A delta carries what the earlier deltas on its base read
//! (`crate::carry`), and each is applied to the base alone, so once an event
//! run has named a group, every later delta on the same base carries the group tree too
//! (`Bases::groups_named_since`): a delta naming only users would otherwise be planned
//! with the base's tree, and a renamed group's members mapped to its old name again. A
//! Keycloak error is a `SnapshotFailed`, as for a full
//! fetch: no part of a delta is ever announced.

use keycloak::events::Touched;
use proto::v1::{self, RunRequested};
use telemetry::error_chain;

use crate::{
    carry,
    convert::{SnapshotHeader, delta_to_proto},
    fetch::{Fetcher, Produced, ready},
};

/// What an event run reads again: `None` for a run that is not an event run, names nothing,
/// or must read the whole realm.
pub(crate) fn delta_of(request: &RunRequested) -> Option<Touched> {
    let event = request.event.as_ref()?;
    if !event.full_sync_reason.is_empty()
        || (event.user_ids.is_empty() && event.group_ids.is_empty())
    {
        return None;
    }
    Some(Touched {
        users: event.user_ids.iter().cloned().collect(),
        groups: event.group_ids.iter().cloned().collect(),
        full_sync: None,
    })
}

impl Fetcher {
    /// The connector's base, while it is stored; a bus failure is the run's failure.
    pub(crate) async fn base_of(&self, connector: &str) -> Result<Option<v1::ObjectRef>, String> {
        self.bases.get(connector).await.map_err(|error| {
            format!(
                "reading the base snapshot of connector `{connector}`: {}",
                error_chain(&error)
            )
        })
    }

    /// Reads `touched` again and stores the delta as `key`, to apply to `base`.
    pub(crate) async fn produce_delta(
        &self,
        request: &RunRequested,
        connector: &str,
        client: &keycloak::client::Client,
        key: &str,
        touched: &Touched,
        base: v1::ObjectRef,
    ) -> Result<Produced, String> {
        let fetched_at = prost_types::Timestamp::from(std::time::SystemTime::now());
        let tree_changed = self.tree_since(connector, touched, &base).await?;
        let (requests, retries) = (client.progress().requests(), client.progress().retries());
        let read = async {
            let mut delta = client.read_delta(touched).await?;
            if tree_changed && delta.groups.is_none() {
                delta.groups = Some(client.group_tree().await?);
            }
            Ok::<_, keycloak::Error>(delta)
        }
        .await;
        self.count_requests(connector, client, requests, retries);
        let delta = read.map_err(|error| {
            format!(
                "reading {} users and {} groups of realm `{}` of connector `{connector}` again: {}",
                touched.users.len(),
                touched.groups.len(),
                client.settings().realm,
                error_chain(&error)
            )
        })?;
        let mut snapshot = delta_to_proto(
            delta,
            &SnapshotHeader {
                run_id: &request.run_id,
                connector,
                realm: &client.settings().realm,
                fetched_at,
            },
        );
        if let Some(previous) = self.previous_delta(connector, &base).await {
            snapshot = carry::carry(previous, snapshot);
        }
        let object = self
            .bus
            .put_object(&self.bucket, key, &snapshot)
            .await
            .map_err(|error| format!("storing the delta snapshot: {}", error_chain(&error)))?;
        self.mark_last_delta(connector, &base, &object).await?;
        Ok(delta_ready(request, connector, &snapshot, object, base))
    }

    /// The last delta stored on `base`, for this one to carry (`crate::carry`). Without
    /// it (none, expired, unreadable) the delta carries nothing: it is planned as before
    /// deltas carried anything, which a failure is logged for.
    async fn previous_delta(&self, connector: &str, base: &v1::ObjectRef) -> Option<v1::Snapshot> {
        let object = match self.bases.last_delta(connector, base).await {
            Ok(object) => object?,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "The last delta could not be found; this one carries nothing.");
                return None;
            }
        };
        match self.bus.get_object::<v1::Snapshot>(&object).await {
            Ok(previous) if previous.delta => Some(previous),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(key = %object.key, error = %error_chain(&error), "The last delta could not be read; this one carries nothing.");
                None
            }
        }
    }

    /// Records `delta` as the last one on `base`; a failure fails the run, as the delta
    /// after it would carry an older one.
    async fn mark_last_delta(
        &self,
        connector: &str,
        base: &v1::ObjectRef,
        delta: &v1::ObjectRef,
    ) -> Result<(), String> {
        self.bases
            .mark_last_delta(connector, base, delta)
            .await
            .map_err(|error| {
                format!(
                    "recording the last delta of connector `{connector}`: {}",
                    error_chain(&error)
                )
            })
    }

    /// Whether the delta on `base` must carry the group tree although `touched` names no
    /// group: an earlier event run on the same base named one ([`crate::base::Bases`]).
    /// When `touched` names a group, records it first, for the deltas after this one.
    async fn tree_since(
        &self,
        connector: &str,
        touched: &Touched,
        base: &v1::ObjectRef,
    ) -> Result<bool, String> {
        let failed = |error: crate::base::BaseError| {
            format!(
                "recording which group tree the deltas of connector `{connector}` need: {}",
                error_chain(&error)
            )
        };
        if touched.groups.is_empty() {
            self.bases
                .groups_named_since(connector, base)
                .await
                .map_err(failed)
        } else {
            self.bases
                .mark_groups_named(connector, base)
                .await
                .map_err(failed)?;
            Ok(false)
        }
    }

    /// A delta stored by an earlier delivery of the request: announced again with the
    /// connector's base, which no full run replaced meanwhile (one run of a connector is
    /// active at a time).
    pub(crate) async fn reuse_delta(
        &self,
        request: &RunRequested,
        connector: &str,
        stored: v1::Snapshot,
        object: v1::ObjectRef,
    ) -> Result<Produced, String> {
        let Some(base) = self.base_of(connector).await? else {
            return Err(format!(
                "the delta snapshot {} of this run is stored, but the full snapshot of \
                 connector `{connector}` it applies to is gone",
                object.key
            ));
        };
        self.mark_last_delta(connector, &base, &object).await?;
        Ok(delta_ready(request, connector, &stored, object, base))
    }
}

fn delta_ready(
    request: &RunRequested,
    connector: &str,
    snapshot: &v1::Snapshot,
    object: v1::ObjectRef,
    base: v1::ObjectRef,
) -> Produced {
    let own = carry::Own::of(snapshot);
    let ready = v1::SnapshotReady {
        base: Some(base),
        // What this run named, not what it carries.
        users: own.users,
        memberships: own.memberships,
        ..ready(request, connector, snapshot, object)
    };
    Produced::Delta {
        ready,
        own,
        groups_included: snapshot.groups_included,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(event: Option<v1::EventTrigger>) -> RunRequested {
        RunRequested {
            run_id: "run-1".to_owned(),
            event,
            ..Default::default()
        }
    }

    #[test]
    fn only_an_event_naming_ids_without_a_reason_is_a_delta() {
        assert_eq!(delta_of(&request(None)), None);
        assert_eq!(
            delta_of(&request(Some(v1::EventTrigger::default()))),
            None,
            "names nothing"
        );
        let named = v1::EventTrigger {
            user_ids: vec!["u2".to_owned(), "u1".to_owned()],
            group_ids: vec!["g1".to_owned()],
            events: 3,
            full_sync_reason: String::new(),
        };
        assert_eq!(
            delta_of(&request(Some(v1::EventTrigger {
                full_sync_reason: "a gap".to_owned(),
                ..named.clone()
            }))),
            None,
            "a full sync reason wins"
        );
        let touched = delta_of(&request(Some(named))).expect("a delta");
        assert_eq!(touched.users.into_iter().collect::<Vec<_>>(), ["u1", "u2"]);
        assert_eq!(touched.groups.into_iter().collect::<Vec<_>>(), ["g1"]);
        assert_eq!(touched.full_sync, None);
        let groups_only = v1::EventTrigger {
            group_ids: vec!["g1".to_owned()],
            ..Default::default()
        };
        assert!(delta_of(&request(Some(groups_only))).is_some());
    }
}
