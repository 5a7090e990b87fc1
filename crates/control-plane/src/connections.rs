//! `TestConnection`: checks each configured Keycloak connector (a token, one small request
//! of every kind the fetch makes, the directory's size) and each enabled product, with the
//! same settings the fetcher and the appliers use, read from the shared configuration file.
//! A product's check is its client's connection test, which proves the rights the writes
//! need (Jira `ADMINISTER` or `SYSTEM_ADMIN` through `mypermissions`, a Confluence
//! administrator and Bitbucket `ADMIN` through admin-only reads) and, when they are missing,
//! fails with a message that names the permission.
//!
//! Targets are named `keycloak:<connector>` and `jira`, `confluence`, `bitbucket`. Checks
//! run at once; each is bounded by [`CHECK_TIMEOUT`] on top of the clients' own timeouts.

use std::{collections::BTreeMap, time::Duration};

use ::settings::products::ProductsSettings;
use atlassian::Directory;
use config::Invalid;
use keycloak::config::KeycloakSettings;
use model::state::Product;
use proto::v1;

/// The longest one check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// A `TestConnection` that cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionsError {
    #[error("unknown target `{target}`; the configured ones are: {known}")]
    UnknownTarget { target: String, known: String },
    #[error(
        "nothing to check: the configuration has no [keycloak.<connector>] section and no enabled [products.<name>] section"
    )]
    NothingConfigured,
}

/// The clients `TestConnection` checks, built without IO when the service starts.
pub struct Connections {
    keycloak: Vec<(String, keycloak::client::Client)>,
    products: Vec<(Product, atlassian::Client)>,
}

impl Connections {
    /// Builds a client per connector and per enabled product. Keys in errors are full
    /// paths (`keycloak.corp.endpoint`, `products.jira.token`).
    pub fn new(
        keycloak: &BTreeMap<String, KeycloakSettings>,
        products: &ProductsSettings,
    ) -> Result<Connections, Invalid> {
        let mut keycloak_clients = Vec::with_capacity(keycloak.len());
        for (name, settings) in keycloak {
            let section = format!("keycloak.{name}");
            let client =
                keycloak::client::Client::new(settings.clone()).map_err(|error| match error {
                    keycloak::Error::Settings(invalid) => invalid.within(&section),
                    other => Invalid::new(&section, other.to_string()),
                })?;
            keycloak_clients.push((name.clone(), client));
        }
        let mut product_clients = Vec::new();
        for product in products.enabled() {
            let section = format!("products.{product}");
            let Some(settings) = products.get(product) else {
                continue;
            };
            let client_settings = settings
                .client_settings(product)
                .map_err(|invalid| invalid.within(&section))?;
            let client = atlassian::Client::new(client_settings)
                .map_err(|error| Invalid::new(&section, error.to_string()))?;
            product_clients.push((product, client));
        }
        Ok(Connections {
            keycloak: keycloak_clients,
            products: product_clients,
        })
    }

    /// Every target, in the order they are checked.
    pub fn targets(&self) -> Vec<String> {
        self.keycloak
            .iter()
            .map(|(name, _)| format!("keycloak:{name}"))
            .chain(
                self.products
                    .iter()
                    .map(|(product, _)| product.as_str().to_owned()),
            )
            .collect()
    }

    /// Checks `targets` (every one when empty), at once.
    pub async fn check(
        &self,
        targets: &[String],
    ) -> Result<Vec<v1::ConnectionCheck>, ConnectionsError> {
        let known = self.targets();
        if known.is_empty() {
            return Err(ConnectionsError::NothingConfigured);
        }
        for target in targets {
            if !known.contains(target) {
                return Err(ConnectionsError::UnknownTarget {
                    target: target.clone(),
                    known: known.join(", "),
                });
            }
        }
        let wanted = |target: &str| targets.is_empty() || targets.iter().any(|t| t == target);
        let keycloak_checks = self
            .keycloak
            .iter()
            .filter(|(name, _)| wanted(&format!("keycloak:{name}")))
            .map(|(name, client)| async move {
                let target = format!("keycloak:{name}");
                match tokio::time::timeout(CHECK_TIMEOUT, client.check()).await {
                    Ok(Ok(report)) => v1::ConnectionCheck {
                        target,
                        ok: true,
                        message: format!(
                            "realm {}: the token and every role the fetch needs work",
                            report.realm
                        ),
                        details: [
                            ("realm".to_owned(), report.realm),
                            ("users".to_owned(), report.users.to_string()),
                            ("groups".to_owned(), report.groups.to_string()),
                            ("events".to_owned(), events_readiness(client).await),
                        ]
                        .into(),
                    },
                    Ok(Err(error)) => failed(target, &error),
                    Err(_) => timed_out(target),
                }
            });
        let product_checks = self
            .products
            .iter()
            .filter(|(product, _)| wanted(product.as_str()))
            .map(|(product, client)| async move {
                let target = product.as_str().to_owned();
                match tokio::time::timeout(CHECK_TIMEOUT, client.test_connection()).await {
                    Ok(Ok(info)) => {
                        let mut details = BTreeMap::new();
                        if let Some(version) = info.version {
                            details.insert("version".to_owned(), version);
                        }
                        if let Some(user) = info.user {
                            details.insert("user".to_owned(), user);
                        }
                        let message = match &info.permission {
                            Some(permission) => {
                                details.insert("permission".to_owned(), permission.clone());
                                format!(
                                    "reachable, the credentials are accepted, and the account \
                                     holds {permission}, which the writes need"
                                )
                            }
                            None => "reachable, and the credentials are accepted; this version \
                                     has no read that proves the administrator rights the \
                                     writes need"
                                .to_owned(),
                        };
                        v1::ConnectionCheck {
                            target,
                            ok: true,
                            message,
                            details: details.into_iter().collect(),
                        }
                    }
                    Ok(Err(error)) => failed(target, &error),
                    Err(_) => timed_out(target),
                }
            });
        let (mut checks, product_checks) = futures::future::join(
            futures::future::join_all(keycloak_checks),
            futures::future::join_all(product_checks),
        )
        .await;
        checks.extend(product_checks);
        Ok(checks)
    }
}

fn failed(target: String, error: &dyn std::error::Error) -> v1::ConnectionCheck {
    let message = telemetry::error_chain(error);
    tracing::warn!(target = %target, error = %message, "A connection check failed.");
    v1::ConnectionCheck {
        target,
        ok: false,
        message,
        details: Default::default(),
    }
}

fn timed_out(target: String) -> v1::ConnectionCheck {
    v1::ConnectionCheck {
        target,
        ok: false,
        message: format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
        details: Default::default(),
    }
}

/// Whether `client`'s realm could be followed by its events: "ready", or what it lacks
/// and how to turn it on. Informational: full syncs need none of it, so it never fails
/// the check.
async fn events_readiness(client: &keycloak::client::Client) -> String {
    match tokio::time::timeout(CHECK_TIMEOUT, client.check_events()).await {
        Ok(Ok(problems)) if problems.is_empty() => {
            "ready: the realm saves the admin events (with details) and the user events \
             event-driven sync reads"
                .to_owned()
        }
        Ok(Ok(problems)) => format!("not ready: {}", problems.join("; ")),
        Ok(Err(keycloak::Error::MissingRole { role, .. })) => format!(
            "unknown: the service account lacks the `realm-management` role `{role}`, which \
             reading the realm's events needs"
        ),
        Ok(Err(error)) => format!("unknown: {}", telemetry::error_chain(&error)),
        Err(_) => "unknown: the realm's events settings were not read in time".to_owned(),
    }
}
