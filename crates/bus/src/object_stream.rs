//! Reading a stored object as a stream, in a fixed amount of memory whatever its size: the
//! ListChanges of a run with half a million changes must not hold its plan.
//!
//! [`Bus::object_reader`] answers an [`ObjectReader`]: the object's stored bytes as they
//! come from the object store, their SHA-256 computed on the way, zstd-decompressed chunk by
//! chunk (the decoded size bounded as [`Bus::get_object`] bounds it). The checksum can only
//! be known at the end, so the read that reaches the end fails with
//! [`ObjectError::Checksum`] when it is not the announced one: a reader must read to the
//! end before it acts on what it read (a reader that needs a total does anyway).
//!
//! [`FieldReader`] walks the top-level protobuf fields of the decoded message one at a
//! time (`next_key`, then `read_bytes`, `read_varint` or `skip`), so the caller decodes one
//! element of a repeated field at a time and skips the fields it does not need. It knows
//! protobuf's wire format, nothing of which message it reads.

use async_nats::jetstream::object_store;
use prost::encoding::{WireType, decode_key, decode_varint};
use proto::v1;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use zstd::stream::raw::{Decoder, Operation};

use crate::{
    Bus, DecodeError,
    objects::{MAX_DECODED_BYTES, ObjectError, hex},
};

/// Compressed bytes read from the object store at a time.
const INPUT_CHUNK: usize = 64 * 1024;

/// Decoded bytes [`FieldReader`] holds at a time (a field longer than this is read into a
/// buffer of its own, bounded by the caller's `max_len`).
const FIELD_BUFFER: usize = 128 * 1024;

/// The decoded bytes of a stored object, read in order, its checksum verified at the end.
pub struct ObjectReader {
    bucket: String,
    key: String,
    source: Box<dyn AsyncRead + Send + Unpin>,
    expected_sha256: String,
    hasher: Sha256,
    decoder: Decoder<'static>,
    input: Box<[u8]>,
    input_start: usize,
    input_end: usize,
    input_ended: bool,
    /// Whether what was decoded last ended a zstd frame (a stream cut inside a frame is an
    /// error, not an early end).
    frame_complete: bool,
    decoded: u64,
    max_decoded: u64,
    done: bool,
}

impl ObjectReader {
    /// Reads the zstd-compressed `source` (the object `key` of `bucket`), checking that
    /// its SHA-256 is `expected_sha256` (hex) and that it decodes to at most `max_decoded`
    /// bytes.
    pub fn new(
        bucket: &str,
        key: &str,
        source: Box<dyn AsyncRead + Send + Unpin>,
        expected_sha256: &str,
        max_decoded: u64,
    ) -> Result<ObjectReader, ObjectError> {
        let decoder = Decoder::new().map_err(|source| ObjectError::Decompress {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source,
        })?;
        Ok(ObjectReader {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source,
            expected_sha256: expected_sha256.to_owned(),
            hasher: Sha256::new(),
            decoder,
            input: vec![0; INPUT_CHUNK].into_boxed_slice(),
            input_start: 0,
            input_end: 0,
            input_ended: false,
            frame_complete: false,
            decoded: 0,
            max_decoded,
            done: false,
        })
    }

    /// The bucket the object is in.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Reads decoded bytes into `out`; `Ok(0)` at the end (which comes only after the
    /// checksum matched and the last frame was whole).
    pub async fn read(&mut self, out: &mut [u8]) -> Result<usize, ObjectError> {
        if out.is_empty() || self.done {
            return Ok(0);
        }
        let mut idle = 0;
        loop {
            if self.input_start == self.input_end && !self.input_ended {
                self.read_input().await?;
            }
            let input = &self.input[self.input_start..self.input_end];
            let status = self
                .decoder
                .run_on_buffers(input, out)
                .map_err(|source| self.decompress_error(source))?;
            self.input_start += status.bytes_read;
            if status.bytes_read > 0 || status.bytes_written > 0 {
                self.frame_complete = status.remaining == 0;
                idle = 0;
            }
            if status.bytes_written > 0 {
                self.decoded += status.bytes_written as u64;
                if self.decoded > self.max_decoded {
                    return Err(ObjectError::TooLarge {
                        bucket: self.bucket.clone(),
                        key: self.key.clone(),
                        limit: self.max_decoded,
                    });
                }
                return Ok(status.bytes_written);
            }
            if self.input_ended && self.input_start == self.input_end {
                if !self.frame_complete {
                    return Err(self.decompress_error(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the object ends inside a zstd frame",
                    )));
                }
                self.done = true;
                return Ok(0);
            }
            if self.input_start < self.input_end {
                // zstd always consumes input or writes output while it has both; this
                // only guards against looping forever if it did not.
                idle += 1;
                if idle > 2 {
                    return Err(
                        self.decompress_error(std::io::Error::other("zstd made no progress"))
                    );
                }
            }
        }
    }

    /// Reads the next chunk of stored bytes, hashing it; at the end checks the checksum.
    async fn read_input(&mut self) -> Result<(), ObjectError> {
        let read = self
            .source
            .read(&mut self.input)
            .await
            .map_err(|source| ObjectError::Get {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                source: Box::new(source),
            })?;
        if read == 0 {
            self.input_ended = true;
            let found = hex(&self.hasher.finalize_reset());
            if !found.eq_ignore_ascii_case(&self.expected_sha256) {
                return Err(ObjectError::Checksum {
                    bucket: self.bucket.clone(),
                    key: self.key.clone(),
                    expected: self.expected_sha256.clone(),
                    found,
                });
            }
            return Ok(());
        }
        self.hasher.update(&self.input[..read]);
        self.input_start = 0;
        self.input_end = read;
        Ok(())
    }

    fn decompress_error(&self, source: std::io::Error) -> ObjectError {
        ObjectError::Decompress {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            source,
        }
    }
}

