//! The control plane's settings: the sections of the shared configuration file it reads,
//! their defaults, and their checks.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, str::FromStr, time::Duration};

use config::{Invalid, Secret};
use jiff::SignedDuration;
use serde::{Deserialize, Deserializer};

/// `[bus]`: where NATS is and the prefix of every subject, stream and bucket; the same
/// section every service reads.
pub use bus::BusSettings;

/// `[health]`: plain HTTP `GET /healthz` (the process runs) and `GET /readyz` (it is
/// connected to NATS and follows its events), for orchestrators' probes; the same section
/// every service reads (see `bus::health`).
pub use bus::health::HealthSettings;

pub use crate::schedule::{
    ConnectorSchedule, ConnectorScheduleSettings, ScheduleSettings, parse_cron,
};

/// The sections of the shared configuration file the control plane reads: `[bus]`,
/// `[control_plane]` and `[health]`; `[keycloak.*]` for the names of the connectors (runs
/// and schedules are per connector) and, with `[products.*]`, for `TestConnection`
/// (documented with the fetcher and the appliers, which use them).
///
/// Every service reads the same file, so the top level leaves the other services' sections
/// to them; inside the sections read here, an unknown key is an error
/// (`keysync config check` checks the whole file, sections included).
///
/// ```toml
/// [bus]
/// nats_url = "nats://127.0.0.1:4222"    # default
/// prefix = "keysync"                    # default
///
/// [control_plane]
/// listen = "127.0.0.1:50051"            # default
/// endpoint = "http://127.0.0.1:50051"   # default; where the appliers call the API
/// token_file = "/run/secrets/keysync-api/token"   # required (or `token`): the operator's
/// service_token_file = "/run/secrets/keysync-service/token"   # the services'; optional
/// # tokens_file = "/run/secrets/keysync-api/tokens"   # more, one `<role> <token>` a line
/// hold_expiry = "24h"                   # default; or a number of seconds
/// # fetch_deadline_seconds = 1800       # default; then a run still fetching FAILS
/// # plan_deadline_seconds = 600         # default
/// # apply_deadline_seconds = 600        # default; + apply_deadline_per_change_ms (100)
/// # deadline_sweep_seconds = 5          # default; how often replicas look
/// # absent_applier_seconds = 60         # default; then a run waiting on a product with no
/// #                                     # running applier FAILS
/// # TLS of the API: required to listen beyond loopback, unless `allow_plaintext = true`.
/// # tls_cert_file = "/run/secrets/keysync-tls/tls.crt"   # PEM chain, with tls_key_file
/// # tls_key_file = "/run/secrets/keysync-tls/tls.key"    # PEM private key
/// # tls_client_ca_file = "/run/secrets/keysync-tls/client-ca.crt"   # mutual TLS
/// # ca_file = "/run/secrets/keysync-tls/ca.crt"   # the CA clients trust for `endpoint`
/// # allow_plaintext = false             # default
///
/// [control_plane.schedule]               # every connector's schedule, unless it has its own
/// enabled = false                       # default: off until an admin turns it on
/// cron = "0 2 * * *"                    # default: daily at 02:00
/// timezone = "UTC"                      # default; an IANA name such as "Europe/Berlin"
///
/// [control_plane.schedule.connectors.corp]   # optional: one connector's own schedule;
/// enabled = true                        # each key optional, else the section above's
/// cron = "30 1 * * 1-5"
/// timezone = "Europe/Berlin"
///
/// [health]
/// # listen = "0.0.0.0:8080"             # default: not served
/// ```
#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    /// `[bus]`: where NATS is, and the prefix of every subject, stream and bucket.
    #[serde(default)]
    pub bus: BusSettings,
    /// `[control_plane]`: the API and the schedule.
    pub control_plane: ControlPlaneSettings,
    /// `[health]`: the HTTP liveness and readiness endpoints.
    #[serde(default)]
    pub health: HealthSettings,
    /// `[keycloak.<connector>]`: the connectors (their names are those of runs and of
    /// `[control_plane.schedule.connectors.<name>]`), and the realms `TestConnection` checks.
    #[serde(default)]
    pub keycloak: BTreeMap<String, keycloak::config::KeycloakSettings>,
    /// `[products.<name>]`: the products `TestConnection` checks, when enabled.
    #[serde(default)]
    pub products: crate::products::ProductsSettings,
}

