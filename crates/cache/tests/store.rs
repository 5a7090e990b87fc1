//! The cache against a real nats-server: a stored state loads back as the newest state and
//! as the announced one, until it is replaced.

use bus::{Bus, Topology};
use cache::Cache;
use model::state::Product;
use proto::v1;
use test_support::nats::NatsServer;

fn state(product: v1::Product, run_id: &str) -> v1::ProductState {
    v1::ProductState {
        schema_version: v1::SCHEMA_VERSION,
        product: product as i32,
        accounts: vec![v1::CachedAccount {
            id: "JIRAUSER10000".to_owned(),
            login: "alice".to_owned(),
            active: true,
            managed: true,
            keycloak_user_id: "kc-alice".to_owned(),
            ..Default::default()
        }],
        run_id: run_id.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_stored_state_is_the_newest_and_the_announced_one_until_replaced() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new("c1"))
        .await
        .expect("bus");
    let cache = Cache::new(bus);
    assert!(cache.load(Product::Jira).await.expect("loads").is_none());

    let first = state(v1::Product::Jira, "run-1");
    let object = cache.store(Product::Jira, &first).await.expect("stores");
    assert_eq!(
        (object.bucket.as_str(), object.key.as_str()),
        ("c1-state", "jira")
    );
    let (newest, newest_ref) = cache
        .load(Product::Jira)
        .await
        .expect("loads")
        .expect("present");
    assert_eq!((&newest, &newest_ref), (&first, &object));
    let announced = cache
        .load_announced(Product::Jira, &object)
        .await
        .expect("announced");
    assert_eq!(
        Ok(&announced.state),
        cache::convert::state_to_model(&first).as_ref()
    );
    assert_eq!(announced.fingerprint(), cache::fingerprint(&first));
    assert_eq!(announced.run_id(), first.run_id);

    cache
        .store(Product::Jira, &state(v1::Product::Jira, "run-2"))
        .await
        .expect("stores again");
    let replaced = cache
        .load_announced(Product::Jira, &object)
        .await
        .expect_err("replaced");
    assert!(replaced.is_permanent(), "{replaced:?}");
    // Another connector's run refreshed the product since: its newer state is taken.
    let (newer, was_replaced) = cache
        .load_announced_or_newer(Product::Jira, &object, true)
        .await
        .expect("the newer state");
    assert!(was_replaced);
    assert_eq!(newer.run_id(), "run-2");
    assert!(
        cache
            .load(Product::Confluence)
            .await
            .expect("loads")
            .is_none()
    );
}

#[tokio::test]
async fn a_state_of_another_product_is_not_stored_under_this_one() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new("c2"))
        .await
        .expect("bus");
    let cache = Cache::new(bus);
    let error = cache
        .store(Product::Bitbucket, &state(v1::Product::Jira, "run-1"))
        .await
        .expect_err("wrong product");
    assert!(
        matches!(error, cache::Error::WrongProduct { .. }),
        "{error:?}"
    );
}
