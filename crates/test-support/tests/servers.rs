//! The real servers come up, and a test realm is what its spec says: the client's
//! service account gets a token by client credentials and reads the seeded data back.

use reqwest::Method;
use serde_json::Value;
use test_support::{
    keycloak::{Keycloak, RealmSpec, UserSpec},
    nats::NatsServer,
};

#[tokio::test]
async fn client_credentials_token_reads_seeded_user_back() {
    let keycloak = Keycloak::shared().await.expect("keycloak");
    let realm = keycloak
        .create_realm(
            RealmSpec::default()
                .group("/org/engineering/backend")
                .user(
                    UserSpec::new("Zoë.Ångström")
                        .email("zoe@example.org")
                        .name("Zoë", "Ångström")
                        .attribute("department", &["R&D", "Ops"])
                        .member_of("/org/engineering/backend")
                        .member_of("/org"),
                )
                .user(UserSpec::new("bob").no_email().disabled()),
        )
        .await
        .expect("realm");

    let token = realm
        .client_token()
        .await
        .expect("client-credentials token");
    let access_token = token["access_token"].as_str().expect("access_token");
    assert_eq!(token["token_type"], "Bearer");
    assert!(
        token["expires_in"]
            .as_u64()
            .is_some_and(|seconds| seconds > 0)
    );
    assert!(
        token.get("refresh_token").is_none(),
        "client credentials issue no refresh token by default"
    );

    // Read with the service account's token, as keysync will.
    let http = reqwest::Client::new();
    let admin = format!("{}/admin/realms/{}", realm.base_url(), realm.name());
    let get = |path: String| {
        let request = http
            .get(format!("{admin}/{path}"))
            .bearer_auth(access_token);
        async move {
            let response = request.send().await.expect("request");
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            response.json::<Value>().await.expect("json")
        }
    };
    let users = get("users?username=zo%C3%AB.%C3%A5ngstr%C3%B6m&exact=true".to_owned()).await;
    let zoe = &users[0];
    assert_eq!(
        zoe["username"], "zoë.ångström",
        "keycloak lower-cases usernames"
    );
    assert_eq!(zoe["email"], "zoe@example.org");
    assert_eq!(zoe["firstName"], "Zoë");
    assert_eq!(zoe["lastName"], "Ångström");
    assert_eq!(zoe["enabled"], true);
    assert_eq!(
        zoe["attributes"]["department"],
        serde_json::json!(["R&D", "Ops"])
    );

    let zoe_id = zoe["id"].as_str().expect("id");
    assert_eq!(
        realm.user_id("Zoë.Ångström").await.expect("user id"),
        zoe_id
    );
    let groups = get(format!("users/{zoe_id}/groups")).await;
    let mut paths: Vec<&str> = groups
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|group| group["path"].as_str())
        .collect();
    paths.sort();
    assert_eq!(paths, ["/org", "/org/engineering/backend"]);

    let bob = &get("users?username=bob&exact=true".to_owned()).await[0];
    assert_eq!(bob["enabled"], false);
    assert!(bob.get("email").is_none());

    // The service account itself is not listed among the users.
    let count = get("users/count".to_owned()).await;
    assert_eq!(count, 2);
    // And admin calls through the helper see the same realm.
    let backend = realm
        .group_id("/org/engineering/backend")
        .await
        .expect("group");
    let members = realm
        .admin(Method::GET, &format!("groups/{backend}/members"), None)
        .await
        .expect("members");
    assert_eq!(members[0]["id"], zoe_id);
}

#[tokio::test]
async fn service_account_without_roles_is_refused() {
    let keycloak = Keycloak::shared().await.expect("keycloak");
    let realm = keycloak
        .create_realm(
            RealmSpec::default()
                .client_roles(&[])
                .user(UserSpec::new("alice")),
        )
        .await
        .expect("realm");
    let token = realm.client_token().await.expect("token");
    let response = reqwest::Client::new()
        .get(format!(
            "{}/admin/realms/{}/users",
            realm.base_url(),
            realm.name()
        ))
        .bearer_auth(token["access_token"].as_str().expect("access_token"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), reqwest::StatusCode::FORBIDDEN);
}

#[test]
fn nats_server_is_killed_when_dropped() {
    let nats = NatsServer::start().expect("nats-server");
    let port = nats.port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(nats);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nats-server still listens after drop"
    );
}
