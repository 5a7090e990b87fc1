//! What the CLI prints: plain aligned tables for people, and JSON for scripts.
//!
//! The JSON types are the CLI's own wire format, converted by hand from the protobuf
//! types, so the protocol can change without breaking scripts unnoticed. Enum values are
//! lower-case names without their prefix (`succeeded`, `create_user`, `jira`), the same
//! names the command-line filters take; timestamps are RFC 3339 in UTC.

use std::collections::BTreeMap;

use proto::v1::{self, ChangeOp, ChangeOutcome, Product, RunMode, RunState, RunTrigger};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct RunJson {
    pub id: String,
    pub mode: String,
    pub state: String,
    pub trigger: String,
    /// For a run started by Keycloak's events: what they named; null for other runs.
    pub event: Option<EventJson>,
    pub connector: String,
    /// Empty means every configured product.
    pub products: Vec<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub finished_at: Option<String>,
    pub reason: String,
    pub requested_by: String,
    /// Who approved a held run, why and when; empty and null until it is approved.
    pub approved_by: String,
    pub approval_reason: String,
    pub approved_at: Option<String>,
    /// When the hold of a run the safety limit held expires.
    pub hold_expires_at: Option<String>,
    pub progress: Vec<ProgressJson>,
    pub plan: Vec<PlanSummaryJson>,
}

/// What the Keycloak events behind an event run named.
#[derive(Debug, Serialize)]
pub struct EventJson {
    pub events: u64,
    pub user_ids: Vec<String>,
    pub group_ids: Vec<String>,
    /// Set when only a full sync would do, and why.
    pub full_sync_reason: String,
}

impl From<&v1::EventTrigger> for EventJson {
    fn from(event: &v1::EventTrigger) -> EventJson {
        EventJson {
            events: event.events,
            user_ids: event.user_ids.clone(),
            group_ids: event.group_ids.clone(),
            full_sync_reason: event.full_sync_reason.clone(),
        }
    }
}

/// How many ids of users or groups an event line names before it only counts the rest.
const EVENT_IDS_SHOWN: usize = 5;

/// What an event run's events named, on one line: "3 events, users u1,u2; groups g1",
/// or "1 event, full sync: the follower's first start".
pub fn event_text(event: &v1::EventTrigger) -> String {
    let mut parts = Vec::new();
    if event.events > 0 {
        let plural = if event.events == 1 { "" } else { "s" };
        parts.push(format!("{} event{plural}", event.events));
    }
    let reason = event.full_sync_reason.trim();
    if !reason.is_empty() {
        parts.push(format!("full sync: {reason}"));
        return parts.join(", ");
    }
    let mut named = Vec::new();
    for (noun, ids) in [("users", &event.user_ids), ("groups", &event.group_ids)] {
        if ids.is_empty() {
            continue;
        }
        let mut list = ids
            .iter()
            .take(EVENT_IDS_SHOWN)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(",");
        if ids.len() > EVENT_IDS_SHOWN {
            list.push_str(&format!(" and {} more", ids.len() - EVENT_IDS_SHOWN));
        }
        named.push(format!("{noun} {list}"));
    }
    if !named.is_empty() {
        parts.push(named.join("; "));
    }
    parts.join(", ")
}

