//! Payloads too large for a NATS message in the JetStream object store: snapshots, plans,
//! product states and big change sets. A payload is one protobuf bus message, encoded,
//! zstd-compressed and stored under a key; the message that announces it carries an
//! [`v1::ObjectRef`] with the bucket, the key, the size and the hex SHA-256 of the stored
//! (compressed) bytes.
//!
//! [`Bus::get_object`] checks the checksum before it decompresses, so a reader never acts
//! on an object that was replaced or damaged since it was announced, and it checks the
//! schema version like [`crate::decode`]. A decoded object is bounded by
//! [`MAX_DECODED_BYTES`] (a decompression bomb, a few kilobytes stored, fails with
//! [`ObjectError::TooLarge`] instead of filling the memory); [`Bus::object_reader`]
//! ([`crate::object_stream`]) reads one as a stream instead, in a fixed amount of memory.

use async_nats::jetstream::object_store::{self, ObjectStore};
use proto::v1;
use sha2::{Digest, Sha256};

use crate::{Bus, BusMessage, DecodeError, Topology};

/// The zstd level: a good ratio at a few hundred MB/s, so a million-user snapshot stores
/// in about a second.
const ZSTD_LEVEL: i32 = 3;

/// The most bytes an object may decode to: 1 GiB. A fixed bound rather than a ratio to the
/// stored size, since protobuf with many repeated strings compresses 20 to 50 times and a
/// million-user snapshot decodes to a few hundred MB; what is larger is refused with
/// [`ObjectError::TooLarge`] (a zstd bomb of a few KB would otherwise decode to any size).
pub const MAX_DECODED_BYTES: u64 = 1 << 30;

/// `message` as [`Bus::put_object`] stores it: encoded straight into zstd, so its whole
/// encoding is never in memory at once.
pub fn compressed<M: prost::Message>(message: &M) -> std::io::Result<Vec<u8>> {
    crate::compress::encode_compressed(message, ZSTD_LEVEL)
}

/// How many times its stored size an object may say it decodes to and still have its buffer
/// sized to that at once: keysync's objects compress 5 to 25 times.
const MAX_PRESIZE_RATIO: u64 = 64;

/// Why an object could not be stored or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("opening object store bucket {bucket}")]
    Bucket {
        bucket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("storing object {key} in bucket {bucket}")]
    Put {
        bucket: String,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("reading object {key} from bucket {bucket}")]
    Get {
        bucket: String,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The read waited this long without a byte of the object (see
    /// [`crate::object_read`]).
    #[error("reading object {key} from bucket {bucket}: no bytes for {waited:?}")]
    Stalled {
        bucket: String,
        key: String,
        waited: std::time::Duration,
    },
    #[error("object {key} is not in bucket {bucket}")]
    NotFound { bucket: String, key: String },
    #[error("object {key} in bucket {bucket} has SHA-256 {found}, not the announced {expected}")]
    Checksum {
        bucket: String,
        key: String,
        expected: String,
        found: String,
    },
    #[error("object {key} in bucket {bucket} is not valid zstd")]
    Decompress {
        bucket: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// The object decodes to more than `limit` bytes (see [`MAX_DECODED_BYTES`]).
    #[error("object {key} in bucket {bucket} decodes to more than {limit} bytes")]
    TooLarge {
        bucket: String,
        key: String,
        limit: u64,
    },
    #[error("object {key} in bucket {bucket}")]
    Decode {
        bucket: String,
        key: String,
        #[source]
        source: DecodeError,
    },
}

impl ObjectError {
    /// Whether the object itself is missing or unusable (gone, replaced, damaged, not the
    /// expected message), as opposed to the bus failing; retrying does not help then.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ObjectError::NotFound { .. }
                | ObjectError::Checksum { .. }
                | ObjectError::Decompress { .. }
                | ObjectError::TooLarge { .. }
                | ObjectError::Decode { .. }
        )
    }
}

impl Topology {
    /// The bucket of fetched snapshots, `{prefix}-snapshots`; a run's snapshot is
    /// `{run_id}.pb.zst`.
    pub fn snapshots_bucket(&self) -> String {
        format!("{}-snapshots", self.prefix)
    }

    /// The bucket of stored plans, `{prefix}-plans`; a run's plan is `{run_id}.pb.zst`,
    /// and change sets too large for a message are `{run_id}/{product}/{sequence}.pb.zst`.
    pub fn plans_bucket(&self) -> String {
        format!("{}-plans", self.prefix)
    }

