//! A pure `apply`: the product state after some of a plan's changes, as keysync's cache records it.
//! The property tests use it to check that a plan reaches what it promises, and the appliers use it
//! to update the cache with the changes that succeeded.
//!
//! Like the product, `apply` is idempotent: a change that is already done (a group that exists, a
//! membership that is there) changes nothing, and a change naming an account that is not there is
//! skipped.

use std::collections::HashMap;

use crate::mapping::fold;
use crate::plan::{AccountRef, Action, Change};
use crate::state::{Account, AccountId, Group, GroupName, Membership, ProductState};

/// Applies `changes` in order. A created account gets its product id from `new_account_id` (the
/// applier knows it from the product's answer; tests make one up); it is managed and linked to the
/// change's Keycloak user. Changes for another product are skipped.
pub fn apply(
    state: ProductState,
    changes: &[Change],
    mut new_account_id: impl FnMut(&Change) -> AccountId,
) -> ProductState {
    let ProductState {
        product,
        capabilities,
        accounts,
        groups,
        memberships,
    } = state;
    let mut accounts: Vec<Option<Account>> = accounts.into_iter().map(Some).collect();
    let mut groups: Vec<Option<Group>> = groups.into_iter().map(Some).collect();
    let mut memberships: Vec<Option<Membership>> = memberships.into_iter().map(Some).collect();

    let mut account_by_id: HashMap<String, usize> = HashMap::new();
    for (idx, account) in accounts.iter().enumerate().rev() {
        if let Some(account) = account {
            account_by_id.insert(account.id.as_str().to_owned(), idx);
        }
    }
    let mut created_by_login: HashMap<String, usize> = HashMap::new();
    let mut groups_by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (idx, group) in groups.iter().enumerate() {
        if let Some(group) = group {
            groups_by_name
                .entry(fold(group.name.as_str().trim()).into_owned())
                .or_default()
                .push(idx);
        }
    }
    let mut by_pair: HashMap<(String, String), Vec<usize>> = HashMap::new();
    let mut by_account: HashMap<String, Vec<usize>> = HashMap::new();
    let mut by_group: HashMap<String, Vec<usize>> = HashMap::new();
    for (idx, membership) in memberships.iter().enumerate() {
        if let Some(membership) = membership {
            let group = fold(membership.group.as_str().trim()).into_owned();
            let account_id = membership.account_id.as_str().to_owned();
            by_pair
                .entry((account_id.clone(), group.clone()))
                .or_default()
                .push(idx);
            by_account.entry(account_id).or_default().push(idx);
            by_group.entry(group).or_default().push(idx);
        }
    }

    for change in changes {
        if change.product != product {
            continue;
        }
        let find = |account: &AccountRef, accounts: &[Option<Account>]| -> Option<usize> {
            let idx = match account {
                AccountRef::Existing { id, .. } => account_by_id.get(id.as_str()).copied(),
                AccountRef::New { login } => created_by_login.get(fold(login).as_ref()).copied(),
            }?;
            accounts[idx].is_some().then_some(idx)
        };
        match &change.action {
            Action::CreateGroup { group } => {
                let key = fold(group.trim()).into_owned();
                let exists = groups_by_name
                    .get(&key)
                    .is_some_and(|idxs| idxs.iter().any(|&idx| groups[idx].is_some()));
                if !exists {
                    groups_by_name.entry(key).or_default().push(groups.len());
                    groups.push(Some(Group {
                        name: GroupName::new(group.as_str()),
                        managed: true,
                    }));
                }
            }
            Action::CreateUser { fields } => {
                let key = fold(&fields.login).into_owned();
                if created_by_login
                    .get(&key)
                    .is_some_and(|&idx| accounts[idx].is_some())
                {
                    continue;
                }
                let id = new_account_id(change);
                created_by_login.insert(key, accounts.len());
                account_by_id
                    .entry(id.as_str().to_owned())
                    .or_insert(accounts.len());
                accounts.push(Some(Account {
                    id,
                    login: fields.login.clone(),
                    display_name: fields.display_name.clone(),
                    email: fields.email.clone(),
                    active: true,
                    keycloak_user_id: change.keycloak_user_id.clone(),
                }));
            }
            Action::LinkUser { id, .. } => {
                let account = AccountRef::Existing {
                    id: id.clone(),
                    login: String::new(),
                };
                if let Some(account) =
                    find(&account, &accounts).and_then(|idx| accounts[idx].as_mut())
                {
                    account.keycloak_user_id = change.keycloak_user_id.clone();
                }
            }
            Action::UpdateUser {
                account, fields, ..
            } => {
                if let Some(account) =
                    find(account, &accounts).and_then(|idx| accounts[idx].as_mut())
                {
                    account.login = fields.login.clone();
                    account.display_name = fields.display_name.clone();
                    account.email = fields.email.clone();
                }
            }
            Action::ReactivateUser { account } | Action::DeactivateUser { account } => {
                let active = matches!(change.action, Action::ReactivateUser { .. });
                if let Some(account) =
                    find(account, &accounts).and_then(|idx| accounts[idx].as_mut())
                {
                    account.active = active;
                }
            }
            Action::AddMembership { account, group } => {
                let Some(idx) = find(account, &accounts) else {
                    continue;
                };
                let Some(account_id) = accounts[idx].as_ref().map(|account| account.id.clone())
                else {
                    continue;
                };
                let key = (
                    account_id.as_str().to_owned(),
                    fold(group.trim()).into_owned(),
                );
                if by_pair
                    .get(&key)
                    .is_some_and(|idxs| idxs.iter().any(|&idx| memberships[idx].is_some()))
                {
                    continue;
                }
                let membership_idx = memberships.len();
                memberships.push(Some(Membership {
                    account_id,
                    group: GroupName::new(group.as_str()),
                }));
                by_account
                    .entry(key.0.clone())
                    .or_default()
                    .push(membership_idx);
                by_group
                    .entry(key.1.clone())
                    .or_default()
                    .push(membership_idx);
                by_pair.entry(key).or_default().push(membership_idx);
            }
            Action::RemoveMembership { account, group } => {
                let Some(idx) = find(account, &accounts) else {
                    continue;
                };
                let Some(account_id) = accounts[idx]
                    .as_ref()
                    .map(|account| account.id.as_str().to_owned())
                else {
                    continue;
                };
                for membership_idx in by_pair
                    .remove(&(account_id, fold(group.trim()).into_owned()))
                    .unwrap_or_default()
                {
                    memberships[membership_idx] = None;
                }
            }
            Action::DeleteUser { account } => {
                let Some(idx) = find(account, &accounts) else {
                    continue;
                };
                let Some(removed) = accounts[idx].take() else {
                    continue;
                };
                for membership_idx in by_account.remove(removed.id.as_str()).unwrap_or_default() {
                    memberships[membership_idx] = None;
                }
            }
            Action::RemoveGroup { group } => {
                let key = fold(group.trim()).into_owned();
                for group_idx in groups_by_name.remove(&key).unwrap_or_default() {
                    groups[group_idx] = None;
                }
                for membership_idx in by_group.remove(&key).unwrap_or_default() {
                    memberships[membership_idx] = None;
                }
            }
        }
    }

    ProductState {
        product,
        capabilities,
        accounts: accounts.into_iter().flatten().collect(),
        groups: groups.into_iter().flatten().collect(),
        memberships: memberships.into_iter().flatten().collect(),
    }
}
