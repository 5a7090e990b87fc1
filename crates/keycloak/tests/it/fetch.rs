//! The fetch against a real Keycloak: the exact snapshot (also below `/auth`), the error
//! that names a missing role, required groups, and a directory that changes while it is
//! read.

use std::time::{Duration, Instant};

use keycloak::{Error, client::Client};
use serde_json::json;
use test_support::keycloak::{Keycloak, KeycloakOptions, RealmSpec, UserSpec};

use crate::helpers::{self, Directory, assert_fetch_is_exact, directory, settings};

#[tokio::test]
async fn fetch_returns_exactly_the_seeded_realm() -> anyhow::Result<()> {
    assert_fetch_is_exact(Keycloak::shared().await?).await
}

#[tokio::test]
async fn fetch_returns_exactly_the_seeded_realm_below_the_auth_relative_path() -> anyhow::Result<()>
{
    let keycloak = Keycloak::start(KeycloakOptions {
        relative_path: Some("/auth".into()),
        ..KeycloakOptions::default()
    })
    .await?;
    assert!(keycloak.base_url().ends_with("/auth"));
    assert_fetch_is_exact(&keycloak).await
}

#[tokio::test]
async fn fetch_names_view_users_when_the_service_account_has_no_role() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak
        .create_realm(RealmSpec::default().client_roles(&[]).group("/staff"))
        .await?;
    let error = Client::new(settings(&realm))?
        .fetch()
        .await
        .expect_err("no role");
    assert!(
        matches!(
            &error,
            Error::MissingRole {
                role: "view-users",
                status: 403,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("lacks the `realm-management` role `view-users`"),
        "{message}"
    );
    assert!(message.contains("GET /users/count"), "{message}");
    Ok(())
}

#[tokio::test]
async fn fetch_names_query_groups_when_the_service_account_can_only_query_users()
-> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak
        .create_realm(RealmSpec::default().client_roles(&["query-users"]))
        .await?;
    let error = Client::new(settings(&realm))?
        .fetch()
        .await
        .expect_err("cannot read groups");
    assert!(
        matches!(
            &error,
            Error::MissingRole {
                role: "query-groups",
                ..
            }
        ),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn fetch_with_required_groups_reads_their_members_with_all_their_memberships()
-> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let users = vec![
        UserSpec::new("in-staff")
            .member_of("/staff")
            .member_of("/projects/x"),
        UserSpec::new("in-devs")
            .attribute("team", &["devs"])
            .member_of("/staff/devs/backend"),
        UserSpec::new("outsider").member_of("/projects/x"),
        UserSpec::new("nowhere"),
    ];
    let mut spec = RealmSpec::default().group("/other/deep");
    for user in &users {
        spec = spec.user(user.clone());
    }
    let realm = keycloak.create_realm(spec).await?;
    let mut settings = settings(&realm);
    settings.required_groups = vec!["/staff".to_owned()];
    let snapshot = Client::new(settings)?.fetch().await?;

    // The whole tree, but only the members of /staff and below, with all their groups.
    let want = helpers::expected(&users[..2], &["/other/deep", "/projects/x"]);
    assert_eq!(directory(&snapshot), want);

    let mut missing = helpers::settings(&realm);
    missing.required_groups = vec!["/nope".to_owned()];
    let error = Client::new(missing)?
        .fetch()
        .await
        .expect_err("no such group");
    assert!(
        matches!(&error, Error::RequiredGroupMissing { path } if path == "/nope"),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn fetch_reads_the_realm_again_when_a_user_is_added_during_the_fetch() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let users: Vec<UserSpec> = (0..150)
        .map(|idx| UserSpec::new(&format!("person-{idx:03}")))
        .collect();
    let mut spec = RealmSpec::default();
    for user in &users {
        spec = spec.user(user.clone());
    }
    let realm = keycloak.create_realm(spec).await?;
    let mut settings = settings(&realm);
    // One user per request, one request at a time: a pass takes 150+ requests.
    settings.page_size = 1;
    settings.concurrency = 1;
    let client = Client::new(settings)?;
    let admin_token = keycloak.admin_token().await?;
    let fetch = tokio::spawn({
        let client = client.clone();
        async move { client.fetch().await }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.progress().users() < 5 {
        anyhow::ensure!(Instant::now() < deadline, "the fetch did not start");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let created = reqwest::Client::new()
        .post(format!(
            "{}/admin/realms/{}/users",
            keycloak.base_url(),
            realm.name()
        ))
        .bearer_auth(&admin_token)
        .json(&json!({ "username": "aaa-newcomer", "enabled": true }))
        .send()
        .await?;
    anyhow::ensure!(created.status().is_success(), "{}", created.status());
    let users_read_when_created = client.progress().users();
    anyhow::ensure!(
        users_read_when_created < 150,
        "the first pass was over before the user was added; the test proves nothing"
    );

    let snapshot = fetch.await??;
    let Directory { users: read, .. } = directory(&snapshot);
    assert_eq!(read.len(), 151);
    assert!(read.contains_key("aaa-newcomer"));
    // The first pass was thrown away: more users were read than the realm has.
    assert!(client.progress().users() > 151, "{:?}", client.progress());
    Ok(())
}

#[tokio::test]
async fn a_streamed_fetch_hands_on_each_user_once_with_their_memberships_before_the_end()
-> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(helpers::seeded_realm()).await?;
    let client = Client::new(settings(&realm))?;
    let complete = client.fetch().await?;
    let (parts, received) = keycloak::stream::Parts::new(8);
    let (streamed, parts) = tokio::join!(client.fetch_streaming(parts), async {
        use futures::StreamExt;
        received.collect::<Vec<_>>().await
    });
    let streamed = streamed?;
    assert_eq!(directory(&streamed), directory(&complete));
    // Parts of 1, 2, 4, then 8 users (an eighth of 8 first, doubling): every full part was
    // handed on, and the users after the last are in none.
    let users = complete.users.len();
    let sizes: Vec<usize> = parts.iter().map(|part| part.snapshot.users.len()).collect();
    let expected: Vec<usize> = [1, 2, 4]
        .into_iter()
        .chain(std::iter::repeat(8))
        .scan(0, |read, size| {
            *read += size;
            (*read <= users).then_some(size)
        })
        .collect();
    assert!(expected.len() >= 5, "{users} users: too few parts");
    assert_eq!(sizes, expected);
    let mut seen = std::collections::BTreeSet::new();
    for part in &parts {
        assert_eq!(part.realm_users, users as u64);
        assert_eq!(part.snapshot.groups, complete.groups);
        for user in &part.snapshot.users {
            assert!(
                seen.insert(user.id.clone()),
                "{} in two parts",
                user.username
            );
            assert!(
                complete.users.contains(user),
                "{} as the complete fetch read it",
                user.username
            );
        }
        let ids: std::collections::BTreeSet<_> =
            part.snapshot.users.iter().map(|user| &user.id).collect();
        let expected: Vec<_> = complete
            .memberships
            .iter()
            .filter(|membership| ids.contains(&membership.user_id))
            .cloned()
            .collect();
        assert_eq!(part.snapshot.memberships, expected);
    }
    Ok(())
}
