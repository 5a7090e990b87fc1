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
    /// PEM certificates (a CA bundle) trusted as roots besides the system's, for a Keycloak
    /// whose certificate a private CA signed; set `ca_file` to read them from a file (a CA
    /// bundle is public: its file is not checked for permissions). Default: none.
    #[serde(default)]
    pub ca: Option<String>,
    /// `[keycloak.<name>.events]`: event-driven sync (#16). Default: off.
    #[serde(default)]
    pub events: EventsSettings,
}

/// `[keycloak.<name>.events]`: whether the fetcher follows the realm's admin and user
/// events, and how often. Following needs the realm to record them (`eventsEnabled`,
/// `adminEventsEnabled` with details) and the role `view-events`; every burst of events
/// becomes an event run that reads again only what they named.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSettings {
    /// Whether the fetcher follows this connector's events. Default: false; full syncs
    /// (the schedule, by hand) are the only runs then.
    #[serde(default)]
    pub enabled: bool,
    /// How long the follower waits between two reads of the events, in milliseconds:
    /// 100 to 60000. Default: 1000. Each read is two small requests to Keycloak.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How long the follower keeps reading after the first event of a burst, so a burst
    /// (a user created, then added to groups) becomes one run, in milliseconds: 0 to
    /// 10000. Default: 500.
    #[serde(default = "default_batch_window_ms")]
    pub batch_window_ms: u64,
}

impl Default for EventsSettings {
    fn default() -> Self {
        EventsSettings {
            enabled: false,
            poll_interval_ms: default_poll_interval_ms(),
            batch_window_ms: default_batch_window_ms(),
        }
    }
}

impl EventsSettings {
    /// Checks every field; keys in errors are relative to the connector
    /// (`events.poll_interval_ms`).
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(100..=60_000).contains(&self.poll_interval_ms) {
            return Err(Invalid::new(
                "events.poll_interval_ms",
                format!("must be 100 to 60000, not {}", self.poll_interval_ms),
            ));
        }
        if self.batch_window_ms > 10_000 {
            return Err(Invalid::new(
                "events.batch_window_ms",
                format!("must be 0 to 10000, not {}", self.batch_window_ms),
            ));
        }
        Ok(())
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub fn batch_window(&self) -> Duration {
        Duration::from_millis(self.batch_window_ms)
    }
}

fn default_poll_interval_ms() -> u64 {
    1000
}

fn default_batch_window_ms() -> u64 {
    500
}

