//! keysync's bus on NATS JetStream: the subjects and streams, the durable consumers,
//! encoding and decoding of the protobuf messages with their schema version, and dead
//! letters for messages that cannot be decoded.
//!
//! Every name carries a prefix (`keysync` in production; a unique one per test), so
//! several deployments or tests can share one NATS server.
//!
//! Streams:
//! - `{PREFIX}_EVENTS` (limits retention): `{prefix}.run.>`, `{prefix}.snapshot.>`,
//!   `{prefix}.state.>`, `{prefix}.plan.>`;
//! - `{PREFIX}_CHANGES` (work-queue retention): `{prefix}.changes.{product}`, consumed by one
//!   durable pull consumer per product, shared by that product's applier replicas;
//! - `{PREFIX}_DEAD` (limits retention): `{prefix}.dead.>`, messages a service could not
//!   use, with the reason in the `Keysync-Dead-Reason` header.
//!
//! Each stream (and every key-value bucket and object store) is created with `[bus]
//! replicas`; the events and dead-letter streams keep messages `[bus] retention_days`. A
//! stream that exists is changed only where keysync owns a setting, never lowering its
//! replicas nor touching an operator's limits ([`provision`]).
//!
//! A message's `schema_version` is accepted within this build's major revision, newer
//! minor revisions included ([`decode`]; the scheme is [`v1::SCHEMA_VERSION`]'s).
//!
//! Every service runs its message loop here ([`worker`]: pulling, settling, dead letters,
//! rebinding), with its health endpoints ([`health`]) and the gauges of its consumers' lag
//! ([`lag`]).
//!
//! Architecture invariant: this crate knows the wire (`proto`) and NATS, nothing of
//! Keycloak, the products or the plan.

mod compress;
mod consumers;
pub mod health;
pub mod integrity;
pub mod journal;
pub mod lag;
pub mod liveness;
pub mod object_read;
pub mod object_stream;
pub mod objects;
pub mod provision;
pub mod runs;
mod settings;
pub mod trace;
pub mod worker;

pub use provision::{ProvisionError, Provisioning};
pub use settings::{BusSettings, redact_url};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        self, consumer,
        context::PublishAckFuture,
        message::PublishMessage,
        stream::{self, RetentionPolicy},
    },
};
use bytes::Bytes;
use proto::v1;

