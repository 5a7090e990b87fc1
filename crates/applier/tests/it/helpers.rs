//! One place that starts everything an applier talks to, for real: a nats-server with a
//! unique prefix, the product emulators, the control plane (`control_plane::App` on port
//! 0), the planner and one applier per product. The fetcher's part is played with real bus
//! messages: a stored `Snapshot` and `SnapshotReady`, as the fetcher sends them.

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use applier::StepOutcome;
use applier::settings::{ApplierSettings, ControlPlaneSettings};
use bus::BusSettings;
use bus::{Bus, Topology};
use cache::Cache;
use config::Secret;
use emulator::store::{Dump, Seed};
use model::state::Product;
use proto::v1::{self, RunMode, RunState, control_service_client::ControlServiceClient};
use settings::products::{ProductSettings, ProductsSettings};
use test_support::nats::NatsServer;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const TOKEN: &str = "control-token-0123456789abcdef-0123";
const PRODUCT_TOKEN: &str = "test-token";

/// Logs go to the test output only with `TEST_LOG` set.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,applier=debug,planner=debug")
            .with_test_writer()
            .try_init();
    }
});

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// What a test starts.
pub struct Options {
    pub products: Vec<Product>,
    /// The initial directory of each product, in `products` order; empty by default.
    pub seeds: Vec<Seed>,
    pub ack_wait_seconds: u64,
    /// `applier.sequence_timeout_seconds`.
    pub sequence_timeout_seconds: u64,
    /// The token the appliers send to the products.
    pub product_token: String,
    /// More keys of the control plane's `[control_plane]` section.
    pub control_plane_keys: String,
}

impl Options {
    pub fn new(products: &[Product]) -> Options {
        Options {
            products: products.to_vec(),
            seeds: products.iter().map(|_| Seed::default()).collect(),
            ack_wait_seconds: 30,
            sequence_timeout_seconds: 600,
            product_token: PRODUCT_TOKEN.to_owned(),
            control_plane_keys: String::new(),
        }
    }
}

/// The control plane running in the background, and a client of it.
pub struct ControlPlane {
    pub client: ControlServiceClient<Channel>,
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), control_plane::Error>>>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub struct TestEnv {
    /// Runs as long as the test holds it.
    _nats: NatsServer,
    pub bus: Bus,
    pub cache: Cache,
    pub products: Vec<Product>,
    pub emulators: Vec<emulator::Running>,
    pub planner: planner::App,
    pub appliers: Vec<applier::App>,
    pub control: ControlPlane,
    pub applier_settings: applier::Settings,
    pub planner_settings: planner::Settings,
}

/// A product section as the configuration file has it, with the default policy: a bearer
/// token, or for Bitbucket (whose administrative endpoints refuse HTTP access tokens) the
/// user `admin` with `token` as the password.
pub fn product_section(product: Product, endpoint: &str, token: &str) -> ProductSettings {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("product.toml");
    let auth = match product {
        Product::Bitbucket => format!("user = \"admin\"\npassword = \"{token}\"\n"),
        _ => format!("token = \"{token}\"\n"),
    };
    std::fs::write(&file, format!("endpoint = \"{endpoint}\"\n{auth}"))
        .expect("writes the section");
    config::load::<ProductSettings>(Some(&file)).expect("a valid product section")
}

fn emulated(product: Product) -> emulator::Product {
    match product {
        Product::Jira => emulator::Product::Jira,
        Product::Confluence => emulator::Product::Confluence,
        Product::Bitbucket => emulator::Product::Bitbucket,
    }
}

impl TestEnv {
    pub async fn spawn(products: &[Product]) -> TestEnv {
        TestEnv::spawn_with(Options::new(products)).await
    }

