//! Each connector's base: the last full snapshot the fetcher stored for it, which the
//! delta of an event run applies to (`SnapshotReady.base`). A pointer, the encoded
//! `v1::ObjectRef`, under the key `base.{connector}` of the key-value bucket
//! `{prefix}-follower`, written after every full fetch's snapshot is stored and before it
//! is announced, so a delta announced later never applies to an older snapshot.
//!
//! Beside it, `groups-named.{connector}` holds the checksum of the base an event run last
//! named a group on ([`Bases::groups_named_since`]): from then on, every delta on that base
//! carries the group tree as Keycloak has it now.
//!
//! And `last-delta.{connector}` names the last delta stored on a base, for the next delta
//! to carry what it read (`crate::carry`).
//!
//! The object itself is kept for `snapshot_retention_hours` only: [`Bases::get`] answers a
//! pointer only while its object is still stored with the pointer's checksum, and an event
//! run without one reads the whole realm instead.

use async_nats::jetstream::{kv, object_store};
use bus::{Bus, runs::KeyValueError};
use prost::Message as _;
use proto::v1;

use crate::follow::follower_bucket;

/// Why a base pointer could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error(transparent)]
    Bucket(#[from] Box<KeyValueError>),
    #[error("reading the base snapshot of connector {connector} from bucket {bucket}")]
    Load {
        connector: String,
        bucket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("storing the base snapshot of connector {connector} in bucket {bucket}")]
    Store {
        connector: String,
        bucket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The base pointers of every connector.
#[derive(Clone)]
pub struct Bases {
    bus: Bus,
    bucket: kv::Store,
}

impl Bases {
    /// The pointers in `bus`'s bucket `{prefix}-follower`, created if missing.
    pub async fn open(bus: &Bus) -> Result<Bases, BaseError> {
        Ok(Bases {
            bus: bus.clone(),
            bucket: follower_bucket(bus).await?,
        })
    }

    /// The value under `key` of `connector`'s pointers, if any.
    async fn read(&self, connector: &str, key: String) -> Result<Option<Vec<u8>>, BaseError> {
        // The values are small: an object reference or a checksum.
        self.bucket
            .get(key)
            .await
            .map(|value| value.map(|value| value.to_vec()))
            .map_err(|error| self.load_error(connector, Box::new(error)))
    }

    /// Writes `value` under `key` of `connector`'s pointers.
    async fn write(&self, connector: &str, key: String, value: Vec<u8>) -> Result<(), BaseError> {
        self.bucket
            .put(key, value.into())
            .await
            .map_err(|error| BaseError::Store {
                connector: connector.to_owned(),
                bucket: self.bucket.name.clone(),
                source: Box::new(error),
            })?;
        Ok(())
    }

    fn load_error(
        &self,
        connector: &str,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> BaseError {
        BaseError::Load {
            connector: connector.to_owned(),
            bucket: self.bucket.name.clone(),
            source,
        }
    }

    /// The last full snapshot of `connector`, while it is still stored as the pointer
    /// names it; `None` when there was none or it is gone (expired, replaced).
    pub async fn get(&self, connector: &str) -> Result<Option<v1::ObjectRef>, BaseError> {
        let load_error = |source| self.load_error(connector, source);
        let Some(value) = self.read(connector, key(connector)).await? else {
            return Ok(None);
        };
        let base =
            v1::ObjectRef::decode(value.as_ref()).map_err(|error| load_error(Box::new(error)))?;
        let stored = if self.deleted(&base).await.map_err(load_error)? {
            None
        } else {
            self.bus
                .object_sha256(&base.bucket, &base.key)
                .await
                .map_err(|error| load_error(Box::new(error)))?
        };
        match stored {
            Some(sha256) if sha256.eq_ignore_ascii_case(&base.sha256) => Ok(Some(base)),
            Some(_) => {
                tracing::info!(
                    connector,
                    key = %base.key,
                    "The last full snapshot was replaced since it was stored."
                );
                Ok(None)
            }
            None => {
                tracing::info!(
                    connector,
                    key = %base.key,
                    "The last full snapshot is no longer stored (expired or deleted)."
                );
                Ok(None)
            }
        }
    }

    /// Whether the object `base` names was deleted: its metadata stays, marked deleted,
    /// and `Bus::object_sha256` still answers the digest it had.
    async fn deleted(
        &self,
        base: &v1::ObjectRef,
    ) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
        let store = self.bus.object_store(&base.bucket).await?;
        match store.info(&base.key).await {
            Ok(info) => Ok(info.deleted),
            Err(error) if error.kind() == object_store::InfoErrorKind::NotFound => Ok(true),
            Err(error) => Err(Box::new(error)),
        }
    }

    /// Records `snapshot` as the last full snapshot of `connector`.
    pub async fn put(&self, connector: &str, snapshot: &v1::ObjectRef) -> Result<(), BaseError> {
        self.write(connector, key(connector), snapshot.encode_to_vec())
            .await
    }
}

impl Bases {
    /// Whether an event run named a group since `base` was stored: the group tree may then
    /// differ from the base's, and every later delta on that base carries the tree
    /// (`SnapshotReady.base` stays the last full snapshot, which each delta is applied to
    /// alone). Without this, a delta that names only users would be planned with the
    /// base's tree: after a group was renamed, its members' memberships would map to the
    /// old name again.
    pub async fn groups_named_since(
        &self,
        connector: &str,
        base: &v1::ObjectRef,
    ) -> Result<bool, BaseError> {
        let value = self.read(connector, groups_key(connector)).await?;
        Ok(value.is_some_and(|value| value.eq_ignore_ascii_case(base.sha256.as_bytes())))
    }

    /// Records that an event run on `base` named a group ([`Bases::groups_named_since`]),
    /// before its delta is announced.
    pub async fn mark_groups_named(
        &self,
        connector: &str,
        base: &v1::ObjectRef,
    ) -> Result<(), BaseError> {
        self.write(
            connector,
            groups_key(connector),
            base.sha256.clone().into_bytes(),
        )
        .await
    }
}

/// The value of `last-delta.{connector}`: the last delta stored, and its base's checksum.
#[derive(Clone, PartialEq, prost::Message)]
struct LastDelta {
    #[prost(string, tag = "1")]
    base_sha256: String,
    #[prost(message, optional, tag = "2")]
    delta: Option<v1::ObjectRef>,
}

impl Bases {
    /// The last delta stored on `base` (`crate::carry`); `None` when the last one was on
    /// another base, or there was none.
    pub async fn last_delta(
        &self,
        connector: &str,
        base: &v1::ObjectRef,
    ) -> Result<Option<v1::ObjectRef>, BaseError> {
        let Some(value) = self.read(connector, last_delta_key(connector)).await? else {
            return Ok(None);
        };
        let last = LastDelta::decode(value.as_ref())
            .map_err(|error| self.load_error(connector, Box::new(error)))?;
        Ok(last
            .base_sha256
            .eq_ignore_ascii_case(&base.sha256)
            .then_some(last.delta)
            .flatten())
    }

    /// Records `delta` as the last delta stored on `base`, before it is announced.
    pub async fn mark_last_delta(
        &self,
        connector: &str,
        base: &v1::ObjectRef,
        delta: &v1::ObjectRef,
    ) -> Result<(), BaseError> {
        let value = LastDelta {
            base_sha256: base.sha256.clone(),
            delta: Some(delta.clone()),
        };
        self.write(connector, last_delta_key(connector), value.encode_to_vec())
            .await
    }
}

/// The key of the last delta stored ([`Bases::mark_last_delta`]).
fn last_delta_key(connector: &str) -> String {
    format!("last-delta.{connector}")
}

/// The key under which the checksum of the base a group was named on is kept
/// ([`Bases::mark_groups_named`]).
fn groups_key(connector: &str) -> String {
    format!("groups-named.{connector}")
}

/// The key of a connector's pointer; connector names are lower-case letters, digits, `-`
/// and `_` (the settings check it), all valid in a key.
fn key(connector: &str) -> String {
    format!("base.{connector}")
}
