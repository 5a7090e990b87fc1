//! Answers to "why?": `keysync run ID --skipped` lists the conflicts and diagnostics a
//! run's plan stored (who was left out, and why), and `keysync explain RUN USER` prints
//! every decision the plan made about one user, for every product: the changes planned
//! with what became of them, and the conflicts and diagnostics that name the user, each
//! with the rule and the data behind it.

use std::process::ExitCode;

use proto::v1::{self, DiagnosticKind, Product};
use serde::Serialize;

use crate::{
    client::Connection,
    commands::list_changes,
    error::Error,
    output::{self, ChangeJson},
};

/// One decision of a plan about a user, as `explain` and `run --skipped` print it.
#[derive(Debug, Serialize)]
pub struct DecisionJson {
    pub product: String,
    /// `change`, `conflict`, or the diagnostic's kind (`missing_data`, `out_of_scope`...).
    pub kind: String,
    /// The Keycloak username, else the login or subject the decision names.
    pub user: String,
    pub keycloak_user_id: String,
    /// The login, group or id the decision is about.
    pub subject: String,
    /// The rule and the data behind the decision.
    pub reason: String,
    /// For a change: its operation, outcome and the product's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeJson>,
}

#[derive(Debug, Serialize)]
struct ExplainJson<'a> {
    run: &'a str,
    user: &'a str,
    decisions: &'a [DecisionJson],
    /// When no decision names the user: each product's scope, which may have left them out
    /// of the snapshot.
    #[serde(skip_serializing_if = "<[DecisionJson]>::is_empty")]
    scopes: &'a [DecisionJson],
}

