//! A message encoded straight into zstd, so a stored object's uncompressed encoding never
//! exists whole in memory: at 100,000 users a snapshot encodes to ~40 MB, which the
//! fetcher held next to the message itself (and its compressed form) at the moment of its
//! peak, a few MiB under its 256 MiB limit.
//!
//! prost encodes into any [`BufMut`]; [`Spill`] is one with a small staging buffer that it
//! hands to the zstd encoder whenever it fills. The frame records the encoded length
//! (`pledged`), as `zstd::bulk::compress` did, so a reader can size its buffer once.

use std::io::{self, Write};

use bytes::buf::{BufMut, UninitSlice};
use prost::Message;

/// The staging buffer between prost and zstd.
const STAGING: usize = 64 * 1024;

/// `message`, encoded and zstd-compressed at `level`, in about the memory of the result.
pub(crate) fn encode_compressed<M: Message>(message: &M, level: i32) -> io::Result<Vec<u8>> {
    let len = message.encoded_len();
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), level)?;
    encoder.include_contentsize(true)?;
    encoder.set_pledged_src_size(Some(len as u64))?;
    let mut spill = Spill::new(&mut encoder, STAGING.min(len));
    message
        .encode(&mut spill)
        .map_err(|error| io::Error::other(error.to_string()))?;
    spill.flush()?;
    encoder.finish()
}

/// A [`BufMut`] that passes what is written to it on to `out`, [`STAGING`] bytes at a
/// time. A write error is kept and answered by [`Spill::flush`]; what follows it is dropped.
struct Spill<'a, W: Write> {
    staged: Vec<u8>,
    out: &'a mut W,
    failed: Option<io::Error>,
}

impl<'a, W: Write> Spill<'a, W> {
    /// A spill into `out` staging up to `capacity` bytes (at least one, so that
    /// [`BufMut::chunk_mut`] is never empty).
    fn new(out: &'a mut W, capacity: usize) -> Self {
        Spill {
            staged: Vec::with_capacity(capacity.max(1)),
            out,
            failed: None,
        }
    }

    /// Hands the staged bytes on, unless a write failed before (the error is kept).
    fn spill(&mut self) {
        if self.failed.is_none()
            && !self.staged.is_empty()
            && let Err(error) = self.out.write_all(&self.staged)
        {
            self.failed = Some(error);
        }
        self.staged.clear();
    }

    /// Hands the staged bytes on; answers the first write error, if any.
    fn flush(&mut self) -> io::Result<()> {
        self.spill();
        self.failed.take().map_or(Ok(()), Err)
    }
}

// SAFETY: `chunk_mut` answers only the spare capacity of `staged` (never empty: it is
// flushed when full), and `advance_mut` extends `staged`'s length over bytes the caller
// has initialised, within its capacity, as `BufMut`'s contract requires of the caller.
unsafe impl<W: Write> BufMut for Spill<'_, W> {
    fn remaining_mut(&self) -> usize {
        // Unbounded, like `Vec<u8>`'s: everything goes on to `out`.
        isize::MAX as usize - self.staged.len()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        let len = self.staged.len() + cnt;
        assert!(
            len <= self.staged.capacity(),
            "advanced past the staging buffer"
        );
        // SAFETY: the caller initialised `cnt` bytes of the spare capacity `chunk_mut`
        // answered, and `len` is within the capacity.
        unsafe { self.staged.set_len(len) };
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.staged.len() == self.staged.capacity() {
            self.spill();
        }
        UninitSlice::uninit(self.staged.spare_capacity_mut())
    }
}

#[cfg(test)]
mod tests {
    use proto::v1;

    use super::*;

    fn snapshot(users: usize) -> v1::Snapshot {
        v1::Snapshot {
            schema_version: v1::SCHEMA_VERSION,
            run_id: "01RUN".to_owned(),
            users: (0..users)
                .map(|i| v1::KeycloakUser {
                    id: format!("{i:08x}-0000-4000-8000-000000000000"),
                    username: format!("user{i}"),
                    email: format!("user{i}@example.com"),
                    enabled: i % 3 != 0,
                    attributes: [(
                        "department".to_owned(),
                        v1::StringList {
                            values: vec![format!("d{}", i % 7)],
                        },
                    )]
                    .into_iter()
                    .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn decompressed(stored: &[u8]) -> Vec<u8> {
        zstd::stream::decode_all(stored).expect("decompresses")
    }

    #[test]
    fn the_stream_holds_exactly_the_messages_encoding() {
        // Across many staging buffers, within one, and empty.
        for users in [20_000, 3, 0] {
            let message = snapshot(users);
            let stored = encode_compressed(&message, 3).expect("compresses");
            assert_eq!(
                decompressed(&stored),
                message.encode_to_vec(),
                "{users} users"
            );
        }
    }

    #[test]
    fn the_frame_records_the_encoded_length() {
        let message = snapshot(5_000);
        let stored = encode_compressed(&message, 3).expect("compresses");
        let recorded = zstd::zstd_safe::get_frame_content_size(&stored).expect("a frame");
        assert_eq!(recorded, Some(message.encoded_len() as u64));
    }

    #[test]
    fn a_write_error_is_answered_not_swallowed() {
        struct Refusing;
        impl Write for Refusing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = Refusing;
        let mut spill = Spill::new(&mut out, 16);
        snapshot(100)
            .encode(&mut spill)
            .expect("prost never sees it");
        let error = spill.flush().expect_err("the write error");
        assert_eq!(error.to_string(), "disk full");
    }
}
