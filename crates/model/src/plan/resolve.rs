//! Deciding what happens to each Keycloak user (matched to its managed account, linked, created, or
//! nothing) and to each account (synced, cleaned up, or left alone), which renames the product can
//! make, and which held logins wait for the next run and which are conflicts.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::DiagnosticKind;
use super::index::{Ctx, MANY, NONE, Report, UserStatus};
use super::protect::Protection;
use crate::hash::{BATCH, FastMap, IdKey, IdTable, fast_map, hash_str};
use crate::mapping::{self, fold, trim};
use crate::policy::{CleanupAction, Fallback};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkedBy {
    Login,
    Email,
    /// A managed account whose Keycloak user is gone, to the new user with its login (see
    /// [`super::recreated`]).
    Recreated,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Resolution {
    /// Nothing is planned for the user: out of scope, ignored, disabled without an account, or in a
    /// conflict.
    Nothing,
    Managed(u32),
    Link(u32, LinkedBy),
    Create,
    /// Would be created or linked, but the login belongs to another user's account, or to several
    /// accounts.
    Held,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Disposition {
    Untouched,
    Sync {
        user: u32,
        link: Option<LinkedBy>,
    },
    /// The account's user is gone from Keycloak (`None`) or out of scope.
    Cleanup {
        user: Option<u32>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Rename {
    Renamed,
    /// The new login belongs to another account.
    Blocked,
    Refused,
}

/// Accounts by folded login (the one with the smallest id, and how many), only for the logins the
/// plan looks up: the logins of users who need an account and the new logins of renamed users.
/// Indexing every account would cost more than the rest of the plan.
pub(super) type LoginIndex<'c> = FastMap<&'c str, (u32, u32)>;

pub(super) struct Resolved<'c> {
    /// What happens to each Keycloak user.
    pub(super) resolutions: Vec<Resolution>,
    pub(super) by_login: LoginIndex<'c>,
    /// Accounts whose user's login may differ from theirs: managed accounts whose login changed in
    /// Keycloak, and accounts being linked.
    pub(super) rename_candidates: Vec<u32>,
}

/// What happens to each Keycloak user: matched to its managed account, linked to an existing one,
/// created, or nothing. Reports the conflicts.
pub(super) fn resolve<'c>(ctx: &'c Ctx<'_>, report: &mut Report) -> Resolved<'c> {
    let claims = LoginClaims::of(ctx);
    let clashes = report_clashes(ctx, &claims, report);
    let by_email = linkable_by_email(ctx, &claims);
    let mut resolutions = vec![Resolution::Nothing; ctx.snapshot.users.len()];
    let Matched {
        mut by_login,
        rename_candidates,
        pending,
    } = match_managed_accounts(ctx, &clashes, &mut resolutions, report);
    count_login_holders(ctx, &mut by_login);
    for idx in pending {
        let idx = idx as usize;
        resolutions[idx] = link_or_create(ctx, idx, &by_login, &by_email, report);
    }
    drop_shared_email_links(ctx, &mut resolutions, report);
    let rename_candidates = rename_candidates
        .into_iter()
        .chain(
            resolutions
                .iter()
                .filter_map(|resolution| match resolution {
                    Resolution::Link(account_idx, _) => Some(*account_idx),
                    _ => None,
                }),
        )
        .collect();
    Resolved {
        resolutions,
        by_login,
        rename_candidates,
    }
}

/// The login of every user in scope, to find two users with one login.
struct LoginClaims<'c> {
    claims: IdTable<'c>,
    /// The logins more than one user in scope maps to.
    clashing: FastMap<&'c str, ()>,
}

impl<'c> LoginClaims<'c> {
    /// Hashes are computed a batch at a time and their slots touched before inserting, as in the
    /// other joins of a million keys.
    fn of(ctx: &'c Ctx<'_>) -> LoginClaims<'c> {
        let n_users = ctx.snapshot.users.len();
        let login_key = |idx: usize| {
            let login = ctx.users.logins[idx].as_ref();
            IdKey {
                hash: hash_str(login),
                text: login,
            }
        };
        let mut claims = IdTable::with_capacity(n_users);
        let mut clashing: FastMap<&str, ()> = fast_map(0);
        let mut keys: Vec<(usize, IdKey<'_>)> = Vec::with_capacity(BATCH);
        let mut touched = 0u64;
        for batch_start in (0..n_users).step_by(BATCH) {
            keys.clear();
            for idx in batch_start..(batch_start + BATCH).min(n_users) {
                if ctx.users.status[idx] == UserStatus::InScope {
                    let key = login_key(idx);
                    touched ^= claims.touch(&key);
                    keys.push((idx, key));
                }
            }
            for &(idx, key) in &keys {
                if claims.insert(key, idx as u32).is_some() {
                    clashing.insert(key.text, ());
                }
            }
        }
        std::hint::black_box(touched);
        LoginClaims { claims, clashing }
    }

    /// Whether a user in scope maps to `login`.
    fn is_claimed(&self, login: &str) -> bool {
        self.claims
            .get(&IdKey {
                hash: hash_str(login),
                text: login,
            })
            .is_some()
    }
}

/// The logins several users in scope map to, with those users; each of them gets a conflict.
fn report_clashes<'c>(
    ctx: &'c Ctx<'_>,
    claims: &LoginClaims<'c>,
    report: &mut Report,
) -> BTreeMap<&'c str, Vec<u32>> {
    let users = &ctx.snapshot.users;
    let mut clashes: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    if !claims.clashing.is_empty() {
        for (idx, login) in ctx.users.logins.iter().enumerate() {
            let clashing = claims.clashing.contains_key(login.as_ref());
            if ctx.users.status[idx] == UserStatus::InScope && clashing {
                clashes.entry(login.as_ref()).or_default().push(idx as u32);
            }
        }
    }
    for (login, clashing) in &clashes {
        let mut names: Vec<String> = clashing
            .iter()
            .map(|&idx| {
                format!(
                    "{} ({})",
                    users[idx as usize].username, users[idx as usize].id
                )
            })
            .collect();
        names.sort();
        let reason = format!(
            "Keycloak users {} all map to this login; none of them is synced",
            names.join(", ")
        );
        for &idx in clashing {
            report.conflict(&users[idx as usize].id, login, reason.clone());
        }
    }
    clashes
}