    pub async fn spawn_with(options: Options) -> TestEnv {
        LazyLock::force(&TRACING);
        let nats = NatsServer::start().expect("nats-server starts");
        let prefix = format!("apply{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let bus_settings = BusSettings {
            nats_url: nats.url(),
            prefix: prefix.clone(),
            ..BusSettings::default()
        };

        let mut emulators = Vec::new();
        let mut sections = ProductsSettings::default();
        for (product, seed) in options.products.iter().zip(&options.seeds) {
            let mut config = emulator::Config::for_tests(emulated(*product));
            config.seed = seed.clone();
            if *product == Product::Bitbucket {
                config.basic = Some(("admin".to_owned(), PRODUCT_TOKEN.to_owned()));
            }
            let running = emulator::spawn(config).await.expect("the emulator starts");
            let section = Some(product_section(
                *product,
                &running.url(),
                &options.product_token,
            ));
            match product {
                Product::Jira => sections.jira = section,
                Product::Confluence => sections.confluence = section,
                Product::Bitbucket => sections.bitbucket = section,
            }
            emulators.push(running);
        }

        let control = ControlPlane::spawn(&nats.url(), &prefix, &options.control_plane_keys).await;
        let control_addr = control.addr;

        let control_plane = ControlPlaneSettings {
            endpoint: format!("http://{control_addr}"),
            token: Secret::new(TOKEN),
            ..ControlPlaneSettings::default()
        };
        let planner_settings = planner::Settings {
            bus: bus_settings.clone(),
            products: sections.clone(),
            planner: planner::PlannerSettings::default(),
            health: planner::HealthSettings::default(),
            keycloak: Default::default(),
            control_plane: control_plane.clone(),
        };
        let planner = planner::App::build(planner_settings.clone())
            .await
            .expect("the planner starts");
        let applier_settings = applier::Settings {
            bus: bus_settings,
            products: sections,
            control_plane,
            applier: ApplierSettings {
                concurrency: 4,
                report_batch_size: 7,
                ack_wait_seconds: options.ack_wait_seconds,
                sequence_timeout_seconds: options.sequence_timeout_seconds,
            },
            health: applier::HealthSettings::default(),
        };
        let mut appliers = Vec::new();
        for &product in &options.products {
            appliers.push(
                applier::App::build(applier_settings.clone(), product)
                    .await
                    .expect("the applier starts"),
            );
        }
        let bus = Bus::connect(&nats.url(), Topology::new(&prefix))
            .await
            .expect("the test connects");
        TestEnv {
            _nats: nats,
            cache: Cache::new(bus.clone()),
            bus,
            products: options.products,
            emulators,
            planner,
            appliers,
            control,
            applier_settings,
            planner_settings,
        }
    }

    pub fn applier(&self, product: Product) -> &applier::App {
        self.appliers
            .iter()
            .find(|applier| applier.product() == product)
            .expect("an applier of the product")
    }

    pub fn emulator(&self, product: Product) -> &emulator::Running {
        let idx = self
            .products
            .iter()
            .position(|known| *known == product)
            .expect("an emulated product");
        &self.emulators[idx]
    }

    pub fn dump(&self, product: Product) -> Dump {
        self.emulator(product).state().dump()
    }

    /// Successful writes the product's emulator has counted.
    pub fn writes(&self, product: Product) -> u64 {
        self.dump(product).counters.writes.values().sum()
    }

    /// A product client with the appliers' settings, for changes "by hand".
    pub fn client(&self, product: Product) -> atlassian::Client {
        let section = self
            .applier_settings
            .products
            .get(product)
            .expect("a product section");
        atlassian::Client::new(
            section
                .client_settings(product)
                .expect("valid client settings"),
        )
        .expect("a client")
    }

    /// `StartSync` for every product of the test.
    pub async fn start_run(&self, mode: RunMode) -> String {
        let request = v1::StartSyncRequest {
            mode: mode as i32,
            products: self
                .products
                .iter()
                .map(|&product| cache::convert::product_to_proto(product) as i32)
                .collect(),
            connector: String::new(),
        };
        let run = self
            .control
            .client
            .clone()
            .start_sync(authorized(request))
            .await
            .expect("StartSync")
            .into_inner();
        run.run_id
    }

    pub async fn cancel_run(&self, run_id: &str) -> v1::Run {
        let request = v1::CancelRunRequest {
            run_id: run_id.to_owned(),
            reason: "stopped by a test".to_owned(),
        };
        self.control
            .client
            .clone()
            .cancel_run(authorized(request))
            .await
            .expect("CancelRun")
            .into_inner()
    }

    pub async fn approve_run(&self, run_id: &str) -> v1::Run {
        let request = v1::ApproveRunRequest {
            run_id: run_id.to_owned(),
            comment: "reviewed by a test".to_owned(),
        };
        self.control
            .client
            .clone()
            .approve_run(authorized(request))
            .await
            .expect("ApproveRun")
            .into_inner()
    }

