//! Event-driven sync over a scripted sequence of Keycloak edits (#16): users created,
//! their emails changed, disabled, enabled, added to and removed from groups, deleted, as
//! fast as the Admin API takes them, while the follower turns them into event runs. Once
//! they are done, Jira's active accounts and their groups are exactly what the script left
//! in Keycloak, and a full sync writes nothing: no edit was missed.
//!
//! `make test` runs 60 edits; with `KEYSYNC_RELIABILITY_FULL=1` (`make reliability`), 200.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::bail;
use e2e::{Stack, StackOptions};
use proto::v1::{Product, RunMode, RunState};
use reqwest::Method;
use serde_json::json;

use crate::directory::{self, GROUPS, Person};

/// A deterministic generator (xorshift), so a failing script can be run again.
struct Script(u64);

impl Script {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below.max(1) as u64) as usize
    }
}

/// The realm as the script left it, by username.
struct Realm {
    people: BTreeMap<String, Person>,
    created: usize,
}

impl Realm {
    /// What Jira should hold: each active account's groups.
    fn expected(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.people
            .values()
            .filter(|person| person.enabled && person.email.is_some())
            .map(|person| {
                let groups = person
                    .groups
                    .iter()
                    .map(|path| directory::group_name(path).to_owned())
                    .collect();
                (person.username.clone(), groups)
            })
            .collect()
    }
}

/// Jira's active accounts among `logins`, with their groups among keysync's.
async fn jira_active(
    stack: &Stack,
    logins: &BTreeSet<String>,
) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let state = stack.emulator_state(Product::Jira).await?;
    let groups = directory::group_names();
    let mut active: BTreeMap<String, BTreeSet<String>> = state["accounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|account| account["active"].as_bool() == Some(true))
        .filter_map(|account| account["login"].as_str())
        .filter(|login| logins.contains(*login))
        .map(|login| (login.to_owned(), BTreeSet::new()))
        .collect();
    for membership in state["memberships"].as_array().into_iter().flatten() {
        let (Some(login), Some(group)) =
            (membership["login"].as_str(), membership["group"].as_str())
        else {
            continue;
        };
        if let Some(held) = active.get_mut(login)
            && groups.contains(group)
        {
            held.insert(group.to_owned());
        }
    }
    Ok(active)
}

