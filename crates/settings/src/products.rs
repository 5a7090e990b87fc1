//! The sections of the shared configuration file that the planner, the appliers and the
//! control plane read: `[products.jira]`, `[products.confluence]`, `[products.bitbucket]`.
//! The planner takes each product's `enabled` and `policy`; an applier takes its product's
//! client settings; the control plane checks the connection with them. Each parses the
//! whole section, so a typo is an error in any of them.
//!
//! ```toml
//! [products.jira]
//! enabled = true                       # default
//! endpoint = "https://jira.example.org"
//! token_file = "/run/secrets/jira-token"   # or: user = "svc", password_file = "..."
//!                                      # (Bitbucket: always user + password_file)
//! max_concurrency = 16                 # default
//! # max_requests_per_second = 50       # default: no ceiling of our own
//! request_timeout_seconds = 30         # default
//! connect_timeout_seconds = 10         # default
//! max_retries = 8                      # default
//! initial_backoff_ms = 250             # default
//! max_backoff_seconds = 60             # default
//! # page_size = 500                    # default: each endpoint's documented page
//! user_listing = "auto"                # Jira only: auto | cursor | prefix_search
//! # long_task_timeout_seconds = 300    # Confluence only
//! # add_to_default_group = true        # Bitbucket only
//! # ca_file = "/etc/keysync/corp-ca.pem"   # default: the system's roots only; PEM bundle
//!
//! [products.jira.policy]               # model::policy::Policy, every key with its default
//! ```
//!
//! Defaults are written once, in the `default_*` functions below; `validate`-style methods
//! do no IO.

use std::collections::BTreeMap;
use std::time::Duration;

use atlassian::config::{
    Auth, BitbucketSettings, ConfluenceSettings, Connection, JiraSettings,
    ProductSettings as ClientProduct, Settings as ClientSettings, UserListing,
};
use config::{Invalid, Secret};
use model::policy::{Policy, ValidPolicy};
use model::state::Product;
use serde::Deserialize;

/// `[products]`: one optional section per product. A product without a section is not
/// synced.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductsSettings {
    pub jira: Option<ProductSettings>,
    pub confluence: Option<ProductSettings>,
    pub bitbucket: Option<ProductSettings>,
}

impl ProductsSettings {
    /// The section of `product`, if the file has one.
    pub fn get(&self, product: Product) -> Option<&ProductSettings> {
        match product {
            Product::Jira => self.jira.as_ref(),
            Product::Confluence => self.confluence.as_ref(),
            Product::Bitbucket => self.bitbucket.as_ref(),
        }
    }

    /// The products with a section and `enabled = true`, in the order Jira, Confluence,
    /// Bitbucket.
    pub fn enabled(&self) -> Vec<Product> {
        [Product::Jira, Product::Confluence, Product::Bitbucket]
            .into_iter()
            .filter(|&product| self.get(product).is_some_and(|settings| settings.enabled))
            .collect()
    }
}

/// How Jira lists every user (`user_listing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserListingSetting {
    /// Reads the server version once: `cursor` from 10.3 on, else `prefix_search`.
    Auto,
    /// `/user/list` with a cursor (Jira 10.3 LTS and later).
    Cursor,
    /// `/user/search` by username prefixes (Jira 9.x and older).
    PrefixSearch,
}

/// `[products.<name>]`: whether the product is synced, how to reach it, and its policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductSettings {
    /// Whether keysync syncs this product. Default: `true`.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The product's base URL including any context path, e.g. `https://host/jira`.
    pub endpoint: String,
    /// A personal access token (Jira 8.14+, Confluence 7.9+), sent as a bearer token; set
    /// `token_file` to read it from a file. Set either this or `user` and `password`. Not for
    /// Bitbucket, which refuses HTTP access tokens on the administrative endpoints keysync
    /// calls ([`BITBUCKET_TOKEN_REFUSED`]).
    pub token: Option<Secret>,
    /// The user of basic authentication, with `password`.
    pub user: Option<String>,
    /// The password of basic authentication; set `password_file` to read it from a file.
    pub password: Option<Secret>,
    /// The most requests in flight at once. Default: 16.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// A ceiling in requests per second, on top of the pace the product's rate-limit
    /// headers ask for. Default: none.
    pub max_requests_per_second: Option<f64>,
    /// The timeout of one request, in seconds. Default: 30.
    #[serde(default = "default_request_timeout_seconds")]
    pub request_timeout_seconds: u64,
    /// The connect timeout, in seconds. Default: 10.
    #[serde(default = "default_connect_timeout_seconds")]
    pub connect_timeout_seconds: u64,
    /// Retries after the first attempt for 429, 502, 503, 504 and transport errors.
    /// Default: 8.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The first backoff when the product sends no `Retry-After`, in milliseconds.
    /// Default: 250.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// The longest wait between two attempts, in seconds. Default: 60.
    #[serde(default = "default_max_backoff_seconds")]
    pub max_backoff_seconds: u64,
    /// Page size of listings. Default: each endpoint's documented default.
    pub page_size: Option<u32>,
    /// Jira only: how to list every user. Default: `auto`.
    pub user_listing: Option<UserListingSetting>,
    /// Confluence only: how long a user deletion may run on the server, in seconds.
    /// Default: 300.
    pub long_task_timeout_seconds: Option<u64>,
    /// Bitbucket only: whether new users join the default group (which usually grants the
    /// licence). Default: `true`.
    pub add_to_default_group: Option<bool>,
    /// PEM certificates (a CA bundle) trusted besides the system's roots, for a product whose
    /// certificate a private CA signed; set `ca_file` to read them from a file (not checked
    /// for permissions: a CA bundle is public). Default: none.
    #[serde(default)]
    pub ca: Option<String>,
    /// What keysync syncs into this product; see `model::policy::Policy` for every key and
    /// its default. Required groups are not set here but once per connector, as
    /// `[keycloak.<connector>] required_groups`, which both the fetch and the plan use.
    #[serde(default)]
    pub policy: Policy,
    /// `[products.<name>.connectors.<connector>.policy]`: the keys of the policy that differ
    /// for the runs of one Keycloak connector; every other key comes from `policy`.
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorOverrides>,
}

