//! Reading a response body with a byte limit.
//!
//! A body is read chunk by chunk as it arrives and never buffered past
//! [`Connection::max_body_bytes`](crate::config::Connection::max_body_bytes) (64 MiB by
//! default, [`DEFAULT_MAX_BODY_BYTES`](crate::config::DEFAULT_MAX_BODY_BYTES)): a
//! `Content-Length` above the limit fails before any of the body is read, and a body that
//! grows past it (chunked, or longer than announced) fails at the chunk that crosses it.
//! Either is [`Error::ResponseTooLarge`](crate::Error::ResponseTooLarge), which names the
//! limit and is never retried: the same request would get the same answer.

use bytes::{Bytes, BytesMut};

/// Why a body could not be read.
#[derive(Debug)]
pub(super) enum BodyError {
    /// The connection failed while the body was read; retried like any transport error.
    Transport(reqwest::Error),
    /// The body is larger than the limit.
    TooLarge,
}

/// The most bytes reserved up front from a `Content-Length`, so that a large announced
/// length costs memory only as its bytes arrive.
const MAX_PREALLOCATION: usize = 1 << 20;

/// The body of `response`, at most `limit` bytes of it; [`BodyError::TooLarge`] as soon as
/// it is known to be longer.
pub(super) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let announced = response.content_length();
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let capacity = announced
        .and_then(|length| usize::try_from(length).ok())
        .unwrap_or(0)
        .min(MAX_PREALLOCATION);
    let mut body = BytesMut::with_capacity(capacity);
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        let total = body.len().checked_add(chunk.len());
        if total.is_none_or(|total| total > limit) {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
