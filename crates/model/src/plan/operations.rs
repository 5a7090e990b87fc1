//! The policy's operation switches (`operations.*`): which switch each change needs, and the
//! [`DiagnosticKind::Disabled`] diagnostics that count what the switches that are off left out of
//! a plan. The emitter asks [`blocked_by`] before it keeps a change, so a switch that is off takes
//! out exactly the changes of its kinds and nothing else.

use super::index::Report;
use super::{AccountRef, Action, ChangeOp, DiagnosticKind};
use crate::policy::Operations;

/// One switch of [`Operations`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Switch {
    CreateUsers,
    UpdateUsers,
    GroupChanges,
    DeactivateUsers,
}

impl Switch {
    const ALL: [Switch; 4] = [
        Switch::CreateUsers,
        Switch::UpdateUsers,
        Switch::GroupChanges,
        Switch::DeactivateUsers,
    ];

    /// The switch's key, as in the configuration file.
    fn key(self) -> &'static str {
        match self {
            Switch::CreateUsers => "operations.create_users",
            Switch::UpdateUsers => "operations.update_users",
            Switch::GroupChanges => "operations.group_changes",
            Switch::DeactivateUsers => "operations.deactivate_users",
        }
    }

    fn is_on(self, operations: &Operations) -> bool {
        match self {
            Switch::CreateUsers => operations.create_users,
            Switch::UpdateUsers => operations.update_users,
            Switch::GroupChanges => operations.group_changes,
            Switch::DeactivateUsers => operations.deactivate_users,
        }
    }
}

/// Why the emitter makes a change: to sync an account (or a group), or to take an account's
/// access away (a disabled user, or cleanup), where removing a membership is part of that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    Sync,
    AccessRemoval,
}

/// The switch that is off and keeps `action` out of the plan, if one is. A membership of a new
/// account needs the account (`create_users`) and `group_changes`; a membership removed to take
/// access away needs `deactivate_users` and `group_changes`; a link needs nothing.
pub(super) fn blocked_by(
    operations: &Operations,
    action: &Action,
    purpose: Purpose,
) -> Option<Switch> {
    use Switch::{CreateUsers, DeactivateUsers, GroupChanges, UpdateUsers};
    let needs: &[Switch] = match action {
        Action::LinkUser { .. } => &[],
        Action::CreateUser { .. } => &[CreateUsers],
        Action::AddMembership {
            account: AccountRef::New { .. },
            ..
        } => &[CreateUsers, GroupChanges],
        Action::UpdateUser { .. } | Action::ReactivateUser { .. } => &[UpdateUsers],
        Action::DeactivateUser { .. } | Action::DeleteUser { .. } => &[DeactivateUsers],
        Action::RemoveMembership { .. } if purpose == Purpose::AccessRemoval => {
            &[DeactivateUsers, GroupChanges]
        }
        Action::CreateGroup { .. }
        | Action::AddMembership { .. }
        | Action::RemoveMembership { .. }
        | Action::RemoveGroup { .. } => &[GroupChanges],
    };
    needs
        .iter()
        .copied()
        .find(|switch| !switch.is_on(operations))
}

/// What the switches that are off left out of a plan: per switch, how many changes of each kind.
#[derive(Clone, Default)]
pub(super) struct Skipped {
    counts: [[u32; ChangeOp::ALL.len()]; Switch::ALL.len()],
}

impl Skipped {
    pub(super) fn add(&mut self, switch: Switch, op: ChangeOp) {
        self.counts[switch as usize][op as usize] += 1;
    }

    pub(super) fn absorb(&mut self, other: &Skipped) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            for (mine, theirs) in mine.iter_mut().zip(theirs) {
                *mine += theirs;
            }
        }
    }

    /// One [`DiagnosticKind::Disabled`] diagnostic per switch that left something out, about the
    /// switch's key: "3 account(s) would be created and 2 membership(s) would be added, but
    /// operations.create_users is off".
    pub(super) fn report(&self, report: &mut Report) {
        for switch in Switch::ALL {
            let parts: Vec<String> = ChangeOp::ALL
                .iter()
                .filter_map(|&op| {
                    let count = self.counts[switch as usize][op as usize];
                    (count > 0).then(|| format!("{count} {}", would_be(op)))
                })
                .collect();
            let Some((last, rest)) = parts.split_last() else {
                continue;
            };
            let listed = if rest.is_empty() {
                last.clone()
            } else {
                format!("{} and {last}", rest.join(", "))
            };
            report.diagnose(
                DiagnosticKind::Disabled,
                None,
                switch.key(),
                format!("{listed}, but {} is off", switch.key()),
            );
        }
    }
}

/// What a change of kind `op` would do, after a count.
fn would_be(op: ChangeOp) -> &'static str {
    match op {
        ChangeOp::CreateGroup => "group(s) would be created",
        ChangeOp::CreateUser => "account(s) would be created",
        ChangeOp::LinkUser => "account(s) would be linked",
        ChangeOp::UpdateUser => "account(s) would be updated",
        ChangeOp::ReactivateUser => "account(s) would be reactivated",
        ChangeOp::AddMembership => "membership(s) would be added",
        ChangeOp::RemoveMembership => "membership(s) would be removed",
        ChangeOp::DeactivateUser => "account(s) would be deactivated",
        ChangeOp::DeleteUser => "account(s) would be deleted",
        ChangeOp::RemoveGroup => "group(s) would be removed",
    }
}