/// Header with the reason a message was dead-lettered.
pub const DEAD_REASON_HEADER: &str = "Keysync-Dead-Reason";
/// Header with the subject a dead-lettered message was first published on.
pub const DEAD_SUBJECT_HEADER: &str = "Keysync-Dead-Subject";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `[bus]` is not usable; the key is relative to `[bus]`.
    #[error("[bus] settings: {0}")]
    Settings(#[source] config::Invalid),
    /// `url` has any password replaced by `***` ([`redact_url`]).
    #[error("connecting to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// A stream could not be created, read or brought to keysync's configuration (the
    /// error names it).
    #[error(transparent)]
    Stream(#[from] ProvisionError),
    #[error("creating consumer {consumer} on stream {stream}")]
    Consumer {
        stream: String,
        consumer: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("publishing to {subject}")]
    Publish {
        subject: String,
        #[source]
        source: jetstream::context::PublishError,
    },
    #[error("acknowledging a message")]
    Ack(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("pulling messages from consumer {consumer}")]
    Pull {
        consumer: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl Error {
    pub(crate) fn pull(consumer: &str, source: Box<dyn std::error::Error + Send + Sync>) -> Error {
        Error::Pull {
            consumer: consumer.to_owned(),
            source,
        }
    }
}

/// Why a payload is not a message this service can act on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("not a valid {kind} protobuf: {reason}")]
    Malformed { kind: &'static str, reason: String },
    /// `found` is 0 (no version) or of another major revision than `known`, this build's
    /// ([`v1::SCHEMA_VERSION`] documents the scheme).
    #[error(
        "{kind} has schema version {found} (major {}); this build reads major {} (it writes \
         version {known})",
        v1::schema_major(*found),
        v1::schema_major(*known)
    )]
    UnknownVersion {
        kind: &'static str,
        found: u32,
        known: u32,
    },
}

/// A protobuf message that travels on the bus.
pub trait BusMessage: prost::Message + Default + Sized {
    /// The message name, for errors and logs.
    const KIND: &'static str;
    fn schema_version(&self) -> u32;
}

macro_rules! bus_messages {
    ($($name:ident),* $(,)?) => {$(
        impl BusMessage for v1::$name {
            const KIND: &'static str = stringify!($name);
            fn schema_version(&self) -> u32 {
                self.schema_version
            }
        }
    )*};
}
bus_messages!(
    RunRequested,
    EventsObserved,
    Snapshot,
    SnapshotReady,
    SnapshotFailed,
    PlanReady,
    PlanFailed,
    ChangeSet,
    ChangeSetManifest,
    ChangeResult,
    Plan,
    RunApproved,
    RunCancelled,
    ProductState,
    StateRecords,
    StateReady,
    StateFailed,
);

/// Encodes a bus message.
pub fn encode<M: BusMessage>(message: &M) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// Decodes a bus message and checks its schema version: any version of this build's major
/// revision is accepted, a newer minor one too (its unknown fields are skipped); version 0
/// and every other major are refused ([`v1::SCHEMA_VERSION`]).
pub fn decode<M: BusMessage>(payload: &[u8]) -> Result<M, DecodeError> {
    let message = M::decode(payload).map_err(|error| DecodeError::Malformed {
        kind: M::KIND,
        reason: error.to_string(),
    })?;
    let found = message.schema_version();
    if found == 0 || v1::schema_major(found) != v1::SCHEMA_MAJOR {
        return Err(DecodeError::UnknownVersion {
            kind: M::KIND,
            found,
            known: v1::SCHEMA_VERSION,
        });
    }
    Ok(message)
}

/// Every name of one deployment on the bus: subjects, streams, durable consumers, and
/// key-value and object-store buckets (the buckets' own modules add theirs: [`runs`],
/// [`objects`]). No service builds a name of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// `prefix` is a NATS subject token: letters, digits, `-` and `_`.
    pub fn new(prefix: &str) -> Topology {
        Topology {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn run_requested(&self) -> String {
        format!("{}.run.requested", self.prefix)
    }

    /// The event follower saw Keycloak change: `{prefix}.run.events` (`EventsObserved`).
    pub fn events_observed(&self) -> String {
        format!("{}.run.events", self.prefix)
    }

    pub fn snapshot_ready(&self) -> String {
        format!("{}.snapshot.ready", self.prefix)
    }

    pub fn snapshot_failed(&self) -> String {
        format!("{}.snapshot.failed", self.prefix)
    }

    pub fn plan_ready(&self) -> String {
        format!("{}.plan.ready", self.prefix)
    }

    pub fn plan_failed(&self) -> String {
        format!("{}.plan.failed", self.prefix)
    }

    /// An applier read its product's state for a run: `{prefix}.state.ready.{product}`.
    pub fn state_ready(&self, product: &str) -> String {
        format!("{}.state.ready.{product}", self.prefix)
    }

    pub fn state_failed(&self, product: &str) -> String {
        format!("{}.state.failed.{product}", self.prefix)
    }

    pub fn run_approved(&self) -> String {
        format!("{}.run.approved", self.prefix)
    }

    pub fn run_cancelled(&self) -> String {
        format!("{}.run.cancelled", self.prefix)
    }

    /// Change sets for one product: `{prefix}.changes.jira` and so on.
    pub fn changes(&self, product: &str) -> String {
        format!("{}.changes.{product}", self.prefix)
    }

    /// Where a message first published on `subject` goes when it cannot be decoded.
    pub fn dead_letter(&self, subject: &str) -> String {
        let rest = subject
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(subject);
        format!("{}.dead.{rest}", self.prefix)
    }

    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.stream_prefix())
    }

    pub fn changes_stream(&self) -> String {
        format!("{}_CHANGES", self.stream_prefix())
    }

    pub fn dead_stream(&self) -> String {
        format!("{}_DEAD", self.stream_prefix())
    }

    /// The durable consumer of run requests all fetcher replicas share.
    pub fn fetcher_consumer(&self) -> String {
        "fetcher".to_owned()
    }

    /// The durable consumer of snapshots, states and approvals all planner replicas share.
    pub fn planner_consumer(&self) -> String {
        "planner".to_owned()
    }

    /// The durable consumer of change sets all replicas of one product's applier share.
    pub fn applier_consumer(&self, product: &str) -> String {
        format!("applier-{product}")
    }

    /// The durable consumer of run requests (to read the product's state) all replicas of
    /// one product's applier share.
    pub fn applier_state_consumer(&self, product: &str) -> String {
        format!("applier-{product}-state")
    }

    /// The planner's joins of snapshots and states, `{prefix}-planner`: key = run id.
    pub fn planner_bucket(&self) -> String {
        format!("{}-planner", self.prefix)
    }

    /// The appliers' progress through each run's change sets, `{prefix}-applier`:
    /// key = `{product}.{run_id}`.
    pub fn applier_bucket(&self) -> String {
        format!("{}-applier", self.prefix)
    }

    fn stream_prefix(&self) -> String {
        self.prefix.to_uppercase().replace(['.', '-'], "_")
    }

    /// The streams' configurations: what keysync creates, and what it owns of them
    /// ([`provision::reconcile`]).
    fn stream_configs(&self, provisioning: &Provisioning) -> [stream::Config; 3] {
        let duplicate_window = Duration::from_secs(120);
        let replicas = provisioning.replicas;
        [
            stream::Config {
                name: self.events_stream(),
                subjects: vec![
                    format!("{}.run.>", self.prefix),
                    format!("{}.snapshot.>", self.prefix),
                    format!("{}.plan.>", self.prefix),
                    format!("{}.state.>", self.prefix),
                ],
                retention: RetentionPolicy::Limits,
                max_age: provisioning.runs_max_age,
                duplicate_window,
                num_replicas: replicas,
                ..Default::default()
            },
            stream::Config {
                name: self.changes_stream(),
                subjects: vec![format!("{}.changes.>", self.prefix)],
                retention: RetentionPolicy::WorkQueue,
                duplicate_window,
                num_replicas: replicas,
                ..Default::default()
            },
            stream::Config {
                name: self.dead_stream(),
                subjects: vec![format!("{}.dead.>", self.prefix)],
                retention: RetentionPolicy::Limits,
                max_age: provisioning.runs_max_age,
                num_replicas: replicas,
                ..Default::default()
            },
        ]
    }
}

