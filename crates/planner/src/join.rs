//! The durable join of a run: the `SnapshotReady` and each product's `StateReady` or
//! `StateFailed`, kept in the KV bucket `{prefix}-planner` under the run id, so a planner
//! that restarts (or another replica) carries on where the last one stopped.
//!
//! A record is updated with compare-and-set on its revision, so two replicas that handle
//! two messages of one run at the same time both land. [`Join::decide`] is pure: given
//! the record, the configured products and the time, it says whether to wait, plan or fail.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use bytes::Bytes;
use model::state::Product;
use prost::Message;
use proto::v1;

use crate::Error;

/// How long a record outlives its last update: far longer than any run waits for a
/// state, so late duplicates of a finished run still find it.
const RECORD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Compare-and-set attempts before an update gives up.
const MAX_CAS_ATTEMPTS: usize = 16;

/// Where a run's join stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Status {
    Waiting = 0,
    /// The plan is stored and announced; later messages of the run change nothing.
    Planned = 1,
    /// `PlanFailed` was published.
    Failed = 2,
}

/// One run's join, as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Join {
    #[prost(message, optional, tag = "1")]
    pub snapshot: Option<v1::SnapshotReady>,
    /// When the snapshot arrived, in milliseconds since the Unix epoch; the state timeout
    /// counts from here.
    #[prost(int64, tag = "2")]
    pub snapshot_seen_ms: i64,
    /// The newest `StateReady` of each product.
    #[prost(message, repeated, tag = "3")]
    pub states: Vec<v1::StateReady>,
    #[prost(message, repeated, tag = "4")]
    pub failures: Vec<v1::StateFailed>,
    #[prost(enumeration = "Status", tag = "5")]
    pub status: i32,
    /// A streamed first sync (`crate::parts`): how many parts (1, 2, …) are planned and
    /// their change sets published.
    #[prost(uint32, tag = "6")]
    pub parts_planned: u32,
    /// Per product, what the parts published: their changes by op and how many change
    /// sets (`streamed_sets`), after which the next part's sets are numbered.
    #[prost(message, repeated, tag = "7")]
    pub streamed: Vec<v1::PlanSummary>,
    /// The ids of the groups the parts created: a later part does not create them again.
    #[prost(string, repeated, tag = "8")]
    pub streamed_groups: Vec<String>,
    /// The manifest of every part's change sets so far.
    #[prost(message, optional, tag = "9")]
    pub parts_manifest: Option<v1::ObjectRef>,
}

/// What to do with a run now.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Something is missing; `missing` lists the products whose state has not arrived.
    Wait {
        missing: Vec<Product>,
    },
    /// Everything is there: plan these products (in configuration order) against these
    /// states.
    Plan {
        products: Vec<(Product, v1::ObjectRef)>,
    },
    Fail {
        reason: String,
    },
    /// The run is finished; nothing to do.
    Done,
}

impl Join {
    pub fn is_finished(&self) -> bool {
        self.status() != Status::Waiting
    }

    pub fn add_snapshot(&mut self, snapshot: v1::SnapshotReady, now: SystemTime) {
        if self.snapshot.is_none() {
            self.snapshot = Some(snapshot);
            self.snapshot_seen_ms = unix_ms(now);
        }
    }

    pub fn add_state(&mut self, state: v1::StateReady) {
        self.states.retain(|known| known.product != state.product);
        self.states.push(state);
    }

    pub fn add_failure(&mut self, failure: v1::StateFailed) {
        self.failures
            .retain(|known| known.product != failure.product);
        self.failures.push(failure);
    }

    /// The products of the run: the snapshot's, or every product `enabled` lists when the
    /// snapshot names none.
    pub fn products(&self, enabled: &[Product]) -> Result<Vec<Product>, String> {
        let Some(snapshot) = &self.snapshot else {
            return Ok(Vec::new());
        };
        if snapshot.products.is_empty() {
            return Ok(enabled.to_vec());
        }
        let mut products = BTreeSet::new();
        for &value in &snapshot.products {
            let product =
                cache::convert::product_from_proto(value).map_err(|error| error.to_string())?;
            if !enabled.contains(&product) {
                return Err(format!(
                    "{product} is not enabled in the planner's configuration"
                ));
            }
            products.insert(product);
        }
        Ok(products.into_iter().collect())
    }

