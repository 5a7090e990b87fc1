//! How far each run's change sets of one product are applied, in the KV bucket
//! `{prefix}-applier` under `{product}.{run_id}`: which sets are finished, and when the run
//! last made progress. Every write is a compare-and-set on the entry's revision, so replicas
//! that finish sets of one run at the same time never undo each other's marks.
//!
//! This is how replicas that share one consumer keep a run's sets in dependency order. A set
//! holds the changes of one phase (creations, memberships, removals, …) and names the sets it
//! waits for (`depends_on`: every set of the phases before its own); the sets of one phase
//! may be applied at the same time by any replica. A set whose predecessors are not all
//! finished is handed back (nak with a delay) and comes again. A finished set (a redelivery
//! after its results were recorded, a repeated publication) is acknowledged without touching
//! the product.
//!
//! Waiting is bounded by the predecessors' own progress, not by when the set was published:
//! a replica applying a set touches the mark while it works, and a set gives up only when the
//! run made no progress at all for `sequence_timeout` (its predecessor was lost). The mark
//! then carries the reason, and every set of the run not yet applied fails with it: a change
//! never attempted is reported FAILED, never skipped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use bytes::Bytes;
use model::state::Product;
use prost::Message;

use crate::Error;

/// How long a mark outlives its last update.
const MARK_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many times a compare-and-set is tried again after another replica's write.
const CAS_ATTEMPTS: u32 = 64;

/// One run's mark, as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mark {
    /// How many sets from sequence 0 on are all finished.
    #[prost(uint32, tag = "1")]
    pub next_sequence: u32,
    /// Set when a set was given up: why the rest of the run fails.
    #[prost(string, tag = "2")]
    pub skip_reason: String,
    /// The finished sets, one bit per sequence (bit `s % 8` of byte `s / 8`); marks written
    /// before it existed have only `next_sequence`.
    #[prost(bytes = "vec", tag = "3")]
    pub finished: Vec<u8>,
    /// When a replica last finished a set of the run or reported that it is working on one,
    /// in seconds since the Unix epoch.
    #[prost(uint64, tag = "4")]
    pub touched_at: u64,
}

impl Mark {
    /// Whether set `sequence` is finished.
    pub fn is_finished(&self, sequence: u32) -> bool {
        sequence < self.next_sequence
            || self
                .finished
                .get((sequence / 8) as usize)
                .is_some_and(|byte| byte & (1 << (sequence % 8)) != 0)
    }

    /// Whether every set below `sequence` is finished.
    pub fn all_finished_below(&self, sequence: u32) -> bool {
        self.next_sequence >= sequence
    }

    /// Records set `sequence` as finished, and moves `next_sequence` past every finished set.
    fn finish(&mut self, sequence: u32) {
        let byte = (sequence / 8) as usize;
        if self.finished.len() <= byte {
            self.finished.resize(byte + 1, 0);
        }
        self.finished[byte] |= 1 << (sequence % 8);
        // Bits of marks written before the bitset existed.
        for below in 0..self.next_sequence.min(sequence) {
            let byte = (below / 8) as usize;
            self.finished[byte] |= 1 << (below % 8);
        }
        while self.is_bit_set(self.next_sequence) {
            self.next_sequence += 1;
        }
    }

