//! The bus against a real nats-server with JetStream: publish, consume through a durable
//! consumer with explicit acks, redelivery of what was not acknowledged, dead letters.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use bus::{Bus, DEAD_REASON_HEADER, DecodeError, Topology};
use futures::StreamExt;
use proto::v1::{self, ChangeSet, Product, RunMode, RunRequested};
use test_support::nats::NatsServer;

fn run_requested(run_id: &str) -> RunRequested {
    RunRequested {
        schema_version: v1::SCHEMA_VERSION,
        run_id: run_id.to_owned(),
        mode: RunMode::Simulate as i32,
        products: vec![Product::Jira as i32],
        connector: "corp".to_owned(),
        requested_at: None,
        requested_by: "test".to_owned(),
        event: None,
    }
}

async fn next_message(consumer: &PullConsumer) -> Option<async_nats::jetstream::Message> {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .expect("fetch");
    batch.next().await.map(|message| message.expect("message"))
}

#[tokio::test]
async fn durable_consumer_delivers_published_messages_once_acknowledged() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new("t1"))
        .await
        .expect("bus");
    let subject = bus.topology().run_requested();
    for run_id in ["run-1", "run-2"] {
        bus.publish(&subject, &run_requested(run_id), run_id)
            .await
            .expect("publish");
    }
    // A repeated publish with the same message id is dropped by the duplicate window.
    bus.publish(&subject, &run_requested("run-1"), "run-1")
        .await
        .expect("publish");

    let stream = bus.topology().events_stream();
    let consumer = bus
        .durable_consumer(&stream, "fetcher", &subject, Duration::from_secs(30))
        .await
        .expect("consumer");
    let mut seen = Vec::new();
    while let Some(message) = next_message(&consumer).await {
        let decoded: RunRequested = bus::decode(&message.payload).expect("decodes");
        message.double_ack().await.expect("ack");
        seen.push(decoded.run_id);
    }
    assert_eq!(seen, ["run-1", "run-2"]);

    // The same durable name, bound again (a restarted service), has nothing left.
    let again = bus
        .durable_consumer(&stream, "fetcher", &subject, Duration::from_secs(30))
        .await
        .expect("consumer");
    assert!(
        next_message(&again).await.is_none(),
        "acknowledged messages came back"
    );
    let mut info = again.clone();
    let info = info.info().await.expect("consumer info");
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.delivered.stream_sequence, 2);
}

#[tokio::test]
async fn unacknowledged_message_is_redelivered_to_another_replica() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new("t2"))
        .await
        .expect("bus");
    let subject = bus.topology().changes("jira");
    let change_set = ChangeSet {
        schema_version: v1::SCHEMA_VERSION,
        run_id: "run-1".to_owned(),
        product: Product::Jira as i32,
        sequence: 0,
        total_sets: 1,
        ..ChangeSet::default()
    };
    bus.publish(&subject, &change_set, "run-1/jira/0")
        .await
        .expect("publish");
    let stream = bus.topology().changes_stream();
    let name = bus.topology().applier_consumer("jira");
    let ack_wait = Duration::from_secs(1);
    let replica_a = bus
        .durable_consumer(&stream, &name, &subject, ack_wait)
        .await
        .expect("consumer");
    let replica_b = bus
        .durable_consumer(&stream, &name, &subject, ack_wait)
        .await
        .expect("consumer");

    // Replica A takes the message and dies without acknowledging it.
    let first = next_message(&replica_a).await.expect("delivered");
    assert_eq!(first.info().expect("info").delivered, 1);
    drop(first);

    // Replica B gets it once the ack wait has passed, as its second delivery.
    let mut redelivered = None;
    for _ in 0..20 {
        if let Some(message) = next_message(&replica_b).await {
            redelivered = Some(message);
            break;
        }
    }
    let redelivered = redelivered.expect("redelivered after the ack wait");
    assert_eq!(redelivered.info().expect("info").delivered, 2);
    let decoded: ChangeSet = bus::decode(&redelivered.payload).expect("decodes");
    assert_eq!(decoded, change_set);
    redelivered.double_ack().await.expect("ack");

    // Work-queue retention: the acknowledged change set is gone from the stream.
    let mut stream_handle = bus.jetstream().get_stream(&stream).await.expect("stream");
    assert_eq!(stream_handle.info().await.expect("info").state.messages, 0);
}