/// Why `token` is refused for Bitbucket.
pub const BITBUCKET_TOKEN_REFUSED: &str = "Bitbucket refuses HTTP access tokens on its \
    administrative user and group endpoints, which are every call keysync makes (Atlassian KB \
    \"How to use OAuth2 tokens for administrative endpoints of Bitbucket Data Center\", \
    BSERV-10482); set `user` and `password_file` of an account with the ADMIN global permission";

const REQUIRED_GROUPS_MOVED: &str = "required groups are set once per connector, as \
    `required_groups` in its [keycloak.<connector>] section, which both the fetch and the plan use";

fn validate(policy: &Policy, key: &str) -> Result<ValidPolicy, Invalid> {
    policy.validate().map_err(|errors| {
        let reason = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        Invalid::new(key, reason)
    })
}

/// Merges `overrides` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut serde_json::Value, overrides: serde_json::Value) {
    match (base, overrides) {
        (serde_json::Value::Object(base), serde_json::Value::Object(overrides)) => {
            for (key, value) in overrides {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overrides) => *base = overrides,
    }
}

/// `[products.<name>.connectors.<connector>]`: what differs for one connector.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorOverrides {
    /// Policy keys, as in `[products.<name>.policy]`, that replace the product's for this
    /// connector. Tables merge key by key; any other value replaces the product's.
    #[serde(default)]
    pub policy: serde_json::Map<String, serde_json::Value>,
}

impl ProductSettings {
    /// The validated policy. Keys in errors are relative to the product's section
    /// (`policy.safety.max_percent`).
    pub fn valid_policy(&self) -> Result<ValidPolicy, Invalid> {
        if !self.policy.scope.required_groups.is_empty() {
            return Err(Invalid::new(
                "policy.scope.required_groups",
                REQUIRED_GROUPS_MOVED,
            ));
        }
        validate(&self.policy, "policy")
    }

    /// The validated policy of the runs of `connector`: the product's policy with the
    /// connector's overrides and the connector's `required_groups` (from
    /// `[keycloak.<connector>]`), planning only what that connector owns (`sole`: it is the
    /// deployment's only connector). Keys in errors are relative to the product's section.
    pub fn connector_policy(
        &self,
        connector: &str,
        required_groups: &[String],
        sole: bool,
    ) -> Result<ValidPolicy, Invalid> {
        self.valid_policy()?;
        let mut policy = self.policy.clone();
        let key = format!("connectors.{connector}.policy");
        if let Some(overrides) = self.connectors.get(connector) {
            let mut merged = serde_json::to_value(&self.policy)
                .map_err(|error| Invalid::new("policy", error.to_string()))?;
            merge(
                &mut merged,
                serde_json::Value::Object(overrides.policy.clone()),
            );
            policy = serde_json::from_value(merged)
                .map_err(|error| Invalid::new(&key, error.to_string()))?;
            if policy.scope.required_groups != self.policy.scope.required_groups {
                return Err(Invalid::new(
                    &format!("{key}.scope.required_groups"),
                    REQUIRED_GROUPS_MOVED,
                ));
            }
        }
        policy.scope.required_groups = required_groups.to_vec();
        Ok(validate(&policy, &key)?.for_connector(connector, sole))
    }

