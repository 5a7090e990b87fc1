//! Events observed while their connector is busy: merged into one pending trigger per
//! connector (key `pending.{connector}` in the claims bucket, written with compare-and-set)
//! and started as one event run as soon as the connector is free: when its run ends
//! ([`Runs::start_pending`] from the end of every run), right after the merge (the run may
//! have ended meanwhile), and at every sweep of the event worker, for anything a stopped
//! replica left.
//!
//! Merging instead of handing the observation back keeps the control plane's consumer
//! free: a follower observes every second, a full sync of a large realm lasts minutes,
//! and hundreds of observations waiting for redelivery would hold the consumer's
//! acknowledgement window that the running run's own events need. It also turns a burst
//! into one run: every run reads Keycloak again when it fetches, so the merged trigger
//! names every user any of the observations named.

use async_nats::jetstream::kv;
use prost::Message;
use proto::v1;

use crate::{
    runs::{Runs, RunsError},
    store::StoreError,
};

/// How many times a merge is tried against concurrent writers before giving up.
const MAX_MERGE_ATTEMPTS: usize = 16;

/// `into` with `more` added: the ids of both (sorted, once each), their events summed, and
/// the first full-sync reason of the two.
pub fn merge(into: &mut v1::EventTrigger, more: v1::EventTrigger) {
    into.user_ids.extend(more.user_ids);
    into.user_ids.sort_unstable();
    into.user_ids.dedup();
    into.group_ids.extend(more.group_ids);
    into.group_ids.sort_unstable();
    into.group_ids.dedup();
    into.events = into.events.saturating_add(more.events);
    if into.full_sync_reason.trim().is_empty() {
        into.full_sync_reason = more.full_sync_reason;
    }
}

fn key(connector: &str) -> String {
    format!("pending.{connector}")
}

impl Runs {
    /// Adds `trigger` to what waits for `connector`, then starts it if the connector is
    /// free by now (its run may have ended meanwhile); answers the run started, if any.
    pub async fn defer_event_run(
        &self,
        connector: &str,
        trigger: v1::EventTrigger,
    ) -> Result<Option<v1::Run>, RunsError> {
        self.merge_pending(connector, trigger).await?;
        tracing::debug!(
            connector,
            "Events observed wait for the connector's run to end."
        );
        self.start_pending(connector).await
    }

    /// Adds `trigger` to what waits for `connector`.
    async fn merge_pending(
        &self,
        connector: &str,
        trigger: v1::EventTrigger,
    ) -> Result<(), RunsError> {
        let claims = self.store.claims();
        let key = key(connector);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let entry = claims
                .entry(&key)
                .await
                .map_err(|error| read_error(claims, &key, error))?;
            let (mut merged, revision) = match entry {
                Some(entry) if entry.operation == kv::Operation::Put => (
                    v1::EventTrigger::decode(entry.value.as_ref())
                        .map_err(|source| decode_error(claims, &key, source))?,
                    Some(entry.revision),
                ),
                Some(entry) => (v1::EventTrigger::default(), Some(entry.revision)),
                None => (v1::EventTrigger::default(), None),
            };
            merge(&mut merged, trigger.clone());
            let value = merged.encode_to_vec().into();
            let written = match revision {
                Some(revision) => claims
                    .update(&key, value, revision)
                    .await
                    .map(|_| ())
                    .is_ok(),
                None => claims.create(&key, value).await.map(|_| ()).is_ok(),
            };
            if written {
                return Ok(());
            }
            if attempts >= MAX_MERGE_ATTEMPTS {
                return Err(RunsError::Store(StoreError::Contended {
                    run_id: key.clone(),
                }));
            }
        }
    }

    /// Starts what waits for `connector` as one event run, if anything does and the
    /// connector is free; answers the run started. Taken with compare-and-set, so of
    /// several replicas one starts it; put back when the connector turns out busy.
    pub async fn start_pending(&self, connector: &str) -> Result<Option<v1::Run>, RunsError> {
        let claims = self.store.claims();
        let key = key(connector);
        let Some(entry) = claims
            .entry(&key)
            .await
            .map_err(|error| read_error(claims, &key, error))?
        else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let trigger = v1::EventTrigger::decode(entry.value.as_ref())
            .map_err(|source| decode_error(claims, &key, source))?;
        if claims
            .delete_expect_revision(&key, Some(entry.revision))
            .await
            .is_err()
        {
            // Another replica took it, or an observation was merged in meanwhile: whoever
            // wrote last starts it.
            return Ok(None);
        }
        match self.start_event_run(connector, trigger.clone()).await {
            Ok(run) => {
                tracing::info!(
                    connector,
                    run_id = %run.run_id,
                    events = trigger.events,
                    "Started the event run of the events observed while the connector was busy."
                );
                Ok(Some(run))
            }
            Err(RunsError::Busy { .. }) => {
                // Put back: the run that holds the connector starts it when it ends.
                self.merge_pending(connector, trigger).await?;
                Ok(None)
            }
            Err(error) => {
                // Not lost: put back for the next sweep.
                if let Err(put_back) = self.merge_pending(connector, trigger).await {
                    tracing::warn!(connector, error = %put_back, "Could not keep the events observed.");
                }
                Err(error)
            }
        }
    }

    /// [`Runs::start_pending`] for every configured connector; answers how many runs it
    /// started.
    pub async fn start_all_pending(&self) -> usize {
        let mut started = 0;
        for connector in self.connectors().to_vec() {
            match self.start_pending(&connector).await {
                Ok(Some(_)) => started += 1,
                Ok(None) => {}
                Err(error) => tracing::warn!(
                    connector,
                    error = %telemetry::error_chain(&error),
                    "Could not start the events observed while the connector was busy."
                ),
            }
        }
        started
    }
}

fn read_error(
    claims: &kv::Store,
    key: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> RunsError {
    RunsError::Store(StoreError::Read {
        bucket: claims.name.clone(),
        key: key.to_owned(),
        source: Box::new(error),
    })
}

fn decode_error(claims: &kv::Store, key: &str, source: prost::DecodeError) -> RunsError {
    RunsError::Store(StoreError::Decode {
        bucket: claims.name.clone(),
        key: key.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(users: &[&str], events: u64, reason: &str) -> v1::EventTrigger {
        v1::EventTrigger {
            user_ids: users.iter().map(|user| (*user).to_owned()).collect(),
            group_ids: Vec::new(),
            events,
            full_sync_reason: reason.to_owned(),
        }
    }

    #[test]
    fn a_merge_names_every_user_once_sums_the_events_and_keeps_the_first_reason() {
        let mut merged = trigger(&["u2", "u1"], 2, "");
        merge(&mut merged, trigger(&["u1", "u3"], 3, "a gap"));
        merge(&mut merged, trigger(&[], 1, "another"));
        assert_eq!(merged.user_ids, ["u1", "u2", "u3"]);
        assert_eq!(merged.events, 6);
        assert_eq!(merged.full_sync_reason, "a gap");
    }
}
