//! Append-only journals in a key-value bucket's stream: small records appended under a
//! topic (a key prefix), read back in order from a stream sequence on, and purged up to a
//! sequence once a reader keeps what they said elsewhere. The product state cache keeps
//! each product's change-set records here (`cache`), so a change set of one user costs one
//! small message instead of a rewrite of 100,000 accounts.
//!
//! Each entry is one message on `$KV.{bucket}.{topic}.{unique id}`: a key of its own, so
//! the bucket's history of one never drops an entry, and the stream's sequence orders the
//! entries of every topic. Entries are kept until purged ([`Journal::purge_through`]).

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};

use crate::runs::{KeyValueError, Retention};
use crate::{Bus, BusMessage, DecodeError};

/// Why a journal could not be opened, appended to, read or purged.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Open(#[from] KeyValueError),
    #[error("journal {bucket}: {action}")]
    Bus {
        bucket: String,
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("journal {bucket}: entry {sequence} is unusable")]
    Decode {
        bucket: String,
        sequence: u64,
        #[source]
        source: DecodeError,
    },
}

/// One journal bucket.
#[derive(Clone)]
pub struct Journal {
    bucket: String,
    store: kv::Store,
    stream: Stream<()>,
}

impl Journal {
    /// The journal in `bucket`, created if missing (entries kept until purged).
    pub async fn open(bus: &Bus, bucket: &str, description: &str) -> Result<Journal, JournalError> {
        let retention = Retention {
            history: 1,
            max_age: std::time::Duration::ZERO,
        };
        let store = bus.key_value(bucket, description, retention).await?;
        let stream = bus
            .jetstream()
            .get_stream_no_info(format!("KV_{bucket}"))
            .await
            .map_err(|source| JournalError::Bus {
                bucket: bucket.to_owned(),
                action: "opening its stream",
                source: Box::new(source),
            })?;
        Ok(Journal {
            bucket: bucket.to_owned(),
            store,
            stream,
        })
    }

    /// Appends `entry` under `topic` and answers its sequence.
    pub async fn append<M: BusMessage>(&self, topic: &str, entry: &M) -> Result<u64, JournalError> {
        let key = format!("{topic}.{}", ulid::Ulid::new());
        self.store
            .put(&key, crate::encode(entry))
            .await
            .map_err(|source| self.error("appending an entry", source))
    }

    /// The sequence of the stream's last message, of any topic (0 when empty): every
    /// entry appended from now on has a higher one.
    pub async fn position(&self) -> Result<u64, JournalError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|source| self.error("reading its position", source))?;
        Ok(info.state.last_sequence)
    }

    /// The entries of `topic` with a sequence above `after`, in order, with their
    /// sequences.
    pub async fn read_after<M: BusMessage>(
        &self,
        topic: &str,
        after: u64,
    ) -> Result<Vec<(u64, M)>, JournalError> {
        let subject = self.subject(topic);
        let mut entries = Vec::new();
        let mut next = after + 1;
        loop {
            let found = self
                .stream
                .raw_message_builder()
                .next_by_subject(subject.clone())
                .sequence(next)
                .send()
                .await;
            let message = match found {
                Ok(message) => message,
                Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(entries);
                }
                Err(source) => return Err(self.error("reading entries", source)),
            };
            let entry =
                crate::decode::<M>(&message.payload).map_err(|source| JournalError::Decode {
                    bucket: self.bucket.clone(),
                    sequence: message.sequence,
                    source,
                })?;
            next = message.sequence + 1;
            entries.push((message.sequence, entry));
        }
    }

    /// Removes the entries of `topic` up to and including `sequence`.
    pub async fn purge_through(&self, topic: &str, sequence: u64) -> Result<(), JournalError> {
        self.stream
            .purge()
            .filter(self.subject(topic))
            .sequence(sequence + 1)
            .await
            .map(drop)
            .map_err(|source| self.error("purging entries", source))
    }

    fn subject(&self, topic: &str) -> String {
        format!("$KV.{}.{topic}.>", self.bucket)
    }

    fn error(
        &self,
        action: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> JournalError {
        JournalError::Bus {
            bucket: self.bucket.clone(),
            action,
            source: Box::new(source),
        }
    }
}
