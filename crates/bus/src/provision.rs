//! Provisioning that never undoes an operator: the streams, key-value buckets and object
//! stores keysync needs, created when missing and otherwise changed only where keysync owns
//! the setting.
//!
//! Every one of them is a JetStream stream (a bucket `b` is the stream `KV_b` or `OBJ_b`).
//! When the stream is missing it is created with keysync's configuration and `[bus]
//! replicas`. When it is there, its configuration is read and [`reconcile`]d: starting from
//! the *existing* configuration, so every limit an operator set and keysync does not own
//! (`max_bytes`, `max_msgs`, the description, placement, ...) is kept, keysync writes only
//! its own fields:
//!
//! - the replica count, never lowered: `max(existing, configured)` (a higher existing count
//!   is kept and logged as a warning);
//! - the subjects, the retention policy, `max_age`;
//! - `duplicate_window` and the history of a key-value bucket (`max_msgs_per_subject`),
//!   where keysync sets them (a zero in the wanted configuration means "not ours").
//!
//! Nothing is sent when nothing differs. JetStream refuses some changes to an existing
//! stream (its retention policy to or from work queue, its storage, ...): such a refusal is
//! a [`ProvisionError::Update`] naming the stream and the changes it was asked for.

use std::{collections::BTreeSet, time::Duration};

use async_nats::jetstream::{
    self,
    context::{GetStreamError, GetStreamErrorKind, UpdateStreamError},
    kv,
    object_store::{self, ObjectStore},
    stream::{self, RetentionPolicy},
};

use crate::Bus;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What keysync creates on JetStream, from `[bus]` ([`crate::BusSettings::provisioning`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provisioning {
    /// The replica count of every stream, key-value bucket and object store (1 to 5).
    pub replicas: usize,
    /// How long a run and what it leaves are kept: the runs and change results buckets,
    /// the events stream and the dead letters (`[bus] retention_days`).
    pub runs_max_age: Duration,
    /// How long stored snapshots and plans are kept (`[bus] snapshot_retention_hours`).
    pub snapshots_max_age: Duration,
}

impl Default for Provisioning {
    /// One replica, 90 days, 72 hours: the defaults of `[bus]`.
    fn default() -> Provisioning {
        Provisioning {
            replicas: 1,
            runs_max_age: Duration::from_secs(90 * 24 * 3600),
            snapshots_max_age: Duration::from_secs(72 * 3600),
        }
    }
}

/// Why a stream, key-value bucket or object store could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("reading the configuration of stream {stream}")]
    Read {
        stream: String,
        #[source]
        source: GetStreamError,
    },
    #[error("creating stream {stream}")]
    Create {
        stream: String,
        #[source]
        source: BoxError,
    },
    #[error(
        "JetStream refused to change stream {stream} ({changes}); it cannot change some \
         settings of an existing stream, such as its retention policy: change the stream \
         by hand, or delete it and let keysync create it again"
    )]
    Update {
        stream: String,
        /// The owned fields keysync asked to change: `max_age 30d -> 90d, ...`.
        changes: String,
        #[source]
        source: UpdateStreamError,
    },
    #[error("opening {stream}")]
    Open {
        stream: String,
        #[source]
        source: BoxError,
    },
}

/// What to create when a stream is missing: a plain stream, or a bucket through its own
/// client API (which sets the bucket's fixed settings: rollups, direct gets, ...).
pub(crate) enum Missing {
    /// The wanted configuration itself.
    Stream,
    KeyValue(Box<kv::Config>),
    ObjectStore(object_store::Config),
}

/// The configuration to write over `existing` so that it has what `wanted` owns, or `None`
/// when it has it already. Starts from `existing`: what keysync does not own is kept.
///
/// Owned: the replica count (never lowered: the larger of the two), the retention
/// policy, `max_age`, and, when `wanted` sets them (non-empty, non-zero), the subjects (as
/// a set), `duplicate_window` and `max_messages_per_subject` (a bucket's history).
pub fn reconcile(existing: &stream::Config, wanted: &stream::Config) -> Option<stream::Config> {
    let mut updated = existing.clone();
    updated.num_replicas = existing.num_replicas.max(wanted.num_replicas);
    updated.retention = wanted.retention;
    updated.max_age = wanted.max_age;
    let same_subjects = wanted.subjects.iter().collect::<BTreeSet<_>>()
        == existing.subjects.iter().collect::<BTreeSet<_>>();
    if !wanted.subjects.is_empty() && !same_subjects {
        updated.subjects = wanted.subjects.clone();
    }
    if !wanted.duplicate_window.is_zero() {
        updated.duplicate_window = wanted.duplicate_window;
    }
    if wanted.max_messages_per_subject > 0 {
        updated.max_messages_per_subject = wanted.max_messages_per_subject;
    }
    (updated != *existing).then_some(updated)
}

