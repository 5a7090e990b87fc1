//! The settings of one Keycloak connector (one realm), and their validation, which does no
//! IO.

use std::time::Duration;

use ::config::{Invalid, Secret};
use serde::Deserialize;

/// Largest page the fetch asks for: Keycloak has no cap, and huge pages of full user
/// representations time out or come back truncated (keycloak#26884, #52033).
pub const MAX_PAGE_SIZE: u32 = 500;

/// How keysync reaches one realm.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeycloakSettings {
    /// Keycloak's base URL, up to and including its relative path, for example
    /// `https://sso.example.org` or `https://sso.example.org/auth` (Keycloak ≤ 16, or
    /// `--http-relative-path=/auth`). The admin API is `{endpoint}/admin/realms/{realm}`.
    pub endpoint: String,
    /// The realm to read; the client authenticates in this realm too.
    pub realm: String,
    /// A confidential client with "Service accounts roles" enabled whose service account
    /// holds the `realm-management` role `view-users` (which implies `query-groups`).
    pub client_id: String,
    /// The client's secret; set `client_secret_file` to read it from a file.
    pub client_secret: Secret,
    /// Users, groups and members per request: 1 to 500. Default: 500. Every `/users`
    /// page costs Keycloak a sort of the whole realm by username (offset paging), so few
    /// big pages read a large realm fastest; past 500 the full representation gets slower
    /// per user and risks the transaction timeout (keycloak#52033).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Requests in flight at once: 1 to 64. Default: 4. More gains little: each page
    /// keeps a Keycloak worker busy with the sort above (see `make bench-fetch`).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Timeout of one request, in seconds: 1 to 600. Default: 30.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
    /// Retries of a request that failed with a 5xx, a timeout, a transport error or a
    /// truncated body, with exponential backoff: 0 to 10. Default: 4.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Full group paths (`/staff`). When set, only members of these groups and of their
    /// subgroups are fetched (with all their memberships, and the whole group tree)
    /// instead of every user of the realm. Default: empty, the whole realm.
    #[serde(default)]
    pub required_groups: Vec<String>,
}

fn default_page_size() -> u32 {
    500
}

fn default_concurrency() -> usize {
    4
}

fn default_timeout_seconds() -> u64 {
    30
}

fn default_retries() -> u32 {
    4
}

impl KeycloakSettings {
    /// Settings with every optional field at its default.
    pub fn new(endpoint: &str, realm: &str, client_id: &str, client_secret: Secret) -> Self {
        KeycloakSettings {
            endpoint: endpoint.to_owned(),
            realm: realm.to_owned(),
            client_id: client_id.to_owned(),
            client_secret,
            page_size: default_page_size(),
            concurrency: default_concurrency(),
            timeout_seconds: default_timeout_seconds(),
            retries: default_retries(),
            required_groups: Vec::new(),
        }
    }

    /// Checks every field; no IO, no await. Keys in errors are relative to this struct.
    pub fn validate(&self) -> Result<(), Invalid> {
        let endpoint = url::Url::parse(&self.endpoint)
            .map_err(|error| Invalid::new("endpoint", format!("not a URL: {error}")))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(Invalid::new("endpoint", "must be an http or https URL"));
        }
        if endpoint.query().is_some() || endpoint.fragment().is_some() {
            return Err(Invalid::new(
                "endpoint",
                "must not have a query or a fragment",
            ));
        }
        if self.realm.trim().is_empty() {
            return Err(Invalid::new("realm", "must not be empty"));
        }
        if self.client_id.trim().is_empty() {
            return Err(Invalid::new("client_id", "must not be empty"));
        }
        if self.client_secret.expose().is_empty() {
            return Err(Invalid::new(
                "client_secret",
                "must not be empty (or set client_secret_file)",
            ));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            return Err(Invalid::new(
                "page_size",
                format!("must be 1 to {MAX_PAGE_SIZE}, not {}", self.page_size),
            ));
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err(Invalid::new(
                "concurrency",
                format!("must be 1 to 64, not {}", self.concurrency),
            ));
        }
        if !(1..=600).contains(&self.timeout_seconds) {
            return Err(Invalid::new(
                "timeout_seconds",
                format!("must be 1 to 600, not {}", self.timeout_seconds),
            ));
        }
        if self.retries > 10 {
            return Err(Invalid::new(
                "retries",
                format!("must be 0 to 10, not {}", self.retries),
            ));
        }
        for (idx, path) in self.required_groups.iter().enumerate() {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(Invalid::new(
                    &format!("required_groups[{idx}]"),
                    format!("must be a full group path like `/staff`, not `{path}`"),
                ));
            }
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> KeycloakSettings {
        KeycloakSettings::new(
            "http://127.0.0.1:8080/auth",
            "corp",
            "keysync",
            Secret::new("s"),
        )
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(settings().validate(), Ok(()));
    }

    #[test]
    fn page_size_out_of_bounds_is_invalid() {
        for page_size in [0, MAX_PAGE_SIZE + 1] {
            let invalid = KeycloakSettings {
                page_size,
                ..settings()
            };
            let error = invalid.validate().expect_err("out of bounds");
            assert_eq!(error.key(), "page_size");
        }
    }

    #[test]
    fn endpoint_must_be_an_http_url() {
        for endpoint in ["sso.example.org", "ftp://sso.example.org", "http://x/?a=b"] {
            let invalid = KeycloakSettings {
                endpoint: endpoint.to_owned(),
                ..settings()
            };
            assert_eq!(
                invalid.validate().expect_err(endpoint).key(),
                "endpoint",
                "{endpoint}"
            );
        }
    }

    #[test]
    fn required_group_must_be_a_full_path() {
        let invalid = KeycloakSettings {
            required_groups: vec!["/staff".to_owned(), "devs".to_owned()],
            ..settings()
        };
        assert_eq!(
            invalid.validate().expect_err("relative").key(),
            "required_groups[1]"
        );
    }

    #[test]
    fn secret_is_not_in_debug_output() {
        let printed = format!(
            "{:?}",
            KeycloakSettings {
                client_secret: Secret::new("hunter2"),
                ..settings()
            }
        );
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