    /// Plays the planner for `sets` of run `run_id`: stores their manifest and publishes a
    /// `PlanReady` that names it (held or not), so the control plane records the run's
    /// change sets; the sets themselves are left to the test to publish.
    pub async fn announce_plan(&self, run_id: &str, sets: &[v1::ChangeSet], held: bool) {
        let manifest = bus::integrity::manifest(run_id, sets);
        self.announce_manifest(run_id, sets, &manifest, held).await;
    }

    /// [`TestEnv::announce_plan`] with the manifest made by the test.
    pub async fn announce_manifest(
        &self,
        run_id: &str,
        sets: &[v1::ChangeSet],
        manifest: &v1::ChangeSetManifest,
        held: bool,
    ) {
        let topology = self.bus.topology();
        let object = self
            .bus
            .put_object(
                &topology.plans_bucket(),
                &format!("{run_id}.sets.pb.zst"),
                manifest,
            )
            .await
            .expect("stores the manifest");
        let mut summaries: Vec<v1::PlanSummary> = Vec::new();
        for set in sets {
            let position = match summaries
                .iter()
                .position(|known| known.product == set.product)
            {
                Some(position) => position,
                None => {
                    summaries.push(v1::PlanSummary {
                        product: set.product,
                        hold_reason: if held {
                            "a test holds it".to_owned()
                        } else {
                            String::new()
                        },
                        ..Default::default()
                    });
                    summaries.len() - 1
                }
            };
            for change in &set.changes {
                *summaries[position]
                    .changes_by_op
                    .entry(change.op().as_str_name().to_owned())
                    .or_default() += 1;
            }
        }
        let ready = v1::PlanReady {
            part: Default::default(),
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            products: summaries,
            plan: None,
            held,
            hold_reason: if held {
                "jira: a test holds it".to_owned()
            } else {
                String::new()
            },
            change_sets: Some(object),
        };
        self.bus
            .publish(&topology.plan_ready(), &ready, &format!("{run_id}/plan"))
            .await
            .expect("publishes PlanReady");
        let state = if held {
            RunState::Held
        } else {
            RunState::Applying
        };
        self.wait_for_run(run_id, state).await;
    }

    pub async fn get_run(&self, run_id: &str) -> v1::Run {
        let request = v1::GetRunRequest {
            run_id: run_id.to_owned(),
        };
        self.control
            .client
            .clone()
            .get_run(authorized(request))
            .await
            .expect("GetRun")
            .into_inner()
    }

    /// Polls the run until it is in `state`, within twenty seconds.
    pub async fn wait_for_run(&self, run_id: &str, state: RunState) -> v1::Run {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let run = self.get_run(run_id).await;
            if run.state() == state {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} is {:?} ({}), not {state:?}",
                run.state(),
                run.reason
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stores `snapshot` as the fetcher does and publishes `SnapshotReady` for the run.
    pub async fn publish_snapshot(&self, run_id: &str, mode: RunMode, snapshot: &v1::Snapshot) {
        let topology = self.bus.topology();
        let snapshot = v1::Snapshot {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            ..snapshot.clone()
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
            snapshot: Some(object),
            users: snapshot.users.len() as u64,
            groups: snapshot.groups.len() as u64,
            memberships: snapshot.memberships.len() as u64,
            fetched_at: Some(SystemTime::now().into()),
            mode: mode as i32,
            products: self
                .products
                .iter()
                .map(|&product| cache::convert::product_to_proto(product) as i32)
                .collect(),
            base: None,
        };
        self.bus
            .publish(
                &topology.snapshot_ready(),
                &ready,
                &format!("{run_id}/snapshot"),
            )
            .await
            .expect("publishes SnapshotReady");
    }

    /// Steps the planner and every applier until a whole round does nothing and no
    /// consumer has a message pending or in hand; answers every applier outcome.
    pub async fn settle(&self) -> Vec<StepOutcome> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut outcomes = Vec::new();
        loop {
            let mut progressed = false;
            if self.planner.try_step().await.expect("the planner steps")
                != planner::StepOutcome::Idle
            {
                progressed = true;
            }
            for applier in &self.appliers {
                let outcome = applier.try_step().await.expect("the applier steps");
                if outcome != StepOutcome::Idle {
                    progressed = true;
                    outcomes.push(outcome);
                }
            }
            if !progressed && self.nothing_pending().await {
                return outcomes;
            }
            assert!(
                Instant::now() < deadline,
                "the services did not settle within a minute"
            );
        }
    }

