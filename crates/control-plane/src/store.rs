//! Runs and change results in JetStream key-value buckets, so a restart or a second replica
//! loses nothing.
//!
//! - `{prefix}-runs`: key = run id (a ULID, so keys sort by creation time), value = the
//!   [`v1::Run`] protobuf followed by three fields of the control plane's own (tags 1001
//!   to 1003: the plan's [`v1::ObjectRef`], how far the run's results are counted, and
//!   when the run entered its state, which its deadline counts from). Any `Run` decoder
//!   reads the value and skips them. Every update is a compare-and-set on
//!   the key's revision, retried on conflict, so two replicas never lose an update. The
//!   bucket keeps 16 revisions per key so a watcher that falls behind still sees each one.
//! - `{prefix}-results`: key = `{run_id}.{change id}`, value = the [`v1::ChangeResult`].
//!   A result is written with `create`, which fails when the key exists: that makes
//!   recording idempotent by (run, change) across replicas and retries, with no lock. A
//!   bucket (rather than a plain stream) because the key *is* the idempotency check, and
//!   because its stream is still a stream: reading one run's results in the order they
//!   were recorded is one ordered consumer filtered on `$KV.{bucket}.{run_id}.>`, which is
//!   what the progress counting (and `ListChanges`' outcome filter) needs, and what
//!   survives a restart; a page of `ListChanges` reads its changes' results by key
//!   ([`Store::result`]).
//!
//! - `{prefix}-schedule`: claims, each a key written with `create` or a compare-and-set on
//!   its revision, so exactly one replica wins it: `schedule.{unix seconds}` (the replica
//!   that fires that time of the schedule), and `connector.{name}` (the run that holds the
//!   connector: one active run per connector, see [`Store::claim_connector`]). A key lives
//!   a week; an expired connector claim is a free connector.
//!
//! Progress is counted from the results stream, never incremented on the side: a run
//! remembers the stream sequence up to which its results are counted, and
//! [`Store::count_results`] adds the results after it in one compare-and-set. A result
//! recorded by a replica that died before counting it is counted by the next report (or
//! at start); a result is never counted twice.

use std::{
    sync::Mutex,
    time::{Duration, SystemTime},
};

use async_nats::jetstream::{
    consumer::{DeliverPolicy, push::OrderedConfig},
    kv,
};
use bus::{Bus, runs::Retention};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message as _;
use proto::v1;

use crate::machine::{is_active, is_terminal};

/// Compare-and-set attempts before an update gives up; each conflict means another writer
/// made progress, so this is only reached under pathological contention.
const MAX_UPDATE_ATTEMPTS: usize = 64;

/// How long a connector claim whose run does not exist (yet) still holds: the claim is
/// written just before the run, so a run missing for longer was never created (its
/// replica stopped in between), and the claim may be taken over.
const CLAIM_GRACE: Duration = Duration::from_secs(60);

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Boxed: the bucket's error is large, and every read returns this type.
    #[error(transparent)]
    Bucket(Box<bus::runs::KeyValueError>),
    #[error("reading {key} from bucket {bucket}")]
    Read {
        bucket: String,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("writing {key} to bucket {bucket}")]
    Write {
        bucket: String,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{key} in bucket {bucket} is not a valid stored value")]
    Decode {
        bucket: String,
        key: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("run {run_id} was changed concurrently {MAX_UPDATE_ATTEMPTS} times in a row")]
    Contended { run_id: String },
}

impl From<bus::runs::KeyValueError> for StoreError {
    fn from(error: bus::runs::KeyValueError) -> StoreError {
        StoreError::Bucket(Box::new(error))
    }
}

/// A run as stored, with what the control plane keeps beside the wire [`v1::Run`].
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRun {
    pub run: v1::Run,
    /// Where the planner stored the run's plan (from `PlanReady`).
    pub plan: Option<v1::ObjectRef>,
    /// The sequence of the results bucket's stream up to which this run's results are in
    /// its progress.
    pub results_counted_through: u64,
    /// When the run entered its current state (set by [`Store::update`] on every write
    /// that changes the state); `None` for runs stored before it was recorded.
    pub state_since: Option<prost_types::Timestamp>,
}