    /// The bucket of the product state cache, `{prefix}-state`; the object of a product is
    /// named after it (`jira`, `confluence`, `bitbucket`).
    pub fn state_bucket(&self) -> String {
        format!("{}-state", self.prefix)
    }

    /// The key-value bucket of the product state journals, `{prefix}-state-journal`
    /// ([`crate::journal`]): a product's entries are under its name.
    pub fn state_journal_bucket(&self) -> String {
        format!("{}-state-journal", self.prefix)
    }
}

impl Bus {
    /// The object store bucket `bucket`, created if missing with `[bus]` `replicas` and,
    /// for the snapshots and plans buckets, `snapshot_retention_hours` as its age limit
    /// (the state cache is kept for good); an existing bucket keeps what an operator set
    /// ([`Bus::ensure_object_store`]).
    pub async fn object_store(&self, bucket: &str) -> Result<ObjectStore, ObjectError> {
        let topology = self.topology();
        let max_age = if bucket == topology.snapshots_bucket() || bucket == topology.plans_bucket()
        {
            self.provisioning().snapshots_max_age
        } else {
            std::time::Duration::ZERO
        };
        if let Some(store) = self.opened_object_store(bucket) {
            return Ok(store);
        }
        let store = self
            .ensure_object_store(bucket, max_age)
            .await
            .map_err(|source| ObjectError::Bucket {
                bucket: bucket.to_owned(),
                source: Box::new(source),
            })?;
        self.remember_object_store(bucket, &store);
        Ok(store)
    }

    /// Encodes `message`, compresses it and stores it as `key` in `bucket` (created if
    /// missing), replacing an object of that name. Answers where it is.
    pub async fn put_object<M: BusMessage>(
        &self,
        bucket: &str,
        key: &str,
        message: &M,
    ) -> Result<v1::ObjectRef, ObjectError> {
        let put_error = |source: Box<dyn std::error::Error + Send + Sync>| ObjectError::Put {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source,
        };
        let compressed = compressed(message).map_err(|error| put_error(Box::new(error)))?;
        let store = self.object_store(bucket).await?;
        store
            .put(key, &mut compressed.as_slice())
            .await
            .map_err(|error| put_error(Box::new(error)))?;
        Ok(v1::ObjectRef {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            sha256: sha256_hex(&compressed),
            size: compressed.len() as u64,
        })
    }

    /// Loads the object `object` names, checks its checksum, decompresses and decodes it.
    pub async fn get_object<M: BusMessage>(
        &self,
        object: &v1::ObjectRef,
    ) -> Result<M, ObjectError> {
        let encoded = self.get_object_encoded(object).await?;
        crate::decode::<M>(&encoded).map_err(|source| ObjectError::Decode {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            source,
        })
    }

    /// The encoded message the object `object` names: its checksum checked, decompressed
    /// (at most [`MAX_DECODED_BYTES`]), not decoded, so a reader can see fields a newer
    /// writer added that decoding would drop.
    pub async fn get_object_encoded(&self, object: &v1::ObjectRef) -> Result<Vec<u8>, ObjectError> {
        let (bucket, key) = (object.bucket.as_str(), object.key.as_str());
        let stored = self.get_object_bytes(bucket, key).await?;
        let found = sha256_hex(&stored);
        if !found.eq_ignore_ascii_case(&object.sha256) {
            return Err(ObjectError::Checksum {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                expected: object.sha256.clone(),
                found,
            });
        }
        decompress_bounded(bucket, key, &stored, MAX_DECODED_BYTES)
    }

