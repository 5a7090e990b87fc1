//! The event follower in the service (#16): one [`Observer`] per connector with
//! `[keycloak.<name>.events] enabled`, run by [`crate::app::App::run_until_stopped`]
//! beside the run-request worker.
//!
//! Each [`Observer::step`] polls the connector's events ([`Follower::poll_named`]: the ids
//! they named, nothing read again) and, unless they named nothing, publishes one
//! `EventsObserved` on `{prefix}.run.events`, for the control plane to start an event run;
//! only then does it commit the watermarks, so a follower stopped in between publishes
//! again rather than losing the edit. The message id is `{connector}/events/{hash of the
//! new watermarks}`: two fetcher replicas that read the same events publish the same id,
//! and JetStream's duplicate window keeps one.
//!
//! [`Observer::run`] starts a step every `poll_interval_ms` (counted from the start of the
//! last one, so a batching window does not stretch it); an error is logged and
//! retried with a growing delay (at most [`MAX_BACKOFF`]), never ending the service. It
//! also reads the realm's events settings when it starts and every [`READINESS_EVERY`]
//! after, and warns while the realm does not save the events it follows: such a realm's
//! changes reach the products by full syncs only (the schedule, or on demand), and the
//! warning says which settings to turn on.

use std::time::Duration;

use bus::Bus;
use keycloak::config::KeycloakSettings;
use proto::v1;
use sha2::{Digest, Sha256};
use telemetry::error_chain;
use tokio::sync::watch;
use tracing::Instrument;

use crate::{
    Error,
    follow::{FollowError, Follower, Named, Watermarks},
};

/// The longest wait after failed steps, unless the poll interval is longer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How often the follower reads the realm's events settings again.
pub const READINESS_EVERY: Duration = Duration::from_secs(600);

/// Why one step failed; the next step tries again.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Follow(#[from] FollowError),
    #[error("publishing the events of connector {connector}")]
    Publish {
        connector: String,
        #[source]
        source: bus::Error,
    },
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// No event that changes what keysync syncs.
    Nothing,
    /// One `EventsObserved` published (or dropped by JetStream as a duplicate of another
    /// replica's) with this message id.
    Published {
        message_id: String,
        trigger: v1::EventTrigger,
    },
}

/// The follower of one connector, publishing what it finds.
pub struct Observer {
    follower: Follower,
    bus: Bus,
    connector: String,
    poll_interval: Duration,
}

impl Observer {
    /// The observer of `connector`, with a Keycloak client of its own (its requests are
    /// not counted in the fetch's progress) and its watermarks in `{prefix}-follower`.
    pub async fn open(
        bus: &Bus,
        connector: &str,
        settings: &KeycloakSettings,
    ) -> Result<Observer, Error> {
        let client =
            keycloak::client::Client::new(settings.clone()).map_err(|source| Error::Keycloak {
                connector: connector.to_owned(),
                source,
            })?;
        let follower =
            Follower::open(bus, connector, client, settings.events.batch_window()).await?;
        Ok(Observer {
            follower,
            bus: bus.clone(),
            connector: connector.to_owned(),
            poll_interval: settings.events.poll_interval(),
        })
    }

    pub fn connector(&self) -> &str {
        &self.connector
    }

    /// Polls once; publishes what the events named, then commits the watermarks.
    pub async fn step(&self) -> Result<Observation, ObserveError> {
        Ok(self.step_and_see().await?.0)
    }

    /// [`Observer::step`], and whether more events wait (a listing was cut short): then
    /// [`Observer::run`] polls again at once, so a backlog drains at the speed of reading
    /// it, not one batch per poll interval.
    async fn step_and_see(&self) -> Result<(Observation, bool), ObserveError> {
        let pending = self.follower.poll_named().await?;
        let trigger = match &pending.followed {
            Named::Nothing => None,
            Named::Ids {
                users,
                groups,
                events,
            } => Some(v1::EventTrigger {
                user_ids: users.iter().cloned().collect(),
                group_ids: groups.iter().cloned().collect(),
                events: *events as u64,
                full_sync_reason: String::new(),
            }),
            Named::FullSync { reason } => Some(v1::EventTrigger {
                full_sync_reason: reason.clone(),
                ..Default::default()
            }),
        };
        let observation = match trigger {
            None => Observation::Nothing,
            Some(trigger) => {
                let message_id = message_id(&self.connector, pending.watermarks());
                let observed = v1::EventsObserved {
                    schema_version: v1::SCHEMA_VERSION,
                    connector: self.connector.clone(),
                    trigger: Some(trigger.clone()),
                    observed_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
                };
                // Each observation is the root of its own trace (the follower's loop is one
                // long span): the control plane continues it into the event run, so one
                // delta is one trace, from the events through every product write.
                let observed_span = tracing::info_span!(
                    parent: None,
                    "events_observed",
                    connector = %self.connector,
                    users = trigger.user_ids.len(),
                    groups = trigger.group_ids.len(),
                    events = trigger.events,
                    full_sync = %trigger.full_sync_reason,
                );
                self.bus
                    .publish(
                        &self.bus.topology().events_observed(),
                        &observed,
                        &message_id,
                    )
                    .instrument(observed_span)
                    .await
                    .map_err(|source| ObserveError::Publish {
                        connector: self.connector.clone(),
                        source,
                    })?;
                tracing::info!(
                    users = trigger.user_ids.len(),
                    groups = trigger.group_ids.len(),
                    events = trigger.events,
                    full_sync = %trigger.full_sync_reason,
                    "Keycloak events observed."
                );
                Observation::Published {
                    message_id,
                    trigger,
                }
            }
        };
        // A poll that read nothing new leaves the watermarks as stored: no write.
        if pending.advanced() {
            self.follower.commit(&pending).await?;
        }
        Ok((observation, !pending.complete()))
    }

