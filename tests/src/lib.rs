//! The end-to-end harness: a whole keysync deployment on one machine, every service its
//! own process, the way `make demo` and a Kubernetes install run it.
//!
//! [`Stack::start`] starts a nats-server with JetStream, a realm in the shared Keycloak
//! (`test_support::keycloak`), the three product emulators (the `emulator` binary), and
//! the control plane, fetcher, planner and one applier per product from the binaries of
//! this workspace (built once per test run with `cargo build`), all reading one generated
//! configuration file. The test drives it the way a person does: through the gRPC control
//! API, Keycloak's Admin API, and the emulators' `/_emulator/state`.
//!
//! Every process is tethered to the test process (`test_support::process::Tethered`): it
//! dies with the test, and its log is printed when a test fails.
//!
//! Every secret of a stack is random ([`Secrets`]): the operator and service tokens, the
//! products' token and the Bitbucket administrator's password are 48 hex digits, the
//! Keycloak client secret 32 letters and digits; so a test can look for them in logs and
//! answers without meeting them by chance. [`StackOptions::tls`] turns on TLS on the control API and on
//! NATS with a CA made for the stack ([`tls`]), [`StackOptions::service_token`] gives the
//! appliers the service token, and [`StackOptions::transport_faults`] puts a proxy that
//! resets connections ([`proxy`]) between an applier and its emulator.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use anyhow::{Context, bail};
use futures::StreamExt;
use proto::v1::{
    self, ChangeRecord, Product, Run, RunMode, RunState,
    control_service_client::ControlServiceClient,
};
use serde_json::Value;
use tempfile::TempDir;
use test_support::{
    keycloak::{Keycloak, RealmSpec, TestRealm},
    nats::NatsServer,
    process::{Tethered, free_port, log_dir, log_len, print_log_if_panicking},
};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig},
};

/// How long one step (a run, a service start) may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// What the control plane logs once it listens (`crates/control-plane/src/app.rs`).
const CONTROL_PLANE_SERVES: &str = "Serving the control API.";

/// How the emulator's first line begins; its URL follows (`crates/emulator/src/main.rs`).
const EMULATOR_LISTENING: &str = "emulator listening on ";

/// The products, in the order the stack starts their emulators and appliers.
pub const PRODUCTS: [Product; 3] = [Product::Jira, Product::Confluence, Product::Bitbucket];

/// The emulators' administrator, whom keysync signs in to Bitbucket as with
/// [`Secrets::bitbucket_password`]: Bitbucket refuses HTTP access tokens on its admin
/// endpoints.
pub const BITBUCKET_USER: &str = "admin";
/// The connector of [`StackOptions::realm`].
pub const CONNECTOR: &str = "e2e";
/// The connector of [`StackOptions::second_realm`].
pub const SECOND_CONNECTOR: &str = "e2e-partners";

pub type Client = ControlServiceClient<InterceptedService<Channel, BearerToken>>;

