//! The event follower against a real Keycloak and a real nats-server: the first start asks
//! for a full sync; an edit made while no follower runs is found by the next one; a poll
//! not committed is found again, and a committed one never again.

use std::time::Duration;

use bus::{Bus, Topology};
use fetcher::follow::{Followed, Follower};
use keycloak::client::Client;
use model::snapshot::UserId;
use reqwest::Method;
use serde_json::json;
use test_support::{
    keycloak::{Keycloak, RealmSpec, TestRealm, UserSpec},
    nats::NatsServer,
};

use crate::helpers::connector;

async fn follower(bus: &Bus, realm: &TestRealm<'_>) -> anyhow::Result<Follower> {
    let client = Client::new(connector(realm))?;
    Ok(Follower::open(bus, "corp", client, Duration::ZERO).await?)
}

#[tokio::test]
async fn a_follower_neither_loses_nor_replays_an_edit_across_a_restart() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let bus = Bus::connect(&nats.url(), Topology::new("follow")).await?;
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak
        .create_realm(
            RealmSpec::default()
                .group("/staff")
                .user(UserSpec::new("ann")),
        )
        .await?;
    realm
        .save_events(&keycloak::events::USER_EVENT_TYPES)
        .await?;

    // The first start: no watermark, so only a full sync will do.
    let first = follower(&bus, &realm).await?;
    let pending = first.poll().await?;
    let Followed::FullSync { reason } = &pending.followed else {
        panic!("a first start asks for a full sync: {pending:?}");
    };
    assert!(!reason.is_empty());
    first.commit(&pending).await?;
    let quiet = first.poll().await?;
    assert_eq!(quiet.followed, Followed::Nothing);
    first.commit(&quiet).await?;
    drop(first);

    // While no follower runs: bob joins /staff.
    realm
        .admin(
            Method::POST,
            "users",
            Some(&json!({ "username": "bob", "enabled": true })),
        )
        .await?;
    let bob = realm.user_id("bob").await?;
    let staff = realm.group_id("/staff").await?;
    realm
        .admin(Method::PUT, &format!("users/{bob}/groups/{staff}"), None)
        .await?;

    // The next follower finds it, again after a stop before its commit, and only once
    // committed never again.
    let restarted = follower(&bus, &realm).await?;
    for attempt in 0..2 {
        let pending = restarted.poll().await?;
        let Followed::Delta { delta, events } = &pending.followed else {
            panic!("attempt {attempt}: the edit is found: {pending:?}");
        };
        assert_eq!(
            delta.named(),
            [UserId::new(bob.as_str())].into(),
            "attempt {attempt}"
        );
        assert!(*events >= 2, "the creation and the membership: {events}");
        assert_eq!(delta.memberships.len(), 1);
        if attempt == 1 {
            restarted.commit(&pending).await?;
        }
    }
    let after = follower(&bus, &realm).await?.poll().await?;
    assert_eq!(after.followed, Followed::Nothing);
    Ok(())
}
