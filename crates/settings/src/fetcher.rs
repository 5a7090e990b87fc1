//! The fetcher's sections of keysync's configuration file, loaded with the `config` crate
//! (the file, then `KEYSYNC_*` variables such as `KEYSYNC_KEYCLOAK__CORP__PAGE_SIZE`; a
//! `*_file` key reads a secret from a file):
//!
//! ```toml
//! [bus]
//! nats_url = "nats://127.0.0.1:4222"   # default
//! prefix = "keysync"                   # default
//!
//! [fetcher]
//! # snapshot_bucket = "keysync-snapshots"  # default: "{bus.prefix}-snapshots"
//! ack_wait_seconds = 60                # default
//!
//! [keycloak.corp]                      # one section per connector (realm), named in run requests
//! endpoint = "https://sso.example.org" # add the relative path if any: ".../auth"
//! realm = "corp"
//! client_id = "keysync"
//! client_secret_file = "/run/secrets/keycloak-corp"   # or: client_secret = "..."
//! page_size = 500                      # default; 1 to 500
//! concurrency = 4                      # default; 1 to 64
//! timeout_seconds = 30                 # default
//! retries = 4                          # default
//! required_groups = []                 # default: the whole realm
//! # ca_file = "/etc/keysync/corp-ca.pem"   # default: the system's roots only; PEM bundle
//!
//! [keycloak.corp.events]               # follow the realm's events (event-driven sync)
//! enabled = false                      # default
//! poll_interval_ms = 1000              # default; 100 to 60000
//! batch_window_ms = 500                # default; 0 to 10000
//!
//! [health]
//! # listen = "0.0.0.0:8080"             # default: not served; /healthz and /readyz
//! ```
//!
//! The file is shared by every service, so the top level accepts the sections of the
//! others (`[products.*]`, ...); each section read here rejects keys it does not know.

use std::{collections::BTreeMap, path::Path, time::Duration};

pub use bus::{BusSettings, health::HealthSettings};
use config::Invalid;
use keycloak::config::KeycloakSettings;
use serde::Deserialize;

/// Everything the fetcher reads from the configuration.
#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    /// `[bus]`: NATS and the deployment's prefix.
    #[serde(default)]
    pub bus: BusSettings,
    /// `[fetcher]`: the service itself.
    #[serde(default)]
    pub fetcher: FetcherSettings,
    /// `[keycloak.<connector>]`: the realms a run request can name, by connector name.
    #[serde(default)]
    pub keycloak: BTreeMap<String, KeycloakSettings>,
    /// `[health]`: the HTTP liveness and readiness endpoints (see `bus::health`).
    #[serde(default)]
    pub health: HealthSettings,
}

/// `[fetcher]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetcherSettings {
    /// The object store bucket snapshots go to, as `{run_id}.pb.zst`.
    /// Default: `{bus.prefix}-snapshots`.
    #[serde(default)]
    pub snapshot_bucket: Option<String>,
    /// How long a run request may go without a sign of life before JetStream hands it to
    /// another replica, in seconds; a fetch in progress renews it every third of that.
    /// Default: 60.
    #[serde(default)]
    pub ack_wait_seconds: Option<u64>,
    /// A connector's first full sync (no full snapshot of it stored yet) announces its
    /// users a part of this many at a time before the complete snapshot, so the appliers
    /// create the first accounts while Keycloak is still read (`model::plan::part`: a
    /// part only creates). 0 turns it off. Default: 10000.
    #[serde(default)]
    pub first_sync_part_users: Option<u32>,
}

impl Settings {
    /// Loads the file (if any) and the environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Settings, config::Error> {
        let settings: Settings = config::load(file)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every section; no IO. Keys in errors are full paths
    /// (`keycloak.corp.page_size`).
    pub fn validate(&self) -> Result<(), Invalid> {
        self.bus.validate().map_err(|error| error.within("bus"))?;
        if let Some(bucket) = &self.fetcher.snapshot_bucket
            && (bucket.is_empty()
                || !bucket
                    .chars()
                    .all(|char| char.is_ascii_alphanumeric() || char == '-' || char == '_'))
        {
            return Err(Invalid::new(
                "fetcher.snapshot_bucket",
                "must be letters, digits, `-` and `_`",
            ));
        }
        if self
            .fetcher
            .ack_wait_seconds
            .is_some_and(|seconds| !(3..=3600).contains(&seconds))
        {
            return Err(Invalid::new(
                "fetcher.ack_wait_seconds",
                "must be 3 to 3600",
            ));
        }
        if self.keycloak.is_empty() {
            return Err(Invalid::new(
                "keycloak",
                "configure at least one connector, e.g. [keycloak.corp]",
            ));
        }
        for (name, connector) in &self.keycloak {
            let valid_name = !name.is_empty()
                && name.chars().all(|char| {
                    char.is_ascii_lowercase() || char.is_ascii_digit() || char == '-' || char == '_'
                });
            if !valid_name {
                return Err(Invalid::new(
                    &format!("keycloak.{name}"),
                    "a connector name is lower-case letters, digits, `-` and `_`",
                ));
            }
            connector
                .validate()
                .map_err(|invalid| invalid.within(&format!("keycloak.{name}")))?;
        }
        Ok(())
    }

