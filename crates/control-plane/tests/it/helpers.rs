//! One place that starts a control plane the way production does (settings from a TOML
//! file with `token_file`, port 0, a real nats-server, a unique bus prefix), connects a
//! client with the token, and plays the fetcher's, planner's and appliers' part of the
//! protocol with real bus messages.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::consumer::PullConsumer;
use bus::{Bus, Topology, health::Health};
use control_plane::{App, Settings};
use futures::StreamExt;
use proto::v1::{
    self, ChangeOp, ChangeOutcome, Product, RunMode, RunState,
    control_service_client::ControlServiceClient,
};
use tempfile::TempDir;
use test_support::nats::NatsServer;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, ClientTlsConfig},
};

/// Logs go to the test output only with `TEST_LOG` set.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,control_plane=debug")
            .with_test_writer()
            .try_init();
    }
});

static NEXT_PREFIX: AtomicUsize = AtomicUsize::new(0);

/// How long a test waits for something to happen before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The operator's token (`[control_plane] token_file`): every call.
pub const TOKEN: &str = "test-token-0123456789-0123456789abcdef";

/// The services' token (`[control_plane] service_token`): `GetRun` and `ReportResults`.
pub const SERVICE_TOKEN: &str = "test-service-token-0123456789abcdef";

pub type Client = ControlServiceClient<InterceptedService<Channel, BearerToken>>;

/// Sends `authorization: Bearer <token>` with every call.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> BearerToken {
        BearerToken(token.map(|token| {
            format!("Bearer {token}")
                .parse()
                .expect("an ascii header value")
        }))
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How to start a control plane.
#[derive(Default)]
pub struct Options {
    /// Shared with another app (a restart, a second replica); a new server when `None`.
    pub nats: Option<Arc<NatsServer>>,
    /// The bus prefix; a unique one when `None`.
    pub prefix: Option<String>,
    /// `[control_plane.schedule]` keys; the schedule is disabled when `None`.
    pub schedule: Option<String>,
    /// Serve `[health]` on a free port.
    pub health: bool,
    /// More of the configuration file (`[keycloak.*]`, `[products.*]` sections).
    pub more_config: String,
    /// `[control_plane] hold_expiry`, as TOML (`"3s"`); the default when `None`.
    pub hold_expiry: Option<String>,
    /// More keys of `[control_plane]` (TLS), as TOML lines.
    pub control_plane: String,
    /// How the test's client speaks TLS to the app (`https://localhost`); plaintext when
    /// `None`.
    pub client_tls: Option<ClientTlsConfig>,
}

/// A running control plane, a client with the token, and the test's own bus connection.
pub struct TestApp {
    pub nats: Arc<NatsServer>,
    pub prefix: String,
    pub address: SocketAddr,
    pub health_address: Option<SocketAddr>,
    /// The app's readiness, as `/readyz` answers it.
    pub health: Health,
    pub bus: Bus,
    pub client: Client,
    /// Holds the configuration and token files for as long as the app runs.
    _dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), control_plane::Error>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    LazyLock::force(&TRACING);
    let nats = match options.nats {
        Some(nats) => nats,
        None => Arc::new(NatsServer::start().expect("nats-server starts")),
    };
    let prefix = options.prefix.unwrap_or_else(|| {
        format!(
            "cp{}-{}",
            std::process::id(),
            NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)
        )
    });
    let dir = tempfile::tempdir().expect("a temporary directory");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("writes the token");
    let schedule = match &options.schedule {
        Some(keys) => format!("[control_plane.schedule]\n{keys}\n"),
        None => "[control_plane.schedule]\nenabled = false\n".to_owned(),
    };
    let hold_expiry = match &options.hold_expiry {
        Some(value) => format!("hold_expiry = {value}\n"),
        None => String::new(),
    };
    let health = if options.health {
        "[health]\nlisten = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    let config = format!(
        "[bus]\nnats_url = \"{}\"\nprefix = \"{prefix}\"\n\n\
         [control_plane]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\
         service_token = \"{SERVICE_TOKEN}\"\n{}\n{hold_expiry}\n{schedule}\n{health}\n\
         [planner]\nchange_set_size = 500\n\n{}\n",
        nats.url(),
        token_file.display(),
        options.control_plane,
        options.more_config,
    );
    let config_file = dir.path().join("keysync.toml");
    std::fs::write(&config_file, config).expect("writes the configuration");
    let settings = Settings::load(Some(&config_file)).expect("valid settings");

    let app = App::build(settings).await.expect("the app builds");
    let address = app.local_addr();
    let health_address = app.health_addr();
    let health = app.health().clone();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let bus = Bus::connect(&nats.url(), Topology::new(&prefix))
        .await
        .expect("the test connects to the bus");
    let client = match options.client_tls {
        Some(tls) => connect_tls(address, Some(TOKEN), tls)
            .await
            .expect("connects to the control plane with TLS"),
        None => connect(address, Some(TOKEN)).await,
    };
    TestApp {
        nats,
        prefix,
        address,
        health_address,
        health,
        bus,
        client,
        _dir: dir,
        shutdown: Some(shutdown),
        task: Some(task),
    }
}

