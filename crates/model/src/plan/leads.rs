//! Jira project and component leads of accounts that lose access. Jira refuses to deactivate a
//! user who leads a project or a component, and to delete one who leads a project (Jira's
//! `DefaultUserService`: `validateUpdateUser` for deactivation, `validateDeleteUserReferences`
//! for deletion). The plan hands each such lead to `cleanup.lead_replacement` in the same change,
//! before the deactivation or deletion, or leaves the account as it is with a
//! [`DiagnosticKind::Lead`] diagnostic; it never plans a change Jira would refuse.

use super::index::{Ctx, Report};
use super::{DiagnosticKind, Handover};
use crate::snapshot::UserId;
use crate::state::{Account, LeadTarget};

/// The handovers a deactivation (`deleting == false`) or deletion of `account` needs, in a
/// stable order; `None` when it needs some and the policy gives no account to hand them to,
/// after reporting why.
pub(super) fn handovers(
    ctx: &Ctx<'_>,
    account: &Account,
    deleting: bool,
    user: Option<&UserId>,
    report: &mut Report,
) -> Option<Vec<Handover>> {
    if ctx.state.leads.is_empty() {
        return Some(Vec::new());
    }
    let mut targets: Vec<&LeadTarget> = ctx
        .state
        .leads
        .iter()
        .filter(|lead| lead.account_id == account.id)
        .map(|lead| &lead.target)
        .filter(|target| !deleting || target.blocks_deletion())
        .collect();
    if targets.is_empty() {
        return Some(Vec::new());
    }
    targets.sort();
    targets.dedup();
    let listed = targets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let refused = if deleting {
        "Jira refuses to delete a project lead"
    } else {
        "Jira refuses to deactivate a project or component lead"
    };
    let replacement = ctx.policy.policy().cleanup.lead_replacement.as_deref();
    let Some(replacement) = replacement.map(str::trim) else {
        report.diagnose(
            DiagnosticKind::Lead,
            user,
            &account.login,
            format!(
                "leads {listed}; {refused}, so the account is left as it is \
                 (set cleanup.lead_replacement to hand its leads to another account)"
            ),
        );
        return None;
    };
    let usable = ctx.state.accounts.iter().any(|candidate| {
        candidate.active
            && candidate.id != account.id
            && candidate.login.eq_ignore_ascii_case(replacement)
    });
    if !usable {
        let why = if account.login.eq_ignore_ascii_case(replacement) {
            "is this account itself".to_owned()
        } else {
            format!("has no active account in {}", ctx.state.product)
        };
        report.diagnose(
            DiagnosticKind::Lead,
            user,
            &account.login,
            format!(
                "leads {listed}; {refused}, and cleanup.lead_replacement {replacement} {why}, \
                 so the account is left as it is"
            ),
        );
        return None;
    }
    Some(
        targets
            .into_iter()
            .map(|target| Handover {
                target: target.clone(),
                to: replacement.to_owned(),
            })
            .collect(),
    )
}

/// The words a change's reason gains for its handovers: "; hands project ABC to jira-admin
/// first", or nothing.
pub(super) fn reason_suffix(handovers: &[Handover]) -> String {
    let Some(first) = handovers.first() else {
        return String::new();
    };
    let targets = handovers
        .iter()
        .map(|handover| handover.target.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!("; hands the lead of {targets} to {} first", first.to)
}
