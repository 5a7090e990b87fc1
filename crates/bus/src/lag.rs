//! Consumer lag as metrics: how many messages wait for a service, read from JetStream's
//! consumer info every few seconds and recorded as gauges (exported by the `telemetry`
//! crate's meter provider):
//!
//! - `keysync_consumer_pending_messages{stream, consumer}`: messages of the stream that
//!   match the consumer's filter and were not delivered yet, the backlog;
//! - `keysync_consumer_ack_pending_messages{stream, consumer}`: messages delivered and not
//!   acknowledged yet, the work in hand (or lost with a replica until its ack wait ends).
//!
//! A service watches the durable consumers it pulls from with [`ConsumerLag::spawn`] and
//! stops the watch when it shuts down.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use opentelemetry::{KeyValue, metrics::Gauge};
use tokio::{sync::watch, task::JoinHandle};

/// The name of the backlog gauge.
pub const PENDING_MESSAGES: &str = "keysync_consumer_pending_messages";
/// The name of the in-hand gauge.
pub const ACK_PENDING_MESSAGES: &str = "keysync_consumer_ack_pending_messages";

/// How often the consumers' info is read by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// A task that records the lag of some consumers until stopped.
#[derive(Debug)]
pub struct ConsumerLag {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Gauges {
    pending: Gauge<u64>,
    ack_pending: Gauge<u64>,
}

impl Gauges {
    fn new() -> Gauges {
        let meter = opentelemetry::global::meter("keysync");
        Gauges {
            pending: meter
                .u64_gauge(PENDING_MESSAGES)
                .with_description(
                    "Messages waiting for a durable consumer (not delivered yet), by stream and consumer.",
                )
                .with_unit("{message}")
                .build(),
            ack_pending: meter
                .u64_gauge(ACK_PENDING_MESSAGES)
                .with_description(
                    "Messages delivered to a durable consumer and not acknowledged yet, by stream and consumer.",
                )
                .with_unit("{message}")
                .build(),
        }
    }
}

/// One consumer's lag, as JetStream reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lag {
    pub stream: String,
    pub consumer: String,
    /// Messages not delivered yet.
    pub pending: u64,
    /// Messages delivered and not acknowledged yet.
    pub ack_pending: u64,
}

/// Reads the lag of each consumer; a consumer whose info cannot be read is left out (and
/// logged at debug level).
pub async fn read(consumers: &[PullConsumer]) -> Vec<Lag> {
    let mut lags = Vec::with_capacity(consumers.len());
    for consumer in consumers {
        match consumer.get_info().await {
            Ok(info) => lags.push(Lag {
                stream: info.stream_name,
                consumer: info.name,
                pending: info.num_pending,
                ack_pending: info.num_ack_pending as u64,
            }),
            Err(error) => {
                tracing::debug!(error = %error, "Cannot read a consumer's info for its lag.");
            }
        }
    }
    lags
}

impl Gauges {
    async fn read(&self, consumers: &[PullConsumer]) {
        for lag in read(consumers).await {
            let labels = [
                KeyValue::new("stream", lag.stream),
                KeyValue::new("consumer", lag.consumer),
            ];
            self.pending.record(lag.pending, &labels);
            self.ack_pending.record(lag.ack_pending, &labels);
        }
    }
}

impl ConsumerLag {
    /// Reads the info of every consumer now and then every `interval`, until
    /// [`ConsumerLag::stop`]. A failed read is logged at debug level and skipped.
    pub fn spawn(consumers: Vec<PullConsumer>, interval: Duration) -> ConsumerLag {
        let (stop, mut stopped) = watch::channel(false);
        let gauges = Gauges::new();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|stopped| *stopped) => return,
                    _ = ticker.tick() => {}
                }
                tokio::select! {
                    _ = stopped.wait_for(|stopped| *stopped) => return,
                    () = gauges.read(&consumers) => {}
                }
            }
        });
        ConsumerLag { stop, task }
    }

    /// Stops the watch and waits for its task.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