/// The stored fields after the `Run`'s own.
#[derive(Clone, PartialEq, prost::Message)]
struct RunExtension {
    #[prost(message, optional, tag = "1001")]
    plan: Option<v1::ObjectRef>,
    #[prost(uint64, tag = "1002")]
    results_counted_through: u64,
    #[prost(message, optional, tag = "1003")]
    state_since: Option<prost_types::Timestamp>,
}

/// What [`Store::update`] did.
#[derive(Clone, Debug)]
pub struct Updated {
    /// The run now.
    pub stored: StoredRun,
    /// Whether the change was written (the change function changed something).
    pub written: bool,
    /// Whether this write ended the run.
    pub finished: bool,
}

/// What [`Store::claim_connector`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The run holds the connector now.
    Claimed,
    /// Another run holds it and is still active (or is being created).
    Busy { run_id: String, state: v1::RunState },
}

/// A result as recorded, with its place in the results stream.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedResult {
    pub sequence: u64,
    pub result: v1::ChangeResult,
}

/// The runs, results and claims (schedule fire times, connectors) of one deployment.
pub struct Store {
    client: async_nats::Client,
    runs: kv::Store,
    results: kv::Store,
    claims: kv::Store,
    ids: Mutex<ulid::Generator>,
    /// Counting is serialized within a replica, so its own reports do not race each other
    /// into compare-and-set conflicts; between replicas the compare-and-set is enough.
    counting: tokio::sync::Mutex<()>,
}

impl Store {
    /// The claims bucket (schedule fire times, connectors, events observed while their
    /// connector was busy: `crate::pending`).
    pub(crate) fn claims(&self) -> &kv::Store {
        &self.claims
    }

    /// Opens the buckets, creating them if missing.
    pub async fn open(bus: &Bus) -> Result<Store, StoreError> {
        let topology = bus.topology();
        let runs = bus
            .key_value(
                &topology.runs_bucket(),
                "keysync runs, by run id",
                Retention {
                    history: 16,
                    // `[bus] retention_days`: a run is forgotten that long after its last
                    // write, and its results that long after they were recorded.
                    max_age: bus.provisioning().runs_max_age,
                },
            )
            .await?;
        let results = bus
            .key_value(
                &topology.results_bucket(),
                "keysync change results, by run id and change id",
                Retention {
                    history: 1,
                    max_age: bus.provisioning().runs_max_age,
                },
            )
            .await?;
        // A fire-time claim only matters around its fire time; a week is far beyond any
        // replica's clock skew or pause. A connector claim that expires frees the
        // connector, which a run that old no longer deserves.
        let claims = bus
            .key_value(
                &topology.schedule_bucket(),
                "keysync claims: schedule fire times, and the run holding each connector",
                Retention {
                    history: 1,
                    max_age: Duration::from_secs(7 * 24 * 3600),
                },
            )
            .await?;
        Ok(Store {
            client: bus.client().clone(),
            runs,
            results,
            claims,
            ids: Mutex::new(ulid::Generator::new()),
            counting: tokio::sync::Mutex::new(()),
        })
    }

    /// A new run id: a ULID, increasing within this process even within one millisecond.
    pub fn new_run_id(&self) -> String {
        let mut ids = self
            .ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The generator fails only when 2^80 ids were made in one millisecond.
        ids.generate()
            .unwrap_or_else(|_| ulid::Ulid::new())
            .to_string()
    }

