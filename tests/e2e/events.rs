//! Event-driven sync end to end (#16): with `[keycloak.e2e.events] enabled`, nobody starts
//! a run: the follower's first start asks for a full sync, every later Keycloak edit
//! reaches the products as a run of trigger EVENT that names the users it read again, an
//! edit made while the fetcher (the follower) is down is applied after it restarts, a
//! full sync afterwards writes nothing, and with `safety.max_accounts = 1` a user deleted
//! is deactivated while the next deletion within the hour is held; once approved, it counts
//! toward the hour too.

use std::time::Instant;

use anyhow::{Context, bail};
use e2e::{Stack, StackOptions};
use proto::v1::{Product, RunMode, RunState, RunTrigger};
use reqwest::Method;
use serde_json::json;

use crate::directory::{self, Holdings, Person};

async fn holdings(stack: &Stack, people: &[Person]) -> anyhow::Result<Holdings> {
    let state = stack.emulator_state(Product::Jira).await?;
    directory::holdings(
        &state,
        &directory::logins(people),
        &directory::group_names(),
    )
}

/// The services' environment that follows the `e2e` connector's events, polling every
/// 200 ms and gathering a burst for 200 ms.
pub(crate) fn events_env() -> Vec<(String, String)> {
    [
        ("ENABLED", "true"),
        ("POLL_INTERVAL_MS", "200"),
        ("BATCH_WINDOW_MS", "200"),
    ]
    .into_iter()
    .map(|(key, value)| {
        (
            format!("KEYSYNC_KEYCLOAK__E2E__EVENTS__{key}"),
            value.to_owned(),
        )
    })
    .collect()
}

/// Makes the stack's realm save admin events with details and the user events keysync
/// reads.
pub(crate) async fn turn_events_on(stack: &Stack) {
    stack
        .realm
        .save_events(&keycloak::events::USER_EVENT_TYPES)
        .await
        .expect("events turned on");
}

/// Creates `person` in the realm through the Admin API, without their groups; answers
/// their id.
pub(crate) async fn create_person(stack: &Stack, person: &Person) -> anyhow::Result<String> {
    stack
        .realm
        .admin(
            Method::POST,
            "users",
            Some(&json!({
                "username": person.username,
                "email": person.email,
                "emailVerified": true,
                "firstName": person.first,
                "lastName": person.last,
                "enabled": person.enabled,
            })),
        )
        .await?;
    stack.realm.user_id(&person.username).await
}