/// `[control_plane]`: the gRPC control API and the schedule.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneSettings {
    /// Where the gRPC API listens. Default: `127.0.0.1:50051`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The operator's bearer token: the CLI's, allowed every call of the API (health and
    /// reflection need none). Set `token_file` to read it from a file when the service
    /// starts; one trailing newline is dropped. Required; at least
    /// [`MIN_TOKEN_BYTES`] bytes.
    pub token: Secret,
    /// The services' bearer token: the appliers send it, and it allows only `GetRun` and
    /// `ReportResults` (see `control_plane::auth::ACCESS`). Set `service_token_file` to
    /// read it from a file. At least [`MIN_TOKEN_BYTES`] bytes, and not the operator's.
    /// Default: none; the appliers then send `token`, which allows them everything.
    #[serde(default)]
    pub service_token: Option<Secret>,
    /// More tokens, each with its role: one `operator <token>` or `service <token>` a line
    /// (blank lines and `#` comments ignored); set `tokens_file`. Every token listed is
    /// accepted alongside `token` and `service_token`, so a new token can be handed out
    /// before the old one is withdrawn (see SECURITY.md, "Rotating"). Default: none.
    #[serde(default)]
    pub tokens: Option<Secret>,
    /// Where the other services reach this API (the appliers report results there), for
    /// example `https://keysync-control-plane:50051`. The control plane itself does not use
    /// it, but checks that it serves it: `https://` exactly when TLS is on. Default:
    /// `http://127.0.0.1:50051`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// The certificate chain (PEM) the API serves TLS with; set `tls_cert_file` to read
    /// it from a file, with `tls_key_file`. Default: none (plaintext).
    #[serde(default)]
    pub tls_cert: Option<String>,
    /// The private key (PEM) of `tls_cert`; set `tls_key_file`.
    #[serde(default)]
    pub tls_key: Option<Secret>,
    /// With TLS on, the CA (PEM) whose certificates clients must present (mutual TLS); set
    /// `tls_client_ca_file`. Default: none, clients show no certificate.
    #[serde(default)]
    pub tls_client_ca: Option<String>,
    /// The CA (PEM) the clients of the API (the appliers) trust for an `https://`
    /// `endpoint`; set `ca_file`. The control plane does not use it. Default: none, the
    /// system's roots.
    #[serde(default)]
    pub ca: Option<String>,
    /// Serve plaintext gRPC on an address other than loopback. Default: `false`: without
    /// `tls_cert_file`, `listen` must be a loopback address, since tokens and results
    /// would cross the network in clear text.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// How long a run the safety limit holds waits for `keysync approve`: once it has
    /// expired, approving is refused and the run is cancelled ("the hold expired at ..."),
    /// by the approval or by the control plane's sweep, which looks every quarter of this,
    /// at most every minute. A person reviews a plan against the directory of the moment;
    /// a day later the directory has moved on, so a new run is the safe way forward.
    /// Either a duration such as `"24h"`, `"90m"` or `"1h 30m"`, or a number of seconds.
    /// Must be more than 0. Default: `"24h"`.
    #[serde(
        default = "default_hold_expiry",
        deserialize_with = "deserialize_duration"
    )]
    pub hold_expiry: SignedDuration,
    /// Seconds a run may be REQUESTED or FETCHING, from its start, before the control plane
    /// fails it ("runs always end": `control_plane::deadlines`). Default: 1800.
    #[serde(default = "number::<1800>")]
    pub fetch_deadline_seconds: u64,
    /// Seconds a run may be PLANNING. Default: 600.
    #[serde(default = "number::<600>")]
    pub plan_deadline_seconds: u64,
    /// Seconds a run may be APPLYING, plus `apply_deadline_per_change_ms` per planned
    /// change (HELD has `hold_expiry` instead). Default: 600.
    #[serde(default = "number::<600>")]
    pub apply_deadline_seconds: u64,
    /// Milliseconds each planned change adds to the apply deadline. Default: 100.
    #[serde(default = "number::<100>")]
    pub apply_deadline_per_change_ms: u64,
    /// How often each replica looks for runs past their deadline, in seconds. Default: 5.
    #[serde(default = "number::<5>")]
    pub deadline_sweep_seconds: u64,
    /// Seconds an APPLYING run waits on a product none of whose applier replicas is
    /// running (each announces itself every 10 s; `bus::liveness`) before it fails with
    /// that reason, long before its apply deadline. Default: 60.
    #[serde(default = "number::<60>")]
    pub absent_applier_seconds: u64,
    /// When syncs start by themselves.
    #[serde(default)]
    pub schedule: ScheduleSettings,
}

