//! The seeded realm every fetch test reads, what its snapshot must be, and a view of a
//! snapshot that does not depend on the ids Keycloak assigned.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use config::Secret;
use keycloak::config::KeycloakSettings;
use model::snapshot::Snapshot;
use test_support::keycloak::{Keycloak, RealmSpec, TestRealm, UserSpec};

/// Settings for the realm's `keysync` client, with a page of 10 so that paging is
/// exercised by a small realm.
pub fn settings(realm: &TestRealm<'_>) -> KeycloakSettings {
    let mut settings = KeycloakSettings::new(
        realm.base_url(),
        realm.name(),
        realm.client_id(),
        Secret::new(realm.client_secret()),
    );
    settings.page_size = 10;
    settings.concurrency = 4;
    settings
}

/// The users of the seeded realm: more than three pages of 10; disabled users, users
/// without email, unicode and mixed-case names, custom attributes with several values,
/// and a user in several groups.
pub fn seeded_users() -> Vec<UserSpec> {
    let mut users = vec![
        UserSpec::new("Zoë")
            .email("zoe@example.org")
            .name("Zoë", "Ørsted")
            .attribute("languages", &["da", "en", "日本語"])
            .attribute("employeeNumber", &["0042"])
            .member_of("/a/b")
            .member_of("/a/b/c/d")
            .member_of("/Ünïcödé Grüppe")
            .member_of("/Engineering/team-03"),
        UserSpec::new("MixedCase.User")
            .email("Mixed.Case@Example.ORG")
            .name("Mixed", "CASE")
            .member_of("/a"),
        UserSpec::new("no-email-disabled").no_email().disabled(),
        UserSpec::new("josé.garcía")
            .email("jose@example.org")
            .name("José", "García")
            .member_of("/Ünïcödé Grüppe"),
        UserSpec::new("unverified")
            .name("Un", "Verified")
            .attribute("department", &["sales"]),
    ];
    for idx in 0..40 {
        let mut user = UserSpec::new(&format!("user-{idx:02}"));
        if idx % 7 == 0 {
            user = user.disabled();
        }
        if idx % 5 == 0 {
            user = user.no_email();
        } else if idx % 2 == 0 {
            user = user.name(&format!("First{idx}"), &format!("Last{idx}"));
        }
        if idx % 3 == 0 {
            user = user.attribute("department", &["engineering"]);
        }
        if idx < 25 {
            // 25 direct members: three pages of members.
            user = user.member_of("/Engineering");
        }
        if idx % 2 == 1 {
            user = user.member_of(&format!("/Engineering/team-{:02}", idx % 12));
        }
        users.push(user);
    }
    users[4].email_verified = false;
    users
}

/// The seeded groups beyond those the users are members of: four levels deep, and a
/// parent with 12 children (more than `/children`'s default page of 10, and more than a
/// page of the test's page size).
pub fn seeded_realm() -> RealmSpec {
    let mut spec = RealmSpec::default().group("/a/b/c/d").group("/Empty group");
    for idx in 0..12 {
        spec = spec.group(&format!("/Engineering/team-{idx:02}"));
    }
    for user in seeded_users() {
        spec = spec.user(user);
    }
    spec
}

