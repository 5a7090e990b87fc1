//! A real Keycloak (`kc.sh start-dev`, in-memory database) and fresh realms for tests.
//!
//! [`Keycloak::shared`] gives the one server of this test run: the one the
//! `keysync-test-env` wrapper started (it exports `KEYSYNC_TEST_KEYCLOAK_URL`), or else
//! one started on first use and kept until the test binary exits. [`Keycloak::start`]
//! gives a private server, for tests that need other options or kill it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rand::{Rng, distr::Alphanumeric};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::{
    deps,
    process::{self, Tethered},
};

/// The client every test realm has, whose service account keysync uses.
pub const CLIENT_ID: &str = "keysync";
/// The roles of the `realm-management` client that keysync's service account needs.
pub const DEFAULT_CLIENT_ROLES: [&str; 3] = ["view-users", "query-groups", "view-events"];
const ADMIN_USER: &str = "admin";

/// Options for a private server.
#[derive(Clone, Debug, Default)]
pub struct KeycloakOptions {
    /// For example `/auth`, as old deployments have (`--http-relative-path`).
    pub relative_path: Option<String>,
    /// JVM heap flags (`JAVA_OPTS_KC_HEAP`); kc.sh's default is `-Xms64m -Xmx512m`.
    pub heap: Option<String>,
    /// A directory for a database kept across runs (`--db=dev-file`, an H2 file there),
    /// for benchmarks that seed a big realm once. Default: an in-memory database.
    pub data_dir: Option<PathBuf>,
    /// The bootstrap admin's password. Default: a random one. Keycloak creates the admin
    /// only on its first start, so a server on a kept `data_dir` needs the password it was
    /// first started with.
    pub admin_password: Option<String>,
}

/// A running Keycloak and how to reach its admin API.
pub struct Keycloak {
    /// Up to and including the relative path, without a trailing slash.
    base_url: String,
    admin_password: String,
    log: PathBuf,
    /// `None` for a server someone else started (the test-env wrapper).
    process: Option<Mutex<Tethered>>,
    http: reqwest::Client,
}

