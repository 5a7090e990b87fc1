//! The event follower's core (#16): for one Keycloak connector, read the admin and user
//! events after the stored watermarks, gather a burst, read again what they named
//! ([`keycloak::client::Client::read_delta`]) and say what to do: nothing, a delta, or a
//! full sync (the first start, a gap in the watermark, an event that can change anyone).
//!
//! The watermarks live in the key-value bucket `{prefix}-follower`, one key per connector,
//! and move only when the caller [`Follower::commit`]s a poll after acting on it: a
//! follower stopped in between reads the same events again after its restart (duplicates
//! are harmless: a delta is re-read from Keycloak, never taken from the events), and one
//! stopped for a while reads everything that happened meanwhile. Nothing is lost and a
//! storm is not replayed.
//!
//! No service runs it yet: publishing the delta and planning it (`model::delta`) is the
//! next step.

use std::time::Duration;

use async_nats::jetstream::kv;
use bus::{
    Bus,
    runs::{KeyValueError, Retention},
};
use keycloak::{
    client::Client,
    events::{Touched, Watermark},
};
use model::delta::Delta;
use serde::{Deserialize, Serialize};

/// Why the follower could not read or keep its place.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Bucket(#[from] Box<KeyValueError>),
    #[error("reading the watermark of connector {connector} from bucket {bucket}")]
    Load {
        connector: String,
        bucket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("storing the watermark of connector {connector} in bucket {bucket}")]
    Store {
        connector: String,
        bucket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("reading the events of connector {connector}")]
    Keycloak {
        connector: String,
        #[source]
        source: keycloak::Error,
    },
}

/// Where the follower of one connector is in both event listings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermarks {
    #[serde(default)]
    pub admin: Watermark,
    #[serde(default)]
    pub user: Watermark,
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// No event that changes what keysync syncs.
    Nothing,
    /// The users and groups the events named, as Keycloak has them now.
    Delta {
        delta: Delta,
        /// How many events named them.
        events: usize,
    },
    /// Only a full sync will do, for this reason.
    FullSync { reason: String },
}

/// A poll's finding, and the watermarks to store once it is acted on.
#[derive(Debug, Clone)]
pub struct Pending {
    pub followed: Followed,
    watermarks: Watermarks,
}

/// The follower of one connector.
pub struct Follower {
    client: Client,
    connector: String,
    bucket: kv::Store,
    batch_window: Duration,
}

impl Follower {
    /// The follower of `connector` (read with `client`), its watermark in `bus`'s bucket
    /// `{prefix}-follower`; a burst is gathered for `batch_window` after its first event.
    pub async fn open(
        bus: &Bus,
        connector: &str,
        client: Client,
        batch_window: Duration,
    ) -> Result<Follower, FollowError> {
        let bucket = bus
            .key_value(
                &format!("{}-follower", bus.topology().prefix()),
                "keysync: where each connector's event follower is in Keycloak's events",
                Retention {
                    history: 1,
                    max_age: Duration::ZERO,
                },
            )
            .await
            .map_err(Box::new)?;
        Ok(Follower {
            client,
            connector: connector.to_owned(),
            bucket,
            batch_window,
        })
    }

    /// The stored watermarks; empty before the first commit.
    pub async fn watermarks(&self) -> Result<Watermarks, FollowError> {
        let load_error = |source: Box<dyn std::error::Error + Send + Sync>| FollowError::Load {
            connector: self.connector.clone(),
            bucket: self.bucket.name.clone(),
            source,
        };
        match self
            .bucket
            .get(&self.connector)
            .await
            .map_err(|error| load_error(Box::new(error)))?
        {
            None => Ok(Watermarks::default()),
            Some(value) => {
                serde_json::from_slice(&value).map_err(|error| load_error(Box::new(error)))
            }
        }
    }

    /// Reads the events after the stored watermarks (and, once one came, those of the
    /// batching window after it) and what they named. Stores nothing: see
    /// [`Follower::commit`].
    pub async fn poll(&self) -> Result<Pending, FollowError> {
        let mut watermarks = self.watermarks().await?;
        let (mut touched, mut events) = self.read(&mut watermarks).await?;
        if !touched.is_empty() && touched.full_sync.is_none() && !self.batch_window.is_zero() {
            tokio::time::sleep(self.batch_window).await;
            let (more, more_events) = self.read(&mut watermarks).await?;
            touched.merge(more);
            events += more_events;
        }
        let followed = if let Some(reason) = touched.full_sync.take() {
            Followed::FullSync { reason }
        } else if touched.is_empty() {
            Followed::Nothing
        } else {
            let delta = self
                .client
                .read_delta(&touched)
                .await
                .map_err(|source| self.keycloak_error(source))?;
            Followed::Delta { delta, events }
        };
        Ok(Pending {
            followed,
            watermarks,
        })
    }

    /// Stores the watermarks of `pending`, once what it found was acted on.
    pub async fn commit(&self, pending: &Pending) -> Result<(), FollowError> {
        let store_error = |source: Box<dyn std::error::Error + Send + Sync>| FollowError::Store {
            connector: self.connector.clone(),
            bucket: self.bucket.name.clone(),
            source,
        };
        let value = serde_json::to_vec(&pending.watermarks)
            .map_err(|error| store_error(Box::new(error)))?;
        self.bucket
            .put(&self.connector, value.into())
            .await
            .map_err(|error| store_error(Box::new(error)))?;
        Ok(())
    }

    /// The events after `watermarks`, advancing them; what they touched and how many.
    async fn read(&self, watermarks: &mut Watermarks) -> Result<(Touched, usize), FollowError> {
        let admin = self
            .client
            .admin_events_since(&watermarks.admin)
            .await
            .map_err(|source| self.keycloak_error(source))?;
        let user = self
            .client
            .user_events_since(&watermarks.user)
            .await
            .map_err(|source| self.keycloak_error(source))?;
        let mut touched = admin.touched();
        touched.merge(user.touched());
        watermarks.admin = admin.watermark;
        watermarks.user = user.watermark;
        Ok((touched, admin.events.len() + user.events.len()))
    }

    fn keycloak_error(&self, source: keycloak::Error) -> FollowError {
        FollowError::Keycloak {
            connector: self.connector.clone(),
            source,
        }
    }
}
