//! Objects in the JetStream object store against a real nats-server: a stored message
//! comes back as it was, and a missing, replaced or foreign object is an error that says
//! so instead of a wrong value.

use bus::objects::ObjectError;
use bus::{Bus, Topology};
use proto::v1::{self, Product, ProductState};
use test_support::nats::NatsServer;

fn state(run_id: &str, accounts: usize) -> ProductState {
    ProductState {
        schema_version: v1::SCHEMA_VERSION,
        product: Product::Jira as i32,
        accounts: (0..accounts)
            .map(|idx| v1::CachedAccount {
                id: format!("JIRAUSER{idx}"),
                login: format!("user{idx}"),
                active: true,
                ..Default::default()
            })
            .collect(),
        run_id: run_id.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_stored_object_loads_back_unchanged_and_compressed() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new("o1"))
        .await
        .expect("bus");
    let bucket = bus.topology().state_bucket();
    let stored = state("run-1", 5_000);

    let object = bus.put_object(&bucket, "jira", &stored).await.expect("put");
    assert_eq!(
        (object.bucket.as_str(), object.key.as_str()),
        ("o1-state", "jira")
    );
    assert_eq!(object.sha256.len(), 64);
    let encoded_len = prost::Message::encoded_len(&stored) as u64;
    assert!(
        object.size < encoded_len / 4,
        "{} of {encoded_len} bytes",
        object.size
    );

    let loaded: ProductState = bus.get_object(&object).await.expect("get");
    assert_eq!(loaded, stored);
    let (latest, latest_ref) = bus
        .get_latest_object::<ProductState>(&bucket, "jira")
        .await
        .expect("get latest")
        .expect("present");
    assert_eq!((latest, latest_ref), (stored, object.clone()));

    // The checksum NATS records is the reference's, read without loading the object.
    assert_eq!(
        bus.object_sha256(&bucket, "jira").await.expect("info"),
        Some(object.sha256)
    );
    assert_eq!(
        bus.object_sha256(&bucket, "none").await.expect("info"),
        None
    );
    // NATS keeps a deleted object's metadata, digest included: it is no object all the same.
    bus.jetstream()
        .get_object_store(&bucket)
        .await
        .expect("store")
        .delete("jira")
        .await
        .expect("delete");
    assert_eq!(
        bus.object_sha256(&bucket, "jira").await.expect("info"),
        None
    );
}

#[tokio::test]
async fn a_replaced_or_missing_object_is_a_permanent_error() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new("o2"))
        .await
        .expect("bus");
    let bucket = bus.topology().state_bucket();
    let first = bus
        .put_object(&bucket, "jira", &state("run-1", 1))
        .await
        .expect("put");
    bus.put_object(&bucket, "jira", &state("run-2", 1))
        .await
        .expect("put again");

    let replaced = bus
        .get_object::<ProductState>(&first)
        .await
        .expect_err("replaced");
    assert!(
        matches!(replaced, ObjectError::Checksum { .. }),
        "{replaced:?}"
    );
    assert!(replaced.is_permanent());

    let missing_ref = v1::ObjectRef {
        key: "nothing".to_owned(),
        ..first
    };
    let missing = bus
        .get_object::<ProductState>(&missing_ref)
        .await
        .expect_err("missing");
    assert!(
        matches!(missing, ObjectError::NotFound { .. }),
        "{missing:?}"
    );
    assert!(
        bus.get_latest_object::<ProductState>(&bucket, "nothing")
            .await
            .expect("no error")
            .is_none()
    );
}

#[tokio::test]
async fn an_object_of_another_message_type_does_not_decode() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new("o3"))
        .await
        .expect("bus");
    let not_a_state = v1::PlanFailed {
        schema_version: 9,
        run_id: "run-1".to_owned(),
        reason: "x".to_owned(),
    };
    let object = bus
        .put_object("o3-plans", "run-1.pb.zst", &not_a_state)
        .await
        .expect("put");
    let error = bus
        .get_object::<ProductState>(&object)
        .await
        .expect_err("wrong type");
    assert!(matches!(error, ObjectError::Decode { .. }), "{error:?}");
}
