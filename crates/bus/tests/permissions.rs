//! `deploy/nats/accounts.conf` on a real nats-server: each service's user may publish only
//! its own subjects, and a refused connection never shows a password.
//!
//! The test starts nats-server with that very file, its `keysync` names replaced by the
//! test's prefix, so the example and the rules checked here cannot drift apart.

use std::time::Duration;

use bus::{Bus, BusSettings, Error};
use config::Secret;
use proto::v1;
use test_support::nats::NatsServer;

const ACCOUNTS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/nats/accounts.conf"
));

const USERS: [(&str, &str); 5] = [
    ("fetcher", "FETCHER_PASSWORD"),
    ("planner", "PLANNER_PASSWORD"),
    ("applier", "APPLIER_PASSWORD"),
    ("control-plane", "CONTROL_PLANE_PASSWORD"),
    ("cli-none", "CLI_NONE_PASSWORD"),
];

/// A nats-server with the example users for `prefix`; user `u`'s password is `u-secret`.
fn start(prefix: &str) -> NatsServer {
    let config = ACCOUNTS
        .replace("keysync", prefix)
        .replace("KEYSYNC", &prefix.to_uppercase());
    let envs: Vec<(&str, String)> = USERS
        .iter()
        .map(|(user, variable)| (*variable, password(user)))
        .collect();
    NatsServer::start_with_config(&config, &envs).expect("nats-server starts with the users")
}

fn password(user: &str) -> String {
    format!("{user}-secret")
}

fn settings(nats: &NatsServer, prefix: &str, user: &str) -> BusSettings {
    BusSettings {
        nats_url: nats.url(),
        prefix: prefix.to_owned(),
        user: Some(user.to_owned()),
        password: Some(Secret::new(password(user))),
        inbox_prefix: Some(format!("_INBOX_{user}")),
        ..BusSettings::default()
    }
}

fn unique_prefix(name: &str) -> String {
    format!("{name}{}", std::process::id())
}

#[tokio::test]
async fn an_applier_cannot_approve_a_run_but_reports_its_state() {
    let prefix = unique_prefix("perm");
    let nats = start(&prefix);
    let settings = settings(&nats, &prefix, "applier");
    // Connecting makes the streams: the applier may do that.
    let bus = Bus::connect_with(&settings)
        .await
        .expect("the applier connects");
    let topology = bus.topology().clone();

    let state = v1::StateReady {
        schema_version: v1::SCHEMA_VERSION,
        run_id: "01RUN".to_owned(),
        ..Default::default()
    };
    bus.publish(&topology.state_ready("jira"), &state, "state-1")
        .await
        .expect("the applier may report a product's state");

    // A plain publish of RunApproved: the server answers with a permissions violation.
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let client = settings
        .connect_options()
        .expect("valid settings")
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let _ = events.send(event.to_string());
            }
        })
        .connect(nats.url())
        .await
        .expect("connects");
    let approved = v1::RunApproved {
        schema_version: v1::SCHEMA_VERSION,
        run_id: "01RUN".to_owned(),
        ..Default::default()
    };
    client
        .publish(topology.run_approved(), bus::encode(&approved))
        .await
        .expect("sent");
    client.flush().await.expect("flushed");
    let violation = next_violation(&mut received).await;
    assert!(violation.contains(&topology.run_approved()), "{violation}");

    // Nor may it read the planner's replies.
    let _planner_replies = client
        .subscribe("_INBOX_planner.>")
        .await
        .expect("subscribed");
    let violation = next_violation(&mut received).await;
    assert!(violation.contains("_INBOX_planner.>"), "{violation}");

    // Through JetStream, the approval is never stored.
    let refused = bus
        .publish(&topology.run_approved(), &approved, "approve-1")
        .await;
    assert!(matches!(refused, Err(Error::Publish { .. })), "{refused:?}");
}

async fn next_violation(events: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.recv().await {
            if event.to_lowercase().contains("permissions violation") {
                return event;
            }
        }
        panic!("the event stream ended");
    })
    .await
    .expect("a permissions violation within 10 s")
}

