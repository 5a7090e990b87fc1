//! A service's durable consumer deleted under it: what every service's rebind test does,
//! and what it reads afterwards.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull};

/// How long a service may take to bind its consumer again.
pub const REBIND_TIMEOUT: Duration = Duration::from_secs(30);

/// What a consumer has done, from the server's consumer info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Messages delivered by this consumer (redeliveries included).
    pub delivered: u64,
    /// Messages not delivered yet.
    pub pending: u64,
    /// Messages delivered and not acknowledged yet.
    pub ack_pending: usize,
}

impl Delivered {
    /// One message delivered, once, and nothing waiting: what a consumer made again after
    /// [`delete_consumer_and_wait`] shows when only the message published afterwards was
    /// handled — nothing handled before it came again, nothing was lost.
    pub const ONE: Delivered = Delivered {
        delivered: 1,
        pending: 0,
        ack_pending: 0,
    };
}

/// Deletes `consumer` on `stream` while a service pulls from it, then waits until the
/// service's readiness (read through `transitions`, `(consumer, ready)` changes oldest
/// first, and `ready`) showed it unbound and then bound again, and — when `health` is
/// given — `/readyz` answers 200 again.
pub async fn delete_consumer_and_wait(
    jetstream: &jetstream::Context,
    stream: &str,
    consumer: &str,
    transitions: impl Fn() -> Vec<(String, bool)>,
    ready: impl Fn() -> bool,
    health: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let seen = transitions().len();
    jetstream
        .get_stream(stream)
        .await
        .with_context(|| format!("stream {stream}"))?
        .delete_consumer(consumer)
        .await
        .with_context(|| format!("deleting consumer {consumer}"))?;
    wait_for_rebind(consumer, seen, &transitions, &ready).await?;
    if let Some(address) = health {
        crate::http::wait_for_status(address, "/readyz", 200, REBIND_TIMEOUT).await?;
    }
    Ok(())
}

/// Waits until the readiness changes after the first `seen` (read through `transitions`,
/// `(consumer, ready)` oldest first) show `consumer` unbound and then bound again, and the
/// service is `ready`, for at most [`REBIND_TIMEOUT`].
pub async fn wait_for_rebind(
    consumer: &str,
    seen: usize,
    transitions: impl Fn() -> Vec<(String, bool)>,
    ready: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + REBIND_TIMEOUT;
    loop {
        let changes: Vec<(String, bool)> = transitions().into_iter().skip(seen).collect();
        let down = changes
            .iter()
            .position(|(name, ready)| name == consumer && !ready);
        let up_after = down.is_some_and(|down| {
            changes[down..]
                .iter()
                .any(|(name, ready)| name == consumer && *ready)
        });
        if up_after && ready() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "consumer {consumer} was not bound again within {REBIND_TIMEOUT:?}: {changes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What `consumer` on `stream` delivered so far.
pub async fn delivered(
    jetstream: &jetstream::Context,
    stream: &str,
    consumer: &str,
) -> anyhow::Result<Delivered> {
    let mut consumer = jetstream
        .get_stream(stream)
        .await
        .with_context(|| format!("stream {stream}"))?
        .get_consumer::<pull::Config>(consumer)
        .await
        .map_err(|error| anyhow::anyhow!("consumer {consumer}: {error}"))?;
    let info = consumer.info().await?;
    Ok(Delivered {
        delivered: info.delivered.consumer_sequence,
        pending: info.num_pending,
        ack_pending: info.num_ack_pending,
    })
}
