//! Durable consumers that read several subjects of one stream: the planner joins snapshots,
//! product states and approvals from the events stream through one consumer, so it sees
//! them in the order they were published.

use std::time::Duration;

use async_nats::jetstream::consumer;

use crate::{Bus, Error};

impl Bus {
    /// A durable pull consumer with explicit acks on `stream` that receives the messages of
    /// every subject in `filter_subjects` (NATS 2.10+), created if missing. Replicas that
    /// use the same `name` share the messages. An existing consumer keeps its filters.
    pub async fn durable_consumer_of_subjects(
        &self,
        stream: &str,
        name: &str,
        filter_subjects: &[String],
        ack_wait: Duration,
    ) -> Result<consumer::PullConsumer, Error> {
        let spec = crate::worker::ConsumerSpec {
            stream: stream.to_owned(),
            name: name.to_owned(),
            filter_subjects: filter_subjects.to_vec(),
            ack_wait,
        };
        let stream_handle = self
            .jetstream()
            .get_stream(stream)
            .await
            .map_err(|error| spec.error(Box::new(error)))?;
        stream_handle
            .get_or_create_consumer(name, spec.config(consumer::DeliverPolicy::All))
            .await
            .map_err(|error| spec.error(Box::new(error)))
    }
}
