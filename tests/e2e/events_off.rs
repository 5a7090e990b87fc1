//! A realm that does not save events, with `[keycloak.e2e.events] enabled` all the same
//! (#16): `TestConnection` still passes the connector and says, in its `events` detail,
//! which realm settings to turn on; the follower warns the same in the fetcher's log; and
//! the realm's edits reach the products by the schedule's full syncs, since no event
//! names them.

use std::time::Duration;

use e2e::{CONNECTOR, Stack, StackOptions};
use proto::v1::{self, RunState, RunTrigger};

use crate::directory::{self, Person};
use crate::events::{create_person, events_env, until_jira_holds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realm_with_events_off_is_reported_and_synced_by_the_schedule() {
    let mut people = directory::people(4);
    let mut service_env = events_env();
    for (key, value) in [
        ("KEYSYNC_CONTROL_PLANE__SCHEDULE__ENABLED", "true"),
        ("KEYSYNC_CONTROL_PLANE__SCHEDULE__CRON", "*/3 * * * * *"),
    ] {
        service_env.push((key.to_owned(), value.to_owned()));
    }
    let stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        service_env,
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");

    // The connection works, so the check passes; the events detail says what is off.
    let checks = stack
        .client
        .clone()
        .test_connection(v1::TestConnectionRequest {
            targets: vec![format!("keycloak:{CONNECTOR}")],
        })
        .await
        .expect("TestConnection")
        .into_inner()
        .checks;
    let [check] = checks.as_slice() else {
        panic!("one check expected: {checks:?}");
    };
    assert!(check.ok, "{check:?}");
    let events = check.details.get("events").cloned().unwrap_or_default();
    assert!(events.starts_with("not ready"), "{check:?}");
    for setting in [
        "adminEventsEnabled",
        "adminEventsDetailsEnabled",
        "eventsEnabled",
    ] {
        assert!(events.contains(setting), "{setting} is not named: {events}");
    }

    until_jira_holds(&stack, &people, "the first syncs")
        .await
        .expect("the realm in Jira");

    // A new colleague: no event is saved, so only a scheduled full sync brings them.
    let newbie = Person {
        username: "newbie".to_owned(),
        email: Some("newbie@example.org".to_owned()),
        enabled: true,
        first: "New".to_owned(),
        last: "Colleague".to_owned(),
        groups: Vec::new(),
    };
    let newbie_id = create_person(&stack, &newbie)
        .await
        .expect("newbie created");
    people.push(newbie);
    until_jira_holds(&stack, &people, "newbie")
        .await
        .expect("newbie in Jira");

    // The run that brought newbie may still be applying to the other products: wait for a
    // scheduled run to succeed.
    let deadline = tokio::time::Instant::now() + e2e::DEADLINE;
    let runs = loop {
        let runs = stack.runs().await.expect("ListRuns");
        let scheduled = runs
            .iter()
            .any(|run| run.trigger() == RunTrigger::Schedule && run.state() == RunState::Succeeded);
        if scheduled {
            break runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scheduled run succeeded: {runs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        runs.iter().all(|run| {
            run.event
                .as_ref()
                .is_none_or(|event| !event.user_ids.contains(&newbie_id))
        }),
        "an event named newbie although the realm saves none: {runs:#?}"
    );

    // The follower said so in the fetcher's log, naming the settings.
    let log = stack
        .service_logs()
        .remove("fetcher")
        .expect("the fetcher's log");
    let deadline = tokio::time::Instant::now() + e2e::DEADLINE;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("does not save all the") && text.contains("adminEventsEnabled") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fetcher never warned that the realm saves no events:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