/// A connection to the bus.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    topology: Topology,
    provisioning: Provisioning,
    /// The object stores opened so far, by bucket: each is provisioned once per process
    /// instead of with two requests before every object read or written.
    object_stores: Arc<std::sync::Mutex<HashMap<String, jetstream::object_store::ObjectStore>>>,
}

impl Bus {
    /// Connects without authentication or TLS options (a password in `url` is still
    /// used) and makes sure the streams exist, with the default [`Provisioning`]; for
    /// tests. Services use
    /// [`Bus::connect_with`].
    pub async fn connect(url: &str, topology: Topology) -> Result<Bus, Error> {
        let settings = BusSettings {
            nats_url: url.to_owned(),
            prefix: topology.prefix().to_owned(),
            ..BusSettings::default()
        };
        Bus::connect_with(&settings).await
    }

    /// Connects as `[bus]` says (authentication, TLS) and makes sure the streams exist
    /// with the current configuration, creating with `[bus]` `replicas` and retentions
    /// ([`Bus::provisioning`]). Errors never show a password of the URL.
    pub async fn connect_with(settings: &BusSettings) -> Result<Bus, Error> {
        let options = settings.connect_options().map_err(Error::Settings)?;
        // `nats://a:4222,nats://b:4222`: the seed servers of a cluster, any of which
        // will do; the client learns the others from the one it reaches.
        let servers: Vec<&str> = settings
            .nats_url
            .split(',')
            .map(str::trim)
            .filter(|server| !server.is_empty())
            .collect();
        let client = options
            .connect(servers)
            .await
            .map_err(|source| Error::Connect {
                url: redact_url(&settings.nats_url),
                source,
            })?;
        let bus = Bus::from_client(client, settings.topology())
            .with_provisioning(settings.provisioning());
        bus.ensure_streams().await?;
        Ok(bus)
    }

