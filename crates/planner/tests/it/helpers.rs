//! One place that starts a planner against a real nats-server with a unique prefix, plays
//! the other services' part of the protocol with real bus messages (a stored snapshot and
//! `SnapshotReady` as the fetcher sends them, cached states and `StateReady` as the
//! appliers send them), and reads what the planner published.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use bus::BusSettings;
use bus::{Bus, Topology};
use cache::Cache;
use futures::StreamExt;
use model::state::Product;
use planner::{App, HealthSettings, PlannerSettings, Settings, StepOutcome};
use proto::v1;
use settings::products::{ProductSettings, ProductsSettings};
use test_support::nats::NatsServer;

use crate::control::ControlPlane;

/// Logs go to the test output only with `TEST_LOG` set.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,planner=debug")
            .with_test_writer()
            .try_init();
    }
});

static NEXT_PREFIX: AtomicUsize = AtomicUsize::new(0);

/// A planner under test and the test's own connection to its bus.
pub struct TestPlanner {
    pub nats: NatsServer,
    /// The control plane on the same bus: it records what the planner announces, and it
    /// is what the planner asks before it publishes an approved plan.
    pub control: ControlPlane,
    pub settings: Settings,
    pub app: App,
    pub bus: Bus,
    pub cache: Cache,
    plans: PullConsumer,
    changes: PullConsumer,
}

pub fn settings(nats: &NatsServer, change_set_size: usize, state_timeout_seconds: u64) -> Settings {
    let prefix = format!("plan{}", NEXT_PREFIX.fetch_add(1, Ordering::Relaxed));
    let section = |port: u16| -> ProductSettings {
        let toml = format!("endpoint = \"http://127.0.0.1:{port}\"\ntoken = \"t\"\n");
        toml_section(&toml)
    };
    Settings {
        bus: BusSettings {
            nats_url: nats.url(),
            prefix,
            ..BusSettings::default()
        },
        products: ProductsSettings {
            jira: Some(section(1)),
            confluence: Some(section(2)),
            bitbucket: Some(section(3)),
        },
        planner: PlannerSettings {
            change_set_size,
            state_timeout_seconds,
            ..PlannerSettings::default()
        },
        health: HealthSettings::default(),
        keycloak: Default::default(),
        // Pointed at the test's control plane by `TestPlanner::spawn_with`.
        control_plane: settings::control_client::ControlPlaneSettings {
            token: config::Secret::new("a-token-until-the-control-plane-is-spawned"),
            ..Default::default()
        },
    }
}

/// A product section as the configuration file has it, with the default policy.
pub fn toml_section(toml: &str) -> ProductSettings {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("product.toml");
    std::fs::write(&file, toml).expect("writes the section");
    config::load::<ProductSettings>(Some(&file)).expect("a valid product section")
}

impl TestPlanner {
    pub async fn spawn(change_set_size: usize) -> TestPlanner {
        let nats = NatsServer::start().expect("nats-server starts");
        let settings = settings(&nats, change_set_size, 600);
        TestPlanner::spawn_with(nats, settings).await
    }

    pub async fn spawn_with(nats: NatsServer, mut settings: Settings) -> TestPlanner {
        LazyLock::force(&TRACING);
        let control = ControlPlane::spawn(&settings.bus.nats_url, &settings.bus.prefix).await;
        settings.control_plane.endpoint = format!("http://{}", control.addr);
        settings.control_plane.token = config::Secret::new(crate::control::TOKEN);
        let app = App::build(settings.clone())
            .await
            .expect("the planner starts");
        let bus = Bus::connect(&settings.bus.nats_url, Topology::new(&settings.bus.prefix))
            .await
            .expect("the test connects to the bus");
        let topology = bus.topology().clone();
        let plans = bus
            .durable_consumer(
                &topology.events_stream(),
                "test-plans",
                &format!("{}.plan.>", topology.prefix()),
                Duration::from_secs(30),
            )
            .await
            .expect("a consumer of plan events");
        let changes = bus
            .durable_consumer(
                &topology.changes_stream(),
                "test-changes",
                &format!("{}.changes.>", topology.prefix()),
                Duration::from_secs(30),
            )
            .await
            .expect("a consumer of change sets");
        TestPlanner {
            nats,
            control,
            cache: Cache::new(bus.clone()),
            settings,
            app,
            bus,
            plans,
            changes,
        }
    }

