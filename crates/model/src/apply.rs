//! A pure `apply`: the product state after some of a plan's changes, as keysync's cache records it.
//! The property tests use it to check that a plan reaches what it promises, and the appliers use it
//! to update the cache with the changes that succeeded, one at a time ([`Applied::apply_one`]).
//!
//! Like the product, applying is idempotent: a change that is already done (a group that exists, a
//! membership that is there, an account created with an id the state has) changes nothing more, and
//! a change naming an account that is not there is skipped. Logins and group names are compared
//! case-insensitively (Unicode lower case), group names also ignoring surrounding spaces, as the
//! plan compares them.
//!
//! The rules, one kind of change at a time:
//!
//! - `CreateGroup`: the group is added, managed; a group already there becomes managed. Either
//!   way it is owned by the connector of [`Applied::for_connector`].
//! - `CreateUser`: the account is added, active and linked to the change's Keycloak user, owned
//!   by the connector, with the id `new_account_id` gives; an account that already has that id is
//!   replaced by it. Nothing happens when this state already created an account with that login.
//! - `LinkUser`: the account is linked to the change's Keycloak user and owned by the connector;
//!   an account linked to another Keycloak user (one deleted and re-created) is relinked.
//! - `UpdateUser`: the account gets the login, display name and email of the change; an update
//!   without an email keeps the account's, as the product does.
//! - `ReactivateUser`, `DeactivateUser`: the account is active, or not.
//! - `AddMembership`, `RemoveMembership`: the membership is added unless there, or removed.
//! - `DeleteUser`: the account goes, with its memberships.
//! - `RemoveGroup`: the group goes, with its memberships.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::mapping::fold;
use crate::plan::{AccountFields, AccountRef, Action, Change, Handover};
use crate::state::{
    Account, AccountId, Capabilities, ConnectorName, Group, GroupName, Lead, Membership, Product,
    ProductState, Seats,
};

/// Applies `changes` in order: [`Applied::apply_one`] for each. A created account gets its product
/// id from `new_account_id` (the applier knows it from the product's answer; tests make one up); it
/// is managed and linked to the change's Keycloak user. Changes for another product are skipped.
pub fn apply(
    state: ProductState,
    changes: &[Change],
    mut new_account_id: impl FnMut(&Change) -> AccountId,
) -> ProductState {
    let mut applied = Applied::new(state);
    for change in changes {
        applied.apply_one(change, &mut new_account_id);
    }
    applied.into_state()
}

/// A product state being changed, with the lookups that applying changes needs: accounts by id
/// and by login, groups by name, memberships by account and group. Removed items leave a hole
/// (`None`) until [`Applied::into_state`], so indexes stay valid.
pub struct Applied {
    product: Product,
    /// The owner of what is created or linked here.
    connector: Option<ConnectorName>,
    capabilities: Capabilities,
    accounts: Vec<Option<Account>>,
    groups: Vec<Option<Group>>,
    memberships: Vec<Option<Membership>>,
    /// What each account leads; a handover moves a lead to its new account.
    leads: Vec<Lead>,
    /// The licence seats, counted up by creations and reactivations and down by deactivations
    /// and deletions of active accounts, until the next read of the product.
    seats: Option<Seats>,
    /// The first account with each id.
    account_by_id: HashMap<AccountId, usize>,
    /// The accounts created here, by folded login: what [`AccountRef::New`] names.
    created_by_login: HashMap<String, usize>,
    /// Every account by folded login, some of them stale (renamed or deleted since); built on the
    /// first [`Applied::account_by_login`], then kept up to date.
    by_login: OnceLock<HashMap<String, Vec<usize>>>,
    /// Folded, trimmed group names (of groups and of memberships) as small keys.
    group_keys: HashMap<String, usize>,
    /// The groups of each group key.
    groups_by_key: Vec<Vec<usize>>,
    /// The group key of each membership.
    membership_keys: Vec<usize>,
    /// The memberships of each account id.
    by_account: HashMap<AccountId, Vec<usize>>,
    /// The memberships of each group key.
    by_group: Vec<Vec<usize>>,
}