/// Waits until Jira holds exactly what keysync should make of `people`; polls, since no
/// run is started here to wait for.
pub(crate) async fn until_jira_holds(
    stack: &Stack,
    people: &[Person],
    what: &str,
) -> anyhow::Result<()> {
    let expected = directory::expected(people);
    let until = Instant::now() + e2e::DEADLINE;
    loop {
        let held = holdings(stack, people).await?;
        if held == expected {
            return Ok(());
        }
        if Instant::now() > until {
            bail!(
                "{what}: Jira never held what keysync should make of the realm:\n{held:#?}\nexpected:\n{expected:#?}"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits until no run is active, so that stopping the fetcher interrupts no fetch.
pub(crate) async fn until_idle(stack: &Stack) -> anyhow::Result<()> {
    let until = Instant::now() + e2e::DEADLINE;
    loop {
        let runs = stack.runs().await?;
        let active: Vec<&str> = runs
            .iter()
            .filter(|run| {
                !matches!(
                    run.state(),
                    RunState::Succeeded | RunState::Failed | RunState::Cancelled
                )
            })
            .map(|run| run.run_id.as_str())
            .collect();
        if active.is_empty() {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("runs {active:?} never ended");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_edits_reach_jira_as_event_runs_even_made_while_the_follower_is_down() {
    let mut people = directory::people(8);
    let mut service_env = events_env();
    // One deletion at a time passes; the safety limits count the event runs of the last
    // hour together. Only the count limits, in every product: this realm is small.
    for product in ["JIRA", "CONFLUENCE", "BITBUCKET"] {
        for (key, value) in [
            ("MAX_ACCOUNTS", "1"),
            ("MAX_PERCENT", "100"),
            ("MAX_MEMBERSHIPS_PERCENT", "100"),
            ("MAX_GROUP_LOSS_PERCENT", "100"),
        ] {
            service_env.push((
                format!("KEYSYNC_PRODUCTS__{product}__POLICY__SAFETY__{key}"),
                value.to_owned(),
            ));
        }
    }
    let mut stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        service_env,
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    turn_events_on(&stack).await;

    // Nobody starts a run: the follower's first start asks for a full sync.
    until_jira_holds(&stack, &people, "the first start")
        .await
        .expect("the first full sync");

    // A new colleague, in a group.
    let newbie = Person {
        username: "newbie".to_owned(),
        email: Some("newbie@example.org".to_owned()),
        enabled: true,
        first: "New".to_owned(),
        last: "Colleague".to_owned(),
        groups: vec!["/staff/sales".to_owned()],
    };
    let newbie_id = create_person(&stack, &newbie)
        .await
        .expect("newbie created");
    let sales = stack
        .realm
        .group_id("/staff/sales")
        .await
        .expect("the sales group");
    stack
        .realm
        .admin(
            Method::PUT,
            &format!("users/{newbie_id}/groups/{sales}"),
            None,
        )
        .await
        .expect("newbie joins sales");
    people.push(newbie);
    until_jira_holds(&stack, &people, "newbie")
        .await
        .expect("newbie in Jira");
    let runs = stack.runs().await.expect("ListRuns");
    let newbie_run = runs
        .iter()
        .find(|run| {
            run.event
                .as_ref()
                .is_some_and(|event| event.user_ids.contains(&newbie_id))
        })
        .with_context(|| format!("no run names newbie: {runs:#?}"))
        .expect("an event run for newbie");
    assert_eq!(newbie_run.trigger(), RunTrigger::Event);
    let newbie_run = stack
        .wait_for(&newbie_run.run_id, e2e::TERMINAL)
        .await
        .expect("newbie's run ends");
    assert_eq!(newbie_run.state(), RunState::Succeeded, "{newbie_run:#?}");

    // The follower is down while alice changes her email, and catches up once it is back.
    until_idle(&stack).await.expect("the event runs end");
    stack.kill_service("fetcher");
    let alice = stack.realm.user_id("alice").await.expect("alice's id");
    stack
        .realm
        .admin(
            Method::PUT,
            &format!("users/{alice}"),
            Some(&json!({ "email": "alice.new@example.org", "emailVerified": true })),
        )
        .await
        .expect("alice's email changed");
    people[0].email = Some("alice.new@example.org".to_owned());
    stack
        .start_service("fetcher")
        .expect("the fetcher restarts");
    until_jira_holds(&stack, &people, "alice's email after the restart")
        .await
        .expect("alice's new email in Jira");

    // Nothing was missed: a full sync writes nothing.
    until_idle(&stack).await.expect("the event runs end");
    let before = stack.writes(Product::Jira).await.expect("writes");
    let full = stack.sync(RunMode::Apply).await.expect("a full sync");
    assert_eq!(full.trigger(), RunTrigger::Api);
    assert_eq!(stack.writes(Product::Jira).await.expect("writes"), before);
    for run in stack.runs().await.expect("ListRuns") {
        if run.trigger() == RunTrigger::Event {
            assert!(
                matches!(run.state(), RunState::Succeeded),
                "every event run succeeded: {run:#?}"
            );
        }
    }

    // A user deleted in Keycloak is deactivated in Jira; the next deletion would make two
    // within the hour, more than max_accounts: its run is held.
    let user002 = stack.realm.user_id("user002").await.expect("user002's id");
    stack
        .realm
        .admin(Method::DELETE, &format!("users/{user002}"), None)
        .await
        .expect("user002 deleted");
    let until = Instant::now() + e2e::DEADLINE;
    while jira_active(&stack, "user002").await != Some(false) {
        assert!(
            Instant::now() < until,
            "user002 was never deactivated in Jira"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    until_idle(&stack).await.expect("the event runs end");
    let user003 = stack.realm.user_id("user003").await.expect("user003's id");
    stack
        .realm
        .admin(Method::DELETE, &format!("users/{user003}"), None)
        .await
        .expect("user003 deleted");
    let held = held_deletion(&stack, &user003).await;
    assert!(
        held.reason.contains("safety.max_accounts (1)"),
        "{}",
        held.reason
    );
    assert_eq!(jira_active(&stack, "user003").await, Some(true));

    // Approved, it counts toward the hour as an applied one does: the next deletion is
    // judged with both before it.
    stack.approve(&held.run_id).await.expect("approves");
    let until = Instant::now() + e2e::DEADLINE;
    while jira_active(&stack, "user003").await != Some(false) {
        assert!(
            Instant::now() < until,
            "the approved deletion was never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    until_idle(&stack).await.expect("the event runs end");
    let user004 = stack.realm.user_id("user004").await.expect("user004's id");
    stack
        .realm
        .admin(Method::DELETE, &format!("users/{user004}"), None)
        .await
        .expect("user004 deleted");
    let third = held_deletion(&stack, &user004).await;
    assert!(
        third
            .reason
            .contains("would take access from 3 account(s) with this one (2 before it)"),
        "{}",
        third.reason
    );
}

/// The held event run of the deletion of user `id`, once there is one.
async fn held_deletion(stack: &Stack, id: &str) -> proto::v1::Run {
    let until = Instant::now() + e2e::DEADLINE;
    loop {
        let runs = stack.runs().await.expect("ListRuns");
        if let Some(run) = runs.into_iter().find(|run| {
            run.event
                .as_ref()
                .is_some_and(|event| event.user_ids.iter().any(|named| named == id))
                && run.state() == RunState::Held
        }) {
            return run;
        }
        assert!(
            Instant::now() < until,
            "the deletion of {id} was never held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Whether Jira's account `login` is active; `None` when there is none.
async fn jira_active(stack: &Stack, login: &str) -> Option<bool> {
    let state = stack.emulator_state(Product::Jira).await.ok()?;
    state["accounts"]
        .as_array()?
        .iter()
        .find(|account| account["login"] == login)
        .and_then(|account| account["active"].as_bool())
}