    /// Stores a new run; fails if its id exists.
    pub async fn create(&self, stored: &StoredRun) -> Result<(), StoreError> {
        let key = stored.run.run_id.as_str();
        self.runs
            .create(key, encode_run(stored))
            .await
            .map_err(|source| StoreError::Write {
                bucket: self.runs.name.clone(),
                key: key.to_owned(),
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// The run `run_id`, if it exists.
    pub async fn get(&self, run_id: &str) -> Result<Option<StoredRun>, StoreError> {
        Ok(self.entry(run_id).await?.map(|(stored, _)| stored))
    }

    /// Changes the run `run_id` with `change`, which answers whether it changed anything,
    /// and writes it with a compare-and-set, re-reading and calling `change` again on a
    /// conflict. `updated_at` is set on write, and `finished_at` on the write that ends the
    /// run, and `state_since` on a write that changes the state. `None` when there is no
    /// such run.
    pub async fn update<F>(
        &self,
        run_id: &str,
        mut change: F,
    ) -> Result<Option<Updated>, StoreError>
    where
        F: FnMut(&mut StoredRun) -> bool,
    {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let Some((mut stored, revision)) = self.entry(run_id).await? else {
                return Ok(None);
            };
            let was_terminal = is_terminal(stored.run.state());
            let state_before = stored.run.state;
            if !change(&mut stored) {
                return Ok(Some(Updated {
                    stored,
                    written: false,
                    finished: false,
                }));
            }
            let time = now();
            stored.run.updated_at = Some(time);
            if stored.run.state != state_before {
                stored.state_since = Some(time);
            }
            let finished = !was_terminal && is_terminal(stored.run.state());
            if finished {
                stored.run.finished_at = Some(time);
            }
            match self
                .runs
                .update(run_id, encode_run(&stored), revision)
                .await
            {
                Ok(_) => {
                    return Ok(Some(Updated {
                        stored,
                        written: true,
                        finished,
                    }));
                }
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    continue;
                }
                Err(source) => {
                    return Err(StoreError::Write {
                        bucket: self.runs.name.clone(),
                        key: run_id.to_owned(),
                        source: Box::new(source),
                    });
                }
            }
        }
        Err(StoreError::Contended {
            run_id: run_id.to_owned(),
        })
    }

    /// Every run id, newest first.
    pub async fn run_ids(&self) -> Result<Vec<String>, StoreError> {
        let read_error = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Read {
            bucket: self.runs.name.clone(),
            key: ">".to_owned(),
            source,
        };
        let mut ids: Vec<String> = self
            .runs
            .keys()
            .await
            .map_err(|error| read_error(Box::new(error)))?
            .try_collect()
            .await
            .map_err(|error| read_error(Box::new(error)))?;
        ids.sort_unstable_by(|left, right| right.cmp(left));
        Ok(ids)
    }

    /// The runs created within `window` of now, newest first (run ids are ULIDs, so their
    /// time is their creation's); ids that are not ULIDs are skipped.
    pub async fn recent_runs(&self, window: Duration) -> Result<Vec<StoredRun>, StoreError> {
        let horizon = SystemTime::now()
            .checked_sub(window)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut runs = Vec::new();
        for run_id in self.run_ids().await? {
            let Ok(ulid) = ulid::Ulid::from_string(&run_id) else {
                continue;
            };
            if ulid.datetime() < horizon {
                break;
            }
            if let Some(stored) = self.get(&run_id).await? {
                runs.push(stored);
            }
        }
        Ok(runs)
    }

    /// The run now, then the run after every write, for as long as the stream is polled.
    /// The stream ends if the run is deleted.
    pub async fn watch(
        &self,
        run_id: &str,
    ) -> Result<impl Stream<Item = Result<v1::Run, StoreError>> + Send + 'static, StoreError> {
        let bucket = self.runs.name.clone();
        let key = run_id.to_owned();
        let watch = self
            .runs
            .watch_with_history(run_id)
            .await
            .map_err(|source| StoreError::Read {
                bucket: bucket.clone(),
                key: key.clone(),
                source: Box::new(source),
            })?;
        Ok(watch
            .map(move |entry| match entry {
                Ok(entry) if entry.operation == kv::Operation::Put => {
                    decode_run(&bucket, &key, &entry.value).map(|stored| Some(stored.run))
                }
                Ok(_) => Ok(None),
                Err(source) => Err(StoreError::Read {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    source: Box::new(source),
                }),
            })
            .take_while(|item| std::future::ready(!matches!(item, Ok(None))))
            .filter_map(|item| std::future::ready(item.transpose())))
    }