impl Keycloak {
    /// The one Keycloak of this test run.
    pub async fn shared() -> anyhow::Result<&'static Keycloak> {
        static SHARED: OnceCell<Keycloak> = OnceCell::const_new();
        SHARED
            .get_or_try_init(|| async {
                if let Ok(url) = std::env::var("KEYSYNC_TEST_KEYCLOAK_URL") {
                    let keycloak = Keycloak {
                        base_url: url.trim_end_matches('/').to_owned(),
                        admin_password: std::env::var("KEYSYNC_TEST_KEYCLOAK_ADMIN_PASSWORD")
                            .context("KEYSYNC_TEST_KEYCLOAK_ADMIN_PASSWORD goes with KEYSYNC_TEST_KEYCLOAK_URL")?,
                        log: std::env::var("KEYSYNC_TEST_KEYCLOAK_LOG")
                            .map(PathBuf::from)
                            .unwrap_or_default(),
                        process: None,
                        http: http_client()?,
                    };
                    keycloak.wait_ready(Duration::from_secs(300)).await?;
                    return Ok(keycloak);
                }
                Keycloak::start(KeycloakOptions::default()).await
            })
            .await
    }

    /// Starts a private server and waits until it answers; it stops when dropped.
    pub async fn start(options: KeycloakOptions) -> anyhow::Result<Keycloak> {
        let keycloak = Keycloak::spawn(options)?;
        keycloak.wait_ready(Duration::from_secs(300)).await?;
        Ok(keycloak)
    }

    /// Starts a server without waiting for it (the test-env wrapper overlaps the start
    /// with compiling the tests). Call [`Keycloak::wait_ready`] before use.
    pub fn spawn(options: KeycloakOptions) -> anyhow::Result<Keycloak> {
        let home = deps::existing_path("KEYSYNC_KEYCLOAK_HOME")?;
        let java_home = deps::existing_path("KEYSYNC_JAVA_HOME")?;
        let port = process::free_port()?;
        let management_port = process::free_port()?;
        let admin_password: String = options.admin_password.clone().unwrap_or_else(|| {
            rand::rng()
                .sample_iter(Alphanumeric)
                .take(24)
                .map(char::from)
                .collect()
        });
        let relative_path = options
            .relative_path
            .as_deref()
            .map(|path| format!("/{}", path.trim_matches('/')))
            .filter(|path| path != "/");
        let mut args = vec![
            "start-dev".to_owned(),
            format!("--http-port={port}"),
            "--http-host=127.0.0.1".to_owned(),
            format!("--http-management-port={management_port}"),
        ];
        match &options.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let dir = dir
                    .canonicalize()
                    .with_context(|| format!("resolving {}", dir.display()))?;
                args.push("--db=dev-file".to_owned());
                args.push(format!(
                    "--db-url=jdbc:h2:file:{}/keycloakdb;NON_KEYWORDS=VALUE;AUTO_SERVER=TRUE",
                    dir.display()
                ));
            }
            None => args.push("--db=dev-mem".to_owned()),
        }
        if let Some(path) = &relative_path {
            args.push(format!("--http-relative-path={path}"));
        }
        let mut envs = vec![
            ("JAVA_HOME", java_home.display().to_string()),
            ("KC_BOOTSTRAP_ADMIN_USERNAME", ADMIN_USER.to_owned()),
            ("KC_BOOTSTRAP_ADMIN_PASSWORD", admin_password.clone()),
        ];
        if let Some(heap) = options.heap {
            envs.push(("JAVA_OPTS_KC_HEAP", heap));
        }
        let log = process::log_dir().join(format!("keycloak-{port}.log"));
        let process = Tethered::spawn(&home.join("bin/kc.sh"), &args, &envs, &log)?;
        Ok(Keycloak {
            base_url: format!(
                "http://127.0.0.1:{port}{}",
                relative_path.unwrap_or_default()
            ),
            admin_password,
            log,
            process: Some(Mutex::new(process)),
            http: http_client()?,
        })
    }

    /// Waits until the master realm answers.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let probe = format!("{}/realms/master", self.base_url);
        loop {
            if let Some(process) = &self.process
                && let Some(status) = process
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .exited()
            {
                bail!(
                    "keycloak exited with {status} before it was ready:\n{}",
                    process::log_tail(&self.log, 60)
                );
            }
            if let Ok(response) = self.http.get(&probe).send().await
                && response.status() == StatusCode::OK
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "keycloak at {} was not ready within {timeout:?}:\n{}",
                    self.base_url,
                    process::log_tail(&self.log, 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// For example `http://127.0.0.1:PORT` or `http://127.0.0.1:PORT/auth`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Kills the server abruptly, as a crash would (private servers only).
    pub fn kill(&self) {
        if let Some(process) = &self.process
            && let Ok(mut process) = process.lock()
        {
            process.kill();
        }
    }

    /// An access token of the bootstrap admin (master realm, `admin-cli`).
    pub async fn admin_token(&self) -> anyhow::Result<String> {
        let response = self
            .http
            .post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.base_url
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", ADMIN_USER),
                ("password", self.admin_password.as_str()),
            ])
            .send()
            .await
            .context("requesting an admin token")?;
        let body: Value = checked_json(response, "admin token").await?;
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("the token response has no access_token")
    }

    /// Sends one admin API request (`path` below `/admin/`) and returns the JSON
    /// answer (`Value::Null` for an empty one); a non-2xx status is an error.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let token = self.admin_token().await?;
        self.admin_with_token(&token, method, path, body).await
    }

    async fn admin_with_token(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/admin/{}", self.base_url, path.trim_start_matches('/'));
        let mut request = self.http.request(method.clone(), &url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        checked_json(response, &format!("{method} {url}")).await
    }

    /// A realm created earlier (on a server with a kept `data_dir`), given its name and
    /// its client's secret.
    pub fn existing_realm(&self, name: &str, client_secret: &str) -> TestRealm<'_> {
        TestRealm {
            keycloak: self,
            name: name.to_owned(),
            client_secret: client_secret.to_owned(),
        }
    }

    /// Creates a realm from `spec` and returns it with its client's credentials.
    pub async fn create_realm(&self, spec: RealmSpec) -> anyhow::Result<TestRealm<'_>> {
        let name = spec.name.clone().unwrap_or_else(|| {
            let suffix: String = rand::rng()
                .sample_iter(Alphanumeric)
                .take(10)
                .map(char::from)
                .collect();
            format!("test-{}", suffix.to_lowercase())
        });
        let client_secret: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let token = self.admin_token().await?;
        let representation = spec.representation(&name, &client_secret);
        self.admin_with_token(&token, Method::POST, "realms", Some(&representation))
            .await
            .with_context(|| format!("creating realm {name}"))?;
        // Keycloak 24+ hides attributes the user profile does not declare; keysync
        // syncs arbitrary attributes, so the test realms show them to admins.
        let profile_path = format!("realms/{name}/users/profile");
        let mut profile = self
            .admin_with_token(&token, Method::GET, &profile_path, None)
            .await?;
        profile["unmanagedAttributePolicy"] = json!("ADMIN_EDIT");
        self.admin_with_token(&token, Method::PUT, &profile_path, Some(&profile))
            .await
            .context("enabling unmanaged attributes")?;
        let realm = TestRealm {
            keycloak: self,
            name,
            client_secret,
        };
        if !spec.users.is_empty() {
            realm.import_users(&spec.users, 1000).await?;
        }
        Ok(realm)
    }
}

