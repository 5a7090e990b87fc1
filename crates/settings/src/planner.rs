//! The planner's sections of keysync's configuration file, loaded with the `config` crate
//! (the file, then `KEYSYNC_*` variables):
//!
//! ```toml
//! [bus]
//! nats_url = "nats://127.0.0.1:4222"   # default
//! prefix = "keysync"                   # default
//!
//! [products.jira]                      # each enabled product is planned with its policy
//! endpoint = "https://jira.example.org" # the rest of the section: see `settings::products`
//! token_file = "/run/secrets/jira-token"
//! [products.jira.policy]               # what is synced; see `model::policy`
//!
//! [planner]
//! change_set_size = 500                # default; 1 to 10,000
//! state_timeout_seconds = 600          # default; at least 1
//!
//! [health]
//! # listen = "0.0.0.0:8080"             # default: not served; /healthz and /readyz
//! ```
//!
//! The file is shared by every service, so the top level accepts the sections of the
//! others; `[planner]` rejects keys it does not know.

use std::collections::BTreeMap;

use crate::products::ProductsSettings;
pub use bus::{BusSettings, health::HealthSettings};
use config::Invalid;
use model::policy::ValidPolicy;
use model::state::Product;
use serde::Deserialize;

/// The planner's settings: the sections of the shared configuration file it reads. Other
/// top-level sections are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    /// `[bus]`.
    #[serde(default)]
    pub bus: BusSettings,
    /// `[products.*]`: which products are enabled, and each one's policy.
    #[serde(default)]
    pub products: ProductsSettings,
    /// `[planner]`.
    #[serde(default)]
    pub planner: PlannerSettings,
    /// `[health]`: the HTTP liveness and readiness endpoints (see `bus::health`).
    #[serde(default)]
    pub health: HealthSettings,
}

/// `[planner]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannerSettings {
    /// The most changes in one change set: 1 to 10,000. Default: 500.
    #[serde(default = "default_change_set_size")]
    pub change_set_size: usize,
    /// How long after the snapshot a run waits for each product's state before it fails,
    /// in seconds; at least 1. Default: 600.
    #[serde(default = "default_state_timeout_seconds")]
    pub state_timeout_seconds: u64,
}

impl Default for PlannerSettings {
    fn default() -> PlannerSettings {
        PlannerSettings {
            change_set_size: default_change_set_size(),
            state_timeout_seconds: default_state_timeout_seconds(),
        }
    }
}

fn default_change_set_size() -> usize {
    500
}

fn default_state_timeout_seconds() -> u64 {
    600
}

impl Settings {
    /// Checks every section the planner reads and compiles the policies; no IO.
    pub fn validate(&self) -> Result<BTreeMap<Product, ValidPolicy>, Invalid> {
        self.bus.validate().map_err(|error| error.within("bus"))?;
        if !(1..=10_000).contains(&self.planner.change_set_size) {
            return Err(Invalid::new(
                "planner.change_set_size",
                format!("must be 1 to 10000, not {}", self.planner.change_set_size),
            ));
        }
        if self.planner.state_timeout_seconds == 0 {
            return Err(Invalid::new(
                "planner.state_timeout_seconds",
                "must be at least 1",
            ));
        }
        let mut policies = BTreeMap::new();
        for product in self.products.enabled() {
            let Some(section) = self.products.get(product) else {
                continue;
            };
            let policy = section
                .valid_policy()
                .map_err(|error| error.within(&format!("products.{product}")))?;
            policies.insert(product, policy);
        }
        Ok(policies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Settings, config::Error> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("keysync.toml");
        std::fs::write(&file, toml).expect("writes the file");
        config::load::<Settings>(Some(&file))
    }

    #[test]
    fn the_shared_file_gives_the_planner_its_sections_and_a_policy_per_enabled_product() {
        let settings = load(
            r#"
            [control_plane]
            token = "t"
            listen = "127.0.0.1:50051"

            [products.jira]
            endpoint = "http://jira.example.org"
            token = "t"
            [products.jira.policy.safety]
            max_accounts = 5

            [products.confluence]
            enabled = false
            endpoint = "http://confluence.example.org"
            token = "t"

            [planner]
            change_set_size = 200
            "#,
        )
        .expect("loads");
        assert_eq!(settings.planner.change_set_size, 200);
        assert_eq!(settings.planner.state_timeout_seconds, 600);
        let policies = settings.validate().expect("valid");
        assert_eq!(
            policies.keys().copied().collect::<Vec<_>>(),
            [Product::Jira]
        );
        assert_eq!(policies[&Product::Jira].policy().safety.max_accounts, 5);
    }

    #[test]
    fn a_bad_policy_or_change_set_size_names_its_key() {
        let settings = load(
            "[products.jira]\nendpoint = \"http://x\"\ntoken = \"t\"\n[products.jira.policy.safety]\nmax_percent = 400\n",
        )
        .expect("loads");
        let error = settings.validate().expect_err("400 %");
        assert_eq!(error.key(), "products.jira.policy");
        let settings = load("[planner]\nchange_set_size = 0\n").expect("loads");
        assert_eq!(
            settings.validate().expect_err("zero").key(),
            "planner.change_set_size"
        );
    }
}