/// Makes one edit through the Admin API and records it in `realm`.
async fn edit(stack: &Stack, realm: &mut Realm, script: &mut Script) -> anyhow::Result<()> {
    let usernames: Vec<String> = realm.people.keys().cloned().collect();
    let kind = script.next(100);
    if kind < 15 || usernames.is_empty() {
        realm.created += 1;
        let username = format!("script{:03}", realm.created);
        let group = GROUPS[script.next(GROUPS.len())].to_owned();
        stack
            .realm
            .admin(
                Method::POST,
                "users",
                Some(&json!({
                    "username": username,
                    "email": format!("{username}@example.org"),
                    "emailVerified": true,
                    "firstName": "Script",
                    "lastName": format!("User{}", realm.created),
                    "enabled": true,
                })),
            )
            .await?;
        let id = stack.realm.user_id(&username).await?;
        let group_id = stack.realm.group_id(&group).await?;
        stack
            .realm
            .admin(Method::PUT, &format!("users/{id}/groups/{group_id}"), None)
            .await?;
        realm.people.insert(
            username.clone(),
            Person {
                username,
                email: Some(format!("script{:03}@example.org", realm.created)),
                enabled: true,
                first: "Script".to_owned(),
                last: format!("User{}", realm.created),
                groups: vec![group],
            },
        );
        return Ok(());
    }
    let username = usernames[script.next(usernames.len())].clone();
    let id = stack.realm.user_id(&username).await?;
    let Some(person) = realm.people.get_mut(&username) else {
        bail!("{username} is not in the script's realm");
    };
    match kind {
        15..35 => {
            let email = format!("{username}.v{}@example.org", script.next(1000));
            stack
                .realm
                .admin(
                    Method::PUT,
                    &format!("users/{id}"),
                    Some(&json!({ "email": email, "emailVerified": true })),
                )
                .await?;
            person.email = Some(email);
        }
        35..55 => {
            let enabled = kind >= 45;
            stack
                .realm
                .admin(
                    Method::PUT,
                    &format!("users/{id}"),
                    Some(&json!({ "enabled": enabled })),
                )
                .await?;
            person.enabled = enabled;
        }
        55..75 => {
            let group = GROUPS[script.next(GROUPS.len())].to_owned();
            let group_id = stack.realm.group_id(&group).await?;
            stack
                .realm
                .admin(Method::PUT, &format!("users/{id}/groups/{group_id}"), None)
                .await?;
            if !person.groups.contains(&group) {
                person.groups.push(group);
            }
        }
        75..90 => {
            if let Some(group) = person.groups.first().cloned() {
                let group_id = stack.realm.group_id(&group).await?;
                stack
                    .realm
                    .admin(
                        Method::DELETE,
                        &format!("users/{id}/groups/{group_id}"),
                        None,
                    )
                    .await?;
                person.groups.retain(|known| known != &group);
            }
        }
        _ => {
            stack
                .realm
                .admin(Method::DELETE, &format!("users/{id}"), None)
                .await?;
            realm.people.remove(&username);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_sequence_of_edits_leaves_jira_as_keycloak_and_a_full_sync_nothing_to_do() {
    let edits = if std::env::var("KEYSYNC_RELIABILITY_FULL").is_ok_and(|value| value == "1") {
        200
    } else {
        60
    };
    let people = directory::people(12);
    let mut service_env = crate::events::events_env();
    // The script deletes and disables many people within the hour: no limit holds it.
    for product in ["JIRA", "CONFLUENCE", "BITBUCKET"] {
        for (key, value) in [
            ("MAX_ACCOUNTS", "100000"),
            ("MAX_PERCENT", "100"),
            ("MAX_MEMBERSHIPS", "100000"),
            ("MAX_MEMBERSHIPS_PERCENT", "100"),
            ("MAX_GROUP_LOSS_PERCENT", "100"),
        ] {
            service_env.push((
                format!("KEYSYNC_PRODUCTS__{product}__POLICY__SAFETY__{key}"),
                value.to_owned(),
            ));
        }
    }
    let stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        service_env,
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    crate::events::turn_events_on(&stack).await;
    let mut realm = Realm {
        people: people
            .into_iter()
            .map(|person| (person.username.clone(), person))
            .collect(),
        created: 0,
    };
    let mut logins: BTreeSet<String> = realm.people.keys().cloned().collect();
    crate::events::until_jira_holds(
        &stack,
        &realm.people.values().cloned().collect::<Vec<_>>(),
        "the first start",
    )
    .await
    .expect("the first full sync");

    let mut script = Script(0x5eed_1234_abcd_0001);
    for _ in 0..edits {
        edit(&stack, &mut realm, &mut script)
            .await
            .expect("an edit through the Admin API");
        logins.extend(realm.people.keys().cloned());
    }

    let expected = realm.expected();
    let until = Instant::now() + e2e::DEADLINE;
    loop {
        let active = jira_active(&stack, &logins).await.expect("Jira's state");
        if active == expected {
            break;
        }
        if Instant::now() > until {
            let differ: Vec<String> = logins
                .iter()
                .filter(|login| active.get(*login) != expected.get(*login))
                .map(|login| {
                    format!(
                        "{login}: Jira {:?}, Keycloak {:?}",
                        active.get(login),
                        expected.get(login)
                    )
                })
                .collect();
            let runs = stack.runs().await.expect("ListRuns");
            panic!(
                "after {edits} edits Jira never held what Keycloak has:\n{}\nruns: {:#?}",
                differ.join("\n"),
                runs.iter()
                    .map(|run| (
                        run.run_id.as_str(),
                        run.state(),
                        run.reason.as_str(),
                        run.event.as_ref()
                    ))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The follower may still turn the last events into a run: wait until none is active
    // and the full sync starts.
    let (full, before) = loop {
        crate::events::until_idle(&stack)
            .await
            .expect("the event runs end");
        let before = stack.writes(Product::Jira).await.expect("writes");
        match stack
            .try_start_sync_of(e2e::CONNECTOR, RunMode::Apply)
            .await
        {
            Ok(run) => break (run, before),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => continue,
            Err(status) => panic!("StartSync: {status}"),
        }
    };
    let runs = stack.runs().await.expect("ListRuns");
    for run in &runs {
        assert!(
            !matches!(run.state(), RunState::Failed | RunState::Held),
            "{run:#?}"
        );
    }
    let full = stack
        .wait_for(&full.run_id, e2e::TERMINAL)
        .await
        .expect("the full sync ends");
    assert_eq!(full.state(), RunState::Succeeded, "{full:#?}");
    assert_eq!(
        stack.writes(Product::Jira).await.expect("writes"),
        before,
        "a full sync after {edits} edits wrote to Jira: an edit was missed"
    );
    println!(
        "event script: {edits} edits, {} runs, {} people left",
        runs.len(),
        realm.people.len()
    );
}