    /// Records `result` (its `run_id` and `change_id` set) unless a result of that change
    /// is recorded already. Answers whether it was new.
    pub async fn record_result(&self, result: &v1::ChangeResult) -> Result<bool, StoreError> {
        let key = result_key(&result.run_id, &result.change_id);
        match self
            .results
            .create(&key, Bytes::from(result.encode_to_vec()))
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(StoreError::Write {
                bucket: self.results.name.clone(),
                key,
                source: Box::new(source),
            }),
        }
    }

    /// The results of `run_id` recorded after stream sequence `after`, in the order they
    /// were recorded.
    pub async fn results_after(
        &self,
        run_id: &str,
        after: u64,
    ) -> Result<Vec<RecordedResult>, StoreError> {
        let mut recorded = Vec::new();
        self.for_each_result_after(run_id, after, |result| recorded.push(result))
            .await?;
        Ok(recorded)
    }

    /// Calls `each` with every result of `run_id` recorded after stream sequence `after`,
    /// in the order they were recorded, holding one at a time.
    pub async fn for_each_result_after<F>(
        &self,
        run_id: &str,
        after: u64,
        mut each: F,
    ) -> Result<(), StoreError>
    where
        F: FnMut(RecordedResult),
    {
        let filter = format!("{}{}.>", self.results.prefix, run_id);
        let read_error = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Read {
            bucket: self.results.name.clone(),
            key: format!("{run_id}.>"),
            source,
        };
        let consumer = self
            .results
            .stream
            .create_consumer(OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                description: Some("keysync control plane: a run's results".to_owned()),
                filter_subject: filter,
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|error| read_error(Box::new(error)))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(());
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|error| read_error(Box::new(error)))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|error| read_error(Box::new(error)))?;
            let info = message.info().map_err(&read_error)?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            let result = v1::ChangeResult::decode(message.payload.as_ref()).map_err(|source| {
                StoreError::Decode {
                    bucket: self.results.name.clone(),
                    key: message.subject.to_string(),
                    source,
                }
            })?;
            each(RecordedResult { sequence, result });
            if pending == 0 {
                break;
            }
        }
        Ok(())
    }

    /// The result recorded for the change `change_id` of `run_id`, if any.
    pub async fn result(
        &self,
        run_id: &str,
        change_id: &str,
    ) -> Result<Option<v1::ChangeResult>, StoreError> {
        let key = result_key(run_id, change_id);
        let entry = self
            .results
            .entry(&key)
            .await
            .map_err(|source| StoreError::Read {
                bucket: self.results.name.clone(),
                key: key.clone(),
                source: Box::new(source),
            })?;
        let Some(entry) = entry.filter(|entry| entry.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        v1::ChangeResult::decode(entry.value.as_ref())
            .map(Some)
            .map_err(|source| StoreError::Decode {
                bucket: self.results.name.clone(),
                key,
                source,
            })
    }

    /// The runs bucket, for [`crate::run_index::RunIndex`] to follow.
    pub fn runs_bucket(&self) -> &kv::Store {
        &self.runs
    }

    /// The NATS connection the buckets are read through.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Adds the results of `run_id` recorded since it was last counted to its progress
    /// with `count` (which sees the run and the new results and answers whether it changed
    /// the run), in one compare-and-set. `None` when there is no such run.
    pub async fn count_results<F>(
        &self,
        run_id: &str,
        mut count: F,
    ) -> Result<Option<Updated>, StoreError>
    where
        F: FnMut(&mut StoredRun, &[RecordedResult]) -> bool,
    {
        let _counting = self.counting.lock().await;
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let Some((stored, _)) = self.entry(run_id).await? else {
                return Ok(None);
            };
            let counted_through = stored.results_counted_through;
            let new = self.results_after(run_id, counted_through).await?;
            let Some(last) = new.last().map(|recorded| recorded.sequence) else {
                return Ok(Some(Updated {
                    stored,
                    written: false,
                    finished: false,
                }));
            };
            let mut conflict = false;
            let updated = self
                .update(run_id, |stored| {
                    // Another replica counted in between: start over from its count.
                    if stored.results_counted_through != counted_through {
                        conflict = true;
                        return false;
                    }
                    count(stored, &new);
                    stored.results_counted_through = last;
                    true
                })
                .await?;
            if !conflict {
                return Ok(updated);
            }
        }
        Err(StoreError::Contended {
            run_id: run_id.to_owned(),
        })
    }

    /// Claims `connector`'s scheduled fire time `unix_seconds` for this replica: true for
    /// exactly one of the replicas that ask. The key is `schedule.{unix seconds}` for the
    /// default connector (none configured) and `schedule.connector.{name}.{unix seconds}`
    /// for a named one, so connectors on one cron each fire.
    pub async fn claim_fire_time(
        &self,
        connector: &str,
        unix_seconds: i64,
    ) -> Result<bool, StoreError> {
        let key = fire_time_key(connector, unix_seconds);
        match self
            .claims
            .create(&key, Bytes::from_static(b"claimed"))
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(StoreError::Write {
                bucket: self.claims.name.clone(),
                key,
                source: Box::new(source),
            }),
        }
    }

    /// Claims `connector` for the run `run_id` with a compare-and-set on the key
    /// `connector.{name}`, so that of two replicas starting a run of one connector at once
    /// exactly one gets it. The claim is taken over when the run holding it has ended, is
    /// HELD, or does not exist (after `CLAIM_GRACE`, a minute), so a run that stopped
    /// half-way cannot block the connector; claiming again for the same run succeeds.
    pub async fn claim_connector(
        &self,
        connector: &str,
        run_id: &str,
    ) -> Result<Claim, StoreError> {
        let key = connector_key(connector);
        let write_error = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Write {
            bucket: self.claims.name.clone(),
            key: key.clone(),
            source,
        };
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let (holder, revision) = self.claim_entry(&key).await?;
            if holder == run_id {
                return Ok(Claim::Claimed);
            }
            if !holder.is_empty()
                && let Some(state) = self.busy_state(&holder).await?
            {
                return Ok(Claim::Busy {
                    run_id: holder,
                    state,
                });
            }
            let value = Bytes::from(run_id.to_owned());
            let written = match revision {
                None => match self.claims.create(&key, value).await {
                    Ok(_) => true,
                    Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => false,
                    Err(source) => return Err(write_error(Box::new(source))),
                },
                Some(revision) => match self.claims.update(&key, value, revision).await {
                    Ok(_) => true,
                    Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => false,
                    Err(source) => return Err(write_error(Box::new(source))),
                },
            };
            if written {
                return Ok(Claim::Claimed);
            }
        }
        Err(StoreError::Contended {
            run_id: run_id.to_owned(),
        })
    }

    /// Frees `connector` if the run `run_id` holds it (a compare-and-set: a claim taken
    /// over meanwhile stays).
    pub async fn release_connector(&self, connector: &str, run_id: &str) -> Result<(), StoreError> {
        let key = connector_key(connector);
        let (holder, revision) = self.claim_entry(&key).await?;
        let Some(revision) = revision.filter(|_| holder == run_id) else {
            return Ok(());
        };
        match self.claims.update(&key, Bytes::new(), revision).await {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(()),
            Err(source) => Err(StoreError::Write {
                bucket: self.claims.name.clone(),
                key,
                source: Box::new(source),
            }),
        }
    }

    /// The run holding the claim `key` (empty when free) and the revision to update it
    /// with (`None` when there is no value, so it is written with `create`).
    async fn claim_entry(&self, key: &str) -> Result<(String, Option<u64>), StoreError> {
        let entry = self
            .claims
            .entry(key)
            .await
            .map_err(|source| StoreError::Read {
                bucket: self.claims.name.clone(),
                key: key.to_owned(),
                source: Box::new(source),
            })?;
        Ok(match entry {
            Some(entry) if entry.operation == kv::Operation::Put => (
                String::from_utf8_lossy(&entry.value).into_owned(),
                Some(entry.revision),
            ),
            _ => (String::new(), None),
        })
    }

    /// The state of the run `run_id` if it keeps its connector busy: it is active, or it
    /// does not exist yet but its id is younger than [`CLAIM_GRACE`] (it is being created).
    async fn busy_state(&self, run_id: &str) -> Result<Option<v1::RunState>, StoreError> {
        let Ok(ulid) = ulid::Ulid::from_string(run_id) else {
            return Ok(None);
        };
        match self.get(run_id).await? {
            Some(stored) => {
                let state = stored.run.state();
                Ok(is_active(state).then_some(state))
            }
            None => {
                let young = SystemTime::now()
                    .duration_since(ulid.datetime())
                    .map_or(true, |age| age < CLAIM_GRACE);
                Ok(young.then_some(v1::RunState::Requested))
            }
        }
    }

    async fn entry(&self, run_id: &str) -> Result<Option<(StoredRun, u64)>, StoreError> {
        let entry = self
            .runs
            .entry(run_id)
            .await
            .map_err(|source| StoreError::Read {
                bucket: self.runs.name.clone(),
                key: run_id.to_owned(),
                source: Box::new(source),
            })?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let stored = decode_run(&self.runs.name, run_id, &entry.value)?;
        Ok(Some((stored, entry.revision)))
    }
}

