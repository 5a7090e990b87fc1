//! The applier's sections of the shared configuration file: `[bus]`, `[products.*]` (the
//! section of its product holds its client settings), `[control_plane]` (where results are
//! reported: `endpoint`, and `service_token`, else `token`; see [`crate::control_client`]),
//! `[applier]` and `[health]`.
//!
//! ```toml
//! [control_plane]
//! endpoint = "http://keysync-control-plane:50051"   # default: http://127.0.0.1:50051
//! token_file = "/run/secrets/keysync-api/token"     # the operator's: sent when
//! service_token_file = "/run/secrets/keysync-service/token"   # this is not set
//!
//! [applier]
//! concurrency = 8                      # default; 1 to 64
//! report_batch_size = 100              # default; 1 to 10,000
//! ack_wait_seconds = 60                # default; 1 to 3,600
//! sequence_timeout_seconds = 600       # default; at least 1
//! ```

use bus::BusSettings;
use bus::health::HealthSettings;
use config::Invalid;
use model::state::Product;
use serde::Deserialize;

pub use crate::control_client::ControlPlaneSettings;
use crate::products::ProductsSettings;

/// The applier's settings: the sections of the shared configuration file it reads. Other
/// top-level sections are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    /// `[bus]`.
    #[serde(default)]
    pub bus: BusSettings,
    /// `[products.*]`: the section of the applier's product holds its client settings.
    #[serde(default)]
    pub products: ProductsSettings,
    /// `[control_plane]`: where results are reported.
    pub control_plane: ControlPlaneSettings,
    /// `[applier]`.
    #[serde(default)]
    pub applier: ApplierSettings,
    /// `[health]`: the HTTP liveness and readiness endpoints (see `bus::health`).
    #[serde(default)]
    pub health: HealthSettings,
}

/// `[applier]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplierSettings {
    /// Changes of one phase applied at once: 1 to 64. The product client's own
    /// `max_concurrency` bounds its requests too. Default: 8.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Results per `ReportResults` call: 1 to 10,000. Default: 100.
    #[serde(default = "default_report_batch_size")]
    pub report_batch_size: usize,
    /// How long a replica may go silent on a message in hand before JetStream gives it to
    /// another replica, in seconds (a replica in good health says it is alive every third
    /// of this): 1 to 3,600. Default: 60.
    #[serde(default = "default_ack_wait_seconds")]
    pub ack_wait_seconds: u64,
    /// How long a run may make no progress at all (no set of its product finished or being
    /// worked on by any replica) while a change set waits for the sets of the phases before
    /// its own, before the set is given up: its changes and those of every later set of the
    /// run are reported FAILED ("not attempted"), never skipped. In seconds; at least 1.
    /// Default: 600.
    #[serde(default = "default_sequence_timeout_seconds")]
    pub sequence_timeout_seconds: u64,
}

impl Default for ApplierSettings {
    fn default() -> ApplierSettings {
        ApplierSettings {
            concurrency: default_concurrency(),
            report_batch_size: default_report_batch_size(),
            ack_wait_seconds: default_ack_wait_seconds(),
            sequence_timeout_seconds: default_sequence_timeout_seconds(),
        }
    }
}

fn default_concurrency() -> usize {
    8
}

fn default_report_batch_size() -> usize {
    100
}

fn default_ack_wait_seconds() -> u64 {
    60
}

fn default_sequence_timeout_seconds() -> u64 {
    600
}

