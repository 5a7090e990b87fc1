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
//! [control_plane]                     # asked before an approved plan is published
//! endpoint = "https://keysync-control-plane:50051"
//! service_token_file = "/run/secrets/keysync-service/token"   # else `token_file`
//!
//! [planner]
//! change_set_size = 500                # default; 1 to 10,000
//! state_timeout_seconds = 600          # default; at least 1
//! ack_wait_seconds = 60                # default; 1 to 3,600
//!
//! [health]
//! # listen = "0.0.0.0:8080"             # default: not served; /healthz and /readyz
//! ```
//!
//! The file is shared by every service, so the top level accepts the sections of the
//! others; `[planner]` rejects keys it does not know.

use std::collections::BTreeMap;

use crate::control_client::ControlPlaneSettings;
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
    /// `[keycloak.<connector>]`: the planner reads each connector's name and
    /// `required_groups` (the fetcher owns and checks the rest of the section).
    #[serde(default)]
    pub keycloak: BTreeMap<String, ConnectorScope>,
    /// `[control_plane]`: asked whether a run is approved before its plan is published
    /// on a `RunApproved` (see [`crate::control_client`]).
    #[serde(default)]
    pub control_plane: ControlPlaneSettings,
}

/// What the planner reads of a `[keycloak.<connector>]` section.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ConnectorScope {
    /// Full paths of the Keycloak groups whose members the connector syncs; empty: the
    /// whole realm. The same list narrows the fetch, so the plan and the snapshot agree.
    #[serde(default)]
    pub required_groups: Vec<String>,
}

/// The policy of every (connector, product) the planner plans.
#[derive(Clone, Debug)]
pub struct Policies {
    /// Per enabled product: the policy of each configured connector.
    by_product: BTreeMap<Product, BTreeMap<String, ValidPolicy>>,
    /// Per enabled product: the product's own policy, for a connector the file does not
    /// name (a deployment configured before connectors were named).
    fallback: BTreeMap<Product, ValidPolicy>,
    sole: bool,
}

impl Policies {
    /// The enabled products.
    pub fn products(&self) -> Vec<Product> {
        self.fallback.keys().copied().collect()
    }

    /// The policy of `connector`'s runs for `product`; `None` when the product is not
    /// enabled.
    pub fn get(&self, product: Product, connector: &str) -> Option<ValidPolicy> {
        if let Some(policy) = self
            .by_product
            .get(&product)
            .and_then(|policies| policies.get(connector))
        {
            return Some(policy.clone());
        }
        self.fallback
            .get(&product)
            .map(|policy| policy.clone().for_connector(connector, self.sole))
    }
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
    /// How long a replica may go silent on a message in hand before JetStream gives it to
    /// another replica, in seconds (a replica in good health says it is alive every third
    /// of this): 1 to 3,600. Default: 60.
    #[serde(default = "default_ack_wait_seconds")]
    pub ack_wait_seconds: u64,
}

impl Default for PlannerSettings {
    fn default() -> PlannerSettings {
        PlannerSettings {
            change_set_size: default_change_set_size(),
            state_timeout_seconds: default_state_timeout_seconds(),
            ack_wait_seconds: default_ack_wait_seconds(),
        }
    }
}

fn default_change_set_size() -> usize {
    500
}

fn default_state_timeout_seconds() -> u64 {
    600
}

fn default_ack_wait_seconds() -> u64 {
    60
}

