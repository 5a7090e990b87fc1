//! Retries, backoff and token renewal, against the scripted server: the failures a real
//! Keycloak shows under load (truncated JSON, 5xx) and a token that stops working.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use config::Secret;
use keycloak::{Error, client::Client, config::KeycloakSettings};

use crate::fake::{FakeKeycloak, Request, Response, json, status};

const REALM: &str = "corp";

fn settings(fake: &FakeKeycloak) -> KeycloakSettings {
    let mut settings = KeycloakSettings::new(fake.url(), REALM, "keysync", Secret::new("secret"));
    settings.retries = 2;
    settings
}

/// A realm with one user and no groups; `users` answers `GET /users`.
fn tiny_realm(request: &Request, users: impl Fn(usize) -> Response) -> Response {
    let admin = format!("/admin/realms/{REALM}");
    match request.path.strip_prefix(&admin) {
        Some("/users/count") => json("1"),
        Some("/groups/count") => json(r#"{"count":0}"#),
        Some("/users") => users(request.nth),
        Some("/groups") => json("[]"),
        _ if request.path.ends_with("/protocol/openid-connect/token") => {
            json(r#"{"access_token":"t","expires_in":300}"#)
        }
        _ => status(404, r#"{"error":"not found"}"#),
    }
}

const ONE_USER: &str = r#"[{"id":"u1","username":"ann","enabled":true,"emailVerified":false,
    "attributes":{"k":["v"]},"access":{"manage":false},"createdTimestamp":1}]"#;

#[tokio::test]
async fn truncated_json_is_retried_until_it_decodes() -> anyhow::Result<()> {
    let fake = FakeKeycloak::start(|request| {
        tiny_realm(request, |nth| {
            if nth == 1 {
                json(&ONE_USER[..40])
            } else {
                json(ONE_USER)
            }
        })
    })
    .await?;
    let snapshot = Client::new(settings(&fake))?.fetch().await?;
    assert_eq!(snapshot.users.len(), 1);
    assert_eq!(snapshot.users[0].username, "ann");
    assert_eq!(snapshot.users[0].attributes["k"], ["v"]);
    assert_eq!(fake.count(&format!("GET /admin/realms/{REALM}/users")), 2);
    Ok(())
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_with_the_endpoint() -> anyhow::Result<()> {
    let fake =
        FakeKeycloak::start(|request| tiny_realm(request, |_| status(503, "Service Unavailable")))
            .await?;
    let error = Client::new(settings(&fake))?
        .fetch()
        .await
        .expect_err("always 503");
    assert!(
        matches!(&error, Error::Http { status: 503, endpoint, .. } if endpoint == "GET /users"),
        "{error:?}"
    );
    // The first try and two retries.
    assert_eq!(fake.count(&format!("GET /admin/realms/{REALM}/users")), 3);
    Ok(())
}

#[tokio::test]
async fn rejected_token_is_replaced_once_and_the_request_repeated() -> anyhow::Result<()> {
    let issued = Arc::new(AtomicUsize::new(0));
    let script_issued = issued.clone();
    let fake = FakeKeycloak::start(move |request| {
        if request.path.ends_with("/token") {
            let n = script_issued.fetch_add(1, Ordering::SeqCst) + 1;
            return json(&format!(r#"{{"access_token":"t{n}","expires_in":300}}"#));
        }
        // The first token stops working, as after a restart of Keycloak.
        if request.authorization == "Bearer t1" {
            return status(401, r#"{"error":"HTTP 401 Unauthorized"}"#);
        }
        tiny_realm(request, |_| json(ONE_USER))
    })
    .await?;
    let snapshot = Client::new(settings(&fake))?.fetch().await?;
    assert_eq!(snapshot.users.len(), 1);
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn token_is_requested_again_once_its_lifetime_is_mostly_used() -> anyhow::Result<()> {
    let fake = FakeKeycloak::start(|request| {
        if request.path.ends_with("/token") {
            // A lifetime of zero is always past 80 %.
            return json(r#"{"access_token":"t","expires_in":0}"#);
        }
        tiny_realm(request, |_| json(ONE_USER))
    })
    .await?;
    let client = Client::new(settings(&fake))?;
    client.fetch().await?;
    let token_requests = fake.count(&format!(
        "POST /realms/{REALM}/protocol/openid-connect/token"
    ));
    assert_eq!(token_requests as u64, client.progress().requests());
    Ok(())
}

#[tokio::test]
async fn wrong_client_secret_is_reported_as_unauthorized() -> anyhow::Result<()> {
    let fake = FakeKeycloak::start(|request| {
        if request.path.ends_with("/token") {
            return status(
                401,
                r#"{"error":"unauthorized_client","error_description":"Invalid client or Invalid client credentials"}"#,
            );
        }
        status(500, "unexpected")
    })
    .await?;
    let error = Client::new(settings(&fake))?
        .fetch()
        .await
        .expect_err("refused");
    assert!(
        matches!(error, Error::Unauthorized { status: 401, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("`keysync`"), "{error}");
    assert!(!format!("{error:?}").contains("secret\""), "{error:?}");
    Ok(())
}
