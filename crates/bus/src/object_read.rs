//! Reading an object from the JetStream object store without waiting for ever.
//!
//! async-nats reads an object's chunks with an ordered consumer on the chunk subject of the
//! version its `get` found (`$O.{bucket}.C.{nuid}`). When a writer replaces the object
//! between that `get` and the last chunk, NATS purges the old version's chunks and the
//! consumer waits for chunks that never come: the read hangs, and nothing times it out. A
//! replica of the applier held a change set for ever that way, reading the product state its
//! twin kept replacing (R7 in `tests/e2e/reliability.rs`).
//!
//! [`read_whole`] reads chunk by chunk; a read that waits [`CHUNK_WAIT`] for the next one
//! asks for the object's metadata and starts again on the newer version when it was
//! replaced (or answers not found when it was deleted), and fails with
//! [`ObjectError::Stalled`] after [`READ_STALL`] without a chunk when it was not.
//! [`Stalling`] puts the same bound on a streaming read.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::object_store::{self, Object, ObjectStore};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::objects::ObjectError;

/// How long a read waits for the next chunk before it checks whether the object was
/// replaced.
pub const CHUNK_WAIT: Duration = Duration::from_secs(1);

/// How long a read of an object that was not replaced may go without a chunk.
pub const READ_STALL: Duration = Duration::from_secs(60);

/// How many times in a row a read starts again because the object was replaced under it.
const MAX_RESTARTS: u32 = 50;

/// The stored bytes of object `key`, read whole; [`ObjectError::NotFound`] when there is
/// none.
pub(crate) async fn read_whole(
    store: &ObjectStore,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, ObjectError> {
    let first = open(store, bucket, key).await?;
    read_from(store, bucket, key, first, CHUNK_WAIT, READ_STALL).await
}

async fn open(store: &ObjectStore, bucket: &str, key: &str) -> Result<Object, ObjectError> {
    match store.get(key).await {
        Ok(object) => Ok(object),
        Err(error) if error.kind() == object_store::GetErrorKind::NotFound => {
            Err(not_found(bucket, key))
        }
        Err(error) => Err(get_error(bucket, key, Box::new(error))),
    }
}

/// Reads `object`, a version of `key` already opened, starting again on the newest version
/// whenever the one in hand was replaced.
async fn read_from(
    store: &ObjectStore,
    bucket: &str,
    key: &str,
    mut object: Object,
    chunk_wait: Duration,
    stall: Duration,
) -> Result<Vec<u8>, ObjectError> {
    let mut restarts = 0;
    'version: loop {
        let nuid = object.info().nuid.clone();
        let mut stored = Vec::with_capacity(object.info().size.min(64 << 20));
        let mut waited = Duration::ZERO;
        loop {
            match tokio::time::timeout(chunk_wait, object.read_buf(&mut stored)).await {
                Ok(Ok(0)) => return Ok(stored),
                Ok(Ok(_)) => waited = Duration::ZERO,
                Ok(Err(error)) => return Err(get_error(bucket, key, Box::new(error))),
                Err(_) => {
                    waited += chunk_wait;
                    let replaced = match store.info(key).await {
                        Ok(info) => info.deleted || info.nuid != nuid,
                        Err(error) if error.kind() == object_store::InfoErrorKind::NotFound => true,
                        Err(error) => return Err(get_error(bucket, key, Box::new(error))),
                    };
                    if replaced && restarts < MAX_RESTARTS {
                        restarts += 1;
                        tracing::debug!(
                            bucket,
                            key,
                            "The object was replaced while it was read; reading the newer one."
                        );
                        object = open(store, bucket, key).await?;
                        continue 'version;
                    }
                    if replaced || waited >= stall {
                        return Err(ObjectError::Stalled {
                            bucket: bucket.to_owned(),
                            key: key.to_owned(),
                            waited,
                        });
                    }
                }
            }
        }
    }
}

fn not_found(bucket: &str, key: &str) -> ObjectError {
    ObjectError::NotFound {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    }
}

fn get_error(
    bucket: &str,
    key: &str,
    source: Box<dyn std::error::Error + Send + Sync>,
) -> ObjectError {
    ObjectError::Get {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        source,
    }
}

/// A streaming read that fails with [`std::io::ErrorKind::TimedOut`] once it has waited
/// `limit` for bytes (a version purged under it never sends its chunks).
pub struct Stalling<R> {
    inner: R,
    limit: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl<R> Stalling<R> {
    pub fn new(inner: R, limit: Duration) -> Stalling<R> {
        Stalling {
            inner,
            limit,
            idle: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Stalling<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(context, buf) {
            Poll::Ready(read) => {
                let next = tokio::time::Instant::now() + this.limit;
                this.idle.as_mut().reset(next);
                Poll::Ready(read)
            }
            Poll::Pending => match this.idle.as_mut().poll(context) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no bytes for {:?}", this.limit),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use test_support::nats::NatsServer;

    use super::*;

    async fn store(nats: &NatsServer) -> ObjectStore {
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let jetstream = async_nats::jetstream::new(client);
        jetstream
            .create_object_store(object_store::Config {
                bucket: "read".to_owned(),
                ..Default::default()
            })
            .await
            .expect("bucket")
    }

    /// Bytes that take several chunks (128 KiB each).
    fn version(byte: u8) -> Vec<u8> {
        vec![byte; 600 << 10]
    }

    /// [`read_from`] of `opened`, with short waits, failing the test if it hangs.
    async fn read_opened(store: &ObjectStore, opened: Object) -> Result<Vec<u8>, ObjectError> {
        let read = read_from(
            store,
            "read",
            "state",
            opened,
            Duration::from_millis(200),
            Duration::from_secs(5),
        );
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("the read does not hang")
    }

    #[tokio::test]
    async fn a_read_whose_object_is_replaced_under_it_reads_the_newer_version() {
        let nats = NatsServer::start().expect("nats-server");
        let store = store(&nats).await;
        store
            .put("state", &mut version(1).as_slice())
            .await
            .expect("put");
        let opened = open(&store, "read", "state").await.expect("opened");
        // The old version's chunks are purged before the read asks for them: async-nats
        // alone waits for them for ever.
        store
            .put("state", &mut version(2).as_slice())
            .await
            .expect("put again");
        let read = read_opened(&store, opened)
            .await
            .expect("the newer version");
        assert_eq!(read, version(2));
    }

    #[tokio::test]
    async fn a_read_whose_object_is_deleted_under_it_is_not_found() {
        let nats = NatsServer::start().expect("nats-server");
        let store = store(&nats).await;
        store
            .put("state", &mut version(1).as_slice())
            .await
            .expect("put");
        let opened = open(&store, "read", "state").await.expect("opened");
        store.delete("state").await.expect("delete");
        let read = read_opened(&store, opened).await;
        assert!(
            matches!(read, Err(ObjectError::NotFound { .. })),
            "{read:?}"
        );
    }

    #[tokio::test]
    async fn a_streaming_read_without_bytes_fails_after_the_limit() {
        // The writer half is kept and never written to: the reader waits for ever.
        let (reader, _writer) = tokio::io::duplex(64);
        let mut stalling = Stalling::new(reader, Duration::from_millis(100));
        let mut buffer = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), stalling.read(&mut buffer))
            .await
            .expect("the limit ends the read");
        let error = read.expect_err("no bytes came");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    }
}