impl Settings {
    /// Loads the settings from the optional TOML `file` and the `KEYSYNC_*` environment
    /// (see the `config` crate), then validates them.
    pub fn load(file: Option<&Path>) -> Result<Settings, config::Error> {
        let settings: Settings = config::load(file)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value; no IO. Keys in errors are full paths (`control_plane.schedule.cron`).
    pub fn validate(&self) -> Result<(), Invalid> {
        self.bus.validate().map_err(|error| error.within("bus"))?;
        self.control_plane
            .validate()
            .map_err(|error| error.within("control_plane"))?;
        for (name, connector) in &self.keycloak {
            connector
                .validate()
                .map_err(|error| error.within(&format!("keycloak.{name}")))?;
        }
        if !self.keycloak.is_empty() {
            let configured = || {
                self.keycloak
                    .keys()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            for name in self.control_plane.schedule.connectors.keys() {
                if !self.keycloak.contains_key(name) {
                    return Err(Invalid::new(
                        &format!("control_plane.schedule.connectors.{name}"),
                        format!(
                            "no connector `{name}`: a schedule is for a [keycloak.<name>] \
                             section, and the configured ones are {}",
                            configured()
                        ),
                    ));
                }
            }
        }
        for product in self.products.enabled() {
            if let Some(settings) = self.products.get(product) {
                settings
                    .client_settings(product)
                    .map_err(|error| error.within(&format!("products.{product}")))?;
            }
        }
        Ok(())
    }

    /// The schedule of every configured connector (`[keycloak.<name>]`), in name order, or
    /// of the one default connector (the empty name) when none is configured; disabled ones
    /// included. See [`ScheduleSettings::for_connector`].
    pub fn schedules(&self) -> Vec<ConnectorSchedule> {
        let schedule = &self.control_plane.schedule;
        if self.keycloak.is_empty() {
            return vec![schedule.default_schedule()];
        }
        self.keycloak
            .keys()
            .map(|name| schedule.for_connector(name))
            .collect()
    }
}

impl ControlPlaneSettings {
    /// Checks the token and the schedule; no IO (the time zone is looked up when the
    /// service starts). Keys are relative to `[control_plane]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_token("token", &self.token)?;
        let listed = self.listed_tokens()?;
        for (index, (role, token)) in listed.iter().enumerate() {
            let key = format!("tokens (line of the {role:?} token {})", index + 1);
            check_token(&key, token)?;
            let taken = std::iter::once((ApiRole::Operator, &self.token))
                .chain(
                    self.service_token
                        .iter()
                        .map(|token| (ApiRole::Service, token)),
                )
                .chain(listed[..index].iter().map(|(role, token)| (*role, token)));
            for (other_role, other) in taken {
                if other.expose() == token.expose() && other_role != *role {
                    return Err(Invalid::new(
                        "tokens",
                        "gives one token two roles; each token has one",
                    ));
                }
            }
        }
        if let Some(service_token) = &self.service_token {
            check_token("service_token", service_token)?;
            if service_token.expose() == self.token.expose() {
                return Err(Invalid::new(
                    "service_token",
                    "must differ from `token`: the operator's token allows every call",
                ));
            }
        }
        let endpoint = self.endpoint.trim();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(Invalid::new(
                "endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        self.validate_tls()?;
        if !self.hold_expiry.is_positive() {
            return Err(Invalid::new(
                "hold_expiry",
                format!(
                    "must be more than 0 (found {:#}), for example \"24h\"",
                    self.hold_expiry
                ),
            ));
        }
        for (key, value) in [
            ("fetch_deadline_seconds", self.fetch_deadline_seconds),
            ("plan_deadline_seconds", self.plan_deadline_seconds),
            ("apply_deadline_seconds", self.apply_deadline_seconds),
            ("deadline_sweep_seconds", self.deadline_sweep_seconds),
            ("absent_applier_seconds", self.absent_applier_seconds),
        ] {
            if value == 0 {
                return Err(Invalid::new(key, "must be at least 1 (seconds)"));
            }
        }
        self.schedule
            .validate()
            .map_err(|error| error.within("schedule"))?;
        Ok(())
    }

    /// Whether the API serves TLS (`tls_cert` and `tls_key` are set).
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// Whether the API serves plaintext on an address beyond loopback, which
    /// `allow_plaintext` allows; the control plane warns about it when it starts.
    pub fn plaintext_beyond_loopback(&self) -> bool {
        !self.tls() && !self.listen.ip().is_loopback()
    }

    /// TLS: the certificate and its key together, PEM that looks like PEM (it is parsed
    /// when the service starts), plaintext only on loopback unless allowed, and an
    /// `endpoint` that the API serves: `https://` exactly when TLS is on.
    fn validate_tls(&self) -> Result<(), Invalid> {
        let pem = |key: &str, value: &str, label: &str| {
            if value.contains("-----BEGIN ") && value.contains(label) {
                Ok(())
            } else {
                Err(Invalid::new(
                    key,
                    format!("is not PEM with a {label} (set `{key}_file` to a PEM file)"),
                ))
            }
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                pem("tls_cert", cert, "CERTIFICATE")?;
                pem("tls_key", key.expose(), "PRIVATE KEY")?;
            }
            (Some(_), None) => {
                return Err(Invalid::new(
                    "tls_key",
                    "is missing: `tls_cert_file` needs `tls_key_file`",
                ));
            }
            (None, Some(_)) => {
                return Err(Invalid::new(
                    "tls_cert",
                    "is missing: `tls_key_file` needs `tls_cert_file`",
                ));
            }
            (None, None) => {}
        }
        if let Some(client_ca) = &self.tls_client_ca {
            if !self.tls() {
                return Err(Invalid::new(
                    "tls_client_ca",
                    "needs TLS: set `tls_cert_file` and `tls_key_file` too",
                ));
            }
            pem("tls_client_ca", client_ca, "CERTIFICATE")?;
        }
        if let Some(ca) = &self.ca {
            pem("ca", ca, "CERTIFICATE")?;
        }
        if self.plaintext_beyond_loopback() && !self.allow_plaintext {
            return Err(Invalid::new(
                "listen",
                format!(
                    "{} is not a loopback address, and the API would serve plaintext: set \
                     `tls_cert_file` and `tls_key_file`, or `allow_plaintext = true` when \
                     a proxy or a service mesh encrypts the traffic",
                    self.listen
                ),
            ));
        }
        let https = self.endpoint.trim().starts_with("https://");
        if https && !self.tls() {
            return Err(Invalid::new(
                "endpoint",
                "is https://, but the API serves plaintext: set `tls_cert_file` and \
                 `tls_key_file`, or an http:// endpoint",
            ));
        }
        if !https && self.tls() {
            return Err(Invalid::new(
                "endpoint",
                "is http://, but the API serves TLS: the appliers could not reach it; \
                 use https://",
            ));
        }
        if !https && self.ca.is_some() {
            return Err(Invalid::new(
                "ca",
                "is for an https:// endpoint, and `endpoint` is http://",
            ));
        }
        Ok(())
    }

    /// [`ControlPlaneSettings::hold_expiry`] as a [`Duration`]; zero for a negative value,
    /// which [`ControlPlaneSettings::validate`] refuses.
    pub fn hold_expiry(&self) -> Duration {
        Duration::try_from(self.hold_expiry).unwrap_or(Duration::ZERO)
    }
}

/// The shortest bearer token the control plane accepts, in bytes: 32 random bytes, or
/// for example `openssl rand -hex 32` (64 bytes).
pub const MIN_TOKEN_BYTES: usize = 32;

/// Checks one bearer token: one word of printable ASCII, at least [`MIN_TOKEN_BYTES`]
/// bytes. Keys in errors are `key`.
/// The role a bearer token gives on the control API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiRole {
    /// The CLI's: every call.
    Operator,
    /// The planner's and the appliers': `GetRun` and `ReportResults`.
    Service,
}

impl ControlPlaneSettings {
    /// Every accepted token with its role: `token`, `service_token`, then the lines of
    /// `tokens`. A line [`ControlPlaneSettings::validate`] refuses is left out.
    pub fn role_tokens(&self) -> Vec<(ApiRole, Secret)> {
        let mut tokens = vec![(ApiRole::Operator, self.token.clone())];
        tokens.extend(
            self.service_token
                .iter()
                .map(|token| (ApiRole::Service, token.clone())),
        );
        tokens.extend(self.listed_tokens().unwrap_or_default());
        tokens
    }

