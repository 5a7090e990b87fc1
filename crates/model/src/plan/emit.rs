//! Emitting changes: the group changes, the creation of new users, and per account the link, the
//! update, the reactivation, the memberships, or the removal of access; and the safety hold.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use super::index::{Ctx, NONE, Report, joined};
use super::leads;
use super::operations::{Purpose, Skipped, blocked_by};
use super::resolve::{Disposition, Lifecycle, LinkedBy, Rename, lifecycle};
use super::{AccountFields, AccountRef, Action, Change, ChangeId, DiagnosticKind};
use crate::hash::FastMap;
use crate::mapping::{self, fold, trim};
use crate::policy::{CleanupAction, Operations};
use crate::snapshot::{KeycloakUser, UserId};
use crate::state::{Account, Product};

pub(super) struct Output {
    product: Product,
    operations: Operations,
    /// The Keycloak users a delta plan may change ([`super::plan_scoped`]); `None`: every one.
    scope: Option<Arc<BTreeSet<UserId>>>,
    pub(super) changes: Vec<Change>,
    pub(super) losing_access: usize,
    /// The changes the switches of `operations` left out.
    pub(super) skipped: Skipped,
    /// Scratch space for rendering display names without allocating.
    display: String,
    /// Scratch space for a user's desired groups.
    groups: Vec<u32>,
}

impl Output {
    pub(super) fn new(
        product: Product,
        operations: Operations,
        scope: Option<Arc<BTreeSet<UserId>>>,
    ) -> Output {
        Output {
            product,
            operations,
            scope,
            changes: Vec::new(),
            losing_access: 0,
            skipped: Skipped::default(),
            display: String::new(),
            groups: Vec::new(),
        }
    }

    /// Adds a change made to sync an account or a group, unless a switch of `operations` that
    /// is off leaves it out; returns whether it was added.
    fn push(&mut self, user: Option<&UserId>, action: Action, reason: String) -> bool {
        self.push_for(Purpose::Sync, user, action, reason)
    }

    /// Adds a change made for `purpose`, unless a switch of `operations` that is off leaves it out
    /// (and counts it); returns whether it was added.
    fn push_for(
        &mut self,
        purpose: Purpose,
        user: Option<&UserId>,
        action: Action,
        reason: String,
    ) -> bool {
        if let Some(scope) = &self.scope {
            // A delta changes only the users it names, and removes no group: what it does
            // not name is left to the next full sync.
            let in_scope = match user {
                Some(user) => scope.contains(user),
                None => !matches!(action, Action::RemoveGroup { .. }),
            };
            if !in_scope {
                return false;
            }
        }
        if let Some(switch) = blocked_by(&self.operations, &action, purpose) {
            self.skipped.add(switch, action.op());
            return false;
        }
        let id = ChangeId::of(self.product, user, &action);
        self.changes.push(Change {
            id,
            product: self.product,
            keycloak_user_id: user.cloned(),
            action,
            reason,
        });
        true
    }
}

pub(super) fn emit_group_changes(ctx: &Ctx<'_>, out: &mut Output) {
    let groups = &ctx.product_groups;
    for (idx, flags) in groups.flags.iter().enumerate() {
        let name = groups.names[idx].as_ref();
        if flags.removed {
            out.push(
                None,
                Action::RemoveGroup {
                    group: name.to_owned(),
                },
                "created by keysync and no longer mapped from Keycloak or named as a default group"
                    .to_owned(),
            );
            continue;
        }
        if flags.in_state || !(flags.mapped || flags.default_new || flags.default_all) {
            continue;
        }
        let reason = if flags.mapped {
            let (n_sources, first_path) = groups.sources[idx];
            match n_sources {
                1 => format!("mapped from Keycloak group {first_path}"),
                _ => format!(
                    "mapped from Keycloak group {first_path} and {} more",
                    n_sources - 1
                ),
            }
        } else if flags.default_all {
            "default group for all users".to_owned()
        } else {
            "default group for new users".to_owned()
        };
        out.push(
            None,
            Action::CreateGroup {
                group: name.to_owned(),
            },
            reason,
        );
    }
}

