//! Events to a delta against a real Keycloak: the users and groups a burst of admin
//! events named are read again, and the last full snapshot patched with them is the realm
//! as a new full fetch reads it.

use keycloak::client::Client;
use keycloak::events::Watermark;
use model::delta::patch;
use model::snapshot::{Snapshot, UserId};
use reqwest::Method;
use serde_json::json;
use test_support::keycloak::{Keycloak, RealmSpec, UserSpec};

use crate::events::{create_user, enable_events};
use crate::helpers::settings;

/// `snapshot` in one order, to compare two reads of one realm.
fn sorted(mut snapshot: Snapshot) -> Snapshot {
    snapshot.users.sort_by(|a, b| a.id.cmp(&b.id));
    snapshot.groups.sort_by(|a, b| a.id.cmp(&b.id));
    snapshot
        .memberships
        .sort_by(|a, b| (&a.user_id, &a.group_id).cmp(&(&b.user_id, &b.group_id)));
    snapshot
}

#[tokio::test]
async fn the_last_snapshot_patched_with_what_the_events_named_is_the_realm_now()
-> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak
        .create_realm(
            RealmSpec::default()
                .group("/staff")
                .group("/ops")
                .user(UserSpec::new("ann").member_of("/staff"))
                .user(UserSpec::new("cy").member_of("/ops"))
                .user(UserSpec::new("dee"))
                .user(UserSpec::new("eli").member_of("/staff")),
        )
        .await?;
    enable_events(&realm).await?;
    let client = Client::new(settings(&realm))?;
    let base = client.fetch().await?;
    let start = client.admin_events_since(&Watermark::default()).await?;
    let (ann, cy, dee) = (
        realm.user_id("ann").await?,
        realm.user_id("cy").await?,
        realm.user_id("dee").await?,
    );
    let (staff, ops) = (
        realm.group_id("/staff").await?,
        realm.group_id("/ops").await?,
    );

    // A burst of edits: a new member, an email, a deletion, a membership removed and a
    // group renamed. eli is not touched.
    let bob = create_user(&realm, "bob").await?;
    realm
        .admin(Method::PUT, &format!("users/{bob}/groups/{staff}"), None)
        .await?;
    realm
        .admin(
            Method::PUT,
            &format!("users/{ann}"),
            Some(&json!({ "email": "ann.new@example.org" })),
        )
        .await?;
    realm
        .admin(Method::DELETE, &format!("users/{dee}"), None)
        .await?;
    realm
        .admin(Method::DELETE, &format!("users/{cy}/groups/{ops}"), None)
        .await?;
    realm
        .admin(
            Method::PUT,
            &format!("groups/{ops}"),
            Some(&json!({ "name": "operations" })),
        )
        .await?;

    let batch = client.admin_events_since(&start.watermark).await?;
    let touched = batch.touched();
    assert_eq!(touched.full_sync, None, "{batch:?}");
    let delta = client.read_delta(&touched).await?;
    assert_eq!(
        delta.named(),
        [&ann, &bob, &cy, &dee]
            .into_iter()
            .map(|id| UserId::new(id.as_str()))
            .collect(),
        "exactly the users the events named"
    );
    assert_eq!(delta.deleted, [UserId::new(dee.as_str())]);
    let groups = delta.groups.as_ref().expect("a group was named");
    assert!(
        groups.iter().any(|group| group.path == "/operations"),
        "{groups:?}"
    );

    let patched = sorted(patch(&base, &delta));
    let now = sorted(client.fetch().await?);
    assert_eq!(patched, now);
    Ok(())
}