    async fn nothing_pending(&self) -> bool {
        let topology = self.bus.topology();
        let mut consumers = vec![(topology.events_stream(), topology.planner_consumer())];
        for &product in &self.products {
            consumers.push((
                topology.events_stream(),
                topology.applier_state_consumer(product.as_str()),
            ));
            consumers.push((
                topology.changes_stream(),
                topology.applier_consumer(product.as_str()),
            ));
        }
        for (stream, consumer) in consumers {
            let stream = self
                .bus
                .jetstream()
                .get_stream(&stream)
                .await
                .expect("a stream");
            let info = stream
                .consumer_info(&consumer)
                .await
                .expect("consumer info");
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                return false;
            }
        }
        true
    }

    /// A whole run: `StartSync`, the appliers' state refresh, the snapshot, planning and
    /// applying, until everything settles. Answers the run id, the cached states the
    /// planner planned against, and the appliers' outcomes.
    pub async fn sync(&self, mode: RunMode, snapshot: &v1::Snapshot) -> Sync {
        let run_id = self.start_run(mode).await;
        let mut outcomes = self.settle().await;
        let mut planned_against = Vec::new();
        for &product in &self.products {
            let (state, _) = self
                .cache
                .load(product)
                .await
                .expect("loads")
                .expect("the state is cached");
            assert_eq!(state.run_id, run_id, "{product} was refreshed for the run");
            planned_against.push(state);
        }
        self.publish_snapshot(&run_id, mode, snapshot).await;
        outcomes.extend(self.settle().await);
        Sync {
            run_id,
            planned_against,
            outcomes,
        }
    }
}

/// What [`TestEnv::sync`] did.
pub struct Sync {
    pub run_id: String,
    pub planned_against: Vec<v1::ProductState>,
    pub outcomes: Vec<StepOutcome>,
}

impl Sync {
    /// Every result the appliers reported, of every set.
    pub fn results(&self) -> Vec<v1::ChangeResult> {
        self.outcomes
            .iter()
            .flat_map(|outcome| match outcome {
                StepOutcome::Applied { results, .. } => results.clone(),
                _ => Vec::new(),
            })
            .collect()
    }
}

impl ControlPlane {
    async fn spawn(nats_url: &str, prefix: &str, keys: &str) -> ControlPlane {
        // Loaded from a file, as in production, so new settings with defaults need no
        // change here.
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("control-plane.toml");
        let toml = format!(
            "[bus]\nnats_url = \"{nats_url}\"\nprefix = \"{prefix}\"\n\n\
             [control_plane]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n{keys}\n\n\
             [control_plane.schedule]\nenabled = false\n"
        );
        std::fs::write(&file, toml).expect("writes the control plane's settings");
        let settings =
            control_plane::Settings::load(Some(&file)).expect("valid control plane settings");
        let app = control_plane::App::build(settings)
            .await
            .expect("the control plane starts");
        let addr = app.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        let client = ControlServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connects to the control plane");
        ControlPlane {
            client,
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// A request with the control API's bearer token.
pub fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("a header value"),
    );
    request
}

/// A product's directory as people compare it: accounts (login, display name, email,
/// active), groups and memberships (group, login), all lower-cased where the products
/// compare case-insensitively.
#[derive(Debug, PartialEq, Eq)]
pub struct Directory {
    pub accounts: BTreeSet<(String, String, String, bool)>,
    pub groups: BTreeSet<String>,
    pub memberships: BTreeSet<(String, String)>,
}

impl Directory {
    pub fn of_dump(dump: &Dump) -> Directory {
        Directory {
            accounts: dump
                .accounts
                .iter()
                .map(|account| {
                    (
                        account.login.to_lowercase(),
                        account.display_name.clone(),
                        account.email.to_lowercase(),
                        account.active,
                    )
                })
                .collect(),
            groups: dump
                .groups
                .iter()
                .map(|group| group.to_lowercase())
                .collect(),
            memberships: dump
                .memberships
                .iter()
                .map(|membership| {
                    (
                        membership.group.to_lowercase(),
                        membership.login.to_lowercase(),
                    )
                })
                .collect(),
        }
    }