impl Drop for Keycloak {
    fn drop(&mut self) {
        process::print_log_if_panicking("keycloak", &self.log);
    }
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .connect_timeout(Duration::from_secs(5))
        // The shared server outlives each test's tokio runtime, and a pooled connection
        // dies with the runtime that opened it ("dispatch task is gone"): no pooling.
        .pool_max_idle_per_host(0)
        .build()
        .context("building an HTTP client")
}

async fn checked_json(response: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading {what}"))?;
    if !status.is_success() {
        bail!("{what}: {status}: {text}");
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: not JSON: {text}"))
}

/// A user to seed.
#[derive(Clone, Debug)]
pub struct UserSpec {
    pub username: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub enabled: bool,
    pub email_verified: bool,
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Group paths of direct memberships, e.g. `/staff/engineering`.
    pub groups: Vec<String>,
}

impl UserSpec {
    /// An enabled user with a verified email `username@example.org`.
    pub fn new(username: &str) -> UserSpec {
        UserSpec {
            username: username.to_owned(),
            email: Some(format!("{}@example.org", username.to_lowercase())),
            first_name: None,
            last_name: None,
            enabled: true,
            email_verified: true,
            attributes: BTreeMap::new(),
            groups: Vec::new(),
        }
    }

    pub fn email(mut self, email: &str) -> UserSpec {
        self.email = Some(email.to_owned());
        self
    }

    /// The email is set but Keycloak has not verified it (a user may have typed it in).
    pub fn unverified_email(mut self, email: &str) -> UserSpec {
        self.email = Some(email.to_owned());
        self.email_verified = false;
        self
    }

    pub fn no_email(mut self) -> UserSpec {
        self.email = None;
        self.email_verified = false;
        self
    }

    pub fn name(mut self, first: &str, last: &str) -> UserSpec {
        self.first_name = Some(first.to_owned());
        self.last_name = Some(last.to_owned());
        self
    }

    pub fn disabled(mut self) -> UserSpec {
        self.enabled = false;
        self
    }

    pub fn attribute(mut self, key: &str, values: &[&str]) -> UserSpec {
        self.attributes.insert(
            key.to_owned(),
            values.iter().map(|value| (*value).to_owned()).collect(),
        );
        self
    }

    /// A direct membership; the group (and its parents) is created with the realm.
    pub fn member_of(mut self, path: &str) -> UserSpec {
        self.groups.push(path.to_owned());
        self
    }

    fn representation(&self) -> Value {
        let mut user = json!({
            "username": self.username,
            "enabled": self.enabled,
            "emailVerified": self.email_verified,
            "attributes": self.attributes,
            "groups": self.groups,
        });
        for (key, value) in [
            ("email", &self.email),
            ("firstName", &self.first_name),
            ("lastName", &self.last_name),
        ] {
            if let Some(value) = value {
                user[key] = json!(value);
            }
        }
        user
    }
}

/// What a fresh test realm holds.
#[derive(Clone, Debug)]
pub struct RealmSpec {
    name: Option<String>,
    client_roles: Vec<String>,
    groups: BTreeSet<String>,
    users: Vec<UserSpec>,
}

impl Default for RealmSpec {
    fn default() -> RealmSpec {
        RealmSpec {
            name: None,
            client_roles: DEFAULT_CLIENT_ROLES.map(str::to_owned).to_vec(),
            groups: BTreeSet::new(),
            users: Vec::new(),
        }
    }
}

impl RealmSpec {
    /// A fixed realm name instead of a random `test-…` one.
    pub fn name(mut self, name: &str) -> RealmSpec {
        self.name = Some(name.to_owned());
        self
    }

    /// The `realm-management` roles of the client's service account (default: [`DEFAULT_CLIENT_ROLES`]).
    pub fn client_roles(mut self, roles: &[&str]) -> RealmSpec {
        self.client_roles = roles.iter().map(|role| (*role).to_owned()).collect();
        self
    }

    /// A group by its path, e.g. `/staff/engineering/backend`; parents are created too.
    pub fn group(mut self, path: &str) -> RealmSpec {
        self.groups.insert(path.to_owned());
        self
    }

    pub fn user(mut self, user: UserSpec) -> RealmSpec {
        self.groups.extend(user.groups.iter().cloned());
        self.users.push(user);
        self
    }

    fn representation(&self, name: &str, client_secret: &str) -> Value {
        json!({
            "realm": name,
            "enabled": true,
            "clients": [{
                "clientId": CLIENT_ID,
                "enabled": true,
                "protocol": "openid-connect",
                "publicClient": false,
                "clientAuthenticatorType": "client-secret",
                "secret": client_secret,
                "serviceAccountsEnabled": true,
                "standardFlowEnabled": false,
                "directAccessGrantsEnabled": false,
            }],
            "users": [{
                "username": format!("service-account-{CLIENT_ID}"),
                "enabled": true,
                "serviceAccountClientId": CLIENT_ID,
                "clientRoles": { "realm-management": self.client_roles },
            }],
            "groups": group_tree(&self.groups),
        })
    }
}

/// Nested group representations for a set of paths (parents implied).
fn group_tree(paths: &BTreeSet<String>) -> Value {
    #[derive(Default)]
    struct Node(BTreeMap<String, Node>);
    let mut root = Node::default();
    for path in paths {
        let mut node = &mut root;
        for segment in path.split('/').filter(|segment| !segment.is_empty()) {
            node = node.0.entry(segment.to_owned()).or_default();
        }
    }
    fn render(node: &Node, parent: &str) -> Value {
        Value::Array(
            node.0
                .iter()
                .map(|(name, child)| {
                    let path = format!("{parent}/{name}");
                    json!({ "name": name, "path": path, "subGroups": render(child, &path) })
                })
                .collect(),
        )
    }
    render(&root, "")
}

/// A realm of the test run; prints the server log if the test fails.
pub struct TestRealm<'k> {
    keycloak: &'k Keycloak,
    name: String,
    client_secret: String,
}

