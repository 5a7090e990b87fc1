//! Provisioning against a real nats-server: streams, key-value buckets and object stores
//! are created with `[bus]`'s replicas and retentions, and a restart changes only what
//! keysync owns: an operator's limits and description are kept, nothing is sent when
//! nothing differs, and a change JetStream refuses is an error naming the stream.
//!
//! A single nats-server holds one replica only, so "never lowered" is shown here with the
//! fields keysync does not own; the replica rule itself is a unit test of
//! `bus::provision::reconcile`.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bus::{Bus, BusSettings, Provisioning, Topology, runs::Retention};
use futures::StreamExt;
use test_support::nats::NatsServer;

const DAY: Duration = Duration::from_secs(24 * 3600);

async fn config(jetstream: &jetstream::Context, name: &str) -> stream::Config {
    jetstream
        .get_stream(name)
        .await
        .expect("the stream exists")
        .cached_info()
        .config
        .clone()
}

/// What an operator does by hand: caps the stream and describes it, none of which keysync
/// owns.
async fn operator_caps(jetstream: &jetstream::Context, name: &str) -> stream::Config {
    let mut capped = config(jetstream, name).await;
    capped.max_bytes = 64 << 20;
    capped.max_messages = 10_000;
    capped.description = Some("capped by ops".to_owned());
    jetstream
        .update_stream(&capped)
        .await
        .expect("operator's update");
    capped
}

fn assert_kept(after: &stream::Config, capped: &stream::Config, max_age: Duration) {
    assert_eq!(after.max_bytes, capped.max_bytes, "max_bytes kept");
    assert_eq!(after.max_messages, capped.max_messages, "max_msgs kept");
    assert_eq!(after.description, capped.description, "description kept");
    assert_eq!(after.num_replicas, 1);
    assert_eq!(after.max_age, max_age, "max_age is keysync's");
}

#[tokio::test]
async fn streams_are_created_with_the_settings_and_an_operators_limits_survive_a_restart() {
    let nats = NatsServer::start().expect("nats-server");
    let settings = BusSettings {
        nats_url: nats.url(),
        prefix: "p1".to_owned(),
        retention_days: 7,
        ..BusSettings::default()
    };
    let bus = Bus::connect_with(&settings).await.expect("bus");
    assert_eq!(bus.provisioning().runs_max_age, 7 * DAY);
    let topology = bus.topology().clone();
    let jetstream = bus.jetstream();
    for stream in [topology.events_stream(), topology.dead_stream()] {
        let created = config(jetstream, &stream).await;
        assert_eq!((created.num_replicas, created.max_age), (1, 7 * DAY));
    }
    let changes = config(jetstream, &topology.changes_stream()).await;
    assert_eq!(
        (changes.num_replicas, changes.retention, changes.max_age),
        (1, stream::RetentionPolicy::WorkQueue, Duration::ZERO)
    );

    let events = operator_caps(jetstream, &topology.events_stream()).await;
    let dead = operator_caps(jetstream, &topology.dead_stream()).await;
    // A restart with the default retention (90 days).
    let restarted = Bus::connect(&nats.url(), topology.clone())
        .await
        .expect("bus again");
    let jetstream = restarted.jetstream();
    assert_kept(
        &config(jetstream, &topology.events_stream()).await,
        &events,
        90 * DAY,
    );
    assert_kept(
        &config(jetstream, &topology.dead_stream()).await,
        &dead,
        90 * DAY,
    );
}

