//! `spawn_app`: the fetcher as production builds it, on a real nats-server of its own,
//! reading a real Keycloak realm; and what a test needs around it: publishing run
//! requests, and reading back what the fetcher published and stored.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, OnceLock},
};

use bus::{Bus, Topology};
use config::Secret;
use fetcher::{
    app::App,
    settings::{BusSettings, FetcherSettings, HealthSettings, Settings},
};
use futures::StreamExt;
use keycloak::config::KeycloakSettings;
use proto::v1::{self, Product, RunMode, RunRequested};
use test_support::{
    keycloak::{RealmSpec, TestRealm, UserSpec},
    nats::NatsServer,
};

pub const CONNECTOR: &str = "corp";

pub struct TestApp {
    pub app: Arc<App>,
    /// The test's own connection, to publish requests and read what the fetcher did.
    pub bus: Bus,
    // Last: the server outlives the connections.
    _nats: NatsServer,
}

/// A realm of three users in nested groups, with attributes, a disabled user and one
/// without an email.
pub fn small_realm() -> RealmSpec {
    RealmSpec::default()
        .group("/staff/devs/backend")
        .user(
            UserSpec::new("Zoë")
                .email("zoe@example.org")
                .attribute("languages", &["da", "en"])
                .member_of("/staff")
                .member_of("/staff/devs/backend"),
        )
        .user(UserSpec::new("bob").no_email().disabled())
        .user(UserSpec::new("carol").member_of("/staff/devs"))
}

/// Settings of the `corp` connector for a test realm, small pages so paging happens.
pub fn connector(realm: &TestRealm<'_>) -> KeycloakSettings {
    let mut settings = KeycloakSettings::new(
        realm.base_url(),
        realm.name(),
        realm.client_id(),
        Secret::new(realm.client_secret()),
    );
    settings.page_size = 10;
    settings
}

/// Starts nats-server and the fetcher with one connector, `corp`, and its health endpoints
/// on a free port (served while the service runs).
pub async fn spawn_app(corp: KeycloakSettings) -> anyhow::Result<TestApp> {
    init_test_logging();
    let nats = NatsServer::start()?;
    let prefix = "kstest";
    let settings = Settings {
        bus: BusSettings {
            nats_url: nats.url(),
            prefix: prefix.to_owned(),
            ..BusSettings::default()
        },
        fetcher: FetcherSettings::default(),
        keycloak: BTreeMap::from([(CONNECTOR.to_owned(), corp)]),
        health: HealthSettings {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        },
    };
    let app = App::build(settings).await?;
    let bus = Bus::connect(&nats.url(), Topology::new(prefix)).await?;
    Ok(TestApp {
        app: Arc::new(app),
        bus,
        _nats: nats,
    })
}

/// Logs go to stderr only when `TEST_LOG` is set.
fn init_test_logging() {
    static TELEMETRY: OnceLock<Option<telemetry::Telemetry>> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        std::env::var_os("TEST_LOG")
            .and_then(|_| telemetry::init("fetcher-test", "info,fetcher=debug,keycloak=debug").ok())
    });
}

pub fn run_requested(run_id: &str) -> RunRequested {
    RunRequested {
        schema_version: v1::SCHEMA_VERSION,
        run_id: run_id.to_owned(),
        mode: RunMode::Simulate as i32,
        products: vec![Product::Jira as i32, Product::Bitbucket as i32],
        connector: CONNECTOR.to_owned(),
        requested_at: None,
        requested_by: "test".to_owned(),
        event: None,
    }
}

impl TestApp {
    pub async fn request_run(&self, request: &RunRequested) -> anyhow::Result<()> {
        let subject = self.bus.topology().run_requested();
        self.bus.publish(&subject, request, &request.run_id).await?;
        Ok(())
    }

    /// Publishes bytes that are not a run request on the run request subject.
    pub async fn request_garbage(&self, payload: &'static [u8]) -> anyhow::Result<()> {
        let subject = self.bus.topology().run_requested();
        self.bus
            .jetstream()
            .publish(subject, payload.into())
            .await?
            .await?;
        Ok(())
    }

    /// Every message published under `{prefix}.snapshot.>` so far, oldest first, as
    /// (subject, payload). Publishing is acknowledged by the stream before a step ends,
    /// so after a step this is complete.
    pub async fn snapshot_events(&self) -> anyhow::Result<Vec<(String, bytes::Bytes)>> {
        snapshot_events(&self.bus).await
    }

    /// Every dead-lettered message so far.
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<(String, bytes::Bytes)>> {
        let filter = format!("{}.dead.>", self.bus.topology().prefix());
        test_support::nats::stream_messages(
            self.bus.jetstream(),
            &self.bus.topology().dead_stream(),
            &filter,
        )
        .await
    }

    /// The names of the objects in the snapshot bucket.
    pub async fn stored_snapshots(&self) -> anyhow::Result<Vec<String>> {
        let store = self
            .bus
            .jetstream()
            .get_object_store(self.app.snapshot_bucket())
            .await?;
        let mut list = store.list().await?;
        let mut names = Vec::new();
        while let Some(info) = list.next().await {
            let info = info?;
            if !info.deleted {
                names.push(info.name);
            }
        }
        Ok(names)
    }
}

/// [`TestApp::snapshot_events`], for a test that moved the app out.
pub async fn snapshot_events(bus: &Bus) -> anyhow::Result<Vec<(String, bytes::Bytes)>> {
    let filter = format!("{}.snapshot.>", bus.topology().prefix());
    test_support::nats::stream_messages(bus.jetstream(), &bus.topology().events_stream(), &filter)
        .await
}

pub type Attributes = BTreeMap<String, Vec<String>>;

/// A wire snapshot with names in place of ids: users by username, groups by path with
/// their parent's path, memberships as (username, group path).
#[derive(Debug, PartialEq, Eq)]
pub struct Directory {
    /// Username to (email, enabled, attributes).
    pub users: BTreeMap<String, (String, bool, Attributes)>,
    pub groups: BTreeMap<String, Option<String>>,
    pub memberships: BTreeSet<(String, String)>,
}

pub fn directory(snapshot: &v1::Snapshot) -> Directory {
    let usernames: HashMap<&str, &str> = snapshot
        .users
        .iter()
        .map(|user| (user.id.as_str(), user.username.as_str()))
        .collect();
    let paths: HashMap<&str, &str> = snapshot
        .groups
        .iter()
        .map(|group| (group.id.as_str(), group.path.as_str()))
        .collect();
    Directory {
        users: snapshot
            .users
            .iter()
            .map(|user| {
                (
                    user.username.clone(),
                    (
                        user.email.clone(),
                        user.enabled,
                        user.attributes
                            .iter()
                            .map(|(key, values)| (key.clone(), values.values.clone()))
                            .collect(),
                    ),
                )
            })
            .collect(),
        groups: snapshot
            .groups
            .iter()
            .map(|group| {
                (
                    group.path.clone(),
                    (!group.parent_id.is_empty())
                        .then(|| paths[group.parent_id.as_str()].to_owned()),
                )
            })
            .collect(),
        memberships: snapshot
            .memberships
            .iter()
            .map(|membership| {
                (
                    usernames[membership.user_id.as_str()].to_owned(),
                    paths[membership.group_id.as_str()].to_owned(),
                )
            })
            .collect(),
    }
}
