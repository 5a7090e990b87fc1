//! The plan of one part of a streamed first sync.
//!
//! A first sync of a large realm spends most of its time creating accounts, and most of
//! the rest reading Keycloak's users. To overlap the two, the fetcher announces the users
//! it has read so far, a part at a time, before the complete snapshot; [`plan_part`] is
//! what may be done with such a part before the complete snapshot is planned.
//!
//! A part may only *add*: groups, accounts for users who have none, and the new accounts'
//! memberships. Nothing that takes access away, links, renames, updates or reactivates is
//! ever planned from a part, so the holds (which count what is taken away or handed over)
//! lose nothing, and no account that exists is touched before the complete plan. The
//! rules that keep every kept change in the complete plan, unchanged (same id, same
//! action), whatever the other parts hold:
//!
//! - a product whose licence has fewer seats free than the realm has users (`realm_users`,
//!   counted when the fetch began, plus a tenth for users added during it) gets nothing
//!   from a part: which users get a seat then depends on every user at once
//!   ([`super::seats`]);
//! - an account is created only for a user whose login is its Keycloak username and is
//!   already case-folded, and only when every login is its user's username
//!   (`attributes.login.from = "username"`, no `strip_domain`, no `replace_forbidden`).
//!   Keycloak keeps usernames unique, so two users of different parts can never claim one
//!   login; a login mapped from an email or an attribute, cut at its `@` or with
//!   characters replaced could equal another part's username;
//! - a membership is added only to an account created in the same part.
//!
//! `tests/properties.rs` checks the rule: the changes of every part of a realm are changes
//! of the realm's complete plan.
//!
//! The complete plan is the plan of the state the run began with: [`without_parts`] takes
//! out of a state read while the parts were applied what they created, so the complete
//! plan is what a run that streamed nothing would have planned (the same holds, the same
//! `first_run`), and lists every part's change.

use std::collections::{HashMap, HashSet};

use super::{AccountRef, Action, Plan, SafetyCounts, plan};
use crate::mapping::fold;
use crate::policy::{LoginSource, ValidPolicy};
use crate::snapshot::{Snapshot, UserId};
use crate::state::{AccountId, ProductState, Seats};

/// The changes [`plan`] of `part` (some of a realm's users, every group, those users'
/// memberships) makes that may be applied before the complete snapshot is planned; see
/// the module documentation. `realm_users` is how many users the realm had when the fetch
/// began. The plan has no conflicts, diagnostics, hold or counts: the complete plan
/// reports them.
pub fn plan_part(
    part: &Snapshot,
    state: &ProductState,
    policy: &ValidPolicy,
    realm_users: u64,
) -> Plan {
    let planned = plan(part, state, policy);
    let mut kept = Plan {
        product: planned.product,
        changes: Vec::new(),
        conflicts: Vec::new(),
        diagnostics: Vec::new(),
        hold: None,
        safety: SafetyCounts::default(),
        seats: None,
    };
    if let Some(Seats {
        used,
        limit: Some(limit),
    }) = state.seats
    {
        let bound = realm_users.saturating_add(realm_users / 10);
        if limit.saturating_sub(used) < bound {
            return kept;
        }
    }
    let login = &policy.policy().attributes.login;
    let logins_are_usernames = login.from == LoginSource::Username
        && !login.strip_domain
        && login.replace_forbidden.is_none();
    let usernames: HashMap<&UserId, &str> = part
        .users
        .iter()
        .map(|user| (&user.id, user.username.as_str()))
        .collect();
    let created: HashSet<&str> = planned
        .changes
        .iter()
        .filter(|_| logins_are_usernames)
        .filter_map(|change| match &change.action {
            Action::CreateUser { fields } => {
                let username = usernames.get(change.keycloak_user_id.as_ref()?)?;
                (fields.login == *username && fold(&fields.login) == fields.login)
                    .then_some(fields.login.as_str())
            }
            _ => None,
        })
        .collect();
    let keep = |action: &Action| match action {
        Action::CreateGroup { .. } => true,
        Action::CreateUser { fields } => created.contains(fields.login.as_str()),
        Action::AddMembership {
            account: AccountRef::New { login },
            ..
        } => created.contains(login.as_str()),
        _ => false,
    };
    kept.changes = planned
        .changes
        .iter()
        .filter(|change| keep(&change.action))
        .cloned()
        .collect();
    kept
}

/// What the parts of a streamed first sync created in one product: the accounts (their
/// Keycloak user and login) and the groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Created {
    pub accounts: Vec<(UserId, String)>,
    pub groups: Vec<String>,
}

/// `state` without what `created` names: the accounts made for those Keycloak users under
/// those logins with their memberships, and the groups keysync made under those names. A part
/// only creates what the state did not have, so this is the state before the parts; a
/// part's work not yet applied is simply not there to take out.
pub fn without_parts(state: &mut ProductState, created: &Created) {
    let accounts: HashSet<(&UserId, String)> = created
        .accounts
        .iter()
        .map(|(user, login)| (user, fold(login).into_owned()))
        .collect();
    let groups: HashSet<String> = created
        .groups
        .iter()
        .map(|group| fold(group).into_owned())
        .collect();
    let mut removed: HashSet<AccountId> = HashSet::new();
    state.accounts.retain(|account| {
        let made = account
            .keycloak_user_id
            .as_ref()
            .is_some_and(|user| accounts.contains(&(user, fold(&account.login).into_owned())));
        if made {
            removed.insert(account.id.clone());
        }
        !made
    });
    state
        .groups
        .retain(|group| !(group.managed && groups.contains(fold(group.name.as_str()).as_ref())));
    // Each account made took a seat (`crate::apply`).
    if let Some(seats) = &mut state.seats {
        seats.used = seats.used.saturating_sub(removed.len() as u64);
    }
    // A part adds members only to the accounts it created.
    state
        .memberships
        .retain(|membership| !removed.contains(&membership.account_id));
}