/// Accounts by folded email: the first, and how many.
type EmailIndex<'c> = FastMap<Cow<'c, str>, (u32, u32)>;

/// The accounts keysync may link by email, by folded email: usable, unmanaged, and with a login no
/// user in scope maps to; a protected one is there too, so that a match with it is reported and not
/// taken for no match. Empty when linking by email is off.
fn linkable_by_email<'c>(ctx: &Ctx<'c>, claims: &LoginClaims<'_>) -> EmailIndex<'c> {
    let policy = ctx.policy;
    let mut by_email: EmailIndex<'c> = fast_map(0);
    if !policy.policy().linking.by_email {
        return by_email;
    }
    for (idx, account) in ctx.state.accounts.iter().enumerate() {
        let Some(email) = &account.email else {
            continue;
        };
        let linkable = ctx.accounts.usable[idx]
            && !account.is_managed()
            && !claims.is_claimed(fold(trim(&account.login)).as_ref());
        if linkable {
            by_email
                .entry(fold(trim(email)))
                .and_modify(|(_, count)| *count += 1)
                .or_insert((idx as u32, 1));
        }
    }
    by_email
}

/// The outcome of [`match_managed_accounts`].
struct Matched<'c> {
    /// The logins of pending users and the new logins of renamed users, with no holders yet.
    by_login: LoginIndex<'c>,
    rename_candidates: Vec<u32>,
    /// Enabled users in scope without a managed account, whose login is not protected: they get
    /// an account, linked or created.
    pending: Vec<u32>,
}