/// The product groups a user should be in: the mapped groups of its Keycloak groups, the defaults
/// for all users, and for a new account the defaults for new users. Sorted and deduplicated into
/// `desired`.
fn desired_groups(ctx: &Ctx<'_>, user_idx: usize, new_account: bool, desired: &mut Vec<u32>) {
    desired.clear();
    for &group in ctx.users.groups.get(user_idx) {
        let target = ctx.keycloak_groups.target[group as usize];
        if target != NONE {
            desired.push(target);
        }
    }
    desired.extend_from_slice(&ctx.product_groups.default_all);
    if new_account {
        desired.extend_from_slice(&ctx.product_groups.default_new);
    }
    let flags = &ctx.product_groups.flags;
    desired.retain(|&group| flags[group as usize].usable());
    desired.sort_unstable();
    desired.dedup();
}

/// Why a user should be in a product group.
fn membership_reason(ctx: &Ctx<'_>, user_idx: usize, group: u32) -> String {
    let mut source: Option<&str> = None;
    for &keycloak_group in ctx.users.groups.get(user_idx) {
        if ctx.keycloak_groups.target[keycloak_group as usize] == group {
            let path = ctx.snapshot.groups[keycloak_group as usize].path.as_str();
            if source.is_none_or(|current| path < current) {
                source = Some(path);
            }
        }
    }
    match source {
        Some(path) => format!("member of Keycloak group {path}"),
        None if ctx.product_groups.flags[group as usize].default_all => {
            "default group for all users".to_owned()
        }
        None => "default group for new users".to_owned(),
    }
}

pub(super) fn emit_create(ctx: &Ctx<'_>, out: &mut Output, user_idx: usize) {
    let user = &ctx.snapshot.users[user_idx];
    let login = ctx.users.logins[user_idx].as_ref();
    mapping::display_name_into(ctx.policy, user, login, &mut out.display);
    let email = mapping::email(&ctx.policy.policy().attributes.email, user).map(Cow::into_owned);
    let fields = AccountFields {
        login: login.to_owned(),
        display_name: out.display.clone(),
        email,
    };
    let reason = if ctx.policy.policy().scope.required_groups.is_empty() {
        "new Keycloak user".to_owned()
    } else {
        let mut through: Vec<&str> = ctx
            .users
            .groups
            .get(user_idx)
            .iter()
            .filter(|&&group| ctx.keycloak_groups.in_scope[group as usize])
            .map(|&group| ctx.snapshot.groups[group as usize].path.as_str())
            .collect();
        through.sort_unstable();
        format!(
            "new Keycloak user, in scope through group {}",
            through.first().copied().unwrap_or("?")
        )
    };
    out.push(Some(&user.id), Action::CreateUser { fields }, reason);
    let mut desired = Vec::new();
    desired_groups(ctx, user_idx, true, &mut desired);
    for group in desired {
        let reason = membership_reason(ctx, user_idx, group);
        out.push(
            Some(&user.id),
            Action::AddMembership {
                account: AccountRef::New {
                    login: login.to_owned(),
                },
                group: ctx.product_groups.names[group as usize].to_string(),
            },
            reason,
        );
    }
}