    /// Whether to wait, plan or fail, given the configured products, the state timeout and
    /// the time now.
    pub fn decide(
        &self,
        enabled: &[Product],
        state_timeout: Duration,
        now: SystemTime,
    ) -> Decision {
        if self.is_finished() {
            return Decision::Done;
        }
        if self.snapshot.is_none() {
            return Decision::Wait {
                missing: Vec::new(),
            };
        }
        let products = match self.products(enabled) {
            Ok(products) => products,
            Err(reason) => return Decision::Fail { reason },
        };
        if products.is_empty() {
            return Decision::Fail {
                reason: "no product is enabled in the planner's configuration".to_owned(),
            };
        }
        let of = |value: i32| cache::convert::product_from_proto(value).ok();
        let failures: Vec<String> = products
            .iter()
            .filter_map(|&product| {
                let failure = self
                    .failures
                    .iter()
                    .find(|failure| of(failure.product) == Some(product))?;
                Some(format!(
                    "the state of {product} could not be read: {}",
                    failure.reason
                ))
            })
            .collect();
        if !failures.is_empty() {
            return Decision::Fail {
                reason: failures.join("; "),
            };
        }
        let mut ready = Vec::new();
        let mut missing = Vec::new();
        for &product in &products {
            let state = self
                .states
                .iter()
                .find(|state| of(state.product) == Some(product))
                .and_then(|state| state.state.clone());
            match state {
                Some(object) => ready.push((product, object)),
                None => missing.push(product),
            }
        }
        let waited_ms = unix_ms(now).saturating_sub(self.snapshot_seen_ms);
        let parts = self.snapshot.as_ref().map_or(0, |snapshot| snapshot.parts);
        if missing.is_empty() && self.parts_planned >= parts {
            return Decision::Plan { products: ready };
        }
        if missing.is_empty() {
            // The complete plan leaves out what the parts published: it waits for them all.
            if waited_ms >= state_timeout.as_millis() as i64 {
                return Decision::Fail {
                    reason: format!(
                        "{} of the {parts} parts of the streamed sync were planned within {} s \
                         of the snapshot",
                        self.parts_planned,
                        state_timeout.as_secs()
                    ),
                };
            }
            return Decision::Wait { missing };
        }
        if waited_ms >= state_timeout.as_millis() as i64 {
            let names: Vec<&str> = missing.iter().map(|product| product.as_str()).collect();
            return Decision::Fail {
                reason: format!(
                    "no state of {} arrived within {} s of the snapshot",
                    names.join(", "),
                    state_timeout.as_secs()
                ),
            };
        }
        Decision::Wait { missing }
    }
}

/// The KV bucket of joins.
#[derive(Clone)]
pub struct Joins {
    store: kv::Store,
}

impl Joins {
    /// Opens the bucket `{prefix}-planner`, created if missing.
    pub async fn open(bus: &bus::Bus) -> Result<Joins, Error> {
        let retention = bus::runs::Retention {
            history: 1,
            max_age: RECORD_MAX_AGE,
        };
        let store = bus
            .key_value(
                &bus.topology().planner_bucket(),
                "The planner's joins of each run's snapshot and states.",
                retention,
            )
            .await
            .map_err(|error| Error::Kv {
                bucket: bus.topology().planner_bucket(),
                source: Box::new(error),
            })?;
        Ok(Joins { store })
    }

    /// The run's record, if there is one.
    pub async fn get(&self, run_id: &str) -> Result<Option<Join>, Error> {
        Ok(self.read(run_id).await?.map(|(join, _)| join))
    }