impl TestRealm<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn keycloak(&self) -> &Keycloak {
        self.keycloak
    }

    /// The server's base URL (what keysync's `keycloak.endpoint` is set to).
    pub fn base_url(&self) -> &str {
        self.keycloak.base_url()
    }

    pub fn client_id(&self) -> &str {
        CLIENT_ID
    }

    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    /// `…/realms/{realm}/protocol/openid-connect/token`.
    pub fn token_url(&self) -> String {
        format!(
            "{}/realms/{}/protocol/openid-connect/token",
            self.keycloak.base_url, self.name
        )
    }

    /// An admin API request below `/admin/realms/{realm}/`.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let path = format!("realms/{}/{}", self.name, path.trim_start_matches('/'));
        self.keycloak.admin(method, &path, body).await
    }

    /// Adds users (and their groups' memberships) with the partial-import endpoint, in
    /// batches, each with a fresh admin token; the groups must exist already.
    pub async fn import_users(&self, users: &[UserSpec], batch_size: usize) -> anyhow::Result<()> {
        let path = format!("realms/{}/partialImport", self.name);
        for batch in users.chunks(batch_size.max(1)) {
            // The master realm's tokens last 60 s; an import of many batches takes longer.
            let token = self.keycloak.admin_token().await?;
            let body = json!({
                "ifResourceExists": "FAIL",
                "users": batch.iter().map(UserSpec::representation).collect::<Vec<_>>(),
            });
            self.keycloak
                .admin_with_token(&token, Method::POST, &path, Some(&body))
                .await
                .context("importing users")?;
        }
        Ok(())
    }

    /// Makes the realm save admin events with their representation and the user events of
    /// `user_event_types` (keysync's are `keycloak::events::USER_EVENT_TYPES`, which this
    /// crate cannot name), as an administrator would in Realm settings → Events.
    pub async fn save_events(&self, user_event_types: &[&str]) -> anyhow::Result<()> {
        let mut config = self.admin(Method::GET, "events/config", None).await?;
        config["eventsEnabled"] = json!(true);
        config["enabledEventTypes"] = json!(user_event_types);
        config["adminEventsEnabled"] = json!(true);
        config["adminEventsDetailsEnabled"] = json!(true);
        self.admin(Method::PUT, "events/config", Some(&config))
            .await?;
        Ok(())
    }

    /// The id of the user with exactly this username.
    pub async fn user_id(&self, username: &str) -> anyhow::Result<String> {
        let users = self
            .admin(
                Method::GET,
                &format!(
                    "users?exact=true&briefRepresentation=true&username={}",
                    encode(username)
                ),
                None,
            )
            .await?;
        users
            .as_array()
            .and_then(|users| {
                users
                    .iter()
                    .find(|user| user["username"] == username.to_lowercase())
            })
            .and_then(|user| user["id"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("no user {username} in realm {}", self.name))
    }

    /// The id of the group at `path`.
    pub async fn group_id(&self, path: &str) -> anyhow::Result<String> {
        let group = self
            .admin(
                Method::GET,
                &format!("group-by-path/{}", path.trim_start_matches('/')),
                None,
            )
            .await?;
        group["id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no group {path} in realm {}", self.name))
    }

    /// A client-credentials token of the realm's `keysync` client.
    pub async fn client_token(&self) -> anyhow::Result<Value> {
        let response = self
            .keycloak
            .http
            .post(self.token_url())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                ("client_secret", self.client_secret.as_str()),
            ])
            .send()
            .await
            .context("requesting a client-credentials token")?;
        checked_json(response, "client-credentials token").await
    }
}

impl Drop for TestRealm<'_> {
    fn drop(&mut self) {
        process::print_log_if_panicking("keycloak", &self.keycloak.log);
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