    /// Wraps an existing client; does not touch the streams. Creates with the default
    /// [`Provisioning`] unless [`Bus::with_provisioning`] says otherwise.
    pub fn from_client(client: async_nats::Client, topology: Topology) -> Bus {
        let jetstream = jetstream::new(client.clone());
        Bus {
            client,
            jetstream,
            topology,
            provisioning: Provisioning::default(),
            object_stores: Arc::default(),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    fn opened_object_store(&self, bucket: &str) -> Option<jetstream::object_store::ObjectStore> {
        let opened = self.object_stores.lock().ok()?;
        opened.get(bucket).cloned()
    }

    fn remember_object_store(&self, bucket: &str, store: &jetstream::object_store::ObjectStore) {
        if let Ok(mut opened) = self.object_stores.lock() {
            opened.insert(bucket.to_owned(), store.clone());
        }
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// Creates the streams that are missing; brings those that exist to keysync's
    /// configuration only where a setting keysync owns differs, keeping an operator's
    /// limits and a higher replica count ([`provision`]).
    pub async fn ensure_streams(&self) -> Result<(), Error> {
        for config in self.topology.stream_configs(&self.provisioning) {
            provision::ensure(&self.jetstream, &config, provision::Missing::Stream).await?;
        }
        Ok(())
    }

    /// Publishes a message and waits for JetStream to store it. `message_id` makes a
    /// repeated publish within the duplicate window a no-op (`Nats-Msg-Id`).
    pub async fn publish<M: BusMessage>(
        &self,
        subject: &str,
        message: &M,
        message_id: &str,
    ) -> Result<(), Error> {
        self.publish_with_headers(subject, message, message_id, HeaderMap::new())
            .await
    }

    /// As [`Bus::publish`], with extra headers. The current span's trace context is
    /// added to them, so the consumer continues the same trace.
    pub async fn publish_with_headers<M: BusMessage>(
        &self,
        subject: &str,
        message: &M,
        message_id: &str,
        mut headers: HeaderMap,
    ) -> Result<(), Error> {
        telemetry::inject(
            &tracing::Span::current(),
            &mut trace::HeaderInjector(&mut headers),
        );
        let publish = PublishMessage::build()
            .headers(headers)
            .message_id(message_id)
            .payload(encode(message));
        let ack: PublishAckFuture = self
            .jetstream
            .send_publish(subject.to_owned(), publish)
            .await
            .map_err(|source| Error::Publish {
                subject: subject.to_owned(),
                source,
            })?;
        ack.await.map_err(|source| Error::Publish {
            subject: subject.to_owned(),
            source,
        })?;
        Ok(())
    }

    /// A durable pull consumer with explicit acks on `stream`, created if missing.
    /// Replicas that use the same `name` share the messages.
    pub async fn durable_consumer(
        &self,
        stream: &str,
        name: &str,
        filter_subject: &str,
        ack_wait: Duration,
    ) -> Result<consumer::PullConsumer, Error> {
        self.durable_consumer_of_subjects(stream, name, &[filter_subject.to_owned()], ack_wait)
            .await
    }

    /// Moves a message to the dead-letter stream with `reason`, then acknowledges it.
    pub async fn dead_letter(
        &self,
        message: &jetstream::Message,
        reason: &str,
    ) -> Result<(), Error> {
        let subject = self.topology.dead_letter(&message.subject);
        let mut headers = HeaderMap::new();
        headers.insert(DEAD_REASON_HEADER, reason);
        headers.insert(DEAD_SUBJECT_HEADER, message.subject.as_str());
        let ack = self
            .jetstream
            .publish_with_headers(subject.clone(), headers, message.payload.clone())
            .await
            .map_err(|source| Error::Publish {
                subject: subject.clone(),
                source,
            })?;
        ack.await
            .map_err(|source| Error::Publish { subject, source })?;
        message.ack().await.map_err(Error::Ack)
    }
}