impl Applied {
    /// `state`, indexed for changes.
    pub fn new(state: ProductState) -> Applied {
        let ProductState {
            product,
            capabilities,
            accounts,
            groups,
            memberships,
            leads,
            seats,
        } = state;
        let mut applied = Applied {
            product,
            leads,
            seats,
            connector: None,
            capabilities,
            account_by_id: HashMap::with_capacity(accounts.len()),
            accounts: accounts.into_iter().map(Some).collect(),
            groups: Vec::with_capacity(groups.len()),
            memberships: Vec::with_capacity(memberships.len()),
            created_by_login: HashMap::new(),
            by_login: OnceLock::new(),
            group_keys: HashMap::new(),
            groups_by_key: Vec::new(),
            membership_keys: Vec::with_capacity(memberships.len()),
            by_account: HashMap::new(),
            by_group: Vec::new(),
        };
        for (idx, account) in applied.accounts.iter().enumerate() {
            if let Some(account) = account {
                applied
                    .account_by_id
                    .entry(account.id.clone())
                    .or_insert(idx);
            }
        }
        for group in groups {
            applied.push_group(group);
        }
        for membership in memberships {
            applied.push_membership(membership);
        }
        applied
    }

    /// Records `connector` as the owner of the accounts and groups the changes create or link:
    /// the connector of the run whose plan they are.
    pub fn for_connector(mut self, connector: Option<ConnectorName>) -> Applied {
        self.connector = connector;
        self
    }

    /// Records `connector` as the owner of what the changes applied from now on create or
    /// link.
    pub fn set_connector(&mut self, connector: Option<ConnectorName>) {
        self.connector = connector;
    }

    /// The state so far, leaving this one as it is: [`Applied::into_state`] of a clone,
    /// without cloning the indexes.
    pub fn to_state(&self) -> ProductState {
        ProductState {
            product: self.product,
            capabilities: self.capabilities,
            accounts: self.accounts.iter().flatten().cloned().collect(),
            groups: self.groups.iter().flatten().cloned().collect(),
            memberships: self.memberships.iter().flatten().cloned().collect(),
            leads: self.leads.clone(),
            seats: self.seats,
        }
    }