/// The top-level fields of the protobuf message an [`ObjectReader`] decodes, one at a time.
pub struct FieldReader {
    reader: ObjectReader,
    /// The message's name, for errors.
    kind: &'static str,
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    ended: bool,
}

impl FieldReader {
    /// Walks the fields of the `kind` message `reader` decodes.
    pub fn new(reader: ObjectReader, kind: &'static str) -> FieldReader {
        FieldReader {
            reader,
            kind,
            buffer: vec![0; FIELD_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            ended: false,
        }
    }

    /// The next field's tag and wire type; `None` at the end of the message (reached only
    /// after the object's checksum matched).
    pub async fn next_key(&mut self) -> Result<Option<(u32, WireType)>, ObjectError> {
        self.fill(10).await?;
        if self.start == self.end {
            return Ok(None);
        }
        let mut rest = &self.buffer[self.start..self.end];
        let before = rest.len();
        let key = decode_key(&mut rest).map_err(|error| self.malformed(error.to_string()))?;
        self.start += before - rest.len();
        Ok(Some(key))
    }

    /// The value of a varint field.
    pub async fn read_varint(&mut self) -> Result<u64, ObjectError> {
        self.fill(10).await?;
        let mut rest = &self.buffer[self.start..self.end];
        let before = rest.len();
        let value = decode_varint(&mut rest).map_err(|error| self.malformed(error.to_string()))?;
        self.start += before - rest.len();
        Ok(value)
    }

    /// The bytes of a length-delimited field (an embedded message, a string), refused
    /// when longer than `max_len`.
    pub async fn read_bytes(&mut self, max_len: usize) -> Result<Vec<u8>, ObjectError> {
        let len = self.read_length().await?;
        if len > max_len {
            return Err(self.malformed(format!(
                "a field of {len} bytes, more than the {max_len} allowed"
            )));
        }
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            if self.start == self.end {
                self.fill(1).await?;
                if self.start == self.end {
                    return Err(self.malformed("the message ends inside a field".to_owned()));
                }
            }
            let take = (len - bytes.len()).min(self.end - self.start);
            bytes.extend_from_slice(&self.buffer[self.start..self.start + take]);
            self.start += take;
        }
        Ok(bytes)
    }