/// Plans the changes of every account. The accounts are planned in two halves on two threads; the
/// halves' changes are merged, and [`super::plan`] sorts all changes, so the result does not depend
/// on the split.
pub(super) fn emit_accounts(
    ctx: &Ctx<'_>,
    out: &mut Output,
    report: &mut Report,
    renames: &FastMap<u32, Rename>,
    dispositions: &[Disposition],
) {
    let half = dispositions.len() / 2;
    let (product, operations, delta) = (out.product, out.operations, out.scope.clone());
    std::thread::scope(|scope| {
        let second_half = scope.spawn(|| {
            let mut second_out = Output::new(product, operations, delta);
            let mut second_report = Report::default();
            for (account_idx, disposition) in dispositions.iter().enumerate().skip(half) {
                emit_account(
                    ctx,
                    &mut second_out,
                    &mut second_report,
                    renames,
                    account_idx,
                    *disposition,
                );
            }
            (second_out, second_report)
        });
        for (account_idx, disposition) in dispositions.iter().enumerate().take(half) {
            emit_account(ctx, out, report, renames, account_idx, *disposition);
        }
        let (second_out, second_report) = joined(second_half.join());
        out.changes.extend(second_out.changes);
        out.losing_access += second_out.losing_access;
        out.skipped.absorb(&second_out.skipped);
        report.absorb(second_report);
    });
}

/// Plans the changes of one account, unless the account is protected.
fn emit_account(
    ctx: &Ctx<'_>,
    out: &mut Output,
    report: &mut Report,
    renames: &FastMap<u32, Rename>,
    account_idx: usize,
    disposition: Disposition,
) {
    let account = &ctx.state.accounts[account_idx];
    if disposition == Disposition::Untouched {
        return;
    }
    if let Some(reason) = ctx.protection_reason(account_idx) {
        report.diagnose(
            DiagnosticKind::Protected,
            account.keycloak_user_id.as_ref(),
            &account.login,
            reason,
        );
        return;
    }
    match disposition {
        Disposition::Untouched => {}
        Disposition::Sync { user, link } => {
            let keycloak_user = &ctx.snapshot.users[user as usize];
            if keycloak_user.enabled {
                emit_sync(ctx, out, report, renames, account_idx, user as usize, link);
            } else {
                let reason = "disabled in Keycloak".to_owned();
                emit_access_removal(
                    ctx,
                    out,
                    report,
                    account_idx,
                    Some(keycloak_user),
                    CleanupAction::Deactivate,
                    reason,
                );
            }
        }
        Disposition::Cleanup { user } => {
            let keycloak_user = user.map(|idx| &ctx.snapshot.users[idx as usize]);
            let reason = match keycloak_user {
                None => "no longer in Keycloak".to_owned(),
                Some(_) => {
                    let required = &ctx.policy.policy().scope.required_groups;
                    match required.as_slice() {
                        [only] => format!("no longer in required group {only}"),
                        _ => format!("no longer in any required group ({})", required.join(", ")),
                    }
                }
            };
            let action = ctx.policy.policy().cleanup.action;
            emit_access_removal(ctx, out, report, account_idx, keycloak_user, action, reason);
        }
    }
}

/// Links, updates, reactivates and fixes the memberships of the account of an enabled user in
/// scope.
fn emit_sync(
    ctx: &Ctx<'_>,
    out: &mut Output,
    report: &mut Report,
    renames: &FastMap<u32, Rename>,
    account_idx: usize,
    user_idx: usize,
    link: Option<LinkedBy>,
) {
    let account = &ctx.state.accounts[account_idx];
    let user = &ctx.snapshot.users[user_idx];
    if let Some(by) = link {
        emit_link(out, account, user, by, ctx.first_run);
    }
    let renamed_login = if renames.get(&(account_idx as u32)) == Some(&Rename::Renamed) {
        ctx.users.logins[user_idx].as_ref()
    } else {
        account.login.as_str()
    };
    // The login after the update, which `operations.update_users` may leave out.
    let final_login = if emit_update(ctx, out, account, user, renamed_login) {
        renamed_login
    } else {
        account.login.as_str()
    };
    // Built only when a change needs it: most accounts need none.
    let after = || AccountRef::Existing {
        id: account.id.clone(),
        login: final_login.to_owned(),
    };
    if !account.active {
        emit_reactivation(ctx, out, report, account, &user.id, after);
    }
    emit_memberships(ctx, out, account_idx, user_idx, &user.id, after);
}

