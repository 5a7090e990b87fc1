//! The sync schedule: a cron expression read in a time zone, firing apply runs.
//!
//! Every replica runs the schedule; for each fire time, each one tries to `create` the key
//! `schedule.{unix seconds}` in the `{prefix}-schedule` bucket, which succeeds for exactly
//! one of them, and only that one starts the runs (trigger SCHEDULE): one apply run per
//! configured Keycloak connector (one with the default connector when none is
//! configured). A connector whose previous run is still active gets no new run: the skip
//! is recorded as a CANCELLED run of trigger SCHEDULE ("skipped: run R of connector C was
//! still STATE"), logged, and counted in `keysync_schedule_skipped_total{connector}`. A
//! fire time missed while no replica ran is not made up for, as with cron.

use std::{sync::Arc, time::Duration};

use config::Invalid;
use croner::Cron;
use jiff::{Timestamp, Zoned, tz::TimeZone};
use proto::v1::{RunMode, RunTrigger};
use tokio::sync::watch;

pub use crate::settings::parse_cron;
use crate::{
    runs::{Runs, RunsError, StartRun, connector_label},
    settings::ScheduleSettings,
};

/// A parsed, enabled schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    zone: TimeZone,
    expression: String,
}

impl Schedule {
    /// The schedule of `settings`, or `None` when it is disabled. Looks the time zone up
    /// in the system's zoneinfo, else in the database built into the binary. Keys in errors
    /// are relative to `[control_plane.schedule]`.
    pub fn from_settings(settings: &ScheduleSettings) -> Result<Option<Schedule>, Invalid> {
        if !settings.enabled {
            return Ok(None);
        }
        let cron = parse_cron(&settings.cron).map_err(|reason| Invalid::new("cron", reason))?;
        let zone = settings.time_zone()?;
        Ok(Some(Schedule {
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

    pub fn expression(&self) -> &str {
        &self.expression
    }
}

/// Fires the schedule until `stop` turns true. A run that cannot start is logged, and the
/// schedule goes on.
pub async fn run(schedule: Schedule, runs: Arc<Runs>, mut stop: watch::Receiver<bool>) {
    let mut after = Timestamp::now();
    tracing::info!(
        cron = schedule.expression(),
        timezone = schedule.zone.iana_name().unwrap_or("UTC"),
        next = %schedule.next_after(after).map(|fire| fire.to_string()).unwrap_or_default(),
        "Schedule enabled."
    );
    loop {
        let Some(fire) = schedule.next_after(after) else {
            tracing::warn!(
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
        fire_once(&runs, &schedule, &fire).await;
    }
}

/// Starts the runs of `fire` if this replica claims it first.
async fn fire_once(runs: &Runs, schedule: &Schedule, fire: &Zoned) {
    let unix_seconds = fire.timestamp().as_second();
    match runs.store().claim_fire_time(unix_seconds).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(fire_time = %fire, "Another replica fired this time.");
            return;
        }
        Err(error) => {
            tracing::warn!(fire_time = %fire, error = %error, "Could not claim a fire time; skipping it.");
            return;
        }
    }
    let connectors = match runs.connectors() {
        [] => vec![String::new()],
        connectors => connectors.to_vec(),
    };
    let requested_by = format!("schedule `{}` at {fire}", schedule.expression());
    for connector in connectors {
        let started = runs
            .start(StartRun {
                mode: RunMode::Apply,
                products: Vec::new(),
                connector: connector.clone(),
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
                if let Err(error) = runs
                    .record_skip(&connector, requested_by.clone(), reason)
                    .await
                {
                    tracing::error!(fire_time = %fire, connector, error = %error, "The skip of a scheduled run could not be recorded.");
                }
            }
            Err(error) => {
                tracing::error!(fire_time = %fire, connector, error = %error, "The scheduled run could not start.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, timezone: &str) -> Result<Option<Schedule>, Invalid> {
        Schedule::from_settings(&ScheduleSettings {
            enabled: true,
            cron: cron.to_owned(),
            timezone: timezone.to_owned(),
        })
    }

    #[test]
    fn the_default_schedule_is_off_and_once_on_fires_daily_at_two_in_its_time_zone() {
        let settings = ScheduleSettings::default();
        assert_eq!(settings.cron, "0 2 * * *");
        assert!(
            Schedule::from_settings(&settings).expect("valid").is_none(),
            "a fresh installation has no schedule running"
        );
        let settings = ScheduleSettings {
            enabled: true,
            ..settings
        };
        let utc = Schedule::from_settings(&settings)
            .expect("valid")
            .expect("enabled");
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
        assert!(Schedule::from_settings(&disabled).expect("valid").is_none());
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
}
