//! The bus's other ways to authenticate, each against a real nats-server that requires it:
//! a user nkey seed (`nkey_seed_file`) and a token (`token_file`). The right secret
//! connects and uses JetStream; a wrong one is refused, and the refusal never shows it.

use bus::{Bus, BusSettings, Error};
use config::Secret;
use proto::v1;
use test_support::nats::NatsServer;

fn unique_prefix(name: &str) -> String {
    format!("{name}{}", std::process::id())
}

/// Connects with `settings` and round-trips one message through JetStream.
async fn connects_and_publishes(settings: &BusSettings) {
    let bus = Bus::connect_with(settings).await.expect("connects");
    let requested = v1::RunRequested {
        schema_version: v1::SCHEMA_VERSION,
        run_id: "01JAUTH".to_owned(),
        ..Default::default()
    };
    bus.publish(
        &bus.topology().run_requested(),
        &requested,
        "01JAUTH/requested",
    )
    .await
    .expect("publishes through JetStream");
}

/// Asserts `settings` is refused at connect time without showing `secret`.
async fn refused_without_showing(settings: &BusSettings, secret: &str) {
    let error = match Bus::connect_with(settings).await {
        Ok(_) => panic!("a wrong secret connects"),
        Err(error) => error,
    };
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    let mut shown = format!("{error:?}\n{error}\n{settings:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        shown.push_str(&format!("\n{cause}"));
        source = cause.source();
    }
    assert!(!shown.contains(secret), "{shown}");
}

#[tokio::test]
async fn a_user_nkey_seed_connects_and_another_seed_is_refused() {
    let user = nkeys::KeyPair::new_user();
    let config = format!(
        "authorization {{\n  users = [ {{ nkey: \"{}\" }} ]\n}}\n",
        user.public_key()
    );
    let nats = NatsServer::start_with_config(&config, &[]).expect("nats-server starts");
    let prefix = unique_prefix("nkey");
    let seed = user.seed().expect("the user's seed");
    let settings = BusSettings {
        nats_url: nats.url(),
        prefix: prefix.clone(),
        nkey_seed: Some(Secret::new(seed.clone())),
        ..BusSettings::default()
    };
    connects_and_publishes(&settings).await;

    let stranger = nkeys::KeyPair::new_user().seed().expect("a seed");
    let wrong = BusSettings {
        nkey_seed: Some(Secret::new(stranger.clone())),
        ..settings.clone()
    };
    refused_without_showing(&wrong, &stranger).await;
    let none = BusSettings {
        nkey_seed: None,
        ..settings
    };
    assert!(Bus::connect_with(&none).await.is_err(), "no seed connects");
}

#[tokio::test]
async fn a_token_connects_and_a_wrong_token_is_refused() {
    let token = "bus-token-0123456789abcdef-0123456789";
    let nats = NatsServer::start_with_config(
        "authorization {\n  token: $NATS_TOKEN\n}\n",
        &[("NATS_TOKEN", token.to_owned())],
    )
    .expect("nats-server starts");
    let settings = BusSettings {
        nats_url: nats.url(),
        prefix: unique_prefix("token"),
        token: Some(Secret::new(token)),
        ..BusSettings::default()
    };
    connects_and_publishes(&settings).await;

    let wrong = "not-the-bus-token-9876543210-fedcba";
    refused_without_showing(
        &BusSettings {
            token: Some(Secret::new(wrong)),
            ..settings
        },
        wrong,
    )
    .await;
}