/// `keysync run ID --skipped`: the plan's conflicts and diagnostics as a table.
pub async fn skipped(
    connection: &Connection,
    request: v1::ListDiagnosticsRequest,
    json: bool,
) -> Result<ExitCode, Error> {
    let (conflicts, diagnostics) = list_diagnostics(connection, request).await?;
    let decisions: Vec<DecisionJson> = conflicts
        .iter()
        .map(from_conflict)
        .chain(diagnostics.iter().map(from_diagnostic))
        .collect();
    if json {
        output::print_json(&decisions)?;
        return Ok(ExitCode::SUCCESS);
    }
    if decisions.is_empty() {
        out!("No conflicts or diagnostics match.");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = decisions
        .iter()
        .map(|decision| {
            vec![
                decision.product.clone(),
                decision.user.clone(),
                decision.kind.clone(),
                decision.reason.clone(),
            ]
        })
        .collect();
    out!(
        "{}",
        output::table(&["PRODUCT", "USER", "KIND", "REASON"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}

/// `keysync explain RUN USER`: every decision of the run's plan about `user`.
pub async fn explain(
    connection: &Connection,
    run_id: &str,
    user: &str,
    json: bool,
) -> Result<ExitCode, Error> {
    let decisions = decisions_about(connection, run_id, user).await?;
    // Nothing names the user: the products' scopes say who the run did not even read.
    let scopes = if decisions.is_empty() {
        scope_decisions(connection, run_id).await?
    } else {
        Vec::new()
    };
    if json {
        output::print_json(&ExplainJson {
            run: run_id,
            user,
            decisions: &decisions,
            scopes: &scopes,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    if decisions.is_empty() {
        out!(
            "No decision about {user} in run {run_id}: no change, conflict or diagnostic names \
             them."
        );
        if scopes.is_empty() {
            out!(
                "Every user is in scope, so they were in Keycloak with nothing to change, or \
                 not in Keycloak at all."
            );
        } else {
            out!("If they are in Keycloak, the scope left them out:");
            for scope in &scopes {
                out!("  {}: {}", scope.product, scope.reason);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    out!("Every decision of run {run_id} about {user}:");
    let mut product = "";
    for decision in &decisions {
        if decision.product != product {
            product = &decision.product;
            out!();
            out!("{product}:");
        }
        out!("  {}", decision_line(decision));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of `explain`: the kind, what it is about, the reason, and for a change what
/// became of it.
pub fn decision_line(decision: &DecisionJson) -> String {
    let about = if decision.keycloak_user_id.is_empty() {
        decision.subject.clone()
    } else {
        format!(
            "{} (Keycloak user {})",
            decision.subject, decision.keycloak_user_id
        )
    };
    let Some(change) = &decision.change else {
        return format!("{} {about}: {}", decision.kind, decision.reason);
    };
    let what = if change.group.is_empty() {
        change.login.clone()
    } else {
        format!("{} group {}", change.login, change.group)
    };
    let mut line = format!(
        "change {} {what}: {} [{}",
        change.op, change.reason, change.outcome
    );
    if !change.message.is_empty() {
        line.push_str(": ");
        line.push_str(&change.message);
    }
    line.push(']');
    line
}

/// The decisions about `user`, by product, then conflicts, diagnostics and changes in
/// plan order. `user` is matched as given, then by every Keycloak user id that the first
/// answers name, so a username finds changes made under a different login.
async fn decisions_about(
    connection: &Connection,
    run_id: &str,
    user: &str,
) -> Result<Vec<DecisionJson>, Error> {
    let mut conflicts: Vec<v1::Conflict> = Vec::new();
    let mut diagnostics: Vec<v1::Diagnostic> = Vec::new();
    let mut changes: Vec<v1::ChangeRecord> = Vec::new();
    let mut asked: Vec<String> = Vec::new();
    let mut to_ask: Vec<String> = vec![user.to_owned()];
    while let Some(name) = to_ask.pop() {
        if asked.iter().any(|done| done.eq_ignore_ascii_case(&name)) {
            continue;
        }
        let request = v1::ListDiagnosticsRequest {
            run_id: run_id.to_owned(),
            user: name.clone(),
            ..v1::ListDiagnosticsRequest::default()
        };
        let (found_conflicts, found_diagnostics) = list_diagnostics(connection, request).await?;
        let request = v1::ListChangesRequest {
            run_id: run_id.to_owned(),
            user: name.clone(),
            ..v1::ListChangesRequest::default()
        };
        let found_changes = list_changes(connection, request).await?;
        asked.push(name);
        let ids = found_conflicts
            .iter()
            .flat_map(|conflict| conflict.keycloak_user_ids.iter())
            .chain(found_diagnostics.iter().map(|d| &d.keycloak_user_id))
            .chain(
                found_changes
                    .iter()
                    .filter_map(|record| record.change.as_ref())
                    .map(|change| &change.keycloak_user_id),
            )
            .filter(|id| !id.is_empty());
        to_ask.extend(ids.cloned());
        for conflict in found_conflicts {
            if !conflicts.contains(&conflict) {
                conflicts.push(conflict);
            }
        }
        for diagnostic in found_diagnostics {
            if !diagnostics.contains(&diagnostic) {
                diagnostics.push(diagnostic);
            }
        }
        for record in found_changes {
            if !changes.iter().any(|known| known.change == record.change) {
                changes.push(record);
            }
        }
    }
    let mut decisions: Vec<(i32, u8, DecisionJson)> = Vec::new();
    decisions.extend(conflicts.iter().map(|c| (c.product, 0, from_conflict(c))));
    decisions.extend(
        diagnostics
            .iter()
            .map(|d| (d.product, 1, from_diagnostic(d))),
    );
    decisions.extend(changes.iter().map(|record| {
        let product = record.change.as_ref().map_or(0, |change| change.product);
        (product, 2, from_change(record))
    }));
    // By product, then conflicts, diagnostics and changes; each in plan order (stable).
    decisions.sort_by_key(|(product, rank, _)| (*product, *rank));
    Ok(decisions
        .into_iter()
        .map(|(_, _, decision)| decision)
        .collect())
}

/// The products' scope diagnostics: which groups a run read users from.
async fn scope_decisions(
    connection: &Connection,
    run_id: &str,
) -> Result<Vec<DecisionJson>, Error> {
    let mut request = v1::ListDiagnosticsRequest {
        run_id: run_id.to_owned(),
        ..v1::ListDiagnosticsRequest::default()
    };
    request.set_kind(DiagnosticKind::OutOfScope);
    let (_, diagnostics) = list_diagnostics(connection, request).await?;
    Ok(diagnostics
        .iter()
        .filter(|diagnostic| diagnostic.keycloak_user_id.is_empty())
        .map(from_diagnostic)
        .collect())
}

/// Every page of the conflicts and diagnostics `request` asks for.
async fn list_diagnostics(
    connection: &Connection,
    mut request: v1::ListDiagnosticsRequest,
) -> Result<(Vec<v1::Conflict>, Vec<v1::Diagnostic>), Error> {
    request.page_size = 1000;
    let mut conflicts = Vec::new();
    let mut diagnostics = Vec::new();
    loop {
        let page = connection
            .client()
            .list_diagnostics(request.clone())
            .await
            .map_err(|status| connection.error(status))?
            .into_inner();
        conflicts.extend(page.conflicts);
        diagnostics.extend(page.diagnostics);
        if page.next_page_token.is_empty() {
            return Ok((conflicts, diagnostics));
        }
        request.page_token = page.next_page_token;
    }
}

fn product_of(product: i32) -> String {
    output::product_name(Product::try_from(product).unwrap_or_default()).to_owned()
}

pub fn from_conflict(conflict: &v1::Conflict) -> DecisionJson {
    let user = conflict
        .usernames
        .iter()
        .find(|name| !name.is_empty())
        .unwrap_or(&conflict.login);
    DecisionJson {
        product: product_of(conflict.product),
        kind: "conflict".to_owned(),
        user: user.clone(),
        keycloak_user_id: conflict.keycloak_user_ids.join(", "),
        subject: format!("login {}", conflict.login),
        reason: conflict.reason.clone(),
        change: None,
    }
}

pub fn from_diagnostic(diagnostic: &v1::Diagnostic) -> DecisionJson {
    let user = if diagnostic.username.is_empty() {
        &diagnostic.subject
    } else {
        &diagnostic.username
    };
    DecisionJson {
        product: product_of(diagnostic.product),
        kind: kind_name(diagnostic.kind()).to_owned(),
        user: user.clone(),
        keycloak_user_id: diagnostic.keycloak_user_id.clone(),
        subject: diagnostic.subject.clone(),
        reason: diagnostic.message.clone(),
        change: None,
    }
}

fn from_change(record: &v1::ChangeRecord) -> DecisionJson {
    let change = ChangeJson::from(record);
    DecisionJson {
        product: change.product.clone(),
        kind: "change".to_owned(),
        user: change.login.clone(),
        keycloak_user_id: change.keycloak_user_id.clone(),
        subject: change.login.clone(),
        reason: change.reason.clone(),
        change: Some(change),
    }
}

/// `missing_data` for `DIAGNOSTIC_KIND_MISSING_DATA`, as `--kind` takes it.
pub fn kind_name(kind: DiagnosticKind) -> &'static str {
    match kind {
        DiagnosticKind::Unspecified => "unspecified",
        DiagnosticKind::InvalidInput => "invalid_input",
        DiagnosticKind::MissingData => "missing_data",
        DiagnosticKind::Protected => "protected",
        DiagnosticKind::Unsupported => "unsupported",
        DiagnosticKind::Deferred => "deferred",
        DiagnosticKind::MergedGroups => "merged_groups",
        DiagnosticKind::Disabled => "disabled",
        DiagnosticKind::Recreated => "recreated",
        DiagnosticKind::OutOfScope => "out_of_scope",
        DiagnosticKind::NotSyncable => "not_syncable",
        DiagnosticKind::Lead => "lead",
        DiagnosticKind::NoSeat => "no_seat",
    }
}

#[cfg(test)]
mod tests {
    use proto::v1::ChangeOutcome;

    use super::*;

    #[test]
    fn a_diagnostic_line_names_the_kind_the_user_and_the_rule() {
        let mut diagnostic = v1::Diagnostic {
            product: Product::Jira as i32,
            subject: "bob".to_owned(),
            message: "no usable email, which a new account needs; not created".to_owned(),
            keycloak_user_id: "u2".to_owned(),
            username: "Bob".to_owned(),
            ..v1::Diagnostic::default()
        };
        diagnostic.set_kind(DiagnosticKind::MissingData);
        let decision = from_diagnostic(&diagnostic);
        assert_eq!(decision.user, "Bob");
        assert_eq!(
            decision_line(&decision),
            "missing_data bob (Keycloak user u2): no usable email, which a new account needs; \
             not created"
        );
    }

    #[test]
    fn a_change_line_has_its_outcome_and_message() {
        let mut record = v1::ChangeRecord {
            change: Some(v1::Change {
                product: Product::Jira as i32,
                op: v1::ChangeOp::AddMembership as i32,
                keycloak_user_id: "u1".to_owned(),
                account: Some(v1::AccountRef {
                    r#ref: Some(v1::account_ref::Ref::NewLogin("ann".to_owned())),
                }),
                group: "devs".to_owned(),
                reason: "member of /devs".to_owned(),
                ..v1::Change::default()
            }),
            message: "no seat left".to_owned(),
            ..v1::ChangeRecord::default()
        };
        record.set_outcome(ChangeOutcome::Failed);
        assert_eq!(
            decision_line(&from_change(&record)),
            "change add_membership ann group devs: member of /devs [failed: no seat left]"
        );
    }
}