/// The key of a change's result. A change id made only of letters, digits, `-` and `_` is
/// used as it is; any other is written `=` followed by its bytes in hex, so every id makes
/// a valid key and no two ids make the same one.
pub fn result_key(run_id: &str, change_id: &str) -> String {
    format!("{run_id}.{}", key_token(change_id))
}

/// The claim key of `connector`'s scheduled fire time: `schedule.{unix seconds}` for the
/// default connector (none configured), `schedule.connector.{name}.{unix seconds}` else.
pub fn fire_time_key(connector: &str, unix_seconds: i64) -> String {
    if connector.is_empty() {
        format!("schedule.{unix_seconds}")
    } else {
        format!("schedule.{}.{unix_seconds}", connector_key(connector))
    }
}

/// The key of a connector's claim, `connector.{name}`, the name written as
/// [`result_key`] writes a change id (the default connector, empty, is `connector.=`).
pub fn connector_key(connector: &str) -> String {
    format!("connector.{}", key_token(connector))
}

/// `text` as one token of a key: as it is when made only of letters, digits, `-` and `_`,
/// else `=` followed by its bytes in hex.
fn key_token(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if plain {
        return text.to_owned();
    }
    let hex: String = text.bytes().map(|byte| format!("{byte:02x}")).collect();
    format!("={hex}")
}

