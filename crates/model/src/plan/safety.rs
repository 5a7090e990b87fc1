//! The safety limits: what a plan takes away or hands over, counted from its changes, and the
//! hold when a count crosses its limit.
//!
//! The counts come from the emitted changes themselves (and, for accounts losing access, from
//! the emitter's tally of accounts stripped of their groups), so no way of taking access away
//! escapes them: every `RemoveMembership`, `RemoveGroup`, `DeactivateUser`, `DeleteUser` and
//! `LinkUser` of a plan is counted.

use std::borrow::Cow;

use super::index::{Ctx, UserStatus};
use super::{Action, Change, Hold, SafetyCounts};
use crate::hash::FastMap;
use crate::mapping::fold;

/// What the plan's `changes` take away or hand over, against what keysync managed before.
/// `losing_access` is the emitter's count of accounts deactivated, deleted or stripped.
pub(super) fn count(ctx: &Ctx<'_>, changes: &[Change], losing_access: usize) -> SafetyCounts {
    let mut counts = SafetyCounts {
        losing_access,
        first_run: ctx.first_run,
        ..SafetyCounts::default()
    };
    for (idx, account) in ctx.state.accounts.iter().enumerate() {
        if account.is_managed() {
            counts.managed_accounts += 1;
            // An account whose id occurs twice is left alone, and its memberships with it.
            if ctx.accounts.usable[idx] {
                counts.managed_memberships += ctx.accounts.groups.get(idx).len();
            }
        }
    }
    for change in changes {
        match change.action {
            Action::RemoveMembership { .. } => counts.removed_memberships += 1,
            Action::RemoveGroup { .. } => counts.removed_groups += 1,
            Action::LinkUser { .. } => counts.links += 1,
            _ => {}
        }
    }
    counts
}

/// The hold, if the plan crosses a limit of `policy.safety` or the snapshot looks empty; its
/// reason names every limit that tripped, with the numbers.
pub(super) fn hold(ctx: &Ctx<'_>, changes: &[Change], counts: &SafetyCounts) -> Option<Hold> {
    let safety = &ctx.policy.policy().safety;
    let product = ctx.state.product;
    let managed = counts.managed_accounts;
    let mut reasons = Vec::new();
    if managed > 0 {
        if ctx.snapshot.users.is_empty() {
            reasons.push(format!(
                "the Keycloak snapshot has no users, but keysync manages {managed} account(s) \
                 in {product}"
            ));
        } else if !ctx.users.status.contains(&UserStatus::InScope) {
            reasons.push(format!(
                "no Keycloak user is in scope, but keysync manages {managed} account(s) in \
                 {product}"
            ));
        }
    }
    let losing = counts.losing_access;
    if over(losing, safety.max_accounts) {
        reasons.push(format!(
            "{losing} account(s) would lose access, more than safety.max_accounts ({})",
            safety.max_accounts
        ));
    }
    if over_percent(losing, managed, safety.max_percent) {
        reasons.push(format!(
            "{losing} of {managed} managed accounts ({}%) would lose access, more than \
             safety.max_percent ({}%)",
            percent(losing, managed),
            safety.max_percent
        ));
    }
    let removed = counts.removed_memberships;
    if over(removed, safety.max_memberships) {
        reasons.push(format!(
            "{removed} membership(s) would be removed, more than safety.max_memberships ({})",
            safety.max_memberships
        ));
    }
    let memberships = counts.managed_memberships;
    if over_percent(removed, memberships, safety.max_memberships_percent) {
        reasons.push(format!(
            "{removed} of {memberships} memberships of managed accounts ({}%) would be \
             removed, more than safety.max_memberships_percent ({}%)",
            percent(removed, memberships),
            safety.max_memberships_percent
        ));
    }
    if counts.removed_memberships > 0 {
        group_losses(ctx, changes, &mut reasons);
    }
    if over(counts.removed_groups, safety.max_groups) {
        reasons.push(format!(
            "{} group(s) would be removed, more than safety.max_groups ({})",
            counts.removed_groups, safety.max_groups
        ));
    }
    if !counts.first_run && over(counts.links, safety.max_links) {
        reasons.push(format!(
            "{} existing account(s) would be linked to Keycloak users after the first sync, \
             more than safety.max_links ({})",
            counts.links, safety.max_links
        ));
    }
    if reasons.is_empty() {
        return None;
    }
    Some(Hold {
        reason: reasons.join("; "),
    })
}

/// Reasons for the groups that lose most of their members, and for mapped Keycloak groups
/// missing from the snapshot whose product group loses members.
fn group_losses(ctx: &Ctx<'_>, changes: &[Change], reasons: &mut Vec<String>) {
    let mut removed: FastMap<Cow<'_, str>, (usize, &str)> = FastMap::default();
    for change in changes {
        if let Action::RemoveMembership { group, .. } = &change.action {
            removed.entry(fold(group)).or_insert((0, group)).0 += 1;
        }
    }
    let mut members: FastMap<Cow<'_, str>, usize> = FastMap::default();
    for membership in &ctx.state.memberships {
        let group = fold(membership.group.as_str());
        if removed.contains_key(&group) {
            *members.entry(group).or_default() += 1;
        }
    }
    let limit = ctx.policy.policy().safety.max_group_loss_percent;
    let mut losses: Vec<String> = removed
        .iter()
        .filter_map(|(key, &(gone, name))| {
            let total = members.get(key).copied().unwrap_or(gone).max(gone);
            (gone >= 2 && over_percent(gone, total, limit)).then(|| {
                format!(
                    "group {name} would lose {gone} of its {total} members ({}%), more than \
                     safety.max_group_loss_percent ({limit}%)",
                    percent(gone, total)
                )
            })
        })
        .collect();
    if let Some(map) = ctx.policy.policy().groups.explicit_map() {
        let present: std::collections::HashSet<&str> = ctx
            .snapshot
            .groups
            .iter()
            .map(|group| group.path.as_str())
            .collect();
        for (path, target) in map {
            if !present.contains(path.as_str())
                && !ctx.policy.is_excluded_group(path)
                && removed.contains_key(&fold(target))
            {
                losses.push(format!(
                    "Keycloak group {path}, mapped to {target}, is missing from the snapshot, \
                     and {target} would lose members"
                ));
            }
        }
    }
    losses.sort();
    losses.dedup();
    reasons.extend(losses);
}

fn over(count: usize, limit: u32) -> bool {
    count as u64 > u64::from(limit)
}

fn over_percent(part: usize, whole: usize, limit: u32) -> bool {
    whole > 0 && (part as u64) * 100 > u64::from(limit) * whole as u64
}

fn percent(part: usize, whole: usize) -> u64 {
    (part as u64 * 100).div_ceil(whole.max(1) as u64)
}
