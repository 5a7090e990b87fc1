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
/// token_file = "/run/secrets/keysync-api/token"   # required (or `token`)
/// hold_expiry = "24h"                   # default; or a number of seconds
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

/// `[control_plane.schedule]`: the cron schedule of apply runs, one per Keycloak connector.
///
/// The keys of this section are the schedule of every connector (`[keycloak.<name>]`);
/// `[control_plane.schedule.connectors.<name>]` gives one connector its own `enabled`,
/// `cron` or `timezone`, each key optional and taken from this section when missing (see
/// [`ScheduleSettings::for_connector`]). Each connector's schedule fires on its own. Off
/// unless `enabled = true` is set here or for the connector. With no connector configured,
/// this section is the schedule of the one default connector and the per-connector
/// sections are not used.
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
    /// `[control_plane.schedule.connectors.<name>]`: the connectors whose schedule differs
    /// from this section's, by the name of their `[keycloak.<name>]` section. Default: none.
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorScheduleSettings>,
}

impl Default for ScheduleSettings {
    fn default() -> ScheduleSettings {
        ScheduleSettings {
            enabled: default_schedule_enabled(),
            cron: default_cron(),
            timezone: default_timezone(),
            connectors: BTreeMap::new(),
        }
    }
}

/// `[control_plane.schedule.connectors.<name>]`: one connector's own schedule. Every key is
/// optional; a missing one is `[control_plane.schedule]`'s.
///
/// ```toml
/// [control_plane.schedule]
/// enabled = false                 # every other connector: off
///
/// [control_plane.schedule.connectors.corp]
/// enabled = true                  # corp alone, weekdays at 01:30 UTC (the default zone)
/// cron = "30 1 * * 1-5"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorScheduleSettings {
    /// Whether this connector's scheduled runs start. Default: `[control_plane.schedule]
    /// enabled`.
    pub enabled: Option<bool>,
    /// This connector's cron expression. Default: `[control_plane.schedule] cron`.
    pub cron: Option<String>,
    /// The IANA time zone of this connector's expression. Default:
    /// `[control_plane.schedule] timezone`.
    pub timezone: Option<String>,
}

/// One connector's schedule with every key resolved: its own where
/// `[control_plane.schedule.connectors.<name>]` sets it, else `[control_plane.schedule]`'s.
/// Made by [`ScheduleSettings::for_connector`] and [`Settings::schedules`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectorSchedule {
    /// The connector, the name of its `[keycloak.<name>]` section; empty for the default
    /// connector of a configuration without one.
    pub connector: String,
    pub enabled: bool,
    pub cron: String,
    pub timezone: String,
    /// Where `cron` was set, relative to `[control_plane.schedule]`: `cron` or
    /// `connectors.<name>.cron`.
    cron_key: String,
    /// Where `timezone` was set, as `cron_key`.
    timezone_key: String,
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
        self.schedule
            .validate()
            .map_err(|error| error.within("schedule"))?;
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
    /// `[control_plane.schedule]`. A connector's own zone is
    /// [`ConnectorSchedule::time_zone`].
    pub fn time_zone(&self) -> Result<TimeZone, Invalid> {
        time_zone(&self.timezone, "timezone")
    }

    /// Checks every cron expression, this section's and each connector's; no IO (time
    /// zones are looked up when the service starts). Keys are relative to
    /// `[control_plane.schedule]` (`connectors.corp.cron`). Whether each connector exists
    /// is checked by [`Settings::validate`], which knows them.
    pub fn validate(&self) -> Result<(), Invalid> {
        parse_cron(&self.cron).map_err(|reason| Invalid::new("cron", reason))?;
        for (name, connector) in &self.connectors {
            if let Some(cron) = &connector.cron {
                parse_cron(cron).map_err(|reason| {
                    Invalid::new("cron", reason).within(&format!("connectors.{name}"))
                })?;
            }
        }
        Ok(())
    }

    /// The schedule of `connector`: each key of
    /// `[control_plane.schedule.connectors.<connector>]` that is set, else this section's.
    /// A connector without its own section has exactly this section's schedule.
    pub fn for_connector(&self, connector: &str) -> ConnectorSchedule {
        let Some(own) = self.connectors.get(connector) else {
            return ConnectorSchedule {
                connector: connector.to_owned(),
                ..self.default_schedule()
            };
        };
        let own_key = |key: &str| format!("connectors.{connector}.{key}");
        let (cron, cron_key) = match &own.cron {
            Some(cron) => (cron.clone(), own_key("cron")),
            None => (self.cron.clone(), "cron".to_owned()),
        };
        let (timezone, timezone_key) = match &own.timezone {
            Some(timezone) => (timezone.clone(), own_key("timezone")),
            None => (self.timezone.clone(), "timezone".to_owned()),
        };
        ConnectorSchedule {
            connector: connector.to_owned(),
            enabled: own.enabled.unwrap_or(self.enabled),
            cron,
            timezone,
            cron_key,
            timezone_key,
        }
    }

    /// This section's own schedule, for the default connector (the empty name) of a
    /// configuration without connectors.
    fn default_schedule(&self) -> ConnectorSchedule {
        ConnectorSchedule {
            connector: String::new(),
            enabled: self.enabled,
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            cron_key: "cron".to_owned(),
            timezone_key: "timezone".to_owned(),
        }
    }
}

impl ConnectorSchedule {
    /// The parsed cron expression. Keys in errors are relative to
    /// `[control_plane.schedule]` and name where the expression was set: `cron`, or
    /// `connectors.<name>.cron`.
    pub fn parse_cron(&self) -> Result<Cron, Invalid> {
        parse_cron(&self.cron).map_err(|reason| Invalid::new(&self.cron_key, reason))
    }

    /// The time zone the expression is read in, looked up as
    /// [`ScheduleSettings::time_zone`] does. Keys in errors are relative to
    /// `[control_plane.schedule]` and name where the zone was set: `timezone`, or
    /// `connectors.<name>.timezone`.
    pub fn time_zone(&self) -> Result<TimeZone, Invalid> {
        time_zone(&self.timezone, &self.timezone_key)
    }
}

fn time_zone(name: &str, key: &str) -> Result<TimeZone, Invalid> {
    TimeZone::get(name.trim())
        .map_err(|error| Invalid::new(key, format!("not a known IANA time zone ({error})")))
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
