//! How far each run's change sets of one product are applied, in the KV bucket
//! `{prefix}-applier` under `{product}.{run_id}`: the sequence of the next set to apply.
//!
//! This is how replicas that share one consumer keep a run's sets in order: a set whose
//! predecessor has not finished is handed back (nak with a delay) and comes again; a set
//! below the mark was finished already (a redelivery after the results were recorded, or
//! a repeated publication) and is acknowledged without touching the product. Once a set is
//! given up (its predecessor never finished), the mark carries the reason, and every later
//! set of the run is skipped with it, so nothing is applied out of dependency order.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use model::state::Product;
use prost::Message;

use crate::Error;

/// How long a mark outlives its last update.
const MARK_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// One run's mark, as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mark {
    /// The sequence of the next set to apply.
    #[prost(uint32, tag = "1")]
    pub next_sequence: u32,
    /// Set when a set was given up: why the rest of the run is skipped.
    #[prost(string, tag = "2")]
    pub skip_reason: String,
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

    /// The run's mark; a run not seen yet starts at sequence 0.
    pub async fn get(&self, run_id: &str) -> Result<Mark, Error> {
        let entry = self
            .store
            .get(self.key(run_id))
            .await
            .map_err(|error| self.error(error))?;
        match entry {
            Some(value) => Mark::decode(value).map_err(|error| self.error(error)),
            None => Ok(Mark::default()),
        }
    }

    pub async fn set(&self, run_id: &str, mark: &Mark) -> Result<(), Error> {
        self.store
            .put(self.key(run_id), Bytes::from(mark.encode_to_vec()))
            .await
            .map_err(|error| self.error(error))?;
        Ok(())
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
