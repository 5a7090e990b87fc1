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
    pub connector: String,
    /// Empty means every configured product.
    pub products: Vec<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub finished_at: Option<String>,
    pub reason: String,
    pub requested_by: String,
    pub progress: Vec<ProgressJson>,
    pub plan: Vec<PlanSummaryJson>,
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
    println!("{}", serde_json::to_string_pretty(value)?);
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

/// "jira: create_user 3, add_membership 2" per product of the plan.
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
            if !summary.hold_reason.is_empty() {
                line.push_str(&format!(" [held: {}]", summary.hold_reason));
            }
            line
        })
        .collect()
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
    }
}
