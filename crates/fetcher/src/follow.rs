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
//! The fetcher runs it ([`crate::observe`]) with [`Follower::poll_named`], which reads
//! nothing again: the event run's fetch does that later.

use std::{collections::BTreeSet, time::Duration};

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

/// What one poll found, without reading anything again ([`Follower::poll_named`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// No event that changes what keysync syncs.
    Nothing,
    /// The ids of the users and groups the events named; at least one.
    Ids {
        users: BTreeSet<String>,
        groups: BTreeSet<String>,
        /// How many events named them.
        events: usize,
    },
    /// Only a full sync will do, for this reason.
    FullSync { reason: String },
}

/// A poll's finding, and the watermarks to store once it is acted on.
#[derive(Debug, Clone)]
pub struct Pending<F = Followed> {
    pub followed: F,
    watermarks: Watermarks,
    /// The stored watermarks the poll started from.
    start: Watermarks,
    /// False when a listing was cut short ([`keycloak::events::MAX_BATCH_EVENTS`]): more
    /// events wait, and the next poll should not wait for the poll interval.
    complete: bool,
}

impl<F> Pending<F> {
    /// Whether the poll read every event there was (see the field).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// The watermarks [`Follower::commit`] stores.
    pub fn watermarks(&self) -> &Watermarks {
        &self.watermarks
    }

    /// Whether the poll read past the stored watermarks (else a commit changes nothing).
    pub fn advanced(&self) -> bool {
        self.watermarks != self.start
    }
}

/// The events of one poll, gathered, before anything is read again.
struct Gathered {
    touched: Touched,
    events: usize,
    watermarks: Watermarks,
    start: Watermarks,
    complete: bool,
}

/// The key-value bucket `{prefix}-follower`: each connector's watermarks (key = the
/// connector) and the pointer to its last full snapshot (`base.{connector}`,
/// [`crate::base`]). Created if missing.
pub(crate) async fn follower_bucket(bus: &Bus) -> Result<kv::Store, Box<KeyValueError>> {
    bus.key_value(
        &format!("{}-follower", bus.topology().prefix()),
        "keysync: where each connector's event follower is in Keycloak's events, and each \
         connector's last full snapshot",
        Retention {
            history: 1,
            max_age: Duration::ZERO,
        },
    )
    .await
    .map_err(Box::new)
}

/// After a poll that asks for a full sync: a listing whose watermark did not move keeps no
/// event key. A gap (`keycloak::events::gap`) is the watermark's own events no longer
/// stored; left as it is, every later poll would find the same gap and ask for a full
/// sync again. The full sync covers whatever the gap lost, so the next read starts at the
/// watermark's time with nothing to find there.
fn forget_lost_keys(watermarks: &mut Watermarks, start: &Watermarks) {
    for (now, before) in [
        (&mut watermarks.admin, &start.admin),
        (&mut watermarks.user, &start.user),
    ] {
        if now == before {
            now.keys.clear();
        }
    }
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
        let bucket = follower_bucket(bus).await?;
        Ok(Follower {
            client,
            connector: connector.to_owned(),
            bucket,
            batch_window,
        })
    }

    /// What the realm lacks for its events to be followed (see
    /// `keycloak::client::Client::check_events`); empty when it saves every event needed.
    pub async fn check_events(&self) -> Result<Vec<String>, keycloak::Error> {
        self.client.check_events().await
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
        let Gathered {
            mut touched,
            events,
            watermarks,
            start,
            complete,
        } = self.gather().await?;
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
            start,
            complete,
        })
    }

    /// As [`Follower::poll`], but answers only the ids the events named: nothing is read
    /// again, since the event run that follows reads them anyway.
    pub async fn poll_named(&self) -> Result<Pending<Named>, FollowError> {
        let Gathered {
            touched,
            events,
            watermarks,
            start,
            complete,
        } = self.gather().await?;
        let followed = match touched {
            Touched {
                full_sync: Some(reason),
                ..
            } => Named::FullSync { reason },
            Touched { users, groups, .. } if users.is_empty() && groups.is_empty() => {
                Named::Nothing
            }
            Touched { users, groups, .. } => Named::Ids {
                users,
                groups,
                events,
            },
        };
        Ok(Pending {
            followed,
            watermarks,
            start,
            complete,
        })
    }

    /// The events after the stored watermarks, and those of the batching window after the
    /// first one.
    async fn gather(&self) -> Result<Gathered, FollowError> {
        let start = self.watermarks().await?;
        let mut watermarks = start.clone();
        let (mut touched, mut events, mut complete) = self.read(&mut watermarks).await?;
        // A backlog (a listing cut short) is gathered at once, without a batching window.
        if complete
            && !touched.is_empty()
            && touched.full_sync.is_none()
            && !self.batch_window.is_zero()
        {
            tokio::time::sleep(self.batch_window).await;
            let (more, more_events, more_complete) = self.read(&mut watermarks).await?;
            touched.merge(more);
            events += more_events;
            complete = more_complete;
        }
        if touched.full_sync.is_some() {
            forget_lost_keys(&mut watermarks, &start);
        }
        Ok(Gathered {
            touched,
            events,
            watermarks,
            start,
            complete,
        })
    }

    /// Stores the watermarks of `pending`, once what it found was acted on.
    pub async fn commit<F>(&self, pending: &Pending<F>) -> Result<(), FollowError> {
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

    /// The events after `watermarks`, advancing them; what they touched, how many, and
    /// whether both listings were read to their end.
    async fn read(
        &self,
        watermarks: &mut Watermarks,
    ) -> Result<(Touched, usize, bool), FollowError> {
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
        Ok((
            touched,
            admin.events.len() + user.events.len(),
            admin.complete && user.complete,
        ))
    }

    fn keycloak_error(&self, source: keycloak::Error) -> FollowError {
        FollowError::Keycloak {
            connector: self.connector.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn mark(time: i64, keys: &[&str]) -> Watermark {
        Watermark {
            time: Some(time),
            keys: keys
                .iter()
                .map(|key| (*key).to_owned())
                .collect::<BTreeSet<_>>(),
        }
    }

    #[test]
    fn a_full_sync_forgets_the_keys_of_a_watermark_that_did_not_move() {
        let start = Watermarks {
            admin: mark(5, &["lost"]),
            user: mark(7, &["u1"]),
        };
        // The admin listing found nothing after its (expired) events; the user listing
        // moved on.
        let mut watermarks = Watermarks {
            admin: mark(5, &["lost"]),
            user: mark(9, &["u2"]),
        };
        forget_lost_keys(&mut watermarks, &start);
        assert_eq!(
            watermarks,
            Watermarks {
                admin: Watermark::at(5),
                user: mark(9, &["u2"]),
            }
        );
        assert_eq!(keycloak::events::gap(&watermarks.admin, false), None);
    }
}