    /// The settings of the product's client, checked without IO. Keys in errors are
    /// relative to the product's section.
    pub fn client_settings(&self, product: Product) -> Result<ClientSettings, Invalid> {
        let endpoint = url::Url::parse(&self.endpoint)
            .map_err(|error| Invalid::new("endpoint", format!("not a URL: {error}")))?;
        let auth = match (&self.token, &self.user, &self.password) {
            (Some(_), _, _) if product == Product::Bitbucket => {
                return Err(Invalid::new("token", BITBUCKET_TOKEN_REFUSED));
            }
            (Some(token), None, None) => Auth::Bearer(token.clone()),
            (None, Some(user), Some(password)) => Auth::Basic {
                user: user.clone(),
                password: password.clone(),
            },
            _ => {
                return Err(Invalid::new(
                    "token",
                    "set either `token` (or `token_file`), or `user` and `password` (or `password_file`)",
                ));
            }
        };
        let only_for = |key: &str, set: bool, owner: Product| {
            if set && product != owner {
                return Err(Invalid::new(key, format!("is a {owner} setting")));
            }
            Ok(())
        };
        only_for("user_listing", self.user_listing.is_some(), Product::Jira)?;
        only_for(
            "long_task_timeout_seconds",
            self.long_task_timeout_seconds.is_some(),
            Product::Confluence,
        )?;
        only_for(
            "add_to_default_group",
            self.add_to_default_group.is_some(),
            Product::Bitbucket,
        )?;

        let mut connection = Connection::new(endpoint, auth);
        connection.max_concurrency = self.max_concurrency;
        connection.max_requests_per_second = self.max_requests_per_second;
        connection.request_timeout = Duration::from_secs(self.request_timeout_seconds);
        connection.connect_timeout = Duration::from_secs(self.connect_timeout_seconds);
        connection.max_retries = self.max_retries;
        connection.initial_backoff = Duration::from_millis(self.initial_backoff_ms);
        connection.max_backoff = Duration::from_secs(self.max_backoff_seconds);
        connection.page_size = self.page_size;
        connection.ca = self.ca.clone();
        connection
            .ca_certificates()
            .map_err(|reason| Invalid::new("ca_file", reason))?;
        connection
            .validate(to_atlassian(product))
            .map_err(|error| Invalid::new("endpoint", error.to_string()))?;
        let product_settings = match product {
            Product::Jira => ClientProduct::Jira(JiraSettings {
                user_listing: match self.user_listing.unwrap_or(UserListingSetting::Auto) {
                    UserListingSetting::Auto => UserListing::Auto,
                    UserListingSetting::Cursor => UserListing::Cursor,
                    UserListingSetting::PrefixSearch => UserListing::PrefixSearch,
                },
            }),
            Product::Confluence => {
                let mut confluence = ConfluenceSettings::recommended();
                if let Some(seconds) = self.long_task_timeout_seconds {
                    confluence.long_task_timeout = Duration::from_secs(seconds);
                }
                ClientProduct::Confluence(confluence)
            }
            Product::Bitbucket => ClientProduct::Bitbucket(BitbucketSettings {
                add_to_default_group: self.add_to_default_group.unwrap_or(true),
            }),
        };
        Ok(ClientSettings {
            connection,
            product: product_settings,
        })
    }
}

/// The `atlassian` crate's name for a product.
pub fn to_atlassian(product: Product) -> atlassian::Product {
    match product {
        Product::Jira => atlassian::Product::Jira,
        Product::Confluence => atlassian::Product::Confluence,
        Product::Bitbucket => atlassian::Product::Bitbucket,
    }
}

fn default_enabled() -> bool {
    true
}

fn default_max_concurrency() -> usize {
    16
}

fn default_request_timeout_seconds() -> u64 {
    30
}

fn default_connect_timeout_seconds() -> u64 {
    10
}

fn default_max_retries() -> u32 {
    8
}

fn default_initial_backoff_ms() -> u64 {
    250
}

fn default_max_backoff_seconds() -> u64 {
    60
}

