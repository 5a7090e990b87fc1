//! Event runs (#16): the event follower's `EventsObserved` starts an apply run of every
//! product of its connector, trigger EVENT, carrying what the events named on to the
//! fetcher, and superseding no held run; an observation of a connector that is not
//! configured is dead-lettered; those that find their connector busy are acknowledged and
//! wait, merged, for its run to end, then start as one event run; `ListRuns` filters on
//! the trigger.

use std::time::{Duration, Instant};

use futures::StreamExt;
use proto::v1::{self, RunMode, RunState, RunTrigger};

use crate::helpers::{DEADLINE, Options, TestApp, drain, spawn_app_with};

/// `[keycloak.NAME]` sections that pass the checks; nothing is called.
fn connectors(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            format!(
                "[keycloak.{name}]\nendpoint = \"http://127.0.0.1:9\"\nrealm = \"{name}\"\n\
                 client_id = \"keysync\"\nclient_secret = \"s\"\n\n"
            )
        })
        .collect()
}

async fn spawn_corp() -> TestApp {
    spawn_app_with(Options {
        more_config: connectors(&["corp"]),
        ..Options::default()
    })
    .await
}

fn users(ids: &[&str], events: u64) -> v1::EventTrigger {
    v1::EventTrigger {
        user_ids: ids.iter().map(|id| (*id).to_owned()).collect(),
        events,
        ..v1::EventTrigger::default()
    }
}

/// Publishes `EventsObserved` as the fetcher's event follower does.
async fn observe_events(
    app: &TestApp,
    connector: &str,
    trigger: Option<v1::EventTrigger>,
    id: &str,
) {
    let observed = v1::EventsObserved {
        schema_version: v1::SCHEMA_VERSION,
        connector: connector.to_owned(),
        trigger,
        observed_at: None,
    };
    app.bus
        .publish(&app.bus.topology().events_observed(), &observed, id)
        .await
        .expect("publishes EventsObserved");
}

/// One page of `ListRuns` filtered on `states` and `triggers`, as run ids.
async fn list(app: &TestApp, states: &[RunState], triggers: &[RunTrigger]) -> Vec<String> {
    app.client
        .clone()
        .list_runs(v1::ListRunsRequest {
            page_size: 100,
            page_token: String::new(),
            states: states.iter().map(|state| *state as i32).collect(),
            triggers: triggers.iter().map(|trigger| *trigger as i32).collect(),
        })
        .await
        .expect("ListRuns")
        .into_inner()
        .runs
        .into_iter()
        .map(|run| run.run_id)
        .collect()
}

/// Waits until `ListRuns` has `count` event runs; answers them, newest first.
async fn wait_for_event_runs(app: &TestApp, count: usize) -> Vec<String> {
    app.wait_until(&format!("{count} event runs are listed"), || async {
        list(app, &[], &[RunTrigger::Event]).await.len() >= count
    })
    .await;
    let runs = list(app, &[], &[RunTrigger::Event]).await;
    assert_eq!(runs.len(), count, "{runs:?}");
    runs
}

/// The dead letters of `EventsObserved` with their reasons: waits for `count` of them.
async fn dead_letters(app: &TestApp, count: usize) -> Vec<(String, v1::EventsObserved)> {
    let topology = app.bus.topology();
    let consumer = app
        .bus
        .durable_consumer(
            &topology.dead_stream(),
            "dead-observations",
            &topology.dead_letter(&topology.events_observed()),
            Duration::from_secs(30),
        )
        .await
        .expect("a consumer of the dead letters");
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while seen.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {seen:?} were dead-lettered"
        );
        let mut batch = consumer
            .fetch()
            .max_messages(10)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .expect("fetches");
        while let Some(message) = batch.next().await {
            let message = message.expect("a message");
            let reason = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(bus::DEAD_REASON_HEADER))
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default();
            let observed = bus::decode::<v1::EventsObserved>(&message.payload).expect("decodes");
            message.ack().await.expect("acks");
            seen.push((reason, observed));
        }
    }
    seen
}

#[tokio::test]
async fn an_observation_starts_an_event_run_that_carries_the_trigger_and_supersedes_nothing() {
    let app = spawn_corp().await;
    // A held full run: it does not hold the connector, and an event run leaves it alone.
    let held = app.start_sync(RunMode::Apply, &[]).await;
    app.hold(&held, &[]).await;
    let requested = app.observe(&app.bus.topology().run_requested()).await;

    let trigger = users(&["u1", "u2"], 3);
    observe_events(&app, "corp", Some(trigger.clone()), "observed-1").await;

    let [run_id] = wait_for_event_runs(&app, 1).await.try_into().expect("one");
    let run = app.get_run(&run_id).await;
    assert_eq!(run.trigger(), RunTrigger::Event);
    assert_eq!(run.mode(), RunMode::Apply);
    assert_eq!(run.state(), RunState::Fetching);
    assert_eq!(run.connector, "corp");
    assert!(run.products.is_empty(), "every product: {:?}", run.products);
    assert_eq!(run.requested_by, "keysync event follower");
    assert_eq!(run.event, Some(trigger.clone()));

    let published: Vec<v1::RunRequested> = drain(&requested).await;
    let request = published
        .iter()
        .find(|request| request.run_id == run_id)
        .expect("the event run was requested");
    assert_eq!(request.event, Some(trigger));
    assert_eq!(request.connector, "corp");
    assert_eq!(request.mode, RunMode::Apply as i32);
    assert_eq!(request.requested_by, "keysync event follower");

    assert_eq!(
        app.get_run(&held.run_id).await.state(),
        RunState::Held,
        "an event run plans only some users: the held full run stays"
    );
}