#[tokio::test]
async fn malformed_message_goes_to_the_dead_letter_stream_and_the_next_one_is_consumed() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new("t3"))
        .await
        .expect("bus");
    let subject = bus.topology().changes("confluence");
    bus.jetstream()
        .publish(subject.clone(), "not protobuf \u{1}\u{2}\u{3}".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let good = ChangeSet {
        schema_version: v1::SCHEMA_VERSION,
        run_id: "run-9".to_owned(),
        product: Product::Confluence as i32,
        ..ChangeSet::default()
    };
    bus.publish(&subject, &good, "run-9/confluence/0")
        .await
        .expect("publish");

    let consumer = bus
        .durable_consumer(
            &bus.topology().changes_stream(),
            "applier-confluence",
            &subject,
            Duration::from_secs(30),
        )
        .await
        .expect("consumer");
    let mut decoded = Vec::new();
    while let Some(message) = next_message(&consumer).await {
        match bus::decode::<ChangeSet>(&message.payload) {
            Ok(change_set) => {
                message.double_ack().await.expect("ack");
                decoded.push(change_set.run_id);
            }
            Err(error) => bus
                .dead_letter(&message, &error.to_string())
                .await
                .expect("dead-lettering works"),
        }
    }
    assert_eq!(decoded, ["run-9"]);

    let dead_subject = bus.topology().dead_letter(&subject);
    assert_eq!(dead_subject, "t3.dead.changes.confluence");
    let mut dead_stream = bus
        .jetstream()
        .get_stream(bus.topology().dead_stream())
        .await
        .expect("dead stream");
    let dead = dead_stream
        .get_last_raw_message_by_subject(&dead_subject)
        .await
        .expect("dead letter");
    assert_eq!(&dead.payload[..], "not protobuf \u{1}\u{2}\u{3}".as_bytes());
    let reason = dead
        .headers
        .get(DEAD_REASON_HEADER)
        .expect("reason header")
        .to_string();
    assert!(
        reason.contains("not a valid ChangeSet protobuf"),
        "reason: {reason}"
    );
    assert_eq!(dead_stream.info().await.expect("info").state.messages, 1);
}

/// A rolling upgrade: a newer producer's messages (a newer minor revision, with fields this
/// build does not know) are read, not dead-lettered; a message of another major revision
/// is refused, naming the message and both versions.
#[test]
fn a_newer_minor_version_is_read_and_another_major_refused_by_name() {
    let mut message = run_requested("run-1");
    message.schema_version = v1::SCHEMA_VERSION + 1;
    let mut newer = bus::encode(&message).to_vec();
    // Fields a newer producer added, which this build does not know.
    prost::encoding::string::encode(900, &"from a newer planner".to_owned(), &mut newer);
    prost::encoding::uint64::encode(901, &7, &mut newer);
    let decoded = bus::decode::<RunRequested>(&newer).expect("a newer minor is read");
    assert_eq!(decoded, message, "the unknown fields are skipped");

    let last_of_major = v1::SCHEMA_MAJOR * v1::SCHEMA_MAJOR_STRIDE - 1;
    message.schema_version = last_of_major;
    assert!(bus::decode::<RunRequested>(&bus::encode(&message)).is_ok());

    let next_major = v1::SCHEMA_MAJOR * v1::SCHEMA_MAJOR_STRIDE;
    assert_eq!(v1::schema_major(next_major), v1::SCHEMA_MAJOR + 1);
    message.schema_version = next_major;
    let error = bus::decode::<RunRequested>(&bus::encode(&message)).expect_err("refused");
    assert_eq!(
        error,
        DecodeError::UnknownVersion {
            kind: "RunRequested",
            found: next_major,
            known: v1::SCHEMA_VERSION,
        }
    );
    let reason = error.to_string();
    assert!(
        reason.contains("RunRequested") && reason.contains("major 2") && reason.contains("1000"),
        "{reason}"
    );

    message.schema_version = 0;
    assert!(
        bus::decode::<RunRequested>(&bus::encode(&message)).is_err(),
        "version 0 means unset"
    );
}

#[tokio::test]
async fn lag_counts_what_waits_and_what_is_in_hand() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new("lag"))
        .await
        .expect("bus");
    let subject = bus.topology().run_requested();
    let stream = bus.topology().events_stream();
    let consumer = bus
        .durable_consumer(&stream, "fetcher", &subject, Duration::from_secs(30))
        .await
        .expect("consumer");
    for run_id in ["run-1", "run-2", "run-3"] {
        bus.publish(&subject, &run_requested(run_id), run_id)
            .await
            .expect("publish");
    }
    let lag = |pending, ack_pending| bus::lag::Lag {
        stream: stream.clone(),
        consumer: "fetcher".to_owned(),
        pending,
        ack_pending,
    };
    let consumers = [consumer.clone()];
    assert_eq!(bus::lag::read(&consumers).await, [lag(3, 0)]);

    let in_hand = next_message(&consumer).await.expect("a message");
    assert_eq!(bus::lag::read(&consumers).await, [lag(2, 1)]);
    in_hand.double_ack().await.expect("ack");
    assert_eq!(bus::lag::read(&consumers).await, [lag(2, 0)]);

    // The watch runs and stops.
    bus::lag::ConsumerLag::spawn(consumers.to_vec(), Duration::from_millis(10))
        .stop()
        .await;
}