    pub fn of_state(state: &model::state::ProductState) -> Directory {
        let login_of = |id: &str| {
            state
                .accounts
                .iter()
                .find(|account| account.id.as_str() == id)
                .map(|account| account.login.to_lowercase())
                .unwrap_or_default()
        };
        Directory {
            accounts: state
                .accounts
                .iter()
                .map(|account| {
                    (
                        account.login.to_lowercase(),
                        account.display_name.clone(),
                        account.email.clone().unwrap_or_default().to_lowercase(),
                        account.active,
                    )
                })
                .collect(),
            groups: state
                .groups
                .iter()
                .map(|group| group.name.as_str().to_lowercase())
                .collect(),
            memberships: state
                .memberships
                .iter()
                .map(|membership| {
                    (
                        membership.group.as_str().to_lowercase(),
                        login_of(membership.account_id.as_str()),
                    )
                })
                .collect(),
        }
    }
}

impl Directory {
    /// The same directory, except that an account whose expected email is unknown (a
    /// product that lists no emails, for an account keysync never wrote) matches any email.
    pub fn with_unknown_emails_of(mut self, expected: &Directory) -> Directory {
        self.accounts = self
            .accounts
            .into_iter()
            .map(|(login, display_name, email, active)| {
                let unknown = (login.clone(), display_name.clone(), String::new(), active);
                if expected.accounts.contains(&unknown) {
                    unknown
                } else {
                    (login, display_name, email, active)
                }
            })
            .collect();
        self
    }
}

/// What the product should hold after a run: the model's plan for `snapshot` against the
/// state the planner planned against, applied with the model's own `apply`.
pub fn expected(planned_against: &v1::ProductState, snapshot: &v1::Snapshot) -> Directory {
    let state = cache::convert::state_to_model(planned_against).expect("a valid cached state");
    let snapshot = planner::convert::snapshot_to_model(snapshot);
    let policy = model::policy::Policy::default()
        .validate()
        .expect("the default policy is valid");
    let plan = model::plan::plan(&snapshot, &state, &policy);
    let mut next_id = 0;
    let applied = model::apply::apply(state, &plan.changes, |_| {
        next_id += 1;
        model::state::AccountId::new(format!("new-{next_id}"))
    });
    Directory::of_state(&applied)
}

/// The realm: alice and carol in `/staff/devs`, bob in `/staff`, dave disabled, erin in
/// no group.
pub fn realm() -> v1::Snapshot {
    v1::Snapshot {
        users: vec![
            user("u-alice", "alice", "Alice", true),
            user("u-bob", "bob", "Bob", true),
            user("u-carol", "carol", "Carol", true),
            user("u-dave", "dave", "Dave", false),
            user("u-erin", "erin", "Erin", true),
        ],
        groups: vec![
            v1::KeycloakGroup {
                id: "g-staff".to_owned(),
                name: "staff".to_owned(),
                path: "/staff".to_owned(),
                parent_id: String::new(),
            },
            v1::KeycloakGroup {
                id: "g-devs".to_owned(),
                name: "devs".to_owned(),
                path: "/staff/devs".to_owned(),
                parent_id: "g-staff".to_owned(),
            },
        ],
        memberships: vec![
            member("u-alice", "g-devs"),
            member("u-carol", "g-devs"),
            member("u-bob", "g-staff"),
        ],
        ..Default::default()
    }
}

pub fn user(id: &str, username: &str, first_name: &str, enabled: bool) -> v1::KeycloakUser {
    v1::KeycloakUser {
        id: id.to_owned(),
        username: username.to_owned(),
        email: format!("{username}@example.com"),
        first_name: first_name.to_owned(),
        last_name: "Example".to_owned(),
        enabled,
        email_verified: true,
        ..Default::default()
    }
}

pub fn member(user_id: &str, group_id: &str) -> v1::KeycloakMembership {
    v1::KeycloakMembership {
        user_id: user_id.to_owned(),
        group_id: group_id.to_owned(),
    }
}

/// A seed account, active, from the product's own directory.
pub fn seed_account(login: &str, display_name: &str) -> emulator::store::SeedAccount {
    emulator::store::SeedAccount {
        login: login.to_owned(),
        display_name: display_name.to_owned(),
        email: format!("{login}@example.com"),
        active: true,
        read_only: false,
    }
}

impl TestEnv {
    /// Every request the product's emulator has answered, state reads included.
    pub fn requests(&self, product: Product) -> u64 {
        self.dump(product).counters.requests
    }
}