/// Sends `authorization: Bearer <token>` with every call.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// What a stack starts with.
#[derive(Default)]
pub struct StackOptions {
    /// The Keycloak realm, connector [`CONNECTOR`].
    pub realm: RealmSpec,
    /// A second realm, connector [`SECOND_CONNECTOR`], syncing into the same products.
    pub second_realm: Option<RealmSpec>,
    /// `--seed-file` JSON per product (`emulator::store::Seed`).
    pub seeds: BTreeMap<Product, Value>,
    /// More emulator flags per product (`--latency-ms 20`).
    pub emulator_args: BTreeMap<Product, Vec<String>>,
    /// Appended to the generated configuration file (policy sections and the like).
    pub extra_config: String,
    /// More keys of each `[products.NAME]` section (`max_concurrency = 2`).
    pub product_config: BTreeMap<Product, String>,
    /// More keys of the `[applier]` section (`concurrency = 32`).
    pub applier_config: String,
    /// Environment of every keysync service (`OTEL_*`; a `RUST_LOG` here replaces the
    /// default `info`).
    pub service_env: Vec<(String, String)>,
    /// TLS everywhere keysync talks to itself: the control API serves TLS
    /// (`tls_cert_file`, `tls_key_file`; `endpoint = "https://127.0.0.1:PORT"` with
    /// `ca_file`), nats-server requires TLS and every service trusts it through
    /// `[bus] tls_ca_file` with `require_tls`; the certificates come from a CA made for
    /// the stack ([`Stack::tls`]), for `127.0.0.1` and `localhost`. [`Stack::client`],
    /// [`Stack::bus`] and [`Stack::cli`] trust that CA.
    pub tls: bool,
    /// `[control_plane] service_token_file`: the appliers call the API with
    /// [`Secrets::service_token`] (`GetRun` and `ReportResults` only) instead of the
    /// operator's token.
    pub service_token: bool,
    /// A proxy ([`proxy::FaultyProxy`]) between the product's applier (and the control
    /// plane's TestConnection) and its emulator, which resets the connections of the
    /// requests the rule picks: real transport errors, which the emulator cannot make.
    pub transport_faults: BTreeMap<Product, proxy::TransportFaults>,
    /// A realm that exists already (the benchmarks' big one, `test_support::bench_realm`),
    /// used instead of creating [`StackOptions::realm`] in the shared Keycloak.
    pub existing_realm: Option<TestRealm<'static>>,
    /// The services' `[bus] nats_url` instead of the stack's own nats-server: a
    /// comma-separated list for a cluster (`test_support::nats_cluster::NatsCluster::urls`).
    pub nats_url: Option<String>,
}

/// The secrets of one stack, all random, so that a test can search for them.
#[derive(Clone, Debug)]
pub struct Secrets {
    /// `[control_plane] token_file`: the operator's (the harness's client, the CLI).
    pub operator_token: String,
    /// `[control_plane] service_token_file`, with [`StackOptions::service_token`].
    pub service_token: Option<String>,
    /// The Jira and Confluence personal access token (`token_file`), which the emulators
    /// accept (`--token`).
    pub product_token: String,
    /// The password of [`BITBUCKET_USER`] (`password_file`), which the emulators accept
    /// (`--password`).
    pub bitbucket_password: String,
    /// The Keycloak client secret of each connector (`client_secret_file`).
    pub keycloak_client_secrets: Vec<String>,
}

impl Secrets {
    /// Fresh random secrets, and the realms' client secrets.
    fn new(service_token: bool, realm: &TestRealm<'_>, second: Option<&TestRealm<'_>>) -> Secrets {
        Secrets {
            operator_token: random_secret(),
            service_token: service_token.then(random_secret),
            product_token: random_secret(),
            bitbucket_password: random_secret(),
            keycloak_client_secrets: std::iter::once(realm)
                .chain(second)
                .map(|realm| realm.client_secret().to_owned())
                .collect(),
        }
    }

    /// Writes every secret into its file in `dir` (mode 0600), as the configuration names
    /// them; answers the operator token's file.
    fn write(
        &self,
        dir: &Path,
        realm: &TestRealm<'_>,
        second: Option<&TestRealm<'_>>,
    ) -> std::io::Result<PathBuf> {
        let token_file = dir.join("api-token");
        write_secret(token_file.clone(), &self.operator_token)?;
        if let Some(token) = &self.service_token {
            write_secret(dir.join("service-token"), token)?;
        }
        write_secret(dir.join("product-token"), &self.product_token)?;
        write_secret(dir.join("bitbucket-password"), &self.bitbucket_password)?;
        write_secret(dir.join("kc-secret"), realm.client_secret())?;
        if let Some(second) = second {
            write_secret(dir.join("kc-secret-2"), second.client_secret())?;
        }
        Ok(token_file)
    }