/// The certificates of a PEM bundle, or why it is not one; the reason is for an error that
/// names the key (`ca_file`).
pub fn parse_ca_bundle(pem: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let certificates = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|error| format!("not a PEM certificate bundle: {error}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)".to_owned());
    }
    Ok(certificates)
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
            ca: None,
            events: EventsSettings::default(),
        }
    }

    /// Checks every field; no IO, no await. Keys in errors are relative to this struct.
    pub fn validate(&self) -> Result<(), Invalid> {
        let endpoint = url::Url::parse(&self.endpoint)
            .map_err(|error| Invalid::new("endpoint", format!("not a URL: {error}")))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(Invalid::new("endpoint", "must be an http or https URL"));
        }
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            // It would be printed in errors, logs and `Debug`: credentials go in
            // `client_secret`.
            return Err(Invalid::new(
                "endpoint",
                "must not carry a user or password (set `client_secret_file`)",
            ));
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
        self.ca_certificates()?;
        self.events.validate()?;
        Ok(())
    }

    /// The certificates of `ca`, none when it is not set; a bad bundle is an error that
    /// names `ca_file`.
    pub fn ca_certificates(&self) -> Result<Vec<reqwest::Certificate>, Invalid> {
        match &self.ca {
            None => Ok(Vec::new()),
            Some(pem) => parse_ca_bundle(pem).map_err(|reason| Invalid::new("ca_file", reason)),
        }
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
        for endpoint in [
            "sso.example.org",
            "ftp://sso.example.org",
            "http://x/?a=b",
            "https://admin:pw@sso.example.org",
        ] {
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
    fn events_are_off_by_default_and_their_bounds_name_the_key() {
        let defaults = settings().events;
        assert!(!defaults.enabled);
        assert_eq!(defaults.poll_interval(), Duration::from_millis(1000));
        assert_eq!(defaults.batch_window(), Duration::from_millis(500));
        for (poll_interval_ms, batch_window_ms, key) in [
            (99, 500, Some("events.poll_interval_ms")),
            (60_001, 500, Some("events.poll_interval_ms")),
            (100, 10_001, Some("events.batch_window_ms")),
            (100, 0, None),
            (60_000, 10_000, None),
        ] {
            let mut with_events = settings();
            with_events.events = EventsSettings {
                enabled: true,
                poll_interval_ms,
                batch_window_ms,
            };
            let found = with_events
                .validate()
                .err()
                .map(|error| error.key().to_owned());
            assert_eq!(
                found.as_deref(),
                key,
                "{poll_interval_ms} ms, {batch_window_ms} ms"
            );
        }
    }

    #[test]
    fn events_section_takes_defaults_and_refuses_unknown_keys() {
        let parse = |json: &str| -> Result<EventsSettings, String> {
            #[derive(Deserialize)]
            struct Wrapper {
                events: EventsSettings,
            }
            serde_json::from_str::<Wrapper>(json)
                .map(|wrapper| wrapper.events)
                .map_err(|error| error.to_string())
        };
        assert_eq!(
            parse(r#"{"events": {"enabled": true}}"#),
            Ok(EventsSettings {
                enabled: true,
                ..EventsSettings::default()
            })
        );
        let unknown = parse(r#"{"events": {"enabled": true, "poll_ms": 5}}"#);
        assert!(
            unknown
                .as_ref()
                .is_err_and(|error| error.contains("poll_ms")),
            "{unknown:?}"
        );
    }

    /// A self-signed test CA (`openssl req -x509`, EC P-256), valid until 2126.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBjDCCATGgAwIBAgIUfW1ZA+rv57RXl0MtFGYHLgXtfEAwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPa2V5c3luYyB0ZXN0IENBMCAXDTI2MTIwMjA5MjQyNloYDzIx
MjYxMTA4MDkyNDI2WjAaMRgwFgYDVQQDDA9rZXlzeW5jIHRlc3QgQ0EwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAASO/BiblT94IXjOB0eEDWdcPl96iXM9MjlqdQqQ
PG0MEL81Z0R+Sr823mJKCHPVM7EIAXkUnjPexh5WYLcfHp8Jo1MwUTAdBgNVHQ4E
FgQUvhUAF8Wx9hMYUf8Yw/FCrViIC0wwHwYDVR0jBBgwFoAUvhUAF8Wx9hMYUf8Y
w/FCrViIC0wwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAzKwA
GE0Ux/C1cARhafH8vJk0HsSsXTlS4Ry85SGaflACIQDOAGYGAMqAx3dmRlptcdlB
S3yAlMPhTl7tsVVVfOUh/A==
-----END CERTIFICATE-----";

    #[test]
    fn a_ca_bundle_is_taken_and_a_bad_one_names_ca_file() {
        let with_ca = KeycloakSettings {
            ca: Some(TEST_CA.to_owned()),
            ..settings()
        };
        assert_eq!(with_ca.validate(), Ok(()));
        assert_eq!(with_ca.ca_certificates().expect("one").len(), 1);
        crate::client::Client::new(with_ca).expect("a client trusting the CA");
        for bad in [
            "not a certificate",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----",
        ] {
            let invalid = KeycloakSettings {
                ca: Some(bad.to_owned()),
                ..settings()
            };
            assert_eq!(invalid.validate().expect_err(bad).key(), "ca_file", "{bad}");
            let Err(error) = crate::client::Client::new(invalid) else {
                panic!("a bad CA bundle was taken: {bad}");
            };
            assert!(error.to_string().contains("`ca_file`"), "{error}");
        }
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
