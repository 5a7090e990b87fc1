//! The index of run ids every replica keeps in memory, so that `ListRuns` and the reaper
//! read only the runs they answer about, not every key of the runs bucket.
//!
//! Run ids are ULIDs, so their order is their creation's; the index maps each (as its
//! 128-bit value, 24 bytes an entry with its state and trigger) to the run's state as last
//! written and its trigger, which lets `ListRuns` filter by state and trigger and the
//! reaper skip ended runs without reading them. It is loaded at start by one ordered consumer on the runs bucket's stream,
//! delivering the last value of every key, and kept current by the same consumer: a run
//! created or changed by any replica comes in, a delete or purge takes it out. Until the
//! first load is done, [`RunIndex::wait_current`] waits for it (bounded). A consumer that
//! fails is made again, loading a fresh index and swapping it in once caught up.
//!
//! [`RunIndex::wait_current`] also waits until the index has applied every write the
//! stream held when it was called, so a run just created (by this replica or another) is
//! listed by the next call. Keys that expire by the bucket's `max_age` leave no marker:
//! their ids are dropped when a read finds nothing ([`RunIndex::remove`]), and every
//! [`PRUNE_INTERVAL`] the ids older than the bucket's `max_age` are checked.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use async_nats::jetstream::{
    consumer::{DeliverPolicy, push::OrderedConfig},
    kv,
};
use futures::StreamExt;
use prost::Message as _;
use proto::v1::{RunState, RunTrigger};
use tokio::{sync::watch, task::AbortHandle};
use ulid::Ulid;

use crate::{machine::is_terminal, store::StoreError};

/// How often the ids of runs older than the bucket's `max_age` are checked.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// How long a consumer that failed waits before it is made again, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The run's state and trigger, read from a stored value (the `Run`'s fields 3 and 4)
/// without decoding the rest.
#[derive(Clone, PartialEq, prost::Message)]
struct RunStateOnly {
    #[prost(int32, tag = "3")]
    state: i32,
    #[prost(int32, tag = "4")]
    trigger: i32,
}

/// What the index keeps of one run: its state as last written, and its trigger (which
/// never changes), as stored (`RunState`, `RunTrigger`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    state: i32,
    trigger: i32,
}

impl Entry {
    /// Whether the run is in one of `states` and has one of `triggers` (any when empty).
    fn matches(&self, states: &[RunState], triggers: &[RunTrigger]) -> bool {
        (states.is_empty() || states.iter().any(|state| *state as i32 == self.state))
            && (triggers.is_empty()
                || triggers
                    .iter()
                    .any(|trigger| *trigger as i32 == self.trigger))
    }
}

/// What the consumer and the readers share.
struct Shared {
    /// Run id -> its state and trigger.
    runs: RwLock<BTreeMap<u128, Entry>>,
    /// The stream sequence up to which the index has applied every write; 0 until the
    /// first load is done.
    applied: watch::Sender<u64>,
}

/// The run ids of one deployment, newest first, with their states.
pub struct RunIndex {
    shared: Arc<Shared>,
    bucket: kv::Store,
    task: AbortHandle,
}

impl Drop for RunIndex {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RunIndex {
    /// Starts following `bucket` (the runs bucket) through `client`.
    pub fn start(bucket: kv::Store, client: async_nats::Client) -> RunIndex {
        let shared = Arc::new(Shared {
            runs: RwLock::new(BTreeMap::new()),
            applied: watch::Sender::new(0),
        });
        let task = tokio::spawn(follow(Arc::clone(&shared), bucket.clone(), client));
        RunIndex {
            shared,
            bucket,
            task: task.abort_handle(),
        }
    }

    /// Waits, at most `timeout`, until the index holds every write the runs bucket held
    /// when called (the first load included).
    pub async fn wait_current(&self, timeout: Duration) -> Result<(), StoreError> {
        let read_error = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Read {
            bucket: self.bucket.name.clone(),
            key: ">".to_owned(),
            source,
        };
        let info = self
            .bucket
            .stream
            .get_info()
            .await
            .map_err(|error| read_error(Box::new(error)))?;
        let target = info.state.last_sequence.max(1);
        let mut applied = self.shared.applied.subscribe();
        tokio::time::timeout(timeout, applied.wait_for(|applied| *applied >= target))
            .await
            .map_err(|_| {
                read_error(
                    format!(
                        "the index of runs did not catch up with the bucket within {timeout:?}"
                    )
                    .into(),
                )
            })?
            .map_err(|error| read_error(Box::new(error)))?;
        Ok(())
    }