/// Matches each user in scope (and not in a clash) to its managed account, noting the accounts
/// whose login changed in Keycloak, and collects the users who need an account. Reports users with
/// several accounts and users with a protected login.
fn match_managed_accounts<'c>(
    ctx: &'c Ctx<'_>,
    clashes: &BTreeMap<&str, Vec<u32>>,
    resolutions: &mut [Resolution],
    report: &mut Report,
) -> Matched<'c> {
    let accounts = &ctx.state.accounts;
    let mut by_login: LoginIndex<'c> = fast_map(0);
    let mut rename_candidates: Vec<u32> = Vec::new();
    let mut pending: Vec<u32> = Vec::new();
    for (idx, user) in ctx.snapshot.users.iter().enumerate() {
        if ctx.users.status[idx] != UserStatus::InScope {
            continue;
        }
        let login = ctx.users.logins[idx].as_ref();
        if clashes.contains_key(login) {
            continue;
        }
        match ctx.accounts.account_of_user[idx] {
            MANY => {
                report.conflict(
                    &user.id,
                    login,
                    "this Keycloak user is linked to several accounts".to_owned(),
                );
                continue;
            }
            NONE => {}
            account_idx => {
                resolutions[idx] = Resolution::Managed(account_idx);
                let current = trim(&accounts[account_idx as usize].login);
                if user.enabled && login != current && fold(login) != fold(current) {
                    by_login.insert(login, (NONE, 0));
                    rename_candidates.push(account_idx);
                }
                continue;
            }
        }
        if !user.enabled {
            continue;
        }
        if ctx.policy.is_protected(login) {
            report.conflict(
                &user.id,
                login,
                "this login matches a protected pattern; no account is created or linked"
                    .to_owned(),
            );
            continue;
        }
        by_login.insert(login, (NONE, 0));
        pending.push(idx as u32);
    }
    Matched {
        by_login,
        rename_candidates,
        pending,
    }
}

/// Finds the accounts that hold each login of the index, and drops the logins nobody holds.
fn count_login_holders(ctx: &Ctx<'_>, by_login: &mut LoginIndex<'_>) {
    let accounts = &ctx.state.accounts;
    for (idx, account) in accounts.iter().enumerate() {
        if let Some((first, count)) = by_login.get_mut(fold(trim(&account.login)).as_ref()) {
            // Of several accounts with one login, the smallest id is named, whatever the input
            // order.
            if *count == 0 || account.id < accounts[*first as usize].id {
                *first = idx as u32;
            }
            *count += 1;
        }
    }
    by_login.retain(|_, (_, count)| *count > 0);
}