    /// A new planner on the same bus, as after a restart; the old one is dropped.
    pub async fn restart(self) -> TestPlanner {
        let TestPlanner {
            nats,
            settings,
            app,
            control,
            ..
        } = self;
        drop(app);
        drop(control);
        TestPlanner::spawn_with(nats, settings).await
    }

    /// Stores `snapshot` as the fetcher does and publishes `SnapshotReady`.
    pub async fn publish_snapshot(
        &self,
        run_id: &str,
        mode: v1::RunMode,
        products: &[Product],
        snapshot: v1::Snapshot,
    ) {
        self.publish_snapshot_over(run_id, mode, products, snapshot, None)
            .await;
    }

    /// Stores `snapshot` and publishes `SnapshotReady` naming `base` (the full snapshot a
    /// delta applies to). Answers the stored snapshot's object.
    pub async fn publish_snapshot_over(
        &self,
        run_id: &str,
        mode: v1::RunMode,
        products: &[Product],
        snapshot: v1::Snapshot,
        base: Option<v1::ObjectRef>,
    ) -> v1::ObjectRef {
        let topology = self.bus.topology();
        let snapshot = v1::Snapshot {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            ..snapshot
        };
        let object = self
            .bus
            .put_object(
                &topology.snapshots_bucket(),
                &format!("{run_id}.pb.zst"),
                &snapshot,
            )
            .await
            .expect("stores the snapshot");
        let ready = v1::SnapshotReady {
            realm_users: Default::default(),
            part: Default::default(),
            parts: Default::default(),
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            connector: "corp".to_owned(),
            snapshot: Some(object.clone()),
            users: snapshot.users.len() as u64,
            groups: snapshot.groups.len() as u64,
            memberships: snapshot.memberships.len() as u64,
            fetched_at: None,
            mode: mode as i32,
            products: products
                .iter()
                .map(|&product| cache::convert::product_to_proto(product) as i32)
                .collect(),
            base,
        };
        self.bus
            .publish(
                &topology.snapshot_ready(),
                &ready,
                &format!("{run_id}/snapshot"),
            )
            .await
            .expect("publishes SnapshotReady");
        object
    }

    /// Caches `state` as an applier does and publishes `StateReady`.
    pub async fn publish_state(&self, run_id: &str, state: v1::ProductState) {
        let product = cache::convert::product_from_proto(state.product).expect("a product");
        let object = self
            .cache
            .store(product, &state)
            .await
            .expect("caches the state");
        let ready = v1::StateReady {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            product: state.product,
            state: Some(object),
            accounts: state.accounts.len() as u64,
            groups: state.groups.len() as u64,
            memberships: state.memberships.len() as u64,
        };
        self.bus
            .publish(
                &self.bus.topology().state_ready(product.as_str()),
                &ready,
                &format!("{run_id}/state/{product}"),
            )
            .await
            .expect("publishes StateReady");
    }

    pub async fn publish_state_failed(&self, run_id: &str, product: Product, reason: &str) {
        let failed = v1::StateFailed {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            product: cache::convert::product_to_proto(product) as i32,
            reason: reason.to_owned(),
        };
        self.bus
            .publish(
                &self.bus.topology().state_failed(product.as_str()),
                &failed,
                &format!("{run_id}/state-failed/{product}"),
            )
            .await
            .expect("publishes StateFailed");
    }

    pub async fn publish_approved(&self, run_id: &str) {
        let approved = v1::RunApproved {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            approved_by: "ops".to_owned(),
            comment: "reviewed".to_owned(),
        };
        self.bus
            .publish(
                &self.bus.topology().run_approved(),
                &approved,
                &format!(
                    "{run_id}/approved/{}",
                    NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)
                ),
            )
            .await
            .expect("publishes RunApproved");
    }

    /// Steps the planner until it handles a message, within ten seconds.
    pub async fn step(&self) -> StepOutcome {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.app.try_step().await.expect("the planner steps") {
                StepOutcome::Idle if Instant::now() < deadline => continue,
                outcome => return outcome,
            }
        }
    }

    /// The next `PlanReady` or `PlanFailed`, within ten seconds.
    pub async fn next_plan_event(&self) -> PlanEvent {
        self.next_plan_event_within(Duration::from_secs(10)).await
    }

    pub async fn next_plan_event_within(&self, wait: Duration) -> PlanEvent {
        let deadline = Instant::now() + wait;
        let message = loop {
            if let Some(message) = next_message(&self.plans).await {
                break message;
            }
            assert!(Instant::now() < deadline, "no plan event within {wait:?}");
        };
        let topology = self.bus.topology();
        if message.subject.as_str() == topology.plan_ready() {
            return PlanEvent::Ready(bus::decode(&message.payload).expect("a PlanReady"));
        }
        assert_eq!(message.subject.as_str(), topology.plan_failed());
        PlanEvent::Failed(bus::decode(&message.payload).expect("a PlanFailed"))
    }

    /// Every change set published so far, in publication order.
    pub async fn change_sets(&self) -> Vec<v1::ChangeSet> {
        let mut sets = Vec::new();
        while let Some(message) = next_message(&self.changes).await {
            sets.push(bus::decode(&message.payload).expect("a ChangeSet"));
        }
        sets
    }

    /// How many messages the changes stream holds (acknowledged ones are gone).
    pub async fn change_set_messages_published(&self) -> u64 {
        let mut stream = self
            .bus
            .jetstream()
            .get_stream(self.bus.topology().changes_stream())
            .await
            .expect("the changes stream");
        let info = stream.info().await.expect("stream info");
        info.state.last_sequence
    }

    pub async fn stored_plan(&self, object: &v1::ObjectRef) -> v1::Plan {
        self.bus
            .get_object(object)
            .await
            .expect("the stored plan loads")
    }
}

