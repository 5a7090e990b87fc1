//! The sync schedule: per Keycloak connector, a cron expression read in a time zone,
//! firing apply runs of that connector.
//!
//! `[control_plane.schedule]` is every connector's schedule and
//! `[control_plane.schedule.connectors.<name>]` overrides its `enabled`, `cron` or
//! `timezone` for one connector (see `settings::control_plane::ScheduleSettings`); a
//! connector's schedule runs only when it ends up enabled, so nothing fires unless
//! `enabled = true` is set for the connector or in the default section. Without any
//! connector configured the default section is the schedule of the one default connector.
//!
//! Each enabled connector's schedule fires on its own, all in one task. Every replica runs
//! them; for each fire time of a connector, each replica tries to `create` a claim key in
//! the `{prefix}-schedule` bucket, which succeeds for exactly one of them, and only that
//! one starts the connector's run (trigger SCHEDULE). The key names the connector
//! (`Store::claim_fire_time`, `store::fire_time_key`), so two connectors firing at the same
//! second are claimed apart. A connector whose previous run is
//! still active gets no new run: the skip is recorded as a CANCELLED run of trigger
//! SCHEDULE ("skipped: run R of connector C was still STATE"), logged, and counted in
//! `keysync_schedule_skipped_total{connector}`. A fire time missed while no replica ran is
//! not made up for, as with cron.

use std::{sync::Arc, time::Duration};

use ::settings::control_plane::ConnectorSchedule;
use config::Invalid;
use croner::Cron;
use jiff::{Timestamp, Zoned, tz::TimeZone};
use proto::v1::{RunMode, RunTrigger};
use tokio::sync::watch;

pub use crate::settings::parse_cron;
use crate::{
    runs::{Runs, RunsError, StartRun, connector_label},
    settings::Settings,
};

/// The schedules of a deployment that fire: one per connector whose schedule is enabled.
#[derive(Clone, Debug)]
pub struct Schedule {
    connectors: Vec<ConnectorCron>,
}

impl Schedule {
    /// The enabled schedules of `settings`' connectors (of the default connector when none
    /// is configured), or `None` when none is enabled. Looks each time zone up in the
    /// system's zoneinfo, else in the database built into the binary. Keys in errors are
    /// full paths (`control_plane.schedule.connectors.corp.timezone`).
    pub fn from_settings(settings: &Settings) -> Result<Option<Schedule>, Invalid> {
        let schedule = &settings.control_plane.schedule;
        if settings.keycloak.is_empty() && !schedule.connectors.is_empty() {
            tracing::warn!(
                connectors = ?schedule.connectors.keys().collect::<Vec<_>>(),
                "No [keycloak.<name>] connector is configured: the schedules of \
                 [control_plane.schedule.connectors.*] are not used."
            );
        }
        let mut connectors = Vec::new();
        for connector in settings.schedules() {
            if let Some(cron) = ConnectorCron::from_settings(&connector)
                .map_err(|error| error.within("control_plane.schedule"))?
            {
                connectors.push(cron);
            }
        }
        Ok((!connectors.is_empty()).then_some(Schedule { connectors }))
    }

    /// The enabled connectors' schedules, in connector name order.
    pub fn connectors(&self) -> &[ConnectorCron] {
        &self.connectors
    }
}

/// One connector's parsed, enabled schedule.
#[derive(Clone, Debug)]
pub struct ConnectorCron {
    connector: String,
    cron: Cron,
    zone: TimeZone,
    expression: String,
}

impl ConnectorCron {
    /// The schedule of `settings`, or `None` when it is disabled. Keys in errors are
    /// relative to `[control_plane.schedule]` and name where the value was set (`cron`, or
    /// `connectors.corp.cron`).
    pub fn from_settings(settings: &ConnectorSchedule) -> Result<Option<ConnectorCron>, Invalid> {
        if !settings.enabled {
            return Ok(None);
        }
        let cron = settings.parse_cron()?;
        let zone = settings.time_zone()?;
        Ok(Some(ConnectorCron {
            connector: settings.connector.clone(),
            cron,
            zone,
            expression: settings.cron.trim().to_owned(),
        }))
    }

