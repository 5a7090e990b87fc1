//! `[control_plane.schedule]` and `[control_plane.schedule.connectors.<name>]`: when apply
//! runs start by themselves, per Keycloak connector, with their defaults and checks. Part of
//! the control plane's settings (`crate::control_plane` re-exports every item).

use std::{collections::BTreeMap, str::FromStr};

use config::Invalid;
use croner::Cron;
use jiff::tz::TimeZone;
use serde::Deserialize;

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
    pub(crate) fn default_schedule(&self) -> ConnectorSchedule {
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

fn default_schedule_enabled() -> bool {
    false
}

fn default_cron() -> String {
    "0 2 * * *".to_owned()
}

fn default_timezone() -> String {
    "UTC".to_owned()
}
