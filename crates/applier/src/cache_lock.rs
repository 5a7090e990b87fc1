//! The lock every applier replica of one product takes to write the base of the product's
//! cached state: a key `lock.{product}` in the appliers' KV bucket, taken by creating it and
//! given back by deleting exactly the revision taken (compare-and-set both ways). A refresh
//! and a fold of the state journal are written as load, change, store under it, so a fold
//! never stores over a refresh's new base (a change set's records are journal entries,
//! appended without it). The holder renews its
//! lease every third of [`LEASE`] while it holds the lock, however long the store takes; a
//! holder that died leaves the key behind, which expires after [`LEASE`], and the next
//! replica takes it over with compare-and-set on the expired entry, so a replica killed while
//! it held the lock stalls the others for [`LEASE`] at most.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use bytes::Bytes;
use model::state::Product;
use prost::Message;

use crate::Error;

/// How long a lock that is not renewed lasts before another replica takes it over.
const LEASE: Duration = Duration::from_secs(15);

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
    lease: Duration,
}

/// The lock, held and renewed until [`Guard::release`].
pub struct Guard {
    store: kv::Store,
    key: String,
    /// The revision of the entry this holder wrote last.
    revision: Arc<AtomicU64>,
    renewing: tokio::task::JoinHandle<()>,
    /// Stops the renewals between two of them.
    stop: tokio::sync::oneshot::Sender<()>,
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
            lease: LEASE,
        }
    }

    /// Takes the lock, waiting while another replica holds it.
    pub async fn acquire(&self) -> Result<Guard, Error> {
        let deadline = tokio::time::Instant::now() + ACQUIRE_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            let value = self.value();
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
                let revision = Arc::new(AtomicU64::new(revision));
                let (stop, stopped) = tokio::sync::oneshot::channel();
                return Ok(Guard {
                    store: self.store.clone(),
                    key: self.key.clone(),
                    renewing: tokio::spawn(self.clone().renew(Arc::clone(&revision), stopped)),
                    revision,
                    stop,
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

    /// This holder's entry, expiring one lease from now.
    fn value(&self) -> Bytes {
        Bytes::from(
            Holder {
                holder: self.holder.clone(),
                expires_at_ms: now_ms().saturating_add(self.lease.as_millis() as u64),
            }
            .encode_to_vec(),
        )
    }

    /// Extends the lease every third of [`LEASE`], with compare-and-set on the revision
    /// written last; stops when the entry is no longer this holder's.
    async fn renew(
        self,
        revision: Arc<AtomicU64>,
        mut stopped: tokio::sync::oneshot::Receiver<()>,
    ) {
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                () = tokio::time::sleep(self.lease / 3) => {}
            }
            let last = revision.load(Ordering::Acquire);
            match self.store.update(&self.key, self.value(), last).await {
                Ok(next) => revision.store(next, Ordering::Release),
                Err(error) => {
                    tracing::warn!(%error, "Could not renew the cache lock.");
                    return;
                }
            }
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
        // A renewal under way finishes first, so the revision is the one written last.
        let _ = self.stop.send(());
        if let Err(error) = self.renewing.await {
            tracing::debug!(%error, "The cache lock's renewals ended badly.");
        }
        let revision = self.revision.load(Ordering::Acquire);
        if let Err(error) = self
            .store
            .delete_expect_revision(&self.key, Some(revision))
            .await
        {
            tracing::debug!(%error, "The cache lock was not ours to give back any more.");
        }
    }
}

#[cfg(test)]
mod tests {
    use test_support::nats::NatsServer;

    use super::*;

    async fn lock(nats: &NatsServer, holder: &str) -> CacheLock {
        let bus = bus::Bus::connect(&nats.url(), bus::Topology::new("lock"))
            .await
            .expect("bus");
        let store = bus
            .key_value(
                "lock-applier",
                "locks",
                bus::runs::Retention {
                    history: 1,
                    max_age: Duration::from_secs(60),
                },
            )
            .await
            .expect("bucket");
        CacheLock {
            holder: holder.to_owned(),
            lease: Duration::from_millis(300),
            ..CacheLock::new(store, Product::Jira)
        }
    }

    #[tokio::test]
    async fn a_held_lock_is_renewed_past_its_lease_and_a_dead_holders_lock_is_taken_over() {
        let nats = NatsServer::start().expect("nats-server");
        let (first, second) = (lock(&nats, "first").await, lock(&nats, "second").await);

        // Held for five leases: renewed, so the other replica does not get it.
        let guard = first.acquire().await.expect("the first takes the lock");
        let waiting = tokio::time::timeout(Duration::from_millis(1_500), second.acquire()).await;
        assert!(waiting.is_err(), "the lock was taken while it was held");
        guard.release().await;
        let taken = tokio::time::timeout(Duration::from_secs(5), second.acquire())
            .await
            .expect("given back, the lock is taken at once")
            .expect("no error");

        // A holder that dies (its renewals stop) loses the lock once the lease is over.
        taken.renewing.abort();
        std::mem::forget(taken.stop);
        let took_over = tokio::time::timeout(Duration::from_secs(5), first.acquire())
            .await
            .expect("a dead holder's lock is taken over after the lease")
            .expect("no error");
        took_over.release().await;
    }
}