#[tokio::test]
async fn list_runs_filters_on_the_trigger() {
    let app = spawn_corp().await;
    let api = app
        .try_start(RunMode::Simulate, "corp")
        .await
        .expect("an api run");
    app.snapshot_failed(&api.run_id, "down").await;
    app.wait_for_state(&api.run_id, RunState::Failed).await;
    observe_events(
        &app,
        "corp",
        Some(v1::EventTrigger {
            full_sync_reason: "the follower's first start".to_owned(),
            ..v1::EventTrigger::default()
        }),
        "observed-full",
    )
    .await;
    let [event] = wait_for_event_runs(&app, 1).await.try_into().expect("one");
    assert_eq!(
        app.get_run(&event)
            .await
            .event
            .expect("the trigger")
            .full_sync_reason,
        "the follower's first start"
    );

    assert_eq!(
        list(&app, &[], &[RunTrigger::Api]).await,
        [api.run_id.as_str()]
    );
    assert_eq!(
        list(&app, &[], &[]).await,
        [event.as_str(), api.run_id.as_str()]
    );
    assert_eq!(
        list(&app, &[], &[RunTrigger::Api, RunTrigger::Event]).await,
        [event.as_str(), api.run_id.as_str()]
    );
    assert!(list(&app, &[], &[RunTrigger::Schedule]).await.is_empty());
    assert_eq!(
        list(&app, &[RunState::Fetching], &[RunTrigger::Event]).await,
        [event]
    );
    assert!(
        list(&app, &[RunState::Failed], &[RunTrigger::Event])
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn an_observation_of_a_connector_not_configured_or_naming_nothing_is_dead_lettered() {
    let app = spawn_corp().await;
    observe_events(&app, "lab", Some(users(&["u1"], 1)), "observed-lab").await;
    observe_events(&app, "corp", Some(users(&[], 0)), "observed-nothing").await;
    observe_events(&app, "corp", None, "observed-none").await;

    let dead = dead_letters(&app, 3).await;
    let reasons: Vec<(&str, &str)> = dead
        .iter()
        .map(|(reason, observed)| (observed.connector.as_str(), reason.as_str()))
        .collect();
    let nothing = "the events observed name no user, no group and no reason for a full sync";
    assert_eq!(
        reasons,
        [
            (
                "lab",
                "events observed for connector `lab`, which is not configured (configured: corp)"
            ),
            ("corp", nothing),
            ("corp", nothing),
        ]
    );
    assert!(list(&app, &[], &[]).await.is_empty(), "no run was started");
}

#[tokio::test]
async fn observations_for_a_busy_connector_wait_merged_and_start_one_run_when_it_ends() {
    let app = spawn_corp().await;
    let running = app
        .try_start(RunMode::Apply, "corp")
        .await
        .expect("a running run");
    observe_events(&app, "corp", Some(users(&["u2", "u1"], 1)), "observed-1").await;
    observe_events(&app, "corp", Some(users(&["u2", "u3"], 2)), "observed-2").await;

    // Both acknowledged and merged into what waits for the connector; no run meanwhile.
    let claims = app
        .bus
        .jetstream()
        .get_key_value(format!("{}-schedule", app.prefix))
        .await
        .expect("the claims bucket");
    app.wait_until("both observations wait, merged", || {
        let claims = claims.clone();
        async move {
            let Ok(Some(value)) = claims.get("pending.corp").await else {
                return false;
            };
            let pending =
                <v1::EventTrigger as prost::Message>::decode(value.as_ref()).expect("a trigger");
            pending.user_ids == ["u1", "u2", "u3"] && pending.events == 3
        }
    })
    .await;
    assert!(list(&app, &[], &[RunTrigger::Event]).await.is_empty());
    assert_eq!(
        app.get_run(&running.run_id).await.state(),
        RunState::Fetching
    );

    // Once the run ends, what waited starts as one event run naming every user.
    app.snapshot_failed(&running.run_id, "down").await;
    app.wait_for_state(&running.run_id, RunState::Failed).await;
    let [event_run] = wait_for_event_runs(&app, 1).await.try_into().expect("one");
    let event_run = app.get_run(&event_run).await;
    assert_eq!(event_run.state(), RunState::Fetching);
    let trigger = event_run.event.expect("the trigger");
    assert_eq!(trigger.user_ids, ["u1", "u2", "u3"]);
    assert_eq!(trigger.events, 3);
    assert!(
        claims.get("pending.corp").await.expect("read").is_none(),
        "nothing waits any more"
    );
}