/// A client of the app at `address`, sending `token` if any.
pub async fn connect(address: SocketAddr, token: Option<&str>) -> Client {
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("a URI")
        .connect()
        .await
        .expect("connects to the control plane");
    ControlServiceClient::with_interceptor(channel, BearerToken::new(token))
}

/// A client of the app at `address` over TLS (`https://`; `tls` names the server, as
/// `localhost`), sending `token` if any; the error of a connection that fails, as a
/// handshake does.
pub async fn connect_tls(
    address: SocketAddr,
    token: Option<&str>,
    tls: ClientTlsConfig,
) -> Result<Client, tonic::transport::Error> {
    let channel = Channel::from_shared(format!("https://{address}"))
        .expect("a URI")
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(ControlServiceClient::with_interceptor(
        channel,
        BearerToken::new(token),
    ))
}

impl TestApp {
    /// Stops the app as SIGTERM would and waits until it has drained.
    pub async fn stop(mut self) -> Arc<NatsServer> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the app does not panic")
                .expect("the app stops cleanly");
        }
        Arc::clone(&self.nats)
    }

    pub async fn start_sync(&self, mode: RunMode, products: &[Product]) -> v1::Run {
        let mut request = v1::StartSyncRequest {
            products: products.iter().map(|product| *product as i32).collect(),
            ..v1::StartSyncRequest::default()
        };
        request.set_mode(mode);
        self.client
            .clone()
            .start_sync(request)
            .await
            .expect("StartSync")
            .into_inner()
    }

    /// StartSync of every product of `connector` (empty: the default), answering the
    /// status of a refusal.
    pub async fn try_start(&self, mode: RunMode, connector: &str) -> Result<v1::Run, Status> {
        let mut request = v1::StartSyncRequest {
            connector: connector.to_owned(),
            ..v1::StartSyncRequest::default()
        };
        request.set_mode(mode);
        self.client
            .clone()
            .start_sync(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// ApproveRun with `reason`, as `user` (the `keysync-user` metadata) if given.
    pub async fn approve(
        &self,
        run_id: &str,
        reason: &str,
        user: Option<&str>,
    ) -> Result<v1::Run, Status> {
        let mut request = Request::new(v1::ApproveRunRequest {
            run_id: run_id.to_owned(),
            comment: reason.to_owned(),
        });
        if let Some(user) = user {
            request
                .metadata_mut()
                .insert("keysync-user", user.parse().expect("an ascii user"));
        }
        self.client
            .clone()
            .approve_run(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Plays the fetcher and the planner until `run` is HELD with the fixture's changes,
    /// its summaries carrying `fingerprints` (product, state fingerprint); answers it.
    pub async fn hold(&self, run: &v1::Run, fingerprints: &[(Product, &str)]) -> v1::Run {
        self.snapshot_ready(run).await;
        let mut held = plan(
            run,
            fixture_changes(),
            Some("3 removals exceed the limit of 1"),
        );
        for summary in &mut held.products {
            if let Some((_, fingerprint)) = fingerprints
                .iter()
                .find(|(product, _)| *product as i32 == summary.product)
            {
                summary.state_fingerprint = (*fingerprint).to_owned();
            }
        }
        self.plan_ready(&held).await;
        self.wait_for_state(&run.run_id, RunState::Held).await
    }

    pub async fn get_run(&self, run_id: &str) -> v1::Run {
        self.client
            .clone()
            .get_run(v1::GetRunRequest {
                run_id: run_id.to_owned(),
            })
            .await
            .expect("GetRun")
            .into_inner()
    }

    /// Waits until the run is in `state` (watching it), and answers it.
    pub async fn wait_for_state(&self, run_id: &str, state: RunState) -> v1::Run {
        let mut updates = self
            .client
            .clone()
            .watch_run(v1::WatchRunRequest {
                run_id: run_id.to_owned(),
            })
            .await
            .expect("WatchRun")
            .into_inner();
        let mut last = None;
        let waited = tokio::time::timeout(DEADLINE, async {
            while let Some(run) = updates.next().await {
                let run = run.expect("a run update");
                if run.state() == state {
                    return Some(run);
                }
                last = Some(run);
            }
            None
        })
        .await;
        match waited {
            Ok(Some(run)) => run,
            _ => panic!("run {run_id} never reached {state:?}; last seen: {last:#?}"),
        }
    }

    /// Waits until `condition` holds, polling with a deadline.
    pub async fn wait_until<F, Fut>(&self, what: &str, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + DEADLINE;
        while !condition().await {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes `SnapshotReady` as the fetcher does.
    pub async fn snapshot_ready(&self, run: &v1::Run) {
        let ready = v1::SnapshotReady {
            realm_users: Default::default(),
            part: Default::default(),
            parts: Default::default(),
            schema_version: v1::SCHEMA_VERSION,
            run_id: run.run_id.clone(),
            connector: "corp".to_owned(),
            snapshot: Some(v1::ObjectRef {
                bucket: format!("{}-snapshots", self.prefix),
                key: format!("{}.pb.zst", run.run_id),
                sha256: "00".to_owned(),
                size: 1,
            }),
            users: 3,
            groups: 1,
            memberships: 1,
            fetched_at: None,
            mode: run.mode,
            products: run.products.clone(),
            base: None,
        };
        let subject = self.bus.topology().snapshot_ready();
        self.bus
            .publish(&subject, &ready, &format!("{}/snapshot", run.run_id))
            .await
            .expect("publishes SnapshotReady");
    }

    pub async fn snapshot_failed(&self, run_id: &str, reason: &str) {
        let failed = v1::SnapshotFailed {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            connector: "corp".to_owned(),
            reason: reason.to_owned(),
        };
        let subject = self.bus.topology().snapshot_failed();
        self.bus
            .publish(&subject, &failed, &format!("{run_id}/snapshot"))
            .await
            .expect("publishes SnapshotFailed");
    }

    /// Stores `plan` as the planner does and publishes `PlanReady` with its summaries.
    /// Plays the planner for part `part` of a streamed first sync of `run`: stores the
    /// part's changes where the planner does and publishes its PlanReady.
    pub async fn part_ready(&self, run: &v1::Run, part: u32, changes: Vec<v1::Change>) {
        let topology = self.bus.topology();
        let planned = plan(run, changes, None);
        let object = self
            .bus
            .put_object(
                &topology.plans_bucket(),
                &cache::parts::part_key(&run.run_id, part),
                &planned,
            )
            .await
            .expect("stores the part");
        let ready = v1::PlanReady {
            part,
            schema_version: v1::SCHEMA_VERSION,
            run_id: run.run_id.clone(),
            products: planned.products.clone(),
            plan: Some(object),
            held: false,
            hold_reason: String::new(),
            change_sets: None,
        };
        self.bus
            .publish(
                &topology.plan_ready(),
                &ready,
                &format!("{}/plan-part-{part}", run.run_id),
            )
            .await
            .expect("publishes the part's PlanReady");
    }

    pub async fn plan_ready(&self, plan: &v1::Plan) {
        let topology = self.bus.topology();
        let object = self
            .bus
            .put_object(
                &topology.plans_bucket(),
                &format!("{}.pb.zst", plan.run_id),
                plan,
            )
            .await
            .expect("stores the plan");
        let ready = v1::PlanReady {
            part: Default::default(),
            schema_version: v1::SCHEMA_VERSION,
            run_id: plan.run_id.clone(),
            products: plan.products.clone(),
            plan: Some(object),
            held: plan.held,
            hold_reason: plan.hold_reason.clone(),
            // What appliers check sets against; recorded as is (the planner's tests show it).
            change_sets: None,
        };
        self.bus
            .publish(
                &topology.plan_ready(),
                &ready,
                &format!("{}/plan", plan.run_id),
            )
            .await
            .expect("publishes PlanReady");
    }

    /// Reports results as an applier does; answers `recorded` and the run state header.
    pub async fn report(
        &self,
        run_id: &str,
        product: Product,
        results: &[(&str, ChangeOutcome)],
    ) -> (u32, String) {
        let mut request = v1::ReportResultsRequest {
            run_id: run_id.to_owned(),
            results: results
                .iter()
                .map(|(change_id, outcome)| {
                    let mut result = v1::ChangeResult {
                        schema_version: v1::SCHEMA_VERSION,
                        run_id: run_id.to_owned(),
                        change_id: (*change_id).to_owned(),
                        message: format!("{outcome:?}"),
                        attempts: 1,
                        ..v1::ChangeResult::default()
                    };
                    result.set_product(product);
                    result.set_outcome(*outcome);
                    result
                })
                .collect(),
            ..v1::ReportResultsRequest::default()
        };
        request.set_product(product);
        let response = self
            .client
            .clone()
            .report_results(request)
            .await
            .expect("ReportResults");
        let state = response
            .metadata()
            .get("keysync-run-state")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (response.into_inner().recorded, state)
    }

    /// A consumer of `subject` on the events stream that starts at the stream's beginning.
    pub async fn observe(&self, subject: &str) -> PullConsumer {
        let name = format!("observer-{}", NEXT_PREFIX.fetch_add(1, Ordering::Relaxed));
        self.bus
            .durable_consumer(
                &self.bus.topology().events_stream(),
                &name,
                subject,
                Duration::from_secs(30),
            )
            .await
            .expect("an observing consumer")
    }
}

/// Every message on `consumer` now, decoded as `M`; stops after half a second without one.
pub async fn drain<M: bus::BusMessage>(consumer: &PullConsumer) -> Vec<M> {
    let mut seen = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .expect("fetches");
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message.expect("a message");
            seen.push(bus::decode::<M>(&message.payload).expect("decodes"));
            message.ack().await.expect("acks");
            got += 1;
        }
        if got == 0 {
            return seen;
        }
    }
}

/// A change of the plan fixture.
pub fn change(
    id: &str,
    product: Product,
    op: ChangeOp,
    keycloak_user_id: &str,
    login: &str,
    email: &str,
) -> v1::Change {
    let mut change = v1::Change {
        id: id.to_owned(),
        keycloak_user_id: keycloak_user_id.to_owned(),
        fields: Some(v1::AccountFields {
            login: login.to_owned(),
            display_name: login.to_owned(),
            email: email.to_owned(),
            active: true,
        }),
        reason: format!("{op:?} for {login}"),
        ..v1::Change::default()
    };
    change.set_product(product);
    change.set_op(op);
    change
}

/// A plan of `changes` for `run`, with the summaries the planner would write.
pub fn plan(run: &v1::Run, changes: Vec<v1::Change>, held: Option<&str>) -> v1::Plan {
    let mut summaries: Vec<v1::PlanSummary> = Vec::new();
    for change in &changes {
        let index = match summaries
            .iter()
            .position(|summary| summary.product == change.product)
        {
            Some(index) => index,
            None => {
                summaries.push(v1::PlanSummary {
                    product: change.product,
                    changes_by_op: HashMap::new(),
                    ..v1::PlanSummary::default()
                });
                summaries.len() - 1
            }
        };
        *summaries[index]
            .changes_by_op
            .entry(change.op().as_str_name().to_owned())
            .or_default() += 1;
    }
    v1::Plan {
        schema_version: v1::SCHEMA_VERSION,
        run_id: run.run_id.clone(),
        mode: run.mode,
        products: summaries,
        changes,
        held: held.is_some(),
        hold_reason: held.unwrap_or_default().to_owned(),
        conflicts: Vec::new(),
        ..v1::Plan::default()
    }
}

/// Three Jira changes and one Confluence change: alice is created in both and joins a
/// group in Jira; bob's email changes in Jira.
pub fn fixture_changes() -> Vec<v1::Change> {
    let mut membership = change(
        "j-2",
        Product::Jira,
        ChangeOp::AddMembership,
        "kc-alice",
        "alice",
        "alice@example.org",
    );
    membership.group = "devs".to_owned();
    vec![
        change(
            "j-1",
            Product::Jira,
            ChangeOp::CreateUser,
            "kc-alice",
            "alice",
            "alice@example.org",
        ),
        membership,
        change(
            "j-3",
            Product::Jira,
            ChangeOp::UpdateUser,
            "kc-bob",
            "bob",
            "Bob@Example.org",
        ),
        change(
            "c-1",
            Product::Confluence,
            ChangeOp::CreateUser,
            "kc-alice",
            "alice",
            "alice@example.org",
        ),
    ]
}