impl Settings {
    /// Checks every section the planner reads and compiles the policies; no IO.
    pub fn validate(&self) -> Result<Policies, Invalid> {
        self.bus.validate().map_err(|error| error.within("bus"))?;
        self.control_plane.validate()?;
        if !(1..=10_000).contains(&self.planner.change_set_size) {
            return Err(Invalid::new(
                "planner.change_set_size",
                format!("must be 1 to 10000, not {}", self.planner.change_set_size),
            ));
        }
        if !(1..=3_600).contains(&self.planner.ack_wait_seconds) {
            return Err(Invalid::new(
                "planner.ack_wait_seconds",
                format!("must be 1 to 3600, not {}", self.planner.ack_wait_seconds),
            ));
        }
        if self.planner.state_timeout_seconds == 0 {
            return Err(Invalid::new(
                "planner.state_timeout_seconds",
                "must be at least 1",
            ));
        }
        let sole = self.keycloak.len() <= 1;
        let mut policies = Policies {
            by_product: BTreeMap::new(),
            fallback: BTreeMap::new(),
            sole,
        };
        for product in self.products.enabled() {
            let Some(section) = self.products.get(product) else {
                continue;
            };
            let within = |error: Invalid| error.within(&format!("products.{product}"));
            let fallback = section.valid_policy().map_err(within)?;
            if let Some(unknown) = section
                .connectors
                .keys()
                .find(|name| !self.keycloak.is_empty() && !self.keycloak.contains_key(*name))
            {
                return Err(within(Invalid::new(
                    &format!("connectors.{unknown}"),
                    format!(
                        "no [keycloak.{unknown}] connector is configured; configured: {}",
                        self.keycloak.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )));
            }
            let mut by_connector = BTreeMap::new();
            for (name, scope) in &self.keycloak {
                let policy = section
                    .connector_policy(name, &scope.required_groups, sole)
                    .map_err(within)?;
                by_connector.insert(name.clone(), policy);
            }
            policies.by_product.insert(product, by_connector);
            policies.fallback.insert(product, fallback);
        }
        Ok(policies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `toml`, with a `[control_plane]` token unless it has that section.
    fn load(toml: &str) -> Result<Settings, config::Error> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("keysync.toml");
        let toml = if toml.contains("[control_plane]") {
            toml.to_owned()
        } else {
            format!("[control_plane]\ntoken = \"t\"\n{toml}")
        };
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
        assert_eq!(policies.products(), [Product::Jira]);
        let jira = policies
            .get(Product::Jira, "corp")
            .expect("jira is enabled");
        assert_eq!(jira.policy().safety.max_accounts, 5);
        let scope = jira.connector().expect("planned for a connector");
        assert_eq!(scope.name.as_str(), "corp");
        assert!(scope.sole, "no other connector is configured");
        assert!(policies.get(Product::Confluence, "corp").is_none());
    }

    #[test]
    fn each_connector_has_its_policy_with_the_products_defaults_and_its_required_groups() {
        let settings = load(
            r#"
            [keycloak.corp]
            required_groups = ["/staff"]
            [keycloak.partners]

            [products.jira]
            endpoint = "http://jira.example.org"
            token = "t"
            [products.jira.policy.safety]
            max_accounts = 5
            max_percent = 20
            [products.jira.policy.groups]
            default_for_all_users = ["jira-software-users"]
            [products.jira.connectors.partners.policy.safety]
            max_accounts = 1
            [products.jira.connectors.partners.policy.groups]
            default_for_all_users = ["jira-partners"]
            "#,
        )
        .expect("loads");
        let policies = settings.validate().expect("valid");
        let corp = policies.get(Product::Jira, "corp").expect("corp");
        let partners = policies.get(Product::Jira, "partners").expect("partners");
        assert_eq!(corp.policy().safety.max_accounts, 5);
        assert_eq!(corp.policy().scope.required_groups, ["/staff"]);
        assert_eq!(
            corp.policy().groups.default_for_all_users,
            ["jira-software-users"]
        );
        // The override replaces its keys and keeps the product's others.
        assert_eq!(partners.policy().safety.max_accounts, 1);
        assert_eq!(partners.policy().safety.max_percent, 20);
        assert!(partners.policy().scope.required_groups.is_empty());
        assert_eq!(
            partners.policy().groups.default_for_all_users,
            ["jira-partners"]
        );
        for policy in [&corp, &partners] {
            assert!(!policy.connector().expect("a connector").sole);
        }
    }

    #[test]
    fn required_groups_in_a_policy_or_an_unknown_connector_name_their_key() {
        for (toml, key) in [
            (
                "[products.jira]\nendpoint = \"http://x\"\ntoken = \"t\"\n[products.jira.policy.scope]\nrequired_groups = [\"/staff\"]\n",
                "products.jira.policy.scope.required_groups",
            ),
            (
                "[keycloak.corp]\n[products.jira]\nendpoint = \"http://x\"\ntoken = \"t\"\n[products.jira.connectors.corp.policy.scope]\nrequired_groups = [\"/staff\"]\n",
                "products.jira.connectors.corp.policy.scope.required_groups",
            ),
            (
                "[keycloak.corp]\n[products.jira]\nendpoint = \"http://x\"\ntoken = \"t\"\n[products.jira.connectors.crop.policy.safety]\nmax_accounts = 1\n",
                "products.jira.connectors.crop",
            ),
            (
                "[keycloak.corp]\n[products.jira]\nendpoint = \"http://x\"\ntoken = \"t\"\n[products.jira.connectors.corp.policy.safety]\nmax_acounts = 1\n",
                "products.jira.connectors.corp.policy",
            ),
        ] {
            let settings = load(toml).expect("loads");
            let error = settings.validate().expect_err("invalid");
            assert_eq!(error.key(), key, "{error}");
        }
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

    #[test]
    fn the_planner_needs_a_token_for_the_control_plane() {
        let settings = load("[control_plane]\nlisten = \"127.0.0.1:50051\"\n").expect("loads");
        assert_eq!(
            settings.validate().expect_err("no token").key(),
            "control_plane.token"
        );
    }
}
