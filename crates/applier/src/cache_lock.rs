//! The lock every applier replica of one product takes to write the product's cached state:
//! a key `lock.{product}` in the appliers' KV bucket, taken by creating it and given back by
//! deleting exactly the revision taken (compare-and-set both ways). A change set's successes
//! and a refresh are written as load, change, store under it, so replicas that apply sets of
//! one phase at the same time never store over each other's records. A holder that died
//! leaves the key behind; it expires after [`LEASE`], and the next replica takes it over with
//! compare-and-set on the expired entry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use bytes::Bytes;
use model::state::Product;
use prost::Message;

use crate::Error;

/// How long a holder may keep the lock before another replica takes it over: far longer
/// than a load and a store of the largest state take.
const LEASE: Duration = Duration::from_secs(120);

/// How long [`CacheLock::acquire`] waits for the lock before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(600);

/// Who holds the lock, as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct Holder {
    #[prost(string, tag = "1")]
    holder: String,
    /// Milliseconds since the Unix epoch.
    #[prost(uint64, tag = "2")]
    expires_at_ms: u64,
}

/// The cache lock of one product.
#[derive(Clone)]
pub struct CacheLock {
    store: kv::Store,
    key: String,
    holder: String,
}

/// The lock, held until [`Guard::release`] (or until it expires).
pub struct Guard {
    store: kv::Store,
    key: String,
    revision: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

impl CacheLock {
    pub fn new(store: kv::Store, product: Product) -> CacheLock {
        CacheLock {
            store,
            key: format!("lock.{product}"),
            holder: format!("{}-{}", std::process::id(), now_ms()),
        }
    }

    /// Takes the lock, waiting while another replica holds it.
    pub async fn acquire(&self) -> Result<Guard, Error> {
        let deadline = tokio::time::Instant::now() + ACQUIRE_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            let value = Bytes::from(
                Holder {
                    holder: self.holder.clone(),
                    expires_at_ms: now_ms().saturating_add(LEASE.as_millis() as u64),
                }
                .encode_to_vec(),
            );
            let entry = self
                .store
                .entry(&self.key)
                .await
                .map_err(|e| self.error(e))?;
            let taken = match entry {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    let expired = Holder::decode(entry.value)
                        .map_or(true, |holder| holder.expires_at_ms <= now_ms());
                    if expired {
                        self.store
                            .update(&self.key, value, entry.revision)
                            .await
                            .ok()
                    } else {
                        None
                    }
                }
                _ => match self.store.create(&self.key, value).await {
                    Ok(revision) => Some(revision),
                    Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => None,
                    Err(error) => return Err(self.error(error)),
                },
            };
            if let Some(revision) = taken {
                return Ok(Guard {
                    store: self.store.clone(),
                    key: self.key.clone(),
                    revision,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Kv {
                    bucket: self.store.name.clone(),
                    source: format!(
                        "the lock {} stayed taken for {} s",
                        self.key,
                        ACQUIRE_TIMEOUT.as_secs()
                    )
                    .into(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    fn error(&self, error: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Kv {
            bucket: self.store.name.clone(),
            source: Box::new(error),
        }
    }
}

impl Guard {
    /// Gives the lock back: deletes the entry if it is still the one taken (a holder whose
    /// lease expired and was taken over deletes nothing).
    pub async fn release(self) {
        if let Err(error) = self
            .store
            .delete_expect_revision(&self.key, Some(self.revision))
            .await
        {
            tracing::debug!(%error, "The cache lock was not ours to give back any more.");
        }
    }
}