    /// Applies `change` to the run's record (a new one if there is none) and stores it,
    /// retrying when another replica changed it in between. Answers the stored record.
    pub async fn update(
        &self,
        run_id: &str,
        mut change: impl FnMut(&mut Join),
    ) -> Result<Join, Error> {
        let kv_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Kv {
            bucket: self.store.name.clone(),
            source,
        };
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut join, revision) = self.read(run_id).await?.unwrap_or_default();
            change(&mut join);
            let value = Bytes::from(join.encode_to_vec());
            let stored = if revision == 0 {
                match self.store.create(run_id, value).await {
                    Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    other => other.map_err(|error| kv_error(Box::new(error))),
                }
            } else {
                match self.store.update(run_id, value, revision).await {
                    Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        continue;
                    }
                    other => other.map_err(|error| kv_error(Box::new(error))),
                }
            };
            stored?;
            return Ok(join);
        }
        Err(kv_error(
            format!("{run_id} kept changing under {MAX_CAS_ATTEMPTS} attempts to update it").into(),
        ))
    }

    /// The ids of every run with a record.
    pub async fn run_ids(&self) -> Result<Vec<String>, Error> {
        use futures::TryStreamExt;
        let kv_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Kv {
            bucket: self.store.name.clone(),
            source,
        };
        let keys = self
            .store
            .keys()
            .await
            .map_err(|error| kv_error(Box::new(error)))?;
        let keys: Vec<String> = keys
            .try_collect()
            .await
            .map_err(|error| kv_error(Box::new(error)))?;
        // The event runs' losses share the bucket (`crate::window`).
        Ok(keys
            .into_iter()
            .filter(|key| !key.starts_with("window."))
            .collect())
    }

    pub(crate) fn store(&self) -> &kv::Store {
        &self.store
    }

    async fn read(&self, run_id: &str) -> Result<Option<(Join, u64)>, Error> {
        let entry = self.store.entry(run_id).await.map_err(|error| Error::Kv {
            bucket: self.store.name.clone(),
            source: Box::new(error),
        })?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let join = Join::decode(entry.value).map_err(|error| Error::Kv {
            bucket: self.store.name.clone(),
            source: Box::new(error),
        })?;
        Ok(Some((join, entry.revision)))
    }
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Product; 3] = [Product::Jira, Product::Confluence, Product::Bitbucket];
    const TIMEOUT: Duration = Duration::from_secs(600);

    fn snapshot(products: &[v1::Product]) -> v1::SnapshotReady {
        v1::SnapshotReady {
            schema_version: v1::SCHEMA_VERSION,
            run_id: "run-1".to_owned(),
            products: products.iter().map(|&product| product as i32).collect(),
            mode: v1::RunMode::Apply as i32,
            ..Default::default()
        }
    }

    fn state(product: v1::Product) -> v1::StateReady {
        v1::StateReady {
            schema_version: v1::SCHEMA_VERSION,
            run_id: "run-1".to_owned(),
            product: product as i32,
            state: Some(v1::ObjectRef {
                key: product.as_str_name().to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_run_waits_for_its_snapshot_and_then_for_every_product_of_the_run() {
        let now = SystemTime::now();
        let mut join = Join::default();
        join.add_state(state(v1::Product::Jira));
        assert_eq!(
            join.decide(&ALL, TIMEOUT, now),
            Decision::Wait { missing: vec![] }
        );
        join.add_snapshot(snapshot(&[v1::Product::Jira, v1::Product::Bitbucket]), now);
        assert_eq!(
            join.decide(&ALL, TIMEOUT, now),
            Decision::Wait {
                missing: vec![Product::Bitbucket]
            }
        );
        join.add_state(state(v1::Product::Bitbucket));
        let Decision::Plan { products } = join.decide(&ALL, TIMEOUT, now) else {
            panic!("the run is complete");
        };
        let products: Vec<Product> = products.into_iter().map(|(product, _)| product).collect();
        assert_eq!(products, [Product::Jira, Product::Bitbucket]);
    }

    #[test]
    fn a_run_without_products_waits_for_every_enabled_product() {
        let now = SystemTime::now();
        let mut join = Join::default();
        join.add_snapshot(snapshot(&[]), now);
        join.add_state(state(v1::Product::Confluence));
        assert_eq!(
            join.decide(&[Product::Jira, Product::Confluence], TIMEOUT, now),
            Decision::Wait {
                missing: vec![Product::Jira]
            }
        );
    }

    #[test]
    fn a_failed_state_or_a_product_not_enabled_fails_the_run() {
        let now = SystemTime::now();
        let mut join = Join::default();
        join.add_snapshot(snapshot(&[v1::Product::Jira]), now);
        join.add_failure(v1::StateFailed {
            product: v1::Product::Jira as i32,
            reason: "401".to_owned(),
            ..Default::default()
        });
        let Decision::Fail { reason } = join.decide(&ALL, TIMEOUT, now) else {
            panic!("fails");
        };
        assert!(
            reason.contains("jira") && reason.contains("401"),
            "{reason}"
        );

        let mut join = Join::default();
        join.add_snapshot(snapshot(&[v1::Product::Bitbucket]), now);
        let Decision::Fail { reason } = join.decide(&[Product::Jira], TIMEOUT, now) else {
            panic!("fails");
        };
        assert!(reason.contains("bitbucket is not enabled"), "{reason}");
    }

    #[test]
    fn a_state_that_does_not_arrive_in_time_fails_the_run() {
        let start = SystemTime::now();
        let mut join = Join::default();
        join.add_snapshot(snapshot(&[v1::Product::Jira]), start);
        let later = start + TIMEOUT + Duration::from_secs(1);
        let Decision::Fail { reason } = join.decide(&ALL, TIMEOUT, later) else {
            panic!("times out");
        };
        assert!(reason.contains("no state of jira"), "{reason}");
    }

    #[test]
    fn a_complete_snapshot_waits_for_every_part_it_announced() {
        let start = SystemTime::now();
        let mut join = Join::default();
        let mut complete = snapshot(&[v1::Product::Jira]);
        complete.parts = 2;
        join.add_snapshot(complete, start);
        join.add_state(state(v1::Product::Jira));
        join.parts_planned = 1;
        assert_eq!(
            join.decide(&ALL, TIMEOUT, start),
            Decision::Wait { missing: vec![] }
        );
        let later = start + TIMEOUT + Duration::from_secs(1);
        let Decision::Fail { reason } = join.decide(&ALL, TIMEOUT, later) else {
            panic!("times out");
        };
        assert!(reason.contains("1 of the 2 parts"), "{reason}");
        join.parts_planned = 2;
        assert!(matches!(
            join.decide(&ALL, TIMEOUT, start),
            Decision::Plan { .. }
        ));
    }

    #[test]
    fn a_finished_run_is_done_whatever_arrives_later() {
        let now = SystemTime::now();
        let mut join = Join::default();
        join.add_snapshot(snapshot(&[v1::Product::Jira]), now);
        join.status = Status::Planned as i32;
        join.add_state(state(v1::Product::Jira));
        assert_eq!(join.decide(&ALL, TIMEOUT, now), Decision::Done);
        let stored = Join::decode(join.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(stored, join);
    }
}
