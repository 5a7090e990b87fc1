//! The people of the test realm, and what each product should hold for them (shared by the
//! `e2e` and `reliability` test binaries): the
//! expectation is written here from the documented policy defaults (login = username,
//! display name "{firstName} {lastName}", email required, groups by name, direct
//! memberships only), not computed by keysync's own planner.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use serde_json::{Value, json};
use test_support::keycloak::{RealmSpec, UserSpec};

#[derive(Clone, Debug)]
pub struct Person {
    pub username: String,
    pub first: String,
    pub last: String,
    pub email: Option<String>,
    pub enabled: bool,
    pub groups: Vec<String>,
}

pub const GROUPS: [&str; 4] = [
    "/staff",
    "/staff/engineering",
    "/staff/sales",
    "/contractors",
];

/// `count` people: most in one or two groups, one disabled, one without email.
pub fn people(count: usize) -> Vec<Person> {
    (0..count)
        .map(|index| {
            let username = if index == 0 {
                "alice".to_owned()
            } else {
                format!("user{index:03}")
            };
            let groups = match index % 4 {
                0 => vec!["/staff/engineering".to_owned()],
                1 => vec!["/staff/engineering".to_owned(), "/staff/sales".to_owned()],
                2 => vec!["/staff/sales".to_owned()],
                _ => vec!["/contractors".to_owned()],
            };
            Person {
                email: (index != 5).then(|| format!("{username}@example.org")),
                enabled: index != 6,
                first: format!("First{index}"),
                last: format!("Last{index}"),
                username,
                groups,
            }
        })
        .collect()
}

pub fn realm(people: &[Person]) -> RealmSpec {
    let mut spec = RealmSpec::default();
    for group in GROUPS {
        spec = spec.group(group);
    }
    for person in people {
        let mut user = UserSpec::new(&person.username).name(&person.first, &person.last);
        user = match &person.email {
            Some(email) => user.email(email),
            None => user.no_email(),
        };
        if !person.enabled {
            user = user.disabled();
        }
        for group in &person.groups {
            user = user.member_of(group);
        }
        spec = spec.user(user);
    }
    spec
}

/// The product group a Keycloak group maps to (`naming = "name"`).
pub fn group_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One product's accounts and memberships, as the emulators dump them.
#[derive(Debug, PartialEq, Eq)]
pub struct Holdings {
    /// login -> (display name, email, active)
    pub accounts: BTreeMap<String, (String, String, bool)>,
    /// (group, login)
    pub memberships: BTreeSet<(String, String)>,
    pub groups: BTreeSet<String>,
}

/// What keysync should have made of `people` in a product that starts empty.
pub fn expected(people: &[Person]) -> Holdings {
    let synced = || {
        people
            .iter()
            .filter(|person| person.enabled && person.email.is_some())
    };
    Holdings {
        accounts: synced()
            .map(|person| {
                (
                    person.username.clone(),
                    (
                        format!("{} {}", person.first, person.last),
                        person.email.clone().unwrap_or_default(),
                        true,
                    ),
                )
            })
            .collect(),
        memberships: synced()
            .flat_map(|person| {
                person
                    .groups
                    .iter()
                    .map(|group| (group_name(group).to_owned(), person.username.clone()))
            })
            .collect(),
        groups: GROUPS
            .iter()
            .map(|path| group_name(path).to_owned())
            .collect(),
    }
}

/// The part of an emulator's state that concerns `logins` and `groups`.
pub fn holdings(
    state: &Value,
    logins: &BTreeSet<String>,
    groups: &BTreeSet<String>,
) -> anyhow::Result<Holdings> {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let accounts = state["accounts"]
        .as_array()
        .context("no accounts in the state")?
        .iter()
        .filter(|account| logins.contains(account["login"].as_str().unwrap_or_default()))
        .map(|account| {
            (
                text(&account["login"]),
                (
                    text(&account["display_name"]),
                    text(&account["email"]),
                    account["active"].as_bool().unwrap_or(false),
                ),
            )
        })
        .collect();
    let memberships = state["memberships"]
        .as_array()
        .context("no memberships in the state")?
        .iter()
        .map(|membership| (text(&membership["group"]), text(&membership["login"])))
        .filter(|(group, login)| groups.contains(group) && logins.contains(login))
        .collect();
    let all_groups: BTreeSet<String> = state["groups"]
        .as_array()
        .context("no groups in the state")?
        .iter()
        .map(text)
        .collect();
    Ok(Holdings {
        accounts,
        memberships,
        groups: all_groups.intersection(groups).cloned().collect(),
    })
}

/// Every login of the realm's people.
pub fn logins(people: &[Person]) -> BTreeSet<String> {
    people
        .iter()
        .map(|person| person.username.clone())
        .collect()
}

pub fn group_names() -> BTreeSet<String> {
    GROUPS
        .iter()
        .map(|path| group_name(path).to_owned())
        .collect()
}

/// An emulator seed: accounts keysync does not manage, and one it should link.
pub fn jira_seed() -> Value {
    json!({
        "accounts": [
            {"login": "admin", "display_name": "Jira Administrator", "email": "admin@example.org"},
            {"login": "build-bot", "display_name": "Build Bot", "email": "ci@example.org"},
            {"login": "alice", "display_name": "Alice (since 2019)", "email": "alice@example.org"}
        ],
        "groups": [{"name": "jira-software-users"}],
        "memberships": [
            {"group": "jira-software-users", "login": "alice"},
            {"group": "jira-software-users", "login": "build-bot"}
        ]
    })
}