/// The owned fields that differ from `before` to `after`, for logs and errors:
/// `max_age 30days -> 90days`.
pub fn changes(before: &stream::Config, after: &stream::Config) -> Vec<String> {
    let mut changes = Vec::new();
    let mut compare = |field: &str, before: String, after: String| {
        if before != after {
            changes.push(format!("{field} {before} -> {after}"));
        }
    };
    compare(
        "replicas",
        before.num_replicas.to_string(),
        after.num_replicas.to_string(),
    );
    compare(
        "retention",
        format!("{:?}", before.retention),
        format!("{:?}", after.retention),
    );
    compare("max_age", days(before.max_age), days(after.max_age));
    compare(
        "subjects",
        format!("{:?}", before.subjects),
        format!("{:?}", after.subjects),
    );
    compare(
        "duplicate_window",
        format!("{:?}", before.duplicate_window),
        format!("{:?}", after.duplicate_window),
    );
    compare(
        "max_msgs_per_subject",
        before.max_messages_per_subject.to_string(),
        after.max_messages_per_subject.to_string(),
    );
    changes
}

/// A duration as days, hours or seconds, whichever is whole.
fn days(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0 => "unlimited".to_owned(),
        _ if seconds.is_multiple_of(86_400) => format!("{}d", seconds / 86_400),
        _ if seconds.is_multiple_of(3_600) => format!("{}h", seconds / 3_600),
        _ => format!("{duration:?}"),
    }
}

/// Makes the stream `wanted.name` have what keysync owns: creates it as `missing` says
/// when it is not there, else updates it only where [`reconcile`] finds a difference.
pub(crate) async fn ensure(
    jetstream: &jetstream::Context,
    wanted: &stream::Config,
    missing: Missing,
) -> Result<(), ProvisionError> {
    let name = wanted.name.as_str();
    let existing = match existing_config(jetstream, name).await? {
        Some(existing) => existing,
        None => match create(jetstream, wanted, missing).await {
            Ok(()) => return Ok(()),
            // Another replica may have created it (with another configuration) in between.
            Err(source) => match existing_config(jetstream, name).await? {
                Some(existing) => existing,
                None => {
                    return Err(ProvisionError::Create {
                        stream: name.to_owned(),
                        source,
                    });
                }
            },
        },
    };
    if existing.num_replicas > wanted.num_replicas {
        tracing::warn!(
            stream = name,
            existing = existing.num_replicas,
            configured = wanted.num_replicas,
            "the stream has more replicas than `[bus] replicas`; keeping them"
        );
    }
    let Some(updated) = reconcile(&existing, wanted) else {
        return Ok(());
    };
    let changes = changes(&existing, &updated).join(", ");
    tracing::info!(stream = name, %changes, "updating the stream to keysync's configuration");
    jetstream
        .update_stream(&updated)
        .await
        .map_err(|source| ProvisionError::Update {
            stream: name.to_owned(),
            changes,
            source,
        })?;
    Ok(())
}

