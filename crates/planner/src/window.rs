//! The safety limits over a sliding window for event runs (#16). A full sync that would
//! take access from more accounts than `safety.max_accounts` (or `max_percent` of the
//! managed ones) is held; deleting users one by one, each its own event run, must not slip
//! past that limit. So the accounts each applied event run of a connector took access from
//! are recorded per product (key `window.{connector}.{product}` in the planner's bucket,
//! written with compare-and-set), and an event run whose accounts, added to those of the
//! last [`WINDOW`], cross a limit is held with that reason, for a person to approve. A held
//! event run that is approved counts too, from its approval on: the next deletions are
//! judged with it.
//!
//! Event runs of one connector never overlap (the control plane's claim), so the window a
//! plan reads is the window its run is judged against.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
use model::policy::Safety;

use crate::Error;
use crate::join::Joins;

/// How far back the event runs' losses are added up.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// How many times a record is tried against concurrent writers.
const MAX_ATTEMPTS: usize = 16;

/// The losses recorded for one connector and product: (unix seconds, accounts, the run),
/// one line each, `{at} {accounts} {run_id}` (the run id is absent in lines written before
/// it was recorded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Losses(Vec<(u64, u64, String)>);

impl Losses {
    fn parse(text: &str) -> Losses {
        Losses(
            text.lines()
                .filter_map(|line| {
                    let mut fields = line.split(' ');
                    let at = fields.next()?.parse().ok()?;
                    let accounts = fields.next()?.parse().ok()?;
                    let run_id = fields.next().unwrap_or_default().to_owned();
                    Some((at, accounts, run_id))
                })
                .collect(),
        )
    }

    fn render(&self) -> String {
        self.0
            .iter()
            .map(|(at, accounts, run_id)| format!("{at} {accounts} {run_id}\n"))
            .collect()
    }

    fn has_run(&self, run_id: &str) -> bool {
        !run_id.is_empty() && self.0.iter().any(|(_, _, run)| run == run_id)
    }

    /// The entries of the window ending at `now`.
    fn within(&self, now: u64) -> Losses {
        let since = now.saturating_sub(WINDOW.as_secs());
        Losses(
            self.0
                .iter()
                .filter(|(at, ..)| *at >= since)
                .cloned()
                .collect(),
        )
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|(_, accounts, _)| *accounts).sum()
    }
}

/// Why an event run that takes access from `now_losing` accounts of `managed` must be
/// held, when the event runs of the window took it from `window_losing` already; `None`
/// when the limits hold.
pub(crate) fn hold_reason(
    window_losing: u64,
    now_losing: u64,
    managed: u64,
    safety: &Safety,
) -> Option<String> {
    if now_losing == 0 {
        return None;
    }
    let total = window_losing.saturating_add(now_losing);
    let minutes = WINDOW.as_secs() / 60;
    if total > u64::from(safety.max_accounts) {
        return Some(format!(
            "event runs of the last {minutes} minutes would take access from {total} \
             account(s) with this one ({window_losing} before it), more than \
             safety.max_accounts ({})",
            safety.max_accounts
        ));
    }
    if managed > 0 && total.saturating_mul(100) > u64::from(safety.max_percent) * managed {
        return Some(format!(
            "event runs of the last {minutes} minutes would take access from {total} of \
             {managed} managed accounts with this one ({window_losing} before it), more \
             than safety.max_percent ({}%)",
            safety.max_percent
        ));
    }
    None
}

fn key(connector: &str, product: &str) -> String {
    format!("window.{connector}.{product}")
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0)
}

impl Joins {
    /// The accounts the event runs of `connector` took access from in `product` in the
    /// window ending at `now`.
    pub(crate) async fn window_losing(
        &self,
        connector: &str,
        product: &str,
        now: SystemTime,
    ) -> Result<u64, Error> {
        let (losses, _) = self.losses(connector, product).await?;
        Ok(losses.within(unix(now)).total())
    }

    /// Records that event run `run_id`, applied (or approved, once held), took access from
    /// `accounts` accounts at `now`; once per run, however often its plan or approval is
    /// delivered.
    pub(crate) async fn record_losing(
        &self,
        connector: &str,
        product: &str,
        run_id: &str,
        accounts: u64,
        now: SystemTime,
    ) -> Result<(), Error> {
        let key = key(connector, product);
        let now = unix(now);
        for _ in 0..MAX_ATTEMPTS {
            let (losses, revision) = self.losses(connector, product).await?;
            let mut kept = losses.within(now);
            if kept.has_run(run_id) {
                return Ok(());
            }
            kept.0.push((now, accounts, run_id.to_owned()));
            let value = kept.render().into_bytes().into();
            let store = self.store();
            let written = match revision {
                Some(revision) => store.update(&key, value, revision).await.is_ok(),
                None => store.create(&key, value).await.is_ok(),
            };
            if written {
                return Ok(());
            }
        }
        Err(Error::Kv {
            bucket: self.store().name.clone(),
            source: format!("{key} was changed concurrently {MAX_ATTEMPTS} times in a row").into(),
        })
    }

    async fn losses(&self, connector: &str, product: &str) -> Result<(Losses, Option<u64>), Error> {
        let entry = self
            .store()
            .entry(key(connector, product))
            .await
            .map_err(|error| Error::Kv {
                bucket: self.store().name.clone(),
                source: Box::new(error),
            })?;
        Ok(match entry {
            Some(entry) if entry.operation == kv::Operation::Put => (
                Losses::parse(&String::from_utf8_lossy(&entry.value)),
                Some(entry.revision),
            ),
            Some(entry) => (Losses::default(), Some(entry.revision)),
            None => (Losses::default(), None),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safety(max_accounts: u32, max_percent: u32) -> Safety {
        Safety {
            max_accounts,
            max_percent,
            ..Safety::default()
        }
    }

    #[test]
    fn losses_of_the_window_add_up_and_older_ones_drop_out() {
        let losses = Losses::parse("100 2\n4000 3 01RUNA\nnot a line\n4100 1 01RUNB\n");
        assert_eq!(losses.within(4100).total(), 4);
        assert_eq!(Losses::parse(&losses.render()), losses);
        assert!(losses.has_run("01RUNB"));
        assert!(!losses.has_run("01RUNC"));
        assert!(!losses.has_run(""), "lines without a run are no run's");
    }

    #[test]
    fn one_by_one_deletions_are_held_once_the_window_crosses_a_limit() {
        let limits = safety(3, 100);
        assert_eq!(hold_reason(2, 1, 100, &limits), None);
        let reason = hold_reason(3, 1, 100, &limits).expect("held");
        assert!(reason.contains("4 account(s)"), "{reason}");
        assert!(reason.contains("safety.max_accounts (3)"), "{reason}");
        let percent = hold_reason(1, 1, 10, &safety(100, 10)).expect("held");
        assert!(percent.contains("safety.max_percent (10%)"), "{percent}");
        assert_eq!(
            hold_reason(100, 0, 10, &limits),
            None,
            "taking nothing is never held"
        );
    }
}
