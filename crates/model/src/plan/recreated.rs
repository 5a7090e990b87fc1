//! A Keycloak user deleted and re-created under the same username. Keycloak gives the new user a
//! new id, so without this rule the managed account would stay tied to the old id (and be cleaned
//! up) while the new user's login is taken by it (a standing conflict). Instead, the account
//! follows the login: when a managed account's Keycloak user is missing from the snapshot and an
//! enabled user in scope without an account has the account's login (compared as every login is,
//! see [`crate::mapping::fold`]), the account is linked to that user ([`LinkedBy::Recreated`]).
//! It is a link like any other: it counts toward `safety.max_links`, and a protected account or
//! another connector's is never relinked.

use super::DiagnosticKind;
use super::index::{Ctx, NONE, Report};
use super::resolve::LinkedBy;

/// Whether the account of index `account_idx`, which holds the login of the pending user of index
/// `user_idx`, follows the login to that user: the account is managed, usable and not protected
/// (nor another connector's), and its Keycloak user is missing from the snapshot. Reports the
/// relink when it does.
pub(super) fn follows_login(
    ctx: &Ctx<'_>,
    account_idx: usize,
    user_idx: usize,
    report: &mut Report,
) -> Option<LinkedBy> {
    let account = &ctx.state.accounts[account_idx];
    let old_user = account.keycloak_user_id.as_ref()?;
    let follows = ctx.accounts.usable[account_idx]
        && ctx.accounts.user_of[account_idx] == NONE
        && ctx.protection(account_idx).is_none();
    if !follows {
        return None;
    }
    let user = &ctx.snapshot.users[user_idx];
    report.diagnose(
        DiagnosticKind::Recreated,
        Some(&user.id),
        &account.login,
        format!(
            "the Keycloak user of account {} ({old_user}) was deleted and re-created as {}; the \
             account follows the username",
            account.id, user.id
        ),
    );
    Some(LinkedBy::Recreated)
}