    /// The lines of `tokens`, parsed.
    fn listed_tokens(&self) -> Result<Vec<(ApiRole, Secret)>, Invalid> {
        let Some(text) = &self.tokens else {
            return Ok(Vec::new());
        };
        let mut tokens = Vec::new();
        for (number, line) in text.expose().lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let role = match words.next() {
                Some("operator") => ApiRole::Operator,
                Some("service") => ApiRole::Service,
                _ => {
                    return Err(Invalid::new(
                        "tokens",
                        format!(
                            "line {} must be `operator <token>` or `service <token>`",
                            number + 1
                        ),
                    ));
                }
            };
            let (Some(token), None) = (words.next(), words.next()) else {
                return Err(Invalid::new(
                    "tokens",
                    format!("line {} must hold one role and one token", number + 1),
                ));
            };
            tokens.push((role, Secret::new(token)));
        }
        Ok(tokens)
    }
}

pub fn check_token(key: &str, token: &Secret) -> Result<(), Invalid> {
    let token = token.expose();
    if token.trim().is_empty() {
        return Err(Invalid::new(
            key,
            format!("must not be empty (set `{key}_file` to a file that holds it)"),
        ));
    }
    if !token.chars().all(|char| char.is_ascii_graphic()) {
        return Err(Invalid::new(
            key,
            "must be one word of printable ASCII, without spaces or line breaks",
        ));
    }
    if token.len() < MIN_TOKEN_BYTES {
        return Err(Invalid::new(
            key,
            format!(
                "is {} bytes long; a token must have at least {MIN_TOKEN_BYTES} \
                 (for example `openssl rand -hex 32`)",
                token.len()
            ),
        ));
    }
    Ok(())
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

fn default_endpoint() -> String {
    "http://127.0.0.1:50051".to_owned()
}

/// A default number, for serde: `default = "number::<600>"`.
fn number<const N: u64>() -> u64 {
    N
}

fn default_hold_expiry() -> SignedDuration {
    SignedDuration::from_hours(24)
}

/// A duration setting: a number of seconds, or a string jiff reads as a duration (`"24h"`,
/// `"1h 30m"`, `"PT24H"`; digits alone are seconds).
fn deserialize_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SignedDuration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(i64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(seconds) => Ok(SignedDuration::from_secs(seconds)),
        Raw::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

/// Reads a duration as the duration settings take it: `"24h"`, `"90m"`, `"1h 30m"`,
/// `"PT24H"`, or digits alone for seconds.
pub fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(SignedDuration::from_secs(seconds));
    }
    SignedDuration::from_str(text).map_err(|error| {
        format!("`{text}` is not a duration such as \"24h\", \"90m\" or \"1h 30m\" ({error})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-0123456789abcdef-0123456789";

    fn load(toml: &str) -> Result<Settings, config::Error> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).expect("writes the token");
        let file = dir.path().join("keysync.toml");
        let toml = toml.replace("TOKEN_PATH", &token.display().to_string());
        std::fs::write(&file, toml).expect("writes the file");
        Settings::load(Some(&file))
    }

    #[test]
    fn settings_take_their_defaults_and_read_the_token_from_its_file() {
        let settings = load("[control_plane]\ntoken_file = \"TOKEN_PATH\"\n").expect("loads");
        assert_eq!(settings.bus.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(settings.bus.prefix, "keysync");
        let control_plane = &settings.control_plane;
        assert_eq!(control_plane.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(control_plane.token.expose(), TOKEN);
        assert!(control_plane.service_token.is_none());
        assert_eq!(control_plane.endpoint, "http://127.0.0.1:50051");
        assert!(
            !control_plane.schedule.enabled,
            "off until an admin turns it on"
        );
        assert_eq!(control_plane.schedule.cron, "0 2 * * *");
        assert_eq!(control_plane.schedule.timezone, "UTC");
        assert_eq!(control_plane.hold_expiry(), Duration::from_secs(24 * 3600));
        assert!(settings.health.listen.is_none());
        assert!(
            !format!("{settings:?}").contains(TOKEN),
            "the token is in Debug"
        );
    }

    #[test]
    fn a_tokens_file_adds_tokens_with_their_roles_for_rotation() {
        let next_operator = "next-operator-0123456789abcdef-0123456789";
        let next_service = "next-service-0123456789abcdef-01234567890";
        let settings = load(&format!(
            "[control_plane]\ntoken_file = \"TOKEN_PATH\"\n\
             tokens = \"\"\"\n# rotating in December\noperator {next_operator}\n\n\
             service {next_service}\n\"\"\"\n"
        ))
        .expect("loads");
        let tokens: Vec<(ApiRole, String)> = settings
            .control_plane
            .role_tokens()
            .into_iter()
            .map(|(role, token)| (role, token.expose().to_owned()))
            .collect();
        assert_eq!(
            tokens,
            [
                (ApiRole::Operator, TOKEN.to_owned()),
                (ApiRole::Operator, next_operator.to_owned()),
                (ApiRole::Service, next_service.to_owned()),
            ]
        );
        assert!(!format!("{settings:?}").contains(next_operator));

        for (lines, why) in [
            ("admin {next}", "an unknown role"),
            ("service {next} extra", "two tokens on a line"),
            ("service short", "a short token"),
            (
                "service TOKEN_VALUE",
                "the operator token as a service token",
            ),
        ] {
            let lines = lines
                .replace("{next}", next_service)
                .replace("TOKEN_VALUE", TOKEN);
            let error = load(&format!(
                "[control_plane]\ntoken_file = \"TOKEN_PATH\"\ntokens = \"{lines}\"\n"
            ))
            .expect_err(why)
            .to_string();
            assert!(error.contains("control_plane.tokens"), "{why}: {error}");
            assert!(!error.contains(next_service), "{why}: {error}");
        }
    }

    #[test]
    fn other_services_sections_are_left_alone_but_an_unknown_key_here_is_an_error() {
        let shared =
            "[control_plane]\ntoken_file = \"TOKEN_PATH\"\n[planner]\nchange_set_size = 10\n";
        assert!(load(shared).is_ok());
        let typo = "[control_plane]\ntoken_file = \"TOKEN_PATH\"\n[control_plane.schedule]\ncorn = \"* * * * *\"\n";
        let error = load(typo).expect_err("unknown key").to_string();
        assert!(error.contains("control_plane.schedule"), "{error}");
        assert!(error.contains("corn"), "{error}");
    }

    #[test]
    fn a_missing_token_or_a_bad_cron_is_an_error_naming_the_key() {
        let error = load("[control_plane]\nlisten = \"127.0.0.1:1\"\n")
            .expect_err("no token")
            .to_string();
        assert!(error.contains("token"), "{error}");
        let error = load(
            "[control_plane]\ntoken_file = \"TOKEN_PATH\"\n[control_plane.schedule]\ncron = \"not cron\"\n",
        )
        .expect_err("bad cron")
        .to_string();
        assert!(error.contains("control_plane.schedule.cron"), "{error}");
    }

    #[test]
    fn tokens_shorter_than_32_bytes_or_shared_by_both_roles_are_refused_naming_the_key() {
        let service = "service-0123456789abcdef-0123456789";
        let settings = load(&format!(
            "[control_plane]\ntoken_file = \"TOKEN_PATH\"\nservice_token = \"{service}\"\n"
        ))
        .expect("two long, different tokens");
        assert_eq!(
            settings
                .control_plane
                .service_token
                .as_ref()
                .map(Secret::expose),
            Some(service)
        );
        for (keys, key, reason) in [
            (
                "token = \"e2e-api-token-0123456789abcdef\"\n".to_owned(),
                "control_plane.token",
                "at least 32",
            ),
            (
                "token_file = \"TOKEN_PATH\"\nservice_token = \"short\"\n".to_owned(),
                "control_plane.service_token",
                "at least 32",
            ),
            (
                format!("token_file = \"TOKEN_PATH\"\nservice_token = \"{TOKEN}\"\n"),
                "control_plane.service_token",
                "must differ",
            ),
            (
                format!("token = \"{TOKEN} x\"\n"),
                "control_plane.token",
                "one word",
            ),
        ] {
            let error = load(&format!("[control_plane]\n{keys}"))
                .expect_err(&keys)
                .to_string();
            assert!(error.contains(&format!("`{key}`")), "{keys}: {error}");
            assert!(error.contains(reason), "{keys}: {error}");
        }
    }

    #[test]
    fn plaintext_is_for_loopback_and_an_https_endpoint_needs_tls() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n",
        )
        .expect("writes");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nMII=\n-----END PRIVATE KEY-----\n",
        )
        .expect("writes");
        let tls = format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        );
        let with = |keys: &str| {
            load(&format!(
                "[control_plane]\ntoken_file = \"TOKEN_PATH\"\n{keys}"
            ))
        };

        let loopback = with("listen = \"127.0.0.1:50051\"\n").expect("plaintext on loopback");
        assert!(!loopback.control_plane.tls());
        assert!(!loopback.control_plane.plaintext_beyond_loopback());
        let allowed = with("listen = \"0.0.0.0:50051\"\nallow_plaintext = true\n")
            .expect("plaintext allowed");
        assert!(allowed.control_plane.plaintext_beyond_loopback());
        let served = with(&format!(
            "listen = \"0.0.0.0:50051\"\nendpoint = \"https://keysync:50051\"\n{tls}\
             tls_client_ca_file = \"{}\"\nca_file = \"{}\"\n",
            cert.display(),
            cert.display()
        ))
        .expect("TLS beyond loopback");
        assert!(served.control_plane.tls());
        assert!(served.control_plane.tls_client_ca.is_some());
        assert!(
            !format!("{served:?}").contains("PRIVATE KEY"),
            "the key is in Debug"
        );

        for (keys, key, reason) in [
            (
                "listen = \"0.0.0.0:50051\"\n".to_owned(),
                "control_plane.listen",
                "allow_plaintext",
            ),
            (
                "endpoint = \"https://127.0.0.1:50051\"\n".to_owned(),
                "control_plane.endpoint",
                "serves plaintext",
            ),
            (tls.clone(), "control_plane.endpoint", "serves TLS"),
            (
                format!("tls_cert_file = \"{}\"\n", cert.display()),
                "control_plane.tls_key",
                "tls_key_file",
            ),
            (
                format!(
                    "endpoint = \"https://127.0.0.1:50051\"\ntls_cert_file = \"{}\"\n\
                     tls_key_file = \"{}\"\n",
                    key.display(),
                    key.display()
                ),
                "control_plane.tls_cert",
                "CERTIFICATE",
            ),
            (
                format!("tls_client_ca_file = \"{}\"\n", cert.display()),
                "control_plane.tls_client_ca",
                "needs TLS",
            ),
            (
                format!("ca_file = \"{}\"\n", cert.display()),
                "control_plane.ca",
                "https://",
            ),
        ] {
            let error = with(&keys).expect_err(&keys).to_string();
            assert!(error.contains(&format!("`{key}`")), "{keys}: {error}");
            assert!(error.contains(reason), "{keys}: {error}");
        }
    }

    #[test]
    fn hold_expiry_reads_a_duration_or_seconds_and_must_be_positive() {
        for (value, seconds) in [
            ("\"24h\"", 86_400),
            ("\"90m\"", 5_400),
            ("\"1h 30m\"", 5_400),
            ("\"PT2H\"", 7_200),
            ("\"600\"", 600),
            ("3600", 3_600),
        ] {
            let settings = load(&format!(
                "[control_plane]\ntoken_file = \"TOKEN_PATH\"\nhold_expiry = {value}\n"
            ))
            .unwrap_or_else(|error| panic!("{value}: {error}"));
            assert_eq!(
                settings.control_plane.hold_expiry(),
                Duration::from_secs(seconds),
                "{value}"
            );
        }
        for value in ["0", "\"0s\"", "-5", "\"-1h\""] {
            let error = load(&format!(
                "[control_plane]\ntoken_file = \"TOKEN_PATH\"\nhold_expiry = {value}\n"
            ))
            .expect_err(value)
            .to_string();
            assert!(
                error.contains("control_plane.hold_expiry"),
                "{value}: {error}"
            );
            assert!(error.contains("more than 0"), "{value}: {error}");
        }
        let error = load("[control_plane]\ntoken_file = \"TOKEN_PATH\"\nhold_expiry = \"a day\"\n")
            .expect_err("not a duration")
            .to_string();
        assert!(error.contains("control_plane.hold_expiry"), "{error}");
    }

    /// `[keycloak.corp]` and `[keycloak.lab]`, then `schedule` (TOML).
    fn with_connectors(schedule: &str) -> String {
        let mut toml = "[control_plane]\ntoken_file = \"TOKEN_PATH\"\n".to_owned();
        for name in ["corp", "lab"] {
            toml.push_str(&format!(
                "[keycloak.{name}]\nendpoint = \"http://127.0.0.1:9\"\nrealm = \"{name}\"\n\
                 client_id = \"keysync\"\nclient_secret = \"s\"\n"
            ));
        }
        toml.push_str(schedule);
        toml
    }

    #[test]
    fn a_connector_takes_each_schedule_key_it_does_not_set_from_the_default_section() {
        let settings = load(&with_connectors(
            "[control_plane.schedule]\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\n\
             [control_plane.schedule.connectors.corp]\nenabled = true\ncron = \"*/5 * * * * *\"\n",
        ))
        .expect("loads");
        let schedules = settings.schedules();
        let [corp, lab] = schedules.as_slice() else {
            panic!("one schedule per connector: {schedules:#?}");
        };
        assert_eq!(corp.connector, "corp");
        assert!(corp.enabled, "set for corp");
        assert_eq!(corp.cron, "*/5 * * * * *", "corp's own");
        assert_eq!(corp.timezone, "Europe/Berlin", "the default section's");
        assert_eq!(lab.connector, "lab");
        assert!(
            !lab.enabled,
            "nothing fires unless enabled: lab keeps the default, off"
        );
        assert_eq!(lab.cron, "0 3 * * *");
        assert_eq!(lab.timezone, "Europe/Berlin");
        assert_eq!(
            *lab,
            settings.control_plane.schedule.for_connector("lab"),
            "a connector without a section has the default section's schedule"
        );

        // Enabled by default, and off for one connector.
        let settings = load(&with_connectors(
            "[control_plane.schedule]\nenabled = true\n\
             [control_plane.schedule.connectors.lab]\nenabled = false\n",
        ))
        .expect("loads");
        let enabled: Vec<(String, bool)> = settings
            .schedules()
            .into_iter()
            .map(|schedule| (schedule.connector, schedule.enabled))
            .collect();
        assert_eq!(
            enabled,
            [("corp".to_owned(), true), ("lab".to_owned(), false)]
        );

        // A connector's own cron, but not enabled anywhere: still off.
        let settings = load(&with_connectors(
            "[control_plane.schedule.connectors.corp]\ncron = \"* * * * * *\"\n",
        ))
        .expect("loads");
        assert!(
            settings
                .schedules()
                .iter()
                .all(|schedule| !schedule.enabled)
        );
    }

    #[test]
    fn without_connectors_the_default_section_is_the_one_schedule() {
        let settings = load(
            "[control_plane]\ntoken_file = \"TOKEN_PATH\"\n[control_plane.schedule]\nenabled = true\n\
             [control_plane.schedule.connectors.corp]\nenabled = false\n",
        )
        .expect("no connector is configured, so no name can be checked");
        let schedules = settings.schedules();
        let [default] = schedules.as_slice() else {
            panic!("one schedule: {schedules:#?}");
        };
        assert_eq!(default.connector, "");
        assert!(default.enabled);
        assert_eq!(default.cron, "0 2 * * *");
        assert_eq!(default.timezone, "UTC");
    }

    #[test]
    fn a_connector_schedule_names_its_key_in_errors() {
        let error = load(&with_connectors(
            "[control_plane.schedule.connectors.corp]\nenabled = true\ncorn = \"* * * * *\"\n",
        ))
        .expect_err("unknown key")
        .to_string();
        assert!(
            error.contains("control_plane.schedule.connectors.corp"),
            "{error}"
        );
        assert!(error.contains("corn"), "{error}");

        let error = load(&with_connectors(
            "[control_plane.schedule.connectors.crop]\nenabled = true\n",
        ))
        .expect_err("unknown connector")
        .to_string();
        assert!(
            error.contains("control_plane.schedule.connectors.crop"),
            "{error}"
        );
        assert!(error.contains("`corp`, `lab`"), "{error}");

        let error = load(&with_connectors(
            "[control_plane.schedule.connectors.lab]\ncron = \"61 * * * *\"\n",
        ))
        .expect_err("bad cron")
        .to_string();
        assert!(
            error.contains("control_plane.schedule.connectors.lab.cron"),
            "{error}"
        );

        // Time zones are looked up when the service starts; the key is where the zone
        // was set.
        let settings = load(&with_connectors(
            "[control_plane.schedule]\ntimezone = \"Mars/Olympus\"\n\
             [control_plane.schedule.connectors.corp]\ntimezone = \"Moon/Tranquility\"\n",
        ))
        .expect("zones are not looked up here");
        let schedules = settings.schedules();
        assert_eq!(
            schedules[0].time_zone().expect_err("no such zone").key(),
            "connectors.corp.timezone"
        );
        assert_eq!(
            schedules[1].time_zone().expect_err("no such zone").key(),
            "timezone"
        );
        let unchecked = ScheduleSettings {
            cron: "not cron".to_owned(),
            connectors: BTreeMap::from([(
                "corp".to_owned(),
                ConnectorScheduleSettings {
                    cron: Some("61 * * * *".to_owned()),
                    ..ConnectorScheduleSettings::default()
                },
            )]),
            ..ScheduleSettings::default()
        };
        let cron_key = |connector: &str| {
            unchecked
                .for_connector(connector)
                .parse_cron()
                .expect_err("not a cron expression")
                .key()
                .to_owned()
        };
        assert_eq!(cron_key("corp"), "connectors.corp.cron");
        assert_eq!(cron_key("lab"), "cron");
    }
}