/// Links an existing account, with the evidence and whether the link counts toward the hold.
fn emit_link(
    out: &mut Output,
    account: &Account,
    user: &KeycloakUser,
    by: LinkedBy,
    first_run: bool,
) {
    let email = account.email.as_deref().unwrap_or("");
    let evidence = match by {
        LinkedBy::Login => "same login".to_owned(),
        LinkedBy::Email if user.email_verified => format!("same verified email {email}"),
        LinkedBy::Email => format!("same email {email}, not verified in Keycloak"),
        LinkedBy::Recreated => format!(
            "same login, and its Keycloak user {} was deleted and re-created",
            account
                .keycloak_user_id
                .as_ref()
                .map_or("", |user| user.as_str())
        ),
    };
    let counted = if first_run {
        "first sync of this product: linking existing accounts is the expected migration"
    } else {
        "counts toward safety.max_links"
    };
    let reason = format!(
        "existing account {} linked: {evidence} ({counted})",
        account.login
    );
    out.push(
        Some(&user.id),
        Action::LinkUser {
            id: account.id.clone(),
            login: account.login.clone(),
        },
        reason,
    );
}

/// Updates the account's login (to `final_login`), display name and email when they differ from
/// what the user's data gives; the reason lists every difference. Returns whether the plan has the
/// update.
fn emit_update(
    ctx: &Ctx<'_>,
    out: &mut Output,
    account: &Account,
    user: &KeycloakUser,
    final_login: &str,
) -> bool {
    mapping::display_name_into(ctx.policy, user, final_login, &mut out.display);
    let desired_email = mapping::email(&ctx.policy.policy().attributes.email, user);
    let mut differences = Vec::new();
    if final_login != account.login {
        differences.push(format!(
            "login changed from {} to {final_login}",
            account.login
        ));
    }
    if out.display != account.display_name {
        differences.push(format!(
            "display name changed from \"{}\" to \"{}\"",
            account.display_name, out.display
        ));
    }
    // The new email, when it changes; a user without a usable email keeps the account's.
    let new_email: Option<&str> = match (&desired_email, &account.email) {
        (Some(desired), Some(current))
            if desired.as_ref() == current.as_str() || fold(desired) == fold(trim(current)) =>
        {
            None
        }
        (Some(desired), Some(current)) => {
            differences.push(format!("email changed from {current} to {desired}"));
            Some(desired)
        }
        (Some(desired), None) => {
            differences.push(format!("email set to {desired}"));
            Some(desired)
        }
        (None, _) => None,
    };
    if differences.is_empty() {
        return false;
    }
    let previous = AccountFields {
        login: account.login.clone(),
        display_name: account.display_name.clone(),
        email: account.email.clone(),
    };
    let fields = AccountFields {
        login: final_login.to_owned(),
        display_name: out.display.clone(),
        email: new_email
            .map(str::to_owned)
            .or_else(|| account.email.clone()),
    };
    let target = AccountRef::Existing {
        id: account.id.clone(),
        login: account.login.clone(),
    };
    out.push(
        Some(&user.id),
        Action::UpdateUser {
            account: target,
            previous,
            fields,
        },
        differences.join("; "),
    )
}

/// Reactivates an inactive account, or reports that the product cannot.
fn emit_reactivation(
    ctx: &Ctx<'_>,
    out: &mut Output,
    report: &mut Report,
    account: &Account,
    user_id: &UserId,
    after: impl Fn() -> AccountRef,
) {
    if ctx.state.capabilities.can_deactivate {
        out.push(
            Some(user_id),
            Action::ReactivateUser { account: after() },
            format!(
                "enabled and in scope in Keycloak, but inactive in {}",
                ctx.state.product
            ),
        );
    } else {
        report.diagnose(
            DiagnosticKind::Unsupported,
            Some(user_id),
            &account.login,
            format!(
                "the account is inactive, and {} cannot reactivate accounts",
                ctx.state.product
            ),
        );
    }
}