    /// Steps every `poll_interval` until `stop` turns true (or its sender is gone); a step
    /// in progress then is dropped, which loses nothing: its watermarks were not committed.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let span = tracing::info_span!("follow", connector = %self.connector);
        let mut failures: u32 = 0;
        let mut readiness_due = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= readiness_due {
                readiness_due += READINESS_EVERY;
                self.warn_unless_ready().instrument(span.clone()).await;
            }
            let step_started = tokio::time::Instant::now();
            let stepped = tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return,
                stepped = self.step_and_see().instrument(span.clone()) => stepped,
            };
            let wait = match stepped {
                Ok((_, more_waiting)) => {
                    failures = 0;
                    next_poll_in(self.poll_interval, step_started.elapsed(), more_waiting)
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(self.poll_interval, failures);
                    span.in_scope(|| {
                        tracing::error!(
                            error = %error_chain(&error),
                            retry_in_ms = wait.as_millis() as u64,
                            "Following the Keycloak events failed."
                        );
                    });
                    wait
                }
            };
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

impl Observer {
    /// Warns when the realm does not save the events followed, or they cannot be checked.
    async fn warn_unless_ready(&self) {
        match self.follower.check_events().await {
            Ok(problems) if problems.is_empty() => {}
            Ok(problems) => tracing::warn!(
                problems = %problems.join("; "),
                "Events are enabled for this connector, but the realm does not save all the \
                 events keysync follows: its changes reach the products only by full syncs \
                 (the schedule, or on demand) until they are turned on."
            ),
            Err(error) => tracing::warn!(
                error = %error_chain(&error),
                "Cannot read the realm's events settings; the events followed may be incomplete."
            ),
        }
    }
}

/// `{connector}/events/{hex SHA-256 of the watermarks}`: the same for every replica that
/// read up to the same events.
pub fn message_id(connector: &str, watermarks: &Watermarks) -> String {
    // Serialised with sorted sets and fixed field order, so equal watermarks give equal
    // bytes on every replica; serialising these plain types cannot fail.
    let bytes = serde_json::to_vec(watermarks).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{connector}/events/{hex}")
}

/// The wait after a step that took `took`: none when more events wait, else what is left
/// of the poll interval, which counts from the step's start. A step that found events
/// spends the batching window (500 ms by default) in it; counted from its end, a one-second
/// interval would poll every second and a half while edits keep coming.
fn next_poll_in(poll_interval: Duration, took: Duration, more_waiting: bool) -> Duration {
    if more_waiting {
        Duration::ZERO
    } else {
        poll_interval.saturating_sub(took)
    }
}

/// The wait after `failures` failed steps in a row: the poll interval doubled each time,
/// at most [`MAX_BACKOFF`] (or the poll interval, when that is longer).
fn backoff(poll_interval: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(16);
    poll_interval
        .saturating_mul(factor)
        .min(MAX_BACKOFF.max(poll_interval))
}

#[cfg(test)]
mod tests {
    use keycloak::events::Watermark;

    use super::*;

    #[test]
    fn the_backoff_grows_and_is_bounded() {
        let interval = Duration::from_millis(1000);
        assert_eq!(backoff(interval, 1), Duration::from_secs(2));
        assert_eq!(backoff(interval, 2), Duration::from_secs(4));
        assert_eq!(backoff(interval, 5), MAX_BACKOFF);
        assert_eq!(backoff(interval, u32::MAX), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(60), 1), Duration::from_secs(60));
    }

    #[test]
    fn the_poll_interval_counts_from_the_start_of_a_step() {
        let interval = Duration::from_millis(1000);
        let window = Duration::from_millis(500);
        assert_eq!(next_poll_in(interval, window, false), window);
        assert_eq!(
            next_poll_in(interval, Duration::from_millis(10), false),
            Duration::from_millis(990)
        );
        // A step longer than the interval polls again at once, and a backlog too.
        assert_eq!(
            next_poll_in(interval, Duration::from_secs(3), false),
            Duration::ZERO
        );
        assert_eq!(next_poll_in(interval, window, true), Duration::ZERO);
    }

    #[test]
    fn equal_watermarks_give_one_message_id_and_others_another() {
        let at = |time| Watermarks {
            admin: Watermark::at(time),
            user: Watermark::at(0),
        };
        assert_eq!(message_id("corp", &at(5)), message_id("corp", &at(5)));
        assert_ne!(message_id("corp", &at(5)), message_id("corp", &at(6)));
        assert_ne!(message_id("corp", &at(5)), message_id("hr", &at(5)));
        assert!(message_id("corp", &at(5)).starts_with("corp/events/"));
    }
}