#[tokio::test]
async fn nothing_is_updated_when_nothing_differs() {
    let nats = NatsServer::start().expect("nats-server");
    let topology = Topology::new("p2");
    let bus = Bus::connect(&nats.url(), topology.clone())
        .await
        .expect("bus");
    bus.key_value("p2-runs", "runs", retention(16))
        .await
        .expect("bucket");
    bus.ensure_object_store("p2-plans", DAY)
        .await
        .expect("object store");
    operator_caps(bus.jetstream(), &topology.events_stream()).await;

    // Every JetStream API request of the account, as the server receives it.
    let spy = nats.connect().await.expect("spy");
    let mut requests = spy.subscribe("$JS.API.>").await.expect("subscribe");
    spy.flush().await.expect("flush");

    let restarted = Bus::connect(&nats.url(), topology.clone())
        .await
        .expect("bus again");
    restarted
        .key_value("p2-runs", "runs", retention(16))
        .await
        .expect("bucket again");
    restarted
        .ensure_object_store("p2-plans", DAY)
        .await
        .expect("object store again");
    // The end of what the restart sent: requests of one connection arrive in order.
    restarted
        .jetstream()
        .query_account()
        .await
        .expect("account info");
    let mut seen = Vec::new();
    while let Some(request) = requests.next().await {
        if request.subject.as_str() == "$JS.API.INFO" {
            break;
        }
        seen.push(request.subject.to_string());
    }
    for stream in [
        "P2_EVENTS",
        "P2_CHANGES",
        "P2_DEAD",
        "KV_p2-runs",
        "OBJ_p2-plans",
    ] {
        let info = format!("$JS.API.STREAM.INFO.{stream}");
        assert!(seen.contains(&info), "{info} not in {seen:?}");
    }
    let writes: Vec<_> = seen
        .iter()
        .filter(|subject| subject.contains(".UPDATE.") || subject.contains(".CREATE."))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

fn retention(history: i64) -> Retention {
    Retention {
        history,
        max_age: Duration::ZERO,
    }
}

#[tokio::test]
async fn a_bucket_gets_its_history_and_keeps_an_operators_limits() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new("p3"))
        .await
        .expect("bus");
    let store = bus
        .key_value("p3-results", "results", retention(1))
        .await
        .expect("bucket");
    store.put("run-1", "done".into()).await.expect("put");
    let created = config(bus.jetstream(), "KV_p3-results").await;
    assert_eq!(created.num_replicas, 1);
    assert_eq!(created.max_messages_per_subject, 1);
    assert_eq!(created.description.as_deref(), Some("results"));

    let capped = operator_caps(bus.jetstream(), "KV_p3-results").await;
    let store = bus
        .key_value(
            "p3-results",
            "results",
            Retention {
                history: 5,
                max_age: 30 * DAY,
            },
        )
        .await
        .expect("bucket again");
    let after = config(bus.jetstream(), "KV_p3-results").await;
    assert_kept(&after, &capped, 30 * DAY);
    assert_eq!(after.max_messages_per_subject, 5);
    let value = store.get("run-1").await.expect("get").expect("kept");
    assert_eq!(&value[..], b"done");
}

#[tokio::test]
async fn an_object_store_gets_its_max_age_and_keeps_an_operators_limits() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new("p4"))
        .await
        .expect("bus");
    let snapshots = Provisioning::default().snapshots_max_age;
    assert_eq!(snapshots, Duration::from_secs(72 * 3600));
    let store = bus
        .ensure_object_store("p4-snapshots", snapshots)
        .await
        .expect("object store");
    store
        .put("run-1.pb.zst", &mut &b"snapshot"[..])
        .await
        .expect("put");
    let created = config(bus.jetstream(), "OBJ_p4-snapshots").await;
    assert_eq!((created.num_replicas, created.max_age), (1, snapshots));

    let capped = operator_caps(bus.jetstream(), "OBJ_p4-snapshots").await;
    let store = bus
        .ensure_object_store("p4-snapshots", DAY)
        .await
        .expect("object store again");
    assert_kept(
        &config(bus.jetstream(), "OBJ_p4-snapshots").await,
        &capped,
        DAY,
    );
    let mut object = store.get("run-1.pb.zst").await.expect("get");
    let mut read = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut read)
        .await
        .expect("read");
    assert_eq!(read, b"snapshot");
}

#[tokio::test]
async fn a_change_jetstream_refuses_is_an_error_naming_the_stream_and_the_change() {
    let nats = NatsServer::start().expect("nats-server");
    let client = nats.connect().await.expect("client");
    // Someone made the changes stream with limits retention; keysync needs a work queue.
    jetstream::new(client)
        .create_stream(stream::Config {
            name: "P5_CHANGES".to_owned(),
            subjects: vec!["p5.changes.>".to_owned()],
            ..Default::default()
        })
        .await
        .expect("stream");
    let error = match Bus::connect(&nats.url(), Topology::new("p5")).await {
        Ok(_) => panic!("the retention policy cannot change"),
        Err(error) => error,
    };
    let message = error.to_string();
    assert!(
        message.contains("P5_CHANGES") && message.contains("retention Limits -> WorkQueue"),
        "{message}"
    );
}