/// Now, as a protobuf timestamp.
pub fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

fn encode_run(stored: &StoredRun) -> Bytes {
    let mut bytes = stored.run.encode_to_vec();
    RunExtension {
        plan: stored.plan.clone(),
        results_counted_through: stored.results_counted_through,
        state_since: stored.state_since,
    }
    .encode(&mut bytes)
    .unwrap_or_else(|_| unreachable!("a Vec grows as needed"));
    Bytes::from(bytes)
}

fn decode_run(bucket: &str, key: &str, bytes: &[u8]) -> Result<StoredRun, StoreError> {
    let decode_error = |source| StoreError::Decode {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        source,
    };
    let run = v1::Run::decode(bytes).map_err(decode_error)?;
    let extension = RunExtension::decode(bytes).map_err(decode_error)?;
    Ok(StoredRun {
        run,
        plan: extension.plan,
        results_counted_through: extension.results_counted_through,
        state_since: extension.state_since,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_run_reads_back_whole_and_as_a_plain_run() {
        let stored = StoredRun {
            run: v1::Run {
                run_id: "01JD000000000000000000000".to_owned(),
                state: v1::RunState::Applying as i32,
                reason: "r".to_owned(),
                ..v1::Run::default()
            },
            plan: Some(v1::ObjectRef {
                bucket: "keysync-plans".to_owned(),
                key: "x.pb.zst".to_owned(),
                sha256: "ab".to_owned(),
                size: 3,
            }),
            results_counted_through: 42,
            state_since: Some(prost_types::Timestamp {
                seconds: 1_795_356_000,
                nanos: 5,
            }),
        };
        let bytes = encode_run(&stored);
        assert_eq!(decode_run("b", "k", &bytes).expect("decodes"), stored);
        assert_eq!(v1::Run::decode(bytes).expect("a Run"), stored.run);
    }

    #[test]
    fn result_keys_keep_plain_ids_and_encode_the_others() {
        assert_eq!(result_key("R", "00ab-c_d"), "R.00ab-c_d");
        assert_eq!(result_key("R", "a.b"), "R.=612e62");
        assert_eq!(result_key("R", ""), "R.=");
        assert_ne!(result_key("R", "=61"), result_key("R", "a"));
        assert_eq!(connector_key("corp"), "connector.corp");
        assert_eq!(connector_key(""), "connector.=");
        assert_eq!(connector_key("a b"), "connector.=612062");
    }
}