pub enum PlanEvent {
    Ready(v1::PlanReady),
    Failed(v1::PlanFailed),
}

impl PlanEvent {
    pub fn ready(self) -> v1::PlanReady {
        match self {
            PlanEvent::Ready(ready) => ready,
            PlanEvent::Failed(failed) => panic!("the plan failed: {}", failed.reason),
        }
    }

    pub fn failed(self) -> v1::PlanFailed {
        match self {
            PlanEvent::Failed(failed) => failed,
            PlanEvent::Ready(ready) => {
                panic!("expected PlanFailed, got PlanReady for {}", ready.run_id)
            }
        }
    }
}

/// The next message within a second, acknowledged.
async fn next_message(consumer: &PullConsumer) -> Option<async_nats::jetstream::Message> {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .expect("fetch");
    let message = batch.next().await?.expect("a message");
    message.double_ack().await.expect("ack");
    Some(message)
}

/// A realm: alice and carol in `/staff/devs`, bob in `/staff`, dave disabled.
pub fn realm() -> v1::Snapshot {
    let user = |id: &str, username: &str, enabled: bool| v1::KeycloakUser {
        id: id.to_owned(),
        username: username.to_owned(),
        email: format!("{username}@example.com"),
        first_name: username[..1].to_uppercase() + &username[1..],
        last_name: "Example".to_owned(),
        enabled,
        email_verified: true,
        ..Default::default()
    };
    let group = |id: &str, name: &str, path: &str, parent_id: &str| v1::KeycloakGroup {
        id: id.to_owned(),
        name: name.to_owned(),
        path: path.to_owned(),
        parent_id: parent_id.to_owned(),
    };
    let member = |user_id: &str, group_id: &str| v1::KeycloakMembership {
        user_id: user_id.to_owned(),
        group_id: group_id.to_owned(),
    };
    v1::Snapshot {
        users: vec![
            user("u-alice", "alice", true),
            user("u-bob", "bob", true),
            user("u-carol", "carol", true),
            user("u-dave", "dave", false),
        ],
        groups: vec![
            group("g-staff", "staff", "/staff", ""),
            group("g-devs", "devs", "/staff/devs", "g-staff"),
        ],
        memberships: vec![
            member("u-alice", "g-devs"),
            member("u-carol", "g-devs"),
            member("u-bob", "g-staff"),
        ],
        ..Default::default()
    }
}

/// A product state with the given accounts and nothing else.
pub fn state(product: Product, accounts: Vec<v1::CachedAccount>) -> v1::ProductState {
    v1::ProductState {
        schema_version: v1::SCHEMA_VERSION,
        product: cache::convert::product_to_proto(product) as i32,
        accounts,
        ..Default::default()
    }
}

/// An account in a product; `keycloak_user_id` empty means unmanaged.
pub fn account(id: &str, login: &str, keycloak_user_id: &str) -> v1::CachedAccount {
    v1::CachedAccount {
        id: id.to_owned(),
        login: login.to_owned(),
        display_name: format!("{}{} Example", login[..1].to_uppercase(), &login[1..]),
        email: format!("{login}@example.com"),
        active: true,
        managed: !keycloak_user_id.is_empty(),
        keycloak_user_id: keycloak_user_id.to_owned(),
        read_only_reason: String::new(),
        administrator: false,
        connector: String::new(),
    }
}
