//! Which managed accounts and groups are the planning connector's: the plan sees the others
//! as accounts it does not manage but may never link or change (their login and email are
//! taken), and as groups it did not create.

use std::borrow::Cow;
use std::collections::HashSet;

use crate::policy::ValidPolicy;
use crate::snapshot::Snapshot;
use crate::state::{Account, Group, ProductState};

/// The state as the planning connector owns it.
pub(super) struct Owned<'a> {
    /// `state`, with the accounts and groups of other connectors unmanaged. Borrowed when the
    /// connector owns everything managed, which is the case with one connector.
    pub(super) state: Cow<'a, ProductState>,
    /// Per account of `state`: whether another connector manages it. Empty when none does.
    pub(super) foreign: Vec<bool>,
}

/// The view of `state` the connector of `policy` plans against (see
/// [`crate::policy::ConnectorScope`] for accounts and groups without an owner).
pub(super) fn view<'a>(
    snapshot: &Snapshot,
    state: &'a ProductState,
    policy: &ValidPolicy,
) -> Owned<'a> {
    let borrowed = Owned {
        state: Cow::Borrowed(state),
        foreign: Vec::new(),
    };
    let Some(scope) = policy.connector() else {
        return borrowed;
    };
    let mut users: Option<HashSet<&str>> = None;
    let mut foreign_account = |account: &Account| -> bool {
        let Some(user) = &account.keycloak_user_id else {
            return false;
        };
        match &account.connector {
            Some(owner) => *owner != scope.name,
            None if scope.sole => false,
            None => !users
                .get_or_insert_with(|| snapshot.users.iter().map(|user| user.id.as_str()).collect())
                .contains(user.as_str()),
        }
    };
    let foreign_group = |group: &Group| -> bool {
        group.managed
            && match &group.connector {
                Some(owner) => *owner != scope.name,
                None => !scope.sole,
            }
    };
    let foreign: Vec<bool> = state.accounts.iter().map(&mut foreign_account).collect();
    let any_group = state.groups.iter().any(foreign_group);
    if !any_group && !foreign.contains(&true) {
        return borrowed;
    }
    let mut owned = state.clone();
    for (account, &foreign) in owned.accounts.iter_mut().zip(&foreign) {
        if foreign {
            account.keycloak_user_id = None;
        }
    }
    for group in &mut owned.groups {
        if foreign_group(group) {
            group.managed = false;
        }
    }
    Owned {
        state: Cow::Owned(owned),
        foreign,
    }
}
