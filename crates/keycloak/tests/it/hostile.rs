//! Malformed and hostile answers, against the scripted server: a listing that ignores
//! `first` or never ends, an impossible count, a token lifetime that overflows, a body
//! past the size limit, a user without `enabled`. Each must end the fetch with an error
//! that says what was wrong (or, for the token, be survived), never hang, panic or return
//! a snapshot that is not the directory.

use std::time::Duration;

use config::Secret;
use keycloak::{Error, client::Client, config::KeycloakSettings};
use model::snapshot::Snapshot;

use crate::fake::{FakeKeycloak, Request, Response, json, status};

const REALM: &str = "corp";

/// Pages of two, so a short script exercises paging.
fn settings(fake: &FakeKeycloak) -> KeycloakSettings {
    let mut settings = KeycloakSettings::new(fake.url(), REALM, "keysync", Secret::new("secret"));
    settings.retries = 1;
    settings.page_size = 2;
    settings.concurrency = 2;
    settings
}

fn user(id: &str) -> String {
    format!(r#"{{"id":"{id}","username":"{id}","enabled":true,"emailVerified":false}}"#)
}

fn users(ids: &[&str]) -> Response {
    let users: Vec<String> = ids.iter().map(|id| user(id)).collect();
    json(&format!("[{}]", users.join(",")))
}

fn group(id: &str, sub_group_count: u64) -> String {
    format!(r#"{{"id":"{id}","name":"{id}","path":"/{id}","subGroupCount":{sub_group_count}}}"#)
}

/// A realm with `user_count` users and no groups unless `answer` says otherwise: `answer`
/// gets the path below `/admin/realms/corp` and answers what it wants to.
fn realm(
    request: &Request,
    user_count: &str,
    answer: impl Fn(&str, &Request) -> Option<Response>,
) -> Response {
    if request.path.ends_with("/protocol/openid-connect/token") {
        return json(r#"{"access_token":"t","expires_in":300}"#);
    }
    let admin = format!("/admin/realms/{REALM}");
    let Some(below) = request.path.strip_prefix(&admin) else {
        return status(404, r#"{"error":"not found"}"#);
    };
    if let Some(response) = answer(below, request) {
        return response;
    }
    match below {
        "/users/count" => json(user_count),
        "/groups/count" => json(r#"{"count":0}"#),
        "/users" | "/groups" => json("[]"),
        _ if below.ends_with("/members") => json("[]"),
        _ => status(404, r#"{"error":"not found"}"#),
    }
}

/// The fetch, which must end (with a snapshot or an error) within a generous time.
async fn fetch(fake: &FakeKeycloak) -> anyhow::Result<Result<Snapshot, Error>> {
    let client = Client::new(settings(fake))?;
    match tokio::time::timeout(Duration::from_secs(60), client.fetch()).await {
        Ok(result) => Ok(result),
        Err(_) => anyhow::bail!("the fetch did not end: {:?}", client.progress()),
    }
}

#[tokio::test]
async fn a_users_page_that_ignores_first_fails_the_fetch() -> anyhow::Result<()> {
    let fake = FakeKeycloak::start(|request| {
        realm(request, "3", |below, _| {
            (below == "/users").then(|| users(&["u1", "u2"]))
        })
    })
    .await?;
    let error = fetch(&fake)
        .await?
        .expect_err("the same page again and again");
    assert!(
        matches!(&error, Error::Repeated { endpoint, .. } if endpoint == "GET /users"),
        "{error:?}"
    );
    assert!(error.to_string().contains("first"), "{error}");
    Ok(())
}

#[tokio::test]
async fn a_users_listing_that_never_ends_fails_the_fetch() -> anyhow::Result<()> {
    let fake = FakeKeycloak::start(|request| {
        realm(request, "3", |below, request| {
            (below == "/users").then(|| {
                // Always a full page of users never seen before.
                let first = request.number("first");
                users(&[&format!("u{first}"), &format!("u{}", first + 1)])
            })
        })
    })
    .await?;
    let error = fetch(&fake).await?.expect_err("an endless listing");
    assert!(
        matches!(&error, Error::Endless { endpoint, limit, .. }
            if endpoint == "GET /users" && *limit < 10_000),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_page_longer_than_max_fails_the_fetch() -> anyhow::Result<()> {
    // Three users for `max=2`: the server does not page as asked, so what it pages
    // cannot be trusted to be the whole directory.
    let fake = FakeKeycloak::start(|request| {
        realm(request, "3", |below, _| {
            (below == "/users").then(|| users(&["u1", "u2", "u3"]))
        })
    })
    .await?;
    let error = fetch(&fake).await?.expect_err("a page too long");
    assert!(
        matches!(&error, Error::PageTooLong { endpoint, max: 2, len: 3 } if endpoint == "GET /users"),
        "{error:?}"
    );
    Ok(())
}

/// One user, `u1`, and one top-level group `g1` without subgroups; `members` answers
/// `GET /groups/g1/members`.
fn one_group(request: &Request, members: impl Fn(&Request) -> Response) -> Response {
    realm(request, "1", |below, request| match below {
        "/users" => Some(users(&["u1"])),
        "/groups/count" => Some(json(r#"{"count":1}"#)),
        "/groups" => Some(json(&format!("[{}]", group("g1", 0)))),
        "/groups/g1/members" => Some(members(request)),
        _ => None,
    })
}

#[tokio::test]
async fn a_members_page_that_ignores_first_fails_the_fetch() -> anyhow::Result<()> {
    let fake =
        FakeKeycloak::start(|request| one_group(request, |_| json(r#"[{"id":"u1"},{"id":"u2"}]"#)))
            .await?;
    let error = fetch(&fake)
        .await?
        .expect_err("the same members again and again");
    assert!(
        matches!(&error, Error::Repeated { endpoint, .. } if endpoint == "GET /groups/{id}/members"),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_members_listing_that_never_ends_fails_the_fetch() -> anyhow::Result<()> {
    let fake = FakeKeycloak::start(|request| {
        one_group(request, |request| {
            let first = request.number("first");
            json(&format!(
                r#"[{{"id":"m{first}"}},{{"id":"m{}"}}]"#,
                first + 1
            ))
        })
    })
    .await?;
    let error = fetch(&fake).await?.expect_err("endless members");
    assert!(
        matches!(&error, Error::Endless { endpoint, .. } if endpoint == "GET /groups/{id}/members"),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_group_tree_that_never_ends_fails_the_fetch() -> anyhow::Result<()> {
    // Every group has one child, never seen before: an endless chain.
    let fake = FakeKeycloak::start(|request| {
        realm(request, "0", |below, _| match below {
            "/groups/count" => Some(json(r#"{"count":1}"#)),
            "/groups" => Some(json(&format!("[{}]", group("g0", 1)))),
            _ => {
                let parent = below.strip_prefix("/groups/")?.strip_suffix("/children")?;
                let depth: u64 = parent.strip_prefix('g')?.parse().ok()?;
                Some(json(&format!("[{}]", group(&format!("g{}", depth + 1), 1))))
            }
        })
    })
    .await?;
    let error = fetch(&fake).await?.expect_err("an endless tree");
    assert!(matches!(&error, Error::Endless { .. }), "{error:?}");
    Ok(())
}

#[tokio::test]
async fn a_group_that_is_its_own_child_fails_the_fetch() -> anyhow::Result<()> {
    let fake = FakeKeycloak::start(|request| {
        realm(request, "0", |below, _| match below {
            "/groups/count" => Some(json(r#"{"count":1}"#)),
            "/groups" | "/groups/g1/children" => Some(json(&format!("[{}]", group("g1", 1)))),
            "/groups/g1/members" => Some(json("[]")),
            _ => None,
        })
    })
    .await?;
    let error = fetch(&fake).await?.expect_err("a cycle");
    assert!(
        matches!(&error, Error::Repeated { endpoint, .. } if endpoint == "GET /groups/{id}/children"),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_absurd_or_negative_count_fails_without_allocating_for_it() -> anyhow::Result<()> {
    for count in ["18446744073709551615", "9007199254740993", "-1", "1.5"] {
        let fake = FakeKeycloak::start(move |request| realm(request, count, |_, _| None)).await?;
        let error = fetch(&fake).await?.expect_err("an impossible count");
        assert!(
            matches!(&error, Error::ImpossibleCount { endpoint, .. } if endpoint == "GET /users/count"),
            "{count}: {error:?}"
        );
        assert!(error.to_string().contains(count), "{error}");
    }
    let fake = FakeKeycloak::start(|request| {
        realm(request, "0", |below, _| {
            (below == "/groups/count").then(|| json(r#"{"count":-5}"#))
        })
    })
    .await?;
    let error = fetch(&fake).await?.expect_err("a negative group count");
    assert!(
        matches!(&error, Error::ImpossibleCount { endpoint, .. } if endpoint == "GET /groups/count"),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_token_lifetime_that_overflows_or_is_negative_is_survived() -> anyhow::Result<()> {
    for expires_in in ["18446744073709551615", "1e300", "-300"] {
        let fake = FakeKeycloak::start(move |request| {
            if request.path.ends_with("/token") {
                return json(&format!(
                    r#"{{"access_token":"t","expires_in":{expires_in}}}"#
                ));
            }
            realm(request, "1", |below, _| {
                (below == "/users").then(|| users(&["u1"]))
            })
        })
        .await?;
        let snapshot = fetch(&fake).await?.map_err(anyhow::Error::from)?;
        assert_eq!(snapshot.users.len(), 1, "{expires_in}");
    }
    Ok(())
}

#[tokio::test]
async fn a_body_past_the_limit_fails_the_fetch_naming_the_limit() -> anyhow::Result<()> {
    let limit = keycloak::client::MAX_BODY_BYTES;
    // Valid JSON (a number and blanks), only too long.
    let body = Box::leak(format!("1{}", " ".repeat(limit + 1)).into_boxed_str());
    let fake = FakeKeycloak::start(move |request| {
        realm(request, body, |below, _| {
            (below == "/users").then(|| users(&["u1"]))
        })
    })
    .await?;
    let error = fetch(&fake).await?.expect_err("too large");
    assert!(
        matches!(&error, Error::BodyTooLarge { endpoint, .. } if endpoint == "GET /users/count"),
        "{error:?}"
    );
    assert!(error.to_string().contains(&limit.to_string()), "{error}");
    // Not retried: the same answer would come again.
    assert_eq!(
        fake.count(&format!("GET /admin/realms/{REALM}/users/count")),
        1
    );
    Ok(())
}

#[tokio::test]
async fn a_user_without_enabled_is_a_decode_error_not_a_disabled_user() -> anyhow::Result<()> {
    let fake = FakeKeycloak::start(|request| {
        realm(request, "1", |below, _| {
            (below == "/users")
                .then(|| json(r#"[{"id":"u1","username":"ann","emailVerified":true}]"#))
        })
    })
    .await?;
    let error = fetch(&fake).await?.expect_err("enabled is missing");
    let Error::Decode { endpoint, source } = &error else {
        panic!("not a decode error: {error:?}");
    };
    assert_eq!(endpoint, "GET /users");
    assert!(source.to_string().contains("`enabled`"), "{source}");
    // A missing field is no truncation: not retried.
    assert_eq!(fake.count(&format!("GET /admin/realms/{REALM}/users")), 1);
    Ok(())
}

#[tokio::test]
async fn a_user_without_id_or_username_is_a_decode_error() -> anyhow::Result<()> {
    for page in [
        r#"[{"username":"ann","enabled":true,"emailVerified":true}]"#,
        r#"[{"id":"u1","enabled":true,"emailVerified":true}]"#,
        r#"[{"id":"u1","username":null,"enabled":true,"emailVerified":true}]"#,
        r#"[{"id":"u1","username":"ann","enabled":null,"emailVerified":true}]"#,
    ] {
        let fake = FakeKeycloak::start(move |request| {
            realm(request, "1", |below, _| {
                (below == "/users").then(|| json(page))
            })
        })
        .await?;
        let error = fetch(&fake).await?.expect_err("a field is missing");
        assert!(matches!(&error, Error::Decode { .. }), "{page}: {error:?}");
    }
    Ok(())
}