/// What happens to a pending user: linked to the account with its login (or, failing that, to the
/// one account with its email; or, when the account is managed for a Keycloak user the snapshot
/// lacks, relinked to this user), held when its login belongs to a managed account or to several,
/// created, or nothing when that would conflict or the user lacks an email a new account needs.
fn link_or_create(
    ctx: &Ctx<'_>,
    idx: usize,
    by_login: &LoginIndex<'_>,
    by_email: &EmailIndex<'_>,
    report: &mut Report,
) -> Resolution {
    let policy = ctx.policy;
    let accounts = &ctx.state.accounts;
    let user = &ctx.snapshot.users[idx];
    let login = ctx.users.logins[idx].as_ref();
    if let Some(&(account_idx, count)) = by_login.get(login) {
        let account = &accounts[account_idx as usize];
        if count == 1
            && account.is_managed()
            && let Some(by) =
                super::recreated::follows_login(ctx, account_idx as usize, idx, report)
        {
            return Resolution::Link(account_idx, by);
        }
        if count > 1 || account.is_managed() {
            return Resolution::Held;
        } else if !ctx.accounts.usable[account_idx as usize] {
            report.conflict(
                &user.id,
                login,
                format!(
                    "this login belongs to account {}, whose id occurs more than once",
                    account.id
                ),
            );
        } else if let Some(protection) = ctx.protection(account_idx as usize) {
            let why = match protection {
                Protection::Login => String::new(),
                protection => ctx.protection_note(account_idx as usize, protection),
            };
            report.conflict(
                &user.id,
                login,
                format!(
                    "this login belongs to protected account {}{why}",
                    account.id
                ),
            );
        } else if !policy.policy().linking.by_login {
            report.conflict(
                &user.id,
                login,
                format!(
                    "this login belongs to account {}, which keysync does not manage, \
                     and linking by login is off",
                    account.id
                ),
            );
        } else {
            return Resolution::Link(account_idx, LinkedBy::Login);
        }
        return Resolution::Nothing;
    }
    let email_mapping = &policy.policy().attributes.email;
    let email = mapping::email(email_mapping, user);
    if let Some(email) = &email {
        match by_email.get(fold(email).as_ref()) {
            Some(&(account_idx, 1)) if ctx.protection(account_idx as usize).is_some() => {
                let account = &accounts[account_idx as usize];
                report.conflict(
                    &user.id,
                    login,
                    format!(
                        "email {email} belongs to protected account {} ({}); not linked",
                        account.id, account.login
                    ),
                );
                return Resolution::Nothing;
            }
            Some(&(account_idx, 1))
                if policy.policy().linking.by_email_requires_verified && !user.email_verified =>
            {
                let account = &accounts[account_idx as usize];
                report.conflict(
                    &user.id,
                    login,
                    format!(
                        "email {email} matches account {} ({}), but Keycloak has not verified \
                         it; not linked",
                        account.id, account.login
                    ),
                );
                return Resolution::Nothing;
            }
            Some(&(account_idx, 1)) => return Resolution::Link(account_idx, LinkedBy::Email),
            Some(&(_, count)) => {
                report.conflict(
                    &user.id,
                    login,
                    format!("email {email} matches {count} accounts keysync does not manage"),
                );
                return Resolution::Nothing;
            }
            None => {}
        }
    }
    if email.is_none() && email_mapping.required {
        report.diagnose(
            DiagnosticKind::MissingData,
            Some(&user.id),
            login,
            "no usable email, which a new account needs; not created".to_owned(),
        );
        return Resolution::Nothing;
    }
    Resolution::Create
}

/// Two users may match one account by email (Keycloak allows duplicate emails when configured to):
/// neither is linked, and both get a conflict.
fn drop_shared_email_links(ctx: &Ctx<'_>, resolutions: &mut [Resolution], report: &mut Report) {
    let mut email_claims: FastMap<u32, u32> = fast_map(0);
    for resolution in resolutions.iter() {
        if let Resolution::Link(account_idx, LinkedBy::Email) = resolution {
            *email_claims.entry(*account_idx).or_default() += 1;
        }
    }
    for (idx, resolution) in resolutions.iter_mut().enumerate() {
        if let Resolution::Link(account_idx, LinkedBy::Email) = *resolution {
            let count = email_claims.get(&account_idx).copied().unwrap_or(0);
            if count > 1 {
                let account = &ctx.state.accounts[account_idx as usize];
                report.conflict(
                    &ctx.snapshot.users[idx].id,
                    &ctx.users.logins[idx],
                    format!(
                        "{count} Keycloak users match account {} ({}) by email",
                        account.id, account.login
                    ),
                );
                *resolution = Resolution::Nothing;
            }
        }
    }
}

/// What happens to each account.
pub(super) fn dispositions(ctx: &Ctx<'_>, resolutions: &[Resolution]) -> Vec<Disposition> {
    let mut dispositions = vec![Disposition::Untouched; ctx.state.accounts.len()];
    for (user_idx, resolution) in resolutions.iter().enumerate() {
        let user = user_idx as u32;
        match *resolution {
            Resolution::Managed(account_idx) => {
                dispositions[account_idx as usize] = Disposition::Sync { user, link: None };
            }
            Resolution::Link(account_idx, by) => {
                dispositions[account_idx as usize] = Disposition::Sync {
                    user,
                    link: Some(by),
                };
            }
            Resolution::Nothing | Resolution::Create | Resolution::Held => {}
        }
    }
    for (idx, account) in ctx.state.accounts.iter().enumerate() {
        if !account.is_managed()
            || !ctx.accounts.usable[idx]
            || dispositions[idx] != Disposition::Untouched
        {
            continue;
        }
        dispositions[idx] = match ctx.accounts.user_of[idx] {
            NONE => Disposition::Cleanup { user: None },
            user_idx => match ctx.users.status[user_idx as usize] {
                UserStatus::OutOfScope => Disposition::Cleanup {
                    user: Some(user_idx),
                },
                UserStatus::Ignored | UserStatus::InScope => Disposition::Untouched,
            },
        };
    }
    dispositions
}

