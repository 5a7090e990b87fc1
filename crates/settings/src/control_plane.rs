//! The control plane's settings: the sections of the shared configuration file it reads,
//! their defaults, and their checks.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, str::FromStr, time::Duration};

use config::{Invalid, Secret};
use croner::Cron;
use jiff::{SignedDuration, tz::TimeZone};
use serde::{Deserialize, Deserializer};

/// `[bus]`: where NATS is and the prefix of every subject, stream and bucket; the same
/// section every service reads.
pub use bus::BusSettings;

/// `[health]`: plain HTTP `GET /healthz` (the process runs) and `GET /readyz` (it is
/// connected to NATS and follows its events), for orchestrators' probes; the same section
/// every service reads (see `bus::health`).
pub use bus::health::HealthSettings;

/// The sections of the shared configuration file the control plane reads: `[bus]`,
/// `[control_plane]` and `[health]`, and, for `TestConnection` only, `[keycloak.*]` and
/// `[products.*]` (documented with the fetcher and the appliers, which use them).
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
/// token_file = "/run/secrets/keysync-api/token"   # required (or `token`)
/// hold_expiry = "24h"                   # default; or a number of seconds
///
/// [control_plane.schedule]
/// enabled = false                       # default: off until an admin turns it on
/// cron = "0 2 * * *"                    # default: daily at 02:00
/// timezone = "UTC"                      # default; an IANA name such as "Europe/Berlin"
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
    /// `[keycloak.<connector>]`: the realms `TestConnection` checks.
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
    /// The bearer token every API call must carry (health and reflection need none). Set
    /// `token_file` to read it from a file when the service starts; one trailing newline is
    /// dropped. Required.
    pub token: Secret,
    /// Where the other services reach this API (the appliers report results there), for
    /// example `http://keysync-control-plane:50051`. The control plane itself does not use
    /// it. Default: `http://127.0.0.1:50051`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
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
    /// When syncs start by themselves.
    #[serde(default)]
    pub schedule: ScheduleSettings,
}

/// `[control_plane.schedule]`: the cron schedule of apply runs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Whether scheduled runs start at all. Default: `false`: a fresh installation writes to
    /// no product until an admin has run a simulation and a sync by hand and turns this on.
    #[serde(default = "default_schedule_enabled")]
    pub enabled: bool,
    /// A cron expression: five fields (minute hour day-of-month month day-of-week), or six
    /// with seconds first. Default: `0 2 * * *`, daily at 02:00.
    #[serde(default = "default_cron")]
    pub cron: String,
    /// The IANA time zone the expression is read in, for example `Europe/Berlin`.
    /// Default: `UTC`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

impl Default for ScheduleSettings {
    fn default() -> ScheduleSettings {
        ScheduleSettings {
            enabled: default_schedule_enabled(),
            cron: default_cron(),
            timezone: default_timezone(),
        }
    }
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
        for product in self.products.enabled() {
            if let Some(settings) = self.products.get(product) {
                settings
                    .client_settings(product)
                    .map_err(|error| error.within(&format!("products.{product}")))?;
            }
        }
        Ok(())
    }
}

impl ControlPlaneSettings {
    /// Checks the token and the schedule; no IO (the time zone is looked up when the
    /// service starts). Keys are relative to `[control_plane]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.token.expose().trim().is_empty() {
            return Err(Invalid::new(
                "token",
                "must not be empty (set `token_file` to a file that holds it)",
            ));
        }
        let endpoint = self.endpoint.trim();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(Invalid::new(
                "endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        if !self.hold_expiry.is_positive() {
            return Err(Invalid::new(
                "hold_expiry",
                format!(
                    "must be more than 0 (found {:#}), for example \"24h\"",
                    self.hold_expiry
                ),
            ));
        }
        parse_cron(&self.schedule.cron)
            .map_err(|reason| Invalid::new("cron", reason).within("schedule"))?;
        Ok(())
    }

    /// [`ControlPlaneSettings::hold_expiry`] as a [`Duration`]; zero for a negative value,
    /// which [`ControlPlaneSettings::validate`] refuses.
    pub fn hold_expiry(&self) -> Duration {
        Duration::try_from(self.hold_expiry).unwrap_or(Duration::ZERO)
    }
}

impl ScheduleSettings {
    /// The time zone the expression is read in, from the system's zoneinfo, else the
    /// database built into the binary. Keys in errors are relative to
    /// `[control_plane.schedule]`.
    pub fn time_zone(&self) -> Result<TimeZone, Invalid> {
        TimeZone::get(self.timezone.trim()).map_err(|error| {
            Invalid::new("timezone", format!("not a known IANA time zone ({error})"))
        })
    }
}

/// Parses a cron expression of five fields, or six with seconds first.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    Cron::from_str(expression.trim()).map_err(|error| format!("not a cron expression: {error}"))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

fn default_endpoint() -> String {
    "http://127.0.0.1:50051".to_owned()
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

fn default_schedule_enabled() -> bool {
    false
}

fn default_cron() -> String {
    "0 2 * * *".to_owned()
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Settings, config::Error> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").expect("writes the token");
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
        assert_eq!(control_plane.token.expose(), "s3cret");
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
            !format!("{settings:?}").contains("s3cret"),
            "the token is in Debug"
        );
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
}