    fn is_bit_set(&self, sequence: u32) -> bool {
        self.finished
            .get((sequence / 8) as usize)
            .is_some_and(|byte| byte & (1 << (sequence % 8)) != 0)
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[derive(Clone)]
pub struct Progress {
    store: kv::Store,
    product: Product,
}

impl Progress {
    pub async fn open(bus: &bus::Bus, product: Product) -> Result<Progress, Error> {
        let retention = bus::runs::Retention {
            history: 1,
            max_age: MARK_MAX_AGE,
        };
        let store = bus
            .key_value(
                &bus.topology().applier_bucket(),
                "The appliers' progress through each run's change sets.",
                retention,
            )
            .await
            .map_err(|error| Error::Kv {
                bucket: bus.topology().applier_bucket(),
                source: Box::new(error),
            })?;
        Ok(Progress { store, product })
    }

    /// The run's mark, and whether it exists; a run not seen yet has an empty one.
    pub async fn get(&self, run_id: &str) -> Result<(Mark, bool), Error> {
        Ok(match self.entry(run_id).await? {
            Some((mark, _)) => (mark, true),
            None => (Mark::default(), false),
        })
    }

    /// Records set `sequence` as finished (and `skip_reason`, when the run gives up).
    pub async fn finish(
        &self,
        run_id: &str,
        sequence: u32,
        skip_reason: Option<&str>,
    ) -> Result<Mark, Error> {
        self.modify(run_id, |mark| {
            mark.finish(sequence);
            if let Some(reason) = skip_reason
                && mark.skip_reason.is_empty()
            {
                mark.skip_reason = reason.to_owned();
            }
        })
        .await
    }

    /// Records that the run is making progress: a replica is working on one of its sets.
    pub async fn touch(&self, run_id: &str) -> Result<Mark, Error> {
        self.modify(run_id, |_| {}).await
    }

    /// Reads, changes and writes the run's mark with compare-and-set, again after another
    /// replica's write, and stamps it with the time.
    async fn modify(&self, run_id: &str, change: impl Fn(&mut Mark)) -> Result<Mark, Error> {
        let key = self.key(run_id);
        for _ in 0..CAS_ATTEMPTS {
            let current = self.entry(run_id).await?;
            let (mut mark, revision) = current.unwrap_or_default();
            change(&mut mark);
            mark.touched_at = now_unix();
            let value = Bytes::from(mark.encode_to_vec());
            let written = if revision == 0 {
                self.store
                    .create(&key, value)
                    .await
                    .map_err(|error| match error.kind() {
                        kv::CreateErrorKind::AlreadyExists => None,
                        _ => Some(self.error(error)),
                    })
            } else {
                self.store
                    .update(&key, value, revision)
                    .await
                    .map_err(|error| match error.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => None,
                        _ => Some(self.error(error)),
                    })
            };
            match written {
                Ok(_) => return Ok(mark),
                Err(None) => continue,
                Err(Some(error)) => return Err(error),
            }
        }
        Err(Error::Kv {
            bucket: self.store.name.clone(),
            source: format!(
                "the mark of run {run_id} kept changing under {CAS_ATTEMPTS} attempts to write it"
            )
            .into(),
        })
    }

    /// The stored mark and its revision; `None` for none (or a deleted one).
    async fn entry(&self, run_id: &str) -> Result<Option<(Mark, u64)>, Error> {
        let entry = self
            .store
            .entry(self.key(run_id))
            .await
            .map_err(|error| self.error(error))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let mark = Mark::decode(entry.value).map_err(|error| self.error(error))?;
                Ok(Some((mark, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// The lock on the product's cached state, in the same bucket.
    pub fn cache_lock(&self) -> crate::cache_lock::CacheLock {
        crate::cache_lock::CacheLock::new(self.store.clone(), self.product)
    }

    fn key(&self, run_id: &str) -> String {
        format!("{}.{run_id}", self.product)
    }

    fn error(&self, error: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Kv {
            bucket: self.store.name.clone(),
            source: Box::new(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finishing_sets_out_of_order_moves_the_prefix_only_over_finished_sets() {
        let mut mark = Mark::default();
        mark.finish(2);
        assert_eq!(mark.next_sequence, 0);
        assert!(mark.is_finished(2) && !mark.is_finished(1));
        mark.finish(0);
        assert_eq!(mark.next_sequence, 1);
        mark.finish(1);
        assert_eq!(mark.next_sequence, 3);
        assert!(mark.all_finished_below(3) && !mark.all_finished_below(4));
        mark.finish(17);
        assert_eq!(mark.next_sequence, 3);
        assert!(mark.is_finished(17) && !mark.is_finished(16));
    }

    #[test]
    fn a_mark_written_before_the_bitset_keeps_its_prefix() {
        let mut mark = Mark {
            next_sequence: 5,
            ..Mark::default()
        };
        assert!(mark.is_finished(4) && !mark.is_finished(5));
        mark.finish(6);
        assert_eq!(mark.next_sequence, 5);
        mark.finish(5);
        assert_eq!(mark.next_sequence, 7);
    }
}