/// Decides the renames: a synced account whose user's login changed is renamed when the product
/// can, the new login is not protected, and no other account has it now.
pub(super) fn renames(
    ctx: &Ctx<'_>,
    by_login: &LoginIndex<'_>,
    candidates: &[u32],
    dispositions: &[Disposition],
    report: &mut Report,
) -> FastMap<u32, Rename> {
    let mut renames = fast_map(0);
    for &idx in candidates {
        let idx = idx as usize;
        let Disposition::Sync { user, .. } = dispositions[idx] else {
            continue;
        };
        let keycloak_user = &ctx.snapshot.users[user as usize];
        let account = &ctx.state.accounts[idx];
        let desired = ctx.users.logins[user as usize].as_ref();
        let current = trim(&account.login);
        if !keycloak_user.enabled
            || desired == current
            || fold(desired) == fold(current)
            || ctx.policy.is_protected(current)
        {
            continue;
        }
        let rename = if !ctx.state.capabilities.can_rename {
            report.diagnose(
                DiagnosticKind::Unsupported,
                Some(&keycloak_user.id),
                &account.login,
                format!(
                    "the Keycloak login is now {desired}, but {} cannot rename accounts",
                    ctx.state.product
                ),
            );
            Rename::Refused
        } else if ctx.policy.is_protected(desired) {
            report.conflict(
                &keycloak_user.id,
                desired,
                format!(
                    "renaming account {} to this login would make it a protected account; \
                     not renamed",
                    account.id
                ),
            );
            Rename::Refused
        } else if by_login.contains_key(desired) {
            Rename::Blocked
        } else {
            Rename::Renamed
        };
        renames.insert(idx as u32, rename);
    }
    renames
}

/// Whether an account gives up its login in this plan: renamed, or deleted (when `operations`
/// allows it).
fn frees_login(
    ctx: &Ctx<'_>,
    dispositions: &[Disposition],
    renames: &FastMap<u32, Rename>,
    account_idx: u32,
) -> bool {
    let account = &ctx.state.accounts[account_idx as usize];
    if ctx.policy.is_protected(&account.login) {
        return false;
    }
    let operations = &ctx.policy.policy().operations;
    match dispositions[account_idx as usize] {
        Disposition::Untouched => false,
        Disposition::Sync { user, .. } => {
            if ctx.snapshot.users[user as usize].enabled {
                operations.update_users && renames.get(&account_idx) == Some(&Rename::Renamed)
            } else {
                operations.deactivate_users
                    && lifecycle(ctx, CleanupAction::Deactivate) == Lifecycle::Delete
            }
        }
        Disposition::Cleanup { .. } => {
            operations.deactivate_users
                && lifecycle(ctx, ctx.policy.policy().cleanup.action) == Lifecycle::Delete
        }
    }
}

