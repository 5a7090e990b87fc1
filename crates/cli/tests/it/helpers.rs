//! Starts a control plane (the real `control_plane::App`, port 0, a unique bus prefix, a
//! token file), runs the built `keysync` binary against it, and publishes the events the
//! fetcher and planner would.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Output,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use bus::{Bus, Topology};
use control_plane::{App, Settings};
use proto::v1::{self, ChangeOp, Product};
use tempfile::TempDir;
use test_support::nats::NatsServer;
use tokio::sync::oneshot;

static NEXT_PREFIX: AtomicUsize = AtomicUsize::new(0);

pub const TOKEN: &str = "cli-test-token-0123456789abcdef-01234";

/// How long a command may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct TestApp {
    pub endpoint: String,
    pub token_file: PathBuf,
    pub bus: Bus,
    pub dir: TempDir,
    _nats: NatsServer,
    _shutdown: oneshot::Sender<()>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

/// A control plane whose configuration file ends with `more_config`.
pub async fn spawn_app_with(more_config: &str) -> TestApp {
    spawn_app_configured("", more_config).await
}

/// A control plane with more `[control_plane]` keys (TLS: then the endpoint is
/// `https://localhost:<port>`), whose configuration file ends with `more_config`.
pub async fn spawn_app_configured(control_plane: &str, more_config: &str) -> TestApp {
    let nats = NatsServer::start().expect("nats-server starts");
    let prefix = format!(
        "cli{}-{}",
        std::process::id(),
        NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("writes the token");
    let config_file = dir.path().join("keysync.toml");
    std::fs::write(
        &config_file,
        format!(
            "[bus]\nnats_url = \"{}\"\nprefix = \"{prefix}\"\n\n\
             [control_plane]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n{control_plane}\n\
             [control_plane.schedule]\nenabled = false\n\n{more_config}\n",
            nats.url(),
            token_file.display()
        ),
    )
    .expect("writes the configuration");
    let settings = Settings::load(Some(&config_file)).expect("valid settings");
    let app = App::build(settings).await.expect("the app builds");
    let endpoint = if control_plane.contains("tls_cert") {
        format!("https://localhost:{}", app.local_addr().port())
    } else {
        format!("http://{}", app.local_addr())
    };
    let (shutdown, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let bus = Bus::connect(&nats.url(), Topology::new(&prefix))
        .await
        .expect("the test connects to the bus");
    TestApp {
        endpoint,
        token_file,
        bus,
        dir,
        _nats: nats,
        _shutdown: shutdown,
    }
}

impl TestApp {
    /// `keysync --endpoint E --token-file T ARGS...` prepared to run.
    pub fn keysync(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"));
        command
            .arg("--endpoint")
            .arg(&self.endpoint)
            .arg("--token-file")
            .arg(&self.token_file)
            .args(args)
            .env_remove("KEYSYNC_ENDPOINT")
            .env_remove("KEYSYNC_TOKEN_FILE")
            .kill_on_drop(true);
        command
    }

    /// Runs `keysync ARGS...` to the end.
    pub async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(DEADLINE, self.keysync(args).output())
            .await
            .expect("keysync finishes in time")
            .expect("keysync runs")
    }

    /// Runs `keysync --json ARGS...`, which must succeed, and parses its output.
    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.run(&all).await;
        assert!(output.status.success(), "{}", describe(&output));
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", describe(&output)))
    }

    pub async fn snapshot_ready(&self, run_id: &str, mode: i32) {
        let ready = v1::SnapshotReady {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            connector: "corp".to_owned(),
            mode,
            ..v1::SnapshotReady::default()
        };
        self.bus
            .publish(
                &self.bus.topology().snapshot_ready(),
                &ready,
                &format!("{run_id}/snapshot"),
            )
            .await
            .expect("publishes SnapshotReady");
    }

    /// Stores a plan of `changes` and publishes `PlanReady`, as the planner does.
    pub async fn plan_ready(&self, run_id: &str, changes: Vec<v1::Change>, held: Option<&str>) {
        self.plan_ready_with(run_id, changes, held, |_| {}).await;
    }

    /// [`TestApp::plan_ready`], with the plan passed through `edit` before it is stored
    /// (to add conflicts, diagnostics or summary counts).
    pub async fn plan_ready_with(
        &self,
        run_id: &str,
        changes: Vec<v1::Change>,
        held: Option<&str>,
        edit: impl FnOnce(&mut v1::Plan),
    ) {
        let mut summaries: Vec<v1::PlanSummary> = Vec::new();
        for change in &changes {
            if !summaries
                .iter()
                .any(|summary| summary.product == change.product)
            {
                summaries.push(v1::PlanSummary {
                    product: change.product,
                    changes_by_op: HashMap::new(),
                    hold_reason: held.unwrap_or_default().to_owned(),
                    safety: Some(v1::SafetyCounts {
                        losing_access: 2,
                        managed_accounts: 5,
                        removed_memberships: 1,
                        managed_memberships: 9,
                        ..v1::SafetyCounts::default()
                    }),
                    ..v1::PlanSummary::default()
                });
            }
            let summary = summaries
                .iter_mut()
                .find(|summary| summary.product == change.product)
                .expect("added above");
            *summary
                .changes_by_op
                .entry(change.op().as_str_name().to_owned())
                .or_default() += 1;
        }
        let mut plan = v1::Plan {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            products: summaries,
            changes,
            held: held.is_some(),
            hold_reason: held.unwrap_or_default().to_owned(),
            ..v1::Plan::default()
        };
        edit(&mut plan);
        let topology = self.bus.topology();
        let object = self
            .bus
            .put_object(&topology.plans_bucket(), &format!("{run_id}.pb.zst"), &plan)
            .await
            .expect("stores the plan");
        let ready = v1::PlanReady {
            part: Default::default(),
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            products: plan.products.clone(),
            plan: Some(object),
            held: plan.held,
            hold_reason: plan.hold_reason.clone(),
            change_sets: None,
        };
        self.bus
            .publish(&topology.plan_ready(), &ready, &format!("{run_id}/plan"))
            .await
            .expect("publishes PlanReady");
    }
}

/// A change for `login` in `product`.
pub fn change(id: &str, product: Product, op: ChangeOp, login: &str) -> v1::Change {
    let mut change = v1::Change {
        id: id.to_owned(),
        keycloak_user_id: format!("kc-{login}"),
        fields: Some(v1::AccountFields {
            login: login.to_owned(),
            display_name: login.to_owned(),
            email: format!("{login}@example.org"),
            active: true,
        }),
        reason: format!("{login} is in Keycloak"),
        ..v1::Change::default()
    };
    change.set_product(product);
    change.set_op(op);
    change
}

/// Alice and bob created in Jira, alice in Confluence.
pub fn changes() -> Vec<v1::Change> {
    vec![
        change("j-1", Product::Jira, ChangeOp::CreateUser, "alice"),
        change("j-2", Product::Jira, ChangeOp::CreateUser, "bob"),
        change("c-1", Product::Confluence, ChangeOp::CreateUser, "alice"),
    ]
}

/// Status, stdout and stderr, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