    pub fn snapshot_bucket(&self) -> String {
        self.fetcher
            .snapshot_bucket
            .clone()
            .unwrap_or_else(|| format!("{}-snapshots", self.bus.prefix))
    }

    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.fetcher.ack_wait_seconds.unwrap_or(60))
    }

    /// `[fetcher] first_sync_part_users`: 0 when a first sync is not streamed.
    pub fn first_sync_part_users(&self) -> usize {
        self.fetcher.first_sync_part_users.unwrap_or(10_000) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Settings, config::Error> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let secret = dir.path().join("kc-secret");
        std::fs::write(&secret, "s3cret\n").expect("writes the secret");
        let file = dir.path().join("keysync.toml");
        std::fs::write(
            &file,
            toml.replace("SECRET_PATH", &secret.display().to_string()),
        )
        .expect("writes the file");
        Settings::load(Some(&file))
    }

    #[test]
    fn connector_takes_its_defaults_and_reads_its_secret_from_a_file() {
        let settings = load(
            r#"
            [keycloak.corp]
            endpoint = "https://sso.example.org/auth"
            realm = "corp"
            client_id = "keysync"
            client_secret_file = "SECRET_PATH"

            [products.jira]
            endpoint = "https://jira.example.org"
            "#,
        )
        .expect("loads");
        assert_eq!(settings.bus.prefix, "keysync");
        assert_eq!(settings.snapshot_bucket(), "keysync-snapshots");
        assert_eq!(settings.ack_wait(), Duration::from_secs(60));
        let corp = &settings.keycloak["corp"];
        assert_eq!(corp.client_secret.expose(), "s3cret");
        assert_eq!((corp.page_size, corp.concurrency), (500, 4));
        assert_eq!(settings.health.listen, None);
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    fn health_listen_is_read_from_its_section() {
        let settings = load(
            r#"
            [health]
            listen = "0.0.0.0:8080"
            [keycloak.corp]
            endpoint = "https://sso.example.org"
            realm = "corp"
            client_id = "keysync"
            client_secret = "x"
            "#,
        )
        .expect("loads");
        assert_eq!(
            settings.health.listen.map(|address| address.to_string()),
            Some("0.0.0.0:8080".to_owned())
        );
        let error = load(
            r#"
            [health]
            port = 1
            [keycloak.corp]
            endpoint = "https://sso.example.org"
            realm = "corp"
            client_id = "keysync"
            client_secret = "x"
            "#,
        )
        .expect_err("unknown key");
        assert!(error.to_string().contains("`port`"), "{error}");
    }

    #[test]
    fn invalid_connector_setting_names_its_full_key() {
        let error = load(
            r#"
            [keycloak.corp]
            endpoint = "https://sso.example.org"
            realm = "corp"
            client_id = "keysync"
            client_secret = "x"
            page_size = 5000
            "#,
        )
        .expect_err("too big a page");
        assert!(
            error
                .to_string()
                .starts_with("`keycloak.corp.page_size`: must be 1 to 500"),
            "{error}"
        );
    }

    #[test]
    fn unknown_key_in_a_fetcher_section_is_an_error() {
        let error = load(
            r#"
            [fetcher]
            bucket = "x"
            [keycloak.corp]
            endpoint = "https://sso.example.org"
            realm = "corp"
            client_id = "keysync"
            client_secret = "x"
            "#,
        )
        .expect_err("unknown key");
        assert!(error.to_string().contains("`bucket`"), "{error}");
    }

    #[test]
    fn no_connector_is_an_error() {
        let error = load("[bus]\nprefix = \"k\"\n").expect_err("no connector");
        assert!(error.to_string().starts_with("`keycloak`"), "{error}");
    }
}