#[cfg(test)]
mod tests {
    use bus::BusSettings;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        #[serde(default)]
        bus: BusSettings,
        #[serde(default)]
        products: ProductsSettings,
    }

    fn load(toml: &str) -> Result<File, config::Error> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let token = dir.path().join("jira-token");
        std::fs::write(&token, "s3cret\n").expect("writes the token");
        let toml = toml.replace("TOKEN_PATH", &token.display().to_string());
        let file = dir.path().join("keysync.toml");
        std::fs::write(&file, toml).expect("writes the file");
        config::load::<File>(Some(&file))
    }

    #[test]
    fn a_product_section_takes_its_defaults_and_reads_its_token_from_a_file() {
        let file = load(
            r#"
            [products.jira]
            endpoint = "http://127.0.0.1:8080/jira"
            token_file = "TOKEN_PATH"
            [products.bitbucket]
            enabled = false
            endpoint = "http://127.0.0.1:7990"
            user = "svc"
            password = "pw"
            "#,
        )
        .expect("loads");
        assert_eq!(file.bus.prefix, "keysync");
        assert_eq!(file.products.enabled(), [Product::Jira]);
        let jira = file.products.get(Product::Jira).expect("jira");
        let client = jira.client_settings(Product::Jira).expect("valid");
        assert!(
            matches!(&client.connection.auth, Auth::Bearer(token) if token.expose() == "s3cret")
        );
        assert_eq!(client.connection.max_concurrency, 16);
        assert!(matches!(
            client.product,
            ClientProduct::Jira(JiraSettings {
                user_listing: UserListing::Auto
            })
        ));
        assert_eq!(jira.policy, Policy::default());
        assert!(jira.valid_policy().is_ok());
        assert!(
            !format!("{jira:?}").contains("s3cret"),
            "the token leaked into Debug"
        );
    }

    #[test]
    fn a_setting_of_another_product_or_two_kinds_of_auth_are_invalid() {
        let file = load(
            r#"
            [products.confluence]
            endpoint = "http://127.0.0.1:8090"
            token = "t"
            user_listing = "cursor"
            [products.bitbucket]
            endpoint = "http://127.0.0.1:7990"
            token = "t"
            user = "svc"
            password = "pw"
            "#,
        )
        .expect("loads");
        let confluence = file.products.get(Product::Confluence).expect("confluence");
        assert_eq!(
            confluence
                .client_settings(Product::Confluence)
                .expect_err("jira setting")
                .key(),
            "user_listing"
        );
        let bitbucket = file.products.get(Product::Bitbucket).expect("bitbucket");
        assert_eq!(
            bitbucket
                .client_settings(Product::Bitbucket)
                .expect_err("two auths")
                .key(),
            "token"
        );
    }

    #[test]
    fn a_token_for_bitbucket_is_refused_with_the_reason_and_basic_auth_is_taken() {
        let file = load(
            r#"
            [products.jira]
            endpoint = "http://127.0.0.1:8080"
            token = "t"
            [products.bitbucket]
            endpoint = "http://127.0.0.1:7990"
            token_file = "TOKEN_PATH"
            "#,
        )
        .expect("loads");
        let basic = load(
            "[products.bitbucket]\nendpoint = \"http://127.0.0.1:7990\"\nuser = \"svc\"\npassword_file = \"TOKEN_PATH\"\n",
        )
        .expect("loads");

        let error = file
            .products
            .get(Product::Bitbucket)
            .expect("bitbucket")
            .client_settings(Product::Bitbucket)
            .expect_err("a token for Bitbucket");
        let client = basic
            .products
            .get(Product::Bitbucket)
            .expect("bitbucket")
            .client_settings(Product::Bitbucket)
            .expect("basic auth");

        assert_eq!(error.key(), "token");
        assert!(error.to_string().contains("BSERV-10482"), "{error}");
        assert!(error.to_string().contains("password_file"), "{error}");
        assert!(
            matches!(&client.connection.auth, Auth::Basic { user, password } if user == "svc" && password.expose() == "s3cret")
        );
        let jira = file.products.get(Product::Jira).expect("jira");
        assert!(
            jira.client_settings(Product::Jira).is_ok(),
            "Jira takes a token"
        );
    }

    #[test]
    fn an_unknown_key_in_a_product_section_or_its_policy_is_an_error() {
        for toml in [
            "[products.jira]\nendpoint = \"http://x\"\ntoken = \"t\"\ncolour = \"blue\"\n",
            "[products.jira]\nendpoint = \"http://x\"\ntoken = \"t\"\n[products.jira.policy.safety]\nmax = 1\n",
        ] {
            let error = load(toml).expect_err("unknown key");
            assert!(error.to_string().contains("products.jira"), "{error}");
        }
    }

    #[test]
    fn a_ca_file_that_is_not_a_pem_bundle_is_an_error_naming_ca_file() {
        let file = load(
            "[products.jira]\nendpoint = \"https://jira.example.org\"\ntoken = \"t\"\nca_file = \"TOKEN_PATH\"\n",
        )
        .expect("loads");
        let jira = file.products.get(Product::Jira).expect("jira");
        assert_eq!(jira.ca.as_deref(), Some("s3cret"));
        let error = jira
            .client_settings(Product::Jira)
            .expect_err("not a certificate");
        assert_eq!(error.key(), "ca_file");
    }

    #[test]
    fn a_bad_policy_names_the_policy_key() {
        let file = load(
            "[products.jira]\nendpoint = \"http://x\"\ntoken = \"t\"\n[products.jira.policy.safety]\nmax_percent = 101\n",
        )
        .expect("loads");
        let error = file
            .products
            .get(Product::Jira)
            .expect("jira")
            .valid_policy()
            .expect_err("101 %");
        assert!(error.to_string().contains("safety.max_percent"), "{error}");
    }
}