    /// The first fire time strictly after `after`, in the schedule's time zone.
    pub fn next_after(&self, after: Timestamp) -> Option<Zoned> {
        let start = after.to_zoned(self.zone.clone());
        self.cron.find_next_occurrence(&start, false).ok()
    }

    /// The connector whose runs this schedule starts; empty for the default connector.
    pub fn connector(&self) -> &str {
        &self.connector
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }
}

/// Fires every connector's schedule until `stop` turns true. A run that cannot start is
/// logged, and the schedule goes on.
pub async fn run(schedule: Schedule, runs: Arc<Runs>, stop: watch::Receiver<bool>) {
    futures::future::join_all(
        schedule
            .connectors
            .iter()
            .map(|cron| run_connector(cron, &runs, stop.clone())),
    )
    .await;
}

/// Fires one connector's schedule until `stop` turns true.
async fn run_connector(schedule: &ConnectorCron, runs: &Runs, mut stop: watch::Receiver<bool>) {
    let connector = connector_label(schedule.connector());
    let mut after = Timestamp::now();
    tracing::info!(
        connector,
        cron = schedule.expression(),
        timezone = schedule.zone.iana_name().unwrap_or("UTC"),
        next = %schedule.next_after(after).map(|fire| fire.to_string()).unwrap_or_default(),
        "Schedule enabled."
    );
    loop {
        let Some(fire) = schedule.next_after(after) else {
            tracing::warn!(
                connector,
                cron = schedule.expression(),
                "The schedule never fires again."
            );
            return;
        };
        // Sleeps until the fire time by the wall clock, again if it was set back meanwhile.
        loop {
            let remaining = Timestamp::now().duration_until(fire.timestamp());
            let Ok(remaining) = Duration::try_from(remaining) else {
                break;
            };
            if remaining.is_zero() {
                break;
            }
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return,
                () = tokio::time::sleep(remaining) => {}
            }
        }
        after = fire.timestamp();
        fire_once(runs, schedule, &fire).await;
    }
}