    /// Loads the newest object `key` of `bucket`, whatever its checksum, with the
    /// [`v1::ObjectRef`] that names it now; `None` when there is no such object.
    pub async fn get_latest_object<M: BusMessage>(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(M, v1::ObjectRef)>, ObjectError> {
        let stored = match self.get_object_bytes(bucket, key).await {
            Ok(stored) => stored,
            Err(ObjectError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let message = decode_stored(bucket, key, &stored)?;
        let object = v1::ObjectRef {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            sha256: sha256_hex(&stored),
            size: stored.len() as u64,
        };
        Ok(Some((message, object)))
    }

    /// The hex SHA-256 of the stored bytes of object `key` in `bucket` (as
    /// [`v1::ObjectRef::sha256`] has it), read from the object's metadata without loading
    /// it; `None` when there is no such object, or it was deleted.
    pub async fn object_sha256(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<String>, ObjectError> {
        let store = self.object_store(bucket).await?;
        let info = match store.info(key).await {
            Ok(info) => info,
            Err(error) if error.kind() == object_store::InfoErrorKind::NotFound => {
                return Ok(None);
            }
            Err(error) => {
                return Err(ObjectError::Get {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    source: Box::new(error),
                });
            }
        };
        // A deleted object keeps its metadata, marked deleted (and its digest with it).
        if info.deleted {
            return Ok(None);
        }
        // NATS records `SHA-256=<base64url>` of the bytes it stored.
        use base64::Engine as _;
        let digest = info
            .digest
            .as_deref()
            .and_then(|digest| digest.strip_prefix("SHA-256="))
            .and_then(|encoded| {
                base64::engine::general_purpose::URL_SAFE
                    .decode(encoded)
                    .ok()
            });
        Ok(digest.map(|bytes| bytes.iter().map(|byte| format!("{byte:02x}")).collect()))
    }

    async fn get_object_bytes(&self, bucket: &str, key: &str) -> Result<Vec<u8>, ObjectError> {
        let store = self.object_store(bucket).await?;
        crate::object_read::read_whole(&store, bucket, key).await
    }
}

fn decode_stored<M: BusMessage>(bucket: &str, key: &str, stored: &[u8]) -> Result<M, ObjectError> {
    let encoded = decompress_bounded(bucket, key, stored, MAX_DECODED_BYTES)?;
    crate::decode::<M>(&encoded).map_err(|source| ObjectError::Decode {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        source,
    })
}

/// Decompresses `stored`, refusing it when it decodes to more than `limit` bytes.
fn decompress_bounded(
    bucket: &str,
    key: &str,
    stored: &[u8],
    limit: u64,
) -> Result<Vec<u8>, ObjectError> {
    use std::io::Read as _;
    let decompress_error = |source| ObjectError::Decompress {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        source,
    };
    let decoder = zstd::stream::read::Decoder::new(stored).map_err(decompress_error)?;
    let mut encoded = Vec::with_capacity(presize(stored, limit));
    decoder
        .take(limit.saturating_add(1))
        .read_to_end(&mut encoded)
        .map_err(decompress_error)?;
    if encoded.len() as u64 > limit {
        return Err(ObjectError::TooLarge {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            limit,
        });
    }
    Ok(encoded)
}

/// The buffer to decode `stored` into, sized once when its frame records its length (every
/// object keysync stores) instead of doubling up to it: at its last doubling a growing
/// buffer briefly holds 1.5 times the object. The length is the writer's word, and anyone
/// on the bus may write: past `limit`, or past what the stored bytes could plausibly hold
/// ([`MAX_PRESIZE_RATIO`]), it is not believed, and the buffer grows as the bytes come.
fn presize(stored: &[u8], limit: u64) -> usize {
    let plausible = (stored.len() as u64).saturating_mul(MAX_PRESIZE_RATIO);
    zstd::zstd_safe::get_frame_content_size(stored)
        .ok()
        .flatten()
        .filter(|&len| len <= limit && len <= plausible)
        .map_or(0, |len| len as usize + 1)
}

/// Lower-case hex SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_sized_from_a_plausible_recorded_length_only() {
        // Ids that compress as real ones do (a few times, not a thousand).
        let message = v1::Snapshot {
            users: (0..500u64)
                .map(|i| v1::KeycloakUser {
                    id: format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    username: format!("user{i}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let stored = compressed(&message).expect("compresses");
        let len = prost::Message::encoded_len(&message);
        assert_eq!(presize(&stored, 1 << 20), len + 1);
        // Past the bound.
        assert_eq!(presize(&stored, 100), 0);
        // 8 MiB of zeros claims its length truly, from a few hundred bytes: not believed.
        let bomb = zstd::bulk::compress(&vec![0u8; 8 << 20], ZSTD_LEVEL).expect("compresses");
        assert_eq!(presize(&bomb, 1 << 30), 0);
        // No frame at all.
        assert_eq!(presize(b"not zstd", 1 << 30), 0);
    }

    #[test]
    fn an_object_decoding_beyond_the_bound_is_refused() {
        // 8 MiB of zeros stores in a few hundred bytes.
        let bomb = zstd::bulk::compress(&vec![0u8; 8 << 20], ZSTD_LEVEL).expect("compresses");
        assert!(bomb.len() < 4096, "{} bytes", bomb.len());
        let error = decompress_bounded("b", "k", &bomb, 1 << 20).expect_err("refused");
        assert!(
            matches!(error, ObjectError::TooLarge { limit, .. } if limit == 1 << 20),
            "{error:?}"
        );
        assert!(error.is_permanent());
        assert_eq!(
            decompress_bounded("b", "k", &bomb, 8 << 20)
                .expect("within the bound")
                .len(),
            8 << 20
        );
    }
}
