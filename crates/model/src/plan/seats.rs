//! Licence seats. Every account a plan creates or reactivates takes a seat; when the product
//! reports fewer seats free than the plan needs, the plan keeps the first accounts in plan order
//! (creations by login, then reactivations by login) up to the seats that are free and leaves the
//! others out, each with a [`DiagnosticKind::NoSeat`] diagnostic, instead of sending changes the
//! product would refuse (Confluence 402, Bitbucket 403) or accept without access (Jira creates
//! the user without application access). Seats that the plan's own deactivations free are not
//! counted: they are applied after the creations, so a later run uses them.

use std::collections::HashSet;

use super::index::Report;
use super::{AccountRef, Action, Change, ChangeOp, DiagnosticKind, SeatUse};
use crate::snapshot::UserId;
use crate::state::ProductState;

/// Takes out of `changes` (in plan order) the accounts beyond the free seats, with every other
/// change of their users, and answers what the plan needs and has; `None` when the product
/// reports no seats.
pub(super) fn limit(
    state: &ProductState,
    changes: &mut Vec<Change>,
    report: &mut Report,
) -> Option<SeatUse> {
    let seats = state.seats?;
    let takes_seat =
        |change: &Change| matches!(change.op(), ChangeOp::CreateUser | ChangeOp::ReactivateUser);
    let needed = changes.iter().filter(|change| takes_seat(change)).count() as u64;
    let mut usage = SeatUse {
        needed,
        used: seats.used,
        limit: seats.limit,
        left_out: 0,
    };
    let Some(limit) = seats.limit else {
        return Some(usage);
    };
    let free = limit.saturating_sub(seats.used);
    if needed <= free {
        return Some(usage);
    }
    let mut granted = 0u64;
    let mut left_out_users: HashSet<UserId> = HashSet::new();
    let mut left_out_logins: HashSet<String> = HashSet::new();
    for change in changes.iter().filter(|change| takes_seat(change)) {
        if granted < free {
            granted += 1;
            continue;
        }
        let login = match &change.action {
            Action::CreateUser { fields } => fields.login.clone(),
            Action::ReactivateUser { account } => account.login().to_owned(),
            _ => continue,
        };
        report.diagnose(
            DiagnosticKind::NoSeat,
            change.keycloak_user_id.as_ref(),
            &login,
            format!(
                "{} has no licence seat for this account: the plan needs {needed} seat(s) and \
                 {free} are free ({} of {limit} taken); a later run makes it once a seat is free",
                state.product, seats.used,
            ),
        );
        if let Some(user) = &change.keycloak_user_id {
            left_out_users.insert(user.clone());
        }
        left_out_logins.insert(login.to_lowercase());
    }
    usage.left_out = needed - granted;
    changes.retain(|change| {
        let by_user = change
            .keycloak_user_id
            .as_ref()
            .is_some_and(|user| left_out_users.contains(user));
        let by_new_login = match &change.action {
            Action::AddMembership {
                account: AccountRef::New { login },
                ..
            }
            | Action::CreateUser {
                fields: super::AccountFields { login, .. },
            } => left_out_logins.contains(&login.to_lowercase()),
            _ => false,
        };
        !(by_user || by_new_login)
    });
    Some(usage)
}