/// Adds the account to the groups its user should be in, and removes it from the groups keysync
/// prunes that its user should not be in.
fn emit_memberships(
    ctx: &Ctx<'_>,
    out: &mut Output,
    account_idx: usize,
    user_idx: usize,
    user_id: &UserId,
    after: impl Fn() -> AccountRef,
) {
    let mut desired = std::mem::take(&mut out.groups);
    desired_groups(ctx, user_idx, false, &mut desired);
    let current_groups = ctx.accounts.groups.get(account_idx);
    for &group in &desired {
        if current_groups.binary_search(&group).is_err() {
            let reason = membership_reason(ctx, user_idx, group);
            let group = ctx.product_groups.names[group as usize].to_string();
            out.push(
                Some(user_id),
                Action::AddMembership {
                    account: after(),
                    group,
                },
                reason,
            );
        }
    }
    for &group in current_groups {
        if ctx.product_groups.prunes(group) && desired.binary_search(&group).is_err() {
            let name = ctx.product_groups.names[group as usize].to_string();
            let reason = if ctx.product_groups.flags[group as usize].mapped {
                format!("not in any Keycloak group mapped to {name}")
            } else {
                "the group is no longer mapped from Keycloak".to_owned()
            };
            out.push(
                Some(user_id),
                Action::RemoveMembership {
                    account: after(),
                    group: name,
                },
                reason,
            );
        }
    }
    out.groups = desired;
}

/// Takes access away from an account: deactivates, deletes or strips its groups, as `action` and
/// the product's capabilities say; counts it for the safety limit.
fn emit_access_removal(
    ctx: &Ctx<'_>,
    out: &mut Output,
    report: &mut Report,
    account_idx: usize,
    user: Option<&KeycloakUser>,
    action: CleanupAction,
    reason: String,
) {
    let account: &Account = &ctx.state.accounts[account_idx];
    let user_id = user
        .map(|user| &user.id)
        .or(account.keycloak_user_id.as_ref());
    let target = AccountRef::Existing {
        id: account.id.clone(),
        login: account.login.clone(),
    };
    let lifecycle = lifecycle(ctx, action);
    let fallback_note = |reason: &str, what: &str| -> String {
        if action == CleanupAction::Deactivate {
            format!(
                "{reason}; {} cannot deactivate, so {what}",
                ctx.state.product
            )
        } else {
            reason.to_owned()
        }
    };
    match lifecycle {
        Lifecycle::Keep => {}
        Lifecycle::Deactivate => {
            if !account.active {
                return;
            }
            let Some(handovers) = leads::handovers(ctx, account, false, user_id, report) else {
                return;
            };
            let reason = reason + &leads::reason_suffix(&handovers);
            let action = Action::DeactivateUser {
                account: target,
                handovers,
            };
            if out.push_for(Purpose::AccessRemoval, user_id, action, reason) {
                out.losing_access += 1;
            }
        }
        Lifecycle::Delete => {
            let Some(handovers) = leads::handovers(ctx, account, true, user_id, report) else {
                return;
            };
            let reason = fallback_note(&reason, "the account is deleted")
                + &leads::reason_suffix(&handovers);
            let action = Action::DeleteUser {
                account: target,
                handovers,
            };
            if out.push_for(Purpose::AccessRemoval, user_id, action, reason) {
                out.losing_access += 1;
            }
        }
        Lifecycle::StripGroups => {
            let reason = fallback_note(&reason, "its groups are removed");
            let mut stripped = false;
            for &group in ctx.accounts.groups.get(account_idx) {
                if ctx.product_groups.strips(group) {
                    let group = ctx.product_groups.names[group as usize].to_string();
                    let action = Action::RemoveMembership {
                        account: target.clone(),
                        group,
                    };
                    stripped |=
                        out.push_for(Purpose::AccessRemoval, user_id, action, reason.clone());
                }
            }
            if stripped {
                out.losing_access += 1;
            }
        }
    }
}