    /// Every secret, with a name for messages; and the forms they take on the wire (the
    /// Basic authorization of Bitbucket, base64 of `admin:password`).
    pub fn all(&self) -> Vec<(String, String)> {
        let mut all = vec![
            ("operator token".to_owned(), self.operator_token.clone()),
            ("product token".to_owned(), self.product_token.clone()),
            (
                "Bitbucket admin password".to_owned(),
                self.bitbucket_password.clone(),
            ),
            (
                "Bitbucket Basic authorization".to_owned(),
                base64(format!("{BITBUCKET_USER}:{}", self.bitbucket_password).as_bytes()),
            ),
        ];
        if let Some(token) = &self.service_token {
            all.push(("service token".to_owned(), token.clone()));
        }
        for (index, secret) in self.keycloak_client_secrets.iter().enumerate() {
            all.push((format!("Keycloak client secret {index}"), secret.clone()));
        }
        all
    }
}

/// The stack's TLS material ([`StackOptions::tls`]).
pub struct StackTls {
    /// The CA (PEM) that signed the control plane's and nats-server's certificates.
    pub ca: String,
    /// The same, as a file (`ca_file`, `tls_ca_file`, the CLI's `--ca-file`).
    pub ca_file: PathBuf,
    /// The private key (PEM) the control plane and nats-server serve with: a secret.
    pub server_key: String,
}

/// A random secret: 24 bytes of the system's randomness, as 48 hex digits.
pub fn random_secret() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Standard base64 with padding (the Basic authorization header's encoding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (index, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if index <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One emulated product.
pub struct Emulator {
    /// The emulator itself (for `/_emulator/*`); the applier may reach it through a
    /// proxy ([`Stack::proxies`]).
    pub url: String,
    process: Tethered,
}

/// A running deployment; everything stops when it is dropped.
pub struct Stack {
    pub realm: TestRealm<'static>,
    pub second_realm: Option<TestRealm<'static>>,
    pub nats: NatsServer,
    pub prefix: String,
    pub client: Client,
    pub emulators: BTreeMap<Product, Emulator>,
    /// The proxies of [`StackOptions::transport_faults`], by product.
    pub proxies: BTreeMap<Product, proxy::FaultyProxy>,
    /// Every secret of the stack.
    pub secrets: Secrets,
    /// The TLS material, with [`StackOptions::tls`].
    pub tls: Option<StackTls>,
    /// The control API: `http://127.0.0.1:PORT`, or `https://` with TLS.
    pub endpoint: String,
    services: BTreeMap<String, Tethered>,
    /// Where each service's last start began writing in its (appended) log.
    log_from: BTreeMap<String, u64>,
    service_env: Vec<(String, String)>,
    config: PathBuf,
    token_file: PathBuf,
    http: reqwest::Client,
    _dir: TempDir,
}

/// The directory of the workspace's binaries, built once per test process.
fn binaries() -> anyhow::Result<&'static Path> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let build = || -> anyhow::Result<PathBuf> {
            // target/<profile>/deps/e2e-<hash> -> target/<profile>
            let exe = std::env::current_exe()?;
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .context("the test binary is not in target/<profile>/deps")?
                .to_owned();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut command = Command::new(cargo);
            command
                .current_dir(test_support::deps::workspace_root())
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "fetcher",
                    "-p",
                    "planner",
                    "-p",
                    "applier",
                    "-p",
                    "control-plane",
                    "-p",
                    "emulator",
                    "-p",
                    "cli",
                    "--bins",
                ]);
            if dir.file_name().is_some_and(|name| name == "release") {
                command.arg("--release");
            }
            let status = command.status().context("running cargo build")?;
            if !status.success() {
                bail!("cargo build of the service binaries failed ({status})");
            }
            Ok(dir)
        };
        build().map_err(|error| format!("{error:#}"))
    });
    match built {
        Ok(dir) => Ok(dir),
        Err(error) => bail!("{error}"),
    }
}