impl Settings {
    /// Checks every section the applier of `product` reads; no IO. Answers the product's
    /// client settings.
    pub fn validate(&self, product: Product) -> Result<atlassian::config::Settings, Invalid> {
        self.bus.validate().map_err(|error| error.within("bus"))?;
        let applier = &self.applier;
        if !(1..=64).contains(&applier.concurrency) {
            return Err(Invalid::new(
                "applier.concurrency",
                format!("must be 1 to 64, not {}", applier.concurrency),
            ));
        }
        if !(1..=10_000).contains(&applier.report_batch_size) {
            return Err(Invalid::new(
                "applier.report_batch_size",
                format!("must be 1 to 10000, not {}", applier.report_batch_size),
            ));
        }
        if !(1..=3600).contains(&applier.ack_wait_seconds) {
            return Err(Invalid::new(
                "applier.ack_wait_seconds",
                format!("must be 1 to 3600, not {}", applier.ack_wait_seconds),
            ));
        }
        if applier.sequence_timeout_seconds == 0 {
            return Err(Invalid::new(
                "applier.sequence_timeout_seconds",
                "must be at least 1",
            ));
        }
        self.control_plane.validate()?;
        let section = format!("products.{product}");
        let Some(settings) = self.products.get(product) else {
            return Err(Invalid::new(
                &section,
                "is missing; the applier needs its product's settings",
            ));
        };
        if !settings.enabled {
            return Err(Invalid::new(
                &format!("{section}.enabled"),
                "is false; this applier has nothing to do",
            ));
        }
        settings
            .client_settings(product)
            .map_err(|error| error.within(&section))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One file for every service: the applier reads its sections and leaves the others.
    const SHARED: &str = r#"
        [bus]
        prefix = "corp"

        [keycloak.corp]
        endpoint = "http://127.0.0.1:8080"
        realm = "corp"

        [control_plane]
        listen = "127.0.0.1:50051"
        endpoint = "http://keysync-control-plane:50051"
        token_file = "SECRET_PATH"

        [control_plane.schedule]
        cron = "0 3 * * *"

        [products.jira]
        endpoint = "http://jira.example.org"
        token_file = "SECRET_PATH"

        [products.bitbucket]
        enabled = false
        endpoint = "http://bitbucket.example.org"
        user = "svc-keysync"
        password_file = "SECRET_PATH"

        [planner]
        change_set_size = 200

        [applier]
        concurrency = 4
    "#;

    fn load(toml: &str) -> Result<Settings, config::Error> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").expect("writes the secret");
        let file = dir.path().join("keysync.toml");
        let toml = toml.replace("SECRET_PATH", &secret.display().to_string());
        std::fs::write(&file, toml).expect("writes the file");
        config::load::<Settings>(Some(&file))
    }

    #[test]
    fn the_shared_file_gives_the_applier_its_sections_with_their_defaults() {
        let settings = load(SHARED).expect("loads");
        assert_eq!(settings.bus.prefix, "corp");
        assert_eq!(
            settings.control_plane.endpoint,
            "http://keysync-control-plane:50051"
        );
        assert_eq!(
            settings.control_plane.token.expose(),
            "s3cret",
            "the operator's token, without a service token"
        );
        let with_service = SHARED.replace(
            "token_file = \"SECRET_PATH\"\n\n        [control_plane.schedule]",
            "token_file = \"SECRET_PATH\"\n        service_token = \"service\"\n\n        [control_plane.schedule]",
        );
        let service = load(&with_service).expect("loads");
        assert_eq!(service.control_plane.token.expose(), "service");
        assert_eq!(settings.applier.concurrency, 4);
        assert_eq!(settings.applier.report_batch_size, 100);
        assert_eq!(settings.applier.ack_wait_seconds, 60);
        let client = settings.validate(Product::Jira).expect("jira is valid");
        assert_eq!(
            client.connection.endpoint.as_str(),
            "http://jira.example.org/"
        );
        assert!(
            !format!("{settings:?}").contains("s3cret"),
            "a secret leaked into Debug"
        );
    }

    #[test]
    fn an_applier_of_a_product_without_a_section_or_disabled_does_not_start() {
        let settings = load(SHARED).expect("loads");
        let missing = settings
            .validate(Product::Confluence)
            .expect_err("no section");
        assert_eq!(missing.key(), "products.confluence");
        let disabled = settings.validate(Product::Bitbucket).expect_err("disabled");
        assert_eq!(disabled.key(), "products.bitbucket.enabled");
    }

    #[test]
    fn an_unknown_key_in_the_applier_section_is_an_error() {
        let error =
            load(&format!("{SHARED}\n[applier.extra]\ncolour = 1\n")).expect_err("unknown key");
        assert!(error.to_string().contains("applier"), "{error}");
    }
}
