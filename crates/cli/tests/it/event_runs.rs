//! Runs started by Keycloak's events: `keysync runs --kind` lists only the runs started
//! the ways asked for, and `runs` and `run ID` say what the events named.

use std::{process::Stdio, time::Duration};

use futures::StreamExt;
use proto::v1;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{DEADLINE, TestApp, describe, spawn_app};

/// Publishes `EventsObserved` as the fetcher's event follower does, and waits until the
/// control plane has requested the run it starts (read off the events stream); answers
/// the run id.
async fn observe_events(app: &TestApp, connector: &str, trigger: v1::EventTrigger) -> String {
    let topology = app.bus.topology();
    let requested = app
        .bus
        .durable_consumer(
            &topology.events_stream(),
            "requests",
            &topology.run_requested(),
            Duration::from_secs(30),
        )
        .await
        .expect("a consumer of the run requests");
    let observed = v1::EventsObserved {
        schema_version: v1::SCHEMA_VERSION,
        connector: connector.to_owned(),
        trigger: Some(trigger),
        observed_at: None,
    };
    app.bus
        .publish(&topology.events_observed(), &observed, "observed-1")
        .await
        .expect("publishes EventsObserved");
    let wait = async {
        loop {
            let mut batch = requested
                .fetch()
                .max_messages(10)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .expect("fetches");
            while let Some(message) = batch.next().await {
                let message = message.expect("a message");
                message.ack().await.expect("acks");
                let request =
                    bus::decode::<v1::RunRequested>(&message.payload).expect("a RunRequested");
                if request.event.is_some() {
                    return request.run_id;
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .expect("the control plane starts an event run in time")
}

#[tokio::test]
async fn runs_kind_lists_only_the_runs_started_that_way_and_shows_what_the_events_named() {
    let app = spawn_app().await;
    // An API run, followed by `keysync sync` until the test ends.
    let mut sync = app
        .keysync(&["sync", "--simulate", "--connector", "lab"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keysync starts");
    let mut first_line = String::new();
    tokio::time::timeout(
        DEADLINE,
        BufReader::new(sync.stdout.take().expect("piped stdout")).read_line(&mut first_line),
    )
    .await
    .expect("keysync prints the run in time")
    .expect("reads stdout");
    let api_run = first_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();

    let event_run = observe_events(
        &app,
        "corp",
        v1::EventTrigger {
            user_ids: vec!["u1".to_owned(), "u2".to_owned()],
            events: 3,
            ..v1::EventTrigger::default()
        },
    )
    .await;

    let ids = |runs: serde_json::Value| -> Vec<String> {
        runs.as_array()
            .expect("an array of runs")
            .iter()
            .map(|run| run["id"].as_str().expect("an id").to_owned())
            .collect()
    };
    assert_eq!(
        ids(app.json(&["runs", "--kind", "event"]).await),
        [event_run.as_str()]
    );
    assert_eq!(
        ids(app.json(&["runs", "--kind", "api"]).await),
        [api_run.as_str()]
    );
    assert_eq!(
        ids(app.json(&["runs", "--kind", "event,api"]).await),
        [event_run.as_str(), api_run.as_str()]
    );
    assert!(
        ids(app.json(&["runs", "--kind", "schedule"]).await).is_empty(),
        "no scheduled run"
    );
    let runs = app.json(&["runs", "--kind", "event"]).await;
    assert_eq!(runs[0]["trigger"], "event");
    assert_eq!(runs[0]["event"]["events"], 3);
    assert_eq!(runs[0]["event"]["user_ids"][0], "u1");

    let table = app.run(&["runs", "--kind", "event"]).await;
    assert!(table.status.success(), "{}", describe(&table));
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let row = table
        .lines()
        .find(|line| line.starts_with(&event_run))
        .unwrap_or_else(|| panic!("no row of the event run: {table}"));
    assert!(row.contains("event: 2 users"), "{table}");
    assert!(!table.contains(&api_run), "{table}");

    let shown = app.run(&["run", &event_run]).await;
    assert!(shown.status.success(), "{}", describe(&shown));
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains("Trigger:      event"), "{shown}");
    assert!(
        shown.contains("Event:        3 events, users u1,u2"),
        "{shown}"
    );
    assert!(
        shown.contains("Requested by: keysync event follower"),
        "{shown}"
    );
}