fn product_name(product: Product) -> &'static str {
    match product {
        Product::Jira => "jira",
        Product::Confluence => "confluence",
        Product::Bitbucket => "bitbucket",
        Product::Unspecified => "unspecified",
    }
}

impl Stack {
    pub async fn start(options: StackOptions) -> anyhow::Result<Stack> {
        let bin = binaries()?;
        // The shared Keycloak starts only when a realm is made in it.
        let realm = match options.existing_realm {
            Some(realm) => realm,
            None => {
                Keycloak::shared()
                    .await?
                    .create_realm(options.realm)
                    .await?
            }
        };
        let second_realm = match options.second_realm {
            Some(spec) => Some(Keycloak::shared().await?.create_realm(spec).await?),
            None => None,
        };
        let dir = tempfile::tempdir()?;
        let (tls, nats) = start_nats(dir.path(), options.tls)?;
        let prefix = format!("e2e{}", std::process::id() % 100_000)
            + &realm
                .name()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let secrets = Secrets::new(options.service_token, &realm, second_realm.as_ref());
        let token_file = secrets.write(dir.path(), &realm, second_realm.as_ref())?;

        let emulators = start_emulators(
            bin,
            dir.path(),
            &secrets,
            &options.seeds,
            &options.emulator_args,
            &prefix,
        )
        .await?;

        let mut proxies = BTreeMap::new();
        for (product, faults) in options.transport_faults {
            let upstream = emulators[&product]
                .url
                .trim_start_matches("http://")
                .to_owned();
            proxies.insert(product, proxy::FaultyProxy::start(&upstream, faults).await?);
        }

        let cp_port = free_port()?;
        let d = dir.path().display();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{cp_port}");
        let (bus_tls, cp_tls) = match &tls {
            Some(_) => (
                format!("tls_ca_file = \"{d}/ca.pem\"\nrequire_tls = true\n"),
                format!(
                    "tls_cert_file = \"{d}/server.crt\"\ntls_key_file = \"{d}/server.key\"\n\
                     ca_file = \"{d}/ca.pem\"\n"
                ),
            ),
            None => (String::new(), String::new()),
        };
        let service_token = match &secrets.service_token {
            Some(_) => format!("service_token_file = \"{d}/service-token\"\n"),
            None => String::new(),
        };
        let mut config = format!(
            r#"[bus]
nats_url = "{nats_url}"
prefix = "{prefix}"
{bus_tls}
[control_plane]
listen = "127.0.0.1:{cp_port}"
endpoint = "{endpoint}"
token_file = "{d}/api-token"
{cp_tls}{service_token}

[keycloak.{CONNECTOR}]
endpoint = "{kc}"
realm = "{realm_name}"
client_id = "{client_id}"
client_secret_file = "{d}/kc-secret"

[applier]
# A killed applier's message comes back this soon.
ack_wait_seconds = 5
{applier_config}
"#,
            applier_config = options.applier_config,
            nats_url = options.nats_url.clone().unwrap_or_else(|| nats.url()),
            kc = realm.base_url(),
            realm_name = realm.name(),
            client_id = realm.client_id(),
        );
        if let Some(second) = &second_realm {
            config.push_str(&format!(
                "\n[keycloak.{SECOND_CONNECTOR}]\nendpoint = \"{}\"\nrealm = \"{}\"\n\
                 client_id = \"{}\"\nclient_secret_file = \"{d}/kc-secret-2\"\n",
                second.base_url(),
                second.name(),
                second.client_id(),
            ));
        }
        config.push_str(&product_sections(
            &d.to_string(),
            &emulators,
            &proxies,
            &options.product_config,
        ));
        config.push('\n');
        config.push_str(&options.extra_config);
        let config_path = dir.path().join("keysync.toml");
        std::fs::write(&config_path, config)?;

        let client = client_of(
            &endpoint,
            &secrets.operator_token,
            tls.as_ref().map(|tls| tls.ca.as_str()),
        )?;
        let mut stack = Stack {
            realm,
            second_realm,
            nats,
            prefix,
            client,
            emulators,
            proxies,
            secrets,
            tls,
            endpoint,
            services: BTreeMap::new(),
            log_from: BTreeMap::new(),
            service_env: options.service_env,
            config: config_path,
            token_file,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            _dir: dir,
        };
        stack.start_control_plane(cp_port).await?;
        stack.start_service("fetcher")?;
        stack.start_service("planner")?;
        for product in PRODUCTS {
            stack.start_service(&format!("applier-{}", product_name(product)))?;
        }
        for product in PRODUCTS {
            stack.wait_for_emulator(product).await?;
        }
        Ok(stack)
    }