/// Turns blocked renames and held logins into a deferral (when this plan frees the login, so the
/// next run can finish) or a conflict (when nothing will).
pub(super) fn settle_held_logins(
    ctx: &Ctx<'_>,
    by_login: &LoginIndex<'_>,
    dispositions: &[Disposition],
    renames: &FastMap<u32, Rename>,
    resolutions: &mut [Resolution],
    report: &mut Report,
) {
    let accounts = &ctx.state.accounts;
    let holder_text = |holder: u32| -> String {
        let account = &accounts[holder as usize];
        match &account.keycloak_user_id {
            Some(user_id) => {
                format!(
                    "account {} (managed for Keycloak user {user_id})",
                    account.id
                )
            }
            None => format!("account {} (not managed by keysync)", account.id),
        }
    };
    // The accounts that hold a login, by id; several only in odd input.
    let holders_of = |login: &str| -> Vec<u32> {
        match by_login.get(login) {
            None => Vec::new(),
            Some(&(first, 1)) => vec![first],
            Some(_) => {
                let mut holders: Vec<u32> = (0..accounts.len() as u32)
                    .filter(|&idx| fold(trim(&accounts[idx as usize].login)) == login)
                    .collect();
                holders.sort_by(|left, right| {
                    accounts[*left as usize]
                        .id
                        .cmp(&accounts[*right as usize].id)
                });
                holders
            }
        }
    };
    let describe = |holders: &[u32]| -> String {
        match holders {
            [holder] => holder_text(*holder),
            _ => {
                let ids: Vec<&str> = holders
                    .iter()
                    .map(|&idx| accounts[idx as usize].id.as_str())
                    .collect();
                format!("{} accounts ({})", holders.len(), ids.join(", "))
            }
        }
    };
    let frees = |holders: &[u32]| {
        holders
            .iter()
            .any(|&holder| frees_login(ctx, dispositions, renames, holder))
    };

    // With `operations.update_users` off no rename is planned, blocked or not.
    let mut blocked: Vec<u32> = renames
        .iter()
        .filter(|_| ctx.policy.policy().operations.update_users)
        .filter_map(|(&idx, rename)| (*rename == Rename::Blocked).then_some(idx))
        .collect();
    blocked.sort_unstable();
    for idx in blocked {
        let Disposition::Sync { user, .. } = dispositions[idx as usize] else {
            continue;
        };
        let keycloak_user = &ctx.snapshot.users[user as usize];
        let desired = ctx.users.logins[user as usize].as_ref();
        let holders: Vec<u32> = holders_of(desired)
            .into_iter()
            .filter(|&holder| holder != idx)
            .collect();
        if frees(&holders) {
            report.diagnose(
                DiagnosticKind::Deferred,
                Some(&keycloak_user.id),
                desired,
                format!(
                    "this login still belongs to {}, which this plan renames or deletes; \
                     account {} is renamed to it by the next run",
                    describe(&holders),
                    accounts[idx as usize].id
                ),
            );
        } else {
            report.conflict(
                &keycloak_user.id,
                desired,
                format!(
                    "account {} is not renamed to this login: it belongs to {}",
                    accounts[idx as usize].id,
                    describe(&holders)
                ),
            );
        }
    }
    for (idx, resolution) in resolutions.iter_mut().enumerate() {
        if *resolution != Resolution::Held {
            continue;
        }
        *resolution = Resolution::Nothing;
        let keycloak_user = &ctx.snapshot.users[idx];
        let login = ctx.users.logins[idx].as_ref();
        let holders = holders_of(login);
        if frees(&holders) {
            report.diagnose(
                DiagnosticKind::Deferred,
                Some(&keycloak_user.id),
                login,
                format!(
                    "this login still belongs to {}, which this plan renames or deletes; the \
                     account is created or linked by the next run",
                    describe(&holders)
                ),
            );
        } else {
            report.conflict(
                &keycloak_user.id,
                login,
                format!("this login belongs to {}", describe(&holders)),
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Lifecycle {
    Deactivate,
    Delete,
    StripGroups,
    Keep,
}

/// What taking an account's access away means for this product: `action`, or the policy's fallback
/// when the action is deactivation and the product cannot deactivate.
pub(super) fn lifecycle(ctx: &Ctx<'_>, action: CleanupAction) -> Lifecycle {
    match action {
        CleanupAction::Deactivate if ctx.state.capabilities.can_deactivate => Lifecycle::Deactivate,
        CleanupAction::Deactivate => match ctx.policy.policy().cleanup.when_cannot_deactivate {
            Fallback::RemoveGroups => Lifecycle::StripGroups,
            Fallback::Delete => Lifecycle::Delete,
            Fallback::Keep => Lifecycle::Keep,
        },
        CleanupAction::Delete => Lifecycle::Delete,
        CleanupAction::RemoveGroups => Lifecycle::StripGroups,
        CleanupAction::Keep => Lifecycle::Keep,
    }
}