/// A snapshot with names in place of ids: users by username, groups by path with their
/// parent's path, memberships as (username, group path).
#[derive(Debug, PartialEq, Eq)]
pub struct Directory {
    pub users: BTreeMap<String, User>,
    pub groups: BTreeMap<String, Group>,
    pub memberships: BTreeSet<(String, String)>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct User {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub enabled: bool,
    pub email_verified: bool,
    pub attributes: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub parent: Option<String>,
}

/// What the snapshot of a realm seeded with `users` and `extra_groups` must be.
/// Keycloak stores usernames and emails in lower case.
pub fn expected(users: &[UserSpec], extra_groups: &[&str]) -> Directory {
    let mut paths: BTreeSet<String> = extra_groups.iter().map(|path| (*path).to_owned()).collect();
    paths.extend(users.iter().flat_map(|user| user.groups.iter().cloned()));
    let mut groups = BTreeMap::new();
    for path in paths {
        let mut prefix = String::new();
        let mut parent = None;
        for segment in path.split('/').filter(|segment| !segment.is_empty()) {
            prefix = format!("{prefix}/{segment}");
            groups.insert(
                prefix.clone(),
                Group {
                    name: segment.to_owned(),
                    parent: parent.clone(),
                },
            );
            parent = Some(prefix.clone());
        }
    }
    Directory {
        users: users
            .iter()
            .map(|user| {
                (
                    user.username.to_lowercase(),
                    User {
                        email: user.email.as_ref().map(|email| email.to_lowercase()),
                        first_name: user.first_name.clone(),
                        last_name: user.last_name.clone(),
                        enabled: user.enabled,
                        email_verified: user.email_verified,
                        attributes: user.attributes.clone(),
                    },
                )
            })
            .collect(),
        groups,
        memberships: users
            .iter()
            .flat_map(|user| {
                user.groups
                    .iter()
                    .map(|path| (user.username.to_lowercase(), path.clone()))
            })
            .collect(),
    }
}

/// The snapshot with ids replaced by names; panics on an id that points nowhere or a
/// duplicate, which an exact snapshot never has.
pub fn directory(snapshot: &Snapshot) -> Directory {
    let usernames: HashMap<&str, &str> = snapshot
        .users
        .iter()
        .map(|user| (user.id.as_str(), user.username.as_str()))
        .collect();
    assert_eq!(usernames.len(), snapshot.users.len(), "duplicate user ids");
    let paths: HashMap<&str, &str> = snapshot
        .groups
        .iter()
        .map(|group| (group.id.as_str(), group.path.as_str()))
        .collect();
    assert_eq!(paths.len(), snapshot.groups.len(), "duplicate group ids");
    let memberships: BTreeSet<(String, String)> = snapshot
        .memberships
        .iter()
        .map(|membership| {
            (
                usernames[membership.user_id.as_str()].to_owned(),
                paths[membership.group_id.as_str()].to_owned(),
            )
        })
        .collect();
    assert_eq!(
        memberships.len(),
        snapshot.memberships.len(),
        "duplicate memberships"
    );
    Directory {
        users: snapshot
            .users
            .iter()
            .map(|user| {
                (
                    user.username.clone(),
                    User {
                        email: user.email.clone(),
                        first_name: user.first_name.clone(),
                        last_name: user.last_name.clone(),
                        enabled: user.enabled,
                        email_verified: user.email_verified,
                        attributes: user.attributes.clone(),
                    },
                )
            })
            .collect(),
        groups: snapshot
            .groups
            .iter()
            .map(|group| {
                (
                    group.path.clone(),
                    Group {
                        name: group.name.clone(),
                        parent: group
                            .parent_id
                            .as_ref()
                            .map(|parent| paths[parent.as_str()].to_owned()),
                    },
                )
            })
            .collect(),
        memberships,
    }
}

/// Seeds the realm on `keycloak`, fetches it, and checks the snapshot is exactly what
/// was seeded, ids included.
pub async fn assert_fetch_is_exact(keycloak: &Keycloak) -> anyhow::Result<()> {
    let realm = keycloak.create_realm(seeded_realm()).await?;
    // A service account in a group: `/users` leaves it out, and so must the snapshot.
    let service_account = realm.user_id("service-account-keysync").await?;
    let engineering = realm.group_id("/Engineering").await?;
    realm
        .admin(
            reqwest::Method::PUT,
            &format!("users/{service_account}/groups/{engineering}"),
            None,
        )
        .await?;

    let client = keycloak::client::Client::new(settings(&realm))?;
    let snapshot = client.fetch().await?;

    let users = seeded_users();
    assert!(users.len() > 30, "more than three pages of 10");
    let teams: Vec<String> = (0..12)
        .map(|idx| format!("/Engineering/team-{idx:02}"))
        .collect();
    let mut extra_groups = vec!["/a/b/c/d", "/Empty group"];
    extra_groups.extend(teams.iter().map(String::as_str));
    let want = expected(&users, &extra_groups);
    assert_eq!(directory(&snapshot), want);
    assert_eq!(snapshot.users.len(), 45);

    // The ids are Keycloak's.
    let zoe = snapshot
        .users
        .iter()
        .find(|user| user.username == "zoë")
        .expect("zoë");
    assert_eq!(zoe.id.as_str(), realm.user_id("zoë").await?);
    let deepest = snapshot
        .groups
        .iter()
        .find(|group| group.path == "/a/b/c/d")
        .expect("/a/b/c/d");
    assert_eq!(deepest.id.as_str(), realm.group_id("/a/b/c/d").await?);
    assert!(
        client.progress().requests() > 20,
        "paged: {:?}",
        client.progress()
    );
    Ok(())
}