    /// How many accounts, groups and memberships the state holds now.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            live_count(&self.accounts),
            live_count(&self.groups),
            live_count(&self.memberships),
        )
    }

    /// The product whose changes this state takes.
    pub fn product(&self) -> Product {
        self.product
    }

    /// The account with product id `id`.
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.live_account(&AccountId::new(id))
            .and_then(|idx| self.accounts[idx].as_ref())
    }

    /// The first account whose login is `login`, compared case-insensitively.
    pub fn account_by_login(&self, login: &str) -> Option<&Account> {
        let key = fold(login);
        let by_login = self.by_login.get_or_init(|| {
            let mut by_login: HashMap<String, Vec<usize>> = HashMap::new();
            for (idx, account) in self.accounts.iter().enumerate() {
                if let Some(account) = account {
                    by_login
                        .entry(fold(&account.login).into_owned())
                        .or_default()
                        .push(idx);
                }
            }
            by_login
        });
        by_login
            .get(key.as_ref())?
            .iter()
            .copied()
            .filter(|&idx| {
                self.accounts[idx]
                    .as_ref()
                    .is_some_and(|account| fold(&account.login) == key)
            })
            .min()
            .and_then(|idx| self.accounts[idx].as_ref())
    }

    /// Applies one change; see the module documentation for the rules. `new_account_id` is called
    /// only for a `CreateUser` that adds an account. A change for another product is skipped.
    pub fn apply_one(
        &mut self,
        change: &Change,
        new_account_id: impl FnOnce(&Change) -> AccountId,
    ) {
        if change.product != self.product {
            return;
        }
        match &change.action {
            Action::CreateGroup { group } => self.create_group(group),
            Action::CreateUser { fields } => self.create_user(change, fields, new_account_id),
            Action::LinkUser { id, .. } => {
                let idx = self.live_account(id);
                if let Some(account) = idx.and_then(|idx| self.accounts[idx].as_mut()) {
                    account.keycloak_user_id = change.keycloak_user_id.clone();
                    account.connector = self.connector.clone();
                }
            }
            Action::UpdateUser {
                account, fields, ..
            } => self.update_user(account, fields),
            Action::ReactivateUser { account } => self.set_active(account, true),
            Action::DeactivateUser { account, handovers } => {
                self.hand_over(handovers);
                self.set_active(account, false);
            }
            Action::AddMembership { account, group } => self.add_membership(account, group),
            Action::RemoveMembership { account, group } => self.remove_membership(account, group),
            Action::DeleteUser { account, handovers } => {
                self.hand_over(handovers);
                self.delete_user(account);
            }
            Action::RemoveGroup { group } => self.remove_group(group),
        }
    }

    /// The state, with what the changes did.
    pub fn into_state(self) -> ProductState {
        ProductState {
            product: self.product,
            capabilities: self.capabilities,
            accounts: self.accounts.into_iter().flatten().collect(),
            groups: self.groups.into_iter().flatten().collect(),
            memberships: self.memberships.into_iter().flatten().collect(),
            leads: self.leads,
            seats: self.seats,
        }
    }

    /// Counts one seat more (`taken`) or one fewer.
    fn count_seat(&mut self, taken: bool) {
        if let Some(seats) = &mut self.seats {
            seats.used = if taken {
                seats.used.saturating_add(1)
            } else {
                seats.used.saturating_sub(1)
            };
        }
    }

    fn set_active(&mut self, account: &AccountRef, active: bool) {
        let Some(account) = self.account_mut(account) else {
            return;
        };
        let changed = account.active != active;
        account.active = active;
        if changed {
            self.count_seat(active);
        }
    }

    /// Moves each handed-over lead to the account that takes it.
    fn hand_over(&mut self, handovers: &[Handover]) {
        for handover in handovers {
            let Some(to) = self.account_by_login(&handover.to).map(|to| to.id.clone()) else {
                continue;
            };
            for lead in &mut self.leads {
                if lead.target == handover.target {
                    lead.account_id = to.clone();
                }
            }
        }
    }

    fn create_group(&mut self, group: &str) {
        let existing = self.group_key(group).and_then(|key| {
            self.groups_by_key[key]
                .iter()
                .copied()
                .find(|&idx| self.groups[idx].is_some())
        });
        let connector = self.connector.clone();
        match existing.and_then(|idx| self.groups[idx].as_mut()) {
            Some(existing) => {
                // A group another connector created stays theirs.
                if !existing.managed || existing.connector.is_none() {
                    existing.connector = connector;
                }
                existing.managed = true;
            }
            None => self.push_group(Group {
                name: GroupName::new(group),
                managed: true,
                connector,
            }),
        }
    }

    fn create_user(
        &mut self,
        change: &Change,
        fields: &AccountFields,
        new_account_id: impl FnOnce(&Change) -> AccountId,
    ) {
        let login_key = fold(&fields.login).into_owned();
        if self
            .created_by_login
            .get(&login_key)
            .is_some_and(|&idx| self.accounts[idx].is_some())
        {
            return;
        }
        let account = Account {
            id: new_account_id(change),
            login: fields.login.clone(),
            display_name: fields.display_name.clone(),
            email: fields.email.clone(),
            active: true,
            keycloak_user_id: change.keycloak_user_id.clone(),
            connector: self.connector.clone(),
            administrator: false,
        };
        let idx = match self.live_account(&account.id) {
            Some(idx) => {
                self.accounts[idx] = Some(account);
                idx
            }
            None => {
                let idx = self.accounts.len();
                self.account_by_id.insert(account.id.clone(), idx);
                self.accounts.push(Some(account));
                self.count_seat(true);
                idx
            }
        };
        self.created_by_login.insert(login_key, idx);
        self.index_login(idx);
    }

    fn update_user(&mut self, account: &AccountRef, fields: &AccountFields) {
        let Some(idx) = self.find(account) else {
            return;
        };
        let Some(account) = self.accounts[idx].as_mut() else {
            return;
        };
        account.login = fields.login.clone();
        account.display_name = fields.display_name.clone();
        if fields.email.is_some() {
            account.email = fields.email.clone();
        }
        self.index_login(idx);
    }

    fn add_membership(&mut self, account: &AccountRef, group: &str) {
        let Some(account_id) = self.find_id(account) else {
            return;
        };
        let key = self.intern_group(group);
        if self.memberships_of(&account_id, key).next().is_some() {
            return;
        }
        self.push_membership(Membership {
            account_id,
            group: GroupName::new(group),
        });
    }

    fn remove_membership(&mut self, account: &AccountRef, group: &str) {
        let (Some(account_id), Some(key)) = (self.find_id(account), self.group_key(group)) else {
            return;
        };
        let removed: Vec<usize> = self.memberships_of(&account_id, key).collect();
        for idx in removed {
            self.memberships[idx] = None;
        }
    }

    fn delete_user(&mut self, account: &AccountRef) {
        let Some(removed) = self.find(account).and_then(|idx| self.accounts[idx].take()) else {
            return;
        };
        if removed.active {
            self.count_seat(false);
        }
        // Jira makes the project lead take over the components a deleted user led.
        self.leads.retain(|lead| lead.account_id != removed.id);
        for idx in self.by_account.remove(&removed.id).unwrap_or_default() {
            self.memberships[idx] = None;
        }
    }

    fn remove_group(&mut self, group: &str) {
        let Some(key) = self.group_key(group) else {
            return;
        };
        for idx in std::mem::take(&mut self.groups_by_key[key]) {
            self.groups[idx] = None;
        }
        for idx in std::mem::take(&mut self.by_group[key]) {
            self.memberships[idx] = None;
        }
    }

    /// The index of the live account `account` names: by id, or by the login of an account
    /// created here.
    fn find(&self, account: &AccountRef) -> Option<usize> {
        match account {
            AccountRef::Existing { id, .. } => self.live_account(id),
            AccountRef::New { login } => self
                .created_by_login
                .get(fold(login).as_ref())
                .copied()
                .filter(|&idx| self.accounts[idx].is_some()),
        }
    }

    fn find_id(&self, account: &AccountRef) -> Option<AccountId> {
        let idx = self.find(account)?;
        self.accounts[idx]
            .as_ref()
            .map(|account| account.id.clone())
    }

    fn account_mut(&mut self, account: &AccountRef) -> Option<&mut Account> {
        let idx = self.find(account)?;
        self.accounts[idx].as_mut()
    }

    /// The live memberships of account `account_id` in the groups of group key `key`.
    fn memberships_of(&self, account_id: &AccountId, key: usize) -> impl Iterator<Item = usize> {
        self.by_account
            .get(account_id)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |&idx| self.membership_keys[idx] == key && self.memberships[idx].is_some())
    }

    fn live_account(&self, id: &AccountId) -> Option<usize> {
        self.account_by_id
            .get(id)
            .copied()
            .filter(|&idx| self.accounts[idx].is_some())
    }

    /// Keeps the login index, once built, up to date with the login of account `idx`.
    fn index_login(&mut self, idx: usize) {
        let (Some(by_login), Some(account)) = (self.by_login.get_mut(), &self.accounts[idx]) else {
            return;
        };
        let entry = by_login
            .entry(fold(&account.login).into_owned())
            .or_default();
        if !entry.contains(&idx) {
            entry.push(idx);
        }
    }

    fn group_key(&self, name: &str) -> Option<usize> {
        self.group_keys.get(fold(name.trim()).as_ref()).copied()
    }

    fn intern_group(&mut self, name: &str) -> usize {
        if let Some(key) = self.group_key(name) {
            return key;
        }
        let key = self.groups_by_key.len();
        self.group_keys.insert(fold(name.trim()).into_owned(), key);
        self.groups_by_key.push(Vec::new());
        self.by_group.push(Vec::new());
        key
    }

    fn push_group(&mut self, group: Group) {
        let key = self.intern_group(group.name.as_str());
        self.groups_by_key[key].push(self.groups.len());
        self.groups.push(Some(group));
    }

    fn push_membership(&mut self, membership: Membership) {
        let idx = self.memberships.len();
        let key = self.intern_group(membership.group.as_str());
        self.membership_keys.push(key);
        self.by_account
            .entry(membership.account_id.clone())
            .or_default()
            .push(idx);
        self.by_group[key].push(idx);
        self.memberships.push(Some(membership));
    }
}

fn live_count<T>(items: &[Option<T>]) -> usize {
    items.iter().filter(|item| item.is_some()).count()
}