/// The TRIGGER cell of the runs table: the trigger, and for an event run how much its
/// events named, kept short ("event: 2 users, 1 group", "event: full sync").
pub fn trigger_cell(run: &v1::Run) -> String {
    let name = trigger_name(run.trigger());
    let Some(event) = run.event.as_ref() else {
        return name.to_owned();
    };
    if !event.full_sync_reason.trim().is_empty() {
        return format!("{name}: full sync");
    }
    let count = |count: usize, noun: &str| match count {
        0 => None,
        1 => Some(format!("1 {noun}")),
        many => Some(format!("{many} {noun}s")),
    };
    let named: Vec<String> = [
        count(event.user_ids.len(), "user"),
        count(event.group_ids.len(), "group"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if named.is_empty() {
        name.to_owned()
    } else {
        format!("{name}: {}", named.join(", "))
    }
}

#[derive(Debug, Serialize)]
pub struct ProgressJson {
    pub product: String,
    pub planned: u64,
    pub applied: u64,
    pub already_done: u64,
    pub skipped: u64,
    pub failed: u64,
}

#[derive(Debug, Serialize)]
pub struct PlanSummaryJson {
    pub product: String,
    pub changes_by_op: BTreeMap<String, u64>,
    pub conflicts: u64,
    pub hold_reason: String,
    /// What the safety limits counted; null in plans made before they were recorded.
    pub safety: Option<SafetyJson>,
    /// Keycloak users the plan left out (a conflict, or a diagnostic that kept them out).
    pub skipped_users: u64,
    /// Keycloak users with nothing to change.
    pub unchanged_users: u64,
    /// The licence seats the plan needs and has; null where the product reports none.
    pub seats: Option<SeatsJson>,
}

/// The licence seats of one product's plan.
#[derive(Debug, Serialize)]
pub struct SeatsJson {
    /// Accounts the plan would create or reactivate, before the limit.
    pub needed: u64,
    /// Seats taken when the product was read.
    pub used: u64,
    /// Seats of the licence; null when unlimited.
    pub limit: Option<u64>,
    /// Seats free when the product was read; null when unlimited.
    pub free: Option<u64>,
    /// Accounts left out for want of a seat.
    pub left_out: u64,
}

impl From<&v1::SeatUse> for SeatsJson {
    fn from(seats: &v1::SeatUse) -> SeatsJson {
        SeatsJson {
            needed: seats.needed,
            used: seats.used,
            limit: seats.limit,
            free: seats.limit.map(|limit| limit.saturating_sub(seats.used)),
            left_out: seats.left_out,
        }
    }
}

/// "seats: 12 needed, 3 free of 50 (9 left out)", or "seats: 12 needed, unlimited".
fn seats_line(seats: &v1::SeatUse) -> String {
    match seats.limit {
        None => format!("seats: {} needed, unlimited licence", seats.needed),
        Some(limit) => {
            let free = limit.saturating_sub(seats.used);
            let mut line = format!("seats: {} needed, {free} free of {limit}", seats.needed);
            if seats.left_out > 0 {
                line.push_str(&format!(" ({} left out: no seat)", seats.left_out));
            }
            line
        }
    }
}

/// What takes access away in one product's plan, and what it is measured against.
#[derive(Debug, Serialize)]
pub struct SafetyJson {
    pub losing_access: u64,
    pub managed_accounts: u64,
    pub removed_memberships: u64,
    pub managed_memberships: u64,
    pub removed_groups: u64,
    pub links: u64,
    pub first_run: bool,
}

impl From<&v1::SafetyCounts> for SafetyJson {
    fn from(safety: &v1::SafetyCounts) -> SafetyJson {
        SafetyJson {
            losing_access: safety.losing_access,
            managed_accounts: safety.managed_accounts,
            removed_memberships: safety.removed_memberships,
            managed_memberships: safety.managed_memberships,
            removed_groups: safety.removed_groups,
            links: safety.links,
            first_run: safety.first_run,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ChangeJson {
    pub id: String,
    pub product: String,
    pub op: String,
    pub keycloak_user_id: String,
    pub login: String,
    pub email: String,
    pub group: String,
    pub reason: String,
    pub outcome: String,
    pub message: String,
    pub product_status: u32,
    pub finished_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RunDetailsJson {
    pub run: RunJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<ChangeJson>>,
}

#[derive(Debug, Serialize)]
pub struct ConnectionCheckJson {
    pub target: String,
    pub ok: bool,
    pub message: String,
    pub details: BTreeMap<String, String>,
}

impl From<&v1::Run> for RunJson {
    fn from(run: &v1::Run) -> RunJson {
        RunJson {
            id: run.run_id.clone(),
            mode: mode_name(run.mode()).to_owned(),
            state: state_name(run.state()).to_owned(),
            trigger: trigger_name(run.trigger()).to_owned(),
            event: run.event.as_ref().map(EventJson::from),
            connector: run.connector.clone(),
            products: run
                .products
                .iter()
                .map(|product| product_name(Product::try_from(*product).unwrap_or_default()))
                .map(str::to_owned)
                .collect(),
            created_at: run.created_at.as_ref().map(timestamp),
            updated_at: run.updated_at.as_ref().map(timestamp),
            finished_at: run.finished_at.as_ref().map(timestamp),
            reason: run.reason.clone(),
            requested_by: run.requested_by.clone(),
            approved_by: run.approved_by.clone(),
            approval_reason: run.approval_reason.clone(),
            approved_at: run.approved_at.as_ref().map(timestamp),
            hold_expires_at: run.hold_expires_at.as_ref().map(timestamp),
            progress: run
                .progress
                .iter()
                .map(|progress| ProgressJson {
                    product: product_name(progress.product()).to_owned(),
                    planned: progress.planned,
                    applied: progress.applied,
                    already_done: progress.already_done,
                    skipped: progress.skipped,
                    failed: progress.failed,
                })
                .collect(),
            plan: run
                .plan
                .iter()
                .map(|summary| PlanSummaryJson {
                    product: product_name(summary.product()).to_owned(),
                    changes_by_op: summary
                        .changes_by_op
                        .iter()
                        .map(|(op, count)| (op_key(op), *count))
                        .collect(),
                    conflicts: summary.conflicts,
                    hold_reason: summary.hold_reason.clone(),
                    safety: summary.safety.as_ref().map(SafetyJson::from),
                    skipped_users: summary.skipped_users,
                    unchanged_users: summary.unchanged_users,
                    seats: summary.seats.as_ref().map(SeatsJson::from),
                })
                .collect(),
        }
    }
}

impl From<&v1::ChangeRecord> for ChangeJson {
    fn from(record: &v1::ChangeRecord) -> ChangeJson {
        let change = record.change.clone().unwrap_or_default();
        ChangeJson {
            login: login(&change).to_owned(),
            email: email(&change).to_owned(),
            id: change.id.clone(),
            product: product_name(change.product()).to_owned(),
            op: op_name(change.op()).to_owned(),
            keycloak_user_id: change.keycloak_user_id.clone(),
            group: change.group.clone(),
            reason: change.reason.clone(),
            outcome: outcome_name(record.outcome()).to_owned(),
            message: record.message.clone(),
            product_status: record.product_status,
            finished_at: record.finished_at.as_ref().map(timestamp),
        }
    }
}

impl From<&v1::ConnectionCheck> for ConnectionCheckJson {
    fn from(check: &v1::ConnectionCheck) -> ConnectionCheckJson {
        ConnectionCheckJson {
            target: check.target.clone(),
            ok: check.ok,
            message: check.message.clone(),
            details: check
                .details
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        }
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> Result<(), serde_json::Error> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Columns aligned with two spaces between them; numbers could be right-aligned but a
/// plain left alignment keeps the text easy to grep and cut.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut line = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index + 1 == cells.len() {
                line.push_str(cell);
            } else {
                let padding = widths[index] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(padding + 2));
            }
        }
        line.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The per-product progress of a run as a table.
pub fn progress_table(run: &v1::Run) -> String {
    let rows: Vec<Vec<String>> = run
        .progress
        .iter()
        .map(|progress| {
            vec![
                product_name(progress.product()).to_owned(),
                progress.planned.to_string(),
                progress.applied.to_string(),
                progress.already_done.to_string(),
                progress.skipped.to_string(),
                progress.failed.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "PRODUCT",
            "PLANNED",
            "APPLIED",
            "ALREADY DONE",
            "SKIPPED",
            "FAILED",
        ],
        &rows,
    )
}

/// "jira: create_user 3, add_membership 2; users: 1 skipped, 40 unchanged" per product of
/// the plan.
pub fn plan_lines(run: &v1::Run) -> Vec<String> {
    run.plan
        .iter()
        .map(|summary| {
            let mut ops: Vec<(&String, &u64)> = summary
                .changes_by_op
                .iter()
                .filter(|(_, count)| **count > 0)
                .collect();
            ops.sort_by_key(|(op, _)| ChangeOp::from_str_name(op).map_or(i32::MAX, |op| op as i32));
            let ops: Vec<String> = ops
                .iter()
                .map(|(op, count)| format!("{} {count}", op_key(op)))
                .collect();
            let mut line = format!(
                "{}: {}",
                product_name(summary.product()),
                if ops.is_empty() {
                    "nothing".to_owned()
                } else {
                    ops.join(", ")
                }
            );
            if summary.conflicts > 0 {
                line.push_str(&format!(" ({} conflicts)", summary.conflicts));
            }
            if summary.skipped_users > 0 || summary.unchanged_users > 0 {
                line.push_str(&format!(
                    "; users: {} skipped, {} unchanged",
                    summary.skipped_users, summary.unchanged_users
                ));
            }
            if let Some(seats) = &summary.seats {
                line.push_str(&format!("; {}", seats_line(seats)));
            }
            if !summary.hold_reason.is_empty() {
                line.push_str(&format!(" [held: {}]", summary.hold_reason));
            }
            line
        })
        .collect()
}

/// Per product of a held run's plan: why it is held (or that it is not) and what the
/// safety limits counted, e.g. "jira: held: 12 of 40 accounts would lose access;
/// 12 of 40 managed accounts lose access, 30 of 200 memberships removed, 0 groups
/// removed, 0 accounts linked".
pub fn hold_lines(run: &v1::Run) -> Vec<String> {
    run.plan
        .iter()
        .map(|summary| {
            let product = product_name(summary.product());
            let held = if summary.hold_reason.is_empty() {
                "not held".to_owned()
            } else {
                format!("held: {}", summary.hold_reason)
            };
            match &summary.safety {
                Some(safety) => format!("{product}: {held}; {}", safety_text(safety)),
                None => format!("{product}: {held}"),
            }
        })
        .collect()
}

/// The safety counts of one product's plan, in words.
pub fn safety_text(safety: &v1::SafetyCounts) -> String {
    let mut text = format!(
        "{} of {} managed accounts lose access, {} of {} memberships removed, {} groups \
         removed, {} accounts linked",
        safety.losing_access,
        safety.managed_accounts,
        safety.removed_memberships,
        safety.managed_memberships,
        safety.removed_groups,
        safety.links,
    );
    if safety.first_run {
        text.push_str(" (first run: links do not count)");
    }
    text
}

/// The login a change is about: the new one, the one before, or the account named.
pub fn login(change: &v1::Change) -> &str {
    let from_fields = [change.fields.as_ref(), change.previous.as_ref()]
        .into_iter()
        .flatten()
        .map(|fields| fields.login.as_str())
        .find(|login| !login.is_empty());
    if let Some(login) = from_fields {
        return login;
    }
    match change
        .account
        .as_ref()
        .and_then(|account| account.r#ref.as_ref())
    {
        Some(v1::account_ref::Ref::NewLogin(login)) => login,
        Some(v1::account_ref::Ref::AccountId(id)) => id,
        None => "",
    }
}

fn email(change: &v1::Change) -> &str {
    [change.fields.as_ref(), change.previous.as_ref()]
        .into_iter()
        .flatten()
        .map(|fields| fields.email.as_str())
        .find(|email| !email.is_empty())
        .unwrap_or("")
}

/// RFC 3339 in UTC, to the second.
pub fn timestamp(timestamp: &prost_types::Timestamp) -> String {
    match jiff::Timestamp::new(timestamp.seconds, 0) {
        Ok(time) => time.to_string(),
        Err(_) => format!("{}s", timestamp.seconds),
    }
}

/// "2026-11-22 14:03:09Z" for tables.
pub fn short_time(time: Option<&prost_types::Timestamp>) -> String {
    time.map(timestamp)
        .map(|text| text.replacen('T', " ", 1))
        .unwrap_or_default()
}

/// `create_user` for `CHANGE_OP_CREATE_USER`.
fn op_key(op: &str) -> String {
    op.strip_prefix("CHANGE_OP_").unwrap_or(op).to_lowercase()
}

pub fn state_name(state: RunState) -> &'static str {
    match state {
        RunState::Unspecified => "unspecified",
        RunState::Requested => "requested",
        RunState::Fetching => "fetching",
        RunState::Planning => "planning",
        RunState::Held => "held",
        RunState::Applying => "applying",
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
        RunState::Cancelled => "cancelled",
    }
}

pub fn mode_name(mode: RunMode) -> &'static str {
    match mode {
        RunMode::Unspecified => "unspecified",
        RunMode::Simulate => "simulate",
        RunMode::Apply => "apply",
    }
}

pub fn trigger_name(trigger: RunTrigger) -> &'static str {
    match trigger {
        RunTrigger::Unspecified => "unspecified",
        RunTrigger::Api => "api",
        RunTrigger::Schedule => "schedule",
        RunTrigger::Event => "event",
    }
}

pub fn product_name(product: Product) -> &'static str {
    match product {
        Product::Unspecified => "unspecified",
        Product::Jira => "jira",
        Product::Confluence => "confluence",
        Product::Bitbucket => "bitbucket",
    }
}

pub fn op_name(op: ChangeOp) -> &'static str {
    match op {
        ChangeOp::Unspecified => "unspecified",
        ChangeOp::CreateGroup => "create_group",
        ChangeOp::CreateUser => "create_user",
        ChangeOp::LinkUser => "link_user",
        ChangeOp::UpdateUser => "update_user",
        ChangeOp::ReactivateUser => "reactivate_user",
        ChangeOp::AddMembership => "add_membership",
        ChangeOp::RemoveMembership => "remove_membership",
        ChangeOp::DeactivateUser => "deactivate_user",
        ChangeOp::DeleteUser => "delete_user",
        ChangeOp::RemoveGroup => "remove_group",
    }
}

pub fn outcome_name(outcome: ChangeOutcome) -> &'static str {
    match outcome {
        ChangeOutcome::Unspecified => "unspecified",
        ChangeOutcome::Planned => "planned",
        ChangeOutcome::Applied => "applied",
        ChangeOutcome::AlreadyDone => "already_done",
        ChangeOutcome::Skipped => "skipped",
        ChangeOutcome::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_its_columns_and_trims_the_last() {
        let rows = vec![
            vec!["01JD".to_owned(), "apply".to_owned(), "".to_owned()],
            vec!["x".to_owned(), "simulate".to_owned(), "3/4".to_owned()],
        ];
        assert_eq!(
            table(&["ID", "MODE", "CHANGES"], &rows),
            "ID    MODE      CHANGES\n01JD  apply\nx     simulate  3/4"
        );
    }

    #[test]
    fn an_event_run_shows_what_its_events_named_in_a_line_a_cell_and_json() {
        let mut run = v1::Run {
            event: Some(v1::EventTrigger {
                user_ids: vec!["u1".to_owned(), "u2".to_owned()],
                group_ids: vec!["g1".to_owned()],
                events: 3,
                full_sync_reason: String::new(),
            }),
            ..v1::Run::default()
        };
        run.set_trigger(RunTrigger::Event);
        let event = run.event.clone().expect("set above");
        assert_eq!(event_text(&event), "3 events, users u1,u2; groups g1");
        assert_eq!(trigger_cell(&run), "event: 2 users, 1 group");
        let json = serde_json::to_value(RunJson::from(&run)).expect("serializes");
        assert_eq!(json["trigger"], "event");
        assert_eq!(json["event"]["events"], 3);
        assert_eq!(json["event"]["user_ids"][1], "u2");
        assert_eq!(json["event"]["group_ids"][0], "g1");

        let many = v1::EventTrigger {
            user_ids: (1..=7).map(|n| format!("u{n}")).collect(),
            events: 1,
            ..v1::EventTrigger::default()
        };
        assert_eq!(
            event_text(&many),
            "1 event, users u1,u2,u3,u4,u5 and 2 more"
        );

        run.event = Some(v1::EventTrigger {
            events: 1,
            full_sync_reason: "a gap in the watermark".to_owned(),
            ..v1::EventTrigger::default()
        });
        assert_eq!(
            event_text(run.event.as_ref().expect("set above")),
            "1 event, full sync: a gap in the watermark"
        );
        assert_eq!(trigger_cell(&run), "event: full sync");

        let mut api = v1::Run::default();
        api.set_trigger(RunTrigger::Api);
        assert_eq!(trigger_cell(&api), "api");
        let json = serde_json::to_value(RunJson::from(&api)).expect("serializes");
        assert!(json["event"].is_null());
    }

    #[test]
    fn a_run_converts_to_json_with_short_lower_case_names() {
        let mut run = v1::Run {
            run_id: "01JD000000000000000000000".to_owned(),
            products: vec![Product::Jira as i32],
            created_at: Some(prost_types::Timestamp {
                seconds: 1_795_356_000,
                nanos: 5,
            }),
            plan: vec![v1::PlanSummary {
                product: Product::Jira as i32,
                changes_by_op: [("CHANGE_OP_CREATE_USER".to_owned(), 3)].into(),
                ..v1::PlanSummary::default()
            }],
            ..v1::Run::default()
        };
        run.set_state(RunState::Succeeded);
        run.set_mode(RunMode::Simulate);
        let json = serde_json::to_value(RunJson::from(&run)).expect("serializes");
        assert_eq!(json["state"], "succeeded");
        assert_eq!(json["mode"], "simulate");
        assert_eq!(json["products"][0], "jira");
        assert_eq!(json["created_at"], "2026-11-22T14:00:00Z");
        assert_eq!(json["plan"][0]["changes_by_op"]["create_user"], 3);
        assert_eq!(plan_lines(&run), ["jira: create_user 3"]);
        assert_eq!(json["approved_by"], "");
        assert!(json["approved_at"].is_null());
        assert!(json["hold_expires_at"].is_null());
        assert!(json["plan"][0]["safety"].is_null());
    }

    #[test]
    fn a_held_run_shows_each_products_hold_and_safety_counts_and_an_approval_who_why_when() {
        let mut run = v1::Run {
            run_id: "01JD000000000000000000000".to_owned(),
            hold_expires_at: Some(prost_types::Timestamp {
                seconds: 1_795_356_000,
                nanos: 0,
            }),
            approved_by: "alice".to_owned(),
            approval_reason: "checked with HR".to_owned(),
            approved_at: Some(prost_types::Timestamp {
                seconds: 1_795_352_400,
                nanos: 0,
            }),
            plan: vec![
                v1::PlanSummary {
                    product: Product::Jira as i32,
                    hold_reason: "12 of 40 accounts would lose access".to_owned(),
                    safety: Some(v1::SafetyCounts {
                        losing_access: 12,
                        managed_accounts: 40,
                        removed_memberships: 30,
                        managed_memberships: 200,
                        removed_groups: 1,
                        links: 2,
                        first_run: false,
                    }),
                    ..v1::PlanSummary::default()
                },
                v1::PlanSummary {
                    product: Product::Confluence as i32,
                    ..v1::PlanSummary::default()
                },
            ],
            ..v1::Run::default()
        };
        run.set_state(RunState::Held);
        assert_eq!(
            hold_lines(&run),
            [
                "jira: held: 12 of 40 accounts would lose access; 12 of 40 managed accounts \
                 lose access, 30 of 200 memberships removed, 1 groups removed, 2 accounts linked",
                "confluence: not held",
            ]
        );
        let json = serde_json::to_value(RunJson::from(&run)).expect("serializes");
        assert_eq!(json["hold_expires_at"], "2026-11-22T14:00:00Z");
        assert_eq!(json["approved_by"], "alice");
        assert_eq!(json["approval_reason"], "checked with HR");
        assert_eq!(json["approved_at"], "2026-11-22T13:00:00Z");
        assert_eq!(json["plan"][0]["safety"]["losing_access"], 12);
        assert_eq!(json["plan"][0]["safety"]["first_run"], false);
        assert!(json["plan"][1]["safety"].is_null());
    }
}