#[tokio::test]
async fn the_fetcher_cannot_publish_change_sets() {
    let prefix = unique_prefix("permf");
    let nats = start(&prefix);
    let bus = Bus::connect_with(&settings(&nats, &prefix, "fetcher"))
        .await
        .expect("the fetcher connects");
    let change_set = v1::ChangeSet {
        schema_version: v1::SCHEMA_VERSION,
        ..Default::default()
    };
    let refused = bus
        .publish(&bus.topology().changes("jira"), &change_set, "changes-1")
        .await;
    assert!(matches!(refused, Err(Error::Publish { .. })), "{refused:?}");
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_never_shown() {
    let prefix = unique_prefix("permp");
    let nats = start(&prefix);

    let in_settings = BusSettings {
        password: Some(Secret::new("wrong-in-settings")),
        ..settings(&nats, &prefix, "applier")
    };
    let in_url = BusSettings {
        nats_url: format!("nats://applier:wrong-in-url@127.0.0.1:{}", nats.port()),
        prefix: prefix.clone(),
        ..BusSettings::default()
    };
    for (settings, secret) in [(in_settings, "wrong-in-settings"), (in_url, "wrong-in-url")] {
        let error = match Bus::connect_with(&settings).await {
            Ok(_) => panic!("a wrong password connects"),
            Err(error) => error,
        };
        assert!(matches!(error, Error::Connect { .. }), "{error:?}");
        let mut shown = format!("{error:?}\n{error}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            shown.push_str(&format!("\n{cause}"));
            source = cause.source();
        }
        assert!(!shown.contains(secret), "{shown}");
        assert!(!shown.contains(&password("applier")), "{shown}");
        assert!(format!("{settings:?}").contains("[redacted]") || settings.password.is_none());
        assert!(!format!("{settings:?}").contains(secret));
    }
    // The URL form shows who, not the password.
    let in_url = BusSettings {
        nats_url: format!("nats://applier:wrong-in-url@127.0.0.1:{}", nats.port()),
        prefix,
        ..BusSettings::default()
    };
    let error = Bus::connect_with(&in_url).await.err().expect("refused");
    assert!(
        error.to_string().contains("nats://applier:***@127.0.0.1"),
        "{error}"
    );
}

/// The applier's own work passes the rules: the planner hands it a change set, which it
/// pulls through its durable consumer and acknowledges; it keeps its progress in its
/// key-value bucket and writes a product state to the state cache.
#[tokio::test]
async fn an_applier_does_its_own_work() {
    use futures::StreamExt;

    let prefix = unique_prefix("perma");
    let nats = start(&prefix);
    let planner = Bus::connect_with(&settings(&nats, &prefix, "planner"))
        .await
        .expect("the planner connects");
    let applier = Bus::connect_with(&settings(&nats, &prefix, "applier"))
        .await
        .expect("the applier connects");
    let topology = applier.topology().clone();

    let change_set = v1::ChangeSet {
        schema_version: v1::SCHEMA_VERSION,
        run_id: "01RUN".to_owned(),
        ..Default::default()
    };
    planner
        .publish(&topology.changes("jira"), &change_set, "changes-1")
        .await
        .expect("the planner may publish change sets");

    let consumer = applier
        .durable_consumer(
            &topology.changes_stream(),
            &topology.applier_consumer("jira"),
            &topology.changes("jira"),
            Duration::from_secs(30),
        )
        .await
        .expect("the applier makes its consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("pulls");
    let message = batch.next().await.expect("a message").expect("delivered");
    let received: v1::ChangeSet = bus::decode(&message.payload).expect("a change set");
    assert_eq!(received.run_id, "01RUN");
    message.ack().await.expect("acknowledged");

    let progress = applier
        .key_value(
            &topology.applier_bucket(),
            "applier progress",
            bus::runs::Retention {
                history: 1,
                max_age: Duration::ZERO,
            },
        )
        .await
        .expect("the applier opens its bucket");
    progress
        .put("jira.01RUN", "1".into())
        .await
        .expect("writes its progress");
    assert_eq!(
        progress.get("jira.01RUN").await.expect("reads").as_deref(),
        Some(&b"1"[..])
    );

    let state = v1::ProductState {
        schema_version: v1::SCHEMA_VERSION,
        ..Default::default()
    };
    let stored = applier
        .put_object(&topology.state_bucket(), "jira", &state)
        .await
        .expect("the applier writes the state cache");
    let _: v1::ProductState = applier.get_object(&stored).await.expect("and reads it");

    // It appends to the product state journal and purges it; the planner only reads it.
    let bucket = topology.state_journal_bucket();
    let journal = bus::journal::Journal::open(&applier, &bucket, "journal")
        .await
        .expect("the applier opens the journal");
    let entry = v1::StateRecords {
        schema_version: v1::SCHEMA_VERSION,
        run_id: "01RUN".to_owned(),
        ..Default::default()
    };
    let appended = journal
        .append("jira", &entry)
        .await
        .expect("the applier appends");
    let read = bus::journal::Journal::open(&planner, &bucket, "journal")
        .await
        .expect("the planner opens the journal");
    let entries = read
        .read_after::<v1::StateRecords>("jira", 0)
        .await
        .expect("the planner reads it");
    assert_eq!(entries.len(), 1);
    assert!(
        read.append("jira", &entry).await.is_err(),
        "the planner wrote the journal"
    );
    journal
        .purge_through("jira", appended)
        .await
        .expect("the applier purges");

    // It may not touch another service's bucket.
    let refused = applier
        .key_value(
            &topology.runs_bucket(),
            "runs",
            bus::runs::Retention {
                history: 1,
                max_age: Duration::ZERO,
            },
        )
        .await;
    assert!(refused.is_err(), "the applier opened the runs bucket");
}

/// The fetcher's event follower passes the rules: it publishes `EventsObserved` on
/// `run.events`, keeps its watermarks and each connector's base pointer in
/// `{prefix}-follower`, and reads back a snapshot it stored; the control plane's consumer
/// takes `run.events` among its filters and may dead-letter such a message.
#[tokio::test]
async fn the_fetcher_follows_events_and_the_control_plane_consumes_them() {
    use futures::StreamExt;

    let prefix = unique_prefix("permv");
    let nats = start(&prefix);
    let fetcher = Bus::connect_with(&settings(&nats, &prefix, "fetcher"))
        .await
        .expect("the fetcher connects");
    let control_plane = Bus::connect_with(&settings(&nats, &prefix, "control-plane"))
        .await
        .expect("the control plane connects");
    let topology = fetcher.topology().clone();

    let observed = v1::EventsObserved {
        schema_version: v1::SCHEMA_VERSION,
        connector: "corp".to_owned(),
        trigger: Some(v1::EventTrigger {
            user_ids: vec!["u1".to_owned()],
            events: 1,
            ..Default::default()
        }),
        observed_at: None,
    };
    fetcher
        .publish(&topology.events_observed(), &observed, "corp/events/1")
        .await
        .expect("the fetcher may publish what its follower observed");

    let follower = fetcher
        .key_value(
            &format!("{prefix}-follower"),
            "follower",
            bus::runs::Retention {
                history: 1,
                max_age: Duration::ZERO,
            },
        )
        .await
        .expect("the fetcher opens its follower bucket");
    for key in ["corp", "base.corp"] {
        follower
            .put(key, "1".into())
            .await
            .expect("writes a watermark and a base pointer");
        assert_eq!(
            follower.get(key).await.expect("reads").as_deref(),
            Some(&b"1"[..]),
            "{key}"
        );
    }

    let snapshot = v1::Snapshot {
        schema_version: v1::SCHEMA_VERSION,
        run_id: "01RUN".to_owned(),
        ..Default::default()
    };
    let stored = fetcher
        .put_object(&topology.snapshots_bucket(), "01RUN.pb.zst", &snapshot)
        .await
        .expect("the fetcher stores a snapshot");
    let read: v1::Snapshot = fetcher
        .get_object(&stored)
        .await
        .expect("and reads it back, as a request delivered again does");
    assert_eq!(read.run_id, "01RUN");
    assert_eq!(
        fetcher
            .object_sha256(&topology.snapshots_bucket(), "01RUN.pb.zst")
            .await
            .expect("reads its checksum"),
        Some(stored.sha256.clone())
    );

    let consumer = control_plane
        .durable_consumer_of_subjects(
            &topology.events_stream(),
            &topology.control_plane_consumer(),
            &[
                format!("{prefix}.snapshot.>"),
                format!("{prefix}.plan.>"),
                topology.events_observed(),
            ],
            Duration::from_secs(30),
        )
        .await
        .expect("the control plane filters run.events too");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("pulls");
    let message = batch.next().await.expect("a message").expect("delivered");
    let received: v1::EventsObserved = bus::decode(&message.payload).expect("EventsObserved");
    assert_eq!(received.connector, "corp");
    control_plane
        .dead_letter(&message, "test")
        .await
        .expect("the control plane may dead-letter what it consumes");

    // The fetcher still may not start runs, nor touch the control plane's buckets.
    let refused = fetcher
        .publish(
            &topology.run_requested(),
            &v1::RunRequested::default(),
            "run-1",
        )
        .await;
    assert!(matches!(refused, Err(Error::Publish { .. })), "{refused:?}");
    let refused = fetcher
        .key_value(
            &topology.runs_bucket(),
            "runs",
            bus::runs::Retention {
                history: 1,
                max_age: Duration::ZERO,
            },
        )
        .await;
    assert!(refused.is_err(), "the fetcher opened the runs bucket");
}