    /// Skips the value of a field of `wire_type` (groups, deprecated, are refused).
    pub async fn skip(&mut self, wire_type: WireType) -> Result<(), ObjectError> {
        let len = match wire_type {
            WireType::Varint => {
                self.read_varint().await?;
                return Ok(());
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => self.read_length().await?,
            WireType::StartGroup | WireType::EndGroup => {
                return Err(self.malformed("a group field".to_owned()));
            }
        };
        let mut left = len;
        while left > 0 {
            if self.start == self.end {
                self.fill(1).await?;
                if self.start == self.end {
                    return Err(self.malformed("the message ends inside a field".to_owned()));
                }
            }
            let take = left.min(self.end - self.start);
            self.start += take;
            left -= take;
        }
        Ok(())
    }

    /// The error of a message that is not valid protobuf, as [`crate::decode`] words it.
    pub fn malformed(&self, reason: String) -> ObjectError {
        ObjectError::Decode {
            bucket: self.reader.bucket().to_owned(),
            key: self.reader.key().to_owned(),
            source: DecodeError::Malformed {
                kind: self.kind,
                reason,
            },
        }
    }

    async fn read_length(&mut self) -> Result<usize, ObjectError> {
        let len = self.read_varint().await?;
        usize::try_from(len).map_err(|_| self.malformed(format!("a field of {len} bytes")))
    }

    /// Reads until `want` bytes are buffered or the message ended.
    async fn fill(&mut self, want: usize) -> Result<(), ObjectError> {
        if self.end - self.start >= want || self.ended {
            return Ok(());
        }
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < want {
            let read = self.reader.read(&mut self.buffer[self.end..]).await?;
            if read == 0 {
                self.ended = true;
                break;
            }
            self.end += read;
        }
        Ok(())
    }
}

impl Bus {
    /// A streaming reader of the object `object` names: its decoded bytes, in order, in a
    /// fixed amount of memory; its checksum is checked when the read reaches the end.
    pub async fn object_reader(&self, object: &v1::ObjectRef) -> Result<ObjectReader, ObjectError> {
        let (bucket, key) = (object.bucket.as_str(), object.key.as_str());
        let store = self.object_store(bucket).await?;
        let source = match store.get(key).await {
            Ok(source) => source,
            Err(error) if error.kind() == object_store::GetErrorKind::NotFound => {
                return Err(ObjectError::NotFound {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                });
            }
            Err(error) => {
                return Err(ObjectError::Get {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    source: Box::new(error),
                });
            }
        };
        ObjectReader::new(
            bucket,
            key,
            Box::new(crate::object_read::Stalling::new(
                source,
                crate::object_read::READ_STALL,
            )),
            &object.sha256,
            MAX_DECODED_BYTES,
        )
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn reader(stored: Vec<u8>, sha256: &str, max_decoded: u64) -> ObjectReader {
        ObjectReader::new(
            "b",
            "k",
            Box::new(std::io::Cursor::new(stored)),
            sha256,
            max_decoded,
        )
        .expect("a decoder")
    }

    async fn read_all(reader: &mut ObjectReader) -> Result<Vec<u8>, ObjectError> {
        let mut all = Vec::new();
        let mut chunk = vec![0; 1000];
        loop {
            let read = reader.read(&mut chunk).await?;
            if read == 0 {
                return Ok(all);
            }
            all.extend_from_slice(&chunk[..read]);
        }
    }

    fn plan_with(changes: usize) -> v1::Plan {
        v1::Plan {
            schema_version: v1::SCHEMA_VERSION,
            run_id: "R".to_owned(),
            changes: (0..changes)
                .map(|index| v1::Change {
                    id: format!("change-{index}"),
                    reason: "x".repeat(index % 300),
                    ..v1::Change::default()
                })
                .collect(),
            hold_reason: "held".to_owned(),
            ..v1::Plan::default()
        }
    }

    #[tokio::test]
    async fn a_stored_object_reads_back_in_chunks_and_field_by_field() {
        let plan = plan_with(2000);
        let encoded = plan.encode_to_vec();
        let stored = zstd::bulk::compress(&encoded, 3).expect("compresses");
        let sha = hex(&Sha256::digest(&stored));
        let mut whole = reader(stored.clone(), &sha, u64::MAX);
        assert_eq!(read_all(&mut whole).await.expect("reads"), encoded);

        let mut fields = FieldReader::new(reader(stored, &sha, u64::MAX), "Plan");
        let mut ids = Vec::new();
        while let Some((tag, wire_type)) = fields.next_key().await.expect("a key") {
            if tag == 5 {
                let bytes = fields.read_bytes(1 << 20).await.expect("a change");
                ids.push(v1::Change::decode(bytes.as_slice()).expect("decodes").id);
            } else {
                fields.skip(wire_type).await.expect("skips");
            }
        }
        let expected: Vec<String> = plan.changes.into_iter().map(|change| change.id).collect();
        assert_eq!(ids, expected);
    }

    #[tokio::test]
    async fn a_wrong_checksum_fails_the_read_at_the_end() {
        let stored = zstd::bulk::compress(&plan_with(10).encode_to_vec(), 3).expect("compresses");
        let mut wrong = reader(stored, "00", u64::MAX);
        let error = read_all(&mut wrong).await.expect_err("refused");
        assert!(matches!(error, ObjectError::Checksum { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn a_truncated_object_or_a_bomb_is_refused() {
        let stored = zstd::bulk::compress(&plan_with(100).encode_to_vec(), 3).expect("compresses");
        let cut = stored[..stored.len() / 2].to_vec();
        let sha = hex(&Sha256::digest(&cut));
        let error = read_all(&mut reader(cut, &sha, u64::MAX))
            .await
            .expect_err("refused");
        assert!(matches!(error, ObjectError::Decompress { .. }), "{error:?}");

        let bomb = zstd::bulk::compress(&vec![0u8; 4 << 20], 19).expect("compresses");
        assert!(bomb.len() < 4096, "{} bytes", bomb.len());
        let sha = hex(&Sha256::digest(&bomb));
        let error = read_all(&mut reader(bomb, &sha, 1 << 20))
            .await
            .expect_err("refused");
        assert!(
            matches!(error, ObjectError::TooLarge { limit, .. } if limit == 1 << 20),
            "{error:?}"
        );
    }
}