    /// Whether the first load is done.
    pub fn is_loaded(&self) -> bool {
        *self.shared.applied.borrow() > 0
    }

    /// Up to `max` run ids before `before` (all when `None`), newest first, whose state
    /// (as the index has it) is in `states` and whose trigger is in `triggers` (any when
    /// empty).
    pub fn page(
        &self,
        before: Option<&str>,
        states: &[RunState],
        triggers: &[RunTrigger],
        max: usize,
    ) -> Vec<String> {
        let before = match before.map(Ulid::from_string) {
            Some(Ok(before)) => before.0,
            Some(Err(_)) => return Vec::new(),
            None => u128::MAX,
        };
        let runs = self.read();
        runs.range(..before)
            .rev()
            .filter(|(_, entry)| entry.matches(states, triggers))
            .take(max)
            .map(|(id, _)| Ulid(*id).to_string())
            .collect()
    }

    /// The ids of the runs created at or after `horizon`, newest first, with ended ones
    /// left out when `active_only`.
    pub fn since(&self, horizon: SystemTime, active_only: bool) -> Vec<String> {
        self.since_where(horizon, |entry| {
            !active_only || !is_terminal(RunState::try_from(entry.state).unwrap_or_default())
        })
    }

    /// The ids of the runs created at or after `horizon` whose state (as the index has it)
    /// is in `states`, newest first.
    pub fn since_in(&self, horizon: SystemTime, states: &[RunState]) -> Vec<String> {
        self.since_where(horizon, |entry| entry.matches(states, &[]))
    }

    /// The ids of the runs created at or after `horizon` whose entry `keep` keeps, newest
    /// first.
    fn since_where(&self, horizon: SystemTime, keep: impl Fn(&Entry) -> bool) -> Vec<String> {
        let from = Ulid::from_datetime(horizon).0 & !((1u128 << 80) - 1);
        self.read()
            .range(from..)
            .rev()
            .filter(|(_, entry)| keep(entry))
            .map(|(id, _)| Ulid(*id).to_string())
            .collect()
    }

    /// Forgets `run_id`: a read found no such run (it expired).
    pub fn remove(&self, run_id: &str) {
        if let Ok(ulid) = Ulid::from_string(run_id) {
            self.write().remove(&ulid.0);
        }
    }

