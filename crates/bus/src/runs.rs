//! The control plane's key-value buckets: the runs (`{prefix}-runs`, one key per run id),
//! the results appliers report (`{prefix}-results`, one key per run and change), and the
//! schedule's claims on fire times (`{prefix}-schedule`), plus the name of the control
//! plane's durable consumer of the events stream.
//!
//! Only the names and the buckets' retention live here; what the values mean is the control
//! plane's business. [`Bus::key_value`] creates a missing bucket with `[bus] replicas` and
//! otherwise changes only what keysync owns of it (history, `max_age`, a replica count
//! never lowered), keeping an operator's limits ([`crate::provision`]). The retention of
//! runs and results is `[bus] retention_days` ([`crate::Provisioning::runs_max_age`]).

use std::time::Duration;

use async_nats::jetstream::kv;

use crate::{
    Bus, Topology,
    provision::{self, Missing, ProvisionError},
};

/// Why a key-value bucket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("creating or opening key-value bucket {bucket}")]
pub struct KeyValueError {
    bucket: String,
    #[source]
    source: ProvisionError,
}

impl Topology {
    /// The runs, `{prefix}-runs`: key = run id (a ULID), value = the run.
    pub fn runs_bucket(&self) -> String {
        format!("{}-runs", self.prefix)
    }

    /// Every change result, `{prefix}-results`: key = `{run_id}.{change id}`.
    pub fn results_bucket(&self) -> String {
        format!("{}-results", self.prefix)
    }

    /// Claims of schedule fire times, `{prefix}-schedule`: key = `schedule.{unix seconds}`.
    pub fn schedule_bucket(&self) -> String {
        format!("{}-schedule", self.prefix)
    }

    /// The durable consumer through which the control plane's replicas follow the runs'
    /// events.
    pub fn control_plane_consumer(&self) -> String {
        "control-plane".to_owned()
    }
}

/// The retention of one key-value bucket.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Values kept per key (1 to 64), so a watcher that falls behind sees every revision.
    pub history: i64,
    /// How long a value is kept; `Duration::ZERO` keeps it forever.
    pub max_age: Duration,
}

impl Bus {
    /// The key-value bucket `bucket`, created if missing (with `description`, `retention`
    /// and `[bus] replicas`); when present, updated only where `retention` or the replica
    /// count differs (never lowering the replicas), keeping the rest as it is.
    pub async fn key_value(
        &self,
        bucket: &str,
        description: &str,
        retention: Retention,
    ) -> Result<kv::Store, KeyValueError> {
        let error = |source| KeyValueError {
            bucket: bucket.to_owned(),
            source,
        };
        let replicas = self.provisioning().replicas;
        let wanted =
            provision::key_value_config(bucket, retention.history, retention.max_age, replicas);
        let missing = Missing::KeyValue(Box::new(kv::Config {
            bucket: bucket.to_owned(),
            description: description.to_owned(),
            history: retention.history,
            max_age: retention.max_age,
            num_replicas: replicas,
            ..Default::default()
        }));
        provision::ensure(self.jetstream(), &wanted, missing)
            .await
            .map_err(error)?;
        self.jetstream()
            .get_key_value(bucket)
            .await
            .map_err(|source| {
                error(ProvisionError::Open {
                    stream: wanted.name,
                    source: Box::new(source),
                })
            })
    }
}
