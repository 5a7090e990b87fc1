//! A product that runs out of licence seats in the middle of a change set (the plan counted
//! seats that someone took since): the first account it refuses stops the set's other
//! creations, which fail with that reason without a call each, instead of one identical
//! refusal per account.

use applier::apply::apply;
use applier::state::Working;
use emulator::Config;
use proto::v1::{self, ChangeOp, ChangeOutcome};

use crate::helpers::product_section;

fn create(number: u64) -> v1::Change {
    let login = format!("user{number}");
    let login = login.as_str();
    v1::Change {
        id: format!("{number:016x}"),
        product: v1::Product::Confluence as i32,
        op: ChangeOp::CreateUser as i32,
        keycloak_user_id: format!("kc-{login}"),
        account: Some(v1::AccountRef {
            r#ref: Some(v1::account_ref::Ref::NewLogin(login.to_owned())),
        }),
        fields: Some(v1::AccountFields {
            login: login.to_owned(),
            display_name: format!("User {login}"),
            email: format!("{login}@example.org"),
            active: true,
        }),
        ..v1::Change::default()
    }
}

#[tokio::test]
async fn the_first_refusal_for_the_licence_stops_the_other_creations_of_the_set() {
    let mut config = Config::for_tests(emulator::Product::Confluence);
    config.license_seats = Some(2);
    let running = emulator::spawn(config).await.expect("the emulator starts");
    let section = product_section(
        model::state::Product::Confluence,
        &running.url(),
        "test-token",
    );
    let client = atlassian::Client::new(
        section
            .client_settings(model::state::Product::Confluence)
            .expect("valid client settings"),
    )
    .expect("a client");

    let changes: Vec<v1::Change> = (1..=5).map(create).collect();
    let empty = v1::ProductState {
        schema_version: v1::SCHEMA_VERSION,
        product: v1::Product::Confluence as i32,
        ..v1::ProductState::default()
    };
    let mut working = Working::new(model::state::Product::Confluence, empty).expect("a state");
    let results = apply(
        &client,
        "run-1",
        v1::Product::Confluence,
        &changes,
        &mut working,
        1,
    )
    .await;

    let outcomes: Vec<(ChangeOutcome, &str)> = results
        .iter()
        .map(|result| (result.outcome(), result.message.as_str()))
        .collect();
    assert_eq!(outcomes[0].0, ChangeOutcome::Applied, "{outcomes:?}");
    assert_eq!(outcomes[1].0, ChangeOutcome::Applied, "{outcomes:?}");
    assert_eq!(outcomes[2].0, ChangeOutcome::Failed, "{outcomes:?}");
    assert!(outcomes[2].1.contains("licence limit"), "{outcomes:?}");
    assert_eq!(results[2].product_status, 402);
    for (outcome, message) in &outcomes[3..] {
        assert_eq!(*outcome, ChangeOutcome::Failed);
        assert!(
            message.starts_with("not attempted") && message.contains("licence limit"),
            "{message}"
        );
    }
    // The product saw three creations: two made, one refused; none after the refusal.
    let dump = running.state().dump();
    assert_eq!(dump.accounts.len(), 2);
    assert_eq!(dump.counters.writes.get("create_account"), Some(&2));
    assert_eq!(
        dump.counters.requests, 3,
        "one request per attempted creation"
    );
}
