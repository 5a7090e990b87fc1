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
//! - a product that reports licence seats gets nothing from a part: which users get a
//!   seat depends on every user at once ([`super::seats`]);
//! - an account is created only for a user whose login is its Keycloak username and is
//!   already case-folded. Keycloak keeps usernames unique, so two users of different
//!   parts can never claim one login; a login mapped from an attribute, or folded, could;
//! - a membership is added only to an account created in the same part.
//!
//! `tests/properties.rs` checks the rule: the changes of every part of a realm are changes
//! of the realm's complete plan.

use std::collections::{HashMap, HashSet};

use super::{AccountRef, Action, Plan, SafetyCounts, plan};
use crate::mapping::fold;
use crate::policy::ValidPolicy;
use crate::snapshot::{Snapshot, UserId};
use crate::state::ProductState;

/// The changes [`plan`] of `part` (some of a realm's users, every group, those users'
/// memberships) makes that may be applied before the complete snapshot is planned; see
/// the module documentation. The plan has no conflicts, diagnostics, hold or counts: the
/// complete plan reports them.
pub fn plan_part(part: &Snapshot, state: &ProductState, policy: &ValidPolicy) -> Plan {
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
    if state.seats.is_some() || planned.seats.is_some() {
        return kept;
    }
    let usernames: HashMap<&UserId, &str> = part
        .users
        .iter()
        .map(|user| (&user.id, user.username.as_str()))
        .collect();
    let created: HashSet<&str> = planned
        .changes
        .iter()
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