    /// Starts (or restarts) a service: `control-plane`, `fetcher`, `planner`,
    /// `applier-jira`, `applier-confluence` or `applier-bitbucket`.
    pub fn start_service(&mut self, name: &str) -> anyhow::Result<()> {
        let bin = binaries()?;
        let mut args = vec!["--config".to_owned(), self.config.display().to_string()];
        let program = match name.strip_prefix("applier-") {
            Some(product) => {
                args.extend(["--product".to_owned(), product.to_owned()]);
                bin.join("applier")
            }
            None => bin.join(name),
        };
        // The default first: a `RUST_LOG` of the service environment comes later and wins.
        let env: Vec<(&str, String)> = [("RUST_LOG", "info".to_owned())]
            .into_iter()
            .chain(
                self.service_env
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.clone())),
            )
            .collect();
        let log = log_dir().join(format!("{}-{name}.log", self.prefix));
        self.log_from.insert(name.to_owned(), log_len(&log));
        let process = Tethered::spawn(&program, &args, &env, &log)?;
        if let Some(mut old) = self.services.insert(name.to_owned(), process) {
            old.kill();
        }
        Ok(())
    }

    /// `kill -9`: the service gets no chance to finish anything.
    pub fn kill_service(&mut self, name: &str) {
        if let Some(service) = self.services.get_mut(name) {
            service.kill();
        }
    }

    /// SIGTERM, as Kubernetes stops a pod; the exit status once the service has stopped.
    pub fn terminate_service(&mut self, name: &str) -> anyhow::Result<std::process::ExitStatus> {
        let service = self
            .services
            .get_mut(name)
            .with_context(|| format!("no service {name}"))?;
        service
            .terminate(Duration::from_secs(30))
            .with_context(|| format!("{name} did not stop within 30 s of SIGTERM"))
    }

    /// Whether the service is still running.
    pub fn is_running(&mut self, name: &str) -> bool {
        self.services
            .get_mut(name)
            .is_some_and(|service| service.exited().is_none())
    }

    /// Stops the control plane with SIGTERM and starts it again (with the variables of
    /// [`Stack::set_service_env`]); answers once its API answers.
    pub async fn restart_control_plane(&mut self) -> anyhow::Result<()> {
        self.terminate_service("control-plane")?;
        self.start_service("control-plane")?;
        self.wait_for_api().await
    }

    /// Starts the control plane on `port` and waits for its API. Its port was probed free
    /// and released, so another test's server may have bound it first: then the control
    /// plane cannot listen, and it starts again on another port, the configuration
    /// rewritten (no other service has read it yet).
    async fn start_control_plane(&mut self, mut port: u16) -> anyhow::Result<()> {
        let ca = self.tls.as_ref().map(|tls| tls.ca.clone());
        for _ in 0..3 {
            self.start_service("control-plane")?;
            match self.wait_for_api().await {
                Ok(()) => return Ok(()),
                Err(error)
                    if self.is_running("control-plane")
                        || !self.control_plane_log()?.contains("Address already in use") =>
                {
                    return Err(error);
                }
                Err(_) => {}
            }
            let new_port = free_port()?;
            let config = std::fs::read_to_string(&self.config)?;
            std::fs::write(
                &self.config,
                config.replace(
                    &format!("127.0.0.1:{port}\""),
                    &format!("127.0.0.1:{new_port}\""),
                ),
            )?;
            self.endpoint = self
                .endpoint
                .replace(&format!(":{port}"), &format!(":{new_port}"));
            self.client = client_of(&self.endpoint, &self.secrets.operator_token, ca.as_deref())?;
            port = new_port;
        }
        bail!("the control plane found no free port in three attempts")
    }

    /// Waits until the control plane this stack started serves its API. An answer alone
    /// is not enough: until it says it listens, the port may be another test's server.
    async fn wait_for_api(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let mut client = self.client.clone();
            // Bounded: a port held by something that never answers must not hang the stack.
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                client.list_runs(v1::ListRunsRequest::default()),
            )
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer within 2 s")));
            match answer {
                Ok(_) if self.control_plane_serves()? => return Ok(()),
                Ok(_) if self.is_running("control-plane") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(_) => {
                    let log = self.services["control-plane"].log().to_owned();
                    bail!(
                        "the control plane exited:\n{}",
                        test_support::process::log_tail(&log, 30)
                    );
                }
                Err(status) if tokio::time::Instant::now() > deadline => {
                    bail!("the control plane did not answer: {status}")
                }
                Err(_) => {
                    if !self.is_running("control-plane") {
                        let log = self.services["control-plane"].log().to_owned();
                        bail!(
                            "the control plane exited:\n{}",
                            test_support::process::log_tail(&log, 30)
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Whether the control plane's last start logged that it serves the API.
    fn control_plane_serves(&self) -> anyhow::Result<bool> {
        Ok(self.control_plane_log()?.contains(CONTROL_PLANE_SERVES))
    }

    /// What the control plane logged since its last start.
    fn control_plane_log(&self) -> anyhow::Result<String> {
        let Some(service) = self.services.get("control-plane") else {
            return Ok(String::new());
        };
        let bytes = std::fs::read(service.log())?;
        let from = self.log_from.get("control-plane").copied().unwrap_or(0);
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
        Ok(String::from_utf8_lossy(&bytes[start..]).into_owned())
    }

    async fn wait_for_emulator(&self, product: Product) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.emulator_state(product).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                bail!("the {} emulator did not come up", product_name(product));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// `GET /_emulator/state`: accounts, groups, memberships and counters.
    pub async fn emulator_state(&self, product: Product) -> anyhow::Result<Value> {
        let url = format!("{}/_emulator/state", self.emulators[&product].url);
        let response = self.http.get(url).send().await?.error_for_status()?;
        Ok(response.json().await?)
    }

    /// Successful writes the emulator has taken, of every kind.
    pub async fn writes(&self, product: Product) -> anyhow::Result<u64> {
        let state = self.emulator_state(product).await?;
        Ok(state["counters"]["writes"]
            .as_object()
            .map(|writes| writes.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0))
    }

    /// StartSync of [`CONNECTOR`] for every product.
    pub async fn start_sync(&self, mode: RunMode) -> anyhow::Result<Run> {
        self.start_sync_of(CONNECTOR, mode).await
    }

    /// StartSync of `connector` for every product.
    pub async fn start_sync_of(&self, connector: &str, mode: RunMode) -> anyhow::Result<Run> {
        self.try_start_sync_of(connector, mode)
            .await
            .context("StartSync")
    }

    /// StartSync of `connector`, with the API's status when it refuses.
    pub async fn try_start_sync_of(&self, connector: &str, mode: RunMode) -> Result<Run, Status> {
        let mut client = self.client.clone();
        let run = client
            .start_sync(v1::StartSyncRequest {
                mode: mode as i32,
                products: Vec::new(),
                connector: connector.to_owned(),
            })
            .await?
            .into_inner();
        Ok(run)
    }

    /// Sets a variable of every service started from now on ([`Stack::start_service`]
    /// restarts one with it).
    pub fn set_service_env(&mut self, key: &str, value: &str) {
        self.service_env.retain(|(known, _)| known != key);
        self.service_env.push((key.to_owned(), value.to_owned()));
    }

    /// Follows the run with WatchRun until it reaches one of `states`.
    pub async fn wait_for(&self, run_id: &str, states: &[RunState]) -> anyhow::Result<Run> {
        let watch = async {
            let mut client = self.client.clone();
            let mut stream = client
                .watch_run(v1::WatchRunRequest {
                    run_id: run_id.to_owned(),
                })
                .await?
                .into_inner();
            let mut last = None;
            while let Some(run) = stream.next().await {
                let run = run?;
                if states.contains(&run.state()) {
                    return Ok(run);
                }
                last = Some(run);
            }
            bail!("WatchRun ended before the run reached {states:?}; last seen: {last:?}")
        };
        tokio::time::timeout(DEADLINE, watch)
            .await
            .with_context(|| format!("run {run_id} did not reach {states:?} in {DEADLINE:?}"))?
    }

    /// Runs a sync of [`CONNECTOR`] to its end; fails unless it succeeded.
    pub async fn sync(&self, mode: RunMode) -> anyhow::Result<Run> {
        self.sync_of(CONNECTOR, mode).await
    }

    /// Runs a sync of `connector` to its end; fails unless it succeeded.
    pub async fn sync_of(&self, connector: &str, mode: RunMode) -> anyhow::Result<Run> {
        let run = self.start_sync_of(connector, mode).await?;
        let run = self.wait_for(&run.run_id, TERMINAL).await?;
        if run.state() != RunState::Succeeded {
            bail!("run {} ended {:?}: {}", run.run_id, run.state(), run.reason);
        }
        Ok(run)
    }

    /// Every change of the run for one product (all pages of ListChanges).
    pub async fn changes(
        &self,
        run_id: &str,
        product: Product,
    ) -> anyhow::Result<Vec<ChangeRecord>> {
        let mut client = self.client.clone();
        let mut changes = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_changes(v1::ListChangesRequest {
                    run_id: run_id.to_owned(),
                    product: product as i32,
                    page_size: 500,
                    page_token: page_token.clone(),
                    ..v1::ListChangesRequest::default()
                })
                .await
                .context("ListChanges")?
                .into_inner();
            changes.extend(page.changes);
            if page.next_page_token.is_empty() {
                return Ok(changes);
            }
            page_token = page.next_page_token;
        }
    }

    pub async fn get_run(&self, run_id: &str) -> anyhow::Result<Run> {
        let mut client = self.client.clone();
        Ok(client
            .get_run(v1::GetRunRequest {
                run_id: run_id.to_owned(),
            })
            .await?
            .into_inner())
    }

    pub async fn approve(&self, run_id: &str) -> anyhow::Result<Run> {
        Ok(self.try_approve(run_id, "checked by the e2e test").await?)
    }

    /// ApproveRun with `reason`, with the API's status when it refuses.
    pub async fn try_approve(&self, run_id: &str, reason: &str) -> Result<Run, Status> {
        let mut client = self.client.clone();
        Ok(client
            .approve_run(v1::ApproveRunRequest {
                run_id: run_id.to_owned(),
                comment: reason.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// Every run, newest first (all pages of ListRuns).
    pub async fn runs(&self) -> anyhow::Result<Vec<Run>> {
        let mut client = self.client.clone();
        let mut runs = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_runs(v1::ListRunsRequest {
                    page_size: 100,
                    page_token: page_token.clone(),
                    states: Vec::new(),
                    triggers: Vec::new(),
                })
                .await
                .context("ListRuns")?
                .into_inner();
            runs.extend(page.runs);
            if page.next_page_token.is_empty() {
                return Ok(runs);
            }
            page_token = page.next_page_token;
        }
    }

    pub async fn cancel(&self, run_id: &str) -> anyhow::Result<Run> {
        let mut client = self.client.clone();
        Ok(client
            .cancel_run(v1::CancelRunRequest {
                run_id: run_id.to_owned(),
                reason: "cancelled by the e2e test".to_owned(),
            })
            .await?
            .into_inner())
    }

    /// A connection to the stack's NATS, for publishing what no service would; over TLS,
    /// trusting the stack's CA, with [`StackOptions::tls`].
    pub async fn bus(&self) -> anyhow::Result<async_nats::Client> {
        let Some(tls) = &self.tls else {
            return self.nats.connect().await;
        };
        let settings = bus::BusSettings {
            nats_url: self.nats.url(),
            prefix: self.prefix.clone(),
            tls_ca: Some(tls.ca.clone()),
            require_tls: true,
            ..bus::BusSettings::default()
        };
        let options = settings
            .connect_options()
            .map_err(|error| anyhow::anyhow!("the bus settings: {error}"))?;
        async_nats::connect_with_options(self.nats.url(), options)
            .await
            .with_context(|| format!("connecting to {} with TLS", self.nats.url()))
    }

    /// A client of the control API like [`Stack::client`] (same endpoint, trusting the
    /// stack's CA with TLS), sending `token` instead of the operator's.
    pub fn client_with_token(&self, token: &str) -> anyhow::Result<Client> {
        client_of(
            &self.endpoint,
            token,
            self.tls.as_ref().map(|tls| tls.ca.as_str()),
        )
    }

    /// The generated configuration file every service reads.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The log file of every service started (`control-plane`, `fetcher`, ...), by name.
    pub fn service_logs(&self) -> BTreeMap<String, PathBuf> {
        self.services
            .iter()
            .map(|(name, service)| (name.clone(), service.log().to_owned()))
            .collect()
    }

    /// The peak resident memory (`VmHWM`, KiB) of every running service, by name.
    pub fn service_peaks_kib(&self) -> BTreeMap<String, u64> {
        self.services
            .iter()
            .filter_map(|(name, service)| Some((name.clone(), service.peak_resident_kib()?)))
            .collect()
    }

    /// Runs the `keysync` CLI with `args`, connected to this stack as an operator would
    /// be: `--endpoint`, `--token-file` and, with TLS, `--ca-file`. Answers its output
    /// whatever its exit status.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let bin = binaries()?;
        let mut command = tokio::process::Command::new(bin.join("keysync"));
        command
            .arg("--endpoint")
            .arg(&self.endpoint)
            .arg("--token-file")
            .arg(&self.token_file);
        if let Some(tls) = &self.tls {
            command.arg("--ca-file").arg(&tls.ca_file);
        }
        command
            .args(args)
            .env_remove("KEYSYNC_ENDPOINT")
            .env_remove("KEYSYNC_TOKEN_FILE")
            .env_remove("KEYSYNC_CA_FILE")
            .kill_on_drop(true);
        let output = tokio::time::timeout(DEADLINE, command.output())
            .await
            .context("the keysync CLI did not finish")?
            .context("running the keysync CLI")?;
        Ok(output)
    }
}

/// The states a run ends in.
pub const TERMINAL: &[RunState] = &[RunState::Succeeded, RunState::Failed, RunState::Cancelled];

impl Drop for Stack {
    fn drop(&mut self) {
        for (name, service) in &self.services {
            print_log_if_panicking(name, service.log());
        }
        for (product, emulator) in &self.emulators {
            print_log_if_panicking(
                &format!("emulator-{}", product_name(*product)),
                emulator.process.log(),
            );
        }
    }
}

mod start;
use start::{client_of, product_sections, start_emulators, start_nats, write_secret};

pub mod directory;
pub mod tls;

pub mod proxy;