/// Starts the connector's run of `fire` if this replica claims it first.
async fn fire_once(runs: &Runs, schedule: &ConnectorCron, fire: &Zoned) {
    let connector = schedule.connector();
    match runs
        .store()
        .claim_fire_time(connector, fire.timestamp().as_second())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(fire_time = %fire, connector, "Another replica fired this time.");
            return;
        }
        Err(error) => {
            tracing::warn!(fire_time = %fire, connector, error = %error, "Could not claim a fire time; skipping it.");
            return;
        }
    }
    let requested_by = format!("schedule `{}` at {fire}", schedule.expression());
    let started = runs
        .start(StartRun {
            mode: RunMode::Apply,
            products: Vec::new(),
            connector: connector.to_owned(),
            trigger: RunTrigger::Schedule,
            requested_by: requested_by.clone(),
        })
        .await;
    match started {
        Ok(_) => {}
        Err(RunsError::Busy {
            run_id,
            connector,
            state,
        }) => {
            let reason = format!(
                "skipped: run {run_id} of {} was still {state}",
                connector_label(&connector)
            );
            if let Err(error) = runs.record_skip(&connector, requested_by, reason).await {
                tracing::error!(fire_time = %fire, connector, error = %error, "The skip of a scheduled run could not be recorded.");
            }
        }
        Err(error) => {
            tracing::error!(fire_time = %fire, connector, error = %error, "The scheduled run could not start.");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ::settings::control_plane::{ConnectorScheduleSettings, ScheduleSettings};

    use super::*;

    fn schedule(cron: &str, timezone: &str) -> Result<Option<ConnectorCron>, Invalid> {
        ConnectorCron::from_settings(
            &ScheduleSettings {
                enabled: true,
                cron: cron.to_owned(),
                timezone: timezone.to_owned(),
                ..ScheduleSettings::default()
            }
            .for_connector(""),
        )
    }

    #[test]
    fn the_default_schedule_is_off_and_once_on_fires_daily_at_two_in_its_time_zone() {
        let settings = ScheduleSettings::default();
        assert_eq!(settings.cron, "0 2 * * *");
        assert!(
            ConnectorCron::from_settings(&settings.for_connector("corp"))
                .expect("valid")
                .is_none(),
            "a fresh installation has no schedule running"
        );
        let settings = ScheduleSettings {
            enabled: true,
            ..settings
        };
        let utc = ConnectorCron::from_settings(&settings.for_connector("corp"))
            .expect("valid")
            .expect("enabled");
        assert_eq!(utc.connector(), "corp");
        let after: Timestamp = "2026-11-22T14:00:00Z".parse().expect("a timestamp");
        assert_eq!(
            utc.next_after(after)
                .expect("fires")
                .timestamp()
                .to_string(),
            "2026-11-23T02:00:00Z"
        );
        let berlin = schedule("0 2 * * *", "Europe/Berlin")
            .expect("valid")
            .expect("enabled");
        // 02:00 in Berlin in winter (UTC+1) is 01:00 UTC.
        assert_eq!(
            berlin
                .next_after(after)
                .expect("fires")
                .timestamp()
                .to_string(),
            "2026-11-23T01:00:00Z"
        );
    }

    #[test]
    fn six_fields_fire_by_the_second_and_never_twice_for_one_time() {
        let every_second = schedule("* * * * * *", "UTC")
            .expect("valid")
            .expect("enabled");
        let after: Timestamp = "2026-11-22T14:00:00Z".parse().expect("a timestamp");
        let first = every_second.next_after(after).expect("fires");
        assert_eq!(first.timestamp().to_string(), "2026-11-22T14:00:01Z");
        let second = every_second.next_after(first.timestamp()).expect("fires");
        assert_eq!(second.timestamp().to_string(), "2026-11-22T14:00:02Z");
    }

    #[test]
    fn a_disabled_schedule_is_none_and_bad_settings_name_their_key() {
        let disabled = ScheduleSettings {
            enabled: false,
            ..ScheduleSettings::default()
        };
        assert!(
            ConnectorCron::from_settings(&disabled.for_connector(""))
                .expect("valid")
                .is_none()
        );
        assert_eq!(
            schedule("61 * * * *", "UTC").expect_err("bad minute").key(),
            "cron"
        );
        assert_eq!(
            schedule("0 2 * * *", "Mars/Olympus")
                .expect_err("no such zone")
                .key(),
            "timezone"
        );
    }

    #[test]
    fn each_connector_fires_its_own_cron_in_its_own_zone() {
        let own = |enabled: Option<bool>, cron: Option<&str>, timezone: Option<&str>| {
            ConnectorScheduleSettings {
                enabled,
                cron: cron.map(str::to_owned),
                timezone: timezone.map(str::to_owned),
            }
        };
        let settings = ScheduleSettings {
            enabled: false,
            connectors: BTreeMap::from([
                (
                    "corp".to_owned(),
                    own(Some(true), None, Some("Europe/Berlin")),
                ),
                ("lab".to_owned(), own(Some(true), Some("30 4 * * *"), None)),
                ("test".to_owned(), own(None, None, Some("Mars/Olympus"))),
            ]),
            ..ScheduleSettings::default()
        };
        let after: Timestamp = "2026-11-22T14:00:00Z".parse().expect("a timestamp");
        let next = |connector: &str| {
            ConnectorCron::from_settings(&settings.for_connector(connector))
                .expect("valid")
                .map(|cron| {
                    cron.next_after(after)
                        .expect("fires")
                        .timestamp()
                        .to_string()
                })
        };
        assert_eq!(next("corp").as_deref(), Some("2026-11-23T01:00:00Z"));
        assert_eq!(next("lab").as_deref(), Some("2026-11-23T04:30:00Z"));
        assert_eq!(next("test"), None, "off: its bad zone is never looked up");
        assert_eq!(next("other"), None, "the default section: off");
    }

    #[test]
    fn fire_time_claims_are_apart_per_connector() {
        use crate::store::fire_time_key;

        assert_eq!(
            fire_time_key("corp", 1_795_000_000),
            "schedule.connector.corp.1795000000"
        );
        assert_ne!(fire_time_key("corp", 1), fire_time_key("lab", 1));
        assert_eq!(fire_time_key("a.b", 1), "schedule.connector.=612e62.1");
    }
}