/// The configuration of stream `name`, or `None` when there is no such stream.
async fn existing_config(
    jetstream: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Config>, ProvisionError> {
    match jetstream.get_stream(name).await {
        Ok(stream) => Ok(Some(stream.cached_info().config.clone())),
        Err(error) if is_not_found(&error) => Ok(None),
        Err(source) => Err(ProvisionError::Read {
            stream: name.to_owned(),
            source,
        }),
    }
}

fn is_not_found(error: &GetStreamError) -> bool {
    matches!(
        error.kind(),
        GetStreamErrorKind::JetStream(error)
            if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

async fn create(
    jetstream: &jetstream::Context,
    wanted: &stream::Config,
    missing: Missing,
) -> Result<(), BoxError> {
    match missing {
        Missing::Stream => jetstream.create_stream(wanted.clone()).await.map(drop)?,
        Missing::KeyValue(config) => jetstream.create_key_value(*config).await.map(drop)?,
        Missing::ObjectStore(config) => jetstream.create_object_store(config).await.map(drop)?,
    }
    Ok(())
}

/// What keysync owns of the stream under a key-value bucket.
pub(crate) fn key_value_config(
    bucket: &str,
    history: i64,
    max_age: Duration,
    replicas: usize,
) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        retention: RetentionPolicy::Limits,
        max_age,
        max_messages_per_subject: history.max(1),
        num_replicas: replicas,
        ..Default::default()
    }
}

/// What keysync owns of the stream under an object store.
pub(crate) fn object_store_config(
    bucket: &str,
    max_age: Duration,
    replicas: usize,
) -> stream::Config {
    stream::Config {
        name: format!("OBJ_{bucket}"),
        subjects: vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")],
        retention: RetentionPolicy::Limits,
        max_age,
        num_replicas: replicas,
        ..Default::default()
    }
}

impl Bus {
    /// What this bus creates: the replica count and the retentions (`[bus]`).
    pub fn provisioning(&self) -> &Provisioning {
        &self.provisioning
    }

    /// The same bus, creating with `provisioning` from now on (for [`Bus::from_client`]).
    pub fn with_provisioning(mut self, provisioning: Provisioning) -> Bus {
        self.provisioning = provisioning;
        self
    }

    /// The object store `bucket`, created if missing with `max_age` (`Duration::ZERO`
    /// keeps objects forever) and `[bus] replicas`; when present, updated only where a
    /// setting keysync owns differs (see the module doc).
    pub async fn ensure_object_store(
        &self,
        bucket: &str,
        max_age: Duration,
    ) -> Result<ObjectStore, ProvisionError> {
        let replicas = self.provisioning.replicas;
        let wanted = object_store_config(bucket, max_age, replicas);
        let missing = Missing::ObjectStore(object_store::Config {
            bucket: bucket.to_owned(),
            max_age,
            num_replicas: replicas,
            ..Default::default()
        });
        ensure(self.jetstream(), &wanted, missing).await?;
        self.jetstream()
            .get_object_store(bucket)
            .await
            .map_err(|source| ProvisionError::Open {
                stream: wanted.name,
                source: Box::new(source),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(replicas: usize) -> stream::Config {
        stream::Config {
            name: "KS_EVENTS".to_owned(),
            subjects: vec!["ks.run.>".to_owned(), "ks.plan.>".to_owned()],
            retention: RetentionPolicy::Limits,
            max_age: Duration::from_secs(90 * 86_400),
            duplicate_window: Duration::from_secs(120),
            num_replicas: replicas,
            ..Default::default()
        }
    }

    #[test]
    fn replicas_are_never_lowered_but_raised() {
        assert_eq!(reconcile(&events(3), &events(1)), None, "3 stays 3");
        let raised = reconcile(&events(1), &events(3)).expect("raised");
        assert_eq!(raised.num_replicas, 3);
        assert_eq!(raised, events(3));
        assert_eq!(changes(&events(1), &raised), ["replicas 1 -> 3".to_owned()]);
    }

    #[test]
    fn identical_needs_no_update() {
        assert_eq!(reconcile(&events(1), &events(1)), None);
        let mut reordered = events(1);
        reordered.subjects.reverse();
        assert_eq!(
            reconcile(&reordered, &events(1)),
            None,
            "subjects are a set"
        );
    }

    #[test]
    fn what_keysync_does_not_own_is_kept() {
        let mut existing = events(3);
        existing.max_bytes = 1 << 30;
        existing.max_messages = 1_000;
        existing.description = Some("ops: capped".to_owned());
        existing.max_age = Duration::from_secs(30 * 86_400);
        existing.max_messages_per_subject = 10;
        existing.placement = Some(stream::Placement {
            cluster: Some("east".to_owned()),
            tags: vec!["ssd".to_owned()],
        });
        let updated = reconcile(&existing, &events(1)).expect("max_age is ours");
        let mut expected = existing.clone();
        expected.max_age = Duration::from_secs(90 * 86_400);
        assert_eq!(updated, expected);
        assert_eq!(changes(&existing, &updated), ["max_age 30d -> 90d"]);
    }

    #[test]
    fn unset_fields_of_the_wanted_configuration_are_not_owned() {
        let mut existing = events(1);
        existing.duplicate_window = Duration::from_secs(60);
        let mut wanted = events(1);
        wanted.duplicate_window = Duration::ZERO;
        wanted.subjects.clear();
        assert_eq!(reconcile(&existing, &wanted), None);
    }

    #[test]
    fn a_bucket_owns_its_history() {
        let wanted = key_value_config("ks-runs", 16, Duration::ZERO, 1);
        let mut existing = wanted.clone();
        existing.max_messages_per_subject = 1;
        existing.max_bytes = 4096;
        existing.allow_direct = true;
        let updated = reconcile(&existing, &wanted).expect("history");
        assert_eq!(updated.max_messages_per_subject, 16);
        assert_eq!((updated.max_bytes, updated.allow_direct), (4096, true));
    }

    #[test]
    fn a_retention_policy_change_is_asked_for_and_named() {
        let mut existing = events(1);
        existing.retention = RetentionPolicy::Limits;
        let mut wanted = events(1);
        wanted.retention = RetentionPolicy::WorkQueue;
        let updated = reconcile(&existing, &wanted).expect("differs");
        assert_eq!(
            changes(&existing, &updated),
            ["retention Limits -> WorkQueue"]
        );
    }
}