    /// How many run ids the index holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the index holds no run id.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u128, Entry>> {
        self.shared
            .runs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u128, Entry>> {
        self.shared
            .runs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Follows the bucket for as long as the index lives, making the consumer again after a
/// failure, and prunes expired ids every [`PRUNE_INTERVAL`].
async fn follow(shared: Arc<Shared>, bucket: kv::Store, client: async_nats::Client) {
    let following = async {
        let mut backoff = Duration::from_millis(100);
        loop {
            match follow_once(&shared, &bucket, &client).await {
                Ok(()) => {
                    tracing::warn!("The consumer of the runs bucket ended; following again.")
                }
                Err(error) => tracing::warn!(
                    error = %error,
                    "The consumer of the runs bucket failed; following again."
                ),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    };
    let pruning = async {
        let mut prune = tokio::time::interval(PRUNE_INTERVAL);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            prune.tick().await;
            if let Err(error) = prune_expired(&shared, &bucket).await {
                tracing::debug!(error = %error, "Could not prune the index of runs.");
            }
        }
    };
    tokio::join!(following, pruning);
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One consumer: loads a fresh index (the last value of every key), swaps it in once
/// caught up, then applies every write as it comes.
async fn follow_once(
    shared: &Shared,
    bucket: &kv::Store,
    client: &async_nats::Client,
) -> Result<(), BoxError> {
    // Everything up to here is delivered by the load (the last value of each key that
    // still exists), so the load covers this sequence even if its last write expired.
    let before = bucket.stream.get_info().await?.state.last_sequence;
    let consumer = bucket
        .stream
        .create_consumer(OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("keysync control plane: the index of runs".to_owned()),
            filter_subject: format!("{}>", bucket.prefix),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await?;
    let mut loading = Some(BTreeMap::new());
    let mut loaded_through = before;
    if consumer.cached_info().num_pending == 0 {
        install(shared, &mut loading, loaded_through);
    }
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let info = message.info()?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        let Some(key) = message.subject.strip_prefix(bucket.prefix.as_str()) else {
            continue;
        };
        let operation = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("KV-Operation"))
            .map(|value| value.as_str().to_owned());
        let entry = match operation.as_deref() {
            Some("DEL") | Some("PURGE") => None,
            _ => Some(
                RunStateOnly::decode(message.payload.as_ref())
                    .map(|run| Entry {
                        state: run.state,
                        trigger: run.trigger,
                    })
                    .unwrap_or_default(),
            ),
        };
        loaded_through = loaded_through.max(sequence);
        match &mut loading {
            Some(fresh) => {
                apply(fresh, key, entry);
                if pending == 0 {
                    install(shared, &mut loading, loaded_through);
                }
            }
            None => {
                apply(
                    &mut shared
                        .runs
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()),
                    key,
                    entry,
                );
                shared.applied.send_replace(sequence);
            }
        }
    }
    Ok(())
}

/// Makes the loaded index the one readers see.
fn install(shared: &Shared, loading: &mut Option<BTreeMap<u128, Entry>>, through: u64) {
    if let Some(fresh) = loading.take() {
        tracing::debug!(runs = fresh.len(), "Loaded the index of runs.");
        *shared
            .runs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
        shared.applied.send_replace(through.max(1));
    }
}

/// Records the write of `key` (`None`: deleted); keys that are not run ids (ULIDs in
/// their canonical form) are not listed.
fn apply(runs: &mut BTreeMap<u128, Entry>, key: &str, entry: Option<Entry>) {
    let Ok(ulid) = Ulid::from_string(key) else {
        return;
    };
    if ulid.to_string() != key {
        return;
    }
    match entry {
        Some(entry) => {
            runs.insert(ulid.0, entry);
        }
        None => {
            runs.remove(&ulid.0);
        }
    }
}

/// Drops the ids of runs older than the bucket's `max_age` that are gone (a run updated
/// since it was created lives longer than its id's age says, hence the check).
async fn prune_expired(shared: &Shared, bucket: &kv::Store) -> Result<(), BoxError> {
    let max_age = bucket.stream.get_info().await?.config.max_age;
    if max_age.is_zero() {
        return Ok(());
    }
    let Some(horizon) = SystemTime::now().checked_sub(max_age) else {
        return Ok(());
    };
    let before = Ulid::from_datetime(horizon).0 & !((1u128 << 80) - 1);
    let old: Vec<u128> = shared
        .runs
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .range(..before)
        .map(|(id, _)| *id)
        .collect();
    for id in old {
        let key = Ulid(id).to_string();
        let exists = bucket
            .entry(&key)
            .await?
            .is_some_and(|entry| entry.operation == kv::Operation::Put);
        if !exists {
            shared
                .runs
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: RunState, trigger: RunTrigger) -> Option<Entry> {
        Some(Entry {
            state: state as i32,
            trigger: trigger as i32,
        })
    }

    #[test]
    fn only_canonical_run_ids_are_indexed_and_deletes_remove_them() {
        let mut runs = BTreeMap::new();
        let id = Ulid::new().to_string();
        apply(&mut runs, &id, entry(RunState::Applying, RunTrigger::Api));
        apply(
            &mut runs,
            "not-a-ulid",
            entry(RunState::Requested, RunTrigger::Api),
        );
        apply(
            &mut runs,
            &id.to_lowercase(),
            entry(RunState::Requested, RunTrigger::Api),
        );
        assert_eq!(runs.len(), 1);
        assert_eq!(
            runs.values().next().copied(),
            entry(RunState::Applying, RunTrigger::Api)
        );
        apply(&mut runs, &id, None);
        assert!(runs.is_empty());
    }

    #[test]
    fn an_entry_matches_its_state_and_trigger_and_empty_filters_match_all() {
        let event_run = Entry {
            state: RunState::Fetching as i32,
            trigger: RunTrigger::Event as i32,
        };
        assert!(event_run.matches(&[], &[]));
        assert!(event_run.matches(&[RunState::Fetching], &[RunTrigger::Event]));
        assert!(event_run.matches(&[], &[RunTrigger::Api, RunTrigger::Event]));
        assert!(!event_run.matches(&[], &[RunTrigger::Schedule]));
        assert!(!event_run.matches(&[RunState::Failed], &[RunTrigger::Event]));
    }

    #[test]
    fn the_state_and_trigger_are_read_from_a_stored_run() {
        let mut run = proto::v1::Run {
            run_id: Ulid::new().to_string(),
            connector: "corp".to_owned(),
            ..proto::v1::Run::default()
        };
        run.set_state(RunState::Held);
        run.set_trigger(RunTrigger::Event);
        let read = RunStateOnly::decode(run.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(read.state, RunState::Held as i32);
        assert_eq!(read.trigger, RunTrigger::Event as i32);
    }
}
