//! Which products have a running applier: each applier replica announces itself in the
//! key-value bucket `{prefix}-appliers` every [`ANNOUNCE_INTERVAL`] (key
//! `{product}.{instance}`), and the bucket forgets a value [`ALIVE_FOR`] after it was
//! written, so a product whose every replica stopped (or never started) has no key.
//!
//! The control plane reads it to fail an APPLYING run that waits on a product nobody
//! applies, with that reason, long before the run's apply deadline
//! (`control_plane::deadlines`). It cannot read the appliers' consumers instead: its NATS
//! user may not (deploy/nats/accounts.conf).

use std::{collections::BTreeSet, time::Duration};

use async_nats::jetstream::kv;
use futures::TryStreamExt;

use crate::{
    Bus, Topology,
    runs::{KeyValueError, Retention},
};

/// How often a running applier announces itself.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(10);

/// How long an announcement counts: three missed announcements and the replica is gone.
pub const ALIVE_FOR: Duration = Duration::from_secs(30);

/// Why the announcements could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LivenessError {
    #[error(transparent)]
    Bucket(#[from] KeyValueError),
    #[error("announcing applier {key} in bucket {bucket}")]
    Announce {
        bucket: String,
        key: String,
        #[source]
        source: kv::PutError,
    },
    #[error("listing the appliers in bucket {bucket}")]
    List {
        bucket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Topology {
    /// The appliers' announcements, `{prefix}-appliers`: key = `{product}.{instance}`.
    pub fn appliers_bucket(&self) -> String {
        format!("{}-appliers", self.prefix)
    }
}

/// The announcements bucket of `bus`, created if missing.
async fn bucket(bus: &Bus) -> Result<kv::Store, KeyValueError> {
    bus.key_value(
        &bus.topology().appliers_bucket(),
        "keysync: the applier replicas running now, by product",
        Retention {
            history: 1,
            max_age: ALIVE_FOR,
        },
    )
    .await
}

/// One applier replica's announcements.
pub struct Announcer {
    store: kv::Store,
    key: String,
}

impl Announcer {
    /// The announcer of replica `instance` (letters, digits, `-`, `_`) of `product`'s
    /// applier.
    pub async fn open(
        bus: &Bus,
        product: &str,
        instance: &str,
    ) -> Result<Announcer, LivenessError> {
        Ok(Announcer {
            store: bucket(bus).await?,
            key: format!("{product}.{instance}"),
        })
    }

    /// Says the replica is running, for the next [`ALIVE_FOR`].
    pub async fn announce(&self) -> Result<(), LivenessError> {
        self.store
            .put(&self.key, bytes::Bytes::new())
            .await
            .map(|_| ())
            .map_err(|source| LivenessError::Announce {
                bucket: self.store.name.clone(),
                key: self.key.clone(),
                source,
            })
    }

    /// Says the replica stopped: its product may have no applier from now on.
    pub async fn withdraw(&self) {
        if let Err(error) = self.store.delete(&self.key).await {
            tracing::debug!(error = %error, "Could not withdraw the applier's announcement.");
        }
    }
}

/// The products with at least one applier replica announced within [`ALIVE_FOR`].
pub async fn live_products(bus: &Bus) -> Result<BTreeSet<String>, LivenessError> {
    let store = bucket(bus).await?;
    let list_error = |source: Box<dyn std::error::Error + Send + Sync>| LivenessError::List {
        bucket: store.name.clone(),
        source,
    };
    let keys: Vec<String> = store
        .keys()
        .await
        .map_err(|error| list_error(Box::new(error)))?
        .try_collect()
        .await
        .map_err(|error| list_error(Box::new(error)))?;
    Ok(keys
        .iter()
        .filter_map(|key| key.split_once('.').map(|(product, _)| product.to_owned()))
        .collect())
}
